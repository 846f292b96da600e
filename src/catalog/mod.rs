//! The routing catalogue: channels, endpoints, tokens and models as one immutable [`Snapshot`].
//!
//! Owns turning configuration (YAML channels, store channels, discovered models) into the read-only structure the
//! hot path routes on. A snapshot is built off the hot path and swapped whole (`arc-swap`); nothing in it
//! changes afterwards. Health and cooldowns live beside it in `live::health`.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::{ChannelConfig, ChannelProtocol, Config, KeyConfig, Price, Secret};
use crate::crypto::fingerprint;

/// Where a channel is defined; YAML channels are read-only at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Yaml,
    Store,
    Auto,
}

/// What a model is for; embedding models are never chat candidates and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Chat,
    Embedding,
    Rerank,
    Other,
}

impl ModelKind {
    /// A guess from the id, for models whose list does not say.
    pub fn guess(id: &str) -> ModelKind {
        let l = id.to_ascii_lowercase();
        // Rerankers first: `bge-reranker-v2-m3` is not an embedding model.
        if l.contains("rerank") {
            ModelKind::Rerank
        } else if l.contains("embed") || l.contains("bge-") || l.contains("/bge") || l.contains("e5-") {
            ModelKind::Embedding
        } else if l.contains("whisper") || l.contains("tts") || l.contains("dall-e") || l.contains("moderation") {
            ModelKind::Other
        } else {
            ModelKind::Chat
        }
    }
}

/// An upstream key as the router uses it.
#[derive(Debug)]
pub struct Token {
    /// Configured name, else `fp:<16 hex>`.
    pub token_key: Arc<str>,
    /// Always `fp:<16 hex>` of SHA-256(key).
    pub fingerprint: Arc<str>,
    pub secret: Secret,
    pub enabled: bool,
    /// Key in the health table: `channel/endpoint/token_key`.
    pub health_key: Arc<str>,
    /// `token_key` as a response header value (`X-Router-Token`), made once; `None` if it is not header text.
    pub header: Option<http::HeaderValue>,
    /// Prompt-cache affinity's target of this key, short of the model (`live::affinity::Prefix`), made once.
    pub affinity: crate::live::affinity::Prefix,
}

#[derive(Debug)]
pub struct Endpoint {
    pub name: Arc<str>,
    /// `name` as a response header value (`X-Router-Endpoint`), made once.
    pub header: Option<http::HeaderValue>,
    /// Key in the health table: `channel/endpoint`.
    pub health_key: Arc<str>,
    /// Without a trailing slash.
    pub base_url: String,
    pub priority: i64,
    /// Share of traffic among the channel's endpoints of the same priority (at least 1).
    pub weight: u32,
    pub failover_enabled: bool,
    pub tokens: Vec<Token>,
    pub headers: Vec<(String, String)>,
    pub connect_timeout: Option<Duration>,
    pub first_byte_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub fast_test_path: String,
    /// Next token to start with (rotation).
    pub rotation: AtomicUsize,
    pub local: bool,
}

impl Endpoint {
    /// Token indices in rotation order, starting a new turn each call. Disabled tokens are left out. One token
    /// needs no turn (no write to the shared counter: plans on every thread read this endpoint).
    pub fn rotated_tokens(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.tokens.len().max(1);
        let start = if n == 1 { 0 } else { self.rotation.fetch_add(1, Ordering::Relaxed) % n };
        // `start < n` and `i < n`: one subtraction wraps it (no division per token).
        (0..self.tokens.len())
            .map(move |i| if start + i >= n { start + i - n } else { start + i })
            .filter(|&i| self.tokens[i].enabled)
    }
}

/// A model a channel serves.
#[derive(Debug, Clone)]
pub struct Model {
    /// Interned: one allocation per distinct id per snapshot, shared by every channel listing it and by the
    /// snapshot's indexes.
    pub id: Arc<str>,
    pub kind: ModelKind,
    /// Interned like the id: one list per distinct id, each tag one allocation per snapshot.
    pub tags: Arc<[Arc<str>]>,
    /// Interned: equal prices share one allocation.
    pub price: Option<Arc<Price>>,
    pub free: bool,
    /// Fingerprints of the tokens that can see this model; empty = every token of the channel. Interned: equal
    /// lists (typically every model of a channel) share one allocation.
    pub tokens: Arc<[Arc<str>]>,
    /// Context window in tokens, when discovery found it (see [`Channel::context_window`]).
    pub context: Option<u32>,
}

#[derive(Debug)]
pub struct Channel {
    pub name: Arc<str>,
    /// `name` as a response header value (`X-Router-Channel`), made once.
    pub header: Option<http::HeaderValue>,
    pub protocol: ChannelProtocol,
    pub priority: i64,
    pub weight: u32,
    pub tags: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub models: Vec<Model>,
    /// Configured model patterns ending in `*`.
    pub patterns: Vec<String>,
    pub aliases: HashMap<String, String>,
    pub pricing: HashMap<String, Price>,
    /// Configured context windows in tokens, by upstream model id (`*`: every model of the channel).
    pub context_window: HashMap<String, u32>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub api_version: Option<String>,
    pub origin: Origin,
    pub local: bool,
    /// The definition it was built from (see [`Channel::config`]).
    definition: Definition,
    /// Model id -> index in `models` (channels may list hundreds of models; lookups are on the hot path).
    index: ModelIndex,
}

/// Model id -> position in a channel's `models`: a hash table of bare positions (4 bytes a slot), the ids hashed
/// and compared in place instead of being stored again as keys. Hashed with foldhash, seeded per process (ids
/// come from configuration and upstreams' model lists, so the seed still matters): SipHash cost ~400
/// instructions per request here.
#[derive(Debug, Default)]
struct ModelIndex {
    table: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl ModelIndex {
    fn with_capacity(n: usize) -> ModelIndex {
        ModelIndex { table: hashbrown::HashTable::with_capacity(n), hasher: Default::default() }
    }

    fn get(&self, models: &[Model], id: &str) -> Option<u32> {
        self.table.find(self.hasher.hash_one(id), |&i| &*models[i as usize].id == id).copied()
    }

    /// Adds `models[i]`, which must not be in the table yet.
    fn insert(&mut self, models: &[Model], i: u32) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(&*models[i as usize].id);
        self.table.insert_unique(hash, i, |&j| hasher.hash_one(&*models[j as usize].id));
    }

    fn shrink_to_fit(&mut self, models: &[Model]) {
        let hasher = &self.hasher;
        self.table.shrink_to_fit(|&j| hasher.hash_one(&*models[j as usize].id));
    }
}

/// Where a channel's definition is kept: a YAML channel's is read in place from the snapshot's `Config` (not
/// copied: its model list can be long); a store channel's is held here.
#[derive(Debug)]
enum Definition {
    Yaml(Arc<Config>, usize),
    Store(Arc<ChannelConfig>),
}

impl Channel {
    /// The definition it was built from (for `channels show`, discovery and balance).
    pub fn config(&self) -> &ChannelConfig {
        match &self.definition {
            Definition::Yaml(config, i) => &config.raw.channels[*i],
            Definition::Store(c) => c,
        }
    }

    /// The price of an upstream model: config override (exact, then `*`), else discovered. For Anthropic
    /// channels and Claude models, unset cache-write prices take Anthropic's multipliers (1.25x / 2x input).
    pub fn price(&self, model: &str) -> Option<Price> {
        self.price_with(model, || self.model(model))
    }

    /// [`Channel::price`] with the listed model found by the caller (routing has its index already: no lookup by
    /// name); `listed` is called only when no configured price applies.
    pub fn price_with<'a>(&'a self, model: &str, listed: impl FnOnce() -> Option<&'a Model>) -> Option<Price> {
        let p = self
            .pricing
            .get(model)
            .or_else(|| self.pricing.get("*"))
            .copied()
            .or_else(|| listed().and_then(|m| m.price.as_deref().copied()))?;
        let anthropic = self.protocol.wire() == crate::protocol::Protocol::Anthropic
            || model.as_bytes().windows(6).any(|w| w.eq_ignore_ascii_case(b"claude"));
        Some(if anthropic { p.with_anthropic_cache_defaults() } else { p })
    }

    /// The context window of `model` in tokens, when known: the configured one for that id, else what discovery
    /// found, else the channel's configured `*`.
    pub fn context_window(&self, model: &str) -> Option<u32> {
        self.context_window
            .get(model)
            .copied()
            .or_else(|| self.model(model).and_then(|m| m.context))
            .or_else(|| self.context_window.get("*").copied())
    }

    /// `/v1/responses` requests are translated to chat completions for this channel.
    pub fn responses_via_chat(&self) -> bool {
        match self.config().responses_api {
            Some(crate::config::ResponsesApi::Native) => false,
            Some(crate::config::ResponsesApi::Chat) => true,
            None => {
                let native_host = self.endpoints.iter().all(|e| {
                    reqwest::Url::parse(&e.base_url)
                        .ok()
                        .and_then(|u| u.host_str().map(|h| h == "api.openai.com" || h.ends_with(".openai.azure.com")))
                        .unwrap_or(false)
                });
                !(native_host || self.protocol == ChannelProtocol::Azure)
            }
        }
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.model_position(id).map(|i| &self.models[i as usize])
    }

    /// The index in `models` of a model this channel lists.
    pub fn model_position(&self, id: &str) -> Option<u32> {
        self.index.get(&self.models, id)
    }

    /// Tags of one of this channel's models as routing sees them: the model's own, `free` when it is free,
    /// and the channel's tags.
    pub fn tags_of<'a>(&'a self, model: &'a Model) -> impl Iterator<Item = &'a str> + Clone {
        model.tags.iter().map(|t| &**t).chain(model.free.then_some("free")).chain(self.tags.iter().map(String::as_str))
    }

    pub fn matches_pattern(&self, model: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, model))
    }
}

/// The id without a trailing `-YYYYMMDD` date (clients such as Claude Code send dated ids).
pub fn undated(id: &str) -> &str {
    match id.rsplit_once('-') {
        Some((head, date)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && date.starts_with("20") => {
            head
        }
        _ => id,
    }
}

/// `gpt-*` matches a prefix, `*/*` anything with a slash, `*` anything.
pub fn pattern_matches(pattern: &str, model: &str) -> bool {
    match pattern {
        "*" => true,
        "*/*" => model.contains('/'),
        p => match p.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => p == model,
        },
    }
}

/// A model discovered through a channel's token (stored by `router discover`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct DiscoveredModel {
    pub id: String,
    #[serde(default)]
    pub kind: Option<ModelKind>,
    #[serde(default)]
    pub price: Option<Price>,
    /// Context window in tokens, when the model list says (`context_length`, `context_window`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
}

/// Discovery results: channel name -> token fingerprint -> models.
pub type Discovered = HashMap<String, HashMap<String, Vec<DiscoveredModel>>>;

/// A model of a channel: (index in `Snapshot::channels`, index in `Channel::models`).
pub type ModelRef = (u32, u32);

/// The models carrying one tag: a sorted list, or, when the tag is common enough (at least 1 model in 64) that
/// walking the list would be slower than AND-ing bitsets, a bitset over all models (numbered by
/// [`Snapshot::global`]) instead (the list is then empty: the bitset is 8 times smaller than the list).
#[derive(Debug, Default)]
pub struct TagIndex {
    /// Sorted; empty when `bits` is set.
    pub refs: Vec<ModelRef>,
    pub bits: Option<Vec<u64>>,
    /// The number of models carrying the tag.
    len: u32,
}

impl TagIndex {
    /// The number of models carrying the tag.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The models carrying the tag, in catalogue order.
    pub fn iter<'a>(&'a self, snap: &'a Snapshot) -> impl Iterator<Item = ModelRef> + 'a {
        let from_bits = self.bits.iter().flat_map(move |bits| {
            bits.iter().enumerate().flat_map(move |(wi, &w)| {
                let mut w = w;
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let g = (wi * 64) as u32 + w.trailing_zeros();
                        w &= w - 1;
                        snap.from_global(g)
                    })
                })
            })
        });
        self.refs.iter().copied().chain(from_bits)
    }

    pub fn contains(&self, snap: &Snapshot, r: ModelRef) -> bool {
        match &self.bits {
            Some(bits) => {
                let g = snap.global(r) as usize;
                bits[g / 64] & (1 << (g % 64)) != 0
            }
            None => self.refs.binary_search(&r).is_ok(),
        }
    }
}

/// Everything routing needs, immutable.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub channels: Vec<Channel>,
    /// Exact model id -> channels that list it.
    pub by_model: HashMap<Arc<str>, Vec<usize>>,
    /// Alias -> channels that define it.
    pub by_alias: HashMap<String, Vec<usize>>,
    /// Tag -> models of enabled channels carrying it (model tags, `free`, channel tags), sorted. Makes a tag query
    /// over tens of thousands of models an intersection of short lists instead of a scan.
    pub by_tag: HashMap<Arc<str>, TagIndex>,
    /// Lower-cased last path segment of a model id without a date suffix (`gpt-4o` of `openai/gpt-4o`,
    /// `claude-haiku-4-5` of `claude-haiku-4-5-20251001`) -> models of enabled channels.
    pub by_suffix: HashMap<Arc<str>, Vec<ModelRef>>,
    /// Global number of the first model of each channel (models numbered across the whole snapshot).
    pub model_offsets: Vec<u32>,
    /// Number of models in the snapshot.
    pub model_count: u32,
    pub config: Arc<Config>,
}

impl Snapshot {
    /// Builds the snapshot from YAML channels, store channels and discovery results.
    pub fn build(
        config: Arc<Config>,
        store_channels: &[ChannelConfig],
        discovered: &Discovered,
        auto: bool,
    ) -> Snapshot {
        let mut strings = Interner::default();
        let mut channels = Vec::with_capacity(config.raw.channels.len() + store_channels.len());
        let yaml_origin = if auto { Origin::Auto } else { Origin::Yaml };
        for (i, c) in config.raw.channels.iter().enumerate() {
            let def = Definition::Yaml(config.clone(), i);
            channels.push(build_channel(c, def, yaml_origin, discovered.get(&c.name), &mut strings));
        }
        for c in store_channels {
            let def = Definition::Store(Arc::new(c.clone()));
            channels.push(build_channel(c, def, Origin::Store, discovered.get(&c.name), &mut strings));
        }
        let mut by_model: HashMap<Arc<str>, Vec<usize>> = HashMap::with_capacity(strings.tags.len());
        let mut by_alias: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_tag: HashMap<Arc<str>, TagIndex> = HashMap::new();
        let mut by_suffix: HashMap<Arc<str>, Vec<ModelRef>> = HashMap::new();
        let mut model_offsets = Vec::with_capacity(channels.len());
        let mut model_count = 0u32;
        for ch in &channels {
            model_offsets.push(model_count);
            model_count += ch.models.len() as u32;
        }
        // The tag index in two passes: count, then fill lists of the exact size or bitsets. (Collecting every list
        // first and turning the common ones into bitsets would allocate and free megabytes, which the allocator
        // keeps as resident holes.)
        let mut counts: HashMap<Arc<str>, (u32, ModelRef)> = HashMap::new();
        for (r, ch, m) in enabled_models(&channels) {
            for t in ch.tags_of(m) {
                let (n, last) = match counts.get_mut(t) {
                    Some(c) => c,
                    None => counts.entry(strings.str(t)).or_insert((0, (u32::MAX, 0))),
                };
                // Channel tags may repeat a model tag; refs arrive in order, so a duplicate is the last one.
                if *last != r {
                    *last = r;
                    *n += 1;
                }
            }
        }
        let words = (model_count as usize).div_ceil(64);
        by_tag.reserve(counts.len());
        for (t, (n, _)) in counts {
            let index = if n as usize * 64 >= model_count as usize {
                TagIndex { refs: Vec::new(), bits: Some(vec![0u64; words]), len: n }
            } else {
                TagIndex { refs: Vec::with_capacity(n as usize), bits: None, len: n }
            };
            by_tag.insert(t, index);
        }
        for (r, ch, m) in enabled_models(&channels) {
            let g = (model_offsets[r.0 as usize] + r.1) as usize;
            for t in ch.tags_of(m) {
                let Some(index) = by_tag.get_mut(t) else { continue };
                match &mut index.bits {
                    Some(bits) => bits[g / 64] |= 1 << (g % 64),
                    None if index.refs.last() != Some(&r) => index.refs.push(r),
                    None => {}
                }
            }
        }
        for (i, ch) in channels.iter().enumerate() {
            for m in &ch.models {
                match by_model.get_mut(&*m.id) {
                    Some(l) => l.push(i),
                    None => {
                        by_model.insert(m.id.clone(), vec![i]);
                    }
                }
            }
            for a in ch.aliases.keys() {
                by_alias.entry(a.clone()).or_default().push(i);
            }
            if !ch.enabled {
                continue;
            }
            for (mi, m) in ch.models.iter().enumerate() {
                let r = (i as u32, mi as u32);
                let last = undated(m.id.rsplit('/').next().unwrap_or(&m.id));
                let list = if last.bytes().any(|b| b.is_ascii_uppercase()) {
                    by_suffix.entry(strings.str(&last.to_ascii_lowercase())).or_default()
                } else {
                    match by_suffix.get_mut(last) {
                        Some(l) => l,
                        None => by_suffix.entry(strings.str(last)).or_default(),
                    }
                };
                list.push(r);
            }
        }
        // Lists grow by doubling; a snapshot lives long, so the slack is given back.
        by_model.values_mut().for_each(Vec::shrink_to_fit);
        by_suffix.values_mut().for_each(Vec::shrink_to_fit);
        Snapshot { channels, by_model, by_alias, by_tag, by_suffix, model_offsets, model_count, config }
    }

    /// The number of a model across the whole snapshot (the bit of a [`TagIndex`] bitset).
    pub fn global(&self, r: ModelRef) -> u32 {
        self.model_offsets[r.0 as usize] + r.1
    }

    /// The inverse of [`Snapshot::global`].
    pub fn from_global(&self, g: u32) -> ModelRef {
        let c = self.model_offsets.partition_point(|&o| o <= g) - 1;
        // Channels without models share an offset with the next one; partition_point picks the last of them,
        // which is the one that has the model.
        (c as u32, g - self.model_offsets[c])
    }

    /// [`Snapshot::from_global`] for a walk in ascending order: `after` is the channel of a model numbered no
    /// higher than `g` (the previous one of the walk, or 0). Gallops forward from it, so a walk over the models of
    /// neighbouring channels costs a probe or two per model instead of a binary search over every channel.
    pub fn from_global_after(&self, g: u32, after: u32) -> ModelRef {
        let rest = &self.model_offsets[after as usize..];
        // `rest[0] <= g`: find `hi` with `rest[hi] > g` (or the end), doubling the step.
        let mut hi = 1;
        while hi < rest.len() && rest[hi] <= g {
            hi *= 2;
        }
        let lo = hi / 2;
        let hi = hi.min(rest.len());
        // As in `from_global`: the last channel whose offset is <= g (empty channels share an offset with the next).
        let c = after as usize + lo + rest[lo..hi].partition_point(|&o| o <= g) - 1;
        (c as u32, g - self.model_offsets[c])
    }

    /// The model a [`ModelRef`] points at, with its channel.
    pub fn model_ref(&self, r: ModelRef) -> (&Channel, &Model) {
        let ch = &self.channels[r.0 as usize];
        (ch, &ch.models[r.1 as usize])
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| &*c.name == name)
    }

    /// Every model id of enabled channels, each once, sorted.
    pub fn model_ids(&self) -> Vec<(&str, &Channel)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for ch in self.channels.iter().filter(|c| c.enabled) {
            for id in ch.models.iter().map(|m| &*m.id).chain(ch.aliases.keys().map(String::as_str)) {
                if seen.insert(id) {
                    out.push((id, ch));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// The models of enabled channels with their [`ModelRef`], in catalogue order.
fn enabled_models(channels: &[Channel]) -> impl Iterator<Item = (ModelRef, &Channel, &Model)> {
    channels
        .iter()
        .enumerate()
        .filter(|(_, c)| c.enabled)
        .flat_map(|(ci, ch)| ch.models.iter().enumerate().map(move |(mi, m)| ((ci as u32, mi as u32), ch, m)))
}

/// Snapshot-wide sharing of strings while building: each distinct model id, tag and suffix is allocated once, and
/// each distinct id's tag list is extracted and allocated once (ids repeat across channels: mirrors, resellers).
#[derive(Default)]
struct Interner {
    strs: HashSet<Arc<str>>,
    /// Model id -> its tags.
    tags: HashMap<Arc<str>, Arc<[Arc<str>]>>,
    /// Token visibility lists (the empty one included).
    token_lists: HashMap<Vec<Arc<str>>, Arc<[Arc<str>]>>,
    /// Prices by their bits.
    prices: HashMap<PriceBits, Arc<Price>>,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.strs.insert(a.clone());
        a
    }

    /// The interned id and its interned tags.
    fn model(&mut self, id: &str) -> (Arc<str>, Arc<[Arc<str>]>) {
        if let Some((id, tags)) = self.tags.get_key_value(id) {
            return (id.clone(), tags.clone());
        }
        let id = self.str(id);
        let tags: Arc<[Arc<str>]> = crate::tags::extract(&id).iter().map(|t| self.str(t)).collect();
        self.tags.insert(id.clone(), tags.clone());
        (id, tags)
    }

    fn tokens(&mut self, list: Vec<Arc<str>>) -> Arc<[Arc<str>]> {
        if let Some(l) = self.token_lists.get(&list) {
            return l.clone();
        }
        let l: Arc<[Arc<str>]> = list.as_slice().into();
        self.token_lists.insert(list, l.clone());
        l
    }

    fn price(&mut self, p: Price) -> Arc<Price> {
        let bits = |x: f64| x.to_bits();
        let key = (
            bits(p.input),
            bits(p.output),
            p.cache_read.map(bits),
            p.cache_write.map(bits),
            p.cache_write_1h.map(bits),
        );
        self.prices.entry(key).or_insert_with(|| Arc::new(p)).clone()
    }
}

/// A price by the bits of its fields (exact: no float comparison).
type PriceBits = (u64, u64, Option<u64>, Option<u64>, Option<u64>);

fn build_channel(
    c: &ChannelConfig,
    definition: Definition,
    origin: Origin,
    discovered: Option<&HashMap<String, Vec<DiscoveredModel>>>,
    strings: &mut Interner,
) -> Channel {
    let mut endpoints = Vec::new();
    let endpoint_defs: Vec<crate::config::EndpointConfig> = if c.endpoints.is_empty() {
        vec![crate::config::EndpointConfig {
            name: "default".into(),
            base_url: c.base_url.clone().or(c.protocol.default_base_url().map(str::to_string)).unwrap_or_default(),
            keys: c.keys.clone(),
            priority: 0,
            weight: 1,
            failover_enabled: true,
            headers: Default::default(),
            connect_timeout: None,
            first_byte_timeout: None,
            idle_timeout: None,
            fast_test_path: None,
        }]
    } else {
        c.endpoints.clone()
    };
    for e in &endpoint_defs {
        let base_url = e.base_url.trim_end_matches('/').to_string();
        let health_key: Arc<str> = format!("{}/{}", c.name, e.name).into();
        let mut tokens: Vec<Token> = e.keys.iter().map(|k| token(k, &c.name, &e.name, &health_key)).collect();
        // Interned, as the models' visibility lists are: routing matches a token to a list by pointer.
        for t in &mut tokens {
            t.fingerprint = strings.str(&t.fingerprint);
        }
        let local = crate::config::is_local_url(&base_url);
        if tokens.is_empty() {
            // Keyless local endpoint: one anonymous token so rotation and records stay uniform.
            tokens.push(Token {
                header: Some(http::HeaderValue::from_static("none")),
                token_key: "none".into(),
                fingerprint: "none".into(),
                secret: Secret::default(),
                enabled: true,
                health_key: format!("{health_key}/none").into(),
                affinity: crate::live::affinity::Prefix::of(&c.name, &e.name, "none"),
            });
        }
        let fast_test_path = e.fast_test_path.clone().unwrap_or_else(|| match c.protocol {
            ChannelProtocol::Anthropic => "/v1/models".into(),
            _ => "/models".into(),
        });
        endpoints.push(Endpoint {
            header: http::HeaderValue::from_str(&e.name).ok(),
            name: e.name.as_str().into(),
            health_key,
            base_url,
            priority: e.priority,
            weight: e.weight.max(1),
            failover_enabled: e.failover_enabled,
            tokens,
            headers: e.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            connect_timeout: e.connect_timeout.map(|d| d.0),
            first_byte_timeout: e.first_byte_timeout.map(|d| d.0),
            idle_timeout: e.idle_timeout.map(|d| d.0),
            fast_test_path,
            rotation: AtomicUsize::new(0),
            local,
        });
    }
    endpoints.sort_by_key(|e| e.priority);
    let local = !endpoints.is_empty() && endpoints.iter().all(|e| e.local);
    let mut tags: Vec<String> = c.tags.iter().map(|t| t.to_ascii_lowercase()).collect();
    if local && !tags.iter().any(|t| t == "local") {
        tags.push("local".into());
    }
    let free_channel = tags.iter().any(|t| t == "free");
    let (patterns, listed): (Vec<&String>, Vec<&String>) = c.models.iter().partition(|m| m.ends_with('*'));
    let patterns: Vec<String> = patterns.into_iter().cloned().collect();
    let capacity = discovered.map(|d| d.values().map(Vec::len).max().unwrap_or(0)).unwrap_or(0) + listed.len();
    let mut models: Vec<Model> = Vec::with_capacity(capacity);
    let mut index = ModelIndex::with_capacity(capacity);
    // Token lists and prices while building, per model (interned into the models at the end).
    let mut visible: Vec<Vec<Arc<str>>> = Vec::with_capacity(capacity);
    let mut prices: Vec<Option<Price>> = Vec::with_capacity(capacity);
    let no_tokens = strings.tokens(Vec::new());
    // Sorted by fingerprint so the model order (and so routing ties) does not depend on hash order. One shared
    // `Arc` per token, not one allocation per model: the token's own (interned), so routing's visibility check is
    // a pointer comparison.
    let mut per_token: Vec<(Arc<str>, &Vec<DiscoveredModel>)> =
        discovered.into_iter().flatten().map(|(fp, list)| (strings.str(fp), list)).collect();
    per_token.sort_by(|a, b| a.0.cmp(&b.0));
    let mut push = |models: &mut Vec<Model>,
                    index: &mut ModelIndex,
                    visible: &mut Vec<Vec<Arc<str>>>,
                    id: &str,
                    price: Option<Price>,
                    kind: Option<ModelKind>,
                    context: Option<u32>,
                    token: Option<&Arc<str>>| {
        if let Some(i) = index.get(models, id).map(|i| i as usize) {
            let tokens = &mut visible[i];
            if let Some(t) = token
                && !tokens.is_empty()
                && !tokens.iter().any(|x| x == t)
            {
                tokens.push(t.clone());
            }
            if prices[i].is_none() {
                prices[i] = price;
            }
            if models[i].context.is_none() {
                models[i].context = context;
            }
            return;
        }
        let price = c.pricing.get(id).copied().or(price);
        let free = free_channel || is_free_id(id) || price.is_some_and(|p| p.input == 0.0 && p.output == 0.0);
        let (id, tags) = strings.model(id);
        models.push(Model {
            kind: kind.unwrap_or_else(|| ModelKind::guess(&id)),
            id,
            tags,
            price: None,
            free,
            tokens: no_tokens.clone(),
            context,
        });
        index.insert(models, (models.len() - 1) as u32);
        visible.push(token.map(|t| vec![t.clone()]).unwrap_or_default());
        prices.push(price);
    };
    // Discovered models are per token; configured ones are visible to every token.
    for (fp, list) in per_token {
        for m in list {
            push(&mut models, &mut index, &mut visible, &m.id, m.price, m.kind, m.context_length, Some(&fp));
        }
    }
    for id in &listed {
        push(&mut models, &mut index, &mut visible, id, None, None, None, None);
        if let Some(i) = index.get(&models, id) {
            visible[i as usize].clear();
        }
    }
    for target in c.aliases.values() {
        if index.get(&models, target).is_none() && !patterns.iter().any(|p| pattern_matches(p, target)) {
            push(&mut models, &mut index, &mut visible, target, None, None, None, None);
        }
    }
    for ((m, tokens), price) in models.iter_mut().zip(visible).zip(prices) {
        if !tokens.is_empty() {
            m.tokens = strings.tokens(tokens);
        }
        m.price = price.map(|p| strings.price(p));
    }
    // The capacity was a guess (discovered and configured lists overlap); a snapshot lives long.
    models.shrink_to_fit();
    index.shrink_to_fit(&models);
    Channel {
        header: http::HeaderValue::from_str(&c.name).ok(),
        name: c.name.as_str().into(),
        protocol: c.protocol,
        priority: c.priority,
        weight: c.weight.max(1),
        tags,
        endpoints,
        models,
        patterns,
        aliases: c.aliases.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        pricing: c.pricing.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        context_window: c.context_window.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        enabled: c.enabled,
        disabled_reason: c.disabled_reason.clone(),
        headers: c.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        api_version: c.api_version.clone(),
        origin,
        local,
        definition,
        index,
    }
}

/// An id that names a free variant (`qwen/qwen3-8b:free`, `kimi-k2-free`).
pub fn is_free_id(id: &str) -> bool {
    id.ends_with(":free") || id.ends_with("-free")
}

fn token(k: &KeyConfig, channel: &str, endpoint: &str, endpoint_key: &str) -> Token {
    let fp: Arc<str> = fingerprint(k.secret().expose()).into();
    let token_key: Arc<str> = k.name().map(Arc::from).unwrap_or_else(|| fp.clone());
    Token {
        affinity: crate::live::affinity::Prefix::of(channel, endpoint, &token_key),
        header: http::HeaderValue::from_str(&token_key).ok(),
        health_key: format!("{endpoint_key}/{token_key}").into(),
        token_key,
        fingerprint: fp,
        secret: k.secret().clone(),
        enabled: k.enabled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_channel(
        c: &ChannelConfig,
        origin: Origin,
        discovered: Option<&HashMap<String, Vec<DiscoveredModel>>>,
    ) -> Channel {
        let def = Definition::Store(Arc::new(c.clone()));
        super::build_channel(c, def, origin, discovered, &mut Interner::default())
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("gpt-*", "gpt-4o"));
        assert!(!pattern_matches("gpt-*", "o1"));
        assert!(pattern_matches("*/*", "qwen/qwen3"));
        assert!(!pattern_matches("*/*", "qwen3"));
        assert!(pattern_matches("*", "x"));
    }

    #[test]
    fn unnamed_tokens_are_keyed_by_fingerprint_never_plaintext() {
        let mut c = ChannelConfig::new("a", ChannelProtocol::Openai);
        c.base_url = Some("https://x.example/v1/".into());
        c.keys = vec![
            KeyConfig::Bare(Secret::new("sk-secret-1")),
            KeyConfig::Named { name: Some("main".into()), key: Secret::new("sk-2"), enabled: true },
        ];
        let ch = build_channel(&c, Origin::Yaml, None);
        let ep = &ch.endpoints[0];
        assert_eq!(ep.base_url, "https://x.example/v1");
        assert!(ep.tokens[0].token_key.starts_with("fp:"));
        assert_eq!(ep.tokens[0].token_key.len(), 3 + 16);
        assert!(!ep.tokens[0].health_key.contains("sk-secret"));
        assert_eq!(&*ep.tokens[1].token_key, "main");
    }

    #[test]
    fn rotation_starts_at_the_next_token_each_time() {
        let mut c = ChannelConfig::new("a", ChannelProtocol::Openai);
        c.keys = vec![
            KeyConfig::Bare(Secret::new("k1")),
            KeyConfig::Bare(Secret::new("k2")),
            KeyConfig::Bare(Secret::new("k3")),
        ];
        let ch = build_channel(&c, Origin::Yaml, None);
        let ep = &ch.endpoints[0];
        let a: Vec<_> = ep.rotated_tokens().collect();
        let b: Vec<_> = ep.rotated_tokens().collect();
        assert_eq!(a, [0, 1, 2]);
        assert_eq!(b, [1, 2, 0]);
    }

    #[test]
    fn ids_tags_and_definitions_are_shared_not_copied() {
        let mut raw = crate::config::RawConfig::default();
        for name in ["a", "b"] {
            let mut c = ChannelConfig::new(name, ChannelProtocol::Openai);
            c.models = vec!["qwen/qwen3-8b:free".into(), "gpt-4o".into()];
            c.pricing.insert("gpt-4o".into(), Price { input: 2.5, output: 10.0, ..Default::default() });
            raw.channels.push(c);
        }
        let mut store = ChannelConfig::new("s", ChannelProtocol::Anthropic);
        store.models = vec!["gpt-4o".into()];
        let config = Arc::new(Config { raw, ..Default::default() });
        let snap = Snapshot::build(config.clone(), &[store], &Discovered::default(), false);
        let (a, b, s) = (&snap.channels[0], &snap.channels[1], &snap.channels[2]);
        // One allocation per distinct id and tag list, shared by the channels and the indexes.
        assert!(Arc::ptr_eq(&a.models[1].id, &b.models[1].id));
        assert!(Arc::ptr_eq(&a.models[1].id, &s.models[0].id));
        assert!(Arc::ptr_eq(&a.models[0].tags, &b.models[0].tags));
        let (key, _) = snap.by_model.get_key_value("gpt-4o").unwrap();
        assert!(Arc::ptr_eq(key, &a.models[1].id));
        assert!(Arc::ptr_eq(a.models[1].price.as_ref().unwrap(), b.models[1].price.as_ref().unwrap()));
        assert_eq!(b.price("gpt-4o").map(|p| p.output), Some(10.0));
        assert_eq!(&*a.models[0].tags, ["qwen", "qwen3", "8b", "free"].map(Arc::<str>::from));
        assert_eq!(a.model_position("gpt-4o"), Some(1));
        assert!(a.model("gpt-4").is_none());
        // YAML definitions are read in place; store ones are kept by the channel.
        assert!(std::ptr::eq(a.config(), &config.raw.channels[0]));
        assert_eq!(s.config().name, "s");
        assert_eq!(s.config().protocol, ChannelProtocol::Anthropic);
    }

    #[test]
    fn common_tags_are_bitsets_listing_the_same_models_in_order() {
        let mut raw = crate::config::RawConfig::default();
        for i in 0..3 {
            let mut c = ChannelConfig::new(format!("c{i}"), ChannelProtocol::Openai);
            c.models = (0..40).map(|m| format!("v/m{m}-{}", if m % 2 == 0 { "even" } else { "odd" })).collect();
            raw.channels.push(c);
        }
        let snap = Snapshot::build(Arc::new(Config { raw, ..Default::default() }), &[], &Discovered::default(), false);
        let even = &snap.by_tag["even"];
        assert!(even.bits.is_some() && even.refs.is_empty());
        assert_eq!(even.len(), 60);
        let refs: Vec<ModelRef> = even.iter(&snap).collect();
        let want: Vec<ModelRef> = (0..3).flat_map(|c| (0..40).step_by(2).map(move |m| (c, m))).collect();
        assert_eq!(refs, want);
        assert!(refs.iter().all(|&r| even.contains(&snap, r)));
        assert!(!even.contains(&snap, (1, 1)));
    }

    #[test]
    fn a_models_visibility_list_shares_its_tokens_fingerprints() {
        let mut c = ChannelConfig::new("a", ChannelProtocol::Openai);
        c.keys = vec![KeyConfig::Bare(Secret::new("sk-one")), KeyConfig::Bare(Secret::new("sk-two"))];
        let mut per_token = HashMap::new();
        let model = |id: &str| DiscoveredModel { id: id.into(), kind: None, price: None, context_length: None };
        per_token.insert(fingerprint("sk-two"), vec![model("only-two")]);
        per_token.insert(fingerprint("sk-one"), vec![model("both")]);
        per_token.get_mut(&fingerprint("sk-two")).unwrap().push(model("both"));
        let discovered: Discovered = [("a".to_string(), per_token)].into();
        let config = Arc::new(Config {
            raw: crate::config::RawConfig { channels: vec![c], ..Default::default() },
            ..Default::default()
        });
        let snap = Snapshot::build(config, &[], &discovered, false);
        let ch = &snap.channels[0];
        let tokens = &ch.endpoints[0].tokens;
        let only_two = ch.model("only-two").unwrap();
        assert_eq!(only_two.tokens.len(), 1);
        assert!(Arc::ptr_eq(&only_two.tokens[0], &tokens[1].fingerprint));
        let both = ch.model("both").unwrap();
        assert_eq!(both.tokens.len(), 2);
        assert!(both.tokens.iter().all(|v| tokens.iter().any(|t| Arc::ptr_eq(v, &t.fingerprint))));
    }

    #[test]
    fn a_walk_in_ascending_order_finds_each_models_channel_as_a_lookup_does() {
        // Empty channels first, in a run in the middle, one between, and last; sizes that make the gallop overshoot.
        let sizes = [0, 0, 3, 1, 0, 0, 0, 5, 0, 2, 1, 1, 1, 1, 1, 7, 0];
        let mut raw = crate::config::RawConfig::default();
        for (i, n) in sizes.iter().enumerate() {
            let mut c = ChannelConfig::new(format!("c{i}"), ChannelProtocol::Openai);
            c.models = (0..*n).map(|m| format!("m{i}-{m}")).collect();
            raw.channels.push(c);
        }
        let snap = Snapshot::build(Arc::new(Config { raw, ..Default::default() }), &[], &Discovered::default(), false);
        assert_eq!(snap.model_count, sizes.iter().sum::<u32>());
        let mut after = 0;
        for g in 0..snap.model_count {
            let r = snap.from_global_after(g, after);
            assert_eq!(r, snap.from_global(g), "{g}");
            assert_eq!(snap.from_global_after(g, 0), r, "{g} from the start");
            after = r.0;
        }
        // Skipping ahead: every model from every channel at or before it.
        for g in 0..snap.model_count {
            let r = snap.from_global(g);
            for after in 0..=r.0 {
                if snap.model_offsets[after as usize] <= g {
                    assert_eq!(snap.from_global_after(g, after), r, "{g} after {after}");
                }
            }
        }
    }
}
