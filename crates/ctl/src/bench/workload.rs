//! What one benchmark operation is, for each workload, and the keys and
//! values it uses.
//!
//! Keys are decimal numbers zero-padded to `--key-size` (or to the digits
//! `--key-space` needs, if more), so their byte order is their numeric order
//! and a range of N consecutive keys is `[key(i), key(i + N))`. Values are
//! bytes of one letter: neither etcd nor raftkv compresses values, so their
//! content does not change the cost. Their size is `--val-size`, or
//! log-uniform between `--val-size-min` and `--val-size-max` as a function
//! of the seed and the key's index, so two runs with one seed write the
//! same sizes to the same keys however their clients interleave.
//!
//! A [`Worker`] is one client: it owns its streams (watch, keep-alive) and
//! what it has learnt (the revisions of its txn-put keys). The runner times
//! each [`Worker::op`] as a whole; for `watch` that is from sending the put
//! to receiving its event, for `lease-keepalive` one request and its answer.
//! Keep-alive workers share one set of [`Leases`], each request renewing
//! the next lease of the set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// The size of each key's value.
    pub sizes: ValueSizes,
    /// The largest value; each write sends a prefix of it.
    value: Vec<u8>,
}

impl KeySpace {
    /// A key space of `size` keys at least `key_size` bytes long.
    pub fn new(key_size: usize, size: u64, sequential: bool, sizes: ValueSizes) -> Self {
        let digits = size.saturating_sub(1).max(1).to_string().len();
        Self {
            width: key_size.max(digits),
            size: size.max(1),
            sequential,
            next: AtomicU64::new(0),
            sizes,
            value: vec![b'v'; sizes.max()],
        }
    }

    /// The key numbered `index`.
    pub fn key(&self, index: u64) -> Vec<u8> {
        format!("{index:0width$}", width = self.width).into_bytes()
    }

    /// The value written to the key numbered `index`.
    pub fn value(&self, index: u64) -> Vec<u8> {
        self.value[..self.sizes.of(index)].to_vec()
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

/// How big each value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueSizes {
    /// Every value this many bytes.
    Fixed(usize),
    /// From `min` to `max` bytes (both included), log-uniform: each power
    /// of two between them is as likely, as small values far outnumber
    /// large ones in most stores.
    LogUniform {
        /// Smallest size, at least 1.
        min: usize,
        /// Largest size.
        max: usize,
        /// Picks the sizes: one seed, one size for each key index.
        seed: u64,
    },
}

impl ValueSizes {
    /// The size of the value of the key numbered `index`.
    pub fn of(&self, index: u64) -> usize {
        match *self {
            ValueSizes::Fixed(size) => size,
            ValueSizes::LogUniform { min, max, seed } => {
                let (low, high) = (min.max(1) as f64, max as f64 + 1.0);
                // 53 random bits as a fraction in [0, 1).
                let unit =
                    (splitmix64(seed ^ splitmix64(index)) >> 11) as f64 / (1u64 << 53) as f64;
                let size = (low.ln() + unit * (high.ln() - low.ln())).exp();
                (size as usize).clamp(min.max(1), max.max(1))
            }
        }
    }

    /// The largest size.
    pub fn max(&self) -> usize {
        match *self {
            ValueSizes::Fixed(size) => size,
            ValueSizes::LogUniform { min, max, .. } => max.max(min).max(1),
        }
    }
}

/// SplitMix64's output function: a fixed, well-mixed hash, so sizes do not
/// depend on the `rand` crate's version.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The leases a keep-alive run renews, granted before it and shared by
/// its workers, which take them in turn.
#[derive(Debug, Default)]
pub struct Leases {
    ids: Vec<i64>,
    next: AtomicU64,
}

impl Leases {
    /// The leases `ids`.
    pub fn new(ids: Vec<i64>) -> Self {
        Self {
            ids,
            next: AtomicU64::new(0),
        }
    }

    /// The next lease to renew, or `None` when there are none.
    pub fn pick(&self) -> Option<i64> {
        if self.ids.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.ids.len() as u64;
        self.ids.get(n as usize).copied()
    }

    /// Every lease.
    pub fn ids(&self) -> &[i64] {
        &self.ids
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

impl OpError {
    /// etcd's NOSPACE: the store reached `--quota-backend-bytes`.
    pub fn is_nospace(&self) -> bool {
        self.code == "ResourceExhausted" && self.message.contains("database space exceeded")
    }
}

/// What a successful operation reports besides its latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A txn-put whose compare failed (another writer changed the key since
    /// this client learnt its revision); the revision is learnt from it.
    pub conflict: bool,
    /// Key and value bytes the operation wrote (0 for reads).
    pub written: u64,
}

impl Outcome {
    fn wrote(key: &[u8], value: &[u8]) -> Self {
        Self {
            conflict: false,
            written: (key.len() + value.len()) as u64,
        }
    }
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
    /// lease-keepalive: the leases all workers renew.
    leases: Arc<Leases>,
}

struct WatchStream {
    key: Vec<u8>,
    _requests: mpsc::Sender<pb::WatchRequest>,
    events: Streaming<pb::WatchResponse>,
}

struct KeepAliveStream {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAliveStream {
    /// Asks to renew lease `id` and waits for its answer.
    async fn renew(&mut self, id: i64, timeout: Duration) -> Result<Outcome, OpError> {
        self.requests
            .send(pb::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| OpError::client(Code::Unavailable, "keep-alive stream closed"))?;
        self.answer(id, timeout).await
    }

    /// Waits for the answer to the renewal of lease `id`.
    async fn answer(&mut self, id: i64, timeout: Duration) -> Result<Outcome, OpError> {
        let answer = tokio::time::timeout(timeout, self.answers.message())
            .await
            .map_err(|_| {
                OpError::client(Code::DeadlineExceeded, "no keep-alive answer in time")
            })??;
        match answer {
            Some(resp) if resp.id != id => Err(OpError::client(
                Code::Internal,
                format!("keep-alive of lease {id} answered for lease {}", resp.id),
            )),
            Some(resp) if resp.ttl > 0 => Ok(Outcome::default()),
            Some(_) => Err(OpError::client(Code::NotFound, "lease expired")),
            None => Err(OpError::client(
                Code::Unavailable,
                "keep-alive stream ended",
            )),
        }
    }
}

impl Worker {
    /// Worker number `index` on `channel`, with its stream opened (a watch,
    /// or a keep-alive stream renewing `leases`) when the workload needs
    /// one.
    pub async fn start(
        settings: Settings,
        index: usize,
        channel: Channel,
        seed: u64,
        leases: Arc<Leases>,
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
            leases,
        };
        match settings.kind {
            Kind::Watch => worker.watch = Some(worker.open_watch(channel).await?),
            Kind::LeaseKeepalive => {
                let first = worker.lease_to_renew()?;
                worker.keepalive = Some(worker.open_keepalive(first).await?);
            }
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

    async fn put(&mut self, keys: &KeySpace) -> Result<Outcome, OpError> {
        let index = keys.pick(&mut self.rng);
        let req = pb::PutRequest {
            key: keys.key(index),
            value: keys.value(index),
            ..Default::default()
        };
        let outcome = Outcome::wrote(&req.key, &req.value);
        self.kv.put(req).await?;
        Ok(outcome)
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
        let value = keys.value(index);
        let written = Outcome::wrote(&key, &value);
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
                    value,
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
            return Ok(written);
        }
        let seen = resp.responses.iter().find_map(|op| match &op.response {
            Some(pb::response_op::Response::ResponseRange(range)) => {
                Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
            }
            _ => None,
        });
        self.revisions.insert(index, seen.unwrap_or(0));
        Ok(Outcome {
            conflict: true,
            written: 0,
        })
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
            value: keys.value(self.index as u64),
            ..Default::default()
        };
        let written = Outcome::wrote(&req.key, &req.value);
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
                            return Ok(written);
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

    /// A keep-alive stream, opened by renewing lease `first`.
    async fn open_keepalive(&self, first: i64) -> Result<KeepAliveStream, OpError> {
        let timeout = self.settings.request_timeout;
        let (tx, rx) = mpsc::channel(4);
        // grpc-go (etcd) sends a stream's headers with its first answer, so
        // the call opens only once a request is on its way.
        tx.send(pb::LeaseKeepAliveRequest { id: first })
            .await
            .map_err(|_| OpError::client(Code::Internal, "keep-alive request queue closed"))?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut lease = self.lease.clone();
        let answers = tokio::time::timeout(timeout, lease.lease_keep_alive(stream))
            .await
            .map_err(|_| {
                OpError::client(
                    Code::DeadlineExceeded,
                    "keep-alive stream not opened in time",
                )
            })??
            .into_inner();
        let mut opened = KeepAliveStream {
            requests: tx,
            answers,
        };
        opened.answer(first, timeout).await?;
        Ok(opened)
    }

    async fn keep_alive(&mut self) -> Result<Outcome, OpError> {
        let id = self.lease_to_renew()?;
        let timeout = self.settings.request_timeout;
        let renewed = match self.keepalive.as_mut() {
            Some(stream) => stream.renew(id, timeout).await,
            None => self.open_keepalive(id).await.map(|stream| {
                self.keepalive = Some(stream);
                Outcome::default()
            }),
        };
        // A failed stream would fail every later renewal at once: the next
        // one opens another (the failure is counted, not retried).
        if renewed.is_err() {
            self.keepalive = None;
        }
        renewed
    }

    fn lease_to_renew(&self) -> Result<i64, OpError> {
        self.leases
            .pick()
            .ok_or_else(|| OpError::client(Code::Internal, "no leases to keep alive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_so_byte_order_is_numeric_order() {
        let keys = KeySpace::new(4, 100_000, false, ValueSizes::Fixed(3));
        assert_eq!(keys.width, 5);
        assert_eq!(keys.key(42), b"00042".to_vec());
        assert!(keys.key(9) < keys.key(10));
        assert_eq!(keys.value(7), b"vvv".to_vec());
        assert_eq!(keys.index_of(b"00042"), Some(42));
        assert_eq!(keys.index_of(b"0042"), None, "another width");
        assert_eq!(keys.index_of(b"bench"), None);
        assert_eq!(
            KeySpace::new(4, 50, false, ValueSizes::Fixed(3)).index_of(b"0077"),
            None,
            "outside"
        );
    }

    #[test]
    fn sequential_keys_wrap_around_the_key_space() {
        let keys = KeySpace::new(8, 3, true, ValueSizes::Fixed(1));
        let mut rng = SmallRng::seed_from_u64(1);
        let picked: Vec<u64> = (0..5).map(|_| keys.pick(&mut rng)).collect();
        assert_eq!(picked, vec![0, 1, 2, 0, 1]);
    }

    #[test]
    fn txn_put_workers_own_disjoint_keys() {
        let keys = KeySpace::new(8, 10, false, ValueSizes::Fixed(1));
        assert_eq!(keys.owned(7, 1, 4), 5);
        assert_eq!(keys.owned(9, 2, 4), 2);
        assert!((0..10).all(|i| keys.owned(i, 3, 4) % 4 == 3));
    }

    #[test]
    fn random_keys_stay_in_the_key_space() {
        let keys = KeySpace::new(8, 10, false, ValueSizes::Fixed(1));
        let mut rng = SmallRng::seed_from_u64(7);
        assert!((0..1000).all(|_| keys.pick(&mut rng) < 10));
    }

    #[test]
    fn log_uniform_sizes_stay_within_bounds_and_follow_the_seed() {
        let sizes = ValueSizes::LogUniform {
            min: 10,
            max: 65_536,
            seed: 16,
        };
        let drawn: Vec<usize> = (0..20_000).map(|i| sizes.of(i)).collect();
        assert!(drawn.iter().all(|s| (10..=65_536).contains(s)));
        assert_eq!(drawn, (0..20_000).map(|i| sizes.of(i)).collect::<Vec<_>>());
        let other = ValueSizes::LogUniform {
            min: 10,
            max: 65_536,
            seed: 17,
        };
        assert_ne!(drawn, (0..20_000).map(|i| other.of(i)).collect::<Vec<_>>());
        // Log-uniform: about as many below the geometric mean (~810 B) as
        // above it, and both ends are reached.
        let below = drawn.iter().filter(|&&s| s < 810).count();
        assert!((9_000..11_000).contains(&below), "{below}");
        assert!(drawn.iter().any(|&s| s < 12) && drawn.iter().any(|&s| s > 60_000));
        assert_eq!(sizes.max(), 65_536);
        let keys = KeySpace::new(8, 10, true, sizes);
        assert_eq!(keys.value(3).len(), sizes.of(3));
    }

    #[test]
    fn one_size_range_gives_that_size() {
        let sizes = ValueSizes::LogUniform {
            min: 5,
            max: 5,
            seed: 1,
        };
        assert!((0..100).all(|i| sizes.of(i) == 5));
    }

    #[test]
    fn leases_are_taken_in_turn() {
        let leases = Leases::new(vec![7, 8, 9]);
        let picked: Vec<_> = (0..5).filter_map(|_| leases.pick()).collect();
        assert_eq!(picked, vec![7, 8, 9, 7, 8]);
        assert_eq!(Leases::default().pick(), None);
    }

    #[test]
    fn nospace_is_recognised_by_code_and_message() {
        let nospace = OpError {
            code: "ResourceExhausted".into(),
            message: "etcdserver: mvcc: database space exceeded".into(),
        };
        assert!(nospace.is_nospace());
        let other = OpError {
            code: "ResourceExhausted".into(),
            message: "grpc: received message larger than max".into(),
        };
        assert!(!other.is_nospace());
    }
}
