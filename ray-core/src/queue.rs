//! `Queue` (Ray's `ray.util.queue.Queue`): a first-in first-out queue that the driver, tasks
//! and actors share, held by an async actor of its own.

use crate::actor_handle::ActorHandle;
use crate::error::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

/// The actor holding a [`Queue`]'s items, encoded.
#[doc(hidden)]
pub struct QueueActor {
    items: parking_lot::Mutex<VecDeque<Vec<u8>>>,
    /// Most items held at once (0: no limit).
    maxsize: usize,
    /// Woken whenever an item comes or goes.
    changed: tokio::sync::Notify,
}

impl QueueActor {
    /// Runs `step` until it succeeds or `timeout_ms` passes (`None`: no limit), trying again
    /// each time the queue changes.
    async fn until<R>(
        &self,
        timeout_ms: Option<u64>,
        mut step: impl FnMut(&Self) -> Option<R>,
    ) -> Option<R> {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = step(self) {
                self.changed.notify_waiters();
                return Some(r);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, changed).await.is_err() {
                        return None;
                    }
                }
                None => changed.await,
            }
        }
    }
}

#[ray::actor]
impl QueueActor {
    pub fn new(maxsize: u64) -> Self {
        QueueActor {
            items: Default::default(),
            maxsize: maxsize as usize,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Adds `item` once there is room; false if `timeout_ms` passed first.
    pub async fn push(&self, item: Vec<u8>, timeout_ms: Option<u64>) -> bool {
        let mut item = Some(item);
        self.until(timeout_ms, |q| {
            let mut items = q.items.lock();
            if q.maxsize == 0 || items.len() < q.maxsize {
                items.push_back(item.take().expect("pushed once"));
                Some(())
            } else {
                None
            }
        })
        .await
        .is_some()
    }

    /// The oldest item once there is one; `None` if `timeout_ms` passed first.
    pub async fn pop(&self, timeout_ms: Option<u64>) -> Option<Vec<u8>> {
        self.until(timeout_ms, |q| q.items.lock().pop_front()).await
    }

    /// Items held.
    pub async fn size(&self) -> u64 {
        self.items.lock().len() as u64
    }
}

/// A first-in first-out queue of `T` shared by the driver, tasks and actors (Ray's
/// `ray.util.queue.Queue`): pass it to a task like any argument. Its items live in an actor
/// of their own, so they outlive the task that put them. Items are values (refs inside an
/// item are not tracked: pass refs on as task arguments instead).
///
/// ```
/// ray::init(ray::Config::sync()).unwrap();
/// let q = ray::util::Queue::<String>::new(2).unwrap();
/// q.put(&"a".to_string()).unwrap();
/// assert!(q.try_put(&"b".to_string()).unwrap());
/// assert!(!q.try_put(&"c".to_string()).unwrap(), "full");
/// assert_eq!(q.get().unwrap(), "a");
/// assert_eq!(q.len().unwrap(), 1);
/// ray::shutdown();
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Queue<T> {
    actor: ActorHandle<QueueActor>,
    #[serde(skip)]
    _items: PhantomData<fn() -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            actor: self.actor.clone(),
            _items: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue holding at most `maxsize` items (0: no limit).
    pub fn new(maxsize: usize) -> Result<Self> {
        let actor = QueueActor::options()
            .num_cpus(0.0)
            .try_remote(maxsize as u64)?;
        Ok(Queue {
            actor,
            _items: PhantomData,
        })
    }

    /// Adds `item`, waiting while the queue is full.
    pub fn put(&self, item: &T) -> Result<()> {
        self.push(item, None).map(|_| ())
    }

    /// Adds `item` if there is room within `timeout`; false if there was none.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<bool> {
        self.push(item, Some(timeout))
    }

    /// Adds `item` if there is room now; false if the queue is full.
    pub fn try_put(&self, item: &T) -> Result<bool> {
        self.push(item, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<T> {
        let item = self.pop(None)?;
        Ok(item.expect("an unbounded wait ends with an item"))
    }

    /// Takes the oldest item if one comes within `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.pop(Some(timeout))
    }

    /// Takes the oldest item if there is one now.
    pub fn try_get(&self) -> Result<Option<T>> {
        self.pop(Some(Duration::ZERO))
    }

    /// Items in the queue now.
    pub fn len(&self) -> Result<usize> {
        crate::get(&self.actor.size()).map(|n| n as usize)
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    fn push(&self, item: &T, timeout: Option<Duration>) -> Result<bool> {
        let bytes = crate::codec::encode(item)?;
        let ms = timeout.map(|t| t.as_millis() as u64);
        crate::get(&self.actor.push(bytes, ms))
    }

    fn pop(&self, timeout: Option<Duration>) -> Result<Option<T>> {
        let ms = timeout.map(|t| t.as_millis() as u64);
        match crate::get(&self.actor.pop(ms))? {
            Some(bytes) => crate::codec::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}
