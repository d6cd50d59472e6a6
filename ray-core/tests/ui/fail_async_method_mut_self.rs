//! An async actor method taking `&mut self`: it would hold the actor across its awaits.
#[ray::actor]
struct Poller {
    seen: u64,
}

#[ray::actor]
impl Poller {
    pub fn new() -> Self {
        Poller { seen: 0 }
    }
    pub async fn run_forever(&mut self) {
        loop {
            self.seen += 1;
            std::future::ready(()).await;
        }
    }
}

fn main() {}
