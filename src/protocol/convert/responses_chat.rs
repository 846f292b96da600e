//! OpenAI Responses client <-> OpenAI Chat Completions upstream (what Codex CLI needs on chat-only upstreams).
//!
//! Owns: Responses request -> Chat request (instructions, input items -> messages with consecutive tool
//! calls merged into one assistant message, tools, tool_choice, sampling and reasoning fields,
//! `text.format` -> `response_format`; stateless, so `previous_response_id` is refused), Chat completion ->
//! `response` object, and Chat chunks -> Responses stream events with increasing `sequence_number`
//! ([`ResponsesStream`]).
//!
//! Chat only has function tools, so Codex's freeform `custom` tools (`apply_patch`) become functions taking the
//! whole input in one string parameter `input`, and the `local_shell` built-in becomes a function `local_shell`
//! with the exec action's fields. Calls to them come back as `custom_tool_call` / `local_shell_call` items when
//! the caller passes the request's [`ToolKinds`]. Must not drop a call or alter a custom tool's input.

use serde_json::{Map, Value, json};

use super::chat_stream::{ChatDecoder, Piece, PieceEncoder};
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

/// One input item -> messages. Function, custom and local shell calls join the assistant message right before
/// them (the assistant's text, or earlier calls); `reasoning` and unknown items are dropped.
fn push_item(item: &Value, messages: &mut Vec<Value>) {
    let kind = item.get("type").and_then(Value::as_str);
    let call_id = || item.get("call_id").and_then(Value::as_str).unwrap_or_default();
    match kind {
        Some("message") | None if item.get("role").is_some() => push_message(item, messages),
        Some("function_call") => {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            push_call(messages, call_id(), name, arguments_string(item.get("arguments")));
        }
        Some("custom_tool_call") => {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            let input = item.get("input").and_then(Value::as_str).unwrap_or_default();
            push_call(messages, call_id(), name, json!({"input": input}).to_string());
        }
        Some("local_shell_call") => {
            // Older items carry only `id`.
            let id = str_field(item, "call_id").or_else(|| str_field(item, "id")).unwrap_or_default();
            let action = item.get("action").cloned().unwrap_or_default();
            let mut args = Map::new();
            args.insert("command".into(), action.get("command").cloned().unwrap_or_else(|| json!([])));
            copy_field(action.as_object().unwrap_or(&Map::new()), "working_directory", &mut args, "workdir");
            copy_field(action.as_object().unwrap_or(&Map::new()), "timeout_ms", &mut args, "timeout_ms");
            push_call(messages, id, LOCAL_SHELL, Value::Object(args).to_string());
        }
        Some("function_call_output" | "custom_tool_call_output" | "local_shell_call_output") => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(_)) => openai_content_text(item.get("output")),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            // The API's `local_shell_call_output` names its call by `id`.
            let id = str_field(item, "call_id").or_else(|| str_field(item, "id")).unwrap_or_default();
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        // reasoning, item_reference, built-in tool calls (web search, ...): no Chat equivalent
        _ => {}
    }
}

/// Appends one tool call to the assistant message right before it, or starts a new assistant message.
fn push_call(messages: &mut Vec<Value>, id: &str, name: &str, arguments: String) {
    let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}});
    match messages.last_mut().filter(|m| m["role"] == "assistant") {
        Some(last) => match last["tool_calls"].as_array_mut() {
            Some(calls) => calls.push(call),
            None => last["tool_calls"] = json!([call]),
        },
        None => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
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

/// Name of the Chat function that stands for the Responses `local_shell` tool.
const LOCAL_SHELL: &str = "local_shell";

/// Longest grammar definition copied into a custom tool's description, in characters.
const MAX_GRAMMAR_CHARS: usize = 8000;

/// Flat function tools -> Chat tools; `custom` (freeform) tools -> a function taking the whole input in the
/// string parameter `input`; `local_shell` -> a function `local_shell` with the exec action's fields. Other
/// built-in tools (web_search, file_search, ...) are dropped.
fn tools_to_chat(tools: Option<&Value>) -> Vec<Value> {
    let Some(tools) = tools.and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|t| {
            let src = t.as_object()?;
            match src.get("type").and_then(Value::as_str)? {
                "function" => {
                    let mut function = Map::new();
                    function.insert("name".into(), src.get("name")?.clone());
                    for field in ["description", "parameters", "strict"] {
                        copy_field(src, field, &mut function, field);
                    }
                    Some(json!({"type": "function", "function": function}))
                }
                "custom" => custom_tool_to_chat(src),
                "local_shell" => Some(local_shell_tool()),
                _ => None,
            }
        })
        .collect()
}

fn custom_tool_to_chat(src: &Map<String, Value>) -> Option<Value> {
    let name = src.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())?;
    let mut description = src.get("description").and_then(Value::as_str).unwrap_or_default().trim_end().to_string();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(
        "This is a freeform tool: put its whole input, verbatim, in the string parameter `input` (the input \
         itself is plain text, not JSON).",
    );
    let format = src.get("format");
    if format.and_then(|f| str_field(f, "type")) == Some("grammar")
        && let Some(definition) = format.and_then(|f| str_field(f, "definition"))
    {
        let syntax = format.and_then(|f| str_field(f, "syntax")).unwrap_or("formal");
        description.push_str(&format!(
            " The input must match this {syntax} grammar:\n{}",
            super::truncate_chars(definition, MAX_GRAMMAR_CHARS)
        ));
    }
    Some(json!({"type": "function", "function": {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
    }}))
}

fn local_shell_tool() -> Value {
    json!({"type": "function", "function": {
        "name": LOCAL_SHELL,
        "description": "Runs a command on the user's machine and returns its output. `command` is the argument \
            vector (for example [\"bash\", \"-lc\", \"ls\"]), `workdir` the working directory, `timeout_ms` an \
            optional time limit in milliseconds.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "array", "items": {"type": "string"}},
            "workdir": {"type": "string"},
            "timeout_ms": {"type": "number"},
        }, "required": ["command"]},
    }})
}

fn tool_choice_to_chat(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(choice.clone()),
        obj => match obj.get("type").and_then(Value::as_str)? {
            "function" | "custom" => Some(json!({"type": "function", "function": {"name": obj.get("name")?}})),
            "local_shell" => Some(json!({"type": "function", "function": {"name": LOCAL_SHELL}})),
            _ => None,
        },
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

/// The request's tools that are not plain functions on the client side, by the name of the Chat function
/// standing for them: calls to these are answered as `custom_tool_call` / `local_shell_call` items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolKinds {
    custom: Vec<String>,
    local_shell: bool,
}

impl ToolKinds {
    /// Reads the `tools` of a Responses request (any shape: what is not understood is ignored).
    pub(super) fn from_request(body: &[u8]) -> Self {
        // Cheap pre-check: most requests have neither, and Codex histories can be megabytes.
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        if !has(b"\"custom\"") && !has(b"\"local_shell\"") {
            return Self::default();
        }
        #[derive(serde::Deserialize)]
        struct Tools {
            #[serde(default)]
            tools: Option<Vec<Value>>,
        }
        let tools = serde_json::from_slice::<Tools>(body).ok().and_then(|t| t.tools).unwrap_or_default();
        let mut kinds = Self::default();
        for tool in &tools {
            match tool.get("type").and_then(Value::as_str) {
                Some("custom") => {
                    if let Some(name) = str_field(tool, "name") {
                        kinds.custom.push(name.to_string());
                    }
                }
                Some("local_shell") => kinds.local_shell = true,
                _ => {}
            }
        }
        kinds
    }

    /// Whether every tool is a plain function (nothing to translate back).
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && !self.local_shell
    }

    fn kind(&self, name: &str) -> CallKind {
        if self.custom.iter().any(|c| c == name) {
            CallKind::Custom
        } else if self.local_shell && name == LOCAL_SHELL {
            CallKind::LocalShell
        } else {
            CallKind::Function
        }
    }
}

/// What a Chat tool call stands for on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Function,
    /// A freeform tool: the input is the `input` string of the arguments.
    Custom,
    /// The `local_shell` built-in: the arguments are the exec action.
    LocalShell,
}

/// An output item as it is being built (stream) or read (non-stream).
#[derive(Debug, Clone)]
enum Item {
    Message { id: String, text: String },
    Call { id: String, call_id: String, name: String, arguments: String, kind: CallKind },
}

impl Item {
    fn call(call_id: String, name: String, arguments: String, kinds: &ToolKinds) -> Item {
        let kind = kinds.kind(&name);
        let prefix = match kind {
            CallKind::Function => "fc_",
            CallKind::Custom => "ctc_",
            CallKind::LocalShell => "lsh_",
        };
        Item::Call { id: new_id(prefix), call_id, name, arguments, kind }
    }

    fn id(&self) -> &str {
        match self {
            Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }

    /// Calls whose events are emitted all at once when they complete (their arguments are not streamed).
    fn is_buffered(&self) -> bool {
        matches!(self, Item::Call { kind: CallKind::Custom | CallKind::LocalShell, .. })
    }

    fn text_part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": []})
    }

    fn to_json(&self, status: &str) -> Value {
        let in_progress = status == "in_progress";
        match self {
            Item::Message { id, text } => {
                json!({"id": id, "type": "message", "status": status, "role": "assistant",
                "content": if in_progress { json!([]) } else { json!([Item::text_part(text)]) }})
            }
            Item::Call { id, call_id, name, arguments, kind: CallKind::Function } => json!({"id": id,
                "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments}),
            Item::Call { id, call_id, name, arguments, kind: CallKind::Custom } => json!({"id": id,
                "type": "custom_tool_call", "status": status, "call_id": call_id, "name": name,
                "input": if in_progress { String::new() } else { custom_input(arguments) }}),
            Item::Call { id, call_id, arguments, kind: CallKind::LocalShell, .. } => json!({"id": id,
                "type": "local_shell_call", "status": status, "call_id": call_id,
                "action": shell_action(arguments)}),
        }
    }
}

/// The input of a custom tool call from the Chat arguments: their `input` string; for a model that named the
/// parameter differently, the only string field; else the raw arguments text.
fn custom_input(arguments: &str) -> String {
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(arguments) else {
        return arguments.to_string();
    };
    if let Some(input) = args.get("input").and_then(Value::as_str) {
        return input.to_string();
    }
    let mut strings = args.values().filter_map(Value::as_str);
    match (strings.next(), strings.next(), args.len()) {
        (Some(only), None, 1) => only.to_string(),
        _ => arguments.to_string(),
    }
}

/// The `exec` action of a local shell call from the Chat arguments (`command` may also come as one string).
fn shell_action(arguments: &str) -> Value {
    let args = super::arguments_object(arguments);
    let command = match args.get("command") {
        Some(Value::Array(parts)) => Value::Array(
            parts.iter().map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string).into()).collect(),
        ),
        Some(Value::String(s)) => json!(["bash", "-lc", s]),
        _ => json!([]),
    };
    let workdir = args.get("workdir").or_else(|| args.get("working_directory")).filter(|v| v.is_string());
    let timeout = args.get("timeout_ms").and_then(Value::as_f64).filter(|t| *t >= 0.0).map(|t| t as u64);
    json!({"type": "exec", "command": command, "working_directory": workdir, "timeout_ms": timeout, "env": {}})
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
pub(super) fn response_from_chat(
    resp: &Map<String, Value>,
    client_model: &str,
    kinds: &ToolKinds,
) -> Result<Value, ConvertError> {
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
        items.push(Item::call(
            str_field(call, "id").map_or_else(|| new_id("call_"), str::to_string),
            function.and_then(|f| str_field(f, "name")).unwrap_or_default().to_string(),
            arguments_string(function.and_then(|f| f.get("arguments"))),
            kinds,
        ));
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
/// Calls to custom and local shell tools are buffered while open and emitted whole when they complete (their
/// `input` / `action` is only known from the complete arguments); function call arguments stream as they come.
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
    kinds: ToolKinds,
}

impl PieceEncoder for ResponsesStream {
    fn decoder(&mut self) -> &mut ChatDecoder {
        &mut self.decoder
    }

    fn closed(&self) -> bool {
        self.closed
    }

    fn apply(&mut self, piece: Piece, out: &mut Vec<SseEvent>) {
        self.apply_piece(piece, out);
    }
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
            kinds: ToolKinds::default(),
        }
    }

    /// Which tool names of the request are custom / local shell tools.
    pub fn with_tool_kinds(mut self, kinds: ToolKinds) -> Self {
        self.kinds = kinds;
        self
    }

    pub fn usage(&self) -> Option<Tokens> {
        self.usage
    }

    pub fn push(&mut self, ev: &SseEvent, out: &mut Vec<SseEvent>) {
        self.push_event(ev, out);
    }

    fn apply_piece(&mut self, piece: Piece, out: &mut Vec<SseEvent>) {
        match piece {
            Piece::Began => self.ensure_started(out),
            Piece::Reasoning(_) => {}
            Piece::Text(text) => self.text(&text, out),
            Piece::ToolStart { slot, id, name } => {
                let item = Item::call(id, name, String::new(), &self.kinds);
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
        if item.is_buffered() {
            // Announced by `close_item`, with its whole input.
            self.items.push(item);
            self.open = Some(index);
            return index;
        }
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
        let buffered = self.items[index].is_buffered();
        let Item::Call { id, arguments, .. } = &mut self.items[index] else {
            return;
        };
        arguments.push_str(fragment);
        if buffered {
            return;
        }
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
            Item::Call { id, arguments, kind: CallKind::Function, .. } => {
                let body = json!({"item_id": id, "output_index": index, "arguments": arguments});
                self.emit("response.function_call_arguments.done", body, out);
            }
            Item::Call { id, arguments, kind: CallKind::Custom, .. } => {
                let added = json!({"output_index": index, "item": item.to_json("in_progress")});
                self.emit("response.output_item.added", added, out);
                let input = custom_input(arguments);
                if !input.is_empty() {
                    let delta = json!({"item_id": id, "output_index": index, "delta": input});
                    self.emit("response.custom_tool_call_input.delta", delta, out);
                }
                let done = json!({"item_id": id, "output_index": index, "input": input});
                self.emit("response.custom_tool_call_input.done", done, out);
            }
            Item::Call { kind: CallKind::LocalShell, .. } => {
                let added = json!({"output_index": index, "item": item.to_json("in_progress")});
                self.emit("response.output_item.added", added, out);
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
        assert_eq!(
            msgs[3],
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}}]})
        );
        assert_eq!(msgs[4], json!({"role": "tool", "tool_call_id": "call_0", "content": "ok"}));
        let msgs = &msgs[2..];
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
        let tools = chat["tools"].as_array().unwrap();
        assert_eq!(
            tools[0],
            json!({"type": "function", "function": {"name": "shell", "description": "Run", "strict": false,
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}}})
        );
        assert_eq!(tools[1]["function"]["name"], "apply_patch", "custom tools become functions");
        assert_eq!(tools.len(), 2, "web_search is dropped");
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

    // --- custom (freeform) and local shell tools ---------------------------------------------------------

    /// A patch with everything that JSON and SSE must carry through untouched: newlines, quotes, backslashes,
    /// a tab, non-ASCII text and a line that looks like an SSE field.
    const PATCH: &str = "*** Begin Patch\n*** Update File: src/main.rs\n@@ fn main() {\n-    println!(\"hi\");\n\
                         +    println!(\"hello, \\\"wörld\\\"\\t\\\\n\");\n+\tlet s = r#\"{\"a\": [1, 2]}\"#;\n\
                         +// data: not an event\n*** End Patch\n";

    const GRAMMAR: &str = "start: begin_patch hunk+ end_patch\nbegin_patch: \"*** Begin Patch\" LF\n\
                           end_patch: \"*** End Patch\" LF?\nhunk: add_hunk | delete_hunk | update_hunk\n";

    /// A realistic Codex request (GPT-5 family: freeform `apply_patch`, plus `local_shell`).
    fn codex_request() -> Value {
        json!({"model": "gpt-5-codex", "instructions": "You are Codex, a coding agent.",
            "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the greeting"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
                {"type": "local_shell_call", "id": "lsh_1", "call_id": "call_ls", "status": "completed",
                 "action": {"type": "exec", "command": ["bash", "-lc", "cat src/main.rs"],
                            "working_directory": "/repo", "timeout_ms": 10000, "env": {}, "user": null}},
                {"type": "function_call", "call_id": "call_fn", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
                {"type": "local_shell_call_output", "call_id": "call_ls", "output": "fn main() {}"},
                {"type": "function_call_output", "call_id": "call_fn", "output": "src"},
                {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": PATCH},
                {"type": "custom_tool_call_output", "call_id": "call_p",
                 "output": "{\"output\":\"Success. Updated: src/main.rs\",\"metadata\":{\"exit_code\":0}}"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}],
            "tools": [
                {"type": "function", "name": "shell", "description": "Runs a shell command.", "strict": false,
                 "parameters": {"type": "object", "properties": {"command": {"type": "array",
                     "items": {"type": "string"}}}, "required": ["command"]}},
                {"type": "custom", "name": "apply_patch",
                 "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}},
                {"type": "local_shell"},
                {"type": "web_search"}],
            "tool_choice": "auto", "parallel_tool_calls": false, "stream": true, "store": false})
    }

    fn codex_kinds() -> ToolKinds {
        super::super::tool_kinds(Conversion::ResponsesToChat, codex_request().to_string().as_bytes())
    }

    #[test]
    fn request_custom_and_local_shell_tools_and_history() {
        let chat = to_chat(codex_request()).unwrap();
        let msgs = chat["messages"].as_array().unwrap();
        assert_eq!(msgs[0], json!({"role": "system", "content": "You are Codex, a coding agent."}));
        assert_eq!(msgs[1], json!({"role": "user", "content": "fix the greeting"}));
        assert_eq!(msgs[2]["content"], "Looking.");
        let calls = msgs[2]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2, "a local shell call and a function call merge into one assistant message");
        assert_eq!(calls[0]["id"], "call_ls");
        assert_eq!(calls[0]["function"]["name"], "local_shell");
        let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            args,
            json!({"command": ["bash", "-lc", "cat src/main.rs"], "workdir": "/repo", "timeout_ms": 10000})
        );
        assert_eq!(calls[1]["function"]["name"], "shell");
        assert_eq!(msgs[3], json!({"role": "tool", "tool_call_id": "call_ls", "content": "fn main() {}"}));
        assert_eq!(msgs[4], json!({"role": "tool", "tool_call_id": "call_fn", "content": "src"}));
        assert_eq!(msgs[5]["role"], "assistant");
        assert_eq!(msgs[5]["content"], Value::Null);
        let patch_call = &msgs[5]["tool_calls"][0];
        assert_eq!(patch_call["id"], "call_p");
        assert_eq!(patch_call["function"]["name"], "apply_patch");
        let args: Value = serde_json::from_str(patch_call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"input": PATCH}), "the freeform input travels exactly, as `input`");
        assert_eq!(msgs[6]["role"], "tool");
        assert_eq!(msgs[6]["tool_call_id"], "call_p");
        assert!(msgs[6]["content"].as_str().unwrap().contains("Success. Updated"));
        assert_eq!(msgs[7], json!({"role": "user", "content": "thanks"}));
        assert_eq!(msgs.len(), 8);

        let tools = chat["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["shell", "apply_patch", "local_shell"], "web_search is dropped");
        let patch = &tools[1]["function"];
        assert_eq!(tools[1]["type"], "function");
        assert_eq!(
            patch["parameters"],
            json!({"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]})
        );
        let desc = patch["description"].as_str().unwrap();
        assert!(desc.starts_with("Use the `apply_patch` tool to edit files."), "{desc}");
        assert!(desc.contains("string parameter `input`"), "{desc}");
        assert!(desc.contains("lark grammar") && desc.contains(GRAMMAR), "{desc}");
        let shell = &tools[2]["function"];
        assert_eq!(shell["parameters"]["properties"]["command"], json!({"type": "array", "items": {"type": "string"}}));
        assert!(shell["parameters"]["properties"]["workdir"].is_object());
        assert!(shell["parameters"]["properties"]["timeout_ms"].is_object());
        assert_eq!(chat["tool_choice"], "auto");
    }

    #[test]
    fn request_custom_tool_choice_and_long_grammar() {
        let definition = "x".repeat(MAX_GRAMMAR_CHARS + 500);
        let chat = to_chat(json!({"input": "hi", "tools": [
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": definition}},
                {"type": "custom", "name": "notes", "format": {"type": "text"}}],
            "tool_choice": {"type": "custom", "name": "apply_patch"}}))
        .unwrap();
        assert_eq!(chat["tool_choice"], json!({"type": "function", "function": {"name": "apply_patch"}}));
        let desc = chat["tools"][0]["function"]["description"].as_str().unwrap();
        assert!(desc.starts_with("This is a freeform tool"), "no description: only the sentence");
        assert!(desc.ends_with("..."), "the grammar is truncated");
        assert!(desc.chars().count() < MAX_GRAMMAR_CHARS + 300);
        let notes = chat["tools"][1]["function"]["description"].as_str().unwrap();
        assert!(!notes.contains("grammar"), "{notes}");
    }

    #[test]
    fn tool_kinds_read_from_the_request() {
        let kinds = codex_kinds();
        assert_eq!(kinds.kind("apply_patch"), CallKind::Custom);
        assert_eq!(kinds.kind("local_shell"), CallKind::LocalShell);
        assert_eq!(kinds.kind("shell"), CallKind::Function);
        assert!(!kinds.is_empty());
        let body = codex_request().to_string();
        assert!(super::super::tool_kinds(Conversion::AnthropicToChat, body.as_bytes()).is_empty());
        let plain = json!({"input": "custom", "tools": [{"type": "function", "name": "local_shell"}]}).to_string();
        let kinds = super::super::tool_kinds(Conversion::ResponsesToChat, plain.as_bytes());
        assert_eq!(kinds.kind("local_shell"), CallKind::Function, "a function that happens to be named so");
        assert!(super::super::tool_kinds(Conversion::ResponsesToChat, b"{\"custom\": nope").is_empty());
    }

    #[test]
    fn custom_input_and_shell_action_from_arguments() {
        assert_eq!(custom_input(&json!({"input": PATCH}).to_string()), PATCH);
        assert_eq!(custom_input(&json!({"patch": "p"}).to_string()), "p", "one string field, named differently");
        assert_eq!(custom_input("*** Begin Patch\nraw"), "*** Begin Patch\nraw", "not JSON: the raw text");
        assert_eq!(custom_input("{\"a\":1,\"b\":\"x\"}"), "{\"a\":1,\"b\":\"x\"}");
        assert_eq!(
            shell_action("{\"command\":[\"ls\",\"-la\"],\"workdir\":\"/w\",\"timeout_ms\":500}"),
            json!({"type": "exec", "command": ["ls", "-la"], "working_directory": "/w", "timeout_ms": 500, "env": {}})
        );
        assert_eq!(
            shell_action("{\"command\":\"ls | wc\"}"),
            json!({"type": "exec", "command": ["bash", "-lc", "ls | wc"], "working_directory": null,
                   "timeout_ms": null, "env": {}})
        );
    }

    #[test]
    fn response_custom_and_local_shell_calls() {
        let args = json!({"input": PATCH}).to_string();
        let body = json!({"created": 1700000000, "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Patching.", "tool_calls": [
                {"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": args}},
                {"id": "call_f", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}},
                {"id": "call_l", "type": "function", "function": {"name": "local_shell",
                    "arguments": "{\"command\":[\"cargo\",\"test\"],\"workdir\":\"/repo\"}"}},
                {"id": "call_r", "type": "function", "function": {"name": "apply_patch", "arguments": "*** Begin Patch"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        let bytes = body.to_string();
        let out = to_value(
            &super::super::convert_response_with(
                Conversion::ResponsesToChat,
                bytes.as_bytes(),
                "gpt-5-codex",
                &codex_kinds(),
            )
            .unwrap(),
        );
        let output = out["output"].as_array().unwrap();
        assert_eq!(output.len(), 5);
        assert_eq!(output[0]["type"], "message");
        let custom = &output[1];
        assert!(custom["id"].as_str().unwrap().starts_with("ctc_"));
        assert_eq!(
            *custom,
            json!({"id": custom["id"], "type": "custom_tool_call", "status": "completed", "call_id": "call_p",
                   "name": "apply_patch", "input": PATCH})
        );
        assert_eq!(output[2]["type"], "function_call");
        assert_eq!(output[2]["arguments"], "{\"command\":[\"ls\"]}");
        let shell = &output[3];
        assert_eq!(
            *shell,
            json!({"id": shell["id"], "type": "local_shell_call", "status": "completed", "call_id": "call_l",
                   "action": {"type": "exec", "command": ["cargo", "test"], "working_directory": "/repo",
                              "timeout_ms": null, "env": {}}})
        );
        assert_eq!(output[4]["input"], "*** Begin Patch", "unparsable arguments are the input");
        // Without the kinds (old API) every call stays a function call.
        let plain = to_value(&convert_response(Conversion::ResponsesToChat, bytes.as_bytes(), "m").unwrap());
        assert!(plain["output"].as_array().unwrap()[1..].iter().all(|o| o["type"] == "function_call"));
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        let c = json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000, "model": "deepseek-chat",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null});
        format!("data: {c}\n\n")
    }

    /// Tool call `index` whose arguments arrive in pieces of `size` characters (JSON escapes split too).
    fn call_chunks(index: u64, id: &str, name: &str, args: &str, size: usize) -> String {
        let mut out = chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        );
        let chars: Vec<char> = args.chars().collect();
        for piece in chars.chunks(size) {
            let fragment: String = piece.iter().collect();
            out.push_str(&chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}), None));
        }
        out
    }

    fn codex_stream(finish: bool) -> String {
        let mut up = chunk(json!({"role": "assistant", "content": ""}), None);
        up.push_str(&chunk(json!({"content": "I'll fix "}), None));
        up.push_str(&chunk(json!({"content": "the greeting."}), None));
        up.push_str(&call_chunks(0, "call_p", "apply_patch", &json!({"input": PATCH}).to_string(), 3));
        up.push_str(&call_chunks(1, "call_f", "shell", "{\"command\":[\"cargo\",\"fmt\"]}", 14));
        up.push_str(&call_chunks(
            2,
            "call_l",
            "local_shell",
            "{\"command\":[\"cargo\",\"test\"],\"timeout_ms\":60000}",
            5,
        ));
        if finish {
            up.push_str(&chunk(json!({}), Some("tool_calls")));
            up.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20,\"total_tokens\":70}}\n\n");
        }
        up.push_str("data: [DONE]\n\n");
        up
    }

    #[test]
    fn stream_custom_call_between_text_and_function_call() {
        let conv = StreamConverter::new(Conversion::ResponsesToChat, "gpt-5-codex").with_tool_kinds(codex_kinds());
        let out = run_stream(conv, &codex_stream(true), false);
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
                // apply_patch: announced whole when the next call starts
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                // shell: a function call, streamed as it comes
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                // local_shell: announced whole at the finish reason
                "response.output_item.added",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let v: Vec<Value> = out.iter().map(data_json).collect();
        for (i, ev) in v.iter().enumerate() {
            assert_eq!(ev["sequence_number"], i as u64, "event {i}");
            assert_eq!(ev["type"], out[i].event.clone().unwrap());
        }
        let added = &v[9];
        assert_eq!(added["output_index"], 1);
        let item_id = added["item"]["id"].as_str().unwrap();
        assert!(item_id.starts_with("ctc_"));
        assert_eq!(
            added["item"],
            json!({"id": item_id, "type": "custom_tool_call", "status": "in_progress", "call_id": "call_p",
                   "name": "apply_patch", "input": ""})
        );
        assert_eq!(v[10]["item_id"], item_id);
        assert_eq!(v[10]["output_index"], 1);
        assert_eq!(v[10]["delta"], PATCH, "the whole input in one delta, byte for byte");
        assert_eq!(v[11]["input"], PATCH);
        assert_eq!(v[11]["item_id"], item_id);
        assert_eq!(v[12]["item"]["status"], "completed");
        assert_eq!(v[12]["item"]["input"], PATCH);
        assert_eq!(v[12]["output_index"], 1);
        assert_eq!(v[13]["output_index"], 2);
        assert_eq!(v[13]["item"]["type"], "function_call");
        let fn_args: String = v[14..16].iter().map(|e| e["delta"].as_str().unwrap()).collect();
        assert_eq!(fn_args, "{\"command\":[\"cargo\",\"fmt\"]}");
        assert_eq!(v[18]["output_index"], 3);
        assert_eq!(v[18]["item"]["type"], "local_shell_call");
        assert_eq!(v[18]["item"]["status"], "in_progress");
        assert_eq!(
            v[19]["item"]["action"],
            json!({"type": "exec", "command": ["cargo", "test"], "working_directory": null, "timeout_ms": 60000, "env": {}})
        );
        assert_eq!(v[19]["item"]["call_id"], "call_l");
        let done = &v[20]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["total_tokens"], 70);
        let output = done["output"].as_array().unwrap();
        let types: Vec<&str> = output.iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["message", "custom_tool_call", "function_call", "local_shell_call"]);
        assert_eq!(output[0]["content"][0]["text"], "I'll fix the greeting.");
        assert_eq!(output[1], v[12]["item"], "the completed output repeats the done item");
        assert_eq!(output[3], v[19]["item"]);
    }

    #[test]
    fn stream_custom_call_closed_by_done_and_without_kinds() {
        // Upstream ends with [DONE] only: the open custom call is still emitted, before `response.completed`.
        let mut up = call_chunks(0, "call_p", "apply_patch", &json!({"input": PATCH}).to_string(), 1);
        up.push_str("data: [DONE]\n\n");
        let conv = StreamConverter::new(Conversion::ResponsesToChat, "m").with_tool_kinds(codex_kinds());
        let out = run_stream(conv, &up, false);
        assert_eq!(
            names(&out),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let last = data_json(out.last().unwrap());
        assert_eq!(last["response"]["output"][0]["input"], PATCH);
        assert_eq!(last["sequence_number"], 6);
        // Without kinds the same stream is an ordinary function call.
        let out = run_stream(StreamConverter::new(Conversion::ResponsesToChat, "m"), &up, false);
        assert!(names(&out).contains(&"response.function_call_arguments.delta".to_string()));
        assert!(!names(&out).iter().any(|n| n.contains("custom_tool_call")));
    }
}
