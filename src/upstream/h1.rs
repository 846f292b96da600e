//! The proxy's client for plain-HTTP upstreams (`http://`: a local Ollama, LM Studio or vLLM, a sidecar): HTTP/1.1
//! written and read by the request's own task, with a keep-alive pool per serving thread.
//!
//! hyper's client runs every connection as a task of its own and hands each request to it, and its answer back,
//! through channels, behind a pool keyed by a SipHash of the scheme and authority: two task switches and a dozen
//! allocations per request that a proxy on one thread per core does not need. Here the request's task writes
//! the request head and body in one call, parses the response head (`httparse`, as hyper does) and reads the
//! body itself, frame by frame, straight out of the connection's read buffer (a frame is a slice of it, not a
//! copy). TLS upstreams stay on hyper (`wire`): they speak HTTP/2 where offered, and their handshake and
//! encryption cost more than the framework.
//!
//! Owns: writing the request (the caller's headers, `Host`, `Content-Length`), reading the response head (1xx
//! skipped; of its headers it keeps those [`super::passed_back`] names, the rest only frame the body), the
//! body's framing (`Content-Length`, chunked, or to the end of the connection), when a connection
//! may be reused (HTTP/1.1, no `Connection: close`, body read to its end and nothing more), and the idle pool
//! (90 s, 64 per host). A pooled connection the upstream closed while it idled fails at once on reuse; that is
//! retried once on a new connection, before any answer byte was read, as browsers and hyper do.
//! Must not decide what a failure means beyond its words (`crate::failure`) nor time the request out (the caller
//! bounds the wait for the first byte).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Frame;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{Body, BodyError, transport_failure};
use crate::failure::UpstreamError;
use crate::http1::{Chunk, Framing, Step, content_length, ends_in_chunked, has_token, step};

/// How long a connection may idle in the pool before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream (its URL's authority, `host[:port]` as written).
const MAX_IDLE_PER_HOST: usize = 64;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The read buffer a connection starts with: one response head and a small answer, or the first events of a
/// stream, in one read.
const READ_START: usize = 4 << 10;
/// A request body up to this size is copied behind its head and both go in one write; a larger one goes in a
/// second write rather than being copied.
const COALESCE_BODY: usize = 64 << 10;

/// One serving thread's idle connections to plain-HTTP upstreams.
pub struct Pool {
    idle: Mutex<Idle>,
    connect_timeout: Duration,
}

#[derive(Default)]
struct Idle {
    by_host: FxHashMap<Box<str>, Vec<(Conn, Instant)>>,
    /// When connections past their idle time were last closed for every host.
    swept: Option<Instant>,
}

/// A connection, what was read from it but not yet consumed, and the pool key it returns under (made once, when
/// it is opened).
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    host: Box<str>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Pool").finish_non_exhaustive()
    }
}

/// Where a plain-HTTP request goes: the URL's authority (`Host`, and the pool's key), the host and port to
/// connect to, and the path with its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub authority: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
}

impl<'a> Target<'a> {
    /// An `http://host[:port][/path]` URL of the plainest form (a host name or IPv4 address of letters, digits,
    /// `.`, `-` and `_`, a numeric port, a path of visible characters without a fragment), read without building
    /// a [`Uri`]; `None` for anything else, which [`Target::of_uri`] takes after the full parse.
    pub fn of_plain_url(url: &'a str) -> Option<Target<'a>> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(memchr::memchr(b'/', rest.as_bytes()).unwrap_or(rest.len()));
        let (host, port) = match memchr::memchr(b':', authority.as_bytes()) {
            Some(colon) => {
                let port = &authority[colon + 1..];
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (&authority[..colon], port.parse().ok()?)
            }
            None => (authority, 80),
        };
        let host_ok =
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        let path_ok = path.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#')
        });
        (host_ok && path_ok).then_some(Target { authority, host, port, path: if path.is_empty() { "/" } else { path } })
    }

    /// The same from a parsed `http` URI.
    pub fn of_uri(uri: &'a Uri) -> Target<'a> {
        let host = uri.host().unwrap_or_default();
        Target {
            authority: uri.authority().map(|a| a.as_str()).unwrap_or_default(),
            host: host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host),
            port: uri.port_u16().unwrap_or(80),
            path: uri.path_and_query().map_or("/", |p| p.as_str()),
        }
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool { idle: Mutex::new(Idle::default()), connect_timeout })
    }

    /// An idle connection to `host` that the upstream has not closed, if any.
    fn checkout(&self, host: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conns = idle.by_host.get_mut(host)?;
        let now = Instant::now();
        while let Some((conn, since)) = conns.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange ended cleanly back for the next request to its host.
    fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let idle = &mut *idle;
        if idle.swept.is_none_or(|t| now.duration_since(t) >= IDLE_TIMEOUT) {
            idle.swept = Some(now);
            idle.by_host.retain(|_, conns| {
                conns.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
                !conns.is_empty()
            });
        }
        let conns = match idle.by_host.get_mut(&conn.host) {
            Some(conns) => conns,
            None => idle.by_host.entry(conn.host.clone()).or_default(),
        };
        if conns.len() < MAX_IDLE_PER_HOST {
            conns.push((conn, now));
        }
    }

    /// Sends `POST` to `target` with `headers` and `body`; returns once the response head has arrived, with
    /// the body to be read.
    pub async fn post(
        self: &Arc<Pool>,
        target: &Target<'_>,
        headers: &super::Outbound<'_>,
        body: Bytes,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut out = request_head(target.path, target.authority, headers, body.len());
        let coalesce = body.len() <= COALESCE_BODY;
        if coalesce {
            out.extend_from_slice(&body);
        }
        if let Some(conn) = self.checkout(target.authority) {
            match self.exchange(conn, &out, (!coalesce).then_some(&body)).await {
                Ok(resp) => return Ok(resp),
                // The upstream closed the idle connection as it was reused: nothing of the answer was read.
                Err(Failed { before_answer: true, .. }) => {}
                Err(Failed { error, .. }) => return Err(request_failed(&error)),
            }
        }
        let conn = self.connect(target).await?;
        self.exchange(conn, &out, (!coalesce).then_some(&body)).await.map_err(|f| request_failed(&f.error))
    }

    async fn connect(&self, target: &Target<'_>) -> Result<Conn, UpstreamError> {
        let (host, port) = (target.host, target.port);
        let connecting = async {
            let io = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => TcpStream::connect((ip, port)).await?,
                Err(_) => TcpStream::connect((host, port)).await?,
            };
            io.set_nodelay(true)?;
            Ok::<_, std::io::Error>(io)
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(io)) => Ok(Conn { io, buf: BytesMut::new(), host: target.authority.into() }),
            Ok(Err(e)) => Err(transport_failure("connection failed", &io_words(&e))),
            Err(_) => Err(transport_failure("connection failed", "timed out")),
        }
    }

    /// Writes the request and reads the response head.
    async fn exchange(
        self: &Arc<Pool>,
        mut conn: Conn,
        head: &[u8],
        rest: Option<&Bytes>,
    ) -> Result<Response<Body>, Failed> {
        let before = |error: std::io::Error| Failed { error, before_answer: true };
        conn.io.write_all(head).await.map_err(before)?;
        if let Some(rest) = rest {
            conn.io.write_all(rest).await.map_err(before)?;
        }
        conn.buf.clear();
        // Whether the buffer may hold a whole head (after a 1xx, the final head may have come with it).
        let mut parse = false;
        loop {
            if !parse {
                if conn.buf.capacity() - conn.buf.len() < 1024 {
                    conn.buf.reserve(if conn.buf.capacity() == 0 { READ_START } else { conn.buf.capacity() });
                }
                let n =
                    read_some(&mut conn).await.map_err(|error| Failed { before_answer: conn.buf.is_empty(), error })?;
                if n == 0 {
                    let error =
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before the answer");
                    return Err(Failed { before_answer: conn.buf.is_empty(), error });
                }
            }
            parse = false;
            match parse_head(&conn.buf) {
                Ok(None) if conn.buf.len() >= MAX_HEAD => return Err(invalid("the response head is too large")),
                Ok(None) => continue,
                Ok(Some(Head::Interim(len))) => {
                    conn.buf.advance(len);
                    parse = !conn.buf.is_empty();
                }
                Ok(Some(Head::Final(parsed))) => {
                    let head = conn.buf.split_to(parsed.len).freeze();
                    let mut resp = Response::new(());
                    *resp.status_mut() = parsed.status;
                    *resp.headers_mut() = parsed.headers(&head).map_err(|e| invalid(&e))?;
                    let framing = parsed.framing.map_err(invalid)?;
                    let body = H1Body { conn: Some(conn), framing, reuse: parsed.keep_alive, pool: self.clone() };
                    return Ok(resp.map(|()| body.boxed_unsync()));
                }
                Err(e) => return Err(invalid(e)),
            }
        }
    }
}

/// A failed exchange; `before_answer`: not one byte of the answer had arrived.
struct Failed {
    error: std::io::Error,
    before_answer: bool,
}

fn invalid(why: &str) -> Failed {
    Failed { error: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()), before_answer: false }
}

fn request_failed(e: &std::io::Error) -> UpstreamError {
    transport_failure("request failed", &io_words(e))
}

/// An I/O error's first line.
fn io_words(e: &std::io::Error) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_string()
}

/// The request head: request line, `Host`, the caller's headers, `Content-Length`.
fn request_head(path: &str, authority: &str, headers: &super::Outbound<'_>, len: usize) -> Vec<u8> {
    // Room for a usual head (a long one grows the buffer once) and a coalesced body.
    let mut out = Vec::with_capacity(512 + path.len() + authority.len() + len.min(COALESCE_BODY));
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    headers.for_each(|name, value| {
        // Framing is this module's: the caller's copies (none, from the proxy) would contradict it.
        if matches!(name.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
            return;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// Reads what the connection has into the spare room of its buffer (0: the upstream closed it).
async fn read_some(conn: &mut Conn) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(&mut conn.io, &mut conn.buf, cx)).await
}

/// Through `AsyncRead`, which takes a read shorter than the room given as the socket's end of data for now: the
/// next read waits for the reactor instead of calling `recv` to be told `EAGAIN`, and a pooled connection's
/// liveness check ([`Conn::is_open`]) costs no system call (one each per request otherwise).
fn poll_read_some(io: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

impl Conn {
    /// Whether the upstream has neither closed the idle connection nor sent anything on it (a `recv` only when
    /// the reactor has seen the socket become readable since the last short read).
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

enum Head {
    /// A 1xx answer of this many bytes, to skip.
    Interim(usize),
    Final(Parsed),
}

/// A response head, parsed: where its headers are in the buffer, what frames its body.
struct Parsed {
    len: usize,
    status: StatusCode,
    /// (name, value start, value end) of each header, offsets into the head.
    fields: Vec<(HeaderName, usize, usize)>,
    framing: Result<Framing, &'static str>,
    keep_alive: bool,
}

impl Parsed {
    fn headers(&self, head: &Bytes) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for (name, start, end) in &self.fields {
            let value = HeaderValue::from_maybe_shared(head.slice(*start..*end))
                .map_err(|_| format!("the response header `{name}` has an invalid value"))?;
            map.append(name.clone(), value);
        }
        Ok(map)
    }
}

/// Parses a response head at the start of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let mut small = [httparse::EMPTY_HEADER; 48];
    let mut large;
    let mut resp = httparse::Response::new(&mut small);
    let status = match resp.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            large = vec![httparse::EMPTY_HEADER; 256];
            resp = httparse::Response::new(&mut large);
            resp.parse(buf)
        }
        other => other,
    };
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("the upstream's answer is not HTTP/1.1"),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| "the upstream's answer has an invalid status")?;
    if status.is_informational() {
        if code == 101 {
            return Err("the upstream switched protocols");
        }
        return Ok(Some(Head::Interim(len)));
    }
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut framing_error = None;
    let mut keep_alive = resp.version == Some(1);
    let mut lower = [0u8; 64];
    for h in resp.headers.iter() {
        // httparse accepted the name as a token; in lower case it is what `HeaderName` holds. A longer name is
        // none of those read here or passed back.
        let Some(name) = lower.get_mut(..h.name.len()) else { continue };
        name.copy_from_slice(h.name.as_bytes());
        name.make_ascii_lowercase();
        let name = &*name;
        if name == b"content-length" {
            match (content_length(h.value), length) {
                (None, _) => framing_error = Some("the upstream's Content-Length is not a number"),
                (Some(n), Some(m)) if n != m => framing_error = Some("the upstream sent two different Content-Lengths"),
                (Some(n), _) => length = Some(n),
            }
        } else if name == b"transfer-encoding" {
            // Chunked must be the last coding; anything else is read to the end of the connection.
            chunked = ends_in_chunked(h.value);
            if !chunked {
                keep_alive = false;
            }
        } else if name == b"connection" && has_token(h.value, b"close") {
            keep_alive = false;
        }
        // Only what the proxy reads or passes on becomes a header of the answer (a name parsed and a map
        // entry each: nginx alone sends Server, Date and Connection the client never sees).
        if !super::passed_back(name) {
            continue;
        }
        // Nearly every answer has a Content-Type: its name is not parsed again.
        let name = if name == b"content-type" {
            http::header::CONTENT_TYPE
        } else {
            HeaderName::from_bytes(name).map_err(|_| "the upstream's answer has an invalid header name")?
        };
        let start = h.value.as_ptr() as usize - base;
        fields.push((name, start, start + h.value.len()));
    }
    if chunked && length.is_some() {
        // Both framings at once (RFC 9112 6.1): read as chunked, and the connection is not trusted again.
        keep_alive = false;
    }
    let framing = if let Some(e) = framing_error {
        Err(e)
    } else if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Ok(Framing::Length(0))
    } else if chunked {
        Ok(Framing::Chunked(Chunk::Size))
    } else if let Some(n) = length {
        Ok(Framing::Length(n))
    } else {
        keep_alive = false;
        Ok(Framing::ToEnd)
    };
    Ok(Some(Head::Final(Parsed { len, status, fields, framing, keep_alive })))
}

/// A response body read from its connection; the connection goes back to the pool when the body ends cleanly.
struct H1Body {
    /// `None` once the body ended (or failed).
    conn: Option<Conn>,
    framing: Framing,
    reuse: bool,
    pool: Arc<Pool>,
}

impl H1Body {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reuse
            && conn.buf.is_empty()
        {
            let mut conn = conn;
            // A small buffer waits in the pool; the next exchange grows it as it needs.
            if conn.buf.capacity() > READ_START {
                conn.buf = BytesMut::new();
            }
            self.pool.put(conn);
        }
    }
}

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match step(&mut this.framing, &mut conn.buf) {
                Ok(Step::Data(data)) => {
                    // The last bytes of a sized body: the connection is free before the caller asks again.
                    if this.framing == Framing::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            let want = match this.framing {
                Framing::Length(left) => (left as usize).clamp(1024, 256 << 10),
                _ => READ_START,
            };
            if conn.buf.capacity() - conn.buf.len() < 512 {
                conn.buf.reserve(want);
            }
            match ready!(poll_read_some(&mut conn.io, &mut conn.buf, cx)) {
                Ok(0) if this.framing == Framing::ToEnd => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err("the upstream closed the connection before the body's end".into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.framing {
            Framing::Length(left) if self.conn.is_some() => hyper::body::SizeHint::with_exact(left),
            _ if self.conn.is_none() => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Outbound;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn head(wire: &[u8]) -> Parsed {
        match parse_head(wire) {
            Ok(Some(Head::Final(p))) => p,
            _ => panic!("not a final head: {}", String::from_utf8_lossy(wire)),
        }
    }

    #[test]
    fn response_heads_say_how_the_body_ends_and_whether_the_connection_stays() {
        let p = head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Request-Id: abc\r\n\r\n");
        assert_eq!((p.framing, p.keep_alive), (Ok(Framing::Length(12)), true));
        let bytes = Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Request-Id: abc\r\n\r\n");
        assert_eq!(p.headers(&bytes).unwrap()["x-request-id"], "abc");
        let p = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, close\r\n\r\n");
        assert_eq!((p.framing, p.keep_alive), (Ok(Framing::Chunked(Chunk::Size)), false));
        let p = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((p.framing, p.keep_alive), (Ok(Framing::Chunked(Chunk::Size)), false));
        let p = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((p.framing, p.keep_alive), (Ok(Framing::ToEnd), false));
        let p = head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!p.keep_alive);
        let p = head(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(p.framing, Ok(Framing::Length(0)));
        let p = head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(p.framing.is_err());
        assert!(matches!(parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), Ok(Some(Head::Interim(25)))));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None)));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn an_answer_keeps_the_headers_passed_back_in_any_case_and_drops_the_rest() {
        let wire: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nServer: nginx\r\nDate: Mon, 30 Nov 2026 10:00:00 GMT\r\n\
            Content-Type: application/json\r\nX-RateLimit-Remaining-Requests: 0\r\nRETRY-AFTER: 7\r\n\
            Anthropic-Ratelimit-Tokens-Reset: 2026-11-30T10:01:00Z\r\nContent-Length: 2\r\n\
            X-A-Name-Longer-Than-Sixty-Four-Bytes-Which-No-Header-Passed-Back-Has-0123456789: v\r\n\r\n";
        let p = head(wire);
        let h = p.headers(&Bytes::copy_from_slice(wire)).unwrap();
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "x-ratelimit-remaining-requests", "retry-after", "anthropic-ratelimit-tokens-reset"]
        );
        assert_eq!(crate::failure::parse_retry_after(&h), Some(Duration::from_secs(7)));
        assert_eq!(p.framing, Ok(Framing::Length(2)), "Content-Length frames the body without being kept");
    }

    #[test]
    fn the_request_head_carries_the_callers_headers_and_this_modules_framing() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer k"));
        h.insert("content-length", HeaderValue::from_static("999"));
        h.insert("host", HeaderValue::from_static("elsewhere"));
        let head = String::from_utf8(request_head("/v1/chat?x=1", "127.0.0.1:9", &Outbound::new(&h, |_| true), 42));
        let head = head.unwrap();
        assert_eq!(
            head,
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nauthorization: Bearer k\r\ncontent-length: 42\r\n\r\n"
        );
    }

    /// Reads one request (head and `Content-Length` body) from `io`; `None` at the end of the connection.
    async fn read_request(io: &mut TcpStream) -> Option<String> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1024];
        loop {
            if let Some(end) = memchr::memmem::find(&got, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return Some(String::from_utf8_lossy(&got).into_owned());
                }
            }
            let n = io.read(&mut byte).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&byte[..n]);
        }
    }

    async fn body_of(resp: Response<Body>) -> Vec<u8> {
        resp.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused_and_a_closed_one_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut io, _) = listener.accept().await.unwrap();
                let n = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut served = 0;
                    while let Some(req) = read_request(&mut io).await {
                        served += 1;
                        let body = format!("conn {n} request {served}: {}", req.lines().next().unwrap());
                        let close = if served == 2 { "connection: close\r\n" } else { "" };
                        let resp = format!("HTTP/1.1 200 OK\r\n{close}content-length: {}\r\n\r\n{body}", body.len());
                        io.write_all(resp.as_bytes()).await.unwrap();
                        if served == 2 {
                            return;
                        }
                    }
                });
            }
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/v1/x").parse().unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::from_static(b"{}")).await.unwrap();
            assert_eq!(resp.status(), 200);
            seen.push(String::from_utf8(body_of(resp).await).unwrap());
        }
        assert_eq!(
            seen,
            [
                "conn 0 request 1: POST /v1/x HTTP/1.1",
                "conn 0 request 2: POST /v1/x HTTP/1.1",
                "conn 1 request 1: POST /v1/x HTTP/1.1",
                "conn 1 request 2: POST /v1/x HTTP/1.1",
            ]
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "`connection: close` ends a connection, keep-alive keeps it");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_dropped_is_retried_on_a_new_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // The first connection answers once, then the upstream drops it while it idles in the pool.
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").await.unwrap();
            drop(io);
            closed_tx.send(()).unwrap();
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond").await.unwrap();
            let _ = read_request(&mut io).await;
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()).await.unwrap();
        assert_eq!(body_of(resp).await, b"first");
        closed_rx.await.unwrap();
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()).await.unwrap();
        assert_eq!(body_of(resp).await, b"second");
    }

    #[tokio::test]
    async fn a_chunked_stream_is_handed_on_event_by_event() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (next_tx, next_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            let first = "data: one\n\n";
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            io.write_all(format!("{head}{:x}\r\n{first}\r\n", first.len()).as_bytes()).await.unwrap();
            // The second event waits until the client has the first: nothing is held back for a fuller read.
            next_rx.await.unwrap();
            let second = "data: two\n\n";
            io.write_all(format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len()).as_bytes()).await.unwrap();
            let _ = read_request(&mut io).await;
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "data: one\n\n");
        next_tx.send(()).unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "data: two\n\n");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_body_without_a_length_is_read_to_the_end_and_a_cut_one_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            io.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it").await.unwrap();
            drop(io);
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart").await.unwrap();
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()).await.unwrap();
        assert_eq!(body_of(resp).await, b"all of it");
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()).await.unwrap();
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(err.to_string().contains("before the body's end"), "{err}");
    }

    #[tokio::test]
    async fn an_interim_answer_is_skipped_even_when_the_final_one_came_with_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            read_request(&mut io).await.unwrap();
            let both = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            io.write_all(both.as_bytes()).await.unwrap();
            let _ = read_request(&mut io).await;
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            pool.post(&Target::of_uri(&uri), &Outbound::none(), Bytes::new()),
        )
        .await
        .expect("the final answer was already read")
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(resp).await, b"ok");
    }

    #[tokio::test]
    async fn a_large_request_body_arrives_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut io, _) = listener.accept().await.unwrap();
            let req = read_request(&mut io).await.unwrap();
            let body = req.split_once("\r\n\r\n").unwrap().1.len().to_string();
            io.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await
                .unwrap();
        });
        let pool = Pool::new(Duration::from_secs(5));
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let big = Bytes::from(vec![b'a'; 300_000]);
        let resp = pool.post(&Target::of_uri(&uri), &Outbound::none(), big).await.unwrap();
        assert_eq!(body_of(resp).await, b"300000");
    }

    #[test]
    fn a_plain_url_is_read_as_the_uri_parser_reads_it() {
        for url in [
            "http://127.0.0.1:11434/v1/chat/completions",
            "http://localhost/v1/chat/completions",
            "http://my-host.lan:8080",
            "http://ollama_box:80/api/v1/models?x=1&y=%20",
        ] {
            let uri: Uri = url.parse().unwrap();
            assert_eq!(Target::of_plain_url(url), Some(Target::of_uri(&uri)), "{url}");
        }
        // Anything less plain is left to the full parse, which accepts or refuses it.
        for url in [
            "https://api.example/v1",
            "http://[::1]:8080/v1",
            "http://user:pw@host/v1",
            "http://host:/v1",
            "http://host:99999/v1",
            "http://host:8o/v1",
            "http://exa mple/",
            "http:///v1",
            "http://host/v1#frag",
            "http://host?q",
            "http://hóst/v1",
        ] {
            assert_eq!(Target::of_plain_url(url), None, "{url}");
        }
    }
}
