//! [`ObjectRef`]: a typed handle to an object that exists, or will, somewhere in the cluster.

use crate::args::ArgSpec;
use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::ownership::{self, RefInner};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

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
        Self::from_inner(RefInner::failed(error))
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

impl<T> ObjectRef<T> {
    /// This ref as an [`AnyRef`]: to wait on refs of different types together.
    pub fn any(&self) -> AnyRef {
        AnyRef {
            inner: self.inner.clone(),
        }
    }
}

/// A ref whose value's type is not named: what [`crate::wait`] takes to wait on refs of
/// different types together (a handle like any other: it keeps the object alive).
///
/// ```
/// # ray::init(ray::Config::sync()).unwrap();
/// let n = ray::put(&1u32).unwrap();
/// let s = ray::put(&"one".to_string()).unwrap();
/// let (ready, _) = ray::wait(&[n.any(), s.any()], 2, None).unwrap();
/// assert_eq!(ready.len(), 2);
/// assert_eq!(ready[0].id(), n.id());
/// # ray::shutdown();
/// ```
#[derive(Clone)]
pub struct AnyRef {
    pub(crate) inner: Arc<RefInner>,
}

impl AnyRef {
    /// The object's id, 32 hex digits.
    pub fn id(&self) -> String {
        self.inner.id.to_hex()
    }
}

impl std::fmt::Debug for AnyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnyRef({})", self.id())
    }
}

impl<T> From<&ObjectRef<T>> for AnyRef {
    fn from(r: &ObjectRef<T>) -> Self {
        r.any()
    }
}

/// What [`crate::wait`] waits on: an [`ObjectRef`] or an [`AnyRef`].
pub trait Waitable: Clone + sealed::Sealed {
    /// The same ref, its type unnamed.
    fn to_any(&self) -> AnyRef;
}

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for super::ObjectRef<T> {}
    impl Sealed for super::AnyRef {}
}

impl<T> Waitable for ObjectRef<T> {
    fn to_any(&self) -> AnyRef {
        self.any()
    }
}

impl Waitable for AnyRef {
    fn to_any(&self) -> AnyRef {
        self.clone()
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

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let owner = ownership::ref_to_wire(&self.inner).map_err(serde::ser::Error::custom)?;
        (self.inner.id.0, &*owner).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // The core worker decoding, or else (a program decoding refs itself) the process's.
        let own = match ownership::decoder() {
            Some(own) => own,
            None => crate::current::current()
                .map_err(serde::de::Error::custom)?
                .own
                .clone(),
        };
        let inner = d.deserialize_tuple(2, WireRef(own))?;
        Ok(ObjectRef::from_inner(inner))
    }
}

/// Reads a ref's wire form, `(id, owner)`, without copying the owner's address out: a value
/// holding many refs decodes each without an allocation for its owner.
struct WireRef(Arc<ownership::Ownership>);

impl<'de> serde::de::Visitor<'de> for WireRef {
    type Value = Arc<RefInner>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object ref (id, owner)")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let id: [u8; 16] = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let id = ObjectId(id);
        seq.next_element_seed(Owner(&self.0, id))?
            .ok_or_else(|| A::Error::invalid_length(1, &self))
    }
}

/// The owner half of [`WireRef`]: makes the handle from the address as it is read.
struct Owner<'a>(&'a Arc<ownership::Ownership>, ObjectId);

impl<'de> serde::de::DeserializeSeed<'de> for Owner<'_> {
    type Value = Arc<RefInner>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Owner<'_> {
    type Value = Arc<RefInner>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an owner's address")
    }

    fn visit_str<E: serde::de::Error>(self, owner: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.0.decoded_ref(self.1, owner))
    }
}

impl<T: serde::de::DeserializeOwned + Send + 'static> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    /// Awaits the value without blocking the async runtime's thread.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { crate::current::current()?.get_async(&self.inner).await })
    }
}

/// An argument of a remote function: a value, or a ref to a value of the same type (resolved
/// before the function runs, as in Ray).
pub enum Arg<T> {
    /// Passed by value.
    Value(T),
    /// Resolved to its value before the task runs.
    Ref(ObjectRef<T>),
    /// Refs resolved to a `Vec` of their values before the task runs (Ray's
    /// `f.remote(*refs)`): made from a `Vec<ObjectRef<E>>` where the function takes a
    /// `Vec<E>`.
    Refs(RefList),
}

/// The refs of an [`Arg::Refs`] (opaque).
pub struct RefList(Vec<std::sync::Arc<crate::ownership::RefInner>>);

/// `f::remote(refs)` where `f` takes a `Vec<E>` and `refs` is a `Vec<ObjectRef<E>>`: the
/// task gets the values, in order, once every ref is ready (a failed one fails the call).
///
/// ```
/// #[ray::remote]
/// fn total(xs: Vec<u64>) -> u64 { xs.iter().sum() }
/// #[ray::remote]
/// fn double(x: u64) -> u64 { 2 * x }
///
/// # fn main() -> ray::Result<()> {
/// # ray::init(ray::Config::local().num_cpus(2.0))?;
/// let parts: Vec<ray::ObjectRef<u64>> = (1..=3).map(double::remote).collect();
/// assert_eq!(ray::get(&total::remote(parts))?, 12);
/// # ray::shutdown();
/// # Ok(()) }
/// ```
impl<E> From<Vec<ObjectRef<E>>> for Arg<Vec<E>> {
    fn from(refs: Vec<ObjectRef<E>>) -> Self {
        Arg::Refs(RefList(refs.into_iter().map(|r| r.inner).collect()))
    }
}

impl<E> From<&[ObjectRef<E>]> for Arg<Vec<E>> {
    fn from(refs: &[ObjectRef<E>]) -> Self {
        Arg::Refs(RefList(refs.iter().map(|r| r.inner.clone()).collect()))
    }
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

/// Encodes one argument (called by generated code).
pub fn arg<T: Serialize>(a: Arg<T>) -> ArgSpec {
    match a {
        Arg::Ref(r) => ArgSpec::by_ref(r.inner),
        Arg::Refs(RefList(refs)) => ArgSpec::by_refs(refs),
        Arg::Value(v) => ArgSpec::value(&v),
    }
}
