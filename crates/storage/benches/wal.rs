//! WAL throughput with one fsync per batch, and the disk's raw fsync rate.
//!
//! `append_sync/N`: append N entries of 256 payload bytes, then one
//! `Wal::sync` (fdatasync). Throughput is reported in entries per second;
//! multiply by 256 for payload bytes per second.
//! `raw_fdatasync`: rewrite one byte of a file and fdatasync it, the floor
//! under any group commit on this disk.
//!
//! Run briefly with:
//! `cargo bench -p raftkv-storage --bench wal -- --warm-up-time 1 --measurement-time 3`

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkv_raft::{Entry, EntryKind};
use raftkv_storage::{Wal, WalConfig};

const PAYLOAD_BYTES: usize = 256;

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync");
    group.sample_size(10);
    for batch in [1u64, 16, 256] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let mut wal = Wal::open(dir.path(), WalConfig::default()).expect("open WAL");
        let payload = Bytes::from(vec![0xab; PAYLOAD_BYTES]);
        let mut next = 1;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let entries: Vec<Entry> = (next..next + batch)
                    .map(|index| Entry {
                        term: 1,
                        index,
                        kind: EntryKind::Normal,
                        data: payload.clone(),
                    })
                    .collect();
                next += batch;
                wal.append_entries(&entries).expect("append");
                wal.sync().expect("sync");
            })
        });
    }
    group.finish();
}

fn raw_fdatasync(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.path().join("fsync-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("probe file");
    let mut group = c.benchmark_group("raw_fdatasync");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let mut byte = 0u8;
    group.bench_function("1_byte", |b| {
        b.iter(|| {
            byte = byte.wrapping_add(1);
            file.write_all_at(&[byte], 0).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
    group.finish();
}

criterion_group!(benches, append_sync, raw_fdatasync);
criterion_main!(benches);
