//! Placement groups: registration, placing every bundle with `ray_scheduler::place_bundles`,
//! reserving them on their nodes all or none, removal, and the long poll that waits for one.
//!
//! A reserved bundle adds its resources to its node under the group's names
//! (`ray_scheduler::bundles::bundle_resources`); tasks and actors of the group ask for those
//! names, so the ordinary policies find the bundle's node and nothing else can use it.

use crate::{GcsError, GcsService};
use parking_lot::Mutex;
use ray_actor::Names;
use ray_common::PlacementGroupId;
use ray_proto::*;
use ray_scheduler::{NodeResources, PlacementStrategy, ResourceSet};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Notify;

/// How often a group that could not be placed looks again without a new view.
const PLACE_POLL: Duration = Duration::from_secs(2);

/// A group's life: placed and reserved once, then removed once (never back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupState {
    Pending,
    Created,
    Removed,
}

impl GroupState {
    fn as_str(self) -> &'static str {
        match self {
            GroupState::Pending => "PENDING",
            GroupState::Created => "CREATED",
            GroupState::Removed => "REMOVED",
        }
    }
}

struct Group {
    spec: PlacementGroupSpec,
    bundles: Vec<ResourceSet>,
    strategy: PlacementStrategy,
    state: GroupState,
    /// Per bundle, the index in the GCS's node table of the node holding it (once created).
    nodes: Vec<usize>,
    /// Why it is not created yet.
    pending_reason: String,
}

/// A group's bundles by the node (its index in the node table) that holds them.
type PerNode = Vec<(usize, Vec<BundleReservation>)>;

impl Group {
    /// Its bundles by node, as reserved (empty unless created).
    fn per_node(&self) -> PerNode {
        let mut per_node: HashMap<usize, Vec<BundleReservation>> = HashMap::new();
        for (i, (&node, shape)) in self.nodes.iter().zip(&self.bundles).enumerate() {
            per_node.entry(node).or_default().push(BundleReservation {
                index: i as u32,
                shape: Some(ray_common::resources::to_resources(shape)),
            });
        }
        per_node.into_iter().collect()
    }

    fn info(&self, node_ids: &[NodeInfo]) -> PlacementGroupInfo {
        PlacementGroupInfo {
            spec: Some(self.spec.clone()),
            state: self.state.as_str().into(),
            bundle_nodes: self
                .nodes
                .iter()
                .map(|&i| {
                    node_ids
                        .get(i)
                        .map(|n| n.node_id.clone())
                        .unwrap_or_default()
                })
                .collect(),
            pending_reason: self.pending_reason.clone(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Groups {
    table: Mutex<Table>,
    /// Woken when any group is created or removed.
    changed: Notify,
}

#[derive(Default)]
struct Table {
    groups: HashMap<PlacementGroupId, Group>,
    names: Names,
}

impl GcsService {
    /// Records a group and starts placing it; a name taken by a group not removed is an
    /// error.
    pub(crate) fn create_group(&self, spec: PlacementGroupSpec) -> Result<(), GcsError> {
        let id = PlacementGroupId::from_wire(&spec.group_id)
            .map_err(|e| GcsError::InvalidArgument(e.to_string()))?;
        if spec.bundles.is_empty() {
            return Err(GcsError::InvalidArgument(
                "a placement group needs at least one bundle".into(),
            ));
        }
        let bundles = spec
            .bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let set = ray_common::resources::to_resource_set(Some(b.clone()))
                    .map_err(|e| GcsError::InvalidArgument(format!("bundle {i}: {e}")))?;
                if set.is_empty() {
                    return Err(GcsError::InvalidArgument(format!(
                        "bundle {i} asks for no resources"
                    )));
                }
                Ok(set)
            })
            .collect::<Result<Vec<_>, _>>()?;
        {
            let mut t = self.inner.groups.table.lock();
            if t.groups.contains_key(&id) {
                // Asked again (its first answer was lost): it is the same group.
                return Ok(());
            }
            if !spec.name.is_empty() {
                let Table { groups, names } = &mut *t;
                let alive = |holder: &[u8]| {
                    PlacementGroupId::from_wire(holder).is_ok_and(|h| {
                        groups
                            .get(&h)
                            .is_some_and(|g| g.state != GroupState::Removed)
                    })
                };
                names
                    .claim(&spec.namespace, &spec.name, &spec.group_id, alive)
                    .map_err(|_| {
                        GcsError::AlreadyExists(format!(
                            "a placement group named {:?} exists in namespace {:?}",
                            spec.name, spec.namespace
                        ))
                    })?;
            }
            t.groups.insert(
                id,
                Group {
                    strategy: ray_common::resources::strategy_from_proto(spec.strategy),
                    spec,
                    bundles,
                    state: GroupState::Pending,
                    nodes: Vec::new(),
                    pending_reason: "not placed yet".into(),
                },
            );
        }
        let me = self.clone();
        tokio::spawn(async move { me.place_group(id).await });
        Ok(())
    }

    /// Places group `id` until it is created or removed: a placement over the view, then
    /// every node's reservation; a node that refuses (the view was behind) gives back what
    /// the others reserved, and the group waits for the view to move.
    async fn place_group(&self, id: PlacementGroupId) {
        loop {
            let changed = self.inner.view_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let placed = {
                let t = self.inner.groups.table.lock();
                let Some(g) = t.groups.get(&id).filter(|g| g.state == GroupState::Pending) else {
                    return;
                };
                let state = self.inner.state.lock();
                ray_scheduler::place_bundles(&state.view, &g.bundles, g.strategy)
                    .map(|nodes| (nodes, g.bundles.clone()))
                    .map_err(|why| (why.is_infeasible(), why.to_string()))
            };
            let outcome = match placed {
                Ok((nodes, bundles)) => self
                    .reserve_group(id, &nodes, &bundles)
                    .await
                    .map_err(|why| (false, why)),
                Err(why) => Err(why),
            };
            match outcome {
                Ok(()) => return,
                Err((never, why)) => {
                    let mut t = self.inner.groups.table.lock();
                    match t.groups.get_mut(&id) {
                        Some(g) if g.state == GroupState::Pending => {
                            if g.pending_reason != why && never {
                                tracing::warn!(group = %id, "a placement group waits: no set of alive nodes can hold it ({why})");
                            } else if g.pending_reason != why {
                                tracing::info!(group = %id, %why, "placement group waits");
                            }
                            g.pending_reason = why;
                        }
                        _ => return,
                    }
                }
            }
            let _ = self
                .inner
                .connect
                .clock()
                .timeout(PLACE_POLL, changed)
                .await;
        }
    }

    /// Reserves the bundles of group `id` on the nodes placed (`nodes[i]` for bundle `i`),
    /// all or none; marks the group created, or gives back what was reserved.
    async fn reserve_group(
        &self,
        id: PlacementGroupId,
        nodes: &[ray_scheduler::NodeId],
        bundles: &[ResourceSet],
    ) -> Result<(), String> {
        let mut per_node: HashMap<usize, Vec<BundleReservation>> = HashMap::new();
        let wanted = nodes.iter().collect::<std::collections::HashSet<_>>().len();
        for (i, (node, shape)) in nodes.iter().zip(bundles).enumerate() {
            per_node
                .entry(node.0 as usize)
                .or_default()
                .push(BundleReservation {
                    index: i as u32,
                    shape: Some(ray_common::resources::to_resources(shape)),
                });
        }
        let addresses: HashMap<usize, String> = {
            let state = self.inner.state.lock();
            per_node
                .keys()
                .filter_map(|&i| {
                    state
                        .nodes
                        .get(i)
                        .filter(|n| n.alive)
                        .map(|n| (i, n.node_manager_address.clone()))
                })
                .collect()
        };
        let mut calls = tokio::task::JoinSet::new();
        for (node, reservations) in per_node {
            let Some(address) = addresses.get(&node).cloned() else {
                continue;
            };
            let nm = self.node_manager(&address);
            let req = ReserveBundlesRequest {
                group_id: id.to_vec().into(),
                bundles: reservations,
            };
            calls.spawn(async move {
                let outcome = match nm {
                    Ok(nm) => match nm.reserve_bundles(req.clone()).await {
                        Ok(reply) if reply.reserved => Ok(()),
                        Ok(reply) => Err(reply.reason),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                (node, address, req, outcome)
            });
        }
        let mut reserved = Vec::new();
        let mut refused = None;
        while let Some(joined) = calls.join_next().await {
            let Ok((node, address, req, outcome)) = joined else {
                continue;
            };
            match outcome {
                Ok(()) => reserved.push((node, address, req)),
                Err(why) => refused = Some(format!("node {address} refused a bundle: {why}")),
            }
        }
        // Every node asked, whatever it answered (a reservation may have been made though
        // its answer was lost): given back if the group is not created.
        let asked: Vec<String> = addresses.values().cloned().collect();
        if reserved.len() != wanted && refused.is_none() {
            refused = Some("a node of the placement left the cluster".into());
        }
        let created = refused.is_none() && {
            let mut t = self.inner.groups.table.lock();
            match t.groups.get_mut(&id) {
                Some(g)
                    if g.state == GroupState::Pending && {
                        // A node that died as it answered: not created (placed again).
                        let state = self.inner.state.lock();
                        nodes
                            .iter()
                            .all(|n| state.nodes.get(n.0 as usize).is_some_and(|i| i.alive))
                    } =>
                {
                    g.state = GroupState::Created;
                    g.nodes = nodes.iter().map(|n| n.0 as usize).collect();
                    g.pending_reason.clear();
                    let mut state = self.inner.state.lock();
                    for (node, _, req) in &reserved {
                        self.add_bundles_to_view(&mut state, *node, id, &req.bundles, true);
                    }
                    self.view_moved(&mut state);
                    true
                }
                // Removed while it was being reserved: give everything back.
                _ => false,
            }
        };
        if created {
            tracing::info!(group = %id, bundles = bundles.len(), "placement group created");
            self.inner.groups.changed.notify_waiters();
            return Ok(());
        }
        drop(reserved);
        for address in asked {
            self.release_on(&address, id).await;
        }
        Err(refused.unwrap_or_else(|| "removed".into()))
    }

    /// Mirrors a node's reservation (`add`) or release of bundles in the GCS's view, as the
    /// node itself accounts it, so that the group's tasks find the node at once.
    fn add_bundles_to_view(
        &self,
        state: &mut crate::State,
        node: usize,
        id: PlacementGroupId,
        bundles: &[BundleReservation],
        add: bool,
    ) {
        let Some(info) = state.nodes.get_mut(node) else {
            return;
        };
        let parse = |r: &Option<Resources>| {
            ray_common::resources::to_resource_set(r.clone()).unwrap_or_default()
        };
        let mut resources = NodeResources {
            total: parse(&info.total),
            available: parse(&info.available),
        };
        let name = id.to_hex();
        for b in bundles {
            let shape = parse(&b.shape);
            let renamed = ray_scheduler::bundles::bundle_resources(&name, b.index as usize, &shape);
            if add {
                resources.available.sub(&shape);
                resources.total.add(&renamed);
                resources.available.add(&renamed);
            } else {
                resources.unreserve_bundle(&shape, &renamed);
            }
        }
        info.total = Some(ray_common::resources::to_resources(&resources.total));
        info.available = Some(ray_common::resources::to_resources(&resources.available));
        let index = ray_scheduler::NodeId(node as u64);
        let _ = state.view.set_total(index, resources.total);
        let _ = state.view.set_available(index, resources.available);
    }

    async fn release_on(&self, address: &str, id: PlacementGroupId) {
        let req = ReleaseBundlesRequest {
            group_id: id.to_vec().into(),
        };
        match self.node_manager(address) {
            Ok(nm) => {
                if let Err(e) = nm.release_bundles(req).await {
                    tracing::warn!(group = %id, node = %address, error = %e, "a node did not give a placement group's bundles back");
                }
            }
            Err(e) => {
                tracing::warn!(group = %id, node = %address, error = %e, "cannot reach a node to give bundles back")
            }
        }
    }

    /// Removes group `id`: its actors die, its bundles are given back on every node (whose
    /// node managers kill the workers leased in them; after the answer). Removing a group
    /// twice, or one still pending, is fine.
    pub(crate) fn remove_group(&self, id: PlacementGroupId) -> Result<(), GcsError> {
        let release: PerNode = {
            let mut t = self.inner.groups.table.lock();
            let g = t
                .groups
                .get_mut(&id)
                .ok_or_else(|| GcsError::NotFound(format!("no placement group {id}")))?;
            if g.state == GroupState::Removed {
                return Ok(());
            }
            let release = if g.state == GroupState::Created {
                g.per_node()
            } else {
                Vec::new()
            };
            g.state = GroupState::Removed;
            g.pending_reason.clear();
            release
        };
        self.inner.groups.changed.notify_waiters();
        tracing::info!(group = %id, "placement group removed");
        // Its actors die for good first (their deaths are not failures to restart from);
        // the nodes give the bundles back after the answer, as Ray's removal does.
        for actor in self.actors_in_group(&id.to_vec()) {
            self.kill(&actor, true, "its placement group was removed");
        }
        let me = self.clone();
        tokio::spawn(async move { me.release_group(id, &release).await });
        Ok(())
    }

    /// Gives group `id`'s bundles back (`release`, as they were reserved): out of the view
    /// at once, then on every alive node that holds some.
    async fn release_group(&self, id: PlacementGroupId, release: &PerNode) {
        let addresses: Vec<String> = {
            let mut state = self.inner.state.lock();
            let mut out = Vec::new();
            for (node, bundles) in release {
                if let Some(n) = state.nodes.get(*node).filter(|n| n.alive) {
                    out.push(n.node_manager_address.clone());
                }
                self.add_bundles_to_view(&mut state, *node, id, bundles, false);
            }
            self.view_moved(&mut state);
            out
        };
        for address in addresses {
            self.release_on(&address, id).await;
        }
    }

    /// Long poll: group `id` once it is no longer pending, or as it is after `wait`.
    pub(crate) async fn wait_group(
        &self,
        id: PlacementGroupId,
        wait: Duration,
    ) -> Result<PlacementGroupInfo, GcsError> {
        let clock = self.inner.connect.clock();
        let deadline = clock.now() + wait;
        loop {
            let changed = self.inner.groups.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let t = self.inner.groups.table.lock();
                let g = t
                    .groups
                    .get(&id)
                    .ok_or_else(|| GcsError::NotFound(format!("no placement group {id}")))?;
                if g.state != GroupState::Pending || clock.now() >= deadline {
                    return Ok(g.info(&self.inner.state.lock().nodes));
                }
            }
            let _ = clock.timeout_at(deadline, changed).await;
        }
    }

    /// Every group, in no particular order.
    pub(crate) fn group_table(&self) -> PlacementGroupTable {
        let t = self.inner.groups.table.lock();
        let state = self.inner.state.lock();
        PlacementGroupTable {
            groups: t.groups.values().map(|g| g.info(&state.nodes)).collect(),
        }
    }

    /// The group named `name` in `namespace` (not removed).
    pub(crate) fn named_group(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PlacementGroupInfo, GcsError> {
        let t = self.inner.groups.table.lock();
        t.names
            .lookup(namespace, name)
            .and_then(|id| PlacementGroupId::from_wire(id).ok())
            .and_then(|id| t.groups.get(&id))
            .filter(|g| g.state != GroupState::Removed)
            .map(|g| g.info(&self.inner.state.lock().nodes))
            .ok_or_else(|| {
                GcsError::NotFound(format!(
                    "no placement group named {name:?} in namespace {namespace:?}"
                ))
            })
    }

    /// Whether an actor of group `id` may be placed now: `Ok(true)` once the group is
    /// created, `Ok(false)` while it is pending, `Err` with the cause if it is removed or
    /// unknown.
    pub(crate) fn group_ready(&self, id: &[u8]) -> Result<bool, String> {
        let id = PlacementGroupId::from_wire(id).map_err(|e| e.to_string())?;
        let t = self.inner.groups.table.lock();
        match t.groups.get(&id).map(|g| g.state) {
            Some(GroupState::Created) => Ok(true),
            Some(GroupState::Pending) => Ok(false),
            Some(GroupState::Removed) => Err(format!("its placement group {id} was removed")),
            None => Err(format!("its placement group {id} does not exist")),
        }
    }

    /// A job's driver left: its groups are removed, except detached ones.
    pub(crate) fn remove_groups_of_job(&self, job_id: u32) {
        let ending: Vec<PlacementGroupId> = {
            let t = self.inner.groups.table.lock();
            t.groups
                .iter()
                .filter(|(_, g)| {
                    g.spec.job_id == job_id && !g.spec.detached && g.state != GroupState::Removed
                })
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ending {
            let _ = self.remove_group(id);
        }
    }

    /// Node `node` (its index in the node table) died: every group with a bundle there
    /// gives back its other bundles (what runs in them is killed) and is placed again, whole.
    pub(crate) fn groups_lost_with_node(&self, node: usize) {
        let lost: Vec<(PlacementGroupId, PerNode)> = {
            let mut t = self.inner.groups.table.lock();
            t.groups
                .iter_mut()
                .filter(|(_, g)| g.state == GroupState::Created && g.nodes.contains(&node))
                .map(|(id, g)| {
                    let release = g.per_node();
                    g.state = GroupState::Pending;
                    g.pending_reason = "a node holding one of its bundles died".into();
                    g.nodes.clear();
                    (*id, release)
                })
                .collect()
        };
        for (id, release) in lost {
            tracing::warn!(group = %id, "a node of a placement group died; placing the group again");
            let me = self.clone();
            tokio::spawn(async move {
                me.release_group(id, &release).await;
                me.place_group(id).await;
            });
        }
    }
}
