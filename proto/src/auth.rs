//! The per-session token that every connection between the runtime's processes carries.
//!
//! gRPC calls carry it as `authorization: Bearer <token>` metadata (as Ray does since 2.52); the
//! data plane sends it in a [`crate::Hello`] frame first. A call without it is refused with
//! `UNAUTHENTICATED`, one with a wrong one with `PERMISSION_DENIED` (as Ray answers 401 and
//! 403), and the server logs the peer.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds the session token to every outgoing request.
#[derive(Clone)]
pub struct AttachToken {
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl AttachToken {
    /// Fails only if the token is not printable ASCII, which `init` never generates.
    pub fn new(token: &str) -> Result<Self, Status> {
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("session token is not printable ASCII"))?;
        Ok(AttachToken { header })
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut()
            .insert(crate::TOKEN_METADATA_KEY, self.header.clone());
        Ok(req)
    }
}

/// Refuses every incoming request whose token is missing or wrong.
#[derive(Clone)]
pub struct CheckToken {
    expected: std::sync::Arc<str>,
}

impl CheckToken {
    /// A checker for `token`.
    pub fn new(token: &str) -> Self {
        CheckToken {
            expected: format!("Bearer {token}").into(),
        }
    }

    /// True when `presented` is exactly the expected header, compared in constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, self.expected.as_bytes())
    }
}

impl Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get(crate::TOKEN_METADATA_KEY) {
            Some(v) if self.accepts(v.as_bytes()) => Ok(req),
            Some(_) => Err(Status::permission_denied("wrong session token")),
            None => Err(Status::unauthenticated("missing session token")),
        }
    }
}

/// Compares two byte strings without an early exit, so the time taken says nothing about
/// how long a matching prefix was.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_token_refuses_missing_and_wrong_tokens() {
        let mut check = CheckToken::new("s3cret");
        assert_eq!(
            check.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut wrong = Request::new(());
        wrong
            .metadata_mut()
            .insert(crate::TOKEN_METADATA_KEY, "Bearer nope".parse().unwrap());
        assert_eq!(
            check.call(wrong).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let mut attach = AttachToken::new("s3cret").unwrap();
        let good = attach.call(Request::new(())).unwrap();
        assert!(check.call(good).is_ok());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
