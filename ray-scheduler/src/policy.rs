//! Task and actor placement policies: DEFAULT (hybrid), SPREAD, node affinity, locality.
//!
//! [`Scheduler::schedule`] reads a [`ClusterView`] and a [`SchedulingRequest`] and returns
//! the node to lease on, or a [`Pending`] saying why not now. It never mutates the view: the
//! caller allocates on the chosen node ([`ClusterView::allocate`]) when it grants the lease.
//! The only state the scheduler keeps is the SPREAD round-robin cursor and scratch buffers.
//! Randomness comes from the caller, so the same seed and the same view give the same
//! decisions.
//!
//! # DEFAULT (Ray's hybrid policy)
//!
//! Each alive node that can hold the request *now* gets a score: its critical utilization
//! (highest `1 - available/total` over CPU, memory, object store memory), or 0 while that is
//! below the spread threshold (0.5). The preferred node (the locality node, else the local
//! node) wins if it is available and its score is the lowest. Otherwise the candidates are
//! ordered by (score, node id) and one of the first `k = max(1, 20% of alive nodes)` is
//! picked uniformly at random. The effect: pack onto the local node up to half its
//! capacity, then spread over the least used nodes. A request without GPUs tries nodes
//! without GPUs first (Ray's `scheduler_avoid_gpu_nodes`).
//!
//! # SPREAD
//!
//! Round robin over the nodes in id order from a cursor, taking the first one that can hold
//! the request now.
//!
//! # Node affinity
//!
//! The named node if it is alive and its totals can hold the request (waiting there while
//! it is busy). If it is unknown, dead or infeasible: `soft` falls back to DEFAULT, hard
//! fails with [`PendingKind::Unschedulable`].
//!
//! # Locality
//!
//! With the DEFAULT strategy and locality hints (argument bytes per node), the alive node
//! holding the most bytes (ties: lowest id) becomes the preferred node, replacing the local
//! node. Explicit strategies ignore the hints. Actors pass no hints (Ray applies locality
//! to tasks only).

use std::collections::BTreeMap;

use rand::{Rng, RngCore};

use crate::cluster::{ClusterView, NodeId, NodeState};
use crate::pending::{NodeShortfall, Pending, Unschedulable};
use crate::resources::ResourceSet;

/// Where a task or actor may go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SchedulingStrategy {
    /// Ray's hybrid policy, with locality when hints are given.
    #[default]
    Default,
    /// Spread over the nodes, round robin.
    Spread,
    /// Run on `node`; if it is unknown, dead or infeasible, `soft` falls back to DEFAULT and
    /// hard fails. A task placed into a placement-group bundle is a hard affinity to the
    /// bundle's node.
    NodeAffinity {
        /// The node to run on.
        node: NodeId,
        /// Whether another node may be used when `node` cannot ever run the request.
        soft: bool,
    },
}

/// One placement request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulingRequest {
    /// The resource shape.
    pub resources: ResourceSet,
    /// The strategy.
    pub strategy: SchedulingStrategy,
    /// The node the request is submitted from (preferred by DEFAULT).
    pub local_node: Option<NodeId>,
    /// Bytes of the task's arguments held by each node (locality hints; tasks only).
    pub locality: Vec<(NodeId, u64)>,
    /// Hard label constraint: every `key = value` must be among the node's labels.
    pub label_selector: BTreeMap<String, String>,
}

impl SchedulingRequest {
    /// A DEFAULT request for `resources`, with no local node.
    pub fn new(resources: ResourceSet) -> Self {
        SchedulingRequest {
            resources,
            ..Default::default()
        }
    }

    /// Set the strategy.
    pub fn with_strategy(mut self, strategy: SchedulingStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Set the local node.
    pub fn with_local_node(mut self, node: NodeId) -> Self {
        self.local_node = Some(node);
        self
    }

    /// Set the locality hints.
    pub fn with_locality(mut self, locality: Vec<(NodeId, u64)>) -> Self {
        self.locality = locality;
        self
    }

    /// Set the label selector.
    pub fn with_label_selector(mut self, selector: BTreeMap<String, String>) -> Self {
        self.label_selector = selector;
        self
    }
}

/// Tunables of the policies, defaulting to Ray's values.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// `RAY_scheduler_spread_threshold`: below this utilization a node scores 0.
    pub spread_threshold: f64,
    /// `RAY_scheduler_top_k_fraction`: share of alive nodes among which DEFAULT picks.
    pub top_k_fraction: f64,
    /// `RAY_scheduler_top_k_absolute`: lower bound of that number.
    pub top_k_absolute: usize,
    /// `RAY_scheduler_avoid_gpu_nodes`: requests without GPU try GPU-less nodes first.
    pub avoid_gpu_nodes: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            spread_threshold: 0.5,
            top_k_fraction: 0.2,
            top_k_absolute: 1,
            avoid_gpu_nodes: true,
        }
    }
}

/// Makes placement decisions; see the module documentation for the rules.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    spread_cursor: usize,
    /// Scratch: (score, position) of the candidates, reused across decisions.
    cand: Vec<(f64, u32)>,
    cand_gpu: Vec<(f64, u32)>,
}

impl Scheduler {
    /// A scheduler with `config`.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            ..Default::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The number of candidates DEFAULT picks among on a view with `alive` nodes.
    pub fn top_k(&self, alive: usize) -> usize {
        let frac = (alive as f64 * self.config.top_k_fraction) as usize;
        frac.max(self.config.top_k_absolute).max(1)
    }

    /// Choose a node for `req`, or say why not now. Does not change `view`.
    pub fn schedule<R: RngCore + ?Sized>(
        &mut self,
        view: &ClusterView,
        req: &SchedulingRequest,
        rng: &mut R,
    ) -> Result<NodeId, Pending> {
        match &req.strategy {
            SchedulingStrategy::Default => {
                let preferred = locality_node(view, &req.locality).or(req.local_node);
                self.hybrid(view, req, preferred, rng)
            }
            SchedulingStrategy::Spread => self.spread(view, req),
            SchedulingStrategy::NodeAffinity { node, soft } => {
                let target = view.node(*node);
                let unusable = match target {
                    None => Some((Unschedulable::NodeUnknown(*node), None)),
                    Some(n) if !n.is_alive() => Some((Unschedulable::NodeDead(*node), None)),
                    Some(n) if !n.resources().is_feasible(&req.resources) => Some((
                        Unschedulable::NodeInfeasible(*node),
                        n.resources()
                            .shortfall(&req.resources)
                            .map(|shortfall| NodeShortfall {
                                node: *node,
                                shortfall,
                            }),
                    )),
                    Some(n) if !n.matches_labels(&req.label_selector) => {
                        Some((Unschedulable::NodeInfeasible(*node), None))
                    }
                    Some(_) => None,
                };
                match (unusable, target) {
                    (None, Some(n)) => {
                        if n.resources().is_available(&req.resources) {
                            Ok(*node)
                        } else {
                            Err(Pending::busy_on(n, &req.resources))
                        }
                    }
                    (Some(_), _) if *soft => self.hybrid(view, req, req.local_node, rng),
                    (Some((reason, detail)), _) => Err(Pending::unschedulable(reason, detail)),
                    (None, None) => Err(Pending::unschedulable(
                        Unschedulable::NodeUnknown(*node),
                        None,
                    )),
                }
            }
        }
    }

    fn hybrid<R: RngCore + ?Sized>(
        &mut self,
        view: &ClusterView,
        req: &SchedulingRequest,
        preferred: Option<NodeId>,
        rng: &mut R,
    ) -> Result<NodeId, Pending> {
        let res = &req.resources;
        let threshold = self.config.spread_threshold;
        let avoid_gpu = self.config.avoid_gpu_nodes && !res.has_gpu();
        let selector = &req.label_selector;
        let nodes = view.nodes();
        let preferred_pos = preferred.and_then(|p| view.position(p));

        // Fast path: an available preferred node below the threshold scores 0, which is
        // the lowest possible score, so it wins without looking at the other nodes.
        if let Some(pos) = preferred_pos {
            let n = &nodes[pos];
            if n.is_alive()
                && !(avoid_gpu && n.has_gpu())
                && n.utilization() < threshold
                && res.fits_in(&n.resources().available)
                && n.matches_labels(selector)
            {
                return Ok(n.id());
            }
        }

        self.cand.clear();
        self.cand_gpu.clear();
        for (pos, n) in nodes.iter().enumerate() {
            if !n.is_alive() || !res.fits_in(&n.resources().available) {
                continue;
            }
            if !selector.is_empty() && !n.matches_labels(selector) {
                continue;
            }
            let u = n.utilization();
            let score = if u < threshold { 0.0 } else { u };
            if avoid_gpu && n.has_gpu() {
                self.cand_gpu.push((score, pos as u32));
            } else {
                self.cand.push((score, pos as u32));
            }
        }
        let top_k = self.top_k(view.alive_count());
        let cand = if self.cand.is_empty() {
            &mut self.cand_gpu
        } else {
            &mut self.cand
        };
        if cand.is_empty() {
            return Err(Pending::explain(view, res, |n| n.matches_labels(selector)));
        }

        let min_score = cand.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
        if let Some(pos) = preferred_pos {
            if let Some(c) = cand.iter().find(|c| c.1 as usize == pos) {
                if c.0 <= min_score {
                    return Ok(nodes[pos].id());
                }
            }
        }
        let k = top_k.min(cand.len());
        let r = rng.random_range(0..k);
        let (_, chosen, _) =
            cand.select_nth_unstable_by(r, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Ok(nodes[chosen.1 as usize].id())
    }

    fn spread(&mut self, view: &ClusterView, req: &SchedulingRequest) -> Result<NodeId, Pending> {
        let nodes = view.nodes();
        let len = nodes.len();
        let selector = &req.label_selector;
        for i in 0..len {
            let pos = (self.spread_cursor + i) % len;
            let n = &nodes[pos];
            if n.is_alive()
                && req.resources.fits_in(&n.resources().available)
                && n.matches_labels(selector)
            {
                self.spread_cursor = (pos + 1) % len;
                return Ok(n.id());
            }
        }
        Err(Pending::explain(view, &req.resources, |n| {
            n.matches_labels(selector)
        }))
    }
}

/// The alive node holding the most argument bytes (ties: lowest id), if any holds some.
fn locality_node(view: &ClusterView, locality: &[(NodeId, u64)]) -> Option<NodeId> {
    let mut best: Option<(u64, NodeId)> = None;
    for &(node, bytes) in locality {
        if bytes == 0 || !view.node(node).is_some_and(NodeState::is_alive) {
            continue;
        }
        best = match best {
            Some((b, n)) if b > bytes || (b == bytes && n < node) => Some((b, n)),
            _ => Some((bytes, node)),
        };
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pending::{PendingKind, Unschedulable};
    use crate::resources::{CPU, GPU};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
        ResourceSet::from_pairs(pairs.iter().map(|(n, v)| (*n, *v))).unwrap()
    }

    fn cpus(n: f64) -> ResourceSet {
        ResourceSet::cpus(n).unwrap()
    }

    fn view_of(n: u64, total: &ResourceSet) -> ClusterView {
        let mut v = ClusterView::new();
        for i in 0..n {
            v.add_node(NodeId(i), total.clone()).unwrap();
        }
        v
    }

    /// Schedule and allocate.
    fn place(
        s: &mut Scheduler,
        v: &mut ClusterView,
        req: &SchedulingRequest,
        rng: &mut StdRng,
    ) -> NodeId {
        let n = s.schedule(v, req, rng).unwrap();
        v.allocate(n, &req.resources).unwrap();
        n
    }

    #[test]
    fn default_packs_local_node_to_threshold_then_spreads() {
        let mut v = view_of(10, &cpus(4.0));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(1);
        let req = SchedulingRequest::new(cpus(1.0)).with_local_node(NodeId(7));
        // Utilization 0 and 0.25 are below 0.5: the local node wins.
        assert_eq!(place(&mut s, &mut v, &req, &mut rng), NodeId(7));
        assert_eq!(place(&mut s, &mut v, &req, &mut rng), NodeId(7));
        // Now at 0.5 (not below the threshold): the others score 0 and win.
        let third = place(&mut s, &mut v, &req, &mut rng);
        assert_ne!(third, NodeId(7));
    }

    #[test]
    fn default_picks_among_top_k_lowest_by_score_then_id() {
        let v = view_of(10, &cpus(4.0));
        let mut s = Scheduler::default();
        assert_eq!(s.top_k(10), 2);
        assert_eq!(s.top_k(3), 1);
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let req = SchedulingRequest::new(cpus(1.0));
            seen.insert(s.schedule(&v, &req, &mut rng).unwrap());
        }
        // All nodes score 0: the two lowest ids are the top k.
        assert_eq!(seen, [NodeId(0), NodeId(1)].into());
    }

    #[test]
    fn default_prefers_least_utilized_above_threshold() {
        let mut v = view_of(5, &cpus(10.0));
        for (i, used) in [9.0, 6.0, 7.0, 8.0, 9.0].iter().enumerate() {
            v.allocate(NodeId(i as u64), &cpus(*used)).unwrap();
        }
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        // k = 1 on 5 nodes; the local node (0.9) is not the least used.
        let req = SchedulingRequest::new(cpus(1.0)).with_local_node(NodeId(0));
        for _ in 0..20 {
            assert_eq!(s.schedule(&v, &req, &mut rng).unwrap(), NodeId(1));
        }
    }

    #[test]
    fn default_avoids_gpu_nodes_for_cpu_tasks() {
        let mut v = ClusterView::new();
        v.add_node(NodeId(1), rs(&[(CPU, 4.0), (GPU, 1.0)]))
            .unwrap();
        v.add_node(NodeId(2), cpus(1.0)).unwrap();
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0)).with_local_node(NodeId(1));
        assert_eq!(place(&mut s, &mut v, &req, &mut rng), NodeId(2));
        // The GPU-less node is full: fall back to the GPU node.
        assert_eq!(place(&mut s, &mut v, &req, &mut rng), NodeId(1));
        // A GPU request goes to the GPU node.
        let g = SchedulingRequest::new(rs(&[(GPU, 1.0)]));
        assert_eq!(s.schedule(&v, &g, &mut rng).unwrap(), NodeId(1));
    }

    #[test]
    fn spread_goes_round_robin() {
        let v = view_of(4, &cpus(4.0));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0)).with_strategy(SchedulingStrategy::Spread);
        let got: Vec<u64> = (0..8)
            .map(|_| s.schedule(&v, &req, &mut rng).unwrap().0)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn spread_skips_full_and_dead_nodes() {
        let mut v = view_of(4, &cpus(1.0));
        v.allocate(NodeId(1), &cpus(1.0)).unwrap();
        v.mark_dead(NodeId(2));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0)).with_strategy(SchedulingStrategy::Spread);
        let got: Vec<u64> = (0..4)
            .map(|_| s.schedule(&v, &req, &mut rng).unwrap().0)
            .collect();
        assert_eq!(got, vec![0, 3, 0, 3]);
    }

    #[test]
    fn hard_affinity_fails_with_reason_soft_falls_back() {
        let mut v = view_of(3, &cpus(2.0));
        v.mark_dead(NodeId(1));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let aff = |node, soft| SchedulingStrategy::NodeAffinity {
            node: NodeId(node),
            soft,
        };

        let hard_dead = SchedulingRequest::new(cpus(1.0)).with_strategy(aff(1, false));
        let p = s.schedule(&v, &hard_dead, &mut rng).unwrap_err();
        assert_eq!(
            p.kind,
            PendingKind::Unschedulable(Unschedulable::NodeDead(NodeId(1)))
        );
        assert!(p.is_unschedulable());

        let hard_unknown = SchedulingRequest::new(cpus(1.0)).with_strategy(aff(9, false));
        let p = s.schedule(&v, &hard_unknown, &mut rng).unwrap_err();
        assert_eq!(
            p.kind,
            PendingKind::Unschedulable(Unschedulable::NodeUnknown(NodeId(9)))
        );

        let soft_dead = SchedulingRequest::new(cpus(1.0)).with_strategy(aff(1, true));
        let n = s.schedule(&v, &soft_dead, &mut rng).unwrap();
        assert_ne!(n, NodeId(1));

        let hard_infeasible = SchedulingRequest::new(cpus(3.0)).with_strategy(aff(0, false));
        let p = s.schedule(&v, &hard_infeasible, &mut rng).unwrap_err();
        assert_eq!(
            p.kind,
            PendingKind::Unschedulable(Unschedulable::NodeInfeasible(NodeId(0)))
        );
        assert_eq!(p.resources[0].name, CPU);
        assert_eq!(p.resources[0].missing(), 1.0);
        assert_eq!(p.nodes[0].node, NodeId(0));

        // Soft affinity to an infeasible node falls back, and here is infeasible everywhere.
        let soft_infeasible = SchedulingRequest::new(cpus(3.0)).with_strategy(aff(0, true));
        let p = s.schedule(&v, &soft_infeasible, &mut rng).unwrap_err();
        assert!(p.is_infeasible());

        // Alive, feasible, available: that node, even though others are idle.
        v.allocate(NodeId(2), &cpus(1.5)).unwrap();
        let hard_ok = SchedulingRequest::new(cpus(0.5)).with_strategy(aff(2, false));
        assert_eq!(s.schedule(&v, &hard_ok, &mut rng).unwrap(), NodeId(2));
        // Busy: waits for that node (soft too), naming it.
        for soft in [false, true] {
            let busy = SchedulingRequest::new(cpus(1.0)).with_strategy(aff(2, soft));
            let p = s.schedule(&v, &busy, &mut rng).unwrap_err();
            assert!(p.is_busy());
            assert_eq!(p.nodes[0].node, NodeId(2));
            assert_eq!(p.resources[0].missing(), 0.5);
        }
    }

    #[test]
    fn locality_prefers_node_with_most_argument_bytes() {
        let v = view_of(10, &cpus(4.0));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0))
            .with_local_node(NodeId(0))
            .with_locality(vec![(NodeId(4), 100), (NodeId(6), 5000), (NodeId(8), 5000)]);
        assert_eq!(s.schedule(&v, &req, &mut rng).unwrap(), NodeId(6));
        // An explicit strategy ignores the hints.
        let explicit = req.clone().with_strategy(SchedulingStrategy::NodeAffinity {
            node: NodeId(2),
            soft: false,
        });
        assert_eq!(s.schedule(&v, &explicit, &mut rng).unwrap(), NodeId(2));
        // Dead locality node: back to the local node.
        let mut v2 = v.clone();
        v2.mark_dead(NodeId(6));
        v2.mark_dead(NodeId(8));
        assert_eq!(s.schedule(&v2, &req, &mut rng).unwrap(), NodeId(4));
    }

    #[test]
    fn infeasible_request_names_resource_and_nodes() {
        let v = view_of(3, &cpus(4.0));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(rs(&[(CPU, 1.0), (GPU, 1.0)]));
        let p = s.schedule(&v, &req, &mut rng).unwrap_err();
        assert!(p.is_infeasible());
        assert_eq!(p.nodes_considered, 3);
        assert_eq!(p.feasible_nodes, 0);
        assert_eq!(p.resources.len(), 1);
        let g = &p.resources[0];
        assert_eq!(
            (g.name.as_str(), g.requested, g.best_total),
            (GPU, 1.0, 0.0)
        );
        assert_eq!((g.nodes_short, g.nodes_infeasible), (3, 3));
        assert_eq!(p.nodes.len(), 3);
        assert!(p.to_string().contains("infeasible"), "{p}");
    }

    #[test]
    fn busy_request_says_how_far_short() {
        let mut v = view_of(3, &cpus(4.0));
        for i in 0..3 {
            v.allocate(NodeId(i), &cpus(3.0 - i as f64 * 0.5)).unwrap();
        }
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(2.5));
        let p = s.schedule(&v, &req, &mut rng).unwrap_err();
        assert!(p.is_busy());
        assert_eq!(p.feasible_nodes, 3);
        let g = &p.resources[0];
        assert_eq!(g.best_available, 2.0);
        assert_eq!(g.missing(), 0.5);
        assert_eq!(g.nodes_short, 3);
        assert_eq!(g.nodes_infeasible, 0);
        let req_ok = SchedulingRequest::new(cpus(2.0));
        assert_eq!(s.schedule(&v, &req_ok, &mut rng).unwrap(), NodeId(2));
    }

    #[test]
    fn label_selector_is_a_hard_filter() {
        let mut v = view_of(4, &cpus(4.0));
        let sel: BTreeMap<String, String> = [("zone".to_string(), "b".to_string())].into();
        v.set_labels(NodeId(3), sel.clone()).unwrap();
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0))
            .with_local_node(NodeId(0))
            .with_label_selector(sel.clone());
        for _ in 0..10 {
            assert_eq!(s.schedule(&v, &req, &mut rng).unwrap(), NodeId(3));
        }
        v.allocate(NodeId(3), &cpus(4.0)).unwrap();
        let p = s.schedule(&v, &req, &mut rng).unwrap_err();
        assert!(p.is_busy());
        assert_eq!(p.nodes_considered, 1);
    }

    #[test]
    fn dead_nodes_are_never_chosen_and_empty_view_is_infeasible() {
        let mut v = view_of(3, &cpus(4.0));
        v.mark_dead(NodeId(0));
        v.mark_dead(NodeId(2));
        let mut s = Scheduler::default();
        let mut rng = StdRng::seed_from_u64(3);
        let req = SchedulingRequest::new(cpus(1.0)).with_local_node(NodeId(0));
        for _ in 0..10 {
            assert_eq!(s.schedule(&v, &req, &mut rng).unwrap(), NodeId(1));
        }
        let empty = ClusterView::new();
        let p = s.schedule(&empty, &req, &mut rng).unwrap_err();
        assert!(p.is_infeasible());
        assert_eq!(p.nodes_considered, 0);
    }

    #[test]
    fn same_seed_same_decisions() {
        let run = |seed| {
            let mut v = view_of(50, &cpus(8.0));
            let mut s = Scheduler::default();
            let mut rng = StdRng::seed_from_u64(seed);
            (0..300)
                .map(|i| {
                    let req = SchedulingRequest::new(cpus(1.0)).with_local_node(NodeId(i % 7));
                    s.schedule(&v, &req, &mut rng)
                        .inspect(|n| v.allocate(*n, &req.resources).unwrap())
                        .ok()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
