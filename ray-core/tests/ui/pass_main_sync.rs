//! A sync `#[ray::main]` in sync mode (chosen by `config`), with a remote function declared
//! inside the body.

#[ray::main(config = ray::Config::sync())]
fn main() {
    #[ray::remote(num_returns = 2)]
    fn halves(n: u32) -> (u32, u32) {
        (n / 2, n - n / 2)
    }
    let (a, b) = halves::remote(7);
    assert_eq!((ray::get(&a).unwrap(), ray::get(&b).unwrap()), (3, 4));
}
