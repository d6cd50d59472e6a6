//! A method may only choose a concurrency group its actor declares.
struct Worker;

#[ray::actor(concurrency_groups(io = 2))]
impl Worker {
    pub fn new() -> Self {
        Worker
    }
    #[ray::method(concurrency_group = "compute")]
    pub fn crunch(&self) -> u8 {
        1
    }
}

fn main() {}
