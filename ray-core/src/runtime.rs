//! The process's runtime: the one [`Runtime`] a driver or worker holds, and the mechanics of
//! get, put, wait and submit that the public API wraps.

use crate::actor::{ActorCore, ActorOptions};
use crate::args::{ArgKind, ArgSpec};
use crate::cluster::{self, Cluster};
use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{IdGen, ObjectId};
use crate::memory_store::{MemoryStore, Stored, Subscribed, Waiter};
use crate::object_ref::{collect_serialized_refs, ObjectRef, RefInner};
use crate::reference::{ReferenceTable, Release};
use crate::registry::{ActorInstance, ArgReader, MethodCall};
use crate::submitter::{self, ActorCall};
use bytes::Bytes;
use parking_lot::RwLock;
use ray_common::rpc::RpcErrorKind;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Objects larger than this go to the shared-memory store; smaller ones stay inline in the
/// owner's memory and travel inside replies (Ray's `max_direct_call_object_size`).
pub(crate) const INLINE_MAX: usize = 100 * 1024;

/// Everything one process of a session holds. Built with struct-update syntax: the sites
/// name the identity and links; the tables start empty.
#[derive(Default)]
pub(crate) struct Runtime {
    /// Owner address of this process: its core-worker endpoint (or "sync:<pid>").
    pub address: Arc<str>,
    pub store: MemoryStore,
    pub refs: ReferenceTable,
    pub ids: IdGen,
    pub worker_id: [u8; 16],
    pub node_id: [u8; 16],
    pub job_id: u32,
    pub namespace: String,
    pub is_worker: bool,
    /// This node's resources as configured (sync mode reports these).
    pub node_total: ray_scheduler::ResourceSet,
    /// Present in local and cluster mode.
    pub cluster: Option<Cluster>,
    pub shut_down: AtomicBool,
    /// Owner-scoped actors this process created: freeing the id kills the actor.
    pub actor_lifetimes: dashmap::DashMap<ObjectId, ()>,
    /// Constructor arguments of actors this process created, kept while the actor may be
    /// (re)constructed: refs (and handles) inside them stay valid for its whole life.
    pub actor_args: dashmap::DashMap<[u8; 16], Vec<ArgSpec>>,
    /// Sync mode: actors live in this process.
    pub sync_actors: dashmap::DashMap<[u8; 16], SyncActor>,
    pub sync_names: dashmap::DashMap<(String, String), [u8; 16]>,
}

/// An actor hosted in the driver (sync mode).
pub(crate) struct SyncActor {
    pub class: Arc<str>,
    pub instance: Result<Box<dyn ActorInstance>, Error>,
}

static CURRENT: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// The runtime of this process, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Arc<Runtime>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
}

pub(crate) fn set_current(rt: Option<Arc<Runtime>>) -> Option<Arc<Runtime>> {
    std::mem::replace(&mut *CURRENT.write(), rt)
}

impl crate::tables::Tidy for Runtime {
    fn shrink(&self) -> bool {
        self.store.shrink() | self.refs.shrink()
    }

    fn len(&self) -> usize {
        self.store.len() + self.refs.len()
    }
}

impl Runtime {
    /// Watches `r`'s value in this process's store, and asks its owner for it if it is
    /// borrowed and not here yet: the one "ready here, or fetch from the owner" step, for
    /// blocking and async waiters alike.
    pub(crate) fn watch(&self, r: &RefInner, waiter: Waiter) -> Subscribed {
        let watched = self.store.subscribe(r.id, waiter, r.owner.is_some());
        if let (Subscribed::Pending { fetch: true }, Some(c), Some(owner)) =
            (&watched, &self.cluster, &r.owner)
        {
            c.fetch_from_owner(r.id, owner.clone());
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

    pub fn new_ref<T>(self: &Arc<Self>, id: ObjectId) -> ObjectRef<T> {
        self.refs.add_local(id, None, false);
        ObjectRef::from_inner(Arc::new(RefInner {
            id,
            owner: None,
            rt: Arc::downgrade(self),
            failed: None,
        }))
    }

    /// Records a task's result, unless every ref to it is already gone (then the value is
    /// freed at once instead of lingering).
    pub fn complete(&self, id: ObjectId, value: Stored) {
        if let Some(orphan) = self.store.put_if_present(id, value) {
            if let (Stored::Plasma { .. }, Some(c)) = (orphan, &self.cluster) {
                c.store.delete_plasma(id);
            }
        }
    }

    pub fn drop_local_ref(&self, id: ObjectId) {
        if let Some(release) = self.refs.remove_local(id) {
            self.apply_release(release);
        }
    }

    pub fn apply_release(&self, release: Release) {
        match release {
            Release::FreeOwned(id) => {
                if self.actor_lifetimes.remove(&id).is_some() {
                    self.actor_args.remove(&id.0);
                    let _ =
                        self.kill_actor(id.0, "all handles to the actor went out of scope", false);
                    return;
                }
                let value = self.store.remove(&id);
                if let (Some(Stored::Plasma { .. }), Some(c)) = (value, &self.cluster) {
                    c.store.delete_plasma(id);
                }
            }
            Release::DropBorrowed { id, owner, notify } => {
                self.store.remove(&id);
                if notify {
                    if let Some(c) = &self.cluster {
                        c.remove_borrower(id, owner, self.address.clone());
                    }
                }
            }
        }
    }

    /// Stores a value this process owns: inline, or in shared memory if large.
    pub fn store_owned_bytes(&self, id: ObjectId, bytes: Vec<u8>) -> Result<Stored> {
        let stored = match &self.cluster {
            Some(c) if bytes.len() > INLINE_MAX => c.store.put_plasma(id, &bytes, 0)?,
            _ => Stored::Inline(Bytes::from(bytes)),
        };
        self.store.put(id, stored.clone());
        Ok(stored)
    }

    pub fn decode<T: DeserializeOwned>(&self, stored: &Stored) -> Result<T> {
        match stored {
            Stored::Inline(b) => codec::decode(b),
            Stored::Plasma { offset, size, raw } => {
                let c = self.cluster.as_ref().ok_or(Error::Runtime(
                    "a shared-memory object in a process without a store".into(),
                ))?;
                let bytes = c.store.plasma_bytes(*offset, *size)?;
                if *raw == 0 {
                    codec::decode(bytes)
                } else {
                    codec::decode_raw(bytes, *raw as usize)
                }
            }
            Stored::Failed(e) => Err((**e).clone()),
        }
    }

    /// Waits until `num` of `refs` are ready here, or the timeout passes. Returns which are.
    pub fn wait_ready(
        &self,
        refs: &[&RefInner],
        num: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<bool>> {
        // Fast path: what is ready already, registering nothing.
        let mut ready = Vec::with_capacity(refs.len());
        for r in refs {
            if let Some(e) = &r.failed {
                return Err(e.clone());
            }
            ready.push(self.store.is_ready(&r.id));
        }
        let mut count = ready.iter().filter(|r| **r).count();
        let zero = timeout == Some(Duration::ZERO);
        if count >= num || (zero && refs.iter().all(|r| r.owner.is_none())) {
            // (A zero timeout still subscribes to borrowed refs below: that starts their fetch.)
            return Ok(ready);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        // Where each pending id sits in `refs` (an id may appear more than once): a wake-up
        // finds its refs at once, so waiting on n refs costs O(n), not O(n²).
        let mut pending: HashMap<ObjectId, Vec<usize>> = HashMap::new();
        for (i, r) in refs.iter().enumerate() {
            if ready[i] {
                continue;
            }
            match self.watch(r, Waiter::Blocking(tx.clone())) {
                Subscribed::Ready(_) => {
                    ready[i] = true;
                    count += 1;
                    if count >= num {
                        return Ok(ready);
                    }
                }
                Subscribed::Pending { .. } => pending.entry(r.id).or_default().push(i),
                Subscribed::Unknown => return Err(Error::ObjectLost(r.id.to_hex())),
            }
        }
        drop(tx);
        if count >= num {
            return Ok(ready);
        }
        if zero {
            return Ok(ready);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        // A task of this worker waiting in `get` for its own queued children runs them
        // itself, one at a time, before it blocks (and lends its CPU): no lease, no other
        // process. Never from `wait` (which may return before the child would finish) nor
        // with a timeout (which the child's run could overstay).
        let helping = if timeout.is_none() && num == refs.len() && crate::worker::in_task() {
            let owned: HashSet<ObjectId> = pending
                .iter()
                .filter(|(_, at)| refs[at[0]].owner.is_none())
                .map(|(id, _)| *id)
                .collect();
            match crate::worker::can_help() {
                Some(fits) if !owned.is_empty() => Some((Arc::new(owned), fits)),
                _ => None,
            }
        } else {
            None
        };
        let mut blocked = None;
        while count < num {
            if blocked.is_none() {
                let stolen = match (&helping, &self.cluster) {
                    (Some((wanted, fits)), Some(c)) => c.steal(wanted, fits),
                    _ => None,
                };
                if let Some(task) = stolen {
                    crate::worker::run_inline(self, task);
                    while let Ok(id) = rx.try_recv() {
                        for i in pending.remove(&id).unwrap_or_default() {
                            if !ready[i] {
                                ready[i] = true;
                                count += 1;
                            }
                        }
                    }
                    continue;
                }
                blocked = Some(cluster::BlockedGuard::enter(self));
            }
            let got = match deadline {
                Some(d) => match rx.recv_deadline(d) {
                    Ok(id) => id,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(id) => id,
                    Err(_) => break,
                },
            };
            for i in pending.remove(&got).unwrap_or_default() {
                if !ready[i] {
                    ready[i] = true;
                    count += 1;
                }
            }
        }
        Ok(ready)
    }

    pub fn get_stored(&self, r: &RefInner, timeout: Option<Duration>) -> Result<Stored> {
        if let Some(e) = &r.failed {
            return Err(e.clone());
        }
        if let Some(v) = self.store.get(&r.id) {
            return Ok(v);
        }
        let ready = self.wait_ready(&[r], 1, timeout)?;
        if !ready[0] {
            if self.shut_down.load(Ordering::Relaxed) {
                return Err(Error::NotInitialized);
            }
            return Err(match timeout {
                Some(t) => Error::GetTimeout(t),
                None => Error::ObjectLost(r.id.to_hex()),
            });
        }
        self.store
            .get(&r.id)
            .ok_or_else(|| Error::ObjectLost(r.id.to_hex()))
    }

    /// Submits a task; its result is owned by this process.
    pub fn submit<R>(
        self: &Arc<Self>,
        function: &'static str,
        opts: &crate::TaskOptions,
        args: Vec<ArgSpec>,
    ) -> ObjectRef<R> {
        let return_id = self.ids.next();
        self.store.expect(return_id);
        let out = self.new_ref(return_id);
        if let Some(e) = args.iter().find_map(|a| match &a.0 {
            ArgKind::Unencodable(e) => Some(e.clone()),
            _ => None,
        }) {
            self.store.put(return_id, Stored::Failed(Arc::new(e)));
            return out;
        }
        match &self.cluster {
            None => self.run_inline(function, args, return_id),
            Some(c) => c.submit(submitter::PendingTask {
                function,
                shape: opts.shape.clone(),
                shape_key: opts.shape_key.clone(),
                args,
                return_id,
                retries_left: opts.max_retries,
                resolved: Vec::new(),
            }),
        }
        out
    }

    /// Sync mode: the values of `args`, all of which are ready (tasks ran when submitted).
    fn resolve_inline(&self, function: &str, args: &[ArgSpec]) -> Result<Vec<Stored>> {
        crate::args::resolve(function, args, |r| self.get_stored(r, None))
    }

    /// Sync mode: runs the task now, in this thread.
    fn run_inline(
        self: &Arc<Self>,
        function: &'static str,
        args: Vec<ArgSpec>,
        return_id: ObjectId,
    ) {
        let stored = match self.resolve_inline(function, &args) {
            Err(e) => Stored::Failed(Arc::new(e)),
            Ok(values) => {
                let slices = inline_slices(&values);
                let location = format!("sync mode, pid {}", std::process::id());
                match crate::registry::execute(function, &slices, &location) {
                    Ok(bytes) => Stored::Inline(Bytes::from(bytes)),
                    Err(e) => Stored::Failed(Arc::new(e)),
                }
            }
        };
        self.store.put(return_id, stored);
        drop(args);
    }

    /// Creates an actor: registered with the GCS (which places and constructs it), or, in
    /// sync mode, constructed here.
    pub fn create_actor(
        self: &Arc<Self>,
        class: &'static str,
        opts: ActorOptions,
        args: Vec<ArgSpec>,
    ) -> Result<ActorCore> {
        let entry = crate::registry::lookup_actor_class(class).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "actor class {class} is not registered in this binary"
            ))
        })?;
        let shape = ray_scheduler::ResourceSet::from_pairs(opts.resources.clone())
            .map_err(|e| Error::InvalidArgument(format!("actor resources: {e}")))?;
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let actor_id = ray_common::ids::random_bytes();
        let mut core = ActorCore {
            actor_id,
            class: class.into(),
            max_task_retries: opts.max_task_retries,
            lifetime: None,
            failed: None,
        };
        let Some(c) = &self.cluster else {
            if let Some(name) = &opts.name {
                let key = (namespace.clone(), name.clone());
                if let Some(existing) = self.sync_names.get(&key).map(|e| *e) {
                    let alive = self
                        .sync_actors
                        .get(&existing)
                        .is_some_and(|a| a.instance.is_ok());
                    if alive && opts.get_if_exists {
                        core.actor_id = existing;
                        return Ok(core);
                    }
                    if alive {
                        return Err(name_taken(name, &namespace));
                    }
                }
                self.sync_names.insert(key, actor_id);
            }
            let location = format!("sync mode, pid {}", std::process::id());
            let instance = self.resolve_inline(class, &args).and_then(|values| {
                let slices = inline_slices(&values);
                crate::registry::run_guarded(class, &location, || {
                    (entry.construct)(&mut ArgReader::new(&slices))
                })
            });
            let instance = instance.map_err(|e| Error::ActorDied {
                class: class.to_string(),
                cause: format!("the constructor failed: {e}"),
            });
            self.sync_actors.insert(
                actor_id,
                SyncActor {
                    class: class.into(),
                    instance,
                },
            );
            if !opts.detached {
                self.track_actor_lifetime(&mut core);
            }
            return Ok(core);
        };
        // Constructor arguments are resolved here (waiting for refs if need be).
        let values: Vec<_> = crate::args::resolve(class, &args, |r| self.get_stored(r, None))?
            .iter()
            .map(Stored::to_proto)
            .collect();
        let max_concurrency = opts
            .max_concurrency
            .unwrap_or(if entry.is_async { 1000 } else { 1 });
        let spec = ray_proto::ActorSpec {
            actor_id: actor_id.to_vec().into(),
            class_name: class.to_string(),
            args: values,
            name: opts.name.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            max_restarts: opts.max_restarts,
            max_concurrency: max_concurrency.max(1),
            max_task_retries: opts.max_task_retries,
            detached: opts.detached,
            shape: Some(ray_common::resources::to_resources(&shape)),
            owner_address: self.address.to_string(),
            owner_worker_id: if self.is_worker {
                self.worker_id.to_vec().into()
            } else {
                Default::default()
            },
            get_if_exists: opts.get_if_exists,
        };
        let gcs = c.gcs.clone();
        let reply = c.call(async move { gcs.register_actor(spec).await })?;
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.kind == RpcErrorKind::AlreadyExists => {
                return Err(Error::InvalidArgument(e.message))
            }
            Err(e) => {
                return Err(Error::Runtime(format!(
                    "registering an actor: {}",
                    e.message
                )))
            }
        };
        if reply.existed {
            core.actor_id = crate::ids::id16(&reply.actor_id, "actor id")?;
            core.max_task_retries = reply.max_task_retries;
            return Ok(core);
        }
        if !opts.detached {
            self.track_actor_lifetime(&mut core);
        }
        self.actor_args.insert(actor_id, args);
        Ok(core)
    }

    fn track_actor_lifetime(self: &Arc<Self>, core: &mut ActorCore) {
        let id = ObjectId(core.actor_id);
        self.actor_lifetimes.insert(id, ());
        core.lifetime = Some(self.new_ref(id));
    }

    /// Submits a method call.
    pub fn call_actor<R>(
        self: &Arc<Self>,
        core: &ActorCore,
        method: &'static str,
        args: Vec<ArgSpec>,
    ) -> ObjectRef<R> {
        let return_id = self.ids.next();
        self.store.expect(return_id);
        let out = self.new_ref(return_id);
        let Some(c) = &self.cluster else {
            let label = format!("{}.{method}", core.class);
            let stored = match self.run_sync_method(core, method, &label, &args) {
                Ok(bytes) => Stored::Inline(Bytes::from(bytes)),
                Err(e) => Stored::Failed(Arc::new(e)),
            };
            self.store.put(return_id, stored);
            return out;
        };
        c.submit_actor_call(ActorCall {
            actor_id: core.actor_id,
            class: core.class.clone(),
            method,
            args,
            return_id,
            retries_left: core.max_task_retries,
            resolved: None,
            lifetime: core.lifetime.clone(),
            waited: false,
        });
        out
    }

    fn run_sync_method(
        &self,
        core: &ActorCore,
        method: &'static str,
        label: &str,
        args: &[ArgSpec],
    ) -> Result<Vec<u8>> {
        let values = self.resolve_inline(label, args)?;
        let actor = self
            .sync_actors
            .get(&core.actor_id)
            .ok_or_else(|| Error::ActorDied {
                class: core.class.to_string(),
                cause: "killed".into(),
            })?;
        let instance = actor.instance.as_ref().map_err(Clone::clone)?;
        let slices = inline_slices(&values);
        let location = format!("sync mode, pid {}", std::process::id());
        let call = crate::registry::run_guarded(label, &location, || {
            instance.call(method, &mut ArgReader::new(&slices))
        })?;
        match call {
            MethodCall::Done(r) => crate::registry::outcome_to_result(label, &location, Ok(r)),
            MethodCall::Future(f) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::runtime)?;
                let outcome = rt.block_on(crate::registry::CatchUnwind(f));
                crate::registry::outcome_to_result(label, &location, outcome)
            }
        }
    }

    /// Kills an actor for good. `wait`: return once its process is dead (never from a Drop,
    /// which must not block).
    pub fn kill_actor(&self, actor_id: [u8; 16], cause: &str, wait: bool) -> Result<()> {
        let Some(c) = &self.cluster else {
            if let Some(mut a) = self.sync_actors.get_mut(&actor_id) {
                a.instance = Err(Error::ActorDied {
                    class: a.class.to_string(),
                    cause: cause.to_string(),
                });
            }
            return Ok(());
        };
        let gcs = c.gcs.clone();
        let req = ray_proto::KillActorRequest {
            actor_id: actor_id.to_vec().into(),
            no_restart: true,
            cause: cause.to_string(),
        };
        let killed = async move {
            if let Err(e) = gcs.kill_actor(req).await {
                tracing::warn!(error = %e, "could not kill an actor");
            }
        };
        if wait {
            c.call(killed)?;
            // Calls made from here on fail at once, whatever is still in flight.
            let _ = c
                .events
                .send(submitter::Event::ActorKilled(actor_id, cause.to_string()));
        } else {
            c.handle.spawn(killed);
        }
        Ok(())
    }

    /// The id and class of the live actor named `name`.
    pub fn lookup_named_actor(
        &self,
        name: &str,
        namespace: &str,
    ) -> Result<([u8; 16], String, i32)> {
        let not_found = || {
            Error::InvalidArgument(format!(
                "no actor named '{name}' in namespace '{namespace}'"
            ))
        };
        let Some(c) = &self.cluster else {
            let id = *self
                .sync_names
                .get(&(namespace.to_string(), name.to_string()))
                .ok_or_else(not_found)?;
            let a = self.sync_actors.get(&id).ok_or_else(not_found)?;
            if a.instance.is_err() {
                return Err(not_found());
            }
            return Ok((id, a.class.to_string(), 0));
        };
        let gcs = c.gcs.clone();
        let req = ray_proto::GetNamedActorRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        match c.call(async move { gcs.get_named_actor(req).await })? {
            Ok(info) => Ok((
                crate::ids::id16(&info.actor_id, "actor id")?,
                info.class_name,
                info.max_task_retries,
            )),
            Err(e) if e.kind == RpcErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(Error::Runtime(e.message)),
        }
    }

    /// Stores a plain array: raw bytes written once into shared memory (if large), readable
    /// in place by [`crate::get_slice`].
    pub fn put_slice<T: bytemuck::Pod + Serialize>(
        self: &Arc<Self>,
        data: &[T],
    ) -> Result<ObjectRef<Vec<T>>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        match &self.cluster {
            Some(c) if bytes.len() > INLINE_MAX && std::mem::size_of::<T>() > 0 => {
                let id = self.ids.next();
                let stored = c
                    .store
                    .put_plasma(id, bytes, std::mem::size_of::<T>() as u32)?;
                self.store.put(id, stored);
                Ok(self.new_ref(id))
            }
            _ => self.put(&data).map(|r| r.cast()),
        }
    }

    pub fn put<T: Serialize>(self: &Arc<Self>, value: &T) -> Result<ObjectRef<T>> {
        let id = self.ids.next();
        if let Some(c) = &self.cluster {
            // Measured first (pinning nothing): a large value is encoded straight into shared
            // memory, so a put costs the value plus its one copy there.
            let (len, _) = collect_serialized_refs(|| codec::encoded_len(value));
            let len = len?;
            if len > INLINE_MAX {
                let stored = c
                    .store
                    .put_plasma_with(id, len as u64, 0, |buf| codec::encode_into(value, buf))?;
                self.store.put(id, stored);
                return Ok(self.new_ref(id));
            }
        }
        let bytes = codec::encode(value)?;
        self.store_owned_bytes(id, bytes)?;
        Ok(self.new_ref(id))
    }
}

fn name_taken(name: &str, namespace: &str) -> Error {
    Error::InvalidArgument(format!(
        "an actor named '{name}' already exists in namespace '{namespace}'"
    ))
}

/// Byte views of inline values (sync mode holds nothing else).
fn inline_slices(values: &[Stored]) -> Vec<crate::registry::ArgBytes<'_>> {
    values
        .iter()
        .map(|v| match v {
            Stored::Inline(b) => crate::registry::ArgBytes::encoded(b),
            _ => crate::registry::ArgBytes::encoded(&[]),
        })
        .collect()
}

/// `get` for async callers: never blocks the calling thread.
pub(crate) async fn get_async<T: DeserializeOwned>(r: &ObjectRef<T>) -> Result<T> {
    let rt = current()?;
    let inner = &r.inner;
    if let Some(e) = &inner.failed {
        return Err(e.clone());
    }
    let value = rt.value(inner).await?;
    rt.decode(&value)
}
