//! Accepting connections on a client or peer listener, with TLS when the
//! URL is `https://`.
//!
//! Handshakes run in tasks of their own (bounded in number and time), so a
//! slow or silent client never holds up the next accept. A handshake that
//! fails (an untrusted or expired certificate, a missing one, a plaintext
//! client) is logged with the client's address and the connection closed;
//! the listener goes on. A plaintext HTTP client on a TLS port is answered
//! as Go's (and so etcd's) server answers it: `400 Bad Request`, "Client sent
//! an HTTP request to an HTTPS server."

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::reload::{common_name, Reloading, RevokedSerials};
use super::ClientCertificate;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress on one listener; connections beyond it are
/// closed at once (a flood of half-open handshakes costs no memory).
const HANDSHAKES_MAX: usize = 1024;
/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 128;
/// Pause after a failed accept (out of file descriptors), so the loop does
/// not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The first byte of a TLS record carrying a handshake (RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plaintext client on a TLS port is told (Go's server's words).
const PLAINTEXT_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// What a request knows of the connection it came on: tonic puts this into
/// every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate, on a TLS connection that had one.
    pub client_certificate: Option<ClientCertificate>,
}

/// The TLS side of a listener.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// `--client-crl-file` / `--peer-crl-file`.
    crl: Option<Reloading<RevokedSerials>>,
}

impl ServerTls {
    /// A listener's TLS from a rustls configuration and an optional CRL.
    pub fn new(config: Arc<rustls::ServerConfig>, crl: Option<Reloading<RevokedSerials>>) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            crl,
        }
    }

    /// Runs the server side of a handshake on an accepted connection.
    async fn accept(&self, mut stream: TcpStream) -> io::Result<ServerStream> {
        let remote_addr = stream.peer_addr().ok();
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the TLS handshake",
            ));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            // Best effort: the client learns why, then the connection ends.
            let _ = stream.write_all(PLAINTEXT_ANSWER).await;
            let _ = stream.shutdown().await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a plaintext client on a TLS port",
            ));
        }
        let tls = self.acceptor.accept(stream).await?;
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        if let Some(crl) = &self.crl {
            let revoked = crl.current();
            if certs.iter().any(|c| revoked.revokes(c)) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the client certificate is revoked (CRL)",
                ));
            }
        }
        let client_certificate = certs.first().map(|leaf| ClientCertificate {
            common_name: common_name(leaf),
        });
        Ok(ServerStream::Tls(
            Box::new(tls),
            ConnectionInfo {
                remote_addr,
                client_certificate,
            },
        ))
    }
}

/// An accepted connection, with or without TLS.
pub enum ServerStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, with what the handshake established.
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        ConnectionInfo,
    ),
}

impl tonic::transport::server::Connected for ServerStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            ServerStream::Plain(stream) => ConnectionInfo {
                remote_addr: stream.peer_addr().ok(),
                client_certificate: None,
            },
            ServerStream::Tls(_, info) => info.clone(),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections `listener` accepts, with TCP_NODELAY set (as etcd's Go
/// listeners set it: without it, a response written while the previous one
/// is unacknowledged waits for the client's delayed ACK, 40 ms on Linux),
/// and through a TLS handshake when `tls` is given. The accept loop ends
/// when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<ServerStream>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, tls, sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    sender: mpsc::Sender<io::Result<ServerStream>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let Some(tls) = &tls else {
            if sender.send(Ok(ServerStream::Plain(stream))).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::info!(%remote, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        let tls = tls.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(stream)).await;
                }
                Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(%remote, %err, "TLS handshake failed");
                }
                Ok(Err(err)) => tracing::info!(%remote, %err, "TLS handshake failed"),
                Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
            }
        });
    }
}
