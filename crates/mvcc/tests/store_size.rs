//! How much disk the store takes for what it holds (issue 16): values of mixed sizes take
//! little more than their bytes, large values are split and whole again on every way out
//! (reads, watch catch-up, snapshots, hashes), and a defragmentation after deletes and a
//! compaction gives the space of the values dropped back.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use raftkv_mvcc::*;
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// The most the store may take for mixed values: this many times their bytes, plus
/// [`FIXED_BYTES_MAX`].
const FACTOR_MAX: f64 = 1.15;
/// redb's header, region tracker and the trees' first pages.
const FIXED_BYTES_MAX: u64 = 1 << 20;

/// Value sizes spread log-uniformly between 10 B and 64 KiB, as in issue 16.
fn mixed_sizes(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (lo, hi) = (10f64.ln(), 65_536f64.ln());
    (0..n)
        .map(|_| rng.gen_range(lo..hi).exp() as usize)
        .collect()
}

/// A value of `size` bytes that differs from key to key and from byte to byte, so a
/// chunk put back in the wrong place shows.
fn value_of(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

/// Puts one key per size, 8 to a batch; returns the bytes of keys and values written.
fn load(t: &TestStore, sizes: &[usize]) -> u64 {
    let mut live = 0;
    for (batch, chunk) in sizes.chunks(8).enumerate() {
        t.s()
            .apply(|b| {
                for (j, &size) in chunk.iter().enumerate() {
                    let i = batch * 8 + j;
                    let idx = t.index.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(b.begin_entry(idx, 1));
                    let key = format!("key/{i:06}").into_bytes();
                    live += (key.len() + size) as u64;
                    b.put(&PutRequest {
                        key,
                        value: value_of(i, size),
                        ..Default::default()
                    })?;
                }
                Ok(())
            })
            .unwrap();
    }
    live
}

fn within_bound(occupied: u64, live: u64) -> bool {
    occupied as f64 <= live as f64 * FACTOR_MAX + FIXED_BYTES_MAX as f64
}

/// The most the disk the file occupies may exceed the pages in use by: redb's region
/// header, its system trees and the pages a commit frees while it writes new ones.
const OCCUPIED_OVER_IN_USE_MAX: f64 = 1.05;

#[test]
fn mixed_size_values_occupy_at_most_the_bound_over_their_bytes() {
    // Issue 16's load (new keys, 10 B to 64 KiB log-uniform, no overwrites or deletes),
    // scaled from 40,000 keys to 2,000.
    let t = TestStore::new();
    let sizes = mixed_sizes(16, 2_000);
    let live = load(&t, &sizes);
    t.s().sync().unwrap();
    let usage = t.s().disk_usage().unwrap();
    assert!(
        within_bound(usage.in_use_bytes, live),
        "{} bytes of pages in use for {live} bytes of keys and values",
        usage.in_use_bytes
    );
    assert!(
        within_bound(usage.occupied_bytes, live),
        "{} bytes occupied for {live} bytes of keys and values",
        usage.occupied_bytes
    );
    assert!(
        usage.occupied_bytes as f64
            <= usage.in_use_bytes as f64 * OCCUPIED_OVER_IN_USE_MAX + FIXED_BYTES_MAX as f64,
        "{} bytes occupied for {} bytes of pages in use",
        usage.occupied_bytes,
        usage.in_use_bytes
    );
    assert!(usage.in_use_bytes >= usage.stored_bytes);
    assert_eq!(t.s().occupied_bytes().unwrap(), usage.occupied_bytes);
    assert!(usage.occupied_bytes <= usage.file_bytes);
    // Every value reads back whole.
    for (i, &size) in sizes.iter().enumerate() {
        let got = t.get(&format!("key/{i:06}")).unwrap();
        assert_eq!(got.value, value_of(i, size), "key {i} ({size} B)");
    }
}

/// The share of the quota that must be live data when NOSPACE comes. etcd 3.4 under issue
/// 16's load held 571 MiB of live data in 613 MiB of store (0.93 of what its quota
/// measures); this store, with its values split, reaches 0.91 at a quota of 64 MiB (1.08×
/// in pages in use, 1.10× written, with deferred commits): 2 points short of etcd, where
/// the file length made it 0.26 before (531 MiB at 2,056 MiB).
const LIVE_PER_QUOTA_BYTE_MIN: f64 = 0.90;

#[test]
fn the_quota_is_reached_only_with_as_much_live_data_as_etcd_holds() {
    // The server's check (`alarm::check_quota`): a put is refused once the store's
    // occupied bytes plus the put's bytes reach the quota.
    const QUOTA: u64 = 64 << 20;
    // Deferred commits, as a member makes them under load.
    let t = TestStore::with_durable_every(8);
    let mut live = 0u64;
    let sizes = mixed_sizes(18, 100_000);
    let mut refused = false;
    for (i, &size) in sizes.iter().enumerate() {
        let key = format!("key/{i:06}");
        let cost = (key.len() + size) as u64;
        t.s().commit_applied().unwrap();
        if t.s().occupied_bytes().unwrap() + (2 << 20) >= QUOTA {
            // Near the quota, a fresh measure each time (the store keeps one briefly).
            std::thread::sleep(raftkv_mvcc::store::FILE_BYTES_MAX_AGE);
        }
        if t.s().occupied_bytes().unwrap() + cost >= QUOTA {
            refused = true;
            break;
        }
        t.entry(|b| {
            b.put(&PutRequest {
                key: key.into_bytes(),
                value: value_of(i, size),
                ..Default::default()
            })
        })
        .unwrap();
        live += cost;
    }
    assert!(refused, "{live} bytes written without reaching the quota");
    let share = live as f64 / QUOTA as f64;
    let usage = t.s().disk_usage().unwrap();
    println!(
        "NOSPACE at {live} bytes live: {share:.3} of the quota; {} in use, {} occupied",
        usage.in_use_bytes, usage.occupied_bytes
    );
    assert!(
        live as f64 >= QUOTA as f64 * LIVE_PER_QUOTA_BYTE_MIN,
        "NOSPACE at {live} bytes live ({share:.3} of a quota of {QUOTA})"
    );
}

/// The bound above is one the layout before (every value whole in its record) crosses:
/// redb gives a leaf holding one large value a page of 2^k × 4 KiB.
#[test]
fn the_same_values_kept_whole_in_redb_cross_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whole.redb");
    let db = redb::Database::create(&path).unwrap();
    let table: redb::TableDefinition<(i64, i64), &[u8]> = redb::TableDefinition::new("kvs");
    let mut live = 0u64;
    for (i, &size) in mixed_sizes(16, 2_000).iter().enumerate() {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let key = format!("key/{i:06}");
            live += (key.len() + size) as u64;
            let mut record = vec![0u8; 5 + key.len() + 24];
            record.extend_from_slice(&value_of(i, size));
            t.insert((i as i64 + 2, 0), record.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    drop(db);
    use std::os::unix::fs::MetadataExt;
    let occupied = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        !within_bound(occupied, live),
        "{occupied} bytes occupied for {live} bytes kept whole"
    );
}

#[test]
fn split_values_of_every_boundary_size_read_back_whole_everywhere() {
    // Chunks are 2,022 B: sizes around one and two chunks, none, and a request's largest.
    let sizes = [0, 1, 2021, 2022, 2023, 4043, 4044, 4045, 65_536, 1_500_000];
    let t = TestStore::new();
    let start = t.s().current_revision().unwrap() + 1;
    for (i, &size) in sizes.iter().enumerate() {
        t.entry(|b| {
            b.put(&PutRequest {
                key: format!("k{i:02}").into_bytes(),
                value: value_of(i, size),
                ..Default::default()
            })
        })
        .unwrap();
    }
    // Overwrite one with prev_kv: the value before comes back whole.
    let resp = t
        .entry(|b| {
            b.put(&PutRequest {
                key: b"k08".to_vec(),
                value: b"small now".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(resp.prev_kv.unwrap().value, value_of(8, 65_536));
    let old = t
        .s()
        .range(&RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            revision: start + sizes.len() as i64 - 1,
            ..Default::default()
        })
        .unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        assert_eq!(old.kvs[i].value, value_of(i, size), "k{i:02} ({size} B)");
    }
    let events = t.s().events(start, b"k", b"l", 0).unwrap();
    assert_eq!(events[3].kv.value, value_of(3, 2022));
    assert_eq!(
        events[10].prev_kv.as_ref().unwrap().value,
        value_of(8, 65_536)
    );

    // A snapshot carries whole values; the store it is installed in splits them again.
    let image: Vec<u8> = t.s().snapshot().unwrap().flat_map(|c| c.unwrap()).collect();
    let other = TestStore::new();
    other.s().install_snapshot(image.as_slice()).unwrap();
    assert_eq!(other.s().hash().unwrap(), t.s().hash().unwrap());
    assert_eq!(other.s().hash_kv(0).unwrap(), t.s().hash_kv(0).unwrap());
    assert_eq!(
        other.get("k09").unwrap().value,
        value_of(9, 1_500_000),
        "installed"
    );
    let again: Vec<u8> = other
        .s()
        .snapshot()
        .unwrap()
        .flat_map(|c| c.unwrap())
        .collect();
    assert_eq!(
        again, image,
        "the stream does not depend on the file's layout"
    );

    // A compaction drops the old value's chunks with its record.
    let before = t.s().disk_usage().unwrap().stored_bytes;
    let rev = t.s().current_revision().unwrap();
    t.entry(|b| b.compact(rev)).unwrap();
    let after = t.s().disk_usage().unwrap().stored_bytes;
    assert!(
        before - after >= 65_536,
        "stored {before} -> {after} bytes after compacting a 64 KiB value away"
    );
    assert_eq!(t.get("k08").unwrap().value, b"small now");
    let mut t = t;
    t.reopen();
    assert_eq!(t.get("k09").unwrap().value, value_of(9, 1_500_000));
}

#[test]
fn defragment_after_deletes_and_compaction_brings_the_file_down_to_what_is_left() {
    let t = TestStore::new();
    let sizes = mixed_sizes(17, 2_000);
    let live = load(&t, &sizes);
    // Delete three keys in four, then compact them away.
    let mut kept = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if i % 4 == 0 {
            kept += (format!("key/{i:06}").len() + size) as u64;
        } else {
            t.del(&format!("key/{i:06}"), "");
        }
    }
    let rev = t.s().current_revision().unwrap();
    t.entry(|b| b.compact(rev)).unwrap();
    t.s().sync().unwrap();
    let before = t.s().occupied_bytes().unwrap();
    assert!(
        before as f64 > live as f64 * 0.9,
        "compaction frees pages, it does not give them back"
    );
    let report = t.s().defragment().unwrap();
    assert_eq!(report.before_occupied_bytes, before);
    let after = t.s().occupied_bytes().unwrap();
    assert_eq!(report.after_occupied_bytes, after);
    assert!(
        within_bound(after, kept),
        "{before} -> {after} bytes occupied for {kept} bytes left"
    );
    assert!(after < before / 2, "{before} -> {after} bytes occupied");
    let usage = t.s().disk_usage().unwrap();
    assert!(
        after as f64
            <= usage.in_use_bytes as f64 * OCCUPIED_OVER_IN_USE_MAX + FIXED_BYTES_MAX as f64,
        "{after} bytes occupied for {} bytes in use after defragmenting",
        usage.in_use_bytes
    );
    // The length is redb's last doubling step at most: under twice the pages.
    assert!(
        report.after_bytes <= 2 * usage.in_use_bytes + FIXED_BYTES_MAX,
        "a file of {} bytes for {} bytes in use",
        report.after_bytes,
        usage.in_use_bytes
    );
    assert!(report.after_bytes < report.before_bytes);
    for (i, &size) in sizes.iter().enumerate().step_by(4) {
        assert_eq!(
            t.get(&format!("key/{i:06}")).unwrap().value,
            value_of(i, size)
        );
    }
}
