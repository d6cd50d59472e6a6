//! Actor method calls: one ordered queue per actor, sent in order over one connection to
//! the actor's process (found through the GCS), resent or failed when that process dies.

use super::resolver::{resolve_args, wait_ready_async};
use super::{complete_from_reply, register_borrowers, release_in_band, Event, Submitter};
use crate::args::{ArgKind, ArgSpec};
use crate::data_plane::{ConnId, FrameSender};
use crate::error::Error;
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use crate::ownership::Ownership;
use crate::ownership::RefInner;
use ray_common::rpc::with_retries;
use ray_common::ActorId;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A method call waiting to run, owned by the submitter.
pub(crate) struct ActorCall {
    pub actor_id: ActorId,
    pub class: Arc<str>,
    pub method: &'static str,
    pub args: Vec<ArgSpec>,
    pub return_id: ObjectId,
    /// How many results it makes (the ids after `return_id`, as a task's).
    pub num_returns: u32,
    /// Whether a call that returned `Err` or panicked is sent again (within
    /// `retries_left`).
    pub retry_exceptions: bool,
    /// Resends left if the actor's process dies with this call in flight: -1 means forever.
    pub retries_left: i32,
    /// 0 the first time it is sent, then one more per resend (the state API's attempt).
    pub attempt: u32,
    /// Whether its task events are recorded (see `TaskEvents::submitted`).
    pub tracked: bool,
    pub resolved: Option<Vec<ray_proto::ObjectValue>>,
    /// Keeps an owner-scoped actor alive until this call is answered (Ray ends an actor
    /// whose handles are gone only after the calls already made). Held, never read.
    #[allow(dead_code)]
    pub lifetime: Option<Arc<RefInner>>,
    /// Its arguments were waited for once: if still not ready, they never will be.
    pub waited: bool,
    /// The task of this process it was made from (cancelled with it, `recursive`).
    pub parent: Option<ray_common::TaskId>,
    /// A generator method's call: its items come as replies of their own before the last.
    pub streaming: bool,
}

impl ActorCall {
    /// Fails every result of the call with `e`.
    pub(super) fn fail(&self, own: &Ownership, e: Error) {
        if self.tracked {
            own.task_events
                .ended(self.return_id.0, self.attempt, Some(&e));
        }
        let e = Arc::new(e);
        for id in crate::ids::return_ids(self.return_id, self.num_returns) {
            own.complete(id, Stored::Failed(e.clone()));
        }
    }

    /// It is sent again: a new attempt, waiting to be sent.
    pub(super) fn resend(&mut self, own: &Ownership) {
        self.attempt += 1;
        if self.tracked {
            let pending = ray_proto::TaskStatus::PendingNodeAssignment;
            own.task_events.moved(self.return_id, self.attempt, pending);
        }
    }

    /// Whether `id` is one of the call's results.
    pub(super) fn makes(&self, id: ObjectId) -> bool {
        crate::ids::return_ids(self.return_id, self.num_returns).any(|r| r == id)
    }

    pub(super) fn label(&self) -> String {
        format!("{}.{}", self.class, self.method)
    }
}

/// The calls of this process to one actor, in the order they were made.
pub(super) struct ActorQueue {
    pub(super) class: Arc<str>,
    pub(super) pending: VecDeque<ActorCall>,
    pub(super) in_flight: std::collections::BTreeMap<u64, ActorCall>,
    pub(super) conn: Option<(u64, FrameSender)>,
    /// The actor process's core-worker address: the borrower named when it keeps a ref.
    pub(super) address: Arc<str>,
    pub(super) next_seq: u64,
    pub(super) incarnation: u64,
    /// A connection dropped: the next connect asks for the next incarnation but only waits
    /// a while for it, since the actor may be alive and the drop ours.
    pub(super) after_drop: bool,
    pub(super) connecting: bool,
    pub(super) waiting_deps: bool,
    pub(super) dead: Option<Error>,
    /// Calls lost in flight with the actor's process, with no retries left: they fail once
    /// the GCS says what became of the actor (dead for good, or restarting: unavailable).
    pub(super) lost: Vec<(ActorCall, String)>,
}

/// How long calls lost with an actor's process wait to learn whether it is dead for good
/// (`ActorDied`) before they fail as `ActorUnavailable`: a restart may take long, and the
/// caller should not wait for it to hear that its call is lost.
const LOST_CALL_WAIT: Duration = Duration::from_secs(2);
/// How long a GCS that does not answer is asked again about an actor before its calls fail
/// (Ray's `gcs_rpc_server_reconnect_timeout_s`).
const GCS_UNREACHABLE: Duration = Duration::from_secs(60);

impl Submitter {
    /// Sends the actor's calls, in order, as far as their arguments are ready and a
    /// connection is open; connects (after a restart: to the next incarnation) if needed.
    pub(super) fn pump_actor(&mut self, own: &Arc<Ownership>, id: ActorId) {
        let flush = self.flush;
        let Some(q) = self.actors.get_mut(&id) else {
            return;
        };
        if let Some(dead) = &q.dead {
            let lost = q.lost.drain(..).map(|(call, _)| call);
            for call in q.pending.drain(..).chain(lost) {
                call.fail(own, dead.clone());
            }
            if q.in_flight.is_empty() {
                // Nothing more will come of it; a later call learns of the death anew.
                if let Some((conn, _)) = q.conn.take() {
                    self.actor_conns.remove(&conn);
                }
                self.actors.remove(&id);
            }
            return;
        }
        while let Some(front) = q.pending.front_mut() {
            if front.resolved.is_none() {
                let ready = front.args.iter().all(|a| match &a.0 {
                    ArgKind::Ref(r) => own.store.is_ready(&r.id),
                    ArgKind::Refs(rs) => rs.iter().all(|r| own.store.is_ready(&r.id)),
                    _ => true,
                });
                if !ready && !front.waited {
                    if !q.waiting_deps {
                        q.waiting_deps = true;
                        let refs: Vec<Arc<RefInner>> = front
                            .args
                            .iter()
                            .filter(|a| matches!(&a.0, ArgKind::Ref(_) | ArgKind::Refs(_)))
                            .flat_map(|a| a.refs().cloned())
                            .collect();
                        let own2 = own.clone();
                        let events = self.events.clone();
                        tokio::spawn(async move {
                            for r in &refs {
                                wait_ready_async(&own2, r).await;
                            }
                            let _ = events.send(Event::ActorResolved(id));
                        });
                    }
                    return;
                }
                match resolve_args(own, &front.args, &front.label()) {
                    Ok(values) => front.resolved = Some(values),
                    Err(e) => {
                        let call = q.pending.pop_front().expect("front exists");
                        call.fail(own, e);
                        continue;
                    }
                }
            }
            let Some((_, tx)) = &q.conn else {
                break;
            };
            let call = q.pending.pop_front().expect("front exists");
            let seq = q.next_seq;
            q.next_seq += 1;
            let frame = ray_proto::TaskFrame {
                seq,
                task_id: call.return_id.0.to_vec().into(),
                function: call.method.to_string(),
                args: call.resolved.clone().unwrap_or_default(),
                return_id: call.return_id.0.to_vec().into(),
                owner_address: own.me.address.to_string(),
                job_id: own.me.job_id,
                actor_id: id.to_vec().into(),
                shape: Default::default(),
                num_returns: if call.num_returns > 1 {
                    call.num_returns
                } else {
                    1
                },
                capture_group: Default::default(),
                streaming: call.streaming,
                attempt: call.attempt,
                untracked: !call.tracked,
            };
            // A closed connection shows up as a Disconnected event, which resends or fails
            // what is in flight, this call included.
            let _ = tx.send(frame, flush);
            q.in_flight.insert(seq, call);
        }
        // Calls wait for a connection, or lost calls for word of the actor's fate: ask the
        // GCS (after a restart, for the next incarnation) and connect.
        let wants = !q.pending.is_empty() || !q.lost.is_empty();
        if wants && q.conn.is_none() && !q.connecting {
            q.connecting = true;
            connect_actor(
                own,
                &self.events,
                id,
                q.class.clone(),
                q.incarnation + 1,
                q.after_drop,
                self.next_conn,
            );
            self.next_conn += 1;
        }
    }

    pub(super) fn on_actor_reply(
        &mut self,
        own: &Arc<Ownership>,
        conn_id: u64,
        frame: ray_proto::ReplyFrame,
    ) {
        let Some(id) = self.actor_conns.get(&conn_id) else {
            return;
        };
        let Some(q) = self.actors.get_mut(id) else {
            return;
        };
        if frame.stream_item {
            // An item of a generator method: the call goes on.
            if let (Some(call), Some(value), Ok(item)) = (
                q.in_flight.get(&frame.seq),
                frame.value,
                crate::ids::id16(&frame.item_id, "item id"),
            ) {
                own.stream_item(
                    call.return_id,
                    frame.item_index,
                    ObjectId(item),
                    Stored::from_proto(value),
                );
            }
            return;
        }
        let Some(call) = q.in_flight.remove(&frame.seq) else {
            return;
        };
        let mut value = frame.value;
        let mut more = frame.more_values;
        let cancelled = !self.cancelling.is_empty() && self.cancelling.contains(&call.return_id);
        if !cancelled
            && call.retry_exceptions
            && call.retries_left != 0
            && super::normal::failed_in_user_code(&value)
        {
            // Sent again, ahead of the calls not sent yet (Ray retries actor calls that
            // raised too, with `retry_exceptions`; calls already sent may run before it).
            let mut call = call;
            call.retries_left -= i32::from(call.retries_left > 0);
            call.resend(own);
            call.resolved = None;
            tracing::info!(
                method = call.method,
                retries_left = call.retries_left,
                "actor call failed; sending it again (retry_exceptions)"
            );
            release_in_band(own, &frame.released_ids, &q.address);
            register_borrowers(own, &frame.borrowed_ids, q.address.clone(), ());
            q.pending.push_front(call);
            let id = *id;
            self.pump_actor(own, id);
            return;
        }
        if cancelled && self.cancelling.remove(&call.return_id) {
            value = super::cancel::answer_of_cancelled(value, &call.label());
            if matches!(
                value.as_ref().and_then(|v| v.kind.as_ref()),
                Some(ray_proto::object_value::Kind::Error(_))
            ) {
                more.clear();
            }
        }
        let tracked = call.tracked.then_some(call.attempt);
        complete_from_reply(own, call.return_id, call.num_returns, value, more, tracked);
        release_in_band(own, &frame.released_ids, &q.address);
        register_borrowers(own, &frame.borrowed_ids, q.address.clone(), call);
    }

    pub(super) fn on_actor_disconnect(&mut self, own: &Arc<Ownership>, conn_id: u64, why: String) {
        let Some(id) = self.actor_conns.remove(&conn_id) else {
            return;
        };
        let Some(q) = self.actors.get_mut(&id) else {
            return;
        };
        if q.conn.as_ref().is_some_and(|(c, _)| *c == conn_id) {
            q.conn = None;
            q.after_drop = true;
        }
        // In-flight calls are older than pending ones: resend them first, in order.
        let in_flight = std::mem::take(&mut q.in_flight);
        for (_, mut call) in in_flight.into_iter().rev() {
            if self.cancelling.remove(&call.return_id) {
                let e = super::cancel::cancelled(&call.label());
                call.fail(own, e);
            } else if call.retries_left != 0 {
                if call.retries_left > 0 {
                    call.retries_left -= 1;
                }
                call.resend(own);
                q.pending.push_front(call);
            } else {
                q.lost.push((call, why.clone()));
            }
        }
        if !q.lost.is_empty() {
            let events = self.events.clone();
            let clock = own
                .link
                .as_ref()
                .map(|l| l.clock.clone())
                .unwrap_or_default();
            tokio::spawn(async move {
                clock.sleep(LOST_CALL_WAIT).await;
                let _ = events.send(Event::LostCallsDue(id));
            });
        }
        // Learn from the GCS whether it restarts or is dead (pump connects if calls wait).
        self.pump_actor(own, id);
    }
}

/// Fails the calls lost with the actor's process as unavailable (retryable): they may or
/// may not have run. `now` says what is known of the actor.
pub(super) fn fail_lost(own: &Ownership, q: &mut ActorQueue, now: &str) {
    for (call, why) in q.lost.drain(..) {
        let e = Error::ActorUnavailable {
            class: q.class.to_string(),
            cause: format!(
                "its process died while running {} ({why}); {now}; the call was not retried \
                 (max_task_retries = 0)",
                call.method
            ),
        };
        call.fail(own, e);
    }
}

/// Asks the GCS for the actor at `min_incarnation` or later, then connects to it. With
/// `bounded`, the GCS answers after a while even if no new incarnation came: the actor did
/// not die, only our connection did, and we reconnect to it.
fn connect_actor(
    own: &Arc<Ownership>,
    events: &mpsc::UnboundedSender<Event>,
    id: ActorId,
    class: Arc<str>,
    min_incarnation: u64,
    bounded: bool,
    conn_id: u64,
) {
    let Some(c) = &own.link else {
        return;
    };
    let gcs = c.gcs.clone();
    let events = events.clone();
    let token = c.token.clone();
    let dialer = c.dialer.clone();
    let clock = c.clock.clone();
    let here = c.store.local_node();
    tokio::spawn(async move {
        // A warning here while the GCS holds it back for want of a node that can hold it.
        let _notice = super::infeasible::watch_actor(gcs.clone(), clock.clone(), id, &class);
        let req = ray_proto::GetActorInfoRequest {
            actor_id: id.to_vec().into(),
            min_incarnation,
            wait_ms: if bounded { 3_000 } else { 0 },
        };
        // The GCS unreachable for a while is not the actor's death: ask again.
        let answer =
            with_retries(&clock, GCS_UNREACHABLE, || gcs.get_actor_info(req.clone())).await;
        let info = match answer {
            Ok(i) => i,
            Err(e) if e.is_transient() => {
                // As Ray's core worker gives up on a GCS gone past its reconnect timeout.
                let e = Error::ActorDied {
                    class: class.to_string(),
                    cause: format!(
                        "the GCS could not be reached for {GCS_UNREACHABLE:?}: {}",
                        e.message
                    ),
                };
                let _ = events.send(Event::ActorUnreachable(id, 0, Some(e)));
                return;
            }
            Err(e) => {
                let e = Error::ActorDied {
                    class: class.to_string(),
                    cause: format!("the GCS does not know it: {}", e.message),
                };
                let _ = events.send(Event::ActorUnreachable(id, 0, Some(e)));
                return;
            }
        };
        if info.state == "DEAD" {
            let e = Error::ActorDied {
                class: class.to_string(),
                cause: info.death_cause,
            };
            let _ = events.send(Event::ActorUnreachable(id, info.incarnation, Some(e)));
            return;
        }
        let conn = ConnId::Actor(conn_id);
        let target = crate::data_plane::task_target(
            here,
            &info.node_id,
            &info.task_socket,
            &info.task_address,
        );
        match dialer.connect(target, &token, conn, events.clone()).await {
            Ok(tx) => {
                let _ = events.send(Event::ActorConnected {
                    actor: id,
                    incarnation: info.incarnation,
                    conn: conn_id,
                    tx,
                    address: info.core_worker_address.as_str().into(),
                });
            }
            Err(_) => {
                // It died between the GCS's answer and our connect: wait for the next one.
                let _ = events.send(Event::ActorUnreachable(id, info.incarnation, None));
            }
        }
    });
}

impl ActorQueue {
    /// An empty queue for calls to an actor of `class`, not yet connected.
    pub(super) fn new(class: Arc<str>) -> Self {
        ActorQueue {
            class,
            pending: VecDeque::new(),
            in_flight: Default::default(),
            conn: None,
            address: "".into(),
            next_seq: 1,
            incarnation: 0,
            after_drop: false,
            connecting: false,
            waiting_deps: false,
            dead: None,
            lost: Vec::new(),
        }
    }
}
