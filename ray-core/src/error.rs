//! The one error type a user sees.

use std::time::Duration;

/// Result of every fallible call of the API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, as Ray's error types name it. Stored in an object's slot
/// when a task fails, so every `get` of that object (and every task that takes it) sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task returned `Err` or panicked (Ray's `RayTaskError`).
    #[error("task {function} failed on {location}: {message}")]
    Task {
        /// Registered name of the function.
        function: String,
        /// The error's or the panic's message.
        message: String,
        /// Where it ran: worker and process, and the source location of a panic.
        location: String,
    },
    /// A task could not run because one of its arguments is an object that failed.
    #[error("argument of {function} failed: {cause}")]
    ArgumentFailed {
        /// The task that did not run.
        function: String,
        /// Why the argument failed.
        cause: Box<Error>,
    },
    /// `get` with a timeout gave up (Ray's `GetTimeoutError`).
    #[error("get timed out after {0:?}")]
    GetTimeout(Duration),
    /// The worker process running the task died and the retries ran out
    /// (Ray's `WorkerCrashedError`).
    #[error("worker running {function} died: {message}")]
    WorkerDied {
        /// The task that was running.
        function: String,
        /// What was seen of the death.
        message: String,
    },
    /// The actor is dead: killed, its process died with no restarts left, its constructor
    /// failed, or its owner died (Ray's `ActorDiedError`).
    #[error("actor {class} is dead: {cause}")]
    ActorDied {
        /// The actor's class.
        class: String,
        /// Why.
        cause: String,
    },
    /// The actor cannot be reached for now: its process died and it is restarting, so a
    /// call that was in flight may or may not have run (Ray's `ActorUnavailableError`).
    /// Retryable: the next call goes to the restarted actor. Compare [`Error::ActorDied`].
    #[error("actor {class} is unavailable for now: {cause}")]
    ActorUnavailable {
        /// The actor's class.
        class: String,
        /// What happened to the call.
        cause: String,
    },
    /// The object's value is gone: freed or lost with its node (Ray's `ObjectLostError`).
    #[error("object {0} was lost")]
    ObjectLost(String),
    /// The process that owned the object died (Ray's `OwnerDiedError`).
    #[error("owner of object {0} died")]
    OwnerDied(String),
    /// Bad input to an API call (Ray raises `ValueError` / `TypeError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An API call before `ray::init` (or after `ray::shutdown`).
    #[error("ray is not initialized: call ray::init first")]
    NotInitialized,
    /// `ray::init` a second time without `ignore_reinit_error`.
    #[error("ray is already initialized (set Config::ignore_reinit_error to allow this)")]
    AlreadyInitialized,
    /// The object does not fit in the shared-memory store, even after freeing what could be
    /// freed (Ray's `ObjectStoreFullError`).
    #[error("object store full: {0}")]
    ObjectStoreFull(String),
    /// No node can ever satisfy the task's resource request (Ray keeps such tasks pending
    /// with a warning; on a single node nothing can join, so this is an error).
    #[error("task {function} is unschedulable: {reason}")]
    Unschedulable {
        /// The task.
        function: String,
        /// Which resource is short, and by how much.
        reason: String,
    },
    /// A value could not be encoded or decoded.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// The runtime itself failed (a process, socket or RPC), with the cause.
    #[error("runtime failure: {0}")]
    Runtime(String),
}

/// Longest task error message sent back whole; a longer one (a user's `Err` or panic text)
/// is cut, so that a reply always fits its frame and is never mistaken for a dead worker.
pub(crate) const MAX_ERROR_MESSAGE: usize = 1 << 20;

impl From<ray_common::rpc::RpcError> for Error {
    /// A call to another process of the session failed (callers that tell kinds apart
    /// match on the [`ray_common::rpc::RpcError`] before it gets here).
    fn from(e: ray_common::rpc::RpcError) -> Self {
        Error::Runtime(e.to_string())
    }
}

impl Error {
    pub(crate) fn runtime(e: impl std::fmt::Display) -> Self {
        Error::Runtime(e.to_string())
    }

    /// This error with a task's message cut to [`MAX_ERROR_MESSAGE`] bytes, saying so. Only
    /// a task's message carries user text of any size; the other kinds are the runtime's.
    pub(crate) fn bounded(self) -> Self {
        match self {
            Error::Task {
                function,
                message,
                location,
            } if message.len() > MAX_ERROR_MESSAGE => {
                let keep = 4096;
                let mut cut = keep.min(message.len());
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                Error::Task {
                    function,
                    message: format!(
                        "error message too large to return ({} bytes, the limit is {} bytes); \
                         it begins: {}",
                        message.len(),
                        MAX_ERROR_MESSAGE,
                        &message[..cut]
                    ),
                    location,
                }
            }
            other => other,
        }
    }

    /// Wire form, stored in an object's slot and sent between processes.
    pub(crate) fn to_proto(&self) -> ray_proto::TaskError {
        let (kind, function, message, location) = match self {
            Error::Task {
                function,
                message,
                location,
            } => ("task", function.clone(), message.clone(), location.clone()),
            Error::WorkerDied { function, message } => (
                "worker_died",
                function.clone(),
                message.clone(),
                String::new(),
            ),
            Error::ArgumentFailed { function, cause } => {
                // The cause travels encoded in the message so chains survive the wire.
                let inner = cause.to_proto();
                let nested = format!(
                    "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    inner.kind, inner.function, inner.message, inner.location
                );
                ("argument", function.clone(), nested, String::new())
            }
            Error::ActorDied { class, cause } => {
                ("actor_died", class.clone(), cause.clone(), String::new())
            }
            Error::ActorUnavailable { class, cause } => (
                "actor_unavailable",
                class.clone(),
                cause.clone(),
                String::new(),
            ),
            Error::ObjectLost(id) => ("object_lost", String::new(), id.clone(), String::new()),
            Error::OwnerDied(id) => ("owner_died", String::new(), id.clone(), String::new()),
            Error::Unschedulable { function, reason } => (
                "unschedulable",
                function.clone(),
                reason.clone(),
                String::new(),
            ),
            Error::ObjectStoreFull(m) => ("store_full", String::new(), m.clone(), String::new()),
            Error::Serialization(m) => ("serialization", String::new(), m.clone(), String::new()),
            other => ("runtime", String::new(), other.to_string(), String::new()),
        };
        ray_proto::TaskError {
            kind: kind.into(),
            function,
            message,
            location,
        }
    }

    pub(crate) fn from_proto(e: &ray_proto::TaskError) -> Self {
        let e = e.clone();
        match e.kind.as_str() {
            "task" => Error::Task {
                function: e.function,
                message: e.message,
                location: e.location,
            },
            "worker_died" => Error::WorkerDied {
                function: e.function,
                message: e.message,
            },
            "argument" => {
                let mut parts = e.message.splitn(4, '\u{1f}').map(str::to_string);
                let inner = ray_proto::TaskError {
                    kind: parts.next().unwrap_or_default(),
                    function: parts.next().unwrap_or_default(),
                    message: parts.next().unwrap_or_default(),
                    location: parts.next().unwrap_or_default(),
                };
                Error::ArgumentFailed {
                    function: e.function,
                    cause: Box::new(Error::from_proto(&inner)),
                }
            }
            "actor_died" => Error::ActorDied {
                class: e.function,
                cause: e.message,
            },
            "actor_unavailable" => Error::ActorUnavailable {
                class: e.function,
                cause: e.message,
            },
            "object_lost" => Error::ObjectLost(e.message),
            "owner_died" => Error::OwnerDied(e.message),
            "unschedulable" => Error::Unschedulable {
                function: e.function,
                reason: e.message,
            },
            "store_full" => Error::ObjectStoreFull(e.message),
            "serialization" => Error::Serialization(e.message),
            _ => Error::Runtime(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_wire_with_their_chain() {
        let e = Error::ArgumentFailed {
            function: "f".into(),
            cause: Box::new(Error::Task {
                function: "g".into(),
                message: "boom".into(),
                location: "worker 1".into(),
            }),
        };
        assert_eq!(Error::from_proto(&e.to_proto()), e);
        let w = Error::WorkerDied {
            function: "h".into(),
            message: "killed".into(),
        };
        assert_eq!(Error::from_proto(&w.to_proto()), w);
        let u = Error::ActorUnavailable {
            class: "A".into(),
            cause: "restarting".into(),
        };
        assert_eq!(Error::from_proto(&u.to_proto()), u);
    }
}
