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
//!
//! With [`Credentials`] the client calls `Auth/Authenticate` before its
//! first request ([`Client::authenticate`]) and sends the token it gets as
//! the gRPC metadata `token` on every call. A call refused with `etcdserver:
//! invalid auth token` (the token expired, or the member restarted with
//! simple tokens) or `etcdserver: revision of auth store is old` makes the
//! client authenticate again and send the call once more, as etcd's Go
//! client does; a write keeps its `RequestId` through that too.
//!
//! TLS (see [`crate::tls`]) is chosen per endpoint by etcdctl's rules.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{status_message, ClientError};
use crate::tls::{ClientTls, TlsSettings};

/// Metadata key of the auth token (etcd's).
pub const TOKEN_METADATA: &str = "token";

/// etcd's answer to a token it no longer knows.
pub const INVALID_TOKEN: &str = "etcdserver: invalid auth token";
/// etcd's answer to a token older than the last auth change.
pub const OLD_AUTH_REVISION: &str = "etcdserver: revision of auth store is old";
/// etcd's answer to Authenticate while auth is disabled.
pub const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

/// A connection as the calls use it: a channel whose requests carry the
/// client's auth token, if it has one.
pub type Conn = InterceptedService<Channel, TokenInterceptor>;

/// A user name and password to authenticate with (`--user`, `--password`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Debug logs must never show a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Puts the current auth token, if any, on each request. Cloned into every
/// connection; all clones share the one token, so a refresh reaches them
/// all.
#[derive(Clone, Debug, Default)]
pub struct TokenInterceptor {
    token: Arc<RwLock<Option<AsciiMetadataValue>>>,
}

impl TokenInterceptor {
    /// Replaces the token (`None` to send none).
    pub fn set(&self, token: Option<AsciiMetadataValue>) {
        if let Ok(mut slot) = self.token.write() {
            *slot = token;
        }
    }

    /// Whether a token is held.
    pub fn is_set(&self) -> bool {
        self.token.read().is_ok_and(|slot| slot.is_some())
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Ok(slot) = self.token.read() {
            if let Some(token) = slot.as_ref() {
                request.metadata_mut().insert(TOKEN_METADATA, token.clone());
            }
        }
        Ok(request)
    }
}

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

/// How a client secures its connections and who it is: TLS and
/// credentials. Kept apart from [`ClientConfig`] so that code building a
/// `ClientConfig` field by field (the chaos harness) stays valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    /// TLS flags.
    pub tls: TlsSettings,
    /// Who to authenticate as; `None` (or an empty password, as etcd's
    /// client treats it) sends no token.
    pub credentials: Option<Credentials>,
}

impl Default for Security {
    /// Plaintext (unless an endpoint is `https://`), no user.
    fn default() -> Self {
        Self {
            tls: TlsSettings::plaintext(),
            credentials: None,
        }
    }
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
            endpoint_uri(endpoint, false)?;
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
    tls: ClientTls,
    credentials: Option<Credentials>,
    token: TokenInterceptor,
}

impl Client {
    /// A client with a random client id.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Self::with_client_id(config, random_client_id())
    }

    /// A client with the given non-zero client id (a caller that persists
    /// its id across restarts keeps exactly-once across them too).
    pub fn with_client_id(config: ClientConfig, client_id: u64) -> Result<Self, ClientError> {
        Self::with_options(config, Security::default(), client_id)
    }

    /// A client with TLS and credentials, and a random client id. Reads
    /// the TLS files now: an unusable one is an error here, not at the
    /// first call.
    pub fn with_security(config: ClientConfig, security: Security) -> Result<Self, ClientError> {
        Self::with_options(config, security, random_client_id())
    }

    /// A client with everything given.
    pub fn with_options(
        config: ClientConfig,
        security: Security,
        client_id: u64,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        if client_id == 0 {
            return Err(ClientError::Endpoint("the client id must not be 0".into()));
        }
        let channels = Mutex::new(vec![None; config.endpoints.len()]);
        let tls = ClientTls::new(&security.tls, &config.endpoints)?;
        Ok(Self {
            config,
            client_id,
            sequence: AtomicU64::new(0),
            current: AtomicUsize::new(0),
            channels,
            tls,
            credentials: security.credentials,
            token: TokenInterceptor::default(),
        })
    }

    /// The credentials that get a token, if any: etcd's client
    /// authenticates only with both a user name and a password.
    fn credentials(&self) -> Option<&Credentials> {
        self.credentials
            .as_ref()
            .filter(|c| !c.user.is_empty() && !c.password.is_empty())
    }

    /// Whether this client sends an auth token.
    pub fn has_token(&self) -> bool {
        self.token.is_set()
    }

    /// Gets an auth token with the configured credentials (a no-op without
    /// them), trying the endpoints in turn within `--dial-timeout`, as
    /// etcd's client does when it is created: the first endpoint that
    /// answers decides, except that a connection failure moves on to the
    /// next. Auth being disabled is not an error: no token is sent then.
    pub async fn authenticate(&self) -> Result<(), ClientError> {
        let Some(credentials) = self.credentials() else {
            return Ok(());
        };
        self.token.set(None);
        let deadline = Instant::now() + self.config.dial_timeout;
        let mut last = None;
        for index in 0..self.config.endpoints.len() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::DeadlineExceeded { last });
            }
            let attempt = async {
                let channel = self.raw_channel(index, remaining).await?;
                AuthClient::new(channel)
                    .authenticate(pb::AuthenticateRequest {
                        name: credentials.user.clone(),
                        password: credentials.password.clone(),
                    })
                    .await
            };
            let status = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(response)) => {
                    let token = response.into_inner().token;
                    let value = AsciiMetadataValue::try_from(token.as_str()).map_err(|_| {
                        ClientError::Endpoint("the server sent an unusable auth token".into())
                    })?;
                    tracing::debug!(user = %credentials.user, "authenticated");
                    self.token.set(Some(value));
                    return Ok(());
                }
                Ok(Err(status)) => status,
                Err(_) => return Err(ClientError::DeadlineExceeded { last }),
            };
            if status.message() == AUTH_NOT_ENABLED {
                tracing::debug!("auth is not enabled; no token");
                return Ok(());
            }
            if !is_retriable(&status) {
                return Err(ClientError::Status(status));
            }
            self.forget(index);
            last = Some(status_message(&status));
        }
        Err(ClientError::DeadlineExceeded { last })
    }

    /// For streams, which reopen themselves: if `status` refused the token
    /// as stale, gets a fresh one (so the reopened stream carries it) and
    /// says so.
    pub async fn renew_token_after(&self, status: &Status) -> Result<bool, ClientError> {
        if !self.token_refusal(status) {
            return Ok(false);
        }
        self.authenticate().await?;
        Ok(true)
    }

    /// Whether `status` says the token is stale and a fresh one may help.
    fn token_refusal(&self, status: &Status) -> bool {
        self.credentials().is_some()
            && matches!(status.message(), INVALID_TOKEN | OLD_AUTH_REVISION)
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
        F: FnMut(Conn, Option<RequestId>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.command_timeout;
        let mut backoff = self.config.retry.backoff_initial;
        let mut last: Option<String> = None;
        // One fresh token per call, as etcd's client allows: a token
        // refused twice in a row is the answer.
        let mut refreshed = false;
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
                Ok(Err(status)) if !refreshed && self.token_refusal(&status) => {
                    // The server refused the request before acting on it,
                    // so sending it again (with the same id) is safe.
                    refreshed = true;
                    tracing::debug!(message = status.message(), "refreshing the auth token");
                    self.authenticate().await?;
                    continue;
                }
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
    /// left of the command timeout. A refusal for a stale token is returned
    /// as it is (`call` can be made only once); see
    /// [`Client::unary_once_renewing`].
    pub async fn unary_once<T, F, Fut>(&self, target: Target, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.command_timeout;
        let (index, channel) = self.stream_channel(target).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(remaining, call(channel)).await;
        self.once_result(index, result)
    }

    /// [`Client::unary_once`], except that a call refused for a stale token
    /// (before the server acted on it) is sent once more with a fresh one.
    pub async fn unary_once_renewing<T, F, Fut>(
        &self,
        target: Target,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.command_timeout;
        let (mut index, channel) = self.stream_channel(target).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut result = tokio::time::timeout(remaining, call(channel)).await;
        if let Ok(Err(status)) = &result {
            if self.token_refusal(status) {
                self.authenticate().await?;
                let (again, channel) = self.stream_channel(target).await?;
                index = again;
                let remaining = deadline.saturating_duration_since(Instant::now());
                result = tokio::time::timeout(remaining, call(channel)).await;
            }
        }
        self.once_result(index, result)
    }

    fn once_result<T>(
        &self,
        index: usize,
        result: Result<Result<tonic::Response<T>, Status>, tokio::time::error::Elapsed>,
    ) -> Result<T, ClientError> {
        match result {
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
    pub async fn stream_channel(&self, target: Target) -> Result<(usize, Conn), ClientError> {
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

    /// A new connection to endpoint `index`, not shared with the client's
    /// own calls (the load generator wants connections of its own), whose
    /// requests carry the client's token.
    pub async fn dial(&self, index: usize) -> Result<Conn, Status> {
        let endpoint = self
            .config
            .endpoints
            .get(index)
            .ok_or_else(|| Status::invalid_argument(format!("no endpoint {index}")))?;
        let channel = connect(
            endpoint,
            self.tls.for_endpoint(endpoint),
            self.config.dial_timeout,
        )
        .await?;
        Ok(InterceptedService::new(channel, self.token.clone()))
    }

    /// A connection to endpoint `index` whose requests carry the token.
    async fn channel(&self, index: usize, remaining: Duration) -> Result<Conn, Status> {
        let channel = self.raw_channel(index, remaining).await?;
        Ok(InterceptedService::new(channel, self.token.clone()))
    }

    /// The cached channel to endpoint `index`, dialled (with TLS if the
    /// endpoint takes it) when there is none.
    async fn raw_channel(&self, index: usize, remaining: Duration) -> Result<Channel, Status> {
        let cached = self
            .channels
            .lock()
            .ok()
            .and_then(|channels| channels.get(index).cloned().flatten());
        if let Some(channel) = cached {
            return Ok(channel);
        }
        let endpoint = &self.config.endpoints[index];
        let dial = self.config.dial_timeout.min(remaining);
        let channel = connect(endpoint, self.tls.for_endpoint(endpoint), dial).await?;
        if let Ok(mut channels) = self.channels.lock() {
            if let Some(slot) = channels.get_mut(index) {
                *slot = Some(channel.clone());
            }
        }
        Ok(channel)
    }
}

/// Dials `endpoint` within `dial`, over TLS when `tls` is given (then the
/// server's certificate is checked for the endpoint's host). Failures are
/// `Unavailable`, so callers retry them like any connection failure.
pub async fn connect(
    endpoint: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    dial: Duration,
) -> Result<Channel, Status> {
    let uri = endpoint_uri(endpoint, tls.is_some())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let builder = Endpoint::from_shared(uri)
        .map_err(|e| Status::invalid_argument(format!("endpoint {endpoint}: {e}")))?
        .connect_timeout(dial)
        .tcp_nodelay(true);
    let connecting = async {
        match tls {
            Some(config) => {
                builder
                    .connect_with_connector(crate::tls::connector(config))
                    .await
            }
            None => builder.connect().await,
        }
    };
    match tokio::time::timeout(dial, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => {
            // tonic's error hides the cause (a refused certificate, say)
            // behind "transport error"; the debug log wants all of it.
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            Err(Status::unavailable(format!(
                "connecting to {endpoint}: {text}"
            )))
        }
        Err(_) => Err(Status::unavailable(format!(
            "connecting to {endpoint}: no answer within {dial:?}"
        ))),
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

/// The URI tonic dials for an endpoint given as `host:port`,
/// `http://host:port` or `https://host:port`: `https` when the connection
/// is TLS (`tls`, decided by [`ClientTls::for_endpoint`]), `http` otherwise.
fn endpoint_uri(endpoint: &str, tls: bool) -> Result<String, ClientError> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    if rest.is_empty() || rest.contains("://") {
        return Err(ClientError::Endpoint(format!(
            "endpoint {endpoint:?} is not host:port, http://host:port or https://host:port"
        )));
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{rest}"))
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
    fn endpoints_accept_host_port_and_http_or_https_urls() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri("http://a:1", false).unwrap(), "http://a:1");
        assert_eq!(endpoint_uri("https://a:1", true).unwrap(), "https://a:1");
        assert_eq!(endpoint_uri("a:1", true).unwrap(), "https://a:1");
        assert!(endpoint_uri("", false).is_err());
        assert!(endpoint_uri("ftp://a:1", false).is_err());
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
