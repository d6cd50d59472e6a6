//! Giving memory back after a burst: the process's tables keep the capacity of their
//! largest moment (a million tasks' slots) unless shrunk, and the allocator keeps freed
//! small blocks unless asked to return them. A housekeeping task does both, once a second.

use dashmap::DashMap;
use std::hash::Hash;
use std::sync::Weak;
use std::time::Duration;

/// How often the tables are looked at.
const PERIOD: Duration = Duration::from_secs(1);
/// Entries freed since the last look (down to fewer than this) that make it worth asking
/// the allocator for memory.
const FREED_ENOUGH: usize = 10_000;

/// Tables that can give memory back.
pub(crate) trait Tidy: Send + Sync + 'static {
    /// Shrinks the tables that are mostly empty; true if any was.
    fn shrink(&self) -> bool;
    /// Entries in all the tables.
    fn len(&self) -> usize;
}

/// Runs until `rt` is gone: shrinks mostly empty tables, and returns free memory to the
/// system after many entries were freed.
pub(crate) async fn housekeeping<T: Tidy>(rt: Weak<T>) {
    let mut last_len = 0usize;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        // Shrinking and trimming take a while on big tables: off the runtime's threads.
        let tidy = tokio::task::spawn_blocking(move || {
            let shrank = rt.shrink();
            let len = rt.len();
            // Trim once a burst is over (not every second while one drains).
            let burst_over = len < FREED_ENOUGH && last_len.saturating_sub(len) >= FREED_ENOUGH;
            if shrank || burst_over {
                return_free_memory();
            }
            len
        });
        match tidy.await {
            Ok(len) => last_len = len,
            Err(_) => return, // The runtime is shutting down.
        }
    }
}

/// Shrinks `map` if it uses under a quarter of its capacity; true if it did.
pub(crate) fn shrink_sparse<K: Eq + Hash + Clone, V, S: std::hash::BuildHasher + Clone>(
    map: &DashMap<K, V, S>,
) -> bool {
    let sparse = map.capacity() > 1024 && map.len() * 4 < map.capacity();
    if sparse {
        map.shrink_to_fit();
    }
    sparse
}

/// Asks the allocator to hand freed memory back to the system (glibc keeps it otherwise).
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
