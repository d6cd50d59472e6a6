//! Normal tasks: per-shape queues, worker leases from the node manager, and the pipelined
//! stream of task frames to each leased worker; retries when a leased worker dies.

use super::resolver::{resolve_now, wait_ready_async};
use super::{
    complete_from_reply, fail_task, register_borrowers, release_in_band, Event, Submitter,
};
use crate::args::{ArgKind, ArgSpec};
use crate::data_plane::{self, ConnId, FrameSender};
use crate::error::{Error, Result};
use crate::group::GroupGate;
use crate::ids::ObjectId;
use crate::ownership::Ownership;
use crate::task_events::Name;
use ray_common::rpc::with_retries;
use ray_common::rpc::NodeManagerApi;
use ray_common::rpc::RpcErrorKind;
use ray_common::LeaseId;
use ray_scheduler::ResourceSet;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a lease request is asked again after transport failures before it fails.
const LEASE_RETRY_DEADLINE: Duration = Duration::from_secs(30);

/// How long a lease request spilled to another node retries that node before this node is
/// asked again where to go.
const SPILL_PATIENCE: Duration = Duration::from_millis(500);

/// Granted workers that cannot be reached, in a row, before a lease request fails.
const MAX_UNREACHABLE_GRANTS: u32 = 3;

/// Leases requested at once per resource shape (Ray caps pending lease requests too).
const MAX_LEASE_REQUESTS: usize = 4;
/// A lease with nothing to do for this long goes back to the node manager.
pub(super) const IDLE_LEASE_RETURN: Duration = Duration::from_millis(100);
/// Tasks pipelined on one lease when tasks are short; long tasks get one at a time so that
/// they spread over workers.
const PIPELINE_DEPTH: usize = 64;
const SHORT_TASK_MICROS: f64 = 2_000.0;

/// A task waiting to run, owned by the submitter.
pub(crate) struct PendingTask {
    pub function: &'static str,
    pub shape: ResourceSet,
    pub shape_key: Arc<str>,
    /// Where it may run (`None`: the default policy).
    pub strategy: Option<ray_proto::Strategy>,
    /// Its worker's environment beyond the job's.
    pub env: Vec<ray_proto::EnvVar>,
    pub args: Vec<ArgSpec>,
    /// Its first result's id (the others follow it: [`crate::ids::return_ids`]).
    pub return_id: ObjectId,
    /// How many results it makes (1 unless the function says `num_returns`).
    pub num_returns: u32,
    /// Retries left after a worker dies (or, with `retry_exceptions`, after the task failed):
    /// -1 means forever.
    pub retries_left: i32,
    /// Which run this is: 0 the first, then one more at each retry (the state API's
    /// attempt number; sent to the worker in the task's frame).
    pub attempt: u32,
    /// Whether its task events are recorded (see `TaskEvents::submitted`).
    pub tracked: bool,
    /// Whether a task that returned `Err` or panicked is retried too.
    pub retry_exceptions: bool,
    /// The task of this process it was submitted from (cancelled with it, `recursive`).
    pub parent: Option<ray_common::TaskId>,
    /// Whether the tasks it submits run in its placement group too.
    pub capture: bool,
    /// A generator: its items come as replies of their own before the one that ends it.
    pub streaming: bool,
    /// Its placement group's gate, if it runs in one: it waits there until the group is
    /// created.
    pub gate: Option<tokio::sync::watch::Receiver<crate::group::GroupGate>>,
    /// Argument values, filled once every dependency is ready.
    pub resolved: Vec<ray_proto::ObjectValue>,
}

impl PendingTask {
    /// It runs again: a new attempt, waiting for a worker.
    pub(super) fn retry(&mut self, own: &Ownership) {
        self.attempt += 1;
        if self.tracked {
            let pending = ray_proto::TaskStatus::PendingNodeAssignment;
            own.task_events.moved(self.return_id, self.attempt, pending);
        }
    }
}

pub(crate) struct Lease {
    pub(super) id: LeaseId,
    /// The node manager that granted it (this node's, or the one the request spilled to).
    pub(super) raylet: Arc<dyn NodeManagerApi>,
    pub(super) pid: u32,
    pub(super) core_worker_address: Arc<str>,
    pub(super) tx: FrameSender,
    pub(super) in_flight: HashMap<u64, PendingTask>,
    pub(super) next_seq: u64,
    pub(super) idle_since: Option<Instant>,
    /// The worker sent a task back (it is blocked): push nothing more until it answers.
    pub(super) stalled: bool,
}

pub(super) struct ShapeQueue {
    pub(super) shape: ResourceSet,
    /// Its tasks' strategy and their worker's environment (the queue's key includes both).
    pub(super) strategy: Option<ray_proto::Strategy>,
    pub(super) env: Vec<ray_proto::EnvVar>,
    /// The node its tasks' arguments mostly sit on, when it is another (the key names it).
    pub(super) locality: Vec<ray_proto::NodeBytes>,
    /// `shape` as task frames carry it, encoded once.
    pub(super) shape_wire: bytes::Bytes,
    pub(super) tasks: VecDeque<PendingTask>,
    pub(super) leases: Vec<LeaseId>,
    pub(super) requesting: usize,
    pub(super) avg_exec_micros: f64,
}

impl Submitter {
    pub(super) fn queue(&mut self, key: &Arc<str>, shape: &ResourceSet) -> &mut ShapeQueue {
        self.queues
            .entry(key.clone())
            .or_insert_with(|| ShapeQueue {
                shape: shape.clone(),
                strategy: None,
                env: Vec::new(),
                locality: Vec::new(),
                shape_wire: prost::Message::encode_to_vec(&ray_common::resources::to_resources(
                    shape,
                ))
                .into(),
                tasks: VecDeque::new(),
                leases: Vec::new(),
                requesting: 0,
                avg_exec_micros: SHORT_TASK_MICROS * 4.0,
            })
    }

    /// Waits for the task's ref arguments (off the submitter's loop), then queues it.
    pub(super) fn resolve(&mut self, own: &Arc<Ownership>, mut task: PendingTask) {
        let needs_wait = task.args.iter().any(|a| match &a.0 {
            ArgKind::Ref(r) => !own.store.is_ready(&r.id),
            ArgKind::Refs(rs) => rs.iter().any(|r| !own.store.is_ready(&r.id)),
            _ => false,
        });
        let closed_gate = task
            .gate
            .as_ref()
            .is_some_and(|g| !matches!(*g.borrow(), GroupGate::Ready));
        // A list of refs is copied into one value, which may read (and pull) shared memory:
        // never on this loop.
        let has_list = task.args.iter().any(|a| matches!(&a.0, ArgKind::Refs(_)));
        task.tracked = own.task_events.submitted(
            task.return_id,
            Name::Static(task.function),
            None,
            task.parent.map(|p| p.0),
            needs_wait || closed_gate,
        );
        if !needs_wait && !closed_gate && !has_list {
            match resolve_now(own, &task) {
                Ok(values) => {
                    task.resolved = values;
                    self.handle(Event::Resolved(task));
                }
                Err(e) => fail_task(Some(own), &task, e),
            }
            return;
        }
        let refs = task
            .args
            .iter()
            .flat_map(|a| a.refs())
            .map(|r| r.id)
            .collect();
        let waiting = super::explain::Waiting {
            args: refs,
            group: closed_gate,
        };
        self.waiting.insert(task.return_id, waiting);
        let guard = super::explain::WaitGuard {
            id: task.return_id,
            events: self.events.clone(),
        };
        let own = own.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let _waited = guard;
            if let Some(gate) = &mut task.gate {
                let opened = gate
                    .wait_for(|g| !matches!(g, GroupGate::Pending))
                    .await
                    .map(|g| g.clone());
                let why = match opened {
                    Ok(GroupGate::Ready) => None,
                    Ok(GroupGate::Failed(why)) => Some(why),
                    Ok(GroupGate::Pending) | Err(_) => {
                        Some("the session ended before its placement group was created".into())
                    }
                };
                if let Some(reason) = why {
                    let e = Error::Unschedulable {
                        function: task.function.to_string(),
                        reason,
                    };
                    return fail_task(Some(&own), &task, e);
                }
            }
            for a in &task.args {
                if matches!(&a.0, ArgKind::Ref(_) | ArgKind::Refs(_)) {
                    for r in a.refs() {
                        wait_ready_async(&own, r).await;
                    }
                }
            }
            let resolved = if has_list {
                let own2 = own.clone();
                let run = move || (resolve_now(&own2, &task), task);
                match tokio::task::spawn_blocking(run).await {
                    Ok((resolved, back)) => {
                        task = back;
                        resolved
                    }
                    Err(_) => return,
                }
            } else {
                resolve_now(&own, &task)
            };
            match resolved {
                Ok(values) => {
                    task.resolved = values;
                    if task.tracked {
                        let pending = ray_proto::TaskStatus::PendingNodeAssignment;
                        own.task_events.moved(task.return_id, task.attempt, pending);
                    }
                    let _ = events.send(Event::Resolved(task));
                }
                Err(e) => fail_task(Some(&own), &task, e),
            }
        });
    }

    pub(super) fn dispatch(&mut self, own: &Arc<Ownership>, key: &Arc<str>) {
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        let depth = if q.avg_exec_micros < SHORT_TASK_MICROS {
            PIPELINE_DEPTH
        } else {
            1
        };
        while !q.tasks.is_empty() {
            let best = q
                .leases
                .iter()
                .filter_map(|id| self.leases.get(id).map(|(_, l)| (id, l)))
                .filter(|(_, l)| !l.stalled && l.in_flight.len() < depth)
                .min_by_key(|(_, l)| l.in_flight.len())
                .map(|(id, _)| *id);
            let Some(lease_id) = best else {
                let wanted = q.tasks.len().min(MAX_LEASE_REQUESTS);
                tracing::debug!(%key, queued = q.tasks.len(), leases = q.leases.len(), requesting = q.requesting, "no lease free");
                if q.requesting < wanted
                    && q.leases.len() + q.requesting < q.tasks.len() + q.leases.len()
                {
                    q.requesting += 1;
                    request_lease(
                        own,
                        &self.events,
                        key.clone(),
                        q.shape.clone(),
                        q.strategy.clone(),
                        q.env.clone(),
                        q.locality.clone(),
                    );
                }
                break;
            };
            let task = q.tasks.pop_front().expect("checked non-empty");
            if q.tasks.is_empty() && q.tasks.capacity() > 4096 {
                // A burst drained: do not keep its million slots.
                q.tasks.shrink_to_fit();
            }
            let (_, lease) = self.leases.get_mut(&lease_id).expect("listed lease exists");
            let seq = lease.next_seq;
            lease.next_seq += 1;
            lease.idle_since = None;
            let frame = ray_proto::TaskFrame {
                seq,
                task_id: task.return_id.0.to_vec().into(),
                function: task.function.to_string(),
                args: task.resolved.clone(),
                return_id: task.return_id.0.to_vec().into(),
                owner_address: own.me.address.to_string(),
                job_id: own.me.job_id,
                actor_id: Default::default(),
                shape: q.shape_wire.clone(),
                // 0 (not sent) for the usual single return.
                num_returns: if task.num_returns > 1 {
                    task.num_returns
                } else {
                    0
                },
                capture_group: if task.capture {
                    capture_group(&q.shape)
                } else {
                    Default::default()
                },
                streaming: task.streaming,
                attempt: task.attempt,
                untracked: !task.tracked,
            };
            if lease.tx.send(frame, self.flush).is_err() {
                // The connection is closing; its Disconnected event will requeue in-flight
                // tasks, this one included.
            }
            lease.in_flight.insert(seq, task);
        }
    }

    pub(super) fn on_reply(
        &mut self,
        own: &Arc<Ownership>,
        lease_id: LeaseId,
        frame: ray_proto::ReplyFrame,
    ) {
        let Some((key, lease)) = self.leases.get_mut(&lease_id) else {
            return;
        };
        let key = key.clone();
        if frame.stream_item {
            // An item of a generator: the task goes on.
            if let (Some(task), Some(value), Ok(item)) = (
                lease.in_flight.get(&frame.seq),
                frame.value,
                crate::ids::id16(&frame.item_id, "item id"),
            ) {
                own.stream_item(
                    task.return_id,
                    frame.item_index,
                    ObjectId(item),
                    crate::memory_store::Stored::from_proto(value),
                );
            }
            return;
        }
        let Some(task) = lease.in_flight.remove(&frame.seq) else {
            return;
        };
        if frame.requeue {
            tracing::debug!(
                lease = %lease_id,
                in_flight = lease.in_flight.len(),
                "task handed back by a blocked worker"
            );
            lease.stalled = true;
            if let Some(q) = self.queues.get_mut(&key) {
                q.tasks.push_front(task);
            }
            self.dispatch(own, &key);
            return;
        }
        lease.stalled = false;
        if lease.in_flight.is_empty() {
            lease.idle_since = Some(Instant::now());
        }
        let borrower = lease.core_worker_address.clone();
        if let Some(q) = self.queues.get_mut(&key) {
            q.avg_exec_micros = 0.8 * q.avg_exec_micros + 0.2 * frame.exec_micros as f64;
        }
        let mut task = task;
        let mut frame = frame;
        if !self.cancelling.is_empty() && self.cancelling.remove(&task.return_id) {
            frame.value = super::cancel::answer_of_cancelled(frame.value.take(), task.function);
            let is_error = matches!(
                frame.value.as_ref().and_then(|v| v.kind.as_ref()),
                Some(ray_proto::object_value::Kind::Error(_))
            );
            if is_error {
                // Cancelled, not a value: every return says so (see `complete_from_reply`).
                frame.more_values.clear();
            }
            // Not retried: the error is the cancel's.
            task.retry_exceptions = false;
        }
        if task.retry_exceptions && task.retries_left != 0 && failed_in_user_code(&frame.value) {
            task.retries_left -= i32::from(task.retries_left > 0);
            task.retry(own);
            tracing::info!(
                function = task.function,
                retries_left = task.retries_left,
                "task failed; retrying it (retry_exceptions)"
            );
            release_in_band(own, &frame.released_ids, &borrower);
            // The task, queued again, holds its arguments meanwhile.
            register_borrowers(own, &frame.borrowed_ids, borrower, ());
            if let Some(q) = self.queues.get_mut(&key) {
                q.tasks.push_back(task);
            }
            self.dispatch(own, &key);
            return;
        }
        complete_from_reply(
            own,
            task.return_id,
            task.num_returns,
            frame.value,
            frame.more_values,
            task.tracked.then_some(task.attempt),
        );
        release_in_band(own, &frame.released_ids, &borrower);
        register_borrowers(own, &frame.borrowed_ids, borrower, task);
        self.dispatch(own, &key);
        if self.blocked {
            self.return_idle_leases(Duration::ZERO);
        }
    }

    pub(super) fn on_disconnect(&mut self, own: &Arc<Ownership>, lease_id: LeaseId, why: String) {
        let Some((key, lease)) = self.leases.remove(&lease_id) else {
            return;
        };
        return_lease(&lease, true);
        let mut in_flight: Vec<(u64, PendingTask)> = lease.in_flight.into_iter().collect();
        in_flight.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        in_flight.retain(|(_, task)| {
            let cancelled = !self.cancelling.is_empty() && self.cancelling.remove(&task.return_id);
            if cancelled {
                fail_task(Some(own), task, super::cancel::cancelled(task.function));
            }
            !cancelled
        });
        let q = self.queue(&key, &ResourceSet::new());
        q.leases.retain(|l| *l != lease_id);
        for (_, mut task) in in_flight {
            // Its placement group was removed (its workers are killed with it): not retried.
            let removed = task.gate.as_ref().and_then(|g| match &*g.borrow() {
                GroupGate::Failed(why) => Some(why.clone()),
                _ => None,
            });
            if let Some(reason) = removed {
                let e = Error::Unschedulable {
                    function: task.function.to_string(),
                    reason,
                };
                fail_task(Some(own), &task, e);
                continue;
            }
            if task.retries_left != 0 {
                if task.retries_left > 0 {
                    task.retries_left -= 1;
                }
                task.retry(own);
                tracing::info!(
                    function = task.function,
                    pid = lease.pid,
                    "worker died; retrying task"
                );
                q.tasks.push_front(task);
            } else {
                let e = Error::WorkerDied {
                    function: task.function.to_string(),
                    message: format!("worker pid {} exited: {why}", lease.pid),
                };
                fail_task(Some(own), &task, e);
            }
        }
        self.dispatch(own, &key);
    }

    /// Takes a queued task for [`Event::Steal`]. Looks at the first few tasks of each queue
    /// only, so a steal costs the same whatever the queue's length.
    pub(super) fn steal(
        &mut self,
        wanted: &HashSet<ObjectId>,
        fits: &ResourceSet,
    ) -> Option<PendingTask> {
        const LOOK_AT: usize = 64;
        for q in self.queues.values_mut() {
            if !q.shape.fits_in(fits) {
                continue;
            }
            let plain = |t: &PendingTask| {
                t.args
                    .iter()
                    .all(|a| matches!(&a.0, ArgKind::Value(_, nested) if nested.is_empty()))
            };
            // A task that must run at most once keeps a process of its own: run inline, a
            // crash would take the waiting task (and its retries) with it.
            let found = q.tasks.iter().take(LOOK_AT).position(|t| {
                wanted.contains(&t.return_id) && t.retries_left != 0 && !t.streaming && plain(t)
            });
            if let Some(i) = found {
                return q.tasks.remove(i);
            }
        }
        None
    }

    /// Gives back leases idle for longer than `hold` whose queue is empty.
    pub(super) fn return_idle_leases(&mut self, hold: Duration) {
        let now = Instant::now();
        let idle: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (key, l))| {
                l.in_flight.is_empty()
                    && l.idle_since.is_some_and(|t| now - t >= hold)
                    && self.queues.get(key).is_none_or(|q| q.tasks.is_empty())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some((key, lease)) = self.leases.remove(&id) {
                if let Some(q) = self.queues.get_mut(&key) {
                    q.leases.retain(|l| *l != id);
                }
                return_lease(&lease, false);
            }
        }
    }
}

/// Whether a task's result is an error of the task's own (it returned `Err` or panicked), the
/// kind `retry_exceptions` retries.
pub(crate) fn failed_in_user_code(value: &Option<ray_proto::ObjectValue>) -> bool {
    matches!(
        value.as_ref().and_then(|v| v.kind.as_ref()),
        Some(ray_proto::object_value::Kind::Error(e)) if e.kind == ray_proto::ErrorKind::Task as i32
    )
}

/// Gives `lease` back to the node manager that granted it.
pub(super) fn return_lease(lease: &Lease, worker_failed: bool) {
    let raylet = lease.raylet.clone();
    let lease_id = lease.id.0;
    tokio::spawn(async move {
        let _ = raylet
            .return_worker(ray_proto::ReturnWorkerRequest {
                lease_id,
                worker_failed,
            })
            .await;
    });
}

/// The node holding most of `task`'s argument bytes in its store, when that is another
/// node and the task takes the default strategy (Ray's locality-aware leasing): its lease
/// is asked with that node preferred, and the arguments need no pull.
pub(super) fn locality(own: &Ownership, task: &PendingTask) -> Option<(ray_common::NodeId, u64)> {
    if task.strategy.is_some() {
        return None;
    }
    let mut by_node: Vec<(ray_common::NodeId, u64)> = Vec::new();
    for v in &task.resolved {
        let Some(ray_proto::object_value::Kind::Plasma(p)) = &v.kind else {
            continue;
        };
        let Ok(node) = ray_common::NodeId::from_wire(&p.node_id) else {
            continue;
        };
        match by_node.iter_mut().find(|(n, _)| *n == node) {
            Some((_, bytes)) => *bytes += p.size,
            None => by_node.push((node, p.size)),
        }
    }
    // Most bytes first; ties to this node (no preference needed then).
    let here = own.me.node_id;
    by_node
        .into_iter()
        .max_by_key(|(n, bytes)| (*bytes, *n == here))
        .filter(|(n, _)| *n != here)
}

fn request_lease(
    own: &Arc<Ownership>,
    events: &mpsc::UnboundedSender<Event>,
    key: Arc<str>,
    shape: ResourceSet,
    strategy: Option<ray_proto::Strategy>,
    env: Vec<ray_proto::EnvVar>,
    locality: Vec<ray_proto::NodeBytes>,
) {
    let Some(c) = &own.link else {
        return;
    };
    let raylet = c.raylet.clone();
    let events = events.clone();
    let token = c.token.clone();
    let dialer = c.dialer.clone();
    let clock = c.clock.clone();
    // Workers name themselves, so their leases come back if they die; a driver's die with it.
    let job_id = own.me.job_id;
    let node = own.me.node_id;
    let local_node = c.store.local_node();
    let requester: Vec<u8> = if own.me.is_worker {
        own.me.worker_id.to_vec()
    } else {
        Vec::new()
    };
    let node_managers = c.node_managers.clone();
    let gcs = c.gcs.clone();
    tokio::spawn(async move {
        // A warning here if it waits for a shape no node can hold, until it is answered.
        let _notice = super::infeasible::watch_lease(gcs, clock.clone(), shape.clone());
        let mut req = ray_proto::LeaseRequest {
            shape: Some(ray_common::resources::to_resources(&shape)),
            requester_id: requester.into(),
            for_actor: false,
            job_id,
            request_id: ray_common::ids::request_id(),
            grant_or_reject: false,
            strategy,
            env,
            locality,
            requester_node: local_node.map(|n| n.to_vec().into()).unwrap_or_default(),
            share_process: false,
        };
        let local = raylet;
        let mut raylet: Arc<dyn NodeManagerApi>;
        // A granted worker that cannot be reached (it died meanwhile) costs a lease, not the
        // queued tasks: the request is asked again, a few times.
        let mut unreachable_grants = 0;
        let ev = 'lease: loop {
            req.request_id = ray_common::ids::request_id();
            let asked = clock.now();
            let answer = loop {
                // A request whose answer was lost is asked again under the same id: the node
                // manager gives a lease it granted already back, rather than a second one.
                raylet = local.clone();
                req.grant_or_reject = false;
                let answer = with_retries(&clock, LEASE_RETRY_DEADLINE, || {
                    raylet.request_worker_lease(req.clone())
                })
                .await;
                // Spilled to another node: asked there, where it is granted or refused (never
                // spilled again).
                let to = match &answer {
                    Ok(ray_proto::LeaseReply {
                        result: Some(ray_proto::lease_reply::Result::Spillback(to)),
                    }) => to.node_manager_address.clone(),
                    _ => break answer,
                };
                raylet = match node_managers.get(&to) {
                    Ok(there) => there,
                    Err(e) => break Err(e),
                };
                req.grant_or_reject = true;
                req.request_id = ray_common::ids::request_id();
                let there = with_retries(&clock, SPILL_PATIENCE, || {
                    raylet.request_worker_lease(req.clone())
                })
                .await;
                match there {
                    // That node is unreachable (dying, say): this node's view moves on, so ask
                    // it again where to go.
                    Err(e) if e.is_transient() && clock.now() - asked < LEASE_RETRY_DEADLINE => {
                        tracing::debug!(node = %to, error = %e, "the node a lease spilled to does not answer; placing it again");
                        req.request_id = ray_common::ids::request_id();
                        clock.sleep(SPILL_PATIENCE).await;
                    }
                    other => break other,
                }
            };
            let ev = match answer {
            // The node's worker limit held the request past its deadline.
            Err(e) if e.kind == RpcErrorKind::Exhausted => Event::LeaseFailed(
                key,
                Error::Unschedulable {
                    function: String::new(),
                    reason: e.message,
                },
            ),
            // The node manager stayed unreachable past the deadline: to this process its
            // node is gone (Ray's driver dies with its raylet; here its tasks fail).
            Err(e) if e.is_transient() => Event::LeaseFailed(
                key,
                Error::NodeDied {
                    node: node.to_string(),
                    cause: format!(
                        "its node manager answered no lease request for {LEASE_RETRY_DEADLINE:?} ({})",
                        e.message
                    ),
                },
            ),
            Err(e) => Event::LeaseFailed(key, Error::Runtime(format!("lease: {}", e.message))),
            Ok(reply) => match reply.result {
                Some(ray_proto::lease_reply::Result::Granted(g)) => {
                    match connect_lease(&g, raylet.clone(), local_node, &token, events.clone(), &dialer)
                        .await
                    {
                        Ok(lease) => Event::LeaseGranted(key, lease),
                        Err(e) => {
                            let _ = raylet
                                .return_worker(ray_proto::ReturnWorkerRequest {
                                    lease_id: g.lease_id,
                                    worker_failed: true,
                                })
                                .await;
                            unreachable_grants += 1;
                            if unreachable_grants < MAX_UNREACHABLE_GRANTS {
                                tracing::debug!(error = %e, "a granted worker cannot be reached; asking again");
                                clock.sleep(SPILL_PATIENCE).await;
                                continue 'lease;
                            }
                            Event::LeaseFailed(key, e)
                        }
                    }
                }
                Some(ray_proto::lease_reply::Result::Infeasible(reason)) => Event::LeaseFailed(
                    key,
                    Error::Unschedulable {
                        function: String::new(),
                        reason,
                    },
                ),
                Some(ray_proto::lease_reply::Result::Spillback(_)) => Event::LeaseFailed(
                    key,
                    Error::Runtime("a lease request spilled twice".into()),
                ),
                None => Event::LeaseFailed(key, Error::Runtime("empty lease reply".into())),
            },
        };
            break ev;
        };
        let _ = events.send(ev);
    });
}

/// Connects to a leased worker's task socket.
async fn connect_lease(
    g: &ray_proto::Lease,
    raylet: Arc<dyn NodeManagerApi>,
    here: Option<ray_common::NodeId>,
    token: &str,
    events: mpsc::UnboundedSender<Event>,
    dialer: &data_plane::Dialer,
) -> Result<Lease> {
    let id = LeaseId(g.lease_id);
    let target = data_plane::task_target(here, &g.node_id, &g.task_socket, &g.task_address);
    let tx = dialer
        .connect(target, token, ConnId::Lease(id), events)
        .await?;
    Ok(Lease {
        id,
        raylet,
        pid: g.pid,
        core_worker_address: g.core_worker_address.as_str().into(),
        tx,
        in_flight: HashMap::new(),
        next_seq: 1,
        idle_since: Some(Instant::now()),
        stalled: false,
    })
}

/// The wire id of the placement group whose bundle `shape` asks for (empty: none).
fn capture_group(shape: &ResourceSet) -> bytes::Bytes {
    ray_scheduler::bundles::group_of(shape)
        .and_then(ray_common::PlacementGroupId::from_hex)
        .map(|id| id.to_vec().into())
        .unwrap_or_default()
}
