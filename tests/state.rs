//! The state API on real worker processes: tasks in each state with where they ran and why
//! they failed, summaries, filters and limits, actors, jobs and nodes, as `ray::state` lists
//! them from the GCS.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

use ray::state::{self, ListOptions, TaskState, Why};
use ray_rs::{eventually, with_ray};

#[ray::remote]
fn quick(i: u32) -> u32 {
    i
}

#[ray::remote]
fn boom() -> Result<u32, String> {
    Err("boom went the task".into())
}

/// Runs until `file` exists (the test creates it once it has seen the task running).
#[ray::remote]
fn hold_until(file: String) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::path::Path::new(&file).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::id()
}

#[ray::remote]
fn after(x: u32) -> u32 {
    x
}

#[ray::actor]
struct Counter {
    n: u64,
}

#[ray::actor]
impl Counter {
    pub fn new() -> Self {
        Counter { n: 0 }
    }

    pub fn incr(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
}

/// An actor whose calls run one at a time.
#[ray::actor]
struct Gate;

#[ray::actor]
impl Gate {
    pub fn new() -> Self {
        Gate
    }

    pub fn hold(&self, file: String) -> u32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::path::Path::new(&file).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::process::id()
    }
}

fn opts(filters: &[&str]) -> ListOptions {
    filters
        .iter()
        .fold(ListOptions::new(), |o, f| o.filter(f).unwrap())
}

fn tasks(filters: &[&str]) -> ray::state::Listing<ray::state::Task> {
    state::list_tasks(&opts(filters)).unwrap()
}

#[test]
fn tasks_are_listed_in_their_states_with_where_they_ran_and_why_they_failed() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let done: Vec<_> = (0..20).map(quick::remote).collect();
        ray::get_all(&done).unwrap();
        let failed = boom::remote();
        assert!(ray::get(&failed).is_err());
        let flag = std::env::temp_dir().join(format!("rayrs-state-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let held = hold_until::remote(flag.display().to_string());
        let waiting = after::remote(&held);

        // The owner's word of the end may come before the worker's of where it ran.
        eventually(
            "the 20 quick tasks are listed as finished where they ran",
            || {
                let done = tasks(&["name=quick", "state=FINISHED"]);
                done.total == 20 && done.rows.iter().all(|t| t.worker_pid.is_some())
            },
        );
        let quick_rows = tasks(&["name=quick"]).rows;
        let me = ray::get_runtime_context().unwrap();
        for t in &quick_rows {
            assert_eq!(t.state, Some(TaskState::Finished), "{t:?}");
            assert_eq!(t.node_id.as_deref(), Some(me.node_id.as_str()));
            assert!(
                t.worker_pid.is_some_and(|p| p != std::process::id()),
                "{t:?}"
            );
            let (s, r, e) = (t.submitted_at_us, t.started_at_us, t.ended_at_us);
            assert!(s.is_some() && r.is_some() && e >= r, "{t:?}");
            assert_eq!(t.job_id, me.job_id);
            assert_eq!(t.attempt, 0);
        }

        eventually("the failed task is listed with its error", || {
            tasks(&["name=boom", "state=FAILED"]).total == 1
        });
        let boom_row = &tasks(&["name=boom"]).rows[0];
        assert_eq!(
            boom_row.error_type.as_deref(),
            Some("TASK_EXECUTION_EXCEPTION")
        );
        assert!(
            boom_row
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("boom went the task")),
            "{boom_row:?}"
        );

        eventually(
            "the held task is running, its dependent waits for it",
            || {
                tasks(&["name=hold_until", "state=RUNNING"]).total == 1
                    && tasks(&["name=after", "state=PENDING_ARGS_AVAIL"]).total == 1
            },
        );
        let running = &tasks(&["name=hold_until"]).rows[0];
        assert!(running.ended_at_us.is_none() && running.worker_pid.is_some());

        // A summary counts every task; a limit cuts the rows, not the total.
        let summary = state::summarize_tasks(&ListOptions::new()).unwrap();
        let quick_sum = summary.iter().find(|s| s.name == "quick").unwrap();
        assert_eq!(quick_sum.total, 20);
        assert_eq!(quick_sum.by_state.get(&TaskState::Finished), Some(&20));
        let limited = state::list_tasks(&ListOptions::new().limit(5)).unwrap();
        assert_eq!(limited.rows.len(), 5);
        assert!(limited.total >= 23, "{}", limited.total);
        assert_eq!(tasks(&["state!=FINISHED", "name=quick"]).total, 0);

        // A filter on a field tasks do not have is the caller's error.
        let bad = state::list_tasks(&opts(&["colour=red"])).unwrap_err();
        assert!(matches!(bad, ray::Error::InvalidArgument(_)), "{bad}");
        assert!(ListOptions::new().filter("no operator").is_err());

        std::fs::write(&flag, b"go").unwrap();
        assert_eq!(ray::get(&waiting).unwrap(), ray::get(&held).unwrap());
        eventually("both end finished", || {
            tasks(&["state=FINISHED", "name=after"]).total == 1
                && tasks(&["state=FINISHED", "name=hold_until"]).total == 1
        });
        let _ = std::fs::remove_file(&flag);
    });
}

/// "Why pending": a task behind the busy CPU names the task holding it, a task waiting for
/// an argument names the task making it, a running one runs, and an unknown id is refused.
#[test]
fn explain_says_what_a_pending_task_waits_for_and_who_holds_it() {
    with_ray(ray::Config::local().num_cpus(1.0), || {
        let flag = std::env::temp_dir().join(format!("rayrs-explain-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let held = hold_until::remote(flag.display().to_string());
        let behind = quick::remote(7);
        let dependent = after::remote(&held);
        let (held_id, behind_id, dependent_id) = (held.id(), behind.id(), dependent.id());
        let why = |id: &str| state::explain(id).map(|e| e.why);
        eventually("the held task runs and the others are known", || {
            matches!(why(&held_id), Ok(Why::Running { .. }))
                && why(&behind_id).is_ok()
                && why(&dependent_id).is_ok()
        });
        // The node's report and the holder's events may come a moment after it runs.
        eventually("the task behind waits for the CPU the holder holds", || {
            matches!(
                why(&behind_id),
                Ok(Why::WaitingForResources { ref nodes, .. })
                    if nodes.iter().any(|n| n.held_by.iter().any(|t| t.task_id == held_id))
            )
        });
        let e = state::explain(&behind_id).unwrap();
        match &e.why {
            Why::WaitingForResources { shape, nodes, .. } => {
                assert_eq!(shape.get("CPU"), Some(&1.0));
                let holders: Vec<&str> = nodes
                    .iter()
                    .flat_map(|n| n.held_by.iter().map(|t| t.task_id.as_str()))
                    .collect();
                assert_eq!(holders, [held_id.as_str()], "{e}");
            }
            other => panic!("expected resources in use, got {other:?}"),
        }
        assert!(e.to_string().contains("(hold_until, RUNNING"), "{e}");
        let e = state::explain(&dependent_id).unwrap();
        match &e.why {
            Why::WaitingForArgs { args } => {
                assert_eq!(args.len(), 1, "{e}");
                assert_eq!(args[0].object_id, held_id);
                assert!(!args[0].ready);
                let maker = args[0].made_by.as_ref().expect("the task that makes it");
                assert_eq!(
                    (maker.task_id.as_str(), maker.state),
                    (held_id.as_str(), Some(TaskState::Running))
                );
            }
            other => panic!("expected its argument, got {other:?}"),
        }
        // An actor call behind a call that runs: sent to its actor, queued there.
        let gate = Gate::remote();
        let first = gate.hold(flag.display().to_string());
        let second = gate.hold(flag.display().to_string());
        let (first_id, second_id) = (first.id(), second.id());
        eventually("the first call runs and the second is known", || {
            matches!(why(&first_id), Ok(Why::Running { .. })) && why(&second_id).is_ok()
        });
        let e = state::explain(&second_id).unwrap();
        assert!(
            matches!(
                &e.why,
                Why::QueuedAtActor { .. }
                    | Why::WaitingForActor {
                        connected: true,
                        ..
                    }
            ),
            "{e}"
        );
        assert_eq!(e.name, "Gate.hold");
        let unknown = state::explain("00112233445566778899aabbccddeeff").unwrap_err();
        assert!(
            matches!(&unknown, ray::Error::InvalidArgument(m) if m.contains("no task or actor")),
            "{unknown}"
        );
        std::fs::write(&flag, b"go").unwrap();
        assert_eq!(ray::get(&dependent).unwrap(), ray::get(&held).unwrap());
        assert_eq!(ray::get(&behind).unwrap(), 7);
        assert_eq!(ray::get(&second).unwrap(), ray::get(&first).unwrap());
        eventually("the waiting tasks end finished", || {
            matches!(why(&behind_id), Ok(Why::Finished))
                && matches!(why(&dependent_id), Ok(Why::Finished))
        });
        let _ = std::fs::remove_file(&flag);
    });
}

#[test]
fn actors_jobs_and_nodes_are_listed() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let c = Counter::options().name("counter-1").remote();
        assert_eq!(ray::get(&c.incr()).unwrap(), 1);
        assert_eq!(ray::get(&c.incr()).unwrap(), 2);

        let actors = state::list_actors(&opts(&["class_name=Counter"])).unwrap();
        assert_eq!(actors.total, 1);
        let a = &actors.rows[0];
        assert_eq!(
            (a.state.as_str(), a.name.as_deref()),
            ("ALIVE", Some("counter-1"))
        );
        let pid = a.pid.expect("an alive actor's pid");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        let me = ray::get_runtime_context().unwrap();
        assert_eq!(a.node_id.as_deref(), Some(me.node_id.as_str()));

        eventually("both calls are listed against the actor", || {
            let calls = tasks(&["name=Counter.incr", "state=FINISHED"]);
            calls.total == 2
                && calls.rows.iter().all(|t| t.worker_pid == Some(pid))
                && calls
                    .rows
                    .iter()
                    .all(|t| t.actor_id.as_deref() == Some(a.actor_id.as_str()))
        });

        c.kill(true).unwrap();
        eventually("the killed actor is listed dead", || {
            state::list_actors(&opts(&["name=counter-1"])).unwrap().rows[0].state == "DEAD"
        });
        assert_eq!(
            state::list_actors(&opts(&["state=ALIVE", "class_name=Counter"]))
                .unwrap()
                .total,
            0
        );

        let jobs = state::list_jobs(&ListOptions::new()).unwrap();
        assert_eq!(jobs.total, 1);
        let job = &jobs.rows[0];
        assert_eq!(job.status, "RUNNING");
        assert_eq!(job.driver_pid, Some(std::process::id()));
        assert_eq!(job.job_id, me.job_id);
        assert!(job.start_time_us.is_some() && job.end_time_us.is_none());

        let nodes = state::list_nodes(&ListOptions::new()).unwrap();
        assert_eq!(nodes.total, 1);
        assert_eq!(nodes.rows[0].node_id, me.node_id);
        assert!(nodes.rows[0].is_head && nodes.rows[0].state == "ALIVE");
        assert_eq!(nodes.rows[0].resources_total.get("CPU"), Some(&2.0));
    });
}

#[test]
fn sync_mode_has_no_state_api_and_says_so() {
    with_ray(ray::Config::sync(), || {
        let e = state::list_tasks(&ListOptions::new()).unwrap_err();
        assert!(matches!(e, ray::Error::InvalidArgument(_)), "{e}");
    });
}

/// A worker reports its events once a second: one killed right after a call ended never
/// reports it, and the owner's own word of the end must keep the call from being listed as
/// pending forever.
#[test]
fn a_call_whose_worker_is_killed_right_after_it_ends_is_listed_finished() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let c = Counter::options().name("short-lived").remote();
        assert_eq!(ray::get(&c.incr()).unwrap(), 1);
        c.kill(true).unwrap();
        eventually("the call is listed finished", || {
            tasks(&["name=Counter.incr", "state=FINISHED"]).total == 1
        });
    });
}
