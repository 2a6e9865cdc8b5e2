//! How much disk the store takes for the data it holds (issue 16): loads new keys with values
//! of mixed sizes (log-uniform between two bounds, seeded) and prints, at steps, the live
//! bytes (keys and values written), the file's length, the blocks it occupies on disk, then
//! the store's own figures (pages in use, occupied, file) and redb's own statistics (stored, metadata, fragmented bytes, allocated pages), which are
//! taken with the store closed and reopened with redb directly.
//!
//! ```text
//! cargo run --release -p raftkv-mvcc --example store_size -- \
//!     [--keys 40000] [--min 10] [--max 65536] [--batch 1] [--durable-every 8] [--steps 8] \
//!     [--seed 16] [--dir DIR] [--defrag]
//! ```
//!
//! `--durable-every 8` with one put per batch is what a member does under one client
//! (`kv_state.rs`: deferred commits, every 8th batch durable).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use raftkv_mvcc::{Config, PutRequest, Store};
use rand::{Rng, SeedableRng};

struct Args {
    keys: u64,
    min: f64,
    max: f64,
    batch: u64,
    durable_every: u64,
    steps: u64,
    seed: u64,
    dir: Option<PathBuf>,
    defrag: bool,
}

fn parse() -> Args {
    let mut a = Args {
        keys: 40_000,
        min: 10.0,
        max: 65_536.0,
        batch: 1,
        durable_every: 8,
        steps: 8,
        seed: 16,
        dir: None,
        defrag: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--defrag" {
            a.defrag = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        let num = || value.parse::<u64>().expect("a number");
        match flag.as_str() {
            "--keys" => a.keys = num(),
            "--min" => a.min = num() as f64,
            "--max" => a.max = num() as f64,
            "--batch" => a.batch = num(),
            "--durable-every" => a.durable_every = num(),
            "--steps" => a.steps = num(),
            "--seed" => a.seed = num(),
            "--dir" => a.dir = Some(PathBuf::from(&value)),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

/// (file length, bytes of the blocks the file occupies)
fn file_sizes(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).expect("store file");
    (m.len(), m.blocks() * 512)
}

fn redb_stats(path: &Path) -> String {
    let db = redb::Database::create(path).expect("reopen with redb");
    let txn = db.begin_write().expect("write txn");
    let started = std::time::Instant::now();
    let s = txn.stats().expect("stats");
    let took = started.elapsed();
    let out = format!(
        "redb (stats in {took:?}): allocated {} MiB ({} pages), stored {} MiB, metadata {} MiB, fragmented {} MiB, leaf pages {}, branch pages {}",
        mib(s.allocated_pages() * s.page_size() as u64),
        s.allocated_pages(),
        mib(s.stored_bytes()),
        mib(s.metadata_bytes()),
        mib(s.fragmented_bytes()),
        s.leaf_pages(),
        s.branch_pages(),
    );
    txn.abort().expect("abort");
    out
}

fn main() {
    let a = parse();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("kv.redb");
    let _ = std::fs::remove_file(&path);
    let config = || {
        let mut c = Config::new(&path);
        c.durable_every_batches = a.durable_every;
        c
    };
    let mut store = Some(Store::open(config()).expect("open"));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let (lo, hi) = (a.min.ln(), a.max.ln());
    let mut live = 0u64;
    let mut index = 0u64;
    let mut written = 0u64;
    let step = a.keys.div_ceil(a.steps);
    println!("keys,live_mib,file_mib,blocks_mib,file/live,blocks/live");
    while written < a.keys {
        let n = a.batch.min(a.keys - written);
        let s = store.as_ref().expect("open store");
        s.apply(|b| {
            for _ in 0..n {
                index += 1;
                b.begin_entry(index, 1);
                let size = rng.gen_range(lo..hi).exp() as usize;
                let key = format!("key/{written:08}").into_bytes();
                live += (key.len() + size) as u64;
                let value = vec![(written % 251) as u8; size];
                b.put(&PutRequest {
                    key,
                    value,
                    ..Default::default()
                })?;
                written += 1;
            }
            Ok(())
        })
        .expect("apply");
        // A read after each batch, as a member's clients make: it commits deferred batches.
        if a.durable_every > 1 {
            s.commit_applied().expect("commit");
        }
        if written.is_multiple_of(step) || written == a.keys {
            let (len, blocks) = file_sizes(&path);
            println!(
                "{written},{},{},{},{:.2},{:.2}",
                mib(live),
                mib(len),
                mib(blocks),
                len as f64 / live as f64,
                blocks as f64 / live as f64
            );
        }
    }
    let s = store.take().expect("open store");
    s.sync().expect("sync");
    let u = s.disk_usage().expect("disk usage");
    println!(
        "store: live {} B ({} MiB), in use {} B ({} MiB, {:.3}x live), occupied {} B ({} MiB, {:.3}x in use), file {} B ({} MiB, {:.3}x in use)",
        live,
        mib(live),
        u.in_use_bytes,
        mib(u.in_use_bytes),
        u.in_use_bytes as f64 / live as f64,
        u.occupied_bytes,
        mib(u.occupied_bytes),
        u.occupied_bytes as f64 / u.in_use_bytes as f64,
        u.file_bytes,
        mib(u.file_bytes),
        u.file_bytes as f64 / u.in_use_bytes as f64,
    );
    s.close().expect("close");
    println!("{}", redb_stats(&path));
    if a.defrag {
        let s = Store::open(config()).expect("reopen");
        let r = s.defragment().expect("defragment");
        let (len, blocks) = file_sizes(&path);
        let u = s.disk_usage().expect("disk usage");
        println!(
            "defragment: {} -> {} MiB file, {} MiB blocks, {} MiB in use, in {:?}",
            mib(r.before_bytes),
            mib(len),
            mib(blocks),
            mib(u.in_use_bytes),
            r.elapsed
        );
        s.close().expect("close");
        println!("{}", redb_stats(&path));
    }
}
