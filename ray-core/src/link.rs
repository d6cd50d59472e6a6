//! A core worker's link to the rest of the session: the clients it calls other processes
//! through, the node's shared-memory store (put, read, delete), borrowers' batched releases
//! and fetch requests. Handed in when the core worker is built; knows no global.

use crate::error::Result;
use crate::ids::ObjectId;
use crate::store_provider::{run_on, StoreProvider};
use dashmap::DashMap;
use ray_common::rpc::{Connect, CoreWorkerApi, GcsApi, NodeManagerApi, RpcError};
use ray_object_store::ArenaMapping;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A request to fetch object `.1` from its owner at `.0` (see [`crate::fetch`]).
pub(crate) type FetchRequest = (Arc<str>, ObjectId);

/// The clients a core worker calls other processes through, handed in when it is built.
pub(crate) struct Clients {
    /// Opens clients of other core workers (owners, borrowers).
    pub connect: Arc<dyn Connect>,
    /// This node's node manager.
    pub raylet: Arc<dyn NodeManagerApi>,
    /// The GCS.
    pub gcs: Arc<dyn GcsApi>,
}

/// Clients of other nodes' node managers (where lease requests spill), one per address,
/// kept: each holds a channel.
#[derive(Clone)]
pub(crate) struct NodeManagers {
    connect: Arc<dyn Connect>,
    open: Arc<DashMap<String, Arc<dyn NodeManagerApi>>>,
}

impl NodeManagers {
    /// The client of the node manager at `address`.
    pub fn get(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError> {
        if let Some(nm) = self.open.get(address) {
            return Ok(nm.clone());
        }
        let nm = self.connect.node_manager(address)?;
        self.open.insert(address.to_string(), nm.clone());
        Ok(nm)
    }
}

/// A core worker's link to its node and to other core workers.
pub(crate) struct Link {
    pub handle: tokio::runtime::Handle,
    pub token: Arc<str>,
    /// Opens clients of other processes (owners, the GCS).
    pub connect: Arc<dyn Connect>,
    pub raylet: Arc<dyn NodeManagerApi>,
    /// Other nodes' node managers.
    pub node_managers: NodeManagers,
    pub gcs: Arc<dyn GcsApi>,
    /// Objects in this node's shared-memory store.
    pub store: StoreProvider,
    peers: DashMap<Arc<str>, Arc<dyn CoreWorkerApi>>,
    releases: mpsc::UnboundedSender<(Arc<str>, ObjectId, Arc<str>)>,
    fetches: mpsc::UnboundedSender<FetchRequest>,
    /// Opens task connections: over the connector's network, passing its filters.
    pub dialer: crate::data_plane::Dialer,
    /// The connector's clock: the deadlines of failure paths run on it.
    pub clock: ray_common::Clock,
    /// Workers only: tells the node manager this worker blocks or resumes.
    pub blocked_hook: Option<Box<dyn Fn(bool) + Send + Sync>>,
}

impl Link {
    /// The link of a core worker on `handle`'s runtime, with the fetch requests it queues
    /// (for [`crate::fetch::run_fetcher`]).
    pub fn new(
        handle: tokio::runtime::Handle,
        token: Arc<str>,
        clients: Clients,
        node: ray_common::NodeId,
        arena: Option<ArenaMapping>,
        blocked_hook: Option<Box<dyn Fn(bool) + Send + Sync>>,
    ) -> (Self, mpsc::UnboundedReceiver<FetchRequest>) {
        let Clients {
            connect,
            raylet,
            gcs,
        } = clients;
        let (releases, pending_releases) = mpsc::unbounded_channel();
        let (fetches, fetch_queue) = mpsc::unbounded_channel();
        handle.spawn(send_releases(pending_releases, connect.clone()));
        let link = Link {
            dialer: crate::data_plane::Dialer::new(&*connect),
            clock: connect.clock(),
            store: StoreProvider::new(node, handle.clone(), raylet.clone(), arena),
            handle,
            token,
            node_managers: NodeManagers {
                connect: connect.clone(),
                open: Arc::new(DashMap::new()),
            },
            connect,
            raylet,
            gcs,
            peers: DashMap::new(),
            releases,
            fetches,
            blocked_hook,
        };
        (link, fetch_queue)
    }

    /// Runs `f` on the session's tokio runtime and waits for it from this (non-async) thread.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        run_on(&self.handle, f)
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

    /// Forgets the client of a process that is gone.
    pub fn forget_peer(&self, address: &Arc<str>) {
        self.peers.remove(address);
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
