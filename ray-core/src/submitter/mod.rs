//! The task submitter: the state of every queue, lease and actor connection of this
//! process, changed only by handling a closed [`Event`] enum. A tokio task reads the events;
//! a thread that submits a task or an actor call while no event waits handles its own event
//! itself, then and there (see [`Handle::submit`]). One lock guards the state, taken by
//! whoever handles an event and never held across an await. Normal tasks are in [`normal`],
//! actor calls in [`actor`], argument resolution in [`resolver`]; the connections are the
//! data plane's.

mod actor;
mod cancel;
mod explain;
mod infeasible;
mod normal;
mod resolver;

pub(crate) use actor::ActorCall;
pub(crate) use normal::PendingTask;

use crate::data_plane::{ConnEvent, ConnId, FrameSender};
use crate::error::Error;
use crate::frames::Flush;
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use crate::ownership::Ownership;
use crate::task_events::Name;
use actor::{fail_lost, ActorQueue};
use normal::{return_lease, Lease, ShapeQueue, IDLE_LEASE_RETURN};
use parking_lot::Mutex;
use ray_common::ActorId;
use ray_common::LeaseId;
use ray_scheduler::ResourceSet;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Cancel the task or actor call whose (first) return is this id (see [`cancel`]).
    Cancel {
        id: ObjectId,
        force: bool,
        recursive: bool,
        reply: crossbeam_channel::Sender<crate::error::Result<()>>,
    },
    /// Cancel every task and call this process submitted from within this task.
    CancelChildren(ray_common::TaskId),
    /// The wait for this task's arguments (or placement group) ended.
    Waited(ObjectId),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

impl Event {
    /// Sent through a [`Handle`] (counted in [`Shared::queued`]), not by the submitter's own
    /// tasks or its connections.
    fn is_counted(&self) -> bool {
        matches!(
            self,
            Event::Submit(_)
                | Event::ActorCall(_)
                | Event::Steal { .. }
                | Event::Blocked(_)
                | Event::ActorKilled(..)
                | Event::Cancel { .. }
                | Event::CancelChildren(_)
                | Event::Shutdown(_)
        )
    }
}

impl From<ConnEvent> for Event {
    fn from(e: ConnEvent) -> Self {
        Event::Conn(e)
    }
}

/// What a submitter's [`Handle`]s and its loop share.
struct Shared {
    /// The submission state: locked by whoever handles an event, briefly.
    state: Mutex<Submitter>,
    /// Events sent through a handle and not handled yet. A thread handles its own event only
    /// when this is 0 under the lock: never before an event sent earlier.
    queued: AtomicUsize,
    /// The runtime of the loop, entered by a thread that handles its own event (handling
    /// spawns tasks: lease requests, connects, argument waits).
    runtime: tokio::runtime::Handle,
}

/// The way into a submitter (cheap to clone).
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Starts the submitter of the core worker whose tables are `own`, on `runtime`.
    pub fn start(own: Weak<Ownership>, runtime: &tokio::runtime::Handle) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(Submitter::new(own, tx.clone())),
            queued: AtomicUsize::new(0),
            runtime: runtime.clone(),
        });
        runtime.spawn(run_submitter(shared.clone(), rx));
        Handle { tx, shared }
    }

    /// Queues `ev` for the loop; `false` if the loop is gone (and `ev` with it).
    fn send(&self, ev: Event) -> bool {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(ev).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Handles `ev` on this thread if it is a task or call with nothing else outstanding
    /// before it (see [`Submitter::alone`]), the state is free and no earlier event waits:
    /// the frame of a synchronous call then leaves from the thread that made it, written to
    /// the connection here, and wakes no other thread of this process. Else queues it for
    /// the loop, which writes frames in batches. `false` if the loop is gone (and `ev` with
    /// it).
    fn handle_or_send(&self, ev: Event) -> bool {
        if let Some(mut s) = self.shared.state.try_lock() {
            if !s.stopped && self.shared.queued.load(Ordering::SeqCst) == 0 && s.alone(&ev) {
                let _runtime = self.shared.runtime.enter();
                s.flush = Flush::Now;
                s.handle(ev);
                s.flush = Flush::Soon;
                return true;
            }
        }
        self.send(ev)
    }

    /// What the submitter knows of its task whose first return is `id` ("why pending").
    pub fn explain(&self, id: ObjectId) -> ray_proto::TaskExplanation {
        let state = self.shared.state.lock();
        match state.own.upgrade() {
            Some(own) => state.explain(&own, id),
            None => Default::default(),
        }
    }

    pub fn submit(&self, task: PendingTask) {
        // If the submitter is gone the session is stopping, and the stop fails every
        // pending ref, this task's return included.
        self.handle_or_send(Event::Submit(task));
    }

    pub fn call_actor(&self, mut call: ActorCall, own: &Ownership) {
        let (return_id, n) = (call.return_id, call.num_returns);
        call.tracked = own.task_events.submitted(
            return_id,
            Name::Method(call.class.clone(), call.method),
            Some(call.actor_id.0),
            call.parent.map(|p| p.0),
            false,
        );
        if !self.handle_or_send(Event::ActorCall(call)) {
            for id in crate::ids::return_ids(return_id, n) {
                own.complete(id, Stored::Failed(Arc::new(Error::NotInitialized)));
            }
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
        if !self.send(ask) {
            return None;
        }
        answer.recv().ok().flatten()
    }

    /// This worker's task blocked in `get` (`true`) or resumed.
    pub fn blocked(&self, blocked: bool) {
        self.send(Event::Blocked(blocked));
    }

    /// Cancels the task or call whose first return is `id` (see [`Event::Cancel`]).
    pub fn cancel(&self, id: ObjectId, force: bool, recursive: bool) -> crate::error::Result<()> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if !self.send(Event::Cancel {
            id,
            force,
            recursive,
            reply,
        }) {
            return Ok(());
        }
        answer.recv().unwrap_or(Ok(()))
    }

    /// Cancels what this process submitted from within task `parent`.
    pub fn cancel_children(&self, parent: ray_common::TaskId) {
        self.send(Event::CancelChildren(parent));
    }

    /// This process killed the actor: its calls fail from now on.
    pub fn actor_killed(&self, actor_id: ActorId, cause: String) {
        self.send(Event::ActorKilled(actor_id, cause));
    }

    /// Fails everything queued or in flight with `NotInitialized` and stops the loop.
    pub async fn shutdown(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.send(Event::Shutdown(done)) {
            let _ = wait.await;
        }
    }
}

/// Stores a task's result from its reply, with the refs it contains held by it; records
/// that it ended (`tracked`: its attempt, if its events are recorded). The owner records the
/// end too: a worker killed within a second of a task's end never reports it.
fn complete_from_reply(
    own: &Arc<Ownership>,
    return_id: ObjectId,
    num_returns: u32,
    value: Option<ray_proto::ObjectValue>,
    more_values: Vec<ray_proto::ObjectValue>,
    tracked: Option<u32>,
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
    if let Some(attempt) = tracked {
        let failure = match &stored {
            Stored::Failed(e) => Some(&**e),
            _ => None,
        };
        own.task_events.ended(return_id.0, attempt, failure);
    }
    own.adopt_contained(return_id, num_returns, &contained);
    if num_returns > 1 {
        // Returns 2..n: their values, or (a failed task) the first's error for each.
        let mut more = more_values.into_iter();
        for id in crate::ids::return_ids(return_id, num_returns).skip(1) {
            let value = match (more.next(), &stored) {
                (Some(v), _) => Stored::from_proto(v),
                (None, Stored::Failed(e)) => Stored::Failed(e.clone()),
                (None, _) => Stored::Failed(Arc::new(Error::Runtime(format!(
                    "the reply holds fewer than the task's {num_returns} returns"
                )))),
            };
            own.complete(id, value);
        }
    }
    own.complete(return_id, stored);
}

/// Applies the releases a worker sent in its reply (after the reply's contained refs were
/// adopted): `borrower` no longer borrows these objects of ours.
fn release_in_band(own: &Arc<Ownership>, ids: &[bytes::Bytes], borrower: &str) {
    for raw in ids {
        let Ok(id) = crate::ids::id16(raw, "object id").map(ObjectId) else {
            continue;
        };
        crate::borrowers::release(own, id, borrower);
    }
}

fn fail_task(own: Option<&Ownership>, task: &PendingTask, error: Error) {
    let own = match own {
        Some(own) => own,
        None => return,
    };
    if task.tracked {
        own.task_events
            .ended(task.return_id.0, task.attempt, Some(&error));
    }
    let error = Arc::new(error);
    for id in crate::ids::return_ids(task.return_id, task.num_returns) {
        // Not `put`: a result nobody holds any more stays gone.
        own.complete(id, Stored::Failed(error.clone()));
    }
}

/// The submitter's loop: runs until shutdown on the session's runtime.
async fn run_submitter(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Event>) {
    let period = Duration::from_millis(25);
    let mut next_tick = tokio::time::Instant::now() + period;
    loop {
        // Tick only while leases are held (to give idle ones back): an idle process sleeps.
        let holding = !shared.state.lock().leases.is_empty();
        let tick = async move {
            if holding {
                tokio::time::sleep_until(next_tick).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            ev = events.recv() => {
                let mut s = shared.state.lock();
                let counted = ev.as_ref().is_some_and(Event::is_counted);
                match ev {
                    Some(Event::Shutdown(done)) => {
                        s.shutdown();
                        shared.queued.fetch_sub(1, Ordering::SeqCst);
                        let _ = done.send(());
                        return;
                    }
                    Some(ev) => s.handle(ev),
                    None => { s.shutdown(); return; }
                }
                if counted {
                    // Under the lock: once 0 is seen there, every earlier event was handled.
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                }
            },
            _ = tick => {
                shared.state.lock().return_idle_leases(IDLE_LEASE_RETURN);
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
    /// Shut down: events are no longer handled (the loop ended).
    stopped: bool,
    /// How frames sent while handling the current event are written: at once by a thread
    /// handling its own lone call, else by the connection's flusher, batched.
    flush: Flush,
    /// Tasks and calls in flight that were cancelled: their answer becomes
    /// `TaskCancelled` unless it is a value, and they are not retried.
    cancelling: HashSet<ObjectId>,
    /// Tasks cancelled while their arguments were awaited: failed once resolved.
    cancel_on_arrival: HashSet<ObjectId>,
    /// Tasks whose arguments (or placement group) are awaited, by first return.
    waiting: HashMap<ObjectId, explain::Waiting>,
}

impl Submitter {
    fn new(own: Weak<Ownership>, events: mpsc::UnboundedSender<Event>) -> Self {
        Submitter {
            own,
            events,
            queues: HashMap::new(),
            leases: HashMap::new(),
            actors: HashMap::new(),
            actor_conns: HashMap::new(),
            next_conn: 1,
            blocked: false,
            stopped: false,
            flush: Flush::Soon,
            cancelling: HashSet::new(),
            cancel_on_arrival: HashSet::new(),
            waiting: HashMap::new(),
        }
    }

    /// `ev` is a task or an actor call that nothing of its kind is ahead of or in flight
    /// with (nothing queued or running for its shape, or for its actor): likely a call
    /// someone is about to wait for, and one that no batch could carry anyway.
    fn alone(&self, ev: &Event) -> bool {
        match ev {
            Event::ActorCall(call) => self
                .actors
                .get(&call.actor_id)
                .is_none_or(|q| q.pending.is_empty() && q.in_flight.is_empty()),
            Event::Submit(task) => self.queues.get(&task.shape_key).is_none_or(|q| {
                q.tasks.is_empty()
                    && q.leases.iter().all(|id| {
                        self.leases
                            .get(id)
                            .is_none_or(|(_, l)| l.in_flight.is_empty())
                    })
            }),
            _ => false,
        }
    }

    fn handle(&mut self, ev: Event) {
        let Some(own) = self.own.upgrade() else {
            return;
        };
        match ev {
            Event::Submit(task) => self.resolve(&own, task),
            Event::Resolved(task)
                if !self.cancel_on_arrival.is_empty()
                    && self.cancel_on_arrival.remove(&task.return_id) =>
            {
                fail_task(Some(&own), &task, cancel::cancelled(task.function));
            }
            Event::Cancel {
                id,
                force,
                recursive,
                reply,
            } => {
                self.cancel(&own, id, force, recursive, Some(reply));
            }
            Event::CancelChildren(parent) => self.cancel_children(&own, parent),
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
            Event::Waited(id) => {
                self.waiting.remove(&id);
            }
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
        self.stopped = true;
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
                    call.fail(own, Error::NotInitialized);
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
