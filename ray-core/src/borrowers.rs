//! Borrowers that died: an owner counts each process that borrows one of its objects until
//! that process lets go, and a process that dies lets go of nothing. The owner pings the
//! processes that borrow from it every [`CHECK_PERIOD`]; one it cannot reach for
//! [`UNREACHABLE`] (as long as a borrower waits before it calls an owner dead) is dropped as
//! a borrower of every object, which frees what only it held. (Ray's owner learns the same
//! from its `WaitForRefRemoved` call to the borrower failing.)

use crate::ownership::Ownership;
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
