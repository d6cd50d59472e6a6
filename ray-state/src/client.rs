//! [`StateClient`]: lists tasks, actors, jobs and nodes from the GCS, filtered there (and
//! the tasks' timeline).

use crate::filter::{self, Filter};
use crate::rows::{Actor, Job, Node, Task};
use crate::summary::{summarize_tasks, TaskSummary};
use crate::timeline::{chrome_trace, TraceEvent, TIMELINE_TASKS};
use crate::StateError;
use ray_common::rpc::GcsApi;
use std::sync::Arc;

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
}

/// Lists the cluster's state from its GCS.
#[derive(Clone)]
pub struct StateClient {
    gcs: Arc<dyn GcsApi>,
}

impl StateClient {
    /// A client asking `gcs`.
    pub fn new(gcs: Arc<dyn GcsApi>) -> Self {
        StateClient { gcs }
    }

    /// Tasks and actor calls, newest first.
    pub async fn list_tasks(&self, opts: &ListOptions) -> Result<Listing<Task>, StateError> {
        filter::check::<ray_proto::TaskRow>(&opts.filters)?;
        let reply = self.gcs.list_tasks(opts.request(false)).await?;
        Ok(Listing {
            rows: reply.tasks.iter().map(Task::from).collect(),
            total: reply.total,
            dropped: reply.dropped,
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

    /// Nodes, alive and dead, in the order they joined.
    pub async fn list_nodes(&self, opts: &ListOptions) -> Result<Listing<Node>, StateError> {
        filter::check::<ray_proto::NodeInfo>(&opts.filters)?;
        let reply = self.gcs.get_all_nodes(ray_proto::Empty {}).await?;
        let matching: Vec<&ray_proto::NodeInfo> = reply
            .nodes
            .iter()
            .filter(|n| filter::matches(*n, &opts.filters))
            .collect();
        // As the GCS reads a limit: 0 is the default.
        let limit = match opts.limit {
            None | Some(0) => filter::DEFAULT_LIMIT,
            Some(n) => n as usize,
        };
        Ok(Listing {
            total: matching.len() as u64,
            rows: matching.into_iter().take(limit).map(Node::from).collect(),
            dropped: 0,
        })
    }
}
