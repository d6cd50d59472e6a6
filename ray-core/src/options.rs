//! How a task or an actor is to run: the options `f::options()` and `A::options()` build.
//! Plain data, checked when built; the core worker reads them at submission.

use crate::error::Error;
use std::collections::BTreeMap;
use std::sync::Arc;

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
}

impl ActorOptions {
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
    /// GPUs the actor holds.
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
    pub(crate) shape: ray_scheduler::ResourceSet,
    pub(crate) shape_key: Arc<str>,
    pub(crate) max_retries: i32,
    amounts: BTreeMap<String, f64>,
    pub(crate) error: Option<Error>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        let mut o = TaskOptions {
            shape: Default::default(),
            shape_key: "".into(),
            max_retries: 3,
            amounts: BTreeMap::new(),
            error: None,
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
                self.shape_key = format!("{:?}", shape.to_map()).into();
                self.shape = shape;
            }
            Err(e) => self.error = Some(Error::InvalidArgument(format!("task resources: {e}"))),
        }
    }

    /// CPUs the task needs (default 1; fractions allowed).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.set(ray_scheduler::CPU, n);
        self
    }

    /// GPUs the task needs.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.set(ray_scheduler::GPU, n);
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
    /// `Err` or panics is not retried.
    pub fn max_retries(mut self, n: i32) -> Self {
        self.max_retries = n;
        self
    }
}
