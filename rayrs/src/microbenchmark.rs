//! `rayrs microbenchmark`: Ray's `ray microbenchmark` (python/ray/_private/ray_perf.py), one
//! workload for one, printing the same metric names.
//!
//! Timing is Ray's `timeit` (ray_microbenchmark_helpers.py): call the workload for about 1 s
//! to warm up and count the calls, set `step = count / 10 + 1`, then run 4 rounds, each
//! calling it in chunks of `step` until at least 2 s have passed; a round's value is
//! `multiplier * calls / elapsed`; the line gives the mean and the (population) standard
//! deviation of the 4 rounds. Ray also sleeps 10 s before each metric (a guard against noisy
//! neighbours); we do not, since nothing else runs in our session.
//!
//! Differences from Ray, on purpose: `n` (the number of server actors in the `1:n` and `n:n`
//! shapes) is the number of CPUs, at least 2 (Ray uses `cpu_count() // 2`); `AsyncActor`
//! holds no CPU (as Ray's, in practice: an actor holds no CPU while it runs); and we add
//! `actor creation`, which Ray's list lacks.

use ray::{ActorHandle, ObjectRef};
use serde::Serialize;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn err(e: ray::Error) -> String {
    e.to_string()
}

// ---- remote definitions (ray_perf.py's, in Rust) ----

/// `small_value`: returns the two bytes `ok`.
#[ray::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

/// `do_put_small`: `n` puts of a small integer.
#[ray::remote]
fn do_put_small(n: u32) -> Result<u32, String> {
    for _ in 0..n {
        ray::put(&0i64).map_err(err)?;
    }
    Ok(n)
}

/// `do_put`: `puts` puts of `elems` zeroed i64s.
#[ray::remote]
fn do_put(puts: u32, elems: u64) -> Result<u32, String> {
    let arr = vec![0i64; elems as usize];
    for _ in 0..puts {
        put_array(&arr)?;
    }
    Ok(puts)
}

/// `create_object_containing_ref`: a list of `n` refs, each from a `put`.
#[ray::remote]
fn create_object_containing_ref(n: u32) -> Result<Vec<ObjectRef<i64>>, String> {
    (0..n).map(|_| ray::put(&1i64).map_err(err)).collect()
}

/// Recursive Fibonacci with nested tasks: each call submits its two children and blocks in
/// `get` on them (divide and conquer, as in Ray's nested-task docs). `fib(n)` makes
/// `2 * fib(n + 1) - 1` tasks.
#[ray::remote]
fn fib(n: u32) -> Result<u64, String> {
    if n < 2 {
        return Ok(u64::from(n));
    }
    let children = [fib::remote(n - 1), fib::remote(n - 2)];
    Ok(ray::get_all(&children).map_err(err)?.iter().sum())
}

/// Tasks made by `fib(n)`.
fn fib_tasks(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64); // fib(0), fib(1)
    for _ in 0..=n {
        (a, b) = (b, a + b);
    }
    2 * a - 1
}

/// `work` of the n:n shape: `n` calls, round-robin over `actors`, then get them all.
#[ray::remote]
fn work(actors: Vec<ActorHandle<Actor>>, n: u32) -> Result<u32, String> {
    let refs: Vec<ObjectRef<Vec<u8>>> = (0..n as usize)
        .map(|i| actors[i % actors.len()].small_value())
        .collect();
    ray::get_all(&refs).map_err(err)?;
    Ok(n)
}

/// `async_actor_work`: the same, on async actors.
#[ray::remote]
fn async_actor_work(actors: Vec<ActorHandle<AsyncActor>>, n: u32) -> Result<u32, String> {
    let refs: Vec<ObjectRef<Vec<u8>>> = (0..n as usize)
        .map(|i| actors[i % actors.len()].small_value())
        .collect();
    ray::get_all(&refs).map_err(err)?;
    Ok(n)
}

/// Ray's `Actor` (num_cpus=0, the default here).
#[ray::actor]
pub struct Actor;

#[ray::actor]
impl Actor {
    #[allow(clippy::new_without_default)] // called remotely, never through Default
    pub fn new() -> Self {
        Actor
    }
    pub fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    pub fn small_value_arg(&self, _x: i64) -> Vec<u8> {
        b"ok".to_vec()
    }
    /// Submits `n` `small_value` tasks and gets them all.
    pub fn small_value_batch(&self, n: u32) -> Result<u32, String> {
        let refs: Vec<ObjectRef<Vec<u8>>> = (0..n).map(|_| small_value::remote()).collect();
        ray::get_all(&refs).map_err(err)?;
        Ok(n)
    }
}

/// Ray's `AsyncActor`: its methods are `async`, so calls run concurrently on its event loop.
#[ray::actor]
pub struct AsyncActor;

#[ray::actor]
impl AsyncActor {
    #[allow(clippy::new_without_default)] // called remotely, never through Default
    pub fn new() -> Self {
        AsyncActor
    }
    pub async fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    pub async fn small_value_with_arg(&self, _x: i64) -> Vec<u8> {
        b"ok".to_vec()
    }
}

/// Ray's `Client` (num_cpus=0): calls its servers.
#[ray::actor]
pub struct Client {
    servers: Vec<ActorHandle<Actor>>,
}

#[ray::actor]
impl Client {
    pub fn new(servers: Vec<ActorHandle<Actor>>) -> Self {
        Client { servers }
    }
    /// `n` calls to each server, then get them all.
    pub fn small_value_batch(&self, n: u32) -> Result<u32, String> {
        let refs: Vec<ObjectRef<Vec<u8>>> = self
            .servers
            .iter()
            .flat_map(|s| (0..n).map(move |_| s.small_value()))
            .collect();
        ray::get_all(&refs).map_err(err)?;
        Ok(refs.len() as u32)
    }
    /// The same, each call passing the ref of one `put` as its argument.
    pub fn small_value_batch_arg(&self, n: u32) -> Result<u32, String> {
        let x = ray::put(&0i64).map_err(err)?;
        let refs: Vec<ObjectRef<Vec<u8>>> = self
            .servers
            .iter()
            .flat_map(|s| (0..n).map(|_| s.small_value_arg(&x)).collect::<Vec<_>>())
            .collect();
        ray::get_all(&refs).map_err(err)?;
        Ok(refs.len() as u32)
    }
}

/// Ray's `Client` with async-actor servers.
#[ray::actor]
pub struct AsyncClient {
    servers: Vec<ActorHandle<AsyncActor>>,
}

#[ray::actor]
impl AsyncClient {
    pub fn new(servers: Vec<ActorHandle<AsyncActor>>) -> Self {
        AsyncClient { servers }
    }
    pub fn small_value_batch(&self, n: u32) -> Result<u32, String> {
        let refs: Vec<ObjectRef<Vec<u8>>> = self
            .servers
            .iter()
            .flat_map(|s| (0..n).map(move |_| s.small_value()))
            .collect();
        ray::get_all(&refs).map_err(err)?;
        Ok(refs.len() as u32)
    }
}

/// Puts an array of numbers: the one place the gigabyte metrics store their data. As
/// `ray.put(np.zeros(..))` in Ray: the array's bytes go into shared memory as they are.
fn put_array(arr: &[i64]) -> R<()> {
    ray::put_slice(arr).map_err(err)?;
    Ok(())
}

// ---- the harness ----

/// One metric's result, named as the JSON keys of the Ray baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub name: String,
    pub per_second: f64,
    pub sd: f64,
}

/// Workload sizes: Ray's, or small ones for `--quick`.
struct Sizes {
    /// Tasks (or actor calls) per batch in the "async" metrics.
    batch: u32,
    /// Small puts per task in "multi client put calls".
    puts_per_task: u32,
    /// i64s in the array of "single client put gigabytes".
    big_elems: u64,
    /// i64s in each array of "multi client put gigabytes".
    multi_big_elems: u64,
    /// Refs in the object of "get object containing 10k refs".
    refs_in_object: u32,
    /// Tasks per actor in "multi client tasks async".
    multi_tasks: u32,
    /// Calls per server in "1:n", per task in "n:n".
    fan: u32,
    /// Calls per client in "n:n actor calls with arg".
    with_arg: u32,
    /// Actors in "actor creation".
    actors_created: u32,
    /// Actors in "actor creation, sharing processes".
    actors_shared: u32,
    /// Tasks submitted before one `get_all` of them all (Ray's envelope: 1M queued tasks).
    queued_tasks: u32,
    /// `n` of the nested-task `fib(n)`.
    fib: u32,
    /// Groups made, waited for and removed in "placement group create/removal".
    placement_groups: u32,
}

const FULL: Sizes = Sizes {
    batch: 1000,
    puts_per_task: 100,
    big_elems: 100 << 20,
    multi_big_elems: 10 << 20,
    refs_in_object: 10_000,
    multi_tasks: 10_000,
    fan: 5000,
    with_arg: 1000,
    actors_created: 1000,
    actors_shared: 10_000,
    queued_tasks: 1_000_000,
    fib: 15,
    placement_groups: 100,
};

const QUICK: Sizes = Sizes {
    batch: 100,
    puts_per_task: 10,
    big_elems: 1 << 20,
    multi_big_elems: 128 << 10,
    refs_in_object: 1000,
    multi_tasks: 500,
    fan: 200,
    with_arg: 100,
    actors_created: 20,
    actors_shared: 200,
    queued_tasks: 20_000,
    fib: 10,
    placement_groups: 10,
};

/// Ray's unit for the gigabyte metrics: 100 Mi i64s (800 MiB) count as 0.8 "GB".
fn gigabytes(elems: u64) -> f64 {
    elems as f64 / (1u64 << 20) as f64 * 0.008
}

pub(crate) struct Harness {
    filter: Option<String>,
    json: bool,
    pub(crate) quick: bool,
    results: Vec<Stat>,
    failures: Vec<String>,
}

impl Harness {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// Ray's `timeit`: warm-up, then rounds; prints and records the line.
    pub(crate) fn timeit(
        &mut self,
        name: &str,
        multiplier: f64,
        mut f: impl FnMut() -> R<()>,
    ) -> R<()> {
        let (warmup, rounds, round_min) = if self.quick {
            (Duration::from_millis(200), 1, Duration::from_millis(200))
        } else {
            (Duration::from_secs(1), 4, Duration::from_secs(2))
        };
        let start = Instant::now();
        let mut count = 0u64;
        loop {
            f()?;
            count += 1;
            if start.elapsed() >= warmup {
                break;
            }
        }
        let step = count / 10 + 1;
        let mut stats = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < round_min {
                for _ in 0..step {
                    f()?;
                }
                calls += step;
            }
            stats.push(multiplier * calls as f64 / start.elapsed().as_secs_f64());
        }
        self.record(name, &stats)
    }

    /// For workloads too big to repeat (Ray's scalability envelope): one timed run after
    /// one untimed warm-up of `warmup`, counted as `multiplier` operations.
    fn once(
        &mut self,
        name: &str,
        multiplier: f64,
        warmup: impl FnOnce() -> R<()>,
        f: impl FnOnce() -> R<()>,
    ) -> R<()> {
        warmup()?;
        let start = Instant::now();
        f()?;
        let stats = [multiplier / start.elapsed().as_secs_f64()];
        self.record(name, &stats)
    }

    /// Prints and keeps the mean and standard deviation of `stats`.
    pub(crate) fn record(&mut self, name: &str, stats: &[f64]) -> R<()> {
        let mean = stats.iter().sum::<f64>() / stats.len() as f64;
        let sd =
            (stats.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / stats.len() as f64).sqrt();
        let stat = Stat {
            name: name.to_string(),
            per_second: mean,
            sd,
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&stat).map_err(|e| e.to_string())?
            );
        } else {
            println!("{name} per second {mean:.2} +- {sd:.2}");
        }
        self.results.push(stat);
        Ok(())
    }

    /// Runs one metric (its setup and its timing) if the filter wants it; a failure is
    /// recorded and the run goes on.
    pub(crate) fn metric(&mut self, name: &str, body: impl FnOnce(&mut Self, &str) -> R<()>) {
        if !self.wants(name) {
            return;
        }
        settle(if self.quick { 2 } else { 60 });
        let outcome = catch_unwind(AssertUnwindSafe(|| body(self, name)))
            .unwrap_or_else(|p| Err(panic_message(&p)));
        if let Err(e) = outcome {
            eprintln!("{name}: FAILED: {e}");
            self.failures.push(name.to_string());
        }
    }
}

/// CPU seconds this process has used so far (user + system), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

/// Waits (at most `max_secs`) until this process is idle: below 5% of a core over 200 ms.
/// Work a metric leaves behind (refs still being released, say) then does not slow the next
/// one. Ray's harness sleeps 10 s before every metric for the same reason.
fn settle(max_secs: u64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(max_secs);
    while let Some(before) = cpu_seconds() {
        std::thread::sleep(Duration::from_millis(200));
        let Some(after) = cpu_seconds() else { break };
        if after - before < 0.01 || Instant::now() >= deadline {
            break;
        }
    }
    let waited = start.elapsed();
    if waited > Duration::from_secs(2) {
        eprintln!(
            "(waited {:.1} s for the runtime to go idle)",
            waited.as_secs_f64()
        );
    }
}

pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    format!("panicked: {msg}")
}

fn kill_all<A: ray::ActorClass>(actors: &[ActorHandle<A>]) -> R<()> {
    for a in actors {
        ray::kill(a).map_err(err)?;
    }
    Ok(())
}

/// `actor creation, sharing processes`: creates `k` actors that share worker processes
/// (`share_process(true)`, a few hundred a process), calls each once, then kills them all.
fn create_call_kill_shared(k: u32) -> R<()> {
    let actors: Vec<ActorHandle<Actor>> = (0..k)
        .map(|_| Actor::options().share_process(true).remote())
        .collect();
    let pings: Vec<_> = actors.iter().map(|a| a.small_value()).collect();
    ray::get_all(&pings).map_err(err)?;
    kill_all(&actors)
}

/// `actor creation`: creates `k` actors, calls each once, and kills them. Each is killed as
/// soon as it has answered, not all at the end, since the node caps its worker processes (512)
/// and the actors past the cap start as earlier ones go. `ray::kill` blocks until the process
/// is gone (Ray's returns at once), so 8 threads kill side by side.
fn create_call_kill(k: u32) -> R<()> {
    let actors: Vec<ActorHandle<Actor>> = (0..k).map(|_| Actor::remote()).collect();
    let pings: Vec<_> = actors.iter().map(|a| a.small_value()).collect();
    let index: HashMap<String, usize> =
        pings.iter().enumerate().map(|(i, p)| (p.id(), i)).collect();
    let (to_kill, killable) = std::sync::mpsc::channel::<usize>();
    let killable = std::sync::Mutex::new(killable);
    std::thread::scope(|scope| {
        let killers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| -> R<()> {
                    loop {
                        let next = killable.lock().map_err(|e| e.to_string())?.recv();
                        match next {
                            Ok(i) => ray::kill(&actors[i]).map_err(err)?,
                            Err(_) => return Ok(()),
                        }
                    }
                })
            })
            .collect();
        let mut pending = pings;
        let waited = (|| -> R<()> {
            while !pending.is_empty() {
                let (mut ready, rest) = ray::wait(&pending, 1, None).map_err(err)?;
                let (more, rest) = if rest.is_empty() {
                    (Vec::new(), rest)
                } else {
                    ray::wait(&rest, rest.len(), Some(Duration::ZERO)).map_err(err)?
                };
                ready.extend(more);
                for r in &ready {
                    ray::get(r).map_err(err)?;
                    to_kill.send(index[&r.id()]).map_err(|e| e.to_string())?;
                }
                pending = rest;
            }
            Ok(())
        })();
        drop(to_kill);
        for killer in killers {
            killer.join().map_err(|p| panic_message(&p))??;
        }
        waited
    })
}

/// `rayrs microbenchmark [--filter PATTERN] [--json] [--quick]`.
pub fn main(filter: Option<String>, json: bool, quick: bool, cluster: bool) -> R<()> {
    let mut h = Harness {
        filter,
        json,
        quick,
        results: Vec::new(),
        failures: Vec::new(),
    };
    let started = Instant::now();
    if cluster {
        crate::cluster_bench::main(&mut h)?;
    } else {
        ray::init(ray::Config::from_env()).map_err(err)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| run(&mut h)))
            .unwrap_or_else(|p| Err(panic_message(&p)));
        ray::shutdown();
        outcome?;
    }
    eprintln!(
        "{} metrics in {:.1} s{}",
        h.results.len(),
        started.elapsed().as_secs_f64(),
        if h.quick { " (--quick)" } else { "" }
    );
    if h.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", h.failures.join(", ")))
    }
}

fn run(h: &mut Harness) -> R<()> {
    let s = if h.quick { &QUICK } else { &FULL };
    let cpus = ray::cluster_resources()
        .map_err(err)?
        .get("CPU")
        .copied()
        .unwrap_or(2.0);
    let n = (cpus as usize).max(2);

    h.metric("single client get calls (Plasma Store)", |h, name| {
        let value = ray::put(&0i64).map_err(err)?;
        h.timeit(name, 1.0, || ray::get(&value).map(drop).map_err(err))
    });

    h.metric("single client put calls (Plasma Store)", |h, name| {
        h.timeit(name, 1.0, || ray::put(&0i64).map(drop).map_err(err))
    });

    h.metric("multi client put calls (Plasma Store)", |h, name| {
        let per = s.puts_per_task;
        h.timeit(name, f64::from(10 * per), || {
            let refs: Vec<_> = (0..10).map(|_| do_put_small::remote(per)).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        })
    });

    h.metric("single client put gigabytes", |h, name| {
        let arr = vec![0i64; s.big_elems as usize];
        h.timeit(name, gigabytes(s.big_elems), || put_array(&arr))
    });

    h.metric("single client tasks and get batch", |h, name| {
        h.timeit(name, 1.0, || {
            let refs: Vec<_> = (0..s.batch).map(|_| small_value::remote()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        })
    });

    h.metric("multi client put gigabytes", |h, name| {
        let elems = s.multi_big_elems;
        h.timeit(name, 10.0 * 10.0 * gigabytes(elems), || {
            let refs: Vec<_> = (0..10).map(|_| do_put::remote(10, elems)).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        })
    });

    h.metric("single client wait 1k refs", |h, name| {
        h.timeit(name, 1.0, || {
            let mut not_ready: Vec<_> = (0..s.batch).map(|_| small_value::remote()).collect();
            while !not_ready.is_empty() {
                not_ready = ray::wait(&not_ready, 1, None).map_err(err)?.1;
            }
            Ok(())
        })
    });

    h.metric("single client tasks sync", |h, name| {
        h.timeit(name, 1.0, || {
            ray::get(&small_value::remote()).map(drop).map_err(err)
        })
    });

    h.metric("single client tasks async", |h, name| {
        h.timeit(name, f64::from(s.batch), || {
            let refs: Vec<_> = (0..s.batch).map(|_| small_value::remote()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        })
    });

    h.metric("multi client tasks async", |h, name| {
        let actors: Vec<ActorHandle<Actor>> = (0..4).map(|_| Actor::remote()).collect();
        let per = s.multi_tasks;
        let r = h.timeit(name, f64::from(4 * per), || {
            let refs: Vec<_> = actors.iter().map(|a| a.small_value_batch(per)).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&actors)?;
        r
    });

    h.metric("1:1 actor calls sync", |h, name| {
        let a = Actor::remote();
        let r = h.timeit(name, 1.0, || {
            ray::get(&a.small_value()).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:1 actor calls async", |h, name| {
        let a = Actor::remote();
        let r = h.timeit(name, f64::from(s.batch), || {
            let refs: Vec<_> = (0..s.batch).map(|_| a.small_value()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:1 actor calls concurrent", |h, name| {
        let a = Actor::options().max_concurrency(16).remote();
        let r = h.timeit(name, f64::from(s.batch), || {
            let refs: Vec<_> = (0..s.batch).map(|_| a.small_value()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:n actor calls async", |h, name| {
        let servers: Vec<ActorHandle<Actor>> = (0..n).map(|_| Actor::remote()).collect();
        let client = Client::remote(servers.clone());
        let r = h.timeit(name, f64::from(s.fan) * n as f64, || {
            ray::get(&client.small_value_batch(s.fan))
                .map(drop)
                .map_err(err)
        });
        kill_all(&[client])?;
        kill_all(&servers)?;
        r
    });

    h.metric("n:n actor calls async", |h, name| {
        let actors: Vec<ActorHandle<Actor>> = (0..n).map(|_| Actor::remote()).collect();
        let r = h.timeit(name, f64::from(4 * s.fan), || {
            let refs: Vec<_> = (0..4)
                .map(|_| work::remote(actors.clone(), s.fan))
                .collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&actors)?;
        r
    });

    h.metric("n:n actor calls with arg async", |h, name| {
        let servers: Vec<ActorHandle<Actor>> = (0..n).map(|_| Actor::remote()).collect();
        let clients: Vec<ActorHandle<Client>> = servers
            .iter()
            .map(|a| Client::remote(vec![a.clone()]))
            .collect();
        let r = h.timeit(name, f64::from(s.with_arg) * n as f64, || {
            let refs: Vec<_> = clients
                .iter()
                .map(|c| c.small_value_batch_arg(s.with_arg))
                .collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&clients)?;
        kill_all(&servers)?;
        r
    });

    h.metric("1:1 async-actor calls sync", |h, name| {
        let a = AsyncActor::remote();
        let r = h.timeit(name, 1.0, || {
            ray::get(&a.small_value()).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:1 async-actor calls async", |h, name| {
        let a = AsyncActor::remote();
        let r = h.timeit(name, f64::from(s.batch), || {
            let refs: Vec<_> = (0..s.batch).map(|_| a.small_value()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:1 async-actor calls with args async", |h, name| {
        let a = AsyncActor::remote();
        let r = h.timeit(name, f64::from(s.batch), || {
            let refs: Vec<_> = (0..s.batch)
                .map(|i| a.small_value_with_arg(i64::from(i)))
                .collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&[a])?;
        r
    });

    h.metric("1:n async-actor calls async", |h, name| {
        let servers: Vec<ActorHandle<AsyncActor>> = (0..n).map(|_| AsyncActor::remote()).collect();
        let client = AsyncClient::remote(servers.clone());
        let r = h.timeit(name, f64::from(s.fan) * n as f64, || {
            ray::get(&client.small_value_batch(s.fan))
                .map(drop)
                .map_err(err)
        });
        kill_all(&[client])?;
        kill_all(&servers)?;
        r
    });

    h.metric("n:n async-actor calls async", |h, name| {
        let actors: Vec<ActorHandle<AsyncActor>> = (0..n).map(|_| AsyncActor::remote()).collect();
        let r = h.timeit(name, f64::from(4 * s.fan), || {
            let refs: Vec<_> = (0..4)
                .map(|_| async_actor_work::remote(actors.clone(), s.fan))
                .collect();
            ray::get_all(&refs).map(drop).map_err(err)
        });
        kill_all(&actors)?;
        r
    });

    // Ray's scalability envelope ("# of tasks queued on a single node: 1,000,000"): every
    // task submitted, then one `get_all`. Timed once: a round is seconds long.
    h.metric("single client 1M queued tasks and get", |h, name| {
        let batch = |n: u32| {
            let refs: Vec<ObjectRef<Vec<u8>>> = (0..n).map(|_| small_value::remote()).collect();
            ray::get_all(&refs).map(drop).map_err(err)
        };
        let n = s.queued_tasks;
        h.once(name, f64::from(n), || batch(n / 10), || batch(n))
    });

    // Not in Ray's list: nested tasks, each blocked in `get` on its children. Counted in
    // tasks per second; benches/compare-with-ray.sh runs Ray's version of it.
    h.metric("nested tasks fib", |h, name| {
        let n = s.fib;
        let expected = (0..n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
        h.timeit(name, fib_tasks(n) as f64, || {
            let got = ray::get(&fib::remote(n)).map_err(err)?;
            if got == expected {
                Ok(())
            } else {
                Err(format!("fib({n}) = {got}, expected {expected}"))
            }
        })
    });

    // Ray's: groups of one bundle of 0.001 of a resource, all made, each waited for, all
    // removed (Ray asks for a custom resource; the name costs nothing here).
    h.metric("placement group create/removal", |h, name| {
        use ray::util::{placement_group, remove_placement_group, Bundle, PlacementStrategy};
        let k = s.placement_groups;
        h.timeit(name, f64::from(k), || {
            let groups = (0..k)
                .map(|_| placement_group([Bundle::new().cpus(0.001)], PlacementStrategy::Pack))
                .collect::<ray::Result<Vec<_>>>()
                .map_err(err)?;
            for g in &groups {
                if !g.wait(Duration::from_secs(30)).map_err(err)? {
                    return Err("a placement group was not created within 30 s".into());
                }
            }
            for g in &groups {
                remove_placement_group(g).map_err(err)?;
            }
            Ok(())
        })
    });

    h.metric("actor creation", |h, name| {
        let k = s.actors_created;
        h.timeit(name, f64::from(k), || create_call_kill(k))
    });

    h.metric("actor creation, sharing processes", |h, name| {
        let k = s.actors_shared;
        h.timeit(name, f64::from(k), || create_call_kill_shared(k))
    });

    // Last, unlike Ray: every `get` here makes 10,000 borrowed refs, each released to its
    // owner when dropped. When each release was an RPC of its own they queued up faster than
    // they drained (over a minute of work after this metric on 2 cores) and slowed whatever
    // ran next; last, a backlog cannot skew another metric.
    h.metric("single client get object containing 10k refs", |h, name| {
        let obj = create_object_containing_ref::remote(s.refs_in_object);
        h.timeit(name, 1.0, || ray::get(&obj).map(drop).map_err(err))
    });
    Ok(())
}
