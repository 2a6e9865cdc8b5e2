//! The Lease service. Grants and revocations go through Raft; keep-alives
//! and time-to-live are answered by the leader's [`Lessor`], which is the
//! only member that keeps lease clocks. A follower hands them to the leader
//! on the leader's peer URL (as etcd's followers do), over one stream per
//! client keep-alive stream, opened again when the leader changes.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::ServiceContext;
use crate::lessor::{Lessor, MAX_LEASE_TTL_SECONDS};
use crate::replicated::{outcome, replicated_request::Op};
use crate::status;

/// The Lease service.
pub struct LeaseService {
    ctx: ServiceContext,
    lessor: Arc<Lessor>,
    /// Shortest TTL granted: a lease must outlive a leader election.
    min_ttl_seconds: i64,
    next_id: AtomicU64,
}

impl LeaseService {
    /// A Lease service over `ctx` and the member's lessor.
    pub fn new(ctx: ServiceContext, lessor: Arc<Lessor>, min_ttl_seconds: i64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            next_id: AtomicU64::new(seed ^ ctx.member_id.rotate_left(32)),
            ctx,
            lessor,
            min_ttl_seconds,
        }
    }

    /// A fresh positive lease id.
    fn new_id(&self) -> i64 {
        loop {
            let raw = self
                .next_id
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            let id = (raw & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

/// Brings the lessor in line with the node's leadership; returns whether
/// this member leads (and so keeps the lease clocks).
fn follow_leadership(ctx: &ServiceContext, lessor: &Lessor) -> bool {
    let leading_now = ctx.node.shared().leader_id() == ctx.member_id;
    if leading_now && !lessor.is_leading() {
        let checkpoints = crate::lease_checkpoint::remaining(&ctx.store);
        match (ctx.store.leases(), checkpoints) {
            (Ok(leases), Ok(checkpoints)) => lessor.promote(leases, &checkpoints),
            (Err(err), _) | (_, Err(err)) => tracing::error!(%err, "cannot read leases"),
        }
    } else if !leading_now && lessor.is_leading() {
        lessor.demote();
    }
    lessor.is_leading()
}

/// Renews a lease on the leader; returns its TTL (0 if unknown or
/// expired, as etcd answers). A renewal of a checkpointed lease clears the
/// checkpoint through Raft first, so a new leader cannot resume the lease
/// from time left it had before this renewal.
async fn renew_locally(ctx: &ServiceContext, lessor: &Lessor, id: i64) -> Result<i64, Status> {
    let Some(renewal) = lessor.renew(id) else {
        return Ok(0);
    };
    if renewal.clear_checkpoint {
        let clear = pb::LeaseCheckpointRequest {
            checkpoints: vec![pb::LeaseCheckpoint {
                id,
                remaining_ttl: 0,
            }],
        };
        let metadata = tonic::metadata::MetadataMap::new();
        ctx.propose(
            &crate::auth::Caller::Server,
            &metadata,
            Op::LeaseCheckpoint(clear),
        )
        .await?;
    }
    Ok(renewal.ttl)
}

/// One keep-alive answered by this member, which leads.
async fn keep_alive_here(
    ctx: &ServiceContext,
    lessor: &Lessor,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let ttl = renew_locally(ctx, lessor, id).await?;
    let revision = ctx
        .store
        .current_revision()
        .map_err(|e| status::from_mvcc(&e))?;
    Ok(pb::LeaseKeepAliveResponse {
        header: ctx.header(revision),
        id,
        ttl,
    })
}

/// A client's keep-alive stream, held open to the leader while this member
/// follows: one stream for all of the client's keep-alives, as etcd's
/// clients hold one, instead of a stream (and a task on the leader) opened
/// for each.
struct LeaderStream {
    leader: u64,
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

impl LeaderStream {
    async fn open(ctx: &ServiceContext) -> Result<Self, Status> {
        let leader = ctx.node.shared().leader_id();
        let channel = ctx.leader_channel()?;
        let (requests, outgoing) = mpsc::channel(1);
        let answers = ctx
            .with_timeout(async {
                Ok(LeaseClient::new(channel)
                    .lease_keep_alive(ReceiverStream::new(outgoing))
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(Self {
            leader,
            requests,
            answers,
        })
    }

    async fn keep_alive(
        &mut self,
        ctx: &ServiceContext,
        id: i64,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let closed = || Status::unavailable("etcdserver: the leader closed the keep-alive");
        self.requests
            .send(pb::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| closed())?;
        ctx.with_timeout(async { self.answers.message().await?.ok_or_else(closed) })
            .await
    }
}

/// The leader's id once there is one, as etcd's followers wait for one
/// before handing a renewal on; 0 if none was elected within the request
/// timeout (the hand-over then fails with "no leader").
async fn wait_for_leader(ctx: &ServiceContext) -> u64 {
    let deadline = tokio::time::Instant::now() + ctx.request_timeout;
    loop {
        let leader = ctx.node.shared().leader_id();
        if leader != 0 || tokio::time::Instant::now() >= deadline {
            return leader;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Answers a client's keep-alive stream: here while this member leads,
/// else through a stream of its own to the leader, opened again when the
/// leader changes or the stream breaks.
async fn serve_keep_alives(
    ctx: ServiceContext,
    lessor: Arc<Lessor>,
    mut requests: Streaming<pb::LeaseKeepAliveRequest>,
    out: mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>,
) {
    let mut upstream: Option<LeaderStream> = None;
    while let Some(Ok(req)) = requests.next().await {
        let leader = wait_for_leader(&ctx).await;
        let response = if follow_leadership(&ctx, &lessor) {
            upstream = None;
            keep_alive_here(&ctx, &lessor, req.id).await
        } else {
            if upstream.as_ref().is_some_and(|u| u.leader != leader) {
                upstream = None;
            }
            let forwarded = match upstream.as_mut() {
                Some(stream) => stream.keep_alive(&ctx, req.id).await,
                None => match LeaderStream::open(&ctx).await {
                    Ok(stream) => upstream.insert(stream).keep_alive(&ctx, req.id).await,
                    Err(err) => Err(err),
                },
            };
            if forwarded.is_err() {
                upstream = None;
            }
            forwarded
        };
        let stop = response.is_err();
        if out.send(response).await.is_err() || stop {
            return;
        }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let (metadata, extensions, mut req) = request.into_parts();
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        if req.ttl > MAX_LEASE_TTL_SECONDS {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        req.ttl = req.ttl.max(self.min_ttl_seconds);
        if req.id == 0 {
            req.id = self.new_id();
        }
        crate::alarm::check_quota(&self.ctx, crate::alarm::lease_cost()).await?;
        let outcome = self
            .ctx
            .propose(&caller, &metadata, Op::LeaseGrant(req))
            .await?;
        match outcome.result {
            Some(outcome::Result::LeaseGrant(mut resp)) => {
                resp.header = self.ctx.header(outcome.revision);
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal(
                "etcdserver: unexpected outcome for the request",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        let id = req.id;
        let op = Op::LeaseRevoke(req);
        self.ctx.authorize(&caller, &op)?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        self.lessor.revoked(id);
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.ctx.header(outcome.revision),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let requests = request.into_inner();
        let (out, responses) = mpsc::channel(64);
        tokio::spawn(serve_keep_alives(
            self.ctx.clone(),
            self.lessor.clone(),
            requests,
            out,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        if req.keys {
            // etcd: listing a lease's keys needs READ on each of them.
            let caller = self.ctx.caller(&metadata, &extensions).await?;
            let state = self.ctx.auth.state();
            let keys = self
                .ctx
                .store
                .lease_keys(req.id)
                .map_err(|e| status::from_mvcc(&e))?;
            for key in keys {
                crate::auth::request::authorize_read(&state, &caller, &key, &[])?;
            }
        }
        if !follow_leadership(&self.ctx, &self.lessor) {
            let channel = self.ctx.leader_channel()?;
            return self
                .ctx
                .with_timeout(async {
                    let req = Request::from_parts(
                        crate::auth::forwarded_metadata(&metadata),
                        tonic::Extensions::default(),
                        req,
                    );
                    LeaseClient::new(channel).lease_time_to_live(req).await
                })
                .await;
        }
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        let Some((granted_ttl, ttl)) = self.lessor.remaining(req.id) else {
            // Expired or never granted: etcd answers TTL -1.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: self.ctx.header(revision),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let keys = if req.keys {
            self.ctx
                .store
                .lease_keys(req.id)
                .map_err(|e| status::from_mvcc(&e))?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.ctx.header(revision),
            id: req.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        let leases = self
            .ctx
            .store
            .leases()
            .map_err(|e| status::from_mvcc(&e))?
            .into_iter()
            .map(|(id, _)| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.ctx.header(revision),
            leases,
        }))
    }
}

/// Runs the leader's side of leases until the node stops: follows
/// leadership, proposes the revocation of every lease whose time is up, and
/// checkpoints the time left of long leases every `checkpoint_interval`.
pub async fn run_expiry(
    ctx: ServiceContext,
    lessor: Arc<Lessor>,
    check_every: std::time::Duration,
    checkpoint_interval: std::time::Duration,
) {
    let mut interval = tokio::time::interval(check_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !follow_leadership(&ctx, &lessor) {
            continue;
        }
        if !checkpoint_interval.is_zero() {
            let due = lessor.take_checkpoints(checkpoint_interval);
            if !due.is_empty() {
                let checkpoints = due
                    .into_iter()
                    .map(|(id, remaining_ttl)| pb::LeaseCheckpoint { id, remaining_ttl })
                    .collect();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let request = pb::LeaseCheckpointRequest { checkpoints };
                    let metadata = tonic::metadata::MetadataMap::new();
                    // A lost checkpoint only means the next one comes an
                    // interval later.
                    if let Err(status) = ctx
                        .propose(
                            &crate::auth::Caller::Server,
                            &metadata,
                            Op::LeaseCheckpoint(request),
                        )
                        .await
                    {
                        tracing::debug!(%status, "lease checkpoint not committed");
                    }
                });
            }
        }
        for id in lessor.take_expired(ctx.request_timeout) {
            let ctx = ctx.clone();
            let lessor = lessor.clone();
            tokio::spawn(async move {
                let metadata = tonic::metadata::MetadataMap::new();
                match ctx
                    .propose(
                        &crate::auth::Caller::Server,
                        &metadata,
                        Op::LeaseRevoke(pb::LeaseRevokeRequest { id }),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::debug!(id, "lease expired and was revoked");
                        lessor.revoked(id);
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => lessor.revoked(id),
                    Err(status) => {
                        tracing::warn!(id, %status, "revoking an expired lease failed; will retry")
                    }
                }
            });
        }
    }
}
