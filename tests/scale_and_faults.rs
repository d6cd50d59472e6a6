//! Regression tests for defects found by hostile testing: oversized replies, borrowers
//! fetching many refs, actors in their restart window, the worker limit, drivers that end
//! without `shutdown`. The scale figures themselves are measured by `rayrs microbenchmark`,
//! not timed here.

use ray::Error;
use ray_rs::with_ray;

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
