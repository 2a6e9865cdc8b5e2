//! `-w simple` (the default): etcdctl's plain lines: keys and values on
//! lines of their own, `OK` for a put, the number deleted, comma-separated
//! rows for members and endpoints.

use std::fmt::Write as _;

use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::mvccpb;

use super::gofmt::{hex16, hex_prefixed};
use super::{alarm_name, KvStyle};

/// A key and its value, each on its own line (the value alone with
/// `--print-value-only`), raw or in `--hex` form.
fn kv(out: &mut String, style: KvStyle, kv: &mvccpb::KeyValue) {
    let text = |bytes: &[u8]| {
        if style.hex {
            hex_prefixed(bytes)
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    if !style.value_only {
        out.push_str(&text(&kv.key));
        out.push('\n');
    }
    out.push_str(&text(&kv.value));
    out.push('\n');
}

/// `get`.
pub fn range(r: &pb::RangeResponse, style: KvStyle) -> String {
    let mut out = String::new();
    for item in &r.kvs {
        kv(&mut out, style, item);
    }
    out
}

/// `put`.
pub fn put(r: &pb::PutResponse, style: KvStyle) -> String {
    let mut out = String::from("OK\n");
    if let Some(prev) = &r.prev_kv {
        kv(&mut out, style, prev);
    }
    out
}

/// `del`.
pub fn delete(r: &pb::DeleteRangeResponse, style: KvStyle) -> String {
    let mut out = format!("{}\n", r.deleted);
    for prev in &r.prev_kvs {
        kv(&mut out, style, prev);
    }
    out
}

/// `txn`: the outcome, then each answer after a blank line.
pub fn txn(r: &pb::TxnResponse, style: KvStyle) -> String {
    use pb::response_op::Response;
    let mut out = String::from(if r.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &r.responses {
        out.push('\n');
        match &op.response {
            Some(Response::ResponseRange(r)) => out.push_str(&range(r, style)),
            Some(Response::ResponsePut(r)) => out.push_str(&put(r, style)),
            Some(Response::ResponseDeleteRange(r)) => out.push_str(&delete(r, style)),
            Some(Response::ResponseTxn(r)) => out.push_str(&txn(r, style)),
            None => out.push_str("unexpected response <nil>\n"),
        }
    }
    out
}

/// `watch`: each event's type, its previous key-value if asked for, then
/// the key-value.
pub fn watch(r: &pb::WatchResponse, style: KvStyle) -> String {
    let mut out = String::new();
    for event in &r.events {
        out.push_str(event_type(event.r#type));
        out.push('\n');
        if let Some(prev) = &event.prev_kv {
            kv(&mut out, style, prev);
        }
        kv(&mut out, style, &event.kv.clone().unwrap_or_default());
    }
    out
}

/// The name Go prints for an event type.
pub fn event_type(t: i32) -> &'static str {
    match mvccpb::event::EventType::try_from(t) {
        Ok(mvccpb::event::EventType::Put) => "PUT",
        Ok(mvccpb::event::EventType::Delete) => "DELETE",
        Err(_) => "UNKNOWN",
    }
}

/// `lease grant`.
pub fn lease_grant(r: &pb::LeaseGrantResponse) -> String {
    format!("lease {} granted with TTL({}s)\n", hex16(r.id), r.ttl)
}

/// `lease revoke`.
pub fn lease_revoke(id: i64) -> String {
    format!("lease {} revoked\n", hex16(id))
}

/// `lease keep-alive`, one line per answer.
pub fn lease_keep_alive(r: &pb::LeaseKeepAliveResponse) -> String {
    format!("lease {} keepalived with TTL({})\n", hex16(r.id), r.ttl)
}

/// `lease timetolive`.
pub fn lease_time_to_live(r: &pb::LeaseTimeToLiveResponse, with_keys: bool) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {} already expired\n", hex16(r.id));
    }
    let mut out = format!(
        "lease {} granted with TTL({}s), remaining({}s)",
        hex16(r.id),
        r.granted_ttl,
        r.ttl
    );
    if with_keys {
        let keys: Vec<String> = r
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let _ = write!(out, ", attached keys([{}])", keys.join(" "));
    }
    out.push('\n');
    out
}

/// `lease list`.
pub fn lease_leases(r: &pb::LeaseLeasesResponse) -> String {
    let mut out = format!("found {} leases\n", r.leases.len());
    for lease in &r.leases {
        out.push_str(&hex16(lease.id));
        out.push('\n');
    }
    out
}

/// Rows joined by `, `, one per line (members, endpoints).
pub fn rows(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    out
}

/// `member add`: the announcement, then the environment the new member
/// should be started with.
pub fn member_add(r: &pb::MemberAddResponse, name: &str, peer_urls: &[String]) -> String {
    let added = r.member.clone().unwrap_or_default();
    let cluster = r.header.unwrap_or_default().cluster_id;
    // etcdctl 3.4 announces learners the same way as voters.
    let mut out = format!(
        "Member {:>16x} added to cluster {:>16x}\n",
        added.id, cluster
    );
    let mut initial = Vec::new();
    for member in &r.members {
        let member_name = if member.id == added.id {
            name
        } else {
            &member.name
        };
        for url in &member.peer_ur_ls {
            initial.push(format!("{member_name}={url}"));
        }
    }
    let q = |s: &str| super::gofmt::quote(s.as_bytes());
    let _ = write!(
        out,
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        q(name),
        q(&initial.join(",")),
        q(&peer_urls.join(","))
    );
    out
}

/// `member remove` / `update` / `promote`: `Member <id> <verb> cluster <id>`.
pub fn member_change(id: u64, verb: &str, header: &Option<pb::ResponseHeader>) -> String {
    format!(
        "Member {id:>16x} {verb} cluster {:>16x}\n",
        header.unwrap_or_default().cluster_id
    )
}

/// `alarm list` / `alarm disarm`: each alarm in protobuf's compact text
/// form, which is what Go's `%+v` prints for it.
pub fn alarm(r: &pb::AlarmResponse) -> String {
    let mut out = String::new();
    for a in &r.alarms {
        let _ = writeln!(
            out,
            "memberID:{} alarm:{} ",
            a.member_id,
            alarm_name(a.alarm)
        );
    }
    out
}

/// `move-leader`.
pub fn move_leader(leader: u64, target: u64) -> String {
    format!("Leadership transferred from {leader:x} to {target:x}\n")
}

/// `auth status` (etcdctl 3.5's lines).
pub fn auth_status(r: &pb::AuthStatusResponse) -> String {
    format!(
        "Authentication Status: {}\nAuthRevision: {}\n",
        r.enabled, r.auth_revision
    )
}

/// A permission's range as `role get` writes it: `[key, end)`, or
/// `[key, <open ended>` for a range to the end of the key space, followed
/// by `(prefix key)` when the range is exactly the keys starting with key.
fn permission_range(out: &mut String, p: &authpb::Permission) {
    let key = String::from_utf8_lossy(&p.key);
    if p.range_end == [0] {
        let _ = write!(out, "\t[{key}, <open ended>");
    } else {
        let _ = write!(out, "\t[{key}, {})", String::from_utf8_lossy(&p.range_end));
    }
    if crate::commands::prefix_range_end(&p.key) == p.range_end {
        let _ = write!(out, " (prefix {key})");
    }
    out.push('\n');
}

/// `role get`: the read permissions, then the write permissions (a
/// readwrite permission under both).
pub fn role_get(role: &str, r: &pb::AuthRoleGetResponse) -> String {
    use authpb::permission::Type;
    let mut out = format!("Role {role}\n");
    let sections = [
        ("KV Read:\n", [Type::Read, Type::Readwrite]),
        ("KV Write:\n", [Type::Write, Type::Readwrite]),
    ];
    for (title, types) in sections {
        out.push_str(title);
        for p in &r.perm {
            if !types.iter().any(|t| *t as i32 == p.perm_type) {
                continue;
            }
            if p.range_end.is_empty() {
                let _ = writeln!(out, "\t{}", String::from_utf8_lossy(&p.key));
            } else {
                permission_range(&mut out, p);
            }
        }
    }
    out
}

/// `role revoke-permission`: what was revoked, as given on the command line.
pub fn role_revoke_permission(role: &str, key: &[u8], end: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    if end.is_empty() {
        format!("Permission of key {key} is revoked from role {role}\n")
    } else if end == [0] {
        format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
    } else {
        format!(
            "Permission of range [{key}, {}) is revoked from role {role}\n",
            String::from_utf8_lossy(end)
        )
    }
}

/// `user get`: the user's roles on one line.
pub fn user_get(user: &str, r: &pb::AuthUserGetResponse) -> String {
    let mut out = format!("User: {user}\nRoles:");
    for role in &r.roles {
        out.push(' ');
        out.push_str(role);
    }
    out.push('\n');
    out
}

/// `user list` and `role list`: one name a line.
pub fn names(names: &[String]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_match_etcdctl() {
        let grant = pb::LeaseGrantResponse {
            id: 0x4bc34ff3ca241a79,
            ttl: 100,
            ..Default::default()
        };
        assert_eq!(
            lease_grant(&grant),
            "lease 4bc34ff3ca241a79 granted with TTL(100s)\n"
        );
        let expired = pb::LeaseTimeToLiveResponse {
            id: 0x123,
            ttl: -1,
            ..Default::default()
        };
        assert_eq!(
            lease_time_to_live(&expired, false),
            "lease 0000000000000123 already expired\n"
        );
        let live = pb::LeaseTimeToLiveResponse {
            id: 0x4bc34ff3ca241a79,
            ttl: 95,
            granted_ttl: 100,
            keys: vec![b"lk1".to_vec(), b"lk2".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            lease_time_to_live(&live, true),
            "lease 4bc34ff3ca241a79 granted with TTL(100s), remaining(95s), attached keys([lk1 lk2])\n"
        );
    }

    #[test]
    fn member_ids_are_space_padded_hex() {
        let header = Some(pb::ResponseHeader {
            cluster_id: 0xabc,
            ..Default::default()
        });
        assert_eq!(
            member_change(0x1234, "removed from", &header),
            "Member             1234 removed from cluster              abc\n"
        );
    }

    #[test]
    fn auth_answers_read_as_etcdctls() {
        let status = pb::AuthStatusResponse {
            enabled: true,
            auth_revision: 7,
            ..Default::default()
        };
        assert_eq!(
            auth_status(&status),
            "Authentication Status: true\nAuthRevision: 7\n"
        );
        let perm = |t: authpb::permission::Type, key: &[u8], end: &[u8]| authpb::Permission {
            perm_type: t as i32,
            key: key.to_vec(),
            range_end: end.to_vec(),
        };
        let role = pb::AuthRoleGetResponse {
            perm: vec![
                perm(authpb::permission::Type::Read, b"k", b""),
                perm(authpb::permission::Type::Readwrite, b"p/", b"p0"),
                perm(authpb::permission::Type::Write, b"f", b"\0"),
            ],
            ..Default::default()
        };
        assert_eq!(
            role_get("r", &role),
            "Role r\nKV Read:\n\tk\n\t[p/, p0) (prefix p/)\nKV Write:\n\t[p/, p0) (prefix p/)\n\t[f, <open ended>\n"
        );
        assert_eq!(
            role_revoke_permission("r", b"a", b"\0"),
            "Permission of range [a, <open ended> is revoked from role r\n"
        );
    }
}
