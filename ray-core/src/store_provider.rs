//! The node's shared-memory store as a core worker uses it: objects created, written in
//! place and sealed through the local node manager, read in place from this process's
//! mapping of the arena, and deleted when freed.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use ray_common::rpc::{NodeManagerApi, RpcErrorKind};
use ray_common::NodeId;
use ray_object_store::{Allocation, ArenaMapping};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `f` on `handle`'s runtime and waits for it from this (non-async) thread.
pub(crate) fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| Error::Runtime("the session's runtime stopped".into()))
}

/// Puts, reads and deletes objects in this node's store.
pub(crate) struct StoreProvider {
    /// The node whose store this is: locations name it.
    node: NodeId,
    handle: tokio::runtime::Handle,
    raylet: Arc<dyn NodeManagerApi>,
    arena: ArenaMapping,
    /// Deletes sent and not yet answered: a create that finds the store full waits for them.
    pending_deletes: Arc<AtomicUsize>,
}

impl StoreProvider {
    pub fn new(
        node: NodeId,
        handle: tokio::runtime::Handle,
        raylet: Arc<dyn NodeManagerApi>,
        arena: ArenaMapping,
    ) -> Self {
        StoreProvider {
            node,
            handle,
            raylet,
            arena,
            pending_deletes: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        run_on(&self.handle, f)
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
        let mut reply = self.run({
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
            reply = self.run({
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
            reply = self.run({
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
                let _ = self.run(async move { raylet.abort_object(oid).await });
                std::panic::resume_unwind(panic);
            }
        };
        if let Err(e) = written {
            let oid = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
            };
            let _ = self.run(async move { raylet.abort_object(oid).await });
            return Err(e);
        }
        let oid = ray_proto::ObjectRequest {
            object_id: id.0.to_vec().into(),
        };
        self.run(async move { raylet.seal_object(oid).await })?
            .map_err(|e| Error::Runtime(format!("seal object: {}", e.message)))?;
        Ok(Stored::Plasma {
            node: self.node,
            offset: created.offset,
            size,
            raw,
        })
    }

    /// The bytes of a sealed shared-memory object on node `node`, read in place (if that is
    /// this node: objects do not move between nodes yet).
    pub fn plasma_bytes(&self, node: NodeId, offset: u64, size: u64) -> Result<&[u8]> {
        if node != self.node {
            return Err(Error::Runtime(format!(
                "the object is in the store of node {node}, not of this node ({}); objects \
                 are not transferred between nodes yet",
                self.node
            )));
        }
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
}
