//! The proxy's HTTP/1.1 server: one connection's requests read, handed to a [`Service`] and answered, by the
//! connection's own task.
//!
//! hyper's server runs a dispatcher per connection that parses into its own buffers, hands the body over
//! through a channel-backed `Incoming`, keeps a boxed slot for the service's future and encodes the answer
//! through a second buffer: about a fifth of a proxied request's instructions, with nothing a proxy needs from
//! it that HTTP/1.1 itself does not say. Here the task parses the head with `httparse` (as hyper does) into an
//! `http::Request` whose header values are slices of the read buffer, reads the body whole (the proxy needs all
//! of it before it can route; up to the service's [`Service::max_body`]), calls the service, and writes the
//! answer's head and a whole body in one `send`, or a stream frame by frame as its frames come.
//!
//! Owns: request framing (`Content-Length`, chunked, both at once refused the connection after), `Expect:
//! 100-continue`, HTTP/1.0 (keep-alive only when asked), pipelined requests (answered in order), whether the
//! connection stays open, the answer's framing (`Content-Length` when the body's size is known, else chunked,
//! or to the end of the connection for HTTP/1.0), `Date`, noticing a client that went away (while its request
//! is handled or its answer streamed: the service's future or body is dropped, which the proxy records), and
//! the end of idle connections when the server stops, and closing so that a client still sending gets its answer
//! (the unread rest is read and dropped for a while first). A connection that opens with HTTP/2's preface is handed
//! to hyper's HTTP/2 server (prior knowledge, as before).
//! Must not know routes, keys or records: it sees `http::Request`s and `http::Response<ProxyBody>`s.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ProxyBody;
use super::headers::Lines;
use crate::http1::{Chunk, Framing, Step, content_length, ends_in_chunked, has_token, step};

/// The largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;
/// The most header fields a request may have.
const MAX_HEADERS: usize = 128;
/// The room a read buffer is given when it has less than [`MIN_ROOM`] spare: a request head and a small body in
/// one read.
const READ_ROOM: usize = 4 << 10;
/// Spare room below which a read first makes more. Not more: the buffer a request was read into is kept alive by
/// its head and body while it is answered, so a larger minimum would allocate a second buffer for the read-ahead of
/// every request in flight (every open stream).
const MIN_ROOM: usize = 512;
/// Bytes read ahead (a pipelined next request) while a request is answered; past this the connection is not
/// read until the answer is out, so a client that goes away then is noticed at the next write.
const READ_AHEAD: usize = 64 << 10;
/// A body frame this large goes out in a write of its own instead of being copied behind what is pending.
const COPY_MAX: usize = 16 << 10;
/// The write buffer a connection keeps between requests (a larger one, grown by a large answer, is freed).
const KEEP_OUT: usize = 16 << 10;
/// How long a closing connection reads and drops what its client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How much a closing connection reads and drops at most.
const LINGER_BYTES: usize = 8 << 20;
/// What an HTTP/2 client with prior knowledge sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A service's answer to one request, boxed: a connection keeps no room for it between requests.
pub type Handling = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A service's answer: the response, and header lines written after its map's fields (the router's own
/// `X-Router-*` and `X-RateLimit-*`, rendered once rather than inserted into the map: [`Lines`]).
pub struct Answer {
    pub resp: Response<ProxyBody>,
    pub lines: Lines,
}

impl From<Response<ProxyBody>> for Answer {
    fn from(resp: Response<ProxyBody>) -> Answer {
        Answer { resp, lines: Lines::default() }
    }
}

impl Answer {
    /// The response with the lines among its map's fields (for a server that writes the map only: HTTP/2).
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut resp = self.resp;
        self.lines.into_map(resp.headers_mut());
        resp
    }
}

/// What answers the requests of a connection.
pub trait Service: Send + Sync + 'static {
    /// The answer to `req`, from the client at `peer`.
    fn call(&self, req: Request<RequestBody>, peer: SocketAddr) -> Handling;
    /// The largest request body read for it: a larger one is not read (the service sees a body that fails with
    /// [`TooLarge`], and the connection closes after the answer).
    fn max_body(&self) -> usize;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's body as a service sees it: read whole before the service was called (HTTP/1.1), or hyper's
/// (HTTP/2).
pub struct RequestBody(Inner);

enum Inner {
    Whole(Option<Bytes>),
    /// Not read: larger than this many bytes.
    TooLarge(Option<usize>),
    Hyper(hyper::body::Incoming),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody(Inner::Whole(None))
    }

    /// A body read whole.
    pub fn whole(bytes: Bytes) -> RequestBody {
        RequestBody(Inner::Whole(Some(bytes).filter(|b| !b.is_empty())))
    }
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> RequestBody {
        RequestBody(Inner::Hyper(body))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::TooLarge(limit) => Poll::Ready(limit.take().map(|limit| Err(TooLarge { limit }.into()))),
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Whole(b) => b.is_none(),
            Inner::TooLarge(limit) => limit.is_none(),
            Inner::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::TooLarge(_) => SizeHint::default(),
            Inner::Hyper(b) => b.size_hint(),
        }
    }
}

/// A request body that was not read: larger than the service takes.
#[derive(Debug)]
pub struct TooLarge {
    pub limit: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body is larger than {} bytes", self.limit)
    }
}

impl std::error::Error for TooLarge {}

/// Serves the connection `io` from `peer` until it closes, the client goes away, or `stopping` becomes true
/// (then it closes once the request in hand, if any, is answered).
pub async fn serve<S: Service>(io: TcpStream, peer: SocketAddr, service: Arc<S>, mut stopping: watch::Receiver<bool>) {
    let mut conn = Conn { io, buf: BytesMut::new(), out: Vec::new() };
    let mut first = true;
    loop {
        let head = match conn.next_head(first, &mut stopping).await {
            Next::Request(head) => head,
            Next::Closed => return,
            Next::Refused(status, why) => return conn.refuse(status, why).await,
            Next::Http2 => return http2(conn, peer, service, stopping).await,
        };
        first = false;
        let max = service.max_body();
        let (body, mut keep_alive) = match conn.read_body(&head, max).await {
            Read::Body(body) => (body, head.keep_alive),
            Read::TooLarge => (RequestBody(Inner::TooLarge(Some(max))), false),
            Read::Cut => return,
            Read::Bad(why) => return conn.refuse(StatusCode::BAD_REQUEST, why).await,
        };
        let is_head = head.req.method() == Method::HEAD;
        let version = head.req.version();
        let Some(resp) = conn.watching(service.call(head.req.map(|()| body), peer)).await else {
            return;
        };
        keep_alive &= !*stopping.borrow();
        match conn.answer(resp, version, is_head, keep_alive).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return conn.close().await,
        }
        if conn.out.capacity() > KEEP_OUT {
            conn.out = Vec::new();
        }
    }
}

/// One client connection: its socket, what was read and not yet used, and the answer being written.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
}

/// What a connection has next.
// Made once per request and matched at once: boxing the head would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Head),
    Closed,
    Refused(StatusCode, &'static str),
    Http2,
}

/// A request head, parsed.
struct Head {
    req: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// How reading a request body went.
enum Read {
    Body(RequestBody),
    /// Larger than the service takes: not read.
    TooLarge,
    /// The client went away before the body was complete.
    Cut,
    Bad(&'static str),
}

/// What stopped waiting on a body: a frame, or something to do first.
enum Wait {
    Frame(Option<Result<Frame<Bytes>, std::io::Error>>),
    /// The frame is not ready: write what is pending first.
    Flush,
    /// The client went away.
    Gone,
}

impl Conn {
    /// Reads into the spare room of the buffer (0: the client closed). Through `AsyncRead`, which takes a read
    /// shorter than the room as the end of the data for now (no second `recv` told `EAGAIN`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(READ_ROOM);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Whether the client went away (its end closed, or the socket failed); reads ahead what it sends meanwhile
    /// up to [`READ_AHEAD`]. Pending while it is there.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.buf.len() < READ_AHEAD {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Runs `handling` to its answer, or drops it if the client goes away first (`None`).
    async fn watching(&mut self, mut handling: Handling) -> Option<Answer> {
        poll_fn(|cx| {
            if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            self.poll_gone(cx).map(|()| None)
        })
        .await
    }

    /// The next request head: waits for one (an idle connection ends when `stopping` becomes true).
    async fn next_head(&mut self, first: bool, stopping: &mut watch::Receiver<bool>) -> Next {
        loop {
            if !self.buf.is_empty() {
                if first && PREFACE.starts_with(&self.buf[..self.buf.len().min(PREFACE.len())]) {
                    if self.buf.len() >= PREFACE.len() {
                        return Next::Http2;
                    }
                } else {
                    match parse_head(&mut self.buf) {
                        Ok(Some(head)) => return Next::Request(head),
                        Ok(None) if self.buf.len() > MAX_HEAD => {
                            return Next::Refused(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "the request head is too large",
                            );
                        }
                        Ok(None) => {}
                        Err((status, why)) => return Next::Refused(status, why),
                    }
                }
            }
            let read = if self.buf.is_empty() {
                tokio::select! {
                    read = self.fill() => read,
                    _ = stopping.wait_for(|s| *s) => return Next::Closed,
                }
            } else {
                self.fill().await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Next::Closed;
            }
        }
    }

    /// Reads the body `head` announces, whole, up to `max` bytes.
    async fn read_body(&mut self, head: &Head, max: usize) -> Read {
        let mut framing = head.framing;
        match framing {
            Framing::Length(0) => return Read::Body(RequestBody::empty()),
            Framing::Length(n) if n > max as u64 => return Read::TooLarge,
            _ => {}
        }
        if head.expect_continue
            && self.buf.is_empty()
            && self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return Read::Cut;
        }
        if let Framing::Length(n) = framing {
            let n = n as usize;
            while self.buf.len() < n {
                self.buf.reserve(n - self.buf.len());
                if !matches!(self.fill().await, Ok(read) if read > 0) {
                    return Read::Cut;
                }
            }
            return Read::Body(RequestBody::whole(self.buf.split_to(n).freeze()));
        }
        let mut data = BytesMut::new();
        loop {
            match step(&mut framing, &mut self.buf) {
                Ok(Step::Data(d)) if data.len() + d.len() > max => return Read::TooLarge,
                Ok(Step::Data(d)) => data.extend_from_slice(&d),
                Ok(Step::End) => return Read::Body(RequestBody::whole(data.freeze())),
                Ok(Step::More) => {
                    if !matches!(self.fill().await, Ok(read) if read > 0) {
                        return Read::Cut;
                    }
                }
                Err(why) => return Read::Bad(why),
            }
        }
    }

    /// Writes `resp`; whether the connection may carry another request.
    async fn answer(
        &mut self,
        answer: Answer,
        version: Version,
        is_head: bool,
        mut keep_alive: bool,
    ) -> std::io::Result<bool> {
        let (parts, mut body) = answer.resp.into_parts();
        let status = parts.status;
        let bodiless =
            status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        if parts.headers.get(CONNECTION).is_some_and(|v| has_token(v.as_bytes(), b"close")) {
            keep_alive = false;
        }
        let length = body.size_hint().exact().or_else(|| content_length(parts.headers.get(CONTENT_LENGTH)?.as_bytes()));
        let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
        if !bodiless && length.is_none() && !chunked {
            // HTTP/1.0 without a length: the end of the connection ends the body.
            keep_alive = false;
        }
        let out = &mut self.out;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
                continue;
            }
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(answer.lines.as_bytes());
        if !parts.headers.contains_key(DATE) {
            date::with(|d| push_header(out, b"date", d));
        }
        if let Some(n) = length.filter(|_| !bodiless) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        } else if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if bodiless || is_head {
            drop(body);
            self.flush().await?;
            return Ok(keep_alive);
        }
        let mut sent = 0u64;
        loop {
            let wait = poll_fn(|cx| {
                if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                    return Poll::Ready(Wait::Frame(frame));
                }
                if !self.out.is_empty() {
                    return Poll::Ready(Wait::Flush);
                }
                self.poll_gone(cx).map(|()| Wait::Gone)
            })
            .await;
            match wait {
                Wait::Flush => self.flush().await?,
                Wait::Gone => return Ok(false),
                Wait::Frame(None) => break,
                Wait::Frame(Some(Err(e))) => {
                    // The answer cannot be completed: what was sent stays cut (no last chunk), and the
                    // connection closes.
                    tracing::debug!("answer body failed: {e}");
                    self.flush().await?;
                    return Ok(false);
                }
                Wait::Frame(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    if length.is_some_and(|n| sent > n) {
                        // More than the length announced: what follows would read as the next answer.
                        tracing::debug!("answer body longer than its Content-Length; connection closed");
                        self.flush().await?;
                        return Ok(false);
                    }
                    if chunked {
                        push_chunk_size(&mut self.out, data.len());
                    }
                    if data.len() >= COPY_MAX {
                        self.flush().await?;
                        self.io.write_all(&data).await?;
                    } else {
                        self.out.extend_from_slice(&data);
                    }
                    if chunked {
                        self.out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        } else if length.is_some_and(|n| n != sent) {
            // The body did not match the length it announced: the client cannot tell where it ends.
            keep_alive = false;
        }
        self.flush().await?;
        Ok(keep_alive)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Answers a request that cannot be read with `status` and `why`, and closes.
    async fn refuse(mut self, status: StatusCode, why: &str) {
        let text = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}\n",
            why.len() + 1
        );
        self.out.clear();
        if self.io.write_all(text.as_bytes()).await.is_ok() {
            self.close().await;
        }
    }

    /// Ends the connection after the answer is out: the writing side first, then what the client still sends
    /// (the rest of a body that was not read, say) is read and dropped until it closes its side, for up to
    /// [`LINGER`] or [`LINGER_BYTES`]. Closing with unread bytes would reset the connection, and a client still
    /// sending would then lose the answer (a 413 among them) before it reads it.
    async fn close(mut self) {
        if self.io.shutdown().await.is_err() {
            return;
        }
        let mut dropped = 0;
        let lingering = async {
            while dropped < LINGER_BYTES {
                self.buf.clear();
                match self.fill().await {
                    Ok(n) if n > 0 => dropped += n,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, lingering).await;
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    let _ = write!(out, "{n:x}\r\n");
}

/// Parses a request head at the start of `buf` and takes it out: `None` while incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, (StatusCode, &'static str)> {
    let bad = |why| (StatusCode::BAD_REQUEST, why);
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    // (name start, name end, value start, value end) of each field, offsets into the head.
    let mut spans = [[0u32; 4]; MAX_HEADERS];
    let (len, method, path, version, fields, framing, keep_alive, expect_continue) = {
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request has too many header fields"));
            }
            Err(_) => return Err(bad("the request is not HTTP/1.1")),
        };
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| bad("the request method is not valid"))?;
        let version = if req.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let path = req.path.unwrap_or_default().as_bytes();
        let path = offset(path) as usize..offset(path) as usize + path.len();
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut keep_alive = version == Version::HTTP_11;
        let mut expect_continue = false;
        for (h, span) in req.headers.iter().zip(spans.iter_mut()) {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(h.value).ok_or(bad("the request's Content-Length is not a number"))?;
                if length.is_some_and(|m| m != n) {
                    return Err(bad("the request has two different Content-Lengths"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Chunked must be the last coding of a request (RFC 9112 6.3).
                if version == Version::HTTP_10 || !ends_in_chunked(h.value) {
                    return Err(bad("the request's Transfer-Encoding does not end in chunked"));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                if has_token(h.value, b"close") {
                    keep_alive = false;
                } else if has_token(h.value, b"keep-alive") {
                    keep_alive = true;
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue = version == Version::HTTP_11 && h.value.eq_ignore_ascii_case(b"100-continue");
            }
            *span = [
                offset(name),
                offset(name) + name.len() as u32,
                offset(h.value),
                offset(h.value) + h.value.len() as u32,
            ];
        }
        if chunked && length.is_some() {
            // Both framings at once (RFC 9112 6.1): read as chunked, and the connection is not trusted again.
            keep_alive = false;
        }
        let framing = if chunked { Framing::Chunked(Chunk::Size) } else { Framing::Length(length.unwrap_or(0)) };
        (len, method, path, version, req.headers.len(), framing, keep_alive, expect_continue)
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path)).map_err(|_| bad("the request target is not valid"))?;
    let mut headers = HeaderMap::with_capacity(fields);
    for [ns, ne, vs, ve] in &spans[..fields] {
        let name = HeaderName::from_bytes(&head[*ns as usize..*ne as usize])
            .map_err(|_| bad("a request header name is not valid"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(*vs as usize..*ve as usize))
            .map_err(|_| bad("a request header value is not valid"))?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head { req, framing, keep_alive, expect_continue }))
}

/// A connection that opened with HTTP/2's preface: served by hyper's HTTP/2 server, the bytes read so far
/// handed back to it first.
async fn http2<S: Service>(conn: Conn, peer: SocketAddr, service: Arc<S>, mut stopping: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let handling = service.call(req.map(RequestBody::from), peer);
        async move { Ok::<_, Infallible>(handling.await.into_response()) }
    });
    let io = hyper_util::rt::TokioIo::new(Rewind { read: conn.buf.freeze(), io: conn.io });
    let served =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new()).serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// A socket whose first bytes were already read: they are read again first.
struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The `Date` header's value, made once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Calls `f` with the current date in HTTP's format.
    pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cell| {
            let mut cached = cell.borrow_mut();
            if cached.0 != secs || cached.1.is_empty() {
                *cached = (secs, httpdate::fmt_http_date(now));
            }
            f(cached.1.as_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A test service's response; [`Test`] moves its `x-as-line` header into the answer's lines.
    type Responding = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;
    type Answering = dyn Fn(Request<RequestBody>) -> Responding + Send + Sync;

    struct Test {
        answer: Box<Answering>,
        max: usize,
    }

    impl Service for Test {
        fn call(&self, req: Request<RequestBody>, _peer: SocketAddr) -> Handling {
            let responding = (self.answer)(req);
            Box::pin(async move {
                let mut answer = Answer::from(responding.await);
                if let Some(v) = answer.resp.headers_mut().remove("x-as-line") {
                    answer.lines.push(&HeaderName::from_static("x-line"), v.as_bytes());
                }
                answer
            })
        }
        fn max_body(&self) -> usize {
            self.max
        }
    }

    /// A server on a port of its own answering with `answer`; the sender stops it.
    async fn server(
        max: usize,
        answer: impl Fn(Request<RequestBody>) -> Responding + Send + Sync + 'static,
    ) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopping) = watch::channel(false);
        let service = Arc::new(Test { answer: Box::new(answer), max });
        tokio::spawn(async move {
            loop {
                let (io, peer) = listener.accept().await.unwrap();
                tokio::spawn(serve(io, peer, service.clone(), stopping.clone()));
            }
        });
        (addr, stop)
    }

    /// Answers with the method, path, a header and the body it read (or its error); the header (`x-test`) comes
    /// back as a line beside the response (`x-line`, see [`Test`]).
    fn echo(req: Request<RequestBody>) -> Responding {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => format!("error: {e}"),
            };
            let x = parts.headers.get("x-test").map_or("", |v| v.to_str().unwrap()).to_string();
            let mut resp =
                Response::new(super::super::full(format!("{} {} x={x} body={body}", parts.method, parts.uri)));
            if !x.is_empty() {
                resp.headers_mut().insert("x-as-line", HeaderValue::from_str(&x).unwrap());
            }
            resp
        })
    }

    /// A body of these frames, of no known length (written chunked, or to the end for HTTP/1.0).
    fn frames<const N: usize>(parts: [&'static str; N]) -> ProxyBody {
        let frames = futures_util::stream::iter(parts.map(|s| Ok::<_, std::io::Error>(Frame::data(Bytes::from(s)))));
        http_body_util::StreamBody::new(frames).boxed_unsync()
    }

    /// Reads one answer from `io` (`rest` holds bytes read past the previous one): its head, lower-cased, and
    /// its body, decoded; `None` if the connection ended first.
    async fn answer_of(io: &mut TcpStream, rest: &mut BytesMut) -> Option<(String, String)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = resp.parse(rest) {
                let head = String::from_utf8_lossy(&rest[..len]).to_lowercase();
                let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
                let mut framing = if let Some(n) = field("content-length:") {
                    Framing::Length(n.parse().unwrap())
                } else if field("transfer-encoding:").is_some() {
                    Framing::Chunked(Chunk::Size)
                } else if head.starts_with("http/1.1 1") || head.starts_with("http/1.1 204") {
                    Framing::Length(0)
                } else {
                    Framing::ToEnd
                };
                let mut left = rest.split_off(len);
                std::mem::swap(&mut left, rest);
                let mut body = Vec::new();
                loop {
                    match step(&mut framing, rest).unwrap() {
                        Step::Data(d) => body.extend_from_slice(&d),
                        Step::End => return Some((head, String::from_utf8(body).unwrap())),
                        Step::More => {
                            let mut chunk = [0u8; 4096];
                            let n = io.read(&mut chunk).await.ok()?;
                            if n == 0 {
                                return (framing == Framing::ToEnd).then(|| (head, String::from_utf8(body).unwrap()));
                            }
                            rest.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
    }

    async fn closed(io: &mut TcpStream, rest: &mut BytesMut) -> bool {
        rest.is_empty() && matches!(io.read(&mut [0u8; 16]).await, Ok(0) | Err(_))
    }

    #[tokio::test]
    async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
        let (addr, _stop) = server(1 << 20, echo).await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut rest = BytesMut::new();
        io.write_all(b"POST /v1/a?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: one\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(head.contains("\r\ndate: ") && head.contains("\r\ncontent-length: "), "{head}");
        assert!(head.contains("\r\nx-line: one\r\n") && !head.contains("x-as-line"), "the answer's lines: {head}");
        assert_eq!(body, "POST /v1/a?q=1 x=one body=hello");
        // Two requests in one write, the second without a body.
        io.write_all(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nx-test: two\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer_of(&mut io, &mut rest).await.unwrap().1, "POST /b x= body=abc");
        assert_eq!(answer_of(&mut io, &mut rest).await.unwrap().1, "GET /c x=two body=");
        // `Connection: close` is honoured.
        io.write_all(b"GET /d HTTP/1.1\r\nConnection: close\r\n\r\n").await.unwrap();
        let (head, _) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("connection: close"), "{head}");
        assert!(closed(&mut io, &mut rest).await);
    }

    #[tokio::test]
    async fn chunked_bodies_and_expect_continue_are_read() {
        let (addr, _stop) = server(1 << 20, echo).await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut rest = BytesMut::new();
        io.write_all(b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer_of(&mut io, &mut rest).await.unwrap().1, "POST /e x= body=abcde");
        // The client waits for `100 Continue` before it sends the body.
        io.write_all(b"POST /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n").await.unwrap();
        let (head, _) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.starts_with("http/1.1 100 continue"), "{head}");
        io.write_all(b"body").await.unwrap();
        assert_eq!(answer_of(&mut io, &mut rest).await.unwrap().1, "POST /f x= body=body");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_read_and_the_connection_closes_after_the_answer() {
        let (addr, _stop) = server(8, echo).await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut rest = BytesMut::new();
        io.write_all(b"POST /g HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n").await.unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.starts_with("http/1.1 200") && head.contains("connection: close"), "no 100 Continue: {head}");
        assert_eq!(body, "POST /g x= body=error: the request body is larger than 8 bytes");
        assert!(closed(&mut io, &mut rest).await);
        let mut io = TcpStream::connect(addr).await.unwrap();
        io.write_all(b"POST /h HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n")
            .await
            .unwrap();
        let (_, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(body.ends_with("larger than 8 bytes"), "{body}");
    }

    #[tokio::test]
    async fn a_client_still_sending_a_refused_body_gets_the_answer_not_a_reset() {
        let (addr, _stop) = server(8, echo).await;
        let io = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = io.into_split();
        let len = 4 << 20;
        write.write_all(format!("POST /big HTTP/1.1\r\nContent-Length: {len}\r\n\r\n").as_bytes()).await.unwrap();
        // The client sends its whole body before it reads, as most do.
        let sending = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..len / chunk.len() {
                if write.write_all(&chunk).await.is_err() {
                    return false;
                }
            }
            true
        });
        assert!(sending.await.unwrap(), "the body could not be sent whole");
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.expect("the answer, not a reset");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("larger than 8 bytes") && text.contains("connection: close"), "{text}");
    }

    #[tokio::test]
    async fn http_1_0_clients_keep_the_connection_only_when_they_ask() {
        let (addr, _stop) = server(1 << 20, |req| {
            Box::pin(async move {
                if req.uri().path() == "/stream" {
                    Response::new(frames(["one ", "two"]))
                } else {
                    Response::new(super::super::full("ok"))
                }
            })
        })
        .await;
        let mut rest = BytesMut::new();
        let mut io = TcpStream::connect(addr).await.unwrap();
        io.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("connection: close") && body == "ok", "{head}");
        assert!(closed(&mut io, &mut rest).await);
        let mut io = TcpStream::connect(addr).await.unwrap();
        io.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let (head, _) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("connection: keep-alive"), "{head}");
        // A body of unknown length: to the end of the connection for HTTP/1.0, chunked for HTTP/1.1.
        io.write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("connection: close") && !head.contains("chunked"), "{head}");
        assert_eq!(body, "one two");
        let mut io = TcpStream::connect(addr).await.unwrap();
        io.write_all(b"GET /stream HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n").await.unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert_eq!(body, "one two");
        // HEAD: the length, no body.
        while !matches!(
            httparse::Response::new(&mut [httparse::EMPTY_HEADER; 16]).parse(&rest),
            Ok(httparse::Status::Complete(_))
        ) {
            let mut chunk = [0u8; 1024];
            let n = io.read(&mut chunk).await.unwrap();
            rest.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&rest).to_lowercase();
        assert!(text.contains("content-length: 2\r\n") && text.ends_with("\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn an_answer_longer_than_its_content_length_is_cut_and_the_connection_closed() {
        let (addr, _stop) = server(1 << 20, |_| {
            Box::pin(async move {
                let mut resp = Response::new(frames(["hel", "lo"]));
                resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
                resp
            })
        })
        .await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut rest = BytesMut::new();
        io.write_all(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (head, body) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(head.contains("content-length: 3"), "{head}");
        assert_eq!(body, "hel");
        assert!(closed(&mut io, &mut rest).await, "the second request is not answered after a broken one");
    }

    #[tokio::test]
    async fn a_stream_goes_out_frame_by_frame() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let rx = std::sync::Mutex::new(Some(rx));
        let (addr, _stop) = server(1 << 20, move |_| {
            let rx = rx.lock().unwrap().take().unwrap();
            Box::pin(async move {
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
                });
                Response::new(http_body_util::StreamBody::new(frames).boxed_unsync())
            })
        })
        .await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        io.write_all(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        // The head goes out before any frame is ready.
        while !got.ends_with(b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = io.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(String::from_utf8_lossy(&got).contains("transfer-encoding: chunked"));
        for event in ["data: 1\n\n", "data: 2\n\n"] {
            tx.send(Bytes::from(event)).await.unwrap();
            let want = format!("{:x}\r\n{event}\r\n", event.len());
            let mut got = Vec::new();
            while got.len() < want.len() {
                let mut chunk = [0u8; 1024];
                let n = io.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
        drop(tx);
        let mut end = [0u8; 5];
        io.read_exact(&mut end).await.unwrap();
        assert_eq!(&end, b"0\r\n\r\n");
    }

    /// Flags its drop.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_client_that_goes_away_drops_its_request_while_handled_and_while_streamed() {
        let (handled, streamed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (h, s) = (handled.clone(), streamed.clone());
        let (addr, _stop) = server(1 << 20, move |req| {
            let (h, s) = (h.clone(), s.clone());
            Box::pin(async move {
                if req.uri().path() == "/wait" {
                    let _guard = Dropped(h);
                    std::future::pending::<()>().await;
                }
                let guard = Dropped(s);
                let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from("x")))])
                    .chain(futures_util::stream::pending())
                    .map(move |f| {
                        let _ = &guard;
                        f
                    });
                Response::new(http_body_util::StreamBody::new(frames).boxed_unsync())
            })
        })
        .await;
        use futures_util::StreamExt;
        for (path, flag) in [("/wait", &handled), ("/stream", &streamed)] {
            let mut io = TcpStream::connect(addr).await.unwrap();
            io.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
            if path == "/stream" {
                let mut first = [0u8; 64];
                let _ = io.read(&mut first).await.unwrap();
            }
            drop(io);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while !flag.load(Ordering::SeqCst) {
                assert!(tokio::time::Instant::now() < deadline, "{path}: not dropped");
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn malformed_requests_get_a_plain_answer_and_the_connection_closes() {
        let (addr, _stop) = server(1 << 20, echo).await;
        for (wire, status) in [
            (b"GARBAGE\r\n\r\n".to_vec(), "400"),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), "400"),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(), "400"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), "400"),
            ([&b"GET / HTTP/1.1\r\n"[..], &b"a: b\r\n".repeat(200), b"\r\n"].concat(), "431"),
            ([&b"GET /"[..], &vec![b'a'; MAX_HEAD + 10]].concat(), "431"),
        ] {
            let mut io = TcpStream::connect(addr).await.unwrap();
            io.write_all(&wire).await.unwrap();
            let mut rest = BytesMut::new();
            let (head, _) = answer_of(&mut io, &mut rest).await.unwrap();
            assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
            assert!(closed(&mut io, &mut rest).await);
        }
    }

    #[tokio::test]
    async fn idle_connections_close_when_the_server_stops() {
        let (addr, stop) = server(1 << 20, echo).await;
        let mut io = TcpStream::connect(addr).await.unwrap();
        let mut rest = BytesMut::new();
        io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (head, _) = answer_of(&mut io, &mut rest).await.unwrap();
        assert!(!head.contains("connection: close"));
        stop.send_replace(true);
        assert!(closed(&mut io, &mut rest).await);
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_is_served_by_hyper() {
        let (addr, _stop) = server(1 << 20, echo).await;
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::post("http://x/h2")
            .header("x-test", "h2")
            .body(http_body_util::Full::new(Bytes::from("two")))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.headers()["x-line"], "h2", "the answer's lines are fields on HTTP/2");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "POST http://x/h2 x=h2 body=two");
    }
}
