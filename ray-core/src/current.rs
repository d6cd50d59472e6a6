//! The process's current core worker: the one the public API's free functions act on (the
//! session's in a driver, the worker's own in a worker process). With the session (in
//! `lib.rs`) and the link-time registry, the only process-global state of this crate; no
//! module below the facade reads it.

use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use parking_lot::RwLock;
use std::sync::Arc;

static CURRENT: RwLock<Option<Arc<CoreWorker>>> = RwLock::new(None);

/// The core worker of this process, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Arc<CoreWorker>> {
    CURRENT.read().clone().ok_or(Error::NotInitialized)
}

/// Makes `cw` the process's core worker; returns the one it replaces.
pub(crate) fn set_current(cw: Option<Arc<CoreWorker>>) -> Option<Arc<CoreWorker>> {
    std::mem::replace(&mut *CURRENT.write(), cw)
}
