//! Streaming generators on real worker processes: items come in order as the worker makes
//! them, large items through shared memory, a failure after the items made, an early drop
//! stops the worker, and the same program in sync mode and in async code; actor methods too.

#![allow(clippy::new_without_default)] // actor constructors are called remotely, never through Default

use ray::Error;
use ray_rs::{eventually, with_ray};
use std::time::{Duration, Instant};

#[ray::remote]
fn count_to(n: u32) -> impl Iterator<Item = u32> {
    1..=n
}

/// Item `i` is `i` repeated `len` times (large items go through shared memory).
#[ray::remote]
fn big_items(n: u8, len: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(move |i| vec![i; len])
}

/// Two items, then a panic.
#[ray::remote(max_retries = 0)]
fn fails_after_two() -> impl Iterator<Item = u32> {
    (0..3).inspect(|&i| {
        if i == 2 {
            panic!("the third item broke");
        }
    })
}

/// `streaming` on a function returning any iterable.
#[ray::remote(streaming)]
fn letters() -> Vec<char> {
    vec!['a', 'b', 'c']
}

/// Item `i` after `i * step_ms`; each item made is counted in `file` (one line each).
#[ray::remote]
fn slow_items(n: u32, step_ms: u64, file: String) -> impl Iterator<Item = u32> {
    (0..n).inspect(move |i| {
        std::thread::sleep(Duration::from_millis(step_ms));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        writeln!(f, "{i}").unwrap();
    })
}

fn lines(file: &str) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn items_come_in_order_small_and_large() {
    for config in [ray::Config::local().num_cpus(2.0), ray::Config::sync()] {
        with_ray(config, || {
            let got: Vec<u32> = count_to::remote(5).map(|r| ray::get(&r).unwrap()).collect();
            assert_eq!(got, vec![1, 2, 3, 4, 5]);
            assert_eq!(count_to::remote(0).count(), 0);
            let big: Vec<Vec<u8>> = big_items::remote(3, 300_000)
                .map(|r| ray::get(&r).unwrap())
                .collect();
            assert_eq!(big.len(), 3);
            for (i, item) in big.iter().enumerate() {
                assert!(item.len() == 300_000 && item.iter().all(|b| *b == i as u8));
            }
            let got: String = letters::remote().map(|r| ray::get(&r).unwrap()).collect();
            assert_eq!(got, "abc");
        });
    }
}

#[test]
fn a_failure_ends_the_stream_after_the_items_made() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let refs: Vec<_> = fails_after_two::remote().collect();
            assert_eq!(refs.len(), 3, "two items, then the error");
            assert_eq!(ray::get(&refs[0]).unwrap(), 0);
            assert_eq!(ray::get(&refs[1]).unwrap(), 1);
            let e = ray::get(&refs[2]).unwrap_err();
            assert!(matches!(e, Error::Task { .. }), "{e}");
            assert!(e.to_string().contains("the third item broke"), "{e}");
        });
    }
}

/// Items come as they are made, not at the end; dropping the generator stops the worker.
#[test]
fn items_come_as_made_and_an_early_drop_stops_the_worker() {
    let dir = std::env::temp_dir().join(format!("rayrs-generators-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("made").to_string_lossy().into_owned();
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let start = Instant::now();
        let mut gen = slow_items::remote(1000, 20, file.clone());
        let first = gen.next().unwrap();
        assert_eq!(ray::get(&first).unwrap(), 0);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the first item came only after {:?}: not as it was made",
            start.elapsed()
        );
        assert_eq!(ray::get(&gen.next().unwrap()).unwrap(), 1);
        drop(gen);
        // The worker stops at its next item: the count stops growing well short of 1000.
        let mut last = lines(&file);
        eventually("the worker stopped making items", || {
            std::thread::sleep(Duration::from_millis(200));
            let now = lines(&file);
            let still = now == last;
            last = now;
            still
        });
        assert!(last < 100, "{last} items made after the drop");
        // The worker is free for other work.
        let got: Vec<u32> = count_to::remote(2).map(|r| ray::get(&r).unwrap()).collect();
        assert_eq!(got, vec![1, 2]);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_generator_is_a_stream_in_async_code() {
    use futures_util::StreamExt;
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut gen = count_to::remote(4).into_stream();
            let mut got = Vec::new();
            while let Some(r) = gen.next().await {
                got.push(r.await.unwrap());
            }
            assert_eq!(got, vec![1, 2, 3, 4]);
            let refs: Vec<_> = fails_after_two::remote()
                .into_stream()
                .collect::<Vec<_>>()
                .await;
            assert_eq!(refs.len(), 3);
        });
    });
}

/// Dies (its whole process) at item 2 the first time, if `file` does not exist yet.
#[ray::remote(max_retries = 1)]
fn dies_once(file: String) -> impl Iterator<Item = u32> {
    (0..4).inspect(move |&i| {
        if i == 2 && !std::path::Path::new(&file).exists() {
            std::fs::write(&file, b"").unwrap();
            std::process::exit(1);
        }
    })
}

/// A worker dying mid-stream: the task is retried, and the items already delivered are not
/// delivered twice.
#[test]
fn a_retried_generator_delivers_each_item_once() {
    let file = std::env::temp_dir()
        .join(format!("rayrs-dies-once-{}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let _ = std::fs::remove_file(&file);
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let got: Vec<u32> = dies_once::remote(file.clone())
            .map(|r| ray::get(&r).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(std::path::Path::new(&file).exists(), "the first run died");
    });
    let _ = std::fs::remove_file(&file);
}

/// An actor whose methods stream.
pub struct Feed {
    sent: u64,
}

#[ray::actor]
impl Feed {
    pub fn new() -> Self {
        Feed { sent: 0 }
    }
    /// `n` items counting on from the last call's.
    pub fn next_items(&mut self, n: u64) -> impl Iterator<Item = u64> + '_ {
        (0..n).map(|_| {
            self.sent += 1;
            self.sent
        })
    }
    /// Two items, then a panic.
    pub fn breaks(&self) -> impl Iterator<Item = u64> {
        (0..3).inspect(|&i| assert!(i < 2, "the third item broke"))
    }
    /// Items without end (one every millisecond), each counted in `file`.
    pub fn forever(&self, file: String) -> impl Iterator<Item = u64> {
        (0..).inspect(move |_| {
            std::thread::sleep(Duration::from_millis(1));
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .unwrap();
            writeln!(f, "x").unwrap();
        })
    }
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// An async actor's generator method.
pub struct AsyncFeed;

#[ray::actor]
impl AsyncFeed {
    pub fn new() -> Self {
        AsyncFeed
    }
    pub async fn squares(&self, n: u64) -> impl Iterator<Item = u64> {
        tokio::task::yield_now().await;
        (1..=n).map(|i| i * i)
    }
}

/// Actor methods stream as functions do: in order, keeping the actor's state, a failure
/// after the items made, async actors too, and the same in sync mode.
#[test]
fn actor_methods_stream_their_items() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let feed = Feed::remote();
            let first: Vec<u64> = feed.next_items(3).map(|r| ray::get(&r).unwrap()).collect();
            assert_eq!(first, vec![1, 2, 3]);
            let more: Vec<u64> = feed.next_items(2).map(|r| ray::get(&r).unwrap()).collect();
            assert_eq!(more, vec![4, 5], "the actor's state carries on");
            assert_eq!(ray::get(&feed.sent()).unwrap(), 5);

            let got: Vec<_> = feed.breaks().map(|r| ray::get(&r)).collect();
            assert_eq!(got.len(), 3, "two items, then the error: {got:?}");
            assert_eq!(got[0], Ok(0));
            assert_eq!(got[1], Ok(1));
            match &got[2] {
                Err(Error::Task { message, .. }) => {
                    assert!(message.contains("the third item broke"), "{message}")
                }
                other => panic!("expected the panic's error, got {other:?}"),
            }
            assert_eq!(ray::get(&feed.sent()).unwrap(), 5, "the actor lives on");

            let squares: Vec<u64> = AsyncFeed::remote()
                .squares(4)
                .map(|r| ray::get(&r).unwrap())
                .collect();
            assert_eq!(squares, vec![1, 4, 9, 16]);
        });
    }
}

/// Dropping an actor method's generator early stops the method at its next item: the
/// actor (sequential) answers its next call.
#[test]
fn dropping_an_actor_methods_generator_stops_it() {
    let file = std::env::temp_dir()
        .join(format!("rayrs-feed-{}", std::process::id()))
        .display()
        .to_string();
    let _ = std::fs::remove_file(&file);
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let feed = Feed::remote();
        let mut items = feed.forever(file.clone());
        for want in 0..3 {
            assert_eq!(ray::get(&items.next().unwrap()).unwrap(), want);
        }
        drop(items);
        assert_eq!(
            ray::get_timeout(&feed.sent(), Duration::from_secs(30)).unwrap(),
            0,
            "the endless method stopped, so the actor answers"
        );
        assert!(lines(&file) >= 3);
    });
    let _ = std::fs::remove_file(&file);
}
