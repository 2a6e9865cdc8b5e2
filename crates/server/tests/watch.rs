//! The Watch service of a real `raftkv` process, through etcd's protocol.

mod common;

use std::time::Duration;

use common::{free_port, runtime, start};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn put(kv: &mut KvClient<tonic::transport::Channel>, key: &str, value: &str) -> i64 {
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .map_or(0, |h| h.revision)
}

fn create(key: &str, range_end: &[u8], start_revision: i64, watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end: range_end.to_vec(),
            start_revision,
            watch_id,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

struct Stream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(port: u16) -> Self {
        let mut client = WatchClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let (requests, outgoing) = mpsc::channel(16);
        let responses = client
            .watch(ReceiverStream::new(outgoing))
            .await
            .expect("watch")
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    async fn send(&self, request: pb::WatchRequest) {
        self.requests.send(request).await.expect("request sent");
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .expect("a response within 10 s")
            .expect("stream alive")
            .expect("not ended")
    }
}

#[test]
fn watchers_get_history_then_live_changes_in_order_and_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let first = put(&mut kv, "a/1", "x").await;
        put(&mut kv, "a/2", "y").await;
        put(&mut kv, "b/1", "z").await;

        let mut stream = Stream::open(port).await;
        // From the first revision, prefix a/: history first.
        stream.send(create("a/", b"a0", first, 0)).await;
        let created = stream.next().await;
        assert!(created.created && !created.canceled);
        let id = created.watch_id;
        let mut keys = Vec::new();
        while keys.len() < 2 {
            let response = stream.next().await;
            assert_eq!(response.watch_id, id);
            keys.extend(
                response
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default()),
            );
        }
        assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);

        // Then live: a put to a/1 carries the previous value.
        put(&mut kv, "b/2", "ignored").await;
        put(&mut kv, "a/1", "x2").await;
        let live = stream.next().await;
        assert_eq!(live.events.len(), 1, "b/2 is outside the range");
        let event = &live.events[0];
        assert_eq!(
            event.kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"x2".to_vec())
        );
        assert_eq!(
            event.prev_kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"x".to_vec())
        );

        // A client-chosen id, then the same id again.
        stream.send(create("c", b"", 0, 77)).await;
        let created = stream.next().await;
        assert_eq!((created.created, created.watch_id), (true, 77));
        stream.send(create("c", b"", 0, 77)).await;
        let duplicate = stream.next().await;
        assert!(duplicate.canceled);
        assert_eq!(
            duplicate.cancel_reason,
            "mvcc: duplicate watch ID provided on the WatchStream"
        );

        // Cancel, then a change to c reaches nobody.
        stream
            .send(pb::WatchRequest {
                request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                    watch_id: 77,
                })),
            })
            .await;
        let canceled = stream.next().await;
        assert!(canceled.canceled && canceled.watch_id == 77);

        // A progress request is answered with the current revision.
        put(&mut kv, "c", "unwatched").await;
        let revision = put(&mut kv, "zz", "last").await;
        stream
            .send(pb::WatchRequest {
                request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
            })
            .await;
        let progress = stream.next().await;
        assert_eq!(progress.watch_id, -1);
        assert_eq!(progress.header.map(|h| h.revision), Some(revision));

        // A start revision below the compaction point is refused as etcd does.
        kv.compact(pb::CompactionRequest {
            revision: revision - 1,
            physical: true,
        })
        .await
        .expect("compact");
        stream.send(create("a/", b"a0", 1, 0)).await;
        let created = stream.next().await;
        assert!(created.created);
        let refused = stream.next().await;
        assert!(refused.canceled);
        assert_eq!(refused.compact_revision, revision - 1);
        assert!(
            refused.header.is_some(),
            "etcd clients dereference the header"
        );
    });
    assert!(server.stop().success());
}

/// Puts record the kv they replace only while a watcher asked for it, so a
/// watcher created while puts are applied must still get it on every event,
/// and a watcher that did not ask must get none. Each asking watcher is
/// created with no other asking watcher alive, while writers keep the store
/// busy, so some are likely created while a batch that did not record
/// `prev_kv` is being applied.
#[test]
fn prev_kv_is_on_every_event_for_watchers_that_ask_while_puts_flow() {
    const WRITERS: usize = 4;
    const MAX_PUTS: usize = 20_000;
    const ASKING_WATCHERS: usize = 12;
    const EVENTS_PER_WATCHER: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    runtime().block_on(async {
        let kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (mut kv, stop) = (kv.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                for i in 0..MAX_PUTS {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    put(&mut kv, &format!("p{w}"), &i.to_string()).await;
                }
            }));
        }
        let number = |kv: &raftkv_proto::mvccpb::KeyValue| {
            let value = String::from_utf8_lossy(&kv.value).parse::<usize>();
            (kv.key.clone(), value.expect("a number"))
        };
        let watch = |asks: bool| {
            let mut request = create("p", b"q", 0, 0);
            if let Some(RequestUnion::CreateRequest(c)) = &mut request.request_union {
                c.prev_kv = asks;
            }
            request
        };
        let mut plain = Stream::open(port).await;
        plain.send(watch(false)).await;
        assert!(plain.next().await.created);
        for n in 0..ASKING_WATCHERS {
            let mut stream = Stream::open(port).await;
            stream.send(watch(true)).await;
            assert!(stream.next().await.created);
            let mut seen = 0;
            while seen < EVENTS_PER_WATCHER {
                for event in stream.next().await.events {
                    let (key, now) = number(event.kv.as_ref().expect("kv"));
                    let prev = event.prev_kv.as_ref().map(number);
                    let expected = now.checked_sub(1).map(|before| (key, before));
                    assert_eq!(prev, expected, "watcher {n}, event {now}");
                    seen += 1;
                }
            }
            // Gone before the next one is created, so the server stops
            // recording prev_kv in between.
            drop(stream);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for writer in writers {
            writer.await.expect("writer");
        }
        let mut seen = 0;
        while seen < EVENTS_PER_WATCHER {
            for event in plain.next().await.events {
                assert_eq!(event.prev_kv, None, "the watcher did not ask");
                seen += 1;
            }
        }
    });
    assert!(server.stop().success());
}

#[test]
fn a_watcher_far_behind_catches_up_from_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        // More revisions than one page of history and than the hub keeps.
        let count = 2500;
        let mut first = 0;
        for i in 0..count {
            let revision = put(&mut kv, &format!("k{}", i % 7), &i.to_string()).await;
            if i == 0 {
                first = revision;
            }
        }
        let mut stream = Stream::open(port).await;
        stream.send(create("k", b"l", first, 0)).await;
        assert!(stream.next().await.created);
        let mut revisions = Vec::new();
        while revisions.len() < count {
            let response = stream.next().await;
            revisions.extend(
                response
                    .events
                    .iter()
                    .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)),
            );
        }
        let expected: Vec<i64> = (first..first + count as i64).collect();
        assert_eq!(revisions, expected, "every revision once, in order");
    });
    assert!(server.stop().success());
}

#[test]
fn watchers_get_periodic_progress_and_fragments_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(
        dir.path(),
        port,
        &[
            "--experimental-watch-progress-notify-interval",
            "300ms",
            "--max-request-bytes",
            "4096",
        ],
    );
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let big = "v".repeat(1000);
        for i in 0..5 {
            put(&mut kv, &format!("f/{i}"), &big).await;
        }
        let mut stream = Stream::open(port).await;
        let mut fragmented = create("f/", b"f0", 0, 7);
        let mut plain = create("f/", b"f0", 0, 8);
        let mut quiet = create("q/", b"q0", 0, 9);
        if let Some(RequestUnion::CreateRequest(c)) = &mut fragmented.request_union {
            c.fragment = true;
        }
        if let Some(RequestUnion::CreateRequest(c)) = &mut quiet.request_union {
            c.progress_notify = true;
        }
        if let Some(RequestUnion::CreateRequest(c)) = &mut plain.request_union {
            c.prev_kv = true;
        }
        for request in [fragmented, plain, quiet] {
            stream.send(request).await;
            assert!(stream.next().await.created);
        }
        // A watcher that asked for progress hears it while nothing happens,
        // at the revision it has been sent everything up to.
        let progress = stream.next().await;
        assert_eq!(progress.watch_id, 9);
        assert!(progress.events.is_empty() && !progress.canceled);
        assert_eq!(progress.header.map(|h| h.revision), Some(6));

        // One revision deleting five keys, each event carrying a 1000-byte
        // previous value: over the 4096-byte limit.
        let deleted = kv
            .delete_range(pb::DeleteRangeRequest {
                key: b"f/".to_vec(),
                range_end: b"f0".to_vec(),
                ..Default::default()
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(deleted.deleted, 5);
        let mut fragments = Vec::new();
        let mut whole = None;
        while whole.is_none()
            || fragments
                .last()
                .is_none_or(|f: &pb::WatchResponse| f.fragment)
        {
            let response = stream.next().await;
            match response.watch_id {
                7 => fragments.push(response),
                8 => whole = Some(response),
                // Progress for the quiet watcher may come in between.
                _ => {}
            }
        }
        assert!(fragments.len() > 1, "split: {}", fragments.len());
        assert!(fragments
            .iter()
            .all(|f| prost::Message::encoded_len(f) <= 4096));
        let joined: Vec<_> = fragments.into_iter().flat_map(|f| f.events).collect();
        let whole = whole.expect("the unfragmented watcher's response");
        assert_eq!(whole.events.len(), 5);
        assert_eq!(joined, whole.events, "fragments join into the same events");
    });
    assert!(server.stop().success());
}

/// Resident memory of a process, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// One sample of the member's `/metrics`.
fn metric(port: u16, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("reply");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A stream on a connection of its own, whose watcher on `prefix` is
/// created (and confirmed) before it returns.
async fn open_watching(port: u16, prefix: &str) -> Stream {
    let mut stream = Stream::open(port).await;
    let mut request = create(
        prefix,
        &raftkv_mvcc::prefix_range_end(prefix.as_bytes()),
        0,
        0,
    );
    if let Some(RequestUnion::CreateRequest(create)) = &mut request.request_union {
        create.prev_kv = false;
    }
    stream.send(request).await;
    assert!(stream.next().await.created);
    stream
}

#[test]
fn stuck_watch_streams_hold_at_most_their_buffer_and_catch_up_once_read_again() {
    const BUFFER: u64 = 1 << 20;
    const STUCK: usize = 16;
    const PUTS: usize = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let buffer = BUFFER.to_string();
    let server = start(
        dir.path(),
        port,
        &[
            "--watch-stream-buffer-bytes",
            &buffer,
            "--backend-cache-bytes",
            "1048576",
        ],
    );
    let pid = server.child.id();
    let value = vec![b'v'; 256 * 1024];
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let writer = kv.clone();
        let put_all = |prefix: &'static str| {
            let mut kv = writer.clone();
            let value = value.clone();
            async move {
                let mut revisions = Vec::new();
                for i in 0..PUTS {
                    let response = kv
                        .put(pb::PutRequest {
                            key: format!("{prefix}{i:04}").into_bytes(),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("put");
                    revisions.push(response.into_inner().header.map_or(0, |h| h.revision));
                }
                revisions
            }
        };
        // What the writes cost the member with nobody watching them.
        put(&mut kv, "warm", "up").await;
        let before = resident_bytes(pid);
        put_all("plain/").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let plain_growth = resident_bytes(pid).saturating_sub(before);

        // The same writes to keys that streams watch and do not read.
        let mut stuck = Vec::new();
        for _ in 0..STUCK {
            stuck.push(open_watching(port, "w/").await);
        }
        let mut late_reader = open_watching(port, "w/").await;
        let before = resident_bytes(pid);
        let written = put_all("w/").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let watched_growth = resident_bytes(pid).saturating_sub(before);
        let buffered = metric(port, "raftkv_watch_buffered_bytes").expect("the gauge");
        let streams = (STUCK + 1) as u64;
        assert!(
            buffered > 0.0 && buffered <= (streams * BUFFER) as f64,
            "{buffered} bytes queued for {streams} streams of {BUFFER}"
        );
        // Unbounded, each stream would hold what it was sent (37 MiB here);
        // bounded, its buffer and what HTTP/2 has in flight.
        let allowed = plain_growth + streams * 4 * BUFFER;
        eprintln!(
            "{streams} stuck streams: memory grew {} MiB (the same writes unwatched: {} MiB), {} KiB queued",
            watched_growth >> 20,
            plain_growth >> 20,
            buffered as u64 >> 10
        );
        assert!(
            watched_growth <= allowed,
            "memory grew {} MiB with stuck watchers, {} MiB without, allowed {} MiB",
            watched_growth >> 20,
            plain_growth >> 20,
            allowed >> 20
        );

        // Their clients go away: what the streams held is given back.
        drop(stuck);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let reader_share = loop {
            let left = metric(port, "raftkv_watch_buffered_bytes").expect("the gauge");
            if left <= BUFFER as f64 || std::time::Instant::now() > deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            reader_share <= BUFFER as f64,
            "{reader_share} bytes still queued with one stream left"
        );

        // A stream that reads again gets every event once, in order: what did
        // not fit was read back from history.
        let mut revisions = Vec::new();
        while revisions.len() < PUTS {
            let response = late_reader.next().await;
            for event in &response.events {
                let kv = event.kv.as_ref().expect("kv");
                assert_eq!(kv.value.len(), value.len());
                revisions.push(kv.mod_revision);
            }
        }
        assert_eq!(revisions, written, "every revision once, in order");
        drop(late_reader);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metric(port, "raftkv_watch_buffered_bytes") != Some(0.0) {
            assert!(
                std::time::Instant::now() < deadline,
                "queued bytes did not return to 0"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(server.stop().success());
}
