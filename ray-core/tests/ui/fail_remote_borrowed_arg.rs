//! A remote function borrowing its argument: arguments cross processes by value.
#[ray::remote]
fn len(s: &str) -> usize {
    s.len()
}

fn main() {}
