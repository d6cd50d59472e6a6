//! How a task or an actor is to run: the options `f::options()` and `A::options()` build.
//! Plain data, checked when built; the core worker reads them at submission.

use crate::error::Error;
use crate::group::{InGroup, PlacementGroup};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a task runs (Ray's `scheduling_strategy`): the default hybrid policy (this node
/// until it is half busy, then the least loaded), spread over the nodes, or a given node.
///
/// ```no_run
/// # #[ray::remote] fn work() -> u8 { 1 }
/// # fn main() -> ray::Result<()> {
/// let node = ray::get_runtime_context()?.node_id;
/// let here = work::options()
///     .scheduling_strategy(ray::SchedulingStrategy::node_affinity(node, false))
///     .remote();
/// let anywhere = work::options().scheduling_strategy(ray::SchedulingStrategy::Spread).remote();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SchedulingStrategy {
    /// Ray's hybrid policy (and locality).
    #[default]
    Default,
    /// Round robin over the nodes that can hold it.
    Spread,
    /// On node `node_id` (hex, as [`crate::nodes`] and the runtime context print it). If it
    /// is dead or can never hold the task, `soft` lets it run elsewhere; otherwise it fails
    /// with [`Error::Unschedulable`].
    NodeAffinity {
        /// The node (32 hex digits).
        node_id: String,
        /// Whether another node may be used.
        soft: bool,
    },
    /// In a bundle of a placement group (Ray's `PlacementGroupSchedulingStrategy`): the
    /// resources it asks for come out of that bundle (`bundle_index`), or out of any bundle
    /// of the group (`None`). It waits until the group is created, and fails if the group
    /// is removed or no bundle could ever hold it.
    PlacementGroup {
        /// The group.
        group: PlacementGroup,
        /// Which bundle (`None`: any).
        bundle_index: Option<usize>,
        /// Whether the tasks and actors it creates run in the group too (any bundle), as
        /// long as they ask for no strategy of their own (Ray's
        /// `placement_group_capture_child_tasks`).
        capture_child_tasks: bool,
    },
}

impl SchedulingStrategy {
    /// [`SchedulingStrategy::NodeAffinity`] to `node_id`.
    pub fn node_affinity(node_id: impl Into<String>, soft: bool) -> Self {
        SchedulingStrategy::NodeAffinity {
            node_id: node_id.into(),
            soft,
        }
    }

    /// [`SchedulingStrategy::PlacementGroup`]: in bundle `bundle_index` of `group` (`None`:
    /// any of its bundles), its own tasks not captured.
    pub fn placement_group(group: &PlacementGroup, bundle_index: Option<usize>) -> Self {
        SchedulingStrategy::PlacementGroup {
            group: group.clone(),
            bundle_index,
            capture_child_tasks: false,
        }
    }

    /// The group, bundle and capture, for [`SchedulingStrategy::PlacementGroup`].
    pub(crate) fn group(&self) -> Option<InGroup> {
        match self {
            SchedulingStrategy::PlacementGroup {
                group,
                bundle_index,
                capture_child_tasks,
            } => Some(InGroup {
                group: group.clone(),
                index: *bundle_index,
                capture: *capture_child_tasks,
            }),
            _ => None,
        }
    }

    /// The wire form (`None`: the default policy; a placement group's tasks are placed by
    /// the default policy too, on the resources of its bundles).
    pub(crate) fn to_proto(&self) -> Result<Option<ray_proto::Strategy>, Error> {
        use ray_proto::strategy::Kind;
        let kind = match self {
            SchedulingStrategy::Default | SchedulingStrategy::PlacementGroup { .. } => {
                return Ok(None)
            }
            SchedulingStrategy::Spread => Kind::Spread(ray_proto::Empty {}),
            SchedulingStrategy::NodeAffinity { node_id, soft } => {
                let node = ray_common::NodeId::from_hex(node_id).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "node affinity: `{node_id}` is not a node id (32 hex digits)"
                    ))
                })?;
                Kind::NodeAffinity(ray_proto::NodeAffinity {
                    node_id: node.to_vec().into(),
                    soft: *soft,
                })
            }
        };
        Ok(Some(ray_proto::Strategy { kind: Some(kind) }))
    }
}

/// Why `n` GPUs cannot be asked for, as Ray says it: more than one GPU must be whole devices
/// (a fraction shares one device; 1.5 would be a device and a half).
pub(crate) fn gpu_request_error(n: f64) -> Option<Error> {
    (n > 1.0 && n.fract() != 0.0).then(|| {
        Error::InvalidArgument(format!(
            "num_gpus = {n}: more than one GPU must be a whole number (a fraction shares one GPU)"
        ))
    })
}

/// Sets variable `name` in `env` (replacing its value), kept sorted by name so that one
/// environment always reads the same.
fn set_env(env: &mut Vec<ray_proto::EnvVar>, name: String, value: String) {
    env.retain(|v| v.name != name);
    env.push(ray_proto::EnvVar { name, value });
    env.sort_by(|a, b| a.name.cmp(&b.name));
}

/// How to create an actor: `Counter::options().name("hits").max_restarts(2).remote(0)`.
#[derive(Clone, Debug, Default)]
pub struct ActorOptions {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) max_concurrency: Option<u32>,
    pub(crate) max_restarts: i32,
    pub(crate) max_task_retries: i32,
    pub(crate) detached: bool,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) get_if_exists: bool,
    pub(crate) env: Vec<ray_proto::EnvVar>,
    pub(crate) strategy: SchedulingStrategy,
    pub(crate) share_process: bool,
}

impl ActorOptions {
    /// Lets the actor share its worker process with other such actors of its job (up to a
    /// few hundred a process), rather than have one of its own as in Ray: thousands of small
    /// actors then start in seconds instead of a process each. Only for an actor that holds
    /// no CPU and no GPU and runs in no placement group (else creation fails with
    /// [`Error::InvalidArgument`]).
    ///
    /// Each actor still runs its calls on a thread (or an event loop) of its own, and is
    /// killed, restarted and ended on its own; what it gives up is the process: actors of a
    /// process share its memory and its statics, a crash of the process (an abort, not a
    /// panic) takes them all, and [`crate::kill`] cannot stop a sync method's call that is
    /// running (the actor is dead at once for its callers; the call's thread ends when it
    /// returns; an async actor's calls stop at their next `.await`).
    ///
    /// ```no_run
    /// #[derive(Default)]
    /// struct Cell { value: u64 }
    ///
    /// #[ray::actor]
    /// impl Cell {
    ///     pub fn new() -> Self { Cell::default() }
    ///     pub fn add(&mut self, x: u64) -> u64 { self.value += x; self.value }
    /// }
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local())?;
    /// let cells: Vec<_> = (0..1000)
    ///     .map(|_| Cell::options().share_process(true).remote())
    ///     .collect();
    /// let sums: Vec<_> = cells.iter().map(|c| c.add(1)).collect();
    /// assert_eq!(ray::get_all(&sums)?, vec![1; 1000]);
    /// # Ok(()) }
    /// ```
    pub fn share_process(mut self, share: bool) -> Self {
        self.share_process = share;
        self
    }

    /// Where the GCS may place the actor (default: [`SchedulingStrategy::Default`]).
    pub fn scheduling_strategy(mut self, strategy: SchedulingStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// An environment variable for the actor's worker process (Ray's
    /// `runtime_env={"env_vars": ..}`).
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        set_env(&mut self.env, name.into(), value.into());
        self
    }

    /// A name, unique in its namespace; find the actor with [`crate::get_actor`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// The namespace of the name (default: the job's).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    /// Calls run on this many threads (or, for an actor with async methods, this many at
    /// once on its runtime; default 1000 there, as in Ray). 1 (the default) keeps order.
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = Some(n);
        self
    }
    /// Restarts after the actor's process dies (-1: forever; default 0).
    pub fn max_restarts(mut self, n: i32) -> Self {
        self.max_restarts = n;
        self
    }
    /// Resends of calls that were in flight when the process died (-1: forever; default 0).
    pub fn max_task_retries(mut self, n: i32) -> Self {
        self.max_task_retries = n;
        self
    }
    /// The actor outlives its creator and stays until [`crate::kill`]ed.
    pub fn lifetime_detached(mut self) -> Self {
        self.detached = true;
        self
    }
    /// CPUs the actor holds while alive (default 0, so many actors share a node).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.resources.insert(ray_scheduler::CPU.into(), n);
        self
    }
    /// GPUs the actor holds for its life (a fraction of one, or whole devices): its worker
    /// sees their ids in `CUDA_VISIBLE_DEVICES` and [`crate::get_gpu_ids`].
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.resources.insert(ray_scheduler::GPU.into(), n);
        self
    }
    /// A custom resource the actor holds.
    pub fn resources(mut self, name: &str, amount: f64) -> Self {
        self.resources.insert(name.into(), amount);
        self
    }
    /// If an actor of this name exists, return it instead (its constructor arguments are
    /// ignored).
    pub fn get_if_exists(mut self) -> Self {
        self.get_if_exists = true;
        self
    }
}

/// Options of one remote call: resources and retries. Made by `f::options()`; invalid
/// values make the call's ref fail with [`Error::InvalidArgument`].
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// What it asks for (of its placement group's bundle, under the group's names, if it
    /// runs in one).
    pub(crate) shape: ray_scheduler::ResourceSet,
    /// What it asks for, whether in a group or not.
    pub(crate) base: ray_scheduler::ResourceSet,
    /// The placement group and bundle it runs in.
    pub(crate) group: Option<InGroup>,
    /// Names the submitter's queue: the shape and the strategy (tasks of one queue share
    /// leases).
    pub(crate) shape_key: Arc<str>,
    pub(crate) strategy: Option<ray_proto::Strategy>,
    strategy_key: String,
    /// Environment variables of the worker that runs it, beyond the job's.
    pub(crate) env: Vec<ray_proto::EnvVar>,
    pub(crate) max_retries: i32,
    pub(crate) retry_exceptions: bool,
    amounts: BTreeMap<String, f64>,
    pub(crate) error: Option<Error>,
    /// A generator's call (set by the macro's output, not by users).
    pub(crate) streaming: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        let mut o = TaskOptions {
            shape: Default::default(),
            base: Default::default(),
            group: None,
            shape_key: "".into(),
            strategy: None,
            strategy_key: String::new(),
            env: Vec::new(),
            max_retries: 3,
            retry_exceptions: false,
            amounts: BTreeMap::new(),
            error: None,
            streaming: false,
        };
        o.set(ray_scheduler::CPU, 1.0);
        o
    }
}

impl TaskOptions {
    fn set(&mut self, name: &str, amount: f64) {
        self.amounts.insert(name.to_string(), amount);
        match ray_scheduler::ResourceSet::from_pairs(self.amounts.clone()) {
            Ok(shape) => {
                self.base = shape;
                self.reshape();
            }
            Err(e) => self.error = Some(Error::InvalidArgument(format!("task resources: {e}"))),
        }
    }

    /// The shape asked for, from the base and the group.
    fn reshape(&mut self) {
        self.shape = match &self.group {
            Some(g) => g.group.shape_in(g.index, &self.base),
            None => self.base.clone(),
        };
        self.rekey();
    }

    /// Why the task cannot run in its placement group, if it cannot.
    pub(crate) fn group_misfit(&self) -> Option<String> {
        let g = self.group.as_ref()?;
        g.group.misfit(g.index, &self.base)
    }

    /// These options in the group a running task captures for its children (`None`: they
    /// are not captured: the running task captures nothing, or they choose a strategy).
    pub(crate) fn captured(&self) -> Option<TaskOptions> {
        if self.group.is_some() || self.strategy.is_some() {
            return None;
        }
        let id = crate::task_context::captured_group()?;
        let mut opts = self.clone();
        opts.group = Some(InGroup::captured(id));
        opts.strategy_key = format!(" captured by {id}");
        opts.reshape();
        Some(opts)
    }

    fn rekey(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect();
        self.shape_key = if env.is_empty() {
            format!("{:?}{}", self.shape.to_map(), self.strategy_key)
        } else {
            format!("{:?}{} env {env:?}", self.shape.to_map(), self.strategy_key)
        }
        .into();
    }

    /// An environment variable for the worker process that runs the task (Ray's
    /// `runtime_env={"env_vars": ..}`); such tasks run on workers started with exactly
    /// their variables.
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        set_env(&mut self.env, name.into(), value.into());
        self.rekey();
        self
    }

    /// Where the task may run (default: [`SchedulingStrategy::Default`]).
    pub fn scheduling_strategy(mut self, strategy: SchedulingStrategy) -> Self {
        match strategy.to_proto() {
            Ok(wire) => {
                self.strategy = wire;
                self.strategy_key = match &strategy {
                    SchedulingStrategy::Default => String::new(),
                    other => format!(" {other:?}"),
                };
                self.group = strategy.group();
                self.reshape();
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// CPUs the task needs (default 1; fractions allowed).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.set(ray_scheduler::CPU, n);
        self
    }

    /// GPUs the task needs: a fraction of one (tasks share the device: `0.01` places the
    /// task on a GPU node and leaves the device to others), or whole devices. Its worker sees
    /// the ids it holds in `CUDA_VISIBLE_DEVICES` and [`crate::get_gpu_ids`].
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.set(ray_scheduler::GPU, n);
        if let Some(e) = gpu_request_error(n) {
            self.error = Some(e);
        }
        self
    }

    /// Memory the task needs, in bytes (logical, as in Ray).
    pub fn memory(mut self, bytes: f64) -> Self {
        self.set(ray_scheduler::MEMORY, bytes);
        self
    }

    /// A custom resource the task needs.
    pub fn resources(mut self, name: &str, amount: f64) -> Self {
        self.set(name, amount);
        self
    }

    /// Retries after the worker dies (default 3, -1 forever, 0 never). A task that returns
    /// `Err` or panics is not retried unless [`TaskOptions::retry_exceptions`] is set.
    pub fn max_retries(mut self, n: i32) -> Self {
        self.max_retries = n;
        self
    }

    /// Also retry the task, within `max_retries`, when it returns `Err` or panics (Ray's
    /// `retry_exceptions=True`; default false). `get` sees the last run's error once the
    /// retries are spent.
    ///
    /// ```no_run
    /// #[ray::remote(max_retries = 2, retry_exceptions = true)]
    /// fn flaky() -> Result<u8, String> { Err("try again".into()) }
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local())?;
    /// let three_runs = flaky::remote();
    /// let once = flaky::options().retry_exceptions(false).remote();
    /// assert!(ray::get(&three_runs).is_err() && ray::get(&once).is_err());
    /// # Ok(()) }
    /// ```
    pub fn retry_exceptions(mut self, retry: bool) -> Self {
        self.retry_exceptions = retry;
        self
    }
}
