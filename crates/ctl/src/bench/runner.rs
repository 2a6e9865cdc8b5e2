//! Runs a workload: connections, concurrent workers, the rate limit, the
//! stop condition and the progress bar.
//!
//! `--clients` workers share `--conns` gRPC connections (worker `i` uses
//! connection `i % conns`, connection `j` goes to endpoint `j % endpoints`).
//! Each worker takes an operation number from one shared counter before
//! each operation and stops when it reaches `--total` or `--duration` has
//! passed (or, with `--stop-on-nospace`, at the first NOSPACE), so the run
//! ends by itself. With `--rate`, operation `n` is not sent before
//! `start + n / rate`. A keep-alive run grants its leases before the clock
//! starts and revokes them after it stops.

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::client::{Client, ClientConfig, Conn as Channel, Security};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::stats::{Recorder, Summary};
use super::workload::{KeySpace, Kind, Leases, OpError, Settings, ValueSizes, Worker};
use super::{LoadArgs, Target};
use crate::error::CtlError;

/// Operations when neither `--total` nor `--duration` is given.
const DEFAULT_TOTAL: u64 = 10_000;
/// Most clients one run may have (each is a task, some hold streams).
const CLIENTS_MAX: usize = 10_000;
/// Most leases a keep-alive run may grant.
const LEASES_MAX: usize = 1_000_000;
/// Largest value: one buffer of it is held for the run.
const VAL_SIZE_MAX: usize = 64 << 20;
/// TTL of the leases a keep-alive run grants, in seconds: far longer than
/// the pause between two renewals of one lease in any run worth measuring.
const LEASE_TTL: i64 = 60;

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
    /// The size of each value.
    pub value_sizes: ValueSizes,
    /// Seed of the workers' random choices and the value sizes.
    pub seed: u64,
    /// Leases to grant and keep alive (0 unless `lease-keepalive`).
    pub leases: usize,
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
        let value_sizes = match (load.val_size_min, load.val_size_max) {
            (Some(min), Some(max)) => {
                if min == 0 || min > max || max > VAL_SIZE_MAX {
                    return Err(CtlError::bad_args(format!(
                        "--val-size-min and --val-size-max must be 1 <= min <= max <= {VAL_SIZE_MAX}"
                    )));
                }
                ValueSizes::LogUniform { min, max, seed: 0 }
            }
            (None, None) if load.val_size <= VAL_SIZE_MAX => ValueSizes::Fixed(load.val_size),
            (None, None) => {
                return Err(CtlError::bad_args(format!(
                    "--val-size must be at most {VAL_SIZE_MAX}"
                )))
            }
            _ => {
                return Err(CtlError::bad_args(
                    "--val-size-min and --val-size-max go together",
                ))
            }
        };
        let leases = match (kind, load.leases) {
            (Kind::LeaseKeepalive, None) => load.clients,
            (Kind::LeaseKeepalive, Some(n)) if (1..=LEASES_MAX).contains(&n) => n,
            (Kind::LeaseKeepalive, Some(_)) => {
                return Err(CtlError::bad_args(format!(
                    "--leases must be between 1 and {LEASES_MAX}"
                )))
            }
            (_, None) => 0,
            (_, Some(_)) => {
                return Err(CtlError::bad_args(format!(
                    "--leases does not apply to {}",
                    kind.name()
                )))
            }
        };
        let seed = load.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let value_sizes = match value_sizes {
            ValueSizes::LogUniform { min, max, .. } => ValueSizes::LogUniform { min, max, seed },
            fixed => fixed,
        };
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
            value_sizes,
            seed,
            leases,
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
    /// Key and value bytes of the writes acknowledged so far.
    written: AtomicU64,
    /// Whether a NOSPACE ends the run.
    stop_on_nospace: bool,
    /// Set by the first NOSPACE when it ends the run.
    stopped: AtomicBool,
    /// `written` when the first NOSPACE arrived.
    nospace_at: OnceLock<u64>,
}

impl Shared {
    /// The next operation's number, or `None` once the run is over.
    fn next(&self) -> Option<u64> {
        if self.stopped.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }

    /// Notes a failed operation: the first NOSPACE records the bytes
    /// written until then and, with `--stop-on-nospace`, ends the run.
    fn failed(&self, error: &OpError) {
        if error.is_nospace() {
            self.nospace_at
                .get_or_init(|| self.written.load(Ordering::Relaxed));
            if self.stop_on_nospace {
                self.stopped.store(true, Ordering::Relaxed);
            }
        }
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
    let leases = grant_leases(&channels, plan.leases, load.request_timeout)
        .await
        .map_err(|e| op_failed("granting the leases to keep alive", &e))?;
    let leases = Arc::new(leases);
    let mut workers = start_workers(plan, &channels, &leases).await?;
    let keys = KeySpace::new(
        load.key_size,
        load.key_space,
        load.sequential_keys,
        plan.value_sizes,
    );
    if plan.settings.kind == Kind::TxnPut {
        let revisions = key_revisions(channels[0].clone(), &keys)
            .await
            .map_err(|e| op_failed("reading the key space's revisions", &e))?;
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
        written: AtomicU64::new(0),
        stop_on_nospace: load.stop_on_nospace,
        stopped: AtomicBool::new(false),
        nospace_at: OnceLock::new(),
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
    while let Some(joined) = tasks.join_next().await {
        let recorder =
            joined.map_err(|e| CtlError::failed(format!("a bench worker failed: {e}")))?;
        recorded.merge(&recorder);
    }
    let elapsed = start.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    // Best effort: a lease left behind expires after its TTL anyway.
    revoke_leases(&channels, leases.ids(), load.request_timeout).await;
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
        value_sizes: plan.value_sizes,
        seed: plan.seed,
        key_space: load.key_space,
        rate: load.rate,
        leases: plan.leases,
        written_bytes: shared.written.load(Ordering::Relaxed),
        nospace_at_bytes: shared.nospace_at.get().copied(),
        elapsed,
        recorded,
    })
}

/// One worker's loop: take an operation number, wait for the rate limit,
/// run and time the operation.
async fn drive(mut worker: Worker, shared: Arc<Shared>) -> Recorder {
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
                shared.written.fetch_add(outcome.written, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                shared.failed(&error);
                recorder.error(error);
            }
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
    recorder
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

/// A setup step's failure `e`, as the other commands word gRPC errors.
fn op_failed(what: &str, e: &OpError) -> CtlError {
    CtlError::failed(format!("{what}: code = {} desc = {}", e.code, e.message))
}

/// Grants `count` leases, one sequence of grants on each channel at once.
async fn grant_leases(
    channels: &[Channel],
    count: usize,
    timeout: Duration,
) -> Result<Leases, OpError> {
    let grant = move |mut lease: LeaseClient<Channel>, _: usize| async move {
        let req = pb::LeaseGrantRequest {
            ttl: LEASE_TTL,
            id: 0,
        };
        let answer = tokio::time::timeout(timeout, lease.lease_grant(req))
            .await
            .map_err(|_| OpError {
                code: "DeadlineExceeded".into(),
                message: "no lease grant answer in time".into(),
            })??;
        Ok(answer.into_inner().id)
    };
    let ids = on_channels(channels, (0..count).collect(), grant)
        .await
        .into_iter()
        .collect::<Result<Vec<i64>, OpError>>()?;
    if ids.len() != count {
        return Err(OpError {
            code: "Internal".into(),
            message: format!("{} of {count} leases granted", ids.len()),
        });
    }
    Ok(Leases::new(ids))
}

/// Revokes the leases `ids`, ignoring failures.
async fn revoke_leases(channels: &[Channel], ids: &[i64], timeout: Duration) {
    let revoke = move |mut lease: LeaseClient<Channel>, id: i64| async move {
        let req = pb::LeaseRevokeRequest { id };
        let _ = tokio::time::timeout(timeout, lease.lease_revoke(req)).await;
    };
    on_channels(channels, ids.to_vec(), revoke).await;
}

/// Runs `call` on each of `items`, item `i` on channel `i % channels`, the
/// channels at once and each one's items in turn; the results in no order.
async fn on_channels<T, R, F, Fut>(channels: &[Channel], items: Vec<T>, call: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(LeaseClient<Channel>, T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = R> + Send,
{
    let mut shares: Vec<Vec<T>> = channels.iter().map(|_| Vec::new()).collect();
    let count = shares.len().max(1);
    for (i, item) in items.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(i % count) {
            share.push(item);
        }
    }
    let mut tasks = JoinSet::new();
    for (channel, share) in channels.iter().zip(shares) {
        let (lease, call) = (LeaseClient::new(channel.clone()), call.clone());
        tasks.spawn(async move {
            let mut results = Vec::with_capacity(share.len());
            for item in share {
                results.push(call(lease.clone(), item).await);
            }
            results
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A task that panicked leaves its results out; callers count.
        if let Ok(done) = joined {
            results.extend(done);
        }
    }
    results
}

async fn start_workers(
    plan: &Plan,
    channels: &[Channel],
    leases: &Arc<Leases>,
) -> Result<Vec<Worker>, CtlError> {
    let seed = plan.seed;
    let mut starting = JoinSet::new();
    for index in 0..plan.load.clients {
        let channel = channels[index % channels.len()].clone();
        let (settings, leases) = (plan.settings, Arc::clone(leases));
        starting.spawn(async move { Worker::start(settings, index, channel, seed, leases).await });
    }
    let mut workers = Vec::with_capacity(plan.load.clients);
    while let Some(joined) = starting.join_next().await {
        let worker = joined
            .map_err(|e| CtlError::failed(format!("a bench worker failed to start: {e}")))?
            .map_err(|e| op_failed("a bench worker failed to start", &e))?;
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
