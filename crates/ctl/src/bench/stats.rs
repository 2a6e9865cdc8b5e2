//! Latencies and errors of a run, and the report printed from them.
//!
//! Each worker records into its own [`Recorder`] (no lock on the hot path);
//! the runner merges them into one [`Summary`] at the end. Latencies go into
//! an HDR histogram in microseconds, from 1 µs to 10 minutes with three
//! significant digits, so a percentile is within 0.1% of the truth whatever
//! its size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::workload::{OpError, ValueSizes};

/// Longest latency the histogram holds, in microseconds (10 minutes);
/// longer ones are recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;

/// The percentiles reported, as fractions.
pub const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

/// One worker's measurements.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Latencies of successful operations, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed operations by kind.
    pub errors: BTreeMap<OpError, u64>,
    /// Successful txn-puts whose compare failed.
    pub conflicts: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // Constant, valid bounds (low >= 1, high >= 2 * low, sigfig <= 5).
        let latency_us = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
            .expect("constant histogram bounds are valid");
        Self {
            latency_us,
            errors: BTreeMap::new(),
            conflicts: 0,
        }
    }

    /// A successful operation that took `latency`.
    pub fn ok(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    /// A failed operation.
    pub fn error(&mut self, error: OpError) {
        *self.errors.entry(error).or_insert(0) += 1;
    }

    /// Adds another worker's measurements to these.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: adding cannot fail; if it ever did,
        // the values are still counted one by one.
        if self.latency_us.add(&other.latency_us).is_err() {
            for v in other.latency_us.iter_recorded() {
                self.latency_us
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        for (error, count) in &other.errors {
            *self.errors.entry(error.clone()).or_insert(0) += count;
        }
        self.conflicts += other.conflicts;
    }

    /// Successful operations.
    pub fn ok_count(&self) -> u64 {
        self.latency_us.len()
    }

    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A whole run: what was run and what came out.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Workload name.
    pub workload: String,
    /// Free-form label (`etcd`, `raftkv`).
    pub label: String,
    /// Endpoints used.
    pub endpoints: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// gRPC connections.
    pub conns: usize,
    /// Serializable reads.
    pub serializable: bool,
    /// Key size in bytes.
    pub key_size: usize,
    /// Value sizes.
    pub value_sizes: ValueSizes,
    /// Seed of the random keys and value sizes.
    pub seed: u64,
    /// Distinct keys.
    pub key_space: u64,
    /// Rate limit (0: none).
    pub rate: u64,
    /// Leases kept alive (0 but for `lease-keepalive`).
    pub leases: usize,
    /// Key and value bytes of the acknowledged writes.
    pub written_bytes: u64,
    /// `written_bytes` when the first NOSPACE arrived, if one did.
    pub nospace_at_bytes: Option<u64>,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// All workers' measurements.
    pub recorded: Recorder,
}

impl Summary {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.recorded.ok_count() as f64 / secs
        } else {
            0.0
        }
    }

    /// A percentile (0..100) of the latency, in milliseconds.
    pub fn percentile_ms(&self, percentile: f64) -> f64 {
        self.recorded.latency_us.value_at_percentile(percentile) as f64 / 1000.0
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let h = &self.recorded.latency_us;
        let mut latency = serde_json::Map::new();
        latency.insert("mean".into(), json!(round3(h.mean() / 1000.0)));
        latency.insert("min".into(), json!(ms(h.min())));
        for (name, p) in PERCENTILES {
            latency.insert(name.into(), json!(round3(self.percentile_ms(p))));
        }
        latency.insert("max".into(), json!(ms(h.max())));
        let errors: Vec<Value> = self
            .recorded
            .errors
            .iter()
            .map(|(e, n)| json!({"code": e.code, "message": e.message, "count": n}))
            .collect();
        // `val_size` is null when sizes vary; the range is beside it.
        let (val_size, val_size_min, val_size_max) = match self.value_sizes {
            ValueSizes::Fixed(size) => (json!(size), json!(size), json!(size)),
            ValueSizes::LogUniform { min, max, .. } => (Value::Null, json!(min), json!(max)),
        };
        json!({
            "workload": self.workload,
            "label": self.label,
            "endpoints": self.endpoints,
            "clients": self.clients,
            "conns": self.conns,
            "serializable": self.serializable,
            "key_size": self.key_size,
            "val_size": val_size,
            "val_size_min": val_size_min,
            "val_size_max": val_size_max,
            "seed": self.seed,
            "key_space": self.key_space,
            "rate": self.rate,
            "leases": self.leases,
            "ops": self.recorded.ok_count() + self.recorded.error_count(),
            "ok": self.recorded.ok_count(),
            "errors": self.recorded.error_count(),
            "conflicts": self.recorded.conflicts,
            "written_bytes": self.written_bytes,
            "nospace": self.nospace_at_bytes.is_some(),
            "nospace_at_bytes": self.nospace_at_bytes,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "throughput": round3(self.throughput()),
            "latency_ms": Value::Object(latency),
            "error_kinds": errors,
        })
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let h = &self.recorded.latency_us;
        let mut out = String::new();
        let reads = if self.serializable {
            " (serializable)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "Workload: {}{reads}, {} clients over {} connections",
            self.workload, self.clients, self.conns
        );
        if self.leases > 0 {
            let _ = writeln!(out, "Leases kept alive: {}", self.leases);
        }
        if let ValueSizes::LogUniform { min, max, seed } = self.value_sizes {
            let _ = writeln!(
                out,
                "Values: log-uniform from {min} to {max} B (seed {seed})"
            );
        }
        let _ = writeln!(
            out,
            "Summary:\n  Total:\t{:.4} secs.\n  Requests:\t{} ok, {} errors\n  Requests/sec:\t{:.2}",
            self.elapsed.as_secs_f64(),
            self.recorded.ok_count(),
            self.recorded.error_count(),
            self.throughput()
        );
        if self.recorded.conflicts > 0 {
            let _ = writeln!(out, "  Txn compares failed:\t{}", self.recorded.conflicts);
        }
        if self.written_bytes > 0 {
            let _ = writeln!(out, "  Bytes written:\t{}", self.written_bytes);
        }
        if let Some(bytes) = self.nospace_at_bytes {
            let _ = writeln!(out, "  NOSPACE after:\t{bytes} bytes written");
        }
        if !h.is_empty() {
            let _ = writeln!(out, "\nLatency (ms):");
            let _ = writeln!(out, "  mean\t{:.3}", h.mean() / 1000.0);
            for (name, p) in PERCENTILES {
                let _ = writeln!(out, "  {name}\t{:.3}", self.percentile_ms(p));
            }
            let _ = writeln!(out, "  max\t{:.3}", h.max() as f64 / 1000.0);
        }
        if !self.recorded.errors.is_empty() {
            let _ = writeln!(out, "\nErrors:");
            for (e, n) in &self.recorded.errors {
                let _ = writeln!(out, "  {n}\tcode = {} desc = {}", e.code, e.message);
            }
        }
        out
    }
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(recorded: Recorder, elapsed: Duration) -> Summary {
        Summary {
            workload: "put".into(),
            label: "x".into(),
            endpoints: vec!["127.0.0.1:1".into()],
            clients: 2,
            conns: 1,
            serializable: false,
            key_size: 8,
            value_sizes: ValueSizes::Fixed(256),
            seed: 1,
            key_space: 10,
            rate: 0,
            leases: 0,
            written_bytes: 0,
            nospace_at_bytes: None,
            elapsed,
            recorded,
        }
    }

    fn error(code: &str, message: &str) -> OpError {
        OpError {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.ok(Duration::from_millis(ms));
        }
        let s = summary(r, Duration::from_secs(2));
        assert!((s.percentile_ms(50.0) - 500.0).abs() < 1.0);
        assert!((s.percentile_ms(99.0) - 990.0).abs() < 1.0);
        assert!((s.throughput() - 500.0).abs() < 1e-9);
        let json = s.to_json();
        assert_eq!(json["ok"], 1000);
        assert_eq!(json["errors"], 0);
        assert!((json["latency_ms"]["max"].as_f64().unwrap() - 1000.0).abs() < 1.0);
    }

    #[test]
    fn merging_adds_latencies_errors_and_conflicts() {
        let mut a = Recorder::new();
        a.ok(Duration::from_micros(100));
        a.error(error("Unavailable", "etcdserver: no leader"));
        let mut b = Recorder::new();
        b.ok(Duration::from_micros(300));
        b.error(error("Unavailable", "etcdserver: no leader"));
        b.error(error("DeadlineExceeded", "no watch event in time"));
        b.conflicts = 2;
        a.merge(&b);
        assert_eq!(a.ok_count(), 2);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.conflicts, 2);
        assert_eq!(a.errors[&error("Unavailable", "etcdserver: no leader")], 2);
    }

    #[test]
    fn errors_are_listed_by_kind_in_json_and_text() {
        let mut r = Recorder::new();
        r.error(error("Unavailable", "etcdserver: no leader"));
        r.error(error("Unavailable", "etcdserver: no leader"));
        let s = summary(r, Duration::from_secs(1));
        let json = s.to_json();
        assert_eq!(json["ops"], 2);
        assert_eq!(json["error_kinds"][0]["count"], 2);
        assert_eq!(json["error_kinds"][0]["code"], "Unavailable");
        assert_eq!(s.throughput(), 0.0);
        let text = s.to_text();
        assert!(text.contains("2\tcode = Unavailable desc = etcdserver: no leader"));
        assert!(!text.contains("Latency"));
    }

    #[test]
    fn latencies_beyond_the_bounds_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.ok(Duration::ZERO);
        r.ok(Duration::from_secs(3600));
        assert_eq!(r.ok_count(), 2);
        assert_eq!(r.latency_us.min(), 1);
    }

    #[test]
    fn written_bytes_and_nospace_are_reported() {
        let mut r = Recorder::new();
        r.ok(Duration::from_millis(1));
        let mut s = summary(r, Duration::from_secs(1));
        s.value_sizes = ValueSizes::LogUniform {
            min: 10,
            max: 65_536,
            seed: 16,
        };
        s.written_bytes = 1234;
        s.nospace_at_bytes = Some(1000);
        let json = s.to_json();
        assert_eq!(json["written_bytes"], 1234);
        assert_eq!(json["nospace"], true);
        assert_eq!(json["nospace_at_bytes"], 1000);
        assert!(json["val_size"].is_null());
        assert_eq!(json["val_size_max"], 65_536);
        let text = s.to_text();
        assert!(
            text.contains("log-uniform from 10 to 65536 B (seed 16)"),
            "{text}"
        );
        assert!(
            text.contains("NOSPACE after:\t1000 bytes written"),
            "{text}"
        );
        let plain = summary(Recorder::new(), Duration::from_secs(1)).to_json();
        assert_eq!(plain["val_size"], 256);
        assert_eq!(plain["nospace"], false);
        assert!(plain["nospace_at_bytes"].is_null());
    }
}
