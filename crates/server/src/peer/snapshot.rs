//! Snapshots between members: the `raftkvpeer.Peer/Snapshot` stream.
//!
//! A follower behind the leader's compacted log needs the whole state
//! machine. Sent as one Raft message it was as large as the store (and
//! refused by the peer decoder past 256 MiB, forever); here it travels as
//! a stream of its own, in chunks of [`SNAPSHOT_CHUNK_BYTES`]:
//!
//! ```text
//!  leader                                             follower
//!  driver ──(message, image, done)──▶ sender task
//!          reader thread: image ─▶ chunk ─▶ [queue of 4] ─▶ h2 stream ─▶ handler
//!                                                          write to snap-incoming/<n>.part
//!                                                          trailer: length + CRC-32C checked
//!                                                          fsync, unlink, keep the fd open
//!                                                 driver ◀─(message, image) install, durable
//!  driver ◀─ done.finished(true) ◀── ack ◀──────────────────── ack
//! ```
//!
//! - **Off the driver.** The leader's driver only opens the image (one MVCC
//!   read transaction, see [`crate::node::StateMachine::snapshot`]); a
//!   blocking thread reads it chunk by chunk and the transfer runs on a
//!   connection of its own, so heartbeats and appends to every member go on
//!   beside it on the usual streams.
//! - **Bounded memory.** Chunks wait in a queue of
//!   [`SNAPSHOT_CHUNKS_QUEUED`]; HTTP/2 flow control stops the stream when
//!   the follower reads no further, the queue fills, and the reader thread
//!   waits. The sender holds a few MiB whatever the store's size; the
//!   follower writes each chunk to disk before asking for the next.
//! - **One at a time.** One transfer per follower is in flight; the Raft
//!   core keeps that follower in Snapshot state (heartbeats only) until the
//!   transfer's [`SnapshotDone`] is reported, and a second request for it
//!   meanwhile is [`SnapshotDone::superseded`].
//! - **Failures.** A broken, stalled ([`SNAPSHOT_STALL_MAX`] without the
//!   stream taking a chunk) or refused transfer is logged at `warn` on both
//!   sides, and reported failed only after a backoff that doubles from
//!   [`RETRY_BACKOFF_MIN`] to [`RETRY_BACKOFF_MAX`] per follower (reset by a
//!   delivery), so a follower that cannot take the snapshot costs one
//!   attempt per backoff, never a tight loop.
//! - **No resumption.** A new attempt starts from byte zero, from a new
//!   read transaction: the image of a retry is a newer state, so bytes kept
//!   from the previous one would not continue it, and keeping the old read
//!   transaction open between attempts would hold redb's freed pages (the
//!   file grows) for as long as a follower stays unreachable. A transfer
//!   runs at disk or network speed (a 1 GiB image takes seconds on a LAN),
//!   so restarting it is the simpler bound.
//! - **Checks.** The handler applies the checks of the Raft stream: the
//!   cluster id, a removed sender refused with `PermissionDenied`, and the
//!   recipient must be this member; it sits on the peer listener, so TLS
//!   and `--peer-client-cert-auth` guard it as they guard every peer
//!   service. Chunks over [`SNAPSHOT_CHUNK_BYTES_MAX`] and images over the
//!   configured limit are refused, so a peer can neither exhaust memory nor
//!   fill the disk.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use raftkv_proto::raftkvpeer::peer_client::PeerClient;
use raftkv_proto::raftkvpeer::{SnapshotAck, SnapshotChunk, SnapshotHeader, SnapshotTrailer};
use raftkv_raft::{Message, MessageBody, NodeId};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use super::codec;
use super::dial::PeerDialer;
use crate::members::MemberDirectory;
use crate::node::{NodeHandle, SnapshotDone, SnapshotImage};
use crate::replicated::Outcome;

/// Bytes of image per chunk: far below the peer decoder's limit, large
/// enough that per-message costs vanish against the copy.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest chunk a receiver accepts (a sender of another build may use
/// another chunk size; this bounds what one message can make it hold).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 8 << 20;
/// Chunks read ahead of the stream: with [`SNAPSHOT_CHUNK_BYTES`], what a
/// transfer holds in memory besides HTTP/2's own buffers.
pub const SNAPSHOT_CHUNKS_QUEUED: usize = 4;
/// A transfer that makes no progress this long is abandoned, on either
/// side: a stopped or partitioned peer holds a TCP connection open without
/// reading from it, and only this notices.
pub const SNAPSHOT_STALL_MAX: Duration = Duration::from_secs(20);
/// How long the leader waits, after the last chunk, for the follower to
/// fsync and install the image.
pub const SNAPSHOT_INSTALL_WAIT_MAX: Duration = Duration::from_secs(600);
/// First pause before a failed transfer is reported (and so retried).
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause before a failed transfer is reported.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Snapshots received at once; more are refused (the sender backs off).
const RECEIVING_MAX: usize = 2;
/// How often the sender checks its transfer for a stall.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);

/// Why a snapshot transfer failed (logged on the side it happened).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The recipient has no peer URL in the member directory.
    #[error("no address for member {0:x}")]
    NoAddress(NodeId),
    /// The connection could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The peer URL.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The other side refused the transfer or broke it.
    #[error("refused: {0}")]
    Refused(Status),
    /// The image could not be read, or the file written or read back.
    #[error("image: {0}")]
    Io(#[from] std::io::Error),
    /// No chunk moved for [`SNAPSHOT_STALL_MAX`].
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    /// The follower did not answer within [`SNAPSHOT_INSTALL_WAIT_MAX`]
    /// after the last chunk.
    #[error("no answer within {0:?} after the last chunk")]
    NoAnswer(Duration),
    /// The stream ended before its trailer, or its bytes do not match it.
    #[error("{0}")]
    Damaged(String),
    /// The stream breaks a rule of the protocol.
    #[error("{0}")]
    Invalid(String),
    /// The node driver stopped or failed to install the image.
    #[error("node: {0}")]
    Node(#[from] crate::error::NodeError),
}

impl SnapshotError {
    /// The status a receiver answers this error with.
    fn into_status(self) -> Status {
        match self {
            SnapshotError::Refused(status) => status,
            SnapshotError::Invalid(reason) => Status::invalid_argument(reason),
            SnapshotError::Damaged(reason) => Status::data_loss(reason),
            SnapshotError::Stalled(_) => Status::deadline_exceeded("snapshot stream stalled"),
            other => Status::unavailable(other.to_string()),
        }
    }
}

/// Counters the sender's watchdog reads: when the stream last took a chunk,
/// and whether it has taken the last one.
struct Progress {
    started: Instant,
    last_pull_ms: AtomicU64,
    all_pulled: AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_pull_ms: AtomicU64::new(0),
            all_pulled: AtomicBool::new(false),
        }
    }

    fn pulled(&self, last: bool) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_pull_ms.store(now, Ordering::Relaxed);
        if last {
            self.all_pulled.store(true, Ordering::Relaxed);
        }
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_pull_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// What a finished transfer sent.
#[derive(Clone, Copy, Debug)]
struct Sent {
    image_bytes: u64,
    chunks: u64,
    installed: bool,
}

/// The leader's side: starts a task per transfer, at most one per follower.
#[derive(Clone)]
pub struct SnapshotSender {
    cluster_id: u64,
    members: Arc<MemberDirectory>,
    dialer: PeerDialer,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<Mutex<HashSet<NodeId>>>,
    backoff: Arc<Mutex<HashMap<NodeId, Duration>>>,
}

impl SnapshotSender {
    /// A sender for the member of `cluster_id`; tasks run on `runtime`.
    pub fn new(
        cluster_id: u64,
        members: Arc<MemberDirectory>,
        dialer: PeerDialer,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            cluster_id,
            members,
            dialer,
            runtime,
            in_flight: Arc::default(),
            backoff: Arc::default(),
        }
    }

    /// Starts sending `image` with `message` to `message.to`; never blocks.
    pub fn send(&self, message: Message, image: SnapshotImage, done: SnapshotDone) {
        let to = message.to;
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(to);
        if !fresh {
            tracing::debug!(
                to = format!("{to:x}"),
                "a snapshot is already on its way to this member"
            );
            done.superseded();
            return;
        }
        let sender = self.clone();
        self.runtime.spawn(async move {
            let index = snapshot_index(&message);
            let started = Instant::now();
            let result = sender.transfer(message, image).await;
            sender
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&to);
            match result {
                Ok(sent) => {
                    sender.backoff_reset(to);
                    let took = started.elapsed();
                    tracing::info!(
                        to = format!("{to:x}"),
                        index,
                        image_bytes = sent.image_bytes,
                        chunks = sent.chunks,
                        installed = sent.installed,
                        took_ms = took.as_millis() as u64,
                        mib_per_s = mib_per_s(sent.image_bytes, took),
                        "snapshot sent"
                    );
                    done.finished(true);
                }
                Err(err) => {
                    let pause = sender.backoff_next(to);
                    tracing::warn!(
                        to = format!("{to:x}"),
                        index,
                        %err,
                        retry_in_ms = pause.as_millis() as u64,
                        "sending a snapshot failed"
                    );
                    tokio::time::sleep(pause).await;
                    done.finished(false);
                }
            }
        });
    }

    fn backoff_reset(&self, to: NodeId) {
        self.backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&to);
    }

    /// The pause before this failure is reported: doubled at every failure
    /// in a row.
    fn backoff_next(&self, to: NodeId) -> Duration {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let pause = backoff.entry(to).or_insert(RETRY_BACKOFF_MIN / 2);
        *pause = (*pause * 2).min(RETRY_BACKOFF_MAX);
        *pause
    }

    async fn transfer(
        &self,
        message: Message,
        image: SnapshotImage,
    ) -> Result<Sent, SnapshotError> {
        let to = message.to;
        let url = self
            .members
            .peer_url(to)
            .ok_or(SnapshotError::NoAddress(to))?;
        let connect_error = |e: tonic::transport::Error| SnapshotError::Connect {
            url: url.clone(),
            reason: super::super::server::error_chain(&e),
        };
        // A connection of its own: the snapshot's bytes never queue in
        // front of the heartbeats on the Raft stream.
        let endpoint = self.dialer.endpoint(&url).map_err(connect_error)?;
        let channel = self
            .dialer
            .connect_endpoint(endpoint)
            .await
            .map_err(connect_error)?;
        let mut client = PeerClient::new(channel);
        let header = SnapshotHeader {
            cluster_id: self.cluster_id,
            message: Some(codec::to_wire(message)),
        };
        let (chunks, queued) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_QUEUED);
        let progress = Arc::new(Progress::new());
        let reader = tokio::task::spawn_blocking(move || produce(image, header, &chunks));
        let pulls = progress.clone();
        let stream = tokio_stream::wrappers::ReceiverStream::new(queued).map(move |chunk| {
            pulls.pulled(chunk.trailer.is_some());
            chunk
        });
        let call = client.snapshot(stream);
        tokio::pin!(call);
        let mut watchdog = tokio::time::interval(WATCHDOG_PERIOD);
        let answer = loop {
            tokio::select! {
                answer = &mut call => break answer,
                _ = watchdog.tick() => {
                    let idle = progress.idle();
                    if !progress.all_pulled.load(Ordering::Relaxed) {
                        if idle > SNAPSHOT_STALL_MAX {
                            return Err(SnapshotError::Stalled(SNAPSHOT_STALL_MAX));
                        }
                    } else if idle > SNAPSHOT_INSTALL_WAIT_MAX {
                        return Err(SnapshotError::NoAnswer(SNAPSHOT_INSTALL_WAIT_MAX));
                    }
                }
            }
        };
        // The call ended: the reader thread finishes (or finds the stream
        // gone) without waiting on anything.
        let produced = reader
            .await
            .map_err(|e| SnapshotError::Invalid(format!("snapshot reader failed: {e}")))?;
        let ack = match answer {
            Ok(ack) => ack.into_inner(),
            // An image that could not be read ended the stream early: that
            // is the cause worth reporting, not the follower's complaint.
            Err(status) => {
                return Err(match produced {
                    Err(err @ SnapshotError::Io(_)) => err,
                    _ => SnapshotError::Refused(status),
                })
            }
        };
        let produced = produced?;
        if ack.image_bytes != produced.image_bytes {
            return Err(SnapshotError::Damaged(format!(
                "the follower took {} bytes of {}",
                ack.image_bytes, produced.image_bytes
            )));
        }
        Ok(Sent {
            image_bytes: produced.image_bytes,
            chunks: produced.chunks,
            installed: ack.installed,
        })
    }
}

/// What the reader thread put on the stream.
struct Produced {
    image_bytes: u64,
    chunks: u64,
}

/// Reads the image into chunks and queues them, waiting whenever the queue
/// is full (this is where flow control holds the sender back). The first
/// chunk carries the header, the last the trailer.
fn produce(
    mut image: SnapshotImage,
    header: SnapshotHeader,
    chunks: &mpsc::Sender<SnapshotChunk>,
) -> Result<Produced, SnapshotError> {
    let mut header = Some(header);
    let mut crc = 0u32;
    let mut image_bytes = 0u64;
    let mut count = 0u64;
    loop {
        let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let filled = read_full(&mut image, &mut data)?;
        data.truncate(filled);
        crc = crc32c::crc32c_append(crc, &data);
        image_bytes += filled as u64;
        count += 1;
        // A short read is the end; an image of whole chunks ends with an
        // empty one that carries the trailer.
        let last = filled < SNAPSHOT_CHUNK_BYTES;
        let chunk = SnapshotChunk {
            header: header.take(),
            data,
            trailer: last.then_some(SnapshotTrailer {
                image_bytes,
                crc32c: crc,
                chunks: count,
            }),
        };
        if chunks.blocking_send(chunk).is_err() {
            return Err(SnapshotError::Invalid(
                "the stream ended before the image was sent".into(),
            ));
        }
        if last {
            return Ok(Produced {
                image_bytes,
                chunks: count,
            });
        }
    }
}

/// Fills `buf` unless the reader ends first; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn snapshot_index(message: &Message) -> u64 {
    match &message.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.meta.index,
        _ => 0,
    }
}

fn mib_per_s(bytes: u64, took: Duration) -> u64 {
    let secs = took.as_secs_f64().max(1e-3);
    (bytes as f64 / secs / f64::from(1 << 20)) as u64
}

/// The follower's side: receives a stream into a file under `dir` and
/// hands it to the driver.
pub struct SnapshotReceiver {
    cluster_id: u64,
    dir: PathBuf,
    image_bytes_max: u64,
    slots: Arc<tokio::sync::Semaphore>,
    next_file: AtomicU64,
}

impl SnapshotReceiver {
    /// A receiver writing to `dir` (created; files a crash left there are
    /// removed), refusing images over `image_bytes_max`.
    pub fn open(cluster_id: u64, dir: &Path, image_bytes_max: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                tracing::info!(path = %path.display(), "removing a partial snapshot");
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self {
            cluster_id,
            dir: dir.to_path_buf(),
            image_bytes_max,
            slots: Arc::new(tokio::sync::Semaphore::new(RECEIVING_MAX)),
            next_file: AtomicU64::new(0),
        })
    }

    /// Receives one snapshot stream and installs it through `node`.
    /// Failures are logged at `warn` and answered with a status.
    pub async fn receive(
        &self,
        node: &NodeHandle<Outcome>,
        members: &MemberDirectory,
        chunks: Streaming<SnapshotChunk>,
    ) -> Result<SnapshotAck, Status> {
        let started = Instant::now();
        let mut from = 0;
        let mut index = 0;
        let result = self
            .receive_inner(node, members, chunks, &mut from, &mut index)
            .await;
        match result {
            Ok(ack) => {
                let took = started.elapsed();
                tracing::info!(
                    from = format!("{from:x}"),
                    index,
                    image_bytes = ack.image_bytes,
                    installed = ack.installed,
                    took_ms = took.as_millis() as u64,
                    "snapshot received"
                );
                Ok(ack)
            }
            Err(err) => {
                tracing::warn!(
                    from = format!("{from:x}"),
                    index,
                    %err,
                    "receiving a snapshot failed"
                );
                Err(err.into_status())
            }
        }
    }

    async fn receive_inner(
        &self,
        node: &NodeHandle<Outcome>,
        members: &MemberDirectory,
        mut chunks: Streaming<SnapshotChunk>,
        from: &mut NodeId,
        index: &mut u64,
    ) -> Result<SnapshotAck, SnapshotError> {
        let _slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            SnapshotError::Refused(Status::resource_exhausted(
                "snapshots are being received already",
            ))
        })?;
        let first = next_chunk(&mut chunks)
            .await?
            .ok_or_else(|| SnapshotError::Invalid("empty snapshot stream".into()))?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| SnapshotError::Invalid("the first chunk has no header".into()))?;
        let message = self.check_header(members, header)?;
        *from = message.from;
        *index = snapshot_index(&message);
        let sequence = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{:016x}-{sequence}.part", *index));
        let mut file = PartFile::create(path).await?;
        let mut chunk = Some(first);
        let mut crc = 0u32;
        let mut image_bytes = 0u64;
        let mut count = 0u64;
        let trailer = loop {
            let Some(current) = chunk.take() else {
                return Err(SnapshotError::Damaged(format!(
                    "the stream ended after {image_bytes} bytes, before its trailer"
                )));
            };
            if current.header.is_some() && count > 0 {
                return Err(SnapshotError::Invalid("a second header".into()));
            }
            if current.data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
                return Err(SnapshotError::Invalid(format!(
                    "a chunk of {} bytes (at most {SNAPSHOT_CHUNK_BYTES_MAX})",
                    current.data.len()
                )));
            }
            image_bytes += current.data.len() as u64;
            if image_bytes > self.image_bytes_max {
                return Err(SnapshotError::Invalid(format!(
                    "an image over {} bytes",
                    self.image_bytes_max
                )));
            }
            crc = crc32c::crc32c_append(crc, &current.data);
            count += 1;
            file.write(current.data).await?;
            if let Some(trailer) = current.trailer {
                break trailer;
            }
            chunk = next_chunk(&mut chunks).await?;
        };
        if trailer.image_bytes != image_bytes || trailer.crc32c != crc || trailer.chunks != count {
            return Err(SnapshotError::Damaged(format!(
                "received {image_bytes} bytes in {count} chunks with CRC-32C {crc:08x}, the trailer says {} bytes in {} chunks with {:08x}",
                trailer.image_bytes, trailer.chunks, trailer.crc32c
            )));
        }
        let image = file.into_image().await?;
        let installed = node.install_snapshot(message, image).await?;
        Ok(SnapshotAck {
            image_bytes,
            installed,
        })
    }

    /// The checks of the Raft stream, and the message the header carries.
    fn check_header(
        &self,
        members: &MemberDirectory,
        header: SnapshotHeader,
    ) -> Result<Message, SnapshotError> {
        if header.cluster_id != self.cluster_id {
            return Err(SnapshotError::Refused(Status::failed_precondition(
                format!(
                    "peer belongs to cluster {:x}, this member to {:x}",
                    header.cluster_id, self.cluster_id
                ),
            )));
        }
        let wire = header
            .message
            .ok_or_else(|| SnapshotError::Invalid("the header has no message".into()))?;
        if members.is_removed(wire.from) {
            return Err(SnapshotError::Refused(super::service::removed(wire.from)));
        }
        let message = codec::from_wire(wire)
            .map_err(|e| SnapshotError::Invalid(format!("the header's message: {e}")))?;
        if message.to != members.self_id() {
            return Err(SnapshotError::Refused(Status::failed_precondition(
                format!(
                    "a snapshot for member {:x} sent to member {:x}",
                    message.to,
                    members.self_id()
                ),
            )));
        }
        match &message.body {
            MessageBody::InstallSnapshot { snapshot } if snapshot.data.is_empty() => Ok(message),
            _ => Err(SnapshotError::Invalid(
                "the header's message is not an InstallSnapshot without data".into(),
            )),
        }
    }
}

/// The next chunk, or `None` at the end; a sender silent for
/// [`SNAPSHOT_STALL_MAX`] is given up on.
async fn next_chunk(
    chunks: &mut Streaming<SnapshotChunk>,
) -> Result<Option<SnapshotChunk>, SnapshotError> {
    match tokio::time::timeout(SNAPSHOT_STALL_MAX, chunks.message()).await {
        Ok(result) => result.map_err(SnapshotError::Refused),
        Err(_) => Err(SnapshotError::Stalled(SNAPSHOT_STALL_MAX)),
    }
}

/// A snapshot file being received; removed if dropped before it is handed
/// over, so an abandoned transfer leaves nothing behind.
struct PartFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Bytes written since the last sync.
    unsynced: usize,
}

/// Bytes a receiver writes before it syncs them: the disk takes the image
/// in steady steps instead of one flush of all of it at the end, which on a
/// disk shared with other members held their log syncs for seconds.
const RECEIVE_SYNC_BYTES: usize = 32 << 20;

impl PartFile {
    async fn create(path: PathBuf) -> Result<Self, SnapshotError> {
        let at = path.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&at)
        })
        .await?;
        Ok(Self {
            path,
            file: Some(file),
            unsynced: 0,
        })
    }

    /// Appends a chunk (on a blocking thread: the disk may be slow).
    async fn write(&mut self, data: Vec<u8>) -> Result<(), SnapshotError> {
        let mut file = self.take()?;
        self.unsynced += data.len();
        let sync = self.unsynced >= RECEIVE_SYNC_BYTES;
        if sync {
            self.unsynced = 0;
        }
        let (file, result) = tokio::task::spawn_blocking(move || {
            let mut result = file.write_all(&data);
            if sync && result.is_ok() {
                result = file.sync_data();
            }
            (file, result)
        })
        .await
        .map_err(|e| SnapshotError::Invalid(format!("snapshot writer failed: {e}")))?;
        self.file = Some(file);
        Ok(result?)
    }

    /// The file made durable and opened for reading from the start. Its
    /// name is removed at once: the open handle keeps the data until the
    /// install drops it, and no name is left to clean up after a crash.
    async fn into_image(mut self) -> Result<SnapshotImage, SnapshotError> {
        let mut file = self.take()?;
        let path = self.path.clone();
        let file = blocking(move || {
            file.sync_all()?;
            file.rewind()?;
            std::fs::remove_file(&path)?;
            Ok(file)
        })
        .await?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            SNAPSHOT_CHUNK_BYTES,
            file,
        )))
    }

    fn take(&mut self) -> Result<std::fs::File, SnapshotError> {
        self.file
            .take()
            .ok_or_else(|| SnapshotError::Invalid("snapshot file already closed".into()))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), %err, "cannot remove a partial snapshot");
            }
        }
    }
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SnapshotError::Invalid(format!("snapshot file task failed: {e}")))?
        .map_err(SnapshotError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Chunked {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.step).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn chunks_of(len: usize) -> Vec<SnapshotChunk> {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let image = Box::new(Chunked {
            data,
            at: 0,
            step: 100_000,
        });
        let (sender, mut receiver) = mpsc::channel(1024);
        let produced = produce(image, SnapshotHeader::default(), &sender).expect("produced");
        drop(sender);
        let mut chunks = Vec::new();
        while let Ok(chunk) = receiver.try_recv() {
            chunks.push(chunk);
        }
        assert_eq!(produced.chunks, chunks.len() as u64);
        assert_eq!(produced.image_bytes, len as u64);
        chunks
    }

    #[test]
    fn an_image_is_cut_into_bounded_chunks_with_a_header_first_and_a_trailer_last() {
        let len = 3 * SNAPSHOT_CHUNK_BYTES + 12345;
        let chunks = chunks_of(len);
        assert_eq!(chunks.len(), 4);
        assert!(chunks[0].header.is_some());
        assert!(chunks[1..].iter().all(|c| c.header.is_none()));
        assert!(chunks.iter().all(|c| c.data.len() <= SNAPSHOT_CHUNK_BYTES));
        let trailer = chunks[3].trailer.expect("trailer");
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(trailer.image_bytes, len as u64);
        assert_eq!(trailer.crc32c, crc32c::crc32c(&whole));
        assert!(chunks[..3].iter().all(|c| c.trailer.is_none()));
    }

    #[test]
    fn an_image_of_whole_chunks_ends_with_an_empty_trailer_chunk() {
        let chunks = chunks_of(2 * SNAPSHOT_CHUNK_BYTES);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[2].data.is_empty());
        assert_eq!(chunks[2].trailer.map(|t| t.chunks), Some(3));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_maximum_and_reset_on_delivery() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let sender = SnapshotSender::new(
            1,
            MemberDirectory::new(1),
            PeerDialer::default(),
            runtime.handle().clone(),
        );
        let pauses: Vec<Duration> = (0..8).map(|_| sender.backoff_next(2)).collect();
        assert_eq!(pauses[0], RETRY_BACKOFF_MIN);
        assert_eq!(pauses[1], RETRY_BACKOFF_MIN * 2);
        assert_eq!(pauses[7], RETRY_BACKOFF_MAX);
        assert_eq!(sender.backoff_next(3), RETRY_BACKOFF_MIN, "per member");
        sender.backoff_reset(2);
        assert_eq!(sender.backoff_next(2), RETRY_BACKOFF_MIN);
    }
}
