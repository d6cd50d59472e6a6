//! Placement decisions for the Rust Ray runtime.
//!
//! This crate is pure: it does no I/O, owns no threads and reads no clock. The caller hands
//! it the cluster view, the request and a random source, and gets a decision back, so every
//! rule is testable exhaustively and a decision is cheap enough to sit on the task path.
//!
//! * [`resources`]: fixed-point resource sets ([`ResourceSet`]), a node's resources
//!   ([`NodeResources`]) and the [`Shortfall`] explaining why a request does not fit a node.
//! * [`cluster`]: the [`ClusterView`] of nodes (totals, availability, labels, liveness),
//!   updated by the caller as leases are granted and returned.
//! * [`policy`]: the task/actor policies (DEFAULT hybrid, SPREAD, node affinity, locality)
//!   behind [`Scheduler::schedule`].
//! * [`bundles`]: placement-group bundle placement ([`place_bundles`]).
//! * [`pending`]: [`Pending`], every "not now" with its reasons as data.
//!
//! ```
//! use rand::SeedableRng;
//! use ray_scheduler::*;
//!
//! let mut view = ClusterView::new();
//! view.add_node(NodeId(1), ResourceSet::cpus(4.0).unwrap()).unwrap();
//! let mut scheduler = Scheduler::default();
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let req = SchedulingRequest::new(ResourceSet::cpus(1.0).unwrap()).with_local_node(NodeId(1));
//! let node = scheduler.schedule(&view, &req, &mut rng).unwrap();
//! view.allocate(node, &req.resources).unwrap();
//!
//! let too_big = SchedulingRequest::new(ResourceSet::cpus(8.0).unwrap());
//! let why = scheduler.schedule(&view, &too_big, &mut rng).unwrap_err();
//! assert!(why.is_infeasible());
//! assert_eq!(why.resources[0].name, CPU);
//! ```

#![warn(missing_docs)]

pub mod bundles;
pub mod cluster;
pub mod pending;
pub mod policy;
pub mod resources;

pub use bundles::{place_bundles, PlacementStrategy};
pub use cluster::{ClusterView, NodeId, NodeState, ViewError};
pub use pending::{NodeShortfall, Pending, PendingKind, ResourceGap, Unschedulable};
pub use policy::{Scheduler, SchedulerConfig, SchedulingRequest, SchedulingStrategy};
pub use resources::{
    is_unit_instance_resource, NodeResources, ResourceError, ResourceSet, ResourceShortfall,
    Shortfall, ShortfallKind, CPU, GPU, MEMORY, OBJECT_STORE_MEMORY, PRECISION,
};
