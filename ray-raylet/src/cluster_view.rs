//! This node's copy of the cluster's resource view, followed from the GCS (a long poll: the
//! new view as soon as it moves, the same one again every few seconds), and where a lease
//! request should run: here, on another node (spillback), or nowhere (infeasible). The
//! decision is `ray-scheduler`'s; nothing here asks the GCS per request.
//!
//! Invariant: a request that was spilled to this node (`grant_or_reject`) is never spilled
//! again, so a request moves at most once.

use crate::pool::NodeManager;
use ray_common::NodeId;
use ray_scheduler::{ClusterView, ResourceSet, Scheduler, SchedulingRequest, SchedulingStrategy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long the GCS may hold a view poll before answering with the view as it is.
const VIEW_POLL: Duration = Duration::from_secs(3);
/// Views are taken at most this often (changes in between arrive together, as Ray's syncer
/// batches them).
const VIEW_PERIOD: Duration = Duration::from_millis(100);
/// How long a request naming an unknown node waits for this node's view to catch up with
/// the GCS (a node that joined a moment ago) before it is refused.
const FRESH_NODE_WAIT: Duration = Duration::from_secs(1);
/// The pause after a failed poll.
const VIEW_RETRY: Duration = Duration::from_millis(500);

/// The scheduler's name for node `node` (its first 8 bytes: node ids are random).
pub fn scheduler_id(node: NodeId) -> ray_scheduler::NodeId {
    let bytes = node.to_vec();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    ray_scheduler::NodeId(u64::from_le_bytes(first))
}

/// Requests waiting here, by shape: for a node that can hold them (with the reason), or for
/// this node's resources in use to come free (busy). What this node reports as its demand.
#[derive(Default)]
pub(crate) struct Demands {
    by_shape: HashMap<(bool, String), (ResourceSet, u32, String)>,
}

impl Demands {
    /// The demands as the GCS takes them.
    pub(crate) fn to_proto(&self) -> Vec<ray_proto::Demand> {
        let mut out: Vec<ray_proto::Demand> = self
            .by_shape
            .iter()
            .map(|((busy, _), (shape, count, reason))| ray_proto::Demand {
                shape: Some(ray_common::resources::to_resources(shape)),
                count: *count,
                reason: reason.clone(),
                busy: *busy,
            })
            .collect();
        // A stable order: equal demands compare equal (no report sent for a reshuffle).
        out.sort_by_cached_key(|d| (d.busy, d.reason.clone(), format!("{:?}", d.shape)));
        out
    }
}

/// One request counted in [`Demands`] while it lives.
pub(crate) struct Waiting<'a> {
    node: &'a NodeManager,
    key: (bool, String),
}

impl<'a> Waiting<'a> {
    /// A request no alive node can hold, for `reason`.
    fn new(node: &'a NodeManager, shape: &ResourceSet, reason: &str) -> Self {
        Self::count(node, shape, false, reason)
    }

    /// A request that waits for this node's resources in use to come free.
    pub(crate) fn busy(node: &'a NodeManager, shape: &ResourceSet) -> Self {
        Self::count(node, shape, true, "")
    }

    fn count(node: &'a NodeManager, shape: &ResourceSet, busy: bool, reason: &str) -> Self {
        let key = (busy, format!("{:?}", shape.to_map()));
        node.inner
            .demands
            .lock()
            .by_shape
            .entry(key.clone())
            .and_modify(|(_, count, why)| {
                *count += 1;
                *why = reason.to_string();
            })
            .or_insert_with(|| (shape.clone(), 1, reason.to_string()));
        Waiting { node, key }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut demands = self.node.inner.demands.lock();
        if let Some((_, count, _)) = demands.by_shape.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                demands.by_shape.remove(&self.key);
            }
        }
    }
}

/// Where a lease request goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// This node grants it (or queues it until it can).
    Here,
    /// Another node should: its node manager's address and id.
    Spill {
        /// The node manager to ask.
        address: String,
        /// Its node.
        node_id: NodeId,
    },
    /// No node can hold it now: why. (A node that can may join.)
    Infeasible(String),
    /// It can never run: its hard affinity names a node that is dead or unknown, or one that
    /// cannot hold it.
    Unschedulable(String),
}

#[derive(Default)]
pub(crate) struct ClusterState {
    view: ClusterView,
    scheduler: Scheduler,
    /// Each node's node manager address and id.
    nodes: HashMap<ray_scheduler::NodeId, (String, NodeId)>,
    version: u64,
    /// When the GCS last answered a view poll (`None`: not yet).
    last_heard: Option<std::time::Instant>,
    /// The GCS declared this node dead: why.
    declared_dead: Option<String>,
    /// Other nodes seen dead (each has its leases here taken back once).
    dead: std::collections::HashSet<NodeId>,
}

impl ClusterState {
    /// Whether the GCS declared node `node` dead (as this node last heard).
    pub(crate) fn is_dead(&self, node: NodeId) -> bool {
        self.dead.contains(&node)
    }

    /// The node manager address of alive node `node`.
    pub(crate) fn address_of(&self, node: NodeId) -> Option<String> {
        let id = scheduler_id(node);
        let alive = self.view.node(id).is_some_and(|n| n.is_alive());
        self.nodes
            .get(&id)
            .filter(|(_, n)| *n == node && alive)
            .map(|(address, _)| address.clone())
    }

    /// Every alive node but `except`, with its node manager address.
    pub(crate) fn alive_nodes(&self, except: &[NodeId]) -> Vec<(NodeId, String)> {
        self.nodes
            .iter()
            .filter(|(id, (_, node))| {
                !except.contains(node) && self.view.node(**id).is_some_and(|n| n.is_alive())
            })
            .map(|(_, (address, node))| (*node, address.clone()))
            .collect()
    }
}

impl NodeManager {
    /// Follows the GCS's cluster view until the node manager shuts down. Call once, on the
    /// runtime that serves the node manager.
    pub fn follow_cluster_view(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let me = NodeManager { inner };
                if me.is_shutting_down() {
                    return;
                }
                let (Some(gcs), known) = (me.gcs(), me.inner.cluster.lock().version) else {
                    return;
                };
                let clock = me.inner.connect.clock();
                drop(me);
                let req = ray_proto::ClusterViewRequest {
                    known_version: known,
                    wait_ms: VIEW_POLL.as_millis() as u32,
                };
                // The GCS answers within VIEW_POLL; this deadline covers a GCS that does not.
                let answer = clock
                    .timeout(VIEW_POLL * 4, gcs.get_cluster_view(req))
                    .await;
                let pause = match answer {
                    Ok(Ok(view)) => {
                        let Some(inner) = weak.upgrade() else { return };
                        let me = NodeManager { inner };
                        me.inner.cluster.lock().last_heard = Some(clock.now());
                        me.apply_view(view.version, &view.nodes);
                        VIEW_PERIOD
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "reading the cluster view failed; again soon");
                        VIEW_RETRY
                    }
                    Err(_) => VIEW_RETRY,
                };
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Resolves when this node should end: the GCS declared it dead (a node it cannot reach
    /// is lost to the cluster, as in Ray, even if it runs), or the GCS has not answered for
    /// `grace` (the head is gone). Says which.
    pub async fn cut_off(&self, grace: Duration) -> String {
        let clock = self.inner.connect.clock();
        let started = clock.now();
        loop {
            {
                let cs = self.inner.cluster.lock();
                if let Some(reason) = &cs.declared_dead {
                    return format!("the GCS declared this node dead: {reason}");
                }
                let heard = cs.last_heard.unwrap_or(started);
                if clock.now().saturating_duration_since(heard) >= grace {
                    return format!("no answer from the GCS for {grace:?}");
                }
            }
            clock.sleep(VIEW_PERIOD * 2).await;
        }
    }

    /// Takes the GCS's view (version `version`): every node's totals, what it last reported
    /// free, whether it is alive. This node's own figures stay its own.
    pub fn apply_view(&self, version: u64, nodes: &[ray_proto::NodeInfo]) {
        let me = self.node_id();
        let mut cs = self.inner.cluster.lock();
        if version <= cs.version && version != 0 {
            return;
        }
        cs.version = version;
        let mut died = Vec::new();
        for n in nodes {
            let Ok(node_id) = NodeId::from_wire(&n.node_id) else {
                continue;
            };
            if node_id == me {
                if !n.alive && cs.declared_dead.is_none() {
                    cs.declared_dead = Some(n.death_reason.clone());
                }
                continue;
            }
            if !n.alive && cs.dead.insert(node_id) {
                died.push(node_id);
            }
            let id = scheduler_id(node_id);
            let (Ok(total), Ok(available)) = (
                ray_common::resources::to_resource_set(n.total.clone()),
                ray_common::resources::to_resource_set(n.available.clone()),
            ) else {
                continue;
            };
            let view = &mut cs.view;
            let updated = if view.node(id).is_some() {
                view.set_total(id, total)
                    .and_then(|_| view.set_available(id, available))
                    .map(|_| view.set_alive(id, n.alive))
            } else {
                view.add_node(id, total)
                    .and_then(|_| view.set_available(id, available))
                    .map(|_| view.set_alive(id, n.alive))
            };
            if let Err(e) = updated {
                tracing::debug!(node = %node_id, error = %e, "a node's view does not apply");
                continue;
            }
            cs.nodes
                .insert(id, (n.node_manager_address.clone(), node_id));
        }
        drop(cs);
        for node in died {
            self.drop_leases_of_dead_node(node);
        }
        self.inner.view_changed.notify_waiters();
    }

    /// [`NodeManager::place`], waiting (with a throttled warning) while no node can hold
    /// the request if this node's config says so, until a new cluster view makes it
    /// placeable or the node shuts down.
    pub async fn place_or_wait(
        &self,
        shape: &ResourceSet,
        strategy: &SchedulingStrategy,
        locality: &[(ray_scheduler::NodeId, u64)],
        grant_or_reject: bool,
    ) -> Placement {
        let asked = std::time::Instant::now();
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let changed = self.inner.view_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // A node named by id may have joined a moment ago: a view or two later, this node
            // knows it (soft affinity too would go elsewhere without waiting).
            if let SchedulingStrategy::NodeAffinity { node, .. } = strategy {
                let known = self.inner.cluster.lock().view.node(*node).is_some()
                    || *node == scheduler_id(self.node_id());
                if !known && !grant_or_reject && asked.elapsed() < FRESH_NODE_WAIT {
                    let _ = tokio::time::timeout(VIEW_PERIOD, changed).await;
                    continue;
                }
            }
            let placement = self.place(shape, strategy, locality, grant_or_reject);
            match &placement {
                Placement::Infeasible(why)
                    if self.inner.config.infeasible_waits && !self.is_shutting_down() =>
                {
                    self.inner.limit_warning.warn(&format!(
                        "a request for {:?} waits for a node that can hold it ({why})",
                        shape.to_map()
                    ));
                    // Listed (in reports, then `rayrs status`) while it waits.
                    if waiting.is_none() {
                        waiting = Some(Waiting::new(self, shape, why));
                    }
                    // A new view, or a look again now and then (shutdown, missed wakes).
                    let _ = tokio::time::timeout(VIEW_POLL, changed).await;
                }
                _ => return placement,
            }
        }
    }

    /// Where a lease request for `shape` under `strategy` should run (`locality`: bytes of
    /// its arguments per node, which the default strategy prefers). `grant_or_reject`: it
    /// was spilled (or placed) here already, so it stays.
    pub fn place(
        &self,
        shape: &ResourceSet,
        strategy: &SchedulingStrategy,
        locality: &[(ray_scheduler::NodeId, u64)],
        grant_or_reject: bool,
    ) -> Placement {
        if grant_or_reject {
            return Placement::Here;
        }
        let me_node = self.node_id();
        let me = scheduler_id(me_node);
        let (total, available) = self.resources();
        let mut cs = self.inner.cluster.lock();
        let others = cs.view.nodes().iter().any(|n| n.id() != me && n.is_alive());
        if !others && *strategy == SchedulingStrategy::Default {
            // A cluster of one: the pool decides, if it ever can.
            return match ray_scheduler::resources::never_fits(shape, &total) {
                None => Placement::Here,
                Some(why) => Placement::Infeasible(format!("infeasible: {why}")),
            };
        }
        let cs = &mut *cs;
        let own = if cs.view.node(me).is_some() {
            cs.view
                .set_total(me, total.clone())
                .and_then(|_| cs.view.set_available(me, available))
        } else {
            cs.view
                .add_node(me, total.clone())
                .and_then(|_| cs.view.set_available(me, available))
        };
        if own.is_err() {
            return Placement::Here;
        }
        let req = SchedulingRequest::new(shape.clone())
            .with_local_node(me)
            .with_strategy(strategy.clone())
            .with_locality(locality.to_vec());
        let chosen = match cs.scheduler.schedule(&cs.view, &req, &mut rand::rng()) {
            Ok(node) => node,
            Err(pending) if pending.is_busy() => {
                // Every node that could hold it is busy: wait here if this node could,
                // else on the first that could.
                if shape.fits_in(&total)
                    && !matches!(strategy, SchedulingStrategy::NodeAffinity { .. })
                {
                    me
                } else {
                    match pending.nodes.first().filter(|_| pending.feasible_nodes > 0) {
                        Some(busy) => busy.node,
                        None => return Placement::Infeasible(pending.to_string()),
                    }
                }
            }
            Err(pending) if pending.is_unschedulable() => {
                return Placement::Unschedulable(pending.to_string())
            }
            Err(pending) => return Placement::Infeasible(pending.to_string()),
        };
        if chosen == me {
            return Placement::Here;
        }
        match cs.nodes.get(&chosen) {
            Some((address, node_id)) => {
                // Counted as taken until that node's next report, so that the requests that
                // follow spread instead of piling onto it.
                let _ = cs.view.allocate(chosen, shape);
                Placement::Spill {
                    address: address.clone(),
                    node_id: *node_id,
                }
            }
            None => Placement::Here,
        }
    }
}
