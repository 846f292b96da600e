//! Gemini ingress through the real binary: `/v1beta/models/{model}:generateContent` and friends, onto a
//! chat-only channel, an Anthropic channel (translated both ways) and a native `gemini` channel (forwarded
//! unchanged), with the gateway key in `x-goog-api-key`, `?key=` or Bearer.

use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

const UPSTREAM_KEY: &str = "sk-upstream-secret-9876543210";

fn config(channels: &str) -> String {
    format!("server:\n  keys:\n    - {{name: me, key: sk-gw-gemini}}\nchannels:\n{channels}")
}

fn channel(name: &str, protocol: &str, base_url: &str, models: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: {protocol}\n    base_url: {base_url}\n    keys: [{{name: k, key: {UPSTREAM_KEY}}}]\n    models: [{models}]\n"
    )
}

fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

/// A chat-only upstream: a tool call (arguments in pieces) when tools are offered and no result came back yet,
/// text otherwise; streams when asked, usage in the last chunk.
async fn chat_upstream() -> Mock {
    Mock::start(|r, _| {
        let body = r.json();
        let has_result = body["messages"].as_array().into_iter().flatten().any(|m| m["role"] == "tool");
        let wants_tool = body["tools"].is_array() && !has_result;
        if body["stream"] != true {
            let message = if wants_tool {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": "Sunny in Paris"})
            };
            let finish = if wants_tool { "tool_calls" } else { "stop" };
            return Reply::Json(
                200,
                json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "deepseek-chat",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}}),
            );
        }
        let mut out = vec![chat_chunk(json!({"role": "assistant", "content": ""}), None)];
        if wants_tool {
            out.push(chat_chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
                None,
            ));
            for piece in ["{\"ci", "ty\":\"Pa", "ris\"}"] {
                out.push(chat_chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None));
            }
            out.push(chat_chunk(json!({}), Some("tool_calls")));
        } else {
            for w in ["Sunny ", "in ", "Paris"] {
                out.push(chat_chunk(json!({"content": w}), None));
            }
            out.push(chat_chunk(json!({}), Some("stop")));
        }
        out.push(format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}})
        ));
        out.push("data: [DONE]\n\n".into());
        Reply::Sse(out)
    })
    .await
}

fn weather_request() -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}],
    })
}

/// POSTs a Gemini request body with the gateway key in `x-goog-api-key`.
async fn gemini_post(router: &Router, path: &str, body: Value) -> reqwest::Response {
    client().post(router.url(path)).header("x-goog-api-key", "sk-gw-gemini").json(&body).send().await.unwrap()
}

/// SSE `data:` payloads of a body, as JSON.
fn sse_chunks(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

async fn records_where(router: &Router, n: usize) -> Vec<Value> {
    let ok = eventually(Duration::from_secs(5), || router.records().len() >= n).await;
    assert!(ok, "expected {n} records, have {:?}", router.records());
    router.records()
}

#[tokio::test]
async fn gemini_client_on_a_chat_only_channel() {
    let up = chat_upstream().await;
    let router = Router::start(&config(&channel("ds", "openai", &up.openai_url(), "deepseek-chat")));
    let http = client();

    // Non-stream, key in x-goog-api-key: a function call comes back as a whole `functionCall` part.
    let resp = gemini_post(&router, "/v1beta/models/deepseek-chat:generateContent", weather_request()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"id": "call_9", "name": "get_weather", "args": {"city": "Paris"}})
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 40);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 8);
    let sent = up.last();
    assert_eq!(sent.uri, "/v1/chat/completions");
    assert_eq!(sent.header("authorization").as_deref(), Some(&*format!("Bearer {UPSTREAM_KEY}")));
    assert!(sent.header("x-goog-api-key").is_none(), "the gateway key is not forwarded");
    assert_eq!(sent.json()["model"], "deepseek-chat");
    assert_eq!(sent.json()["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");

    // The loop's second turn, streamed with `?alt=sse&key=`: the result goes back as a tool message.
    let mut second = weather_request();
    second["contents"].as_array_mut().unwrap().extend([
        json!({"role": "model", "parts": [{"functionCall": {"id": "call_9", "name": "get_weather", "args": {"city": "Paris"}}}]}),
        json!({"role": "user", "parts": [{"functionResponse": {"id": "call_9", "name": "get_weather", "response": {"output": "18C, sunny"}}}]}),
    ]);
    let resp = http
        .post(router.url("/v1beta/models/deepseek-chat:streamGenerateContent?alt=sse&key=sk-gw-gemini"))
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let chunks = sse_chunks(&resp.text().await.unwrap());
    let text: String =
        chunks.iter().filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    assert_eq!(text, "Sunny in Paris");
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 48);
    let sent = up.last();
    assert!(!sent.uri.contains("key") && !sent.uri.contains("alt"), "{}", sent.uri);
    let msgs = sent.json()["messages"].clone();
    assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": "call_9", "content": "18C, sunny"}));
    assert_eq!(sent.json()["stream_options"]["include_usage"], true);

    // Without `alt=sse` the stream is one JSON array; Bearer works too.
    let resp = http
        .post(router.url("/v1/models/deepseek-chat:streamGenerateContent"))
        .bearer_auth("sk-gw-gemini")
        .json(&weather_request())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let arr: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(
        arr.last().unwrap()["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"city": "Paris"})
    );

    let records = records_where(&router, 3).await;
    for r in &records {
        assert_eq!(r["client_protocol"], "gemini", "{r}");
        assert_eq!(r["translated"], "gemini->openai", "{r}");
        assert_eq!(r["tokens"]["input"], 40, "{r}");
        assert_eq!(r["tokens"]["output"], 8, "{r}");
        assert_eq!(r["requested_model"], "deepseek-chat");
        assert!(!r["path"].as_str().unwrap().contains("key"), "{r}");
    }
    assert_eq!(records.iter().filter(|r| r["stream"] == true).count(), 2);
    assert!(!router.stderr().contains("sk-gw-gemini"), "the query key is never logged");
}

#[tokio::test]
async fn gemini_local_answers_errors_and_refusals() {
    let up = Mock::start(|r, _| {
        if r.json()["messages"][0]["content"] == "slow down" {
            return Reply::Json(429, json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}));
        }
        Reply::Json(200, chat_json("deepseek-chat", "hi", 3, 1))
    })
    .await;
    let router = Router::start(&config(&channel("ds", "openai", &up.openai_url(), "deepseek-chat")));
    let http = client();
    let key = [("x-goog-api-key", "sk-gw-gemini")];
    let get = |path: &str| http.get(router.url(path)).header(key[0].0, key[0].1).send();

    let list: Value = get("/v1beta/models").await.unwrap().json().await.unwrap();
    assert_eq!(list["models"][0]["name"], "models/deepseek-chat");
    assert!(list["models"][0]["supportedGenerationMethods"].as_array().unwrap().contains(&json!("generateContent")));
    let one = get("/v1beta/models/deepseek-chat").await.unwrap();
    assert_eq!(one.status(), 200);
    let missing = get("/v1beta/models/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["status"], "NOT_FOUND");
    // `GET /v1/models` stays OpenAI-shaped for OpenAI clients.
    let openai: Value =
        http.get(router.url("/v1/models")).bearer_auth("sk-gw-gemini").send().await.unwrap().json().await.unwrap();
    assert_eq!(openai["object"], "list");

    let post = |path: &str, body: Value| http.post(router.url(path)).header(key[0].0, key[0].1).json(&body).send();
    let count: Value =
        post("/v1beta/models/deepseek-chat:countTokens", weather_request()).await.unwrap().json().await.unwrap();
    assert!(count["totalTokens"].as_u64().unwrap() > 0, "{count}");

    let refused = post(
        "/v1beta/models/deepseek-chat:generateContent",
        json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
    assert!(err["error"]["message"].as_str().unwrap().contains("googleSearch"), "{err}");

    // An upstream that answers a stream request whole: the client still gets its stream framing.
    let whole = post("/v1beta/models/deepseek-chat:streamGenerateContent?alt=sse", weather_request()).await.unwrap();
    assert_eq!(whole.headers()["content-type"], "text/event-stream");
    let chunks = sse_chunks(&whole.text().await.unwrap());
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0]["text"], "hi");
    let whole = post("/v1beta/models/deepseek-chat:streamGenerateContent", weather_request()).await.unwrap();
    let arr: Vec<Value> = whole.json().await.unwrap();
    assert_eq!(arr[0]["candidates"][0]["finishReason"], "STOP");

    // A tag expression in the path, URL-encoded as the SDKs send it.
    let tagged = post("/v1beta/models/tag%3Adeepseek%2C%21vision:generateContent", weather_request()).await.unwrap();
    assert_eq!(tagged.status(), 200);
    assert_eq!(up.last().json()["model"], "deepseek-chat");

    let limited =
        post("/v1beta/models/deepseek-chat:generateContent", json!({"contents": [{"parts": [{"text": "slow down"}]}]}))
            .await
            .unwrap();
    assert_eq!(limited.status(), 502, "429 is retried, then reported");
    let err: Value = limited.json().await.unwrap();
    assert!(err["error"]["code"].is_number() && err["error"]["status"].is_string(), "{err}");

    let unauthorized = http
        .post(router.url("/v1beta/models/deepseek-chat:generateContent?key=wrong"))
        .json(&weather_request())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.json::<Value>().await.unwrap()["error"]["status"], "UNAUTHENTICATED");

    let unknown = post("/v1beta/models/nope:generateContent", weather_request()).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn gemini_client_on_an_anthropic_channel() {
    let up = Mock::start(|r, _| claude_reply(r)).await;
    let router = Router::start(&config(&channel("an", "anthropic", &up.root_url(), "claude-sonnet-4-5")));
    let body = json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 50}});
    let v: Value = gemini_post(&router, "/v1beta/models/claude-sonnet-4-5:generateContent", body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hi");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 115);
    assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], 100);
    let sent = up.last();
    assert_eq!(sent.uri, "/v1/messages");
    assert_eq!(sent.header("x-api-key").as_deref(), Some(UPSTREAM_KEY));
    assert_eq!(sent.json()["system"], "Be brief.");
    assert_eq!(sent.json()["max_tokens"], 50);

    let resp = gemini_post(&router, "/v1beta/models/claude-sonnet-4-5:streamGenerateContent?alt=sse", body).await;
    let chunks = sse_chunks(&resp.text().await.unwrap());
    let text: String =
        chunks.iter().filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    assert_eq!(text, "Hi there");
    assert_eq!(chunks.last().unwrap()["usageMetadata"]["candidatesTokenCount"], 2);

    let records = records_where(&router, 2).await;
    assert!(records.iter().all(|r| r["translated"] == "gemini->anthropic" && r["client_protocol"] == "gemini"));
    let whole = records.iter().find(|r| r["stream"] == false).unwrap();
    assert_eq!(whole["tokens"]["cache_read"], 100, "exactly as the upstream reported: {whole}");
    assert_eq!(whole["tokens"]["cache_write"], 3);
}

#[tokio::test]
async fn native_gemini_channel_gets_the_body_unchanged() {
    let gemini_sse = [
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"!\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 7,\"candidatesTokenCount\": 2,\"totalTokenCount\": 21,\"thoughtsTokenCount\": 12},\"modelVersion\": \"gemini-2.5-flash\"}\r\n\r\n",
    ];
    let up = Mock::start(move |r, _| {
        if r.uri.contains(":streamGenerateContent") {
            Reply::Raw(200, vec![("content-type", "text/event-stream".to_string())], gemini_sse.concat())
        } else if r.uri.contains("/openai/chat/completions") {
            Reply::Json(200, chat_json("gemini-2.5-flash", "compat", 4, 2))
        } else {
            Reply::Json(
                200,
                json!({"candidates": [{"content": {"parts": [{"text": "whole"}], "role": "model"},
                "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1,
                "cachedContentTokenCount": 2, "totalTokenCount": 6}}),
            )
        }
    })
    .await;
    let base = format!("{}/v1beta/openai", up.root_url());
    let router = Router::start(&config(&channel("google", "gemini", &base, "gemini-2.5-flash")));
    let http = client();
    let raw = r#"{"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "safetySettings": [], "x-unknown": 1}"#;
    let resp = http
        .post(router.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=sk-gw-gemini"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), gemini_sse.concat(), "chunks forwarded as they came");
    let sent = up.last();
    assert_eq!(sent.uri, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(UPSTREAM_KEY));
    assert!(sent.header("authorization").is_none());
    assert_eq!(sent.body, raw.as_bytes(), "the body is forwarded unchanged");

    let whole =
        gemini_post(&router, "/v1beta/models/gemini-2.5-flash:generateContent", serde_json::from_str(raw).unwrap());
    let whole: Value = whole.await.json().await.unwrap();
    assert_eq!(whole["candidates"][0]["content"]["parts"][0]["text"], "whole");
    assert_eq!(up.last().uri, "/v1beta/models/gemini-2.5-flash:generateContent");

    // An OpenAI client on the same channel goes to Google's OpenAI-compatible side, with Bearer.
    let chat: Value = http
        .post(router.url("/v1/chat/completions"))
        .bearer_auth("sk-gw-gemini")
        .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], "compat");
    let sent = up.last();
    assert_eq!(sent.uri, "/v1beta/openai/chat/completions");
    assert_eq!(sent.header("authorization").as_deref(), Some(&*format!("Bearer {UPSTREAM_KEY}")));

    let records = records_where(&router, 3).await;
    let streamed = records.iter().find(|r| r["stream"] == true).unwrap();
    assert_eq!(streamed["client_protocol"], "gemini");
    assert!(streamed["translated"].is_null());
    assert_eq!(streamed["outcome"], "ok");
    assert_eq!(streamed["tokens"]["input"], 7);
    assert_eq!(streamed["tokens"]["output"], 14, "thoughts are output: {streamed}");
    assert_eq!(streamed["tokens"]["reasoning"], 12);
    let whole = records.iter().find(|r| r["stream"] == false && r["client_protocol"] == "gemini").unwrap();
    assert_eq!((whole["tokens"]["input"].as_u64(), whole["tokens"]["cache_read"].as_u64()), (Some(3), Some(2)));
}

/// An Anthropic upstream with the same script as [`chat_upstream`]: a `tool_use` while tools are offered and
/// no result came back, text otherwise; streamed when asked.
async fn anthropic_upstream() -> Mock {
    Mock::start(|r, _| {
        let body = r.json();
        let has_result = body["messages"].to_string().contains("tool_result");
        let wants_tool = body["tools"].is_array() && !has_result;
        let usage = json!({"input_tokens": 30, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 5});
        let (block, stop) = if wants_tool {
            (json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}), "tool_use")
        } else {
            (json!({"type": "text", "text": "Sunny in Paris"}), "end_turn")
        };
        if body["stream"] != true {
            return Reply::Json(200, json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage}));
        }
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut out = vec![ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "claude-x", "usage": usage}}))];
        if wants_tool {
            out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})));
            for piece in ["{\"city\"", ": \"Paris\"}"] {
                out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
        } else {
            out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})));
            for w in ["Sunny ", "in ", "Paris"] {
                out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}})));
            }
        }
        out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 5}})));
        out.push(ev("message_stop", json!({"type": "message_stop"})));
        Reply::Sse(out)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_google_genai_sdk_on_chat_and_anthropic_channels() {
    let chat = chat_upstream().await;
    let anthropic = anthropic_upstream().await;
    let channels = channel("ds", "openai", &chat.openai_url(), "deepseek-chat")
        + &channel("an", "anthropic", &anthropic.root_url(), "claude-x");
    let router = Router::start(&config(&channels));
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/gemini_e2e.py");
    for model in ["deepseek-chat", "claude-x"] {
        let (script, base) = (script.clone(), format!("http://{}", router.addr));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python()).arg(script).arg(base).arg("sk-gw-gemini").arg(model).output().unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "google-genai on {model} failed:\n{}\n{}\nrouter:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            router.stderr()
        );
    }
    let records = router.records();
    assert!(records.iter().any(|r| r["translated"] == "gemini->openai" && r["tokens"]["input"] == 40));
    assert!(records.iter().any(|r| r["translated"] == "gemini->anthropic" && r["tokens"]["input"] == 30));
    assert!(records.iter().all(|r| r["client_protocol"] == "gemini"));
}

/// An OpenAI embeddings upstream: each input text `t` (at position `i`) embeds as `[i, len(t), 0.5]`; the
/// reported usage is one token per input character.
async fn embeddings_upstream() -> Mock {
    Mock::start(|r, _| {
        let body = r.json();
        let inputs: Vec<String> = match &body["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
            _ => {
                return Reply::Json(
                    400,
                    json!({"error": {"message": "input is required", "type": "invalid_request_error"}}),
                );
            }
        };
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [i as f64, t.len() as f64, 0.5]}))
            .collect();
        let tokens: usize = inputs.iter().map(String::len).sum();
        Reply::Json(
            200,
            json!({"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        )
    })
    .await
}

#[tokio::test]
async fn gemini_embeddings_on_an_openai_channel_and_a_native_one() {
    let oa = embeddings_upstream().await;
    let native = Mock::start(|r, _| {
        let n = r.json()["requests"].as_array().map_or(1, Vec::len);
        if r.uri.contains(":batchEmbedContents") {
            Reply::Json(200, json!({"embeddings": vec![json!({"values": [9.0]}); n]}))
        } else {
            Reply::Json(200, json!({"embedding": {"values": [9.0]}}))
        }
    })
    .await;
    let channels = channel("oa", "openai", &oa.openai_url(), "text-embedding-3-small")
        + &channel("google", "gemini", &format!("{}/v1beta", native.root_url()), "text-embedding-004");
    let router = Router::start(&config(&channels));

    // One content, translated: the text parts joined, the dimensionality kept, the vector back as `values`.
    let resp = gemini_post(
        &router,
        "/v1beta/models/text-embedding-3-small:embedContent",
        json!({"model": "models/text-embedding-3-small", "content": {"parts": [{"text": "ab"}, {"text": "cd"}]},
        "outputDimensionality": 3, "taskType": "RETRIEVAL_QUERY"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"embedding": {"values": [0.0, 5.0, 0.5]}}));
    let sent = oa.last();
    assert_eq!(sent.uri, "/v1/embeddings");
    assert_eq!(
        sent.json(),
        json!({"model": "text-embedding-3-small", "input": "ab\ncd", "encoding_format": "float", "dimensions": 3})
    );

    // A batch, translated: one input array, answers in order.
    let resp = gemini_post(
        &router,
        "/v1/models/text-embedding-3-small:batchEmbedContents",
        json!({"requests": [
            {"model": "models/text-embedding-3-small", "content": {"parts": [{"text": "x"}]}},
            {"model": "models/text-embedding-3-small", "content": {"parts": [{"text": "yyy"}]}}
        ]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"embeddings": [{"values": [0.0, 1.0, 0.5]}, {"values": [1.0, 3.0, 0.5]}]})
    );

    // What an OpenAI model cannot embed is refused before any upstream is asked, in Gemini's error shape.
    let before = oa.count();
    let resp = gemini_post(
        &router,
        "/v1beta/models/text-embedding-3-small:embedContent",
        json!({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["status"], "INVALID_ARGUMENT", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("only text parts"), "{err}");
    assert_eq!(oa.count(), before);

    // A native Gemini channel gets Google's own path, with the model named in the batch as in the path.
    let resp = gemini_post(
        &router,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"embeddings": [{"values": [9.0]}]}));
    let sent = native.last();
    assert_eq!(sent.uri, "/v1beta/models/text-embedding-004:batchEmbedContents");
    assert_eq!(sent.header("x-goog-api-key").as_deref(), Some(UPSTREAM_KEY));

    // A chat model is not an embedding model.
    let resp = gemini_post(
        &router,
        "/v1beta/models/text-embedding-004:generateContent",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_ne!(resp.status(), 200);

    let records = records_where(&router, 5).await;
    let translated: Vec<&Value> =
        records.iter().filter(|r| r["outcome"] == "ok" && r["translated"].is_string()).collect();
    assert_eq!(translated.len(), 2, "{records:?}");
    assert!(translated.iter().any(|r| r["translated"] == "gemini-embed->openai" && r["tokens"]["input"] == 5));
    assert!(translated.iter().any(|r| r["translated"] == "gemini-batch-embed->openai" && r["tokens"]["input"] == 4));
    assert!(translated.iter().all(|r| r["usage_source"] == "upstream" && r["tokens"]["output"] == 0));
    let native_rec = records.iter().find(|r| r["channel"] == "google" && r["outcome"] == "ok").unwrap();
    assert!(native_rec["translated"].is_null());
    assert_eq!(native_rec["usage_source"], "estimated", "Google reports no usage for embeddings: {native_rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_google_genai_sdk_embeds_through_an_openai_channel() {
    let oa = embeddings_upstream().await;
    let router = Router::start(&config(&channel("oa", "openai", &oa.openai_url(), "text-embedding-3-small")));
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/gemini_embed.py");
    let base = format!("http://{}", router.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .arg(base)
            .arg("sk-gw-gemini")
            .arg("text-embedding-3-small")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "google-genai embed_content failed:\n{}\n{}\nrouter:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        router.stderr()
    );
    let records = records_where(&router, 2).await;
    assert!(records.iter().all(|r| r["outcome"] == "ok" && r["client_protocol"] == "gemini"), "{records:?}");
}

/// Gemini conversations get prompt-cache affinity like the other protocols: named by their head
/// (`systemInstruction` + first user turn), bound to what served them, kept there on later turns.
#[tokio::test]
async fn gemini_turns_keep_their_upstream() {
    let a = chat_upstream().await;
    let b = chat_upstream().await;
    let channels = channel("a", "openai", &a.openai_url(), "deepseek-chat")
        + &channel("b", "openai", &b.openai_url(), "deepseek-chat");
    let router = Router::start(&format!(
        "server:\n  keys:\n    - {{name: me, key: sk-gw-gemini}}\nrouting:\n  strategy: weighted\nchannels:\n{channels}"
    ));
    let mut contents = vec![json!({"role": "user", "parts": [{"text": "Plan a trip to Paris"}]})];
    let mut served = Vec::new();
    for turn in 0..8 {
        let body = json!({"systemInstruction": {"parts": [{"text": "You are a travel agent."}]}, "contents": contents});
        let r = gemini_post(&router, "/v1beta/models/deepseek-chat:generateContent", body).await;
        assert_eq!(r.status(), 200);
        let affinity = r.headers()["x-router-affinity"].to_str().unwrap().to_string();
        assert_eq!(affinity, if turn == 0 { "new" } else { "hit" }, "turn {turn}");
        served.push(r.headers()["x-router-channel"].to_str().unwrap().to_string());
        contents.push(json!({"role": "model", "parts": [{"text": "Sunny in Paris"}]}));
        contents.push(json!({"role": "user", "parts": [{"text": format!("and day {turn}?")}]}));
    }
    assert!(served.iter().all(|c| *c == served[0]), "every turn on one channel: {served:?}");
    let records = records_where(&router, 8).await;
    let sessions: std::collections::HashSet<&str> = records.iter().filter_map(|r| r["session"].as_str()).collect();
    assert_eq!(sessions.len(), 1, "one session recorded: {records:?}");
}
