//! The task submitter: one tokio task that owns every queue, lease and actor connection of
//! this process and reads a closed [`Event`] enum, so no lock guards submission state and
//! nothing is held across an await. Normal tasks are in [`normal`], actor calls in
//! [`actor`], argument resolution in [`resolver`]; the connections are the data plane's.

mod actor;
mod infeasible;
mod normal;
mod resolver;

pub(crate) use actor::ActorCall;
pub(crate) use normal::PendingTask;

use crate::data_plane::{ConnEvent, ConnId, FrameSender};
use crate::error::Error;
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use crate::ownership::Ownership;
use actor::{fail_lost, ActorQueue};
use normal::{return_lease, Lease, ShapeQueue, IDLE_LEASE_RETURN};
use ray_common::ActorId;
use ray_common::LeaseId;
use ray_scheduler::ResourceSet;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the submitter acts on.
enum Event {
    Submit(PendingTask),
    Resolved(PendingTask),
    LeaseGranted(Arc<str>, Lease),
    LeaseFailed(Arc<str>, Error),
    /// A task connection (a lease's or an actor's) replied or closed.
    Conn(ConnEvent),
    ActorCall(ActorCall),
    ActorResolved(ActorId),
    /// A connection to the actor at `incarnation` is open, its process serving borrowers
    /// at `address`.
    ActorConnected {
        actor: ActorId,
        incarnation: u64,
        conn: u64,
        tx: FrameSender,
        address: Arc<str>,
    },
    /// The actor could not be reached at this incarnation (`None`) or is dead (`Some`).
    ActorUnreachable(ActorId, u64, Option<Error>),
    /// Try the queue of this shape again (after a failed lease request).
    Redispatch(Arc<str>),
    /// A task blocked in `get` on this worker asks for one of its own queued tasks to run
    /// inline: one whose return id is in `wanted`, whose arguments are plain values, which
    /// may be retried, and whose shape fits in `fits` (the blocked task's own). Answered on
    /// `reply`.
    Steal {
        wanted: Arc<HashSet<ObjectId>>,
        fits: ResourceSet,
        reply: crossbeam_channel::Sender<Option<PendingTask>>,
    },
    /// This worker's task blocked in `get` (`true`) or resumed: while it is blocked it
    /// submits nothing more, so idle leases go back at once rather than hoard CPUs that its
    /// own children and everyone else's wait for.
    Blocked(bool),
    /// This process killed the actor: fail its queued calls and every later one.
    ActorKilled(ActorId, String),
    /// Calls lost with this actor's process have waited [`LOST_CALL_WAIT`] for word of its
    /// fate: they fail as unavailable (it is restarting, or the GCS is slow to say).
    LostCallsDue(ActorId),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

impl From<ConnEvent> for Event {
    fn from(e: ConnEvent) -> Self {
        Event::Conn(e)
    }
}

/// The way into a submitter's loop (cheap to clone).
#[derive(Clone)]
pub(crate) struct Handle(mpsc::UnboundedSender<Event>);

impl Handle {
    /// Starts the submitter of the core worker whose tables are `own`, on `runtime`.
    pub fn start(own: Weak<Ownership>, runtime: &tokio::runtime::Handle) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run_submitter(own, tx.clone(), rx));
        Handle(tx)
    }

    pub fn submit(&self, task: PendingTask) {
        // If the submitter is gone the session is stopping, and the stop fails every
        // pending ref, this task's return included.
        let _ = self.0.send(Event::Submit(task));
    }

    pub fn call_actor(&self, call: ActorCall, own: &Ownership) {
        if let Err(mpsc::error::SendError(Event::ActorCall(call))) =
            self.0.send(Event::ActorCall(call))
        {
            own.complete(
                call.return_id,
                Stored::Failed(Arc::new(Error::NotInitialized)),
            );
        }
    }

    /// One of this process's queued tasks for a blocked task to run inline (see
    /// [`Event::Steal`]); `None` if there is none it may take.
    pub fn steal(
        &self,
        wanted: &Arc<HashSet<ObjectId>>,
        fits: &ResourceSet,
    ) -> Option<PendingTask> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let ask = Event::Steal {
            wanted: wanted.clone(),
            fits: fits.clone(),
            reply,
        };
        self.0.send(ask).ok()?;
        answer.recv().ok().flatten()
    }

    /// This worker's task blocked in `get` (`true`) or resumed.
    pub fn blocked(&self, blocked: bool) {
        let _ = self.0.send(Event::Blocked(blocked));
    }

    /// This process killed the actor: its calls fail from now on.
    pub fn actor_killed(&self, actor_id: ActorId, cause: String) {
        let _ = self.0.send(Event::ActorKilled(actor_id, cause));
    }

    /// Fails everything queued or in flight with `NotInitialized` and stops the loop.
    pub async fn shutdown(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.0.send(Event::Shutdown(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Stores a task's result from its reply, with the refs it contains held by it.
fn complete_from_reply(
    own: &Arc<Ownership>,
    return_id: ObjectId,
    value: Option<ray_proto::ObjectValue>,
) {
    let (stored, contained) = match value {
        Some(mut v) => {
            let contained = std::mem::take(&mut v.contained);
            (Stored::from_proto(v), contained)
        }
        None => (
            Stored::Failed(Arc::new(Error::Runtime("reply without a value".into()))),
            Vec::new(),
        ),
    };
    own.adopt_contained(return_id, &contained);
    own.complete(return_id, stored);
}

/// Applies the releases a worker sent in its reply (after the reply's contained refs were
/// adopted): `borrower` no longer borrows these objects of ours.
fn release_in_band(own: &Ownership, ids: &[bytes::Bytes], borrower: &str) {
    for raw in ids {
        let Ok(id) = crate::ids::id16(raw, "object id").map(ObjectId) else {
            continue;
        };
        if let Some(release) = own.refs.remove_borrower(id, borrower) {
            own.apply_release(release);
        }
    }
}

fn fail_task(own: Option<&Ownership>, task: &PendingTask, error: Error) {
    let own = match own {
        Some(own) => own,
        None => return,
    };
    // Not `put`: a result nobody holds any more stays gone.
    own.complete(task.return_id, Stored::Failed(Arc::new(error)));
}

/// The submitter: runs until shutdown on the session's runtime.
async fn run_submitter(
    own: Weak<Ownership>,
    me: mpsc::UnboundedSender<Event>,
    mut events: mpsc::UnboundedReceiver<Event>,
) {
    let mut s = Submitter {
        own,
        events: me,
        queues: HashMap::new(),
        leases: HashMap::new(),
        actors: HashMap::new(),
        actor_conns: HashMap::new(),
        next_conn: 1,
        blocked: false,
    };
    let period = Duration::from_millis(25);
    let mut next_tick = tokio::time::Instant::now() + period;
    loop {
        // Tick only while leases are held (to give idle ones back): an idle process sleeps.
        let holding = !s.leases.is_empty();
        let tick = async move {
            if holding {
                tokio::time::sleep_until(next_tick).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Shutdown(done)) => { s.shutdown(); let _ = done.send(()); return; }
                Some(ev) => s.handle(ev),
                None => { s.shutdown(); return; }
            },
            _ = tick => {
                s.return_idle_leases(IDLE_LEASE_RETURN);
                next_tick = tokio::time::Instant::now() + period;
            }
        }
    }
}

struct Submitter {
    own: Weak<Ownership>,
    /// Its own queue, for what finishes off the loop (a lease granted, arguments ready).
    events: mpsc::UnboundedSender<Event>,
    queues: HashMap<Arc<str>, ShapeQueue>,
    leases: HashMap<LeaseId, (Arc<str>, Lease)>,
    actors: HashMap<ActorId, ActorQueue>,
    actor_conns: HashMap<u64, ActorId>,
    next_conn: u64,
    /// This worker's task is blocked in `get` (see [`Event::Blocked`]).
    blocked: bool,
}

impl Submitter {
    fn handle(&mut self, ev: Event) {
        let Some(own) = self.own.upgrade() else {
            return;
        };
        match ev {
            Event::Submit(task) => self.resolve(&own, task),
            Event::Resolved(task) => {
                let (key, locality) = match normal::locality(&own, &task) {
                    Some((node, bytes)) => (
                        Arc::from(format!("{}@{node}", task.shape_key)),
                        vec![ray_proto::NodeBytes {
                            node_id: node.to_vec().into(),
                            bytes,
                        }],
                    ),
                    None => (task.shape_key.clone(), Vec::new()),
                };
                let q = self.queue(&key, &task.shape);
                if q.tasks.is_empty() && q.leases.is_empty() {
                    q.strategy = task.strategy.clone();
                    q.env = task.env.clone();
                    q.locality = locality;
                }
                q.tasks.push_back(task);
                self.dispatch(&own, &key);
            }
            Event::LeaseGranted(key, lease) => {
                let q = self.queue(&key, &ResourceSet::new());
                q.requesting = q.requesting.saturating_sub(1);
                tracing::debug!(%key, lease = %lease.id, queued = q.tasks.len(), requesting = q.requesting, "lease granted");
                if q.tasks.is_empty() {
                    // Requested for tasks that ran elsewhere meanwhile: give it straight back
                    // rather than hold resources others may wait for.
                    return_lease(&lease, false);
                    return;
                }
                q.leases.push(lease.id);
                self.leases.insert(lease.id, (key.clone(), lease));
                self.dispatch(&own, &key);
            }
            Event::LeaseFailed(key, error) => {
                let Some(q) = self.queues.get_mut(&key) else {
                    return;
                };
                q.requesting = q.requesting.saturating_sub(1);
                tracing::debug!(%key, %error, queued = q.tasks.len(), "lease failed");
                if !q.leases.is_empty() && !q.tasks.is_empty() {
                    // Other leases exist, so the shape fits: ask again shortly, in case every
                    // lease we hold is stalled on the tasks still queued.
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = events.send(Event::Redispatch(key));
                    });
                    return;
                }
                if q.requesting == 0 && q.leases.is_empty() {
                    for task in q.tasks.drain(..) {
                        let e = match &error {
                            Error::Unschedulable { reason, .. } => Error::Unschedulable {
                                function: task.function.to_string(),
                                reason: reason.clone(),
                            },
                            other => other.clone(),
                        };
                        fail_task(Some(&own), &task, e);
                    }
                }
            }
            Event::Conn(ConnEvent::Reply { conn, frame }) => match conn {
                ConnId::Lease(lease) => self.on_reply(&own, lease, frame),
                ConnId::Actor(conn) => self.on_actor_reply(&own, conn, frame),
            },
            Event::Conn(ConnEvent::Closed { conn, why }) => match conn {
                ConnId::Lease(lease) => self.on_disconnect(&own, lease, why),
                ConnId::Actor(conn) => self.on_actor_disconnect(&own, conn, why),
            },
            Event::ActorCall(call) => {
                let id = call.actor_id;
                let class = call.class.clone();
                self.actors
                    .entry(id)
                    .or_insert_with(|| ActorQueue::new(class))
                    .pending
                    .push_back(call);
                self.pump_actor(&own, id);
            }
            Event::ActorResolved(id) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    q.waiting_deps = false;
                    if let Some(front) = q.pending.front_mut() {
                        front.waited = true;
                    }
                }
                self.pump_actor(&own, id);
            }
            Event::ActorConnected {
                actor: id,
                incarnation,
                conn: conn_id,
                tx,
                address,
            } => {
                let Some(q) = self.actors.get_mut(&id) else {
                    return;
                };
                q.address = address;
                q.connecting = false;
                q.incarnation = incarnation;
                q.after_drop = false;
                q.conn = Some((conn_id, tx));
                self.actor_conns.insert(conn_id, id);
                // Alive again (or still): what was lost in flight may or may not have run.
                let now = format!("the actor is back at incarnation {incarnation}");
                fail_lost(&own, q, &now);
                self.pump_actor(&own, id);
            }
            Event::ActorUnreachable(id, incarnation, dead) => {
                let Some(q) = self.actors.get_mut(&id) else {
                    return;
                };
                q.connecting = false;
                q.incarnation = q.incarnation.max(incarnation);
                q.after_drop = false;
                if dead.is_some() {
                    q.dead = dead;
                }
                self.pump_actor(&own, id);
            }
            Event::ActorKilled(id, cause) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    q.dead = Some(Error::ActorDied {
                        class: q.class.to_string(),
                        cause,
                    });
                }
                self.pump_actor(&own, id);
            }
            Event::Redispatch(key) => self.dispatch(&own, &key),
            Event::LostCallsDue(id) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    fail_lost(&own, q, "the actor is restarting or cannot be reached now");
                }
            }
            Event::Steal {
                wanted,
                fits,
                reply,
            } => {
                let _ = reply.send(self.steal(&wanted, &fits));
            }
            Event::Blocked(blocked) => {
                self.blocked = blocked;
                if blocked {
                    self.return_idle_leases(Duration::ZERO);
                }
            }
            Event::Shutdown(_) => {}
        }
    }

    fn shutdown(&mut self) {
        let own = self.own.upgrade();
        for (_, q) in self.queues.drain() {
            for task in q.tasks {
                fail_task(own.as_deref(), &task, Error::NotInitialized);
            }
        }
        for (_, (_, lease)) in self.leases.drain() {
            for (_, task) in lease.in_flight {
                fail_task(own.as_deref(), &task, Error::NotInitialized);
            }
        }
        if let Some(own) = &own {
            for (_, q) in self.actors.drain() {
                for call in q.pending.into_iter().chain(q.in_flight.into_values()) {
                    own.complete(
                        call.return_id,
                        Stored::Failed(Arc::new(Error::NotInitialized)),
                    );
                }
            }
        }
    }
}

/// Records that `borrower` still holds these refs after its task, then lets the task (and
/// the refs it holds for its arguments) go. For refs this process only borrows itself, the
/// borrower is registered with the real owner first: only then may our own hold end.
fn register_borrowers<H: Send + 'static>(
    own: &Arc<Ownership>,
    ids: &[bytes::Bytes],
    borrower: Arc<str>,
    hold: H,
) {
    let mut foreign = Vec::new();
    for raw in ids {
        let Ok(id) = crate::ids::id16(raw, "object id").map(ObjectId) else {
            continue;
        };
        match own.refs.owner_of(&id) {
            Some(None) => own.refs.add_borrower(id, borrower.clone()),
            Some(Some(owner)) => foreign.push((id, owner)),
            None => {}
        }
    }
    own.register_borrows(foreign, borrower, hold);
}
