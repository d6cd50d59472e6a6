//! Why a request is not placed now: the answer to "why is this task pending".
//!
//! A [`Pending`] says whether the request is *infeasible* (no alive node's totals can ever
//! hold it: it waits for a new node), *busy* (some node could hold it; it waits for leases to
//! be returned) or *unschedulable* (a hard constraint can never be met, e.g. hard node
//! affinity to a dead node: the runtime fails the task). It names the resources short,
//! aggregated over the nodes considered ([`ResourceGap`]), and the shortfall on a few
//! individual nodes ([`NodeShortfall`]).

use std::fmt;

use crate::cluster::{ClusterView, NodeId, NodeState};
use crate::resources::{to_f64, ResourceSet, Shortfall, ShortfallKind};

/// At most this many per-node shortfalls are reported.
pub const MAX_NODE_DETAILS: usize = 8;

/// The class of a "not now".
#[derive(Clone, Debug, PartialEq)]
pub enum PendingKind {
    /// No alive node (among those the strategy allows) has totals that can hold the
    /// request. It can run only once such a node joins.
    Infeasible,
    /// At least one node could hold the request, none has it free now.
    Busy,
    /// A hard constraint can never be met; the runtime should fail the work
    /// (`TaskUnschedulableError` / `ActorUnschedulableError`).
    Unschedulable(Unschedulable),
}

/// Why a hard constraint cannot be met.
#[derive(Clone, Debug, PartialEq)]
pub enum Unschedulable {
    /// Hard node affinity to a node that is not in the view.
    NodeUnknown(NodeId),
    /// Hard node affinity to a dead node.
    NodeDead(NodeId),
    /// Hard node affinity to a node whose totals cannot hold the request.
    NodeInfeasible(NodeId),
    /// The placement group has no bundle.
    EmptyPlacementGroup,
}

/// How far one resource is from fitting, over the nodes considered.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceGap {
    /// Resource name.
    pub name: String,
    /// Amount requested.
    pub requested: f64,
    /// The most any considered node has free.
    pub best_available: f64,
    /// The largest total of any considered node.
    pub best_total: f64,
    /// Nodes that do not have enough free now.
    pub nodes_short: usize,
    /// Nodes whose total is below the request.
    pub nodes_infeasible: usize,
}

impl ResourceGap {
    /// How far the best node's free amount is below the request.
    pub fn missing(&self) -> f64 {
        (self.requested - self.best_available).max(0.0)
    }
}

/// The shortfall on one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeShortfall {
    /// The node.
    pub node: NodeId,
    /// What is missing there.
    pub shortfall: Shortfall,
}

/// A request that is not placed now, with its reasons as data.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Pending {
    /// Infeasible, busy or unschedulable.
    pub kind: PendingKind,
    /// Resources short, aggregated over the nodes considered (only those with a gap).
    pub resources: Vec<ResourceGap>,
    /// Shortfalls on up to [`MAX_NODE_DETAILS`] nodes, in node order (feasible nodes first
    /// when the request is busy).
    pub nodes: Vec<NodeShortfall>,
    /// Alive nodes the strategy allowed (after label and affinity filters).
    pub nodes_considered: usize,
    /// Of those, nodes whose totals can hold the request.
    pub feasible_nodes: usize,
    /// For a placement group: the bundle (index in the caller's list) that could not be
    /// placed.
    pub bundle: Option<usize>,
}

impl Pending {
    /// Whether waiting can help (busy, or infeasible until a node joins) as opposed to a
    /// hard failure.
    pub fn is_unschedulable(&self) -> bool {
        matches!(self.kind, PendingKind::Unschedulable(_))
    }

    /// Whether the request is infeasible on every node considered.
    pub fn is_infeasible(&self) -> bool {
        self.kind == PendingKind::Infeasible
    }

    /// Whether the request only waits for resources in use.
    pub fn is_busy(&self) -> bool {
        self.kind == PendingKind::Busy
    }

    fn describe(&self) -> String {
        let mut s = match &self.kind {
            PendingKind::Infeasible => format!(
                "infeasible: no node among {} can ever hold the request",
                self.nodes_considered
            ),
            PendingKind::Busy => format!(
                "waiting for resources: {} of {} nodes could hold the request, none has it free",
                self.feasible_nodes, self.nodes_considered
            ),
            PendingKind::Unschedulable(u) => format!("unschedulable: {u}"),
        };
        if let Some(b) = self.bundle {
            s.push_str(&format!(" (bundle {b})"));
        }
        for g in &self.resources {
            s.push_str(&format!(
                "; {}: requested {}, best node has {} free of {} (short {}), {} nodes short",
                g.name,
                g.requested,
                g.best_available,
                g.best_total,
                g.missing(),
                g.nodes_short
            ));
        }
        s
    }

    /// Build the reasons why `req` fits none of the nodes `consider` accepts.
    pub(crate) fn explain(
        view: &ClusterView,
        req: &ResourceSet,
        consider: impl Fn(&NodeState) -> bool,
    ) -> Pending {
        let names: Vec<(&str, i64)> = req.iter_fixed().filter(|(_, v)| *v > 0).collect();
        let mut best_avail = vec![i64::MIN; names.len()];
        let mut best_total = vec![i64::MIN; names.len()];
        let mut short = vec![0usize; names.len()];
        let mut infeasible = vec![0usize; names.len()];
        let mut considered = 0;
        let mut feasible = 0;
        let mut feasible_details = Vec::new();
        let mut infeasible_details = Vec::new();
        for node in view.nodes().iter().filter(|n| n.is_alive() && consider(n)) {
            considered += 1;
            let res = node.resources();
            let node_feasible = res.is_feasible(req);
            if node_feasible {
                feasible += 1;
            }
            for (i, (name, want)) in names.iter().enumerate() {
                let a = res.available.get_fixed(name).max(0);
                let t = res.total.get_fixed(name);
                best_avail[i] = best_avail[i].max(a);
                best_total[i] = best_total[i].max(t);
                if a < *want {
                    short[i] += 1;
                }
                if t < *want {
                    infeasible[i] += 1;
                }
            }
            let details = if node_feasible {
                &mut feasible_details
            } else {
                &mut infeasible_details
            };
            if details.len() < MAX_NODE_DETAILS {
                if let Some(shortfall) = res.shortfall(req) {
                    details.push(NodeShortfall {
                        node: node.id(),
                        shortfall,
                    });
                }
            }
        }
        let kind = if feasible > 0 {
            PendingKind::Busy
        } else {
            PendingKind::Infeasible
        };
        let resources = names
            .iter()
            .enumerate()
            .filter(|(i, _)| short[*i] > 0)
            .map(|(i, (name, want))| ResourceGap {
                name: (*name).to_owned(),
                requested: to_f64(*want),
                best_available: to_f64(best_avail[i].max(0)),
                best_total: to_f64(best_total[i].max(0)),
                nodes_short: short[i],
                nodes_infeasible: infeasible[i],
            })
            .collect();
        let mut nodes = feasible_details;
        nodes.extend(infeasible_details);
        nodes.truncate(MAX_NODE_DETAILS);
        Pending {
            kind,
            resources,
            nodes,
            nodes_considered: considered,
            feasible_nodes: feasible,
            bundle: None,
        }
    }

    /// A hard failure tied to one node, with that node's shortfall when known.
    pub(crate) fn unschedulable(reason: Unschedulable, detail: Option<NodeShortfall>) -> Pending {
        let resources = detail
            .as_ref()
            .map(|d| {
                d.shortfall
                    .resources
                    .iter()
                    .map(|r| ResourceGap {
                        name: r.name.clone(),
                        requested: r.requested,
                        best_available: r.available,
                        best_total: r.total,
                        nodes_short: 1,
                        nodes_infeasible: usize::from(r.is_infeasible()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Pending {
            kind: PendingKind::Unschedulable(reason),
            resources,
            nodes: detail.into_iter().collect(),
            nodes_considered: 0,
            feasible_nodes: 0,
            bundle: None,
        }
    }

    /// A busy wait on one node (node affinity to a feasible, busy node).
    pub(crate) fn busy_on(node: &NodeState, req: &ResourceSet) -> Pending {
        let shortfall = node.resources().shortfall(req).unwrap_or(Shortfall {
            kind: ShortfallKind::Busy,
            resources: Vec::new(),
        });
        let mut p = Pending::unschedulable(
            Unschedulable::NodeUnknown(node.id()),
            Some(NodeShortfall {
                node: node.id(),
                shortfall,
            }),
        );
        p.kind = PendingKind::Busy;
        p.nodes_considered = 1;
        p.feasible_nodes = 1;
        p
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unschedulable::NodeUnknown(n) => write!(f, "hard affinity to unknown {n}"),
            Unschedulable::NodeDead(n) => write!(f, "hard affinity to dead {n}"),
            Unschedulable::NodeInfeasible(n) => {
                write!(
                    f,
                    "hard affinity to {n}, whose totals cannot hold the request"
                )
            }
            Unschedulable::EmptyPlacementGroup => write!(f, "placement group has no bundle"),
        }
    }
}
