//! The KV service.
//!
//! Writes are proposed through Raft and answered once applied. Reads are
//! linearizable by default (a read-index barrier, batched with other reads,
//! then a local read); `serializable` reads are served from local state at
//! once. A read-only txn is served like a read and not proposed.
//!
//! # Exactly-once writes
//!
//! A client may attach two gRPC metadata entries to a write:
//!
//! - `raftkv-client-id`: a non-zero 64-bit decimal id, unique per client
//!   (pick it at random);
//! - `raftkv-sequence`: a decimal sequence number, increasing per request.
//!
//! If a write with the same pair was already applied, the server answers
//! with that first outcome (same revision, same prev_kv) instead of applying
//! it again. The last 64 sequence numbers per client are remembered, for the
//! time set by `--request-outcome-ttl`; a request whose sequence number is
//! older than those (a copy the network delivered late) is refused with
//! FAILED_PRECONDITION, not applied. Without the metadata, etcd's semantics
//! hold unchanged.

use prost::Message as _;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_server::Kv;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::alarm;
use crate::auth;
use crate::convert;
use crate::replicated::{outcome, replicated_request::Op};
use crate::status;

/// Metadata key of the client id.
pub const CLIENT_ID_METADATA: &str = "raftkv-client-id";
/// Metadata key of the sequence number.
pub const SEQUENCE_METADATA: &str = "raftkv-sequence";

/// The KV service.
pub struct KvService {
    ctx: ServiceContext,
}

impl KvService {
    /// A KV service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }

    fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len as u64 > self.ctx.max_request_bytes {
            return Err(status::request_too_large());
        }
        Ok(())
    }
}

/// Reads the exactly-once metadata; (0, 0) when absent.
pub(crate) fn request_id(metadata: &MetadataMap) -> Result<(u64, u64), Status> {
    let read = |key: &str| -> Result<Option<u64>, Status> {
        match metadata.get(key) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("etcdserver: {key} must be a decimal number"))
                }),
        }
    };
    match (read(CLIENT_ID_METADATA)?, read(SEQUENCE_METADATA)?) {
        (Some(client), Some(sequence)) if client != 0 => Ok((client, sequence)),
        (None, None) => Ok((0, 0)),
        _ => Err(Status::invalid_argument(format!(
            "etcdserver: {CLIENT_ID_METADATA} (non-zero) and {SEQUENCE_METADATA} go together"
        ))),
    }
}

fn unexpected() -> Status {
    Status::internal("etcdserver: unexpected outcome for the request")
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        if req.key.is_empty() {
            return Err(status::empty_key());
        }
        let range = convert::range_from_pb(&req)?;
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        if !req.serializable {
            self.ctx.linearizable_barrier().await?;
        }
        // After the barrier, so the check sees every permission change
        // committed before the read.
        auth::request::authorize_read(&self.ctx.auth.state(), &caller, &req.key, &req.range_end)?;
        let resp = self
            .ctx
            .store
            .range(&range)
            .map_err(|e| status::from_mvcc(&e))?;
        let revision = resp.revision;
        let mut out = convert::range_to_pb(resp);
        out.header = self.ctx.header(revision);
        Ok(Response::new(out))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        if req.key.is_empty() {
            return Err(status::empty_key());
        }
        self.check_size(req.encoded_len())?;
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        let cost = alarm::put_cost(&req);
        let op = Op::Put(req);
        self.ctx.authorize(&caller, &op)?;
        alarm::check_quota(&self.ctx, cost).await?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        match outcome.result {
            Some(outcome::Result::Put(mut resp)) => {
                resp.header = self.ctx.header(outcome.revision);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        if req.key.is_empty() {
            return Err(status::empty_key());
        }
        self.check_size(req.encoded_len())?;
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        let op = Op::DeleteRange(req);
        self.ctx.authorize(&caller, &op)?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        match outcome.result {
            Some(outcome::Result::DeleteRange(mut resp)) => {
                resp.header = self.ctx.header(outcome.revision);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        if convert::txn_ops_max(&req) > self.ctx.max_txn_ops as usize {
            return Err(status::too_many_ops());
        }
        self.check_size(req.encoded_len())?;
        let txn = convert::txn_from_pb(&req)?;
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        let cost = alarm::txn_cost(&req);
        let op = Op::Txn(req);
        if raftkv_mvcc::is_read_only(&txn) {
            self.ctx.linearizable_barrier().await?;
            self.ctx.authorize(&caller, &op)?;
            let resp = self
                .ctx
                .store
                .txn_read(&txn)
                .map_err(|e| status::from_mvcc(&e))?;
            let revision = resp.revision;
            let mut out = convert::txn_to_pb(resp);
            out.header = self.ctx.header(revision);
            return Ok(Response::new(out));
        }
        self.ctx.authorize(&caller, &op)?;
        alarm::check_quota(&self.ctx, cost).await?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        match outcome.result {
            Some(outcome::Result::Txn(mut resp)) => {
                resp.header = self.ctx.header(outcome.revision);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        let op = Op::Compaction(req);
        self.ctx.authorize(&caller, &op)?;
        let outcome = self.ctx.propose(&caller, &metadata, op).await?;
        match outcome.result {
            Some(outcome::Result::Compaction(mut resp)) => {
                resp.header = self.ctx.header(outcome.revision);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected()),
        }
    }

    type RangeStreamStream = tokio_stream::Once<Result<pb::RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "etcdserver: RangeStream is not supported",
        ))
    }
}
