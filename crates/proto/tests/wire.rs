//! Golden wire-format tests: each expected byte string is written by hand from the field
//! numbers in etcd's `.proto` files and the protobuf encoding rules (tag =
//! `field_number << 3 | wire_type`; wire type 0 = varint, 2 = length-delimited), so a
//! renumbered field, a wrong scalar type or a changed enum value fails here.

use prost::Message;
use raftkv_proto::etcdserverpb::{
    compare, range_request, request_op, watch_create_request, watch_request, AlarmType, Compare,
    DowngradeInfo, LeaseGrantRequest, LeaseTimeToLiveResponse, MemberAddRequest, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, StatusResponse, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use raftkv_proto::mvccpb::{event, Event, KeyValue};

/// Encodes `msg`, checks it against `expected`, and checks that `expected` decodes back to
/// `msg`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    assert_eq!(msg.encode_to_vec(), expected, "encoding of {msg:?}");
    assert_eq!(&M::decode(expected).expect("golden bytes decode"), msg);
}

#[test]
fn put_request_fields_1_to_4() {
    let put = PutRequest {
        key: b"a".to_vec(),
        value: b"b".to_vec(),
        lease: 5,
        prev_kv: true,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x01, b'a', // 1: key, bytes
        0x12, 0x01, b'b', // 2: value, bytes
        0x18, 0x05,       // 3: lease, varint
        0x20, 0x01,       // 4: prev_kv, bool
    ];
    assert_wire(&put, &expected);
}

#[test]
fn put_request_ignore_flags_are_fields_5_and_6() {
    let put = PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    };
    assert_wire(&put, &[0x0a, 0x01, b'k', 0x28, 0x01, 0x30, 0x01]);
}

#[test]
fn range_request_range_limit_revision_sort() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 10,
        revision: 300,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 4,
        max_create_revision: 1,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x01, b'a', // 1: key
        0x12, 0x01, b'b', // 2: range_end
        0x18, 0x0a,       // 3: limit 10
        0x20, 0xac, 0x02, // 4: revision 300 = 0b10_0101100 -> 0xac 0x02
        0x28, 0x02,       // 5: sort_order DESCEND = 2
        0x30, 0x03,       // 6: sort_target MOD = 3
        0x38, 0x01,       // 7: serializable
        0x40, 0x01,       // 8: keys_only
        0x48, 0x01,       // 9: count_only
        0x50, 0x04,       // 10: min_mod_revision
        0x68, 0x01,       // 13: max_create_revision
    ];
    assert_wire(&range, &expected);
}

#[test]
fn range_response_with_key_value_decodes() {
    let resp = RangeResponse {
        header: Some(ResponseHeader {
            revision: 2,
            ..Default::default()
        }),
        kvs: vec![KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x02, 0x18, 0x02,             // 1: header { 3: revision 2 }
        0x12, 0x10,                         // 2: kvs, 16 bytes:
        0x0a, 0x03, b'f', b'o', b'o',       //   1: key
        0x10, 0x02,                         //   2: create_revision
        0x18, 0x02,                         //   3: mod_revision
        0x20, 0x01,                         //   4: version
        0x2a, 0x03, b'b', b'a', b'r',       //   5: value
        0x20, 0x01,                         // 4: count
    ];
    assert_wire(&resp, &expected);
}

#[test]
fn response_header_all_fields() {
    let header = ResponseHeader {
        cluster_id: 1 << 63,
        member_id: 2,
        revision: 128,
        raft_term: 3,
    };
    #[rustfmt::skip]
    let expected = [
        // 1: cluster_id 2^63: nine groups of 7 zero bits, then 1.
        0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        0x10, 0x02,       // 2: member_id
        0x18, 0x80, 0x01, // 3: revision 128
        0x20, 0x03,       // 4: raft_term
    ];
    assert_wire(&header, &expected);
}

#[test]
fn negative_int64_is_a_ten_byte_varint_not_zigzag() {
    // etcd answers TTL = -1 for an unknown lease; int64, not sint64.
    let resp = LeaseTimeToLiveResponse {
        ttl: -1,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x18, // 3: TTL
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert_wire(&resp, &expected);
}

#[test]
fn txn_with_mod_revision_compare() {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::ModRevision(7)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x09,             // 1: compare, 9 bytes:
        0x08, 0x01,             //   1: result GREATER = 1
        0x10, 0x02,             //   2: target MOD = 2
        0x1a, 0x01, b'k',       //   3: key
        0x30, 0x07,             //   6: mod_revision 7
        0x12, 0x08,             // 2: success, 8 bytes:
        0x12, 0x06,             //   2: request_put, 6 bytes:
        0x0a, 0x01, b'k',       //     1: key
        0x12, 0x01, b'v',       //     2: value
        0x1a, 0x05,             // 3: failure, 5 bytes:
        0x0a, 0x03,             //   1: request_range, 3 bytes:
        0x0a, 0x01, b'k',       //     1: key
    ];
    assert_wire(&txn, &expected);
}

#[test]
fn compare_oneof_zero_is_sent_and_range_end_is_field_64() {
    // "create_revision == 0" is how clients ask "is the key absent?": the zero must be on
    // the wire because it sits in a oneof. range_end's tag 64 needs a two-byte varint.
    let cmp = Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: b"k".to_vec(),
        range_end: b"z".to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 0x01,             // 2: target CREATE = 1 (result EQUAL = 0 is omitted)
        0x1a, 0x01, b'k',       // 3: key
        0x28, 0x00,             // 5: create_revision 0, present because of the oneof
        0x82, 0x04, 0x01, b'z', // 64: range_end; tag 64<<3|2 = 514 -> 0x82 0x04
    ];
    assert_wire(&cmp, &expected);

    let lease_cmp = Compare {
        target: compare::CompareTarget::Lease as i32,
        result: compare::CompareResult::NotEqual as i32,
        key: b"k".to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::Lease(9)),
    };
    assert_wire(
        &lease_cmp,
        &[0x08, 0x03, 0x10, 0x04, 0x1a, 0x01, b'k', 0x40, 0x09],
    );
}

#[test]
fn watch_create_request_every_field() {
    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"foo".to_vec(),
                range_end: b"fop".to_vec(),
                start_revision: 5,
                progress_notify: true,
                filters: vec![watch_create_request::FilterType::Nodelete as i32],
                prev_kv: true,
                watch_id: 3,
                fragment: true,
            },
        )),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x17,                   // 1: create_request, 23 bytes:
        0x0a, 0x03, b'f', b'o', b'o', //   1: key
        0x12, 0x03, b'f', b'o', b'p', //   2: range_end
        0x18, 0x05,                   //   3: start_revision
        0x20, 0x01,                   //   4: progress_notify
        0x2a, 0x01, 0x01,             //   5: filters, packed: [NODELETE = 1]
        0x30, 0x01,                   //   6: prev_kv
        0x38, 0x03,                   //   7: watch_id
        0x40, 0x01,                   //   8: fragment
    ];
    assert_wire(&req, &expected);
}

#[test]
fn watch_progress_and_cancel_requests() {
    // An empty message in a oneof is still sent (tag, length 0).
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_wire(&progress, &[0x1a, 0x00]);

    let cancel = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            raftkv_proto::etcdserverpb::WatchCancelRequest { watch_id: 2 },
        )),
    };
    assert_wire(&cancel, &[0x12, 0x02, 0x08, 0x02]);
}

#[test]
fn watch_response_events_are_field_11() {
    let resp = raftkv_proto::etcdserverpb::WatchResponse {
        watch_id: 1,
        fragment: true,
        cancel_reason: "x".into(),
        events: vec![Event {
            r#type: event::EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"a".to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 0x01,             // 2: watch_id
        0x32, 0x01, b'x',       // 6: cancel_reason
        0x38, 0x01,             // 7: fragment
        0x5a, 0x07,             // 11: events, 7 bytes:
        0x08, 0x01,             //   1: type DELETE = 1
        0x12, 0x03,             //   2: kv, 3 bytes:
        0x0a, 0x01, b'a',       //     1: key
    ];
    assert_wire(&resp, &expected);
}

#[test]
fn status_response_head_fields() {
    let status = StatusResponse {
        version: "3.4.23".into(),
        is_learner: true,
        storage_version: "3.6.0".into(),
        db_size_quota: 100,
        downgrade_info: Some(DowngradeInfo {
            enabled: true,
            target_version: "3.5".into(),
        }),
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x12, 0x06, b'3', b'.', b'4', b'.', b'2', b'3', // 2: version
        0x50, 0x01,                                     // 10: isLearner
        0x5a, 0x05, b'3', b'.', b'6', b'.', b'0',       // 11: storageVersion
        0x60, 0x64,                                     // 12: dbSizeQuota 100
        0x6a, 0x07,                                     // 13: downgradeInfo, 7 bytes:
        0x08, 0x01,                                     //   1: enabled
        0x12, 0x03, b'3', b'.', b'5',                   //   2: targetVersion
    ];
    assert_wire(&status, &expected);
}

#[test]
fn member_add_and_lease_grant() {
    let add = MemberAddRequest {
        peer_ur_ls: vec!["http://a".into()],
        is_learner: true,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 0x08, b'h', b't', b't', b'p', b':', b'/', b'/', b'a', // 1: peerURLs
        0x10, 0x01,                                                 // 2: isLearner
    ];
    assert_wire(&add, &expected);

    let grant = LeaseGrantRequest { ttl: 60, id: 7 };
    assert_wire(&grant, &[0x08, 0x3c, 0x10, 0x07]);
}

#[test]
fn enum_values_match_etcd() {
    assert_eq!(AlarmType::None as i32, 0);
    assert_eq!(AlarmType::Nospace as i32, 1);
    assert_eq!(AlarmType::Corrupt as i32, 2);
    assert_eq!(range_request::SortTarget::Value as i32, 4);
    assert_eq!(compare::CompareTarget::Value as i32, 3);
    assert_eq!(raftkv_proto::authpb::permission::Type::Readwrite as i32, 2);
}

#[test]
fn unknown_fields_from_newer_clients_are_skipped() {
    // Field 99, varint 1: tag 99<<3|0 = 792 -> 0x98 0x06.
    let bytes = [0x0a, 0x01, b'a', 0x98, 0x06, 0x01];
    let put = PutRequest::decode(&bytes[..]).expect("unknown field is skipped");
    assert_eq!(put.key, b"a");
}
