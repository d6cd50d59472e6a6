//! Tests through the in-process cluster ([`crate::harness`]): the submitter's retries and
//! pipelining, the node manager's leases, jobs, blocked CPU lending and worker deaths, and
//! the GCS's actor placement and restarts, each driven through the real services with
//! faults from filters.

use crate::args::ArgSpec;
use crate::harness::{eventually, RandomDrops, TestCluster, JOB};
use crate::options::{ActorOptions, TaskOptions};
use ray_common::rpc::{NodeManagerApi, OnMethod, RpcErrorKind, Service, Verdict};
use ray_common::{Clock, ManualClock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Runs of [`add_counted`], which only one test calls (tests may share a process).
static ADD_RUNS: AtomicUsize = AtomicUsize::new(0);

#[crate::remote]
fn add_counted(a: i64, b: i64) -> i64 {
    ADD_RUNS.fetch_add(1, Ordering::SeqCst);
    a + b
}

#[crate::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[crate::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[crate::remote]
fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

fn name(function: &str) -> &'static str {
    Box::leak(format!("{}::{function}", module_path!()).into_boxed_str())
}

fn lease_request(cpus: f64, job_id: u32) -> ray_proto::LeaseRequest {
    ray_proto::LeaseRequest {
        shape: Some(ray_common::resources::to_resources(
            &ray_scheduler::ResourceSet::cpus(cpus).unwrap(),
        )),
        requester_id: Default::default(),
        for_actor: false,
        job_id,
        request_id: 0,
        ..Default::default()
    }
}

fn granted(reply: ray_proto::LeaseReply) -> ray_proto::Lease {
    match reply.result {
        Some(ray_proto::lease_reply::Result::Granted(l)) => l,
        other => panic!("no lease: {other:?}"),
    }
}

#[test]
fn a_lost_task_reply_is_retried_to_the_right_result() {
    let cluster = TestCluster::start(1, 2.0);
    let driver = cluster.driver(0, "driver");
    // The first task frame's reply is lost: its connection breaks, as on a real network.
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::DropResponse).times(1));
    let before = ADD_RUNS.load(Ordering::SeqCst);
    let r = driver.submit(
        name("add_counted"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&40i64), ArgSpec::value(&2i64)],
    );
    let sum: i64 = TestCluster::get(&driver, &r, WAIT).unwrap();
    assert_eq!(sum, 42);
    // It ran where its reply was lost, then again.
    assert_eq!(ADD_RUNS.load(Ordering::SeqCst) - before, 2);
}

#[test]
fn a_lost_task_reply_without_retries_fails_as_a_dead_worker() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::DropResponse).times(1));
    let r = driver.submit(
        name("add"),
        &TaskOptions::default().max_retries(0),
        vec![ArgSpec::value(&1i64), ArgSpec::value(&2i64)],
    );
    let got = TestCluster::get::<i64>(&driver, &r, WAIT);
    assert!(
        matches!(got, Err(crate::Error::WorkerDied { .. })),
        "{got:?}"
    );
}

#[test]
fn pipelined_tasks_all_complete_under_random_task_connection_faults() {
    let cluster = TestCluster::start(1, 2.0);
    let driver = cluster.driver(0, "driver");
    // About one frame in twenty breaks its connection; retries cover every loss.
    let drops = RandomDrops::new(cluster.seed, Service::DataPlane, 50);
    let dropped = drops.dropped();
    cluster.filters.install(drops);
    let opts = TaskOptions::default().max_retries(-1);
    let refs: Vec<_> = (0..200u64)
        .map(|i| driver.submit(name("square"), &opts, vec![ArgSpec::value(&i)]))
        .collect();
    for (i, r) in refs.iter().enumerate() {
        let v: u64 = TestCluster::get(&driver, r, WAIT).unwrap();
        assert_eq!(v, (i * i) as u64);
    }
    assert!(dropped.load(Ordering::SeqCst) > 0, "no fault was injected");
    // The task connections went over the in-memory network: no socket of the session's.
    let sockets = std::fs::read_to_string("/proc/net/unix").unwrap();
    assert!(
        !sockets.contains(&cluster.session),
        "a task socket of the harness"
    );
}

#[test]
fn node_manager_gives_each_job_its_own_workers_and_reuses_them() {
    let cluster = TestCluster::start(1, 2.0);
    let node = &cluster.nodes[0];
    let nm = cluster.node_manager_client(0, "test");
    let gcs = cluster.gcs_client("test");
    cluster.block_on(async {
        gcs.register_job(ray_proto::JobConfig {
            job_id: 2,
            program: "in-process".into(),
            env: Vec::new(),
            namespace: "second".into(),
            binary_sha256: String::new(),
            driver_node: Default::default(),
            driver_pid: 0,
            log_to_driver: false,
        })
        .await
        .unwrap();
        let first = granted(
            nm.request_worker_lease(lease_request(1.0, JOB))
                .await
                .unwrap(),
        );
        let second = granted(
            nm.request_worker_lease(lease_request(1.0, 2))
                .await
                .unwrap(),
        );
        assert_ne!(first.worker_id, second.worker_id, "jobs share no worker");
        return_lease(&*nm, first.lease_id, false).await;
        let again = granted(
            nm.request_worker_lease(lease_request(1.0, JOB))
                .await
                .unwrap(),
        );
        assert_eq!(
            again.worker_id, first.worker_id,
            "an idle worker of the job is reused"
        );
        return_lease(&*nm, again.lease_id, false).await;
        return_lease(&*nm, second.lease_id, false).await;
    });
    assert_eq!(node.manager.num_workers(), 2);
}

#[test]
fn node_manager_refuses_a_lease_for_an_unknown_job() {
    let cluster = TestCluster::start(1, 1.0);
    let nm = cluster.node_manager_client(0, "test");
    let refused = cluster.block_on(nm.request_worker_lease(lease_request(1.0, 77)));
    let e = refused.expect_err("job 77 was never registered");
    assert_eq!(e.kind, RpcErrorKind::NotFound, "{e}");
    assert_eq!(cluster.nodes[0].manager.num_workers(), 0);
}

#[test]
fn node_manager_takes_back_a_failed_workers_lease_and_lends_a_blocked_workers_cpu() {
    let cluster = TestCluster::start(1, 1.0);
    let node = &cluster.nodes[0];
    let nm = cluster.node_manager_client(0, "test");
    let cpus = |m: &ray_raylet::NodeManager| m.resources().1.get(ray_scheduler::CPU);
    let lease = cluster.block_on(async {
        granted(
            nm.request_worker_lease(lease_request(1.0, JOB))
                .await
                .unwrap(),
        )
    });
    assert_eq!(cpus(&node.manager), 0.0);
    // Blocked in `get`, the worker lends its CPU; resumed, it takes it back.
    let blocked = |b: bool| ray_proto::BlockedRequest {
        worker_id: lease.worker_id.clone(),
        blocked: b,
    };
    cluster.block_on(nm.notify_blocked(blocked(true))).unwrap();
    assert_eq!(cpus(&node.manager), 1.0);
    cluster.block_on(nm.notify_blocked(blocked(false))).unwrap();
    assert_eq!(cpus(&node.manager), 0.0);
    // Returned as failed, the worker is killed and its CPU is free again.
    cluster.block_on(return_lease(&*nm, lease.lease_id, true));
    assert_eq!(cpus(&node.manager), 1.0);
    eventually(WAIT, "the failed worker is gone", || {
        node.manager.num_workers() == 0
    });
}

async fn return_lease(nm: &dyn NodeManagerApi, lease_id: u64, worker_failed: bool) {
    nm.return_worker(ray_proto::ReturnWorkerRequest {
        lease_id,
        worker_failed,
    })
    .await
    .unwrap();
}

/// An actor whose process can be killed from a test.
#[crate::actor]
pub struct Tally {
    n: u64,
}

#[crate::actor]
impl Tally {
    pub fn new(start: u64) -> Self {
        Tally { n: start }
    }

    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// A [`Tally`] starting at `start`, created by `driver` with `opts`.
fn tally(
    driver: &std::sync::Arc<crate::core_worker::CoreWorker>,
    opts: ActorOptions,
    start: u64,
) -> crate::core_worker::ActorCore {
    driver
        .create_actor(
            <Tally as crate::ActorClass>::CLASS,
            opts,
            vec![ArgSpec::value(&start)],
        )
        .unwrap()
}

/// `actor.add(by)`, called by `driver`, waited for.
fn add_to(
    driver: &std::sync::Arc<crate::core_worker::CoreWorker>,
    actor: &crate::core_worker::ActorCore,
    by: u64,
) -> crate::Result<u64> {
    let r = driver.call_actor(actor, "add", vec![ArgSpec::value(&by)]);
    TestCluster::get::<u64>(driver, &r, WAIT)
}

#[test]
fn gcs_places_an_actor_and_restarts_it_after_its_worker_dies() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    let core = tally(&driver, ActorOptions::default().max_restarts(1), 10);
    let call = |by: u64| add_to(&driver, &core, by);
    assert_eq!(call(1).unwrap(), 11);
    assert_eq!(call(1).unwrap(), 12);
    // Its worker dies: the GCS restarts it (state starts over from the constructor).
    let node = &cluster.nodes[0].manager;
    let workers = node.worker_ids();
    assert_eq!(workers.len(), 1);
    assert!(node.kill_worker(workers[0]));
    eventually(WAIT, "the actor is back", || matches!(call(0), Ok(10)));
    assert_eq!(call(5).unwrap(), 15);
}

#[test]
fn gcs_places_actors_where_their_resources_are_and_buries_the_unplaceable() {
    let plain = ray_scheduler::ResourceSet::cpus(1.0).unwrap();
    let special = ray_scheduler::ResourceSet::from_pairs([
        ("CPU".to_string(), 1.0),
        ("special".to_string(), 1.0),
    ])
    .unwrap();
    let cluster = TestCluster::start_with(vec![plain, special]);
    let driver = cluster.driver(0, "driver");
    let core = tally(
        &driver,
        ActorOptions::default().resources("special", 1.0),
        1,
    );
    let r = driver.call_actor(&core, "add", vec![ArgSpec::value(&1u64)]);
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 2);
    assert_eq!(cluster.nodes[0].manager.num_workers(), 0);
    assert_eq!(
        cluster.nodes[1].manager.num_workers(),
        1,
        "placed on the node with the resource"
    );

    let nowhere = tally(
        &driver,
        ActorOptions::default().resources("missing", 1.0),
        1,
    );
    let r = driver.call_actor(&nowhere, "add", vec![ArgSpec::value(&1u64)]);
    match TestCluster::get::<u64>(&driver, &r, WAIT) {
        Err(crate::Error::ActorDied { cause, .. }) => {
            assert!(
                cause.contains("unschedulable") && cause.contains("missing"),
                "{cause}"
            )
        }
        other => panic!("expected ActorDied, got {other:?}"),
    }
}

#[test]
fn node_manager_gives_a_retried_lease_request_the_lease_it_granted() {
    let cluster = TestCluster::start(1, 2.0);
    let node = &cluster.nodes[0].manager;
    let nm = cluster.node_manager_client(0, "test");
    let cpus = || node.resources().1.get(ray_scheduler::CPU);
    cluster
        .filters
        .install(OnMethod::new("RequestWorkerLease", Verdict::DropResponse).times(1));
    let ask = ray_proto::LeaseRequest {
        request_id: 7,
        ..lease_request(1.0, JOB)
    };
    let lost = cluster.block_on(nm.request_worker_lease(ask.clone()));
    assert_eq!(lost.unwrap_err().kind, RpcErrorKind::Unreachable);
    // Granted all the same: the node holds it.
    assert_eq!(cpus(), 1.0);
    let again = granted(
        cluster
            .block_on(nm.request_worker_lease(ask.clone()))
            .unwrap(),
    );
    assert_eq!(
        cpus(),
        1.0,
        "the retry got the lease granted first, not a second one"
    );
    cluster.block_on(return_lease(&*nm, again.lease_id, false));
    assert_eq!(cpus(), 2.0);
    // Returned, the name is free: the same id now asks for a new lease.
    let fresh = granted(cluster.block_on(nm.request_worker_lease(ask)).unwrap());
    assert_ne!(fresh.lease_id, again.lease_id);
}

#[test]
fn node_manager_refuses_a_lease_to_a_requester_on_a_node_declared_dead() {
    let cluster = TestCluster::start(1, 2.0);
    let node = &cluster.nodes[0].manager;
    let nm = cluster.node_manager_client(0, "test");
    let gone = ray_common::NodeId::random();
    // This node hears that node `gone` died.
    node.apply_view(
        u64::MAX,
        &[ray_proto::NodeInfo {
            node_id: gone.to_vec().into(),
            alive: false,
            ..Default::default()
        }],
    );
    let from_the_dead = ray_proto::LeaseRequest {
        requester_node: gone.to_vec().into(),
        ..lease_request(1.0, JOB)
    };
    let refused = cluster.block_on(nm.request_worker_lease(from_the_dead));
    assert_eq!(refused.unwrap_err().kind, RpcErrorKind::Unreachable);
    assert_eq!(
        node.resources().1.get(ray_scheduler::CPU),
        2.0,
        "nothing held"
    );
    // From a live node, granted.
    let alive = ray_proto::LeaseRequest {
        requester_node: ray_common::NodeId::random().to_vec().into(),
        ..lease_request(1.0, JOB)
    };
    granted(cluster.block_on(nm.request_worker_lease(alive)).unwrap());
}

#[test]
fn node_manager_grants_two_copies_of_one_request_in_flight_at_once_one_lease() {
    let cluster = TestCluster::start(1, 2.0);
    let node = &cluster.nodes[0].manager;
    let nm = cluster.node_manager_client(0, "test");
    let ask = ray_proto::LeaseRequest {
        request_id: 8,
        ..lease_request(1.0, JOB)
    };
    // Both wait for the worker the first starts; both wake when it registers.
    let (a, b) = cluster.block_on(async {
        tokio::join!(
            nm.request_worker_lease(ask.clone()),
            nm.request_worker_lease(ask.clone())
        )
    });
    let (a, b) = (granted(a.unwrap()), granted(b.unwrap()));
    assert_eq!(a.lease_id, b.lease_id, "two leases for one request");
    assert_eq!(node.resources().1.get(ray_scheduler::CPU), 1.0);
    cluster.block_on(return_lease(&*nm, a.lease_id, false));
}

#[test]
fn a_task_whose_lease_answer_was_lost_runs_and_leaks_no_lease() {
    let cluster = TestCluster::start(1, 2.0);
    let driver = cluster.driver(0, "driver");
    let node = &cluster.nodes[0].manager;
    cluster
        .filters
        .install(OnMethod::new("RequestWorkerLease", Verdict::DropResponse).times(1));
    let r = driver.submit(
        name("square"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&9u64)],
    );
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 81);
    // The idle lease goes back; nothing else holds the node's CPUs.
    eventually(WAIT, "every CPU is free again", || {
        node.resources().1.get(ray_scheduler::CPU) == 2.0
    });
}

#[test]
fn a_borrower_on_another_node_reads_inline_values_and_pulls_shared_ones() {
    let cluster = TestCluster::start(2, 1.0);
    let owner = cluster.driver(0, "owner");
    let borrower = cluster.driver(1, "borrower");
    let small = owner.put(&vec![7u8; 16]).unwrap();
    let large = owner.put(&vec![7u8; 1 << 20]).unwrap();
    // The refs as another process decodes them: borrowed from `owner`.
    let lend = |r: &std::sync::Arc<crate::ownership::RefInner>| {
        let at = crate::ownership::ref_to_wire(r).unwrap();
        borrower.own.decoded_ref(r.id, &at)
    };
    let (small_b, large_b) = (lend(&small), lend(&large));
    let v: Vec<u8> = TestCluster::get(&borrower, &small_b, WAIT).unwrap();
    assert_eq!(v, vec![7u8; 16]);
    // An arena offset means nothing on another node: the borrower's node pulls the object
    // into its own store, and the borrower reads it there.
    let pulled: Vec<u8> = TestCluster::get(&borrower, &large_b, WAIT).unwrap();
    assert_eq!(pulled, vec![7u8; 1 << 20]);
    assert!(
        cluster.nodes[1].manager.store().used() >= 1 << 20,
        "the copy is in the borrower's node's store"
    );
    let v: Vec<u8> = TestCluster::get(&owner, &large, WAIT).unwrap();
    assert_eq!(v.len(), 1 << 20);
}

#[test]
fn the_task_manager_keeps_a_tasks_spec_while_refs_to_its_result_live() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    let arg = driver.put(&3u64).unwrap();
    let r = driver.submit(
        name("square"),
        &TaskOptions::default().max_retries(2),
        vec![ArgSpec::by_ref(arg.clone())],
    );
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 9);
    let spec = driver
        .own
        .store
        .task_of(&r.id)
        .expect("kept while the ref lives");
    assert_eq!(spec.function, name("square"));
    assert_eq!(spec.max_retries, 2);
    assert_eq!(spec.shape_key, TaskOptions::default().shape_key);
    let by_value = driver.submit(
        name("square"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&4u64)],
    );
    let encoded = crate::codec::encode(&4u64).unwrap();
    assert!(matches!(
        &driver.own.store.task_of(&by_value.id).unwrap().args[..],
        [crate::task_manager::SpecArg::Value(b)] if b[..] == encoded[..]
    ));
    // A large value is not kept with the result: only its length is.
    let big = driver.submit(
        name("byte_len"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&vec![1u8; 200_000])],
    );
    assert_eq!(
        TestCluster::get::<usize>(&driver, &big, WAIT).unwrap(),
        200_000
    );
    assert!(matches!(
        &driver.own.store.task_of(&big.id).unwrap().args[..],
        [crate::task_manager::SpecArg::LargeValue(n)] if *n > 200_000
    ));
    assert!(
        matches!(&spec.args[..], [crate::task_manager::SpecArg::Object { id, owner: None }] if *id == arg.id),
        "{:?}",
        spec.args
    );
    // The record holds no ref: the argument goes when its last ref does.
    let arg_id = arg.id;
    drop(arg);
    eventually(WAIT, "the argument is freed", || {
        !driver.own.store.contains(&arg_id)
    });
    assert!(driver.own.store.task_of(&r.id).is_some());
    let id = r.id;
    drop(r);
    eventually(WAIT, "the record goes with the result", || {
        driver.own.store.task_of(&id).is_none()
    });
}

#[test]
fn the_submitter_reconnects_to_a_live_actor_and_resends_or_fails_a_lost_call() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    let create = |retries: i32| {
        tally(
            &driver,
            ActorOptions::default().max_task_retries(retries),
            10,
        )
    };
    let call = |core: &crate::core_worker::ActorCore, by: u64| {
        let r = driver.call_actor(core, "add", vec![ArgSpec::value(&by)]);
        TestCluster::get::<u64>(&driver, &r, WAIT)
    };
    // With a resend allowed: the call ran, its answer was lost with the connection, and it
    // runs again on the new one (at least once, as in Ray).
    let resent = create(1);
    assert_eq!(call(&resent, 0).unwrap(), 10);
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::DropResponse).times(1));
    assert_eq!(call(&resent, 1).unwrap(), 12);
    assert_eq!(
        call(&resent, 1).unwrap(),
        13,
        "the new connection serves later calls"
    );

    // Without: the call fails as unavailable (it may have run), and the actor serves on.
    let strict = create(0);
    assert_eq!(call(&strict, 0).unwrap(), 10);
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::DropResponse).times(1));
    match call(&strict, 1) {
        Err(crate::Error::ActorUnavailable { .. }) => {}
        other => panic!("expected ActorUnavailable, got {other:?}"),
    }
    assert_eq!(call(&strict, 1).unwrap(), 12);
}

/// A filter failing every call of `method` from `from` as unreachable, counting them.
fn unreachable_for(
    from: &'static str,
    method: &'static str,
) -> (impl ray_common::rpc::Filter, std::sync::Arc<AtomicUsize>) {
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let filter = move |call: &ray_common::rpc::Call<'_>| {
        if call.from == from && call.method == method {
            count.fetch_add(1, Ordering::SeqCst);
            Verdict::Fail(RpcErrorKind::Unreachable, "cut off by the test".into())
        } else {
            Verdict::Pass
        }
    };
    (filter, seen)
}

/// Shorter than the deadlines the manual-clock tests move past (10 s, 30 s, an hour): an
/// outcome seen within it came from the test's clock, not from real time passing.
const SOONER_THAN_REAL: Duration = Duration::from_secs(8);

/// A cluster of one node whose deadlines run on a clock the test moves.
fn on_manual_clock(cpus: f64) -> (TestCluster, std::sync::Arc<ManualClock>) {
    let clock = ManualClock::new();
    let cluster = TestCluster::start_on(
        vec![ray_scheduler::ResourceSet::cpus(cpus).unwrap()],
        Clock::Manual(clock.clone()),
    );
    (cluster, clock)
}

#[test]
fn a_borrower_gives_up_an_unreachable_owner_when_the_test_moves_time_past_the_deadline() {
    let (cluster, clock) = on_manual_clock(1.0);
    let owner = cluster.driver(0, "owner");
    let borrower = cluster.driver(0, "borrower");
    let r = owner.put(&7u64).unwrap();
    let at = crate::ownership::ref_to_wire(&r).unwrap();
    let lent = borrower.own.decoded_ref(r.id, &at);
    let (cut, tries) = unreachable_for("borrower", "GetObjects");
    cluster.filters.install(cut);
    std::thread::scope(|s| {
        let get = s.spawn(|| TestCluster::get::<u64>(&borrower, &lent, SOONER_THAN_REAL));
        // The fetcher keeps asking at its own pace; the clock stands still, so it never
        // gives up by itself.
        eventually(WAIT, "the borrower asked the owner three times", || {
            tries.load(Ordering::SeqCst) >= 3
        });
        assert!(!get.is_finished(), "gave up before the clock moved");
        clock.advance(Duration::from_secs(11));
        match get.join().unwrap() {
            Err(crate::Error::OwnerDied(id)) => assert_eq!(id, r.id.to_hex()),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
    });
    assert_eq!(TestCluster::get::<u64>(&owner, &r, WAIT).unwrap(), 7);
}

#[test]
fn tasks_fail_as_their_node_died_when_the_node_manager_stays_unreachable_past_the_deadline() {
    let (cluster, clock) = on_manual_clock(1.0);
    let driver = cluster.driver(0, "driver");
    let (cut, tries) = unreachable_for("driver", "RequestWorkerLease");
    let cut = cluster.filters.install(cut);
    let r = driver.submit(
        name("add"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&1i64), ArgSpec::value(&2i64)],
    );
    eventually(WAIT, "the lease was asked for three times", || {
        tries.load(Ordering::SeqCst) >= 3
    });
    assert!(
        TestCluster::get::<i64>(&driver, &r, Duration::from_millis(1))
            .is_err_and(|e| matches!(e, crate::Error::GetTimeout(_))),
        "the task failed before the clock moved"
    );
    clock.advance(Duration::from_secs(31));
    match TestCluster::get::<i64>(&driver, &r, SOONER_THAN_REAL) {
        Err(crate::Error::NodeDied { node, cause }) => {
            assert_eq!(node, cluster.nodes[0].manager.node_id().to_string());
            assert!(cause.contains("lease"), "{cause}");
        }
        other => panic!("expected NodeDied, got {other:?}"),
    }
    // The node manager answers again: new work runs.
    cluster.filters.remove(cut);
    let r = driver.submit(
        name("add"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&1i64), ArgSpec::value(&2i64)],
    );
    assert_eq!(TestCluster::get::<i64>(&driver, &r, WAIT).unwrap(), 3);
}

#[test]
fn a_task_frame_delayed_by_a_filter_arrives_when_the_test_moves_time() {
    let (cluster, clock) = on_manual_clock(1.0);
    let driver = cluster.driver(0, "driver");
    let hour = Duration::from_secs(3600);
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::Delay(hour)).times(1));
    let r = driver.submit(
        name("square"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&4u64)],
    );
    // The frame's hour is the one sleep that long (RPC deadlines in flight are 30 s).
    eventually(WAIT, "the frame waits on the clock", || {
        clock.sleepers_beyond(Duration::from_secs(3000)) == 1
    });
    assert!(TestCluster::get::<u64>(&driver, &r, Duration::from_millis(50)).is_err());
    clock.advance(hour);
    assert_eq!(
        TestCluster::get::<u64>(&driver, &r, SOONER_THAN_REAL).unwrap(),
        16
    );
}

#[test]
fn a_worker_runs_only_the_functions_it_was_built_with_and_names_the_missing_one() {
    let cluster = TestCluster::start_full(
        vec![ray_scheduler::ResourceSet::cpus(1.0).unwrap()],
        Clock::Real,
        crate::registry::Functions::only(&[name("add")]),
    );
    let driver = cluster.driver(0, "driver");
    let opts = TaskOptions::default();
    let sum = driver.submit(
        name("add"),
        &opts,
        vec![ArgSpec::value(&1i64), ArgSpec::value(&2i64)],
    );
    assert_eq!(TestCluster::get::<i64>(&driver, &sum, WAIT).unwrap(), 3);
    let missing = driver.submit(name("square"), &opts, vec![ArgSpec::value(&3u64)]);
    match TestCluster::get::<u64>(&driver, &missing, WAIT) {
        Err(crate::Error::Task {
            function, message, ..
        }) => {
            assert_eq!(function, name("square"));
            assert!(message.contains("no remote function"), "{message}");
        }
        other => panic!("expected a task error naming the function, got {other:?}"),
    }
}

/// Refs [`stash`] keeps across tasks (only one test uses it).
static STASHED: parking_lot::Mutex<Vec<crate::ObjectRef<u64>>> =
    parking_lot::Mutex::new(Vec::new());

#[crate::remote]
fn stash(refs: Vec<crate::ObjectRef<u64>>) -> usize {
    let mut stashed = STASHED.lock();
    stashed.extend(refs);
    stashed.len()
}

#[crate::remote]
fn give_back() -> Vec<crate::ObjectRef<u64>> {
    std::mem::take(&mut *STASHED.lock())
}

#[test]
fn a_worker_returning_the_callers_own_object_releases_its_borrow_in_the_reply() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    let y = driver.put(&7u64).unwrap();
    let y_id = y.id;
    let held = driver.submit(
        name("stash"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&vec![crate::ObjectRef::<u64>::from_inner(
            y,
        )])],
    );
    assert_eq!(TestCluster::get::<usize>(&driver, &held, WAIT).unwrap(), 1);
    drop(held);
    // Only the worker's borrow keeps the object now.
    assert!(driver.own.store.contains(&y_id), "freed while borrowed");
    let releases = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = releases.clone();
    cluster
        .filters
        .install(move |call: &ray_common::rpc::Call<'_>| {
            if call.method == "RemoveBorrower" && call.from.starts_with("worker-") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Verdict::Pass
        });
    let back = driver.submit(name("give_back"), &TaskOptions::default(), vec![]);
    let list: Vec<crate::ObjectRef<u64>> = TestCluster::get(&driver, &back, WAIT).unwrap();
    assert_eq!(list.len(), 1);
    // The release came with the reply, after the reply's hand-over: no call could overtake it.
    assert_eq!(releases.load(Ordering::SeqCst), 0, "released out of band");
    let inner = list[0].inner.clone();
    assert_eq!(TestCluster::get::<u64>(&driver, &inner, WAIT).unwrap(), 7);
    drop((list, inner, back));
    eventually(WAIT, "the object is freed with the last ref", || {
        !driver.own.store.contains(&y_id)
    });
    // Nothing went out of band meanwhile either.
    assert_eq!(releases.load(Ordering::SeqCst), 0, "released out of band");
}

#[test]
fn a_borrow_whose_registration_was_lost_is_registered_again_before_the_get_returns() {
    // The request lost on its way, then the answer lost after the owner counted it.
    borrow_registered_once_despite(Verdict::Fail(RpcErrorKind::Unreachable, "lost".into()));
    borrow_registered_once_despite(Verdict::DropResponse);
}

/// A borrower's first registration with the owner meets `fault`; the borrow counts once.
fn borrow_registered_once_despite(fault: Verdict) {
    let cluster = TestCluster::start(1, 1.0);
    let owner = cluster.driver(0, "owner");
    let borrower = cluster.driver(0, "borrower");
    let y = owner.put(&7u64).unwrap();
    let y_id = y.id;
    let list = owner
        .put(&vec![crate::ObjectRef::<u64>::from_inner(y.clone())])
        .unwrap();
    // The list as the borrower decodes a ref to it (serializing it here would pin it).
    let lent = borrower.own.decoded_ref(list.id, &owner.own.me.address);
    cluster
        .filters
        .install(OnMethod::new("AddBorrower", fault).times(1));
    let found: Vec<crate::ObjectRef<u64>> = TestCluster::get(&borrower, &lent, WAIT).unwrap();
    // The owner lets go of everything it held: only the borrow keeps the object.
    drop((y, list));
    assert!(
        owner.own.store.contains(&y_id),
        "freed although a borrower holds it"
    );
    let inner = found[0].inner.clone();
    assert_eq!(TestCluster::get::<u64>(&borrower, &inner, WAIT).unwrap(), 7);
    drop((found, inner, lent));
    eventually(
        WAIT,
        "the object is freed after the borrower let go",
        || !owner.own.store.contains(&y_id),
    );
}

/// Refs [`keep_for_later`] keeps (only one test uses it).
static KEPT: parking_lot::Mutex<Vec<crate::ObjectRef<u64>>> = parking_lot::Mutex::new(Vec::new());

#[crate::remote]
fn keep_for_later(refs: Vec<crate::ObjectRef<u64>>) -> usize {
    let mut kept = KEPT.lock();
    kept.extend(refs);
    kept.len()
}

#[test]
fn a_release_that_overtakes_the_registration_of_its_borrow_is_applied_once_it_is_counted() {
    let cluster = TestCluster::start(1, 1.0);
    let owner = cluster.driver(0, "owner");
    let middle = cluster.driver(0, "middle");
    let y = owner.put(&7u64).unwrap();
    let y_id = y.id;
    let lent = middle.own.decoded_ref(y.id, &owner.own.me.address);
    // The middle's registration of the worker's borrow with the owner is held back until
    // the worker's release of that borrow has gone out: the release arrives first.
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let registered = std::sync::Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (released.clone(), registered.clone());
    cluster
        .filters
        .install(move |call: &ray_common::rpc::Call<'_>| {
            if call.method == "RemoveBorrower" && call.from.starts_with("worker-") {
                seen.store(true, Ordering::SeqCst);
            }
            if call.method == "AddBorrower" && call.from == "middle" {
                if !seen.load(Ordering::SeqCst) {
                    return Verdict::Fail(RpcErrorKind::Unreachable, "held back".into());
                }
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Verdict::Pass
        });
    let kept = middle.submit(
        name("keep_for_later"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&vec![crate::ObjectRef::<u64>::from_inner(
            lent.clone(),
        )])],
    );
    assert_eq!(TestCluster::get::<usize>(&middle, &kept, WAIT).unwrap(), 1);
    // The worker lets go at once, while its borrow is not yet registered.
    KEPT.lock().clear();
    eventually(WAIT, "the worker's release went out", || {
        released.load(Ordering::SeqCst)
    });
    eventually(WAIT, "the borrow was registered after its release", || {
        registered.load(Ordering::SeqCst) > 0
    });
    drop((kept, lent, y));
    eventually(
        WAIT,
        "the object is freed: the early release was applied",
        || !owner.own.store.contains(&y_id),
    );
}

#[test]
fn refs_decoded_by_one_of_two_core_workers_on_a_thread_belong_to_that_one() {
    let cluster = TestCluster::start(1, 1.0);
    let a = cluster.driver(0, "a");
    let b = cluster.driver(0, "b");
    let y = a.put(&1u64).unwrap();
    let list_a = a
        .put(&vec![crate::ObjectRef::<u64>::from_inner(y.clone())])
        .unwrap();
    let list_b = b
        .put(&vec![crate::ObjectRef::<u64>::from_inner(
            b.put(&2u64).unwrap(),
        )])
        .unwrap();
    // This thread decodes for b, then for a, then for b again.
    for (cw, list, owner) in [(&b, &list_b, &b), (&a, &list_a, &a), (&b, &list_b, &b)] {
        let found: Vec<crate::ObjectRef<u64>> = TestCluster::get(cw, list, WAIT).unwrap();
        let inner = &found[0].inner;
        assert!(
            std::sync::Weak::ptr_eq(&inner.own, &std::sync::Arc::downgrade(&owner.own)),
            "a ref decoded by {} belongs to another core worker",
            owner.own.me.address
        );
        assert!(inner.owner.is_none(), "its own object seen as borrowed");
    }
}

#[test]
fn an_actor_whose_gcs_answers_fail_for_a_while_is_reached_again_not_buried() {
    let cluster = TestCluster::start(1, 1.0);
    let driver = cluster.driver(0, "driver");
    let actor = tally(&driver, ActorOptions::default().max_task_retries(1), 10);
    let call = |by: u64| add_to(&driver, &actor, by);
    assert_eq!(call(0).unwrap(), 10);
    // The connection breaks, and the GCS's first answers about the actor are lost.
    let gcs_lost = OnMethod::new(
        "GetActorInfo",
        Verdict::Fail(RpcErrorKind::Unreachable, "lost".into()),
    )
    .times(3);
    cluster.filters.install(gcs_lost);
    cluster
        .filters
        .install(OnMethod::new("PushTask", Verdict::DropResponse).times(1));
    assert_eq!(
        call(1).unwrap(),
        12,
        "the lost call is resent once reconnected"
    );
    assert_eq!(call(1).unwrap(), 13);
}

#[test]
fn an_actor_whose_registration_answer_was_lost_is_registered_and_placed_once() {
    let cluster = TestCluster::start(1, 2.0);
    let driver = cluster.driver(0, "driver");
    let placements = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = placements.clone();
    cluster
        .filters
        .install(move |call: &ray_common::rpc::Call<'_>| {
            if call.method == "CreateActor" {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Verdict::Pass
        });
    cluster
        .filters
        .install(OnMethod::new("RegisterActor", Verdict::DropResponse).times(1));
    let actor = driver
        .create_actor(
            <Tally as crate::ActorClass>::CLASS,
            ActorOptions::default(),
            vec![ArgSpec::value(&10u64)],
        )
        .expect("registered on the second try");
    let r = driver.call_actor(&actor, "add", vec![ArgSpec::value(&1u64)]);
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 11);
    assert_eq!(placements.load(Ordering::SeqCst), 1, "placed twice");
    assert_eq!(
        cluster.nodes[0].manager.worker_ids().len(),
        1,
        "a second worker for a second copy of the actor"
    );
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Reads the whole process's threads: meant for nextest's process per test (CI's runner).
#[test]
fn a_stopped_cluster_leaves_no_worker_thread_behind() {
    let cluster = TestCluster::start(1, 2.0);
    let driver = cluster.driver(0, "driver");
    let actor = tally(&driver, ActorOptions::default().max_concurrency(2), 1);
    let r = driver.call_actor(&actor, "add", vec![ArgSpec::value(&1u64)]);
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 2);
    let r = driver.submit(
        name("square"),
        &TaskOptions::default(),
        vec![ArgSpec::value(&3u64)],
    );
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 9);
    let ours = |n: &String| n.starts_with("ray-actor") || n.starts_with("in-process");
    assert!(thread_names().iter().any(ours), "no worker thread seen");
    drop((r, actor, driver));
    drop(cluster);
    eventually(WAIT, "every worker thread ended", || {
        !thread_names().iter().any(ours)
    });
}

#[test]
fn gcs_places_an_actor_on_the_node_whose_resources_are_free_as_nodes_report_them() {
    let cluster = TestCluster::start(2, 2.0);
    let driver = cluster.driver(0, "driver");
    let nm = cluster.node_manager_client(0, "test");
    let gcs = cluster.gcs_client("test");
    // Node 0's CPUs are all leased: only its reports can tell the GCS.
    let leases: Vec<_> = (0..2)
        .map(|_| {
            granted(
                cluster
                    .block_on(nm.request_worker_lease(lease_request(1.0, JOB)))
                    .unwrap(),
            )
        })
        .collect();
    eventually(WAIT, "the GCS sees node 0 full", || {
        let nodes = cluster
            .block_on(gcs.get_all_nodes(ray_proto::Empty {}))
            .unwrap()
            .nodes;
        let free = ray_common::resources::to_resource_set(nodes[0].available.clone()).unwrap();
        free.get(ray_scheduler::CPU) == 0.0
    });
    let actor = tally(&driver, ActorOptions::default().num_cpus(1.0), 1);
    let r = driver.call_actor(&actor, "add", vec![ArgSpec::value(&1u64)]);
    assert_eq!(TestCluster::get::<u64>(&driver, &r, WAIT).unwrap(), 2);
    assert_eq!(
        cluster.nodes[1].manager.num_workers(),
        1,
        "placed on the full node (by totals)"
    );
    for lease in leases {
        cluster.block_on(return_lease(&*nm, lease.lease_id, false));
    }
}

#[test]
fn gcs_ignores_a_resource_report_older_than_one_it_applied() {
    let cluster = TestCluster::start(1, 2.0);
    let gcs = cluster.gcs_client("test");
    let node_id = cluster.nodes[0].manager.node_id().to_vec();
    let report = |version: u64, cpus: f64| ray_proto::ReportResourcesRequest {
        node_id: node_id.clone().into(),
        available: Some(ray_common::resources::to_resources(
            &ray_scheduler::ResourceSet::cpus(cpus).unwrap(),
        )),
        version,
        demands: Vec::new(),
    };
    let free_cpus = || {
        let nodes = cluster
            .block_on(gcs.get_all_nodes(ray_proto::Empty {}))
            .unwrap()
            .nodes;
        ray_common::resources::to_resource_set(nodes[0].available.clone())
            .unwrap()
            .get(ray_scheduler::CPU)
    };
    // Far above the node's own reports, which are ignored from now on.
    cluster
        .block_on(gcs.report_resources(report(1_000_000, 0.5)))
        .unwrap();
    assert_eq!(free_cpus(), 0.5);
    cluster
        .block_on(gcs.report_resources(report(999_999, 2.0)))
        .unwrap();
    assert_eq!(free_cpus(), 0.5, "a late, older report was applied");
    cluster
        .block_on(gcs.report_resources(report(1_000_001, 1.0)))
        .unwrap();
    assert_eq!(free_cpus(), 1.0);
}
