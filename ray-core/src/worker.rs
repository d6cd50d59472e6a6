//! Worker mode: the same binary, re-executed by a node manager, serving tasks.
//!
//! A constructor (run before `main`, so no user code runs first) checks for the worker
//! environment variable and, if set, never returns: it registers with the node manager,
//! listens on its task socket, and runs tasks one at a time on its main thread, where a
//! blocking `ray::get` is allowed. While a task blocks, tasks pipelined behind it are sent
//! back to their owner so that nothing waits on a blocked worker.

use crate::cluster::{Clients, Cluster};
use crate::error::{Error, Result};
use crate::frames::{read_frame, read_frames};
use crate::ids::{id16, IdGen};
use crate::memory_store::Stored;
use crate::object_ref::collect_deserialized_refs;
use crate::registry::{ActorInstance, ArgBytes, ArgReader, MethodCall};
use crate::runtime::{self, Runtime};
use crate::submitter::{self, PendingTask};
use parking_lot::Mutex;
use ray_common::rpc::{Connect, TonicConnect};
use ray_raylet::worker_env;
use ray_scheduler::ResourceSet;
use std::cell::Cell;
use std::io::BufRead;
use std::os::linux::net::SocketAddrExt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::io::BufReader;
use tokio::sync::mpsc;

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

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static CURRENT_TASK: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
    /// Resources of the task running on this thread (normal tasks only).
    static CURRENT_SHAPE: std::cell::RefCell<Option<Shape>> = const { std::cell::RefCell::new(None) };
    /// Tasks run inline on this thread, one inside the other.
    static INLINE_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Most tasks run inline one inside the other (each is a few stack frames deep; the task
/// thread's stack is [`TASK_STACK_BYTES`]).
const MAX_INLINE_DEPTH: u32 = 256;
/// Stack of the thread that runs a worker's tasks.
const TASK_STACK_BYTES: usize = 256 << 20;

/// If the calling thread runs a worker's task that may run one of its own queued tasks
/// inline while it waits, the resources such a task must fit in.
pub(crate) fn can_help() -> Option<ResourceSet> {
    if !in_task() || INLINE_DEPTH.with(|d| d.get()) >= MAX_INLINE_DEPTH {
        return None;
    }
    CURRENT_SHAPE.with(|s| match &*s.borrow() {
        Some(Shape::Known(set)) => Some(set.clone()),
        Some(Shape::Wire(bytes)) => {
            let wire = <ray_proto::Resources as prost::Message>::decode(&bytes[..]).ok()?;
            ray_common::resources::to_resource_set(Some(wire)).ok()
        }
        None => None,
    })
}

/// A task's resources: as its frame carried them (decoded only if needed), or known.
enum Shape {
    Wire(bytes::Bytes),
    Known(ResourceSet),
}

/// Runs `task`, which this process submitted and a task blocked on this thread took back
/// from the queue, here and now; its result is stored here, its owner. The waiting task
/// holds the resources it runs on. A panic is the task's error, as on any worker; a crash
/// ends this process, and so the waiting task too (which its owner retries).
pub(crate) fn run_inline(rt: &Runtime, task: PendingTask) {
    let args: Vec<Stored> = task
        .resolved
        .iter()
        .cloned()
        .map(Stored::from_proto)
        .collect();
    let outer_task = CURRENT_TASK.with(|t| t.replace(Some(task.return_id.0)));
    let outer_shape = CURRENT_SHAPE.with(|s| s.replace(Some(Shape::Known(task.shape.clone()))));
    INLINE_DEPTH.with(|d| d.set(d.get() + 1));
    let location = LOCATION.get().map(String::as_str).unwrap_or("");
    let result = arg_slices(rt, &args)
        .and_then(|slices| crate::registry::execute(task.function, &slices, location));
    INLINE_DEPTH.with(|d| d.set(d.get() - 1));
    CURRENT_SHAPE.with(|s| s.replace(outer_shape));
    CURRENT_TASK.with(|t| t.set(outer_task));
    drop(args);
    rt.complete(
        task.return_id,
        result_to_stored(rt, &task.return_id.0, result),
    );
}

/// True on a worker's task thread while a task runs.
pub(crate) fn in_task() -> bool {
    IN_TASK.with(|t| t.get())
}

/// The id of the task running on this thread, if any.
pub(crate) fn current_task() -> Option<[u8; 16]> {
    CURRENT_TASK.with(|t| t.get())
}

struct Job {
    frame: ray_proto::TaskFrame,
    reply: mpsc::UnboundedSender<ray_proto::ReplyFrame>,
}

/// The task queue of this worker and whether its task is blocked.
struct Executor {
    blocked: Mutex<bool>,
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
}

impl Executor {
    /// Takes a frame off a connection: queued, or sent straight back while blocked.
    fn offer(&self, job: Job) {
        let blocked = self.blocked.lock();
        if *blocked && job.frame.actor_id.is_empty() {
            requeue(job);
        } else {
            let _ = self.tx.send(job);
        }
    }

    fn set_blocked(&self, blocked: bool) {
        let mut b = self.blocked.lock();
        *b = blocked;
        if blocked {
            while let Ok(job) = self.rx.try_recv() {
                requeue(job);
            }
        }
    }
}

fn requeue(job: Job) {
    let _ = job.reply.send(ray_proto::ReplyFrame {
        seq: job.frame.seq,
        requeue: true,
        ..Default::default()
    });
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

    let (core_address, _stop) = tokio_rt.block_on(crate::server::serve(
        crate::service::core_worker_routes(&token),
    ))?;
    let socket_name = format!("{session}-{worker_hex}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket_name.as_bytes())
        .map_err(Error::runtime)?;
    let std_listener =
        std::os::unix::net::UnixListener::bind_addr(&addr).map_err(Error::runtime)?;
    std_listener.set_nonblocking(true).map_err(Error::runtime)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(Error::runtime)?;

    let _ = LOCATION.set(format!(
        "worker {} (pid {})",
        &worker_hex[..8],
        std::process::id()
    ));
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

    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
    let executor = Arc::new(Executor {
        blocked: Mutex::new(false),
        tx: jobs_tx,
        rx: jobs_rx,
    });
    let hook = {
        let executor = executor.clone();
        let raylet = raylet.clone();
        let handle = handle.clone();
        move |blocked: bool| {
            if blocked {
                executor.set_blocked(true);
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
                executor.set_blocked(false);
            }
        }
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (cluster, fetch_rx) = Cluster::new(
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
        events_tx,
        Some(Box::new(hook)),
    )?;
    let rt = Arc::new(Runtime {
        address: core_address.into(),
        ids: IdGen::new(&worker_id),
        worker_id,
        node_id: id16(&registered.node_id, "node id")?,
        job_id: registered.job_id,
        namespace: registered.namespace.clone(),
        is_worker: true,
        cluster: Some(cluster),
        ..Default::default()
    });
    runtime::set_current(Some(rt.clone()));
    handle.spawn(submitter::run_submitter(Arc::downgrade(&rt), events_rx));
    handle.spawn(crate::fetch::run_fetcher(Arc::downgrade(&rt), fetch_rx));
    handle.spawn(crate::tables::housekeeping(Arc::downgrade(&rt)));
    handle.spawn(accept_loop(listener, token, executor.clone()));

    // Tasks run on a thread of their own with a deep stack: a task waiting on its children
    // may run them inline, one inside the other (see `run_inline`).
    let tasks = std::thread::Builder::new()
        .name("ray-task".into())
        .stack_size(TASK_STACK_BYTES)
        .spawn(move || {
            let location = LOCATION.get().map(String::as_str).unwrap_or("");
            while let Ok(job) = executor.rx.recv() {
                if job.frame.actor_id.is_empty() {
                    let reply = run_task(&rt, job.frame, location);
                    let _ = job.reply.send(reply);
                } else {
                    dispatch_actor_call(&rt, job, location);
                }
            }
        })
        .map_err(Error::runtime)?;
    let _ = tasks.join();
    Ok(())
}

/// Largest greeting accepted before the token is checked.
const HELLO_MAX: usize = 4096;

async fn accept_loop(listener: tokio::net::UnixListener, token: Arc<str>, executor: Arc<Executor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a task connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let token = token.clone();
        let executor = executor.clone();
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            let mut r = BufReader::with_capacity(64 * 1024, read);
            let mut scratch = Vec::new();
            let hello = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                read_frame::<ray_proto::Hello, _>(&mut r, &mut scratch, HELLO_MAX),
            )
            .await;
            let ok = matches!(&hello, Ok(Ok(Some(h))) if ray_proto::auth::constant_time_eq(h.token.as_bytes(), token.as_bytes()));
            if !ok {
                tracing::warn!("refused a task connection without the session token");
                return;
            }
            let (tx, rx) = mpsc::unbounded_channel::<ray_proto::ReplyFrame>();
            // A write error means the owner went away; its reader sees that too.
            tokio::spawn(crate::frames::write_frames(rx, write));
            let read = read_frames(&mut r, &mut scratch, |frame: ray_proto::TaskFrame| {
                executor.offer(Job {
                    frame,
                    reply: tx.clone(),
                });
                true
            })
            .await;
            if let Err(e) = read {
                tracing::warn!(error = %e, "malformed task frame; closing the connection");
            }
        });
    }
}

/// The byte views of a task's arguments: inline, or read in place from shared memory.
fn arg_slices<'a>(rt: &'a Runtime, args: &'a [Stored]) -> Result<Vec<ArgBytes<'a>>> {
    let cluster = rt.cluster.as_ref().expect("workers always have a cluster");
    args.iter()
        .map(|a| match a {
            Stored::Inline(b) => Ok(ArgBytes::encoded(b)),
            Stored::Plasma { offset, size, raw } => Ok(ArgBytes {
                bytes: cluster.store.plasma_bytes(*offset, *size)?,
                raw: *raw,
            }),
            Stored::Failed(e) => Err((**e).clone()),
        })
        .collect()
}

/// The reply for a finished task or method: large results go to shared memory under the
/// return id; arguments' refs still held make this worker a borrower.
fn finish(
    rt: &Runtime,
    frame_seq: u64,
    return_id: &[u8],
    result: Result<Vec<u8>>,
    decoded: &[crate::ids::ObjectId],
    start: Instant,
) -> ray_proto::ReplyFrame {
    let stored = result_to_stored(rt, return_id, result);
    let borrowed = rt.refs.still_borrowed(decoded);
    ray_proto::ReplyFrame {
        seq: frame_seq,
        value: Some(stored.to_proto()),
        borrowed_ids: borrowed
            .into_iter()
            .map(|id| id.0.to_vec().into())
            .collect(),
        exec_micros: start.elapsed().as_micros() as u64,
        requeue: false,
    }
}

/// A task's outcome as its object: large values go to shared memory under the return id.
fn result_to_stored(rt: &Runtime, return_id: &[u8], result: Result<Vec<u8>>) -> Stored {
    let cluster = rt.cluster.as_ref().expect("workers always have a cluster");
    let stored = result.and_then(|bytes| {
        if bytes.len() > runtime::INLINE_MAX {
            let id = ray_object_store::ObjectId(id16(return_id, "return id")?);
            cluster.store.put_plasma(id, &bytes, 0)
        } else {
            Ok(Stored::Inline(bytes.into()))
        }
    });
    stored.unwrap_or_else(|e| Stored::Failed(Arc::new(e.bounded())))
}

fn run_task(
    rt: &Arc<Runtime>,
    frame: ray_proto::TaskFrame,
    location: &str,
) -> ray_proto::ReplyFrame {
    let start = Instant::now();
    let args: Vec<Stored> = frame.args.into_iter().map(Stored::from_proto).collect();
    let shape = (!frame.shape.is_empty()).then(|| Shape::Wire(frame.shape.clone()));
    let (result, decoded) = collect_deserialized_refs(|| {
        let slices = arg_slices(rt, &args)?;
        CURRENT_TASK.with(|t| t.set(id16(&frame.task_id, "task id").ok()));
        CURRENT_SHAPE.with(|s| s.replace(shape));
        IN_TASK.with(|t| t.set(true));
        let r = crate::registry::execute(&frame.function, &slices, location);
        IN_TASK.with(|t| t.set(false));
        CURRENT_SHAPE.with(|s| s.replace(None));
        CURRENT_TASK.with(|t| t.set(None));
        r
    });
    drop(args);
    finish(rt, frame.seq, &frame.return_id, result, &decoded, start)
}

static LOCATION: OnceLock<String> = OnceLock::new();
static ACTOR_HOST: OnceLock<Arc<ActorHost>> = OnceLock::new();

/// The actor this worker hosts, and how its calls run.
struct ActorHost {
    class: &'static str,
    instance: Arc<dyn ActorInstance>,
    mode: HostMode,
}

enum HostMode {
    /// One call at a time, in arrival order, on the worker's task thread.
    Sequential,
    /// `max_concurrency` threads take calls from this queue.
    Threaded(crossbeam_channel::Sender<Job>),
    /// Calls run as futures on the actor's own single-threaded event loop (as in Ray), at
    /// most `max_concurrency` at once; they start in the order they arrived.
    Async {
        calls:
            mpsc::UnboundedSender<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
        permits: Arc<tokio::sync::Semaphore>,
    },
}

/// Constructs the actor this worker will host (the GCS leased it for this actor alone).
pub(crate) async fn create_actor(spec: ray_proto::ActorSpec) -> Result<()> {
    // The GCS may call as soon as the node manager has our registration, a moment before
    // this process has installed its runtime.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let rt = loop {
        match runtime::current() {
            Ok(rt) => break rt,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    };
    if !rt.is_worker {
        return Err(Error::Runtime("only a worker process hosts actors".into()));
    }
    if ACTOR_HOST.get().is_some() {
        return Err(Error::Runtime("this worker already hosts an actor".into()));
    }
    let entry = crate::registry::lookup_actor_class(&spec.class_name).ok_or_else(|| {
        Error::Runtime(format!(
            "actor class {} is not registered in this binary",
            spec.class_name
        ))
    })?;
    let location = LOCATION.get().cloned().unwrap_or_default();
    let rt2 = rt.clone();
    let args: Vec<Stored> = spec.args.into_iter().map(Stored::from_proto).collect();
    let built = tokio::task::spawn_blocking(move || {
        let slices = arg_slices(&rt2, &args)?;
        crate::registry::run_guarded(entry.name, &location, || {
            (entry.construct)(&mut ArgReader::new(&slices))
        })
    })
    .await
    .map_err(Error::runtime)??;
    let instance: Arc<dyn ActorInstance> = Arc::from(built);
    let n = spec.max_concurrency.max(1) as usize;
    let mode = if entry.is_async {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::runtime)?;
        let (calls, mut incoming) = mpsc::unbounded_channel::<
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        >();
        std::thread::Builder::new()
            .name("ray-actor-loop".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // A current-thread runtime runs spawned tasks first-in first-out.
                    while let Some(call) = incoming.recv().await {
                        tokio::spawn(call);
                    }
                })
            })
            .map_err(Error::runtime)?;
        HostMode::Async {
            calls,
            permits: Arc::new(tokio::sync::Semaphore::new(n)),
        }
    } else if n > 1 {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            let rt = rt.clone();
            std::thread::Builder::new()
                .name(format!("ray-actor-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let host = ACTOR_HOST.get().expect("set before calls arrive");
                        let location = LOCATION.get().map(String::as_str).unwrap_or("");
                        let reply = run_method(&rt, host, job.frame, location);
                        let _ = job.reply.send(reply);
                    }
                })
                .map_err(Error::runtime)?;
        }
        HostMode::Threaded(tx)
    } else {
        HostMode::Sequential
    };
    let _ = ACTOR_HOST.set(Arc::new(ActorHost {
        class: entry.name,
        instance,
        mode,
    }));
    Ok(())
}

fn dispatch_actor_call(rt: &Arc<Runtime>, job: Job, location: &str) {
    let Some(host) = ACTOR_HOST.get() else {
        let e = Error::Runtime("this worker hosts no actor".into());
        let reply = finish(
            rt,
            job.frame.seq,
            &job.frame.return_id,
            Err(e),
            &[],
            Instant::now(),
        );
        let _ = job.reply.send(reply);
        return;
    };
    match &host.mode {
        HostMode::Sequential => {
            let reply = run_method(rt, host, job.frame, location);
            let _ = job.reply.send(reply);
        }
        HostMode::Threaded(tx) => {
            let _ = tx.send(job);
        }
        HostMode::Async { calls, permits } => {
            let start = Instant::now();
            let label = format!("{}.{}", host.class, job.frame.function);
            let args: Vec<Stored> = std::mem::take(&mut job.frame.args.clone())
                .into_iter()
                .map(Stored::from_proto)
                .collect();
            let (call, decoded) = collect_deserialized_refs(|| {
                let slices = arg_slices(rt, &args)?;
                crate::registry::run_guarded(&label, location, || {
                    host.instance
                        .call(&job.frame.function, &mut ArgReader::new(&slices))
                })
            });
            drop(args);
            let rt = rt.clone();
            let permits = permits.clone();
            let location = location.to_string();
            let _ = calls.send(Box::pin(async move {
                let result = match call {
                    Err(e) => Err(e),
                    Ok(MethodCall::Done(r)) => {
                        crate::registry::outcome_to_result(&label, &location, Ok(r))
                    }
                    Ok(MethodCall::Future(f)) => {
                        let _permit = permits.acquire_owned().await;
                        let outcome = crate::registry::CatchUnwind(f).await;
                        crate::registry::outcome_to_result(&label, &location, outcome)
                    }
                };
                let reply = finish(
                    &rt,
                    job.frame.seq,
                    &job.frame.return_id,
                    result,
                    &decoded,
                    start,
                );
                let _ = job.reply.send(reply);
            }));
        }
    }
}

/// Runs one method call on this thread.
fn run_method(
    rt: &Arc<Runtime>,
    host: &ActorHost,
    frame: ray_proto::TaskFrame,
    location: &str,
) -> ray_proto::ReplyFrame {
    let start = Instant::now();
    let label = format!("{}.{}", host.class, frame.function);
    let args: Vec<Stored> = frame.args.into_iter().map(Stored::from_proto).collect();
    let (result, decoded) = collect_deserialized_refs(|| {
        let slices = arg_slices(rt, &args)?;
        let call = crate::registry::run_guarded(&label, location, || {
            host.instance
                .call(&frame.function, &mut ArgReader::new(&slices))
        })?;
        match call {
            MethodCall::Done(r) => crate::registry::outcome_to_result(&label, location, Ok(r)),
            MethodCall::Future(_) => Err(Error::Runtime(
                "an async method on a thread-based actor".into(),
            )),
        }
    });
    drop(args);
    finish(rt, frame.seq, &frame.return_id, result, &decoded, start)
}
