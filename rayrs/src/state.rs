//! `rayrs list tasks|actors|nodes|jobs|workers|objects`, `rayrs summary tasks` and `rayrs timeline` (Ray's
//! `ray list`, `ray summary` and `ray timeline`): the state API from the command line, as a
//! table, as JSON or as a Chrome trace.

use crate::node::head_address;
use ray_common::rpc::{Connect, RpcErrorKind, TonicConnect};
use ray_node::token;
use ray_state::{ListOptions, StateClient, StateError};
use std::path::PathBuf;
use std::time::Duration;

type R<T> = Result<T, String>;

/// How long a listing waits for the GCS.
const DEADLINE: Duration = Duration::from_secs(10);

/// What `rayrs list` lists.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    Tasks,
    Actors,
    Nodes,
    Jobs,
    Workers,
    Objects,
}

/// How rows are printed.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Where the head is and which rows: what `list`, `summary` and `timeline` share.
#[derive(clap::Args)]
pub struct Target {
    /// The head's address (default: RAY_ADDRESS, else the head started on this machine).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Where to look for the head started on this machine.
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// Only rows whose field is (key=value) or is not (key!=value) this; repeatable, all
    /// must hold.
    #[arg(long = "filter", short = 'f', value_name = "KEY=VALUE")]
    filters: Vec<String>,
}

/// The rows and how to print them: what `list` and `summary` share.
#[derive(clap::Args)]
pub struct Query {
    #[command(flatten)]
    target: Target,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `rayrs list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// tasks, actors, nodes, jobs, workers or objects.
    kind: Kind,
    #[command(flatten)]
    query: Query,
    /// At most this many rows (default 100).
    #[arg(long)]
    limit: Option<u32>,
}

/// `rayrs summary tasks`.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// What to summarize: tasks.
    #[arg(value_parser = ["tasks"])]
    what: String,
    #[command(flatten)]
    query: Query,
}

/// `rayrs timeline`.
#[derive(clap::Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    target: Target,
    /// Where to write the trace (default: timeline-<unix seconds>.json here).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `rayrs explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The task's or actor's id (hex, as `rayrs list` prints it).
    id: String,
    /// The head's address (default: RAY_ADDRESS, else the head started on this machine).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Where to look for the head started on this machine.
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Says why a task or actor has not run (or that it has).
pub fn explain(args: ExplainArgs) -> R<()> {
    let target = Target {
        address: args.address,
        temp_dir: args.temp_dir,
        filters: Vec::new(),
    };
    let id = args.id;
    let why = ask(target, async |c| c.explain(&id).await)?;
    match args.format {
        Format::Table => print!("{why}"),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&why).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// Runs `query` against the head's GCS within [`DEADLINE`], its errors in words.
fn ask<T>(target: Target, query: impl AsyncFnOnce(StateClient) -> Result<T, StateError>) -> R<T> {
    let address = head_address(target.address, target.temp_dir)?;
    // Workers and objects are asked of every node and process at once.
    ray_common::limits::raise_fd_limit();
    let token = token::required().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let connect = TonicConnect::new(&token).labelled("rayrs list");
        let gcs = connect.gcs(&address).map_err(|e| e.to_string())?;
        let client = StateClient::with_fan_out(gcs, std::sync::Arc::new(connect));
        match tokio::time::timeout(DEADLINE, query(client)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(StateError::Rpc(e))) if e.kind == RpcErrorKind::Unauthenticated => Err(format!(
                "the head at {address} refused this token ({}): use the head's token",
                e.message
            )),
            Ok(Err(StateError::Rpc(e))) => Err(format!("cannot reach the head at {address}: {e}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "cannot reach the head at {address}: no answer within {DEADLINE:?}"
            )),
        }
    })
}

fn options(filters: &[String], limit: Option<u32>) -> R<ListOptions> {
    let mut opts = ListOptions::new();
    for f in filters {
        opts = opts.filter(f).map_err(|e| e.to_string())?;
    }
    opts.limit = limit;
    Ok(opts)
}

pub fn list(args: ListArgs) -> R<()> {
    let opts = options(&args.query.target.filters, args.limit)?;
    let target = args.query.target;
    let (rows, total) = match args.kind {
        Kind::Tasks => {
            let l = ask(target, async |c| c.list_tasks(&opts).await)?;
            if l.dropped > 0 {
                eprintln!(
                    "note: {} tasks or task events were dropped (past an owner's 10,000 tracked tasks a second, or the GCS's 100,000 a job): some tasks are missing",
                    l.dropped
                );
            }
            (to_values(&l.rows)?, l.total)
        }
        Kind::Actors => {
            let l = ask(target, async |c| c.list_actors(&opts).await)?;
            (to_values(&l.rows)?, l.total)
        }
        Kind::Nodes => {
            let l = ask(target, async |c| c.list_nodes(&opts).await)?;
            (to_values(&l.rows)?, l.total)
        }
        Kind::Jobs => {
            let l = ask(target, async |c| c.list_jobs(&opts).await)?;
            (to_values(&l.rows)?, l.total)
        }
        Kind::Workers => {
            let l = ask(target, async |c| c.list_workers(&opts).await)?;
            warn_unreachable(&l.unreachable);
            (to_values(&l.rows)?, l.total)
        }
        Kind::Objects => {
            let l = ask(target, async |c| c.list_objects(&opts).await)?;
            warn_unreachable(&l.unreachable);
            (to_values(&l.rows)?, l.total)
        }
    };
    match args.query.format {
        Format::Json => println!("{}", json(&rows)?),
        Format::Table => {
            print!("{}", table(columns(args.kind), &rows));
            if total > rows.len() as u64 {
                eprintln!("{} of {total} rows shown (--limit)", rows.len());
            }
        }
    }
    Ok(())
}

pub fn summary(args: SummaryArgs) -> R<()> {
    let opts = options(&args.query.target.filters, None)?;
    let summary = ask(args.query.target, async |c| c.summarize_tasks(&opts).await)?;
    match args.query.format {
        Format::Json => println!("{}", json(&summary)?),
        Format::Table => {
            let states: std::collections::BTreeSet<_> =
                summary.iter().flat_map(|s| s.by_state.keys()).collect();
            let mut header = vec!["NAME".to_string(), "TOTAL".to_string()];
            header.extend(states.iter().map(|s| s.as_str().to_string()));
            let rows = summary.iter().map(|s| {
                let mut row = vec![s.name.clone(), s.total.to_string()];
                row.extend(
                    states
                        .iter()
                        .map(|st| s.by_state.get(*st).copied().unwrap_or(0).to_string()),
                );
                row
            });
            print!("{}", render(header, rows));
        }
    }
    Ok(())
}

pub fn timeline(args: TimelineArgs) -> R<()> {
    let opts = options(&args.target.filters, None)?;
    let events = ask(args.target, async |c| c.timeline(&opts).await)?;
    let output = args.output.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("timeline-{now}.json"))
    });
    let text = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
    std::fs::write(&output, text).map_err(|e| format!("{}: {e}", output.display()))?;
    let slices = events.iter().filter(|e| e.ph == "X").count();
    println!(
        "Wrote {slices} tasks to {} (open it in https://ui.perfetto.dev or chrome://tracing).",
        output.display()
    );
    Ok(())
}

/// Says which nodes or processes did not answer (their rows are missing).
fn warn_unreachable(unreachable: &[String]) {
    for why in unreachable {
        eprintln!("note: not listed, no answer: {why}");
    }
}

fn to_values<T: serde::Serialize>(rows: &[T]) -> R<Vec<serde_json::Value>> {
    rows.iter()
        .map(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> R<String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}

/// The fields a table shows, per kind (JSON has them all).
fn columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Tasks => &[
            "task_id",
            "attempt",
            "name",
            "state",
            "job_id",
            "node_id",
            "worker_pid",
            "error_type",
        ],
        Kind::Actors => &[
            "actor_id",
            "class_name",
            "name",
            "state",
            "num_restarts",
            "job_id",
            "node_id",
            "pid",
        ],
        Kind::Nodes => &["node_id", "state", "address", "is_head"],
        Kind::Jobs => &["job_id", "status", "driver_pid", "namespace", "entrypoint"],
        Kind::Workers => &[
            "worker_id",
            "worker_type",
            "state",
            "job_id",
            "pid",
            "node_id",
        ],
        Kind::Objects => &[
            "object_id",
            "object_size",
            "reference_type",
            "location",
            "worker_type",
            "pid",
            "node_id",
        ],
    }
}

/// A field as a table cell: strings bare, nothing for null.
fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn table(columns: &[&str], rows: &[serde_json::Value]) -> String {
    let header = columns.iter().map(|c| c.to_uppercase()).collect();
    render(
        header,
        rows.iter()
            .map(|r| columns.iter().map(|c| cell(r.get(*c))).collect()),
    )
}

/// Left-aligned columns, two spaces apart.
fn render(header: Vec<String>, rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header);
    for row in rows {
        table.add_row(row);
    }
    let mut text = table.to_string();
    text.push('\n');
    text
}
