//! What a node started by `rayrs start` leaves in its temp dir while it runs: one record per
//! node process (`<temp>/nodes/<pid>.json`), which `rayrs stop` stops, `rayrs status` and
//! `RAY_ADDRESS=auto` read the head's address from, and the node removes as it stops.
//!
//! A record names its process by pid and start time, so a pid reused by another process is
//! never taken for the node (nor signalled by `rayrs stop`).

use crate::NodeError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The environment variable that moves the default temp dir.
pub const TEMP_DIR_ENV: &str = "RAYRS_TEMP_DIR";

/// The temp dir nodes of this machine use unless told another: `$RAYRS_TEMP_DIR`, else
/// `/tmp/rayrs` for root and `/tmp/rayrs-<uid>` for any other user (Ray's `/tmp/ray` is
/// shared, and a second user of the machine finds it taken: each user's nodes keep records
/// only that user may write).
pub fn default_temp_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::var_os(TEMP_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(default_dir_name(uid)))
}

/// The default temp dir's name for user `uid`.
fn default_dir_name(uid: u32) -> String {
    match uid {
        0 => "rayrs".to_string(),
        uid => format!("rayrs-{uid}"),
    }
}

/// Makes `temp_dir` ready for a node: created private to this user (0700) if absent, and
/// refused if it is another user's or a symbolic link (its records name the pids `rayrs
/// stop` signals and the address `RAY_ADDRESS=auto` connects to: only its owner may write
/// them).
pub fn prepare_temp_dir(temp_dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(temp_dir)
        .map_err(|e| NodeError::Records(format!("{}: {e}", temp_dir.display())))?;
    check_owned(temp_dir)
}

/// `Ok` if `dir` is a directory of this user that no one else may write to.
fn check_owned(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: &str| {
        Err(NodeError::Records(format!(
            "{} {why}; choose another with --temp-dir or ${TEMP_DIR_ENV}",
            dir.display()
        )))
    };
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| NodeError::Records(format!("{}: {e}", dir.display())))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return refuse("is not a directory");
    }
    if meta.uid() != me {
        return refuse(&format!(
            "belongs to user {}, not to this user ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(&format!(
            "may be written by other users (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// One running node, as its process recorded itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's process.
    pub pid: u32,
    /// When that process started (clock ticks after boot): tells it from a reused pid.
    pub start_time: u64,
    /// Whether it is the head (serves the GCS).
    pub head: bool,
    /// The GCS it belongs to (its own, on the head).
    pub gcs_address: String,
    /// Its node manager.
    pub node_manager_address: String,
    /// Its node id (hex).
    pub node_id: String,
    /// Its dashboard (`http://HOST:PORT`), on a head that serves one.
    #[serde(default)]
    pub dashboard_url: Option<String>,
}

impl NodeRecord {
    /// A record of this process.
    pub fn of_this_process(
        head: bool,
        gcs_address: String,
        node_manager_address: String,
        node_id: String,
    ) -> Self {
        let pid = std::process::id();
        NodeRecord {
            pid,
            start_time: start_time(pid).unwrap_or_default(),
            head,
            gcs_address,
            node_manager_address,
            node_id,
            dashboard_url: None,
        }
    }

    /// Writes it into `temp_dir` (atomically: a reader never sees half of it).
    pub fn write(&self, temp_dir: &Path) -> Result<PathBuf, NodeError> {
        let dir = temp_dir.join("nodes");
        let io = |e: std::io::Error| NodeError::Records(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join(format!("{}.json", self.pid));
        let partial = dir.join(format!(".{}.json.partial", self.pid));
        let text = serde_json::to_string(self).map_err(|e| NodeError::Records(e.to_string()))?;
        std::fs::write(&partial, text).map_err(io)?;
        std::fs::rename(&partial, &path).map_err(io)?;
        Ok(path)
    }

    /// Removes this process's record from `temp_dir`.
    pub fn remove(temp_dir: &Path, pid: u32) {
        let _ = std::fs::remove_file(temp_dir.join("nodes").join(format!("{pid}.json")));
    }

    /// True while the process it names runs (the same process, not a reused pid).
    pub fn is_running(&self) -> bool {
        start_time(self.pid).is_some_and(|t| t == self.start_time) && !is_zombie(self.pid)
    }
}

/// The records of nodes running under `temp_dir`, heads last; records of processes gone
/// are removed.
pub fn running(temp_dir: &Path) -> Vec<NodeRecord> {
    if let Err(e) = check_owned(temp_dir) {
        if temp_dir.exists() {
            tracing::warn!("not reading node records: {e}");
        }
        return Vec::new();
    }
    let dir = temp_dir.join("nodes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let record = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<NodeRecord>(&t).ok());
        match record {
            Some(r) if r.is_running() => out.push(r),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|r| (r.head, r.pid));
    out
}

/// The GCS address of the head running under `temp_dir`, for `RAY_ADDRESS=auto`.
pub fn head_address(temp_dir: &Path) -> Option<String> {
    running(temp_dir)
        .into_iter()
        .find(|r| r.head)
        .map(|r| r.gcs_address)
}

/// Field 22 of `/proc/<pid>/stat`: when the process started.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Log directories of sessions whose process is gone that [`session_log_dir`] keeps.
pub const LOG_SESSIONS_KEPT: usize = 20;

/// Where the workers of session `session` (named `rayrs-<pid>-...` by the process that runs
/// it) write their output: `<temp>/logs/<session>`, made here. Those of sessions whose
/// process is gone stay for reading after the run, the newest [`LOG_SESSIONS_KEPT`] of
/// them: older ones are removed here (Ray keeps every session's; a test suite starts
/// hundreds).
pub fn session_log_dir(temp_dir: &Path, session: &str) -> Result<PathBuf, NodeError> {
    prepare_temp_dir(temp_dir)?;
    let logs = temp_dir.join("logs");
    let dir = logs.join(session);
    std::fs::create_dir_all(&dir)
        .map_err(|e| NodeError::Records(format!("{}: {e}", dir.display())))?;
    let mut ended: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !session_alive(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    ended.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, old) in ended.into_iter().skip(LOG_SESSIONS_KEPT) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dir)
}

/// Whether the process named in a session's name (`rayrs-<pid>-...`) still runs; a name of
/// another form counts as alive (never removed).
fn session_alive(name: &str) -> bool {
    let pid = name
        .strip_prefix("rayrs-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    match pid {
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_but_root_has_a_default_temp_dir_of_their_own() {
        assert_eq!(default_dir_name(0), "rayrs");
        assert_eq!(default_dir_name(1000), "rayrs-1000");
        assert_ne!(default_dir_name(1000), default_dir_name(1001));
    }

    #[test]
    fn a_record_is_found_while_its_process_runs_and_dropped_after() {
        let dir = std::env::temp_dir().join(format!("rayrs-records-{}", std::process::id()));
        let me = NodeRecord::of_this_process(
            true,
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "ab".into(),
        );
        me.write(&dir).unwrap();
        // A record of a pid that runs something else (start time differs) is stale.
        let stale = NodeRecord {
            pid: 1,
            start_time: u64::MAX,
            ..me.clone()
        };
        stale.write(&dir).unwrap();
        assert_eq!(running(&dir), vec![me.clone()]);
        assert_eq!(head_address(&dir).as_deref(), Some("127.0.0.1:1"));
        assert!(
            !dir.join("nodes/1.json").exists(),
            "the stale record is removed"
        );
        NodeRecord::remove(&dir, me.pid);
        assert!(running(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temp_dir_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("rayrs-trust-{}", std::process::id()));
        let fresh = root.join("fresh");
        prepare_temp_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "created private");

        let open = root.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_temp_dir(&open).unwrap_err().to_string();
        assert!(err.contains("written by other users"), "{err}");
        // A planted record there is not read either.
        let planted =
            NodeRecord::of_this_process(true, "10.0.0.1:1".into(), "x".into(), "ab".into());
        planted.write(&open).unwrap();
        assert!(running(&open).is_empty());

        let link = root.join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let err = prepare_temp_dir(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
