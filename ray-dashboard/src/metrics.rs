//! `/metrics`: the cluster's state as Prometheus text, with Ray's metric names where Ray has
//! one (`ray_tasks`, `ray_actors`, `ray_resources`, `ray_object_store_memory`,
//! `ray_cluster_active_nodes`) and `rayrs_` names for the rest.
//!
//! Each scrape records into a recorder of its own (never the process's global one, which
//! belongs to the program), then renders it: a label whose count went away is not reported
//! with a stale value.

use crate::api::{overview, Overview};
use crate::reply::failure;
use crate::Sources;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The route.
pub fn routes(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(sources)
}

async fn scrape(State(sources): State<Sources>) -> Response {
    let o = match overview(&sources).await {
        Ok(o) => o,
        Err(e) => return failure(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut text = render(&o);
    if let Some(extra) = &sources.extra_metrics {
        text.push_str(&extra());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The overview as Prometheus text.
///
/// ```
/// let mut o = ray_dashboard::api::Overview::default();
/// o.tasks_by_state.insert("RUNNING".into(), 3);
/// o.nodes_alive = 1;
/// let text = ray_dashboard::metrics::render(&o);
/// assert!(text.contains("ray_cluster_active_nodes 1"));
/// ```
pub fn render(o: &Overview) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || record(o));
    handle.render()
}

fn record(o: &Overview) {
    describe_gauge!(
        "ray_tasks",
        "Tasks by function and state, over the tasks the GCS keeps."
    );
    for s in &o.task_summary {
        for (state, n) in &s.by_state {
            // Added, not set: two functions of different modules may share a short name.
            gauge!("ray_tasks", "State" => state.as_str(), "Name" => s.name.clone())
                .increment(*n as f64);
        }
    }
    describe_gauge!("ray_actors", "Actors by class and state.");
    for (class, states) in &o.actors_by_class {
        for (state, n) in states {
            gauge!("ray_actors", "State" => state.clone(), "Name" => class.clone()).set(*n as f64);
        }
    }
    describe_gauge!(
        "ray_resources",
        "Logical resources of the alive nodes, used and available."
    );
    for (name, total) in &o.resources_total {
        let available = o.resources_available.get(name).copied().unwrap_or(0.0);
        gauge!("ray_resources", "Name" => name.clone(), "State" => "AVAILABLE").set(available);
        gauge!("ray_resources", "Name" => name.clone(), "State" => "USED")
            .set((total - available).max(0.0));
    }
    describe_gauge!("ray_cluster_active_nodes", "Alive nodes.");
    gauge!("ray_cluster_active_nodes").set(o.nodes_alive as f64);
    describe_gauge!("rayrs_cluster_dead_nodes", "Nodes that died or left.");
    gauge!("rayrs_cluster_dead_nodes").set(o.nodes_dead as f64);
    describe_gauge!(
        "ray_object_store_memory",
        "Bytes of objects in a node's shared-memory store."
    );
    describe_gauge!(
        "ray_object_store_available_memory",
        "Bytes free in a node's shared-memory store."
    );
    describe_gauge!(
        "ray_node_cpu_utilization",
        "Percent of a node's machine's CPUs busy over the last second."
    );
    describe_gauge!("rayrs_node_workers", "Worker processes of a node.");
    describe_gauge!(
        "rayrs_node_objects_pulled",
        "Objects a node pulled from other nodes since it started."
    );
    for n in &o.nodes {
        let id = n.node_id.clone();
        gauge!("ray_object_store_memory", "Location" => "MMAP_SHM", "NodeId" => id.clone())
            .set(n.store_used as f64);
        gauge!("ray_object_store_available_memory", "NodeId" => id.clone())
            .set(n.store_capacity.saturating_sub(n.store_used) as f64);
        gauge!("ray_node_cpu_utilization", "NodeId" => id.clone()).set(n.cpu_percent);
        gauge!("rayrs_node_workers", "NodeId" => id.clone()).set(n.num_workers as f64);
        gauge!("rayrs_node_objects_pulled", "NodeId" => id).set(n.objects_pulled as f64);
    }
    describe_gauge!(
        "rayrs_unreachable_nodes",
        "Alive nodes that did not answer this scrape in time."
    );
    gauge!("rayrs_unreachable_nodes").set(o.unreachable.len() as f64);
    describe_gauge!(
        "rayrs_task_events_dropped",
        "Task events let go of (a full buffer, or past the bound per job)."
    );
    gauge!("rayrs_task_events_dropped").set(o.task_events_dropped as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeUse;
    use ray_state::{TaskState, TaskSummary};

    #[test]
    fn the_overview_renders_with_rays_names_and_labels() {
        let mut o = Overview {
            nodes_alive: 2,
            nodes_dead: 1,
            ..Overview::default()
        };
        o.task_summary.push(TaskSummary {
            name: "square".into(),
            func_or_class_name: "app::square".into(),
            total: 4,
            by_state: [(TaskState::Finished, 3), (TaskState::Running, 1)].into(),
        });
        // Another module's `square`: its counts add to the same labels.
        o.task_summary.push(TaskSummary {
            name: "square".into(),
            func_or_class_name: "app::other::square".into(),
            total: 1,
            by_state: [(TaskState::Finished, 1)].into(),
        });
        o.actors_by_class
            .insert("Counter".into(), [("ALIVE".to_string(), 2)].into());
        o.resources_total.insert("CPU".into(), 4.0);
        o.resources_available.insert("CPU".into(), 1.0);
        o.nodes.push(NodeUse {
            node_id: "ab".into(),
            store_used: 100,
            store_capacity: 1000,
            num_workers: 3,
            ..NodeUse::default()
        });
        let text = render(&o);
        for line in [
            "ray_tasks{State=\"FINISHED\",Name=\"square\"} 4",
            "ray_tasks{State=\"RUNNING\",Name=\"square\"} 1",
            "ray_actors{State=\"ALIVE\",Name=\"Counter\"} 2",
            "ray_resources{Name=\"CPU\",State=\"USED\"} 3",
            "ray_resources{Name=\"CPU\",State=\"AVAILABLE\"} 1",
            "ray_cluster_active_nodes 2",
            "rayrs_cluster_dead_nodes 1",
            "ray_object_store_memory{Location=\"MMAP_SHM\",NodeId=\"ab\"} 100",
            "ray_object_store_available_memory{NodeId=\"ab\"} 900",
            "rayrs_node_workers{NodeId=\"ab\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(text.contains("# HELP ray_tasks"));
    }
}
