//! How a member opens connections to its peers.
//!
//! Every outgoing peer connection (the Raft stream, the join-time member
//! query, lease and promotion hand-overs to the leader) is made here, so
//! one setting governs them all: `--experimental-peer-source-ip` binds
//! them to a chosen local address. On a multi-homed host that keeps peer
//! traffic on the interface firewalls expect; on loopback it lets a test
//! harness tell which member a connection comes from, as every member may
//! have its own 127.0.0.0/8 address.

use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Longest wait for a TCP connection to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to peers, from a fixed source address if configured.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerDialer {
    source_ip: Option<IpAddr>,
}

impl PeerDialer {
    /// A dialer binding connections to `source_ip` (None: the OS picks).
    pub fn new(source_ip: Option<IpAddr>) -> Self {
        Self { source_ip }
    }

    /// The endpoint for a peer URL, not yet connected.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(url.to_string())?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .local_address(self.source_ip))
    }

    /// Connects now.
    pub async fn connect(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        self.endpoint(url)?.connect().await
    }
}
