//! Placement-group bundle placement: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD.
//!
//! [`place_bundles`] decides where every bundle of a placement group goes, all or nothing:
//! it returns one node per bundle (in the caller's order) or a [`Pending`] naming the bundle
//! that could not be placed. It does not change the view; the caller reserves the whole
//! placement with [`ClusterView::allocate_bundles`], which is itself all or nothing.
//!
//! Bundles are placed scarce-first, like Ray: more GPU first, then more of custom resources,
//! then object store memory, memory, CPU. Among nodes that can hold a bundle the one left
//! with the most headroom wins (Ray's "least resource" score: the mean over the requested
//! resources of `(available - requested) / available`); ties go to the lowest node id.
//!
//! * **STRICT_PACK**: the sum of all bundles on one node.
//! * **PACK**: the sum on one node if any can hold it; otherwise greedily fill the best node
//!   for the largest remaining bundle with every remaining bundle that still fits, then the
//!   next node (best effort: it is a bin-packing heuristic and may miss a packing).
//! * **SPREAD**: each bundle on a node not yet used by the group if possible, else on a
//!   used node that still has room.
//! * **STRICT_SPREAD**: each bundle on a distinct node. Greedy first; if that fails, an
//!   exact bipartite matching (augmenting paths), so a placement is found whenever one
//!   exists.
//!
//! Infeasible means no placement can exist on the alive nodes' totals (for PACK and SPREAD:
//! a bundle that no node's total can hold); otherwise the group is busy and waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cluster::{ClusterView, NodeId, NodeState};
use crate::pending::{Pending, PendingKind, Unschedulable};
use crate::resources::{ResourceSet, CPU_IDX, GPU_IDX, MEM_IDX, OBJ_IDX};

/// How a placement group's bundles are laid out over nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PlacementStrategy {
    /// Best effort: as few nodes as possible.
    #[default]
    Pack,
    /// Best effort: as many nodes as possible.
    Spread,
    /// All bundles on one node.
    StrictPack,
    /// Every bundle on a different node.
    StrictSpread,
}

/// Decide where every bundle goes; see the module documentation. Pure: the view is not
/// changed and the same inputs give the same answer.
pub fn place_bundles(
    view: &ClusterView,
    bundles: &[ResourceSet],
    strategy: PlacementStrategy,
) -> Result<Vec<NodeId>, Pending> {
    if bundles.is_empty() {
        return Err(Pending::unschedulable(
            Unschedulable::EmptyPlacementGroup,
            None,
        ));
    }
    let order = scarce_first(bundles);
    let mut placer = Placer::new(view);
    match strategy {
        PlacementStrategy::StrictPack => strict_pack(view, bundles),
        PlacementStrategy::Pack => {
            if let Ok(p) = strict_pack(view, bundles) {
                return Ok(p);
            }
            placer.pack(bundles, &order)
        }
        PlacementStrategy::Spread => placer.spread(bundles, &order),
        PlacementStrategy::StrictSpread => placer.strict_spread(bundles, &order),
    }
}

/// Bundle indices, scarce resources first (stable on ties).
fn scarce_first(bundles: &[ResourceSet]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bundles.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&bundles[a], &bundles[b]);
        let gpu = y.predefined[GPU_IDX].cmp(&x.predefined[GPU_IDX]);
        if gpu.is_ne() {
            return gpu;
        }
        // Custom resources, by name, larger amount first.
        let mut names: Vec<&str> = x
            .custom
            .iter()
            .chain(y.custom.iter())
            .map(|(n, _)| &**n)
            .collect();
        names.sort_unstable();
        names.dedup();
        for n in names {
            let c = y.get_fixed(n).cmp(&x.get_fixed(n));
            if c.is_ne() {
                return c;
            }
        }
        for i in [OBJ_IDX, MEM_IDX, CPU_IDX] {
            let c = y.predefined[i].cmp(&x.predefined[i]);
            if c.is_ne() {
                return c;
            }
        }
        std::cmp::Ordering::Equal
    });
    order
}

/// Ray's least-resource score of `req` on `avail`: mean over requested resources of the
/// share left free; `None` if it does not fit.
fn headroom(req: &ResourceSet, avail: &ResourceSet) -> Option<f64> {
    if !req.fits_in(avail) {
        return None;
    }
    let mut sum = 0.0;
    let mut count = 0u32;
    let mut add = |want: i64, have: i64| {
        if want > 0 {
            let a = have as f64;
            sum += (a - want as f64) / a;
            count += 1;
        }
    };
    for (want, have) in req.predefined.iter().zip(avail.predefined.iter()) {
        add(*want, *have);
    }
    for (name, want) in &req.custom {
        add(*want, avail.custom_fixed(name));
    }
    Some(if count == 0 {
        1.0
    } else {
        sum / f64::from(count)
    })
}

fn strict_pack(view: &ClusterView, bundles: &[ResourceSet]) -> Result<Vec<NodeId>, Pending> {
    let mut sum = ResourceSet::new();
    for b in bundles {
        sum.add(b);
    }
    let mut best: Option<(f64, NodeId)> = None;
    for n in view.nodes().iter().filter(|n| n.is_alive()) {
        if let Some(s) = headroom(&sum, &n.resources().available) {
            if best.is_none_or(|(bs, _)| s > bs) {
                best = Some((s, n.id()));
            }
        }
    }
    match best {
        Some((_, node)) => Ok(vec![node; bundles.len()]),
        None => Err(Pending::explain(view, &sum, |_| true)),
    }
}

/// Tentative placement state over the view: what this group has taken from each node.
struct Placer<'a> {
    view: &'a ClusterView,
    /// position -> resources taken by bundles placed so far.
    used: BTreeMap<usize, ResourceSet>,
    /// position -> whether `used` has an entry (a cheap test on the scan path).
    touched: Vec<bool>,
}

impl<'a> Placer<'a> {
    fn new(view: &'a ClusterView) -> Self {
        Placer {
            view,
            used: BTreeMap::new(),
            touched: vec![false; view.len()],
        }
    }

    /// Availability of the node at `pos` after this group's tentative bundles.
    fn headroom_at(&self, pos: usize, node: &NodeState, req: &ResourceSet) -> Option<f64> {
        match self.touched[pos].then(|| self.used.get(&pos)).flatten() {
            None => headroom(req, &node.resources().available),
            Some(used) => {
                let mut avail = node.resources().available.clone();
                avail.sub(used);
                headroom(req, &avail)
            }
        }
    }

    /// The best alive node for `req`, among nodes not yet used (`fresh`) or used ones.
    fn best(&self, req: &ResourceSet, fresh: bool, exclude: &[bool]) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for (pos, n) in self.view.nodes().iter().enumerate() {
            if !n.is_alive() || exclude.get(pos).copied().unwrap_or(false) {
                continue;
            }
            if fresh == self.touched[pos] {
                continue;
            }
            if let Some(s) = self.headroom_at(pos, n, req) {
                if best.is_none_or(|(bs, _)| s > bs) {
                    best = Some((s, pos));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    fn take(&mut self, pos: usize, req: &ResourceSet) {
        self.touched[pos] = true;
        self.used.entry(pos).or_default().add(req);
    }

    fn pack(&mut self, bundles: &[ResourceSet], order: &[usize]) -> Result<Vec<NodeId>, Pending> {
        let mut result: Vec<Option<usize>> = vec![None; bundles.len()];
        let mut remaining: Vec<usize> = order.to_vec();
        let mut closed = vec![false; self.view.len()];
        while let Some(&head) = remaining.first() {
            let Some(pos) = self.best(&bundles[head], true, &closed) else {
                return Err(self.failure(bundles, head));
            };
            closed[pos] = true;
            let node = &self.view.nodes()[pos];
            remaining.retain(|&b| {
                if self.headroom_at(pos, node, &bundles[b]).is_some() {
                    self.touched[pos] = true;
                    self.used.entry(pos).or_default().add(&bundles[b]);
                    result[b] = Some(pos);
                    false
                } else {
                    true
                }
            });
        }
        Ok(self.ids(&result))
    }

    fn spread(&mut self, bundles: &[ResourceSet], order: &[usize]) -> Result<Vec<NodeId>, Pending> {
        let mut result: Vec<Option<usize>> = vec![None; bundles.len()];
        for &b in order {
            let pos = self
                .best(&bundles[b], true, &[])
                .or_else(|| self.best(&bundles[b], false, &[]));
            let Some(pos) = pos else {
                return Err(self.failure(bundles, b));
            };
            self.take(pos, &bundles[b]);
            result[b] = Some(pos);
        }
        Ok(self.ids(&result))
    }

    fn strict_spread(
        &mut self,
        bundles: &[ResourceSet],
        order: &[usize],
    ) -> Result<Vec<NodeId>, Pending> {
        let mut result: Vec<Option<usize>> = vec![None; bundles.len()];
        let mut greedy_ok = true;
        for &b in order {
            match self.best(&bundles[b], true, &[]) {
                Some(pos) => {
                    self.take(pos, &bundles[b]);
                    result[b] = Some(pos);
                }
                None => {
                    greedy_ok = false;
                    break;
                }
            }
        }
        if greedy_ok {
            return Ok(self.ids(&result));
        }
        // Exact: a matching of bundles to distinct nodes on current availability.
        let nodes = self.view.nodes();
        let avail_match = matching(bundles, order, nodes, |b, n| {
            n.is_alive() && b.fits_in(&n.resources().available)
        });
        match avail_match {
            Ok(m) => Ok(m.iter().map(|&p| nodes[p].id()).collect()),
            Err(unmatched) => {
                let total_match = matching(bundles, order, nodes, |b, n| {
                    n.is_alive() && b.fits_in(&n.resources().total)
                });
                let mut p = Pending::explain(self.view, &bundles[unmatched], |_| true);
                p.bundle = Some(unmatched);
                p.kind = match total_match {
                    Ok(_) => PendingKind::Busy,
                    Err(_) => PendingKind::Infeasible,
                };
                Err(p)
            }
        }
    }

    fn ids(&self, result: &[Option<usize>]) -> Vec<NodeId> {
        result
            .iter()
            .map(|p| self.view.nodes()[p.unwrap_or_default()].id())
            .collect()
    }

    /// Reasons bundle `b` could not be placed, measured after the bundles placed so far.
    fn failure(&self, bundles: &[ResourceSet], b: usize) -> Pending {
        let mut tentative = self.view.clone();
        for (pos, used) in &self.used {
            let id = self.view.nodes()[*pos].id();
            // Cannot fail: `used` was checked against this node's availability.
            let _ = tentative.allocate(id, used);
        }
        let mut p = Pending::explain(&tentative, &bundles[b], |_| true);
        p.bundle = Some(b);
        p
    }
}

/// Maximum bipartite matching of bundles to distinct nodes (Kuhn's augmenting paths), in
/// `order`. Returns the node position of every bundle, or the first bundle left unmatched.
fn matching(
    bundles: &[ResourceSet],
    order: &[usize],
    nodes: &[NodeState],
    fits: impl Fn(&ResourceSet, &NodeState) -> bool,
) -> Result<Vec<usize>, usize> {
    // Adjacency, computed once.
    let adj: Vec<Vec<usize>> = bundles
        .iter()
        .map(|b| {
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| fits(b, n))
                .map(|(p, _)| p)
                .collect()
        })
        .collect();
    let mut node_of_bundle: Vec<Option<usize>> = vec![None; bundles.len()];
    let mut bundle_of_node: Vec<Option<usize>> = vec![None; nodes.len()];
    for &b in order {
        let mut seen = vec![false; nodes.len()];
        if !augment(b, &adj, &mut seen, &mut node_of_bundle, &mut bundle_of_node) {
            return Err(b);
        }
    }
    Ok(node_of_bundle.into_iter().map(|p| p.unwrap_or(0)).collect())
}

fn augment(
    b: usize,
    adj: &[Vec<usize>],
    seen: &mut [bool],
    node_of_bundle: &mut [Option<usize>],
    bundle_of_node: &mut [Option<usize>],
) -> bool {
    for &n in &adj[b] {
        if seen[n] {
            continue;
        }
        seen[n] = true;
        let free = match bundle_of_node[n] {
            None => true,
            Some(other) => augment(other, adj, seen, node_of_bundle, bundle_of_node),
        };
        if free {
            bundle_of_node[n] = Some(b);
            node_of_bundle[b] = Some(n);
            return true;
        }
    }
    false
}

/// How much of its group's `bundle_group_*` marker a reserved bundle adds to its node.
const BUNDLE_MARKER_TOTAL: i64 = 1000 * crate::resources::PRECISION;
/// How much of it every task in the group asks for, so that even a task asking for no
/// resources is held to the group's nodes (Ray's 0.001).
const BUNDLE_MARKER_TASK: i64 = crate::resources::PRECISION / 1000;

fn group_name(resource: &str, index: Option<usize>, group: &str) -> String {
    match index {
        Some(i) => format!("{resource}_group_{i}_{group}"),
        None => format!("{resource}_group_{group}"),
    }
}

/// The resources a reserved bundle adds to its node, under its group's names (as Ray names
/// them): every resource `R` of bundle `index` of group `group` twice, as `R_group_{index}_{group}`
/// (for tasks asking for that bundle) and `R_group_{group}` (for tasks asking for any bundle
/// of the group), plus a marker `bundle_group_{index}_{group}` / `bundle_group_{group}` of
/// 1000 that every task of the group asks 0.001 of.
///
/// ```
/// use ray_scheduler::{bundles::{bundle_resources, shape_in_bundle}, ResourceSet};
/// let bundle = ResourceSet::cpus(2.0).unwrap();
/// let node_gets = bundle_resources("pg1", 0, &bundle);
/// assert_eq!(node_gets.get("CPU_group_0_pg1"), 2.0);
/// assert_eq!(node_gets.get("CPU_group_pg1"), 2.0);
/// let task = shape_in_bundle("pg1", Some(0), &ResourceSet::cpus(1.0).unwrap());
/// assert!(task.fits_in(&node_gets));
/// assert_eq!(task.get("CPU"), 0.0);
/// ```
pub fn bundle_resources(group: &str, index: usize, bundle: &ResourceSet) -> ResourceSet {
    let mut out = ResourceSet::new();
    for (name, amount) in bundle.iter_fixed() {
        for which in [Some(index), None] {
            out.add_custom(&Arc::from(group_name(name, which, group)), amount);
        }
    }
    for which in [Some(index), None] {
        out.add_custom(
            &Arc::from(group_name("bundle", which, group)),
            BUNDLE_MARKER_TOTAL,
        );
    }
    out
}

/// The shape a task of `shape` asks for when it runs in bundle `index` of group `group`
/// (`None`: in any of its bundles): every resource under the group's name, plus 0.001 of the
/// bundle's marker. See [`bundle_resources`]. A task in a given bundle asks for the
/// group-wide names too (as in Ray): they count what the group uses on the node, so a task
/// in any bundle never takes what one in a given bundle holds.
pub fn shape_in_bundle(group: &str, index: Option<usize>, shape: &ResourceSet) -> ResourceSet {
    let mut out = ResourceSet::new();
    for (name, amount) in shape.iter_fixed() {
        out.add_custom(&Arc::from(group_name(name, index, group)), amount);
        if index.is_some() {
            out.add_custom(&Arc::from(group_name(name, None, group)), amount);
        }
    }
    out.add_custom(
        &Arc::from(group_name("bundle", index, group)),
        BUNDLE_MARKER_TASK,
    );
    out
}

/// The group (by the name [`bundle_resources`] was given) whose bundle `shape` asks for, if
/// it asks for one.
pub fn group_of(shape: &ResourceSet) -> Option<&str> {
    shape
        .custom
        .iter()
        .find_map(|(name, _)| name.strip_prefix("bundle_group_"))
        .map(|rest| rest.rsplit('_').next().unwrap_or(rest))
}

/// Whether `shape` (a task's, or what a lease holds) draws on a bundle of group `group`.
pub fn uses_group(shape: &ResourceSet, group: &str) -> bool {
    shape.custom.iter().any(|(name, _)| {
        name.strip_suffix(group)
            .is_some_and(|rest| rest.ends_with('_') && rest.contains("_group_"))
    })
}

/// How much of resource `resource` a shape asks for, in fixed-point units, counting what it
/// asks of a bundle under the group-wide name (`GPU` and `GPU_group_{group}`; a task in a
/// given bundle asks for that name too, besides the bundle's own): a lease in a bundle still
/// needs that many devices.
pub fn fixed_with_bundles(shape: &ResourceSet, resource: &str) -> i64 {
    let prefix = format!("{resource}_group_");
    shape.get_fixed(resource)
        + shape
            .custom
            .iter()
            .filter(|(name, _)| {
                // Group-wide names have no bundle index: `{resource}_group_{group}`, and a
                // group's name (hex) has no `_`.
                name.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('_'))
            })
            .map(|(_, v)| *v)
            .sum::<i64>()
}

/// `shape` with the group-wide names' `resource` parts only (what a blocked task in a bundle
/// lends, as a plain task lends its `CPU`): `{resource}_group_{group}` and, for a task in a
/// given bundle, `{resource}_group_{i}_{group}`.
pub fn group_parts(shape: &ResourceSet, resource: &str) -> ResourceSet {
    let prefix = format!("{resource}_group_");
    let mut out = ResourceSet::new();
    for (name, v) in &shape.custom {
        if name.starts_with(&prefix) {
            out.add_custom(name, *v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CPU, GPU, MEMORY};
    use std::collections::BTreeSet;

    fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
        ResourceSet::from_pairs(pairs.iter().map(|(n, v)| (*n, *v))).unwrap()
    }

    fn cpus(n: f64) -> ResourceSet {
        ResourceSet::cpus(n).unwrap()
    }

    fn view_of(totals: &[ResourceSet]) -> ClusterView {
        let mut v = ClusterView::new();
        for (i, t) in totals.iter().enumerate() {
            v.add_node(NodeId(i as u64), t.clone()).unwrap();
        }
        v
    }

    fn distinct(nodes: &[NodeId]) -> usize {
        nodes.iter().collect::<BTreeSet<_>>().len()
    }

    #[test]
    fn strict_pack_puts_all_on_one_node() {
        let v = view_of(&[cpus(2.0), cpus(8.0), cpus(4.0)]);
        let b = vec![cpus(1.0); 4];
        let p = place_bundles(&v, &b, PlacementStrategy::StrictPack).unwrap();
        assert_eq!(p, vec![NodeId(1); 4]);
        // Sum 10 > every total: infeasible.
        let big = vec![cpus(2.5); 4];
        let e = place_bundles(&v, &big, PlacementStrategy::StrictPack).unwrap_err();
        assert!(e.is_infeasible());
        assert_eq!(e.resources[0].best_total, 8.0);
        // Fits the totals but not what is free now: busy.
        let mut v2 = v.clone();
        v2.allocate(NodeId(1), &cpus(6.0)).unwrap();
        v2.allocate(NodeId(2), &cpus(1.0)).unwrap();
        let e = place_bundles(&v2, &b, PlacementStrategy::StrictPack).unwrap_err();
        assert!(e.is_busy());
    }

    #[test]
    fn strict_spread_uses_distinct_nodes_and_matches_exactly() {
        let v = view_of(&[cpus(4.0), cpus(4.0), cpus(4.0)]);
        let p = place_bundles(&v, &vec![cpus(1.0); 3], PlacementStrategy::StrictSpread).unwrap();
        assert_eq!(distinct(&p), 3);
        let e =
            place_bundles(&v, &vec![cpus(1.0); 4], PlacementStrategy::StrictSpread).unwrap_err();
        assert!(e.is_infeasible(), "4 bundles can never spread over 3 nodes");

        // Greedy puts the memory bundle on node 0 (more headroom), which the CPU bundle
        // needs; the matching fixes it.
        let v = view_of(&[
            rs(&[(CPU, 8.0), (MEMORY, 100.0)]),
            rs(&[(CPU, 1.0), (MEMORY, 1.0)]),
        ]);
        let b = vec![cpus(4.0), rs(&[(MEMORY, 1.0)])];
        let p = place_bundles(&v, &b, PlacementStrategy::StrictSpread).unwrap();
        assert_eq!(p, vec![NodeId(0), NodeId(1)]);

        // Busy when the nodes exist but one is full.
        let mut v2 = view_of(&[cpus(1.0), cpus(1.0)]);
        v2.allocate(NodeId(0), &cpus(1.0)).unwrap();
        let e =
            place_bundles(&v2, &vec![cpus(1.0); 2], PlacementStrategy::StrictSpread).unwrap_err();
        assert!(e.is_busy());
        assert!(e.bundle.is_some());
    }

    #[test]
    fn pack_prefers_one_node_then_few() {
        let v = view_of(&[cpus(4.0), cpus(4.0), cpus(4.0)]);
        let p = place_bundles(&v, &vec![cpus(1.0); 3], PlacementStrategy::Pack).unwrap();
        assert_eq!(distinct(&p), 1);
        let p = place_bundles(&v, &vec![cpus(1.0); 6], PlacementStrategy::Pack).unwrap();
        assert_eq!(distinct(&p), 2);
        let e = place_bundles(&v, &vec![cpus(1.0); 13], PlacementStrategy::Pack).unwrap_err();
        assert!(
            e.is_busy(),
            "each bundle fits a node; together they do not fit now"
        );
        assert!(e.bundle.is_some());
        assert_eq!(e.resources[0].best_available, 0.0);
    }

    #[test]
    fn spread_uses_as_many_nodes_as_possible() {
        let v = view_of(&[cpus(4.0), cpus(4.0), cpus(4.0)]);
        let p = place_bundles(&v, &vec![cpus(1.0); 3], PlacementStrategy::Spread).unwrap();
        assert_eq!(distinct(&p), 3);
        let p = place_bundles(&v, &vec![cpus(1.0); 5], PlacementStrategy::Spread).unwrap();
        assert_eq!(distinct(&p), 3);
        let e = place_bundles(&v, &[rs(&[(GPU, 1.0)])], PlacementStrategy::Spread).unwrap_err();
        assert!(e.is_infeasible());
        assert_eq!(e.bundle, Some(0));
    }

    #[test]
    fn scarce_bundles_are_placed_first_and_results_keep_caller_order() {
        let v = view_of(&[cpus(2.0), rs(&[(CPU, 2.0), (GPU, 1.0)])]);
        let b = vec![cpus(1.0), rs(&[(CPU, 1.0), (GPU, 1.0)])];
        assert_eq!(scarce_first(&b), vec![1, 0]);
        let p = place_bundles(&v, &b, PlacementStrategy::StrictSpread).unwrap();
        assert_eq!(p, vec![NodeId(0), NodeId(1)]);
    }

    #[test]
    fn dead_nodes_and_empty_groups() {
        let mut v = view_of(&[cpus(4.0), cpus(4.0)]);
        v.mark_dead(NodeId(0));
        let p = place_bundles(&v, &vec![cpus(1.0); 2], PlacementStrategy::Spread).unwrap();
        assert_eq!(p, vec![NodeId(1); 2]);
        let e = place_bundles(&v, &[], PlacementStrategy::Pack).unwrap_err();
        assert!(e.is_unschedulable());
    }

    #[test]
    fn placement_can_be_committed_all_or_nothing() {
        let mut v = view_of(&[cpus(2.0), cpus(2.0)]);
        let b = vec![cpus(1.0); 4];
        let p = place_bundles(&v, &b, PlacementStrategy::Pack).unwrap();
        v.allocate_bundles(&p, &b).unwrap();
        assert!(v.cluster_available().is_empty());
        assert!(place_bundles(&v, &[cpus(1.0)], PlacementStrategy::Pack).is_err());
        v.release_bundles(&p, &b).unwrap();
        assert_eq!(v.cluster_available(), v.cluster_total());
    }

    #[test]
    fn a_reserved_bundle_serves_only_its_groups_tasks_and_goes_back_whole() {
        use crate::NodeResources;
        let mut node = NodeResources::new(rs(&[(CPU, 4.0), (GPU, 1.0)]));
        let bundle = rs(&[(CPU, 2.0), (GPU, 1.0)]);
        let renamed = bundle_resources("g", 1, &bundle);
        node.reserve_bundle(&bundle, &renamed).unwrap();
        assert_eq!(node.available.get(CPU), 2.0);
        assert_eq!(node.available.get(GPU), 0.0);
        // A task of the group: in bundle 1, or in any bundle; not in bundle 0, not in
        // another group, and not more than the bundle holds.
        let one = cpus(1.0);
        assert!(node.is_available(&shape_in_bundle("g", Some(1), &one)));
        assert!(node.is_available(&shape_in_bundle("g", None, &one)));
        assert!(!node.is_feasible(&shape_in_bundle("g", Some(0), &one)));
        assert!(!node.is_feasible(&shape_in_bundle("h", None, &one)));
        assert!(!node.is_feasible(&shape_in_bundle("g", Some(1), &cpus(3.0))));
        // What a task in bundle 1 holds, a task in any bundle cannot take.
        let mut busy = node.clone();
        busy.try_allocate(&shape_in_bundle("g", Some(1), &cpus(2.0)))
            .unwrap();
        assert!(!busy.is_available(&shape_in_bundle("g", None, &one)));
        // A task asking for nothing is still held to the group's node.
        let nothing = shape_in_bundle("g", Some(1), &ResourceSet::new());
        assert!(!nothing.is_empty() && node.is_available(&nothing));
        let gpu_task = shape_in_bundle("g", None, &rs(&[(GPU, 1.0)]));
        assert_eq!(fixed_with_bundles(&gpu_task, GPU), crate::PRECISION);
        let in_bundle_1 = shape_in_bundle("g", Some(1), &rs(&[(GPU, 0.5)]));
        assert_eq!(fixed_with_bundles(&in_bundle_1, GPU), crate::PRECISION / 2);
        assert_eq!(group_parts(&in_bundle_1, GPU).iter().count(), 2);
        assert!(uses_group(&gpu_task, "g") && !uses_group(&gpu_task, "h"));
        assert!(!uses_group(&cpus(1.0), "g"));
        assert_eq!(group_of(&gpu_task), Some("g"));
        assert_eq!(group_of(&shape_in_bundle("g", Some(3), &one)), Some("g"));
        assert_eq!(group_of(&one), None);
        // A lease in the bundle, then the group removed: the node is as it was.
        let lease = shape_in_bundle("g", Some(1), &one);
        node.try_allocate(&lease).unwrap();
        node.unreserve_bundle(&bundle, &renamed);
        node.release(&lease);
        assert_eq!(node, NodeResources::new(rs(&[(CPU, 4.0), (GPU, 1.0)])));
        // A bundle that does not fit now changes nothing.
        let big = cpus(5.0);
        assert!(node
            .reserve_bundle(&big, &bundle_resources("g", 0, &big))
            .is_err());
        assert_eq!(node, NodeResources::new(rs(&[(CPU, 4.0), (GPU, 1.0)])));
    }
}
