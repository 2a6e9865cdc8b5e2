//! Printing answers in etcdctl's output formats (`-w`): [`simple`],
//! [`json`], [`table`] and [`fields`]; [`gofmt`] holds the Go formatting
//! rules they share. [`Printer`] picks the format per answer and refuses
//! the combinations etcdctl refuses (`table` for a `get`, for example).
//!
//! Printers return the text rather than writing it, so a command decides
//! where it goes (etcdctl prints health lines on stderr) and tests compare
//! strings.

pub mod fields;
pub mod gofmt;
pub mod json;
pub mod simple;
pub mod table;

use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;

use crate::error::CtlError;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain lines.
    Simple,
    /// Go-style JSON of the response.
    Json,
    /// ASCII tables (member list, endpoint status and health).
    Table,
    /// `"Field" : value` lines.
    Fields,
    /// The answer's protobuf encoding, raw (raftkvctl writes it for the
    /// auth, user and role commands; other commands refuse it).
    Protobuf,
}

impl Format {
    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Json => "json",
            Self::Table => "table",
            Self::Fields => "fields",
            Self::Protobuf => "protobuf",
        }
    }
}

/// How keys and values are written in simple output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStyle {
    /// `--hex`: `\x`-prefixed hex bytes.
    pub hex: bool,
    /// `--print-value-only`: values without their keys.
    pub value_only: bool,
}

/// One endpoint's health, as `endpoint health` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint as given.
    pub endpoint: String,
    /// Whether it answered a linearizable read and has no alarm.
    pub healthy: bool,
    /// How long the check took.
    pub took: Duration,
    /// Why it is unhealthy (empty when healthy).
    pub error: String,
}

/// The name of an alarm type, as Go prints the enum.
pub fn alarm_name(alarm: i32) -> String {
    match pb::AlarmType::try_from(alarm) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => alarm.to_string(),
    }
}

/// Prints answers in one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Printer {
    /// The format.
    pub format: Format,
    /// Key and value style for simple output.
    pub style: KvStyle,
}

type Printed = Result<String, CtlError>;

impl Printer {
    /// A printer for `format`.
    pub fn new(format: Format, hex: bool) -> Self {
        Self {
            format,
            style: KvStyle {
                hex,
                value_only: false,
            },
        }
    }

    /// With `-w protobuf`, the message's encoding (etcd's gogo-generated
    /// `Marshal` and prost write the same bytes: fields in number order,
    /// proto3 defaults left out); `None` in the other formats.
    pub fn protobuf<M: prost::Message>(&self, message: &M) -> Option<Vec<u8>> {
        (self.format == Format::Protobuf).then(|| message.encode_to_vec())
    }

    fn unsupported(&self) -> Printed {
        Err(CtlError::unsupported_format(self.format.name()))
    }

    /// `get`.
    pub fn range(&self, r: &pb::RangeResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::range(r, self.style)),
            Format::Json => Ok(json::range(r)),
            Format::Fields => Ok(fields::range(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `put`.
    pub fn put(&self, r: &pb::PutResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::put(r, self.style)),
            Format::Json => Ok(json::put(r)),
            Format::Fields => Ok(fields::put(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `del`.
    pub fn delete(&self, r: &pb::DeleteRangeResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::delete(r, self.style)),
            Format::Json => Ok(json::delete(r)),
            Format::Fields => Ok(fields::delete(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `txn`.
    pub fn txn(&self, r: &pb::TxnResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::txn(r, self.style)),
            Format::Json => Ok(json::txn(r)),
            Format::Fields => Ok(fields::txn(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `watch`, one answer.
    pub fn watch(&self, r: &pb::WatchResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::watch(r, self.style)),
            Format::Json => Ok(json::watch(r)),
            Format::Fields => Ok(fields::watch(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `lease grant`.
    pub fn lease_grant(&self, r: &pb::LeaseGrantResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::lease_grant(r)),
            Format::Json => Ok(json::lease_grant(r)),
            Format::Fields => Ok(fields::lease_id_ttl(r.header.as_ref(), r.id, r.ttl)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `lease revoke`.
    pub fn lease_revoke(&self, id: i64, r: &pb::LeaseRevokeResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::lease_revoke(id)),
            Format::Json => Ok(json::lease_revoke(r)),
            Format::Fields => Ok(fields::header_only(r.header.as_ref())),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `lease keep-alive`, one answer.
    pub fn lease_keep_alive(&self, r: &pb::LeaseKeepAliveResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::lease_keep_alive(r)),
            Format::Json => Ok(json::lease_keep_alive(r)),
            Format::Fields => Ok(fields::lease_id_ttl(r.header.as_ref(), r.id, r.ttl)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `lease timetolive`.
    pub fn lease_time_to_live(&self, r: &pb::LeaseTimeToLiveResponse, keys: bool) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::lease_time_to_live(r, keys)),
            Format::Json => Ok(json::lease_time_to_live(r)),
            Format::Fields => Ok(fields::lease_time_to_live(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `lease list`.
    pub fn lease_leases(&self, r: &pb::LeaseLeasesResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::lease_leases(r)),
            Format::Json => Ok(json::lease_leases(r)),
            Format::Fields => Ok(fields::lease_leases(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `member list`.
    pub fn member_list(&self, r: &pb::MemberListResponse) -> Printed {
        let headers = [
            "ID",
            "Status",
            "Name",
            "Peer Addrs",
            "Client Addrs",
            "Is Learner",
        ];
        match self.format {
            Format::Simple => Ok(simple::rows(&member_rows(&r.members))),
            Format::Json => Ok(json::member_list(r)),
            Format::Fields => Ok(fields::member_list(r)),
            Format::Table => Ok(table::render(&headers, &member_rows(&r.members))),
            Format::Protobuf => self.unsupported(),
        }
    }

    /// `member add`; `name` and `peer_urls` as given on the command line.
    pub fn member_add(
        &self,
        r: &pb::MemberAddResponse,
        name: &str,
        peer_urls: &[String],
    ) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::member_add(r, name, peer_urls)),
            Format::Json => Ok(json::member_add(r)),
            Format::Fields | Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `member remove` / `update` / `promote`; `verb` completes
    /// `Member <id> <verb> cluster <id>`.
    pub fn member_change(
        &self,
        id: u64,
        verb: &str,
        header: &Option<pb::ResponseHeader>,
        members: &[pb::Member],
    ) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::member_change(id, verb, header)),
            Format::Json => Ok(json::member_change(header, members)),
            Format::Fields | Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `endpoint status`.
    pub fn endpoint_status(&self, list: &[(String, pb::StatusResponse)]) -> Printed {
        let headers = [
            "Endpoint",
            "ID",
            "Version",
            "DB Size",
            "Is Leader",
            "Is Learner",
            "Raft Term",
            "Raft Index",
            "Raft Applied Index",
            "Errors",
        ];
        match self.format {
            Format::Simple => Ok(simple::rows(&status_rows(list))),
            Format::Json => Ok(json::endpoint_status(list)),
            Format::Fields => Ok(fields::endpoint_status(list)),
            Format::Table => Ok(table::render(&headers, &status_rows(list))),
            Format::Protobuf => self.unsupported(),
        }
    }

    /// `endpoint health` (simple lines belong on stderr; the caller puts
    /// them there).
    pub fn endpoint_health(&self, list: &[EndpointHealth]) -> Printed {
        match self.format {
            Format::Simple => Ok(health_lines(list)),
            Format::Json => Ok(json::endpoint_health(list)),
            Format::Fields => Ok(fields::endpoint_health(list)),
            Format::Protobuf => self.unsupported(),
            Format::Table => Ok(table::render(
                &["Endpoint", "Health", "Took", "Error"],
                &list
                    .iter()
                    .map(|h| {
                        vec![
                            h.endpoint.clone(),
                            h.healthy.to_string(),
                            gofmt::duration(h.took),
                            h.error.clone(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            )),
        }
    }

    /// `alarm list` / `alarm disarm`.
    pub fn alarm(&self, r: &pb::AlarmResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::alarm(r)),
            Format::Json => Ok(json::alarm(r)),
            Format::Fields => Ok(fields::alarm(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `move-leader`.
    pub fn move_leader(&self, leader: u64, target: u64, r: &pb::MoveLeaderResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::move_leader(leader, target)),
            Format::Json => Ok(json::header_only(&r.header)),
            Format::Fields => Ok(fields::header_only(r.header.as_ref())),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `auth status`.
    pub fn auth_status(&self, r: &pb::AuthStatusResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::auth_status(r)),
            Format::Json => Ok(json::auth_status(r)),
            Format::Fields => Ok(fields::auth_status(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// An auth answer that simple output reports with a sentence
    /// (`simple`), the others with the header alone: user add, delete,
    /// passwd, grant-role, revoke-role; role add, delete, grant-permission,
    /// revoke-permission.
    pub fn auth_change(&self, sentence: String, header: &Option<pb::ResponseHeader>) -> Printed {
        match self.format {
            Format::Simple => Ok(sentence),
            Format::Json => Ok(json::auth_header(header)),
            Format::Fields => Ok(fields::header_only(header.as_ref())),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `role get`.
    pub fn role_get(&self, role: &str, r: &pb::AuthRoleGetResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::role_get(role, r)),
            Format::Json => Ok(json::role_get(r)),
            Format::Fields => Ok(fields::role_get(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `role list`.
    pub fn role_list(&self, r: &pb::AuthRoleListResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::names(&r.roles)),
            Format::Json => Ok(json::names(&r.header, "roles", &r.roles)),
            Format::Fields => Ok(fields::role_list(r)),
            Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `user get` (etcdctl has no fields form of it).
    pub fn user_get(&self, user: &str, r: &pb::AuthUserGetResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::user_get(user, r)),
            Format::Json => Ok(json::names(&r.header, "roles", &r.roles)),
            Format::Fields | Format::Table | Format::Protobuf => self.unsupported(),
        }
    }

    /// `user list` (etcdctl has no fields form of it).
    pub fn user_list(&self, r: &pb::AuthUserListResponse) -> Printed {
        match self.format {
            Format::Simple => Ok(simple::names(&r.users)),
            Format::Json => Ok(json::names(&r.header, "users", &r.users)),
            Format::Fields | Format::Table | Format::Protobuf => self.unsupported(),
        }
    }
}

fn member_rows(members: &[pb::Member]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| {
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

fn status_rows(list: &[(String, pb::StatusResponse)]) -> Vec<Vec<String>> {
    list.iter()
        .map(|(endpoint, s)| {
            let member = s.header.unwrap_or_default().member_id;
            vec![
                endpoint.clone(),
                format!("{member:x}"),
                s.version.clone(),
                gofmt::humanize_bytes(s.db_size.max(0) as u64),
                (s.leader == member).to_string(),
                s.is_learner.to_string(),
                s.raft_term.to_string(),
                s.raft_index.to_string(),
                s.raft_applied_index.to_string(),
                s.errors.join(", "),
            ]
        })
        .collect()
}

fn health_lines(list: &[EndpointHealth]) -> String {
    let mut out = String::new();
    for h in list {
        if h.healthy {
            out.push_str(&format!(
                "{} is healthy: successfully committed proposal: took = {}\n",
                h.endpoint,
                gofmt::duration(h.took)
            ));
        } else {
            out.push_str(&format!(
                "{} is unhealthy: failed to commit proposal: {}\n",
                h.endpoint, h.error
            ));
        }
    }
    out
}
