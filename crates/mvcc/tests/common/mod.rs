//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use raftkv_mvcc::*;

/// A store in a fresh temporary directory, plus a raft index counter for writes.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: Option<Store>,
    pub index: AtomicU64,
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with_durable_every(1)
    }

    /// A store that makes every `batches`-th batch durable and defers the commit of the
    /// others (see the store's "Deferred commits").
    pub fn with_durable_every(batches: u64) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir);
        cfg.durable_every_batches = batches;
        let store = Store::open(cfg).unwrap();
        TestStore {
            dir,
            store: Some(store),
            index: AtomicU64::new(0),
        }
    }

    pub fn s(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    pub fn reopen(&mut self) {
        self.store.take().unwrap().close().unwrap();
        self.store = Some(Store::open(config(&self.dir)).unwrap());
    }

    /// Applies `f` as the next raft entry in its own batch.
    pub fn entry<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<R>) -> Result<R> {
        let idx = self.index.fetch_add(1, Ordering::SeqCst) + 1;
        let mut out = None;
        self.s()
            .apply(|b| {
                assert!(b.begin_entry(idx, 1));
                out = Some(f(b));
                Ok(())
            })
            .unwrap();
        out.unwrap()
    }

    pub fn put(&self, k: &str, v: &str) -> PutResponse {
        self.entry(|b| b.put(&put_req(k, v))).unwrap()
    }

    pub fn del(&self, k: &str, end: &str) -> DeleteRangeResponse {
        self.entry(|b| {
            b.delete_range(&DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: true,
            })
        })
        .unwrap()
    }

    pub fn get(&self, k: &str) -> Option<KeyValue> {
        self.s().get(k.as_bytes()).unwrap()
    }

    pub fn range(&self, k: &str, end: &str) -> RangeResponse {
        self.s().range(&range_req(k, end)).unwrap()
    }
}

pub fn config(dir: &tempfile::TempDir) -> Config {
    config_at(&dir.path().join("kv.redb"))
}

pub fn config_at(path: &std::path::Path) -> Config {
    let mut c = Config::new(path);
    c.cache_size_bytes = 8 << 20;
    c
}

pub fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

/// A txn that puts `value` at every key of `keys`, in one revision.
pub fn puts_txn(keys: &[&str], value: &str) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: keys
            .iter()
            .map(|k| RequestOp::Put(put_req(k, value)))
            .collect(),
        failure: vec![],
    }
}

pub fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}
