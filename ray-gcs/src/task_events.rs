//! The task table of the state API: every process's task events merged into one row per
//! task (its latest attempt), bounded per job: past the bound the oldest rows go first, and
//! what went is counted.

use parking_lot::Mutex;
use ray_proto::{AddTaskEventsRequest, ListRequest, ListTasksReply, TaskEvent, TaskRow};
use std::collections::{HashMap, VecDeque};

/// Rows kept per job (Ray's `task_events_max_num_task_in_gcs` is 100,000 in all; rows are
/// ~400 bytes here, and a local session's GCS lives in the driver's memory).
pub const MAX_TASKS_PER_JOB: usize = 20_000;

/// The rows, behind one short lock.
pub(crate) struct TaskTable {
    inner: Mutex<Table>,
    max_per_job: usize,
}

#[derive(Default)]
struct Table {
    rows: HashMap<[u8; 16], TaskRow>,
    /// Per job, its tasks in the order their first event came (the oldest go first), and
    /// how many rows or events were let go of.
    jobs: HashMap<u32, JobTasks>,
}

#[derive(Default)]
struct JobTasks {
    order: VecDeque<[u8; 16]>,
    dropped: u64,
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable::with_bound(MAX_TASKS_PER_JOB)
    }
}

/// Where a state stands in a task's life: a later report never moves a row back (the
/// events of owner and worker arrive in any order).
fn rank(status: i32) -> i32 {
    status
}

impl TaskTable {
    /// A table keeping at most `max_per_job` rows of each job.
    pub fn with_bound(max_per_job: usize) -> Self {
        TaskTable {
            inner: Mutex::new(Table::default()),
            max_per_job: max_per_job.max(1),
        }
    }

    /// Merges one process's batch.
    pub fn add(&self, mut batch: AddTaskEventsRequest) {
        let events = std::mem::take(&mut batch.events);
        let mut t = self.inner.lock();
        let Table { rows, jobs } = &mut *t;
        let job = jobs.entry(batch.job_id).or_default();
        job.dropped += batch.dropped;
        for event in events {
            let Ok(id) = <[u8; 16]>::try_from(&event.task_id[..]) else {
                continue;
            };
            let row = rows.entry(id).or_insert_with(|| {
                job.order.push_back(id);
                TaskRow {
                    task_id: event.task_id.clone(),
                    job_id: batch.job_id,
                    attempt: event.attempt,
                    ..Default::default()
                }
            });
            merge(row, event, &batch);
            while job.order.len() > self.max_per_job {
                if let Some(old) = job.order.pop_front() {
                    rows.remove(&old);
                    job.dropped += 1;
                }
            }
        }
    }

    /// The rows that pass the request's filters, newest first, within its limit; and the
    /// counts per name and state if it asks for a summary.
    pub fn list(&self, request: &ListRequest) -> Result<ListTasksReply, ray_state::StateError> {
        let filters = ray_state::filter::from_request::<TaskRow>(request)?;
        let limit = ray_state::filter::limit_of(request);
        let t = self.inner.lock();
        let mut matching: Vec<&TaskRow> = t
            .rows
            .values()
            .filter(|r| ray_state::filter::matches(*r, &filters))
            .collect();
        let counts = if request.summarize {
            ray_state::summary::count_tasks(matching.iter().copied())
        } else {
            Vec::new()
        };
        let total = matching.len() as u64;
        // Newest first: by submission (or start) time, the task id breaking ties.
        let key = |r: &TaskRow| (r.submitted_us.max(r.running_us), r.task_id.clone());
        if matching.len() > limit {
            matching.select_nth_unstable_by(limit, |a, b| key(b).cmp(&key(a)));
            matching.truncate(limit);
        }
        matching.sort_by_key(|r| std::cmp::Reverse(key(r)));
        Ok(ListTasksReply {
            tasks: matching.into_iter().cloned().collect(),
            total,
            dropped: t.jobs.values().map(|j| j.dropped).sum(),
            counts,
        })
    }

    /// A finished job's rows stay listed (its last word); nothing to do but keep them.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().rows.len()
    }
}

/// Folds `event` (from the process that sent `batch`) into `row`.
fn merge(row: &mut TaskRow, event: TaskEvent, batch: &AddTaskEventsRequest) {
    if event.attempt < row.attempt {
        // An earlier attempt's late word: only what every attempt shares.
        fill_shared(row, &event);
        return;
    }
    if event.attempt > row.attempt {
        // A retry: the run's fields start again.
        *row = TaskRow {
            task_id: std::mem::take(&mut row.task_id),
            name: std::mem::take(&mut row.name),
            job_id: row.job_id,
            actor_id: std::mem::take(&mut row.actor_id),
            parent_id: std::mem::take(&mut row.parent_id),
            submitted_us: row.submitted_us,
            attempt: event.attempt,
            ..Default::default()
        };
    }
    fill_shared(row, &event);
    if rank(event.status) > rank(row.status) {
        row.status = event.status;
    }
    if event.running_us != 0 {
        // The worker that ran it sent this: where it ran.
        row.running_us = event.running_us;
        row.node_id = batch.node_id.clone();
        row.worker_id = batch.worker_id.clone();
        row.pid = batch.pid;
    }
    if event.ended_us != 0 {
        row.ended_us = event.ended_us;
    }
    if !event.error_type.is_empty() {
        row.error_type = event.error_type;
        row.error = event.error;
    }
}

/// What is the same for every attempt: the name, the actor, the parent, the submission.
fn fill_shared(row: &mut TaskRow, event: &TaskEvent) {
    if !event.name.is_empty() {
        row.name = event.name.clone();
    }
    if !event.actor_id.is_empty() {
        row.actor_id = event.actor_id.clone();
    }
    if !event.parent_id.is_empty() {
        row.parent_id = event.parent_id.clone();
    }
    if event.submitted_us != 0 && (row.submitted_us == 0 || event.attempt == 0) {
        row.submitted_us = event.submitted_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_proto::TaskStatus as S;

    fn event(id: u8, status: S, attempt: u32) -> TaskEvent {
        TaskEvent {
            task_id: vec![id; 16].into(),
            status: status as i32,
            attempt,
            ..Default::default()
        }
    }

    fn batch(events: Vec<TaskEvent>) -> AddTaskEventsRequest {
        AddTaskEventsRequest {
            job_id: 1,
            worker_id: vec![7; 16].into(),
            node_id: vec![8; 16].into(),
            pid: 42,
            events,
            dropped: 0,
        }
    }

    fn list(t: &TaskTable, filters: &[(&str, &str, &str)]) -> ListTasksReply {
        let request = ListRequest {
            filters: filters
                .iter()
                .map(|(k, op, v)| ray_proto::StateFilter {
                    key: k.to_string(),
                    op: op.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            limit: 0,
            summarize: true,
        };
        t.list(&request).unwrap()
    }

    #[test]
    fn events_in_any_order_leave_the_latest_state_and_where_it_ran() {
        let t = TaskTable::default();
        let mut ran = event(1, S::Finished, 0);
        ran.running_us = 10;
        ran.ended_us = 20;
        t.add(batch(vec![ran]));
        // The owner's submission arrives after the worker's end: it names the task only.
        let mut submitted = event(1, S::PendingNodeAssignment, 0);
        submitted.name = "f".into();
        submitted.submitted_us = 5;
        t.add(AddTaskEventsRequest {
            pid: 1,
            ..batch(vec![submitted])
        });
        let rows = list(&t, &[]).tasks;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.status, r.name.as_str(), r.pid),
            (S::Finished as i32, "f", 42)
        );
        assert_eq!((r.submitted_us, r.running_us, r.ended_us), (5, 10, 20));
    }

    #[test]
    fn a_retry_starts_its_run_again() {
        let t = TaskTable::default();
        let mut failed = event(1, S::Failed, 0);
        failed.error_type = "WORKER_DIED".into();
        failed.name = "f".into();
        t.add(batch(vec![failed]));
        t.add(batch(vec![event(1, S::PendingNodeAssignment, 1)]));
        let r = &list(&t, &[]).tasks[0];
        assert_eq!((r.attempt, r.status), (1, S::PendingNodeAssignment as i32));
        assert!(r.error_type.is_empty());
        assert_eq!(r.name, "f");
    }

    #[test]
    fn filters_limits_and_counts() {
        let t = TaskTable::default();
        let events = (0..10u8)
            .map(|i| {
                let mut e = event(i, if i < 3 { S::Running } else { S::Finished }, 0);
                e.name = if i % 2 == 0 { "even" } else { "odd" }.into();
                e.submitted_us = u64::from(i) + 1;
                e
            })
            .collect();
        t.add(batch(events));
        let running = list(&t, &[("state", "=", "running")]);
        assert_eq!(running.total, 3);
        let odd_not_done = list(&t, &[("name", "=", "odd"), ("state", "!=", "FINISHED")]);
        assert_eq!(odd_not_done.total, 1);
        let limited = t
            .list(&ListRequest {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((limited.tasks.len(), limited.total), (2, 10));
        assert_eq!(limited.tasks[0].task_id[0], 9, "newest first");
        let counts = list(&t, &[]).counts;
        assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 10);
        let bad = ListRequest {
            filters: vec![ray_proto::StateFilter {
                key: "colour".into(),
                op: "=".into(),
                value: "red".into(),
            }],
            ..Default::default()
        };
        assert!(matches!(
            t.list(&bad),
            Err(ray_state::StateError::UnknownKey { .. })
        ));
    }

    #[test]
    fn past_the_bound_the_oldest_go_and_are_counted() {
        let t = TaskTable::with_bound(4);
        t.add(batch((0..6u8).map(|i| event(i, S::Running, 0)).collect()));
        assert_eq!(t.len(), 4);
        let reply = list(&t, &[]);
        assert_eq!(reply.dropped, 2);
        assert!(reply.tasks.iter().all(|r| r.task_id[0] >= 2));
    }
}
