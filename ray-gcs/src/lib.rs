//! The global control store (GCS): node membership, the cluster resource view, jobs (ids and
//! what their workers run), and the actor directory (names, states, restarts).
//!
//! It runs inside the head process (embedded in the driver in local mode). Nothing on the
//! per-task path calls it: node managers report to it, drivers read the cluster view from it,
//! and callers ask it where an actor lives only when they first call it or after it restarts.

mod actors;

use parking_lot::Mutex;
use ray_common::rpc::Connect;
use ray_proto::gcs_server::Gcs;
use ray_proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use ray_proto::gcs_server::GcsServer;

/// The GCS service. Cheap to clone; state behind short locks, never held across an await.
#[derive(Clone)]
pub struct GcsService {
    inner: Arc<Inner>,
}

struct Inner {
    /// Opens the clients of the node managers and workers it places actors on.
    connect: Arc<dyn Connect>,
    state: Mutex<State>,
    actors: actors::Actors,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeInfo>,
    next_job_id: u32,
    jobs: std::collections::HashMap<u32, JobConfig>,
}

impl GcsService {
    /// An empty GCS, calling node managers and workers through clients `connect` opens.
    pub fn new(connect: Arc<dyn Connect>) -> Self {
        GcsService {
            inner: Arc::new(Inner {
                connect,
                state: Mutex::new(State::default()),
                actors: actors::Actors::default(),
            }),
        }
    }

    fn alive_node_manager(&self) -> Option<String> {
        self.inner
            .state
            .lock()
            .nodes
            .iter()
            .find(|n| n.alive)
            .map(|n| n.node_manager_address.clone())
    }
}

#[tonic::async_trait]
impl Gcs for GcsService {
    async fn register_node(
        &self,
        req: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeReply>, Status> {
        let node = req
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("RegisterNode without a node"))?;
        if node.node_id.len() != 16 {
            return Err(Status::invalid_argument("node id must be 16 bytes"));
        }
        tracing::info!(address = %node.node_manager_address, "node registered");
        let mut state = self.inner.state.lock();
        state.nodes.retain(|n| n.node_id != node.node_id);
        state.nodes.push(node);
        Ok(Response::new(RegisterNodeReply { cluster_id: 1 }))
    }

    async fn get_all_nodes(&self, _: Request<Empty>) -> Result<Response<GetAllNodesReply>, Status> {
        let nodes = self.inner.state.lock().nodes.clone();
        Ok(Response::new(GetAllNodesReply { nodes }))
    }

    async fn report_resources(
        &self,
        req: Request<ReportResourcesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let mut state = self.inner.state.lock();
        let node = state
            .nodes
            .iter_mut()
            .find(|n| n.node_id == req.node_id)
            .ok_or_else(|| Status::not_found("unknown node"))?;
        node.available = req.available;
        Ok(Response::new(Empty {}))
    }

    async fn next_job_id(&self, _: Request<Empty>) -> Result<Response<NextJobIdReply>, Status> {
        let mut state = self.inner.state.lock();
        state.next_job_id += 1;
        Ok(Response::new(NextJobIdReply {
            job_id: state.next_job_id,
        }))
    }

    async fn register_job(&self, req: Request<JobConfig>) -> Result<Response<Empty>, Status> {
        let job = req.into_inner();
        if job.program.is_empty() {
            return Err(Status::invalid_argument("a job without a program"));
        }
        tracing::info!(job = job.job_id, program = %job.program, "job registered");
        let mut state = self.inner.state.lock();
        state.next_job_id = state.next_job_id.max(job.job_id);
        state.jobs.insert(job.job_id, job);
        Ok(Response::new(Empty {}))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<JobConfig>, Status> {
        let id = req.into_inner().job_id;
        let job = self.inner.state.lock().jobs.get(&id).cloned();
        job.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    async fn register_actor(
        &self,
        req: Request<ActorSpec>,
    ) -> Result<Response<RegisterActorReply>, Status> {
        self.register(req.into_inner()).map(Response::new)
    }

    async fn get_actor_info(
        &self,
        req: Request<GetActorInfoRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        let req = req.into_inner();
        let wait = self.wait_info(&req.actor_id, req.min_incarnation);
        if req.wait_ms == 0 {
            return wait.await.map(Response::new);
        }
        match tokio::time::timeout(std::time::Duration::from_millis(req.wait_ms.into()), wait).await
        {
            Ok(r) => r.map(Response::new),
            Err(_) => self.current_info(&req.actor_id).map(Response::new),
        }
    }

    async fn get_named_actor(
        &self,
        req: Request<GetNamedActorRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        let req = req.into_inner();
        self.named(&req.namespace, &req.name).map(Response::new)
    }

    async fn kill_actor(&self, req: Request<KillActorRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        self.kill_now(&req.actor_id, req.no_restart, &req.cause)
            .await;
        Ok(Response::new(Empty {}))
    }

    async fn report_worker_failure(
        &self,
        req: Request<WorkerFailure>,
    ) -> Result<Response<Empty>, Status> {
        self.worker_failed(&req.into_inner().worker_id);
        Ok(Response::new(Empty {}))
    }
}
