//! `-w fields`: etcdctl's `"Name" : value` lines, one field per line,
//! strings in Go's `%q` quoting, meant for scripts that grep.

use std::fmt::Write as _;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::mvccpb;

use super::gofmt::{duration, quote};
use super::{alarm_name, EndpointHealth};

fn header(out: &mut String, h: Option<&pb::ResponseHeader>) {
    // etcd always sends a header; a missing one (a txn's inner answers from
    // some servers) prints as zeros rather than failing.
    let h = h.copied().unwrap_or_default();
    let _ = writeln!(out, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", h.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", h.raft_term);
}

fn kv(out: &mut String, prefix: &str, kv: &mvccpb::KeyValue) {
    let _ = writeln!(out, "\"{prefix}Key\" : {}", quote(&kv.key));
    let _ = writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(out, "\"{prefix}Value\" : {}", quote(&kv.value));
    let _ = writeln!(out, "\"{prefix}Lease\" : {}", kv.lease);
}

/// `get`.
pub fn range(r: &pb::RangeResponse) -> String {
    let mut out = String::new();
    range_into(&mut out, r);
    out
}

fn range_into(out: &mut String, r: &pb::RangeResponse) {
    header(out, r.header.as_ref());
    for item in &r.kvs {
        kv(out, "", item);
    }
    let _ = writeln!(out, "\"More\" : {}", r.more);
    let _ = writeln!(out, "\"Count\" : {}", r.count);
}

/// `put`.
pub fn put(r: &pb::PutResponse) -> String {
    let mut out = String::new();
    put_into(&mut out, r);
    out
}

fn put_into(out: &mut String, r: &pb::PutResponse) {
    header(out, r.header.as_ref());
    if let Some(prev) = &r.prev_kv {
        kv(out, "Prev", prev);
    }
}

/// `del`.
pub fn delete(r: &pb::DeleteRangeResponse) -> String {
    let mut out = String::new();
    delete_into(&mut out, r);
    out
}

fn delete_into(out: &mut String, r: &pb::DeleteRangeResponse) {
    header(out, r.header.as_ref());
    let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
    for prev in &r.prev_kvs {
        kv(out, "Prev", prev);
    }
}

/// `txn`.
pub fn txn(r: &pb::TxnResponse) -> String {
    let mut out = String::new();
    txn_into(&mut out, r);
    out
}

fn txn_into(out: &mut String, r: &pb::TxnResponse) {
    use pb::response_op::Response;
    header(out, r.header.as_ref());
    let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(Response::ResponseRange(r)) => range_into(out, r),
            Some(Response::ResponsePut(r)) => put_into(out, r),
            Some(Response::ResponseDeleteRange(r)) => delete_into(out, r),
            Some(Response::ResponseTxn(r)) => txn_into(out, r),
            None => out.push_str("\"Unknown\" : \"<nil>\"\n"),
        }
    }
}

/// `watch`.
pub fn watch(r: &pb::WatchResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    for event in &r.events {
        let _ = writeln!(
            out,
            "\"Type\" : {}",
            super::simple::event_type(event.r#type)
        );
        if let Some(prev) = &event.prev_kv {
            kv(&mut out, "Prev", prev);
        }
        kv(&mut out, "", &event.kv.clone().unwrap_or_default());
    }
    out
}

/// `lease grant` and `lease keep-alive`.
pub fn lease_id_ttl(h: Option<&pb::ResponseHeader>, id: i64, ttl: i64) -> String {
    let mut out = String::new();
    header(&mut out, h);
    let _ = writeln!(out, "\"ID\" : {id}");
    let _ = writeln!(out, "\"TTL\" : {ttl}");
    out
}

/// `lease revoke`.
pub fn header_only(h: Option<&pb::ResponseHeader>) -> String {
    let mut out = String::new();
    header(&mut out, h);
    out
}

/// `lease timetolive`.
pub fn lease_time_to_live(r: &pb::LeaseTimeToLiveResponse) -> String {
    let mut out = lease_id_ttl(r.header.as_ref(), r.id, r.ttl);
    let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl);
    for key in &r.keys {
        let _ = writeln!(out, "\"Key\" : {}", quote(key));
    }
    out
}

/// `lease list`.
pub fn lease_leases(r: &pb::LeaseLeasesResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    for lease in &r.leases {
        let _ = writeln!(out, "\"ID\" : {}", lease.id);
    }
    out
}

/// `member list`.
pub fn member_list(r: &pb::MemberListResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    for m in &r.members {
        let _ = writeln!(out, "\"ID\" : {}", m.id);
        let _ = writeln!(out, "\"Name\" : {}", quote(m.name.as_bytes()));
        for url in &m.peer_ur_ls {
            let _ = writeln!(out, "\"PeerURL\" : {}", quote(url.as_bytes()));
        }
        for url in &m.client_ur_ls {
            let _ = writeln!(out, "\"ClientURL\" : {}", quote(url.as_bytes()));
        }
        let _ = writeln!(out, "\"IsLearner\" : {}", m.is_learner);
        out.push('\n');
    }
    out
}

/// `endpoint status`.
pub fn endpoint_status(list: &[(String, pb::StatusResponse)]) -> String {
    let mut out = String::new();
    for (endpoint, s) in list {
        header(&mut out, s.header.as_ref());
        let _ = writeln!(out, "\"Version\" : {}", quote(s.version.as_bytes()));
        let _ = writeln!(out, "\"DBSize\" : {}", s.db_size);
        let _ = writeln!(out, "\"Leader\" : {}", s.leader);
        let _ = writeln!(out, "\"IsLearner\" : {}", s.is_learner);
        let _ = writeln!(out, "\"RaftIndex\" : {}", s.raft_index);
        let _ = writeln!(out, "\"RaftTerm\" : {}", s.raft_term);
        let _ = writeln!(out, "\"RaftAppliedIndex\" : {}", s.raft_applied_index);
        let _ = writeln!(out, "\"Errors\" : [{}]", s.errors.join(" "));
        let _ = writeln!(out, "\"Endpoint\" : {}", quote(endpoint.as_bytes()));
        out.push('\n');
    }
    out
}

/// `endpoint health`.
pub fn endpoint_health(list: &[EndpointHealth]) -> String {
    let mut out = String::new();
    for h in list {
        let _ = writeln!(out, "\"Endpoint\" : {}", quote(h.endpoint.as_bytes()));
        let _ = writeln!(out, "\"Health\" : {}", h.healthy);
        let _ = writeln!(out, "\"Took\" : {}", duration(h.took));
        let _ = writeln!(out, "\"Error\" : {}", h.error);
        out.push('\n');
    }
    out
}

/// `alarm list` / `alarm disarm`.
pub fn alarm(r: &pb::AlarmResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    for a in &r.alarms {
        let _ = writeln!(out, "\"MemberID\" : {}", a.member_id);
        let _ = writeln!(out, "\"AlarmType\" : {}", alarm_name(a.alarm));
        out.push('\n');
    }
    out
}

/// `auth status` (etcdctl 3.5's fields).
pub fn auth_status(r: &pb::AuthStatusResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    let _ = writeln!(out, "\"Enabled\" : {}", r.enabled);
    let _ = writeln!(out, "\"AuthRevision\" : {}", r.auth_revision);
    out
}

/// `role get`. etcdctl prints the type with `Println`, which puts a space
/// between its operands, hence the two spaces after the colon.
pub fn role_get(r: &pb::AuthRoleGetResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    for p in &r.perm {
        let name = raftkv_proto::authpb::permission::Type::try_from(p.perm_type)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_else(|_| p.perm_type.to_string());
        let _ = writeln!(out, "\"PermType\" :  {name}");
        let _ = writeln!(out, "\"Key\" : {}", quote(&p.key));
        let _ = writeln!(out, "\"RangeEnd\" : {}", quote(&p.range_end));
    }
    out
}

/// `role list`: the names quoted on one line.
pub fn role_list(r: &pb::AuthRoleListResponse) -> String {
    let mut out = String::new();
    header(&mut out, r.header.as_ref());
    out.push_str("\"Roles\" :");
    for role in &r.roles {
        out.push(' ');
        out.push_str(&quote(role.as_bytes()));
    }
    out.push('\n');
    out
}
