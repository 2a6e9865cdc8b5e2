//! A chaos cluster secured as production etcd clusters are: TLS on both
//! ports with client certificates required (certificates made for the run
//! with rcgen), and etcd's auth enabled, with the workload running as a
//! user that is not root (so every request goes through the permission
//! check) and the harness's own reads and hashes as root.
//!
//! Every connection the harness opens goes through [`ClusterSecurity`], so
//! a secured cluster needs nothing else of the code that drives it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftkv_ctl::client::{Client, ClientConfig, Conn, Credentials, RetryPolicy, Security, Target};
use raftkv_ctl::tls::TlsSettings;
use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::HarnessError;

/// Root's password in a secured cluster.
pub const ROOT_PASSWORD: &str = "chaos-root";
/// The workload's user: readwrite on every key, but not root.
pub const WORKER_USER: &str = "chaos-worker";
/// Its password.
pub const WORKER_PASSWORD: &str = "chaos-worker-pw";

/// The Common Name of the client certificate. No user has it, so with
/// auth on a request without a token is refused as etcd refuses it: the
/// certificate proves the connection, the token who is asking.
pub const CLIENT_COMMON_NAME: &str = "chaos-client";

/// Who a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The harness's checks (HashKV needs root).
    Root,
    /// The recorded clients.
    Worker,
    /// No user: Status polling (which needs none, and must not cost an
    /// Authenticate proposal at every poll) and the set-up before auth is on.
    Anonymous,
}

/// How a cluster is secured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// etcd's auth enabled, with the users above.
    pub auth: bool,
    /// TLS on the client and peer ports, client certificates required on
    /// both.
    pub tls: bool,
}

/// The certificate files of a TLS cluster: one CA, one certificate every
/// member serves and dials its peers with, one the clients present.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    ca: PathBuf,
    member_cert: PathBuf,
    member_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA and the certificates in `dir`. The member certificate is
    /// valid for 127.0.0.1 (where the proxies listen) and every member's
    /// own address `ips`.
    pub fn create(dir: &Path, ips: &[Ipv4Addr]) -> Result<Self, HarnessError> {
        let failed = |what: &str, e: rcgen::Error| HarnessError::Setup(format!("{what}: {e}"));
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "raftkv chaos CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|e| failed("CA certificate", e))?;
        let issuer = Issuer::new(ca_params, ca_key);
        let issue = |common_name: &str, sans: Vec<String>| {
            let mut params = CertificateParams::new(sans).map_err(|e| failed(common_name, e))?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            // Members present theirs as clients of their peers, too.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let key = KeyPair::generate().map_err(|e| failed(common_name, e))?;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| failed(common_name, e))?;
            Ok::<_, HarnessError>((cert.pem(), key.serialize_pem()))
        };
        let member_sans = std::iter::once(Ipv4Addr::LOCALHOST)
            .chain(ips.iter().copied())
            .map(|ip| ip.to_string())
            .collect();
        let (member_pem, member_key_pem) = issue("raftkv chaos member", member_sans)?;
        let (client_pem, client_key_pem) =
            issue(CLIENT_COMMON_NAME, vec![Ipv4Addr::LOCALHOST.to_string()])?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| HarnessError::io(&path, e))?;
            Ok::<_, HarnessError>(path)
        };
        Ok(Self {
            ca: write("ca.pem", &ca_cert.pem())?,
            member_cert: write("member.pem", &member_pem)?,
            member_key: write("member-key.pem", &member_key_pem)?,
            client_cert: write("client.pem", &client_pem)?,
            client_key: write("client-key.pem", &client_key_pem)?,
        })
    }

    /// The server flags (etcd's, which raftkv shares) for TLS on both
    /// ports with client certificates required on both.
    pub fn server_flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--cert-file".into(),
            path(&self.member_cert),
            "--key-file".into(),
            path(&self.member_key),
            "--trusted-ca-file".into(),
            path(&self.ca),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            path(&self.member_cert),
            "--peer-key-file".into(),
            path(&self.member_key),
            "--peer-trusted-ca-file".into(),
            path(&self.ca),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// What a client presents: the CA it trusts, its certificate.
    pub fn client_settings(&self) -> TlsSettings {
        TlsSettings {
            cacert: Some(self.ca.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
            insecure_skip_verify: false,
            insecure_transport: false,
        }
    }
}

/// The security of one running cluster: what its clients present.
#[derive(Clone, Debug, Default)]
pub struct ClusterSecurity {
    config: SecurityConfig,
    tls: Option<TlsFiles>,
}

impl ClusterSecurity {
    /// Security as `config` describes it; `tls` holds the certificates
    /// when `config.tls` is on.
    pub fn new(config: SecurityConfig, tls: Option<TlsFiles>) -> Self {
        Self { config, tls }
    }

    /// Whether auth is on.
    pub fn auth(&self) -> bool {
        self.config.auth
    }

    /// `https` on a TLS cluster, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The server flags the security needs (none without TLS; auth is
    /// enabled through the API once the cluster runs).
    pub fn server_flags(&self) -> Vec<String> {
        self.tls
            .as_ref()
            .map(TlsFiles::server_flags)
            .unwrap_or_default()
    }

    /// What a client acting for `who` presents.
    pub fn client_security(&self, who: Principal) -> Security {
        let credentials = if self.config.auth {
            match who {
                Principal::Root => Some(Credentials {
                    user: "root".into(),
                    password: ROOT_PASSWORD.into(),
                }),
                Principal::Worker => Some(Credentials {
                    user: WORKER_USER.into(),
                    password: WORKER_PASSWORD.into(),
                }),
                Principal::Anonymous => None,
            }
        } else {
            None
        };
        Security {
            tls: self
                .tls
                .as_ref()
                .map_or_else(TlsSettings::plaintext, TlsFiles::client_settings),
            credentials,
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
            conn = self
                .connect(endpoint, Principal::Anonymous, Duration::from_secs(5))
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
