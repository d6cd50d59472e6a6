//! `rayrs microbenchmark --cluster`: the cross-node workloads of the cluster issue on a head
//! and two nodes of this machine (separate `rayrs` processes, loopback TCP between them):
//! tasks spread over the nodes, calls to an actor on another node than the driver's, and the
//! `get` of a 1 GiB object made on another node. The head offers no CPU, so every task and
//! actor runs on a node other than the driver's (Ray's `cluster_utils` pattern).

use crate::microbenchmark::{err, Harness, R};
use ray::{ObjectRef, SchedulingStrategy};
use ray_node::local_cluster::Cluster;
use std::time::Instant;

#[ray::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

/// A plain array of `bytes` bytes, put where the task runs (readable in place, as Ray's
/// numpy arrays are), and its ref.
#[ray::remote]
fn make_array(bytes: u64) -> ray::ObjectRef<Vec<u64>> {
    ray::put_slice(&vec![7u64; (bytes / 8) as usize]).expect("a plain array put")
}

/// An actor on the node with resource `far`.
#[ray::actor]
pub struct Far;

#[ray::actor]
impl Far {
    #[allow(clippy::new_without_default)] // called remotely, never through Default
    pub fn new() -> Self {
        Far
    }
    pub fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
}

/// Starts the cluster, attaches this process as its driver, runs the metrics, stops it all.
pub fn main(h: &mut Harness) -> R<()> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_node = (cpus / 2).max(1).to_string();
    let mut cluster = Cluster::start(&exe, &["--num-cpus", "0"]);
    cluster.add_node(&["--num-cpus", &per_node, "--resources", r#"{"near": 1000}"#]);
    cluster.add_node(&["--num-cpus", &per_node, "--resources", r#"{"far": 1000}"#]);
    let config = ray::Config::cluster(cluster.address.clone()).auth_token(cluster.token());
    ray::init(config).map_err(err)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(h)))
        .unwrap_or_else(|p| Err(crate::microbenchmark::panic_message(&p)));
    ray::shutdown();
    drop(cluster);
    outcome
}

fn run(h: &mut Harness) -> R<()> {
    let batch = if h.quick { 100 } else { 1000 };
    h.metric("cluster: tasks async spread over 2 nodes", |h, name| {
        h.timeit(name, f64::from(batch), || {
            let refs: Vec<_> = (0..batch)
                .map(|_| {
                    small_value::options()
                        .scheduling_strategy(SchedulingStrategy::Spread)
                        .remote()
                })
                .collect();
            ray::get_all(&refs).map(drop).map_err(err)
        })
    });

    h.metric(
        "cluster: 1:1 actor calls async to another node",
        |h, name| {
            let actor = Far::options()
                .resources("far", 1.0)
                .try_remote()
                .map_err(err)?;
            h.timeit(name, f64::from(batch), || {
                let refs: Vec<ObjectRef<Vec<u8>>> =
                    (0..batch).map(|_| actor.small_value()).collect();
                ray::get_all(&refs).map(drop).map_err(err)
            })
        },
    );

    h.metric(
        "cluster: 1:1 actor calls sync to another node",
        |h, name| {
            let actor = Far::options()
                .resources("far", 1.0)
                .try_remote()
                .map_err(err)?;
            h.timeit(name, 1.0, || {
                ray::get(&actor.small_value()).map(drop).map_err(err)
            })
        },
    );

    let size: u64 = if h.quick { 64 << 20 } else { 1 << 30 };
    let label = if h.quick {
        "cluster: get 64 MiB made on another node (gigabytes)"
    } else {
        "cluster: get 1 GiB made on another node (gigabytes)"
    };
    h.metric(label, |h, name| {
        let rounds = if h.quick { 1 } else { 4 };
        let mut stats = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            // Made (untimed) on a node; the driver's node pulls it when the driver reads it.
            let made = make_array::options().resources("far", 1.0).remote(size);
            let made = ray::get(&made).map_err(err)?;
            let start = Instant::now();
            let view = ray::get_slice(&made).map_err(err)?;
            let elapsed = start.elapsed().as_secs_f64();
            if view.len() as u64 != size / 8 || view[view.len() - 1] != 7 {
                return Err("the object read back is not the one made".into());
            }
            stats.push(size as f64 / (1u64 << 30) as f64 / elapsed);
        }
        h.record(name, &stats)
    });
    Ok(())
}
