//! Remote tasks end to end on real worker processes: values and refs as arguments, nested
//! tasks, errors and panics, put/get/wait and their bad input, init twice, the runtime's
//! introspection, the util helpers, and sync mode giving byte-identical results.

use ray::{Error, ObjectRef};
use ray_rs::with_ray;
use std::time::Duration;

#[ray::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[ray::remote(num_cpus = 0.5, max_retries = 0)]
fn fails(msg: String) -> Result<u8, String> {
    Err(msg)
}

#[ray::remote]
fn panics(n: u32) -> u32 {
    if n > 0 {
        panic!("bad input {n}");
    }
    n
}

#[ray::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[ray::remote]
fn sum_of_squares(n: i64) -> i64 {
    let refs: Vec<ObjectRef<i64>> = (0..n).map(square::remote).collect();
    ray::get_all(&refs).unwrap().into_iter().sum()
}

/// Two levels of nesting, each level blocking in `get` on the level below.
#[ray::remote]
fn nested_depth(depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    ray::get(&nested_depth::remote(depth - 1)).unwrap() + 1
}

#[ray::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[ray::remote]
fn context() -> (bool, Option<String>, u32) {
    let c = ray::get_runtime_context().unwrap();
    (c.is_worker, c.task_id, std::process::id())
}

#[ray::remote]
fn big_vec(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64 * 0.5).collect()
}

#[ray::remote]
fn total(v: Vec<f64>) -> f64 {
    v.iter().sum()
}

#[ray::remote]
fn concat(a: String, b: String) -> String {
    format!("{a}{b}")
}

fn local() -> ray::Config {
    ray::Config::local().num_cpus(2.0)
}

#[test]
fn values_and_refs_as_arguments() {
    with_ray(local(), || {
        let a: ObjectRef<i64> = add::remote(1, 2);
        let b = add::remote(a.clone(), 10);
        assert_eq!(ray::get(&b).unwrap(), 13);
        let c = add::options().num_cpus(2.0).remote(1, 1);
        assert_eq!(ray::get_all(&[a.clone(), c]).unwrap(), vec![3, 2]);
        assert_eq!(add(2, 2), 4, "the function still runs locally");
        let s = concat::remote("ab".to_string(), "cd".to_string());
        assert_eq!(ray::get(&s).unwrap(), "abcd");
    });
}

#[test]
fn tasks_run_in_worker_processes_in_parallel() {
    with_ray(local(), || {
        let (is_worker, task_id, pid) = ray::get(&context::remote()).unwrap();
        assert!(is_worker);
        assert!(task_id.is_some());
        assert_ne!(pid, std::process::id());
        // Two one-second tasks on two CPUs overlap: their workers are different processes.
        let refs: Vec<_> = (0..2).map(|_| context::remote()).collect();
        let _ = ray::get_all(&refs).unwrap();
        let slow: Vec<_> = (0..2).map(|_| sleep_ms::remote(300)).collect();
        let (ready, _) = ray::wait(&slow, 2, Some(Duration::from_secs(30))).unwrap();
        assert_eq!(ready.len(), 2);
    });
}

#[test]
fn nested_tasks_do_not_deadlock_a_one_cpu_node() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        assert_eq!(ray::get(&sum_of_squares::remote(10)).unwrap(), 285);
        assert_eq!(ray::get(&nested_depth::remote(3)).unwrap(), 3);
    });
}

#[test]
fn errors_and_panics_become_task_errors() {
    with_ray(local(), || {
        match ray::get(&fails::remote("boom".to_string())) {
            Err(Error::Task {
                function, message, ..
            }) => {
                assert!(function.ends_with("fails"), "{function}");
                assert_eq!(message, "boom");
            }
            other => panic!("expected a task error, got {other:?}"),
        }
        let panicked = ray::get(&panics::remote(7));
        assert_eq!(
            panicked.as_ref().err().and_then(|e| e.downcast::<String>()),
            None,
            "a panic has no value"
        );
        match panicked {
            Err(Error::Task {
                function,
                message,
                location,
                ..
            }) => {
                assert!(function.ends_with("panics"));
                assert!(message.contains("bad input 7"), "{message}");
                assert!(
                    location.contains("worker") && location.contains("tasks.rs"),
                    "{location}"
                );
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
        // The worker survived the panic: more tasks run.
        assert_eq!(ray::get(&panics::remote(0)).unwrap(), 0);
        // A task whose argument failed fails with that cause, without running.
        let dependent = add::remote(fails::remote("root cause".to_string()).cast::<i64>(), 1);
        match ray::get(&dependent) {
            Err(Error::ArgumentFailed { function, cause }) => {
                assert!(function.ends_with("add"));
                assert!(
                    matches!(*cause, Error::Task { ref message, .. } if message == "root cause")
                );
            }
            other => panic!("expected ArgumentFailed, got {other:?}"),
        }
    });
}

#[test]
fn large_objects_go_through_shared_memory() {
    with_ray(local(), || {
        let n = 1_000_000; // 8 MB: far above the inline limit
        let v = big_vec::remote(n);
        let got = ray::get(&v).unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got[10], 5.0);
        let used = ray::__private::store_used_bytes().unwrap();
        assert!(used >= 8_000_000, "the result lives in the store: {used}");
        // A large put passed by ref to a task is read in place by the worker.
        let big = ray::put(&vec![1.0f64; 500_000]).unwrap();
        assert_eq!(ray::get(&total::remote(&big)).unwrap(), 500_000.0);
    });
}

#[test]
fn wait_keeps_order_and_rejects_bad_arguments() {
    with_ray(local(), || {
        let slow = sleep_ms::remote(2_000);
        let fast = sleep_ms::remote(1);
        let (ready, pending) = ray::wait(
            &[slow.clone(), fast.clone()],
            1,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(ready, vec![fast.clone()]);
        assert_eq!(pending, vec![slow.clone()]);
        assert!(matches!(
            ray::wait(&[fast.clone(), fast.clone()], 1, None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ray::wait(std::slice::from_ref(&fast), 2, None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ray::wait(std::slice::from_ref(&fast), 0, None),
            Err(Error::InvalidArgument(_))
        ));
        let empty: Vec<ObjectRef<u64>> = Vec::new();
        assert_eq!(ray::wait(&empty, 1, None).unwrap(), (vec![], vec![]));
        let (ready, pending) = ray::wait(
            std::slice::from_ref(&slow),
            1,
            Some(Duration::from_millis(10)),
        )
        .unwrap();
        assert!(
            ready.is_empty() && pending.len() == 1,
            "timeout returns what is ready"
        );
        assert!(matches!(
            ray::get_timeout(&slow, Duration::from_millis(10)),
            Err(Error::GetTimeout(_))
        ));
        assert_eq!(
            ray::get_timeout(&slow, Duration::from_secs(30)).unwrap(),
            2_000
        );
    });
}

#[test]
fn init_twice_shutdown_and_not_initialized() {
    assert!(!ray::is_initialized());
    assert!(matches!(ray::put(&1u8), Err(Error::NotInitialized)));
    assert!(matches!(
        ray::get(&add::remote(1, 1)),
        Err(Error::NotInitialized)
    ));
    with_ray(ray::Config::sync(), || {
        assert!(ray::is_initialized());
        assert_eq!(
            ray::init(ray::Config::sync()),
            Err(Error::AlreadyInitialized)
        );
        assert!(ray::init(ray::Config::sync().ignore_reinit_error(true)).is_ok());
    });
    assert!(!ray::is_initialized());
    assert!(matches!(
        ray::init(ray::Config::local().num_cpus(-2.0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(!ray::is_initialized());
}

#[test]
fn introspection_and_util_helpers() {
    with_ray(local().resources("slot", 3.0), || {
        let total = ray::cluster_resources().unwrap();
        assert_eq!(total.get("CPU"), Some(&2.0));
        assert_eq!(total.get("slot"), Some(&3.0));
        let nodes = ray::nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].alive);
        let ctx = ray::get_runtime_context().unwrap();
        assert!(!ctx.is_worker && ctx.task_id.is_none());
        assert_eq!(ctx.node_id, nodes[0].node_id);

        assert_eq!(
            ray::util::parallel_map(1..=4, square::remote).unwrap(),
            vec![1, 4, 9, 16]
        );
        assert_eq!(
            ray::util::parallel_starmap(vec![(1, 2), (3, 4)], add::remote).unwrap(),
            vec![3, 7]
        );
        let a = add::remote(1, 1);
        let s = concat::remote("x".to_string(), "y".to_string());
        let (n, text): (i64, String) = ray::util::scatter_gather((&a, &s)).unwrap();
        assert_eq!((n, text.as_str()), (2, "xy"));
        assert!(ray::util::num_workers().unwrap() >= 1);
        // A slot-consuming task holds its resources while it runs.
        let busy = sleep_ms::options().resources("slot", 2.0).remote(3_000);
        ray_rs::eventually("the slot is taken", || {
            ray::available_resources().unwrap().get("slot") == Some(&1.0)
        });
        ray::get(&busy).unwrap();
        // The idle lease goes back within a moment of the task's end.
        ray_rs::eventually("the slot is returned", || {
            ray::available_resources().unwrap().get("slot") == Some(&3.0)
        });
    });
}

/// One workload, whose results are compared byte for byte across modes.
fn workload() -> Vec<u8> {
    let a = add::remote(40, 2);
    let sq = ray::util::parallel_map(0..20, square::remote).unwrap();
    let nested = sum_of_squares::remote(5);
    let v = big_vec::remote(20_000);
    let err = ray::get(&fails::remote("x".to_string())).unwrap_err();
    let (n, vv): (i64, Vec<f64>) = ray::util::scatter_gather((&a, &v)).unwrap();
    let put = ray::put(&("text".to_string(), vec![1u16, 2, 3])).unwrap();
    let all = (
        n,
        sq,
        ray::get(&nested).unwrap(),
        vv,
        ray::get(&put).unwrap(),
        matches!(err, Error::Task { .. }),
    );
    postcard::to_allocvec(&all).unwrap()
}

#[test]
fn sync_and_local_modes_give_byte_identical_results() {
    let sync = with_ray(ray::Config::sync(), workload);
    let local = with_ray(local(), workload);
    assert!(!sync.is_empty());
    assert_eq!(sync, local);
}

#[ray::remote]
fn sum_slice(v: Vec<f64>) -> f64 {
    v.iter().sum()
}

#[test]
fn plain_arrays_are_stored_raw_and_read_in_place() {
    with_ray(local(), || {
        let data: Vec<f64> = (0..1_000_000).map(|i| i as f64).collect();
        let r = ray::put_slice(&data).unwrap();
        let view = ray::get_slice(&r).unwrap();
        assert!(view.is_zero_copy(), "a large plain array is read in place");
        assert_eq!(view.len(), data.len());
        assert_eq!(view[999_999], 999_999.0);
        assert_eq!(ray::get(&r).unwrap(), data, "and decodes as a Vec too");
        // A task takes it as an ordinary Vec argument, read from shared memory.
        assert_eq!(
            ray::get(&sum_slice::remote(&r)).unwrap(),
            data.iter().sum::<f64>()
        );
        // Small arrays are stored like any value; the view is then a copy.
        let small = ray::put_slice(&[1u32, 2, 3]).unwrap();
        let v = ray::get_slice(&small).unwrap();
        assert!(!v.is_zero_copy());
        assert_eq!(&*v, &[1, 2, 3]);
        // The view keeps the object alive after the ref is gone.
        drop(r);
        assert_eq!(view[1], 1.0);
    });
}

#[ray::remote]
fn read_env(names: Vec<String>) -> Vec<Option<String>> {
    names.iter().map(|n| std::env::var(n).ok()).collect()
}

#[ray::actor]
pub struct EnvReader;

#[ray::actor]
impl EnvReader {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        EnvReader
    }
    pub fn read(&self, name: String) -> Option<String> {
        std::env::var(name).ok()
    }
}

#[test]
fn environment_variables_of_the_job_a_task_and_an_actor_reach_their_workers() {
    let env = ray::RuntimeEnv::new().env_var("RAYRS_TEST_JOB_VAR", "job");
    with_ray(ray::Config::local().num_cpus(2.0).runtime_env(env), || {
        let names = || {
            vec![
                "RAYRS_TEST_JOB_VAR".to_string(),
                "RAYRS_TEST_TASK_VAR".to_string(),
            ]
        };
        assert_eq!(
            ray::get(&read_env::remote(names())).unwrap(),
            vec![Some("job".to_string()), None]
        );
        let with_var = read_env::options()
            .env_var("RAYRS_TEST_TASK_VAR", "task")
            .remote(names());
        assert_eq!(
            ray::get(&with_var).unwrap(),
            vec![Some("job".to_string()), Some("task".to_string())]
        );
        // A task's variable overrides the job's of the same name, on a worker of its own.
        let over = read_env::options()
            .env_var("RAYRS_TEST_JOB_VAR", "mine")
            .remote(names());
        assert_eq!(ray::get(&over).unwrap()[0].as_deref(), Some("mine"));
        // The plain task's workers still lack the task's variable.
        assert_eq!(ray::get(&read_env::remote(names())).unwrap()[1], None);
        let actor = EnvReader::options()
            .env_var("RAYRS_TEST_ACTOR_VAR", "actor")
            .remote();
        assert_eq!(
            ray::get(&actor.read("RAYRS_TEST_ACTOR_VAR".to_string()))
                .unwrap()
                .as_deref(),
            Some("actor")
        );
        assert_eq!(
            ray::get(&actor.read("RAYRS_TEST_JOB_VAR".to_string()))
                .unwrap()
                .as_deref(),
            Some("job")
        );
    });
}
