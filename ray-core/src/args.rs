//! A task's arguments: encoded once at submission ([`ArgSpec::value`]), and resolved to values once
//! their refs are ready ([`resolve`], the one resolver of normal tasks, actor calls, actor
//! constructors and sync mode).

use crate::codec;
use crate::error::{Error, Result};
use crate::memory_store::Stored;
use crate::ownership::{collect_serialized_refs, RefInner};
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;

/// A task's argument, encoded once at submission (opaque to generated code).
pub struct ArgSpec(pub(crate) ArgKind);

/// What an argument is.
pub(crate) enum ArgKind {
    /// An encoded value, with the refs found inside it: held, they keep nested objects alive
    /// until the task ends (and a task with any is never run inline by a waiting parent).
    Value(Bytes, Vec<Arc<RefInner>>),
    /// A ref resolved before the task runs.
    Ref(Arc<RefInner>),
    /// Refs resolved before the task runs into one `Vec` of their values.
    Refs(Vec<Arc<RefInner>>),
    /// The value could not be encoded: the task fails without running.
    Unencodable(Error),
}

impl ArgSpec {
    /// A ref argument, resolved before the task runs.
    pub(crate) fn by_ref(r: Arc<RefInner>) -> Self {
        ArgSpec(ArgKind::Ref(r))
    }

    /// A `Vec` argument made of the values of `refs`, resolved before the task runs.
    pub(crate) fn by_refs(refs: Vec<Arc<RefInner>>) -> Self {
        ArgSpec(ArgKind::Refs(refs))
    }

    /// A value argument, encoded now with the refs found inside it.
    pub(crate) fn value<T: Serialize>(v: &T) -> Self {
        let (bytes, nested) = collect_serialized_refs(|| codec::encode(v));
        ArgSpec(match bytes {
            Ok(b) => ArgKind::Value(Bytes::from(b), nested),
            Err(e) => ArgKind::Unencodable(e),
        })
    }

    /// The refs this argument holds (itself, or the refs inside its value).
    pub(crate) fn refs(&self) -> impl Iterator<Item = &Arc<RefInner>> {
        let (one, nested): (Option<&Arc<RefInner>>, &[Arc<RefInner>]) = match &self.0 {
            ArgKind::Ref(r) => (Some(r), &[]),
            ArgKind::Refs(rs) => (None, rs),
            ArgKind::Value(_, nested) => (None, nested),
            ArgKind::Unencodable(_) => (None, &[]),
        };
        one.into_iter().chain(nested)
    }
}

impl From<&ArgSpec> for crate::task_manager::SpecArg {
    fn from(a: &ArgSpec) -> Self {
        use crate::task_manager::SpecArg;
        match &a.0 {
            ArgKind::Value(b, _) if b.len() > crate::task_manager::MAX_KEPT_ARG_BYTES => {
                SpecArg::LargeValue(b.len())
            }
            ArgKind::Value(b, _) => SpecArg::Value(b.clone()),
            ArgKind::Ref(r) => SpecArg::Object {
                id: r.id,
                owner: r.owner.clone(),
            },
            ArgKind::Refs(rs) => {
                SpecArg::Objects(rs.iter().map(|r| (r.id, r.owner.clone())).collect())
            }
            ArgKind::Unencodable(_) => SpecArg::Unencodable,
        }
    }
}

/// The value of each argument, reading a ref's value with `value_of` (which may wait, or
/// fail if it is missing). A ref whose task failed fails the call with `ArgumentFailed`
/// naming `function`; an argument that could not be encoded fails it with its own error.
pub(crate) fn resolve(
    function: &str,
    args: &[ArgSpec],
    mut value_of: impl FnMut(&RefInner) -> Result<Stored>,
    mut bytes_of: impl FnMut(&Stored) -> Result<Bytes>,
) -> Result<Vec<Stored>> {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        let stored = match &a.0 {
            ArgKind::Value(b, _) => Stored::Inline(b.clone()),
            ArgKind::Ref(r) => value_of(r)?,
            ArgKind::Refs(rs) => list_value(function, rs, &mut value_of, &mut bytes_of)?,
            ArgKind::Unencodable(e) => return Err(e.clone()),
        };
        if let Stored::Failed(e) = &stored {
            return Err(Error::ArgumentFailed {
                function: function.to_string(),
                cause: Box::new((**e).clone()),
            });
        }
        values.push(stored);
    }
    Ok(values)
}

/// The value of a list of refs passed as one `Vec` argument: the encoding of a sequence of
/// their values, made from theirs (a length, then each in turn), so the task decodes one
/// `Vec<T>`. A failed element fails the call as a failed argument does.
fn list_value(
    function: &str,
    refs: &[Arc<RefInner>],
    value_of: &mut impl FnMut(&RefInner) -> Result<Stored>,
    bytes_of: &mut impl FnMut(&Stored) -> Result<Bytes>,
) -> Result<Stored> {
    let mut out = codec::sequence_prefix(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let stored = value_of(r)?;
        match &stored {
            Stored::Failed(e) => {
                return Err(Error::ArgumentFailed {
                    function: function.to_string(),
                    cause: Box::new((**e).clone()),
                })
            }
            Stored::Plasma { raw, .. } if *raw > 0 => {
                return Err(Error::InvalidArgument(format!(
                    "element {i} of a list argument of {function} is a put_slice array: \
                     pass it as an argument of its own"
                )))
            }
            _ => out.extend_from_slice(&bytes_of(&stored)?),
        }
    }
    Ok(Stored::Inline(out.into()))
}
