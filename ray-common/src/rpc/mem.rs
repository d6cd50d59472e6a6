//! An in-memory network for tests: gRPC servers registered under an address and clients
//! connected to them over in-process pipes, so that the GCS, node managers and core workers
//! of a simulated cluster run in one process with no socket and no port. The services are
//! the real ones (tonic on both ends); only the bytes travel differently.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

/// Bytes a pipe buffers each way before the writer waits.
const PIPE_BYTES: usize = 1 << 20;

/// Servers by address, shared by every clone.
#[derive(Clone, Default)]
pub struct MemNetwork {
    servers: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<MemStream>>>>,
}

/// One end of a connection of the in-memory network.
pub struct MemStream(DuplexStream);

impl AsyncRead for MemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for MemStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// A server of the in-memory network; it stops serving (and its address is free again)
/// when this is dropped.
pub struct MemServer {
    network: MemNetwork,
    address: String,
    task: tokio::task::JoinHandle<()>,
}

impl MemServer {
    /// Where it serves.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for MemServer {
    fn drop(&mut self) {
        self.network.servers.lock().remove(&self.address);
        self.task.abort();
    }
}

impl MemNetwork {
    /// Serves `routes` at `address` (any name unique in this network) on the current tokio
    /// runtime.
    pub fn serve(&self, address: &str, routes: tonic::service::Routes) -> MemServer {
        let (tx, rx) = mpsc::unbounded_channel::<MemStream>();
        self.servers.lock().insert(address.to_string(), tx);
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            Ok::<_, std::io::Error>,
        );
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "an in-memory server failed");
            }
        });
        MemServer {
            network: self.clone(),
            address: address.to_string(),
            task,
        }
    }

    /// A lazy channel to the server at `address`: each connection attempt opens a pipe to
    /// it, and fails while nothing serves there.
    pub(crate) fn channel(&self, address: &str) -> tonic::transport::Channel {
        let network = self.clone();
        let address = address.to_string();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let server = network.servers.lock().get(&address).cloned();
            let address = address.clone();
            async move {
                let server = server.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        format!("nothing serves at {address}"),
                    )
                })?;
                let (client, served) = tokio::io::duplex(PIPE_BYTES);
                server.send(MemStream(served)).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        format!("the server at {address} stopped"),
                    )
                })?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        });
        tonic::transport::Endpoint::from_static("http://in-memory")
            .connect_with_connector_lazy(connector)
    }
}
