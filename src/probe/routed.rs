//! Routed checks of `router test`: the routing decision for a model or tag target, and the one real request sent
//! through an in-process copy of the proxy (`proxy::serve_on` on 127.0.0.1:0 with one thread, the same code `serve` runs) with its
//! attempts as the proxy recorded them.
//!
//! Must not send anything to an upstream itself (the in-process proxy does), and redacts every key of the
//! snapshot from what it reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::{MAX_TOKENS, Options, PROMPT, ProbeReport, apply, route_request};
use crate::catalog::Snapshot;
use crate::config::{Config, Dur, Strategy};
use crate::failure::{error_message, redact};
use crate::live::health::Health;
use crate::protocol::Protocol;
use crate::protocol::convert::Conversion;
use crate::routing::view::PlanView;
pub use crate::routing::view::{CandidateView, ExcludedView};
use crate::routing::{self, PlanError};
use crate::upstream;
use crate::usage::sink::RecordSink;
use crate::usage::{Attempt, Outcome, RequestRecord, Tokens};

/// The one real request of a routed target, as the proxy recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedRequest {
    /// `POST /v1/chat/completions` or `POST /v1/messages`.
    pub path: String,
    pub status: u16,
    pub outcome: Outcome,
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u32>,
    pub total_ms: u32,
    pub tokens: Tokens,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<Conversion>,
    /// What went wrong (the proxy's summary, or the upstream's message), never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The proxy's own record of it (kept in the store by `router test`: test requests spend tokens too).
    #[serde(skip)]
    pub record: Option<Box<RequestRecord>>,
}

/// The routing decision for a model or tag target and what the real request did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteResult {
    pub target: String,
    pub strategy: Strategy,
    /// How the name was resolved: `tag`, `alias`, `exact`, `pattern`, `suffix`, `tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// The client protocol the request was sent in.
    pub client: Protocol,
    /// In the order routing gave (inside a priority tier the order is weighted random, so the real request may
    /// try them in another order: the attempts say what happened).
    pub candidates: Vec<CandidateView>,
    pub excluded: Vec<ExcludedView>,
    /// Routing refused the request (e.g. every candidate is excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RoutedRequest>,
}

impl RouteResult {
    pub fn ok(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.outcome == Outcome::Ok && (200..300).contains(&r.status))
    }
}

/// The configuration the in-process proxy of routed tests runs with: open (gateway keys are checked by the real
/// server, and their plaintext is not known here), debug headers on, and every attempt bounded by `timeout`.
pub fn in_process_config(config: &Config, timeout: Duration) -> Config {
    let mut c = config.clone();
    c.gateway_keys.clear();
    c.raw.server.keys.clear();
    c.raw.server.debug_headers = true;
    let up = &mut c.raw.upstream;
    up.first_byte_timeout = Dur(up.first_byte_timeout.0.min(timeout));
    up.idle_timeout = Dur(up.idle_timeout.0.min(timeout));
    let attempts = c.raw.routing.max_attempts.max(1);
    let total = timeout.saturating_mul(attempts).saturating_add(Duration::from_secs(1));
    c.raw.routing.total_timeout = Dur(c.raw.routing.total_timeout.0.min(total));
    c
}

/// Routes each target and sends one real request for it through an in-process proxy (`proxy::serve` on
/// 127.0.0.1:0 with its own health, seeded from `seed`, and a record sink read here). `snap` should be built from
/// [`in_process_config`].
pub async fn route_all(
    snap: Arc<Snapshot>,
    targets: &[String],
    opts: &Options,
    seed: &ProbeReport,
) -> Vec<RouteResult> {
    let mut out = Vec::new();
    for t in targets {
        out.push(route_one(snap.clone(), t, opts, seed).await);
    }
    out
}

async fn route_one(snap: Arc<Snapshot>, target: &str, opts: &Options, seed: &ProbeReport) -> RouteResult {
    let health = Arc::new(Health::new());
    apply(seed, &health, &snap.config.raw.routing.cooldown);
    // The client protocol: OpenAI, unless the best candidate speaks Anthropic (then no translation is needed).
    let mut client = Protocol::Openai;
    let mut plan = routing::plan(&snap, &health, &route_request(&snap, target, client, opts.strategy), Instant::now());
    if let Ok(p) = &plan
        && p.candidates.first().is_some_and(|c| !c.native)
    {
        client = Protocol::Anthropic;
        plan = routing::plan(&snap, &health, &route_request(&snap, target, client, opts.strategy), Instant::now());
    }
    let strategy = opts.strategy.unwrap_or(snap.config.raw.routing.strategy);
    let mut result = RouteResult {
        target: target.to_string(),
        strategy,
        resolved_by: None,
        client,
        candidates: Vec::new(),
        excluded: Vec::new(),
        plan_error: None,
        request: None,
    };
    match &plan {
        Ok(p) => {
            let view = PlanView::new(&snap, &health, target, p);
            result.resolved_by = Some(view.resolved_by);
            result.excluded = view.excluded;
            result.candidates = view.candidates;
        }
        Err(e) => {
            result.plan_error = Some(e.to_string());
            if let PlanError::AllCooling { excluded, .. } | PlanError::NoneUsable { excluded, .. } = e {
                result.excluded = ExcludedView::all(excluded);
            }
        }
    }
    // The request goes through the proxy even when planning failed here: its answer is what a client would see.
    result.request = Some(match send_through_proxy(snap.clone(), health, target, client, strategy, opts).await {
        Ok(r) => r,
        Err(e) => RoutedRequest {
            path: path_of(client).to_string(),
            status: 0,
            outcome: Outcome::UpstreamError,
            attempts: Vec::new(),
            channel: None,
            endpoint: None,
            token_key: None,
            model: None,
            ttfb_ms: None,
            total_ms: 0,
            tokens: Tokens::default(),
            translated: None,
            error: Some(redact_all(&snap, &format!("{e:#}"))),
            record: None,
        },
    });
    result
}

fn path_of(client: Protocol) -> &'static str {
    match client {
        // Route checks ask as an OpenAI or Anthropic client only.
        Protocol::Openai | Protocol::Gemini => "/v1/chat/completions",
        Protocol::Anthropic => "/v1/messages",
    }
}

/// Removes every key of the snapshot (and anything that looks like a key) from `text`.
fn redact_all(snap: &Snapshot, text: &str) -> String {
    let mut s = text.to_string();
    for ch in &snap.channels {
        for ep in &ch.endpoints {
            for t in &ep.tokens {
                s = redact(&s, &t.secret);
            }
        }
    }
    s
}

async fn send_through_proxy(
    snap: Arc<Snapshot>,
    health: Arc<Health>,
    target: &str,
    client: Protocol,
    strategy: Strategy,
    opts: &Options,
) -> anyhow::Result<RoutedRequest> {
    use anyhow::Context;
    let (sink, mut records) = RecordSink::new(16);
    let state = Arc::new(crate::proxy::AppState {
        client: upstream::client(&snap.config.raw.upstream),
        wire: upstream::wire::Wire::new(&snap.config.raw.upstream),
        snapshot: ArcSwap::new(snap.clone()),
        health,
        sink,
        fasttest: crate::upstream::fasttest::FastTest::default(),
        // Open: gateway keys are checked by the real server, not by `router test`.
        keys: Default::default(),
        limiter: Default::default(),
        door: Default::default(),
        events: crate::events::Events::new(1),
        metrics: Default::default(),
        affinity: Default::default(),
        shared: None,
        stopping: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the test proxy")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::proxy::serve_on(
        listener,
        state,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
        1,
    ));
    let path = path_of(client);
    let body = serde_json::json!({
        "model": target,
        "messages": [{ "role": "user", "content": PROMPT }],
        "max_tokens": MAX_TOKENS,
    });
    let total = snap.config.raw.routing.total_timeout.0 + Duration::from_secs(5);
    let http = upstream::probe_client(total.max(opts.timeout));
    let mut req = http.post(format!("http://{addr}{path}")).header("x-router-strategy", strategy.as_str()).json(&body);
    if client == Protocol::Anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let answer = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let record = tokio::time::timeout(Duration::from_secs(10), records.recv()).await.ok().flatten();
    let _ = stop.send(());
    let _ = server.await;
    let (status, bytes) = answer.context("the test proxy did not answer")?;
    let record: RequestRecord = Arc::unwrap_or_clone(record.context("the test proxy recorded nothing")?);
    let mut error = record.error.clone();
    if !(200..300).contains(&status)
        && let Some(m) = error_message(&bytes)
    {
        // The proxy's own summary names attempts; the upstream's message says why (redacted).
        let m = redact_all(&snap, &m);
        error = Some(match error {
            Some(e) if !e.contains(&m) && !m.contains(&e) => format!("{e}: {m}"),
            Some(e) if e.len() >= m.len() => e,
            _ => m,
        });
    }
    Ok(RoutedRequest {
        path: format!("POST {path}"),
        status: record.status,
        outcome: record.outcome,
        attempts: record.attempts.clone(),
        channel: record.channel.as_deref().map(String::from),
        endpoint: record.endpoint.as_deref().map(String::from),
        token_key: record.token_key.as_deref().map(String::from),
        model: record.upstream_model.as_deref().map(String::from),
        ttfb_ms: record.ttfb_ms,
        total_ms: record.total_ms,
        tokens: record.tokens,
        translated: record.translated,
        error,
        record: Some(Box::new(record)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelConfig, ChannelProtocol, KeyConfig, RawConfig, Secret};

    #[test]
    fn in_process_config_is_open_and_bounded() {
        let mut cfg = Config { raw: RawConfig::default(), ..Default::default() };
        cfg.gateway_keys.push(crate::config::GatewayKey { name: "g".into(), hash: [0; 32], ..Default::default() });
        let mut ch = ChannelConfig::new("a", ChannelProtocol::Openai);
        ch.keys = vec![KeyConfig::Bare(Secret::new("k"))];
        cfg.raw.channels.push(ch);
        let c = in_process_config(&cfg, Duration::from_secs(2));
        assert!(c.gateway_keys.is_empty());
        assert!(c.raw.upstream.first_byte_timeout.0 <= Duration::from_secs(2));
        assert!(c.raw.routing.total_timeout.0 <= Duration::from_secs(2 * 6 + 1));
        assert_eq!(c.raw.channels.len(), 1);
    }
}
