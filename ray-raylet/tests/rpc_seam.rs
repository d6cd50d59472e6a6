//! The node manager's store calls through the client seam (`ray_common::rpc`), against its
//! real gRPC service on a loopback port, with fault filters: what the caller sees and what
//! the node manager did when a request or a response is lost.

use ray_common::rpc::{
    Connect, Filters, NodeManagerApi, OnMethod, RpcErrorKind, TonicConnect, Verdict,
};
use ray_object_store::{ObjectStore, StoreConfig};
use ray_proto::{CreateObjectRequest, ObjectRequest};
use ray_raylet::{NodeManager, NodeManagerConfig, NodeManagerServer, ProcessLauncher};
use std::sync::Arc;

const TOKEN: &str = "test-token";

/// A node manager serving on a fresh loopback port; stops when the returned sender drops.
async fn node_manager(
    connect: Arc<dyn Connect>,
) -> (String, NodeManager, tokio::sync::oneshot::Sender<()>) {
    let config = NodeManagerConfig {
        node_id: ray_common::NodeId::random(),
        resources: ray_scheduler::ResourceSet::cpus(1.0).unwrap(),
        token: TOKEN.into(),
        session: "rpc-seam-test".into(),
        gcs_address: "127.0.0.1:1".into(),
        max_workers: 4,
        limit_wait: std::time::Duration::from_secs(1),
        infeasible_waits: false,
        binary_cache: None,
        log_dir: None,
    };
    let store =
        ObjectStore::create_anonymous(StoreConfig::new("rpc-seam-test").with_capacity(1 << 20))
            .unwrap();
    let node = NodeManager::new(config, store, connect, Arc::new(ProcessLauncher));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tonic::service::interceptor::InterceptedService::new(
        NodeManagerServer::new(node.clone()),
        ray_proto::auth::CheckToken::new(TOKEN),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (address, node, stop)
}

fn object(n: u8) -> Vec<u8> {
    vec![n; 16]
}

#[tokio::test]
async fn a_lost_response_leaves_the_call_done_and_a_lost_request_leaves_it_undone() {
    let filters = Arc::new(Filters::default());
    let connect = Arc::new(
        TonicConnect::new(TOKEN)
            .labelled("test")
            .with_filters(filters.clone()),
    );
    let (address, _node, _stop) = node_manager(connect.clone()).await;
    let nm: Arc<dyn NodeManagerApi> = connect.node_manager(&address).unwrap();

    let create = |id: u8| CreateObjectRequest {
        object_id: object(id).into(),
        size: 64,
    };
    let seal = |id: u8| ObjectRequest {
        client_pid: 0,
        object_id: object(id).into(),
    };

    // The seal's answer is lost: the caller sees the peer unreachable, the object is sealed.
    nm.create_object(create(1)).await.unwrap();
    filters.install(OnMethod::new("SealObject", Verdict::DropResponse).times(1));
    let lost = nm.seal_object(seal(1)).await.unwrap_err();
    assert_eq!(lost.kind, RpcErrorKind::Unreachable, "{lost}");
    assert!(lost.is_transient());
    let found = nm.get_object(seal(1)).await.unwrap();
    assert!(found.found, "the seal reached the node manager");

    // The seal never goes out: the object stays unsealed, so a reader does not find it.
    nm.create_object(create(2)).await.unwrap();
    filters.install(OnMethod::new("SealObject", Verdict::DropRequest).times(1));
    assert!(nm.seal_object(seal(2)).await.is_err());
    assert!(!nm.get_object(seal(2)).await.unwrap().found);
    nm.seal_object(seal(2)).await.unwrap();
    assert!(nm.get_object(seal(2)).await.unwrap().found);

    // A failure with a kind: the kind survives, the node manager never sees the call.
    filters.install(
        OnMethod::new(
            "CreateObject",
            Verdict::Fail(RpcErrorKind::Exhausted, "store full (filter)".into()),
        )
        .times(1),
    );
    let full = nm.create_object(create(3)).await.unwrap_err();
    assert_eq!(full.kind, RpcErrorKind::Exhausted);
    assert_eq!(full.message, "store full (filter)");
    nm.create_object(create(3)).await.unwrap();

    // The node manager's own refusals keep their kind across the wire.
    let again = nm.create_object(create(3)).await.unwrap_err();
    assert_eq!(again.kind, RpcErrorKind::AlreadyExists, "{again}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_its_kind() {
    let (address, _node, _stop) = node_manager(Arc::new(TonicConnect::new(TOKEN))).await;
    let stranger = TonicConnect::new("not-the-token")
        .node_manager(&address)
        .unwrap();
    let refused = stranger
        .get_node_resources(ray_proto::Empty {})
        .await
        .unwrap_err();
    assert_eq!(refused.kind, RpcErrorKind::Unauthenticated, "{refused}");
    assert!(!refused.is_transient());
}

#[tokio::test]
async fn a_delayed_call_goes_out_late() {
    let filters = Arc::new(Filters::default());
    let connect = Arc::new(TonicConnect::new(TOKEN).with_filters(filters.clone()));
    let (address, _node, _stop) = node_manager(connect.clone()).await;
    let nm = connect.node_manager(&address).unwrap();
    filters.install(OnMethod::new(
        "GetNodeResources",
        Verdict::Delay(std::time::Duration::from_millis(300)),
    ));
    let started = std::time::Instant::now();
    nm.get_node_resources(ray_proto::Empty {}).await.unwrap();
    // A lower bound only: the delay is a sleep before the call goes out.
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}
