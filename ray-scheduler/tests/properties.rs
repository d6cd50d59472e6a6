//! Property tests over random clusters and request streams.
//!
//! Post-conditions checked after every step, in the style of a contract check:
//! nothing is ever over-allocated; a request that fits somewhere is never refused (and a
//! refusal is classed infeasible exactly when no alive node's totals can hold it); hard
//! affinity never lands elsewhere; STRICT_SPREAD bundles land on distinct nodes and
//! STRICT_PACK bundles on one; the same seed gives the same decisions.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ray_scheduler::*;

#[derive(Clone, Debug)]
struct NodeSpec {
    cpu: f64,
    gpu: f64,
    mem: f64,
    custom: f64,
    alive: bool,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop::sample::select(vec![0.0, 1.0, 2.0, 4.0, 8.0]),
        prop::sample::select(vec![0.0, 0.0, 1.0, 2.0]),
        prop::sample::select(vec![0.0, 1e9, 4e9]),
        prop::sample::select(vec![0.0, 0.0, 1.0, 2.5]),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(cpu, gpu, mem, custom, alive)| NodeSpec {
            cpu,
            gpu,
            mem,
            custom,
            alive,
        })
}

fn shape() -> impl Strategy<Value = ResourceSet> {
    (
        prop::sample::select(vec![0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 9.0]),
        prop::sample::select(vec![0.0, 0.0, 0.0, 0.5, 1.0, 2.0]),
        prop::sample::select(vec![0.0, 0.0, 5e8, 2e9]),
        prop::sample::select(vec![0.0, 0.0, 0.0, 0.5, 1.0, 2.0]),
    )
        .prop_map(|(cpu, gpu, mem, custom)| {
            ResourceSet::from_pairs([(CPU, cpu), (GPU, gpu), (MEMORY, mem), ("custom", custom)])
                .unwrap()
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// Schedule a request (strategy kind 0..4, target node index, local node index).
    Schedule {
        shape: ResourceSet,
        strategy: u8,
        target: usize,
        local: usize,
    },
    /// Return the lease at this index (modulo the number running).
    Release(usize),
    /// Kill a node (modulo the number of nodes).
    Kill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (shape(), 0u8..4, 0usize..32, 0usize..32).prop_map(|(shape, strategy, target, local)| {
            Op::Schedule { shape, strategy, target, local }
        }),
        3 => (0usize..1000).prop_map(Op::Release),
        1 => (0usize..1000).prop_map(Op::Kill),
    ]
}

fn build(specs: &[NodeSpec]) -> ClusterView {
    let mut v = ClusterView::new();
    for (i, s) in specs.iter().enumerate() {
        let total = ResourceSet::from_pairs([
            (CPU, s.cpu),
            (GPU, s.gpu),
            (MEMORY, s.mem),
            ("custom", s.custom),
        ])
        .unwrap();
        // Sparse ids, not in insertion order.
        let id = NodeId((i as u64 * 7919) % 1009);
        v.add_node(id, total).unwrap();
        if !s.alive {
            v.mark_dead(id);
        }
    }
    v
}

fn check_not_over_allocated(v: &ClusterView, leases: &[(NodeId, ResourceSet)]) {
    for n in v.nodes() {
        let r = n.resources();
        assert!(
            r.available.is_nonnegative(),
            "negative availability on {}",
            n.id()
        );
        assert!(
            r.available.fits_in(&r.total),
            "available above total on {}",
            n.id()
        );
        // total = available + sum of the leases on the node.
        let mut used = ResourceSet::new();
        for (id, l) in leases {
            if *id == n.id() {
                used.add(l);
            }
        }
        let mut sum = r.available.clone();
        sum.add(&used);
        assert_eq!(sum, r.total, "bookkeeping on {}", n.id());
    }
}

/// Run a stream; returns the decisions (for the determinism check).
fn run(specs: &[NodeSpec], ops: &[Op], seed: u64) -> Vec<Option<NodeId>> {
    let mut v = build(specs);
    let ids: Vec<NodeId> = v.nodes().iter().map(|n| n.id()).collect();
    let mut s = Scheduler::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut leases: Vec<(NodeId, ResourceSet)> = Vec::new();
    let mut decisions = Vec::new();
    for op in ops {
        match op {
            Op::Schedule {
                shape,
                strategy,
                target,
                local,
            } => {
                let target = ids[target % ids.len()];
                let local = ids[local % ids.len()];
                let (strategy, hard) = match strategy {
                    0 => (SchedulingStrategy::Default, None),
                    1 => (SchedulingStrategy::Spread, None),
                    2 => (
                        SchedulingStrategy::NodeAffinity {
                            node: target,
                            soft: true,
                        },
                        None,
                    ),
                    _ => (
                        SchedulingStrategy::NodeAffinity {
                            node: target,
                            soft: false,
                        },
                        Some(target),
                    ),
                };
                let req = SchedulingRequest::new(shape.clone())
                    .with_strategy(strategy)
                    .with_local_node(local);
                let available_somewhere = v
                    .nodes()
                    .iter()
                    .any(|n| n.is_alive() && shape.fits_in(&n.resources().available));
                let feasible_somewhere = v
                    .nodes()
                    .iter()
                    .any(|n| n.is_alive() && shape.fits_in(&n.resources().total));
                let decision = s.schedule(&v, &req, &mut rng);
                match &decision {
                    Ok(n) => {
                        let node = v.node(*n).unwrap();
                        assert!(node.is_alive(), "chose dead {n}");
                        assert!(shape.fits_in(&node.resources().available));
                        if let Some(t) = hard {
                            assert_eq!(*n, t, "hard affinity landed elsewhere");
                        }
                        v.allocate(*n, shape).unwrap();
                        leases.push((*n, shape.clone()));
                    }
                    Err(p) => match hard {
                        Some(t) => {
                            let node = v.node(t).unwrap();
                            let usable =
                                node.is_alive() && shape.fits_in(&node.resources().available);
                            assert!(!usable, "hard affinity refused a usable node: {p}");
                            if !node.is_alive() || !shape.fits_in(&node.resources().total) {
                                assert!(p.is_unschedulable(), "{p}");
                            } else {
                                assert!(p.is_busy(), "{p}");
                            }
                        }
                        None => {
                            let soft_waits = matches!(
                                req.strategy,
                                SchedulingStrategy::NodeAffinity { soft: true, .. }
                            ) && p.is_busy()
                                && p.nodes_considered == 1;
                            assert!(
                                !available_somewhere || soft_waits,
                                "refused a request that fits: {p}"
                            );
                            if !soft_waits {
                                assert_eq!(p.is_infeasible(), !feasible_somewhere, "{p}");
                                assert!(!p.resources.is_empty() || v.alive_count() == 0);
                            }
                        }
                    },
                }
                decisions.push(decision.ok());
            }
            Op::Release(i) => {
                if !leases.is_empty() {
                    let (n, r) = leases.swap_remove(i % leases.len());
                    v.release(n, &r).unwrap();
                }
            }
            Op::Kill(i) => {
                // Leases on a dead node are returned by the runtime when it cleans up.
                let id = ids[i % ids.len()];
                v.mark_dead(id);
                leases.retain(|(n, r)| {
                    if *n == id {
                        v.release(*n, r).unwrap();
                        false
                    } else {
                        true
                    }
                });
            }
        }
        check_not_over_allocated(&v, &leases);
    }
    decisions
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_streams_keep_every_invariant(
        specs in prop::collection::vec(node_spec(), 1..16),
        ops in prop::collection::vec(op(), 1..120),
        seed in any::<u64>(),
    ) {
        let first = run(&specs, &ops, seed);
        let second = run(&specs, &ops, seed);
        prop_assert_eq!(first, second, "same seed, different decisions");
    }

    #[test]
    fn bundle_placements_respect_their_strategy(
        specs in prop::collection::vec(node_spec(), 1..10),
        bundles in prop::collection::vec(shape(), 1..6),
        used in prop::collection::vec(shape(), 0..6),
        strategy in prop::sample::select(vec![
            PlacementStrategy::Pack,
            PlacementStrategy::Spread,
            PlacementStrategy::StrictPack,
            PlacementStrategy::StrictSpread,
        ]),
    ) {
        let mut v = build(&specs);
        // Pre-load the cluster a little.
        let ids: Vec<NodeId> = v.nodes().iter().map(|n| n.id()).collect();
        for (i, u) in used.iter().enumerate() {
            let _ = v.allocate(ids[i % ids.len()], u);
        }
        let before = v.clone();
        let result = place_bundles(&v, &bundles, strategy);
        match result {
            Ok(nodes) => {
                prop_assert_eq!(nodes.len(), bundles.len());
                for n in &nodes {
                    prop_assert!(v.node(*n).unwrap().is_alive());
                }
                match strategy {
                    PlacementStrategy::StrictPack => {
                        prop_assert!(nodes.iter().all(|n| *n == nodes[0]));
                    }
                    PlacementStrategy::StrictSpread => {
                        prop_assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), nodes.len());
                    }
                    _ => {}
                }
                // The placement fits: committing it, all or nothing, succeeds.
                v.allocate_bundles(&nodes, &bundles).unwrap();
                for n in v.nodes() {
                    prop_assert!(n.resources().available.is_nonnegative());
                }
            }
            Err(p) => {
                // Nothing changed, and a placement that exists is not refused.
                prop_assert_eq!(v.cluster_available(), before.cluster_available());
                let mut sum = ResourceSet::new();
                for b in &bundles {
                    sum.add(b);
                }
                let alive: Vec<&NodeState> = v.nodes().iter().filter(|n| n.is_alive()).collect();
                match strategy {
                    PlacementStrategy::StrictPack | PlacementStrategy::Pack => {
                        prop_assert!(
                            !alive.iter().any(|n| sum.fits_in(&n.resources().available)),
                            "refused a group that fits one node: {}", p
                        );
                        if strategy == PlacementStrategy::StrictPack {
                            let feasible = alive.iter().any(|n| sum.fits_in(&n.resources().total));
                            prop_assert_eq!(p.is_infeasible(), !feasible);
                        }
                    }
                    PlacementStrategy::StrictSpread => {
                        prop_assert!(
                            !exists_matching(&bundles, &alive, |b, n| b.fits_in(&n.resources().available)),
                            "refused a STRICT_SPREAD group that has a placement: {}", p
                        );
                        let feasible = exists_matching(&bundles, &alive, |b, n| b.fits_in(&n.resources().total));
                        prop_assert_eq!(p.is_infeasible(), !feasible);
                    }
                    PlacementStrategy::Spread => {
                        // Best effort; a single bundle that fits somewhere is never refused.
                        if bundles.len() == 1 {
                            prop_assert!(!alive.iter().any(|n| bundles[0].fits_in(&n.resources().available)));
                        }
                    }
                }
                prop_assert!(p.bundle.is_some() || strategy == PlacementStrategy::StrictPack || strategy == PlacementStrategy::Pack);
            }
        }
    }
}

/// Brute force: is there an injective assignment of bundles to nodes?
fn exists_matching(
    bundles: &[ResourceSet],
    nodes: &[&NodeState],
    fits: impl Fn(&ResourceSet, &NodeState) -> bool + Copy,
) -> bool {
    fn go(
        i: usize,
        bundles: &[ResourceSet],
        nodes: &[&NodeState],
        used: &mut Vec<bool>,
        fits: impl Fn(&ResourceSet, &NodeState) -> bool + Copy,
    ) -> bool {
        if i == bundles.len() {
            return true;
        }
        for j in 0..nodes.len() {
            if !used[j] && fits(&bundles[i], nodes[j]) {
                used[j] = true;
                if go(i + 1, bundles, nodes, used, fits) {
                    return true;
                }
                used[j] = false;
            }
        }
        false
    }
    go(0, bundles, nodes, &mut vec![false; nodes.len()], fits)
}
