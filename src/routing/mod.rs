//! Routing: from a requested model name to an ordered plan of attempts.
//!
//! Owns model resolution (tag query, alias, exact id, prefix pattern, last path segment, bare name as tags),
//! the filters (enabled, kind, gateway-key allow list, protocol, cooldowns, `failover_enabled`) and the
//! strategies. Pure: reads the snapshot and health, does no I/O, takes microseconds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::catalog::{Channel, ModelKind, Snapshot};
use crate::config::Strategy;
use crate::protocol::Protocol;
use crate::tags::{self, TagExpr};
use crate::upstream::health::{Health, model_key};

/// What a gateway key may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Tags(TagExpr),
    Models(Vec<String>),
}

impl Allow {
    pub fn parse(s: &str) -> Allow {
        match TagExpr::parse(s.trim()) {
            Some(e) => Allow::Tags(e),
            None => Allow::Models(s.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect()),
        }
    }

    fn permits(&self, requested: &str, model: &str, tags: &[&str]) -> bool {
        match self {
            Allow::Tags(e) => e.matches(tags.iter().copied()),
            Allow::Models(list) => list.iter().any(|m| m == model || m == requested),
        }
    }
}

/// One routing question.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a> {
    pub model: &'a str,
    /// `Chat` for chat/messages/responses, `Embedding` for embeddings.
    pub kind: ModelKind,
    pub client: Protocol,
    pub strategy: Strategy,
    /// `channel` or `channel/endpoint` from `X-Router-Channel`.
    pub pin: Option<&'a str>,
    pub allow: Option<&'a Allow>,
    /// Channels of the other protocol may be used (the request can be translated).
    pub translate: bool,
    /// Estimated prompt tokens and max output tokens, for `cost_first`.
    pub est_input: u64,
    pub est_output: u64,
}

/// One attempt the proxy may make.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub channel: usize,
    pub endpoint: usize,
    pub token: usize,
    /// The upstream model id to send.
    pub model: String,
    /// The channel speaks the client's protocol.
    pub native: bool,
    /// The `balanced` score and its parts, when computed.
    pub score: Option<Score>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub total: f64,
    pub cost: f64,
    pub speed: f64,
    pub quality: f64,
    pub reliability: f64,
}

/// Something that matched but will not be tried, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Excluded {
    pub channel: String,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub model: String,
    pub reason: String,
    /// Cooling down for this long (when that is the reason).
    pub cooling_for: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
    pub strategy: Strategy,
    /// How the name was resolved: `tag`, `alias`, `exact`, `pattern`, `suffix`, `tags`.
    pub resolved_by: &'static str,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("model `{model}` not found")]
    UnknownModel { model: String, closest: Vec<String> },
    #[error("model `{model}` is served only by {protocol} channels, and this endpoint speaks {client}")]
    WrongProtocol { model: String, protocol: &'static str, client: &'static str },
    #[error("every candidate for `{model}` is cooling down")]
    AllCooling { model: String, retry_in: Duration, excluded: Vec<Excluded> },
    #[error("this key may not use `{model}`")]
    Forbidden { model: String },
    #[error("no enabled channel `{pin}` serves `{model}`")]
    PinNotFound { pin: String, model: String },
    #[error("no candidate for `{model}`")]
    NoneUsable { model: String, excluded: Vec<Excluded> },
}

/// A (channel, upstream model) match before expansion into endpoints and tokens.
#[derive(Debug, Clone)]
struct Match {
    channel: usize,
    model: String,
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Openai => "openai",
        Protocol::Anthropic => "anthropic",
    }
}

/// Tags of a model as routing sees them: the model's own, its channel's, `free` when free.
pub fn model_tags<'a>(ch: &'a Channel, model: &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    match ch.model(model) {
        Some(m) => {
            out.extend(m.tags.iter().map(String::as_str));
            if m.free {
                out.push("free");
            }
        }
        None => {
            if model.ends_with(":free") || model.ends_with("-free") {
                out.push("free");
            }
        }
    }
    out.extend(ch.tags.iter().map(String::as_str));
    out
}

fn kind_of(ch: &Channel, model: &str) -> ModelKind {
    ch.model(model).map(|m| m.kind).unwrap_or_else(|| ModelKind::guess(model))
}

fn kind_ok(want: ModelKind, got: ModelKind) -> bool {
    match want {
        ModelKind::Embedding => got == ModelKind::Embedding,
        ModelKind::Chat => !matches!(got, ModelKind::Embedding | ModelKind::Rerank),
        other => got == other,
    }
}

/// Resolves the requested name to (channel, model) matches, in the order of §5.
fn resolve(snap: &Snapshot, req: &RouteRequest<'_>) -> (Vec<Match>, &'static str) {
    let enabled = |i: &&usize| snap.channels[**i].enabled;
    if let Some(expr) = TagExpr::parse(req.model) {
        return (tag_matches(snap, &expr, req.kind), "tag");
    }
    let mut out = Vec::new();
    for &i in snap.by_alias.get(req.model).into_iter().flatten().filter(enabled) {
        out.push(Match { channel: i, model: snap.channels[i].aliases[req.model].clone() });
    }
    let aliased: HashSet<usize> = out.iter().map(|m| m.channel).collect();
    for &i in snap.by_model.get(req.model).into_iter().flatten().filter(enabled) {
        if !aliased.contains(&i) {
            out.push(Match { channel: i, model: req.model.to_string() });
        }
    }
    if !out.is_empty() {
        return (out, if aliased.is_empty() { "exact" } else { "alias" });
    }
    for (i, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
        if ch.matches_pattern(req.model) {
            out.push(Match { channel: i, model: req.model.to_string() });
        }
    }
    if !out.is_empty() {
        return (out, "pattern");
    }
    // `gpt-4o` finds `openai/gpt-4o`; a dated id (`claude-sonnet-4-5-20250929`) finds the undated one and the
    // reverse, as clients such as Claude Code send dated ids.
    let last = undated(req.model.rsplit('/').next().unwrap_or(req.model));
    for (i, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
        for m in &ch.models {
            let m_last = undated(m.id.rsplit('/').next().unwrap_or(&m.id));
            if m_last.eq_ignore_ascii_case(last) {
                out.push(Match { channel: i, model: m.id.clone() });
            }
        }
    }
    if !out.is_empty() {
        return (out, "suffix");
    }
    // `kimi-free` is read as `tag:kimi,free`.
    let expr = TagExpr { positive: tags::extract(req.model), negative: Vec::new() };
    if expr.positive.len() > 1 {
        return (tag_matches(snap, &expr, req.kind), "tags");
    }
    (Vec::new(), "none")
}

/// The id without a trailing `-YYYYMMDD` date.
fn undated(id: &str) -> &str {
    match id.rsplit_once('-') {
        Some((head, date)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && date.starts_with("20") => {
            head
        }
        _ => id,
    }
}

fn tag_matches(snap: &Snapshot, expr: &TagExpr, kind: ModelKind) -> Vec<Match> {
    let mut out = Vec::new();
    for (i, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
        for m in &ch.models {
            if kind_ok(kind, m.kind) && expr.matches(model_tags(ch, &m.id).into_iter()) {
                out.push(Match { channel: i, model: m.id.clone() });
            }
        }
    }
    out
}

/// Names offered when a model is not found: model ids, aliases and tags close to the request.
pub fn suggestions(snap: &Snapshot, wanted: &str) -> Vec<String> {
    let wanted_core = wanted.strip_prefix("tag:").unwrap_or(wanted);
    let ids = snap.model_ids();
    let mut names: Vec<&str> = ids.iter().map(|(id, _)| *id).collect();
    if wanted.starts_with("tag:") {
        let mut tagset: Vec<&str> = snap
            .channels
            .iter()
            .flat_map(|c| {
                c.models.iter().flat_map(|m| m.tags.iter().map(String::as_str)).chain(c.tags.iter().map(String::as_str))
            })
            .collect();
        tagset.sort();
        tagset.dedup();
        names = tagset;
        let mut out = Vec::new();
        for part in TagExpr::parse_list(wanted_core).positive {
            out.extend(tags::closest(&part, names.iter().copied(), 3));
        }
        out.dedup();
        return out;
    }
    tags::closest(wanted_core, names.drain(..), 5)
}

/// Builds the ordered attempt plan for a request.
pub fn plan(snap: &Snapshot, health: &Health, req: &RouteRequest<'_>, now: Instant) -> Result<Plan, PlanError> {
    let (matches, resolved_by) = resolve(snap, req);
    if matches.is_empty() {
        return Err(PlanError::UnknownModel { model: req.model.to_string(), closest: suggestions(snap, req.model) });
    }
    let mut excluded = Vec::new();
    let mut exclude =
        |ch: &Channel, m: &str, ep: Option<&str>, tok: Option<&str>, reason: String, cooling: Option<Duration>| {
            excluded.push(Excluded {
                channel: ch.name.to_string(),
                endpoint: ep.map(str::to_string),
                token: tok.map(str::to_string),
                model: m.to_string(),
                reason,
                cooling_for: cooling,
            });
        };
    let (pin_channel, pin_endpoint) = match req.pin {
        Some(p) => match p.split_once('/') {
            Some((c, e)) => (Some(c), Some(e)),
            None => (Some(p), None),
        },
        None => (None, None),
    };
    // Filters that apply to a (channel, model) as a whole.
    let mut groups: Vec<Match> = Vec::new();
    let mut saw_kind_or_allow = false;
    let mut forbidden = 0usize;
    let mut wrong_protocol: Option<&'static str> = None;
    for m in matches {
        let ch = &snap.channels[m.channel];
        if let Some(pc) = pin_channel
            && &*ch.name != pc
        {
            continue;
        }
        if !kind_ok(req.kind, kind_of(ch, &m.model)) {
            saw_kind_or_allow = true;
            exclude(
                ch,
                &m.model,
                None,
                None,
                format!("{:?} model, not usable here", kind_of(ch, &m.model)).to_lowercase(),
                None,
            );
            continue;
        }
        if let Some(allow) = req.allow
            && !allow.permits(req.model, &m.model, &model_tags(ch, &m.model))
        {
            forbidden += 1;
            saw_kind_or_allow = true;
            exclude(ch, &m.model, None, None, "not allowed for this key".into(), None);
            continue;
        }
        let native = ch.protocol.wire() == req.client;
        if !native && !req.translate {
            wrong_protocol = Some(protocol_name(ch.protocol.wire()));
            exclude(ch, &m.model, None, None, format!("speaks {}", protocol_name(ch.protocol.wire())), None);
            continue;
        }
        if let Some(d) = health.cooling(&model_key(&ch.name, &m.model), now) {
            exclude(ch, &m.model, None, None, "model not found here recently".into(), Some(d));
            continue;
        }
        groups.push(m);
    }
    if groups.is_empty() {
        if let Some(pc) = pin_channel
            && excluded.iter().all(|e| e.channel != pc)
        {
            return Err(PlanError::PinNotFound {
                pin: req.pin.unwrap_or(pc).to_string(),
                model: req.model.to_string(),
            });
        }
        if forbidden > 0
            && excluded.iter().all(|e| e.reason == "not allowed for this key" || e.reason.ends_with("not usable here"))
        {
            return Err(PlanError::Forbidden { model: req.model.to_string() });
        }
        if let Some(protocol) = wrong_protocol
            && excluded.iter().all(|e| e.reason.starts_with("speaks"))
        {
            return Err(PlanError::WrongProtocol {
                model: req.model.to_string(),
                protocol,
                client: protocol_name(req.client),
            });
        }
        if saw_kind_or_allow && excluded.iter().all(|e| e.cooling_for.is_none()) {
            return Err(PlanError::UnknownModel {
                model: req.model.to_string(),
                closest: suggestions(snap, req.model),
            });
        }
        return Err(all_cooling_or_none(req.model, excluded));
    }
    order(snap, health, req, &mut groups);
    // Expand into endpoints and tokens.
    let mut candidates = Vec::new();
    let mut scores = Vec::new();
    if req.strategy == Strategy::Balanced {
        scores = groups.iter().map(|g| score(snap, health, g, req)).collect();
    }
    for (gi, g) in groups.iter().enumerate() {
        let ch = &snap.channels[g.channel];
        let native = ch.protocol.wire() == req.client;
        let visible = ch.model(&g.model).map(|m| m.tokens.as_slice()).unwrap_or(&[]);
        for (ei, ep) in ch.endpoints.iter().enumerate() {
            if let Some(pe) = pin_endpoint
                && &*ep.name != pe
            {
                continue;
            }
            if !ep.failover_enabled && pin_endpoint.is_none() {
                exclude(ch, &g.model, Some(&ep.name), None, "failover disabled (pin to use)".into(), None);
                continue;
            }
            if let Some(d) = health.cooling(&ep.health_key, now) {
                let reason = health.view(&ep.health_key).reason.unwrap_or_default();
                exclude(ch, &g.model, Some(&ep.name), None, format!("endpoint cooling down ({reason})"), Some(d));
                continue;
            }
            for ti in ep.rotated_tokens() {
                let tok = &ep.tokens[ti];
                if !visible.is_empty() && !visible.iter().any(|v| **v == *tok.fingerprint) {
                    continue;
                }
                if let Some(d) = health.cooling(&tok.health_key, now) {
                    let reason = health.view(&tok.health_key).reason.unwrap_or_default();
                    exclude(
                        ch,
                        &g.model,
                        Some(&ep.name),
                        Some(&tok.token_key),
                        format!("token cooling down ({reason})"),
                        Some(d),
                    );
                    continue;
                }
                candidates.push(Candidate {
                    channel: g.channel,
                    endpoint: ei,
                    token: ti,
                    model: g.model.clone(),
                    native,
                    score: scores.get(gi).copied(),
                });
            }
        }
    }
    if candidates.is_empty() {
        return Err(all_cooling_or_none(req.model, excluded));
    }
    Ok(Plan { candidates, excluded, strategy: req.strategy, resolved_by })
}

fn all_cooling_or_none(model: &str, excluded: Vec<Excluded>) -> PlanError {
    match excluded.iter().filter_map(|e| e.cooling_for).min() {
        Some(retry_in) => PlanError::AllCooling { model: model.to_string(), retry_in, excluded },
        None => PlanError::NoneUsable { model: model.to_string(), excluded },
    }
}

/// Channel-level latency: the best EWMA time to first byte of its endpoints.
fn latency(snap: &Snapshot, health: &Health, ch: usize) -> Option<f64> {
    snap.channels[ch].endpoints.iter().filter_map(|e| health.view(&e.health_key).ttfb_ms).min_by(|a, b| a.total_cmp(b))
}

/// Estimated USD for this request on a (channel, model); `None` when the price is unknown.
fn est_cost(snap: &Snapshot, g: &Match, req: &RouteRequest<'_>) -> Option<f64> {
    let ch = &snap.channels[g.channel];
    let free = ch.model(&g.model).is_some_and(|m| m.free) || ch.tags.iter().any(|t| t == "free");
    if free {
        return Some(0.0);
    }
    let p = ch.price(&g.model)?;
    Some((req.est_input.max(1) as f64 * p.input + req.est_output.max(1) as f64 * p.output) / 1e6)
}

fn is_free(snap: &Snapshot, g: &Match) -> bool {
    let ch = &snap.channels[g.channel];
    ch.model(&g.model).is_some_and(|m| m.free) || ch.tags.iter().any(|t| t == "free") || g.model.ends_with(":free")
}

fn score(snap: &Snapshot, health: &Health, g: &Match, req: &RouteRequest<'_>) -> Score {
    let w = &snap.config.raw.routing.balanced;
    let cost = match est_cost(snap, g, req) {
        Some(c) => 1.0 / (1.0 + c * 1000.0),
        None => 0.3,
    };
    let speed = match latency(snap, health, g.channel) {
        Some(ms) => 1.0 / (1.0 + ms / 1000.0),
        None => 0.5,
    };
    let ch = &snap.channels[g.channel];
    // Quality: configured preference (lower priority number = preferred), squashed into (0, 1].
    let quality = 1.0 / (1.0 + (ch.priority.max(0) as f64) / 10.0);
    let (ok, err) = ch.endpoints.iter().fold((0u64, 0u64), |(o, e), ep| {
        let v = health.view(&ep.health_key);
        (o + v.ok, e + v.errors)
    });
    let reliability = (ok as f64 + 1.0) / ((ok + err) as f64 + 2.0);
    let total = w.cost * cost + w.speed * speed + w.quality * quality + w.reliability * reliability;
    Score { total, cost, speed, quality, reliability }
}

/// Orders (channel, model) groups by the strategy; the client's own protocol wins ties.
fn order(snap: &Snapshot, health: &Health, req: &RouteRequest<'_>, groups: &mut Vec<Match>) {
    let mut rng = rand::thread_rng();
    let native = |g: &Match| u8::from(snap.channels[g.channel].protocol.wire() != req.client);
    let prio = |g: &Match| snap.channels[g.channel].priority;
    match req.strategy {
        Strategy::Priority => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by_key(|g| (prio(g), native(g)));
        }
        Strategy::Weighted => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by_key(native);
        }
        Strategy::Fastest => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by(|a, b| {
                let la = latency(snap, health, a.channel).unwrap_or(f64::INFINITY);
                let lb = latency(snap, health, b.channel).unwrap_or(f64::INFINITY);
                la.total_cmp(&lb).then(native(a).cmp(&native(b))).then(prio(a).cmp(&prio(b)))
            });
        }
        Strategy::CostFirst => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by(|a, b| {
                let ca = est_cost(snap, a, req).unwrap_or(f64::INFINITY);
                let cb = est_cost(snap, b, req).unwrap_or(f64::INFINITY);
                ca.total_cmp(&cb).then(native(a).cmp(&native(b))).then(prio(a).cmp(&prio(b)))
            });
        }
        Strategy::FreeFirst => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by_key(|g| (!is_free(snap, g), prio(g), native(g)));
        }
        Strategy::LocalFirst => {
            weighted_shuffle(snap, groups, &mut rng);
            groups.sort_by_key(|g| (!snap.channels[g.channel].local, prio(g), native(g)));
        }
        Strategy::Balanced => {
            let mut scored: Vec<(f64, Match)> =
                groups.drain(..).map(|g| (score(snap, health, &g, req).total, g)).collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(native(&a.1).cmp(&native(&b.1))));
            groups.extend(scored.into_iter().map(|(_, g)| g));
        }
    }
}

/// Weighted random order (Efraimidis-Spirakis): key = u^(1/w), highest first. A stable sort after it keeps
/// this order inside ties, which gives "weighted random inside a tier".
fn weighted_shuffle(snap: &Snapshot, groups: &mut Vec<Match>, rng: &mut impl Rng) {
    let mut keyed: Vec<(f64, Match)> = groups
        .drain(..)
        .map(|g| {
            let w = f64::from(snap.channels[g.channel].weight.max(1));
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            (u.powf(1.0 / w), g)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    groups.extend(keyed.into_iter().map(|(_, g)| g));
}

#[cfg(test)]
mod tests;
