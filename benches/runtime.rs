//! Criterion benches of the runtime's hot paths in local mode, with real worker processes:
//! one task round trip, 1,000 pipelined tasks, a small put and get, and a 10 MiB put.
//! `cargo bench --bench runtime`. The comparison with Ray is the microbenchmark's job.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[ray::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

fn runtime(c: &mut Criterion) {
    ray::init(ray::Config::local()).expect("init");
    let mut g = c.benchmark_group("local");
    g.bench_function("task round trip (get(f.remote()))", |b| {
        b.iter(|| ray::get(&small_value::remote()).unwrap())
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 tasks submitted then gathered", |b| {
        b.iter(|| {
            let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
            ray::get_all(&refs).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("put small", |b| b.iter(|| ray::put(&0u64).unwrap()));
    let r = ray::put(&0u64).unwrap();
    g.bench_function("get small", |b| b.iter(|| ray::get(&r).unwrap()));
    g.throughput(Throughput::Bytes(10 << 20));
    let big = vec![0u8; 10 << 20];
    g.bench_function("put 10 MiB", |b| b.iter(|| ray::put(&big).unwrap()));
    g.finish();
    ray::shutdown();
}

criterion_group!(benches, runtime);
criterion_main!(benches);
