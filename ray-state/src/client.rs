//! [`StateClient`]: lists tasks, actors, jobs and nodes from the GCS, filtered there (and
//! the tasks' timeline), and workers and objects from every node and process.

use crate::explain::{self, Explanation};
use crate::filter::{self, Fields, Filter};
use crate::rows::{Actor, Job, Node, Object, Task, Worker};
use crate::summary::{summarize_tasks, TaskSummary};
use crate::timeline::{chrome_trace, TraceEvent, TIMELINE_TASKS};
use crate::StateError;
use futures_util::stream::{self, StreamExt};
use ray_common::rpc::{Connect, GcsApi};
use std::sync::Arc;
use std::time::Duration;

/// Which rows to list: filters (all must pass) and how many at most.
///
/// ```
/// use ray_state::ListOptions;
/// let opts = ListOptions::new().filter("state=RUNNING").unwrap().limit(10);
/// assert_eq!(opts.filters.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub filters: Vec<Filter>,
    /// `None`: 100 (Ray's default).
    pub limit: Option<u32>,
}

impl ListOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a filter written `key=value` or `key!=value`.
    pub fn filter(mut self, text: &str) -> Result<Self, StateError> {
        self.filters.push(Filter::parse(text)?);
        Ok(self)
    }

    /// Lists at most `n` rows.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    fn request(&self, summarize: bool) -> ray_proto::ListRequest {
        ray_proto::ListRequest {
            filters: self.filters.iter().map(Filter::to_wire).collect(),
            limit: self.limit.unwrap_or(0),
            summarize,
        }
    }
}

/// Rows, and how many matched in all (more than listed when the limit cut them).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listing<R> {
    pub rows: Vec<R>,
    pub total: u64,
    /// Task events let go of (a full buffer, or past the GCS's bound per job): the list may
    /// miss tasks. 0 for other rows.
    pub dropped: u64,
    /// Nodes or processes asked that did not answer in time (objects and workers are asked
    /// of every node and process): their rows are missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

/// How long a listing waits for one node or process it fans out to (objects take two rounds,
/// nodes then processes: both fit in the command line's 10 s).
pub const FAN_OUT_DEADLINE: Duration = Duration::from_secs(3);

/// Most nodes or processes asked at once.
const ASKS_AT_ONCE: usize = 64;

/// Arguments whose making task `explain` looks up, at most.
const MAKERS_NAMED: usize = 20;

/// The object filters that name the process holding the reference: processes they rule out
/// are not asked at all.
const PROCESS_KEYS: [&str; 4] = ["worker_type", "worker_id", "pid", "node_id"];

/// Lists the cluster's state from its GCS (and, for workers and objects, from every node
/// and process).
#[derive(Clone)]
pub struct StateClient {
    gcs: Arc<dyn GcsApi>,
    connect: Option<Arc<dyn Connect>>,
}

impl StateClient {
    /// A client asking `gcs` (workers and objects need [`StateClient::with_fan_out`]).
    pub fn new(gcs: Arc<dyn GcsApi>) -> Self {
        StateClient { gcs, connect: None }
    }

    /// A client asking `gcs`, and through `connect` the nodes and processes that hold the
    /// workers and objects.
    pub fn with_fan_out(gcs: Arc<dyn GcsApi>, connect: Arc<dyn Connect>) -> Self {
        StateClient {
            gcs,
            connect: Some(connect),
        }
    }

    fn connect(&self) -> Result<&Arc<dyn Connect>, StateError> {
        self.connect.as_ref().ok_or(StateError::NoFanOut)
    }

    /// Every node's workers and every running job's driver, each node asked within
    /// [`FAN_OUT_DEADLINE`] (all at once); those that did not answer are named.
    pub async fn list_workers(&self, opts: &ListOptions) -> Result<Listing<Worker>, StateError> {
        filter::check::<Worker>(&opts.filters)?;
        let (workers, unreachable) = self.all_workers().await?;
        Ok(limited(workers, opts, unreachable))
    }

    async fn all_workers(&self) -> Result<(Vec<Worker>, Vec<String>), StateError> {
        let connect = self.connect()?;
        let nodes = self.gcs.get_all_nodes(ray_proto::Empty {}).await?;
        let jobs = self
            .gcs
            .list_jobs(ray_proto::ListRequest {
                filters: Vec::new(),
                limit: u32::MAX,
                summarize: false,
            })
            .await?;
        let mut asks = Vec::new();
        for n in nodes.nodes.iter().filter(|n| n.alive) {
            let address = n.node_manager_address.clone();
            asks.push(async move {
                let asked = async {
                    let nm = connect.node_manager(&address)?;
                    nm.list_workers(ray_proto::Empty {}).await
                };
                match connect.clock().timeout(FAN_OUT_DEADLINE, asked).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(e)) => Err(format!("node at {address}: {e}")),
                    Err(_) => Err(format!(
                        "node at {address}: no answer within {FAN_OUT_DEADLINE:?}"
                    )),
                }
            });
        }
        let mut workers: Vec<Worker> = jobs
            .jobs
            .iter()
            .filter(|j| j.status == "RUNNING")
            .map(Worker::driver)
            .collect();
        let mut unreachable = Vec::new();
        let answers: Vec<_> = stream::iter(asks)
            .buffer_unordered(ASKS_AT_ONCE)
            .collect()
            .await;
        for answer in answers {
            match answer {
                Ok(reply) => workers.extend(
                    reply
                        .workers
                        .iter()
                        .map(|w| Worker::from_wire(&reply.node_id, w)),
                ),
                Err(why) => unreachable.push(why),
            }
        }
        Ok((workers, unreachable))
    }

    /// The objects every driver and worker holds references to, a row per process and
    /// object; the processes asked at once (at most 64 at a time), each within
    /// [`FAN_OUT_DEADLINE`], those that did not answer named. Filters on the process
    /// (`worker_type`, `worker_id`, `pid`, `node_id`) choose whom to ask; without filters on
    /// the objects, each process lists at most the limit and `total` is what all track.
    pub async fn list_objects(&self, opts: &ListOptions) -> Result<Listing<Object>, StateError> {
        filter::check::<Object>(&opts.filters)?;
        let connect = self.connect()?;
        let (workers, mut unreachable) = self.all_workers().await?;
        let (by_process, by_object): (Vec<Filter>, Vec<Filter>) = opts
            .filters
            .iter()
            .cloned()
            .partition(|f| PROCESS_KEYS.contains(&f.key.as_str()));
        // Without filters on the objects themselves, each process lists no more than asked.
        let limit = match (by_object.is_empty(), opts.limit) {
            (false, _) => 0,
            (true, None | Some(0)) => filter::DEFAULT_LIMIT as u32,
            (true, Some(n)) => n,
        };
        let mut asks = Vec::new();
        for w in workers
            .into_iter()
            .filter(|w| filter::matches(w, &by_process))
        {
            let Some(address) = w.address.clone() else {
                // A driver that has not said where it listens yet.
                unreachable.push(format!("{} pid {:?}: no address yet", w.worker_type, w.pid));
                continue;
            };
            let node = w.node_id.clone();
            asks.push(async move {
                let asked = async {
                    let cw = connect.core_worker(&address)?;
                    cw.list_objects(ray_proto::ListObjectsRequest { limit })
                        .await
                };
                match connect.clock().timeout(FAN_OUT_DEADLINE, asked).await {
                    Ok(Ok(reply)) => Ok((reply, node)),
                    Ok(Err(e)) => Err(format!("process at {address}: {e}")),
                    Err(_) => Err(format!(
                        "process at {address}: no answer within {FAN_OUT_DEADLINE:?}"
                    )),
                }
            });
        }
        let answers: Vec<_> = stream::iter(asks)
            .buffer_unordered(ASKS_AT_ONCE)
            .collect()
            .await;
        let (mut objects, mut tracked) = (Vec::new(), 0);
        for answer in answers {
            match answer {
                Ok((reply, node)) => {
                    tracked += reply.total;
                    objects.extend(
                        reply
                            .objects
                            .iter()
                            .map(|o| Object::from_wire(&reply, node.clone(), o)),
                    )
                }
                Err(why) => unreachable.push(why),
            }
        }
        let mut listing = limited(objects, opts, unreachable);
        if by_object.is_empty() {
            // Each process listed at most the limit: the total is what they track in all.
            listing.total = tracked;
        }
        Ok(listing)
    }

    /// Tasks and actor calls, newest first.
    pub async fn list_tasks(&self, opts: &ListOptions) -> Result<Listing<Task>, StateError> {
        filter::check::<ray_proto::TaskRow>(&opts.filters)?;
        let reply = self.gcs.list_tasks(opts.request(false)).await?;
        Ok(Listing {
            rows: reply.tasks.iter().map(Task::from).collect(),
            total: reply.total,
            dropped: reply.dropped,
            unreachable: Vec::new(),
        })
    }

    /// Every task that passes the filters, counted per name and state.
    pub async fn summarize_tasks(
        &self,
        opts: &ListOptions,
    ) -> Result<Vec<TaskSummary>, StateError> {
        filter::check::<ray_proto::TaskRow>(&opts.filters)?;
        let mut request = opts.request(true);
        request.limit = 1; // The counts cover every match; the rows are not wanted.
        let reply = self.gcs.list_tasks(request).await?;
        Ok(summarize_tasks(&reply.counts))
    }

    /// Actors, in the order they were created.
    pub async fn list_actors(&self, opts: &ListOptions) -> Result<Listing<Actor>, StateError> {
        filter::check::<ray_proto::ActorRow>(&opts.filters)?;
        let reply = self.gcs.list_actors(opts.request(false)).await?;
        Ok(Listing {
            rows: reply.actors.iter().map(Actor::from).collect(),
            total: reply.total,
            dropped: 0,
            unreachable: Vec::new(),
        })
    }

    /// Jobs, in the order they started.
    pub async fn list_jobs(&self, opts: &ListOptions) -> Result<Listing<Job>, StateError> {
        filter::check::<ray_proto::JobRow>(&opts.filters)?;
        let reply = self.gcs.list_jobs(opts.request(false)).await?;
        Ok(Listing {
            rows: reply.jobs.iter().map(Job::from).collect(),
            total: reply.total,
            dropped: 0,
            unreachable: Vec::new(),
        })
    }

    /// The timeline of the newest tasks that pass the filters (within the limit, by default
    /// [`crate::timeline::TIMELINE_TASKS`]) as Chrome trace events: a slice per task that
    /// ran, a running one ending now.
    pub async fn timeline(&self, opts: &ListOptions) -> Result<Vec<TraceEvent>, StateError> {
        let opts = ListOptions {
            filters: opts.filters.clone(),
            limit: Some(opts.limit.unwrap_or(TIMELINE_TASKS)),
        };
        let tasks = self.list_tasks(&opts).await?;
        Ok(chrome_trace(&tasks.rows, ray_common::clock::unix_micros()))
    }

    /// Why the task or actor `id` (hex) has not run, or that it has: from its row at the
    /// GCS, its owner's queues (a task's), the nodes' resources and the tasks running on
    /// them. Each process is asked within [`FAN_OUT_DEADLINE`].
    pub async fn explain(&self, id: &str) -> Result<Explanation, StateError> {
        let id = &id.trim().to_lowercase();
        let by_id = |key: &str, value: &str| ray_proto::ListRequest {
            filters: vec![ray_proto::StateFilter {
                key: key.into(),
                op: "=".into(),
                value: value.into(),
            }],
            limit: 1,
            summarize: false,
        };
        let actors = self.gcs.list_actors(by_id("actor_id", id)).await?;
        if let Some(actor) = actors.actors.first() {
            return Ok(explain::explain_actor(actor));
        }
        let tasks = self.gcs.list_tasks(by_id("task_id", id)).await?;
        let task = tasks
            .tasks
            .into_iter()
            .next()
            .ok_or_else(|| StateError::NotFound(id.to_string()))?;
        let connect = self.connect()?;
        let asked = async {
            let owner = connect.core_worker(&task.owner_address)?;
            let req = ray_proto::ExplainTaskRequest {
                task_id: task.task_id.clone(),
            };
            owner.explain_task(req).await
        };
        let owner = match task.owner_address.is_empty() {
            true => Err("its owner's address is not known".to_string()),
            false => match connect.clock().timeout(FAN_OUT_DEADLINE, asked).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(format!("its owner at {}: {e}", task.owner_address)),
                Err(_) => Err(format!(
                    "its owner at {}: no answer within {FAN_OUT_DEADLINE:?}",
                    task.owner_address
                )),
            },
        };
        let phase = owner.as_ref().map(|o| o.phase.as_str()).unwrap_or_default();
        let (mut nodes, mut running, mut makers, mut workers) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if phase == "WAITING_FOR_WORKER" {
            nodes = self.gcs.get_all_nodes(ray_proto::Empty {}).await?.nodes;
            // What is free now, from each node itself (the GCS's view lags its reports).
            let addresses: Vec<String> = nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.node_manager_address.clone())
                .collect();
            let asks = addresses.into_iter().map(|address| async move {
                let asked = async {
                    let nm = connect.node_manager(&address)?;
                    nm.get_node_resources(ray_proto::Empty {}).await
                };
                connect
                    .clock()
                    .timeout(FAN_OUT_DEADLINE, asked)
                    .await
                    .ok()
                    .and_then(Result::ok)
            });
            let fresh: Vec<_> = stream::iter(asks)
                .buffer_unordered(ASKS_AT_ONCE)
                .collect()
                .await;
            for reply in fresh.into_iter().flatten() {
                if let Some(n) = nodes.iter_mut().find(|n| n.node_id == reply.node_id) {
                    n.available = reply.available;
                }
            }
            let mut busy = by_id("state", "RUNNING");
            busy.limit = 1000;
            running = self.gcs.list_tasks(busy).await?.tasks;
            // (A node that does not answer only leaves its starting workers uncounted.)
            workers = self.all_workers().await.map(|(w, _)| w).unwrap_or_default();
        }
        if let Ok(o) = &owner {
            // The makers of the first few arguments not ready (a task may take thousands).
            for arg in o.args.iter().filter(|a| !a.ready).take(MAKERS_NAMED) {
                let maker = self
                    .gcs
                    .list_tasks(by_id("task_id", &ray_common::ids::hex(&arg.object_id)))
                    .await?;
                makers.extend(maker.tasks);
            }
        }
        Ok(explain::explain_task(&explain::TaskFacts {
            task: &task,
            owner: owner.as_ref().map_err(Clone::clone),
            nodes: &nodes,
            running: &running,
            makers: &makers,
            workers: &workers,
        }))
    }

    /// Nodes, alive and dead, in the order they joined.
    pub async fn list_nodes(&self, opts: &ListOptions) -> Result<Listing<Node>, StateError> {
        filter::check::<ray_proto::NodeInfo>(&opts.filters)?;
        let reply = self.gcs.get_all_nodes(ray_proto::Empty {}).await?;
        let listed = limited(reply.nodes, opts, Vec::new());
        Ok(Listing {
            rows: listed.rows.iter().map(Node::from).collect(),
            total: listed.total,
            dropped: 0,
            unreachable: Vec::new(),
        })
    }
}

/// The rows that pass `opts`'s filters, within its limit (0 or none: the GCS's default), for
/// rows gathered here rather than filtered at the GCS.
fn limited<R: Fields>(rows: Vec<R>, opts: &ListOptions, unreachable: Vec<String>) -> Listing<R> {
    let matching: Vec<R> = rows
        .into_iter()
        .filter(|r| filter::matches(r, &opts.filters))
        .collect();
    let limit = match opts.limit {
        None | Some(0) => filter::DEFAULT_LIMIT,
        Some(n) => n as usize,
    };
    Listing {
        total: matching.len() as u64,
        rows: matching.into_iter().take(limit).collect(),
        dropped: 0,
        unreachable,
    }
}
