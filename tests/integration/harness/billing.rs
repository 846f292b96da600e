//! An OpenAI-compatible upstream that bills per key, on [`Mock`]: the usage it reports depends on the key, and it
//! keeps the totals it billed each key, so tests can compare them with what the router recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Mock, Recorded, Reply};

/// What the mock billed one key: (responses with usage, prompt tokens incl. cached, cached, completion tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billed {
    pub responses: u64,
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
}

/// Keys containing `flaky` get a 503; others get a chat completion whose usage depends on the key.
pub struct Upstream {
    mock: Mock,
    billed: Arc<Mutex<HashMap<String, Billed>>>,
}

/// Usage the mock reports for `key`: (prompt, cached, completion).
pub fn usage_for(key: &str) -> (u64, u64, u64) {
    if key.contains("alpha") { (11, 3, 7) } else { (13, 0, 5) }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let billed: Arc<Mutex<HashMap<String, Billed>>> = Arc::default();
        let b = billed.clone();
        let mock = Mock::start(move |r, _| answer(r, &b)).await;
        Upstream { mock, billed }
    }

    pub fn base_url(&self) -> String {
        self.mock.openai_url()
    }

    pub fn billed(&self) -> HashMap<String, Billed> {
        self.billed.lock().unwrap().clone()
    }
}

fn answer(req: &Recorded, billed: &Mutex<HashMap<String, Billed>>) -> Reply {
    let key =
        req.header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string)).unwrap_or_default();
    let json = req.json();
    if key.contains("flaky") {
        return Reply::json_text(503, r#"{"error":{"message":"overloaded","type":"server_error"}}"#);
    }
    let (prompt, cached, completion) = usage_for(&key);
    {
        let mut m = billed.lock().unwrap();
        let e = m.entry(key.clone()).or_default();
        e.responses += 1;
        e.prompt += prompt;
        e.cached += cached;
        e.completion += completion;
    }
    let model = json["model"].as_str().unwrap_or("gpt-test").to_string();
    // Keys containing `nousage` get answers without any usage: the router must estimate.
    let usage = if key.contains("nousage") {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    };
    if json["stream"].as_bool() == Some(true) {
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut sse = String::new();
        for ev in [
            chunk(serde_json::json!({"role": "assistant", "content": ""}), serde_json::Value::Null),
            chunk(serde_json::json!({"content": "Hello"}), serde_json::Value::Null),
            chunk(serde_json::json!({}), serde_json::json!("stop")),
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}),
        ] {
            if ev["usage"].is_null() && ev["choices"].as_array().is_some_and(|c| c.is_empty()) {
                continue;
            }
            sse.push_str(&format!("data: {ev}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        return Reply::Raw(200, vec![("content-type", "text/event-stream".into())], sse);
    }
    let mut out = serde_json::json!({
        "id": "c1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how can I help you today?"}, "finish_reason": "stop"}],
    });
    if !usage.is_null() {
        out["usage"] = usage;
    }
    Reply::json_text(200, out.to_string())
}
