//! A real cluster on this machine, like Ray's `cluster_utils.Cluster`, for tests and the
//! cluster benchmark: a head and nodes as separate `rayrs start --block` processes, each with
//! its own ports and store, sharing a temp dir and a fresh auth token. Dropping the
//! [`Cluster`] stops every node (SIGTERM, then SIGKILL after a grace period) and removes the
//! temp dir, even when the test failed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Health checks as Ray's tests shrink them: a killed node is declared dead within about
/// half a second (five refused checks 100 ms apart); one answer may take a second (a loaded
/// machine).
pub const HEALTH_CHECKS: [(&str, &str); 4] = [
    ("RAY_health_check_initial_delay_ms", "0"),
    ("RAY_health_check_period_ms", "100"),
    ("RAY_health_check_timeout_ms", "1000"),
    ("RAY_health_check_failure_threshold", "5"),
];

/// How long a node may take to start.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long a node may take to stop cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One node process of a [`Cluster`].
pub struct NodeProcess {
    /// Its node id (32 hex digits, as `ray::nodes()` prints it).
    pub node_id: String,
    /// Its node manager's address.
    pub node_manager_address: String,
    child: Child,
}

impl NodeProcess {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it: SIGTERM and a wait (clean), or SIGKILL (a crash). Returns once it is reaped.
    fn stop(&mut self, clean: bool) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: a plain syscall on our own child, not yet reaped (so its pid is not reused).
        unsafe {
            libc::kill(
                self.child.id() as libc::pid_t,
                if clean { libc::SIGTERM } else { libc::SIGKILL },
            );
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A head and nodes, each a `rayrs` process. See the module's doc.
pub struct Cluster {
    rayrs: PathBuf,
    dir: PathBuf,
    token: String,
    /// The head's GCS address (what `RAY_ADDRESS` is set to).
    pub address: String,
    /// The head, then the nodes added, in order (`None` once removed).
    pub nodes: Vec<Option<NodeProcess>>,
}

impl Cluster {
    /// Starts the head with `args` (resource flags: `--num-cpus 1`, ...) using the `rayrs`
    /// binary at `rayrs`.
    pub fn start(rayrs: impl Into<PathBuf>, args: &[&str]) -> Cluster {
        Self::start_in(rayrs, &[], args)
    }

    /// [`Cluster::start`], the head's process started through `prefix` (a command that runs
    /// the rest of its arguments, such as `ip netns exec NAME`).
    pub fn start_in(rayrs: impl Into<PathBuf>, prefix: &[&str], args: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "rayrs-cluster-{}-{}",
            std::process::id(),
            &crate::token::generate()[..8]
        ));
        std::fs::create_dir_all(dir.join("home")).expect("the cluster's temp dir");
        let mut cluster = Cluster {
            rayrs: rayrs.into(),
            dir,
            token: crate::token::generate(),
            address: String::new(),
            nodes: Vec::new(),
        };
        let head = cluster.spawn(prefix, &[&["--head", "--port", "0"], args].concat());
        cluster.nodes.push(Some(head));
        cluster
    }

    /// The cluster's auth token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The temp dir the nodes share (records, logs, the home of their token).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a node with `args`; returns its index in [`Cluster::nodes`].
    pub fn add_node(&mut self, args: &[&str]) -> usize {
        self.add_node_in(&[], args)
    }

    /// [`Cluster::add_node`], its process started through `prefix` (see
    /// [`Cluster::start_in`]).
    pub fn add_node_in(&mut self, prefix: &[&str], args: &[&str]) -> usize {
        let address = self.address.clone();
        let node = self.spawn(prefix, &[&["--address", address.as_str()], args].concat());
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    /// The node `index`'s process (panics if it was removed).
    pub fn node(&self, index: usize) -> &NodeProcess {
        self.nodes[index].as_ref().expect("a node not removed")
    }

    /// Removes node `index`: cleanly (SIGTERM) or as a crash (SIGKILL).
    pub fn remove_node(&mut self, index: usize, clean: bool) {
        if let Some(mut node) = self.nodes.get_mut(index).and_then(Option::take) {
            node.stop(clean);
        }
    }

    /// A `rayrs` command with this cluster's token, home and temp dir.
    pub fn rayrs(&self, args: &[&str]) -> Command {
        self.rayrs_in(&[], args)
    }

    /// [`Cluster::rayrs`] run through `prefix`.
    pub fn rayrs_in(&self, prefix: &[&str], args: &[&str]) -> Command {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(&self.rayrs);
                cmd
            }
            None => Command::new(&self.rayrs),
        };
        cmd.args(args)
            .env("RAY_AUTH_TOKEN", &self.token)
            .env("HOME", self.dir.join("home"))
            .env("RAYRS_TEMP_DIR", &self.dir)
            .env_remove("RAY_ADDRESS")
            .envs(HEALTH_CHECKS.iter().copied());
        // A node logs its life at info; here only what goes wrong.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd
    }

    fn spawn(&mut self, prefix: &[&str], args: &[&str]) -> NodeProcess {
        let mut cmd = self.rayrs_in(prefix, &[&["start", "--block"], args].concat());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting rayrs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, read) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end: a node writing to a closed pipe would get EPIPE.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match read.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("rayrs start {args:?} did not start ({status:?})");
                }
            };
            if let Some(address) = line.strip_prefix("RAY_ADDRESS=") {
                self.address = address.trim().to_string();
            }
            // "Node <id> started[ as the head] (pid <pid>, node manager at <address>)."
            if let Some(rest) = line.strip_prefix("Node ") {
                let node_id = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let node_manager_address = rest
                    .rsplit_once("node manager at ")
                    .map(|(_, a)| a.trim_end_matches(").").to_string())
                    .unwrap_or_default();
                return NodeProcess {
                    node_id,
                    node_manager_address,
                    child,
                };
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first, the head last, as `rayrs stop` does.
        for node in self.nodes.iter_mut().rev().flatten() {
            node.stop(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
