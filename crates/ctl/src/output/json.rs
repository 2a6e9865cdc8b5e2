//! `-w json`: the response as etcdctl prints it, which is Go's
//! `encoding/json` of etcd's generated structs. That fixes the details:
//! fields in struct order under their Go JSON names, zero values left out
//! (`omitempty`), 64-bit integers as numbers, bytes in base64, oneofs under
//! their Go field names (`{"Response":{"ResponsePut":{...}}}`), `<`, `>`
//! and `&` escaped as `\u003c`... Some etcdctl outputs are its own structs
//! rather than the protobuf message (lease answers flatten the header;
//! watch answers use `Header`/`Events`); those shapes are kept too.

use base64::Engine as _;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::mvccpb;
use serde_json::{Map, Value};

use super::EndpointHealth;

/// One line of JSON, as etcdctl prints it (with the newline).
pub fn line(value: &Value) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    let text = match serde::Serialize::serialize(value, &mut serializer) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        // Serializing a Value into memory cannot fail; keep the output sane
        // if it ever did.
        Err(err) => format!("{{\"error\":{:?}}}", err.to_string()),
    };
    text + "\n"
}

/// An object under construction, with Go's `omitempty` rules.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn int(mut self, key: &str, value: i64) -> Self {
        if value != 0 {
            self.0.insert(key.into(), value.into());
        }
        self
    }
    fn uint(mut self, key: &str, value: u64) -> Self {
        if value != 0 {
            self.0.insert(key.into(), value.into());
        }
        self
    }
    fn flag(mut self, key: &str, value: bool) -> Self {
        if value {
            self.0.insert(key.into(), true.into());
        }
        self
    }
    fn text(mut self, key: &str, value: &str) -> Self {
        if !value.is_empty() {
            self.0.insert(key.into(), value.into());
        }
        self
    }
    fn bytes(mut self, key: &str, value: &[u8]) -> Self {
        if !value.is_empty() {
            self.0.insert(key.into(), base64(value).into());
        }
        self
    }
    fn opt(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.into(), value);
        }
        self
    }
    fn list(mut self, key: &str, values: Vec<Value>) -> Self {
        if !values.is_empty() {
            self.0.insert(key.into(), Value::Array(values));
        }
        self
    }
    /// A field without `omitempty`: always present.
    fn always(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn header(h: &pb::ResponseHeader) -> Value {
    header_fields(Obj::default(), Some(h)).done()
}

/// The header's fields, into `obj` (etcdctl's lease answers embed them).
fn header_fields(obj: Obj, h: Option<&pb::ResponseHeader>) -> Obj {
    let h = h.copied().unwrap_or_default();
    obj.uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
}

fn opt_header(h: &Option<pb::ResponseHeader>) -> Option<Value> {
    h.as_ref().map(header)
}

fn kv(kv: &mvccpb::KeyValue) -> Value {
    Obj::default()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

fn range_value(r: &pb::RangeResponse) -> Value {
    Obj::default()
        .opt("header", opt_header(&r.header))
        .list("kvs", r.kvs.iter().map(kv).collect())
        .flag("more", r.more)
        .int("count", r.count)
        .done()
}

fn put_value(r: &pb::PutResponse) -> Value {
    Obj::default()
        .opt("header", opt_header(&r.header))
        .opt("prev_kv", r.prev_kv.as_ref().map(kv))
        .done()
}

fn delete_value(r: &pb::DeleteRangeResponse) -> Value {
    Obj::default()
        .opt("header", opt_header(&r.header))
        .int("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .done()
}

fn txn_value(r: &pb::TxnResponse) -> Value {
    Obj::default()
        .opt("header", opt_header(&r.header))
        .flag("succeeded", r.succeeded)
        .list("responses", r.responses.iter().map(response_op).collect())
        .done()
}

fn response_op(op: &pb::ResponseOp) -> Value {
    use pb::response_op::Response;
    let inner = match &op.response {
        None => Value::Null,
        Some(Response::ResponseRange(r)) => Obj::default()
            .always("ResponseRange", range_value(r))
            .done(),
        Some(Response::ResponsePut(r)) => Obj::default().always("ResponsePut", put_value(r)).done(),
        Some(Response::ResponseDeleteRange(r)) => Obj::default()
            .always("ResponseDeleteRange", delete_value(r))
            .done(),
        Some(Response::ResponseTxn(r)) => Obj::default().always("ResponseTxn", txn_value(r)).done(),
    };
    Obj::default().always("Response", inner).done()
}

/// `get`.
pub fn range(r: &pb::RangeResponse) -> String {
    line(&range_value(r))
}

/// `put`.
pub fn put(r: &pb::PutResponse) -> String {
    line(&put_value(r))
}

/// `del`.
pub fn delete(r: &pb::DeleteRangeResponse) -> String {
    line(&delete_value(r))
}

/// `txn`.
pub fn txn(r: &pb::TxnResponse) -> String {
    line(&txn_value(r))
}

fn event(e: &mvccpb::Event) -> Value {
    Obj::default()
        .int("type", i64::from(e.r#type))
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .done()
}

/// `watch`: etcd's Go client's WatchResponse, whose fields carry no JSON
/// names and no `omitempty` (and whose event list is never null).
pub fn watch(r: &pb::WatchResponse) -> String {
    let events = Value::Array(r.events.iter().map(event).collect());
    let value = Obj::default()
        .always("Header", header(&r.header.unwrap_or_default()))
        .always("Events", events)
        .always("CompactRevision", r.compact_revision.into())
        .always("Canceled", r.canceled.into())
        .always("Created", r.created.into())
        .done();
    line(&value)
}

/// `lease grant`: the client's struct, header embedded.
pub fn lease_grant(r: &pb::LeaseGrantResponse) -> String {
    let value = header_fields(Obj::default(), r.header.as_ref())
        .always("ID", r.id.into())
        .always("TTL", r.ttl.into())
        .always("Error", r.error.clone().into())
        .done();
    line(&value)
}

/// `lease revoke`: the protobuf message.
pub fn lease_revoke(r: &pb::LeaseRevokeResponse) -> String {
    line(&Obj::default().opt("header", opt_header(&r.header)).done())
}

/// `lease keep-alive`.
pub fn lease_keep_alive(r: &pb::LeaseKeepAliveResponse) -> String {
    let value = header_fields(Obj::default(), r.header.as_ref())
        .always("ID", r.id.into())
        .always("TTL", r.ttl.into())
        .done();
    line(&value)
}

/// `lease timetolive`: `keys` is null when there are none.
pub fn lease_time_to_live(r: &pb::LeaseTimeToLiveResponse) -> String {
    let keys = if r.keys.is_empty() {
        Value::Null
    } else {
        Value::Array(r.keys.iter().map(|k| base64(k).into()).collect())
    };
    let value = header_fields(Obj::default(), r.header.as_ref())
        .always("id", r.id.into())
        .always("ttl", r.ttl.into())
        .always("granted-ttl", r.granted_ttl.into())
        .always("keys", keys)
        .done();
    line(&value)
}

/// `lease list`: `leases` is always an array.
pub fn lease_leases(r: &pb::LeaseLeasesResponse) -> String {
    let leases = r
        .leases
        .iter()
        .map(|l| Obj::default().always("id", l.id.into()).done())
        .collect();
    let value = header_fields(Obj::default(), r.header.as_ref())
        .always("leases", Value::Array(leases))
        .done();
    line(&value)
}

fn member(m: &pb::Member) -> Value {
    let urls = |urls: &[String]| urls.iter().map(|u| Value::from(u.as_str())).collect();
    Obj::default()
        .uint("ID", m.id)
        .text("name", &m.name)
        .list("peerURLs", urls(&m.peer_ur_ls))
        .list("clientURLs", urls(&m.client_ur_ls))
        .flag("isLearner", m.is_learner)
        .done()
}

fn members(list: &[pb::Member]) -> Vec<Value> {
    list.iter().map(member).collect()
}

/// `member list`.
pub fn member_list(r: &pb::MemberListResponse) -> String {
    let value = Obj::default()
        .opt("header", opt_header(&r.header))
        .list("members", members(&r.members))
        .done();
    line(&value)
}

/// `member add`.
pub fn member_add(r: &pb::MemberAddResponse) -> String {
    let value = Obj::default()
        .opt("header", opt_header(&r.header))
        .opt("member", r.member.as_ref().map(member))
        .list("members", members(&r.members))
        .done();
    line(&value)
}

/// `member remove`, `update` and `promote` answer a header and the members.
pub fn member_change(header: &Option<pb::ResponseHeader>, list: &[pb::Member]) -> String {
    let value = Obj::default()
        .opt("header", opt_header(header))
        .list("members", members(list))
        .done();
    line(&value)
}

fn status_value(r: &pb::StatusResponse) -> Value {
    let errors = r.errors.iter().map(|e| Value::from(e.as_str())).collect();
    Obj::default()
        .opt("header", opt_header(&r.header))
        .text("version", &r.version)
        .int("dbSize", r.db_size)
        .uint("leader", r.leader)
        .uint("raftIndex", r.raft_index)
        .uint("raftTerm", r.raft_term)
        .uint("raftAppliedIndex", r.raft_applied_index)
        .list("errors", errors)
        .int("dbSizeInUse", r.db_size_in_use)
        .flag("isLearner", r.is_learner)
        .done()
}

/// `endpoint status`: a list of `{"Endpoint","Status"}`.
pub fn endpoint_status(list: &[(String, pb::StatusResponse)]) -> String {
    let items = list
        .iter()
        .map(|(ep, status)| {
            Obj::default()
                .always("Endpoint", ep.as_str().into())
                .always("Status", status_value(status))
                .done()
        })
        .collect();
    line(&Value::Array(items))
}

/// `endpoint health`.
pub fn endpoint_health(list: &[EndpointHealth]) -> String {
    let items = list
        .iter()
        .map(|h| {
            Obj::default()
                .always("endpoint", h.endpoint.as_str().into())
                .always("health", h.healthy.into())
                .always("took", super::gofmt::duration(h.took).into())
                .text("error", &h.error)
                .done()
        })
        .collect();
    line(&Value::Array(items))
}

/// `alarm list` and `alarm disarm`; the alarm type is a number, as Go
/// encodes protobuf enums.
pub fn alarm(r: &pb::AlarmResponse) -> String {
    let alarms = r
        .alarms
        .iter()
        .map(|a| {
            Obj::default()
                .uint("memberID", a.member_id)
                .int("alarm", i64::from(a.alarm))
                .done()
        })
        .collect();
    let value = Obj::default()
        .opt("header", opt_header(&r.header))
        .list("alarms", alarms)
        .done();
    line(&value)
}

/// Answers that are a header alone (`move-leader`).
pub fn header_only(h: &Option<pb::ResponseHeader>) -> String {
    line(&Obj::default().opt("header", opt_header(h)).done())
}

/// Escapes strings as Go's `encoding/json` does: HTML-significant
/// characters and the two Unicode line separators as `\u00XX`, control
/// characters other than `\n`, `\r` and `\t` as `\u00XX`.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        use serde_json::ser::CharEscape;
        let text = match char_escape {
            CharEscape::Quote => "\\\"".to_string(),
            CharEscape::ReverseSolidus => "\\\\".to_string(),
            CharEscape::LineFeed => "\\n".to_string(),
            CharEscape::CarriageReturn => "\\r".to_string(),
            CharEscape::Tab => "\\t".to_string(),
            CharEscape::Backspace => "\\u0008".to_string(),
            CharEscape::FormFeed => "\\u000c".to_string(),
            CharEscape::Solidus => "/".to_string(),
            CharEscape::AsciiControl(byte) => format!("\\u{byte:04x}"),
        };
        writer.write_all(text.as_bytes())
    }
}

/// An answer that is only a header (most auth answers).
pub fn auth_header(h: &Option<pb::ResponseHeader>) -> String {
    header_only(h)
}

/// `auth status`.
pub fn auth_status(r: &pb::AuthStatusResponse) -> String {
    line(
        &Obj::default()
            .opt("header", opt_header(&r.header))
            .flag("enabled", r.enabled)
            .uint("authRevision", r.auth_revision)
            .done(),
    )
}

/// `role get`: permissions as authpb's Go structs marshal them (the type
/// as a number, `READ` = 0 left out).
pub fn role_get(r: &pb::AuthRoleGetResponse) -> String {
    let perms = r
        .perm
        .iter()
        .map(|p| {
            Obj::default()
                .int("permType", i64::from(p.perm_type))
                .bytes("key", &p.key)
                .bytes("range_end", &p.range_end)
                .done()
        })
        .collect();
    line(
        &Obj::default()
            .opt("header", opt_header(&r.header))
            .list("perm", perms)
            .done(),
    )
}

/// `user get`, `user list`, `role list`: a header and a list of names
/// under `key`.
pub fn names(h: &Option<pb::ResponseHeader>, key: &str, names: &[String]) -> String {
    let names = names.iter().map(|n| Value::from(n.as_str())).collect();
    line(
        &Obj::default()
            .opt("header", opt_header(h))
            .list(key, names)
            .done(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 11033128819173755142,
            member_id: 3089156545450622617,
            revision: 3,
            raft_term: 2,
        })
    }

    #[test]
    fn range_answer_matches_etcdctl() {
        let r = pb::RangeResponse {
            header: hdr(),
            kvs: vec![mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: b"bar2".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            range(&r),
            "{\"header\":{\"cluster_id\":11033128819173755142,\"member_id\":3089156545450622617,\"revision\":3,\"raft_term\":2},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":3,\"version\":2,\"value\":\"YmFyMg==\"}],\"count\":1}\n"
        );
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        let v = Value::from("<a&b>\u{8}\n\u{1}é");
        assert_eq!(line(&v), "\"\\u003ca\\u0026b\\u003e\\u0008\\n\\u0001é\"\n");
    }

    #[test]
    fn txn_oneofs_use_go_field_names() {
        let r = pb::TxnResponse {
            header: hdr(),
            succeeded: true,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponsePut(
                    pb::PutResponse::default(),
                )),
            }],
        };
        assert!(txn(&r).ends_with(
            ",\"succeeded\":true,\"responses\":[{\"Response\":{\"ResponsePut\":{}}}]}\n"
        ));
    }
}
