//! The cluster view: every node's totals, availability, labels and liveness.
//!
//! The view is plain data that the caller keeps up to date (node joined, node died, lease
//! granted, lease returned, resource report received). Policies read it; only the caller
//! mutates it, through methods that keep `0 <= available <= total` on every node.
//!
//! Nodes are stored in a vector sorted by [`NodeId`], so iteration order, tie breaks and the
//! SPREAD round robin are deterministic, and a hash index finds a node by id in O(1).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::resources::{NodeResources, ResourceSet, Shortfall};

/// Identifies a node in the view.
///
/// A small `Copy` newtype over `u64`. The runtime assigns these (for instance a counter at
/// node registration, or the first eight bytes of Ray's 28-byte node id) and keeps the
/// mapping to its own ids; the scheduler only needs equality, hashing and a total order
/// (the order breaks ties between equally good nodes, as Ray does with its node ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// Errors of the view's mutating methods.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ViewError {
    /// No node with this id is in the view.
    #[error("{0} is not in the cluster view")]
    UnknownNode(NodeId),
    /// The node is dead: nothing can be allocated on it.
    #[error("{0} is dead")]
    DeadNode(NodeId),
    /// A node with this id is already in the view.
    #[error("{0} is already in the cluster view")]
    DuplicateNode(NodeId),
    /// The allocation does not fit what the node has free.
    #[error("{node} cannot allocate: {shortfall}")]
    Short {
        /// The node.
        node: NodeId,
        /// What is missing.
        shortfall: Shortfall,
    },
    /// Bundle placement and bundle list differ in length.
    #[error("{nodes} nodes given for {bundles} bundles")]
    LengthMismatch {
        /// Number of nodes given.
        nodes: usize,
        /// Number of bundles given.
        bundles: usize,
    },
}

/// One node as the view holds it.
#[derive(Clone, Debug)]
pub struct NodeState {
    id: NodeId,
    resources: NodeResources,
    labels: BTreeMap<String, String>,
    alive: bool,
    /// Cached `resources.total` has GPU.
    has_gpu: bool,
    /// Cached [`NodeResources::critical_utilization`], refreshed on every change.
    utilization: f64,
}

impl NodeState {
    fn new(id: NodeId, total: ResourceSet, labels: BTreeMap<String, String>) -> Self {
        let mut n = NodeState {
            id,
            has_gpu: total.has_gpu(),
            resources: NodeResources::new(total),
            labels,
            alive: true,
            utilization: 0.0,
        };
        n.refresh();
        n
    }

    fn refresh(&mut self) {
        self.has_gpu = self.resources.total.has_gpu();
        self.utilization = self.resources.critical_utilization();
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Totals and availability.
    pub fn resources(&self) -> &NodeResources {
        &self.resources
    }

    /// Labels (`ray.io/node-id`, `ray.io/accelerator-type`, user labels...).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Whether the node is alive (dead nodes stay in the view until removed, and are never
    /// chosen).
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Whether the node has any GPU in its totals.
    pub fn has_gpu(&self) -> bool {
        self.has_gpu
    }

    /// Ray's critical resource utilization of the node, in `[0, 1]`.
    pub fn utilization(&self) -> f64 {
        self.utilization
    }

    /// Whether every `key = value` of `selector` is among the node's labels.
    pub fn matches_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

/// Every node the scheduler may place work on.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Sorted by id.
    nodes: Vec<NodeState>,
    /// id -> position in `nodes`.
    index: HashMap<NodeId, usize>,
    alive: usize,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an alive node with all of `total` free.
    pub fn add_node(&mut self, id: NodeId, total: ResourceSet) -> Result<(), ViewError> {
        self.add_node_with_labels(id, total, BTreeMap::new())
    }

    /// Add an alive node with labels.
    pub fn add_node_with_labels(
        &mut self,
        id: NodeId,
        total: ResourceSet,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ViewError> {
        if self.index.contains_key(&id) {
            return Err(ViewError::DuplicateNode(id));
        }
        let pos = self.nodes.partition_point(|n| n.id < id);
        self.nodes.insert(pos, NodeState::new(id, total, labels));
        self.alive += 1;
        self.reindex_from(pos);
        Ok(())
    }

    /// Remove a node (alive or dead); returns its last resources.
    pub fn remove_node(&mut self, id: NodeId) -> Option<NodeResources> {
        let pos = self.index.remove(&id)?;
        let node = self.nodes.remove(pos);
        if node.alive {
            self.alive -= 1;
        }
        self.reindex_from(pos);
        Some(node.resources)
    }

    fn reindex_from(&mut self, pos: usize) {
        for (i, n) in self.nodes.iter().enumerate().skip(pos) {
            self.index.insert(n.id, i);
        }
    }

    /// Mark a node dead: it stays visible (so "why pending" can name it) but is never
    /// chosen and accepts no allocation. Returns false if the node is unknown.
    pub fn mark_dead(&mut self, id: NodeId) -> bool {
        self.set_alive(id, false)
    }

    /// Set a node's liveness. Returns false if the node is unknown.
    pub fn set_alive(&mut self, id: NodeId, alive: bool) -> bool {
        let Some(&pos) = self.index.get(&id) else {
            return false;
        };
        let node = &mut self.nodes[pos];
        if node.alive != alive {
            node.alive = alive;
            if alive {
                self.alive += 1;
            } else {
                self.alive -= 1;
            }
        }
        true
    }

    /// Replace a node's labels.
    pub fn set_labels(
        &mut self,
        id: NodeId,
        labels: BTreeMap<String, String>,
    ) -> Result<(), ViewError> {
        let pos = self.pos(id)?;
        self.nodes[pos].labels = labels;
        Ok(())
    }

    /// Change a node's totals, keeping what is in use: `available = new_total - used`,
    /// clamped to `[0, new_total]`.
    pub fn set_total(&mut self, id: NodeId, total: ResourceSet) -> Result<(), ViewError> {
        let pos = self.pos(id)?;
        let node = &mut self.nodes[pos];
        let mut used = node.resources.total.clone();
        used.sub(&node.resources.available);
        let mut available = total.clone();
        available.sub(&used);
        node.resources.total = total;
        node.resources.available = clamp_available(available, &node.resources.total);
        node.refresh();
        Ok(())
    }

    /// Overwrite a node's availability from a resource report, clamped to `[0, total]`.
    pub fn set_available(&mut self, id: NodeId, available: ResourceSet) -> Result<(), ViewError> {
        let pos = self.pos(id)?;
        let node = &mut self.nodes[pos];
        node.resources.available = clamp_available(available, &node.resources.total);
        node.refresh();
        Ok(())
    }

    /// Take `req` from a live node's available resources (a lease was granted), or leave
    /// the node unchanged and say why not.
    pub fn allocate(&mut self, id: NodeId, req: &ResourceSet) -> Result<(), ViewError> {
        let pos = self.pos(id)?;
        let node = &mut self.nodes[pos];
        if !node.alive {
            return Err(ViewError::DeadNode(id));
        }
        node.resources
            .try_allocate(req)
            .map_err(|shortfall| ViewError::Short {
                node: id,
                shortfall,
            })?;
        node.refresh();
        Ok(())
    }

    /// Return `req` to a node (a lease ended). Capped at the node's totals; allowed on a
    /// dead node (its bookkeeping is still kept).
    pub fn release(&mut self, id: NodeId, req: &ResourceSet) -> Result<(), ViewError> {
        let pos = self.pos(id)?;
        let node = &mut self.nodes[pos];
        node.resources.release(req);
        node.refresh();
        Ok(())
    }

    /// Allocate a whole placement: `bundles[i]` on `nodes[i]`, all or nothing. Nothing
    /// changes unless every node is alive and can hold the sum of its bundles.
    pub fn allocate_bundles(
        &mut self,
        nodes: &[NodeId],
        bundles: &[ResourceSet],
    ) -> Result<(), ViewError> {
        if nodes.len() != bundles.len() {
            return Err(ViewError::LengthMismatch {
                nodes: nodes.len(),
                bundles: bundles.len(),
            });
        }
        let mut per_node: BTreeMap<NodeId, ResourceSet> = BTreeMap::new();
        for (n, b) in nodes.iter().zip(bundles) {
            per_node.entry(*n).or_default().add(b);
        }
        for (n, sum) in &per_node {
            let node = &self.nodes[self.pos(*n)?];
            if !node.alive {
                return Err(ViewError::DeadNode(*n));
            }
            if let Some(shortfall) = node.resources.shortfall(sum) {
                return Err(ViewError::Short {
                    node: *n,
                    shortfall,
                });
            }
        }
        for (n, sum) in &per_node {
            let pos = self.pos(*n)?;
            let node = &mut self.nodes[pos];
            node.resources.available.sub(sum);
            node.refresh();
        }
        Ok(())
    }

    /// Return a placement's bundles (the inverse of [`ClusterView::allocate_bundles`]).
    pub fn release_bundles(
        &mut self,
        nodes: &[NodeId],
        bundles: &[ResourceSet],
    ) -> Result<(), ViewError> {
        if nodes.len() != bundles.len() {
            return Err(ViewError::LengthMismatch {
                nodes: nodes.len(),
                bundles: bundles.len(),
            });
        }
        for n in nodes {
            self.pos(*n)?;
        }
        for (n, b) in nodes.iter().zip(bundles) {
            self.release(*n, b)?;
        }
        Ok(())
    }

    fn pos(&self, id: NodeId) -> Result<usize, ViewError> {
        self.index
            .get(&id)
            .copied()
            .ok_or(ViewError::UnknownNode(id))
    }

    /// Position of a node in [`ClusterView::nodes`], if present.
    pub fn position(&self, id: NodeId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// A node by id.
    pub fn node(&self, id: NodeId) -> Option<&NodeState> {
        self.index.get(&id).map(|&p| &self.nodes[p])
    }

    /// All nodes, alive or dead, sorted by id.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// Number of nodes, alive or dead.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the view has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of alive nodes.
    pub fn alive_count(&self) -> usize {
        self.alive
    }

    /// Sum of the totals of alive nodes (`ray.cluster_resources()`).
    pub fn cluster_total(&self) -> ResourceSet {
        let mut sum = ResourceSet::new();
        for n in self.nodes.iter().filter(|n| n.alive) {
            sum.add(&n.resources.total);
        }
        sum
    }

    /// Sum of what alive nodes have free (`ray.available_resources()`).
    pub fn cluster_available(&self) -> ResourceSet {
        let mut sum = ResourceSet::new();
        for n in self.nodes.iter().filter(|n| n.alive) {
            sum.add(&n.resources.available);
        }
        sum
    }
}

fn clamp_available(mut available: ResourceSet, total: &ResourceSet) -> ResourceSet {
    available.clamp_to(total);
    available.clamp_nonnegative();
    available
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CPU, GPU};

    fn cpus(n: f64) -> ResourceSet {
        ResourceSet::cpus(n).unwrap()
    }

    #[test]
    fn nodes_are_kept_sorted_and_indexed() {
        let mut v = ClusterView::new();
        for id in [5, 1, 3] {
            v.add_node(NodeId(id), cpus(id as f64)).unwrap();
        }
        let ids: Vec<u64> = v.nodes().iter().map(|n| n.id().0).collect();
        assert_eq!(ids, vec![1, 3, 5]);
        assert_eq!(v.node(NodeId(3)).unwrap().resources().total.get(CPU), 3.0);
        assert_eq!(
            v.add_node(NodeId(3), cpus(1.0)),
            Err(ViewError::DuplicateNode(NodeId(3)))
        );
        assert!(v.remove_node(NodeId(1)).is_some());
        assert_eq!(v.position(NodeId(5)), Some(1));
        assert_eq!(v.alive_count(), 2);
        assert!(v.remove_node(NodeId(1)).is_none());
    }

    #[test]
    fn allocate_release_and_liveness() {
        let mut v = ClusterView::new();
        v.add_node(NodeId(1), cpus(2.0)).unwrap();
        v.allocate(NodeId(1), &cpus(1.5)).unwrap();
        assert_eq!(v.node(NodeId(1)).unwrap().utilization(), 0.75);
        let err = v.allocate(NodeId(1), &cpus(1.0)).unwrap_err();
        assert!(matches!(err, ViewError::Short { .. }), "{err}");
        assert_eq!(
            v.allocate(NodeId(9), &cpus(1.0)),
            Err(ViewError::UnknownNode(NodeId(9)))
        );
        assert!(v.mark_dead(NodeId(1)));
        assert_eq!(v.alive_count(), 0);
        assert_eq!(
            v.allocate(NodeId(1), &cpus(0.1)),
            Err(ViewError::DeadNode(NodeId(1)))
        );
        v.release(NodeId(1), &cpus(1.5)).unwrap();
        assert_eq!(
            v.node(NodeId(1)).unwrap().resources().available.get(CPU),
            2.0
        );
        assert!(v.cluster_total().is_empty(), "dead nodes do not count");
    }

    #[test]
    fn set_total_keeps_usage() {
        let mut v = ClusterView::new();
        v.add_node(NodeId(1), cpus(4.0)).unwrap();
        v.allocate(NodeId(1), &cpus(3.0)).unwrap();
        v.set_total(NodeId(1), cpus(8.0)).unwrap();
        assert_eq!(
            v.node(NodeId(1)).unwrap().resources().available.get(CPU),
            5.0
        );
        v.set_total(NodeId(1), cpus(2.0)).unwrap();
        assert_eq!(
            v.node(NodeId(1)).unwrap().resources().available.get(CPU),
            0.0
        );
        v.set_available(NodeId(1), cpus(10.0)).unwrap();
        assert_eq!(
            v.node(NodeId(1)).unwrap().resources().available.get(CPU),
            2.0
        );
    }

    #[test]
    fn bundles_allocate_all_or_nothing() {
        let mut v = ClusterView::new();
        v.add_node(NodeId(1), cpus(2.0)).unwrap();
        v.add_node(NodeId(2), cpus(1.0)).unwrap();
        let b = [cpus(1.0), cpus(1.0), cpus(1.0)];
        // Node 2 cannot hold two bundles: nothing is taken anywhere.
        let err = v
            .allocate_bundles(&[NodeId(1), NodeId(2), NodeId(2)], &b)
            .unwrap_err();
        assert!(matches!(
            err,
            ViewError::Short {
                node: NodeId(2),
                ..
            }
        ));
        assert_eq!(v.cluster_available(), cpus(3.0));
        v.allocate_bundles(&[NodeId(1), NodeId(1), NodeId(2)], &b)
            .unwrap();
        assert!(v.cluster_available().is_empty());
        v.release_bundles(&[NodeId(1), NodeId(1), NodeId(2)], &b)
            .unwrap();
        assert_eq!(v.cluster_available(), v.cluster_total());
    }

    #[test]
    fn labels_match_by_equality() {
        let mut v = ClusterView::new();
        let labels: BTreeMap<String, String> =
            [("ray.io/accelerator-type".to_string(), "A100".to_string())].into();
        v.add_node_with_labels(
            NodeId(1),
            ResourceSet::from_pairs([(GPU, 1.0)]).unwrap(),
            labels.clone(),
        )
        .unwrap();
        let n = v.node(NodeId(1)).unwrap();
        assert!(n.has_gpu());
        assert!(n.matches_labels(&labels));
        assert!(n.matches_labels(&BTreeMap::new()));
        let other: BTreeMap<String, String> =
            [("ray.io/accelerator-type".to_string(), "H100".to_string())].into();
        assert!(!n.matches_labels(&other));
    }
}
