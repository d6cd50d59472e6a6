//! A program written with `#[ray::main]`, run by tests/api.rs: `async` (argument `async`) or
//! not, it prints what its tasks computed. Its body must run once, in the driver only.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

#[ray::remote]
fn square(x: u64) -> u64 {
    x * x
}

mod nested {
    /// Declared in a nested module and used from `main`.
    #[ray::remote]
    pub fn cube(x: u64) -> u64 {
        x * x * x
    }
}

/// Logs from inside a task (its line reaches the driver's stderr, marked with the worker).
#[ray::remote]
fn log_something() -> u32 {
    tracing::warn!("a warning from inside a task");
    std::process::id()
}

/// Prints to both streams (the lines reach the driver's, prefixed with the function).
#[ray::remote]
fn print_hello() -> u32 {
    #[allow(clippy::print_stdout, clippy::print_stderr)]
    {
        println!("hello from a task");
        eprintln!("and to stderr");
    }
    std::process::id()
}

/// An actor whose prints are prefixed with its class.
pub struct Greeter;

#[ray::actor]
impl Greeter {
    pub fn new() -> Self {
        Greeter
    }
    pub fn greet(&self) -> u32 {
        #[allow(clippy::print_stdout)]
        {
            println!("greetings from an actor");
        }
        std::process::id()
    }
}

#[ray::main]
async fn main() -> ray::Result<()> {
    #[allow(clippy::print_stdout)]
    {
        println!("main body ran in pid {}", std::process::id());
    }
    // Declared inside the body: remote functions and actors may live anywhere.
    #[ray::remote]
    fn add(a: u64, b: u64) -> u64 {
        a + b
    }
    let squares: Vec<_> = (0..4).map(square::remote).collect();
    let mut total = 0;
    for r in squares {
        total += r.await?;
    }
    let sum = add::remote(total, nested::cube::remote(2)).await?;
    let worker = log_something::remote().await?;
    #[allow(clippy::print_stdout)]
    {
        println!("logged in pid {worker}");
    }
    let printed = print_hello::remote().await?;
    let greeter = Greeter::remote();
    let greeted = greeter.greet().await?;
    #[allow(clippy::print_stdout)]
    {
        println!("printed in pid {printed}");
        println!("greeted in pid {greeted}");
        if let Some(dir) = ray::logs_dir() {
            println!("logs in {}", dir.display());
        }
    }
    if std::env::args().any(|a| a == "fail") {
        return Err(ray::Error::InvalidArgument("asked to fail".into()));
    }
    #[allow(clippy::print_stdout)]
    {
        println!("sum {sum}");
    }
    Ok(())
}
