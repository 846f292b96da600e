//! Mapping One-API / New-API `channels` rows to our channels.
//!
//! Owns flavour detection, the two channel-type tables (their numbers collide from 2 upward), base-URL
//! normalisation to our convention (openai bases include the version path, anthropic bases are the host root),
//! grouping of one-row-per-key channels, multi-key splitting and status mapping. Pure: no I/O, and no message it
//! produces ever contains a key (rows are named by id and name only).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value as Json;

use super::source::{Row, Table};
use super::{Flavour, ImportPlan, ImportedChannel, OneApiOptions, Skipped};
use crate::config::{ChannelConfig, ChannelProtocol, EndpointConfig, KeyConfig, Secret};

/// How a channel type is served by us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// OpenAI wire. `host` is the foreign default base ("" = the row must give one); `append` turns a foreign base
    /// into ours (One-API appends `/v1/chat/completions` to most bases; we append `/chat/completions`).
    Openai {
        host: &'static str,
        append: &'static str,
    },
    Anthropic,
    Azure,
    /// Native Gemini: served through Google's OpenAI-compatible endpoint (our `gemini` protocol).
    Gemini,
    /// One-API 51: the base already is Google's OpenAI-compatible endpoint.
    GeminiOpenai,
    /// Workers AI: the account id goes into the path.
    Cloudflare {
        host: &'static str,
    },
    Skip(&'static str),
}

struct TypeInfo {
    name: &'static str,
    wire: Wire,
    /// Said in the channel's notes: how the import changed the way the upstream is called.
    note: Option<&'static str>,
}

const fn oai(name: &'static str, host: &'static str) -> TypeInfo {
    TypeInfo { name, wire: Wire::Openai { host, append: "/v1" }, note: None }
}
const fn oai_at(name: &'static str, host: &'static str, append: &'static str) -> TypeInfo {
    TypeInfo { name, wire: Wire::Openai { host, append }, note: None }
}
const fn with_note(mut t: TypeInfo, note: &'static str) -> TypeInfo {
    t.note = Some(note);
    t
}
const fn skip(name: &'static str, reason: &'static str) -> TypeInfo {
    TypeInfo { name, wire: Wire::Skip(reason), note: None }
}
const fn wire(name: &'static str, wire: Wire) -> TypeInfo {
    TypeInfo { name, wire, note: None }
}

const MEDIA: &str = "media-only channel type (image / video / music tasks), not a chat API";
const DASHSCOPE_NOTE: &str = "native DashScope API replaced by DashScope's OpenAI-compatible mode";
const COHERE_NOTE: &str = "native Cohere API replaced by Cohere's OpenAI compatibility API";
const MINIMAX_NOTE: &str = "served through MiniMax's OpenAI-compatible /v1/chat/completions";

/// one-api `relay/channeltype/define.go` (@8df4a267) with `url.go` defaults.
fn oneapi_type(t: i64) -> TypeInfo {
    match t {
        1 => oai("OpenAI", "https://api.openai.com"),
        2 => oai("API2D", "https://oa.api2d.net"),
        3 => wire("Azure", Wire::Azure),
        4 => oai("CloseAI", "https://api.closeai-proxy.xyz"),
        5 => oai("OpenAISB", "https://api.openai-sb.com"),
        6 => oai("OpenAIMax", "https://api.openaimax.com"),
        7 => oai("OhMyGPT", "https://api.ohmygpt.com"),
        8 => oai("Custom", ""),
        9 => oai("Ails", "https://api.caipacity.com"),
        10 => oai("AIProxy", "https://api.aiproxy.io"),
        11 => skip("PaLM", "the PaLM API was retired by Google"),
        12 => oai("API2GPT", "https://api.api2gpt.com"),
        13 => oai("AIGC2D", "https://api.aigc2d.com"),
        14 => wire("Anthropic", Wire::Anthropic),
        15 => {
            skip("Baidu", "native Baidu ERNIE API (AK/SK token exchange); re-create it as Baidu V2 (OpenAI-compatible)")
        }
        16 => with_note(
            oai_at("Zhipu", "https://open.bigmodel.cn", "/api/paas/v4"),
            "served through Zhipu's OpenAI-compatible v4 API with the key as Bearer token (One-API signed a JWT)",
        ),
        17 => with_note(oai_at("Ali", "https://dashscope.aliyuncs.com", "/compatible-mode/v1"), DASHSCOPE_NOTE),
        18 => skip("Xunfei", "native Xunfei Spark WebSocket API; re-create it as Xunfei V2 (OpenAI-compatible)"),
        19 => oai("AI360", "https://ai.360.cn"),
        20 => oai("OpenRouter", "https://openrouter.ai/api"),
        21 => skip("AIProxyLibrary", "native AIProxy knowledge-library API"),
        22 => oai("FastGPT", "https://fastgpt.run/api/openapi"),
        23 => skip("Tencent", "native Tencent Hunyuan API (TC3 request signing)"),
        24 => wire("Gemini", Wire::Gemini),
        25 => oai("Moonshot", "https://api.moonshot.cn"),
        26 => oai("Baichuan", "https://api.baichuan-ai.com"),
        27 => with_note(oai("Minimax", "https://api.minimax.chat"), MINIMAX_NOTE),
        28 => oai("Mistral", "https://api.mistral.ai"),
        29 => oai("Groq", "https://api.groq.com/openai"),
        30 => with_note(
            oai("Ollama", "http://localhost:11434"),
            "native Ollama API replaced by Ollama's OpenAI-compatible /v1",
        ),
        31 => oai("LingYiWanWu", "https://api.lingyiwanwu.com"),
        32 => oai("StepFun", "https://api.stepfun.com"),
        33 => skip("AwsClaude", "AWS Bedrock needs SigV4 request signing"),
        34 => skip("Coze", "native Coze bot API"),
        35 => with_note(oai_at("Cohere", "https://api.cohere.ai", "/compatibility/v1"), COHERE_NOTE),
        36 => oai("DeepSeek", "https://api.deepseek.com"),
        37 => wire("Cloudflare", Wire::Cloudflare { host: "https://api.cloudflare.com" }),
        38 => skip("DeepL", "DeepL translation API, not a chat API"),
        39 => oai("TogetherAI", "https://api.together.xyz"),
        40 => oai_at("Doubao", "https://ark.cn-beijing.volces.com", "/api/v3"),
        41 => oai_at("Novita", "https://api.novita.ai/v3/openai", ""),
        42 => skip("VertexAI", "Google Vertex AI needs service-account (OAuth) authentication"),
        43 => skip("Proxy", "raw pass-through proxy channel"),
        44 => oai("SiliconFlow", "https://api.siliconflow.cn"),
        45 => oai("XAI", "https://api.x.ai"),
        46 => skip("Replicate", "Replicate predictions API, not a chat API"),
        47 => oai_at("BaiduV2", "https://qianfan.baidubce.com", "/v2"),
        48 => oai("XunfeiV2", "https://spark-api-open.xf-yun.com"),
        49 => oai_at("AliBailian", "https://dashscope.aliyuncs.com", "/compatible-mode/v1"),
        50 => oai_at("OpenAICompatible", "", ""),
        51 => wire("GeminiOpenAICompatible", Wire::GeminiOpenai),
        _ => skip("Unknown", "unknown channel type"),
    }
}

/// new-api `common/constants.go` (@ef8ae4db) and `constant/channel.go` (later types).
fn newapi_type(t: i64) -> TypeInfo {
    match t {
        1 => oai("OpenAI", "https://api.openai.com"),
        2 => skip("Midjourney", MEDIA),
        3 => wire("Azure", Wire::Azure),
        4 => oai("Ollama", "http://localhost:11434"),
        5 => skip("MidjourneyPlus", MEDIA),
        6 => oai("OpenAIMax", "https://api.openaimax.com"),
        7 => oai("OhMyGPT", "https://api.ohmygpt.com"),
        8 => oai("Custom", ""),
        9 => oai("AILS", "https://api.caipacity.com"),
        10 => oai("AIProxy", "https://api.aiproxy.io"),
        11 => skip("PaLM", "the PaLM API was retired by Google"),
        12 => oai("API2GPT", "https://api.api2gpt.com"),
        13 => oai("AIGC2D", "https://api.aigc2d.com"),
        14 => wire("Anthropic", Wire::Anthropic),
        15 => {
            skip("Baidu", "native Baidu ERNIE API (AK/SK token exchange); re-create it as Baidu V2 (OpenAI-compatible)")
        }
        16 => skip("Zhipu", "native Zhipu v3 API (JWT signing); re-create it as Zhipu v4 (OpenAI-compatible)"),
        17 => with_note(oai_at("Ali", "https://dashscope.aliyuncs.com", "/compatible-mode/v1"), DASHSCOPE_NOTE),
        18 => skip("Xunfei", "native Xunfei Spark WebSocket API"),
        19 => oai("360", "https://api.360.cn"),
        20 => oai("OpenRouter", "https://openrouter.ai/api"),
        21 => skip("AIProxyLibrary", "native AIProxy knowledge-library API"),
        22 => oai("FastGPT", "https://fastgpt.run/api/openapi"),
        23 => skip("Tencent", "native Tencent Hunyuan API (TC3 request signing)"),
        24 => wire("Gemini", Wire::Gemini),
        25 => oai("Moonshot", "https://api.moonshot.cn"),
        26 => oai_at("ZhipuV4", "https://open.bigmodel.cn", "/api/paas/v4"),
        27 => oai_at("Perplexity", "https://api.perplexity.ai", ""),
        31 => oai("LingYiWanWu", "https://api.lingyiwanwu.com"),
        33 => skip("AWS", "AWS Bedrock needs SigV4 request signing"),
        34 => with_note(oai_at("Cohere", "https://api.cohere.ai", "/compatibility/v1"), COHERE_NOTE),
        35 => with_note(oai("MiniMax", "https://api.minimax.chat"), MINIMAX_NOTE),
        36 => skip("SunoAPI", MEDIA),
        37 => skip("Dify", "native Dify application API"),
        38 => with_note(oai("Jina", "https://api.jina.ai"), "Jina serves embeddings and rerank only"),
        39 => wire("Cloudflare", Wire::Cloudflare { host: "https://api.cloudflare.com" }),
        40 => oai("SiliconFlow", "https://api.siliconflow.cn"),
        41 => skip("VertexAI", "Google Vertex AI needs service-account (OAuth) authentication"),
        42 => oai("Mistral", "https://api.mistral.ai"),
        43 => oai("DeepSeek", "https://api.deepseek.com"),
        44 => skip("MokaAI", "MokaAI embeddings API is not OpenAI-compatible"),
        45 => oai_at("VolcEngine", "https://ark.cn-beijing.volces.com", "/api/v3"),
        46 => oai_at("BaiduV2", "https://qianfan.baidubce.com", "/v2"),
        47 => oai("Xinference", ""),
        48 => oai("xAI", "https://api.x.ai"),
        49 => skip("Coze", "native Coze bot API"),
        50 => skip("Kling", MEDIA),
        51 => skip("Jimeng", MEDIA),
        52 => skip("Vidu", MEDIA),
        53 => oai("Submodel", "https://llm.submodel.ai"),
        54 => skip("DoubaoVideo", MEDIA),
        55 => skip("Sora", MEDIA),
        56 => skip("Replicate", "Replicate predictions API, not a chat API"),
        57 => skip("Codex", "ChatGPT Codex (account login), not a plain API"),
        _ => skip("Unknown", "unknown channel type"),
    }
}

fn type_info(flavour: Flavour, t: i64) -> TypeInfo {
    match flavour {
        Flavour::OneApi => oneapi_type(t),
        Flavour::NewApi => newapi_type(t),
    }
}

/// Tells the flavours apart by their columns; the warning explains a guess.
pub fn detect(columns: &[String]) -> (Flavour, Option<String>) {
    let has = |c: &str| columns.iter().any(|x| x == c);
    let one = ["config", "system_prompt"].into_iter().filter(|c| has(c)).count();
    let new =
        ["auto_ban", "channel_info", "other_info", "setting", "settings", "tag", "test_model", "open_ai_organization"]
            .into_iter()
            .filter(|c| has(c))
            .count();
    match (one, new) {
        (0, 0) => (
            Flavour::OneApi,
            Some("the `channels` table has no flavour-specific columns; assuming one-api (use --flavor to override)".into()),
        ),
        (_, 0) => (Flavour::OneApi, None),
        (0, _) => (Flavour::NewApi, None),
        _ => (
            Flavour::NewApi,
            Some("the `channels` table has columns of both one-api and new-api; assuming new-api (use --flavor to override)".into()),
        ),
    }
}

/// Per-row columns: they may differ between the rows of one grouped channel.
const PER_ROW: [&str; 15] = [
    "id",
    "key",
    "status",
    "priority",
    "weight",
    "created_time",
    "test_time",
    "response_time",
    "balance",
    "balance_updated_time",
    "used_quota",
    "other_info",
    "channel_info",
    "remark",
    "test_model",
];

/// One key of a row, with its own status.
struct RowKey {
    secret: Secret,
    /// 1-based position inside a new-api multi-key row; `None` for a one-key row.
    index: Option<usize>,
    enabled: bool,
    disabled_reason: Option<String>,
}

/// A row that maps to something we can serve.
struct Mapped {
    id: i64,
    name: String,
    signature: String,
    enabled: bool,
    disabled_reason: Option<String>,
    priority: i64,
    weight: i64,
    keys: Vec<RowKey>,
    protocol: ChannelProtocol,
    base_url: String,
    api_version: Option<String>,
    models: Vec<String>,
    aliases: BTreeMap<String, String>,
    tags: Vec<String>,
    headers: BTreeMap<String, String>,
    notes: Vec<String>,
}

/// Builds the plan from the rows of `channels` (sorted by id).
/// `database` is the source's identity ([`super::source::Source::identity`]), part of each channel's `source`.
pub fn plan(table: &Table, opts: &OneApiOptions, source: &str, database: &str) -> ImportPlan {
    let mut warnings = Vec::new();
    let flavour = match opts.flavour {
        Some(f) => f,
        None => {
            let (f, w) = detect(&table.columns);
            warnings.extend(w);
            f
        }
    };
    let mut skipped = Vec::new();
    let mut groups: Vec<Vec<Mapped>> = Vec::new();
    let mut by_signature: HashMap<String, usize> = HashMap::new();
    for row in &table.rows {
        let id = row.int("id").unwrap_or_default();
        let kind = row.int("type").unwrap_or_default();
        let name = row.text("name").unwrap_or_default();
        match map_row(flavour, row, &mut warnings) {
            Ok(m) => match by_signature.get(&m.signature) {
                Some(&g) => groups[g].push(m),
                None => {
                    by_signature.insert(m.signature.clone(), groups.len());
                    groups.push(vec![m]);
                }
            },
            Err(reason) => {
                skipped.push(Skipped { id, name, kind, type_name: type_info(flavour, kind).name.into(), reason })
            }
        }
    }

    let prefix = opts.prefix.as_deref().unwrap_or("");
    let mut taken: HashSet<String> = HashSet::new();
    let mut channels = Vec::new();
    for group in groups {
        let mut ch = build_channel(flavour, database, group);
        let first_id = ch.source_ids[0];
        ch.config.name = unique_name(&format!("{prefix}{}", clean_name(&ch.config.name, first_id)), first_id, &taken);
        let mut names = HashSet::new();
        if let Err((field, message, _)) = crate::config::validate_channel(&ch.config, &mut names) {
            let info = type_info(flavour, table_type(table, first_id));
            for &id in &ch.source_ids {
                skipped.push(Skipped {
                    id,
                    name: ch.config.name.clone(),
                    kind: table_type(table, id),
                    type_name: info.name.into(),
                    reason: if field.is_empty() { message.clone() } else { format!("{field}: {message}") },
                });
            }
            continue;
        }
        taken.insert(ch.config.name.clone());
        channels.push(ch);
    }
    skipped.sort_by_key(|s| s.id);
    ImportPlan { flavour, source: source.into(), channels, skipped, warnings }
}

fn table_type(table: &Table, id: i64) -> i64 {
    table.rows.iter().find(|r| r.int("id") == Some(id)).and_then(|r| r.int("type")).unwrap_or_default()
}

/// `row 12 (name)`: how warnings name a row.
fn row_label(id: i64, name: &str) -> String {
    format!("row {id} ({name})")
}

/// One row being mapped: its columns, its flavour, and where warnings about it go (naming it by id and name).
struct RowCx<'a> {
    flavour: Flavour,
    row: &'a Row,
    label: String,
    warnings: &'a mut Vec<String>,
}

impl RowCx<'_> {
    fn warn(&mut self, what: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {what}", self.label));
    }

    /// Parses a JSON column; empty, `{}`, `null` and NULL are `None`; bad JSON warns (saying `effect`) and is
    /// `None`.
    fn json(&mut self, col: &str, effect: &str) -> Option<Json> {
        let text = self.row.nonempty(col)?;
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::Null) => None,
            Ok(Json::Object(m)) if m.is_empty() => None,
            Ok(v) => Some(v),
            Err(e) => {
                self.warn(format_args!("`{col}` is not valid JSON ({e}); {effect}"));
                None
            }
        }
    }

    /// A JSON column read only in one flavour.
    fn json_in(&mut self, flavour: Flavour, col: &str, effect: &str) -> Option<Json> {
        if self.flavour == flavour { self.json(col, effect) } else { None }
    }
}

fn json_str<'a>(v: Option<&'a Json>, field: &str) -> Option<&'a str> {
    v?.get(field)?.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn status_reason(flavour: Flavour, status: i64, detail: Option<&str>) -> String {
    let base = match status {
        2 => format!("disabled manually in {flavour}"),
        3 => format!("auto-disabled by {flavour}"),
        s => format!("status {s} in {flavour} (not enabled)"),
    };
    match detail {
        Some(d) => format!("{base}: {d}"),
        None => base,
    }
}

/// A row as one of our channels' parts, or why it cannot be served: where to ([`endpoint`]), with which keys
/// ([`row_keys`]), whether it is on ([`row_status`]), which models ([`models_and_aliases`]), tags, headers, and
/// notes on what was not imported ([`unsupported`]).
fn map_row(flavour: Flavour, row: &Row, warnings: &mut Vec<String>) -> Result<Mapped, String> {
    let id = row.int("id").unwrap_or_default();
    let name = row.text("name").unwrap_or_default();
    let mut cx = RowCx { flavour, row, label: row_label(id, &name), warnings };
    let kind = row.int("type").unwrap_or_default();
    let info = type_info(flavour, kind);
    let mut notes: Vec<String> = info.note.map(|n| vec![n.to_string()]).unwrap_or_default();
    let (protocol, base_url, api_version) = endpoint(&mut cx, kind, &info, &mut notes)?;
    let keys = row_keys(&mut cx, &base_url)?;
    let (enabled, disabled_reason) = row_status(&mut cx);
    let (models, aliases) = models_and_aliases(&mut cx, protocol);
    let tags = tags(row);
    let headers = headers(&mut cx);
    unsupported(&mut cx, &mut notes);
    Ok(Mapped {
        id,
        name,
        signature: signature(row),
        enabled,
        disabled_reason,
        priority: row.int("priority").unwrap_or(0),
        weight: row.int("weight").unwrap_or(0),
        keys,
        protocol,
        base_url,
        api_version,
        models,
        aliases,
        tags,
        headers,
        notes,
    })
}

/// Protocol, base URL (in our convention) and Azure api-version of a row's channel type; `Err` for types we do
/// not serve and rows without what their type needs.
fn endpoint(
    cx: &mut RowCx<'_>,
    kind: i64,
    info: &TypeInfo,
    notes: &mut Vec<String>,
) -> Result<(ChannelProtocol, String, Option<String>), String> {
    let row = cx.row;
    let config = cx.json_in(Flavour::OneApi, "config", "its settings (api_version, account id, ...) are ignored");
    let given_base = row.nonempty("base_url").map(|b| b.trim_end_matches('/').to_string());
    let (protocol, base_url, api_version) = match info.wire {
        Wire::Skip(reason) => return Err(reason.into()),
        Wire::Openai { host, append } => {
            let base = match (&given_base, host) {
                (Some(b), _) if kind == 1 && b.contains("gateway.ai.cloudflare.com") => b.clone(),
                (Some(b), _) if !append.is_empty() && b.ends_with(append) => {
                    notes.push(format!("base_url already ended in `{append}`; kept as is"));
                    b.clone()
                }
                (Some(b), _) => format!("{b}{append}"),
                (None, "") => return Err(format!("{} channel without a base URL", info.name)),
                (None, h) => format!("{h}{append}"),
            };
            (ChannelProtocol::Openai, base, None)
        }
        Wire::Anthropic => {
            (ChannelProtocol::Anthropic, given_base.unwrap_or_else(|| "https://api.anthropic.com".into()), None)
        }
        Wire::Gemini => {
            let base = match &given_base {
                Some(b) => format!("{b}/v1beta/openai"),
                None => "https://generativelanguage.googleapis.com/v1beta/openai".into(),
            };
            notes.push("native Gemini API replaced by Gemini's OpenAI-compatible endpoint".into());
            (ChannelProtocol::Gemini, base, None)
        }
        Wire::GeminiOpenai => (
            ChannelProtocol::Gemini,
            given_base.unwrap_or_else(|| "https://generativelanguage.googleapis.com/v1beta/openai".into()),
            None,
        ),
        Wire::Azure => {
            let Some(base) = given_base else {
                return Err("Azure channel without a base URL (its resource endpoint)".into());
            };
            let version =
                json_str(config.as_ref(), "api_version").map(str::to_string).or_else(|| row.nonempty("other"));
            if version.is_none() {
                notes.push("no Azure api-version in the row; the router's default applies".into());
            }
            notes.push("Azure deployment names are the model names without `.`, as One-API and New-API do".into());
            (ChannelProtocol::Azure, base, version)
        }
        Wire::Cloudflare { host } => {
            let account = match cx.flavour {
                Flavour::OneApi => json_str(config.as_ref(), "user_id").map(str::to_string),
                Flavour::NewApi => row.nonempty("other"),
            };
            let Some(account) = account else {
                return Err("Cloudflare channel without an account id".into());
            };
            let host = given_base.unwrap_or_else(|| host.into());
            (ChannelProtocol::Openai, format!("{host}/client/v4/accounts/{account}/ai/v1"), None)
        }
    };
    match reqwest::Url::parse(&base_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => return Err(format!("base URL `{base_url}` is not an http(s) URL")),
    }
    Ok((protocol, base_url, api_version))
}

/// Keys: one per row in one-api; new-api multi-key rows join them with newlines and keep a status per key in
/// `channel_info`. No key is an error unless the upstream is local.
fn row_keys(cx: &mut RowCx<'_>, base_url: &str) -> Result<Vec<RowKey>, String> {
    let raw_key = cx.row.text("key").unwrap_or_default();
    let secrets: Vec<&str> = raw_key.split('\n').map(str::trim).filter(|k| !k.is_empty()).collect();
    let info_json = cx.json_in(Flavour::NewApi, "channel_info", "all its keys are imported as enabled");
    let multi = secrets.len() > 1
        || info_json.as_ref().and_then(|i| i.get("is_multi_key")).and_then(Json::as_bool) == Some(true);
    let flavour = cx.flavour;
    let key_status = |i: usize| -> (bool, Option<String>) {
        let Some(ci) = &info_json else { return (true, None) };
        let idx = i.to_string();
        let status = ci.get("multi_key_status_list").and_then(|l| l.get(&idx)).and_then(Json::as_i64).unwrap_or(1);
        let reason = ci.get("multi_key_disabled_reason").and_then(|l| l.get(&idx)).and_then(Json::as_str);
        (status == 1, (status != 1).then(|| status_reason(flavour, status, reason)))
    };
    let keys: Vec<RowKey> = secrets
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (enabled, disabled_reason) = if multi { key_status(i) } else { (true, None) };
            RowKey { secret: Secret::new(*k), index: multi.then_some(i + 1), enabled, disabled_reason }
        })
        .collect();
    if keys.is_empty() && !crate::config::is_local_url(base_url) {
        return Err("no upstream key".into());
    }
    Ok(keys)
}

/// Enabled (status 1), or disabled with the reason (new-api keeps it in `other_info`).
fn row_status(cx: &mut RowCx<'_>) -> (bool, Option<String>) {
    let status = cx.row.int("status").unwrap_or(1);
    let other_info = cx.json_in(Flavour::NewApi, "other_info", "the disable reason is not imported");
    let enabled = status == 1;
    let reason = json_str(other_info.as_ref(), "status_reason");
    (enabled, (!enabled).then(|| status_reason(cx.flavour, status, reason)))
}

/// Models and aliases: model_mapping is applied after selection, so `models` holds requested names; ours holds
/// upstream ids and the aliases lead there (Azure ids without `.`).
fn models_and_aliases(cx: &mut RowCx<'_>, protocol: ChannelProtocol) -> (Vec<String>, BTreeMap<String, String>) {
    let mut aliases = BTreeMap::new();
    match cx.json("model_mapping", "imported without aliases") {
        Some(Json::Object(m)) => {
            for (from, to) in m {
                match to.as_str().map(str::trim) {
                    Some(to) if !to.is_empty() && to != from.trim() && !from.trim().is_empty() => {
                        aliases.insert(from.trim().to_string(), to.to_string());
                    }
                    Some(_) => {}
                    None => cx.warn(format_args!("model_mapping entry `{from}` is not a string; skipped")),
                }
            }
        }
        Some(_) => cx.warn("model_mapping is not a JSON object; imported without aliases"),
        None => {}
    }
    let azure = protocol == ChannelProtocol::Azure;
    if azure {
        for v in aliases.values_mut() {
            *v = v.replace('.', "");
        }
    }
    let mut models: Vec<String> = Vec::new();
    for m in cx.row.text("models").unwrap_or_default().split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mut upstream = aliases.get(m).cloned().unwrap_or_else(|| m.to_string());
        if azure {
            upstream = upstream.replace('.', "");
        }
        if upstream != m {
            aliases.insert(m.to_string(), upstream.clone());
        }
        if !models.contains(&upstream) {
            models.push(upstream);
        }
    }
    (models, aliases)
}

/// `group:<g>` per group of the row, and its new-api `tag`.
fn tags(row: &Row) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for g in row.text("group").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let t = format!("group:{g}");
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if let Some(tag) = row.nonempty("tag")
        && !tags.contains(&tag)
    {
        tags.push(tag);
    }
    tags
}

/// `OpenAI-Organization` and the fixed headers of `header_override` (placeholders are not imported).
fn headers(cx: &mut RowCx<'_>) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    if let Some(org) = cx.row.nonempty("open_ai_organization") {
        headers.insert("OpenAI-Organization".to_string(), org);
    }
    match cx.json("header_override", "its headers are not imported") {
        Some(Json::Object(m)) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(v) if !v.contains('{') => {
                        headers.insert(k, v.to_string());
                    }
                    _ => cx.warn(format_args!(
                        "header_override `{k}` uses a placeholder or is not a string; not imported"
                    )),
                }
            }
        }
        Some(_) => cx.warn("header_override is not a JSON object; not imported"),
        None => {}
    }
    headers
}

/// Notes on the row's settings the router has no equivalent for.
fn unsupported(cx: &mut RowCx<'_>, notes: &mut Vec<String>) {
    if cx.row.nonempty("system_prompt").is_some() {
        notes.push("system_prompt not imported (the router does not inject prompts)".into());
    }
    if cx.json("param_override", "ignored").is_some() {
        notes.push("param_override not imported".into());
    }
    if cx.json("status_code_mapping", "ignored").is_some() {
        notes.push("status_code_mapping not imported (the router classifies upstream errors itself)".into());
    }
    let setting = cx.json("setting", "ignored");
    if json_str(setting.as_ref(), "proxy").is_some() {
        notes.push("setting.proxy (per-channel HTTP proxy) not imported".into());
    }
    if let Some(s) = &setting
        && ["force_format", "thinking_to_content", "pass_through_body_enabled"]
            .iter()
            .any(|f| s.get(*f).and_then(Json::as_bool) == Some(true))
    {
        notes.push("new-api `setting` flags (force_format, thinking_to_content, ...) not imported".into());
    }
    if cx.row.int("auto_ban") == Some(0) {
        notes.push("auto_ban was off: the router cools failing keys down instead of disabling them".into());
    }
    if let Some(r) = cx.row.nonempty("remark") {
        notes.push(format!("remark: {r}"));
    }
}

/// What rows must share to be one channel: every column but the per-row ones.
fn signature(row: &Row) -> String {
    row.0
        .iter()
        .filter(|(c, _)| !PER_ROW.contains(&c.as_str()))
        .map(|(c, _)| format!("{c}={}", row.text(c).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\u{1}")
}

/// One channel from rows with identical settings (one row unless One-API split a multi-key input).
fn build_channel(flavour: Flavour, database: &str, rows: Vec<Mapped>) -> ImportedChannel {
    let any_enabled = rows.iter().any(|r| r.enabled);
    let grouped = rows.len() > 1;
    let mut notes = rows[0].notes.clone();
    if grouped {
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        notes.push(format!("rows {} had the same name and settings: merged into one channel", ids.join(", ")));
    }
    let key_for = |r: &Mapped, k: &RowKey| -> KeyConfig {
        let name = match (k.index, grouped) {
            (None, _) => format!("row{}", r.id),
            (Some(i), false) => format!("key{i}"),
            (Some(i), true) => format!("row{}-key{i}", r.id),
        };
        // A row's status only disables its keys when other rows keep the channel enabled.
        let enabled = k.enabled && (r.enabled || !any_enabled);
        KeyConfig::Named { name: Some(name), key: k.secret.clone(), enabled }
    };
    for r in &rows {
        if !r.enabled && any_enabled {
            notes.push(format!("row {}: keys disabled ({})", r.id, r.disabled_reason.as_deref().unwrap_or_default()));
        }
        for k in &r.keys {
            if let (Some(i), Some(reason)) = (k.index, &k.disabled_reason) {
                let name = if grouped { format!("row{}-key{i}", r.id) } else { format!("key{i}") };
                notes.push(format!("{name} (multi-key index {}) disabled: {reason}", i - 1));
            }
        }
    }

    let ranked: Vec<&Mapped> = rows.iter().filter(|r| r.enabled || !any_enabled).collect();
    let top = ranked.iter().map(|r| r.priority).max().unwrap_or(0);
    let mut tiers: BTreeSet<i64> = rows.iter().map(|r| r.priority).collect();
    let first = &rows[0];
    let mut c = ChannelConfig::new(first.name.clone(), first.protocol);
    if tiers.len() <= 1 {
        c.base_url = Some(first.base_url.clone());
        c.keys = rows.iter().flat_map(|r| r.keys.iter().map(|k| key_for(r, k))).collect();
    } else {
        // Their priorities are per row; ours per channel. Each row priority becomes an endpoint, tried in their order.
        let order: Vec<String> = tiers.iter().rev().map(i64::to_string).collect();
        notes.push(format!(
            "rows have different priorities ({}): one endpoint per priority, tried in that order",
            order.join(", ")
        ));
        let mut i = 0;
        while let Some(p) = tiers.pop_last() {
            i += 1;
            c.endpoints.push(EndpointConfig {
                name: format!("tier{i}"),
                base_url: first.base_url.clone(),
                keys: rows
                    .iter()
                    .filter(|r| r.priority == p)
                    .flat_map(|r| r.keys.iter().map(|k| key_for(r, k)))
                    .collect(),
                priority: i - 1,
                weight: 1,
                failover_enabled: true,
                headers: BTreeMap::new(),
                connect_timeout: None,
                first_byte_timeout: None,
                idle_timeout: None,
                fast_test_path: None,
            });
        }
    }
    c.priority = top.checked_neg().unwrap_or(i64::MAX);
    let weights: BTreeSet<i64> = rows.iter().map(|r| r.weight).collect();
    let weight = weights.last().copied().unwrap_or(0);
    if weights.len() > 1 {
        notes.push(format!("rows had different weights; the channel keeps the largest ({weight})"));
    }
    c.weight = u32::try_from(weight.max(1)).unwrap_or(u32::MAX);
    c.tags = first.tags.clone();
    c.models = first.models.clone();
    c.aliases = first.aliases.clone();
    c.headers = first.headers.clone();
    c.api_version = first.api_version.clone();
    c.enabled = any_enabled;
    c.disabled_reason = if any_enabled { None } else { first.disabled_reason.clone() };
    c.source = Some(format!("oneapi:{flavour}:{database}#{}", first.id));
    ImportedChannel { config: c, source_ids: rows.iter().map(|r| r.id).collect(), notes }
}

/// A valid channel name: no `/`, no control characters, not empty.
fn clean_name(name: &str, id: i64) -> String {
    let n: String = name.trim().chars().map(|c| if c == '/' || c.is_control() { '-' } else { c }).collect();
    if n.trim().is_empty() { format!("channel-{id}") } else { n }
}

/// `name`, else `name-<id>`, else `name-<id>-<n>`: the same rows always get the same names.
fn unique_name(name: &str, id: i64, taken: &HashSet<String>) -> String {
    if !taken.contains(name) {
        return name.to_string();
    }
    let with_id = format!("{name}-{id}");
    if !taken.contains(&with_id) {
        return with_id;
    }
    (2..).map(|n| format!("{with_id}-{n}")).find(|n| !taken.contains(n)).expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::super::source::Value;
    use super::*;

    fn row(cols: &[(&str, Value)]) -> Row {
        Row(cols.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn table(rows: Vec<Row>) -> Table {
        let mut columns: Vec<String> = rows.iter().flat_map(|r| r.0.keys().cloned()).collect();
        columns.sort();
        columns.dedup();
        Table { columns, rows }
    }

    fn base(id: i64, kind: i64, name: &str) -> Vec<(&'static str, Value)> {
        vec![
            ("id", Value::Int(id)),
            ("type", Value::Int(kind)),
            ("key", t("sk-secret-value")),
            ("status", Value::Int(1)),
            ("name", t(name)),
            ("models", t("m1")),
            ("group", t("default")),
            ("config", t("")),
        ]
    }

    #[test]
    fn flavour_detection() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(detect(&cols(&["id", "config"])).0, Flavour::OneApi);
        assert_eq!(detect(&cols(&["id", "auto_ban", "channel_info"])).0, Flavour::NewApi);
        let (f, w) = detect(&cols(&["id"]));
        assert_eq!(f, Flavour::OneApi);
        assert!(w.is_some());
    }

    #[test]
    fn type_numbers_differ_between_flavours() {
        assert_eq!(oneapi_type(4).name, "CloseAI");
        assert_eq!(newapi_type(4).name, "Ollama");
        assert!(matches!(oneapi_type(43).wire, Wire::Skip(_)));
        assert!(matches!(newapi_type(43).wire, Wire::Openai { .. }));
    }

    #[test]
    fn bad_json_degrades_only_that_row_and_never_leaks_the_key() {
        let mut a = base(1, 1, "a");
        a.push(("model_mapping", t("{not json")));
        let b = base(2, 1, "b");
        let p = plan(&table(vec![row(&a), row(&b)]), &OneApiOptions::default(), "x", "sqlite:/x");
        assert_eq!(p.channels.len(), 2);
        assert!(p.warnings.iter().any(|w| w.contains("row 1 (a)") && w.contains("model_mapping")), "{:?}", p.warnings);
        assert!(!serde_json::to_string(&p).unwrap().contains("sk-secret-value"));
    }

    #[test]
    fn names_are_made_valid_unique_and_prefixed() {
        let mut a = base(1, 1, "x/y");
        a.push(("models", t("m1")));
        let mut b = base(2, 1, "x/y");
        b[5] = ("models", t("m2")); // different settings: not merged
        let opts = OneApiOptions { flavour: None, prefix: Some("old-".into()) };
        let p = plan(&table(vec![row(&a), row(&b)]), &opts, "x", "sqlite:/x");
        let names: Vec<&str> = p.channels.iter().map(|c| c.config.name.as_str()).collect();
        assert_eq!(names, ["old-x-y", "old-x-y-2"]);
    }

    #[test]
    fn priority_is_negated_and_empty_custom_base_is_skipped() {
        let mut a = base(1, 1, "a");
        a.push(("priority", Value::Int(7)));
        let c = base(3, 8, "custom");
        let p = plan(&table(vec![row(&a), row(&c)]), &OneApiOptions::default(), "x", "sqlite:/x");
        assert_eq!(p.channels[0].config.priority, -7);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].reason.contains("base URL"));
    }
}
