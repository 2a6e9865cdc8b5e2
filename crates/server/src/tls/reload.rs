//! Certificate material read from files, and read again when they change.
//!
//! etcd re-reads its key pair on every handshake, so a rotated certificate
//! is served without a restart. Here each handshake looks at the files'
//! modification stamps (a `stat` each, no read) and loads them again only
//! when a stamp moved. A load that fails (a half-written pair during a
//! rotation, a bad file) keeps the material in use and is logged; it is
//! tried again once the files change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::TlsError;

/// What identifies a version of a file: a rename over it changes the inode,
/// an in-place write the modification time or the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// A value loaded from `paths`, loaded again when any of them changes.
pub struct Reloading<T> {
    paths: Vec<PathBuf>,
    load: fn(&[PathBuf]) -> Result<T, TlsError>,
    state: Mutex<(Vec<Option<Stamp>>, Arc<T>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("paths", &self.paths)
            .finish()
    }
}

impl<T> Reloading<T> {
    /// Loads now: a failure here is a startup error.
    pub fn new(
        paths: Vec<PathBuf>,
        load: fn(&[PathBuf]) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        let value = Arc::new(load(&paths)?);
        Ok(Self {
            paths,
            load,
            state: Mutex::new((stamps, value)),
        })
    }

    /// The current value, loaded again first if a file changed.
    pub fn current(&self) -> Arc<T> {
        let stamps: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        // A poisoned lock only means a panic elsewhere while holding it;
        // the value inside is still a whole one. The lock is held across a
        // reload (a few small file reads, only when a stamp moved) so that
        // handshakes racing a rotation load the new files once.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != stamps {
            state.0 = stamps;
            match (self.load)(&self.paths) {
                Ok(value) => {
                    tracing::info!(files = ?self.paths, "TLS files changed; reloaded");
                    state.1 = Arc::new(value);
                }
                Err(err) => {
                    tracing::warn!(files = ?self.paths, %err, "TLS files changed but cannot be loaded; keeping the ones in use")
                }
            }
        }
        state.1.clone()
    }
}

/// Reads a PEM file's certificates (a chain, leaf first; or a CA bundle).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Parse {
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// Loads `[cert_file, key_file]` into a key pair rustls can sign with.
pub fn load_key_pair(paths: &[PathBuf]) -> Result<CertifiedKey, TlsError> {
    let [cert_path, key_path] = paths else {
        return Err(TlsError::Invalid(
            "a key pair needs a cert and a key file".into(),
        ));
    };
    let chain = read_certificates(cert_path)?;
    let key_bytes = std::fs::read(key_path).map_err(|source| TlsError::Read {
        path: key_path.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Parse {
        path: key_path.clone(),
        reason: format!("no usable PEM private key ({e})"),
    })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Parse {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    // A cert and a key that do not belong together would fail every
    // handshake; say so now instead.
    certified.keys_match().map_err(|e| TlsError::Parse {
        path: cert_path.clone(),
        reason: format!("does not match the key in {} ({e})", key_path.display()),
    })?;
    Ok(certified)
}

/// Loads `[ca_file]` into a root store.
pub fn load_roots(paths: &[PathBuf]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for path in paths {
        for cert in read_certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::Parse {
                path: path.clone(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
        }
    }
    Ok(roots)
}

/// The serial numbers a CRL revokes, leading zero bytes cut (as Go's
/// `big.Int.Bytes()` compares them in etcd).
#[derive(Debug, Default)]
pub struct RevokedSerials(pub Vec<Vec<u8>>);

impl RevokedSerials {
    /// Whether a certificate (DER) is revoked.
    pub fn revokes(&self, cert: &CertificateDer<'_>) -> bool {
        match x509_parser::parse_x509_certificate(cert.as_ref()) {
            Ok((_, parsed)) => {
                let serial = trim_serial(parsed.tbs_certificate.raw_serial());
                self.0.iter().any(|s| s.as_slice() == serial)
            }
            // Not parsable here: the handshake's verifier already accepted
            // it, so it is not ours to refuse for this reason.
            Err(_) => false,
        }
    }
}

fn trim_serial(serial: &[u8]) -> &[u8] {
    let zeros = serial.iter().take_while(|&&b| b == 0).count();
    &serial[zeros..]
}

/// Loads `[crl_file]` (PEM or DER).
pub fn load_crl(paths: &[PathBuf]) -> Result<RevokedSerials, TlsError> {
    let mut revoked = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
        let ders: Vec<Vec<u8>> = match CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(list) if !list.is_empty() => list.iter().map(|d| d.as_ref().to_vec()).collect(),
            _ => vec![bytes],
        };
        for der in ders {
            let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| TlsError::Parse {
                path: path.clone(),
                reason: format!("not a certificate revocation list ({e})"),
            })?;
            revoked.extend(
                crl.iter_revoked_certificates()
                    .map(|r| trim_serial(r.raw_serial()).to_vec()),
            );
        }
    }
    Ok(RevokedSerials(revoked))
}

/// The subject Common Name of a certificate (DER), if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
