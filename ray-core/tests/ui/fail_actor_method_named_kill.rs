//! An actor method named `kill`: the handle's own `kill(no_restart)` would hide it.
#[ray::actor]
struct Service;

#[ray::actor]
impl Service {
    pub fn new() -> Self {
        Service
    }
    pub fn kill(&self) -> u8 {
        0
    }
}

fn main() {}
