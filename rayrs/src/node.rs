//! `rayrs start`, `stop`, `status` and `get-auth-token`: running the nodes of a cluster on
//! this machine, and looking at a cluster.
//!
//! A node started without `--block` is this program started again with `--block`, in a
//! session of its own with its output in `<temp>/logs`; the first process returns once the
//! node has written its record (`ray_node::records`), or says why it did not.

use clap::Args;
use ray_common::rpc::{Connect, RpcErrorKind, TonicConnect};
use ray_node::records::{self, NodeRecord};
use ray_node::{token, Node, NodeOptions};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

/// `rayrs start`.
#[derive(Args, Clone, Debug)]
pub struct StartArgs {
    /// Starts the head: the GCS and a node.
    #[arg(long, required_unless_present = "address")]
    head: bool,
    /// The head's address (HOST:PORT) to join.
    #[arg(long, conflicts_with = "head", value_name = "HOST:PORT")]
    address: Option<String>,
    /// The head's GCS port (0: a free one).
    #[arg(long, requires = "head", default_value_t = 6379)]
    port: u16,
    /// The address this node's servers listen on and other nodes reach it at.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    node_ip_address: IpAddr,
    /// CPUs the node offers (default: this machine's).
    #[arg(long, value_name = "N")]
    num_cpus: Option<f64>,
    /// GPUs the node offers.
    #[arg(long, value_name = "N")]
    num_gpus: Option<f64>,
    /// The `memory` resource the node offers, in bytes.
    #[arg(long, value_name = "BYTES")]
    memory: Option<f64>,
    /// Custom resources, as JSON: '{"name": amount}'.
    #[arg(long, value_name = "JSON")]
    resources: Option<String>,
    /// The object store's size in bytes.
    #[arg(long, value_name = "BYTES")]
    object_store_memory: Option<u64>,
    /// Where the node keeps its record and logs (default: $RAYRS_TEMP_DIR, or /tmp/rayrs, /tmp/rayrs-<uid> for a user other than root).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// The head's dashboard port (0: none). Unset, 8265, or another free port when 8265 is
    /// taken; set, a taken port fails the start.
    #[arg(long, requires = "head", value_name = "PORT")]
    dashboard_port: Option<u16>,
    /// The address the head's dashboard listens on. Whoever holds the token sees the
    /// cluster's state there: keep it on loopback unless the network is yours.
    #[arg(long, requires = "head", value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    dashboard_host: IpAddr,
    /// Stays in the foreground: this process is the node (SIGTERM stops it cleanly).
    #[arg(long)]
    block: bool,
}

/// `rayrs stop`.
#[derive(Args, Clone, Debug)]
pub struct StopArgs {
    /// Stops the nodes recorded under this temp dir (default: $RAYRS_TEMP_DIR, or /tmp/rayrs, /tmp/rayrs-<uid> for a user other than root).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// Kills the nodes at once (SIGKILL) instead of asking them to stop.
    #[arg(long)]
    force: bool,
}

/// `rayrs status`.
#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    /// The head's address (default: RAY_ADDRESS, else the head started on this machine).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Where to look for the head started on this machine.
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
}

/// How long a node started in the background may take to come up.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long `rayrs stop` waits for nodes to stop before it kills them.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `rayrs status` waits for the head.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

pub fn start(args: StartArgs) -> R<()> {
    let resources = resources(&args)?;
    let temp_dir = args
        .temp_dir
        .clone()
        .unwrap_or_else(records::default_temp_dir);
    records::prepare_temp_dir(&temp_dir).map_err(|e| e.to_string())?;
    let token = if args.head {
        let (token, created) = token::find_or_create().map_err(|e| e.to_string())?;
        if created && !args.block {
            if let Some(path) = token::token_path() {
                println!("Created the cluster's auth token in {}", path.display());
            }
        }
        token
    } else {
        token::required().map_err(|e| e.to_string())?
    };
    if !args.block {
        let record = start_in_background(&temp_dir)?;
        print_started(&record, args.node_ip_address, &temp_dir);
        return Ok(());
    }
    run_node(&args, resources, token.into(), &temp_dir)
}

/// The node's resources from the flags.
fn resources(args: &StartArgs) -> R<ray_scheduler::ResourceSet> {
    let cpus = args
        .num_cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let mut pairs = vec![
        (ray_scheduler::CPU.to_string(), cpus),
        (
            ray_scheduler::GPU.to_string(),
            args.num_gpus
                .unwrap_or_else(|| ray_raylet::gpus::detect().len() as f64),
        ),
    ];
    if let Some(memory) = args.memory {
        pairs.push(("memory".to_string(), memory));
    }
    if let Some(json) = &args.resources {
        let custom: BTreeMap<String, f64> = serde_json::from_str(json)
            .map_err(|e| format!("--resources must be a JSON object of numbers: {e}"))?;
        for name in custom.keys() {
            if [ray_scheduler::CPU, ray_scheduler::GPU, "memory"].contains(&name.as_str()) {
                return Err(format!(
                    "--resources may not set {name}: use --num-cpus, --num-gpus or --memory"
                ));
            }
        }
        pairs.extend(custom);
    }
    ray_scheduler::ResourceSet::from_pairs(pairs).map_err(|e| format!("node resources: {e}"))
}

/// Starts this program again with `--block`, detached, and waits for its record.
fn start_in_background(temp_dir: &Path) -> R<NodeRecord> {
    use std::os::unix::process::CommandExt;
    let logs = temp_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let log_path = logs.join(format!("node-{stamp}-{}.log", std::process::id()));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--block")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; the node leaves this terminal's session, so it
    // outlives this command and the shell's hangup.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting the node: {e}"))?;
    let pid = child.id();
    let started = Instant::now();
    loop {
        if let Some(record) = records::running(temp_dir)
            .into_iter()
            .find(|r| r.pid == pid)
        {
            return Ok(record);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "the node exited ({status}) before it started:\n{}",
                tail.join("\n")
            ));
        }
        if started.elapsed() > START_PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the node did not start within {START_PATIENCE:?} (log: {})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This process is the node until SIGTERM or SIGINT.
fn run_node(
    args: &StartArgs,
    resources: ray_scheduler::ResourceSet,
    token: Arc<str>,
    temp_dir: &Path,
) -> R<()> {
    ray_common::limits::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("rayrs-node")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // This node's copies of shipped binaries: its own (a node sharing the head's temp dir
    // still downloads), gone when it stops.
    let cache_dir = temp_dir.join("cache").join(std::process::id().to_string());
    let session = format!(
        "rayrs-{}-node-{}",
        std::process::id(),
        &ray_common::ids::hex(&ray_common::ids::random_bytes())[..8]
    );
    let options = NodeOptions {
        head: args
            .head
            .then(|| SocketAddr::new(args.node_ip_address, args.port)),
        gcs_address: args.address.clone(),
        ip: args.node_ip_address,
        resources,
        object_store_memory: args.object_store_memory,
        max_workers: None,
        limit_wait: Duration::from_secs(30),
        infeasible_waits: true,
        health: Some(ray_gcs::HealthConfig::from_vars(|k| std::env::var(k).ok())?),
        binary_dir: Some(temp_dir.join("binaries")),
        binary_cache: Some(cache_dir.clone()),
        log_dir: Some(
            ray_node::records::session_log_dir(temp_dir, &session).map_err(|e| e.to_string())?,
        ),
        publish_logs: true,
        submitted_jobs: true,
        token: token.clone(),
        session,
        dashboard: dashboard_bind(args),
        extra_metrics: Some(crate::metrics::install()),
    };
    let label = format!("node at {}", args.node_ip_address);
    runtime.block_on(async {
        let connect: Arc<dyn Connect> = Arc::new(TonicConnect::new(&token).labelled(&label));
        let mut node = Node::start(options, connect, Arc::new(ray_raylet::ProcessLauncher))
            .await
            .map_err(|e| e.to_string())?;
        let mut record = NodeRecord::of_this_process(
            args.head,
            node.gcs_address.clone(),
            node.node_manager_address.clone(),
            node.node_id.to_hex(),
        );
        record.dashboard_url = node.dashboard.as_ref().map(|d| d.url());
        if let Err(e) = record.write(temp_dir) {
            node.shutdown().await;
            return Err(e.to_string());
        }
        print_started(&record, args.node_ip_address, temp_dir);
        let grace = head_lost_grace()?;
        let manager = node.manager().clone();
        let outcome = tokio::select! {
            signal = wait_for_stop_signal() => {
                tracing::info!(signal, "stopping the node");
                Ok(())
            }
            why = manager.cut_off(grace) => {
                tracing::error!(%why, "this node leaves the cluster");
                Err(format!("the node stopped: {why}"))
            }
        };
        node.shutdown().await;
        NodeRecord::remove(temp_dir, record.pid);
        let _ = std::fs::remove_dir_all(&cache_dir);
        outcome
    })
}

/// Where the head's dashboard listens, as the flags say.
fn dashboard_bind(args: &StartArgs) -> Option<ray_dashboard::Bind> {
    let at = |port| SocketAddr::new(args.dashboard_host, port);
    match args.dashboard_port {
        _ if !args.head => None,
        None => Some(ray_dashboard::Bind::Preferred(at(
            ray_dashboard::DEFAULT_PORT,
        ))),
        Some(0) => None,
        Some(port) => Some(ray_dashboard::Bind::Exact(at(port))),
    }
}

/// How long a node keeps running without an answer from the GCS (Ray's
/// `RAY_gcs_rpc_server_reconnect_timeout_s`, 60 s by default).
fn head_lost_grace() -> R<Duration> {
    const NAME: &str = "RAY_gcs_rpc_server_reconnect_timeout_s";
    match std::env::var(NAME) {
        Err(_) => Ok(Duration::from_secs(60)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{NAME}={v} is not a positive number of seconds")),
    }
}

async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Cannot watch signals: the default action ends the process, and the workers die
        // with it (parent-death signal).
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What a started node prints. A node whose output is gone (a closed pipe, a closed
/// terminal) keeps running: the lines are lost, not the node.
fn print_started(record: &NodeRecord, ip: IpAddr, temp_dir: &Path) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    macro_rules! say {
        ($out:ident, $($arg:tt)*) => {
            let _ = writeln!($out, $($arg)*);
        };
    }
    let address = &record.gcs_address;
    say!(out, "Local node IP: {ip}");
    if record.head {
        say!(out, "RAY_ADDRESS={address}");
    }
    say!(
        out,
        "Node {} started{} (pid {}, node manager at {}).",
        &record.node_id,
        if record.head { " as the head" } else { "" },
        record.pid,
        record.node_manager_address
    );
    let dir = if *temp_dir == records::default_temp_dir() {
        String::new()
    } else {
        format!(" --temp-dir {}", temp_dir.display())
    };
    if record.head {
        say!(out, "Next steps");
        say!(out, "  To add another node to this cluster, run");
        say!(out, "    rayrs start --address {address}");
        say!(out, "  To run a driver on this cluster, run it with");
        say!(
            out,
            "    RAY_ADDRESS={address}   (or RAY_ADDRESS=auto on this machine)"
        );
        say!(out, "  To see the cluster, run");
        say!(out, "    rayrs status --address {address}");
        if let Some(url) = &record.dashboard_url {
            say!(
                out,
                "  The dashboard (it asks for the token `rayrs get-auth-token` prints):"
            );
            say!(out, "    {url}");
        }
    }
    say!(out, "  To stop the nodes started on this machine, run");
    say!(out, "    rayrs stop{dir}");
    let _ = out.flush();
}

pub fn stop(args: StopArgs) -> R<()> {
    let temp_dir = args.temp_dir.unwrap_or_else(records::default_temp_dir);
    let running = records::running(&temp_dir);
    if running.is_empty() {
        println!("No rayrs node is running under {}.", temp_dir.display());
        return Ok(());
    }
    // Nodes first, then heads (sorted so): a node that outlives its head only retries.
    let (nodes, heads): (Vec<_>, Vec<_>) = running.into_iter().partition(|r| !r.head);
    let mut killed = 0;
    for group in [nodes, heads] {
        let signal = if args.force {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        for r in &group {
            signal_node(r, signal);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while group.iter().any(NodeRecord::is_running) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for r in group.iter().filter(|r| r.is_running()) {
            eprintln!(
                "node {} (pid {}) did not stop within {STOP_GRACE:?}: killing it",
                r.node_id, r.pid
            );
            signal_node(r, libc::SIGKILL);
            killed += 1;
        }
        for r in &group {
            while r.is_running() {
                std::thread::sleep(Duration::from_millis(10));
            }
            NodeRecord::remove(&temp_dir, r.pid);
        }
    }
    let n = records::running(&temp_dir).len();
    println!(
        "Stopped the rayrs nodes under {}{}.",
        temp_dir.display(),
        if killed > 0 {
            format!(" ({killed} killed)")
        } else {
            String::new()
        }
    );
    if n > 0 {
        return Err(format!(
            "{n} node(s) started while stopping: run `rayrs stop` again"
        ));
    }
    Ok(())
}

fn signal_node(record: &NodeRecord, signal: libc::c_int) {
    // Checked just before: the record's pid still runs the node (same start time).
    if record.is_running() {
        // SAFETY: a plain syscall on a pid whose start time matches the node's record.
        unsafe {
            libc::kill(record.pid as libc::pid_t, signal);
        }
    }
}

/// The head to talk to: the flag, else RAY_ADDRESS, else the head running under the temp dir.
pub(crate) fn head_address(address: Option<String>, temp_dir: Option<PathBuf>) -> R<String> {
    let from_env = std::env::var("RAY_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty() && a != "auto" && a != "local" && a != "sync");
    if let Some(a) = address.or(from_env) {
        return Ok(a);
    }
    let dir = temp_dir.unwrap_or_else(records::default_temp_dir);
    records::head_address(&dir).ok_or_else(|| {
        format!(
            "no head runs on this machine (none recorded under {}): give --address",
            dir.display()
        )
    })
}

pub fn status(args: StatusArgs) -> R<()> {
    let address = head_address(args.address, args.temp_dir)?;
    let token = token::required().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reply = runtime.block_on(async {
        let connect = TonicConnect::new(&token).labelled("rayrs status");
        let gcs = connect.gcs(&address).map_err(|e| e.to_string())?;
        match tokio::time::timeout(STATUS_DEADLINE, gcs.get_all_nodes(ray_proto::Empty {})).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) if e.kind == RpcErrorKind::Unauthenticated => Err(format!(
                "the head at {address} refused this token ({}): use the head's token",
                e.message
            )),
            Ok(Err(e)) => Err(format!("cannot reach the head at {address}: {e}")),
            Err(_) => Err(format!(
                "cannot reach the head at {address}: no answer within {STATUS_DEADLINE:?}"
            )),
        }
    })?;
    print!("{}", status_text(&address, &reply));
    Ok(())
}

fn amounts(r: &Option<ray_proto::Resources>) -> BTreeMap<String, f64> {
    r.as_ref()
        .map(|r| r.amounts.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

/// `used/total name` for every resource of `total`.
fn usage(total: &BTreeMap<String, f64>, available: &BTreeMap<String, f64>) -> Vec<String> {
    total
        .iter()
        .map(|(name, t)| {
            let used = t - available.get(name).copied().unwrap_or(*t);
            if name == "memory" {
                format!("{}/{} memory", bytes(used), bytes(*t))
            } else {
                format!("{used:.1}/{t:.1} {name}")
            }
        })
        .collect()
}

fn bytes(n: f64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    if n >= GIB {
        format!("{:.2}GiB", n / GIB)
    } else {
        format!("{:.0}MiB", n / (1u64 << 20) as f64)
    }
}

/// What `rayrs status` prints, in the shape of Ray's.
fn status_text(address: &str, reply: &ray_proto::GetAllNodesReply) -> String {
    use std::fmt::Write;
    let (nodes, actor_demands) = (&reply.nodes, &reply.actor_demands);
    let mut out = String::new();
    let _ = writeln!(out, "======== Cluster status: {address} ========");
    let (alive, dead): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.alive);
    let _ = writeln!(out, "Node status");
    let _ = writeln!(
        out,
        "---------------------------------------------------------------"
    );
    let _ = writeln!(out, "Active:");
    if alive.is_empty() {
        let _ = writeln!(out, " (no active nodes)");
    }
    let mut total = BTreeMap::new();
    let mut available = BTreeMap::new();
    for n in &alive {
        let (t, a) = (amounts(&n.total), amounts(&n.available));
        let _ = writeln!(
            out,
            " node_{} {}{}: {}",
            ray_common::ids::hex(&n.node_id),
            n.node_manager_address,
            if n.is_head { " (head)" } else { "" },
            usage(&t, &a).join(", ")
        );
        for (k, v) in t {
            *total.entry(k).or_insert(0.0) += v;
        }
        for (k, v) in a {
            *available.entry(k).or_insert(0.0) += v;
        }
    }
    let _ = writeln!(out, "Dead:");
    if dead.is_empty() {
        let _ = writeln!(out, " (no dead nodes)");
    }
    for n in &dead {
        let _ = writeln!(
            out,
            " node_{} {}: {}",
            ray_common::ids::hex(&n.node_id),
            n.node_manager_address,
            if n.death_reason.is_empty() {
                "dead"
            } else {
                &n.death_reason
            }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Resources");
    let _ = writeln!(
        out,
        "---------------------------------------------------------------"
    );
    let _ = writeln!(out, "Usage:");
    for line in usage(&total, &available) {
        let _ = writeln!(out, " {line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Demands:");
    let demands: Vec<&ray_proto::Demand> = alive.iter().flat_map(|n| &n.demands).collect();
    if demands.is_empty() && actor_demands.is_empty() {
        let _ = writeln!(out, " (no resource demands)");
    }
    for (d, what) in demands
        .into_iter()
        .map(|d| (d, "pending"))
        .chain(actor_demands.iter().map(|d| (d, "actors pending")))
    {
        let _ = match d.busy {
            true => writeln!(
                out,
                " {:?}: {} {what}, waiting for resources in use",
                amounts(&d.shape),
                d.count
            ),
            false => writeln!(
                out,
                " {:?}: {} {what}, no alive node can hold it ({})",
                amounts(&d.shape),
                d.count,
                d.reason
            ),
        };
    }
    out
}

pub fn get_auth_token(generate: bool) -> R<()> {
    let token = if generate {
        token::find_or_create().map_err(|e| e.to_string())?.0
    } else {
        token::find().map_err(|e| e.to_string())?.ok_or_else(|| {
            "no auth token (RAY_AUTH_TOKEN is unset and there is no ~/.rayrs/auth_token): \
             `rayrs get-auth-token --generate` creates one"
                .to_string()
        })?
    };
    println!("{token}");
    Ok(())
}
