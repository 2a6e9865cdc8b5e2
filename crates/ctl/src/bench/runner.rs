//! Runs a workload: connections, concurrent workers, the rate limit, the
//! stop condition and the progress bar.
//!
//! `--clients` workers share `--conns` gRPC connections (worker `i` uses
//! connection `i % conns`, connection `j` goes to endpoint `j % endpoints`).
//! Each worker takes an operation number from one shared counter before
//! each operation and stops when it reaches `--total` or `--duration` has
//! passed, so the run ends by itself. With `--rate`, operation `n` is not
//! sent before `start + n / rate`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{Client, ClientConfig, Conn as Channel, Security};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::stats::{Recorder, Summary};
use super::workload::{KeySpace, Kind, OpError, Settings, Worker};
use super::{LoadArgs, Target};
use crate::error::CtlError;

/// Operations when neither `--total` nor `--duration` is given.
const DEFAULT_TOTAL: u64 = 10_000;
/// Most clients one run may have (each is a task, some hold streams).
const CLIENTS_MAX: usize = 10_000;

/// A validated run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Per-worker settings.
    pub settings: Settings,
    /// The options as given.
    pub load: LoadArgs,
    /// Endpoints, as given.
    pub endpoints: Vec<String>,
    /// Longest wait to connect.
    pub dial_timeout: Duration,
    /// How to connect: the global flags' endpoints and dial timeout...
    pub connection: ClientConfig,
    /// ...and TLS and user, as the other commands use them.
    pub security: Security,
    /// Operations to run (`u64::MAX` when only a duration bounds the run).
    pub total: u64,
}

impl Plan {
    /// Checks the options.
    pub fn new(
        kind: Kind,
        load: &LoadArgs,
        connection: &ClientConfig,
        security: &Security,
    ) -> Result<Self, CtlError> {
        let endpoints = &connection.endpoints;
        let dial_timeout = connection.dial_timeout;
        if endpoints.is_empty() {
            return Err(CtlError::bad_args("no endpoints given"));
        }
        if load.clients == 0 || load.clients > CLIENTS_MAX {
            return Err(CtlError::bad_args(format!(
                "--clients must be between 1 and {CLIENTS_MAX}"
            )));
        }
        if load.conns == 0 || load.conns > load.clients {
            return Err(CtlError::bad_args(
                "--conns must be between 1 and --clients",
            ));
        }
        if !(0.0..=1.0).contains(&load.read_ratio) {
            return Err(CtlError::bad_args("--read-ratio must be between 0 and 1"));
        }
        if load.key_space == 0 || load.range_size == 0 {
            return Err(CtlError::bad_args(
                "--key-space and --range-size must be positive",
            ));
        }
        if load.duration.is_some_and(|d| d.is_zero()) || load.total == Some(0) {
            return Err(CtlError::bad_args(
                "--total and --duration must be positive",
            ));
        }
        if load.serializable && !kind.reads() {
            return Err(CtlError::bad_args(format!(
                "--serializable does not apply to {}",
                kind.name()
            )));
        }
        let total = match (load.total, load.duration) {
            (Some(total), _) => total,
            (None, Some(_)) => u64::MAX,
            (None, None) => DEFAULT_TOTAL,
        };
        Ok(Self {
            settings: Settings {
                kind,
                serializable: load.serializable,
                read_ratio: load.read_ratio,
                range_size: load.range_size,
                request_timeout: load.request_timeout,
                clients: load.clients,
            },
            load: load.clone(),
            endpoints: endpoints.to_vec(),
            dial_timeout,
            connection: connection.clone(),
            security: security.clone(),
            total,
        })
    }
}

/// What the workers share.
struct Shared {
    keys: KeySpace,
    issued: AtomicU64,
    done: AtomicU64,
    total: u64,
    start: Instant,
    deadline: Option<Instant>,
    /// Pause between two operations' earliest starts (rate limit).
    interval: Option<Duration>,
    request_timeout: Duration,
}

impl Shared {
    /// The next operation's number, or `None` once the run is over.
    fn next(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }
}

/// Runs the plan and returns its summary.
pub async fn run(plan: &Plan) -> Result<Summary, CtlError> {
    let load = &plan.load;
    // One client dials every connection (TLS as the flags say) and holds
    // the one auth token they all send.
    let client = Client::with_security(plan.connection.clone(), plan.security.clone())
        .map_err(|e| CtlError::bad_args(e.to_string()))?;
    client
        .authenticate()
        .await
        .map_err(|e| CtlError::new(crate::error::ExitCode::BadConnection, e.to_string()))?;
    let endpoints: Vec<usize> = match load.target {
        Target::All => (0..plan.endpoints.len()).collect(),
        Target::Leader => vec![leader(plan, &client).await?],
    };
    let mut channels = Vec::with_capacity(load.conns);
    for i in 0..load.conns {
        channels.push(connect(&client, endpoints[i % endpoints.len()]).await?);
    }
    let mut workers = start_workers(plan, &channels).await?;
    let keys = KeySpace::new(
        load.key_size,
        load.key_space,
        load.sequential_keys,
        load.val_size,
    );
    if plan.settings.kind == Kind::TxnPut {
        let revisions = key_revisions(channels[0].clone(), &keys)
            .await
            .map_err(|e| {
                CtlError::failed(format!(
                    "reading the key space's revisions: code = {} desc = {}",
                    e.code, e.message
                ))
            })?;
        for worker in &mut workers {
            worker.learn_revisions(&keys, &revisions);
        }
    }

    let start = Instant::now();
    let shared = Arc::new(Shared {
        keys,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        total: plan.total,
        start,
        deadline: load.duration.map(|d| start + d),
        interval: (load.rate > 0).then(|| Duration::from_secs_f64(1.0 / load.rate as f64)),
        request_timeout: load.request_timeout,
    });
    let bar = progress_bar(plan);
    let mut tasks = JoinSet::new();
    for worker in workers {
        let shared = Arc::clone(&shared);
        tasks.spawn(drive(worker, shared));
    }
    let ticker = {
        let shared = Arc::clone(&shared);
        let bar = bar.clone();
        let timed = plan.load.total.is_none() && plan.load.duration.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if timed {
                    bar.set_position(shared.start.elapsed().as_millis() as u64);
                } else {
                    bar.set_position(shared.done.load(Ordering::Relaxed));
                }
            }
        })
    };
    let mut recorded = Recorder::new();
    let mut finished = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (worker, recorder) =
            joined.map_err(|e| CtlError::failed(format!("a bench worker failed: {e}")))?;
        recorded.merge(&recorder);
        finished.push(worker);
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    for worker in finished {
        worker.finish().await;
    }
    Ok(Summary {
        workload: plan.settings.kind.name().to_string(),
        label: load.label.clone(),
        endpoints: endpoints
            .iter()
            .map(|&i| plan.endpoints[i].clone())
            .collect(),
        clients: load.clients,
        conns: load.conns,
        serializable: load.serializable,
        key_size: load.key_size,
        val_size: load.val_size,
        key_space: load.key_space,
        rate: load.rate,
        elapsed,
        recorded,
    })
}

/// One worker's loop: take an operation number, wait for the rate limit,
/// run and time the operation.
async fn drive(mut worker: Worker, shared: Arc<Shared>) -> (Worker, Recorder) {
    let mut recorder = Recorder::new();
    while let Some(n) = shared.next() {
        if let Some(interval) = shared.interval {
            let at = shared.start + interval.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            tokio::time::sleep_until(at).await;
            if shared.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let began = Instant::now();
        let result = tokio::time::timeout(shared.request_timeout, worker.op(&shared.keys)).await;
        match result {
            Ok(Ok(outcome)) => {
                recorder.ok(began.elapsed());
                recorder.conflicts += u64::from(outcome.conflict);
            }
            Ok(Err(error)) => recorder.error(error),
            Err(_) => recorder.error(OpError {
                code: "DeadlineExceeded".into(),
                message: format!(
                    "no answer within --request-timeout {:?}",
                    shared.request_timeout
                ),
            }),
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    (worker, recorder)
}

/// The mod revision of every key of the key space that exists, read in
/// pages (keys only) before a txn-put run, so that its compares test
/// concurrent writers rather than what the run has not read yet.
async fn key_revisions(channel: Channel, keys: &KeySpace) -> Result<HashMap<u64, i64>, OpError> {
    const PAGE: i64 = 10_000;
    let mut kv = KvClient::new(channel);
    let mut revisions = HashMap::new();
    let mut from = keys.key(0);
    let end = keys
        .key(keys.size.saturating_sub(1))
        .into_iter()
        .chain(std::iter::once(0))
        .collect::<Vec<u8>>();
    loop {
        let page = kv
            .range(pb::RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: PAGE,
                keys_only: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        for found in &page.kvs {
            if let Some(index) = keys.index_of(&found.key) {
                revisions.insert(index, found.mod_revision);
            }
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.iter().copied().chain(std::iter::once(0)).collect();
            }
            _ => return Ok(revisions),
        }
    }
}

async fn start_workers(plan: &Plan, channels: &[Channel]) -> Result<Vec<Worker>, CtlError> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut starting = JoinSet::new();
    for index in 0..plan.load.clients {
        let channel = channels[index % channels.len()].clone();
        let settings = plan.settings;
        starting.spawn(async move { Worker::start(settings, index, channel, seed).await });
    }
    let mut workers = Vec::with_capacity(plan.load.clients);
    while let Some(joined) = starting.join_next().await {
        let worker = joined
            .map_err(|e| CtlError::failed(format!("a bench worker failed to start: {e}")))?
            .map_err(|e| {
                CtlError::failed(format!(
                    "a bench worker failed to start: code = {} desc = {}",
                    e.code, e.message
                ))
            })?;
        workers.push(worker);
    }
    Ok(workers)
}

/// A new connection of its own to endpoint `index` (bench spreads its
/// load over `--conns` connections, so none is shared with another).
async fn connect(client: &Client, index: usize) -> Result<Channel, CtlError> {
    client
        .dial(index)
        .await
        .map_err(|e| CtlError::failed(e.message().to_string()))
}

/// The index of the leader's endpoint, by asking each endpoint's Status.
async fn leader(plan: &Plan, client: &Client) -> Result<usize, CtlError> {
    for index in 0..plan.endpoints.len() {
        let Ok(channel) = connect(client, index).await else {
            continue;
        };
        let status = tokio::time::timeout(
            plan.load.request_timeout,
            MaintenanceClient::new(channel).status(pb::StatusRequest {}),
        )
        .await;
        if let Ok(Ok(resp)) = status {
            let resp = resp.into_inner();
            if resp.leader != 0 && resp.header.is_some_and(|h| h.member_id == resp.leader) {
                return Ok(index);
            }
        }
    }
    Err(CtlError::failed("no endpoint is the leader"))
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    let shown = !plan.load.json && std::io::stderr().is_terminal();
    if !shown {
        return ProgressBar::hidden();
    }
    let timed = plan.load.total.is_none() && plan.load.duration.is_some();
    let (length, template) = match (timed, plan.load.duration) {
        (true, Some(d)) => (
            d.as_millis() as u64,
            "{spinner} {elapsed_precise} [{bar:40}] {percent}% of the duration",
        ),
        _ => (
            plan.total,
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} ops ({per_sec})",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
