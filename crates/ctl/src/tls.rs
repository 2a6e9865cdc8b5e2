//! Client TLS, as etcdctl 3.4 sets it up from `--cacert`, `--cert`,
//! `--key`, `--insecure-skip-tls-verify` and `--insecure-transport`.
//!
//! etcdctl's rules, which scripts rely on and raftkvctl keeps:
//!
//! - Any of `--cacert`, `--cert`, `--key` makes a TLS configuration: the
//!   CA file (or the system's roots) to verify the server, and the client
//!   certificate when both `--cert` and `--key` are given (one without the
//!   other is refused).
//! - Without those, `--insecure-transport=false` still makes one, with the
//!   system's roots.
//! - `--insecure-skip-tls-verify` turns verification off in that
//!   configuration (and does nothing without one).
//! - Per endpoint: `http://` is always plaintext, `https://` always TLS (the
//!   configuration above, or the system's roots), a bare `host:port` is TLS
//!   exactly when a configuration was made.
//!
//! rustls with the *ring* provider does the work (no OpenSSL); a
//! [`tower`] connector dials TCP, shakes hands with ALPN `h2` and hands the
//! stream to tonic.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::ClientError;

/// Where the system's trusted roots live on Debian-like systems (Go reads
/// the same file first).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The TLS flags as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `--cacert`: PEM file of the CAs that sign servers' certificates.
    pub cacert: Option<PathBuf>,
    /// `--cert`: PEM file of this client's certificate (chain).
    pub cert: Option<PathBuf>,
    /// `--key`: PEM file of this client's private key.
    pub key: Option<PathBuf>,
    /// `--insecure-skip-tls-verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
    /// `--insecure-transport` (default true): plaintext unless TLS files or
    /// `https://` endpoints are given.
    pub insecure_transport: bool,
}

impl TlsSettings {
    /// Settings that ask for no TLS at all (etcdctl's defaults).
    pub fn plaintext() -> Self {
        Self {
            insecure_transport: true,
            ..Self::default()
        }
    }
}

/// The TLS configurations a client uses, built once from [`TlsSettings`].
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The configuration the flags made (used for bare and `https://`
    /// endpoints), if they made one.
    configured: Option<Arc<rustls::ClientConfig>>,
    /// Verification against the system's roots, for `https://` endpoints
    /// when the flags made no configuration.
    system: Option<Arc<rustls::ClientConfig>>,
}

impl ClientTls {
    /// Reads the files the settings name and builds the configurations
    /// `endpoints` need (the system's roots are read only for an `https://`
    /// endpoint that the flags gave no configuration). Errors carry
    /// etcdctl's wording (Go's `open <path>: ...`).
    pub fn new(settings: &TlsSettings, endpoints: &[String]) -> Result<Self, ClientError> {
        let wants_files =
            settings.cacert.is_some() || settings.cert.is_some() || settings.key.is_some();
        let configured = if wants_files || !settings.insecure_transport {
            Some(Arc::new(build(settings, settings.insecure_skip_verify)?))
        } else {
            None
        };
        let any_https = endpoints
            .iter()
            .any(|e| e.starts_with("https://") || e.starts_with("unixs://"));
        let system = if configured.is_none() && any_https {
            Some(Arc::new(build(&TlsSettings::plaintext(), false)?))
        } else {
            None
        };
        Ok(Self { configured, system })
    }

    /// The configuration for `endpoint`, or `None` for plaintext.
    pub fn for_endpoint(&self, endpoint: &str) -> Option<Arc<rustls::ClientConfig>> {
        if endpoint.starts_with("http://") || endpoint.starts_with("unix://") {
            None
        } else if endpoint.starts_with("https://") || endpoint.starts_with("unixs://") {
            self.configured.clone().or_else(|| self.system.clone())
        } else {
            self.configured.clone()
        }
    }
}

/// The *ring* provider, chosen explicitly rather than installed process
/// wide, so another crate enabling a second provider cannot make rustls
/// refuse to pick one. rustls deprecates it for lacking post-quantum key
/// exchange; etcd 3.4 (and raftkv's servers) offer none either, and the
/// alternative, aws-lc-rs, builds C with cmake on every machine.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(settings: &TlsSettings, skip_verify: bool) -> Result<rustls::ClientConfig, ClientError> {
    // etcd's TLSInfo: a certificate needs its key and the other way round.
    let identity = match (&settings.cert, &settings.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(client_identity(cert, key)?),
        (cert, key) => {
            return Err(ClientError::Tls(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                key.as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                cert.as_deref()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            )))
        }
    };
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(format!("tls: {e}")))?;
    let builder = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
    } else {
        builder.with_root_certificates(roots(settings.cacert.as_deref())?)
    };
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| match e {
                // Go's words for a key that is not the certificate's.
                rustls::Error::InconsistentKeys(_) => {
                    ClientError::Tls("tls: private key does not match public key".into())
                }
                other => ClientError::Tls(format!("tls: {other}")),
            })?,
        None => builder.with_no_client_auth(),
    };
    // gRPC runs over HTTP/2; servers that check ALPN (grpc-go's do) refuse
    // a handshake without it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Go's `os.ReadFile` error text: `open <path>: no such file or directory`.
fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => {
                let text = e.to_string();
                // Rust appends " (os error N)"; Go prints the bare reason.
                let bare = text.split(" (os error").next().unwrap_or(&text);
                bare.to_lowercase()
            }
        };
        ClientError::Tls(format!("open {}: {reason}", path.display()))
    })
}

fn roots(cacert: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut store = RootCertStore::empty();
    let pem = match cacert {
        Some(path) => read(path)?,
        None => match SYSTEM_ROOTS.iter().find_map(|p| std::fs::read(p).ok()) {
            Some(pem) => pem,
            // No system roots: nothing is trusted, so every handshake that
            // needs verification fails, as Go's does with an empty pool.
            None => return Ok(store),
        },
    };
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("x509: {e}")))?;
        store
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("x509: {e}")))?;
    }
    Ok(store)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(cert: &Path, key: &Path) -> Result<Identity, ClientError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(ClientError::Tls(
            "tls: failed to find any PEM data in certificate input".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| ClientError::Tls("tls: failed to find any PEM data in key input".into()))?;
    Ok((chain, key))
}

/// The verifier behind `--insecure-skip-tls-verify`: any server
/// certificate is accepted, whoever signed it and whatever names it holds,
/// as Go's `InsecureSkipVerify` does. rustls has no switch for this (it is
/// deliberately hard to turn verification off), so it takes a verifier of
/// our own. The handshake signatures are still checked against the
/// certificate presented, so the peer must at least hold that
/// certificate's key; what is given up is knowing who the peer is, which is
/// what the flag asks for (test clusters with self-made certificates).
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A connection tonic can speak HTTP/2 over.
pub type TlsIo = TokioIo<TlsStream<TcpStream>>;

type Connecting = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

/// A tonic connector that dials the URI's host and port and runs the TLS
/// handshake, verifying the server's certificate for that host (a name or
/// an IP address, as Go's client does).
pub fn connector(
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<http::Uri, Response = TlsIo, Error = std::io::Error, Future = Connecting>
       + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: http::Uri| -> Connecting {
        let config = config.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string())
            };
            let host = uri.host().ok_or_else(|| invalid("endpoint has no host"))?;
            // A bracketed IPv6 host is a bare address to TCP and to TLS.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let server_name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(&format!("invalid server name {host:?}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(list: &[&str]) -> Vec<String> {
        list.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn endpoints_get_tls_by_etcdctls_rules() {
        // No flags: plaintext, except https:// (system roots).
        let plain = ClientTls::new(&TlsSettings::plaintext(), &endpoints(&["https://a:1"]))
            .expect("plaintext settings");
        assert!(plain.for_endpoint("a:1").is_none());
        assert!(plain.for_endpoint("http://a:1").is_none());
        assert!(plain.for_endpoint("https://a:1").is_some());
        // --insecure-transport=false: TLS for bare endpoints, never http://.
        let secure = TlsSettings {
            insecure_transport: false,
            ..TlsSettings::plaintext()
        };
        let secure = ClientTls::new(&secure, &[]).expect("secure settings");
        assert!(secure.for_endpoint("a:1").is_some());
        assert!(secure.for_endpoint("http://a:1").is_none());
        assert!(secure.for_endpoint("https://a:1").is_some());
    }

    #[test]
    fn unusable_files_are_refused_in_etcdctls_words() {
        let missing = TlsSettings {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::plaintext()
        };
        let err = ClientTls::new(&missing, &[]).expect_err("missing CA");
        assert_eq!(
            err.to_string(),
            "open /nonexistent/ca.pem: no such file or directory"
        );
        let half = TlsSettings {
            cert: Some("c.pem".into()),
            ..TlsSettings::plaintext()
        };
        let err = ClientTls::new(&half, &[]).expect_err("cert without key");
        assert_eq!(
            err.to_string(),
            "KeyFile and CertFile must both be present[key: , cert: c.pem]"
        );
    }

    #[test]
    fn skipping_verification_accepts_any_certificate() {
        let verifier = AcceptAnyServerCert {
            provider: provider(),
        };
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let junk = CertificateDer::from(vec![0u8; 4]);
        assert!(verifier
            .verify_server_cert(&junk, &[], &name, &[], UnixTime::now())
            .is_ok());
        assert!(!verifier.supported_verify_schemes().is_empty());
    }
}
