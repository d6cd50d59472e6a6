//! `#[ray::main]` on a `main` that takes arguments.
#[ray::main]
fn main(args: Vec<String>) {
    drop(args);
}
