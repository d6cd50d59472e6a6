//! The node manager's gRPC service: thin translation between wire messages and [`NodeManager`].

use crate::cluster_view::Placement;
use crate::pool::{LeaseAsk, LeaseError, NodeManager};
use ray_common::resources::to_resources;
use ray_common::WorkerId;
use ray_object_store::{ObjectId, StoreError};
use ray_proto::node_manager_server::NodeManager as NodeManagerRpc;
use ray_proto::*;
use ray_scheduler::ResourceSet;
use tonic::{Request, Response, Status};

fn object_id(bytes: &[u8]) -> Result<ObjectId, Status> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| Status::invalid_argument("object id must be 16 bytes"))?;
    Ok(ObjectId(arr))
}

fn worker_id(bytes: &[u8]) -> Result<WorkerId, Status> {
    WorkerId::from_wire(bytes).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A strategy off the wire (none: the default policy).
fn strategy(s: Option<Strategy>) -> Result<ray_scheduler::SchedulingStrategy, Status> {
    use ray_scheduler::SchedulingStrategy as S;
    Ok(match s.and_then(|s| s.kind) {
        None => S::Default,
        Some(strategy::Kind::Spread(_)) => S::Spread,
        Some(strategy::Kind::NodeAffinity(a)) => S::NodeAffinity {
            node: crate::scheduler_id(
                ray_common::NodeId::from_wire(&a.node_id)
                    .map_err(|e| Status::invalid_argument(format!("affinity node: {e}")))?,
            ),
            soft: a.soft,
        },
    })
}

fn to_resource_set(r: Option<Resources>) -> Result<ResourceSet, Status> {
    ray_common::resources::to_resource_set(r).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Full { .. } | StoreError::TooLarge { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        StoreError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

#[tonic::async_trait]
impl NodeManagerRpc for NodeManager {
    async fn register_worker(
        &self,
        req: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerReply>, Status> {
        let req = req.into_inner();
        let worker_id = worker_id(&req.worker_id)?;
        let Some(job) = self.register_worker(
            worker_id,
            req.pid,
            req.task_socket,
            req.task_address,
            req.core_worker_address,
        ) else {
            return Err(Status::permission_denied("unknown or duplicate worker"));
        };
        let config = &self.inner.config;
        Ok(Response::new(RegisterWorkerReply {
            node_id: config.node_id.to_vec().into(),
            store_path: self.inner.store.path().display().to_string(),
            job_id: job.job_id,
            gcs_address: config.gcs_address.clone(),
            namespace: job.namespace.clone(),
        }))
    }

    async fn request_worker_lease(
        &self,
        req: Request<LeaseRequest>,
    ) -> Result<Response<LeaseReply>, Status> {
        let req = req.into_inner();
        let shape = to_resource_set(req.shape)?;
        let strategy = strategy(req.strategy)?;
        let locality = req
            .locality
            .iter()
            .map(|n| {
                ray_common::NodeId::from_wire(&n.node_id)
                    .map(|id| (crate::cluster_view::scheduler_id(id), n.bytes))
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let ask = LeaseAsk {
            shape: &shape,
            // Empty: a driver or the GCS asks.
            // A requester this node did not start (a worker of another node whose request
            // spilled here) is not watched here: its owner returns the lease.
            lessee: (!req.requester_id.is_empty())
                .then(|| worker_id(&req.requester_id))
                .transpose()?
                .filter(|w| self.has_worker(*w)),
            for_actor: req.for_actor,
            job_id: req.job_id,
            request_id: req.request_id,
            env: &req.env,
            lessee_node: ray_common::NodeId::from_wire(&req.requester_node)
                .ok()
                .filter(|n| *n != self.node_id()),
            share_process: req.share_process,
        };
        // The job (and a shipped binary's download) first, outside the wait below that a new
        // view cancels: a download is never cut off and started again.
        if let Err(e) = self.job(req.job_id).await {
            return Err(match e {
                LeaseError::UnknownJob(_) => Status::not_found(e.to_string()),
                LeaseError::Spawn(_) => Status::internal(format!("node {}: {e}", self.node_id())),
                _ => Status::unavailable(e.to_string()),
            });
        }
        let granted = loop {
            let refused = |result| {
                Ok(Response::new(LeaseReply {
                    result: Some(result),
                }))
            };
            match self
                .place_or_wait(&shape, &strategy, &locality, req.grant_or_reject)
                .await
            {
                Placement::Here => {}
                Placement::Spill { address, node_id } => {
                    metrics::counter!("rayrs_spillbacks_total").increment(1);
                    return refused(lease_reply::Result::Spillback(Spillback {
                        node_manager_address: address,
                        node_id: node_id.to_vec().into(),
                    }));
                }
                Placement::Infeasible(why) | Placement::Unschedulable(why) => {
                    return refused(lease_reply::Result::Infeasible(why))
                }
            }
            if req.grant_or_reject {
                break self.lease_for(&ask).await;
            }
            // Waiting here for resources, the request looks again when the cluster view
            // changes: another node may now be the better place.
            let changed = self.inner.view_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            tokio::select! {
                biased;
                granted = self.lease_for(&ask) => break granted,
                _ = changed => {}
            }
        };
        let result = match granted {
            Ok(g) => lease_reply::Result::Granted(Lease {
                lease_id: g.lease_id,
                worker_id: g.worker_id.to_vec().into(),
                task_socket: g.task_socket,
                task_address: g.task_address,
                core_worker_address: g.core_worker_address,
                pid: g.pid,
                node_id: self.node_id().to_vec().into(),
            }),
            Err(LeaseError::Infeasible(why)) => lease_reply::Result::Infeasible(why),
            Err(e @ (LeaseError::ShuttingDown | LeaseError::RequesterGone)) => {
                return Err(Status::unavailable(e.to_string()))
            }
            Err(e @ LeaseError::Spawn(_)) => {
                // Named, so the driver knows where its binary could not run.
                return Err(Status::internal(format!("node {}: {e}", self.node_id())));
            }
            Err(e @ LeaseError::WorkerLimit(_)) => {
                return Err(Status::resource_exhausted(e.to_string()))
            }
            Err(e @ LeaseError::UnknownJob(_)) => return Err(Status::not_found(e.to_string())),
            Err(e @ LeaseError::JobUnavailable(..)) => {
                return Err(Status::unavailable(e.to_string()))
            }
        };
        Ok(Response::new(LeaseReply {
            result: Some(result),
        }))
    }

    async fn return_worker(
        &self,
        req: Request<ReturnWorkerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        self.return_lease(req.lease_id, req.worker_failed);
        Ok(Response::new(Empty {}))
    }

    async fn notify_blocked(
        &self,
        req: Request<BlockedRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        self.set_blocked(worker_id(&req.worker_id)?, req.blocked);
        Ok(Response::new(Empty {}))
    }

    async fn create_object(
        &self,
        req: Request<CreateObjectRequest>,
    ) -> Result<Response<CreateObjectReply>, Status> {
        let req = req.into_inner();
        let id = object_id(&req.object_id)?;
        let a = self
            .inner
            .store
            .create_object(id, req.size)
            .map_err(store_status)?;
        Ok(Response::new(CreateObjectReply {
            offset: a.offset,
            size: a.len,
        }))
    }

    async fn seal_object(&self, req: Request<ObjectRequest>) -> Result<Response<Empty>, Status> {
        let id = object_id(&req.into_inner().object_id)?;
        self.inner.store.seal(id).map_err(store_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn abort_object(&self, req: Request<ObjectRequest>) -> Result<Response<Empty>, Status> {
        let id = object_id(&req.into_inner().object_id)?;
        self.inner.store.abort(id);
        Ok(Response::new(Empty {}))
    }

    async fn get_object(
        &self,
        req: Request<ObjectRequest>,
    ) -> Result<Response<GetObjectReply>, Status> {
        let id = object_id(&req.into_inner().object_id)?;
        Ok(Response::new(match self.inner.store.get(id) {
            Some(a) => GetObjectReply {
                found: true,
                offset: a.offset,
                size: a.len,
            },
            None => GetObjectReply::default(),
        }))
    }

    async fn release_object(&self, req: Request<ObjectRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let id = object_id(&req.object_id)?;
        self.release_for(req.client_pid, id);
        Ok(Response::new(Empty {}))
    }

    async fn delete_objects(
        &self,
        req: Request<DeleteObjectsRequest>,
    ) -> Result<Response<Empty>, Status> {
        let mut req = req.into_inner();
        let node = (!req.node_id.is_empty())
            .then(|| ray_common::NodeId::from_wire(&req.node_id))
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match node {
            // Another node's objects: deleted there (a dead node's went with it).
            Some(node) if node != self.node_id() => {
                let Some(address) = self.address_of(node) else {
                    return Ok(Response::new(Empty {}));
                };
                let peer = self.peer(&address).map_err(Status::from)?;
                req.node_id = Default::default();
                peer.delete_objects(req).await.map_err(Status::from)?;
            }
            _ => {
                for raw in req.object_ids {
                    self.inner.store.delete(object_id(&raw)?);
                }
            }
        }
        Ok(Response::new(Empty {}))
    }

    async fn fetch_object(
        &self,
        req: Request<FetchObjectRequest>,
    ) -> Result<Response<GetObjectReply>, Status> {
        let req = req.into_inner();
        let id = object_id(&req.object_id)?;
        let from = ray_common::NodeId::from_wire(&req.from_node)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let a = NodeManager::fetch_object(self, id, from, req.for_argument)
            .await
            .map_err(crate::object_manager::fetch_status)?;
        self.pinned_for(req.client_pid, id);
        Ok(Response::new(GetObjectReply {
            found: true,
            offset: a.offset,
            size: a.len,
        }))
    }

    type PullObjectStream = tokio_stream::wrappers::ReceiverStream<Result<ObjectChunk, Status>>;

    async fn pull_object(
        &self,
        req: Request<PullObjectRequest>,
    ) -> Result<Response<Self::PullObjectStream>, Status> {
        let req = req.into_inner();
        let id = object_id(&req.object_id)?;
        match self.serve_pull(id, req.offset, req.length)? {
            Some(rx) => Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
                rx,
            ))),
            None => Err(Status::not_found(format!(
                "object {id} is not on this node"
            ))),
        }
    }

    async fn put_object(
        &self,
        req: Request<tonic::Streaming<PutChunk>>,
    ) -> Result<Response<GetObjectReply>, Status> {
        let a = self
            .receive_put(req.into_inner())
            .await
            .map_err(crate::object_manager::fetch_status)?;
        Ok(Response::new(GetObjectReply {
            found: true,
            offset: a.offset,
            size: a.len,
        }))
    }

    async fn get_node_resources(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<NodeResourcesReply>, Status> {
        let (total, available) = self.resources();
        Ok(Response::new(NodeResourcesReply {
            total: Some(to_resources(&total)),
            available: Some(to_resources(&available)),
            node_id: self.node_id().to_vec().into(),
            num_workers: self.num_workers() as u32,
            store_used: self.store().used(),
            store_capacity: self.store().capacity(),
            objects_pulled: self.objects_pulled(),
            binaries_fetched: self.binaries_fetched(),
            cpu_percent: self.cpu_percent(),
        }))
    }

    async fn list_workers(&self, _: Request<Empty>) -> Result<Response<ListWorkersReply>, Status> {
        Ok(Response::new(ListWorkersReply {
            node_id: self.node_id().to_vec().into(),
            workers: self.worker_rows(),
        }))
    }

    async fn finish_job(&self, req: Request<FinishJobRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let keep = req
            .keep_workers
            .iter()
            .map(|w| worker_id(w))
            .collect::<Result<Vec<_>, _>>()?;
        let killed = NodeManager::finish_job(self, req.job_id, &keep);
        tracing::info!(
            job = req.job_id,
            killed,
            "job finished; its workers stopped"
        );
        Ok(Response::new(Empty {}))
    }

    type HoldDriverStream = tokio_stream::wrappers::ReceiverStream<Result<Empty, Status>>;

    async fn hold_driver(
        &self,
        req: Request<WatchDriverRequest>,
    ) -> Result<Response<Self::HoldDriverStream>, Status> {
        let rx = self.watch_driver_stream(req.into_inner().job_id);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn watch_driver(
        &self,
        req: Request<WatchDriverRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        NodeManager::watch_driver(self, req.job_id, req.pid).map_err(|e| {
            Status::invalid_argument(format!("cannot watch process {}: {e}", req.pid))
        })?;
        Ok(Response::new(Empty {}))
    }

    async fn reserve_bundles(
        &self,
        req: Request<ReserveBundlesRequest>,
    ) -> Result<Response<ReserveBundlesReply>, Status> {
        let req = req.into_inner();
        let group = ray_common::PlacementGroupId::from_wire(&req.group_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let bundles = req
            .bundles
            .into_iter()
            .map(|b| {
                ray_common::resources::to_resource_set(b.shape)
                    .map(|shape| (b.index, shape))
                    .map_err(|e| Status::invalid_argument(format!("bundle {}: {e}", b.index)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = NodeManager::reserve_bundles(self, group, &bundles);
        let (total, available) = self.resources();
        Ok(Response::new(ReserveBundlesReply {
            reserved: outcome.is_ok(),
            reason: outcome.err().unwrap_or_default(),
            total: Some(to_resources(&total)),
            available: Some(to_resources(&available)),
        }))
    }

    async fn release_bundles(
        &self,
        req: Request<ReleaseBundlesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let group = ray_common::PlacementGroupId::from_wire(&req.into_inner().group_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        NodeManager::release_bundles(self, group);
        Ok(Response::new(Empty {}))
    }
}
