//! Shared support for the workspace's examples, integration tests and benchmarks.
//!
//! The runtime itself lives in the `ray-core` crate (imported here as `ray`); this package only
//! holds the programs that exercise it end to end.

pub use ray;
