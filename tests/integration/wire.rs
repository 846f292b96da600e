//! Discovery, balances, `router test` and `tags query` wired to the store and the running server: the real binary
//! (`serve` and the CLI on one temp store) against mock upstreams on 127.0.0.1:0. Waits are bounded polls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{Cli, Mock, Reply, Router, chat_json, client, dead_port};
use serde_json::{Value, json};

const KEY_A: &str = "sk-wire-SECRET-a1b2c3d4e5";
const KEY_B: &str = "sk-wire-SECRET-f6a7b8c9d0";

/// Runs the CLI without blocking the async workers (the mocks keep answering meanwhile).
async fn cli(args: &[&str]) -> (i32, String, String) {
    Cli::new().args(args).run_async().await.into()
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("router.yaml"), dir.join("router.redb"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An OpenAI-style upstream: `models` on GET /v1/models, chat completions echoing the model.
async fn openai_mock(models: Arc<std::sync::Mutex<Vec<&'static str>>>) -> Mock {
    Mock::start(move |r, _| {
        if r.method == "GET" && r.uri.starts_with("/v1/models") {
            let data: Vec<Value> = models.lock().unwrap().iter().map(|id| json!({"id": id})).collect();
            return Reply::Json(200, json!({"object": "list", "data": data}));
        }
        let model = r.json()["model"].as_str().unwrap_or("?").to_string();
        Reply::Json(200, chat_json(&model, "hi", 5, 1))
    })
    .await
}

async fn chat(addr: std::net::SocketAddr, model: &str) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn query_json(cfg: &Path, store: &Path, expr: &str, extra: &[&str]) -> Value {
    let mut args = vec!["tags", "query", expr, "--json", "--config", s(cfg), "--store", s(store)];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args).await;
    assert_eq!(code, 0, "tags query failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discover_while_serving_routes_new_models_at_once_and_they_survive_a_restart() {
    let models = Arc::new(std::sync::Mutex::new(vec!["alpha", "fresh-model-x"]));
    let up = openai_mock(models.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, store) = paths(dir.path());
    std::fs::write(
        &cfg,
        format!(
            "channels:\n  - name: up\n    base_url: {}\n    keys: [{KEY_A}]\n    models: [alpha]\n",
            up.openai_url()
        ),
    )
    .unwrap();
    let mut server = Router::serve(dir.path(), &cfg, &store);
    assert_eq!(chat(server.addr, "fresh-model-x").await.status(), 404, "not known before discovery");

    let (code, out, err) = cli(&["discover", "--config", s(&cfg), "--store", s(&store)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("up") && out.contains(" 2 "), "{out}");
    assert!(!out.contains(KEY_A) && !err.contains(KEY_A));
    // The server rebuilds its catalogue as soon as the results land: no restart, no reload.
    let mut status = 0;
    for _ in 0..250 {
        status = chat(server.addr, "fresh-model-x").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "{}", server.stderr());
    assert_eq!(up.last().json()["model"], "fresh-model-x");
    server.stop();

    // Without a server the CLI reads the same store directly.
    let v = query_json(&cfg, &store, "fresh-model-x", &[]).await;
    assert_eq!(v["candidates"][0]["model"], "fresh-model-x", "{v}");
    // A restarted server routes on the stored results without discovering again.
    let list_calls = || up.all().iter().filter(|r| r.uri.starts_with("/v1/models")).count();
    let before = list_calls();
    let server = Router::serve(dir.path(), &cfg, &store);
    assert_eq!(chat(server.addr, "fresh-model-x").await.status(), 200, "{}", server.stderr());
    assert_eq!(list_calls(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_config_discovers_at_start_up() {
    // A local Ollama whose list grows after the start-up probe: only discovery inside `serve` can learn the
    // second model.
    let ollama = Mock::start(|r, n| {
        if r.method == "GET" && r.uri.starts_with("/v1/models") {
            let ids: &[&str] = if n == 0 { &["llama-small"] } else { &["llama-small", "qwen-late"] };
            let data: Vec<Value> = ids.iter().map(|id| json!({"id": id, "object": "model"})).collect();
            return Reply::Json(200, json!({"object": "list", "data": data}));
        }
        Reply::Json(404, json!({"error": {"message": "nope"}}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // No config anywhere, no provider keys in the environment: zero-config finds only the mock Ollama.
    let lmstudio = format!("http://127.0.0.1:{}/v1", dead_port());
    let router =
        Router::zero_config(dir.path(), &[("OLLAMA_HOST", &ollama.addr.to_string()), ("LMSTUDIO_BASE_URL", &lmstudio)]);
    let url = router.url("/v1/models");
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..250 {
        let v: Value = client().get(&url).send().await.unwrap().json().await.unwrap();
        ids = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
        if ids.iter().any(|i| i == "qwen-late") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ids.contains(&"qwen-late".to_string()), "{ids:?}\n{}", router.stderr());
    assert!(ids.contains(&"llama-small".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balances_are_kept_and_a_dry_key_is_cooled_until_it_has_credit_again() {
    // Key A's credit is set by the test; key B always has 5 CNY.
    let credit_a = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let (c, n) = (credit_a.clone(), checks.clone());
    let up = Mock::start(move |r, _| {
        if r.uri.starts_with("/user/balance") {
            n.fetch_add(1, Ordering::SeqCst);
            let amount = if r.header("authorization").unwrap_or_default().contains(KEY_A) {
                c.load(Ordering::SeqCst)
            } else {
                5
            };
            return Reply::Json(
                200,
                json!({"is_available": amount > 0, "balance_infos": [{"currency": "CNY",
                    "total_balance": format!("{amount}.00"), "granted_balance": "0.00", "topped_up_balance": "0.00"}]}),
            );
        }
        Reply::Json(200, chat_json("m1", "hi", 5, 1))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, store) = paths(dir.path());
    std::fs::write(
        &cfg,
        format!(
            "balance:\n  interval: 200ms\n  ttl: 10m\nchannels:\n  - name: ds\n    base_url: {}\n    keys: [{{name: a, key: {KEY_A}}}, {{name: b, key: {KEY_B}}}]\n    models: [m1]\n    balance: {{kind: deepseek, url: {}}}\n",
            up.openai_url(),
            up.root_url()
        ),
    )
    .unwrap();
    let server = Router::serve(dir.path(), &cfg, &store);

    // The periodic check finds key a dry: serve's own plan (asked through the socket) excludes it.
    let mut v = Value::Null;
    for _ in 0..250 {
        v = query_json(&cfg, &store, "m1", &[]).await;
        if v["excluded"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let excluded = v["excluded"].as_array().unwrap();
    assert_eq!(excluded.len(), 1, "{v}\n{}", server.stderr());
    assert_eq!(excluded[0]["token"], "a");
    assert!(excluded[0]["reason"].as_str().unwrap().contains("balance at or below zero"), "{v}");
    let tokens: Vec<&str> = v["candidates"].as_array().unwrap().iter().map(|c| c["token"].as_str().unwrap()).collect();
    assert_eq!(tokens, ["b"]);
    let (code, out, _) = cli(&["tags", "query", "m1", "--config", s(&cfg), "--store", s(&store)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("excluded:") && out.contains("token cooling down (balance at or below zero)"), "{out}");

    // Credit again: a later check lifts the cooldown.
    credit_a.store(3, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..250 {
        let v = query_json(&cfg, &store, "m1", &[]).await;
        if v["excluded"].as_array().unwrap().is_empty() && v["candidates"].as_array().unwrap().len() == 2 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "key a never came back\n{}", server.stderr());

    // History through the running server holds both the dry and the recovered check of key a.
    let (code, out, err) = cli(&["balance", "history", "--channel", "ds", "--json", "--store", s(&store)]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let amounts_a: Vec<f64> =
        rows.iter().filter(|r| r["token_key"] == "a").map(|r| r["balances"][0]["amount"].as_f64().unwrap()).collect();
    assert!(amounts_a.contains(&0.0) && amounts_a.contains(&3.0), "{amounts_a:?}");
    assert!(!out.contains(KEY_A) && !out.contains(KEY_B));
    drop(server);

    // Without a server: `balance check` within the TTL reads stored results; --refresh asks and stores.
    let before = checks.load(Ordering::SeqCst);
    let (code, out, _) = cli(&["balance", "check", "--config", s(&cfg), "--store", s(&store)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("(stored)"), "{out}");
    assert_eq!(checks.load(Ordering::SeqCst), before);
    let (code, out, err) = cli(&["balance", "check", "--refresh", "--config", s(&cfg), "--store", s(&store)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3.00") && out.contains("5.00") && out.contains("CNY"), "{out}");
    assert!(!out.contains("(stored)"), "{out}");
    assert_eq!(checks.load(Ordering::SeqCst), before + 2);
    let (code, out, _) = cli(&["balance", "history", "--channel", "ds", "--store", s(&store)]).await;
    assert_eq!(code, 0);
    assert!(out.lines().count() >= 5, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn router_test_feeds_the_running_server_cooldowns_and_latency() {
    let models = Arc::new(std::sync::Mutex::new(vec!["m1"]));
    let good = openai_mock(models).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, store) = paths(dir.path());
    std::fs::write(
        &cfg,
        format!(
            "channels:\n  - name: bad\n    base_url: http://127.0.0.1:{}/v1\n    keys: [{KEY_A}]\n    models: [m1]\n  - name: good\n    priority: 1\n    base_url: {}\n    keys: [{KEY_B}]\n    models: [m1]\n",
            dead_port(),
            good.openai_url()
        ),
    )
    .unwrap();
    let _server = Router::serve(dir.path(), &cfg, &store);
    let v = query_json(&cfg, &store, "m1", &[]).await;
    assert_eq!(v["candidates"][0]["channel"], "bad", "nothing known yet: priority order\n{v}");

    let (code, out, err) = cli(&["test", "bad", "good", "--config", s(&cfg), "--store", s(&store)]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("connect"), "{out}");
    // The report reached the server before `router test` returned: no wait needed.
    let v = query_json(&cfg, &store, "m1", &[]).await;
    let cands: Vec<&str> = v["candidates"].as_array().unwrap().iter().map(|c| c["channel"].as_str().unwrap()).collect();
    assert_eq!(cands, ["good"], "{v}");
    let ex = &v["excluded"][0];
    assert_eq!(ex["channel"], "bad");
    assert!(ex["reason"].as_str().unwrap().contains("endpoint cooling down (router test: connect"), "{v}");
    assert!(ex["cooling_for_ms"].as_u64().unwrap() > 0);
    // The latency the test measured is the server's now.
    assert!(v["candidates"][0]["latency_ms"].as_f64().is_some(), "{v}");
}

/// An upstream whose model list takes 400 ms (slowness is what is measured here, not a way to wait for something).
async fn slow_upstream() -> Mock {
    Mock::start(|r, _| {
        if r.method == "GET" {
            Reply::After(Duration::from_millis(400), Box::new(Reply::Json(200, json!({"data": [{"id": "m1"}]}))))
        } else {
            Reply::Json(200, chat_json("m1", "slow", 5, 1))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fastest_measures_unknown_endpoints_and_routes_to_the_quicker_one() {
    let slow = slow_upstream().await;
    let fast = openai_mock(Arc::new(std::sync::Mutex::new(vec!["m1"]))).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, store) = paths(dir.path());
    std::fs::write(
        &cfg,
        format!(
            "routing:\n  strategy: fastest\nchannels:\n  - name: slow\n    base_url: {}\n    keys: [{KEY_A}]\n    models: [m1]\n  - name: fast\n    base_url: {}\n    keys: [{KEY_B}]\n    models: [m1]\n",
            slow.openai_url(),
            fast.openai_url()
        ),
    )
    .unwrap();
    let server = Router::serve(dir.path(), &cfg, &store);
    let resp = chat(server.addr, "m1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-router-channel").and_then(|v| v.to_str().ok()), Some("fast"));
    assert_eq!(slow.all().iter().filter(|r| r.method != "GET").count(), 0, "no chat reached the slow upstream");
    // Both endpoints were fast-tested by the server: `tags query` through it shows the measured latencies.
    let v = query_json(&cfg, &store, "m1", &[]).await;
    let c = v["candidates"].as_array().unwrap();
    assert_eq!(c[0]["channel"], "fast", "{v}");
    assert_eq!(c[1]["channel"], "slow");
    assert!(c[1]["latency_ms"].as_f64().unwrap() >= 300.0, "{v}");
    assert!(c[0]["latency_ms"].as_f64().unwrap() < c[1]["latency_ms"].as_f64().unwrap());
}
