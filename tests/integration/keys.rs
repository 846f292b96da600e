//! Team gateway keys end to end: `router keys` against the store and a running server, and their limits and
//! budgets enforced by the real binary against mock upstreams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const UPSTREAM_KEY: &str = "sk-upstream-keys-test-0001";

/// Feeds one streamed upstream answer.
type StreamFeed = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// One OpenAI channel at `url` serving `gpt-4o`, priced so that 20 tokens cost $0.01; `keys` under server.
fn config(url: &str, keys: &str) -> String {
    format!(
        "server:\n  keys:\n{keys}channels:\n  - name: main\n    base_url: {url}\n    keys: [{UPSTREAM_KEY}]\n    models: [gpt-4o]\n    pricing:\n      gpt-4o: {{input: 500, output: 500}}\n"
    )
}

async fn post(router: &Router, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client().post(router.url(path)).header("authorization", format!("Bearer {key}")).json(body).send().await.unwrap()
}

fn cli(router: &Router, args: &[&str]) -> (i32, String, String) {
    let cfg = router.config_path();
    let store = router.store_path();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", cfg.to_str().unwrap(), "--store", store.to_str().unwrap()]);
    run_cli(&all, &[])
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_refuses_the_sixth_request_in_both_shapes_and_admits_again_after_retry_after() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let keys = "    - {name: five, key: sk-five, rpm: 5}\n    - {name: sixty, key: sk-sixty, rpm: 60}\n";
    let router = Router::start(&config(&up.openai_url(), keys));
    for i in 0..5 {
        let r = post(&router, "/v1/chat/completions", "sk-five", &chat("gpt-4o", false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "5");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), (4 - i).to_string());
    }
    let r = post(&router, "/v1/chat/completions", "sk-five", &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((11..=12).contains(&retry), "one slot of five per minute frees in 12 s: {retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("5 requests per minute"), "{body}");
    // The same key from an Anthropic client: its own error shape.
    let r = client()
        .post(router.url("/v1/messages"))
        .header("x-api-key", "sk-five")
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "retry-after").is_empty());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(up.count(), 5, "refused requests never reach the upstream");

    // 60 a minute (one more each second): once the burst is used, the next waits one second, then is admitted.
    let mut sent = 0;
    let r = loop {
        let r = post(&router, "/v1/chat/completions", "sk-sixty", &chat("gpt-4o", false)).await;
        sent += 1;
        if r.status() != 200 || sent > 120 {
            break r;
        }
    };
    assert!(sent > 60, "the whole burst of 60 was admitted first: {sent}");
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert_eq!(retry, 1);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(post(&router, "/v1/chat/completions", "sk-sixty", &chat("gpt-4o", false)).await.status(), 200);

    // Refusals are recorded as `limited`, under their key.
    assert!(
        eventually(Duration::from_secs(10), || {
            router.records().iter().filter(|r| r["outcome"] == "limited").count() == 3
        })
        .await
    );
    let limited: Vec<Value> = router.records().into_iter().filter(|r| r["outcome"] == "limited").collect();
    assert!(limited.iter().all(|r| r["status"] == 429 && r["attempts"].as_array().unwrap().is_empty()));
    assert_eq!(limited.iter().filter(|r| r["gateway_key"] == "five").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_charges_the_real_tokens_of_streams() {
    // Each stream reports 11 prompt + 3 completion tokens.
    let up = Mock::start(|_, _| Reply::Sse(chat_sse("gpt-4o", &["a", "b", "c"], true))).await;
    let router = Router::start(&config(&up.openai_url(), "    - {name: t, key: sk-t, tpm: 30}\n"));
    for remaining in ["30", "16", "2"] {
        let r = post(&router, "/v1/chat/completions", "sk-t", &chat("gpt-4o", true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "30");
        assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), remaining);
        let text = r.text().await.unwrap();
        assert!(text.contains("[DONE]"));
    }
    // 42 tokens charged against 30 a minute: no room until 12 tokens (+1) have drained, ~26 s.
    let r = post(&router, "/v1/chat/completions", "sk-t", &chat("gpt-4o", true)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((25..=27).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "0");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("30 tokens per minute"), "{body}");
    assert_eq!(up.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_counts_streams_until_they_end() {
    let senders: Arc<Mutex<Vec<StreamFeed>>> = Arc::default();
    let s2 = senders.clone();
    let up = Mock::start(move |_, _| {
        let (tx, rx) = mpsc::channel(16);
        s2.lock().unwrap().push(tx);
        Reply::Channel(rx)
    })
    .await;
    let router = Router::start(&config(&up.openai_url(), "    - {name: p, key: sk-p, max_parallel: 2}\n"));
    let first = post(&router, "/v1/chat/completions", "sk-p", &chat("gpt-4o", true)).await;
    let second = post(&router, "/v1/chat/completions", "sk-p", &chat("gpt-4o", true)).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = post(&router, "/v1/chat/completions", "sk-p", &chat("gpt-4o", true)).await;
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "retry-after"), "1");
    let body: Value = third.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("2 requests at the same time"), "{body}");
    // End the first stream; once the client has read it to the end, its slot is free.
    let tx = senders.lock().unwrap().remove(0);
    for ev in chat_sse("gpt-4o", &["x"], true) {
        tx.send(Ok(Bytes::from(ev))).await.unwrap();
    }
    drop(tx);
    assert!(first.text().await.unwrap().contains("[DONE]"));
    let fourth = post(&router, "/v1/chat/completions", "sk-p", &chat("gpt-4o", true)).await;
    assert_eq!(fourth.status(), 200);
    senders.lock().unwrap().clear();
    drop((second, fourth));
}

/// Streams that take a moment, so that many requests are in flight at once; 20 tokens each ($0.01).
async fn slow_priced_upstream() -> Mock {
    Mock::start(|_, _| {
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for ev in chat_sse("gpt-4o", &["a", "b", "c", "d", "e", "f", "g", "h", "i"], true) {
                if tx.send(Ok(Bytes::from(ev))).await.is_err() {
                    return;
                }
            }
        });
        Reply::Channel(rx)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_refuses_once_spent_overshoot_is_bounded_and_spend_matches_the_records() {
    let up = slow_priced_upstream().await;
    let keys = "    - {name: small, key: sk-small, budget: 0.03, per: day}\n    - {name: burst, key: sk-burst, budget: 0.05, per: total}\n";
    let router = Router::start(&config(&up.openai_url(), keys));
    for _ in 0..3 {
        let r = post(&router, "/v1/chat/completions", "sk-small", &chat("gpt-4o", true)).await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let r = post(&router, "/v1/chat/completions", "sk-small", &chat("gpt-4o", true)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-should-retry"), "false");
    assert!(header(&r, "retry-after").is_empty());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota", "as OpenAI says a quota is spent");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("$0.03 per day") && msg.contains("resets at"), "{msg}");

    // 20 at once against $0.05: every request admitted before the spend reached the budget is charged; the
    // overshoot is less than the cost of the requests in flight (20 x $0.01), and nothing is admitted after.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = router.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = client().post(url).bearer_auth("sk-burst").json(&chat("gpt-4o", true)).send().await.unwrap();
            let status = r.status().as_u16();
            r.text().await.unwrap();
            status
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            admitted += 1;
        }
    }
    assert!(admitted >= 5, "admitted until the budget was reached: {admitted}");
    let r = post(&router, "/v1/chat/completions", "sk-burst", &chat("gpt-4o", true)).await;
    assert_eq!(r.status(), 429);

    // Spend per key: the records, `router usage --group-by key` and `router keys list` agree to the cent.
    assert!(
        eventually(Duration::from_secs(10), || {
            router.records().iter().filter(|r| r["gateway_key"] == "burst").count() == 21
        })
        .await
    );
    let records = router.records();
    let sum = |key: &str| -> f64 {
        records.iter().filter(|r| r["gateway_key"] == key).filter_map(|r| r["cost_usd"].as_f64()).sum()
    };
    let burst = sum("burst");
    assert!((burst - admitted as f64 * 0.01).abs() < 1e-9, "{burst} for {admitted}");
    assert!((0.05..0.05 + 20.0 * 0.01).contains(&burst), "{burst}");
    assert_eq!(
        records.iter().filter(|r| r["gateway_key"] == "burst" && r["outcome"] == "budget").count(),
        21 - admitted
    );
    let (code, out, err) = cli(&router, &["usage", "--group-by", "key", "--json"]);
    assert_eq!(code, 0, "{err}");
    let usage: Value = serde_json::from_str(&out).unwrap();
    let (code, out, err) = cli(&router, &["keys", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    for key in ["small", "burst"] {
        let from_usage =
            usage["rows"].as_array().unwrap().iter().find(|r| r["key"] == key).unwrap()["cost_usd"].as_f64().unwrap();
        let from_list =
            list.as_array().unwrap().iter().find(|r| r["name"] == key).unwrap()["spent_usd"].as_f64().unwrap();
        assert_eq!(format!("{from_usage:.2}"), format!("{:.2}", sum(key)), "{key}");
        assert_eq!(format!("{from_list:.2}"), format!("{:.2}", sum(key)), "{key}");
    }
    assert!((sum("small") - 0.03).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_keys_created_rotated_disabled_and_revoked_while_serving_take_effect_on_the_next_request() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let keys = "    - {name: ci, key: sk-ci-yaml}\n    - {name: old, key: sk-old, expires: 2020-01-01}\n";
    let router = Router::start(&config(&up.openai_url(), keys));
    let ok = |r: &reqwest::Response| r.status().as_u16();

    let (code, out, err) = cli(&router, &["keys", "create", "team", "--rpm", "100", "--note", "the team", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk-router-"));
    assert!(created["hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &secret, &chat("gpt-4o", false)).await), 200);
    // YAML keys work beside store keys; an expired one does not.
    assert_eq!(ok(&post(&router, "/v1/chat/completions", "sk-ci-yaml", &chat("gpt-4o", false)).await), 200);
    let r = post(&router, "/v1/chat/completions", "sk-old", &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("expired"));

    let (code, out, err) = cli(&router, &["keys", "rotate", "team", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let new_secret = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &secret, &chat("gpt-4o", false)).await), 401);
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await), 200);

    assert_eq!(cli(&router, &["keys", "disable", "team"]).0, 0);
    let r = post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("disabled"));
    assert_eq!(cli(&router, &["keys", "enable", "team"]).0, 0);
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await), 200);
    // An update applies at once too.
    assert_eq!(cli(&router, &["keys", "update", "team", "--rpm", "1"]).0, 0);
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await), 200);
    assert_eq!(ok(&post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await), 429);

    let (code, _, err) = cli(&router, &["keys", "revoke", "team"]);
    assert_eq!(code, 1, "revoke asks first: {err}");
    assert!(err.contains("--yes"));
    assert_eq!(cli(&router, &["keys", "revoke", "team", "--yes"]).0, 0);
    let r = post(&router, "/v1/chat/completions", &new_secret, &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("revoked"));
    assert_eq!(cli(&router, &["keys", "enable", "team"]).0, 1, "a revoked key stays revoked");

    // History stays with the name across rotation; the list shows both kinds of keys.
    let list_json = || {
        let (code, out, err) = cli(&router, &["keys", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        (serde_json::from_str::<Vec<Value>>(&out).unwrap(), out)
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            list_json().0.iter().any(|k| k["name"] == "team" && k["requests_today"] == 5)
        })
        .await
    );
    let (list, out) = list_json();
    let team = list.iter().find(|k| k["name"] == "team").unwrap();
    assert_eq!((team["origin"].as_str(), team["state"].as_str()), (Some("store"), Some("revoked")));
    assert_eq!(team["requests_today"], 5);
    assert_eq!(team["note"], "the team");
    let old = list.iter().find(|k| k["name"] == "old").unwrap();
    assert_eq!((old["origin"].as_str(), old["state"].as_str()), (Some("yaml"), Some("expired")));
    // Neither the secret nor its hash's source is anywhere in what the server wrote.
    for text in [router.stdout(), router.stderr(), out] {
        assert!(!text.contains(&new_secret) && !text.contains(&secret));
    }
    let (code, out, _) = cli(&router, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("team") && out.contains("revoked") && out.contains(&new_secret[..14]), "{out}");
}

#[test]
fn bad_input_exits_1_with_a_hint_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.redb");
    let cfg = dir.path().join("router.yaml");
    write(&cfg, "server:\n  keys:\n    - {name: ci, key: sk-ci}\n");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--store", store.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
        run_cli(&all, &[])
    };
    for args in [
        &["keys", "create", "a", "--rpm", "0"][..],
        &["keys", "create", "a", "--rpm", "-5"],
        &["keys", "create", "a", "--tpm", "many"],
        &["keys", "create", "a", "--max-parallel", "0"],
        &["keys", "create", "a", "--budget", "-1", "--per", "day"],
        &["keys", "create", "a", "--budget", "5"],
        &["keys", "create", "a", "--budget", "5", "--per", "fortnight"],
        &["keys", "create", "a", "--expires", "3x"],
        &["keys", "create", "a", "--expires", "2001-01-01"],
        &["keys", "create", "bad name"],
        &["keys", "create", "ci"],
        &["keys", "show", "nope"],
        &["keys", "update", "nope", "--rpm", "5"],
        &["keys", "disable", "nope"],
        &["keys", "rotate", "ci"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.contains("hint:"), "{args:?}: {err}");
    }
    let (code, out, err) = run(&["keys", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1, "only the configuration's key; nothing was written: {out}");
    // A good one works without a server, and the name is then taken.
    let (code, out, err) = run(&["keys", "create", "a", "--budget", "5", "--per", "month", "--expires", "30d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("secret: sk-router-") && err.contains("not stored"));
    assert_eq!(run(&["keys", "create", "a"]).0, 1);
    let (code, out, _) = run(&["keys", "show", "a", "--json"]);
    assert_eq!(code, 0);
    let a: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["limits"]["budget"], json!({"usd": 5.0, "per": "month"}));
    assert!(a["expires_ms"].as_i64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_key_limits_follow_a_config_reload() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let router = Router::start(&config(&up.openai_url(), "    - {name: y, key: sk-y, rpm: 1}\n"));
    assert_eq!(post(&router, "/v1/chat/completions", "sk-y", &chat("gpt-4o", false)).await.status(), 200);
    assert_eq!(post(&router, "/v1/chat/completions", "sk-y", &chat("gpt-4o", false)).await.status(), 429);
    write(&router.config_path(), &config(&up.openai_url(), "    - {name: y, key: sk-y, rpm: 100}\n"));
    router.signal("HUP");
    let mut admitted = false;
    for _ in 0..250 {
        let r = post(&router, "/v1/chat/completions", "sk-y", &chat("gpt-4o", false)).await;
        if r.status() == 200 {
            assert_eq!(header(&r, "x-ratelimit-limit-requests"), "100");
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the new limit applies after the reload: {}", router.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_keys_at_once_each_get_what_their_limits_allow() {
    let up = slow_priced_upstream().await;
    let keys = "    - {name: rpm10, key: sk-rpm10, rpm: 10}\n    - {name: par3, key: sk-par3, max_parallel: 3}\n    - {name: cents, key: sk-cents, budget: 0.04, per: month}\n    - {name: free, key: sk-free}\n";
    let router = Router::start(&config(&up.openai_url(), keys));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for key in ["sk-rpm10", "sk-par3", "sk-cents", "sk-free"] {
        for _ in 0..15 {
            let url = router.url("/v1/chat/completions");
            tasks.push(tokio::spawn(async move {
                let r = client().post(url).bearer_auth(key).json(&chat("gpt-4o", true)).send().await.unwrap();
                let status = r.status().as_u16();
                r.text().await.unwrap();
                (key, status)
            }));
        }
    }
    let mut admitted = std::collections::HashMap::new();
    for t in tasks {
        let (key, status) = t.await.unwrap();
        assert!(status == 200 || status == 429, "{key}: {status}");
        *admitted.entry(key).or_insert(0) += u32::from(status == 200);
    }
    // rpm 10: the burst of 10 (one more every 6 s of the run).
    let refill = (started.elapsed().as_secs() / 6) as u32;
    assert!((10..=10 + refill).contains(&admitted["sk-rpm10"]), "{admitted:?}");
    // 3 at a time, each stream ~0.3 s: at least the first 3, never all 15 at once.
    assert!((3..15).contains(&admitted["sk-par3"]), "{admitted:?}");
    assert!(admitted["sk-cents"] >= 4, "{admitted:?}");
    assert_eq!(admitted["sk-free"], 15);
    // Billed: every admitted request has its cost in the records; refusals cost nothing and reached no upstream.
    assert!(eventually(Duration::from_secs(10), || router.records().len() == 60).await, "{}", router.records().len());
    let records = router.records();
    for (name, key) in [("rpm10", "sk-rpm10"), ("par3", "sk-par3"), ("cents", "sk-cents"), ("free", "sk-free")] {
        let mine: Vec<&Value> = records.iter().filter(|r| r["gateway_key"] == name).collect();
        let ok = mine.iter().filter(|r| r["outcome"] == "ok").count() as u32;
        let cost: f64 = mine.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
        assert_eq!(ok, admitted[key], "{name}");
        assert!((cost - f64::from(ok) * 0.01).abs() < 1e-9, "{name}: {cost}");
        let refused = mine.iter().filter(|r| r["status"] == 429).count() as u32;
        assert_eq!(ok + refused, 15, "{name}");
    }
    let total_admitted: u32 = admitted.values().sum();
    assert_eq!(up.count() as u32, total_admitted, "refusals never reach the upstream");
}
