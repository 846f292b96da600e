//! Anthropic Messages client <-> OpenAI Chat Completions upstream.
//!
//! Owns: Messages request -> Chat request (system, text/image/document blocks, `tool_use`/`tool_result` <->
//! `tool_calls`/`tool` messages in order, tools and tool_choice, sampling fields, thinking -> reasoning_effort,
//! metadata.user_id -> user), Chat response -> Message (reasoning -> thinking block, text, tool_use, stop reason,
//! usage without double-counted cache tokens), and Chat chunks -> Anthropic stream events ([`AnthropicStream`]).

use serde_json::{Map, Value, json};

use super::chat_stream::{ChatDecoder, Piece};
use super::{
    ConvertError, INTERRUPTED_MESSAGE, Tokens, anthropic_error_body, arguments_object, arguments_string,
    chat_finish_to_anthropic, copy_field, named_event, new_id, openai_content_text, str_field,
};
use crate::protocol::sse::SseEvent;

// ---------------------------------------------------------------------------------------------------------
// Request

/// Anthropic Messages request -> OpenAI Chat request.
pub(super) fn request_to_chat(req: &Map<String, Value>, upstream_model: &str) -> Result<Value, ConvertError> {
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let mut messages = Vec::new();
    if let Some(system) = system_text(req.get("system")) {
        messages.push(json!({"role": "system", "content": system}));
    }
    for msg in req.get("messages").and_then(Value::as_array).into_iter().flatten() {
        match msg.get("role").and_then(Value::as_str) {
            Some("assistant") => messages.extend(assistant_message(msg.get("content"))),
            _ => user_messages(msg.get("content"), &mut messages),
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    let tools = tools_to_chat(req.get("tools"));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = req.get("tool_choice") {
            if let Some(c) = tool_choice_to_chat(choice) {
                out.insert("tool_choice".into(), c);
            }
            if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    copy_field(req, "max_tokens", &mut out, "max_tokens");
    if let Some(stop) = req.get("stop_sequences").filter(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
        out.insert("stop".into(), stop.clone());
    }
    copy_field(req, "temperature", &mut out, "temperature");
    copy_field(req, "top_p", &mut out, "top_p");
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(effort) = req.get("thinking").and_then(thinking_to_effort) {
        out.insert("reasoning_effort".into(), effort.into());
    }
    if let Some(user) = req.get("metadata").and_then(|m| str_field(m, "user_id")) {
        out.insert("user".into(), user.into());
    }
    Ok(Value::Object(out))
}

/// `system` as a string or text blocks -> one string (blocks joined by blank lines).
fn system_text(system: Option<&Value>) -> Option<String> {
    let text = match system? {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n\n")
        }
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// Content as a block list (a bare string becomes one text block).
fn blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// A user turn -> `tool` messages for its `tool_result` blocks first (in order), then one user message with the
/// rest (text, images, documents, and any images the tool results carried).
fn user_messages(content: Option<&Value>, messages: &mut Vec<Value>) {
    let mut parts = Vec::new();
    for block in blocks(content) {
        if block.get("type").and_then(Value::as_str) == Some("tool_result") {
            messages.push(tool_result_message(&block, &mut parts));
        } else if let Some(part) = block_to_part(&block) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        return;
    }
    let all_text = parts.iter().all(|p| p["type"] == "text");
    let content = if all_text {
        Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n\n"))
    } else {
        Value::Array(parts)
    };
    messages.push(json!({"role": "user", "content": content}));
}

/// A `tool_result` block -> `{role:tool}` message. Chat tool messages carry text only, so images in the result
/// are moved to `extra_parts` (the user message that follows).
fn tool_result_message(block: &Value, extra_parts: &mut Vec<Value>) -> Value {
    let text = match block.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(item["text"].as_str().unwrap_or_default().to_string()),
                    _ => extra_parts.extend(block_to_part(item)),
                }
            }
            texts.join("\n")
        }
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let id = block.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
    json!({"role": "tool", "tool_call_id": id, "content": text})
}

/// A user content block -> a Chat content part, if Chat has an equivalent.
fn block_to_part(block: &Value) -> Option<Value> {
    match block.get("type").and_then(Value::as_str)? {
        "image" => {
            let url = source_url(block.get("source")?)?;
            Some(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        "document" => document_part(block.get("source")?),
        "thinking" | "redacted_thinking" | "tool_use" => None,
        // text, and unknown blocks that still carry text
        _ => Some(json!({"type": "text", "text": block.get("text")?.as_str()?})),
    }
}

/// Image source -> URL: base64 becomes a `data:` URL, url sources stay as they are.
fn source_url(source: &Value) -> Option<String> {
    match source.get("type").and_then(Value::as_str)? {
        "base64" => {
            let media = source.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            Some(format!("data:{media};base64,{}", source.get("data")?.as_str()?))
        }
        "url" => Some(source.get("url")?.as_str()?.to_string()),
        _ => None,
    }
}

fn document_part(source: &Value) -> Option<Value> {
    match source.get("type").and_then(Value::as_str)? {
        "text" => Some(json!({"type": "text", "text": source.get("data")?.as_str()?})),
        "base64" => {
            let media = source.get("media_type").and_then(Value::as_str).unwrap_or("application/pdf");
            let data = format!("data:{media};base64,{}", source.get("data")?.as_str()?);
            Some(json!({"type": "file", "file": {"filename": "document.pdf", "file_data": data}}))
        }
        _ => None,
    }
}

/// An assistant turn -> one assistant message: text blocks joined into `content`, `tool_use` blocks into
/// `tool_calls`. Thinking blocks are dropped (Chat providers do not take them back); a turn left with nothing
/// is skipped.
fn assistant_message(content: Option<&Value>) -> Option<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks(content) {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return None;
    }
    let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    Some(msg)
}

/// Client tools -> Chat function tools. Anthropic server tools (typed, e.g. `web_search_20250305`) have no Chat
/// equivalent and are dropped.
fn tools_to_chat(tools: Option<&Value>) -> Vec<Value> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| matches!(t.get("type").and_then(Value::as_str), None | Some("custom")))
        .filter_map(|t| {
            let mut function = Map::new();
            function.insert("name".into(), t.get("name")?.clone());
            copy_field(t.as_object()?, "description", &mut function, "description");
            let params = t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            function.insert("parameters".into(), params);
            Some(json!({"type": "function", "function": function}))
        })
        .collect()
}

fn tool_choice_to_chat(choice: &Value) -> Option<Value> {
    match choice.get("type").and_then(Value::as_str)? {
        "auto" => Some("auto".into()),
        "any" => Some("required".into()),
        "none" => Some("none".into()),
        "tool" => Some(json!({"type": "function", "function": {"name": choice.get("name")?}})),
        _ => None,
    }
}

/// `thinking: {type: enabled, budget_tokens}` -> `reasoning_effort`.
fn thinking_to_effort(thinking: &Value) -> Option<&'static str> {
    if thinking.get("type").and_then(Value::as_str) != Some("enabled") {
        return None;
    }
    let budget = thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
    Some(super::budget_to_effort(budget))
}

// ---------------------------------------------------------------------------------------------------------
// Non-stream response

/// OpenAI Chat completion -> Anthropic Message.
pub(super) fn response_from_chat(resp: &Map<String, Value>, client_model: &str) -> Result<Value, ConvertError> {
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| ConvertError::Unsupported("upstream chat response has no choices".into()))?;
    let message = choice.get("message").cloned().unwrap_or_else(|| json!({}));
    let mut content = Vec::new();
    let reasoning = str_field(&message, "reasoning_content").or_else(|| str_field(&message, "reasoning"));
    if let Some(thinking) = reasoning {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    let text = openai_content_text(message.get("content"));
    let text = if text.is_empty() { str_field(&message, "refusal").unwrap_or_default().to_string() } else { text };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let mut calls: Vec<Value> = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(fc) = message.get("function_call").filter(|f| f.is_object()) {
        calls.push(json!({"function": fc}));
    }
    let has_tools = !calls.is_empty();
    for call in &calls {
        content.push(tool_use_block(call));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let usage = resp.get("usage").and_then(Tokens::from_chat).unwrap_or_default();
    Ok(json!({
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": chat_finish_to_anthropic(finish, has_tools),
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    }))
}

/// A Chat tool call -> `tool_use` block; arguments that do not parse become `{}`.
fn tool_use_block(call: &Value) -> Value {
    let function = call.get("function");
    let id = str_field(call, "id").map_or_else(|| new_id("toolu_"), str::to_string);
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
    let input = arguments_object(&arguments_string(function.and_then(|f| f.get("arguments"))));
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

// ---------------------------------------------------------------------------------------------------------
// Stream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool(usize),
}

/// Chat chunks -> Anthropic stream events. At most one content block is open at a time; indices increase.
#[derive(Debug)]
pub(crate) struct AnthropicStream {
    decoder: ChatDecoder,
    model: String,
    id: String,
    started: bool,
    /// The open block: (index, kind).
    open: Option<(usize, BlockKind)>,
    next_index: usize,
    /// Block index of each tool slot.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<String>,
    usage: Option<Tokens>,
    /// `message_stop` or `error` was sent: nothing more goes out.
    closed: bool,
}

impl AnthropicStream {
    pub fn new(client_model: &str) -> Self {
        Self {
            decoder: ChatDecoder::default(),
            model: client_model.to_string(),
            id: new_id("msg_"),
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: Vec::new(),
            finish: None,
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
        let mut pieces = Vec::new();
        self.decoder.decode(ev, &mut pieces);
        // Usage carried by the very first chunk goes into message_start.
        if let Some(tokens) = pieces.iter().find_map(|p| match p {
            Piece::Usage { tokens, .. } => Some(*tokens),
            _ => None,
        }) {
            self.usage = Some(tokens);
        }
        for piece in pieces {
            self.apply(piece, out);
            if self.closed {
                return;
            }
        }
    }

    fn apply(&mut self, piece: Piece, out: &mut Vec<SseEvent>) {
        match piece {
            Piece::Began => self.ensure_started(out),
            Piece::Reasoning(text) => {
                let index = self.ensure_block(BlockKind::Thinking, out);
                self.delta(index, json!({"type": "thinking_delta", "thinking": text}), out);
            }
            Piece::Text(text) => {
                let index = self.ensure_block(BlockKind::Text, out);
                self.delta(index, json!({"type": "text_delta", "text": text}), out);
            }
            Piece::ToolStart { slot, id, name } => {
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let index = self.open_block(BlockKind::Tool(slot), block, out);
                self.tool_blocks.push((slot, index));
            }
            Piece::ToolArgs { slot, fragment } => {
                // A fragment for an earlier (already closed) call still goes to that call's index.
                if let Some(&(_, index)) = self.tool_blocks.iter().find(|(s, _)| *s == slot) {
                    self.delta(index, json!({"type": "input_json_delta", "partial_json": fragment}), out);
                }
            }
            Piece::Finish(reason) => {
                self.close_block(out);
                self.finish = Some(reason);
            }
            // The usage chunk that follows the finish chunk ends the message; otherwise wait for [DONE].
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

    pub fn finish(&mut self, interrupted: bool, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        // Cut after the finish reason: the answer is whole, only usage/[DONE] is missing, so close cleanly.
        if interrupted && self.finish.is_none() {
            self.error(INTERRUPTED_MESSAGE, out);
        } else {
            self.complete(out);
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = Tokens { output: 0, ..self.usage.unwrap_or_default() };
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": null, "stop_sequence": null, "usage": usage.to_anthropic(),
        });
        out.push(named_event("message_start", &json!({"type": "message_start", "message": message})));
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn ensure_block(&mut self, kind: BlockKind, out: &mut Vec<SseEvent>) -> usize {
        match self.open {
            Some((index, open)) if open == kind => index,
            _ => {
                let block = match kind {
                    BlockKind::Thinking => {
                        json!({"type": "thinking", "thinking": "", "signature": ""})
                    }
                    _ => json!({"type": "text", "text": ""}),
                };
                self.open_block(kind, block, out)
            }
        }
    }

    fn open_block(&mut self, kind: BlockKind, block: Value, out: &mut Vec<SseEvent>) -> usize {
        self.ensure_started(out);
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        let ev = json!({"type": "content_block_start", "index": index, "content_block": block});
        out.push(named_event("content_block_start", &ev));
        index
    }

    fn close_block(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(named_event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn delta(&self, index: usize, delta: Value, out: &mut Vec<SseEvent>) {
        let ev = json!({"type": "content_block_delta", "index": index, "delta": delta});
        out.push(named_event("content_block_delta", &ev));
    }

    /// Closes the message: open block, `message_delta` (stop reason + final usage), `message_stop`.
    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        self.ensure_started(out);
        self.close_block(out);
        let stop = chat_finish_to_anthropic(self.finish.as_deref(), !self.tool_blocks.is_empty());
        let usage = match self.usage {
            Some(t) => t.to_anthropic(),
            None => json!({"output_tokens": 0}),
        };
        let ev =
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage});
        out.push(named_event("message_delta", &ev));
        out.push(named_event("message_stop", &json!({"type": "message_stop"})));
        self.closed = true;
    }

    fn error(&mut self, message: &str, out: &mut Vec<SseEvent>) {
        out.push(named_event("error", &anthropic_error_body("api_error", message)));
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{data_json, names, run_stream, to_value};
    use super::super::{Conversion, StreamConverter, convert_request, convert_response};
    use super::*;

    fn to_chat(req: Value) -> Value {
        to_value(&convert_request(Conversion::AnthropicToChat, req.to_string().as_bytes(), "gpt-4o-mini").unwrap())
    }

    #[test]
    fn request_system_sampling_and_metadata() {
        let chat = to_chat(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Answer in French."}],
            "messages": [{"role": "user", "content": "Bonjour"}],
            "stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 5,
            "metadata": {"user_id": "user-42"}, "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "some_future_field": {"x": 1},
        }));
        assert_eq!(chat["model"], "gpt-4o-mini");
        assert_eq!(chat["messages"][0], json!({"role": "system", "content": "You are terse.\n\nAnswer in French."}));
        assert_eq!(chat["messages"][1], json!({"role": "user", "content": "Bonjour"}));
        assert_eq!(chat["max_tokens"], 1024);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["temperature"], 0.2);
        assert_eq!(chat["top_p"], 0.9);
        assert_eq!(chat["user"], "user-42");
        assert_eq!(chat["stream"], true);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert_eq!(chat["reasoning_effort"], "medium");
        assert!(chat.get("top_k").is_none() && chat.get("some_future_field").is_none());
        assert!(chat.get("metadata").is_none() && chat.get("thinking").is_none());
    }

    #[test]
    fn thinking_budget_thresholds() {
        let effort = |b: u64| thinking_to_effort(&json!({"type": "enabled", "budget_tokens": b}));
        assert_eq!(effort(1024), Some("low"));
        assert_eq!(effort(4095), Some("low"));
        assert_eq!(effort(4096), Some("medium"));
        assert_eq!(effort(16383), Some("medium"));
        assert_eq!(effort(16384), Some("high"));
        assert_eq!(thinking_to_effort(&json!({"type": "disabled"})), None);
    }

    #[test]
    fn request_tools_and_tool_choice() {
        let base = json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object",
              "properties": {"city": {"type": "string"}}, "required": ["city"]}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ]});
        let cases = [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "get_weather"}),
                json!({"type": "function", "function": {"name": "get_weather"}}),
            ),
        ];
        for (choice, want) in cases {
            let mut req = base.clone();
            req["tool_choice"] = choice;
            let chat = to_chat(req);
            assert_eq!(chat["tool_choice"], want);
            assert_eq!(chat["tools"].as_array().unwrap().len(), 1, "server tool dropped");
            assert_eq!(
                chat["tools"][0],
                json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
            );
        }
        let mut req = base.clone();
        req["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
        assert_eq!(to_chat(req)["parallel_tool_calls"], false);
    }

    #[test]
    fn request_tool_use_and_results_keep_order() {
        let chat = to_chat(json!({"model": "c", "max_tokens": 10, "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me call", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}], "is_error": false},
                {"type": "text", "text": "Which is warmer?"}]}
        ]}));
        let msgs = chat["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[1]["role"], "assistant");
        assert_eq!(msgs[1]["content"], "Checking.");
        let calls = msgs[1]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["id"], "toolu_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Rome"}));
        assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}));
        assert_eq!(msgs[3], json!({"role": "tool", "tool_call_id": "toolu_2", "content": "21C"}));
        assert_eq!(msgs[4], json!({"role": "user", "content": "Which is warmer?"}));
    }

    #[test]
    fn request_tool_only_assistant_has_null_content() {
        let chat = to_chat(json!({"model": "c", "max_tokens": 10, "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}));
        assert_eq!(chat["messages"][0]["content"], Value::Null);
        assert_eq!(chat["messages"][0]["tool_calls"][0]["function"]["arguments"], "{}");
    }

    #[test]
    fn request_thinking_only_assistant_turn_and_empty_stop_are_skipped() {
        let chat = to_chat(json!({"model": "c", "max_tokens": 10, "stop_sequences": [], "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "...", "signature": "s"}]},
            {"role": "user", "content": "again"}]}));
        assert_eq!(chat["messages"].as_array().unwrap().len(), 2);
        assert!(chat.get("stop").is_none());
    }

    #[test]
    fn request_images_become_image_url_parts() {
        let chat = to_chat(json!({"model": "c", "max_tokens": 10, "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "screenshot:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "UE5H"}}]}]}
        ]}));
        let parts = &chat["messages"][0]["content"];
        assert_eq!(parts[0], json!({"type": "text", "text": "what is this?"}));
        assert_eq!(parts[1], json!({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}));
        assert_eq!(parts[2], json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}));
        // The tool result keeps its text; its image follows in a user message.
        assert_eq!(chat["messages"][1], json!({"role": "tool", "tool_call_id": "t1", "content": "screenshot:"}));
        assert_eq!(chat["messages"][2]["role"], "user");
        assert_eq!(chat["messages"][2]["content"][0]["image_url"]["url"], "data:image/png;base64,UE5H");
    }

    #[test]
    fn request_unknown_blocks_and_fields_do_not_fail() {
        let chat = to_chat(json!({"model": "c", "max_tokens": 10, "messages": [
            {"role": "user", "content": [{"type": "mystery", "foo": 1}, {"type": "text", "text": "ok", "citations": []}]},
            {"role": "assistant", "content": "plain reply", "extra": true},
            {"role": "user", "content": [{"type": "search_result", "text": "snippet"}]}
        ], "tool_choice": {"type": "auto"}, "container": "x"}));
        assert_eq!(chat["messages"][0], json!({"role": "user", "content": "ok"}));
        assert_eq!(chat["messages"][1], json!({"role": "assistant", "content": "plain reply"}));
        assert_eq!(chat["messages"][2]["content"], "snippet");
        assert!(chat.get("tool_choice").is_none(), "tool_choice without tools is dropped");
    }

    #[test]
    fn round_trip_anthropic_chat_anthropic_keeps_semantics() {
        let original = json!({"model": "claude", "max_tokens": 512, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Paris weather?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "Thanks"}]}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}, "stop_sequences": ["X"], "temperature": 0.5});
        let chat = convert_request(Conversion::AnthropicToChat, original.to_string().as_bytes(), "gpt").unwrap();
        let back = to_value(&convert_request(Conversion::ChatToAnthropic, &chat, "claude").unwrap());
        assert_eq!(back["system"], "Be brief.");
        assert_eq!(back["max_tokens"], 512);
        assert_eq!(back["tools"], original["tools"]);
        assert_eq!(back["tool_choice"], json!({"type": "any"}));
        assert_eq!(back["stop_sequences"], json!(["X"]));
        assert_eq!(back["temperature"], 0.5);
        let msgs = back["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0], json!({"role": "user", "content": [{"type": "text", "text": "Paris weather?"}]}));
        assert_eq!(msgs[1], original["messages"][1]);
        assert_eq!(msgs[2], original["messages"][2]);
    }

    #[test]
    fn response_text_reasoning_tools_and_usage() {
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "reasoning_content": "Need the weather.", "content": "Let me check.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{not json"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}});
        let out =
            to_value(&convert_response(Conversion::AnthropicToChat, body.to_string().as_bytes(), "claude-x").unwrap());
        assert!(out["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(out["type"], "message");
        assert_eq!(out["role"], "assistant");
        assert_eq!(out["model"], "claude-x");
        let content = out["content"].as_array().unwrap();
        assert_eq!(content[0], json!({"type": "thinking", "thinking": "Need the weather.", "signature": ""}));
        assert_eq!(content[1], json!({"type": "text", "text": "Let me check."}));
        assert_eq!(
            content[2],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(content[3], json!({"type": "tool_use", "id": "call_2", "name": "broken", "input": {}}));
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(out["stop_sequence"], Value::Null);
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 36, "cache_read_input_tokens": 64, "cache_creation_input_tokens": 0, "output_tokens": 20})
        );
    }

    #[test]
    fn response_finish_reasons() {
        for (finish, stop) in [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")] {
            let body = json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 4}}});
            let out =
                to_value(&convert_response(Conversion::AnthropicToChat, body.to_string().as_bytes(), "m").unwrap());
            assert_eq!(out["stop_reason"], stop);
            assert_eq!(out["usage"]["input_tokens"], 6);
            assert_eq!(out["usage"]["cache_read_input_tokens"], 4);
        }
        assert!(convert_response(Conversion::AnthropicToChat, br#"{"choices":[]}"#, "m").is_err());
    }

    // ----- streams -----

    const TEXT_STREAM: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":4}}}

data: [DONE]

"#;

    fn stream(upstream: &str, interrupted: bool) -> Vec<SseEvent> {
        run_stream(StreamConverter::new(Conversion::AnthropicToChat, "claude-sonnet-4-5"), upstream, interrupted)
    }

    #[test]
    fn stream_text_with_usage_after_finish() {
        let out = stream(TEXT_STREAM, false);
        assert_eq!(
            names(&out),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start = data_json(&out[0]);
        assert_eq!(start["message"]["model"], "claude-sonnet-4-5");
        assert_eq!(start["message"]["usage"]["input_tokens"], 0);
        assert_eq!(data_json(&out[1])["content_block"], json!({"type": "text", "text": ""}));
        assert_eq!(data_json(&out[2])["delta"], json!({"type": "text_delta", "text": "Hi"}));
        assert_eq!(data_json(&out[3])["delta"]["text"], " there");
        let delta = data_json(&out[5]);
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        // The usage chunk came after the finish chunk and still made it into message_delta, without double
        // counting the cached tokens.
        assert_eq!(delta["usage"]["output_tokens"], 12);
        assert_eq!(delta["usage"]["input_tokens"], 5);
        assert_eq!(delta["usage"]["cache_read_input_tokens"], 4);
    }

    #[test]
    fn stream_message_delta_waits_for_usage_chunk() {
        // Feed event by event: nothing closes the message at the finish chunk.
        let mut conv = StreamConverter::new(Conversion::AnthropicToChat, "m");
        let events = super::super::test_util::parse_sse(TEXT_STREAM);
        let mut out = Vec::new();
        for ev in &events[..4] {
            conv.push(ev, &mut out);
        }
        assert!(!names(&out).contains(&"message_delta".to_string()));
        conv.push(&events[4], &mut out);
        assert_eq!(names(&out).last().unwrap(), "message_stop");
        // [DONE] and finish() add nothing more.
        let n = out.len();
        conv.push(&events[5], &mut out);
        conv.finish(false, &mut out);
        assert_eq!(out.len(), n);
    }

    #[test]
    fn stream_without_usage_chunk_closes_on_done_or_finish() {
        let upstream = r#"data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]}

data: [DONE]

"#;
        let out = stream(upstream, false);
        let delta = data_json(&out[out.len() - 2]);
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(delta["usage"], json!({"output_tokens": 0}));
        // Upstream ended without [DONE] but cleanly: finish() closes the message.
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let out = stream(cut, false);
        assert_eq!(names(&out)[out.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    }

    fn tool_stream() -> (String, Value) {
        let args = json!({"command": "ls -la /tmp", "timeout": 30, "env": {"A": "1"}, "list": [1, 2, 3]});
        let text = args.to_string();
        let mut sse = String::new();
        let mut push = |chunk: Value| sse.push_str(&format!("data: {chunk}\n\n"));
        push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"role": "assistant", "content": null,
                "tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "", "arguments": ""}}]},
            "finish_reason": null}]}));
        push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 0, "function": {"name": "shell"}}]}, "finish_reason": null}]}));
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(3) {
            let fragment: String = piece.iter().collect();
            push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}, "finish_reason": null}]}));
        }
        push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 1, "id": "call_def", "type": "function", "function": {"name": "read", "arguments": "{\"path\":"}}]},
            "finish_reason": null}]}));
        push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
            "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "\"a.txt\"}"}}]}, "finish_reason": null}]}));
        push(
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        );
        push(json!({"id": "c", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}}));
        sse.push_str("data: [DONE]\n\n");
        (sse, args)
    }

    #[test]
    fn stream_tool_call_split_across_many_chunks() {
        let (upstream, args) = tool_stream();
        let out = stream(&upstream, false);
        let events: Vec<(String, Value)> = out.iter().map(|e| (e.event.clone().unwrap(), data_json(e))).collect();
        let starts: Vec<&Value> = events.iter().filter(|(n, _)| n == "content_block_start").map(|(_, v)| v).collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0]["index"], 0);
        assert_eq!(
            starts[0]["content_block"],
            json!({"type": "tool_use", "id": "call_abc", "name": "shell", "input": {}})
        );
        assert_eq!(starts[1]["index"], 1);
        assert_eq!(starts[1]["content_block"]["name"], "read");
        let partial = |index: u64| -> String {
            events
                .iter()
                .filter(|(n, v)| n == "content_block_delta" && v["index"] == index)
                .map(|(_, v)| {
                    assert_eq!(v["delta"]["type"], "input_json_delta");
                    v["delta"]["partial_json"].as_str().unwrap().to_string()
                })
                .collect()
        };
        let joined = partial(0);
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args);
        assert_eq!(serde_json::from_str::<Value>(&partial(1)).unwrap(), json!({"path": "a.txt"}));
        // Blocks are closed in order: stop 0 before start 1.
        let order: Vec<String> = events
            .iter()
            .filter(|(n, _)| n.starts_with("content_block_s"))
            .map(|(n, v)| format!("{n}:{}", v["index"]))
            .collect();
        assert_eq!(
            order,
            ["content_block_start:0", "content_block_stop:0", "content_block_start:1", "content_block_stop:1"]
        );
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 40);
        assert_eq!(events.last().unwrap().0, "message_stop");
    }

    #[test]
    fn stream_reasoning_then_text() {
        let upstream = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"Think"},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"reasoning_content":"ing..."},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"content":"Answer"},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_cache_hit_tokens":2}}

data: [DONE]

"#;
        let out = stream(upstream, false);
        let v: Vec<Value> = out.iter().map(data_json).collect();
        assert_eq!(v[1]["content_block"]["type"], "thinking");
        assert_eq!(v[2]["delta"], json!({"type": "thinking_delta", "thinking": "Think"}));
        assert_eq!(v[3]["delta"]["thinking"], "ing...");
        assert_eq!(v[4], json!({"type": "content_block_stop", "index": 0}));
        assert_eq!(v[5]["index"], 1);
        assert_eq!(v[5]["content_block"]["type"], "text");
        assert_eq!(v[6]["delta"]["text"], "Answer");
        assert_eq!(v[7], json!({"type": "content_block_stop", "index": 1}));
        assert_eq!(v[8]["usage"]["input_tokens"], 3);
        assert_eq!(v[8]["usage"]["cache_read_input_tokens"], 2);
        assert_eq!(v[9]["type"], "message_stop");
    }

    #[test]
    fn stream_upstream_error_object() {
        let upstream = r#"data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}

data: {"error":{"message":"upstream overloaded","type":"server_error","code":null}}

"#;
        let out = stream(upstream, false);
        let last = out.last().unwrap();
        assert_eq!(last.event.as_deref(), Some("error"));
        assert_eq!(
            data_json(last),
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream overloaded"}})
        );
        assert!(!names(&out).contains(&"message_stop".to_string()));
    }

    #[test]
    fn stream_interrupted_emits_error_not_stop() {
        let upstream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        let out = stream(upstream, true);
        assert_eq!(names(&out), ["message_start", "content_block_start", "content_block_delta", "error"]);
        assert_eq!(data_json(&out[3])["error"]["type"], "api_error");
    }

    #[test]
    fn stream_cut_after_finish_chunk_closes_cleanly() {
        let upstream =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"done\"},\"finish_reason\":\"stop\"}]}\n\n";
        let out = stream(upstream, true);
        assert_eq!(names(&out)[out.len() - 2..], ["message_delta", "message_stop"]);
        assert!(!names(&out).contains(&"error".to_string()));
    }

    #[test]
    fn stream_usage_is_exposed_for_accounting() {
        let mut conv = StreamConverter::new(Conversion::AnthropicToChat, "m");
        let mut out = Vec::new();
        for ev in super::super::test_util::parse_sse(TEXT_STREAM) {
            conv.push(&ev, &mut out);
        }
        assert_eq!(conv.usage(), Some(Tokens { input_uncached: 5, cache_read: 4, output: 12, ..Tokens::default() }));
    }
}
