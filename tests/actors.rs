//! Actors on real worker processes: ordering, concurrency (proven with latches, not timing),
//! names and namespaces, handles passed around, kill, failing constructors and methods,
//! restarts with replayed calls, lifetimes, and sync mode giving the same results.
#![allow(clippy::new_without_default)] // actor constructors are called remotely, never through Default

use ray::{ActorHandle, Error, ObjectRef};
use ray_rs::{eventually, with_ray};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[ray::actor]
pub struct Counter {
    n: u64,
    log: Vec<(u32, u32)>,
}

#[ray::actor]
impl Counter {
    pub fn new(start: u64) -> Self {
        Counter {
            n: start,
            log: Vec::new(),
        }
    }
    pub fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    pub fn get(&self) -> u64 {
        self.n
    }
    pub fn fail(&self) -> Result<u64, String> {
        Err("no".into())
    }
    pub fn record(&mut self, caller: u32, i: u32) -> usize {
        self.log.push((caller, i));
        self.log.len()
    }
    pub fn log(&self) -> Vec<(u32, u32)> {
        self.log.clone()
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    pub fn die(&self) -> u64 {
        std::process::exit(7)
    }
    /// Exits the process the first time (a marker file remembers), then answers.
    pub fn crash_once(&self, marker: String) -> u64 {
        if std::fs::metadata(&marker).is_err() {
            std::fs::write(&marker, b"x").unwrap();
            std::process::exit(7);
        }
        self.n
    }
    pub async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// Threaded actor: `arrive` returns true only if `n` calls are inside it at the same time.
#[ray::actor]
pub struct Latch {
    arrived: Mutex<u32>,
    all_here: Condvar,
}

#[ray::actor]
impl Latch {
    pub fn new() -> Self {
        Latch {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
        }
    }
    /// Waits up to `ms` for `n` calls to be inside at once.
    pub fn arrive(&self, n: u32, ms: u64) -> bool {
        let mut a = self.arrived.lock().unwrap();
        *a += 1;
        self.all_here.notify_all();
        let (a, timeout) = self
            .all_here
            .wait_timeout_while(a, Duration::from_millis(ms), |a| *a < n)
            .unwrap();
        !timeout.timed_out() && *a >= n
    }
}

/// Async actor: the same proof with a tokio barrier.
#[ray::actor]
pub struct AsyncLatch {
    arrived: AtomicU32,
    notify: tokio::sync::Notify,
}

#[ray::actor]
impl AsyncLatch {
    pub fn new() -> Self {
        AsyncLatch {
            arrived: AtomicU32::new(0),
            notify: tokio::sync::Notify::new(),
        }
    }
    pub async fn arrive(&self, n: u32) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
        let wait = async {
            while self.arrived.load(Ordering::SeqCst) < n {
                let notified = self.notify.notified();
                if self.arrived.load(Ordering::SeqCst) >= n {
                    break;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_ok()
    }
}

#[ray::actor]
pub struct Fragile;

#[ray::actor]
impl Fragile {
    pub fn new(mode: String) -> Result<Self, String> {
        match mode.as_str() {
            "error" => Err("cannot start: bad config".into()),
            "panic" => panic!("constructor exploded"),
            _ => Ok(Fragile),
        }
    }
    pub fn ping(&self) -> u8 {
        1
    }
}

/// An actor that calls another actor through a handle it was given.
#[ray::actor]
pub struct Relay {
    target: ActorHandle<Counter>,
}

#[ray::actor]
impl Relay {
    pub fn new(target: ActorHandle<Counter>) -> Self {
        Relay { target }
    }
    pub fn bump(&self, by: u64) -> u64 {
        ray::get(&self.target.incr(by)).unwrap()
    }
}

#[ray::remote]
fn bump_from_task(c: ActorHandle<Counter>, by: u64) -> u64 {
    ray::get(&c.incr(by)).unwrap()
}

#[ray::remote]
fn record_many(c: ActorHandle<Counter>, caller: u32, n: u32) -> usize {
    let refs: Vec<ObjectRef<usize>> = (0..n).map(|i| c.record(caller, i)).collect();
    ray::get_all(&refs).unwrap().len()
}

/// Creates a named owner-scoped actor and drops its handle when the task ends.
#[ray::remote]
fn create_scoped(name: String) -> u64 {
    let c = Counter::options().name(name).remote(1);
    ray::get(&c.get()).unwrap()
}

#[ray::remote]
fn create_detached(name: String) -> u64 {
    let c = Counter::options().name(name).lifetime_detached().remote(2);
    ray::get(&c.get()).unwrap()
}

static KEEP: Mutex<Vec<ActorHandle<Counter>>> = Mutex::new(Vec::new());

/// Creates a named actor, keeps its handle, and then its worker process dies.
#[ray::remote(max_retries = 0)]
fn create_then_die(name: String) -> u64 {
    let c = Counter::options().name(name).remote(3);
    ray::get(&c.get()).unwrap();
    KEEP.lock().unwrap().push(c);
    std::process::exit(9)
}

fn temp_path(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("rayrs-actor-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.display().to_string()
}

fn local() -> ray::Config {
    ray::Config::local().num_cpus(2.0)
}

#[test]
fn calls_from_one_caller_run_in_order() {
    with_ray(local(), || {
        let c: ActorHandle<Counter> = Counter::remote(0);
        assert_eq!(ray::get(&c.incr(5)).unwrap(), 5);
        let refs: Vec<_> = (0..1000).map(|i| c.record(0, i)).collect();
        assert_eq!(ray::get(refs.last().unwrap()).unwrap(), 1000);
        let log = ray::get(&c.log()).unwrap();
        assert_eq!(log, (0..1000).map(|i| (0, i)).collect::<Vec<_>>());
        assert_ne!(ray::get(&c.pid()).unwrap(), std::process::id());
    });
}

#[test]
fn two_callers_each_keep_their_order() {
    with_ray(local(), || {
        let c = Counter::remote(0);
        let a = record_many::remote(c.clone(), 1, 300);
        let b = record_many::remote(c.clone(), 2, 300);
        ray::get_all(&[a, b]).unwrap();
        let log = ray::get(&c.log()).unwrap();
        assert_eq!(log.len(), 600);
        for caller in [1, 2] {
            let seen: Vec<u32> = log
                .iter()
                .filter(|(c, _)| *c == caller)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(seen, (0..300).collect::<Vec<_>>(), "caller {caller}");
        }
    });
}

#[test]
fn threaded_and_async_actors_overlap_calls() {
    with_ray(local(), || {
        let latch = Latch::options().max_concurrency(2).remote();
        let calls = [latch.arrive(2, 10_000), latch.arrive(2, 10_000)];
        assert_eq!(
            ray::get_all(&calls).unwrap(),
            vec![true, true],
            "both calls were inside at once"
        );

        let alatch = AsyncLatch::remote();
        let calls: Vec<_> = (0..3).map(|_| alatch.arrive(3)).collect();
        assert_eq!(ray::get_all(&calls).unwrap(), vec![true; 3]);

        // The default sequential actor does not overlap: the first call times out alone.
        let seq = Latch::remote();
        assert!(!ray::get(&seq.arrive(2, 300)).unwrap());

        let c = Counter::remote(0);
        let slow: Vec<_> = (0..4).map(|_| c.slow(300)).collect();
        assert_eq!(ray::get_all(&slow).unwrap(), vec![300; 4]);
    });
}

#[test]
fn named_actors_live_in_namespaces() {
    with_ray(local(), || {
        let web = Counter::options().name("hits").namespace("web").remote(10);
        let other = Counter::options()
            .name("hits")
            .namespace("other")
            .remote(20);
        assert_eq!(ray::get(&web.get()).unwrap(), 10);
        assert_eq!(ray::get(&other.get()).unwrap(), 20);
        let again: ActorHandle<Counter> = ray::get_actor("hits", Some("web")).unwrap();
        assert_eq!(ray::get(&again.incr(1)).unwrap(), 11);
        let same = Counter::options()
            .name("hits")
            .namespace("web")
            .get_if_exists()
            .remote(99);
        assert_eq!(
            ray::get(&same.get()).unwrap(),
            11,
            "the existing actor, not a new one"
        );
        match Counter::options()
            .name("hits")
            .namespace("web")
            .try_remote(1)
        {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("hits"), "{m}"),
            other => panic!("expected a name conflict, got {other:?}"),
        }
        let dup = Counter::options().name("hits").namespace("web").remote(1);
        assert!(matches!(
            ray::get(&dup.get()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ray::get_actor::<Counter>("missing", Some("web")),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ray::get_actor::<Latch>("hits", Some("web")),
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn handles_pass_into_tasks_and_actors() {
    with_ray(local(), || {
        let c = Counter::remote(0);
        assert_eq!(ray::get(&bump_from_task::remote(c.clone(), 3)).unwrap(), 3);
        let relay = Relay::remote(c.clone());
        assert_eq!(ray::get(&relay.bump(4)).unwrap(), 7);
        assert_eq!(ray::get(&c.get()).unwrap(), 7);
        // A method argument may be a ref.
        let by = ray::put(&5u64).unwrap();
        assert_eq!(ray::get(&c.incr(by)).unwrap(), 12);
    });
}

#[test]
fn kill_and_failures_are_typed_errors() {
    with_ray(local(), || {
        let c = Counter::remote(0);
        match ray::get(&c.fail()) {
            Err(Error::Task {
                function, message, ..
            }) => {
                assert!(function.ends_with("Counter.fail"), "{function}");
                assert_eq!(message, "no");
            }
            other => panic!("expected a method error, got {other:?}"),
        }
        assert_eq!(
            ray::get(&c.incr(1)).unwrap(),
            1,
            "a method error does not kill the actor"
        );
        ray::kill(&c).unwrap();
        match ray::get(&c.get()) {
            Err(Error::ActorDied { class, cause }) => {
                assert!(class.ends_with("Counter"));
                assert!(cause.contains("kill"), "{cause}");
            }
            other => panic!("expected ActorDied, got {other:?}"),
        }
        for mode in ["error", "panic"] {
            let f = Fragile::remote(mode.to_string());
            match ray::get(&f.ping()) {
                Err(Error::ActorDied { cause, .. }) => {
                    let want = if mode == "error" {
                        "bad config"
                    } else {
                        "constructor exploded"
                    };
                    assert!(cause.contains(want), "{cause}");
                }
                other => panic!("expected ActorDied from the constructor, got {other:?}"),
            }
        }
        assert_eq!(
            ray::get(&Fragile::remote("ok".to_string()).ping()).unwrap(),
            1
        );
    });
}

#[test]
fn a_restarted_actor_reruns_its_constructor_and_replays_calls() {
    with_ray(local(), || {
        // max_task_retries 0: the call in flight fails; the actor restarts with fresh state.
        let c = Counter::options().max_restarts(1).remote(100);
        assert_eq!(ray::get(&c.incr(5)).unwrap(), 105);
        let first_pid = ray::get(&c.pid()).unwrap();
        // It restarts: the lost call is "unavailable" (retryable), not "dead" (final).
        match ray::get(&c.die()) {
            Err(Error::ActorUnavailable { cause, .. }) => {
                assert!(cause.contains("while running die"), "{cause}")
            }
            other => panic!("expected ActorUnavailable, got {other:?}"),
        }
        assert_eq!(
            ray::get(&c.get()).unwrap(),
            100,
            "state re-initialized by the constructor"
        );
        assert_ne!(ray::get(&c.pid()).unwrap(), first_pid);
        // The budget is spent: the next death is final.
        assert!(matches!(ray::get(&c.die()), Err(Error::ActorDied { .. })));
        assert!(matches!(ray::get(&c.get()), Err(Error::ActorDied { .. })));

        // max_task_retries -1: calls in flight at the crash are resent, in order.
        let marker = temp_path("crash-once");
        let r = Counter::options()
            .max_restarts(2)
            .max_task_retries(-1)
            .remote(0);
        ray::get(&r.incr(1)).unwrap();
        let a = r.crash_once(marker.clone());
        let b = r.incr(10);
        assert_eq!(ray::get(&a).unwrap(), 0, "replayed on the restarted actor");
        assert_eq!(ray::get(&b).unwrap(), 10, "then the call after it");
        std::fs::remove_file(&marker).unwrap();
    });
}

#[test]
fn actor_lifetimes_follow_their_owner() {
    with_ray(local(), || {
        // Owner-scoped: the creating task's handle is gone when it returns.
        assert_eq!(
            ray::get(&create_scoped::remote("scoped".to_string())).unwrap(),
            1
        );
        eventually("the owner-scoped actor's death", || {
            ray::get_actor::<Counter>("scoped", None).is_err()
        });
        // Its owner process dies.
        let _ = ray::get(&create_then_die::remote("orphan".to_string()));
        eventually("the orphaned actor's death", || {
            ray::get_actor::<Counter>("orphan", None).is_err()
        });
        // Detached: it stays until killed.
        assert_eq!(
            ray::get(&create_detached::remote("keeper".to_string())).unwrap(),
            2
        );
        std::thread::sleep(Duration::from_millis(300));
        let keeper: ActorHandle<Counter> = ray::get_actor("keeper", None).unwrap();
        assert_eq!(ray::get(&keeper.get()).unwrap(), 2);
        ray::kill(&keeper).unwrap();
        eventually("the detached actor's death after kill", || {
            ray::get_actor::<Counter>("keeper", None).is_err()
        });
        // Dropping the driver's last handle ends an actor it owns.
        let c = Counter::options().name("mine").remote(0);
        ray::get(&c.get()).unwrap();
        drop(c);
        eventually("the dropped actor's death", || {
            ray::get_actor::<Counter>("mine", None).is_err()
        });
    });
}

fn actor_workload() -> Vec<u8> {
    let c = Counter::remote(3);
    let a: Vec<u64> = (0..10).map(|i| ray::get(&c.incr(i)).unwrap()).collect();
    let err = ray::get(&c.fail()).unwrap_err();
    let slow = ray::get(&c.slow(1)).unwrap();
    let relay = Relay::remote(c.clone());
    let relayed = ray::get(&relay.bump(100)).unwrap();
    let dead = ray::get(&Fragile::remote("error".to_string()).ping()).is_err();
    postcard::to_allocvec(&(a, matches!(err, Error::Task { .. }), slow, relayed, dead)).unwrap()
}

#[test]
fn actors_give_the_same_results_in_sync_mode() {
    let sync = with_ray(ray::Config::sync(), actor_workload);
    let local = with_ray(local(), actor_workload);
    assert_eq!(sync, local);
}

#[ray::remote]
fn create_named_in_job_namespace() -> u64 {
    let c = Counter::options()
        .name("from-task")
        .lifetime_detached()
        .remote(4);
    ray::get(&c.get()).unwrap()
}

#[test]
fn workers_share_the_jobs_namespace() {
    with_ray(local().namespace("jobspace"), || {
        assert_eq!(
            ray::get(&create_named_in_job_namespace::remote()).unwrap(),
            4
        );
        let c: ActorHandle<Counter> = ray::get_actor("from-task", None).unwrap();
        assert_eq!(ray::get(&c.get()).unwrap(), 4);
        assert!(ray::get_actor::<Counter>("from-task", Some("other")).is_err());
        ray::kill(&c).unwrap();
    });
}

/// Sums a large constructor argument (held in shared memory) at every (re)start.
#[ray::actor]
pub struct Summer {
    total: u64,
}

#[ray::actor]
impl Summer {
    pub fn new(data: Vec<u8>) -> Self {
        Summer {
            total: data.iter().map(|b| u64::from(*b)).sum(),
        }
    }
    pub fn total(&self) -> u64 {
        self.total
    }
    pub fn die(&self) -> u64 {
        std::process::exit(5)
    }
}

/// `Self` in method signatures.
#[ray::actor]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    n: u32,
}

#[ray::actor]
impl Tally {
    pub fn new(n: u32) -> Self {
        Tally { n }
    }
    pub fn snapshot(&self) -> Self {
        self.clone()
    }
    pub fn absorb(&mut self, other: Self) -> u32 {
        self.n += other.n;
        self.n
    }
}

#[test]
fn calls_keep_their_actor_alive_and_so_do_constructor_arguments() {
    with_ray(local(), || {
        // The handle is gone before the call is answered.
        assert_eq!(ray::get(&Counter::remote(0).incr(1)).unwrap(), 1);
        let c = Counter::remote(0);
        let slow = c.slow(200);
        drop(c);
        assert_eq!(ray::get(&slow).unwrap(), 200);

        // A handle passed to a constructor outlives the creator's own handle.
        let c = Counter::remote(0);
        let relay = Relay::remote(c.clone());
        drop(c);
        assert_eq!(ray::get(&relay.bump(2)).unwrap(), 2);

        // A large constructor argument stays valid for the actor's life, restarts included.
        let s = Summer::options()
            .max_restarts(1)
            .remote(ray::put(&vec![1u8; 1 << 20]).unwrap());
        let _others: Vec<_> = (0..3)
            .map(|_| ray::put(&vec![7u8; 1 << 20]).unwrap())
            .collect();
        assert_eq!(ray::get(&s.total()).unwrap(), 1 << 20);
        assert!(ray::get(&s.die()).is_err());
        assert_eq!(
            ray::get(&s.total()).unwrap(),
            1 << 20,
            "rebuilt from the same argument"
        );
    });
}

#[test]
fn get_if_exists_checks_the_class_and_self_works_in_signatures() {
    with_ray(local(), || {
        let _c = Counter::options().name("shared-name").remote(0);
        match Tally::options()
            .name("shared-name")
            .get_if_exists()
            .try_remote(1)
        {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("Counter"), "{m}"),
            other => panic!("expected a class mismatch, got {other:?}"),
        }
        let t = Tally::remote(2);
        let snap: Tally = ray::get(&t.snapshot()).unwrap();
        assert_eq!(snap.n, 2);
        assert_eq!(ray::get(&t.absorb(Tally { n: 5 })).unwrap(), 7);
    });
}

/// Waits (at most 30 s) until `file` exists.
fn wait_for(file: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::path::Path::new(file).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

struct Grouped;

#[ray::actor(concurrency_groups(io = 2, compute = 1))]
impl Grouped {
    pub fn new() -> Self {
        Grouped
    }
    #[ray::method(concurrency_group = "io")]
    pub fn read(&self, gate: String) -> u8 {
        wait_for(&gate);
        1
    }
    #[ray::method(concurrency_group = "compute")]
    pub fn crunch(&self) -> u8 {
        2
    }
    pub fn plain(&self) -> u8 {
        3
    }
}

struct AsyncGrouped;

#[ray::actor(concurrency_groups(io = 1))]
impl AsyncGrouped {
    pub fn new() -> Self {
        AsyncGrouped
    }
    #[ray::method(concurrency_group = "io")]
    pub async fn read(&self, gate: String) -> u8 {
        while !std::path::Path::new(&gate).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        1
    }
    #[ray::method(concurrency_group = "io")]
    pub async fn quick_read(&self) -> u8 {
        2
    }
    pub async fn plain(&self) -> u8 {
        3
    }
}

/// Each concurrency group runs its calls on its own threads (or, in an async actor, at most
/// its size at once): a full group holds its own calls back, never the other groups'.
#[test]
fn concurrency_groups_run_their_calls_apart() {
    let dir = std::env::temp_dir().join(format!("rayrs-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gate = dir.join("gate").to_string_lossy().into_owned();
    let async_gate = dir.join("async-gate").to_string_lossy().into_owned();
    with_ray(local(), || {
        let short = Some(std::time::Duration::from_millis(300));
        let a = Grouped::remote();
        // Two calls fill the io group (two threads).
        let blocked: Vec<_> = (0..2).map(|_| a.read(gate.clone())).collect();
        // The other groups still answer.
        let long = Duration::from_secs(20);
        assert_eq!(ray::get_timeout(&a.crunch(), long).unwrap(), 2);
        assert_eq!(ray::get_timeout(&a.plain(), long).unwrap(), 3);
        // A third io call waits for a thread of its group.
        let third = a.read(gate.clone());
        let (ready, _) = ray::wait(std::slice::from_ref(&third), 1, short).unwrap();
        assert!(ready.is_empty(), "the io group has two threads, both busy");
        std::fs::write(&gate, b"").unwrap();
        assert_eq!(ray::get_all(&blocked).unwrap(), vec![1, 1]);
        assert_eq!(ray::get(&third).unwrap(), 1);

        // An async group of one: its second call waits for the first; others do not.
        let b = AsyncGrouped::remote();
        let first = b.read(async_gate.clone());
        let second = b.quick_read();
        assert_eq!(ray::get_timeout(&b.plain(), long).unwrap(), 3);
        let (ready, _) = ray::wait(std::slice::from_ref(&second), 1, short).unwrap();
        assert!(ready.is_empty(), "the io group runs one call at a time");
        std::fs::write(&async_gate, b"").unwrap();
        assert_eq!(ray::get(&first).unwrap(), 1);
        assert_eq!(ray::get(&second).unwrap(), 2);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small sync actor for the shared-process tests.
pub struct Cell {
    value: u64,
}

#[ray::actor]
impl Cell {
    pub fn new(value: u64) -> Self {
        Cell { value }
    }
    pub fn add(&mut self, x: u64) -> u64 {
        self.value += x;
        self.value
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    /// Its id as its runtime context tells it, and whether it was restarted.
    pub fn whoami(&self) -> (Option<String>, bool) {
        let c = ray::get_runtime_context().unwrap();
        (c.actor_id, c.was_current_actor_reconstructed)
    }
    pub fn leave(&self) -> u64 {
        ray::actor::exit_actor().unwrap();
        self.value
    }
    /// Waits for file `gate`, then answers.
    pub fn hold(&self, gate: String) -> u64 {
        wait_for(&gate);
        self.value
    }
    pub fn die(&self) -> u64 {
        std::process::exit(7)
    }
}

fn shared() -> __RayActorOptionsCell {
    Cell::options().share_process(true)
}

/// Actors created with `share_process(true)` fill a process a few hundred at a time, each
/// with its own state, thread and runtime context; killing, restarting or exiting one
/// leaves its neighbours running, a call blocked on one holds up none of the others, and a
/// crash of the process takes them all. Holding a CPU and sharing is refused.
#[test]
fn actors_sharing_a_process_live_and_die_apart() {
    let dir = std::env::temp_dir().join(format!("rayrs-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gate = dir.join("gate").display().to_string();
    with_ray(local(), || {
        let cells: Vec<ActorHandle<Cell>> = (0..300).map(|i| shared().remote(i)).collect();
        let sums: Vec<_> = cells.iter().map(|c| c.add(1)).collect();
        assert_eq!(
            ray::get_all(&sums).unwrap(),
            (1..=300).collect::<Vec<u64>>()
        );
        let pids = ray::get_all(&cells.iter().map(|c| c.pid()).collect::<Vec<_>>()).unwrap();
        let distinct: std::collections::BTreeSet<u32> = pids.iter().copied().collect();
        assert!(
            (2..=4).contains(&distinct.len()),
            "300 actors on {} processes (256 a process)",
            distinct.len()
        );
        assert!(!distinct.contains(&std::process::id()));
        // Three that share a process (hosts fill up before another starts).
        let mates: Vec<usize> = (0..300).filter(|&i| pids[i] == pids[0]).collect();
        assert!(mates.len() >= 3, "{mates:?}");
        let (a, b, c) = (&cells[0], &cells[mates[1]], &cells[mates[2]]);
        let (b0, c0) = (mates[1] as u64, mates[2] as u64);
        let (id_a, restarted) = ray::get(&a.whoami()).unwrap();
        assert!(!restarted);
        let (id_b, _) = ray::get(&b.whoami()).unwrap();
        assert!(id_a.is_some() && id_a != id_b, "{id_a:?} {id_b:?}");

        // A call blocked on one holds up none of its neighbours; killing it ends it alone.
        let held = a.hold(gate.clone());
        assert_eq!(ray::get(&b.add(10)).unwrap(), b0 + 11);
        ray::kill(a).unwrap();
        match ray::get(&held) {
            Err(Error::ActorDied { .. }) => {}
            other => panic!("expected ActorDied for the call in flight, got {other:?}"),
        }
        assert!(matches!(ray::get(&a.add(1)), Err(Error::ActorDied { .. })));
        assert_eq!(ray::get(&b.add(1)).unwrap(), b0 + 12);
        assert_eq!(ray::get(&b.pid()).unwrap(), pids[0], "its process lives on");
        std::fs::write(&gate, b"").unwrap();

        // exit_actor ends the caller alone, once its call replied.
        assert_eq!(ray::get(&c.leave()).unwrap(), c0 + 1);
        ray_rs::eventually("the actor that exited is dead", || {
            matches!(ray::get(&c.add(1)), Err(Error::ActorDied { .. }))
        });
        assert_eq!(ray::get(&b.add(1)).unwrap(), b0 + 13);

        // kill(no_restart = false) restarts it, and it knows it was restarted.
        let r = shared().max_restarts(1).remote(100);
        assert_eq!(ray::get(&r.add(1)).unwrap(), 101);
        let (id_r, _) = ray::get(&r.whoami()).unwrap();
        r.kill(false).unwrap();
        assert_eq!(
            ray::get(&r.whoami()).unwrap(),
            (id_r, true),
            "a new life, the same actor"
        );
        assert_eq!(
            ray::get(&r.add(1)).unwrap(),
            101,
            "its constructor ran again"
        );
        assert_eq!(ray::get(&b.add(1)).unwrap(), b0 + 14);

        // A crash of the process takes every actor it hosts.
        let victims: Vec<&ActorHandle<Cell>> = mates[3..].iter().map(|&i| &cells[i]).collect();
        assert!(victims.len() > 10);
        assert!(ray::get(&b.die()).is_err());
        for v in &victims {
            assert!(
                matches!(ray::get(&v.add(1)), Err(Error::ActorDied { .. })),
                "an actor of the crashed process"
            );
        }
        let other = cells
            .iter()
            .zip(&pids)
            .find(|(_, p)| **p != pids[0])
            .map(|(c, _)| c)
            .unwrap();
        assert!(
            ray::get(&other.add(1)).is_ok(),
            "another process's actor lives"
        );

        // Sharing is for actors that hold no CPU.
        let refused = shared().num_cpus(1.0).remote(0);
        match ray::get(&refused.add(1)) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("share_process"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A thousand actors sharing processes are created and called; they need a handful of
/// processes, not one each.
#[test]
fn a_thousand_actors_share_a_few_processes() {
    with_ray(local(), || {
        let n = 1000;
        let cells: Vec<ActorHandle<Cell>> = (0..n).map(|i| shared().remote(i)).collect();
        let sums: Vec<_> = cells.iter().map(|c| c.add(1)).collect();
        assert_eq!(ray::get_all(&sums).unwrap(), (1..=n).collect::<Vec<u64>>());
        let pids = ray::get_all(&cells.iter().map(|c| c.pid()).collect::<Vec<_>>()).unwrap();
        let distinct: std::collections::BTreeSet<u32> = pids.into_iter().collect();
        assert!(
            distinct.len() <= (n as usize).div_ceil(256) + 2,
            "{n} actors on {} processes",
            distinct.len()
        );
        for c in &cells {
            ray::kill(c).unwrap();
        }
    });
}
