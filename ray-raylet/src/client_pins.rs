//! Pins this node's store holds for the processes of this machine that read pulled copies
//! of other nodes' objects, by process: a process that ends (killed while it reads, or
//! exiting without letting go) has its remaining pins released, as the store's contract
//! asks of whoever pins for a client.
//!
//! Invariant: every pin recorded here was taken by one `FetchObject` and is released once,
//! by the process's `ReleaseObject` or by its end, never both. The pid is the caller's word
//! (a token holder of this machine), as the rest of the node's store protocol trusts it.

use crate::drivers::process_exit;
use crate::pool::NodeManager;
use ray_object_store::ObjectId;
use std::collections::HashMap;

/// Pins held per reading process (by pid), counted per object.
#[derive(Default)]
pub(crate) struct ClientPins {
    by_pid: parking_lot::Mutex<HashMap<u32, HashMap<ObjectId, u32>>>,
}

impl NodeManager {
    /// Records a pin on `id` taken for process `pid` (0: untracked). The first pin of a
    /// process starts watching it, so its pins are released when it ends.
    pub(crate) fn pinned_for(&self, pid: u32, id: ObjectId) {
        if pid == 0 {
            return;
        }
        let first = {
            let mut by_pid = self.inner.client_pins.by_pid.lock();
            let first = !by_pid.contains_key(&pid);
            *by_pid.entry(pid).or_default().entry(id).or_default() += 1;
            first
        };
        if first {
            self.release_pins_at_exit(pid);
        }
    }

    /// Releases one pin on `id` for process `pid`; a pin not recorded for it (its process
    /// already ended, or it never took one) is not released twice.
    pub(crate) fn release_for(&self, pid: u32, id: ObjectId) {
        if pid == 0 {
            self.store().release(id);
            return;
        }
        let held = {
            let mut by_pid = self.inner.client_pins.by_pid.lock();
            let Some(pins) = by_pid.get_mut(&pid) else {
                return;
            };
            match pins.get_mut(&id) {
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        pins.remove(&id);
                    }
                    true
                }
                None => false,
            }
        };
        if held {
            self.store().release(id);
        }
    }

    fn release_pins_at_exit(&self, pid: u32) {
        let exited = match process_exit(pid) {
            Ok(exited) => exited,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Already gone: nothing will let its pins go but this.
                self.release_all_for(pid);
                return;
            }
            Err(e) => {
                // Cannot watch (no pidfd on this kernel, a sandbox): its pins stay until it
                // lets them go (a leak if it dies first, never a copy freed under a reader).
                self.inner.limit_warning.warn(&format!(
                    "cannot watch reading process {pid} ({e}): its pins on pulled copies are \
                     released only when it lets them go"
                ));
                return;
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _ = exited.readable().await;
            me.release_all_for(pid);
        });
    }

    fn release_all_for(&self, pid: u32) {
        let pins = self.inner.client_pins.by_pid.lock().remove(&pid);
        for (id, n) in pins.into_iter().flatten() {
            tracing::debug!(pid, %id, n, "releasing the pins of a process that ended");
            for _ in 0..n {
                self.store().release(id);
            }
        }
    }
}
