//! Decoding of an OpenAI Chat Completions stream into normalized pieces.
//!
//! Owns the fragile part of reading Chat chunks, shared by every direction whose upstream is OpenAI Chat:
//! reasoning/text deltas, tool calls whose id, name and argument fragments arrive split over many chunks (the
//! first chunk of a call may carry only an id or only a name; some providers omit `index` or reuse index 0 for
//! every call), finish reasons, usage chunks, `[DONE]` and in-stream error objects. The client-side encoders
//! (Anthropic events, Responses events) only see [`Piece`]s.

use serde_json::Value;

use super::{Tokens, arguments_string, error_fields, new_id, str_field};
use crate::protocol::sse::SseEvent;

/// One normalized step of a Chat stream.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    /// The first valid chunk was seen (emitted once), with its usage if it carried one.
    Began,
    Reasoning(String),
    Text(String),
    /// A tool call can start: its id and name are known. `slot` numbers calls 0, 1, ... in order of appearance.
    ToolStart {
        slot: usize,
        id: String,
        name: String,
    },
    /// An argument fragment of a started call.
    ToolArgs {
        slot: usize,
        fragment: String,
    },
    /// `finish_reason` of the first choice.
    Finish(String),
    /// A usage object; `usage_only` when the chunk had no choice (the `include_usage` chunk).
    Usage {
        tokens: Tokens,
        usage_only: bool,
    },
    /// An error object inside the stream.
    Error {
        message: String,
        kind: Option<String>,
    },
    /// `data: [DONE]`.
    Done,
}

/// A client-side encoder of Chat pieces: the stream loop every Chat-upstream direction shares.
pub(super) trait PieceEncoder {
    fn decoder(&mut self) -> &mut ChatDecoder;
    /// The client stream is closed: nothing more goes out.
    fn closed(&self) -> bool;
    fn apply(&mut self, piece: Piece, out: &mut Vec<SseEvent>);

    /// Decodes one upstream event and applies its pieces until the client stream closes.
    fn push_event(&mut self, ev: &SseEvent, out: &mut Vec<SseEvent>) {
        if self.closed() {
            return;
        }
        let mut pieces = Vec::new();
        self.decoder().decode(ev, &mut pieces);
        for piece in pieces {
            self.apply(piece, out);
            if self.closed() {
                return;
            }
        }
    }
}

/// A tool call being assembled.
#[derive(Debug, Default)]
struct ToolCall {
    /// The upstream `index`, if it gave one.
    key: Option<u64>,
    id: String,
    name: String,
    /// Argument fragments received before the call could start.
    buffered: String,
    started: bool,
}

/// Stateful Chat chunk decoder.
#[derive(Debug, Default)]
pub(super) struct ChatDecoder {
    began: bool,
    calls: Vec<ToolCall>,
}

impl ChatDecoder {
    /// Decodes one upstream SSE event. Non-JSON data (other than `[DONE]`) is ignored.
    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<Piece>) {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.flush_tools(out);
            out.push(Piece::Done);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            let (message, kind, _) = error_fields(err);
            let message = if message.is_empty() { err.to_string() } else { message };
            out.push(Piece::Error { message, kind });
            return;
        }
        if !chunk.is_object() {
            return;
        }
        if !self.began {
            self.began = true;
            out.push(Piece::Began);
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        let choice = choices.and_then(|c| c.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0));
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                self.decode_delta(delta, out);
            }
            if let Some(reason) = str_field(choice, "finish_reason") {
                self.flush_tools(out);
                out.push(Piece::Finish(reason.to_string()));
            }
        }
        if let Some(tokens) = chunk.get("usage").and_then(Tokens::from_chat) {
            let usage_only = choices.is_none_or(|c| c.is_empty());
            out.push(Piece::Usage { tokens, usage_only });
        }
    }

    fn decode_delta(&mut self, delta: &Value, out: &mut Vec<Piece>) {
        let reasoning = str_field(delta, "reasoning_content").or_else(|| str_field(delta, "reasoning"));
        if let Some(r) = reasoning {
            out.push(Piece::Reasoning(r.to_string()));
        }
        if let Some(t) = str_field(delta, "content") {
            out.push(Piece::Text(t.to_string()));
        }
        if let Some(t) = str_field(delta, "refusal") {
            out.push(Piece::Text(t.to_string()));
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                self.decode_tool_call(call, out);
            }
        }
        // Legacy single `function_call` delta: treat as tool call slot keyed by index 0.
        if let Some(fc) = delta.get("function_call").filter(|f| f.is_object()) {
            let call = serde_json::json!({"index": 0, "function": fc});
            self.decode_tool_call(&call, out);
        }
    }

    fn decode_tool_call(&mut self, call: &Value, out: &mut Vec<Piece>) {
        let id = str_field(call, "id");
        let slot = self.slot_for(call.get("index").and_then(Value::as_u64), id);
        let function = call.get("function");
        let name = function.and_then(|f| str_field(f, "name"));
        let fragment = arguments_string(function.and_then(|f| f.get("arguments")));
        let tc = &mut self.calls[slot];
        if let Some(id) = id.filter(|_| tc.id.is_empty()) {
            tc.id = id.to_string();
        }
        if let Some(name) = name.filter(|_| tc.name.is_empty()) {
            tc.name = name.to_string();
        }
        if tc.started {
            if !fragment.is_empty() {
                out.push(Piece::ToolArgs { slot, fragment });
            }
            return;
        }
        tc.buffered.push_str(&fragment);
        // Start once the name is known and either the id is known or arguments began (then the id is made up).
        if !tc.name.is_empty() && (!tc.id.is_empty() || !tc.buffered.is_empty()) {
            self.start(slot, out);
        }
    }

    /// Which call a tool-call delta belongs to, creating a new one when needed.
    fn slot_for(&mut self, index: Option<u64>, id: Option<&str>) -> usize {
        let existing = match index {
            Some(i) => self.calls.iter().rposition(|c| c.key == Some(i)),
            None => match id {
                Some(id) => self.calls.iter().position(|c| c.id == id),
                None => self.calls.len().checked_sub(1),
            },
        };
        // A different id on a known index means the provider reused the index for a new call.
        let reused = existing.is_some_and(|s| {
            let known = &self.calls[s].id;
            matches!(id, Some(id) if !known.is_empty() && known != id)
        });
        match existing {
            Some(slot) if !reused => slot,
            _ => {
                self.calls.push(ToolCall { key: index, ..ToolCall::default() });
                self.calls.len() - 1
            }
        }
    }

    fn start(&mut self, slot: usize, out: &mut Vec<Piece>) {
        let tc = &mut self.calls[slot];
        if tc.id.is_empty() {
            tc.id = new_id("call_");
        }
        tc.started = true;
        out.push(Piece::ToolStart { slot, id: tc.id.clone(), name: tc.name.clone() });
        if !tc.buffered.is_empty() {
            out.push(Piece::ToolArgs { slot, fragment: std::mem::take(&mut tc.buffered) });
        }
    }

    /// Starts every call still waiting for its id or name (the stream is ending).
    fn flush_tools(&mut self, out: &mut Vec<Piece>) {
        for slot in 0..self.calls.len() {
            if !self.calls[slot].started {
                self.start(slot, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&str]) -> Vec<Piece> {
        let mut d = ChatDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.decode(&SseEvent::data(*c), &mut out);
        }
        out
    }

    fn args_of(pieces: &[Piece], want: usize) -> String {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::ToolArgs { slot, fragment } if *slot == want => Some(fragment.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn id_only_then_name_then_args() {
        let pieces = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function"}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get_weather"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
        ]);
        assert_eq!(pieces[0], Piece::Began);
        assert_eq!(pieces[1], Piece::ToolStart { slot: 0, id: "call_1".into(), name: "get_weather".into() });
        assert_eq!(args_of(&pieces, 0), r#"{"a":1}"#);
    }

    #[test]
    fn name_only_waits_for_id() {
        let pieces = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9","function":{"arguments":"{}"}}]}}]}"#,
        ]);
        assert_eq!(pieces[1], Piece::ToolStart { slot: 0, id: "call_9".into(), name: "f".into() });
        assert_eq!(args_of(&pieces, 0), "{}");
    }

    #[test]
    fn missing_id_is_generated_when_args_start() {
        let pieces = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{"}}]}}]}"#,
        ]);
        match &pieces[1] {
            Piece::ToolStart { id, name, .. } => assert!(id.starts_with("call_") && name == "f"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reused_index_with_new_id_is_a_new_call() {
        let pieces = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        ]);
        assert!(pieces.contains(&Piece::ToolStart { slot: 1, id: "b".into(), name: "g".into() }));
    }

    #[test]
    fn finish_flushes_pending_call_and_usage_is_flagged() {
        let pieces = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            "[DONE]",
        ]);
        assert!(matches!(&pieces[1], Piece::ToolStart { slot: 0, name, .. } if name == "f"));
        assert_eq!(pieces[2], Piece::Finish("tool_calls".into()));
        assert!(matches!(&pieces[3], Piece::Usage { usage_only: true, tokens } if tokens.output == 2));
        assert_eq!(pieces[4], Piece::Done);
    }

    #[test]
    fn error_object_and_garbage() {
        let pieces = decode_all(&["not json", r#"{"error":{"message":"overloaded","type":"server_error"}}"#]);
        assert_eq!(pieces, vec![Piece::Error { message: "overloaded".into(), kind: Some("server_error".into()) }]);
    }
}
