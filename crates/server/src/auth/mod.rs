//! etcd's authentication and role-based access control.
//!
//! - [`state`]: the replicated auth store (enabled flag, revision, users,
//!   roles) and the permission checks made against it.
//! - [`perms`]: key-range permissions merged over a user's roles.
//! - [`request`]: which permission each request needs.
//! - [`tokens`]: `simple` tokens, given out by a replicated `Authenticate`.
//! - [`jwt`]: `jwt` tokens, signed and verified by each member alone.
//! - [`error`]: the refusals, with etcd's codes and strings.
//!
//! Where the checks are made: a client request is checked where it is
//! served (so a refusal costs no proposal), and a write is checked again
//! when it is applied, against the auth store as of its log index, with the
//! user the proposer identified. So no permission change can race a write
//! through, and a retried write (exactly-once) is checked anew and never
//! answered with another user's remembered outcome. Requests the server
//! makes itself (lease expiry, compaction by `--auto-compaction-*`,
//! checkpoints) are marked as the server's and not checked.

pub mod error;
pub mod jwt;
pub mod perms;
pub mod request;
pub mod state;
pub mod tokens;

use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use error::AuthError;
pub use perms::Access;
pub use state::{AuthChange, AuthState};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server itself (lease expiry, automatic compaction, checkpoints,
    /// alarms it raises, its own publish): never checked.
    Server,
    /// A client: `user` is whom its token or certificate names, None
    /// without credentials.
    Client {
        /// The authenticated user.
        user: Option<String>,
    },
}

impl Caller {
    /// A client without credentials.
    pub const ANONYMOUS: Caller = Caller::Client { user: None };

    /// The user a client request is made as ("" for none or the server).
    pub fn user_name(&self) -> &str {
        match self {
            Caller::Client { user: Some(user) } => user,
            _ => "",
        }
    }
}

/// The bcrypt costs Go's bcrypt (and so etcd) accepts.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// A member's auth: the store as last applied, and the tokens.
pub struct Auth {
    state: RwLock<Arc<AuthState>>,
    /// This member's simple tokens.
    pub tokens: tokens::TokenStore,
    /// With `--auth-token jwt,...`, the JWT keys: tokens are JWTs then.
    pub jwt: Option<jwt::JwtTokens>,
    /// `--client-cert-auth`: a verified client certificate's Common Name
    /// names the user when no token is given.
    pub client_cert_auth: bool,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
}

impl Auth {
    /// Auth over `state`, with tokens living `token_ttl` after their last
    /// use.
    pub fn new(
        state: AuthState,
        token_ttl: Duration,
        jwt: Option<jwt::JwtTokens>,
        client_cert_auth: bool,
        bcrypt_cost: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(Arc::new(state)),
            tokens: tokens::TokenStore::new(token_ttl),
            jwt,
            client_cert_auth,
            bcrypt_cost,
        })
    }

    /// The auth store as last applied.
    pub fn state(&self) -> Arc<AuthState> {
        match self.state.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes the auth store as a batch left it.
    pub fn publish(&self, state: Arc<AuthState>) {
        match self.state.write() {
            Ok(mut current) => *current = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }

    /// The bcrypt hash of `password`, base64 as etcd's `hashedPassword`;
    /// run off the async threads (a hash takes tens of milliseconds).
    pub async fn hash_password(&self, password: String) -> Result<String, tonic::Status> {
        use base64::Engine as _;
        let cost = self.bcrypt_cost;
        let hashed = tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password, cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        })
        .await
        .map_err(|e| tonic::Status::internal(format!("etcdserver: password hashing: {e}")))?
        .map_err(|e| tonic::Status::internal(format!("etcdserver: password hashing: {e}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(hashed))
    }

    /// Checks `user`'s password against the store as last applied.
    pub async fn check_password(&self, user: &str, password: String) -> Result<(), AuthError> {
        let hash = self.state().password_hash(user)?.to_vec();
        let matches = tokio::task::spawn_blocking(move || {
            let hash = String::from_utf8_lossy(&hash);
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matches {
            Ok(())
        } else {
            Err(AuthError::AuthFailed)
        }
    }
}

/// The credentials of a client request that a member hands to the leader
/// (a promotion, a lease's time to live), so the leader checks them again.
pub fn forwarded_metadata(metadata: &tonic::metadata::MetadataMap) -> tonic::metadata::MetadataMap {
    let mut forwarded = tonic::metadata::MetadataMap::new();
    for key in ["token", "authorization"] {
        if let Some(value) = metadata.get(key) {
            forwarded.insert(key, value.clone());
        }
    }
    forwarded
}
