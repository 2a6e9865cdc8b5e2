//! `watch`: prints events on a key or range until interrupted.
//!
//! A stream that breaks (the member stopped, the connection dropped) is
//! opened again on the next endpoint from the revision after the last event
//! printed, so nothing is skipped or printed twice. A watch the server
//! cancels (its start revision was compacted) ends the command as etcdctl
//! does: `watch was canceled (...)` then `Error: watch is canceled by the
//! server`, exit 5.

use clap::Args;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use tokio_stream::StreamExt as _;

use super::{emit, emit_err, flagged_range, Context};
use crate::client::Target;
use crate::error::{status_message, CtlError, ExitCode};

/// `watch [options] <key or prefix> [range_end]`.
#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// The key (or prefix), and optionally the end of the range.
    pub args: Vec<String>,
    /// Watch on a prefix if prefix is set.
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long)]
    pub prev_kv: bool,
}

/// The create request etcdctl would send.
pub fn create_request(args: &WatchArgs) -> Result<pb::WatchCreateRequest, CtlError> {
    if args.args.is_empty() || args.args.len() > 2 {
        return Err(CtlError::bad_args("bad number of arguments"));
    }
    if args.prefix && args.args.len() == 2 {
        return Err(CtlError::bad_args(
            "`range_end` and `--prefix` are mutually exclusive",
        ));
    }
    let key = args.args[0].clone().into_bytes();
    let range_end = args
        .args
        .get(1)
        .map(|e| e.clone().into_bytes())
        .unwrap_or_default();
    let (key, range_end) = flagged_range(key, range_end, args.prefix, false);
    Ok(pb::WatchCreateRequest {
        key,
        range_end,
        start_revision: args.rev.max(0),
        prev_kv: args.prev_kv,
        ..Default::default()
    })
}

/// `watch`: runs until interrupted or cancelled by the server.
pub async fn watch(ctx: &Context, args: &WatchArgs) -> Result<(), CtlError> {
    let mut create = create_request(args)?;
    loop {
        let next_revision = watch_once(ctx, &create).await?;
        tracing::debug!(next_revision, "watch stream broke; resuming");
        if next_revision > 0 {
            create.start_revision = next_revision;
        }
        tokio::time::sleep(ctx.client.config().retry.backoff_max).await;
    }
}

/// Runs one watch stream until it breaks, and returns the revision to
/// resume from (0: as first asked); a cancellation by the server is the
/// command's end.
async fn watch_once(ctx: &Context, create: &pb::WatchCreateRequest) -> Result<i64, CtlError> {
    let (_, channel) = ctx.client.stream_channel(Target::Any).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            create.clone(),
        )),
    };
    // The receiver is alive: it was created just above.
    let _ = tx.send(first).await;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    // As etcdctl: a watch is only worth having on a member with a leader.
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut next_revision = 0;
    let mut stream = match WatchClient::new(channel).watch(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(error = %status_message(&status), "watch not opened");
            ctx.client.renew_token_after(&status).await?;
            return Ok(next_revision);
        }
    };
    while let Some(item) = stream.next().await {
        let resp = match item {
            Ok(resp) => resp,
            Err(status) => {
                tracing::debug!(error = %status_message(&status), "watch stream failed");
                ctx.client.renew_token_after(&status).await?;
                break;
            }
        };
        if let Some(last) = resp.events.last() {
            next_revision = last.kv.as_ref().map_or(0, |kv| kv.mod_revision) + 1;
        }
        if resp.canceled {
            let reason = if resp.compact_revision != 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else if !resp.cancel_reason.is_empty() {
                resp.cancel_reason.clone()
            } else {
                "etcdserver: watch canceled".to_string()
            };
            emit_err(&format!("watch was canceled ({reason})\n"));
            emit(&ctx.printer.watch(&resp)?)?;
            return Err(CtlError::new(
                ExitCode::Interrupted,
                "watch is canceled by the server",
            ));
        }
        // etcd's client keeps the creation answer to itself.
        if resp.created && resp.events.is_empty() {
            continue;
        }
        emit(&ctx.printer.watch(&resp)?)?;
    }
    drop(tx);
    Ok(next_revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(keys: &[&str], prefix: bool) -> WatchArgs {
        WatchArgs {
            args: keys.iter().map(|s| s.to_string()).collect(),
            prefix,
            rev: 0,
            prev_kv: false,
        }
    }

    #[test]
    fn watch_arguments_follow_etcdctl() {
        assert_eq!(
            create_request(&args(&[], false)).unwrap_err().message,
            "bad number of arguments"
        );
        assert_eq!(
            create_request(&args(&["a", "b"], true))
                .unwrap_err()
                .message,
            "`range_end` and `--prefix` are mutually exclusive"
        );
        let req = create_request(&args(&["w"], true)).unwrap();
        assert_eq!((req.key, req.range_end), (b"w".to_vec(), b"x".to_vec()));
    }
}
