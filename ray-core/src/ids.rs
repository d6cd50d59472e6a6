//! Ids of objects, workers and nodes.
//!
//! An object id is the creating process's 8-byte prefix followed by an 8-byte counter, so ids
//! are made without coordination and never repeat within a session.

pub use ray_object_store::ObjectId;
use std::sync::atomic::{AtomicU64, Ordering};

/// A concurrent map keyed by object id. Ids are not chosen by an adversary (a process's
/// prefix and a counter), so a fast hash does: SipHash was a fifth of a `put`'s time.
pub(crate) type IdMap<V> = dashmap::DashMap<ObjectId, V, foldhash::fast::RandomState>;

/// Makes object ids for one process.
#[derive(Default)]
pub(crate) struct IdGen {
    prefix: [u8; 8],
    next: AtomicU64,
}

impl IdGen {
    pub fn new(worker_id: &ray_common::WorkerId) -> Self {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&worker_id.0[..8]);
        IdGen {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> ObjectId {
        self.next_n(1)
    }

    /// The first of `n` ids in a row (the ids of one task's returns: see [`nth_return`]).
    pub fn next_n(&self, n: u32) -> ObjectId {
        let n = self.next.fetch_add(u64::from(n.max(1)), Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix);
        id[8..].copy_from_slice(&n.to_be_bytes());
        ObjectId(id)
    }
}

/// Return `i` of a task whose first return is `first`: the ids of one task's returns are made
/// in a row ([`IdGen::next_n`]), so every process computes them from the first.
pub(crate) fn nth_return(first: ObjectId, i: u32) -> ObjectId {
    let mut id = first.0;
    let counter = u64::from_be_bytes(id[8..].try_into().expect("8 bytes"));
    id[8..].copy_from_slice(&counter.wrapping_add(u64::from(i)).to_be_bytes());
    ObjectId(id)
}

/// The ids of the `n` returns of a task whose first return is `first`.
pub(crate) fn return_ids(first: ObjectId, n: u32) -> impl Iterator<Item = ObjectId> + Clone {
    (0..n.max(1)).map(move |i| nth_return(first, i))
}

/// 16 bytes from parsing a wire field, or an error naming the field.
pub(crate) fn id16(bytes: &[u8], what: &str) -> Result<[u8; 16], crate::Error> {
    bytes
        .try_into()
        .map_err(|_| crate::Error::Runtime(format!("malformed {what}: {} bytes", bytes.len())))
}
