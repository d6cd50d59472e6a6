//! The node manager ("raylet"): one per machine.
//!
//! It owns the node's shared-memory object store, its worker pool (workers of any number of
//! jobs, started through a [`WorkerLauncher`]) and its resource accounting, and leases
//! workers to core workers, which then push tasks to the leased worker
//! directly. It never sees a task: only lease requests, returns and store operations.
//!
//! Invariants: a lease holds exactly the resources it was granted (less the CPU a blocked
//! worker gave back); every worker process it starts is killed and reaped by
//! [`NodeManager::shutdown`], and dies with this process (parent-death signal) if shutdown never
//! runs.

mod binaries;
mod bulk;
mod client_pins;
mod cluster_view;
pub mod cpu;
mod drivers;
pub mod gpus;
mod launcher;
pub mod logs;
mod object_manager;
mod pool;
mod service;

pub use cluster_view::{scheduler_id, Placement};
pub use launcher::{Killer, LaunchRequest, LaunchedWorker, ProcessLauncher, WorkerLauncher};
pub use object_manager::{FetchError, CHUNK_BYTES};
pub use pool::{default_max_workers, Grant, LeaseAsk, LeaseError, NodeManager, NodeManagerConfig};
pub use ray_proto::node_manager_server::NodeManagerServer;

/// Environment variables a worker process is started with. The session token is not among
/// them: it is written to the worker's stdin.
pub mod worker_env {
    /// Set to "1" in a worker process.
    pub const WORKER_MODE: &str = "RAYRS_WORKER";
    /// gRPC endpoint of the node manager that started the worker.
    pub const NODE_MANAGER: &str = "RAYRS_NODE_MANAGER";
    /// The worker's id, 32 hex digits.
    pub const WORKER_ID: &str = "RAYRS_WORKER_ID";
    /// A name unique to the session, used to name the worker's sockets.
    pub const SESSION: &str = "RAYRS_SESSION";
}
