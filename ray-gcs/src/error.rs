//! What goes wrong in the GCS, as kinds: mapped to a `tonic::Status` only at the service's
//! edge, and read by placement to decide whether another try may help.

use ray_common::rpc::RpcError;
use tonic::Status;

/// A GCS failure.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// No such actor, name or job.
    #[error("{0}")]
    NotFound(String),
    /// No alive node can take the actor now.
    #[error("no alive node can host the actor now")]
    NoNode,
    /// No alive node can ever hold the actor's shape (until one that can joins): the reason.
    #[error("no alive node can hold it: {0}")]
    NoFit(String),
    /// A call to a node manager or a worker failed at `step`. `last`: the step cannot be
    /// repeated (what it held is given back), so the attempt is over whatever the kind.
    #[error("{step}: {source}")]
    Call {
        step: String,
        #[source]
        source: RpcError,
        last: bool,
    },
    /// The actor's placement group is not created yet: it waits for it.
    #[error("its placement group is not created yet")]
    GroupPending,
    /// The worker chosen for the actor died as it started it.
    #[error("the actor's process died as it started")]
    DiedStarting,
    /// A peer answered with nothing usable.
    #[error("{0}")]
    BadReply(String),
}

impl GcsError {
    /// A call failed: worth another try if it never got an answer.
    pub(crate) fn call(step: impl Into<String>, source: RpcError) -> Self {
        GcsError::Call {
            step: step.into(),
            source,
            last: false,
        }
    }

    /// A call failed at a step that cannot be repeated.
    pub(crate) fn last_call(step: impl Into<String>, source: RpcError) -> Self {
        GcsError::Call {
            step: step.into(),
            source,
            last: true,
        }
    }

    /// Whether trying the placement again may help: from the kind, never from a message.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            GcsError::NoNode | GcsError::DiedStarting => true,
            GcsError::Call { source, last, .. } => !last && source.is_transient(),
            _ => false,
        }
    }
}

impl From<GcsError> for Status {
    fn from(e: GcsError) -> Status {
        let message = e.to_string();
        match e {
            GcsError::InvalidArgument(_) => Status::invalid_argument(message),
            GcsError::AlreadyExists(_) => Status::already_exists(message),
            GcsError::NotFound(_) => Status::not_found(message),
            GcsError::NoNode | GcsError::DiedStarting => Status::unavailable(message),
            GcsError::NoFit(_) | GcsError::GroupPending => Status::resource_exhausted(message),
            // The kind survives the wire; the message says which step failed.
            GcsError::Call { source, .. } => Status::from(RpcError { message, ..source }),
            GcsError::BadReply(_) => Status::internal(message),
        }
    }
}
