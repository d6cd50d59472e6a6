//! The task table of the state API: every process's task events merged into one row per
//! task (its latest attempt), bounded per job: past the bound the oldest rows go first, and
//! what went is counted. Rows are compact (names and places interned, ids inline): hundreds
//! of thousands of events a second go through here, and a local session's GCS lives in the
//! driver's memory.

use parking_lot::Mutex;
use ray_proto::{AddTaskEventsRequest, ListRequest, ListTasksReply, TaskRow};
use ray_state::events::{EventBatch, TaskEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Rows kept per job (Ray keeps `task_events_max_num_task_in_gcs`, 100,000, in all); the
/// rows of a job go when the job's own row does (the last 1,000 finished jobs are kept).
pub const MAX_TASKS_PER_JOB: usize = 100_000;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The rows, behind one short lock.
pub(crate) struct TaskTable {
    inner: Mutex<Table>,
    max_per_job: usize,
}

#[derive(Default)]
struct Table {
    rows: FastMap<[u8; 16], Row>,
    /// Per job, its tasks in the order their first event came (the oldest go first), and
    /// how many rows or events were let go of.
    jobs: FastMap<u32, JobTasks>,
    names: Interned<Arc<str>>,
    places: Interned<Place>,
}

#[derive(Default)]
struct JobTasks {
    order: VecDeque<[u8; 16]>,
    dropped: u64,
}

/// Where a task ran: a worker process of a node.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Place {
    node: bytes::Bytes,
    worker: bytes::Bytes,
    pid: u32,
}

/// Values kept once, referred to by index (index 0 is "none").
struct Interned<T> {
    list: Vec<T>,
    index: FastMap<T, u32>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            list: Vec::new(),
            index: FastMap::default(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interned<T> {
    fn intern(&mut self, value: T) -> u32 {
        if let Some(i) = self.index.get(&value) {
            return *i;
        }
        self.list.push(value.clone());
        let i = self.list.len() as u32;
        self.index.insert(value, i);
        i
    }
}

/// One task, as its events left it.
#[derive(Clone, Default)]
struct Row {
    job: u32,
    attempt: u32,
    status: i32,
    /// Interned name (0: none yet).
    name: u32,
    /// Interned place (0: not run yet).
    place: u32,
    /// Its owner's address, interned with the names (0: not known yet).
    owner: u32,
    actor: Option<[u8; 16]>,
    parent: Option<[u8; 16]>,
    submitted_us: u64,
    running_us: u64,
    ended_us: u64,
    error: Option<Box<(String, String)>>,
    /// Failed by its job's end, not by an event: a late end of the same run (a worker's or
    /// an owner's report still in flight) replaces it.
    failed_by_job_end: bool,
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable::with_bound(MAX_TASKS_PER_JOB)
    }
}

impl TaskTable {
    /// A table keeping at most `max_per_job` rows of each job.
    pub fn with_bound(max_per_job: usize) -> Self {
        TaskTable {
            inner: Mutex::new(Table::default()),
            max_per_job: max_per_job.max(1),
        }
    }

    /// Merges one process's batch (decoded before the lock is taken).
    pub fn add(&self, batch: AddTaskEventsRequest) -> Result<(), ray_state::StateError> {
        let events = EventBatch::decode(&batch.packed)?;
        let place = Place {
            node: batch.node_id.clone(),
            worker: batch.worker_id.clone(),
            pid: batch.pid,
        };
        let mut t = self.inner.lock();
        let Table {
            rows,
            jobs,
            names,
            places,
        } = &mut *t;
        let name_ids: Vec<u32> = events
            .names
            .iter()
            .map(|n| names.intern(Arc::from(n.as_str())))
            .collect();
        let ran_here = if events.events.iter().any(|e| e.running_us != 0) {
            places.intern(place)
        } else {
            0
        };
        // The process that reports a task's submission owns it.
        let submitted_here = events.events.iter().any(|e| e.submitted_us != 0);
        let owner = match submitted_here && !batch.address.is_empty() {
            true => names.intern(Arc::from(batch.address.as_str())),
            false => 0,
        };
        let job = jobs.entry(batch.job_id).or_default();
        job.dropped += batch.dropped;
        for event in events.events {
            let name = usize::try_from(event.name)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| name_ids.get(i).copied())
                .unwrap_or(0);
            let row = rows.entry(event.task).or_insert_with(|| {
                job.order.push_back(event.task);
                Row {
                    job: batch.job_id,
                    attempt: event.attempt,
                    ..Default::default()
                }
            });
            let timed_before = row.running_us != 0 && row.ended_us != 0;
            merge(row, event, name, ran_here, owner);
            if !timed_before && row.running_us != 0 && row.ended_us != 0 {
                // Once per run, when both its start and its end are known (through the
                // `metrics` facade: the head's binary decides where it goes).
                let secs = row.ended_us.saturating_sub(row.running_us) as f64 / 1e6;
                metrics::histogram!("rayrs_task_run_seconds").record(secs);
            }
            while job.order.len() > self.max_per_job {
                if let Some(old) = job.order.pop_front() {
                    rows.remove(&old);
                    job.dropped += 1;
                }
            }
        }
        Ok(())
    }

    /// The rows that pass the request's filters, newest first, within its limit; and the
    /// counts per name and state if it asks for a summary.
    pub fn list(&self, request: &ListRequest) -> Result<ListTasksReply, ray_state::StateError> {
        let filters = ray_state::filter::from_request::<TaskRow>(request)?;
        let limit = ray_state::filter::limit_of(request);
        // A copy of the compact rows under the lock (a memory copy, no allocation per row);
        // the wire rows are made and filtered after it, so that reports are not held up.
        let (rows, names, places, dropped) = {
            let t = self.inner.lock();
            let rows: Vec<([u8; 16], Row)> =
                t.rows.iter().map(|(id, r)| (*id, r.clone())).collect();
            let dropped: u64 = t.jobs.values().map(|j| j.dropped).sum();
            (rows, t.names.list.clone(), t.places.list.clone(), dropped)
        };
        let tables = Snapshot { names, places };
        let mut matching: Vec<TaskRow> = rows
            .iter()
            .map(|(id, row)| tables.to_wire(id, row))
            .filter(|r| ray_state::filter::matches(r, &filters))
            .collect();
        let counts = if request.summarize {
            ray_state::summary::count_tasks(matching.iter())
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
            tasks: matching,
            total,
            dropped,
            counts,
        })
    }

    /// Marks every task of `job` that had not ended as failed (Ray's `WORKER_DIED` when a job
    /// ends under its tasks): its driver is gone, and its workers with it. Returns how many.
    pub fn fail_unfinished(&self, job: u32, now_us: u64) -> usize {
        let mut t = self.inner.lock();
        let Table { rows, jobs, .. } = &mut *t;
        let Some(tasks) = jobs.get(&job) else {
            return 0;
        };
        let mut failed = 0;
        for id in &tasks.order {
            let Some(row) = rows.get_mut(id) else {
                continue;
            };
            if row.status >= ray_proto::TaskStatus::Finished as i32 {
                continue;
            }
            row.status = ray_proto::TaskStatus::Failed as i32;
            row.failed_by_job_end = true;
            row.ended_us = now_us;
            row.error = Some(Box::new((
                "WORKER_DIED".into(),
                format!("job {job} finished before the task did"),
            )));
            failed += 1;
        }
        failed
    }

    /// Forgets every row of `job` (its job row was let go of).
    pub fn forget_job(&self, job: u32) {
        let mut t = self.inner.lock();
        if let Some(tasks) = t.jobs.remove(&job) {
            for id in tasks.order {
                t.rows.remove(&id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().rows.len()
    }
}

/// The interned names and places as a listing copied them.
struct Snapshot {
    names: Vec<Arc<str>>,
    places: Vec<Place>,
}

/// The `i`th interned value (1-based; 0 is none).
fn interned<T>(list: &[T], i: u32) -> Option<&T> {
    list.get(usize::try_from(i).ok()?.checked_sub(1)?)
}

impl Snapshot {
    fn to_wire(&self, id: &[u8; 16], r: &Row) -> TaskRow {
        let place = interned(&self.places, r.place);
        let (error_type, error) = r.error.as_deref().cloned().unwrap_or_default();
        TaskRow {
            task_id: id.to_vec().into(),
            name: interned(&self.names, r.name)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            status: r.status,
            job_id: r.job,
            actor_id: r.actor.map(|a| a.to_vec().into()).unwrap_or_default(),
            parent_id: r.parent.map(|p| p.to_vec().into()).unwrap_or_default(),
            node_id: place.map(|p| p.node.clone()).unwrap_or_default(),
            worker_id: place.map(|p| p.worker.clone()).unwrap_or_default(),
            pid: place.map_or(0, |p| p.pid),
            attempt: r.attempt,
            submitted_us: r.submitted_us,
            running_us: r.running_us,
            ended_us: r.ended_us,
            error_type,
            error,
            owner_address: interned(&self.names, r.owner)
                .map(|n| n.to_string())
                .unwrap_or_default(),
        }
    }
}

/// Folds `event` into `row`: `name` is its interned name, `place` where the process that
/// sent it runs (interned; used if the event says the task ran there).
fn merge(row: &mut Row, event: TaskEvent, name: u32, place: u32, owner: u32) {
    if event.attempt < row.attempt {
        // An earlier attempt's late word: only what every attempt shares.
        fill_shared(row, &event, name, owner);
        return;
    }
    if event.attempt > row.attempt {
        // A retry: the run's fields start again.
        *row = Row {
            job: row.job,
            attempt: event.attempt,
            name: row.name,
            owner: row.owner,
            actor: row.actor,
            parent: row.parent,
            submitted_us: row.submitted_us,
            ..Default::default()
        };
    }
    fill_shared(row, &event, name, owner);
    if row.failed_by_job_end && event.status >= ray_proto::TaskStatus::Finished as i32 {
        // The run's own end, reported after its job ended: it, not the guess, stands.
        row.failed_by_job_end = false;
        row.status = event.status;
        row.error = None;
    }
    // A state never moves back: owner and worker report in any order.
    row.status = row.status.max(event.status);
    if event.running_us != 0 {
        row.running_us = event.running_us;
        row.place = place;
    }
    if event.ended_us != 0 {
        row.ended_us = event.ended_us;
    }
    if let Some(error) = event.error {
        row.error = Some(Box::new(error));
    }
}

/// What is the same for every attempt: the name, the owner, the actor, the parent, the
/// submission.
fn fill_shared(row: &mut Row, event: &TaskEvent, name: u32, owner: u32) {
    if name != 0 {
        row.name = name;
    }
    if event.submitted_us != 0 && owner != 0 {
        row.owner = owner;
    }
    row.actor = event.actor.or(row.actor);
    row.parent = event.parent.or(row.parent);
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
            task: [id; 16],
            status: status as i32,
            attempt,
            ..Default::default()
        }
    }

    fn batch(names: &[&str], events: Vec<TaskEvent>) -> AddTaskEventsRequest {
        let packed = EventBatch {
            names: names.iter().map(|n| n.to_string()).collect(),
            events,
        }
        .encode();
        AddTaskEventsRequest {
            job_id: 1,
            worker_id: vec![7; 16].into(),
            node_id: vec![8; 16].into(),
            pid: 42,
            packed: packed.into(),
            dropped: 0,
            address: "10.0.0.1:5000".into(),
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
        t.add(batch(&[], vec![ran])).unwrap();
        // The owner's submission arrives after the worker's end: it names the task only.
        let mut submitted = event(1, S::PendingNodeAssignment, 0);
        submitted.name = 1;
        submitted.submitted_us = 5;
        t.add(AddTaskEventsRequest {
            pid: 1,
            ..batch(&["app::f"], vec![submitted])
        })
        .unwrap();
        let rows = list(&t, &[]).tasks;
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.owner_address, "10.0.0.1:5000", "the submitter's address");
        assert_eq!(
            (r.status, r.name.as_str(), r.pid),
            (S::Finished as i32, "app::f", 42)
        );
        assert_eq!((r.submitted_us, r.running_us, r.ended_us), (5, 10, 20));
        assert_eq!(r.node_id.to_vec(), vec![8; 16]);
    }

    #[test]
    fn a_finished_jobs_unended_tasks_fail() {
        let t = TaskTable::default();
        t.add(batch(
            &["f"],
            vec![event(1, S::Running, 0), event(2, S::Finished, 0)],
        ))
        .unwrap();
        assert_eq!(t.fail_unfinished(99, 5), 0, "another job's");
        assert_eq!(t.fail_unfinished(1, 500), 1);
        let rows = list(&t, &[]).tasks;
        let by_id = |i: u8| rows.iter().find(|r| r.task_id[0] == i).unwrap();
        assert_eq!(by_id(1).status, S::Failed as i32);
        assert_eq!(
            (by_id(1).error_type.as_str(), by_id(1).ended_us),
            ("WORKER_DIED", 500)
        );
        assert_eq!(by_id(2).status, S::Finished as i32);
        // The task's own end, reported late, replaces the job's.
        let mut ended = event(1, S::Finished, 0);
        ended.ended_us = 450;
        t.add(batch(&[], vec![ended])).unwrap();
        let rows = list(&t, &[]).tasks;
        let r = rows.iter().find(|r| r.task_id[0] == 1).unwrap();
        assert_eq!(
            (r.status, r.error_type.as_str(), r.ended_us),
            (S::Finished as i32, "", 450)
        );
        // A late word that is not an end (the worker's start) leaves the failure.
        assert_eq!(t.fail_unfinished(1, 600), 0);
        t.add(batch(&[], vec![event(3, S::Running, 0)])).unwrap();
        assert_eq!(t.fail_unfinished(1, 700), 1);
        let mut started = event(3, S::Running, 0);
        started.running_us = 650;
        t.add(batch(&[], vec![started])).unwrap();
        let rows = list(&t, &[]).tasks;
        let r = rows.iter().find(|r| r.task_id[0] == 3).unwrap();
        assert_eq!(
            (r.status, r.error_type.as_str()),
            (S::Failed as i32, "WORKER_DIED")
        );
    }

    #[test]
    fn a_retry_starts_its_run_again() {
        let t = TaskTable::default();
        let mut failed = event(1, S::Failed, 0);
        failed.error = Some(("WORKER_DIED".into(), "gone".into()));
        failed.name = 1;
        t.add(batch(&["f"], vec![failed])).unwrap();
        t.add(batch(&[], vec![event(1, S::PendingNodeAssignment, 1)]))
            .unwrap();
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
                e.name = 1 + u32::from(i % 2);
                e.submitted_us = u64::from(i) + 1;
                e
            })
            .collect();
        t.add(batch(&["even", "odd"], events)).unwrap();
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
        assert!(t
            .add(AddTaskEventsRequest {
                packed: vec![0xff, 0xff].into(),
                ..batch(&[], vec![])
            })
            .is_err());
    }

    #[test]
    fn past_the_bound_the_oldest_go_and_are_counted() {
        let t = TaskTable::with_bound(4);
        t.add(batch(
            &[],
            (0..6u8).map(|i| event(i, S::Running, 0)).collect(),
        ))
        .unwrap();
        assert_eq!(t.len(), 4);
        let reply = list(&t, &[]);
        assert_eq!(reply.dropped, 2);
        assert!(reply.tasks.iter().all(|r| r.task_id[0] >= 2));
        t.forget_job(1);
        assert_eq!(t.len(), 0);
    }
}
