//! Prompt-cache affinity, end to end: the real binary against upstreams that cache per key, as providers do.
//!
//! The mock upstream keeps, for every (server, key), the prompt prefixes it has seen; the cached tokens it
//! reports for a request are the longest prefix that key has seen. "Achievable" is what one key per
//! conversation would have cached (the longest prefix seen by any key: every conversation here has its own
//! system prompt, so nothing is shared between conversations). Four kinds of agent traffic are interleaved:
//! Claude Code (Anthropic, `metadata.user_id`), `prompt_cache_key` (Chat), Responses with Codex's `session_id`
//! header, and Chat with no hint at all (the conversation's head identifies it).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

/// What the upstream reported for one request, in the router's normalised terms.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reported {
    /// `server:key` that served it.
    key: String,
    input: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
    output: u64,
    /// What one key per conversation would have had cached.
    achievable: u64,
    /// The kind of traffic, as the upstream sees it.
    kind: &'static str,
}

#[derive(Default)]
struct CacheState {
    /// `server:key` -> hashes of every prompt prefix that key has seen.
    per_key: HashMap<String, HashSet<u64>>,
    /// Every prefix seen by any key.
    any: HashSet<u64>,
    reported: Vec<Reported>,
    /// `server:key`s that answer 429 for now.
    failing: HashSet<String>,
}

type Shared = Arc<Mutex<CacheState>>;

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|b| b.get("text").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| b.to_string()))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The prompt as a list of pieces (system, then each message or item), whatever the protocol.
fn pieces(path: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = body.get("system").or_else(|| body.get("instructions")) {
        out.push(format!("system:{}", text_of(s)));
    }
    let list = if path.ends_with("/responses") { body.get("input") } else { body.get("messages") };
    match list {
        Some(Value::String(s)) => out.push(format!("user:{s}")),
        Some(Value::Array(items)) => {
            for m in items {
                match m.get("role").and_then(Value::as_str) {
                    Some(role) => out.push(format!("{role}:{}", text_of(&m["content"]))),
                    None => out.push(m.to_string()),
                }
            }
        }
        _ => {}
    }
    out
}

fn tokens(piece: &str) -> u64 {
    (piece.len() as u64 / 4).max(1)
}

/// Hashes of every prefix, with the tokens up to it.
fn prefixes(pieces: &[String]) -> Vec<(u64, u64)> {
    let mut h = DefaultHasher::new();
    let mut total = 0;
    pieces
        .iter()
        .map(|p| {
            p.hash(&mut h);
            total += tokens(p);
            (h.finish(), total)
        })
        .collect()
}

fn longest(seen: Option<&HashSet<u64>>, prefixes: &[(u64, u64)]) -> u64 {
    let Some(seen) = seen else { return 0 };
    prefixes.iter().rev().find(|(h, _)| seen.contains(h)).map(|(_, t)| *t).unwrap_or(0)
}

fn key_of(r: &Recorded) -> String {
    r.header("x-api-key")
        .or_else(|| r.header("authorization").map(|a| a.trim_start_matches("Bearer ").to_string()))
        .unwrap_or_default()
}

const OUTPUT: u64 = 5;

/// One caching upstream server speaking Messages, Chat and Responses; `server` names it in `Reported::key`.
async fn cache_upstream(server: &'static str, state: Shared) -> Mock {
    Mock::start(move |r, _| {
        let path = r.uri.split('?').next().unwrap_or("").to_string();
        let body = r.json();
        let key = format!("{server}:{}", key_of(r));
        let mut st = state.lock().unwrap();
        if st.failing.contains(&key) {
            return Reply::Json(429, json!({"error": {"message": "rate limited", "type": "rate_limit_error"}}));
        }
        let pre = prefixes(&pieces(&path, &body));
        let total = pre.last().map(|p| p.1).unwrap_or(0);
        let cached = longest(st.per_key.get(&key), &pre);
        let achievable = longest(Some(&st.any), &pre);
        let seen = st.per_key.entry(key.clone()).or_default();
        seen.extend(pre.iter().map(|p| p.0));
        st.any.extend(pre.iter().map(|p| p.0));
        let model = body["model"].as_str().unwrap_or("m").to_string();
        let kind = if path.ends_with("/messages") && body["metadata"].is_object() {
            "claude-code"
        } else if path.ends_with("/responses") {
            "responses"
        } else if body["prompt_cache_key"].is_string() {
            "prompt-cache-key"
        } else {
            "no-hint"
        };
        let stream = body["stream"] == true;
        let rest = total - cached;
        if path.ends_with("/messages") {
            // The last few tokens after the cache breakpoint are plain input; the rest is written, a third of it
            // with the 1-hour TTL.
            let input = rest.min(2);
            let write = rest - input;
            let write_1h = write / 3;
            st.reported.push(Reported {
                key,
                input,
                cache_read: cached,
                cache_write: write,
                cache_write_1h: write_1h,
                output: OUTPUT,
                achievable,
                kind,
            });
            let usage = json!({"input_tokens": input, "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": write,
                "cache_creation": {"ephemeral_5m_input_tokens": write - write_1h, "ephemeral_1h_input_tokens": write_1h},
                "output_tokens": OUTPUT});
            if stream {
                let mut start = usage.clone();
                start["output_tokens"] = json!(1);
                let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
                Reply::Sse(vec![
                    ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                        "role": "assistant", "content": [], "model": model, "stop_reason": null, "usage": start}})),
                    ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})),
                    ev("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": "ok"}})),
                    ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                    ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": OUTPUT}})),
                    ev("message_stop", json!({"type": "message_stop"})),
                ])
            } else {
                Reply::Json(200, json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "usage": usage}))
            }
        } else {
            st.reported.push(Reported {
                key,
                input: rest,
                cache_read: cached,
                output: OUTPUT,
                achievable,
                kind,
                ..Default::default()
            });
            if path.ends_with("/responses") {
                let usage = json!({"input_tokens": total, "input_tokens_details": {"cached_tokens": cached},
                    "output_tokens": OUTPUT, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": total + OUTPUT});
                let response = json!({"id": "resp_1", "object": "response", "status": "completed", "model": model,
                    "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
                    "usage": usage});
                if stream {
                    Reply::Sse(vec![
                        format!("event: response.output_text.delta\ndata: {}\n\n",
                            json!({"type": "response.output_text.delta", "delta": "ok"})),
                        format!("event: response.completed\ndata: {}\n\n",
                            json!({"type": "response.completed", "response": response})),
                    ])
                } else {
                    Reply::Json(200, response)
                }
            } else {
                let usage = json!({"prompt_tokens": total, "completion_tokens": OUTPUT, "total_tokens": total + OUTPUT,
                    "prompt_tokens_details": {"cached_tokens": cached}});
                if stream {
                    let chunk = |delta: Value, finish: Value| {
                        format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
                    };
                    Reply::Sse(vec![
                        chunk(json!({"content": "ok"}), Value::Null),
                        chunk(json!({}), json!("stop")),
                        format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                            "choices": [], "usage": usage})),
                        "data: [DONE]\n\n".into(),
                    ])
                } else {
                    Reply::Json(200, json!({"id": "c1", "object": "chat.completion", "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": usage}))
                }
            }
        }
    })
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Claude Code: Messages, streamed, `metadata.user_id` with `_session_<uuid>`.
    ClaudeCode,
    /// Chat with `prompt_cache_key`, not streamed.
    PromptCacheKey,
    /// Responses with Codex's `session_id` header, streamed.
    ResponsesHeader,
    /// Chat with nothing that names the conversation, streamed.
    NoHint,
}

const KINDS: [Kind; 4] = [Kind::ClaudeCode, Kind::PromptCacheKey, Kind::ResponsesHeader, Kind::NoHint];

fn filler(conv: &str, turn: usize) -> String {
    format!("{conv} turn {turn}: ") + &"please look at the failing test and fix it. ".repeat(8)
}

/// The model each kind asks for: (Messages, Chat, Responses).
type Models<'a> = (&'a str, &'a str, &'a str);

/// One turn of a conversation: path, headers, body.
fn request(kind: Kind, conv: &str, turn: usize, models: Models<'_>) -> (&'static str, Vec<(String, String)>, Value) {
    let system = format!("You are a coding agent. Conversation {conv}. ") + &"Follow the rules. ".repeat(30);
    let mut history = Vec::new();
    for t in 0..=turn {
        history.push(("user", filler(conv, t)));
        if t < turn {
            history.push(("assistant", format!("ok {t}")));
        }
    }
    match kind {
        Kind::ClaudeCode => {
            let messages: Vec<Value> = history
                .iter()
                .map(|(role, text)| json!({"role": role, "content": [{"type": "text", "text": text}]}))
                .collect();
            let body = json!({"model": models.0, "max_tokens": 1024, "stream": true,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": messages,
                "metadata": {"user_id": format!("user_0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9_account__session_{conv}")}});
            ("/v1/messages?beta=true", vec![("anthropic-version".into(), "2023-06-01".into())], body)
        }
        Kind::PromptCacheKey | Kind::NoHint => {
            let mut messages = vec![json!({"role": "system", "content": system})];
            messages.extend(history.iter().map(|(role, text)| json!({"role": role, "content": text})));
            let mut body = json!({"model": models.1, "messages": messages, "stream": kind == Kind::NoHint});
            if kind == Kind::PromptCacheKey {
                body["prompt_cache_key"] = json!(format!("pck-{conv}"));
            }
            ("/v1/chat/completions", vec![], body)
        }
        Kind::ResponsesHeader => {
            let input: Vec<Value> = history
                .iter()
                .map(|(role, text)| {
                    let part = if *role == "user" { "input_text" } else { "output_text" };
                    json!({"type": "message", "role": role, "content": [{"type": part, "text": text}]})
                })
                .collect();
            let body =
                json!({"model": models.2, "instructions": system, "input": input, "stream": true, "store": false});
            ("/v1/responses", vec![("session_id".into(), format!("codex-{conv}"))], body)
        }
    }
}

/// Sends one request; returns (status, X-Router-Affinity, X-Router-Token, body text).
async fn send(router: &Router, path: &str, headers: &[(String, String)], body: &Value, gw: Option<&str>) -> Sent {
    let mut req = client().post(router.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(k) = gw {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = req.send().await.unwrap();
    let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let sent = Sent {
        status: resp.status().as_u16(),
        affinity: h("x-router-affinity"),
        channel: h("x-router-channel"),
        token: h("x-router-token"),
        attempts: h("x-router-attempts"),
        text: String::new(),
    };
    Sent { text: resp.text().await.unwrap(), ..sent }
}

#[derive(Debug)]
struct Sent {
    status: u16,
    affinity: String,
    channel: String,
    token: String,
    attempts: String,
    text: String,
}

impl Sent {
    fn at(&self) -> String {
        format!("{}/{}", self.channel, self.token)
    }
}

const GW: &str = "gw-all-0001";
const GW_Y: &str = "gw-only-y-0002";

/// Three equal channels per protocol (one server each) and one endpoint with three keys per protocol.
fn config(urls: &[String; 3], extra_routing: &str, disabled: Option<&str>) -> String {
    let mut c = format!(
        "server:\n  keys:\n    - {{name: all, key: {GW}}}\n    - {{name: only-y, key: {GW_Y}, allow: \"tag:y\"}}\nrouting:\n  cooldown: {{base: 1ms, rate_limit: 1ms}}\n{extra_routing}channels:\n"
    );
    for (i, url) in urls.iter().enumerate() {
        let tag = if i == 0 { "x" } else { "y" };
        let enabled = disabled != Some(&format!("a{i}")[..]);
        c += &format!(
            "  - {{name: a{i}, protocol: anthropic, base_url: {url}, keys: [{{name: ka{i}, key: sk-ant-{i}}}], models: [claude-x], tags: [{tag}], enabled: {enabled}}}\n"
        );
        c += &format!(
            "  - {{name: o{i}, protocol: openai, base_url: {url}/v1, keys: [{{name: ko{i}, key: sk-oai-{i}}}], models: [gpt-x], tags: [{tag}], responses_api: native}}\n"
        );
    }
    c += &format!(
        "  - {{name: multi-a, protocol: anthropic, base_url: {}, keys: [{{name: m1, key: sk-m-1}}, {{name: m2, key: sk-m-2}}, {{name: m3, key: sk-m-3}}], models: [claude-y]}}\n",
        urls[0]
    );
    c += &format!(
        "  - {{name: multi-o, protocol: openai, base_url: {}/v1, keys: [{{name: n1, key: sk-n-1}}, {{name: n2, key: sk-n-2}}, {{name: n3, key: sk-n-3}}], models: [gpt-y], responses_api: native}}\n",
        urls[1]
    );
    c
}

struct Setup {
    state: Shared,
    _mocks: Vec<Mock>,
    router: Router,
    urls: [String; 3],
}

async fn setup(extra_routing: &str) -> Setup {
    setup_with(extra_routing, "").await
}

async fn setup_with(extra_routing: &str, extra_channels: &str) -> Setup {
    let state: Shared = Arc::default();
    let mut mocks = Vec::new();
    for name in ["s0", "s1", "s2"] {
        mocks.push(cache_upstream(name, state.clone()).await);
    }
    let urls = [mocks[0].root_url(), mocks[1].root_url(), mocks[2].root_url()];
    let extra_channels = extra_channels.replace("{s0}", &urls[0]).replace("{s1}", &urls[1]).replace("{s2}", &urls[2]);
    let router = Router::start(&(config(&urls, extra_routing, None) + &extra_channels));
    Setup { state, _mocks: mocks, router, urls }
}

/// Runs `convs` interleaved conversations of `turns` turns for every kind; returns cached / achievable per kind.
async fn traffic(
    s: &Setup,
    models: Models<'_>,
    tag: &str,
    convs: usize,
    turns: usize,
    extra: &[(String, String)],
) -> HashMap<Kind, (u64, u64)> {
    let mut out: HashMap<Kind, (u64, u64)> = HashMap::new();
    for turn in 0..turns {
        for c in 0..convs {
            for kind in KINDS {
                let conv = format!("{tag}-{kind:?}-{c}");
                let (path, mut headers, body) = request(kind, &conv, turn, models);
                headers.extend(extra.iter().cloned());
                let before = s.state.lock().unwrap().reported.len();
                let r = send(&s.router, path, &headers, &body, Some(GW)).await;
                assert_eq!(r.status, 200, "{kind:?} {conv} turn {turn}: {}", r.text);
                let rep = s.state.lock().unwrap().reported[before].clone();
                // What the client is told equals what the upstream reported, translated or not.
                if let Ok(v) = serde_json::from_str::<Value>(&r.text) {
                    let u = &v["usage"];
                    let told = u["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .or(u["cache_read_input_tokens"].as_u64())
                        .or(u["input_tokens_details"]["cached_tokens"].as_u64());
                    assert_eq!(told, Some(rep.cache_read), "{kind:?}: {}", r.text);
                }
                let e = out.entry(kind).or_default();
                e.0 += rep.cache_read;
                e.1 += rep.achievable;
            }
        }
    }
    out
}

/// Waits for one record per upstream request; checks that the recorded tokens (uncached input, cache reads,
/// writes and their 1-hour part, output) add up to exactly what the upstreams reported. Returns the records.
async fn records_equal_reported(s: &Setup) -> Vec<Value> {
    let reported = s.state.lock().unwrap().reported.clone();
    let mut records = Vec::new();
    let all_there = eventually(Duration::from_secs(20), || {
        records = s.router.records();
        records.len() == reported.len()
    })
    .await;
    assert!(all_there, "{} records for {} upstream requests", records.len(), reported.len());
    let t = |k: &str| records.iter().map(|r| r["tokens"][k].as_u64().unwrap_or(0)).sum::<u64>();
    let u = |f: fn(&Reported) -> u64| reported.iter().map(f).sum::<u64>();
    assert_eq!(
        (t("input"), t("cache_read"), t("cache_write"), t("cache_write_1h"), t("output")),
        (u(|r| r.input), u(|r| r.cache_read), u(|r| r.cache_write), u(|r| r.cache_write_1h), u(|r| r.output))
    );
    assert!(u(|r| r.cache_write_1h) > 0, "the 1-hour split must be exercised");
    records
}

fn ratios(m: &HashMap<Kind, (u64, u64)>) -> (f64, Vec<(Kind, f64)>) {
    let (c, a) = m.values().fold((0, 0), |(c, a), (x, y)| (c + x, a + y));
    let per = KINDS.iter().map(|k| (*k, m[k].0 as f64 / m[k].1.max(1) as f64)).collect();
    (c as f64 / a.max(1) as f64, per)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_agent_traffic_reaches_the_achievable_cache_and_accounting_matches_the_upstream() {
    let s = setup("").await;
    // Three equal channels per protocol.
    let channels = traffic(&s, ("claude-x", "gpt-x", "gpt-x"), "ch", 5, 5, &[]).await;
    // One endpoint with three keys.
    let keys = traffic(&s, ("claude-y", "gpt-y", "gpt-y"), "key", 5, 5, &[]).await;
    // The same traffic with affinity off, for comparison.
    let off = [("x-router-affinity".to_string(), "off".to_string())];
    let without = traffic(&s, ("claude-x", "gpt-x", "gpt-x"), "off", 5, 5, &off).await;
    let (all_c, per_c) = ratios(&channels);
    let (all_k, per_k) = ratios(&keys);
    let (all_off, per_off) = ratios(&without);
    eprintln!("cached / achievable, three channels: {all_c:.3} {per_c:?}");
    eprintln!("cached / achievable, one endpoint with three keys: {all_k:.3} {per_k:?}");
    eprintln!("cached / achievable, affinity off: {all_off:.3} {per_off:?}");
    for (kind, r) in per_c.iter().chain(&per_k) {
        assert!(*r >= 0.95, "{kind:?}: {r:.3} of the achievable cached tokens");
    }
    assert!(all_off < 0.9, "the mock must punish bouncing between keys: {all_off:.3}");

    let records = records_equal_reported(&s).await;
    // Sessions are recorded as hashes; the affinity outcome with them.
    assert!(records.iter().all(|r| r["session"].as_str().is_some_and(|s| s.len() == 16)), "{:?}", records[0]);
    let outcomes: HashSet<&str> = records.iter().filter_map(|r| r["affinity"].as_str()).collect();
    assert_eq!(outcomes, HashSet::from(["new", "hit", "off"]));
    let store = s.router.store_path();
    let store = store.to_str().unwrap();
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("session_ch-ClaudeCode-0") && !text.contains("pck-ch") && !text.contains("codex-ch"));

    // `router requests --session` takes the raw id (hashed the same way) and lists that conversation only.
    let (code, out, err) =
        run_cli(&["requests", "--json", "--session", "pck-ch-PromptCacheKey-1", "--store", store], &[]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|r| r["session"] == listed[0]["session"]));
    // `router usage --group-by session` shows the hit rate per conversation, largest first.
    let (code, out, err) = run_cli(&["usage", "--group-by", "session", "--top", "3", "--json", "--store", store], &[]);
    assert_eq!(code, 0, "{err}");
    let usage: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage["rows"].as_array().unwrap().len(), 3);
    let rate = usage["totals"]["cache_hit_rate"].as_f64().unwrap();
    assert!(rate > 0.3 && rate < 1.0, "{rate}");
    let (code, out, _) = run_cli(&["usage", "--group-by", "session", "--top", "4", "--store", store], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("hit rate"), "{out}");
    eprintln!("$ router usage --group-by session --top 4\n{out}");
}

/// Every kind through a channel of the other protocol (Messages <-> Chat, Responses -> Chat), streamed and not:
/// the cache still follows the conversation, and records and client-visible usage equal the upstream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_traffic_keeps_affinity_and_exact_accounting() {
    let keys = |p: &str| {
        format!("[{{name: {p}1, key: sk-{p}-1}}, {{name: {p}2, key: sk-{p}-2}}, {{name: {p}3, key: sk-{p}-3}}]")
    };
    let channels = format!(
        "  - {{name: to-anthropic, protocol: anthropic, base_url: {{s0}}, keys: {}, models: [gpt-t]}}\n\
         \x20 - {{name: to-chat, protocol: openai, base_url: {{s1}}/v1, keys: {}, models: [claude-t]}}\n\
         \x20 - {{name: responses-via-chat, protocol: openai, base_url: {{s2}}/v1, keys: {}, models: [resp-t], responses_api: chat}}\n",
        keys("ta"),
        keys("tc"),
        keys("tr")
    );
    let s = setup_with("", &channels).await;
    let got = traffic(&s, ("claude-t", "gpt-t", "resp-t"), "tr", 4, 4, &[]).await;
    let (all, per) = ratios(&got);
    eprintln!("cached / achievable, translated: {all:.3} {per:?}");
    for (kind, r) in &per {
        assert!(*r >= 0.95, "{kind:?}: {r:.3}");
    }
    let records = records_equal_reported(&s).await;
    assert!(records.iter().all(|r| r["translated"].is_string()), "{records:?}");
}

/// Conversations running at the same time (each turn waits for the previous one, as agents do): the first turns
/// race for keys, every later turn still finds its conversation's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conversations_keep_their_caches() {
    let s = setup("").await;
    let conversation = |kind: Kind, c: usize, models: Models<'static>| {
        let s = &s;
        async move {
            let conv = format!("par-{models:?}-{kind:?}-{c}");
            for turn in 0..5 {
                let (path, headers, body) = request(kind, &conv, turn, models);
                let r = send(&s.router, path, &headers, &body, Some(GW)).await;
                assert_eq!(r.status, 200, "{conv} turn {turn}: {}", r.text);
            }
        }
    };
    let mut all = Vec::new();
    for models in [("claude-x", "gpt-x", "gpt-x"), ("claude-y", "gpt-y", "gpt-y")] {
        for kind in KINDS {
            for c in 0..4 {
                all.push(conversation(kind, c, models));
            }
        }
    }
    futures_util::future::join_all(all).await;
    let reported = s.state.lock().unwrap().reported.clone();
    assert_eq!(reported.len(), 2 * 4 * 4 * 5);
    let mut per: HashMap<&str, (u64, u64)> = HashMap::new();
    for r in &reported {
        let e = per.entry(r.kind).or_default();
        e.0 += r.cache_read;
        e.1 += r.achievable;
    }
    eprintln!("cached / achievable, 32 concurrent conversations: {per:?}");
    assert_eq!(per.len(), 4);
    for (kind, (cached, achievable)) in per {
        assert!(cached as f64 >= 0.95 * achievable as f64, "{kind}: {cached} of {achievable}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_moves_the_session_once_and_it_stays_on_its_new_key() {
    let s = setup("").await;
    for models in [("claude-y", "gpt-y", "gpt-y"), ("claude-x", "gpt-x", "gpt-x")] {
        let (path, headers, _) = request(Kind::PromptCacheKey, "fail", 0, models);
        let turn = |t: usize| request(Kind::PromptCacheKey, "fail", t, models).2;
        let first = send(&s.router, path, &headers, &turn(0), Some(GW)).await;
        assert_eq!(first.affinity, "new");
        let second = send(&s.router, path, &headers, &turn(1), Some(GW)).await;
        assert_eq!((second.affinity.as_str(), second.at()), ("hit", first.at()));
        // Its key starts failing (429): the request fails over, the session moves.
        let failing = s.state.lock().unwrap().reported.last().unwrap().key.clone();
        s.state.lock().unwrap().failing.insert(failing.clone());
        let third = send(&s.router, path, &headers, &turn(2), Some(GW)).await;
        assert_eq!((third.status, third.affinity.as_str(), third.attempts.as_str()), (200, "moved", "2"));
        assert_ne!(third.at(), first.at());
        // The old key recovers (its cooldown is 1 ms here); the session stays where it moved.
        s.state.lock().unwrap().failing.clear();
        for t in 3..8 {
            let r = send(&s.router, path, &headers, &turn(t), Some(GW)).await;
            assert_eq!((r.affinity.as_str(), r.at(), r.attempts.as_str()), ("hit", third.at(), "1"), "turn {t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_to_a_disabled_channel_or_a_key_not_allowed_is_not_used() {
    let s = setup("").await;
    let body = |t: usize| request(Kind::ClaudeCode, "gone", t, ("claude-x", "gpt-x", "gpt-x"));
    // Bound to a0 (pinned on the first turn).
    let (path, mut headers, b) = body(0);
    headers.push(("x-router-channel".into(), "a0".into()));
    let first = send(&s.router, path, &headers, &b, Some(GW)).await;
    assert_eq!((first.affinity.as_str(), first.channel.as_str()), ("new", "a0"));
    let (path, headers, b) = body(1);
    let r = send(&s.router, path, &headers, &b, Some(GW)).await;
    assert_eq!((r.affinity.as_str(), r.channel.as_str()), ("hit", "a0"));
    // A key that may only use tag:y channels: a0 is tag x, so the binding is not used for it.
    let (path, headers, b) = body(2);
    let r = send(&s.router, path, &headers, &b, Some(GW_Y)).await;
    assert_eq!(r.affinity, "moved");
    assert_ne!(r.channel, "a0");
    // Back on a0 through the unrestricted key (pinned), then a0 is disabled: the binding is not used.
    let (path, mut headers, b) = body(3);
    headers.push(("x-router-channel".into(), "a0".into()));
    assert_eq!(send(&s.router, path, &headers, &b, Some(GW)).await.channel, "a0");
    std::fs::write(s.router.config_path(), config(&s.urls, "", Some("a0"))).unwrap();
    s.router.signal("HUP");
    let router = &s.router;
    assert!(eventually(Duration::from_secs(10), || router.stderr().contains("config reloaded")).await);
    let (path, headers, b) = body(4);
    let r = send(&s.router, path, &headers, &b, Some(GW)).await;
    assert_eq!((r.status, r.affinity.as_str()), (200, "moved"));
    assert_ne!(r.channel, "a0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_expire_after_the_ttl_and_the_table_is_bounded() {
    // Sixteen bindings at most, forgotten 300 ms after their last use.
    let s = setup("  affinity: {ttl: 300ms, max_sessions: 16}\n").await;
    let send_to = |model: &'static str, conv: String, t: usize| {
        let router = &s.router;
        async move {
            let (path, headers, body) = request(Kind::PromptCacheKey, &conv, t, ("claude-y", model, model));
            send(router, path, &headers, &body, Some(GW)).await
        }
    };
    let send_turn = |conv: String, t: usize| send_to("gpt-y", conv, t);
    assert_eq!(send_turn("ttl".into(), 0).await.affinity, "new");
    assert_eq!(send_turn("ttl".into(), 1).await.affinity, "hit");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(send_turn("ttl".into(), 2).await.affinity, "new");

    // Many new sessions: the first is pushed out; new sessions still spread over three equal keys (rotation)
    // and three equal channels (weighted random) as without affinity: 150 each, 50 expected per target.
    let mut per_target: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let model = if i % 2 == 0 { "gpt-y" } else { "gpt-x" };
        let r = send_to(model, format!("lru-{i}"), 0).await;
        assert_eq!(r.affinity, "new");
        *per_target.entry(r.at()).or_default() += 1;
    }
    assert_eq!(send_turn("lru-0".into(), 1).await.affinity, "new");
    eprintln!("new sessions per channel/key: {per_target:?}");
    assert_eq!(per_target.len(), 6);
    assert!(per_target.values().all(|&n| (25..=75).contains(&n)), "{per_target:?}");

    // Off for one request: said so, recorded, and nothing is bound.
    let (path, mut headers, body) = request(Kind::PromptCacheKey, "quiet", 0, ("claude-y", "gpt-y", "gpt-y"));
    headers.push(("x-router-affinity".into(), "off".into()));
    assert_eq!(send(&s.router, path, &headers, &body, Some(GW)).await.affinity, "off");
    assert_eq!(send_turn("quiet".into(), 1).await.affinity, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_disabled_in_config_says_off_and_still_spreads() {
    let s = setup("  affinity: {enabled: false}\n").await;
    for t in 0..3 {
        let (path, headers, body) = request(Kind::ClaudeCode, "cfg-off", t, ("claude-y", "gpt-y", "gpt-y"));
        let r = send(&s.router, path, &headers, &body, Some(GW)).await;
        assert_eq!((r.status, r.affinity.as_str()), (200, "off"));
    }
}
