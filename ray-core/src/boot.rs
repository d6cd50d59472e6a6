//! Starting a worker's core worker: its core-worker service, its task socket, registration
//! with the node manager that started it, its link, the core worker itself and its executor.
//! What worker mode (a process of its own) and the in-process test cluster share; the
//! process, its globals and its threads are the caller's.

use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use crate::executor::{serve_task_socket, Executor, TaskListener, TaskQueue};
use crate::link::{Clients, Link};
use crate::ownership::Identity;
use crate::registry::Functions;
use crate::service::{Served, Slot};
use ray_common::rpc::Connect;
use ray_common::{NodeId, WorkerId};
use std::any::Any;
use std::sync::Arc;
use tonic::service::Routes;

/// Serves a core worker's routes on `runtime`; its address and what keeps it serving.
pub(crate) type ServeRoutes<'a> =
    Box<dyn FnOnce(&tokio::runtime::Runtime, Routes) -> Result<(String, Box<dyn Any + Send>)> + 'a>;

/// Opens clients for a worker, labelled with its own address.
pub(crate) type OpenClients<'a> = Box<dyn FnOnce(&str) -> Arc<dyn Connect> + 'a>;

/// What a worker is started with.
pub(crate) struct WorkerBoot<'a> {
    pub worker_id: WorkerId,
    /// The node manager that started it, where it registers.
    pub node_manager: &'a str,
    /// The session's unique name (its task socket's name starts with it).
    pub session: &'a str,
    pub token: Arc<str>,
    pub serve: ServeRoutes<'a>,
    /// Opens clients, labelled with the worker's own address.
    pub connect: OpenClients<'a>,
    /// What it runs.
    pub functions: Functions,
    /// The address its task socket also listens on over TCP, for owners on other nodes
    /// (`None`: a test's in-memory network, where every node is reached by name).
    pub task_ip: Option<std::net::IpAddr>,
}

/// A worker's parts, running on the runtime it was booted on; its tasks run once the caller
/// calls [`Executor::run`] on a thread of its choosing.
pub(crate) struct BootedWorker {
    pub core_worker: Arc<CoreWorker>,
    pub executor: Arc<Executor>,
    pub queue: Arc<TaskQueue>,
    /// Keeps its core-worker service serving.
    pub server: Box<dyn Any + Send>,
}

impl BootedWorker {
    /// Takes no more tasks and stops serving: what a worker loses as its process ends.
    pub fn stop(self) {
        self.queue.close();
        drop(self.server);
    }
}

/// Boots the worker `boot` describes on `runtime` (blocking the calling thread, which must
/// not be one of that runtime's).
pub(crate) fn boot_worker(
    runtime: &tokio::runtime::Runtime,
    boot: WorkerBoot<'_>,
) -> Result<BootedWorker> {
    let WorkerBoot {
        worker_id,
        node_manager,
        session,
        token,
        serve,
        connect,
        functions,
        task_ip,
    } = boot;
    let handle = runtime.handle().clone();
    let _enter = runtime.enter();
    let slot = Slot::default();
    let (core_address, server) = serve(
        runtime,
        crate::service::core_worker_routes(&token, slot.clone()),
    )?;
    let worker_hex = worker_id.to_hex();
    let socket_name = format!("{session}-{worker_hex}");
    let connect = connect(&core_address);
    // Task connections come over the network the worker's clients use.
    let listener = TaskListener::bind(connect.network().as_ref(), &socket_name)?;
    let (tcp_listener, task_address) = match task_ip {
        Some(ip) => {
            let (listener, address) = TaskListener::bind_tcp(ip)?;
            (Some(listener), address)
        }
        None => (None, String::new()),
    };

    let raylet = connect.node_manager(node_manager)?;
    let registered = {
        let req = ray_proto::RegisterWorkerRequest {
            worker_id: worker_id.to_vec().into(),
            pid: std::process::id(),
            task_socket: socket_name,
            task_address,
            core_worker_address: core_address.clone(),
        };
        runtime.block_on(raylet.register_worker(req)).map_err(|e| {
            Error::Runtime(format!("registering with the node manager: {}", e.message))
        })?
    };
    let arena = ray_object_store::ArenaMapping::open(std::path::Path::new(&registered.store_path))
        .map_err(Error::runtime)?;
    let node_id = NodeId::from_wire(&registered.node_id).map_err(Error::runtime)?;

    let queue = TaskQueue::new();
    let hook = {
        let queue = queue.clone();
        let raylet = raylet.clone();
        let handle = handle.clone();
        move |blocked: bool| {
            if blocked {
                queue.set_blocked(true);
            }
            let raylet = raylet.clone();
            let req = ray_proto::BlockedRequest {
                worker_id: worker_id.to_vec().into(),
                blocked,
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            handle.spawn(async move {
                let _ = tx.send(raylet.notify_blocked(req).await);
            });
            let _ = rx.recv();
            if !blocked {
                queue.set_blocked(false);
            }
        }
    };
    let link = Link::new(
        handle.clone(),
        token.clone(),
        Clients {
            gcs: connect.gcs(&registered.gcs_address)?,
            connect,
            raylet,
        },
        node_id,
        Some(arena),
        Some(Box::new(hook)),
    );
    let core_worker = CoreWorker::new(
        Identity {
            address: core_address.into(),
            worker_id,
            node_id,
            job_id: registered.job_id,
            namespace: registered.namespace.clone(),
            is_worker: true,
            location: format!("worker {} (pid {})", &worker_hex[..8], std::process::id()),
        },
        Some(link),
        functions,
        Default::default(),
    );
    let (off_var, off) = crate::config::TASK_EVENTS_OFF;
    if std::env::var(off_var).is_ok_and(|v| v.trim() == off) {
        core_worker.own.task_events.set_enabled(false);
    }
    // A worker process's output is read by its node (one in a test's process is not).
    let names_output = std::env::var_os(ray_raylet::worker_env::WORKER_MODE).is_some();
    let executor = Executor::new(core_worker.own.clone(), queue.clone(), names_output);
    let weak = Arc::downgrade(&core_worker);
    let asked = weak.clone();
    slot.fill(Served {
        own: Arc::downgrade(&core_worker.own),
        executor: Some(executor.clone()),
        cancel_children: Some(Box::new(move |task| {
            if let Some(cw) = weak.upgrade() {
                cw.cancel_children(task);
            }
        })),
        explain: Some(Box::new(move |id| {
            asked.upgrade().map(|cw| cw.explain(id)).unwrap_or_default()
        })),
    });
    if let Some(tcp) = tcp_listener {
        handle.spawn(serve_task_socket(tcp, token.clone(), queue.clone()));
    }
    handle.spawn(serve_task_socket(listener, token, queue.clone()));
    Ok(BootedWorker {
        core_worker,
        executor,
        queue,
        server,
    })
}
