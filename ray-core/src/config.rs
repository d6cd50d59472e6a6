//! How a driver starts: [`Config`].

use crate::error::Error;
use std::collections::BTreeMap;

/// Where tasks run.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// In the calling process, one at a time: no workers, no shared memory. For debugging.
    Sync,
    /// An embedded head and node manager with worker processes on this machine (the default).
    Local,
    /// Connect to a running cluster at this address.
    Cluster(String),
}

/// Settings for [`crate::init`]. Build with [`Config::local`], [`Config::sync`] or
/// [`Config::from_env`], then adjust:
///
/// ```
/// let config = ray::Config::local()
///     .num_cpus(2.0)
///     .resources("accelerator_slot", 1.0)
///     .object_store_memory(256 << 20)
///     .ignore_reinit_error(true);
/// assert_eq!(config.mode(), &ray::Mode::Local);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) mode: Mode,
    pub(crate) num_cpus: Option<f64>,
    pub(crate) num_gpus: Option<f64>,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) object_store_memory: Option<u64>,
    pub(crate) namespace: Option<String>,
    pub(crate) ignore_reinit_error: bool,
    pub(crate) max_workers: Option<usize>,
    pub(crate) worker_limit_wait: std::time::Duration,
    pub(crate) auth_token: Option<String>,
    pub(crate) runtime_env: RuntimeEnv,
    pub(crate) ship_binary: bool,
    pub(crate) task_events: bool,
    pub(crate) log_to_driver: bool,
    /// `None`: 8265 if free, else another port; `Some(0)`: no dashboard.
    pub(crate) dashboard_port: Option<u16>,
}

/// The variable (Ray's) and value that turn task events off, for a driver and its workers.
pub(crate) const TASK_EVENTS_OFF: (&str, &str) = ("RAY_task_events_report_interval_ms", "0");

/// What the job's worker processes run with beyond the driver's program (Ray's
/// `runtime_env`): environment variables, for now.
///
/// ```no_run
/// let env = ray::RuntimeEnv::new().env_var("MODEL_DIR", "/models");
/// ray::init(ray::Config::local().runtime_env(env))?;
/// # Ok::<(), ray::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeEnv {
    env_vars: BTreeMap<String, String>,
}

impl RuntimeEnv {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// An environment variable every worker of the job is started with.
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_vars.insert(name.into(), value.into());
        self
    }

    pub(crate) fn to_proto(&self) -> Vec<ray_proto::EnvVar> {
        self.env_vars
            .iter()
            .map(|(name, value)| ray_proto::EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

impl Config {
    fn with_mode(mode: Mode) -> Self {
        Config {
            mode,
            num_cpus: None,
            num_gpus: None,
            resources: BTreeMap::new(),
            object_store_memory: None,
            namespace: None,
            ignore_reinit_error: false,
            max_workers: None,
            worker_limit_wait: std::time::Duration::from_secs(30),
            auth_token: None,
            runtime_env: RuntimeEnv::default(),
            ship_binary: false,
            task_events: true,
            log_to_driver: true,
            dashboard_port: None,
        }
    }

    /// Most worker processes the node starts (default: what its memory and file descriptors
    /// allow beside the object store, at 16 MiB a worker). Actors may hold all but a few,
    /// which stay for tasks. A task or actor that finds the limit reached waits, with a
    /// warning, and fails after [`Config::worker_limit_wait`].
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n.max(2));
        self
    }

    /// How long a task or actor may wait for a worker process while the node's worker limit
    /// is reached before it fails with [`Error::Unschedulable`] (a task) or
    /// [`Error::ActorDied`] (an actor) naming the limit (default 30 s).
    pub fn worker_limit_wait(mut self, wait: std::time::Duration) -> Self {
        self.worker_limit_wait = wait;
        self
    }

    /// Cluster mode: attach to the cluster whose head's GCS is at `address` (`HOST:PORT`, as
    /// `rayrs start --head` printed it, or `auto` for the head started on this machine).
    /// The driver attaches to a node on its own machine. Same as `RAY_ADDRESS=address` with
    /// [`Config::from_env`].
    ///
    /// ```no_run
    /// ray::init(ray::Config::cluster("127.0.0.1:6379"))?;
    /// # Ok::<(), ray::Error>(())
    /// ```
    pub fn cluster(address: impl Into<String>) -> Self {
        Self::with_mode(Mode::Cluster(address.into()))
    }

    /// What the job's workers run with (their environment variables): Ray's `runtime_env`.
    pub fn runtime_env(mut self, env: RuntimeEnv) -> Self {
        self.runtime_env = env;
        self
    }

    /// Cluster mode: ship this program to the cluster even if every node runs on this
    /// machine (it is shipped anyway when a node runs on another machine). Nodes then start
    /// the job's workers from their checked copy. Also `RAYRS_SHIP_BINARY=1`.
    pub fn ship_binary(mut self, ship: bool) -> Self {
        self.ship_binary = ship;
        self
    }

    /// The cluster's auth token (cluster mode), instead of `RAY_AUTH_TOKEN` or the file
    /// `~/.rayrs/auth_token` where a driver finds it otherwise.
    ///
    /// ```no_run
    /// let config = ray::Config::cluster("10.0.0.1:6379").auth_token("the-token-the-head-printed");
    /// ```
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Whether the job's processes report task events, which the state API lists (on by
    /// default; Ray's `RAY_task_events_report_interval_ms=0` turns them off too). Off, the
    /// state API lists no task of this job.
    pub fn task_events(mut self, on: bool) -> Self {
        self.task_events = on;
        self
    }

    /// Whether what the job's tasks and actors print (their workers' standard output and
    /// error) is printed by this driver too, each line prefixed `(name pid=N)` as Ray's
    /// `log_to_driver` does (on by default; `RAY_LOG_TO_DRIVER=0` turns it off). Either way
    /// each worker's output is kept in files under [`crate::logs_dir`].
    ///
    /// ```
    /// let quiet = ray::Config::local().log_to_driver(false);
    /// # let _ = quiet;
    /// ```
    pub fn log_to_driver(mut self, on: bool) -> Self {
        self.log_to_driver = on;
        self
    }

    /// The port of a local session's dashboard (Ray's `dashboard_port`), on 127.0.0.1; 0
    /// starts none. Unset, the dashboard takes 8265, or another free port when 8265 is
    /// taken (with a warning); set, a taken port fails [`crate::init`]. Its address, with the
    /// session's token, is [`crate::dashboard_url`]. A driver joining a cluster starts no
    /// dashboard: the head serves one (`rayrs start --head --dashboard-port`).
    ///
    /// ```
    /// let config = ray::Config::local().dashboard_port(0); // none
    /// # let _ = config;
    /// ```
    pub fn dashboard_port(mut self, port: u16) -> Self {
        self.dashboard_port = Some(port);
        self
    }

    /// Where a local session's dashboard listens, if it has one.
    pub(crate) fn dashboard_bind(&self) -> Option<ray_dashboard::Bind> {
        let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        match self.dashboard_port {
            None => Some(ray_dashboard::Bind::Preferred(at(
                ray_dashboard::DEFAULT_PORT,
            ))),
            Some(0) => None,
            Some(port) => Some(ray_dashboard::Bind::Exact(at(port))),
        }
    }

    /// The job's environment as its workers get it: the runtime env's variables, and the
    /// switch that keeps their task events off when this job's are.
    pub(crate) fn job_env(&self) -> Vec<ray_proto::EnvVar> {
        let mut env = self.runtime_env.to_proto();
        if !self.task_events {
            env.push(ray_proto::EnvVar {
                name: TASK_EVENTS_OFF.0.into(),
                value: TASK_EVENTS_OFF.1.into(),
            });
        }
        env
    }

    /// Local mode: worker processes on this machine.
    pub fn local() -> Self {
        Self::with_mode(Mode::Local)
    }

    /// Sync mode: every task runs in the calling thread when submitted.
    pub fn sync() -> Self {
        Self::with_mode(Mode::Sync)
    }

    /// Reads `RAY_ADDRESS` (unset, empty or `local`: local mode; `sync`: sync mode; anything
    /// else: a cluster address), `RAY_NUM_CPUS`, `RAY_NUM_GPUS`, `RAY_OBJECT_STORE_MEMORY`,
    /// `RAY_NAMESPACE`, `RAY_RESOURCES` (`name=amount,...`), `RAY_IGNORE_REINIT_ERROR` and
    /// `RAY_LOG_TO_DRIVER` (`0` or `false`: off). A malformed value is reported by [`crate::init`].
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub(crate) fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let mode = match get("RAY_ADDRESS").as_deref().map(str::trim) {
            None | Some("") | Some("local") => Mode::Local,
            Some("sync") => Mode::Sync,
            Some(addr) => Mode::Cluster(addr.to_string()),
        };
        let mut c = Self::with_mode(mode);
        let num = |k: &str| get(k).map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN));
        c.num_cpus = num("RAY_NUM_CPUS");
        c.num_gpus = num("RAY_NUM_GPUS");
        c.object_store_memory =
            get("RAY_OBJECT_STORE_MEMORY").map(|v| v.trim().parse::<u64>().unwrap_or(0));
        c.namespace = get("RAY_NAMESPACE");
        c.ship_binary = get("RAYRS_SHIP_BINARY").as_deref() == Some("1");
        c.task_events = get(TASK_EVENTS_OFF.0).as_deref().map(str::trim) != Some(TASK_EVENTS_OFF.1);
        c.log_to_driver = !matches!(
            get("RAY_LOG_TO_DRIVER").as_deref().map(str::trim),
            Some("0") | Some("false")
        );
        c.ignore_reinit_error = matches!(
            get("RAY_IGNORE_REINIT_ERROR").as_deref(),
            Some("1") | Some("true")
        );
        if let Some(spec) = get("RAY_RESOURCES") {
            for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, amount) = part.split_once('=').unwrap_or((part, "nan"));
                c.resources.insert(
                    name.trim().to_string(),
                    amount.trim().parse().unwrap_or(f64::NAN),
                );
            }
        }
        c
    }

    /// The mode chosen.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// CPUs this node offers (default: the machine's cores). Fractions allowed.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = Some(n);
        self
    }

    /// GPUs this node offers (default: those it detects, from the `CUDA_VISIBLE_DEVICES` it
    /// was started with or `nvidia-smi -L`; none without either). Told of more than it has,
    /// it hands out made-up ids (0, 1, ..): fake GPUs, as tests use.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = Some(n);
        self
    }

    /// A custom resource this node offers.
    pub fn resources(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }

    /// Capacity of the shared-memory object store in bytes (default 30% of RAM).
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// Namespace of the job (named actors live in one).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Make a second `init` a no-op instead of [`Error::AlreadyInitialized`].
    pub fn ignore_reinit_error(mut self, ignore: bool) -> Self {
        self.ignore_reinit_error = ignore;
        self
    }

    /// The node's resources, checked.
    pub(crate) fn node_resources(&self) -> Result<ray_scheduler::ResourceSet, Error> {
        let cpus = self.num_cpus.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        });
        let mut pairs: Vec<(String, f64)> = vec![
            (ray_scheduler::CPU.into(), cpus),
            (
                ray_scheduler::GPU.into(),
                self.num_gpus
                    .unwrap_or_else(|| ray_raylet::gpus::detect().len() as f64),
            ),
        ];
        pairs.extend(self.resources.iter().map(|(k, v)| (k.clone(), *v)));
        ray_scheduler::ResourceSet::from_pairs(pairs)
            .map_err(|e| Error::InvalidArgument(format!("node resources: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_reads_the_ray_variables() {
        let vars = [
            ("RAY_NUM_CPUS", "3"),
            ("RAY_RESOURCES", "slot=2, disk=1"),
            ("RAY_NAMESPACE", "web"),
            ("RAY_IGNORE_REINIT_ERROR", "1"),
        ];
        let c = Config::from_vars(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        });
        assert_eq!(c.mode, Mode::Local);
        assert_eq!(c.num_cpus, Some(3.0));
        assert_eq!(c.resources.get("disk"), Some(&1.0));
        assert_eq!(c.namespace.as_deref(), Some("web"));
        assert!(c.ignore_reinit_error);
        let r = c.node_resources().unwrap();
        assert_eq!(r.get("slot"), 2.0);
        let sync = Config::from_vars(|k| (k == "RAY_ADDRESS").then(|| "sync".to_string()));
        assert_eq!(sync.mode, Mode::Sync);
    }

    #[test]
    fn malformed_resources_are_rejected() {
        let c = Config::from_vars(|k| (k == "RAY_NUM_CPUS").then(|| "lots".to_string()));
        assert!(matches!(c.node_resources(), Err(Error::InvalidArgument(_))));
        assert!(Config::local().num_cpus(-1.0).node_resources().is_err());
    }
}
