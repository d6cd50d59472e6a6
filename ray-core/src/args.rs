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
    /// The value could not be encoded: the task fails without running.
    Unencodable(Error),
}

impl ArgSpec {
    /// A ref argument, resolved before the task runs.
    pub(crate) fn by_ref(r: Arc<RefInner>) -> Self {
        ArgSpec(ArgKind::Ref(r))
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
) -> Result<Vec<Stored>> {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        let stored = match &a.0 {
            ArgKind::Value(b, _) => Stored::Inline(b.clone()),
            ArgKind::Ref(r) => value_of(r)?,
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
