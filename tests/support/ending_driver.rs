//! A driver for tests of how a session ends: starts a local session, writes an object into
//! shared memory, runs a task (so a worker process exists), prints `ready <worker pid>`, then
//! `return`s from `main` without `ray::shutdown()` or (`wait`) waits to be signalled.

use std::io::Write;

#[ray::remote]
fn worker_pid() -> u32 {
    std::process::id()
}

fn main() -> Result<(), ray::Error> {
    let how = std::env::args().nth(1).unwrap_or_default();
    ray::init(ray::Config::local().num_cpus(1.0))?;
    let _big = ray::put(&vec![7u8; 4 << 20])?;
    let pid = ray::get(&worker_pid::remote())?;
    let mut out = std::io::stdout();
    writeln!(out, "ready {pid}").map_err(|e| ray::Error::Runtime(e.to_string()))?;
    out.flush()
        .map_err(|e| ray::Error::Runtime(e.to_string()))?;
    if how == "wait" {
        loop {
            std::thread::park();
        }
    }
    Ok(()) // No ray::shutdown(): the session must not outlive the process anyway.
}
