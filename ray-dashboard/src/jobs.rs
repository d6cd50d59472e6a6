//! Ray's job submission REST API: `/api/jobs/` to submit a program as a job's driver on the
//! head, list jobs, read one's status and logs and stop it, and `/api/packages/<sha256>` to
//! upload the program first (content-addressed, kept by the GCS). The dashboard only speaks
//! HTTP: the [`JobManager`] it is handed runs the drivers (the head's, in `ray-node`).
//!
//! Answers are Ray's shapes, without the state API's envelope. A job runs only a program
//! uploaded here, never a shell command; the API is remote code execution by design, behind
//! the token like every data route, on loopback unless the head was told otherwise.

pub use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Largest program accepted by `/api/packages/` (a debug build of a large program).
pub const MAX_PACKAGE_BYTES: usize = 1 << 30;

/// A job to submit (Ray's `JobSubmitRequest`, with the program named by its hash).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The command as it is shown (Ray's field): the program's name and its arguments.
    pub entrypoint: String,
    /// The uploaded program (`/api/packages/<sha256>`) the driver runs.
    pub binary_sha256: String,
    /// Its arguments, exactly.
    #[serde(default)]
    pub args: Vec<String>,
    /// An id of the caller's choice (unique); one is made if absent.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// `{"env_vars": {...}}`: the driver's environment beyond the head's job variables.
    #[serde(default)]
    pub runtime_env: RuntimeEnv,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a job runs with (the part of Ray's `runtime_env` this runtime knows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeEnv {
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
}

/// A submitted job's state (Ray's `JobStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
}

impl JobStatus {
    /// Whether it has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Stopped | JobStatus::Succeeded | JobStatus::Failed
        )
    }
}

/// One submitted job (Ray's `JobDetails`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetails {
    /// Always `SUBMISSION`.
    #[serde(rename = "type")]
    pub kind: String,
    pub submission_id: String,
    pub status: JobStatus,
    pub entrypoint: String,
    /// Why it is in its state, in words.
    pub message: String,
    /// Milliseconds since the epoch.
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub runtime_env: RuntimeEnv,
    /// The driver's process on the head.
    pub driver_pid: Option<u32>,
    pub driver_exit_code: Option<i32>,
}

/// What a job request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Failed(String),
}

/// A boxed future, as [`JobManager`]'s methods return them.
pub type JobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JobError>> + Send + 'a>>;

/// Runs submitted jobs' drivers (the head's supervisor).
pub trait JobManager: Send + Sync + 'static {
    /// Starts the job's driver; answers its submission id.
    fn submit(&self, request: SubmitRequest) -> JobFuture<'_, String>;
    /// Every job submitted, in submission order.
    fn list(&self) -> Vec<JobDetails>;
    /// One job.
    fn get(&self, id: &str) -> Option<JobDetails>;
    /// What its driver printed so far (stdout and stderr, as written).
    fn logs(&self, id: &str) -> JobFuture<'_, String>;
    /// Stops its driver (and so its workers and actors); `false` if it had ended.
    fn stop(&self, id: &str) -> Result<bool, JobError>;
    /// Keeps the program `sha256` (its bytes `data`, checked against the hash).
    fn upload(&self, sha256: &str, data: Bytes) -> JobFuture<'_, ()>;
}

/// The routes, over `jobs` (`None`: this head runs no jobs, and says so).
pub fn routes(jobs: Option<Arc<dyn JobManager>>) -> Router {
    Router::new()
        .route("/api/jobs/", post(submit).get(list))
        .route("/api/jobs/{id}", get(details))
        .route("/api/jobs/{id}/logs", get(logs))
        .route("/api/jobs/{id}/stop", post(stop))
        .route(
            "/api/packages/{sha256}",
            put(upload).layer(DefaultBodyLimit::max(MAX_PACKAGE_BYTES)),
        )
        .with_state(jobs)
}

type Jobs = State<Option<Arc<dyn JobManager>>>;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn failed(e: JobError) -> Response {
    let status = match &e {
        JobError::NotFound(_) => StatusCode::NOT_FOUND,
        JobError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        JobError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, &e.to_string())
}

/// The answer of a dashboard that runs no jobs.
fn no_jobs() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "this dashboard runs no jobs: submit them to a cluster's head (rayrs start --head)",
    )
}

async fn submit(State(jobs): Jobs, body: Bytes) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    let request: SubmitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("the request: {e}")),
    };
    match jobs.submit(request).await {
        Ok(id) => Json(serde_json::json!({ "submission_id": id, "job_id": id })).into_response(),
        Err(e) => failed(e),
    }
}

async fn list(State(jobs): Jobs) -> Response {
    match jobs.as_ref() {
        Some(j) => Json(j.list()).into_response(),
        None => no_jobs(),
    }
}

async fn details(State(jobs): Jobs, Path(id): Path<String>) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    match jobs.get(&id) {
        Some(d) => Json(d).into_response(),
        None => failed(JobError::NotFound(id)),
    }
}

async fn logs(State(jobs): Jobs, Path(id): Path<String>) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    match jobs.logs(&id).await {
        Ok(text) => Json(serde_json::json!({ "logs": text })).into_response(),
        Err(e) => failed(e),
    }
}

async fn stop(State(jobs): Jobs, Path(id): Path<String>) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    match jobs.stop(&id) {
        Ok(stopped) => Json(serde_json::json!({ "stopped": stopped })).into_response(),
        Err(e) => failed(e),
    }
}

async fn upload(State(jobs): Jobs, Path(sha256): Path<String>, body: Bytes) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    match jobs.upload(&sha256, body).await {
        Ok(()) => Json(serde_json::json!({})).into_response(),
        Err(e) => failed(e),
    }
}
