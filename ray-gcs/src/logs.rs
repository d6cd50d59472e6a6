//! Workers' output on its way from the nodes to the drivers that print it (Ray's log
//! pubsub): nodes publish batches, each driver holds a stream of its job's lines. Nothing
//! is kept: a line no driver listens for is gone (it stays in its worker's file).

use ray_proto::{LogBatch, SubscribeLogsRequest};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// Batches held for subscribers that fall behind (a batch is at most 1,000 lines); one
/// further behind is told how many it missed.
const BACKLOG: usize = 128;

/// The GCS's channel of output batches.
pub(crate) struct LogChannel {
    batches: broadcast::Sender<Arc<LogBatch>>,
}

impl Default for LogChannel {
    fn default() -> Self {
        LogChannel {
            batches: broadcast::channel(BACKLOG).0,
        }
    }
}

impl LogChannel {
    /// Hands `batch` to the subscribers listening now.
    pub fn publish(&self, batch: LogBatch) {
        let _ = self.batches.send(Arc::new(batch));
    }

    /// The lines of job `req.job_id` from now on, until the subscriber goes.
    pub fn subscribe(&self, req: SubscribeLogsRequest) -> mpsc::Receiver<Result<LogBatch, Status>> {
        let (tx, rx) = mpsc::channel(64);
        let mut batches = self.batches.subscribe();
        let job_id = req.job_id;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = batches.recv() => next,
                    () = tx.closed() => return,
                };
                let batch = match next {
                    Ok(batch) => {
                        let lines: Vec<_> = batch
                            .lines
                            .iter()
                            .filter(|l| l.job_id == job_id)
                            .cloned()
                            .collect();
                        if lines.is_empty() {
                            continue;
                        }
                        LogBatch {
                            lines,
                            node_id: batch.node_id.clone(),
                            node_ip: batch.node_ip.clone(),
                            dropped: 0,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => LogBatch {
                        dropped: n,
                        ..Default::default()
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_proto::LogLine;

    fn line(job_id: u32, text: &str) -> LogLine {
        LogLine {
            job_id,
            pid: 9,
            name: "f".into(),
            stderr: false,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_jobs_lines_only() {
        let logs = LogChannel::default();
        let mut one = logs.subscribe(SubscribeLogsRequest { job_id: 1 });
        logs.publish(LogBatch {
            lines: vec![line(2, "other job"), line(1, "mine")],
            node_ip: "10.0.0.2".into(),
            ..Default::default()
        });
        logs.publish(LogBatch {
            lines: vec![line(2, "other job only")],
            ..Default::default()
        });
        logs.publish(LogBatch {
            lines: vec![line(1, "mine again")],
            ..Default::default()
        });
        let first = one.recv().await.unwrap().unwrap();
        assert_eq!(first.lines.len(), 1);
        assert_eq!(first.lines[0].text, "mine");
        assert_eq!(first.node_ip, "10.0.0.2");
        let second = one.recv().await.unwrap().unwrap();
        assert_eq!(second.lines[0].text, "mine again");
    }
}
