//! Best-fit free-extent allocator over the arena.
//!
//! Free space is kept as maximal extents (neighbours are always coalesced) in two ordered
//! indexes: by offset (to find neighbours when freeing) and by `(len, offset)` (to find the
//! smallest extent that fits, lowest offset first). Every operation is `O(log n)` in the number
//! of free extents. Offsets and sizes handed out are multiples of [`ALIGNMENT`].

use std::collections::{BTreeMap, BTreeSet};

/// Alignment (and granularity) of every allocation, in bytes: a cache line, and enough for
/// any primitive number type to be viewed in place.
pub const ALIGNMENT: u64 = 64;

/// The number of arena bytes an object of `len` bytes reserves: `len` rounded up to
/// [`ALIGNMENT`], and at least one block (so a zero-length object has a distinct offset).
///
/// Returns `None` on overflow.
pub fn reserved_size(len: u64) -> Option<u64> {
    let len = len.max(1);
    len.checked_add(ALIGNMENT - 1).map(|l| l & !(ALIGNMENT - 1))
}

/// The free-space index of an arena of `capacity` bytes.
#[derive(Debug)]
pub(crate) struct FreeList {
    capacity: u64,
    by_offset: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
    free: u64,
}

impl FreeList {
    /// An allocator whose whole `capacity` (a multiple of [`ALIGNMENT`]) is free.
    pub(crate) fn new(capacity: u64) -> Self {
        debug_assert_eq!(capacity % ALIGNMENT, 0);
        let mut fl = FreeList {
            capacity,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
            free: 0,
        };
        if capacity > 0 {
            fl.insert(0, capacity);
        }
        fl
    }

    /// Free bytes in total (possibly fragmented).
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free
    }

    /// The number of free extents.
    pub(crate) fn extents(&self) -> usize {
        self.by_offset.len()
    }

    /// The size of the largest free extent (the largest allocation that would succeed now).
    pub(crate) fn largest(&self) -> u64 {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }

    fn insert(&mut self, offset: u64, len: u64) {
        self.by_offset.insert(offset, len);
        self.by_size.insert((len, offset));
        self.free += len;
    }

    fn remove(&mut self, offset: u64, len: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(len, offset));
        self.free -= len;
    }

    /// Takes `size` bytes (a positive multiple of [`ALIGNMENT`]) from the smallest free extent
    /// that holds them; `None` if no extent is large enough.
    pub(crate) fn alloc(&mut self, size: u64) -> Option<u64> {
        debug_assert!(size > 0 && size % ALIGNMENT == 0);
        let &(len, offset) = self.by_size.range((size, 0)..).next()?;
        self.remove(offset, len);
        if len > size {
            self.insert(offset + size, len - size);
        }
        Some(offset)
    }

    /// Returns `[offset, offset + size)` (previously allocated) to the free space, merging it
    /// with free neighbours.
    pub(crate) fn free(&mut self, offset: u64, size: u64) {
        debug_assert!(size > 0 && offset % ALIGNMENT == 0 && size % ALIGNMENT == 0);
        debug_assert!(offset + size <= self.capacity);
        let (mut start, mut len) = (offset, size);
        if let Some((&p_off, &p_len)) = self.by_offset.range(..offset).next_back() {
            debug_assert!(p_off + p_len <= offset, "double free at {offset}");
            if p_off + p_len == offset {
                self.remove(p_off, p_len);
                start = p_off;
                len += p_len;
            }
        }
        if let Some((&n_off, &n_len)) = self.by_offset.range(offset..).next() {
            debug_assert!(offset + size <= n_off, "double free at {offset}");
            if offset + size == n_off {
                self.remove(n_off, n_len);
                len += n_len;
            }
        }
        self.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_sizes() {
        assert_eq!(reserved_size(0), Some(64));
        assert_eq!(reserved_size(1), Some(64));
        assert_eq!(reserved_size(64), Some(64));
        assert_eq!(reserved_size(65), Some(128));
        assert_eq!(reserved_size(u64::MAX), None);
    }

    #[test]
    fn best_fit_and_coalesce() {
        let mut fl = FreeList::new(64 * 10);
        let a = fl.alloc(64).unwrap();
        let b = fl.alloc(128).unwrap();
        let c = fl.alloc(64).unwrap();
        let d = fl.alloc(64 * 6).unwrap();
        assert_eq!((a, b, c, d), (0, 64, 192, 256));
        assert_eq!(fl.alloc(64), None);
        fl.free(b, 128);
        fl.free(d, 64 * 6);
        assert_eq!(fl.extents(), 2);
        // Best fit: the 128-byte hole, not the 384-byte one.
        assert_eq!(fl.alloc(64), Some(64));
        fl.free(64, 64);
        fl.free(a, 64);
        fl.free(c, 64);
        assert_eq!(fl.extents(), 1);
        assert_eq!(fl.free_bytes(), 640);
        assert_eq!(fl.largest(), 640);
        assert_eq!(fl.alloc(640), Some(0));
    }
}
