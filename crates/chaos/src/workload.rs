//! Client workers: concurrent operations on independent keys, each recorded
//! with its invocation and completion time for the linearizability check.
//!
//! Register keys get reads, writes and compare-and-sets; list keys get
//! appends (a read, then a txn that writes the longer list only if the key's
//! mod revision is still the one read) and reads of the whole list. Every
//! value written is unique, so a write applied twice or lost shows.
//!
//! Outcomes follow Jepsen's rules: a read that failed had no effect and is
//! recorded as failed; a write that failed or timed out may have been
//! applied and is recorded as unknown. A compare that did not hold is a
//! completed operation, not a failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv_check::history::{Input, Operation, Outcome, Output};
use raftkv_ctl::client::{request, Client, ClientConfig, RetryPolicy, Security, Target};
use raftkv_ctl::error::ClientError;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// The clock every operation of a history is timed by.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Recorder {
    /// A history starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        })
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Adds a finished operation.
    pub fn record(&self, operation: Operation) {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(operation);
    }

    /// Everything recorded, in completion order.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How the workers behave.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent workers (each a client with its own id).
    pub workers: usize,
    /// Register keys.
    pub register_keys: usize,
    /// List keys.
    pub list_keys: usize,
    /// Prefix of every key (keeps runs apart).
    pub prefix: String,
    /// Longest one operation may take, retries included.
    pub op_timeout: Duration,
    /// Reads with `serializable` (stale reads allowed): only for showing
    /// that the checker catches them.
    pub serializable_reads: bool,
    /// Retry writes with the same request id (raftkv's exactly-once). Off
    /// against servers that would apply a retry twice (etcd).
    pub retry_writes: bool,
    /// Most operations per worker.
    pub max_ops_per_worker: usize,
    /// Pause between a worker's operations.
    pub think_time: Duration,
    /// Each worker talks to one member only, and stays with it through its
    /// faults (instead of moving on to the next member).
    pub pin_workers: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            workers: 6,
            register_keys: 8,
            list_keys: 4,
            prefix: "chaos/".into(),
            op_timeout: Duration::from_secs(6),
            serializable_reads: false,
            retry_writes: true,
            max_ops_per_worker: 100_000,
            think_time: Duration::from_millis(2),
            pin_workers: false,
        }
    }
}

impl WorkloadConfig {
    /// The name of register key `k`.
    pub fn register_key(&self, k: usize) -> String {
        format!("{}r{k:03}", self.prefix)
    }

    /// The name of list key `k`.
    pub fn list_key(&self, k: usize) -> String {
        format!("{}l{k:03}", self.prefix)
    }

    /// Every key the workload uses.
    pub fn keys(&self) -> Vec<String> {
        (0..self.register_keys)
            .map(|k| self.register_key(k))
            .chain((0..self.list_keys).map(|k| self.list_key(k)))
            .collect()
    }
}

/// One worker: a client and its own view of the keys.
pub struct Worker {
    id: u64,
    client: Client,
    /// Whether it presents credentials (auth on).
    authenticates: bool,
    config: WorkloadConfig,
    recorder: Arc<Recorder>,
    rng: SmallRng,
    sequence: u64,
}

/// Most read-then-txn rounds one append tries before giving up.
const APPEND_ATTEMPTS: usize = 8;

impl Worker {
    /// Worker `id` talking to `endpoints`, trying them in the order given.
    pub fn new(
        id: u64,
        endpoints: Vec<String>,
        config: WorkloadConfig,
        recorder: Arc<Recorder>,
        seed: u64,
        security: Security,
    ) -> Result<Self, ClientError> {
        let rng = SmallRng::seed_from_u64(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let authenticates = security.credentials.is_some();
        let client = Client::with_security(
            ClientConfig {
                endpoints,
                dial_timeout: Duration::from_secs(1),
                command_timeout: config.op_timeout,
                retry: RetryPolicy {
                    attempt_timeout: Duration::from_millis(1500),
                    backoff_initial: Duration::from_millis(20),
                    backoff_max: Duration::from_millis(300),
                },
            },
            security,
        )?;
        Ok(Self {
            id,
            authenticates,
            client,
            config,
            recorder,
            rng,
            sequence: 0,
        })
    }

    /// Runs random operations until `deadline` or the operation budget.
    pub async fn run_until(&mut self, deadline: Instant) -> usize {
        let mut done = 0;
        while Instant::now() < deadline && done < self.config.max_ops_per_worker {
            // With auth on, a worker without a token (its first try met a
            // fault) gets one before its next operation.
            if self.authenticates && !self.client.has_token() {
                let _ = self.client.authenticate().await;
            }
            self.random_operation().await;
            done += 1;
            if !self.config.think_time.is_zero() {
                tokio::time::sleep(self.config.think_time).await;
            }
        }
        done
    }

    async fn random_operation(&mut self) {
        let registers = self.config.register_keys;
        let lists = self.config.list_keys;
        let pick = self.rng.gen_range(0..registers + lists);
        if pick < registers {
            let key = self.config.register_key(pick);
            match self.rng.gen_range(0..10) {
                0..=3 => {
                    self.read(&key).await;
                }
                4..=7 => {
                    let value = self.fresh_value();
                    self.write(&key, value).await;
                }
                _ => {
                    // Compare against what this worker read last, or
                    // absent: both succeed and fail often enough.
                    let expected = match self.rng.gen_bool(0.2) {
                        true => None,
                        false => self.peek(&key).await,
                    };
                    let new = self.fresh_value();
                    self.cas(&key, expected, new).await;
                }
            }
        } else {
            let key = self.config.list_key(pick - registers);
            if self.rng.gen_bool(0.6) {
                let value = self.fresh_value();
                self.append(&key, value).await;
            } else {
                self.read_list(&key).await;
            }
        }
    }

    fn fresh_value(&mut self) -> String {
        self.sequence += 1;
        format!("w{}-{}", self.id, self.sequence)
    }

    fn finish(&self, key: &str, input: Input, invoke_ns: u64, outcome: Outcome) {
        let complete_ns = match outcome {
            Outcome::Unknown => None,
            _ => Some(self.recorder.now_ns()),
        };
        self.recorder.record(Operation {
            process: self.id,
            key: key.to_string(),
            input,
            invoke_ns,
            complete_ns,
            outcome,
        });
    }

    /// A read of `key` as the workload reads (serializable if configured).
    fn range_request(&self, key: &str) -> pb::RangeRequest {
        range_of(key, self.config.serializable_reads)
    }

    /// A value read outside the history (to choose a CAS's expectation).
    async fn peek(&self, key: &str) -> Option<String> {
        let response = self.client.range(self.range_request(key)).await.ok()?;
        response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// A recorded register read.
    pub async fn read(&self, key: &str) -> Option<Option<String>> {
        let invoke = self.recorder.now_ns();
        let result = self.client.range(self.range_request(key)).await;
        match result {
            Ok(response) => {
                let value = response
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                self.finish(
                    key,
                    Input::Read,
                    invoke,
                    Outcome::Ok(Output::Read {
                        value: value.clone(),
                    }),
                );
                Some(value)
            }
            Err(_) => {
                self.finish(key, Input::Read, invoke, Outcome::Fail);
                None
            }
        }
    }

    /// A recorded register write; its put response on success.
    pub async fn write(&self, key: &str, value: String) -> Option<pb::PutResponse> {
        let invoke = self.recorder.now_ns();
        let put = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        };
        let result = if self.config.retry_writes {
            self.client.put(put, self.client.next_request_id()).await
        } else {
            self.client
                .unary_once(Target::Any, |ch| async move {
                    KvClient::new(ch).put(request(put, None)).await
                })
                .await
        };
        let input = Input::Write { value };
        match result {
            Ok(response) => {
                self.finish(key, input, invoke, Outcome::Ok(Output::Write));
                Some(response)
            }
            Err(err) => {
                tracing::debug!(worker = self.id, key, %err, "write failed; outcome unknown");
                self.finish(key, input, invoke, Outcome::Unknown);
                None
            }
        }
    }

    async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        if self.config.retry_writes {
            self.client
                .txn(txn, Some(self.client.next_request_id()))
                .await
        } else {
            self.client
                .unary_once(Target::Any, |ch| async move {
                    KvClient::new(ch).txn(request(txn, None)).await
                })
                .await
        }
    }

    /// A recorded compare-and-set.
    pub async fn cas(&self, key: &str, expected: Option<String>, new: String) {
        let invoke = self.recorder.now_ns();
        let compare = match &expected {
            // An absent key has create revision 0.
            None => pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Create as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                ..Default::default()
            },
            Some(value) => pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Value as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(pb::compare::TargetUnion::Value(value.as_bytes().to_vec())),
                ..Default::default()
            },
        };
        let txn = pb::TxnRequest {
            compare: vec![compare],
            success: vec![put_op(key, &new)],
            failure: vec![],
        };
        let result = self.txn(txn).await;
        let input = Input::Cas { expected, new };
        let outcome = match result {
            Ok(response) => Outcome::Ok(Output::Cas {
                succeeded: response.succeeded,
            }),
            Err(_) => Outcome::Unknown,
        };
        self.finish(key, input, invoke, outcome);
    }

    /// A recorded list append.
    pub async fn append(&self, key: &str, value: String) {
        let invoke = self.recorder.now_ns();
        let input = Input::Append {
            value: value.clone(),
        };
        let Ok(first) = self.client.range(range_of(key, false)).await else {
            self.finish(key, input, invoke, Outcome::Fail);
            return;
        };
        let mut current = first.kvs.first().cloned();
        for _ in 0..APPEND_ATTEMPTS {
            let mod_revision = current.as_ref().map_or(0, |kv| kv.mod_revision);
            let mut list = current
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                .unwrap_or_default();
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(&value);
            let txn = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Mod as i32,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(pb::compare::TargetUnion::ModRevision(mod_revision)),
                    ..Default::default()
                }],
                success: vec![put_op(key, &list)],
                failure: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(range_of(key, false))),
                }],
            };
            match self.txn(txn).await {
                Ok(response) if response.succeeded => {
                    self.finish(key, input, invoke, Outcome::Ok(Output::Append));
                    return;
                }
                Ok(response) => {
                    current = response
                        .responses
                        .into_iter()
                        .find_map(|r| match r.response {
                            Some(pb::response_op::Response::ResponseRange(range)) => {
                                range.kvs.into_iter().next()
                            }
                            _ => None,
                        });
                }
                Err(_) => {
                    self.finish(key, input, invoke, Outcome::Unknown);
                    return;
                }
            }
        }
        // Every attempt's compare failed: nothing was written.
        self.finish(key, input, invoke, Outcome::Fail);
    }

    /// A recorded read of a whole list.
    pub async fn read_list(&self, key: &str) -> Option<Vec<String>> {
        let invoke = self.recorder.now_ns();
        match self.client.range(self.range_request(key)).await {
            Ok(response) => {
                let values = response
                    .kvs
                    .first()
                    .map(|kv| split_list(&kv.value))
                    .unwrap_or_default();
                self.finish(
                    key,
                    Input::ReadList,
                    invoke,
                    Outcome::Ok(Output::ReadList {
                        values: values.clone(),
                    }),
                );
                Some(values)
            }
            Err(_) => {
                self.finish(key, Input::ReadList, invoke, Outcome::Fail);
                None
            }
        }
    }

    /// Reads every key once (recorded), as the last operations of a run.
    pub async fn read_everything(&self) {
        for k in 0..self.config.register_keys {
            self.read(&self.config.register_key(k)).await;
        }
        for k in 0..self.config.list_keys {
            self.read_list(&self.config.list_key(k)).await;
        }
    }
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// A range request for `key` alone.
fn range_of(key: &str, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    }
}

/// The values of a list as stored (comma separated).
pub fn split_list(stored: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stored);
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',').map(str::to_string).collect()
}
