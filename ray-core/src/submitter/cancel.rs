//! Cancelling a task or an actor call this process submitted (Ray's `ray.cancel`): one still
//! queued here is failed at once; one in flight is marked, and its worker told (or, with
//! `force`, killed); its answer then becomes `TaskCancelled` unless it is a value.

use super::{fail_task, normal::return_lease, Submitter};
use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::ownership::Ownership;
use ray_common::TaskId;
use std::sync::Arc;

/// The error of a cancelled task.
pub(super) fn cancelled(function: &str) -> Error {
    Error::TaskCancelled {
        function: function.to_string(),
    }
}

/// A reply's value for a task in flight that was cancelled: its value if it finished with
/// one, else the cancellation (the error it ended with is the cancel's doing).
pub(super) fn answer_of_cancelled(
    value: Option<ray_proto::ObjectValue>,
    function: &str,
) -> Option<ray_proto::ObjectValue> {
    match value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(ray_proto::object_value::Kind::Error(_)) | None => Some(ray_proto::ObjectValue {
            kind: Some(ray_proto::object_value::Kind::Error(
                cancelled(function).to_proto(),
            )),
            contained: Vec::new(),
        }),
        Some(_) => value,
    }
}

impl Submitter {
    /// Cancels the task or call whose first return is `id`, answering on `reply` once it
    /// is settled: failed here, or (running elsewhere) its worker told. A finished one, or
    /// one this process does not know, is left as it is (as Ray does).
    pub(super) fn cancel(
        &mut self,
        own: &Arc<Ownership>,
        id: ObjectId,
        force: bool,
        recursive: bool,
        reply: Option<Reply>,
    ) {
        match self.cancel_here(own, id, force) {
            Ok(Some((worker, task))) => tell_worker(own, worker, task, recursive, reply),
            other => {
                if let Some(reply) = reply {
                    let _ = reply.send(other.map(|_| ()));
                }
            }
        }
    }

    /// The part of [`Submitter::cancel`] done here: the address of the worker to tell and
    /// the task's id (its first return), if the task is in flight there. `id` may be any of
    /// the task's returns.
    fn cancel_here(
        &mut self,
        own: &Arc<Ownership>,
        id: ObjectId,
        force: bool,
    ) -> Result<Option<(Arc<str>, ObjectId)>> {
        let makes = |first: ObjectId, n: u32| crate::ids::return_ids(first, n).any(|r| r == id);
        for q in self.queues.values_mut() {
            if let Some(i) = q
                .tasks
                .iter()
                .position(|t| makes(t.return_id, t.num_returns))
            {
                let task = q.tasks.remove(i).expect("found");
                fail_task(Some(own), &task, cancelled(task.function));
                return Ok(None);
            }
        }
        for (_, lease) in self.leases.values_mut() {
            let Some(first) = lease
                .in_flight
                .values()
                .find(|t| makes(t.return_id, t.num_returns))
                .map(|t| t.return_id)
            else {
                continue;
            };
            self.cancelling.insert(first);
            if force {
                // Nothing more goes to it; its death answers what it had (this one cancelled,
                // the others retried as after any worker death).
                lease.stalled = true;
                return_lease(lease, true);
                return Ok(None);
            }
            return Ok(Some((lease.core_worker_address.clone(), first)));
        }
        for q in self.actors.values_mut() {
            if let Some(i) = q.pending.iter().position(|c| c.makes(id)) {
                let call = q.pending.remove(i).expect("found");
                call.fail(own, cancelled(&call.label()));
                return Ok(None);
            }
            if let Some(first) = q
                .in_flight
                .values()
                .find(|c| c.makes(id))
                .map(|c| c.return_id)
            {
                if force {
                    return Err(Error::InvalidArgument(
                        "force cancel is not supported for actor calls (it would kill the actor)"
                            .into(),
                    ));
                }
                self.cancelling.insert(first);
                return Ok(Some((q.address.clone(), first)));
            }
        }
        if !own.store.is_ready(&id) && own.store.contains(&id) {
            // Submitted, its arguments awaited: it fails once they are there.
            self.cancel_on_arrival.insert(id);
        }
        Ok(None)
    }

    /// Cancels everything this process submitted from within task `parent` (a cancelled
    /// task's children, for `recursive`), recursively.
    pub(super) fn cancel_children(&mut self, own: &Arc<Ownership>, parent: TaskId) {
        let mine = |p: &Option<TaskId>| *p == Some(parent);
        let mut ids: Vec<ObjectId> = Vec::new();
        for q in self.queues.values() {
            ids.extend(
                q.tasks
                    .iter()
                    .filter(|t| mine(&t.parent))
                    .map(|t| t.return_id),
            );
        }
        for (_, lease) in self.leases.values() {
            ids.extend(
                lease
                    .in_flight
                    .values()
                    .filter(|t| mine(&t.parent))
                    .map(|t| t.return_id),
            );
        }
        for q in self.actors.values() {
            ids.extend(
                q.pending
                    .iter()
                    .filter(|c| mine(&c.parent))
                    .map(|c| c.return_id),
            );
            ids.extend(
                q.in_flight
                    .values()
                    .filter(|c| mine(&c.parent))
                    .map(|c| c.return_id),
            );
        }
        for id in ids {
            self.cancel(own, id, false, true, None);
        }
    }
}

/// Where a cancel is answered.
pub(super) type Reply = crossbeam_channel::Sender<Result<()>>;

/// Tells the worker at `address` that task `id` is cancelled (its tasks too, if
/// `recursive`), then answers `reply`.
fn tell_worker(
    own: &Arc<Ownership>,
    address: Arc<str>,
    id: ObjectId,
    recursive: bool,
    reply: Option<Reply>,
) {
    let Some(link) = own.link.clone() else {
        return;
    };
    tokio::spawn(async move {
        let asked = match link.connect.core_worker(&address) {
            Ok(worker) => {
                worker
                    .cancel_task(ray_proto::CancelTaskRequest {
                        task_id: id.0.to_vec().into(),
                        recursive,
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = asked {
            // Its answer (or its death) still settles the task.
            tracing::debug!(%address, error = %e, "the worker of a cancelled task was not told");
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    });
}
