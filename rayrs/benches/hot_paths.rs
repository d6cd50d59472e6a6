//! Criterion benches of the hot paths the other benches do not cover:
//!
//! - serialization of a task: a `TaskFrame` as the submitter builds it (one small argument
//!   encoded with postcard, ids, the function name, the owner's address), encoded with its
//!   length prefix as the data plane writes it, and decoded as a worker reads it;
//! - a ref-count update: a ref to an object this process owns, deserialized (one more
//!   handle in the reference table) and dropped (one less), in local mode.
//!
//! A scheduling decision and a store allocation are benched in their crates
//! (`cargo bench -p ray-scheduler`, `cargo bench -p ray-object-store`); task round trips and
//! puts in the root `benches/runtime.rs`. Run: `cargo bench -p rayrs --bench hot_paths`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use ray_proto::{object_value, ObjectValue, TaskFrame};

fn task_frame(seq: u64) -> TaskFrame {
    TaskFrame {
        seq,
        task_id: vec![7u8; 16].into(),
        function: "rayrs::microbenchmark::small_value".into(),
        args: vec![ObjectValue {
            kind: Some(object_value::Kind::Inline(
                postcard::to_allocvec(&42i64).unwrap().into(),
            )),
            contained: Vec::new(),
        }],
        return_id: vec![9u8; 16].into(),
        owner_address: "127.0.0.1:40417".into(),
        job_id: 1,
        actor_id: Default::default(),
        shape: ray_proto::Resources {
            amounts: [("CPU".to_string(), 1.0)].into_iter().collect(),
        }
        .encode_to_vec()
        .into(),
        num_returns: 1,
        ..Default::default()
    }
}

fn task_serialization(c: &mut Criterion) {
    let mut g = c.benchmark_group("task serialization");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        "encode a task frame (arg with postcard, frame with prost)",
        |b| {
            let mut buf = Vec::with_capacity(256);
            let mut seq = 0;
            b.iter(|| {
                seq += 1;
                let arg = postcard::to_allocvec(black_box(&42i64)).unwrap();
                let mut frame = task_frame(seq);
                frame.args[0].kind = Some(object_value::Kind::Inline(arg.into()));
                buf.clear();
                buf.extend_from_slice(&(frame.encoded_len() as u32).to_le_bytes());
                frame.encode(&mut buf).unwrap();
                black_box(&buf);
            })
        },
    );
    let mut bytes = Vec::new();
    task_frame(1).encode(&mut bytes).unwrap();
    g.bench_function("decode a task frame", |b| {
        b.iter(|| {
            let frame = TaskFrame::decode(black_box(&bytes[..])).unwrap();
            let arg = match &frame.args[0].kind {
                Some(object_value::Kind::Inline(v)) => postcard::from_bytes::<i64>(v).unwrap(),
                _ => unreachable!(),
            };
            black_box((frame, arg))
        })
    });
    g.finish();
}

fn ref_counting(c: &mut Criterion) {
    ray::init(ray::Config::local()).expect("init");
    let owned: ray::ObjectRef<u64> = ray::put(&7u64).unwrap();
    // Serializing a ref outside a task's arguments pins the object: once, here.
    let bytes = postcard::to_allocvec(&owned).unwrap();
    let many = postcard::to_allocvec(&vec![owned.clone(); 1000]).unwrap();
    let mut g = c.benchmark_group("ref counting");
    g.throughput(Throughput::Elements(1));
    g.bench_function("add and drop a handle of an owned object", |b| {
        b.iter(|| {
            drop(black_box(
                postcard::from_bytes::<ray::ObjectRef<u64>>(&bytes).unwrap(),
            ))
        })
    });
    g.bench_function("clone and drop a handle (no table update)", |b| {
        b.iter(|| drop(black_box(owned.clone())))
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("add and drop 1,000 handles (a decoded Vec of refs)", |b| {
        b.iter(|| {
            drop(black_box(
                postcard::from_bytes::<Vec<ray::ObjectRef<u64>>>(&many).unwrap(),
            ))
        })
    });
    g.finish();
    drop(owned);
    ray::shutdown();
}

criterion_group!(benches, task_serialization, ref_counting);
criterion_main!(benches);
