//! Object store benchmarks.
//!
//! * `create_seal_delete/{1KiB,1MiB}`: the table and allocator cost of one object's life.
//! * `write_big/{fresh,reused}`: writing a large object (800 MiB; `RAYRS_BENCH_BIG_MIB`
//!   overrides) into a fresh arena, whose pages must be faulted in and zeroed, versus into a
//!   freed range of a live arena, whose pages are already resident and mapped.
//!
//! Run: `cargo bench -p ray-object-store --bench store`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use ray_object_store::{ObjectId, ObjectStore, StoreConfig};

fn store(capacity: u64) -> ObjectStore {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "rayrs-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    ObjectStore::create(StoreConfig::new(name).with_capacity(capacity)).expect("create store")
}

fn next_id() -> ObjectId {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    ObjectId(b)
}

fn create_seal_delete(c: &mut Criterion) {
    let s = store(256 << 20);
    let mut g = c.benchmark_group("create_seal_delete");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, len) in [("1KiB", 1u64 << 10), ("1MiB", 1 << 20)] {
        // Some long-lived neighbours so the free list is not trivially one extent.
        let keep: Vec<ObjectId> = (0..64)
            .map(|i| {
                let id = next_id();
                s.create_object(id, 4096 + i * 64).unwrap();
                s.seal(id).unwrap();
                id
            })
            .collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                let id = next_id();
                let a = s.create_object(id, len).unwrap();
                s.seal(id).unwrap();
                s.delete(id);
                a
            })
        });
        for id in keep {
            s.delete(id);
        }
    }
    g.finish();
}

fn write_big(c: &mut Criterion) {
    let mib: u64 = std::env::var("RAYRS_BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800);
    let len = mib << 20;
    let capacity = len + (16 << 20);
    let src = vec![0xa5u8; len as usize];

    let mut g = c.benchmark_group("write_big");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(len));

    // A new sparse arena every iteration: every page is faulted in while writing. The store
    // is returned so it is dropped (and its file removed) outside the timed region.
    g.bench_function(format!("fresh/{mib}MiB"), |b| {
        b.iter_batched(
            || store(capacity),
            |s| {
                let id = next_id();
                let a = s.create_object(id, len).unwrap();
                s.arena().write(a, 0, &src).unwrap();
                s.seal(id).unwrap();
                s
            },
            BatchSize::PerIteration,
        )
    });

    // One arena: each iteration reuses the range freed by the previous one.
    let s = store(capacity);
    let warm = next_id();
    let a = s.create_object(warm, len).unwrap();
    s.arena().write(a, 0, &src).unwrap();
    s.seal(warm).unwrap();
    s.delete(warm);
    g.bench_function(format!("reused/{mib}MiB"), |b| {
        b.iter(|| {
            let id = next_id();
            let x = s.create_object(id, len).unwrap();
            debug_assert_eq!(x.offset, a.offset);
            s.arena().write(x, 0, &src).unwrap();
            s.seal(id).unwrap();
            s.delete(id);
        })
    });
    g.finish();
}

criterion_group!(benches, create_seal_delete, write_big);
criterion_main!(benches);
