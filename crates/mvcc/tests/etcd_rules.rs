//! One test per etcd rule the store must follow (reference: etcd-v3-facts §1.1–1.2).

mod common;

use common::*;
use raftkv_mvcc::*;

#[test]
fn empty_store_is_at_revision_one_and_first_write_gets_two() {
    let t = TestStore::new();
    assert_eq!(t.s().current_revision().unwrap(), 1);
    assert_eq!(t.s().compact_revision().unwrap(), 0);
    assert_eq!(t.put("a", "1").revision, 2);
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
}

#[test]
fn every_put_bumps_revision_and_version() {
    let t = TestStore::new();
    t.put("a", "1");
    t.put("b", "1");
    t.put("a", "2");
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    assert_eq!(kv.value, b"2");
}

#[test]
fn txn_with_three_puts_makes_one_revision() {
    let t = TestStore::new();
    let resp = t
        .entry(|b| b.txn(&puts_txn(&["x", "y", "z"], "v")))
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 2);
    let r = t.range("x", "\0");
    assert!(r.kvs.iter().all(|kv| kv.mod_revision == 2));
    assert_eq!(r.count, 3);
}

#[test]
fn delete_is_a_tombstone_and_history_stays_readable() {
    let t = TestStore::new();
    t.put("a", "1");
    let d = t.del("a", "");
    assert_eq!((d.deleted, d.revision), (1, 3));
    assert_eq!(d.prev_kvs[0].value, b"1");
    assert!(t.get("a").is_none());
    let mut req = range_req("a", "");
    req.revision = 2;
    assert_eq!(t.s().range(&req).unwrap().kvs[0].value, b"1");
}

#[test]
fn delete_of_nothing_does_not_bump_revision() {
    let t = TestStore::new();
    t.put("a", "1");
    let d = t.del("zz", "");
    assert_eq!((d.deleted, d.revision), (0, 2));
    assert_eq!(t.s().current_revision().unwrap(), 2);
}

#[test]
fn put_after_delete_restarts_version_with_new_create_revision() {
    let t = TestStore::new();
    t.put("a", "1");
    t.put("a", "2");
    t.del("a", "");
    t.put("a", "3");
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn range_conventions() {
    let t = TestStore::new();
    for k in ["a", "b", "c", "d"] {
        t.put(k, "v");
    }
    assert_eq!(keys(&t.range("b", "")), ["b"]);
    assert_eq!(keys(&t.range("b", "d")), ["b", "c"]);
    assert_eq!(keys(&t.range("b", "\0")), ["b", "c", "d"]);
    assert_eq!(keys(&t.range("\0", "\0")), ["a", "b", "c", "d"]);
    assert_eq!(keys(&t.range("c", "a")), Vec::<String>::new());
    assert_eq!(
        t.s()
            .range(&RangeRequest::default())
            .unwrap_err()
            .to_string(),
        "etcdserver: key is not provided"
    );
}

#[test]
fn limit_count_and_more() {
    let t = TestStore::new();
    for k in ["a", "b", "c", "d", "e"] {
        t.put(k, "v");
    }
    let mut req = range_req("a", "\0");
    req.limit = 2;
    req.sort_order = SortOrder::Descend;
    req.sort_target = SortTarget::Mod;
    let r = t.s().range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["e".into(), "d".into()], true, 5)
    );
    req.count_only = true;
    let r = t.s().range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 5));
}

#[test]
fn sort_target_without_order_sorts_ascending() {
    let t = TestStore::new();
    t.put("b", "1");
    t.put("a", "1");
    let mut req = range_req("a", "\0");
    req.sort_target = SortTarget::Create;
    assert_eq!(keys(&t.s().range(&req).unwrap()), ["b", "a"]);
    req.sort_order = SortOrder::Descend;
    req.sort_target = SortTarget::Key;
    assert_eq!(keys(&t.s().range(&req).unwrap()), ["b", "a"]);
}

#[test]
fn keys_only_and_revision_filters() {
    let t = TestStore::new();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.put("a", "2"); // 4
    let mut req = range_req("a", "\0");
    req.keys_only = true;
    req.min_mod_revision = 4;
    let r = t.s().range(&req).unwrap();
    assert_eq!(keys(&r), ["a"]);
    assert!(r.kvs[0].value.is_empty());
    assert_eq!(r.count, 2, "count ignores filters");
}

#[test]
fn future_and_compacted_revisions_give_etcd_errors() {
    let t = TestStore::new();
    t.put("a", "1");
    t.put("a", "2");
    t.put("a", "3");
    let mut req = range_req("a", "");
    req.revision = 5;
    assert_eq!(
        t.s().range(&req).unwrap_err().to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    t.entry(|b| b.compact(3)).unwrap();
    req.revision = 2;
    assert_eq!(
        t.s().range(&req).unwrap_err().to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    req.revision = 3;
    assert_eq!(t.s().range(&req).unwrap().kvs[0].value, b"2");
    let again = t.entry(|b| b.compact(3)).unwrap_err();
    assert!(matches!(again, MvccError::Compacted));
    let future = t.entry(|b| b.compact(9)).unwrap_err();
    assert!(matches!(future, MvccError::FutureRev));
}

#[test]
fn compaction_drops_tombstones_and_keeps_latest() {
    let t = TestStore::new();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.put("b", "1"); // 4
    t.del("b", ""); // 5
    t.put("c", "1"); // 6
    let removed = t.entry(|b| b.compact(5)).unwrap();
    assert_eq!(removed, 3, "a@2, b@4 and b's tombstone@5");
    let mut req = range_req("a", "\0");
    req.revision = 5;
    assert_eq!(keys(&t.s().range(&req).unwrap()), ["a"]);
    assert_eq!(t.s().hash_kv(0).unwrap().compact_revision, 5);
}

#[test]
fn put_flags() {
    let t = TestStore::new();
    let err = |r: PutRequest| t.entry(|b| b.put(&r)).unwrap_err().to_string();
    let mut r = put_req("a", "");
    r.ignore_value = true;
    assert_eq!(err(r.clone()), "etcdserver: key not found");
    r.value = b"x".to_vec();
    assert_eq!(err(r), "etcdserver: value is provided");
    let mut r = put_req("a", "v");
    r.ignore_lease = true;
    r.lease = 7;
    assert_eq!(err(r), "etcdserver: lease is provided");
    let mut r = put_req("a", "v");
    r.lease = 7;
    assert_eq!(err(r), "etcdserver: requested lease not found");
    assert_eq!(
        t.s().current_revision().unwrap(),
        1,
        "failed puts make no revision"
    );

    t.entry(|b| b.lease_grant(7, 60)).unwrap();
    let mut r = put_req("a", "v");
    r.lease = 7;
    t.entry(|b| b.put(&r)).unwrap();
    let mut r = put_req("a", "");
    r.ignore_value = true;
    r.ignore_lease = true;
    r.prev_kv = true;
    let resp = t.entry(|b| b.put(&r)).unwrap();
    assert_eq!(resp.prev_kv.unwrap().version, 1);
    let kv = t.get("a").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], 7, 2)
    );
    t.put("a", "w");
    assert_eq!(
        t.get("a").unwrap().lease,
        0,
        "a put without lease detaches it"
    );
    assert!(t.s().lease_keys(7).unwrap().is_empty());
}

#[test]
fn lease_revoke_deletes_its_keys_in_one_revision() {
    let t = TestStore::new();
    t.entry(|b| b.lease_grant(5, 10)).unwrap();
    for k in ["a", "b"] {
        let mut r = put_req(k, "v");
        r.lease = 5;
        t.entry(|b| b.put(&r)).unwrap();
    }
    t.put("c", "v");
    let d = t.entry(|b| b.lease_revoke(5)).unwrap();
    assert_eq!((d.deleted, d.revision), (2, 5));
    assert_eq!(keys(&t.range("\0", "\0")), ["c"]);
    assert!(t.s().leases().unwrap().is_empty());
    assert!(matches!(
        t.entry(|b| b.lease_revoke(5)).unwrap_err(),
        MvccError::LeaseNotFound
    ));
    assert!(matches!(
        t.entry(|b| {
            b.lease_grant(6, 1)?;
            b.lease_grant(6, 1)
        })
        .unwrap_err(),
        MvccError::LeaseExists
    ));
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.into(),
        range_end: vec![],
    }
}

#[test]
fn compares_on_missing_keys_use_a_zero_kv_and_value_fails() {
    let t = TestStore::new();
    let run = |c: Compare| {
        t.s()
            .txn_read(&TxnRequest {
                compare: vec![c],
                ..Default::default()
            })
            .unwrap()
            .succeeded
    };
    assert!(run(cmp(
        "nokey",
        CompareResult::Equal,
        CompareTarget::Create(0)
    )));
    assert!(run(cmp(
        "nokey",
        CompareResult::Equal,
        CompareTarget::Version(0)
    )));
    assert!(!run(cmp(
        "nokey",
        CompareResult::NotEqual,
        CompareTarget::Value(b"x".to_vec())
    )));
    t.put("a", "5");
    t.put("b", "7");
    assert!(run(cmp(
        "a",
        CompareResult::Less,
        CompareTarget::Value(b"6".to_vec())
    )));
    assert!(run(cmp("a", CompareResult::Greater, CompareTarget::Mod(1))));
    let mut c = cmp(
        "a",
        CompareResult::Greater,
        CompareTarget::Value(b"4".to_vec()),
    );
    c.range_end = b"c".to_vec();
    assert!(run(c.clone()), "every key of the range > 4");
    c.target = CompareTarget::Value(b"6".to_vec());
    assert!(!run(c), "a=5 is not > 6");
}

#[test]
fn txn_branches_and_nested_txn() {
    let t = TestStore::new();
    t.put("a", "1");
    let req = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(b"1".to_vec()),
        )],
        success: vec![
            RequestOp::Put(put_req("b", "2")),
            RequestOp::Txn(TxnRequest {
                compare: vec![cmp("zz", CompareResult::Equal, CompareTarget::Version(0))],
                success: vec![RequestOp::Put(put_req("c", "3"))],
                failure: vec![],
            }),
            RequestOp::Range(range_req("a", "\0")),
        ],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })],
    };
    let resp = t.entry(|b| b.txn(&req)).unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 3);
    let ResponseOp::Range(r) = &resp.responses[2] else {
        panic!()
    };
    assert_eq!(
        keys(r),
        ["a", "b", "c"],
        "a range in a txn sees its earlier writes"
    );
    let resp = t.entry(|b| b.txn(&req)).unwrap();
    assert!(resp.succeeded, "a is still 1: puts b and c again");
    assert_eq!(t.get("c").unwrap().version, 2);
}

#[test]
fn read_only_txn_makes_no_revision() {
    let t = TestStore::new();
    t.put("a", "1");
    let req = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Range(range_req("a", ""))],
        failure: vec![],
    };
    let resp = t.entry(|b| b.txn(&req)).unwrap();
    assert_eq!(resp.revision, 2);
    assert_eq!(t.s().current_revision().unwrap(), 2);
}

#[test]
fn duplicate_keys_in_txn_are_refused() {
    let t = TestStore::new();
    let dup = |ops: Vec<RequestOp>| {
        t.entry(|b| {
            b.txn(&TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let del = |k: &str, e: &str| {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: e.into(),
            prev_kv: false,
        })
    };
    let msg = Err("etcdserver: duplicate key given in txn request".to_string());
    assert_eq!(
        dup(vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("a", "2"))
        ]),
        msg
    );
    assert_eq!(
        dup(vec![RequestOp::Put(put_req("b", "1")), del("a", "c")]),
        msg
    );
    let nested = |s: Vec<RequestOp>, f: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: s,
            failure: f,
        })
    };
    assert_eq!(
        dup(vec![
            RequestOp::Put(put_req("a", "1")),
            nested(vec![RequestOp::Put(put_req("a", "1"))], vec![])
        ]),
        msg
    );
    // The same key in a nested txn's then- and else-branch is fine.
    assert_eq!(
        dup(vec![nested(
            vec![RequestOp::Put(put_req("a", "1"))],
            vec![RequestOp::Put(put_req("a", "2"))]
        )]),
        Ok(())
    );
    // Two overlapping deletes are fine.
    assert_eq!(dup(vec![del("a", "c"), del("b", "d")]), Ok(()));
}

#[test]
fn too_many_ops_in_txn() {
    let t = TestStore::new();
    let ops: Vec<RequestOp> = (0..129)
        .map(|i| RequestOp::Put(put_req(&format!("k{i}"), "v")))
        .collect();
    let err = t
        .entry(|b| {
            b.txn(&TxnRequest {
                compare: vec![],
                success: ops.clone(),
                failure: vec![],
            })
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: too many operations in txn request"
    );
    let ok = t.entry(|b| {
        b.txn(&TxnRequest {
            compare: vec![],
            success: ops[..128].to_vec(),
            failure: vec![],
        })
    });
    assert!(ok.is_ok());
}

#[test]
fn writes_need_an_entry_and_applied_entries_are_skipped() {
    let t = TestStore::new();
    let e = t.s().apply(|b| b.put(&put_req("a", "1"))).unwrap_err();
    assert!(matches!(e, MvccError::NoEntry));
    t.s()
        .apply(|b| {
            assert!(b.begin_entry(10, 2));
            b.put(&put_req("a", "1"))?;
            assert!(!b.begin_entry(10, 2), "same index again is skipped");
            assert!(b.put(&put_req("a", "2")).is_err());
            Ok(())
        })
        .unwrap();
    assert_eq!(
        t.s().applied_index().unwrap(),
        AppliedIndex { index: 10, term: 2 }
    );
    assert_eq!(t.get("a").unwrap().value, b"1");
}

#[test]
fn events_are_recorded_on_request() {
    let t = TestStore::new();
    t.put("a", "1");
    let events = t
        .entry(|b| {
            b.record_events(true);
            b.put(&put_req("a", "2"))?;
            b.delete_range(&DeleteRangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })?;
            Ok(b.take_events())
        })
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv.mod_revision, 4);
}

#[test]
fn events_since_a_revision_for_watch_catch_up() {
    let t = TestStore::new();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.put("a", "2"); // 4
    t.del("a", ""); // 5
    let ev = t.s().events(3, b"a", b"", 0).unwrap();
    let kinds: Vec<_> = ev.iter().map(|e| (e.kind, e.kv.mod_revision)).collect();
    assert_eq!(kinds, [(EventKind::Put, 4), (EventKind::Delete, 5)]);
    assert_eq!(ev[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().value, b"2");
    assert_eq!(t.s().events(2, b"\0", b"\0", 2).unwrap().len(), 2);
    t.entry(|b| b.compact(3)).unwrap();
    assert!(matches!(
        t.s().events(3, b"a", b"", 0).unwrap_err(),
        MvccError::Compacted
    ));
    assert_eq!(t.s().events(4, b"a", b"", 0).unwrap().len(), 2);
}

#[test]
fn an_event_page_ends_at_a_revision_boundary_past_its_limits() {
    let t = TestStore::new();
    t.put("k1", "aaaa"); // 2
                         // One revision of three changes: 3.
    t.entry(|b| b.txn(&puts_txn(&["k2", "k3", "k4"], "bbbb")))
        .unwrap();
    t.put("other", "x"); // 4
    t.put("k1", "cccc"); // 5
    let range = KeyRange::new(b"k", b"l");
    let read = |start: i64, max_events: usize, max_bytes: usize, prev_kv: bool| {
        let limits = EventPageLimits {
            max_events,
            max_bytes,
            prev_kv,
        };
        t.s().event_page(start, &range, limits)
    };
    let page = |start: i64, max_events: usize, max_bytes: usize| {
        let page = read(start, max_events, max_bytes, true).unwrap();
        let revisions: Vec<i64> = page.events.iter().map(|e| e.kv.mod_revision).collect();
        (revisions, page.next_revision)
    };
    // Two events reach the limit inside revision 3: it still comes whole.
    assert_eq!(page(2, 2, usize::MAX), (vec![2, 3, 3, 3], 5));
    // The bytes limit (6 B a change here) ends the page the same way.
    assert_eq!(page(2, usize::MAX, 1), (vec![2], 3));
    assert_eq!(page(3, usize::MAX, 1), (vec![3, 3, 3], 5));
    // To the end of history: the next page starts past the current revision.
    assert_eq!(page(5, 10, usize::MAX), (vec![5], 6));
    assert_eq!(page(6, 10, usize::MAX), (vec![], 6));
    let prev_value = |prev_kv: bool| {
        let page = read(5, 10, usize::MAX, prev_kv).unwrap();
        page.events[0].prev_kv.as_ref().map(|kv| kv.value.clone())
    };
    assert_eq!(prev_value(true), Some(b"aaaa".to_vec()));
    assert_eq!(prev_value(false), None);
    t.entry(|b| b.compact(3)).unwrap();
    assert!(matches!(
        read(3, 10, 10, false).unwrap_err(),
        MvccError::Compacted
    ));
}
