//! The Maintenance service: Status, Alarm, Defragment, Hash, HashKV,
//! Snapshot and MoveLeader. Downgrade answers Unimplemented.
//!
//! - Alarm GET lists the replicated alarms after a read barrier; ACTIVATE and
//!   DEACTIVATE go through Raft (see [`crate::alarm`]).
//! - Defragment rebuilds this member's store file (see
//!   [`raftkv_mvcc::defrag`]); like etcd's, it acts on the member asked only.
//! - Hash is CRC-32C (Castagnoli) over the whole logical content (see
//!   [`raftkv_mvcc::hash`]); members with the same applied writes agree.
//! - Snapshot streams a point-in-time image of the store (the store's own
//!   snapshot format, the one followers install) in 32 KiB messages whose
//!   `remaining_bytes` counts the image bytes still to come, down to 0, then
//!   one last message with `remaining_bytes` 0 whose blob is the SHA-256 of
//!   the image, as etcd ends its stream. The image is read from one read
//!   transaction, chunk by chunk, never held whole in memory. It is padded
//!   with zeros to a multiple of [`SNAPSHOT_ALIGN_BYTES`]: etcdctl takes the
//!   last 32 bytes for a digest only when the file is 32 bytes longer than
//!   such a multiple (etcd's bbolt files are whole pages), and the image
//!   format ignores what follows its end frame.
//!   [`crate::snapshot_file`] verifies and restores a saved stream.

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::maintenance_server::Maintenance;
use sha2::Digest as _;
use std::io::Read as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::alarm;
use crate::replicated::{outcome, replicated_request::Op};
use crate::status;

/// The version string reported by Status. Kubernetes enables its watch
/// progress feature for 3.5.13 and later, so raftkv reports an etcd version
/// at least that new.
pub const ETCD_VERSION: &str = "3.5.13";

/// Bytes of image per Snapshot message (etcd's send buffer).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// The image is padded to a multiple of this (see the module doc).
pub const SNAPSHOT_ALIGN_BYTES: u64 = 512;
/// Messages a Snapshot stream may have ready ahead of a slow client: bounds
/// the memory of one stream to this many chunks.
const SNAPSHOT_QUEUE_CHUNKS: usize = 8;

/// The Maintenance service.
pub struct MaintenanceService {
    ctx: ServiceContext,
}

impl MaintenanceService {
    /// A Maintenance service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }

    fn current_revision(&self) -> Result<i64, Status> {
        self.ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: {what} is not supported yet"))
}

fn join_error(err: tokio::task::JoinError) -> Status {
    Status::internal(format!("etcdserver: maintenance task failed: {err}"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                self.ctx.linearizable_barrier().await?;
                let alarms = alarm::list(&self.ctx.store).map_err(|e| status::from_mvcc(&e))?;
                Ok(Response::new(pb::AlarmResponse {
                    header: self.ctx.header(self.current_revision()?),
                    alarms: alarm::filter(alarms, req.alarm),
                }))
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                let outcome = self.ctx.propose(&caller, &metadata, Op::Alarm(req)).await?;
                match outcome.result {
                    Some(outcome::Result::Alarm(mut resp)) => {
                        resp.header = self.ctx.header(outcome.revision);
                        Ok(Response::new(resp))
                    }
                    _ => Err(Status::internal(
                        "etcdserver: unexpected outcome for the request",
                    )),
                }
            }
            Err(_) => Err(Status::invalid_argument(format!(
                "etcdserver: unknown alarm action {}",
                req.action
            ))),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let store = &self.ctx.store;
        let revision = store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        let usage = store.disk_usage().map_err(|e| status::from_mvcc(&e))?;
        let shared = self.ctx.node.shared();
        let node = self
            .ctx
            .node
            .status()
            .await
            .map_err(|e| status::from_node(&e))?;
        let mut errors: Vec<String> = alarm::list(store)
            .map_err(|e| status::from_mvcc(&e))?
            .iter()
            .map(alarm::status_error)
            .collect();
        if shared.leader_id() == 0 {
            errors.push("etcdserver: no leader".to_string());
        }
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.header(revision),
            version: ETCD_VERSION.to_string(),
            db_size: usage.file_bytes as i64,
            leader: shared.leader_id(),
            raft_index: shared.commit_index(),
            raft_term: shared.term(),
            raft_applied_index: shared.applied_index(),
            errors,
            db_size_in_use: usage.in_use_bytes as i64,
            is_learner: node.conf_state.learners.contains(&self.ctx.member_id),
            storage_version: String::new(),
            db_size_quota: self.ctx.quota_backend_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let store = self.ctx.store.clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(join_error)?
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.ctx.header(self.current_revision()?),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let store = self.ctx.store.clone();
        let hash = tokio::task::spawn_blocking(move || store.hash())
            .await
            .map_err(join_error)?
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::HashResponse {
            header: self.ctx.header(hash.revision),
            hash: hash.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let hash = self
            .ctx
            .store
            .hash_kv(request.into_inner().revision)
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.ctx.header(hash.hash_revision),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let store = self.ctx.store.clone();
        let (reader, total) = tokio::task::spawn_blocking(move || store.snapshot_sized())
            .await
            .map_err(join_error)?
            .map_err(|e| status::from_mvcc(&e))?;
        let header = self.ctx.header(reader.meta().revision);
        let (out, stream) = mpsc::channel(SNAPSHOT_QUEUE_CHUNKS);
        let padded = std::io::Read::chain(reader, std::io::repeat(0).take(padding(total)));
        let total = total + padding(total);
        tokio::task::spawn_blocking(move || send_snapshot(padded, total, header, out));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.ctx
            .node
            .transfer_leader(target)
            .await
            .map_err(|_| Status::failed_precondition("etcdserver: bad leader transferee"))?;
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.ctx.header(revision),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}

/// Streams `reader` (`total` bytes) in [`SNAPSHOT_CHUNK_BYTES`] messages, then
/// the SHA-256 trailer. Runs on a blocking thread; stops early if the client
/// goes away.
fn send_snapshot(
    mut reader: impl std::io::Read,
    total: u64,
    header: Option<pb::ResponseHeader>,
    out: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    let mut sha = sha2::Sha256::new();
    let mut sent = 0u64;
    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
    loop {
        let n = match fill(&mut reader, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::error!(%err, "snapshot stream failed");
                let _ = out.blocking_send(Err(Status::internal(format!(
                    "etcdserver: snapshot failed: {err}"
                ))));
                return;
            }
        };
        sha.update(&buf[..n]);
        sent += n as u64;
        let message = pb::SnapshotResponse {
            header,
            remaining_bytes: total.saturating_sub(sent),
            blob: buf[..n].to_vec(),
            version: String::new(),
        };
        if out.blocking_send(Ok(message)).is_err() {
            tracing::info!(sent, total, "snapshot client went away");
            return;
        }
    }
    if sent != total {
        // The measurement and the stream come from one read transaction, so
        // this is a bug, not a race: fail the stream rather than send a file
        // whose trailer would verify.
        let _ = out.blocking_send(Err(Status::internal(format!(
            "etcdserver: snapshot of {sent} bytes, {total} announced"
        ))));
        return;
    }
    let trailer = pb::SnapshotResponse {
        header,
        remaining_bytes: 0,
        blob: sha.finalize().to_vec(),
        version: String::new(),
    };
    if out.blocking_send(Ok(trailer)).is_ok() {
        tracing::info!(bytes = sent, "snapshot sent");
    }
}

/// Zeros that bring `len` to a multiple of [`SNAPSHOT_ALIGN_BYTES`].
fn padding(len: u64) -> u64 {
    (SNAPSHOT_ALIGN_BYTES - len % SNAPSHOT_ALIGN_BYTES) % SNAPSHOT_ALIGN_BYTES
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn fill(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(n)
}
