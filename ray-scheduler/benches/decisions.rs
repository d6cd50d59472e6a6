//! Decision latency of the policies, and the 1M-task simulation.
//!
//! `cargo bench -p ray-scheduler --bench decisions`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ray_scheduler::*;

#[allow(dead_code)]
#[path = "../tests/sim/mod.rs"]
mod sim;

/// `n` nodes of 16 CPUs, each 55-95% used, so no node is below the spread threshold and
/// every DEFAULT decision scores all nodes (the slow path).
fn loaded_view(n: u64) -> ClusterView {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut v = ClusterView::new();
    for i in 0..n {
        let id = NodeId(i * 13 + 7);
        let total =
            ResourceSet::from_pairs([(CPU, 16.0), (MEMORY, 64e9), (OBJECT_STORE_MEMORY, 16e9)])
                .unwrap();
        v.add_node(id, total).unwrap();
        let used = rng.random_range(9..16) as f64;
        v.allocate(id, &ResourceSet::cpus(used).unwrap()).unwrap();
    }
    v
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision");
    for n in [10u64, 1_000, 10_000] {
        let view = loaded_view(n);
        let req =
            SchedulingRequest::new(ResourceSet::cpus(1.0).unwrap()).with_local_node(NodeId(7));
        let mut s = Scheduler::default();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        g.bench_with_input(BenchmarkId::new("default_scan", n), &n, |b, _| {
            b.iter(|| black_box(s.schedule(&view, &req, &mut rng).unwrap()))
        });
        let spread = req.clone().with_strategy(SchedulingStrategy::Spread);
        g.bench_with_input(BenchmarkId::new("spread", n), &n, |b, _| {
            b.iter(|| black_box(s.schedule(&view, &spread, &mut rng).unwrap()))
        });
        let infeasible = SchedulingRequest::new(ResourceSet::cpus(32.0).unwrap());
        g.bench_with_input(
            BenchmarkId::new("infeasible_with_reasons", n),
            &n,
            |b, _| b.iter(|| black_box(s.schedule(&view, &infeasible, &mut rng).unwrap_err())),
        );
    }
    // The common case: the local node is below the threshold.
    let mut view = loaded_view(1_000);
    view.release(NodeId(7), &ResourceSet::cpus(16.0).unwrap())
        .unwrap();
    let req = SchedulingRequest::new(ResourceSet::cpus(1.0).unwrap()).with_local_node(NodeId(7));
    let mut s = Scheduler::default();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    g.bench_function("default_local_fast_path/1000", |b| {
        b.iter(|| black_box(s.schedule(&view, &req, &mut rng).unwrap()))
    });
    g.finish();
}

fn placement_groups(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement_group_100_bundles_1000_nodes");
    let view = loaded_view(1_000);
    let bundles = vec![ResourceSet::cpus(1.0).unwrap(); 100];
    for strategy in [
        PlacementStrategy::Pack,
        PlacementStrategy::Spread,
        PlacementStrategy::StrictPack,
        PlacementStrategy::StrictSpread,
    ] {
        let small = if strategy == PlacementStrategy::StrictPack {
            // 100 CPUs fit no node: use bundles that do, so the bench measures a success.
            vec![ResourceSet::cpus(0.01).unwrap(); 100]
        } else {
            bundles.clone()
        };
        g.bench_function(format!("{strategy:?}"), |b| {
            b.iter(|| black_box(place_bundles(&view, &small, strategy).unwrap()))
        });
    }
    g.finish();
}

fn simulation(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulation");
    g.sample_size(10);
    g.bench_function("1M_tasks_250_nodes", |b| {
        b.iter(|| black_box(sim::simulate(1_000_000, 2024)))
    });
    g.finish();
}

criterion_group!(benches, decisions, placement_groups, simulation);
criterion_main!(benches);
