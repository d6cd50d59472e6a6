//! The executing side of a core worker: task frames taken off the task socket, run one at a
//! time on the worker's task thread (where a blocking `ray::get` is allowed), the actor it
//! may host, and replies built from the results. While a task blocks, tasks pipelined behind
//! it are sent back to their owner so that nothing waits on a blocked worker.
//!
//! Knows no global: an [`Executor`] is built with the core worker's tables, and the task
//! context of each run is a call-scoped thread-local ([`crate::task_context`]).

use crate::data_plane::IntoSink;
use crate::error::{Error, Result};
use crate::frames::{read_frame, read_frames, Flush, FrameSink, Socket};
use crate::ids::{id16, ObjectId};
use crate::memory_store::Stored;
use crate::ownership::{
    collect_deserialized_refs, collect_serialized_refs, with_decoder, CollectingRefs, Ownership,
    RefInner, INLINE_MAX,
};
use crate::registry::{ActorInstance, ArgBytes, ArgReader, MethodCall};
use crate::submitter::PendingTask;
use crate::task_context::{self, Shape};
use crate::worker_output::OutputNamer;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Largest greeting accepted before the token is checked.
const HELLO_MAX: usize = 4096;
/// A new task connection that has not greeted with the token within this long is closed.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);

/// A task frame to run, and where its reply goes.
pub(crate) struct Job {
    frame: ray_proto::TaskFrame,
    reply: FrameSink<ray_proto::ReplyFrame>,
}

/// The task queue of a worker and whether its task is blocked.
pub(crate) struct TaskQueue {
    state: Mutex<QueueState>,
    rx: crossbeam_channel::Receiver<Job>,
    /// Which connections carry which hosted actor's calls.
    bindings: Bindings,
}

/// Closes a task connection at once, both ways, whoever still holds its halves (its caller
/// then sees it drop, as when a process dies).
type Closer = Box<dyn Fn() + Send + Sync>;

/// The actors a worker hosts, and the connections their calls came on: ending one actor
/// of a process that hosts several closes its callers' connections, which they take as
/// the actor's death (as if its process had died), and a connection that names an actor
/// not hosted here is closed at once.
#[derive(Default)]
struct Bindings {
    inner: Mutex<BindingsInner>,
}

#[derive(Default)]
struct BindingsInner {
    hosted: std::collections::HashSet<bytes::Bytes>,
    conns: HashMap<bytes::Bytes, Vec<(u64, Closer)>>,
    next: u64,
}

impl Bindings {
    fn hosting(&self, actor: bytes::Bytes) {
        self.inner.lock().hosted.insert(actor);
    }

    /// Binds connection `closer` to `actor`: its number (to unbind), or `None` if the
    /// actor is not hosted here (the connection is closed).
    fn bind(&self, actor: &bytes::Bytes, closer: Option<Closer>) -> Option<u64> {
        let mut inner = self.inner.lock();
        if !inner.hosted.contains(actor) {
            drop(inner);
            if let Some(close) = closer {
                close();
            }
            return None;
        }
        inner.next += 1;
        let n = inner.next;
        if let Some(closer) = closer {
            inner
                .conns
                .entry(actor.clone())
                .or_default()
                .push((n, closer));
        }
        Some(n)
    }

    fn unbind(&self, actor: &bytes::Bytes, n: u64) {
        let mut inner = self.inner.lock();
        if let Some(conns) = inner.conns.get_mut(actor) {
            conns.retain(|(m, _)| *m != n);
            if conns.is_empty() {
                inner.conns.remove(actor);
            }
        }
    }

    /// `actor` is hosted here no more: closes its connections.
    fn end(&self, actor: &[u8]) {
        let conns = {
            let mut inner = self.inner.lock();
            inner.hosted.remove(actor);
            inner.conns.remove(actor).unwrap_or_default()
        };
        for (_, close) in conns {
            close();
        }
    }
}

struct QueueState {
    blocked: bool,
    /// `None` once closed.
    tx: Option<crossbeam_channel::Sender<Job>>,
}

impl TaskQueue {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(TaskQueue {
            state: Mutex::new(QueueState {
                blocked: false,
                tx: Some(tx),
            }),
            rx,
            bindings: Bindings::default(),
        })
    }

    /// Takes a frame off a connection: queued, or sent straight back while blocked.
    fn offer(&self, job: Job) {
        let state = self.state.lock();
        match &state.tx {
            Some(_) if state.blocked && job.frame.actor_id.is_empty() => requeue(job),
            Some(tx) => {
                let _ = tx.send(job);
            }
            None => {} // Closed: the worker is going away, and its connections with it.
        }
    }

    /// How a reply to a call just finished is written: at once by the thread that ran it
    /// when nothing else is queued (its caller likely waits for it alone), else batched
    /// with the replies of what follows by the connection's flusher.
    fn flush(&self) -> Flush {
        match self.rx.is_empty() {
            true => Flush::Now,
            false => Flush::Soon,
        }
    }

    /// Takes no more tasks: [`Executor::run`] returns once the queued ones ran.
    pub fn close(&self) {
        self.state.lock().tx = None;
    }

    /// The worker's task blocked in `get` (what is queued behind it goes back to its
    /// owners) or resumed.
    pub fn set_blocked(&self, blocked: bool) {
        let mut state = self.state.lock();
        state.blocked = blocked;
        if blocked {
            while let Ok(job) = self.rx.try_recv() {
                requeue(job);
            }
        }
    }
}

fn requeue(job: Job) {
    let reply = ray_proto::ReplyFrame {
        seq: job.frame.seq,
        requeue: true,
        ..Default::default()
    };
    let _ = job.reply.send(reply, Flush::Soon);
}

/// Where a worker's task connections come in: its abstract Unix socket, or a name on a
/// test's in-memory network.
pub(crate) enum TaskListener {
    Unix(tokio::net::UnixListener),
    /// The same socket over TCP, for owners on other nodes.
    Tcp(tokio::net::TcpListener),
    Mem(ray_common::rpc::MemListener),
}

impl TaskListener {
    /// Listens under `name`: on `network` if given, else on the abstract Unix socket `name`
    /// (no file, gone with the process).
    pub fn bind(network: Option<&ray_common::rpc::MemNetwork>, name: &str) -> Result<Self> {
        if let Some(network) = network {
            return network
                .listen(name)
                .map(TaskListener::Mem)
                .map_err(Error::runtime);
        }
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(Error::runtime)?;
        let listener =
            std::os::unix::net::UnixListener::bind_addr(&addr).map_err(Error::runtime)?;
        listener.set_nonblocking(true).map_err(Error::runtime)?;
        tokio::net::UnixListener::from_std(listener)
            .map(TaskListener::Unix)
            .map_err(Error::runtime)
    }

    /// Listens on a fresh TCP port of `ip` (owners on other nodes connect there); the
    /// listener and its address.
    pub fn bind_tcp(ip: std::net::IpAddr) -> Result<(Self, String)> {
        let listener = std::net::TcpListener::bind((ip, 0)).map_err(Error::runtime)?;
        let address = listener.local_addr().map_err(Error::runtime)?.to_string();
        listener.set_nonblocking(true).map_err(Error::runtime)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(Error::runtime)?;
        Ok((TaskListener::Tcp(listener), address))
    }
}

/// The future that serves one accepted task connection.
type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Accepts owners' connections on the task socket: each greets with the session `token`,
/// then sends task frames, which go to `queue`. Connections are capped as the gRPC servers
/// cap theirs: a flood of connects (without the token, say) cannot take every descriptor.
pub(crate) async fn serve_task_socket(
    listener: TaskListener,
    token: Arc<str>,
    queue: Arc<TaskQueue>,
) {
    let cap = ray_common::rpc::server::max_connections();
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let over_cap = ray_common::Throttle::default();
    let mut listener = listener;
    loop {
        // Each accepted connection becomes the future that serves it.
        let accepted: std::io::Result<(Serving, String)> = match &mut listener {
            TaskListener::Unix(l) => l.accept().await.and_then(|(stream, _)| {
                let peer = "a local process".to_string();
                let socket = Socket::Unix(stream.into_std()?);
                let closer = closer_of(&socket);
                let (read, write) = socket.split()?;
                let serve = serve_connection(
                    read,
                    write,
                    peer.clone(),
                    token.clone(),
                    queue.clone(),
                    closer,
                );
                Ok((Box::pin(serve) as _, peer))
            }),
            TaskListener::Tcp(l) => l.accept().await.and_then(|(stream, peer)| {
                // Nagle off: a reply must not wait for a delayed ACK.
                let _ = stream.set_nodelay(true);
                let peer = peer.to_string();
                let socket = Socket::Tcp(stream.into_std()?);
                let closer = closer_of(&socket);
                let (read, write) = socket.split()?;
                let serve = serve_connection(
                    read,
                    write,
                    peer.clone(),
                    token.clone(),
                    queue.clone(),
                    closer,
                );
                Ok((Box::pin(serve) as _, peer))
            }),
            TaskListener::Mem(l) => match l.accept().await {
                Some(stream) => {
                    let peer = "a peer in memory".to_string();
                    let (read, write) = tokio::io::split(stream);
                    // (No closer: an actor ended on a shared host leaves such a caller
                    // waiting. Tests' in-memory networks share no host.)
                    let serve = serve_connection(
                        read,
                        write,
                        peer.clone(),
                        token.clone(),
                        queue.clone(),
                        None,
                    );
                    Ok((Box::pin(serve) as _, peer))
                }
                None => return,
            },
        };
        let (serve, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a task connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            over_cap.warn(&format!(
                "refused a task connection from {peer}: {cap} connections are open (the cap)"
            ));
            continue;
        };
        tokio::spawn(async move {
            serve.await;
            drop(permit);
        });
    }
}

/// Shuts `socket` both ways when called, through a descriptor of its own.
fn closer_of(socket: &Socket) -> Option<Closer> {
    let both = std::net::Shutdown::Both;
    match socket {
        Socket::Unix(s) => s.try_clone().ok().map(|s| {
            Box::new(move || {
                let _ = s.shutdown(both);
            }) as Closer
        }),
        Socket::Tcp(s) => s.try_clone().ok().map(|s| {
            Box::new(move || {
                let _ = s.shutdown(both);
            }) as Closer
        }),
    }
}

/// One owner's task connection: the greeting, then its frames into `queue`, replies back.
/// A connection that carries an actor's calls is bound to that actor (`closer` ends it when
/// the actor ends while its process goes on).
async fn serve_connection<R, W>(
    read: R,
    write: W,
    peer: String,
    token: Arc<str>,
    queue: Arc<TaskQueue>,
    closer: Option<Closer>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: IntoSink,
{
    let mut r = BufReader::with_capacity(64 * 1024, read);
    let mut scratch = Vec::new();
    let hello = tokio::time::timeout(
        HELLO_DEADLINE,
        read_frame::<ray_proto::Hello, _>(&mut r, &mut scratch, HELLO_MAX),
    )
    .await;
    let ok = matches!(&hello, Ok(Ok(Some(h))) if ray_proto::auth::constant_time_eq(h.token.as_bytes(), token.as_bytes()));
    if !ok {
        tracing::warn!(%peer, "refused a task connection without the session token");
        return;
    }
    // A write error means the owner went away; its reader sees that too. Replies are
    // written by the thread that ran the task when the socket takes them at once.
    let tx = write.into_sink::<ray_proto::ReplyFrame>(drop);
    let mut closer = closer;
    let mut bound: Option<(bytes::Bytes, u64)> = None;
    let read = read_frames(&mut r, &mut scratch, |frame: ray_proto::TaskFrame| {
        if bound.is_none() && !frame.actor_id.is_empty() {
            match queue.bindings.bind(&frame.actor_id, closer.take()) {
                Some(n) => bound = Some((frame.actor_id.clone(), n)),
                // Not hosted here (ended, or never): the caller hears the connection drop.
                None => return false,
            }
        }
        queue.offer(Job {
            frame,
            reply: tx.clone(),
        });
        true
    })
    .await;
    if let Some((actor, n)) = bound {
        queue.bindings.unbind(&actor, n);
    }
    if let Err(e) = read {
        tracing::warn!(%peer, error = %e, "malformed task frame; closing the connection");
    }
}

/// Runs a worker's tasks and hosts its actor, if it has one (or its actors: a shared host).
pub(crate) struct Executor {
    own: Arc<Ownership>,
    queue: Arc<TaskQueue>,
    /// The actors it hosts, by id: one on a dedicated worker, up to a few hundred on a
    /// shared host (`ActorSpec::share_process`).
    hosts: parking_lot::RwLock<HashMap<bytes::Bytes, Arc<ActorHost>>>,
    /// Names what runs in the process's output, for its node's readers (a worker process;
    /// `None` in a test's process).
    output: Option<OutputNamer>,
}

/// An actor a worker hosts, and how its calls run.
struct ActorHost {
    /// Its id and incarnation.
    actor: (ray_common::ActorId, u64),
    /// One of the actors of a shared host.
    shared: bool,
    class: &'static str,
    instance: Arc<dyn ActorInstance>,
    mode: HostMode,
    /// The group a method's calls run in (`None`: the default, `mode`).
    method_group: fn(&str) -> Option<&'static str>,
    /// Its concurrency groups: for a sync actor, each group's threads (taking its calls in
    /// order); for an async one, how many of its calls may run at once.
    groups: HashMap<&'static str, GroupRunner>,
}

/// Where a concurrency group's calls go.
enum GroupRunner {
    Threads(crossbeam_channel::Sender<Job>),
    Permits(Arc<tokio::sync::Semaphore>),
}

enum HostMode {
    /// One call at a time, in arrival order, on the worker's task thread.
    Sequential,
    /// `max_concurrency` threads take calls from this queue.
    Threaded(crossbeam_channel::Sender<Job>),
    /// Calls run as futures on the actor's own single-threaded event loop (as in Ray), at
    /// most `max_concurrency` at once; they start in the order they arrived.
    Async {
        calls:
            mpsc::UnboundedSender<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
        permits: Arc<tokio::sync::Semaphore>,
        /// Calls sent to the loop and not answered yet.
        running: Arc<AtomicUsize>,
    },
}

impl Executor {
    /// `names_output`: a worker process whose output its node reads.
    pub fn new(own: Arc<Ownership>, queue: Arc<TaskQueue>, names_output: bool) -> Arc<Self> {
        Arc::new(Executor {
            own,
            queue,
            hosts: Default::default(),
            output: names_output.then(OutputNamer::default),
        })
    }

    /// Before `path` (a function, an actor's class) runs.
    fn name_output(&self, path: &str) {
        if let Some(o) = &self.output {
            o.name(path);
        }
    }

    /// Runs queued tasks and calls on the calling thread (the worker's task thread) until
    /// the queue closes.
    pub fn run(&self) {
        with_decoder(&self.own, || {
            while let Ok(job) = crate::spin::recv(&self.queue.rx) {
                if let Some(job) = self.unless_cancelled(job) {
                    self.run_job(job);
                }
            }
        })
    }

    /// `job`, unless its owner cancelled it before it started: then it is answered with
    /// the cancellation, without running.
    fn unless_cancelled(&self, job: Job) -> Option<Job> {
        let cancelled = self.own.cancelled.any()
            && ray_common::TaskId::from_wire(&job.frame.task_id)
                .is_ok_and(|task| self.own.cancelled.is(&task));
        if !cancelled {
            return Some(job);
        }
        let e = Error::TaskCancelled {
            function: job.frame.function.clone(),
        };
        let reply = finish(&self.own, &job.frame, Done::failed(e), Instant::now());
        let _ = job.reply.send(reply, self.queue.flush());
        None
    }

    fn run_job(&self, job: Job) {
        if job.frame.actor_id.is_empty() {
            let items = job.frame.streaming.then(|| job.reply.clone());
            let reply = self.run_task(job.frame, items);
            let _ = job.reply.send(reply, self.queue.flush());
        } else {
            self.dispatch_actor_call(job);
        }
    }

    fn location(&self) -> &str {
        &self.own.me.location
    }

    /// Records that the task or call of `frame` runs here now (the state API's RUNNING).
    fn started(&self, frame: &ray_proto::TaskFrame) {
        if frame.untracked {
            return;
        }
        if let Ok(id) = id16(&frame.task_id, "task id") {
            let name = crate::task_events::Name::Unknown; // The owner's event names it.
            self.own.task_events.running(id, frame.attempt, name);
        }
    }

    /// Runs a normal task; a streaming one sends each item on `items` as it is made.
    fn run_task(
        &self,
        mut frame: ray_proto::TaskFrame,
        items: Option<FrameSink<ray_proto::ReplyFrame>>,
    ) -> ray_proto::ReplyFrame {
        let start = Instant::now();
        self.started(&frame);
        self.name_output(&frame.function);
        let args: Vec<Stored> = std::mem::take(&mut frame.args)
            .into_iter()
            .map(Stored::from_proto)
            .collect();
        let _copies = ArgCopies::of(&self.own, &args);
        let shape = (!frame.shape.is_empty()).then(|| Shape::Wire(frame.shape.clone()));
        let done = Done::run(|| {
            let slices = arg_slices(&self.own, &args)?;
            let task = ray_common::TaskId::from_wire(&frame.task_id).ok();
            let capture = ray_common::PlacementGroupId::from_wire(&frame.capture_group).ok();
            let run = || {
                task_context::capturing(capture, || {
                    self.own
                        .functions
                        .execute(&frame.function, &slices, self.location())
                })
            };
            task_context::as_task(task, shape, || match items {
                Some(items) => {
                    let sink = item_sink(self.own.clone(), frame.seq, None, items);
                    task_context::streaming(sink, run)
                }
                None => run(),
            })
        });
        drop(args);
        finish(&self.own, &frame, done, start)
    }

    /// The actor `id` this worker hosts.
    fn host_of(&self, id: &[u8]) -> Option<Arc<ActorHost>> {
        self.hosts.read().get(id).cloned()
    }

    /// Constructs an actor this worker will host: the one it was leased for, or (a shared
    /// host) one more of those it hosts.
    pub async fn create_actor(
        self: &Arc<Self>,
        spec: ray_proto::ActorSpec,
        incarnation: u64,
    ) -> Result<()> {
        if !self.own.me.is_worker {
            return Err(Error::Runtime("only a worker process hosts actors".into()));
        }
        let shared = spec.share_process;
        let previous = self
            .host_of(&spec.actor_id)
            .is_some_and(|h| h.actor.1 < incarnation);
        if previous {
            // Its previous life, restarted here: that one is over.
            self.destroy_actor(&spec.actor_id);
        }
        {
            let hosts = self.hosts.read();
            if hosts.contains_key(&spec.actor_id) {
                return Err(Error::Runtime(
                    "this worker hosts that actor already".into(),
                ));
            }
            if hosts.values().any(|h| !h.shared || !shared) {
                return Err(Error::Runtime("this worker already hosts an actor".into()));
            }
        }
        let actor_id = ray_common::ActorId::from_wire(&spec.actor_id)
            .map_err(|e| Error::InvalidArgument(format!("actor id: {e}")))?;
        let actor = (actor_id, incarnation);
        let entry = self
            .own
            .functions
            .actor_class(&spec.class_name)
            .ok_or_else(|| {
                Error::Runtime(format!(
                    "actor class {} is not registered in this binary",
                    spec.class_name
                ))
            })?;
        // Known to the constructor already (`get_runtime_context`): the process's actor
        // on a dedicated worker, the thread's on a shared host.
        if !shared {
            let _ = self.own.hosted_actor.set(actor);
        }
        let own = self.own.clone();
        let args: Vec<Stored> = spec.args.into_iter().map(Stored::from_proto).collect();
        let built = tokio::task::spawn_blocking(move || {
            with_decoder(&own, || {
                let _copies = ArgCopies::of(&own, &args);
                let slices = arg_slices(&own, &args)?;
                task_context::as_actor(actor, || {
                    crate::registry::run_guarded(entry.name, &own.me.location, || {
                        (entry.construct)(&mut ArgReader::new(&slices))
                    })
                })
            })
        })
        .await
        .map_err(Error::runtime)??;
        let instance: Arc<dyn ActorInstance> = Arc::from(built);
        let n = spec.max_concurrency.max(1) as usize;
        let mode = if entry.is_async {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::runtime)?;
            let (calls, mut incoming) = mpsc::unbounded_channel::<
                std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
            >();
            std::thread::Builder::new()
                .name("ray-actor-loop".into())
                .spawn(move || {
                    task_context::set_actor(Some(actor));
                    runtime.block_on(async move {
                        // A current-thread runtime runs spawned tasks first-in first-out.
                        while let Some(call) = incoming.recv().await {
                            tokio::spawn(call);
                        }
                    })
                })
                .map_err(Error::runtime)?;
            HostMode::Async {
                calls,
                permits: Arc::new(tokio::sync::Semaphore::new(n)),
                running: Arc::new(AtomicUsize::new(0)),
            }
        } else if n > 1 || shared {
            // A shared host's sequential actor has a thread of its own too: actors of a
            // process do not wait for each other.
            HostMode::Threaded(self.call_threads("ray-actor", n, actor)?)
        } else {
            HostMode::Sequential
        };
        let mut groups = HashMap::new();
        for &(name, n) in entry.concurrency_groups {
            let runner = if entry.is_async {
                GroupRunner::Permits(Arc::new(tokio::sync::Semaphore::new(n.max(1) as usize)))
            } else {
                GroupRunner::Threads(self.call_threads(
                    &format!("ray-actor-{name}"),
                    n.max(1) as usize,
                    actor,
                )?)
            };
            groups.insert(name, runner);
        }
        let host = Arc::new(ActorHost {
            actor,
            shared,
            class: entry.name,
            instance,
            mode,
            method_group: entry.method_group,
            groups,
        });
        self.hosts.write().insert(spec.actor_id.clone(), host);
        self.queue.bindings.hosting(spec.actor_id);
        Ok(())
    }

    /// Ends actor `id` of those this worker hosts (a shared host: the others go on): its
    /// callers' connections close, calls queued for it are dropped, a sync call running goes
    /// on until it returns (its reply goes nowhere; an async actor's calls are dropped at
    /// their next `.await`, with its event loop), and the instance is dropped after it.
    pub fn destroy_actor(&self, id: &[u8]) -> bool {
        // Its connections first: a frame that arrives meanwhile is refused at binding, and
        // one bound before finds no host and is dropped (its connection is shut).
        self.queue.bindings.end(id);
        let host = self.hosts.write().remove(id);
        if let Ok(actor) = ray_common::ActorId::from_wire(id) {
            // An exit it asked for is moot now (and must not end a next life here).
            self.own.exiting.lock().retain(|a| *a != actor);
        }
        match host {
            Some(host) => {
                // The instance's `Drop` is the user's code: not on a runtime thread.
                std::thread::spawn(move || drop(host));
                true
            }
            None => false,
        }
    }

    /// `n` threads running the actor's calls sent on the channel, one at a time each (in
    /// order, when `n` is 1).
    fn call_threads(
        self: &Arc<Self>,
        name: &str,
        n: usize,
        actor: (ray_common::ActorId, u64),
    ) -> Result<crossbeam_channel::Sender<Job>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            // Weak: the executor holds the queue's sender, so a strong ref here would keep
            // both alive and these threads waiting forever; they end with the executor.
            let me = Arc::downgrade(self);
            let own = self.own.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    task_context::set_actor(Some(actor));
                    with_decoder(&own, || {
                        while let Ok(job) = rx.recv() {
                            let Some(me) = me.upgrade() else { return };
                            // Gone: ended on its shared host (its callers' connections are
                            // closed), or this is a thread of its previous life.
                            let Some(host) =
                                me.host_of(&job.frame.actor_id).filter(|h| h.actor == actor)
                            else {
                                continue;
                            };
                            let reply = me.run_method(&host, job.frame, &job.reply);
                            let flush = match rx.is_empty() {
                                true => me.queue.flush(),
                                false => Flush::Soon,
                            };
                            reply_to_call(&own, actor.0, &job.reply, reply, flush);
                        }
                    })
                })
                .map_err(Error::runtime)?;
        }
        Ok(tx)
    }

    fn dispatch_actor_call(&self, mut job: Job) {
        let Some(host) = self.host_of(&job.frame.actor_id) else {
            // Ended here as the frame came: its connection is shut, and its caller takes
            // that as the actor's death (a connection is bound only to an actor hosted here).
            tracing::debug!("a call for an actor this worker hosts no more; dropped");
            return;
        };
        let group = if host.groups.is_empty() {
            None
        } else {
            (host.method_group)(&job.frame.function).and_then(|g| host.groups.get(g))
        };
        if let Some(GroupRunner::Threads(tx)) = group {
            let _ = tx.send(job);
            return;
        }
        match &host.mode {
            HostMode::Sequential => {
                let reply = self.run_method(&host, job.frame, &job.reply);
                reply_to_call(
                    &self.own,
                    host.actor.0,
                    &job.reply,
                    reply,
                    self.queue.flush(),
                );
            }
            HostMode::Threaded(tx) => {
                let _ = tx.send(job);
            }
            HostMode::Async {
                calls,
                permits,
                running,
            } => {
                let start = Instant::now();
                self.started(&job.frame);
                self.name_output(host.class);
                let label = format!("{}.{}", host.class, job.frame.function);
                let items = job.frame.streaming.then(|| {
                    let call = ray_common::TaskId::from_wire(&job.frame.task_id).ok();
                    item_sink(self.own.clone(), job.frame.seq, call, job.reply.clone())
                });
                let args: Vec<Stored> = std::mem::take(&mut job.frame.args)
                    .into_iter()
                    .map(Stored::from_proto)
                    .collect();
                let _copies = ArgCopies::of(&self.own, &args);
                let location = self.location().to_string();
                let ((call, returned), decoded) = collect_deserialized_refs(|| {
                    collect_serialized_refs(|| {
                        let slices = arg_slices(&self.own, &args)?;
                        crate::registry::run_guarded(&label, &location, || {
                            host.instance
                                .call(&job.frame.function, &mut ArgReader::new(&slices))
                        })
                    })
                });
                drop(args);
                let own = self.own.clone();
                let permits = match group {
                    Some(GroupRunner::Permits(p)) => p.clone(),
                    _ => permits.clone(),
                };
                let (running, queue) = (running.clone(), self.queue.clone());
                let actor = host.actor.0;
                running.fetch_add(1, Ordering::SeqCst);
                let _ = calls.send(Box::pin(async move {
                    let mut returned = returned;
                    let result = match call {
                        Err(e) => Err(e),
                        Ok(MethodCall::Done(r)) => {
                            crate::registry::outcome_to_result(&label, &location, Ok(r))
                        }
                        Ok(MethodCall::Future(f)) => {
                            let _permit = permits.acquire_owned().await;
                            // Its result is encoded in its last poll, on this loop: the refs
                            // inside it are the result's, as a sync method's are.
                            let f = match items {
                                Some(sink) => Box::pin(WithItems {
                                    sink: Some(sink),
                                    inner: f,
                                }),
                                None => f,
                            };
                            let (outcome, found) =
                                CollectingRefs::new(crate::registry::CatchUnwind(f)).await;
                            returned.extend(found);
                            crate::registry::outcome_to_result(&label, &location, outcome)
                        }
                    };
                    let done = Done {
                        result,
                        decoded,
                        returned,
                    };
                    // Finished here, on the loop, in call order: replies on a connection
                    // must leave in the order their borrow reports were taken (a reply that
                    // writes shared memory or registers refs holds the loop meanwhile).
                    let reply = finish(&own, &job.frame, done, start);
                    let flush = match running.fetch_sub(1, Ordering::SeqCst) {
                        1 => queue.flush(),
                        _ => Flush::Soon,
                    };
                    reply_to_call(&own, actor, &job.reply, reply, flush);
                }));
            }
        }
    }

    /// Runs one method call on this thread (a generator method's items go on `reply` as
    /// they are made).
    fn run_method(
        &self,
        host: &ActorHost,
        mut frame: ray_proto::TaskFrame,
        reply: &FrameSink<ray_proto::ReplyFrame>,
    ) -> ray_proto::ReplyFrame {
        let start = Instant::now();
        self.started(&frame);
        self.name_output(host.class);
        let location = self.location();
        let label = format!("{}.{}", host.class, frame.function);
        let args: Vec<Stored> = std::mem::take(&mut frame.args)
            .into_iter()
            .map(Stored::from_proto)
            .collect();
        let _copies = ArgCopies::of(&self.own, &args);
        let items = frame.streaming.then(|| {
            let call = ray_common::TaskId::from_wire(&frame.task_id).ok();
            item_sink(self.own.clone(), frame.seq, call, reply.clone())
        });
        let done = Done::run(|| {
            let slices = arg_slices(&self.own, &args)?;
            let run = || {
                crate::registry::run_guarded(&label, location, || {
                    host.instance
                        .call(&frame.function, &mut ArgReader::new(&slices))
                })
            };
            let call = match items {
                Some(sink) => task_context::streaming(sink, run),
                None => run(),
            }?;
            match call {
                MethodCall::Done(r) => crate::registry::outcome_to_result(&label, location, Ok(r)),
                MethodCall::Future(_) => Err(Error::Runtime(
                    "an async method on a thread-based actor".into(),
                )),
            }
        });
        drop(args);
        finish(&self.own, &frame, done, start)
    }
}

/// A generator method's future on an async actor: its items go to `sink` while it is polled.
struct WithItems<F: ?Sized> {
    sink: Option<task_context::ItemSink>,
    inner: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future + ?Sized> std::future::Future for WithItems<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        /// Puts the thread's own sink back, even if the poll panics.
        struct Restore<'a> {
            sink: &'a mut Option<task_context::ItemSink>,
            outer: Option<task_context::ItemSink>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.sink = task_context::swap_items(self.outer.take());
            }
        }
        let me = &mut *self;
        let outer = task_context::swap_items(me.sink.take());
        let restore = Restore {
            sink: &mut me.sink,
            outer,
        };
        let polled = me.inner.as_mut().poll(cx);
        drop(restore);
        polled
    }
}

/// Sends an actor call's reply. If the call asked the actor to exit
/// (`ray::actor::exit_actor`), the reply is written at once, then the GCS is asked to end
/// the actor for good (it kills this process; the actor is not restarted).
fn reply_to_call(
    own: &Ownership,
    actor_id: ray_common::ActorId,
    sink: &FrameSink<ray_proto::ReplyFrame>,
    reply: ray_proto::ReplyFrame,
    flush: Flush,
) {
    if !own.exit_requested.load(Ordering::Acquire) {
        let _ = sink.send(reply, flush);
        return;
    }
    let exits = {
        let mut exiting = own.exiting.lock();
        let before = exiting.len();
        exiting.retain(|a| *a != actor_id);
        if exiting.is_empty() {
            own.exit_requested.store(false, Ordering::Release);
        }
        exiting.len() < before
    };
    if !exits {
        let _ = sink.send(reply, flush);
        return;
    }
    let _ = sink.send(reply, Flush::Now);
    let Some(link) = &own.link else {
        return;
    };
    let gcs = link.gcs.clone();
    let req = ray_proto::KillActorRequest {
        actor_id: actor_id.to_vec().into(),
        no_restart: true,
        cause: "the actor exited (ray::actor::exit_actor)".into(),
    };
    link.handle.spawn(async move {
        if let Err(e) = gcs.kill_actor(req).await {
            tracing::warn!(error = %e, "an actor that called exit_actor could not tell the GCS");
        }
    });
}

/// Runs `task`, which this process submitted and a task blocked on this thread took back
/// from the queue, here and now; its result is stored here, its owner. The waiting task
/// holds the resources it runs on. A panic is the task's error, as on any worker; a crash
/// ends this process, and so the waiting task too (which its owner retries).
pub(crate) fn run_inline(own: &Ownership, task: PendingTask) {
    let args: Vec<Stored> = task
        .resolved
        .iter()
        .cloned()
        .map(Stored::from_proto)
        .collect();
    let _copies = ArgCopies::of(own, &args);
    if task.tracked {
        let name = crate::task_events::Name::Static(task.function);
        own.task_events
            .running(task.return_id.0, task.attempt, name);
    }
    let mut retries_left = task.retries_left;
    let (result, returned) = loop {
        let (result, returned) = collect_serialized_refs(|| {
            task_context::as_inline_task(
                ray_common::TaskId(task.return_id.0),
                task.shape.clone(),
                || {
                    arg_slices(own, &args).and_then(|slices| {
                        own.functions
                            .execute(task.function, &slices, &own.me.location)
                    })
                },
            )
        });
        let user_error = matches!(&result, Err(Error::Task { .. }));
        // Not again once the task it runs inside was cancelled: every ray call would fail.
        let cancelled = own.cancelled.check_current().is_err();
        if !(user_error && task.retry_exceptions && retries_left != 0) || cancelled {
            break (result, returned);
        }
        retries_left -= i32::from(retries_left > 0);
    };
    drop(args);
    if task.tracked {
        own.task_events
            .ended(task.return_id.0, task.attempt, result.as_ref().err());
    }
    // This process owns the result: it holds the refs inside it itself.
    own.contain_all(task.return_id, task.num_returns, returned);
    let stored = returns_to_stored(own, task.return_id, task.num_returns, result);
    for (id, value) in crate::ids::return_ids(task.return_id, task.num_returns).zip(stored) {
        own.complete(id, value);
    }
}

/// The copies of other nodes' objects that a task's arguments are read from (pulled into this
/// node's store and pinned for this process): let go when the task is done with its
/// arguments, which it decodes into values of its own. (A ref this process holds to the same
/// object pins it again when read.)
struct ArgCopies<'a> {
    own: &'a Ownership,
    ids: Vec<ObjectId>,
}

impl<'a> ArgCopies<'a> {
    fn of(own: &'a Ownership, args: &[Stored]) -> Self {
        let here = own.me.node_id;
        let ids = args
            .iter()
            .filter_map(|a| match a {
                Stored::Plasma { id, node, .. } if *node != here => Some(*id),
                _ => None,
            })
            .collect();
        ArgCopies { own, ids }
    }
}

impl Drop for ArgCopies<'_> {
    fn drop(&mut self) {
        if let Some(link) = &self.own.link {
            for id in &self.ids {
                link.store.drop_copy(*id);
            }
        }
    }
}

/// The byte views of a task's arguments: inline, or read in place from shared memory.
fn arg_slices<'a>(own: &'a Ownership, args: &'a [Stored]) -> Result<Vec<ArgBytes<'a>>> {
    args.iter()
        .map(|a| match a {
            Stored::Inline(b) => Ok(ArgBytes::encoded(b)),
            Stored::Plasma {
                id,
                node,
                offset,
                size,
                raw,
            } => Ok(ArgBytes {
                bytes: own.plasma_bytes(*id, *node, *offset, *size, true)?,
                raw: *raw,
            }),
            Stored::Failed(e) => Err((**e).clone()),
        })
        .collect()
}

/// How a task or method ended, as its reply needs it.
struct Done {
    result: Result<Vec<u8>>,
    /// The refs met while decoding its arguments.
    decoded: Vec<ObjectId>,
    /// The refs serialized while it ran (inside its result).
    returned: Vec<Arc<RefInner>>,
}

impl Done {
    /// Runs `f`, a task or method, collecting the refs decoded in its arguments and those
    /// serialized while it ran.
    fn run(f: impl FnOnce() -> Result<Vec<u8>>) -> Self {
        let ((result, returned), decoded) =
            collect_deserialized_refs(|| collect_serialized_refs(f));
        Done {
            result,
            decoded,
            returned,
        }
    }

    fn failed(e: Error) -> Self {
        Done {
            result: Err(e),
            decoded: Vec::new(),
            returned: Vec::new(),
        }
    }
}

/// The reply for a finished task or method: large results go to shared memory under the
/// return id; arguments' refs still held make this worker a borrower; refs inside the result
/// are handed over to its owner (see [`hand_over`]).
fn finish(
    own: &Ownership,
    frame: &ray_proto::TaskFrame,
    done: Done,
    start: Instant,
) -> ray_proto::ReplyFrame {
    if own.cancelled.any() {
        if let Ok(task) = ray_common::TaskId::from_wire(&frame.task_id) {
            own.cancelled.forget(&task);
        }
    }
    let (first, more) = match frame.num_returns {
        0 | 1 => (
            result_to_stored(own, &frame.return_id, done.result),
            Vec::new(),
        ),
        n => {
            let mut all = match id16(&frame.return_id, "return id") {
                Ok(first) => returns_to_stored(own, ObjectId(first), n, done.result),
                Err(e) => vec![Stored::Failed(Arc::new(e))],
            };
            let rest = all.split_off(1);
            (all.pop().expect("one return at least"), rest)
        }
    };
    if let (false, Ok(id)) = (frame.untracked, id16(&frame.task_id, "task id")) {
        let failure = match &first {
            Stored::Failed(e) => Some(&**e),
            _ => None,
        };
        own.task_events.ended(id, frame.attempt, failure);
    }
    let (contained, released) = match &first {
        Stored::Failed(_) => Default::default(),
        _ => hand_over(own, done.returned, &frame.owner_address),
    };
    let borrowed = own.refs.still_borrowed(&done.decoded);
    let more_values = more.iter().map(Stored::to_proto).collect();
    let value = ray_proto::ObjectValue {
        contained,
        ..first.to_proto()
    };
    ray_proto::ReplyFrame {
        seq: frame.seq,
        value: Some(value),
        more_values,
        borrowed_ids: borrowed
            .into_iter()
            .map(|id| id.0.to_vec().into())
            .collect(),
        released_ids: released
            .into_iter()
            .map(|id| id.0.to_vec().into())
            .collect(),
        exec_micros: start.elapsed().as_micros() as u64,
        requeue: false,
        ..Default::default()
    }
}

/// Hands the refs inside a result over to the result's owner, `caller`: it becomes a
/// borrower of those this process owns, and of those owned elsewhere (whose owners have
/// answered before this returns, and before this process lets go of them). What the reply's
/// value lists as contained, and the caller's own objects this process let go of (released
/// in the reply, after the hand-over: see [`crate::ownership::releasing_in_band`]).
fn hand_over(
    own: &Ownership,
    returned: Vec<Arc<RefInner>>,
    caller: &str,
) -> (Vec<ray_proto::ObjectRefProto>, Vec<ObjectId>) {
    if returned.is_empty() {
        return Default::default();
    }
    let caller: Arc<str> = caller.into();
    let mut seen = std::collections::HashSet::new();
    let mut contained = Vec::new();
    let mut foreign = Vec::new();
    for r in &returned {
        if r.failed.is_some() || !seen.insert(r.id) {
            continue;
        }
        match &r.owner {
            None => own.refs.add_borrower(r.id, caller.clone()),
            Some(owner) if **owner != *caller => foreign.push((r.id, owner.clone())),
            Some(_) => {} // The caller's own object.
        }
        contained.push(ray_proto::ObjectRefProto {
            object_id: r.id.0.to_vec().into(),
            owner_address: r.owner.as_deref().unwrap_or(&own.me.address).to_string(),
        });
    }
    // Before the reply goes: the owner's release of a ref (or its give-back of one it held
    // already) must not overtake the borrow registered here for it.
    own.register_borrows_now(foreign, caller.clone());
    let released = crate::ownership::releasing_in_band(caller, || drop(returned));
    (contained, released)
}

/// A task's outcome as its `num_returns` objects, the first with id `first` (see
/// [`crate::ids::return_ids`]): each return's value (large ones in shared memory under its
/// id), or the task's error for each; one of the returns failing to be stored fails all.
pub(crate) fn returns_to_stored(
    own: &Ownership,
    first: ObjectId,
    num_returns: u32,
    result: Result<Vec<u8>>,
) -> Vec<Stored> {
    if num_returns <= 1 {
        return vec![result_to_stored(own, &first.0, result)];
    }
    let ids = crate::ids::return_ids(first, num_returns);
    let split = result.and_then(|bytes| {
        let parts = crate::registry::split_returns(&bytes, num_returns as usize)?;
        let mut values = Vec::with_capacity(parts.len());
        for (id, part) in ids.clone().zip(parts) {
            match result_to_stored(own, &id.0, Ok(part.to_vec())) {
                Stored::Failed(e) => {
                    // All or none: the returns already in shared memory go.
                    for (id, v) in ids.clone().zip(values) {
                        if let (Stored::Plasma { node, .. }, Some(link)) = (v, &own.link) {
                            link.store.delete_plasma(id, node);
                        }
                    }
                    return Err((*e).clone());
                }
                ok => values.push(ok),
            }
        }
        Ok(values)
    });
    match split {
        Ok(values) => values,
        Err(e) => {
            let e = Arc::new(e.bounded());
            ids.map(|_| Stored::Failed(e.clone())).collect()
        }
    }
}

/// A task's outcome as its object: large values go to shared memory under the return id.
/// Where a streaming task's items go: each stored (in shared memory if large) under an id
/// of this process's, and sent to the owner at once as a reply that does not end the task.
/// A task cancelled meanwhile (its generator dropped) stops at its next item.
fn item_sink(
    own: Arc<Ownership>,
    seq: u64,
    call: Option<ray_common::TaskId>,
    items: FrameSink<ray_proto::ReplyFrame>,
) -> task_context::ItemSink {
    let mut index = 0u64;
    Box::new(move |bytes| {
        own.cancelled.check_current().map_err(|e| e.to_string())?;
        // An actor's generator method, whose caller dropped the generator (cancelled it).
        if let Some(call) = call.filter(|c| own.cancelled.any() && own.cancelled.is(c)) {
            let e = Error::TaskCancelled {
                function: format!("task {}", call.to_hex()),
            };
            return Err(e.to_string());
        }
        let id = own.ids.next();
        let value = match result_to_stored(&own, &id.0, Ok(bytes)) {
            Stored::Failed(e) => return Err(e.to_string()),
            stored => stored.to_proto(),
        };
        let reply = ray_proto::ReplyFrame {
            seq,
            value: Some(value),
            stream_item: true,
            item_index: index,
            item_id: id.0.to_vec().into(),
            ..Default::default()
        };
        index += 1;
        items
            .send(reply, Flush::Now)
            .map_err(|_| "the owner's connection closed".to_string())
    })
}

fn result_to_stored(own: &Ownership, return_id: &[u8], result: Result<Vec<u8>>) -> Stored {
    let stored = result.and_then(|bytes| match &own.link {
        Some(link) if bytes.len() > INLINE_MAX => {
            let id = ObjectId(id16(return_id, "return id")?);
            link.store.put_plasma(id, &bytes, 0)
        }
        _ => Ok(Stored::Inline(bytes.into())),
    });
    stored.unwrap_or_else(|e| Stored::Failed(Arc::new(e.bounded())))
}
