//! Starting and stopping a session in the driver: sync mode; local mode with an embedded
//! head (a `ray_node::Node` serving the GCS and a node manager with its shared-memory store)
//! on loopback; cluster mode, attached to a node of a running cluster on this machine.
//!
//! Shutdown order: stop submitting (pending tasks fail with `NotInitialized`), tell the
//! cluster the job is over (cluster mode: every node stops its workers) or kill and reap
//! every worker (local mode), stop the servers, stop the runtime, then drop the store, which
//! goes with the embedded node's last handle.

use crate::config::{Config, Mode};
use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use crate::link::{Clients, Link};
use crate::ownership::Identity;
use crate::registry::Functions;
use crate::service::{self, Served, Slot};
use crate::worker_output::Printer;
use ray_common::ids::{hex, random_bytes as random_id};
use ray_common::rpc::server::{serve, LOOPBACK};
use ray_common::rpc::{Connect, GcsApi, RpcErrorKind, TonicConnect};
use ray_common::{NodeId, WorkerId};
use ray_node::{Node, NodeOptions};
use ray_object_store::{ArenaMapping, StoreConfig};
use ray_raylet::ProcessLauncher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A running session of this driver.
pub(crate) struct Session {
    pub rt: Arc<CoreWorker>,
    tokio: Option<tokio::runtime::Runtime>,
    /// The embedded node (local mode).
    node: Option<Node>,
    /// The cluster's GCS and this driver's job there (cluster mode).
    job: Option<(Arc<dyn GcsApi>, u32)>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The embedded head's dashboard, its token in the fragment (local mode).
    pub dashboard_url: Option<String>,
    /// Where the workers of this session's node write their output (local mode).
    pub logs_dir: Option<std::path::PathBuf>,
    /// Prints what the job's workers print (`log_to_driver`).
    printer: Option<Printer>,
}

/// The job of a local session's driver (the only one its embedded head serves).
const JOB_ID: u32 = 1;

/// Prefix of every shared-memory file and socket name of this runtime.
const PREFIX: &str = "rayrs-";

/// How long `init` waits for the cluster's head to answer (Ray's
/// `gcs_rpc_server_connect_timeout_s`).
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// How long shutdown waits for the cluster to stop the job's workers.
const FINISH_JOB_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn start(config: &Config) -> Result<Session> {
    let worker_id = WorkerId::random();
    match &config.mode {
        Mode::Sync => {
            return Ok(Session {
                rt: CoreWorker::new(
                    Identity {
                        address: format!("sync:{}", std::process::id()).into(),
                        worker_id,
                        node_id: NodeId::random(),
                        job_id: JOB_ID,
                        namespace: config.namespace.clone().unwrap_or_default(),
                        is_worker: false,
                        location: format!("sync mode, pid {}", std::process::id()),
                    },
                    None,
                    Functions::linked(),
                    config.node_resources()?,
                ),
                tokio: None,
                node: None,
                job: None,
                stops: Vec::new(),
                dashboard_url: None,
                logs_dir: None,
                printer: None,
            })
        }
        Mode::Cluster(addr) => start_cluster(config, addr, worker_id),
        Mode::Local => start_local(config, worker_id),
    }
    .inspect(|session| session.rt.own.task_events.set_enabled(config.task_events))
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ray-runtime")
        .on_thread_start(crate::logging::runtime_thread)
        .enable_all()
        .build()
        .map_err(Error::runtime)
}

/// What a driver attaches to: a node manager on this machine and its store.
struct Attach {
    token: Arc<str>,
    connect: Arc<dyn Connect>,
    gcs_address: String,
    node_manager_address: String,
    node_id: NodeId,
    /// The node's arena, mapped by the driver (`None`: the node is on another machine).
    store_path: Option<String>,
    job_id: u32,
    namespace: String,
    /// Where the driver's core-worker server listens.
    bind: SocketAddr,
    /// Prints the job's workers' output (`log_to_driver`).
    printer: Option<Printer>,
}

fn start_local(config: &Config, worker_id: WorkerId) -> Result<Session> {
    static SESSIONS: AtomicU32 = AtomicU32::new(0);
    let resources = config.node_resources()?;
    sweep_stale_files();
    ray_common::limits::raise_fd_limit();
    let session = format!(
        "{PREFIX}{}-{}-{}",
        std::process::id(),
        SESSIONS.fetch_add(1, Ordering::Relaxed),
        &hex(&random_id())[..8]
    );
    let token: Arc<str> = hex(&random_id()).into();
    let connect: Arc<dyn Connect> = Arc::new(TonicConnect::new(&token).labelled("driver"));
    let tokio_rt = tokio_runtime()?;
    let namespace = config.namespace.clone().unwrap_or_default();
    let program = std::env::current_exe().map_err(Error::runtime)?;
    let temp_dir = ray_node::records::default_temp_dir();
    let log_dir = match ray_node::records::session_log_dir(&temp_dir, &session) {
        Ok(dir) => Some(dir),
        Err(e) => {
            // Logged from the runtime's threads (this one is the user's).
            let e = e.to_string();
            tokio_rt.spawn(async move {
                tracing::warn!(error = %e, "workers' output is kept in no file");
            });
            None
        }
    };
    let started = tokio_rt.block_on(async {
        let options = NodeOptions {
            head: Some(LOOPBACK),
            gcs_address: None,
            ip: LOOPBACK.ip(),
            resources: resources.clone(),
            object_store_memory: config.object_store_memory,
            max_workers: config.max_workers,
            limit_wait: config.worker_limit_wait,
            infeasible_waits: false,
            health: None,
            binary_dir: None,
            binary_cache: None,
            log_dir: log_dir.clone(),
            publish_logs: false,
            submitted_jobs: false,
            token: token.clone(),
            session,
            dashboard: config.dashboard_bind(),
            extra_metrics: None,
        };
        let mut node = Node::start(options, connect.clone(), Arc::new(ProcessLauncher))
            .await
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let registered = connect
            .gcs(&node.gcs_address)?
            .register_job(ray_proto::JobConfig {
                job_id: JOB_ID,
                program: program.display().to_string(),
                env: config.job_env(),
                namespace: namespace.clone(),
                binary_sha256: String::new(),
                driver_node: node.node_id.to_vec().into(),
                driver_pid: std::process::id(),
                log_to_driver: config.log_to_driver,
            })
            .await;
        if let Err(e) = registered {
            node.shutdown().await;
            return Err(Error::Runtime(format!(
                "registering the job: {}",
                e.message
            )));
        }
        Ok(node)
    });
    let node = match started {
        Ok(node) => node,
        Err(e) => {
            tokio_rt.shutdown_timeout(Duration::from_secs(1));
            return Err(e);
        }
    };
    let attach = Attach {
        token,
        connect,
        gcs_address: node.gcs_address.clone(),
        node_manager_address: node.node_manager_address.clone(),
        node_id: node.node_id,
        store_path: Some(node.store_path.display().to_string()),
        job_id: JOB_ID,
        namespace,
        bind: LOOPBACK,
        // Subscribed before any worker starts: no line is missed.
        printer: node
            .worker_logs()
            .subscribe()
            .filter(|_| config.log_to_driver)
            .and_then(|lines| Printer::local(lines, JOB_ID)),
    };
    let mut session = attach_driver(tokio_rt, attach, worker_id, resources, Some(node), None)?;
    session.logs_dir = log_dir;
    Ok(session)
}

fn start_cluster(config: &Config, address: &str, worker_id: WorkerId) -> Result<Session> {
    if config.num_cpus.is_some() || config.num_gpus.is_some() || !config.resources.is_empty() {
        return Err(Error::InvalidArgument(
            "a driver joining a cluster brings no resources: num_cpus, num_gpus and resources              are given to `rayrs start`, not to init"
                .into(),
        ));
    }
    let address = if address == "auto" {
        let dir = ray_node::records::default_temp_dir();
        ray_node::records::head_address(&dir).ok_or_else(|| Error::ClusterUnreachable {
            address: "auto".into(),
            reason: format!(
                "no head runs on this machine (none recorded under {}): start one with                  `rayrs start --head`",
                dir.display()
            ),
        })?
    } else {
        address.to_string()
    };
    let token: Arc<str> = match &config.auth_token {
        Some(token) => token.as_str().into(),
        None => ray_node::token::required()
            .map_err(|e| Error::Unauthenticated(e.to_string()))?
            .into(),
    };
    ray_common::limits::raise_fd_limit();
    let connect: Arc<dyn Connect> = Arc::new(TonicConnect::new(&token).labelled("driver"));
    let tokio_rt = tokio_runtime()?;
    let namespace = config.namespace.clone().unwrap_or_default();
    let program = std::env::current_exe().map_err(Error::runtime)?;
    let unreachable = |reason: String| Error::ClusterUnreachable {
        address: address.clone(),
        reason,
    };
    let joined = tokio_rt.block_on(async {
        let gcs = connect.gcs(&address).map_err(|e| unreachable(e.to_string()))?;
        let nodes = match connect
            .clock()
            .timeout(CONNECT_DEADLINE, gcs.get_all_nodes(ray_proto::Empty {}))
            .await
        {
            Ok(Ok(reply)) => reply.nodes,
            Ok(Err(e)) if e.kind == RpcErrorKind::Unauthenticated => {
                return Err(Error::Unauthenticated(format!(
                    "the cluster at {address} refused this driver's auth token ({}): use the                      head's token (RAY_AUTH_TOKEN, or ~/.rayrs/auth_token; `rayrs                      get-auth-token` on the head prints it)",
                    e.message
                )))
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_DEADLINE:?}"))),
        };
        let here = ray_node::host_id();
        // A node of this machine, the head's first, as Ray's driver attaches to its own
        // machine's raylet. Else the head, from afar: without a mapping of its store (puts
        // and reads stream through its node manager) and with every worker over TCP.
        let local = nodes
            .iter()
            .filter(|n| n.alive && !here.is_empty() && n.host_id == here)
            .max_by_key(|n| n.is_head)
            .cloned();
        let remote = local.is_none();
        let node = local
            .or_else(|| nodes.iter().filter(|n| n.alive).max_by_key(|n| n.is_head).cloned())
            .ok_or_else(|| unreachable("it has no alive node".into()))?;
        if remote {
            let node = ray_common::ids::hex(&node.node_id);
            // Logged from the runtime's threads (this one is the user's).
            tokio::spawn(async move {
                tracing::info!(
                    %node,
                    "no node of the cluster runs on this machine: attached to the head from afar"
                );
            });
        }
        // Shipped when a node runs on another machine (or when asked): nodes run their
        // checked copy, content-addressed, uploaded once.
        let ship = config.ship_binary || nodes.iter().any(|n| n.alive && n.host_id != here);
        let binary_sha256 = match ship {
            true => upload_binary(&gcs, &program).await?,
            false => String::new(),
        };
        let job_id = gcs.next_job_id(ray_proto::Empty {}).await?.job_id;
        gcs.register_job(ray_proto::JobConfig {
            job_id,
            program: program.display().to_string(),
            env: config.job_env(),
            namespace: namespace.clone(),
            binary_sha256,
            driver_node: node.node_id.clone(),
            driver_pid: std::process::id(),
            log_to_driver: config.log_to_driver,
        })
        .await
        .map_err(|e| Error::Runtime(format!("registering the job: {}", e.message)))?;
        // Opened before any worker of the job starts: no line is missed.
        let printer = match config.log_to_driver {
            true => match gcs.subscribe_logs(ray_proto::SubscribeLogsRequest { job_id }).await {
                Ok(batches) => NodeId::from_wire(&node.node_id)
                    .ok()
                    .and_then(|here| Printer::remote(&tokio::runtime::Handle::current(), batches, here)),
                Err(e) => {
                    tracing::warn!(error = %e, "what the job's workers print will not be printed here");
                    None
                }
            },
            false => None,
        };
        // However this process ends, its node finishes the job (no worker of it lingers):
        // it watches this process, or from afar the stream this process holds open.
        if remote {
            let mut held = connect
                .node_manager(&node.node_manager_address)?
                .hold_driver(ray_proto::WatchDriverRequest { job_id, pid: 0 })
                .await
                .map_err(|e| Error::Runtime(format!("attaching to the node: {}", e.message)))?;
            tokio::spawn(async move {
                use tokio_stream::StreamExt;
                let ended = loop {
                    match held.next().await {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break e.to_string(),
                        None => break "the node closed it".to_string(),
                    }
                };
                // (At shutdown the runtime drops this task first: no warning then.)
                tracing::warn!(
                    "the stream that keeps this driver's job alive on the cluster ended \
                     ({ended}): the cluster has finished the job"
                );
            });
        } else {
            connect
                .node_manager(&node.node_manager_address)?
                .watch_driver(ray_proto::WatchDriverRequest {
                    job_id,
                    pid: std::process::id(),
                })
                .await
                .map_err(|e| Error::Runtime(format!("attaching to the node: {}", e.message)))?;
        }
        Ok((node, job_id, gcs, remote, printer))
    });
    let (node, job_id, gcs, remote, printer) = match joined {
        Ok(v) => v,
        Err(e) => {
            tokio_rt.shutdown_timeout(Duration::from_secs(1));
            return Err(e);
        }
    };
    // The driver listens where its node does (workers on other machines call it back);
    // from afar, on the address this machine reaches the node from.
    let node_address = node.node_manager_address.parse::<SocketAddr>().ok();
    let ip = match (node_address, remote) {
        (Some(a), false) => a.ip(),
        (Some(a), true) => route_to(a).unwrap_or(a.ip()),
        (None, _) => LOOPBACK.ip(),
    };
    let node_id = NodeId::from_wire(&node.node_id).map_err(Error::runtime)?;
    let resources = ray_common::resources::to_resource_set(node.total.clone())
        .map_err(|e| Error::Runtime(format!("the node's resources: {e}")))?;
    let attach = Attach {
        token,
        connect,
        gcs_address: address,
        node_manager_address: node.node_manager_address,
        node_id,
        store_path: (!remote).then_some(node.store_path),
        job_id,
        namespace,
        bind: SocketAddr::new(ip, 0),
        printer,
    };
    attach_driver(
        tokio_rt,
        attach,
        worker_id,
        resources,
        None,
        Some((gcs, job_id)),
    )
}

/// The address of this machine that traffic to `peer` leaves from (no packet is sent: a
/// UDP socket's connect only picks the route).
fn route_to(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any = SocketAddr::new(
        match peer {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        },
        0,
    );
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Uploads `program` to the GCS unless it holds it already; its SHA-256.
async fn upload_binary(gcs: &Arc<dyn GcsApi>, program: &std::path::Path) -> Result<String> {
    let path = program.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let data = std::fs::read(&path)?;
        let mut hasher = ray_common::sha256::Hasher::default();
        hasher.update(&data);
        Ok::<_, std::io::Error>((hasher.finish(), data))
    })
    .await
    .map_err(Error::runtime)?;
    let (sha256, data) =
        read.map_err(|e| Error::Runtime(format!("reading {}: {e}", program.display())))?;
    let present = gcs
        .has_binary(ray_proto::BinaryRequest {
            sha256: sha256.clone(),
        })
        .await?
        .present;
    if present {
        return Ok(sha256);
    }
    let size = data.len();
    let chunks = ray_common::sha256::upload_chunks(&sha256, data.into());
    gcs.upload_binary(chunks).await.map_err(|e| {
        Error::Runtime(format!(
            "uploading this program to the cluster: {}",
            e.message
        ))
    })?;
    tracing::info!(%sha256, size, "program uploaded to the cluster");
    Ok(sha256)
}

/// The driver's core worker, attached to the node `attach` names: its server, its link to
/// the node manager and the GCS, its view of the node's store.
fn attach_driver(
    tokio_rt: tokio::runtime::Runtime,
    attach: Attach,
    worker_id: WorkerId,
    resources: ray_scheduler::ResourceSet,
    mut node: Option<Node>,
    job: Option<(Arc<dyn GcsApi>, u32)>,
) -> Result<Session> {
    let handle = tokio_rt.handle().clone();
    let slot = Slot::default();
    // The fragment never reaches a server: the page reads the token from it and keeps it.
    let dashboard_url = node
        .as_ref()
        .and_then(|n| n.dashboard.as_ref())
        .map(|d| format!("{}/#token={}", d.url(), attach.token));
    let attached = (|| {
        let routes = service::core_worker_routes(&attach.token, slot.clone());
        let (core_address, stop) = tokio_rt
            .block_on(serve(attach.bind, routes))
            .map_err(|e| Error::Runtime(format!("the driver cannot listen: {e}")))?;
        let _enter = tokio_rt.enter();
        let arena = match &attach.store_path {
            Some(path) => Some(
                ArenaMapping::open(std::path::Path::new(path))
                    .map_err(|e| Error::Runtime(format!("mapping the node's store {path}: {e}")))?,
            ),
            None => None,
        };
        let clients = Clients {
            raylet: attach.connect.node_manager(&attach.node_manager_address)?,
            gcs: attach.connect.gcs(&attach.gcs_address)?,
            connect: attach.connect.clone(),
        };
        Ok::<_, Error>((core_address, stop, arena, clients))
    })();
    let (core_address, stop, arena, clients) = match attached {
        Ok(v) => v,
        Err(e) => {
            if let Some(node) = &mut node {
                tokio_rt.block_on(node.shutdown());
            }
            tokio_rt.shutdown_timeout(Duration::from_secs(1));
            return Err(e);
        }
    };
    let _enter = tokio_rt.enter();
    // The state API asks the driver for the objects it holds: the GCS keeps its address.
    let driver_address = ray_proto::DriverAddress {
        job_id: attach.job_id,
        address: core_address.clone(),
        worker_id: worker_id.to_vec().into(),
    };
    let gcs = clients.gcs.clone();
    let told = tokio_rt.block_on(async move {
        let tell = gcs.set_driver_address(driver_address);
        tokio::time::timeout(CONNECT_DEADLINE, tell).await
    });
    if !matches!(told, Ok(Ok(_))) {
        // The session runs on; only `ray::state::list_objects` misses this driver's rows.
        tokio_rt.spawn(async move {
            tracing::warn!("the GCS did not learn where this driver listens: {told:?}");
        });
    }
    let link = Link::new(handle, attach.token, clients, attach.node_id, arena, None);
    let rt = CoreWorker::new(
        Identity {
            address: core_address.into(),
            worker_id,
            node_id: attach.node_id,
            job_id: attach.job_id,
            namespace: attach.namespace,
            is_worker: false,
            location: format!("driver (pid {})", std::process::id()),
        },
        Some(link),
        Functions::linked(),
        resources,
    );
    let weak = Arc::downgrade(&rt);
    slot.fill(Served {
        own: Arc::downgrade(&rt.own),
        executor: None,
        cancel_children: None,
        explain: Some(Box::new(move |id| {
            weak.upgrade().map(|cw| cw.explain(id)).unwrap_or_default()
        })),
    });
    Ok(Session {
        rt,
        tokio: Some(tokio_rt),
        node,
        job,
        stops: vec![stop],
        dashboard_url,
        logs_dir: None,
        printer: attach.printer,
    })
}

impl Session {
    pub(crate) fn stop(mut self) {
        let rt = self.rt.clone();
        rt.shut_down.store(true, Ordering::SeqCst);
        crate::current::set_current(None);
        if let Some(tokio_rt) = self.tokio.take() {
            tokio_rt.block_on(async {
                rt.stop().await;
                if let Some(node) = &mut self.node {
                    node.shutdown().await;
                }
                if let Some((gcs, job_id)) = self.job.take() {
                    let finish = gcs.finish_job(ray_proto::FinishJobRequest {
                        job_id,
                        keep_workers: Vec::new(),
                    });
                    match tokio::time::timeout(FINISH_JOB_DEADLINE, finish).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "the cluster did not hear that this job ended; its workers may linger"),
                        Err(_) => tracing::warn!("the cluster did not confirm this job's end within {FINISH_JOB_DEADLINE:?}"),
                    }
                }
                for stop in self.stops.drain(..) {
                    let _ = stop.send(());
                }
            });
            tokio_rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
        rt.fail_pending();
        // The node's readers of its workers' output are done: every line gets printed.
        if let Some(printer) = self.printer.take() {
            printer.finish();
        }
        // Last: the store goes with the node manager's last handle.
        drop(self.node.take());
    }
}

/// From the first local session on, SIGTERM and SIGINT (Ctrl-C) shut the session down
/// cleanly (workers reaped, servers stopped) before the process ends as the signal's
/// default would end it, as Ray does at exit.
pub(crate) fn shut_down_on_signals() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        // Only signals the program left at their default (ending it): one it handles itself
        // stays its own.
        let defaults: Vec<i32> = [SIGTERM, SIGINT]
            .into_iter()
            .filter(|s| has_default_disposition(*s))
            .collect();
        if defaults.is_empty() {
            return;
        }
        let mut signals = match signal_hook::iterator::Signals::new(defaults) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; they will not shut down cleanly");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("ray-signals".into())
            .spawn(move || {
                crate::logging::runtime_thread();
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "shutting down on a signal");
                    crate::shutdown();
                    // Ends the process as the signal would have (the exit status says so).
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT");
        }
    });
}

/// True if `signal` is at its default disposition (no handler, not ignored).
fn has_default_disposition(signal: i32) -> bool {
    // SAFETY: reads the current action into a zeroed struct; a null new action changes nothing.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_DFL
    }
}

/// Removes shared-memory files left by sessions whose process no longer exists (a driver
/// that crashed before `shutdown`).
fn sweep_stale_files() {
    let dir = StoreConfig::default_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(file = %entry.path().display(), "removing a stale object store file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
