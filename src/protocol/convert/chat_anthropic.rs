//! OpenAI Chat Completions client <-> Anthropic Messages upstream.
//!
//! Owns: Chat request -> Messages request (system/developer -> `system`, content parts -> blocks, assistant
//! `tool_calls` -> `tool_use`, `tool` messages -> merged user `tool_result` blocks, tools and tool_choice,
//! max_tokens defaulting, stop, sampling fields, reasoning_effort -> thinking budget), Message -> chat.completion,
//! and Anthropic stream events -> chat.completion.chunk events ([`ChatStream`]).

use serde_json::{Map, Value, json};

use super::{
    ConvertError, INTERRUPTED_MESSAGE, Tokens, anthropic_stop_to_chat, arguments_object, arguments_string, copy_field,
    data_event, new_id, openai_content_text, openai_error_body, str_field, unix_now,
};
use crate::protocol::sse::SseEvent;

/// `max_tokens` sent when the client gave none (Anthropic requires it).
const DEFAULT_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------------------------------------------------
// Request

/// OpenAI Chat request -> Anthropic Messages request.
pub(super) fn request_to_anthropic(req: &Map<String, Value>, upstream_model: &str) -> Result<Value, ConvertError> {
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for msg in req.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let content = msg.get("content");
        match msg.get("role").and_then(Value::as_str).unwrap_or("user") {
            "system" | "developer" => system.push(openai_content_text(content)),
            "assistant" => push_turn(&mut messages, "assistant", assistant_blocks(msg)),
            "tool" => push_turn(&mut messages, "user", vec![tool_result_block(msg)]),
            _ => push_turn(&mut messages, "user", user_blocks(content)),
        }
    }
    system.retain(|s| !s.is_empty());
    match system.len() {
        0 => {}
        1 => {
            out.insert("system".into(), system.remove(0).into());
        }
        _ => {
            let blocks: Vec<Value> = system.into_iter().map(|t| json!({"type": "text", "text": t})).collect();
            out.insert("system".into(), Value::Array(blocks));
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max_tokens.into());
    insert_tools(req, &mut out);
    if let Some(stop) = stop_sequences(req.get("stop")) {
        out.insert("stop_sequences".into(), stop);
    }
    let thinking = req.get("reasoning_effort").and_then(Value::as_str).and_then(effort_to_budget);
    match thinking {
        Some(budget) => insert_thinking(&mut out, budget, max_tokens),
        None => {
            if let Some(t) = req.get("temperature").and_then(Value::as_f64) {
                // Anthropic accepts 0..=1, OpenAI 0..=2.
                out.insert("temperature".into(), t.clamp(0.0, 1.0).into());
            }
            copy_field(req, "top_p", &mut out, "top_p");
            copy_field(req, "top_k", &mut out, "top_k");
        }
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

/// Appends blocks as a turn, merging with the previous turn of the same role (so consecutive `tool` messages
/// and the user text after them form one user message, tool results first).
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut().filter(|m| m["role"] == role)
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// User content (string or parts) -> blocks. Empty text is dropped (Anthropic rejects empty text blocks).
fn user_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts.iter().filter_map(part_to_block).collect(),
        _ => Vec::new(),
    }
}

fn part_to_block(part: &Value) -> Option<Value> {
    match part.get("type").and_then(Value::as_str)? {
        "image_url" => {
            let url = match part.get("image_url")? {
                Value::String(s) => s.as_str(),
                obj => obj.get("url")?.as_str()?,
            };
            Some(json!({"type": "image", "source": url_source(url)?}))
        }
        "file" => {
            let data = part.pointer("/file/file_data")?.as_str()?;
            Some(json!({"type": "document", "source": url_source(data)?}))
        }
        _ => {
            let text = part.get("text").or_else(|| part.get("refusal"))?.as_str()?;
            (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
        }
    }
}

/// A URL -> Anthropic source: `data:<type>;base64,<data>` becomes a base64 source, anything else a url source.
fn url_source(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        return Some(json!({"type": "base64", "media_type": media, "data": data}));
    }
    Some(json!({"type": "url", "url": url}))
}

/// An assistant message -> text blocks then `tool_use` blocks. `reasoning_content` is dropped: Anthropic needs
/// a signature for thinking blocks sent back, which a Chat client does not have.
fn assistant_blocks(msg: &Value) -> Vec<Value> {
    let mut blocks = user_blocks(msg.get("content"));
    for call in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        let args = arguments_string(function.and_then(|f| f.get("arguments")));
        blocks.push(json!({
            "type": "tool_use",
            "id": str_field(call, "id").map_or_else(|| new_id("toolu_"), str::to_string),
            "name": function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default(),
            "input": arguments_object(&args),
        }));
    }
    blocks
}

/// A `tool` message -> `tool_result` block (text kept as a string, parts as text blocks).
fn tool_result_block(msg: &Value) -> Value {
    let content = match msg.get("content") {
        Some(Value::Array(parts)) => Value::Array(parts.iter().filter_map(part_to_block).collect()),
        other => openai_content_text(other).into(),
    };
    let id = msg.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
    json!({"type": "tool_result", "tool_use_id": id, "content": content})
}

/// `tools` and `tool_choice` (+ `parallel_tool_calls: false` -> `disable_parallel_tool_use`).
fn insert_tools(req: &Map<String, Value>, out: &mut Map<String, Value>) {
    let tools: Vec<Value> = req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            let mut tool = Map::new();
            tool.insert("name".into(), f.get("name")?.clone());
            copy_field(f.as_object()?, "description", &mut tool, "description");
            let schema = f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            Some(Value::Object(tool))
        })
        .collect();
    if tools.is_empty() {
        return;
    }
    out.insert("tools".into(), Value::Array(tools));
    let mut choice = req.get("tool_choice").and_then(tool_choice_to_anthropic);
    if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
}

fn tool_choice_to_anthropic(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            _ => None,
        },
        obj => {
            let name = obj.pointer("/function/name").or_else(|| obj.get("name"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    }
}

fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    match stop? {
        Value::String(s) => Some(json!([s])),
        Value::Array(a) if !a.is_empty() => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// `reasoning_effort` -> thinking budget; `none`/`minimal`/unknown -> no thinking.
fn effort_to_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

/// Enables thinking. Anthropic requires `max_tokens > budget_tokens` and rejects sampling changes with
/// thinking, so `max_tokens` is raised above the budget and temperature/top_p/top_k are left out.
fn insert_thinking(out: &mut Map<String, Value>, budget: u64, max_tokens: u64) {
    out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    if max_tokens <= budget {
        out.insert("max_tokens".into(), (budget + max_tokens).into());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Non-stream response

/// Anthropic Message -> chat.completion.
pub(super) fn response_from_anthropic(resp: &Map<String, Value>, client_model: &str) -> Result<Value, ConvertError> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in resp.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {"name": block.get("name").cloned().unwrap_or_default(),
                             "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string)},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    let finish = anthropic_stop_to_chat(resp.get("stop_reason").and_then(Value::as_str), !calls.is_empty());
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = resp.get("usage").and_then(Tokens::from_anthropic).unwrap_or_default();
    Ok(json!({
        "id": chat_id(resp.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": unix_now(),
        "model": client_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage.to_chat(),
    }))
}

/// `chatcmpl-` id derived from the upstream message id (traceable), or random.
fn chat_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => new_id("chatcmpl-"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Stream

/// Anthropic stream events -> chat.completion.chunk events.
#[derive(Debug)]
pub(crate) struct ChatStream {
    pub(super) include_usage: bool,
    model: String,
    id: String,
    created: i64,
    role_sent: bool,
    /// (Anthropic block index, Chat tool_calls index) for each tool_use block.
    tools: Vec<(u64, usize)>,
    stop_reason: Option<String>,
    usage: Option<Tokens>,
    closed: bool,
}

impl ChatStream {
    pub fn new(client_model: &str) -> Self {
        Self {
            include_usage: false,
            model: client_model.to_string(),
            id: new_id("chatcmpl-"),
            created: unix_now(),
            role_sent: false,
            tools: Vec::new(),
            stop_reason: None,
            usage: None,
            closed: false,
        }
    }

    pub fn usage(&self) -> Option<Tokens> {
        self.usage
    }

    pub fn push(&mut self, ev: &SseEvent, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        // The JSON `type` is authoritative; the `event:` name is only a fallback.
        let kind = data.get("type").and_then(Value::as_str).or(ev.event.as_deref()).unwrap_or_default();
        match kind {
            "message_start" => self.on_message_start(&data, out),
            "content_block_start" => self.on_block_start(&data, out),
            "content_block_delta" => self.on_block_delta(&data, out),
            "message_delta" => {
                if let Some(stop) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(stop.to_string());
                }
                self.merge_usage(data.get("usage"));
            }
            "message_stop" => self.complete(out),
            "error" => {
                let err = data.get("error").cloned().unwrap_or_default();
                let message = str_field(&err, "message").unwrap_or("upstream error");
                let kind = str_field(&err, "type").unwrap_or("api_error");
                self.error(message, kind, None, out);
            }
            _ => {} // ping, content_block_stop, unknown
        }
    }

    pub fn finish(&mut self, interrupted: bool, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        // Cut after the finish reason: the answer is whole, only usage/[DONE] is missing, so close cleanly.
        if interrupted && self.stop_reason.is_none() {
            self.error(INTERRUPTED_MESSAGE, "api_error", Some("upstream_interrupted"), out);
        } else {
            self.complete(out);
        }
    }

    fn on_message_start(&mut self, data: &Value, out: &mut Vec<SseEvent>) {
        if let Some(id) = data.pointer("/message/id").and_then(Value::as_str) {
            self.id = chat_id(Some(id));
        }
        self.merge_usage(data.pointer("/message/usage"));
        self.ensure_role(out);
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(u) = usage {
            let mut t = self.usage.unwrap_or_default();
            if t.merge_anthropic(u) {
                self.usage = Some(t);
            }
        }
    }

    fn ensure_role(&mut self, out: &mut Vec<SseEvent>) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(json!({"role": "assistant", "content": ""}), Value::Null, out);
        }
    }

    fn on_block_start(&mut self, data: &Value, out: &mut Vec<SseEvent>) {
        self.ensure_role(out);
        let block = data.get("content_block").cloned().unwrap_or_default();
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let index = self.tools.len();
                self.tools.push((data.get("index").and_then(Value::as_u64).unwrap_or(0), index));
                let call = json!({"index": index, "id": block.get("id").cloned().unwrap_or_default(), "type": "function",
                    "function": {"name": block.get("name").cloned().unwrap_or_default(), "arguments": ""}});
                self.chunk(json!({"tool_calls": [call]}), Value::Null, out);
            }
            Some("text") => self.text(str_field(&block, "text"), "content", out),
            Some("thinking") => self.text(str_field(&block, "thinking"), "reasoning_content", out),
            _ => {}
        }
    }

    fn on_block_delta(&mut self, data: &Value, out: &mut Vec<SseEvent>) {
        self.ensure_role(out);
        let delta = data.get("delta").cloned().unwrap_or_default();
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => self.text(str_field(&delta, "text"), "content", out),
            Some("thinking_delta") => self.text(str_field(&delta, "thinking"), "reasoning_content", out),
            Some("input_json_delta") => {
                let block = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) else {
                    return;
                };
                if let Some(partial) = str_field(&delta, "partial_json") {
                    let call = json!({"index": index, "function": {"arguments": partial}});
                    self.chunk(json!({"tool_calls": [call]}), Value::Null, out);
                }
            }
            _ => {} // signature_delta, citations_delta
        }
    }

    fn text(&self, text: Option<&str>, field: &str, out: &mut Vec<SseEvent>) {
        if let Some(t) = text {
            self.chunk(json!({ field: t }), Value::Null, out);
        }
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<SseEvent>) {
        let choices = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
        out.push(data_event(&self.chunk_body(choices)));
    }

    fn chunk_body(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": choices})
    }

    /// Finish chunk, the usage chunk if the client asked for it, then `[DONE]`.
    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        self.ensure_role(out);
        let finish = anthropic_stop_to_chat(self.stop_reason.as_deref(), !self.tools.is_empty());
        self.chunk(json!({}), finish.into(), out);
        if self.include_usage {
            let mut body = self.chunk_body(json!([]));
            body["usage"] = self.usage.unwrap_or_default().to_chat();
            out.push(data_event(&body));
        }
        out.push(SseEvent::data("[DONE]"));
        self.closed = true;
    }

    fn error(&mut self, message: &str, kind: &str, code: Option<&str>, out: &mut Vec<SseEvent>) {
        out.push(data_event(&openai_error_body(message, kind, code)));
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{data_json, names, run_stream, to_value};
    use super::super::{Conversion, StreamConverter, convert_request, convert_response};
    use super::*;

    fn to_anthropic(req: Value) -> Value {
        to_value(
            &convert_request(Conversion::ChatToAnthropic, req.to_string().as_bytes(), "claude-sonnet-4-5").unwrap(),
        )
    }

    #[test]
    fn request_system_defaults_and_sampling() {
        let a = to_anthropic(json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "Hi"}],
            "temperature": 1.7, "top_p": 0.8, "stop": "END", "stream": true,
            "stream_options": {"include_usage": true}, "user": "u1", "n": 1, "logprobs": false,
            "response_format": {"type": "text"}, "frequency_penalty": 0.5}));
        assert_eq!(a["model"], "claude-sonnet-4-5");
        assert_eq!(a["system"], json!([{"type": "text", "text": "Be terse."}, {"type": "text", "text": "No emojis."}]));
        assert_eq!(a["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]));
        assert_eq!(a["max_tokens"], 4096);
        assert_eq!(a["temperature"], 1.0);
        assert_eq!(a["top_p"], 0.8);
        assert_eq!(a["stop_sequences"], json!(["END"]));
        assert_eq!(a["stream"], true);
        assert_eq!(a["metadata"], json!({"user_id": "u1"}));
        for dropped in ["stream_options", "n", "logprobs", "response_format", "frequency_penalty", "thinking"] {
            assert!(a.get(dropped).is_none(), "{dropped} should be dropped");
        }
        let a = to_anthropic(json!({"messages": [], "max_completion_tokens": 77, "max_tokens": 5, "stop": ["a", "b"]}));
        assert_eq!(a["max_tokens"], 77);
        assert_eq!(a["stop_sequences"], json!(["a", "b"]));
        assert!(a.get("system").is_none());
    }

    #[test]
    fn request_reasoning_effort_to_thinking() {
        let a =
            to_anthropic(json!({"messages": [], "reasoning_effort": "high", "max_tokens": 1000, "temperature": 0.3}));
        assert_eq!(a["thinking"], json!({"type": "enabled", "budget_tokens": 24576}));
        assert!(a["max_tokens"].as_u64().unwrap() > 24576);
        assert!(a.get("temperature").is_none());
        let a = to_anthropic(json!({"messages": [], "reasoning_effort": "low", "max_tokens": 8000}));
        assert_eq!(a["thinking"]["budget_tokens"], 1024);
        assert_eq!(a["max_tokens"], 8000);
        assert_eq!(
            to_anthropic(json!({"messages": [], "reasoning_effort": "medium"}))["thinking"]["budget_tokens"],
            8192
        );
        assert!(to_anthropic(json!({"messages": [], "reasoning_effort": "minimal"})).get("thinking").is_none());
    }

    #[test]
    fn request_tools_calls_and_merged_results() {
        let a = to_anthropic(json!({"messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "reasoning_content": "hmm", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Warmer?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "no_params"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false}));
        let msgs = a["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(
            msgs[1],
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}]})
        );
        assert_eq!(
            msgs[2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"type": "text", "text": "Warmer?"}]})
        );
        assert_eq!(
            a["tools"][0],
            json!({"name": "get_weather", "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
        );
        assert_eq!(a["tools"][1]["input_schema"], json!({"type": "object", "properties": {}}));
        assert_eq!(a["tool_choice"], json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}));
    }

    #[test]
    fn request_tool_choice_strings() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        for (choice, want) in
            [("auto", json!({"type": "auto"})), ("required", json!({"type": "any"})), ("none", json!({"type": "none"}))]
        {
            let a = to_anthropic(json!({"messages": [], "tools": tools, "tool_choice": choice}));
            assert_eq!(a["tool_choice"], want);
        }
        // No tools: no tool_choice either.
        assert!(to_anthropic(json!({"messages": [], "tool_choice": "auto"})).get("tool_choice").is_none());
    }

    #[test]
    fn request_images() {
        let a = to_anthropic(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What's this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}));
        let content = a["messages"][0]["content"].as_array().unwrap();
        assert_eq!(content.len(), 3, "audio has no Anthropic equivalent and is dropped");
        assert_eq!(
            content[1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
        assert_eq!(content[2], json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}));
    }

    #[test]
    fn response_to_chat_completion() {
        let body = json!({"id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
                        {"type": "text", "text": "Checking "}, {"type": "text", "text": "now."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
                      "output_tokens": 6, "cache_creation": {"ephemeral_5m_input_tokens": 100}}});
        let out =
            to_value(&convert_response(Conversion::ChatToAnthropic, body.to_string().as_bytes(), "gpt-4o").unwrap());
        assert_eq!(out["id"], "chatcmpl-01abc");
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "gpt-4o");
        assert!(out["created"].as_i64().unwrap() > 1_600_000_000);
        let msg = &out["choices"][0]["message"];
        assert_eq!(msg["content"], "Checking now.");
        assert_eq!(msg["reasoning_content"], "Let me see.");
        assert_eq!(msg["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(msg["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["usage"]["prompt_tokens"], 1112);
        assert_eq!(out["usage"]["completion_tokens"], 6);
        assert_eq!(out["usage"]["total_tokens"], 1118);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 1000);
    }

    #[test]
    fn response_stop_reasons() {
        for (stop, finish) in
            [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]
        {
            let body = json!({"content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}});
            let out =
                to_value(&convert_response(Conversion::ChatToAnthropic, body.to_string().as_bytes(), "m").unwrap());
            assert_eq!(out["choices"][0]["finish_reason"], finish);
            assert_eq!(out["choices"][0]["message"]["content"], "x");
            assert!(out["choices"][0]["message"].get("tool_calls").is_none());
        }
    }

    const TEXT_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":30,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#;

    fn stream(upstream: &str, include_usage: bool, interrupted: bool) -> Vec<SseEvent> {
        let conv = StreamConverter::new(Conversion::ChatToAnthropic, "gpt-4o").with_include_usage(include_usage);
        run_stream(conv, upstream, interrupted)
    }

    #[test]
    fn stream_text_with_usage_chunk() {
        let out = stream(TEXT_STREAM, true, false);
        assert_eq!(names(&out), ["data", "data", "data", "data", "data", "[DONE]"]);
        let v: Vec<Value> = out[..5].iter().map(data_json).collect();
        assert_eq!(v[0]["object"], "chat.completion.chunk");
        assert_eq!(v[0]["id"], "chatcmpl-01");
        assert_eq!(v[0]["model"], "gpt-4o");
        assert_eq!(v[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(v[1]["choices"][0]["delta"], json!({"reasoning_content": "Hmm."}));
        assert_eq!(v[2]["choices"][0]["delta"], json!({"content": "Hello"}));
        assert_eq!(v[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(v[4]["choices"], json!([]));
        assert_eq!(v[4]["usage"]["prompt_tokens"], 42);
        assert_eq!(v[4]["usage"]["completion_tokens"], 15);
        assert_eq!(v[4]["usage"]["total_tokens"], 57);
        assert_eq!(v[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
    }

    #[test]
    fn stream_without_include_usage_has_no_usage_chunk() {
        let out = stream(TEXT_STREAM, false, false);
        assert_eq!(out.len(), 5);
        assert_eq!(out.last().unwrap().data, "[DONE]");
        assert!(out.iter().all(|e| !e.data.contains("\"usage\"")));
    }

    #[test]
    fn stream_tool_use_split_json() {
        let args = json!({"path": "/tmp/x", "recursive": true, "depth": 3});
        let text = args.to_string();
        let mut upstream = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
             event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"list\",\"input\":{}}}\n\n\
             event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        );
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(4) {
            let delta = json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece.iter().collect::<String>()}});
            upstream.push_str(&format!("event: content_block_delta\ndata: {delta}\n\n"));
        }
        upstream.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
             event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n\
             event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let out = stream(&upstream, false, false);
        let v: Vec<Value> = out[..out.len() - 1].iter().map(data_json).collect();
        assert_eq!(
            v[1]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "list", "arguments": ""}})
        );
        let joined: String = v[2..v.len() - 1]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
        assert_eq!(v.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn stream_error_event() {
        let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_3\"}}\n\n\
                        event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let out = stream(upstream, true, false);
        assert_eq!(out.len(), 2);
        assert_eq!(
            data_json(&out[1]),
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
        );
    }

    #[test]
    fn stream_interrupted_and_clean_eof_without_stop() {
        let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_4\"}}\n\n\
                        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        let out = stream(upstream, true, true);
        let last = data_json(out.last().unwrap());
        assert_eq!(last["error"]["type"], "api_error");
        assert_eq!(last["error"]["code"], "upstream_interrupted");
        assert!(out.iter().all(|e| e.data != "[DONE]"));
        let out = stream(upstream, false, false);
        assert_eq!(out.last().unwrap().data, "[DONE]");
        assert_eq!(data_json(&out[out.len() - 2])["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn stream_cut_after_message_delta_closes_cleanly() {
        let upstream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_5\"}}\n\n\
                        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":3}}\n\n";
        let out = stream(upstream, false, true);
        assert_eq!(out.last().unwrap().data, "[DONE]");
        assert_eq!(data_json(&out[out.len() - 2])["choices"][0]["finish_reason"], "length");
    }
}
