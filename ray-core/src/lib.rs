//! A Rust-native runtime with Ray's programming model: remote functions run in parallel on
//! worker processes, their results are objects you `get`, `wait` for, or pass on by reference.
//!
//! ```
//! #[ray::remote]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! fn main() {
//!     ray::init(ray::Config::sync()).unwrap();        // Config::local() for worker processes
//!     let a: ray::ObjectRef<i64> = add::remote(1, 2);  // returns at once
//!     let b = add::remote(&a, 10);                     // a ref is resolved before the task runs
//!     assert_eq!(ray::get(&b).unwrap(), 13);
//!     assert_eq!(add(2, 2), 4);                        // still an ordinary function
//!     ray::shutdown();
//! }
//! ```
//!
//! Remote functions and actors may be declared anywhere, even inside a function (the macro
//! adds a type of the function's name, which carries `remote` and `options`).
//!
//! Processes: in local mode `init` embeds a GCS and a node manager (with the node's
//! shared-memory object store); the node manager starts worker processes, which are this same
//! binary re-executed (they find functions in a link-time registry, by name). See the
//! repository's ARCHITECTURE.md.

extern crate self as ray;

// The facade: the public API, and the process-global state (`current`, the session, the
// worker-mode constructor in `worker`, the link-time registry).
mod actor_handle;
mod actor_pool;
mod current;
mod generator;
mod head;
mod object_ref;
mod placement_group;
mod queue;
pub mod state;
pub mod util;
mod worker;

// The core worker: modules layered one way, without a circle (ARCHITECTURE.md lists the
// layers; tests/tidy.rs checks the import graph).
mod args;
mod boot;
mod borrowers;
mod cancel;
mod codec;
mod config;
mod core_worker;
mod data_plane;
mod error;
mod executor;
mod fetch;
mod frames;
mod group;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod harness_tests;
mod ids;
mod link;
mod logging;
mod memory_store;
mod options;
mod ownership;
mod placement;
mod reference;
mod registry;
mod service;
mod spin;
mod store_provider;
mod submitter;
mod tables;
mod task_context;
mod task_events;
mod task_manager;
mod worker_output;

pub use actor_handle::{get_actor, kill, ActorClass, ActorHandle};
pub use bytemuck;
pub use config::{Config, Mode, RuntimeEnv};
pub use error::{Error, ErrorValue, Result};
pub use generator::{ObjectRefGenerator, ObjectRefStream};
pub use object_ref::{AnyRef, Arg, ObjectRef, Waitable};
pub use options::{ActorOptions, SchedulingStrategy, TaskOptions};
pub use ray_macros::{actor, main, method, remote, worker_setup};
pub use state::timeline;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

static SESSION: Mutex<Option<head::Session>> = Mutex::new(None);

/// Starts the runtime in this process (a driver). A second call fails with
/// [`Error::AlreadyInitialized`] unless the config says to ignore it.
///
/// [`Config::local`] runs worker processes on this machine (Ray's `ray.init()`),
/// [`Config::sync`] runs every task in the calling thread (Ray's `local_mode=True`),
/// [`Config::cluster`] attaches to a running cluster, and [`Config::from_env`] picks one from
/// `RAY_ADDRESS`. Worker processes are this same binary started again: they never run
/// `main` (see [`macro@main`]).
///
/// ```
/// ray::init(ray::Config::sync()).unwrap();
/// assert!(ray::is_initialized());
/// assert!(matches!(ray::init(ray::Config::sync()), Err(ray::Error::AlreadyInitialized)));
/// ray::init(ray::Config::sync().ignore_reinit_error(true)).unwrap();
/// ray::shutdown();
/// assert!(!ray::is_initialized());
/// ```
pub fn init(config: Config) -> Result<()> {
    let mut session = SESSION.lock();
    if session.is_some() || current::current().is_ok() {
        return if config.ignore_reinit_error {
            Ok(())
        } else {
            Err(Error::AlreadyInitialized)
        };
    }
    // On a thread of its own: starting blocks on the session's runtime, which must not
    // happen on a thread of another runtime (an async driver's).
    let s = std::thread::scope(|scope| scope.spawn(|| head::start(&config)).join())
        .map_err(|_| Error::Runtime("starting the session panicked".into()))??;
    if s.rt.link().is_some() {
        head::shut_down_on_signals();
    }
    current::set_current(Some(s.rt.clone()));
    *session = Some(s);
    Ok(())
}

/// Stops every worker process, the embedded head and the store (removing its shared-memory
/// file). Refs still held fail with [`Error::NotInitialized`]. A later `init` starts afresh.
///
/// ```
/// ray::init(ray::Config::sync()).unwrap();
/// let r = ray::put(&1u8).unwrap();
/// ray::shutdown();
/// assert_eq!(ray::get(&r), Err(ray::Error::NotInitialized));
/// ```
pub fn shutdown() {
    let session = SESSION.lock().take();
    if let Some(s) = session {
        // See `init`: stopping blocks on the session's runtime.
        let _ = std::thread::scope(|scope| scope.spawn(|| s.stop()).join());
    }
}

/// True between `init` and `shutdown` (and always in a worker process).
///
/// ```
/// assert!(!ray::is_initialized());
/// ```
pub fn is_initialized() -> bool {
    current::current().is_ok()
}

/// Blocks until the object is ready and returns its value, or the error of the task that
/// made it.
///
/// ```
/// #[ray::remote]
/// fn double(x: u32) -> Result<u32, String> {
///     x.checked_mul(2).ok_or_else(|| "overflow".to_string())
/// }
/// ray::init(ray::Config::sync()).unwrap();
/// assert_eq!(ray::get(&double::remote(21)), Ok(42));
/// match ray::get(&double::remote(u32::MAX)) {
///     Err(ray::Error::Task { message, .. }) => assert_eq!(message, "overflow"),
///     other => panic!("{other:?}"),
/// }
/// ray::shutdown();
/// ```
pub fn get<T: DeserializeOwned>(r: &ObjectRef<T>) -> Result<T> {
    let rt = current::current()?;
    let stored = rt.get_stored(&r.inner, None)?;
    rt.decode(&r.inner, &stored)
}

/// [`get`] that gives up after `timeout` with [`Error::GetTimeout`]. A zero timeout checks
/// once and returns (unlike Ray, where `timeout=0` blocks).
///
/// ```
/// # ray::init(ray::Config::sync()).unwrap();
/// let r = ray::put(&"ready".to_string()).unwrap();
/// assert_eq!(ray::get_timeout(&r, std::time::Duration::ZERO).unwrap(), "ready");
/// # ray::shutdown();
/// ```
pub fn get_timeout<T: DeserializeOwned>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    let rt = current::current()?;
    let stored = rt.get_stored(&r.inner, Some(timeout))?;
    rt.decode(&r.inner, &stored)
}

/// The values of all `refs`, in order. Fails with the first error met.
///
/// ```
/// #[ray::remote]
/// fn square(x: u64) -> u64 { x * x }
/// ray::init(ray::Config::sync()).unwrap();
/// let refs: Vec<_> = (1..=3).map(square::remote).collect();
/// assert_eq!(ray::get_all(&refs).unwrap(), vec![1, 4, 9]);
/// ray::shutdown();
/// ```
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    let rt = current::current()?;
    let inners: Vec<&ownership::RefInner> = refs.iter().map(|r| &*r.inner).collect();
    rt.wait_ready(&inners, inners.len(), None)?;
    refs.iter()
        .map(|r| {
            rt.get_stored(&r.inner, None)
                .and_then(|s| rt.decode(&r.inner, &s))
        })
        .collect()
}

/// Stores `value` once and returns a ref to it. Objects above 100 KiB go to the node's
/// shared-memory store; if it is full even after freeing unreferenced objects, this fails
/// with [`Error::ObjectStoreFull`]. Pass the ref to many tasks rather than the value: it is
/// stored once. For bulk numeric data, [`put_slice`] skips encoding.
///
/// ```
/// #[ray::remote]
/// fn total(v: Vec<u64>) -> u64 { v.iter().sum() }
/// ray::init(ray::Config::sync()).unwrap();
/// let data = ray::put(&(1..=100).collect::<Vec<u64>>()).unwrap();
/// assert_eq!(ray::get(&total::remote(data.clone())).unwrap(), 5050);
/// ray::shutdown();
/// ```
pub fn put<T: Serialize>(value: &T) -> Result<ObjectRef<T>> {
    current::current()?.put(value).map(ObjectRef::from_inner)
}

/// `(ready, not_ready)` from [`wait`].
pub type WaitResult<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Stores a plain array (numbers, or `bytemuck::Pod` structs) as raw bytes: one copy into
/// the node's shared memory when it is large, and no encoding. Read it back with [`get`] (a
/// copy) or [`get_slice`] (in place, no copy at all on the same node).
///
/// ```
/// ray::init(ray::Config::sync()).unwrap();
/// let r = ray::put_slice(&[1.0f64, 2.0, 3.0]).unwrap();
/// assert_eq!(ray::get(&r).unwrap(), vec![1.0, 2.0, 3.0]);
/// assert_eq!(&*ray::get_slice(&r).unwrap(), &[1.0, 2.0, 3.0]);
/// ray::shutdown();
/// ```
pub fn put_slice<T: bytemuck::Pod + Serialize>(data: &[T]) -> Result<ObjectRef<Vec<T>>> {
    current::current()?
        .put_slice(data)
        .map(ObjectRef::from_inner)
}

/// A read-only view of a plain array object: in place in shared memory when the object was
/// stored by [`put_slice`] on this node (no copy), otherwise a decoded copy. Keeps the object
/// alive while it lives.
pub struct SliceView<T: bytemuck::Pod> {
    inner: ViewInner<T>,
}

enum ViewInner<T: bytemuck::Pod> {
    Mapped {
        link: Arc<link::Link>,
        id: ids::ObjectId,
        node: ray_common::NodeId,
        offset: u64,
        size: u64,
        _keep: ObjectRef<Vec<T>>,
    },
    Owned(Vec<T>),
}

impl<T: bytemuck::Pod> SliceView<T> {
    /// True if the view reads shared memory in place.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.inner, ViewInner::Mapped { .. })
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for SliceView<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.inner {
            ViewInner::Owned(v) => v,
            ViewInner::Mapped {
                link,
                id,
                node,
                offset,
                size,
                ..
            } => {
                // Checked when the view was made: in bounds, aligned, a whole number of T
                // (and another node's object pulled here, pinned while the ref lives).
                let bytes = link
                    .store
                    .plasma_bytes(*id, *node, *offset, *size, false)
                    .unwrap_or(&[]);
                bytemuck::try_cast_slice(bytes).unwrap_or(&[])
            }
        }
    }
}

/// The elements of a plain array object, read in place when possible (see [`SliceView`]).
pub fn get_slice<T: bytemuck::Pod + DeserializeOwned>(
    r: &ObjectRef<Vec<T>>,
) -> Result<SliceView<T>> {
    let rt = current::current()?;
    let stored = rt.get_stored(&r.inner, None)?;
    if let (
        memory_store::Stored::Plasma {
            id,
            node,
            offset,
            size,
            raw,
        },
        Some(c),
    ) = (&stored, rt.link())
    {
        if *raw as usize == std::mem::size_of::<T>() {
            let bytes = c.store.plasma_bytes(*id, *node, *offset, *size, false)?;
            if bytemuck::try_cast_slice::<u8, T>(bytes).is_ok() {
                return Ok(SliceView {
                    inner: ViewInner::Mapped {
                        link: c.clone(),
                        id: *id,
                        node: *node,
                        offset: *offset,
                        size: *size,
                        _keep: r.clone(),
                    },
                });
            }
        }
    }
    Ok(SliceView {
        inner: ViewInner::Owned(rt.decode(&r.inner, &stored)?),
    })
}

/// Waits until `num_returns` of `refs` are ready or `timeout` passes; returns
/// `(ready, not_ready)`, each in input order. As in Ray, duplicate refs and a `num_returns`
/// of zero or above `refs.len()` are [`Error::InvalidArgument`]; an empty list returns two
/// empty lists.
///
/// ```
/// # ray::init(ray::Config::sync()).unwrap();
/// let refs: Vec<_> = (0..4u8).map(|i| ray::put(&i).unwrap()).collect();
/// let (ready, rest) = ray::wait(&refs, 2, Some(std::time::Duration::from_secs(1))).unwrap();
/// assert_eq!((ready.len(), rest.len()), (2, 2));
/// # ray::shutdown();
/// ```
///
/// Refs of different types wait together as [`AnyRef`]s (`r.any()`).
pub fn wait<R: Waitable>(
    refs: &[R],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<R>, Vec<R>)> {
    if refs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if num_returns == 0 || num_returns > refs.len() {
        return Err(Error::InvalidArgument(format!(
            "num_returns must be between 1 and the number of refs ({}), got {num_returns}",
            refs.len()
        )));
    }
    let anys: Vec<AnyRef> = refs.iter().map(Waitable::to_any).collect();
    let mut seen = HashSet::with_capacity(refs.len());
    if let Some(dup) = anys.iter().find(|r| !seen.insert(r.inner.id)) {
        return Err(Error::InvalidArgument(format!(
            "wait got the same ref twice: {}",
            dup.id()
        )));
    }
    let rt = current::current()?;
    let inners: Vec<&ownership::RefInner> = anys.iter().map(|r| &*r.inner).collect();
    let ready = rt.wait_ready(&inners, num_returns, timeout)?;
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for (r, is_ready) in refs.iter().zip(ready) {
        if is_ready && yes.len() < num_returns {
            yes.push(r.clone());
        } else {
            no.push(r.clone());
        }
    }
    Ok((yes, no))
}

/// One node of the cluster, as [`nodes`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// 32 hex digits.
    pub node_id: String,
    /// Whether the node is alive.
    pub alive: bool,
    /// Its node manager's endpoint.
    pub address: String,
    /// Its total resources.
    pub resources: BTreeMap<String, f64>,
}

struct NodeView {
    info: NodeInfo,
    available: BTreeMap<String, f64>,
    num_workers: u32,
    store_used: u64,
}

fn node_store_used() -> Result<u64> {
    Ok(node_views()?.iter().map(|n| n.store_used).sum())
}

fn node_views() -> Result<Vec<NodeView>> {
    let rt = current::current()?;
    let Some(c) = rt.link() else {
        let total = rt.node_total.to_map();
        return Ok(vec![NodeView {
            info: NodeInfo {
                node_id: rt.me().node_id.to_hex(),
                alive: true,
                address: "sync".into(),
                resources: total.clone(),
            },
            available: total,
            num_workers: 0,
            store_used: 0,
        }]);
    };
    let gcs = c.gcs.clone();
    let connect = c.connect.clone();
    let nodes = c.call(async move {
        let nodes = gcs.get_all_nodes(ray_proto::Empty {}).await?.nodes;
        let map = |r: Option<ray_proto::Resources>| -> BTreeMap<String, f64> {
            r.map(|r| r.amounts.into_iter().collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for n in nodes {
            // A live node answers for itself; a dead one (or one that cannot answer now) is
            // shown as the GCS last saw it.
            let live = match n.alive {
                true => match connect.node_manager(&n.node_manager_address) {
                    Ok(nm) => nm.get_node_resources(ray_proto::Empty {}).await.ok(),
                    Err(_) => None,
                },
                false => None,
            };
            let (total, available, num_workers, store_used) = match live {
                Some(r) => (r.total, r.available, r.num_workers, r.store_used),
                None => (n.total, n.available, 0, 0),
            };
            out.push(NodeView {
                info: NodeInfo {
                    node_id: ray_common::ids::hex(&n.node_id),
                    alive: n.alive,
                    address: n.node_manager_address,
                    resources: map(total),
                },
                available: map(available),
                num_workers,
                store_used,
            });
        }
        Ok::<_, Error>(out)
    })??;
    Ok(nodes)
}

fn sum(maps: impl Iterator<Item = BTreeMap<String, f64>>) -> BTreeMap<String, f64> {
    let mut total = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            *total.entry(k).or_insert(0.0) += v;
        }
    }
    total
}

/// Total resources of all alive nodes, by name (`CPU`, `GPU`, `memory`, custom...).
pub fn cluster_resources() -> Result<BTreeMap<String, f64>> {
    Ok(sum(node_views()?
        .into_iter()
        .filter(|n| n.info.alive)
        .map(|n| n.info.resources)))
}

/// Resources free right now on all alive nodes.
pub fn available_resources() -> Result<BTreeMap<String, f64>> {
    Ok(sum(node_views()?
        .into_iter()
        .filter(|n| n.info.alive)
        .map(|n| n.available)))
}

/// The cluster's nodes.
pub fn nodes() -> Result<Vec<NodeInfo>> {
    Ok(node_views()?.into_iter().map(|n| n.info).collect())
}

/// The local session's dashboard, as a URL that carries the session's token in its
/// fragment (the page keeps it for the tab; the fragment never reaches a server): open it in
/// a browser. `None` without a session, in sync mode, with
/// [`Config::dashboard_port`]`(0)`, and for a driver joining a cluster (its head serves the
/// dashboard: `rayrs start --head` prints where).
///
/// ```no_run
/// ray::init(ray::Config::local())?;
/// if let Some(url) = ray::dashboard_url() {
///     eprintln!("dashboard: {url}");
/// }
/// # Ok::<(), ray::Error>(())
/// ```
pub fn dashboard_url() -> Option<String> {
    SESSION.lock().as_ref()?.dashboard_url.clone()
}

/// Where the local session's workers write their output, a file per process and stream
/// (`worker-<worker id>-<pid>.out` and `.err`); `None` in sync mode, in a driver joining a
/// cluster (each node keeps its workers' files under its temp dir's `logs/`), or when no
/// directory could be made. What they print also reaches the driver's terminal unless
/// [`Config::log_to_driver`] is off.
///
/// ```no_run
/// ray::init(ray::Config::local())?;
/// if let Some(dir) = ray::logs_dir() {
///     eprintln!("workers' output: {}", dir.display());
/// }
/// # Ok::<(), ray::Error>(())
/// ```
pub fn logs_dir() -> Option<std::path::PathBuf> {
    SESSION.lock().as_ref()?.logs_dir.clone()
}

/// Who and where the caller is (Ray's `get_runtime_context()`).
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeContext {
    /// The job.
    pub job_id: u32,
    /// The task running on this thread (hex), or `None` in a driver.
    pub task_id: Option<String>,
    /// The node (hex).
    pub node_id: String,
    /// This process (hex).
    pub worker_id: String,
    /// True in a worker process.
    pub is_worker: bool,
    /// The job's namespace.
    pub namespace: String,
    /// The actor this worker hosts (hex), or `None` outside an actor.
    pub actor_id: Option<String>,
    /// True in an actor that was restarted after its process died (Ray's
    /// `was_current_actor_reconstructed`).
    pub was_current_actor_reconstructed: bool,
}

/// The caller's runtime context.
pub fn get_runtime_context() -> Result<RuntimeContext> {
    let rt = current::current()?;
    let actor = task_context::current_actor().or_else(|| rt.own.hosted_actor.get().copied());
    Ok(RuntimeContext {
        job_id: rt.me().job_id,
        task_id: task_context::current_task().map(|t| t.to_hex()),
        node_id: rt.me().node_id.to_hex(),
        worker_id: rt.me().worker_id.to_hex(),
        is_worker: rt.me().is_worker,
        namespace: rt.me().namespace.clone(),
        actor_id: actor.map(|(id, _)| id.to_hex()),
        was_current_actor_reconstructed: actor.is_some_and(|(_, n)| n > 0),
    })
}

/// The values of `refs` as they become ready, each with its index in `refs` (an async
/// driver's `ray.wait` loop, or `asyncio.as_completed`): a stream that ends after the last.
///
/// ```
/// use futures_util::StreamExt;
///
/// #[ray::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// # #[tokio::main] async fn main() {
/// ray::init(ray::Config::sync()).unwrap();
/// let refs: Vec<_> = (1..=3).map(square::remote).collect();
/// let mut done = ray::as_completed(refs);
/// let mut total = 0;
/// while let Some((_index, value)) = done.next().await {
///     total += value.unwrap();
/// }
/// assert_eq!(total, 14);
/// ray::shutdown();
/// # }
/// ```
pub fn as_completed<T>(
    refs: Vec<ObjectRef<T>>,
) -> impl tokio_stream::Stream<Item = (usize, Result<T>)> + Send + Unpin
where
    T: DeserializeOwned + Send + 'static,
{
    refs.into_iter()
        .enumerate()
        .map(|(i, r)| async move { (i, r.await) })
        .map(Box::pin)
        .collect::<futures_util::stream::FuturesUnordered<_>>()
}

/// What an actor's own methods call (Ray's `ray.actor`).
pub mod actor {
    /// Ends the actor whose method calls this, for good, once that method returns (Ray's
    /// `ray.actor.exit_actor()`): its reply is sent, then the actor ends (its process with it,
    /// unless it shares one: [`crate::ActorOptions::share_process`]) and the
    /// actor is not restarted; calls made after fail with [`crate::Error::ActorDied`].
    /// Unlike Ray's, it does not unwind: the method goes on to return its value. Outside an
    /// actor's method it is [`crate::Error::InvalidArgument`].
    ///
    /// ```no_run
    /// struct Session;
    ///
    /// #[ray::actor]
    /// impl Session {
    ///     pub fn new() -> Self { Session }
    ///     pub fn close(&self) -> String {
    ///         ray::actor::exit_actor().unwrap();
    ///         "closed".into()
    ///     }
    /// }
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local())?;
    /// let s = Session::remote();
    /// assert_eq!(ray::get(&s.close())?, "closed");
    /// # Ok(()) }
    /// ```
    pub fn exit_actor() -> crate::Result<()> {
        let rt = crate::current::current()?;
        let actor =
            crate::task_context::current_actor().or_else(|| rt.own.hosted_actor.get().copied());
        let Some((actor, _)) = actor else {
            return Err(crate::Error::InvalidArgument(
                "exit_actor must be called from an actor's method".into(),
            ));
        };
        let mut exiting = rt.own.exiting.lock();
        if !exiting.contains(&actor) {
            exiting.push(actor);
        }
        rt.own
            .exit_requested
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// How [`cancel`] stops a task. The default is Ray's: `force: false, recursive: true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelOptions {
    /// Kill the worker process running the task (and start another) rather than ask the
    /// task to stop at its next ray call. Refused for actor calls: it would kill the actor.
    pub force: bool,
    /// Cancel the tasks the task submitted too.
    pub recursive: bool,
}

impl Default for CancelOptions {
    fn default() -> Self {
        CancelOptions {
            force: false,
            recursive: true,
        }
    }
}

/// Cancels the task (or actor call) that makes `r`, as Ray's `ray.cancel`: a task not yet
/// running is not run; a running one fails at its next `ray` call (`get`, `wait`, `put`, a
/// submission), or with `force` its worker process is killed. `get` then fails with
/// [`Error::TaskCancelled`] (a task that finished first keeps its value). Only the process
/// that submitted the task can cancel it; a finished task is left as it is. An actor call
/// can be cancelled before it starts; a running one is not interrupted.
///
/// ```no_run
/// #[ray::remote]
/// fn forever() -> u8 {
///     loop {
///         // Each ray call is a point where a cancel takes effect.
///         ray::wait(&[ray::put(&0u8).unwrap()], 1, None).unwrap();
///     }
/// }
/// # fn main() -> ray::Result<()> {
/// # ray::init(ray::Config::local())?;
/// let r = forever::remote();
/// ray::cancel(&r, ray::CancelOptions::default())?;
/// assert!(matches!(ray::get(&r), Err(ray::Error::TaskCancelled { .. })));
/// # Ok(()) }
/// ```
pub fn cancel<T>(r: &ObjectRef<T>, options: CancelOptions) -> Result<()> {
    current::current()?.cancel(&r.inner, options.force, options.recursive)
}

/// The ids of the GPUs the task or actor running in this worker holds, as its
/// `CUDA_VISIBLE_DEVICES` names them (Ray's `ray.get_gpu_ids()`); empty in a driver, in sync
/// mode, and in a worker holding none. A task asking for a fraction of a GPU gets the id of
/// the device it shares.
///
/// ```no_run
/// #[ray::remote(num_gpus = 1.0)]
/// fn train() -> Vec<String> {
///     ray::get_gpu_ids() // e.g. ["0"]: the same as CUDA_VISIBLE_DEVICES
/// }
/// # fn main() -> ray::Result<()> {
/// ray::init(ray::Config::local().num_gpus(2.0))?; // two fake GPUs, ids 0 and 1
/// assert_eq!(ray::get(&train::remote())?.len(), 1);
/// # Ok(()) }
/// ```
pub fn get_gpu_ids() -> Vec<String> {
    let in_worker = current::current().is_ok_and(|rt| rt.me().is_worker);
    match std::env::var(ray_raylet::gpus::GPU_IDS_VAR) {
        Ok(ids) if in_worker => ray_raylet::gpus::parse_visible(&ids).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// What `#[ray::remote]` expands to calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor_handle::{
        call_actor, create_actor, try_create_actor, ActorClient, ActorCore,
    };
    pub use crate::args::ArgSpec;
    pub use crate::object_ref::arg;
    pub use crate::registry::{
        encode_return, join_returns, ArgReader, RemoteFunction, TaskFailure, REMOTE_FUNCTIONS,
    };
    pub use crate::registry::{ActorClassEntry, ActorInstance, MethodCall, ACTOR_CLASSES};
    pub use crate::registry::{WorkerSetup, WORKER_SETUP};
    pub use linkme;
    pub use tokio;

    /// Waits until `condition` holds, checking every few milliseconds; fails the test after
    /// `within`. The one polling helper of the workspace's tests: they wait on events, never
    /// for fixed times.
    pub fn eventually(
        within: std::time::Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = std::time::Instant::now() + within;
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "not within {within:?}: {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Objects this process holds values for, and refs it tracks: for tests of reference
    /// counting (Ray shows the same through `ray memory`).
    pub fn object_counts() -> crate::Result<(usize, usize)> {
        let rt = crate::current::current()?;
        Ok((rt.own.store.len(), rt.own.refs.len()))
    }

    /// Bytes used in this node's shared-memory store, as its node manager counts them.
    pub fn store_used_bytes() -> crate::Result<u64> {
        crate::node_store_used()
    }

    /// Submits `function` with encoded `args`.
    pub fn submit<R>(
        function: &'static str,
        opts: &crate::TaskOptions,
        args: Vec<ArgSpec>,
    ) -> crate::ObjectRef<R> {
        if let Some(e) = &opts.error {
            return crate::ObjectRef::failed(e.clone());
        }
        match crate::current::current() {
            Ok(rt) => crate::ObjectRef::from_inner(rt.submit(function, opts, args)),
            Err(e) => crate::ObjectRef::failed(e),
        }
    }

    /// Submits a call of a streaming remote function: its items' refs come on the
    /// generator as the worker makes them.
    pub fn submit_streaming<T>(
        function: &'static str,
        opts: &crate::TaskOptions,
        args: Vec<ArgSpec>,
    ) -> crate::ObjectRefGenerator<T> {
        if let Some(e) = &opts.error {
            return crate::ObjectRefGenerator::failed(e.clone());
        }
        match crate::current::current() {
            Ok(rt) => {
                let mut opts = opts.clone();
                opts.streaming = true;
                let end = rt.submit(function, &opts, args);
                crate::ObjectRefGenerator::new(rt, end)
            }
            Err(e) => crate::ObjectRefGenerator::failed(e),
        }
    }

    /// Sends one item of the streaming task running on this thread to its caller (called by
    /// generated code for each item its function's iterator gives).
    pub fn yield_item<T: serde::Serialize>(item: &T) -> Result<(), TaskFailure> {
        let bytes =
            crate::codec::encode(item).map_err(|e| TaskFailure::BadReturn(e.to_string()))?;
        crate::task_context::emit_item(bytes).map_err(TaskFailure::Returned)
    }

    /// The refs of one call's returns, taken in order by generated code.
    pub struct Returns {
        refs: std::vec::IntoIter<std::sync::Arc<crate::ownership::RefInner>>,
        error: Option<crate::Error>,
    }

    impl Returns {
        /// The refs of a call made: its first return's, then the others'.
        fn of(
            (first, mut more): (
                std::sync::Arc<crate::ownership::RefInner>,
                Vec<std::sync::Arc<crate::ownership::RefInner>>,
            ),
        ) -> Self {
            more.insert(0, first);
            Returns {
                refs: more.into_iter(),
                error: None,
            }
        }

        /// A call that could not be made: every return fails with `error`.
        fn failed(error: crate::Error) -> Self {
            Returns {
                refs: Vec::new().into_iter(),
                error: Some(error),
            }
        }

        /// The next return's ref, as type `T`.
        #[allow(clippy::should_implement_trait)]
        pub fn next<T>(&mut self) -> crate::ObjectRef<T> {
            match (&self.error, self.refs.next()) {
                (None, Some(inner)) => crate::ObjectRef::from_inner(inner),
                (Some(e), _) => crate::ObjectRef::failed(e.clone()),
                (None, None) => crate::ObjectRef::failed(crate::Error::Runtime(
                    "more returns taken than the task makes".into(),
                )),
            }
        }
    }

    /// Calls actor method `method`, which makes `num_returns` objects (and is sent again,
    /// within the actor's `max_task_retries`, if it fails and `retry_exceptions`).
    pub fn call_actor_returns(
        core: &crate::__private::ActorCore,
        method: &'static str,
        args: Vec<ArgSpec>,
        num_returns: u32,
        retry_exceptions: bool,
    ) -> Returns {
        if let Some(e) = &core.failed {
            return Returns::failed(e.clone());
        }
        match crate::current::current() {
            Ok(cw) => Returns::of(cw.call_actor_returns(
                core,
                method,
                args,
                num_returns,
                retry_exceptions,
                false,
            )),
            Err(e) => Returns::failed(e),
        }
    }

    /// Calls a generator method (one that returns `impl Iterator<Item = T>`): its items'
    /// refs as the actor makes them.
    pub fn call_actor_streaming<T>(
        core: &crate::__private::ActorCore,
        method: &'static str,
        args: Vec<ArgSpec>,
    ) -> crate::ObjectRefGenerator<T> {
        if let Some(e) = &core.failed {
            return crate::ObjectRefGenerator::failed(e.clone());
        }
        match crate::current::current() {
            Ok(cw) => {
                let (end, _) = cw.call_actor_returns(core, method, args, 1, false, true);
                crate::ObjectRefGenerator::new(cw, end)
            }
            Err(e) => crate::ObjectRefGenerator::failed(e),
        }
    }

    /// Submits `function`, which makes `num_returns` objects.
    pub fn submit_returns(
        function: &'static str,
        opts: &crate::TaskOptions,
        args: Vec<ArgSpec>,
        num_returns: u32,
    ) -> Returns {
        if let Some(e) = &opts.error {
            return Returns::failed(e.clone());
        }
        match crate::current::current() {
            Ok(rt) => Returns::of(rt.submit_returns(function, opts, args, num_returns)),
            Err(e) => Returns::failed(e),
        }
    }

    /// What `#[ray::main]` holds while the body runs: the session, shut down when dropped
    /// (also when the body panics).
    pub struct MainSession(());

    impl Drop for MainSession {
        fn drop(&mut self) {
            crate::shutdown();
        }
    }

    /// Starts the session of a `#[ray::main]` program.
    pub fn main_init(config: crate::Config) -> crate::Result<MainSession> {
        crate::init(config)?;
        Ok(MainSession(()))
    }

    /// A `#[ray::main]` returning nothing could not start its session: says why, exits 1.
    pub fn main_init_failed(e: crate::Error) -> ! {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("error: ray::init failed: {e}");
        }
        std::process::exit(1)
    }

    /// Runs an `async fn main`'s body on a multi-threaded tokio runtime made for it.
    pub fn block_on_main<T, F: std::future::Future<Output = T>>(body: F) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime for main")
            .block_on(body)
    }

    /// A task's `Err(e)`, for generated code: `(&&ErrorBox(e)).into_failure()` with both
    /// traits below in scope keeps the value as well as its message when its type can be
    /// encoded (method lookup picks [`KeepValue`] then: "autoref specialization"), and only
    /// its message otherwise ([`MessageOnly`]).
    pub struct ErrorBox<E>(pub E);

    /// See [`ErrorBox`].
    pub trait KeepValue {
        /// The task's failure, its value kept.
        fn into_failure(self) -> TaskFailure;
    }

    impl<E: std::fmt::Display + serde::Serialize> KeepValue for &&ErrorBox<E> {
        fn into_failure(self) -> TaskFailure {
            let message = self.0.to_string();
            match crate::error::ErrorValue::of(&self.0) {
                Some(value) => TaskFailure::ReturnedValue(message, value),
                None => TaskFailure::Returned(message),
            }
        }
    }

    /// See [`ErrorBox`].
    pub trait MessageOnly {
        /// The task's failure: its message.
        fn into_failure(self) -> TaskFailure;
    }

    impl<E: std::fmt::Display> MessageOnly for &ErrorBox<E> {
        fn into_failure(self) -> TaskFailure {
            TaskFailure::Returned(self.0.to_string())
        }
    }
}
