//! Where a component's deadlines take their time from: the real clock, or a [`ManualClock`]
//! a test moves by hand, so that a ten-second deadline passes when the test says so and not
//! after ten seconds of waiting.
//!
//! A component is handed its [`Clock`] with its connector ([`crate::rpc::Connect::clock`]),
//! and the deadlines of its failure paths read it: RPC deadlines and filter delays (task
//! frames' too), the submitter's lease-retry deadline and its wait for a lost actor call, the
//! fetcher's owner-death deadline, the node manager's worker-limit wait and startup-failure
//! window, the GCS's placement-retry deadline and long polls. The pauses between retries stay
//! real (retries go on at their pace while the test holds the deadline), and so do socket
//! keepalives, handshake deadlines, idle-lease returns and housekeeping ticks: they pace the
//! process, not the protocol. The real clock costs one enum match over tokio's own timers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A time source for deadlines and backoffs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use ray_common::clock::{Clock, ManualClock};
/// use std::time::Duration;
/// let manual = ManualClock::new();
/// let clock = Clock::Manual(manual.clone());
/// let nap = tokio::spawn({
///     let clock = clock.clone();
///     async move { clock.sleep(Duration::from_secs(3600)).await }
/// });
/// while manual.sleepers() == 0 {
///     tokio::task::yield_now().await;
/// }
/// manual.advance(Duration::from_secs(3600)); // an hour passes at once
/// nap.await.unwrap();
/// # }
/// ```
#[derive(Clone, Default)]
pub enum Clock {
    /// tokio's timers and `Instant::now()`.
    #[default]
    Real,
    /// Time that moves only when a test calls [`ManualClock::advance`].
    Manual(Arc<ManualClock>),
}

/// A deadline of [`Clock::timeout`] passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

impl Clock {
    /// The time now.
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Waits until `deadline`.
    pub async fn sleep_until(&self, deadline: Instant) {
        match self {
            Clock::Real => tokio::time::sleep_until(deadline.into()).await,
            Clock::Manual(m) => m.sleep_until(deadline).await,
        }
    }

    /// Waits `duration` from now: the deadline is fixed when this is called, not when the
    /// future is first polled (time a test moves meanwhile counts).
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let clock = self.clone();
        let deadline = self.now() + duration;
        async move { clock.sleep_until(deadline).await }
    }

    /// `f`'s output, or [`Elapsed`] if `duration` passes first.
    pub async fn timeout<F: Future>(&self, duration: Duration, f: F) -> Result<F::Output, Elapsed> {
        match self {
            Clock::Real => tokio::time::timeout(duration, f).await.map_err(|_| Elapsed),
            Clock::Manual(m) => {
                let deadline = m.now() + duration;
                tokio::select! {
                    biased;
                    out = f => Ok(out),
                    _ = m.sleep_until(deadline) => Err(Elapsed),
                }
            }
        }
    }

    /// `f`'s output, or [`Elapsed`] if `deadline` passes first.
    pub async fn timeout_at<F: Future>(
        &self,
        deadline: Instant,
        f: F,
    ) -> Result<F::Output, Elapsed> {
        match self {
            Clock::Real => tokio::time::timeout_at(deadline.into(), f)
                .await
                .map_err(|_| Elapsed),
            Clock::Manual(m) => tokio::select! {
                biased;
                out = f => Ok(out),
                _ = m.sleep_until(deadline) => Err(Elapsed),
            },
        }
    }
}

/// Time a test moves: it starts at the real time of its creation and stands still until
/// [`advance`](ManualClock::advance)d, which wakes every sleeper whose deadline it passes.
pub struct ManualClock {
    start: Instant,
    /// How far the test moved time; each sleeper watches it.
    moved: watch::Sender<Duration>,
    /// The deadlines of the sleeps waiting now.
    waiting: std::sync::Mutex<Vec<Instant>>,
}

impl ManualClock {
    /// A clock standing at the real time now.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            moved: watch::Sender::new(Duration::ZERO),
            waiting: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The clock's time.
    pub fn now(&self) -> Instant {
        self.start + *self.moved.borrow()
    }

    /// Moves time on by `by`, waking the sleepers whose deadline has come.
    pub fn advance(&self, by: Duration) {
        self.moved.send_modify(|moved| *moved += by);
    }

    /// How many sleeps and timeouts wait on this clock now: a test waits for the one it means
    /// to expire before it advances.
    pub fn sleepers(&self) -> usize {
        self.moved.receiver_count()
    }

    /// How many sleeps and timeouts wait for a deadline at least `beyond` from now: a test
    /// tells the one it means (an hour's delay) from the RPC deadlines in flight.
    pub fn sleepers_beyond(&self, beyond: Duration) -> usize {
        let now = self.now();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|d| **d >= now + beyond)
            .count()
    }

    async fn sleep_until(&self, deadline: Instant) {
        /// Lists the deadline while the sleep waits (it may be dropped before it ends).
        struct Listed<'a>(&'a ManualClock, Instant);
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                let mut waiting = self.0.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = waiting.iter().position(|d| *d == self.1) {
                    waiting.swap_remove(i);
                }
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(deadline);
        let _listed = Listed(self, deadline);
        let mut moved = self.moved.subscribe();
        while self.start + *moved.borrow_and_update() < deadline {
            if moved.changed().await.is_err() {
                // The sender lives as long as `self`: unreachable, but never wake early.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Wall-clock microseconds since the Unix epoch, now: the time stamps the state API shows
/// (task events, job starts and ends), never a deadline (deadlines read a [`Clock`]).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_time_is_moved_past_it_and_not_before() {
        let manual = ManualClock::new();
        let clock = Clock::Manual(manual.clone());
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        tokio::spawn({
            let clock = clock.clone();
            async move {
                clock.sleep(Duration::from_secs(10)).await;
                let _ = tx.send(());
            }
        });
        while manual.sleepers() == 0 {
            tokio::task::yield_now().await;
        }
        manual.advance(Duration::from_secs(9));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(rx.try_recv().is_err(), "woke before its deadline");
        manual.advance(Duration::from_secs(1));
        rx.await.expect("woke at its deadline");
        assert_eq!(manual.sleepers(), 0);
    }

    #[tokio::test]
    async fn a_manual_timeout_passes_the_output_through_or_elapses_when_moved() {
        let manual = ManualClock::new();
        let clock = Clock::Manual(manual.clone());
        assert_eq!(
            clock.timeout(Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
        let never = clock.timeout(Duration::from_secs(1), std::future::pending::<()>());
        let mover = async {
            while manual.sleepers() == 0 {
                tokio::task::yield_now().await;
            }
            manual.advance(Duration::from_secs(2));
        };
        let (out, ()) = tokio::join!(never, mover);
        assert_eq!(out, Err(Elapsed));
        let before = clock.now();
        manual.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - before, Duration::from_secs(5));
    }
}
