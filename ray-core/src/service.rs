//! The core-worker service every driver and worker runs: owners answer borrowers here, and
//! the GCS asks a worker to construct an actor. The RPC edge: it serves what a [`Slot`] is
//! filled with, and knows no global.

use crate::error::Error;
use crate::executor::Executor;
use crate::ids::{id16, ObjectId};
use crate::memory_store::{Stored, Subscribed, Waiter};
use crate::ownership::Ownership;
use ray_proto::auth::CheckToken;
use ray_proto::core_worker_server::{CoreWorker, CoreWorkerServer};
use ray_proto::{Empty, GetObjectsReply, GetObjectsRequest, ObjectStatus, RemoveBorrowerRequest};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

/// What the service serves: filled once the core worker is built (the service listens
/// first, since the core worker's address is the service's).
#[derive(Clone, Default)]
pub(crate) struct Slot(Arc<Filled>);

#[derive(Default)]
pub(crate) struct Filled {
    served: OnceLock<Served>,
    /// Woken when `served` is set.
    now: tokio::sync::Notify,
}

/// A core worker as its service sees it.
pub(crate) struct Served {
    pub own: Weak<Ownership>,
    /// Workers only: where the GCS's actor creations go.
    pub executor: Option<Arc<Executor>>,
    /// Workers only: cancels the tasks a cancelled task submitted (`recursive`).
    pub cancel_children: Option<Box<dyn Fn(ray_common::TaskId) + Send + Sync>>,
    /// What the process knows of a pending task of its own (see `CoreWorker::explain`).
    pub explain: Option<Box<dyn Fn(ObjectId) -> ray_proto::TaskExplanation + Send + Sync>>,
}

impl Slot {
    pub fn fill(&self, served: Served) {
        let _ = self.0.served.set(served);
        self.0.now.notify_waiters();
    }

    fn own(&self) -> std::result::Result<Arc<Ownership>, Status> {
        self.0
            .served
            .get()
            .and_then(|s| s.own.upgrade())
            .ok_or_else(|| Status::unavailable(Error::NotInitialized.to_string()))
    }

    /// The executor, once filled: the GCS may call as soon as the node manager has the
    /// worker's registration, a moment before the worker has built its core worker.
    async fn executor(&self) -> crate::error::Result<Arc<Executor>> {
        let Filled { served, now } = &*self.0;
        let wait = async {
            loop {
                let notified = now.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(served) = served.get() {
                    return served;
                }
                notified.await;
            }
        };
        let served = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| Error::NotInitialized)?;
        served
            .executor
            .clone()
            .ok_or_else(|| Error::Runtime("only a worker process hosts actors".into()))
    }
}

/// The core-worker service serving what `slot` holds, guarded by the session token.
pub(crate) fn core_worker_routes(token: &str, slot: Slot) -> Routes {
    let server = CoreWorkerServer::new(CoreWorkerService { slot })
        .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(ray_proto::MAX_MESSAGE_BYTES);
    Routes::new(tonic::service::interceptor::InterceptedService::new(
        server,
        ray_common::rpc::server::logged(CheckToken::new(token)),
    ))
}

struct CoreWorkerService {
    slot: Slot,
}

fn object_id(raw: &[u8]) -> std::result::Result<ObjectId, Status> {
    id16(raw, "object id")
        .map(ObjectId)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl CoreWorker for CoreWorkerService {
    async fn cancel_task(
        &self,
        req: Request<ray_proto::CancelTaskRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let task = ray_common::TaskId::from_wire(&req.task_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.slot.own()?.cancelled.mark(task);
        if req.recursive {
            if let Some(children) = self
                .slot
                .0
                .served
                .get()
                .and_then(|s| s.cancel_children.as_ref())
            {
                children(task);
            }
        }
        Ok(Response::new(Empty {}))
    }

    async fn destroy_actor(
        &self,
        req: Request<ray_proto::DestroyActorRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let executor = self
            .slot
            .executor()
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        // Not hosted (never, or ended already): nothing to do, as the GCS may ask again.
        executor.destroy_actor(&req.actor_id);
        Ok(Response::new(Empty {}))
    }

    async fn create_actor(
        &self,
        req: Request<ray_proto::CreateActorRequest>,
    ) -> std::result::Result<Response<ray_proto::CreateActorReply>, Status> {
        let req = req.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("CreateActor without a spec"))?;
        let created = match self.slot.executor().await {
            Ok(executor) => executor.create_actor(spec, req.incarnation).await,
            Err(e) => Err(e),
        };
        let reply = match created {
            Ok(()) => ray_proto::CreateActorReply {
                ok: true,
                error: None,
            },
            Err(e) => ray_proto::CreateActorReply {
                ok: false,
                error: Some(e.to_proto()),
            },
        };
        Ok(Response::new(reply))
    }

    type GetObjectsStream =
        tokio_stream::wrappers::ReceiverStream<std::result::Result<GetObjectsReply, Status>>;

    async fn get_objects(
        &self,
        req: Request<GetObjectsRequest>,
    ) -> std::result::Result<Response<Self::GetObjectsStream>, Status> {
        let ids = req
            .into_inner()
            .object_ids
            .iter()
            .map(|raw| object_id(raw))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rt = self.slot.own()?;
        let (out, stream) = tokio::sync::mpsc::channel(4);
        tokio::spawn(stream_objects(rt, ids, out));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        )))
    }

    async fn list_objects(
        &self,
        req: Request<ray_proto::ListObjectsRequest>,
    ) -> std::result::Result<Response<ray_proto::ListObjectsReply>, Status> {
        let limit = match req.into_inner().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let Ok(rt) = self.slot.own() else {
            // A worker still starting: it holds nothing yet.
            return Ok(Response::new(ray_proto::ListObjectsReply {
                pid: std::process::id(),
                ..Default::default()
            }));
        };
        // A walk of the whole table: off the runtime's threads.
        let reply = tokio::task::spawn_blocking(move || list_objects(&rt, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(reply))
    }

    async fn explain_task(
        &self,
        req: Request<ray_proto::ExplainTaskRequest>,
    ) -> std::result::Result<Response<ray_proto::TaskExplanation>, Status> {
        let id = object_id(&req.into_inner().task_id)?;
        let explain = self.slot.0.served.get().and_then(|s| s.explain.as_ref());
        let unknown = || ray_proto::TaskExplanation {
            phase: "UNKNOWN".into(),
            ..Default::default()
        };
        Ok(Response::new(explain.map_or_else(unknown, |e| e(id))))
    }

    async fn ping(&self, _: Request<Empty>) -> std::result::Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn add_borrower(
        &self,
        req: Request<ray_proto::AddBorrowerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let ids = req
            .object_ids
            .iter()
            .map(|raw| object_id(raw))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rt = self.slot.own()?;
        if !rt.first_time(req.registration) {
            // A retry of a registration applied already (its answer was lost).
            return Ok(Response::new(Empty {}));
        }
        let borrower: Arc<str> = req.borrower_address.into();
        for id in ids {
            rt.refs.add_borrower(id, borrower.clone());
        }
        Ok(Response::new(Empty {}))
    }

    async fn remove_borrower(
        &self,
        req: Request<RemoveBorrowerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let rt = self.slot.own()?;
        let single = (!req.object_id.is_empty()).then_some(&req.object_id);
        for raw in single.into_iter().chain(req.object_ids.iter()) {
            let id = object_id(raw)?;
            crate::borrowers::release(&rt, id, &req.borrower_address);
        }
        Ok(Response::new(Empty {}))
    }
}

/// At most `limit` of the objects `rt` holds references to, as the state API lists them.
fn list_objects(rt: &Ownership, limit: usize) -> ray_proto::ListObjectsReply {
    use crate::memory_store::Stored;
    let objects = rt
        .refs
        .snapshot(limit)
        .into_iter()
        .map(|t| {
            let (location, size) = if rt.actor_lifetimes.contains_key(&t.id) {
                // An actor's handles, counted like an object's.
                ("ACTOR_HANDLE", 0)
            } else {
                match rt.store.get(&t.id) {
                    Some(Stored::Inline(bytes)) => ("INLINE", bytes.len() as u64),
                    Some(Stored::Plasma { size, .. }) => ("SHARED_MEMORY", size),
                    Some(Stored::Failed(_)) => ("FAILED", 0),
                    None => ("PENDING", 0),
                }
            };
            ray_proto::ObjectRow {
                object_id: t.id.0.to_vec().into(),
                size,
                owner_address: t.owner.map(|o| o.to_string()).unwrap_or_default(),
                local_refs: t.local,
                borrowers: t.borrowers,
                pinned: t.pinned,
                location: location.into(),
            }
        })
        .collect();
    ray_proto::ListObjectsReply {
        objects,
        total: rt.refs.len() as u64,
        worker_id: rt.me.worker_id.to_vec().into(),
        pid: std::process::id(),
        is_driver: !rt.me.is_worker,
    }
}

/// Objects per message of a `GetObjects` stream.
const OBJECTS_PER_MESSAGE: usize = 1024;

/// Sends each of `ids` on `out` as soon as its value is here: what is ready at once first,
/// then the rest as they complete. An object freed meanwhile is sent as lost.
async fn stream_objects(
    rt: Arc<Ownership>,
    ids: Vec<ObjectId>,
    out: tokio::sync::mpsc::Sender<std::result::Result<GetObjectsReply, Status>>,
) {
    let status = |id: ObjectId, v: Stored| ObjectStatus {
        object_id: id.0.to_vec().into(),
        value: Some(v.to_proto()),
    };
    let lost = |id: ObjectId| Stored::Failed(Arc::new(Error::ObjectLost(id.to_hex())));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ready = Vec::new();
    let mut waiting = std::collections::HashSet::new();
    for id in ids {
        match rt.store.subscribe(id, Waiter::Async(tx.clone()), false) {
            Subscribed::Ready(v) => ready.push(status(id, v)),
            Subscribed::Unknown => ready.push(status(id, lost(id))),
            Subscribed::Pending { .. } => {
                waiting.insert(id);
            }
        }
    }
    drop(tx);
    loop {
        while !ready.is_empty() {
            let rest = ready.split_off(ready.len().min(OBJECTS_PER_MESSAGE));
            let objects = std::mem::replace(&mut ready, rest);
            if out.send(Ok(GetObjectsReply { objects })).await.is_err() {
                return; // The borrower hung up.
            }
        }
        if waiting.is_empty() {
            return;
        }
        match tokio::time::timeout(crate::fetch::GET_OBJECTS_KEEPALIVE, rx.recv()).await {
            Ok(Some(id)) => {
                let mut woken = vec![id];
                while let Ok(more) = rx.try_recv() {
                    woken.push(more);
                }
                for id in woken {
                    if waiting.remove(&id) {
                        ready.push(status(id, rt.store.get(&id).unwrap_or_else(|| lost(id))));
                    }
                }
            }
            Ok(None) => {
                // Every slot we waited on went away: those objects were freed.
                ready.extend(waiting.drain().map(|id| status(id, lost(id))));
            }
            Err(_) => {
                // Objects freed meanwhile will never wake us: report them now.
                let freed: Vec<ObjectId> = waiting
                    .iter()
                    .filter(|id| !rt.store.contains(id))
                    .copied()
                    .collect();
                for id in freed {
                    waiting.remove(&id);
                    ready.push(status(id, lost(id)));
                }
                if !ready.is_empty() {
                    continue;
                }
                let keepalive = GetObjectsReply { objects: vec![] };
                if out.send(Ok(keepalive)).await.is_err() {
                    return;
                }
            }
        }
    }
}
