//! Counts gRPC calls per method and status code (`grpc_server_started_total`,
//! `grpc_server_handled_total`), as a middleware around the gRPC routes.
//!
//! A call is handled when its status is known: at once for an error
//! answered in the response headers, otherwise from the trailers that end
//! the response body, so a stream counts when it ends, not when it opens.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::metrics::{GrpcMetrics, HandledGuard};

/// The middleware: pass it to `axum::middleware::from_fn_with_state` with
/// the member's [`GrpcMetrics`].
pub async fn count(
    State(metrics): State<Arc<GrpcMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(counters) = metrics.method(request.uri().path()) else {
        return next.run(request).await;
    };
    let mut guard = HandledGuard::start(counters);
    let response = next.run(request).await;
    if let Some(code) = grpc_status(response.headers()) {
        guard.finish(code);
        return response;
    }
    response.map(|inner| Body::new(CountedBody { inner, guard }))
}

/// The status a gRPC response or trailer block carries, if any.
fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.parse().ok()?))
}

/// A response body that records the call's status when its trailers pass.
struct CountedBody {
    inner: Body,
    guard: HandledGuard,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.guard.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.guard.finish(tonic::Code::Unknown),
            // A body that ends without a status was cut short: the guard
            // counts it as cancelled when dropped.
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
