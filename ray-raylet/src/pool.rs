//! Worker pool and lease accounting.

use crate::gpus::{Assignment, GpuSlots};
use crate::launcher::{Killer, LaunchRequest, WorkerLauncher};
use parking_lot::Mutex;
use ray_common::limits::{available_memory, fd_limit};
use ray_common::rpc::RpcErrorKind;
use ray_common::rpc::{Connect, GcsApi};
use ray_common::{NodeId, PlacementGroupId, Throttle, WorkerId};
use ray_object_store::ObjectStore;
use ray_proto::JobConfig;
use ray_scheduler::{NodeResources, ResourceSet, CPU};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// How soon a change of what is free on a node reaches the GCS (Ray's
/// `raylet_report_resources_period_milliseconds`).
pub const REPORT_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a node tells the GCS what is free even if nothing changed (Ray's
/// `ray_syncer_message_refresh_interval_ms`).
pub const REPORT_REFRESH: std::time::Duration = std::time::Duration::from_secs(3);

/// What a node manager is started with.
pub struct NodeManagerConfig {
    /// 16 bytes naming this node.
    pub node_id: NodeId,
    /// The node's total resources.
    pub resources: ResourceSet,
    /// The per-session token, handed to workers on their stdin.
    pub token: String,
    /// Unique name of the session.
    pub session: String,
    /// The GCS endpoint, told to workers when they register.
    pub gcs_address: String,
    /// Most worker processes alive at once, whatever their resources (see
    /// [`default_max_workers`]). Actors may hold all but a few: those stay for tasks.
    pub max_workers: usize,
    /// How long a lease request may wait on that limit before it fails (with the limit
    /// named), rather than hang.
    pub limit_wait: std::time::Duration,
    /// A request no node of the cluster can hold waits for one that can join (a cluster's
    /// nodes); otherwise it is refused at once (a local session, which cannot grow).
    pub infeasible_waits: bool,
    /// Where shipped job binaries are cached (`None`: jobs run their driver's path).
    pub binary_cache: Option<std::path::PathBuf>,
    /// Where workers' output files are written (`None`: nowhere; see [`crate::logs`]).
    pub log_dir: Option<std::path::PathBuf>,
}

/// Actors one shared host process takes (see [`LeaseAsk::share_process`]): enough that
/// thousands of small actors need a few dozen processes, few enough that one process's
/// threads (one or more per actor) and connections stay modest.
pub const ACTORS_PER_PROCESS: usize = 256;

/// How long shutdown waits for the killed workers' output to be read to its end.
const LOGS_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Private memory a worker process is budgeted (an idle one uses 6-12 MiB).
const WORKER_MEMORY_BUDGET: u64 = 16 << 20;
/// File descriptors a worker costs the process hosting the node manager (its pipes, its
/// connections to the node manager, the GCS and owners).
const WORKER_FDS_BUDGET: u64 = 10;

/// A node's worker limit from what the machine has: the memory left beside the object
/// store (`store_bytes`) at [`WORKER_MEMORY_BUDGET`] a worker, and the descriptors this
/// process may open; at least 16.
pub fn default_max_workers(store_bytes: u64) -> usize {
    let memory = available_memory().map(|m| m.saturating_sub(store_bytes) / WORKER_MEMORY_BUDGET);
    let fd_limit = fd_limit().map(|fds| fds.saturating_sub(1024) / WORKER_FDS_BUDGET);
    let limit = [memory, fd_limit]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(512);
    limit.clamp(16, 100_000) as usize
}

/// One lease request.
#[derive(Clone, Copy, Debug)]
pub struct LeaseAsk<'a> {
    /// The resources the lease holds.
    pub shape: &'a ResourceSet,
    /// The worker asking (its leases are taken back if its process dies); `None` for a
    /// driver or the GCS.
    pub lessee: Option<WorkerId>,
    /// A worker an actor will hold for its life (actors may not take every worker).
    pub for_actor: bool,
    /// The job whose worker is wanted.
    pub job_id: u32,
    /// The requester's name for the request, the same on each retry (0: none).
    pub request_id: u64,
    /// The worker's environment beyond its job's: only a worker started with exactly this
    /// serves the lease.
    pub env: &'a [ray_proto::EnvVar],
    /// The requester's node when it is another node (`None`: this node, or unknown): if
    /// that node dies, the lease is taken back and its worker killed.
    pub lessee_node: Option<ray_common::NodeId>,
    /// An actor's lease that may share its worker with other such actors of its job and
    /// environment (up to [`ACTORS_PER_PROCESS`]): granted so only if it holds no CPU and no
    /// GPU, else the actor gets a worker of its own.
    pub share_process: bool,
}

/// A granted lease, as the pool sees it.
#[derive(Clone, Debug)]
pub struct Grant {
    /// Lease id, given back on return.
    pub lease_id: u64,
    /// The worker leased.
    pub worker_id: WorkerId,
    /// Its task socket.
    pub task_socket: String,
    /// Its task socket over TCP (empty on a test's in-memory network).
    pub task_address: String,
    /// Its core-worker endpoint.
    pub core_worker_address: String,
    /// Its process id.
    pub pid: u32,
}

/// Why a lease request ended without a lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The shape exceeds the node's totals: it can never run here.
    #[error("infeasible on this node: {0}")]
    Infeasible(String),
    /// The node manager is shutting down.
    #[error("node manager is shutting down")]
    ShuttingDown,
    /// A worker could not be started.
    #[error("cannot start a worker: {0}")]
    Spawn(String),
    /// The worker process that asked is gone.
    #[error("the requesting worker is gone")]
    RequesterGone,
    /// The node's worker-process limit kept the request waiting past its deadline.
    #[error("{0}")]
    WorkerLimit(String),
    /// The lease names a job the GCS does not know.
    #[error("unknown job {0}")]
    UnknownJob(u32),
    /// The job's record could not be read from the GCS (it may be unreachable for now).
    #[error("reading job {0} from the GCS: {1}")]
    JobUnavailable(u32, String),
}

pub(crate) struct WorkerRecord {
    /// The job whose program it runs; it serves no other.
    pub job_id: u32,
    /// Names the environment it was started with beyond its job's (0: none); it serves
    /// only leases that ask for that one.
    pub env_key: u64,
    /// 0 until the process is spawned.
    pub pid: u32,
    /// Kills it; `None` until it is launched.
    pub kill: Option<Killer>,
    pub task_socket: String,
    pub task_address: String,
    pub core_worker_address: String,
    pub registered: bool,
    pub lease: Option<u64>,
    /// The shared actor leases it serves (a shared host: `lease` is `None`). The process
    /// ends when the last is returned.
    pub hosted: Vec<u64>,
    /// Started for actors that share a process (counted in `PoolState::starting_hosts`
    /// until it registers).
    pub for_host: bool,
}

impl WorkerRecord {
    /// A worker decided on, its process not yet started.
    fn starting(job_id: u32, env_key: u64) -> Self {
        WorkerRecord {
            job_id,
            env_key,
            pid: 0,
            kill: None,
            task_socket: String::new(),
            task_address: String::new(),
            core_worker_address: String::new(),
            registered: false,
            lease: None,
            hosted: Vec::new(),
            for_host: false,
        }
    }
}

struct LeaseRecord {
    /// The request that asked for it (0: unnamed).
    request_id: u64,
    worker: WorkerId,
    /// The worker process holding the lease (empty: a driver or the GCS). When it dies, its
    /// leases come back.
    lessee: Option<WorkerId>,
    /// The requester's node, when another node: its death takes the lease back.
    lessee_node: Option<ray_common::NodeId>,
    /// What the lease holds right now (the CPU part goes back while its worker is blocked).
    held: ResourceSet,
    shape: ResourceSet,
    /// A dedicated worker for an actor.
    for_actor: bool,
    /// One of the actors of a shared host (its worker's `hosted`).
    shared: bool,
    /// The GPUs it holds (its worker sees their ids).
    gpus: Assignment,
}

struct PoolState {
    resources: NodeResources,
    /// Which GPUs are free, by device.
    gpus: GpuSlots,
    workers: HashMap<WorkerId, WorkerRecord>,
    idle: Vec<WorkerId>,
    starting: usize,
    waiting: usize,
    /// Of those: workers started to host actors that share a process, and requests for
    /// such actors (one host serves [`ACTORS_PER_PROCESS`] of them, so few are started).
    starting_hosts: usize,
    waiting_shared: usize,
    leases: HashMap<u64, LeaseRecord>,
    /// Granted leases by the request that asked for them: a retried request (its answer was
    /// lost) gets the same lease again rather than a second one that nobody holds.
    granted: HashMap<u64, Grant>,
    next_lease: u64,
    shutting_down: bool,
    /// Workers leased for actors.
    actor_workers: usize,
    /// Workers that exited before registering, in a row: a broken worker binary.
    startup_failures: u32,
    /// Placement groups' bundles reserved here: by group, each bundle's index, its
    /// resources, and what it added under the group's names.
    bundles: HashMap<PlacementGroupId, Vec<ReservedBundle>>,
    last_startup_failure: Option<std::time::Instant>,
}

impl PoolState {
    /// An idle worker of job `job_id`, taken off the idle list.
    fn take_idle(&mut self, job_id: u32, env_key: u64) -> Option<WorkerId> {
        let workers = &self.workers;
        let at = self.idle.iter().rposition(|w| {
            workers
                .get(w)
                .is_some_and(|r| r.job_id == job_id && r.env_key == env_key)
        })?;
        Some(self.idle.remove(at))
    }

    /// A shared host of job `job_id` and environment `env_key` with room for one more actor:
    /// the fullest, so that hosts fill up and few processes serve many actors.
    fn host_with_room(&self, job_id: u32, env_key: u64) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| {
                w.job_id == job_id
                    && w.env_key == env_key
                    && w.registered
                    && !w.hosted.is_empty()
                    && w.hosted.len() < ACTORS_PER_PROCESS
            })
            .max_by_key(|(_, w)| w.hosted.len())
            .map(|(id, _)| *id)
    }

    /// Whether an idle worker of job `job_id` and environment `env_key` waits.
    fn has_idle(&self, job_id: u32, env_key: u64) -> bool {
        self.idle.iter().any(|w| {
            self.workers
                .get(w)
                .is_some_and(|r| r.job_id == job_id && r.env_key == env_key)
        })
    }

    /// Takes an idle worker of another job than `job_id` off the idle list, to be killed
    /// (its exit frees its place); how to kill it.
    fn evict_idle_of_other_job(&mut self, job_id: u32, env_key: u64) -> Option<Killer> {
        let workers = &self.workers;
        let at = self.idle.iter().position(|w| {
            workers
                .get(w)
                .is_some_and(|r| (r.job_id != job_id || r.env_key != env_key) && r.kill.is_some())
        })?;
        let worker = self.idle.remove(at);
        self.workers.get(&worker).and_then(|r| r.kill.clone())
    }

    /// Takes back the leases `which` picks: forgotten, their resources released; returns
    /// their workers (still alive, leased no more).
    fn take_back_leases(&mut self, which: impl Fn(&LeaseRecord) -> bool) -> Vec<WorkerId> {
        let picked: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| which(l))
            .map(|(id, _)| *id)
            .collect();
        let mut workers = Vec::new();
        for lease_id in picked {
            if let Some(lease) = self.remove_lease(lease_id) {
                self.resources.release(&lease.held);
                if lease.shared {
                    // Its host goes on with its other actors, or ends with its last.
                    let last = self
                        .workers
                        .get(&lease.worker)
                        .filter(|w| w.hosted.is_empty());
                    if let Some(kill) = last.and_then(|w| w.kill.clone()) {
                        kill();
                    }
                    continue;
                }
                if let Some(w) = self.workers.get_mut(&lease.worker) {
                    w.lease = None;
                    workers.push(lease.worker);
                }
            }
        }
        workers
    }

    /// Forgets a lease, keeping the count of actor workers true (a shared host counts once,
    /// until its last actor's lease goes).
    fn remove_lease(&mut self, lease_id: u64) -> Option<LeaseRecord> {
        let lease = self.leases.remove(&lease_id)?;
        self.gpus.give_back(&lease.gpus);
        if lease.shared {
            if let Some(w) = self.workers.get_mut(&lease.worker) {
                w.hosted.retain(|l| *l != lease_id);
                self.actor_workers -= usize::from(w.hosted.is_empty());
            }
        } else {
            self.actor_workers -= usize::from(lease.for_actor);
        }
        if lease.request_id != 0 {
            self.granted.remove(&lease.request_id);
        }
        Some(lease)
    }
}

/// A placement group's bundle reserved on this node.
struct ReservedBundle {
    index: u32,
    /// What it took from the node.
    shape: ResourceSet,
    /// What it added to the node under its group's names.
    renamed: ResourceSet,
}

/// Workers that may die before registering, in a row, before lease requests fail.
const MAX_STARTUP_FAILURES: u32 = 5;

/// The node manager: shared by its gRPC service and the process that embeds it.
#[derive(Clone)]
pub struct NodeManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: NodeManagerConfig,
    pub store: ObjectStore,
    pub address: Mutex<String>,
    state: Mutex<PoolState>,
    changed: Notify,
    exited: Notify,
    /// The GCS client for worker-failure reports, made once: a connection per report meant
    /// hundreds of connects at once when many workers died together.
    gcs: std::sync::OnceLock<Option<Arc<dyn GcsApi>>>,
    pub(crate) connect: Arc<dyn Connect>,
    /// Warns that a request waits (on the worker limit, or for a node that fits), at most
    /// every few seconds.
    pub(crate) limit_warning: Throttle,
    launcher: Arc<dyn WorkerLauncher>,
    /// Jobs seen, as the GCS described them.
    jobs: Mutex<HashMap<u32, Arc<JobConfig>>>,
    /// The cluster as this node last heard of it from the GCS.
    pub(crate) cluster: Mutex<crate::cluster_view::ClusterState>,
    /// Woken when a new cluster view arrives (infeasible requests look again).
    pub(crate) view_changed: Notify,
    /// Objects pulled from other nodes.
    pub(crate) pulls: crate::object_manager::Pulls,
    /// Held while a shipped binary is checked or downloaded.
    pub(crate) downloads: tokio::sync::Mutex<()>,
    /// Shipped binaries downloaded so far.
    pub(crate) binaries_fetched: std::sync::atomic::AtomicU64,
    /// Requests waiting here: for a node that can hold them, or for resources in use.
    pub(crate) demands: Mutex<crate::cluster_view::Demands>,
    /// Pins of pulled copies, by the reading process.
    pub(crate) client_pins: crate::client_pins::ClientPins,
    /// Readers of the workers' output.
    logs: crate::logs::WorkerLogs,
    /// The machine's CPU use over the last second, in percent (f64 bits).
    cpu_percent: std::sync::atomic::AtomicU64,
}

impl NodeManager {
    /// A node manager owning `store`, calling the GCS through clients `connect` opens and
    /// starting workers with `launcher`. Call [`NodeManager::set_address`] once its server
    /// listens.
    pub fn new(
        config: NodeManagerConfig,
        store: ObjectStore,
        connect: Arc<dyn Connect>,
        launcher: Arc<dyn WorkerLauncher>,
    ) -> Self {
        let resources = NodeResources::new(config.resources.clone());
        let gpu_count = config.resources.get(ray_scheduler::GPU).ceil() as usize;
        let gpus = GpuSlots::new(crate::gpus::node_ids(gpu_count, &crate::gpus::detect()));
        let logs = crate::logs::WorkerLogs::new(config.log_dir.clone());
        NodeManager {
            inner: Arc::new(Inner {
                logs,
                cpu_percent: Default::default(),
                config,
                store,
                address: Mutex::new(String::new()),
                state: Mutex::new(PoolState {
                    resources,
                    gpus,
                    workers: HashMap::new(),
                    idle: Vec::new(),
                    starting: 0,
                    starting_hosts: 0,
                    waiting_shared: 0,
                    waiting: 0,
                    leases: HashMap::new(),
                    granted: HashMap::new(),
                    // Lease ids differ between nodes (an owner holds leases of several):
                    // a random start, 2^32 leases apart.
                    next_lease: (u64::from(rand::random::<u32>()) << 32) | 1,
                    actor_workers: 0,
                    shutting_down: false,
                    startup_failures: 0,
                    bundles: HashMap::new(),
                    last_startup_failure: None,
                }),
                changed: Notify::new(),
                exited: Notify::new(),
                gcs: std::sync::OnceLock::new(),
                connect,
                limit_warning: Throttle::default(),
                launcher,
                jobs: Mutex::new(HashMap::new()),
                cluster: Mutex::new(Default::default()),
                view_changed: Notify::new(),
                pulls: Default::default(),
                downloads: tokio::sync::Mutex::new(()),
                binaries_fetched: Default::default(),
                demands: Default::default(),
                client_pins: Default::default(),
            }),
        }
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.state.lock().shutting_down
    }

    /// Records the gRPC endpoint workers are told to register with.
    pub fn set_address(&self, address: String) {
        *self.inner.address.lock() = address;
    }

    /// The machine's CPU use over the last second, in percent (0 until measured).
    pub fn cpu_percent(&self) -> f64 {
        f64::from_bits(
            self.inner
                .cpu_percent
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Measures the machine's CPU use every second (off the runtime's threads: a file
    /// read), until the runtime ends.
    pub fn follow_cpu(&self) {
        // Weak: the sampler does not keep a node manager that was shut down alive.
        let me = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut before = None;
            loop {
                tick.tick().await;
                let Ok(now) = tokio::task::spawn_blocking(crate::cpu::read).await else {
                    return; // The runtime is shutting down.
                };
                let Some(inner) = me.upgrade() else { return };
                if inner.state.lock().shutting_down {
                    return;
                }
                if let (Some(b), Some(n)) = (before, now) {
                    let percent = crate::cpu::utilization(b, n);
                    inner
                        .cpu_percent
                        .store(percent.to_bits(), std::sync::atomic::Ordering::Relaxed);
                }
                before = now;
            }
        });
    }

    /// Its workers' output: their files, and their lines as they come.
    pub fn worker_logs(&self) -> &crate::logs::WorkerLogs {
        &self.inner.logs
    }

    /// The node's object store.
    pub fn store(&self) -> &ObjectStore {
        &self.inner.store
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// Totals and what is free now.
    pub fn resources(&self) -> (ResourceSet, ResourceSet) {
        let state = self.inner.state.lock();
        (
            state.resources.total.clone(),
            state.resources.available.clone(),
        )
    }

    /// Tells the GCS what is free on this node: within [`REPORT_PERIOD`] of a change, and
    /// every [`REPORT_REFRESH`] regardless (Ray's syncer does the same), so that the GCS
    /// places actors by what is free, not by totals. Runs until the node manager shuts down
    /// or is dropped; call it once, on the runtime that serves the node manager.
    pub fn report_resources(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut sent: Option<(ResourceSet, Vec<ray_proto::Demand>, std::time::Instant)> = None;
            let mut version = 0u64;
            let mut tick = tokio::time::interval(REPORT_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let me = NodeManager { inner };
                let available = {
                    let state = me.inner.state.lock();
                    if state.shutting_down {
                        return;
                    }
                    state.resources.available.clone()
                };
                let demands = me.inner.demands.lock().to_proto();
                let due = match &sent {
                    None => true,
                    Some((last, last_demands, at)) => {
                        *last != available
                            || *last_demands != demands
                            || at.elapsed() >= REPORT_REFRESH
                    }
                };
                let Some(gcs) = me.gcs().filter(|_| due) else {
                    continue;
                };
                version += 1;
                let req = ray_proto::ReportResourcesRequest {
                    node_id: me.node_id().to_vec().into(),
                    available: Some(ray_common::resources::to_resources(&available)),
                    version,
                    demands: demands.clone(),
                };
                drop(me);
                match gcs.report_resources(req).await {
                    Ok(_) => sent = Some((available, demands, std::time::Instant::now())),
                    Err(e) => tracing::debug!(error = %e, "reporting resources failed; again soon"),
                }
            }
        });
    }

    /// The workers alive or starting.
    pub fn worker_ids(&self) -> Vec<WorkerId> {
        self.inner.state.lock().workers.keys().copied().collect()
    }

    /// Kills worker `worker_id`, as the kernel's out-of-memory killer or an operator might:
    /// its leases come back and the GCS hears of its death once it is reaped. False if
    /// there is no such worker (or it is not started yet).
    pub fn kill_worker(&self, worker_id: WorkerId) -> bool {
        let kill = self
            .inner
            .state
            .lock()
            .workers
            .get(&worker_id)
            .and_then(|w| w.kill.clone());
        kill.map(|k| k()).is_some()
    }

    /// The job's driver left: kills the job's workers but those in `keep` (hosts of its
    /// detached actors) and forgets the job. The number of workers killed.
    pub fn finish_job(&self, job_id: u32, keep: &[WorkerId]) -> usize {
        self.inner.jobs.lock().remove(&job_id);
        let kills: Vec<Killer> = self
            .inner
            .state
            .lock()
            .workers
            .iter()
            .filter(|(id, w)| w.job_id == job_id && !keep.contains(id))
            .filter_map(|(_, w)| w.kill.clone())
            .collect();
        for kill in &kills {
            kill();
        }
        kills.len()
    }

    /// Whether `worker` is a worker process of this node (alive or starting).
    pub fn has_worker(&self, worker: WorkerId) -> bool {
        self.inner.state.lock().workers.contains_key(&worker)
    }

    /// Number of worker processes alive or starting.
    pub fn num_workers(&self) -> usize {
        self.inner.state.lock().workers.len()
    }

    /// The worker processes as the state API lists them (copied under the lock).
    pub fn worker_rows(&self) -> Vec<ray_proto::WorkerRow> {
        let state = self.inner.state.lock();
        state
            .workers
            .iter()
            .map(|(id, w)| ray_proto::WorkerRow {
                worker_id: id.to_vec().into(),
                pid: w.pid,
                job_id: w.job_id,
                state: if !w.registered {
                    "STARTING"
                } else if w.lease.is_some() {
                    "LEASED"
                } else if !w.hosted.is_empty() {
                    "HOSTING_ACTORS"
                } else {
                    "IDLE"
                }
                .into(),
                core_worker_address: w.core_worker_address.clone(),
                hosted_actors: w.hosted.len() as u32,
            })
            .collect()
    }

    /// The client of the GCS, opened once: a connection per report meant hundreds of
    /// connects at once when many workers died together.
    pub(crate) fn gcs(&self) -> Option<Arc<dyn GcsApi>> {
        self.inner
            .gcs
            .get_or_init(|| {
                let opened = self.inner.connect.gcs(&self.inner.config.gcs_address);
                opened
                    .inspect_err(|e| tracing::warn!(error = %e, "cannot open a GCS client"))
                    .ok()
            })
            .clone()
    }

    /// Records `job` (what its workers run), as if the GCS had described it.
    pub fn register_job(&self, job: JobConfig) {
        self.inner.jobs.lock().insert(job.job_id, Arc::new(job));
    }

    /// The job `job_id`: known here, or asked of the GCS.
    pub async fn job(&self, job_id: u32) -> Result<Arc<JobConfig>, LeaseError> {
        if let Some(job) = self.inner.jobs.lock().get(&job_id) {
            return Ok(job.clone());
        }
        let gcs = self.gcs().ok_or_else(|| {
            LeaseError::JobUnavailable(job_id, "no client of the GCS".to_string())
        })?;
        match gcs.get_job(ray_proto::GetJobRequest { job_id }).await {
            Ok(job) => {
                // A shipped binary is fetched (or checked) once per job, before its first
                // worker starts.
                let job = self.with_local_program(Arc::new(job)).await?;
                self.inner.jobs.lock().insert(job_id, job.clone());
                Ok(job)
            }
            Err(e) if e.kind == RpcErrorKind::NotFound => Err(LeaseError::UnknownJob(job_id)),
            Err(e) => Err(LeaseError::JobUnavailable(job_id, e.to_string())),
        }
    }

    /// Waits until the shape fits and a worker of the job is idle, then leases that worker
    /// (see [`LeaseAsk`]). Starts workers on demand. A request already granted (its answer
    /// was lost, and it is asked again) gets the same lease.
    pub async fn lease_for(&self, ask: &LeaseAsk<'_>) -> Result<Grant, LeaseError> {
        let shape = ask.shape;
        let job = self.job(ask.job_id).await?;
        {
            let state = self.inner.state.lock();
            let gpus = ray_scheduler::bundles::fixed_with_bundles(shape, ray_scheduler::GPU);
            let precision = ray_scheduler::resources::PRECISION;
            if gpus > precision && gpus % precision != 0 {
                return Err(LeaseError::Infeasible(format!(
                    "requested {shape}: more than one GPU must be a whole number"
                )));
            }
            if !state.resources.is_feasible(shape) {
                let why = ray_scheduler::resources::never_fits(shape, &state.resources.total)
                    .unwrap_or_else(|| format!("requested {shape}"));
                return Err(LeaseError::Infeasible(why));
            }
        }
        // Counted while waiting, and uncounted even if the caller gives up (drops us).
        struct Waiting<'a>(&'a NodeManager, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let mut state = self.0.inner.state.lock();
                state.waiting -= 1;
                state.waiting_shared -= usize::from(self.1);
            }
        }
        let shares = ask.for_actor
            && ask.share_process
            && ray_scheduler::bundles::fixed_with_bundles(shape, ray_scheduler::GPU) == 0
            && cpu_part(shape).is_empty()
            && ray_scheduler::bundles::group_of(shape).is_none();
        {
            let mut state = self.inner.state.lock();
            state.waiting += 1;
            state.waiting_shared += usize::from(shares);
        }
        let _waiting = Waiting(self, shares);
        tracing::debug!(shape = ?shape.to_map(), "lease requested");
        let r = self.lease_loop(ask, &job, shares).await;
        tracing::debug!(shape = ?shape.to_map(), granted = r.is_ok(), "lease answered");
        r
    }

    /// Workers kept from actors, for tasks: with every other worker hosting an actor, tasks
    /// still run.
    fn task_reserve(&self) -> usize {
        let cpus = self.inner.config.resources.get(CPU).ceil() as usize;
        cpus.max(2).min(self.inner.config.max_workers / 2)
    }

    async fn lease_loop(
        &self,
        ask: &LeaseAsk<'_>,
        job: &Arc<JobConfig>,
        shares: bool,
    ) -> Result<Grant, LeaseError> {
        let LeaseAsk {
            shape,
            lessee,
            for_actor,
            ..
        } = *ask;
        let max_workers = self.inner.config.max_workers;
        let max_actors = max_workers - self.task_reserve();
        // Since when this request waits on the worker limit (not on resources).
        let mut limited_since: Option<std::time::Instant> = None;
        // Counted as a demand (`rayrs status`) while it waits for resources in use.
        let mut busy = None;
        let clock = self.inner.connect.clock();
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // (Whether to start a worker; whether the shape waits for resources in use.)
            let (spawn, short) = {
                let mut state = self.inner.state.lock();
                if state.shutting_down {
                    return Err(LeaseError::ShuttingDown);
                }
                // Checked on every pass, under the lock that grants: a copy of this request
                // granted meanwhile (its first answer was lost) is the lease, not a second.
                if let Some(g) = state
                    .granted
                    .get(&ask.request_id)
                    .filter(|_| ask.request_id != 0)
                {
                    return Ok(g.clone());
                }
                let recent = state
                    .last_startup_failure
                    .is_some_and(|t| clock.now() - t < std::time::Duration::from_secs(10));
                if state.startup_failures >= MAX_STARTUP_FAILURES && !recent {
                    // A quiet spell since: give starting workers another chance.
                    state.startup_failures = 0;
                }
                if state.startup_failures >= MAX_STARTUP_FAILURES {
                    return Err(LeaseError::Spawn(format!(
                        "{} worker processes in a row exited before registering (see their stderr)",
                        state.startup_failures
                    )));
                }
                if let Some(requester) = lessee {
                    // A request from a worker that died while it waited: granting it would
                    // hold resources for nobody, forever.
                    if !state.workers.contains_key(&requester) {
                        return Err(LeaseError::RequesterGone);
                    }
                }
                // Likewise from a node declared dead (its leases here were taken back once,
                // when this node saw it die; one granted after would never be). Checked under
                // the pool's lock, which the taking back also holds: a request is either
                // refused here or recorded before it looks.
                if let Some(node) = ask.lessee_node {
                    if self.inner.cluster.lock().is_dead(node) {
                        return Err(LeaseError::RequesterGone);
                    }
                }
                // A placement group's bundle removed while its request waited: it never fits.
                if !state.resources.is_feasible(shape) {
                    let why = ray_scheduler::resources::never_fits(shape, &state.resources.total)
                        .unwrap_or_else(|| format!("requested {shape}"));
                    return Err(LeaseError::Infeasible(why));
                }
                let mut fits = state.resources.is_available(shape);
                // The GPUs it would hold, and so its worker's environment: among the ways to
                // hold them that pack as well as the best, one an idle worker already has.
                // (A lease in a placement group's bundle asks for GPUs under the group's
                // names: it holds devices all the same.)
                let gpu_ask = ray_scheduler::bundles::fixed_with_bundles(shape, ray_scheduler::GPU);
                let (gpus, env) = if fits && gpu_ask > 0 {
                    let choices = state.gpus.choices(gpu_ask);
                    let envs: Vec<_> = choices.iter().map(|a| state.gpus.env(a, ask.env)).collect();
                    let best = choices.first().map(|a| state.gpus.free_on(a));
                    let pick = (0..choices.len())
                        .find(|&i| {
                            Some(state.gpus.free_on(&choices[i])) == best
                                && state.has_idle(job.job_id, env_key(&envs[i]))
                        })
                        .unwrap_or(0);
                    fits = !choices.is_empty();
                    match choices.into_iter().zip(envs).nth(pick) {
                        Some(chosen) => chosen,
                        None => (Assignment::default(), ask.env.to_vec()),
                    }
                } else {
                    (Assignment::default(), ask.env.to_vec())
                };
                let env_key = env_key(&env);
                if fits && shares {
                    if let Some(host) = state.host_with_room(job.job_id, env_key) {
                        let granted = grant(&mut state, host, ask, gpus, true);
                        if ask.request_id != 0 {
                            self.inner.changed.notify_waiters();
                        }
                        return Ok(granted);
                    }
                }
                let actors_full = for_actor && state.actor_workers >= max_actors;
                if fits && !actors_full {
                    if let Some(worker) = state.take_idle(job.job_id, env_key) {
                        let granted = grant(&mut state, worker, ask, gpus, shares);
                        // A copy of this request waiting meanwhile gets the same lease now.
                        if ask.request_id != 0 {
                            self.inner.changed.notify_waiters();
                        }
                        return Ok(granted);
                    }
                }
                // Starting workers are in the table from the moment they are decided on.
                let mut alive = state.workers.len();
                if fits && !actors_full && alive >= max_workers {
                    // An idle worker of another job makes room (as Ray's pool does).
                    if let Some(kill) = state.evict_idle_of_other_job(job.job_id, env_key) {
                        kill();
                        alive -= 1;
                    }
                }
                let at_limit = actors_full || alive >= max_workers;
                if fits && at_limit {
                    let since = *limited_since.get_or_insert_with(|| clock.now());
                    let waited = clock.now() - since;
                    let why = if actors_full {
                        format!(
                            "{} of the node's {max_workers} worker processes host actors, \
                             the most actors may hold ({} are kept for tasks)",
                            state.actor_workers,
                            max_workers - max_actors
                        )
                    } else {
                        format!(
                            "the node's limit of {max_workers} worker processes is reached \
                             ({} host actors, the others run or wait on tasks)",
                            state.actor_workers
                        )
                    };
                    if waited >= self.inner.config.limit_wait {
                        return Err(LeaseError::WorkerLimit(format!(
                            "no worker process for {:.0?}: {why}",
                            waited
                        )));
                    }
                    self.inner.limit_warning.warn(&format!(
                        "{} waits for a worker process ({} waiting): {why}; it fails after {:.0?}",
                        if for_actor { "an actor" } else { "a task" },
                        state.waiting,
                        self.inner.config.limit_wait
                    ));
                } else {
                    limited_since = None;
                }
                let more_needed = if shares {
                    state.starting_hosts * ACTORS_PER_PROCESS < state.waiting_shared
                } else {
                    state.starting - state.starting_hosts < state.waiting - state.waiting_shared
                };
                if fits && more_needed && !at_limit {
                    state.starting += 1;
                    state.starting_hosts += usize::from(shares);
                    let worker_id = WorkerId::random();
                    let mut record = WorkerRecord::starting(job.job_id, env_key);
                    record.for_host = shares;
                    state.workers.insert(worker_id, record);
                    (Some((worker_id, env)), !fits)
                } else {
                    tracing::debug!(
                        fits,
                        available = ?state.resources.available.to_map(),
                        idle = state.idle.len(),
                        starting = state.starting,
                        waiting = state.waiting,
                        alive,
                        leases = state.leases.len(),
                        "lease waits"
                    );
                    (None, !fits)
                }
            };
            if !short {
                busy = None;
            } else if busy.is_none() {
                busy = Some(crate::cluster_view::Waiting::busy(self, shape));
            }
            if let Some((worker_id, env)) = spawn {
                if let Err(e) = self.spawn_worker(worker_id, &with_env(job.clone(), &env)) {
                    let mut state = self.inner.state.lock();
                    state.starting -= 1;
                    state.starting_hosts -= usize::from(shares);
                    state.workers.remove(&worker_id);
                    return Err(e);
                }
            }
            match limited_since {
                // Wake for the deadline even if nothing changes.
                Some(since) => {
                    let deadline = since + self.inner.config.limit_wait;
                    let _ = clock.timeout_at(deadline, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Gives a leased worker back. A failed worker is killed rather than reused. A shared
    /// host's actor lease ends that actor's hold only; the host is killed with its last.
    pub fn return_lease(&self, lease_id: u64, worker_failed: bool) {
        let mut kill = None;
        {
            let mut state = self.inner.state.lock();
            let Some(lease) = state.remove_lease(lease_id) else {
                return;
            };
            state.resources.release(&lease.held);
            if lease.shared {
                // Never idle again: it may hold what its actors left (a call still running).
                kill = state
                    .workers
                    .get(&lease.worker)
                    .filter(|w| w.hosted.is_empty())
                    .and_then(|w| w.kill.clone());
            } else if let Some(w) = state.workers.get_mut(&lease.worker) {
                w.lease = None;
                if worker_failed {
                    kill = w.kill.clone();
                } else {
                    state.idle.push(lease.worker);
                }
            }
        }
        if let Some(kill) = kill {
            kill();
        }
        self.inner.changed.notify_waiters();
    }

    /// A worker blocked in `get` gives its CPU back (so nested tasks can run); when it
    /// resumes it takes it again if free, and otherwise runs over the limit, as Ray does.
    pub fn set_blocked(&self, worker_id: WorkerId, blocked: bool) {
        let mut state = self.inner.state.lock();
        let Some(lease_id) = state.workers.get(&worker_id).and_then(|w| w.lease) else {
            return;
        };
        let PoolState {
            leases, resources, ..
        } = &mut *state;
        let Some(lease) = leases.get_mut(&lease_id) else {
            return;
        };
        let cpu = cpu_part(&lease.shape);
        if cpu.is_empty() {
            return;
        }
        let holds_cpu = cpu.fits_in(&lease.held);
        if blocked && holds_cpu {
            resources.release(&cpu);
            lease.held.sub(&cpu);
        } else if !blocked && !holds_cpu && resources.try_allocate(&cpu).is_ok() {
            lease.held.add(&cpu);
        }
        drop(state);
        if blocked {
            self.inner.changed.notify_waiters();
        }
    }

    /// Records that a worker this node started listens; the job it serves, or `None` if it
    /// is not one this node is waiting for.
    pub(crate) fn register_worker(
        &self,
        worker_id: WorkerId,
        pid: u32,
        task_socket: String,
        task_address: String,
        core_worker_address: String,
    ) -> Option<Arc<JobConfig>> {
        let mut state = self.inner.state.lock();
        if state.shutting_down {
            return None;
        }
        let Some(w) = state.workers.get_mut(&worker_id) else {
            tracing::warn!(pid, "registration from a worker this node did not start");
            return None;
        };
        if w.pid != pid || w.registered {
            tracing::warn!(
                pid,
                "worker registration does not match the started process"
            );
            return None;
        }
        let job = self.inner.jobs.lock().get(&w.job_id).cloned()?;
        w.registered = true;
        w.task_socket = task_socket;
        w.task_address = task_address;
        w.core_worker_address = core_worker_address;
        let for_host = std::mem::take(&mut w.for_host);
        state.starting = state.starting.saturating_sub(1);
        if for_host {
            state.starting_hosts = state.starting_hosts.saturating_sub(1);
        }
        state.startup_failures = 0;
        state.idle.push(worker_id);
        drop(state);
        self.inner.changed.notify_waiters();
        Some(job)
    }

    /// Starts worker `worker_id` of `job`, whose record is in the table already.
    fn spawn_worker(&self, worker_id: WorkerId, job: &JobConfig) -> Result<(), LeaseError> {
        let config = &self.inner.config;
        if self.inner.state.lock().shutting_down {
            return Err(LeaseError::ShuttingDown);
        }
        let node_manager = self.inner.address.lock().clone();
        metrics::counter!("rayrs_workers_started_total").increment(1);
        let mut launched = self
            .inner
            .launcher
            .launch(&LaunchRequest {
                worker_id,
                job,
                node_manager: &node_manager,
                session: &config.session,
            })
            .map_err(LeaseError::Spawn)?;
        let pid = launched.pid();
        if let Some(output) = launched.take_output() {
            let who = crate::logs::Writer {
                worker_id,
                pid,
                job_id: job.job_id,
                forward: job.log_to_driver,
            };
            self.inner.logs.attach(who, output);
        }
        // Known before it has the token: a fast worker may register as soon as it reads it.
        {
            let mut state = self.inner.state.lock();
            if state.shutting_down {
                // Shutdown began while it started: it would be missed by the kill.
                launched.killer()();
                return Err(LeaseError::ShuttingDown);
            }
            if let Some(w) = state.workers.get_mut(&worker_id) {
                w.pid = pid;
                w.kill = Some(launched.killer());
            }
        }
        // The token goes over a private channel, never the command line or the environment.
        if let Err(e) = launched.hand_token(&config.token) {
            launched.killer()();
            return Err(LeaseError::Spawn(format!(
                "handing the token to a worker: {e}"
            )));
        }
        tracing::debug!(pid, "worker started");
        let me = self.clone();
        let exited = launched.exited();
        tokio::spawn(async move {
            let status = exited.await;
            me.worker_exited(worker_id, pid, status);
        });
        Ok(())
    }

    fn worker_exited(&self, worker_id: WorkerId, pid: u32, status: String) {
        let mut state = self.inner.state.lock();
        if !state.shutting_down {
            tracing::debug!(pid, %status, "worker exited");
            self.report_failure(worker_id);
        }
        // Its leases first, while its record still counts it as a shared host.
        let leases: Vec<u64> = state
            .workers
            .get(&worker_id)
            .map(|w| {
                w.lease
                    .into_iter()
                    .chain(w.hosted.iter().copied())
                    .collect()
            })
            .unwrap_or_default();
        for lease_id in leases {
            if let Some(lease) = state.remove_lease(lease_id) {
                state.resources.release(&lease.held);
            }
        }
        if let Some(w) = state.workers.remove(&worker_id) {
            if !w.registered {
                state.starting = state.starting.saturating_sub(1);
                if w.for_host {
                    state.starting_hosts = state.starting_hosts.saturating_sub(1);
                }
                // A worker of a job that ended meanwhile (killed by `finish_job`, or refused
                // at registration) did not fail to start: counting it would refuse the next
                // job's leases for the last one's leftovers.
                let job_ended = !self.inner.jobs.lock().contains_key(&w.job_id);
                if !state.shutting_down && !job_ended {
                    state.startup_failures += 1;
                    state.last_startup_failure = Some(self.inner.connect.clock().now());
                }
            }
            state.idle.retain(|id| *id != worker_id);
        }
        // Leases the dead process held come back; their workers serve others.
        for worker in state.take_back_leases(|l| l.lessee == Some(worker_id)) {
            state.idle.push(worker);
        }
        drop(state);
        self.inner.changed.notify_waiters();
        self.inner.exited.notify_waiters();
    }

    /// Reserves bundles of placement group `group` here, all of them or none: each takes
    /// its resources out of what is free and adds them back under the group's names, which
    /// only the group's tasks ask for. A bundle reserved before is kept as it is (the GCS
    /// may ask again). `Err` says what is short.
    pub fn reserve_bundles(
        &self,
        group: PlacementGroupId,
        bundles: &[(u32, ResourceSet)],
    ) -> Result<(), String> {
        let name = group.to_hex();
        let mut state = self.inner.state.lock();
        let state = &mut *state;
        let held = state.bundles.get(&group);
        let fresh: Vec<&(u32, ResourceSet)> = bundles
            .iter()
            .filter(|(i, _)| !held.is_some_and(|h| h.iter().any(|b| b.index == *i)))
            .collect();
        let mut sum = ResourceSet::new();
        for (_, shape) in &fresh {
            sum.add(shape);
        }
        if let Some(short) = state.resources.shortfall(&sum) {
            return Err(format!("bundles {sum} do not fit now: {short}"));
        }
        for (index, shape) in fresh {
            let renamed = ray_scheduler::bundles::bundle_resources(&name, *index as usize, shape);
            state
                .resources
                .reserve_bundle(shape, &renamed)
                .map_err(|short| format!("bundle {index} does not fit now: {short}"))?;
            state
                .bundles
                .entry(group)
                .or_default()
                .push(ReservedBundle {
                    index: *index,
                    shape: shape.clone(),
                    renamed,
                });
        }
        tracing::info!(%group, bundles = bundles.len(), "placement group bundles reserved");
        Ok(())
    }

    /// Gives placement group `group`'s bundles here back: the leases that run in them are
    /// taken back and their workers killed (Ray kills a removed group's tasks and actors),
    /// then the bundles' resources are free again. Nothing happens for a group with no
    /// bundle here. How many workers were killed.
    pub fn release_bundles(&self, group: PlacementGroupId) -> usize {
        let name = group.to_hex();
        let mut state = self.inner.state.lock();
        let Some(bundles) = state.bundles.remove(&group) else {
            return 0;
        };
        let taken = state.take_back_leases(|l| ray_scheduler::bundles::uses_group(&l.shape, &name));
        let kills: Vec<Killer> = taken
            .iter()
            .filter_map(|w| state.workers.get(w).and_then(|r| r.kill.clone()))
            .collect();
        for b in &bundles {
            state.resources.unreserve_bundle(&b.shape, &b.renamed);
        }
        drop(state);
        for kill in &kills {
            kill();
        }
        tracing::info!(%group, killed = kills.len(), "placement group bundles released");
        self.inner.changed.notify_waiters();
        kills.len()
    }

    /// Node `node` was declared dead: the leases its processes held here are taken back and
    /// their workers killed (as Ray's raylet does): whatever they run is for an owner that is
    /// gone, and nobody would ever return them. Returns how many.
    pub(crate) fn drop_leases_of_dead_node(&self, node: ray_common::NodeId) -> usize {
        let mut state = self.inner.state.lock();
        let orphaned = state.take_back_leases(|l| l.lessee_node == Some(node));
        let kills: Vec<Killer> = orphaned
            .iter()
            .filter_map(|w| state.workers.get(w).and_then(|r| r.kill.clone()))
            .collect();
        drop(state);
        for kill in kills {
            kill();
        }
        if !orphaned.is_empty() {
            tracing::warn!(
                %node,
                leases = orphaned.len(),
                "took back the leases of a dead node's processes and killed their workers"
            );
            self.inner.changed.notify_waiters();
        }
        orphaned.len()
    }

    /// Tells the GCS, which restarts or buries the worker's actor and the actors it owned.
    fn report_failure(&self, worker_id: WorkerId) {
        let Some(gcs) = self.gcs() else {
            return;
        };
        tokio::spawn(async move {
            let req = ray_proto::WorkerFailure {
                worker_id: worker_id.to_vec().into(),
            };
            if let Err(e) = gcs.report_worker_failure(req).await {
                tracing::warn!(error = %e, "could not report a worker's death to the GCS");
            }
        });
    }

    /// Kills every worker and waits until all are reaped; refuses leases from then on.
    pub async fn shutdown(&self) {
        let kills: Vec<Killer> = {
            let mut state = self.inner.state.lock();
            state.shutting_down = true;
            state
                .workers
                .values()
                .filter_map(|w| w.kill.clone())
                .collect()
        };
        self.inner.changed.notify_waiters();
        for kill in kills {
            kill();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let exited = self.inner.exited.notified();
            tokio::pin!(exited);
            exited.as_mut().enable();
            if self.inner.state.lock().workers.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, exited).await.is_err() {
                tracing::error!("workers still alive 10 s after being killed");
                break;
            }
        }
        // Their last lines reach the files and the subscribers before this returns.
        self.inner.logs.close(LOGS_DRAIN).await;
    }
}

/// Leases `worker` for `ask`: its only lease, or (`shared`) one of its hosted actors'.
fn grant(
    state: &mut PoolState,
    worker: WorkerId,
    ask: &LeaseAsk<'_>,
    gpus: Assignment,
    shared: bool,
) -> Grant {
    // Checked by the caller: the shape is available, and so are these GPUs.
    let _ = state.resources.try_allocate(ask.shape);
    state.gpus.take(&gpus);
    let lease_id = state.next_lease;
    state.next_lease += 1;
    metrics::counter!("rayrs_leases_granted_total").increment(1);
    state.leases.insert(
        lease_id,
        LeaseRecord {
            request_id: ask.request_id,
            worker,
            lessee: ask.lessee,
            lessee_node: ask.lessee_node,
            held: ask.shape.clone(),
            shape: ask.shape.clone(),
            for_actor: ask.for_actor,
            shared,
            gpus,
        },
    );
    let w = state
        .workers
        .get_mut(&worker)
        .expect("idle workers are registered workers");
    // A shared host counts as one actor worker, from its first actor to its last.
    let new_actor_worker = ask.for_actor && (!shared || w.hosted.is_empty());
    if shared {
        w.hosted.push(lease_id);
    } else {
        w.lease = Some(lease_id);
    }
    state.actor_workers += usize::from(new_actor_worker);
    let g = Grant {
        lease_id,
        worker_id: worker,
        task_socket: w.task_socket.clone(),
        task_address: w.task_address.clone(),
        core_worker_address: w.core_worker_address.clone(),
        pid: w.pid,
    };
    if ask.request_id != 0 {
        state.granted.insert(ask.request_id, g.clone());
    }
    g
}

/// Names an environment (0: none), whatever the order its variables came in.
fn env_key(env: &[ray_proto::EnvVar]) -> u64 {
    if env.is_empty() {
        return 0;
    }
    let mut pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    pairs.sort_unstable();
    // FNV-1a: stable across processes, and plenty to tell a job's environments apart.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (name, value) in pairs {
        for b in name.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

/// `job` with `env` on top of its own environment (a variable of `env` wins).
fn with_env(job: Arc<JobConfig>, env: &[ray_proto::EnvVar]) -> Arc<JobConfig> {
    if env.is_empty() {
        return job;
    }
    let mut job = (*job).clone();
    job.env.retain(|v| !env.iter().any(|e| e.name == v.name));
    job.env.extend(env.iter().cloned());
    Arc::new(job)
}

/// The CPU a blocked task lends: its `CPU`, or in a placement group's bundle its CPU under
/// the group's names (so a child it waits for can run in the bundle).
fn cpu_part(shape: &ResourceSet) -> ResourceSet {
    let mut part = ResourceSet::cpus(shape.get(CPU)).unwrap_or_default();
    part.add(&ray_scheduler::bundles::group_parts(shape, CPU));
    part
}
