//! Integration tests of the object store against real shared memory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ray_object_store::{
    reserved_size, Allocation, ArenaMapping, ObjectId, ObjectStore, StoreConfig, StoreError,
    ALIGNMENT,
};

/// A store with a unique name (pid + counter); dropping it (even while unwinding from a
/// failed assertion) removes the arena file.
fn store(capacity: u64) -> ObjectStore {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "rayrs-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    ObjectStore::create(StoreConfig::new(name).with_capacity(capacity)).expect("create store")
}

fn oid(n: u64) -> ObjectId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8] = 0x5a;
    ObjectId(b)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed as u64) as u8 ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn lifecycle_create_seal_get_release_delete() {
    let s = store(1 << 20);
    let map = ArenaMapping::open(s.path()).unwrap();
    assert_eq!(map.len(), 1 << 20);
    let id = oid(1);
    let a = s.create_object(id, 1000).unwrap();
    assert_eq!(a.len, 1000);
    assert_eq!(s.used(), 1024);
    assert!(!s.contains(id), "unsealed objects are not visible");
    assert_eq!(s.get(id), None, "get of an unsealed object");
    assert_eq!(s.stats().pinned, 1024, "creator pins the object");

    let data = pattern(3, 1000);
    map.write(a, 0, &data[..600]).unwrap();
    map.write(a, 600, &data[600..]).unwrap();
    s.seal(id).unwrap();
    assert!(s.contains(id));
    assert_eq!(s.stats().pinned, 0, "seal releases the creator's pin");

    let g = s.get(id).unwrap();
    assert_eq!(g, a);
    assert_eq!(s.info(id).unwrap().pins, 1);
    assert_eq!(s.stats().pinned, 1024);
    assert_eq!(map.bytes(g).unwrap(), &data[..]);
    // The store's own mapping sees the same bytes.
    assert_eq!(s.arena().bytes(g).unwrap(), &data[..]);
    s.release(id);
    assert_eq!(s.info(id).unwrap().pins, 0);
    assert_eq!(s.stats().pinned, 0);

    s.delete(id);
    assert!(!s.contains(id));
    assert_eq!(s.used(), 0);
    assert_eq!(s.stats().num_objects, 0);
    assert_eq!(s.stats().free_extents, 1);
}

#[test]
fn error_cases() {
    let s = store(1 << 16);
    let id = oid(1);
    assert!(matches!(s.seal(id), Err(StoreError::NotFound(x)) if x == id));
    s.create_object(id, 10).unwrap();
    assert!(matches!(s.create_object(id, 10), Err(StoreError::AlreadyExists(x)) if x == id));
    s.seal(id).unwrap();
    assert!(matches!(s.seal(id), Err(StoreError::AlreadySealed(x)) if x == id));
    assert!(matches!(
        s.create_object(id, 10),
        Err(StoreError::AlreadyExists(_))
    ));
    // Abort of a sealed object is ignored; release of an unpinned one too.
    s.abort(id);
    s.release(id);
    assert!(s.contains(id));
    assert_eq!(s.info(id).unwrap().pins, 0);
    // Unknown ids are no-ops.
    s.release(oid(99));
    s.delete(oid(99));
    s.set_evictable(oid(99), true);
    s.abort(oid(99));
    assert_eq!(s.get(oid(99)), None);
    assert_eq!(s.stats().num_objects, 1);
}

#[test]
fn deferred_free_while_pinned() {
    let s = store(1 << 16);
    let id = oid(7);
    let a = s.create_object(id, 4096).unwrap();
    s.seal(id).unwrap();
    assert_eq!(s.get(id), Some(a));
    assert_eq!(s.get(id), Some(a));
    s.delete(id);
    assert!(!s.contains(id));
    assert_eq!(s.get(id), None, "deleted objects cannot be pinned again");
    assert_eq!(s.used(), 4096, "still pinned: not freed yet");
    assert!(s.info(id).unwrap().deleted);
    assert!(matches!(
        s.create_object(id, 1),
        Err(StoreError::AlreadyExists(_))
    ));
    s.release(id);
    assert_eq!(s.used(), 4096, "one pin left");
    // The range must not be reused while pinned.
    let other = s.create_object(oid(8), 4096).unwrap();
    assert_ne!(other.offset, a.offset);
    s.abort(oid(8));
    s.release(id);
    assert_eq!(s.used(), 0);
    assert_eq!(s.info(id), None);
    // The id can be used again.
    s.create_object(id, 1).unwrap();
}

#[test]
fn delete_or_abort_unsealed() {
    let s = store(1 << 16);
    let (a, b) = (oid(1), oid(2));
    s.create_object(a, 100).unwrap();
    s.delete(a);
    assert_eq!(s.used(), 128, "creator still writing");
    s.seal(a).unwrap();
    assert_eq!(s.used(), 0, "freed at seal");
    assert_eq!(s.info(a), None);

    s.create_object(b, 100).unwrap();
    s.abort(b);
    assert_eq!(s.used(), 0);
    assert_eq!(s.info(b), None);
    assert!(matches!(s.seal(b), Err(StoreError::NotFound(_))));
}

#[test]
fn eviction_is_lru_and_only_of_evictable_objects_then_full() {
    let s = store(4096);
    let ids: Vec<ObjectId> = (0..4).map(oid).collect();
    for &id in &ids {
        s.create_object(id, 1024).unwrap();
        s.seal(id).unwrap();
    }
    // 0, 1, 2 evictable (in that order); 3 is a primary copy.
    for &id in &ids[..3] {
        s.set_evictable(id, true);
    }
    // Use 0 again: LRU order is now 1, 2, 0.
    s.get(ids[0]).unwrap();
    s.release(ids[0]);
    assert_eq!(s.stats().evictable, 3 * 1024);

    s.create_object(oid(10), 1024).unwrap();
    s.seal(oid(10)).unwrap();
    assert!(!s.contains(ids[1]), "least recently used evicted first");
    assert!(s.contains(ids[0]) && s.contains(ids[2]) && s.contains(ids[3]));
    assert_eq!(s.stats().evictions, 1);
    assert_eq!(s.stats().evicted_bytes, 1024);

    // A pinned evictable object is not evicted: pin 2, so 0 goes next.
    s.get(ids[2]).unwrap();
    s.create_object(oid(11), 1024).unwrap();
    assert!(!s.contains(ids[0]));
    assert!(s.contains(ids[2]));
    assert_eq!(s.stats().evictions, 2);

    // Nothing evictable left (2 is pinned, 3 and 10 are not evictable, 11 unsealed): Full.
    let err = s.create_object(oid(12), 1).unwrap_err();
    match err {
        StoreError::Full {
            requested,
            capacity,
            used,
            pinned,
        } => {
            assert_eq!((requested, capacity, used), (1, 4096, 4096));
            assert_eq!(pinned, 2048, "object 2 (pinned) + object 11 (unsealed)");
        }
        e => panic!("expected Full, got {e:?}"),
    }
    let msg = s.create_object(oid(12), 1).unwrap_err().to_string();
    assert!(
        msg.contains("requested 1 bytes") && msg.contains("4096"),
        "{msg}"
    );
    assert!(s.contains(ids[2]) && s.contains(ids[3]) && s.contains(oid(10)));

    // Evicting cannot help when even all evictable bytes are not enough: evict nothing.
    s.release(ids[2]);
    s.set_evictable(oid(10), true);
    assert_eq!(s.stats().evictable, 2048);
    assert!(matches!(
        s.create_object(oid(13), 3000),
        Err(StoreError::Full { .. })
    ));
    assert_eq!(s.stats().evictions, 2);
    assert!(s.contains(ids[2]) && s.contains(oid(10)));

    // Marking non-evictable again protects it.
    s.set_evictable(ids[2], false);
    s.create_object(oid(14), 1024).unwrap();
    assert!(!s.contains(oid(10)));
    assert!(s.contains(ids[2]));
}

#[test]
fn too_large() {
    let s = store(1 << 16);
    assert!(matches!(
        s.create_object(oid(1), (1 << 16) + 1),
        Err(StoreError::TooLarge { requested, capacity }) if requested == (1 << 16) + 1 && capacity == 1 << 16
    ));
    assert!(matches!(
        s.create_object(oid(1), u64::MAX),
        Err(StoreError::TooLarge { .. })
    ));
    let a = s.create_object(oid(1), 1 << 16).unwrap();
    assert_eq!(a.offset, 0);
}

#[test]
fn coalescing_free_alternating_then_rest() {
    const N: u64 = 256;
    let s = store(N * 64);
    let allocs: Vec<Allocation> = (0..N)
        .map(|i| {
            let a = s.create_object(oid(i), 64).unwrap();
            s.seal(oid(i)).unwrap();
            a
        })
        .collect();
    assert_eq!(s.used(), N * 64);
    assert!(matches!(
        s.create_object(oid(N), 1),
        Err(StoreError::Full { .. })
    ));
    for i in (0..N).step_by(2) {
        s.delete(oid(i));
    }
    assert_eq!(s.stats().free_extents, (N / 2) as usize);
    assert!(
        matches!(s.create_object(oid(N), 128), Err(StoreError::Full { .. })),
        "fragmented: no 128-byte hole"
    );
    for i in (1..N).step_by(2) {
        s.delete(oid(i));
    }
    let st = s.stats();
    assert_eq!(
        (st.free_extents, st.largest_free_extent, st.used),
        (1, N * 64, 0)
    );
    let whole = s.create_object(oid(N), N * 64).unwrap();
    assert_eq!(whole.offset, 0);
    drop(allocs);
}

#[test]
fn freed_ranges_are_reused() {
    let s = store(64 << 20);
    let a = s.create_object(oid(1), 1 << 20).unwrap();
    let _b = s.create_object(oid(2), 1 << 20).unwrap();
    s.seal(oid(1)).unwrap();
    s.delete(oid(1));
    // Same size: exactly the freed range.
    let c = s.create_object(oid(3), 1 << 20).unwrap();
    assert_eq!(c.offset, a.offset);
    s.abort(oid(3));
    // Smaller: best fit puts it in the freed hole, not the big tail.
    let d = s.create_object(oid(4), 4000).unwrap();
    assert_eq!(d.offset, a.offset);
    // Repeated create/delete cycles never grow the footprint.
    let mut offsets = std::collections::HashSet::new();
    for i in 0..100 {
        let id = oid(100 + i);
        let x = s.create_object(id, 512 << 10).unwrap();
        s.seal(id).unwrap();
        s.delete(id);
        offsets.insert(x.offset);
    }
    assert_eq!(offsets.len(), 1, "{offsets:?}");
}

#[test]
fn allocations_are_64_byte_aligned_and_zero_length_is_legal() {
    let s = store(1 << 20);
    let map = ArenaMapping::open(s.path()).unwrap();
    let mut offsets = std::collections::HashSet::new();
    for (i, len) in [0u64, 1, 7, 63, 64, 65, 100, 0, 999, 4097, 8]
        .iter()
        .enumerate()
    {
        let a = s.create_object(oid(i as u64), *len).unwrap();
        assert_eq!(a.offset % ALIGNMENT, 0, "{a:?}");
        assert_eq!(a.len, *len);
        assert!(offsets.insert(a.offset), "distinct offsets even for len 0");
        assert_eq!(map.bytes(a).unwrap().len() as u64, *len);
    }
    assert_eq!(
        s.used(),
        [0u64, 1, 7, 63, 64, 65, 100, 0, 999, 4097, 8]
            .iter()
            .map(|&l| reserved_size(l).unwrap())
            .sum::<u64>()
    );
    // An f64 slice can be viewed in place.
    let id = oid(1000);
    let a = s.create_object(id, 8 * 100).unwrap();
    let vals: Vec<f64> = (0..100).map(|i| i as f64 * 0.5).collect();
    let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
    map.write(a, 0, &raw).unwrap();
    s.seal(id).unwrap();
    let bytes = map.bytes(s.get(id).unwrap()).unwrap();
    // SAFETY: any bit pattern is a valid f64; align_to handles alignment.
    let (pre, floats, post) = unsafe { bytes.align_to::<f64>() };
    assert!(pre.is_empty() && post.is_empty());
    assert_eq!(floats, &vals[..]);
    s.release(id);
}

#[test]
fn arena_mapping_bounds_errors() {
    let s = store(1 << 16);
    let map = ArenaMapping::open(s.path()).unwrap();
    let cap = 1u64 << 16;
    let oob = |r: Result<&[u8], StoreError>| matches!(r, Err(StoreError::OutOfBounds { .. }));
    assert!(oob(map.bytes(Allocation {
        offset: cap,
        len: 1
    })));
    assert!(oob(map.bytes(Allocation {
        offset: cap - 10,
        len: 11
    })));
    assert!(oob(map.bytes(Allocation {
        offset: u64::MAX,
        len: 2
    })));
    assert!(oob(map.bytes(Allocation {
        offset: 1,
        len: u64::MAX
    })));
    assert_eq!(
        map.bytes(Allocation {
            offset: cap,
            len: 0
        })
        .unwrap()
        .len(),
        0
    );
    assert_eq!(
        map.bytes(Allocation {
            offset: 0,
            len: cap
        })
        .unwrap()
        .len() as u64,
        cap
    );
    // SAFETY: out-of-range, so no slice is produced.
    assert!(unsafe {
        map.bytes_mut(Allocation {
            offset: cap,
            len: 64,
        })
    }
    .is_err());

    let a = s.create_object(oid(1), 100).unwrap();
    assert!(matches!(
        map.write(a, 90, &[0; 11]),
        Err(StoreError::OutOfBounds {
            offset: 90,
            len: 11,
            limit: 100
        })
    ));
    assert!(map.write(a, u64::MAX, &[0; 2]).is_err());
    assert!(map
        .write(
            Allocation {
                offset: cap - 8,
                len: 16
            },
            0,
            &[1; 16]
        )
        .is_err());
    map.write(a, 90, &[9; 10]).unwrap();
    map.write(a, 100, &[]).unwrap();
    // SAFETY: `a` is an unsealed allocation this test created; no other slice overlaps it.
    let m = unsafe { map.bytes_mut(a) }.unwrap();
    m[0] = 42;
    assert_eq!(map.bytes(a).unwrap()[0], 42);
    assert_eq!(&map.bytes(a).unwrap()[90..], &[9; 10]);
    let msg = map.write(a, 90, &[0; 11]).unwrap_err().to_string();
    assert!(msg.contains("out of bounds"), "{msg}");
}

#[test]
fn file_lifecycle_exclusive_mode_and_removal() {
    use std::os::unix::fs::PermissionsExt;
    let s = store(1 << 16);
    let path: PathBuf = s.path().to_path_buf();
    assert!(path.starts_with(StoreConfig::default_dir()));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 1 << 16);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // O_EXCL: a second store with the same name fails and must not remove the first's file.
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let dup = ObjectStore::create(StoreConfig::new(name).with_capacity(1 << 16));
    assert!(
        matches!(dup, Err(StoreError::Io(ref e)) if e.kind() == std::io::ErrorKind::AlreadyExists)
    );
    assert!(path.exists());
    drop(s);
    assert!(!path.exists(), "drop removes the arena file");

    let s = store(1 << 16);
    let path = s.path().to_path_buf();
    let map = ArenaMapping::open(&path).unwrap();
    let a = s.create_object(oid(1), 3).unwrap();
    map.write(a, 0, b"abc").unwrap();
    s.destroy();
    assert!(!path.exists(), "destroy removes the arena file");
    // An existing mapping outlives the file.
    assert_eq!(map.bytes(a).unwrap(), b"abc");
    assert!(matches!(ArenaMapping::open(&path), Err(StoreError::Io(_))));
}

#[test]
fn explicit_dir_and_invalid_configs() {
    let dir = std::env::temp_dir();
    let name = format!("rayrs-test-dir-{}", std::process::id());
    let s = ObjectStore::create(
        StoreConfig::new(name.clone())
            .with_dir(&dir)
            .with_capacity(1000),
    )
    .unwrap();
    assert_eq!(s.path(), dir.join(&name));
    assert_eq!(s.capacity(), 960, "rounded down to the alignment");
    drop(s);
    assert!(!dir.join(&name).exists());

    for bad in ["", ".", "..", "a/b"] {
        assert!(matches!(
            ObjectStore::create(StoreConfig::new(bad).with_capacity(4096)),
            Err(StoreError::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        ObjectStore::create(StoreConfig::new("rayrs-test-zero").with_capacity(63)),
        Err(StoreError::InvalidConfig(_))
    ));
}

#[test]
fn concurrent_use_from_threads() {
    let s = Arc::new(store(8 << 20));
    let map = Arc::new(ArenaMapping::open(s.path()).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let (s, map) = (s.clone(), map.clone());
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    let id = oid(t * 1_000_000 + i);
                    let len = 1 + (i * 977 + t * 131) % 20_000;
                    let a = s.create_object(id, len).unwrap();
                    let data = pattern((i + t) as u8, len as usize);
                    map.write(a, 0, &data).unwrap();
                    s.seal(id).unwrap();
                    let g = s.get(id).unwrap();
                    assert_eq!(map.bytes(g).unwrap(), &data[..]);
                    s.delete(id);
                    s.release(id);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = s.stats();
    assert_eq!((st.used, st.num_objects, st.free_extents), (0, 0, 1));
}

const CHILD_ENV: &str = "RAY_OBJECT_STORE_TEST_CHILD";

/// Child side of [`second_process_sees_the_bytes`]: checks object A and writes object B.
fn run_child(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split(',').collect();
    let num = |i: usize| parts[i].parse::<u64>().unwrap();
    let map = ArenaMapping::open(std::path::Path::new(parts[0])).unwrap();
    let a = Allocation {
        offset: num(1),
        len: num(2),
    };
    let b = Allocation {
        offset: num(3),
        len: num(4),
    };
    let got = map.bytes(a).unwrap();
    if got != &pattern(1, a.len as usize)[..] {
        eprintln!("child: object A differs from the expected pattern");
        std::process::exit(3);
    }
    map.write(b, 0, &pattern(2, b.len as usize)).unwrap();
    std::process::exit(0);
}

#[test]
fn second_process_sees_the_bytes() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
    }
    let s = store(16 << 20);
    let map = ArenaMapping::open(s.path()).unwrap();
    let (ia, ib) = (oid(1), oid(2));
    let a = s.create_object(ia, (3 << 20) + 17).unwrap();
    map.write(a, 0, &pattern(1, a.len as usize)).unwrap();
    s.seal(ia).unwrap();
    let a = s.get(ia).unwrap();
    let b = s.create_object(ib, (1 << 20) + 5).unwrap();

    let spec = format!(
        "{},{},{},{},{}",
        s.path().display(),
        a.offset,
        a.len,
        b.offset,
        b.len
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "second_process_sees_the_bytes", "--nocapture"])
        .env(CHILD_ENV, spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    s.seal(ib).unwrap();
    let b = s.get(ib).unwrap();
    assert!(
        map.bytes(b).unwrap() == &pattern(2, b.len as usize)[..],
        "child's writes visible"
    );
    s.release(ia);
    s.release(ib);

    // And a child that sees wrong bytes does fail (the check is real).
    let spec = format!(
        "{},{},{},{},{}",
        s.path().display(),
        b.offset,
        b.len,
        a.offset,
        0
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "second_process_sees_the_bytes", "--nocapture"])
        .env(CHILD_ENV, spec)
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(3));
}

#[test]
fn evict_on_demand() {
    let s = store(1 << 16);
    for i in 0..4 {
        s.create_object(oid(i), 1024).unwrap();
        s.seal(oid(i)).unwrap();
    }
    s.set_evictable(oid(2), true);
    s.set_evictable(oid(0), true);
    s.set_evictable(oid(1), true);
    assert_eq!(s.evict(1), 1024);
    assert!(!s.contains(oid(2)) && s.contains(oid(0)));
    assert_eq!(s.evict(1 << 20), 2048, "everything evictable, and no more");
    assert!(s.contains(oid(3)));
    assert_eq!(s.stats().evictions, 3);
    assert_eq!(s.evict(1), 0);
}

#[test]
fn mapping_of_empty_and_missing_files() {
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let path = std::env::temp_dir().join(format!("rayrs-test-empty-{}", std::process::id()));
    let _guard = Remove(path.clone());
    std::fs::File::create(&path).unwrap();
    let map = ArenaMapping::open(&path).unwrap();
    assert!(map.is_empty());
    assert_eq!(map.bytes(Allocation { offset: 0, len: 0 }).unwrap(), b"");
    assert!(map.bytes(Allocation { offset: 0, len: 1 }).is_err());
    assert!(map
        .write(Allocation { offset: 0, len: 1 }, 0, b"x")
        .is_err());
    drop(map);
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(ArenaMapping::open(&path), Err(StoreError::Io(_))));
}

#[test]
fn an_anonymous_store_has_no_file_and_lives_while_mapped() {
    let name = format!("rayrs-anon-test-{}", std::process::id());
    let s = ObjectStore::create_anonymous(StoreConfig::new(name.clone()).with_capacity(1 << 16))
        .unwrap();
    assert!(
        !StoreConfig::default_dir().join(&name).exists(),
        "no file in the shared-memory directory"
    );
    // Another mapping (as another process makes) through the store's path.
    let map = ArenaMapping::open(s.path()).unwrap();
    assert_eq!(map.len(), 1 << 16);
    let a = s.create_object(oid(1), 3).unwrap();
    map.write(a, 0, b"abc").unwrap();
    let path = s.path().to_path_buf();
    drop(s);
    // The memory lives on in the mapping; the path is gone with the store's descriptor.
    assert_eq!(map.bytes(a).unwrap(), b"abc");
    assert!(ArenaMapping::open(&path).is_err());
}

#[test]
fn a_freed_large_object_gives_its_memory_back() {
    let s = store(16 << 20);
    let map = ArenaMapping::open(s.path()).unwrap();
    let a = s.create_object(oid(1), 4 << 20).unwrap();
    map.write(a, 0, &vec![7u8; 4 << 20]).unwrap();
    s.seal(oid(1)).unwrap();
    s.delete(oid(1));
    // Kept warm for a round (a range allocated again soon keeps its pages)...
    assert_eq!(s.discard_idle(), 0);
    assert_eq!(map.bytes(a).unwrap()[4096], 7);
    // ...then its pages are handed back (a read finds fresh zero pages, not the old bytes).
    assert_eq!(s.discard_idle(), 4 << 20);
    assert!(map.bytes(a).unwrap()[4096..(4 << 20) - 4096]
        .iter()
        .all(|b| *b == 0));
    // A small one is only returned to the free space.
    let b = s.create_object(oid(2), 100).unwrap();
    map.write(b, 0, &[9u8; 100]).unwrap();
    s.seal(oid(2)).unwrap();
    s.delete(oid(2));
    assert_eq!(map.bytes(b).unwrap()[0], 9);
}
