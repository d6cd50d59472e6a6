//! Store configuration and the default capacity.

use std::path::{Path, PathBuf};

/// The directory used when [`StoreConfig::dir`] is `None` and `/dev/shm` exists.
pub const SHM_DIR: &str = "/dev/shm";

/// Fallback capacity when the machine's RAM cannot be read: 2 GiB.
const FALLBACK_CAPACITY: u64 = 2 << 30;
/// Upper bound of the default capacity: 200 GB (as Ray).
const MAX_DEFAULT_CAPACITY: u64 = 200_000_000_000;

/// How to create a node's object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Directory of the arena file; `None` means [`StoreConfig::default_dir`] (`/dev/shm`, or
    /// the system temp dir where `/dev/shm` does not exist).
    pub dir: Option<PathBuf>,
    /// File name of the arena, unique per session, e.g. `"rayrs-<session>"`. Must be a plain
    /// file name (no `/`, not `.` or `..`).
    pub name: String,
    /// Size of the arena in bytes. Rounded down to a multiple of [`crate::ALIGNMENT`].
    pub capacity: u64,
}

impl StoreConfig {
    /// A config with the default directory and [`StoreConfig::default_capacity`].
    pub fn new(name: impl Into<String>) -> Self {
        StoreConfig {
            dir: None,
            name: name.into(),
            capacity: Self::default_capacity(),
        }
    }

    /// Sets the capacity (builder style).
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the directory (builder style).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// `/dev/shm` if it exists, otherwise [`std::env::temp_dir`].
    pub fn default_dir() -> PathBuf {
        let shm = Path::new(SHM_DIR);
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    }

    /// The directory the arena file goes in: [`StoreConfig::dir`] or the default.
    pub fn resolved_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(Self::default_dir)
    }

    /// The default capacity: 30% of total RAM (from `/proc/meminfo`; 2 GiB if unreadable),
    /// at most 200 GB, and, when the default directory is `/dev/shm`, at most 95% of the
    /// space available there. A multiple of [`crate::ALIGNMENT`].
    pub fn default_capacity() -> u64 {
        let mut cap = total_memory_bytes()
            .map(|ram| ram / 10 * 3)
            .unwrap_or(FALLBACK_CAPACITY)
            .min(MAX_DEFAULT_CAPACITY);
        if Self::default_dir() == Path::new(SHM_DIR) {
            if let Some(avail) = available_bytes(Path::new(SHM_DIR)) {
                cap = cap.min(avail / 100 * 95);
            }
        }
        cap & !(crate::ALIGNMENT - 1)
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let mult = match parts.next() {
        Some("kB") | Some("KB") | Some("kb") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(mult)
}

/// Bytes available to unprivileged users on the file system holding `path` (statvfs).
pub(crate) fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, so all-zero is a valid value; `c_path` is a valid
    // NUL-terminated string and `st` a valid out-pointer for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let bytes = (st.f_bavail as u64).checked_mul(u64::from(st.f_frsize))?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capacity_is_sane() {
        let cap = StoreConfig::default_capacity();
        assert!(cap > 0);
        assert_eq!(cap % crate::ALIGNMENT, 0);
        assert!(cap <= MAX_DEFAULT_CAPACITY);
        if let Some(ram) = total_memory_bytes() {
            assert!(cap <= ram / 10 * 3);
        }
        if StoreConfig::default_dir() == Path::new(SHM_DIR) {
            let avail = available_bytes(Path::new(SHM_DIR)).unwrap();
            assert!(cap <= avail);
        }
    }

    #[test]
    fn default_dir_exists() {
        assert!(StoreConfig::default_dir().is_dir());
        let c = StoreConfig::new("x").with_capacity(4096);
        assert_eq!(c.resolved_dir(), StoreConfig::default_dir());
        assert_eq!(c.capacity, 4096);
    }
}
