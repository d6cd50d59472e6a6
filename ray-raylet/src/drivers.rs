//! Drivers attached to this node: when a driver's process ends (returned without
//! `shutdown`, crashed, killed), its job is finished on every node through the GCS, so none
//! of its workers is left running (the hosts of its detached actors excepted, as the GCS
//! keeps them). A driver that shuts down finishes its job itself; the second finish finds
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
            // Through the GCS, which keeps the hosts of the job's detached actors and tells
            // every node (this one included).
            let req = ray_proto::FinishJobRequest {
                job_id,
                keep_workers: Vec::new(),
            };
            let told = match me.gcs() {
                Some(gcs) => gcs.finish_job(req).await.map_err(|e| e.to_string()),
                None => Err("no client of the GCS".to_string()),
            };
            if let Err(e) = told {
                // Without the GCS, this node at least stops the job's workers here.
                tracing::warn!(job = job_id, error = %e, "could not tell the GCS that a job ended");
                me.finish_job(job_id, &[]);
            }
        });
        Ok(())
    }
}

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
