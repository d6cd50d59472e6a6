//! The state API as JSON (Ray's `/api/v0/...` paths and envelope): tasks, their summary,
//! actors, jobs, nodes, workers, objects, the cluster's overview, and the tasks' timeline (a Chrome trace),
//! each listed from the GCS with the filters and limit of the query; and why a task or an
//! actor has not run (`/api/v0/explain/<id>`, ours).
//!
//! A query's filters are `filter=key=value` (or `key!=value`), repeated, or Ray's
//! `filter_keys`/`filter_predicates`/`filter_values` triples; `limit=N`. A listing answers
//! `{"result": {"total": .., "num_after_truncation": .., "dropped": .., "result": [rows]}}`.

use crate::reply::{failure, success};
use crate::Sources;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ray_state::{ListOptions, Listing, StateClient, StateError};
use serde::Serialize;
use std::collections::BTreeMap;

/// The JSON routes.
pub fn routes(sources: Sources) -> Router {
    Router::new()
        .route("/api/v0/tasks", get(tasks))
        .route("/api/v0/tasks/summarize", get(task_summary))
        .route("/api/v0/actors", get(actors))
        .route("/api/v0/jobs", get(jobs))
        .route("/api/v0/nodes", get(nodes))
        .route("/api/v0/workers", get(workers))
        .route("/api/v0/objects", get(objects))
        .route("/api/v0/cluster", get(cluster))
        .route("/api/v0/timeline", get(timeline))
        .route("/api/v0/explain/{id}", get(explain))
        .with_state(sources)
}

/// What a path no route serves answers (behind the token, as every data route).
pub async fn not_found() -> Response {
    failure(StatusCode::NOT_FOUND, "no such route")
}

/// The query's filters and limit; a parameter this API does not know is an error, so that a
/// misspelt filter never silently lists everything.
pub fn list_options(query: Option<&str>) -> Result<ListOptions, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| e.to_string())?;
    let mut opts = ListOptions::new();
    let (mut keys, mut predicates, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in pairs {
        match key.as_str() {
            "filter" => opts = opts.filter(&value).map_err(|e| e.to_string())?,
            "filter_keys" => keys.push(value),
            "filter_predicates" => predicates.push(value),
            "filter_values" => values.push(value),
            "limit" => {
                let n = value
                    .parse()
                    .map_err(|_| format!("limit must be a whole number, not {value:?}"))?;
                opts = opts.limit(n);
            }
            // Ray's clients send these; every row here is detailed, and calls have their
            // own deadlines.
            "detail" | "timeout" => {}
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (known: filter, filter_keys, \
                     filter_predicates, filter_values, limit)"
                ))
            }
        }
    }
    if keys.len() != predicates.len() || keys.len() != values.len() {
        return Err("filter_keys, filter_predicates and filter_values must come in threes".into());
    }
    for ((key, predicate), value) in keys.iter().zip(&predicates).zip(&values) {
        if predicate != "=" && predicate != "!=" {
            return Err(format!(
                "filter predicate {predicate:?}: only = and != are known"
            ));
        }
        opts = opts
            .filter(&format!("{key}{predicate}{value}"))
            .map_err(|e| e.to_string())?;
    }
    Ok(opts)
}

/// A state error as an HTTP answer: the query's fault (400) or the cluster's (503).
fn state_failure(e: StateError) -> Response {
    match e {
        StateError::BadFilter(_) | StateError::UnknownKey { .. } => {
            failure(StatusCode::BAD_REQUEST, &e.to_string())
        }
        StateError::BadEvents(_) | StateError::Rpc(_) => {
            failure(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        StateError::NoFanOut => failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        StateError::NotFound(_) => failure(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

/// Ray's listing shape.
#[derive(Serialize)]
struct Rows<R> {
    total: u64,
    num_after_truncation: usize,
    dropped: u64,
    /// The nodes or processes that did not answer (Ray's name for it).
    partial_failure_warning: Vec<String>,
    result: Vec<R>,
}

fn rows<R: Serialize>(l: Listing<R>) -> Response {
    success(serde_json::json!({ "result": Rows {
        total: l.total,
        num_after_truncation: l.rows.len(),
        dropped: l.dropped,
        partial_failure_warning: l.unreachable,
        result: l.rows,
    }}))
}

/// Reads the query's options, asks the GCS with `ask`, and answers with `reply`, or with
/// what went wrong.
async fn answer<T, Fut>(
    sources: &Sources,
    query: Option<String>,
    ask: impl FnOnce(StateClient, ListOptions) -> Fut,
    reply: impl FnOnce(T) -> Response,
) -> Response
where
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let opts = match list_options(query.as_deref()) {
        Ok(opts) => opts,
        Err(msg) => return failure(StatusCode::BAD_REQUEST, &msg),
    };
    let client = match crate::state_client(sources) {
        Ok(client) => client,
        Err(e) => return state_failure(e.into()),
    };
    match ask(client, opts).await {
        Ok(value) => reply(value),
        Err(e) => state_failure(e),
    }
}

async fn tasks(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_tasks(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn actors(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_actors(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn jobs(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_jobs(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn nodes(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_nodes(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn workers(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_workers(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn objects(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.list_objects(&o).await };
    answer(&sources, query, ask, rows).await
}

async fn task_summary(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.summarize_tasks(&o).await };
    let reply = |summary| success(serde_json::json!({ "result": summary }));
    answer(&sources, query, ask, reply).await
}

/// The tasks that pass the query's filters as a Chrome trace (a JSON array of events, as
/// Perfetto loads it), without the envelope.
async fn timeline(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    let ask = |c: StateClient, o: ListOptions| async move { c.timeline(&o).await };
    let reply = |events: Vec<ray_state::TraceEvent>| axum::Json(events).into_response();
    answer(&sources, query, ask, reply).await
}

/// Why the task or actor in the path has not run, or that it has: `{"result":
/// {"id", "name", "state", "why": {"kind": .., ..}, "text"}}` (`text` as `rayrs explain`
/// prints it).
async fn explain(
    State(sources): State<Sources>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let client = match crate::state_client(&sources) {
        Ok(client) => client,
        Err(e) => return state_failure(e.into()),
    };
    match client.explain(&id).await {
        Ok(e) => {
            let text = e.to_string();
            let mut value = serde_json::to_value(&e).unwrap_or_default();
            value["text"] = serde_json::Value::String(text);
            success(serde_json::json!({ "result": value }))
        }
        Err(e) => state_failure(e),
    }
}

/// One node's object store and workers, as its node manager reported them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeUse {
    pub node_id: String,
    pub address: String,
    pub is_head: bool,
    pub num_workers: u32,
    pub store_used: u64,
    pub store_capacity: u64,
    pub objects_pulled: u64,
    /// The machine's CPU use over the last second, in percent.
    pub cpu_percent: f64,
}

/// The cluster at a glance: what the overview page and `/metrics` show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overview {
    pub nodes_alive: u32,
    pub nodes_dead: u32,
    /// Resources of the alive nodes, in all and free now, by name.
    pub resources_total: BTreeMap<String, f64>,
    pub resources_available: BTreeMap<String, f64>,
    /// Tasks by state, over every task the GCS keeps.
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Tasks by function and state.
    pub task_summary: Vec<ray_state::TaskSummary>,
    /// Task events let go of (the counts may miss tasks).
    pub task_events_dropped: u64,
    /// Actors by state, and by class and state.
    pub actors_by_state: BTreeMap<String, u64>,
    pub actors_by_class: BTreeMap<String, BTreeMap<String, u64>>,
    /// Each alive node that answered within its call's deadline.
    pub nodes: Vec<NodeUse>,
    /// Alive nodes that did not answer (their use is missing above), with why.
    pub unreachable: Vec<String>,
}

/// How long the overview waits for a node's answer: a page polls every 2 s, and Prometheus
/// gives a scrape 10 s.
pub const NODE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Gathers the overview: the GCS's nodes, tasks and actors, then each alive node's use,
/// asked of all nodes at once (each within [`NODE_DEADLINE`]; a node that does not answer in
/// time is named in `unreachable`, never waited for longer).
pub async fn overview(sources: &Sources) -> Result<Overview, StateError> {
    let client = crate::state_client(sources)?;
    let everything = ListOptions::new().limit(u32::MAX);
    let (all, one) = (ListOptions::new(), ListOptions::new().limit(1));
    let (nodes, summary, tasks, actors) = tokio::join!(
        client.list_nodes(&everything),
        client.summarize_tasks(&all),
        client.list_tasks(&one),
        client.list_actors(&everything),
    );
    let (nodes, summary, tasks, actors) = (nodes?, summary?, tasks?, actors?);
    let mut o = Overview {
        task_events_dropped: tasks.dropped,
        ..Overview::default()
    };
    let mut asks = tokio::task::JoinSet::new();
    for node in &nodes.rows {
        if node.state != "ALIVE" {
            o.nodes_dead += 1;
            continue;
        }
        o.nodes_alive += 1;
        for (name, amount) in &node.resources_total {
            *o.resources_total.entry(name.clone()).or_default() += amount;
        }
        for (name, amount) in &node.resources_available {
            *o.resources_available.entry(name.clone()).or_default() += amount;
        }
        let clock = sources.connect.clock();
        let (id, address, is_head) = (node.node_id.clone(), node.address.clone(), node.is_head);
        let nm = sources.node_manager(&address);
        asks.spawn(async move {
            let asked = match nm {
                Ok(nm) => {
                    let ask = nm.get_node_resources(ray_proto::Empty {});
                    match clock.timeout(NODE_DEADLINE, ask).await {
                        Ok(answer) => answer.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer within {NODE_DEADLINE:?}")),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match asked {
                Ok(r) => Ok(NodeUse {
                    node_id: id,
                    address,
                    is_head,
                    num_workers: r.num_workers,
                    store_used: r.store_used,
                    store_capacity: r.store_capacity,
                    objects_pulled: r.objects_pulled,
                    cpu_percent: r.cpu_percent,
                }),
                Err(e) => Err(format!("node {id} at {address}: {e}")),
            }
        });
    }
    let alive: Vec<&str> = nodes
        .rows
        .iter()
        .filter(|n| n.state == "ALIVE")
        .map(|n| n.address.as_str())
        .collect();
    sources.keep_node_managers(&alive);
    while let Some(answer) = asks.join_next().await {
        match answer {
            Ok(Ok(node)) => o.nodes.push(node),
            Ok(Err(why)) => o.unreachable.push(why),
            Err(e) => o.unreachable.push(format!("asking a node failed: {e}")),
        }
    }
    o.nodes
        .sort_by(|a, b| b.is_head.cmp(&a.is_head).then(a.node_id.cmp(&b.node_id)));
    for s in &summary {
        for (state, n) in &s.by_state {
            *o.tasks_by_state
                .entry(state.as_str().to_string())
                .or_default() += n;
        }
    }
    o.task_summary = summary;
    for a in &actors.rows {
        *o.actors_by_state.entry(a.state.clone()).or_default() += 1;
        *o.actors_by_class
            .entry(a.class_name.clone())
            .or_default()
            .entry(a.state.clone())
            .or_default() += 1;
    }
    Ok(o)
}

async fn cluster(State(sources): State<Sources>, RawQuery(query): RawQuery) -> Response {
    if query.is_some_and(|q| !q.is_empty()) {
        return failure(StatusCode::BAD_REQUEST, "the overview takes no parameters");
    }
    match overview(&sources).await {
        Ok(o) => success(o),
        Err(e) => state_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_filters_and_limits() {
        let opts = list_options(Some("filter=state%3DRUNNING&filter=name!%3Df&limit=7")).unwrap();
        assert_eq!(opts.filters.len(), 2);
        assert_eq!(opts.limit, Some(7));
        let ray = list_options(Some(
            "filter_keys=state&filter_predicates=%3D&filter_values=FAILED&detail=1",
        ))
        .unwrap();
        assert_eq!(ray.filters.len(), 1);
        assert_eq!(list_options(None).unwrap().filters.len(), 0);
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let err = |q: &str| list_options(Some(q)).unwrap_err();
        assert!(err("limit=many").contains("whole number"));
        assert!(err("filtre=state%3DRUNNING").contains("unknown parameter \"filtre\""));
        assert!(err("filter_keys=state").contains("threes"));
        assert!(err("filter_keys=a&filter_predicates=%3E&filter_values=1").contains("predicate"));
        assert!(err("filter=state").contains("bad filter"));
    }
}
