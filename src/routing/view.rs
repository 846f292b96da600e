//! The plan as people and other processes see it: names instead of indices, with each candidate's price, latency
//! and score, and why each excluded match is left out.
//!
//! Owns the one serialisable view of a routing decision that `tags query` prints, `router test` reports for its
//! routed targets and the control socket's `plan` operation sends, and the query that asks for it
//! ([`PlanQuery`], planned by [`plan_query`]). Pure, like the rest of `routing`: measuring unknown endpoints before
//! a `fastest` plan is the caller's business (`control::plan`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Allow, Excluded, Plan, PlanError, RouteRequest, Score};
use crate::catalog::{ModelKind, Snapshot};
use crate::config::Strategy;
use crate::live::health::Health;
use crate::protocol::Protocol;

/// A routing decision: the candidates in attempt order and the matches left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    /// The model name or tag expression asked for.
    pub query: String,
    pub strategy: Strategy,
    /// How the name was resolved: `tag`, `alias`, `exact`, `pattern`, `suffix`, `tags`.
    pub resolved_by: String,
    pub candidates: Vec<CandidateView>,
    pub excluded: Vec<ExcludedView>,
}

/// One candidate, in attempt order (inside a priority tier the order is weighted random).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    /// 1-based.
    pub rank: usize,
    pub channel: String,
    pub endpoint: String,
    /// The token's `token_key` (its name, or its fingerprint).
    pub token: String,
    /// The upstream model id sent.
    pub model: String,
    /// The endpoint's priority inside its channel and its weight among endpoints of that priority (left out
    /// when 0 and 1, the defaults).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub endpoint_priority: i64,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub endpoint_weight: u32,
    pub price: Option<PriceView>,
    pub free: bool,
    pub local: bool,
    /// Observed time to first byte of the endpoint, ms.
    pub latency_ms: Option<f64>,
    /// The `balanced` score and its parts.
    pub score: Option<Score>,
    /// The channel speaks the other protocol: the request is translated (shown only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translated: bool,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceView {
    pub input: f64,
    pub output: f64,
}

/// A match that will not be tried, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcludedView {
    pub channel: String,
    /// `None`: the whole channel (for this model).
    pub endpoint: Option<String>,
    /// `None`: every token of the endpoint.
    pub token: Option<String>,
    pub model: String,
    /// In words: `endpoint cooling down (rate limited)`, `not allowed for this key`, ...
    pub reason: String,
    pub cooling_for_ms: Option<u64>,
}

impl ExcludedView {
    pub fn of(e: &Excluded) -> ExcludedView {
        ExcludedView {
            channel: e.channel.clone(),
            endpoint: e.endpoint.clone(),
            token: e.token.clone(),
            model: e.model.clone(),
            reason: e.reason.to_string(),
            cooling_for_ms: e.cooling_for.map(|d| d.as_millis() as u64),
        }
    }

    pub fn all(excluded: &[Excluded]) -> Vec<ExcludedView> {
        excluded.iter().map(ExcludedView::of).collect()
    }
}

impl PlanView {
    /// The view of `plan`, made on the snapshot and health it was planned on.
    pub fn new(snap: &Snapshot, health: &Health, query: &str, plan: &Plan) -> PlanView {
        let candidates = plan
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (ch, ep, tok) = snap.candidate(c);
                let free = ch.model(&c.model).map(|m| m.free).unwrap_or_else(|| crate::catalog::is_free_id(&c.model))
                    || ch.tags.iter().any(|t| t == "free");
                CandidateView {
                    rank: i + 1,
                    channel: ch.name.to_string(),
                    endpoint: ep.name.to_string(),
                    token: tok.token_key.to_string(),
                    model: c.model.to_string(),
                    endpoint_priority: ep.priority,
                    endpoint_weight: ep.weight,
                    price: ch.price(&c.model).map(|p| PriceView { input: p.input, output: p.output }),
                    free,
                    local: ep.local,
                    latency_ms: super::endpoint_latency(snap, health, c.channel, c.endpoint).map(|ms| ms.round()),
                    score: c.score,
                    translated: !c.native,
                }
            })
            .collect();
        PlanView {
            query: query.to_string(),
            strategy: plan.strategy,
            resolved_by: plan.resolved_by.to_string(),
            candidates,
            excluded: ExcludedView::all(&plan.excluded),
        }
    }
}

/// A question to the router: where would a request for `expr` go? What `tags query` asks (of a running server
/// through the control socket's `plan` operation, else in its own process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanQuery {
    /// `tag:a,b,!c`, an alias, a model id or a bare name.
    pub expr: String,
    /// Default: `routing.strategy`.
    pub strategy: Option<Strategy>,
    /// The client's protocol: channels of the other one are excluded (no translation is assumed).
    pub protocol: Protocol,
    /// An embeddings request instead of a chat request.
    pub embedding: bool,
    /// Apply this gateway key's `allow` expression.
    pub key: Option<String>,
    /// `channel` or `channel/endpoint`, like `X-Router-Channel`.
    pub pin: Option<String>,
    /// Sizes used to estimate cost (cost_first, balanced).
    pub input_tokens: u64,
    pub max_tokens: u64,
}

/// Why a query has no candidates: the message and hint for the user, and the exclusions that explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFailure {
    pub message: String,
    pub hint: Option<String>,
    pub excluded: Vec<ExcludedView>,
}

impl PlanFailure {
    fn new(message: String, hint: String) -> PlanFailure {
        PlanFailure { message, hint: Some(hint), excluded: Vec::new() }
    }
}

impl PlanQuery {
    /// The strategy the plan uses on `snap`.
    pub fn strategy_on(&self, snap: &Snapshot) -> Strategy {
        self.strategy.unwrap_or(snap.config.raw.routing.strategy)
    }
}

/// Plans `q` on `snap` and `health` exactly as `serve` would for such a request; a failure in the user's words.
pub fn plan_query(snap: &Snapshot, health: &Health, q: &PlanQuery) -> Result<Plan, PlanFailure> {
    let allow = match &q.key {
        None => None,
        Some(name) => match snap.config.gateway_keys.iter().find(|k| &k.name == name) {
            Some(k) => k.allow.as_deref().map(Allow::parse),
            None => {
                let names: Vec<&str> = snap.config.gateway_keys.iter().map(|k| k.name.as_str()).collect();
                let keys = if names.is_empty() { "none".into() } else { names.join(", ") };
                return Err(PlanFailure::new(format!("no gateway key named `{name}`"), format!("keys: {keys}")));
            }
        },
    };
    let req = RouteRequest {
        model: &q.expr,
        kind: if q.embedding { ModelKind::Embedding } else { ModelKind::Chat },
        client: q.protocol,
        strategy: q.strategy_on(snap),
        pin: q.pin.as_deref(),
        allow: allow.as_ref(),
        translate: false,
        est_input: q.input_tokens,
        est_output: q.max_tokens,
    };
    super::plan(snap, health, &req, Instant::now()).map_err(|e| failure(snap, q, e))
}

/// A plan error as the user sees it: the message, a hint, and the exclusions when every match was excluded.
fn failure(snap: &Snapshot, q: &PlanQuery, e: PlanError) -> PlanFailure {
    let msg = e.to_string();
    match e {
        PlanError::UnknownModel { model, closest } => {
            let what = if model.starts_with("tag:") { "tags" } else { "names" };
            let hint = if closest.is_empty() {
                "see `router tags list` for the tags and ids known".to_string()
            } else {
                format!("close {what}: {}", closest.join(", "))
            };
            PlanFailure::new(format!("nothing matches `{model}`"), hint)
        }
        PlanError::WrongProtocol { protocol, .. } => {
            PlanFailure::new(msg, format!("to plan for a client of that protocol: --protocol {protocol}"))
        }
        PlanError::Forbidden { .. } => {
            let allow = q
                .key
                .as_deref()
                .and_then(|k| snap.config.gateway_keys.iter().find(|g| g.name == k))
                .and_then(|g| g.allow.clone())
                .unwrap_or_default();
            PlanFailure::new(msg, format!("the key's allow expression is `{allow}`"))
        }
        PlanError::PinNotFound { .. } => {
            PlanFailure::new(msg, "check the channel and endpoint names: `router config check`".into())
        }
        PlanError::AllCooling { excluded, .. } | PlanError::NoneUsable { excluded, .. } => PlanFailure {
            message: msg,
            hint: Some("every match was excluded; see the reasons above".into()),
            excluded: ExcludedView::all(&excluded),
        },
    }
}
