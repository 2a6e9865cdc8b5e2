//! The rustls pieces that read their files at handshake time: the key pair
//! a member presents (as a server and as a peer's client), and the checks
//! of the other side's certificate (trusted CA, `--peer-cert-allowed-cn`,
//! `--peer-cert-allowed-hostname`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::reload::{common_name, Reloading};

/// The key pair from the cert and key files, for both sides of a handshake.
#[derive(Debug)]
pub struct KeyPairResolver(pub Arc<Reloading<CertifiedKey>>);

impl ResolvesServerCert for KeyPairResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl rustls::client::ResolvesClientCert for KeyPairResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // As etcd's peers do: present the member's certificate whatever the
        // server hints; a server that does not trust it refuses clearly.
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What the other side's certificate must also satisfy beyond a trusted
/// chain (etcd checks these on both the listener and the dialer).
#[derive(Clone, Debug, Default)]
pub struct IdentityRule {
    /// Its subject CN must equal this.
    pub allowed_cn: Option<String>,
    /// It must be valid for this host name or IP address.
    pub allowed_hostname: Option<String>,
}

impl IdentityRule {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        if let Some(allowed) = &self.allowed_cn {
            if common_name(end_entity).as_deref() != Some(allowed.as_str()) {
                return Err(Error::General(format!(
                    "certificate CN is not the allowed {allowed:?}"
                )));
            }
        }
        if let Some(host) = &self.allowed_hostname {
            let name = ServerName::try_from(host.as_str())
                .map_err(|_| Error::General(format!("{host:?} is not a host name")))?;
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, &name)?;
        }
        Ok(())
    }
}

/// Verifies client certificates against the trusted CA file, read again
/// when it changes.
#[derive(Debug)]
pub struct ClientVerifier {
    /// The trusted CAs.
    pub roots: Arc<Reloading<rustls::RootCertStore>>,
    /// Whether a client without a certificate is refused.
    pub mandatory: bool,
    /// The CN/host name rule.
    pub rule: IdentityRule,
    /// Signature algorithms.
    pub provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// A webpki verifier over the current CAs. Made per handshake: it costs
    /// a copy of a few CA certificates, and follows a changed CA file
    /// without any cache to invalidate.
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        let roots = self.roots.current();
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new((*roots).clone()),
            self.provider.clone(),
        );
        let builder = if self.mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .map_err(|e| Error::General(format!("client certificate verifier: {e}")))
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; with none, clients (Go's and rustls alike)
        // send the certificate they have, and the CA set can change with
        // the file.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner()?
            .verify_client_cert(end_entity, intermediates, now)?;
        self.rule.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
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

/// Verifies a peer's server certificate when dialing it: against the
/// trusted CA file (read again when it changes), or not at all for a
/// member whose certificates auto TLS made (etcd skips verification there
/// too: no CA signed them).
#[derive(Debug)]
pub struct ServerVerifier {
    /// The trusted CAs; `None` with auto TLS.
    pub roots: Option<Arc<Reloading<rustls::RootCertStore>>>,
    /// The CN/host name rule.
    pub rule: IdentityRule,
    /// Signature algorithms.
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let roots = roots.current();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new((*roots).clone()),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| Error::General(format!("server certificate verifier: {e}")))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.rule.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
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
