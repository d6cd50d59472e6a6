//! Reference counting: when an object may be freed (Ray's ownership model, simplified).
//!
//! Each process counts, per object, the live [`crate::ObjectRef`] handles it holds (clones
//! share one handle; a pending task holds handles to its arguments until its reply), the
//! processes that borrow the object (owner side), and whether the ref escaped into bytes no
//! object tracks (`pinned`: kept until shutdown; refs inside `put` values and task results
//! are held by the outer object instead, see `Ownership::contain`).
//! When everything reaches zero, the owner frees the value and a borrower tells the owner it
//! is done.

use crate::ids::ObjectId;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug)]
struct Entry {
    /// `None`: owned by this process.
    owner: Option<Arc<str>>,
    local: u32,
    /// Owner side: each process's number of borrows not yet released (counted: a process may
    /// be registered more than once, and releases once per registration). A registration is
    /// sent before what lets the borrower release (a reply, a value), but on another channel:
    /// a release may still arrive first. It is refused ([`NotCounted`]) and parked by the owner
    /// until the borrow is counted (`borrowers::release`), never counted ahead. A list: an object has few borrowers, and an empty `Vec` costs nothing
    /// to make, which a table entry made per decoded ref needs.
    borrowers: Vec<(Arc<str>, u32)>,
    pinned: bool,
    /// A borrowed entry made while decoding a running task's arguments, not yet reported to
    /// the owner: if it drops to zero before the reply, the owner never hears of it.
    provisional: bool,
}

/// One tracked object as the state API lists it.
pub(crate) struct Tracked {
    pub id: ObjectId,
    /// `None`: owned by this process.
    pub owner: Option<Arc<str>>,
    /// Live handles here.
    pub local: u32,
    /// Borrows by other processes not yet released (owner side).
    pub borrowers: u32,
    pub pinned: bool,
}

/// What to do once an entry is gone.
pub(crate) enum Release {
    /// Free the value (and its shared-memory copy).
    FreeOwned(ObjectId),
    /// Forget the cached value; tell the owner (unless the entry was provisional).
    DropBorrowed {
        id: ObjectId,
        owner: Arc<str>,
        notify: bool,
    },
}

/// A borrower's release of an object whose borrow its owner has not counted (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotCounted;

#[derive(Default)]
pub(crate) struct ReferenceTable {
    entries: crate::ids::IdMap<Entry>,
    /// Entries with at least one borrower: the borrower watch walks the table only when there
    /// are some (a table of a million owned results nobody borrows is never walked).
    with_borrowers: std::sync::atomic::AtomicUsize,
    /// How many times each borrower was dropped for dead ([`ReferenceTable::forget_borrower`]):
    /// a release parked before it must not end a borrow made after it. Bounded: cleared past
    /// [`FORGOTTEN_KEPT`] addresses (dead processes are few; a clear only loses that guard).
    forgotten: parking_lot::Mutex<std::collections::HashMap<Arc<str>, u64>>,
}

/// Addresses [`ReferenceTable`] remembers having dropped for dead, at most.
const FORGOTTEN_KEPT: usize = 4096;

impl ReferenceTable {
    /// A handle to `id` came to life in this process. True if the owner did not count this
    /// process before: `id` was not tracked here, or only provisionally (met while decoding a
    /// task's arguments, not reported yet).
    pub fn add_local(&self, id: ObjectId, owner: Option<Arc<str>>, provisional: bool) -> bool {
        let mut fresh = false;
        let mut e = self.entries.entry(id).or_insert_with(|| {
            fresh = true;
            Entry {
                owner,
                local: 0,
                borrowers: Vec::new(),
                pinned: false,
                provisional,
            }
        });
        e.local += 1;
        if !provisional {
            fresh |= e.provisional;
            e.provisional = false;
        }
        fresh
    }

    /// A handle died. Returns what to do if that was the last reason to keep the object.
    pub fn remove_local(&self, id: ObjectId) -> Option<Release> {
        self.release_if(id, |e| e.local = e.local.saturating_sub(1))
    }

    /// `borrower` holds the object after its task ended.
    pub fn add_borrower(&self, id: ObjectId, borrower: Arc<str>) {
        if let Some(mut e) = self.entries.get_mut(&id) {
            match e.borrowers.iter_mut().find(|(b, _)| *b == borrower) {
                Some((_, n)) => *n += 1,
                None => {
                    if e.borrowers.is_empty() {
                        self.with_borrowers.fetch_add(1, Ordering::Relaxed);
                    }
                    e.borrowers.push((borrower, 1));
                }
            }
        }
    }

    /// `borrower` let go of the object: what to do if that was the last reason to keep it.
    /// [`NotCounted`] if the object is here but `borrower` is not counted as holding it: the
    /// report of the borrow (a task's reply, a third process's registration) is still on its
    /// way, overtaken by this release, which the owner applies once it is counted.
    pub fn remove_borrower(
        &self,
        id: ObjectId,
        borrower: &str,
    ) -> Result<Option<Release>, NotCounted> {
        let mut counted = false;
        let release = self.release_if(id, |e| {
            if let Some(at) = e.borrowers.iter().position(|(b, _)| **b == *borrower) {
                counted = true;
                e.borrowers[at].1 -= 1;
                if e.borrowers[at].1 == 0 {
                    e.borrowers.swap_remove(at);
                    if e.borrowers.is_empty() {
                        self.with_borrowers.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        });
        if !counted && self.entries.contains_key(&id) {
            return Err(NotCounted);
        }
        Ok(release)
    }

    /// The processes that borrow objects of this one: at once when none do; else a walk of
    /// the table (the watch's cost while any object is borrowed).
    pub fn borrower_addresses(&self) -> Vec<Arc<str>> {
        if self.with_borrowers.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut out: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        for e in self.entries.iter() {
            for (b, _) in &e.borrowers {
                if !out.contains(b) {
                    out.insert(b.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// `borrower` is gone (its process died): it releases every borrow it held at once.
    /// Returns what to do for each object nothing holds any more.
    pub fn forget_borrower(&self, borrower: &str) -> Vec<Release> {
        {
            let mut forgotten = self.forgotten.lock();
            if forgotten.len() >= FORGOTTEN_KEPT {
                forgotten.clear();
            }
            *forgotten.entry(borrower.into()).or_default() += 1;
        }
        let ids: Vec<ObjectId> = self
            .entries
            .iter()
            .filter(|e| e.borrowers.iter().any(|(b, _)| **b == *borrower))
            .map(|e| *e.key())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                self.release_if(id, |e| {
                    let before = e.borrowers.len();
                    e.borrowers.retain(|(b, _)| **b != *borrower);
                    if before > 0 && e.borrowers.is_empty() {
                        self.with_borrowers.fetch_sub(1, Ordering::Relaxed);
                    }
                })
            })
            .collect()
    }

    /// How many times `borrower` was dropped for dead so far.
    pub fn times_forgotten(&self, borrower: &str) -> u64 {
        self.forgotten.lock().get(borrower).copied().unwrap_or(0)
    }

    /// The ref was serialized into another object: keep it for the rest of the session.
    pub fn pin(&self, id: ObjectId) {
        if let Some(mut e) = self.entries.get_mut(&id) {
            e.pinned = true;
        }
    }

    /// After a task ran: which borrowed refs, first met while decoding it, does this process
    /// still hold? Each is reported once (it stops being provisional), so every report is
    /// matched by exactly one later release.
    pub fn still_borrowed(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(mut e) = self.entries.get_mut(id) {
                let held = e.local > 0 || e.pinned || !e.borrowers.is_empty();
                if held && e.provisional {
                    e.provisional = false;
                    out.push(*id);
                }
            }
        }
        out
    }

    /// The owner of `id` as this process knows it: `Some(None)` if it owns it.
    pub fn owner_of(&self, id: &ObjectId) -> Option<Option<Arc<str>>> {
        self.entries.get(id).map(|e| e.owner.clone())
    }

    /// At most `limit` tracked objects as the state API lists them. One shard of the table
    /// is read at a time.
    pub fn snapshot(&self, limit: usize) -> Vec<Tracked> {
        self.entries
            .iter()
            .take(limit)
            .map(|e| Tracked {
                id: *e.key(),
                owner: e.owner.clone(),
                local: e.local,
                borrowers: e.borrowers.iter().map(|(_, n)| *n).sum(),
                pinned: e.pinned,
            })
            .collect()
    }

    /// Number of objects tracked (tests and stats).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Shrinks the table if it is mostly empty (after a burst); true if it did.
    pub fn shrink(&self) -> bool {
        crate::tables::shrink_sparse(&self.entries)
    }

    /// True if `id` is tracked here.
    #[cfg(test)]
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.entries.contains_key(id)
    }

    /// Applies `change` to `id`'s entry and removes the entry if nothing holds it any more,
    /// in one lookup (this runs once per dropped handle).
    fn release_if(&self, id: ObjectId, change: impl FnOnce(&mut Entry)) -> Option<Release> {
        let (_, e) = self.entries.remove_if_mut(&id, |_, e| {
            change(e);
            e.local == 0 && e.borrowers.is_empty() && !e.pinned
        })?;
        Some(match e.owner {
            None => Release::FreeOwned(id),
            Some(owner) => Release::DropBorrowed {
                id,
                owner,
                notify: !e.provisional,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 16])
    }

    #[test]
    fn owned_object_is_freed_when_the_last_handle_and_borrower_go() {
        let t = ReferenceTable::default();
        t.add_local(id(1), None, false);
        t.add_local(id(1), None, false);
        assert!(t.remove_local(id(1)).is_none());
        t.add_borrower(id(1), "w1".into());
        assert!(t.remove_local(id(1)).is_none(), "a borrower still holds it");
        assert!(matches!(
            t.remove_borrower(id(1), "w1"),
            Ok(Some(Release::FreeOwned(_)))
        ));
        assert!(!t.contains(&id(1)));
    }

    #[test]
    fn a_dead_borrower_releases_everything_it_held() {
        let t = ReferenceTable::default();
        assert!(t.borrower_addresses().is_empty());
        t.add_local(id(1), None, false);
        t.add_local(id(2), None, false);
        t.add_borrower(id(1), "w1".into());
        t.add_borrower(id(1), "w1".into());
        t.add_borrower(id(2), "w1".into());
        t.add_borrower(id(2), "w2".into());
        assert!(t.remove_local(id(1)).is_none());
        assert!(t.remove_local(id(2)).is_none());
        let mut who = t.borrower_addresses();
        who.sort();
        assert_eq!(who, vec![Arc::<str>::from("w1"), Arc::from("w2")]);
        let freed = t.forget_borrower("w1");
        assert!(matches!(freed.as_slice(), [Release::FreeOwned(x)] if *x == id(1)));
        assert!(t.contains(&id(2)), "w2 still borrows it");
        assert_eq!(t.borrower_addresses(), vec![Arc::<str>::from("w2")]);
        assert!(matches!(
            t.remove_borrower(id(2), "w2"),
            Ok(Some(Release::FreeOwned(_)))
        ));
        assert!(t.borrower_addresses().is_empty());
    }

    #[test]
    fn a_late_release_does_not_cancel_a_newer_borrow() {
        let t = ReferenceTable::default();
        t.add_local(id(5), None, false);
        t.add_borrower(id(5), "w".into());
        t.add_borrower(id(5), "w".into()); // the second borrow's report overtook the release
        assert!(t.remove_local(id(5)).is_none());
        assert!(
            matches!(t.remove_borrower(id(5), "w"), Ok(None)),
            "the newer borrow still holds it"
        );
        assert!(matches!(
            t.remove_borrower(id(5), "w"),
            Ok(Some(Release::FreeOwned(_)))
        ));
    }

    #[test]
    fn a_release_that_overtook_its_borrow_is_refused_until_the_borrow_is_counted() {
        let t = ReferenceTable::default();
        t.add_local(id(6), None, false);
        t.add_borrower(id(6), "other".into());
        // The release of "w" arrives before the reply that reports its borrow.
        assert!(matches!(t.remove_borrower(id(6), "w"), Err(NotCounted)));
        assert!(t.remove_local(id(6)).is_none(), "\"other\" still holds it");
        t.add_borrower(id(6), "w".into());
        assert!(matches!(t.remove_borrower(id(6), "w"), Ok(None)));
        assert!(matches!(
            t.remove_borrower(id(6), "other"),
            Ok(Some(Release::FreeOwned(_)))
        ));
        // An object already freed: the release has nothing left to do.
        assert!(matches!(t.remove_borrower(id(6), "w"), Ok(None)));
    }

    #[test]
    fn pinned_objects_stay_and_provisional_borrows_release_silently() {
        let t = ReferenceTable::default();
        t.add_local(id(2), None, false);
        t.pin(id(2));
        assert!(t.remove_local(id(2)).is_none());
        assert!(t.contains(&id(2)));

        t.add_local(id(3), Some("owner".into()), true);
        assert!(matches!(
            t.remove_local(id(3)),
            Some(Release::DropBorrowed { notify: false, .. })
        ));
        t.add_local(id(4), Some("owner".into()), true);
        assert_eq!(t.still_borrowed(&[id(4)]), vec![id(4)]);
        assert_eq!(t.still_borrowed(&[id(4)]), vec![], "reported once");
        assert!(matches!(
            t.remove_local(id(4)),
            Some(Release::DropBorrowed { notify: true, .. })
        ));
    }
}
