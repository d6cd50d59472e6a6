//! The crate's error type.

use crate::ObjectId;

/// Errors of the object store and of arena mappings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No room for the object even after evicting every evictable object.
    #[error(
        "object store full: requested {requested} bytes, but after evicting what could be \
         evicted only {free} of {capacity} bytes are free (not enough, or not contiguous); \
         {used} bytes used, of which {pinned} pinned (unsealed or in use by readers)",
        free = capacity.saturating_sub(*used)
    )]
    Full {
        /// Bytes asked for (the object's length).
        requested: u64,
        /// The store's capacity in bytes.
        capacity: u64,
        /// Bytes in use after the eviction attempt.
        used: u64,
        /// Bytes held by pinned or unsealed objects, which cannot be evicted.
        pinned: u64,
    },
    /// An object with this id is already in the store (possibly deleted but still pinned).
    #[error("object {0} already exists in the store")]
    AlreadyExists(ObjectId),
    /// No such object.
    #[error("object {0} not found in the store")]
    NotFound(ObjectId),
    /// The object exists but has not been sealed yet.
    #[error("object {0} is not sealed")]
    NotSealed(ObjectId),
    /// The object was sealed already.
    #[error("object {0} is already sealed")]
    AlreadySealed(ObjectId),
    /// The object is larger than the whole store: it can never fit.
    #[error("object of {requested} bytes can never fit in an object store of {capacity} bytes")]
    TooLarge {
        /// Bytes asked for (the object's length).
        requested: u64,
        /// The store's capacity in bytes.
        capacity: u64,
    },
    /// A byte range lies (partly) outside the arena or the allocation.
    #[error("range [{offset}, {offset}+{len}) is out of bounds (limit {limit} bytes)")]
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The size of what the range must fit in (the arena or the allocation).
        limit: u64,
    },
    /// A configuration value is unusable (empty or path-like name, zero capacity, ...).
    #[error("invalid object store configuration: {0}")]
    InvalidConfig(String),
    /// An operating-system error (creating, sizing, mapping or removing the arena file).
    #[error("object store I/O error: {0}")]
    Io(#[from] std::io::Error),
}
