//! An async driver awaits refs without blocking its executor's threads.

use ray_rs::with_ray;

#[ray::remote]
fn double(x: u64) -> u64 {
    x * 2
}

#[ray::remote]
fn fail() -> Result<u64, String> {
    Err("nope".to_string())
}

#[test]
fn object_refs_can_be_awaited() {
    with_ray(ray::Config::local(), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = double::remote(21);
            let b = double::remote(&a);
            // Both awaited concurrently on one thread: neither blocks the other.
            let (a, b) = tokio::join!(a, b);
            assert_eq!((a.unwrap(), b.unwrap()), (42, 84));
            assert!(matches!(fail::remote().await, Err(ray::Error::Task { .. })));
            let put = ray::put(&vec![1u8; 300_000]).unwrap();
            assert_eq!(put.await.unwrap().len(), 300_000);
        });
    });
}
