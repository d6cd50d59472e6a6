//! Property test: random operation sequences keep the store's invariants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use ray_object_store::{ObjectId, ObjectStore, StoreConfig, StoreError};

const CAPACITY: u64 = 64 * 1024;
const IDS: u8 = 24;

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u64),
    Seal(u8),
    Get(u8),
    Release(u8),
    Delete(u8),
    Abort(u8),
    SetEvictable(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS;
    prop_oneof![
        4 => (id.clone(), prop_oneof![0..200u64, 0..6000u64, 0..20_000u64]).prop_map(|(i, l)| Op::Create(i, l)),
        3 => id.clone().prop_map(Op::Seal),
        2 => id.clone().prop_map(Op::Get),
        2 => id.clone().prop_map(Op::Release),
        2 => id.clone().prop_map(Op::Delete),
        1 => id.clone().prop_map(Op::Abort),
        2 => (id, any::<bool>()).prop_map(|(i, b)| Op::SetEvictable(i, b)),
    ]
}

fn oid(i: u8) -> ObjectId {
    ObjectId([i; 16])
}

fn check_invariants(s: &ObjectStore) -> Result<(), TestCaseError> {
    let mut objs = s.objects();
    objs.sort_by_key(|(_, info)| info.allocation.offset);
    let mut end = 0;
    let mut sum = 0;
    let mut pinned = 0;
    for (id, info) in &objs {
        let a = info.allocation;
        prop_assert_eq!(a.offset % 64, 0);
        prop_assert!(a.offset >= end, "{} overlaps its predecessor", id);
        prop_assert!(info.reserved >= a.len.max(1));
        end = a.offset + info.reserved;
        sum += info.reserved;
        if !info.sealed || info.pins > 0 {
            pinned += info.reserved;
        }
        prop_assert!(
            !info.deleted || !info.sealed || info.pins > 0,
            "deleted, unpinned, still there"
        );
    }
    prop_assert!(end <= CAPACITY);
    let st = s.stats();
    prop_assert_eq!(s.used(), sum);
    prop_assert_eq!(st.used, sum);
    prop_assert_eq!(st.pinned, pinned);
    prop_assert_eq!(st.num_objects, objs.len());
    prop_assert!(st.largest_free_extent <= CAPACITY - sum);
    Ok(())
}

static N: AtomicU32 = AtomicU32::new(0);

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..300)) {
        let name = format!("rayrs-proptest-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let s = ObjectStore::create(StoreConfig::new(name).with_capacity(CAPACITY)).unwrap();
        // Pins this test holds, per id.
        let mut pins: HashMap<u8, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Create(i, len) => match s.create_object(oid(i), len) {
                    Ok(a) => prop_assert_eq!(a.len, len),
                    Err(StoreError::AlreadyExists(_)) => prop_assert!(s.info(oid(i)).is_some()),
                    Err(StoreError::Full { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                },
                Op::Seal(i) => {
                    let before = s.info(oid(i));
                    match s.seal(oid(i)) {
                        Ok(()) => prop_assert!(before.is_some_and(|b| !b.sealed)),
                        Err(StoreError::NotFound(_)) => prop_assert!(before.is_none()),
                        Err(StoreError::AlreadySealed(_)) => prop_assert!(before.unwrap().sealed),
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Get(i) => {
                    let visible = s.contains(oid(i));
                    let got = s.get(oid(i));
                    prop_assert_eq!(visible, got.is_some());
                    if got.is_some() {
                        *pins.entry(i).or_default() += 1;
                    }
                }
                Op::Release(i) => {
                    if let Some(n) = pins.get_mut(&i).filter(|n| **n > 0) {
                        *n -= 1;
                        s.release(oid(i));
                    }
                }
                Op::Delete(i) => {
                    s.delete(oid(i));
                    prop_assert!(!s.contains(oid(i)));
                }
                Op::Abort(i) => s.abort(oid(i)),
                Op::SetEvictable(i, b) => s.set_evictable(oid(i), b),
            }
            // Our pins are what the store counts (objects we pinned are never evicted).
            for (&i, &n) in &pins {
                if n > 0 {
                    prop_assert_eq!(s.info(oid(i)).map(|x| x.pins), Some(n));
                }
            }
            check_invariants(&s)?;
        }
        // Free everything: delete all, abort unsealed, release our pins.
        for i in 0..IDS {
            s.delete(oid(i));
            s.abort(oid(i));
            for _ in 0..pins.get(&i).copied().unwrap_or(0) {
                s.release(oid(i));
            }
        }
        let st = s.stats();
        prop_assert_eq!(st.used, 0);
        prop_assert_eq!(st.pinned, 0);
        prop_assert_eq!(st.evictable, 0);
        prop_assert_eq!(st.num_objects, 0);
        prop_assert_eq!(st.free_extents, 1);
        prop_assert_eq!(st.largest_free_extent, CAPACITY);
        prop_assert!(s.create_object(oid(0), CAPACITY).is_ok());
    }
}
