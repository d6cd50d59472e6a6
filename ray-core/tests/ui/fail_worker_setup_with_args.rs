//! A worker setup function that takes an argument: workers call it with nothing.
#[ray::worker_setup]
fn setup(level: u8) {
    drop(level);
}

fn main() {}
