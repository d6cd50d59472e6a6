//! The state API (Ray's `ray.util.state`): what runs in the cluster, as rows of tasks,
//! actors, jobs, nodes, workers and objects that a program, `rayrs list` and the dashboard
//! read alike.
//!
//! Sans-IO rows, filters and summaries ([`rows`], [`filter`], [`summary`]) that the GCS
//! applies where the rows are, the timeline ([`timeline`]: task rows as a Chrome trace),
//! "why pending" ([`explain`]), and [`StateClient`], which gathers them from the GCS, the
//! nodes and the processes.

pub mod client;
pub mod events;
pub mod explain;
pub mod filter;
pub mod rows;
pub mod summary;
pub mod timeline;

pub use client::{ListOptions, Listing, StateClient};
pub use explain::{Explanation, Why};
pub use filter::{Filter, Op};
pub use rows::{Actor, Job, Node, Object, Task, TaskState, Worker};
pub use summary::{summarize_tasks, TaskSummary};
pub use timeline::TraceEvent;

/// What a state query can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A filter that is not `key=value` or `key!=value`.
    #[error("bad filter: {0}")]
    BadFilter(String),
    /// Task events that do not decode.
    #[error("malformed task events: {0}")]
    BadEvents(String),
    /// A filter on a field the rows do not have.
    #[error("no field {key:?} to filter on (known: {known})")]
    UnknownKey { key: String, known: String },
    /// Workers and objects are asked of every node and process: this client cannot reach
    /// them (made with `StateClient::new`).
    #[error("listing workers or objects needs a client that reaches every node (StateClient::with_fan_out)")]
    NoFanOut,
    /// No task or actor has this id (or its events were dropped).
    #[error("no task or actor {0} is known (its events may have been dropped)")]
    NotFound(String),
    /// The GCS could not be asked, or refused.
    #[error(transparent)]
    Rpc(#[from] ray_common::rpc::RpcError),
}
