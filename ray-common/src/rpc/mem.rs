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
    /// Byte-stream listeners (the data plane's task sockets), by name.
    listeners: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<MemStream>>>>,
}

/// A byte-stream listener of the in-memory network; its name is free again when it is
/// dropped, and connections to it fail from then on.
pub struct MemListener {
    network: MemNetwork,
    name: String,
    incoming: mpsc::UnboundedReceiver<MemStream>,
}

impl MemListener {
    /// The next connection; `None` never comes while the listener lives.
    pub async fn accept(&mut self) -> Option<MemStream> {
        self.incoming.recv().await
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        self.network.listeners.lock().remove(&self.name);
    }
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

    /// Listens for byte streams under `name` (unique in this network).
    pub fn listen(&self, name: &str) -> std::io::Result<MemListener> {
        let (tx, incoming) = mpsc::unbounded_channel();
        let mut listeners = self.listeners.lock();
        if listeners.contains_key(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{name} is taken"),
            ));
        }
        listeners.insert(name.to_string(), tx);
        Ok(MemListener {
            network: self.clone(),
            name: name.to_string(),
            incoming,
        })
    }

    /// A byte stream to the listener `name`; refused while nothing listens there.
    pub fn dial(&self, name: &str) -> std::io::Result<MemStream> {
        let refused = || {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("nothing listens at {name}"),
            )
        };
        let listener = self
            .listeners
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(refused)?;
        let (mine, theirs) = tokio::io::duplex(PIPE_BYTES);
        listener.send(MemStream(theirs)).map_err(|_| refused())?;
        Ok(MemStream(mine))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_dialed_stream_reaches_its_listener_until_the_listener_is_dropped() {
        let network = MemNetwork::default();
        let mut listener = network.listen("tasks").unwrap();
        assert!(network.listen("tasks").is_err(), "a name is taken once");
        let mut dialed = network.dial("tasks").unwrap();
        let mut accepted = listener.accept().await.unwrap();
        dialed.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        drop(listener);
        let refused = network.dial("tasks").err().expect("refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // A connection made before lives on its own.
        accepted.write_all(b"bye").await.unwrap();
        let mut got = [0u8; 3];
        dialed.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"bye");
    }
}
