//! Which headers cross the proxy in each direction, and the headers the router adds to answers.
//!
//! Owns the deny list for client -> upstream (client auth, hop-by-hop, encoding), the allow list for
//! upstream -> client (content type, retry-after, request ids, rate-limit info), and [`Lines`]: the `X-Router-*`
//! and `X-RateLimit-*` fields the router adds, carried beside the answer's header map rather than in it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Whether a client header may go upstream (`name` in lower case): not the client's auth, hop-by-hop or
/// framing headers, encodings, cookies, forwarding information or the router's own `x-router-*`.
pub fn forwarded_upstream(name: &str) -> bool {
    !(matches!(
        name,
        "authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
            | "cookie"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-real-ip"
    ) || name.starts_with("x-router-"))
}

pub fn downstream_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in upstream {
        if crate::upstream::passed_back(name.as_str().as_bytes()) {
            out.append(name.clone(), value.clone());
        }
    }
}

/// Header fields the router adds to an answer (`X-Router-*`, `X-RateLimit-*`), kept as the lines HTTP/1.1 writes
/// (`name: value\r\n`) beside the response rather than in its header map (`proxy::h1::Answer`): `proxy::h1`
/// writes them after the map's fields, and the HTTP/2 server moves them into the map first ([`Lines::into_map`]).
/// A map insert hashes the name and allocates the value: the eight debug headers cost ~2.9k instructions a
/// request that way, and the six rate headers ~3.4k (bench/analysis.md, session nine). A name is added at most
/// once per answer, and never one the map holds.
#[derive(Debug, Clone, Default)]
pub struct Lines(Vec<u8>);

impl Lines {
    /// Adds `name: value`, unless `value` is not header text (what `HeaderValue::from_bytes` refuses).
    pub fn push(&mut self, name: &HeaderName, value: &[u8]) {
        if value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t') {
            self.push_text(name, value);
        }
    }

    /// Adds a value made (and checked) before.
    pub fn push_value(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.push_text(name, value.as_bytes());
    }

    fn push_text(&mut self, name: &HeaderName, value: &[u8]) {
        if self.0.capacity() == 0 {
            // Room for the debug and rate headers at once.
            self.0.reserve(512);
        }
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Adds whole lines made here (`name: value\r\n` each, names and values known to be header text).
    fn push_lines(&mut self, lines: &[u8]) {
        self.0.extend_from_slice(lines);
    }

    /// The lines as HTTP/1.1 writes them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The fields, in the order they were added.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..])))
        })
    }

    /// The fields into `map` (for a server that writes the map only: HTTP/2).
    pub fn into_map(self, map: &mut HeaderMap) {
        for (name, value) in self.fields() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
                map.insert(n, v);
            }
        }
    }
}

/// The `X-RateLimit-*` headers of a key with limits (the convention OpenAI clients read), replacing those the
/// upstream sent: they describe the shared upstream account, not this key. The names are fixed and the values
/// digits, so the lines are rendered on the stack and added with one copy (six `push_text` calls, each value
/// formatted into its own buffer, cost ~1.5k instructions a request: bench/analysis.md, session eleven).
pub fn rate_limits(out: &mut HeaderMap, lines: &mut Lines, rate: &crate::live::limits::Rate) {
    // Collecting none allocates nothing.
    let upstream: Vec<HeaderName> = out.keys().filter(|n| n.as_str().starts_with("x-ratelimit-")).cloned().collect();
    for n in upstream {
        out.remove(n);
    }
    let mut text = Digits::default();
    for (w, [limit, remaining, reset]) in [(rate.requests, RATE_REQUESTS), (rate.tokens, RATE_TOKENS)] {
        let Some(w) = w else { continue };
        text.line(limit, |t| t.u64(w.limit));
        text.line(remaining, |t| t.u64(w.remaining));
        text.line(reset, |t| t.duration(w.reset));
    }
    lines.push_lines(text.as_bytes());
}

/// Header lines of names and digits, rendered on the stack: room for the six rate lines at their longest
/// (`x-ratelimit-remaining-requests: ` and twenty digits, six times, is under 384 bytes).
struct Digits {
    buf: [u8; 384],
    len: usize,
}

impl Default for Digits {
    fn default() -> Self {
        Digits { buf: [0; 384], len: 0 }
    }
}

impl Digits {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn u64(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    /// [`duration_text`].
    fn duration(&mut self, d: std::time::Duration) {
        let ms = d.as_millis();
        if ms < 1_000 {
            self.u64(ms as u64);
            self.push(b"ms");
            return;
        }
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        if s >= 60 {
            self.u64(s / 60);
            self.push(b"m");
        }
        self.u64(if s >= 60 { s % 60 } else { s });
        self.push(b"s");
    }

    /// `name: value\r\n`, the value written by `value`.
    fn line(&mut self, name: &'static [u8], value: impl FnOnce(&mut Self)) {
        self.push(name);
        value(self);
        self.push(b"\r\n");
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Limit, remaining and reset of the requests window, then of the tokens window: the lines' heads.
const RATE_REQUESTS: [&[u8]; 3] =
    [b"x-ratelimit-limit-requests: ", b"x-ratelimit-remaining-requests: ", b"x-ratelimit-reset-requests: "];
const RATE_TOKENS: [&[u8]; 3] =
    [b"x-ratelimit-limit-tokens: ", b"x-ratelimit-remaining-tokens: ", b"x-ratelimit-reset-tokens: "];

/// A duration as OpenAI's reset headers write it: `250ms`, `12s`, `1m12s`.
pub fn duration_text(d: std::time::Duration) -> String {
    let mut out = Digits::default();
    out.duration(d);
    String::from_utf8_lossy(out.as_bytes()).into_owned()
}

/// The `X-Router-*` response headers (names made once, at compile time: a name built per response is checked and
/// looked up in the standard table every time).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-router-request-id");
pub const CHANNEL: HeaderName = HeaderName::from_static("x-router-channel");
pub const ENDPOINT: HeaderName = HeaderName::from_static("x-router-endpoint");
pub const MODEL: HeaderName = HeaderName::from_static("x-router-model");
pub const TOKEN: HeaderName = HeaderName::from_static("x-router-token");
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-router-attempts");
pub const STRATEGY: HeaderName = HeaderName::from_static("x-router-strategy");
pub const SCORE: HeaderName = HeaderName::from_static("x-router-score");
/// Also the request header that turns affinity off for one request (`proxy::affinity`).
pub const AFFINITY: HeaderName = HeaderName::from_static("x-router-affinity");
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Request headers that carry a gateway key (besides `Authorization`): Anthropic's and Google's clients.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// The request id header (`usage::hex_id`), in the map: for answers the router makes itself (errors, local
/// answers), which carry no [`Lines`] id.
pub fn set_request_id(out: &mut HeaderMap, id: u128) {
    out.insert(REQUEST_ID, HeaderValue::from_bytes(&crate::usage::hex_id(id)).expect("hex digits are header text"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_headers_replace_the_upstream_ones() {
        use crate::live::limits::{Rate, Window};
        use std::time::Duration;
        let mut h = HeaderMap::new();
        let mut lines = Lines::default();
        h.insert("x-ratelimit-limit-requests", HeaderValue::from_static("10000"));
        h.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("999999"));
        let w = Window { limit: 5, remaining: 3, reset: Duration::from_millis(24_500) };
        rate_limits(&mut h, &mut lines, &Rate { requests: Some(w), tokens: None });
        assert!(h.is_empty(), "the upstream's are gone from the map");
        assert_eq!(
            lines.as_bytes(),
            b"x-ratelimit-limit-requests: 5\r\nx-ratelimit-remaining-requests: 3\r\nx-ratelimit-reset-requests: 25s\r\n"
        );
        lines.into_map(&mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "5");
        assert_eq!(h["x-ratelimit-remaining-requests"], "3");
        assert_eq!(h["x-ratelimit-reset-requests"], "25s");
        assert!(h.get("x-ratelimit-remaining-tokens").is_none());
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(0)), "0ms");
        assert_eq!(duration_text(Duration::from_secs(59)), "59s");
        assert_eq!(duration_text(Duration::from_millis(59_001)), "1m0s");
        assert_eq!(duration_text(Duration::from_secs(72)), "1m12s");
        assert_eq!(duration_text(Duration::from_secs(3_725)), "62m5s");
        let tokens = Window { limit: 18_446_744_073_709_551_615, remaining: 0, reset: Duration::from_millis(1) };
        let (mut h, mut lines) = (HeaderMap::new(), Lines::default());
        rate_limits(&mut h, &mut lines, &Rate { requests: Some(w), tokens: Some(tokens) });
        lines.into_map(&mut h);
        assert_eq!(h["x-ratelimit-limit-tokens"], "18446744073709551615");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "0");
        assert_eq!(h["x-ratelimit-reset-tokens"], "1ms");
        assert_eq!(h["x-ratelimit-remaining-requests"], "3");
    }

    #[test]
    fn lines_take_header_text_only_and_read_back_as_fields() {
        let mut l = Lines::default();
        l.push(&CHANNEL, b"main");
        l.push(&MODEL, b"evil\r\nset-cookie: x=1");
        l.push(&MODEL, b"bad\x00");
        l.push(&TOKEN, b"k: with colon\tand tab");
        l.push_value(&STRATEGY, &HeaderValue::from_static("priority"));
        assert_eq!(
            l.fields().collect::<Vec<_>>(),
            [
                ("x-router-channel", &b"main"[..]),
                ("x-router-token", b"k: with colon\tand tab"),
                ("x-router-strategy", b"priority")
            ]
        );
        let mut h = HeaderMap::new();
        l.into_map(&mut h);
        assert_eq!(h.len(), 3);
        assert_eq!(h["x-router-token"], "k: with colon\tand tab");
    }

    #[test]
    fn client_auth_never_goes_upstream() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer gw"));
        h.insert("x-api-key", HeaderValue::from_static("gw"));
        h.insert("anthropic-beta", HeaderValue::from_static("tools-2024"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.insert("x-router-channel", HeaderValue::from_static("a"));
        let out = crate::upstream::Outbound::new(&h, forwarded_upstream).into_map();
        assert!(out.get("authorization").is_none() && out.get("x-api-key").is_none());
        assert!(out.get("x-router-channel").is_none());
        assert_eq!(out.get("anthropic-beta").unwrap(), "tools-2024");
        assert_eq!(out.get("anthropic-version").unwrap(), "2023-06-01");
    }
}
