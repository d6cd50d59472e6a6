//! The tour: tasks, put/get/wait, a nested task, an error; then 10,000 small tasks and a
//! 100 MiB put/get round trip, timed. Run: `cargo run --release --example quickstart`.

use ray::ObjectRef;
use std::time::{Duration, Instant};

#[ray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ray::remote(num_cpus = 0.5, max_retries = 0)]
fn fails(msg: String) -> Result<u8, String> {
    Err(msg)
}

/// A task that submits tasks itself and waits for them (nested tasks).
#[ray::remote]
fn sum_of_squares(n: i64) -> i64 {
    let refs: Vec<ObjectRef<i64>> = (0..n).map(square::remote).collect();
    ray::get_all(&refs).expect("nested tasks").into_iter().sum()
}

#[ray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[ray::remote]
fn small_value() -> u8 {
    1
}

fn main() -> ray::Result<()> {
    ray::init(ray::Config::from_env())?;
    println!("cluster resources: {:?}", ray::cluster_resources()?);

    let a: ObjectRef<i64> = add::remote(1, 2);
    let b = add::remote(a.clone(), 10);
    println!("add(add(1, 2), 10) = {}", ray::get(&b)?);
    let c = add::options().num_cpus(2.0).remote(1, 1);
    let all: Vec<i64> = ray::get_all(&[a.clone(), c])?;
    println!("get_all = {all:?}");
    let (ready, pending) = ray::wait(&[a.clone(), b.clone()], 1, Some(Duration::from_secs(5)))?;
    println!("wait: {} ready, {} pending", ready.len(), pending.len());
    println!(
        "nested: sum of squares below 10 = {}",
        ray::get(&sum_of_squares::remote(10))?
    );
    match ray::get(&fails::remote("boom".to_string())) {
        Err(e) => println!("a failing task gives: {e}"),
        Ok(v) => println!("unexpected success: {v}"),
    }

    let start = Instant::now();
    let refs: Vec<ObjectRef<u8>> = (0..10_000).map(|_| small_value::remote()).collect();
    let n: u64 = ray::get_all(&refs)?.into_iter().map(u64::from).sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "10,000 small tasks: {secs:.3} s ({:.0} tasks/s), sum {n}",
        10_000.0 / secs
    );

    let big = vec![7u8; 100 << 20];
    let start = Instant::now();
    let r = ray::put(&big)?;
    let back: Vec<u8> = ray::get(&r)?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(back.len(), big.len());
    println!("100 MiB put + get round trip: {secs:.3} s");

    ray::shutdown();
    Ok(())
}
