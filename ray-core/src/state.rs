//! `ray::state`: what runs in the cluster, listed from the GCS (Ray's `ray.util.state`):
//! tasks, actors, jobs, nodes, workers and objects, filtered and limited, tasks summarized
//! per function, the tasks' timeline, and why a task or actor has not run ([`explain`]).

pub use ray_state::explain::{ArgWait, NodeWait, TaskBrief};
pub use ray_state::{
    Actor, Explanation, Filter, Job, ListOptions, Listing, Node, Object, Op, StateError, Task,
    TaskState, TaskSummary, TraceEvent, Why, Worker,
};

use crate::error::{Error, Result};
use ray_state::StateClient;

/// A client of the session's GCS (none in sync mode, which has no GCS).
fn client() -> Result<(StateClient, std::sync::Arc<crate::link::Link>)> {
    let rt = crate::current::current()?;
    let link = rt.link().cloned().ok_or_else(|| {
        Error::InvalidArgument("the state API needs a GCS: sync mode has none".into())
    })?;
    let client = StateClient::with_fan_out(link.gcs.clone(), link.connect.clone());
    Ok((client, link))
}

fn state_error(e: StateError) -> Error {
    match e {
        StateError::Rpc(e) => e.into(),
        other => Error::InvalidArgument(other.to_string()),
    }
}

/// Runs one query of the state client on the session's runtime.
fn ask<T: Send + 'static, F>(query: impl FnOnce(StateClient) -> F) -> Result<T>
where
    F: std::future::Future<Output = std::result::Result<T, StateError>> + Send + 'static,
{
    let (client, link) = client()?;
    link.call(query(client))?.map_err(state_error)
}

/// Tasks and actor calls, newest first. Task events reach the GCS about once a second, so a
/// task submitted just now may not be listed yet.
///
/// ```
/// #[ray::remote]
/// fn f() -> u32 {
///     1
/// }
///
/// # fn main() -> ray::Result<()> {
/// ray::init(ray::Config::local().num_cpus(1.0))?;
/// ray::get(&f::remote())?;
/// let opts = ray::state::ListOptions::new().filter("name=f").unwrap();
/// let tasks = ray::state::list_tasks(&opts)?; // f, once its events arrived
/// assert!(tasks.rows.iter().all(|t| t.name == "f"));
/// ray::shutdown();
/// # Ok(()) }
/// ```
pub fn list_tasks(opts: &ListOptions) -> Result<Listing<Task>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_tasks(&opts).await })
}

/// Every task passing the filters, counted per function and state (`ray summary tasks`).
pub fn summarize_tasks(opts: &ListOptions) -> Result<Vec<TaskSummary>> {
    let opts = opts.clone();
    ask(|c| async move { c.summarize_tasks(&opts).await })
}

/// Actors, in the order they were created.
pub fn list_actors(opts: &ListOptions) -> Result<Listing<Actor>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_actors(&opts).await })
}

/// Jobs, running and finished.
pub fn list_jobs(opts: &ListOptions) -> Result<Listing<Job>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_jobs(&opts).await })
}

/// The session's tasks as a Chrome trace (Ray's `ray.timeline`): one process per node, one
/// thread per worker process, a slice per task that ran. Written to `path` as JSON (load it
/// in Perfetto or `chrome://tracing`), and returned.
///
/// ```no_run
/// ray::init(ray::Config::local())?;
/// // ... run tasks ...
/// let events = ray::timeline("trace.json")?;
/// # let _ = events;
/// # Ok::<(), ray::Error>(())
/// ```
pub fn timeline(path: impl AsRef<std::path::Path>) -> Result<Vec<TraceEvent>> {
    let events = ask(|c| async move { c.timeline(&ListOptions::new()).await })?;
    let path = path.as_ref();
    let text = serde_json::to_vec(&events).map_err(Error::runtime)?;
    std::fs::write(path, text).map_err(|e| {
        Error::InvalidArgument(format!("writing the timeline to {}: {e}", path.display()))
    })?;
    Ok(events)
}

/// Every node's worker processes and every running job's driver (Ray's `ray list
/// workers`). Each node is asked within `ray_state::client::FAN_OUT_DEADLINE`; the
/// listing's `unreachable` names those that did not answer.
pub fn list_workers(opts: &ListOptions) -> Result<Listing<Worker>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_workers(&opts).await })
}

/// The objects every driver and worker holds references to, a row per process and object
/// (Ray's `ray list objects`): size, where the value is, the owner, the kind of reference.
/// Every process is asked at once, each within `ray_state::client::FAN_OUT_DEADLINE`.
///
/// ```
/// # fn main() -> ray::Result<()> {
/// ray::init(ray::Config::local().num_cpus(1.0))?;
/// let big = ray::put(&vec![1u8; 1 << 20])?;
/// let objects = ray::state::list_objects(&ray::state::ListOptions::new())?;
/// let mine = objects.rows.iter().find(|o| o.object_id == big.id()).unwrap();
/// assert_eq!(mine.reference_type, "LOCAL_REFERENCE");
/// ray::shutdown();
/// # Ok(()) }
/// ```
pub fn list_objects(opts: &ListOptions) -> Result<Listing<Object>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_objects(&opts).await })
}

/// Why the task or actor `id` (hex, as listed) has not run, or that it has ("why is this
/// pending", which Ray does not have): waiting for its arguments (and the tasks that make
/// them), for resources in use (which, on which nodes, held by which tasks), infeasible
/// (which resource no node has enough of), for a worker process to start, queued at its
/// worker; an actor not placed yet (why), restarting or dead. Its owner is asked what it
/// holds the task for, within `ray_state::client::FAN_OUT_DEADLINE`. Task events reach the
/// GCS about once a second: a task submitted just now may not be known yet.
///
/// ```no_run
/// # fn main() -> ray::Result<()> {
/// #[ray::remote]
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_millis(ms));
///     ms
/// }
/// ray::init(ray::Config::local().num_cpus(1.0))?;
/// let first = nap::remote(1000);
/// let second = nap::remote(0); // waits for the CPU the first holds
/// std::thread::sleep(std::time::Duration::from_millis(1500)); // its events reach the GCS
/// let why = ray::state::explain(&second.id())?;
/// println!("{why}"); // "waiting for resources: it needs 1 CPU ... held by task ... (nap, ...)"
/// ray::get(&first)?;
/// ray::shutdown();
/// # Ok(()) }
/// ```
pub fn explain(id: &str) -> Result<Explanation> {
    let id = id.to_string();
    ask(|c| async move { c.explain(&id).await })
}

/// Nodes, alive and dead.
pub fn list_nodes(opts: &ListOptions) -> Result<Listing<Node>> {
    let opts = opts.clone();
    ask(|c| async move { c.list_nodes(&opts).await })
}
