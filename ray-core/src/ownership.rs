//! What a core worker owns and borrows: its identity, the values it holds ([`MemoryStore`]),
//! the refs it counts ([`ReferenceTable`]), the actors whose lifetime its handles scope, and
//! [`RefInner`], the untyped handle whose drop releases an object.
//!
//! Knows no global: a ref finds its owner through the [`Weak`] it was made with, and a
//! decoded ref finds the core worker decoding it through [`with_decoder`], a call-scoped
//! thread-local set by whoever decodes.

use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{IdGen, ObjectId};
use crate::link::Link;
use crate::memory_store::{MemoryStore, Stored, Subscribed, Waiter};
use crate::reference::{ReferenceTable, Release};
use crate::registry::ActorInstance;
use bytes::Bytes;
use ray_common::rpc::{with_retries, CONTROL_DEADLINE};
use ray_common::{ActorId, NodeId, WorkerId};
use serde::de::DeserializeOwned;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Objects larger than this go to the shared-memory store; smaller ones stay inline in the
/// owner's memory and travel inside replies (Ray's `max_direct_call_object_size`).
pub(crate) const INLINE_MAX: usize = 100 * 1024;

/// Who a core worker is: fixed when it is built.
#[derive(Clone, Debug, Default)]
pub(crate) struct Identity {
    /// Owner address: its core-worker endpoint (or "sync:<pid>").
    pub address: Arc<str>,
    pub worker_id: WorkerId,
    pub node_id: NodeId,
    pub job_id: u32,
    pub namespace: String,
    /// A worker process (which names itself in lease requests), not a driver.
    pub is_worker: bool,
    /// Where its tasks run, as task errors name it ("worker 1a2b3c4d (pid 42)").
    pub location: String,
}

/// The tables of one core worker. Built with struct-update syntax: the sites name the
/// identity and link; the tables start empty.
#[derive(Default)]
pub(crate) struct Ownership {
    pub me: Identity,
    pub store: MemoryStore,
    pub refs: ReferenceTable,
    pub ids: IdGen,
    /// Present in local and cluster mode; `None` in sync mode.
    pub link: Option<Arc<Link>>,
    /// The functions and actor classes this process runs.
    pub functions: crate::registry::Functions,
    /// Owner-scoped actors this process created: freeing the id kills the actor.
    pub actor_lifetimes: crate::ids::IdMap<()>,
    /// Entries in `actor_lifetimes`: freeing an object looks there only if there are any.
    pub actor_lifetimes_len: std::sync::atomic::AtomicUsize,
    /// Refs inside the constructor arguments of actors this process created, kept while the
    /// actor may be (re)constructed: they stay valid for its whole life.
    pub actor_args: dashmap::DashMap<ActorId, Vec<Arc<RefInner>>>,
    /// Refs inside values this process owns (a `put` value, a task's result), held while
    /// the value is (Ray's "contained in" references): freeing the value lets them go.
    pub contained: crate::ids::IdMap<Vec<Arc<RefInner>>>,
    /// Entries in `contained`: freeing an object looks there only if there are any (a
    /// lookup per freed object costs small puts a tenth of their rate).
    pub contained_len: std::sync::atomic::AtomicUsize,
    /// The latest borrow registrations applied (their ids), so that a retried one counts once.
    pub registrations: parking_lot::Mutex<RecentIds>,
    /// Sync mode: actors live in this process.
    pub sync_actors: dashmap::DashMap<ActorId, SyncActor>,
    pub sync_names: dashmap::DashMap<(String, String), ActorId>,
    /// Tasks this process (a worker) was asked to cancel.
    pub cancelled: crate::cancel::Cancelled,
    /// The actor this worker hosts, and its incarnation (0: its first life).
    pub hosted_actor: std::sync::OnceLock<(ActorId, u64)>,
    /// An actor's method called `ray::actor::exit_actor` (a fast check of `exiting`).
    pub exit_requested: std::sync::atomic::AtomicBool,
    /// The actors of this process whose method called `ray::actor::exit_actor`: each ends
    /// once that call replied.
    pub exiting: parking_lot::Mutex<Vec<ActorId>>,
    /// Streaming generators this process submitted, by the id of the task's own return:
    /// where their items go.
    pub streams: crate::ids::IdMap<StreamEntry>,
    /// What this process saw of tasks, until it is reported to the GCS (the state API).
    pub task_events: crate::task_events::TaskEvents,
}

/// Where a streaming task's items go, and how many came (a retried task sends its items
/// again from the first: those already here are dropped).
pub(crate) struct StreamEntry {
    pub tx: tokio::sync::mpsc::UnboundedSender<Arc<RefInner>>,
    /// The reader's end, until the generator takes it.
    pub rx: Option<tokio::sync::mpsc::UnboundedReceiver<Arc<RefInner>>>,
    pub next: u64,
}

/// The last [`RecentIds::KEPT`] ids seen, in order.
#[derive(Default)]
pub(crate) struct RecentIds {
    order: std::collections::VecDeque<u64>,
    seen: std::collections::HashSet<u64>,
}

impl RecentIds {
    /// Retries come within [`BORROW_DEADLINE`]; this many registrations cover it.
    const KEPT: usize = 1 << 16;

    /// True the first time `id` is seen (among the last [`RecentIds::KEPT`]).
    fn first(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::KEPT {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// An actor hosted in the driver (sync mode).
pub(crate) struct SyncActor {
    pub class: Arc<str>,
    pub instance: Result<Box<dyn ActorInstance>, Error>,
}

impl crate::tables::Tidy for Ownership {
    fn shrink(&self) -> bool {
        self.store.shrink() | self.refs.shrink()
    }

    fn len(&self) -> usize {
        self.store.len() + self.refs.len()
    }
}

/// The untyped part of a handle. One per handle lifetime in this process; clones of an
/// `ObjectRef` share it, so the reference table counts handles, not clones.
#[derive(Debug)]
pub(crate) struct RefInner {
    pub id: ObjectId,
    /// `None`: this process owns the object.
    pub owner: Option<Arc<str>>,
    pub own: Weak<Ownership>,
    /// Set on a ref that could not even be submitted; `get` returns it.
    pub failed: Option<Error>,
}

impl RefInner {
    /// A ref whose `get` returns `error` (a submission that failed before it started).
    pub fn failed(error: Error) -> Arc<Self> {
        Arc::new(RefInner {
            id: ObjectId([0; 16]),
            owner: None,
            own: Weak::new(),
            failed: Some(error),
        })
    }
}

impl Drop for RefInner {
    fn drop(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Some(own) = self.own.upgrade() {
            own.drop_local_ref(self.id);
        }
    }
}

impl Ownership {
    /// Watches `r`'s value in this process's store, and asks its owner for it if it is
    /// borrowed and not here yet: the one "ready here, or fetch from the owner" step, for
    /// blocking and async waiters alike.
    pub(crate) fn watch(&self, r: &RefInner, waiter: Waiter) -> Subscribed {
        let watched = self.store.subscribe(r.id, waiter, r.owner.is_some());
        if let (Subscribed::Pending { fetch: true }, Some(link), Some(owner)) =
            (&watched, &self.link, &r.owner)
        {
            link.fetch_from_owner(r.id, owner.clone());
        }
        watched
    }

    /// `r`'s value once it is here (fetched from its owner if borrowed): `ObjectLost` if it
    /// was freed, `NotInitialized` if the session stopped first.
    pub(crate) async fn value(&self, r: &RefInner) -> Result<Stored> {
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            match self.watch(r, Waiter::Async(tx)) {
                Subscribed::Ready(v) => return Ok(v),
                Subscribed::Unknown => return Err(Error::ObjectLost(r.id.to_hex())),
                Subscribed::Pending { .. } => {
                    if rx.recv().await.is_none() {
                        return Err(Error::NotInitialized);
                    }
                }
            }
        }
    }

    /// Opens the stream of the streaming task whose own return is `id` (before the task is
    /// submitted: its first item may come back before the submitting call returns).
    pub fn open_stream(&self, id: ObjectId) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = Some(rx);
        self.streams.insert(id, StreamEntry { tx, rx, next: 0 });
    }

    /// The reader's end of stream `id`: its items, in order.
    pub fn take_stream(
        &self,
        id: ObjectId,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Arc<RefInner>>> {
        self.streams.get_mut(&id)?.rx.take()
    }

    /// Item `index` of stream `stream` came, as object `item` (named by its maker): stored
    /// here, owned by this process, and handed to the stream's reader. An item seen before
    /// (sent again by a retried task), or one nobody reads any more, is freed at once.
    pub fn stream_item(
        self: &Arc<Self>,
        stream: ObjectId,
        index: u64,
        item: ObjectId,
        value: Stored,
    ) {
        self.store.put(item, value);
        let r = self.new_ref(item);
        if let Some(mut entry) = self.streams.get_mut(&stream) {
            if index == entry.next {
                entry.next += 1;
                let _ = entry.tx.send(r);
            }
        }
    }

    /// A new handle to `id`, which this process owns.
    pub fn new_ref(self: &Arc<Self>, id: ObjectId) -> Arc<RefInner> {
        self.refs.add_local(id, None, false);
        Arc::new(RefInner {
            id,
            owner: None,
            own: Arc::downgrade(self),
            failed: None,
        })
    }

    /// A handle to `id` met while decoding a value: owned here if `owner` is this process's
    /// address, borrowed otherwise.
    pub fn decoded_ref(self: &Arc<Self>, id: ObjectId, owner: &str) -> Arc<RefInner> {
        let in_task = crate::task_context::decoding_args()
            && DECODING_ARGS.with(|c| c.borrow_mut().as_mut().map(|v| v.push(id)).is_some());
        let owner = (*owner != *self.me.address).then(|| shared_owner(owner));
        let fresh = self
            .refs
            .add_local(id, owner.clone(), in_task && owner.is_some());
        if let (false, true, Some(owner)) = (in_task, fresh, &owner) {
            // Met outside a task's arguments (whose borrows the reply reports): the owner
            // must learn of this borrow while the value it came in still holds the object.
            if COLLECTING.with(|c| c.get()) != Collecting::Off {
                NEW_BORROWS.with(|b| b.borrow_mut().push((id, owner.clone())));
                COLLECTING.with(|c| c.set(Collecting::Found));
            }
        }
        Arc::new(RefInner {
            id,
            owner,
            own: Arc::downgrade(self),
            failed: None,
        })
    }

    /// Records a task's result, unless every ref to it is already gone (then the value is
    /// freed at once instead of lingering).
    pub fn complete(&self, id: ObjectId, value: Stored) {
        if let Some(orphan) = self.store.put_if_present(id, value) {
            self.release_contained(id);
            if let (Stored::Plasma { node, .. }, Some(link)) = (orphan, &self.link) {
                link.store.delete_plasma(id, node);
            }
        }
    }

    /// Holds `inner`, the refs found inside the value of `outer` (which this process owns),
    /// for as long as that value lives here.
    pub fn contain(&self, outer: ObjectId, inner: Vec<Arc<RefInner>>) {
        if !inner.is_empty() && self.contained.insert(outer, inner).is_none() {
            self.contained_len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Ownership::contain`] for a task's `num_returns` results from `first` on: each
    /// holds every ref found in any of them (one task's returns are made together, and the
    /// refs collected while it ran are not told apart by return).
    pub fn contain_all(&self, first: ObjectId, num_returns: u32, inner: Vec<Arc<RefInner>>) {
        if num_returns > 1 {
            for id in crate::ids::return_ids(first, num_returns).skip(1) {
                self.contain(id, inner.clone());
            }
        }
        self.contain(first, inner);
    }

    /// Lets go of the refs held inside `outer`'s value, if any.
    fn release_contained(&self, outer: ObjectId) {
        if self.contained_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Dropped outside the map's lock: releasing them may free more values held here.
        if let Some((_, inner)) = self.contained.remove(&outer) {
            self.contained_len.fetch_sub(1, Ordering::Relaxed);
            drop(inner);
        }
    }

    /// Holds the refs another process found inside the value of `outer` (a task's result),
    /// which it made this process a borrower (or the owner) of. A ref already held here is
    /// counted once with its owner: the extra borrow is given back at once.
    pub fn adopt_contained(
        self: &Arc<Self>,
        outer: ObjectId,
        num_returns: u32,
        wire: &[ray_proto::ObjectRefProto],
    ) {
        let mut held = Vec::with_capacity(wire.len());
        for c in wire {
            let Ok(id) = crate::ids::id16(&c.object_id, "object id").map(ObjectId) else {
                continue;
            };
            let owner = (*c.owner_address != *self.me.address)
                .then(|| Arc::<str>::from(c.owner_address.as_str()));
            let fresh = self.refs.add_local(id, owner.clone(), false);
            if let (false, Some(owner), Some(link)) = (fresh, &owner, &self.link) {
                link.remove_borrower(id, owner.clone(), self.me.address.clone());
            }
            held.push(Arc::new(RefInner {
                id,
                owner,
                own: Arc::downgrade(self),
                failed: None,
            }));
        }
        self.contain_all(outer, num_returns, held);
    }

    /// Tells each owner in `borrows` that `borrower` holds its object, and waits for their
    /// answers (a call from a task's or a program's thread, never a runtime's).
    pub fn register_borrows_now(&self, borrows: Vec<Borrow>, borrower: Arc<str>) {
        let Some(link) = self.link.as_ref().filter(|_| !borrows.is_empty()) else {
            return;
        };
        if let Err(e) = link.call(self.registered(borrows, borrower)) {
            tracing::warn!(error = %e, "could not register a borrower");
        }
    }

    /// [`Ownership::register_borrows_now`] for async callers.
    pub async fn register_borrows_async(&self, borrows: Vec<Borrow>, borrower: Arc<str>) {
        if self.link.is_some() && !borrows.is_empty() {
            self.registered(borrows, borrower).await;
        }
    }

    /// The registrations of `borrower` with the owners in `borrows`, done: one call per
    /// owner, owners at once, each asked again on transient failures until
    /// [`BORROW_DEADLINE`] (an owner unreachable that long has lost its objects anyway).
    fn registered(
        &self,
        borrows: Vec<Borrow>,
        borrower: Arc<str>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut by_owner: HashMap<Arc<str>, Vec<Bytes>> = HashMap::new();
        for (id, owner) in borrows {
            by_owner
                .entry(owner)
                .or_default()
                .push(id.0.to_vec().into());
        }
        let (calls, clock): (Vec<_>, _) = match &self.link {
            Some(link) => (
                by_owner
                    .into_iter()
                    .filter_map(|(owner, ids)| link.peer(&owner).ok().map(|p| (owner, p, ids)))
                    .collect(),
                link.clock.clone(),
            ),
            None => (Vec::new(), Default::default()),
        };
        async move {
            let mut calls: tokio::task::JoinSet<()> = calls
                .into_iter()
                .map(|(owner, peer, object_ids)| {
                    let req = ray_proto::AddBorrowerRequest {
                        object_ids,
                        borrower_address: borrower.to_string(),
                        // One name for all its tries: the owner counts it once.
                        registration: ray_common::ids::request_id(),
                    };
                    tell_owner(peer, owner, req, clock.clone())
                })
                .collect();
            while calls.join_next().await.is_some() {}
        }
    }

    /// Tells each owner in `borrows` that `borrower` holds its object, then lets `hold` go
    /// (what keeps the objects alive until the owners know).
    pub fn register_borrows<H: Send + 'static>(
        &self,
        borrows: Vec<Borrow>,
        borrower: Arc<str>,
        hold: H,
    ) {
        let Some(link) = self.link.as_ref().filter(|_| !borrows.is_empty()) else {
            drop(hold);
            return;
        };
        let registered = self.registered(borrows, borrower);
        link.handle.spawn(async move {
            registered.await;
            drop(hold);
        });
    }

    /// Whether the borrow registration `id` is new here (0 names none: always new).
    pub fn first_time(&self, registration: u64) -> bool {
        registration == 0 || self.registrations.lock().first(registration)
    }

    pub fn drop_local_ref(&self, id: ObjectId) {
        if let Some(release) = self.refs.remove_local(id) {
            self.apply_release(release);
        }
    }

    pub fn apply_release(&self, release: Release) {
        match release {
            Release::FreeOwned(id) => {
                let scoped_actor = self.actor_lifetimes_len.load(Ordering::Relaxed) > 0
                    && self.actor_lifetimes.remove(&id).is_some();
                if scoped_actor {
                    self.actor_lifetimes_len.fetch_sub(1, Ordering::Relaxed);
                    self.actor_args.remove(&ActorId(id.0));
                    self.end_actor(ActorId(id.0), "all handles to the actor went out of scope");
                    return;
                }
                let value = self.store.remove(&id);
                self.release_contained(id);
                if let Some(link) = &self.link {
                    link.store.drop_copy(id);
                    if let Some(Stored::Plasma { node, .. }) = value {
                        link.store.delete_plasma(id, node);
                    }
                }
            }
            Release::DropBorrowed { id, owner, notify } => {
                self.store.remove(&id);
                if let Some(link) = &self.link {
                    link.store.drop_copy(id);
                }
                if notify && !released_in_band(id, &owner) {
                    if let Some(link) = &self.link {
                        link.remove_borrower(id, owner, self.me.address.clone());
                    }
                }
            }
        }
    }

    /// Ends an actor for good without waiting (a drop must not block): asks the GCS, or in
    /// sync mode fails the instance here.
    pub fn end_actor(&self, actor_id: ActorId, cause: &str) {
        let Some(link) = &self.link else {
            if let Some(mut a) = self.sync_actors.get_mut(&actor_id) {
                a.instance = Err(Error::ActorDied {
                    class: a.class.to_string(),
                    cause: cause.to_string(),
                });
            }
            return;
        };
        let gcs = link.gcs.clone();
        let req = ray_proto::KillActorRequest {
            actor_id: actor_id.to_vec().into(),
            no_restart: true,
            cause: cause.to_string(),
        };
        let clock = link.clock.clone();
        link.handle.spawn(async move {
            let killed = with_retries(&clock, CONTROL_DEADLINE, || gcs.kill_actor(req.clone()));
            if let Err(e) = killed.await {
                tracing::warn!(error = %e, "could not kill an actor");
            }
        });
    }

    /// Scopes the actor `actor_id` by a ref this process owns: when the last handle holding
    /// it goes, the actor is killed. Returns that ref.
    pub fn track_actor_lifetime(self: &Arc<Self>, actor_id: ActorId) -> Arc<RefInner> {
        let id = ObjectId(actor_id.0);
        if self.actor_lifetimes.insert(id, ()).is_none() {
            self.actor_lifetimes_len.fetch_add(1, Ordering::Relaxed);
        }
        self.new_ref(id)
    }

    /// Stores a value this process owns: inline, or in shared memory if large.
    pub fn store_owned_bytes(&self, id: ObjectId, bytes: Vec<u8>) -> Result<Stored> {
        let stored = match &self.link {
            Some(link) if bytes.len() > INLINE_MAX => link.store.put_plasma(id, &bytes, 0)?,
            _ => Stored::Inline(Bytes::from(bytes)),
        };
        self.store.put(id, stored.clone());
        Ok(stored)
    }

    /// The bytes of shared-memory object `id` on node `node`, read in place (another
    /// node's pulled into this node's store first, after gets if `for_argument` and the
    /// store is full).
    pub fn plasma_bytes(
        &self,
        id: ObjectId,
        node: NodeId,
        offset: u64,
        size: u64,
        for_argument: bool,
    ) -> Result<&[u8]> {
        let link = self.link.as_ref().ok_or(Error::Runtime(
            "a shared-memory object in a process without a store".into(),
        ))?;
        link.store
            .plasma_bytes(id, node, offset, size, for_argument)
    }

    /// The encoded bytes of a value held here (copied out of shared memory if it is there).
    pub fn stored_bytes(&self, stored: &Stored) -> Result<bytes::Bytes> {
        match stored {
            Stored::Inline(b) => Ok(b.clone()),
            Stored::Plasma {
                id,
                node,
                offset,
                size,
                ..
            } => Ok(bytes::Bytes::copy_from_slice(
                self.plasma_bytes(*id, *node, *offset, *size, false)?,
            )),
            Stored::Failed(e) => Err((**e).clone()),
        }
    }

    /// Decodes a value held here, and the borrowed refs first met in it (with their owners,
    /// who must hear of them before the caller may let them go). Refs decoded belong to this
    /// core worker, whichever thread decodes (several may share one).
    pub fn decode<T: DeserializeOwned>(
        self: &Arc<Self>,
        stored: &Stored,
    ) -> (Result<T>, Vec<Borrow>) {
        // Two accesses to a plain flag: a `get` costs tens of nanoseconds, and most values
        // hold no ref.
        // Refs met belong to this core worker, whichever thread decodes: a plain pointer,
        // set for the call and restored after it, so a `get` pays no count. A panic in a
        // value's `Deserialize` restores both flags too (the thread decodes on afterwards).
        struct Restore {
            decoding_for: *const Ownership,
            collecting: Option<Collecting>,
        }
        impl Drop for Restore {
            fn drop(&mut self) {
                DECODING_FOR.with(|c| c.set(self.decoding_for));
                if let Some(outer) = self.collecting {
                    COLLECTING.with(|c| c.set(outer));
                    if outer == Collecting::Off {
                        NEW_BORROWS.with(|b| b.borrow_mut().clear());
                    }
                }
            }
        }
        let mut restore = Restore {
            decoding_for: DECODING_FOR.with(|c| c.replace(Arc::as_ptr(self))),
            collecting: Some(COLLECTING.with(|c| c.replace(Collecting::On))),
        };
        let value = self.decode_here(stored);
        let outer = restore.collecting.take().expect("set above");
        let found = COLLECTING.with(|c| c.replace(outer));
        let borrows = match (found, outer) {
            (Collecting::Found, Collecting::Off) => NEW_BORROWS.with(|b| b.take()),
            // Met inside an outer decode: it takes them.
            (Collecting::Found, _) => {
                COLLECTING.with(|c| c.set(Collecting::Found));
                Vec::new()
            }
            _ => Vec::new(),
        };
        (value, borrows)
    }

    fn decode_here<T: DeserializeOwned>(self: &Arc<Self>, stored: &Stored) -> Result<T> {
        match stored {
            Stored::Inline(b) => codec::decode(b),
            Stored::Plasma {
                id,
                node,
                offset,
                size,
                raw,
            } => {
                let bytes = self.plasma_bytes(*id, *node, *offset, *size, false)?;
                if *raw == 0 {
                    codec::decode(bytes)
                } else {
                    codec::decode_raw(bytes, *raw as usize)
                }
            }
            Stored::Failed(e) => Err((**e).clone()),
        }
    }
}

thread_local! {
    /// While encoding task arguments: the refs found inside them, which the pending task
    /// keeps alive until its reply. Outside that, a serialized ref is pinned.
    static SERIALIZING_ARGS: RefCell<Option<Vec<Arc<RefInner>>>> = const { RefCell::new(None) };
    /// While decoding a task's arguments in a worker: the refs met, reported back to their
    /// owners if the worker still holds them when the task ends.
    static DECODING_ARGS: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
    /// The core worker that decodes on this thread: refs met belong to it. Set by whoever
    /// decodes for a core worker that may not be the process's (an executor's threads, a
    /// test's); weak: it keeps no core worker alive.
    static DECODER: RefCell<Weak<Ownership>> = const { RefCell::new(Weak::new()) };
    /// The core worker whose [`Ownership::decode`] runs on this thread now, if any: it comes
    /// before `DECODER`.
    static DECODING_FOR: Cell<*const Ownership> = const { Cell::new(std::ptr::null()) };
    /// Whether a value is being decoded outside task arguments, and if a new borrow was met.
    static COLLECTING: Cell<Collecting> = const { Cell::new(Collecting::Off) };
    /// The borrowed refs first met while `COLLECTING`, with their owners, who must be told.
    static NEW_BORROWS: RefCell<Vec<Borrow>> = const { RefCell::new(Vec::new()) };
    /// While a worker lets go of the refs inside a result it replies with: the owner (the
    /// result's) whose borrows are released in the reply, and the ids released.
    static IN_BAND: RefCell<Option<(Arc<str>, Vec<ObjectId>)>> = const { RefCell::new(None) };
    /// The owner address last decoded on this thread: the refs of one value mostly share
    /// their owner, and sharing its `Arc` saves an allocation per ref.
    static LAST_OWNER: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// `owner` as an `Arc`, the one last decoded on this thread when it is the same.
fn shared_owner(owner: &str) -> Arc<str> {
    LAST_OWNER.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(known) if **known == *owner => known.clone(),
            _ => last.insert(Arc::from(owner)).clone(),
        }
    })
}

/// See `COLLECTING`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collecting {
    Off,
    On,
    Found,
}

/// How long a borrower asks an unreachable owner to count its borrow.
pub(crate) const BORROW_DEADLINE: Duration = Duration::from_secs(10);

/// One `AddBorrower` call, asked again on transient failures until [`BORROW_DEADLINE`].
async fn tell_owner(
    peer: Arc<dyn ray_common::rpc::CoreWorkerApi>,
    owner: Arc<str>,
    req: ray_proto::AddBorrowerRequest,
    clock: ray_common::Clock,
) {
    let told = with_retries(&clock, BORROW_DEADLINE, || peer.add_borrower(req.clone())).await;
    if let Err(e) = told {
        tracing::warn!(%owner, error = %e, "the owner did not count a borrow; its objects may be lost");
    }
}

/// A borrowed object and its owner.
pub(crate) type Borrow = (ObjectId, Arc<str>);

/// Runs `f` collecting the refs serialized inside it.
pub(crate) fn collect_serialized_refs<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<RefInner>>) {
    let outer = SERIALIZING_ARGS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let found = SERIALIZING_ARGS.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (r, found.unwrap_or_default())
}

/// A future collecting the refs serialized while it is polled: each poll collects into its
/// own list (an async actor's loop interleaves many calls on one thread), handed out with
/// the output.
pub(crate) struct CollectingRefs<F> {
    inner: F,
    found: Vec<Arc<RefInner>>,
}

impl<F> CollectingRefs<F> {
    pub fn new(inner: F) -> Self {
        CollectingRefs {
            inner,
            found: Vec::new(),
        }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for CollectingRefs<F> {
    type Output = (F::Output, Vec<Arc<RefInner>>);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let (polled, found) =
            collect_serialized_refs(|| std::pin::Pin::new(&mut this.inner).poll(cx));
        this.found.extend(found);
        polled.map(|out| (out, std::mem::take(&mut this.found)))
    }
}

/// Runs `f` (which lets go of refs) with the releases of borrows owned by `owner` collected
/// instead of sent: a worker replying to `owner` sends them in the reply, after the refs the
/// reply hands over, so that a release can never reach the owner before the reply that
/// gives the same object back (and free it in between).
pub(crate) fn releasing_in_band(owner: Arc<str>, f: impl FnOnce()) -> Vec<ObjectId> {
    type InBand = Option<(Arc<str>, Vec<ObjectId>)>;
    /// Puts the outer state back, on unwind too (else later releases would vanish).
    struct Restore(Option<InBand>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                IN_BAND.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(
        IN_BAND.with(|c| c.borrow_mut().replace((owner, Vec::new()))),
    ));
    f();
    let outer = restore.0.take().expect("set above");
    let mine = IN_BAND.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    mine.map(|(_, ids)| ids).unwrap_or_default()
}

/// Whether the release of `id` to `owner` was taken for a reply (see [`releasing_in_band`]).
fn released_in_band(id: ObjectId, owner: &str) -> bool {
    IN_BAND.with(|c| match &mut *c.borrow_mut() {
        Some((to, ids)) if **to == *owner => {
            ids.push(id);
            true
        }
        _ => false,
    })
}

/// Runs `f`, a task, collecting the ids of refs deserialized in its arguments (until the
/// argument reader says they are all decoded: refs its body meets are borrowed as any
/// process's are).
pub(crate) fn collect_deserialized_refs<R>(f: impl FnOnce() -> R) -> (R, Vec<ObjectId>) {
    let outer = DECODING_ARGS.with(|c| c.borrow_mut().replace(Vec::new()));
    let was = crate::task_context::set_decoding_args(true);
    let r = f();
    crate::task_context::set_decoding_args(was);
    let found = DECODING_ARGS.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (r, found.unwrap_or_default())
}

/// Runs `f` with refs decoded on this thread belonging to `own`; the thread's decoder before
/// is back afterwards (a panic in `f` too).
pub(crate) fn with_decoder<R>(own: &Arc<Ownership>, f: impl FnOnce() -> R) -> R {
    if DECODER.with(|d| std::ptr::eq(d.borrow().as_ptr(), Arc::as_ptr(own))) {
        return f(); // Already `own`'s: nothing to set or restore.
    }
    struct Restore(Option<Weak<Ownership>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                DECODER.with(|d| *d.borrow_mut() = outer);
            }
        }
    }
    let _restore = Restore(Some(DECODER.with(|d| d.replace(Arc::downgrade(own)))));
    f()
}

/// The core worker that decodes on this thread, if one said so and is still alive.
pub(crate) fn decoder() -> Option<Arc<Ownership>> {
    let decoding = DECODING_FOR.with(|c| c.get());
    if !decoding.is_null() {
        // SAFETY: `DECODING_FOR` holds a pointer only while `Ownership::decode` runs on this
        // thread, whose `self: &Arc<Ownership>` keeps a strong count for all of that time; it
        // is restored before `decode` returns or unwinds. Counting one more strong ref makes
        // the `Arc` built here an owned one of its own.
        unsafe {
            Arc::increment_strong_count(decoding);
            return Some(Arc::from_raw(decoding));
        }
    }
    DECODER.with(|d| d.borrow().upgrade())
}

/// What a serialized ref carries: its id and its owner's address. Inside task arguments
/// being encoded the ref is collected (the task holds it); anywhere else it is pinned.
pub(crate) fn ref_to_wire(inner: &Arc<RefInner>) -> std::result::Result<Arc<str>, &'static str> {
    let own = inner.own.upgrade();
    let owner: Arc<str> = match (&inner.owner, &own) {
        (Some(o), _) => o.clone(),
        (None, Some(own)) => own.me.address.clone(),
        (None, None) => return Err("an ObjectRef of a finished session cannot be serialized"),
    };
    let collected = SERIALIZING_ARGS.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|v| v.push(inner.clone()))
            .is_some()
    });
    if !collected {
        if let Some(own) = &own {
            own.refs.pin(inner.id);
        }
    }
    Ok(owner)
}
