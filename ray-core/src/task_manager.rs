//! The task manager's record of a task: what it ran (its function, its arguments as values or
//! object ids, its resources and retries), kept in its return object's slot for as long as
//! refs to that object live (see `MemoryStore::expect_task`). Lineage reconstruction replays
//! it; until then it is what a lost object's story would be told from.
//!
//! Plain data: it holds no ref, so it keeps no argument's value alive.

use crate::ids::ObjectId;
use bytes::Bytes;
use std::sync::Arc;

/// A normal task as it was submitted.
// Read by tests now, and by lineage reconstruction when objects can be lost with a node (the
// cluster issue); recorded and freed with its object already.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Debug)]
pub(crate) struct TaskSpec {
    pub function: &'static str,
    pub args: Vec<SpecArg>,
    /// Its resource shape, as the submitter's queues name it.
    pub shape_key: Arc<str>,
    /// Retries it was submitted with (-1: forever).
    pub max_retries: i32,
}

impl TaskSpec {
    /// Bytes of the argument values it keeps.
    pub fn value_bytes(&self) -> usize {
        self.args
            .iter()
            .map(|a| match a {
                SpecArg::Value(b) => b.len(),
                _ => 0,
            })
            .sum()
    }

    /// Keeps only the lengths of its argument values.
    pub fn forget_values(&mut self) {
        for a in &mut self.args {
            if let SpecArg::Value(b) = a {
                *a = SpecArg::LargeValue(b.len());
            }
        }
    }
}

/// By-value arguments larger than this are not kept (their length is): a large value would
/// otherwise live as long as the task's result (Ray caps lineage bytes too).
pub(crate) const MAX_KEPT_ARG_BYTES: usize = 100 * 1024;

/// One argument of a [`TaskSpec`].
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Debug)]
pub(crate) enum SpecArg {
    /// Passed by value: its encoded bytes (shared with the pending task, not copied).
    Value(Bytes),
    /// Passed by value, too large to keep: its length.
    LargeValue(usize),
    /// Passed by ref: the object, and its owner (`None`: the submitter).
    Object {
        id: ObjectId,
        owner: Option<Arc<str>>,
    },
    /// A list of refs passed as one `Vec` argument: each object and its owner (for the
    /// lineage replay that is not built yet).
    #[allow(dead_code)]
    Objects(Vec<(ObjectId, Option<Arc<str>>)>),
    /// Could not be encoded: the task failed without running.
    Unencodable,
}
