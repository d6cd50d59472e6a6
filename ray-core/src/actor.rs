//! Actors: [`ActorHandle`], [`ActorOptions`], [`get_actor`] and [`kill`].
//!
//! An actor lives in a dedicated worker process, placed and (re)started by the GCS. Each
//! caller keeps one ordered connection to it, so calls from one caller to a sequential actor
//! run in the order they were made.

use crate::args::ArgSpec;
use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::object_ref::ObjectRef;
use crate::runtime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// Implemented by `#[ray::actor]` for the actor's type.
pub trait ActorClass: Sized + 'static {
    /// The generated type whose methods submit calls (what a handle derefs to).
    type Client: ActorClient;
    /// Stable name of the class.
    const CLASS: &'static str;
}

/// The generated method-call side of a handle.
pub trait ActorClient: Clone + Send + Sync + 'static {
    /// Wraps the untyped handle.
    fn from_core(core: ActorCore) -> Self;
    /// The untyped handle.
    fn core(&self) -> &ActorCore;
}

/// The untyped part of a handle.
#[derive(Clone, Debug)]
pub struct ActorCore {
    pub(crate) actor_id: [u8; 16],
    pub(crate) class: Arc<str>,
    pub(crate) max_task_retries: i32,
    /// Keeps an owner-scoped actor alive (a ref the reference table counts); `None` for
    /// detached actors and handles from `get_actor`.
    pub(crate) lifetime: Option<ObjectRef<()>>,
    /// Set when creation failed before the actor existed (e.g. its name is taken).
    pub(crate) failed: Option<Error>,
}

impl ActorCore {
    /// The actor's id, 32 hex digits.
    pub fn id(&self) -> String {
        ObjectId(self.actor_id).to_hex()
    }
}

/// A handle to an actor of type `A`: call its methods directly (`handle.incr(5)`), clone it,
/// pass it to tasks and other actors.
///
/// ```
/// #[ray::actor]
/// pub struct Counter { n: u64 }
///
/// #[ray::actor]
/// impl Counter {
///     pub fn new(start: u64) -> Self { Counter { n: start } }
///     pub fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
/// }
///
/// ray::init(ray::Config::sync()).unwrap();
/// let c: ray::ActorHandle<Counter> = Counter::remote(1);
/// assert_eq!(ray::get(&c.incr(2)).unwrap(), 3);
/// ray::shutdown();
/// ```
pub struct ActorHandle<A: ActorClass> {
    client: A::Client,
    _class: PhantomData<fn() -> A>,
}

impl<A: ActorClass> ActorHandle<A> {
    pub(crate) fn from_core(core: ActorCore) -> Self {
        ActorHandle {
            client: A::Client::from_core(core),
            _class: PhantomData,
        }
    }

    pub(crate) fn core(&self) -> &ActorCore {
        self.client.core()
    }
}

impl<A: ActorClass> std::ops::Deref for ActorHandle<A> {
    type Target = A::Client;
    fn deref(&self) -> &A::Client {
        &self.client
    }
}

impl<A: ActorClass> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            client: self.client.clone(),
            _class: PhantomData,
        }
    }
}

impl<A: ActorClass> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle<{}>({})", A::CLASS, self.core().id())
    }
}

impl<A: ActorClass> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let c = self.core();
        if let Some(e) = &c.failed {
            return Err(serde::ser::Error::custom(format!(
                "a failed actor handle: {e}"
            )));
        }
        (c.actor_id, c.max_task_retries, &c.lifetime).serialize(s)
    }
}

impl<'de, A: ActorClass> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (actor_id, max_task_retries, lifetime): ([u8; 16], i32, Option<ObjectRef<()>>) =
            Deserialize::deserialize(d)?;
        Ok(Self::from_core(ActorCore {
            actor_id,
            class: A::CLASS.into(),
            max_task_retries,
            lifetime,
            failed: None,
        }))
    }
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
}

impl ActorOptions {
    /// A name, unique in its namespace; find the actor with [`get_actor`].
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
    /// The actor outlives its creator and stays until [`kill`]ed.
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

/// The live actor named `name` in `namespace` (default: the job's namespace). Fails with
/// [`Error::InvalidArgument`] if there is none, or if it is of another class.
pub fn get_actor<A: ActorClass>(name: &str, namespace: Option<&str>) -> Result<ActorHandle<A>> {
    let rt = runtime::current()?;
    let ns = namespace.unwrap_or(&rt.namespace).to_string();
    let (actor_id, class, max_task_retries) = rt.lookup_named_actor(name, &ns)?;
    if class != A::CLASS {
        return Err(Error::InvalidArgument(format!(
            "actor '{name}' is a {class}, not a {}",
            A::CLASS
        )));
    }
    Ok(ActorHandle::from_core(ActorCore {
        actor_id,
        class: A::CLASS.into(),
        max_task_retries,
        lifetime: None,
        failed: None,
    }))
}

/// Kills the actor at once, without restarting it: running, queued and later calls fail
/// with [`Error::ActorDied`] (Ray's `ray.kill(no_restart=True)`).
pub fn kill<A: ActorClass>(handle: &ActorHandle<A>) -> Result<()> {
    let core = handle.core();
    if let Some(e) = &core.failed {
        return Err(e.clone());
    }
    runtime::current()?.kill_actor(core.actor_id, "killed by ray::kill", true)
}

/// Creates an actor (generated `remote` calls this). Failures before the actor exists, such
/// as a taken name, come back as an error.
pub fn try_create_actor<A: ActorClass>(
    opts: ActorOptions,
    args: Vec<ArgSpec>,
) -> Result<ActorHandle<A>> {
    let rt = runtime::current()?;
    rt.create_actor(A::CLASS, opts, args)
        .map(ActorHandle::from_core)
}

/// [`try_create_actor`], with an error carried by the handle: every call on it fails with it.
pub fn create_actor<A: ActorClass>(opts: ActorOptions, args: Vec<ArgSpec>) -> ActorHandle<A> {
    try_create_actor(opts, args).unwrap_or_else(|e| {
        ActorHandle::from_core(ActorCore {
            actor_id: [0; 16],
            class: A::CLASS.into(),
            max_task_retries: 0,
            lifetime: None,
            failed: Some(e),
        })
    })
}

/// Submits a method call (generated methods call this).
pub fn call_actor<R>(core: &ActorCore, method: &'static str, args: Vec<ArgSpec>) -> ObjectRef<R> {
    if let Some(e) = &core.failed {
        return ObjectRef::failed(e.clone());
    }
    match runtime::current() {
        Ok(rt) => rt.call_actor(core, method, args),
        Err(e) => ObjectRef::failed(e),
    }
}
