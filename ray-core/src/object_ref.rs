//! [`ObjectRef`]: a typed handle to an object that exists, or will, somewhere in the cluster.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::runtime::{self, Runtime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Weak};

/// The untyped part of a handle. One per handle lifetime in this process; clones of an
/// `ObjectRef` share it, so the reference table counts handles, not clones.
pub(crate) struct RefInner {
    pub id: ObjectId,
    /// `None`: this process owns the object.
    pub owner: Option<Arc<str>>,
    pub rt: Weak<Runtime>,
    /// Set on a ref that could not even be submitted; `get` returns it.
    pub failed: Option<Error>,
}

impl Drop for RefInner {
    fn drop(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Some(rt) = self.rt.upgrade() {
            rt.drop_local_ref(self.id);
        }
    }
}

/// A reference to an object of type `T`: the result of a task or of [`crate::put`].
///
/// Cheap to clone, `Send + Sync`, serializable: a ref inside another object or argument is
/// passed as a ref (not resolved), and the receiving process borrows it. `.await` it in an
/// async driver; use [`crate::get`] otherwise.
///
/// ```
/// ray::init(ray::Config::sync()).unwrap();
/// let r: ray::ObjectRef<Vec<u32>> = ray::put(&vec![1, 2, 3]).unwrap();
/// assert_eq!(ray::get(&r).unwrap(), vec![1, 2, 3]);
/// ray::shutdown();
/// ```
pub struct ObjectRef<T> {
    pub(crate) inner: Arc<RefInner>,
    _type: PhantomData<fn() -> T>,
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_inner(inner: Arc<RefInner>) -> Self {
        ObjectRef {
            inner,
            _type: PhantomData,
        }
    }

    /// A ref whose `get` returns `error` (a submission that failed before it started).
    pub(crate) fn failed(error: Error) -> Self {
        Self::from_inner(Arc::new(RefInner {
            id: ObjectId([0; 16]),
            owner: None,
            rt: Weak::new(),
            failed: Some(error),
        }))
    }

    /// The object's id, 32 hex digits.
    pub fn id(&self) -> String {
        self.inner.id.to_hex()
    }

    pub(crate) fn object_id(&self) -> ObjectId {
        self.inner.id
    }

    /// The same ref, seen as another type. Unchecked: a wrong type fails at `get` with
    /// [`Error::Serialization`].
    pub fn cast<U>(&self) -> ObjectRef<U> {
        ObjectRef::from_inner(self.inner.clone())
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        Self::from_inner(self.inner.clone())
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.inner.id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}
impl<T> Eq for ObjectRef<T> {}
impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state)
    }
}

thread_local! {
    /// While encoding task arguments: the refs found inside them, which the pending task
    /// keeps alive until its reply. Outside that, a serialized ref is pinned.
    static SERIALIZING_ARGS: RefCell<Option<Vec<Arc<RefInner>>>> = const { RefCell::new(None) };
    /// While decoding a task's arguments in a worker: the refs met, reported back to their
    /// owners if the worker still holds them when the task ends.
    static DECODING_ARGS: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
}

/// Runs `f` collecting the refs serialized inside it.
pub(crate) fn collect_serialized_refs<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<RefInner>>) {
    let outer = SERIALIZING_ARGS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let found = SERIALIZING_ARGS.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (r, found.unwrap_or_default())
}

/// Runs `f` collecting the ids of refs deserialized inside it.
pub(crate) fn collect_deserialized_refs<R>(f: impl FnOnce() -> R) -> (R, Vec<ObjectId>) {
    let outer = DECODING_ARGS.with(|c| c.borrow_mut().replace(Vec::new()));
    let r = f();
    let found = DECODING_ARGS.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (r, found.unwrap_or_default())
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let rt = self.inner.rt.upgrade();
        let owner: Arc<str> = match (&self.inner.owner, &rt) {
            (Some(o), _) => o.clone(),
            (None, Some(rt)) => rt.address.clone(),
            (None, None) => {
                return Err(serde::ser::Error::custom(
                    "an ObjectRef of a finished session cannot be serialized",
                ))
            }
        };
        let collected = SERIALIZING_ARGS.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(|v| v.push(self.inner.clone()))
                .is_some()
        });
        if !collected {
            if let Some(rt) = &rt {
                rt.refs.pin(self.inner.id);
            }
        }
        (self.inner.id.0, &*owner).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (id, owner): ([u8; 16], String) = Deserialize::deserialize(d)?;
        let rt = runtime::current().map_err(serde::de::Error::custom)?;
        let id = ObjectId(id);
        let in_task = DECODING_ARGS.with(|c| c.borrow_mut().as_mut().map(|v| v.push(id)).is_some());
        let owner = (*owner != *rt.address).then(|| Arc::<str>::from(owner));
        rt.refs
            .add_local(id, owner.clone(), in_task && owner.is_some());
        Ok(ObjectRef::from_inner(Arc::new(RefInner {
            id,
            owner,
            rt: Arc::downgrade(&rt),
            failed: None,
        })))
    }
}

impl<T: serde::de::DeserializeOwned + Send + 'static> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    /// Awaits the value without blocking the async runtime's thread.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { runtime::get_async(&self).await })
    }
}

/// An argument of a remote function: a value, or a ref to a value of the same type (resolved
/// before the function runs, as in Ray).
pub enum Arg<T> {
    /// Passed by value.
    Value(T),
    /// Resolved to its value before the task runs.
    Ref(ObjectRef<T>),
}

impl<T> From<T> for Arg<T> {
    fn from(v: T) -> Self {
        Arg::Value(v)
    }
}

impl<T> From<ObjectRef<T>> for Arg<T> {
    fn from(r: ObjectRef<T>) -> Self {
        Arg::Ref(r)
    }
}

impl<T> From<&ObjectRef<T>> for Arg<T> {
    fn from(r: &ObjectRef<T>) -> Self {
        Arg::Ref(r.clone())
    }
}
