//! TLS for tests: a certificate authority made with rcgen, certificates it
//! issues (current or expired), CRLs, rustls client configurations, and
//! clients (gRPC and plain HTTP/1.1) that dial a TLS port.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};

use raftkv_server::tls::dial::Connector;

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate a [`Ca`] issued, with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: Vec<u8>,
}

/// Whether an issued certificate is valid now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `cn`, valid for `sans` (IPs or names), usable as
    /// server and client certificate.
    pub fn issue(&self, cn: &str, sans: &[&str], validity: Validity) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serial: Vec<u8> = (0..16).map(|_| rand_byte()).collect();
        let mut serial_positive = serial.clone();
        serial_positive[0] &= 0x7f;
        serial_positive[0] |= 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial_positive));
        let now = time::OffsetDateTime::now_utc();
        match validity {
            Validity::Current => {
                params.not_before = now - time::Duration::hours(1);
                params.not_after = now + time::Duration::days(30);
            }
            Validity::Expired => {
                params.not_before = now - time::Duration::days(30);
                params.not_after = now - time::Duration::days(1);
            }
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial_positive,
        }
    }

    /// A CRL revoking `revoked`, PEM.
    pub fn crl(&self, revoked: &[&Issued]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cert| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&cert.serial),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("crl")
            .pem()
            .expect("crl pem")
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).expect("write ca");
        path
    }
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u8
}

impl Issued {
    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("cert der")
    }
}

/// Accepts any server certificate (etcdctl's --insecure-skip-tls-verify).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The ALPN protocol a client asks for.
#[derive(Clone, Copy)]
pub enum Alpn {
    H2,
    Http1,
}

/// A rustls client configuration: trusting `ca` (None: trusting anything),
/// presenting `identity` if given.
pub fn client_config(
    ca: Option<&Ca>,
    identity: Option<&Issued>,
    alpn: Alpn,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(raftkv_server::tls::crypto_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("ca der"))
                .expect("root");
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
    };
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key der"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match alpn {
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
    };
    Arc::new(config)
}

/// A gRPC channel to `url` (http:// or https://), connected now.
pub async fn channel(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(Connector {
            tls,
            local_address: None,
        })
        .await
        .map_err(|e| error_chain(&e))
}

pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Put then get of `key` over `url`; the value read back, or why not.
pub async fn put_get(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    key: &str,
    value: &str,
) -> Result<String, String> {
    let mut kv = KvClient::new(channel(url, tls).await?);
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("put: {s}"))?;
    let got = kv
        .range(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("range: {s}"))?
        .into_inner();
    got.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .ok_or_else(|| "no value".to_string())
}

/// A serializable read: succeeds on any serving member.
pub async fn read(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    key: &str,
) -> Result<Option<String>, String> {
    let mut kv = KvClient::new(channel(url, tls).await?);
    let got = kv
        .range(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("range: {s}"))?
        .into_inner();
    Ok(got
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// One HTTP/1.1 request over TLS (`tls`) or plaintext (None) to
/// 127.0.0.1:`port`: the status code and body, or why it failed.
pub async fn http1(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://127.0.0.1:{port}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let connector = Connector {
        tls,
        local_address: None,
    };
    let exchange = async {
        let mut stream = connector.open(&uri).await.map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        // A TLS peer may close without close_notify; what arrived counts.
        let _ = stream.read_to_end(&mut answer).await;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The certificate a TLS server on 127.0.0.1:`port` presents now.
pub async fn served_certificate(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<CertificateDer<'static>, String> {
    let uri: http::Uri = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let stream = Connector {
        tls: Some(tls),
        local_address: None,
    }
    .open(&uri)
    .await
    .map_err(|e| e.to_string())?;
    stream
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| "no certificate".to_string())
}

/// Waits until a linearizable read over `url` succeeds.
pub fn wait_ready_url(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    let runtime = super::runtime();
    while Instant::now() < deadline {
        let ready = runtime.block_on(async {
            let Ok(channel) = channel(url, tls.clone()).await else {
                return false;
            };
            let mut request = tonic::Request::new(pb::RangeRequest {
                key: b"ready?".to_vec(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(2));
            KvClient::new(channel).range(request).await.is_ok()
        });
        if ready {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The log of a server `common::spawn*` started.
pub fn log_of(data_dir: &Path, port: u16) -> String {
    std::fs::read_to_string(data_dir.join(format!("raftkv-{port}.log"))).unwrap_or_default()
}

/// Waits (up to 5 s) until the log of a server holds `needle` (lower case
/// compared): a refusal is logged just after the client hears of it.
pub fn log_shows(data_dir: &Path, port: u16, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if log_of(data_dir, port)
            .to_lowercase()
            .contains(&needle.to_lowercase())
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
