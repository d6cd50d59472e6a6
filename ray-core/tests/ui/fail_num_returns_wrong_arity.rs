//! `num_returns = 3` on a function returning a pair.
#[ray::remote(num_returns = 3)]
fn pair() -> (u8, u8) {
    (1, 2)
}

fn main() {}
