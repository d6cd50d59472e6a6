//! The cluster on real processes: a head and nodes started as `rayrs start` processes
//! (`ray_rs::cluster::Cluster`), drivers attached with `Config::cluster`, the CLI's `status`
//! and `stop`, and the token every server asks for.

use ray::Error;
use ray_rs::children_of;
use ray_rs::cluster::Cluster;
use std::time::{Duration, Instant};

const RAYRS: &str = env!("CARGO_BIN_EXE_rayrs");

#[ray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ray::remote]
fn where_am_i() -> (String, u32) {
    let c = ray::get_runtime_context().unwrap();
    (c.node_id, std::process::id())
}

/// Runs `f` in a driver session on `cluster`, shutting it down even if `f` panics.
fn with_driver<R>(cluster: &Cluster, f: impl FnOnce() -> R) -> R {
    ray::init(ray_rs::cluster::config(cluster)).expect("init on the cluster");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ray::shutdown();
    result.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn output(mut cmd: std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("running rayrs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_node_joins_and_a_driver_runs_tasks_on_the_cluster() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let node = cluster.add_node(&["--num-cpus", "2", "--resources", r#"{"node1": 1}"#]);
    let node_id = cluster.nodes[node].as_ref().unwrap().node_id.clone();
    let head_id = cluster.nodes[0].as_ref().unwrap().node_id.clone();

    // A node that has started is a member: registration comes before its first line.
    let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
    assert!(ok, "{status}");
    assert!(status.contains(&format!("node_{head_id}")), "{status}");
    assert!(status.contains(&format!("node_{node_id}")), "{status}");
    assert!(status.contains("(head)"), "{status}");
    assert!(status.contains("0.0/3.0 CPU"), "{status}");
    assert!(status.contains("0.0/1.0 node1"), "{status}");
    assert!(status.contains("(no resource demands)"), "{status}");

    with_driver(&cluster, || {
        let nodes = ray::nodes().unwrap();
        let alive: Vec<&str> = nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.node_id.as_str())
            .collect();
        assert_eq!(alive.len(), 2, "{nodes:?}");
        assert!(alive.contains(&node_id.as_str()) && alive.contains(&head_id.as_str()));
        assert_eq!(ray::cluster_resources().unwrap().get("CPU"), Some(&3.0));

        let refs: Vec<_> = (0..20).map(|i| add::remote(i, 1)).collect();
        assert_eq!(ray::get_all(&refs).unwrap(), (1..21).collect::<Vec<i64>>());
        // The driver attached to the head's node (on this machine); its tasks run there or
        // spill to the other node.
        let (ran_on, pid) = ray::get(&where_am_i::remote()).unwrap();
        assert!(ran_on == head_id || ran_on == node_id, "{ran_on}");
        assert_ne!(pid, std::process::id());
        assert_eq!(ray::get_runtime_context().unwrap().node_id, head_id);
    });
}

#[test]
fn a_wrong_head_address_fails_at_once_naming_it() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    // A port nothing listens on: the head's, once its listener is gone, is not knowable; a
    // bound and closed socket's is.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // `rayrs start --address` fails within `limit`, naming the address.
    let fails_within = |address: &str, limit: Duration| {
        let started = Instant::now();
        let (ok, text) = output(cluster.rayrs(&["start", "--address", address, "--block"]));
        assert!(!ok, "{text}");
        assert!(text.contains(address), "names the address: {text}");
        assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    };
    fails_within(&closed, Duration::from_secs(10));
    // A head that accepts connections and never answers: the 5 s join deadline (a second
    // or two more for the process to start and report).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fails_within(
        &silent.local_addr().unwrap().to_string(),
        Duration::from_secs(12),
    );
    drop(silent);

    match ray::init(ray::Config::cluster(closed.clone()).auth_token(cluster.token())) {
        Err(Error::ClusterUnreachable { address, reason }) => {
            assert_eq!(address, closed);
            assert!(!reason.is_empty());
        }
        other => {
            ray::shutdown();
            panic!("expected ClusterUnreachable, got {other:?}");
        }
    }
}

#[test]
fn nodes_and_drivers_without_the_token_are_refused() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let wrong = "a-wrong-token-of-enough-length";
    let mut cmd = cluster.rayrs(&["start", "--address", &cluster.address, "--block"]);
    cmd.env("RAY_AUTH_TOKEN", wrong);
    let (ok, text) = output(cmd);
    assert!(!ok, "{text}");
    assert!(text.contains("refused this node's auth token"), "{text}");

    // No token at all (no variable, no file in the home dir).
    let mut cmd = cluster.rayrs(&["start", "--address", &cluster.address, "--block"]);
    cmd.env_remove("RAY_AUTH_TOKEN");
    let (ok, text) = output(cmd);
    assert!(!ok, "{text}");
    assert!(text.contains("no auth token"), "{text}");

    match ray::init(ray::Config::cluster(cluster.address.clone()).auth_token(wrong)) {
        Err(Error::Unauthenticated(message)) => {
            assert!(message.contains(&cluster.address), "{message}")
        }
        other => {
            ray::shutdown();
            panic!("expected Unauthenticated, got {other:?}");
        }
    }

    // Raw gRPC: missing is Unauthenticated, wrong is PermissionDenied, on the GCS and on a
    // node manager.
    let node_manager = cluster.nodes[0]
        .as_ref()
        .unwrap()
        .node_manager_address
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = |address: &str| {
            tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy()
        };
        let mut gcs = ray_proto::gcs_client::GcsClient::new(channel(&cluster.address));
        let err = gcs.get_all_nodes(ray_proto::Empty {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        let mut gcs = ray_proto::gcs_client::GcsClient::with_interceptor(
            channel(&cluster.address),
            ray_proto::auth::AttachToken::new(wrong).unwrap(),
        );
        let err = gcs.get_all_nodes(ray_proto::Empty {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        let mut nm = ray_proto::node_manager_client::NodeManagerClient::with_interceptor(
            channel(&node_manager),
            ray_proto::auth::AttachToken::new(wrong).unwrap(),
        );
        let err = nm
            .get_node_resources(ray_proto::Empty {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        // The node manager's bulk path (pulls' raw ranges, on the same port): refused the
        // same way, with nothing sent after the refusal.
        for (token, code) in [
            ("", tonic::Code::Unauthenticated),
            (wrong, tonic::Code::PermissionDenied),
            (cluster.token(), tonic::Code::NotFound),
        ] {
            let (answer, rest) = bulk_ask(&node_manager, token);
            assert_eq!(answer.code, code as i32, "{answer:?}");
            assert!(rest.is_empty(), "{} bytes after {answer:?}", rest.len());
        }
        let mut right = ray_proto::gcs_client::GcsClient::with_interceptor(
            channel(&cluster.address),
            ray_proto::auth::AttachToken::new(cluster.token()).unwrap(),
        );
        assert_eq!(
            right
                .get_all_nodes(ray_proto::Empty {})
                .await
                .unwrap()
                .into_inner()
                .nodes
                .len(),
            1
        );
    });
}

/// Asks the node manager at `address` for a range of an object no node holds over the bulk
/// path, with `token`; its answer and whatever came after it.
fn bulk_ask(address: &str, token: &str) -> (ray_proto::BulkAnswer, Vec<u8>) {
    use std::io::{Read, Write};
    let ask = prost::Message::encode_to_vec(&ray_proto::BulkAsk {
        token: token.into(),
        object_id: vec![3; 16].into(),
        offset: 0,
        length: 1 << 20,
    });
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sent = b"RAYRSBLK".to_vec();
    sent.extend((ask.len() as u32).to_le_bytes());
    sent.extend(ask);
    s.write_all(&sent).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut answer = vec![0; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut answer).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let answer = prost::Message::decode(&answer[..]).unwrap();
    (answer, rest)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn a_drivers_workers_stop_with_its_job_on_every_node() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "2"]);
    let head_pid = cluster.nodes[0].as_ref().unwrap().pid();
    with_driver(&cluster, || {
        let refs: Vec<_> = (0..4).map(|i| add::remote(i, i)).collect();
        ray::get_all(&refs).unwrap();
        assert!(
            !children_of(head_pid).is_empty(),
            "the node started workers"
        );
    });
    // The driver finished its job: the node stopped its workers.
    ray_rs::eventually("the job's workers stopped", || {
        children_of(head_pid).is_empty()
    });
}

#[test]
fn rayrs_stop_leaves_no_process_or_port_behind() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let dir = cluster.dir().join("background");
    let dir_arg = dir.display().to_string();
    let (ok, text) = output(cluster.rayrs(&[
        "start",
        "--head",
        "--port",
        "0",
        "--num-cpus",
        "1",
        "--temp-dir",
        &dir_arg,
    ]));
    assert!(ok, "{text}");
    let address = text
        .lines()
        .find_map(|l| l.strip_prefix("RAY_ADDRESS="))
        .expect("the head prints RAY_ADDRESS")
        .trim()
        .to_string();
    let (ok, text) = output(cluster.rayrs(&[
        "start",
        "--address",
        &address,
        "--num-cpus",
        "1",
        "--temp-dir",
        &dir_arg,
    ]));
    assert!(ok, "{text}");
    let records: Vec<serde_json::Value> = std::fs::read_dir(dir.join("nodes"))
        .unwrap()
        .flatten()
        .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    let pids: Vec<u32> = records
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    let ports: Vec<String> = records
        .iter()
        .flat_map(|r| {
            [
                r["gcs_address"].as_str().unwrap(),
                r["node_manager_address"].as_str().unwrap(),
            ]
        })
        .map(str::to_string)
        .collect();
    // A driver on the background cluster starts workers (children of the head's node).
    ray::init(ray::Config::cluster(address.clone()).auth_token(cluster.token())).unwrap();
    let outcome = std::panic::catch_unwind(|| ray::get(&where_am_i::remote()).unwrap());
    let workers: Vec<u32> = pids.iter().flat_map(|p| children_of(*p)).collect();
    // Stop the nodes under the driver's feet: `rayrs stop` must not wait for it.
    let (ok, text) = output(cluster.rayrs(&["stop", "--temp-dir", &dir_arg]));
    ray::shutdown();
    outcome.unwrap();
    assert!(ok, "{text}");
    assert!(!workers.is_empty());
    for pid in pids.iter().chain(&workers) {
        assert!(!alive(*pid), "process {pid} left running");
    }
    for address in &ports {
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "{address} still listens"
        );
    }
    let (ok, text) = output(cluster.rayrs(&["stop", "--temp-dir", &dir_arg]));
    assert!(ok && text.contains("No rayrs node"), "{text}");
}

#[ray::remote]
fn slow_where_am_i(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    ray::get_runtime_context().unwrap().node_id
}

#[test]
fn a_task_needing_another_nodes_resource_spills_there() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let node = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"node1": 1}"#]);
    let node_id = cluster.nodes[node].as_ref().unwrap().node_id.clone();
    with_driver(&cluster, || {
        // The driver's node (the head) has no `node1`: its node manager sends the request on.
        let refs: Vec<_> = (0..5)
            .map(|_| where_am_i::options().resources("node1", 1.0).remote())
            .collect();
        for (ran_on, _) in ray::get_all(&refs).unwrap() {
            assert_eq!(ran_on, node_id);
        }
    });
}

/// A log written to memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_infeasible_task_waits_until_a_node_that_fits_joins() {
    // The driver's log, kept to look for its warning (this process's first subscriber).
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("warn")
        .try_init()
        .expect("the first subscriber of this process (a test process of its own)");
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let waiting = where_am_i::options().resources("node2", 1.0).remote();
        let ready = |r: &ray::ObjectRef<(String, u32)>| {
            ray::wait(std::slice::from_ref(r), 1, Some(Duration::ZERO))
                .unwrap()
                .0
                .len()
                == 1
        };
        // Not refused: it waits (the head's node manager warns of it meanwhile), and
        // `rayrs status` lists it among the demands, with the reason.
        assert!(!ready(&waiting));
        ray_rs::eventually("rayrs status lists the waiting shape", || {
            let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
            let demands = status
                .split("Demands:")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            ok && demands.contains("node2") && demands.contains("1 pending")
        });
        // The driver warns, naming the shape and why no node holds it.
        ray_rs::eventually("the driver warns of the shape", || {
            let text = log.text();
            text.contains("cannot be scheduled") && text.contains("node2")
        });
        // `rayrs explain` says it is infeasible, naming the resource no node has.
        let id = waiting.id();
        ray_rs::eventually("rayrs explain calls the task infeasible", || {
            let (ok, why) = output(cluster.rayrs(&["explain", &id, "--address", &cluster.address]));
            ok && why.contains("infeasible") && why.contains("no alive node has enough node2")
        });
        assert!(!ready(&waiting));
        let node = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"node2": 1}"#]);
        let node_id = cluster.nodes[node].as_ref().unwrap().node_id.clone();
        let (ran_on, _) = ray::get_timeout(&waiting, Duration::from_secs(30)).unwrap();
        assert_eq!(ran_on, node_id);
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn an_infeasible_actor_waits_until_a_node_that_fits_joins() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("warn")
        .try_init()
        .expect("the first subscriber of this process (a test process of its own)");
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let actor = Placed::options().resources("big", 1.0).remote();
        let call = actor.node();
        // Not dead: the GCS holds it back, `rayrs status` lists it, the driver warns.
        ray_rs::eventually("rayrs status lists the waiting actor", || {
            let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
            let demands = status
                .split("Demands:")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            ok && demands.contains("big") && demands.contains("1 actors pending")
        });
        ray_rs::eventually("the driver warns of the actor", || {
            let text = log.text();
            text.contains("Placed") && text.contains("cannot be scheduled") && text.contains("big")
        });
        // Why it is not placed, from the state API.
        let placed = ray::state::ListOptions::new()
            .filter("class_name=Placed")
            .unwrap();
        let actor_id = ray::state::list_actors(&placed).unwrap().rows[0]
            .actor_id
            .clone();
        match ray::state::explain(&actor_id).unwrap().why {
            ray::state::Why::ActorPending { reason } => assert!(reason.contains("big"), "{reason}"),
            other => panic!("expected a pending actor, got {other:?}"),
        }
        assert!(
            ray::wait(std::slice::from_ref(&call), 1, Some(Duration::ZERO))
                .unwrap()
                .0
                .is_empty()
        );
        let node = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"big": 1}"#]);
        let node_id = cluster.node(node).node_id.clone();
        let (ran_on, calls) = ray::get_timeout(&call, Duration::from_secs(30)).unwrap();
        assert_eq!((ran_on, calls), (node_id, 1));
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn spread_uses_every_node() {
    // Four CPUs each: two tasks leave a node under half busy.
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "4"]);
    cluster.add_node(&["--num-cpus", "4"]);
    cluster.add_node(&["--num-cpus", "4"]);
    let all: std::collections::BTreeSet<String> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.node_id.clone())
        .collect();
    with_driver(&cluster, || {
        // Batches until every node ran one (the head's node manager learns of the nodes a
        // view or two after they join).
        let mut used = std::collections::BTreeSet::new();
        ray_rs::eventually("spread tasks ran on every node", || {
            let refs: Vec<_> = (0..9)
                .map(|_| {
                    slow_where_am_i::options()
                        .scheduling_strategy(ray::SchedulingStrategy::Spread)
                        .remote(100)
                })
                .collect();
            used.extend(ray::get_all(&refs).unwrap());
            used == all
        });
        // The default policy, told apart: once the SPREAD leases went back, two at once stay
        // on the driver's node, which is under half busy (Ray's hybrid packing), where
        // SPREAD would take two nodes.
        ray_rs::eventually("the head's CPUs are free again", || {
            let free = node_counters(&cluster, 0).available.unwrap_or_default();
            free.amounts.get("CPU").copied() == Some(4.0)
        });
        let head = cluster.node(0).node_id.clone();
        let refs: Vec<_> = (0..2).map(|_| slow_where_am_i::remote(300)).collect();
        for ran_on in ray::get_all(&refs).unwrap() {
            assert_eq!(
                ran_on, head,
                "the default policy packs the local node first"
            );
        }
    });
}

#[test]
fn node_affinity_hard_and_soft() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let node = cluster.add_node(&["--num-cpus", "1"]);
    let node_id = cluster.nodes[node].as_ref().unwrap().node_id.clone();
    let head_id = cluster.nodes[0].as_ref().unwrap().node_id.clone();
    with_driver(&cluster, || {
        use ray::SchedulingStrategy;
        for soft in [false, true] {
            let on = where_am_i::options()
                .scheduling_strategy(SchedulingStrategy::node_affinity(&node_id, soft))
                .remote();
            assert_eq!(ray::get(&on).unwrap().0, node_id);
        }
        let nowhere = "00112233445566778899aabbccddeeff";
        let hard = where_am_i::options()
            .scheduling_strategy(SchedulingStrategy::node_affinity(nowhere, false))
            .remote();
        match ray::get(&hard) {
            Err(Error::Unschedulable { reason, .. }) => {
                assert!(reason.contains("unknown"), "{reason}")
            }
            other => panic!("expected Unschedulable, got {other:?}"),
        }
        let soft = where_am_i::options()
            .scheduling_strategy(SchedulingStrategy::node_affinity(nowhere, true))
            .remote();
        let ran_on = ray::get(&soft).unwrap().0;
        assert!(ran_on == head_id || ran_on == node_id);
        let bad = where_am_i::options()
            .scheduling_strategy(SchedulingStrategy::node_affinity("not hex", false))
            .remote();
        assert!(matches!(ray::get(&bad), Err(Error::InvalidArgument(_))));
    });
}

#[ray::remote(max_retries = 3)]
fn sleepy_where_am_i(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    ray::get_runtime_context().unwrap().node_id
}

fn node_alive(node_id: &str) -> Option<bool> {
    ray::nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.node_id == node_id)
        .map(|n| n.alive)
}

#[test]
fn a_killed_node_is_declared_dead_and_its_tasks_run_elsewhere() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let doomed = cluster.add_node(&["--num-cpus", "1"]);
    let doomed_id = cluster.node(doomed).node_id.clone();
    let doomed_pid = cluster.node(doomed).pid();
    let head_id = cluster.node(0).node_id.clone();
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        use ray::SchedulingStrategy;
        let there = SchedulingStrategy::node_affinity(&doomed_id, true);
        let task = sleepy_where_am_i::options()
            .scheduling_strategy(there.clone())
            .remote(3_000);
        ray_rs::eventually("the task's worker started on the doomed node", || {
            !children_of(doomed_pid).is_empty()
        });
        cluster.remove_node(doomed, false);
        // Retried on the node that is left, once the head no longer sends work to the dead
        // one.
        let ran_on = ray::get_timeout(&task, Duration::from_secs(60)).unwrap();
        assert_eq!(ran_on, head_id);
        ray_rs::eventually("the killed node is dead in ray::nodes()", || {
            node_alive(&doomed_id) == Some(false)
        });
        let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
        assert!(ok, "{status}");
        let dead = status.split("Dead:").nth(1).unwrap_or_default();
        assert!(
            dead.contains(&doomed_id) && dead.contains("health checks"),
            "{status}"
        );
        // Hard affinity to a dead node fails; soft runs elsewhere.
        let hard = where_am_i::options()
            .scheduling_strategy(SchedulingStrategy::node_affinity(&doomed_id, false))
            .remote();
        match ray::get(&hard) {
            Err(Error::Unschedulable { reason, .. }) => {
                assert!(reason.contains("dead"), "{reason}")
            }
            other => panic!("expected Unschedulable, got {other:?}"),
        }
        let soft = where_am_i::options().scheduling_strategy(there).remote();
        assert_eq!(ray::get(&soft).unwrap().0, head_id);
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn a_node_that_loses_the_head_leaves_after_the_grace_period() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let mut cmd = cluster.rayrs(&["start", "--address", &cluster.address, "--block"]);
    cmd.env("RAY_gcs_rpc_server_reconnect_timeout_s", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut node = cmd.spawn().unwrap();
    ray_rs::eventually("the node registered", || {
        std::fs::read_dir(cluster.dir().join("nodes"))
            .map(|d| d.count() == 2)
            .unwrap_or(false)
    });
    cluster.remove_node(0, false);
    let status = node.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(node.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("no answer from the GCS"), "{stderr}");
}

/// Where an actor lives, and a count that tells a restart.
#[ray::actor]
#[derive(Default)]
pub struct Placed {
    calls: u64,
}

#[ray::actor]
impl Placed {
    pub fn new() -> Self {
        Placed::default()
    }
    pub fn node(&mut self) -> (String, u64) {
        self.calls += 1;
        (ray::get_runtime_context().unwrap().node_id, self.calls)
    }
    pub fn pid(&self) -> (String, u32) {
        (
            ray::get_runtime_context().unwrap().node_id,
            std::process::id(),
        )
    }
}

#[ray::remote]
fn call_actor_from_a_task(actor: ray::ActorHandle<Placed>) -> (String, String) {
    let here = ray::get_runtime_context().unwrap().node_id;
    (here, ray::get(&actor.node()).unwrap().0)
}

#[test]
fn an_actor_on_another_node_is_called_from_a_third_and_restarts_when_its_node_dies() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"slot": 1, "a": 1}"#]);
    let b = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"slot": 1, "b": 1}"#]);
    let ids = [a, b].map(|i| cluster.node(i).node_id.clone());
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let actor = Placed::options()
            .resources("slot", 1.0)
            .num_cpus(0.0)
            .max_restarts(1)
            .remote();
        let (first, calls) = ray::get(&actor.node()).unwrap();
        assert_eq!(calls, 1);
        assert!(ids.contains(&first), "{first} is not a slot node");
        // Its handle passed to a task on the other slot node.
        let other = if first == ids[0] { "b" } else { "a" };
        let (task_node, actor_node) = ray::get(
            &call_actor_from_a_task::options()
                .resources(other, 1.0)
                .num_cpus(0.0)
                .remote(actor.clone()),
        )
        .unwrap();
        assert_ne!(task_node, actor_node);
        assert_eq!(actor_node, first);
        // Its node dies: it restarts on the other slot node.
        let dying = if first == ids[0] { a } else { b };
        cluster.remove_node(dying, false);
        let mut moved = None;
        ray_rs::eventually("the actor answers from its new node", || {
            match ray::get(&actor.node()) {
                Ok((node, calls)) => {
                    moved = Some((node, calls));
                    true
                }
                Err(Error::ActorUnavailable { .. }) => false,
                Err(e) => panic!("the actor failed: {e}"),
            }
        });
        let (node, calls) = moved.unwrap();
        assert_ne!(node, first);
        assert!(ids.contains(&node));
        assert_eq!(calls, 1, "a restarted actor starts afresh");
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[ray::remote]
fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn rayrs_status_lists_work_waiting_for_resources_in_use() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    with_driver(&cluster, || {
        // The only CPU is taken: the second task waits for it (a node can hold it).
        let _running = sleep_ms::remote(60_000);
        let _waiting = sleep_ms::remote(1);
        ray_rs::eventually("rayrs status lists the shape waiting for the CPU", || {
            let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
            let demands = status.split("Demands:").nth(1).unwrap_or_default();
            ok && demands.contains("CPU") && demands.contains("waiting for resources in use")
        });
    });
}

/// Runs a long task on the node with resource `b` for this worker, and waits for it.
#[ray::remote]
fn own_a_long_task_on_b() -> u32 {
    let long = sleep_ms::options()
        .resources("b", 1.0)
        .num_cpus(0.0)
        .remote(600_000);
    ray::get(&long).unwrap()
}

#[test]
fn leases_held_by_a_dead_nodes_processes_are_taken_back_on_other_nodes() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    let b = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"b": 1}"#]);
    let free_b = |cluster: &Cluster| {
        ray_common::resources::to_resource_set(node_counters(cluster, b).available)
            .unwrap()
            .get("b")
    };
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A worker on node a owns a task on node b: the lease on b is held by a's worker.
        let _owner = own_a_long_task_on_b::options().resources("a", 1.0).remote();
        ray_rs::eventually("the long task holds b", || free_b(&cluster) == 0.0);
        assert_eq!(node_counters(&cluster, b).num_workers, 1);
        // Node a dies with the owner: b takes the lease back and kills its worker (which
        // worked for nobody any more) rather than hold both forever.
        cluster.remove_node(a, false);
        ray_rs::eventually("b's resource comes back", || free_b(&cluster) == 1.0);
        ray_rs::eventually("the orphaned worker is gone", || {
            node_counters(&cluster, b).num_workers == 0
        });
    }));
    ray::shutdown();
    outcome.unwrap();
}

/// Creates actor `name` on the node with resource `b`, owned by this worker, and holds its
/// handle (the actor lives while it does) for a long while.
#[ray::remote]
fn own_an_actor_on_b(name: String) {
    let actor = Placed::options().name(&name).resources("b", 1.0).remote();
    ray::get(&actor.pid()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn an_actor_whose_owner_died_with_its_node_dies_too() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"b": 1}"#]);
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A worker on node a owns an actor on node b (not detached).
        let _owner = own_an_actor_on_b::options()
            .resources("a", 1.0)
            .remote("orphan".to_string());
        let mut found = None;
        ray_rs::eventually("the actor is up", || {
            found = ray::get_actor::<Placed>("orphan", None).ok();
            found.is_some()
        });
        let found = found.unwrap();
        let (_, pid) = ray::get_timeout(&found.pid(), Duration::from_secs(30)).unwrap();
        assert!(alive(pid));
        // Node a dies, and its processes with it: the actor on b goes too, as in Ray.
        cluster.remove_node(a, false);
        ray_rs::eventually("the orphaned actor's process is gone", || !alive(pid));
        match ray::get_timeout(&found.pid(), Duration::from_secs(30)) {
            Err(Error::ActorDied { cause, .. }) => assert!(cause.contains("owner"), "{cause}"),
            other => panic!("expected ActorDied, got {other:?}"),
        }
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[ray::remote]
fn env_here(names: Vec<String>) -> (String, Vec<Option<String>>) {
    (
        ray::get_runtime_context().unwrap().node_id,
        names.iter().map(|n| std::env::var(n).ok()).collect(),
    )
}

#[ray::actor]
pub struct EnvReader;

#[ray::actor]
impl EnvReader {
    #[allow(clippy::new_without_default)] // called remotely, never through Default
    pub fn new() -> Self {
        EnvReader
    }
    pub fn env(&self, names: Vec<String>) -> (String, Vec<Option<String>>) {
        env_here(names)
    }
}

#[test]
fn environment_variables_reach_workers_on_other_nodes() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "0"]);
    let a = cluster.add_node(&["--num-cpus", "2", "--resources", r#"{"a": 2}"#]);
    let a_id = cluster.node(a).node_id.clone();
    let env = ray::RuntimeEnv::new().env_var("CLUSTER_TEST_JOB", "job");
    ray::init(ray_rs::cluster::config(&cluster).runtime_env(env)).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        let names = || {
            [
                "CLUSTER_TEST_JOB",
                "CLUSTER_TEST_TASK",
                "CLUSTER_TEST_ACTOR",
            ]
            .map(String::from)
            .to_vec()
        };
        // The job's variable, and a task's own, on the other node's worker.
        let task = env_here::options()
            .resources("a", 1.0)
            .env_var("CLUSTER_TEST_TASK", "task")
            .remote(names());
        let (node, seen) = ray::get_timeout(&task, Duration::from_secs(60)).unwrap();
        assert_eq!(node, a_id);
        assert_eq!(seen, [Some("job".into()), Some("task".into()), None]);
        // An actor's own there too, and not the task's.
        let actor = EnvReader::options()
            .resources("a", 1.0)
            .env_var("CLUSTER_TEST_ACTOR", "actor")
            .remote();
        let (node, seen) = ray::get_timeout(&actor.env(names()), Duration::from_secs(60)).unwrap();
        assert_eq!(node, a_id);
        assert_eq!(seen, [Some("job".into()), None, Some("actor".into())]);
    });
    ray::shutdown();
    outcome.unwrap();
}

#[ray::remote]
fn put_here() -> ray::ObjectRef<Vec<u8>> {
    ray::put(&vec![5u8; 1 << 20]).unwrap()
}

#[test]
fn a_ref_owned_by_a_process_of_a_dead_node_fails_with_owner_died() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A worker on node a puts an object (it owns it) and hands the driver its ref.
        let inner = ray::get(&put_here::options().resources("a", 1.0).remote()).unwrap();
        cluster.remove_node(a, false);
        match ray::get_timeout(&inner, Duration::from_secs(60)) {
            Err(Error::OwnerDied(_)) => {}
            other => panic!("expected OwnerDied, got {:?}", other.map(|v| v.len())),
        }
    }));
    ray::shutdown();
    outcome.unwrap();
}

/// `n` bytes of a pattern both ends can check.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

#[ray::remote]
fn make_bytes(n: usize, seed: u8) -> (String, Vec<u8>) {
    (
        ray::get_runtime_context().unwrap().node_id,
        pattern(n, seed),
    )
}

#[ray::remote]
fn make_plain(n: usize, seed: u8) -> Vec<u8> {
    pattern(n, seed)
}

#[ray::remote]
fn check_bytes(data: Vec<u8>, seed: u8) -> (String, bool) {
    let ok = data == pattern(data.len(), seed);
    (ray::get_runtime_context().unwrap().node_id, ok)
}

fn node_counters(cluster: &Cluster, node: usize) -> ray_proto::NodeResourcesReply {
    let address = cluster.node(node).node_manager_address.clone();
    let token = cluster.token().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let mut nm = ray_proto::node_manager_client::NodeManagerClient::with_interceptor(
            channel,
            ray_proto::auth::AttachToken::new(&token).unwrap(),
        );
        nm.get_node_resources(ray_proto::Empty {})
            .await
            .unwrap()
            .into_inner()
    })
}

fn objects_pulled(cluster: &Cluster, node: usize) -> u64 {
    node_counters(cluster, node).objects_pulled
}

#[test]
fn a_large_object_made_on_one_node_is_read_on_others_byte_for_byte() {
    const SIZE: usize = 100 << 20;
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    let b = cluster.add_node(&["--num-cpus", "4", "--resources", r#"{"b": 4}"#]);
    let a_id = cluster.node(a).node_id.clone();
    let b_id = cluster.node(b).node_id.clone();
    with_driver(&cluster, || {
        // Made on node a (its value in a's store), read by the driver on the head.
        let made = make_bytes::options().resources("a", 1.0).remote(SIZE, 7);
        let (made_on, data) = ray::get(&made).unwrap();
        assert_eq!(made_on, a_id);
        assert_eq!(data.len(), SIZE);
        assert!(data == pattern(SIZE, 7), "the bytes differ");
        drop(data);
        // Passed to four reader processes on node b at once: pulled there once.
        let readers: Vec<_> = (0..4)
            .map(|_| Reader::options().resources("b", 1.0).num_cpus(0.0).remote())
            .collect();
        for r in &readers {
            let up = ray::get_timeout(&r.len(Vec::<u8>::new()), Duration::from_secs(60));
            assert_eq!(up.unwrap(), 0, "the reader is up");
        }
        let plain = make_plain::options()
            .resources("a", 1.0)
            .remote(16 << 20, 9);
        ray::wait(std::slice::from_ref(&plain), 1, None).unwrap();
        let before = objects_pulled(&cluster, b);
        let checks: Vec<_> = readers.iter().map(|r| r.check(plain.clone(), 9)).collect();
        let mut pids = std::collections::BTreeSet::new();
        for check in &checks {
            let (pid, ok) = ray::get_timeout(check, Duration::from_secs(60)).unwrap();
            assert!(ok, "a reader on node b saw other bytes");
            pids.insert(pid);
        }
        assert_eq!(pids.len(), 4, "four reader processes");
        // A task on node b later reads the same copy (placed by id: the readers hold b).
        let (ran_on, ok) = ray::get_timeout(
            &check_bytes::options()
                .scheduling_strategy(ray::SchedulingStrategy::node_affinity(&b_id, false))
                .remote(plain.clone(), 9),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(ran_on, b_id);
        assert!(ok);
        assert_eq!(
            objects_pulled(&cluster, b) - before,
            1,
            "one pull for four readers and a later task"
        );
    });
}

#[test]
fn an_object_whose_node_died_is_pulled_from_another_copy() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let doomed = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"b": 1}"#]);
    let c = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"c": 1}"#]);
    let doomed_id = cluster.node(doomed).node_id.clone();
    let c_id = cluster.node(c).node_id.clone();
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let made = make_plain::options()
            .resources("a", 1.0)
            .remote(16 << 20, 5);
        // Node b reads it: a copy there, kept by the reader.
        let keeper = Keeper::options().resources("b", 1.0).num_cpus(0.0).remote();
        let kept = ray::get_timeout(&keeper.keep(vec![made.clone()]), Duration::from_secs(60));
        assert_eq!(kept.unwrap(), 16 << 20);
        cluster.remove_node(doomed, false);
        ray_rs::eventually("the node is dead", || node_alive(&doomed_id) == Some(false));
        // The owner still names the dead node; node c finds the copy on node b.
        let read = check_bytes::options()
            .resources("c", 1.0)
            .remote(made.clone(), 5);
        let (ran_on, ok) = ray::get_timeout(&read, Duration::from_secs(60)).unwrap();
        assert_eq!(ran_on, c_id);
        assert!(ok, "the bytes of the copy are the object's");
        assert_eq!(objects_pulled(&cluster, c), 1);
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn an_object_only_a_dead_node_held_is_lost() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let doomed = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    let doomed_id = cluster.node(doomed).node_id.clone();
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A large value stays in the store of the node that made it.
        let made = make_plain::options().resources("a", 1.0).remote(4 << 20, 3);
        ray::wait(std::slice::from_ref(&made), 1, None).unwrap();
        cluster.remove_node(doomed, false);
        ray_rs::eventually("the node is dead", || node_alive(&doomed_id) == Some(false));
        match ray::get(&made) {
            Err(Error::ObjectLost(what)) => assert!(what.contains(&doomed_id), "{what}"),
            other => panic!("expected ObjectLost, got {:?}", other.map(|v| v.len())),
        }
    }));
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn actors_are_placed_by_their_scheduling_strategy() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let a = cluster.add_node(&["--num-cpus", "1"]);
    let b = cluster.add_node(&["--num-cpus", "1"]);
    let ids = [0, a, b].map(|i| cluster.node(i).node_id.clone());
    with_driver(&cluster, || {
        use ray::SchedulingStrategy;
        for id in &ids {
            let actor = Placed::options()
                .num_cpus(0.0)
                .scheduling_strategy(SchedulingStrategy::node_affinity(id, false))
                .remote();
            assert_eq!(&ray::get(&actor.node()).unwrap().0, id);
        }
        let spread: std::collections::BTreeSet<String> = (0..3)
            .map(|_| {
                Placed::options()
                    .num_cpus(0.0)
                    .scheduling_strategy(SchedulingStrategy::Spread)
                    .remote()
            })
            .collect::<Vec<_>>()
            .iter()
            .map(|actor| ray::get(&actor.node()).unwrap().0)
            .collect();
        assert_eq!(
            spread.len(),
            3,
            "three spread actors on three nodes: {spread:?}"
        );
        let nowhere = Placed::options()
            .num_cpus(0.0)
            .scheduling_strategy(SchedulingStrategy::node_affinity(
                "00112233445566778899aabbccddeeff",
                false,
            ))
            .remote();
        match ray::get(&nowhere.node()) {
            Err(Error::ActorDied { cause, .. }) => assert!(cause.contains("affinity"), "{cause}"),
            other => panic!("expected ActorDied, got {other:?}"),
        }
    });
}

#[ray::remote]
fn my_program() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

#[test]
fn the_program_is_shipped_once_and_a_tampered_copy_is_fetched_again() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let me = std::env::current_exe().unwrap();
    let sha = ray_common::sha256::file(&me).unwrap();
    let cached = cluster
        .dir()
        .join("cache")
        .join(cluster.node(0).pid().to_string())
        .join(&sha);
    let job = || {
        ray::init(ray_rs::cluster::config(&cluster).ship_binary(true)).unwrap();
        let ran = std::panic::catch_unwind(|| ray::get(&my_program::remote()).unwrap());
        ray::shutdown();
        ran.unwrap()
    };
    // The first job uploads the program; the node fetches it and runs its copy.
    assert_eq!(job(), cached.display().to_string());
    assert!(
        cluster.dir().join("binaries").join(&sha).exists(),
        "the head keeps it"
    );
    assert_eq!(node_counters(&cluster, 0).binaries_fetched, 1);
    // A second job of the same program transfers nothing.
    assert_eq!(job(), cached.display().to_string());
    assert_eq!(node_counters(&cluster, 0).binaries_fetched, 1);
    // A cached copy that no longer matches its hash is refused and fetched again.
    // (Replaced, not written over: the last job's workers may still be running it.)
    let forged = cached.with_extension("forged");
    std::fs::write(&forged, b"not the program").unwrap();
    std::fs::rename(&forged, &cached).unwrap();
    assert_eq!(job(), cached.display().to_string());
    assert_eq!(node_counters(&cluster, 0).binaries_fetched, 2);
    assert_eq!(ray_common::sha256::file(&cached).unwrap(), sha);
}

#[ray::remote]
fn ask_node1_from_a_task() -> (String, String) {
    let here = ray::get_runtime_context().unwrap().node_id;
    let there = ray::get(&where_am_i::options().resources("node1", 1.0).remote()).unwrap();
    (here, there.0)
}

#[test]
fn a_task_of_a_worker_spills_to_another_node_too() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    let node = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"node1": 1}"#]);
    let node_id = cluster.node(node).node_id.clone();
    let head_id = cluster.node(0).node_id.clone();
    with_driver(&cluster, || {
        // The outer task runs on the head (no node1 needed); its child needs node1, so the
        // head's node manager spills the worker's request there.
        let outer = ask_node1_from_a_task::options()
            .scheduling_strategy(ray::SchedulingStrategy::node_affinity(&head_id, false))
            .remote();
        let (here, there) = ray::get_timeout(&outer, Duration::from_secs(60)).unwrap();
        assert_eq!((here, there), (head_id.clone(), node_id.clone()));
    });
}

/// An actor that reads the byte arrays it is handed by reference and keeps the references
/// (so its process holds their copies pinned).
#[ray::actor]
#[derive(Default)]
pub struct Keeper {
    kept: Vec<ray::ObjectRef<Vec<u8>>>,
}

#[ray::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper::default()
    }
    pub fn keep(&mut self, refs: Vec<ray::ObjectRef<Vec<u8>>>) -> usize {
        let n = refs
            .iter()
            .map(|r| ray::get(r).expect("a kept array").len())
            .sum();
        self.kept.extend(refs);
        n
    }
}

/// An actor that reads the byte arrays it is given.
#[ray::actor]
#[derive(Default)]
pub struct Reader;

#[ray::actor]
impl Reader {
    pub fn new() -> Self {
        Reader
    }
    pub fn len(&self, data: Vec<u8>) -> usize {
        data.len()
    }
    pub fn check(&self, data: Vec<u8>, seed: u8) -> (u32, bool) {
        (std::process::id(), data == pattern(data.len(), seed))
    }
}

/// A head, a node with resource `a` that makes arrays, and a node with resource `b` whose
/// store holds three 16 MiB arrays at most: copies kept pinned there would fill it.
fn maker_and_small_reader() -> Cluster {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 10}"#]);
    cluster.add_node(&[
        "--num-cpus",
        "1",
        "--resources",
        r#"{"b": 10}"#,
        "--object-store-memory",
        &(56u64 << 20).to_string(),
    ]);
    cluster
}

#[test]
fn copies_pulled_for_arguments_are_let_go_after_the_call() {
    let cluster = maker_and_small_reader();
    with_driver(&cluster, || {
        let reader = Reader::options().resources("b", 1.0).num_cpus(0.0).remote();
        for round in 0..8u8 {
            let data = make_plain::options()
                .resources("a", 1.0)
                .remote(16 << 20, round);
            let n = ray::get_timeout(&reader.len(data), Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(n, 16 << 20);
        }
    });
}

#[test]
fn copies_pinned_by_a_killed_process_are_let_go() {
    let cluster = maker_and_small_reader();
    with_driver(&cluster, || {
        let arrays = |first: u8| -> Vec<ray::ObjectRef<Vec<u8>>> {
            (first..first + 3)
                .map(|i| {
                    make_plain::options()
                        .resources("a", 1.0)
                        .remote(16 << 20, i)
                })
                .collect()
        };
        let keep = |refs: Vec<ray::ObjectRef<Vec<u8>>>| {
            let keeper = Keeper::options().resources("b", 1.0).num_cpus(0.0).remote();
            let n = ray::get_timeout(&keeper.keep(refs), Duration::from_secs(60));
            (keeper, n)
        };
        // The driver keeps owning the first three: only the dead reader's pins hold them.
        let first = arrays(0);
        let (keeper, n) = keep(first.clone());
        assert_eq!(n.unwrap(), 3 * (16 << 20));
        ray::kill(&keeper).unwrap();
        // Three more fit only once the dead process's copies are let go (else the pulls
        // wait for room, then fail as full).
        let (_keeper, n) = keep(arrays(3));
        assert_eq!(
            n.expect("room once the killed reader's pins are released"),
            3 * (16 << 20)
        );
        drop(first);
    });
}

#[test]
fn a_task_is_leased_where_its_argument_bytes_are() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "2"]);
    // Four CPUs: the driver's idle lease of the task that made the data (one CPU) keeps
    // node 1 under half used, where the default policy packs.
    cluster.add_node(&["--num-cpus", "4", "--resources", r#"{"a": 1}"#]);
    let node1 = cluster.node(1).node_id.clone();
    with_driver(&cluster, || {
        // 8 MiB made on node 1, owned by the driver (on the head).
        let data = make_plain::options().resources("a", 1.0).remote(8 << 20, 7);
        ray::wait(
            std::slice::from_ref(&data),
            1,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        // The head is idle and would run it itself; the bytes are on node 1, so it runs there
        // and nothing is pulled.
        for _ in 0..3 {
            let (node, ok) = ray::get_timeout(
                &check_bytes::remote(data.clone(), 7),
                Duration::from_secs(60),
            )
            .unwrap();
            assert!(ok);
            assert_eq!(node, node1, "leased where the argument is");
        }
        assert_eq!(node_counters(&cluster, 0).objects_pulled, 0);
        assert_eq!(node_counters(&cluster, 1).objects_pulled, 0);
        // A task with no such argument stays on the driver's node.
        let (here, _) = ray::get(&where_am_i::remote()).unwrap();
        assert_eq!(here, cluster.node(0).node_id);
    });
}

/// Set in a second driver: this test binary run again by a test, as another job.
const SECOND_DRIVER: &str = "RAYRS_SECOND_DRIVER";

/// The command that runs test `name` of this binary again as a second driver of `cluster`,
/// with `role`.
fn second_driver_command(cluster: &Cluster, name: &str, role: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(SECOND_DRIVER, role)
        .env("RAY_ADDRESS", &cluster.address)
        .env("RAY_AUTH_TOKEN", cluster.token());
    command
}

/// Runs test `name` of this binary again as a second driver of `cluster`, with `role`; its
/// output, after asserting it passed.
fn second_driver(cluster: &Cluster, name: &str, role: &str) -> String {
    let out = second_driver_command(cluster, name, role).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the second driver failed:\n{text}");
    text
}

#[test]
fn a_named_actor_is_found_by_a_second_driver() {
    const NAME: &str = "a_named_actor_is_found_by_a_second_driver";
    if std::env::var_os(SECOND_DRIVER).is_some() {
        ray::init(ray::Config::from_env()).unwrap();
        let actor: ray::ActorHandle<Placed> = ray::get_actor("shared", None).unwrap();
        let (node, calls) = ray::get_timeout(&actor.node(), Duration::from_secs(30)).unwrap();
        // What the first driver reads (a driver's own line, not a log).
        std::io::Write::write_all(
            &mut std::io::stdout(),
            format!("SECOND {node} {calls}\n").as_bytes(),
        )
        .unwrap();
        ray::shutdown();
        return;
    }
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    let node1 = cluster.node(1).node_id.clone();
    with_driver(&cluster, || {
        let actor = Placed::options()
            .name("shared")
            .resources("a", 1.0)
            .remote();
        assert_eq!(ray::get(&actor.node()).unwrap(), (node1.clone(), 1));
        // Another job, in another process, calls the same actor (on node 1) by its name.
        let text = second_driver(&cluster, NAME, "call");
        assert!(text.contains(&format!("SECOND {node1} 2")), "{text}");
        assert_eq!(ray::get(&actor.node()).unwrap(), (node1.clone(), 3));
    });
}

#[test]
fn a_killed_driver_finishes_its_job_but_its_detached_actor_lives_on() {
    const NAME: &str = "a_killed_driver_finishes_its_job_but_its_detached_actor_lives_on";
    if std::env::var_os(SECOND_DRIVER).is_some() {
        // A driver that dies without `shutdown`: a detached actor on node 1, a plain one on
        // node 2, then SIGKILL.
        ray::init(ray::Config::from_env()).unwrap();
        let kept = Placed::options()
            .name("kept")
            .lifetime_detached()
            .resources("a", 1.0)
            .remote();
        let plain = Placed::options().resources("b", 1.0).remote();
        let (_, kept_pid) = ray::get(&kept.pid()).unwrap();
        let (_, plain_pid) = ray::get(&plain.pid()).unwrap();
        std::io::Write::write_all(
            &mut std::io::stdout(),
            format!("PIDS {kept_pid} {plain_pid}\n").as_bytes(),
        )
        .unwrap();
        unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
        unreachable!("killed");
    }
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"b": 1}"#]);
    let out = second_driver_command(&cluster, NAME, "die")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pids: Vec<u32> = text
        .split("PIDS ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no pids from the driver:\n{text}"))
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let [kept_pid, plain_pid] = pids[..] else {
        panic!("{pids:?}")
    };
    // The job finished on every node: its plain actor's process is gone...
    ray_rs::eventually("the killed driver's plain actor stops", || {
        !alive(plain_pid)
    });
    // ...and its detached actor is not, and answers a later driver.
    assert!(alive(kept_pid));
    with_driver(&cluster, || {
        let kept: ray::ActorHandle<Placed> = ray::get_actor("kept", None).unwrap();
        assert_eq!(ray::get(&kept.pid()).unwrap().1, kept_pid);
    });
}

#[test]
fn a_shipped_binary_that_cannot_run_on_a_node_is_an_error_naming_it() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    // A node whose temp dir (where shipped binaries are cached) is mounted noexec, in a
    // mount namespace of its own that ends with it: the job's binary arrives intact and
    // cannot be run there, as a binary built for another machine.
    let dir = cluster.dir().join("noexec");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.display().to_string();
    let node = cluster.add_node_in(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t tmpfs -o noexec,mode=0700 rayrs-noexec "$0" && exec "$@""#,
            &dir,
        ],
        &[
            "--num-cpus",
            "1",
            "--resources",
            r#"{"x": 1}"#,
            "--temp-dir",
            &dir,
        ],
    );
    let node_id = cluster.node(node).node_id.clone();
    ray::init(ray_rs::cluster::config(&cluster).ship_binary(true)).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        let r = where_am_i::options().resources("x", 1.0).remote();
        match ray::get_timeout(&r, Duration::from_secs(60)) {
            Ok(v) => panic!("ran on a node that cannot run it: {v:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains(&node_id), "the error names the node: {text}");
                assert!(text.contains("ermission denied"), "and what failed: {text}");
            }
        }
        // The rest of the cluster runs the job.
        assert_eq!(
            ray::get(&where_am_i::remote()).unwrap().0,
            cluster.node(0).node_id
        );
    });
    ray::shutdown();
    outcome.unwrap();
}

#[test]
fn a_workers_task_socket_and_server_refuse_peers_without_the_token() {
    use std::io::{Read, Write};
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "1"]);
    cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    with_driver(&cluster, || {
        let actor = Placed::options()
            .name("guarded")
            .resources("a", 1.0)
            .remote();
        assert_eq!(ray::get(&actor.node()).unwrap().1, 1);
        // Where its worker listens, as the GCS tells a caller with the token.
        let (gcs, token) = (cluster.address.clone(), cluster.token().to_string());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let info = rt.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{gcs}"))
                .unwrap()
                .connect_lazy();
            let mut gcs = ray_proto::gcs_client::GcsClient::with_interceptor(
                channel,
                ray_proto::auth::AttachToken::new(&token).unwrap(),
            );
            gcs.get_named_actor(ray_proto::GetNamedActorRequest {
                name: "guarded".into(),
                namespace: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
        });
        assert!(!info.task_address.is_empty(), "{info:?}");
        // Its task socket over TCP: a greeting with another token, or garbage, and the
        // connection is closed without an answer.
        let frame = |token: &str| {
            let hello = prost::Message::encode_to_vec(&ray_proto::Hello {
                token: token.into(),
            });
            let mut frame = (hello.len() as u32).to_le_bytes().to_vec();
            frame.extend(hello);
            frame
        };
        for sent in [frame("not-the-token"), vec![0xff; 8]] {
            let mut s = std::net::TcpStream::connect(&info.task_address).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&sent).unwrap();
            let mut rest = Vec::new();
            let read = s.read_to_end(&mut rest);
            assert!(
                matches!(read, Ok(0)) || read.is_err(),
                "closed with nothing said: {read:?} {rest:?}"
            );
        }
        // Its core-worker server: no token, no objects.
        let address = info.core_worker_address.clone();
        let refused = rt.block_on(async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy();
            let mut cw = ray_proto::core_worker_client::CoreWorkerClient::new(channel);
            cw.get_objects(ray_proto::GetObjectsRequest { object_ids: vec![] })
                .await
                .map(|_| ())
                .unwrap_err()
        });
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        // The actor still answers its caller.
        assert_eq!(ray::get(&actor.node()).unwrap().1, 2);
    });
}

#[ray::remote(num_cpus = 0.0)]
fn gpu_ids() -> Vec<String> {
    ray::get_gpu_ids()
}

/// A node not told how many GPUs it has counts those its `CUDA_VISIBLE_DEVICES` names, and
/// hands out those ids.
#[test]
fn a_node_detects_its_gpus_from_visible_devices() {
    let cluster = Cluster::start_in(
        RAYRS,
        &["env", "CUDA_VISIBLE_DEVICES=3,5"],
        &["--num-cpus", "1"],
    );
    let (ok, status) = output(cluster.rayrs(&["status", "--address", &cluster.address]));
    assert!(ok, "{status}");
    assert!(status.contains("0.0/2.0 GPU"), "{status}");
    with_driver(&cluster, || {
        let one = ray::get(&gpu_ids::options().num_gpus(1.0).remote()).unwrap();
        assert!(one == ["3"] || one == ["5"], "{one:?}");
        let mut both = ray::get(&gpu_ids::options().num_gpus(2.0).remote()).unwrap();
        both.sort();
        assert_eq!(both, vec!["3", "5"]);
    });
}

/// STRICT_SPREAD puts each bundle on its own node, and each bundle's tasks run on that node;
/// a group needing one more node than there is waits until one joins.
#[test]
fn strict_spread_bundles_land_on_distinct_nodes_and_wait_for_a_node_to_join() {
    use ray::util::{placement_group, remove_placement_group, Bundle, PlacementStrategy};
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "2"]);
    cluster.add_node(&["--num-cpus", "2"]);
    ray::init(ray_rs::cluster::config(&cluster)).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let two = placement_group(
            vec![Bundle::new().cpus(1.0); 2],
            PlacementStrategy::StrictSpread,
        )
        .unwrap();
        assert!(two.wait(Duration::from_secs(30)).unwrap());
        let nodes: Vec<String> = (0..2)
            .map(|i| {
                let r = where_am_i::options()
                    .scheduling_strategy(ray::SchedulingStrategy::placement_group(&two, Some(i)))
                    .remote();
                ray::get(&r).unwrap().0
            })
            .collect();
        assert_ne!(nodes[0], nodes[1], "each bundle on its own node");
        // Bundle 0's tasks always run on bundle 0's node.
        for _ in 0..3 {
            let r = where_am_i::options()
                .scheduling_strategy(ray::SchedulingStrategy::placement_group(&two, Some(0)))
                .remote();
            assert_eq!(ray::get(&r).unwrap().0, nodes[0]);
        }
        let three = placement_group(
            vec![Bundle::new().cpus(1.0); 3],
            PlacementStrategy::StrictSpread,
        )
        .unwrap();
        assert!(!three.wait(Duration::from_millis(500)).unwrap());
        cluster.add_node(&["--num-cpus", "2"]);
        assert!(three.wait(Duration::from_secs(30)).unwrap());
        let r = where_am_i::options()
            .scheduling_strategy(ray::SchedulingStrategy::placement_group(&three, None))
            .remote();
        ray::get(&r).unwrap();
        remove_placement_group(&two).unwrap();
        remove_placement_group(&three).unwrap();
    }));
    ray::shutdown();
    outcome.unwrap();
}

/// `rayrs list` and `rayrs summary` show a cluster's tasks, actors, nodes and jobs, as the
/// state API has them; a bad filter and a wrong token are refused in words.
#[test]
fn rayrs_list_and_summary_show_the_clusters_state() {
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "2"]);
    let head_id = cluster.nodes[0].as_ref().unwrap().node_id.clone();
    let list = |args: &[&str]| {
        let all = [&["list"], args, &["--address", &cluster.address]].concat();
        output(cluster.rayrs(&all))
    };
    with_driver(&cluster, || {
        let refs: Vec<_> = (0..5).map(|i| add::remote(i, 1)).collect();
        ray::get_all(&refs).unwrap();
        let job_id = ray::get_runtime_context().unwrap().job_id;

        ray_rs::eventually("rayrs list tasks shows the five adds finished", || {
            let (ok, text) = list(&["tasks", "-f", "name=add", "--format", "json"]);
            let rows: Vec<serde_json::Value> = match serde_json::from_str(&text) {
                Ok(rows) if ok => rows,
                _ => return false,
            };
            rows.len() == 5
                && rows.iter().all(|r| {
                    r["state"] == "FINISHED"
                        && r["job_id"] == job_id
                        && r["node_id"] == head_id.as_str()
                })
        });
        let (ok, table) = list(&["tasks", "--filter", "state=FINISHED", "--limit", "2"]);
        assert!(ok, "{table}");
        assert!(
            table.contains("TASK_ID") && table.contains("FINISHED"),
            "{table}"
        );
        assert!(table.contains("2 of 5 rows shown"), "{table}");

        let (ok, summary) =
            output(cluster.rayrs(&["summary", "tasks", "--address", &cluster.address]));
        assert!(ok, "{summary}");
        let add_line = summary.lines().find(|l| l.trim_start().starts_with("add"));
        assert!(
            add_line.is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["add", "5", "5"]),
            "{summary}"
        );

        let (ok, nodes) = list(&["nodes"]);
        assert!(
            ok && nodes.contains(&head_id) && nodes.contains("ALIVE"),
            "{nodes}"
        );
        let (ok, jobs) = list(&["jobs", "--format", "json"]);
        assert!(ok, "{jobs}");
        let jobs: Vec<serde_json::Value> = serde_json::from_str(&jobs).unwrap();
        let mine = jobs
            .iter()
            .find(|j| j["job_id"] == job_id)
            .expect("this job");
        assert_eq!(mine["status"], "RUNNING");
        assert_eq!(mine["driver_pid"], std::process::id());

        // Workers and objects, asked of every node and process: this driver, and the five
        // results it still holds.
        ray_rs::eventually("rayrs list workers shows this driver", || {
            let (ok, text) = list(&["workers", "-f", "worker_type=DRIVER", "--format", "json"]);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
            ok && rows
                .iter()
                .any(|r| r["pid"] == std::process::id() && r["address"].is_string())
        });
        let (ok, text) = list(&["objects", "-f", "worker_type=DRIVER", "--format", "json"]);
        assert!(ok, "{text}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        for r in &refs {
            assert!(
                rows.iter().any(|o| o["object_id"] == r.id().as_str()
                    && o["reference_type"] == "LOCAL_REFERENCE"),
                "{} missing from {text}",
                r.id()
            );
        }

        let (ok, bad) = list(&["tasks", "-f", "colour=red"]);
        assert!(!ok && bad.contains("no field \"colour\""), "{bad}");
        let (ok, bad) = list(&["tasks", "-f", "state"]);
        assert!(!ok && bad.contains("key=value"), "{bad}");
        let mut wrong = cluster.rayrs(&["list", "tasks", "--address", &cluster.address]);
        wrong.env("RAY_AUTH_TOKEN", "not-the-token-0123456789");
        let (ok, refused) = output(wrong);
        assert!(!ok && refused.contains("refused this token"), "{refused}");

        // The timeline: a slice per add.
        let trace = cluster.dir().join("trace.json");
        let (ok, said) = output(cluster.rayrs(&[
            "timeline",
            "--address",
            &cluster.address,
            "-f",
            "name=add",
            "-o",
            &trace.display().to_string(),
        ]));
        assert!(ok && said.contains("Wrote 5 tasks"), "{said}");
        let events: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e["ph"] == "X" && e["name"] == "add")
                .count(),
            5
        );

        // The head's dashboard (its address in the head's record): the same counts on
        // /metrics, with the head process's own counters; nothing without the token.
        let url = ray_node::records::running(cluster.dir())
            .into_iter()
            .find(|r| r.head)
            .and_then(|r| r.dashboard_url)
            .expect("the head records its dashboard");
        let scrape = |token: Option<&str>| ray_rs::http::get(&format!("{url}/metrics"), token);
        assert_eq!(scrape(None).0, 401);
        assert_eq!(scrape(Some("not-the-token-0123456789")).0, 403);
        let (status, metrics) = scrape(Some(cluster.token()));
        assert_eq!(status, 200, "{metrics}");
        assert!(
            metrics
                .lines()
                .any(|l| l == "ray_tasks{State=\"FINISHED\",Name=\"add\"} 5"),
            "{metrics}"
        );
        let leases = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rayrs_leases_granted_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(leases.is_some_and(|n| n >= 1.0), "{metrics}");
        // Each node's CPU use, and the tasks' run times.
        assert!(
            metrics.contains("ray_node_cpu_utilization{NodeId="),
            "{metrics}"
        );
        let timed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("rayrs_task_run_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(timed.is_some_and(|n| n >= 5.0), "{metrics}");
    });
}

#[ray::remote]
fn print_here(text: String) -> (String, u32) {
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    (
        ray::get_runtime_context().unwrap().node_id,
        std::process::id(),
    )
}

/// A task on another node prints: the line reaches the GCS's stream of the job's output
/// (which the driver prints from), named by the function, the worker's pid and its node;
/// and it is in that node's file of the worker's output.
#[test]
fn what_a_task_prints_on_another_node_reaches_the_driver_and_stays_in_the_nodes_file() {
    let mut cluster = Cluster::start(RAYRS, &["--num-cpus", "0"]);
    let a = cluster.add_node(&["--num-cpus", "1", "--resources", r#"{"a": 1}"#]);
    let a_id = cluster.node(a).node_id.clone();
    let (address, token) = (cluster.address.clone(), cluster.token().to_string());
    let text = "hello from node a";
    let (pid, line, node_id, node_ip) = with_driver(&cluster, || {
        let job_id = ray::get_runtime_context().unwrap().job_id;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The same stream the driver opened at init, opened again by the test.
        let mut lines = rt.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_lazy();
            let mut gcs = ray_proto::gcs_client::GcsClient::with_interceptor(
                channel,
                ray_proto::auth::AttachToken::new(&token).unwrap(),
            );
            gcs.subscribe_logs(ray_proto::SubscribeLogsRequest { job_id })
                .await
                .unwrap()
                .into_inner()
        });
        let task = print_here::options()
            .resources("a", 1.0)
            .remote(text.to_string());
        let (ran_on, pid) = ray::get_timeout(&task, Duration::from_secs(60)).unwrap();
        assert_eq!(ran_on, a_id);
        rt.block_on(async {
            let find = async {
                loop {
                    let batch = lines.message().await.unwrap().expect("the stream is open");
                    if let Some(l) = batch.lines.iter().find(|l| l.text == text) {
                        return (pid, l.clone(), batch.node_id.clone(), batch.node_ip.clone());
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(30), find)
                .await
                .expect("the line within 30 s")
        })
    });
    assert_eq!(
        (line.name.as_str(), line.pid, line.stderr),
        ("print_here", pid, false)
    );
    assert_eq!(ray_common::ids::hex(&node_id), a_id);
    assert_eq!(node_ip, "127.0.0.1");
    let file = std::fs::read_dir(cluster.dir().join("logs"))
        .unwrap()
        .flatten()
        .flat_map(|session| {
            std::fs::read_dir(session.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.path())
        .find(|f| f.to_string_lossy().ends_with(&format!("-{pid}.out")))
        .expect("the worker's file of its standard output");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.lines().any(|l| l == text), "{written}");
}

/// A program of the workspace built beside `rayrs` (the root package's test drivers).
fn sibling(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(RAYRS).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: build the workspace (cargo nextest run --workspace does)",
        path.display()
    );
    path
}

/// The `results ...` line of a driver's output.
fn results_line(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with("results "))
        .unwrap_or_else(|| panic!("no results line in: {out}"))
        .to_string()
}

/// Ray's job mode: `rayrs job submit` uploads a program and runs it as a job's driver on the
/// head; it prints what the same program prints in sync, local and cluster mode. A job
/// stopped ends its driver and its tasks' workers; the job API answers only with the token.
#[test]
fn a_submitted_job_prints_what_the_program_prints_in_every_mode_and_stops_with_its_workers() {
    let driver = sibling("workload-driver");
    let program = driver.display().to_string();
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(&driver)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        results_line(&text)
    };
    let sync = run(&[("RAY_ADDRESS", "sync")]);
    let local = run(&[("RAY_ADDRESS", "local"), ("RAY_NUM_CPUS", "2")]);
    assert_eq!(sync, local);
    let cluster = Cluster::start(RAYRS, &["--num-cpus", "2"]);
    let on_cluster = run(&[
        ("RAY_ADDRESS", cluster.address.as_str()),
        ("RAY_AUTH_TOKEN", cluster.token()),
    ]);
    assert_eq!(on_cluster, sync);

    // Submitted: followed to its end, its logs are its driver's output.
    let (ok, out) =
        output(cluster.rayrs(&["job", "submit", "--submission-id", "same", "--", &program]));
    assert!(ok, "{out}");
    assert!(out.contains("Job 'same' submitted successfully"), "{out}");
    assert!(out.contains("Job 'same' SUCCEEDED"), "{out}");
    assert_eq!(results_line(&out), sync);
    let (ok, listed) = output(cluster.rayrs(&["job", "list"]));
    assert!(ok && listed.contains("same\tSUCCEEDED"), "{listed}");
    // The dashboard's jobs view lists it and shows its logs, in a real browser.
    let dashboard = ray_node::records::running(cluster.dir())
        .into_iter()
        .find(|r| r.head)
        .and_then(|r| r.dashboard_url)
        .expect("the head's dashboard");
    shows_job_logs(&dashboard, cluster.token(), "same", &sync);

    // A job that holds: its task's print reaches its logs; stopped, it and its worker end.
    let (ok, out) = output(cluster.rayrs(&[
        "job",
        "submit",
        "--no-wait",
        "--submission-id",
        "held",
        "--",
        &program,
        "hold",
    ]));
    assert!(ok, "{out}");
    let record = ray_node::records::running(cluster.dir())
        .into_iter()
        .find(|r| r.head)
        .unwrap();
    let base = record.dashboard_url.expect("the head's dashboard");
    // Its driver runs the whole workload first, on a machine other tests load too.
    let holder = std::cell::Cell::new(0u32);
    ray::__private::eventually(
        Duration::from_secs(60),
        "the held job's task says where it runs",
        || {
            let url = format!("{base}/api/jobs/held/logs");
            let (_, body) = ray_rs::http::get(&url, Some(cluster.token()));
            let logs: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let pid = logs["logs"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.split_once(") holding in pid ")
                        .and_then(|(_, pid)| pid.trim().parse().ok())
                });
            holder.set(pid.unwrap_or(0));
            holder.get() != 0
        },
    );
    let (status, _) = ray_rs::http::get(&format!("{base}/api/jobs/held"), None);
    assert_eq!(status, 401, "the job API needs the token");
    let (status, body) = ray_rs::http::get(&format!("{base}/api/jobs/held"), Some(cluster.token()));
    assert_eq!(status, 200, "{body}");
    let details: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(details["status"], "RUNNING", "{body}");
    let driver_pid = details["driver_pid"].as_u64().unwrap() as u32;
    assert!(alive(driver_pid) && alive(holder.get()));
    let (ok, out) = output(cluster.rayrs(&["job", "stop", "held"]));
    assert!(ok && out.contains("stopping"), "{out}");
    ray_rs::eventually("the stopped job's driver and worker are gone", || {
        !alive(driver_pid) && !alive(holder.get())
    });
    // (Recorded once the driver is reaped, which may come just after it is gone.)
    let details = format!("{base}/api/jobs/held");
    ray_rs::eventually("the job is recorded stopped", || {
        let (_, body) = ray_rs::http::get(&details, Some(cluster.token()));
        body.contains("\"status\":\"STOPPED\"")
    });
    let (ok, status) = output(cluster.rayrs(&["job", "status", "held"]));
    assert!(ok && status.contains("STOPPED"), "{status}");
}

/// Drives the dashboard at `base` in chromium: the jobs view lists submitted job `id` as
/// succeeded, and selected, shows its logs with `line` in them.
fn shows_job_logs(base: &str, token: &str, id: &str, line: &str) {
    use ray_rs::browser::{click, displayed, text, until};
    ray_rs::browser::tool("CHROMIUM", "/usr/bin/chromium");
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let profile = tmp.join(format!("chromium-jobs-{}", std::process::id()));
    ray_rs::browser::with_browser(profile, Duration::from_secs(90), async |client| {
        client
            .goto(&format!("{base}/#token={token}"))
            .await
            .unwrap();
        click(client, "button[data-view=jobs]").await;
        let row = format!("#submitted-table tr[data-submission-id='{id}']");
        until("the submitted job is listed as succeeded", || async {
            displayed(client, &row).await
                && text(client, &row)
                    .await
                    .is_some_and(|t| t.contains("SUCCEEDED"))
        })
        .await;
        click(client, &row).await;
        until("its logs are shown", || async {
            text(client, "#job-logs-text")
                .await
                .is_some_and(|t| t.contains(line))
        })
        .await;
        ray_rs::browser::screenshot(client, &tmp.join("dashboard-screenshots"), "jobs.png").await;
    });
}
