//! The Watch service: one bidirectional stream carries any number of
//! watchers.
//!
//! Each stream runs one task. It subscribes to the [`WatchHub`] before
//! reading history, so no revision falls between the two: a watcher created
//! at a past revision is first served from the store's history up to the
//! current revision, then from the hub, skipping what it already got. Each
//! watcher remembers the next revision it owes, so nothing is delivered
//! twice or out of order.
//!
//! What a stream holds for its client is bounded in bytes
//! (`--watch-stream-buffer-bytes`), not in responses: with large values a
//! few responses are megabytes. A stream whose client stops reading holds
//! events up to that bound, then none: it keeps draining the hub (so it pins
//! none of the hub's batches) and falls behind, and once its client has read
//! half the bound it catches up from history, a bounded page at a time, the
//! way a stream that fell behind the hub's buffer does. Responses that must
//! not be dropped (created, canceled, asked-for progress) wait for room
//! instead, which stops the stream reading requests, so a client that sends
//! without reading is held back by HTTP/2 flow control.
//!
//! Progress notifications (asked for on the stream, or every
//! `--experimental-watch-progress-notify-interval` for watchers created with
//! `progress_notify`) carry a revision every watcher concerned has been sent
//! everything up to, never more. A watcher created with `fragment` gets
//! responses larger than `--max-request-bytes` split into fragments.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use raftkv_mvcc::{Event, EventKind, EventPageLimits, KeyRange, MvccError};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_server::Watch;
use raftkv_proto::mvccpb;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::ServiceContext;
use crate::convert::kv_to_pb;
use crate::watch::{AppliedEvents, PrevKvInterest, WatchHub};

/// Events read from history at most at a time while catching up.
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

/// The responses of a stream its client has not taken yet, bounded in
/// bytes by the permits of `room`: each queued group of responses holds
/// permits for its encoded size until the last of them is taken for the
/// wire.
struct Outbox {
    queue: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    budget: u32,
    /// Every stream's queued bytes, for `/metrics`.
    gauge: Gauge,
}

struct Queued {
    response: pb::WatchResponse,
    /// Released when this response is taken (on the group's last one).
    _room: Option<Held>,
}

/// Room a queued group holds, given back (and uncounted) when dropped.
struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    gauge: Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// How an attempt to queue responses went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Queued,
    /// The stream holds too much for its client now; nothing was queued.
    NoRoom {
        needed: u32,
    },
    /// The client went away.
    Closed,
}

impl Outbox {
    fn new(budget: u32, gauge: Gauge) -> (Self, mpsc::UnboundedReceiver<Queued>) {
        let (queue, responses) = mpsc::unbounded_channel();
        let outbox = Self {
            queue,
            room: Arc::new(Semaphore::new(budget as usize)),
            budget,
            gauge,
        };
        (outbox, responses)
    }

    /// What queuing `responses` costs: their encoded size, at most the
    /// whole budget (so a group larger than it still goes, alone).
    fn cost(&self, responses: &[pb::WatchResponse]) -> u32 {
        let bytes: usize = responses.iter().map(prost::Message::encoded_len).sum();
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget)
    }

    /// Queues `responses` if there is room for all of them now.
    fn try_send(&self, responses: Vec<pb::WatchResponse>) -> Delivery {
        let needed = self.cost(&responses);
        match Arc::clone(&self.room).try_acquire_many_owned(needed) {
            Ok(permit) => self.enqueue(responses, permit),
            Err(TryAcquireError::NoPermits) => Delivery::NoRoom { needed },
            Err(TryAcquireError::Closed) => Delivery::Closed,
        }
    }

    fn enqueue(&self, responses: Vec<pb::WatchResponse>, permit: OwnedSemaphorePermit) -> Delivery {
        let bytes = i64::try_from(permit.num_permits()).unwrap_or(i64::MAX);
        self.gauge.inc_by(bytes);
        let mut permit = Some(Held {
            _permit: permit,
            bytes,
            gauge: self.gauge.clone(),
        });
        let last = responses.len().saturating_sub(1);
        for (i, response) in responses.into_iter().enumerate() {
            let queued = Queued {
                response,
                _room: if i == last { permit.take() } else { None },
            };
            if self.queue.send(queued).is_err() {
                return Delivery::Closed;
            }
        }
        Delivery::Queued
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
        let (out, responses) = Outbox::new(
            self.ctx.watch_stream_buffer_bytes,
            self.hub.buffered_bytes().clone(),
        );
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
            behind: None,
            watchers: BTreeMap::new(),
            next_id: 0,
            credentials: Credentials {
                metadata: crate::auth::forwarded_metadata(&metadata),
                common_name: crate::tls::client_common_name(&extensions).map(str::to_string),
            },
        };
        tokio::spawn(stream.run(requests));
        // Taking a response for the wire releases its room (tonic then
        // waits for HTTP/2 flow control before it takes the next).
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(responses).map(|queued| Ok(queued.response)),
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
    out: Outbox,
    /// Set while the stream's watchers owe events the hub has moved past
    /// (the client did not read, or the stream fell behind the hub's
    /// buffer): the room to wait for before catching up from history.
    behind: Option<u32>,
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
            let room = Arc::clone(&self.out.room);
            let resume_at = self.behind;
            let keep_going = tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => self.handle(request).await,
                    // The client went away (or cancelled the stream).
                    _ => false,
                },
                applied = self.hub.recv() => match applied {
                    Ok(applied) if self.behind.is_none() => self.deliver(&applied).await,
                    // Served from history once there is room.
                    Ok(_) => true,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watch stream fell behind; catching up from history");
                        self.fall_behind(0);
                        true
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                room = room.acquire_many_owned(resume_at.unwrap_or(0)), if resume_at.is_some() => {
                    drop(room);
                    self.behind = None;
                    self.catch_up_all().await
                }
                _ = self.progress.tick() => self.notify_progress(),
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Notes that the stream's watchers owe events the hub has moved past:
    /// they are served from history once `needed` bytes (and half the
    /// budget at least) are free.
    fn fall_behind(&mut self, needed: u32) {
        let resume = needed.max(self.out.budget / 2).min(self.out.budget);
        self.behind = Some(self.behind.map_or(resume, |b| b.max(resume)));
    }

    /// What a failed attempt to queue means for the stream: false once the
    /// client is gone.
    fn settle(&mut self, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Queued => true,
            Delivery::NoRoom { needed } => {
                self.fall_behind(needed);
                true
            }
            Delivery::Closed => false,
        }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.ctx.header(revision)
    }

    fn current_revision(&self) -> i64 {
        self.ctx.store.current_revision().unwrap_or(0)
    }

    /// Queues a response that must reach the client, waiting for room.
    /// Meanwhile the hub is drained, the stream falling behind, so the hub
    /// keeps no batch for it.
    async fn send(&mut self, response: pb::WatchResponse) -> bool {
        let responses = vec![response];
        let needed = self.out.cost(&responses);
        let room = Arc::clone(&self.out.room);
        let acquire = room.acquire_many_owned(needed);
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    return match permit {
                        Ok(permit) => self.out.enqueue(responses, permit) == Delivery::Queued,
                        Err(_) => false,
                    };
                }
                applied = self.hub.recv() => match applied {
                    Err(broadcast::error::RecvError::Closed) => return false,
                    // Every event not sent is owed from history.
                    _ => self.fall_behind(0),
                },
            }
        }
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
            let response = refuse(-1, refused.message());
            return self.send(response).await;
        }
        if create.start_revision < 0 {
            let response = refuse(-1, &MvccError::Compacted.to_string());
            return self.send(response).await;
        }
        let range = KeyRange::new(&create.key, &create.range_end);
        if !create.range_end.is_empty() && create.range_end != [0] && create.key >= create.range_end
        {
            let response = refuse(-1, "mvcc: watcher range is empty");
            return self.send(response).await;
        }
        let watch_id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                let response = refuse(
                    create.watch_id,
                    "mvcc: duplicate watch ID provided on the WatchStream",
                );
                return self.send(response).await;
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
        if self.behind.is_some() {
            // Served with the others once there is room.
            return true;
        }
        self.catch_up(watch_id).await
    }

    /// Sends a watcher what it is owed from its next revision up to the
    /// current revision out of the store's history, a bounded page at a
    /// time, until done or the stream has no room (it is then behind, and
    /// goes on from the first revision not sent). A response never splits a
    /// revision.
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
            let limits = EventPageLimits {
                max_events: CATCH_UP_EVENTS,
                // A page never holds much more than the stream may.
                max_bytes: self.out.budget as usize,
                prev_kv: watcher.prev_kv.is_some(),
            };
            let page = match self.ctx.store.event_page(start, &watcher.range, limits) {
                Ok(page) => page,
                Err(MvccError::Compacted) => return self.cancel_compacted(watch_id).await,
                Err(err) => {
                    tracing::error!(%err, "reading watch history failed");
                    return false;
                }
            };
            let mut by_revision: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
            for event in &page.events {
                by_revision
                    .entry(event.kv.mod_revision)
                    .or_default()
                    .push(event);
            }
            for (revision, events) in by_revision {
                match self.send_events(watch_id, &events, revision) {
                    Delivery::Queued => {}
                    Delivery::NoRoom { needed } => {
                        if let Some(watcher) = self.watchers.get_mut(&watch_id) {
                            watcher.next_revision = revision;
                        }
                        self.fall_behind(needed);
                        return true;
                    }
                    Delivery::Closed => return false,
                }
            }
            if let Some(watcher) = self.watchers.get_mut(&watch_id) {
                watcher.next_revision = page.next_revision;
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

    /// Serves every watcher from history, until done or out of room again.
    async fn catch_up_all(&mut self) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if self.behind.is_some() {
                return true;
            }
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
            if self.behind.is_some() {
                // The rest are served from history with it.
                return true;
            }
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
            let delivery = self.send_events(id, &wanted, applied.revision);
            if delivery == Delivery::Queued {
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    watcher.next_revision = applied.revision + 1;
                }
            } else if !self.settle(delivery) {
                return false;
            }
        }
        true
    }

    /// Queues a watcher's events of one revision (in fragments if it asked
    /// and they are larger than the request limit), all or none.
    fn send_events(&mut self, watch_id: i64, events: &[&Event], revision: i64) -> Delivery {
        let limit = self.ctx.max_request_bytes as usize;
        let Some(watcher) = self.watchers.get(&watch_id) else {
            return Delivery::Queued;
        };
        let events: Vec<mvccpb::Event> = events
            .iter()
            .filter(|e| watcher.wants(e))
            .map(|e| watcher.to_pb(e))
            .collect();
        if events.is_empty() {
            return Delivery::Queued;
        }
        let fragment = watcher.fragment;
        let response = pb::WatchResponse {
            header: self.header(revision),
            watch_id,
            events,
            ..Default::default()
        };
        let responses = if fragment && prost::Message::encoded_len(&response) > limit {
            fragments(response, limit)
        } else {
            vec![response]
        };
        let delivery = self.out.try_send(responses);
        if delivery == Delivery::Queued {
            if let Some(watcher) = self.watchers.get_mut(&watch_id) {
                watcher.sent_since_progress = true;
            }
        }
        delivery
    }

    /// Periodic progress: every watcher that asked for it and had no events
    /// since the last tick learns how far it has been sent everything. A
    /// stream with no room for one skips it (the next tick tells it again).
    fn notify_progress(&mut self) -> bool {
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
            match self.out.try_send(vec![response]) {
                Delivery::Queued | Delivery::NoRoom { .. } => {}
                Delivery::Closed => return false,
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
