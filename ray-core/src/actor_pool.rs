//! `ActorPool` (Ray's `ray.util.ActorPool`): work spread over a fixed set of actors, each
//! given one item at a time, results taken in submission order or as they finish.

use crate::actor_handle::{ActorClass, ActorHandle};
use crate::error::{Error, Result};
use crate::object_ref::ObjectRef;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};

/// A call waiting for a free actor.
type Pending<A, R> = Box<dyn FnOnce(&ActorHandle<A>) -> ObjectRef<R> + Send>;

/// A pool of actors of class `A` whose calls return `R`: [`ActorPool::submit`] gives an
/// item to a free actor (or queues it until one is free), [`ActorPool::get_next`] returns
/// results in submission order, [`ActorPool::get_next_unordered`] as they finish.
///
/// ```
/// struct Doubler;
///
/// #[ray::actor]
/// impl Doubler {
///     pub fn new() -> Self { Doubler }
///     pub fn double(&self, x: u32) -> u32 { 2 * x }
/// }
///
/// ray::init(ray::Config::sync()).unwrap();
/// let mut pool = ray::util::ActorPool::new(vec![Doubler::remote(), Doubler::remote()]);
/// let doubled: Vec<u32> = pool
///     .map(|a, x| a.double(x), 1..=4)
///     .collect::<ray::Result<_>>()
///     .unwrap();
/// assert_eq!(doubled, vec![2, 4, 6, 8]);
/// ray::shutdown();
/// ```
pub struct ActorPool<A: ActorClass, R> {
    idle: Vec<ActorHandle<A>>,
    /// Submitted and given to an actor, by submission index.
    running: BTreeMap<u64, (ObjectRef<R>, ActorHandle<A>)>,
    /// Submitted, waiting for a free actor, in submission order.
    pending: VecDeque<(u64, Pending<A, R>)>,
    next_index: u64,
    /// The next index [`ActorPool::get_next`] returns.
    next_return: u64,
    /// [`ActorPool::get_next_unordered`] was used: results no longer come in order.
    unordered: bool,
}

impl<A: ActorClass, R: DeserializeOwned> ActorPool<A, R> {
    /// A pool of `actors`, all free.
    pub fn new(actors: Vec<ActorHandle<A>>) -> Self {
        ActorPool {
            idle: actors,
            running: BTreeMap::new(),
            pending: VecDeque::new(),
            next_index: 0,
            next_return: 0,
            unordered: false,
        }
    }

    /// Calls `f(actor, value)` on a free actor now, or once one is free.
    pub fn submit<V: Send + 'static>(
        &mut self,
        f: impl FnOnce(&ActorHandle<A>, V) -> ObjectRef<R> + Send + 'static,
        value: V,
    ) {
        let index = self.next_index;
        self.next_index += 1;
        self.pending
            .push_back((index, Box::new(move |actor| f(actor, value))));
        self.dispatch();
    }

    /// Whether results are still to be taken.
    pub fn has_next(&self) -> bool {
        !self.running.is_empty() || !self.pending.is_empty()
    }

    /// Whether an actor is free.
    pub fn has_free(&self) -> bool {
        !self.idle.is_empty() && self.pending.is_empty()
    }

    /// The next result in submission order (blocking until it is ready). Fails with
    /// [`Error::InvalidArgument`] if nothing is left, or after `get_next_unordered` (as Ray's
    /// does); a task's own error is returned as that result.
    pub fn get_next(&mut self) -> Result<R> {
        if self.unordered {
            return Err(Error::InvalidArgument(
                "get_next after get_next_unordered: results no longer come in order".into(),
            ));
        }
        let index = self.next_return;
        // Earlier results were taken, so their actors came back: this one is running.
        let Some((r, actor)) = self.running.remove(&index) else {
            return Err(Error::InvalidArgument(match self.pending.is_empty() {
                true => "no more results in the pool".into(),
                false => "the pool has no actor to run its work".into(),
            }));
        };
        self.next_return += 1;
        let value = crate::get(&r);
        self.give_back(actor);
        value
    }

    /// The result that finishes first (blocking until one does).
    pub fn get_next_unordered(&mut self) -> Result<R> {
        if self.running.is_empty() {
            return Err(Error::InvalidArgument(match self.pending.is_empty() {
                true => "no more results in the pool".into(),
                false => "the pool has no actor to run its work".into(),
            }));
        }
        self.unordered = true;
        let refs: Vec<ObjectRef<R>> = self.running.values().map(|(r, _)| r.clone()).collect();
        let (ready, _) = crate::wait(&refs, 1, None)?;
        let done = ready[0].object_id();
        let index = *self
            .running
            .iter()
            .find(|(_, (r, _))| r.object_id() == done)
            .map(|(i, _)| i)
            .expect("a ready ref is running");
        let (r, actor) = self.running.remove(&index).expect("found");
        let value = crate::get(&r);
        self.give_back(actor);
        value
    }

    /// Submits `f(actor, v)` for every `v`, and yields the results in order.
    pub fn map<V: Send + 'static>(
        &mut self,
        f: impl Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Send + Sync + Clone + 'static,
        values: impl IntoIterator<Item = V>,
    ) -> impl Iterator<Item = Result<R>> + '_ {
        let n = self.submit_all(f, values);
        (0..n).map(move |_| self.get_next())
    }

    /// Submits `f(actor, v)` for every `v`, and yields the results as they finish.
    pub fn map_unordered<V: Send + 'static>(
        &mut self,
        f: impl Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Send + Sync + Clone + 'static,
        values: impl IntoIterator<Item = V>,
    ) -> impl Iterator<Item = Result<R>> + '_ {
        let n = self.submit_all(f, values);
        (0..n).map(move |_| self.get_next_unordered())
    }

    /// A free actor, taken out of the pool.
    pub fn pop_idle(&mut self) -> Option<ActorHandle<A>> {
        self.idle.pop()
    }

    /// Adds `actor` to the pool (it takes waiting work at once).
    pub fn push(&mut self, actor: ActorHandle<A>) {
        self.give_back(actor);
    }

    fn submit_all<V: Send + 'static>(
        &mut self,
        f: impl Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Send + Sync + Clone + 'static,
        values: impl IntoIterator<Item = V>,
    ) -> usize {
        let mut n = 0;
        for v in values {
            self.submit(f.clone(), v);
            n += 1;
        }
        n
    }

    fn give_back(&mut self, actor: ActorHandle<A>) {
        self.idle.push(actor);
        self.dispatch();
    }

    /// Gives waiting work to free actors, oldest first.
    fn dispatch(&mut self) {
        while !self.idle.is_empty() {
            let Some((index, call)) = self.pending.pop_front() else {
                return;
            };
            let actor = self.idle.pop().expect("checked");
            let r = call(&actor);
            self.running.insert(index, (r, actor));
        }
    }
}
