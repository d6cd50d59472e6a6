//! The per-node shared-memory object store of the Rust Ray runtime (Ray's "plasma").
//!
//! One node has one *arena*: a file of `capacity` bytes in `/dev/shm` (or the system temp dir
//! where `/dev/shm` does not exist), created sparse by the node manager and memory-mapped,
//! shared and read-write, by every process of the node. Large objects are written once into
//! an allocation of the arena by the process that creates them, sealed, and from then on read
//! in place (zero-copy) by any process that maps the arena.
//!
//! * [`ObjectStore`] lives only in the node manager: it owns the arena file, the allocator
//!   (best-fit over coalesced free extents, so freed, already resident pages are reused) and
//!   the object table (sealing, pins, deletion, LRU eviction of evictable copies).
//! * [`ArenaMapping`] is what every process holds: it maps the file and turns an
//!   [`Allocation`] (offset and length, obtained from the node manager) into bytes.
//!
//! Every allocation starts at a multiple of [`ALIGNMENT`] (64 bytes), so slices of primitive
//! numbers can be viewed in place. Soundness of shared access rests on a protocol (only the
//! creator writes, and only before sealing; readers read only sealed objects they pinned):
//! see [`ArenaMapping`].
//!
//! # Example
//!
//! ```
//! use ray_object_store::{ArenaMapping, ObjectId, ObjectStore, StoreConfig};
//!
//! # fn main() -> Result<(), ray_object_store::StoreError> {
//! let name = format!("rayrs-doc-{}", std::process::id());
//! let store = ObjectStore::create(StoreConfig::new(name).with_capacity(1 << 20))?;
//!
//! // Creator: reserve, write, seal.
//! let id = ObjectId([7; 16]);
//! let alloc = store.create_object(id, 5)?;
//! assert_eq!(alloc.offset % 64, 0);
//! let writer = ArenaMapping::open(store.path())?; // in practice: another process
//! writer.write(alloc, 0, b"hello")?;
//! store.seal(id)?;
//!
//! // Reader: pin, read in place, unpin.
//! let got = store.get(id).expect("sealed");
//! let reader = ArenaMapping::open(store.path())?;
//! assert_eq!(reader.bytes(got)?, b"hello");
//! store.release(id);
//!
//! // Owner frees it.
//! store.delete(id);
//! assert!(!store.contains(id));
//! assert_eq!(store.used(), 0);
//! # Ok(())
//! # }
//! // Dropping the store removes the arena file.
//! ```

#![warn(missing_docs)]

mod alloc;
mod arena;
mod config;
mod error;
mod id;
mod store;

pub use alloc::{reserved_size, ALIGNMENT};
pub use arena::ArenaMapping;
pub use config::{StoreConfig, SHM_DIR};
pub use error::StoreError;
pub use id::{ObjectId, ParseObjectIdError};
pub use store::{Allocation, ObjectInfo, ObjectStore, StoreStats};
