//! `endpoint status | health`, for each endpoint given (or, with
//! `--cluster`, each client URL the cluster's members advertise).
//!
//! Endpoints are checked one after another, each within the command
//! timeout. An endpoint that fails is reported on stderr and the command
//! exits 1 after printing the others, as etcdctl does.

use std::time::Instant;

use clap::{Args, Subcommand};
use raftkv_proto::etcdserverpb as pb;

use super::{emit, emit_err, Context};
use crate::client::{Client, Target};
use crate::error::{CtlError, ExitCode};
use crate::output::{EndpointHealth, Format};

/// `endpoint <subcommand>`.
#[derive(Subcommand, Clone, Debug)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints.
    Health(ClusterFlag),
    /// Prints out the status of endpoints.
    Status(ClusterFlag),
}

/// `--cluster`.
#[derive(Args, Clone, Debug)]
pub struct ClusterFlag {
    /// Use all endpoints from the cluster member list.
    #[arg(long)]
    pub cluster: bool,
}

/// Runs an endpoint subcommand.
pub async fn run(ctx: &Context, command: &EndpointCommand) -> Result<(), CtlError> {
    match command {
        EndpointCommand::Status(flag) => {
            let client = endpoints_client(ctx, flag.cluster).await?;
            status(ctx, client.as_ref().unwrap_or(&ctx.client)).await
        }
        EndpointCommand::Health(flag) => {
            let client = endpoints_client(ctx, flag.cluster).await?;
            health(ctx, client.as_ref().unwrap_or(&ctx.client)).await
        }
    }
}

/// With `--cluster`, a client over every member's client URLs.
pub async fn endpoints_client(ctx: &Context, cluster: bool) -> Result<Option<Client>, CtlError> {
    if !cluster {
        return Ok(None);
    }
    let members = ctx.client.member_list().await?;
    let mut endpoints: Vec<String> = Vec::new();
    for member in &members.members {
        for url in &member.client_ur_ls {
            if !endpoints.contains(url) {
                endpoints.push(url.clone());
            }
        }
    }
    let mut config = ctx.client.config().clone();
    config.endpoints = endpoints;
    Client::new(config).map(Some).map_err(CtlError::from)
}

/// The error that ends a command after its failures were reported on
/// stderr: exit 1, nothing more printed.
pub fn reported_failure() -> CtlError {
    CtlError::new(ExitCode::Error, String::new())
}

async fn status(ctx: &Context, client: &Client) -> Result<(), CtlError> {
    let mut answers: Vec<(String, pb::StatusResponse)> = Vec::new();
    let mut failed = false;
    for (index, endpoint) in client.endpoints().iter().enumerate() {
        match client.status(Target::One(index)).await {
            Ok(resp) => answers.push((endpoint.clone(), resp)),
            Err(err) => {
                failed = true;
                emit_err(&format!(
                    "Failed to get the status of endpoint {endpoint} ({err})\n"
                ));
            }
        }
    }
    emit(&ctx.printer.endpoint_status(&answers)?)?;
    if failed {
        return Err(reported_failure());
    }
    Ok(())
}

/// One endpoint's health: a linearizable read answered (a permission
/// refusal counts, it went through consensus) and no alarm raised.
pub async fn check_health(client: &Client, index: usize) -> EndpointHealth {
    let endpoint = client.endpoints()[index].clone();
    let started = Instant::now();
    let read = client
        .range_at(
            Target::One(index),
            pb::RangeRequest {
                key: b"health".to_vec(),
                ..Default::default()
            },
        )
        .await;
    let took = started.elapsed();
    let mut health = EndpointHealth {
        endpoint,
        healthy: false,
        took,
        error: String::new(),
    };
    match read {
        Ok(_) => health.healthy = true,
        Err(err) if err.status().map(|s| s.code()) == Some(tonic::Code::PermissionDenied) => {
            health.healthy = true
        }
        Err(err) => health.error = err.to_string(),
    }
    if health.healthy {
        let alarms = client
            .alarm(
                Target::One(index),
                pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Get as i32,
                    ..Default::default()
                },
            )
            .await;
        match alarms {
            Ok(resp) if !resp.alarms.is_empty() => {
                health.healthy = false;
                let mut error = String::from("Active Alarm(s): ");
                for alarm in &resp.alarms {
                    let name = match pb::AlarmType::try_from(alarm.alarm) {
                        Ok(pb::AlarmType::Nospace) => "NOSPACE",
                        Ok(pb::AlarmType::Corrupt) => "CORRUPT",
                        _ => "UNKNOWN",
                    };
                    error.push_str(name);
                    error.push(' ');
                }
                health.error = error;
            }
            Ok(_) => {}
            Err(_) => {
                health.healthy = false;
                health.error = "Unable to fetch the alarm list".to_string();
            }
        }
    }
    health
}

async fn health(ctx: &Context, client: &Client) -> Result<(), CtlError> {
    let mut results = Vec::new();
    for index in 0..client.endpoints().len() {
        results.push(check_health(client, index).await);
    }
    let printed = ctx.printer.endpoint_health(&results)?;
    // etcdctl writes its plain health lines to stderr.
    if ctx.printer.format == Format::Simple {
        emit_err(&printed);
    } else {
        emit(&printed)?;
    }
    if results.iter().any(|h| !h.healthy) {
        return Err(CtlError::failed("unhealthy cluster"));
    }
    Ok(())
}
