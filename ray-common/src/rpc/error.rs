//! The one error of a call to another process, with a kind that says what the caller may do
//! about it (retry, give up, report), so no call site matches on gRPC status codes.

use std::sync::Arc;
use tonic::{Code, Status};

/// What went wrong with a call, as far as the caller's choice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcErrorKind {
    /// No connection, or it broke while the call was out (the peer may be gone or
    /// restarting): a retry may succeed.
    Unreachable,
    /// No answer within the call's deadline: a retry may succeed.
    DeadlineExceeded,
    /// The peer refused the session token.
    Unauthenticated,
    /// The peer does not know the thing named (an actor, an object, a lease).
    NotFound,
    /// The thing to be made exists already.
    AlreadyExists,
    /// The peer is out of something (workers, store space); it says what.
    Exhausted,
    /// The request was malformed or impossible.
    InvalidArgument,
    /// Any other failure the peer reported.
    Failed,
}

impl RpcErrorKind {
    /// The kind a gRPC status maps to. Tonic reports a broken connection as `Unavailable`, or
    /// as `Unknown` when h2 gives no reason: both are unreachable.
    pub fn of(code: Code) -> Self {
        match code {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
                RpcErrorKind::Unreachable
            }
            Code::DeadlineExceeded => RpcErrorKind::DeadlineExceeded,
            Code::Unauthenticated | Code::PermissionDenied => RpcErrorKind::Unauthenticated,
            Code::NotFound => RpcErrorKind::NotFound,
            Code::AlreadyExists => RpcErrorKind::AlreadyExists,
            Code::ResourceExhausted => RpcErrorKind::Exhausted,
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                RpcErrorKind::InvalidArgument
            }
            _ => RpcErrorKind::Failed,
        }
    }

    /// The status code a server answers with for this kind.
    pub fn code(self) -> Code {
        match self {
            RpcErrorKind::Unreachable => Code::Unavailable,
            RpcErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            RpcErrorKind::Unauthenticated => Code::Unauthenticated,
            RpcErrorKind::NotFound => Code::NotFound,
            RpcErrorKind::AlreadyExists => Code::AlreadyExists,
            RpcErrorKind::Exhausted => Code::ResourceExhausted,
            RpcErrorKind::InvalidArgument => Code::InvalidArgument,
            RpcErrorKind::Failed => Code::Internal,
        }
    }
}

/// A call to another process failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} to {to}: {message}")]
pub struct RpcError {
    /// What the caller may do about it.
    pub kind: RpcErrorKind,
    /// The method called (`"RequestWorkerLease"`).
    pub method: &'static str,
    /// The peer's address.
    pub to: Arc<str>,
    /// The peer's message, or what the transport said.
    pub message: String,
}

impl RpcError {
    /// An error of `kind` for a call of `method` to `to`.
    pub fn new(
        kind: RpcErrorKind,
        method: &'static str,
        to: &Arc<str>,
        message: impl Into<String>,
    ) -> Self {
        RpcError {
            kind,
            method,
            to: to.clone(),
            message: message.into(),
        }
    }

    /// The error a status received from `to` stands for.
    pub fn from_status(status: &Status, method: &'static str, to: &Arc<str>) -> Self {
        let mut message = status.message().to_string();
        if message.is_empty() {
            message = format!("{:?}", status.code());
        }
        // tonic's "transport error" hides its cause (reset, refused, timed out) in the chain.
        let mut last = message.clone();
        let mut source = std::error::Error::source(status);
        while let Some(s) = source {
            let text = s.to_string();
            if text != last {
                message.push_str(": ");
                message.push_str(&text);
                last = text;
            }
            source = s.source();
        }
        RpcError::new(RpcErrorKind::of(status.code()), method, to, message)
    }

    /// True if the same call may succeed later: the peer was unreachable or slow, not
    /// refusing.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            RpcErrorKind::Unreachable | RpcErrorKind::DeadlineExceeded
        )
    }
}

impl From<RpcError> for Status {
    /// Relays a failed call's kind and message to this server's own caller.
    fn from(e: RpcError) -> Status {
        Status::new(e.kind.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_a_status_and_say_what_is_transient() {
        let to: Arc<str> = "127.0.0.1:1".into();
        for kind in [
            RpcErrorKind::Unreachable,
            RpcErrorKind::DeadlineExceeded,
            RpcErrorKind::Unauthenticated,
            RpcErrorKind::NotFound,
            RpcErrorKind::AlreadyExists,
            RpcErrorKind::Exhausted,
            RpcErrorKind::InvalidArgument,
            RpcErrorKind::Failed,
        ] {
            let relayed: Status = RpcError::new(kind, "M", &to, "why").into();
            assert_eq!(RpcError::from_status(&relayed, "M", &to).kind, kind);
        }
        let e = RpcError::from_status(&Status::unavailable("gone"), "GetObject", &to);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "GetObject to 127.0.0.1:1: gone");
        assert!(
            !RpcError::from_status(&Status::resource_exhausted("full"), "M", &to).is_transient()
        );
    }
}
