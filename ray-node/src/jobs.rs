//! The head's submitted jobs (Ray's job supervisor): each runs an uploaded program as its
//! job's driver, a process of the head's machine attached to the cluster (`RAY_ADDRESS` is
//! the head's GCS), its standard output and error kept in `<log dir>/job-driver-<id>.log`;
//! the job ends as the process does, and `stop` ends the process (SIGTERM, then SIGKILL),
//! which ends its job's workers and actors on every node. Drivers die with the head.

use ray_common::rpc::GcsApi;
use ray_dashboard::jobs::{
    Bytes, JobDetails, JobError, JobFuture, JobManager, JobStatus, LogChunk, SubmitRequest,
};
use ray_raylet::NodeManager;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most of a log one request reads.
const LOG_CHUNK: usize = 1 << 20;
/// How long a stopped driver has to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs the jobs submitted to the head.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    manager: NodeManager,
    gcs: Arc<dyn GcsApi>,
    gcs_address: String,
    token: Arc<str>,
    log_dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Job>>,
    /// Submission order.
    order: Mutex<Vec<String>>,
}

struct Job {
    details: JobDetails,
    log: PathBuf,
    stop_requested: bool,
}

fn now_ms() -> u64 {
    ray_common::clock::unix_micros() / 1000
}

impl Supervisor {
    /// A supervisor running drivers from `manager`'s copies of uploaded programs, attached
    /// to the GCS at `gcs_address` with `token`, their logs in `log_dir`.
    pub fn new(
        manager: NodeManager,
        gcs: Arc<dyn GcsApi>,
        gcs_address: String,
        token: Arc<str>,
        log_dir: PathBuf,
    ) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                manager,
                gcs,
                gcs_address,
                token,
                log_dir,
                jobs: Mutex::new(BTreeMap::new()),
                order: Mutex::new(Vec::new()),
            }),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills every running driver (the head stops).
    pub fn kill_all(&self) {
        for job in self.jobs().values_mut() {
            if let (false, Some(pid)) = (job.details.status.is_terminal(), job.details.driver_pid) {
                job.stop_requested = true;
                signal(pid, libc::SIGKILL);
            }
        }
    }

    async fn start(&self, request: SubmitRequest) -> Result<String, JobError> {
        let id = match request.submission_id.clone() {
            Some(id) if !valid_id(&id) => {
                return Err(JobError::InvalidArgument(format!(
                    "submission id {id:?}: 1 to 128 letters, digits, '_', '-' or '.'"
                )))
            }
            Some(id) => id,
            None => format!(
                "rayrs_submit_{}",
                &ray_common::ids::hex(&ray_common::ids::random_bytes())[..16]
            ),
        };
        if !ray_common::sha256::is_hash(&request.binary_sha256) {
            return Err(JobError::InvalidArgument(
                "binary_sha256: the program's hash, as uploaded to /api/packages/<sha256>".into(),
            ));
        }
        for name in request.runtime_env.env_vars.keys() {
            if name.starts_with("RAYRS_") || name.is_empty() || name.contains('=') {
                return Err(JobError::InvalidArgument(format!(
                    "environment variable {name:?} is not the job's to set"
                )));
            }
        }
        let log = self.inner.log_dir.join(format!("job-driver-{id}.log"));
        {
            let mut jobs = self.jobs();
            if jobs.contains_key(&id) {
                return Err(JobError::InvalidArgument(format!(
                    "job {id} exists already"
                )));
            }
            jobs.insert(
                id.clone(),
                Job {
                    details: JobDetails {
                        kind: "SUBMISSION".into(),
                        submission_id: id.clone(),
                        status: JobStatus::Pending,
                        entrypoint: request.entrypoint.clone(),
                        message: "fetching the program".into(),
                        start_time: now_ms(),
                        end_time: None,
                        metadata: request.metadata.clone(),
                        runtime_env: request.runtime_env.clone(),
                        driver_pid: None,
                        driver_exit_code: None,
                    },
                    log: log.clone(),
                    stop_requested: false,
                },
            );
            self.inner
                .order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id.clone());
        }
        // Answered now, PENDING (Ray's way): fetching the program may take long, and a
        // client that stops waiting must not leave the job half started.
        let me = self.clone();
        let started = id.clone();
        tokio::spawn(async move {
            if let Err(why) = me.spawn(&started, &request, &log).await {
                tracing::warn!(job = %started, %why, "a submitted job's driver did not start");
                me.ended(&started, JobStatus::Failed, None, why);
            }
        });
        Ok(id)
    }

    async fn spawn(&self, id: &str, request: &SubmitRequest, log: &PathBuf) -> Result<(), String> {
        let program = self
            .inner
            .manager
            .local_binary(&request.binary_sha256)
            .await
            .map_err(|e| e.to_string())?;
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&request.args)
            .envs(&request.runtime_env.env_vars)
            .env("RAY_ADDRESS", &self.inner.gcs_address)
            .env("RAY_AUTH_TOKEN", &*self.inner.token)
            .env("RAY_JOB_SUBMISSION_ID", id)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; the driver dies with the head's thread that
        // started it, as the head's workers do.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let pid = child.id();
        {
            let mut jobs = self.jobs();
            if let Some(job) = jobs.get_mut(id) {
                job.details.status = JobStatus::Running;
                job.details.driver_pid = pid;
                job.details.message = "the driver runs".into();
                if let (true, Some(pid)) = (job.stop_requested, pid) {
                    // Stopped while its program was fetched.
                    self.terminate(id, pid);
                }
            }
        }
        tracing::info!(job = id, ?pid, program = %program.display(), "submitted job's driver started");
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            let (code, message) = match &status {
                Ok(s) => (s.code(), format!("the driver exited: {s}")),
                Err(e) => (None, format!("the driver could not be waited for: {e}")),
            };
            let state = match status {
                Ok(s) if s.success() => JobStatus::Succeeded,
                _ => JobStatus::Failed,
            };
            me.ended(&id, state, code, message);
        });
        Ok(())
    }

    /// Ends job `id`'s driver `pid`: SIGTERM (a clean shutdown: its session ends the job on
    /// every node), then SIGKILL if it still runs after [`STOP_GRACE`].
    fn terminate(&self, id: &str, pid: u32) {
        signal(pid, libc::SIGTERM);
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let running = me
                .get(&id)
                .is_some_and(|d| !d.status.is_terminal() && d.driver_pid == Some(pid));
            if running {
                tracing::warn!(job = %id, pid, "a stopped driver still runs after {STOP_GRACE:?}: killed");
                signal(pid, libc::SIGKILL);
            }
        });
    }

    /// Records the job's end (STOPPED if a stop was asked, whatever the exit).
    fn ended(&self, id: &str, status: JobStatus, code: Option<i32>, message: String) {
        let mut jobs = self.jobs();
        if let Some(job) = jobs.get_mut(id) {
            job.details.status = match job.stop_requested {
                true => JobStatus::Stopped,
                false => status,
            };
            job.details.driver_exit_code = code;
            job.details.end_time = Some(now_ms());
            job.details.message = match job.stop_requested {
                true => format!("stopped: {message}"),
                false => message,
            };
        }
    }
}

/// Whether `id` may name a job: 1 to 128 of `[A-Za-z0-9_.-]` (it goes into a file name and
/// into URLs unencoded).
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && id != "."
        && id != ".."
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: a plain syscall on a driver this supervisor started and has not seen end (its
    // waiter reaps it, so the pid cannot have been reused before `ended` runs).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl JobManager for Supervisor {
    fn submit(&self, request: SubmitRequest) -> JobFuture<'_, String> {
        Box::pin(self.start(request))
    }

    fn list(&self) -> Vec<JobDetails> {
        let order = self
            .inner
            .order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let jobs = self.jobs();
        order
            .iter()
            .filter_map(|id| jobs.get(id).map(|j| j.details.clone()))
            .collect()
    }

    fn get(&self, id: &str) -> Option<JobDetails> {
        self.jobs().get(id).map(|j| j.details.clone())
    }

    fn logs(&self, id: &str, offset: u64) -> JobFuture<'_, LogChunk> {
        let log = self.jobs().get(id).map(|j| j.log.clone());
        let id = id.to_string();
        Box::pin(async move {
            let log = log.ok_or(JobError::NotFound(id))?;
            let failed = |e: std::io::Error| JobError::Failed(format!("{}: {e}", log.display()));
            let mut file = match tokio::fs::File::open(&log).await {
                Ok(f) => f,
                // Not started yet (its program is being fetched).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(LogChunk::default())
                }
                Err(e) => return Err(failed(e)),
            };
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(failed)?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(LOG_CHUNK as u64)
                .read_to_end(&mut bytes)
                .await
                .map_err(failed)?;
            Ok(LogChunk::of(offset, &bytes))
        })
    }

    fn stop(&self, id: &str) -> Result<bool, JobError> {
        let mut jobs = self.jobs();
        let job = jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if job.details.status.is_terminal() {
            return Ok(false);
        }
        job.stop_requested = true;
        if let Some(pid) = job.details.driver_pid {
            self.terminate(id, pid);
        }
        Ok(true)
    }

    fn upload(&self, sha256: &str, data: Bytes) -> JobFuture<'_, ()> {
        let sha256 = sha256.to_string();
        Box::pin(async move {
            if !ray_common::sha256::is_hash(&sha256) {
                return Err(JobError::InvalidArgument(format!(
                    "{sha256:?} is not a SHA-256"
                )));
            }
            let hashed = {
                let data = data.clone();
                tokio::task::spawn_blocking(move || {
                    let mut h = ray_common::sha256::Hasher::default();
                    h.update(&data);
                    h.finish()
                })
                .await
                .map_err(|e| JobError::Failed(e.to_string()))?
            };
            if hashed != sha256 {
                return Err(JobError::InvalidArgument(format!(
                    "the bytes hash to {hashed}, not {sha256}"
                )));
            }
            let chunks = ray_common::sha256::upload_chunks(&sha256, data);
            self.inner
                .gcs
                .upload_binary(chunks)
                .await
                .map(|_| ())
                .map_err(|e| JobError::Failed(format!("keeping the program: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn submission_ids_are_plain_names() {
        for ok in ["nightly", "rayrs_submit_0123", "a.b-c_d"] {
            assert!(super::valid_id(ok), "{ok}");
        }
        for bad in ["", "a/b", "..", ".", "a b", "a?b", "a%20", &"x".repeat(129)] {
            assert!(!super::valid_id(bad), "{bad:?}");
        }
    }
}
