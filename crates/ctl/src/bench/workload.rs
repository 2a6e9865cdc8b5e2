//! What one benchmark operation is, for each workload, and the keys and
//! values it uses.
//!
//! Keys are decimal numbers zero-padded to `--key-size` (or to the digits
//! `--key-space` needs, if more), so their byte order is their numeric order
//! and a range of N consecutive keys is `[key(i), key(i + N))`. Values are
//! `--val-size` bytes of one letter: neither etcd nor raftkv compresses
//! values, so their content does not change the cost.
//!
//! A [`Worker`] is one client: it owns its streams (watch, keep-alive) and
//! what it has learnt (the revisions of its txn-put keys). The runner times
//! each [`Worker::op`] as a whole; for `watch` that is from sending the put
//! to receiving its event, for `lease-keepalive` one request and its answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::Conn as Channel;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// KV.Put of one key.
    Put,
    /// KV.Range of one key.
    Get,
    /// KV.Txn: compare the key's mod revision, put if equal, get if not;
    /// each worker has its own keys, so a compare fails only the first time
    /// a worker meets a key written before the run.
    TxnPut,
    /// KV.Range of `--range-size` consecutive keys.
    Range,
    /// A put and the event it causes on this client's watch stream.
    Watch,
    /// One keep-alive request and its answer on this client's stream.
    LeaseKeepalive,
    /// Get or put, by `--read-ratio`.
    Mixed,
}

impl Kind {
    /// The name used on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Get => "get",
            Kind::TxnPut => "txn-put",
            Kind::Range => "range",
            Kind::Watch => "watch",
            Kind::LeaseKeepalive => "lease-keepalive",
            Kind::Mixed => "mixed",
        }
    }

    /// Whether the workload reads (so `--serializable` applies to it).
    pub fn reads(self) -> bool {
        matches!(self, Kind::Get | Kind::Range | Kind::Mixed)
    }
}

/// How keys and values are made; shared by all workers.
#[derive(Debug)]
pub struct KeySpace {
    /// Width of every key, in bytes.
    pub width: usize,
    /// Number of distinct keys.
    pub size: u64,
    /// Whether keys are taken in order.
    pub sequential: bool,
    /// The next sequential key (over all workers).
    next: AtomicU64,
    /// The value of every write.
    pub value: Vec<u8>,
}

impl KeySpace {
    /// A key space of `size` keys at least `key_size` bytes long.
    pub fn new(key_size: usize, size: u64, sequential: bool, val_size: usize) -> Self {
        let digits = size.saturating_sub(1).max(1).to_string().len();
        Self {
            width: key_size.max(digits),
            size: size.max(1),
            sequential,
            next: AtomicU64::new(0),
            value: vec![b'v'; val_size],
        }
    }

    /// The key numbered `index`.
    pub fn key(&self, index: u64) -> Vec<u8> {
        format!("{index:0width$}", width = self.width).into_bytes()
    }

    /// `index` moved to the nearest key of worker `worker` out of
    /// `workers`, which own the keys equal to them modulo `workers`: a
    /// txn-put worker then only conflicts with itself (when the key space
    /// has at least one key per worker).
    pub fn owned(&self, index: u64, worker: usize, workers: usize) -> u64 {
        let (worker, workers) = (worker as u64, workers.max(1) as u64);
        let owned = index - index % workers + worker % workers;
        if owned < self.size {
            owned
        } else {
            worker % self.size
        }
    }

    /// The index of `key` if it is one of this key space's keys.
    pub fn index_of(&self, key: &[u8]) -> Option<u64> {
        if key.len() != self.width {
            return None;
        }
        let index: u64 = std::str::from_utf8(key).ok()?.parse().ok()?;
        (index < self.size).then_some(index)
    }

    /// The next key index for a worker: in order, or at random.
    pub fn pick(&self, rng: &mut SmallRng) -> u64 {
        if self.sequential {
            self.next.fetch_add(1, Ordering::Relaxed) % self.size
        } else {
            rng.gen_range(0..self.size)
        }
    }
}

/// Settings a worker needs beyond its connection.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The workload.
    pub kind: Kind,
    /// Serializable reads.
    pub serializable: bool,
    /// Share of reads in `mixed`.
    pub read_ratio: f64,
    /// Keys per `range` request.
    pub range_size: u64,
    /// Longest wait for one answer (or one watch event).
    pub request_timeout: Duration,
    /// Number of workers (txn-put gives each its own keys).
    pub clients: usize,
}

/// Why an operation failed: a gRPC status, or something the client saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpError {
    /// grpc-go's name of the code (`Unavailable`, `DeadlineExceeded`...).
    pub code: String,
    /// The message.
    pub message: String,
}

impl OpError {
    fn status(status: &Status) -> Self {
        Self {
            code: crate::error::go_code_name(status.code()).to_string(),
            message: status.message().to_string(),
        }
    }

    fn client(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: crate::error::go_code_name(code).to_string(),
            message: message.into(),
        }
    }
}

impl From<Status> for OpError {
    fn from(status: Status) -> Self {
        Self::status(&status)
    }
}

/// What a successful operation reports besides its latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A txn-put whose compare failed (another writer changed the key since
    /// this client learnt its revision); the revision is learnt from it.
    pub conflict: bool,
}

/// One client of the benchmark.
pub struct Worker {
    settings: Settings,
    index: usize,
    kv: KvClient<Channel>,
    rng: SmallRng,
    /// txn-put: the mod revision last seen of each key this worker wrote.
    revisions: HashMap<u64, i64>,
    watch: Option<WatchStream>,
    keepalive: Option<KeepAliveStream>,
    lease: LeaseClient<Channel>,
}

struct WatchStream {
    key: Vec<u8>,
    _requests: mpsc::Sender<pb::WatchRequest>,
    events: Streaming<pb::WatchResponse>,
}

struct KeepAliveStream {
    id: i64,
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

impl Worker {
    /// Worker number `index` on `channel`, with its streams opened (a
    /// watch, or a lease and its keep-alive stream) when the workload
    /// needs them.
    pub async fn start(
        settings: Settings,
        index: usize,
        channel: Channel,
        seed: u64,
    ) -> Result<Self, OpError> {
        let mut worker = Self {
            settings,
            index,
            kv: KvClient::new(channel.clone()),
            rng: SmallRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            revisions: HashMap::new(),
            watch: None,
            keepalive: None,
            lease: LeaseClient::new(channel.clone()),
        };
        match settings.kind {
            Kind::Watch => worker.watch = Some(worker.open_watch(channel).await?),
            Kind::LeaseKeepalive => worker.keepalive = Some(worker.open_keepalive().await?),
            _ => {}
        }
        Ok(worker)
    }

    /// txn-put: takes the mod revisions of the keys it owns from
    /// `revisions` (key index to mod revision, read before the timed run),
    /// so that keys written earlier do not fail their first compare.
    pub fn learn_revisions(&mut self, keys: &KeySpace, revisions: &HashMap<u64, i64>) {
        let (worker, workers) = (self.index, self.settings.clients);
        self.revisions.extend(
            revisions
                .iter()
                .filter(|(index, _)| keys.owned(**index, worker, workers) == **index)
                .map(|(index, revision)| (*index, *revision)),
        );
    }

    /// Runs one operation of the workload.
    pub async fn op(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        match self.settings.kind {
            Kind::Put => self.put(keys).await,
            Kind::Get => self.get(keys).await,
            Kind::TxnPut => self.txn_put(keys).await,
            Kind::Range => self.range(keys).await,
            Kind::Watch => self.watch_put(keys).await,
            Kind::LeaseKeepalive => self.keep_alive().await,
            Kind::Mixed => {
                if self.rng.gen_bool(self.settings.read_ratio.clamp(0.0, 1.0)) {
                    self.get(keys).await
                } else {
                    self.put(keys).await
                }
            }
        }
    }

    /// Releases what the worker holds on the server (its lease).
    pub async fn finish(mut self) {
        if let Some(stream) = self.keepalive.take() {
            let revoke = pb::LeaseRevokeRequest { id: stream.id };
            let _ = tokio::time::timeout(
                self.settings.request_timeout,
                self.lease.lease_revoke(revoke),
            )
            .await;
        }
    }

    async fn put(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let key = keys.key(keys.pick(&mut self.rng));
        let req = pb::PutRequest {
            key,
            value: keys.value.clone(),
            ..Default::default()
        };
        self.kv.put(req).await?;
        Ok(Outcome::default())
    }

    async fn get(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let req = pb::RangeRequest {
            key: keys.key(keys.pick(&mut self.rng)),
            serializable: self.settings.serializable,
            ..Default::default()
        };
        self.kv.range(req).await?;
        Ok(Outcome::default())
    }

    async fn range(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let span = self.settings.range_size.clamp(1, keys.size);
        let start = self.rng.gen_range(0..=keys.size - span);
        let req = pb::RangeRequest {
            key: keys.key(start),
            range_end: keys.key(start + span),
            serializable: self.settings.serializable,
            ..Default::default()
        };
        self.kv.range(req).await?;
        Ok(Outcome::default())
    }

    async fn txn_put(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let index = keys.owned(keys.pick(&mut self.rng), self.index, self.settings.clients);
        let key = keys.key(index);
        let expected = self.revisions.get(&index).copied().unwrap_or(0);
        let req = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::ModRevision(expected)),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    value: keys.value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let resp = self.kv.txn(req).await?.into_inner();
        if resp.succeeded {
            let revision = resp.header.map_or(0, |h| h.revision);
            self.revisions.insert(index, revision);
            return Ok(Outcome::default());
        }
        let seen = resp.responses.iter().find_map(|op| match &op.response {
            Some(pb::response_op::Response::ResponseRange(range)) => {
                Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
            }
            _ => None,
        });
        self.revisions.insert(index, seen.unwrap_or(0));
        Ok(Outcome { conflict: true })
    }

    async fn open_watch(&self, channel: Channel) -> Result<WatchStream, OpError> {
        let key = format!("bench-watch/{:08}", self.index).into_bytes();
        let (tx, rx) = mpsc::channel(4);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key.clone(),
                    ..Default::default()
                },
            )),
        };
        tx.send(create)
            .await
            .map_err(|_| OpError::client(Code::Internal, "watch request queue closed"))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut events = WatchClient::new(channel).watch(stream).await?.into_inner();
        // The first answer confirms the watch: events after it are ours.
        let created = tokio::time::timeout(self.settings.request_timeout, events.message())
            .await
            .map_err(|_| OpError::client(Code::DeadlineExceeded, "watch not created in time"))??;
        match created {
            Some(resp) if resp.created && !resp.canceled => Ok(WatchStream {
                key,
                _requests: tx,
                events,
            }),
            _ => Err(OpError::client(Code::Unavailable, "watch not created")),
        }
    }

    async fn watch_put(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let timeout = self.settings.request_timeout;
        let Some(stream) = self.watch.as_mut() else {
            return Err(OpError::client(Code::Internal, "no watch stream"));
        };
        let req = pb::PutRequest {
            key: stream.key.clone(),
            value: keys.value.clone(),
            ..Default::default()
        };
        let revision = self
            .kv
            .put(req)
            .await?
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
        let wait = async {
            loop {
                match stream.events.message().await? {
                    Some(resp) if resp.canceled => {
                        return Err(OpError::client(Code::Cancelled, "watch canceled"))
                    }
                    Some(resp) => {
                        let seen = resp
                            .events
                            .iter()
                            .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= revision));
                        if seen {
                            return Ok(Outcome::default());
                        }
                    }
                    None => return Err(OpError::client(Code::Unavailable, "watch stream ended")),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| OpError::client(Code::DeadlineExceeded, "no watch event in time"))?
    }

    async fn open_keepalive(&mut self) -> Result<KeepAliveStream, OpError> {
        let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
        let id = self.lease.lease_grant(grant).await?.into_inner().id;
        let (tx, rx) = mpsc::channel(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let answers = self.lease.lease_keep_alive(stream).await?.into_inner();
        Ok(KeepAliveStream {
            id,
            requests: tx,
            answers,
        })
    }

    async fn keep_alive(&mut self) -> Result<Outcome, OpError> {
        let timeout = self.settings.request_timeout;
        let Some(stream) = self.keepalive.as_mut() else {
            return Err(OpError::client(Code::Internal, "no keep-alive stream"));
        };
        stream
            .requests
            .send(pb::LeaseKeepAliveRequest { id: stream.id })
            .await
            .map_err(|_| OpError::client(Code::Unavailable, "keep-alive stream closed"))?;
        let answer = tokio::time::timeout(timeout, stream.answers.message())
            .await
            .map_err(|_| {
                OpError::client(Code::DeadlineExceeded, "no keep-alive answer in time")
            })??;
        match answer {
            Some(resp) if resp.ttl > 0 => Ok(Outcome::default()),
            Some(_) => Err(OpError::client(Code::NotFound, "lease expired")),
            None => Err(OpError::client(
                Code::Unavailable,
                "keep-alive stream ended",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_so_byte_order_is_numeric_order() {
        let keys = KeySpace::new(4, 100_000, false, 3);
        assert_eq!(keys.width, 5);
        assert_eq!(keys.key(42), b"00042".to_vec());
        assert!(keys.key(9) < keys.key(10));
        assert_eq!(keys.value, b"vvv".to_vec());
        assert_eq!(keys.index_of(b"00042"), Some(42));
        assert_eq!(keys.index_of(b"0042"), None, "another width");
        assert_eq!(keys.index_of(b"bench"), None);
        assert_eq!(
            KeySpace::new(4, 50, false, 3).index_of(b"0077"),
            None,
            "outside"
        );
    }

    #[test]
    fn sequential_keys_wrap_around_the_key_space() {
        let keys = KeySpace::new(8, 3, true, 1);
        let mut rng = SmallRng::seed_from_u64(1);
        let picked: Vec<u64> = (0..5).map(|_| keys.pick(&mut rng)).collect();
        assert_eq!(picked, vec![0, 1, 2, 0, 1]);
    }

    #[test]
    fn txn_put_workers_own_disjoint_keys() {
        let keys = KeySpace::new(8, 10, false, 1);
        assert_eq!(keys.owned(7, 1, 4), 5);
        assert_eq!(keys.owned(9, 2, 4), 2);
        assert!((0..10).all(|i| keys.owned(i, 3, 4) % 4 == 3));
    }

    #[test]
    fn random_keys_stay_in_the_key_space() {
        let keys = KeySpace::new(8, 10, false, 1);
        let mut rng = SmallRng::seed_from_u64(7);
        assert!((0..1000).all(|_| keys.pick(&mut rng) < 10));
    }
}
