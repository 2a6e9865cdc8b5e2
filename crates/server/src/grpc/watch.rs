//! The Watch service: one bidirectional stream carries any number of
//! watchers.
//!
//! Each stream runs one task. It subscribes to the [`WatchHub`] before
//! reading history, so no revision falls between the two: a watcher created
//! at a past revision is first served from the store's history up to the
//! current revision, then from the hub, skipping what it already got. If the
//! stream falls behind the hub's buffer, every watcher catches up from
//! history the same way. Each watcher remembers the next revision it owes,
//! so nothing is delivered twice or out of order.
//!
//! Progress notifications (asked for on the stream, or every
//! `--experimental-watch-progress-notify-interval` for watchers created with
//! `progress_notify`) carry a revision every watcher concerned has been sent
//! everything up to, never more. A watcher created with `fragment` gets
//! responses larger than `--max-request-bytes` split into fragments.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use raftkv_mvcc::{Event, EventKind, KeyRange, MvccError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_server::Watch;
use raftkv_proto::mvccpb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::ServiceContext;
use crate::convert::kv_to_pb;
use crate::watch::{AppliedEvents, PrevKvInterest, WatchHub};

/// Responses queued per stream before the stream waits for the client.
const STREAM_RESPONSES: usize = 128;
/// Events read from history at a time while catching up.
const CATCH_UP_EVENTS: usize = 1000;

/// The Watch service.
pub struct WatchService {
    ctx: ServiceContext,
    hub: WatchHub,
}

impl WatchService {
    /// A Watch service over `ctx`, fed by `hub`.
    pub fn new(ctx: ServiceContext, hub: WatchHub) -> Self {
        Self { ctx, hub }
    }
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    range: KeyRange,
    /// Set when the watcher asked for `prev_kv`.
    prev_kv: Option<PrevKvInterest>,
    no_put: bool,
    no_delete: bool,
    /// The next revision this watcher has not yet been sent.
    next_revision: i64,
    /// Send periodic progress notifications.
    progress_notify: bool,
    /// Split responses larger than the request limit.
    fragment: bool,
    /// Events went out since the last periodic progress notification.
    sent_since_progress: bool,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let kind_ok = match event.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        };
        kind_ok && event.kv.mod_revision >= self.next_revision && self.range.contains(&event.kv.key)
    }

    fn to_pb(&self, event: &Event) -> mvccpb::Event {
        mvccpb::Event {
            r#type: match event.kind {
                EventKind::Put => mvccpb::event::EventType::Put as i32,
                EventKind::Delete => mvccpb::event::EventType::Delete as i32,
            },
            kv: Some(kv_to_pb(event.kv.clone())),
            prev_kv: if self.prev_kv.is_some() {
                event.prev_kv.clone().map(kv_to_pb)
            } else {
                None
            },
        }
    }
}

type WatchResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (metadata, extensions, requests) = request.into_parts();
        let (out, responses) = mpsc::channel(STREAM_RESPONSES);
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ctx.watch_progress_interval,
            self.ctx.watch_progress_interval,
        );
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = WatchStream {
            progress,
            ctx: self.ctx.clone(),
            hub: self.hub.subscribe(),
            hub_handle: self.hub.clone(),
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
            credentials: Credentials {
                metadata: crate::auth::forwarded_metadata(&metadata),
                common_name: crate::tls::client_common_name(&extensions).map(str::to_string),
            },
        };
        tokio::spawn(stream.run(requests));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(responses).map(Ok),
        )))
    }
}

struct WatchStream {
    /// Ticks periodic progress notifications.
    progress: tokio::time::Interval,
    ctx: ServiceContext,
    hub: broadcast::Receiver<Arc<AppliedEvents>>,
    /// For watchers to say they want `prev_kv`.
    hub_handle: WatchHub,
    out: mpsc::Sender<pb::WatchResponse>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// The stream's credentials: every create is checked with them, as etcd
    /// does (so a token that expired refuses later creates).
    credentials: Credentials,
}

struct Credentials {
    metadata: tonic::metadata::MetadataMap,
    common_name: Option<String>,
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        loop {
            let keep_going = tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    // The client went away (or cancelled the stream).
                    _ => false,
                },
                applied = self.hub.recv() => match applied {
                    Ok(applied) => self.deliver(&applied).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watch stream fell behind; catching up from history");
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                _ = self.progress.tick() => self.notify_progress().await,
            };
            if !keep_going {
                return;
            }
        }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.ctx.header(revision)
    }

    fn current_revision(&self) -> i64 {
        self.ctx.store.current_revision().unwrap_or(0)
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(response).await.is_ok()
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> bool {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                self.watchers.remove(&cancel.watch_id);
                let response = pb::WatchResponse {
                    header: self.header(self.current_revision()),
                    watch_id: cancel.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.send(response).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let revision = self
                    .watchers
                    .values()
                    .map(|w| w.next_revision - 1)
                    .fold(self.current_revision(), i64::min);
                let response = pb::WatchResponse {
                    header: self.header(revision),
                    watch_id: -1,
                    ..Default::default()
                };
                self.send(response).await
            }
            None => true,
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        let current = self.current_revision();
        let refuse = |watch_id: i64, reason: &str| pb::WatchResponse {
            header: self.header(current),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // etcd checks the permission first, then the watch itself.
        let caller = self
            .ctx
            .caller_with(
                &self.credentials.metadata,
                self.credentials.common_name.as_deref(),
            )
            .await;
        let allowed = caller.and_then(|caller| {
            crate::auth::request::authorize_read(
                &self.ctx.auth.state(),
                &caller,
                &create.key,
                &create.range_end,
            )
            .map_err(Status::from)
        });
        if let Err(refused) = allowed {
            return self.send(refuse(-1, refused.message())).await;
        }
        if create.start_revision < 0 {
            return self
                .send(refuse(-1, &MvccError::Compacted.to_string()))
                .await;
        }
        let range = KeyRange::new(&create.key, &create.range_end);
        if !create.range_end.is_empty() && create.range_end != [0] && create.key >= create.range_end
        {
            return self.send(refuse(-1, "mvcc: watcher range is empty")).await;
        }
        let watch_id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self
                    .send(refuse(
                        create.watch_id,
                        "mvcc: duplicate watch ID provided on the WatchStream",
                    ))
                    .await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        use pb::watch_create_request::FilterType;
        let watcher = Watcher {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            range,
            prev_kv: create.prev_kv.then(|| self.hub_handle.prev_kv_interest()),
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            next_revision: if create.start_revision == 0 {
                current + 1
            } else {
                create.start_revision
            },
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            sent_since_progress: false,
        };
        let created = pb::WatchResponse {
            header: self.header(current),
            watch_id,
            created: true,
            ..Default::default()
        };
        if !self.send(created).await {
            return false;
        }
        self.watchers.insert(watch_id, watcher);
        self.catch_up(watch_id).await
    }

    /// Sends a watcher everything from its next revision up to the current
    /// revision out of the store's history, a page at a time. A response
    /// never splits a revision.
    async fn catch_up(&mut self, watch_id: i64) -> bool {
        loop {
            let current = self.current_revision();
            let Some(watcher) = self.watchers.get(&watch_id) else {
                return true;
            };
            let start = watcher.next_revision;
            if start > current {
                return true;
            }
            let (key, range_end) = (watcher.key.clone(), watcher.range_end.clone());
            let page = match self
                .ctx
                .store
                .events(start, &key, &range_end, CATCH_UP_EVENTS)
            {
                Ok(page) => page,
                Err(MvccError::Compacted) => return self.cancel_compacted(watch_id).await,
                Err(err) => {
                    tracing::error!(%err, "reading watch history failed");
                    return false;
                }
            };
            let (events, next) = if page.len() < CATCH_UP_EVENTS {
                (page, current + 1)
            } else {
                let last = page.last().map_or(start, |e| e.kv.mod_revision);
                if last == start {
                    // One revision fills the page: read all of it.
                    let whole = match self.ctx.store.events(start, &key, &range_end, 0) {
                        Ok(events) => events
                            .into_iter()
                            .filter(|e| e.kv.mod_revision == start)
                            .collect(),
                        Err(_) => return self.cancel_compacted(watch_id).await,
                    };
                    (whole, start + 1)
                } else {
                    (
                        page.into_iter()
                            .filter(|e| e.kv.mod_revision < last)
                            .collect(),
                        last,
                    )
                }
            };
            let mut by_revision: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
            for event in &events {
                by_revision
                    .entry(event.kv.mod_revision)
                    .or_default()
                    .push(event);
            }
            for (revision, events) in by_revision {
                if !self.send_events(watch_id, &events, revision).await {
                    return false;
                }
            }
            if let Some(watcher) = self.watchers.get_mut(&watch_id) {
                watcher.next_revision = next;
            }
        }
    }

    /// The watcher's start revision was compacted away: cancel it as etcd
    /// does, telling the client the compaction revision.
    async fn cancel_compacted(&mut self, watch_id: i64) -> bool {
        self.watchers.remove(&watch_id);
        // etcd sends this response with a header but no revision in it;
        // clients dereference the header.
        let response = pb::WatchResponse {
            header: self.header(0),
            watch_id,
            canceled: true,
            compact_revision: self.ctx.store.compact_revision().unwrap_or(0),
            cancel_reason: MvccError::Compacted.to_string(),
            ..Default::default()
        };
        self.send(response).await
    }

    async fn catch_up_all(&mut self) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if !self.catch_up(id).await {
                return false;
            }
        }
        true
    }

    /// Hands one applied batch to every watcher that wants part of it.
    async fn deliver(&mut self, applied: &AppliedEvents) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if watcher.next_revision > applied.revision {
                continue;
            }
            if watcher.prev_kv.is_some() && !applied.with_prev_kv {
                // Applied before the store saw this watcher's interest.
                if !self.catch_up(id).await {
                    return false;
                }
                continue;
            }
            let wanted: Vec<&Event> = applied.events.iter().filter(|e| watcher.wants(e)).collect();
            if !self.send_events(id, &wanted, applied.revision).await {
                return false;
            }
            if let Some(watcher) = self.watchers.get_mut(&id) {
                watcher.next_revision = applied.revision + 1;
            }
        }
        true
    }

    async fn send_events(&mut self, watch_id: i64, events: &[&Event], revision: i64) -> bool {
        let Some(watcher) = self.watchers.get_mut(&watch_id) else {
            return true;
        };
        let events: Vec<mvccpb::Event> = events
            .iter()
            .filter(|e| watcher.wants(e))
            .map(|e| watcher.to_pb(e))
            .collect();
        if events.is_empty() {
            return true;
        }
        watcher.sent_since_progress = true;
        let fragment = watcher.fragment;
        let response = pb::WatchResponse {
            header: self.header(revision),
            watch_id,
            events,
            ..Default::default()
        };
        let limit = self.ctx.max_request_bytes as usize;
        if !fragment || prost::Message::encoded_len(&response) <= limit {
            return self.send(response).await;
        }
        for piece in fragments(response, limit) {
            if !self.send(piece).await {
                return false;
            }
        }
        true
    }

    /// Periodic progress: every watcher that asked for it and had no events
    /// since the last tick learns how far it has been sent everything.
    async fn notify_progress(&mut self) -> bool {
        let current = self.current_revision();
        let due: Vec<(i64, i64)> = self
            .watchers
            .iter_mut()
            .filter(|(_, w)| w.progress_notify)
            .filter_map(|(&id, w)| {
                let quiet = !std::mem::replace(&mut w.sent_since_progress, false);
                quiet.then_some((id, (w.next_revision - 1).min(current)))
            })
            .collect();
        for (watch_id, revision) in due {
            let response = pb::WatchResponse {
                header: self.header(revision),
                watch_id,
                ..Default::default()
            };
            if !self.send(response).await {
                return false;
            }
        }
        true
    }
}

/// Splits a response's events into responses of at most `limit` encoded
/// bytes (one event each at least), all but the last marked `fragment`.
fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    use prost::Message as _;
    let empty = pb::WatchResponse {
        events: Vec::new(),
        ..response.clone()
    };
    let base = empty.encoded_len();
    let mut pieces = Vec::new();
    let mut current = empty.clone();
    let mut size = base;
    for event in response.events {
        // Field tag, length prefix and the event itself.
        let event_size = 1 + prost::length_delimiter_len(event.encoded_len()) + event.encoded_len();
        if !current.events.is_empty() && size + event_size > limit {
            current.fragment = true;
            pieces.push(std::mem::replace(&mut current, empty.clone()));
            size = base;
        }
        size += event_size;
        current.events.push(event);
    }
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_responses_split_into_fragments_under_the_limit() {
        let event = |i: u8| mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: vec![i],
                value: vec![i; 100],
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = pb::WatchResponse {
            watch_id: 3,
            events: (0..10).map(event).collect(),
            ..Default::default()
        };
        let pieces = fragments(response.clone(), 350);
        assert!(pieces.len() > 1);
        for piece in &pieces {
            assert!(prost::Message::encoded_len(piece) <= 350, "{piece:?}");
            assert_eq!(piece.watch_id, 3);
        }
        let (last, rest) = pieces.split_last().unwrap();
        assert!(!last.fragment && rest.iter().all(|p| p.fragment));
        let joined: Vec<mvccpb::Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, response.events);
        // One event larger than the limit still goes out, alone.
        assert_eq!(fragments(response, 10).len(), 10);
    }
}
