//! Typed ids: a node, a worker, an actor, a task, a job, a lease, and (re-exported) an
//! object. Each is its own type, so one cannot be passed for another, and each parses from its
//! wire bytes with an error that names what was malformed.

pub use ray_object_store::ObjectId;
use std::fmt;

/// A wire field that should have held an id did not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {len} bytes, expected {expected}")]
pub struct IdError {
    /// Which id it should have been ("node id", "actor id", ...).
    pub what: &'static str,
    /// The length found.
    pub len: usize,
    /// The length an id of that kind has.
    pub expected: usize,
}

/// 16 random bytes, from the kernel's generator; unique, not secret.
pub fn random_bytes() -> [u8; 16] {
    let mut id = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != id.len() as isize {
        // No entropy source (a very old kernel): time and pid, still unique enough for ids.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id[..12].copy_from_slice(&t.to_le_bytes()[..12]);
        id[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    id
}

/// A random name for a request that may be sent more than once (a lease request, a borrow
/// registration): never 0, which means "no name" on the wire.
pub fn request_id() -> u64 {
    let bytes = random_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 of 16 bytes")).max(1)
}

/// Lowercase hex of any bytes (ids print this way in logs and in the state API).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses an object id from its wire bytes.
pub fn object_id(bytes: &[u8]) -> Result<ObjectId, IdError> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError {
        what: "object id",
        len: bytes.len(),
        expected: 16,
    })?;
    Ok(ObjectId(arr))
}

macro_rules! id16 {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                $name(random_bytes())
            }

            /// Parses the id from its wire bytes (exactly 16).
            pub fn from_wire(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError {
                    what: $what,
                    len: bytes.len(),
                    expected: 16,
                })?;
                Ok($name(arr))
            }

            /// The id's bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// The id as a wire field.
            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }

            /// 32 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Parses 32 hex digits (either case); `None` if that is not what `text` is.
            pub fn from_hex(text: &str) -> Option<Self> {
                let text = text.as_bytes();
                if text.len() != 32 {
                    return None;
                }
                let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                let mut out = [0u8; 16];
                for (i, pair) in text.chunks(2).enumerate() {
                    out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
                }
                Some($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }
    };
}

id16!(
    /// A node (one node manager and its object store).
    NodeId,
    "node id"
);
id16!(
    /// A worker process (or a driver: its core worker has one too).
    WorkerId,
    "worker id"
);
id16!(
    /// An actor, for its whole life across restarts.
    ActorId,
    "actor id"
);
id16!(
    /// A placement group: bundles of resources reserved together.
    PlacementGroupId,
    "placement group id"
);
id16!(
    /// One execution of a task or actor method, as the worker running it names it.
    TaskId,
    "task id"
);

/// A job: one driver program and everything it starts. Given out by the GCS.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct JobId(pub u32);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A worker lease granted by one node manager; unique within that node manager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_from_their_wire_bytes_and_name_a_bad_field() {
        let id = NodeId::random();
        assert_eq!(NodeId::from_wire(&id.to_vec()), Ok(id));
        let err = ActorId::from_wire(&[1, 2, 3]).unwrap_err();
        assert_eq!(err.to_string(), "malformed actor id: 3 bytes, expected 16");
        assert_eq!(object_id(&[0; 16]).unwrap(), ObjectId([0; 16]));
        assert!(object_id(&[0; 17]).is_err());
    }

    #[test]
    fn random_ids_differ_and_print_as_hex() {
        let (a, b) = (WorkerId::random(), WorkerId::random());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert!(a.to_string().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            format!("{:?}", TaskId([0xab; 16])),
            format!("TaskId({})", "ab".repeat(16))
        );
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
