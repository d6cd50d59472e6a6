//! How one process calls another: the session's channel builder, the client traits of the
//! GCS, the node manager and the core worker with their tonic implementations, the error
//! every call returns, and the filters a test installs to drop, delay or fail calls.
//!
//! A component is handed a [`Connect`] (or clients opened by one) when it is built; it never
//! opens a channel itself. Addresses are data (`host:port`); nothing here assumes loopback.

mod api;
mod channel;
mod error;
mod filter;
mod mem;
mod retry;
pub mod server;

pub use api::{
    CoreWorkerApi, GcsApi, NodeManagerApi, ReplyStream, TonicCoreWorker, TonicGcs,
    TonicNodeManager, CONTROL_DEADLINE,
};
pub use channel::{channel, AuthedChannel};
pub use error::{RpcError, RpcErrorKind};
pub use filter::{Call, Filter, FilterId, Filters, OnMethod, Partition, Service, Verdict};
pub use mem::{MemListener, MemNetwork, MemServer, MemStream};
pub use retry::with_retries;

use crate::Clock;
use api::Link;
use ray_proto::MAX_MESSAGE_BYTES;
use std::sync::Arc;

/// Opens clients to other processes by address. What a component is given instead of the
/// means to build channels, so a test can give it clients of its own making.
pub trait Connect: Send + Sync + 'static {
    /// The GCS at `address`.
    fn gcs(&self, address: &str) -> Result<Arc<dyn GcsApi>, RpcError>;
    /// The node manager at `address`.
    fn node_manager(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError>;
    /// The core worker at `address`.
    fn core_worker(&self, address: &str) -> Result<Arc<dyn CoreWorkerApi>, RpcError>;
    /// The filters its clients' calls pass, and the caller's label, for connections made
    /// outside gRPC (the data plane) to pass them too.
    fn filters(&self) -> Option<(Arc<Filters>, Arc<str>)> {
        None
    }
    /// The in-memory network its clients dial, if not TCP: byte streams made outside gRPC
    /// (the data plane's task connections) go over it too.
    fn network(&self) -> Option<MemNetwork> {
        None
    }
    /// The clock its clients' deadlines run on: the components built on this connector run
    /// their own deadlines and backoffs on it too (see [`crate::clock`]).
    fn clock(&self) -> Clock {
        Clock::Real
    }
}

/// Opens tonic clients with the session token, each over its own lazy channel (a caller that
/// calls one peer often keeps its client). Must be used inside a tokio runtime.
///
/// ```no_run
/// # async fn f() -> Result<(), ray_common::rpc::RpcError> {
/// use ray_common::rpc::{Connect, TonicConnect};
/// let connect = TonicConnect::new("session-token").labelled("driver");
/// let gcs = connect.gcs("127.0.0.1:6379")?;
/// let nodes = gcs.get_all_nodes(ray_proto::Empty {}).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TonicConnect {
    token: Arc<str>,
    from: Arc<str>,
    filters: Option<Arc<Filters>>,
    /// Dial over this in-memory network instead of TCP.
    network: Option<MemNetwork>,
    clock: Clock,
}

impl TonicConnect {
    /// Clients attaching `token` to every call.
    pub fn new(token: &str) -> Self {
        TonicConnect {
            token: token.into(),
            from: "".into(),
            filters: None,
            network: None,
            clock: Clock::Real,
        }
    }

    /// Clients over `network` instead of TCP (a test's simulated cluster).
    pub fn over(mut self, network: MemNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// Names the caller, as filters see it in [`Call::from`].
    pub fn labelled(mut self, from: &str) -> Self {
        self.from = from.into();
        self
    }

    /// Every call of every client opened from now passes `filters`.
    pub fn with_filters(mut self, filters: Arc<Filters>) -> Self {
        self.filters = Some(filters);
        self
    }

    /// Deadlines and filter delays run on `clock` (a test's [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn open(&self, address: &str) -> Result<(AuthedChannel, Link), RpcError> {
        let to: Arc<str> = address.into();
        let ch = match &self.network {
            None => channel(address, &self.token),
            Some(net) => channel::with_token(net.channel(address), &self.token),
        }
        .map_err(|e| RpcError::new(RpcErrorKind::InvalidArgument, "connect", &to, e))?;
        let link = Link {
            to,
            from: self.from.clone(),
            filters: self.filters.clone(),
            clock: self.clock.clone(),
        };
        Ok((ch, link))
    }
}

impl Connect for TonicConnect {
    fn gcs(&self, address: &str) -> Result<Arc<dyn GcsApi>, RpcError> {
        let (ch, link) = self.open(address)?;
        let client = ray_proto::gcs_client::GcsClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Arc::new(TonicGcs::new(client, link)))
    }

    fn node_manager(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError> {
        let (ch, link) = self.open(address)?;
        let client = ray_proto::node_manager_client::NodeManagerClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Arc::new(TonicNodeManager::new(client, link)))
    }

    fn core_worker(&self, address: &str) -> Result<Arc<dyn CoreWorkerApi>, RpcError> {
        let (ch, link) = self.open(address)?;
        let client = ray_proto::core_worker_client::CoreWorkerClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Arc::new(TonicCoreWorker::new(client, link)))
    }

    fn filters(&self) -> Option<(Arc<Filters>, Arc<str>)> {
        self.filters.clone().map(|f| (f, self.from.clone()))
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    fn network(&self) -> Option<MemNetwork> {
        self.network.clone()
    }
}
