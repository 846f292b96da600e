//! Model discovery: ask every (channel, token) which models it can reach, and at what price.
//!
//! Owns the model-list requests per provider kind (OpenAI-style `GET {base}/models`, Anthropic `GET /v1/models`
//! with paging, Azure `GET /openai/models`, Gemini through its OpenAI-compatible base), parsing ids, kinds and
//! OpenRouter-style prices, and the per-channel report. A failed token simply has no entry in the result, so the
//! catalogue falls back to the channel's configured `models`. It does not persist anything itself: results go
//! through a [`DiscoveryStore`]. Never puts a key into a URL, a report or an error. Also asks the local servers
//! zero-config looks for (Ollama, LM Studio) for their models ([`local_servers`]), with a short timeout.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{Channel, Discovered, DiscoveredModel, Endpoint, ModelKind, Snapshot, Token, is_free_id};
use crate::config::autodetect::LocalServer;
use crate::config::{ChannelProtocol, Price};
use crate::store::{Access, KvTable, Op, Store};
use crate::upstream::{self, Operation, failure};

/// Where discovery results are kept between runs. [`StoreDiscovery`] keeps them in the redb store (directly or
/// through a running server); [`MemoryStore`] is for tests and for running without a store.
pub trait DiscoveryStore: Send + Sync {
    fn load(&self) -> anyhow::Result<Discovered>;
    /// Puts one run's results over the stored ones, as [`Outcome::merge_into`] does.
    fn save(&self, outcome: &Outcome) -> anyhow::Result<()>;
}

/// Discovery results in memory only.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Discovered>);

impl MemoryStore {
    pub fn new(initial: Discovered) -> Self {
        MemoryStore(Mutex::new(initial))
    }
}

impl DiscoveryStore for MemoryStore {
    fn load(&self) -> anyhow::Result<Discovered> {
        Ok(self.0.lock().expect("discovery store lock").clone())
    }
    fn save(&self, outcome: &Outcome) -> anyhow::Result<()> {
        outcome.merge_into(&mut self.0.lock().expect("discovery store lock"));
        Ok(())
    }
}

/// Discovery results in the store's `models` table (key: channel name, value: token fingerprint -> models).
/// Saving is the [`SaveDiscovered`] operation, so a running server rebuilds its catalogue as soon as it lands.
pub struct StoreDiscovery<'a>(pub &'a Access);

impl DiscoveryStore for StoreDiscovery<'_> {
    fn load(&self) -> anyhow::Result<Discovered> {
        Ok(self.0.list_json::<HashMap<String, Vec<DiscoveredModel>>>(KvTable::Models)?.into_iter().collect())
    }
    fn save(&self, outcome: &Outcome) -> anyhow::Result<()> {
        self.0.run(SaveDiscovered::of(outcome)).map(|_| ())
    }
}

/// Replaces the stored models of the channels one discovery run covered: channels with results get them, channels
/// whose every token failed lose their entry (routing falls back to configured models). Other channels are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SaveDiscovered {
    /// Every channel the run covered.
    pub channels: Vec<String>,
    /// Channel -> token fingerprint -> models, for the channels (and tokens) that answered.
    pub discovered: Discovered,
}

impl SaveDiscovered {
    pub fn of(outcome: &Outcome) -> SaveDiscovered {
        SaveDiscovered {
            channels: outcome.reports.iter().map(|r| r.channel.clone()).collect(),
            discovered: outcome.discovered.clone(),
        }
    }
}

impl Op for SaveDiscovered {
    const NAME: &'static str = "discovery_save";
    const WRITES: bool = true;
    /// How many channels now have stored models.
    type Reply = usize;
    fn run(self, store: &Store) -> anyhow::Result<usize> {
        let mut saved = 0;
        for ch in &self.channels {
            match self.discovered.get(ch) {
                Some(models) => {
                    store.put_json(KvTable::Models, ch, models)?;
                    saved += 1;
                }
                None => {
                    store.delete(KvTable::Models, ch)?;
                }
            }
        }
        Ok(saved)
    }
}

/// What to discover and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these channels (empty: every enabled channel).
    pub channels: Vec<String>,
    /// Model lists fetched at the same time.
    pub concurrency: usize,
    /// Bound on each HTTP request.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { channels: Vec::new(), concurrency: 8, timeout: Duration::from_secs(20) }
    }
}

/// How one token's model list went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenReport {
    pub channel: String,
    /// The endpoint that answered (or the last one tried).
    pub endpoint: String,
    /// The token's `token_key` (configured name or fingerprint).
    pub token: String,
    pub fingerprint: String,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Models found (0 when failed).
    pub models: usize,
    /// Of those, how many came with a price.
    pub priced: usize,
    /// Of those, how many are free (price 0, `:free` / `-free` id, or a channel tagged `free`).
    pub free: usize,
    /// Why it failed; never contains the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How one channel went: its tokens, and what routing falls back to for the ones that failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelReport {
    pub channel: String,
    /// `ok` (every token answered), `partial` or `failed`.
    pub status: &'static str,
    pub tokens: Vec<TokenReport>,
    /// Configured models used for tokens whose discovery failed.
    pub configured_models: usize,
}

/// The result of one discovery run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Channel -> token fingerprint -> models, for the tokens that answered.
    pub discovered: Discovered,
    pub reports: Vec<ChannelReport>,
}

impl Outcome {
    /// Puts this run's results over earlier ones: channels discovered in this run are replaced whole (a token that
    /// failed now falls back to configured models); other channels keep what they had.
    pub fn merge_into(&self, previous: &mut Discovered) {
        for r in &self.reports {
            match self.discovered.get(&r.channel) {
                Some(d) => {
                    previous.insert(r.channel.clone(), d.clone());
                }
                None => {
                    previous.remove(&r.channel);
                }
            }
        }
    }
}

/// Why a model list could not be read. Messages never hold a key or a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status { status: u16, detail: Option<String> },
    #[error("not a model list: {0}")]
    Parse(String),
    #[error("Azure channels need a base_url")]
    NoBaseUrl,
}

/// One (channel, token) to ask, with the endpoints that carry the token, in priority order.
struct Job<'s> {
    channel: &'s Channel,
    token: &'s Token,
    endpoints: Vec<&'s Endpoint>,
}

/// Discovers the models of every enabled channel (or the ones in `opts.channels`) of `snap`, each (channel,
/// token fingerprint) once, at most `opts.concurrency` at a time. `on_done` is called after each token.
pub async fn discover(snap: &Snapshot, opts: &Options, on_done: &(dyn Fn(&TokenReport) + Sync)) -> Outcome {
    let client = upstream::probe_client(opts.timeout);
    let jobs = jobs(snap, &opts.channels);
    let results: Vec<(usize, TokenReport, Option<Vec<DiscoveredModel>>)> =
        // Indices, not `&Job` items: keeps the future `Send` for `tokio::spawn` (serve's periodic discovery).
        futures_util::stream::iter(0..jobs.len())
            .map(|i| {
                let (client, job) = (&client, &jobs[i]);
                async move {
                    let (report, models) = run_job(client, job).await;
                    on_done(&report);
                    (i, report, models)
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    let mut results = results;
    results.sort_by_key(|r| r.0);
    let mut out = Outcome::default();
    for (i, report, models) in results {
        let job = &jobs[i];
        if let Some(models) = models {
            out.discovered
                .entry(job.channel.name.to_string())
                .or_default()
                .insert(job.token.fingerprint.to_string(), models);
        }
        match out.reports.last_mut() {
            Some(r) if r.channel == report.channel => r.tokens.push(report),
            _ => out.reports.push(ChannelReport {
                channel: report.channel.clone(),
                status: "ok",
                tokens: vec![report],
                configured_models: job.channel.config().models.len(),
            }),
        }
    }
    for r in &mut out.reports {
        let failed = r.tokens.iter().filter(|t| t.status != "ok").count();
        r.status = match failed {
            0 => "ok",
            n if n == r.tokens.len() => "failed",
            _ => "partial",
        };
    }
    out
}

/// Asks each local server candidate (name, OpenAI-style base URL) for its model list, all at once, each bounded by
/// `timeout`; the ones that answer in time with a list are returned, in the order given.
pub async fn local_servers(candidates: &[(String, String)], timeout: Duration) -> Vec<LocalServer> {
    let client = upstream::probe_client(timeout);
    let asks = candidates.iter().map(|(name, url)| {
        let client = &client;
        async move {
            let body = get_json(client, &format!("{url}/models"), &HeaderMap::new()).await.ok()?;
            let page = parse_page(&body, ChannelProtocol::Openai).ok()?;
            let models = page.models.into_iter().map(|m| m.id).collect();
            Some(LocalServer { name: name.clone(), base_url: url.clone(), models })
        }
    });
    futures_util::future::join_all(asks).await.into_iter().flatten().collect()
}

/// How many (channel, token) model lists a run with this channel filter will fetch.
pub fn planned(snap: &Snapshot, only: &[String]) -> usize {
    jobs(snap, only).len()
}

/// The (channel, token) pairs to ask: enabled channels (optionally only `only`), enabled tokens, each fingerprint
/// once per channel, with every endpoint that carries it (tried in order when one fails).
fn jobs<'s>(snap: &'s Snapshot, only: &[String]) -> Vec<Job<'s>> {
    let mut out: Vec<Job<'s>> = Vec::new();
    for ch in &snap.channels {
        if !ch.enabled || (!only.is_empty() && !only.iter().any(|n| n == &*ch.name)) {
            continue;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for ep in &ch.endpoints {
            for tok in ep.tokens.iter().filter(|t| t.enabled) {
                match seen.get(&*tok.fingerprint) {
                    Some(&j) => out[j].endpoints.push(ep),
                    None => {
                        seen.insert(&tok.fingerprint, out.len());
                        out.push(Job { channel: ch, token: tok, endpoints: vec![ep] });
                    }
                }
            }
        }
    }
    out
}

async fn run_job(client: &reqwest::Client, job: &Job<'_>) -> (TokenReport, Option<Vec<DiscoveredModel>>) {
    let ch = job.channel;
    let mut last_err = DiscoverError::Transport("no endpoint".into());
    let mut last_ep = job.endpoints.first().map(|e| e.name.to_string()).unwrap_or_default();
    for ep in &job.endpoints {
        last_ep = ep.name.to_string();
        match fetch_models(client, ch, ep, job.token).await {
            Ok(models) => {
                let free_channel = ch.tags.iter().any(|t| t == "free");
                let report = TokenReport {
                    channel: ch.name.to_string(),
                    endpoint: last_ep,
                    token: job.token.token_key.to_string(),
                    fingerprint: job.token.fingerprint.to_string(),
                    status: "ok",
                    models: models.len(),
                    priced: models.iter().filter(|m| m.price.is_some()).count(),
                    free: models.iter().filter(|m| free_channel || is_free(m)).count(),
                    reason: None,
                };
                return (report, Some(models));
            }
            Err(e) => last_err = e,
        }
    }
    let reason = failure::redact(&last_err.to_string(), &job.token.secret);
    let report = TokenReport {
        channel: ch.name.to_string(),
        endpoint: last_ep,
        token: job.token.token_key.to_string(),
        fingerprint: job.token.fingerprint.to_string(),
        status: "failed",
        models: 0,
        priced: 0,
        free: 0,
        reason: Some(reason),
    };
    (report, None)
}

/// A discovered model counts as free when its price is 0 or its id says so.
pub fn is_free(m: &DiscoveredModel) -> bool {
    is_free_id(&m.id) || m.price.is_some_and(|p| p.input == 0.0 && p.output == 0.0)
}

/// Most pages followed for one token (Anthropic pages of 1000 models: far more than any account has).
const MAX_PAGES: usize = 50;

/// Fetches one token's model list through one endpoint, following pages where the API pages.
pub async fn fetch_models(
    client: &reqwest::Client,
    ch: &Channel,
    ep: &Endpoint,
    tok: &Token,
) -> Result<Vec<DiscoveredModel>, DiscoverError> {
    if ch.protocol == ChannelProtocol::Azure && ep.base_url.is_empty() {
        return Err(DiscoverError::NoBaseUrl);
    }
    let base = upstream::url(ch, ep, Operation::Models, "");
    let mut headers = HeaderMap::new();
    upstream::auth_headers(ch, ep, tok, Operation::Models, &mut headers);
    let mut out: Vec<DiscoveredModel> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = match (&after, ch.protocol) {
            (Some(a), _) => format!("{base}{sep}limit=1000&after_id={}", urlencode(a)),
            (None, ChannelProtocol::Anthropic) => format!("{base}{sep}limit=1000"),
            (None, _) => base.clone(),
        };
        let body = get_json(client, &url, &headers).await?;
        let page = parse_page(&body, ch.protocol)?;
        for m in page.models {
            if seen.insert(m.id.clone()) {
                out.push(m);
            }
        }
        match page.next {
            Some(n) if after.as_deref() != Some(n.as_str()) => after = Some(n),
            _ => break,
        }
    }
    Ok(out)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn get_json(client: &reqwest::Client, url: &str, headers: &HeaderMap) -> Result<Value, DiscoverError> {
    let resp = client
        .get(url)
        .headers(headers.clone())
        .send()
        .await
        .map_err(|e| DiscoverError::Transport(failure::transport(&e, None).1))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|_| DiscoverError::Transport("connection closed mid-body".into()))?;
    if !status.is_success() {
        return Err(DiscoverError::Status { status: status.as_u16(), detail: failure::error_message(&bytes) });
    }
    serde_json::from_slice(&bytes).map_err(|e| DiscoverError::Parse(format!("invalid JSON ({e})")))
}

/// One page of a model list.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub models: Vec<DiscoveredModel>,
    /// The cursor of the next page (`after_id`), when the list says there is one.
    pub next: Option<String>,
}

/// Parses a model-list body: `{"data": [...]}` (OpenAI, Anthropic, OpenRouter, Azure), `{"models": [...]}` or a
/// bare array. Anthropic paging: `has_more` + `last_id`.
pub fn parse_page(body: &Value, protocol: ChannelProtocol) -> Result<Page, DiscoverError> {
    let list = body
        .get("data")
        .or_else(|| body.get("models"))
        .or(Some(body))
        .and_then(Value::as_array)
        .ok_or_else(|| DiscoverError::Parse("no `data` array".into()))?;
    let mut models = Vec::with_capacity(list.len());
    for item in list {
        let id = item.get("id").or_else(|| item.get("name")).or_else(|| item.get("model")).and_then(Value::as_str);
        let Some(id) = id.map(str::trim).filter(|s| !s.is_empty()) else { continue };
        // Gemini's OpenAI-compatible list says `models/gemini-2.5-flash`; requests use the bare name.
        let id = match protocol {
            ChannelProtocol::Gemini => id.strip_prefix("models/").unwrap_or(id),
            _ => id,
        };
        models.push(DiscoveredModel {
            id: id.to_string(),
            kind: Some(parse_kind(item, id)),
            price: parse_price(item),
            context_length: parse_context(item),
        });
    }
    let next = if body.get("has_more").and_then(Value::as_bool) == Some(true) {
        body.get("last_id").and_then(Value::as_str).map(str::to_string)
    } else {
        None
    };
    Ok(Page { models, next })
}

/// The context window a model list states: `context_length` (OpenRouter, Together, SiliconFlow),
/// `context_window` (Groq), `max_context_length` (Mistral), `max_model_len` (vLLM), `top_provider.context_length`.
fn parse_context(item: &Value) -> Option<u32> {
    ["context_length", "context_window", "max_context_length", "max_model_len"]
        .iter()
        .find_map(|k| item.get(*k))
        .or_else(|| item.pointer("/top_provider/context_length"))
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

/// What a listed model is for: from `type` / `task` / `model_type`, OpenRouter `architecture`, Azure
/// `capabilities`; else guessed from the id.
pub fn parse_kind(item: &Value, id: &str) -> ModelKind {
    let from_word = |w: &str| -> Option<ModelKind> {
        let w = w.to_ascii_lowercase();
        if w.contains("rerank") {
            Some(ModelKind::Rerank)
        } else if w.contains("embed") {
            Some(ModelKind::Embedding)
        } else if ["chat", "llm", "vlm", "language", "text", "code", "completion"].iter().any(|k| w.contains(k)) {
            Some(ModelKind::Chat)
        } else if ["image", "audio", "tts", "stt", "speech", "moderation", "video", "transcri"]
            .iter()
            .any(|k| w.contains(k))
        {
            Some(ModelKind::Other)
        } else {
            None
        }
    };
    for field in ["type", "task", "model_type", "sub_type"] {
        if let Some(k) = item.get(field).and_then(Value::as_str).and_then(from_word) {
            return k;
        }
    }
    if let Some(arch) = item.get("architecture") {
        let outputs: Vec<&str> = match arch.get("output_modalities").and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(Value::as_str).collect(),
            None => arch
                .get("modality")
                .and_then(Value::as_str)
                .and_then(|m| m.split_once("->"))
                .map(|(_, out)| out.split('+').collect())
                .unwrap_or_default(),
        };
        if outputs.iter().any(|o| o.contains("embed")) {
            return ModelKind::Embedding;
        }
        if outputs.iter().any(|o| o.trim() == "text") {
            return ModelKind::Chat;
        }
        if !outputs.is_empty() {
            return ModelKind::Other;
        }
    }
    if let Some(caps) = item.get("capabilities").filter(|c| c.is_object()) {
        let yes = |k: &str| caps.get(k).and_then(Value::as_bool) == Some(true);
        if yes("embeddings") {
            return ModelKind::Embedding;
        }
        if yes("chat_completion") || yes("completion") {
            return ModelKind::Chat;
        }
    }
    ModelKind::guess(id)
}

/// OpenRouter-style prices: `pricing.prompt` / `pricing.completion` / `pricing.input_cache_read` /
/// `pricing.input_cache_write` in USD per token (strings or numbers) -> USD per 1M tokens. Negative values
/// (OpenRouter's `-1` for "varies") and a missing prompt or completion price mean unknown.
pub fn parse_price(item: &Value) -> Option<Price> {
    let p = item.get("pricing")?;
    let per_token = |k: &str| -> Option<f64> {
        let v = p.get(k)?;
        let x = match v {
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            Value::Number(n) => n.as_f64()?,
            _ => return None,
        };
        (x.is_finite() && x >= 0.0).then(|| per_million(x))
    };
    let input = per_token("prompt").or_else(|| per_token("input"))?;
    let output = per_token("completion").or_else(|| per_token("output"))?;
    Some(Price {
        input,
        output,
        cache_read: per_token("input_cache_read"),
        cache_write: per_token("input_cache_write"),
        cache_write_1h: None,
    })
}

/// USD per token -> USD per 1M tokens, rounded to 1e-9 so `0.0000025` gives `2.5`, not `2.4999999999999996`.
fn per_million(per_token: f64) -> f64 {
    (per_token * 1e15).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_local_server_that_does_not_answer_is_skipped_quickly() {
        // Port 9 (discard) on loopback is closed on test machines; the probe must fail fast.
        let started = std::time::Instant::now();
        let found =
            local_servers(&[("ollama".into(), "http://127.0.0.1:9/v1".into())], Duration::from_millis(300)).await;
        assert!(found.is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn openrouter_prices_become_usd_per_million() {
        let item = json!({"id": "x", "pricing": {"prompt": "0.0000025", "completion": "0.00001",
            "input_cache_read": "0.00000125", "request": "0"}});
        let p = parse_price(&item).unwrap();
        assert_eq!(p.input, 2.5);
        assert_eq!(p.output, 10.0);
        assert_eq!(p.cache_read, Some(1.25));
        assert_eq!(p.cache_write, None);
        let free = parse_price(&json!({"pricing": {"prompt": "0", "completion": "0"}})).unwrap();
        assert_eq!((free.input, free.output), (0.0, 0.0));
        assert_eq!(parse_price(&json!({"pricing": {"prompt": 0.000001, "completion": 0.000002}})).unwrap().output, 2.0);
    }

    #[test]
    fn unknown_or_varying_prices_are_none() {
        assert_eq!(parse_price(&json!({"id": "x"})), None);
        assert_eq!(parse_price(&json!({"pricing": {"prompt": "-1", "completion": "-1"}})), None);
        assert_eq!(parse_price(&json!({"pricing": {"prompt": "0.000001"}})), None);
        assert_eq!(parse_price(&json!({"pricing": {"prompt": "abc", "completion": "0"}})), None);
    }

    #[test]
    fn kinds_from_fields_then_from_the_id() {
        let k = |v: Value| parse_kind(&v, v["id"].as_str().unwrap());
        assert_eq!(k(json!({"id": "a", "type": "embedding"})), ModelKind::Embedding);
        assert_eq!(k(json!({"id": "a", "type": "rerank"})), ModelKind::Rerank);
        assert_eq!(k(json!({"id": "a", "type": "chat"})), ModelKind::Chat);
        // Anthropic's `type: model` says nothing.
        assert_eq!(k(json!({"id": "claude-x", "type": "model"})), ModelKind::Chat);
        assert_eq!(k(json!({"id": "a", "architecture": {"modality": "text+image->text"}})), ModelKind::Chat);
        assert_eq!(k(json!({"id": "a", "architecture": {"output_modalities": ["embeddings"]}})), ModelKind::Embedding);
        assert_eq!(k(json!({"id": "a", "architecture": {"modality": "text->image"}})), ModelKind::Other);
        assert_eq!(k(json!({"id": "a", "capabilities": {"embeddings": true}})), ModelKind::Embedding);
        assert_eq!(k(json!({"id": "BAAI/bge-m3"})), ModelKind::Embedding);
        assert_eq!(k(json!({"id": "bge-reranker-v2-m3"})), ModelKind::Rerank);
        assert_eq!(k(json!({"id": "qwen/qwen3-8b"})), ModelKind::Chat);
    }

    #[test]
    fn pages_follow_has_more_and_last_id() {
        let body = json!({"data": [{"id": "claude-a", "type": "model"}, {"id": "claude-b"}],
            "has_more": true, "first_id": "claude-a", "last_id": "claude-b"});
        let p = parse_page(&body, ChannelProtocol::Anthropic).unwrap();
        assert_eq!(p.models.len(), 2);
        assert_eq!(p.next.as_deref(), Some("claude-b"));
        let last = json!({"data": [{"id": "claude-c"}], "has_more": false, "last_id": "claude-c"});
        assert_eq!(parse_page(&last, ChannelProtocol::Anthropic).unwrap().next, None);
    }

    #[test]
    fn list_shapes_and_gemini_prefix() {
        let bare = json!([{"id": "m1"}, {"name": "m2"}, {"nothing": 1}]);
        let ids: Vec<String> =
            parse_page(&bare, ChannelProtocol::Openai).unwrap().models.into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["m1", "m2"]);
        let g = json!({"object": "list", "data": [{"id": "models/gemini-2.5-flash", "object": "model"}]});
        assert_eq!(parse_page(&g, ChannelProtocol::Gemini).unwrap().models[0].id, "gemini-2.5-flash");
        assert!(parse_page(&json!({"error": "x"}), ChannelProtocol::Openai).is_err());
    }

    #[test]
    fn error_details_are_short_and_keys_are_redacted() {
        let body = br#"{"error": {"message": "Incorrect API key provided: sk-test-abcdef"}}"#;
        let d = failure::error_message(body).unwrap();
        let e = DiscoverError::Status { status: 401, detail: Some(d) };
        let msg = failure::redact(&e.to_string(), &crate::config::Secret::new("sk-test-abcdef"));
        assert_eq!(msg, "HTTP 401: Incorrect API key provided: *****");
        assert_eq!(failure::error_message(b"<html>"), None);
    }

    #[test]
    fn merge_replaces_discovered_channels_only() {
        let m = |id: &str| DiscoveredModel { id: id.into(), kind: None, price: None, context_length: None };
        let mut prev: Discovered = HashMap::new();
        prev.entry("a".into()).or_default().insert("fp:1".into(), vec![m("old")]);
        prev.entry("b".into()).or_default().insert("fp:2".into(), vec![m("keep")]);
        let mut out = Outcome::default();
        out.discovered.entry("a".into()).or_default().insert("fp:1".into(), vec![m("new")]);
        let report = |c: &str| ChannelReport { channel: c.into(), status: "ok", tokens: vec![], configured_models: 0 };
        out.reports = vec![report("a"), report("c")];
        prev.entry("c".into()).or_default().insert("fp:3".into(), vec![m("stale")]);
        out.merge_into(&mut prev);
        assert_eq!(prev["a"]["fp:1"][0].id, "new");
        assert_eq!(prev["b"]["fp:2"][0].id, "keep");
        assert!(!prev.contains_key("c"));
    }

    #[test]
    fn the_store_keeps_discovery_per_channel_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::Direct(Store::open(&dir.path().join("s.redb")).unwrap());
        let store = StoreDiscovery(&access);
        let m = |id: &str| DiscoveredModel {
            id: id.into(),
            kind: Some(ModelKind::Chat),
            price: None,
            context_length: None,
        };
        let report = |c: &str| ChannelReport { channel: c.into(), status: "ok", tokens: vec![], configured_models: 0 };
        let mut first = Outcome::default();
        first.discovered.entry("a".into()).or_default().insert("fp:1".into(), vec![m("x")]);
        first.discovered.entry("a".into()).or_default().insert("fp:2".into(), vec![m("y")]);
        first.discovered.entry("b".into()).or_default().insert("fp:3".into(), vec![m("z")]);
        first.reports = vec![report("a"), report("b")];
        store.save(&first).unwrap();
        // A second run over `b` only, in which every token failed: `b` falls back, `a` stays.
        let second = Outcome { discovered: Discovered::new(), reports: vec![report("b")] };
        store.save(&second).unwrap();
        let got = store.load().unwrap();
        assert_eq!(got["a"]["fp:2"], vec![m("y")]);
        assert_eq!(got["a"].len(), 2);
        assert!(!got.contains_key("b"));
    }
}
