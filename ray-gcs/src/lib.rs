//! The global control store (GCS): node membership, the cluster resource view, jobs (ids and
//! what their workers run), the actor directory (names, states, restarts), and the relay of
//! workers' output from the nodes to their drivers.
//!
//! It runs inside the head process (embedded in the driver in local mode). Nothing on the
//! per-task path calls it: node managers report to it, drivers read the cluster view from it,
//! and callers ask it where an actor lives only when they first call it or after it restarts.

mod actors;
mod binaries;
mod error;
mod health;
mod logs;
mod placement_groups;
mod task_events;

use parking_lot::Mutex;
use ray_common::rpc::Connect;
use ray_proto::gcs_server::Gcs;
use ray_proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use error::GcsError;
pub use health::HealthConfig;
pub use ray_proto::gcs_server::GcsServer;

/// What a cluster head's GCS does beyond an embedded one's.
#[derive(Clone, Debug, Default)]
pub struct GcsOptions {
    /// How it checks its nodes' health (`None`: it does not).
    pub health: Option<HealthConfig>,
    /// Where it keeps jobs' binaries (`None`: it keeps none).
    pub binaries: Option<std::path::PathBuf>,
    /// Whether an actor no alive node can hold waits for one that can (a cluster, where
    /// nodes join) or dies unschedulable at once (a runtime of one machine).
    pub infeasible_waits: bool,
}

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
    groups: placement_groups::Groups,
    /// The state API's tasks.
    tasks: task_events::TaskTable,
    /// Woken when the cluster view's version moves.
    view_changed: tokio::sync::Notify,
    /// How nodes are checked (`None`: they are not).
    health: Option<HealthConfig>,
    /// Actors no node can hold wait for one (else they die unschedulable).
    infeasible_waits: bool,
    /// Where jobs' binaries are kept (`None`: this GCS keeps none).
    binaries: Option<std::path::PathBuf>,
    /// Workers' output, from the nodes to the drivers.
    logs: logs::LogChannel,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeInfo>,
    /// The nodes as the scheduler sees them, `NodeId(i)` for `nodes[i]`.
    view: ray_scheduler::ClusterView,
    scheduler: ray_scheduler::Scheduler,
    next_job_id: u32,
    jobs: std::collections::HashMap<u32, JobConfig>,
    /// Every job registered, running or finished, as the state API lists them (the oldest
    /// finished ones go past [`JOBS_KEPT`]).
    job_rows: std::collections::BTreeMap<u32, JobRow>,
    /// The latest resource report applied, per node index: an older one arriving late is
    /// ignored.
    report_versions: std::collections::HashMap<usize, u64>,
    /// Moves with every change of `nodes` node managers follow (membership, liveness,
    /// resources).
    view_version: u64,
}

impl GcsService {
    /// Records that the cluster view changed, waking the node managers' long polls.
    fn view_moved(&self, state: &mut State) {
        state.view_version += 1;
        self.inner.view_changed.notify_waiters();
    }

    /// An empty GCS, calling node managers and workers through clients `connect` opens. It
    /// does not check its nodes' health (an embedded head's node is its own process).
    pub fn new(connect: Arc<dyn Connect>) -> Self {
        Self::build(connect, GcsOptions::default())
    }

    /// An empty GCS of a cluster's head, as `options` say.
    pub fn with_options(connect: Arc<dyn Connect>, options: GcsOptions) -> Self {
        Self::build(connect, options)
    }

    fn build(connect: Arc<dyn Connect>, options: GcsOptions) -> Self {
        GcsService {
            inner: Arc::new(Inner {
                connect,
                state: Mutex::new(State::default()),
                actors: actors::Actors::default(),
                groups: placement_groups::Groups::default(),
                tasks: task_events::TaskTable::default(),
                view_changed: tokio::sync::Notify::new(),
                health: options.health,
                binaries: options.binaries,
                infeasible_waits: options.infeasible_waits,
                logs: Default::default(),
            }),
        }
    }

    /// The node manager to lease a worker for an actor of `shape` from, as the scheduler's
    /// default policy picks it; a node busy now but able to hold it if none is free (its node
    /// manager queues the lease). `Err` with the reason if no alive node can hold it, or if
    /// its strategy rules every node out.
    fn place(
        &self,
        shape: &ray_scheduler::ResourceSet,
        strategy: Option<&Strategy>,
    ) -> Result<Option<String>, Refusal> {
        use ray_scheduler::SchedulingStrategy as S;
        let mut state = self.inner.state.lock();
        let State {
            nodes,
            view,
            scheduler,
            ..
        } = &mut *state;
        let strategy = match strategy.and_then(|s| s.kind.as_ref()) {
            None => S::Default,
            Some(strategy::Kind::Spread(_)) => S::Spread,
            Some(strategy::Kind::NodeAffinity(a)) => {
                match nodes.iter().position(|n| n.node_id == a.node_id) {
                    Some(i) => S::NodeAffinity {
                        node: ray_scheduler::NodeId(i as u64),
                        soft: a.soft,
                    },
                    None if a.soft => S::Default,
                    None => {
                        return Err(Refusal::Unschedulable(format!(
                            "hard affinity to node {}, which is not in the cluster",
                            ray_common::ids::hex(&a.node_id)
                        )))
                    }
                }
            }
        };
        let req = ray_scheduler::SchedulingRequest::new(shape.clone()).with_strategy(strategy);
        let node = match scheduler.schedule(view, &req, &mut rand::rng()) {
            Ok(node) => node,
            Err(pending) if pending.is_unschedulable() => {
                return Err(Refusal::Unschedulable(pending.to_string()))
            }
            Err(pending) if pending.is_infeasible() => {
                return Err(Refusal::Infeasible(pending.to_string()))
            }
            Err(pending) => match pending.nodes.first().filter(|_| pending.feasible_nodes > 0) {
                Some(busy) => busy.node,
                None => return Ok(None),
            },
        };
        Ok(nodes
            .get(node.0 as usize)
            .filter(|n| n.alive)
            .map(|n| n.node_manager_address.clone()))
    }
}

/// Why an actor cannot be placed.
pub(crate) enum Refusal {
    /// No alive node can hold its shape (one may join).
    Infeasible(String),
    /// Its strategy rules out every node (hard affinity to a dead or unknown node).
    Unschedulable(String),
}

impl GcsService {
    /// Marks job `job_id`'s actors dead (detached ones excepted) and has every alive node
    /// stop the job's workers; returns once every node has answered or its deadline passed.
    pub(crate) async fn finish(&self, job_id: u32) {
        let keep_workers: Vec<tonic::codegen::Bytes> = self
            .job_finished(job_id)
            .into_iter()
            .map(Into::into)
            .collect();
        let nodes: Vec<String> = {
            let mut state = self.inner.state.lock();
            state.jobs.remove(&job_id);
            if let Some(row) = state.job_rows.get_mut(&job_id) {
                row.status = "FINISHED".into();
                row.end_us = ray_common::clock::unix_micros();
            }
            self.inner
                .tasks
                .fail_unfinished(job_id, ray_common::clock::unix_micros());
            let finished = state.job_rows.values().filter(|r| r.end_us != 0).count();
            if finished > JOBS_KEPT {
                let oldest = state
                    .job_rows
                    .values()
                    .find(|r| r.end_us != 0)
                    .map(|r| r.job_id);
                if let Some(old) = oldest {
                    state.job_rows.remove(&old);
                    // Its tasks go with it: the table's bound is per job kept.
                    self.inner.tasks.forget_job(old);
                }
            }
            state
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.node_manager_address.clone())
                .collect()
        };
        tracing::info!(job = job_id, "job finished");
        self.remove_groups_of_job(job_id);
        let mut calls = tokio::task::JoinSet::new();
        for address in nodes {
            let Ok(nm) = self.node_manager(&address) else {
                continue;
            };
            let req = FinishJobRequest {
                job_id,
                keep_workers: keep_workers.clone(),
            };
            calls.spawn(async move {
                if let Err(e) = nm.finish_job(req).await {
                    tracing::warn!(node = %address, error = %e, "a node did not stop a finished job's workers");
                }
            });
        }
        while calls.join_next().await.is_some() {}
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
        let total = ray_common::resources::to_resource_set(node.total.clone())
            .map_err(|e| Status::invalid_argument(format!("node resources: {e}")))?;
        tracing::info!(address = %node.node_manager_address, "node registered");
        let mut state = self.inner.state.lock();
        let (index, fresh) = match state.nodes.iter().position(|n| n.node_id == node.node_id) {
            Some(i) if !state.nodes[i].alive => {
                return Err(Status::failed_precondition(format!(
                    "node {} was declared dead ({}); a node that restarts joins with a new id",
                    ray_common::ids::hex(&node.node_id),
                    state.nodes[i].death_reason
                )))
            }
            Some(i) => {
                state.nodes[i] = node;
                // Registered anew: its reports count from the start again.
                state.report_versions.remove(&i);
                (i, false)
            }
            None => {
                state.nodes.push(node);
                (state.nodes.len() - 1, true)
            }
        };
        let id = ray_scheduler::NodeId(index as u64);
        let view = &mut state.view;
        let known = view.node(id).is_some();
        let updated = if known {
            view.set_total(id, total).map(|_| view.set_alive(id, true))
        } else {
            view.add_node(id, total).map(|_| true)
        };
        updated.map_err(|e| Status::invalid_argument(format!("node resources: {e}")))?;
        self.view_moved(&mut state);
        let node_id = state.nodes[index].node_id.to_vec();
        drop(state);
        if fresh {
            self.watch_health(node_id);
        }
        Ok(Response::new(RegisterNodeReply { cluster_id: 1 }))
    }

    async fn get_all_nodes(&self, _: Request<Empty>) -> Result<Response<GetAllNodesReply>, Status> {
        let nodes = self.inner.state.lock().nodes.clone();
        Ok(Response::new(GetAllNodesReply {
            nodes,
            actor_demands: self.actor_demands(),
        }))
    }

    async fn get_cluster_view(
        &self,
        req: Request<ClusterViewRequest>,
    ) -> Result<Response<ClusterViewReply>, Status> {
        let req = req.into_inner();
        let wait = std::time::Duration::from_millis(req.wait_ms.into());
        let deadline = self.inner.connect.clock().now() + wait;
        loop {
            let changed = self.inner.view_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.inner.state.lock();
                if state.view_version > req.known_version
                    || self.inner.connect.clock().now() >= deadline
                {
                    return Ok(Response::new(ClusterViewReply {
                        version: state.view_version,
                        nodes: state.nodes.clone(),
                    }));
                }
            }
            let _ = self
                .inner
                .connect
                .clock()
                .timeout_at(deadline, changed)
                .await;
        }
    }

    async fn report_resources(
        &self,
        req: Request<ReportResourcesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let mut state = self.inner.state.lock();
        let index = state
            .nodes
            .iter()
            .position(|n| n.node_id == req.node_id)
            .ok_or_else(|| Status::not_found("unknown node"))?;
        let latest = state.report_versions.entry(index).or_default();
        if req.version != 0 && req.version <= *latest {
            return Ok(Response::new(Empty {}));
        }
        *latest = req.version;
        if let Ok(available) = ray_common::resources::to_resource_set(req.available.clone()) {
            let _ = state
                .view
                .set_available(ray_scheduler::NodeId(index as u64), available);
        }
        state.nodes[index].demands = req.demands;
        if state.nodes[index].available != req.available {
            state.nodes[index].available = req.available;
            self.view_moved(&mut state);
        }
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
        state.job_rows.insert(
            job.job_id,
            JobRow {
                job_id: job.job_id,
                status: "RUNNING".into(),
                entrypoint: job.program.clone(),
                namespace: job.namespace.clone(),
                driver_pid: job.driver_pid,
                driver_node: job.driver_node.clone(),
                start_us: ray_common::clock::unix_micros(),
                end_us: 0,
                driver_address: String::new(),
                driver_worker_id: Default::default(),
            },
        );
        state.jobs.insert(job.job_id, job);
        Ok(Response::new(Empty {}))
    }

    async fn set_driver_address(
        &self,
        req: Request<DriverAddress>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let mut state = self.inner.state.lock();
        let row = state
            .job_rows
            .get_mut(&req.job_id)
            .ok_or_else(|| Status::not_found(format!("no job {}", req.job_id)))?;
        row.driver_address = req.address;
        row.driver_worker_id = req.worker_id;
        Ok(Response::new(Empty {}))
    }

    async fn publish_logs(&self, req: Request<LogBatch>) -> Result<Response<Empty>, Status> {
        self.inner.logs.publish(req.into_inner());
        Ok(Response::new(Empty {}))
    }

    type SubscribeLogsStream = tokio_stream::wrappers::ReceiverStream<Result<LogBatch, Status>>;

    async fn subscribe_logs(
        &self,
        req: Request<SubscribeLogsRequest>,
    ) -> Result<Response<Self::SubscribeLogsStream>, Status> {
        let rx = self.inner.logs.subscribe(req.into_inner());
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<JobConfig>, Status> {
        let id = req.into_inner().job_id;
        let job = self.inner.state.lock().jobs.get(&id).cloned();
        job.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    /// Marks the job's actors dead (detached ones excepted) and has every alive node stop
    /// the job's workers. Answers once every node has answered or its deadline passed.
    async fn finish_job(&self, req: Request<FinishJobRequest>) -> Result<Response<Empty>, Status> {
        self.finish(req.into_inner().job_id).await;
        Ok(Response::new(Empty {}))
    }

    async fn has_binary(
        &self,
        req: Request<BinaryRequest>,
    ) -> Result<Response<HasBinaryReply>, Status> {
        GcsService::has_binary(self, req.into_inner()).map(Response::new)
    }

    async fn upload_binary(
        &self,
        req: Request<tonic::Streaming<BinaryChunk>>,
    ) -> Result<Response<Empty>, Status> {
        GcsService::upload_binary(self, req.into_inner())
            .await
            .map(Response::new)
    }

    type DownloadBinaryStream = tokio_stream::wrappers::ReceiverStream<Result<BinaryChunk, Status>>;

    async fn download_binary(
        &self,
        req: Request<BinaryRequest>,
    ) -> Result<Response<Self::DownloadBinaryStream>, Status> {
        GcsService::download_binary(self, req.into_inner())
            .map(|rx| Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn register_actor(
        &self,
        req: Request<ActorSpec>,
    ) -> Result<Response<RegisterActorReply>, Status> {
        self.register(req.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_actor_info(
        &self,
        req: Request<GetActorInfoRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        let req = req.into_inner();
        let wait = self.wait_info(&req.actor_id, req.min_incarnation);
        if req.wait_ms == 0 {
            return wait.await.map(Response::new).map_err(Status::from);
        }
        let clock = self.inner.connect.clock();
        match clock
            .timeout(std::time::Duration::from_millis(req.wait_ms.into()), wait)
            .await
        {
            Ok(r) => r.map(Response::new).map_err(Status::from),
            Err(_) => self
                .current_info(&req.actor_id)
                .map(Response::new)
                .map_err(Status::from),
        }
    }

    async fn get_named_actor(
        &self,
        req: Request<GetNamedActorRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        let req = req.into_inner();
        self.named(&req.namespace, &req.name)
            .map(Response::new)
            .map_err(Status::from)
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

    async fn create_placement_group(
        &self,
        req: Request<PlacementGroupSpec>,
    ) -> Result<Response<Empty>, Status> {
        self.create_group(req.into_inner())
            .map(|()| Response::new(Empty {}))
            .map_err(Status::from)
    }

    async fn get_placement_group(
        &self,
        req: Request<GetPlacementGroupRequest>,
    ) -> Result<Response<PlacementGroupInfo>, Status> {
        let req = req.into_inner();
        let id = ray_common::PlacementGroupId::from_wire(&req.group_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.wait_group(id, std::time::Duration::from_millis(req.wait_ms.into()))
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn get_named_placement_group(
        &self,
        req: Request<GetNamedPlacementGroupRequest>,
    ) -> Result<Response<PlacementGroupInfo>, Status> {
        let req = req.into_inner();
        self.named_group(&req.namespace, &req.name)
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn remove_placement_group(
        &self,
        req: Request<RemovePlacementGroupRequest>,
    ) -> Result<Response<Empty>, Status> {
        let id = ray_common::PlacementGroupId::from_wire(&req.into_inner().group_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.remove_group(id)
            .map(|()| Response::new(Empty {}))
            .map_err(Status::from)
    }

    async fn list_placement_groups(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<PlacementGroupTable>, Status> {
        Ok(Response::new(self.group_table()))
    }

    async fn add_task_events(
        &self,
        req: Request<AddTaskEventsRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.inner
            .tasks
            .add(req.into_inner())
            .map_err(state_status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_tasks(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ListTasksReply>, Status> {
        self.inner
            .tasks
            .list(&req.into_inner())
            .map(Response::new)
            .map_err(state_status)
    }

    async fn list_actors(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ListActorsReply>, Status> {
        let req = req.into_inner();
        let filters = ray_state::filter::from_request::<ActorRow>(&req).map_err(state_status)?;
        let (actors, total) = self.actor_rows(&filters, ray_state::filter::limit_of(&req));
        Ok(Response::new(ListActorsReply { actors, total }))
    }

    async fn list_jobs(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        let req = req.into_inner();
        let filters = ray_state::filter::from_request::<JobRow>(&req).map_err(state_status)?;
        let limit = ray_state::filter::limit_of(&req);
        let state = self.inner.state.lock();
        let matching: Vec<&JobRow> = state
            .job_rows
            .values()
            .filter(|r| ray_state::filter::matches(*r, &filters))
            .collect();
        Ok(Response::new(ListJobsReply {
            total: matching.len() as u64,
            jobs: matching.into_iter().take(limit).cloned().collect(),
        }))
    }
}

/// Finished jobs the state API keeps listing (the oldest go first).
const JOBS_KEPT: usize = 1000;

/// A state query the GCS refuses: a bad filter is the caller's mistake.
fn state_status(e: ray_state::StateError) -> Status {
    match e {
        ray_state::StateError::Rpc(e) => Status::internal(e.to_string()),
        other => Status::invalid_argument(other.to_string()),
    }
}
