//! Proxy core, end to end: the real binary against mock upstreams on random ports.

use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

const UPSTREAM_KEY_A: &str = "sk-upstream-AAAA-secret-0001";
const UPSTREAM_KEY_B: &str = "sk-upstream-BBBB-secret-0002";
const UPSTREAM_KEY_C: &str = "sk-ant-upstream-CCCC-secret-0003";

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

fn assert_no_secrets(text: &str) {
    for k in [UPSTREAM_KEY_A, UPSTREAM_KEY_B, UPSTREAM_KEY_C] {
        assert!(!text.contains(k), "upstream key leaked: {k}");
        assert!(!text.contains(&k[10..]), "part of an upstream key leaked");
    }
}

fn one_channel(url: &str, extra: &str) -> String {
    format!(
        "channels:\n  - name: main\n    base_url: {url}\n    keys: [{UPSTREAM_KEY_A}]\n    models: [gpt-4o, text-embedding-3-small]\n    aliases: {{fast: gpt-4o-mini}}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_non_stream_passes_through_with_auth_alias_query_and_debug_headers() {
    let up =
        Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or("?"), "hello", 9, 3))).await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    let resp = client()
        .post(router.url("/v1/chat/completions?beta=true"))
        .header("authorization", "Bearer client-side-key")
        .json(&chat_body("fast", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-router-channel"], "main");
    assert_eq!(h["x-router-endpoint"], "default");
    assert_eq!(h["x-router-model"], "gpt-4o-mini");
    assert_eq!(h["x-router-attempts"], "1");
    assert_eq!(h["x-router-strategy"], "priority");
    assert!(h["x-router-token"].to_str().unwrap().starts_with("fp:"));
    assert_eq!(h["x-request-id"], "req_mock");
    assert_eq!(h["x-router-request-id"].len(), 32);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello");
    let seen = up.last();
    assert_eq!(seen.uri, "/v1/chat/completions?beta=true");
    assert_eq!(seen.header("authorization").unwrap(), format!("Bearer {UPSTREAM_KEY_A}"));
    assert_eq!(seen.json()["model"], "gpt-4o-mini");
    assert_eq!(seen.json()["messages"][0]["content"], "hi");
    assert_no_secrets(&router.stderr());
    assert_no_secrets(&router.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_hides_injected_usage_chunk_unless_asked() {
    let up = Mock::start(|r, _| {
        let wants = r.json()["stream_options"]["include_usage"] == true;
        Reply::Sse(chat_sse("gpt-4o", &["Hel", "lo"], wants))
    })
    .await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    let text = client()
        .post(router.url("/v1/chat/completions"))
        .json(&chat_body("gpt-4o", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(up.last().json()["stream_options"]["include_usage"], true, "router asks upstream for usage");
    assert!(text.contains("Hel") && text.contains("[DONE]"));
    assert!(!text.contains("\"usage\":{"), "client did not ask for usage: {text}");

    let mut body = chat_body("gpt-4o", true);
    body["stream_options"] = json!({"include_usage": true});
    let text =
        client().post(router.url("/v1/chat/completions")).json(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\"prompt_tokens\":11"), "client asked for usage: {text}");
    // The usage was recorded for both (the record goes to the log or store).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_non_stream_and_stream_with_headers() {
    let up = Mock::start(|r, _| claude_reply(r)).await;
    let cfg = format!(
        "channels:\n  - name: claude\n    protocol: anthropic\n    base_url: {}\n    keys: [{UPSTREAM_KEY_C}]\n    models: [claude-sonnet-4-5]\n",
        up.root_url()
    );
    let router = Router::start(&cfg);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let resp = client()
        .post(router.url("/v1/messages?beta=true"))
        .header("x-api-key", "client-key")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Hi");
    let seen = up.last();
    assert_eq!(seen.uri, "/v1/messages?beta=true");
    assert_eq!(seen.header("x-api-key").unwrap(), UPSTREAM_KEY_C);
    assert_eq!(seen.header("anthropic-version").unwrap(), "2023-06-01");
    assert_eq!(seen.header("anthropic-beta").unwrap(), "prompt-caching-2024-07-31");
    assert!(seen.header("authorization").is_none());

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let resp = client()
        .post(router.url("/v1/messages"))
        .header("anthropic-version", "2023-01-01")
        .json(&sbody)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"));
    assert!(text.contains(" there"));
    assert_eq!(up.last().header("anthropic-version").unwrap(), "2023-01-01", "client's version is forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_events_reach_the_client_before_the_upstream_finishes() {
    let (tx, up) = Mock::one_stream(16).await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    let send = client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", true)).send();
    let events = chat_sse("gpt-4o", &["one", "two"], true);
    tx.send(Ok(events[0].clone().into())).await.unwrap();
    let mut resp = send.await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first event arrives while upstream is open")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    // Upstream still open; the second event arrives only after we send it.
    tx.send(Ok(events[1].clone().into())).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await.unwrap().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&second).contains("two"));
    for e in &events[2..] {
        tx.send(Ok(e.clone().into())).await.unwrap();
    }
    drop(tx);
    assert!(rest_of(&mut resp).await.contains("[DONE]"));
}

/// Reads the client's stream until it contains `want` (a bounded wait: a failure guard, not synchronisation).
async fn read_until(resp: &mut reqwest::Response, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("`{want}` did not arrive while the upstream held the next event; got {got:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before `{want}`: {got:?}"));
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_mode_forwards_an_event_before_the_upstream_sends_the_next() {
    // Raw pass-through (the client asked for usage), filtered (the router asked for usage and hides it), and
    // translated (an Anthropic client on an OpenAI channel): in each, the first event reaches the client while the
    // upstream still holds the second, which it sends only once the client has the first.
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
            "\"content\":\"one\"",
            "\"content\":\"two\"",
        ),
        ("/v1/chat/completions", chat_body("gpt-4o", true), "\"content\":\"one\"", "\"content\":\"two\""),
        (
            "/v1/messages",
            json!({"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
            "\"text\":\"one\"",
            "\"text\":\"two\"",
        ),
    ];
    for (path, body, first, second) in cases {
        let (tx, up) = Mock::one_stream(16).await;
        let router = Router::start(&one_channel(&up.openai_url(), ""));
        let events = chat_sse("gpt-4o", &["one", "two"], true);
        tx.send(Ok(events[0].clone().into())).await.unwrap();
        let mut resp =
            client().post(router.url(path)).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let got = read_until(&mut resp, first).await;
        assert!(!got.contains(second), "{path}: {got}");
        tx.send(Ok(events[1].clone().into())).await.unwrap();
        read_until(&mut resp, second).await;
        for e in &events[2..] {
            tx.send(Ok(e.clone().into())).await.unwrap();
        }
        drop(tx);
        let rest = rest_of(&mut resp).await;
        assert!(rest.contains("[DONE]") || rest.contains("message_stop"), "{path}: {rest}");
        let usage_hidden = body.get("stream_options").is_none() && path == "/v1/chat/completions";
        assert_eq!(rest.contains("\"choices\":[]"), !usage_hidden && path == "/v1/chat/completions", "{path}: {rest}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_without_usage_is_estimated_from_its_start_scaled_to_its_length() {
    // The upstream reports no usage. A short stream is estimated whole; one 30 times as long (~60 KB, far past the
    // 16 KiB a stream keeps) is estimated from its start, scaled by the bytes received: about 30 times as much.
    let up = Mock::start(|r, _| {
        let n = if r.json()["messages"][0]["content"] == "long" { 600 } else { 20 };
        Reply::Sse(chat_sse("gpt-4o", &vec![" hello"; n], false))
    })
    .await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    for text in ["short", "long"] {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": true});
        let mut resp = client().post(router.url("/v1/chat/completions")).json(&body).send().await.unwrap();
        assert!(rest_of(&mut resp).await.contains("[DONE]"));
    }
    assert!(eventually(Duration::from_secs(10), || router.records().len() == 2).await);
    let output = |i: usize| {
        let r = &router.records()[i];
        assert_eq!(r["usage_source"], "estimated", "{r}");
        r["tokens"]["output"].as_f64().unwrap()
    };
    // Newest first.
    let (long, short) = (output(0), output(1));
    assert!(short > 0.0 && (25.0..=35.0).contains(&(long / short)), "short {short}, long {long}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream_request() {
    let (tx, up) = Mock::one_stream(16).await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    tx.send(Ok(chat_sse("gpt-4o", &["x"], false)[0].clone().into())).await.unwrap();
    let mut resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", true)).send().await.unwrap();
    resp.chunk().await.unwrap().unwrap();
    drop(resp);
    // The router drops the upstream body, which closes the mock's receiving end.
    tokio::time::timeout(Duration::from_secs(10), tx.closed()).await.expect("upstream request cancelled");
    assert!(
        eventually(Duration::from_secs(5), || router.records().iter().any(|r| r["outcome"] == "client_closed")).await,
        "{:?}",
        router.records()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_upstream_stream_ends_with_an_error_event_and_is_recorded_interrupted() {
    let (tx, up) = Mock::one_stream(4).await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    tx.send(Ok(chat_sse("gpt-4o", &["partial"], false)[0].clone().into())).await.unwrap();
    let mut resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", true)).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("partial"));
    tx.send(Err(std::io::Error::other("cut"))).await.unwrap();
    let mut rest = String::new();
    while let Ok(Some(c)) = resp.chunk().await {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("upstream stream interrupted"), "{rest}");
    assert!(!rest.contains("[DONE]"));
    assert!(
        eventually(Duration::from_secs(5), || router.records().iter().any(|r| r["outcome"] == "interrupted")).await
    );
}

/// A stream whose upstream goes quiet for longer than `upstream.idle_timeout` (counted from its last event) is cut
/// with an error event and recorded as interrupted; an event within the timeout keeps it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_goes_quiet_past_the_idle_timeout_is_cut() {
    let (tx, up) = Mock::one_stream(4).await;
    let router = Router::start(&one_channel(&up.openai_url(), "upstream:\n  idle_timeout: 800ms\n"));
    let events = chat_sse("gpt-4o", &["one", "two"], false);
    tx.send(Ok(events[0].clone().into())).await.unwrap();
    let mut resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", true)).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    // Quiet for half the timeout, then an event: the stream goes on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tx.send(Ok(events[1].clone().into())).await.unwrap();
    let second = resp.chunk().await.unwrap().unwrap();
    let since = std::time::Instant::now();
    assert!(String::from_utf8_lossy(&second).contains("two"));
    // Then nothing (the upstream keeps the connection open): cut once the timeout has passed since "two".
    let mut rest = String::new();
    let read = async {
        while let Ok(Some(c)) = resp.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&c));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the quiet stream was never cut");
    let quiet = since.elapsed();
    assert!(rest.contains("upstream stream interrupted") && rest.contains("no data for"), "{rest}");
    assert!(quiet >= Duration::from_millis(700) && quiet < Duration::from_secs(10), "cut after {quiet:?}");
    assert!(
        eventually(Duration::from_secs(5), || router.records().iter().any(|r| r["outcome"] == "interrupted")).await
    );
    drop(tx);
}

fn two_channels(a: &str, b: &str, extra_a: &str) -> String {
    format!(
        "routing:\n  cooldown: {{base: 60s}}\nchannels:\n  - name: first\n    base_url: {a}\n    priority: 0\n    keys: [{UPSTREAM_KEY_A}]\n    models: [gpt-4o]\n{extra_a}  - name: second\n    base_url: {b}\n    priority: 1\n    keys: [{UPSTREAM_KEY_B}]\n    models: [gpt-4o]\n"
    )
}

async fn failover_case(
    first_reply: impl Fn() -> Reply + Send + Sync + 'static,
) -> (Mock, Mock, reqwest::Response, Router) {
    let bad = Mock::start(move |_, _| first_reply()).await;
    let good = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "from second", 5, 1))).await;
    let router = Router::start(&two_channels(&bad.openai_url(), &good.openai_url(), ""));
    let resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    (bad, good, resp, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_500_529_429_and_404() {
    for (status, headers) in
        [(500, vec![]), (529, vec![]), (429, vec![("retry-after", "30".to_string())]), (404, vec![])]
    {
        let (bad, good, resp, _router) =
            failover_case(move || Reply::Raw(status, headers.clone(), "{\"error\":{\"message\":\"nope\"}}".into()))
                .await;
        assert_eq!(resp.status(), 200, "status {status}");
        assert_eq!(resp.headers()["x-router-channel"], "second");
        assert_eq!(resp.headers()["x-router-attempts"], "2");
        assert_eq!(bad.count(), 1);
        assert_eq!(good.count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_connect_refused() {
    let good = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 1))).await;
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    let router = Router::start(&two_channels(&dead, &good.openai_url(), ""));
    let resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-router-channel"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_on_400_the_upstream_error_is_passed_through() {
    let (bad, good, resp, _router) = failover_case(|| {
        Reply::Raw(
            400,
            vec![("content-type", "application/json".into())],
            "{\"error\":{\"message\":\"bad field\",\"type\":\"invalid_request_error\"}}".into(),
        )
    })
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "bad field");
    assert_eq!(bad.count(), 1);
    assert_eq!(good.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_moves_to_the_next_token_of_the_same_endpoint() {
    let up = Mock::start(|r, _| {
        if r.header("authorization").unwrap().contains(UPSTREAM_KEY_A) {
            Reply::Json(401, json!({"error": {"message": "invalid key"}}))
        } else {
            Reply::Json(200, chat_json("gpt-4o", "second key", 5, 1))
        }
    })
    .await;
    let cfg = format!(
        "channels:\n  - name: main\n    base_url: {}\n    keys:\n      - {{name: k1, key: {UPSTREAM_KEY_A}}}\n      - {{name: k2, key: {UPSTREAM_KEY_B}}}\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    let router = Router::start(&cfg);
    for _ in 0..3 {
        let resp =
            client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-router-token"], "k2");
    }
    // k1 failed once and then cooled down (long): it is not tried again.
    let k1_calls = up.all().iter().filter(|r| r.header("authorization").unwrap().contains(UPSTREAM_KEY_A)).count();
    assert_eq!(k1_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_failed_is_502_with_attempt_summary_and_no_secret_then_503_while_cooling() {
    let a = Mock::start(|_, _| Reply::Raw(500, vec![], format!("internal error for key {UPSTREAM_KEY_A}"))).await;
    let b = Mock::start(|_, _| Reply::Raw(503, vec![], "overloaded".into())).await;
    let router = Router::start(&two_channels(&a.openai_url(), &b.openai_url(), ""));
    let resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert_no_secrets(&text);
    let v: Value = serde_json::from_str(&text).unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("first/default") && msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("second/default") && msg.contains("HTTP 503"), "{msg}");
    assert!(msg.contains("fp:"), "token named by fingerprint: {msg}");
    // Both endpoints are now cooling down: 503 with Retry-After, no upstream call.
    let resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(a.count() + b.count(), 2);
    // Anthropic clients get their own shape.
    let resp = client()
        .post(router.url("/v1/messages"))
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_no_secrets(&router.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_expires_and_success_clears_it() {
    let a = Mock::start(|_, n| {
        if n == 0 { Reply::Raw(500, vec![], "boom".into()) } else { Reply::Json(200, chat_json("gpt-4o", "a", 1, 1)) }
    })
    .await;
    let b = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "b", 1, 1))).await;
    let cfg = two_channels(&a.openai_url(), &b.openai_url(), "").replace("base: 60s", "base: 300ms");
    let router = Router::start(&cfg);
    let c = client();
    // Every request repeats one conversation: with affinity it would stay where the failover moved it. This test
    // is about cooldowns, so affinity is off.
    let send = || {
        c.post(router.url("/v1/chat/completions")).header("x-router-affinity", "off").json(&chat_body("gpt-4o", false))
    };
    let first = send().send().await.unwrap();
    assert_eq!(first.headers()["x-router-channel"], "second");
    // While cooling, `first` is skipped without a call.
    let next = send().send().await.unwrap();
    let served_by_second = next.headers()["x-router-channel"] == "second";
    assert!(served_by_second || a.count() == 2, "either still cooling, or it expired already");
    // After expiry the preferred channel serves again.
    let mut back = false;
    for _ in 0..100 {
        let r = send().send().await.unwrap();
        if r.headers()["x-router-channel"] == "first" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "cooldown never expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_disabled_endpoint_is_used_only_when_pinned() {
    let pinned = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "pinned", 1, 1))).await;
    let normal = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "normal", 1, 1))).await;
    let cfg = format!(
        "channels:\n  - name: main\n    models: [gpt-4o]\n    endpoints:\n      - name: manual\n        base_url: {}\n        priority: 0\n        failover_enabled: false\n        keys: [{UPSTREAM_KEY_A}]\n      - name: auto\n        base_url: {}\n        priority: 1\n        keys: [{UPSTREAM_KEY_B}]\n",
        pinned.openai_url(),
        normal.openai_url()
    );
    let router = Router::start(&cfg);
    let r = client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(r.headers()["x-router-endpoint"], "auto");
    let r = client()
        .post(router.url("/v1/chat/completions"))
        .header("x-router-channel", "main/manual")
        .json(&chat_body("gpt-4o", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-router-endpoint"], "manual");
    assert_eq!(pinned.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_in_the_clients_shape() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "x", 1, 1))).await;
    let router = Router::start(&one_channel(&up.openai_url(), "server:\n  max_body_bytes: 2000\n"));
    let c = client();
    // Malformed JSON.
    let r = c.post(router.url("/v1/chat/completions")).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = c.post(router.url("/v1/messages")).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Too large.
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = c.post(router.url("/v1/chat/completions")).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("max_body_bytes"));
    // Unknown model, with close names.
    let r = c.post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4", false)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"), "{v}");
    // Embedding model is not a chat candidate.
    let r = c
        .post(router.url("/v1/chat/completions"))
        .json(&chat_body("text-embedding-3-small", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Responses on an Anthropic-only model cannot be served: a clear error naming the protocol.
    let r = c.post(router.url("/v1/embeddings")).json(&json!({"model": "gpt-4o", "input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keys_are_required_when_configured() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "x", 1, 1))).await;
    let router =
        Router::start(&one_channel(&up.openai_url(), "server:\n  keys:\n    - {name: team, key: sk-gw-123}\n"));
    let c = client();
    let r = c.post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = c
        .post(router.url("/v1/messages"))
        .header("x-api-key", "wrong")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = c
        .post(router.url("/v1/chat/completions"))
        .bearer_auth("sk-gw-123")
        .json(&chat_body("gpt-4o", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(router.url("/v1/chat/completions"))
        .header("x-api-key", "sk-gw-123")
        .json(&chat_body("gpt-4o", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 2);
    assert!(up.last().header("x-api-key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_each_id_once_in_both_shapes_and_health_answers() {
    let cfg = "channels:\n  - name: a\n    base_url: http://127.0.0.1:9/v1\n    models: [gpt-4o, shared]\n  - name: b\n    base_url: http://127.0.0.1:9/v1\n    models: [shared, other]\n    aliases: {nick: other}\n";
    let router = Router::start(cfg);
    let v: Value = client().get(router.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o", "nick", "other", "shared"]);
    let v: Value = client()
        .get(router.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    let v: Value = client().get(router.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_responses_are_forwarded() {
    let up = Mock::start(|r, _| {
        if r.uri.ends_with("/embeddings") {
            Reply::Json(200, json!({"object": "list", "data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
        } else {
            Reply::Json(200, json!({"id": "resp_1", "object": "response", "output": [], "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}))
        }
    })
    .await;
    let router = Router::start(&one_channel(&up.openai_url(), "    responses_api: native\n"));
    let r = client()
        .post(router.url("/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().uri, "/v1/embeddings");
    let r = client()
        .post(router.url("/v1/responses"))
        .json(&json!({"model": "gpt-4o", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().uri, "/v1/responses");
}

/// Connections are served by one single-threaded runtime per core (`TOKIO_WORKER_THREADS` of them, each
/// accepting on the one listening socket); many connections at once all get their answers, each recorded once,
/// and the server stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_by_one_event_loop_per_core() {
    let up = Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or(""), "x", 3, 1))).await;
    let mut router = Router::start_with(&one_channel(&up.openai_url(), ""), &[], &[("TOKIO_WORKER_THREADS", "3")]);
    let pid = router.child.id();
    let serving = || {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let names = threads.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok());
        names.filter(|name| name.starts_with("router-serve-")).count()
    };
    // The serving threads start right after the address is printed.
    assert!(eventually(Duration::from_secs(10), || serving() == 3).await, "{} serving threads", serving());
    // Twelve connections at once (a client each), two requests on each.
    let sends = (0..12).map(|_| {
        let (c, url) = (reqwest::Client::new(), router.url("/v1/chat/completions"));
        async move {
            let mut statuses = Vec::new();
            for _ in 0..2 {
                statuses.push(c.post(&url).json(&chat_body("gpt-4o", false)).send().await.unwrap().status());
            }
            statuses
        }
    });
    let statuses: Vec<_> = futures_util::future::join_all(sends).await.into_iter().flatten().collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(eventually(Duration::from_secs(10), || router.records().len() == 24).await, "{:?}", router.records());
    router.signal("TERM");
    let status = router.wait_exit(Duration::from_secs(15)).expect("router exits");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let (tx, up) = Mock::one_stream(16).await;
    let mut router = Router::start(&one_channel(&up.openai_url(), ""));
    let events = chat_sse("gpt-4o", &["a", "b"], true);
    tx.send(Ok(events[0].clone().into())).await.unwrap();
    let mut resp =
        client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", true)).send().await.unwrap();
    resp.chunk().await.unwrap().unwrap();
    router.signal("TERM");
    assert!(eventually(Duration::from_secs(10), || router.stderr().contains("shutting down")).await);
    // New connections are refused while the stream goes on.
    assert!(client().get(router.url("/health")).send().await.is_err());
    for e in &events[1..] {
        tx.send(Ok(e.clone().into())).await.unwrap();
    }
    drop(tx);
    assert!(rest_of(&mut resp).await.contains("[DONE]"));
    let status = router.wait_exit(Duration::from_secs(15)).expect("router exits");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_on_file_change_and_broken_file_keeps_old_config() {
    let up = Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or(""), "x", 1, 1))).await;
    let router = Router::start(&one_channel(&up.openai_url(), ""));
    let c = client();
    let r = c.post(router.url("/v1/chat/completions")).json(&chat_body("brand-new", false)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A broken file is reported and the old config stays.
    write(&router.config_path(), "channels: [{name: x, prioirty: 1}]\n");
    router.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || router.stderr().contains("config reload failed")).await,
        "{}",
        router.stderr()
    );
    let r = c.post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A good file takes effect.
    write(&router.config_path(), &one_channel(&up.openai_url(), "").replace("text-embedding-3-small", "brand-new"));
    router.signal("HUP");
    let mut ok = false;
    for _ in 0..200 {
        let r = c.post(router.url("/v1/chat/completions")).json(&chat_body("brand-new", false)).send().await.unwrap();
        if r.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "reload never took effect: {}", router.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_uses_deployment_urls_api_version_and_api_key() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "azure", 3, 1))).await;
    let cfg = format!(
        "channels:\n  - name: az\n    protocol: azure\n    base_url: {}\n    api_version: 2024-10-21\n    keys: [{UPSTREAM_KEY_A}]\n    models: [my-deploy]\n    aliases: {{gpt-4o: my-deploy}}\n",
        up.root_url()
    );
    let router = Router::start(&cfg);
    let r = client().post(router.url("/v1/chat/completions")).json(&chat_body("gpt-4o", false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/openai/deployments/my-deploy/chat/completions?api-version=2024-10-21");
    assert_eq!(seen.header("api-key").unwrap(), UPSTREAM_KEY_A);
    assert!(seen.header("authorization").is_none());
}

#[test]
fn refuses_open_non_loopback_listen_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    write(&cfg, "channels: []\n");
    let (code, _out, err) = run_cli(&["serve", "--config", cfg.to_str().unwrap(), "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to listen") && err.contains("hint:"), "{err}");
}

#[test]
fn config_check_reports_errors_with_file_line_key_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    write(&cfg, "channels:\n  - name: a\n    base_url: https://x.example/v1\n    keys: [${ROUTER_TEST_MISSING_VAR}]\n");
    let (code, _out, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("c.yaml:4") && err.contains("ROUTER_TEST_MISSING_VAR") && err.contains("hint:"), "{err}");
    write(
        &cfg,
        "channels:\n  - name: a\n    base_url: https://x.example/v1\n    keys:\n      - {name: main, key: sk-very-secret-1}\n      - sk-very-secret-2\n",
    );
    let (code, out, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("main") && out.contains("fp:"), "{out}");
    assert!(!out.contains("sk-very-secret"));
}

#[test]
fn zero_config_finds_keys_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_cli(
        &["config", "check", "--json"],
        &[("HOME", dir.path().to_str().unwrap()), ("DEEPSEEK_API_KEY", "sk-ds-secret-xyz")],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"deepseek"), "{out}");
    assert!(!out.contains("sk-ds-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_serve_finds_local_ollama_and_routes_to_it() {
    let ollama = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            Reply::Json(200, json!({"object": "list", "data": [{"id": "qwen3:8b", "object": "model"}]}))
        } else {
            Reply::Json(200, chat_json("qwen3:8b", "local answer", 4, 2))
        }
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let lmstudio = format!("http://127.0.0.1:{}/v1", dead_port());
    let router = Router::zero_config(
        home.path(),
        &[("OLLAMA_HOST", &ollama.addr.to_string()), ("LMSTUDIO_BASE_URL", &lmstudio)],
    );
    // What `serve` says first: its address, then what zero-config found.
    let first_lines = || router.stdout().lines().take(4).collect::<Vec<_>>().join("\n");
    assert!(
        eventually(Duration::from_secs(10), || {
            let text = first_lines();
            text.contains("zero-config") && text.contains("ollama at")
        })
        .await,
        "{}",
        first_lines()
    );
    let addr = router.addr;
    let r = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat_body("qwen3:8b", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-router-channel"], "ollama");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "local answer");
}

/// Upstreams an environment proxy intercepts are reached through it (`HTTP_PROXY`), the others directly
/// (`NO_PROXY`), as every HTTP client of the router's users does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_are_used_for_the_upstreams_they_intercept() {
    let proxy =
        Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or("?"), "via proxy", 5, 2)))
            .await;
    let direct =
        Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or("?"), "direct", 5, 2)))
            .await;
    let config = format!(
        "channels:\n  - name: far\n    base_url: http://upstream.invalid/v1\n    keys: [{UPSTREAM_KEY_A}]\n    models: [far-model]\n  - name: near\n    base_url: {}\n    keys: [{UPSTREAM_KEY_B}]\n    models: [near-model]\n",
        direct.openai_url()
    );
    let router = Router::start_with(&config, &[], &[("HTTP_PROXY", &proxy.root_url()), ("NO_PROXY", "127.0.0.1")]);
    let ask = |model: &'static str| {
        let url = router.url("/v1/chat/completions");
        async move { client().post(url).json(&chat_body(model, false)).send().await.unwrap() }
    };
    let resp = ask("far-model").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "via proxy");
    let seen = proxy.last();
    // A forward proxy is asked for the absolute URL, with the upstream's key.
    assert_eq!(seen.uri, "http://upstream.invalid/v1/chat/completions");
    assert_eq!(seen.header("authorization").unwrap(), format!("Bearer {UPSTREAM_KEY_A}"));
    let through_proxy = proxy.count();
    let resp = ask("near-model").await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "direct");
    assert_eq!(direct.last().uri, "/v1/chat/completions");
    assert_eq!(proxy.count(), through_proxy, "NO_PROXY's address went through the proxy");
}
