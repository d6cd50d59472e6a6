//! Starting a node's workers: [`WorkerLauncher`], the seam through which a test may launch
//! workers inside its own process, and [`ProcessLauncher`], which starts the job's program
//! as a worker process, its output piped to the node (see [`crate::logs`]).

use crate::worker_env;
use ray_common::WorkerId;
use ray_proto::JobConfig;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

/// What a worker is started with.
pub struct LaunchRequest<'a> {
    pub worker_id: WorkerId,
    /// The job it serves: its program, environment and namespace.
    pub job: &'a JobConfig,
    /// Where it registers.
    pub node_manager: &'a str,
    /// The session's unique name (for the worker's socket names).
    pub session: &'a str,
}

/// Kills a worker; harmless once it is gone.
pub type Killer = Arc<dyn Fn() + Send + Sync>;

/// A worker started and not yet handed its token (it registers only once it has it).
pub trait LaunchedWorker: Send {
    /// Its process id (the node manager's own for a worker launched in-process).
    fn pid(&self) -> u32;
    /// Hands it the session token, on a channel only it reads.
    fn hand_token(&mut self, token: &str) -> std::io::Result<()>;
    /// A way to kill it, kept by the node manager while it lives.
    fn killer(&self) -> Killer;
    /// Resolves once it has exited, saying how.
    fn exited(self: Box<Self>) -> Pin<Box<dyn Future<Output = String> + Send>>;
    /// Its standard output and error, to read (`None`: they are not piped, as for a worker
    /// launched in-process).
    fn take_output(&mut self) -> Option<crate::logs::WorkerOutput> {
        None
    }
}

/// Starts workers for a node manager.
pub trait WorkerLauncher: Send + Sync + 'static {
    /// Starts the worker `request` describes.
    fn launch(&self, request: &LaunchRequest<'_>) -> Result<Box<dyn LaunchedWorker>, String>;
}

/// Starts each worker as a process running the job's program, which enters worker mode on
/// the environment set here; it dies with the node manager's thread that started it.
#[derive(Default)]
pub struct ProcessLauncher;

struct Process {
    child: tokio::process::Child,
    pid: u32,
}

impl WorkerLauncher for ProcessLauncher {
    fn launch(&self, request: &LaunchRequest<'_>) -> Result<Box<dyn LaunchedWorker>, String> {
        let job = request.job;
        let mut cmd = tokio::process::Command::new(&job.program);
        // The job's variables first: a user's `RAYRS_*` never overrides the worker's own.
        cmd.envs(job.env.iter().map(|v| (&v.name, &v.value)))
            .env(worker_env::WORKER_MODE, "1")
            .env(worker_env::NODE_MANAGER, request.node_manager)
            .env(worker_env::WORKER_ID, request.worker_id.to_string())
            .env(worker_env::SESSION, request.session)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill this child when
        // the thread that started it exits, so workers never outlive a crashed driver.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", job.program))?;
        let pid = child.id().unwrap_or(0);
        Ok(Box::new(Process { child, pid }))
    }
}

impl LaunchedWorker for Process {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn hand_token(&mut self, token: &str) -> std::io::Result<()> {
        match self.child.stdin.take() {
            Some(stdin) => stdin
                .into_owned_fd()
                .map(std::fs::File::from)
                .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes())),
            None => Ok(()),
        }
    }

    fn take_output(&mut self) -> Option<crate::logs::WorkerOutput> {
        let stdout = self.child.stdout.take()?;
        let stderr = self.child.stderr.take()?;
        Some(crate::logs::WorkerOutput {
            stdout: Box::new(stdout),
            stderr: Box::new(stderr),
        })
    }

    fn killer(&self) -> Killer {
        let pid = self.pid;
        Arc::new(move || kill_pid(pid))
    }

    fn exited(mut self: Box<Self>) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async move {
            match self.child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown ({e})"),
            }
        })
    }
}

fn kill_pid(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: plain syscall on a pid this node manager started and has not yet forgotten: it
    // forgets a worker only after reaping it, so the pid cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}
