//! An actor method taking `self` by value: the actor keeps its state.
#[ray::actor]
struct Counter {
    n: u64,
}

#[ray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter { n: 0 }
    }
    pub fn into_count(self) -> u64 {
        self.n
    }
}

fn main() {}
