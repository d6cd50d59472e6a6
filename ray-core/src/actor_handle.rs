//! Actors: [`ActorHandle`], [`ActorOptions`], [`get_actor`] and [`kill`].
//!
//! An actor lives in a dedicated worker process, placed and (re)started by the GCS. Each
//! caller keeps one ordered connection to it, so calls from one caller to a sequential actor
//! run in the order they were made.

use crate::args::ArgSpec;
pub use crate::core_worker::ActorCore;
use crate::current::current;
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use crate::options::ActorOptions;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;

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

    /// Kills the actor's process at once. With `no_restart` the actor is dead for good
    /// (as [`kill`]); without, it restarts if its `max_restarts` allow, as after a crash
    /// (calls in flight fail with [`Error::ActorUnavailable`] or are resent, per
    /// `max_task_retries`). Ray's `ray.kill(actor, no_restart=)`.
    ///
    /// ```no_run
    /// struct Cache;
    ///
    /// #[ray::actor]
    /// impl Cache {
    ///     pub fn new() -> Self { Cache }
    ///     pub fn restarted(&self) -> bool {
    ///         ray::get_runtime_context().unwrap().was_current_actor_reconstructed
    ///     }
    /// }
    /// # fn main() -> ray::Result<()> {
    /// # ray::init(ray::Config::local())?;
    /// let c = Cache::options().max_restarts(1).max_task_retries(-1).remote();
    /// c.kill(false)?; // restarts
    /// assert!(ray::get(&c.restarted())?);
    /// # Ok(()) }
    /// ```
    pub fn kill(&self, no_restart: bool) -> Result<()> {
        let core = self.core();
        if let Some(e) = &core.failed {
            return Err(e.clone());
        }
        let cause = if no_restart {
            "killed by ActorHandle::kill(no_restart = true)"
        } else {
            "killed by ActorHandle::kill(no_restart = false)"
        };
        current()?.kill_actor(core.actor_id, cause, no_restart)
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
        let lifetime = c.lifetime.clone().map(ObjectRef::<()>::from_inner);
        (c.actor_id.0, c.max_task_retries, lifetime).serialize(s)
    }
}

impl<'de, A: ActorClass> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (actor_id, max_task_retries, lifetime): ([u8; 16], i32, Option<ObjectRef<()>>) =
            Deserialize::deserialize(d)?;
        Ok(Self::from_core(ActorCore {
            actor_id: ray_common::ActorId(actor_id),
            class: A::CLASS.into(),
            max_task_retries,
            lifetime: lifetime.map(|r| r.inner),
            failed: None,
        }))
    }
}

/// The live actor named `name` in `namespace` (default: the job's namespace). Fails with
/// [`Error::InvalidArgument`] if there is none, or if it is of another class.
///
/// ```
/// struct Registry(Vec<String>);
///
/// #[ray::actor]
/// impl Registry {
///     pub fn new() -> Self { Registry(Vec::new()) }
///     pub fn add(&mut self, name: String) -> usize { self.0.push(name); self.0.len() }
/// }
///
/// ray::init(ray::Config::sync()).unwrap();
/// let _keep = Registry::options().name("registry").remote();
/// let found = ray::get_actor::<Registry>("registry", None).unwrap();
/// assert_eq!(ray::get(&found.add("a".to_string())).unwrap(), 1);
/// assert!(ray::get_actor::<Registry>("nobody", None).is_err());
/// ray::shutdown();
/// ```
pub fn get_actor<A: ActorClass>(name: &str, namespace: Option<&str>) -> Result<ActorHandle<A>> {
    let rt = current()?;
    let ns = namespace.unwrap_or(&rt.me().namespace).to_string();
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
///
/// ```
/// struct Worker;
///
/// #[ray::actor]
/// impl Worker {
///     pub fn new() -> Self { Worker }
///     pub fn ping(&self) -> u8 { 1 }
/// }
///
/// ray::init(ray::Config::sync()).unwrap();
/// let w = Worker::remote();
/// assert_eq!(ray::get(&w.ping()), Ok(1));
/// ray::kill(&w).unwrap();
/// assert!(matches!(ray::get(&w.ping()), Err(ray::Error::ActorDied { .. })));
/// ray::shutdown();
/// ```
pub fn kill<A: ActorClass>(handle: &ActorHandle<A>) -> Result<()> {
    let core = handle.core();
    if let Some(e) = &core.failed {
        return Err(e.clone());
    }
    current()?.kill_actor(core.actor_id, "killed by ray::kill", true)
}

/// Creates an actor (generated `remote` calls this). Failures before the actor exists, such
/// as a taken name, come back as an error.
pub fn try_create_actor<A: ActorClass>(
    opts: ActorOptions,
    args: Vec<ArgSpec>,
) -> Result<ActorHandle<A>> {
    current()?
        .create_actor(A::CLASS, opts, args)
        .map(ActorHandle::from_core)
}

/// [`try_create_actor`], with an error carried by the handle: every call on it fails with it.
pub fn create_actor<A: ActorClass>(opts: ActorOptions, args: Vec<ArgSpec>) -> ActorHandle<A> {
    try_create_actor(opts, args).unwrap_or_else(|e| {
        ActorHandle::from_core(ActorCore {
            actor_id: Default::default(),
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
    match current() {
        Ok(cw) => ObjectRef::from_inner(cw.call_actor(core, method, args)),
        Err(e) => ObjectRef::failed(e),
    }
}
