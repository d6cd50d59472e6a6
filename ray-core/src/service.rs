//! gRPC servers of a process: the core-worker service every driver and worker runs (owners
//! answer borrowers here), and the helper that starts any of the runtime's servers.

use crate::error::{Error, Result};
use crate::ids::{id16, ObjectId};
use crate::memory_store::{Stored, Subscribed, Waiter};
use crate::runtime;
use ray_proto::auth::CheckToken;
use ray_proto::core_worker_server::{CoreWorker, CoreWorkerServer};
use ray_proto::{Empty, GetObjectStatusReply, GetObjectStatusRequest, RemoveBorrowerRequest};
use std::sync::Arc;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

/// Starts `routes` on a fresh loopback port. Returns the address and a sender that stops it.
pub(crate) async fn serve(routes: Routes) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::runtime)?;
    let address = listener.local_addr().map_err(Error::runtime)?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Nagle off on accepted sockets: small replies must not wait for a delayed ACK (the
    // builder's tcp_nodelay does not reach sockets from a listener we bound ourselves).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((address, stop))
}

/// The core-worker service of this process, guarded by the session token.
pub(crate) fn core_worker_routes(token: &str) -> Routes {
    let server = CoreWorkerServer::new(CoreWorkerService)
        .max_decoding_message_size(ray_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(ray_proto::MAX_MESSAGE_BYTES);
    Routes::new(tonic::service::interceptor::InterceptedService::new(
        server,
        logged(CheckToken::new(token)),
    ))
}

/// Wraps a token check so that every refusal is logged.
pub(crate) fn logged(
    mut check: CheckToken,
) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        use tonic::service::Interceptor;
        check.call(req).inspect_err(|s| {
            tracing::warn!(
                reason = s.message(),
                "refused a connection without the session token"
            );
        })
    }
}

struct CoreWorkerService;

fn object_id(raw: &[u8]) -> std::result::Result<ObjectId, Status> {
    id16(raw, "object id")
        .map(ObjectId)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl CoreWorker for CoreWorkerService {
    async fn create_actor(
        &self,
        req: Request<ray_proto::CreateActorRequest>,
    ) -> std::result::Result<Response<ray_proto::CreateActorReply>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("CreateActor without a spec"))?;
        let reply = match crate::worker::create_actor(spec).await {
            Ok(()) => ray_proto::CreateActorReply {
                ok: true,
                error: None,
            },
            Err(e) => ray_proto::CreateActorReply {
                ok: false,
                error: Some(e.to_proto()),
            },
        };
        Ok(Response::new(reply))
    }

    async fn get_object_status(
        &self,
        req: Request<GetObjectStatusRequest>,
    ) -> std::result::Result<Response<GetObjectStatusReply>, Status> {
        let id = object_id(&req.into_inner().object_id)?;
        let rt = runtime::current().map_err(|e| Status::unavailable(e.to_string()))?;
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let stored = match rt.store.subscribe(id, Waiter::Async(tx), false) {
                Subscribed::Ready(v) => v,
                Subscribed::Unknown => Stored::Failed(Arc::new(Error::ObjectLost(id.to_hex()))),
                Subscribed::Pending { .. } => {
                    if rx.recv().await.is_none() {
                        // The slot went away: the object was freed while we waited.
                        let lost = Stored::Failed(Arc::new(Error::ObjectLost(id.to_hex())));
                        return Ok(Response::new(GetObjectStatusReply {
                            value: Some(lost.to_proto()),
                        }));
                    }
                    continue;
                }
            };
            return Ok(Response::new(GetObjectStatusReply {
                value: Some(stored.to_proto()),
            }));
        }
    }

    async fn add_borrower(
        &self,
        req: Request<ray_proto::AddBorrowerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let id = object_id(&req.object_id)?;
        let rt = runtime::current().map_err(|e| Status::unavailable(e.to_string()))?;
        rt.refs.add_borrower(id, req.borrower_address.into());
        Ok(Response::new(Empty {}))
    }

    async fn remove_borrower(
        &self,
        req: Request<RemoveBorrowerRequest>,
    ) -> std::result::Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let rt = runtime::current().map_err(|e| Status::unavailable(e.to_string()))?;
        let single = (!req.object_id.is_empty()).then_some(&req.object_id);
        for raw in single.into_iter().chain(req.object_ids.iter()) {
            let id = object_id(raw)?;
            if let Some(release) = rt.refs.remove_borrower(id, &req.borrower_address) {
                rt.apply_release(release);
            }
        }
        Ok(Response::new(Empty {}))
    }
}
