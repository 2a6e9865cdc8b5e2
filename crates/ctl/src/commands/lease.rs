//! `lease grant | revoke | timetolive | list | keep-alive`.
//!
//! Lease ids are written and read in hexadecimal, as etcdctl does. A
//! continuous `keep-alive` renews every third of the TTL the server
//! granted, prints each answer, reconnects if its stream breaks, and ends
//! (exit 0) once the lease has expired or was revoked.

use std::time::Duration;

use clap::{Args, Subcommand};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use tokio_stream::StreamExt as _;

use super::{emit, parse_i64, Context};
use crate::client::Target;
use crate::error::{ClientError, CtlError, ExitCode};
use crate::output::gofmt::hex16;

/// Shortest pause between two keep-alives, whatever the TTL.
const KEEP_ALIVE_INTERVAL_MIN: Duration = Duration::from_millis(500);

/// `lease <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant {
        /// The TTL in seconds.
        args: Vec<String>,
    },
    /// Revokes leases.
    Revoke {
        /// The lease id (hex).
        args: Vec<String>,
    },
    /// Get lease information.
    Timetolive(TimeToLiveArgs),
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    KeepAlive(KeepAliveArgs),
}

/// `lease timetolive <lease id> [--keys]`.
#[derive(Args, Clone, Debug)]
pub struct TimeToLiveArgs {
    /// The lease id (hex).
    pub args: Vec<String>,
    /// Get keys attached to this lease.
    #[arg(long)]
    pub keys: bool,
}

/// `lease keep-alive <lease id> [--once]`.
#[derive(Args, Clone, Debug)]
pub struct KeepAliveArgs {
    /// The lease id (hex).
    pub args: Vec<String>,
    /// Resets the keep-alive time to its original value and exits immediately.
    #[arg(long)]
    pub once: bool,
}

/// Runs a lease subcommand.
pub async fn run(ctx: &Context, command: &LeaseCommand) -> Result<(), CtlError> {
    match command {
        LeaseCommand::Grant { args } => grant(ctx, args).await,
        LeaseCommand::Revoke { args } => revoke(ctx, args).await,
        LeaseCommand::Timetolive(args) => time_to_live(ctx, args).await,
        LeaseCommand::List => list(ctx).await,
        LeaseCommand::KeepAlive(args) => keep_alive(ctx, args).await,
    }
}

fn lease_id(args: &[String], missing: &str) -> Result<i64, CtlError> {
    if args.len() != 1 {
        return Err(CtlError::bad_args(missing));
    }
    parse_i64(&args[0], 16)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

async fn grant(ctx: &Context, args: &[String]) -> Result<(), CtlError> {
    if args.len() != 1 {
        return Err(CtlError::bad_args("lease grant command needs TTL argument"));
    }
    let ttl = parse_i64(&args[0], 10).map_err(|e| CtlError::bad_args(format!("bad TTL ({e})")))?;
    let req = pb::LeaseGrantRequest { ttl, id: 0 };
    let resp = ctx
        .client
        .lease_grant(req, ctx.client.next_request_id())
        .await
        .map_err(|e| CtlError::failed(format!("failed to grant lease ({e})")))?;
    emit(&ctx.printer.lease_grant(&resp)?)
}

async fn revoke(ctx: &Context, args: &[String]) -> Result<(), CtlError> {
    let id = lease_id(args, "lease revoke command needs 1 argument")?;
    let resp = ctx
        .client
        .lease_revoke(pb::LeaseRevokeRequest { id }, ctx.client.next_request_id())
        .await
        .map_err(|e| CtlError::failed(format!("failed to revoke lease ({e})")))?;
    emit(&ctx.printer.lease_revoke(id, &resp)?)
}

async fn time_to_live(ctx: &Context, args: &TimeToLiveArgs) -> Result<(), CtlError> {
    let id = lease_id(
        &args.args,
        "lease timetolive command needs lease ID as argument",
    )?;
    let req = pb::LeaseTimeToLiveRequest {
        id,
        keys: args.keys,
    };
    let resp = ctx.client.lease_time_to_live(req).await?;
    emit(&ctx.printer.lease_time_to_live(&resp, args.keys)?)
}

async fn list(ctx: &Context) -> Result<(), CtlError> {
    let resp = ctx
        .client
        .lease_leases()
        .await
        .map_err(|e| CtlError::failed(format!("failed to list leases ({e})")))?;
    emit(&ctx.printer.lease_leases(&resp)?)
}

async fn keep_alive(ctx: &Context, args: &KeepAliveArgs) -> Result<(), CtlError> {
    let id = lease_id(
        &args.args,
        "lease keep-alive command needs lease ID as argument",
    )?;
    let lost = |e: ClientError| CtlError::new(ExitCode::BadConnection, e.to_string());
    if args.once {
        let resp = keep_alive_once(ctx, id).await.map_err(lost)?;
        if resp.ttl <= 0 {
            return Err(CtlError::new(
                ExitCode::BadConnection,
                "etcdserver: requested lease not found",
            ));
        }
        return emit(&ctx.printer.lease_keep_alive(&resp)?);
    }
    loop {
        match keep_alive_stream(ctx, id).await {
            Ok(()) => {
                return emit(&format!("lease {} expired or revoked.\n", hex16(id)));
            }
            Err(KeepAliveError::Fatal(err)) => return Err(err),
            Err(KeepAliveError::Stream(err)) => {
                tracing::debug!(%err, "keep-alive stream broke; reconnecting");
                tokio::time::sleep(ctx.client.config().retry.backoff_max).await;
            }
        }
    }
}

enum KeepAliveError {
    /// No endpoint could be reached, or printing failed: the command ends.
    Fatal(CtlError),
    /// The stream failed: open another.
    Stream(ClientError),
}

/// Keeps the lease alive over one stream until the lease is gone (`Ok`) or
/// the stream fails.
async fn keep_alive_stream(ctx: &Context, id: i64) -> Result<(), KeepAliveError> {
    let (_, channel) = ctx.client.stream_channel(Target::Any).await.map_err(|e| {
        KeepAliveError::Fatal(CtlError::new(ExitCode::BadConnection, e.to_string()))
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
    let mut stream = LeaseClient::new(channel)
        .lease_keep_alive(request)
        .await
        .map_err(|s| KeepAliveError::Stream(ClientError::Status(s)))?
        .into_inner();
    loop {
        let resp = match stream.next().await {
            Some(Ok(resp)) => resp,
            Some(Err(status)) => return Err(KeepAliveError::Stream(ClientError::Status(status))),
            None => {
                return Err(KeepAliveError::Stream(ClientError::DeadlineExceeded {
                    last: Some("keep-alive stream closed".into()),
                }))
            }
        };
        if resp.ttl <= 0 {
            return Ok(());
        }
        let printed = ctx
            .printer
            .lease_keep_alive(&resp)
            .map_err(KeepAliveError::Fatal)?;
        emit(&printed).map_err(KeepAliveError::Fatal)?;
        let pause = (Duration::from_secs(resp.ttl.unsigned_abs()) / 3).max(KEEP_ALIVE_INTERVAL_MIN);
        tokio::time::sleep(pause).await;
        if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
            return Err(KeepAliveError::Stream(ClientError::DeadlineExceeded {
                last: Some("keep-alive stream closed".into()),
            }));
        }
    }
}

/// One keep-alive over a short-lived stream, retried like a unary call.
pub async fn keep_alive_once(
    ctx: &Context,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, ClientError> {
    ctx.client
        .unary(Target::Any, None, |channel, _| async move {
            let request = tokio_stream::once(pb::LeaseKeepAliveRequest { id });
            let response = LeaseClient::new(channel).lease_keep_alive(request).await?;
            let (metadata, mut stream, extensions) = response.into_parts();
            match stream.next().await {
                Some(Ok(answer)) => Ok(tonic::Response::from_parts(metadata, answer, extensions)),
                Some(Err(status)) => Err(status),
                None => Err(tonic::Status::unavailable("keep-alive stream closed")),
            }
        })
        .await
}
