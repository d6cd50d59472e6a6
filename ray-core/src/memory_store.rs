//! The process's in-memory object table: the value (or failure, or shared-memory location) of
//! every object this process owns or has fetched, and who is waiting for it.

use crate::ids::ObjectId;
use crate::task_manager::TaskSpec;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;

/// Where an object's value is.
#[derive(Clone, Debug)]
pub(crate) enum Stored {
    /// Encoded bytes held in this process.
    Inline(Bytes),
    /// An allocation in the shared-memory arena of node `node`. `offset` means something on
    /// that node only: a process elsewhere must fetch the object by id. `raw`: 0 for codec
    /// bytes, else the element size of a plain array (`ray::put_slice`).
    Plasma {
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
                node,
                offset,
                size,
                raw,
            } => Kind::Plasma(ray_proto::PlasmaLocation {
                node_id: node.to_vec().into(),
                offset: *offset,
                size: *size,
                raw_elem_size: *raw,
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
                // A malformed node id names no node: reading it fails as another node's.
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
#[derive(Default)]
pub(crate) struct MemoryStore {
    slots: DashMap<ObjectId, Slot>,
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

    /// Creates the empty slot of the result of `task`, which keeps the task's spec.
    pub fn expect_task(&self, id: ObjectId, task: TaskSpec) {
        self.slots.entry(id).or_default().task = Some(task);
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
        self.slots.remove(id).and_then(|(_, s)| s.value)
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
