//! The YAML schema: every key `config.example.yaml` documents, as serde types.
//!
//! Owns the shape of the file and its defaults, nothing else: `${VAR}` interpolation and cross-field validation
//! live in `config::load`, and the routing view of channels in `catalog`. Store channels (imported or added with
//! `router channels add`) reuse [`ChannelConfig`], so these types also serialise.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: ServerConfig,
    pub store: StoreConfig,
    /// State several instances share (cooldowns, rate windows, parallel slots); none: this process's memory.
    pub shared_state: SharedStateConfig,
    pub routing: RoutingConfig,
    pub upstream: UpstreamConfig,
    pub discovery: DiscoveryConfig,
    pub balance: BalanceSettings,
    #[serde(skip_serializing_if = "TelemetryConfig::is_off")]
    pub telemetry: TelemetryConfig,
    pub alerts: AlertsConfig,
    pub channels: Vec<ChannelConfig>,
}

/// OpenTelemetry traces: off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added unless the URL has a path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans. Default: `router`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    pub fn is_off(&self) -> bool {
        self.otlp_endpoint.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Gateway keys clients must present. Empty: no auth (loopback only unless `--allow-open`).
    pub keys: Vec<GatewayKeyConfig>,
    /// Keys of the admin API (`/admin/v1/`). Empty: the admin API refuses every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_keys: Vec<AdminKeyConfig>,
    /// Serve the web dashboard at `/ui/` (login with an admin key). Default: on when listening on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<bool>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Send `X-Router-*` headers on responses.
    pub debug_headers: bool,
    /// How long in-flight requests may run after SIGINT / SIGTERM.
    pub grace_period: Dur,
    /// IANA time zone budget periods (day / week / month) follow, e.g. `Europe/Berlin`. Default: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Count Prometheus metrics and serve `/metrics` (false: nothing is counted; `/metrics` answers 404).
    pub metrics: bool,
    /// Serve `/metrics` on this address instead of the proxy port (no gateway key asked there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4000".into(),
            keys: Vec::new(),
            admin_keys: Vec::new(),
            ui: None,
            max_body_bytes: 32 * 1024 * 1024,
            debug_headers: true,
            grace_period: Dur::secs(30),
            timezone: None,
            metrics: true,
            metrics_listen: None,
        }
    }
}

/// A key clients send to the router. Give `key` (hashed at load) or `hash` (`sha256:<hex>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayKeyConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Tag expression or comma-separated model list this key may reach (e.g. `tag:free`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Spend allowed per `per` period, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// The budget's period: `day`, `week`, `month` or `total` (in `server.timezone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<super::Period>,
    /// When the key stops working: a date (valid through that day, in `server.timezone`) or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A key of the admin API. Give `key` (hashed at load) or `hash` (`sha256:<hex>`), like a gateway key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// redb file; default `~/.local/share/router/router.redb`.
    pub path: Option<String>,
    /// Request records older than this many days are pruned; daily rollups stay. 0 keeps everything.
    pub retention_days: u32,
    /// Request records kept in memory while the store cannot be written (~1.3 KB each); later ones go to a
    /// pending file in `pending_dir`.
    pub max_pending_records: usize,
    /// Where records go that the store cannot take and memory cannot hold; default: the system temp directory.
    pub pending_dir: Option<String>,
    /// `postgres://user:pass@host:port/db`: request records, rollups and the store's tables (channels, keys,
    /// balances, discovery) live in PostgreSQL, shared by several instances; the redb file keeps only the
    /// records PostgreSQL cannot take yet (spool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
}

/// Records kept in memory while the store cannot be written (`store.max_pending_records`): at ~1.3 KB a
/// record, about 130 MB — minutes of heavy traffic.
pub const DEFAULT_MAX_PENDING_RECORDS: usize = 100_000;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            retention_days: 0,
            max_pending_records: DEFAULT_MAX_PENDING_RECORDS,
            pending_dir: None,
            postgres: None,
        }
    }
}

/// `shared_state:`: where instances behind one load balancer keep the live state they must agree on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedStateConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS); none keeps live state in this process only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Priority,
    Weighted,
    Fastest,
    CostFirst,
    FreeFirst,
    LocalFirst,
    Balanced,
}

impl Strategy {
    pub const ALL: [Strategy; 7] = [
        Strategy::Priority,
        Strategy::Weighted,
        Strategy::Fastest,
        Strategy::CostFirst,
        Strategy::FreeFirst,
        Strategy::LocalFirst,
        Strategy::Balanced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
            Strategy::Fastest => "fastest",
            Strategy::CostFirst => "cost_first",
            Strategy::FreeFirst => "free_first",
            Strategy::LocalFirst => "local_first",
            Strategy::Balanced => "balanced",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        let s = s.trim().replace('-', "_").to_ascii_lowercase();
        Strategy::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub strategy: Strategy,
    /// Upper bound on upstream attempts for one request.
    pub max_attempts: u32,
    /// Deadline for the whole request, all attempts included.
    pub total_timeout: Dur,
    /// Try the next candidate after a 504 or a first-byte timeout (off: the request may already be running).
    pub retry_on_timeout: bool,
    pub cooldown: CooldownConfig,
    pub balanced: BalancedWeights,
    /// Bound on the cheap GET (`fast_test_path`) `fastest` measures an endpoint with before it has traffic.
    pub fast_test_timeout: Dur,
    pub affinity: AffinityConfig,
}

/// Prompt-cache affinity: a conversation keeps the upstream candidate that served it, so provider caches hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AffinityConfig {
    pub enabled: bool,
    /// How long an unused binding lives; every use refreshes it (the longest provider cache TTL is 1 hour).
    pub ttl: Dur,
    /// Bindings kept at most; the least recently used go first.
    pub max_sessions: usize,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        Self { enabled: true, ttl: Dur::secs(3600), max_sessions: 100_000 }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Priority,
            max_attempts: 6,
            total_timeout: Dur::secs(600),
            retry_on_timeout: false,
            cooldown: CooldownConfig::default(),
            balanced: BalancedWeights::default(),
            fast_test_timeout: Dur::secs(2),
            affinity: AffinityConfig::default(),
        }
    }
}

/// How long what failed is left alone. Repeated failures double the cooldown up to `max`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CooldownConfig {
    /// First cooldown of an endpoint after a connect error or 5xx.
    pub base: Dur,
    /// Cap for the doubling.
    pub max: Dur,
    /// A token answered 401 / 403.
    pub auth: Dur,
    /// A token answered 402 or reported its quota exhausted.
    pub quota: Dur,
    /// 429 without Retry-After.
    pub rate_limit: Dur,
    /// A (channel, model) answered 404.
    pub model: Dur,
}

impl Default for CooldownConfig {
    fn default() -> Self {
        Self {
            base: Dur::secs(5),
            max: Dur::secs(300),
            auth: Dur::secs(3600),
            quota: Dur::secs(3600),
            rate_limit: Dur::secs(10),
            model: Dur::secs(600),
        }
    }
}

/// Weights of the `balanced` strategy's score.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancedWeights {
    pub cost: f64,
    pub speed: f64,
    pub quality: f64,
    pub reliability: f64,
}

impl Default for BalancedWeights {
    fn default() -> Self {
        Self { cost: 0.3, speed: 0.3, quality: 0.2, reliability: 0.2 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Dur,
    /// Time from sending the request to the response headers.
    pub first_byte_timeout: Dur,
    /// Longest silence between two body chunks.
    pub idle_timeout: Dur,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self { connect_timeout: Dur::secs(10), first_byte_timeout: Dur::secs(300), idle_timeout: Dur::secs(300) }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Re-discover models this often while serving. Absent: only on demand.
    pub interval: Option<Dur>,
    /// Bound on each model-list request (default 20s; `router discover --timeout` overrides it).
    pub timeout: Option<Dur>,
}

impl DiscoveryConfig {
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(std::time::Duration::from_secs(20), |d| d.0)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSettings {
    /// Refresh balances this often while serving. Absent: only on demand.
    pub interval: Option<Dur>,
    /// Results younger than this are served from the store by `router balance check`.
    pub ttl: Option<Dur>,
    /// Balance history older than this many days is deleted when new results are saved (default 180; 0: keep
    /// everything).
    pub history_days: Option<u32>,
}

impl BalanceSettings {
    pub fn history_days(&self) -> u32 {
        self.history_days.unwrap_or(180)
    }
}

/// The wire an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChannelProtocol {
    #[default]
    Openai,
    Anthropic,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// Google Gemini: the native API for Gemini clients, its OpenAI-compatible endpoint for everything else.
    Gemini,
}

impl ChannelProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelProtocol::Openai => "openai",
            ChannelProtocol::Anthropic => "anthropic",
            ChannelProtocol::Azure => "azure",
            ChannelProtocol::Gemini => "gemini",
        }
    }

    /// The wire format requests and responses use (for a `gemini` channel: its OpenAI-compatible side, which
    /// every client but a Gemini one reaches).
    pub fn wire(self) -> crate::protocol::Protocol {
        match self {
            ChannelProtocol::Anthropic => crate::protocol::Protocol::Anthropic,
            _ => crate::protocol::Protocol::Openai,
        }
    }

    /// Whether a client of `client` protocol reaches this channel untranslated: its wire, plus Gemini's native
    /// API on a `gemini` channel.
    pub fn speaks(self, client: crate::protocol::Protocol) -> bool {
        self.wire() == client || (self == ChannelProtocol::Gemini && client == crate::protocol::Protocol::Gemini)
    }

    /// The base URL used when a channel gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ChannelProtocol::Openai => Some("https://api.openai.com/v1"),
            ChannelProtocol::Anthropic => Some("https://api.anthropic.com"),
            ChannelProtocol::Gemini => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
            ChannelProtocol::Azure => None,
        }
    }
}

/// One provider account or reseller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(default)]
    pub protocol: ChannelProtocol,
    /// Shorthand for one endpoint named `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Keys of the implicit `default` endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
    /// Lower is tried first.
    #[serde(default)]
    pub priority: i64,
    /// Share of traffic inside a priority tier.
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Model ids this channel serves (used when discovery is off or fails). A trailing `*` matches a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// `requested name -> upstream model id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
    /// USD per 1M tokens, by upstream model id (`*` for every model of the channel).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pricing: BTreeMap<String, Price>,
    /// Context window in tokens, by upstream model id (`*` for every model of the channel); overrides discovery.
    /// A request whose estimated input plus `max_tokens` exceeds it skips this candidate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_window: BTreeMap<String, u32>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra headers sent with every upstream request of this channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Azure `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// How `/v1/responses` requests reach this channel: `native` (it has a Responses API) or `chat` (translated
    /// to chat completions). Default: native for api.openai.com and Azure, chat for everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<ResponsesApi>,
    /// How to ask this channel for its credit (default: guessed from the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<ChannelBalanceConfig>,
    /// Where an imported channel came from (e.g. `oneapi:one-api:sqlite:/path/one-api.db#12`); re-import matches on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why the channel is disabled, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

fn one() -> u32 {
    1
}

fn is_one(w: &u32) -> bool {
    *w == 1
}

fn yes() -> bool {
    true
}

impl ChannelConfig {
    /// A channel with defaults for everything but its name and protocol.
    pub fn new(name: impl Into<String>, protocol: ChannelProtocol) -> Self {
        Self {
            name: name.into(),
            protocol,
            base_url: None,
            keys: Vec::new(),
            endpoints: Vec::new(),
            priority: 0,
            weight: 1,
            tags: Vec::new(),
            models: Vec::new(),
            aliases: BTreeMap::new(),
            pricing: BTreeMap::new(),
            context_window: BTreeMap::new(),
            enabled: true,
            headers: BTreeMap::new(),
            api_version: None,
            responses_api: None,
            balance: None,
            source: None,
            disabled_reason: None,
        }
    }
}

/// Whether a channel has its own Responses API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesApi {
    Native,
    Chat,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelBalanceConfig {
    /// `openrouter`, `deepseek`, `siliconflow`, `moonshot`, `oneapi`, `newapi`, `openai`, `none`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One base URL inside a channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyConfig>,
    /// Lower is tried first inside the channel.
    #[serde(default)]
    pub priority: i64,
    /// Share of the channel's traffic among endpoints of the same priority (weighted random order; default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// false: only used when pinned with `X-Router-Channel: channel/endpoint`.
    #[serde(default = "yes")]
    pub failover_enabled: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
    /// Cheap GET used to measure latency (default: `/models` for openai, `/v1/models` for anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_test_path: Option<String>,
}

/// An upstream key: a bare string, or `{name, key}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeyConfig {
    Bare(Secret),
    Named {
        #[serde(default)]
        name: Option<String>,
        key: Secret,
        #[serde(default = "yes")]
        enabled: bool,
    },
}

impl KeyConfig {
    pub fn secret(&self) -> &Secret {
        match self {
            KeyConfig::Bare(s) => s,
            KeyConfig::Named { key, .. } => key,
        }
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            KeyConfig::Bare(_) => None,
            KeyConfig::Named { name, .. } => name.as_deref(),
        }
    }
    pub fn enabled(&self) -> bool {
        match self {
            KeyConfig::Bare(_) => true,
            KeyConfig::Named { enabled, .. } => *enabled,
        }
    }
}

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Writing the cache with the default (5-minute) TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Writing the cache with a 1-hour TTL (Anthropic `ttl: "1h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
}

impl Price {
    /// Anthropic's cache-write multipliers, applied where a price leaves them unset: a 5-minute write costs 1.25x
    /// the input price, a 1-hour write 2x.
    pub fn with_anthropic_cache_defaults(mut self) -> Price {
        self.cache_write.get_or_insert(self.input * 1.25);
        self.cache_write_1h.get_or_insert(self.input * 2.0);
        self
    }
}

/// A secret string: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The plaintext, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A duration written as `250ms`, `5s`, `10m`, `1h` or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    pub fn parse(s: &str) -> Option<Dur> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().ok()?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return None,
        };
        (secs.is_finite() && secs >= 0.0).then(|| Dur(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) if n >= 0.0 && n.is_finite() => Ok(Dur(Duration::from_secs_f64(n))),
            Raw::N(n) => Err(serde::de::Error::custom(format!("invalid duration {n}"))),
            Raw::S(s) => Dur::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("invalid duration `{s}` (use e.g. 250ms, 5s, 10m, 1h)"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units() {
        assert_eq!(Dur::parse("250ms"), Some(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::parse("5s"), Some(Dur::secs(5)));
        assert_eq!(Dur::parse("10m"), Some(Dur::secs(600)));
        assert_eq!(Dur::parse("1h"), Some(Dur::secs(3600)));
        assert_eq!(Dur::parse("7"), Some(Dur::secs(7)));
        assert_eq!(Dur::parse("5 parsecs"), None);
        assert_eq!(Dur::secs(600).to_string(), "10m");
    }

    #[test]
    fn secret_debug_hides_plaintext() {
        let k = KeyConfig::Named { name: Some("a".into()), key: Secret::new("sk-live-123"), enabled: true };
        assert!(!format!("{k:?}").contains("sk-live"));
    }

    #[test]
    fn strategy_names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(Strategy::parse("cost-first"), Some(Strategy::CostFirst));
    }
}

/// `alerts:`: webhook targets and the conditions that send to them. Nothing is sent without a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub webhooks: Vec<WebhookConfig>,
    /// One alert per condition per this window (the same condition again inside it is not sent).
    pub window: Dur,
    /// A checked balance below this (in its own currency) alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_below: Option<f64>,
    /// A channel or endpoint that starts cooling this many times within `window` alerts (0: off).
    pub cooling_times: u32,
    /// A request for which every candidate failed alerts (per model).
    pub all_failed: bool,
    /// A gateway key that has spent this percentage of its budget alerts (0: off).
    pub budget_percent: f64,
    /// Per delivery attempt.
    pub timeout: Dur,
    /// Attempts per alert and target (the first included).
    pub attempts: u32,
}

impl AlertsConfig {
    /// Checks the `alerts:` section: (field, message, hint) of the first problem. Never echoes a URL.
    pub fn check(&self) -> Result<(), (String, String, &'static str)> {
        for (i, w) in self.webhooks.iter().enumerate() {
            match reqwest::Url::parse(w.url.expose()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => {
                    return Err((
                        format!("webhooks[{i}].url"),
                        "is not an http(s) URL".into(),
                        "write the webhook's full URL, e.g. https://hooks.slack.com/services/...",
                    ));
                }
            }
        }
        if self.attempts == 0 {
            return Err(("attempts".into(), "must be at least 1".into(), "3 tries a target three times"));
        }
        if !(0.0..=1000.0).contains(&self.budget_percent) {
            return Err(("budget_percent".into(), "must be between 0 and 1000".into(), "80 alerts at 80% of a budget"));
        }
        Ok(())
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            window: Dur::secs(3600),
            balance_below: None,
            cooling_times: 5,
            all_failed: true,
            budget_percent: 80.0,
            timeout: Dur::secs(5),
            attempts: 3,
        }
    }
}

/// One webhook target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where alerts are POSTed. May hold a secret token (Slack): never logged.
    pub url: Secret,
    #[serde(default)]
    pub format: WebhookFormat,
    /// A name for logs and `router alerts test` (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The payload a webhook gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"alert": ..., "severity": ..., "summary": ..., "labels": {...}, "time": ...}`.
    #[default]
    Json,
    /// `{"text": "..."}`: Slack incoming webhooks and the many services that accept the same.
    Slack,
}
