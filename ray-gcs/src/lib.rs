//! The global control store (GCS): node membership, the cluster resource view and job ids.
//!
//! It runs inside the head process (embedded in the driver in local mode). Nothing on the
//! per-task path calls it: node managers report their resources to it, and drivers read the
//! cluster view from it for `ray::nodes()` and `ray::cluster_resources()`.

use parking_lot::Mutex;
use ray_proto::gcs_server::Gcs;
use ray_proto::{
    Empty, GetAllNodesReply, NextJobIdReply, NodeInfo, RegisterNodeReply, RegisterNodeRequest,
    ReportResourcesRequest,
};
use tonic::{Request, Response, Status};

pub use ray_proto::gcs_server::GcsServer;

/// The GCS service state. Cheap to share: one short lock, never held across an await.
#[derive(Default)]
pub struct GcsService {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeInfo>,
    next_job_id: u32,
}

impl GcsService {
    /// An empty GCS: no nodes, job ids starting at 1.
    pub fn new() -> Self {
        Self::default()
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
        let mut state = self.state.lock();
        state.nodes.retain(|n| n.node_id != node.node_id);
        state.nodes.push(node);
        Ok(Response::new(RegisterNodeReply { cluster_id: 1 }))
    }

    async fn get_all_nodes(&self, _: Request<Empty>) -> Result<Response<GetAllNodesReply>, Status> {
        let nodes = self.state.lock().nodes.clone();
        Ok(Response::new(GetAllNodesReply { nodes }))
    }

    async fn report_resources(
        &self,
        req: Request<ReportResourcesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let mut state = self.state.lock();
        let node = state
            .nodes
            .iter_mut()
            .find(|n| n.node_id == req.node_id)
            .ok_or_else(|| Status::not_found("unknown node"))?;
        node.available = req.available;
        Ok(Response::new(Empty {}))
    }

    async fn next_job_id(&self, _: Request<Empty>) -> Result<Response<NextJobIdReply>, Status> {
        let mut state = self.state.lock();
        state.next_job_id += 1;
        Ok(Response::new(NextJobIdReply {
            job_id: state.next_job_id,
        }))
    }
}
