//! The process's runtime: the one [`Runtime`] a driver or worker holds, and the mechanics of
//! get, put, wait and submit that the public API wraps.

use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{IdGen, ObjectId};
use crate::memory_store::{MemoryStore, Stored, Subscribed, Waiter};
use crate::object_ref::{collect_serialized_refs, ObjectRef, RefInner};
use crate::reference::{ReferenceTable, Release};
use crate::transport::{self, Cluster};
use bytes::Bytes;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Objects larger than this go to the shared-memory store; smaller ones stay inline in the
/// owner's memory and travel inside replies (Ray's `max_direct_call_object_size`).
pub(crate) const INLINE_MAX: usize = 100 * 1024;

/// Everything one process of a session holds.
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
}

static CURRENT: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

/// The runtime of this process, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Arc<Runtime>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
}

pub(crate) fn set_current(rt: Option<Arc<Runtime>>) -> Option<Arc<Runtime>> {
    std::mem::replace(&mut *CURRENT.write(), rt)
}

/// A task's argument, encoded once at submission (opaque to generated code).
pub struct ArgSpec(pub(crate) ArgKind);

pub(crate) enum ArgKind {
    /// An encoded value, with the refs found inside it (kept alive until the task ends).
    /// The refs are held, never read: they keep nested objects alive until the task ends.
    Value(Bytes, #[allow(dead_code)] Vec<Arc<RefInner>>),
    /// A ref resolved before the task runs.
    Ref(Arc<RefInner>),
    /// The value could not be encoded: the task fails without running.
    Unencodable(Error),
}

/// Encodes one argument (called by generated code).
pub fn arg<T: Serialize>(a: crate::Arg<T>) -> ArgSpec {
    match a {
        crate::Arg::Ref(r) => ArgSpec(ArgKind::Ref(r.inner.clone())),
        crate::Arg::Value(v) => {
            let (bytes, nested) = collect_serialized_refs(|| codec::encode(&v));
            ArgSpec(match bytes {
                Ok(b) => ArgKind::Value(Bytes::from(b), nested),
                Err(e) => ArgKind::Unencodable(e),
            })
        }
    }
}

impl Runtime {
    pub fn new_ref<T>(self: &Arc<Self>, id: ObjectId) -> ObjectRef<T> {
        self.refs.add_local(id, None, false);
        ObjectRef::from_inner(Arc::new(RefInner {
            id,
            owner: None,
            rt: Arc::downgrade(self),
            failed: None,
        }))
    }

    pub fn drop_local_ref(&self, id: ObjectId) {
        if let Some(release) = self.refs.remove_local(id) {
            self.apply_release(release);
        }
    }

    pub fn apply_release(&self, release: Release) {
        match release {
            Release::FreeOwned(id) => {
                let value = self.store.remove(&id);
                if let (Some(Stored::Plasma { .. }), Some(c)) = (value, &self.cluster) {
                    c.delete_plasma(id);
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
            Some(c) if bytes.len() > INLINE_MAX => c.put_plasma(id, &bytes)?,
            _ => Stored::Inline(Bytes::from(bytes)),
        };
        self.store.put(id, stored.clone());
        Ok(stored)
    }

    pub fn decode<T: DeserializeOwned>(&self, stored: &Stored) -> Result<T> {
        match stored {
            Stored::Inline(b) => codec::decode(b),
            Stored::Plasma { offset, size } => {
                let c = self.cluster.as_ref().ok_or(Error::Runtime(
                    "a shared-memory object in a process without a store".into(),
                ))?;
                codec::decode(c.plasma_bytes(*offset, *size)?)
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut ready = vec![false; refs.len()];
        let mut count = 0;
        for (i, r) in refs.iter().enumerate() {
            if let Some(e) = &r.failed {
                return Err(e.clone());
            }
            match self
                .store
                .subscribe(r.id, Waiter::Blocking(tx.clone()), r.owner.is_some())
            {
                Subscribed::Ready(_) => {
                    ready[i] = true;
                    count += 1;
                }
                Subscribed::Pending { fetch } => {
                    if fetch {
                        if let (Some(c), Some(owner)) = (&self.cluster, &r.owner) {
                            c.fetch_from_owner(r.id, owner.clone());
                        }
                    }
                }
                Subscribed::Unknown => return Err(Error::ObjectLost(r.id.to_hex())),
            }
        }
        drop(tx);
        if count >= num {
            return Ok(ready);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let _blocked = transport::BlockedGuard::enter(self);
        while count < num {
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
            for (i, r) in refs.iter().enumerate() {
                if !ready[i] && r.id == got {
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
            return Err(Error::GetTimeout(timeout.unwrap_or_default()));
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
            Some(c) => c.submit(transport::PendingTask {
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

    /// Sync mode: runs the task now, in this thread.
    fn run_inline(
        self: &Arc<Self>,
        function: &'static str,
        args: Vec<ArgSpec>,
        return_id: ObjectId,
    ) {
        let mut values = Vec::with_capacity(args.len());
        for a in &args {
            match &a.0 {
                ArgKind::Value(b, _) => values.push(Stored::Inline(b.clone())),
                ArgKind::Ref(r) => match self.get_stored(r, None) {
                    Ok(Stored::Failed(e)) => {
                        let e = Error::ArgumentFailed {
                            function: function.to_string(),
                            cause: Box::new((*e).clone()),
                        };
                        self.store.put(return_id, Stored::Failed(Arc::new(e)));
                        return;
                    }
                    Ok(v) => values.push(v),
                    Err(e) => {
                        self.store.put(return_id, Stored::Failed(Arc::new(e)));
                        return;
                    }
                },
                ArgKind::Unencodable(_) => unreachable!("checked by submit"),
            }
        }
        let slices: Vec<&[u8]> = values
            .iter()
            .map(|v| match v {
                Stored::Inline(b) => &b[..],
                _ => &[][..],
            })
            .collect();
        let location = format!("sync mode, pid {}", std::process::id());
        let stored = match crate::registry::execute(function, &slices, &location) {
            Ok(bytes) => Stored::Inline(Bytes::from(bytes)),
            Err(e) => Stored::Failed(Arc::new(e)),
        };
        self.store.put(return_id, stored);
        drop(args);
    }

    pub fn put<T: Serialize>(self: &Arc<Self>, value: &T) -> Result<ObjectRef<T>> {
        let bytes = codec::encode(value)?;
        let id = self.ids.next();
        self.store_owned_bytes(id, bytes)?;
        Ok(self.new_ref(id))
    }
}

/// `get` for async callers: never blocks the calling thread.
pub(crate) async fn get_async<T: DeserializeOwned>(r: &ObjectRef<T>) -> Result<T> {
    let rt = current()?;
    let inner = &r.inner;
    if let Some(e) = &inner.failed {
        return Err(e.clone());
    }
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        match rt
            .store
            .subscribe(inner.id, Waiter::Async(tx), inner.owner.is_some())
        {
            Subscribed::Ready(v) => return rt.decode(&v),
            Subscribed::Unknown => return Err(Error::ObjectLost(inner.id.to_hex())),
            Subscribed::Pending { fetch } => {
                if fetch {
                    if let (Some(c), Some(owner)) = (&rt.cluster, &inner.owner) {
                        c.fetch_from_owner(inner.id, owner.clone());
                    }
                }
                if rx.recv().await.is_none() {
                    return Err(Error::NotInitialized);
                }
            }
        }
    }
}
