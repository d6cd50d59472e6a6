//! `rayrs job submit|status|logs|stop|list`: Ray's job CLI over the head dashboard's job API
//! (`/api/jobs/`). `submit` uploads the program (content-addressed, once), then has the head
//! run it as the job's driver and, unless `--no-wait`, follows its logs to its end.

use clap::{Args, Subcommand};
use ray_dashboard::jobs::{JobDetails, JobStatus, LogChunk, SubmitRequest};
use ray_node::{records, token};
use std::path::PathBuf;
use std::time::Duration;

type R<T> = Result<T, String>;

/// How often `--follow` and a waiting `submit` ask for more of the logs.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// One HTTP request's deadline (an upload's grows with its size).
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    /// The head's dashboard (default: RAY_ADDRESS when it is http://..., else the head
    /// started on this machine).
    #[arg(long, global = true, value_name = "http://HOST:PORT")]
    address: Option<String>,
    /// Where to look for the head started on this machine.
    #[arg(long, global = true, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Runs PROGRAM (uploaded from here) as a job's driver on the head; follows its logs
    /// until it ends unless --no-wait, and exits 0 only if it succeeded.
    Submit {
        /// The job's id (default: one is made).
        #[arg(long)]
        submission_id: Option<String>,
        /// `{"env_vars": {"NAME": "value"}}`: the driver's environment beyond the head's.
        #[arg(long, value_name = "JSON")]
        runtime_env_json: Option<String>,
        /// Returns once the job is submitted.
        #[arg(long)]
        no_wait: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
        entrypoint: Vec<String>,
    },
    /// A job's status.
    Status { id: String },
    /// What a job's driver printed.
    Logs {
        id: String,
        /// Keeps printing until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Stops a job: its driver, and with it its workers and actors.
    Stop { id: String },
    /// Every job submitted to the head.
    List,
}

/// The job API at one head.
struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(address: Option<String>, temp_dir: Option<PathBuf>) -> R<Api> {
        let from_env = std::env::var("RAY_ADDRESS")
            .ok()
            .filter(|a| a.starts_with("http://"));
        let base = match address.or(from_env) {
            Some(a) => a,
            None => {
                let dir = temp_dir.unwrap_or_else(records::default_temp_dir);
                records::running(&dir)
                    .into_iter()
                    .find(|r| r.head)
                    .and_then(|r| r.dashboard_url)
                    .ok_or_else(|| {
                        format!(
                            "no head with a dashboard runs on this machine (none recorded \
                             under {}): give --address http://HOST:PORT",
                            dir.display()
                        )
                    })?
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_DEADLINE))
            .build()
            .into();
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token::required().map_err(|e| e.to_string())?,
            agent,
        })
    }

    /// `method path` with `body`, its answer's JSON (an error answer as an error).
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> R<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let answer = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("PUT", Some(body)) => {
                let long = REQUEST_DEADLINE + Duration::from_secs((body.len() >> 23) as u64);
                self.agent
                    .put(&url)
                    .config()
                    .timeout_global(Some(long))
                    .build()
                    .header("Authorization", &auth)
                    .send(&body[..])
            }
            (_, body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&body.unwrap_or_default()[..]),
        };
        let mut answer = answer.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        match status {
            200 => Ok(value),
            401 | 403 => Err(format!(
                "the head refused this token ({status}): use the cluster's (rayrs get-auth-token \
                 on the head)"
            )),
            _ => Err(format!(
                "{method} {path}: {status} {}",
                value["error"].as_str().unwrap_or(&value.to_string())
            )),
        }
    }

    fn details(&self, id: &str) -> R<JobDetails> {
        let v = self.call("GET", &format!("/api/jobs/{id}"), None)?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The log from byte `offset` on (a chunk at most).
    fn logs(&self, id: &str, offset: u64) -> R<LogChunk> {
        let v = self.call("GET", &format!("/api/jobs/{id}/logs?offset={offset}"), None)?;
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// Prints the log from `offset` to its end now; the offset after it.
    #[allow(clippy::print_stdout)]
    fn print_logs(&self, id: &str, mut offset: u64) -> R<u64> {
        loop {
            let chunk = self.logs(id, offset)?;
            if chunk.next_offset == offset {
                return Ok(offset);
            }
            print!("{}", chunk.logs);
            offset = chunk.next_offset;
        }
    }

    /// Prints the logs as they grow until the job ends; its final state.
    fn follow(&self, id: &str) -> R<JobDetails> {
        let mut offset = 0;
        loop {
            // The state first: logs read after it ended are whole.
            let details = self.details(id)?;
            offset = self.print_logs(id, offset)?;
            if details.status.is_terminal() {
                return Ok(details);
            }
            std::thread::sleep(FOLLOW_EVERY);
        }
    }
}

#[allow(clippy::print_stdout)]
pub fn run(args: JobArgs) -> R<()> {
    let api = Api::new(args.address, args.temp_dir)?;
    match args.command {
        JobCommand::Submit {
            submission_id,
            runtime_env_json,
            no_wait,
            entrypoint,
        } => {
            let program = PathBuf::from(&entrypoint[0]);
            let data =
                std::fs::read(&program).map_err(|e| format!("{}: {e}", program.display()))?;
            let mut hasher = ray_common::sha256::Hasher::default();
            hasher.update(&data);
            let sha = hasher.finish();
            api.call("PUT", &format!("/api/packages/{sha}"), Some(data))?;
            let runtime_env = match runtime_env_json {
                Some(json) => {
                    serde_json::from_str(&json).map_err(|e| format!("--runtime-env-json: {e}"))?
                }
                None => Default::default(),
            };
            let request = SubmitRequest {
                entrypoint: entrypoint.join(" "),
                binary_sha256: sha,
                args: entrypoint[1..].to_vec(),
                submission_id,
                runtime_env,
                metadata: Default::default(),
            };
            let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
            let answer = api.call("POST", "/api/jobs/", Some(body))?;
            let id = answer["submission_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            println!("Job '{id}' submitted successfully");
            if no_wait {
                println!("Follow it with: rayrs job logs {id} --follow");
                return Ok(());
            }
            let end = api.follow(&id)?;
            println!("Job '{id}' {}: {}", status_word(end.status), end.message);
            match end.status {
                JobStatus::Succeeded => Ok(()),
                _ => Err(format!("job {id} did not succeed")),
            }
        }
        JobCommand::Status { id } => {
            let d = api.details(&id)?;
            println!("Status for job '{id}': {}", status_word(d.status));
            println!("Status message: {}", d.message);
            Ok(())
        }
        JobCommand::Logs { id, follow } => {
            match follow {
                true => {
                    api.follow(&id)?;
                }
                false => {
                    api.print_logs(&id, 0)?;
                }
            }
            Ok(())
        }
        JobCommand::Stop { id } => {
            let v = api.call("POST", &format!("/api/jobs/{id}/stop"), Some(Vec::new()))?;
            match v["stopped"].as_bool() {
                Some(true) => println!("Job '{id}' is stopping"),
                _ => println!("Job '{id}' had ended"),
            }
            Ok(())
        }
        JobCommand::List => {
            let v = api.call("GET", "/api/jobs/", None)?;
            let jobs: Vec<JobDetails> = serde_json::from_value(v).map_err(|e| e.to_string())?;
            for j in jobs {
                println!(
                    "{}\t{}\t{}",
                    j.submission_id,
                    status_word(j.status),
                    j.entrypoint
                );
            }
            Ok(())
        }
    }
}

fn status_word(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "PENDING",
        JobStatus::Running => "RUNNING",
        JobStatus::Stopped => "STOPPED",
        JobStatus::Succeeded => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
    }
}
