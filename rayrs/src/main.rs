//! `rayrs`: the command-line tool of the Rust Ray runtime.
//!
//! ```text
//! rayrs start --head [--port 6379] [--node-ip-address IP] [--dashboard-port 8265] [--dashboard-host IP] [resources] [--temp-dir DIR] [--block]
//! rayrs start --address HOST:PORT [resources] [--temp-dir DIR] [--block]
//! rayrs stop [--temp-dir DIR] [--force]
//! rayrs status [--address HOST:PORT]
//! rayrs get-auth-token [--generate]
//! rayrs list tasks|actors|nodes|jobs|workers|objects [--address HOST:PORT] [--filter KEY=VALUE].. [--limit N] [--format table|json]
//! rayrs summary tasks [--address HOST:PORT] [--filter KEY=VALUE].. [--format table|json]
//! rayrs timeline [--address HOST:PORT] [--filter KEY=VALUE].. [--output trace.json]
//! rayrs explain <TASK OR ACTOR ID> [--address HOST:PORT] [--format table|json]
//! rayrs job submit [--address http://HOST:PORT] [--submission-id ID] [--runtime-env-json JSON] [--no-wait] -- PROGRAM [ARGS]
//! rayrs job status|logs [--follow]|stop ID; rayrs job list
//! rayrs microbenchmark [--filter PATTERN] [--json] [--quick]
//! rayrs report --ray RAY.jsonl --ours OURS.jsonl [--machine TEXT] [--markdown FILE] [--svg FILE]
//! ```
//!
//! `start`, `stop`, `status` and `get-auth-token` run the nodes of a cluster on this machine
//! (`node.rs`), as Ray's commands of the same names do. `microbenchmark` is Ray's
//! `ray microbenchmark` (python/ray/_private/ray_perf.py), workload for workload, with the same
//! metric names, so the two print comparable lines. `report` turns one JSON-lines run of each
//! into the side-by-side table and the chart of ratios (benches/compare-with-ray.sh calls it).
//! `list` and `summary` are the state API (`state.rs`), as Ray's `ray list` and `ray summary`.
//!
//! Worker processes are the job's binary (a driver's), never this one.
#![allow(clippy::print_stdout)] // a command-line tool: printing is its output

mod cluster_bench;
mod job;
mod metrics;
mod microbenchmark;
mod node;
mod report;
mod state;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The Rust Ray runtime's command-line tool.
#[derive(Parser)]
#[command(name = "rayrs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts a node of a cluster on this machine: the head (`--head`) or a node that joins
    /// one (`--address`). In the background unless `--block`.
    Start(node::StartArgs),
    /// Stops every node started on this machine (under the temp dir).
    Stop(node::StopArgs),
    /// The cluster's nodes and resources.
    Status(node::StatusArgs),
    /// Prints the cluster's auth token (RAY_AUTH_TOKEN, else ~/.rayrs/auth_token).
    GetAuthToken {
        /// Creates the token file with a fresh token if there is no token.
        #[arg(long)]
        generate: bool,
    },
    /// Lists the cluster's tasks, actors, nodes or jobs (Ray's `ray list`).
    List(state::ListArgs),
    /// Counts the cluster's tasks per function and state (Ray's `ray summary tasks`).
    Summary(state::SummaryArgs),
    /// Writes the cluster's tasks as a Chrome trace (Ray's `ray timeline`).
    Timeline(state::TimelineArgs),
    /// Says why a task or actor has not run yet: its arguments, resources in use (and who
    /// holds them), an infeasible shape, a worker starting, its placement group.
    Explain(state::ExplainArgs),
    /// Submits programs to run as jobs on the head, and follows them (Ray's `ray job`).
    Job(job::JobArgs),
    /// Ray's microbenchmark on this machine (local mode, or the cluster in RAY_ADDRESS).
    Microbenchmark {
        /// Runs only the metrics whose name contains PATTERN.
        #[arg(long, value_name = "PATTERN")]
        filter: Option<String>,
        /// Prints one {"name","per_second","sd"} object per line.
        #[arg(long)]
        json: bool,
        /// One short round per metric with small sizes (a smoke test, for CI).
        #[arg(long)]
        quick: bool,
        /// The cross-node workloads instead, on a head and two nodes started on this machine.
        #[arg(long)]
        cluster: bool,
    },
    /// The side-by-side table of two JSON-lines runs (Ray's and ours) with the ratios.
    Report {
        /// Ray's run.
        #[arg(long, value_name = "RAY.jsonl")]
        ray: String,
        /// Our run.
        #[arg(long, value_name = "OURS.jsonl")]
        ours: String,
        /// A line describing the machine.
        #[arg(long, default_value = "")]
        machine: String,
        /// Also writes the table as Markdown.
        #[arg(long, value_name = "FILE")]
        markdown: Option<String>,
        /// Also writes the ratios as an SVG bar chart.
        #[arg(long, value_name = "FILE")]
        svg: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // RUST_LOG=ray=debug shows the runtime's own logs on stderr (a node's go to its log file
    // when it runs in the background).
    let default_filter = match &cli.command {
        Command::Start(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Start(args) => node::start(args),
        Command::Stop(args) => node::stop(args),
        Command::Status(args) => node::status(args),
        Command::GetAuthToken { generate } => node::get_auth_token(generate),
        Command::List(args) => state::list(args),
        Command::Summary(args) => state::summary(args),
        Command::Timeline(args) => state::timeline(args),
        Command::Explain(args) => state::explain(args),
        Command::Job(args) => job::run(args),
        Command::Microbenchmark {
            filter,
            json,
            quick,
            cluster,
        } => microbenchmark::main(filter, json, quick, cluster),
        Command::Report {
            ray,
            ours,
            machine,
            markdown,
            svg,
        } => report::main(ray, ours, machine, markdown, svg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rayrs: {e}");
            ExitCode::FAILURE
        }
    }
}
