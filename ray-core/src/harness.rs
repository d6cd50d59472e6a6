//! An in-process cluster for tests: a GCS, node managers and core workers in one process,
//! over an in-memory network ([`MemNetwork`]: gRPC and task connections), every call and
//! task connection passing one set of fault [`Filters`], workers launched in-process by
//! [`InProcessLauncher`]. The services, node managers, submitters and executors are the real
//! ones, each built as a value; only the processes are shared.
//!
//! The seed (`RAY_TEST_SEED`, printed at start) drives the harness's random choices
//! ([`RandomDrops`]); thread timing is not under its control, so a replay repeats the same
//! faults, not necessarily the same interleaving. Deadlines are: a cluster started
//! [`on`](TestCluster::start_on) a [`ray_common::ManualClock`] gives up on an owner, a node
//! manager or a delayed message only when the test moves time. Workers launched here have no
//! current core worker: tasks that call `ray::get` themselves need a real worker process.

use crate::boot::{boot_worker, WorkerBoot};
use crate::core_worker::CoreWorker;
use crate::link::{Clients, Link};
use crate::ownership::{Identity, RefInner};
use crate::registry::Functions;
use crate::service::{Served, Slot};
use parking_lot::Mutex;
use ray_common::rpc::{
    Call, Connect, Filter, Filters, GcsApi, MemNetwork, MemServer, NodeManagerApi, Service,
    TonicConnect, Verdict,
};
use ray_common::Clock;
use ray_gcs::{GcsServer, GcsService};
use ray_object_store::{ArenaMapping, ObjectStore, StoreConfig};
use ray_proto::auth::CheckToken;
use ray_raylet::{
    Killer, LaunchRequest, LaunchedWorker, NodeManager, NodeManagerConfig, NodeManagerServer,
    WorkerLauncher,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;

/// The job the harness's drivers belong to.
pub(crate) const JOB: u32 = 1;
/// The GCS's address on the in-memory network.
const GCS: &str = "gcs";

/// A GCS and node managers in this process, and the drivers a test made.
pub(crate) struct TestCluster {
    pub network: MemNetwork,
    /// Every call and task connection of the cluster passes these.
    pub filters: Arc<Filters>,
    /// Every component's deadlines run on it: [`Clock::Real`] unless the test chose
    /// [`TestCluster::start_on`] with a [`ray_common::ManualClock`].
    pub clock: Clock,
    pub seed: u64,
    /// The session's name: it starts every store's and task socket's name.
    pub session: String,
    token: Arc<str>,
    runtime: Option<tokio::runtime::Runtime>,
    servers: Mutex<Vec<MemServer>>,
    pub nodes: Vec<TestNode>,
    drivers: Mutex<Vec<Arc<CoreWorker>>>,
}

/// One node manager of a [`TestCluster`].
pub(crate) struct TestNode {
    pub manager: NodeManager,
    pub address: String,
    store_path: String,
}

/// The run's seed: `RAY_TEST_SEED` if set, else drawn (and printed, to replay the run).
fn seed() -> u64 {
    let seed = std::env::var("RAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from_le_bytes(ray_common::ids::random_bytes()[..8].try_into().unwrap())
        });
    eprintln!("harness seed: RAY_TEST_SEED={seed}");
    seed
}

impl TestCluster {
    /// A GCS and `nodes` node managers of `cpus` CPUs each, on a runtime of their own.
    pub fn start(nodes: usize, cpus: f64) -> TestCluster {
        let each = ray_scheduler::ResourceSet::cpus(cpus).expect("cpus");
        TestCluster::start_with(vec![each; nodes])
    }

    /// A GCS and one node manager per entry of `nodes`, with those resources.
    pub fn start_with(nodes: Vec<ray_scheduler::ResourceSet>) -> TestCluster {
        TestCluster::start_on(nodes, Clock::Real)
    }

    /// As [`TestCluster::start_with`], every deadline and filter delay on `clock`.
    pub fn start_on(nodes: Vec<ray_scheduler::ResourceSet>, clock: Clock) -> TestCluster {
        TestCluster::start_full(nodes, clock, Functions::linked())
    }

    /// As [`TestCluster::start_on`], its workers running only `worker_functions`.
    pub fn start_full(
        nodes: Vec<ray_scheduler::ResourceSet>,
        clock: Clock,
        worker_functions: Functions,
    ) -> TestCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-cluster")
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let network = MemNetwork::default();
        let filters = Arc::new(Filters::default());
        let token: Arc<str> = ray_common::ids::hex(&ray_common::ids::random_bytes()).into();
        let session = format!(
            "rayrs-test-{}-{}",
            std::process::id(),
            &ray_common::ids::hex(&ray_common::ids::random_bytes())[..8]
        );
        let wires = Wires {
            network: network.clone(),
            filters: filters.clone(),
            clock: clock.clone(),
            functions: worker_functions,
        };
        let connect = |label: &str| wires.connect(&token, label);
        let mut servers = Vec::new();
        let mut test_nodes = Vec::new();
        runtime.block_on(async {
            let gcs = GcsService::new(connect(GCS));
            let routes = Routes::new(InterceptedService::new(
                GcsServer::new(gcs),
                CheckToken::new(&token),
            ));
            servers.push(network.serve(GCS, routes));
            let gcs = connect("harness").gcs(GCS).expect("a GCS client");
            gcs.register_job(ray_proto::JobConfig {
                job_id: JOB,
                program: "in-process".into(),
                env: Vec::new(),
                namespace: String::new(),
                binary_sha256: String::new(),
                driver_node: Default::default(),
                driver_pid: 0,
                log_to_driver: false,
            })
            .await
            .expect("the job registers");
            for (i, resources) in nodes.into_iter().enumerate() {
                let address = format!("node-{i}");
                let store = ObjectStore::create_anonymous(
                    StoreConfig::new(format!("{session}-{i}")).with_capacity(64 << 20),
                )
                .expect("an object store");
                let store_path = store.path().display().to_string();
                let manager = NodeManager::new(
                    NodeManagerConfig {
                        node_id: ray_common::NodeId::random(),
                        resources: resources.clone(),
                        token: token.to_string(),
                        session: session.clone(),
                        gcs_address: GCS.into(),
                        max_workers: 16,
                        limit_wait: Duration::from_secs(10),
                        infeasible_waits: false,
                        binary_cache: None,
                        log_dir: None,
                    },
                    store,
                    connect(&address),
                    Arc::new(InProcessLauncher {
                        wires: wires.clone(),
                    }),
                );
                manager.set_address(address.clone());
                manager.report_resources();
                let routes = Routes::new(InterceptedService::new(
                    NodeManagerServer::new(manager.clone())
                        .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES),
                    CheckToken::new(&token),
                ));
                servers.push(network.serve(&address, routes));
                let total = ray_common::resources::to_resources(&resources);
                gcs.register_node(ray_proto::RegisterNodeRequest {
                    node: Some(ray_proto::NodeInfo {
                        node_id: manager.node_id().to_vec().into(),
                        node_manager_address: address.clone(),
                        total: Some(total.clone()),
                        available: Some(total),
                        alive: true,
                        store_path: store_path.clone(),
                        is_head: test_nodes.is_empty(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("the node registers");
                test_nodes.push(TestNode {
                    manager,
                    address,
                    store_path,
                });
            }
        });
        TestCluster {
            network,
            filters,
            clock,
            seed: seed(),
            session,
            token,
            runtime: Some(runtime),
            servers: Mutex::new(servers),
            nodes: test_nodes,
            drivers: Mutex::new(Vec::new()),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("running until dropped")
    }

    /// Runs `f` on the cluster's runtime, from the test's thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime().block_on(f)
    }

    /// Clients labelled `label` over the cluster's network, passing its filters.
    pub fn connect(&self, label: &str) -> Arc<dyn Connect> {
        Wires {
            network: self.network.clone(),
            filters: self.filters.clone(),
            clock: self.clock.clone(),
            functions: Functions::default(),
        }
        .connect(&self.token, label)
    }

    /// A client of node `node`'s node manager, labelled `label`.
    pub fn node_manager_client(&self, node: usize, label: &str) -> Arc<dyn NodeManagerApi> {
        let _enter = self.runtime().enter();
        self.connect(label)
            .node_manager(&self.nodes[node].address)
            .expect("a client")
    }

    /// A client of the GCS, labelled `label`.
    pub fn gcs_client(&self, label: &str) -> Arc<dyn GcsApi> {
        let _enter = self.runtime().enter();
        self.connect(label).gcs(GCS).expect("a client")
    }

    /// A driver's core worker on node `node`, named `name` (its address on the network).
    pub fn driver(&self, node: usize, name: &str) -> Arc<CoreWorker> {
        let n = &self.nodes[node];
        let handle = self.runtime().handle().clone();
        let _enter = self.runtime().enter();
        let slot = Slot::default();
        let server = self.network.serve(
            name,
            crate::service::core_worker_routes(&self.token, slot.clone()),
        );
        let connect = self.connect(name);
        let clients = Clients {
            raylet: connect.node_manager(&n.address).expect("a client"),
            gcs: connect.gcs(GCS).expect("a client"),
            connect,
        };
        let arena = ArenaMapping::open(std::path::Path::new(&n.store_path)).expect("the arena");
        let link = Link::new(
            handle,
            self.token.clone(),
            clients,
            n.manager.node_id(),
            Some(arena),
            None,
        );
        let worker_id = ray_common::WorkerId::random();
        let cw = CoreWorker::new(
            Identity {
                address: name.into(),
                worker_id,
                node_id: n.manager.node_id(),
                job_id: JOB,
                namespace: String::new(),
                is_worker: false,
                location: format!("driver {name}"),
            },
            Some(link),
            Functions::linked(),
            Default::default(),
        );
        let weak = Arc::downgrade(&cw);
        slot.fill(Served {
            own: Arc::downgrade(&cw.own),
            executor: None,
            cancel_children: None,
            explain: Some(Box::new(move |id| {
                weak.upgrade().map(|cw| cw.explain(id)).unwrap_or_default()
            })),
        });
        self.servers.lock().push(server);
        self.drivers.lock().push(cw.clone());
        cw
    }

    /// `r`'s value, waiting at most `timeout`.
    pub fn get<T: serde::de::DeserializeOwned>(
        cw: &CoreWorker,
        r: &Arc<RefInner>,
        timeout: Duration,
    ) -> crate::Result<T> {
        let stored = cw.get_stored(r, Some(timeout))?;
        cw.decode(r, &stored)
    }
}

pub(crate) use crate::__private::eventually;

impl Drop for TestCluster {
    /// Stops the drivers (their pending work fails), kills every worker and stops the
    /// servers, then the runtime: nothing is left running, even when a test fails.
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let drivers = std::mem::take(&mut *self.drivers.lock());
        runtime.block_on(async {
            for d in &drivers {
                d.stop().await;
            }
            for n in &self.nodes {
                n.manager.shutdown().await;
            }
        });
        for d in &drivers {
            d.fail_pending();
        }
        self.servers.lock().clear();
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// What every component of a test cluster talks over (its network, filters and clock), and
/// what its workers run.
#[derive(Clone)]
struct Wires {
    network: MemNetwork,
    filters: Arc<Filters>,
    clock: Clock,
    /// What workers launched in-process run.
    functions: Functions,
}

impl Wires {
    /// Clients labelled `label`, calling with `token`.
    fn connect(&self, token: &str, label: &str) -> Arc<dyn Connect> {
        Arc::new(
            TonicConnect::new(token)
                .labelled(label)
                .over(self.network.clone())
                .with_filters(self.filters.clone())
                .with_clock(self.clock.clone()),
        )
    }
}

/// Launches each worker inside this process: a thread that boots a core worker on a tokio
/// runtime of its own (serving on the cluster's network, passing its filters) and runs its
/// tasks. Killing it closes its connections and ends its runtime, as a process's death would.
pub(crate) struct InProcessLauncher {
    wires: Wires,
}

struct InProcessWorker {
    start: Option<Box<dyn FnOnce(String) + Send>>,
    kill: Killer,
    exited: tokio::sync::oneshot::Receiver<String>,
}

impl WorkerLauncher for InProcessLauncher {
    fn launch(&self, request: &LaunchRequest<'_>) -> Result<Box<dyn LaunchedWorker>, String> {
        let (kill_tx, kill_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (exited_tx, exited) = tokio::sync::oneshot::channel();
        let wires = self.wires.clone();
        let worker_id = request.worker_id;
        let node_manager = request.node_manager.to_string();
        let session = request.session.to_string();
        let start = move |token: String| {
            let spawned = std::thread::Builder::new()
                .name("in-process-worker".into())
                .spawn(move || {
                    let why = run_in_process(
                        worker_id,
                        &node_manager,
                        &session,
                        token.into(),
                        wires,
                        kill_rx,
                    );
                    let _ = exited_tx.send(why);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start an in-process worker");
            }
        };
        let kill: Killer = Arc::new(move || {
            let _ = kill_tx.try_send(());
        });
        Ok(Box::new(InProcessWorker {
            start: Some(Box::new(start)),
            kill,
            exited,
        }))
    }
}

/// Boots a worker, runs its tasks until it is killed, and says how it ended.
fn run_in_process(
    worker_id: ray_common::WorkerId,
    node_manager: &str,
    session: &str,
    token: Arc<str>,
    wires: Wires,
    killed: std::sync::mpsc::Receiver<()>,
) -> String {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("in-process-worker-io")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return format!("no runtime: {e}"),
    };
    let address = format!("worker-{worker_id}");
    let booted = boot_worker(
        &runtime,
        WorkerBoot {
            worker_id,
            node_manager,
            session,
            token: token.clone(),
            serve: Box::new(|_, routes| {
                let server = wires.network.serve(&address, routes);
                Ok((address.clone(), Box::new(server)))
            }),
            connect: Box::new(|me| wires.connect(&token, me)),
            functions: wires.functions,
            task_ip: None,
        },
    );
    let booted = match booted {
        Ok(b) => b,
        Err(e) => return format!("boot failed: {e}"),
    };
    let executor = booted.executor.clone();
    let tasks = std::thread::Builder::new()
        .name("in-process-task".into())
        .stack_size(64 << 20)
        .spawn(move || executor.run());
    let tasks = match tasks {
        Ok(t) => t,
        Err(e) => return format!("no task thread: {e}"),
    };
    // Until killed (or the node manager, holding the killer, is gone).
    let _ = killed.recv();
    booted.stop();
    runtime.shutdown_background();
    // The task thread ends with its queue (a task it runs fails on the stopped runtime).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tasks.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !tasks.is_finished() {
        return "killed; its task thread still runs a task".to_string();
    }
    let _ = tasks.join();
    "killed".to_string()
}

impl LaunchedWorker for InProcessWorker {
    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn hand_token(&mut self, token: &str) -> std::io::Result<()> {
        if let Some(start) = self.start.take() {
            start(token.to_string());
        }
        Ok(())
    }

    fn killer(&self) -> Killer {
        self.kill.clone()
    }

    fn exited(self: Box<Self>) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async move {
            self.exited
                .await
                .unwrap_or_else(|_| "never started".to_string())
        })
    }
}

/// Drops (the request, or the response) of calls of `service` at random, each with
/// probability `per_mille / 1000`, from a generator seeded with the run's seed: the same
/// seed drops the same calls in order.
pub(crate) struct RandomDrops {
    state: AtomicU64,
    service: Service,
    per_mille: u64,
    dropped: Arc<AtomicUsize>,
}

impl RandomDrops {
    pub fn new(seed: u64, service: Service, per_mille: u64) -> Self {
        RandomDrops {
            state: AtomicU64::new(seed | 1),
            service,
            per_mille,
            dropped: Arc::default(),
        }
    }

    /// Counts the calls dropped so far.
    pub fn dropped(&self) -> Arc<AtomicUsize> {
        self.dropped.clone()
    }
}

impl Filter for RandomDrops {
    fn verdict(&self, call: &Call<'_>) -> Verdict {
        if call.service != self.service {
            return Verdict::Pass;
        }
        // xorshift64*: small, and the same sequence for the same seed.
        let next = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                Some(x)
            })
            .unwrap_or(1);
        let draw = next.wrapping_mul(0x2545_f491_4f6c_dd1d) % 1000;
        if draw < self.per_mille {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        match draw {
            d if d < self.per_mille / 2 => Verdict::DropRequest,
            d if d < self.per_mille => Verdict::DropResponse,
            _ => Verdict::Pass,
        }
    }
}
