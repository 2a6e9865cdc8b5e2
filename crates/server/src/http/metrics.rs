//! `GET /metrics`: the member's metrics in Prometheus' text format, after
//! refreshing the figures read from the store and the process.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};

use super::HttpState;
use crate::metrics::{StoreGauges, CONTENT_TYPE};

/// The handler.
pub async fn metrics(State(state): State<HttpState>) -> Response {
    refresh(&state.metrics.store, &state.ctx.store);
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

fn refresh(gauges: &StoreGauges, store: &raftkv_mvcc::Store) {
    let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match store.disk_usage() {
        Ok(usage) => {
            gauges.db_total_size_bytes.set(as_gauge(usage.file_bytes));
            gauges.db_in_use_bytes.set(as_gauge(usage.in_use_bytes));
        }
        Err(err) => tracing::warn!(%err, "cannot read the store's size for /metrics"),
    }
    if let Ok(revision) = store.current_revision() {
        gauges.current_revision.set(revision);
    }
    if let Ok(revision) = store.compact_revision() {
        gauges.compact_revision.set(revision);
    }
    if let Some(bytes) = resident_memory_bytes() {
        gauges.resident_memory_bytes.set(as_gauge(bytes));
    }
}

/// The process's resident set, from `/proc/self/status` on Linux.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
