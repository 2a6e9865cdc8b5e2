//! Watchers that record what their streams deliver during a run, reopening
//! them (on the next member, from the revision after the last event seen)
//! when a fault breaks them, and the check of etcd's watch guarantees on
//! what they recorded against the store's own history.

use std::time::Duration;

use raftkv_check::watch::{check_watches, EventKind, WatchEvent, WatchResponse, WatchStream};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::Cluster;
use crate::security::{ClusterSecurity, Principal};

/// How often a watcher asks for a progress notification.
const PROGRESS_EVERY: Duration = Duration::from_millis(700);
/// Longest a watcher waits to connect or for the next response before it
/// reopens its stream elsewhere.
const STREAM_STALL: Duration = Duration::from_secs(3);

/// Watchers on every key under a prefix.
#[derive(Clone, Debug)]
pub struct WatchPlan {
    prefix: String,
    watchers: usize,
}

/// Watchers at work.
pub struct RunningWatches {
    tasks: Vec<JoinHandle<WatchStream>>,
}

impl WatchPlan {
    /// `watchers` watchers of `prefix`.
    pub fn new(prefix: &str, watchers: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            watchers,
        }
    }

    /// Starts them; they stop by themselves at `deadline`.
    /// Streams are opened with `security`'s worker credentials.
    pub fn start(
        &self,
        endpoints: &[String],
        deadline: Instant,
        seed: u64,
        security: ClusterSecurity,
    ) -> RunningWatches {
        let tasks = (0..self.watchers)
            .map(|w| {
                let mut order = endpoints.to_vec();
                if !order.is_empty() {
                    let first = (seed as usize).wrapping_add(w) % order.len();
                    order.rotate_left(first);
                }
                tokio::spawn(watch_until(
                    w as u64 + 1,
                    self.prefix.clone(),
                    order,
                    deadline,
                    security.clone(),
                ))
            })
            .collect();
        RunningWatches { tasks }
    }
}

impl RunningWatches {
    /// Waits for every watcher to stop; their recordings.
    pub async fn finish(self) -> Vec<WatchStream> {
        let mut streams = Vec::new();
        for task in self.tasks {
            if let Ok(stream) = task.await {
                streams.push(stream);
            }
        }
        streams
    }
}

/// Events a stream received.
pub fn event_count(stream: &WatchStream) -> usize {
    stream.responses.iter().map(|r| r.events.len()).sum()
}

/// The end of the range of keys starting with `prefix`, as etcdctl's
/// `--prefix` computes it.
fn prefix_end(prefix: &str) -> Vec<u8> {
    raftkv_ctl::commands::prefix_range_end(prefix.as_bytes())
}

fn convert(event: &raftkv_proto::mvccpb::Event) -> Option<WatchEvent> {
    let kv = event.kv.as_ref()?;
    let delete = event.r#type == raftkv_proto::mvccpb::event::EventType::Delete as i32;
    Some(WatchEvent {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind: if delete {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        value: (!delete).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
    })
}

async fn watch_until(
    watcher: u64,
    prefix: String,
    endpoints: Vec<String>,
    deadline: Instant,
    security: ClusterSecurity,
) -> WatchStream {
    let mut stream = WatchStream {
        watcher,
        key: prefix.clone(),
        range_end: Some(String::from_utf8_lossy(&prefix_end(&prefix)).into_owned()),
        start_revision: 1,
        responses: Vec::new(),
        restarts: Vec::new(),
    };
    let mut next_revision = 1;
    let mut attempt = 0usize;
    while Instant::now() < deadline && !endpoints.is_empty() {
        let endpoint = &endpoints[attempt % endpoints.len()];
        attempt += 1;
        if attempt > 1 {
            stream.restarts.push(stream.responses.len());
        }
        follow(
            &security,
            Principal::Worker,
            endpoint,
            &prefix,
            next_revision,
            deadline,
            &mut stream.responses,
        )
        .await;
        if let Some(last) = stream
            .responses
            .iter()
            .flat_map(|r| r.events.iter())
            .map(|e| e.revision)
            .max()
        {
            next_revision = last + 1;
        }
        if Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A restart recorded after the last response opened nothing.
    while stream.restarts.last() == Some(&stream.responses.len()) {
        stream.restarts.pop();
    }
    stream
}

/// Follows one stream until it breaks, stalls or the deadline passes.
async fn follow(
    security: &ClusterSecurity,
    who: Principal,
    endpoint: &str,
    prefix: &str,
    start_revision: i64,
    deadline: Instant,
    responses: &mut Vec<WatchResponse>,
) {
    let Some(channel) = security.connect(endpoint, who, STREAM_STALL).await else {
        return;
    };
    let (requests, receiver) = mpsc::channel(8);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                progress_notify: true,
                ..Default::default()
            },
        )),
    };
    if requests.send(create).await.is_err() {
        return;
    }
    let mut client = WatchClient::new(channel);
    let Ok(Ok(response)) =
        tokio::time::timeout(STREAM_STALL, client.watch(ReceiverStream::new(receiver))).await
    else {
        return;
    };
    let mut inbound = response.into_inner();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    loop {
        let next = tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            _ = progress.tick() => {
                let ask = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                        pb::WatchProgressRequest {},
                    )),
                };
                if requests.send(ask).await.is_err() {
                    return;
                }
                continue;
            }
            next = tokio::time::timeout(STREAM_STALL, inbound.message()) => next,
        };
        let message = match next {
            Ok(Ok(Some(message))) => message,
            // Stalled, broken or ended: reopen elsewhere.
            _ => return,
        };
        if message.created {
            continue;
        }
        if message.canceled {
            return;
        }
        let events: Vec<WatchEvent> = message.events.iter().filter_map(convert).collect();
        responses.push(WatchResponse {
            header_revision: message.header.as_ref().map_or(0, |h| h.revision),
            progress_notify: events.is_empty(),
            fragment: message.fragment,
            events,
        });
    }
}

/// The store's own history of the prefix, read in one stream from member
/// `i` after the run, up to its current revision.
async fn reference(cluster: &Cluster, i: usize, prefix: &str) -> Result<Vec<WatchEvent>, String> {
    let url = cluster.direct_endpoint(i);
    let security = cluster.security();
    let conn = security
        .connect(&url, Principal::Root, Duration::from_secs(5))
        .await
        .ok_or_else(|| format!("reference: no connection to {url}"))?;
    let mut kv = KvClient::new(conn);
    let head = kv
        .range(pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            count_only: true,
            serializable: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reference: {e}"))?
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let mut responses = Vec::new();
    // Followed until it has everything through `head` (or 20 s pass).
    let deadline = Instant::now() + Duration::from_secs(20);
    let endpoint = url.clone();
    let mut events: Vec<WatchEvent> = Vec::new();
    let mut next = 1;
    // Complete once an event at or past `head` arrived, or a progress
    // notification at or past it did: the last write before `head` may be
    // outside the prefix (a lease probe's key), so no event need carry it.
    let mut synced = 0;
    while Instant::now() < deadline && next <= head && synced < head {
        let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        follow(
            security,
            Principal::Root,
            &endpoint,
            prefix,
            next,
            until,
            &mut responses,
        )
        .await;
        events = responses
            .iter()
            .flat_map(|r| r.events.iter().cloned())
            .collect();
        next = events.last().map_or(next, |e| e.revision + 1);
        synced = responses
            .iter()
            .filter(|r| r.progress_notify)
            .map(|r| r.header_revision)
            .max()
            .unwrap_or(0);
    }
    if next <= head && synced < head {
        return Err(format!(
            "reference watch on member {i} reached revision {} of {head}",
            next - 1
        ));
    }
    Ok(events)
}

/// The watch guarantees, checked against member 0's history.
pub async fn check(cluster: &Cluster, prefix: &str, streams: &[WatchStream]) -> Vec<String> {
    let reference = match reference(cluster, 0, prefix).await {
        Ok(events) => events,
        Err(err) => return vec![err],
    };
    let report = check_watches(&reference, streams);
    report
        .violations
        .iter()
        .map(|v| {
            let mut message = v.message.clone();
            if message.len() > 400 {
                let cut = (0..=400)
                    .rev()
                    .find(|i| message.is_char_boundary(*i))
                    .unwrap_or(0);
                message.truncate(cut);
                message.push_str("...");
            }
            format!("watcher {}: {:?}: {message}", v.watcher, v.guarantee)
        })
        .collect()
}
