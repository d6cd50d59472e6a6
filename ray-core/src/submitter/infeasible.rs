//! The warning a Ray user sees on the driver when work waits for a shape no alive node can
//! hold: a lease request or an actor still waiting after a while is looked up in what the
//! cluster reports (the node managers' demands, which `rayrs status` lists too, or the
//! actor's pending reason), and a match is logged with its reason.

use ray_common::rpc::GcsApi;
use ray_common::ActorId;
use ray_common::Clock;
use ray_scheduler::ResourceSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long work waits before the cluster is asked whether it can be placed at all.
const NOTICE_AFTER: Duration = Duration::from_secs(3);
/// Between two looks (and warnings) while it still waits.
const NOTICE_EVERY: Duration = Duration::from_secs(30);

/// Stops a watch when dropped.
pub(super) struct WatchGuard(tokio::task::AbortHandle);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches a lease request for `shape` until dropped (when it is answered), warning while
/// the cluster reports the shape as one no alive node can hold.
pub(super) fn watch_lease(gcs: Arc<dyn GcsApi>, clock: Clock, shape: ResourceSet) -> WatchGuard {
    let what = {
        let shape = shape.clone();
        move || format!("a task or actor needing {shape}")
    };
    watch(clock, what, move || {
        let (gcs, shape) = (gcs.clone(), shape.clone());
        async move { reported_infeasible(&gcs, &shape).await }
    })
}

/// Watches the placement of actor `id` of `class` until dropped (when it is resolved),
/// warning while the GCS holds it back for want of a node that can hold it.
pub(super) fn watch_actor(
    gcs: Arc<dyn GcsApi>,
    clock: Clock,
    id: ActorId,
    class: &str,
) -> WatchGuard {
    let class = class.to_string();
    let what = move || format!("actor {class} ({id})");
    watch(clock, what, move || {
        let gcs = gcs.clone();
        async move {
            let req = ray_proto::GetActorInfoRequest {
                actor_id: id.to_vec().into(),
                min_incarnation: 0,
                // At once, as it is.
                wait_ms: 1,
            };
            let info = gcs.get_actor_info(req).await.ok()?;
            (!info.pending_reason.is_empty()).then_some(info.pending_reason)
        }
    })
}

/// Warns, after [`NOTICE_AFTER`] and then every [`NOTICE_EVERY`], while `reason` finds
/// one; `what` names the work (formatted only then: most requests are answered sooner).
fn watch<W, F, Fut>(clock: Clock, what: W, reason: F) -> WatchGuard
where
    W: Fn() -> String + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Option<String>> + Send,
{
    let task = tokio::spawn(async move {
        clock.sleep(NOTICE_AFTER).await;
        loop {
            if let Some(reason) = reason().await {
                tracing::warn!(
                    "{} cannot be scheduled: {reason}. It waits for a node that can hold \
                     it (see `rayrs status`)",
                    what()
                );
            }
            clock.sleep(NOTICE_EVERY).await;
        }
    });
    WatchGuard(task.abort_handle())
}

/// The reason a node gives for holding `shape` as infeasible, if any does.
async fn reported_infeasible(gcs: &Arc<dyn GcsApi>, shape: &ResourceSet) -> Option<String> {
    let nodes = gcs.get_all_nodes(ray_proto::Empty {}).await.ok()?.nodes;
    nodes
        .into_iter()
        .filter(|n| n.alive)
        .flat_map(|n| n.demands)
        .filter(|d| !d.busy)
        .find(|d| {
            ray_common::resources::to_resource_set(d.shape.clone())
                .is_ok_and(|s| s.to_map() == shape.to_map())
        })
        .map(|d| d.reason)
}
