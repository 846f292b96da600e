//! Error bodies in each client protocol's own shape.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`. Anthropic: `{"type":"error","error":{"type","message"}}`.
//! Owns the status -> error type mapping; never puts secrets in a message (callers pass only safe text).

use bytes::Bytes;
use serde_json::json;

use super::Protocol;

/// The Anthropic error type for a status.
pub fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The OpenAI error type for a status.
pub fn openai_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// An error body for `protocol`; `code` is a short machine-readable reason (OpenAI `code`).
pub fn body(protocol: Protocol, status: u16, message: &str, code: Option<&str>) -> Bytes {
    let v = match protocol {
        Protocol::Openai => json!({
            "error": {"message": message, "type": openai_type(status), "param": null, "code": code}
        }),
        Protocol::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message}
        }),
    };
    Bytes::from(v.to_string())
}

/// An error as one SSE event, for failures after a stream has started.
pub fn stream_event(protocol: Protocol, message: &str) -> crate::protocol::sse::SseEvent {
    use crate::protocol::sse::SseEvent;
    match protocol {
        Protocol::Openai => SseEvent::data(
            json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_interrupted"}})
                .to_string(),
        ),
        Protocol::Anthropic => SseEvent::named(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": message}}).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let o: serde_json::Value =
            serde_json::from_slice(&body(Protocol::Openai, 404, "no model", Some("model_not_found"))).unwrap();
        assert_eq!(o["error"]["type"], "not_found_error");
        assert_eq!(o["error"]["code"], "model_not_found");
        let a: serde_json::Value = serde_json::from_slice(&body(Protocol::Anthropic, 401, "bad key", None)).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "authentication_error");
    }
}
