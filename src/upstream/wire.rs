//! The proxy's upstream HTTP client: pooled hyper clients (HTTP/1.1 and HTTP/2 over rustls, webpki roots) that
//! send a proxied request and hand back the upstream's response head with its body unread.
//!
//! Plain-HTTP destinations (`http://`) are spoken to by `super::h1`, HTTPS ones by hyper-util's client.
//! Owns the connection pools, the `User-Agent`, and the route around them for destinations an environment proxy
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`) intercepts: those go through reqwest, which
//! speaks to proxies. Everything else goes straight through hyper: no per-request URL parsing beyond the
//! `Uri`, no middleware. Redirects are not followed (an API endpoint that redirects is misconfigured, and
//! following would resend the key): a 3xx is the upstream's answer like any other failure status.
//! Each serving thread has pools of its own (`serve_from_core`), so a request and its upstream connection stay on
//! one thread. Streamed responses (SSE) are read through connections of their own pool whose read buffer is
//! 1 KiB instead of hyper's adaptive 8 KiB and up: an event is a few hundred bytes, read as it arrives, and a
//! stream holds its connection's buffer for minutes, so a thousand open streams hold 2-4 MB less
//! (bench/analysis.md, session four). Whole bodies keep hyper's growing buffer, which reads a large answer in a
//! few calls.
//! Must not decide what a failure means beyond its words (that is `crate::failure`) nor time the request out
//! (the caller bounds the wait for the first byte).

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use http::header::USER_AGENT;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::failure::{FailureClass, UpstreamError};

/// An error while reading an upstream body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream response body, read frame by frame as it arrives.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

type Direct = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// Which of `Wire`'s pools this thread uses: 0 outside the serving threads.
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread use pool `core` (1-based; `proxy::serve`'s serving threads call it once, at start).
pub fn serve_from_core(core: usize) {
    CORE.with(|c| c.set(core));
}

/// One serving thread's pools: whole (non-stream) answers, and streamed ones with small read buffers.
struct Pools {
    whole: Direct,
    streams: Direct,
    /// Plain-HTTP upstreams: the request's own task speaks HTTP/1.1 (`super::h1`).
    plain: std::sync::Arc<super::h1::Pool>,
}

/// The proxy's upstream client; cheap to share (one per server).
pub struct Wire {
    /// The pools of each serving thread (index 0: every other thread). A connection's task runs on the runtime
    /// that opened it, so a thread that only takes its own pools' connections is never woken by another.
    pools: Box<[Pools]>,
    /// Set when the environment names a proxy: destinations it intercepts go through reqwest.
    proxied: Option<(Matcher, reqwest::Client)>,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("proxied", &self.proxied.is_some()).finish_non_exhaustive()
    }
}

/// The read buffer of a connection in the streaming pool: one SSE event (a few hundred bytes) and its chunk
/// framing fit; a larger burst is read in several calls.
const STREAM_READ_BUF: usize = 1024;

/// The environment variables that name a proxy (either case), as reqwest reads them.
const PROXY_VARS: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

impl Wire {
    /// The client for `upstream` settings: connect timeout, pooled connections (90 s idle, 64 per host, in each
    /// pool).
    pub fn new(cfg: &UpstreamConfig) -> Wire {
        Wire::with_cores(cfg, 0)
    }

    /// [`Wire::new`] with a pool for each of `cores` serving threads besides the shared one.
    pub fn with_cores(cfg: &UpstreamConfig, cores: usize) -> Wire {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout.0));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(64);
        let pools = (0..=cores)
            .map(|_| Pools {
                whole: builder.clone().build(https.clone()),
                streams: builder.clone().http1_read_buf_exact_size(STREAM_READ_BUF).build(https.clone()),
                plain: super::h1::Pool::new(cfg.connect_timeout.0),
            })
            .collect();
        let proxy_named = PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        let proxied = proxy_named.then(|| (Matcher::from_env(), super::client(cfg)));
        Wire { pools, proxied, user_agent: HeaderValue::from_static(concat!("router/", env!("CARGO_PKG_VERSION"))) }
    }

    /// Sends `POST url` with `headers` and `body`; returns once the upstream's response head has arrived.
    /// `stream`: the request asks for a streamed response (it goes through the streaming pool).
    pub async fn post(
        &self,
        url: &str,
        mut headers: super::Outbound<'_>,
        body: Bytes,
        stream: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        if !headers.contains(&USER_AGENT) {
            headers.set(USER_AGENT, self.user_agent.clone());
        }
        let pools = &self.pools[CORE.with(Cell::get).min(self.pools.len() - 1)];
        if self.proxied.is_none()
            && let Some(target) = super::h1::Target::of_plain_url(url)
        {
            return pools.plain.post(&target, &headers, body).await;
        }
        let uri: Uri = url.parse().map_err(|e| UpstreamError::Connect {
            class: FailureClass::Connect,
            detail: format!("the upstream URL is not valid: {e}"),
        })?;
        if let Some((matcher, via)) = &self.proxied
            && matcher.intercept(&uri).is_some()
        {
            let sent = via.post(url).headers(headers.into_map()).body(body).send().await;
            let resp = http::Response::from(sent.map_err(|e| crate::failure::send_error(&e))?);
            return Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BodyError).boxed_unsync()));
        }
        if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            return pools.plain.post(&super::h1::Target::of_uri(&uri), &headers, body).await;
        }
        let mut req = Request::post(uri).body(Full::new(body)).expect("a parsed URI and POST make a valid request");
        *req.headers_mut() = headers.into_map();
        let pool = if stream { &pools.streams } else { &pools.whole };
        match pool.request(req).await {
            Ok(resp) => Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BodyError).boxed_unsync())),
            Err(e) => Err(send_failure(&e)),
        }
    }
}

/// A failed send in the words `crate::failure::transport` uses for reqwest: the innermost cause, never the URL.
fn send_failure(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let what = if e.is_connect() { "connection failed" } else { "request failed" };
    transport_failure(what, &crate::failure::innermost_cause(e))
}

/// A send that failed before an answer, in the proxy's words: `what` ("connection failed", "request failed"), then
/// why when known (`super::h1` says it the same way).
pub(super) fn transport_failure(what: &str, why: &str) -> UpstreamError {
    let detail = if why.is_empty() { what.to_string() } else { format!("{what}: {why}") };
    UpstreamError::Connect { class: FailureClass::Connect, detail }
}

/// Reads up to `cap` bytes of a body within `within`; what arrived by then (a broken body ends the read).
pub async fn read_capped(body: Body, cap: usize, within: Duration) -> Bytes {
    let mut out = Vec::new();
    let read = async {
        let mut body = body;
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else { continue };
            out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]);
            if out.len() >= cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_without_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let wire = Wire::new(&UpstreamConfig::default());
        let url = format!("http://{addr}/v1/chat/completions?key=sk-secret");
        let err = wire.post(&url, super::super::Outbound::none(), Bytes::from_static(b"{}"), false).await.unwrap_err();
        let UpstreamError::Connect { class, detail } = err else { panic!("not a connect error") };
        assert_eq!(class, FailureClass::Connect);
        assert!(detail.starts_with("connection failed"), "{detail}");
        assert!(!detail.contains("sk-secret") && !detail.contains(&addr.to_string()), "{detail}");
    }

    #[tokio::test]
    async fn an_invalid_url_is_refused_before_sending() {
        let wire = Wire::new(&UpstreamConfig::default());
        let err = wire.post("http://exa mple/", super::super::Outbound::none(), Bytes::new(), true).await.unwrap_err();
        assert!(err.to_string().contains("not valid"), "{err}");
    }
}
