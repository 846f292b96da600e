//! The store end to end: the real `router serve` records usage per upstream token into its store; `router usage`
//! and `router requests` read it through the control socket while the server runs and directly after it stops,
//! with identical output; committed records survive kill -9; no key ever reaches the store file or any output.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::{Router, Upstream, eventually, run_cli};
use serde_json::Value;

const ALPHA: &str = "sk-alpha-SECRET-7f3a9c1e5b";
const BETA: &str = "sk-beta-SECRET-2d8e4f6a0c";
const FLAKY: &str = "sk-flaky-SECRET-9b1c3d5e7f";
const QUIET: &str = "sk-nousage-SECRET-4a6c8e0b2d";

fn config(dir: &Path, upstream: &Upstream) -> std::path::PathBuf {
    let base = upstream.base_url();
    let yaml = format!(
        r#"
routing:
  max_attempts: 4
channels:
  - name: main
    protocol: openai
    models: [gpt-test]
    pricing:
      gpt-test: {{input: 1.0, output: 2.0, cache_read: 0.5}}
    endpoints:
      - name: flaky
        base_url: {base}
        priority: 0
        keys: [{{name: flaky, key: {FLAKY}}}]
      - name: alpha
        base_url: {base}
        priority: 1
        keys: [{{name: alpha, key: {ALPHA}}}]
      - name: beta
        base_url: {base}
        priority: 1
        keys: [{{name: beta, key: {BETA}}}]
      - name: quiet
        base_url: {base}
        priority: 2
        failover_enabled: false
        keys: [{{name: quiet, key: {QUIET}}}]
"#
    );
    let p = dir.join("router.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

async fn send(server: &Router, stream: bool, pin: Option<&str>) -> u16 {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut req = client.post(server.url("/v1/chat/completions")).json(&serde_json::json!({
        "model": "gpt-test",
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }));
    if let Some(p) = pin {
        req = req.header("x-router-channel", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await.unwrap();
    status
}

fn requests_json(store: &Path) -> Vec<Value> {
    let (code, out, err) =
        run_cli(&["requests", "--json", "--limit", "10000", "--store", store.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "router requests failed: {err}");
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

/// fingerprint -> (names, input + cache_read, cache_read, output, requests)
fn per_token(usage_json: &str) -> HashMap<String, (Vec<String>, u64, u64, u64, u64)> {
    let v: Value = serde_json::from_str(usage_json).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let names = r["token_keys"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
            let n = |k: &str| r[k].as_u64().unwrap();
            (
                r["token"].as_str().unwrap().to_string(),
                (names, n("input") + n("cache_read"), n("cache_read"), n("output"), n("requests")),
            )
        })
        .collect()
}

fn fp(key: &str) -> String {
    router::usage::fingerprint(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_per_token_and_identical_via_socket_and_direct() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = config(dir.path(), &upstream);
    let store = dir.path().join("data/router.redb");
    let s = store.to_str().unwrap().to_string();
    let mut server = Router::serve(dir.path(), &cfg, &store);
    assert!(eventually(Duration::from_secs(10), || server.stdout().contains("store:")).await, "{}", server.stdout());

    // Unpinned requests first: the flaky endpoint fails over to alpha / beta. Then both tokens on purpose,
    // streaming and not.
    let mut sent = 0;
    for stream in [false, true] {
        assert_eq!(send(&server, stream, None).await, 200);
        sent += 1;
        for pin in ["main/alpha", "main/beta"] {
            for _ in 0..3 {
                assert_eq!(send(&server, stream, Some(pin)).await, 200);
                sent += 1;
            }
        }
    }
    // Through the control socket, while the server holds the store.
    assert!(
        eventually(Duration::from_secs(10), || requests_json(&store).len() == sent).await,
        "the records did not show up: {:?}",
        requests_json(&store).len()
    );
    let usage_args = ["usage", "--group-by", "token", "--json", "--store", &s];
    let (code, live, err) = run_cli(&usage_args, &[]);
    assert_eq!(code, 0, "{err}");
    let live_requests = run_cli(&["requests", "--json", "--limit", "100", "--store", &s], &[]);
    let table = run_cli(&["usage", "--group-by", "token", "--group-by", "endpoint", "--store", &s], &[]);
    assert_eq!(table.0, 0, "{}", table.2);
    assert!(table.1.contains("total") && table.1.contains("alpha"), "{}", table.1);
    // The socket exists while serving and only its owner may use it.
    let sock = dir.path().join("data/router.redb.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);

    // Exactly what the upstream billed each key.
    let billed = upstream.billed();
    let report = per_token(&live);
    for (key, name) in [(ALPHA, "alpha"), (BETA, "beta")] {
        let b = billed.get(key).copied().unwrap_or_default();
        let r = report.get(&fp(key)).cloned().unwrap_or_default();
        assert_eq!(r.0, vec![name.to_string()], "names seen for {name}");
        assert_eq!((r.1, r.2, r.3, r.4), (b.prompt, b.cached, b.completion, b.responses), "token {name}");
        assert!(b.responses >= 6);
    }
    // The flaky key billed nothing and is no token of any successful request.
    assert!(!report.contains_key(&fp(FLAKY)));
    // The failover is visible in the attempts of the first request.
    let recs = requests_json(&store);
    let first = recs.last().unwrap();
    let attempts = first["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["token_key"], "flaky");
    assert_eq!(attempts.len(), 2, "{first}");
    let (code, shown, err) = run_cli(&["requests", "show", &first["id"].as_str().unwrap()[..24], "--store", &s], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("main/flaky") && (shown.contains("server_error") || shown.contains("503")), "{shown}");

    let status = server.stop();
    assert!(status.success(), "{}", server.stderr());
    assert!(!sock.exists(), "the socket is removed on clean shutdown");

    // Directly, with the server gone: the same answers, byte for byte.
    let (code, direct, err) = run_cli(&usage_args, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(direct, live);
    let direct_requests = run_cli(&["requests", "--json", "--limit", "100", "--store", &s], &[]);
    assert_eq!(direct_requests, live_requests);
    let direct_table = run_cli(&["usage", "--group-by", "token", "--group-by", "endpoint", "--store", &s], &[]);
    assert_eq!(direct_table, table);

    // Secrets: no key bytes in the store file, the server's output, or any CLI output.
    let file = std::fs::read(&store).unwrap();
    let outputs = [
        live,
        direct,
        table.1,
        shown,
        live_requests.1,
        server.stdout(),
        server.stderr(),
        run_cli(&["usage", "--csv", "--group-by", "token", "--store", &s], &[]).1,
        run_cli(&["requests", "--store", &s], &[]).1,
    ];
    for key in [ALPHA, BETA, FLAKY, QUIET] {
        let needle = key.as_bytes();
        assert!(!file.windows(needle.len()).any(|w| w == needle), "{key} is in the store file");
        let secret_part = &key[key.find("SECRET").unwrap()..];
        assert!(!file.windows(secret_part.len()).any(|w| w == secret_part.as_bytes()));
        for o in &outputs {
            assert!(!o.contains(secret_part), "a key leaked into output:\n{o}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_survive_kill_9_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = config(dir.path(), &upstream);
    let store = dir.path().join("router.redb");
    let s = store.to_str().unwrap().to_string();
    let mut server = Router::serve(dir.path(), &cfg, &store);
    let n = 40;
    let mut tasks = Vec::new();
    let url = server.url("/v1/chat/completions");
    for i in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let body = serde_json::json!({"model": "gpt-test", "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": "hi"}]});
            let r = reqwest::Client::new()
                .post(url)
                .header("x-router-channel", if i % 3 == 0 { "main/beta" } else { "main/alpha" })
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || requests_json(&store).len() == n).await);
    server.kill9();
    // The stale socket is still there; the CLI notices nobody answers and opens the file itself.
    let recs = requests_json(&store);
    assert_eq!(recs.len(), n);
    let (code, out, err) = run_cli(&["usage", "--json", "--store", &s], &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let billed = upstream.billed();
    let completion: u64 = billed.values().map(|b| b.completion).sum();
    assert_eq!(v["totals"]["requests"], n as u64);
    assert_eq!(v["totals"]["output"], completion);
    // A new server takes over the store and replaces the stale socket.
    let mut again = Router::serve(dir.path(), &cfg, &store);
    assert_eq!(send(&again, false, Some("main/alpha")).await, 200);
    assert!(eventually(Duration::from_secs(10), || requests_json(&store).len() == n + 1).await);
    assert!(again.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = config(dir.path(), &upstream);
    let store = dir.path().join("router.redb");
    let _first = Router::serve(dir.path(), &cfg, &store);
    let err = Router::try_serve(dir.path(), &cfg, &store).err().expect("the second server must not start");
    assert!(err.contains("held by another process"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn a_foreign_file_is_a_clear_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "my notes, not a database\n").unwrap();
    let (code, out, err) = run_cli(&["usage", "--store", p.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not a router store") && err.contains("hint:"), "{err}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "my notes, not a database\n");
    let (code, _, err) = run_cli(&["requests", "--store", dir.path().join("missing.redb").to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no store at"), "{err}");
    let (code, _, err) = run_cli(&["usage", "--since", "last tuesday", "--store", p.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not a time"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upstream_usage_tokens_are_estimated_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = config(dir.path(), &upstream);
    let store = dir.path().join("router.redb");
    let mut server = Router::serve(dir.path(), &cfg, &store);
    assert_eq!(send(&server, false, Some("main/quiet")).await, 200);
    assert_eq!(send(&server, true, Some("main/quiet")).await, 200);
    assert!(eventually(Duration::from_secs(10), || requests_json(&store).len() == 2).await);
    for r in requests_json(&store) {
        assert_eq!(r["token_key"], "quiet");
        assert_eq!(r["usage_source"], "estimated", "{r}");
        let (input, output) = (r["tokens"]["input"].as_u64().unwrap(), r["tokens"]["output"].as_u64().unwrap());
        // "hi" is one token; the answers are "Hello" (1) and a ten-token sentence.
        assert!((1..=3).contains(&input), "{r}");
        assert!((1..=12).contains(&output), "{r}");
    }
    let s = store.to_str().unwrap();
    let (_, out, _) = run_cli(&["usage", "--json", "--store", s], &[]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["estimated_requests"], 2);
    assert!(server.stop().success());
}
