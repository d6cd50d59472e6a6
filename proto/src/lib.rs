//! Wire definitions of the runtime, generated from `proto/ray.proto` by tonic and prost.
//!
//! The control plane (GCS, node manager, core worker) is unary gRPC; the data plane pushes
//! [`TaskFrame`]s and takes [`ReplyFrame`]s over a persistent Unix socket per lease. This crate
//! holds only generated types and the size bound every decoder applies; it knows nothing of the
//! runtime built on it.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("ray.rpc");

/// Largest message any endpoint accepts, control or data plane. Larger payloads travel
/// through the shared-memory store, never inline.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Metadata key of the per-session token on every gRPC call.
pub const TOKEN_METADATA_KEY: &str = "authorization";

pub mod auth;
