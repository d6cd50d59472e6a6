//! Worker mode: the same binary, re-executed by a node manager, serving tasks.
//!
//! A constructor (run before `main`, so no user code runs first) checks for the worker
//! environment variable and, if set, never returns: it registers with the node manager,
//! builds the process's core worker and makes it current, listens on its task socket, and
//! hands the main work to the [`Executor`] on a task thread of its own.

use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use crate::executor::{serve_task_socket, Executor, TaskQueue};
use crate::ids::id16;
use crate::link::{Clients, Link};
use crate::ownership::Identity;
use crate::service::{Served, Slot};
use ray_common::rpc::{Connect, TonicConnect};
use ray_raylet::worker_env;
use std::io::BufRead;
use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;

/// Stack of the thread that runs a worker's tasks: a task waiting on its children may run
/// them inline, one inside the other (see [`crate::executor::run_inline`]).
const TASK_STACK_BYTES: usize = 256 << 20;

#[ctor::ctor(unsafe)]
fn enter_worker_mode() {
    if std::env::var_os(worker_env::WORKER_MODE).is_some_and(|v| v == "1") {
        // Children of this worker (if a task starts processes) must not become workers.
        let code = match run_worker() {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "worker failed");
                1
            }
        };
        std::process::exit(code);
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::Runtime(format!("worker started without {name}")))
}

fn run_worker() -> Result<()> {
    crate::log_runtime_thread();
    let node_manager = env(worker_env::NODE_MANAGER)?;
    let worker_hex = env(worker_env::WORKER_ID)?;
    let session = env(worker_env::SESSION)?;
    let worker_id = ray_object_store::ObjectId::from_hex(&worker_hex)
        .ok_or_else(|| Error::Runtime("malformed worker id".into()))?
        .0;
    let mut token = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut token)
        .map_err(Error::runtime)?;
    let token: Arc<str> = token.trim().into();
    if token.is_empty() {
        return Err(Error::Runtime("no session token on stdin".into()));
    }

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ray-worker-io")
        .on_thread_start(crate::log_runtime_thread)
        .enable_all()
        .build()
        .map_err(Error::runtime)?;
    let handle = tokio_rt.handle().clone();
    let _enter = tokio_rt.enter();

    let slot = Slot::default();
    let (core_address, _stop) = tokio_rt.block_on(crate::server::serve(
        crate::service::core_worker_routes(&token, slot.clone()),
    ))?;
    let socket_name = format!("{session}-{worker_hex}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name.as_bytes())
        .map_err(Error::runtime)?;
    let std_listener =
        std::os::unix::net::UnixListener::bind_addr(&addr).map_err(Error::runtime)?;
    std_listener.set_nonblocking(true).map_err(Error::runtime)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(Error::runtime)?;

    let connect: Arc<dyn Connect> = Arc::new(TonicConnect::new(&token).labelled(&core_address));
    let raylet = {
        let _in_runtime = tokio_rt.enter();
        connect.node_manager(&node_manager)?
    };
    let registered = {
        let req = ray_proto::RegisterWorkerRequest {
            worker_id: worker_id.to_vec().into(),
            pid: std::process::id(),
            task_socket: socket_name,
            core_worker_address: core_address.clone(),
        };
        tokio_rt
            .block_on(raylet.register_worker(req))
            .map_err(|e| {
                Error::Runtime(format!("registering with the node manager: {}", e.message))
            })?
    };
    let arena = ray_object_store::ArenaMapping::open(std::path::Path::new(&registered.store_path))
        .map_err(Error::runtime)?;

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
            gcs: {
                let _in_runtime = handle.enter();
                connect.gcs(&registered.gcs_address)?
            },
            connect,
            raylet,
        },
        arena,
        Some(Box::new(hook)),
    );
    let cw = CoreWorker::new(
        Identity {
            address: core_address.into(),
            worker_id,
            node_id: id16(&registered.node_id, "node id")?,
            job_id: registered.job_id,
            namespace: registered.namespace.clone(),
            is_worker: true,
            location: format!("worker {} (pid {})", &worker_hex[..8], std::process::id()),
        },
        Some(link),
        Default::default(),
    );
    crate::current::set_current(Some(cw.clone()));
    let executor = Executor::new(cw.own.clone(), queue.clone());
    slot.fill(Served {
        own: Arc::downgrade(&cw.own),
        executor: Some(executor.clone()),
    });
    handle.spawn(serve_task_socket(listener, token, queue));

    let tasks = std::thread::Builder::new()
        .name("ray-task".into())
        .stack_size(TASK_STACK_BYTES)
        .spawn(move || executor.run())
        .map_err(Error::runtime)?;
    let _ = tasks.join();
    Ok(())
}
