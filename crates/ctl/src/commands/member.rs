//! `member list | add | remove | update | promote`.
//!
//! Member ids are hexadecimal, peer URLs a comma-separated list, as in
//! etcdctl. Changes are sent once (never retried after the request left),
//! since adding a member twice is not the same as adding it once.

use clap::{Args, Subcommand};
use raftkv_proto::etcdserverpb as pb;

use super::{emit, parse_u64, Context};
use crate::error::CtlError;

/// `member <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum MemberCommand {
    /// Lists all members in the cluster.
    List,
    /// Adds a member into the cluster.
    Add(AddArgs),
    /// Removes a member from the cluster.
    Remove {
        /// The member id (hex).
        args: Vec<String>,
    },
    /// Updates a member in the cluster.
    Update(UpdateArgs),
    /// Promotes a non-voting member in the cluster.
    Promote {
        /// The member id (hex).
        args: Vec<String>,
    },
}

/// `member add <memberName> --peer-urls=... [--learner]`.
#[derive(Args, Clone, Debug)]
pub struct AddArgs {
    /// The new member's name.
    pub args: Vec<String>,
    /// Comma separated peer URLs for the new member.
    #[arg(long, default_value = "")]
    pub peer_urls: String,
    /// Indicates if the new member is raft learner.
    #[arg(long)]
    pub learner: bool,
}

/// `member update <memberID> --peer-urls=...`.
#[derive(Args, Clone, Debug)]
pub struct UpdateArgs {
    /// The member id (hex).
    pub args: Vec<String>,
    /// Comma separated peer URLs for the updated member.
    #[arg(long, default_value = "")]
    pub peer_urls: String,
}

/// Runs a member subcommand.
pub async fn run(ctx: &Context, command: &MemberCommand) -> Result<(), CtlError> {
    match command {
        MemberCommand::List => {
            let resp = ctx.client.member_list().await?;
            emit(&ctx.printer.member_list(&resp)?)
        }
        MemberCommand::Add(args) => add(ctx, args).await,
        MemberCommand::Remove { args } => {
            let id = member_id(args)?;
            let resp = ctx
                .client
                .member_remove(pb::MemberRemoveRequest { id })
                .await?;
            emit(
                &ctx.printer
                    .member_change(id, "removed from", &resp.header, &resp.members)?,
            )
        }
        MemberCommand::Update(args) => {
            let id = member_id(&args.args)?;
            let peer_urls = peer_urls(&args.peer_urls)?;
            let resp = ctx
                .client
                .member_update(pb::MemberUpdateRequest {
                    id,
                    peer_ur_ls: peer_urls,
                })
                .await?;
            emit(
                &ctx.printer
                    .member_change(id, "updated in", &resp.header, &resp.members)?,
            )
        }
        MemberCommand::Promote { args } => {
            let id = member_id(args)?;
            let resp = ctx
                .client
                .member_promote(pb::MemberPromoteRequest { id })
                .await?;
            emit(
                &ctx.printer
                    .member_change(id, "promoted in", &resp.header, &resp.members)?,
            )
        }
    }
}

async fn add(ctx: &Context, args: &AddArgs) -> Result<(), CtlError> {
    if args.args.len() != 1 {
        return Err(CtlError::bad_args("member name not provided"));
    }
    let name = &args.args[0];
    let urls = peer_urls(&args.peer_urls)?;
    let req = pb::MemberAddRequest {
        peer_ur_ls: urls.clone(),
        is_learner: args.learner,
    };
    let resp = ctx.client.member_add(req).await?;
    emit(&ctx.printer.member_add(&resp, name, &urls)?)
}

fn member_id(args: &[String]) -> Result<u64, CtlError> {
    if args.len() != 1 {
        return Err(CtlError::bad_args("member ID is not provided"));
    }
    parse_u64(&args[0], 16)
        .map_err(|e| CtlError::bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

fn peer_urls(text: &str) -> Result<Vec<String>, CtlError> {
    if text.is_empty() {
        return Err(CtlError::bad_args("member peer urls not provided"));
    }
    Ok(text.split(',').map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_arguments_follow_etcdctl() {
        assert_eq!(
            member_id(&["zz".into()]).unwrap_err().message,
            r#"bad member ID arg (strconv.ParseUint: parsing "zz": invalid syntax), expecting ID in Hex"#
        );
        assert_eq!(
            member_id(&["2adee382d3283e99".into()]).unwrap(),
            0x2adee382d3283e99
        );
        assert_eq!(
            peer_urls("").unwrap_err().message,
            "member peer urls not provided"
        );
        assert_eq!(peer_urls("http://a:1,http://b:2").unwrap().len(), 2);
    }
}
