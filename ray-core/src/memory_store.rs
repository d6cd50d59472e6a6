//! The process's in-memory object table: the value (or failure, or shared-memory location) of
//! every object this process owns or has fetched, and who is waiting for it.

use crate::ids::ObjectId;
use crate::task_manager::TaskSpec;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where an object's value is.
#[derive(Clone, Debug)]
pub(crate) enum Stored {
    /// Encoded bytes held in this process.
    Inline(Bytes),
    /// An allocation in the shared-memory arena of node `node`. `offset` means something on
    /// that node only: a process elsewhere has its node pull the object by `id`. `raw`: 0
    /// for codec bytes, else the element size of a plain array (`ray::put_slice`).
    Plasma {
        id: ObjectId,
        node: ray_common::NodeId,
        offset: u64,
        size: u64,
        raw: u32,
    },
    /// The task that makes it failed.
    Failed(Arc<crate::Error>),
}

impl Stored {
    pub fn to_proto(&self) -> ray_proto::ObjectValue {
        use ray_proto::object_value::Kind;
        let kind = match self {
            Stored::Inline(b) => Kind::Inline(b.clone()),
            Stored::Plasma {
                id,
                node,
                offset,
                size,
                raw,
            } => Kind::Plasma(ray_proto::PlasmaLocation {
                node_id: node.to_vec().into(),
                offset: *offset,
                size: *size,
                raw_elem_size: *raw,
                object_id: id.0.to_vec().into(),
            }),
            Stored::Failed(e) => Kind::Error(e.to_proto()),
        };
        ray_proto::ObjectValue {
            kind: Some(kind),
            contained: Vec::new(),
        }
    }

    pub fn from_proto(v: ray_proto::ObjectValue) -> Stored {
        use ray_proto::object_value::Kind;
        match v.kind {
            Some(Kind::Inline(b)) => Stored::Inline(b),
            Some(Kind::Plasma(p)) => Stored::Plasma {
                // A malformed id names no object (and no node): reading it fails as lost.
                id: ray_common::ids::object_id(&p.object_id).unwrap_or(ObjectId([0; 16])),
                node: ray_common::NodeId::from_wire(&p.node_id).unwrap_or_default(),
                offset: p.offset,
                size: p.size,
                raw: p.raw_elem_size,
            },
            Some(Kind::Error(e)) => Stored::Failed(Arc::new(crate::Error::from_proto(&e))),
            None => Stored::Failed(Arc::new(crate::Error::Runtime(
                "object value missing from a message".into(),
            ))),
        }
    }
}

/// Who to tell when an object becomes ready.
pub(crate) enum Waiter {
    Blocking(crossbeam_channel::Sender<ObjectId>),
    Async(tokio::sync::mpsc::UnboundedSender<ObjectId>),
}

impl Waiter {
    fn wake(&self, id: ObjectId) {
        // A waiter that gave up (timed out) has dropped its receiver: nothing to do.
        let _ = match self {
            Waiter::Blocking(tx) => tx.send(id).map_err(drop),
            Waiter::Async(tx) => tx.send(id).map_err(drop),
        };
    }
}

#[derive(Default)]
struct Slot {
    value: Option<Stored>,
    waiters: Vec<Waiter>,
    fetching: bool,
    /// The task that makes the object (owned results of normal tasks only), kept while the
    /// slot is: as long as refs to the object live.
    task: Option<TaskSpec>,
}

/// Values by object id. Each operation holds one shard lock briefly and never across a wait.
pub(crate) struct MemoryStore {
    slots: crate::ids::IdMap<Slot>,
    /// Argument bytes the kept task specs hold, and the most they may (Ray's
    /// `max_lineage_bytes`): past it, new specs keep their values' lengths only.
    lineage_bytes: AtomicUsize,
    lineage_budget: usize,
}

/// The default of [`MemoryStore`]'s lineage budget (Ray's `max_lineage_bytes`: 1 GiB).
pub(crate) const MAX_LINEAGE_BYTES: usize = 1 << 30;

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_lineage_budget(MAX_LINEAGE_BYTES)
    }
}

/// What `subscribe` found.
pub(crate) enum Subscribed {
    Ready(Stored),
    /// Registered; `true` if the caller should start fetching the value from its owner.
    Pending {
        fetch: bool,
    },
    /// No such object here, and it is owned here: it was freed.
    Unknown,
}

impl MemoryStore {
    /// Creates the empty slot of an object about to be made here.
    pub fn expect(&self, id: ObjectId) {
        self.slots.entry(id).or_default();
    }

    /// A store whose kept task specs hold at most `budget` argument bytes.
    pub fn with_lineage_budget(budget: usize) -> Self {
        MemoryStore {
            slots: Default::default(),
            lineage_bytes: AtomicUsize::new(0),
            lineage_budget: budget,
        }
    }

    /// Creates the empty slot of the result of `task`, which keeps the task's spec (its
    /// argument values only while the lineage budget has room).
    pub fn expect_task(&self, id: ObjectId, mut task: TaskSpec) {
        let bytes = task.value_bytes();
        if bytes > 0 {
            let kept = self.lineage_bytes.fetch_add(bytes, Ordering::Relaxed);
            if kept + bytes > self.lineage_budget {
                self.lineage_bytes.fetch_sub(bytes, Ordering::Relaxed);
                task.forget_values();
            }
        }
        self.slots.entry(id).or_default().task = Some(task);
    }

    /// Argument bytes the kept specs hold.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn lineage_bytes(&self) -> usize {
        self.lineage_bytes.load(Ordering::Relaxed)
    }

    /// The spec of the task that makes `id`, while refs to it live.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn task_of(&self, id: &ObjectId) -> Option<TaskSpec> {
        self.slots.get(id).and_then(|s| s.task.clone())
    }

    /// Records the value and wakes every waiter.
    pub fn put(&self, id: ObjectId, value: Stored) {
        let waiters = {
            let mut slot = self.slots.entry(id).or_default();
            slot.value = Some(value);
            slot.fetching = false;
            std::mem::take(&mut slot.waiters)
        };
        for w in waiters {
            w.wake(id);
        }
    }

    /// Records the value only if the object is still wanted (its slot exists); otherwise
    /// hands the value back so the caller can free it.
    pub fn put_if_present(&self, id: ObjectId, value: Stored) -> Option<Stored> {
        let waiters = {
            let Some(mut slot) = self.slots.get_mut(&id) else {
                return Some(value);
            };
            slot.value = Some(value);
            slot.fetching = false;
            std::mem::take(&mut slot.waiters)
        };
        for w in waiters {
            w.wake(id);
        }
        None
    }

    /// The value, if ready.
    pub fn get(&self, id: &ObjectId) -> Option<Stored> {
        self.slots.get(id).and_then(|s| s.value.clone())
    }

    /// True if the object has a slot here (ready or not).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.slots.contains_key(id)
    }

    /// True if the value is ready here.
    pub fn is_ready(&self, id: &ObjectId) -> bool {
        self.slots.get(id).is_some_and(|s| s.value.is_some())
    }

    /// The value if ready, or registers `waiter`. `borrowed`: the object is owned elsewhere,
    /// so a missing slot is created and the caller is told to fetch it (once).
    pub fn subscribe(&self, id: ObjectId, waiter: Waiter, borrowed: bool) -> Subscribed {
        if !borrowed {
            let Some(mut slot) = self.slots.get_mut(&id) else {
                return Subscribed::Unknown;
            };
            if let Some(v) = &slot.value {
                return Subscribed::Ready(v.clone());
            }
            slot.waiters.push(waiter);
            return Subscribed::Pending { fetch: false };
        }
        let mut slot = self.slots.entry(id).or_default();
        if let Some(v) = &slot.value {
            return Subscribed::Ready(v.clone());
        }
        slot.waiters.push(waiter);
        let fetch = !slot.fetching;
        slot.fetching = true;
        Subscribed::Pending { fetch }
    }

    /// Forgets the object (its last reference is gone). Returns the value it had.
    pub fn remove(&self, id: &ObjectId) -> Option<Stored> {
        let (_, slot) = self.slots.remove(id)?;
        if let Some(task) = &slot.task {
            self.lineage_bytes
                .fetch_sub(task.value_bytes(), Ordering::Relaxed);
        }
        slot.value
    }

    /// Shrinks the table if it is mostly empty (after a burst); true if it did.
    pub fn shrink(&self) -> bool {
        crate::tables::shrink_sparse(&self.slots)
    }

    /// Number of objects held (for tests and stats).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Wakes every waiter with a failure (shutdown): nobody blocks forever.
    pub fn fail_all_pending(&self, error: &crate::Error) {
        let ids: Vec<ObjectId> = self
            .slots
            .iter()
            .filter(|s| s.value.is_none())
            .map(|s| *s.key())
            .collect();
        for id in ids {
            // A slot freed meanwhile stays freed.
            let _ = self.put_if_present(id, Stored::Failed(Arc::new(error.clone())));
        }
    }
}

#[cfg(test)]
mod lineage_tests {
    use super::*;
    use crate::task_manager::{SpecArg, TaskSpec};

    fn spec(bytes: usize) -> TaskSpec {
        TaskSpec {
            function: "f",
            args: vec![SpecArg::Value(vec![0u8; bytes].into())],
            shape_key: "CPU=1".into(),
            max_retries: 0,
        }
    }

    #[test]
    fn kept_argument_values_stay_within_the_lineage_budget_and_come_back_with_their_slots() {
        let store = MemoryStore::with_lineage_budget(250);
        let ids: Vec<ObjectId> = (0u8..3).map(|i| ObjectId([i; 16])).collect();
        for id in &ids {
            store.expect_task(*id, spec(100));
        }
        // Two fit; the third keeps its value's length only.
        assert_eq!(store.lineage_bytes(), 200);
        assert!(matches!(
            &store.task_of(&ids[2]).unwrap().args[..],
            [SpecArg::LargeValue(100)]
        ));
        assert!(matches!(
            &store.task_of(&ids[0]).unwrap().args[..],
            [SpecArg::Value(b)] if b.len() == 100
        ));
        store.remove(&ids[0]);
        store.remove(&ids[2]);
        assert_eq!(store.lineage_bytes(), 100);
        store.expect_task(ObjectId([9; 16]), spec(100));
        assert_eq!(store.lineage_bytes(), 200, "room again once a slot went");
    }
}
