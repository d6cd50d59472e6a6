//! Reference counting across processes: objects are freed when the last ref goes, and never
//! while a pending task or a borrowing worker still needs them.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

use ray::ObjectRef;
use ray_rs::with_ray;
use std::sync::Mutex;
use std::time::Duration;

/// Refs a worker keeps after its task returned (a borrower beyond the task).
static HELD: Mutex<Vec<ObjectRef<Vec<f64>>>> = Mutex::new(Vec::new());

#[ray::remote]
fn sum_later(refs: Vec<ObjectRef<Vec<f64>>>, ms: u64) -> f64 {
    std::thread::sleep(Duration::from_millis(ms));
    refs.iter()
        .map(|r| ray::get(r).unwrap().iter().sum::<f64>())
        .sum()
}

#[ray::remote]
fn keep(refs: Vec<ObjectRef<Vec<f64>>>) -> usize {
    let mut held = HELD.lock().unwrap();
    held.extend(refs);
    held.len()
}

#[ray::remote]
fn sum_held() -> f64 {
    let held = HELD.lock().unwrap();
    held.iter()
        .map(|r| ray::get(r).unwrap().iter().sum::<f64>())
        .sum()
}

#[ray::remote]
fn release_held() -> usize {
    let mut held = HELD.lock().unwrap();
    let n = held.len();
    held.clear();
    n
}

#[ray::remote]
fn make_big(n: usize) -> Vec<f64> {
    vec![1.0; n]
}

fn store_used() -> u64 {
    ray::__private::store_used_bytes().unwrap()
}

/// Waits until the store's usage satisfies `ok`, or fails the test after 10 s.
fn eventually(what: &str, ok: impl Fn(u64) -> bool) {
    ray_rs::eventually(what, || ok(store_used()));
}

const BIG: usize = 200_000; // 1.6 MB of f64: lives in shared memory

#[test]
fn dropping_the_last_ref_frees_the_object() {
    with_ray(ray::Config::local(), || {
        let r = ray::put(&vec![1.0f64; BIG]).unwrap();
        let copy = r.clone();
        assert!(store_used() >= (BIG * 8) as u64);
        drop(r);
        std::thread::sleep(Duration::from_millis(100));
        assert!(store_used() >= (BIG * 8) as u64, "a clone still holds it");
        assert_eq!(ray::get(&copy).unwrap().len(), BIG);
        drop(copy);
        eventually("put object after its last ref", |u| u == 0);

        let t = make_big::remote(BIG);
        assert_eq!(ray::get(&t).unwrap().len(), BIG);
        drop(t);
        eventually("task result after its last ref", |u| u == 0);
        let (values, refs) = ray::__private::object_counts().unwrap();
        assert_eq!((values, refs), (0, 0), "the driver tracks nothing any more");
    });
}

#[test]
fn a_pending_task_keeps_a_nested_ref_alive() {
    with_ray(ray::Config::local(), || {
        let inner = ray::put(&vec![2.0f64; BIG]).unwrap();
        let task = sum_later::remote(vec![inner.clone()], 300);
        drop(inner); // the driver's own handle is gone; the pending task still needs it
        assert_eq!(ray::get(&task).unwrap(), 2.0 * BIG as f64);
        drop(task);
        // The worker dropped the ref before replying: nothing holds the object any more.
        eventually("nested ref after the task", |u| u == 0);
    });
}

#[test]
fn a_worker_that_keeps_a_ref_is_a_borrower_until_it_lets_go() {
    // One CPU: one worker process runs all three tasks, so they see the same static.
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let obj = ray::put(&vec![3.0f64; BIG]).unwrap();
        assert_eq!(ray::get(&keep::remote(vec![obj.clone()])).unwrap(), 1);
        drop(obj);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            store_used() >= (BIG * 8) as u64,
            "freed while a worker borrows it"
        );
        assert_eq!(ray::get(&sum_held::remote()).unwrap(), 3.0 * BIG as f64);
        assert_eq!(ray::get(&release_held::remote()).unwrap(), 1);
        eventually("object after the borrower let go", |u| u == 0);
    });
}

/// Puts an object inside the task: the worker owns it; the driver borrows it.
#[ray::remote]
fn put_inside(n: usize) -> ObjectRef<Vec<f64>> {
    ray::put(&vec![4.0; n]).unwrap()
}

#[test]
fn a_ref_owned_by_a_worker_can_be_read_and_dropped_by_the_driver() {
    with_ray(ray::Config::local(), || {
        let outer = put_inside::remote(10);
        let inner = ray::get(&outer).unwrap();
        assert_eq!(ray::get(&inner).unwrap(), vec![4.0; 10]);
        drop(inner);
        drop(outer);
        let big = ray::get(&put_inside::remote(BIG)).unwrap();
        assert_eq!(ray::get(&big).unwrap().len(), BIG);
    });
}

#[test]
fn a_result_nobody_waits_for_is_freed_when_it_arrives() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        drop(make_big::remote(BIG));
        // One CPU: the next task runs on the same lease, and its reply comes after the
        // first's on the same connection. Once it is here, the dropped result was written to
        // shared memory and arrived: nothing may hold it.
        assert_eq!(ray::get(&make_big::remote(1)).unwrap(), vec![1.0]);
        eventually("a dropped task result", |u| u == 0);
        ray_rs::eventually("the driver forgets the dropped result", || {
            ray::__private::object_counts().unwrap() == (0, 0)
        });
    });
}

/// An actor that keeps refs in its state: a borrower for as long as it holds them.
#[ray::actor]
pub struct Keeper {
    held: Vec<ObjectRef<Vec<f64>>>,
}

#[ray::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper { held: Vec::new() }
    }
    pub fn keep(&mut self, refs: Vec<ObjectRef<Vec<f64>>>) -> usize {
        self.held.extend(refs);
        self.held.len()
    }
    pub fn sum(&self) -> f64 {
        self.held
            .iter()
            .map(|r| ray::get(r).unwrap().iter().sum::<f64>())
            .sum()
    }
    pub fn release(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        n
    }
}

/// Lends refs it borrowed on to an actor (a borrower's borrower).
#[ray::remote]
fn lend_to(keeper: ray::ActorHandle<Keeper>, refs: Vec<ObjectRef<Vec<f64>>>) -> usize {
    ray::get(&keeper.keep(refs)).unwrap()
}

#[test]
fn actors_and_borrowers_of_borrowers_keep_objects_alive_until_they_let_go() {
    with_ray(ray::Config::local(), || {
        let keeper = Keeper::remote();
        let direct = ray::put(&vec![1.0f64; BIG]).unwrap();
        assert_eq!(ray::get(&keeper.keep(vec![direct.clone()])).unwrap(), 1);
        drop(direct);
        let lent = ray::put(&vec![2.0f64; BIG]).unwrap();
        assert_eq!(
            ray::get(&lend_to::remote(keeper.clone(), vec![lent.clone()])).unwrap(),
            2
        );
        drop(lent);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            store_used() >= (2 * BIG * 8) as u64,
            "freed while the actor holds them"
        );
        assert_eq!(ray::get(&keeper.sum()).unwrap(), 3.0 * BIG as f64);
        assert_eq!(ray::get(&keeper.release()).unwrap(), 2);
        eventually("objects after the actor let go", |u| u == 0);
    });
}

/// A borrower that dies lets go of nothing itself: its owner finds it gone (it stops
/// answering) and releases its borrows, so the objects only it held are freed.
#[test]
fn a_borrower_that_dies_releases_what_it_held() {
    with_ray(ray::Config::local(), || {
        let keeper = Keeper::remote();
        let held = ray::put(&vec![1.0f64; BIG]).unwrap();
        assert_eq!(ray::get(&keeper.keep(vec![held.clone()])).unwrap(), 1);
        drop(held);
        assert!(store_used() >= (BIG * 8) as u64, "the keeper holds it");
        // Killed, as a crash would: it never says it let go.
        keeper.kill(true).unwrap();
        // The owner waits `UNREACHABLE` (10 s) before it calls a borrower dead.
        ray::__private::eventually(
            Duration::from_secs(30),
            "the dead keeper's borrow released",
            || store_used() == 0,
        );
    });
}

/// A map step: puts `parts` partitions and returns refs to them (as a MapReduce does).
#[ray::remote]
fn map_partitions(round: u64, parts: usize) -> Vec<ObjectRef<Vec<f64>>> {
    (0..parts)
        .map(|p| ray::put(&vec![(round + p as u64) as f64; BIG]).unwrap())
        .collect()
}

#[ray::remote]
fn reduce_partition(part: Vec<f64>) -> f64 {
    part.iter().sum()
}

/// Refs inside a task's result are tracked with the result (Ray's "contained in"
/// references), not pinned for the session: a MapReduce loop gives its memory back.
#[test]
fn refs_returned_inside_task_results_are_freed_with_the_results() {
    with_ray(ray::Config::local(), || {
        for round in 0..4u64 {
            let lists: Vec<_> = (0..2).map(|_| map_partitions::remote(round, 3)).collect();
            let mut sums = Vec::new();
            for list in &lists {
                for part in ray::get(list).unwrap() {
                    sums.push(reduce_partition::remote(&part));
                }
            }
            let total: f64 = ray::get_all(&sums).unwrap().iter().sum();
            let expected: f64 = (0..3u64).map(|p| ((round + p) * BIG as u64) as f64).sum();
            assert_eq!(total, 2.0 * expected);
            assert!(
                store_used() >= 6 * (BIG * 8) as u64,
                "the partitions are in the store"
            );
        }
        eventually("every round's partitions are freed", |used| used == 0);
    });
}

/// Refs inside a `put` value live as long as that value, and no longer.
#[test]
fn refs_inside_a_put_value_are_freed_with_it() {
    with_ray(ray::Config::local(), || {
        let parts: Vec<_> = (0..3)
            .map(|p| ray::put(&vec![p as f64; BIG]).unwrap())
            .collect();
        let outer = ray::put(&parts).unwrap();
        drop(parts);
        // The outer value keeps them: a reader still finds them.
        let inner = ray::get(&outer).unwrap();
        assert_eq!(ray::get(&inner[2]).unwrap()[0], 2.0);
        drop(inner);
        assert!(store_used() >= 3 * (BIG * 8) as u64);
        drop(outer);
        eventually(
            "the partitions are freed with the value holding them",
            |used| used == 0,
        );
    });
}

/// Reads a list of refs with `get` (not as an argument) and keeps what it found.
#[ray::remote]
fn keep_from_list(lists: Vec<ObjectRef<Vec<ObjectRef<Vec<f64>>>>>) -> usize {
    let inner = ray::get(&lists[0]).unwrap();
    let mut held = HELD.lock().unwrap();
    held.extend(inner);
    held.len()
}

/// A worker that finds refs inside a value it gets (not an argument) borrows them: the
/// owner keeps them after the value and its own refs are gone, until the worker lets go.
#[test]
fn refs_found_inside_a_fetched_value_are_borrowed_until_released() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let parts: Vec<_> = (0..2)
            .map(|p| ray::put(&vec![p as f64 + 1.0; BIG]).unwrap())
            .collect();
        let list = ray::put(&parts).unwrap();
        drop(parts);
        assert_eq!(
            ray::get(&keep_from_list::remote(vec![list.clone()])).unwrap(),
            2
        );
        drop(list);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            store_used() >= 2 * (BIG * 8) as u64,
            "freed while a worker borrows them"
        );
        assert_eq!(ray::get(&sum_held::remote()).unwrap(), 3.0 * BIG as f64);
        assert_eq!(ray::get(&release_held::remote()).unwrap(), 2);
        eventually("the parts after the borrower let go", |u| u == 0);
    });
}

/// An async actor: its methods' `.await`s decode values outside any task's arguments.
#[ray::actor]
pub struct Hoarder {
    held: tokio::sync::Mutex<Vec<ObjectRef<Vec<f64>>>>,
}

#[ray::actor]
impl Hoarder {
    pub fn new() -> Self {
        Hoarder {
            held: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Awaits the list inside `lists` and keeps the refs found in it.
    pub async fn hoard(&self, lists: Vec<ObjectRef<Vec<ObjectRef<Vec<f64>>>>>) -> usize {
        let inner = lists[0].clone().await.unwrap();
        let mut held = self.held.lock().await;
        held.extend(inner);
        held.len()
    }

    pub async fn total(&self) -> f64 {
        let held: Vec<_> = self.held.lock().await.clone();
        let mut sum = 0.0;
        for r in held {
            sum += r.await.unwrap().iter().sum::<f64>();
        }
        sum
    }

    pub async fn release(&self) -> usize {
        let mut held = self.held.lock().await;
        let n = held.len();
        held.clear();
        n
    }

    /// Puts `n` partitions and returns refs to them (this actor owns them).
    pub async fn partitions(&self, n: usize, value: f64) -> Vec<ObjectRef<Vec<f64>>> {
        tokio::task::yield_now().await;
        (0..n)
            .map(|_| ray::put(&vec![value; BIG]).unwrap())
            .collect()
    }
}

/// A process that finds refs inside a value it awaits outside a task's arguments borrows
/// them: their owner keeps them after the value and its own refs are gone.
#[test]
fn refs_found_inside_an_awaited_value_are_borrowed_until_released() {
    with_ray(ray::Config::local(), || {
        let hoarder = Hoarder::remote();
        let parts: Vec<_> = (0..2)
            .map(|p| ray::put(&vec![p as f64 + 1.0; BIG]).unwrap())
            .collect();
        let list = ray::put(&parts).unwrap();
        drop(parts);
        assert_eq!(ray::get(&hoarder.hoard(vec![list.clone()])).unwrap(), 2);
        drop(list);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            store_used() >= 2 * (BIG * 8) as u64,
            "freed while an actor borrows them"
        );
        assert_eq!(ray::get(&hoarder.total()).unwrap(), 3.0 * BIG as f64);
        assert_eq!(ray::get(&hoarder.release()).unwrap(), 2);
        eventually("the parts after the actor let go", |u| u == 0);
    });
}

/// Refs an async actor method returns inside its result are held by that result, as a
/// task's are: freed with it, round after round.
#[test]
fn refs_returned_inside_async_method_results_are_freed_with_the_results() {
    with_ray(ray::Config::local(), || {
        let hoarder = Hoarder::remote();
        for round in 0..3 {
            let parts = ray::get(&hoarder.partitions(2, round as f64)).unwrap();
            let sums: Vec<f64> = parts
                .iter()
                .map(|p| ray::get(p).unwrap().iter().sum())
                .collect();
            assert_eq!(sums, vec![round as f64 * BIG as f64; 2]);
        }
        eventually("every round's partitions are freed", |used| used == 0);
    });
}

/// An actor that puts an object and a list holding it, and returns a ref to the list: it
/// owns both.
#[ray::actor]
pub struct Maker {
    value: f64,
}

#[ray::actor]
impl Maker {
    pub fn new(value: f64) -> Self {
        Maker { value }
    }

    pub fn make(&self) -> ObjectRef<Vec<ObjectRef<Vec<f64>>>> {
        let part = ray::put(&vec![self.value; BIG]).unwrap();
        ray::put(&vec![part]).unwrap()
    }
}

/// A task that reads a list with `get` in its body and keeps what it found borrows it from
/// the list's owner (a third process, neither the driver nor the worker), which keeps it
/// after the list itself is gone.
#[test]
fn refs_a_task_finds_with_get_are_borrowed_from_their_owner() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let maker = Maker::remote(5.0);
        let list = ray::get(&maker.make()).unwrap();
        assert_eq!(
            ray::get(&keep_from_list::remote(vec![list.clone()])).unwrap(),
            1
        );
        drop(list);
        std::thread::sleep(Duration::from_millis(300));
        // The list is gone from its owner; the part it held lives on for the task's worker.
        assert_eq!(ray::get(&sum_held::remote()).unwrap(), 5.0 * BIG as f64);
        assert_eq!(ray::get(&release_held::remote()).unwrap(), 1);
        eventually("the part after the borrower let go", |u| u == 0);
    });
}
