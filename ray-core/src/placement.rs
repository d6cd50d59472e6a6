//! The core worker's placement groups: created, waited for, looked up by name and removed
//! through the GCS (in sync mode, where there is one process, made at once).

use crate::core_worker::CoreWorker;
use crate::error::{Error, Result};
use crate::group::{
    Bundle, GroupGate, PlacementGroup, PlacementGroupInfo, PlacementGroupState, PlacementStrategy,
};
use crate::memory_store::Stored;
use crate::ownership::RefInner;
use ray_common::rpc::{with_retries, RpcErrorKind, CONTROL_DEADLINE};
use ray_common::PlacementGroupId;
use std::sync::Arc;
use std::time::Duration;

/// What a placement group is created with, beyond its bundles and strategy.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupOptions {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub detached: bool,
}

fn group_from(info: ray_proto::PlacementGroupInfo) -> Result<PlacementGroup> {
    let spec = info
        .spec
        .ok_or_else(|| Error::Runtime("the GCS described a placement group without it".into()))?;
    let id = PlacementGroupId::from_wire(&spec.group_id).map_err(Error::runtime)?;
    let bundles = spec
        .bundles
        .into_iter()
        .map(|b| ray_common::resources::to_resource_set(Some(b)).map_err(Error::runtime))
        .collect::<Result<Vec<_>>>()?;
    Ok(PlacementGroup {
        id,
        bundles: bundles.into(),
        strategy: ray_common::resources::strategy_from_proto(spec.strategy),
    })
}

fn gcs_error(what: &str, e: ray_common::rpc::RpcError) -> Error {
    match e.kind {
        RpcErrorKind::AlreadyExists | RpcErrorKind::InvalidArgument | RpcErrorKind::NotFound => {
            Error::InvalidArgument(e.message)
        }
        _ => Error::Runtime(format!("{what}: {}", e.message)),
    }
}

impl CoreWorker {
    /// Registers a placement group with the GCS, which places and reserves it in the
    /// background; the handle comes back at once.
    pub(crate) fn create_group(
        self: &Arc<Self>,
        bundles: &[Bundle],
        strategy: PlacementStrategy,
        opts: GroupOptions,
    ) -> Result<PlacementGroup> {
        if bundles.is_empty() {
            return Err(Error::InvalidArgument(
                "a placement group needs at least one bundle".into(),
            ));
        }
        let sets = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| b.to_set(i))
            .collect::<Result<Vec<_>>>()?;
        for (i, set) in sets.iter().enumerate() {
            if let Some(e) = crate::options::gpu_request_error(set.get(ray_scheduler::GPU)) {
                return Err(Error::InvalidArgument(format!("bundle {i}: {e}")));
            }
        }
        let group = PlacementGroup {
            id: PlacementGroupId::random(),
            bundles: sets.into(),
            strategy,
        };
        let Some(link) = &self.own.link else {
            return Ok(group);
        };
        let spec = ray_proto::PlacementGroupSpec {
            group_id: group.id.to_vec().into(),
            bundles: group
                .bundles
                .iter()
                .map(ray_common::resources::to_resources)
                .collect(),
            strategy: ray_common::resources::strategy_to_proto(strategy).into(),
            name: opts.name.unwrap_or_default(),
            namespace: opts
                .namespace
                .unwrap_or_else(|| self.own.me.namespace.clone()),
            job_id: self.own.me.job_id,
            detached: opts.detached,
        };
        let gcs = link.gcs.clone();
        let clock = link.clock.clone();
        // Asked again under the same id if the answer is lost: the GCS records it once.
        link.call(async move {
            with_retries(&clock, CONTROL_DEADLINE, || {
                gcs.create_placement_group(spec.clone())
            })
            .await
        })?
        .map_err(|e| gcs_error("creating a placement group", e))?;
        Ok(group)
    }

    /// Waits at most `timeout` for the group to be created: whether it is. `Err` if it was
    /// removed or is unknown.
    pub(crate) fn wait_group(
        self: &Arc<Self>,
        group: &PlacementGroup,
        timeout: Duration,
    ) -> Result<bool> {
        let Some(link) = &self.own.link else {
            // One process: the group is there if this node could ever hold each bundle.
            return Ok(group.bundles.iter().all(|b| b.fits_in(&self.node_total)));
        };
        let gcs = link.gcs.clone();
        let clock = link.clock.clone();
        let id = group.id;
        let info = link
            .call(async move {
                let deadline = clock.now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(clock.now());
                    let req = ray_proto::GetPlacementGroupRequest {
                        group_id: id.to_vec().into(),
                        wait_ms: left.min(Duration::from_secs(3)).as_millis() as u32,
                    };
                    let call = gcs.get_placement_group(req);
                    let waited = clock.timeout(CONTROL_DEADLINE + Duration::from_secs(3), call);
                    let late = || clock.now() >= deadline;
                    match waited.await {
                        Ok(Ok(info)) if info.state != "PENDING" || late() => return Ok(Some(info)),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) if e.kind == RpcErrorKind::NotFound => return Err(e),
                        // The GCS is away: pending as far as anyone here knows.
                        Ok(Err(_)) | Err(_) if late() => return Ok(None),
                        Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })?
            .map_err(|e| gcs_error("waiting for a placement group", e))?;
        let Some(info) = info else {
            return Ok(false);
        };
        match info.state.as_str() {
            "CREATED" => Ok(true),
            "REMOVED" => Err(Error::InvalidArgument(format!(
                "placement group {id} was removed"
            ))),
            _ => Ok(false),
        }
    }

    /// Removes the group: its bundles are given back and what runs in them is killed; its
    /// tasks still waiting fail. Removing it twice is fine.
    pub(crate) fn remove_group(self: &Arc<Self>, group: &PlacementGroup) -> Result<()> {
        self.group_removed(group.id);
        let Some(link) = &self.own.link else {
            return Ok(());
        };
        let gcs = link.gcs.clone();
        let clock = link.clock.clone();
        let req = ray_proto::RemovePlacementGroupRequest {
            group_id: group.id.to_vec().into(),
        };
        link.call(async move {
            with_retries(&clock, CONTROL_DEADLINE, || {
                gcs.remove_placement_group(req.clone())
            })
            .await
        })?
        .map_err(|e| gcs_error("removing a placement group", e))?;
        Ok(())
    }

    /// The group named `name` in `namespace` (default: the job's).
    pub(crate) fn named_group(
        self: &Arc<Self>,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<PlacementGroup> {
        let Some(link) = &self.own.link else {
            return Err(Error::InvalidArgument(
                "named placement groups need a runtime with a GCS (not sync mode)".into(),
            ));
        };
        let gcs = link.gcs.clone();
        let clock = link.clock.clone();
        let req = ray_proto::GetNamedPlacementGroupRequest {
            name: name.to_string(),
            namespace: namespace
                .map(str::to_string)
                .unwrap_or_else(|| self.own.me.namespace.clone()),
        };
        let info = link
            .call(async move {
                with_retries(&clock, CONTROL_DEADLINE, || {
                    gcs.get_named_placement_group(req.clone())
                })
                .await
            })?
            .map_err(|e| gcs_error("looking a placement group up", e))?;
        group_from(info)
    }

    /// A ref that is ready once the group is created (Ray's `pg.ready()`); it fails with
    /// [`Error::InvalidArgument`] if the group is removed first.
    pub(crate) fn group_ready_ref(
        self: &Arc<Self>,
        group: &PlacementGroup,
    ) -> Result<Arc<RefInner>> {
        let id = self.own.ids.next();
        self.own.store.expect(id);
        let r = self.own.new_ref(id);
        let unit = crate::codec::encode(&())?;
        let Some(mut gate) = self.group_gate(group.id) else {
            // One process: ready if this node could ever hold each bundle (as `wait` says);
            // otherwise it never is.
            if group.bundles.iter().all(|b| b.fits_in(&self.node_total)) {
                self.own.store_owned_bytes(id, unit)?;
            }
            return Ok(r);
        };
        let own = self.own.clone();
        let Some(link) = &self.own.link else {
            return Ok(r);
        };
        link.handle.spawn(async move {
            let opened = gate
                .wait_for(|g| !matches!(g, GroupGate::Pending))
                .await
                .map(|g| g.clone());
            match opened {
                Ok(GroupGate::Ready) => {
                    let _ = own.store_owned_bytes(id, unit);
                }
                Ok(GroupGate::Failed(why)) => {
                    let e = Error::InvalidArgument(
                        why.replace("its placement group", "placement group"),
                    );
                    own.store.put(id, Stored::Failed(Arc::new(e)));
                }
                // The session ends: its shutdown fails what is still pending.
                Ok(GroupGate::Pending) | Err(_) => {}
            }
        });
        Ok(r)
    }

    /// Every placement group the GCS knows (sync mode: none are recorded).
    pub(crate) fn group_table(self: &Arc<Self>) -> Result<Vec<PlacementGroupInfo>> {
        let Some(link) = &self.own.link else {
            return Ok(Vec::new());
        };
        let gcs = link.gcs.clone();
        let clock = link.clock.clone();
        let table = link
            .call(async move {
                with_retries(&clock, CONTROL_DEADLINE, || {
                    gcs.list_placement_groups(ray_proto::Empty {})
                })
                .await
            })?
            .map_err(|e| gcs_error("listing placement groups", e))?;
        table
            .groups
            .into_iter()
            .map(|info| {
                let state = match info.state.as_str() {
                    "CREATED" => PlacementGroupState::Created,
                    "REMOVED" => PlacementGroupState::Removed,
                    _ => PlacementGroupState::Pending,
                };
                let (name, namespace) = info
                    .spec
                    .as_ref()
                    .map(|s| (s.name.clone(), s.namespace.clone()))
                    .unwrap_or_default();
                let bundle_nodes = info
                    .bundle_nodes
                    .iter()
                    .map(|n| ray_common::ids::hex(n))
                    .collect();
                let pending_reason = info.pending_reason.clone();
                let group = group_from(info)?;
                Ok(PlacementGroupInfo {
                    id: group.id.to_hex(),
                    name,
                    namespace,
                    strategy: group.strategy,
                    state,
                    bundles: group.bundle_specs(),
                    bundle_nodes,
                    pending_reason,
                })
            })
            .collect()
    }
}
