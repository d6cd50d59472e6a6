//! The dashboard of a local session on real worker processes: every data route refuses a
//! peer without the token (401) or with a wrong one (403); the JSON routes, the timeline and
//! `/metrics` count the work done; and the pages, driven in a real browser while work is in
//! flight, show what the state API lists.
//!
//! The browser is Debian's chromium, headless, driven through chromedriver (WebDriver, with
//! fantoccini): the page asks for the token and refuses a wrong one; the overview, the tasks
//! (a failed task's error in its detail, a filter), the actors and the timeline show what
//! the state API lists. Screenshots of each view are kept under
//! `$CARGO_TARGET_TMPDIR/dashboard-screenshots/`. It needs `chromium` and `chromedriver`
//! (Debian's packages `chromium` and `chromium-driver`, which `.ci/run` installs), or their
//! paths in `CHROMIUM` and `CHROMEDRIVER`.

#![allow(clippy::new_without_default)] // actor constructors are called remotely

use ray::state::{self, ListOptions, TaskState};
use ray_rs::browser::fantoccini::{Client, Locator};
use ray_rs::browser::{click, displayed, text, type_in, until};
use ray_rs::{eventually, with_ray};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[ray::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[ray::remote(max_retries = 0)]
fn explode() -> Result<u64, String> {
    Err("the dashboard must show this error".into())
}

/// Runs until `file` exists (the test creates it when it has seen the task running).
#[ray::remote]
fn hold_until(file: String) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Path::new(&file).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::process::id()
}

/// Waits for its argument (the held task's result): pending, with a reason to show.
#[ray::remote]
fn after_held(pid: u32) -> u32 {
    pid
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

/// The session's dashboard: its base URL and its token, from `ray::dashboard_url()`.
fn dashboard() -> (String, String) {
    let url = ray::dashboard_url().expect("a local session has a dashboard");
    let (base, token) = url
        .split_once("/#token=")
        .expect("the URL carries the token");
    (base.to_string(), token.to_string())
}

/// An HTTP client that returns 4xx and 5xx answers instead of failing on them.
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GETs `path` with `token` (none: no header), and returns the status and the body.
fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = http().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("the dashboard answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The data of a JSON answer that succeeded.
fn data(base: &str, path: &str, token: &str) -> serde_json::Value {
    let (status, body) = get(base, path, Some(token));
    assert_eq!(status, 200, "{path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], true, "{path}: {body}");
    v["data"].clone()
}

const DATA_ROUTES: [&str; 11] = [
    "/api/v0/explain/00",
    "/api/v0/workers",
    "/api/v0/objects",
    "/api/v0/timeline",
    "/api/v0/tasks",
    "/api/v0/tasks/summarize",
    "/api/v0/actors",
    "/api/v0/jobs",
    "/api/v0/nodes",
    "/api/v0/cluster",
    "/metrics",
];

#[test]
fn every_data_route_refuses_a_missing_or_wrong_token() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let (base, token) = dashboard();
        let node = state::list_nodes(&ListOptions::new()).unwrap().rows[0]
            .node_id
            .clone();
        for route in DATA_ROUTES.iter().chain(&["/api/v0/no-such-route"]) {
            let (status, body) = get(&base, route, None);
            assert_eq!(status, 401, "{route} without a token: {body}");
            assert!(!body.contains(&node), "{route} leaked the node id: {body}");
            let (status, body) = get(&base, route, Some("not-the-token-at-all"));
            assert_eq!(status, 403, "{route} with a wrong token: {body}");
            assert!(!body.contains(&node), "{route} leaked the node id: {body}");
            // A token that only starts like the right one is wrong too.
            let (status, _) = get(&base, route, Some(&token[..token.len() - 1]));
            assert_eq!(status, 403, "{route} with a truncated token");
        }
        for route in DATA_ROUTES.iter().filter(|r| !r.contains("explain")) {
            let (status, body) = get(&base, route, Some(&token));
            assert_eq!(status, 200, "{route} with the token: {body}");
        }
        // Let in, the id that names nothing is not found.
        let (status, body) = get(&base, "/api/v0/explain/00", Some(&token));
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no task or actor 00"), "{body}");
        // What the refusals were checked not to carry is there with the token.
        let (_, nodes) = get(&base, "/api/v0/nodes", Some(&token));
        assert!(nodes.contains(&node), "{nodes}");
        let (status, _) = get(&base, "/api/v0/no-such-route", Some(&token));
        assert_eq!(status, 404);
        // The page shell is open (a browser must load it to ask for the token) and carries
        // no data.
        for route in ["/", "/app.js", "/style.css"] {
            let (status, body) = get(&base, route, None);
            assert_eq!(status, 200, "{route}");
            assert!(!body.contains(&node), "{route} carries data");
        }
    });
}

#[test]
fn json_routes_and_metrics_count_the_work_done() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let (base, token) = dashboard();
        let squares: Vec<_> = (0..20).map(square::remote).collect();
        assert_eq!(ray::get_all(&squares).unwrap().iter().sum::<u64>(), 2470);
        assert!(ray::get(&explode::remote()).is_err());
        let counter = Counter::remote();
        assert_eq!(ray::get(&counter.incr()).unwrap(), 1);
        let big = ray::put(&vec![7u8; 4 << 20]).unwrap();

        eventually("the GCS has every task's end", || {
            let s = state::summarize_tasks(&ListOptions::new()).unwrap();
            let done = |name: &str, st: TaskState| {
                s.iter()
                    .find(|x| x.name == name)
                    .and_then(|x| x.by_state.get(&st).copied())
            };
            done("square", TaskState::Finished) == Some(20)
                && done("explode", TaskState::Failed) == Some(1)
        });
        // Listings: filters, the limit, Ray's triples, and a bad filter's 400.
        let squares_listed = data(&base, "/api/v0/tasks?filter=name%3Dsquare&limit=5", &token);
        assert_eq!(squares_listed["result"]["total"], 20);
        assert_eq!(squares_listed["result"]["num_after_truncation"], 5);
        let failed = data(
            &base,
            "/api/v0/tasks?filter_keys=state&filter_predicates=%3D&filter_values=FAILED",
            &token,
        );
        let rows = failed["result"]["result"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{failed}");
        assert_eq!(rows[0]["name"], "explode");
        assert!(rows[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("the dashboard must show this error"));
        let (status, body) = get(&base, "/api/v0/tasks?filter=colour%3Dred", Some(&token));
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("colour"), "{body}");
        let actors = data(&base, "/api/v0/actors", &token);
        assert_eq!(actors["result"]["result"][0]["class_name"], "Counter");
        let jobs = data(&base, "/api/v0/jobs", &token);
        assert_eq!(jobs["result"]["total"], 1);
        let overview = data(&base, "/api/v0/cluster", &token);
        assert_eq!(overview["nodes_alive"], 1);
        assert_eq!(overview["resources_total"]["CPU"], 2.0);
        assert!(overview["nodes"][0]["store_used"].as_u64().unwrap() >= 4 << 20);

        // The timeline: a slice per task that ran, from the dashboard and from the facade
        // (a task's start comes from its worker's events, a second behind its owner's end).
        eventually("the timeline has a slice per square", || {
            let (status, trace) = get(&base, "/api/v0/timeline?filter=name%3Dsquare", Some(&token));
            assert_eq!(status, 200, "{trace}");
            let trace: Vec<serde_json::Value> = serde_json::from_str(&trace).unwrap();
            let slices = trace.iter().filter(|e| e["ph"] == "X").count();
            assert!(slices <= 20, "{slices}");
            slices == 20
        });
        let file = std::env::temp_dir().join(format!("rayrs-trace-{}.json", std::process::id()));
        let events = ray::timeline(&file).unwrap();
        let written: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(written.len(), events.len());
        let ran = |name: &str| {
            events
                .iter()
                .filter(|e| e.ph == "X" && e.name == name)
                .count()
        };
        assert_eq!(ran("square"), 20);
        assert!(events
            .iter()
            .filter(|e| e.ph == "X")
            .all(|e| e.dur.is_some() && e.tid > 0));

        // Prometheus text, with Ray's names (once the node has reported its idle workers'
        // leases returned).
        let scrape = || {
            let (status, metrics) = get(&base, "/metrics", Some(&token));
            assert_eq!(status, 200, "{metrics}");
            metrics
        };
        eventually("the node reports its CPUs free", || {
            scrape()
                .lines()
                .any(|l| l == "ray_resources{Name=\"CPU\",State=\"USED\"} 0")
        });
        let metrics = scrape();
        for line in [
            "ray_tasks{State=\"FINISHED\",Name=\"square\"} 20",
            "ray_tasks{State=\"FAILED\",Name=\"explode\"} 1",
            "ray_actors{State=\"ALIVE\",Name=\"Counter\"} 1",
            // Actors hold no CPU once created (as in Ray), and nothing else runs.
            "ray_resources{Name=\"CPU\",State=\"AVAILABLE\"} 2",
            "ray_resources{Name=\"CPU\",State=\"USED\"} 0",
            "ray_cluster_active_nodes 1",
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line:?} missing from\n{metrics}"
            );
        }
        let store = metrics
            .lines()
            .find(|l| l.starts_with("ray_object_store_memory{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no object store line in\n{metrics}"));
        assert!(store >= (4 << 20) as f64, "{store}");
        drop(big);
    });
}

/// Holds refs it was given (a borrower of their owner's objects).
#[ray::actor]
struct Keeper {
    held: Vec<ray::ObjectRef<Vec<u8>>>,
}

#[ray::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper { held: Vec::new() }
    }

    pub fn keep(&mut self, refs: Vec<ray::ObjectRef<Vec<u8>>>) -> usize {
        self.held.extend(refs);
        self.held.len()
    }

    pub fn release(&mut self) -> usize {
        self.held.clear();
        self.held.len()
    }
}

#[test]
fn objects_and_workers_are_listed_from_every_process() {
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let (base, token) = dashboard();
        let big = ray::put(&vec![7u8; 2 << 20]).unwrap();
        let keeper = Keeper::remote();
        assert_eq!(ray::get(&keeper.keep(vec![big.clone()])).unwrap(), 1);
        let keeper_pid = state::list_actors(&ListOptions::new()).unwrap().rows[0]
            .pid
            .expect("the keeper's pid");

        // Workers: the driver (once it told the GCS where it listens) and the keeper's.
        eventually("the driver is listed with its address", || {
            let l = state::list_workers(&ListOptions::new().filter("worker_type=DRIVER").unwrap())
                .unwrap();
            l.rows.len() == 1
                && l.rows[0].pid == Some(std::process::id())
                && l.rows[0].address.is_some()
        });
        let workers = state::list_workers(&ListOptions::new()).unwrap();
        assert!(workers.unreachable.is_empty(), "{:?}", workers.unreachable);
        let host = workers
            .rows
            .iter()
            .find(|w| w.pid == Some(keeper_pid))
            .unwrap_or_else(|| panic!("the keeper's worker in {:?}", workers.rows));
        assert_eq!(host.worker_type, "WORKER");
        assert!(
            ["LEASED", "HOSTING_ACTORS"].contains(&host.state.as_str()),
            "{host:?}"
        );

        // Objects: the driver's own row (its handle, the borrower, the bytes in shared
        // memory) and the keeper's borrowed row.
        let of_big = ListOptions::new()
            .filter(&format!("object_id={}", big.id()))
            .unwrap();
        let objects = state::list_objects(&of_big).unwrap();
        assert!(objects.unreachable.is_empty(), "{:?}", objects.unreachable);
        let driver_row = objects
            .rows
            .iter()
            .find(|o| o.worker_type == "DRIVER")
            .unwrap_or_else(|| panic!("the driver's row in {:?}", objects.rows));
        assert_eq!(driver_row.reference_type, "LOCAL_REFERENCE");
        assert_eq!(driver_row.owner_address, None, "the driver owns it");
        assert_eq!(driver_row.borrowers, 1, "the keeper borrows it");
        assert_eq!(driver_row.location, "SHARED_MEMORY");
        assert!(driver_row.object_size >= 2 << 20, "{driver_row:?}");
        assert_eq!(driver_row.pid, std::process::id());
        assert_eq!(
            driver_row.node_id.as_ref(),
            Some(&host.node_id.clone().unwrap())
        );
        let keeper_row = objects
            .rows
            .iter()
            .find(|o| o.pid == keeper_pid)
            .unwrap_or_else(|| panic!("the keeper's row in {:?}", objects.rows));
        assert_eq!(keeper_row.reference_type, "LOCAL_REFERENCE");
        assert!(keeper_row.owner_address.is_some(), "{keeper_row:?}");
        assert_eq!(objects.total, 2);

        // The driver's handle to the keeper is counted like an object, and listed as such.
        let keeper_id = state::list_actors(&ListOptions::new()).unwrap().rows[0]
            .actor_id
            .clone();
        let handles = state::list_objects(
            &ListOptions::new()
                .filter("reference_type=ACTOR_HANDLE")
                .unwrap(),
        )
        .unwrap();
        assert!(
            handles.rows.iter().any(|o| o.object_id == keeper_id),
            "{keeper_id} not in {:?}",
            handles.rows
        );

        // The same from the dashboard, and a bad filter's 400.
        let path = format!("/api/v0/objects?filter=object_id%3D{}", big.id());
        let listed = data(&base, &path, &token);
        assert_eq!(listed["result"]["total"], 2, "{listed}");
        let listed = data(&base, "/api/v0/workers?filter=worker_type%3DDRIVER", &token);
        assert_eq!(listed["result"]["total"], 1, "{listed}");
        let (status, body) = get(&base, "/api/v0/objects?filter=colour%3Dred", Some(&token));
        assert_eq!(status, 400, "{body}");

        // Let go of everywhere, it is listed nowhere.
        assert_eq!(ray::get(&keeper.release()).unwrap(), 0);
        drop(big);
        eventually("the object is gone from every process", || {
            state::list_objects(&of_big).unwrap().total == 0
        });
    });
}

#[test]
fn a_taken_dashboard_port_fails_init_and_port_0_starts_none() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = ray::init(ray::Config::local().dashboard_port(port)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!ray::is_initialized());
    assert_eq!(
        ray_rs::child_processes(),
        Vec::<u32>::new(),
        "a failed init left processes"
    );
    with_ray(ray::Config::local().dashboard_port(0), || {
        assert_eq!(ray::dashboard_url(), None);
    });
}

// The browser.

/// Where the screenshots go.
fn shots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    ray_rs::browser::screenshot(client, dir, name).await
}

/// What the state API says the page must show.
struct Expected {
    finished: u64,
    explode_id: String,
    held_id: String,
    /// A task waiting for the held one's result.
    waiting_id: String,
    held_object: String,
    actor_id: String,
}

async fn drive(client: &Client, url: &str, base: &str, token: &str, expected: &Expected) {
    // `ray::dashboard_url()` opens the page with the token, which leaves the address bar.
    client.goto(url).await.unwrap();
    until("the page opens with the URL's token", || async move {
        text(client, "[data-count=nodes-alive]").await.as_deref() == Some("1")
    })
    .await;
    let shown = client.current_url().await.unwrap();
    assert!(!shown.as_str().contains(token), "{shown}");

    // Without the token, the page asks for it; a wrong one is refused.
    client
        .execute("sessionStorage.clear()", Vec::new())
        .await
        .unwrap();
    client.goto(base).await.unwrap();
    until("the page asks for the token", || {
        displayed(client, "#login")
    })
    .await;
    screenshot(client, &shots(), "login.png").await;
    type_in(client, "#token", "not-the-token-at-all").await;
    click(client, "#login-form button").await;
    until("the wrong token is refused", || async move {
        text(client, "#login-error")
            .await
            .is_some_and(|t| t.contains("refused"))
    })
    .await;
    type_in(client, "#token", token).await;
    click(client, "#login-form button").await;

    // The overview counts what the state API counts.
    let finished = expected.finished.to_string();
    let finished = finished.as_str();
    until("the overview shows the finished tasks", || async move {
        text(client, "[data-state=FINISHED]").await.as_deref() == Some(finished)
    })
    .await;
    until("the overview shows the running task", || async move {
        text(client, "[data-state=RUNNING]").await.as_deref() == Some("1")
    })
    .await;
    assert_eq!(
        text(client, "[data-state=FAILED]").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        text(client, "[data-count=nodes-alive]").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        text(client, "[data-actor-state=ALIVE]").await.as_deref(),
        Some("1")
    );
    screenshot(client, &shots(), "overview.png").await;

    // Tasks: the summary, a failed task's error in its detail, a filter.
    click(client, "button[data-view=tasks]").await;
    let failed_row = format!("tr[data-task-id='{}']", expected.explode_id);
    until("the failed task is listed", || {
        displayed(client, &failed_row)
    })
    .await;
    click(client, &failed_row).await;
    until("the failed task's detail shows its error", || async move {
        text(client, "#task-detail [data-field=error_message]")
            .await
            .is_some_and(|t| t.contains("the dashboard must show this error"))
    })
    .await;
    let squares = "#summary-table tr[data-function=square] td:nth-child(5)";
    assert_eq!(text(client, squares).await.as_deref(), Some("12"));
    screenshot(client, &shots(), "tasks.png").await;
    type_in(client, "#task-filter", "state=RUNNING").await;
    click(client, "#task-filter-form button").await;
    until("the filter leaves only the running task", || async move {
        let rows = client
            .find_all(Locator::Css("#tasks-table tbody tr"))
            .await
            .unwrap_or_default();
        if rows.len() != 1 {
            return false;
        }
        rows[0].attr("data-task-id").await.ok().flatten().as_deref()
            == Some(expected.held_id.as_str())
    })
    .await;
    // A pending task's detail says why it waits: its argument, made by the held task.
    let filter = client.find(Locator::Css("#task-filter")).await.unwrap();
    filter.clear().await.unwrap();
    type_in(client, "#task-filter", "state=PENDING_ARGS_AVAIL").await;
    click(client, "#task-filter-form button").await;
    let waiting_row = format!("tr[data-task-id='{}']", expected.waiting_id);
    until("the waiting task is listed", || {
        displayed(client, &waiting_row)
    })
    .await;
    click(client, &waiting_row).await;
    let held_id = expected.held_id.as_str();
    until("its detail says why it is pending", || async move {
        text(client, "#task-detail [data-field=why]")
            .await
            .is_some_and(|t| {
                t.contains("waiting for its arguments")
                    && t.contains(&format!("made by task {held_id} (hold_until, RUNNING"))
            })
    })
    .await;
    screenshot(client, &shots(), "why-pending.png").await;

    // Actors.
    click(client, "button[data-view=actors]").await;
    let actor_row = format!("tr[data-actor-id='{}']", expected.actor_id);
    let actor_row = actor_row.as_str();
    until("the actor is listed as alive", || async move {
        text(client, actor_row)
            .await
            .is_some_and(|t| t.contains("Counter") && t.contains("ALIVE"))
    })
    .await;
    screenshot(client, &shots(), "actors.png").await;

    // Objects: the driver's ref to the running task's result; workers: the driver.
    click(client, "button[data-view=objects]").await;
    let held_row = format!(
        "#objects-table tr[data-object-id='{}']",
        expected.held_object
    );
    let held_row = held_row.as_str();
    until("the driver's pending result is listed", || async move {
        text(client, held_row)
            .await
            .is_some_and(|t| t.contains("LOCAL_REFERENCE") && t.contains("DRIVER"))
    })
    .await;
    screenshot(client, &shots(), "objects.png").await;
    click(client, "button[data-view=workers]").await;
    let driver_row = format!("#workers-table tr[data-pid='{}']", std::process::id());
    let driver_row = driver_row.as_str();
    until("the driver is listed among the workers", || async move {
        text(client, driver_row)
            .await
            .is_some_and(|t| t.contains("DRIVER"))
    })
    .await;

    // The timeline: a bar per task that ran, the failed one among them.
    click(client, "button[data-view=timeline]").await;
    let failed_bar = format!("#timeline rect[data-task-id='{}']", expected.explode_id);
    let failed_bar = failed_bar.as_str();
    until("the timeline draws the tasks that ran", || async move {
        let drawn = match client.find(Locator::Css("#timeline svg")).await {
            Ok(svg) => svg.attr("data-slices").await.ok().flatten(),
            Err(_) => None,
        };
        drawn.and_then(|n| n.parse::<u64>().ok()) >= Some(expected.finished + 2)
            && displayed(client, failed_bar).await
    })
    .await;
    screenshot(client, &shots(), "timeline.png").await;
}

#[test]
fn the_dashboard_shows_the_clusters_state_in_a_browser() {
    // Checked first: a machine without the browser fails here, saying what to install.
    ray_rs::browser::tool("CHROMIUM", "/usr/bin/chromium");
    with_ray(ray::Config::local().num_cpus(2.0), || {
        let url = ray::dashboard_url().expect("a local session has a dashboard");
        let (base, token) = url.split_once("/#token=").unwrap();
        let squares: Vec<_> = (0..12).map(square::remote).collect();
        ray::get_all(&squares).unwrap();
        assert!(ray::get(&explode::remote()).is_err());
        let counter = Counter::remote();
        ray::get(&counter.incr()).unwrap();
        let release = std::env::temp_dir().join(format!("rayrs-dash-{}", std::process::id()));
        let held = hold_until::remote(release.display().to_string());
        let waiting = after_held::remote(&held);

        eventually("the GCS sees the work", || {
            let s = state::summarize_tasks(&ListOptions::new()).unwrap();
            let n = |st| {
                s.iter()
                    .map(|x| x.by_state.get(&st).copied().unwrap_or(0))
                    .sum::<u64>()
            };
            n(TaskState::Running) == 1
                && n(TaskState::Failed) == 1
                && n(TaskState::Finished) == 13
                && n(TaskState::PendingArgsAvail) == 1
        });
        let id_of = |name: &str| {
            state::list_tasks(&ListOptions::new().filter(&format!("name={name}")).unwrap())
                .unwrap()
                .rows[0]
                .task_id
                .clone()
        };
        let expected = Expected {
            // The squares and the actor's call.
            finished: 13,
            explode_id: id_of("explode"),
            held_id: id_of("hold_until"),
            waiting_id: waiting.id(),
            held_object: held.id(),
            actor_id: state::list_actors(&ListOptions::new()).unwrap().rows[0]
                .actor_id
                .clone(),
        };

        let profile =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-{}", std::process::id()));
        ray_rs::browser::with_browser(profile, Duration::from_secs(120), async |client| {
            drive(client, &url, base, token, &expected).await
        });
        std::fs::write(&release, b"").unwrap();
        let pid = ray::get(&held);
        let _ = std::fs::remove_file(&release);
        assert!(pid.unwrap() > 0);
    });
}
