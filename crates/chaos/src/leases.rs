//! A lease probe beside the workload: one lease kept alive with a key
//! attached, read back all the time, and one lease abandoned at the start.
//! Checks the two promises a lease makes, whatever the faults (clock jumps
//! above all):
//!
//! - **not early:** a kept lease is never seen gone (its key missing, or a
//!   keep-alive answered "not found") before `TTL` has passed since the
//!   grant or an acknowledged keep-alive was sent;
//! - **not never:** the abandoned lease's key is gone soon after the faults
//!   end (each new leader may restart a lease's clock, so "soon" is
//!   measured from the last fault, not from the grant).
//!
//! Times are the harness's own monotonic clock, which no fault touches.

use std::time::Duration;

use raftkv_ctl::client::{request, Client, ClientConfig, RetryPolicy, Security, Target};
use raftkv_ctl::error::ClientError;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// TTL of the kept lease, in seconds: longer than a fault, so keep-alives
/// that get through keep it.
const KEPT_TTL: i64 = 6;
/// TTL of the abandoned lease, in seconds.
const ABANDONED_TTL: i64 = 2;
/// Pause between probe rounds (a keep-alive and a read).
const ROUND: Duration = Duration::from_millis(400);
/// How long the abandoned lease may outlive the run's end.
const EXPIRY_ALLOWANCE: Duration = Duration::from_secs(30);

/// The probe while it runs.
pub struct LeaseProbe {
    task: JoinHandle<ProbeState>,
}

/// What a finished probe found.
#[derive(Debug, Default)]
pub struct LeaseReport {
    /// Keep-alives the cluster acknowledged.
    pub keepalives: usize,
    /// Reads of the kept lease's key.
    pub reads: usize,
    /// Broken promises.
    pub violations: Vec<String>,
}

struct ProbeState {
    client: Client,
    prefix: String,
    abandoned: Option<i64>,
    report: LeaseReport,
}

/// The kept lease of the moment.
struct Kept {
    id: i64,
    ttl: Duration,
    /// When its key was acknowledged as attached.
    attached: Option<Instant>,
    /// When each acknowledged keep-alive was sent.
    renewed: Vec<Instant>,
}

impl Kept {
    /// If the lease was seen gone at `seen` while an acknowledged
    /// keep-alive (or the grant) sent less than a TTL earlier should have
    /// kept it: what went wrong.
    fn expired_early(&self, seen: Instant) -> Option<String> {
        let sent = self.renewed.iter().rev().find(|s| **s + self.ttl > seen)?;
        Some(format!(
            "lease {:x} was gone {:?} after a keep-alive acknowledged with a TTL of {:?} \
             was sent",
            self.id,
            seen.duration_since(*sent),
            self.ttl
        ))
    }
}

impl LeaseProbe {
    /// Starts probing through `endpoints` until `deadline`, on keys under
    /// `prefix`.
    pub fn start(
        endpoints: Vec<String>,
        prefix: &str,
        deadline: Instant,
        security: Security,
    ) -> Result<Self, ClientError> {
        let client = Client::with_security(
            ClientConfig {
                endpoints,
                dial_timeout: Duration::from_secs(1),
                command_timeout: Duration::from_secs(3),
                retry: RetryPolicy {
                    attempt_timeout: Duration::from_millis(1000),
                    backoff_initial: Duration::from_millis(20),
                    backoff_max: Duration::from_millis(200),
                },
            },
            security,
        )?;
        let state = ProbeState {
            client,
            prefix: prefix.to_string(),
            abandoned: None,
            report: LeaseReport::default(),
        };
        Ok(Self {
            task: tokio::spawn(state.run_until(deadline)),
        })
    }

    /// Waits for the probe to end, then for the abandoned lease to expire
    /// (the faults must be healed by then).
    pub async fn finish(self) -> LeaseReport {
        let mut state = match self.task.await {
            Ok(state) => state,
            Err(err) => {
                return LeaseReport {
                    violations: vec![format!("the lease probe failed: {err}")],
                    ..LeaseReport::default()
                }
            }
        };
        state.check_abandoned_expires().await;
        state.report
    }
}

impl ProbeState {
    fn key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.prefix).into_bytes()
    }

    async fn run_until(mut self, deadline: Instant) -> Self {
        // A no-op without credentials; with them, a failure now (a fault)
        // leaves the calls below to fail and be retried as any other.
        let _ = self.client.authenticate().await;
        if let Ok(id) = self.grant(ABANDONED_TTL).await {
            if self.attach("abandoned", id).await.is_ok() {
                self.abandoned = Some(id);
            }
        }
        let mut kept: Option<Kept> = None;
        while Instant::now() + ROUND < deadline {
            tokio::time::sleep(ROUND).await;
            let Some(lease) = kept.as_mut() else {
                let sent = Instant::now();
                if let Ok(id) = self.grant(KEPT_TTL).await {
                    kept = Some(Kept {
                        id,
                        ttl: Duration::from_secs(KEPT_TTL as u64),
                        attached: None,
                        // The lease's clock started after the grant was sent.
                        renewed: vec![sent],
                    });
                }
                continue;
            };
            if lease.attached.is_none() {
                match self.attach("kept", lease.id).await {
                    Ok(()) => lease.attached = Some(Instant::now()),
                    Err(ClientError::Status(status)) if status.code() == tonic::Code::NotFound => {
                        kept = None;
                    }
                    Err(_) => {}
                }
                continue;
            }
            let sent = Instant::now();
            let alive = match self.keep_alive(lease.id).await {
                Ok(ttl) if ttl > 0 => {
                    lease.renewed.push(sent);
                    self.report.keepalives += 1;
                    true
                }
                Ok(_) => false,
                Err(ClientError::Status(status)) if status.code() == tonic::Code::NotFound => false,
                // Unanswered: tells nothing.
                Err(_) => true,
            };
            if alive {
                let invoked = Instant::now();
                let Ok(holder) = self.read_lease_of("kept").await else {
                    continue;
                };
                self.report.reads += 1;
                if holder == Some(lease.id) {
                    continue;
                }
                // Only a key attached before the read began must be there.
                if lease.attached.is_some_and(|at| at >= invoked) {
                    continue;
                }
            }
            // The lease is gone (keep-alives may legitimately fail for a
            // TTL while a majority is down); it must not have gone early.
            if let Some(early) = lease.expired_early(Instant::now()) {
                self.report.violations.push(early);
            }
            kept = None;
        }
        self
    }

    async fn check_abandoned_expires(&mut self) {
        let Some(id) = self.abandoned else {
            return;
        };
        let give_up = Instant::now() + EXPIRY_ALLOWANCE;
        while Instant::now() < give_up {
            if let Ok(None) = self.read_lease_of("abandoned").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.report.violations.push(format!(
            "lease {id:x} (TTL {ABANDONED_TTL} s, never kept alive) still held its key \
             {EXPIRY_ALLOWANCE:?} after the faults ended"
        ));
    }

    async fn grant(&self, ttl: i64) -> Result<i64, ClientError> {
        let id = Some(self.client.next_request_id());
        let granted = self
            .client
            .unary(Target::Any, id, |channel, id| async move {
                LeaseClient::new(channel)
                    .lease_grant(request(pb::LeaseGrantRequest { ttl, id: 0 }, id))
                    .await
            })
            .await?;
        Ok(granted.id)
    }

    /// Puts the key `name` with `lease`; its value is the lease id.
    async fn attach(&self, name: &str, lease: i64) -> Result<(), ClientError> {
        let put = pb::PutRequest {
            key: self.key(name),
            value: lease.to_string().into_bytes(),
            lease,
            ..Default::default()
        };
        let id = Some(self.client.next_request_id());
        self.client
            .unary(Target::Any, id, |channel, id| {
                let put = put.clone();
                async move { KvClient::new(channel).put(request(put, id)).await }
            })
            .await
            .map(|_| ())
    }

    /// One keep-alive; the TTL the cluster answered (0 if the lease is gone).
    async fn keep_alive(&self, lease: i64) -> Result<i64, ClientError> {
        let answer = self
            .client
            .unary(Target::Any, None, |channel, _| async move {
                let once = tokio_stream::once(pb::LeaseKeepAliveRequest { id: lease });
                let mut answers = LeaseClient::new(channel)
                    .lease_keep_alive(once)
                    .await?
                    .into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(tonic::Response::new(answer)),
                    None => Err(tonic::Status::unavailable("keep-alive stream closed")),
                }
            })
            .await?;
        Ok(answer.ttl)
    }

    /// The lease holding key `name`, by a linearizable read: `None` if the
    /// key is missing.
    async fn read_lease_of(&self, name: &str) -> Result<Option<i64>, ClientError> {
        let range = pb::RangeRequest {
            key: self.key(name),
            ..Default::default()
        };
        let answer = self
            .client
            .unary(Target::Any, None, |channel, _| {
                let range = range.clone();
                async move { KvClient::new(channel).range(request(range, None)).await }
            })
            .await?;
        Ok(answer.kvs.first().map(|kv| kv.lease))
    }
}
