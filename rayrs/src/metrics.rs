//! The node process's own metrics: the libraries record through the `metrics` facade; this
//! binary (never a library: the recorder is the process's one global) installs a Prometheus
//! recorder, and the head's dashboard appends its text to `/metrics`.

use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::Arc;

/// Installs the recorder and returns what renders it; without one (another was installed
/// first, which this program never does), renders nothing.
pub fn install() -> Arc<dyn Fn() -> String + Send + Sync> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Arc::new(move || handle.render()),
        Err(e) => {
            tracing::warn!("the node's own metrics are off: {e}");
            Arc::new(String::new)
        }
    }
}
