//! TLS on the client and peer ports, with rustls.
//!
//! - [`options`]: the TLS flags of a port, validated (files, client
//!   certificate auth, `--cipher-suites`, `--tls-min-version`/`--tls-max-version`).
//! - [`reload`]: certificate files read again when they change, so a rotated
//!   certificate is used from the next handshake on, without a restart.
//! - [`verify`]: the rustls key pair resolver and certificate verifiers over
//!   those files, with `--peer-cert-allowed-cn`/`--peer-cert-allowed-hostname`.
//! - [`listen`]: accepting connections, with a handshake per `https://`
//!   listener, and the [`listen::ConnectionInfo`] requests carry.
//! - [`dial`]: the client side, for peers dialing each other.
//! - [`auto`]: `--auto-tls`/`--peer-auto-tls` self-signed certificates.
//!
//! What the rest of the server reads of a TLS connection: the identity in
//! the client certificate a listener verified. Every request (gRPC, the JSON
//! gateway, `/health`, `/metrics`) that came over a TLS connection with a
//! verified client certificate carries a [`ClientCertificate`] in its
//! extensions ([`carry_client_certificate`] puts it there).

pub mod auto;
pub mod dial;
pub mod listen;
pub mod options;
pub mod reload;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use options::TlsOptions;
use reload::Reloading;
use verify::{ClientVerifier, IdentityRule, KeyPairResolver, ServerVerifier};

/// The verified client certificate of the connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate subject's Common Name, if it has one.
    pub common_name: Option<String>,
}

/// The Common Name of the verified client certificate `extensions` carry
/// (those of a gRPC or HTTP request), if any: with auth enabled, etcd takes
/// it as the user's name.
pub fn client_common_name(extensions: &http::Extensions) -> Option<&str> {
    extensions
        .get::<ClientCertificate>()
        .and_then(|cert| cert.common_name.as_deref())
}

/// Middleware for the client port's router: copies the verified client
/// certificate of the request's connection (tonic puts the connection's
/// [`listen::ConnectionInfo`] into every request) into the request's own
/// extensions as a [`ClientCertificate`].
pub async fn carry_client_certificate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let cert = request
        .extensions()
        .get::<listen::ConnectionInfo>()
        .and_then(|info| info.client_certificate.clone());
    if let Some(cert) = cert {
        request.extensions_mut().insert(cert);
    }
    next.run(request).await
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (or written, for auto TLS).
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds no usable certificate, key or CRL.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The settings cannot make a TLS configuration.
    #[error("TLS: {0}")]
    Invalid(String),
}

impl From<rustls::Error> for TlsError {
    fn from(err: rustls::Error) -> Self {
        TlsError::Invalid(err.to_string())
    }
}

/// The cryptography rustls runs on: *ring*'s. (rustls's default is
/// aws-lc-rs, whose build needs cmake and a C toolchain beyond the Rust
/// one; *ring* lacks only the post-quantum key exchange, for which rustls
/// marks its provider deprecated.)
#[allow(deprecated)]
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn key_pair(
    options: &TlsOptions,
) -> Result<Option<Arc<Reloading<rustls::sign::CertifiedKey>>>, TlsError> {
    match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => Ok(Some(Arc::new(Reloading::new(
            vec![cert.clone(), key.clone()],
            reload::load_key_pair,
        )?))),
        _ => Ok(None),
    }
}

fn roots(options: &TlsOptions) -> Result<Option<Arc<Reloading<rustls::RootCertStore>>>, TlsError> {
    options
        .trusted_ca_file
        .as_ref()
        .map(|ca| Reloading::new(vec![ca.clone()], reload::load_roots).map(Arc::new))
        .transpose()
}

fn rule(options: &TlsOptions) -> IdentityRule {
    IdentityRule {
        allowed_cn: options.allowed_cn.clone(),
        allowed_hostname: options.allowed_hostname.clone(),
    }
}

/// The TLS of a port's `https://` listeners: its key pair, the client
/// certificate checks, ALPN `h2` and `http/1.1` (gRPC and the JSON gateway
/// share the port), and the CRL. Every file is loaded now, so a bad one is
/// a startup error.
pub fn server_tls(options: &TlsOptions) -> Result<Arc<listen::ServerTls>, TlsError> {
    let Some(key_pair) = key_pair(options)? else {
        return Err(TlsError::Invalid(
            "a TLS listener needs a certificate and a key".into(),
        ));
    };
    let provider = options.protocol.provider();
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match roots(options)? {
        Some(roots) => Arc::new(ClientVerifier {
            roots,
            mandatory: options.requires_client_certificate(),
            rule: rule(options),
            provider: provider.clone(),
        }),
        None => rustls::server::WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&options.protocol.versions())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(KeyPairResolver(key_pair)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let crl = options
        .crl_file
        .as_ref()
        .map(|path| Reloading::new(vec![path.clone()], reload::load_crl))
        .transpose()?;
    Ok(Arc::new(listen::ServerTls::new(Arc::new(config), crl)))
}

/// The client configuration a member dials its `https://` peers with: the
/// peer key pair as its client certificate, the peer CA to verify them (no
/// verification for auto TLS certificates, as etcd), the CN/host name rule.
/// `None` when the port has no TLS settings at all.
pub fn client_config(options: &TlsOptions) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let key_pair = key_pair(options)?;
    let roots = roots(options)?;
    if key_pair.is_none() && roots.is_none() {
        return Ok(None);
    }
    let provider = options.protocol.provider();
    let verifier = ServerVerifier {
        roots: if options.self_signed && roots.is_none() {
            None
        } else {
            Some(roots.ok_or_else(|| {
                TlsError::Invalid(
                    "--peer-trusted-ca-file is needed to verify peers' certificates".into(),
                )
            })?)
        },
        rule: rule(options),
        provider: provider.clone(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&options.protocol.versions())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match key_pair {
        Some(key_pair) => builder.with_client_cert_resolver(Arc::new(KeyPairResolver(key_pair))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}
