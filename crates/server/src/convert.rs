//! Conversions between etcd's protobuf messages and the MVCC store's own
//! request and response types. The store knows nothing of protobuf; this is
//! the one place the two meet.

use raftkv_mvcc as mvcc;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::mvccpb;
use tonic::Status;

use crate::status::invalid_sort_option;

/// A store key-value as etcd's message.
pub fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// etcd's range request as the store's.
pub fn range_from_pb(req: &pb::RangeRequest) -> Result<mvcc::RangeRequest, Status> {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order = match SortOrder::try_from(req.sort_order) {
        Ok(SortOrder::None) => mvcc::SortOrder::None,
        Ok(SortOrder::Ascend) => mvcc::SortOrder::Ascend,
        Ok(SortOrder::Descend) => mvcc::SortOrder::Descend,
        Err(_) => return Err(invalid_sort_option()),
    };
    let sort_target = match SortTarget::try_from(req.sort_target) {
        Ok(SortTarget::Key) => mvcc::SortTarget::Key,
        Ok(SortTarget::Version) => mvcc::SortTarget::Version,
        Ok(SortTarget::Create) => mvcc::SortTarget::Create,
        Ok(SortTarget::Mod) => mvcc::SortTarget::Mod,
        Ok(SortTarget::Value) => mvcc::SortTarget::Value,
        Err(_) => return Err(invalid_sort_option()),
    };
    Ok(mvcc::RangeRequest {
        key: req.key.clone(),
        range_end: req.range_end.clone(),
        limit: req.limit,
        revision: req.revision,
        sort_order,
        sort_target,
        keys_only: req.keys_only,
        count_only: req.count_only,
        min_mod_revision: req.min_mod_revision,
        max_mod_revision: req.max_mod_revision,
        min_create_revision: req.min_create_revision,
        max_create_revision: req.max_create_revision,
    })
}

/// The store's range response as etcd's (the header is filled by the caller).
pub fn range_to_pb(resp: mvcc::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: None,
        kvs: resp.kvs.into_iter().map(kv_to_pb).collect(),
        more: resp.more,
        count: resp.count,
    }
}

/// etcd's put request as the store's.
pub fn put_from_pb(req: &pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: req.key.clone(),
        value: req.value.clone(),
        lease: req.lease,
        prev_kv: req.prev_kv,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
    }
}

/// The store's put response as etcd's.
pub fn put_to_pb(resp: mvcc::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: None,
        prev_kv: resp.prev_kv.map(kv_to_pb),
    }
}

/// etcd's delete request as the store's.
pub fn delete_from_pb(req: &pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: req.key.clone(),
        range_end: req.range_end.clone(),
        prev_kv: req.prev_kv,
    }
}

/// The store's delete response as etcd's.
pub fn delete_to_pb(resp: mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: None,
        deleted: resp.deleted,
        prev_kvs: resp.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(cmp: &pb::Compare) -> Result<mvcc::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(cmp.result) {
        Ok(CompareResult::Equal) => mvcc::CompareResult::Equal,
        Ok(CompareResult::Greater) => mvcc::CompareResult::Greater,
        Ok(CompareResult::Less) => mvcc::CompareResult::Less,
        Ok(CompareResult::NotEqual) => mvcc::CompareResult::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ))
        }
    };
    let number = |union: &Option<TargetUnion>| match union {
        Some(
            TargetUnion::Version(v) | TargetUnion::CreateRevision(v) | TargetUnion::ModRevision(v),
        )
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    };
    let target = match CompareTarget::try_from(cmp.target) {
        Ok(CompareTarget::Version) => mvcc::CompareTarget::Version(number(&cmp.target_union)),
        Ok(CompareTarget::Create) => mvcc::CompareTarget::Create(number(&cmp.target_union)),
        Ok(CompareTarget::Mod) => mvcc::CompareTarget::Mod(number(&cmp.target_union)),
        Ok(CompareTarget::Lease) => mvcc::CompareTarget::Lease(number(&cmp.target_union)),
        Ok(CompareTarget::Value) => mvcc::CompareTarget::Value(match &cmp.target_union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare target",
            ))
        }
    };
    Ok(mvcc::Compare {
        result,
        target,
        key: cmp.key.clone(),
        range_end: cmp.range_end.clone(),
    })
}

fn op_from_pb(op: &pb::RequestOp) -> Result<mvcc::RequestOp, Status> {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(r)) => Ok(mvcc::RequestOp::Range(range_from_pb(r)?)),
        Some(Request::RequestPut(r)) => Ok(mvcc::RequestOp::Put(put_from_pb(r))),
        Some(Request::RequestDeleteRange(r)) => Ok(mvcc::RequestOp::DeleteRange(delete_from_pb(r))),
        Some(Request::RequestTxn(r)) => Ok(mvcc::RequestOp::Txn(txn_from_pb(r)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: empty request op in txn",
        )),
    }
}

/// etcd's txn request as the store's.
pub fn txn_from_pb(req: &pb::TxnRequest) -> Result<mvcc::TxnRequest, Status> {
    Ok(mvcc::TxnRequest {
        compare: req
            .compare
            .iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: req
            .success
            .iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        failure: req
            .failure
            .iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

/// The store's txn response as etcd's. Nested responses carry the same
/// header as the outer one, which the caller fills.
pub fn txn_to_pb(resp: mvcc::TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = resp
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            // etcd gives every inner response an empty header (clients
            // such as etcdctl's `-w fields` read it).
            response: Some(match r {
                mvcc::ResponseOp::Range(r) => Response::ResponseRange(pb::RangeResponse {
                    header: Some(Default::default()),
                    ..range_to_pb(r)
                }),
                mvcc::ResponseOp::Put(r) => Response::ResponsePut(pb::PutResponse {
                    header: Some(Default::default()),
                    ..put_to_pb(r)
                }),
                mvcc::ResponseOp::DeleteRange(r) => {
                    Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: Some(Default::default()),
                        ..delete_to_pb(r)
                    })
                }
                mvcc::ResponseOp::Txn(r) => Response::ResponseTxn(pb::TxnResponse {
                    header: Some(Default::default()),
                    ..txn_to_pb(r)
                }),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: None,
        succeeded: resp.succeeded,
        responses,
    }
}

/// Counts the operations of a txn at every level, as etcd's limit does:
/// the largest of compares, success ops and failure ops, recursively.
pub fn txn_ops_max(req: &pb::TxnRequest) -> usize {
    use pb::request_op::Request;
    let nested = req
        .success
        .iter()
        .chain(&req.failure)
        .filter_map(|op| match &op.request {
            Some(Request::RequestTxn(t)) => Some(txn_ops_max(t)),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    req.compare
        .len()
        .max(req.success.len())
        .max(req.failure.len())
        .max(nested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_sort_option_is_refused_like_etcd() {
        let req = pb::RangeRequest {
            key: b"k".to_vec(),
            sort_order: 7,
            ..Default::default()
        };
        let err = range_from_pb(&req).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "etcdserver: invalid sort option");
    }

    #[test]
    fn compares_keep_their_target_value() {
        let cmp = pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(42)),
        };
        let converted = compare_from_pb(&cmp).expect("valid");
        assert_eq!(converted.target, mvcc::CompareTarget::Mod(42));
        assert_eq!(converted.result, mvcc::CompareResult::Greater);
    }

    #[test]
    fn txn_ops_count_the_widest_level() {
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(
                pb::PutRequest::default(),
            )),
        };
        let inner = pb::TxnRequest {
            success: vec![put.clone(); 5],
            ..Default::default()
        };
        let outer = pb::TxnRequest {
            success: vec![
                put.clone(),
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(inner)),
                },
            ],
            failure: vec![put; 3],
            ..Default::default()
        };
        assert_eq!(txn_ops_max(&outer), 5);
    }
}
