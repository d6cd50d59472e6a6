//! Starting the runtime's gRPC servers (GCS, node manager, core worker) on guarded listeners:
//! a cap on open connections, a deadline for a new connection's first bytes, keepalive pings
//! that close dead peers, and token refusals logged, with the peer, without flooding the log.
//! A connection that opens with [`BULK_MAGIC`] instead of HTTP/2's preface may be handed to
//! the server's owner as a plain byte stream (the object manager's bulk transfers).

use crate::Throttle;
use ray_proto::auth::CheckToken;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Status};

/// A new connection that has not sent its HTTP/2 preface within this long is closed (a real
/// client sends it at once).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Pings on a connection with no traffic this long; a peer that does not answer within
/// [`KEEPALIVE_TIMEOUT`] is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections one server keeps open at once: a quarter of this process's descriptor limit
/// (three servers share a driver), within [256, 65,536]. A worker's task socket holds to
/// the same cap.
pub fn max_connections() -> usize {
    let limit = crate::limits::fd_limit().map_or(1024, |fds| fds / 4);
    limit.clamp(256, 65_536) as usize
}

/// A fresh loopback port: where a server listens unless told an address.
pub const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The first bytes of a connection that asks for a plain byte stream instead of gRPC.
pub const BULK_MAGIC: &[u8; 8] = b"RAYRSBLK";

/// A connection that opened with [`BULK_MAGIC`] (left unread), handed to the server's owner
/// rather than to gRPC, and counted against the server's cap while it lives. Nothing about it
/// is authenticated yet: its reader checks the token it carries.
pub struct BulkConnection {
    /// The connection, Nagle off.
    pub stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Starts `routes` on `bind` (port 0: a free one). Returns the address it listens on and a
/// sender that stops it. Must be called inside a tokio runtime.
pub async fn serve(
    bind: SocketAddr,
    routes: Routes,
) -> std::io::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    serve_with_bulk(bind, routes, None).await
}

/// [`serve`], and connections that open with [`BULK_MAGIC`] go to `bulk` (without it, they
/// are closed).
pub async fn serve_with_bulk(
    bind: SocketAddr,
    routes: Routes,
    bulk: Option<mpsc::Sender<BulkConnection>>,
) -> std::io::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    // A deeper accept queue than the usual 128: hundreds of workers (or placements) may
    // connect in the same instant, and an overflowing queue resets connections.
    let socket = match bind {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A head restarted on its port must not wait for the old connections' TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    let listener = socket.listen(4096)?;
    let address = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (accepted, incoming) = mpsc::channel(64);
    tokio::spawn(accept(listener, accepted, bulk, max_connections()));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming);
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            // The windows the clients' channels use. Besides letting large messages stream,
            // the connection window sizes h2's budget for small DATA frames not yet read:
            // at the default (64 KiB) a burst of a few hundred small requests on one
            // connection (a driver asking after 10,000 new actors) made the server end the
            // connection as "excessive load" (ENHANCE_YOUR_CALM, too_many_data_frames).
            .initial_stream_window_size(Some(crate::rpc::channel::STREAM_WINDOW))
            .initial_connection_window_size(Some(crate::rpc::channel::CONNECTION_WINDOW))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((address, stop))
}

/// Accepts connections until the server stops, holding each to the cap and the handshake
/// deadline before the server sees it.
async fn accept(
    listener: tokio::net::TcpListener,
    accepted: mpsc::Sender<std::io::Result<Guarded>>,
    bulk: Option<mpsc::Sender<BulkConnection>>,
    cap: usize,
) {
    let permits = Arc::new(Semaphore::new(cap));
    let over_cap = Throttle::default();
    let silent = Arc::new(Throttle::default());
    loop {
        let stream = tokio::select! {
            _ = accepted.closed() => return, // The server stopped.
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            over_cap.warn(&format!(
                "refused a connection: {cap} connections are open (the server's cap)"
            ));
            continue;
        };
        // Nagle off: small replies must not wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let accepted = accepted.clone();
        let bulk = bulk.clone();
        let silent = silent.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_DEADLINE, preface(&stream)).await {
                Ok(Ok(Some(first))) if first.starts_with(BULK_MAGIC) => {
                    if let Some(bulk) = bulk {
                        let _ = bulk
                            .send(BulkConnection {
                                stream,
                                _permit: permit,
                            })
                            .await;
                    }
                }
                Ok(Ok(Some(_))) => {
                    let _ = accepted
                        .send(Ok(Guarded {
                            stream,
                            _permit: permit,
                        }))
                        .await;
                }
                Ok(_) => {} // Closed (or failed) before a byte: nothing to serve.
                Err(_) => {
                    silent.warn(&format!(
                        "closed a connection that sent nothing for {HANDSHAKE_DEADLINE:?}"
                    ));
                }
            }
        });
    }
}

/// Length of the HTTP/2 client preface, which every gRPC client sends first.
const PREFACE_LEN: usize = 24;

/// Waits until the peer has sent as many bytes as an HTTP/2 preface (left unread for the
/// server) and returns them; `None` if it closed first. A byte at a time does not hold a
/// connection open.
async fn preface(stream: &TcpStream) -> std::io::Result<Option<[u8; PREFACE_LEN]>> {
    let mut buf = [0u8; PREFACE_LEN];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if n >= PREFACE_LEN {
            return Ok(Some(buf));
        }
        // Part of it came: peek returns at once until more arrives, so wait a little.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An accepted connection, counted against the cap while it lives.
struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Wraps a token check so that refusals are logged with the peer's address (throttled).
pub fn logged(
    mut check: CheckToken,
) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone {
    let refusals = Arc::new(Throttle::default());
    move |req: Request<()>| {
        use tonic::service::Interceptor;
        let peer = req.remote_addr();
        check.call(req).inspect_err(|s| {
            let peer = peer.map_or_else(|| "an unknown peer".to_string(), |p| p.to_string());
            refusals.warn(&format!("refused a request from {peer}: {}", s.message()));
        })
    }
}
