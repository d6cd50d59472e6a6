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

/// A piece of a job's log: its text (whole characters only) and where the next one starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub logs: String,
    pub next_offset: u64,
}

impl LogChunk {
    /// The text of `bytes`, read at `offset`: a character cut at the end waits for the next
    /// read (the writer may be mid-character); invalid bytes elsewhere are replaced.
    pub fn of(offset: u64, bytes: &[u8]) -> LogChunk {
        let whole = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        LogChunk {
            logs: String::from_utf8_lossy(&bytes[..whole]).into_owned(),
            next_offset: offset + whole as u64,
        }
    }
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
    /// What its driver printed (stdout and stderr, as written), from byte `offset` on, a
    /// chunk at most.
    fn logs(&self, id: &str, offset: u64) -> JobFuture<'_, LogChunk>;
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

/// `?offset=N`: from byte N on (a chunk at most; `next_offset` says where to go on). Without
/// it, Ray's form: the whole log, read in chunks here.
async fn logs(
    State(jobs): Jobs,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(jobs) = jobs.as_ref() else {
        return no_jobs();
    };
    let query: BTreeMap<String, String> =
        match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
            Ok(q) => q,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("the query: {e}")),
        };
    if let Some(offset) = query.get("offset") {
        let Ok(offset) = offset.parse::<u64>() else {
            return refuse(StatusCode::BAD_REQUEST, "offset: a byte count");
        };
        return match jobs.logs(&id, offset).await {
            Ok(chunk) => Json(chunk).into_response(),
            Err(e) => failed(e),
        };
    }
    let mut whole = String::new();
    let mut offset = 0;
    loop {
        match jobs.logs(&id, offset).await {
            Ok(chunk) if chunk.next_offset == offset => break,
            Ok(chunk) => {
                whole.push_str(&chunk.logs);
                offset = chunk.next_offset;
            }
            Err(e) => return failed(e),
        }
    }
    Json(serde_json::json!({ "logs": whole })).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_chunk_holds_whole_characters_and_says_where_the_next_starts() {
        let text = "héllo";
        let bytes = text.as_bytes();
        // Cut inside "é": the character waits for the next read.
        let first = LogChunk::of(10, &bytes[..2]);
        assert_eq!((first.logs.as_str(), first.next_offset), ("h", 11));
        let rest = LogChunk::of(11, &bytes[1..]);
        assert_eq!((rest.logs.as_str(), rest.next_offset), ("éllo", 16));
        // Invalid bytes inside are replaced, not waited for.
        let bad = LogChunk::of(0, b"a\xffb");
        assert_eq!((bad.logs.as_str(), bad.next_offset), ("a\u{fffd}b", 3));
    }
}
