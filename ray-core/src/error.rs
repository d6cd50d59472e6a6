//! The one error type a user sees.

use std::time::Duration;

/// Result of every fallible call of the API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, as Ray's error types name it. Stored in an object's slot
/// when a task fails, so every `get` of that object (and every task that takes it) sees it.
///
/// `Debug` prints what `Display` prints: it is what `unwrap()` and a `main` returning
/// `ray::Result` show a user.
///
/// ```
/// let e = ray::Error::NotInitialized;
/// assert_eq!(format!("{e:?}"), "ray is not initialized: call ray::init first");
/// match e {
///     ray::Error::Task { message, .. } => eprintln!("the task failed: {message}"),
///     other => eprintln!("{other}"),
/// }
/// ```
#[derive(Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task returned `Err` or panicked (Ray's `RayTaskError`). The `Err` value itself,
    /// if its type can be encoded (`serde::Serialize`), comes back with [`Error::downcast`].
    #[error("task {function} failed on {location}: {message}")]
    #[non_exhaustive]
    Task {
        /// Registered name of the function.
        function: String,
        /// The error's or the panic's message.
        message: String,
        /// Where it ran: worker and process, and the source location of a panic.
        location: String,
        /// The `Err` value the task returned, encoded (see [`Error::downcast`]).
        value: Option<ErrorValue>,
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
    /// The task was cancelled ([`crate::cancel`]) before it finished (Ray's
    /// `TaskCancelledError`).
    #[error("task {function} was cancelled")]
    TaskCancelled {
        /// Registered name of the function (or `Class.method`).
        function: String,
    },
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
    /// The node the object or the work was on died (Ray's `NodeDiedError`).
    #[error("node {node} died: {cause}")]
    NodeDied {
        /// The node's id.
        node: String,
        /// What was seen of its death.
        cause: String,
    },
    /// A value could not be encoded or decoded.
    #[error("serialization failed: {0}")]
    Serialization(String),
    /// `init` could not reach the cluster at `address` (nothing listens there, or the head
    /// did not answer in time).
    #[error("cannot connect to the cluster at {address}: {reason}")]
    ClusterUnreachable {
        /// The address given.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The cluster refused this process's auth token (missing or wrong), or there is none.
    #[error("authentication failed: {0}")]
    Unauthenticated(String),
    /// The runtime itself failed (a process, socket or RPC), with the cause.
    #[error("runtime failure: {0}")]
    Runtime(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Causes of an `ArgumentFailed` chain sent typed; deeper ones are sent as text (protobuf
/// decoders refuse messages nested about 100 deep).
pub(crate) const MAX_WIRE_CAUSES: usize = 32;

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

/// The `Err` value a task returned, encoded, with the name of its type: what
/// [`Error::downcast`] decodes (`codec.rs` makes and reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorValue {
    pub(crate) type_name: String,
    pub(crate) bytes: Vec<u8>,
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
                value,
            } if message.len() > MAX_ERROR_MESSAGE
                || value
                    .as_ref()
                    .is_some_and(|v| v.bytes.len() > MAX_ERROR_MESSAGE) =>
            {
                if message.len() <= MAX_ERROR_MESSAGE {
                    // The value is too large to send back: the message still goes.
                    return Error::Task {
                        function,
                        message,
                        location,
                        value: None,
                    };
                }
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
                    value: value.filter(|v| v.bytes.len() <= MAX_ERROR_MESSAGE),
                }
            }
            other => other,
        }
    }

    /// Wire form, stored in an object's slot and sent between processes: the kind and every
    /// field typed, a nested cause as a message of its own (to [`MAX_WIRE_CAUSES`] levels;
    /// deeper causes travel as text, since decoders limit nesting).
    pub(crate) fn to_proto(&self) -> ray_proto::TaskError {
        self.to_proto_at(0)
    }

    fn to_proto_at(&self, depth: usize) -> ray_proto::TaskError {
        use ray_proto::ErrorKind as K;
        let wire = |kind: K, function: &str, message: &str| ray_proto::TaskError {
            kind: kind as i32,
            function: function.to_string(),
            message: message.to_string(),
            ..Default::default()
        };
        match self {
            Error::Task {
                function,
                message,
                location,
                value,
            } => ray_proto::TaskError {
                location: location.clone(),
                value_type: value
                    .as_ref()
                    .map(|v| v.type_name.clone())
                    .unwrap_or_default(),
                value: value
                    .as_ref()
                    .map(|v| v.bytes.clone())
                    .unwrap_or_default()
                    .into(),
                ..wire(K::Task, function, message)
            },
            Error::WorkerDied { function, message } => wire(K::WorkerDied, function, message),
            Error::TaskCancelled { function } => wire(K::TaskCancelled, function, ""),
            Error::ArgumentFailed { function, cause } if depth >= MAX_WIRE_CAUSES => {
                let rest = Error::Runtime(cause.to_string());
                ray_proto::TaskError {
                    cause: Some(Box::new(rest.to_proto_at(depth + 1))),
                    ..wire(K::ArgumentFailed, function, "")
                }
            }
            Error::ArgumentFailed { function, cause } => ray_proto::TaskError {
                cause: Some(Box::new(cause.to_proto_at(depth + 1))),
                ..wire(K::ArgumentFailed, function, "")
            },
            Error::ActorDied { class, cause } => wire(K::ActorDied, class, cause),
            Error::ActorUnavailable { class, cause } => wire(K::ActorUnavailable, class, cause),
            Error::ObjectLost(id) => wire(K::ObjectLost, "", id),
            Error::OwnerDied(id) => wire(K::OwnerDied, "", id),
            Error::Unschedulable { function, reason } => wire(K::Unschedulable, function, reason),
            Error::ObjectStoreFull(m) => wire(K::ObjectStoreFull, "", m),
            Error::Serialization(m) => wire(K::Serialization, "", m),
            Error::InvalidArgument(m) => wire(K::InvalidArgument, "", m),
            Error::NotInitialized => wire(K::NotInitialized, "", ""),
            Error::AlreadyInitialized => wire(K::AlreadyInitialized, "", ""),
            Error::GetTimeout(t) => ray_proto::TaskError {
                timeout_micros: t.as_micros() as u64,
                ..wire(K::GetTimeout, "", "")
            },
            Error::NodeDied { node, cause } => wire(K::NodeDied, node, cause),
            Error::ClusterUnreachable { address, reason } => {
                wire(K::ClusterUnreachable, address, reason)
            }
            Error::Unauthenticated(m) => wire(K::Unauthenticated, "", m),
            Error::Runtime(m) => wire(K::Runtime, "", m),
        }
    }

    pub(crate) fn from_proto(e: &ray_proto::TaskError) -> Self {
        use ray_proto::ErrorKind as K;
        // An unknown kind (a newer peer) is still an error, with its message.
        match K::try_from(e.kind).unwrap_or(K::Runtime) {
            K::Task => Error::Task {
                function: e.function.clone(),
                message: e.message.clone(),
                location: e.location.clone(),
                value: (!e.value_type.is_empty()).then(|| ErrorValue {
                    type_name: e.value_type.clone(),
                    bytes: e.value.to_vec(),
                }),
            },
            K::TaskCancelled => Error::TaskCancelled {
                function: e.function.clone(),
            },
            K::WorkerDied => Error::WorkerDied {
                function: e.function.clone(),
                message: e.message.clone(),
            },
            K::ArgumentFailed => Error::ArgumentFailed {
                function: e.function.clone(),
                cause: Box::new(match &e.cause {
                    Some(cause) => Error::from_proto(cause),
                    None => Error::Runtime("an argument failed for an unknown cause".into()),
                }),
            },
            K::ActorDied => Error::ActorDied {
                class: e.function.clone(),
                cause: e.message.clone(),
            },
            K::ActorUnavailable => Error::ActorUnavailable {
                class: e.function.clone(),
                cause: e.message.clone(),
            },
            K::ObjectLost => Error::ObjectLost(e.message.clone()),
            K::OwnerDied => Error::OwnerDied(e.message.clone()),
            K::Unschedulable => Error::Unschedulable {
                function: e.function.clone(),
                reason: e.message.clone(),
            },
            K::ObjectStoreFull => Error::ObjectStoreFull(e.message.clone()),
            K::Serialization => Error::Serialization(e.message.clone()),
            K::InvalidArgument => Error::InvalidArgument(e.message.clone()),
            K::NotInitialized => Error::NotInitialized,
            K::AlreadyInitialized => Error::AlreadyInitialized,
            K::GetTimeout => Error::GetTimeout(Duration::from_micros(e.timeout_micros)),
            K::NodeDied => Error::NodeDied {
                node: e.function.clone(),
                cause: e.message.clone(),
            },
            K::ClusterUnreachable => Error::ClusterUnreachable {
                address: e.function.clone(),
                reason: e.message.clone(),
            },
            K::Unauthenticated => Error::Unauthenticated(e.message.clone()),
            K::Runtime => Error::Runtime(e.message.clone()),
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
            cause: Box::new(Error::ArgumentFailed {
                function: "g".into(),
                cause: Box::new(Error::Task {
                    function: "h".into(),
                    // Separators of the old string encoding are plain text now.
                    message: "boom\u{1f}with\u{1f}separators".into(),
                    location: "worker 1".into(),
                    value: ErrorValue::of(&7u32),
                }),
            }),
        };
        assert_eq!(Error::from_proto(&e.to_proto()), e);
        for e in [
            Error::GetTimeout(Duration::from_millis(1500)),
            Error::NodeDied {
                node: "ab12".into(),
                cause: "missed its heartbeats".into(),
            },
            Error::NotInitialized,
            Error::InvalidArgument("bad".into()),
            Error::ObjectLost("ff".into()),
            Error::ClusterUnreachable {
                address: "10.0.0.1:6379".into(),
                reason: "connection refused".into(),
            },
            Error::Unauthenticated("wrong token".into()),
        ] {
            assert_eq!(Error::from_proto(&e.to_proto()), e);
        }
        // A chain deeper than the wire nests still decodes, its tail as text.
        let mut deep = Error::ObjectLost("ab".into());
        for i in 0..200 {
            deep = Error::ArgumentFailed {
                function: format!("f{i}"),
                cause: Box::new(deep),
            };
        }
        let bytes = prost::Message::encode_to_vec(&deep.to_proto());
        let wire: ray_proto::TaskError = prost::Message::decode(&bytes[..]).unwrap();
        let back = Error::from_proto(&wire);
        assert!(matches!(back, Error::ArgumentFailed { .. }));
        assert!(back.to_string().contains("object ab was lost"), "{back}");
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
