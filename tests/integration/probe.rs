//! `router test` end to end: the real binary against mock upstreams on random ports that are healthy, slow,
//! failing with each class (401, 402 / insufficient_quota, 404, 429, 500) and unreachable.

use crate::harness::*;
use serde_json::{Value, json};

/// Every key contains this, so a leak anywhere in the output is easy to find.
const MARK: &str = "SECRETKEYBYTES";

fn key(name: &str) -> String {
    format!("sk-{MARK}-{name}-0123456789")
}

/// Runs `router --config <cfg> test ...`; fails the test when a key byte shows up in stdout or stderr.
async fn router_test(config: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, config);
    Cli::new()
        .config(&cfg)
        .arg("test")
        .args(args)
        .env("NO_COLOR", "1")
        .table_width(400)
        .hiding(&[MARK, "0123456789"])
        .run_async()
        .await
        .into()
}

fn bearer(r: &Recorded) -> String {
    r.header("authorization").unwrap_or_default().trim_start_matches("Bearer ").to_string()
}

/// One mock for every class, answering by key: the key names what it does.
async fn classes_mock() -> Mock {
    Mock::start(|r, _| {
        let k = bearer(r);
        let is = |name: &str| k == key(name);
        if is("slow") {
            return Reply::Hang;
        }
        if is("auth") {
            // Providers echo the key they refused; it must not reach our output.
            return Reply::Json(401, json!({"error": {"message": format!("Incorrect API key provided: {k}"), "code": "invalid_api_key"}}));
        }
        if is("nocredit") {
            return Reply::Json(402, json!({"error": {"message": "Insufficient credits"}}));
        }
        if is("quota") {
            return Reply::Json(429, json!({"error": {"code": "insufficient_quota", "message": "You exceeded your current quota, please check your plan and billing details."}}));
        }
        if is("busy") {
            return Reply::Raw(429, vec![("content-type", "application/json".into()), ("retry-after", "3".into())],
                json!({"error": {"message": "Rate limit reached for requests"}}).to_string());
        }
        if is("missing") {
            return Reply::Json(404, json!({"error": {"message": "Not Found"}}));
        }
        if is("broken") {
            return Reply::Json(500, json!({"error": {"message": "internal error"}}));
        }
        if r.uri.ends_with("/models") {
            return Reply::Json(200, json!({"object": "list", "data": [{"id": "gpt-4o-mini"}]}));
        }
        let model = r.json()["model"].as_str().unwrap_or("?").to_string();
        Reply::Sse(chat_sse(&model, &["O", "K"], true))
    })
    .await
}

fn channel(name: &str, url: &str, key_name: &str) -> String {
    format!(
        "  - name: {name}\n    base_url: {url}\n    keys: [{{name: {name}-key, key: {}}}]\n    models: [gpt-4o-mini]\n",
        key(key_name)
    )
}

fn classes_config(up: &Mock) -> String {
    let url = up.openai_url();
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    let mut cfg = String::from("channels:\n");
    for (name, k) in [
        ("good", "good"),
        ("slow", "slow"),
        ("auth", "auth"),
        ("nocredit", "nocredit"),
        ("quota", "quota"),
        ("busy", "busy"),
        ("missing", "missing"),
        ("broken", "broken"),
    ] {
        cfg.push_str(&channel(name, &url, k));
    }
    cfg.push_str(&channel("dead", &dead, "dead"));
    cfg
}

/// The cells of a table row (`│ a ┆ b │`); empty for other lines.
fn cells(line: &str) -> Vec<&str> {
    match line.trim().strip_prefix('│').and_then(|l| l.strip_suffix('│')) {
        Some(inner) => inner.split('┆').map(str::trim).collect(),
        None => Vec::new(),
    }
}

fn row<'a>(stdout: &'a str, channel: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| cells(l).first() == Some(&channel))
        .unwrap_or_else(|| panic!("no row for {channel}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_class_is_named_in_words_and_fails_the_run() {
    let up = classes_mock().await;
    let cfg = classes_config(&up);
    let (code, stdout, stderr) = router_test(&cfg, &["--timeout", "700ms"]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let expect = [
        ("good", "ok"),
        ("slow", "timeout"),
        ("auth", "auth: invalid key (HTTP 401: Incorrect API key provided"),
        ("nocredit", "quota: no credit (HTTP 402: Insufficient credits)"),
        ("quota", "quota: no credit (HTTP 429: You exceeded your current quota"),
        ("busy", "rate limited (HTTP 429: Rate limit reached for requests)"),
        ("missing", "not found (HTTP 404"),
        ("broken", "server error (HTTP 500: internal error)"),
        ("dead", "connect: unreachable"),
    ];
    for (ch, words) in expect {
        let line = row(&stdout, ch);
        assert!(line.contains(words), "{ch}: expected `{words}` in\n{line}");
        assert!(line.contains(&format!("{ch}-key")), "token named in\n{line}");
    }
    // Answers have a latency and a status; a dead port and a hang have neither.
    assert!(row(&stdout, "good").contains(" ms"));
    assert!(row(&stdout, "good").contains("200"));
    assert!(row(&stdout, "broken").contains("500"));
    assert!(!row(&stdout, "dead").contains(" ms"));
    assert!(stderr.contains("8 of 9 check(s) failed"), "{stderr}");

    let (code, stdout, _) = router_test(&cfg, &["--timeout", "700ms", "--json"]).await;
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9);
    let by = |ch: &str| checks.iter().find(|c| c["channel"] == ch).unwrap().clone();
    for (ch, class) in [
        ("good", "ok"),
        ("slow", "timeout"),
        ("auth", "auth"),
        ("nocredit", "quota"),
        ("quota", "quota"),
        ("busy", "rate_limited"),
        ("missing", "not_found"),
        ("broken", "server_error"),
        ("dead", "connect"),
    ] {
        let c = by(ch);
        assert_eq!(c["result"], class, "{c}");
        assert_eq!(c["check"], "reachability");
        assert_eq!(c["endpoint"], "default");
        assert_eq!(c["token_key"], format!("{ch}-key"));
        assert!(c["request"].as_str().unwrap().starts_with("GET http://127.0.0.1:"));
    }
    assert!(by("good")["latency_ms"].as_u64().is_some());
    assert_eq!(by("good")["status"], 200);
    assert_eq!(by("good")["message"], "ok");
    assert!(by("auth")["latency_ms"].as_u64().is_some());
    assert_eq!(by("busy")["retry_after_ms"], 3000);
    assert!(by("dead")["latency_ms"].is_null());
    assert!(by("slow")["detail"].as_str().unwrap().contains("no answer within 700ms"));
    // The refused key was echoed by the upstream; the detail names the class, not the key.
    assert_eq!(by("auth")["detail"], "HTTP 401: Incorrect API key provided: *****");
    // Reachability checks send the key the way the proxy does.
    assert!(up.all().iter().any(|r| r.uri == "/v1/models" && bearer(r) == key("good")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_endpoints_exit_zero_and_chat_reports_ttfb_and_tokens() {
    let oa = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            return Reply::Json(200, json!({"object": "list", "data": [{"id": "gpt-4o-mini"}]}));
        }
        let model = r.json()["model"].as_str().unwrap_or("?").to_string();
        Reply::Sse(chat_sse(&model, &["O", "K", "!"], r.json()["stream_options"]["include_usage"] == true))
    })
    .await;
    let an = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            return Reply::Json(200, json!({"data": [{"id": "claude-haiku-4-5"}]}));
        }
        Reply::Sse(messages_sse("claude-haiku-4-5", &["O", "K"]))
    })
    .await;
    let cfg = format!(
        "channels:\n  - name: oa\n    base_url: {}\n    keys: [{{name: main, key: {}}}]\n    models: [gpt-4o-mini, text-embedding-3-small]\n  - name: claude\n    protocol: anthropic\n    base_url: {}\n    keys: [{}]\n    models: [claude-haiku-4-5]\n",
        oa.openai_url(),
        key("oa"),
        an.root_url(),
        key("an"),
    );
    let (code, stdout, stderr) = router_test(&cfg, &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("all 2 check(s) ok"), "{stderr}");
    assert_eq!(oa.count() + an.count(), 2, "no chat request without --chat");

    let (code, stdout, stderr) = router_test(&cfg, &["--chat", "--json"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    // Two model-list checks and one chat per chat model (the embedding model is not sent a chat).
    assert_eq!(checks.len(), 4, "{stdout}");
    let chat = |model: &str| checks.iter().find(|c| c["check"] == "chat" && c["model"] == model).unwrap().clone();
    let c = chat("gpt-4o-mini");
    assert_eq!(c["status"], 200);
    assert_eq!(c["tokens"]["input"], 11);
    assert_eq!(c["tokens"]["output"], 3);
    assert!(c["ttfb_ms"].as_u64().is_some() && c["total_ms"].as_u64().is_some());
    assert!(c["ttfb_ms"].as_u64() <= c["total_ms"].as_u64());
    assert_eq!(c["token_key"], "main");
    let c = chat("claude-haiku-4-5");
    assert_eq!(c["tokens"]["input"], 12);
    assert_eq!(c["tokens"]["output"], 2);
    assert!(c["token_key"].as_str().unwrap().starts_with("fp:"));
    // The chat requests are minimal and in each channel's own protocol.
    let sent = oa.all().into_iter().find(|r| r.uri == "/v1/chat/completions").unwrap();
    assert_eq!(sent.json()["max_tokens"], 8);
    assert_eq!(sent.json()["messages"][0]["content"], "Reply with OK");
    assert_eq!(bearer(&sent), key("oa"));
    let sent = an.all().into_iter().find(|r| r.uri == "/v1/messages").unwrap();
    assert_eq!(sent.json()["max_tokens"], 8);
    assert_eq!(sent.header("x-api-key").unwrap(), key("an"));
    assert!(sent.header("anthropic-version").is_some());

    // The table shows the chat row with time to first byte and tokens.
    let (code, stdout, _) = router_test(&cfg, &["oa", "--model", "gpt-4o-mini"]).await;
    assert_eq!(code, 0);
    let line = stdout.lines().find(|l| l.contains("chat gpt-4o-mini")).expect(&stdout);
    assert!(line.contains("ttfb ") && line.contains("11 in / 3 out") && line.contains("ok"), "{line}");
    assert!(!stdout.contains("claude"), "only the named channel is tested:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_failures_are_classified_per_model() {
    let up = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            return Reply::Json(200, json!({"object": "list", "data": []}));
        }
        match r.json()["model"].as_str() {
            Some("gone") => Reply::Json(404, json!({"error": {"message": "The model `gone` does not exist"}})),
            Some("slow") => Reply::Hang,
            _ => Reply::json_text(200, "<html>hi</html>"),
        }
    })
    .await;
    let cfg = format!(
        "channels:\n  - name: m\n    base_url: {}\n    keys: [{}]\n    models: [gone, slow, junk]\n",
        up.openai_url(),
        key("m")
    );
    let (code, stdout, _) = router_test(&cfg, &["--chat", "--json", "--timeout", "600ms"]).await;
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let class = |model: &str| {
        v["checks"].as_array().unwrap().iter().find(|c| c["model"] == model).unwrap()["result"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(class("gone"), "not_found");
    assert_eq!(class("slow"), "timeout");
    assert_eq!(class("junk"), "bad_response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_target_prints_the_routing_decision_and_the_attempts_of_a_real_request() {
    let first = Mock::start(|_, _| Reply::Json(500, json!({"error": {"message": "upstream exploded"}}))).await;
    let second = Mock::start(|r, _| {
        let model = r.json()["model"].as_str().unwrap_or("?").to_string();
        Reply::Json(200, chat_json(&model, "OK", 9, 1))
    })
    .await;
    let cfg = format!(
        "channels:\n  - name: first\n    priority: 0\n    base_url: {}\n    keys: [{{name: k1, key: {}}}]\n    models: [qwen/qwen3-8b]\n  - name: second\n    priority: 1\n    base_url: {}\n    keys: [{{name: k2, key: {}}}]\n    models: [qwen3-8b]\n  - name: other\n    base_url: {}\n    keys: [{}]\n    models: [llama-3.1-8b]\n",
        first.openai_url(),
        key("first"),
        second.openai_url(),
        key("second"),
        second.openai_url(),
        key("other"),
    );
    let (code, stdout, stderr) = router_test(&cfg, &["tag:qwen3"]).await;
    assert_eq!(code, 0, "the routed request succeeded after failover:\n{stdout}\n{stderr}");
    assert!(stdout.contains("route tag:qwen3: strategy priority, resolved by tag"), "{stdout}");
    // The decision: first (priority 0) before second; `other` does not match.
    let rows: Vec<Vec<&str>> = stdout.lines().map(cells).filter(|c| c.len() > 4 && c[0] != "#").collect();
    // #, channel, endpoint, token, model, note
    assert_eq!(rows[0][..5], ["1", "first", "default", "k1", "qwen/qwen3-8b"], "{stdout}");
    assert_eq!(rows[1][..5], ["2", "second", "default", "k2", "qwen3-8b"], "{stdout}");
    assert!(!stdout.contains("llama"));
    // The attempts of the real request: first 500, then second ok.
    assert!(stdout.contains("request POST /v1/chat/completions: 2 attempt(s)"), "{stdout}");
    // attempt, channel, endpoint, token, model, status, result, time
    let attempts: Vec<&Vec<&str>> = rows.iter().filter(|c| c.len() == 8 && c[0] != "attempt").collect();
    assert_eq!(attempts.len(), 2, "{stdout}");
    assert_eq!(attempts[0][..7], ["1", "first", "default", "k1", "qwen/qwen3-8b", "500", "server error"]);
    assert_eq!(attempts[1][..7], ["2", "second", "default", "k2", "qwen3-8b", "200", "ok"]);
    assert!(attempts[1][7].ends_with(" ms"));
    assert!(stdout.contains("result: ok via second/default [k2] qwen3-8b"), "{stdout}");
    assert!(stdout.contains("9 in / 1 out"), "{stdout}");
    // One real request reached each upstream, with the minimal body and the upstream's model id.
    assert_eq!(first.count(), 1);
    assert_eq!(second.count(), 1);
    assert_eq!(second.last().json()["model"], "qwen3-8b");
    assert_eq!(second.last().json()["max_tokens"], 8);
    assert_eq!(bearer(&second.last()), key("second"));

    // JSON: the same decision and attempts.
    let (code, stdout, _) = router_test(&cfg, &["tag:8b,qwen3", "--json"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["routes"][0];
    assert_eq!(r["target"], "tag:8b,qwen3");
    assert_eq!(r["resolved_by"], "tag");
    assert_eq!(r["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(r["strategy"], "priority");
    assert_eq!(r["client"], "openai");
    let attempts = r["request"]["attempts"].as_array().unwrap();
    // The second run's first attempt is again `first`: each run routes with fresh health.
    assert_eq!(attempts.len(), 2, "{r}");
    assert_eq!(attempts[0]["outcome"], "server_error");
    assert_eq!(attempts[1]["outcome"], "ok");
    assert_eq!(r["request"]["channel"], "second");
    assert_eq!(r["request"]["tokens"]["input"], 9);
    assert_eq!(v["checks"].as_array().unwrap().len(), 0);

    // Checks run first and feed the routing health, as a report would feed `serve`: the endpoint whose model list
    // answered 500 is cooling, so the real request goes straight to `second`.
    let (code, stdout, _) = router_test(&cfg, &["first", "tag:qwen3", "--json"]).await;
    assert_eq!(code, 1, "the check of `first` failed: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["checks"][0]["result"], "server_error");
    let r = &v["routes"][0];
    assert_eq!(r["candidates"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["excluded"][0]["reason"].as_str().unwrap().contains("endpoint cooling down"), "{r}");
    assert_eq!(r["request"]["attempts"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["request"]["channel"], "second");

    // A model only the failing channel serves: the run fails, and says why.
    let (code, stdout, _) = router_test(&cfg, &["qwen/qwen3-8b"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("result: failed (HTTP 502, upstream_error)"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_every_candidate_fails_exits_1_with_the_reason() {
    let bad = Mock::start(|_, _| Reply::Json(401, json!({"error": {"message": "bad key"}}))).await;
    let cfg = format!(
        "channels:\n  - name: only\n    base_url: {}\n    keys: [{{name: k, key: {}}}]\n    models: [gpt-4o]\n",
        bad.openai_url(),
        key("only")
    );
    let (code, stdout, stderr) = router_test(&cfg, &["gpt-4o"]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("auth: invalid key"), "{stdout}");
    assert!(stdout.contains("result: failed"), "{stdout}");
    assert!(stderr.contains("1 of 1 routed request(s) failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_exit_1_with_close_names() {
    let up = classes_mock().await;
    let cfg = classes_config(&up);
    let (code, _, stderr) = router_test(&cfg, &["brokn"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("error: no channel, model or tag `brokn`"), "{stderr}");
    assert!(stderr.contains("hint: did you mean: broken"), "{stderr}");
    let (code, _, stderr) = router_test(&cfg, &["tag:gpt,minii"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("hint: did you mean:") && stderr.contains("mini"), "{stderr}");
    let (code, _, stderr) = router_test(&cfg, &["good/eu"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("channel `good` has no endpoint `eu`") && stderr.contains("default"), "{stderr}");
    assert_eq!(up.count(), 0, "nothing is sent when a target is unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_uses_the_anthropic_protocol_for_claude_channels_and_honours_the_timeout() {
    let claude = Mock::start(|_, _| Reply::Json(200, messages_json("claude-haiku-4-5", "OK"))).await;
    let slow = Mock::start(|_, _| Reply::Hang).await;
    let cfg = format!(
        "channels:\n  - name: claude\n    protocol: anthropic\n    base_url: {}\n    keys: [{}]\n    models: [claude-haiku-4-5]\n  - name: slow\n    base_url: {}\n    keys: [{}]\n    models: [gpt-4o]\n",
        claude.root_url(),
        key("claude"),
        slow.openai_url(),
        key("slow"),
    );
    let (code, stdout, stderr) = router_test(&cfg, &["tag:claude", "--json"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["routes"][0];
    assert_eq!(r["client"], "anthropic");
    assert_eq!(r["request"]["path"], "POST /v1/messages");
    assert!(r["request"]["translated"].is_null(), "no translation needed: {r}");
    assert_eq!(r["request"]["tokens"]["input"], 12);
    assert_eq!(claude.last().uri, "/v1/messages");
    assert_eq!(claude.last().header("x-api-key").unwrap(), key("claude"));

    let started = std::time::Instant::now();
    let (code, stdout, _) = router_test(&cfg, &["gpt-4o", "--timeout", "500ms"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let attempt = stdout.lines().map(cells).find(|c| c.len() == 8 && c[1] == "slow").expect(&stdout);
    assert_eq!(attempt[6], "timeout", "{stdout}");
    assert!(stdout.contains("result: failed (HTTP 504"), "{stdout}");
}
