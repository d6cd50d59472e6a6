//! Reference counting across processes: objects are freed when the last ref goes, and never
//! while a pending task or a borrowing worker still needs them.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

use ray::ObjectRef;
use ray_rs::with_ray;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = store_used();
        if ok(used) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: store still holds {used} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    with_ray(ray::Config::local(), || {
        drop(make_big::remote(BIG));
        // Let it run and reply, then nothing may hold it.
        std::thread::sleep(Duration::from_millis(300));
        eventually("a dropped task result", |u| u == 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ray::__private::object_counts().unwrap() != (0, 0) {
            assert!(
                Instant::now() < deadline,
                "the driver still tracks the dropped result"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
