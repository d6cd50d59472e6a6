//! The parts of Ray's API a porting user reaches for beyond the core path, on real worker
//! processes: errors as users see them, retries of failed tasks, multiple returns, GPUs.

use ray::Error;
use ray_rs::with_ray;

#[ray::remote(num_gpus = 1.0)]
fn wants_a_gpu() -> u8 {
    1
}

/// What a user sees of an error is one sentence, whichever way it is printed.
#[test]
fn errors_print_the_same_with_debug_and_display() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let e = ray::get(&wants_a_gpu::remote()).unwrap_err();
            assert!(matches!(e, Error::Unschedulable { .. }), "{e}");
            assert_eq!(format!("{e:?}"), e.to_string());
            let text = e.to_string();
            assert!(text.contains("GPU short by 1"), "{text}");
            assert!(
                !text.contains("ResourceShortfall") && !text.contains("Shortfall {"),
                "{text}"
            );
        });
    }
    assert_eq!(
        format!("{:?}", ray::get(&wants_a_gpu::remote()).unwrap_err()),
        "ray is not initialized: call ray::init first"
    );
}

/// Counts a run in `file` (one line per run, appended: runs happen in other processes) and
/// returns the count so far.
fn count_run(file: &str) -> usize {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    f.write_all(b"run\n").unwrap();
    drop(f);
    std::fs::read_to_string(file).unwrap().lines().count()
}

fn runs(file: &str) -> usize {
    std::fs::read_to_string(file).map_or(0, |s| s.lines().count())
}

/// Fails (returns `Err`) on its first `failures` runs.
#[ray::remote(max_retries = 2, retry_exceptions = true, num_cpus = 0.5)]
fn flaky(file: String, failures: usize) -> Result<usize, String> {
    let n = count_run(&file);
    if n <= failures {
        Err(format!("run {n} fails"))
    } else {
        Ok(n)
    }
}

/// Panics on its first `failures` runs.
#[ray::remote(max_retries = 3, retry_exceptions = true)]
fn panicky(file: String, failures: usize) -> usize {
    let n = count_run(&file);
    assert!(n > failures, "run {n} panics");
    n
}

/// Kills its own worker process on its first `deaths` runs.
#[ray::remote(max_retries = -1)]
fn dies(file: String, deaths: usize) -> usize {
    let n = count_run(&file);
    if n <= deaths {
        std::process::exit(3);
    }
    n
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rayrs-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `retry_exceptions` retries a task that returned `Err` or panicked within `max_retries`,
/// in local and sync mode alike; without it a failed task runs once.
#[test]
fn retry_exceptions_reruns_failed_tasks_within_max_retries() {
    for (mode, config) in [
        ("local", ray::Config::local().num_cpus(2.0)),
        ("sync", ray::Config::sync()),
    ] {
        let dir = TempDir::new(mode);
        with_ray(config, || {
            // Fails twice, then succeeds on the third and last allowed run.
            let (a, b, c, d, e) = (
                dir.file("a"),
                dir.file("b"),
                dir.file("c"),
                dir.file("d"),
                dir.file("e"),
            );
            assert_eq!(ray::get(&flaky::remote(a.clone(), 2)), Ok(3), "{mode}");
            assert_eq!(runs(&a), 3, "{mode}");
            // Always fails: 1 run + 2 retries, then the last run's error.
            let err = ray::get(&flaky::remote(b.clone(), 100)).unwrap_err();
            assert!(
                matches!(&err, Error::Task { message, .. } if message == "run 3 fails"),
                "{mode}: {err}"
            );
            assert_eq!(runs(&b), 3, "{mode}");
            // Not asked for: one run.
            assert!(ray::get(
                &flaky::options()
                    .retry_exceptions(false)
                    .remote(c.clone(), 1)
            )
            .is_err());
            assert_eq!(runs(&c), 1, "{mode}");
            // No retries left to spend.
            assert!(ray::get(&flaky::options().max_retries(0).remote(d.clone(), 1)).is_err());
            assert_eq!(runs(&d), 1, "{mode}");
            // Panics count as failures too.
            assert_eq!(ray::get(&panicky::remote(e.clone(), 3)), Ok(4), "{mode}");
            assert_eq!(runs(&e), 4, "{mode}");
        });
    }
}

/// `max_retries = -1` retries a task whose worker dies for as long as it takes.
#[test]
fn max_retries_minus_one_retries_worker_deaths_forever() {
    let dir = TempDir::new("dies");
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let f = dir.file("runs");
        assert_eq!(ray::get(&dies::remote(f.clone(), 5)), Ok(6));
        assert_eq!(runs(&f), 6);
    });
}

#[ray::remote(num_returns = 3)]
fn three(n: usize) -> (usize, String, Vec<u8>) {
    (n, format!("n={n}"), vec![7; n])
}

#[ray::remote(num_returns = 2, max_retries = 0)]
fn pair_or_fail(fail: bool) -> Result<(u32, u32), String> {
    if fail {
        Err("no pair".into())
    } else {
        Ok((1, 2))
    }
}

#[ray::remote]
fn len_of(bytes: Vec<u8>) -> usize {
    bytes.len()
}

/// Runs `three` as a child and reads its returns (a waiting worker may run it inline).
#[ray::remote]
fn child_returns(n: usize) -> (usize, usize) {
    let (a, _, c) = three::remote(n);
    (ray::get(&a).unwrap(), ray::get(&c).unwrap().len())
}

/// A function with `num_returns = n` gives `n` refs, each an object of its own: read alone,
/// passed on alone, freed alone; a failure fails each.
#[test]
fn multiple_returns_are_objects_of_their_own() {
    for config in [ray::Config::local().num_cpus(2.0), ray::Config::sync()] {
        with_ray(config, || {
            let (before_values, before_refs) = ray::__private::object_counts().unwrap();
            // The third return is 2 MB: it goes to shared memory under its own id.
            let (a, b, c) = three::remote(2 << 20);
            assert_ne!(a.id(), b.id());
            assert_eq!(ray::get(&b).unwrap(), format!("n={}", 2 << 20));
            assert_eq!(ray::get(&len_of::remote(c.clone())).unwrap(), 2 << 20);
            drop((b, c));
            // The first is still there once the others are gone.
            assert_eq!(ray::get(&a).unwrap(), 2 << 20);
            drop(a);
            ray_rs::eventually("the returns are freed", || {
                ray::__private::object_counts().unwrap() == (before_values, before_refs)
            });

            let (x, y) = pair_or_fail::remote(true);
            for e in [ray::get(&x).unwrap_err(), ray::get(&y).unwrap_err()] {
                assert!(
                    matches!(&e, Error::Task { message, .. } if message == "no pair"),
                    "{e}"
                );
            }
            let (x, y) = pair_or_fail::options().num_cpus(0.5).remote(false);
            assert_eq!((ray::get(&x), ray::get(&y)), (Ok(1), Ok(2)));
            assert_eq!(ray::get(&child_returns::remote(5)).unwrap(), (5, 5));
        });
    }
}

/// Waits (at most 10 s) until `n` tasks have checked in at `dir`: tasks that return from
/// here ran at the same time.
fn rendezvous(dir: &str, n: usize) {
    let me = format!(
        "{dir}/{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    std::fs::write(&me, b"").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(dir).unwrap().count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the other tasks never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The GPU ids the task was given, and its `CUDA_VISIBLE_DEVICES`, once `n` tasks run at once.
#[ray::remote(num_gpus = 1.0, num_cpus = 0.0)]
fn gpu_ids_together(dir: String, n: usize) -> (Vec<String>, String) {
    rendezvous(&dir, n);
    (
        ray::get_gpu_ids(),
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
    )
}

#[ray::remote(num_cpus = 0.0)]
fn gpu_ids() -> Vec<String> {
    ray::get_gpu_ids()
}

struct GpuHolder;

#[ray::actor]
impl GpuHolder {
    pub fn new() -> Self {
        GpuHolder
    }
    pub fn ids(&self) -> (Vec<String>, String) {
        (
            ray::get_gpu_ids(),
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        )
    }
}

/// A node given 2 (fake) GPUs hands each lease its own device ids, in `CUDA_VISIBLE_DEVICES`
/// and `get_gpu_ids`; fractions share a device; a request no node can hold is refused.
#[test]
fn gpus_are_handed_out_by_id() {
    let dir = TempDir::new("gpus");
    with_ray(ray::Config::local().num_cpus(2.0).num_gpus(2.0), || {
        let sub = |name: &str| {
            let d = dir.file(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        assert!(ray::get_gpu_ids().is_empty(), "a driver holds no GPU");
        assert!(ray::get(&gpu_ids::remote()).unwrap().is_empty());

        // Two whole GPUs at once: one each, named the same both ways.
        let d = sub("whole");
        let both: Vec<_> = (0..2)
            .map(|_| gpu_ids_together::remote(d.clone(), 2))
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for (ids, visible) in ray::get_all(&both).unwrap() {
            assert_eq!(ids.len(), 1);
            assert_eq!(ids.join(","), visible);
            seen.extend(ids);
        }
        seen.sort();
        assert_eq!(seen, vec!["0", "1"]);

        // Two halves at once share one device.
        let d = sub("halves");
        let halves: Vec<_> = (0..2)
            .map(|_| {
                gpu_ids_together::options()
                    .num_gpus(0.5)
                    .remote(d.clone(), 2)
            })
            .collect();
        let halves = ray::get_all(&halves).unwrap();
        assert_eq!(halves[0].0.len(), 1);
        assert_eq!(halves[0].0, halves[1].0, "{halves:?}");

        // A sliver still names a device; both GPUs at once name both.
        assert_eq!(
            ray::get(&gpu_ids::options().num_gpus(0.01).remote())
                .unwrap()
                .len(),
            1
        );
        let mut two = ray::get(&gpu_ids::options().num_gpus(2.0).remote()).unwrap();
        two.sort();
        assert_eq!(two, vec!["0", "1"]);

        // An actor holds its GPU for its life; a task meanwhile gets the other one.
        let holder = GpuHolder::options().num_gpus(1.0).num_cpus(0.0).remote();
        let (held, visible) = ray::get(&holder.ids()).unwrap();
        assert_eq!((held.len(), held.join(",")), (1, visible));
        let other = ray::get(&gpu_ids::options().num_gpus(1.0).remote()).unwrap();
        assert_eq!(other.len(), 1);
        assert_ne!(other, held);

        // Bad requests are told, not hung.
        let e = ray::get(&gpu_ids::options().num_gpus(3.0).remote()).unwrap_err();
        assert!(matches!(&e, Error::Unschedulable { .. }), "{e}");
        let e = ray::get(&gpu_ids::options().num_gpus(1.5).remote()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(_)), "{e}");
    });
}

/// A `#[ray::main]` program (async, with remote functions in a nested module and inside its
/// body) runs its body once, in the driver only, and returns its error as `main` would.
/// What its tasks and actors print reaches its terminal, each line prefixed with the
/// function or class and the worker's pid, on the stream it was written to; and the
/// workers' files, whether or not it does.
#[test]
fn ray_main_runs_the_body_once_in_the_driver() {
    let run = |args: &[&str], log_to_driver: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_main-driver"))
            .args(args)
            .env("RAY_ADDRESS", "local")
            .env("RAY_NUM_CPUS", "2")
            .env("RAY_LOG_TO_DRIVER", log_to_driver)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run(&[], "1");
    let text = format!("{stdout}{stderr}");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("main body ran").count(), 1, "{text}");
    assert!(text.contains("sum 22"), "{text}");
    let pid_after = |what: &str| {
        text.split(what)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {what:?} in {text}"))
            .to_string()
    };
    // A task's `tracing` line reaches the driver's stderr, saying which worker wrote it.
    let worker = pid_after("logged in pid ");
    let line = stderr
        .lines()
        .find(|l| l.contains("a warning from inside a task"))
        .unwrap_or_else(|| panic!("the task's warning is not in the driver's stderr: {text}"));
    assert!(
        line.starts_with(&format!("(log_something pid={worker}) ")),
        "{line}"
    );
    // Its prints, each on the stream it went to; an actor's, named by its class.
    let printer = pid_after("printed in pid ");
    let greeter = pid_after("greeted in pid ");
    let has = |out: &str, line: String| out.lines().any(|l| l == line);
    assert!(
        has(
            &stdout,
            format!("(print_hello pid={printer}) hello from a task")
        ),
        "{stdout}"
    );
    assert!(
        has(
            &stderr,
            format!("(print_hello pid={printer}) and to stderr")
        ),
        "{stderr}"
    );
    assert!(
        has(
            &stdout,
            format!("(Greeter pid={greeter}) greetings from an actor")
        ),
        "{stdout}"
    );
    assert!(!text.contains("::rayrs-name::"), "{text}");
    // Switched off, the lines stay in the workers' files only.
    let (code, stdout, stderr) = run(&[], "0");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("hello from a task"), "{stdout}");
    assert!(!stderr.contains("and to stderr"), "{stderr}");
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("logs in "))
        .unwrap_or_else(|| panic!("no log dir: {stdout}"));
    let printer = stdout
        .lines()
        .find_map(|l| l.strip_prefix("printed in pid "))
        .unwrap();
    let file = |ext: &str| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!("-{printer}.{ext}")))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|| panic!("no .{ext} file of worker {printer} in {dir}"))
    };
    // (The worker may have run other tasks, which log too.)
    assert!(file("out").lines().any(|l| l == "hello from a task"));
    assert!(file("err").lines().any(|l| l == "and to stderr"));
    let (code, stdout, stderr) = run(&["fail"], "1");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("Error: invalid argument: asked to fail"),
        "{stderr}"
    );
}

/// Remote functions and actors may be declared inside a function body, and run on workers.
#[test]
fn remote_items_declared_inside_a_function_run_on_workers() {
    #[ray::remote]
    fn pid_plus(n: u32) -> u32 {
        std::process::id() + n
    }

    struct Tally(u32);

    #[ray::actor]
    impl Tally {
        pub fn new(start: u32) -> Self {
            Tally(start)
        }
        pub fn add(&mut self, n: u32) -> u32 {
            self.0 += n;
            self.0
        }
    }

    with_ray(ray::Config::local().num_cpus(1.0), || {
        let on_worker = ray::get(&pid_plus::remote(0)).unwrap();
        assert_ne!(on_worker, std::process::id());
        let t = Tally::remote(10);
        t.add(1);
        assert_eq!(ray::get(&t.add(2)).unwrap(), 13);
    });
}

/// Waits (at most 30 s) until `file` exists.
fn wait_for_file(file: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::path::Path::new(file).exists() {
        assert!(std::time::Instant::now() < deadline, "{file} never came");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Says it started, then holds its CPU until `release` exists.
#[ray::remote]
fn hold_until(started: String, release: String) -> u8 {
    std::fs::write(&started, std::process::id().to_string()).unwrap();
    wait_for_file(&release);
    1
}

/// Counts its runs in `file`.
#[ray::remote]
fn counted(file: String) -> u8 {
    count_run(&file);
    2
}

/// Makes ray calls until one fails (cancelled): writes `started` first, `ended` with the
/// error last.
#[ray::remote(num_cpus = 0.5)]
fn busy_with_ray_calls(started: String, ended: String) -> Result<u8, String> {
    std::fs::write(&started, std::process::id().to_string()).unwrap();
    loop {
        if let Err(e) = ray::put(&0u8) {
            std::fs::write(&ended, e.to_string()).unwrap();
            return Err(e.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Runs `busy_with_ray_calls` as a child and waits for it.
#[ray::remote(num_cpus = 0.5)]
fn parent_of_busy(started: String, ended: String) -> Result<u8, String> {
    ray::get(&busy_with_ray_calls::remote(started, ended)).map_err(|e| e.to_string())
}

/// Says it started (with its pid), then sleeps, making no ray call.
#[ray::remote]
fn sleeps_forever(started: String) -> u8 {
    std::fs::write(&started, std::process::id().to_string()).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(600));
    3
}

fn cancelled<T: std::fmt::Debug>(r: ray::Result<T>) -> bool {
    matches!(r, Err(Error::TaskCancelled { .. }))
}

/// `ray::cancel`: a queued task never runs, a running one stops at its next ray call (its
/// children too), `force` kills its worker, a finished one keeps its value; `get` says
/// `TaskCancelled`.
#[test]
fn cancel_stops_queued_running_and_forced_tasks() {
    let dir = TempDir::new("cancel");
    let f = |name: &str| dir.file(name);
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let opts = ray::CancelOptions::default();
        // Queued behind a task holding the only CPU: removed, never run.
        let blocker = hold_until::remote(f("b-started"), f("b-release"));
        wait_for_file(&f("b-started"));
        let queued = counted::remote(f("queued-runs"));
        ray::cancel(&queued, opts).unwrap();
        assert!(cancelled(ray::get(&queued)));
        std::fs::write(f("b-release"), b"").unwrap();
        assert_eq!(ray::get(&blocker), Ok(1));
        assert_eq!(runs(&f("queued-runs")), 0, "a cancelled queued task ran");

        // Finished: nothing to cancel.
        let done = counted::remote(f("done-runs"));
        assert_eq!(ray::get(&done), Ok(2));
        ray::cancel(&done, opts).unwrap();
        assert_eq!(ray::get(&done), Ok(2));

        // Running, making ray calls: its next one fails.
        let busy = busy_with_ray_calls::remote(f("r-started"), f("r-ended"));
        wait_for_file(&f("r-started"));
        ray::cancel(&busy, opts).unwrap();
        assert!(cancelled(ray::get(&busy)));
        let ended = std::fs::read_to_string(f("r-ended")).unwrap();
        assert!(ended.contains("cancelled"), "{ended}");

        // Recursive (the default): the child it waits on is cancelled too.
        let parent = parent_of_busy::remote(f("c-started"), f("c-ended"));
        wait_for_file(&f("c-started"));
        ray::cancel(&parent, opts).unwrap();
        assert!(cancelled(ray::get(&parent)));
        wait_for_file(&f("c-ended"));

        // Forced: the worker, which makes no ray call, is killed.
        let stuck = sleeps_forever::remote(f("s-started"));
        wait_for_file(&f("s-started"));
        let pid: i32 = std::fs::read_to_string(f("s-started"))
            .unwrap()
            .parse()
            .unwrap();
        ray::cancel(
            &stuck,
            ray::CancelOptions {
                force: true,
                ..opts
            },
        )
        .unwrap();
        assert!(cancelled(ray::get(&stuck)));
        ray_rs::eventually("the forced task's worker is gone", || {
            !ray_rs::child_processes().contains(&(pid as u32))
        });
        // The node goes on with a fresh worker.
        assert_eq!(ray::get(&counted::remote(f("after-runs"))), Ok(2));
    });
}

struct Gate;

#[ray::actor]
impl Gate {
    pub fn new() -> Self {
        Gate
    }
    pub fn hold(&self, started: String, release: String) -> u8 {
        std::fs::write(&started, b"").unwrap();
        wait_for_file(&release);
        1
    }
    pub fn count(&self, file: String) -> u8 {
        count_run(&file);
        2
    }
}

/// An actor call not yet started can be cancelled; `force` is refused for actor calls.
#[test]
fn cancel_of_actor_calls() {
    let dir = TempDir::new("cancel-actor");
    let f = |name: &str| dir.file(name);
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let gate = Gate::options().num_cpus(0.0).remote();
        let first = gate.hold(f("started"), f("release"));
        wait_for_file(&f("started"));
        let second = gate.count(f("second-runs"));
        let e = ray::cancel(
            &second,
            ray::CancelOptions {
                force: true,
                recursive: true,
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        ray::cancel(&second, ray::CancelOptions::default()).unwrap();
        std::fs::write(f("release"), b"").unwrap();
        assert_eq!(ray::get(&first), Ok(1));
        assert!(cancelled(ray::get(&second)));
        assert_eq!(runs(&f("second-runs")), 0, "a cancelled call ran");
        assert_eq!(ray::get(&gate.count(f("third-runs"))), Ok(2));
    });
    // Sync mode: tasks ran when submitted; cancel leaves them be.
    with_ray(ray::Config::sync(), || {
        let r = counted::remote(f("sync-runs"));
        ray::cancel(&r, ray::CancelOptions::default()).unwrap();
        assert_eq!(ray::get(&r), Ok(2));
    });
}

struct Phoenix {
    calls: u32,
}

#[ray::actor]
impl Phoenix {
    pub fn new() -> Self {
        Phoenix { calls: 0 }
    }
    /// (actor id, restarted, calls so far in this life)
    pub fn whoami(&mut self) -> (Option<String>, bool, u32) {
        self.calls += 1;
        let c = ray::get_runtime_context().unwrap();
        (c.actor_id, c.was_current_actor_reconstructed, self.calls)
    }
    pub fn leave(&self) -> Result<String, String> {
        ray::actor::exit_actor().map_err(|e| e.to_string())?;
        Ok("bye".into())
    }
}

/// An actor knows its id and whether it was restarted; `kill(false)` restarts it,
/// `kill(true)` ends it; `exit_actor` ends it for good once the calling method replied.
#[test]
fn actors_know_themselves_restart_on_kill_and_exit_on_request() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        assert!(matches!(
            ray::actor::exit_actor(),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(ray::get_runtime_context().unwrap().actor_id, None);

        let p = Phoenix::options()
            .num_cpus(0.0)
            .max_restarts(1)
            .max_task_retries(-1)
            .remote();
        let (id, restarted, calls) = ray::get(&p.whoami()).unwrap();
        assert!(id.as_ref().is_some_and(|id| id.len() == 32), "{id:?}");
        assert_eq!((restarted, calls), (false, 1));
        p.kill(false).unwrap();
        let (id2, restarted, calls) = ray::get(&p.whoami()).unwrap();
        assert_eq!(
            (id2, restarted, calls),
            (id, true, 1),
            "a new life, the same actor"
        );
        // Its one restart is spent; killed for good either way now.
        p.kill(true).unwrap();
        assert!(matches!(
            ray::get(&p.whoami()),
            Err(Error::ActorDied { .. })
        ));

        // exit_actor: the call that asks replies, later calls find it dead, no restart.
        let q = Phoenix::options().num_cpus(0.0).max_restarts(3).remote();
        assert_eq!(ray::get(&q.whoami()).unwrap().2, 1);
        assert_eq!(ray::get(&q.leave()).as_deref(), Ok("bye"));
        ray_rs::eventually("the actor that exited is dead", || {
            matches!(ray::get(&q.whoami()), Err(Error::ActorDied { .. }))
        });
    });
}

struct Slow;

#[ray::actor]
impl Slow {
    pub fn new() -> Self {
        Slow
    }
    /// `x * 10`, with the pid that ran it.
    pub fn work(&self, x: u64) -> (u64, u32) {
        (x * 10, std::process::id())
    }
    /// `x * 10`, once file `wait` exists (if named); then writes file `write` (if named).
    pub fn gated(&self, x: u64, wait: String, write: String) -> u64 {
        if !wait.is_empty() {
            wait_for_file(&wait);
        }
        if !write.is_empty() {
            std::fs::write(&write, b"").unwrap();
        }
        x * 10
    }
}

/// `ActorPool` spreads items over its actors, one at a time each: `map` keeps order,
/// `map_unordered` yields the quick ones first; refs of different types wait together.
#[test]
fn actor_pool_and_waiting_on_refs_of_different_types() {
    let dir = TempDir::new("pool");
    let done = dir.file("others-done");
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let actors = vec![
            Slow::options().num_cpus(0.0).remote(),
            Slow::options().num_cpus(0.0).remote(),
        ];
        let mut pool = ray::util::ActorPool::new(actors);
        let out: Vec<(u64, u32)> = pool
            .map(|a, x| a.work(x), 0..6)
            .collect::<ray::Result<_>>()
            .unwrap();
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            vec![0, 10, 20, 30, 40, 50]
        );
        let pids: std::collections::HashSet<u32> = out.iter().map(|o| o.1).collect();
        assert_eq!(pids.len(), 2, "both actors worked");
        assert!(!pool.has_next());
        assert!(matches!(pool.get_next(), Err(Error::InvalidArgument(_))));

        // A pool of the same actors for calls of another return type.
        let actors: Vec<_> = std::iter::from_fn(|| pool.pop_idle()).collect();
        assert_eq!(actors.len(), 2);
        let mut pool = ray::util::ActorPool::new(actors);
        // The first item waits until the last is done: first in order, last as finished.
        let items = vec![
            (1, done.clone(), String::new()),
            (2, String::new(), String::new()),
            (3, String::new(), done.clone()),
        ];
        let firsts: Vec<u64> = pool
            .map_unordered(|a, (x, wait, write)| a.gated(x, wait, write), items)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(firsts.last(), Some(&10), "{firsts:?}");
        assert!(matches!(pool.get_next(), Err(Error::InvalidArgument(_))));

        let n = ray::put(&1u32).unwrap();
        let s = ray::put(&"one".to_string()).unwrap();
        let (ready, rest) = ray::wait(&[s.any(), n.any()], 1, None).unwrap();
        assert_eq!((ready.len(), rest.len()), (1, 1));
        assert_eq!(ready[0].id(), s.id());
    });
}

/// Run in every worker of this test binary as it starts.
#[ray::worker_setup]
fn mark_workers() {
    std::env::set_var("RAYRS_API_TEST_SETUP", std::process::id().to_string());
}

#[ray::remote]
fn setup_mark() -> (Option<String>, u32) {
    (
        std::env::var("RAYRS_API_TEST_SETUP").ok(),
        std::process::id(),
    )
}

/// `#[ray::worker_setup]` runs in every worker before its first task, never in the driver.
#[test]
fn worker_setup_runs_in_every_worker_before_its_tasks() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let (mark, pid) = ray::get(&setup_mark::remote()).unwrap();
        assert_eq!(mark, Some(pid.to_string()));
        assert!(std::env::var("RAYRS_API_TEST_SETUP").is_err());
    });
}

struct Poller {
    stop: std::sync::atomic::AtomicBool,
    turns: std::sync::atomic::AtomicU64,
}

#[ray::actor]
impl Poller {
    pub fn new() -> Self {
        Poller {
            stop: Default::default(),
            turns: Default::default(),
        }
    }
    /// Ray's "a loop runs forever in one method" pattern, on `&self`.
    pub async fn run(&self) -> u64 {
        use std::sync::atomic::Ordering;
        while !self.stop.load(Ordering::Relaxed) {
            self.turns.fetch_add(1, Ordering::Relaxed);
            ray::__private::tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        self.turns.load(Ordering::Relaxed)
    }
    pub async fn turns(&self) -> u64 {
        self.turns.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub async fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An async actor's method may loop forever while its other methods answer (the `&mut self`
/// form, which would hang them, does not compile: `ray-core/tests/ui`).
#[test]
fn an_async_actor_answers_while_one_method_loops() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let p = Poller::options().num_cpus(0.0).remote();
        let running = p.run();
        ray_rs::eventually("the loop turns while other calls answer", || {
            ray::get(&p.turns()).unwrap() > 3
        });
        ray::get(&p.stop()).unwrap();
        assert!(ray::get(&running).unwrap() > 3);
    });
}

#[ray::remote(num_cpus = 0.5)]
fn produce(q: ray::util::Queue<u32>, from: u32, n: u32) -> u32 {
    for i in from..from + n {
        q.put(&i).unwrap();
    }
    n
}

#[ray::remote(num_cpus = 0.5)]
fn consume(q: ray::util::Queue<u32>, n: usize) -> Vec<u32> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

/// A `Queue` passed to tasks: producers and a consumer that waits for items, bounded puts,
/// empty gets that say so.
#[test]
fn a_queue_is_shared_by_the_driver_and_tasks() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let q = ray::util::Queue::<u32>::new(0).unwrap();
        assert_eq!(q.try_get(), Ok(None));
        assert_eq!(
            q.get_timeout(std::time::Duration::from_millis(20)),
            Ok(None)
        );
        // The consumer starts first and waits for the items.
        let consumer = consume::remote(q.clone(), 10);
        let made: u32 = ray::get_all(&[
            produce::remote(q.clone(), 0, 5),
            produce::remote(q.clone(), 100, 5),
        ])
        .unwrap()
        .into_iter()
        .sum();
        assert_eq!(made, 10);
        let mut got = ray::get(&consumer).unwrap();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 100, 101, 102, 103, 104]);
        assert_eq!(q.is_empty(), Ok(true));

        let small = ray::util::Queue::<String>::new(1).unwrap();
        assert_eq!(
            small.put_timeout(&"a".into(), std::time::Duration::from_millis(20)),
            Ok(true)
        );
        assert_eq!(
            small.put_timeout(&"b".into(), std::time::Duration::from_millis(20)),
            Ok(false)
        );
        assert_eq!(small.get().as_deref(), Ok("a"));
    });
}

/// Waits on a ref that never becomes ready (a gated child), then returns.
#[ray::remote(num_cpus = 0.5)]
fn waits_on_a_child(started: String, release: String) -> Result<u8, String> {
    std::fs::write(&started, b"").unwrap();
    // (Not retryable, so never run inline on this thread while it waits.)
    let child = hold_until::options()
        .num_cpus(0.5)
        .max_retries(0)
        .remote(format!("{started}-child"), release);
    let got = ray::get(&child).map_err(|e| e.to_string());
    std::fs::write(format!("{started}-woke"), format!("{got:?}")).unwrap();
    got
}

/// A task blocked in `get` wakes when it is cancelled, even if what it waits for does not
/// (here the child keeps running: the cancel is not recursive).
#[test]
fn a_task_blocked_in_get_wakes_when_cancelled() {
    let dir = TempDir::new("cancel-blocked");
    let f = |name: &str| dir.file(name);
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let parent = waits_on_a_child::remote(f("started"), f("release"));
        wait_for_file(&f("started"));
        wait_for_file(&format!("{}-child", f("started")));
        ray::cancel(
            &parent,
            ray::CancelOptions {
                force: false,
                recursive: false,
            },
        )
        .unwrap();
        assert!(cancelled(ray::get(&parent)));
        // It woke because it was cancelled, not because the child ended.
        let woke = std::fs::read_to_string(format!("{}-woke", f("started"))).unwrap();
        assert!(woke.contains("was cancelled"), "{woke}");
        std::fs::write(f("release"), b"").unwrap();
    });
}

/// Cancelling a task through any of its returns cancels the task: every return says so.
#[test]
fn cancel_through_a_later_return_of_a_multi_return_task() {
    let dir = TempDir::new("cancel-returns");
    let f = |name: &str| dir.file(name);
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let blocker = hold_until::remote(f("started"), f("release"));
        wait_for_file(&f("started"));
        let (a, b, c) = three::remote(4);
        ray::cancel(&b, ray::CancelOptions::default()).unwrap();
        assert!(cancelled(ray::get(&a)));
        assert!(cancelled(ray::get(&b)));
        assert!(cancelled(ray::get(&c)));
        std::fs::write(f("release"), b"").unwrap();
        assert_eq!(ray::get(&blocker), Ok(1));
    });
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Refusal {
    TooBig(u64),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {self:?}")
    }
}

#[ray::remote]
fn refuse(n: u64) -> Result<u64, Refusal> {
    Err(Refusal::TooBig(n))
}

#[ray::remote]
fn refuse_with_text() -> Result<u8, String> {
    Err("plain text".into())
}

#[ray::remote]
fn refuse_with_io() -> Result<u8, std::io::Error> {
    Err(std::io::Error::other("disk on fire"))
}

#[ray::remote(num_returns = 2)]
fn refuse_two() -> Result<(u8, u8), Refusal> {
    Err(Refusal::TooBig(2))
}

struct Gatekeeper;

#[ray::actor]
impl Gatekeeper {
    pub fn new() -> Self {
        Gatekeeper
    }
    pub fn check(&self, n: u64) -> Result<u64, Refusal> {
        Err(Refusal::TooBig(n))
    }
}

/// An `Err` a task returns comes back typed when its type can be encoded; its message
/// always does.
#[test]
fn a_returned_error_keeps_its_type() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let e = ray::get(&refuse::remote(42)).unwrap_err();
            assert_eq!(e.downcast::<Refusal>(), Some(Refusal::TooBig(42)));
            assert_eq!(e.downcast::<u64>(), None, "another type");
            assert!(e.to_string().contains("refused: TooBig(42)"), "{e}");
            let e = ray::get(&refuse_with_text::remote()).unwrap_err();
            assert_eq!(e.downcast::<String>().as_deref(), Some("plain text"));
            let e = ray::get(&refuse_with_io::remote()).unwrap_err();
            assert!(e.to_string().contains("disk on fire"), "{e}");
            assert_eq!(
                e.downcast::<String>(),
                None,
                "an io::Error is not encodable"
            );
            let (a, b) = refuse_two::remote();
            for r in [a, b] {
                let e = ray::get(&r).unwrap_err();
                assert_eq!(e.downcast::<Refusal>(), Some(Refusal::TooBig(2)));
            }
            let gate = Gatekeeper::remote();
            let e = ray::get(&gate.check(7)).unwrap_err();
            assert_eq!(e.downcast::<Refusal>(), Some(Refusal::TooBig(7)));
        });
    }
}

#[ray::remote]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[ray::remote]
fn lengths(xs: Vec<Vec<u8>>) -> Vec<usize> {
    xs.iter().map(Vec::len).collect()
}

#[ray::remote]
fn double(x: u64) -> u64 {
    2 * x
}

#[ray::remote]
fn bytes_of(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[ray::remote(max_retries = 0)]
fn broken_number() -> Result<u64, String> {
    Err("no number".into())
}

struct Summer;

#[ray::actor]
impl Summer {
    pub fn new() -> Self {
        Summer
    }
    pub fn sum(&self, xs: Vec<u64>) -> u64 {
        xs.iter().sum()
    }
}

/// A `Vec<ObjectRef<T>>` goes where a function takes `Vec<T>` (Ray's `f.remote(*refs)`):
/// the task gets the values in order, small ones, large ones from shared memory and `put`
/// ones alike; a failed element fails the call as a failed argument.
#[test]
fn a_list_of_refs_is_passed_as_a_list_of_values() {
    for config in [ray::Config::local().num_cpus(2.0), ray::Config::sync()] {
        with_ray(config, || {
            let parts: Vec<ray::ObjectRef<u64>> = (1..=4).map(double::remote).collect();
            assert_eq!(ray::get(&total::remote(parts.clone())).unwrap(), 20);
            assert_eq!(ray::get(&total::remote(&parts[..2])).unwrap(), 6);
            let none: Vec<ray::ObjectRef<u64>> = Vec::new();
            assert_eq!(ray::get(&total::remote(none)).unwrap(), 0);
            let mixed = vec![
                bytes_of::remote(10),
                bytes_of::remote(300_000),
                ray::put(&vec![1u8; 5]).unwrap(),
            ];
            assert_eq!(
                ray::get(&lengths::remote(mixed)).unwrap(),
                vec![10, 300_000, 5]
            );
            let summer = Summer::remote();
            assert_eq!(ray::get(&summer.sum(parts)).unwrap(), 20);
            let with_failure = vec![double::remote(1), broken_number::remote()];
            let e = ray::get(&total::remote(with_failure)).unwrap_err();
            assert!(matches!(e, Error::ArgumentFailed { .. }), "{e}");
            assert!(e.to_string().contains("no number"), "{e}");
        });
    }
}

struct Splitter;

#[ray::actor]
impl Splitter {
    pub fn new() -> Self {
        Splitter
    }
    #[ray::method(num_returns = 2)]
    pub fn measure(&self, s: String) -> (String, usize) {
        let n = s.len();
        (s, n)
    }
    #[ray::method(num_returns = 2)]
    pub fn refuse(&self) -> Result<(u8, u8), Refusal> {
        Err(Refusal::TooBig(5))
    }
}

/// `#[ray::method(num_returns = n)]`: an actor method's tuple is `n` objects of their own.
#[test]
fn an_actor_method_returns_several_objects() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let a = Splitter::remote();
            let (text, len) = a.measure("four".to_string());
            assert_eq!(ray::get(&len).unwrap(), 4);
            assert_eq!(ray::get(&text).unwrap(), "four");
            let (x, y) = a.refuse();
            for e in [ray::get(&x).unwrap_err(), ray::get(&y).unwrap_err()] {
                assert_eq!(e.downcast::<Refusal>(), Some(Refusal::TooBig(5)));
            }
        });
    }
}

struct Flaky {
    runs: std::sync::atomic::AtomicU32,
}

#[ray::actor]
impl Flaky {
    pub fn new() -> Self {
        Flaky {
            runs: std::sync::atomic::AtomicU32::new(0),
        }
    }
    /// Fails its first two runs.
    #[ray::method(retry_exceptions = true)]
    pub fn third_time_lucky(&self) -> Result<u32, String> {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if run < 3 {
            Err(format!("run {run} failed"))
        } else {
            Ok(run)
        }
    }
}

/// `#[ray::method(retry_exceptions = true)]`: a call that returned `Err` is sent again,
/// within the actor's `max_task_retries`.
#[test]
fn an_actor_method_is_retried_on_its_error_within_max_task_retries() {
    for config in [ray::Config::local().num_cpus(1.0), ray::Config::sync()] {
        with_ray(config, || {
            let a = Flaky::options().max_task_retries(3).remote();
            assert_eq!(ray::get(&a.third_time_lucky()).unwrap(), 3);
            // Without retries to spend, the first error stands.
            let b = Flaky::remote();
            let e = ray::get(&b.third_time_lucky()).unwrap_err();
            assert!(e.to_string().contains("run 1 failed"), "{e}");
        });
    }
}
