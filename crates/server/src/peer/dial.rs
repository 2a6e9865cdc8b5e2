//! How a member opens connections to its peers.
//!
//! Every outgoing peer connection (the Raft stream, the join-time member
//! query, lease and promotion hand-overs to the leader) is made here, so
//! one setting governs them all: `--experimental-peer-source-ip` binds
//! them to a chosen local address (on a multi-homed host that keeps peer
//! traffic on the interface firewalls expect; on loopback it lets a test
//! harness tell which member a connection comes from, as every member may
//! have its own 127.0.0.0/8 address), and an `https://` peer URL is dialed
//! with TLS, presenting the peer certificate and verifying the peer's
//! against `--peer-trusted-ca-file` (see [`crate::tls::client_config`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::dial::Connector;

/// Longest wait for a TCP connection (and TLS handshake) to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to peers, from a fixed source address if configured,
/// with TLS for `https://` peer URLs.
#[derive(Clone, Debug, Default)]
pub struct PeerDialer {
    source_ip: Option<IpAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PeerDialer {
    /// A dialer binding connections to `source_ip` (None: the OS picks),
    /// dialing `https://` peers with `tls` (None: such URLs fail to dial).
    pub fn new(source_ip: Option<IpAddr>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { source_ip, tls }
    }

    /// The endpoint for a peer URL, not yet connected.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(url.to_string())?.connect_timeout(PEER_CONNECT_TIMEOUT))
    }

    fn connector(&self) -> Connector {
        Connector {
            tls: self.tls.clone(),
            local_address: self.source_ip,
        }
    }

    /// Connects now.
    pub async fn connect(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        self.endpoint(url)?
            .connect_with_connector(self.connector())
            .await
    }

    /// Connects `endpoint` (made by [`PeerDialer::endpoint`], then tuned)
    /// now.
    pub async fn connect_endpoint(
        &self,
        endpoint: Endpoint,
    ) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    /// A channel to `endpoint` that connects on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }
}
