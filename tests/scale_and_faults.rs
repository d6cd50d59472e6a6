//! Regression tests for defects found by hostile testing: oversized replies, borrowers
//! fetching many refs, actors in their restart window, the worker limit, drivers that end
//! without `shutdown`. The scale figures themselves are measured by `rayrs microbenchmark`,
//! not timed here.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

use ray::Error;
use ray_rs::with_ray;
use std::time::Duration;

/// Fails with a message larger than any reply frame may be (512 MiB).
#[ray::remote(max_retries = 3)]
fn huge_error(bytes: usize) -> Result<u8, String> {
    Err("x".repeat(bytes))
}

#[test]
fn an_oversized_error_is_a_task_error_not_a_dead_worker() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let r = huge_error::remote(513 << 20);
        match ray::get(&r) {
            Err(Error::Task { message, .. }) => {
                assert!(message.contains("too large"), "{}", &message[..200]);
                assert!(message.len() < 64 << 10, "{} bytes", message.len());
            }
            other => panic!(
                "expected a task error, got {:?}",
                other.map_err(|e| e.to_string())
            ),
        }
    });
}

/// Sums objects it borrows, fetched all at once.
#[ray::remote]
fn sum_borrowed(refs: Vec<ray::ObjectRef<u64>>) -> Result<u64, String> {
    let values = ray::get_all(&refs).map_err(|e| e.to_string())?;
    Ok(values.iter().sum())
}

#[test]
fn a_borrower_fetching_ten_thousand_refs_at_once_gets_them_all() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let n = 10_000u64;
        let refs: Vec<_> = (0..n).map(|i| ray::put(&i).unwrap()).collect();
        let total =
            ray::get(&sum_borrowed::remote(refs)).expect("no OwnerDied while the owner lives");
        assert_eq!(total, n * (n - 1) / 2);
    });
}

/// Starts the ending driver, waits for its `ready`, ends it as `how` says, and checks that
/// neither its worker nor any shared memory of it outlives it.
fn end_a_driver(how: &str, signal: Option<i32>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ending-driver"))
        .arg(if signal.is_some() { "wait" } else { "return" })
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let driver = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker: u32 = match line.trim().strip_prefix("ready ") {
        Some(pid) => pid.parse().unwrap(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{how}: the driver did not start: {line:?}");
        }
    };
    if let Some(sig) = signal {
        // The arena exists while the driver runs.
        assert!(mappings_of_arena(driver) > 0, "{how}: no arena mapped");
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(driver as i32, sig) };
    }
    let status = child.wait().unwrap();
    if let Some(sig) = signal {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(sig),
            "{how}: ends as the signal would"
        );
        if sig != libc::SIGKILL {
            // A clean shutdown killed and reaped the worker before the driver ended (a
            // driver killed outright leaves it to die a moment later, of PDEATHSIG).
            assert!(
                !std::path::Path::new(&format!("/proc/{worker}")).exists(),
                "{how}: the driver ended before its worker was reaped"
            );
        }
    } else {
        assert!(status.success(), "{how}: {status:?}");
    }
    ray_rs::eventually(&format!("{how}: the worker dies"), || {
        !std::path::Path::new(&format!("/proc/{worker}")).exists()
            || std::fs::read_to_string(format!("/proc/{worker}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
    });
    let prefix = format!("rayrs-{driver}-");
    let files: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(
        files.is_empty(),
        "{how}: shared memory left behind: {files:?}"
    );
    // Nor does any process still map the driver's arena.
    let holders: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(&prefix))
        })
        .collect();
    assert!(
        holders.is_empty(),
        "{how}: processes {holders:?} still map the arena"
    );
}

/// Mappings of a rayrs arena in process `pid`.
fn mappings_of_arena(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("rayrs-"))
        .count()
}

#[test]
fn a_driver_that_returns_without_shutdown_leaves_nothing() {
    end_a_driver("return from main", None);
}

#[test]
fn a_driver_killed_leaves_nothing() {
    end_a_driver("SIGKILL", Some(libc::SIGKILL));
}

#[test]
fn a_driver_terminated_shuts_down_and_leaves_nothing() {
    end_a_driver("SIGTERM", Some(libc::SIGTERM));
    end_a_driver("SIGINT", Some(libc::SIGINT));
}

/// Recursive Fibonacci with nested tasks: each call blocks in `get` on its two children.
#[ray::remote]
fn fib(n: u32) -> Result<u64, String> {
    if n < 2 {
        return Ok(u64::from(n));
    }
    let children = [fib::remote(n - 1), fib::remote(n - 2)];
    let values = ray::get_all(&children).map_err(|e| e.to_string())?;
    Ok(values.iter().sum())
}

#[ray::remote]
fn my_pid() -> u32 {
    std::process::id()
}

#[ray::remote(num_cpus = 2.0)]
fn my_pid_on_two_cpus() -> u32 {
    std::process::id()
}

/// (own pid, pid of a child that fits in this task's resources, pid of one that does not)
#[ray::remote]
fn pids_of_children() -> Result<(u32, u32, u32), String> {
    let small = ray::get(&my_pid::remote()).map_err(|e| e.to_string())?;
    let big = ray::get(&my_pid_on_two_cpus::remote()).map_err(|e| e.to_string())?;
    Ok((std::process::id(), small, big))
}

#[test]
fn nested_tasks_run_their_children_while_they_wait() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        assert_eq!(ray::get(&fib::remote(15)).unwrap(), 610);
    });
    // A fresh session: no lease of an earlier task is at hand for the children.
    with_ray(ray::Config::local().num_cpus(2.0), || {
        // A waiting task runs its own queued child if the child fits in its resources...
        let (me, small, big) = ray::get(&pids_of_children::remote()).unwrap();
        assert_eq!(
            small, me,
            "a child that fits runs inline, in the waiting worker"
        );
        // ...and leaves one that does not to the node manager.
        assert_ne!(
            big, me,
            "a child needing more than its parent holds runs elsewhere"
        );
    });
}

#[ray::actor]
pub struct Idle;

#[ray::actor]
impl Idle {
    pub fn new() -> Self {
        Idle
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// Depth of a recursion whose every level waits on the next in its own worker (the child
/// needs more than the parent holds, so it never runs inline).
#[ray::remote(num_cpus = 0.5)]
fn deep(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Ok(0);
    }
    let below = deeper::remote(n - 1);
    Ok(1 + ray::get(&below).map_err(|e| e.to_string())?)
}

#[ray::remote(num_cpus = 1.0)]
fn deeper(n: u32) -> Result<u32, String> {
    let below = deep::remote(n);
    ray::get(&below).map_err(|e| e.to_string())
}

fn limited(max_workers: usize) -> ray::Config {
    ray::Config::local()
        .num_cpus(2.0)
        .max_workers(max_workers)
        .worker_limit_wait(Duration::from_secs(2))
}

#[test]
fn actors_cannot_take_every_worker_and_the_limit_is_an_error_not_a_hang() {
    // 8 workers, 2 kept for tasks: 6 actors live, the 7th fails naming the limit.
    with_ray(limited(8), || {
        let actors: Vec<_> = (0..7)
            .map(|_| Idle::options().num_cpus(0.0).remote())
            .collect();
        let mut alive = 0;
        let mut refused = Vec::new();
        for a in &actors {
            match ray::get(&a.pid()) {
                Ok(_) => alive += 1,
                Err(Error::ActorDied { cause, .. }) => refused.push(cause),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(
            alive, 6,
            "actors up to the limit less the task reserve: {refused:?}"
        );
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("worker processes"), "{}", refused[0]);
        // Tasks are not starved while the actors live (a starved one fails after 2 s).
        assert_eq!(ray::get(&fib::remote(8)).unwrap(), 21);
    });
}

#[test]
fn a_task_that_finds_the_worker_limit_reached_fails_naming_it() {
    // Each level of `deep` holds a worker while it waits; 4 workers cannot hold 10 levels.
    with_ray(limited(4), || match ray::get(&deep::remote(10)) {
        Err(e) => assert!(e.to_string().contains("worker processes"), "{e}"),
        Ok(d) => panic!("10 levels ran on 4 workers? depth {d}"),
    });
    // Without a small limit, 600 levels finish (most run inline in a waiting worker).
    with_ray(ray::Config::local().num_cpus(2.0), || {
        assert_eq!(ray::get(&fib_depth::remote(600)).unwrap(), 600);
    });
}

/// Recursion `n` deep, each level blocked in `get` on the next.
#[ray::remote]
fn fib_depth(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Ok(0);
    }
    Ok(1 + ray::get(&fib_depth::remote(n - 1)).map_err(|e| e.to_string())?)
}

#[test]
fn silent_connections_are_closed() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let address = ray::nodes().unwrap()[0].address.clone();
        let silent: Vec<std::net::TcpStream> = (0..200)
            .map(|_| std::net::TcpStream::connect(&address).unwrap())
            .collect();
        for mut conn in silent {
            use std::io::Read;
            // Closed by the server after its handshake deadline (10 s), long before 60 s.
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut buf = [0u8; 16];
            match conn.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("a silent connection stayed open: {other:?}"),
            }
        }
        // The runtime itself still works.
        assert_eq!(ray::get(&fib::remote(5)).unwrap(), 5);
    });
}

/// A field of /proc/self/status, in MiB.
fn status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

#[test]
fn a_large_put_costs_the_value_and_its_one_copy_and_gives_it_back() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        // Peak RSS from here on (5: reset the high-water mark).
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_mib("VmHWM:");
        let value = vec![1u8; 64 << 20];
        let r = ray::put(&value).unwrap();
        let peak = status_mib("VmHWM:") - before;
        // The value (64 MiB) and the arena's copy (64 MiB), not a third encoded buffer.
        assert!(peak < 64 * 5 / 2, "peak grew by {peak} MiB");
        assert_eq!(ray::get(&r).unwrap().len(), 64 << 20);
        drop(r);
        ray_rs::eventually("the freed object's shared memory to go back", || {
            status_mib("RssShmem:") < 16
        });
    });
}

#[test]
fn per_task_state_is_freed_after_a_burst() {
    // The state API's task history is kept on purpose (bounded per job, in the GCS, which a
    // local session runs in this process: ray-gcs's own tests check the bound): off here,
    // where what must go is the per-task state of the core worker.
    let config = ray::Config::local().num_cpus(2.0).task_events(false);
    with_ray(config, || {
        let refs: Vec<_> = (0..1000).map(|_| my_pid::remote()).collect();
        ray::get_all(&refs).unwrap();
        drop(refs);
        let base = status_mib("VmRSS:");
        let refs: Vec<_> = (0..300_000).map(|_| my_pid::remote()).collect();
        ray::get_all(&refs).unwrap();
        let during = status_mib("VmRSS:");
        drop(refs);
        ray_rs::eventually(
            &format!("the burst's tables to be released (RSS {base} MiB before, {during} MiB at its peak)"),
            || status_mib("VmRSS:") < base + during.saturating_sub(base) / 4,
        );
    });
}

#[ray::actor]
pub struct Keeper {
    held: Vec<ray::ObjectRef<u64>>,
}

#[ray::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper { held: Vec::new() }
    }
    pub fn hold(&mut self, refs: Vec<ray::ObjectRef<u64>>) -> usize {
        self.held.extend(refs);
        self.held.len()
    }
    pub fn fetch(&self) -> Result<u64, String> {
        ray::get(&self.held[0]).map_err(|e| format!("{e:?}"))
    }
}

/// Puts a value (this worker owns it), lends it to `keeper`, then dies.
#[ray::remote(max_retries = 0)]
fn lend_then_die(keeper: ray::ActorHandle<Keeper>) -> u64 {
    let r = ray::put(&7u64).unwrap();
    ray::get(&keeper.hold(vec![r])).unwrap();
    std::process::exit(3)
}

#[test]
fn a_borrower_of_a_dead_owner_gets_owner_died() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let keeper = Keeper::options().num_cpus(0.0).remote();
        assert!(matches!(
            ray::get(&lend_then_die::remote(keeper.clone())),
            Err(Error::WorkerDied { .. })
        ));
        // The owner is gone for good: after its deadline the borrower says so.
        match ray::get(&keeper.fetch()) {
            Err(Error::Task { message, .. }) => assert!(
                message.starts_with("owner of object") && message.ends_with("died"),
                "{message}"
            ),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
    });
}
