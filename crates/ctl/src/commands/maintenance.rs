//! `alarm list | disarm`, `defrag`, `snapshot save` and `move-leader`.
//!
//! `snapshot save` writes the stream to `<file>.part`, checks the SHA-256
//! the server sends as its last message against what came before it, syncs
//! the file and only then renames it into place, so a failed or cut-off
//! transfer never leaves a file that looks complete. The checksum stays at
//! the end of the file, where etcd's restore tools expect it.

use std::time::Duration;

use clap::{Args, Subcommand};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio_stream::StreamExt as _;

use super::endpoint::{endpoints_client, reported_failure};
use super::{emit, emit_err, parse_u64, Context};
use crate::client::Target;
use crate::error::{status_message, CtlError, ExitCode};

/// Bytes of the SHA-256 digest that ends a snapshot stream.
const SHA256_BYTES: usize = 32;

/// `alarm <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum AlarmCommand {
    /// Lists all alarms.
    List,
    /// Disarms all alarms.
    Disarm,
}

/// `defrag [--cluster]`.
#[derive(Args, Clone, Debug)]
pub struct DefragArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long)]
    pub cluster: bool,
}

/// `snapshot <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file.
    Save {
        /// The file to write.
        args: Vec<String>,
    },
    /// Restores an etcd member snapshot to an etcd directory.
    Restore(super::restore::RestoreArgs),
}

/// Runs an alarm subcommand.
pub async fn alarm(ctx: &Context, command: &AlarmCommand) -> Result<(), CtlError> {
    use pb::alarm_request::AlarmAction;
    let list = ctx
        .client
        .alarm(
            Target::Any,
            pb::AlarmRequest {
                action: AlarmAction::Get as i32,
                ..Default::default()
            },
        )
        .await?;
    match command {
        AlarmCommand::List => emit(&ctx.printer.alarm(&list)?),
        AlarmCommand::Disarm => {
            // As etcd's client: disarm each listed alarm, and answer with
            // the alarms the deactivations returned (no header).
            let mut disarmed = pb::AlarmResponse::default();
            for alarm in &list.alarms {
                let resp = ctx
                    .client
                    .alarm(
                        Target::Any,
                        pb::AlarmRequest {
                            action: AlarmAction::Deactivate as i32,
                            member_id: alarm.member_id,
                            alarm: alarm.alarm,
                        },
                    )
                    .await?;
                disarmed.alarms.extend(resp.alarms);
            }
            emit(&ctx.printer.alarm(&disarmed)?)
        }
    }
}

/// `defrag`: each endpoint in turn; failures on stderr, exit 1 if any.
pub async fn defrag(ctx: &Context, args: &DefragArgs) -> Result<(), CtlError> {
    let cluster = endpoints_client(ctx, args.cluster).await?;
    let client = cluster.as_ref().unwrap_or(&ctx.client);
    let mut failed = false;
    for (index, endpoint) in client.endpoints().iter().enumerate() {
        match client.defragment(Target::One(index)).await {
            Ok(_) => emit(&format!("Finished defragmenting etcd member[{endpoint}]\n"))?,
            Err(err) => {
                failed = true;
                emit_err(&format!(
                    "Failed to defragment etcd member[{endpoint}] ({err})\n"
                ));
            }
        }
    }
    if failed {
        return Err(reported_failure());
    }
    Ok(())
}

/// `snapshot save <file>`, or `snapshot restore` (which needs no server).
pub async fn snapshot(ctx: &Context, command: &SnapshotCommand) -> Result<(), CtlError> {
    let args = match command {
        SnapshotCommand::Save { args } => args,
        SnapshotCommand::Restore(args) => return super::restore::run(args),
    };
    if args.len() != 1 {
        return Err(CtlError::bad_args("snapshot save expects one argument"));
    }
    let endpoints = ctx.client.endpoints();
    if endpoints.len() != 1 {
        return Err(CtlError::bad_args(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            endpoints.join(" ")
        )));
    }
    let path = &args[0];
    let part = format!("{path}.part");
    let interrupted = |message: String| CtlError::new(ExitCode::Interrupted, message);
    let result = save(ctx, &part).await;
    if let Err(err) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(interrupted(err));
    }
    tokio::fs::rename(&part, path)
        .await
        .map_err(|e| interrupted(format!("could not rename {part} to {path} ({e})")))?;
    emit(&format!("Snapshot saved at {path}\n"))
}

/// Streams the snapshot into `part` and checks its digest.
async fn save(ctx: &Context, part: &str) -> Result<(), String> {
    let (_, channel) = ctx
        .client
        .stream_channel(Target::One(0))
        .await
        .map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| format!("could not create {part} ({e})"))?;
    let mut stream = MaintenanceClient::new(channel)
        .snapshot(pb::SnapshotRequest {})
        .await
        .map_err(|s| status_message(&s))?
        .into_inner();
    // The digest covers everything but itself, the last 32 bytes; hash
    // bytes only once they are known not to be part of it.
    let mut hasher = Sha256::new();
    let mut tail: Vec<u8> = Vec::new();
    let idle: Duration = ctx.client.config().command_timeout;
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| format!("no snapshot data for {idle:?}"))?;
        let Some(message) = next else { break };
        let message = message.map_err(|s| status_message(&s))?;
        file.write_all(&message.blob)
            .await
            .map_err(|e| format!("could not write {part} ({e})"))?;
        tail.extend_from_slice(&message.blob);
        if tail.len() > SHA256_BYTES {
            let settled = tail.len() - SHA256_BYTES;
            hasher.update(&tail[..settled]);
            tail.drain(..settled);
        }
    }
    if tail.len() != SHA256_BYTES || hasher.finalize().as_slice() != tail.as_slice() {
        return Err("snapshot is incomplete or corrupt: its SHA-256 does not match".into());
    }
    file.sync_all()
        .await
        .map_err(|e| format!("could not sync {part} ({e})"))?;
    Ok(())
}

/// `move-leader <transferee id>`: finds the leader among the endpoints,
/// then asks it to hand over.
pub async fn move_leader(ctx: &Context, args: &[String]) -> Result<(), CtlError> {
    if args.len() != 1 {
        return Err(CtlError::bad_args("move-leader command needs 1 argument"));
    }
    let target = parse_u64(&args[0], 16).map_err(CtlError::bad_args)?;
    let client = &ctx.client;
    let mut leader = None;
    for index in 0..client.endpoints().len() {
        let status = client.status(Target::One(index)).await?;
        let member = status.header.unwrap_or_default().member_id;
        if status.header.is_some() && member == status.leader {
            leader = Some((index, member));
            break;
        }
    }
    let Some((index, leader_id)) = leader else {
        return Err(CtlError::bad_args(format!(
            "no leader endpoint given at [{}]",
            client.endpoints().join(" ")
        )));
    };
    let resp = client
        .move_leader(
            Target::One(index),
            pb::MoveLeaderRequest { target_id: target },
        )
        .await?;
    emit(&ctx.printer.move_leader(leader_id, target, &resp)?)
}
