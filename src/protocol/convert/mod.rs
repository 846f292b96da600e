//! Protocol translation between client and upstream wire formats.
//!
//! Owns the public conversion API ([`convert_request`], [`convert_response`], [`convert_error`],
//! [`StreamConverter`]) and the helpers every direction shares: id generation, the normalized token counts
//! ([`Tokens`]) and their mapping to each protocol's usage object, finish-reason mapping, and error bodies in
//! OpenAI and Anthropic shape. The per-direction mappings live in the submodules:
//! - [`anthropic_chat`]: Anthropic Messages client <-> OpenAI Chat upstream,
//! - [`chat_anthropic`]: OpenAI Chat client <-> Anthropic Messages upstream,
//! - [`responses_chat`]: OpenAI Responses client <-> OpenAI Chat upstream,
//! - [`gemini_chat`]: Gemini client <-> OpenAI Chat upstream; onto an Anthropic upstream the same mapping is
//!   composed with [`chat_anthropic`] (Gemini -> Chat -> Messages, and back), which is exact for everything
//!   Gemini can express,
//! - [`gemini_embed`]: Gemini `embedContent` / `batchEmbedContents` client <-> OpenAI embeddings upstream,
//! - [`chat_stream`]: decoding of OpenAI Chat stream chunks, shared by every Chat-upstream direction.
//!
//! Everything here is pure (no I/O) and works on `serde_json::Value`: this is not the hot path, and unknown
//! fields must never make a request fail.

pub mod anthropic_chat;
pub mod chat_anthropic;
mod chat_stream;
pub mod gemini_chat;
pub mod gemini_embed;
pub mod responses_chat;

use rand::Rng;
use rand::distributions::Alphanumeric;
pub use responses_chat::ToolKinds;
use serde_json::{Map, Value, json};

use crate::protocol::Protocol;
use crate::protocol::sse::SseEvent;

/// A translation direction, named client protocol first, upstream protocol second. Serialised as request records
/// and `router test` show it: `anthropic->openai`, `openai->anthropic`, `responses->chat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Conversion {
    /// Client speaks Anthropic Messages, upstream speaks OpenAI Chat Completions.
    #[serde(rename = "anthropic->openai")]
    AnthropicToChat,
    /// Client speaks OpenAI Chat Completions, upstream speaks Anthropic Messages.
    #[serde(rename = "openai->anthropic")]
    ChatToAnthropic,
    /// Client speaks OpenAI Responses, upstream speaks OpenAI Chat Completions.
    #[serde(rename = "responses->chat")]
    ResponsesToChat,
    /// Client speaks Gemini (`generateContent`), upstream speaks OpenAI Chat Completions.
    #[serde(rename = "gemini->openai")]
    GeminiToChat,
    /// Client speaks Gemini, upstream speaks Anthropic Messages (through the Chat mapping both ways).
    #[serde(rename = "gemini->anthropic")]
    GeminiToAnthropic,
    /// Client asks Gemini `:embedContent`, upstream speaks OpenAI embeddings.
    #[serde(rename = "gemini-embed->openai")]
    GeminiEmbedToOpenai,
    /// Client asks Gemini `:batchEmbedContents`, upstream speaks OpenAI embeddings.
    #[serde(rename = "gemini-batch-embed->openai")]
    GeminiBatchEmbedToOpenai,
}

impl std::fmt::Display for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Conversion {
    /// The protocol whose bodies the client expects.
    pub fn client(self) -> Protocol {
        match self {
            Conversion::AnthropicToChat => Protocol::Anthropic,
            Conversion::ChatToAnthropic | Conversion::ResponsesToChat => Protocol::Openai,
            Conversion::GeminiToChat
            | Conversion::GeminiToAnthropic
            | Conversion::GeminiEmbedToOpenai
            | Conversion::GeminiBatchEmbedToOpenai => Protocol::Gemini,
        }
    }

    /// An embeddings translation: its answers are always whole bodies, never streams.
    pub fn is_embedding(self) -> bool {
        matches!(self, Conversion::GeminiEmbedToOpenai | Conversion::GeminiBatchEmbedToOpenai)
    }

    /// Short name for records: `client->upstream`.
    pub fn name(self) -> &'static str {
        match self {
            Conversion::AnthropicToChat => "anthropic->openai",
            Conversion::ChatToAnthropic => "openai->anthropic",
            Conversion::ResponsesToChat => "responses->chat",
            Conversion::GeminiToChat => "gemini->openai",
            Conversion::GeminiToAnthropic => "gemini->anthropic",
            Conversion::GeminiEmbedToOpenai => "gemini-embed->openai",
            Conversion::GeminiBatchEmbedToOpenai => "gemini-batch-embed->openai",
        }
    }
}

/// Why a body could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Unsupported(String),
}

/// Client request body (client protocol) -> upstream request body (upstream protocol), with `model` set to
/// `upstream_model`. For a streaming request to an OpenAI Chat upstream set `stream_options.include_usage=true`.
/// A Gemini body says nothing about streaming (the path does): see [`convert_gemini_request`].
pub fn convert_request(conv: Conversion, body: &[u8], upstream_model: &str) -> Result<Vec<u8>, ConvertError> {
    convert_gemini_request(conv, body, upstream_model, false)
}

/// [`convert_request`], with `stream` telling a Gemini request whether it came as `:streamGenerateContent`
/// (ignored for the other directions, whose bodies say it themselves).
pub fn convert_gemini_request(
    conv: Conversion,
    body: &[u8],
    upstream_model: &str,
    stream: bool,
) -> Result<Vec<u8>, ConvertError> {
    let req = parse_object(body)?;
    let out = match conv {
        Conversion::AnthropicToChat => anthropic_chat::request_to_chat(&req, upstream_model)?,
        Conversion::ChatToAnthropic => chat_anthropic::request_to_anthropic(&req, upstream_model)?,
        Conversion::ResponsesToChat => responses_chat::request_to_chat(&req, upstream_model)?,
        Conversion::GeminiToChat => {
            gemini_chat::request_to_chat(&req, upstream_model, stream, gemini_chat::Target::Chat)?
        }
        Conversion::GeminiToAnthropic => {
            let chat = gemini_chat::request_to_chat(&req, upstream_model, stream, gemini_chat::Target::Anthropic)?;
            let Value::Object(mut chat) = chat else { unreachable!("request_to_chat builds an object") };
            let mut out = chat_anthropic::request_to_anthropic(&chat, upstream_model)?;
            if gemini_chat::thinking_conflicts_with_tool_turn(&out) {
                chat.remove("reasoning_effort");
                out = chat_anthropic::request_to_anthropic(&chat, upstream_model)?;
            }
            out
        }
        Conversion::GeminiEmbedToOpenai => gemini_embed::request_to_openai(&req, upstream_model, false)?,
        Conversion::GeminiBatchEmbedToOpenai => gemini_embed::request_to_openai(&req, upstream_model, true)?,
    };
    Ok(serde_json::to_vec(&out)?)
}

/// Non-streaming upstream response body -> client response body. `client_model` is the model name the client
/// asked for. Same as [`convert_response_with`] with no custom or local shell tools.
pub fn convert_response(conv: Conversion, body: &[u8], client_model: &str) -> Result<Vec<u8>, ConvertError> {
    convert_response_with(conv, body, client_model, &ToolKinds::default())
}

/// [`convert_response`] knowing which tools of the client request were custom / local shell tools (see
/// [`tool_kinds`]), so that calls to them come back as `custom_tool_call` / `local_shell_call` items.
pub fn convert_response_with(
    conv: Conversion,
    body: &[u8],
    client_model: &str,
    kinds: &ToolKinds,
) -> Result<Vec<u8>, ConvertError> {
    let resp = parse_object(body)?;
    if let Some(err) = resp.get("error").filter(|e| !e.is_null()) {
        let (message, _, _) = error_fields(err);
        return Err(ConvertError::Unsupported(format!("upstream returned an error in a success response: {message}")));
    }
    let out = match conv {
        Conversion::AnthropicToChat => anthropic_chat::response_from_chat(&resp, client_model)?,
        Conversion::ChatToAnthropic => chat_anthropic::response_from_anthropic(&resp, client_model)?,
        Conversion::ResponsesToChat => responses_chat::response_from_chat(&resp, client_model, kinds)?,
        Conversion::GeminiToChat => gemini_chat::response_from_chat(&resp, client_model)?,
        Conversion::GeminiToAnthropic => match chat_anthropic::response_from_anthropic(&resp, client_model)? {
            Value::Object(chat) => gemini_chat::response_from_chat(&chat, client_model)?,
            _ => unreachable!("response_from_anthropic builds an object"),
        },
        Conversion::GeminiEmbedToOpenai => gemini_embed::response_from_openai(&resp, false)?,
        Conversion::GeminiBatchEmbedToOpenai => gemini_embed::response_from_openai(&resp, true)?,
    };
    Ok(serde_json::to_vec(&out)?)
}

/// The custom (freeform) and local shell tools of a client request body, which the upstream only sees as
/// functions. Empty for directions other than [`Conversion::ResponsesToChat`] and for unreadable bodies.
pub fn tool_kinds(conv: Conversion, request_body: &[u8]) -> ToolKinds {
    match conv {
        Conversion::ResponsesToChat => ToolKinds::from_request(request_body),
        _ => ToolKinds::default(),
    }
}

/// An upstream error (status + body in upstream shape, possibly not JSON) -> body in the client's error shape.
pub fn convert_error(conv: Conversion, status: u16, body: &[u8]) -> Vec<u8> {
    let upstream = UpstreamError::parse(status, body);
    let out = match conv.client() {
        Protocol::Anthropic => anthropic_error_body(crate::protocol::errors::anthropic_type(status), &upstream.message),
        Protocol::Gemini => crate::protocol::errors::gemini_body(status, &upstream.message),
        Protocol::Openai => {
            let kind =
                upstream.kind.clone().unwrap_or_else(|| crate::protocol::errors::openai_type(status).to_string());
            openai_error_body(&upstream.message, &kind, upstream.code.as_deref())
        }
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Whether an OpenAI Chat request body asks for `stream_options.include_usage` (feed the answer to
/// [`StreamConverter::with_include_usage`] for [`Conversion::ChatToAnthropic`]).
pub fn chat_request_wants_usage(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/stream_options/include_usage").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// Stateful stream translator: upstream SSE events in, client events out (SSE, or for a Gemini client that did
/// not ask for `alt=sse`, the elements of one JSON array: see [`StreamConverter::encode`]).
#[derive(Debug)]
pub struct StreamConverter {
    inner: Inner,
    /// Client events are written as the elements of one JSON array instead of SSE.
    json_array: bool,
    /// The opening `[` (and so at least the array's start) has been written.
    array_open: bool,
}

#[derive(Debug)]
enum Inner {
    AnthropicFromChat(anthropic_chat::AnthropicStream),
    ChatFromAnthropic(chat_anthropic::ChatStream),
    ResponsesFromChat(responses_chat::ResponsesStream),
    GeminiFromChat(gemini_chat::GeminiStream),
    /// Anthropic events -> Chat chunks (with usage) -> Gemini chunks.
    GeminiFromAnthropic(chat_anthropic::ChatStream, gemini_chat::GeminiStream),
}

impl StreamConverter {
    pub fn new(conv: Conversion, client_model: &str) -> Self {
        let inner = match conv {
            Conversion::AnthropicToChat => Inner::AnthropicFromChat(anthropic_chat::AnthropicStream::new(client_model)),
            Conversion::ChatToAnthropic => Inner::ChatFromAnthropic(chat_anthropic::ChatStream::new(client_model)),
            Conversion::ResponsesToChat => Inner::ResponsesFromChat(responses_chat::ResponsesStream::new(client_model)),
            // Embeddings are answered whole (`Conversion::is_embedding`); a stream from such an upstream is read
            // as chat chunks, which carry no text here, so the client gets an empty Gemini stream, not a crash.
            Conversion::GeminiToChat | Conversion::GeminiEmbedToOpenai | Conversion::GeminiBatchEmbedToOpenai => {
                Inner::GeminiFromChat(gemini_chat::GeminiStream::new(client_model))
            }
            Conversion::GeminiToAnthropic => {
                let mut chat = chat_anthropic::ChatStream::new(client_model);
                chat.include_usage = true;
                Inner::GeminiFromAnthropic(chat, gemini_chat::GeminiStream::new(client_model))
            }
        };
        Self { inner, json_array: false, array_open: false }
    }

    /// For a Gemini client whose `:streamGenerateContent` had no `alt=sse`: write the chunks as one JSON array
    /// (`[{..}\n,\r\n{..}\n]`, as Google does). No effect for other client protocols.
    pub fn with_json_array(mut self, json_array: bool) -> Self {
        self.json_array = json_array && matches!(self.inner, Inner::GeminiFromChat(_) | Inner::GeminiFromAnthropic(..));
        self
    }

    /// Whether the client stream is SSE (otherwise one JSON array).
    pub fn is_sse(&self) -> bool {
        !self.json_array
    }

    /// Client events in wire form; `end` closes the stream (the JSON array's `]`). `None` when nothing is due.
    pub fn encode(&mut self, events: &[SseEvent], end: bool) -> Option<bytes::Bytes> {
        let mut out = bytes::BytesMut::new();
        if !self.json_array {
            for ev in events {
                ev.write_to(&mut out);
            }
        } else {
            for ev in events {
                out.extend_from_slice(if self.array_open { b",\r\n" } else { b"[" });
                self.array_open = true;
                out.extend_from_slice(ev.data.as_bytes());
                out.extend_from_slice(b"\n");
            }
            if end {
                if !self.array_open {
                    out.extend_from_slice(b"[");
                    self.array_open = true;
                }
                out.extend_from_slice(b"]");
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// For an OpenAI Chat client: whether it asked for `stream_options.include_usage`, i.e. whether to emit the
    /// final usage chunk (empty `choices`) before `[DONE]`. No effect for other client protocols.
    pub fn with_include_usage(mut self, include_usage: bool) -> Self {
        if let Inner::ChatFromAnthropic(s) = &mut self.inner {
            s.include_usage = include_usage;
        }
        self
    }

    /// For a Responses client: its request's custom / local shell tools (from [`tool_kinds`]), whose calls are
    /// then emitted as `custom_tool_call` / `local_shell_call` items. No effect for other client protocols.
    pub fn with_tool_kinds(mut self, kinds: ToolKinds) -> Self {
        if let Inner::ResponsesFromChat(s) = self.inner {
            self.inner = Inner::ResponsesFromChat(s.with_tool_kinds(kinds));
        }
        self
    }

    /// One upstream event -> zero or more client events, appended to `out`.
    pub fn push(&mut self, ev: &SseEvent, out: &mut Vec<SseEvent>) {
        match &mut self.inner {
            Inner::AnthropicFromChat(s) => s.push(ev, out),
            Inner::ChatFromAnthropic(s) => s.push(ev, out),
            Inner::ResponsesFromChat(s) => s.push(ev, out),
            Inner::GeminiFromChat(s) => s.push(ev, out),
            Inner::GeminiFromAnthropic(chat, gemini) => {
                let mut chunks = Vec::new();
                chat.push(ev, &mut chunks);
                for c in &chunks {
                    gemini.push(c, out);
                }
            }
        }
    }

    /// Upstream ended (cleanly or not): emit whatever closing events the client protocol needs (e.g. Anthropic
    /// `message_delta`+`message_stop` if not yet sent; Responses `response.completed`; Chat `[DONE]`).
    /// `interrupted=true` means the upstream was cut: emit an error event in the client's shape instead of a
    /// clean stop — unless the upstream already gave its finish reason (only the usage chunk / `[DONE]` /
    /// `message_stop` was lost), in which case the answer is complete and the stream is closed cleanly.
    /// Does nothing if the client stream is already closed.
    pub fn finish(&mut self, interrupted: bool, out: &mut Vec<SseEvent>) {
        match &mut self.inner {
            Inner::AnthropicFromChat(s) => s.finish(interrupted, out),
            Inner::ChatFromAnthropic(s) => s.finish(interrupted, out),
            Inner::ResponsesFromChat(s) => s.finish(interrupted, out),
            Inner::GeminiFromChat(s) => s.finish(interrupted, out),
            Inner::GeminiFromAnthropic(chat, gemini) => {
                // The Chat side closes first (finish chunk + usage + [DONE], or its error chunk), which closes
                // the Gemini side; `finish` then only covers a Gemini side still open.
                let mut chunks = Vec::new();
                chat.finish(interrupted, &mut chunks);
                for c in &chunks {
                    gemini.push(c, out);
                }
                if !chat_stream::PieceEncoder::closed(gemini) {
                    gemini.finish(interrupted, out);
                }
            }
        }
    }

    /// The token counts seen so far in the upstream stream, normalized (for accounting).
    pub fn usage(&self) -> Option<Tokens> {
        match &self.inner {
            Inner::AnthropicFromChat(s) => s.usage(),
            Inner::ChatFromAnthropic(s) => s.usage(),
            Inner::ResponsesFromChat(s) => s.usage(),
            Inner::GeminiFromChat(s) => s.usage(),
            Inner::GeminiFromAnthropic(chat, _) => chat.usage(),
        }
    }
}

/// A thinking budget in tokens -> `reasoning_effort` (below 4096 low, below 16384 medium, else high).
fn budget_to_effort(budget: u64) -> &'static str {
    match budget {
        0..4096 => "low",
        4096..16384 => "medium",
        _ => "high",
    }
}

/// Message used when the upstream stream is cut before its end.
const INTERRUPTED_MESSAGE: &str = "upstream stream was interrupted before completion";

// ---------------------------------------------------------------------------------------------------------
// Small JSON helpers

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ConvertError> {
    match serde_json::from_slice::<Value>(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(ConvertError::Unsupported("request body must be a JSON object".into())),
    }
}

/// Copies `src[from]` to `dst[to]` when present and not null.
fn copy_field(src: &Map<String, Value>, from: &str, dst: &mut Map<String, Value>, to: &str) {
    if let Some(v) = src.get(from).filter(|v| !v.is_null()) {
        dst.insert(to.to_string(), v.clone());
    }
}

/// A string field, empty or absent mapped to `None`.
fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Serialises a tool-call argument value: strings are kept verbatim, anything else is JSON-encoded.
fn arguments_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Parses tool-call arguments into a JSON object for Anthropic `tool_use.input`. Empty -> `{}`; unparsable or
/// non-object -> `{}` (the request still goes through; the model sees an empty input).
fn arguments_object(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// Text of an OpenAI content value: a string, or an array of parts whose `text` fields are joined.
fn openai_content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A fresh id like `msg_3hK...` (24 random alphanumerics after the prefix).
fn new_id(prefix: &str) -> String {
    let suffix: String = rand::thread_rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
    format!("{prefix}{suffix}")
}

/// Builds an SSE event whose data is the given JSON.
fn data_event(v: &Value) -> SseEvent {
    SseEvent::data(v.to_string())
}

fn named_event(name: &str, v: &Value) -> SseEvent {
    SseEvent::named(name, v.to_string())
}

// ---------------------------------------------------------------------------------------------------------
// Usage

/// Token counts normalized to disjoint buckets, so that no protocol mapping can double count cache tokens:
/// `input_uncached + cache_read + cache_write` is the whole prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens neither read from nor written to a cache.
    pub input_uncached: u64,
    /// Prompt tokens read from the cache.
    pub cache_read: u64,
    /// Prompt tokens written to the cache (Anthropic only).
    pub cache_write: u64,
    /// Generated tokens, reasoning included.
    pub output: u64,
    /// Reasoning tokens (a subset of `output`), when reported.
    pub reasoning: u64,
}

fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

impl Tokens {
    /// From an OpenAI Chat `usage` object. `prompt_tokens` includes cached tokens; cached tokens come from
    /// `prompt_tokens_details.cached_tokens`, or DeepSeek's `prompt_cache_hit_tokens` (never both added).
    pub fn from_chat(usage: &Value) -> Option<Self> {
        if !usage.is_object() {
            return None;
        }
        let prompt = u64_at(usage, "/prompt_tokens").unwrap_or(0);
        let cached = u64_at(usage, "/prompt_tokens_details/cached_tokens")
            .or_else(|| u64_at(usage, "/prompt_cache_hit_tokens"))
            .unwrap_or(0)
            .min(prompt);
        Some(Self {
            input_uncached: prompt - cached,
            cache_read: cached,
            cache_write: 0,
            output: u64_at(usage, "/completion_tokens").unwrap_or(0),
            reasoning: u64_at(usage, "/completion_tokens_details/reasoning_tokens").unwrap_or(0),
        })
    }

    /// From an Anthropic `usage` object, where `input_tokens` excludes cache reads and writes.
    pub fn from_anthropic(usage: &Value) -> Option<Self> {
        let mut t = Self::default();
        t.merge_anthropic(usage).then_some(t)
    }

    /// Updates the fields present in an Anthropic `usage` object (stream counts are cumulative: the latest value
    /// wins, nothing is summed). Returns whether `usage` was an object.
    pub fn merge_anthropic(&mut self, usage: &Value) -> bool {
        if !usage.is_object() {
            return false;
        }
        let fields: [(&str, &mut u64); 4] = [
            ("/input_tokens", &mut self.input_uncached),
            ("/cache_read_input_tokens", &mut self.cache_read),
            ("/cache_creation_input_tokens", &mut self.cache_write),
            ("/output_tokens", &mut self.output),
        ];
        for (pointer, slot) in fields {
            if let Some(n) = u64_at(usage, pointer) {
                *slot = n;
            }
        }
        true
    }

    /// Whole prompt, cache reads and writes included (OpenAI `prompt_tokens` / Responses `input_tokens`).
    pub fn prompt_total(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write
    }

    /// Anthropic `usage` object.
    pub fn to_anthropic(&self) -> Value {
        json!({
            "input_tokens": self.input_uncached,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        })
    }

    /// OpenAI Chat `usage` object.
    pub fn to_chat(&self) -> Value {
        let mut usage = json!({
            "prompt_tokens": self.prompt_total(),
            "completion_tokens": self.output,
            "total_tokens": self.prompt_total() + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        });
        if self.reasoning > 0 {
            usage["completion_tokens_details"] = json!({"reasoning_tokens": self.reasoning});
        }
        usage
    }

    /// OpenAI Responses `usage` object (every field is required there).
    pub fn to_responses(&self) -> Value {
        json!({
            "input_tokens": self.prompt_total(),
            "input_tokens_details": {"cached_tokens": self.cache_read},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.prompt_total() + self.output,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Finish / stop reasons

/// OpenAI Chat `finish_reason` -> Anthropic `stop_reason`. A plain `stop` with tool calls present is reported
/// as `tool_use` (some compatible providers say `stop` there, and agents loop on `tool_use`).
fn chat_finish_to_anthropic(finish: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` -> OpenAI Chat `finish_reason`.
fn anthropic_stop_to_chat(stop: Option<&str>, has_tool_calls: bool) -> &'static str {
    match stop {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/// The useful parts of an upstream error body, whatever its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamError {
    message: String,
    kind: Option<String>,
    code: Option<String>,
}

/// Longest upstream body text copied into an error message.
const MAX_ERROR_TEXT: usize = 500;

impl UpstreamError {
    /// Reads OpenAI (`{"error":{message,type,code}}`), Anthropic (`{"type":"error","error":{type,message}}`),
    /// `{"error":"text"}` and `{"message":"text"}` bodies; anything else is used as text, truncated.
    fn parse(status: u16, body: &[u8]) -> Self {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                let (message, kind, code) = error_fields(err);
                if !message.is_empty() {
                    return Self { message, kind, code };
                }
            }
            if let Some(message) = str_field(&v, "message") {
                return Self { message: message.to_string(), kind: None, code: None };
            }
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("upstream returned HTTP {status}")
        } else {
            truncate_chars(text, MAX_ERROR_TEXT)
        };
        Self { message, kind: None, code: None }
    }
}

/// (message, type, code) of an `error` value that is either an object or a bare string.
fn error_fields(err: &Value) -> (String, Option<String>, Option<String>) {
    if let Some(s) = err.as_str() {
        return (s.to_string(), None, None);
    }
    let message = str_field(err, "message").unwrap_or_default().to_string();
    let kind = str_field(err, "type").map(str::to_string);
    let code = match err.get("code") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    (message, kind, code)
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
fn anthropic_error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
fn openai_error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the stream tests of every direction.
    use super::*;
    use crate::protocol::sse::SseParser;

    /// Parses wire SSE text into events (as the proxy would, EOF flush included).
    pub fn parse_sse(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = parser.feed(text.as_bytes());
        events.extend(parser.finish());
        events
    }

    /// Feeds `upstream` SSE text through a converter, then `finish(interrupted)`.
    pub fn run_stream(conv: StreamConverter, upstream: &str, interrupted: bool) -> Vec<SseEvent> {
        let mut conv = conv;
        let mut out = Vec::new();
        for ev in parse_sse(upstream) {
            conv.push(&ev, &mut out);
        }
        conv.finish(interrupted, &mut out);
        out
    }

    /// The JSON data of an event (panics on `[DONE]` or non-JSON).
    pub fn data_json(ev: &SseEvent) -> Value {
        serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", ev.data))
    }

    /// Event names (`event:` field) in order, `None` shown as the data's `type`, or `[DONE]`.
    pub fn names(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.event {
                Some(n) => n.clone(),
                None if e.data == "[DONE]" => "[DONE]".to_string(),
                None => "data".to_string(),
            })
            .collect()
    }

    pub fn to_value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("output is JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::to_value;
    use super::*;

    #[test]
    fn tokens_from_chat_subtracts_cached_once() {
        let u = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920}, "completion_tokens_details": {"reasoning_tokens": 40}});
        let t = Tokens::from_chat(&u).unwrap();
        assert_eq!(t, Tokens { input_uncached: 86, cache_read: 1920, cache_write: 0, output: 300, reasoning: 40 });
        assert_eq!(t.prompt_total(), 2006);
        assert_eq!(t.to_anthropic()["input_tokens"], 86);
        assert_eq!(t.to_anthropic()["cache_read_input_tokens"], 1920);
        assert_eq!(t.to_chat()["prompt_tokens"], 2006);
        assert_eq!(t.to_responses()["input_tokens"], 2006);
        assert_eq!(t.to_responses()["total_tokens"], 2306);
    }

    #[test]
    fn tokens_from_deepseek_cache_fields_not_added_twice() {
        // DeepSeek may report both its own fields and the OpenAI detail with the same number.
        let u = json!({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 60,
            "prompt_cache_miss_tokens": 40, "prompt_tokens_details": {"cached_tokens": 60}});
        let t = Tokens::from_chat(&u).unwrap();
        assert_eq!((t.input_uncached, t.cache_read), (40, 60));
        let only_deepseek = json!({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 70});
        let t = Tokens::from_chat(&only_deepseek).unwrap();
        assert_eq!((t.input_uncached, t.cache_read), (30, 70));
        // A bogus cached count larger than the prompt never underflows.
        let bogus = json!({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}});
        assert_eq!(Tokens::from_chat(&bogus).unwrap().input_uncached, 0);
    }

    #[test]
    fn tokens_from_anthropic_round_trip_to_chat() {
        let u = json!({"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
            "output_tokens": 6});
        let t = Tokens::from_anthropic(&u).unwrap();
        let chat = t.to_chat();
        assert_eq!(chat["prompt_tokens"], 1112);
        assert_eq!(chat["prompt_tokens_details"]["cached_tokens"], 1000);
        assert_eq!(chat["completion_tokens"], 6);
        assert_eq!(chat["total_tokens"], 1118);
        // Back from chat: the cache write is folded into uncached input, the read stays a read.
        let back = Tokens::from_chat(&chat).unwrap();
        assert_eq!(back.prompt_total(), t.prompt_total());
        assert_eq!(back.cache_read, 1000);
    }

    #[test]
    fn tokens_merge_keeps_latest_without_summing() {
        let mut t = Tokens::from_anthropic(&json!({"input_tokens": 12, "output_tokens": 1})).unwrap();
        t.merge_anthropic(&json!({"output_tokens": 15}));
        t.merge_anthropic(&json!({"output_tokens": 20}));
        assert_eq!((t.input_uncached, t.output), (12, 20));
    }

    #[test]
    fn finish_reasons_map_both_ways() {
        assert_eq!(chat_finish_to_anthropic(Some("stop"), false), "end_turn");
        assert_eq!(chat_finish_to_anthropic(Some("length"), true), "max_tokens");
        assert_eq!(chat_finish_to_anthropic(Some("tool_calls"), true), "tool_use");
        assert_eq!(chat_finish_to_anthropic(Some("stop"), true), "tool_use");
        assert_eq!(chat_finish_to_anthropic(Some("content_filter"), false), "refusal");
        assert_eq!(chat_finish_to_anthropic(None, false), "end_turn");
        assert_eq!(anthropic_stop_to_chat(Some("end_turn"), false), "stop");
        assert_eq!(anthropic_stop_to_chat(Some("stop_sequence"), false), "stop");
        assert_eq!(anthropic_stop_to_chat(Some("max_tokens"), false), "length");
        assert_eq!(anthropic_stop_to_chat(Some("tool_use"), true), "tool_calls");
        assert_eq!(anthropic_stop_to_chat(Some("refusal"), false), "content_filter");
        assert_eq!(anthropic_stop_to_chat(Some("pause_turn"), false), "stop");
    }

    #[test]
    fn error_openai_to_anthropic() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#;
        let out = to_value(&convert_error(Conversion::AnthropicToChat, 429, body));
        assert_eq!(out, json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}}));
        let out = to_value(&convert_error(Conversion::AnthropicToChat, 529, b"{}"));
        assert_eq!(out["error"]["type"], "overloaded_error");
        assert_eq!(out["error"]["message"], "{}");
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (502, "api_error"),
            (503, "overloaded_error"),
        ] {
            let out = to_value(&convert_error(Conversion::AnthropicToChat, status, b"x"));
            assert_eq!(out["error"]["type"], kind, "status {status}");
        }
    }

    #[test]
    fn error_anthropic_to_openai() {
        let body =
            br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"},"request_id":"req_1"}"#;
        let out = to_value(&convert_error(Conversion::ChatToAnthropic, 404, body));
        assert_eq!(
            out,
            json!({"error":{"message":"model: claude-x","type":"not_found_error","param":null,"code":null}})
        );
    }

    #[test]
    fn error_non_json_body_is_truncated_text() {
        let long = "x".repeat(2000);
        let out = to_value(&convert_error(Conversion::ResponsesToChat, 502, long.as_bytes()));
        let msg = out["error"]["message"].as_str().unwrap();
        assert_eq!(msg.len(), 503);
        assert_eq!(out["error"]["type"], "api_error");
        let html = "<html>Bad gateway ü</html>";
        let out = to_value(&convert_error(Conversion::AnthropicToChat, 502, html.as_bytes()));
        assert_eq!(out["error"]["message"], html);
        let out = to_value(&convert_error(Conversion::ChatToAnthropic, 503, b""));
        assert_eq!(out["error"]["message"], "upstream returned HTTP 503");
        // Multi-byte characters are cut on a char boundary.
        assert_eq!(truncate_chars(&"é".repeat(600), 500).chars().count(), 503);
    }

    #[test]
    fn error_string_and_code_shapes() {
        let out = to_value(&convert_error(Conversion::ChatToAnthropic, 400, br#"{"error":"bad thing"}"#));
        assert_eq!(out["error"]["message"], "bad thing");
        assert_eq!(out["error"]["type"], "invalid_request_error");
        let out = to_value(&convert_error(Conversion::ResponsesToChat, 400, br#"{"message":"nope","code":3}"#));
        assert_eq!(out["error"]["message"], "nope");
        let body = br#"{"error":{"message":"m","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let out = to_value(&convert_error(Conversion::ResponsesToChat, 429, body));
        assert_eq!(out["error"]["type"], "insufficient_quota");
        assert_eq!(out["error"]["code"], "insufficient_quota");
    }

    #[test]
    fn invalid_json_and_non_object_bodies_fail_cleanly() {
        assert!(matches!(convert_request(Conversion::AnthropicToChat, b"{nope", "m"), Err(ConvertError::Json(_))));
        assert!(matches!(convert_request(Conversion::ChatToAnthropic, b"[1]", "m"), Err(ConvertError::Unsupported(_))));
        let err = convert_response(Conversion::AnthropicToChat, br#"{"error":{"message":"boom"}}"#, "m").unwrap_err();
        assert!(err.to_string().contains("boom"));
    }

    #[test]
    fn chat_request_wants_usage_reads_stream_options() {
        assert!(chat_request_wants_usage(br#"{"stream":true,"stream_options":{"include_usage":true}}"#));
        assert!(!chat_request_wants_usage(br#"{"stream":true}"#));
        assert!(!chat_request_wants_usage(b"not json"));
    }

    #[test]
    fn ids_have_prefix_and_differ() {
        let a = new_id("msg_");
        assert!(a.starts_with("msg_") && a.len() == 28);
        assert_ne!(a, new_id("msg_"));
    }
}
