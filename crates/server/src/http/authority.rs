//! Requests whose `:authority` is a whole URL, as etcd's Go client sends them.
//!
//! etcd's Go client (3.4) dials one member by the URL it was given, scheme included, when a
//! call must reach that member and no other: `etcdctl --endpoints=http://host:port endpoint
//! status`, `endpoint hashkv`, `defrag`. grpc-go then sends the URL itself as the request's
//! `:authority`. An authority has no scheme (RFC 3986), and the h2 crate under tonic resets
//! such a request with PROTOCOL_ERROR, where etcd's server (grpc-go's) never looks at it.
//!
//! [`AuthorityRepair`] stands between the socket and the HTTP/2 server and repairs the field
//! on its way in:
//!
//! - It decodes the first header block of a connection. If that block's authority is valid,
//!   or the connection is not HTTP/2 (HTTP/1.1 shares the port), it steps aside: the server
//!   then reads the socket directly, and the connection costs nothing more. A client's
//!   authority is the same for every request of a connection (grpc-go sets it per channel).
//! - Otherwise it re-encodes every header block of the connection, the scheme and any path
//!   cut from the authority (a value that is still not an authority is left out). Its blocks
//!   hold only literal fields that are not indexed, so the server's HPACK table stays empty
//!   and can never disagree with the client's, which this module tracks with a decoder of its
//!   own. Every other frame passes unchanged, and so does everything the server writes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's initial value).
const FRAME_PAYLOAD_MAX: usize = 16_384;
/// Largest header block this layer holds while it decodes it, compressed. A gRPC request's
/// block is a few hundred bytes.
pub const HEADER_BLOCK_BYTES_MAX: usize = 64 << 10;
/// Largest decoded header list this layer builds, counted as HPACK counts a field (name,
/// value and 32 bytes). Above the 16 KiB the server (hyper) accepts, so that the server, not
/// this layer, answers a list too large; far below what a small block can expand to.
pub const HEADER_LIST_BYTES_MAX: usize = 64 << 10;
/// The HPACK table size the server announces (SETTINGS_HEADER_TABLE_SIZE's initial value,
/// which h2 keeps): the client's table can never be larger.
const HPACK_TABLE_BYTES: usize = 4_096;
const READ_CHUNK: usize = 8_192;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Not yet sure the client speaks HTTP/2.
    Preface,
    /// HTTP/2, before the end of the first header block.
    FirstBlock,
    /// The client sends URLs as authorities: every header block is re-encoded.
    Rewrite,
    /// Nothing to repair: reads go straight to the socket.
    Direct,
}

/// A header block being collected, from its HEADERS frame to its END_HEADERS flag.
struct HeaderBlock {
    stream_id: u32,
    end_stream: bool,
    /// The block's fragments, padding and priority taken out.
    fragments: Vec<u8>,
    /// The frames as they came, to pass on unchanged if nothing needs repair.
    frames: Vec<u8>,
}

/// A client connection whose requests' `:authority` is repaired; see the module doc.
pub struct AuthorityRepair<S> {
    inner: S,
    mode: Mode,
    /// Read from the socket, not yet looked at.
    raw: BytesMut,
    /// Looked at, for the server to read.
    ready: BytesMut,
    /// Bytes of the current frame's payload still to pass on unchanged.
    passing: usize,
    block: Option<HeaderBlock>,
    /// Tracks the client's HPACK table; boxed, and dropped once the connection goes direct.
    decoder: Option<Box<loona_hpack::Decoder<'static>>>,
    /// Whether header blocks were re-encoded (the mode ends at the client's end of input).
    rewrote: bool,
}

impl<S> AuthorityRepair<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        AuthorityRepair {
            inner,
            mode: Mode::Preface,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            passing: 0,
            block: None,
            decoder: None,
            rewrote: false,
        }
    }

    /// Whether the connection's header blocks were re-encoded.
    pub fn rewrote_header_blocks(&self) -> bool {
        self.rewrote
    }

    /// Moves what can be decided from `raw` to `ready`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Direct => {
                    self.go_direct();
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.go_direct();
                        return Ok(());
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.pass(PREFACE.len());
                    self.mode = Mode::FirstBlock;
                    let mut decoder = loona_hpack::Decoder::new();
                    decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
                    self.decoder = Some(Box::new(decoder));
                }
                Mode::FirstBlock | Mode::Rewrite => {
                    if self.passing > 0 {
                        let n = self.passing.min(self.raw.len());
                        if n == 0 {
                            return Ok(());
                        }
                        self.pass(n);
                        self.passing -= n;
                        continue;
                    }
                    if self.raw.len() < FRAME_HEAD_BYTES {
                        return Ok(());
                    }
                    let head = FrameHead::parse(&self.raw[..FRAME_HEAD_BYTES]);
                    let in_block = self.block.is_some();
                    let header_frame = head.kind == HEADERS || head.kind == CONTINUATION;
                    if !header_frame && !in_block {
                        self.pass(FRAME_HEAD_BYTES);
                        self.passing = head.len;
                        continue;
                    }
                    let fits_block = match &self.block {
                        None => head.kind == HEADERS,
                        Some(block) => {
                            head.kind == CONTINUATION
                                && head.stream_id == block.stream_id
                                && block.fragments.len() + head.len <= HEADER_BLOCK_BYTES_MAX
                        }
                    };
                    if !fits_block || head.len > FRAME_PAYLOAD_MAX {
                        self.refuse("a header frame out of order or too large")?;
                        continue;
                    }
                    if self.raw.len() < FRAME_HEAD_BYTES + head.len {
                        self.raw
                            .reserve(FRAME_HEAD_BYTES + head.len - self.raw.len());
                        return Ok(());
                    }
                    let payload = &self.raw[FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + head.len];
                    let Some(fragment) = fragment_range(&head, payload) else {
                        self.refuse("a header frame with bad padding")?;
                        continue;
                    };
                    let frame = self.raw.split_to(FRAME_HEAD_BYTES + head.len);
                    let fragment = &frame[FRAME_HEAD_BYTES..][fragment];
                    let block = self.block.get_or_insert_with(|| HeaderBlock {
                        stream_id: head.stream_id,
                        end_stream: head.flags & END_STREAM != 0,
                        fragments: Vec::new(),
                        frames: Vec::new(),
                    });
                    block.fragments.extend_from_slice(fragment);
                    if self.mode == Mode::FirstBlock {
                        block.frames.extend_from_slice(&frame);
                    }
                    if head.flags & END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
            }
        }
    }

    /// Decides what a whole header block becomes.
    fn finish_block(&mut self) -> io::Result<()> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let fields = match decode_limited(decoder, &block.fragments) {
            Ok(fields) => fields,
            Err(err) if self.mode == Mode::FirstBlock => {
                // Not ours to judge: the server answers a bad block itself.
                tracing::debug!(%err, "first header block passed on as it came");
                self.ready.extend_from_slice(&block.frames);
                self.go_direct();
                return Ok(());
            }
            Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        };
        if self.mode == Mode::FirstBlock {
            if fields
                .iter()
                .all(|(name, value)| authority_is_valid(name, value))
            {
                self.ready.extend_from_slice(&block.frames);
                self.mode = Mode::Direct;
                return Ok(());
            }
            tracing::debug!("client sends a URL as :authority; repairing its header blocks");
            self.mode = Mode::Rewrite;
            self.rewrote = true;
        }
        let encoded = encode_block(&fields);
        write_header_frames(&mut self.ready, block.stream_id, block.end_stream, &encoded);
        Ok(())
    }

    /// A frame sequence this layer cannot re-encode. Before the first block is decided, it
    /// goes to the server as it came (which answers it); once blocks are re-encoded, the
    /// connection ends.
    fn refuse(&mut self, what: &str) -> io::Result<()> {
        if self.mode == Mode::FirstBlock {
            tracing::debug!(what, "passing the connection on as it came");
            if let Some(block) = self.block.take() {
                self.ready.extend_from_slice(&block.frames);
            }
            self.mode = Mode::Direct;
            return Ok(());
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
    }

    /// Passes the first `n` raw bytes on unchanged.
    fn pass(&mut self, n: usize) {
        let bytes = self.raw.split_to(n);
        self.ready.extend_from_slice(&bytes);
    }

    /// Steps aside: whatever was read goes on unchanged, and later reads bypass this layer.
    fn go_direct(&mut self) {
        self.mode = Mode::Direct;
        self.decoder = None;
        let rest = self.raw.split();
        self.ready.extend_from_slice(&rest);
    }

    /// The client closed its side. An unfinished frame goes on unchanged if nothing was
    /// re-encoded yet; otherwise it is dropped (it could not be completed anyway).
    fn end_of_input(&mut self) {
        let block = self.block.take();
        if self.mode == Mode::Rewrite {
            self.raw.clear();
        } else if let Some(block) = block {
            self.ready.extend_from_slice(&block.frames);
        }
        self.go_direct();
    }
}

/// Decodes a header block, keeping at most [`HEADER_LIST_BYTES_MAX`] of fields. The whole
/// block is decoded even past that, so `decoder`'s table stays the client's.
fn decode_limited(
    decoder: &mut loona_hpack::Decoder<'static>,
    block: &[u8],
) -> Result<Vec<Field>, String> {
    let mut fields = Vec::new();
    let mut list_bytes = 0usize;
    decoder
        .decode_with_cb(block, |name, value| {
            list_bytes = list_bytes.saturating_add(name.len() + value.len() + 32);
            if list_bytes <= HEADER_LIST_BYTES_MAX {
                fields.push((name.into_owned(), value.into_owned()));
            }
        })
        .map_err(|err| format!("undecodable header block: {err}"))?;
    if list_bytes > HEADER_LIST_BYTES_MAX {
        return Err(format!(
            "header list of {list_bytes} bytes, more than {HEADER_LIST_BYTES_MAX}"
        ));
    }
    Ok(fields)
}

/// A decoded header field: name and value.
type Field = (Vec<u8>, Vec<u8>);

/// The fixed part of a frame.
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8]) -> FrameHead {
        FrameHead {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

/// Where the header block fragment lies in a HEADERS or CONTINUATION frame's payload;
/// `None` if the padding or priority fields do not fit.
fn fragment_range(head: &FrameHead, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    if head.kind != HEADERS {
        return Some(0..payload.len());
    }
    let mut start = 0;
    let mut padding = 0;
    if head.flags & PADDED != 0 {
        padding = usize::from(*payload.first()?);
        start = 1;
    }
    if head.flags & PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(padding)?;
    (start <= end).then_some(start..end)
}

/// False only for an `:authority` field that is not a valid authority.
fn authority_is_valid(name: &[u8], value: &[u8]) -> bool {
    name != b":authority" || http::uri::Authority::try_from(value).is_ok()
}

/// `scheme://host:port/path` becomes `host:port`; `None` if no valid authority is left.
fn repaired_authority(value: &[u8]) -> Option<&[u8]> {
    let after_scheme = value
        .windows(3)
        .position(|w| w == b"://")
        .map_or(value, |at| &value[at + 3..]);
    let end = after_scheme
        .iter()
        .position(|&b| b == b'/')
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..end];
    http::uri::Authority::try_from(authority)
        .is_ok()
        .then_some(authority)
}

/// `fields` as an HPACK block of literal fields without indexing, new names, no Huffman
/// coding (RFC 7541, section 6.2.2), the authority repaired.
fn encode_block(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        let value = if authority_is_valid(name, value) {
            value.as_slice()
        } else {
            match repaired_authority(value) {
                Some(repaired) => repaired,
                None => continue,
            }
        };
        out.push(0x00);
        encode_string(&mut out, name);
        encode_string(&mut out, value);
    }
    out
}

/// A string literal: its length as an integer with a 7-bit prefix (the Huffman bit clear),
/// then its bytes.
fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const PREFIX_MAX: usize = 0x7f;
    let mut len = bytes.len();
    if len < PREFIX_MAX {
        out.push(len as u8);
    } else {
        out.push(PREFIX_MAX as u8);
        len -= PREFIX_MAX;
        while len >= 0x80 {
            out.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(bytes);
}

/// `block` as a HEADERS frame followed by as many CONTINUATION frames as its size needs.
fn write_header_frames(out: &mut BytesMut, stream_id: u32, end_stream: bool, block: &[u8]) {
    let mut chunks: Vec<&[u8]> = block.chunks(FRAME_PAYLOAD_MAX).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (kind, mut flags) = if i == 0 {
            (HEADERS, if end_stream { END_STREAM } else { 0 })
        } else {
            (CONTINUATION, 0)
        };
        if i == last {
            flags |= END_HEADERS;
        }
        let len = chunk.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Direct {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                this.end_of_input();
                continue;
            }
            this.raw.extend_from_slice(chunk_buf.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityRepair<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server reads when a client sends `sent` and closes its side.
    async fn server_reads(sent: Vec<u8>) -> (Vec<u8>, bool) {
        let (result, read, rewrote) = server_reads_until_error(sent).await;
        result.expect("read");
        (read, rewrote)
    }

    /// Like [`server_reads`], with the read's outcome: what was read before an error, too.
    async fn server_reads_until_error(sent: Vec<u8>) -> (io::Result<usize>, Vec<u8>, bool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // In pieces, so frames straddle reads.
            for piece in sent.chunks(7) {
                stream.write_all(piece).await.expect("write");
            }
            stream.shutdown().await.expect("shutdown");
        });
        let (accepted, _) = listener.accept().await.expect("accept");
        let mut repaired = AuthorityRepair::new(accepted);
        let mut out = Vec::new();
        let result = repaired.read_to_end(&mut out).await;
        client.await.expect("client");
        (result, out, repaired.rewrote_header_blocks())
    }

    /// A client's first request, with a URL as its authority, after the preface and SETTINGS.
    fn url_request_start() -> Vec<u8> {
        let block = loona_hpack::Encoder::new().encode(
            request_fields("http://127.0.0.1:2379", "/etcdserverpb.KV/Range")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[]));
        sent.extend(frame(HEADERS, END_HEADERS, 1, &block));
        sent
    }

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request_fields(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Splits what the server read into frames, decoding header blocks with one decoder
    /// for the connection, as the server does. Returns (kind, stream, fields, payload,
    /// flags of the block's first frame).
    #[allow(clippy::type_complexity)]
    fn frames_read(bytes: &[u8]) -> Vec<(u8, u32, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>, u8)> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut block = Vec::new();
        let mut first_flags = 0;
        while !rest.is_empty() {
            let head = FrameHead::parse(&rest[..FRAME_HEAD_BYTES]);
            let payload = &rest[FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + head.len];
            rest = &rest[FRAME_HEAD_BYTES + head.len..];
            if head.kind == HEADERS || head.kind == CONTINUATION {
                if head.kind == HEADERS {
                    first_flags = head.flags;
                }
                let range = fragment_range(&head, payload).expect("fragment");
                block.extend_from_slice(&payload[range]);
                if head.flags & END_HEADERS != 0 {
                    let fields = decoder.decode(&block).expect("decodable");
                    out.push((HEADERS, head.stream_id, fields, Vec::new(), first_flags));
                    block.clear();
                }
            } else {
                out.push((
                    head.kind,
                    head.stream_id,
                    Vec::new(),
                    payload.to_vec(),
                    head.flags,
                ));
            }
        }
        out
    }

    #[tokio::test]
    async fn a_url_in_authority_is_cut_to_host_and_port_in_every_block() {
        let mut encoder = loona_hpack::Encoder::new();
        let url = "http://127.0.0.1:2379";
        let first = encoder.encode(
            request_fields(url, "/etcdserverpb.Maintenance/Status")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        // The encoder indexed the first block's fields: the second refers to its table.
        let second = encoder.encode(
            request_fields(url, "/etcdserverpb.KV/Range")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        sent.extend(frame(HEADERS, 0, 1, &first[..5]));
        sent.extend(frame(CONTINUATION, END_HEADERS, 1, &first[5..]));
        sent.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
                                                               // Padded, with a priority, ending its stream.
        let mut padded = vec![3];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(&second);
        padded.extend_from_slice(&[0, 0, 0]);
        sent.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM | PADDED | PRIORITY,
            3,
            &padded,
        ));
        let (read, rewriting) = server_reads(sent).await;
        assert!(rewriting);
        let frames = frames_read(&read);
        let kinds: Vec<(u8, u32)> = frames.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(kinds, [(0x4, 0), (HEADERS, 1), (0x0, 1), (HEADERS, 3)]);
        for (i, path) in [
            (1, "/etcdserverpb.Maintenance/Status"),
            (3, "/etcdserverpb.KV/Range"),
        ] {
            assert_eq!(frames[i].2, request_fields("127.0.0.1:2379", path));
        }
        assert_eq!(frames[2].3, b"\0\0\0\0\0");
        // END_STREAM survives: the second request has no body.
        assert_eq!(frames[1].4 & END_STREAM, 0);
        assert_eq!(frames[3].4 & END_STREAM, END_STREAM);
    }

    #[tokio::test]
    async fn a_valid_authority_and_http1_pass_through_byte_for_byte() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(
            request_fields("127.0.0.1:2379", "/etcdserverpb.KV/Range")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(0x4, 0, 0, &[]));
        sent.extend(frame(HEADERS, END_HEADERS, 1, &block));
        sent.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        let (read, rewriting) = server_reads(sent.clone()).await;
        assert!(!rewriting);
        assert_eq!(read, sent);

        let http1 = b"GET /version HTTP/1.1\r\nHost: http://127.0.0.1:2379\r\n\r\n".to_vec();
        let (read, rewriting) = server_reads(http1.clone()).await;
        assert!(!rewriting);
        assert_eq!(read, http1);
    }

    #[tokio::test]
    async fn a_block_that_decodes_to_more_than_the_limit_goes_on_as_it_came() {
        // A URL as authority, one large indexed field, then the index of that field over
        // and over: 18 KiB that decode to tens of megabytes.
        let mut block = loona_hpack::Encoder::new().encode([
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
            (&b"x-big"[..], &[b'v'; 4000][..]),
        ]);
        block.extend(std::iter::repeat_n(0x80 | 62, 14_000));
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(HEADERS, 0, 1, &block[..FRAME_PAYLOAD_MAX]));
        sent.extend(frame(
            CONTINUATION,
            END_HEADERS,
            1,
            &block[FRAME_PAYLOAD_MAX..],
        ));
        let (read, rewrote) = server_reads(sent.clone()).await;
        assert!(!rewrote);
        assert_eq!(
            read, sent,
            "the server is left to refuse it, authority and all"
        );
    }

    #[tokio::test]
    async fn once_rewriting_an_oversized_frame_ends_the_connection() {
        let mut sent = url_request_start();
        let valid_so_far = sent.len();
        sent.extend(frame(
            HEADERS,
            END_HEADERS,
            3,
            &[0x82; FRAME_PAYLOAD_MAX + 1],
        ));
        let (result, read, rewrote) = server_reads_until_error(sent).await;
        assert!(rewrote);
        let err = result.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Whatever came before it, and nothing of the oversized frame.
        assert!(read.len() < valid_so_far + 1_000, "{}", read.len());
    }

    #[tokio::test]
    async fn a_block_cut_by_the_end_of_input_is_dropped_once_rewriting() {
        let mut sent = url_request_start();
        let (whole, _) = server_reads(sent.clone()).await;
        // A HEADERS frame of which only part arrives.
        let mut cut = frame(HEADERS, END_HEADERS, 3, &[0x82; 40]);
        cut.truncate(20);
        sent.extend(cut);
        let (read, rewrote) = server_reads(sent).await;
        assert!(rewrote);
        assert_eq!(read, whole);
        assert_eq!(
            frames_read(&read).len(),
            2,
            "SETTINGS and the first request"
        );
    }

    #[test]
    fn repaired_authorities() {
        assert_eq!(
            repaired_authority(b"http://127.0.0.1:2379"),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(
            repaired_authority(b"https://[::1]:2379/v3"),
            Some(&b"[::1]:2379"[..])
        );
        assert_eq!(repaired_authority(b"unix:///tmp/sock"), None);
        assert!(authority_is_valid(b":authority", b"localhost:2379"));
        assert!(!authority_is_valid(b":authority", b"http://localhost:2379"));
        assert!(authority_is_valid(b":path", b"http://not/an/authority"));
    }

    #[test]
    fn long_strings_use_the_integer_continuation_bytes() {
        let value = vec![b'x'; 300];
        let block = encode_block(&[(b"x-long".to_vec(), value.clone())]);
        let fields = loona_hpack::Decoder::new()
            .decode(&block)
            .expect("decodable");
        assert_eq!(fields, [(b"x-long".to_vec(), value)]);
    }
}
