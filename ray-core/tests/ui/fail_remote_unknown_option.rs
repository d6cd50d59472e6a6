//! A misspelt option: the error lists the options there are.
#[ray::remote(num_cpu = 2.0)]
fn work() -> u8 {
    1
}

fn main() {}
