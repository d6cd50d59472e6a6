//! Worker mode: the same binary, re-executed by a node manager, serving tasks.
//!
//! A constructor (run before `main`, so no user code runs first) checks for the worker
//! environment variable and, if set, never returns: it registers with the node manager,
//! boots the process's core worker ([`crate::boot`]) and makes it current, and runs its
//! tasks on a task thread of its own.

use crate::boot::{boot_worker, WorkerBoot};
use crate::error::{Error, Result};
use ray_common::rpc::TonicConnect;
use ray_raylet::worker_env;
use std::io::BufRead;
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
    // Before the worker joins: one that fails here counts as one that could not start. First
    // of all: a setup that installs a `tracing` subscriber has the runtime's threads use it.
    crate::registry::run_worker_setup()?;
    crate::logging::worker_process();
    let node_manager = env(worker_env::NODE_MANAGER)?;
    let worker_hex = env(worker_env::WORKER_ID)?;
    let session = env(worker_env::SESSION)?;
    let worker_id = ray_object_store::ObjectId::from_hex(&worker_hex)
        .map(|id| ray_common::WorkerId(id.0))
        .ok_or_else(|| Error::Runtime("malformed worker id".into()))?;
    let mut token = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut token)
        .map_err(Error::runtime)?;
    let token: Arc<str> = token.trim().into();
    if token.is_empty() {
        return Err(Error::Runtime("no session token on stdin".into()));
    }

    // A worker listens where its node manager does: owners on other nodes call it there.
    let bind = node_manager
        .parse::<std::net::SocketAddr>()
        .map(|a| std::net::SocketAddr::new(a.ip(), 0))
        .unwrap_or(ray_common::rpc::server::LOOPBACK);
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ray-worker-io")
        .on_thread_start(crate::logging::runtime_thread)
        .enable_all()
        .build()
        .map_err(Error::runtime)?;
    let booted = boot_worker(
        &tokio_rt,
        WorkerBoot {
            worker_id,
            node_manager: &node_manager,
            session: &session,
            token: token.clone(),
            serve: Box::new(|runtime, routes| {
                let serving = ray_common::rpc::server::serve(bind, routes);
                let (address, stop) = runtime
                    .block_on(serving)
                    .map_err(|e| Error::Runtime(format!("the worker cannot listen: {e}")))?;
                Ok((address, Box::new(stop)))
            }),
            connect: Box::new(|me| Arc::new(TonicConnect::new(&token).labelled(me))),
            functions: crate::registry::Functions::linked(),
            task_ip: Some(bind.ip()),
        },
    )?;
    crate::current::set_current(Some(booted.core_worker.clone()));
    let executor = booted.executor.clone();
    let tasks = std::thread::Builder::new()
        .name("ray-task".into())
        .stack_size(TASK_STACK_BYTES)
        .spawn(move || executor.run())
        .map_err(Error::runtime)?;
    let _ = tasks.join();
    booted.stop();
    Ok(())
}
