//! `#[ray::main]` on a function that is not `main`.
#[ray::main]
fn start() {}

fn main() {}
