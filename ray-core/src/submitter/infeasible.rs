//! The warning a Ray user sees on the driver when work waits for a shape no alive node can
//! hold: a lease request still unanswered after a while is looked up among the demands the
//! cluster reports (`rayrs status` lists the same), and a match is logged with its reason.

use ray_common::rpc::GcsApi;
use ray_common::Clock;
use ray_scheduler::ResourceSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a lease request waits before the cluster is asked whether its shape fits at all.
const NOTICE_AFTER: Duration = Duration::from_secs(3);
/// Between two looks (and warnings) while it still waits.
const NOTICE_EVERY: Duration = Duration::from_secs(30);

/// Watches a lease request for `shape` until dropped (aborted when answered),
/// warning while the cluster reports the shape as one no alive node can hold.
pub(super) fn watch(gcs: Arc<dyn GcsApi>, clock: Clock, shape: ResourceSet) -> WatchGuard {
    let task = tokio::spawn(async move {
        clock.sleep(NOTICE_AFTER).await;
        loop {
            if let Some(reason) = reported_infeasible(&gcs, &shape).await {
                tracing::warn!(
                    "a task or actor needing {:?} cannot be scheduled: {reason}. It waits for a \
                     node that can hold it (see `rayrs status`)",
                    shape.to_map()
                );
            }
            clock.sleep(NOTICE_EVERY).await;
        }
    });
    WatchGuard(task.abort_handle())
}

/// Stops the watch when dropped.
pub(super) struct WatchGuard(tokio::task::AbortHandle);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reason a node gives for holding `shape` as infeasible, if any does.
async fn reported_infeasible(gcs: &Arc<dyn GcsApi>, shape: &ResourceSet) -> Option<String> {
    let nodes = gcs.get_all_nodes(ray_proto::Empty {}).await.ok()?.nodes;
    nodes
        .into_iter()
        .filter(|n| n.alive)
        .flat_map(|n| n.demands)
        .find(|d| {
            ray_common::resources::to_resource_set(d.shape.clone())
                .is_ok_and(|s| s.to_map() == shape.to_map())
        })
        .map(|d| d.reason)
}
