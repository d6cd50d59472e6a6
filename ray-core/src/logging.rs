//! The runtime's own threads' `tracing` output: to standard error, one whole line per
//! event (a worker process's standard error is read by its node, which says whose line it
//! is: see `ray_raylet::logs`).

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
            .with_writer(StderrLines)
            // Colours for a terminal only: a worker's stderr is a pipe to its node's files.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish();
        Some(tracing::Dispatch::new(subscriber))
    });
    if let Some(d) = dispatch {
        // For the thread's whole life (runtime threads end with the session).
        std::mem::forget(tracing::dispatcher::set_default(d));
    }
}

/// Standard error, one whole line per event (lines of two threads never interleave).
struct StderrLines;

/// One event's line, written at once when the event is formatted.
struct Line {
    buf: Vec<u8>,
}

impl std::io::Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &self.buf);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLines {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line { buf: Vec::new() }
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
