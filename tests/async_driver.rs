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

/// Waits (at most 30 s) until `file` exists.
fn wait_for_file(file: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !file.exists() {
        assert!(std::time::Instant::now() < deadline, "{file:?} never came");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Returns `x` once `gate` exists (if named), then creates `signal` (if named).
#[ray::remote(num_cpus = 0.5)]
fn gated(x: u64, gate: String, signal: String) -> u64 {
    if !gate.is_empty() {
        wait_for_file(std::path::Path::new(&gate));
    }
    if !signal.is_empty() {
        std::fs::write(&signal, b"").unwrap();
    }
    x
}

/// `as_completed` yields values as they finish, each with its index, then ends.
#[test]
fn as_completed_yields_values_in_the_order_they_finish() {
    use futures_util::StreamExt;
    let dir = std::env::temp_dir().join(format!("rayrs-as-completed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let signal = dir.join("gate").to_string_lossy().into_owned();
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // The first waits until the second has come out of the stream: it finishes last.
            let refs = vec![
                gated::remote(1, signal.clone(), String::new()),
                gated::remote(2, String::new(), String::new()),
            ];
            let mut stream = ray::as_completed(refs);
            let (i, v) = stream.next().await.unwrap();
            assert_eq!((i, v.unwrap()), (1, 2));
            std::fs::write(&signal, b"").unwrap();
            let (i, v) = stream.next().await.unwrap();
            assert_eq!((i, v.unwrap()), (0, 1));
            assert!(stream.next().await.is_none());
        });
    });
    let _ = std::fs::remove_dir_all(&dir);
}
