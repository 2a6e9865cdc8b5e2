//! Store benchmark: batched puts, point reads and 1,000-key range scans on N keys, plus
//! memory (RSS growth) and disk use per million keys.
//!
//! Commits are fsynced every 16th batch, as the server does (`MVCC_BENCH_DURABLE_EVERY`
//! changes it). `MVCC_BENCH_KEYS` sets N (default 100_000; the full run uses 1_000_000):
//! `MVCC_BENCH_KEYS=1000000 cargo bench -p raftkv-mvcc --bench mvcc`

use std::time::{Duration, Instant};

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use raftkv_mvcc::{Config, PutRequest, RangeRequest, Store};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const VALUE_BYTES: usize = 64;
const PUTS_PER_BATCH: u64 = 1000;
const SCAN_KEYS: i64 = 1000;
/// Puts per batch in the server-shaped put benchmark.
const SERVER_BATCH: u64 = 25;

fn key(i: u64) -> Vec<u8> {
    format!("key{i:012}").into_bytes()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Loaded {
    _dir: tempfile::TempDir,
    store: Store,
    n: u64,
    next_index: u64,
}

/// Applies `count` puts starting at raft index `index`, `PUTS_PER_BATCH` per batch.
fn put_batch(store: &Store, index: u64, keys: impl Iterator<Item = u64>, value: &[u8]) {
    store
        .apply(|b| {
            for (idx, k) in (index..).zip(keys) {
                b.begin_entry(idx, 1);
                b.put(&PutRequest {
                    key: key(k),
                    value: value.to_vec(),
                    ..Default::default()
                })?;
            }
            Ok(())
        })
        .expect("bench put");
}

fn load() -> Loaded {
    let n: u64 = std::env::var("MVCC_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let rss_before = rss_kib();
    let mut config = Config::new(&path);
    config.durable_every_batches = 16;
    if let Some(every) = std::env::var("MVCC_BENCH_DURABLE_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.durable_every_batches = every;
    }
    let store = Store::open(config).expect("open");
    let value = vec![b'v'; VALUE_BYTES];
    let start = Instant::now();
    let mut index = 1;
    let mut k = 0;
    while k < n {
        let end = (k + PUTS_PER_BATCH).min(n);
        put_batch(&store, index, k..end, &value);
        index += end - k;
        k = end;
    }
    store.sync().expect("sync");
    let load_s = start.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    let usage = store.disk_usage().expect("disk usage");
    let disk = usage.file_bytes;
    let per_m = 1_000_000.0 / n as f64;
    println!(
        "load: {n} keys ({VALUE_BYTES} B values) in {load_s:.2}s = {:.0} puts/s ({PUTS_PER_BATCH} puts per commit)",
        n as f64 / load_s
    );
    println!(
        "memory: RSS +{:.1} MiB ({:.1} MiB per million keys; redb cache bound {} MiB)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 * per_m,
        store.config().cache_size_bytes >> 20
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let used = usage.stored_bytes + usage.metadata_bytes + usage.fragmented_bytes;
    println!(
        "disk: file {:.1} MiB ({:.1} MiB per million keys); in pages {:.1} MiB per million keys \
         (data {:.1}, btree {:.1}, fragmentation {:.1})",
        mib(disk),
        mib(disk) * per_m,
        mib(used) * per_m,
        mib(usage.stored_bytes) * per_m,
        mib(usage.metadata_bytes) * per_m,
        mib(usage.fragmented_bytes) * per_m,
    );
    Loaded {
        _dir: dir,
        store,
        n,
        next_index: index,
    }
}

fn main() {
    let mut l = load();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut rng = SmallRng::seed_from_u64(1);
    let n = l.n;

    let mut g = c.benchmark_group("mvcc");
    g.throughput(Throughput::Elements(PUTS_PER_BATCH));
    g.bench_function(BenchmarkId::new("put_batched_overwrite", n), |b| {
        let value = vec![b'w'; VALUE_BYTES];
        b.iter(|| {
            let keys: Vec<u64> = (0..PUTS_PER_BATCH).map(|_| rng.gen_range(0..n)).collect();
            put_batch(&l.store, l.next_index, keys.into_iter(), &value);
            l.next_index += PUTS_PER_BATCH;
        })
    });
    // The shape of a server's apply under 64 clients: about 25 puts of 256 B per batch, to
    // random keys, 15 of 16 commits not fsynced (the server's policy).
    g.throughput(Throughput::Elements(SERVER_BATCH));
    g.bench_function(BenchmarkId::new("put_25_per_batch_256b", n), |b| {
        let value = vec![b'x'; 256];
        b.iter(|| {
            let keys: Vec<u64> = (0..SERVER_BATCH).map(|_| rng.gen_range(0..n)).collect();
            put_batch(&l.store, l.next_index, keys.into_iter(), &value);
            l.next_index += SERVER_BATCH;
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("point_get", n), |b| {
        b.iter(|| {
            let k = key(rng.gen_range(0..n));
            black_box(l.store.get(&k).expect("get").expect("present"));
        })
    });
    g.throughput(Throughput::Elements(SCAN_KEYS as u64));
    g.bench_function(BenchmarkId::new("range_1000_keys", n), |b| {
        b.iter(|| {
            let start = rng.gen_range(0..n.saturating_sub(SCAN_KEYS as u64).max(1));
            let r = l
                .store
                .range(&RangeRequest {
                    key: key(start),
                    range_end: key(start + SCAN_KEYS as u64),
                    limit: SCAN_KEYS,
                    ..Default::default()
                })
                .expect("range");
            black_box(r.kvs.len());
        })
    });
    g.finish();
    c.final_summary();
    l.store.sync().expect("sync");
    if let Ok(u) = l.store.disk_usage() {
        println!(
            "disk after overwrites: file {:.1} MiB, in pages {:.1} MiB",
            u.file_bytes as f64 / (1 << 20) as f64,
            (u.stored_bytes + u.metadata_bytes + u.fragmented_bytes) as f64 / (1 << 20) as f64
        );
    }
}
