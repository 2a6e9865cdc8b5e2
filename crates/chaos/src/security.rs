//! A chaos cluster with etcd's auth enabled: the workload runs as a user
//! that is not root (so every request goes through the permission check),
//! the harness's own reads and hashes as root.
//!
//! Every connection the harness opens goes through [`ClusterSecurity`], so
//! a secured cluster needs nothing else of the code that drives it.

use std::time::Duration;

use raftkv_ctl::client::{Client, ClientConfig, Conn, Credentials, RetryPolicy, Security, Target};
use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;

use crate::error::HarnessError;

/// Root's password in a secured cluster.
pub const ROOT_PASSWORD: &str = "chaos-root";
/// The workload's user: readwrite on every key, but not root.
pub const WORKER_USER: &str = "chaos-worker";
/// Its password.
pub const WORKER_PASSWORD: &str = "chaos-worker-pw";

/// Who a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The harness's checks (HashKV needs root).
    Root,
    /// The recorded clients.
    Worker,
}

/// How a cluster is secured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// etcd's auth enabled, with the users above.
    pub auth: bool,
}

/// The security of one running cluster: what its clients present.
#[derive(Clone, Debug, Default)]
pub struct ClusterSecurity {
    config: SecurityConfig,
}

impl ClusterSecurity {
    /// Security as `config` describes it.
    pub fn new(config: SecurityConfig) -> Self {
        Self { config }
    }

    /// Whether auth is on.
    pub fn auth(&self) -> bool {
        self.config.auth
    }

    /// What a client acting for `who` presents.
    pub fn client_security(&self, who: Principal) -> Security {
        let credentials = self.config.auth.then(|| match who {
            Principal::Root => Credentials {
                user: "root".into(),
                password: ROOT_PASSWORD.into(),
            },
            Principal::Worker => Credentials {
                user: WORKER_USER.into(),
                password: WORKER_PASSWORD.into(),
            },
        });
        Security {
            credentials,
            ..Security::default()
        }
    }

    /// A client for `who` over `config`, authenticated if auth is on.
    pub async fn client(
        &self,
        config: ClientConfig,
        who: Principal,
    ) -> Result<Client, HarnessError> {
        let client = Client::with_security(config, self.client_security(who))
            .map_err(|e| HarnessError::Setup(e.to_string()))?;
        client
            .authenticate()
            .await
            .map_err(|e| HarnessError::Setup(format!("authenticating: {e}")))?;
        Ok(client)
    }

    /// One connection to `endpoint` for `who`, within `timeout`; None if
    /// the member does not answer (it may be down: callers move on).
    pub async fn connect(&self, endpoint: &str, who: Principal, timeout: Duration) -> Option<Conn> {
        let config = ClientConfig {
            endpoints: vec![endpoint.to_string()],
            dial_timeout: timeout,
            command_timeout: timeout,
            retry: RetryPolicy {
                attempt_timeout: timeout,
                backoff_initial: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
            },
        };
        let attempt = async {
            let client = self.client(config, who).await.ok()?;
            client
                .stream_channel(Target::One(0))
                .await
                .ok()
                .map(|(_, conn)| conn)
        };
        tokio::time::timeout(timeout, attempt).await.ok().flatten()
    }

    /// Makes root and the workload's user, and enables auth, through
    /// `endpoints` (a cluster that just started).
    pub async fn enable_auth(&self, endpoints: Vec<String>) -> Result<(), HarnessError> {
        if !self.config.auth {
            return Ok(());
        }
        let failed = |what: &str, e: tonic::Status| {
            HarnessError::Setup(format!("enabling auth: {what}: {}", e.message()))
        };
        let mut conn = None;
        for endpoint in &endpoints {
            // Auth is off yet: no credentials to present.
            conn = ClusterSecurity::default()
                .connect(endpoint, Principal::Root, Duration::from_secs(5))
                .await;
            if conn.is_some() {
                break;
            }
        }
        let conn =
            conn.ok_or_else(|| HarnessError::Setup("enabling auth: no member answers".into()))?;
        let mut auth = AuthClient::new(conn);
        for (user, password) in [("root", ROOT_PASSWORD), (WORKER_USER, WORKER_PASSWORD)] {
            auth.user_add(pb::AuthUserAddRequest {
                name: user.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("user add", e))?;
        }
        auth.role_add(pb::AuthRoleAddRequest {
            name: "chaos".into(),
        })
        .await
        .map_err(|e| failed("role add", e))?;
        // Every key from "\0" on: the check runs its range logic on every
        // request, as for any user that is not root.
        auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "chaos".into(),
            perm: Some(authpb::Permission {
                perm_type: authpb::permission::Type::Readwrite as i32,
                key: vec![0],
                range_end: vec![0],
            }),
        })
        .await
        .map_err(|e| failed("grant", e))?;
        for (user, role) in [("root", "root"), (WORKER_USER, "chaos")] {
            auth.user_grant_role(pb::AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            })
            .await
            .map_err(|e| failed("grant role", e))?;
        }
        auth.auth_enable(pb::AuthEnableRequest {})
            .await
            .map_err(|e| failed("enable", e))?;
        Ok(())
    }
}
