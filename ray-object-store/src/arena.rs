//! Mapping of the arena file into a process.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use crate::{Allocation, StoreError};

/// A shared, read-write memory mapping of a node's arena file.
///
/// Any process of the node (node manager, drivers, workers) opens one with
/// [`ArenaMapping::open`] and then reads or writes allocations that the node manager's
/// [`crate::ObjectStore`] handed out. The mapping stays valid even after the arena file is
/// removed; it is unmapped when dropped.
///
/// # Access protocol
///
/// The mapping is shared memory: other processes can write to it at any time, which Rust's
/// aliasing rules cannot see. Soundness rests on the store's protocol, which every user must
/// follow:
///
/// * Only the creator of an object writes to its allocation, and only between
///   [`crate::ObjectStore::create_object`] and [`crate::ObjectStore::seal`] (or
///   [`crate::ObjectStore::abort`]).
/// * Everyone else reads an allocation only while holding a pin on the sealed object
///   ([`crate::ObjectStore::get`] ... [`crate::ObjectStore::release`]). Sealed objects are
///   immutable and a pinned object's range is never reused, so the bytes seen through
///   [`ArenaMapping::bytes`] do not change while pinned.
///
/// The creator must not read its own unsealed allocation through [`ArenaMapping::bytes`] while
/// writing to it through [`ArenaMapping::write`] or [`ArenaMapping::bytes_mut`].
pub struct ArenaMapping {
    map: MmapRaw,
    path: PathBuf,
}

impl std::fmt::Debug for ArenaMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaMapping")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

impl ArenaMapping {
    /// Maps the arena file at `path` read-write and shared. The length is the file's length.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(&file, path)
    }

    pub(crate) fn from_file(file: &File, path: &Path) -> Result<Self, StoreError> {
        let len = file.metadata()?.len();
        let len_usize = usize::try_from(len).map_err(|_| StoreError::OutOfBounds {
            offset: 0,
            len,
            limit: usize::MAX as u64,
        })?;
        let map = MmapOptions::new().len(len_usize).map_raw(file)?;
        Ok(ArenaMapping {
            map,
            path: path.to_path_buf(),
        })
    }

    /// The path the arena was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The arena's length in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the arena has zero length.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Checks that `[offset, offset + len)` lies in the arena; returns it as `usize`s.
    fn range(&self, offset: u64, len: u64) -> Result<(usize, usize), StoreError> {
        let arena = self.len();
        let oob = StoreError::OutOfBounds {
            offset,
            len,
            limit: arena,
        };
        match offset.checked_add(len) {
            Some(end) if end <= arena => Ok((offset as usize, len as usize)),
            _ => Err(oob),
        }
    }

    /// The bytes of allocation `a`, read in place (zero-copy).
    ///
    /// Returns [`StoreError::OutOfBounds`] if `a` does not lie inside the arena; never panics.
    /// Read only sealed objects you hold a pin on (see the access protocol on
    /// [`ArenaMapping`]).
    pub fn bytes(&self, a: Allocation) -> Result<&[u8], StoreError> {
        let (start, len) = self.range(a.offset, a.len)?;
        // SAFETY: `[start, start + len)` lies inside the live mapping (checked above), which
        // lives as long as `&self`. Immutability while borrowed is guaranteed by the store's
        // access protocol (sealed + pinned objects are never written or reused).
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) })
    }

    /// The bytes of allocation `a`, mutable in place, for the creator to fill.
    ///
    /// Returns [`StoreError::OutOfBounds`] if `a` does not lie inside the arena.
    ///
    /// # Safety
    ///
    /// The caller must have exclusive access to the range for the lifetime of the returned
    /// slice: `a` must be an allocation the caller created with
    /// [`crate::ObjectStore::create_object`] and has not yet sealed or aborted, no other
    /// slice (from `bytes` or `bytes_mut`, in this or any other process) may overlap it while
    /// the returned slice is alive, and the slice must not be used after `seal`/`abort`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, a: Allocation) -> Result<&mut [u8], StoreError> {
        let (start, len) = self.range(a.offset, a.len)?;
        // SAFETY: in bounds (checked above); exclusivity is the caller's obligation.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(start), len) })
    }

    /// Gives the memory of the whole pages inside freed allocation `a` back to the system, in
    /// every process that maps the arena (they read zeros there afterwards). Only for ranges
    /// no object occupies; best effort: an error leaves the pages as they were.
    pub fn discard(&self, a: Allocation) {
        const PAGE: u64 = 4096;
        let Ok((start, len)) = self.range(a.offset, a.len) else {
            return;
        };
        let (start, end) = (start as u64, (start + len) as u64);
        let first = start.div_ceil(PAGE) * PAGE;
        let last = end / PAGE * PAGE;
        if last <= first {
            return;
        }
        // SAFETY: the page-aligned range lies inside the live mapping (checked above) and
        // holds no object (the caller's obligation), so nobody reads what it held.
        let r = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(first as usize).cast(),
                (last - first) as usize,
                libc::MADV_REMOVE,
            )
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not discard freed arena pages");
        }
    }

    /// Backs bytes `from..to` of allocation `a` with memory now, in one call (a pull about
    /// to write them saves a page fault per page). Best effort: without kernel support the
    /// pages fault in as they are written.
    pub fn populate(&self, a: Allocation, from: u64, to: u64) {
        const PAGE: u64 = 4096;
        let Ok((start, len)) = self.range(a.offset, a.len) else {
            return;
        };
        let (start, end) = (
            start as u64 + from.min(len as u64),
            start as u64 + to.min(len as u64),
        );
        let first = start / PAGE * PAGE;
        if end <= first {
            return;
        }
        // SAFETY: the range lies inside the live mapping (checked above); populating only
        // backs pages with memory, it changes no byte a reader could see.
        let r = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(first as usize).cast(),
                (end - first) as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not populate arena pages");
        }
    }

    /// Copies `data` into allocation `a` at `offset_in_object`.
    ///
    /// Fails with [`StoreError::OutOfBounds`] if `[offset_in_object, offset_in_object +
    /// data.len())` exceeds `a.len`, or `a` exceeds the arena. Only write to unsealed
    /// allocations you created (see the access protocol on [`ArenaMapping`]); `data` may
    /// itself live in the arena.
    pub fn write(
        &self,
        a: Allocation,
        offset_in_object: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let dlen = data.len() as u64;
        match offset_in_object.checked_add(dlen) {
            Some(end) if end <= a.len => {}
            _ => {
                return Err(StoreError::OutOfBounds {
                    offset: offset_in_object,
                    len: dlen,
                    limit: a.len,
                })
            }
        }
        let (start, _) = self.range(a.offset, a.len)?;
        // SAFETY: destination `[start + offset_in_object, .. + data.len())` lies inside `a`,
        // which lies inside the mapping (both checked above). `ptr::copy` tolerates overlap
        // with `data`. No reference to the destination is created.
        unsafe {
            std::ptr::copy(
                data.as_ptr(),
                self.map.as_mut_ptr().add(start + offset_in_object as usize),
                data.len(),
            );
        }
        Ok(())
    }
}
