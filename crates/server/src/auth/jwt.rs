//! etcd's `jwt` auth tokens: `--auth-token jwt,pub-key=FILE,priv-key=FILE,
//! sign-method=RS256,ttl=5m`.
//!
//! A JWT names its user and the auth revision it was issued at, and expires
//! after its TTL (claims `username`, `revision`, `exp`, as etcd writes
//! them). Any member verifies it with the public key, with no state kept;
//! one issued before the auth store last changed is refused as `revision of
//! auth store is old`, so clients authenticate anew after every change (as
//! etcd's do). A member given only the public key verifies but cannot
//! issue tokens; one given only the private key verifies with the public
//! half of it, as etcd does.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Why the `--auth-token jwt,...` options are unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// An option that is not `key=value`, repeated, or unknown.
    #[error("--auth-token: invalid option {0:?} (want pub-key=, priv-key=, sign-method=, ttl=)")]
    Option(String),
    /// No or an unknown `sign-method`.
    #[error("--auth-token: invalid sign-method {0:?}")]
    Method(String),
    /// A `ttl` that is not a positive duration.
    #[error("--auth-token: invalid ttl {0:?}")]
    Ttl(String),
    /// A key file could not be read.
    #[error("--auth-token: cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key the method cannot use (or in a form not supported).
    #[error("--auth-token: {which} for {method:?}: {reason}")]
    Key {
        /// `pub-key` or `priv-key`.
        which: &'static str,
        /// The sign method.
        method: String,
        /// Why.
        reason: String,
    },
    /// Neither key given, or no key to verify with.
    #[error("--auth-token: {0}")]
    Missing(String),
}

/// The verified content of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The user.
    pub user: String,
    /// The auth revision it was issued at.
    pub revision: u64,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Issues and verifies JWTs.
pub struct JwtTokens {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// etcd's default JWT TTL.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

impl JwtTokens {
    /// From the options after `jwt,` in `--auth-token` (the key files are
    /// read now).
    pub fn from_options(options: &str) -> Result<Self, JwtConfigError> {
        let mut pub_key = None;
        let mut priv_key = None;
        let mut method = None;
        let mut ttl = DEFAULT_TTL;
        let mut seen = std::collections::HashSet::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| JwtConfigError::Option(option.into()))?;
            if !seen.insert(key) {
                return Err(JwtConfigError::Option(option.into()));
            }
            match key {
                "pub-key" => pub_key = Some(read(value)?),
                "priv-key" => priv_key = Some(read(value)?),
                "sign-method" => method = Some(value.to_string()),
                "ttl" => {
                    ttl = crate::config::parse_duration(value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| JwtConfigError::Ttl(value.into()))?
                }
                _ => return Err(JwtConfigError::Option(option.into())),
            }
        }
        let method = method.unwrap_or_default();
        let algorithm =
            Algorithm::from_str(&method).map_err(|_| JwtConfigError::Method(method.clone()))?;
        let key_error = |which: &'static str| {
            let method = method.clone();
            move |e: jsonwebtoken::errors::Error| JwtConfigError::Key {
                which,
                method: method.clone(),
                reason: e.to_string(),
            }
        };
        // The public key if given, else the public half of the private one.
        let verifying_key =
            |from_pem: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>| match (
                &pub_key, &priv_key,
            ) {
                (Some(public), _) => from_pem(public).map_err(key_error("pub-key")),
                (None, Some(private)) => public_half(algorithm, private, &method),
                (None, None) => Err(JwtConfigError::Missing(
                    "pub-key or priv-key is required".into(),
                )),
            };
        let (encoding, decoding) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // etcd's HMAC key is the priv-key file's bytes.
                let secret = priv_key
                    .ok_or_else(|| JwtConfigError::Missing("HMAC needs priv-key".into()))?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let encoding = priv_key
                    .as_deref()
                    .map(EncodingKey::from_rsa_pem)
                    .transpose()
                    .map_err(key_error("priv-key"))?;
                let decoding = verifying_key(DecodingKey::from_rsa_pem)?;
                (encoding, decoding)
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let encoding = priv_key
                    .as_deref()
                    .map(EncodingKey::from_ec_pem)
                    .transpose()
                    .map_err(key_error("priv-key (PKCS#8 PEM)"))?;
                let decoding = verifying_key(DecodingKey::from_ec_pem)?;
                (encoding, decoding)
            }
            Algorithm::EdDSA => {
                let encoding = priv_key
                    .as_deref()
                    .map(EncodingKey::from_ed_pem)
                    .transpose()
                    .map_err(key_error("priv-key"))?;
                let decoding = verifying_key(DecodingKey::from_ed_pem)?;
                (encoding, decoding)
            }
        };
        let tokens = Self {
            algorithm,
            encoding,
            decoding,
            ttl,
        };
        // A pair that does not match would issue tokens no member accepts.
        if tokens.encoding.is_some() {
            let probe = tokens
                .issue("probe", 0)
                .map_err(|e| JwtConfigError::Missing(format!("cannot sign: {e}")))?;
            if tokens.verify(&probe).is_none() {
                return Err(JwtConfigError::Missing(
                    "public and private keys don't match".into(),
                ));
            }
        }
        Ok(tokens)
    }

    /// A token for `user` at auth `revision`.
    pub fn issue(&self, user: &str, revision: u64) -> Result<String, String> {
        let Some(key) = &self.encoding else {
            return Err("auth: token signing attempted with verify-only key".into());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    /// What `token` says, if it is signed by our key with our method and
    /// not expired.
    pub fn verify(&self, token: &str) -> Option<TokenInfo> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some(TokenInfo {
            user: data.claims.username,
            revision: data.claims.revision,
        })
    }
}

/// The key that verifies what the private key `pem` signs: its public half.
/// etcd needs no `pub-key` when `priv-key` is given; nor does raftkv.
fn public_half(
    algorithm: Algorithm,
    pem: &[u8],
    method: &str,
) -> Result<DecodingKey, JwtConfigError> {
    use ring::signature::{self, KeyPair as _};
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::PrivateKeyDer;

    let refused = |reason: String| JwtConfigError::Key {
        which: "priv-key",
        method: method.to_string(),
        reason,
    };
    let unusable = |e: ring::error::KeyRejected| refused(e.to_string());
    let rsa = matches!(
        algorithm,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    );
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| refused(e.to_string()))?;
    let rsa_pair = match &der {
        PrivateKeyDer::Pkcs1(key) if rsa => {
            Some(signature::RsaKeyPair::from_der(key.secret_pkcs1_der()))
        }
        PrivateKeyDer::Pkcs8(key) if rsa => {
            Some(signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()))
        }
        _ => None,
    };
    if let Some(pair) = rsa_pair {
        return Ok(DecodingKey::from_rsa_der(
            pair.map_err(unusable)?.public().as_ref(),
        ));
    }
    match (algorithm, &der) {
        (Algorithm::ES256 | Algorithm::ES384, PrivateKeyDer::Pkcs8(key)) => {
            let curve = if algorithm == Algorithm::ES256 {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let random = ring::rand::SystemRandom::new();
            let pair = signature::EcdsaKeyPair::from_pkcs8(curve, key.secret_pkcs8_der(), &random)
                .map_err(unusable)?;
            // The uncompressed point, which is what the verifier takes.
            Ok(DecodingKey::from_ec_der(pair.public_key().as_ref()))
        }
        (Algorithm::EdDSA, PrivateKeyDer::Pkcs8(key)) => {
            let pair =
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.secret_pkcs8_der())
                    .map_err(unusable)?;
            Ok(DecodingKey::from_ed_der(pair.public_key().as_ref()))
        }
        _ => Err(refused(
            "not a private key of this method (ECDSA and Ed25519 keys must be PKCS#8 PEM)".into(),
        )),
    }
}

fn read(path: &str) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|e| JwtConfigError::Read {
        path: path.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac(dir: &tempfile::TempDir, ttl: &str) -> JwtTokens {
        let key = dir.path().join("secret");
        std::fs::write(&key, b"a shared secret of enough length").expect("key");
        JwtTokens::from_options(&format!(
            "priv-key={},sign-method=HS256,ttl={ttl}",
            key.display()
        ))
        .expect("options")
    }

    #[test]
    fn a_token_names_its_user_and_revision_and_a_forged_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = hmac(&dir, "5m");
        let token = tokens.issue("alice", 7).expect("issue");
        assert_eq!(
            tokens.verify(&token),
            Some(TokenInfo {
                user: "alice".into(),
                revision: 7
            })
        );
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(tokens.verify(&forged), None);
        assert_eq!(tokens.verify("not.a.jwt"), None);
        let other = {
            let dir = tempfile::tempdir().expect("tempdir");
            let key = dir.path().join("secret");
            std::fs::write(&key, b"another secret entirely, also long").expect("key");
            JwtTokens::from_options(&format!("priv-key={},sign-method=HS256", key.display()))
                .expect("options")
        };
        assert_eq!(other.verify(&token), None, "another key's token");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = hmac(&dir, "1s");
        let token = tokens.issue("alice", 1).expect("issue");
        assert!(tokens.verify(&token).is_some());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(tokens.verify(&token), None);
    }

    /// Tokens issued and verified by a member given only `priv-key` (whose
    /// public half verifies), and accepted by a member given only the
    /// public key.
    fn private_key_alone_verifies(dir: &tempfile::TempDir, method: &str, private_pem: &[u8]) {
        let private = dir.path().join(format!("{method}.key"));
        std::fs::write(&private, private_pem).expect("write key");
        let tokens = JwtTokens::from_options(&format!(
            "priv-key={},sign-method={method}",
            private.display()
        ))
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        let token = tokens.issue("alice", 3).expect("issue");
        let info = tokens.verify(&token).expect("verified by the derived key");
        assert_eq!(info.user, "alice", "{method}");
        let mut forged = token.clone();
        forged.truncate(forged.len() - 4);
        forged.push_str("AAAA");
        assert_eq!(tokens.verify(&forged), None, "{method}");
    }

    #[test]
    fn a_private_key_alone_is_enough_for_every_method() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Test-only RSA keys (rcgen cannot make RSA keys): PKCS#1 and the
        // same key as PKCS#8.
        for (method, pem) in [
            ("RS256", &include_bytes!("testdata/rsa-pkcs1.pem")[..]),
            ("PS384", &include_bytes!("testdata/rsa-pkcs8.pem")[..]),
        ] {
            private_key_alone_verifies(&dir, method, pem);
        }
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
        private_key_alone_verifies(&dir, "ES256", p256.serialize_pem().as_bytes());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384");
        private_key_alone_verifies(&dir, "ES384", p384.serialize_pem().as_bytes());
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519");
        private_key_alone_verifies(&dir, "EdDSA", ed.serialize_pem().as_bytes());
        // A key of another kind than the method is refused at start.
        let wrong = dir.path().join("wrong.key");
        std::fs::write(&wrong, p256.serialize_pem()).expect("write");
        let err =
            JwtTokens::from_options(&format!("priv-key={},sign-method=RS256", wrong.display()))
                .expect_err("an EC key for RS256");
        assert!(err.to_string().contains("priv-key"), "{err}");
    }

    #[test]
    fn bad_options_are_refused_clearly() {
        let err = |options: &str| {
            JwtTokens::from_options(options)
                .expect_err(options)
                .to_string()
        };
        assert!(err("sign-method=XX256").contains("invalid sign-method"));
        assert!(err("sign-method=RS256").contains("pub-key or priv-key is required"));
        assert!(err("sign-method=HS256").contains("HMAC needs priv-key"));
        assert!(err("pub-key=/nonexistent,sign-method=RS256").contains("cannot read /nonexistent"));
        assert!(err("bogus").contains("invalid option"));
        assert!(err("ttl=0,sign-method=HS256").contains("invalid ttl"));
    }
}
