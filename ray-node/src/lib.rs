//! A node of a cluster as a value: [`Node::start`] serves the head's GCS (on the head only)
//! and a node manager with its shared-memory object store, registers the node with the GCS
//! and keeps its resource reports flowing. `rayrs start` runs one per process; a local
//! session embeds one (a head with its own node) in the driver.
//!
//! Also here, because nodes and drivers both need them: the cluster's auth token
//! ([`token`]) and the records a node leaves in its temp dir ([`records`]) for `rayrs stop`,
//! `rayrs status` and `RAY_ADDRESS=auto`.
//!
//! Invariant: a started node is stopped by [`Node::shutdown`] (workers reaped, servers
//! stopped); its arena is an anonymous memory file that goes with the process however it
//! ends, so nothing of it outlives the node.

mod error;
pub mod jobs;
pub mod local_cluster;
pub mod records;
pub mod token;

pub use error::NodeError;

use ray_common::rpc::server::{logged, serve, serve_with_bulk};
use ray_common::rpc::{Connect, RpcErrorKind};
use ray_common::NodeId;
use ray_gcs::{GcsServer, GcsService};
use ray_object_store::{ObjectStore, StoreConfig};
use ray_proto::auth::CheckToken;
use ray_raylet::{NodeManager, NodeManagerConfig, NodeManagerServer, WorkerLauncher};
use ray_scheduler::ResourceSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;

/// How long a node waits for the head to answer its registration (Ray's
/// `gcs_rpc_server_connect_timeout_s`).
pub const JOIN_DEADLINE: Duration = Duration::from_secs(5);

/// What a node is started with.
#[derive(Clone)]
pub struct NodeOptions {
    /// `Some`: this node is the head and serves the GCS there (port 0: a free one).
    pub head: Option<SocketAddr>,
    /// The head's GCS (`HOST:PORT`), for a node that joins one; unused on the head.
    pub gcs_address: Option<String>,
    /// The address this node's node manager listens on (its port is picked).
    pub ip: IpAddr,
    /// What the node offers.
    pub resources: ResourceSet,
    /// The object store's size; a share of the machine's memory if `None`.
    pub object_store_memory: Option<u64>,
    /// Most worker processes at once; from memory and descriptors if `None`.
    pub max_workers: Option<usize>,
    /// How long a lease request may wait on the worker limit.
    pub limit_wait: Duration,
    /// On the head: how the GCS checks its nodes' health (`None`: it does not).
    pub health: Option<ray_gcs::HealthConfig>,
    /// On the head: where the GCS keeps jobs' uploaded binaries (`None`: it keeps none).
    pub binary_dir: Option<PathBuf>,
    /// Where this node caches the shipped binaries it runs (`None`: jobs run their driver's
    /// path, as in a local session).
    pub binary_cache: Option<PathBuf>,
    /// Whether a request no node can hold waits for one that can join (a cluster's nodes)
    /// rather than failing at once (a local session, which cannot grow).
    pub infeasible_waits: bool,
    /// The cluster's token: every server of the node refuses calls without it.
    pub token: Arc<str>,
    /// A name unique to this node's session (its workers' socket names start with it).
    pub session: String,
    /// Where its workers' output files go (`None`: nowhere).
    pub log_dir: Option<PathBuf>,
    /// On the head with a dashboard: whether `/api/jobs/` runs submitted jobs' drivers here
    /// (needs `log_dir`, where their output is kept).
    pub submitted_jobs: bool,
    /// Whether it sends its workers' output lines to the GCS, for drivers of other
    /// processes (a cluster's node; a local session's driver reads its node's directly).
    pub publish_logs: bool,
    /// On the head: where its dashboard listens (`None`: it has none).
    pub dashboard: Option<ray_dashboard::Bind>,
    /// On the head: Prometheus text the dashboard's `/metrics` appends (the process's own
    /// exporter, when its binary installed one).
    pub extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
}

/// A running node. Stop it with [`Node::shutdown`]; dropping it afterwards frees its store.
pub struct Node {
    /// This node's id.
    pub node_id: NodeId,
    /// The GCS this node registered with (its own on the head).
    pub gcs_address: String,
    /// Where its node manager listens.
    pub node_manager_address: String,
    /// Where processes of this machine map its store.
    pub store_path: PathBuf,
    /// Its dashboard (on the head, when asked for).
    pub dashboard: Option<ray_dashboard::Dashboard>,
    manager: NodeManager,
    /// The head's submitted jobs (with a dashboard, when asked).
    supervisor: Option<jobs::Supervisor>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    /// Its workers' output: their files, and their lines as they come.
    pub fn worker_logs(&self) -> &ray_raylet::logs::WorkerLogs {
        self.manager.worker_logs()
    }

    /// Starts a node as `options` say, calling other processes through clients `connect`
    /// opens and starting workers with `launcher`. Must run inside a multi-threaded tokio
    /// runtime, which then serves the node. A node that joins fails within
    /// [`JOIN_DEADLINE`] if the head cannot be reached, naming it.
    pub async fn start(
        options: NodeOptions,
        connect: Arc<dyn Connect>,
        launcher: Arc<dyn WorkerLauncher>,
    ) -> Result<Node, NodeError> {
        let mut stops = Vec::new();
        let started = Self::start_servers(&options, connect.clone(), launcher, &mut stops).await;
        match started {
            Ok(node) => Ok(Node { stops, ..node }),
            Err(e) => {
                for stop in stops {
                    let _ = stop.send(());
                }
                Err(e)
            }
        }
    }

    async fn start_servers(
        options: &NodeOptions,
        connect: Arc<dyn Connect>,
        launcher: Arc<dyn WorkerLauncher>,
        stops: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Node, NodeError> {
        let token = &options.token;
        let gcs_address = match (options.head, &options.gcs_address) {
            (Some(bind), _) => {
                let routes = Routes::new(InterceptedService::new(
                    GcsServer::new(GcsService::with_options(
                        connect.clone(),
                        ray_gcs::GcsOptions {
                            health: options.health.clone(),
                            binaries: options.binary_dir.clone(),
                            infeasible_waits: options.infeasible_waits,
                        },
                    ))
                    // A binary's upload comes in chunks of a few MiB.
                    .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES),
                    logged(CheckToken::new(token)),
                ));
                let (address, stop) =
                    serve(bind, routes)
                        .await
                        .map_err(|source| NodeError::Bind {
                            what: "the GCS",
                            address: bind.to_string(),
                            source,
                        })?;
                stops.push(stop);
                address
            }
            (None, Some(address)) => address.clone(),
            (None, None) => {
                return Err(NodeError::InvalidArgument(
                    "a node that is not the head needs the head's address".into(),
                ))
            }
        };
        let capacity = options
            .object_store_memory
            .unwrap_or_else(StoreConfig::default_capacity);
        // Anonymous: the arena goes with the last process that holds it, however this ends.
        let store = ObjectStore::create_anonymous(
            StoreConfig::new(options.session.clone()).with_capacity(capacity),
        )
        .map_err(|e| NodeError::Store(e.to_string()))?;
        let store_path = store.path().to_path_buf();
        let node_id = NodeId::random();
        let manager = NodeManager::new(
            NodeManagerConfig {
                node_id,
                resources: options.resources.clone(),
                token: token.to_string(),
                session: options.session.clone(),
                gcs_address: gcs_address.clone(),
                max_workers: options
                    .max_workers
                    .unwrap_or_else(|| ray_raylet::default_max_workers(capacity)),
                limit_wait: options.limit_wait,
                binary_cache: options.binary_cache.clone(),
                infeasible_waits: options.infeasible_waits,
                log_dir: options.log_dir.clone(),
            },
            store,
            connect.clone(),
            launcher,
        );
        let routes = Routes::new(InterceptedService::new(
            NodeManagerServer::new(manager.clone())
                .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES),
            logged(CheckToken::new(token)),
        ));
        let bind = SocketAddr::new(options.ip, 0);
        // The pulls' bulk path shares the node manager's port.
        let (bulk, incoming_bulk) = tokio::sync::mpsc::channel(64);
        manager.serve_bulk(incoming_bulk);
        let (node_manager_address, stop) = serve_with_bulk(bind, routes, Some(bulk))
            .await
            .map_err(|source| NodeError::Bind {
                what: "the node manager",
                address: bind.to_string(),
                source,
            })?;
        stops.push(stop);
        manager.set_address(node_manager_address.clone());
        // Dropped (stopped) if the rest of the start fails.
        let mut supervisor = None;
        let dashboard = match options.dashboard {
            Some(bind) if options.head.is_some() => {
                let mut sources = ray_dashboard::Sources::new(
                    connect.clone(),
                    gcs_address.clone(),
                    options.extra_metrics.clone(),
                );
                if let (true, Some(log_dir)) = (options.submitted_jobs, &options.log_dir) {
                    let jobs = jobs::Supervisor::new(
                        manager.clone(),
                        connect
                            .gcs(&gcs_address)
                            .map_err(|e| NodeError::HeadUnreachable {
                                address: gcs_address.clone(),
                                reason: e.to_string(),
                            })?,
                        gcs_address.clone(),
                        token.clone(),
                        log_dir.clone(),
                    );
                    sources = sources.with_jobs(Arc::new(jobs.clone()));
                    supervisor = Some(jobs);
                }
                Some(ray_dashboard::Dashboard::serve(bind, token, sources).await?)
            }
            _ => None,
        };
        let resources = ray_common::resources::to_resources(&options.resources);
        let register = async {
            let gcs = connect.gcs(&gcs_address)?;
            gcs.register_node(ray_proto::RegisterNodeRequest {
                node: Some(ray_proto::NodeInfo {
                    node_id: node_id.to_vec().into(),
                    node_manager_address: node_manager_address.clone(),
                    total: Some(resources.clone()),
                    available: Some(resources),
                    alive: true,
                    store_path: store_path.display().to_string(),
                    is_head: options.head.is_some(),
                    host_id: host_id(),
                    death_reason: String::new(),
                    demands: Vec::new(),
                }),
            })
            .await
        };
        match connect.clock().timeout(JOIN_DEADLINE, register).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind == RpcErrorKind::Unauthenticated => {
                return Err(NodeError::TokenRefused {
                    address: gcs_address,
                    reason: e.message,
                })
            }
            Ok(Err(e)) => {
                return Err(NodeError::HeadUnreachable {
                    address: gcs_address,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(NodeError::HeadUnreachable {
                    address: gcs_address,
                    reason: format!("no answer within {JOIN_DEADLINE:?}"),
                })
            }
        }
        manager.report_resources();
        manager.follow_cluster_view();
        manager.follow_cpu();
        if let (true, Some(lines)) = (options.publish_logs, manager.worker_logs().subscribe()) {
            match connect.gcs(&gcs_address) {
                Ok(gcs) => {
                    let ip = options.ip.to_string();
                    tokio::spawn(ray_raylet::logs::publish(lines, gcs, node_id, ip));
                }
                Err(e) => tracing::warn!(error = %e, "workers' output reaches no driver"),
            }
        }
        tokio::spawn(discard_idle_memory(manager.clone()));
        tracing::info!(node = %node_id, %node_manager_address, %gcs_address, "node started");
        Ok(Node {
            node_id,
            gcs_address,
            node_manager_address,
            store_path,
            dashboard,
            manager,
            supervisor,
            stops: Vec::new(),
        })
    }

    /// The node's node manager.
    pub fn manager(&self) -> &NodeManager {
        &self.manager
    }

    /// Kills and reaps every worker, then stops the node's servers.
    pub async fn shutdown(&mut self) {
        if let Some(dashboard) = &mut self.dashboard {
            dashboard.stop();
        }
        if let Some(jobs) = &self.supervisor {
            jobs.kill_all();
        }
        self.manager.shutdown().await;
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Every second, the node's store gives back the memory of large objects freed a while ago
/// (off the runtime's threads: that can take a few milliseconds a gigabyte). Ends with the
/// runtime.
async fn discard_idle_memory(node: NodeManager) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let node = node.clone();
        if tokio::task::spawn_blocking(move || node.store().discard_idle())
            .await
            .is_err()
        {
            return; // The runtime is shutting down.
        }
    }
}

/// This machine's identity as its processes see it: processes that share it may map one
/// another's store (through `/proc/<pid>/fd`), watch one another's pids and reach one
/// another's abstract Unix sockets. The kernel's boot id (fresh at each boot) with the pid
/// and network namespaces: containers of one host share the boot id, not those.
pub fn host_id() -> String {
    let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return String::new();
    };
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    format!("{}/{}/{}", boot.trim(), ns("pid"), ns("net"))
}
