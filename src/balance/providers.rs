//! Provider balance APIs: which one a channel has, how to ask it, and how to read the answer.
//!
//! Owns the endpoints, JSON fields and units of each provider (reference: oneapi.md §3, protocols.md §3) and
//! the parsers of their bodies. Must not print, cache or store anything, and must never put the key anywhere but
//! the `Authorization` header: error reasons name URLs and HTTP statuses, and any upstream text quoted in a
//! reason is passed through [`redact`] first.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Balance, Status};
use crate::config::{ChannelBalanceConfig, ChannelProtocol, Secret};
use crate::failure::{self, error_message, redact};
use crate::upstream::FailureClass;

/// A balance API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /api/v1/credits` (management keys), else `GET /api/v1/key` (plain keys). USD.
    Openrouter,
    /// `GET /user/balance`, one entry per currency.
    Deepseek,
    /// `GET /v1/user/info`, CNY.
    Siliconflow,
    /// `GET /v1/users/me/balance`, CNY on .cn, USD on .ai.
    Moonshot,
    /// One-API resellers: `GET /v1/dashboard/billing/subscription` + `/v1/dashboard/billing/usage`. USD.
    Oneapi,
    /// New-API resellers: `GET /api/usage/token` (500000 quota = 1 USD), else the One-API pair.
    Newapi,
    /// OpenAI-legacy billing where a host still offers it: the One-API pair, else `/dashboard/billing/credit_grants`.
    Openai,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Openrouter, Kind::Deepseek, Kind::Siliconflow, Kind::Moonshot, Kind::Oneapi, Kind::Newapi, Kind::Openai];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Openrouter => "openrouter",
            Kind::Deepseek => "deepseek",
            Kind::Siliconflow => "siliconflow",
            Kind::Moonshot => "moonshot",
            Kind::Oneapi => "oneapi",
            Kind::Newapi => "newapi",
            Kind::Openai => "openai",
        }
    }

    /// A configured `balance.kind`; `Ok(None)` for `none` (checks turned off).
    pub fn parse(s: &str) -> Result<Option<Kind>, String> {
        let norm: String = s.trim().to_ascii_lowercase().chars().filter(|c| !matches!(c, '-' | '_' | ' ')).collect();
        let kind = match norm.as_str() {
            "none" | "off" | "na" => return Ok(None),
            "openrouter" => Kind::Openrouter,
            "deepseek" => Kind::Deepseek,
            "siliconflow" | "silicon" => Kind::Siliconflow,
            "moonshot" | "kimi" => Kind::Moonshot,
            "oneapi" => Kind::Oneapi,
            "newapi" => Kind::Newapi,
            "openai" | "openaibilling" => Kind::Openai,
            _ => {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(format!("unknown balance kind `{s}` (known: {}, none)", known.join(", ")));
            }
        };
        Ok(Some(kind))
    }
}

/// Where and how to ask for a balance.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub kind: Kind,
    /// `balance.url` or the endpoint's base URL, without a trailing slash; provider paths are joined to it.
    pub base: String,
    /// Currency of providers whose currency depends on the site (Moonshot: USD on .ai, else CNY).
    pub currency: &'static str,
}

/// What a channel's balance check will be.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Query(Target),
    /// No balance API; the reason says why.
    NotAvailable(String),
    /// The configuration names something we cannot ask.
    Invalid(String),
}

/// Chooses the balance API: the channel's `balance: {kind, url}` if given, else by the base URL's host.
pub fn plan(cfg: Option<&ChannelBalanceConfig>, protocol: ChannelProtocol, base_url: &str) -> Plan {
    let base_url = base_url.trim_end_matches('/');
    if let Some(cfg) = cfg {
        let kind = match Kind::parse(&cfg.kind) {
            Ok(Some(k)) => k,
            Ok(None) => return Plan::NotAvailable("balance checks turned off (balance.kind: none)".into()),
            Err(e) => return Plan::Invalid(e),
        };
        let base = cfg.url.as_deref().map(|u| u.trim_end_matches('/')).unwrap_or(base_url);
        if reqwest::Url::parse(base).map(|u| u.host_str().is_none()).unwrap_or(true) {
            return Plan::Invalid(format!("balance URL `{base}` is not an http(s) URL"));
        }
        let currency = moonshot_currency(host(base).as_deref(), host(base_url).as_deref());
        return Plan::Query(Target { kind, base: base.to_string(), currency });
    }
    let Some(h) = host(base_url) else {
        return Plan::NotAvailable("no base URL".into());
    };
    if crate::config::is_local_url(base_url) {
        return Plan::NotAvailable("local endpoint: no credit to check".into());
    }
    let kind = match h.as_str() {
        "openrouter.ai" => Some(Kind::Openrouter),
        "api.deepseek.com" => Some(Kind::Deepseek),
        "api.siliconflow.cn" | "api.siliconflow.com" => Some(Kind::Siliconflow),
        "api.moonshot.cn" | "api.moonshot.ai" => Some(Kind::Moonshot),
        _ => None,
    };
    if let Some(kind) = kind {
        let currency = moonshot_currency(Some(&h), None);
        return Plan::Query(Target { kind, base: base_url.to_string(), currency });
    }
    let reason = match h.as_str() {
        "api.openai.com" => "OpenAI has no balance API for API keys".to_string(),
        "api.anthropic.com" => "Anthropic has no balance API for API keys".to_string(),
        "api.groq.com" => "Groq has no balance API".to_string(),
        "generativelanguage.googleapis.com" => "Gemini has no balance API".to_string(),
        "api.x.ai" => "xAI has no balance API for API keys".to_string(),
        "api.mistral.ai" => "Mistral has no balance API".to_string(),
        _ if protocol == ChannelProtocol::Azure || h.ends_with(".azure.com") => {
            "Azure OpenAI has no balance API".to_string()
        }
        _ if protocol == ChannelProtocol::Anthropic => "Anthropic-protocol hosts have no balance API".to_string(),
        _ if protocol == ChannelProtocol::Gemini => "Gemini has no balance API".to_string(),
        _ => format!(
            "no known balance API for {h} (set balance: {{kind: oneapi|newapi|openai|...}} if it is a reseller)"
        ),
    };
    Plan::NotAvailable(reason)
}

fn host(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok()?.host_str().map(|h| h.to_ascii_lowercase())
}

/// Moonshot bills in USD on the international site (`.ai`), in CNY on `.cn`. The balance URL decides, else the
/// channel's own host (a proxy or mock in front of api.moonshot.ai still bills in USD).
fn moonshot_currency(balance_host: Option<&str>, channel_host: Option<&str>) -> &'static str {
    for h in [balance_host, channel_host].into_iter().flatten() {
        if h.ends_with(".ai") {
            return "USD";
        }
        if h.ends_with(".cn") {
            return "CNY";
        }
    }
    "CNY"
}

/// Joins a provider path to a base URL that may or may not already end in the provider's version prefix:
/// `join("https://x/v1", "/v1", "/user/info")` and `join("https://x", "/v1", "/user/info")` both give
/// `https://x/v1/user/info`.
fn join(base: &str, prefix: &str, rest: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(prefix) { format!("{base}{rest}") } else { format!("{base}{prefix}{rest}") }
}

/// The base without a trailing `/v1` (DeepSeek's and New-API's paths have no version prefix).
fn root(base: &str) -> &str {
    let base = base.trim_end_matches('/');
    base.strip_suffix("/v1").unwrap_or(base)
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fail {
    /// [`FailureClass::Auth`]: the key was refused.
    Auth(String),
    /// 404 / 405: the host does not offer this path.
    Missing(String),
    Other(String),
}

impl Fail {
    fn reason(self) -> String {
        match self {
            Fail::Auth(r) | Fail::Missing(r) | Fail::Other(r) => r,
        }
    }
}

/// Asks one provider for the balance of one key.
pub async fn query(client: &reqwest::Client, t: &Target, secret: &Secret, timeout: Duration) -> (Status, Vec<Balance>) {
    let get = Getter { client, secret, timeout };
    let out = match t.kind {
        Kind::Openrouter => openrouter(&get, &t.base).await,
        Kind::Deepseek => get
            .json(&format!("{}/user/balance", root(&t.base)))
            .await
            .map_err(Fail::reason)
            .and_then(|v| parse_deepseek(&v).map(|b| (Status::Ok, b))),
        Kind::Siliconflow => get
            .json(&join(&t.base, "/v1", "/user/info"))
            .await
            .map_err(Fail::reason)
            .and_then(|v| parse_siliconflow(&v).map(|b| (Status::Ok, b))),
        Kind::Moonshot => get
            .json(&join(&t.base, "/v1", "/users/me/balance"))
            .await
            .map_err(Fail::reason)
            .and_then(|v| parse_moonshot(&v, t.currency).map(|b| (Status::Ok, b))),
        Kind::Openai => dashboard(&get, &t.base, true).await.map_err(Fail::reason),
        // One-API and New-API resellers: each answers one of the two shapes; try the kind's own first.
        Kind::Oneapi => match dashboard(&get, &t.base, false).await {
            Err(Fail::Missing(first)) => {
                newapi(&get, &t.base).await.map_err(|e| format!("{first}; then {}", e.reason()))
            }
            other => other.map_err(Fail::reason),
        },
        Kind::Newapi => match newapi(&get, &t.base).await {
            Err(Fail::Missing(first)) => {
                dashboard(&get, &t.base, false).await.map_err(|e| format!("{first}; then {}", e.reason()))
            }
            other => other.map_err(Fail::reason),
        },
    };
    match out {
        Ok((status, balances)) => (status, balances),
        Err(reason) => (Status::Error(redact(&reason, secret)), Vec::new()),
    }
}

async fn openrouter(get: &Getter<'_>, base: &str) -> Result<(Status, Vec<Balance>), String> {
    // `https://openrouter.ai/api/v1` (the channel's own base URL), `.../api`, or a bare host.
    let base = base.trim_end_matches('/');
    let api = if base.ends_with("/v1") {
        base.to_string()
    } else if base.ends_with("/api") {
        format!("{base}/v1")
    } else {
        format!("{base}/api/v1")
    };
    match get.json(&format!("{api}/credits")).await {
        Ok(v) => parse_openrouter_credits(&v).map(|b| (Status::Ok, b)),
        // `/credits` needs a management key; a plain key can still read its own limit.
        Err(Fail::Auth(first) | Fail::Missing(first)) => match get.json(&format!("{api}/key")).await {
            Ok(v) => parse_openrouter_key(&v),
            Err(e) => Err(format!("{first}; then {}", e.reason())),
        },
        Err(e) => Err(e.reason()),
    }
}

async fn newapi(get: &Getter<'_>, base: &str) -> Result<(Status, Vec<Balance>), Fail> {
    let v = get.json(&format!("{}/api/usage/token", root(base))).await?;
    parse_newapi(&v).map(|b| (Status::Ok, b)).map_err(Fail::Other)
}

/// One-API / OpenAI-legacy billing: `hard_limit_usd - total_usage / 100`. `Fail::Missing` only when the host
/// has no subscription endpoint (so another shape may be tried).
async fn dashboard(get: &Getter<'_>, base: &str, credit_grants: bool) -> Result<(Status, Vec<Balance>), Fail> {
    let sub = match get.json(&join(base, "/v1", "/dashboard/billing/subscription")).await {
        Ok(v) => v,
        Err(Fail::Missing(first)) if credit_grants => {
            let v = get
                .json(&join(base, "/v1", "/dashboard/billing/credit_grants"))
                .await
                .map_err(|e| Fail::Other(format!("{first}; then {}", e.reason())))?;
            return parse_credit_grants(&v).map(|b| (Status::Ok, b)).map_err(Fail::Other);
        }
        Err(e) => return Err(e),
    };
    let (hard_limit, has_payment) = parse_subscription(&sub).map_err(Fail::Other)?;
    let now = chrono::Utc::now();
    let start = if has_payment {
        now.format("%Y-%m-01").to_string()
    } else {
        (now - chrono::Duration::days(100)).format("%Y-%m-%d").to_string()
    };
    let end = (now + chrono::Duration::days(1)).format("%Y-%m-%d");
    let url = join(base, "/v1", &format!("/dashboard/billing/usage?start_date={start}&end_date={end}"));
    let usage = get.json(&url).await.map_err(|e| Fail::Other(e.reason()))?;
    let used = parse_usage_cents(&usage).map_err(Fail::Other)? / 100.0;
    Ok((Status::Ok, vec![Balance::usd(round(hard_limit - used)).used(round(used)).limit(hard_limit)]))
}

struct Getter<'a> {
    client: &'a reqwest::Client,
    secret: &'a Secret,
    timeout: Duration,
}

impl Getter<'_> {
    /// GET with the key as a Bearer token; a 2xx JSON body, or why not.
    async fn json(&self, url: &str) -> Result<Value, Fail> {
        let shown = url.split('?').next().unwrap_or(url);
        let mut req = self.client.get(url).header(reqwest::header::ACCEPT, "application/json");
        let key = self.secret.expose();
        if !key.is_empty()
            && let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
        {
            v.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, v);
        }
        let transport =
            |e: &reqwest::Error| Fail::Other(format!("GET {shown}: {}", failure::transport(e, Some(self.timeout)).1));
        let resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| transport(&e))?;
        let class = FailureClass::of_answer(status, &body);
        if class != FailureClass::Ok {
            let reason = format!("GET {shown}: {}", failure::describe(status, &body, self.secret));
            return Err(match class {
                FailureClass::Auth => Fail::Auth(format!("key refused: {reason}")),
                FailureClass::NotFound if matches!(status, 404 | 405) => Fail::Missing(reason),
                _ => Fail::Other(reason),
            });
        }
        serde_json::from_slice(&body).map_err(|_| {
            let what =
                if body.iter().all(u8::is_ascii_whitespace) { "an empty body" } else { "a body that is not JSON" };
            Fail::Other(format!("GET {shown}: HTTP {status} with {what}"))
        })
    }
}

/// A number or a numeric string (providers send both).
fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn field(v: &Value, pointer: &str) -> Result<f64, String> {
    num(v.pointer(pointer)).ok_or_else(|| format!("unexpected answer: no number at {pointer}"))
}

/// Removes the float noise of subtractions and divisions (amounts are money, 6 decimals are plenty).
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// OpenRouter `/api/v1/credits`: `{"data":{"total_credits":..,"total_usage":..}}`, USD.
pub fn parse_openrouter_credits(v: &Value) -> Result<Vec<Balance>, String> {
    let total = field(v, "/data/total_credits")?;
    let used = field(v, "/data/total_usage")?;
    Ok(vec![Balance::usd(round(total - used)).used(used).limit(total)])
}

/// OpenRouter `/api/v1/key`: `data.limit_remaining` (null when the key has no limit), `usage`, `limit`.
pub fn parse_openrouter_key(v: &Value) -> Result<(Status, Vec<Balance>), String> {
    let data = v.get("data").filter(|d| d.is_object()).ok_or("unexpected answer: no `data` object")?;
    let used = num(data.get("usage"));
    match num(data.get("limit_remaining")) {
        Some(rem) => {
            let mut b = Balance::usd(rem);
            b.used = used;
            b.limit = num(data.get("limit"));
            Ok((Status::Ok, vec![b]))
        }
        None if data.get("limit_remaining").is_some_and(Value::is_null)
            || data.get("limit").is_some_and(Value::is_null) =>
        {
            let used = used.map(|u| format!(" (used {u} USD)")).unwrap_or_default();
            Ok((
                Status::NotAvailable(format!(
                    "key has no credit limit{used}; the account's credit needs a management key"
                )),
                Vec::new(),
            ))
        }
        None => Err("unexpected answer: no number at /data/limit_remaining".into()),
    }
}

/// DeepSeek `/user/balance`: every entry of `balance_infos` (`currency`, `total_balance` as a string).
pub fn parse_deepseek(v: &Value) -> Result<Vec<Balance>, String> {
    let infos = v.get("balance_infos").and_then(Value::as_array).ok_or("unexpected answer: no `balance_infos` list")?;
    let mut out = Vec::new();
    for info in infos {
        let currency =
            info.get("currency").and_then(Value::as_str).ok_or("unexpected answer: an entry has no currency")?;
        let amount = num(info.get("total_balance")).ok_or("unexpected answer: an entry has no total_balance")?;
        out.push(Balance { amount, currency: currency.to_ascii_uppercase(), used: None, limit: None });
    }
    if out.is_empty() {
        return Err("unexpected answer: `balance_infos` is empty".into());
    }
    Ok(out)
}

/// SiliconFlow `/v1/user/info`: `data.totalBalance` (new-api) or `data.balance` (string), CNY; `code` 20000.
pub fn parse_siliconflow(v: &Value) -> Result<Vec<Balance>, String> {
    if let Some(code) = v.get("code").and_then(Value::as_i64)
        && code != 20000
        && code != 0
    {
        let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(format!("provider answered code {code}: {msg}"));
    }
    let data = v.get("data").ok_or("unexpected answer: no `data` object")?;
    let amount = num(data.get("totalBalance"))
        .or_else(|| num(data.get("balance")))
        .ok_or("unexpected answer: no data.totalBalance or data.balance")?;
    Ok(vec![Balance { amount, currency: "CNY".into(), used: None, limit: None }])
}

/// Moonshot `/v1/users/me/balance`: `data.available_balance` (may be negative); `code` 0, `status` true.
pub fn parse_moonshot(v: &Value, currency: &str) -> Result<Vec<Balance>, String> {
    if let Some(code) = v.get("code").and_then(Value::as_i64)
        && code != 0
    {
        let msg = error_message(v.to_string().as_bytes()).unwrap_or_default();
        return Err(format!("provider answered code {code}: {msg}"));
    }
    if v.get("status").and_then(Value::as_bool) == Some(false) {
        return Err("provider answered status false".into());
    }
    let amount = field(v, "/data/available_balance")?;
    Ok(vec![Balance { amount, currency: currency.into(), used: None, limit: None }])
}

/// One-API `/v1/dashboard/billing/subscription`: `hard_limit_usd`, `has_payment_method`.
pub fn parse_subscription(v: &Value) -> Result<(f64, bool), String> {
    let hard = field(v, "/hard_limit_usd")?;
    Ok((hard, v.get("has_payment_method").and_then(Value::as_bool).unwrap_or(false)))
}

/// One-API `/v1/dashboard/billing/usage`: `total_usage` in US cents.
pub fn parse_usage_cents(v: &Value) -> Result<f64, String> {
    field(v, "/total_usage")
}

/// `/dashboard/billing/credit_grants`: `total_available` (also `total_used`, `total_granted`), USD.
pub fn parse_credit_grants(v: &Value) -> Result<Vec<Balance>, String> {
    let mut b = Balance::usd(field(v, "/total_available")?);
    b.used = num(v.get("total_used"));
    b.limit = num(v.get("total_granted"));
    Ok(vec![b])
}

/// New-API quota units per US dollar (`QuotaPerUnit = 500 * 1000`).
pub const NEWAPI_QUOTA_PER_USD: f64 = 500_000.0;

/// New-API `/api/usage/token`: `code == true`, `data.total_available` (also `total_used`, `total_granted`) in
/// quota units.
pub fn parse_newapi(v: &Value) -> Result<Vec<Balance>, String> {
    if v.get("code").and_then(Value::as_bool) != Some(true) {
        let msg = error_message(v.to_string().as_bytes()).unwrap_or_else(|| "no reason given".into());
        return Err(format!("provider refused: {msg}"));
    }
    let avail = field(v, "/data/total_available")?;
    let mut b = Balance::usd(round(avail / NEWAPI_QUOTA_PER_USD));
    b.used = num(v.pointer("/data/total_used")).map(|u| round(u / NEWAPI_QUOTA_PER_USD));
    b.limit = num(v.pointer("/data/total_granted")).map(|u| round(u / NEWAPI_QUOTA_PER_USD));
    Ok(vec![b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(kind: &str, url: Option<&str>) -> ChannelBalanceConfig {
        ChannelBalanceConfig { kind: kind.into(), url: url.map(str::to_string) }
    }

    #[test]
    fn plan_by_host() {
        let q = |u: &str| match plan(None, ChannelProtocol::Openai, u) {
            Plan::Query(t) => Some((t.kind, t.currency)),
            _ => None,
        };
        assert_eq!(q("https://openrouter.ai/api/v1").map(|x| x.0), Some(Kind::Openrouter));
        assert_eq!(q("https://api.deepseek.com/v1").map(|x| x.0), Some(Kind::Deepseek));
        assert_eq!(q("https://api.siliconflow.cn/v1").map(|x| x.0), Some(Kind::Siliconflow));
        assert_eq!(q("https://api.siliconflow.com/v1").map(|x| x.0), Some(Kind::Siliconflow));
        assert_eq!(q("https://api.moonshot.cn/v1"), Some((Kind::Moonshot, "CNY")));
        assert_eq!(q("https://api.moonshot.ai/v1"), Some((Kind::Moonshot, "USD")));
        for u in ["https://api.openai.com/v1", "https://api.groq.com/openai/v1", "http://127.0.0.1:11434/v1"] {
            assert!(matches!(plan(None, ChannelProtocol::Openai, u), Plan::NotAvailable(_)), "{u}");
        }
        assert!(matches!(plan(None, ChannelProtocol::Anthropic, "https://api.anthropic.com"), Plan::NotAvailable(_)));
    }

    #[test]
    fn plan_by_config() {
        let p = plan(Some(&cfg("DeepSeek", Some("http://127.0.0.1:9/"))), ChannelProtocol::Openai, "https://x.io/v1");
        assert_eq!(p, Plan::Query(Target { kind: Kind::Deepseek, base: "http://127.0.0.1:9".into(), currency: "CNY" }));
        // A local balance URL for a channel on the .ai site keeps USD.
        let p = plan(
            Some(&cfg("moonshot", Some("http://127.0.0.1:9"))),
            ChannelProtocol::Openai,
            "https://api.moonshot.ai/v1",
        );
        assert!(matches!(p, Plan::Query(Target { currency: "USD", .. })));
        let p = plan(Some(&cfg("new-api", None)), ChannelProtocol::Openai, "https://reseller.example/v1");
        assert!(matches!(p, Plan::Query(Target { kind: Kind::Newapi, .. })));
        assert!(matches!(
            plan(Some(&cfg("none", None)), ChannelProtocol::Openai, "https://openrouter.ai/api/v1"),
            Plan::NotAvailable(_)
        ));
        assert!(matches!(plan(Some(&cfg("bogus", None)), ChannelProtocol::Openai, "https://x.io"), Plan::Invalid(_)));
    }

    #[test]
    fn joins_paths_with_or_without_version() {
        assert_eq!(
            join("https://api.siliconflow.cn/v1", "/v1", "/user/info"),
            "https://api.siliconflow.cn/v1/user/info"
        );
        assert_eq!(join("http://127.0.0.1:5", "/v1", "/user/info"), "http://127.0.0.1:5/v1/user/info");
        assert_eq!(root("https://api.deepseek.com/v1/"), "https://api.deepseek.com");
    }

    #[test]
    fn openrouter_credits() {
        let v = json!({"data": {"total_credits": 100.5, "total_usage": 25.75}});
        let b = parse_openrouter_credits(&v).unwrap();
        assert_eq!(b, vec![Balance { amount: 74.75, currency: "USD".into(), used: Some(25.75), limit: Some(100.5) }]);
        assert!(parse_openrouter_credits(&json!({"data": {"total_credits": "x"}})).is_err());
    }

    #[test]
    fn openrouter_key() {
        let v = json!({"data": {"label": "sk-or-v1-au7...890", "limit": 100, "usage": 25.5, "limit_remaining": 74.5,
            "is_free_tier": false, "rate_limit": {"requests": 10, "interval": "10s"}}});
        let (s, b) = parse_openrouter_key(&v).unwrap();
        assert_eq!(s, Status::Ok);
        assert_eq!(b[0].amount, 74.5);
        assert_eq!(b[0].limit, Some(100.0));
        let unlimited = json!({"data": {"label": "x", "limit": null, "usage": 1.25, "limit_remaining": null}});
        let (s, b) = parse_openrouter_key(&unlimited).unwrap();
        assert!(matches!(s, Status::NotAvailable(r) if r.contains("no credit limit")));
        assert!(b.is_empty());
        assert!(parse_openrouter_key(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn deepseek_keeps_every_currency() {
        let v = json!({"is_available": true, "balance_infos": [
            {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"},
            {"currency": "USD", "total_balance": "3.50", "granted_balance": "0.00", "topped_up_balance": "3.50"}]});
        let b = parse_deepseek(&v).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].amount, b[0].currency.as_str()), (110.0, "CNY"));
        assert_eq!((b[1].amount, b[1].currency.as_str()), (3.5, "USD"));
        assert!(parse_deepseek(&json!({"is_available": false, "balance_infos": []})).is_err());
        assert!(parse_deepseek(&json!({"balance_infos": [{"currency": "CNY", "total_balance": "abc"}]})).is_err());
    }

    #[test]
    fn siliconflow_prefers_total_balance() {
        let v = json!({"code": 20000, "message": "OK", "status": true, "data": {"id": "u1", "name": "n",
            "balance": "0.88", "chargeBalance": "88.00", "totalBalance": "88.88", "status": "normal"}});
        assert_eq!(parse_siliconflow(&v).unwrap()[0].amount, 88.88);
        let only = json!({"code": 20000, "data": {"balance": "1.5"}});
        assert_eq!(
            parse_siliconflow(&only).unwrap()[0],
            Balance { amount: 1.5, currency: "CNY".into(), used: None, limit: None }
        );
        assert!(parse_siliconflow(&json!({"code": 40001, "message": "Invalid token", "data": null})).is_err());
        assert!(parse_siliconflow(&json!({"data": {}})).is_err());
    }

    #[test]
    fn moonshot_balance_in_site_currency() {
        let v = json!({"code": 0, "data": {"available_balance": 49.58894, "voucher_balance": 46.58893,
            "cash_balance": 3.00001}, "scode": "0x0", "status": true});
        assert_eq!(parse_moonshot(&v, "CNY").unwrap()[0].amount, 49.58894);
        assert_eq!(parse_moonshot(&v, "USD").unwrap()[0].currency, "USD");
        let neg = json!({"code": 0, "data": {"available_balance": -0.5}, "status": true});
        assert_eq!(parse_moonshot(&neg, "CNY").unwrap()[0].amount, -0.5);
        assert!(parse_moonshot(&json!({"code": 1, "message": "bad"}), "CNY").is_err());
    }

    #[test]
    fn oneapi_dashboard_fields() {
        let sub = json!({"object": "billing_subscription", "has_payment_method": true, "soft_limit_usd": 100.0,
            "hard_limit_usd": 100.0, "system_hard_limit_usd": 100.0, "access_until": 0});
        assert_eq!(parse_subscription(&sub).unwrap(), (100.0, true));
        assert_eq!(parse_usage_cents(&json!({"object": "list", "total_usage": 2550.0})).unwrap(), 2550.0);
        // Regression (new-api#1641): a 200 that is not a billing answer is an error, not a balance of 0.
        assert!(parse_subscription(&json!({"object": "list", "data": []})).is_err());
        let grants =
            json!({"object": "credit_summary", "total_granted": 18.0, "total_used": 0.5, "total_available": 17.5});
        assert_eq!(parse_credit_grants(&grants).unwrap()[0].amount, 17.5);
    }

    #[test]
    fn newapi_token_usage() {
        let v = json!({"code": true, "message": "ok", "data": {"object": "token_usage", "name": "k",
            "total_granted": 5_000_000, "total_used": 1_250_000, "total_available": 3_750_000,
            "unlimited_quota": false, "model_limits": {}, "model_limits_enabled": false, "expires_at": 0}});
        let b = parse_newapi(&v).unwrap();
        assert_eq!(b[0], Balance { amount: 7.5, currency: "USD".into(), used: Some(2.5), limit: Some(10.0) });
        assert!(
            parse_newapi(&json!({"code": false, "message": "invalid token"})).unwrap_err().contains("invalid token")
        );
        assert!(parse_newapi(&json!({"success": true})).is_err());
    }
}
