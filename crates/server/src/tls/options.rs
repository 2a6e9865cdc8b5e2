//! The TLS settings of one port (client or peer), validated from etcd's
//! flags: which files, which checks, which protocol versions and cipher
//! suites.

use std::path::PathBuf;

use rustls::SupportedCipherSuite;

use crate::error::ConfigError;

/// The TLS protocol versions a port accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// Parses etcd's `--tls-min-version`/`--tls-max-version` values; `""`
    /// is none (the library's bound).
    pub fn parse(text: &str, flag: &str) -> Result<Option<Self>, ConfigError> {
        match text {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(TlsVersion::Tls12)),
            "TLS1.3" => Ok(Some(TlsVersion::Tls13)),
            // etcd (Go) still knows these; rustls never implemented them.
            "TLS1.0" | "TLS1.1" => Err(ConfigError::Invalid(format!(
                "{flag} {text:?} is not supported: raftkv's TLS (rustls) implements TLS1.2 and TLS1.3 only"
            ))),
            other => Err(ConfigError::Invalid(format!(
                "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            ))),
        }
    }
}

/// The versions and cipher suites both ports use (`--tls-min-version`,
/// `--tls-max-version`, `--cipher-suites` are shared, as in etcd).
#[derive(Clone, Debug)]
pub struct TlsProtocol {
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// Highest version accepted.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites, in order of preference; empty for the
    /// library's defaults. (As in Go, TLS 1.3's suites are not
    /// configurable: all of them stay enabled.)
    pub tls12_cipher_suites: Vec<SupportedCipherSuite>,
}

impl Default for TlsProtocol {
    fn default() -> Self {
        Self {
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            tls12_cipher_suites: Vec::new(),
        }
    }
}

impl TlsProtocol {
    /// Validates the three shared flags, with etcd's rules and messages.
    pub fn from_flags(min: &str, max: &str, cipher_suites: &str) -> Result<Self, ConfigError> {
        // etcd's default minimum is TLS1.2; an empty value means the same.
        let min_version = TlsVersion::parse(min, "--tls-min-version")?.unwrap_or(TlsVersion::Tls12);
        let max_version = TlsVersion::parse(max, "--tls-max-version")?.unwrap_or(TlsVersion::Tls13);
        if min_version > max_version {
            return Err(ConfigError::Invalid(format!(
                "min version ({min}) is greater than max version ({max})"
            )));
        }
        let names: Vec<&str> = cipher_suites
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !names.is_empty() && min_version == TlsVersion::Tls13 {
            return Err(ConfigError::Invalid(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        let mut tls12_cipher_suites = Vec::new();
        for name in names {
            if let Some(suite) = cipher_suite(name)? {
                if !tls12_cipher_suites.contains(&suite) {
                    tls12_cipher_suites.push(suite);
                }
            }
        }
        Ok(Self {
            min_version,
            max_version,
            tls12_cipher_suites,
        })
    }

    /// The rustls protocol versions in force.
    pub fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let mut versions = Vec::new();
        if self.min_version <= TlsVersion::Tls12 && self.max_version >= TlsVersion::Tls12 {
            versions.push(&rustls::version::TLS12);
        }
        if self.max_version >= TlsVersion::Tls13 {
            versions.push(&rustls::version::TLS13);
        }
        versions
    }

    /// The crypto provider with the configured suites (TLS 1.3's always,
    /// then the chosen TLS 1.2 ones in order, or all by default).
    pub fn provider(&self) -> std::sync::Arc<rustls::crypto::CryptoProvider> {
        let mut provider = super::crypto_provider();
        if !self.tls12_cipher_suites.is_empty() {
            let mut suites: Vec<SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .collect();
            suites.extend(self.tls12_cipher_suites.iter().copied());
            provider.cipher_suites = suites;
        }
        std::sync::Arc::new(provider)
    }
}

/// Go's name of a cipher suite (etcd's `--cipher-suites` values) to the
/// rustls suite. `Ok(None)`: a TLS 1.3 suite, always on. Go's names rustls
/// has no implementation of (CBC, RSA key exchange, RC4, 3DES) are refused
/// with that reason; anything else with etcd's message.
pub fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, ConfigError> {
    use rustls::crypto::ring::cipher_suite as cs;
    let suite = match name {
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        // Go accepts both spellings of the ChaCha20 suites.
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA" => {
            return Err(ConfigError::Invalid(format!(
                "TLS cipher suite {name:?} is not supported by raftkv's TLS (rustls); use one of the ECDHE AES-GCM or CHACHA20-POLY1305 suites"
            )))
        }
        other => {
            return Err(ConfigError::Invalid(format!(
                "unexpected TLS cipher suite {other:?}"
            )))
        }
    };
    Ok(Some(suite))
}

/// Which port a [`TlsOptions`] is for; names the flags in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The client port (`--cert-file`, ...).
    Client,
    /// The peer port (`--peer-cert-file`, ...).
    Peer,
}

impl Port {
    fn prefix(self) -> &'static str {
        match self {
            Port::Client => "",
            Port::Peer => "peer-",
        }
    }

    /// The folder under `<data-dir>/fixtures` auto TLS writes to (etcd's).
    pub fn fixtures_dir(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Peer => "peer",
        }
    }
}

/// The TLS settings of one port.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// Which port.
    pub port: Port,
    /// The certificate this member presents (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CAs that sign acceptable client (and, for the peer port's dialer,
    /// server) certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Whether connecting clients must present a certificate the trusted CA
    /// signed (as in etcd, also implied by a trusted CA file).
    pub client_cert_auth: bool,
    /// Generate a self-signed certificate at start when no cert file is given.
    pub auto_tls: bool,
    /// Certificates revoked (PEM or DER CRL), read again when it changes.
    pub crl_file: Option<PathBuf>,
    /// A client certificate's subject CN must be this (peer port only).
    pub allowed_cn: Option<String>,
    /// A client certificate must be valid for this host name.
    pub allowed_hostname: Option<String>,
    /// Versions and suites.
    pub protocol: TlsProtocol,
    /// The certificate was generated by auto TLS (so peers dialing with it
    /// do not verify each other's: no CA signed them, as in etcd).
    pub self_signed: bool,
}

/// The raw flag values of one port, as [`TlsOptions::from_flags`] takes them.
#[derive(Clone, Copy, Debug)]
pub struct TlsFlags<'a> {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert_file: &'a Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: &'a Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca_file: &'a Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls`.
    pub auto_tls: bool,
    /// `--client-crl-file` / `--peer-crl-file`.
    pub crl_file: &'a Option<PathBuf>,
    /// `--peer-cert-allowed-cn` (empty: any).
    pub allowed_cn: &'a str,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`
    /// (empty: any).
    pub allowed_hostname: &'a str,
}

impl TlsOptions {
    /// Validates one port's flags. `urls` are the port's listen and
    /// advertised URLs: an `https://` one needs a certificate (or auto TLS).
    pub fn from_flags(
        port: Port,
        flags: TlsFlags<'_>,
        protocol: &TlsProtocol,
        urls: &[String],
    ) -> Result<Self, ConfigError> {
        let p = port.prefix();
        let nonempty = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
        let cert_file = nonempty(flags.cert_file);
        let key_file = nonempty(flags.key_file);
        let trusted_ca_file = nonempty(flags.trusted_ca_file);
        if cert_file.is_some() != key_file.is_some() {
            return Err(ConfigError::Invalid(format!(
                "--{p}cert-file and --{p}key-file must both be given or both be absent"
            )));
        }
        if flags.client_cert_auth && trusted_ca_file.is_none() {
            // etcd would start and then refuse every client: no CA to
            // verify their certificates against.
            return Err(ConfigError::Invalid(format!(
                "--{p}client-cert-auth needs --{p}trusted-ca-file to verify client certificates against"
            )));
        }
        let auto_tls = flags.auto_tls && cert_file.is_none();
        if flags.auto_tls && cert_file.is_some() {
            tracing::warn!("ignoring --{p}auto-tls since certs given");
        }
        for url in urls {
            if url.starts_with("https://") && cert_file.is_none() && !auto_tls {
                let kind = match port {
                    Port::Client => "client",
                    Port::Peer => "peer",
                };
                return Err(ConfigError::Invalid(format!(
                    "TLS key/cert (--{p}cert-file, --{p}key-file) must be provided for {kind} url {url} with HTTPS scheme"
                )));
            }
        }
        let allowed_cn = Some(flags.allowed_cn.to_string()).filter(|s| !s.is_empty());
        let allowed_hostname = Some(flags.allowed_hostname.to_string()).filter(|s| !s.is_empty());
        if let (Some(cn), Some(host)) = (&allowed_cn, &allowed_hostname) {
            return Err(ConfigError::Invalid(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={host:?})"
            )));
        }
        if let Some(host) = &allowed_hostname {
            if rustls_pki_types::ServerName::try_from(host.as_str()).is_err() {
                let flag = match port {
                    Port::Client => "--client-cert-allowed-hostname",
                    Port::Peer => "--peer-cert-allowed-hostname",
                };
                return Err(ConfigError::Invalid(format!(
                    "{flag} {host:?} is not a host name or IP address"
                )));
            }
        }
        Ok(Self {
            port,
            cert_file,
            key_file,
            trusted_ca_file,
            client_cert_auth: flags.client_cert_auth,
            auto_tls,
            crl_file: nonempty(flags.crl_file),
            allowed_cn,
            allowed_hostname,
            protocol: protocol.clone(),
            self_signed: false,
        })
    }

    /// Whether this port has a certificate to serve TLS with (or will, once
    /// auto TLS made one).
    pub fn has_certificate(&self) -> bool {
        self.cert_file.is_some() || self.auto_tls || self.self_signed
    }

    /// Whether connecting clients must present a verified certificate: as
    /// in etcd, a trusted CA file alone turns that on.
    pub fn requires_client_certificate(&self) -> bool {
        self.client_cert_auth || self.trusted_ca_file.is_some()
    }
}
