//! Placement decisions for the Rust Ray runtime.
//!
//! This crate is pure: it does no I/O, owns no threads and reads no clock. The caller hands
//! it the cluster view, the request and a random source, and gets a decision back.
//!
//! * [`resources`]: fixed-point resource sets ([`ResourceSet`]), node resources and the
//!   [`Shortfall`] that explains why a request does not fit.

pub mod resources;

pub use resources::{
    is_unit_instance_resource, NodeResources, ResourceError, ResourceSet, ResourceShortfall,
    Shortfall, ShortfallKind, CPU, GPU, MEMORY, OBJECT_STORE_MEMORY, PRECISION,
};
