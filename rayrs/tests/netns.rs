//! The head and two nodes in network namespaces of their own (veth pairs on a bridge, their
//! own addresses), the driver in the head's: every connection between them crosses the
//! bridge, so anything bound to or dialled on loopback by accident (and the abstract Unix
//! sockets, which are per namespace) fails the test. Needs root (CI runs as root); leaves no
//! namespace, link or process behind.
//!
//! One test, two roles: run by the harness it builds the namespaces and the cluster, then
//! runs itself again inside the head's namespace as the driver (`RAYRS_NETNS_DRIVER` set),
//! in a namespace without a node, and in node 1's, as a driver whose node then dies.

use ray_node::local_cluster::Cluster;
use std::process::Command;
use std::time::Duration;

const RAYRS: &str = env!("CARGO_BIN_EXE_rayrs");
const DRIVER_ENV: &str = "RAYRS_NETNS_DRIVER";
const TEST_NAME: &str = "head_and_nodes_in_their_own_network_namespaces";

#[ray::remote]
fn where_am_i() -> String {
    ray::get_runtime_context().unwrap().node_id
}

#[ray::remote]
fn make(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[ray::remote]
fn check(data: Vec<u8>) -> (String, bool) {
    let ok = data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8);
    (ray::get_runtime_context().unwrap().node_id, ok)
}

#[ray::actor]
#[derive(Default)]
pub struct Counter {
    n: u64,
}

#[ray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter::default()
    }
    pub fn incr(&mut self) -> (String, u64) {
        self.n += 1;
        (ray::get_runtime_context().unwrap().node_id, self.n)
    }
}

#[ray::remote]
fn my_pid() -> u32 {
    std::process::id()
}

#[ray::remote]
fn call_from_a_task(c: ray::ActorHandle<Counter>) -> (String, String, u64) {
    let (actor_node, n) = ray::get(&c.incr()).unwrap();
    (ray::get_runtime_context().unwrap().node_id, actor_node, n)
}

/// Runs a command, failing the test with its output if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and a bridge, deleted when dropped (a deleted namespace takes its veth pair).
struct Net {
    namespaces: Vec<String>,
    bridge: String,
}

impl Net {
    /// `n` namespaces on one bridge, namespace `i` at `{subnet}.{i + 1}/24`.
    fn new(n: usize, subnet: &str) -> Net {
        let tag = std::process::id() % 100_000;
        let mut net = Net {
            namespaces: Vec::new(),
            bridge: format!("rrb{tag}"),
        };
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        run(&["ip", "link", "set", &net.bridge, "up"]);
        for i in 0..n {
            let ns = format!("rrs{tag}n{i}");
            let (outer, inner) = (format!("rro{tag}n{i}"), format!("rri{tag}n{i}"));
            run(&["ip", "netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            run(&["ip", "link", "set", &inner, "netns", &ns]);
            run(&["ip", "link", "set", &outer, "master", &net.bridge]);
            run(&["ip", "link", "set", &outer, "up"]);
            let address = format!("{subnet}.{}/24", i + 1);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &address, "dev", &inner,
            ]);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

#[test]
fn head_and_nodes_in_their_own_network_namespaces() {
    if let Ok(spec) = std::env::var(DRIVER_ENV) {
        return drive(&spec);
    }
    let subnet = format!("10.231.{}", std::process::id() % 250);
    // Namespace 3 runs no node: a driver there is on a machine of its own.
    let net = Net::new(4, &subnet);
    let exec = |i: usize| ["ip", "netns", "exec", net.namespaces[i].as_str()];
    let ip = |i: usize| format!("{subnet}.{}", i + 1);
    let head_ip = ip(0);
    let mut cluster = Cluster::start_in(
        RAYRS,
        &exec(0),
        &["--node-ip-address", &head_ip, "--num-cpus", "0"],
    );
    assert!(cluster.address.starts_with(&head_ip), "{}", cluster.address);
    for i in [1, 2] {
        let (address, resource) = (ip(i), format!(r#"{{"n{i}": 10}}"#));
        cluster.add_node_in(
            &exec(i),
            &[
                "--node-ip-address",
                &address,
                "--num-cpus",
                "1",
                "--resources",
                &resource,
            ],
        );
    }
    let ids: Vec<String> = (0..3).map(|i| cluster.node(i).node_id.clone()).collect();
    // The driver: this test again, inside the head's namespace; then again in a namespace
    // that runs no node (another machine, as far as the cluster can tell).
    let me = std::env::current_exe().unwrap();
    for (driver_ns, place) in [
        (0, "on the head's machine"),
        (3, "on a machine without a node"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.namespaces[driver_ns]])
            .arg(&me)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            // Its log says how it attached.
            .env("RUST_LOG", "ray::head=info")
            .env(
                DRIVER_ENV,
                format!(
                    "{} {} {} {}",
                    cluster.address,
                    cluster.token(),
                    ids[1],
                    ids[2]
                ),
            )
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the driver {place} failed:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert_eq!(
            text.contains("attached to the head from afar"),
            driver_ns == 3,
            "a driver maps the store of a node of its own machine, and only then:\n{text}"
        );
    }
    // A driver attached to node 1 (it runs in node 1's namespace): when node 1 dies, the GCS
    // finishes its job, and node 2 stops the job's worker there. It writes the pid of that
    // worker into a file of the cluster's dir (which goes with the cluster).
    let named = cluster.dir().join("orphan-worker-pid");
    let driver = Killed(
        Command::new("ip")
            .args(["netns", "exec", &net.namespaces[1]])
            .arg(&me)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(
                DRIVER_ENV,
                format!(
                    "orphan {} {} {}",
                    cluster.address,
                    cluster.token(),
                    named.display()
                ),
            )
            .spawn()
            .unwrap(),
    );
    let mut worker = None;
    // (A driver's start in a namespace, and a worker's, take a while on a busy machine.)
    ray::__private::eventually(
        Duration::from_secs(60),
        "the driver names its worker",
        || {
            worker = std::fs::read_to_string(&named)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            worker.is_some()
        },
    );
    let worker = worker.unwrap();
    assert!(alive(worker));
    cluster.remove_node(1, false);
    ray_rs::eventually("the job's worker on node 2 is stopped", || !alive(worker));
    drop(driver);
    drop(cluster);
    drop(net);
}

/// A child process killed (and reaped) when dropped, however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// The driver attached to node 1: runs a task on node 2, writes the pid of the worker that
/// ran it (idle there after) into file `named`, and waits to be killed.
fn drive_and_wait(address: &str, token: &str, named: &str) {
    ray::init(ray::Config::cluster(address).auth_token(token)).expect("init in node 1's namespace");
    let pid = ray::get(&my_pid::options().resources("n2", 1.0).remote()).unwrap();
    // Only once the lease went back (the worker idle on node 2): then only the job's end
    // can stop it, not the taking back of a dead node's leases.
    ray::__private::eventually(
        Duration::from_secs(30),
        "the lease on node 2 returns",
        || ray::available_resources().is_ok_and(|r| r.get("n2") == Some(&10.0)),
    );
    std::fs::write(named, pid.to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// The driver's part (in the head's namespace, or one with no node): tasks, objects and an
/// actor that must cross the bridge.
fn drive(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    if let ["orphan", address, token, named] = parts[..] {
        return drive_and_wait(address, token, named);
    }
    let [address, token, n1, n2] = parts[..] else {
        panic!("bad {DRIVER_ENV}: {spec}");
    };
    ray::init(ray::Config::cluster(address).auth_token(token)).expect("init in the namespace");
    let outcome = std::panic::catch_unwind(|| {
        // Tasks placed on each node (the head has no CPU), over TCP across the bridge.
        assert_eq!(
            ray::get(&where_am_i::options().resources("n1", 1.0).remote()).unwrap(),
            n1
        );
        assert_eq!(
            ray::get(&where_am_i::options().resources("n2", 1.0).remote()).unwrap(),
            n2
        );
        // An object made on node 1, pulled by node 2 for a task there and by the driver's.
        let data = make::options().resources("n1", 1.0).remote(8 << 20);
        let (ran_on, ok) =
            ray::get(&check::options().resources("n2", 1.0).remote(data.clone())).unwrap();
        assert_eq!(ran_on, n2);
        assert!(ok, "node 2 read other bytes");
        assert_eq!(ray::get(&data).unwrap().len(), 8 << 20);
        // A large value the driver puts (into its node's store, streamed there when the
        // driver maps no store) read by a task on node 2, and read back by the driver.
        let mine: Vec<u8> = (0..(6usize << 20)).map(|i| (i % 251) as u8).collect();
        let put = ray::put(&mine).unwrap();
        let (ran_on, ok) =
            ray::get(&check::options().resources("n2", 1.0).remote(put.clone())).unwrap();
        assert_eq!(ran_on, n2);
        assert!(ok, "node 2 read other bytes than the driver put");
        assert_eq!(ray::get(&put).unwrap(), mine);
        // An actor on node 2, called by the driver and by a task on node 1.
        let counter = Counter::options()
            .resources("n2", 1.0)
            .num_cpus(0.0)
            .remote();
        assert_eq!(ray::get(&counter.incr()).unwrap(), (n2.to_string(), 1));
        let (task_node, actor_node, n) = ray::get(
            &call_from_a_task::options()
                .resources("n1", 1.0)
                .remote(counter.clone()),
        )
        .unwrap();
        assert_eq!((task_node.as_str(), actor_node.as_str(), n), (n1, n2, 2));
    });
    ray::shutdown();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
