//! Error bodies in each client protocol's own shape.
//!
//! OpenAI: `{"error":{"message","type","param","code"}}`. Anthropic: `{"type":"error","error":{"type","message"}}`.
//! Gemini (Google APIs): `{"error":{"code","message","status"}}`.
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

/// The Google RPC status name for an HTTP status (Gemini error bodies).
pub fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 | 529 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// `{"error":{"code":..,"message":..,"status":..}}`.
pub fn gemini_body(status: u16, message: &str) -> serde_json::Value {
    json!({"error": {"code": status, "message": message, "status": gemini_status(status)}})
}

/// An error body for `protocol`; `code` is a short machine-readable reason (OpenAI `code`).
pub fn body(protocol: Protocol, status: u16, message: &str, code: Option<&str>) -> Bytes {
    let v = match protocol {
        Protocol::Openai => {
            // A spent budget is OpenAI's `insufficient_quota` (retrying does not help), not a rate limit.
            let kind = if code == Some("budget_exceeded") { "insufficient_quota" } else { openai_type(status) };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Protocol::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type(status), "message": message}
        }),
        Protocol::Gemini => gemini_body(status, message),
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
        Protocol::Gemini => SseEvent::data(gemini_body(500, message).to_string()),
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
        let g: serde_json::Value = serde_json::from_slice(&body(Protocol::Gemini, 429, "slow down", None)).unwrap();
        assert_eq!(g, json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}));
        let ev = stream_event(Protocol::Gemini, "cut");
        assert_eq!(ev.event, None);
        assert!(ev.data.contains("\"status\":\"INTERNAL\""));
    }
}
