//! A generic remote function: workers find a function by one name.
#[ray::remote]
fn first<T: Clone>(v: Vec<T>) -> T {
    v[0].clone()
}

fn main() {}
