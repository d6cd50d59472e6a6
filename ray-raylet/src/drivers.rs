//! Drivers attached to this node: when a driver's process ends (returned without
//! `shutdown`, crashed, killed: its pidfd on this machine, or the stream a driver on another
//! machine holds open), its job is finished on every node through the GCS, so none of its
//! workers is left running (the hosts of its detached actors excepted, as the GCS keeps
//! them). A driver that shuts down finishes its job itself; the second finish finds
//! nothing left to stop.

use crate::pool::NodeManager;
use std::os::fd::{FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

impl NodeManager {
    /// Watches process `pid` (a driver of job `job_id` on this machine) until it ends, then
    /// finishes its job. `Err` if there is no such process.
    pub fn watch_driver(&self, job_id: u32, pid: u32) -> std::io::Result<()> {
        let exited = process_exit(pid)?;
        let me = self.clone();
        tokio::spawn(async move {
            // Readable once the process has ended.
            let _ = exited.readable().await;
            tracing::info!(
                job = job_id,
                pid,
                "the job's driver ended; finishing the job"
            );
            me.driver_gone(job_id).await;
        });
        Ok(())
    }

    /// Watches a driver of job `job_id` on another machine by a stream it holds open: the
    /// stream's items (one every few seconds) keep the connection busy, and when the driver
    /// goes (its process ends, its machine stops answering keepalives) its job finishes.
    pub(crate) fn watch_driver_stream(
        &self,
        job_id: u32,
    ) -> tokio::sync::mpsc::Receiver<Result<ray_proto::Empty, tonic::Status>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DRIVER_STREAM_PERIOD);
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tick.tick() => {
                        if tx.try_send(Ok(ray_proto::Empty {})).is_err() && tx.is_closed() {
                            break;
                        }
                    }
                }
            }
            tracing::info!(
                job = job_id,
                "the job's driver (on another machine) went away; finishing the job"
            );
            me.driver_gone(job_id).await;
        });
        rx
    }

    /// Finishes the job of a driver that is gone, on every node: through the GCS (which
    /// keeps the hosts of the job's detached actors), else at least here.
    async fn driver_gone(&self, job_id: u32) {
        let req = ray_proto::FinishJobRequest {
            job_id,
            keep_workers: Vec::new(),
        };
        let told = match self.gcs() {
            Some(gcs) => gcs.finish_job(req).await.map_err(|e| e.to_string()),
            None => Err("no client of the GCS".to_string()),
        };
        if let Err(e) = told {
            tracing::warn!(job = job_id, error = %e, "could not tell the GCS that a job ended");
            self.finish_job(job_id, &[]);
        }
    }
}

/// How often a remote driver's watch stream sends a keepalive item.
const DRIVER_STREAM_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// A descriptor that becomes readable when process `pid` ends (Linux's pidfd: no polling,
/// and never confused with a later process of the same pid).
pub(crate) fn process_exit(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and is owned by no one else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the descriptor, which stays open (and the same) until the
    // AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
