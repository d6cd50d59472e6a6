//! The simulation driver shared by `tests/simulation.rs` and the benches.
//!
//! Event driven, with simulated time: every task is queued at time 0 in the queue of its
//! scheduling class (its shape and strategy, as in Ray's raylet); a granted task holds its
//! resources until its simulated duration has passed. Like a raylet, the driver does not
//! retry a class that the scheduler answered "busy" until resources come back on a node
//! where that class fits (only that node changed, so only there can it fit).
//!
//! Checked: every decision lands on an alive node with the resources free (the allocation
//! succeeds), a class known to fit somewhere is never refused, every task runs exactly once,
//! and at the end every node's availability is back to its totals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ray_scheduler::*;

const CPU_NODES: u64 = 200;
const GPU_NODES: u64 = 50;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Default,
    Locality,
    Spread,
    SoftAffinity,
}

struct Class {
    shape: ResourceSet,
    kind: Kind,
    /// Share of the tasks, in percent.
    weight: u64,
}

fn classes() -> Vec<Class> {
    let rs = |pairs: &[(&str, f64)]| {
        ResourceSet::from_pairs(pairs.iter().map(|(n, v)| (*n, *v))).unwrap()
    };
    vec![
        Class {
            shape: rs(&[(CPU, 1.0)]),
            kind: Kind::Default,
            weight: 38,
        },
        Class {
            shape: rs(&[(CPU, 0.5)]),
            kind: Kind::Default,
            weight: 20,
        },
        Class {
            shape: rs(&[(CPU, 2.0), (MEMORY, 2.0 * GIB)]),
            kind: Kind::Default,
            weight: 10,
        },
        Class {
            shape: rs(&[(CPU, 1.0), (GPU, 1.0)]),
            kind: Kind::Default,
            weight: 4,
        },
        Class {
            shape: rs(&[(CPU, 0.25), (OBJECT_STORE_MEMORY, 0.1 * GIB)]),
            kind: Kind::Locality,
            weight: 10,
        },
        Class {
            shape: rs(&[(CPU, 1.0)]),
            kind: Kind::Spread,
            weight: 12,
        },
        Class {
            shape: rs(&[(CPU, 4.0)]),
            kind: Kind::SoftAffinity,
            weight: 6,
        },
    ]
}

fn build_view() -> ClusterView {
    let mut v = ClusterView::new();
    for i in 0..CPU_NODES + GPU_NODES {
        let total = if i < CPU_NODES {
            ResourceSet::from_pairs([
                (CPU, 16.0),
                (MEMORY, 64.0 * GIB),
                (OBJECT_STORE_MEMORY, 16.0 * GIB),
            ])
        } else {
            ResourceSet::from_pairs([
                (CPU, 8.0),
                (GPU, 2.0),
                (MEMORY, 32.0 * GIB),
                (OBJECT_STORE_MEMORY, 8.0 * GIB),
            ])
        }
        .unwrap();
        v.add_node(NodeId(1000 + i), total).unwrap();
    }
    v
}

/// Why a class is not dispatched now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Blocked {
    No,
    /// No node has the class's shape free.
    Anywhere,
    /// Resources came back on this node, where the class fits; no other node has room.
    Woken(NodeId),
    /// The head task waits for this node (soft affinity to a busy node).
    On(NodeId),
}

/// What a simulation run did.
#[derive(Debug)]
pub struct Stats {
    /// Calls to [`Scheduler::schedule`].
    pub decisions: u64,
    /// Of those, answered "not now".
    pub refusals: u64,
    /// Simulated time at which the last task finished.
    pub makespan: u64,
}

/// Run `tasks` tasks through 250 nodes, checking every invariant; panics on a violation.
pub fn simulate(tasks: u32, seed: u64) -> Stats {
    let classes = classes();
    let mut view = build_view();
    let ids: Vec<NodeId> = view.nodes().iter().map(|n| n.id()).collect();
    let totals = view.cluster_total();
    let mut scheduler = Scheduler::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Per-class FIFO queues of task ids; task attributes derive from the id.
    let weight_sum: u64 = classes.iter().map(|c| c.weight).sum();
    let mut queues: Vec<Vec<u32>> = vec![Vec::new(); classes.len()];
    for t in 0..tasks {
        let mut x = splitmix(u64::from(t)) % weight_sum;
        let mut c = 0;
        while x >= classes[c].weight {
            x -= classes[c].weight;
            c += 1;
        }
        queues[c].push(t);
    }
    let mut head = vec![0usize; classes.len()];
    let mut blocked = vec![Blocked::No; classes.len()];
    let mut ran = vec![0u8; tasks as usize];
    // (finish time, task, class, node)
    let mut running: BinaryHeap<Reverse<(u64, u32, u8, NodeId)>> = BinaryHeap::new();
    let mut now = 0u64;
    let mut decisions = 0u64;
    let mut refusals = 0u64;
    let mut per_class = vec![0u64; 7];
    let mut completed = 0u32;

    loop {
        // Dispatch every class that may have room.
        for c in 0..classes.len() {
            while head[c] < queues[c].len() {
                match blocked[c] {
                    Blocked::No => {}
                    Blocked::Anywhere | Blocked::On(_) => break,
                    Blocked::Woken(x) => {
                        // An earlier class may have taken the room on `x`.
                        let free = &view.node(x).unwrap().resources().available;
                        if !classes[c].shape.fits_in(free) {
                            blocked[c] = Blocked::Anywhere;
                            break;
                        }
                    }
                }
                let t = queues[c][head[c]];
                let h = splitmix(u64::from(t) ^ 0xABCD);
                let node_hint = ids[(h % ids.len() as u64) as usize];
                let class = &classes[c];
                let mut req = SchedulingRequest::new(class.shape.clone())
                    .with_local_node(ids[(h >> 20) as usize % 4]);
                match class.kind {
                    Kind::Default => {}
                    Kind::Locality => req.locality = vec![(node_hint, 1 << 20)],
                    Kind::Spread => req.strategy = SchedulingStrategy::Spread,
                    Kind::SoftAffinity => {
                        req.strategy = SchedulingStrategy::NodeAffinity {
                            node: node_hint,
                            soft: true,
                        }
                    }
                }
                decisions += 1;
                match scheduler.schedule(&view, &req, &mut rng) {
                    Ok(node) => {
                        view.allocate(node, &class.shape)
                            .unwrap_or_else(|e| panic!("decision not backed by resources: {e}"));
                        if class.kind == Kind::SoftAffinity {
                            assert_eq!(node, node_hint, "soft affinity to an alive feasible node");
                        }
                        let duration = 1 + (h >> 40) % 1000;
                        running.push(Reverse((now + duration, t, c as u8, node)));
                        head[c] += 1;
                        if let Blocked::Woken(x) = blocked[c] {
                            // Only `x` had room: the policy must have found it.
                            if class.kind != Kind::SoftAffinity {
                                assert_eq!(node, x, "a request that fits only on {x}");
                            }
                        }
                    }
                    Err(p) => {
                        refusals += 1;
                        per_class[c] += 1;
                        assert!(p.is_busy(), "every shape is feasible: {p}");
                        if class.kind == Kind::SoftAffinity && p.nodes_considered == 1 {
                            blocked[c] = Blocked::On(p.nodes[0].node);
                        } else {
                            assert!(
                                !view
                                    .nodes()
                                    .iter()
                                    .any(|n| class.shape.fits_in(&n.resources().available)),
                                "refused a request that fits: {p}"
                            );
                            blocked[c] = Blocked::Anywhere;
                        }
                    }
                }
            }
        }

        // Advance simulated time to the next completion.
        let Some(Reverse((finish, t, c, node))) = running.pop() else {
            break;
        };
        now = finish;
        view.release(node, &classes[c as usize].shape).unwrap();
        ran[t as usize] += 1;
        completed += 1;
        let free = &view.node(node).unwrap().resources().available;
        for (k, class) in classes.iter().enumerate() {
            let wake = match blocked[k] {
                Blocked::No | Blocked::Woken(_) => None,
                Blocked::Anywhere => class.shape.fits_in(free).then_some(Blocked::Woken(node)),
                Blocked::On(n) => (n == node && class.shape.fits_in(free)).then_some(Blocked::No),
            };
            if let Some(state) = wake {
                blocked[k] = state;
            }
        }
    }

    assert_eq!(completed, tasks);
    assert!(
        ran.iter().all(|&r| r == 1),
        "a task ran zero or several times"
    );
    assert!(head.iter().zip(&queues).all(|(h, q)| *h == q.len()));
    for n in view.nodes() {
        assert_eq!(n.resources().available, n.resources().total, "{}", n.id());
    }
    assert_eq!(view.cluster_available(), totals);
    assert!(decisions >= u64::from(tasks));
    assert!(
        refusals < decisions / 10,
        "{refusals} refusals of {decisions} {per_class:?}"
    );
    assert!(now > 0);
    Stats {
        decisions,
        refusals,
        makespan: now,
    }
}
