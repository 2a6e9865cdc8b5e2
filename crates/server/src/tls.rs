//! TLS on the client and peer ports.
//!
//! What the rest of the server reads of a TLS connection: the identity in
//! the client certificate a listener verified. Listeners put a
//! [`ClientCertificate`] into the extensions of every request that came over
//! a connection with a verified client certificate.

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
