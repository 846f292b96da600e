//! The admin API end to end: the real server's `/admin/v1/...` against the same store the CLI reads, compared
//! answer for answer with the CLI's `--json`; authorisation (none / gateway key / admin key), paging, bad
//! parameters, and the changes it makes (keys, channels, cooldowns) taking effect on the proxy.

use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

const UPSTREAM_KEY: &str = "sk-upstream-admin-test-0001";
const ADMIN: &str = "sk-admin-test";
const GATEWAY: &str = "sk-gw-test";

/// `main` (answers) and `flaky` (503: cools its endpoint), a gateway key and an admin key.
fn config(ok_url: &str, flaky_url: &str) -> String {
    format!(
        "server:\n  keys:\n    - {{name: team, key: {GATEWAY}}}\n  admin_keys:\n    - {{name: ops, key: {ADMIN}}}\n\
         channels:\n  - name: main\n    base_url: {ok_url}\n    keys: [{UPSTREAM_KEY}]\n    models: [gpt-4o]\n    \
         pricing:\n      gpt-4o: {{input: 2, output: 8}}\n  - name: flaky\n    base_url: {flaky_url}\n    \
         keys: [{UPSTREAM_KEY}]\n    models: [gpt-flaky]\n"
    )
}

async fn admin(router: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(router, method, path, Some(ADMIN), body).await
}

async fn call(router: &Router, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), router.url(&format!("/admin/v1{path}")));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// The CLI on the server's config and store (through its control socket), `--json` output parsed.
async fn cli(router: &Router, args: &[&str]) -> Value {
    Cli::new()
        .config(&router.config_path())
        .arg("--store")
        .arg(router.store_path())
        .args(args)
        .hiding(&[UPSTREAM_KEY, ADMIN])
        .run_async()
        .await
        .json()
}

async fn chat(router: &Router, key: &str, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = client().post(router.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_cli_json_and_only_to_admin_keys() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 7, 3))).await;
    let flaky = Mock::start(|_, _| Reply::Json(503, json!({"error": {"message": "overloaded"}}))).await;
    let router = Router::start(&config(&up.openai_url(), &flaky.openai_url()));
    for _ in 0..5 {
        assert_eq!(chat(&router, GATEWAY, "gpt-4o").await, 200);
    }
    assert!(eventually(Duration::from_secs(10), || router.records().len() == 5).await);

    // Authorisation at the door, before the path is even looked at.
    for (key, status) in [(None, 401), (Some("sk-wrong"), 401), (Some(GATEWAY), 403), (Some(ADMIN), 200)] {
        let (s, body) = call(&router, "GET", "/usage", key, None).await;
        assert_eq!(s, status, "{key:?}: {body}");
        if s != 200 {
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    let (s, _) = call(&router, "GET", "/nope", Some(GATEWAY), None).await;
    assert_eq!(s, 403, "a gateway key learns nothing about the routes");

    // Reports: the same JSON as the CLI's.
    let (_, usage) = admin(&router, "GET", "/usage?group_by=model,key", None).await;
    let want = cli(&router, &["usage", "--json", "--utc", "--group-by", "model", "--group-by", "key"]).await;
    assert_eq!(usage, want);
    assert_eq!(usage["totals"]["requests"], 5);
    let (_, all) = admin(&router, "GET", "/requests?limit=10", None).await;
    assert_eq!(all["requests"], cli(&router, &["requests", "--json", "--utc", "-n", "10"]).await);
    assert_eq!(all["next_cursor"], Value::Null, "a short page is the last one");
    // Paging: 2 + 2 + 1, newest first, no record twice.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    for want_len in [2, 2, 1] {
        let q = if cursor.is_empty() {
            "/requests?limit=2".to_string()
        } else {
            format!("/requests?limit=2&cursor={cursor}")
        };
        let (s, page) = admin(&router, "GET", &q, None).await;
        assert_eq!(s, 200, "{page}");
        let rows = page["requests"].as_array().unwrap();
        assert_eq!(rows.len(), want_len);
        ids.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_string();
    }
    assert!(cursor.is_empty());
    let all_ids: Vec<String> =
        all["requests"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().into()).collect();
    assert_eq!(ids, all_ids);
    let (_, one) = admin(&router, "GET", &format!("/requests/{}", ids[0]), None).await;
    assert_eq!(one, cli(&router, &["requests", "show", &ids[0], "--json", "--utc"]).await);
    assert_eq!(one["attempts"].as_array().unwrap().len(), 1);
    let (_, ch) = admin(&router, "GET", "/channels", None).await;
    assert_eq!(ch, cli(&router, &["channels", "list", "--json"]).await);
    let (_, main) = admin(&router, "GET", "/channels/main", None).await;
    assert_eq!(main, cli(&router, &["channels", "show", "main", "--json"]).await);
    let (_, hist) = admin(&router, "GET", "/balances/history", None).await;
    assert_eq!(hist, cli(&router, &["balance", "history", "--json"]).await);
    let (_, keys) = admin(&router, "GET", "/keys", None).await;
    assert_eq!(keys, cli(&router, &["keys", "list", "--json"]).await);
    let (_, team) = admin(&router, "GET", "/keys/team", None).await;
    assert_eq!(team, cli(&router, &["keys", "show", "team", "--json"]).await);

    // Bad parameters: 400 naming what is wrong.
    for (path, needle) in [
        ("/usage?group_by=week", "week"),
        ("/usage?since=someday", "since"),
        ("/usage?colour=red", "unknown parameter `colour`"),
        ("/requests?limit=0", "limit"),
        ("/requests?cursor=zz", "cursor"),
        ("/requests?utc=maybe", "utc"),
    ] {
        let (s, body) = admin(&router, "GET", path, None).await;
        assert_eq!(s, 400, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{path}: {body}");
    }
    assert_eq!(admin(&router, "GET", "/requests/00000000000000000000000000000001", None).await.0, 404);
    assert_eq!(admin(&router, "GET", "/channels/none", None).await.0, 404);
    assert_eq!(admin(&router, "DELETE", "/keys", None).await.0, 405);
    assert_eq!(admin(&router, "GET", "/nope", None).await.0, 404);
    let (s, body) = admin(&router, "POST", "/keys", Some(json!({"name": "x", "rpm": "lots"}))).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--rpm"), "{body}");

    // Every route is in the OpenAPI description.
    let (s, doc) = admin(&router, "GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    for p in ["/admin/v1/usage", "/admin/v1/requests/{id}", "/admin/v1/keys/{name}/rotate", "/admin/v1/events"] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_channels_and_cooldowns_changed_through_the_api_apply_at_once() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 7, 3))).await;
    let flaky = Mock::start(|_, _| Reply::Json(503, json!({"error": {"message": "overloaded"}}))).await;
    let router = Router::start(&config(&up.openai_url(), &flaky.openai_url()));

    // A key made through the API works at once; disabled, it is refused; the secret never shows again.
    let (s, made) =
        admin(&router, "POST", "/keys", Some(json!({"name": "bot", "rpm": 10, "budget": "5", "per": "week"}))).await;
    assert_eq!(s, 201, "{made}");
    let secret = made["key"].as_str().unwrap().to_string();
    assert_eq!(made["limits"]["rpm"], 10);
    assert_eq!(chat(&router, &secret, "gpt-4o").await, 200);
    let (_, listed) = admin(&router, "GET", "/keys/bot", None).await;
    assert!(!listed.to_string().contains(&secret));
    let (s, _) = admin(&router, "PATCH", "/keys/bot", Some(json!({"rpm": "none"}))).await;
    assert_eq!(s, 200);
    let (s, row) = admin(&router, "POST", "/keys/bot/disable", None).await;
    assert_eq!((s, row["state"].as_str()), (200, Some("disabled")));
    assert_eq!(chat(&router, &secret, "gpt-4o").await, 401);
    let (_, rotated) = admin(&router, "POST", "/keys/bot/rotate", None).await;
    assert_ne!(rotated["key"], json!(secret));
    let (s, body) = admin(&router, "POST", "/keys/team/disable", None).await;
    assert_eq!(s, 400, "a YAML key is changed in its file: {body}");

    // A store channel added with the CLI, disabled and enabled through the API.
    let out = Cli::new()
        .config(&router.config_path())
        .arg("--store")
        .arg(router.store_path())
        .args(["channels", "add", "--name", "extra", "--protocol", "openai", "--base-url", &up.openai_url()])
        .args(["--key", "sk-extra-upstream", "--model", "gpt-extra"])
        .run_async()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(chat(&router, GATEWAY, "gpt-extra").await, 200);
    let (s, ch) = admin(&router, "POST", "/channels/extra/disable", Some(json!({"reason": "maintenance"}))).await;
    assert_eq!(s, 200, "{ch}");
    assert_eq!((ch["enabled"].as_bool(), ch["disabled_reason"].as_str()), (Some(false), Some("maintenance")));
    assert_eq!(ch, cli(&router, &["channels", "show", "extra", "--json"]).await);
    assert_ne!(chat(&router, GATEWAY, "gpt-extra").await, 200, "a disabled channel gets no requests");
    assert_eq!(admin(&router, "POST", "/channels/extra/enable", None).await.0, 200);
    assert_eq!(chat(&router, GATEWAY, "gpt-extra").await, 200);
    let (s, body) = admin(&router, "POST", "/channels/main/disable", None).await;
    assert_eq!(s, 400, "{body}");

    // A failing endpoint cools; the API shows why and for how long, and clears it.
    assert_ne!(chat(&router, GATEWAY, "gpt-flaky").await, 200);
    let (_, health) = admin(&router, "GET", "/health", None).await;
    let cooling = health["cooling"].as_array().unwrap();
    let c = cooling.iter().find(|c| c["channel"] == "flaky").unwrap_or_else(|| panic!("{health}"));
    assert!(c["remaining_ms"].as_u64().unwrap() > 0 && !c["reason"].as_str().unwrap().is_empty(), "{c}");
    let key = c["key"].clone();
    let (s, _) = admin(&router, "POST", "/health/clear", Some(json!({"key": key}))).await;
    assert_eq!(s, 200);
    let (_, health) = admin(&router, "GET", "/health", None).await;
    assert!(!health["cooling"].as_array().unwrap().iter().any(|c| c["key"] == key), "{health}");
    assert_eq!(admin(&router, "POST", "/health/clear", Some(json!({"key": key}))).await.0, 404);
    assert_eq!(admin(&router, "POST", "/health/clear", None).await.0, 400);

    // Triggers answer once done.
    assert_eq!(admin(&router, "POST", "/discover", None).await.0, 200);
    let (s, b) = admin(&router, "POST", "/balances/refresh", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(!router.stderr().contains(UPSTREAM_KEY) && !router.stdout().contains(UPSTREAM_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_finished_requests_and_health_changes() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 7, 3))).await;
    let flaky = Mock::start(|_, _| Reply::Json(503, json!({"error": {"message": "overloaded"}}))).await;
    let mut router = Router::start(&config(&up.openai_url(), &flaky.openai_url()));
    let r = client().get(router.url("/admin/v1/events")).bearer_auth(GATEWAY).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut events = client().get(router.url("/admin/v1/events")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    // Subscribed once the opening comment arrives.
    let first = events.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b": connected\n\n");
    assert_eq!(chat(&router, GATEWAY, "gpt-4o").await, 200);
    assert_ne!(chat(&router, GATEWAY, "gpt-flaky").await, 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.matches("event: request").count() == 2 && text.contains("event: cooled")) {
        let chunk = tokio::time::timeout_at(deadline, events.chunk()).await.expect("events in time").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data: Vec<Value> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: request"))
        .map(|e| serde_json::from_str(e.split_once("data: ").unwrap().1).unwrap())
        .collect();
    assert_eq!(data[0]["requested_model"], "gpt-4o");
    assert_eq!(data[0]["tokens"]["input"], 7);
    assert!(data[0]["id"].as_str().unwrap().len() == 32);
    assert!(text.contains("\"level\":\"endpoint\""), "{text}");
    assert!(!text.contains(UPSTREAM_KEY) && !text.contains(GATEWAY));

    // A server stopping ends the stream: an open dashboard does not hold the shutdown for its grace period
    // (30 s here).
    router.signal("TERM");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let within_grace = "the stream ends well within the grace period";
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, events.chunk()).await.expect(within_grace) {}
    let exited = tokio::task::spawn_blocking(move || router.wait_exit(Duration::from_secs(10)).is_some());
    assert!(exited.await.unwrap(), "the router exits without waiting out the grace period");
}
