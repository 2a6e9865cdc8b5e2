//! The client side: a tonic connector that opens TCP (from a chosen source
//! address, TCP_NODELAY on) and, for an `https://` URL, runs a TLS
//! handshake with a rustls client configuration. Peers dial each other with
//! it; tests and tools can dial a TLS client port with it too.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Opens connections for a tonic [`tonic::transport::Endpoint`]
/// (`connect_with_connector`).
#[derive(Clone, Debug, Default)]
pub struct Connector {
    /// The client configuration for `https://` URLs; `None` refuses them.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Local address to connect from (None: the OS picks).
    pub local_address: Option<IpAddr>,
}

impl Connector {
    /// Opens a connection to `uri`.
    pub async fn open(&self, uri: &http::Uri) -> io::Result<ClientStream> {
        let secure = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let stream = self.connect_tcp(&host, port).await?;
        if !secure {
            return Ok(ClientStream::Plain(stream));
        }
        let Some(tls) = &self.tls else {
            return Err(io::Error::other(format!(
                "{uri}: an https:// URL, but no TLS is configured to dial it with (--peer-cert-file/--peer-key-file/--peer-trusted-ca-file or --peer-auto-tls)"
            )));
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await?;
        Ok(ClientStream::Tls(Box::new(tls)))
    }

    async fn connect_tcp(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let mut last_error = None;
        for addr in tokio::net::lookup_host((host, port)).await? {
            match self.connect_addr(addr).await {
                Ok(stream) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%err, "cannot set TCP_NODELAY");
                    }
                    return Ok(stream);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: no address to connect to"),
            )
        }))
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = self.local_address {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(addr).await
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.open(&uri).await.map(TokioIo::new) })
    }
}

/// An outgoing connection, with or without TLS.
pub enum ClientStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The server's certificate chain, on a TLS connection.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(tls) => tls.get_ref().1.peer_certificates(),
        }
    }
}

impl ClientStream {
    /// The TLS version and cipher suite negotiated, on a TLS connection.
    pub fn negotiated(&self) -> Option<(rustls::ProtocolVersion, rustls::CipherSuite)> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(tls) => {
                let conn = tls.get_ref().1;
                Some((
                    conn.protocol_version()?,
                    conn.negotiated_cipher_suite()?.suite(),
                ))
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
