//! Starting and stopping a session in the driver: sync mode, or local mode with an embedded
//! head (GCS and node manager with its shared-memory store) on loopback.
//!
//! Shutdown order: stop submitting (pending tasks fail with `NotInitialized`), kill and reap
//! every worker, stop the servers, stop the runtime, then drop the store, which removes its
//! shared-memory file.

use crate::config::{Config, Mode};
use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use crate::link::{Clients, Link};
use crate::ownership::Identity;
use crate::registry::Functions;
use crate::server::{logged, serve};
use crate::service::{self, Served, Slot};
use ray_common::ids::{hex, random_bytes as random_id};
use ray_common::resources::to_resources;
use ray_common::rpc::{Connect, TonicConnect};
use ray_common::{NodeId, WorkerId};
use ray_gcs::{GcsServer, GcsService};
use ray_object_store::{ArenaMapping, ObjectStore, StoreConfig};
use ray_proto::auth::CheckToken;
use ray_raylet::{NodeManager, NodeManagerConfig, NodeManagerServer, ProcessLauncher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;

/// A running session of this driver.
pub(crate) struct Session {
    pub rt: Arc<CoreWorker>,
    tokio: Option<tokio::runtime::Runtime>,
    node: Option<NodeManager>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// The job of a local session's driver (the only one its embedded head serves).
const JOB_ID: u32 = 1;

/// Prefix of every shared-memory file and socket name of this runtime.
const PREFIX: &str = "rayrs-";

pub(crate) fn start(config: &Config) -> Result<Session> {
    let resources = config.node_resources()?;
    let worker_id = WorkerId::random();
    match &config.mode {
        Mode::Sync => Ok(Session {
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
                resources,
            ),
            tokio: None,
            node: None,
            stops: Vec::new(),
        }),
        Mode::Cluster(addr) => Err(Error::InvalidArgument(format!(
            "cluster mode (RAY_ADDRESS={addr}) is not available yet: use local mode"
        ))),
        Mode::Local => start_local(config, resources, worker_id),
    }
}

fn start_local(
    config: &Config,
    resources: ray_scheduler::ResourceSet,
    worker_id: WorkerId,
) -> Result<Session> {
    static SESSIONS: AtomicU32 = AtomicU32::new(0);
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
    let capacity = config
        .object_store_memory
        .unwrap_or_else(StoreConfig::default_capacity);
    // Anonymous: the arena goes with the last process that holds it, however the driver ends.
    let store =
        ObjectStore::create_anonymous(StoreConfig::new(session.clone()).with_capacity(capacity))
            .map_err(|e| Error::Runtime(format!("creating the object store: {e}")))?;
    let store_path = store.path().to_path_buf();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ray-runtime")
        .on_thread_start(crate::log_runtime_thread)
        .enable_all()
        .build()
        .map_err(Error::runtime)?;
    let handle = tokio_rt.handle().clone();
    let node_id = NodeId::random();
    let program = std::env::current_exe().map_err(Error::runtime)?;
    let namespace = config.namespace.clone().unwrap_or_default();
    let mut stops = Vec::new();
    let slot = Slot::default();

    let started = tokio_rt.block_on(async {
        let gcs_routes = Routes::new(InterceptedService::new(
            GcsServer::new(GcsService::new(connect.clone())),
            logged(CheckToken::new(&token)),
        ));
        let (gcs_address, stop) = serve(gcs_routes).await?;
        stops.push(stop);
        let node = NodeManager::new(
            NodeManagerConfig {
                node_id,
                resources: resources.clone(),
                token: token.to_string(),
                session: session.clone(),
                gcs_address: gcs_address.clone(),
                max_workers: config
                    .max_workers
                    .unwrap_or_else(|| ray_raylet::default_max_workers(capacity)),
                limit_wait: config.worker_limit_wait,
            },
            store,
            connect.clone(),
            Arc::new(ProcessLauncher),
        );
        let nm_routes = Routes::new(InterceptedService::new(
            NodeManagerServer::new(node.clone())
                .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES),
            logged(CheckToken::new(&token)),
        ));
        let (nm_address, stop) = serve(nm_routes).await?;
        stops.push(stop);
        node.set_address(nm_address.clone());
        node.report_resources();
        let gcs = connect.gcs(&gcs_address)?;
        gcs.register_job(ray_proto::JobConfig {
            job_id: JOB_ID,
            program: program.display().to_string(),
            env: Vec::new(),
            namespace: namespace.clone(),
        })
        .await
        .map_err(|e| Error::Runtime(format!("registering the job: {}", e.message)))?;
        gcs.register_node(ray_proto::RegisterNodeRequest {
            node: Some(ray_proto::NodeInfo {
                node_id: node_id.to_vec().into(),
                node_manager_address: nm_address.clone(),
                total: Some(to_resources(&resources)),
                available: Some(to_resources(&resources)),
                alive: true,
                store_path: store_path.display().to_string(),
            }),
        })
        .await
        .map_err(|e| Error::Runtime(format!("registering the node: {}", e.message)))?;
        let (core_address, stop) = serve(service::core_worker_routes(&token, slot.clone())).await?;
        stops.push(stop);
        Ok::<_, Error>((gcs_address, nm_address, core_address, node))
    });
    let (gcs_address, nm_address, core_address, node) = match started {
        Ok(v) => v,
        Err(e) => {
            tokio_rt.shutdown_timeout(std::time::Duration::from_secs(1));
            return Err(e);
        }
    };
    let _enter = tokio_rt.enter();
    let arena = ArenaMapping::open(&store_path).map_err(Error::runtime)?;
    let clients = Clients {
        raylet: connect.node_manager(&nm_address)?,
        gcs: connect.gcs(&gcs_address)?,
        connect,
    };
    let link = Link::new(handle.clone(), token, clients, node_id, arena, None);
    let rt = CoreWorker::new(
        Identity {
            address: core_address.into(),
            worker_id,
            node_id,
            job_id: JOB_ID,
            namespace,
            is_worker: false,
            location: format!("driver (pid {})", std::process::id()),
        },
        Some(link),
        Functions::linked(),
        resources,
    );
    slot.fill(Served {
        own: Arc::downgrade(&rt.own),
        executor: None,
    });
    handle.spawn(discard_idle_memory(node.clone()));
    Ok(Session {
        rt,
        tokio: Some(tokio_rt),
        node: Some(node),
        stops,
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
                if let Some(node) = &self.node {
                    node.shutdown().await;
                }
                for stop in self.stops.drain(..) {
                    let _ = stop.send(());
                }
            });
            tokio_rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
        rt.fail_pending();
        // Last: the store's file goes with the node manager's last handle.
        drop(self.node.take());
    }
}

/// Every second, the node's store gives back the memory of large objects freed a while ago
/// (off the runtime's threads: that can take a few milliseconds a gigabyte).
async fn discard_idle_memory(node: NodeManager) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
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
                crate::log_runtime_thread();
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
