//! `rayrs`: the command-line tool of the Rust Ray runtime.
//!
//! ```text
//! rayrs microbenchmark [--filter PATTERN] [--json] [--quick]
//! rayrs report --ray RAY.jsonl --ours OURS.jsonl [--machine TEXT] [--markdown FILE] [--svg FILE]
//! ```
//!
//! `microbenchmark` is Ray's `ray microbenchmark` (python/ray/_private/ray_perf.py), workload
//! for workload, with the same metric names, so the two print comparable lines. `report` turns
//! one JSON-lines run of each into the side-by-side table and the chart of ratios
//! (benches/compare-with-ray.sh calls it).
//!
//! Worker processes are this binary re-executed: the runtime takes them over before `main`.
#![allow(clippy::print_stdout)] // a command-line tool: printing is its output

mod microbenchmark;
mod report;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  rayrs microbenchmark [--filter PATTERN] [--json] [--quick]
      Ray's microbenchmark on this machine (local mode). --filter runs only the metrics whose
      name contains PATTERN; --json prints one {\"name\",\"per_second\",\"sd\"} object per line;
      --quick runs one short round per metric with small sizes (a smoke test, for CI).
  rayrs report --ray RAY.jsonl --ours OURS.jsonl [--machine TEXT] [--markdown FILE] [--svg FILE]
      The side-by-side table of two JSON-lines runs (Ray's and ours) with the ratios; writes it
      as Markdown and the ratios as an SVG bar chart when asked.";

fn main() -> ExitCode {
    // RUST_LOG=ray=debug shows the runtime's own logs (the driver's) on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("microbenchmark") => microbenchmark::main(&args[1..]),
        Some("report") => report::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rayrs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value of `--flag VALUE` (or `--flag=VALUE`) in `args`, removing both.
pub(crate) fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, String> {
    let prefix = format!("{flag}=");
    if let Some(i) = args.iter().position(|a| a.starts_with(&prefix)) {
        let a = args.remove(i);
        return Ok(Some(a[prefix.len()..].to_string()));
    }
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) if i + 1 < args.len() => {
            args.remove(i);
            Ok(Some(args.remove(i)))
        }
        Some(_) => Err(format!("{flag} needs a value")),
    }
}

/// Whether `--flag` is in `args`, removing it.
pub(crate) fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    match args.iter().position(|a| a == flag) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    }
}
