//! Workers' standard output and error: read from their pipes line by line, each line
//! appended to the worker's file under the node's log directory and, for a job that asked
//! for it, handed to the node's subscribers (a local driver's printer, the publisher to the
//! GCS) named by the task or actor that printed it, as Ray prints `(f pid=1234) ...`.
//!
//! A worker names what it runs by writing [`NAME_MARKER`]`<name>` on a line of its own to
//! both streams when that changes (Ray's log monitor reads `:task_name:` lines the same
//! way); those lines go to neither the file nor the subscribers.

use parking_lot::Mutex;
use ray_common::WorkerId;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Starts a line naming the task or actor a worker runs from then on.
pub const NAME_MARKER: &str = "::rayrs-name::";

/// Longest line kept whole: a longer one is cut into lines of this size.
const MAX_LINE: usize = 16 << 10;
/// Lines held for subscribers that fall behind; a subscriber further behind loses the
/// oldest and is told how many.
const BACKLOG: usize = 8192;

/// One line a worker printed.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub job_id: u32,
    pub pid: u32,
    /// The task's function or the actor's class that printed it (empty: before any).
    pub name: Arc<str>,
    /// From standard error (else standard output).
    pub stderr: bool,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// A started worker process's output pipes.
pub struct WorkerOutput {
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
}

/// Who the output belongs to.
#[derive(Clone, Copy)]
pub(crate) struct Writer {
    pub worker_id: WorkerId,
    pub pid: u32,
    pub job_id: u32,
    /// Whether its lines go to subscribers (the job's `log_to_driver`), not only to files.
    pub forward: bool,
}

/// The node's readers of its workers' output.
pub struct WorkerLogs {
    dir: Option<PathBuf>,
    /// `None` once closed: readers started before hold their own clone.
    lines: Mutex<Option<broadcast::Sender<Arc<LogLine>>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkerLogs {
    /// Readers writing files under `dir` (`None`: no files, as for in-process workers).
    pub fn new(dir: Option<PathBuf>) -> Self {
        if let Some(dir) = &dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the log directory");
            }
        }
        let (lines, _) = broadcast::channel(BACKLOG);
        WorkerLogs {
            dir,
            lines: Mutex::new(Some(lines)),
            readers: Mutex::new(Vec::new()),
        }
    }

    /// Where the workers' files are written.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The lines of jobs that forward theirs, from now on (`None` once closed).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<LogLine>>> {
        self.lines.lock().as_ref().map(|l| l.subscribe())
    }

    /// Reads `output` of the worker `who` until its pipes close.
    pub(crate) fn attach(&self, who: Writer, output: WorkerOutput) {
        let Some(lines) = self.lines.lock().clone() else {
            return;
        };
        let file = |ext: &str| {
            self.dir
                .as_ref()
                .map(|d| d.join(format!("worker-{}-{}.{ext}", who.worker_id, who.pid)))
        };
        let out = read(who, false, output.stdout, file("out"), lines.clone());
        let err = read(who, true, output.stderr, file("err"), lines);
        let mut readers = self.readers.lock();
        readers.retain(|r| !r.is_finished());
        readers.push(tokio::spawn(out));
        readers.push(tokio::spawn(err));
    }

    /// Waits (up to `within`) until every reader has read its pipe to the end, then closes
    /// the subscribers' channel: they see every line, then its end. For after the workers
    /// were killed.
    pub async fn close(&self, within: Duration) {
        let mut readers = std::mem::take(&mut *self.readers.lock());
        let all = async {
            for r in &mut readers {
                let _ = r.await;
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            // (A killed worker's child may hold its pipes open.)
            tracing::warn!("workers' output still open {within:?} after they were killed");
            for r in &readers {
                r.abort(); // Its clone of the channel goes with it.
            }
        }
        self.lines.lock().take();
    }
}

/// Reads one pipe to its end.
async fn read(
    who: Writer,
    stderr: bool,
    pipe: Box<dyn AsyncRead + Send + Unpin>,
    path: Option<PathBuf>,
    lines: broadcast::Sender<Arc<LogLine>>,
) {
    let mut file = match &path {
        Some(path) => match tokio::fs::File::create(path).await {
            Ok(f) => Some(tokio::io::BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write a worker's log");
                None
            }
        },
        None => None,
    };
    let mut reader = BufReader::with_capacity(8 << 10, pipe);
    let mut name: Arc<str> = Arc::from("");
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(named) = line.strip_prefix(NAME_MARKER.as_bytes()) {
            name = String::from_utf8_lossy(named).into();
            continue;
        }
        if let Some(f) = &mut file {
            if f.write_all(&buf).await.is_err() {
                file = None;
            } else if reader.buffer().is_empty() {
                // Nothing more waiting: what was written reaches the file now.
                let _ = f.flush().await;
            }
        }
        if who.forward {
            // No subscriber is no error: the lines are in the file.
            let _ = lines.send(Arc::new(LogLine {
                job_id: who.job_id,
                pid: who.pid,
                name: name.clone(),
                stderr,
                text: String::from_utf8_lossy(line).into_owned(),
            }));
        }
    }
    if let Some(f) = &mut file {
        let _ = f.flush().await;
    }
}

/// Most lines in one batch to the GCS.
const BATCH_LINES: usize = 1000;
/// How long the publisher gathers lines after the first before it sends them.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Publishes the lines `lines` receives (this node's, of jobs that print theirs on their
/// driver) to the GCS in batches, one call at a time, each within its deadline, until the
/// channel closes. A batch the GCS does not take is dropped (the lines stay in the files).
pub async fn publish(
    mut lines: broadcast::Receiver<Arc<LogLine>>,
    gcs: Arc<dyn ray_common::rpc::GcsApi>,
    node_id: ray_common::NodeId,
    node_ip: String,
) {
    use broadcast::error::{RecvError, TryRecvError};
    let to_proto = |l: &LogLine| ray_proto::LogLine {
        job_id: l.job_id,
        pid: l.pid,
        name: l.name.to_string(),
        stderr: l.stderr,
        text: l.text.clone(),
    };
    let mut missed = 0u64;
    loop {
        let mut batch = Vec::new();
        match lines.recv().await {
            Ok(line) => batch.push(to_proto(&line)),
            Err(RecvError::Lagged(n)) => missed += n,
            Err(RecvError::Closed) => return,
        }
        tokio::time::sleep(BATCH_WAIT).await;
        while batch.len() < BATCH_LINES {
            match lines.try_recv() {
                Ok(line) => batch.push(to_proto(&line)),
                Err(TryRecvError::Lagged(n)) => missed += n,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => break,
            }
        }
        if missed > 0 {
            tracing::warn!(
                lines = missed,
                "workers printed faster than the GCS took it: lines only in their files"
            );
            missed = 0;
        }
        if batch.is_empty() {
            continue;
        }
        let sent = gcs
            .publish_logs(ray_proto::LogBatch {
                lines: batch,
                node_id: node_id.to_vec().into(),
                node_ip: node_ip.clone(),
                dropped: 0,
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "the GCS did not take a batch of workers' output");
        }
    }
}

/// The prefix a driver prints before a worker's line: `(name pid=N)`, with `, ip=...` for a
/// worker on another machine (Ray's form).
pub fn prefix(name: &str, pid: u32, ip: Option<&str>) -> String {
    let ip = ip.map(|ip| format!(", ip={ip}")).unwrap_or_default();
    match name {
        "" => format!("(pid={pid}{ip})"),
        name => format!("({name} pid={pid}{ip})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(forward: bool) -> Writer {
        Writer {
            worker_id: WorkerId::random(),
            pid: 42,
            job_id: 7,
            forward,
        }
    }

    fn output(stdout: &'static [u8], stderr: &'static [u8]) -> WorkerOutput {
        WorkerOutput {
            stdout: Box::new(stdout),
            stderr: Box::new(stderr),
        }
    }

    #[tokio::test]
    async fn lines_are_named_by_the_last_marker_and_written_to_the_workers_files() {
        let dir = std::env::temp_dir().join(format!("rayrs-logs-test-{}", std::process::id()));
        let logs = WorkerLogs::new(Some(dir.clone()));
        let mut rx = logs.subscribe().unwrap();
        let who = writer(true);
        let long = Box::leak(format!("{}\n", "x".repeat(MAX_LINE + 10)).into_boxed_str());
        let stdout: &'static [u8] = Box::leak(
            format!("early\n{NAME_MARKER}square\nfour\n{NAME_MARKER}Counter\nfive{long}")
                .into_bytes()
                .into_boxed_slice(),
        );
        logs.attach(who, output(stdout, b"oops\n"));
        logs.close(Duration::from_secs(10)).await;
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv().await {
            if !line.stderr {
                seen.push((line.name.to_string(), line.text.len().min(8), line.pid));
            } else {
                assert_eq!(line.text, "oops");
            }
        }
        assert_eq!(
            seen[..3],
            [
                (String::new(), 5, 42),
                ("square".to_string(), 4, 42),
                ("Counter".to_string(), 8, 42)
            ]
        );
        assert_eq!(seen.len(), 4, "the long line is cut in two");
        let out =
            std::fs::read_to_string(dir.join(format!("worker-{}-42.out", who.worker_id))).unwrap();
        assert!(out.starts_with("early\nfour\nfive"), "{}", &out[..20]);
        assert!(!out.contains(NAME_MARKER));
        let err =
            std::fs::read_to_string(dir.join(format!("worker-{}-42.err", who.worker_id))).unwrap();
        assert_eq!(err, "oops\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_job_that_does_not_forward_its_lines_only_writes_them() {
        let logs = WorkerLogs::new(None);
        let mut rx = logs.subscribe().unwrap();
        logs.attach(writer(false), output(b"quiet\n", b""));
        logs.close(Duration::from_secs(10)).await;
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        assert!(logs.subscribe().is_none(), "closed");
    }

    #[test]
    fn prefixes_are_rays() {
        assert_eq!(prefix("f", 12, None), "(f pid=12)");
        assert_eq!(prefix("", 12, Some("10.0.0.2")), "(pid=12, ip=10.0.0.2)");
    }
}
