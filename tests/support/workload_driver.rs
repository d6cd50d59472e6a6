//! A driver whose output is its workload's results: run in sync, local and cluster mode and
//! as a submitted job (rayrs/tests/cluster.rs), it must print the same line. With `hold`, it
//! then waits on a task that runs until the job is stopped.

use std::io::Write;

#[ray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ray::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Nested: its own tasks, waited for inside a task.
#[ray::remote]
fn sum_of_squares(n: u64) -> u64 {
    let refs: Vec<_> = (0..n).map(square::remote).collect();
    ray::get_all(&refs).unwrap().into_iter().sum()
}

#[ray::remote]
fn fails(why: String) -> Result<u64, String> {
    Err(why)
}

/// Runs until its job is stopped (two minutes at most), saying where.
#[ray::remote]
fn hold() -> u32 {
    #[allow(clippy::print_stdout)]
    {
        println!("holding in pid {}", std::process::id());
    }
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(120));
    std::process::id()
}

fn main() -> ray::Result<()> {
    ray::init(ray::Config::from_env())?;
    let a = add::remote(40, 2);
    let squares = ray::util::parallel_map(0..20, square::remote)?;
    let nested = sum_of_squares::remote(5);
    let big = ray::put(&(0..20_000).map(|i| i as f64 * 0.5).collect::<Vec<f64>>())?;
    let failed = ray::get(&fails::remote("no".to_string())).is_err();
    let results = (
        ray::get(&a)?,
        squares,
        ray::get(&nested)?,
        ray::get(&big)?.iter().sum::<f64>(),
        failed,
    );
    #[allow(clippy::print_stdout)]
    {
        println!("results {results:?}");
    }
    if std::env::args().any(|a| a == "hold") {
        ray::get(&hold::remote())?;
    }
    ray::shutdown();
    Ok(())
}
