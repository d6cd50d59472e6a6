//! The node's shared-memory store as a core worker uses it: objects created, written in
//! place and sealed through the local node manager, read in place from this process's
//! mapping of the arena, and deleted when freed. A driver on a machine that runs no node
//! has no mapping: its puts stream into the store of the node it attaches to, and its reads
//! stream out of it into the driver's memory.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use ray_common::rpc::{NodeManagerApi, RpcErrorKind};
use ray_common::NodeId;
use ray_object_store::{Allocation, ArenaMapping};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes per chunk of a put streamed into another machine's store.
const REMOTE_CHUNK: usize = 4 << 20;
/// A read streamed from another machine's store whose next chunk does not come within this
/// long fails.
const REMOTE_CHUNK_DEADLINE: Duration = Duration::from_secs(30);
/// Pulls of one object cut off in transfer, in a row, before it counts as lost.
const FETCH_ATTEMPTS: usize = 3;

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
    /// This process's mapping of the node's store (`None`: the node is on another machine).
    arena: Option<ArenaMapping>,
    /// Without a mapping: the objects this process read, in its own memory, until it lets
    /// them go ([`StoreProvider::drop_copy`]).
    held: dashmap::DashMap<ObjectId, Box<[u8]>>,
    /// Deletes sent and not yet answered: a create that finds the store full waits for them.
    pending_deletes: Arc<AtomicUsize>,
    /// Other nodes' objects this process reads, pulled into this node's store and pinned
    /// for it until it lets the object go ([`StoreProvider::drop_copy`]).
    copies: dashmap::DashMap<ObjectId, Allocation>,
    /// `copies.len() + held.len()`, read without a lock on every free (almost always 0).
    copies_len: AtomicUsize,
}

impl StoreProvider {
    /// The store of `node`, through its node manager `raylet`, mapped at `arena` (`None`
    /// for a process on another machine).
    pub fn new(
        node: NodeId,
        handle: tokio::runtime::Handle,
        raylet: Arc<dyn NodeManagerApi>,
        arena: Option<ArenaMapping>,
    ) -> Self {
        StoreProvider {
            node,
            handle,
            raylet,
            arena,
            held: dashmap::DashMap::new(),
            pending_deletes: Arc::new(AtomicUsize::new(0)),
            copies: dashmap::DashMap::new(),
            copies_len: AtomicUsize::new(0),
        }
    }

    /// The node this process runs on and maps the store of (`None`: its node is on another
    /// machine, and every worker is reached over TCP).
    pub fn local_node(&self) -> Option<NodeId> {
        self.arena.as_ref().map(|_| self.node)
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
        let Some(arena) = &self.arena else {
            return self.put_remote(id, size, raw, write);
        };
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
                client_pid: 0,
            };
            let del = ray_proto::DeleteObjectsRequest {
                object_ids: vec![id.0.to_vec().into()],
                node_id: Default::default(),
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
            unsafe { arena.bytes_mut(alloc) }
                .map_err(Error::runtime)
                .and_then(write)
        }));
        let written = match written {
            Ok(w) => w,
            Err(panic) => {
                let oid = ray_proto::ObjectRequest {
                    object_id: id.0.to_vec().into(),
                    client_pid: 0,
                };
                let _ = self.run(async move { raylet.abort_object(oid).await });
                std::panic::resume_unwind(panic);
            }
        };
        if let Err(e) = written {
            let oid = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
                client_pid: 0,
            };
            let _ = self.run(async move { raylet.abort_object(oid).await });
            return Err(e);
        }
        let oid = ray_proto::ObjectRequest {
            object_id: id.0.to_vec().into(),
            client_pid: 0,
        };
        self.run(async move { raylet.seal_object(oid).await })?
            .map_err(|e| Error::Runtime(format!("seal object: {}", e.message)))?;
        Ok(Stored::Plasma {
            id,
            node: self.node,
            offset: created.offset,
            size,
            raw,
        })
    }

    /// The bytes of sealed shared-memory object `id` at `offset` on node `node`, read in
    /// place: on this node directly; another node's is first pulled into this node's store
    /// (once per process; the copy stays pinned until [`Self::drop_copy`]). A pull blocks
    /// the calling thread, as a `put` into the store does; one `for_argument` (a task's)
    /// yields to gets while the store is full.
    pub fn plasma_bytes(
        &self,
        id: ObjectId,
        node: NodeId,
        offset: u64,
        size: u64,
        for_argument: bool,
    ) -> Result<&[u8]> {
        let Some(arena) = &self.arena else {
            return self.held_copy(id, node);
        };
        let at = if node == self.node {
            Allocation { offset, len: size }
        } else {
            self.copy_of(id, node, for_argument)?
        };
        arena.bytes(at).map_err(Error::runtime)
    }

    /// [`Self::put_plasma_with`] without a mapping: written in this process's memory, then
    /// streamed into the node's store.
    fn put_remote(
        &self,
        id: ObjectId,
        size: u64,
        raw: u32,
        write: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Stored> {
        let mut buf = vec![0u8; size as usize];
        write(&mut buf)?;
        let data = bytes::Bytes::from(buf);
        let chunks: Vec<ray_proto::PutChunk> = (0..data.len().max(1))
            .step_by(REMOTE_CHUNK)
            .map(|at| ray_proto::PutChunk {
                object_id: id.0.to_vec().into(),
                object_size: size,
                offset: at as u64,
                data: data.slice(at..(at + REMOTE_CHUNK).min(data.len())),
            })
            .collect();
        let raylet = self.raylet.clone();
        let placed = match self.run(async move { raylet.put_object(chunks).await })? {
            Ok(r) => r,
            Err(e) if e.kind == RpcErrorKind::Exhausted => {
                return Err(Error::ObjectStoreFull(e.message))
            }
            Err(e) => return Err(Error::Runtime(format!("put object: {}", e.message))),
        };
        Ok(Stored::Plasma {
            id,
            node: self.node,
            offset: placed.offset,
            size,
            raw,
        })
    }

    /// Without a mapping: object `id` (held by `node`) in this process's memory, fetched
    /// into the attached node's store first (if another node holds it), then streamed out.
    fn held_copy(&self, id: ObjectId, node: NodeId) -> Result<&[u8]> {
        if let Some(b) = self.held.get(&id) {
            // SAFETY: the boxed bytes do not move while the map entry lives (the map moves
            // the box, not its heap block), and the entry lives until `drop_copy`, which the
            // caller's ref holds off while it reads (as it holds off the release of a pinned
            // copy in the arena).
            return Ok(unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) });
        }
        let raylet = self.raylet.clone();
        let fetch = ray_proto::FetchObjectRequest {
            object_id: id.0.to_vec().into(),
            from_node: node.to_vec().into(),
            // Not a process of that machine: its pin is let go below, not watched.
            client_pid: 0,
            // A driver's read, never a task's argument.
            for_argument: false,
        };
        let read = self.run(async move {
            let fail = |e: ray_common::rpc::RpcError| (e.kind, e.message);
            let placed = raylet.fetch_object(fetch).await.map_err(fail)?;
            let whole = ray_proto::PullObjectRequest {
                object_id: id.0.to_vec().into(),
                offset: 0,
                length: 0,
            };
            let stream = raylet.pull_object(whole).await;
            // The stream pins the object while it is sent: this pin can go now.
            let release = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
                client_pid: 0,
            };
            let _ = raylet.release_object(release).await;
            let mut stream = stream.map_err(fail)?;
            let mut buf = Vec::with_capacity(placed.size as usize);
            loop {
                use tokio_stream::StreamExt;
                match tokio::time::timeout(REMOTE_CHUNK_DEADLINE, stream.next()).await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk.map_err(fail)?.data),
                    Ok(None) => break,
                    Err(_) => {
                        return Err((
                            RpcErrorKind::DeadlineExceeded,
                            format!("no chunk within {REMOTE_CHUNK_DEADLINE:?}"),
                        ))
                    }
                }
            }
            if buf.len() as u64 != placed.size {
                return Err((
                    RpcErrorKind::Unreachable,
                    format!("{} of {} bytes came", buf.len(), placed.size),
                ));
            }
            Ok(buf)
        })?;
        let buf = match read {
            Ok(buf) => buf.into_boxed_slice(),
            Err((RpcErrorKind::Exhausted, message)) => {
                return Err(Error::ObjectStoreFull(format!(
                    "pulling object {id} from node {node}: {message}"
                )))
            }
            Err((_, message)) => {
                return Err(Error::ObjectLost(format!(
                    "{id} (its copy on node {node} cannot be read: {message})"
                )))
            }
        };
        let entry = self.held.entry(id).or_insert_with(|| {
            self.copies_len.fetch_add(1, Ordering::Relaxed);
            buf
        });
        // SAFETY: as above.
        Ok(unsafe { std::slice::from_raw_parts(entry.as_ptr(), entry.len()) })
    }

    /// This process's pinned copy of another node's object `id`, pulled into this node's
    /// store if it has none.
    fn copy_of(&self, id: ObjectId, node: NodeId, for_argument: bool) -> Result<Allocation> {
        if let Some(a) = self.copies.get(&id) {
            return Ok(*a);
        }
        let raylet = self.raylet.clone();
        let req = ray_proto::FetchObjectRequest {
            object_id: id.0.to_vec().into(),
            client_pid: std::process::id(),
            from_node: node.to_vec().into(),
            for_argument,
        };
        let mut last = None;
        // A transfer cut off (the source busy, a connection reset) is tried again.
        for _ in 0..FETCH_ATTEMPTS {
            let raylet = raylet.clone();
            let req = req.clone();
            match self.run(async move { raylet.fetch_object(req).await })? {
                Ok(reply) => {
                    let a = Allocation {
                        offset: reply.offset,
                        len: reply.size,
                    };
                    match self.copies.entry(id) {
                        dashmap::Entry::Occupied(e) => {
                            // Another thread pinned it meanwhile: one pin per process.
                            self.release_pin(id);
                            return Ok(*e.get());
                        }
                        dashmap::Entry::Vacant(v) => {
                            v.insert(a);
                            self.copies_len.fetch_add(1, Ordering::Relaxed);
                            return Ok(a);
                        }
                    }
                }
                Err(e) if e.kind == RpcErrorKind::Exhausted => {
                    return Err(Error::ObjectStoreFull(format!(
                        "pulling object {id} from node {node}: {}",
                        e.message
                    )))
                }
                Err(e) if e.kind == RpcErrorKind::Unreachable => last = Some(e),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        let why = last.map(|e| e.message).unwrap_or_default();
        Err(Error::ObjectLost(format!(
            "{id} (its copy on node {node} cannot be read: {why})"
        )))
    }

    /// This process lets go of object `id`: its pinned copy of another node's object, if
    /// it has one, is released (the node may evict it when no reader holds it).
    pub fn drop_copy(&self, id: ObjectId) {
        if self.copies_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.copies.remove(&id).is_some() {
            self.copies_len.fetch_sub(1, Ordering::Relaxed);
            self.release_pin(id);
        }
        if self.held.remove(&id).is_some() {
            self.copies_len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn release_pin(&self, id: ObjectId) {
        let raylet = self.raylet.clone();
        self.handle.spawn(async move {
            let req = ray_proto::ObjectRequest {
                object_id: id.0.to_vec().into(),
                client_pid: std::process::id(),
            };
            if let Err(e) = raylet.release_object(req).await {
                tracing::debug!(%id, error = %e, "releasing a pulled copy failed");
            }
        });
    }

    /// Deletes object `id` from the store of `node` (the owner freed it).
    pub fn delete_plasma(&self, id: ObjectId, node: NodeId) {
        let here = self.node;
        let raylet = self.raylet.clone();
        let pending = self.pending_deletes.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        self.handle.spawn(async move {
            let req = ray_proto::DeleteObjectsRequest {
                object_ids: vec![id.0.to_vec().into()],
                node_id: if node == here {
                    Default::default()
                } else {
                    node.to_vec().into()
                },
            };
            if let Err(e) = raylet.delete_objects(req).await {
                tracing::debug!(%id, error = %e, "deleting a freed object failed");
            }
            pending.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
