//! The owner's side of its borrowers' lives: their releases, and their deaths.
//!
//! An owner counts each process that borrows one of its objects until that process lets go.
//! A release can overtake the report of the borrow it ends (a task's reply, a third
//! process's registration: another channel), so [`release`] parks one whose borrow is not
//! counted yet and applies it once it is, within [`UNCOUNTED_WAIT`].
//!
//! A process that dies lets go of nothing. The owner pings the processes that borrow from
//! it every [`CHECK_PERIOD`]; one it cannot reach for [`UNREACHABLE`] (as long as a
//! borrower waits before it calls an owner dead) is dropped as a borrower of every object,
//! which frees what only it held. (Ray's owner learns the same from its `WaitForRefRemoved`
//! call to the borrower failing.)

use crate::ids::ObjectId;
use crate::ownership::Ownership;
use crate::reference::NotCounted;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Most borrowers pinged at once.
const PINGS_AT_ONCE: usize = 64;

/// How often the borrowers are pinged (when there are any).
pub(crate) const CHECK_PERIOD: Duration = Duration::from_secs(2);
/// How long a borrower may not answer before it is taken for dead.
pub(crate) const UNREACHABLE: Duration = Duration::from_secs(10);
/// How long one ping may take.
const PING_DEADLINE: Duration = Duration::from_secs(2);

/// How long a release waits for the borrow it ends to be counted: longer than a borrow's
/// registration is tried ([`crate::ownership::BORROW_DEADLINE`]).
pub(crate) const UNCOUNTED_WAIT: Duration = Duration::from_secs(30);
/// The first wait of a parked release; each next one doubles, up to [`UNCOUNTED_RETRY_MAX`].
const UNCOUNTED_RETRY: Duration = Duration::from_millis(5);
const UNCOUNTED_RETRY_MAX: Duration = Duration::from_millis(500);

/// `borrower` let go of `id`, an object of this process. Applied now if its borrow is
/// counted; else parked until the report of the borrow arrives (or [`UNCOUNTED_WAIT`]
/// passes: then it never comes, and there is nothing to release).
pub(crate) fn release(own: &Arc<Ownership>, id: ObjectId, borrower: &str) {
    match own.refs.remove_borrower(id, borrower) {
        Ok(Some(release)) => own.apply_release(release),
        Ok(None) => {}
        Err(NotCounted) => {
            let Some(link) = &own.link else { return };
            let clock = link.clock.clone();
            // A borrower dropped for dead meanwhile (cut off, not dead) may borrow again:
            // this release, from before, must not end that newer borrow.
            let forgotten = own.refs.times_forgotten(borrower);
            let own = Arc::downgrade(own);
            let borrower: Arc<str> = borrower.into();
            link.handle.spawn(async move {
                let until = clock.now() + UNCOUNTED_WAIT;
                let mut wait = UNCOUNTED_RETRY;
                loop {
                    clock.sleep(wait).await;
                    let Some(own) = own.upgrade() else { return };
                    if own.refs.times_forgotten(&borrower) != forgotten {
                        return;
                    }
                    match own.refs.remove_borrower(id, &borrower) {
                        Ok(Some(release)) => return own.apply_release(release),
                        Ok(None) => return,
                        Err(NotCounted) if clock.now() >= until => {
                            tracing::warn!(
                                object = %id.to_hex(),
                                %borrower,
                                "a release came for a borrow never reported within \
                                 {UNCOUNTED_WAIT:?}; dropped"
                            );
                            return;
                        }
                        Err(NotCounted) => wait = (wait * 2).min(UNCOUNTED_RETRY_MAX),
                    }
                }
            });
        }
    }
}

/// Runs until the core worker is gone.
pub(crate) async fn watch(own: Weak<Ownership>) {
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when each borrower has not answered.
    let mut silent: HashMap<Arc<str>, Instant> = HashMap::new();
    loop {
        tick.tick().await;
        let (borrowers, link) = {
            let Some(own) = own.upgrade() else { return };
            let Some(link) = own.link.clone() else { return };
            (own.refs.borrower_addresses(), link)
        };
        silent.retain(|b, _| borrowers.contains(b));
        if borrowers.is_empty() {
            continue;
        }
        let pings = borrowers.into_iter().map(|b| {
            let link = link.clone();
            async move {
                let answered = match link.peer(&b) {
                    Ok(peer) => matches!(
                        link.clock
                            .timeout(PING_DEADLINE, peer.ping(ray_proto::Empty {}))
                            .await,
                        Ok(Ok(_))
                    ),
                    Err(_) => false,
                };
                (b, answered)
            }
        });
        use futures_util::StreamExt;
        let answers: Vec<(Arc<str>, bool)> = futures_util::stream::iter(pings)
            .buffer_unordered(PINGS_AT_ONCE)
            .collect()
            .await;
        let Some(own) = own.upgrade() else { return };
        let now: Instant = link.clock.now();
        for (b, answered) in answers {
            if answered {
                silent.remove(&b);
                continue;
            }
            let since = *silent.entry(b.clone()).or_insert(now);
            if now.duration_since(since) < UNREACHABLE {
                continue;
            }
            silent.remove(&b);
            let released = own.refs.forget_borrower(&b);
            link.forget_peer(&b);
            tracing::info!(
                borrower = %b,
                freed = released.len(),
                "a process that borrowed objects of this one has not answered for {UNREACHABLE:?}: \
                 its borrows are released"
            );
            for release in released {
                own.apply_release(release);
            }
        }
    }
}
