//! The runtime's own threads' `tracing` output: to standard error, one whole line per
//! event, prefixed `(worker pid=N)` in a worker process.

/// The subscriber the runtime's threads use (`None`: the program installed its own).
static STDERR: std::sync::OnceLock<Option<tracing::Dispatch>> = std::sync::OnceLock::new();

/// Makes the runtime's warnings (a refused connection, work waiting on the worker limit)
/// visible on the calling thread, as Ray's are: unless the program had installed a global
/// `tracing` subscriber first, this thread logs to standard error (`RUST_LOG` picks the
/// level, default `warn`). Only the runtime's own threads call it: the program stays free to
/// install any subscriber or logger of its own, before or after `init`.
pub(crate) fn runtime_thread() {
    let dispatch = STDERR.get_or_init(|| {
        if tracing::dispatcher::has_been_set() {
            return None;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(StderrLines::of_this_process())
            .finish();
        Some(tracing::Dispatch::new(subscriber))
    });
    if let Some(d) = dispatch {
        // For the thread's whole life (runtime threads end with the session).
        std::mem::forget(tracing::dispatcher::set_default(d));
    }
}

/// Standard error, one whole line per event, prefixed in a worker process with
/// `(worker pid=N)`: a worker's stderr is its node's (the driver's in local mode, the node's
/// log on a cluster), so each line says where it came from, as Ray's worker lines do.
struct StderrLines {
    prefix: Option<String>,
}

impl StderrLines {
    fn of_this_process() -> Self {
        let prefix = std::env::var_os(ray_raylet::worker_env::WORKER_MODE)
            .map(|_| format!("(worker pid={}) ", std::process::id()));
        StderrLines { prefix }
    }
}

/// One event's line, written at once when the event is formatted.
struct Line<'a> {
    prefix: Option<&'a str>,
    buf: Vec<u8>,
}

impl std::io::Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let mut out = Vec::with_capacity(self.buf.len() + 24);
        out.extend_from_slice(self.prefix.unwrap_or_default().as_bytes());
        out.extend_from_slice(&self.buf);
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &out);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLines {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line {
            prefix: self.prefix.as_deref(),
            buf: Vec::new(),
        }
    }
}

/// In a worker process (where the program's `main` never runs): the runtime's subscriber
/// for every thread, its tasks' and actors' included, unless `#[ray::worker_setup]`
/// installed one.
pub(crate) fn worker_process() {
    runtime_thread();
    if let Some(Some(d)) = STDERR.get() {
        let _ = tracing::dispatcher::set_global_default(d.clone());
    }
}
