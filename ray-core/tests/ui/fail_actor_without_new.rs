//! An actor with no constructor: the error names what to write.
#[ray::actor]
struct Counter {
    n: u64,
}

#[ray::actor]
impl Counter {
    pub fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

fn main() {}
