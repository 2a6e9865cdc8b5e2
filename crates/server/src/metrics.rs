//! The server's Prometheus metrics, under etcd's names so etcd's dashboards
//! and alerts read them unchanged.
//!
//! One [`Metrics`] per member holds the registry and the series. The node
//! driver updates [`NodeMetrics`] (leadership, proposals, WAL fsync, backend
//! commit, peer round trips), the gRPC layer counts calls through
//! [`GrpcMetrics`], and the `/metrics` handler refreshes the gauges that are
//! read from the store at scrape time ([`StoreGauges`]) before encoding.
//!
//! Everything written on a request or Raft path is an atomic: counters and
//! gauges are prometheus-client's (one `AtomicU64`/`AtomicI64` each), and
//! [`Histogram`] is this module's lock-free histogram. The per-method gRPC
//! counters are created up front (as etcd's go-grpc-prometheus does, for
//! every method and code) and found through a map that is never written
//! after start, so counting takes no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use prost::Message as _;

/// Upper bounds of etcd's disk latency histograms (WAL fsync, backend
/// commit): 1 ms doubling to 8.192 s.
pub const DISK_SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Upper bounds of etcd's peer round-trip histogram: 0.1 ms doubling to
/// 0.8192 s.
pub const PEER_RTT_SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192,
];

/// A histogram of durations with fixed bounds, written with atomics only.
/// A scrape that races an observation may see the count and the sum one
/// observation apart; each is exact on its own.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound, then one for larger values (`+Inf`).
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.inner.bounds.partition_point(|&bound| bound < seconds);
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The label set of a peer round trip: etcd labels it `To`, the peer's id.
type PeerLabels = [(&'static str, String); 1];

/// What the node driver measures.
#[derive(Debug)]
pub struct NodeMetrics {
    /// 1 while a leader is known.
    pub has_leader: Gauge,
    /// 1 while this member leads.
    pub is_leader: Gauge,
    /// Changes to a new known leader.
    pub leader_changes_seen: Counter,
    /// The commit index (etcd reports it as this gauge).
    pub proposals_committed: Gauge,
    /// The applied index.
    pub proposals_applied: Gauge,
    /// Proposals waiting to be applied.
    pub proposals_pending: Gauge,
    /// Proposals answered with an error.
    pub proposals_failed: Counter,
    /// WAL fsync latency.
    pub wal_fsync: Histogram,
    /// Backend (store) commit latency, fsync included.
    pub backend_commit: Histogram,
    peer_round_trip: Family<PeerLabels, Histogram, fn() -> Histogram>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes_seen: Counter::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            wal_fsync: Histogram::new(&DISK_SECONDS_BUCKETS),
            backend_commit: Histogram::new(&DISK_SECONDS_BUCKETS),
            peer_round_trip: Family::new_with_constructor(|| {
                Histogram::new(&PEER_RTT_SECONDS_BUCKETS)
            }),
        }
    }
}

impl NodeMetrics {
    /// The round-trip histogram of one peer. Takes the family's lock: call it
    /// once per peer and keep the handle.
    pub fn peer_round_trip(&self, peer: u64) -> Histogram {
        self.peer_round_trip
            .get_or_create_owned(&[("To", format!("{peer:x}"))])
    }

    fn register(&self, registry: &mut Registry) {
        let server = registry.sub_registry_with_prefix("etcd_server");
        server.register(
            "has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            self.has_leader.clone(),
        );
        server.register(
            "is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            self.is_leader.clone(),
        );
        server.register(
            "leader_changes_seen",
            "The number of leader changes seen.",
            self.leader_changes_seen.clone(),
        );
        server.register(
            "proposals_committed_total",
            "The total number of consensus proposals committed.",
            self.proposals_committed.clone(),
        );
        server.register(
            "proposals_applied_total",
            "The total number of consensus proposals applied.",
            self.proposals_applied.clone(),
        );
        server.register(
            "proposals_pending",
            "The current number of pending proposals to commit.",
            self.proposals_pending.clone(),
        );
        server.register(
            "proposals_failed",
            "The total number of failed proposals seen.",
            self.proposals_failed.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            self.wal_fsync.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            self.backend_commit.clone(),
        );
        registry.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers (a heartbeat and its answer).",
            self.peer_round_trip.clone(),
        );
    }
}

/// Store figures read at scrape time.
#[derive(Debug, Default)]
pub struct StoreGauges {
    /// Size of the store's file.
    pub db_total_size_bytes: Gauge,
    /// Bytes of the file holding live data.
    pub db_in_use_bytes: Gauge,
    /// The current revision.
    pub current_revision: Gauge,
    /// The compaction revision.
    pub compact_revision: Gauge,
    /// The process's resident memory (etcdctl's `check datascale` reads it).
    pub resident_memory_bytes: Gauge,
}

impl StoreGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            self.db_total_size_bytes.clone(),
        );
        registry.register(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            self.db_in_use_bytes.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            self.current_revision.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            self.compact_revision.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            self.resident_memory_bytes.clone(),
        );
    }
}

/// How a gRPC method streams, as go-grpc-prometheus labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcType {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStream,
    /// One request, a response stream.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl GrpcType {
    fn label(self) -> &'static str {
        match self {
            GrpcType::Unary => "unary",
            GrpcType::ClientStream => "client_stream",
            GrpcType::ServerStream => "server_stream",
            GrpcType::BidiStream => "bidi_stream",
        }
    }
}

/// A served gRPC method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcMethod {
    /// The full service name, e.g. `etcdserverpb.KV`.
    pub service: String,
    /// The method name, e.g. `Range`.
    pub method: String,
    /// How it streams.
    pub kind: GrpcType,
}

impl GrpcMethod {
    /// The HTTP/2 path gRPC calls it by.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }
}

/// The methods of the named services of etcd's API, from the compiled
/// descriptors, plus the standard health service's.
pub fn served_methods(services: &[&str]) -> Vec<GrpcMethod> {
    let mut methods = Vec::new();
    // The descriptor set is compiled into the binary by the proto crate's
    // build; if it did not decode, the build itself would be broken.
    let set = prost_types::FileDescriptorSet::decode(raftkv_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_default();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            if !services.contains(&full.as_str()) {
                continue;
            }
            for method in &service.method {
                let kind = match (method.client_streaming(), method.server_streaming()) {
                    (false, false) => GrpcType::Unary,
                    (true, false) => GrpcType::ClientStream,
                    (false, true) => GrpcType::ServerStream,
                    (true, true) => GrpcType::BidiStream,
                };
                methods.push(GrpcMethod {
                    service: full.clone(),
                    method: method.name().to_string(),
                    kind,
                });
            }
        }
    }
    // grpc.health.v1.Health comes from tonic-health, not etcd's descriptors.
    for (method, kind) in [
        ("Check", GrpcType::Unary),
        ("Watch", GrpcType::ServerStream),
    ] {
        methods.push(GrpcMethod {
            service: "grpc.health.v1.Health".into(),
            method: method.into(),
            kind,
        });
    }
    methods
}

/// gRPC codes 0..=16 by name, as Go's `codes.Code.String()` spells them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

type GrpcLabels = [(&'static str, String); 4];

/// The counters of one method.
#[derive(Debug)]
pub struct MethodCounters {
    started: Counter,
    handled: [Counter; 17],
}

impl MethodCounters {
    /// A call started.
    pub fn started(&self) {
        self.started.inc();
    }

    /// A call finished with `code`.
    pub fn handled(&self, code: tonic::Code) {
        let index = (code as usize).min(self.handled.len() - 1);
        self.handled[index].inc();
    }
}

/// Calls started and handled per method (go-grpc-prometheus's
/// `grpc_server_started_total` and `grpc_server_handled_total`).
#[derive(Debug, Default)]
pub struct GrpcMetrics {
    by_path: HashMap<String, Arc<MethodCounters>>,
}

impl GrpcMetrics {
    fn new(methods: &[GrpcMethod], registry: &mut Registry) -> Self {
        let started = Family::<[(&'static str, String); 3], Counter>::default();
        let handled = Family::<GrpcLabels, Counter>::default();
        let mut by_path = HashMap::new();
        for m in methods {
            let kind = m.kind.label().to_string();
            let started_counter = started.get_or_create_owned(&[
                ("grpc_type", kind.clone()),
                ("grpc_service", m.service.clone()),
                ("grpc_method", m.method.clone()),
            ]);
            let handled_counters = GRPC_CODES.map(|code| {
                handled.get_or_create_owned(&[
                    ("grpc_type", kind.clone()),
                    ("grpc_service", m.service.clone()),
                    ("grpc_method", m.method.clone()),
                    ("grpc_code", code.to_string()),
                ])
            });
            by_path.insert(
                m.path(),
                Arc::new(MethodCounters {
                    started: started_counter,
                    handled: handled_counters,
                }),
            );
        }
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            started,
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            handled,
        );
        Self { by_path }
    }

    /// The counters of the method called by `path`; `None` for a method
    /// not served.
    pub fn method(&self, path: &str) -> Option<Arc<MethodCounters>> {
        self.by_path.get(path).cloned()
    }
}

/// Counts one call: started when made, handled with its code when it ends.
/// A call dropped before its code is known (the client went away) counts as
/// `Canceled`, as a cancelled gRPC call does.
#[derive(Debug)]
pub struct HandledGuard {
    counters: Arc<MethodCounters>,
    code: Option<tonic::Code>,
}

impl HandledGuard {
    /// Counts a started call.
    pub fn start(counters: Arc<MethodCounters>) -> Self {
        counters.started();
        Self {
            counters,
            code: None,
        }
    }

    /// Records how the call ended (the first answer wins).
    pub fn finish(&mut self, code: tonic::Code) {
        self.code.get_or_insert(code);
    }
}

impl Drop for HandledGuard {
    fn drop(&mut self) {
        self.counters
            .handled(self.code.unwrap_or(tonic::Code::Cancelled));
    }
}

/// One member's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The node driver's.
    pub node: Arc<NodeMetrics>,
    /// Per gRPC method.
    pub grpc: Arc<GrpcMetrics>,
    /// Read from the store when scraped.
    pub store: StoreGauges,
    /// Bytes of watch responses queued for clients that have not taken them
    /// yet, over every stream (each stream's share is bounded by
    /// `--watch-stream-buffer-bytes`).
    pub watch_buffered_bytes: Gauge,
}

impl Metrics {
    /// Metrics for a member serving `methods`, reporting etcd `version`.
    pub fn new(methods: &[GrpcMethod], version: &str) -> Self {
        let mut registry = Registry::default();
        let node = Arc::new(NodeMetrics::default());
        node.register(&mut registry);
        let store = StoreGauges::default();
        store.register(&mut registry);
        let grpc = Arc::new(GrpcMetrics::new(methods, &mut registry));
        let watch_buffered_bytes = Gauge::default();
        registry.register(
            "raftkv_watch_buffered_bytes",
            "Bytes of watch responses queued for clients that have not read them yet.",
            watch_buffered_bytes.clone(),
        );
        let versions = Family::<[(&'static str, String); 1], Gauge>::default();
        versions
            .get_or_create(&[("server_version", version.to_string())])
            .set(1);
        registry.register(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            versions,
        );
        Self {
            registry,
            node,
            grpc,
            store,
            watch_buffered_bytes,
        }
    }

    /// The registry in Prometheus' text format (OpenMetrics flavour).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_an_infinite_last_bucket() {
        let metrics = Metrics::new(&[], "3.5.13");
        metrics.node.wal_fsync.observe(Duration::from_micros(500));
        metrics.node.wal_fsync.observe(Duration::from_millis(3));
        metrics.node.wal_fsync.observe(Duration::from_secs(20));
        let text = metrics.encode().unwrap();
        let name = "etcd_disk_wal_fsync_duration_seconds";
        assert_eq!(sample(&text, &format!("{name}_count")), Some(3.0));
        assert_eq!(
            sample(&text, &format!("{name}_bucket{{le=\"0.001\"}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{name}_bucket{{le=\"0.004\"}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("{name}_bucket{{le=\"8.192\"}}")),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, &format!("{name}_bucket{{le=\"+Inf\"}}")),
            Some(3.0)
        );
        let sum = sample(&text, &format!("{name}_sum")).unwrap();
        assert!((sum - 20.0035).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn every_method_and_code_is_counted_from_the_start() {
        let methods = served_methods(&["etcdserverpb.KV", "etcdserverpb.Watch"]);
        let metrics = Metrics::new(&methods, "3.5.13");
        let range = metrics.grpc.method("/etcdserverpb.KV/Range").unwrap();
        drop(HandledGuard::start(range.clone()));
        let mut ok = HandledGuard::start(range);
        ok.finish(tonic::Code::Ok);
        ok.finish(tonic::Code::Internal);
        drop(ok);
        assert!(metrics
            .grpc
            .method("/etcdserverpb.Auth/Authenticate")
            .is_none());
        let text = metrics.encode().unwrap();
        let line = |method: &str, kind: &str, service: &str, code: &str| {
            format!("grpc_server_handled_total{{grpc_type=\"{kind}\",grpc_service=\"{service}\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}")
        };
        assert_eq!(
            sample(&text, &line("Range", "unary", "etcdserverpb.KV", "OK")),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &line("Range", "unary", "etcdserverpb.KV", "Canceled")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &line("Watch", "bidi_stream", "etcdserverpb.Watch", "Unavailable")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                &line("Check", "unary", "grpc.health.v1.Health", "OK")
            ),
            Some(0.0)
        );
    }

    #[test]
    fn node_series_carry_etcds_names() {
        let metrics = Metrics::new(&[], "3.5.13");
        metrics.node.has_leader.set(1);
        metrics.node.leader_changes_seen.inc();
        metrics.node.proposals_committed.set(7);
        metrics
            .node
            .peer_round_trip(0xabc)
            .observe(Duration::from_millis(1));
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, "etcd_server_has_leader"), Some(1.0));
        assert_eq!(
            sample(&text, "etcd_server_leader_changes_seen_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "etcd_server_proposals_committed_total"),
            Some(7.0)
        );
        assert_eq!(
            sample(
                &text,
                "etcd_network_peer_round_trip_time_seconds_count{To=\"abc\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "etcd_server_version{server_version=\"3.5.13\"}"),
            Some(1.0)
        );
    }
}
