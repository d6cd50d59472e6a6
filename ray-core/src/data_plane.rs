//! The owner's end of the data plane: a connection to a leased worker's (or an actor's) task
//! socket (an abstract Unix socket on the same node, TCP to another node, or a name on a
//! test's in-memory network), the token greeting, a writer that batches task frames, and a reader whose replies
//! and end come back as [`ConnEvent`]s to whoever opened the connection.
//!
//! It knows nothing of the submitter: events go to any channel whose messages can be made
//! from a [`ConnEvent`] (the submitter's `Event` wraps it).

use crate::error::{Error, Result};
use crate::frames::{encode_frame, read_frames, Flush, FrameSink, Socket, WriteHalf};
use parking_lot::Mutex;
use ray_common::rpc::{Call, Connect, Filters, MemNetwork, Service, Verdict};
use ray_common::{Clock, LeaseId};
use std::collections::HashSet;
use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Which connection an event is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum ConnId {
    /// The connection of a lease on a worker for normal tasks.
    Lease(LeaseId),
    /// A connection to an actor, numbered by the process that opened it.
    Actor(u64),
}

/// What a task connection reports to its opener.
// Replies are nearly every event: boxing the large variant would allocate once per task.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnEvent {
    /// A task's reply came.
    Reply {
        conn: ConnId,
        frame: ray_proto::ReplyFrame,
    },
    /// The connection ended (the worker died, or wrote garbage); why, in words.
    Closed { conn: ConnId, why: String },
}

/// How long a TCP connection to another node's task socket may take to open.
const TCP_CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Which of a worker's task sockets an owner on node `here` dials: the abstract Unix socket
/// on its own node, TCP to another (when the worker listens on TCP); `here` is `None` for
/// an owner on a machine that runs no node.
pub(crate) fn task_target<'a>(
    here: Option<ray_common::NodeId>,
    worker_node: &[u8],
    socket: &'a str,
    tcp: &'a str,
) -> &'a str {
    let same_node = match here {
        Some(here) => worker_node.is_empty() || worker_node == here.as_bytes(),
        // This process runs on no node of the cluster: every worker is on another machine.
        None => false,
    };
    if tcp.is_empty() || same_node {
        socket
    } else {
        tcp
    }
}

/// Where task frames for one connection go.
pub(crate) type FrameSender = FrameSink<ray_proto::TaskFrame>;

/// The write half of a task connection, made into the sink of its frames: a socket is
/// written by the sending thread itself when it can ([`FrameSink::direct`]), a test's
/// in-memory stream through a writer task.
pub(crate) trait IntoSink: Send + Sized + 'static {
    /// Writes `bytes` (the greeting, before any frame) and returns once they are written.
    fn greet<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a;

    fn into_sink<M: prost::Message + Send + 'static>(
        self,
        on_error: impl FnOnce(std::io::Error) + Send + 'static,
    ) -> FrameSink<M>;
}

impl IntoSink for WriteHalf {
    fn greet<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a {
        self.write_all(bytes)
    }

    fn into_sink<M: prost::Message + Send + 'static>(
        self,
        on_error: impl FnOnce(std::io::Error) + Send + 'static,
    ) -> FrameSink<M> {
        FrameSink::direct(self, on_error)
    }
}

impl IntoSink for tokio::io::WriteHalf<ray_common::rpc::MemStream> {
    fn greet<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a {
        self.write_all(bytes)
    }

    fn into_sink<M: prost::Message + Send + 'static>(
        self,
        on_error: impl FnOnce(std::io::Error) + Send + 'static,
    ) -> FrameSink<M> {
        FrameSink::queued(self, on_error)
    }
}

/// A stream to the task socket named `name` (an abstract Unix socket on this node).
pub(crate) fn connect_task_socket(name: &str) -> Result<Socket> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(Error::runtime)?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(Error::runtime)?;
    Ok(Socket::Unix(stream))
}

/// The filters a test installed, the label of the process whose connections pass them, and
/// the clock their delays run on.
type TestFilters = (Arc<Filters>, Arc<str>, Clock);

/// How this process opens task connections: over which network (abstract Unix sockets, or a
/// test's in-memory network), passing which filters. Chosen once, from the process's
/// connector; each connection is typed by its stream, so a frame costs no dynamic call.
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    network: Option<MemNetwork>,
    filters: Option<TestFilters>,
}

impl Dialer {
    /// Task connections the way `connect`'s clients go: over its network, passing its
    /// filters, their delays on its clock.
    pub fn new(connect: &dyn Connect) -> Dialer {
        Dialer {
            network: connect.network(),
            filters: connect
                .filters()
                .map(|(f, from)| (f, from, connect.clock())),
        }
    }

    /// Connects to the task socket `socket`, greets it with the session `token`, and starts
    /// the connection's writer and reader. Replies and the connection's end come back on
    /// `events`, tagged `conn`. With filters, each task frame passes them (see
    /// [`Service::DataPlane`]); without, nothing is checked per frame.
    pub async fn connect<E: From<ConnEvent> + Send + 'static>(
        &self,
        socket: &str,
        token: &str,
        conn: ConnId,
        events: mpsc::UnboundedSender<E>,
    ) -> Result<FrameSender> {
        let ends = Ends {
            socket,
            token,
            conn,
            filters: self.filters.clone(),
        };
        match &self.network {
            // Another node's worker: over TCP.
            None if socket.parse::<std::net::SocketAddr>().is_ok() => {
                let stream = tokio::time::timeout(
                    TCP_CONNECT_DEADLINE,
                    tokio::net::TcpStream::connect(socket),
                )
                .await
                .map_err(|_| {
                    Error::Runtime(format!(
                        "connecting to task socket {socket}: no answer within {TCP_CONNECT_DEADLINE:?}"
                    ))
                })?
                .map_err(|e| Error::Runtime(format!("connecting to task socket {socket}: {e}")))?;
                // Nagle off: small frames must not wait for a delayed ACK.
                let _ = stream.set_nodelay(true);
                let stream = stream.into_std().map_err(Error::runtime)?;
                let (read, write) = Socket::Tcp(stream).split().map_err(Error::runtime)?;
                start(read, write, ends, events).await
            }
            None => {
                let (read, write) = connect_task_socket(socket)?
                    .split()
                    .map_err(Error::runtime)?;
                start(read, write, ends, events).await
            }
            Some(network) => {
                let stream = network.dial(socket).map_err(Error::runtime)?;
                let (read, write) = tokio::io::split(stream);
                start(read, write, ends, events).await
            }
        }
    }
}

/// What a connection is to, and what its frames pass.
struct Ends<'a> {
    socket: &'a str,
    token: &'a str,
    conn: ConnId,
    filters: Option<TestFilters>,
}

/// Greets over `write` and starts the connection's writer and reader.
async fn start<E, R, W>(
    read: R,
    mut write: W,
    ends: Ends<'_>,
    events: mpsc::UnboundedSender<E>,
) -> Result<FrameSender>
where
    E: From<ConnEvent> + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
    W: IntoSink,
{
    let Ends {
        socket,
        token,
        conn,
        filters,
    } = ends;
    let mut hello = Vec::new();
    encode_frame(
        &ray_proto::Hello {
            token: token.to_string(),
        },
        &mut hello,
    );
    write.greet(&hello).await.map_err(Error::runtime)?;
    let writer_events = events.clone();
    let sink = write.into_sink(move |e| {
        let why = e.to_string();
        let _ = writer_events.send(ConnEvent::Closed { conn, why }.into());
    });
    let (tx, doomed) = match filters {
        None => (sink, None),
        Some(filters) => {
            let doomed = Arc::new(Mutex::new(HashSet::new()));
            let to: Arc<str> = socket.into();
            let tx = filtered(sink, filters, to, conn, events.clone(), doomed.clone());
            (tx, Some(doomed))
        }
    };
    tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 * 1024, read);
        let mut scratch = Vec::new();
        let read = read_frames(&mut r, &mut scratch, |frame: ray_proto::ReplyFrame| {
            if doomed.as_ref().is_some_and(|d| d.lock().remove(&frame.seq)) {
                let why = "a filter dropped the task's reply".to_string();
                let _ = events.send(ConnEvent::Closed { conn, why }.into());
                return false;
            }
            events.send(ConnEvent::Reply { conn, frame }.into()).is_ok()
        })
        .await;
        let why = match read {
            Ok(()) => "connection closed".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = events.send(ConnEvent::Closed { conn, why }.into());
    });
    Ok(tx)
}

/// Passes each task frame sent on the returned sender through `filters` on its way to
/// `sink`: delayed, sent with its reply doomed (`doomed` holds its sequence number), or,
/// dropped or failed, the end of the connection (reported on `events`), as a lost message
/// on a stream is.
fn filtered<E: From<ConnEvent> + Send + 'static>(
    sink: FrameSender,
    (filters, from, clock): TestFilters,
    to: Arc<str>,
    conn: ConnId,
    events: mpsc::UnboundedSender<E>,
    doomed: Arc<Mutex<HashSet<u64>>>,
) -> FrameSender {
    let (tx, mut frames) = mpsc::unbounded_channel::<ray_proto::TaskFrame>();
    tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            let call = Call {
                service: Service::DataPlane,
                method: "PushTask",
                from: &from,
                to: &to,
            };
            let why = match filters.verdict(&call) {
                Verdict::Pass => None,
                Verdict::Delay(d) => {
                    clock.sleep(d).await;
                    None
                }
                Verdict::DropResponse => {
                    doomed.lock().insert(frame.seq);
                    None
                }
                Verdict::DropRequest => Some("a filter dropped a task frame".to_string()),
                Verdict::Fail(kind, message) => Some(format!(
                    "a filter failed a task frame ({kind:?}): {message}"
                )),
            };
            if let Some(why) = why {
                let _ = events.send(ConnEvent::Closed { conn, why }.into());
                return; // Dropping the writer's queue closes the connection.
            }
            if sink.send(frame, Flush::Soon).is_err() {
                return;
            }
        }
    });
    FrameSink::Queued(tx)
}
