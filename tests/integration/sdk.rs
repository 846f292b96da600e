//! The official `openai` and `anthropic` Python SDKs against the real router and mock upstreams.
//! The README's test command (scripts/test.sh) installs them into .venv and sets ROUTER_TEST_PYTHON.

use std::path::PathBuf;

use crate::harness::*;
use serde_json::json;

fn responses_sse() -> Vec<String> {
    let resp = |status: &str, output: serde_json::Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 1700000000, "status": status, "model": "gpt-4o",
               "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
               "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
                         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9}})
    };
    let item = json!({"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": "Hi from responses", "annotations": []}]});
    let ev = |name: &str, v: serde_json::Value| format!("event: {name}\ndata: {v}\n\n");
    vec![
        ev(
            "response.created",
            json!({"type": "response.created", "sequence_number": 0, "response": resp("in_progress", json!([]))}),
        ),
        ev(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        ),
        ev(
            "response.content_part.added",
            json!({"type": "response.content_part.added", "sequence_number": 2, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        ev(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": "Hi from ", "logprobs": []}),
        ),
        ev(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": "responses", "logprobs": []}),
        ),
        ev(
            "response.output_text.done",
            json!({"type": "response.output_text.done", "sequence_number": 5, "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "text": "Hi from responses", "logprobs": []}),
        ),
        ev(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": item}),
        ),
        ev(
            "response.completed",
            json!({"type": "response.completed", "sequence_number": 7, "response": resp("completed", json!([item]))}),
        ),
    ]
}

/// A chat stream calling `get_weather`, arguments split over chunks.
fn tool_call_sse() -> Vec<String> {
    let mut out = vec![
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n".to_string(),
    ];
    for frag in ["{\\\"city", "\\\": \\\"Oslo\\\"}"] {
        out.push(format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{frag}\"}}}}]}}}}]}}\n\n"));
    }
    out.push("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n".into());
    out.push(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":8,\"total_tokens\":28}}\n\n"
            .into(),
    );
    out.push("data: [DONE]\n\n".into());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_unchanged_through_the_router() {
    let oa = Mock::start(|r, _| {
        let body = r.json();
        if r.uri.ends_with("/embeddings") {
            return Reply::Json(
                200,
                json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "model": "text-embedding-3-small", "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
            );
        }
        if r.uri.ends_with("/responses") {
            return Reply::Sse(responses_sse());
        }
        if body["tools"].is_array() && body["stream"] == true {
            return Reply::Sse(tool_call_sse());
        }
        if body["stream"] == true {
            let wants = body["stream_options"]["include_usage"] == true;
            return Reply::Sse(chat_sse("gpt-4o", &["Hello", " world"], wants));
        }
        Reply::Json(200, chat_json("gpt-4o", "hello from openai mock", 9, 2))
    })
    .await;
    let an = Mock::start(|r, _| {
        if r.uri.contains("count_tokens") {
            return Reply::Json(200, json!({"input_tokens": 7}));
        }
        claude_reply(r)
    })
    .await;
    let cfg = format!(
        "server:\n  keys:\n    - {{name: sdk, key: sk-gw-sdk}}\nchannels:\n  - name: oa\n    base_url: {}\n    keys: [sk-up-openai-1]\n    models: [gpt-4o, text-embedding-3-small]\n    responses_api: native\n  - name: chatonly\n    base_url: {}\n    keys: [sk-up-openai-2]\n    models: [deepseek-chat]\n  - name: an\n    protocol: anthropic\n    base_url: {}\n    keys: [sk-up-anthropic-1]\n    models: [claude-sonnet-4-5]\n",
        oa.openai_url(),
        oa.openai_url(),
        an.root_url()
    );
    let router = Router::start(&cfg);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/sdk_e2e.py");
    let base = format!("http://{}", router.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python()).arg(script).arg(base).arg("sk-gw-sdk").output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK checks failed:\n{stdout}\n{stderr}\nrouter log:\n{}", router.stderr());
    assert!(stdout.contains("all checks passed"));
    let log = router.stderr();
    assert!(!log.contains("sk-up-openai-1") && !log.contains("sk-up-anthropic-1"));
}
