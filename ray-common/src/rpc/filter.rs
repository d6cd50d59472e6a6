//! Fault injection at the one seam every call between processes goes through: a [`Filter`]
//! installed in a [`Filters`] set sees each call (service, method, caller, callee) before it
//! goes out and may drop its request, drop its response, delay it or fail it. Modelled on
//! TiKV's `transport_simulate.rs`; installed only by tests and the simulation harness.
//!
//! A dropped request or response fails the call as `Unreachable` at once, as a broken
//! connection would; a test that wants a silent peer uses a delay longer than the deadline.

use super::RpcErrorKind;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The services a process calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The global control store.
    Gcs,
    /// A node manager (raylet).
    NodeManager,
    /// Another process's core worker.
    CoreWorker,
    /// A worker's task socket: `PushTask` is one task frame sent and its reply. A stream
    /// cannot lose one message, so a dropped or failed one breaks the connection.
    DataPlane,
}

/// One call, as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The service called.
    pub service: Service,
    /// The method, as the proto names it (`"RequestWorkerLease"`).
    pub method: &'static str,
    /// Who calls: the label the caller's connector was given (empty if none).
    pub from: &'a str,
    /// The callee's address.
    pub to: &'a str,
}

/// What happens to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Goes through untouched.
    Pass,
    /// Never reaches the callee; the caller sees `Unreachable`.
    DropRequest,
    /// Reaches the callee, which acts on it; its answer is lost and the caller sees
    /// `Unreachable`.
    DropResponse,
    /// Goes out after this long (under paused tokio time, when the test advances it).
    Delay(Duration),
    /// Never reaches the callee; the caller sees this error.
    Fail(RpcErrorKind, String),
}

/// Decides what happens to calls.
pub trait Filter: Send + Sync + 'static {
    /// The verdict on `call`.
    fn verdict(&self, call: &Call<'_>) -> Verdict;
}

impl<F: Fn(&Call<'_>) -> Verdict + Send + Sync + 'static> Filter for F {
    fn verdict(&self, call: &Call<'_>) -> Verdict {
        self(call)
    }
}

/// Gives `verdict` to the first `times` calls of `method`, then lets every call pass.
///
/// ```
/// use ray_common::rpc::{Filters, OnMethod, Verdict};
/// let filters = Filters::default();
/// filters.install(OnMethod::new("ReturnWorker", Verdict::DropResponse).times(1));
/// ```
pub struct OnMethod {
    method: &'static str,
    verdict: Verdict,
    left: AtomicUsize,
}

impl OnMethod {
    /// Every call of `method` gets `verdict` (until [`OnMethod::times`] limits it).
    pub fn new(method: &'static str, verdict: Verdict) -> Self {
        OnMethod {
            method,
            verdict,
            left: AtomicUsize::new(usize::MAX),
        }
    }

    /// Only the first `n` calls of the method get the verdict.
    pub fn times(self, n: usize) -> Self {
        self.left.store(n, Ordering::Relaxed);
        self
    }

    /// How many more calls will get the verdict.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }
}

impl Filter for OnMethod {
    fn verdict(&self, call: &Call<'_>) -> Verdict {
        if call.method != self.method {
            return Verdict::Pass;
        }
        let took = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        match took {
            Ok(_) => self.verdict.clone(),
            Err(_) => Verdict::Pass,
        }
    }
}

/// Cuts every call between `from` and `to` labels/addresses in both directions: a network
/// partition between two processes.
pub struct Partition {
    /// One side: a caller label or an address.
    pub a: String,
    /// The other side.
    pub b: String,
}

impl Filter for Partition {
    fn verdict(&self, call: &Call<'_>) -> Verdict {
        let crosses = (call.from == self.a && call.to == self.b)
            || (call.from == self.b && call.to == self.a);
        if crosses {
            Verdict::DropRequest
        } else {
            Verdict::Pass
        }
    }
}

/// Handle of an installed filter, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterId(u64);

/// The filters installed on a connector's clients; shared by every client it opens.
#[derive(Default)]
pub struct Filters {
    list: RwLock<Vec<(FilterId, Arc<dyn Filter>)>>,
    next: AtomicU64,
}

impl Filters {
    /// Installs `filter` after those already installed.
    pub fn install(&self, filter: impl Filter) -> FilterId {
        let id = FilterId(self.next.fetch_add(1, Ordering::Relaxed));
        self.list.write().push((id, Arc::new(filter)));
        id
    }

    /// Removes one filter; calls made after this pass it by.
    pub fn remove(&self, id: FilterId) {
        self.list.write().retain(|(i, _)| *i != id);
    }

    /// Removes every filter.
    pub fn clear(&self) {
        self.list.write().clear();
    }

    /// The first verdict other than [`Verdict::Pass`], in installation order.
    pub fn verdict(&self, call: &Call<'_>) -> Verdict {
        self.list
            .read()
            .iter()
            .map(|(_, f)| f.verdict(call))
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &'static str) -> Call<'static> {
        Call {
            service: Service::NodeManager,
            method,
            from: "driver",
            to: "node",
        }
    }

    #[test]
    fn on_method_counts_down_and_removal_ends_a_filter() {
        let filters = Filters::default();
        let id = filters.install(OnMethod::new("ReturnWorker", Verdict::DropResponse).times(2));
        assert_eq!(filters.verdict(&call("RequestWorkerLease")), Verdict::Pass);
        assert_eq!(
            filters.verdict(&call("ReturnWorker")),
            Verdict::DropResponse
        );
        assert_eq!(
            filters.verdict(&call("ReturnWorker")),
            Verdict::DropResponse
        );
        assert_eq!(filters.verdict(&call("ReturnWorker")), Verdict::Pass);
        filters.remove(id);
        filters.install(|c: &Call<'_>| {
            if c.to == "node" {
                Verdict::Delay(Duration::from_secs(1))
            } else {
                Verdict::Pass
            }
        });
        assert_eq!(
            filters.verdict(&call("ReturnWorker")),
            Verdict::Delay(Duration::from_secs(1))
        );
        filters.clear();
        assert_eq!(filters.verdict(&call("ReturnWorker")), Verdict::Pass);
    }

    #[test]
    fn a_partition_cuts_both_directions_only() {
        let p = Partition {
            a: "driver".into(),
            b: "node".into(),
        };
        assert_eq!(p.verdict(&call("GetObject")), Verdict::DropRequest);
        let back = Call {
            from: "node",
            to: "driver",
            ..call("GetObject")
        };
        assert_eq!(p.verdict(&back), Verdict::DropRequest);
        let other = Call {
            to: "gcs",
            ..call("GetObject")
        };
        assert_eq!(p.verdict(&other), Verdict::Pass);
    }
}
