//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate made at
//! start, as etcd makes one: written to `<data-dir>/fixtures/client` (or
//! `peer`) as `cert.pem` and `key.pem`, and reused from there when both
//! files exist already.

use std::path::{Path, PathBuf};

use super::TlsError;

/// How long an auto TLS certificate is valid (etcd's default
/// `--self-signed-cert-validity` is one year).
const VALIDITY_DAYS: i64 = 365;

/// The cert and key files of a self-signed certificate for `hosts` in
/// `dir`, made now unless both files are there.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Read { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let generate = |e: rcgen::Error| TlsError::Invalid(format!("cannot make a certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(generate)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "etcd");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    // Peers present the same certificate as servers and as clients.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    tracing::info!(cert = %cert_path.display(), ?hosts, "made a self-signed certificate (auto TLS)");
    Ok((cert_path, key_path))
}

/// Writes a key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The host names and IPs of `urls` (for the certificate's SANs).
pub fn hosts_of(urls: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = urls
        .iter()
        .filter_map(|url| {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let authority = rest.split('/').next()?;
            let host = match authority.rsplit_once(':') {
                Some((host, _port)) => host,
                None => authority,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty()).then(|| host.to_string())
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}
