//! How this process reaches the rest of the session: the task submitter (leases and the
//! pipelined task stream to leased workers), the node's store, and other core workers.
//!
//! One tokio task, the submitter, owns every queue and lease and reads a closed [`Event`]
//! enum: no lock guards submission state, and nothing is held across an await.

use crate::error::{Error, Result};
use crate::frames::{encode_frame, read_frame};
use crate::ids::ObjectId;
use crate::memory_store::{Stored, Subscribed, Waiter};
use crate::object_ref::RefInner;
use crate::runtime::{ArgKind, ArgSpec, Runtime};
use dashmap::DashMap;
use ray_common::rpc::{Connect, CoreWorkerApi, GcsApi, NodeManagerApi, RpcErrorKind};
use ray_object_store::{Allocation, ArenaMapping};
use ray_scheduler::ResourceSet;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Leases requested at once per resource shape (Ray caps pending lease requests too).
const MAX_LEASE_REQUESTS: usize = 4;
/// A lease with nothing to do for this long goes back to the node manager.
const IDLE_LEASE_RETURN: Duration = Duration::from_millis(100);
/// Tasks pipelined on one lease when tasks are short; long tasks get one at a time so that
/// they spread over workers.
const PIPELINE_DEPTH: usize = 64;
const SHORT_TASK_MICROS: f64 = 2_000.0;

/// A task waiting to run, owned by the submitter.
pub(crate) struct PendingTask {
    pub function: &'static str,
    pub shape: ResourceSet,
    pub shape_key: Arc<str>,
    pub args: Vec<ArgSpec>,
    pub return_id: ObjectId,
    /// Retries left after a worker dies: -1 means forever.
    pub retries_left: i32,
    /// Argument values, filled once every dependency is ready.
    pub resolved: Vec<ray_proto::ObjectValue>,
}

pub(crate) enum Event {
    Submit(PendingTask),
    Resolved(PendingTask),
    LeaseGranted(Arc<str>, Lease),
    LeaseFailed(Arc<str>, Error),
    Reply(u64, ray_proto::ReplyFrame),
    Disconnected(u64, String),
    ActorCall(ActorCall),
    ActorResolved([u8; 16]),
    ActorConnected(
        [u8; 16],
        u64,
        u64,
        mpsc::UnboundedSender<ray_proto::TaskFrame>,
        Arc<str>,
    ),
    /// The actor could not be reached at this incarnation (`None`) or is dead (`Some`).
    ActorUnreachable([u8; 16], u64, Option<Error>),
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
    ActorKilled([u8; 16], String),
    /// Calls lost with this actor's process have waited [`LOST_CALL_WAIT`] for word of its
    /// fate: they fail as unavailable (it is restarting, or the GCS is slow to say).
    LostCallsDue([u8; 16]),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// A method call waiting to run, owned by the submitter.
pub(crate) struct ActorCall {
    pub actor_id: [u8; 16],
    pub class: Arc<str>,
    pub method: &'static str,
    pub args: Vec<ArgSpec>,
    pub return_id: ObjectId,
    /// Resends left if the actor's process dies with this call in flight: -1 means forever.
    pub retries_left: i32,
    pub resolved: Option<Vec<ray_proto::ObjectValue>>,
    /// Keeps an owner-scoped actor alive until this call is answered (Ray ends an actor
    /// whose handles are gone only after the calls already made). Held, never read.
    #[allow(dead_code)]
    pub lifetime: Option<crate::ObjectRef<()>>,
    /// Its arguments were waited for once: if still not ready, they never will be.
    pub waited: bool,
}

impl ActorCall {
    fn label(&self) -> String {
        format!("{}.{}", self.class, self.method)
    }
}

/// The calls of this process to one actor, in the order they were made.
struct ActorQueue {
    class: Arc<str>,
    pending: VecDeque<ActorCall>,
    in_flight: std::collections::BTreeMap<u64, ActorCall>,
    conn: Option<(u64, mpsc::UnboundedSender<ray_proto::TaskFrame>)>,
    /// The actor process's core-worker address: the borrower named when it keeps a ref.
    address: Arc<str>,
    next_seq: u64,
    incarnation: u64,
    /// A connection dropped: the next connect asks for the next incarnation but only waits
    /// a while for it, since the actor may be alive and the drop ours.
    after_drop: bool,
    connecting: bool,
    waiting_deps: bool,
    dead: Option<Error>,
    /// Calls lost in flight with the actor's process, with no retries left: they fail once
    /// the GCS says what became of the actor (dead for good, or restarting: unavailable).
    lost: Vec<(ActorCall, String)>,
}

/// How long calls lost with an actor's process wait to learn whether it is dead for good
/// (`ActorDied`) before they fail as `ActorUnavailable`: a restart may take long, and the
/// caller should not wait for it to hear that its call is lost.
const LOST_CALL_WAIT: Duration = Duration::from_secs(2);

/// Connection ids of actor connections live above this bit, apart from lease ids.
const ACTOR_CONN_BIT: u64 = 1 << 62;

pub(crate) struct Lease {
    id: u64,
    pid: u32,
    core_worker_address: Arc<str>,
    tx: mpsc::UnboundedSender<ray_proto::TaskFrame>,
    in_flight: HashMap<u64, PendingTask>,
    next_seq: u64,
    idle_since: Option<Instant>,
    /// The worker sent a task back (it is blocked): push nothing more until it answers.
    stalled: bool,
}

struct ShapeQueue {
    shape: ResourceSet,
    /// `shape` as task frames carry it, encoded once.
    shape_wire: bytes::Bytes,
    tasks: VecDeque<PendingTask>,
    leases: Vec<u64>,
    requesting: usize,
    avg_exec_micros: f64,
}

/// The clients a core worker calls other processes through, handed in when it is built.
pub(crate) struct Clients {
    /// Opens clients of other core workers (owners, borrowers).
    pub connect: Arc<dyn Connect>,
    /// This node's node manager.
    pub raylet: Arc<dyn NodeManagerApi>,
    /// The GCS.
    pub gcs: Arc<dyn GcsApi>,
}

/// This process's link to its node and to other core workers.
pub(crate) struct Cluster {
    pub handle: tokio::runtime::Handle,
    pub token: Arc<str>,
    /// Opens clients of other processes (owners, the GCS).
    pub connect: Arc<dyn Connect>,
    pub raylet: Arc<dyn NodeManagerApi>,
    pub gcs: Arc<dyn GcsApi>,
    pub arena: ArenaMapping,
    pub events: mpsc::UnboundedSender<Event>,
    peers: DashMap<Arc<str>, Arc<dyn CoreWorkerApi>>,
    pending_deletes: Arc<AtomicUsize>,
    releases: mpsc::UnboundedSender<(Arc<str>, ObjectId, Arc<str>)>,
    fetches: mpsc::UnboundedSender<crate::fetch::FetchRequest>,
    /// Workers only: tells the node manager this worker blocks or resumes.
    pub blocked_hook: Option<Box<dyn Fn(bool) + Send + Sync>>,
}

impl Cluster {
    pub fn new(
        handle: tokio::runtime::Handle,
        token: Arc<str>,
        clients: Clients,
        arena: ArenaMapping,
        events: mpsc::UnboundedSender<Event>,
        blocked_hook: Option<Box<dyn Fn(bool) + Send + Sync>>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<crate::fetch::FetchRequest>)> {
        let Clients {
            connect,
            raylet,
            gcs,
        } = clients;
        let (releases, pending_releases) = mpsc::unbounded_channel();
        let (fetches, fetch_queue) = mpsc::unbounded_channel();
        handle.spawn(send_releases(pending_releases, connect.clone()));
        let cluster = Cluster {
            handle,
            token,
            connect,
            raylet,
            gcs,
            arena,
            events,
            peers: DashMap::new(),
            pending_deletes: Arc::new(AtomicUsize::new(0)),
            releases,
            fetches,
            blocked_hook,
        };
        Ok((cluster, fetch_queue))
    }

    pub fn submit_actor_call(&self, call: ActorCall) {
        if let Err(mpsc::error::SendError(Event::ActorCall(call))) =
            self.events.send(Event::ActorCall(call))
        {
            if let Ok(rt) = crate::runtime::current() {
                rt.store.put(
                    call.return_id,
                    Stored::Failed(Arc::new(Error::NotInitialized)),
                );
            }
        }
    }

    /// Runs `f` on the session's tokio runtime and waits for it from this (non-async) thread.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .map_err(|_| Error::Runtime("the session's runtime stopped".into()))
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
        self.events.send(ask).ok()?;
        answer.recv().ok().flatten()
    }

    pub fn submit(&self, task: PendingTask) {
        if let Err(mpsc::error::SendError(Event::Submit(task))) =
            self.events.send(Event::Submit(task))
        {
            fail_task(None, &task, Error::NotInitialized);
        }
    }

    pub fn peer(&self, address: &Arc<str>) -> Result<Arc<dyn CoreWorkerApi>> {
        if let Some(p) = self.peers.get(address) {
            return Ok(p.clone());
        }
        // Lazy channels spawn their connection task: build them inside our runtime, whatever
        // thread (a user's, a Drop's) asked.
        let _in_runtime = self.handle.enter();
        let client = self.connect.core_worker(address)?;
        self.peers.insert(address.clone(), client.clone());
        Ok(client)
    }

    /// Writes `bytes` into the node's shared memory as object `id`, once; sealed on return.
    pub fn put_plasma(&self, id: ObjectId, bytes: &[u8], raw: u32) -> Result<Stored> {
        self.put_plasma_with(id, bytes.len() as u64, raw, |buf| {
            buf.copy_from_slice(bytes);
            Ok(())
        })
    }

    /// Creates object `id` of `size` bytes in the node's shared memory, lets `write` fill
    /// it in place (no buffer of its own), and seals it.
    pub fn put_plasma_with(
        &self,
        id: ObjectId,
        size: u64,
        raw: u32,
        write: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Stored> {
        let raylet = self.raylet.clone();
        let req = ray_proto::CreateObjectRequest {
            object_id: id.0.to_vec().into(),
            size,
        };
        let mut reply = self.call({
            let raylet = raylet.clone();
            let req = req.clone();
            async move { raylet.create_object(req).await }
        })?;
        if matches!(&reply, Err(e) if e.kind == RpcErrorKind::AlreadyExists) {
            // Left by an earlier attempt of the same task whose worker died: clear it.
            let oid = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
            };
            let del = ray_proto::DeleteObjectsRequest {
                object_ids: vec![id.0.to_vec().into()],
            };
            let req2 = req.clone();
            reply = self.call({
                let raylet = raylet.clone();
                async move {
                    let _ = raylet.abort_object(oid).await;
                    let _ = raylet.delete_objects(del).await;
                    raylet.create_object(req2).await
                }
            })?;
        }
        if matches!(&reply, Err(e) if e.kind == RpcErrorKind::Exhausted) {
            // Frees of unreferenced objects may still be on their way: let them land, retry.
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.pending_deletes.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            reply = self.call({
                let raylet = raylet.clone();
                async move { raylet.create_object(req).await }
            })?;
        }
        let created = match reply {
            Ok(r) => r,
            Err(e) if e.kind == RpcErrorKind::Exhausted => {
                return Err(Error::ObjectStoreFull(e.message))
            }
            Err(e) => return Err(Error::Runtime(format!("create object: {}", e.message))),
        };
        let alloc = Allocation {
            offset: created.offset,
            len: size,
        };
        // A panic in `write` (a user's `Serialize`) must not leave the object unsealed for good.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: this process created the allocation and writes it alone until the seal
            // below (the store's access protocol); the slice does not outlive this closure.
            unsafe { self.arena.bytes_mut(alloc) }
                .map_err(Error::runtime)
                .and_then(write)
        }));
        let written = match written {
            Ok(w) => w,
            Err(panic) => {
                let oid = ray_proto::ObjectRequest {
                    object_id: id.0.to_vec().into(),
                };
                let _ = self.call(async move { raylet.abort_object(oid).await });
                std::panic::resume_unwind(panic);
            }
        };
        if let Err(e) = written {
            let oid = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
            };
            let _ = self.call(async move { raylet.abort_object(oid).await });
            return Err(e);
        }
        let oid = ray_proto::ObjectRequest {
            object_id: id.0.to_vec().into(),
        };
        self.call(async move { raylet.seal_object(oid).await })?
            .map_err(|e| Error::Runtime(format!("seal object: {}", e.message)))?;
        Ok(Stored::Plasma {
            offset: created.offset,
            size,
            raw,
        })
    }

    /// The bytes of a sealed shared-memory object, read in place.
    pub fn plasma_bytes(&self, offset: u64, size: u64) -> Result<&[u8]> {
        self.arena
            .bytes(Allocation { offset, len: size })
            .map_err(Error::runtime)
    }

    pub fn delete_plasma(&self, id: ObjectId) {
        let raylet = self.raylet.clone();
        let pending = self.pending_deletes.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        self.handle.spawn(async move {
            let req = ray_proto::DeleteObjectsRequest {
                object_ids: vec![id.0.to_vec().into()],
            };
            if let Err(e) = raylet.delete_objects(req).await {
                tracing::debug!(%id, error = %e, "deleting a freed object failed");
            }
            pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Tells `owner` this process let go of `id`. Releases are batched: one call per owner
    /// carries every release queued meanwhile.
    pub fn remove_borrower(&self, id: ObjectId, owner: Arc<str>, me: Arc<str>) {
        let _ = self.releases.send((owner, id, me));
    }

    /// Asks the owner for the value of a borrowed object; it is stored here when it comes
    /// (see [`crate::fetch`]).
    pub fn fetch_from_owner(&self, id: ObjectId, owner: Arc<str>) {
        // After shutdown nobody fetches; waiters are failed by the shutdown itself.
        let _ = self.fetches.send((owner, id));
    }
}

/// Sends borrowers' releases, one call per owner for everything queued meanwhile.
async fn send_releases(
    mut queue: mpsc::UnboundedReceiver<(Arc<str>, ObjectId, Arc<str>)>,
    connect: Arc<dyn Connect>,
) {
    let mut clients: HashMap<Arc<str>, Arc<dyn CoreWorkerApi>> = HashMap::new();
    while let Some(first) = queue.recv().await {
        let mut batches: HashMap<(Arc<str>, Arc<str>), Vec<bytes::Bytes>> = HashMap::new();
        let mut add = |(owner, id, me): (Arc<str>, ObjectId, Arc<str>)| {
            batches
                .entry((owner, me))
                .or_default()
                .push(id.0.to_vec().into());
        };
        add(first);
        while let Ok(more) = queue.try_recv() {
            add(more);
        }
        for ((owner, me), ids) in batches {
            let peer = match clients.get(&owner) {
                Some(p) => p.clone(),
                None => match connect.core_worker(&owner) {
                    Ok(p) => {
                        clients.insert(owner.clone(), p.clone());
                        p
                    }
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let req = ray_proto::RemoveBorrowerRequest {
                    object_id: Default::default(),
                    borrower_address: me.to_string(),
                    object_ids: ids,
                };
                // The owner may be gone; then so is the object.
                let _ = peer.remove_borrower(req).await;
            });
        }
    }
}

/// Marks the calling thread blocked in `get` for its whole life, if it is a worker's task
/// thread: the node manager lends its CPU to other work meanwhile (as Ray does).
pub(crate) struct BlockedGuard<'a> {
    hook: Option<&'a (dyn Fn(bool) + Send + Sync)>,
    events: Option<&'a mpsc::UnboundedSender<Event>>,
}

impl<'a> BlockedGuard<'a> {
    pub fn enter(rt: &'a Runtime) -> Self {
        let hook = rt
            .cluster
            .as_ref()
            .and_then(|c| c.blocked_hook.as_deref())
            .filter(|_| crate::worker::in_task());
        if let Some(h) = hook {
            if let Some(c) = &rt.cluster {
                let _ = c.events.send(Event::Blocked(true));
            }
            h(true);
        }
        BlockedGuard {
            hook,
            events: rt.cluster.as_ref().map(|c| &c.events),
        }
    }
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.hook {
            h(false);
            if let Some(events) = self.events {
                let _ = events.send(Event::Blocked(false));
            }
        }
    }
}

fn fail_task(rt: Option<&Runtime>, task: &PendingTask, error: Error) {
    let rt = match rt {
        Some(rt) => rt,
        None => return,
    };
    rt.store
        .put(task.return_id, Stored::Failed(Arc::new(error)));
}

/// The submitter: runs until shutdown on the session's runtime.
pub(crate) async fn run_submitter(rt: Weak<Runtime>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut s = Submitter {
        rt,
        queues: HashMap::new(),
        leases: HashMap::new(),
        actors: HashMap::new(),
        actor_conns: HashMap::new(),
        next_conn: ACTOR_CONN_BIT,
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
    rt: Weak<Runtime>,
    queues: HashMap<Arc<str>, ShapeQueue>,
    leases: HashMap<u64, (Arc<str>, Lease)>,
    actors: HashMap<[u8; 16], ActorQueue>,
    actor_conns: HashMap<u64, [u8; 16]>,
    next_conn: u64,
    /// This worker's task is blocked in `get` (see [`Event::Blocked`]).
    blocked: bool,
}

impl Submitter {
    fn handle(&mut self, ev: Event) {
        let Some(rt) = self.rt.upgrade() else {
            return;
        };
        match ev {
            Event::Submit(task) => self.resolve(&rt, task),
            Event::Resolved(task) => {
                let key = task.shape_key.clone();
                self.queue(&key, &task.shape).tasks.push_back(task);
                self.dispatch(&rt, &key);
            }
            Event::LeaseGranted(key, lease) => {
                let q = self.queue(&key, &ResourceSet::new());
                q.requesting = q.requesting.saturating_sub(1);
                tracing::debug!(%key, lease = lease.id, queued = q.tasks.len(), requesting = q.requesting, "lease granted");
                if q.tasks.is_empty() {
                    // Requested for tasks that ran elsewhere meanwhile: give it straight back
                    // rather than hold resources others may wait for.
                    return_lease(&rt, lease.id, false);
                    return;
                }
                q.leases.push(lease.id);
                self.leases.insert(lease.id, (key.clone(), lease));
                self.dispatch(&rt, &key);
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
                    if let Some(c) = &rt.cluster {
                        let events = c.events.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = events.send(Event::Redispatch(key));
                        });
                    }
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
                        fail_task(Some(&rt), &task, e);
                    }
                }
            }
            Event::Reply(id, frame) if id & ACTOR_CONN_BIT != 0 => {
                self.on_actor_reply(&rt, id, frame)
            }
            Event::Disconnected(id, why) if id & ACTOR_CONN_BIT != 0 => {
                self.on_actor_disconnect(&rt, id, why)
            }
            Event::Reply(lease_id, frame) => self.on_reply(&rt, lease_id, frame),
            Event::Disconnected(lease_id, why) => self.on_disconnect(&rt, lease_id, why),
            Event::ActorCall(call) => {
                let id = call.actor_id;
                let class = call.class.clone();
                self.actors
                    .entry(id)
                    .or_insert_with(|| ActorQueue {
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
                    })
                    .pending
                    .push_back(call);
                self.pump_actor(&rt, id);
            }
            Event::ActorResolved(id) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    q.waiting_deps = false;
                    if let Some(front) = q.pending.front_mut() {
                        front.waited = true;
                    }
                }
                self.pump_actor(&rt, id);
            }
            Event::ActorConnected(id, incarnation, conn_id, tx, address) => {
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
                fail_lost(&rt, q, &now);
                self.pump_actor(&rt, id);
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
                self.pump_actor(&rt, id);
            }
            Event::ActorKilled(id, cause) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    q.dead = Some(Error::ActorDied {
                        class: q.class.to_string(),
                        cause,
                    });
                }
                self.pump_actor(&rt, id);
            }
            Event::Redispatch(key) => self.dispatch(&rt, &key),
            Event::LostCallsDue(id) => {
                if let Some(q) = self.actors.get_mut(&id) {
                    fail_lost(&rt, q, "the actor is restarting or cannot be reached now");
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

    fn queue(&mut self, key: &Arc<str>, shape: &ResourceSet) -> &mut ShapeQueue {
        self.queues
            .entry(key.clone())
            .or_insert_with(|| ShapeQueue {
                shape: shape.clone(),
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
    fn resolve(&mut self, rt: &Arc<Runtime>, mut task: PendingTask) {
        let needs_wait = task.args.iter().any(|a| match &a.0 {
            ArgKind::Ref(r) => !rt.store.is_ready(&r.id),
            _ => false,
        });
        if !needs_wait {
            match resolve_now(rt, &task) {
                Ok(values) => {
                    task.resolved = values;
                    self.handle(Event::Resolved(task));
                }
                Err(e) => fail_task(Some(rt), &task, e),
            }
            return;
        }
        let rt = rt.clone();
        let events = rt
            .cluster
            .as_ref()
            .map(|c| c.events.clone())
            .expect("the submitter runs only with a cluster");
        tokio::spawn(async move {
            for a in &task.args {
                if let ArgKind::Ref(r) = &a.0 {
                    wait_ready_async(&rt, r).await;
                }
            }
            match resolve_now(&rt, &task) {
                Ok(values) => {
                    task.resolved = values;
                    let _ = events.send(Event::Resolved(task));
                }
                Err(e) => fail_task(Some(&rt), &task, e),
            }
        });
    }

    fn dispatch(&mut self, rt: &Arc<Runtime>, key: &Arc<str>) {
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
                    request_lease(rt, key.clone(), q.shape.clone());
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
                owner_address: rt.address.to_string(),
                job_id: rt.job_id,
                actor_id: Default::default(),
                shape: q.shape_wire.clone(),
            };
            if lease.tx.send(frame).is_err() {
                // The connection is closing; its Disconnected event will requeue in-flight
                // tasks, this one included.
            }
            lease.in_flight.insert(seq, task);
        }
    }

    fn on_reply(&mut self, rt: &Arc<Runtime>, lease_id: u64, frame: ray_proto::ReplyFrame) {
        let Some((key, lease)) = self.leases.get_mut(&lease_id) else {
            return;
        };
        let key = key.clone();
        let Some(task) = lease.in_flight.remove(&frame.seq) else {
            return;
        };
        if frame.requeue {
            tracing::debug!(
                lease = lease_id,
                in_flight = lease.in_flight.len(),
                "task handed back by a blocked worker"
            );
            lease.stalled = true;
            if let Some(q) = self.queues.get_mut(&key) {
                q.tasks.push_front(task);
            }
            self.dispatch(rt, &key);
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
        let stored = match frame.value {
            Some(v) => Stored::from_proto(v),
            None => Stored::Failed(Arc::new(Error::Runtime("reply without a value".into()))),
        };
        rt.complete(task.return_id, stored);
        register_borrowers(rt, &frame.borrowed_ids, borrower, task);
        self.dispatch(rt, &key);
        if self.blocked {
            self.return_idle_leases(Duration::ZERO);
        }
    }

    fn on_disconnect(&mut self, rt: &Arc<Runtime>, lease_id: u64, why: String) {
        let Some((key, lease)) = self.leases.remove(&lease_id) else {
            return;
        };
        return_lease(rt, lease_id, true);
        let q = self.queue(&key, &ResourceSet::new());
        q.leases.retain(|l| *l != lease_id);
        let mut in_flight: Vec<(u64, PendingTask)> = lease.in_flight.into_iter().collect();
        in_flight.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (_, mut task) in in_flight {
            if task.retries_left != 0 {
                if task.retries_left > 0 {
                    task.retries_left -= 1;
                }
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
                fail_task(Some(rt), &task, e);
            }
        }
        self.dispatch(rt, &key);
    }

    /// Takes a queued task for [`Event::Steal`]. Looks at the first few tasks of each queue
    /// only, so a steal costs the same whatever the queue's length.
    fn steal(&mut self, wanted: &HashSet<ObjectId>, fits: &ResourceSet) -> Option<PendingTask> {
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
            let found = q
                .tasks
                .iter()
                .take(LOOK_AT)
                .position(|t| wanted.contains(&t.return_id) && t.retries_left != 0 && plain(t));
            if let Some(i) = found {
                return q.tasks.remove(i);
            }
        }
        None
    }

    /// Gives back leases idle for longer than `hold` whose queue is empty.
    fn return_idle_leases(&mut self, hold: Duration) {
        let Some(rt) = self.rt.upgrade() else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<u64> = self
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
            if let Some((key, _lease)) = self.leases.remove(&id) {
                if let Some(q) = self.queues.get_mut(&key) {
                    q.leases.retain(|l| *l != id);
                }
                return_lease(&rt, id, false);
            }
        }
    }

    fn shutdown(&mut self) {
        let rt = self.rt.upgrade();
        for (_, q) in self.queues.drain() {
            for task in q.tasks {
                fail_task(rt.as_deref(), &task, Error::NotInitialized);
            }
        }
        for (_, (_, lease)) in self.leases.drain() {
            for (_, task) in lease.in_flight {
                fail_task(rt.as_deref(), &task, Error::NotInitialized);
            }
        }
        if let Some(rt) = &rt {
            for (_, q) in self.actors.drain() {
                for call in q.pending.into_iter().chain(q.in_flight.into_values()) {
                    rt.store.put(
                        call.return_id,
                        Stored::Failed(Arc::new(Error::NotInitialized)),
                    );
                }
            }
        }
    }

    /// Sends the actor's calls, in order, as far as their arguments are ready and a
    /// connection is open; connects (after a restart: to the next incarnation) if needed.
    fn pump_actor(&mut self, rt: &Arc<Runtime>, id: [u8; 16]) {
        let Some(q) = self.actors.get_mut(&id) else {
            return;
        };
        if let Some(dead) = &q.dead {
            let lost = q.lost.drain(..).map(|(call, _)| call);
            for call in q.pending.drain(..).chain(lost) {
                rt.complete(call.return_id, Stored::Failed(Arc::new(dead.clone())));
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
                    ArgKind::Ref(r) => rt.store.is_ready(&r.id),
                    _ => true,
                });
                if !ready && !front.waited {
                    if !q.waiting_deps {
                        q.waiting_deps = true;
                        let refs: Vec<Arc<RefInner>> = front
                            .args
                            .iter()
                            .filter_map(|a| match &a.0 {
                                ArgKind::Ref(r) => Some(r.clone()),
                                _ => None,
                            })
                            .collect();
                        let rt2 = rt.clone();
                        let events = rt.cluster.as_ref().map(|c| c.events.clone());
                        tokio::spawn(async move {
                            for r in &refs {
                                wait_ready_async(&rt2, r).await;
                            }
                            if let Some(ev) = events {
                                let _ = ev.send(Event::ActorResolved(id));
                            }
                        });
                    }
                    return;
                }
                match resolve_args(rt, &front.args, &front.label()) {
                    Ok(values) => front.resolved = Some(values),
                    Err(e) => {
                        let call = q.pending.pop_front().expect("front exists");
                        rt.complete(call.return_id, Stored::Failed(Arc::new(e)));
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
                owner_address: rt.address.to_string(),
                job_id: rt.job_id,
                actor_id: id.to_vec().into(),
                shape: Default::default(),
            };
            // A closed connection shows up as a Disconnected event, which resends or fails
            // what is in flight, this call included.
            let _ = tx.send(frame);
            q.in_flight.insert(seq, call);
        }
        // Calls wait for a connection, or lost calls for word of the actor's fate: ask the
        // GCS (after a restart, for the next incarnation) and connect.
        let wants = !q.pending.is_empty() || !q.lost.is_empty();
        if wants && q.conn.is_none() && !q.connecting {
            q.connecting = true;
            connect_actor(
                rt,
                id,
                q.class.clone(),
                q.incarnation + 1,
                q.after_drop,
                self.next_conn,
            );
            self.next_conn += 1;
        }
    }

    fn on_actor_reply(&mut self, rt: &Arc<Runtime>, conn_id: u64, frame: ray_proto::ReplyFrame) {
        let Some(id) = self.actor_conns.get(&conn_id) else {
            return;
        };
        let Some(q) = self.actors.get_mut(id) else {
            return;
        };
        let Some(call) = q.in_flight.remove(&frame.seq) else {
            return;
        };
        let stored = match frame.value {
            Some(v) => Stored::from_proto(v),
            None => Stored::Failed(Arc::new(Error::Runtime("reply without a value".into()))),
        };
        rt.complete(call.return_id, stored);
        register_borrowers(rt, &frame.borrowed_ids, q.address.clone(), call);
    }

    fn on_actor_disconnect(&mut self, rt: &Arc<Runtime>, conn_id: u64, why: String) {
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
            if call.retries_left != 0 {
                if call.retries_left > 0 {
                    call.retries_left -= 1;
                }
                q.pending.push_front(call);
            } else {
                q.lost.push((call, why.clone()));
            }
        }
        if !q.lost.is_empty() {
            if let Some(c) = &rt.cluster {
                let events = c.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LOST_CALL_WAIT).await;
                    let _ = events.send(Event::LostCallsDue(id));
                });
            }
        }
        // Learn from the GCS whether it restarts or is dead (pump connects if calls wait).
        self.pump_actor(rt, id);
    }
}

/// Fails the calls lost with the actor's process as unavailable (retryable): they may or
/// may not have run. `now` says what is known of the actor.
fn fail_lost(rt: &Runtime, q: &mut ActorQueue, now: &str) {
    for (call, why) in q.lost.drain(..) {
        let e = Error::ActorUnavailable {
            class: q.class.to_string(),
            cause: format!(
                "its process died while running {} ({why}); {now}; the call was not retried \
                 (max_task_retries = 0)",
                call.method
            ),
        };
        rt.complete(call.return_id, Stored::Failed(Arc::new(e)));
    }
}

/// Asks the GCS for the actor at `min_incarnation` or later, then connects to it. With
/// `bounded`, the GCS answers after a while even if no new incarnation came: the actor did
/// not die, only our connection did, and we reconnect to it.
fn connect_actor(
    rt: &Arc<Runtime>,
    id: [u8; 16],
    class: Arc<str>,
    min_incarnation: u64,
    bounded: bool,
    conn_id: u64,
) {
    let Some(c) = &rt.cluster else {
        return;
    };
    let gcs = c.gcs.clone();
    let events = c.events.clone();
    let token = c.token.clone();
    tokio::spawn(async move {
        let req = ray_proto::GetActorInfoRequest {
            actor_id: id.to_vec().into(),
            min_incarnation,
            wait_ms: if bounded { 3_000 } else { 0 },
        };
        let info = match gcs.get_actor_info(req).await {
            Ok(i) => i,
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
        match connect_worker(&info.task_socket, &token, conn_id, events.clone()).await {
            Ok(tx) => {
                let _ = events.send(Event::ActorConnected(
                    id,
                    info.incarnation,
                    conn_id,
                    tx,
                    info.core_worker_address.as_str().into(),
                ));
            }
            Err(_) => {
                // It died between the GCS's answer and our connect: wait for the next one.
                let _ = events.send(Event::ActorUnreachable(id, info.incarnation, None));
            }
        }
    });
}

/// Records that `borrower` still holds these refs after its task, then lets the task (and
/// the refs it holds for its arguments) go. For refs this process only borrows itself, the
/// borrower is registered with the real owner first: only then may our own hold end.
fn register_borrowers<H: Send + 'static>(
    rt: &Arc<Runtime>,
    ids: &[bytes::Bytes],
    borrower: Arc<str>,
    hold: H,
) {
    let mut foreign = Vec::new();
    for raw in ids {
        let Ok(id) = crate::ids::id16(raw, "object id").map(ObjectId) else {
            continue;
        };
        match rt.refs.owner_of(&id) {
            Some(None) => rt.refs.add_borrower(id, borrower.clone()),
            Some(Some(owner)) => foreign.push((id, owner)),
            None => {}
        }
    }
    let Some(c) = rt.cluster.as_ref().filter(|_| !foreign.is_empty()) else {
        drop(hold);
        return;
    };
    let peers: Vec<_> = foreign
        .into_iter()
        .filter_map(|(id, owner)| c.peer(&owner).ok().map(|p| (id, p)))
        .collect();
    tokio::spawn(async move {
        for (id, peer) in peers {
            let req = ray_proto::AddBorrowerRequest {
                object_id: id.0.to_vec().into(),
                borrower_address: borrower.to_string(),
            };
            // An owner that is gone has lost the object anyway.
            let _ = peer.add_borrower(req).await;
        }
        drop(hold);
    });
}

async fn wait_ready_async(rt: &Arc<Runtime>, r: &RefInner) {
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match rt
            .store
            .subscribe(r.id, Waiter::Async(tx), r.owner.is_some())
        {
            Subscribed::Ready(_) | Subscribed::Unknown => return,
            Subscribed::Pending { fetch } => {
                if fetch {
                    if let (Some(c), Some(owner)) = (&rt.cluster, &r.owner) {
                        c.fetch_from_owner(r.id, owner.clone());
                    }
                }
                if rx.recv().await.is_none() {
                    return;
                }
            }
        }
    }
}

/// The argument values of a task whose dependencies are all ready.
fn resolve_now(rt: &Runtime, task: &PendingTask) -> Result<Vec<ray_proto::ObjectValue>> {
    resolve_args(rt, &task.args, task.function)
}

fn resolve_args(
    rt: &Runtime,
    args: &[ArgSpec],
    function: &str,
) -> Result<Vec<ray_proto::ObjectValue>> {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        let stored = match &a.0 {
            ArgKind::Value(b, _) => Stored::Inline(b.clone()),
            ArgKind::Ref(r) => match rt.store.get(&r.id) {
                Some(Stored::Failed(e)) => {
                    return Err(Error::ArgumentFailed {
                        function: function.to_string(),
                        cause: Box::new((*e).clone()),
                    })
                }
                Some(v) => v,
                None => return Err(Error::ObjectLost(r.id.to_hex())),
            },
            ArgKind::Unencodable(e) => return Err(e.clone()),
        };
        values.push(stored.to_proto());
    }
    Ok(values)
}

fn return_lease(rt: &Runtime, lease_id: u64, worker_failed: bool) {
    let Some(c) = &rt.cluster else {
        return;
    };
    let raylet = c.raylet.clone();
    tokio::spawn(async move {
        let _ = raylet
            .return_worker(ray_proto::ReturnWorkerRequest {
                lease_id,
                worker_failed,
            })
            .await;
    });
}

fn request_lease(rt: &Arc<Runtime>, key: Arc<str>, shape: ResourceSet) {
    let Some(c) = &rt.cluster else {
        return;
    };
    let raylet = c.raylet.clone();
    let events = c.events.clone();
    let token = c.token.clone();
    // Workers name themselves, so their leases come back if they die; a driver's die with it.
    let requester: Vec<u8> = if rt.is_worker {
        rt.worker_id.to_vec()
    } else {
        Vec::new()
    };
    tokio::spawn(async move {
        let req = ray_proto::LeaseRequest {
            shape: Some(ray_common::resources::to_resources(&shape)),
            requester_id: requester.into(),
            for_actor: false,
        };
        let ev = match raylet.request_worker_lease(req).await {
            // The node's worker limit held the request past its deadline.
            Err(e) if e.kind == RpcErrorKind::Exhausted => Event::LeaseFailed(
                key,
                Error::Unschedulable {
                    function: String::new(),
                    reason: e.message,
                },
            ),
            Err(e) => Event::LeaseFailed(key, Error::Runtime(format!("lease: {}", e.message))),
            Ok(reply) => match reply.result {
                Some(ray_proto::lease_reply::Result::Granted(g)) => {
                    match connect_lease(&g, &token, events.clone()).await {
                        Ok(lease) => Event::LeaseGranted(key, lease),
                        Err(e) => {
                            let _ = raylet
                                .return_worker(ray_proto::ReturnWorkerRequest {
                                    lease_id: g.lease_id,
                                    worker_failed: true,
                                })
                                .await;
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
                None => Event::LeaseFailed(key, Error::Runtime("empty lease reply".into())),
            },
        };
        let _ = events.send(ev);
    });
}

/// Connects to a leased worker's task socket.
async fn connect_lease(
    g: &ray_proto::Lease,
    token: &str,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Lease> {
    let tx = connect_worker(&g.task_socket, token, g.lease_id, events).await?;
    Ok(Lease {
        id: g.lease_id,
        pid: g.pid,
        core_worker_address: g.core_worker_address.as_str().into(),
        tx,
        in_flight: HashMap::new(),
        next_seq: 1,
        idle_since: Some(Instant::now()),
        stalled: false,
    })
}

/// Connects to a worker's task socket and starts its writer and reader; replies and the
/// connection's end come back as events tagged `conn_id`.
async fn connect_worker(
    socket: &str,
    token: &str,
    conn_id: u64,
    events: mpsc::UnboundedSender<Event>,
) -> Result<mpsc::UnboundedSender<ray_proto::TaskFrame>> {
    let stream = crate::worker::connect_task_socket(socket)?;
    let (read, mut write) = stream.into_split();
    let mut hello = Vec::new();
    encode_frame(
        &ray_proto::Hello {
            token: token.to_string(),
        },
        &mut hello,
    );
    write.write_all(&hello).await.map_err(Error::runtime)?;
    let (tx, rx) = mpsc::unbounded_channel::<ray_proto::TaskFrame>();
    let lease_id = conn_id;
    let writer_events = events.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::frames::write_frames(rx, write).await {
            let _ = writer_events.send(Event::Disconnected(lease_id, e.to_string()));
        }
    });
    tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 * 1024, read);
        let mut scratch = Vec::new();
        loop {
            match read_frame::<ray_proto::ReplyFrame, _>(
                &mut r,
                &mut scratch,
                ray_proto::MAX_MESSAGE_BYTES,
            )
            .await
            {
                Ok(Some(frame)) => {
                    if events.send(Event::Reply(lease_id, frame)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = events.send(Event::Disconnected(lease_id, "connection closed".into()));
                    return;
                }
                Err(e) => {
                    let _ = events.send(Event::Disconnected(lease_id, e.to_string()));
                    return;
                }
            }
        }
    });
    Ok(tx)
}
