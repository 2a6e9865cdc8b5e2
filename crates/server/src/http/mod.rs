//! HTTP on the client port, next to gRPC, as etcd serves it.
//!
//! - [`gateway`]: etcd's JSON gateway (`POST /v3/...`), calling the very
//!   service instances gRPC calls.
//! - [`health`]: `GET /health`.
//! - [`metrics`]: `GET /metrics`.
//! - `GET /version` is answered here.
//! - [`ready`]: holds gRPC and gateway requests until this member's name
//!   and client URLs are published.
//! - [`authority`]: repairs the `:authority` of Go clients that dial a URL,
//!   on every connection these listeners accept.
//!
//! One router holds the gRPC routes (`/etcdserverpb.KV/Range`, ...) and the
//! HTTP ones; tonic's server, with HTTP/1.1 accepted, serves it on the client
//! listener, so gRPC (HTTP/2), the gateway over HTTP/1.1 and h2c share the
//! port. Anything else answers gRPC's Unimplemented to a gRPC client and 404
//! to others. `--listen-metrics-urls` listeners serve `/metrics` and
//! `/health` only.

pub mod authority;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod ready;

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, StatusCode};

use crate::grpc::{counting, ServiceContext, Services};
use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The member's service context (node, store, limits).
    pub ctx: ServiceContext,
    /// The member's metrics.
    pub metrics: Arc<Metrics>,
}

/// The client port's routes: `grpc` (counted per method), the JSON gateway
/// over `services` with request bodies of at most `gateway_body_bytes_max`,
/// `/health`, `/version` and `/metrics`.
pub fn client_routes(
    grpc: tonic::service::Routes,
    services: &Services,
    state: HttpState,
    gateway_body_bytes_max: usize,
) -> tonic::service::Routes {
    let hold =
        axum::middleware::from_fn_with_state(state.ctx.client_gate.clone(), ready::hold_until_open);
    let grpc = grpc
        .into_axum_router()
        .layer(counting::CountingLayer::new(state.metrics.grpc.clone()))
        .layer(hold.clone());
    let gateway =
        gateway::routes(services, state.metrics.grpc.clone(), gateway_body_bytes_max).layer(hold);
    let plain = Router::new()
        .route("/health", get(health::health))
        .route("/version", get(version))
        .route("/metrics", get(metrics::metrics))
        .with_state(state);
    tonic::service::Routes::from(grpc.merge(gateway).merge(plain).fallback(fallback))
}

/// The routes of a `--listen-metrics-urls` listener.
pub fn metrics_routes(state: HttpState) -> tonic::service::Routes {
    let router = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
        .fallback(fallback);
    tonic::service::Routes::from(router)
}

/// Serves `routes` over HTTP/1.1 and HTTP/2 on `listener` (through a TLS
/// handshake when `tls` is given, see [`crate::tls::listen`]) until
/// `shutdown` resolves; connections in flight then finish. A Go client's URL
/// in `:authority` is repaired on the way in (see [`authority`]), under TLS
/// when there is TLS. Requests carry their connection's verified client
/// certificate (see [`crate::tls::carry_client_certificate`]).
pub async fn serve(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::listen::ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt as _;
    let incoming = crate::tls::listen::incoming(listener, tls)
        .map(|accepted| accepted.map(authority::AuthorityRepair::new));
    // Every route (gRPC, the gateway, /health, /metrics) sees the verified
    // client certificate of its connection, for auth to read.
    let routes = tonic::service::Routes::from(routes.into_axum_router().layer(
        axum::middleware::from_fn(crate::tls::carry_client_certificate),
    ));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Whether a request speaks gRPC.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn fallback(headers: HeaderMap) -> Response {
    if is_grpc(&headers) {
        return tonic::Status::unimplemented("").into_http::<Body>();
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// `GET /version`'s answer.
#[derive(serde::Serialize)]
struct Versions {
    etcdserver: &'static str,
    etcdcluster: String,
}

/// `GET /version`: the etcd version this member reports, and the cluster
/// version (its major.minor, as etcd's cluster version is).
async fn version() -> Response {
    let server = crate::grpc::maintenance::ETCD_VERSION;
    let versions = Versions {
        etcdserver: server,
        etcdcluster: cluster_version(server),
    };
    match serde_json::to_string(&versions) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// `3.5.13` → `3.5.0`.
fn cluster_version(server: &str) -> String {
    let mut parts = server.split('.');
    let major = parts.next().unwrap_or("0");
    let minor = parts.next().unwrap_or("0");
    format!("{major}.{minor}.0")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cluster_version_is_the_servers_major_minor() {
        assert_eq!(super::cluster_version("3.5.13"), "3.5.0");
        assert_eq!(super::cluster_version("3.4.23"), "3.4.0");
    }
}
