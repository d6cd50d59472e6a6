//! The client traits of the three services ([`GcsApi`], [`NodeManagerApi`],
//! [`CoreWorkerApi`]) and their tonic implementations. Every call between processes goes
//! through one of these traits: a component is handed `Arc<dyn …Api>` and never builds a
//! channel, so a test can hand it a fake, and every tonic call passes the connector's
//! [`Filters`](super::Filters) and its deadline.

use super::filter::{Call, Filters, Service, Verdict};
use super::{RpcError, RpcErrorKind};
use crate::Clock;
use ray_proto::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Deadline of a call that does bounded work on the callee (a table update, a store
/// operation, a lease return).
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(30);

/// A stream of replies from a server-streaming call.
pub type ReplyStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, RpcError>> + Send>>;

/// Where a tonic client calls, and the filters its calls pass.
#[derive(Clone)]
pub(crate) struct Link {
    pub to: Arc<str>,
    pub from: Arc<str>,
    pub filters: Option<Arc<Filters>>,
    pub clock: Clock,
}

impl Link {
    /// Opens a server stream with [`Link::unary`] (the filters and the deadline apply to
    /// opening it), its items' errors made [`RpcError`]s naming `method`.
    pub async fn server_stream<T: Send + 'static>(
        &self,
        service: Service,
        method: &'static str,
        call: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
    ) -> Result<ReplyStream<T>, RpcError> {
        use tokio_stream::StreamExt;
        let stream = self
            .unary(service, method, Some(CONTROL_DEADLINE), call)
            .await?;
        let to = self.to.clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map_err(|s| RpcError::from_status(&s, method, &to))
        })))
    }

    /// Runs one call: the filters' verdict, then `call` within `deadline` (`None`: a long
    /// poll, bounded by the channel's keepalive instead).
    pub async fn unary<T>(
        &self,
        service: Service,
        method: &'static str,
        deadline: Option<Duration>,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, RpcError> {
        let verdict = self.verdict(service, method);
        match &verdict {
            Verdict::DropRequest => return Err(self.dropped(method, "request")),
            Verdict::Fail(kind, message) => {
                return Err(RpcError::new(*kind, method, &self.to, message.clone()))
            }
            Verdict::Delay(d) => self.clock.sleep(*d).await,
            Verdict::Pass | Verdict::DropResponse => {}
        }
        let result = match deadline {
            Some(d) => match self.clock.timeout(d, call).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(RpcError::new(
                        RpcErrorKind::DeadlineExceeded,
                        method,
                        &self.to,
                        format!("no answer within {d:?}"),
                    ))
                }
            },
            None => call.await,
        };
        let reply = result.map_err(|s| RpcError::from_status(&s, method, &self.to))?;
        if verdict == Verdict::DropResponse {
            return Err(self.dropped(method, "response"));
        }
        Ok(reply.into_inner())
    }

    fn verdict(&self, service: Service, method: &'static str) -> Verdict {
        match &self.filters {
            None => Verdict::Pass,
            Some(f) => f.verdict(&Call {
                service,
                method,
                from: &self.from,
                to: &self.to,
            }),
        }
    }

    fn dropped(&self, method: &'static str, what: &str) -> RpcError {
        RpcError::new(
            RpcErrorKind::Unreachable,
            method,
            &self.to,
            format!("{what} dropped by a test filter"),
        )
    }
}

/// Declares a client trait and its tonic implementation from one list of unary methods:
/// `fn rust_name(Request) -> Reply, "ProtoName", deadline;`.
macro_rules! client_api {
    (
        $(#[$tmeta:meta])*
        pub trait $api:ident, struct $tonic:ident($client:ty), $service:expr;
        $(
            $(#[$mmeta:meta])*
            fn $method:ident($req:ty) -> $reply:ty, $name:literal, $deadline:expr;
        )*
        $(streams { $($extra:tt)* } impl { $($extra_impl:tt)* })?
    ) => {
        $(#[$tmeta])*
        #[async_trait::async_trait]
        pub trait $api: Send + Sync + 'static {
            $(
                $(#[$mmeta])*
                async fn $method(&self, request: $req) -> Result<$reply, RpcError>;
            )*
            $($($extra)*)?
        }

        #[doc = concat!("[`", stringify!($api), "`] over a tonic channel.")]
        #[derive(Clone)]
        pub struct $tonic {
            client: $client,
            link: Link,
        }

        impl $tonic {
            pub(crate) fn new(client: $client, link: Link) -> Self {
                $tonic { client, link }
            }
        }

        #[async_trait::async_trait]
        impl $api for $tonic {
            $(
                async fn $method(&self, request: $req) -> Result<$reply, RpcError> {
                    let mut client = self.client.clone();
                    self.link
                        .unary($service, $name, $deadline, async move {
                            client.$method(request).await
                        })
                        .await
                }
            )*
            $($($extra_impl)*)?
        }
    };
}

type GcsClient = gcs_client::GcsClient<super::AuthedChannel>;
type NodeManagerClient = node_manager_client::NodeManagerClient<super::AuthedChannel>;
type CoreWorkerClient = core_worker_client::CoreWorkerClient<super::AuthedChannel>;

client_api! {
    /// The global control store, as its clients see it.
    pub trait GcsApi, struct TonicGcs(GcsClient), Service::Gcs;
    /// Adds a node to the cluster.
    fn register_node(RegisterNodeRequest) -> RegisterNodeReply, "RegisterNode", Some(CONTROL_DEADLINE);
    /// Registers (and starts placing) an actor; answers at once.
    fn register_actor(ActorSpec) -> RegisterActorReply, "RegisterActor", Some(CONTROL_DEADLINE);
    /// Long poll: answers when the actor is alive at the incarnation asked, dead, or after
    /// the request's `wait_ms`.
    fn get_actor_info(GetActorInfoRequest) -> ActorInfo, "GetActorInfo", None;
    /// Looks a named actor up.
    fn get_named_actor(GetNamedActorRequest) -> ActorInfo, "GetNamedActor", Some(CONTROL_DEADLINE);
    /// Kills an actor (and maybe lets it restart).
    fn kill_actor(KillActorRequest) -> Empty, "KillActor", Some(CONTROL_DEADLINE);
    /// A node manager saw a worker die.
    fn report_worker_failure(WorkerFailure) -> Empty, "ReportWorkerFailure", Some(CONTROL_DEADLINE);
    /// Every node the GCS knows.
    fn get_all_nodes(Empty) -> GetAllNodesReply, "GetAllNodes", Some(CONTROL_DEADLINE);
    /// Long poll: the cluster's resource view once newer than the version known (or after
    /// the request's `wait_ms`).
    fn get_cluster_view(ClusterViewRequest) -> ClusterViewReply, "GetClusterView", None;
    /// A node's available resources changed.
    fn report_resources(ReportResourcesRequest) -> Empty, "ReportResources", Some(CONTROL_DEADLINE);
    /// A fresh job id.
    fn next_job_id(Empty) -> NextJobIdReply, "NextJobId", Some(CONTROL_DEADLINE);
    /// Records a job: what its workers run.
    fn register_job(JobConfig) -> Empty, "RegisterJob", Some(CONTROL_DEADLINE);
    /// A job registered before (`NotFound` otherwise).
    fn get_job(GetJobRequest) -> JobConfig, "GetJob", Some(CONTROL_DEADLINE);
    /// The job's driver left: its workers stop on every node.
    fn finish_job(FinishJobRequest) -> Empty, "FinishJob", Some(CONTROL_DEADLINE);
    /// Whether the GCS holds the binary of this hash.
    fn has_binary(BinaryRequest) -> HasBinaryReply, "HasBinary", Some(CONTROL_DEADLINE);
    /// Registers a placement group (placed and reserved in the background); answers at once.
    fn create_placement_group(PlacementGroupSpec) -> Empty, "CreatePlacementGroup", Some(CONTROL_DEADLINE);
    /// Long poll: answers when the group is created or removed, or after the request's
    /// `wait_ms`.
    fn get_placement_group(GetPlacementGroupRequest) -> PlacementGroupInfo, "GetPlacementGroup", None;
    /// Looks a named placement group up.
    fn get_named_placement_group(GetNamedPlacementGroupRequest) -> PlacementGroupInfo, "GetNamedPlacementGroup", Some(CONTROL_DEADLINE);
    /// Removes a placement group: its bundles are given back, what runs in them is killed.
    fn remove_placement_group(RemovePlacementGroupRequest) -> Empty, "RemovePlacementGroup", Some(CONTROL_DEADLINE);
    /// Every placement group the GCS knows (removed ones too).
    fn list_placement_groups(Empty) -> PlacementGroupTable, "ListPlacementGroups", Some(CONTROL_DEADLINE);
    /// A batch of one process's task events (the state API's task list).
    fn add_task_events(AddTaskEventsRequest) -> Empty, "AddTaskEvents", Some(CONTROL_DEADLINE);
    /// Tasks, as their events left them, filtered.
    fn list_tasks(ListRequest) -> ListTasksReply, "ListTasks", Some(CONTROL_DEADLINE);
    /// Actors, filtered.
    fn list_actors(ListRequest) -> ListActorsReply, "ListActors", Some(CONTROL_DEADLINE);
    /// Jobs, filtered.
    fn list_jobs(ListRequest) -> ListJobsReply, "ListJobs", Some(CONTROL_DEADLINE);
    /// A driver says where its core worker listens.
    fn set_driver_address(DriverAddress) -> Empty, "SetDriverAddress", Some(CONTROL_DEADLINE);
    /// A node's batch of its workers' output lines.
    fn publish_logs(LogBatch) -> Empty, "PublishLogs", Some(CONTROL_DEADLINE);
    streams {
        /// Opens the stream of a job's output lines (a driver's, while it runs).
        async fn subscribe_logs(
            &self,
            request: SubscribeLogsRequest,
        ) -> Result<ReplyStream<LogBatch>, RpcError>;
        /// Uploads a binary, its chunks in order (the first carries the hash and the size).
        async fn upload_binary(&self, chunks: Vec<BinaryChunk>) -> Result<Empty, RpcError>;
        /// Opens the stream of a binary's chunks.
        async fn download_binary(
            &self,
            request: BinaryRequest,
        ) -> Result<ReplyStream<BinaryChunk>, RpcError>;
    } impl {
        async fn upload_binary(&self, chunks: Vec<BinaryChunk>) -> Result<Empty, RpcError> {
            let mut client = self.client.clone();
            // The whole upload's deadline grows with its size (at least 8 MiB/s).
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            let deadline = CONTROL_DEADLINE + Duration::from_secs((bytes >> 23) as u64);
            self.link
                .unary(Service::Gcs, "UploadBinary", Some(deadline), async move {
                    client.upload_binary(tokio_stream::iter(chunks)).await
                })
                .await
        }
        async fn subscribe_logs(
            &self,
            request: SubscribeLogsRequest,
        ) -> Result<ReplyStream<LogBatch>, RpcError> {
            let mut client = self.client.clone();
            self.link
                .server_stream(Service::Gcs, "SubscribeLogs", async move {
                    client.subscribe_logs(request).await
                })
                .await
        }
        async fn download_binary(
            &self,
            request: BinaryRequest,
        ) -> Result<ReplyStream<BinaryChunk>, RpcError> {
            let mut client = self.client.clone();
            self.link
                .server_stream(Service::Gcs, "DownloadBinary", async move {
                    client.download_binary(request).await
                })
                .await
        }
    }
}

client_api! {
    /// A node manager, as core workers and the GCS see it.
    pub trait NodeManagerApi, struct TonicNodeManager(NodeManagerClient), Service::NodeManager;
    /// A worker process the node started says where it listens.
    fn register_worker(RegisterWorkerRequest) -> RegisterWorkerReply, "RegisterWorker", Some(CONTROL_DEADLINE);
    /// Long poll: answers when a worker is leased, or the request cannot be met (it may wait
    /// for resources as long as they are busy).
    fn request_worker_lease(LeaseRequest) -> LeaseReply, "RequestWorkerLease", None;
    /// Gives a leased worker back.
    fn return_worker(ReturnWorkerRequest) -> Empty, "ReturnWorker", Some(CONTROL_DEADLINE);
    /// The calling worker blocked in `get` (lends its CPU) or resumed.
    fn notify_blocked(BlockedRequest) -> Empty, "NotifyBlocked", Some(CONTROL_DEADLINE);
    /// Allocates an object in the node's store.
    fn create_object(CreateObjectRequest) -> CreateObjectReply, "CreateObject", Some(CONTROL_DEADLINE);
    /// Seals an object created by the caller.
    fn seal_object(ObjectRequest) -> Empty, "SealObject", Some(CONTROL_DEADLINE);
    /// Drops an unsealed object.
    fn abort_object(ObjectRequest) -> Empty, "AbortObject", Some(CONTROL_DEADLINE);
    /// Where a sealed object is in the store, pinning it for the caller.
    fn get_object(ObjectRequest) -> GetObjectReply, "GetObject", Some(CONTROL_DEADLINE);
    /// Unpins an object the caller read.
    fn release_object(ObjectRequest) -> Empty, "ReleaseObject", Some(CONTROL_DEADLINE);
    /// Deletes objects (once their readers release them).
    fn delete_objects(DeleteObjectsRequest) -> Empty, "DeleteObjects", Some(CONTROL_DEADLINE);
    /// The node's resources and counters.
    fn get_node_resources(Empty) -> NodeResourcesReply, "GetNodeResources", Some(CONTROL_DEADLINE);
    /// Kills the job's workers here and forgets the job.
    fn finish_job(FinishJobRequest) -> Empty, "FinishJob", Some(CONTROL_DEADLINE);
    /// Watches a driver of this machine: its job ends with its process.
    fn watch_driver(WatchDriverRequest) -> Empty, "WatchDriver", Some(CONTROL_DEADLINE);
    /// Pulls another node's object into this node's store (if not here already) and pins
    /// it for the caller: as long as the transfer takes (the node manager bounds it).
    fn fetch_object(FetchObjectRequest) -> GetObjectReply, "FetchObject", None;
    /// Reserves a placement group's bundles on this node, all of them or none.
    fn reserve_bundles(ReserveBundlesRequest) -> ReserveBundlesReply, "ReserveBundles", Some(CONTROL_DEADLINE);
    /// Gives a placement group's bundles here back, killing the workers leased in them.
    fn release_bundles(ReleaseBundlesRequest) -> Empty, "ReleaseBundles", Some(CONTROL_DEADLINE);
    /// The node's worker processes.
    fn list_workers(Empty) -> ListWorkersReply, "ListWorkers", Some(CONTROL_DEADLINE);
    streams {
        /// Opens the stream of an object's chunks (another node manager pulling it).
        async fn pull_object(
            &self,
            request: PullObjectRequest,
        ) -> Result<ReplyStream<ObjectChunk>, RpcError>;
        /// Puts an object into the node's store from its chunks, in order (a process that
        /// does not map the store); sealed when every byte arrived.
        async fn put_object(&self, chunks: Vec<PutChunk>) -> Result<GetObjectReply, RpcError>;
        /// Opens the stream a driver on another machine holds while it runs.
        async fn hold_driver(
            &self,
            request: WatchDriverRequest,
        ) -> Result<ReplyStream<Empty>, RpcError>;
    } impl {
        async fn hold_driver(
            &self,
            request: WatchDriverRequest,
        ) -> Result<ReplyStream<Empty>, RpcError> {
            let mut client = self.client.clone();
            self.link
                .server_stream(Service::NodeManager, "HoldDriver", async move {
                    client.hold_driver(request).await
                })
                .await
        }
        async fn put_object(&self, chunks: Vec<PutChunk>) -> Result<GetObjectReply, RpcError> {
            let mut client = self.client.clone();
            // The deadline grows with the size (at least 8 MiB/s), as an upload's.
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            let deadline = CONTROL_DEADLINE + Duration::from_secs((bytes >> 23) as u64);
            self.link
                .unary(Service::NodeManager, "PutObject", Some(deadline), async move {
                    client.put_object(tokio_stream::iter(chunks)).await
                })
                .await
        }
        async fn pull_object(
            &self,
            request: PullObjectRequest,
        ) -> Result<ReplyStream<ObjectChunk>, RpcError> {
            let mut client = self.client.clone();
            self.link
                .server_stream(Service::NodeManager, "PullObject", async move {
                    client.pull_object(request).await
                })
                .await
        }
    }
}

client_api! {
    /// Another process's core worker: the owner of objects, the host of an actor.
    pub trait CoreWorkerApi, struct TonicCoreWorker(CoreWorkerClient), Service::CoreWorker;
    /// Runs an actor's constructor on this (leased) worker: as long as the constructor takes.
    fn create_actor(CreateActorRequest) -> CreateActorReply, "CreateActor", None;
    /// Releases of a borrower, batched.
    fn remove_borrower(RemoveBorrowerRequest) -> Empty, "RemoveBorrower", Some(CONTROL_DEADLINE);
    /// A borrower lent an object on.
    fn add_borrower(AddBorrowerRequest) -> Empty, "AddBorrower", Some(CONTROL_DEADLINE);
    /// The owner cancels a task the worker runs or has queued.
    fn cancel_task(CancelTaskRequest) -> Empty, "CancelTask", Some(CONTROL_DEADLINE);
    /// Ends one actor the worker hosts beside others (a shared host).
    fn destroy_actor(DestroyActorRequest) -> Empty, "DestroyActor", Some(CONTROL_DEADLINE);
    /// The objects the process holds references to.
    fn list_objects(ListObjectsRequest) -> ListObjectsReply, "ListObjects", Some(CONTROL_DEADLINE);
    /// What the owner knows of a pending task of its own.
    fn explain_task(ExplainTaskRequest) -> TaskExplanation, "ExplainTask", Some(CONTROL_DEADLINE);
    /// Answers at once (is the process alive?).
    fn ping(Empty) -> Empty, "Ping", Some(CONTROL_DEADLINE);
    streams {
        /// Opens the stream of the objects' values, sent as each becomes ready (the owner
        /// also sends an empty message every few seconds while it waits).
        async fn get_objects(
            &self,
            request: GetObjectsRequest,
        ) -> Result<ReplyStream<GetObjectsReply>, RpcError>;
    } impl {
        async fn get_objects(
            &self,
            request: GetObjectsRequest,
        ) -> Result<ReplyStream<GetObjectsReply>, RpcError> {
            let mut client = self.client.clone();
            self.link
                .server_stream(Service::CoreWorker, "GetObjects", async move {
                    client.get_objects(request).await
                })
                .await
        }
    }
}
