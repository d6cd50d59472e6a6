//! The one way the runtime's processes open a gRPC channel to each other.

use ray_proto::auth::AttachToken;
use std::time::Duration;

/// A channel whose every request carries the session token.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// While a call is out (a long poll), the connection is pinged this often and dropped if a
/// ping goes unanswered for [`KEEPALIVE_TIMEOUT`]: a dead peer fails the call rather than
/// leave it waiting forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes a peer may send on one stream, and on one connection, before this end reads them.
pub(crate) const STREAM_WINDOW: u32 = 16 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 32 << 20;

/// A channel to `address` (`host:port`), attaching the session token `token`, Nagle off,
/// connecting within 10 s. Lazy: it connects on first use (and again after a drop), so it
/// must be made inside a tokio runtime.
pub fn channel(address: &str, token: &str) -> Result<AuthedChannel, String> {
    let endpoint = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .map_err(|e| format!("address {address}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        // HTTP/2's default 64 KiB window holds a stream to a window per round trip: an
        // object pulled in 4 MiB chunks needs room for a few chunks in flight.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    with_token(endpoint.connect_lazy(), token)
}

/// `channel` with the session token `token` attached to every request.
pub(crate) fn with_token(
    channel: tonic::transport::Channel,
    token: &str,
) -> Result<AuthedChannel, String> {
    let attach = AttachToken::new(token).map_err(|s| s.message().to_string())?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel, attach,
    ))
}
