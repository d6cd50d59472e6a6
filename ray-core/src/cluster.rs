//! This process's link to the rest of the session: the clients it calls other processes
//! through, the node's shared-memory store (put, read, delete), borrowers' batched releases,
//! and the way into the submitter's event loop.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::memory_store::Stored;
use crate::runtime::Runtime;
use crate::store_provider::{run_on, StoreProvider};
use crate::submitter::{ActorCall, Event, PendingTask};
use dashmap::DashMap;
use ray_common::rpc::{Connect, CoreWorkerApi, GcsApi, NodeManagerApi};
use ray_object_store::ArenaMapping;
use ray_scheduler::ResourceSet;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;

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
    /// Objects in this node's shared-memory store.
    pub store: StoreProvider,
    pub events: mpsc::UnboundedSender<Event>,
    peers: DashMap<Arc<str>, Arc<dyn CoreWorkerApi>>,
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
            store: StoreProvider::new(handle.clone(), raylet.clone(), arena),
            handle,
            token,
            connect,
            raylet,
            gcs,
            events,
            peers: DashMap::new(),
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
        run_on(&self.handle, f)
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
        // If the submitter is gone the session is stopping, and the stop fails every
        // pending ref, this task's return included.
        let _ = self.events.send(Event::Submit(task));
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
