//! The dashboard (Ray's, on port 8265): an HTTP server on the head that serves the state API
//! as JSON under `/api/v0/`, Prometheus metrics on `/metrics`, and the pages that show them.
//!
//! Layers, each using only those above it: [`reply`] (the JSON envelope, Ray's), [`auth`]
//! (the token check every data route passes), [`api`] (the JSON routes, over a [`ray_state::StateClient`]), [`metrics`] (the
//! Prometheus text, drawn from the same state), [`jobs`] (Ray's job submission API, over a
//! [`jobs::JobManager`] handed in), [`pages`] (the page shell and its script),
//! then [`Dashboard`], which binds and serves them.
//!
//! Invariant: no route that answers with the cluster's data answers without the cluster's
//! token (`Authorization: Bearer`; 401 when it is missing, 403 when it is wrong), and neither
//! does a path no route serves. Only the page shell (HTML, script, style: no data) is open,
//! so that a browser can load it and ask for the token.

pub mod api;
pub mod auth;
pub mod jobs;
pub mod metrics;
pub mod pages;
pub mod reply;

use axum::Router;
use ray_common::rpc::{Connect, GcsApi, NodeManagerApi, RpcError};
use ray_state::StateClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Ray's dashboard port.
pub const DEFAULT_PORT: u16 = 8265;

/// What the dashboard can fail to start with.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address could not be bound (in use, not this machine's, no permission).
    #[error("the dashboard could not listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where the dashboard listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// Exactly this address: failing to bind it fails the start.
    Exact(SocketAddr),
    /// This address if it is free, else any free port of its host, with a warning (a second
    /// local session on a machine whose 8265 is taken still gets a dashboard).
    Preferred(SocketAddr),
}

/// What the dashboard reads its data from: the cluster's GCS and, through `connect`, its
/// node managers and processes. Its clients are opened once and kept (a page polls every
/// 2 s).
#[derive(Clone)]
pub struct Sources {
    connect: Arc<dyn Connect>,
    gcs_address: String,
    extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    gcs: Arc<std::sync::OnceLock<Arc<dyn GcsApi>>>,
    node_managers: Arc<std::sync::Mutex<HashMap<String, Arc<dyn NodeManagerApi>>>>,
    /// Runs submitted jobs (a cluster's head; `None`: no job API).
    jobs: Option<Arc<dyn jobs::JobManager>>,
}

impl Sources {
    /// Sources reached through `connect` (which carries the cluster's token): the GCS at
    /// `gcs_address`, and the nodes it lists. `extra_metrics`: Prometheus text appended to
    /// `/metrics` at each scrape, a process's own exporter when its binary installed one
    /// (the runtime never installs a global recorder: that belongs to the program).
    pub fn new(
        connect: Arc<dyn Connect>,
        gcs_address: String,
        extra_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> Self {
        Sources {
            connect,
            gcs_address,
            extra_metrics,
            gcs: Default::default(),
            node_managers: Default::default(),
            jobs: None,
        }
    }

    /// The same sources, with `jobs` running what `/api/jobs/` submits.
    pub fn with_jobs(mut self, jobs: Arc<dyn jobs::JobManager>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// The GCS's client, opened on first use.
    fn gcs(&self) -> Result<Arc<dyn GcsApi>, ray_common::rpc::RpcError> {
        if let Some(gcs) = self.gcs.get() {
            return Ok(gcs.clone());
        }
        let gcs = self.connect.gcs(&self.gcs_address)?;
        Ok(self.gcs.get_or_init(|| gcs).clone())
    }

    /// The client of the node manager at `address`, opened on first use.
    fn node_manager(&self, address: &str) -> Result<Arc<dyn NodeManagerApi>, RpcError> {
        let mut known = self.node_managers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(nm) = known.get(address) {
            return Ok(nm.clone());
        }
        let nm = self.connect.node_manager(address)?;
        known.insert(address.to_string(), nm.clone());
        Ok(nm)
    }

    /// Forgets the clients of node managers not at `alive` (nodes that died or left).
    fn keep_node_managers(&self, alive: &[&str]) {
        let mut known = self.node_managers.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|address, _| alive.contains(&address.as_str()));
    }
}

/// A running dashboard; stopped by [`Dashboard::stop`] or when dropped.
pub struct Dashboard {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Dashboard {
    /// Binds `bind` and serves the dashboard there on the current tokio runtime, every data
    /// route checked against `token`.
    ///
    /// ```no_run
    /// # async fn f(sources: ray_dashboard::Sources) -> Result<(), ray_dashboard::DashboardError> {
    /// use ray_dashboard::{Bind, Dashboard, DEFAULT_PORT};
    /// let bind = Bind::Preferred(([127, 0, 0, 1], DEFAULT_PORT).into());
    /// let dashboard = Dashboard::serve(bind, "the-clusters-token", sources).await?;
    /// println!("dashboard at {}", dashboard.url());
    /// # Ok(()) }
    /// ```
    pub async fn serve(
        bind: Bind,
        token: &str,
        sources: Sources,
    ) -> Result<Dashboard, DashboardError> {
        let listener = match bind {
            Bind::Exact(address) => listen(address).await?,
            Bind::Preferred(address) => match listen(address).await {
                Ok(listener) => listener,
                Err(e) => {
                    let any = SocketAddr::new(address.ip(), 0);
                    // No port of that host at all: the first failure says why.
                    let Ok(listener) = listen(any).await else {
                        return Err(e);
                    };
                    tracing::warn!(
                        "{e}; the dashboard listens on {} instead",
                        listener.local_addr().map_or(any, |a| a)
                    );
                    listener
                }
            },
        };
        let address = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                address: SocketAddr::new(bind_address(bind).ip(), 0),
                source,
            })?;
        let app = router(token, sources);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!("the dashboard stopped: {e}");
            }
        });
        tracing::info!("dashboard at http://{address}");
        Ok(Dashboard {
            address,
            stop: Some(stop),
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its address as a URL (`http://HOST:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving (connections in flight finish their request).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_address(bind: Bind) -> SocketAddr {
    match bind {
        Bind::Exact(a) | Bind::Preferred(a) => a,
    }
}

async fn listen(address: SocketAddr) -> Result<tokio::net::TcpListener, DashboardError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DashboardError::Bind { address, source })
}

/// Every route: the data routes behind the token check (with the fallback, so that an
/// unknown path says nothing to a peer without the token), then the open page shell.
pub fn router(token: &str, sources: Sources) -> Router {
    let data = api::routes(sources.clone())
        .merge(jobs::routes(sources.jobs.clone()))
        .merge(metrics::routes(sources))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            auth::Token::new(token),
            auth::require_token,
        ));
    data.merge(pages::routes())
}

/// The state client of `sources`.
fn state_client(sources: &Sources) -> Result<StateClient, RpcError> {
    Ok(StateClient::with_fan_out(
        sources.gcs()?,
        sources.connect.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        let connect = Arc::new(ray_common::rpc::TonicConnect::new(
            "a-token-nobody-asks-for",
        ));
        Sources::new(connect, "127.0.0.1:1".into(), None)
    }

    #[tokio::test]
    async fn a_taken_preferred_port_gives_way_and_a_taken_exact_one_fails() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let mut moved = Dashboard::serve(Bind::Preferred(address), "t", sources())
            .await
            .unwrap();
        assert_ne!(moved.address(), address);
        assert_eq!(moved.address().ip(), address.ip());
        moved.stop();
        let refused = Dashboard::serve(Bind::Exact(address), "t", sources()).await;
        assert!(
            matches!(&refused, Err(DashboardError::Bind { address: a, .. }) if *a == address),
            "{:?}",
            refused.err()
        );
        // Not an address of this machine: the preferred one's failure is the one told.
        let elsewhere: SocketAddr = "192.0.2.1:8265".parse().unwrap();
        let refused = Dashboard::serve(Bind::Preferred(elsewhere), "t", sources()).await;
        assert!(
            matches!(&refused, Err(DashboardError::Bind { address: a, .. }) if *a == elsewhere),
            "{:?}",
            refused.err()
        );
    }
}
