//! OpenAI Responses client <-> OpenAI Chat Completions upstream (what Codex CLI needs on chat-only upstreams).
//!
//! Owns: Responses request -> Chat request (instructions, input items -> messages with consecutive function
//! calls merged into one assistant message, function tools, tool_choice, sampling and reasoning fields,
//! `text.format` -> `response_format`; stateless, so `previous_response_id` is refused), Chat completion ->
//! `response` object, and Chat chunks -> Responses stream events with increasing `sequence_number`
//! ([`ResponsesStream`]).

use serde_json::{Map, Value, json};

use super::chat_stream::{ChatDecoder, Piece};
use super::{
    ConvertError, INTERRUPTED_MESSAGE, Tokens, arguments_string, copy_field, named_event, new_id, openai_content_text,
    str_field, unix_now,
};
use crate::protocol::sse::SseEvent;

// ---------------------------------------------------------------------------------------------------------
// Request

/// OpenAI Responses request -> OpenAI Chat request.
pub(super) fn request_to_chat(req: &Map<String, Value>, upstream_model: &str) -> Result<Value, ConvertError> {
    if req.get("previous_response_id").is_some_and(|v| !v.is_null() && v != "") {
        return Err(ConvertError::Unsupported(
            "previous_response_id is not supported when this model is served through a Chat Completions upstream \
             (the router is stateless): send the full conversation in `input`"
                .into(),
        ));
    }
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    let mut messages = Vec::new();
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => items.iter().for_each(|item| push_item(item, &mut messages)),
        _ => {}
    }
    out.insert("messages".into(), Value::Array(messages));

    let tools = tools_to_chat(req.get("tools"));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = req.get("tool_choice").and_then(tool_choice_to_chat) {
            out.insert("tool_choice".into(), choice);
        }
        copy_field(req, "parallel_tool_calls", &mut out, "parallel_tool_calls");
    }
    copy_field(req, "max_output_tokens", &mut out, "max_tokens");
    for field in ["temperature", "top_p", "user", "service_tier"] {
        copy_field(req, field, &mut out, field);
    }
    if let Some(effort) = req.get("reasoning").and_then(|r| str_field(r, "effort")) {
        out.insert("reasoning_effort".into(), effort.into());
    }
    if let Some(format) = req.get("text").and_then(|t| t.get("format")).and_then(response_format) {
        out.insert("response_format".into(), format);
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// One input item -> messages. Function calls join the assistant message right before them (the assistant's
/// text, or earlier calls); `reasoning` and unknown items are dropped.
fn push_item(item: &Value, messages: &mut Vec<Value>) {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        Some("message") | None if item.get("role").is_some() => push_message(item, messages),
        Some("function_call") => {
            let call = json!({
                "id": item.get("call_id").and_then(Value::as_str).unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": item.get("name").and_then(Value::as_str).unwrap_or_default(),
                    "arguments": arguments_string(item.get("arguments")),
                },
            });
            match messages.last_mut().filter(|m| m["role"] == "assistant") {
                Some(last) => match last["tool_calls"].as_array_mut() {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                },
                None => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        Some("function_call_output") => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(_)) => openai_content_text(item.get("output")),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        // reasoning, item_reference, built-in and custom tool calls with their outputs (both dropped, so no
        // orphan tool message is left): no Chat equivalent
        _ => {}
    }
}

fn push_message(item: &Value, messages: &mut Vec<Value>) {
    let role = match item.get("role").and_then(Value::as_str).unwrap_or("user") {
        // Many Chat-compatible providers do not know `developer`.
        "developer" | "system" => "system",
        "assistant" => "assistant",
        _ => "user",
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let parts: Vec<Value> = parts.iter().filter_map(part_to_chat).collect();
            if role != "user" || parts.iter().all(|p| p["type"] == "text") {
                // Only user messages take non-text parts; a plain string is the most compatible form. Assistant
                // output parts are one continuous text; separate input parts stay separate paragraphs.
                let sep = if role == "assistant" { "" } else { "\n\n" };
                parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(sep).into()
            } else {
                Value::Array(parts)
            }
        }
        _ => Value::String(String::new()),
    };
    messages.push(json!({"role": role, "content": content}));
}

fn part_to_chat(part: &Value) -> Option<Value> {
    match part.get("type").and_then(Value::as_str)? {
        "input_text" | "output_text" | "text" => Some(json!({"type": "text", "text": part.get("text")?})),
        "refusal" => Some(json!({"type": "text", "text": part.get("refusal")?})),
        "input_image" => {
            let url = str_field(part, "image_url")?;
            let mut image = json!({"url": url});
            if let Some(detail) = str_field(part, "detail") {
                image["detail"] = detail.into();
            }
            Some(json!({"type": "image_url", "image_url": image}))
        }
        "input_file" => {
            let mut file = Map::new();
            copy_field(part.as_object()?, "file_data", &mut file, "file_data");
            copy_field(part.as_object()?, "file_id", &mut file, "file_id");
            copy_field(part.as_object()?, "filename", &mut file, "filename");
            (!file.is_empty()).then(|| json!({"type": "file", "file": file}))
        }
        _ => None,
    }
}

/// Flat function tools -> Chat tools; built-in tools (web_search, file_search, custom, ...) are dropped.
fn tools_to_chat(tools: Option<&Value>) -> Vec<Value> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            let src = t.as_object()?;
            let mut function = Map::new();
            function.insert("name".into(), src.get("name")?.clone());
            for field in ["description", "parameters", "strict"] {
                copy_field(src, field, &mut function, field);
            }
            Some(json!({"type": "function", "function": function}))
        })
        .collect()
}

fn tool_choice_to_chat(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(choice.clone()),
        obj if obj.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "function", "function": {"name": obj.get("name")?}}))
        }
        _ => None,
    }
}

/// `text.format` -> `response_format` (`json_schema` is flat in Responses, nested in Chat).
fn response_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                copy_field(format.as_object()?, field, &mut schema, field);
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Response objects

/// An output item as it is being built (stream) or read (non-stream).
#[derive(Debug, Clone)]
enum Item {
    Message { id: String, text: String },
    Call { id: String, call_id: String, name: String, arguments: String },
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }

    fn text_part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": []})
    }

    fn to_json(&self, status: &str) -> Value {
        match self {
            Item::Message { id, text } => {
                json!({"id": id, "type": "message", "status": status, "role": "assistant",
                "content": if status == "in_progress" { json!([]) } else { json!([Item::text_part(text)]) }})
            }
            Item::Call { id, call_id, name, arguments } => json!({"id": id, "type": "function_call", "status": status,
                "call_id": call_id, "name": name, "arguments": arguments}),
        }
    }
}

/// Final status of a response from the Chat finish reason: (status, incomplete reason).
fn status_for(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A `response` object.
fn response_object(id: &str, created_at: i64, model: &str, status: &str, output: Vec<Value>) -> Value {
    json!({"id": id, "object": "response", "created_at": created_at, "status": status, "model": model,
           "output": output, "error": null, "incomplete_details": null, "usage": null})
}

fn finalize(resp: &mut Value, finish: Option<&str>, usage: Option<Tokens>) {
    let (status, reason) = status_for(finish);
    resp["status"] = status.into();
    if let Some(reason) = reason {
        resp["incomplete_details"] = json!({"reason": reason});
    }
    resp["usage"] = usage.unwrap_or_default().to_responses();
}

/// Chat completion -> `response` object.
pub(super) fn response_from_chat(resp: &Map<String, Value>, client_model: &str) -> Result<Value, ConvertError> {
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| ConvertError::Unsupported("upstream chat response has no choices".into()))?;
    let message = choice.get("message").cloned().unwrap_or_default();
    let mut items = Vec::new();
    let text = openai_content_text(message.get("content"));
    let text = if text.is_empty() { str_field(&message, "refusal").unwrap_or_default().to_string() } else { text };
    if !text.is_empty() {
        items.push(Item::Message { id: new_id("msg_"), text });
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        items.push(Item::Call {
            id: new_id("fc_"),
            call_id: str_field(call, "id").map_or_else(|| new_id("call_"), str::to_string),
            name: function.and_then(|f| str_field(f, "name")).unwrap_or_default().to_string(),
            arguments: arguments_string(function.and_then(|f| f.get("arguments"))),
        });
    }
    let created = resp.get("created").and_then(Value::as_i64).unwrap_or_else(unix_now);
    let output = items.iter().map(|i| i.to_json("completed")).collect();
    let mut out = response_object(&new_id("resp_"), created, client_model, "completed", output);
    let usage = resp.get("usage").and_then(Tokens::from_chat);
    finalize(&mut out, choice.get("finish_reason").and_then(Value::as_str), usage);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Stream

/// Chat chunks -> Responses stream events. One output item is open at a time; reasoning deltas are dropped.
#[derive(Debug)]
pub(crate) struct ResponsesStream {
    decoder: ChatDecoder,
    model: String,
    id: String,
    created_at: i64,
    seq: u64,
    started: bool,
    items: Vec<Item>,
    /// Index in `items` of the open item.
    open: Option<usize>,
    /// (tool slot, item index) of each function call.
    calls: Vec<(usize, usize)>,
    finish: Option<String>,
    usage: Option<Tokens>,
    closed: bool,
}

impl ResponsesStream {
    pub fn new(client_model: &str) -> Self {
        Self {
            decoder: ChatDecoder::default(),
            model: client_model.to_string(),
            id: new_id("resp_"),
            created_at: unix_now(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
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
        if self.closed {
            return;
        }
        let mut pieces = Vec::new();
        self.decoder.decode(ev, &mut pieces);
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
            Piece::Reasoning(_) => {}
            Piece::Text(text) => self.text(&text, out),
            Piece::ToolStart { slot, id, name } => {
                let item = Item::Call { id: new_id("fc_"), call_id: id, name, arguments: String::new() };
                let index = self.open_item(item, out);
                self.calls.push((slot, index));
            }
            Piece::ToolArgs { slot, fragment } => self.arguments(slot, &fragment, out),
            Piece::Finish(reason) => {
                self.close_item(out);
                self.finish = Some(reason);
            }
            Piece::Usage { tokens, usage_only } => {
                self.usage = Some(tokens);
                if usage_only && self.finish.is_some() {
                    self.complete(out);
                }
            }
            Piece::Error { message, kind } => self.fail(kind.as_deref().unwrap_or("server_error"), &message, out),
            Piece::Done => self.complete(out),
        }
    }

    pub fn finish(&mut self, interrupted: bool, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        // Cut after the finish reason: the answer is whole, only usage/[DONE] is missing, so close cleanly.
        if interrupted && self.finish.is_none() {
            self.fail("server_error", INTERRUPTED_MESSAGE, out);
        } else {
            self.complete(out);
        }
    }

    /// Emits one event with the next sequence number.
    fn emit(&mut self, kind: &str, mut body: Value, out: &mut Vec<SseEvent>) {
        body["type"] = kind.into();
        body["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.push(named_event(kind, &body));
    }

    fn snapshot(&self, status: &str) -> Value {
        let output = self.items.iter().map(|i| i.to_json("completed")).collect();
        response_object(&self.id, self.created_at, &self.model, status, output)
    }

    fn ensure_started(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let resp = self.snapshot("in_progress");
        self.emit("response.created", json!({"response": resp}), out);
        self.emit("response.in_progress", json!({"response": resp}), out);
    }

    fn open_item(&mut self, item: Item, out: &mut Vec<SseEvent>) -> usize {
        self.ensure_started(out);
        self.close_item(out);
        let index = self.items.len();
        let added = item.to_json("in_progress");
        let item_id = item.id().to_string();
        let is_message = matches!(item, Item::Message { .. });
        self.items.push(item);
        self.open = Some(index);
        self.emit("response.output_item.added", json!({"output_index": index, "item": added}), out);
        if is_message {
            let body =
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": Item::text_part("")});
            self.emit("response.content_part.added", body, out);
        }
        index
    }

    fn text(&mut self, delta: &str, out: &mut Vec<SseEvent>) {
        let index = match self.open {
            Some(i) if matches!(self.items[i], Item::Message { .. }) => i,
            _ => self.open_item(Item::Message { id: new_id("msg_"), text: String::new() }, out),
        };
        let Item::Message { id, text } = &mut self.items[index] else {
            return;
        };
        text.push_str(delta);
        let body = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta});
        self.emit("response.output_text.delta", body, out);
    }

    fn arguments(&mut self, slot: usize, fragment: &str, out: &mut Vec<SseEvent>) {
        let Some(&(_, index)) = self.calls.iter().find(|(s, _)| *s == slot) else {
            return;
        };
        let Item::Call { id, arguments, .. } = &mut self.items[index] else {
            return;
        };
        arguments.push_str(fragment);
        let body = json!({"item_id": id, "output_index": index, "delta": fragment});
        self.emit("response.function_call_arguments.delta", body, out);
    }

    /// Emits the `.done` events of the open item.
    fn close_item(&mut self, out: &mut Vec<SseEvent>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let item = self.items[index].clone();
        match &item {
            Item::Message { id, text } => {
                let base = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = base.clone();
                done["text"] = text.as_str().into();
                self.emit("response.output_text.done", done, out);
                let mut part = base;
                part["part"] = Item::text_part(text);
                self.emit("response.content_part.done", part, out);
            }
            Item::Call { id, arguments, .. } => {
                let body = json!({"item_id": id, "output_index": index, "arguments": arguments});
                self.emit("response.function_call_arguments.done", body, out);
            }
        }
        self.emit("response.output_item.done", json!({"output_index": index, "item": item.to_json("completed")}), out);
    }

    /// `response.completed` (or `response.incomplete`) with every output item and the usage.
    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        self.ensure_started(out);
        self.close_item(out);
        let mut resp = self.snapshot("completed");
        finalize(&mut resp, self.finish.as_deref(), self.usage);
        let kind = if resp["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        self.emit(kind, json!({"response": resp}), out);
        self.closed = true;
    }

    fn fail(&mut self, code: &str, message: &str, out: &mut Vec<SseEvent>) {
        let mut resp = self.snapshot("failed");
        resp["error"] = json!({"code": code, "message": message});
        if let Some(usage) = self.usage {
            resp["usage"] = usage.to_responses();
        }
        self.emit("response.failed", json!({"response": resp}), out);
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{data_json, names, run_stream, to_value};
    use super::super::{Conversion, StreamConverter, convert_request, convert_response};
    use super::*;

    fn to_chat(req: Value) -> Result<Value, ConvertError> {
        convert_request(Conversion::ResponsesToChat, req.to_string().as_bytes(), "deepseek-chat").map(|b| to_value(&b))
    }

    #[test]
    fn request_codex_shape() {
        let chat = to_chat(json!({"model": "gpt-5-codex", "instructions": "You are Codex.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env ctx"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<ctx/>"},
                    {"type": "input_text", "text": "list files"}]},
                {"type": "custom_tool_call", "call_id": "call_0", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_0", "output": "ok"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running ls."}]},
                {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "function_call", "call_id": "call_2", "name": "shell", "arguments": "{\"command\":[\"pwd\"]}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
                {"type": "function_call_output", "call_id": "call_2", "output": "/tmp"},
                {"role": "user", "content": "thanks"}],
            "tools": [{"type": "function", "name": "shell", "description": "Run", "strict": false,
                       "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
                      {"type": "web_search"}, {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}],
            "tool_choice": "auto", "parallel_tool_calls": false,
            "reasoning": {"effort": "medium", "summary": "auto"}, "store": false, "stream": true,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "conv-1", "text": {"verbosity": "medium"},
            "max_output_tokens": 2000, "temperature": 0.1, "metadata": {"a": "b"}, "brand_new_field": 1}))
        .unwrap();
        assert_eq!(chat["model"], "deepseek-chat");
        let msgs = chat["messages"].as_array().unwrap();
        assert_eq!(msgs[0], json!({"role": "system", "content": "You are Codex."}));
        assert_eq!(msgs[1], json!({"role": "system", "content": "env ctx"}));
        assert_eq!(msgs[2], json!({"role": "user", "content": "<ctx/>\n\nlist files"}));
        assert_eq!(msgs[3]["role"], "assistant");
        assert_eq!(msgs[3]["content"], "Running ls.");
        let calls = msgs[3]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2, "consecutive function calls merge into one assistant message");
        assert_eq!(
            calls[0],
            json!({"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}})
        );
        assert_eq!(msgs[4], json!({"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}));
        assert_eq!(msgs[5], json!({"role": "tool", "tool_call_id": "call_2", "content": "/tmp"}));
        assert_eq!(msgs[6], json!({"role": "user", "content": "thanks"}));
        assert_eq!(msgs.len(), 7);
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "shell", "description": "Run", "strict": false,
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}}}])
        );
        assert_eq!(chat["tool_choice"], "auto");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(chat["reasoning_effort"], "medium");
        assert_eq!(chat["max_tokens"], 2000);
        assert_eq!(chat["temperature"], 0.1);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        for dropped in
            ["store", "include", "prompt_cache_key", "text", "metadata", "brand_new_field", "reasoning", "input"]
        {
            assert!(chat.get(dropped).is_none(), "{dropped} should be dropped");
        }
    }

    #[test]
    fn request_string_input_images_and_function_tool_choice() {
        let chat = to_chat(json!({"input": "hello", "model": "m"})).unwrap();
        assert_eq!(chat["messages"], json!([{"role": "user", "content": "hello"}]));
        let chat = to_chat(json!({"input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "what?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"}]}],
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}}}))
        .unwrap();
        assert_eq!(
            chat["messages"][0]["content"],
            json!([{"type": "text", "text": "what?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}}])
        );
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
        assert_eq!(
            chat["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
        );
    }

    #[test]
    fn request_function_call_without_assistant_text() {
        let chat = to_chat(json!({"input": [
            {"type": "message", "role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"}]}))
        .unwrap();
        let msgs = chat["messages"].as_array().unwrap();
        assert_eq!(msgs[1]["content"], Value::Null);
        assert_eq!(msgs[1]["tool_calls"].as_array().unwrap().len(), 1);
        assert_eq!(msgs[2]["role"], "tool");
        assert_eq!(msgs[3]["tool_calls"][0]["id"], "c2", "a call after a tool output starts a new assistant message");
    }

    #[test]
    fn request_previous_response_id_is_refused() {
        let err = to_chat(json!({"input": "hi", "previous_response_id": "resp_123"})).unwrap_err();
        assert!(matches!(err, ConvertError::Unsupported(ref m) if m.contains("previous_response_id")));
        assert!(to_chat(json!({"input": "hi", "previous_response_id": null})).is_ok());
    }

    #[test]
    fn response_text_and_calls() {
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "deepseek-chat",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Running it.", "reasoning_content": "dropped",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
                      "prompt_tokens_details": {"cached_tokens": 80}, "completion_tokens_details": {"reasoning_tokens": 10}}});
        let out = to_value(
            &convert_response(Conversion::ResponsesToChat, body.to_string().as_bytes(), "gpt-5-codex").unwrap(),
        );
        assert!(out["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(out["object"], "response");
        assert_eq!(out["created_at"], 1700000000);
        assert_eq!(out["status"], "completed");
        assert_eq!(out["model"], "gpt-5-codex");
        let output = out["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["type"], "message");
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(output[0]["content"], json!([{"type": "output_text", "text": "Running it.", "annotations": []}]));
        assert_eq!(output[1]["type"], "function_call");
        assert_eq!(output[1]["call_id"], "call_1");
        assert_eq!(output[1]["name"], "shell");
        assert_eq!(output[1]["arguments"], "{\"command\":[\"ls\"]}");
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 80}, "output_tokens": 30,
                   "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 130})
        );
    }

    #[test]
    fn response_length_is_incomplete() {
        let body = json!({"choices": [{"message": {"content": "trunc"}, "finish_reason": "length"}]});
        let out = to_value(&convert_response(Conversion::ResponsesToChat, body.to_string().as_bytes(), "m").unwrap());
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(out["usage"]["total_tokens"], 0);
    }

    const STREAM: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"Let me "},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"look."},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"shell","arguments":""}}]},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"[\"ls\"]}"}}]},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":4}}}

data: [DONE]

"#;

    fn stream(upstream: &str, interrupted: bool) -> Vec<SseEvent> {
        run_stream(StreamConverter::new(Conversion::ResponsesToChat, "gpt-5-codex"), upstream, interrupted)
    }

    #[test]
    fn stream_text_then_tool_call() {
        let out = stream(STREAM, false);
        assert_eq!(
            names(&out),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let v: Vec<Value> = out.iter().map(data_json).collect();
        for (i, ev) in v.iter().enumerate() {
            assert_eq!(ev["sequence_number"], i as u64);
            assert_eq!(ev["type"], out[i].event.clone().unwrap());
        }
        assert_eq!(v[0]["response"]["status"], "in_progress");
        assert_eq!(v[2]["item"]["type"], "message");
        assert_eq!(v[2]["output_index"], 0);
        let msg_id = v[2]["item"]["id"].as_str().unwrap();
        assert_eq!(v[4]["item_id"], msg_id);
        assert_eq!(v[4]["delta"], "Let me ");
        assert_eq!(v[6]["text"], "Let me look.");
        assert_eq!(v[8]["item"]["content"][0]["text"], "Let me look.");
        assert_eq!(v[9]["output_index"], 1);
        assert_eq!(v[9]["item"]["type"], "function_call");
        assert_eq!(v[9]["item"]["call_id"], "call_1");
        assert_eq!(v[9]["item"]["name"], "shell");
        assert_eq!(v[9]["item"]["arguments"], "");
        assert_eq!(v[12]["arguments"], "{\"command\":[\"ls\"]}");
        let done = &v[14]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["model"], "gpt-5-codex");
        assert_eq!(done["output"].as_array().unwrap().len(), 2);
        assert_eq!(done["output"][1]["arguments"], "{\"command\":[\"ls\"]}");
        assert_eq!(done["usage"]["input_tokens"], 9);
        assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(done["usage"]["output_tokens"], 12);
        assert_eq!(done["usage"]["total_tokens"], 21);
        assert!(out.iter().all(|e| e.data != "[DONE]"));
    }

    #[test]
    fn stream_length_is_incomplete() {
        let upstream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        let out = stream(upstream, false);
        let last = out.last().unwrap();
        assert_eq!(last.event.as_deref(), Some("response.incomplete"));
        assert_eq!(data_json(last)["response"]["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn stream_error_and_interruption_fail_the_response() {
        let upstream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n\
                        data: {\"error\":{\"message\":\"rate limited\",\"type\":\"rate_limit_error\"}}\n\n";
        let out = stream(upstream, false);
        let last = data_json(out.last().unwrap());
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"], json!({"code": "rate_limit_error", "message": "rate limited"}));
        let out = stream("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n", true);
        let last = data_json(out.last().unwrap());
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "x");
    }

    #[test]
    fn stream_cut_after_finish_chunk_completes() {
        let upstream =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\n";
        let out = stream(upstream, true);
        assert_eq!(out.last().unwrap().event.as_deref(), Some("response.completed"));
    }
}
