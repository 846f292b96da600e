//! Cross-protocol: Anthropic clients on OpenAI-compatible channels, OpenAI clients on Anthropic channels,
//! Responses clients on chat-only channels. Real binary, mock upstreams.

use crate::harness::*;
use serde_json::{Value, json};

fn events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for ev in router::protocol::sse::SseParser::new().feed(text.as_bytes()) {
        let v = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
        out.push((ev.event.unwrap_or_default(), v));
    }
    out
}

/// An OpenAI chat stream calling a tool, its arguments split across many chunks.
fn tool_call_sse() -> Vec<String> {
    let mut out = vec![
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me check.\"}}]}\n\n".to_string(),
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n".to_string(),
    ];
    for frag in ["{\\\"ci", "ty\\\": \\\"Par", "is\\\", \\\"unit", "\\\": \\\"c\\\"}"] {
        out.push(format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{frag}\"}}}}]}}}}]}}\n\n"));
    }
    out.push("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n".into());
    out.push("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":12,\"total_tokens\":52,\"prompt_tokens_details\":{\"cached_tokens\":30}}}\n\n".into());
    out.push("data: [DONE]\n\n".into());
    out
}

fn config(openai: &str, anthropic: &str) -> String {
    format!(
        "channels:\n  - name: ds\n    base_url: {openai}\n    keys: [sk-up-openai]\n    models: [deepseek-chat, shared]\n  - name: claude\n    protocol: anthropic\n    base_url: {anthropic}\n    keys: [sk-up-anthropic]\n    models: [claude-sonnet-4-5, shared]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_an_openai_channel_with_tools_streaming() {
    let oa = Mock::start(|r, _| {
        if r.json()["stream"] == true {
            Reply::Sse(tool_call_sse())
        } else {
            Reply::Json(200, chat_json("deepseek-chat", "plain answer", 40, 5))
        }
    })
    .await;
    let an = Mock::start(|_, _| Reply::Json(500, json!({}))).await;
    let router = Router::start(&config(&oa.openai_url(), &an.root_url()));
    let req = json!({
        "model": "deepseek-chat", "max_tokens": 100, "system": "be brief",
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "weather in Paris?"}]
    });
    // Non-stream.
    let v: Value =
        client().post(router.url("/v1/messages?beta=true")).json(&req).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "plain answer");
    assert_eq!(v["model"], "deepseek-chat");
    let up = oa.last();
    assert_eq!(up.uri, "/v1/chat/completions", "the Anthropic-only query is not forwarded to an OpenAI upstream");
    assert_eq!(up.json()["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(up.json()["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(up.header("authorization").unwrap(), "Bearer sk-up-openai");
    // Stream.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let resp = client().post(router.url("/v1/messages")).json(&sreq).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let evs = events(&resp.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let partial: String = evs
        .iter()
        .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"city": "Paris", "unit": "c"}));
    let start = evs.iter().find(|(_, v)| v["content_block"]["type"] == "tool_use").expect("tool_use block");
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    let delta = evs.iter().rev().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    // Cached tokens are not counted twice: input = 40 - 30.
    assert_eq!(delta.1["usage"]["output_tokens"], 12);
    assert_eq!(oa.last().json()["stream_options"]["include_usage"], true);
    assert_eq!(an.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_an_anthropic_channel_stream_and_usage_chunk() {
    let an = Mock::start(|r, _| claude_reply(r)).await;
    let oa = Mock::start(|_, _| Reply::Json(500, json!({}))).await;
    let router = Router::start(&config(&oa.openai_url(), &an.root_url()));
    let v: Value = client()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi");
    assert_eq!(v["usage"]["prompt_tokens"], 12 + 3 + 100);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    let up = an.last();
    assert_eq!(up.uri, "/v1/messages");
    assert_eq!(up.json()["system"], "sys");
    assert!(up.json()["max_tokens"].as_u64().unwrap() > 0, "Anthropic needs max_tokens");
    assert_eq!(up.header("x-api-key").unwrap(), "sk-up-anthropic");

    let text = client()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "claude-sonnet-4-5", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evs = events(&text);
    let content: String = evs.iter().filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Hi there");
    assert!(evs.iter().any(|(_, v)| v["choices"] == json!([]) && v["usage"]["completion_tokens"] == 2), "{text}");
    assert_eq!(evs.last().unwrap().1, Value::String("[DONE]".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_client_on_a_chat_only_channel() {
    let oa = Mock::start(|r, _| {
        if r.json()["stream"] == true {
            Reply::Sse(tool_call_sse())
        } else {
            Reply::Json(200, chat_json("deepseek-chat", "done", 10, 2))
        }
    })
    .await;
    let router = Router::start(&config(&oa.openai_url(), "http://127.0.0.1:9"));
    let req = json!({
        "model": "deepseek-chat", "instructions": "you are codex", "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]}],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    });
    let text = client().post(router.url("/v1/responses")).json(&req).send().await.unwrap().text().await.unwrap();
    let up = oa.last();
    assert_eq!(up.uri, "/v1/chat/completions", "a local OpenAI-compatible channel gets chat completions");
    assert_eq!(up.json()["messages"][0]["role"], "system");
    let evs = events(&text);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "response.created");
    assert!(names.contains(&"response.function_call_arguments.delta"), "{names:?}");
    assert_eq!(*names.last().unwrap(), "response.completed");
    let done = &evs.last().unwrap().1["response"];
    assert_eq!(done["usage"]["input_tokens"], 40);
    assert!(
        done["output"].as_array().unwrap().iter().any(|o| o["type"] == "function_call" && o["name"] == "get_weather")
    );
    // Multi-turn: the function output goes back as a tool message.
    let req2 = json!({
        "model": "deepseek-chat", "input": [
            {"type": "message", "role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
        ]
    });
    let v: Value = client().post(router.url("/v1/responses")).json(&req2).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "response");
    let msgs = oa.last().json()["messages"].clone();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_channel_wins_ties_and_upstream_errors_come_back_in_the_clients_shape() {
    let oa = Mock::start(|_, _| {
        Reply::Json(400, json!({"error": {"message": "context too long", "type": "invalid_request_error"}}))
    })
    .await;
    let an = Mock::start(|_, _| Reply::Json(200, messages_json("shared", "native"))).await;
    let router = Router::start(&config(&oa.openai_url(), &an.root_url()));
    for _ in 0..5 {
        let r = client()
            .post(router.url("/v1/messages"))
            .json(&json!({"model": "shared", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-router-channel"], "claude");
    }
    assert_eq!(oa.count(), 0);
    // Pinned to the OpenAI channel: its 400 comes back as an Anthropic error.
    let r = client()
        .post(router.url("/v1/messages"))
        .header("x-router-channel", "ds")
        .json(&json!({"model": "shared", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("context too long"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_custom_apply_patch_tool_on_a_chat_only_channel() {
    const PATCH: &str = "*** Begin Patch\n*** Update File: src/lib.rs\n@@\n-    \"old\"\n+    \"new \\\"quoted\\\"\\n\"\n*** End Patch\n";
    // The upstream calls `apply_patch` (a plain function to it), the arguments split into 4-char pieces.
    let args = json!({"input": PATCH}).to_string();
    let chunk = |delta: Value, finish: Value| {
        format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    };
    let mut sse = vec![chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_p", "type": "function",
            "function": {"name": "apply_patch", "arguments": ""}}]}),
        Value::Null,
    )];
    let chars: Vec<char> = args.chars().collect();
    for piece in chars.chunks(4) {
        let fragment: String = piece.iter().collect();
        sse.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}), Value::Null));
    }
    sse.push(chunk(json!({}), json!("tool_calls")));
    sse.push(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9,\"total_tokens\":39}}\n\n"
            .into(),
    );
    sse.push("data: [DONE]\n\n".into());
    let oa = Mock::start(move |_, _| Reply::Sse(sse.clone())).await;
    let router = Router::start(&config(&oa.openai_url(), "http://127.0.0.1:9"));
    let req = json!({
        "model": "deepseek-chat", "instructions": "you are codex", "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "rename it"}]}],
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}]
    });
    let text = client().post(router.url("/v1/responses")).json(&req).send().await.unwrap().text().await.unwrap();
    let up = oa.last().json();
    assert_eq!(up["tools"][0]["function"]["name"], "apply_patch");
    assert_eq!(up["tools"][0]["function"]["parameters"]["required"], json!(["input"]));
    let evs = events(&text);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"response.function_call_arguments.delta"), "{names:?}");
    let delta = evs.iter().find(|(n, _)| n == "response.custom_tool_call_input.delta").expect("input delta");
    assert_eq!(delta.1["delta"], PATCH);
    let done = evs.iter().find(|(n, v)| n == "response.output_item.done" && v["item"]["type"] == "custom_tool_call");
    let item = &done.expect("custom_tool_call item").1["item"];
    assert_eq!(item["name"], "apply_patch");
    assert_eq!(item["call_id"], "call_p");
    assert_eq!(item["input"], PATCH, "the client gets the exact patch text");
    let (last, completed) = evs.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(completed["response"]["output"][0]["input"], PATCH);
    assert_eq!(completed["response"]["usage"]["output_tokens"], 9);
}
