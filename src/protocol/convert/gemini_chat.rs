//! Gemini client <-> OpenAI Chat Completions upstream (and, through Chat, an Anthropic Messages upstream).
//!
//! Owns: `generateContent` request -> Chat request (`systemInstruction`, `contents`/`parts`: text, inline
//! images and PDFs, image file URIs, `functionCall`/`functionResponse` <-> `tool_calls`/`tool` messages in
//! order, `functionDeclarations` with Gemini `Schema` -> JSON Schema, `toolConfig`, `generationConfig`,
//! `thinkingConfig` -> thinking on Anthropic), Chat response -> `GenerateContentResponse` (reasoning -> `thought`
//! parts, tool calls -> `functionCall` parts, finish reason, `usageMetadata`), and Chat chunks -> Gemini stream
//! chunks ([`GeminiStream`]; function calls are sent whole, as Gemini does; usage rides on the last chunk).
//! What a Chat upstream cannot do (several candidates, audio/video input, Google's own tools, cached content,
//! non-text output) is refused with a clear error, never dropped. `safetySettings` are Google's content policy,
//! not part of the conversation: they are not forwarded.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::chat_stream::{ChatDecoder, Piece, PieceEncoder};
use super::{ConvertError, Tokens, arguments_object, arguments_string, new_id, openai_content_text, str_field};
use crate::protocol::sse::SseEvent;

/// Where the Chat request goes next: straight to a Chat upstream, or on through Chat -> Anthropic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Chat,
    Anthropic,
}

fn unsupported(what: impl Into<String>) -> ConvertError {
    ConvertError::Unsupported(what.into())
}

/// A field under its REST (camelCase) name or its proto (snake_case) name; both are accepted by Google.
fn field<'a>(v: &'a Value, camel: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| field_in(m, camel))
}

fn field_in<'a>(m: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    if let Some(found) = m.get(camel).filter(|x| !x.is_null()) {
        return Some(found);
    }
    m.get(camel_to_snake(camel).as_str()).filter(|x| !x.is_null())
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Request

/// Gemini `generateContent` request -> OpenAI Chat request. `stream` comes from the path
/// (`:streamGenerateContent`), not the body.
pub(super) fn request_to_chat(
    req: &Map<String, Value>,
    upstream_model: &str,
    stream: bool,
    target: Target,
) -> Result<Value, ConvertError> {
    if field_in(req, "cachedContent").is_some() {
        return Err(unsupported("`cachedContent` refers to a Google context cache, which this channel does not have"));
    }
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let mut messages = Vec::new();
    let mut system = field_in(req, "systemInstruction").map(system_text).unwrap_or_default();
    let mut calls = CallIds::default();
    let contents = field_in(req, "contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (turn, content) in contents.iter().enumerate() {
        let parts = content.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        match content.get("role").and_then(Value::as_str) {
            Some("model") => messages.extend(model_message(parts, turn, &mut calls)?),
            _ => user_messages(parts, &mut calls, &mut messages)?,
        }
    }

    let tools = tools_to_chat(req)?;
    if !tools.is_empty() {
        let (choice, allowed) = tool_choice(req);
        let tools: Vec<Value> = match &allowed {
            Some(names) => tools.into_iter().filter(|t| names.iter().any(|n| t["function"]["name"] == *n)).collect(),
            None => tools,
        };
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    if let Some(cfg) = field_in(req, "generationConfig") {
        generation_config(cfg, target, &mut out, &mut system)?;
    }
    if !system.is_empty() {
        messages.insert(0, json!({"role": "system", "content": system}));
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// `systemInstruction` (a Content, or a bare string) -> its text parts joined by blank lines.
fn system_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// Tool-call ids of the latest model turn, so that `functionResponse` parts without an id (Gemini's own API
/// does not require one) are matched to their call by name, in order.
#[derive(Debug, Default)]
struct CallIds {
    /// (id, name, answered) of the calls of the latest model turn.
    pending: Vec<(String, String, bool)>,
}

impl CallIds {
    fn answer(&mut self, id: Option<&str>, name: &str) -> String {
        if let Some(id) = id {
            if let Some(c) = self.pending.iter_mut().find(|c| c.0 == id) {
                c.2 = true;
            }
            return id.to_string();
        }
        match self.pending.iter_mut().find(|c| !c.2 && c.1 == name) {
            Some(c) => {
                c.2 = true;
                c.0.clone()
            }
            None => format!("call_{name}"),
        }
    }
}

/// A model turn -> one assistant message (text in `content`, calls in `tool_calls`); thoughts are not sent
/// back (Chat providers do not take them). A turn left with nothing is skipped.
fn model_message(parts: &[Value], turn: usize, calls: &mut CallIds) -> Result<Option<Value>, ConvertError> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    calls.pending.clear();
    for part in parts {
        if let Some(fc) = field(part, "functionCall") {
            let name = str_field(fc, "name").unwrap_or_default();
            let id = str_field(fc, "id").map_or_else(|| format!("call_{turn}_{}", tool_calls.len()), str::to_string);
            let args = fc.get("args").filter(|a| !a.is_null()).map_or_else(|| "{}".to_string(), Value::to_string);
            calls.pending.push((id.clone(), name.to_string(), false));
            tool_calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}));
        } else if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(kind) = content_kind(part) {
            return Err(unsupported(format!("a `{kind}` part in a model turn cannot be sent to this channel")));
        }
    }
    if text.is_empty() && tool_calls.is_empty() {
        return Ok(None);
    }
    let content = if text.is_empty() { Value::Null } else { text.into() };
    let mut msg = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        msg["tool_calls"] = Value::Array(tool_calls);
    }
    Ok(Some(msg))
}

/// The name of a part's content field other than text and function parts (`inlineData`, `executableCode`,
/// ...), or `None` for a part that only carries metadata (`thoughtSignature`, an empty text).
fn content_kind(part: &Value) -> Option<String> {
    let obj = part.as_object()?;
    obj.iter()
        .find(|(k, v)| {
            !v.is_null()
                && !matches!(
                    k.as_str(),
                    "text" | "thought" | "thoughtSignature" | "thought_signature" | "videoMetadata" | "partMetadata"
                )
        })
        .map(|(k, _)| k.clone())
}

/// A user turn -> `tool` messages for its `functionResponse` parts first (in order), then one user message with
/// the rest (text, images, PDFs, and any images the function responses carried).
fn user_messages(parts: &[Value], calls: &mut CallIds, messages: &mut Vec<Value>) -> Result<(), ConvertError> {
    let mut content = Vec::new();
    for part in parts {
        if let Some(fr) = field(part, "functionResponse") {
            let name = str_field(fr, "name").unwrap_or_default();
            let id = calls.answer(str_field(fr, "id"), name);
            for inner in fr.get("parts").and_then(Value::as_array).into_iter().flatten() {
                content.extend(user_part(inner)?);
            }
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": function_output(fr.get("response"))}));
        } else if field(part, "functionCall").is_some() {
            return Err(unsupported("a `functionCall` part belongs in a model turn, not a user turn"));
        } else {
            content.extend(user_part(part)?);
        }
    }
    if content.is_empty() {
        return Ok(());
    }
    let all_text = content.iter().all(|p| p["type"] == "text");
    let content = if all_text {
        Value::String(content.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n\n"))
    } else {
        Value::Array(content)
    };
    messages.push(json!({"role": "user", "content": content}));
    Ok(())
}

/// A `functionResponse.response` -> tool message text: `{"output": "..."}` / `{"result": "..."}` (what Gemini
/// CLI and the SDKs send) as the bare string, anything else as JSON.
fn function_output(response: Option<&Value>) -> String {
    match response {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) if o.len() == 1 => match o.get("output").or_else(|| o.get("result")) {
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(o.clone()).to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// A user part -> a Chat content part. `None` for metadata-only parts; an error for what Chat cannot carry.
fn user_part(part: &Value) -> Result<Option<Value>, ConvertError> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    if let Some(t) = part.get("text").and_then(Value::as_str) {
        return Ok((!t.is_empty()).then(|| json!({"type": "text", "text": t})));
    }
    if let Some(blob) = field(part, "inlineData") {
        let mime = str_field(blob, "mimeType").or_else(|| str_field(blob, "mime_type")).unwrap_or_default();
        let data = str_field(blob, "data").unwrap_or_default();
        return inline_part(mime, data).map(Some);
    }
    if let Some(file) = field(part, "fileData") {
        let mime = str_field(file, "mimeType").or_else(|| str_field(file, "mime_type")).unwrap_or_default();
        let uri = str_field(file, "fileUri").or_else(|| str_field(file, "file_uri")).unwrap_or_default();
        if mime.starts_with("image/") && (uri.starts_with("https://") || uri.starts_with("http://")) {
            return Ok(Some(json!({"type": "image_url", "image_url": {"url": uri}})));
        }
        return Err(unsupported(format!(
            "`fileData` ({mime} at {uri}) cannot be sent to this channel: only image URLs can; send the data inline"
        )));
    }
    match content_kind(part) {
        Some(kind) => Err(unsupported(format!("a `{kind}` part cannot be sent to this channel"))),
        None => Ok(None),
    }
}

/// `inlineData` -> image part, PDF file part, or (for `text/*`) the decoded text.
fn inline_part(mime: &str, data: &str) -> Result<Value, ConvertError> {
    if mime.starts_with("image/") {
        return Ok(json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{data}")}}));
    }
    if mime == "application/pdf" {
        let file_data = format!("data:{mime};base64,{data}");
        return Ok(json!({"type": "file", "file": {"filename": "document.pdf", "file_data": file_data}}));
    }
    if mime.starts_with("text/") || mime == "application/json" {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| unsupported(format!("`inlineData` of type {mime} is not valid base64: {e}")))?;
        return Ok(json!({"type": "text", "text": String::from_utf8_lossy(&bytes)}));
    }
    Err(unsupported(format!(
        "`inlineData` of type `{mime}` cannot be sent to this channel (images, PDFs and text can)"
    )))
}

/// `tools[].functionDeclarations` -> Chat function tools. Google's own tools (search, code execution, URL
/// context, ...) have no equivalent and are refused.
fn tools_to_chat(req: &Map<String, Value>) -> Result<Vec<Value>, ConvertError> {
    let mut out = Vec::new();
    for tool in field_in(req, "tools").and_then(Value::as_array).into_iter().flatten() {
        let Some(obj) = tool.as_object() else { continue };
        for (key, value) in obj {
            if value.is_null() {
                continue;
            }
            if key != "functionDeclarations" && key != "function_declarations" {
                return Err(unsupported(format!("the Gemini tool `{key}` has no equivalent on this channel")));
            }
            for decl in value.as_array().into_iter().flatten() {
                let name =
                    str_field(decl, "name").ok_or_else(|| unsupported("a function declaration has no `name`"))?;
                let mut function = Map::new();
                function.insert("name".into(), name.into());
                if let Some(d) = str_field(decl, "description") {
                    function.insert("description".into(), d.into());
                }
                let params = field(decl, "parametersJsonSchema")
                    .or_else(|| field(decl, "parameters"))
                    .map_or_else(|| json!({"type": "object", "properties": {}}), json_schema);
                function.insert("parameters".into(), params);
                out.push(json!({"type": "function", "function": function}));
            }
        }
    }
    Ok(out)
}

/// Gemini `Schema` (OpenAPI subset: upper-case `type`, `nullable`, `propertyOrdering`) -> JSON Schema. Also
/// applied to `parametersJsonSchema` / `responseJsonSchema`, which Gemini CLI fills with upper-case types too;
/// a JSON Schema already in shape passes unchanged.
fn json_schema(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    let nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
    for (k, v) in obj {
        match k.as_str() {
            "type" => {
                let Some(t) = v.as_str().map(str::to_ascii_lowercase) else {
                    out.insert(k.clone(), v.clone());
                    continue;
                };
                if t.is_empty() || t == "type_unspecified" {
                    continue;
                }
                out.insert("type".into(), if nullable { json!([t, "null"]) } else { t.into() });
            }
            "nullable" | "propertyOrdering" | "property_ordering" => {}
            "properties" => {
                let props = v.as_object().map(|m| m.iter().map(|(n, s)| (n.clone(), json_schema(s))).collect());
                out.insert(k.clone(), props.map(Value::Object).unwrap_or_else(|| v.clone()));
            }
            "items" => {
                out.insert(k.clone(), json_schema(v));
            }
            "anyOf" | "any_of" => {
                let list = v.as_array().map(|a| a.iter().map(json_schema).collect());
                out.insert("anyOf".into(), list.map(Value::Array).unwrap_or_else(|| v.clone()));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// `toolConfig.functionCallingConfig` -> (`tool_choice`, the tools allowed when `mode: ANY` names several).
fn tool_choice(req: &Map<String, Value>) -> (Option<Value>, Option<Vec<String>>) {
    let Some(cfg) = field_in(req, "toolConfig").and_then(|t| field(t, "functionCallingConfig")) else {
        return (None, None);
    };
    let allowed: Vec<String> = field(cfg, "allowedFunctionNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    match str_field(cfg, "mode").map(str::to_ascii_uppercase).as_deref() {
        Some("ANY") => match allowed.len() {
            0 => (Some("required".into()), None),
            1 => (Some(json!({"type": "function", "function": {"name": allowed[0]}})), None),
            _ => (Some("required".into()), Some(allowed)),
        },
        Some("NONE") => (Some("none".into()), None),
        Some("AUTO") | Some("VALIDATED") => (Some("auto".into()), None),
        _ => (None, None),
    }
}

/// `generationConfig` -> Chat sampling fields. JSON output: the schema is stated in the system prompt, and a
/// Chat upstream also gets `response_format: json_object`.
fn generation_config(
    cfg: &Value,
    target: Target,
    out: &mut Map<String, Value>,
    system: &mut String,
) -> Result<(), ConvertError> {
    if let Some(n) = field(cfg, "candidateCount").and_then(Value::as_u64).filter(|n| *n > 1) {
        return Err(unsupported(format!("`candidateCount: {n}`: this channel returns one candidate")));
    }
    if field(cfg, "responseLogprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("`responseLogprobs` cannot be translated for this channel"));
    }
    if field(cfg, "speechConfig").is_some() {
        return Err(unsupported("`speechConfig`: this channel answers in text only"));
    }
    for m in field(cfg, "responseModalities").and_then(Value::as_array).into_iter().flatten() {
        if !m.as_str().is_some_and(|m| m.eq_ignore_ascii_case("TEXT")) {
            return Err(unsupported(format!("response modality {m}: this channel answers in text only")));
        }
    }
    let copies = [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("maxOutputTokens", "max_tokens"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
        ("seed", "seed"),
    ];
    for (from, to) in copies {
        if let Some(v) = field(cfg, from) {
            out.insert(to.into(), v.clone());
        }
    }
    // Chat has no top_k (OpenAI rejects it); Anthropic takes it.
    if target == Target::Anthropic
        && let Some(k) = field(cfg, "topK")
    {
        out.insert("top_k".into(), k.clone());
    }
    if let Some(stop) = field(cfg, "stopSequences").filter(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
        out.insert("stop".into(), stop.clone());
    }
    json_output(cfg, target, out, system)?;
    // Gemini CLI asks every request to think. Claude models take that as extended thinking; on a Chat upstream
    // `reasoning_effort` is refused by every model that does not reason (OpenAI answers 400), so there the
    // model's own default applies. Either way, reasoning that comes back is returned as `thought` parts.
    if target == Target::Anthropic
        && let Some(effort) = field(cfg, "thinkingConfig").and_then(thinking_effort)
    {
        out.insert("reasoning_effort".into(), effort.into());
    }
    Ok(())
}

fn json_output(
    cfg: &Value,
    target: Target,
    out: &mut Map<String, Value>,
    system: &mut String,
) -> Result<(), ConvertError> {
    let mime = str_field(cfg, "responseMimeType").or_else(|| str_field(cfg, "response_mime_type"));
    let schema = field(cfg, "responseJsonSchema").or_else(|| field(cfg, "responseSchema")).map(json_schema);
    match mime {
        None | Some("text/plain") if schema.is_none() => return Ok(()),
        None | Some("text/plain") | Some("application/json") => {}
        Some(other) => return Err(unsupported(format!("`responseMimeType: {other}` cannot be translated"))),
    }
    // `json_object` is the JSON mode every OpenAI-compatible provider takes (DeepSeek, for one, refuses
    // `json_schema`); the schema itself goes in the system prompt, which is also all Anthropic has.
    if target == Target::Chat {
        out.insert("response_format".into(), json!({"type": "json_object"}));
    }
    if !system.is_empty() {
        system.push_str("\n\n");
    }
    system.push_str("Answer with a single JSON value and nothing else: no prose, no code fences.");
    if let Some(schema) = schema {
        system.push_str(&format!(" It must match this JSON Schema: {schema}"));
    }
    Ok(())
}

/// `thinkingConfig` -> `reasoning_effort`: an explicit positive budget by size (the thresholds of Anthropic's
/// budget mapping), or `thinkingLevel`. A zero or dynamic (-1) budget leaves the upstream's default.
fn thinking_effort(cfg: &Value) -> Option<&'static str> {
    if let Some(level) = str_field(cfg, "thinkingLevel").or_else(|| str_field(cfg, "thinking_level")) {
        return match level.to_ascii_lowercase().as_str() {
            "minimal" | "low" => Some("low"),
            "medium" => Some("medium"),
            "high" => Some("high"),
            _ => None,
        };
    }
    let budget = field(cfg, "thinkingBudget").and_then(Value::as_i64)?;
    (budget > 0).then(|| super::budget_to_effort(budget as u64))
}

// ---------------------------------------------------------------------------------------------------------
// Response

/// Chat `finish_reason` -> Gemini `finishReason` (a call to a tool is a normal `STOP` in Gemini).
fn finish_to_gemini(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "MAX_TOKENS",
        Some("content_filter") => "SAFETY",
        _ => "STOP",
    }
}

/// Normalized tokens -> `usageMetadata` (prompt includes cached; candidates exclude thoughts).
pub(super) fn usage_metadata(t: &Tokens) -> Value {
    let prompt = t.prompt_total();
    let mut u = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": t.output.saturating_sub(t.reasoning),
        "totalTokenCount": prompt + t.output,
    });
    if t.cache_read > 0 {
        u["cachedContentTokenCount"] = t.cache_read.into();
    }
    if t.reasoning > 0 {
        u["thoughtsTokenCount"] = t.reasoning.into();
    }
    u
}

/// A Chat tool call -> `functionCall` part (arguments that do not parse become `{}`).
fn function_call_part(id: &str, name: &str, arguments: &str) -> Value {
    json!({"functionCall": {"id": id, "name": name, "args": arguments_object(arguments)}})
}

fn response_body(parts: Vec<Value>, finish: Option<&str>, usage: Option<&Tokens>, model: &str, id: &str) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = f.into();
    }
    let mut body = json!({"candidates": [candidate], "modelVersion": model, "responseId": id});
    if let Some(t) = usage {
        body["usageMetadata"] = usage_metadata(t);
    }
    body
}

/// OpenAI Chat completion -> `GenerateContentResponse`.
pub(super) fn response_from_chat(resp: &Map<String, Value>, client_model: &str) -> Result<Value, ConvertError> {
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| unsupported("upstream chat response has no choices"))?;
    let message = choice.get("message").cloned().unwrap_or_else(|| json!({}));
    let mut parts = Vec::new();
    let reasoning = str_field(&message, "reasoning_content").or_else(|| str_field(&message, "reasoning"));
    if let Some(thought) = reasoning {
        parts.push(json!({"text": thought, "thought": true}));
    }
    let text = openai_content_text(message.get("content"));
    let text = if text.is_empty() { str_field(&message, "refusal").unwrap_or_default().to_string() } else { text };
    if !text.is_empty() {
        parts.push(json!({"text": text}));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        let id = str_field(call, "id").map_or_else(|| new_id("call_"), str::to_string);
        let name = function.and_then(|f| str_field(f, "name")).unwrap_or_default();
        parts.push(function_call_part(&id, name, &arguments_string(function.and_then(|f| f.get("arguments")))));
    }
    let finish = finish_to_gemini(choice.get("finish_reason").and_then(Value::as_str));
    let usage = resp.get("usage").and_then(Tokens::from_chat).unwrap_or_default();
    let id = resp.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let id = id.map_or_else(|| new_id(""), str::to_string);
    Ok(response_body(parts, Some(finish), Some(&usage), client_model, &id))
}

// ---------------------------------------------------------------------------------------------------------
// Stream

/// A tool call being assembled from Chat fragments; Gemini sends each call whole.
#[derive(Debug)]
struct PendingCall {
    slot: usize,
    id: String,
    name: String,
    arguments: String,
}

/// Chat chunks -> Gemini stream chunks (`GenerateContentResponse` each, no `[DONE]`).
#[derive(Debug)]
pub(crate) struct GeminiStream {
    decoder: ChatDecoder,
    model: String,
    id: String,
    calls: Vec<PendingCall>,
    finish: Option<String>,
    usage: Option<Tokens>,
    /// The last chunk or an error was sent: nothing more goes out.
    closed: bool,
}

impl GeminiStream {
    pub fn new(client_model: &str) -> Self {
        Self {
            decoder: ChatDecoder::default(),
            model: client_model.to_string(),
            id: new_id(""),
            calls: Vec::new(),
            finish: None,
            usage: None,
            closed: false,
        }
    }

    pub fn usage(&self) -> Option<Tokens> {
        self.usage
    }

    pub fn push(&mut self, ev: &SseEvent, out: &mut Vec<SseEvent>) {
        self.push_event(ev, out);
    }

    fn chunk(&self, parts: Vec<Value>, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::data(response_body(parts, None, None, &self.model, &self.id).to_string()));
    }

    /// The last chunk: the function calls (whole), the finish reason and the usage.
    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        let parts = self.calls.drain(..).map(|c| function_call_part(&c.id, &c.name, &c.arguments)).collect();
        let finish = finish_to_gemini(self.finish.as_deref());
        let usage = self.usage.unwrap_or_default();
        out.push(SseEvent::data(response_body(parts, Some(finish), Some(&usage), &self.model, &self.id).to_string()));
        self.closed = true;
    }

    pub fn finish(&mut self, interrupted: bool, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        // Cut after the finish reason: the answer is whole, only usage/[DONE] is missing, so close cleanly.
        if interrupted && self.finish.is_none() {
            self.error(super::INTERRUPTED_MESSAGE, out);
        } else {
            self.complete(out);
        }
    }

    fn error(&mut self, message: &str, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::data(crate::protocol::errors::gemini_body(500, message).to_string()));
        self.closed = true;
    }
}

impl PieceEncoder for GeminiStream {
    fn decoder(&mut self) -> &mut ChatDecoder {
        &mut self.decoder
    }

    fn closed(&self) -> bool {
        self.closed
    }

    fn apply(&mut self, piece: Piece, out: &mut Vec<SseEvent>) {
        match piece {
            Piece::Began => {}
            Piece::Reasoning(text) => self.chunk(vec![json!({"text": text, "thought": true})], out),
            Piece::Text(text) => self.chunk(vec![json!({"text": text})], out),
            Piece::ToolStart { slot, id, name } => {
                self.calls.push(PendingCall { slot, id, name, arguments: String::new() });
            }
            Piece::ToolArgs { slot, fragment } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.slot == slot) {
                    c.arguments.push_str(&fragment);
                }
            }
            Piece::Finish(reason) => self.finish = Some(reason),
            // The usage chunk that follows the finish chunk ends the answer; otherwise wait for [DONE].
            Piece::Usage { tokens, usage_only } => {
                self.usage = Some(tokens);
                if usage_only && self.finish.is_some() {
                    self.complete(out);
                }
            }
            Piece::Error { message, .. } => self.error(&message, out),
            Piece::Done => self.complete(out),
        }
    }
}

/// Whether an Anthropic request enables thinking while its last assistant turn calls a tool: Anthropic then
/// wants that turn's signed thinking block back, which a Gemini client cannot give.
pub(super) fn thinking_conflicts_with_tool_turn(anthropic: &Value) -> bool {
    if anthropic.get("thinking").is_none() {
        return false;
    }
    let last_assistant =
        anthropic["messages"].as_array().into_iter().flatten().rev().find(|m| m["role"] == "assistant");
    last_assistant.is_some_and(|m| {
        m["content"].as_array().into_iter().flatten().any(|b| b["type"] == "tool_use")
            && !m["content"].as_array().into_iter().flatten().any(|b| b["type"] == "thinking")
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{data_json, parse_sse, run_stream, to_value};
    use super::super::{Conversion, StreamConverter, convert_error, convert_gemini_request, convert_response};
    use super::*;

    fn to_chat(req: Value, stream: bool) -> Value {
        let body = req.to_string();
        to_value(&convert_gemini_request(Conversion::GeminiToChat, body.as_bytes(), "gpt-4o-mini", stream).unwrap())
    }

    fn refused(req: Value) -> String {
        let body = req.to_string();
        match convert_gemini_request(Conversion::GeminiToChat, body.as_bytes(), "m", false) {
            Err(e) => e.to_string(),
            Ok(b) => panic!("expected a refusal, got {}", String::from_utf8_lossy(&b)),
        }
    }

    #[test]
    fn request_system_contents_and_generation_config() {
        let chat = to_chat(
            json!({
                "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Answer in French."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Bonjour"}]},
                    {"role": "model", "parts": [{"text": "hmm", "thought": true}, {"text": "Salut"}]},
                    {"role": "user", "parts": [{"text": "Et "}, {"text": "alors ?"}]}
                ],
                "generationConfig": {"temperature": 0.3, "topP": 0.9, "topK": 40, "maxOutputTokens": 256,
                    "stopSequences": ["END"], "seed": 7, "candidateCount": 1,
                    "thinkingConfig": {"includeThoughts": true, "thinkingBudget": 8192}},
                "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
            }),
            true,
        );
        assert_eq!(chat["model"], "gpt-4o-mini");
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "system", "content": "Be terse.\n\nAnswer in French."},
                {"role": "user", "content": "Bonjour"},
                {"role": "assistant", "content": "Salut"},
                {"role": "user", "content": "Et \n\nalors ?"}
            ])
        );
        assert_eq!(chat["temperature"], 0.3);
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(chat["max_tokens"], 256);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["seed"], 7);
        assert!(chat.get("reasoning_effort").is_none(), "non-reasoning chat models refuse it");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert!(chat.get("top_k").is_none(), "OpenAI rejects top_k");
        // snake_case (proto) names work too; a dynamic budget leaves the upstream default.
        let chat = to_chat(
            json!({"system_instruction": "Plain.", "contents": [{"parts": [{"text": "x"}]}],
                   "generation_config": {"max_output_tokens": 9, "thinking_config": {"thinking_budget": -1}}}),
            false,
        );
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "Plain."}));
        assert_eq!(chat["max_tokens"], 9);
        assert!(chat.get("stream").is_none());
    }

    #[test]
    fn request_function_calling_loop() {
        let chat = to_chat(
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                        {"functionCall": {"id": "abc", "name": "get_weather", "args": {"city": "Rome"}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                        {"functionResponse": {"id": "abc", "name": "get_weather", "response": {"temp": 25}}},
                        {"text": "Thanks"}
                    ]}
                ],
                "tools": [{"functionDeclarations": [
                    {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT",
                        "properties": {"city": {"type": "STRING", "nullable": true}, "days": {"type": "ARRAY",
                        "items": {"type": "INTEGER"}}}, "required": ["city"], "propertyOrdering": ["city", "days"]}},
                    {"name": "noop", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
                    {"name": "bare"}
                ]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
            }),
            false,
        );
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[1]["role"], "assistant");
        assert_eq!(m[1]["content"], Value::Null);
        assert_eq!(m[1]["tool_calls"][0]["id"], "call_1_0");
        assert_eq!(
            m[1]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(m[1]["tool_calls"][1]["id"], "abc");
        // Results right after the calls, matched by id or (without one) by name in order; text after them.
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "call_1_0", "content": "18C"}));
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "abc", "content": "{\"temp\":25}"}));
        assert_eq!(m[4], json!({"role": "user", "content": "Thanks"}));
        let tools = chat["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 3);
        assert_eq!(
            tools[0]["function"]["parameters"],
            json!({"type": "object", "properties": {"city": {"type": ["string", "null"]},
                   "days": {"type": "array", "items": {"type": "integer"}}}, "required": ["city"]})
        );
        assert_eq!(tools[1]["function"]["parameters"], json!({"type": "object", "additionalProperties": false}));
        assert_eq!(tools[2]["function"]["parameters"], json!({"type": "object", "properties": {}}));
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
    }

    #[test]
    fn request_tool_modes() {
        let with_mode = |mode: Value| {
            let req = json!({"contents": [], "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}],
                "toolConfig": {"functionCallingConfig": mode}});
            to_chat(req, false)
        };
        assert_eq!(with_mode(json!({"mode": "AUTO"}))["tool_choice"], "auto");
        assert_eq!(with_mode(json!({"mode": "NONE"}))["tool_choice"], "none");
        assert_eq!(with_mode(json!({"mode": "ANY"}))["tool_choice"], "required");
        let subset = with_mode(json!({"mode": "ANY", "allowedFunctionNames": ["a", "c"]}));
        assert_eq!(subset["tool_choice"], "required");
        let names: Vec<&str> =
            subset["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn request_images_pdf_and_text_blobs() {
        let chat = to_chat(
            json!({"contents": [{"role": "user", "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}
            ]}]}),
            false,
        );
        let parts = chat["messages"][0]["content"].as_array().unwrap();
        assert_eq!(parts[1], json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}));
        assert_eq!(parts[2]["file"]["file_data"], "data:application/pdf;base64,JVBERi0=");
        assert_eq!(parts[3], json!({"type": "text", "text": "hello"}));
        assert_eq!(parts[4]["image_url"]["url"], "https://example.com/cat.jpg");
    }

    #[test]
    fn request_json_output() {
        let chat = to_chat(
            json!({"contents": [], "generationConfig": {"responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}}}),
            false,
        );
        assert_eq!(chat["response_format"], json!({"type": "json_object"}));
        let system = chat["messages"][0]["content"].as_str().unwrap();
        assert!(
            system
                .ends_with(r#"It must match this JSON Schema: {"properties":{"n":{"type":"number"}},"type":"object"}"#),
            "{system}"
        );
        // What Gemini CLI sends: a JSON schema with upper-case types; array types stay as they are.
        let chat = to_chat(
            json!({"systemInstruction": {"parts": [{"text": "Rate it."}]}, "contents": [],
                   "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema":
                   {"type": "OBJECT", "properties": {"score": {"type": "INTEGER"}, "why": {"type": ["string", "null"]}}}}}),
            false,
        );
        assert_eq!(chat["response_format"], json!({"type": "json_object"}));
        let system = chat["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("Rate it.\n\nAnswer with a single JSON value"), "{system}");
        assert!(
            system.contains(r#""score":{"type":"integer"}"#) && system.contains(r#"["string","null"]"#),
            "{system}"
        );
    }

    #[test]
    fn untranslatable_requests_are_refused() {
        assert!(refused(json!({"contents": [], "tools": [{"googleSearch": {}}]})).contains("googleSearch"));
        assert!(refused(json!({"contents": [], "cachedContent": "cachedContents/x"})).contains("cachedContent"));
        assert!(refused(json!({"contents": [], "generationConfig": {"candidateCount": 2}})).contains("candidateCount"));
        assert!(
            refused(json!({"contents": [], "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}))
                .contains("IMAGE")
        );
        let audio = json!({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA=="}}]}]});
        assert!(refused(audio).contains("audio/wav"));
        let video = json!({"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "video/mp4", "fileUri": "gs://b/v.mp4"}}]}]});
        assert!(refused(video).contains("fileData"));
        let code = json!({"contents": [{"role": "model", "parts": [{"executableCode": {"code": "print(1)"}}]}]});
        assert!(refused(code).contains("executableCode"));
    }

    #[test]
    fn response_text_thoughts_calls_and_usage() {
        let upstream = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "reasoning_content": "Think.", "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 10}}});
        let out = to_value(
            &convert_response(Conversion::GeminiToChat, upstream.to_string().as_bytes(), "gemini-2.5-pro").unwrap(),
        );
        let c = &out["candidates"][0];
        assert_eq!(
            c["content"],
            json!({"role": "model", "parts": [
                {"text": "Think.", "thought": true},
                {"text": "Let me check."},
                {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}}
            ]})
        );
        assert_eq!(c["finishReason"], "STOP");
        assert_eq!(out["modelVersion"], "gemini-2.5-pro");
        assert_eq!(
            out["usageMetadata"],
            json!({"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 130,
                   "cachedContentTokenCount": 60, "thoughtsTokenCount": 10})
        );
        let cut = json!({"choices": [{"finish_reason": "length", "message": {"content": "abc"}}]});
        let out = to_value(&convert_response(Conversion::GeminiToChat, cut.to_string().as_bytes(), "g").unwrap());
        assert_eq!(out["candidates"][0]["finishReason"], "MAX_TOKENS");
    }

    #[test]
    fn errors_in_google_shape() {
        let body =
            br#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#;
        let out = to_value(&convert_error(Conversion::GeminiToChat, 429, body));
        assert_eq!(
            out,
            json!({"error": {"code": 429, "message": "Rate limit reached", "status": "RESOURCE_EXHAUSTED"}})
        );
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let out = to_value(&convert_error(Conversion::GeminiToAnthropic, 529, body));
        assert_eq!(out["error"]["status"], "UNAVAILABLE");
        assert_eq!(out["error"]["message"], "Overloaded");
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    }

    fn gemini_stream(upstream: &str, interrupted: bool) -> Vec<Value> {
        run_stream(StreamConverter::new(Conversion::GeminiToChat, "gemini-2.5-flash"), upstream, interrupted)
            .iter()
            .map(data_json)
            .collect()
    }

    #[test]
    fn stream_text_then_tool_call_split_across_chunks_with_usage_last() {
        let mut up = chunk(json!({"role": "assistant", "content": ""}), None);
        up += &chunk(json!({"reasoning_content": "Hm."}), None);
        up += &chunk(json!({"content": "Checking"}), None);
        up += &chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_7", "type": "function", "function": {"name": "read_file"}}]}),
            None,
        );
        for piece in ["{\"pa", "th\":\"a.", "txt\"}"] {
            up += &chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None);
        }
        up += &chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_8", "function": {"name": "ls", "arguments": "{}"}}]}),
            None,
        );
        up += &chunk(json!({}), Some("tool_calls"));
        up += "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
        let out = gemini_stream(&up, false);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0]["candidates"][0]["content"]["parts"], json!([{"text": "Hm.", "thought": true}]));
        assert_eq!(out[1]["candidates"][0]["content"]["parts"], json!([{"text": "Checking"}]));
        assert!(out[1]["candidates"][0].get("finishReason").is_none() && out[1].get("usageMetadata").is_none());
        let last = &out[2];
        assert_eq!(
            last["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"id": "call_7", "name": "read_file", "args": {"path": "a.txt"}}},
                   {"functionCall": {"id": "call_8", "name": "ls", "args": {}}}])
        );
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"],
            json!({"promptTokenCount": 50, "candidatesTokenCount": 9, "totalTokenCount": 59})
        );
        assert_eq!(last["modelVersion"], "gemini-2.5-flash");
        assert_eq!(out[0]["responseId"], last["responseId"]);
    }

    #[test]
    fn stream_error_mid_stream_and_interruption() {
        let mut up = chunk(json!({"content": "Hel"}), None);
        up += "data: {\"error\":{\"message\":\"upstream overloaded\",\"type\":\"server_error\"}}\n\n";
        up += &chunk(json!({"content": "lo"}), None);
        let out = gemini_stream(&up, false);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], json!({"error": {"code": 500, "message": "upstream overloaded", "status": "INTERNAL"}}));
        // Cut before the finish reason: an error chunk; cut after it: a clean last chunk.
        let out = gemini_stream(&chunk(json!({"content": "Hel"}), None), true);
        assert_eq!(out.last().unwrap()["error"]["status"], "INTERNAL");
        let up = chunk(json!({"content": "Hi"}), None) + &chunk(json!({}), Some("stop"));
        let out = gemini_stream(&up, true);
        assert_eq!(out.last().unwrap()["candidates"][0]["finishReason"], "STOP");
        // A clean end without [DONE] and without usage still closes with a finish reason.
        let out = gemini_stream(&(chunk(json!({"content": "Hi"}), None)), false);
        assert_eq!(out.last().unwrap()["candidates"][0]["finishReason"], "STOP");
    }

    #[test]
    fn onto_anthropic_request_response_and_stream() {
        let req = json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "List files"}]},
                {"role": "model", "parts": [{"functionCall": {"id": "toolu_1", "name": "ls", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": "toolu_1", "name": "ls", "response": {"output": "a.txt"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "ls", "parametersJsonSchema": {"type": "object"}}]}],
            "generationConfig": {"topK": 20, "maxOutputTokens": 100, "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 2048}}
        });
        let out = to_value(
            &convert_gemini_request(Conversion::GeminiToAnthropic, req.to_string().as_bytes(), "claude-x", true)
                .unwrap(),
        );
        assert_eq!(out["model"], "claude-x");
        assert_eq!(out["stream"], true);
        assert!(out["system"].as_str().unwrap().starts_with("Be brief.\n\nAnswer with a single JSON value"));
        assert_eq!(
            out["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}})
        );
        assert_eq!(out["messages"][2]["content"][0]["type"], "tool_result");
        assert_eq!(out["tools"][0], json!({"name": "ls", "input_schema": {"type": "object"}}));
        // Thinking would need the signed thinking block of the tool turn, which Gemini clients cannot send back.
        assert!(out.get("thinking").is_none());
        assert_eq!(out["top_k"], 20);
        let first_turn = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 2048}}});
        let out = to_value(
            &convert_gemini_request(Conversion::GeminiToAnthropic, first_turn.to_string().as_bytes(), "c", false)
                .unwrap(),
        );
        assert_eq!(out["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
        let level = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": true, "thinkingLevel": "HIGH"}}});
        let out = to_value(
            &convert_gemini_request(Conversion::GeminiToAnthropic, level.to_string().as_bytes(), "c", false).unwrap(),
        );
        assert_eq!(out["thinking"]["budget_tokens"], 24576);

        let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "ok"},
                        {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {"dir": "."}}],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 7}});
        let out = to_value(
            &convert_response(Conversion::GeminiToAnthropic, msg.to_string().as_bytes(), "gemini-2.5-pro").unwrap(),
        );
        assert_eq!(
            out["candidates"][0]["content"]["parts"],
            json!([{"text": "hm", "thought": true}, {"text": "ok"},
                   {"functionCall": {"id": "toolu_2", "name": "ls", "args": {"dir": "."}}}])
        );
        assert_eq!(out["usageMetadata"]["promptTokenCount"], 105);
        assert_eq!(out["usageMetadata"]["cachedContentTokenCount"], 90);
        assert_eq!(out["usageMetadata"]["candidatesTokenCount"], 7);

        let up = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_3\",\"name\":\"ls\",\"input\":{}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"dir\\\":\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"src\\\"}\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":15}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let conv = StreamConverter::new(Conversion::GeminiToAnthropic, "gemini-2.5-pro");
        let out: Vec<Value> = run_stream(conv, up, false).iter().map(data_json).collect();
        let texts: Vec<&Value> = out.iter().map(|c| &c["candidates"][0]["content"]["parts"]).collect();
        assert!(texts.contains(&&json!([{"text": "Hi"}])), "{out:?}");
        let last = out.last().unwrap();
        assert_eq!(
            last["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"id": "toolu_3", "name": "ls", "args": {"dir": "src"}}}])
        );
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"],
            json!({"promptTokenCount": 12, "candidatesTokenCount": 15, "totalTokenCount": 27})
        );
        // Cut mid-answer: one Gemini error chunk.
        let cut = up.split("event: message_delta").next().unwrap();
        let out: Vec<Value> = run_stream(StreamConverter::new(Conversion::GeminiToAnthropic, "g"), cut, true)
            .iter()
            .map(data_json)
            .collect();
        assert_eq!(out.last().unwrap()["error"]["status"], "INTERNAL");
        assert_eq!(out.iter().filter(|c| c.get("error").is_some()).count(), 1);
    }

    #[test]
    fn stream_json_array_framing() {
        let up = chunk(json!({"content": "Hi"}), None) + &chunk(json!({}), Some("stop")) + "data: [DONE]\n\n";
        let mut conv = StreamConverter::new(Conversion::GeminiToChat, "g").with_json_array(true);
        let mut wire = Vec::new();
        for ev in parse_sse(&up) {
            let mut events = Vec::new();
            conv.push(&ev, &mut events);
            wire.extend(conv.encode(&events, false).unwrap_or_default());
        }
        let mut events = Vec::new();
        conv.finish(false, &mut events);
        wire.extend(conv.encode(&events, true).unwrap_or_default());
        let arr: Vec<Value> =
            serde_json::from_slice(&wire).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&wire)));
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[1]["candidates"][0]["finishReason"], "STOP");
    }
}
