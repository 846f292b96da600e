//! Routing: from a requested model name to an ordered plan of attempts.
//!
//! Owns model resolution (tag query, alias, exact id, prefix pattern, last path segment, bare name as tags),
//! the filters (enabled, kind, gateway-key allow list, protocol, cooldowns, context window, `failover_enabled`) and
//! the strategies, and the serialisable view of a plan (`view`). Pure: reads the snapshot and health, does no I/O,
//! takes microseconds.

pub mod view;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::catalog::{Channel, Endpoint, Model, ModelKind, ModelRef, Snapshot, TagIndex, Token, is_free_id};
use crate::config::{Price, Strategy};
use crate::live::health::{Health, model_key};
use crate::protocol::Protocol;
use crate::tags::{self, TagExpr};

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
    /// The upstream model id to send (shared with the snapshot's interned id).
    pub model: Arc<str>,
    /// The channel speaks the client's protocol.
    pub native: bool,
    /// The `balanced` score and its parts, when computed.
    pub score: Option<Score>,
}

/// Here rather than in `catalog`, so the catalogue does not depend on routing.
impl Snapshot {
    /// The channel, endpoint and token a planned candidate names.
    pub fn candidate(&self, c: &Candidate) -> (&Channel, &Endpoint, &Token) {
        let ch = &self.channels[c.channel];
        let ep = &ch.endpoints[c.endpoint];
        (ch, ep, &ep.tokens[c.token])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
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
    pub reason: Exclusion,
    /// Cooling down for this long (when that is the reason).
    pub cooling_for: Option<Duration>,
}

/// Why a match is not a candidate. Its words (`Display`) are what `tags query`, `router test` and the proxy's
/// error bodies show.
#[derive(Debug, Clone, PartialEq)]
pub enum Exclusion {
    /// An embedding model for a chat request, or the reverse: `embedding model, not usable here`.
    WrongKind(ModelKind),
    /// The gateway key's `allow` expression does not permit it.
    NotAllowed,
    /// The channel speaks this protocol, and the request cannot be translated for it.
    Speaks(Protocol),
    /// The channel answered "model not found" recently.
    ModelMissing,
    /// The request (estimated input + output tokens) does not fit the model's context window.
    ContextTooLong { need: u64, window: u32 },
    /// The endpoint is used only when pinned.
    FailoverDisabled,
    /// The endpoint is cooling down, for this reason.
    EndpointCooling(String),
    /// The token is cooling down, for this reason.
    TokenCooling(String),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::WrongKind(kind) => write!(f, "{} model, not usable here", format!("{kind:?}").to_lowercase()),
            Exclusion::NotAllowed => f.write_str("not allowed for this key"),
            Exclusion::Speaks(p) => write!(f, "speaks {p}"),
            Exclusion::ModelMissing => f.write_str("model not found here recently"),
            Exclusion::ContextTooLong { need, window } => {
                write!(f, "context too long (~{need} tokens, window {window})")
            }
            Exclusion::FailoverDisabled => f.write_str("failover disabled (pin to use)"),
            Exclusion::EndpointCooling(why) => write!(f, "endpoint cooling down ({why})"),
            Exclusion::TokenCooling(why) => write!(f, "token cooling down ({why})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
    pub strategy: Strategy,
    /// How the name was resolved: `tag`, `alias`, `exact`, `pattern`, `suffix`, `tags`.
    pub resolved_by: &'static str,
}

impl Plan {
    /// The (channel, endpoint) pairs of the candidates, each once, in order: what `FastTest::measure_unknown`
    /// takes before a `fastest` plan is made again.
    pub fn endpoints(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for c in &self.candidates {
            if !out.contains(&(c.channel, c.endpoint)) {
                out.push((c.channel, c.endpoint));
            }
        }
        out
    }
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

/// A (channel, upstream model) match before expansion into endpoints and tokens. Borrows from the snapshot or
/// the request: resolving a name allocates nothing per match, and the model's entry is looked up once.
#[derive(Debug, Clone, Copy)]
struct Match<'s> {
    channel: usize,
    model: &'s str,
    /// The channel's entry for the model when the channel lists it (pattern matches do not).
    listed: Option<&'s Model>,
}

impl<'s> Match<'s> {
    fn of(snap: &'s Snapshot, channel: usize, model: &'s str) -> Match<'s> {
        let ch = &snap.channels[channel];
        let listed = ch.model_position(model).map(|i| &ch.models[i as usize]);
        Match { channel, model, listed }
    }

    fn at(snap: &'s Snapshot, r: ModelRef) -> Match<'s> {
        let (_, m) = snap.model_ref(r);
        Match::listed(r.0 as usize, m)
    }

    fn listed(channel: usize, m: &'s Model) -> Match<'s> {
        Match { channel, model: &m.id, listed: Some(m) }
    }
}

/// Tags of a model as routing sees them: the model's own, its channel's, `free` when free.
pub fn model_tags<'a>(ch: &'a Channel, model: &'a str) -> Vec<&'a str> {
    match ch.model(model) {
        Some(m) => ch.tags_of(m).collect(),
        None => {
            let free = (is_free_id(model) && !ch.tags.iter().any(|t| t == "free")).then_some("free");
            free.into_iter().chain(ch.tags.iter().map(String::as_str)).collect()
        }
    }
}

fn kind_of(g: &Match<'_>) -> ModelKind {
    g.listed.map(|m| m.kind).unwrap_or_else(|| ModelKind::guess(g.model))
}

fn kind_ok(want: ModelKind, got: ModelKind) -> bool {
    match want {
        ModelKind::Embedding => got == ModelKind::Embedding,
        ModelKind::Chat => !matches!(got, ModelKind::Embedding | ModelKind::Rerank),
        other => got == other,
    }
}

/// Resolves the requested name to (channel, model) matches, in the order of §5.
fn resolve<'s>(snap: &'s Snapshot, req: &RouteRequest<'s>) -> (Vec<Match<'s>>, &'static str) {
    let enabled = |i: &&usize| snap.channels[**i].enabled;
    if let Some(expr) = TagExpr::parse(req.model) {
        return (tag_matches(snap, &expr, req.kind), "tag");
    }
    let mut out = Vec::new();
    for &i in snap.by_alias.get(req.model).into_iter().flatten().filter(enabled) {
        out.push(Match::of(snap, i, &snap.channels[i].aliases[req.model]));
    }
    let aliased = out.len();
    for &i in snap.by_model.get(req.model).into_iter().flatten().filter(enabled) {
        if !out[..aliased].iter().any(|m| m.channel == i) {
            out.push(Match::of(snap, i, req.model));
        }
    }
    if !out.is_empty() {
        return (out, if aliased == 0 { "exact" } else { "alias" });
    }
    for (i, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled && !c.patterns.is_empty()) {
        if ch.matches_pattern(req.model) {
            out.push(Match { channel: i, model: req.model, listed: None });
        }
    }
    if !out.is_empty() {
        return (out, "pattern");
    }
    // `gpt-4o` finds `openai/gpt-4o`; a dated id (`claude-sonnet-4-5-20250929`) finds the undated one and the
    // reverse, as clients such as Claude Code send dated ids.
    let last = crate::catalog::undated(req.model.rsplit('/').next().unwrap_or(req.model)).to_ascii_lowercase();
    out.extend(snap.by_suffix.get(last.as_str()).into_iter().flatten().map(|&r| Match::at(snap, r)));
    if !out.is_empty() {
        return (out, "suffix");
    }
    // `kimi-free` is read as `tag:kimi,free` — but not a name that begins a real model id: `gpt-4o` must never
    // quietly become `gpt-4o-mini` (it gets a 404 listing `gpt-4o-mini` instead). A model the name begins shares
    // all of the name's tags, so looking among the tag matches is enough (no scan of the catalogue).
    let expr = TagExpr { positive: tags::extract(req.model), negative: Vec::new() };
    if expr.positive.len() > 1 {
        let matches = tag_matches(snap, &expr, req.kind);
        let names_a_model = matches.iter().any(|m| {
            let last = m.model.rsplit('/').next().unwrap_or(m.model);
            starts_with_ignore_case(m.model, req.model) || starts_with_ignore_case(last, req.model)
        });
        if !names_a_model {
            return (matches, "tags");
        }
    }
    (Vec::new(), "none")
}

/// Models of enabled channels matching a tag expression, in catalogue order. Uses the snapshot's tag index: the
/// shortest positive list is walked and checked against the other lists by binary search.
/// `s` begins with `prefix`, ASCII case ignored, without allocating (this runs over every model on a miss).
fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn tag_matches<'s>(snap: &'s Snapshot, expr: &TagExpr, kind: ModelKind) -> Vec<Match<'s>> {
    let empty = TagIndex::default();
    let index = |t: &str| snap.by_tag.get(t).unwrap_or(&empty);
    let negative: Vec<&TagIndex> = expr.negative.iter().map(|t| index(t)).collect();
    let mut positive: Vec<&TagIndex> = expr.positive.iter().map(|t| index(t)).collect();
    positive.sort_by_key(|t| t.len());
    // The rarest positive tag bounds the matches: one allocation.
    let mut out = Vec::with_capacity(positive.first().map_or(0, |t| t.len()));
    let mut push = |r: ModelRef| {
        let (_, m) = snap.model_ref(r);
        if kind_ok(kind, m.kind) {
            out.push(Match::listed(r.0 as usize, m));
        }
    };
    match positive.split_first() {
        None => {
            // Only negatives: every model of every enabled channel is a candidate.
            for (ci, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
                for mi in 0..ch.models.len() {
                    let r = (ci as u32, mi as u32);
                    if !negative.iter().any(|n| n.contains(snap, r)) {
                        push(r);
                    }
                }
            }
        }
        Some((shortest, rest)) if shortest.bits.is_some() => {
            // Every positive tag is common: AND the bitsets word by word, then walk the bits that are left.
            // (Lists are sorted by length and density follows length, so every other positive has a bitset.)
            let first = shortest.bits.as_deref().unwrap_or_default();
            let rest: Vec<&[u64]> = rest.iter().filter_map(|t| t.bits.as_deref()).collect();
            let dense_neg: Vec<&[u64]> = negative.iter().filter_map(|t| t.bits.as_deref()).collect();
            let sparse_neg: Vec<&TagIndex> = negative.iter().copied().filter(|n| n.bits.is_none()).collect();
            // A chunk of words at a time, on the stack: AND-ed set by set (vectorised), then walked. Bits are walked
            // in ascending order, so each model's channel is found from the previous one's.
            const CHUNK: usize = 64;
            let mut buf = [0u64; CHUNK];
            let mut channel = 0;
            for start in (0..first.len()).step_by(CHUNK) {
                let end = (start + CHUNK).min(first.len());
                let words = &mut buf[..end - start];
                words.copy_from_slice(&first[start..end]);
                // Every bitset spans all models: the same length.
                for bits in &rest {
                    words.iter_mut().zip(&bits[start..end]).for_each(|(w, b)| *w &= b);
                }
                for bits in &dense_neg {
                    words.iter_mut().zip(&bits[start..end]).for_each(|(w, b)| *w &= !b);
                }
                for (wi, &w) in (start..).zip(words.iter()) {
                    let mut w = w;
                    while w != 0 {
                        let g = (wi * 64) as u32 + w.trailing_zeros();
                        w &= w - 1;
                        let r = snap.from_global_after(g, channel);
                        channel = r.0;
                        if !sparse_neg.iter().any(|n| n.contains(snap, r)) {
                            push(r);
                        }
                    }
                }
            }
        }
        Some((shortest, rest)) => {
            // Walk the shortest list, checking the others (bitset: one probe; list: binary search).
            for &r in &shortest.refs {
                if rest.iter().all(|t| t.contains(snap, r)) && !negative.iter().any(|n| n.contains(snap, r)) {
                    push(r);
                }
            }
        }
    }
    out
}

/// Names offered when a model is not found: model ids, aliases and tags close to the request.
pub fn suggestions(snap: &Snapshot, wanted: &str) -> Vec<String> {
    if let Some(expr) = TagExpr::parse(wanted) {
        let tagset: Vec<&str> = snap.by_tag.keys().map(|k| &**k).collect();
        let mut out: Vec<String> = Vec::new();
        for part in expr.positive.iter().filter(|p| !snap.by_tag.contains_key(p.as_str())) {
            for t in tags::closest(part, tagset.iter().copied(), 3) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        return out;
    }
    let ids = snap.model_ids();
    tags::closest(wanted, ids.iter().map(|(id, _)| *id), 5)
}

/// Builds the ordered attempt plan for a request.
pub fn plan(snap: &Snapshot, health: &Health, req: &RouteRequest<'_>, now: Instant) -> Result<Plan, PlanError> {
    let (matches, resolved_by) = resolve(snap, req);
    if matches.is_empty() {
        return Err(PlanError::UnknownModel { model: req.model.to_string(), closest: suggestions(snap, req.model) });
    }
    let mut excluded = Vec::new();
    let mut exclude =
        |ch: &Channel, m: &str, ep: Option<&str>, tok: Option<&str>, reason: Exclusion, cooling: Option<Duration>| {
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
    let mut groups: Vec<Match<'_>> = Vec::with_capacity(matches.len());
    let mut saw_kind_or_allow = false;
    let mut forbidden = 0usize;
    let mut wrong_protocol: Option<&'static str> = None;
    // Nearly always nothing cools: then no per-candidate lookup (nor the `model_key` it formats) is made.
    let cools = !health.nothing_cools(now);
    for m in matches {
        let ch = &snap.channels[m.channel];
        if let Some(pc) = pin_channel
            && &*ch.name != pc
        {
            continue;
        }
        let kind = kind_of(&m);
        if !kind_ok(req.kind, kind) {
            saw_kind_or_allow = true;
            exclude(ch, m.model, None, None, Exclusion::WrongKind(kind), None);
            continue;
        }
        if let Some(allow) = req.allow
            && !allow.permits(req.model, m.model, &model_tags(ch, m.model))
        {
            forbidden += 1;
            saw_kind_or_allow = true;
            exclude(ch, m.model, None, None, Exclusion::NotAllowed, None);
            continue;
        }
        let native = ch.protocol.speaks(req.client);
        if !native && !req.translate {
            wrong_protocol = Some(ch.protocol.wire().as_str());
            exclude(ch, m.model, None, None, Exclusion::Speaks(ch.protocol.wire()), None);
            continue;
        }
        if let Some(d) = cools.then(|| health.cooling(&model_key(&ch.name, m.model), now)).flatten() {
            exclude(ch, m.model, None, None, Exclusion::ModelMissing, Some(d));
            continue;
        }
        if let Some(window) = context_window(snap, &m)
            && req.est_input + req.est_output > u64::from(window)
        {
            let need = req.est_input + req.est_output;
            exclude(ch, m.model, None, None, Exclusion::ContextTooLong { need, window }, None);
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
        if forbidden > 0 && excluded.iter().all(|e| matches!(e.reason, Exclusion::NotAllowed | Exclusion::WrongKind(_)))
        {
            return Err(PlanError::Forbidden { model: req.model.to_string() });
        }
        if let Some(protocol) = wrong_protocol
            && excluded.iter().all(|e| matches!(e.reason, Exclusion::Speaks(_)))
        {
            return Err(PlanError::WrongProtocol {
                model: req.model.to_string(),
                protocol,
                client: req.client.as_str(),
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
    let scores = order(snap, health, req, &mut groups);
    // Expand into endpoints (by priority, weighted random inside a priority) and tokens.
    let mut candidates = Vec::with_capacity(groups.len());
    let mut rng = rand::thread_rng();
    let mut eps = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let ch = &snap.channels[g.channel];
        let native = ch.protocol.speaks(req.client);
        let listed = g.listed;
        let visible = listed.map(|m| &*m.tokens).unwrap_or(&[]);
        // The upstream id, shared with the snapshot when the channel lists it (one allocation per plan otherwise).
        let model: Arc<str> = listed.map(|m| m.id.clone()).unwrap_or_else(|| g.model.into());
        endpoint_order(ch, &mut rng, &mut eps);
        for &ei in &eps {
            let ep = &ch.endpoints[ei];
            if let Some(pe) = pin_endpoint
                && &*ep.name != pe
            {
                continue;
            }
            if !ep.failover_enabled && pin_endpoint.is_none() {
                exclude(ch, g.model, Some(&ep.name), None, Exclusion::FailoverDisabled, None);
                continue;
            }
            if let Some(d) = cools.then(|| health.cooling(&ep.health_key, now)).flatten() {
                let reason = health.view(&ep.health_key).reason.unwrap_or_default();
                exclude(ch, g.model, Some(&ep.name), None, Exclusion::EndpointCooling(reason), Some(d));
                continue;
            }
            for ti in ep.rotated_tokens() {
                let tok = &ep.tokens[ti];
                if !visible.is_empty()
                    && !visible.iter().any(|v| Arc::ptr_eq(v, &tok.fingerprint) || **v == *tok.fingerprint)
                {
                    continue;
                }
                if let Some(d) = cools.then(|| health.cooling(&tok.health_key, now)).flatten() {
                    let reason = health.view(&tok.health_key).reason.unwrap_or_default();
                    exclude(
                        ch,
                        g.model,
                        Some(&ep.name),
                        Some(&tok.token_key),
                        Exclusion::TokenCooling(reason),
                        Some(d),
                    );
                    continue;
                }
                candidates.push(Candidate {
                    channel: g.channel,
                    endpoint: ei,
                    token: ti,
                    model: model.clone(),
                    native,
                    score: scores.get(gi).copied(),
                });
            }
        }
    }
    if candidates.is_empty() {
        return Err(all_cooling_or_none(req.model, excluded));
    }
    if req.strategy == Strategy::Fastest {
        // Latency is a property of the endpoint, not the channel: order the attempts themselves. The sort is
        // stable, so equal (or unknown) latencies keep the channel order computed above.
        let lat: Vec<f64> = candidates
            .iter()
            .map(|c| endpoint_latency(snap, health, c.channel, c.endpoint).unwrap_or(f64::INFINITY))
            .collect();
        let mut idx: Vec<usize> = (0..candidates.len()).collect();
        idx.sort_by(|&a, &b| lat[a].total_cmp(&lat[b]));
        let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
        candidates = idx.into_iter().filter_map(|i| slots[i].take()).collect();
    }
    Ok(Plan { candidates, excluded, strategy: req.strategy, resolved_by })
}

/// The context window of a match when known ([`Channel::context_window`], without a lookup by name when the
/// channel configures none).
fn context_window(snap: &Snapshot, m: &Match<'_>) -> Option<u32> {
    let ch = &snap.channels[m.channel];
    if ch.context_window.is_empty() {
        return m.listed.and_then(|x| x.context);
    }
    ch.context_window(m.model)
}

fn all_cooling_or_none(model: &str, excluded: Vec<Excluded>) -> PlanError {
    match excluded.iter().filter_map(|e| e.cooling_for).min() {
        Some(retry_in) => PlanError::AllCooling { model: model.to_string(), retry_in, excluded },
        None => PlanError::NoneUsable { model: model.to_string(), excluded },
    }
}

/// EWMA time to first byte of one endpoint, ms (real traffic, or a fast test when there was none).
pub fn endpoint_latency(snap: &Snapshot, health: &Health, ch: usize, ep: usize) -> Option<f64> {
    health.view(&snap.channels[ch].endpoints[ep].health_key).ttfb_ms
}

/// Channel-level latency: the best EWMA time to first byte of its endpoints.
fn latency(snap: &Snapshot, health: &Health, ch: usize) -> Option<f64> {
    (0..snap.channels[ch].endpoints.len())
        .filter_map(|e| endpoint_latency(snap, health, ch, e))
        .min_by(|a, b| a.total_cmp(b))
}

fn is_free(snap: &Snapshot, g: &Match<'_>) -> bool {
    let ch = &snap.channels[g.channel];
    match g.listed {
        Some(m) => m.free,
        None => is_free_id(g.model) || ch.tags.iter().any(|t| t == "free"),
    }
}

/// Estimated USD for this request on a (channel, model); `None` when the price is unknown. Free models cost 0
/// whatever their listed price.
pub fn estimated_cost(price: Option<Price>, free: bool, est_input: u64, est_output: u64) -> Option<f64> {
    if free {
        return Some(0.0);
    }
    let p = price?;
    Some((est_input.max(1) as f64 * p.input + est_output.max(1) as f64 * p.output) / 1e6)
}

fn est_cost(snap: &Snapshot, g: &Match<'_>, req: &RouteRequest<'_>) -> Option<f64> {
    let ch = &snap.channels[g.channel];
    let price = ch.price_with(g.model, || g.listed.or_else(|| ch.model(g.model)));
    estimated_cost(price, is_free(snap, g), req.est_input, req.est_output)
}

/// A rough quality prior from a model id, in (0, 1]: parameter count when the id gives it (`70b`, `1.5b`;
/// the total, not the active `a22b` experts), and tier words (`opus`, `pro`, `max` up; `mini`, `nano`, `lite`
/// down). Unknown ids get 0.6. It only breaks ties between otherwise similar candidates of the `balanced`
/// strategy; it is not a benchmark.
pub fn model_quality(id: &str) -> f64 {
    let tags = tags::extract(id);
    let mut q: f64 = 0.6;
    let size_b = tags
        .iter()
        .filter(|t| !t.starts_with('a'))
        .filter_map(|t| {
            let (num, scale) = match t.as_bytes().last()? {
                b'b' => (&t[..t.len() - 1], 1.0),
                b'm' => (&t[..t.len() - 1], 0.001),
                b't' => (&t[..t.len() - 1], 1000.0),
                _ => return None,
            };
            num.parse::<f64>().ok().filter(|n| *n > 0.0).map(|n| n * scale)
        })
        .fold(None, |acc: Option<f64>, n| Some(acc.map_or(n, |a| a.max(n))));
    if let Some(b) = size_b {
        // 1B -> 0.35, 8B -> 0.5, 70B -> 0.72, 400B+ -> 0.9.
        q = (0.35 + 0.2 * b.max(0.1).log10()).clamp(0.2, 0.9);
    }
    const UP: &[(&str, f64)] = &[
        ("opus", 0.3),
        ("ultra", 0.2),
        ("max", 0.2),
        ("pro", 0.15),
        ("large", 0.1),
        ("plus", 0.1),
        ("sonnet", 0.25),
        ("reasoner", 0.15),
        ("thinking", 0.1),
    ];
    const DOWN: &[(&str, f64)] = &[
        ("nano", 0.25),
        ("tiny", 0.25),
        ("lite", 0.2),
        ("mini", 0.15),
        ("small", 0.15),
        ("haiku", 0.1),
        ("flash", 0.05),
    ];
    for t in &tags {
        if let Some((_, d)) = UP.iter().find(|(w, _)| w == t) {
            q += d;
        }
        if let Some((_, d)) = DOWN.iter().find(|(w, _)| w == t) {
            q -= d;
        }
    }
    q.clamp(0.05, 1.0)
}

/// The `balanced` score of a (channel, model): each part in [0, 1], total = weighted mean (weights from
/// `routing.balanced`, default cost .3 / speed .3 / quality .2 / reliability .2).
fn score(snap: &Snapshot, health: &Health, g: &Match<'_>, req: &RouteRequest<'_>) -> Score {
    let w = &snap.config.raw.routing.balanced;
    // 1.0 free, 0.5 at one cent per request, falling towards 0 for expensive ones; unknown price 0.3.
    let cost = match est_cost(snap, g, req) {
        Some(c) => 1.0 / (1.0 + c * 100.0),
        None => 0.3,
    };
    // 1.0 instant, 0.5 at one second to first byte; unknown 0.5.
    let speed = match latency(snap, health, g.channel) {
        Some(ms) => 1.0 / (1.0 + ms / 1000.0),
        None => 0.5,
    };
    let ch = &snap.channels[g.channel];
    // Quality: mostly the model's prior, partly the configured preference (lower priority number = preferred).
    let preference = 1.0 / (1.0 + (ch.priority.max(0) as f64) / 10.0);
    let quality = 0.7 * model_quality(g.model) + 0.3 * preference;
    // Reliability: successes over attempts on the channel's endpoints, with a prior of one of each.
    let (ok, err) = ch.endpoints.iter().fold((0u64, 0u64), |(o, e), ep| {
        let v = health.view(&ep.health_key);
        (o + v.ok, e + v.errors)
    });
    let reliability = (ok as f64 + 1.0) / ((ok + err) as f64 + 2.0);
    let sum = w.cost + w.speed + w.quality + w.reliability;
    let total = if sum > 0.0 {
        (w.cost * cost + w.speed * speed + w.quality * quality + w.reliability * reliability) / sum
    } else {
        0.0
    };
    Score { total, cost, speed, quality, reliability }
}

/// Orders (channel, model) groups by the strategy; the client's own protocol wins ties. Returns the `balanced`
/// scores in the new order (empty for other strategies).
///
/// One sort over precomputed keys: each group's strategy keys (most significant first), then its channel's
/// weighted random key (Efraimidis-Spirakis: `u^(1/w)`, highest first, one per channel so a channel's models stay
/// together), then its position in resolution order (a channel's models keep catalogue order; ties between
/// channels stay deterministic). Same order as a weighted shuffle followed by a stable sort on the strategy's keys,
/// without computing a key inside the comparisons. When the keys fit in 128 bits (every strategy but `fastest` and
/// `cost_first`, as long as the priorities in play span under 2^30) they are packed into one `u128` per group,
/// position in the low 32 bits: the same order, at the cost of two integer compares per comparison. For the
/// strategies with a random key, when the other fields, the position and 32 or more of the random key's bits fit
/// in 64, one `u64` per group (the common case: a priority or two, hundreds of groups).
fn order(snap: &Snapshot, health: &Health, req: &RouteRequest<'_>, groups: &mut Vec<Match<'_>>) -> Vec<Score> {
    let balanced = req.strategy == Strategy::Balanced;
    let scores: Vec<Score> =
        if balanced { groups.iter().map(|g| score(snap, health, g, req)).collect() } else { Vec::new() };
    if groups.len() < 2 {
        return scores;
    }
    let mut shuffle = ChannelKeys::new(snap, groups, !balanced);
    let (lo, hi) = groups
        .iter()
        .map(|g| snap.channels[g.channel].priority)
        .fold((i64::MAX, i64::MIN), |(l, h), p| (l.min(p), h.max(p)));
    // Bits of `priority - lo` (0 when every priority is the same).
    let prio_bits = 128 - (i128::from(hi) - i128::from(lo)).leading_zeros();
    let packable = prio_bits <= 30 && !matches!(req.strategy, Strategy::Fastest | Strategy::CostFirst);
    let before = std::mem::take(groups);
    if packable {
        // Each group's key is its strategy's fields above its channel's random key (the one 64-bit field; for
        // `balanced` the score takes its place and comes first), most significant first.
        let head_bits = match req.strategy {
            Strategy::Priority => prio_bits + 1,
            Strategy::Weighted => 1,
            Strategy::FreeFirst | Strategy::LocalFirst => prio_bits + 2,
            Strategy::Balanced => 1 + prio_bits,
            Strategy::Fastest | Strategy::CostFirst => unreachable!("not packable"),
        };
        let mut fields = |i: usize, g: &Match<'_>| -> (u64, u64) {
            let ch = &snap.channels[g.channel];
            let native = u64::from(!ch.protocol.speaks(req.client));
            let prio = (ch.priority.wrapping_sub(lo)) as u64;
            match req.strategy {
                Strategy::Priority => ((prio << 1) | native, shuffle.key(g.channel)),
                Strategy::Weighted => (native, shuffle.key(g.channel)),
                Strategy::FreeFirst => {
                    let not_free = u64::from(!is_free(snap, g));
                    ((not_free << (prio_bits + 1)) | (prio << 1) | native, shuffle.key(g.channel))
                }
                Strategy::LocalFirst => {
                    let remote = u64::from(!ch.local);
                    ((remote << (prio_bits + 1)) | (prio << 1) | native, shuffle.key(g.channel))
                }
                // Highest score first, then native, then priority: the score is the "random" 64 bits on top.
                Strategy::Balanced => ((native << prio_bits) | prio, !ord_f64(scores[i].total)),
                Strategy::Fastest | Strategy::CostFirst => unreachable!("not packable"),
            }
        };
        // Narrower still: one `u64` when the head, the position (as many bits as the number of groups needs) and
        // at least 32 bits of the random key fit. Only the key's low bits are dropped: two channels tie on the
        // rest once in ~2^32 draws, and a tie falls to resolution order.
        let pos_bits = usize::BITS - (before.len() - 1).leading_zeros();
        if !balanced && head_bits + pos_bits + 32 <= 64 {
            let random_bits = 64 - head_bits - pos_bits;
            let mut keyed: Vec<u64> = Vec::with_capacity(before.len());
            for (i, g) in before.iter().enumerate() {
                let (head, random) = fields(i, g);
                let key = (head << random_bits) | (random >> (64 - random_bits));
                keyed.push((key << pos_bits) | i as u64);
            }
            // Every key ends in a distinct position: an unstable sort gives one deterministic order.
            keyed.sort_unstable();
            let mask = (1u64 << pos_bits) - 1;
            groups.extend(keyed.iter().map(|k| before[(k & mask) as usize]));
            return Vec::new();
        }
        let mut keyed: Vec<u128> = Vec::with_capacity(before.len());
        for (i, g) in before.iter().enumerate() {
            let (head, top) = fields(i, g);
            let key = if balanced {
                (u128::from(top) << head_bits) | u128::from(head)
            } else {
                (u128::from(head) << 64) | u128::from(top)
            };
            keyed.push((key << 32) | i as u128);
        }
        // As above.
        keyed.sort_unstable();
        let at = |k: &u128| *k as u32 as usize;
        groups.extend(keyed.iter().map(|k| before[at(k)]));
        if balanced {
            return keyed.iter().map(|k| scores[at(k)]).collect();
        }
        return Vec::new();
    }
    let mut keyed: Vec<([u64; 4], u32)> = Vec::with_capacity(before.len());
    for (i, g) in before.iter().enumerate() {
        let ch = &snap.channels[g.channel];
        let native = u64::from(!ch.protocol.speaks(req.client));
        let prio = ord_i64(ch.priority);
        let key = match req.strategy {
            Strategy::Priority => [prio, native, shuffle.key(g.channel), 0],
            Strategy::Weighted => [native, shuffle.key(g.channel), 0, 0],
            // Channel order for ties; `plan` then orders the attempts by endpoint latency.
            Strategy::Fastest => {
                let lat = latency(snap, health, g.channel).unwrap_or(f64::INFINITY);
                [ord_f64(lat), native, prio, shuffle.key(g.channel)]
            }
            Strategy::CostFirst => {
                let cost = est_cost(snap, g, req).unwrap_or(f64::INFINITY);
                [ord_f64(cost), native, prio, shuffle.key(g.channel)]
            }
            Strategy::FreeFirst => [u64::from(!is_free(snap, g)), prio, native, shuffle.key(g.channel)],
            Strategy::LocalFirst => [u64::from(!ch.local), prio, native, shuffle.key(g.channel)],
            // Highest score first.
            Strategy::Balanced => [!ord_f64(scores[i].total), native, prio, 0],
        };
        keyed.push((key, i as u32));
    }
    // As above: the positions make every key distinct.
    keyed.sort_unstable();
    groups.extend(keyed.iter().map(|&(_, i)| before[i as usize]));
    if balanced {
        return keyed.iter().map(|&(_, i)| scores[i as usize]).collect();
    }
    Vec::new()
}

/// `f64` as a `u64` that sorts as [`f64::total_cmp`] does.
fn ord_f64(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// `i64` as a `u64` that sorts the same.
fn ord_i64(x: i64) -> u64 {
    (x as u64) ^ (1 << 63)
}

/// The weighted random key of each channel in a plan (Efraimidis-Spirakis: `u^(1/w)`; as a sort key, highest
/// first), drawn once per channel on first use. When the groups come channel by channel (tag matches are in
/// catalogue order) the last channel's key is all there is to remember; otherwise a flat table by channel index
/// (cheaper than hashing when hundreds of channels match).
struct ChannelKeys<'s> {
    snap: &'s Snapshot,
    /// The last channel asked for and its key (`usize::MAX`: none yet).
    last: (usize, u64),
    /// By channel, when the groups are not in channel order; 0: not drawn yet (a drawn key never is: `ord_f64` of
    /// a finite number is never `u64::MAX`).
    keys: Vec<u64>,
    /// Seeded from the thread's generator once per plan: a draw is a few instructions instead of a `ChaCha`
    /// block's share (the keys only need to be uniform, not unpredictable).
    rng: SmallRng,
}

impl<'s> ChannelKeys<'s> {
    fn new(snap: &'s Snapshot, groups: &[Match<'_>], used: bool) -> ChannelKeys<'s> {
        let in_order = groups.windows(2).all(|w| w[0].channel <= w[1].channel);
        let keys = if used && !in_order { vec![0; snap.channels.len()] } else { Vec::new() };
        ChannelKeys { snap, last: (usize::MAX, 0), keys, rng: SmallRng::seed_from_u64(rand::thread_rng().r#gen()) }
    }

    /// The channel's key, ascending (the highest `u^(1/w)` gives the smallest key).
    fn key(&mut self, channel: usize) -> u64 {
        if self.last.0 == channel {
            return self.last.1;
        }
        let k = match self.keys.get(channel) {
            Some(&k) if k != 0 => k,
            _ => {
                let k = self.draw(channel);
                if let Some(slot) = self.keys.get_mut(channel) {
                    *slot = k;
                }
                k
            }
        };
        self.last = (channel, k);
        k
    }

    fn draw(&mut self, channel: usize) -> u64 {
        let w = self.snap.channels[channel].weight.max(1);
        // Uniform in (0, 1): 53 random bits, centred in their step (never 0, never 1).
        let mut uniform = || ((self.rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        // `u^(1/w)` has the distribution of the largest of `w` uniform draws (both are `x^w` below `x`): for small
        // weights (the default is 1) a few draws cost less than a `powf`.
        let x =
            if w <= 8 { (1..w).fold(uniform(), |x, _| x.max(uniform())) } else { uniform().powf(1.0 / f64::from(w)) };
        !ord_f64(x)
    }
}

/// A channel's endpoints in trying order: by priority (the catalogue keeps them sorted so), and inside one
/// priority weighted random by `weight` (Efraimidis-Spirakis, as for channels).
/// Written into `idx` (reused across a plan's groups: no allocation per group).
fn endpoint_order(ch: &Channel, rng: &mut impl Rng, idx: &mut Vec<usize>) {
    let eps = &ch.endpoints;
    idx.clear();
    idx.extend(0..eps.len());
    if eps.windows(2).all(|w| w[0].priority != w[1].priority) {
        return;
    }
    let keys: Vec<f64> =
        eps.iter().map(|e| rng.gen_range(f64::EPSILON..1.0).powf(1.0 / f64::from(e.weight.max(1)))).collect();
    idx.sort_by(|&a, &b| eps[a].priority.cmp(&eps[b].priority).then(keys[b].total_cmp(&keys[a])));
}

#[cfg(test)]
mod tests;
