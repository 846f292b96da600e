//! `router test`: end-to-end checks of endpoints, keys, models and routes.
//!
//! Owns what the user's targets select ([`select`]) and the jobs they make ([`jobs`]); the checks themselves are
//! in three parts: [`checks`] (the reachability check of an (endpoint, key) and the minimal chat request per
//! model, sent directly), [`routed`] (the routing decision for a model or tag target and the one real request
//! sent through an in-process copy of the proxy, the same code `serve` runs) and [`report`] (what a running
//! server learns from a test: latency and cooldowns). A check's outcome is the one upstream failure
//! classification, [`FailureClass`](crate::upstream::FailureClass), in its words for people.
//!
//! Must not print (the CLI does), must not open the store, and never puts a key in a result: keys are named by
//! `token_key`, and text quoted from an upstream is redacted against the key that was sent.

pub mod checks;
pub mod report;
pub mod routed;

use std::time::{Duration, Instant};

pub use checks::{CheckKind, CheckResult, chat, chat_body, check_all, reachability, reachability_url};
pub use report::{ProbeEntry, ProbeFailure, ProbeReport, apply, report};
pub use routed::{CandidateView, ExcludedView, RouteResult, RoutedRequest, in_process_config, route_all};

use crate::catalog::{Channel, ModelKind, Snapshot, Token};
use crate::config::Strategy;
use crate::error::{UserError, user};
use crate::live::health::Health;
use crate::protocol::Protocol;
use crate::routing::{self, PlanError, RouteRequest};
use crate::tags::{self, TagExpr};

/// The prompt of every real request a test sends.
pub const PROMPT: &str = "Reply with OK";
/// Output tokens a test request may use.
pub const MAX_TOKENS: u32 = 8;

/// What to test and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Bound on each request (and on each attempt of a routed request).
    pub timeout: Duration,
    /// Also send a minimal chat request per model.
    pub chat: bool,
    /// Only this model for chat checks (a channel alias is resolved per channel).
    pub model: Option<String>,
    /// Strategy for routed requests; `None`: the config's.
    pub strategy: Option<Strategy>,
}

impl Default for Options {
    fn default() -> Self {
        Self { concurrency: 8, timeout: Duration::from_secs(20), chat: false, model: None, strategy: None }
    }
}

/// What the user's targets select.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// (channel, endpoint) indices to check, in configuration order, each once.
    pub endpoints: Vec<(usize, usize)>,
    /// Model names and tag expressions to route, as given.
    pub routes: Vec<String>,
}

/// Resolves targets: a channel, `channel/endpoint`, a model name (alias, id, `vendor/model`) or a tag expression.
/// No target: every endpoint of every enabled channel. An unknown name is a [`UserError`] with close names.
pub fn select(snap: &Snapshot, targets: &[String]) -> Result<Selection, UserError> {
    let mut sel = Selection::default();
    let push = |sel: &mut Selection, ci: usize, ei: usize| {
        if !sel.endpoints.contains(&(ci, ei)) {
            sel.endpoints.push((ci, ei));
        }
    };
    if targets.is_empty() {
        for (ci, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
            for ei in 0..ch.endpoints.len() {
                push(&mut sel, ci, ei);
            }
        }
        return Ok(sel);
    }
    for t in targets {
        let t = t.trim();
        if t.is_empty() {
            return Err(user("an empty target").with_hint("name a channel, channel/endpoint, model or tag:expr"));
        }
        if TagExpr::parse(t).is_some() {
            if TagExpr::parse(t).is_some_and(|e| e.is_empty()) {
                return Err(user(format!("`{t}` names no tag")).with_hint("write e.g. tag:qwen,!free"));
            }
            check_routable(snap, t)?;
            sel.routes.push(t.to_string());
            continue;
        }
        if let Some(ci) = snap.channels.iter().position(|c| &*c.name == t) {
            for ei in 0..snap.channels[ci].endpoints.len() {
                push(&mut sel, ci, ei);
            }
            continue;
        }
        if let Some((c, e)) = t.split_once('/')
            && let Some(ci) = snap.channels.iter().position(|ch| &*ch.name == c)
        {
            if let Some(ei) = snap.channels[ci].endpoints.iter().position(|ep| &*ep.name == e) {
                push(&mut sel, ci, ei);
                continue;
            }
            // `vendor/model` on a channel named like the vendor: a model after all?
            if check_routable(snap, t).is_ok() {
                sel.routes.push(t.to_string());
                continue;
            }
            let names: Vec<&str> = snap.channels[ci].endpoints.iter().map(|ep| &*ep.name).collect();
            return Err(user(format!("channel `{c}` has no endpoint `{e}`"))
                .with_hint(format!("endpoints of {c}: {}", names.join(", "))));
        }
        check_routable(snap, t)?;
        sel.routes.push(t.to_string());
    }
    Ok(sel)
}

/// Is `target` a model or tag expression routing knows? Else a user error listing close names.
fn check_routable(snap: &Snapshot, target: &str) -> Result<(), UserError> {
    let health = Health::new();
    let req = route_request(snap, target, Protocol::Openai, None);
    match routing::plan(snap, &health, &req, Instant::now()) {
        Err(PlanError::UnknownModel { closest, .. }) => {
            let mut close: Vec<String> = Vec::new();
            if TagExpr::parse(target).is_none() {
                let mut names: Vec<String> = Vec::new();
                for ch in &snap.channels {
                    names.push(ch.name.to_string());
                    if ch.endpoints.len() > 1 {
                        names.extend(ch.endpoints.iter().map(|e| format!("{}/{}", ch.name, e.name)));
                    }
                }
                close.extend(tags::closest(target, names.iter().map(String::as_str), 3));
            }
            for c in closest {
                if !close.contains(&c) {
                    close.push(c);
                }
            }
            let what = if TagExpr::parse(target).is_some() { "no model matches" } else { "no channel, model or tag" };
            let e = user(format!("{what} `{target}`"));
            Err(if close.is_empty() {
                let channels: Vec<&str> = snap.channels.iter().map(|c| &*c.name).take(8).collect();
                if channels.is_empty() {
                    e.with_hint("no channels are configured")
                } else {
                    e.with_hint(format!("channels: {}", channels.join(", ")))
                }
            } else {
                e.with_hint(format!("did you mean: {}", close.join(", ")))
            })
        }
        _ => Ok(()),
    }
}

pub(super) fn route_request<'a>(
    snap: &Snapshot,
    model: &'a str,
    client: Protocol,
    strategy: Option<Strategy>,
) -> RouteRequest<'a> {
    RouteRequest {
        model,
        kind: ModelKind::Chat,
        client,
        strategy: strategy.unwrap_or(snap.config.raw.routing.strategy),
        pin: None,
        allow: None,
        translate: true,
        est_input: PROMPT.len() as u64 / 4 + 8,
        est_output: u64::from(MAX_TOKENS),
    }
}

/// One unit of work: a check of a key, or a chat request of a key to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub channel: usize,
    pub endpoint: usize,
    pub token: usize,
    /// `Some`: a chat check of this upstream model.
    pub model: Option<String>,
}

/// The checks the selection asks for: a reachability check per enabled key, and with `chat` a chat check per
/// (key, chat model the key can see). Returns the jobs and notes about what could not be tested.
pub fn jobs(snap: &Snapshot, sel: &Selection, opts: &Options) -> (Vec<Job>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for &(ci, ei) in &sel.endpoints {
        let ch = &snap.channels[ci];
        let ep = &ch.endpoints[ei];
        for (ti, tok) in ep.tokens.iter().enumerate().filter(|(_, t)| t.enabled) {
            out.push(Job { channel: ci, endpoint: ei, token: ti, model: None });
            if !opts.chat {
                continue;
            }
            let models = chat_models(ch, tok, opts.model.as_deref());
            let note = match &opts.model {
                Some(m) => format!("{}: no model `{m}` here; no chat check", ch.name),
                None => format!("{}: no models listed; pass --model to send a chat request", ch.name),
            };
            if models.is_empty() && !notes.contains(&note) {
                notes.push(note);
            }
            for m in models {
                out.push(Job { channel: ci, endpoint: ei, token: ti, model: Some(m) });
            }
        }
    }
    (out, notes)
}

/// Chat models of a channel that `tok` can see; with `wanted`, only that one (an alias resolves to its target; a
/// name matching the channel's patterns is taken as is).
fn chat_models(ch: &Channel, tok: &Token, wanted: Option<&str>) -> Vec<String> {
    let visible =
        |id: &str| ch.model(id).is_none_or(|m| m.tokens.is_empty() || m.tokens.iter().any(|t| **t == *tok.fingerprint));
    match wanted {
        Some(w) => {
            let id = ch.aliases.get(w).cloned().unwrap_or_else(|| w.to_string());
            let known = ch.model(&id).is_some() || ch.matches_pattern(&id);
            if known && visible(&id) { vec![id] } else { Vec::new() }
        }
        None => ch
            .models
            .iter()
            .filter(|m| !matches!(m.kind, ModelKind::Embedding | ModelKind::Rerank | ModelKind::Other))
            .filter(|m| visible(&m.id))
            .map(|m| m.id.to_string())
            .collect(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;

    pub(crate) fn snapshot(yaml: &str) -> Snapshot {
        let cfg = crate::config::parse(std::path::Path::new("t.yaml"), yaml, &|_| None).unwrap();
        Snapshot::build(Arc::new(cfg), &[], &Default::default(), false)
    }

    pub(crate) const TWO: &str = "channels:\n  - name: alpha\n    base_url: http://127.0.0.1:9/v1\n    keys: [k1]\n    models: [qwen3-8b, text-embedding-3-small]\n    aliases: {fast: qwen3-8b}\n  - name: beta\n    protocol: anthropic\n    endpoints:\n      - {name: eu, base_url: 'http://127.0.0.1:9', keys: [k2, k3]}\n      - {name: us, base_url: 'http://127.0.0.1:9', keys: [k4]}\n    models: [claude-sonnet-4-5]\n  - name: off\n    enabled: false\n    base_url: http://127.0.0.1:9/v1\n    keys: [k5]\n    models: [m]\n";

    #[test]
    fn targets_select_endpoints_and_routes() {
        let s = snapshot(TWO);
        let all = select(&s, &[]).unwrap();
        assert_eq!(all.endpoints, [(0, 0), (1, 0), (1, 1)]);
        assert!(all.routes.is_empty());
        let sel = select(&s, &["beta/us".into(), "off".into(), "fast".into(), "tag:qwen3".into()]).unwrap();
        assert_eq!(sel.endpoints, [(1, 1), (2, 0)]);
        assert_eq!(sel.routes, ["fast", "tag:qwen3"]);
        let e = select(&s, &["alpah".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("alpha"), "{e:?}");
        let e = select(&s, &["beta/asia".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("eu, us"));
        let e = select(&s, &["tag:qwne".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("qwen"), "{e:?}");
    }

    #[test]
    fn jobs_cover_keys_and_chat_models() {
        let s = snapshot(TWO);
        let sel = select(&s, &[]).unwrap();
        let (jobs_plain, _) = jobs(&s, &sel, &Options::default());
        assert_eq!(jobs_plain.len(), 4);
        let opts = Options { chat: true, ..Options::default() };
        let (j, notes) = jobs(&s, &sel, &opts);
        // alpha: check + qwen3-8b (the embedding model is skipped); beta/eu: 2 keys x 2; beta/us: 2.
        assert_eq!(j.len(), 2 + 4 + 2);
        assert!(notes.is_empty());
        let opts = Options { chat: true, model: Some("fast".into()), ..Options::default() };
        let (j, notes) = jobs(&s, &sel, &opts);
        assert_eq!(j.iter().filter_map(|j| j.model.as_deref()).collect::<Vec<_>>(), ["qwen3-8b"]);
        assert_eq!(notes.len(), 1);
    }
}
