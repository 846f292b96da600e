//! Canned upstream bodies in the OpenAI and Anthropic shapes, for mocks to answer with.

use super::{Recorded, Reply};

/// An OpenAI chat completion with usage.
pub fn chat_json(model: &str, text: &str, prompt: u64, completion: u64) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

/// An OpenAI chat stream; the usage chunk is sent only when `usage` is true.
pub fn chat_sse(model: &str, words: &[&str], usage: bool) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        out.push(format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push(format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"));
    if usage {
        out.push(format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n", words.len(), 11 + words.len()));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

/// An Anthropic message with usage.
pub fn messages_json(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": 6}
    })
}

pub fn messages_sse(model: &str, words: &[&str]) -> Vec<String> {
    let mut out = vec![format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"{model}\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n"
    )];
    out.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
    for w in words {
        out.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{w}\"}}}}\n\n"));
    }
    out.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
    out.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n", words.len()));
    out.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    out
}

/// An Anthropic upstream's answer from claude-sonnet-4-5: the stream `Hi there` when `r` asks for a stream, else the
/// message `Hi`.
pub fn claude_reply(r: &Recorded) -> Reply {
    if r.json()["stream"] == true {
        Reply::Sse(messages_sse("claude-sonnet-4-5", &["Hi", " there"]))
    } else {
        Reply::Json(200, messages_json("claude-sonnet-4-5", "Hi"))
    }
}
