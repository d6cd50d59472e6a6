//! Health checks of the nodes: the GCS calls each alive node's node manager every period
//! and declares the node dead after a number of failures in a row (each a refused call, an
//! error, or no answer within the timeout), as Ray's `GcsHealthCheckManager` does. A dead
//! node leaves the cluster view (node managers stop sending work there) and its actors
//! restart elsewhere or die.
//!
//! Invariant: a node is declared dead once, and never comes back under the same id (a node
//! that restarts joins anew, with a new id).

use crate::GcsService;
use ray_proto::Empty;
use std::time::Duration;

/// When and how often nodes are checked; Ray's names and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// `RAY_health_check_initial_delay_ms`: from a node's registration to its first check.
    pub initial_delay: Duration,
    /// `RAY_health_check_period_ms`: between checks.
    pub period: Duration,
    /// `RAY_health_check_timeout_ms`: a check not answered within this failed.
    pub timeout: Duration,
    /// `RAY_health_check_failure_threshold`: failures in a row that make a node dead.
    pub failure_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            initial_delay: Duration::from_millis(5000),
            period: Duration::from_millis(3000),
            timeout: Duration::from_millis(10_000),
            failure_threshold: 5,
        }
    }
}

impl HealthConfig {
    /// Ray's defaults, with any of Ray's `RAY_health_check_*` variables `get` returns
    /// applied; a value that is not a number is an error naming it.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = HealthConfig::default();
        let number = |name: &str| -> Result<Option<u64>, String> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name}={v} is not a whole number"))
                })
                .transpose()
        };
        if let Some(ms) = number("RAY_health_check_initial_delay_ms")? {
            c.initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = number("RAY_health_check_period_ms")? {
            c.period = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = number("RAY_health_check_timeout_ms")? {
            c.timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = number("RAY_health_check_failure_threshold")? {
            c.failure_threshold = n.clamp(1, u64::from(u32::MAX)) as u32;
        }
        Ok(c)
    }
}

impl GcsService {
    /// Checks node `node_id` (at the node manager address it last registered) until it is
    /// dead or the GCS is dropped. Once per node: a node registering again under its id
    /// keeps its watch.
    pub(crate) fn watch_health(&self, node_id: Vec<u8>) {
        let Some(config) = self.inner.health.clone() else {
            return;
        };
        let weak = std::sync::Arc::downgrade(&self.inner);
        let clock = self.inner.connect.clock();
        tokio::spawn(async move {
            clock.sleep(config.initial_delay).await;
            let mut failures = 0u32;
            let mut last_error = String::new();
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let gcs = GcsService { inner };
                let Some(address) = gcs.alive_address(&node_id) else {
                    return; // Declared dead already.
                };
                let nm = gcs.node_manager(&address);
                drop(gcs);
                let answer = match nm {
                    Ok(nm) => match clock
                        .timeout(config.timeout, nm.get_node_resources(Empty {}))
                        .await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {:?}", config.timeout)),
                    },
                    Err(e) => Err(e.to_string()),
                };
                match answer {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        last_error = e;
                    }
                }
                if failures >= config.failure_threshold {
                    let Some(inner) = weak.upgrade() else { return };
                    let reason = format!(
                        "missed {failures} health checks in a row (the last: {last_error})"
                    );
                    GcsService { inner }.node_died(&node_id, &reason);
                    return;
                }
                clock.sleep(config.period).await;
            }
        });
    }

    fn alive_address(&self, node_id: &[u8]) -> Option<String> {
        let state = self.inner.state.lock();
        let node = state
            .nodes
            .iter()
            .find(|n| n.node_id == node_id && n.alive)?;
        Some(node.node_manager_address.clone())
    }

    /// Declares node `node_id` dead for `reason`: out of the view, its actors restarted
    /// elsewhere or dead.
    pub(crate) fn node_died(&self, node_id: &[u8], reason: &str) {
        let address = {
            let mut state = self.inner.state.lock();
            let Some(index) = state
                .nodes
                .iter()
                .position(|n| n.node_id == node_id && n.alive)
            else {
                return;
            };
            let node = &mut state.nodes[index];
            node.alive = false;
            node.death_reason = reason.to_string();
            let address = node.node_manager_address.clone();
            state
                .view
                .set_alive(ray_scheduler::NodeId(index as u64), false);
            self.view_moved(&mut state);
            (address, index)
        };
        let (address, index) = address;
        tracing::warn!(node = %ray_common::ids::hex(node_id), %address, %reason, "node declared dead");
        self.actors_lost_with_node(&address, node_id);
        self.groups_lost_with_node(index);
        // Jobs whose driver was attached to that node end: nobody would finish them.
        let jobs: Vec<u32> = {
            let state = self.inner.state.lock();
            state
                .jobs
                .values()
                .filter(|j| j.driver_node[..] == *node_id)
                .map(|j| j.job_id)
                .collect()
        };
        for job_id in jobs {
            tracing::warn!(
                job = job_id,
                "the job's driver was attached to a dead node; finishing the job"
            );
            let me = self.clone();
            tokio::spawn(async move { me.finish(job_id).await });
        }
    }
}
