//! What the job's tasks and actors print, on its driver's terminal (Ray's `log_to_driver`).
//! A worker process names what it runs in its output ([`OutputNamer`]); its node reads the
//! output (`ray_raylet::logs`); the driver prints each line the node hands it, prefixed
//! `(name pid=N)`, on its own standard output or error as the worker wrote it ([`Printer`]).

use parking_lot::Mutex;
use ray_raylet::logs::{LogLine, NAME_MARKER};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::broadcast;

/// A worker process's names for its output: before a task or method runs, [`OutputNamer::name`]
/// writes a marker naming the function or the actor's class to both output streams when it
/// differs from the last one (tasks of one function in a row write nothing).
#[derive(Default)]
pub(crate) struct OutputNamer {
    /// Held while writing: two threads' markers reach the streams in the order they change.
    last: Mutex<String>,
}

impl OutputNamer {
    /// Names the output from now on after `path`'s last segment (`my_mod::f`: `f`).
    pub fn name(&self, path: &str) {
        let name = path.rsplit("::").next().unwrap_or(path);
        let mut last = self.last.lock();
        if *last == name {
            return;
        }
        last.clear();
        last.push_str(name);
        let marker = format!("{NAME_MARKER}{name}\n");
        let _ = std::io::stdout().lock().write_all(marker.as_bytes());
        let _ = std::io::stderr().lock().write_all(marker.as_bytes());
    }
}

/// Batches of lines waiting to be printed, at most.
const PRINT_QUEUE: usize = 256;

/// Prints the lines of one job, on a thread of its own (printing blocks), until their
/// channel closes.
pub(crate) struct Printer {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Printer {
    /// Prints job `job_id`'s lines from a node in this process.
    pub fn local(mut lines: broadcast::Receiver<Arc<LogLine>>, job_id: u32) -> Option<Printer> {
        Self::spawn(move || loop {
            match lines.blocking_recv() {
                Ok(l) if l.job_id == job_id => print(&l.name, l.pid, l.stderr, &l.text, None),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => dropped(n),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        })
    }

    /// `print` on a thread of its own.
    fn spawn(print: impl FnOnce() + Send + 'static) -> Option<Printer> {
        let thread = std::thread::Builder::new()
            .name("ray-worker-output".into())
            .spawn(print);
        match thread {
            Ok(thread) => Some(Printer {
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the printer of workers' output");
                None
            }
        }
    }

    /// Prints job `job_id`'s lines from every node of a cluster, as the GCS relays them;
    /// those of nodes other than `here` name the node's address. Until the runtime drops
    /// the stream.
    pub fn remote(
        handle: &tokio::runtime::Handle,
        mut batches: ray_common::rpc::ReplyStream<ray_proto::LogBatch>,
        here: ray_common::NodeId,
    ) -> Option<Printer> {
        // Printing blocks: a thread of its own prints what the runtime's task receives,
        // through a bounded queue (a terminal that stops reading must not grow this
        // process: batches that find the queue full are counted and said dropped).
        let (tx, rx) = std::sync::mpsc::sync_channel::<ray_proto::LogBatch>(PRINT_QUEUE);
        let here = here.to_vec();
        let printer = Self::spawn(move || {
            while let Ok(batch) = rx.recv() {
                if batch.dropped > 0 {
                    dropped(batch.dropped);
                }
                let ip = (*batch.node_id != here[..]).then_some(&*batch.node_ip);
                for l in &batch.lines {
                    print(&l.name, l.pid, l.stderr, &l.text, ip);
                }
            }
        })?;
        handle.spawn(async move {
            use std::sync::mpsc::TrySendError;
            use tokio_stream::StreamExt;
            let mut missed = 0;
            while let Some(next) = batches.next().await {
                let mut batch = match next {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "the stream of the job's workers' output ended: their lines are only in their files from now on");
                        return;
                    }
                };
                batch.dropped += std::mem::take(&mut missed);
                match tx.try_send(batch) {
                    Ok(()) => {}
                    Err(TrySendError::Full(b)) => missed = b.dropped + 1,
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        });
        Some(printer)
    }

    /// Waits until every line was printed: call once the channel is closed.
    pub fn finish(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Prints a line worker `pid` wrote to its stdout (or `stderr`) while it ran `name`, with
/// its prefix (`ip` names a worker's machine other than the driver's).
fn print(name: &str, pid: u32, stderr: bool, line: &str, ip: Option<&str>) {
    let prefix = ray_raylet::logs::prefix(name, pid, ip);
    let text = format!("{prefix} {line}\n");
    let _ = match stderr {
        true => std::io::stderr().lock().write_all(text.as_bytes()),
        false => std::io::stdout().lock().write_all(text.as_bytes()),
    };
}

/// Says that `n` lines (or batches of them) were lost on the way here.
fn dropped(n: u64) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "(rayrs) {n} lines or batches of lines the job's workers printed were not printed \
         here: the driver fell behind (they are in the workers' log files)"
    );
}
