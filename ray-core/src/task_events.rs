//! Task events for the state API: what this process sees of each task (submitted, waiting
//! for a worker, running, finished or failed), buffered here and sent to the GCS in one batch a
//! second (Ray's task event buffer). Recording is a push under a short lock; an event about
//! the task the last one was about is merged into it, so a task a worker runs start to end
//! within a second costs one event.

use crate::error::Error;
use crate::ids::ObjectId;
use parking_lot::Mutex;
use ray_proto::TaskStatus;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the buffer goes to the GCS (Ray's `task_events_report_interval_ms`).
const REPORT_PERIOD: Duration = Duration::from_secs(1);
/// Events held between reports at most; past it the newest are counted as dropped (Ray's
/// `task_events_max_buffer_size`).
const MAX_BUFFERED: usize = 100_000;
/// Tasks an owner tracks a second at most: past it, its tasks that second are counted as
/// dropped and neither it nor their workers record them (the owner tells the worker in the
/// task's frame), so a task is listed whole or not at all. A listing shows the first tasks of
/// each second of a burst of hundreds of thousands, which then costs the burst little.
const TRACKED_PER_SECOND: i64 = 10_000;

/// A task's name as recorded: a function's is static, an actor method's is written out
/// only when reported.
#[derive(Clone, Default)]
pub(crate) enum Name {
    #[default]
    Unknown,
    Static(&'static str),
    /// An actor method: `Class.method`, written when reported.
    Method(Arc<str>, &'static str),
}

impl Name {
    fn is_known(&self) -> bool {
        !matches!(self, Name::Unknown)
    }

    fn to_wire(&self) -> String {
        match self {
            Name::Unknown => String::new(),
            Name::Static(s) => (*s).to_string(),
            Name::Method(class, method) => format!("{class}.{method}"),
        }
    }

    /// Its index in `names` plus one, adding it the first time (0: unknown). Names repeat
    /// across a batch: each is written once.
    fn index_in(&self, names: &mut Names) -> u32 {
        let key = match self {
            Name::Unknown => return 0,
            Name::Static(s) => NameKey::Static(s.as_ptr() as usize, s.len()),
            Name::Method(class, method) => NameKey::Method(
                Arc::as_ptr(class).cast::<u8>() as usize,
                method.as_ptr() as usize,
                method.len(),
            ),
        };
        if let Some(i) = names.index.get(&key) {
            return *i;
        }
        names.list.push(self.to_wire());
        let i = names.list.len() as u32;
        names.index.insert(key, i);
        i
    }
}

/// A name by identity (its pointers): the same function or method, without comparing text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum NameKey {
    Static(usize, usize),
    Method(usize, usize, usize),
}

/// The names of a batch being made.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: std::collections::HashMap<NameKey, u32>,
}

/// One event as buffered (made a wire event when reported, off the task path).
#[derive(Default)]
struct Event {
    task: [u8; 16],
    status: i32,
    attempt: u32,
    name: Name,
    actor: Option<[u8; 16]>,
    parent: Option<[u8; 16]>,
    submitted_us: u64,
    running_us: u64,
    ended_us: u64,
    /// The failure's kind and message.
    error: Option<Box<(&'static str, String)>>,
}

impl Event {
    /// Folds a later event about the same task and attempt into this one.
    fn merge(&mut self, later: Event) {
        self.status = self.status.max(later.status);
        if later.name.is_known() {
            self.name = later.name;
        }
        self.actor = later.actor.or(self.actor);
        self.parent = later.parent.or(self.parent);
        for (mine, theirs) in [
            (&mut self.submitted_us, later.submitted_us),
            (&mut self.running_us, later.running_us),
            (&mut self.ended_us, later.ended_us),
        ] {
            if theirs != 0 {
                *mine = theirs;
            }
        }
        if later.error.is_some() {
            self.error = later.error;
        }
    }

    fn to_wire(&self, names: &mut Names) -> ray_state::events::TaskEvent {
        ray_state::events::TaskEvent {
            task: self.task,
            attempt: self.attempt,
            status: self.status,
            name: self.name.index_in(names),
            actor: self.actor,
            parent: self.parent,
            submitted_us: self.submitted_us,
            running_us: self.running_us,
            ended_us: self.ended_us,
            error: self.error.as_ref().map(|e| (e.0.to_string(), e.1.clone())),
        }
    }
}

/// This process's task events not yet reported.
pub(crate) struct TaskEvents {
    on: AtomicBool,
    buffer: Mutex<Vec<Event>>,
    dropped: AtomicU64,
    /// Tasks this owner may still track until the next report.
    budget: AtomicI64,
    /// A batch whose report failed: sent again before the next one (merging is idempotent
    /// at the GCS, so a report that did arrive does no harm sent twice).
    unsent: Mutex<Option<ray_proto::AddTaskEventsRequest>>,
}

impl Default for TaskEvents {
    fn default() -> Self {
        TaskEvents {
            on: AtomicBool::new(true),
            buffer: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            budget: AtomicI64::new(TRACKED_PER_SECOND),
            unsent: Mutex::new(None),
        }
    }
}

/// Ray's `ERROR_TYPE` of a failed task.
fn error_type(e: &Error) -> &'static str {
    match e {
        Error::Task { .. } => "TASK_EXECUTION_EXCEPTION",
        Error::WorkerDied { .. } => "WORKER_DIED",
        Error::ActorDied { .. } => "ACTOR_DIED",
        Error::ActorUnavailable { .. } => "ACTOR_UNAVAILABLE",
        Error::TaskCancelled { .. } => "TASK_CANCELLED",
        Error::Unschedulable { .. } => "TASK_UNSCHEDULABLE_ERROR",
        Error::ArgumentFailed { .. } => "DEPENDENCY_FAILED",
        Error::NodeDied { .. } => "NODE_DIED",
        Error::OwnerDied(_) => "OWNER_DIED",
        Error::ObjectLost(_) => "OBJECT_LOST",
        _ => "RUNTIME_ERROR",
    }
}

impl TaskEvents {
    /// Stops (or resumes) recording: a program may turn the state API's task list off.
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Buffers `event`; false if it was dropped (recording off, or the buffer full).
    fn record(&self, event: Event) -> bool {
        if !self.on.load(Ordering::Relaxed) {
            return false;
        }
        let mut buffer = self.buffer.lock();
        if let Some(last) = buffer.last_mut() {
            if last.task == event.task && last.attempt == event.attempt {
                last.merge(event);
                return true;
            }
        }
        if buffer.len() >= MAX_BUFFERED {
            drop(buffer);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        buffer.push(event);
        true
    }

    /// The owner submitted `task`; `waiting_args` if some of its arguments are not ready
    /// yet. False if the task is not tracked (recording is off, or past this second's
    /// budget): no event of it is recorded, here or on its worker.
    pub fn submitted(
        &self,
        task: ObjectId,
        name: Name,
        actor: Option<[u8; 16]>,
        parent: Option<[u8; 16]>,
        waiting_args: bool,
    ) -> bool {
        if !self.on.load(Ordering::Relaxed) {
            return false;
        }
        if self.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let status = if waiting_args {
            TaskStatus::PendingArgsAvail
        } else {
            TaskStatus::PendingNodeAssignment
        };
        // Untracked if even this first event cannot be kept: listed whole or not at all.
        self.record(Event {
            task: task.0,
            status: status as i32,
            attempt: 0,
            name,
            actor,
            parent,
            submitted_us: ray_common::clock::unix_micros(),
            ..Default::default()
        })
    }

    /// `task` moved on to `status` (its arguments came, or a retry waits for a worker).
    pub fn moved(&self, task: ObjectId, attempt: u32, status: TaskStatus) {
        self.record(Event {
            task: task.0,
            status: status as i32,
            attempt,
            ..Default::default()
        });
    }

    /// This worker starts running `task`.
    pub fn running(&self, task: [u8; 16], attempt: u32, name: Name) {
        self.record(Event {
            task,
            status: TaskStatus::Running as i32,
            attempt,
            name,
            running_us: ray_common::clock::unix_micros(),
            ..Default::default()
        });
    }

    /// `task` ended: ran to its end here, or failed (here or, seen by its owner, anywhere).
    pub fn ended(&self, task: [u8; 16], attempt: u32, failure: Option<&Error>) {
        let (status, error) = match failure {
            None => (TaskStatus::Finished, None),
            Some(e) => (
                TaskStatus::Failed,
                Some(Box::new((error_type(e), truncated(e.to_string())))),
            ),
        };
        self.record(Event {
            task,
            status: status as i32,
            attempt,
            ended_us: ray_common::clock::unix_micros(),
            error,
            ..Default::default()
        });
    }

    /// Everything buffered, and the count dropped since the last take.
    fn take(&self) -> (Vec<Event>, u64) {
        self.budget.store(TRACKED_PER_SECOND, Ordering::Relaxed);
        let events = std::mem::take(&mut *self.buffer.lock());
        (events, self.dropped.swap(0, Ordering::Relaxed))
    }
}

/// A failure's message as reported: at most 4 KiB (the state API lists many).
fn truncated(mut message: String) -> String {
    const MAX: usize = 4096;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// Sends the buffered events to the GCS once a [`REPORT_PERIOD`], while `flush` says the
/// process is still there (`None`: it is gone).
pub(crate) async fn report<F, Fut>(mut flush: F)
where
    F: FnMut() -> Option<Fut>,
    Fut: std::future::Future<Output = Result<(), ray_common::rpc::RpcError>>,
{
    let mut tick = tokio::time::interval(REPORT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tick.tick().await;
        let Some(flushed) = flush() else { return };
        match flushed.await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                // Once, then every minute: the GCS may be gone for a while.
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, "task events not reported; the state API will miss them");
                }
            }
        }
    }
}

/// Who reports a batch: the process, its job, worker and node.
pub(crate) struct Reporter {
    pub job_id: u32,
    pub worker_id: bytes::Bytes,
    pub node_id: bytes::Bytes,
    /// Its core worker's address (where the state API asks an owner about its tasks).
    pub address: String,
}

impl TaskEvents {
    /// The batch a failed report kept, if any.
    pub fn take_unsent(&self) -> Option<ray_proto::AddTaskEventsRequest> {
        self.unsent.lock().take()
    }

    /// Keeps `batch`, whose report failed, to send first next time.
    pub fn keep_unsent(&self, batch: ray_proto::AddTaskEventsRequest) {
        *self.unsent.lock() = Some(batch);
    }

    /// What is buffered now as one batch (`None` if there is nothing to send).
    pub fn batch(&self, from: &Reporter) -> Option<ray_proto::AddTaskEventsRequest> {
        let (events, dropped) = self.take();
        if events.is_empty() && dropped == 0 {
            return None;
        }
        let mut names = Names::default();
        let events = events.iter().map(|e| e.to_wire(&mut names)).collect();
        let batch = ray_state::events::EventBatch {
            names: names.list,
            events,
        };
        Some(ray_proto::AddTaskEventsRequest {
            job_id: from.job_id,
            worker_id: from.worker_id.clone(),
            node_id: from.node_id.clone(),
            pid: std::process::id(),
            packed: batch.encode().into(),
            dropped,
            address: from.address.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_state::events::EventBatch;

    fn reporter() -> Reporter {
        Reporter {
            job_id: 1,
            worker_id: vec![1; 16].into(),
            node_id: vec![2; 16].into(),
            address: "127.0.0.1:1".into(),
        }
    }

    /// The next batch, as the GCS reads it.
    fn next_batch(events: &TaskEvents) -> (EventBatch, u64) {
        match events.batch(&reporter()) {
            Some(b) => (EventBatch::decode(&b.packed).unwrap(), b.dropped),
            None => (EventBatch::default(), 0),
        }
    }

    #[test]
    fn a_run_start_to_end_is_one_event_and_states_only_move_forward() {
        let events = TaskEvents::default();
        events.running([1; 16], 0, Name::Static("f"));
        events.ended([1; 16], 0, None);
        // A late word that it waited for a worker does not move it back.
        events.moved(ObjectId([1; 16]), 0, TaskStatus::PendingNodeAssignment);
        events.running([2; 16], 0, Name::Static("g"));
        events.running([3; 16], 0, Name::Static("f"));
        let (batch, dropped) = next_batch(&events);
        assert_eq!(dropped, 0);
        assert_eq!(batch.events.len(), 3);
        let first = &batch.events[0];
        assert_eq!(first.status, TaskStatus::Finished as i32);
        assert_eq!(batch.name_of(first), Some("f"));
        assert!(first.running_us > 0 && first.ended_us >= first.running_us);
        assert_eq!(batch.events[1].status, TaskStatus::Running as i32);
        // Each name is sent once per batch.
        assert_eq!(batch.names.len(), 2);
        assert_eq!(batch.events[2].name, first.name);
        assert!(events.batch(&reporter()).is_none(), "nothing left to send");
    }

    #[test]
    fn a_retry_is_an_event_of_its_own_and_a_full_buffer_counts_what_it_drops() {
        let events = TaskEvents::default();
        events.ended([1; 16], 0, Some(&Error::Runtime("boom".into())));
        events.moved(ObjectId([1; 16]), 1, TaskStatus::PendingNodeAssignment);
        let (batch, _) = next_batch(&events);
        assert_eq!(batch.events.len(), 2);
        let error = batch.events[0].error.clone().unwrap();
        assert_eq!(error.0, "RUNTIME_ERROR");
        assert!(error.1.contains("boom"));
        for i in 0..(MAX_BUFFERED as u32 + 5) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            events.running(id, 0, Name::Unknown);
        }
        let (batch, dropped) = next_batch(&events);
        assert_eq!((batch.events.len(), dropped), (MAX_BUFFERED, 5));
        events.set_enabled(false);
        events.running([9; 16], 0, Name::Unknown);
        assert!(events.batch(&reporter()).is_none());
    }

    #[test]
    fn past_its_budget_a_second_an_owner_tracks_no_more_tasks_until_the_next_report() {
        let events = TaskEvents::default();
        let submit = |i: u32| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            events.submitted(ObjectId(id), Name::Static("f"), None, None, false)
        };
        let n = TRACKED_PER_SECOND as u32;
        assert!((0..n).all(submit));
        assert!(!submit(n) && !submit(n + 1));
        let (batch, dropped) = next_batch(&events);
        assert_eq!((batch.events.len(), dropped), (n as usize, 2));
        assert!(submit(n + 2), "a new second, a new budget");
        events.set_enabled(false);
        assert!(!submit(n + 3), "nothing is tracked while recording is off");
    }
}
