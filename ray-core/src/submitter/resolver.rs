//! Task arguments: waiting for ref arguments to be ready, then turning every argument into
//! the value a task frame carries.

use super::normal::PendingTask;
use crate::args::ArgSpec;
use crate::error::{Error, Result};
use crate::memory_store::Stored;
use crate::ownership::Ownership;
use crate::ownership::RefInner;
use std::sync::Arc;

/// Waits until the ref's value is here (asking its owner for it if borrowed), or will
/// never be: resolution then reports why.
pub(super) async fn wait_ready_async(own: &Arc<Ownership>, r: &RefInner) {
    let _ = own.value(r).await;
}

/// The argument values of a task whose dependencies are all ready.
pub(super) fn resolve_now(
    own: &Ownership,
    task: &PendingTask,
) -> Result<Vec<ray_proto::ObjectValue>> {
    resolve_args(own, &task.args, task.function)
}

/// The argument values of a call whose refs are all ready here, or the error that fails it.
pub(super) fn resolve_args(
    own: &Ownership,
    args: &[ArgSpec],
    function: &str,
) -> Result<Vec<ray_proto::ObjectValue>> {
    let values = crate::args::resolve(
        function,
        args,
        |r| {
            own.store
                .get(&r.id)
                .ok_or_else(|| Error::ObjectLost(r.id.to_hex()))
        },
        |s| own.stored_bytes(s),
    )?;
    Ok(values.iter().map(Stored::to_proto).collect())
}
