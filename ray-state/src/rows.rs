//! The rows the state API lists, as a program, the command line and the dashboard see them
//! (ids in hex, times in microseconds since the Unix epoch), made from the GCS's wire rows;
//! and the fields filters compare, named as the rows' own.

use crate::filter::Fields;
use ray_common::ids::hex;
use ray_proto::TaskStatus;
use serde::{Deserialize, Serialize};

/// A task's state (Ray's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Waiting for its argument objects.
    PendingArgsAvail,
    /// Waiting for a worker: resources, a process to start.
    PendingNodeAssignment,
    /// Sent to a worker, queued there behind other tasks.
    SubmittedToWorker,
    Running,
    Finished,
    Failed,
}

impl TaskState {
    /// Its name, as filters and tables write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::PendingArgsAvail => "PENDING_ARGS_AVAIL",
            TaskState::PendingNodeAssignment => "PENDING_NODE_ASSIGNMENT",
            TaskState::SubmittedToWorker => "SUBMITTED_TO_WORKER",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
        }
    }

    /// From the wire (`None` for a status no event set).
    pub fn from_wire(status: i32) -> Option<TaskState> {
        Some(match TaskStatus::try_from(status).ok()? {
            TaskStatus::Nil => return None,
            TaskStatus::PendingArgsAvail => TaskState::PendingArgsAvail,
            TaskStatus::PendingNodeAssignment => TaskState::PendingNodeAssignment,
            TaskStatus::SubmittedToWorker => TaskState::SubmittedToWorker,
            TaskStatus::Running => TaskState::Running,
            TaskStatus::Finished => TaskState::Finished,
            TaskStatus::Failed => TaskState::Failed,
        })
    }

    /// Finished or failed.
    pub fn is_done(self) -> bool {
        matches!(self, TaskState::Finished | TaskState::Failed)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task or actor call, as the events of the processes that saw it left it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    /// 0 for its first run, then one more per retry.
    pub attempt: u32,
    /// The function, or `Class.method`, without its module path.
    pub name: String,
    /// The same with its module path (`app::jobs::resize`).
    pub func_or_class_name: String,
    /// `None` if no event so far said (not expected: every event carries a state).
    pub state: Option<TaskState>,
    pub job_id: u32,
    pub actor_id: Option<String>,
    pub parent_task_id: Option<String>,
    /// Where it ran (once it started).
    pub node_id: Option<String>,
    pub worker_id: Option<String>,
    pub worker_pid: Option<u32>,
    pub submitted_at_us: Option<u64>,
    pub started_at_us: Option<u64>,
    pub ended_at_us: Option<u64>,
    /// A failure's kind (Ray's: `TASK_EXECUTION_EXCEPTION`, `WORKER_DIED`, ...).
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

/// A function's or class's name without its module path (`quick` for `tests::quick`,
/// `Counter.incr` for `app::Counter.incr`), as Ray names tasks and actor classes.
pub fn short_name(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

/// Empty bytes or text as `None`.
fn some_hex(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| hex(bytes))
}
fn some_text(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}
fn some_time(us: u64) -> Option<u64> {
    (us != 0).then_some(us)
}

impl From<&ray_proto::TaskRow> for Task {
    fn from(r: &ray_proto::TaskRow) -> Task {
        Task {
            task_id: hex(&r.task_id),
            attempt: r.attempt,
            name: short_name(&r.name).to_string(),
            func_or_class_name: r.name.clone(),
            state: TaskState::from_wire(r.status),
            job_id: r.job_id,
            actor_id: some_hex(&r.actor_id),
            parent_task_id: some_hex(&r.parent_id),
            node_id: some_hex(&r.node_id),
            worker_id: some_hex(&r.worker_id),
            worker_pid: (r.pid != 0).then_some(r.pid),
            submitted_at_us: some_time(r.submitted_us),
            started_at_us: some_time(r.running_us),
            ended_at_us: some_time(r.ended_us),
            error_type: some_text(&r.error_type),
            error_message: some_text(&r.error),
        }
    }
}

impl Fields for ray_proto::TaskRow {
    const KEYS: &'static [&'static str] = &[
        "task_id",
        "attempt",
        "name",
        "func_or_class_name",
        "state",
        "job_id",
        "actor_id",
        "parent_task_id",
        "node_id",
        "worker_id",
        "worker_pid",
        "error_type",
    ];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "task_id" => hex(&self.task_id),
            "attempt" => self.attempt.to_string(),
            "name" => short_name(&self.name).to_string(),
            "func_or_class_name" => self.name.clone(),
            "state" => TaskState::from_wire(self.status)?.as_str().to_string(),
            "job_id" => self.job_id.to_string(),
            "actor_id" => some_hex(&self.actor_id)?,
            "parent_task_id" => some_hex(&self.parent_id)?,
            "node_id" => some_hex(&self.node_id)?,
            "worker_id" => some_hex(&self.worker_id)?,
            "worker_pid" => (self.pid != 0).then(|| self.pid.to_string())?,
            "error_type" => some_text(&self.error_type)?,
            _ => return None,
        })
    }
}

/// An actor, as the GCS's directory has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub actor_id: String,
    /// Its type's name, without its module path.
    pub class_name: String,
    /// `None` for an anonymous actor.
    pub name: Option<String>,
    pub namespace: String,
    /// PENDING, ALIVE, RESTARTING or DEAD.
    pub state: String,
    pub num_restarts: u32,
    pub job_id: u32,
    pub node_id: Option<String>,
    pub worker_id: Option<String>,
    pub pid: Option<u32>,
    pub death_cause: Option<String>,
    /// While it waits to be placed: why no node holds it.
    pub pending_reason: Option<String>,
}

impl From<&ray_proto::ActorRow> for Actor {
    fn from(r: &ray_proto::ActorRow) -> Actor {
        Actor {
            actor_id: hex(&r.actor_id),
            class_name: short_name(&r.class_name).to_string(),
            name: some_text(&r.name),
            namespace: r.namespace.clone(),
            state: r.state.clone(),
            num_restarts: r.num_restarts,
            job_id: r.job_id,
            node_id: some_hex(&r.node_id),
            worker_id: some_hex(&r.worker_id),
            pid: (r.pid != 0).then_some(r.pid),
            death_cause: some_text(&r.death_cause),
            pending_reason: some_text(&r.pending_reason),
        }
    }
}

impl Fields for ray_proto::ActorRow {
    const KEYS: &'static [&'static str] = &[
        "actor_id",
        "class_name",
        "name",
        "namespace",
        "state",
        "job_id",
        "node_id",
        "pid",
    ];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "actor_id" => hex(&self.actor_id),
            "class_name" => short_name(&self.class_name).to_string(),
            "name" => some_text(&self.name)?,
            "namespace" => self.namespace.clone(),
            "state" => self.state.clone(),
            "job_id" => self.job_id.to_string(),
            "node_id" => some_hex(&self.node_id)?,
            "pid" => (self.pid != 0).then(|| self.pid.to_string())?,
            _ => return None,
        })
    }
}

/// A job: a driver and everything it started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: u32,
    /// RUNNING or FINISHED.
    pub status: String,
    /// The driver's program.
    pub entrypoint: String,
    pub namespace: String,
    pub driver_pid: Option<u32>,
    pub driver_node_id: Option<String>,
    pub start_time_us: Option<u64>,
    pub end_time_us: Option<u64>,
}

impl From<&ray_proto::JobRow> for Job {
    fn from(r: &ray_proto::JobRow) -> Job {
        Job {
            job_id: r.job_id,
            status: r.status.clone(),
            entrypoint: r.entrypoint.clone(),
            namespace: r.namespace.clone(),
            driver_pid: (r.driver_pid != 0).then_some(r.driver_pid),
            driver_node_id: some_hex(&r.driver_node),
            start_time_us: some_time(r.start_us),
            end_time_us: some_time(r.end_us),
        }
    }
}

impl Fields for ray_proto::JobRow {
    const KEYS: &'static [&'static str] = &["job_id", "status", "entrypoint", "namespace"];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "job_id" => self.job_id.to_string(),
            "status" => self.status.clone(),
            "entrypoint" => self.entrypoint.clone(),
            "namespace" => self.namespace.clone(),
            _ => return None,
        })
    }
}

/// A node of the cluster, alive or dead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub node_id: String,
    /// ALIVE or DEAD.
    pub state: String,
    /// Its node manager's address.
    pub address: String,
    pub is_head: bool,
    /// Resources in all, and free now, by name.
    pub resources_total: std::collections::BTreeMap<String, f64>,
    pub resources_available: std::collections::BTreeMap<String, f64>,
    pub death_reason: Option<String>,
}

fn resources(r: &Option<ray_proto::Resources>) -> std::collections::BTreeMap<String, f64> {
    r.as_ref()
        .map(|r| r.amounts.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

impl From<&ray_proto::NodeInfo> for Node {
    fn from(n: &ray_proto::NodeInfo) -> Node {
        Node {
            node_id: hex(&n.node_id),
            state: if n.alive { "ALIVE" } else { "DEAD" }.into(),
            address: n.node_manager_address.clone(),
            is_head: n.is_head,
            resources_total: resources(&n.total),
            resources_available: resources(&n.available),
            death_reason: some_text(&n.death_reason),
        }
    }
}

impl Fields for ray_proto::NodeInfo {
    const KEYS: &'static [&'static str] = &["node_id", "state", "address", "is_head"];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "node_id" => hex(&self.node_id),
            "state" => if self.alive { "ALIVE" } else { "DEAD" }.into(),
            "address" => self.node_manager_address.clone(),
            "is_head" => self.is_head.to_string(),
            _ => return None,
        })
    }
}

/// A worker process, or a driver, of a node (Ray's `ray list workers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub worker_id: String,
    /// WORKER or DRIVER.
    pub worker_type: String,
    pub node_id: Option<String>,
    pub pid: Option<u32>,
    pub job_id: u32,
    /// STARTING, IDLE, LEASED, HOSTING_ACTORS (a worker); ALIVE (a driver).
    pub state: String,
    /// Its core worker's endpoint (where the state API asks it for its objects).
    pub address: Option<String>,
    /// Actors it hosts beside others (a shared host).
    pub hosted_actors: u32,
}

impl Worker {
    /// A node's worker, as its node manager listed it.
    pub fn from_wire(node_id: &[u8], w: &ray_proto::WorkerRow) -> Worker {
        Worker {
            worker_id: hex(&w.worker_id),
            worker_type: "WORKER".into(),
            node_id: some_hex(node_id),
            pid: (w.pid != 0).then_some(w.pid),
            job_id: w.job_id,
            state: w.state.clone(),
            address: some_text(&w.core_worker_address),
            hosted_actors: w.hosted_actors,
        }
    }

    /// A running job's driver, as the GCS's job row has it.
    pub fn driver(job: &ray_proto::JobRow) -> Worker {
        Worker {
            worker_id: hex(&job.driver_worker_id),
            worker_type: "DRIVER".into(),
            node_id: some_hex(&job.driver_node),
            pid: (job.driver_pid != 0).then_some(job.driver_pid),
            job_id: job.job_id,
            state: "ALIVE".into(),
            address: some_text(&job.driver_address),
            hosted_actors: 0,
        }
    }
}

impl Fields for Worker {
    const KEYS: &'static [&'static str] = &[
        "worker_id",
        "worker_type",
        "node_id",
        "pid",
        "job_id",
        "state",
    ];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "worker_id" => some_text(&self.worker_id)?,
            "worker_type" => self.worker_type.clone(),
            "node_id" => self.node_id.clone()?,
            "pid" => self.pid?.to_string(),
            "job_id" => self.job_id.to_string(),
            "state" => self.state.clone(),
            _ => return None,
        })
    }
}

/// An object as one process holds it (Ray's `ray list objects`: a row per process that
/// references the object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub object_id: String,
    /// Bytes of its value where this process finds it (0: not here, or not made yet).
    pub object_size: u64,
    /// LOCAL_REFERENCE (handles live in this process), BORROWED (only other processes hold
    /// it: this one owns it), CAPTURED_IN_OBJECT (its ref escaped into bytes nothing tracks),
    /// ACTOR_HANDLE (an actor's handles, counted like an object's).
    pub reference_type: String,
    /// The owner's address, or `None` when this process owns it.
    pub owner_address: Option<String>,
    pub local_refs: u32,
    pub borrowers: u32,
    /// INLINE, SHARED_MEMORY, FAILED, PENDING, or ACTOR_HANDLE.
    pub location: String,
    /// WORKER or DRIVER: the process that holds the reference.
    pub worker_type: String,
    pub worker_id: String,
    pub pid: u32,
    pub node_id: Option<String>,
}

impl Object {
    /// One row of a process's answer, `node_id` being where that process runs.
    pub fn from_wire(
        reply: &ray_proto::ListObjectsReply,
        node_id: Option<String>,
        o: &ray_proto::ObjectRow,
    ) -> Object {
        let reference_type = if o.location == "ACTOR_HANDLE" {
            "ACTOR_HANDLE"
        } else if o.local_refs > 0 {
            "LOCAL_REFERENCE"
        } else if o.pinned {
            "CAPTURED_IN_OBJECT"
        } else {
            "BORROWED"
        };
        Object {
            object_id: hex(&o.object_id),
            object_size: o.size,
            reference_type: reference_type.into(),
            owner_address: some_text(&o.owner_address),
            local_refs: o.local_refs,
            borrowers: o.borrowers,
            location: o.location.clone(),
            worker_type: if reply.is_driver { "DRIVER" } else { "WORKER" }.into(),
            worker_id: hex(&reply.worker_id),
            pid: reply.pid,
            node_id,
        }
    }
}

impl Fields for Object {
    const KEYS: &'static [&'static str] = &[
        "object_id",
        "reference_type",
        "location",
        "worker_type",
        "worker_id",
        "pid",
        "node_id",
    ];

    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "object_id" => self.object_id.clone(),
            "reference_type" => self.reference_type.clone(),
            "location" => self.location.clone(),
            "worker_type" => self.worker_type.clone(),
            "worker_id" => self.worker_id.clone(),
            "pid" => self.pid.to_string(),
            "node_id" => self.node_id.clone()?,
            _ => return None,
        })
    }
}
