//! Failure paths: crashing workers and retries, a full store, shapes that can never fit,
//! connections without the session token, values read as the wrong type.

use ray::Error;
use ray_rs::with_ray;
use std::io::Write;
use std::path::PathBuf;

#[ray::remote]
fn crash_always(log: String) -> u32 {
    append(&log);
    std::process::exit(3)
}

/// Crashes on its first attempt only (a marker file remembers), then succeeds.
#[ray::remote]
fn crash_once(marker: String) -> u32 {
    if std::fs::metadata(&marker).is_err() {
        append(&marker);
        std::process::exit(3);
    }
    42
}

#[ray::remote]
fn echo(x: u64) -> u64 {
    x
}

fn append(path: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "attempt").unwrap();
}

fn temp_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rayrs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn a_crashing_task_is_retried_then_fails_with_worker_died() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let log = temp_path("attempts");
        let r = crash_always::options()
            .max_retries(2)
            .remote(log.display().to_string());
        match ray::get(&r) {
            Err(Error::WorkerDied { function, message }) => {
                assert!(function.ends_with("crash_always"));
                assert!(message.contains("pid"), "{message}");
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        let attempts = std::fs::read_to_string(&log).unwrap().lines().count();
        std::fs::remove_file(&log).unwrap();
        assert_eq!(attempts, 3, "one attempt and two retries");

        let log = temp_path("no-retry");
        let r = crash_always::options()
            .max_retries(0)
            .remote(log.display().to_string());
        assert!(matches!(ray::get(&r), Err(Error::WorkerDied { .. })));
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
        std::fs::remove_file(&log).unwrap();

        // The pool replaced the dead workers.
        assert_eq!(ray::get(&echo::remote(5)).unwrap(), 5);
    });
}

#[test]
fn a_retry_after_a_crash_returns_the_value() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let marker = temp_path("crash-once");
        let r = crash_once::remote(marker.display().to_string());
        assert_eq!(ray::get(&r).unwrap(), 42);
        std::fs::remove_file(&marker).unwrap();
    });
}

#[test]
fn a_full_store_refuses_a_put_and_frees_unreferenced_objects() {
    with_ray(ray::Config::local().object_store_memory(4 << 20), || {
        match ray::put(&vec![0u8; 8 << 20]) {
            Err(Error::ObjectStoreFull(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected ObjectStoreFull, got {other:?}"),
        }
        let a = ray::put(&vec![1u8; 3 << 20]).unwrap();
        assert!(matches!(
            ray::put(&vec![2u8; 3 << 20]),
            Err(Error::ObjectStoreFull(_))
        ));
        drop(a);
        // The dropped object is freed, so the same size fits now.
        let b = ray::put(&vec![3u8; 3 << 20]).unwrap();
        assert_eq!(ray::get(&b).unwrap()[0], 3);
    });
}

#[test]
fn a_shape_that_can_never_fit_is_an_error() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        for r in [
            echo::options().num_cpus(64.0).remote(1),
            echo::options().num_gpus(1.0).remote(1),
            echo::options().resources("tpu", 1.0).remote(1),
        ] {
            match ray::get(&r) {
                Err(Error::Unschedulable { function, reason }) => {
                    assert!(function.ends_with("echo"));
                    assert!(!reason.is_empty());
                }
                other => panic!("expected Unschedulable, got {other:?}"),
            }
        }
        assert!(matches!(
            ray::get(&echo::options().num_cpus(-1.0).remote(1)),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(ray::get(&echo::remote(9)).unwrap(), 9);
    });
}

#[test]
fn values_read_as_the_wrong_type_are_typed_errors() {
    with_ray(ray::Config::local(), || {
        let r = echo::remote(7);
        assert!(matches!(
            ray::get(&r.cast::<String>()),
            Err(Error::Serialization(_))
        ));
        let s = ray::put(&"text".to_string()).unwrap();
        assert!(matches!(
            ray::get(&echo::remote(s.cast::<u64>())),
            Err(Error::Task { .. })
        ));
    });
}

#[test]
fn connections_without_the_session_token_are_refused() {
    with_ray(ray::Config::local(), || {
        let address = ray::nodes().unwrap()[0].address.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client =
                ray_proto::node_manager_client::NodeManagerClient::new(channel.clone());
            let err = client
                .get_node_resources(ray_proto::Empty {})
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
            let wrong = ray_proto::auth::AttachToken::new("not-the-token").unwrap();
            let mut client =
                ray_proto::node_manager_client::NodeManagerClient::with_interceptor(channel, wrong);
            let err = client
                .request_worker_lease(ray_proto::LeaseRequest::default())
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::PermissionDenied);
        });
        // The runtime itself still works.
        assert_eq!(ray::get(&echo::remote(1)).unwrap(), 1);
    });
}

#[ray::remote]
fn sleeper(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// Submits a child task (so this worker holds a lease for it), then dies.
#[ray::remote(max_retries = 0)]
fn parent_dies() -> u64 {
    let child = sleeper::remote(500);
    std::mem::forget(child);
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::process::exit(4)
}

#[test]
fn leases_of_a_dead_owner_come_back() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        assert!(matches!(
            ray::get(&parent_dies::remote()),
            Err(Error::WorkerDied { .. })
        ));
        ray_rs::eventually("the dead owner's lease is returned", || {
            ray::available_resources().unwrap().get("CPU") == Some(&2.0)
        });
        // Both CPUs are usable by one task again.
        assert_eq!(
            ray::get(&sleeper::options().num_cpus(2.0).remote(1)).unwrap(),
            1
        );
    });
}

#[test]
fn init_and_shutdown_work_inside_an_async_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ray::init(ray::Config::local()).unwrap();
        assert_eq!(echo::remote(3).await.unwrap(), 3);
        ray::shutdown();
    });
    assert!(!ray::is_initialized());
    assert_eq!(ray_rs::child_processes(), Vec::<u32>::new());
    assert_eq!(ray_rs::shm_files(), Vec::<String>::new());
}
