//! `GET /health`, as etcd 3.5 answers it: `{"health":"true","reason":""}`
//! with 200, or `"false"` and a reason with 503.
//!
//! In etcd's order, the member is unhealthy while an alarm is raised
//! (`ALARM NOSPACE`; `?exclude=NOSPACE` ignores that type), when it knows no
//! leader (`RAFT NO LEADER`), or when a read fails (`RANGE ERROR:<why>`).
//! The read is linearizable, through the same read-index barrier the KV
//! service uses, so a member cut off from its quorum reports it; with
//! `?serializable=true` the leader check is skipped and the read is local,
//! which tells whether this member itself serves.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode, Uri};

use raftkv_proto::etcdserverpb::AlarmType;

use super::HttpState;

#[derive(serde::Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

/// The handler.
pub async fn health(State(state): State<HttpState>, uri: Uri) -> Response {
    let query: Vec<(&str, &str)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let serializable = query.contains(&("serializable", "true"));
    let excluded: Vec<&str> = query
        .iter()
        .filter(|(name, _)| *name == "exclude")
        .map(|&(_, alarm)| alarm)
        .collect();
    let verdict = check(&state, serializable, &excluded).await;
    let body = serde_json::to_string(&verdict).unwrap_or_default();
    // etcd writes this JSON as text/plain (Go's sniffed type), and a failure
    // through http.Error: with a newline and nosniff.
    if verdict.health == "true" {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    } else {
        tracing::warn!(reason = %verdict.reason, "serving /health false");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body + "\n",
        )
            .into_response()
    }
}

async fn check(state: &HttpState, serializable: bool, excluded: &[&str]) -> Health {
    let unhealthy = |reason: String| Health {
        health: "false",
        reason,
    };
    let ctx = &state.ctx;
    match crate::alarm::list(&ctx.store) {
        Ok(alarms) => {
            let raised = alarms.iter().find_map(|a| {
                let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                (!excluded.contains(&name)).then_some(name)
            });
            if let Some(name) = raised {
                return unhealthy(format!("ALARM {name}"));
            }
        }
        Err(err) => return unhealthy(format!("RANGE ERROR:{err}")),
    }
    if !serializable && ctx.node.shared().leader_id() == 0 {
        return unhealthy("RAFT NO LEADER".into());
    }
    let read = if serializable {
        ctx.store
            .current_revision()
            .map(|_| ())
            .map_err(|e| crate::status::from_mvcc(&e))
    } else {
        ctx.linearizable_barrier().await
    };
    match read {
        Ok(()) => Health {
            health: "true",
            reason: String::new(),
        },
        Err(status) => unhealthy(format!("RANGE ERROR:{}", status.message())),
    }
}
