//! Shared support for the workspace's examples, integration tests and benchmarks.
//!
//! The runtime itself lives in the `ray-core` crate (imported here as `ray`); this package
//! holds the programs that exercise it end to end, and [`with_ray`], the one way tests start
//! a runtime: it always shuts it down, even when the test fails.

pub use ray;

/// A real cluster on this machine (`ray_node::local_cluster`), and a driver's config for it.
pub mod browser;

pub mod cluster {
    pub use ray_node::local_cluster::*;

    /// A driver's config for `cluster`: its head's address and its token.
    pub fn config(cluster: &Cluster) -> ray::Config {
        ray::Config::cluster(cluster.address.clone()).auth_token(cluster.token())
    }
}

/// HTTP for tests of the dashboard.
pub mod http {
    use std::time::Duration;

    /// GETs `url`, with `Authorization: Bearer <token>` when a token is given, within 10 s;
    /// returns the status and the body (a 4xx or 5xx answer is returned, not an error).
    pub fn get(url: &str, token: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = agent.get(url);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }
}

use std::sync::Mutex;

/// Runs `f` inside a fresh session started with `config`, then shuts the session down and
/// checks that no worker process and no shared-memory file of this process is left. Panics
/// in `f` are re-raised after the cleanup. Sessions are process-global, so calls in one test
/// binary run one at a time.
pub fn with_ray<R>(config: ray::Config, f: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    ray::init(config).expect("ray::init");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ray::shutdown();
    let leftovers = (child_processes(), shm_files());
    match result {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(r) => {
            assert_eq!(
                leftovers,
                (vec![], vec![]),
                "processes or shared-memory files left behind"
            );
            r
        }
    }
}

/// Polls until `f` is true, or fails the test after 10 s: tests wait on events, not sleeps
/// (`ray::__private::eventually` with the usual patience).
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    ray::__private::eventually(std::time::Duration::from_secs(10), what, f);
}

/// Pids of live (not zombie) child processes of this process.
pub fn child_processes() -> Vec<u32> {
    children_of(std::process::id())
}

/// Pids of live (not zombie) child processes of process `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which is in parentheses and may hold spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

/// Shared memory of this process's sessions still there: files in `/dev/shm`, and arenas
/// (anonymous memory files) this process still maps.
pub fn shm_files() -> Vec<String> {
    let prefix = format!("rayrs-{}-", std::process::id());
    let mut left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    left.extend(
        maps.lines()
            .filter(|l| l.contains(&prefix))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_string()),
    );
    left
}
