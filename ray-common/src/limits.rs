//! What this machine and process may use: the open-file limit and the memory available.
//! Read in one place, so the servers' connection caps and the node's worker limit agree.

/// This process's soft limit of open files, or `None` if it cannot be read.
pub fn fd_limit() -> Option<u64> {
    let mut fds = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut fds) } == 0).then_some(fds.rlim_cur)
}

/// Raises this process's soft limit of open files to its hard limit (as Go's runtime and
/// Ray do): a node's servers hold connections of every worker, and the worker limit is
/// derived from it. Child processes inherit it.
pub fn raise_fd_limit() {
    // SAFETY: get and set of this process's own limit through a struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise the open-file limit");
            }
        }
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes: what the machine can still give processes
/// without swapping.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_are_read() {
        super::raise_fd_limit();
        assert!(super::fd_limit().is_some_and(|n| n >= 64));
        assert!(super::available_memory().is_some_and(|m| m > 0));
    }
}
