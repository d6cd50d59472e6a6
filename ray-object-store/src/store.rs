//! The node manager's object table and allocator.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::alloc::{reserved_size, FreeList, ALIGNMENT};
use crate::{ArenaMapping, ObjectId, StoreConfig, StoreError};

/// A range of the arena holding one object.
///
/// `offset` is a multiple of [`ALIGNMENT`] (64 bytes), so slices of `f64`, `i64` and other
/// primitive numbers can be viewed in place. `len` is the object's length as requested; the
/// store reserves [`crate::reserved_size`]`(len)` bytes for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Start of the object in the arena, in bytes.
    pub offset: u64,
    /// Length of the object in bytes.
    pub len: u64,
}

/// A snapshot of one object's state (see [`ObjectStore::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Where the object lives.
    pub allocation: Allocation,
    /// Arena bytes reserved for it (its length rounded up to [`ALIGNMENT`], at least one block).
    pub reserved: u64,
    /// Whether it was sealed (it is immutable and readable).
    pub sealed: bool,
    /// Outstanding [`ObjectStore::get`] pins.
    pub pins: u64,
    /// Whether it may be evicted under memory pressure once sealed and unpinned.
    pub evictable: bool,
    /// Whether its owner deleted it (it is freed when the last pin is released).
    pub deleted: bool,
}

/// Counters of an [`ObjectStore`] (see [`ObjectStore::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects in the table: unsealed, sealed, and deleted but still pinned.
    pub num_objects: usize,
    /// Arena bytes reserved by those objects.
    pub used: u64,
    /// Bytes of objects that cannot be evicted or freed now: unsealed or pinned by a reader.
    pub pinned: u64,
    /// Bytes of objects that would be evicted under pressure (sealed, unpinned, evictable).
    pub evictable: u64,
    /// Usable arena size in bytes.
    pub capacity: u64,
    /// Objects evicted so far.
    pub evictions: u64,
    /// Bytes evicted so far.
    pub evicted_bytes: u64,
    /// Number of maximal free ranges (1 when the store is empty).
    pub free_extents: usize,
    /// The largest object that fits without eviction, in reserved bytes.
    pub largest_free_extent: u64,
}

#[derive(Debug)]
struct Entry {
    alloc: Allocation,
    reserved: u64,
    sealed: bool,
    pins: u64,
    evictable: bool,
    deleted: bool,
    /// Key in `Inner::lru` while this entry is an eviction candidate.
    lru_tick: Option<u64>,
}

impl Entry {
    /// Not freeable or evictable now: being written by its creator, or pinned by a reader.
    fn pinned(&self) -> bool {
        !self.sealed || self.pins > 0
    }

    /// Would be evicted under memory pressure.
    fn candidate(&self) -> bool {
        self.sealed && self.pins == 0 && self.evictable && !self.deleted
    }

    fn info(&self) -> ObjectInfo {
        ObjectInfo {
            allocation: self.alloc,
            reserved: self.reserved,
            sealed: self.sealed,
            pins: self.pins,
            evictable: self.evictable,
            deleted: self.deleted,
        }
    }
}

#[derive(Debug)]
struct Inner {
    free: FreeList,
    objects: HashMap<ObjectId, Entry>,
    /// Eviction candidates, least recently used first.
    lru: BTreeMap<u64, ObjectId>,
    tick: u64,
    used: u64,
    pinned: u64,
    evictable: u64,
    evictions: u64,
    evicted_bytes: u64,
    /// Large freed ranges (offset, length, when, in [`ObjectStore::discard_idle`] rounds),
    /// whose memory goes back to the system once they stayed free a round: a range
    /// allocated again soon (a loop of large puts) keeps its pages warm.
    discard: Vec<(u64, u64, u64)>,
    /// Rounds of [`ObjectStore::discard_idle`] so far.
    clock: u64,
}

impl Inner {
    /// Applies `f` to the entry of `id`, keeps the counters and the LRU index in step, and
    /// frees the object if it is now deleted and unpinned. `None` if there is no such entry.
    fn update<R>(&mut self, id: ObjectId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let e = self.objects.get_mut(&id)?;
        let (p0, c0) = (e.pinned(), e.candidate());
        let r = f(e);
        let (p1, c1) = (e.pinned(), e.candidate());
        match (p0, p1) {
            (false, true) => self.pinned += e.reserved,
            (true, false) => self.pinned -= e.reserved,
            _ => {}
        }
        match (c0, c1) {
            (true, false) => {
                if let Some(t) = e.lru_tick.take() {
                    self.lru.remove(&t);
                }
                self.evictable -= e.reserved;
            }
            (false, true) => {
                self.tick += 1;
                e.lru_tick = Some(self.tick);
                self.lru.insert(self.tick, id);
                self.evictable += e.reserved;
            }
            _ => {}
        }
        if e.deleted && !p1 {
            self.unlink(id);
        }
        Some(r)
    }

    /// Removes `id` from the table and returns its range to the free space.
    fn unlink(&mut self, id: ObjectId) -> Option<Entry> {
        let e = self.objects.remove(&id)?;
        if e.pinned() {
            self.pinned -= e.reserved;
        }
        if let Some(t) = e.lru_tick {
            self.lru.remove(&t);
            self.evictable -= e.reserved;
        }
        self.free.free(e.alloc.offset, e.reserved);
        self.used -= e.reserved;
        if e.reserved >= DISCARD_MIN {
            self.discard.push((e.alloc.offset, e.reserved, self.clock));
        }
        Some(e)
    }

    /// Evicts the least recently used candidate; returns its reserved size.
    fn evict_one(&mut self) -> Option<u64> {
        let (_, id) = self.lru.pop_first()?;
        // Clear the tick first: `unlink` must not remove it from `lru` again.
        if let Some(e) = self.objects.get_mut(&id) {
            e.lru_tick = None;
            self.evictable -= e.reserved;
        }
        let e = self.unlink(id)?;
        self.evictions += 1;
        self.evicted_bytes += e.reserved;
        tracing::debug!(object = %id, bytes = e.reserved, "evicted object");
        Some(e.reserved)
    }
}

/// A node's shared-memory object store: the arena file plus, in the node manager's process,
/// the allocator and the object table.
///
/// Thread-safe (`Send + Sync`): every method takes a short internal lock and does no I/O.
///
/// # Object lifecycle
///
/// 1. [`create_object`](Self::create_object) reserves a range; the object is unsealed and
///    pinned by its creator, who writes it (through an [`ArenaMapping`]).
/// 2. [`seal`](Self::seal) makes it immutable and readable and drops the creator's pin
///    ([`abort`](Self::abort) instead frees it).
/// 3. Readers [`get`](Self::get) it (one pin each) and [`release`](Self::release) it. Pins
///    are counted per store, not per client: the caller (the node manager) must release the
///    pins of a client that disconnects.
/// 4. [`delete`](Self::delete) frees it at once, or when its last pin is released.
///
/// Sealed, unpinned objects marked [`set_evictable`](Self::set_evictable) are evicted in
/// least-recently-released order when a creation does not fit.
///
/// Dropping the store removes the arena file; processes that mapped it keep their mapping.
pub struct ObjectStore {
    path: PathBuf,
    /// The memory file of an anonymous store (kept open: it lives while some process holds
    /// it); `None` for a named file, which drop removes.
    memfd: Option<std::fs::File>,
    capacity: u64,
    arena: ArenaMapping,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ObjectStore {
    /// Creates the arena file `dir/name` (exclusively: an existing file is an error), mode
    /// 0600, sparse, of `config.capacity` bytes rounded down to a multiple of [`ALIGNMENT`],
    /// and maps it.
    ///
    /// The capacity should not exceed the free space of the directory: on tmpfs, touching a
    /// page beyond the available space kills the writer with `SIGBUS`. A warning is logged if
    /// it does.
    pub fn create(config: StoreConfig) -> Result<Self, StoreError> {
        let name = config.name.as_str();
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(StoreError::InvalidConfig(format!(
                "store name {name:?} is not a plain file name"
            )));
        }
        let capacity = usable_capacity(&config)?;
        let dir = config.resolved_dir();
        let path = dir.join(name);
        if let Some(avail) = crate::config::available_bytes(&dir) {
            if avail < capacity {
                tracing::warn!(
                    capacity,
                    available = avail,
                    dir = %dir.display(),
                    "object store capacity exceeds the free space of its directory"
                );
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let arena = file
            .set_len(capacity)
            .map_err(StoreError::from)
            .and_then(|()| ArenaMapping::from_file(&file, &path));
        let arena = match arena {
            Ok(a) => a,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        tracing::debug!(path = %path.display(), capacity, "created object store");
        Ok(Self::with_arena(path, None, capacity, arena))
    }

    /// Creates an arena with no name in any directory: a memory file (`memfd_create`) that
    /// exists only while some process holds it open or mapped. Nothing is left behind
    /// however the processes end (even by `SIGKILL`). Other processes map it through
    /// [`ObjectStore::path`], `/proc/<pid>/fd/<fd>` of this process, while it lives;
    /// `config.dir` is not used and `config.name` only labels the mapping.
    pub fn create_anonymous(config: StoreConfig) -> Result<Self, StoreError> {
        let capacity = usable_capacity(&config)?;
        let name = std::ffi::CString::new(config.name.as_str())
            .map_err(|_| StoreError::InvalidConfig("store name holds a NUL byte".into()))?;
        // SAFETY: a plain syscall with a valid C string; the fd it returns is owned below.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
        file.set_len(capacity)?;
        let arena = ArenaMapping::from_file(&file, &path)?;
        tracing::debug!(path = %path.display(), capacity, "created anonymous object store");
        Ok(Self::with_arena(path, Some(file), capacity, arena))
    }

    fn with_arena(
        path: PathBuf,
        memfd: Option<std::fs::File>,
        capacity: u64,
        arena: ArenaMapping,
    ) -> Self {
        ObjectStore {
            path,
            memfd,
            capacity,
            arena,
            inner: Mutex::new(Inner {
                free: FreeList::new(capacity),
                objects: HashMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                used: 0,
                pinned: 0,
                evictable: 0,
                evictions: 0,
                evicted_bytes: 0,
                discard: Vec::new(),
                clock: 0,
            }),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Gives back to the system the memory of large freed ranges that stayed free since the
    /// previous call (the node manager calls it every second or so). Under the lock, so no
    /// range is allocated meanwhile. Returns the bytes given back.
    pub fn discard_idle(&self) -> u64 {
        let mut inner = self.lock();
        let now = inner.clock;
        inner.clock += 1;
        let mut given = 0;
        let mut keep = Vec::new();
        for (offset, len, when) in std::mem::take(&mut inner.discard) {
            if when < now {
                self.arena.discard(Allocation { offset, len });
                given += len;
            } else {
                keep.push((offset, len, when));
            }
        }
        inner.discard = keep;
        given
    }

    /// The arena file's path (what other processes pass to [`ArenaMapping::open`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Usable size of the arena in bytes (a multiple of [`ALIGNMENT`]).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Arena bytes reserved by objects in the table (each object's length rounded up to
    /// [`ALIGNMENT`], at least one block).
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// This process's own mapping of the arena, for the node manager to read and write
    /// objects (e.g. ones pulled from another node).
    pub fn arena(&self) -> &ArenaMapping {
        &self.arena
    }

    /// Reserves room for a new object of `len` bytes and returns its range.
    ///
    /// The object is unsealed and pinned by its creator until [`seal`](Self::seal) or
    /// [`abort`](Self::abort). If no free range is large enough, evictable objects are evicted
    /// least recently used first, as few as needed (none if even evicting all of them could
    /// not free enough bytes).
    ///
    /// Errors: [`StoreError::AlreadyExists`] if `id` is in the table (including deleted but
    /// still pinned), [`StoreError::TooLarge`] if it exceeds the capacity,
    /// [`StoreError::Full`] if it does not fit after eviction.
    pub fn create_object(&self, id: ObjectId, len: u64) -> Result<Allocation, StoreError> {
        let too_large = StoreError::TooLarge {
            requested: len,
            capacity: self.capacity,
        };
        let reserved = match reserved_size(len) {
            Some(r) if r <= self.capacity => r,
            _ => return Err(too_large),
        };
        let mut inner = self.lock();
        if inner.objects.contains_key(&id) {
            return Err(StoreError::AlreadyExists(id));
        }
        let offset = loop {
            if let Some(off) = inner.free.alloc(reserved) {
                // Pages about to be written again are not to be discarded.
                inner
                    .discard
                    .retain(|(o, l, _)| off + reserved <= *o || o + l <= off);
                break off;
            }
            let reclaimable = inner.free.free_bytes() + inner.evictable;
            if reclaimable < reserved || inner.evict_one().is_none() {
                let err = StoreError::Full {
                    requested: len,
                    capacity: self.capacity,
                    used: inner.used,
                    pinned: inner.pinned,
                };
                tracing::debug!(object = %id, "{err}");
                return Err(err);
            }
        };
        let alloc = Allocation { offset, len };
        inner.objects.insert(
            id,
            Entry {
                alloc,
                reserved,
                sealed: false,
                pins: 0,
                evictable: false,
                deleted: false,
                lru_tick: None,
            },
        );
        inner.used += reserved;
        inner.pinned += reserved;
        Ok(alloc)
    }

    /// Seals an object: it becomes immutable and readable, and its creator's pin is released
    /// (so a deleted object is freed now).
    pub fn seal(&self, id: ObjectId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.objects.get(&id) {
            None => Err(StoreError::NotFound(id)),
            Some(e) if e.sealed => Err(StoreError::AlreadySealed(id)),
            Some(_) => {
                inner.update(id, |e| e.sealed = true);
                Ok(())
            }
        }
    }

    /// The creator gave up: frees an unsealed object. No effect on sealed or unknown objects.
    pub fn abort(&self, id: ObjectId) {
        let mut inner = self.lock();
        match inner.objects.get(&id) {
            Some(e) if !e.sealed => {
                inner.unlink(id);
            }
            Some(_) => tracing::warn!(object = %id, "abort of a sealed object ignored"),
            None => {}
        }
    }

    /// Pins a sealed, not deleted object and returns its range; `None` otherwise. Each
    /// successful `get` must be matched by one [`release`](Self::release).
    pub fn get(&self, id: ObjectId) -> Option<Allocation> {
        let mut inner = self.lock();
        match inner.objects.get(&id) {
            Some(e) if e.sealed && !e.deleted => inner.update(id, |e| {
                e.pins += 1;
                e.alloc
            }),
            _ => None,
        }
    }

    /// Drops one pin taken by [`get`](Self::get). The object becomes evictable again (as the
    /// most recently used) or, if deleted and now unpinned, is freed.
    pub fn release(&self, id: ObjectId) {
        let mut inner = self.lock();
        let released = inner.update(id, |e| {
            let had = e.pins > 0;
            e.pins = e.pins.saturating_sub(1);
            had
        });
        if released != Some(true) {
            tracing::warn!(object = %id, "release of an object that is not pinned");
        }
    }

    /// The owner freed the object: frees it now, or when the last pin (or the creator's, at
    /// seal or abort) is released. From now on `get` and `contains` no longer see it.
    pub fn delete(&self, id: ObjectId) {
        self.lock().update(id, |e| e.deleted = true);
    }

    /// Evicts evictable objects, least recently used first, until at least `bytes` bytes
    /// were evicted or none is left (e.g. to make room ahead of a large transfer). Returns
    /// the bytes evicted.
    pub fn evict(&self, bytes: u64) -> u64 {
        let mut inner = self.lock();
        let mut evicted = 0;
        while evicted < bytes {
            match inner.evict_one() {
                Some(n) => evicted += n,
                None => break,
            }
        }
        evicted
    }

    /// Marks an object as evictable (e.g. a secondary copy) or not. No effect on unknown ids.
    pub fn set_evictable(&self, id: ObjectId, evictable: bool) {
        self.lock().update(id, |e| e.evictable = evictable);
    }

    /// Whether the object is sealed and not deleted (so `get` would succeed).
    pub fn contains(&self, id: ObjectId) -> bool {
        self.inner
            .lock()
            .objects
            .get(&id)
            .is_some_and(|e| e.sealed && !e.deleted)
    }

    /// The state of one object, without pinning it; `None` if not in the table.
    pub fn info(&self, id: ObjectId) -> Option<ObjectInfo> {
        self.lock().objects.get(&id).map(Entry::info)
    }

    /// A snapshot of every object in the table (for diagnostics; `O(n)`).
    pub fn objects(&self) -> Vec<(ObjectId, ObjectInfo)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .map(|(id, e)| (*id, e.info()))
            .collect()
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            num_objects: inner.objects.len(),
            used: inner.used,
            pinned: inner.pinned,
            evictable: inner.evictable,
            capacity: self.capacity,
            evictions: inner.evictions,
            evicted_bytes: inner.evicted_bytes,
            free_extents: inner.free.extents(),
            largest_free_extent: inner.free.largest(),
        }
    }

    /// Removes the arena file and drops the store (same as dropping it).
    pub fn destroy(self) {
        drop(self);
    }
}

/// Freed objects at least this large give their memory back to the system (a freed
/// gigabyte would otherwise stay resident in every process that mapped it), once they
/// stayed free for a round of [`ObjectStore::discard_idle`].
const DISCARD_MIN: u64 = 1 << 20;

/// The arena size `config` asks for, rounded down to [`ALIGNMENT`]; at least one block.
fn usable_capacity(config: &StoreConfig) -> Result<u64, StoreError> {
    let capacity = config.capacity & !(ALIGNMENT - 1);
    if capacity == 0 {
        return Err(StoreError::InvalidConfig(format!(
            "capacity {} is below the minimum of {ALIGNMENT} bytes",
            config.capacity
        )));
    }
    Ok(capacity)
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if self.memfd.is_some() {
            return; // Closing the memory file is all: it goes with its last user.
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(path = %self.path.display(), "removed object store"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove arena")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_sync() {
        assert_send_sync::<ObjectStore>();
        assert_send_sync::<ArenaMapping>();
    }
}
