//! Upstream failure: what a non-success answer or a transport error means, decided once.
//!
//! Owns [`FailureClass`] (computed from an HTTP status and body by [`FailureClass::of_answer`], or from a
//! transport error by [`transport`]), what each class means for failover ([`FailureClass::retryable`]), what it
//! cools down and for how long ([`FailureClass::cooldown`]), its words for people, the proxy's per-attempt
//! [`UpstreamError`], `Retry-After` parsing, the upstream's own error message ([`error_message`], [`describe`])
//! and key redaction ([`redact`] for text, [`scrub`] for bodies passed through). The proxy, `router test`,
//! `balance` and `discover` all classify here; ARCHITECTURE.md's failure table is this module in words.
//!
//! Must not: do I/O, touch health state (it says what to cool; `live::health` cools), or put a key anywhere.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{CooldownConfig, Dur, Secret};

/// How an upstream exchange ended. Serialised as its [`code`](FailureClass::code) (`"rate_limited"`): the form
/// stored in request records (`Attempt::outcome`) and printed by `--json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    #[default]
    Ok,
    /// 401 / 403, or an answer saying the key is invalid or the account is closed.
    Auth,
    /// 402, or an answer saying the account is out of quota, balance or credit.
    Quota,
    /// 404 / 405, or a 400 / 422 saying the model does not exist.
    NotFound,
    /// 408 / 409 / 429 without quota words: the upstream is busy.
    RateLimited,
    /// No answer within the timeout, or 504.
    Timeout,
    /// The connection failed: refused, DNS, TLS.
    Connect,
    /// Other 5xx.
    ServerError,
    /// 400 / 413 / 422: the request itself was refused; another upstream would refuse it too.
    BadRequest,
    /// Another 4xx (or an odd status): nothing to learn about the upstream.
    ClientError,
    /// A stream that broke after its first byte reached the client.
    Interrupted,
    /// An answer that is not what the protocol promises (garbage, cut off, an error inside a 200 stream).
    /// Also what an unknown stored class reads as.
    #[serde(other)]
    BadResponse,
}

/// What a failure cools down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolTarget {
    Endpoint,
    Token,
    /// The (channel, model) pair.
    ChannelModel,
}

/// A cooldown: what, how long the first time (doubling on each repeat up to `cap`), and whether the upstream's
/// `Retry-After` replaces the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub target: CoolTarget,
    pub base: Duration,
    pub cap: Duration,
    pub honours_retry_after: bool,
}

/// Quota phrases: out of credit whatever the (4xx) status. Also "insufficient" with one of [`MONEY`].
const QUOTA_PHRASES: &[&str] = &[
    "insufficient_quota",
    "insufficient_balance",
    "quota exceeded",
    "exceeded your current quota",
    "credit balance is too low",
    "out of credit",
    "billing",
    "doesn't have a free quota tier",
    "余额不足",
    "额度不足",
    "额度已用尽",
];
const MONEY: &[&str] = &["balance", "quota", "credit", "fund"];
/// Quota words: out of credit only on the statuses resellers use for it (401 / 403 / 429).
const QUOTA_WORDS: &[&str] = &["insufficient", "quota", "balance", "recharge", "额度", "余额"];
/// The key is not valid, or its account is closed (on a 4xx that is not 408 / 409 / 429).
const BAD_KEY_WORDS: &[&str] = &[
    "invalid_api_key",
    "invalid api key",
    "incorrect api key",
    "api key not valid",
    "access_terminated",
    "account_deactivated",
    "has been deactivated",
    "was terminated",
    "has been terminated",
    "banned",
    "suspended",
];
/// The model does not exist there (400 / 422).
const NO_MODEL_WORDS: &[&str] = &["model_not_found", "model not found", "no such model", "does not exist"];

impl FailureClass {
    /// Classifies an HTTP answer by its status and (error) body, the failure table of ARCHITECTURE.md. In
    /// order: 2xx ok; 402 quota; 404 / 405 not found and 5xx (504 timeout) whatever the body says; then quota
    /// phrases on any other 4xx and quota words on 401 / 403 / 429; then auth for 401 / 403; rate limited for
    /// 408 / 409 / 429; auth for bad-key words on any other 4xx; not found for model words on 400 / 422; bad
    /// request for 400 / 413 / 422; anything else a client error.
    pub fn of_answer(status: u16, body: &[u8]) -> FailureClass {
        match status {
            200..=299 => return FailureClass::Ok,
            402 => return FailureClass::Quota,
            404 | 405 => return FailureClass::NotFound,
            504 => return FailureClass::Timeout,
            500.. => return FailureClass::ServerError,
            _ => {}
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(8192)]).to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        let phrase = has(QUOTA_PHRASES) || (text.contains("insufficient") && has(MONEY));
        let reseller_quota = matches!(status, 401 | 403 | 429) && has(QUOTA_WORDS);
        if (400..500).contains(&status) && (phrase || reseller_quota) {
            return FailureClass::Quota;
        }
        match status {
            401 | 403 => FailureClass::Auth,
            408 | 409 | 429 => FailureClass::RateLimited,
            400..=499 if has(BAD_KEY_WORDS) => FailureClass::Auth,
            400 | 422 if has(NO_MODEL_WORDS) => FailureClass::NotFound,
            400 | 413 | 422 => FailureClass::BadRequest,
            _ => FailureClass::ClientError,
        }
    }

    /// The short code (`--json`, records).
    pub fn code(self) -> &'static str {
        match self {
            FailureClass::Ok => "ok",
            FailureClass::Auth => "auth",
            FailureClass::Quota => "quota",
            FailureClass::NotFound => "not_found",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Timeout => "timeout",
            FailureClass::Connect => "connect",
            FailureClass::ServerError => "server_error",
            FailureClass::BadRequest => "bad_request",
            FailureClass::ClientError => "client_error",
            FailureClass::Interrupted => "interrupted",
            FailureClass::BadResponse => "bad_response",
        }
    }

    /// What it means, for tables.
    pub fn words(self) -> &'static str {
        match self {
            FailureClass::Ok => "ok",
            FailureClass::Auth => "auth: invalid key",
            FailureClass::Quota => "quota: no credit",
            FailureClass::NotFound => "not found",
            FailureClass::RateLimited => "rate limited",
            FailureClass::Timeout => "timeout",
            FailureClass::Connect => "connect: unreachable",
            FailureClass::ServerError => "server error",
            FailureClass::BadRequest => "bad request",
            FailureClass::ClientError => "client error",
            FailureClass::Interrupted => "stream interrupted",
            FailureClass::BadResponse => "bad response",
        }
    }

    /// May the next candidate be tried? Timeouts only with `retry_on_timeout` (the upstream may be running the
    /// request and bill it); a refused request, an odd 4xx or a stream already started never.
    pub fn retryable(self, retry_on_timeout: bool) -> bool {
        match self {
            FailureClass::Auth
            | FailureClass::Quota
            | FailureClass::NotFound
            | FailureClass::RateLimited
            | FailureClass::Connect
            | FailureClass::ServerError => true,
            FailureClass::Timeout => retry_on_timeout,
            FailureClass::Ok
            | FailureClass::BadRequest
            | FailureClass::ClientError
            | FailureClass::Interrupted
            | FailureClass::BadResponse => false,
        }
    }

    /// What cools down after this failure, and for how long (`None`: nothing).
    pub fn cooldown(self, cfg: &CooldownConfig) -> Option<Cooldown> {
        let cool = |target, base: Dur, cap: Dur, honours_retry_after| Cooldown {
            target,
            base: base.0,
            cap: cap.0.max(base.0),
            honours_retry_after,
        };
        Some(match self {
            FailureClass::Connect | FailureClass::Timeout | FailureClass::ServerError => {
                cool(CoolTarget::Endpoint, cfg.base, cfg.max, true)
            }
            FailureClass::Interrupted => cool(CoolTarget::Endpoint, cfg.base, cfg.max, false),
            FailureClass::Auth => cool(CoolTarget::Token, cfg.auth, cfg.auth, false),
            FailureClass::Quota => cool(CoolTarget::Token, cfg.quota, cfg.quota, false),
            FailureClass::RateLimited => cool(CoolTarget::Token, cfg.rate_limit, cfg.max, true),
            FailureClass::NotFound => cool(CoolTarget::ChannelModel, cfg.model, cfg.model, false),
            FailureClass::Ok | FailureClass::BadRequest | FailureClass::ClientError | FailureClass::BadResponse => {
                return None;
            }
        })
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Why one proxy attempt failed: the class and what is needed to say and act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The request could not be sent (`class` is [`FailureClass::Connect`], or `Timeout` for a connect timeout).
    #[error("connect error: {detail}")]
    Connect { class: FailureClass, detail: String },
    #[error("no response within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration>, class: FailureClass },
}

impl UpstreamError {
    /// An answer that is not a success, classified by its status and (already scrubbed) body.
    pub fn status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> UpstreamError {
        UpstreamError::Status { status, retry_after, class: FailureClass::of_answer(status, body) }
    }

    pub fn class(&self) -> FailureClass {
        match self {
            UpstreamError::Connect { class, .. } | UpstreamError::Status { class, .. } => *class,
            UpstreamError::FirstByteTimeout(_) => FailureClass::Timeout,
        }
    }

    pub fn retryable(&self, retry_on_timeout: bool) -> bool {
        self.class().retryable(retry_on_timeout)
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Classifies a reqwest error (sending, or reading a body) in words that hold no URL: `connection failed:
/// <innermost cause>`, `no answer within 20s` (`timeout` is the bound, when the caller set one), `the body broke
/// off: <cause>`, `request failed: <cause>`.
pub fn transport(e: &reqwest::Error, timeout: Option<Duration>) -> (FailureClass, String) {
    // The innermost cause says what happened (`Connection refused`, a DNS or TLS error); reqwest's own text
    // names the URL.
    let why = innermost_cause(e);
    let why = why.as_str();
    let with = |what: &str| if why.is_empty() { what.to_string() } else { format!("{what}: {why}") };
    if e.is_connect() {
        (FailureClass::Connect, with("connection failed"))
    } else if e.is_timeout() {
        let words = match timeout {
            Some(t) => format!("no answer within {}", Dur(t)),
            None => "timed out".to_string(),
        };
        (FailureClass::Timeout, words)
    } else if e.is_body() || e.is_decode() {
        (FailureClass::BadResponse, with("the body broke off"))
    } else {
        (FailureClass::Connect, with("request failed"))
    }
}

/// The first line of an error's innermost cause (`Connection refused (os error 111)`, a DNS or TLS error), which
/// unlike the outer errors' text of HTTP clients names no URL; empty when the error has no cause.
pub fn innermost_cause(e: &dyn std::error::Error) -> String {
    e.source().map(|c| first_line(deepest(c))).unwrap_or_default()
}

/// The last error of `e`'s cause chain (`e` itself when it has no cause).
fn deepest<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

/// An error's text up to its first line break, trimmed.
fn first_line(e: &dyn std::error::Error) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_string()
}

/// What a body that broke off while it was read says: `the body broke off: <innermost cause>`.
/// The error is hyper's (which never knows the URL) or reqwest's wrapping one (whose own text names the URL, so
/// its innermost cause is taken, which is hyper's).
pub fn body_broke(e: &(dyn std::error::Error + 'static)) -> String {
    match first_line(deepest(e)) {
        why if why.is_empty() => "the body broke off".to_string(),
        why => format!("the body broke off: {why}"),
    }
}

/// A send error of a reqwest client as an [`UpstreamError`].
pub fn send_error(e: &reqwest::Error) -> UpstreamError {
    let (class, detail) = transport(e, None);
    UpstreamError::Connect { class, detail }
}

/// `Retry-After` as seconds or an HTTP date; also OpenAI-style `retry-after-ms`.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).max(0.0)));
    }
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(delta.max(0) as u64))
}

/// The provider's own error text, if the body has one (`error.message`, `message`, `msg`, `error`, `detail`),
/// cut to 160 characters. Not redacted: pass it through [`redact`] (or use [`describe`]).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("msg"))
        .or_else(|| v.get("error"))
        .or_else(|| v.pointer("/detail"))?;
    let s = match m {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let s: String = s.chars().take(160).collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `HTTP 401: <upstream message>` with the key (and anything that looks like a key) removed; `HTTP 500` when
/// the body has no message.
pub fn describe(status: u16, body: &[u8], secret: &Secret) -> String {
    // Redact the whole body first: the message is cut to a length that could split a key.
    let clean = redact(&String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]), secret);
    match error_message(clean.as_bytes()) {
        Some(m) => redact(&format!("HTTP {status}: {m}"), secret),
        None => format!("HTTP {status}"),
    }
}

/// Every occurrence of `key` in `hay` replaced by `with`; `None` when there is none (or the key is too short to
/// be a key).
fn replace_key(hay: &[u8], key: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if key.len() < 4 || !hay.windows(key.len()).any(|w| w == key) {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(key) {
            out.extend_from_slice(with);
            i += key.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A database URL with its password replaced by `***` (an unparsable one loses everything before its last `@`):
/// what errors and logs may show of `store.postgres`, One-API sources and the like.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => match u.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => u.to_string(),
        },
    }
}

/// Removes the key, and anything that looks like a key (`sk-...`), from text quoted from an upstream.
pub fn redact(text: &str, secret: &Secret) -> String {
    let s = match replace_key(text.as_bytes(), secret.expose().as_bytes(), b"*****") {
        Some(v) => String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        None => text.to_string(),
    };
    s.split(' ')
        .map(|w| {
            let bare = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
            let looks_like_key = (bare.starts_with("sk-") || bare.starts_with("sk_")) && bare.len() > 8;
            if looks_like_key { w.replace(bare, "sk-*****") } else { w.to_string() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces the token's key in an upstream error body that is passed through to a client (some resellers echo
/// the key back) by `[redacted]`; the body is otherwise untouched (no copy when the key is not in it).
pub fn scrub(body: Bytes, secret: &Secret) -> Bytes {
    if secret.expose().len() < 8 {
        return body;
    }
    match replace_key(&body, secret.expose().as_bytes(), b"[redacted]") {
        Some(v) => Bytes::from(v),
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::KeyState;

    // Bodies, one per kind of text an upstream sends with an error.
    const EMPTY: &str = "";
    const HTML: &str = "<html>It works!</html>";
    const BAD_KEY: &str = r#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#;
    const GEMINI_BAD_KEY: &str = r#"{"error":{"message":"API key not valid. Please pass a valid API key."}}"#;
    const NO_CREDENTIALS: &str = r#"{"error":{"message":"No auth credentials found","code":401}}"#;
    const TERMINATED: &str = r#"{"error":{"message":"Your account was terminated"}}"#;
    const PERMISSION: &str = r#"{"error":{"type":"permission_error","message":"no permission for this model"}}"#;
    const MGMT_CREDITS: &str = r#"{"error":{"code":403,"message":"Only management keys can fetch credits"}}"#;
    const OPENAI_QUOTA: &str = r#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota, please check your plan and billing details."}}"#;
    const ANTHROPIC_CREDIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
    const LOW_BALANCE: &str = r#"{"error":{"message":"Insufficient account balance"}}"#;
    const RESELLER_QUOTA: &str = r#"{"error":{"message":"user quota is not enough"}}"#;
    const CN_QUOTA: &str = r#"{"error":{"message":"该令牌额度已用尽"}}"#;
    const RATE: &str = r#"{"error":{"message":"Rate limit reached for requests"}}"#;
    const NO_MODEL: &str = r#"{"error":{"code":"model_not_found","message":"The model `x` does not exist"}}"#;
    const TOO_LARGE: &str = r#"{"error":{"message":"max_tokens is too large"}}"#;
    const BILLING_404: &str = r#"{"error":{"message":"Invalid URL (GET /v1/dashboard/billing/subscription)"}}"#;
    const BILLING_500: &str = r#"{"error":{"message":"billing service unavailable"}}"#;

    /// Every status the failover table names, with every kind of body: the class, and what the other views of a
    /// class (retry, cooldown, words, key validity) say about it.
    #[test]
    fn failure_table() {
        use FailureClass::*;
        let rows: &[(u16, &str, FailureClass)] = &[
            (200, "{}", Ok),
            (204, EMPTY, Ok),
            (400, TOO_LARGE, BadRequest),
            (400, EMPTY, BadRequest),
            (400, NO_MODEL, NotFound),
            (400, GEMINI_BAD_KEY, Auth),
            (400, ANTHROPIC_CREDIT, Quota),
            (400, OPENAI_QUOTA, Quota),
            (400, LOW_BALANCE, Quota),
            (400, r#"{"error":{"message":"insufficient context for the tool call"}}"#, BadRequest),
            (400, PERMISSION, BadRequest),
            (401, BAD_KEY, Auth),
            (401, NO_CREDENTIALS, Auth),
            (401, EMPTY, Auth),
            (401, RESELLER_QUOTA, Quota),
            (402, EMPTY, Quota),
            (402, "{}", Quota),
            (402, r#"{"error":{"message":"Insufficient Balance"}}"#, Quota),
            (403, "forbidden", Auth),
            (403, TERMINATED, Auth),
            (403, PERMISSION, Auth),
            (403, MGMT_CREDITS, Auth),
            (403, LOW_BALANCE, Quota),
            (403, CN_QUOTA, Quota),
            (404, "not found", NotFound),
            (404, BILLING_404, NotFound),
            (404, OPENAI_QUOTA, NotFound),
            (405, EMPTY, NotFound),
            (408, EMPTY, RateLimited),
            (409, EMPTY, RateLimited),
            (413, EMPTY, BadRequest),
            (418, EMPTY, ClientError),
            (418, TERMINATED, Auth),
            (400, r#"{"error":{"message":"the stream was cut: connection terminated"}}"#, BadRequest),
            (429, TERMINATED, RateLimited),
            (422, NO_MODEL, NotFound),
            (422, EMPTY, BadRequest),
            (429, RATE, RateLimited),
            (429, EMPTY, RateLimited),
            (429, OPENAI_QUOTA, Quota),
            (429, RESELLER_QUOTA, Quota),
            (429, CN_QUOTA, Quota),
            (500, "boom", ServerError),
            (500, BILLING_500, ServerError),
            (502, HTML, ServerError),
            (503, "upstream down", ServerError),
            (504, EMPTY, Timeout),
            (529, "overloaded", ServerError),
            (302, HTML, ClientError),
        ];
        for (status, body, class) in rows {
            assert_eq!(FailureClass::of_answer(*status, body.as_bytes()), *class, "{status} {body}");
        }

        // Per class: retried without / with retry_on_timeout, what cools, the code, the key validity.
        let cfg = CooldownConfig::default();
        // (class, retried, retried with retry_on_timeout, what cools, code, key validity)
        type Meaning = (FailureClass, bool, bool, Option<CoolTarget>, &'static str, KeyState);
        let classes: &[Meaning] = &[
            (Ok, false, false, None, "ok", KeyState::Ok),
            (Auth, true, true, Some(CoolTarget::Token), "auth", KeyState::Invalid),
            (Quota, true, true, Some(CoolTarget::Token), "quota", KeyState::NoQuota),
            (NotFound, true, true, Some(CoolTarget::ChannelModel), "not_found", KeyState::Unknown),
            (RateLimited, true, true, Some(CoolTarget::Token), "rate_limited", KeyState::RateLimited),
            (Timeout, false, true, Some(CoolTarget::Endpoint), "timeout", KeyState::Unreachable),
            (Connect, true, true, Some(CoolTarget::Endpoint), "connect", KeyState::Unreachable),
            (ServerError, true, true, Some(CoolTarget::Endpoint), "server_error", KeyState::Unreachable),
            (BadRequest, false, false, None, "bad_request", KeyState::Unknown),
            (ClientError, false, false, None, "client_error", KeyState::Unknown),
            (Interrupted, false, false, Some(CoolTarget::Endpoint), "interrupted", KeyState::Unknown),
            (BadResponse, false, false, None, "bad_response", KeyState::Unknown),
        ];
        for &(class, retry, retry_on_timeout, target, code, key) in classes {
            assert_eq!(class.retryable(false), retry, "{class}");
            assert_eq!(class.retryable(true), retry_on_timeout, "{class}");
            assert_eq!(class.cooldown(&cfg).map(|c| c.target), target, "{class}");
            assert_eq!(class.code(), code);
            assert_eq!(serde_json::to_string(&class).unwrap(), format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<FailureClass>(&format!("\"{code}\"")).unwrap(), class);
            assert_eq!(KeyState::from(class), key, "{class}");
        }
        // How long: auth and quota for their fixed times; rate limits and endpoints back off and honour Retry-After.
        let c = |class: FailureClass| class.cooldown(&cfg).unwrap();
        assert_eq!((c(Auth).base, c(Auth).cap), (cfg.auth.0, cfg.auth.0));
        assert_eq!(c(Quota).base, cfg.quota.0);
        assert_eq!(c(NotFound).base, cfg.model.0);
        assert!(c(RateLimited).honours_retry_after && c(ServerError).honours_retry_after);
        assert!(!c(Auth).honours_retry_after && !c(Interrupted).honours_retry_after);
        assert_eq!((c(Connect).base, c(Connect).cap), (cfg.base.0, cfg.max.0));
        assert_eq!(Quota.words(), "quota: no credit");
        // A class stored by a newer version reads as a bad response.
        assert_eq!(serde_json::from_str::<FailureClass>("\"teapot\"").unwrap(), BadResponse);
        let e = UpstreamError::status(429, Some(Duration::from_secs(3)), OPENAI_QUOTA.as_bytes());
        assert_eq!((e.class(), e.retry_after()), (Quota, Some(Duration::from_secs(3))));
        assert!(!UpstreamError::FirstByteTimeout(Duration::from_secs(1)).retryable(false));
    }

    #[test]
    fn descriptions_never_hold_the_key() {
        let key = Secret::new("sk-live-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        // A message cut in the middle of the key still leaks nothing.
        let long = format!("{}Your api key: {} is invalid", "x".repeat(130), key.expose());
        let body = serde_json::json!({"error": {"message": long}}).to_string();
        let d = describe(401, body.as_bytes(), &key);
        assert!(!d.contains("ABCDEFGHIJ"), "{d}");
        let plain = Secret::new("plainkey123456");
        let body = serde_json::json!({"error": {"message": "bad key plainkey123456"}}).to_string();
        let d = describe(401, body.as_bytes(), &plain);
        assert_eq!(d, "HTTP 401: bad key *****");
        assert_eq!(describe(500, b"<html>", &plain), "HTTP 500");
    }

    #[test]
    fn redacts_keys() {
        let s = Secret::new("sk-abcdefgh12345678");
        let r = redact("Incorrect API key provided: sk-abcdefgh12345678. See sk-abc...5678 x", &s);
        assert!(!r.contains("abcdefgh"), "{r}");
        assert!(r.contains("Incorrect API key"));
        let r = redact("HTTP 401: Incorrect API key provided: sk-test-abcdef", &Secret::new("sk-test-abcdef"));
        assert_eq!(r, "HTTP 401: Incorrect API key provided: *****");
    }

    #[test]
    fn scrub_removes_echoed_keys() {
        let secret = Secret::new("sk-live-0123456789");
        let body = Bytes::from_static(b"{\"error\":\"Incorrect key sk-live-0123456789 provided\"}");
        assert_eq!(&scrub(body, &secret)[..], b"{\"error\":\"Incorrect key [redacted] provided\"}");
        let clean = Bytes::from_static(b"no key here");
        assert_eq!(scrub(clean.clone(), &secret), clean);
    }

    #[test]
    fn error_messages_from_bodies() {
        assert_eq!(error_message(br#"{"error":{"message":"No auth","code":401}}"#).as_deref(), Some("No auth"));
        assert_eq!(error_message(br#"{"error": "plain"}"#).as_deref(), Some("plain"));
        assert_eq!(error_message(b"<html>"), None);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", reqwest::header::HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", reqwest::header::HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
    }
}
