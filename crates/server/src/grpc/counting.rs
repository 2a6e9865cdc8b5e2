//! Counts gRPC calls per method and status code (`grpc_server_started_total`,
//! `grpc_server_handled_total`), as a middleware around the gRPC routes.
//!
//! A call is handled when its status is known: at once for an error
//! answered in the response headers, otherwise from the trailers that end
//! the response body, so a stream counts when it ends, not when it opens.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::metrics::{GrpcMetrics, HandledGuard};

/// The layer to put around the gRPC routes (a plain tower layer rather than
/// an axum middleware function: it adds no allocation of its own to a call).
#[derive(Clone)]
pub struct CountingLayer {
    metrics: Arc<GrpcMetrics>,
}

impl CountingLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<GrpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A gRPC service with its calls counted.
#[derive(Clone)]
pub struct Counting<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S> tower::Service<Request> for Counting<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CountingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let guard = self
            .metrics
            .method(request.uri().path())
            .map(HandledGuard::start);
        CountingFuture {
            inner: self.inner.call(request),
            guard,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a counted call, on its way.
    pub struct CountingFuture<F> {
        #[pin]
        inner: F,
        guard: Option<HandledGuard>,
    }
}

impl<F> Future for CountingFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        let Some(mut guard) = this.guard.take() else {
            return Poll::Ready(Ok(response));
        };
        if let Some(code) = grpc_status(response.headers()) {
            guard.finish(code);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(
            response.map(|inner| Body::new(CountedBody { inner, guard }))
        ))
    }
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
