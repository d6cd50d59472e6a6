//! Why a task or actor call of this process has not run yet, as the submitter's own state
//! tells it: its arguments or its placement group awaited, its place in the queue for a
//! worker lease, the worker it was pushed to; a call's actor not connected, calls before
//! it (the state API's "why pending" asks the owner this).

use super::Submitter;
use crate::ids::ObjectId;
use crate::ownership::Ownership;
use ray_proto::{ArgWait, TaskExplanation};

/// A task whose arguments (or placement group) are awaited before it is queued.
pub(super) struct Waiting {
    /// Its arguments passed by ref.
    pub args: Vec<ObjectId>,
    /// Its placement group was not created when it was submitted.
    pub group: bool,
}

/// Sends [`super::Event::Waited`] when the wait it is held by ends, however it ends.
pub(super) struct WaitGuard {
    pub id: ObjectId,
    pub events: tokio::sync::mpsc::UnboundedSender<super::Event>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let _ = self.events.send(super::Event::Waited(self.id));
    }
}

impl Submitter {
    /// What this submitter knows of the task whose first return is `id`.
    pub(super) fn explain(&self, own: &Ownership, id: ObjectId) -> TaskExplanation {
        let phase = |p: &str| TaskExplanation {
            phase: p.to_string(),
            ..Default::default()
        };
        for q in self.queues.values() {
            if let Some(at) = q.tasks.iter().position(|t| t.return_id == id) {
                return TaskExplanation {
                    shape: Some(ray_common::resources::to_resources(&q.shape)),
                    tasks_ahead: at as u32,
                    leases_requested: q.requesting as u32,
                    leases_held: q.leases.len() as u32,
                    ..phase("WAITING_FOR_WORKER")
                };
            }
        }
        for (_, lease) in self.leases.values() {
            if lease.in_flight.values().any(|t| t.return_id == id) {
                return TaskExplanation {
                    worker_pid: lease.pid,
                    worker_address: lease.core_worker_address.to_string(),
                    ..phase("SENT_TO_WORKER")
                };
            }
        }
        for q in self.actors.values() {
            if let Some(at) = q.pending.iter().position(|c| c.return_id == id) {
                // Not sent yet: calls before it, its arguments, or the actor itself (not
                // connected: starting, restarting, or its placement awaited).
                let why = match (&q.conn, q.waiting_deps) {
                    (None, _) => "WAITING_FOR_ACTOR",
                    (Some(_), true) => "WAITING_FOR_ARGS",
                    (Some(_), false) => "WAITING_FOR_EARLIER_CALLS",
                };
                return TaskExplanation {
                    tasks_ahead: (at + q.in_flight.len()) as u32,
                    worker_address: q.address.to_string(),
                    ..phase(why)
                };
            }
            if q.in_flight.values().any(|c| c.return_id == id) {
                return TaskExplanation {
                    worker_address: q.address.to_string(),
                    ..phase("SENT_TO_ACTOR")
                };
            }
        }
        match self.waiting.get(&id) {
            Some(w) if w.group => phase("WAITING_FOR_GROUP"),
            Some(w) => TaskExplanation {
                args: w
                    .args
                    .iter()
                    .map(|a| ArgWait {
                        object_id: a.0.to_vec().into(),
                        ready: own.store.is_ready(a),
                    })
                    .collect(),
                ..phase("WAITING_FOR_ARGS")
            },
            None => phase("UNKNOWN"),
        }
    }
}
