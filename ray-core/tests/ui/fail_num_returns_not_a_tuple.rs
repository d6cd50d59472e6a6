//! `num_returns = 2` on a function that does not return a tuple.
#[ray::remote(num_returns = 2)]
fn pair() -> Vec<u8> {
    vec![1, 2]
}

fn main() {}
