//! Objects between nodes (Ray's object manager): this node serves its sealed objects to other
//! nodes as a stream of chunks (`PullObject`), and pulls another node's object into its own
//! store when a process of this node reads it (`FetchObject`): one pull per object at a time
//! however many readers ask, written chunk by chunk straight into the arena, a bounded
//! number of bytes in flight, and never more than the store holds (a pull that cannot fit
//! waits a while for space, then fails as full). A pulled copy is a secondary copy: pinned
//! while its readers hold it, evictable after. Past its first chunk, a large object comes as
//! ranges over the bulk path (`bulk`: raw bytes on plain TCP, socket to arena) when the
//! nodes talk TCP, over gRPC streams otherwise (a test's in-memory network).
//!
//! Invariant: an object is written into the arena only by the pull that created it, and is
//! readable (sealed) only once every byte arrived; a failed pull aborts its object.

use crate::bulk;
use crate::pool::NodeManager;
use ray_common::rpc::{NodeManagerApi, RpcError};
use ray_common::NodeId;
use ray_object_store::{Allocation, ObjectId, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::StreamExt;

/// Bytes per chunk on the wire (Ray's `object_manager_default_chunk_size` is 5 MiB).
pub const CHUNK_BYTES: usize = 4 << 20;
/// Streams one large pull runs at once, each a range of the object.
const PULL_STREAMS: usize = 4;
/// Bytes of pulls in flight at once on this node (larger objects take the whole budget).
const PULL_BUDGET_BYTES: u64 = 256 << 20;
/// A pull whose next chunk does not come within this long fails (and may be tried again).
const CHUNK_DEADLINE: Duration = Duration::from_secs(30);
/// How long a pull waits for the store to have room before it fails as full.
const SPACE_WAIT: Duration = Duration::from_secs(10);

/// How a pull ended, once it has (`None` while it runs).
type PullOutcome = watch::Receiver<Option<Result<(), FetchError>>>;

/// Whether only task arguments wait for a pull (then it yields to gets for room); a get
/// that joins it clears it.
type ArgumentsOnly = Arc<AtomicBool>;

/// The pulls of one node: in flight by object, and the byte budget they share.
pub(crate) struct Pulls {
    inflight: parking_lot::Mutex<HashMap<ObjectId, (PullOutcome, ArgumentsOnly)>>,
    budget: Arc<tokio::sync::Semaphore>,
    /// Clients of other nodes' node managers, one each.
    peers: parking_lot::Mutex<HashMap<String, Arc<dyn NodeManagerApi>>>,
    /// Objects pulled into this node so far.
    pulled: std::sync::atomic::AtomicU64,
    /// Warns of bulk connections refused (no token, a wrong one, garbage), throttled.
    bulk_refusals: ray_common::Throttle,
    /// Pulls for gets waiting for room in the store (pulls for task arguments wait behind).
    gets_waiting: AtomicUsize,
}

impl Default for Pulls {
    fn default() -> Self {
        Pulls {
            inflight: Default::default(),
            budget: Arc::new(tokio::sync::Semaphore::new(
                (PULL_BUDGET_BYTES >> 20) as usize,
            )),
            peers: Default::default(),
            pulled: Default::default(),
            bulk_refusals: Default::default(),
            gets_waiting: Default::default(),
        }
    }
}

/// Why a fetch failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    /// The node that holds it is not known to this node (or is dead).
    #[error("node {0} is not an alive node of this cluster")]
    UnknownNode(NodeId),
    /// No room in this node's store.
    #[error("{0}")]
    Full(String),
    /// The transfer failed.
    #[error("{0}")]
    Transfer(String),
}

impl NodeManager {
    /// The client of another node's node manager.
    pub(crate) fn peer(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError> {
        let mut peers = self.inner.pulls.peers.lock();
        if let Some(p) = peers.get(address) {
            return Ok(p.clone());
        }
        let p = self.inner.connect.node_manager(address)?;
        peers.insert(address.to_string(), p.clone());
        Ok(p)
    }

    /// Object `id`, held by node `from`, in this node's store: pulled if not here yet (or
    /// joining the pull under way), then pinned for the caller, as `GetObject` pins.
    /// A pull `for_argument` (a task's) waits, while the store is full, until no get's pull
    /// waits for room.
    pub async fn fetch_object(
        &self,
        id: ObjectId,
        from: NodeId,
        for_argument: bool,
    ) -> Result<Allocation, FetchError> {
        loop {
            if let Some(a) = self.store().get(id) {
                return Ok(a);
            }
            let (mut done, leader) = {
                let mut inflight = self.inner.pulls.inflight.lock();
                match inflight.get(&id) {
                    Some((rx, arguments_only)) => {
                        if !for_argument {
                            arguments_only.store(false, Ordering::Relaxed);
                        }
                        (rx.clone(), None)
                    }
                    None => {
                        let (tx, rx) = watch::channel(None);
                        let arguments_only = Arc::new(AtomicBool::new(for_argument));
                        inflight.insert(id, (rx.clone(), arguments_only.clone()));
                        (rx, Some((tx, arguments_only)))
                    }
                }
            };
            if let Some((tx, arguments_only)) = leader {
                let me = self.clone();
                // Its own task: a reader that gives up does not cut the pull short for others.
                tokio::spawn(async move {
                    let result = me.pull(id, from, &arguments_only).await;
                    me.inner.pulls.inflight.lock().remove(&id);
                    let _ = tx.send(Some(result));
                });
            }
            let outcome = loop {
                if let Some(outcome) = done.borrow_and_update().clone() {
                    break outcome;
                }
                if done.changed().await.is_err() {
                    break Err(FetchError::Transfer(
                        "the pull ended without a result".into(),
                    ));
                }
            };
            // Pinned now, unless it was evicted in between: then pull again.
            outcome?;
        }
    }

    /// Pulls object `id` from node `from` into this node's store; if that fails (the node
    /// died, the transfer broke), from another node that holds a copy (one an earlier pull
    /// made), if any does.
    async fn pull(
        &self,
        id: ObjectId,
        from: NodeId,
        arguments_only: &AtomicBool,
    ) -> Result<(), FetchError> {
        let first = match self.pull_from(id, from, arguments_only).await {
            Ok(()) => return Ok(()),
            Err(e @ FetchError::Full(_)) => return Err(e),
            Err(e) => e,
        };
        let others = self
            .inner
            .cluster
            .lock()
            .alive_nodes(&[from, self.node_id()]);
        for (node, address) in others {
            match self
                .pull_from_address(id, &address, node, arguments_only)
                .await
            {
                Ok(()) => {
                    tracing::info!(object = %id, %from, copy_on = %node, "pulled from another copy after: {first}");
                    return Ok(());
                }
                Err(e @ FetchError::Full(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(object = %id, node = %node, error = %e, "no copy to pull there");
                }
            }
        }
        Err(first)
    }

    /// Pulls object `id` from node `from` into this node's store.
    async fn pull_from(
        &self,
        id: ObjectId,
        from: NodeId,
        arguments_only: &AtomicBool,
    ) -> Result<(), FetchError> {
        let address = match self.address_of(from) {
            Some(address) => address,
            None => self.ask_gcs_for(from).await?,
        };
        self.pull_from_address(id, &address, from, arguments_only)
            .await
    }

    /// Pulls object `id` from the node manager at `address` into this node's store: its
    /// first chunk (which tells the size), then the rest as up to [`PULL_STREAMS`] ranges
    /// at once (one stream alone is bound by one core on each side).
    async fn pull_from_address(
        &self,
        id: ObjectId,
        address: &str,
        node: NodeId,
        arguments_only: &AtomicBool,
    ) -> Result<(), FetchError> {
        let source = self
            .peer(address)
            .map_err(|e| FetchError::Transfer(e.to_string()))?;
        let clock = self.inner.connect.clock();
        let mut stream = open_range(&source, id, 0, CHUNK_BYTES as u64).await?;
        let first = next_chunk(&mut stream, &clock, address)
            .await?
            .ok_or_else(|| FetchError::Transfer("the source sent nothing".into()))?;
        let size = first.object_size;
        let mib = (size.div_ceil(1 << 20)).clamp(1, PULL_BUDGET_BYTES >> 20) as u32;
        // No deadline of its own: the budget is held by pulls that each make progress or
        // fail within their chunk deadlines, and a busy node is not a failed source (it
        // must not send the reader to other copies, nor report the object lost).
        let _budget = self
            .inner
            .pulls
            .budget
            .clone()
            .acquire_many_owned(mib)
            .await
            .map_err(|_| FetchError::Transfer("shutting down".into()))?;
        let dead = || FetchError::Transfer(format!("node {node} ({address}) was declared dead"));
        if self.inner.cluster.lock().is_dead(node) {
            return Err(dead());
        }
        let alloc = self.create_for_pull(id, size, arguments_only).await?;
        // The ranges run in tasks of their own. On the first failure (or the source's
        // death) the others are stopped, and waited for, before the object is aborted: no
        // write may land in its space after it is freed.
        let mut pulls = tokio::task::JoinSet::new();
        let written = async {
            let head = size.min(CHUNK_BYTES as u64);
            let into = Range {
                alloc,
                start: 0,
                end: head,
            };
            self.receive(into, Some(first), stream, address).await?;
            // The bulk path needs TCP between the nodes (a test's in-memory network has
            // only gRPC).
            let bulk = self.inner.connect.network().is_none();
            for (start, end) in ranges(head, size, PULL_STREAMS) {
                let (me, source, from) = (self.clone(), source.clone(), address.to_string());
                let range = Range { alloc, start, end };
                pulls.spawn(async move {
                    if bulk {
                        return me.receive_bulk(id, size, range, &from).await;
                    }
                    let stream = open_range(&source, id, start, end - start).await?;
                    me.receive(range, None, stream, &from).await
                });
            }
            while let Some(done) = pulls.join_next().await {
                done.map_err(|e| FetchError::Transfer(e.to_string()))??;
            }
            Ok(())
        };
        // A source the GCS declares dead fails the pull at once (then another copy is
        // tried), not after its deadlines.
        let written = tokio::select! {
            // (A copy whose last byte came with the news is kept.)
            biased;
            written = written => written,
            () = self.declared_dead(node) => Err(dead()),
        };
        if written.is_err() {
            pulls.shutdown().await;
        }
        self.seal_or_abort(id, written)?;
        // A secondary copy: the owner's primary stays where it was made.
        self.store().set_evictable(id, true);
        self.inner
            .pulls
            .pulled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("rayrs_objects_pulled_total").increment(1);
        metrics::counter!("rayrs_pulled_bytes_total").increment(size as u64);
        tracing::debug!(object = %id, size, from = %address, "object pulled");
        Ok(())
    }

    /// Ends the writing of object `id`: sealed when every byte was `written`, else aborted.
    fn seal_or_abort(
        &self,
        id: ObjectId,
        written: Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        match written {
            Ok(()) => self
                .store()
                .seal(id)
                .map_err(|e| FetchError::Transfer(e.to_string())),
            Err(e) => {
                self.store().abort(id);
                Err(e)
            }
        }
    }

    /// Resolves once node `node` is dead in this node's view of the cluster.
    async fn declared_dead(&self, node: NodeId) {
        loop {
            let changed = self.inner.view_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.inner.cluster.lock().is_dead(node) {
                return;
            }
            changed.await;
        }
    }

    /// Room for a pulled object of `size` bytes: at once, or once frees make it (within
    /// [`SPACE_WAIT`]), else full.
    /// A pull for task arguments only (`arguments_only`) lets the gets' pulls that wait for
    /// room go first, for the first half of its wait; then it tries as they do.
    async fn create_for_pull(
        &self,
        id: ObjectId,
        size: u64,
        arguments_only: &AtomicBool,
    ) -> Result<Allocation, FetchError> {
        let clock = self.inner.connect.clock();
        let deadline = clock.now() + SPACE_WAIT;
        let yield_until = clock.now() + SPACE_WAIT / 2;
        let gets_waiting = &self.inner.pulls.gets_waiting;
        // Counted among the gets that wait, while this one does.
        let mut counted = None;
        let mut why = "gets wait for room first".to_string();
        loop {
            let for_argument = arguments_only.load(Ordering::Relaxed);
            let yields = for_argument
                && clock.now() < yield_until
                && gets_waiting.load(Ordering::Relaxed) > 0;
            if !yields {
                match self.store().create_object(id, size) {
                    Ok(a) => return Ok(a),
                    Err(e @ StoreError::Full { .. }) => why = e.to_string(),
                    Err(e @ StoreError::TooLarge { .. }) => {
                        return Err(FetchError::Full(format!("object store full: {e}")))
                    }
                    Err(e) => return Err(FetchError::Transfer(e.to_string())),
                }
            }
            if clock.now() >= deadline {
                return Err(FetchError::Full(format!("object store full: {why}")));
            }
            if !for_argument && counted.is_none() {
                counted = Some(Counted::new(gets_waiting));
            }
            tracing::debug!(object = %id, "{why}; the pull waits for room");
            clock.sleep(Duration::from_millis(50)).await;
        }
    }

    /// Streams bytes `offset..offset + length` (length 0: to the end) of object `id` of
    /// this node's store in chunks, pinned while it is sent (a range past its end stops
    /// there). `None` if it is not here; `Err` for a range that starts past its end.
    pub(crate) fn serve_pull(
        &self,
        id: ObjectId,
        offset: u64,
        length: u64,
    ) -> Result<
        Option<tokio::sync::mpsc::Receiver<Result<ray_proto::ObjectChunk, tonic::Status>>>,
        tonic::Status,
    > {
        let Some(alloc) = self.store().get(id) else {
            return Ok(None);
        };
        let pin = Arc::new(Pin {
            node: self.clone(),
            id,
        });
        let size = alloc.len;
        if offset > size {
            return Err(tonic::Status::out_of_range(format!(
                "bytes from {offset} of a {size}-byte object"
            )));
        }
        // A range past the end stops at the end (the first range asked is one chunk,
        // before the size is known).
        let end = match length {
            0 => size,
            n => offset.saturating_add(n).min(size),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let me = self.clone();
        tokio::spawn(async move {
            let mut offset = offset;
            // An empty object still sends one (empty) chunk, which carries the size.
            loop {
                let len = (end - offset).min(CHUNK_BYTES as u64);
                let part = Allocation {
                    offset: alloc.offset + offset,
                    len,
                };
                if let Err(e) = me.store().arena().bytes(part) {
                    let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                    break;
                }
                // No copy here: the chunk reads the arena in place (the object is pinned
                // until the last chunk is sent).
                let data = bytes::Bytes::from_owner(ArenaSlice {
                    pin: pin.clone(),
                    part,
                });
                let chunk = ray_proto::ObjectChunk {
                    object_size: size,
                    offset,
                    data,
                };
                // The puller went away: stop.
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
                offset += len;
                if offset >= end {
                    break;
                }
            }
            // The pin goes with the last chunk still in flight.
            drop(pin);
        });
        Ok(Some(rx))
    }

    /// The node manager address of alive node `node`, asked of the GCS (a node this node's
    /// view does not have yet, or a node manager that follows no view).
    async fn ask_gcs_for(&self, node: NodeId) -> Result<String, FetchError> {
        let gcs = self
            .gcs()
            .ok_or_else(|| FetchError::Transfer("no client of the GCS".into()))?;
        let nodes = gcs
            .get_all_nodes(ray_proto::Empty {})
            .await
            .map_err(|e| FetchError::Transfer(e.to_string()))?
            .nodes;
        nodes
            .into_iter()
            .find(|n| n.alive && n.node_id == node.as_bytes()[..])
            .map(|n| n.node_manager_address)
            .ok_or(FetchError::UnknownNode(node))
    }

    /// Objects pulled into this node from others so far.
    pub fn objects_pulled(&self) -> u64 {
        self.inner
            .pulls
            .pulled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node manager address of node `node`, from the cluster view (alive nodes only).
    pub(crate) fn address_of(&self, node: NodeId) -> Option<String> {
        self.inner.cluster.lock().address_of(node)
    }
}

impl NodeManager {
    /// An object put from its chunks (`PutObject`, from a process that does not map this
    /// store): created, written in order and sealed, or aborted if the chunks stop short,
    /// break their order or stop coming for [`CHUNK_DEADLINE`].
    pub(crate) async fn receive_put(
        &self,
        chunks: tonic::Streaming<ray_proto::PutChunk>,
    ) -> Result<Allocation, FetchError> {
        // In a task of its own: a caller that goes away mid-put drops the request's future,
        // and the object must still be aborted (its chunks stop coming), never left half
        // written.
        let me = self.clone();
        tokio::spawn(async move { me.put_from(chunks).await })
            .await
            .map_err(|e| FetchError::Transfer(e.to_string()))?
    }

    async fn put_from(
        &self,
        mut chunks: tonic::Streaming<ray_proto::PutChunk>,
    ) -> Result<Allocation, FetchError> {
        let clock = self.inner.connect.clock();
        let mut next = async || match clock.timeout(CHUNK_DEADLINE, chunks.next()).await {
            Ok(Some(Ok(c))) => Ok(Some(c)),
            Ok(Some(Err(e))) => Err(FetchError::Transfer(e.to_string())),
            Ok(None) => Ok(None),
            Err(_) => Err(FetchError::Transfer(format!(
                "no chunk of the put within {CHUNK_DEADLINE:?}"
            ))),
        };
        let first = next()
            .await?
            .ok_or_else(|| FetchError::Transfer("a put without chunks".into()))?;
        let id = <[u8; ObjectId::SIZE]>::try_from(&first.object_id[..])
            .map(ObjectId)
            .map_err(|_| FetchError::Transfer("a put's object id must be 16 bytes".into()))?;
        let size = first.object_size;
        // (A put is waited for as a get is.)
        let alloc = self
            .create_for_pull(id, size, &AtomicBool::new(false))
            .await?;
        let written = async {
            let mut at = 0u64;
            let mut chunk = Some(first);
            while let Some(c) = chunk {
                let into = Range {
                    alloc,
                    start: 0,
                    end: size,
                };
                at = self.write_chunk(into, at, c.offset, &c.data)?;
                chunk = next().await?;
            }
            if at != size {
                return Err(FetchError::Transfer(format!("{at} of {size} bytes came")));
            }
            Ok(())
        }
        .await;
        self.seal_or_abort(id, written)?;
        Ok(alloc)
    }
}

/// Bytes `start..end` of a pull's allocation.
#[derive(Clone, Copy)]
struct Range {
    alloc: Allocation,
    start: u64,
    end: u64,
}

impl NodeManager {
    /// Writes a chunk of `data` at `offset` into `into`, where byte `at` is due next: the
    /// byte due after it, or an error for a chunk out of order or past the range's end.
    fn write_chunk(
        &self,
        into: Range,
        at: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, FetchError> {
        let end = at + data.len() as u64;
        if offset != at || end > into.end {
            return Err(FetchError::Transfer(format!(
                "{} bytes at {offset} where {at}..{} was due",
                data.len(),
                into.end
            )));
        }
        self.store()
            .arena()
            .write(into.alloc, offset, data)
            .map_err(|e| FetchError::Transfer(e.to_string()))?;
        Ok(end)
    }

    /// Writes the chunks of `stream` (after `first`, if given) into `into`, checking that
    /// they come in order and fill it exactly.
    async fn receive(
        &self,
        into: Range,
        first: Option<ray_proto::ObjectChunk>,
        mut stream: ray_common::rpc::ReplyStream<ray_proto::ObjectChunk>,
        from: &str,
    ) -> Result<(), FetchError> {
        let clock = self.inner.connect.clock();
        let populated = self.populate_beside(into);
        let mut at = into.start;
        let mut chunk = match first {
            Some(c) => Some(c),
            None => next_chunk(&mut stream, &clock, from).await?,
        };
        while let Some(c) = chunk {
            at = self.write_chunk(into, at, c.offset, &c.data)?;
            chunk = next_chunk(&mut stream, &clock, from).await?;
        }
        // (Populating changes no byte: one still running when a failure returns early, and
        // the object is aborted, is harmless.)
        let _ = populated.await;
        if at != into.end {
            return Err(FetchError::Transfer(format!(
                "bytes {}..{at} of {}..{} arrived",
                into.start, into.start, into.end
            )));
        }
        Ok(())
    }
}

impl NodeManager {
    /// Backs `into`'s pages with memory in one call, on a blocking thread, beside the
    /// transfer that fills them (not a fault per page as the bytes land).
    fn populate_beside(&self, into: Range) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.store()
                .arena()
                .populate(into.alloc, into.start, into.end)
        })
    }

    /// Fills `into`, a range of object `id` (`size` bytes), from the node manager at `from`
    /// over the bulk path: the socket read straight into the arena.
    async fn receive_bulk(
        &self,
        id: ObjectId,
        size: u64,
        into: Range,
        from: &str,
    ) -> Result<(), FetchError> {
        let clock = self.inner.connect.clock();
        let ask = ray_proto::BulkAsk {
            token: self.inner.config.token.clone(),
            object_id: id.0.to_vec().into(),
            offset: into.start,
            length: into.end - into.start,
        };
        let transfer = |e: std::io::Error| FetchError::Transfer(format!("from {from}: {e}"));
        let (mut stream, object_size) = bulk::open(from, &ask, &clock).await.map_err(transfer)?;
        if object_size != size {
            return Err(FetchError::Transfer(format!(
                "{from} holds {object_size} bytes of {id} where {size} were due"
            )));
        }
        let populated = self.populate_beside(into);
        let part = Allocation {
            offset: into.alloc.offset + into.start,
            len: into.end - into.start,
        };
        // SAFETY: `part` lies inside `into.alloc`, which this pull created and has not sealed
        // or aborted (the object is sealed or aborted only after every range's task ended);
        // the pull's ranges do not overlap, and nothing else reads an unsealed object, so this
        // slice is the only view of its bytes while it lives (populating backs pages without
        // reading or writing a byte).
        let dest = unsafe { self.store().arena().bytes_mut(part) }
            .map_err(|e| FetchError::Transfer(e.to_string()))?;
        let received = bulk::receive(&mut stream, dest, &clock, CHUNK_DEADLINE).await;
        let _ = populated.await;
        received.map_err(transfer)
    }

    /// Serves the bulk connections the node manager's server hands over, each in a task of
    /// its own, until the server stops.
    pub fn serve_bulk(
        &self,
        mut incoming: tokio::sync::mpsc::Receiver<ray_common::rpc::server::BulkConnection>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(connection) = incoming.recv().await {
                let me = me.clone();
                tokio::spawn(async move { me.answer_bulk(connection).await });
            }
        });
    }

    /// Answers one bulk connection: the asker's token checked first, then the range sent
    /// from the pinned object, or the reason it is not.
    async fn answer_bulk(&self, mut connection: ray_common::rpc::server::BulkConnection) {
        let stream = &mut connection.stream;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "an unknown peer".to_string(), |p| p.to_string());
        let clock = self.inner.connect.clock();
        let refused = |why: &str| {
            self.inner
                .pulls
                .bulk_refusals
                .warn(&format!("refused a bulk connection from {peer}: {why}"));
        };
        let ask = match clock
            .timeout(bulk::ASK_DEADLINE, bulk::read_ask(stream))
            .await
        {
            Ok(Ok(ask)) => ask,
            Ok(Err(e)) => return refused(&e.to_string()),
            Err(_) => return refused("no ask in time"),
        };
        let token = &self.inner.config.token;
        let (code, why) = if ask.token.is_empty() {
            (tonic::Code::Unauthenticated, "missing session token")
        } else if !ray_proto::auth::constant_time_eq(ask.token.as_bytes(), token.as_bytes()) {
            (tonic::Code::PermissionDenied, "wrong session token")
        } else {
            (tonic::Code::Ok, "")
        };
        if code != tonic::Code::Ok {
            refused(why);
            let _ = bulk::answer(stream, code, 0, why.into(), &clock).await;
            return;
        }
        let Ok(id) = <[u8; ObjectId::SIZE]>::try_from(&ask.object_id[..]).map(ObjectId) else {
            let why = "an object id must be 16 bytes";
            let _ = bulk::answer(stream, tonic::Code::InvalidArgument, 0, why.into(), &clock).await;
            return;
        };
        let Some(alloc) = self.store().get(id) else {
            let why = format!("object {id} is not here");
            let _ = bulk::answer(stream, tonic::Code::NotFound, 0, why, &clock).await;
            return;
        };
        let _pin = Pin {
            node: self.clone(),
            id,
        };
        let size = alloc.len;
        let end = ask.offset.saturating_add(ask.length).min(size);
        if ask.offset > size {
            let why = format!("bytes from {} of a {size}-byte object", ask.offset);
            let _ = bulk::answer(stream, tonic::Code::OutOfRange, size, why, &clock).await;
            return;
        }
        let part = Allocation {
            offset: alloc.offset + ask.offset,
            len: end - ask.offset,
        };
        // The object is pinned (`_pin`) until the last byte is written: its range is neither
        // written nor reused meanwhile.
        let bytes = match self.store().arena().bytes(part) {
            Ok(b) => b,
            Err(e) => {
                let _ =
                    bulk::answer(stream, tonic::Code::Internal, size, e.to_string(), &clock).await;
                return;
            }
        };
        if bulk::answer(stream, tonic::Code::Ok, size, String::new(), &clock)
            .await
            .is_err()
        {
            return;
        }
        if let Err(e) = bulk::send(stream, bytes, &clock, CHUNK_DEADLINE).await {
            tracing::debug!(object = %id, %peer, error = %e, "a bulk range was cut short");
        }
    }
}

/// Opens the stream of bytes `offset..offset + length` of object `id` at `source`.
async fn open_range(
    source: &Arc<dyn NodeManagerApi>,
    id: ObjectId,
    offset: u64,
    length: u64,
) -> Result<ray_common::rpc::ReplyStream<ray_proto::ObjectChunk>, FetchError> {
    source
        .pull_object(ray_proto::PullObjectRequest {
            object_id: id.0.to_vec().into(),
            offset,
            length,
        })
        .await
        .map_err(|e| FetchError::Transfer(e.to_string()))
}

/// `start..end` cut into at most `n` ranges of whole chunks (the last takes the rest).
fn ranges(start: u64, end: u64, n: usize) -> Vec<(u64, u64)> {
    let chunk = CHUNK_BYTES as u64;
    let chunks = (end.saturating_sub(start)).div_ceil(chunk);
    if chunks == 0 {
        return Vec::new();
    }
    let per = chunks.div_ceil(n as u64) * chunk;
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let next = (at + per).min(end);
        out.push((at, next));
        at = next;
    }
    out
}

/// One more in a count while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pin on an object of this node's store, released when the last holder drops it.
struct Pin {
    node: NodeManager,
    id: ObjectId,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.node.store().release(self.id);
    }
}

/// A range of a pinned object, read in place as a chunk's bytes (checked in bounds when
/// made): the object stays pinned while any chunk is still on its way.
struct ArenaSlice {
    pin: Arc<Pin>,
    part: Allocation,
}

impl AsRef<[u8]> for ArenaSlice {
    fn as_ref(&self) -> &[u8] {
        self.pin
            .node
            .store()
            .arena()
            .bytes(self.part)
            .unwrap_or(&[])
    }
}

/// The next chunk of a pull (`None`: the end), within [`CHUNK_DEADLINE`].
async fn next_chunk(
    stream: &mut ray_common::rpc::ReplyStream<ray_proto::ObjectChunk>,
    clock: &ray_common::Clock,
    from: &str,
) -> Result<Option<ray_proto::ObjectChunk>, FetchError> {
    match clock.timeout(CHUNK_DEADLINE, stream.next()).await {
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(e))) => Err(FetchError::Transfer(e.to_string())),
        Ok(None) => Ok(None),
        Err(_) => Err(FetchError::Transfer(format!(
            "no data from {from} within {CHUNK_DEADLINE:?}"
        ))),
    }
}

/// A fetch failure's kind on the wire.
pub(crate) fn fetch_status(e: FetchError) -> tonic::Status {
    let message = e.to_string();
    match e {
        FetchError::Full(_) => tonic::Status::resource_exhausted(message),
        FetchError::UnknownNode(_) => tonic::Status::not_found(message),
        FetchError::Transfer(_) => tonic::Status::unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node manager with a store of `capacity` bytes and no server.
    fn node_with_store(capacity: u64) -> NodeManager {
        let config = crate::NodeManagerConfig {
            node_id: NodeId::random(),
            resources: ray_scheduler::ResourceSet::cpus(1.0).unwrap(),
            token: "t".into(),
            session: "pull-priority-test".into(),
            gcs_address: "127.0.0.1:1".into(),
            max_workers: 1,
            limit_wait: Duration::from_secs(1),
            infeasible_waits: false,
            binary_cache: None,
            log_dir: None,
        };
        let store = ray_object_store::ObjectStore::create_anonymous(
            ray_object_store::StoreConfig::new("pull-priority-test").with_capacity(capacity),
        )
        .unwrap();
        let connect = Arc::new(ray_common::rpc::TonicConnect::new("t"));
        NodeManager::new(config, store, connect, Arc::new(crate::ProcessLauncher))
    }

    #[tokio::test]
    async fn the_bulk_path_sends_exactly_the_range_asked_or_says_why_not() {
        let node = node_with_store(1 << 20);
        let (bulk, incoming) = tokio::sync::mpsc::channel(4);
        node.serve_bulk(incoming);
        let (address, _stop) = ray_common::rpc::server::serve_with_bulk(
            ray_common::rpc::server::LOOPBACK,
            tonic::service::Routes::default(),
            Some(bulk),
        )
        .await
        .unwrap();
        let id = ObjectId([7; 16]);
        let pattern: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let alloc = node.store().create_object(id, 1000).unwrap();
        node.store().arena().write(alloc, 0, &pattern).unwrap();
        node.store().seal(id).unwrap();
        let clock = ray_common::Clock::Real;
        let ask = |object_id: Vec<u8>, offset: u64, length: u64| ray_proto::BulkAsk {
            token: "t".into(),
            object_id: object_id.into(),
            offset,
            length,
        };
        // A range inside, one cut at the end, one that starts at the end.
        for (offset, length, want) in [
            (10, 100, 10..110),
            (900, u64::MAX, 900..1000),
            (1000, 5, 0..0),
        ] {
            let (mut stream, size) =
                bulk::open(&address, &ask(id.0.to_vec(), offset, length), &clock)
                    .await
                    .unwrap();
            assert_eq!(size, 1000);
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut got)
                .await
                .unwrap();
            assert_eq!(got, pattern[want], "bytes {offset}+{length}");
        }
        // Refusals, each with its reason and no byte of the object.
        for (object_id, offset, why) in [
            (id.0.to_vec(), 1001, "OutOfRange"),
            (vec![7; 15], 0, "InvalidArgument"),
            (vec![8; 16], 0, "NotFound"),
        ] {
            let e = bulk::open(&address, &ask(object_id, offset, 1), &clock)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        // The pins taken while sending are all released: the object goes at once.
        node.store().delete(id);
        assert!(node.store().info(id).is_none(), "still pinned");
        assert_eq!(node.store().used(), 0);
    }

    #[tokio::test]
    async fn a_pull_learns_when_its_source_is_declared_dead() {
        let node = node_with_store(1 << 20);
        let source = NodeId::random();
        let view = |version: u64, alive: bool| {
            let info = ray_proto::NodeInfo {
                node_id: source.to_vec().into(),
                node_manager_address: "10.0.0.9:7000".into(),
                alive,
                ..Default::default()
            };
            node.apply_view(version, &[info]);
        };
        view(1, true);
        let dead = node.declared_dead(source);
        tokio::pin!(dead);
        let alive_still = tokio::time::timeout(Duration::from_millis(100), &mut dead).await;
        assert!(alive_still.is_err(), "resolved while the source lives");
        view(2, false);
        tokio::time::timeout(Duration::from_secs(5), dead)
            .await
            .expect("the death is seen");
    }

    #[tokio::test]
    async fn a_pull_for_a_task_argument_waits_behind_a_get_for_room() {
        const MIB: u64 = 1 << 20;
        let node = node_with_store(4 * MIB);
        let filler = ObjectId([1; 16]);
        node.store().create_object(filler, 4 * MIB).unwrap();
        // A get's pull waits for room; an argument's pull comes to wait too.
        let get = tokio::spawn({
            let node = node.clone();
            async move {
                let get = AtomicBool::new(false);
                node.create_for_pull(ObjectId([2; 16]), 3 * MIB, &get).await
            }
        });
        while node.inner.pulls.gets_waiting.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Most of a retry period later: the argument's next try falls due before the get's
        // (without the priority, the argument would take the room).
        tokio::time::sleep(Duration::from_millis(30)).await;
        let argument = tokio::spawn({
            let node = node.clone();
            async move {
                let argument = AtomicBool::new(true);
                node.create_for_pull(ObjectId([3; 16]), 3 * MIB, &argument)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Room for one of them: the get takes it, the argument's pull waits on.
        node.store().abort(filler);
        get.await
            .unwrap()
            .expect("the get's pull made its object (the argument's would have taken the room)");
        argument.abort();
    }

    #[test]
    fn ranges_cover_the_rest_in_whole_chunks() {
        let c = CHUNK_BYTES as u64;
        assert_eq!(ranges(c, c, 4), vec![]);
        assert_eq!(ranges(c, c + 1, 4), vec![(c, c + 1)]);
        // 9 chunks and a bit over 4 streams: 3 chunks each, the last takes what is left.
        let end = 10 * c + 7;
        let r = ranges(c, end, 4);
        assert_eq!(
            r,
            vec![(c, 4 * c), (4 * c, 7 * c), (7 * c, 10 * c), (10 * c, end)]
        );
        assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
