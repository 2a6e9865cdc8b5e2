//! The network between members: a TCP proxy in front of every port, and the
//! state of every directed link.
//!
//! Members advertise the proxy's address, never their own, so every byte
//! between two members (and between a client and a member) crosses a proxy.
//! A connection's source is told by its source address: each member has its
//! own 127.0.0.0/8 address and binds its outgoing peer connections to it
//! (`--experimental-peer-source-ip`). That makes cuts per directed link
//! possible without root: bytes from A to B follow the mode of link A→B,
//! and the answers on the same connection follow B→A, as on a real network
//! where a cut direction loses data packets and acknowledgements alike.
//!
//! ```text
//!  member A ──▶ proxy of B ──(mode A→B)──▶ member B
//!          ◀──            ◀─(mode B→A)──
//! ```
//!
//! A cut link holds what is sent into it, as TCP would keep retransmitting
//! through a partition: nothing gets through while the cut lasts, and what
//! was sent arrives in order once it heals, unless the sender's connection
//! closes first (the sender died), which loses it. Dropping bytes out of
//! the middle of a live TCP stream, which no real network does, would hand
//! the receiver a stream with a hole in it (an HTTP/2 peer may then never
//! notice that whole messages went missing).
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A member, by its index in the cluster.
    Node(usize),
    /// Any client (the harness's workers, or anything not a member).
    Client,
}

/// A direction between two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    /// Where bytes come from.
    pub from: Endpoint,
    /// Where they go.
    pub to: Endpoint,
}

impl Link {
    /// Between two members.
    pub fn nodes(from: usize, to: usize) -> Self {
        Self {
            from: Endpoint::Node(from),
            to: Endpoint::Node(to),
        }
    }
}

/// What a link does to the bytes crossing it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkMode {
    /// Delivered at once.
    #[default]
    Pass,
    /// Delivered in order, each chunk this much later than it was sent.
    Delay(Duration),
    /// Held: the sender sees no error and the receiver nothing until the
    /// link passes again; lost if the sender's connection closes first.
    Cut,
}

/// The modes of every link; links not set pass.
#[derive(Debug, Default)]
pub struct Network {
    modes: Mutex<HashMap<Link, LinkMode>>,
}

impl Network {
    /// Sets one link's mode.
    pub fn set(&self, link: Link, mode: LinkMode) {
        let mut modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        if mode == LinkMode::Pass {
            modes.remove(&link);
        } else {
            modes.insert(link, mode);
        }
    }

    /// A link's mode now.
    pub fn mode(&self, link: Link) -> LinkMode {
        let modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        modes.get(&link).copied().unwrap_or_default()
    }

    /// Every link passes again.
    pub fn heal(&self) {
        self.modes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The links that do not pass, for reports.
    pub fn faulty_links(&self) -> Vec<(Link, LinkMode)> {
        let modes = self.modes.lock().unwrap_or_else(|e| e.into_inner());
        let mut links: Vec<_> = modes.iter().map(|(l, m)| (*l, *m)).collect();
        links.sort_by_key(|(l, _)| *l);
        links
    }
}

/// Says which endpoint a connection comes from, by its source address.
pub type Classifier = Arc<dyn Fn(IpAddr) -> Endpoint + Send + Sync>;

/// A proxy in front of one port. Dropping it closes its listener and every
/// connection through it.
pub struct Proxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks one) and forwards each connection
    /// to `target`, which is endpoint `to`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        to: Endpoint,
        classify: Classifier,
        network: Arc<Network>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, target, to, classify, network));
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    to: Endpoint,
    classify: Classifier,
    network: Arc<Network>,
) {
    // Owned here so that aborting this task ends every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, source)) = accepted else { continue };
                let from = classify(source.ip());
                connections.spawn(forward(inbound, target, Link { from, to }, network.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Carries one connection both ways until either side closes it.
async fn forward(inbound: TcpStream, target: SocketAddr, link: Link, network: Arc<Network>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        // The member is down: the client sees its connection closed, as it
        // would see a refused one.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let back = Link {
        from: link.to,
        to: link.from,
    };
    tokio::join!(
        pump(in_read, out_write, link, network.clone()),
        pump(out_read, in_write, back, network),
    );
}

/// A chunk on its way, with the moment it may be written.
struct InFlight {
    due: Instant,
    bytes: Vec<u8>,
}

/// How often a writer held by a cut link looks again.
const CUT_POLL: Duration = Duration::from_millis(20);

/// Copies one direction, applying the link's mode.
async fn pump(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    link: Link,
    net: Arc<Network>,
) {
    let (queue, mut due) = mpsc::unbounded_channel::<InFlight>();
    let sender_closed = Arc::new(AtomicBool::new(false));
    let read_side = {
        let sender_closed = sender_closed.clone();
        let net = net.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let delay = match net.mode(link) {
                    LinkMode::Delay(delay) => delay,
                    LinkMode::Pass | LinkMode::Cut => Duration::ZERO,
                };
                let chunk = InFlight {
                    due: Instant::now() + delay,
                    bytes: buf[..n].to_vec(),
                };
                if queue.send(chunk).is_err() {
                    break;
                }
            }
            sender_closed.store(true, Ordering::Release);
        }
    };
    let write_side = async move {
        while let Some(chunk) = due.recv().await {
            tokio::time::sleep_until(chunk.due).await;
            while net.mode(link) == LinkMode::Cut {
                if sender_closed.load(Ordering::Acquire) {
                    // The sender is gone with everything it had not yet
                    // got through.
                    let _ = writer.shutdown().await;
                    return;
                }
                tokio::time::sleep(CUT_POLL).await;
            }
            if writer.write_all(&chunk.bytes).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(read_side, write_side);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, stream.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        assert_eq!(&buf, b"ping");
        Some(started.elapsed())
    }

    #[tokio::test]
    async fn links_pass_delay_and_hold_each_direction() {
        let network = Arc::new(Network::default());
        let target = echo_server().await;
        let classify: Classifier = Arc::new(|_| Endpoint::Client);
        let proxy = Proxy::start(
            "127.0.0.1:0".parse().expect("addr"),
            target,
            Endpoint::Node(0),
            classify,
            network.clone(),
        )
        .await
        .expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        let to_node = Link {
            from: Endpoint::Client,
            to: Endpoint::Node(0),
        };
        let from_node = Link {
            from: Endpoint::Node(0),
            to: Endpoint::Client,
        };

        let fast = round_trip(&mut stream, Duration::from_secs(5)).await;
        assert!(fast.expect("passes") < Duration::from_millis(200));

        network.set(to_node, LinkMode::Delay(Duration::from_millis(300)));
        let slow = round_trip(&mut stream, Duration::from_secs(5)).await;
        assert!(slow.expect("delayed, not lost") >= Duration::from_millis(300));

        // Answers are held: the request arrives, the echo does not...
        network.set(to_node, LinkMode::Pass);
        network.set(from_node, LinkMode::Cut);
        stream.write_all(b"held").await.expect("write");
        let mut buf = [0u8; 4];
        let early =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await;
        assert!(early.is_err(), "nothing gets through a cut link");

        // ...until the link heals: then it arrives, whole and in order.
        network.heal();
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("delivered after the heal")
            .expect("read");
        assert_eq!(&buf, b"held");
        assert!(round_trip(&mut stream, Duration::from_secs(5))
            .await
            .is_some());
        assert!(network.faulty_links().is_empty());
    }

    #[tokio::test]
    async fn bytes_held_by_a_cut_link_are_lost_when_their_sender_closes() {
        let network = Arc::new(Network::default());
        let target = echo_server().await;
        let classify: Classifier = Arc::new(|_| Endpoint::Client);
        let proxy = Proxy::start(
            "127.0.0.1:0".parse().expect("addr"),
            target,
            Endpoint::Node(0),
            classify,
            network.clone(),
        )
        .await
        .expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        let to_node = Link {
            from: Endpoint::Client,
            to: Endpoint::Node(0),
        };
        network.set(to_node, LinkMode::Delay(Duration::from_millis(400)));
        stream.write_all(b"lost").await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        network.set(to_node, LinkMode::Cut);
        // The sender goes away while its bytes are held.
        stream.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(800), stream.read_to_end(&mut rest)).await;
        network.heal();
        assert!(
            rest.is_empty(),
            "the held bytes never reached the echo server: {rest:?}"
        );
    }
}
