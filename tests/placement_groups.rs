//! Placement groups on real worker processes: bundles reserved all or none, tasks and actors
//! run in them and nothing else can use them, removal gives them back and kills what ran in
//! them, waiting groups are created once resources come free.

use ray::util::{
    get_placement_group, placement_group, placement_group_table, remove_placement_group, Bundle,
    PlacementGroupOptions, PlacementGroupState, PlacementStrategy,
};
use ray::{Error, SchedulingStrategy};
use ray_rs::{eventually, with_ray};
use std::time::Duration;

#[ray::remote]
fn plus_one(x: u32) -> u32 {
    x + 1
}

#[ray::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

struct Holder;

#[ray::actor]
impl Holder {
    pub fn new() -> Self {
        Holder
    }
    pub fn ping(&self) -> u8 {
        7
    }
}

fn cpus_free() -> f64 {
    ray::available_resources()
        .unwrap()
        .get("CPU")
        .copied()
        .unwrap_or(0.0)
}

fn in_bundle(pg: &ray::util::PlacementGroup, i: Option<usize>) -> SchedulingStrategy {
    SchedulingStrategy::placement_group(pg, i)
}

/// A group reserves its CPUs (the node has that much less free), its tasks run in its
/// bundles, and removing it gives every CPU back.
#[test]
fn a_group_reserves_its_bundles_runs_its_tasks_and_gives_them_back() {
    with_ray(ray::Config::local().num_cpus(4.0), || {
        let pg =
            placement_group(vec![Bundle::new().cpus(1.0); 2], PlacementStrategy::Pack).unwrap();
        assert_eq!(pg.bundle_count(), 2);
        ray::get(&pg.ready().unwrap()).unwrap();
        assert!(pg.wait(Duration::from_secs(30)).unwrap());
        eventually("the bundles' CPUs are taken", || cpus_free() == 2.0);
        let table = placement_group_table().unwrap();
        let row = table.iter().find(|g| g.id == pg.id()).unwrap();
        assert_eq!(row.state, PlacementGroupState::Created);
        assert_eq!(row.bundle_nodes.len(), 2);
        assert_eq!(row.bundles, pg.bundle_specs());
        let refs: Vec<_> = (0..6)
            .map(|i| {
                plus_one::options()
                    .scheduling_strategy(in_bundle(&pg, Some(i % 2)))
                    .remote(i as u32)
            })
            .collect();
        assert_eq!(ray::get_all(&refs).unwrap(), vec![1, 2, 3, 4, 5, 6]);
        let any = plus_one::options()
            .scheduling_strategy(in_bundle(&pg, None))
            .remote(9);
        assert_eq!(ray::get(&any).unwrap(), 10);
        // Tasks outside the group still have the other two CPUs.
        assert_eq!(ray::get(&plus_one::remote(0)).unwrap(), 1);

        // More than a bundle holds, or a bundle that does not exist: refused at once.
        let big = plus_one::options()
            .num_cpus(2.0)
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote(0);
        let e = ray::get(&big).unwrap_err();
        assert!(matches!(e, Error::Unschedulable { .. }), "{e}");
        assert!(e.to_string().contains("more than bundle 0"), "{e}");
        let nowhere = plus_one::options()
            .scheduling_strategy(in_bundle(&pg, Some(5)))
            .remote(0);
        let e = ray::get(&nowhere).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");

        remove_placement_group(&pg).unwrap();
        remove_placement_group(&pg).unwrap();
        eventually("the bundles' CPUs are back", || cpus_free() == 4.0);
        let late = plus_one::options()
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote(0);
        let e = ray::get(&late).unwrap_err();
        assert!(e.to_string().contains("was removed"), "{e}");
        assert!(pg.wait(Duration::from_millis(10)).is_err());
        let table = placement_group_table().unwrap();
        let row = table.iter().find(|g| g.id == pg.id()).unwrap();
        assert_eq!(row.state, PlacementGroupState::Removed);
    });
}

/// A group the node cannot hold now waits (its tasks with it), all or nothing, and is
/// created once another group gives its resources back.
#[test]
fn a_group_waits_for_room_all_or_nothing_and_its_tasks_wait_with_it() {
    with_ray(ray::Config::local().num_cpus(4.0), || {
        let first = placement_group([Bundle::new().cpus(3.0)], PlacementStrategy::Pack).unwrap();
        assert!(first.wait(Duration::from_secs(30)).unwrap());
        // Two bundles of 2: one would fit in the CPU left, both do not.
        let second = placement_group(
            vec![Bundle::new().cpus(2.0); 2],
            PlacementStrategy::StrictPack,
        )
        .unwrap();
        assert!(!second.wait(Duration::from_millis(300)).unwrap());
        assert_eq!(cpus_free(), 1.0, "nothing of the waiting group is reserved");
        let queued = plus_one::options()
            .scheduling_strategy(in_bundle(&second, Some(1)))
            .remote(41);
        let (ready, _) = ray::wait(
            std::slice::from_ref(&queued),
            1,
            Some(Duration::from_millis(200)),
        )
        .unwrap();
        assert!(ready.is_empty(), "a task of a waiting group must wait too");
        remove_placement_group(&first).unwrap();
        assert!(second.wait(Duration::from_secs(30)).unwrap());
        assert_eq!(ray::get(&queued).unwrap(), 42);
        // A group no node could ever hold waits (Ray's infeasible groups do too) until it
        // is removed; its waiting tasks then fail.
        let never = placement_group([Bundle::new().cpus(64.0)], PlacementStrategy::Pack).unwrap();
        let stuck = plus_one::options()
            .scheduling_strategy(in_bundle(&never, None))
            .remote(0);
        let never_ready = never.ready().unwrap();
        assert!(!never.wait(Duration::from_millis(200)).unwrap());
        let table = placement_group_table().unwrap();
        let row = table.iter().find(|g| g.id == never.id()).unwrap();
        assert_eq!(row.state, PlacementGroupState::Pending);
        assert!(row.pending_reason.contains("CPU"), "{row:?}");
        remove_placement_group(&never).unwrap();
        let e = ray::get(&stuck).unwrap_err();
        assert!(matches!(e, Error::Unschedulable { .. }), "{e}");
        let e = ray::get(&never_ready).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    });
}

/// An actor in a bundle runs there; removing the group kills it for good, and kills the
/// tasks running in the group.
#[test]
fn removing_a_group_kills_its_actors_and_running_tasks() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::Pack).unwrap();
        let actor = Holder::options()
            .num_cpus(1.0)
            .max_restarts(3)
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .try_remote()
            .unwrap();
        assert_eq!(ray::get(&actor.ping()).unwrap(), 7);
        // The bundle's one CPU is the actor's: a task asking for it waits.
        let task = sleep_ms::options()
            .num_cpus(1.0)
            .max_retries(0)
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote(60_000);
        remove_placement_group(&pg).unwrap();
        // Dead for good: calls fail once its process is gone (removal answers first).
        eventually("the group's actor died", || {
            matches!(ray::get(&actor.ping()), Err(Error::ActorDied { .. }))
        });
        let e = ray::get_timeout(&task, Duration::from_secs(30)).unwrap_err();
        assert!(!matches!(e, Error::GetTimeout { .. }), "{e}");
        eventually("the group's CPU is back", || cpus_free() == 2.0);

        // A task running in a group is killed with it.
        let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::Pack).unwrap();
        // (With retries to spend: a task of a removed group is not retried.)
        let running = sleep_ms::options()
            .max_retries(3)
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote(60_000);
        assert!(pg.wait(Duration::from_secs(30)).unwrap());
        let bundle_cpu = format!("CPU_group_0_{}", pg.id());
        eventually("the task runs in the bundle", || {
            !ray::available_resources()
                .unwrap()
                .contains_key(&bundle_cpu)
        });
        remove_placement_group(&pg).unwrap();
        let e = ray::get_timeout(&running, Duration::from_secs(30)).unwrap_err();
        assert!(matches!(e, Error::Unschedulable { .. }), "{e}");
        assert!(e.to_string().contains("was removed"), "{e}");
    });
}

/// A named group is found by name; the name is taken while it lives.
#[test]
fn a_named_group_is_found_by_name_and_its_name_is_taken() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let pg = PlacementGroupOptions::new()
            .name("trainers")
            .create([Bundle::new().cpus(1.0)], PlacementStrategy::StrictSpread)
            .unwrap();
        let found = get_placement_group("trainers").unwrap();
        assert_eq!(found.id(), pg.id());
        assert_eq!(found.strategy(), PlacementStrategy::StrictSpread);
        assert_eq!(found.bundle_specs(), pg.bundle_specs());
        let e = PlacementGroupOptions::new()
            .name("trainers")
            .create([Bundle::new().cpus(1.0)], PlacementStrategy::Pack)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(matches!(
            get_placement_group("nobody"),
            Err(Error::InvalidArgument(_))
        ));
        let e = placement_group([Bundle::new()], PlacementStrategy::Pack).unwrap_err();
        assert!(e.to_string().contains("reserves nothing"), "{e}");
        remove_placement_group(&pg).unwrap();
        assert!(get_placement_group("trainers").is_err());
    });
}

/// In sync mode (one process) a group is there at once and its tasks simply run.
#[test]
fn sync_mode_groups_run_their_tasks_inline() {
    with_ray(ray::Config::sync(), || {
        let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::Pack).unwrap();
        assert!(pg.wait(Duration::from_secs(1)).unwrap());
        ray::get(&pg.ready().unwrap()).unwrap();
        // One that this process could never hold is never ready, whichever way one asks.
        let never = placement_group([Bundle::new().cpus(64.0)], PlacementStrategy::Pack).unwrap();
        assert!(!never.wait(Duration::from_millis(10)).unwrap());
        let short = Some(Duration::from_millis(10));
        let (ready, _) = ray::wait(&[never.ready().unwrap()], 1, short).unwrap();
        assert!(ready.is_empty());
        let r = plus_one::options()
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote(1);
        assert_eq!(ray::get(&r).unwrap(), 2);
        remove_placement_group(&pg).unwrap();
    });
}

/// What is free of the node's own CPUs (outside any bundle), seen from inside a task.
#[ray::remote]
fn node_cpus_free() -> f64 {
    ray::available_resources()
        .unwrap()
        .get("CPU")
        .copied()
        .unwrap_or(0.0)
}

/// Runs a child with no strategy of its own and returns what it saw of the node's CPUs.
#[ray::remote]
fn parent_of_one() -> f64 {
    ray::get(&node_cpus_free::remote()).unwrap()
}

/// A task that captures its children puts them in its group; one that does not leaves them
/// outside, on the node's own CPUs.
#[test]
fn a_capturing_task_runs_its_children_in_its_group() {
    with_ray(ray::Config::local().num_cpus(3.0), || {
        let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::Pack).unwrap();
        assert!(pg.wait(Duration::from_secs(30)).unwrap());
        let captured = parent_of_one::options()
            .scheduling_strategy(SchedulingStrategy::PlacementGroup {
                group: pg.clone(),
                bundle_index: Some(0),
                capture_child_tasks: true,
            })
            .remote();
        // In the bundle (its parent, blocked in `get`, lends it the bundle's CPU): the
        // node's two other CPUs stay free.
        assert_eq!(ray::get(&captured).unwrap(), 2.0, "the child in the bundle");
        // (Idle leases go back within a moment.)
        eventually("the node's CPUs are free again", || cpus_free() == 2.0);
        let free = parent_of_one::options()
            .scheduling_strategy(in_bundle(&pg, Some(0)))
            .remote();
        assert_eq!(
            ray::get(&free).unwrap(),
            1.0,
            "the child outside the bundle"
        );
        remove_placement_group(&pg).unwrap();
    });
}

#[ray::remote]
fn waits_for_a_child(x: u32) -> u32 {
    ray::get(&plus_one::remote(x)).unwrap()
}

/// A task blocked in `get` inside a one-CPU bundle lends that CPU, as a plain task lends
/// its own: the child it captured runs in the bundle meanwhile (else both would wait
/// forever).
#[test]
fn a_blocked_task_in_a_bundle_lends_its_cpu_to_its_captured_child() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let pg = placement_group([Bundle::new().cpus(1.0)], PlacementStrategy::Pack).unwrap();
        let r = waits_for_a_child::options()
            .scheduling_strategy(SchedulingStrategy::PlacementGroup {
                group: pg.clone(),
                bundle_index: Some(0),
                capture_child_tasks: true,
            })
            .remote(1);
        assert_eq!(ray::get_timeout(&r, Duration::from_secs(30)).unwrap(), 2);
        remove_placement_group(&pg).unwrap();
    });
}
