//! The connection to a cluster: endpoints, timeouts, retries and the request
//! ids that make retried writes exactly-once.
//!
//! A [`Client`] holds one lazily dialled gRPC channel per endpoint. Every
//! unary call goes through [`Client::unary`], which runs attempts until one
//! succeeds, a non-retriable error comes back, or `--command-timeout` runs
//! out:
//!
//! ```text
//!  attempt 1 ──▶ endpoint A ──✗ Unavailable / timeout / connection lost
//!     backoff (doubling, bounded)
//!  attempt 2 ──▶ endpoint B ──✓ answer        (same RequestId on a write)
//! ```
//!
//! A write carries a [`RequestId`] as gRPC metadata (`raftkv-client-id`,
//! `raftkv-sequence`); the id is chosen once per logical request, before the
//! first attempt, and every retry sends the same one. A raftkv server that
//! already applied it answers with the first outcome instead of applying it
//! again, so a write whose answer was lost is never applied twice. etcd
//! ignores the metadata: against etcd a retried write is at-least-once.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{status_message, ClientError};

/// Metadata key of the client id (raftkv's exactly-once protocol).
pub const CLIENT_ID_METADATA: &str = "raftkv-client-id";
/// Metadata key of the per-request sequence number.
pub const SEQUENCE_METADATA: &str = "raftkv-sequence";

/// How failed attempts are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Longest a single attempt may take before it is abandoned and retried
    /// elsewhere (never longer than what is left of the command timeout).
    pub attempt_timeout: Duration,
    /// Pause after the first failed attempt; doubled after each failure.
    pub backoff_initial: Duration,
    /// Longest pause between two attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(25),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// Where to reach the cluster and how long to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// `host:port` or `http://host:port`, tried in turn.
    pub endpoints: Vec<String>,
    /// Longest wait to open a connection to one endpoint (`--dial-timeout`).
    pub dial_timeout: Duration,
    /// Longest a whole command may take, retries included
    /// (`--command-timeout`).
    pub command_timeout: Duration,
    /// Retry pacing.
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientConfig {
    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::Endpoint("no endpoints given".into()));
        }
        for endpoint in &self.endpoints {
            endpoint_uri(endpoint)?;
        }
        let zero = |d: Duration, name: &str| {
            if d.is_zero() {
                Err(ClientError::Endpoint(format!("{name} must be positive")))
            } else {
                Ok(())
            }
        };
        zero(self.dial_timeout, "--dial-timeout")?;
        zero(self.command_timeout, "--command-timeout")?;
        zero(self.retry.attempt_timeout, "--attempt-timeout")?;
        Ok(())
    }
}

/// The id of one logical write: the same on every retry of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// Random, non-zero, one per client process.
    pub client_id: u64,
    /// Increasing per request.
    pub sequence: u64,
}

/// Which endpoints a call may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any endpoint, moving to the next after a retriable failure.
    Any,
    /// Only this one (by index into the endpoints), as for per-member
    /// commands such as `endpoint status`.
    One(usize),
}

/// A connection to a cluster. Cheap to share by reference across tasks.
pub struct Client {
    config: ClientConfig,
    client_id: u64,
    sequence: AtomicU64,
    /// Index of the endpoint the next attempt goes to.
    current: AtomicUsize,
    channels: Mutex<Vec<Option<Channel>>>,
}

impl Client {
    /// A client with a random client id.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_client_id(config, random_client_id())
    }

    /// A client with the given non-zero client id (a caller that persists
    /// its id across restarts keeps exactly-once across them too).
    pub fn with_client_id(config: ClientConfig, client_id: u64) -> Result<Self, ClientError> {
        config.validate()?;
        if client_id == 0 {
            return Err(ClientError::Endpoint("the client id must not be 0".into()));
        }
        let channels = Mutex::new(vec![None; config.endpoints.len()]);
        Ok(Self {
            config,
            client_id,
            sequence: AtomicU64::new(0),
            current: AtomicUsize::new(0),
            channels,
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.config.endpoints
    }

    /// This client's id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// A fresh id for a new write (never for a retry of an earlier one).
    pub fn next_request_id(&self) -> RequestId {
        RequestId {
            client_id: self.client_id,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Runs a unary call until it succeeds, fails for good, or the command
    /// timeout runs out. `call` gets a channel and builds its request (with
    /// [`request`]) on each attempt; `id` is attached to every attempt.
    pub async fn unary<T, F, Fut>(
        &self,
        target: Target,
        id: Option<RequestId>,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Option<RequestId>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.command_timeout;
        let mut backoff = self.config.retry.backoff_initial;
        let mut last: Option<String> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(?last, "command timeout reached");
                return Err(ClientError::DeadlineExceeded { last });
            }
            let index = self.pick(target);
            let remaining = deadline - now;
            let attempt = async {
                let channel = self.channel(index, remaining).await?;
                call(channel, id).await
            };
            let limit = remaining.min(self.config.retry.attempt_timeout);
            let failure = match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if is_retriable(&status) => status_message(&status),
                Ok(Err(status)) => return Err(ClientError::Status(status)),
                Err(_) => format!("attempt timed out after {limit:?}"),
            };
            tracing::debug!(
                endpoint = %self.config.endpoints[index],
                sequence = id.map(|i| i.sequence),
                %failure,
                "retrying"
            );
            last = Some(failure);
            self.forget(index);
            if target == Target::Any {
                self.advance(index);
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.config.retry.backoff_max);
        }
    }

    /// Runs a call that must not be repeated once sent (membership changes,
    /// leadership transfer, defragmentation): endpoints are tried until one
    /// accepts a connection, then the call is made once, within what is
    /// left of the command timeout.
    pub async fn unary_once<T, F, Fut>(&self, target: Target, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.command_timeout;
        let (index, channel) = self.stream_channel(target).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, call(channel)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                if is_retriable(&status) {
                    self.forget(index);
                }
                Err(ClientError::Status(status))
            }
            Err(_) => Err(ClientError::DeadlineExceeded {
                last: Some("the call timed out".into()),
            }),
        }
    }

    /// A connected channel to some endpoint, for streams (watch, keep-alive,
    /// snapshot), trying each in turn until the command timeout.
    pub async fn stream_channel(&self, target: Target) -> Result<(usize, Channel), ClientError> {
        let deadline = Instant::now() + self.config.command_timeout;
        let mut backoff = self.config.retry.backoff_initial;
        let mut last = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::DeadlineExceeded { last });
            }
            let index = self.pick(target);
            match self.channel(index, deadline - now).await {
                Ok(channel) => return Ok((index, channel)),
                Err(status) => last = Some(status_message(&status)),
            }
            if target == Target::Any {
                self.advance(index);
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.config.retry.backoff_max);
        }
    }

    fn pick(&self, target: Target) -> usize {
        match target {
            Target::Any => self.current.load(Ordering::Relaxed) % self.config.endpoints.len(),
            Target::One(index) => index.min(self.config.endpoints.len() - 1),
        }
    }

    fn advance(&self, from: usize) {
        let next = (from + 1) % self.config.endpoints.len();
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Drops a channel after a failure, so the next attempt dials afresh
    /// rather than waiting on a connection that may be dead.
    fn forget(&self, index: usize) {
        if let Ok(mut channels) = self.channels.lock() {
            if let Some(slot) = channels.get_mut(index) {
                *slot = None;
            }
        }
    }

    async fn channel(&self, index: usize, remaining: Duration) -> Result<Channel, Status> {
        let cached = self
            .channels
            .lock()
            .ok()
            .and_then(|channels| channels.get(index).cloned().flatten());
        if let Some(channel) = cached {
            return Ok(channel);
        }
        let endpoint = &self.config.endpoints[index];
        let uri = endpoint_uri(endpoint).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dial = self.config.dial_timeout.min(remaining);
        let builder = Endpoint::from_shared(uri)
            .map_err(|e| Status::invalid_argument(format!("endpoint {endpoint}: {e}")))?
            .connect_timeout(dial)
            .tcp_nodelay(true);
        let channel = match tokio::time::timeout(dial, builder.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => {
                return Err(Status::unavailable(format!(
                    "connecting to {endpoint}: {err}"
                )))
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "connecting to {endpoint}: no answer within {dial:?}"
                )))
            }
        };
        if let Ok(mut channels) = self.channels.lock() {
            if let Some(slot) = channels.get_mut(index) {
                *slot = Some(channel.clone());
            }
        }
        Ok(channel)
    }
}

/// A request carrying `id` as raftkv's exactly-once metadata.
pub fn request<M>(message: M, id: Option<RequestId>) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = id {
        let metadata = request.metadata_mut();
        metadata.insert(CLIENT_ID_METADATA, MetadataValue::from(id.client_id));
        metadata.insert(SEQUENCE_METADATA, MetadataValue::from(id.sequence));
    }
    request
}

/// Whether a failed attempt may be sent again (to the next endpoint): the
/// cluster was unavailable or between leaders, the attempt timed out, or
/// the connection dropped. Any other error is the answer.
pub fn is_retriable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        Code::FailedPrecondition => status.message() == "etcdserver: not leader",
        // A connection that drops mid-call surfaces as a transport error.
        Code::Unknown | Code::Cancelled | Code::Internal => {
            let message = status.message().to_ascii_lowercase();
            // "operation was canceled" is hyper's word for a request whose
            // connection closed under it (a member that died, or a proxy
            // in front of one that is down).
            [
                "transport error",
                "connection",
                "broken pipe",
                "reset",
                "operation was canceled",
            ]
            .iter()
            .any(|needle| message.contains(needle))
                && !message.contains("rst_stream")
        }
        _ => false,
    }
}

/// `http://host:port` for an endpoint given as `host:port` or a URL.
fn endpoint_uri(endpoint: &str) -> Result<String, ClientError> {
    if endpoint.starts_with("https://") {
        return Err(ClientError::Endpoint(format!(
            "endpoint {endpoint}: TLS is not supported by raftkvctl"
        )));
    }
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    if rest.is_empty() || rest.contains("://") {
        return Err(ClientError::Endpoint(format!(
            "endpoint {endpoint:?} is not host:port or http://host:port"
        )));
    }
    Ok(format!("http://{rest}"))
}

/// A random non-zero id, from the per-process random keys the standard
/// library seeds from the operating system, mixed with the time and pid.
fn random_client_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_host_port_and_http_urls_only() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri("http://a:1").unwrap(), "http://a:1");
        assert!(endpoint_uri("https://a:1").is_err());
        assert!(endpoint_uri("").is_err());
    }

    #[test]
    fn retriable_errors_are_the_unavailable_kinds() {
        assert!(is_retriable(&Status::unavailable(
            "etcdserver: leader changed"
        )));
        assert!(is_retriable(&Status::unavailable(
            "etcdserver: request timed out"
        )));
        assert!(is_retriable(&Status::unavailable("etcdserver: no leader")));
        assert!(is_retriable(&Status::failed_precondition(
            "etcdserver: not leader"
        )));
        assert!(is_retriable(&Status::deadline_exceeded("deadline")));
        assert!(is_retriable(&Status::unknown("transport error")));
        assert!(is_retriable(&Status::cancelled("operation was canceled")));
        assert!(!is_retriable(&Status::invalid_argument(
            "etcdserver: key not found"
        )));
        assert!(!is_retriable(&Status::failed_precondition(
            "etcdserver: bad leader transferee"
        )));
        assert!(!is_retriable(&Status::internal(
            "stream terminated by RST_STREAM with error code: PROTOCOL_ERROR"
        )));
    }

    #[test]
    fn request_ids_increase_and_carry_the_client_id() {
        let client = Client::with_client_id(ClientConfig::default(), 7).unwrap();
        let a = client.next_request_id();
        let b = client.next_request_id();
        assert_eq!((a.client_id, b.client_id), (7, 7));
        assert!(b.sequence > a.sequence);
        let req = request((), Some(a));
        assert_eq!(req.metadata().get(CLIENT_ID_METADATA).unwrap(), "7");
        assert_eq!(
            req.metadata().get(SEQUENCE_METADATA).unwrap(),
            a.sequence.to_string().as_str()
        );
    }

    #[test]
    fn a_zero_client_id_and_empty_settings_are_refused() {
        assert!(Client::with_client_id(ClientConfig::default(), 0).is_err());
        let mut config = ClientConfig::default();
        config.endpoints.clear();
        assert!(config.validate().is_err());
        let config = ClientConfig {
            command_timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
