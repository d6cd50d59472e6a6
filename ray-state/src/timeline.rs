//! The timeline (Ray's `ray timeline`): task rows as a Chrome trace, one process per node and
//! one thread per worker process, a slice per task that ran, loadable in Perfetto or
//! `chrome://tracing`.

use crate::rows::Task;
use serde::Serialize;
use std::collections::BTreeMap;

/// Most tasks a timeline asks the GCS for (its bound per job).
pub const TIMELINE_TASKS: u32 = 100_000;

/// One event of the Chrome trace format: a complete slice (`ph: "X"`) or a name (`"M"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    pub name: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub cat: &'static str,
    pub ph: &'static str,
    /// Microseconds since the epoch (slices only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dur: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    pub args: BTreeMap<&'static str, String>,
}

/// The trace of `tasks`: those that started, each a slice from its start to its end (a task
/// still running ends at `now_us`). Nodes are numbered in the order of their first task and
/// named after their ids; a worker's thread is its pid.
///
/// ```
/// use ray_state::{timeline::chrome_trace, Task, TaskState};
/// let task = Task {
///     task_id: "01".into(), attempt: 0, name: "f".into(), func_or_class_name: "app::f".into(),
///     state: Some(TaskState::Finished), job_id: 1, actor_id: None, parent_task_id: None,
///     node_id: Some("abcdef0123".into()), worker_id: None, worker_pid: Some(42),
///     submitted_at_us: Some(5), started_at_us: Some(10), ended_at_us: Some(25),
///     error_type: None, error_message: None,
/// };
/// let trace = chrome_trace(&[task], 100);
/// let slice = trace.iter().find(|e| e.ph == "X").unwrap();
/// assert_eq!((slice.ts, slice.dur, slice.tid), (Some(10), Some(15), 42));
/// ```
pub fn chrome_trace(tasks: &[Task], now_us: u64) -> Vec<TraceEvent> {
    let mut nodes: BTreeMap<&str, u32> = BTreeMap::new();
    let mut threads: BTreeMap<(u32, u32), ()> = BTreeMap::new();
    let mut events = Vec::new();
    let mut ran: Vec<&Task> = tasks.iter().filter(|t| t.started_at_us.is_some()).collect();
    ran.sort_by_key(|t| t.started_at_us);
    for t in ran {
        let start = t.started_at_us.unwrap_or_default();
        let end = t.ended_at_us.unwrap_or(now_us).max(start);
        let node = t.node_id.as_deref().unwrap_or("");
        let next = nodes.len() as u32 + 1;
        let pid = *nodes.entry(node).or_insert(next);
        let tid = t.worker_pid.unwrap_or(0);
        threads.insert((pid, tid), ());
        let mut args = BTreeMap::new();
        args.insert("task_id", t.task_id.clone());
        args.insert("function", t.func_or_class_name.clone());
        args.insert("attempt", t.attempt.to_string());
        if let Some(state) = t.state {
            args.insert("state", state.as_str().to_string());
        }
        if let Some(actor) = &t.actor_id {
            args.insert("actor_id", actor.clone());
        }
        if let Some(error) = &t.error_type {
            args.insert("error_type", error.clone());
        }
        events.push(TraceEvent {
            name: t.name.clone(),
            cat: "task",
            ph: "X",
            ts: Some(start),
            dur: Some(end - start),
            pid,
            tid,
            args,
        });
    }
    let meta = |name: &str, pid, tid, label: String| TraceEvent {
        name: name.to_string(),
        cat: "",
        ph: "M",
        ts: None,
        dur: None,
        pid,
        tid,
        args: BTreeMap::from([("name", label)]),
    };
    for (node, pid) in &nodes {
        let short = &node[..node.len().min(8)];
        events.push(meta("process_name", *pid, 0, format!("node {short}")));
    }
    for (pid, tid) in threads.keys() {
        events.push(meta("thread_name", *pid, *tid, format!("worker pid {tid}")));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskState;

    fn task(id: &str, node: &str, pid: u32, start: Option<u64>, end: Option<u64>) -> Task {
        Task {
            task_id: id.into(),
            attempt: 0,
            name: format!("f{id}"),
            func_or_class_name: format!("app::f{id}"),
            state: Some(if end.is_some() {
                TaskState::Finished
            } else {
                TaskState::Running
            }),
            job_id: 1,
            actor_id: None,
            parent_task_id: None,
            node_id: Some(node.into()),
            worker_id: None,
            worker_pid: Some(pid),
            submitted_at_us: Some(1),
            started_at_us: start,
            ended_at_us: end,
            error_type: None,
            error_message: None,
        }
    }

    #[test]
    fn a_slice_per_started_task_a_process_per_node_a_thread_per_worker() {
        let tasks = [
            task("1", "aaaa", 10, Some(100), Some(150)),
            task("2", "bbbb", 20, Some(120), None),
            task("3", "aaaa", 11, None, None), // never started: no slice
            task("4", "aaaa", 10, Some(160), Some(170)),
        ];
        let trace = chrome_trace(&tasks, 1000);
        let slices: Vec<_> = trace.iter().filter(|e| e.ph == "X").collect();
        assert_eq!(slices.len(), 3);
        let by_id = |id: &str| *slices.iter().find(|e| e.args["task_id"] == id).unwrap();
        assert_eq!(
            (by_id("1").pid, by_id("1").tid, by_id("1").dur),
            (1, 10, Some(50))
        );
        // Still running: it ends now.
        assert_eq!((by_id("2").pid, by_id("2").dur), (2, Some(880)));
        assert_eq!(by_id("4").pid, 1);
        let names: Vec<_> = trace
            .iter()
            .filter(|e| e.ph == "M")
            .map(|e| e.args["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["node aaaa", "node bbbb", "worker pid 10", "worker pid 20"]
        );
    }
}
