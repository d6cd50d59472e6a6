//! What every process of the runtime shares: typed ids, how one process calls another
//! ([`rpc`]: client traits, tonic implementations, fault filters), resource sets on the wire,
//! and the process limits the servers and the worker pool size themselves by.
//!
//! Invariant: knows no globals and no particular process; depends only on the wire crate and
//! the two pure libraries (`ray-scheduler`, `ray-object-store`'s ids).

#![warn(missing_docs)]

pub mod clock;
pub mod ids;
pub mod limits;
pub mod resources;
pub mod rpc;
pub mod sha256;
mod throttle;

pub use clock::{Clock, ManualClock};
pub use ids::{
    ActorId, IdError, JobId, LeaseId, NodeId, ObjectId, PlacementGroupId, TaskId, WorkerId,
};
pub use throttle::Throttle;
