//! Metrics and alerts end to end: a real Prometheus scrapes the real router while requests flow, and its numbers
//! equal what the upstream answered and billed; a webhook receiver gets exactly one alert per condition.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// A Prometheus server of our own on loopback, stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second, or None (with the reason printed) when it is absent.
    async fn start(target: &str) -> Option<Prometheus> {
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            assert!(
                std::env::var_os("ROUTER_REQUIRE_PROMETHEUS").is_none(),
                "no `{bin}` binary, and ROUTER_REQUIRE_PROMETHEUS is set (scripts/test.sh installs it)"
            );
            println!("SKIPPED: no `{bin}` binary (scripts/test.sh installs Debian's `prometheus` package)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        write(
            &cfg,
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: router\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        );
        let port = dead_port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("log")).unwrap()))
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port, _dir: dir };
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        let mut up = false;
        for _ in 0..300 {
            if client().get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "prometheus did not become ready: {}", std::fs::read_to_string(p._dir.path().join("log")).unwrap());
        Some(p)
    }

    /// The value of an instant query that returns one sample (None while it returns none).
    async fn value(&self, query: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let v: Value = client().get(url).query(&[("query", query)]).send().await.ok()?.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls `query` until it equals `want` (or 30 s pass); returns the last value.
    async fn until(&self, query: &str, want: f64) -> Option<f64> {
        let mut last = None;
        for _ in 0..150 {
            last = self.value(query).await;
            if last.is_some_and(|v| (v - want).abs() < 1e-9) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_counters_equal_to_what_the_upstream_billed() {
    // Every answer bills a different number of tokens; the mock keeps the truth.
    let billed_in = Arc::new(AtomicU64::new(0));
    let billed_out = Arc::new(AtomicU64::new(0));
    let (bi, bo) = (billed_in.clone(), billed_out.clone());
    let up = Mock::start(move |req, n| {
        let n = n as u64;
        if req.json()["stream"] == true {
            // chat_sse bills 11 input tokens and one output token per word.
            bi.fetch_add(11, Ordering::SeqCst);
            bo.fetch_add(3, Ordering::SeqCst);
            Reply::Sse(chat_sse("gpt-4o", &["a", "b", "c"], true))
        } else {
            bi.fetch_add(10 + n, Ordering::SeqCst);
            bo.fetch_add(1 + n % 7, Ordering::SeqCst);
            Reply::Json(200, chat_json("gpt-4o", "ok", 10 + n, 1 + n % 7))
        }
    })
    .await;
    let config = format!(
        "channels:\n  - name: main\n    base_url: {}\n    keys: [sk-metrics-upstream-0001]\n    models: [gpt-4o]\n    pricing:\n      gpt-4o: {{input: 1000, output: 2000}}\n",
        up.openai_url()
    );
    let router = Router::start(&config);
    let Some(prom) = Prometheus::start(&router.addr.to_string()).await else { return };
    // Requests flow while Prometheus scrapes: four rounds of twelve, streamed and not, a second apart.
    let mut sent = 0u64;
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let url = router.url("/v1/chat/completions");
            let stream = (round + i) % 3 == 0;
            tasks.push(tokio::spawn(async move {
                let r = client().post(url).json(&chat("gpt-4o", stream)).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        sent += 12;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // One request the router refuses itself (unknown model): counted, never upstream.
    let r = client().post(router.url("/v1/chat/completions")).json(&chat("nope", false)).send().await.unwrap();
    assert_eq!(r.status(), 404);

    assert_eq!(up.count() as u64, sent);
    let (input, output) = (billed_in.load(Ordering::SeqCst), billed_out.load(Ordering::SeqCst));
    let ok = r#"router_requests_total{channel="main",model="gpt-4o",status_class="2xx",outcome="ok"}"#;
    assert_eq!(prom.until(&format!("sum({ok})"), sent as f64).await, Some(sent as f64));
    let q = r#"sum(router_tokens_total{kind="input"})"#;
    assert_eq!(prom.until(q, input as f64).await, Some(input as f64));
    let q = r#"sum(router_tokens_total{kind="output"})"#;
    assert_eq!(prom.until(q, output as f64).await, Some(output as f64));
    let cost = (input * 1000 + output * 2000) as f64 / 1e6;
    let got = prom.until("sum(router_cost_usd_total)", cost).await.unwrap();
    assert!((got - cost).abs() < 1e-6, "cost {got} != {cost}");
    let q = r#"sum(router_requests_total{outcome="no_route",status_class="4xx"})"#;
    assert_eq!(prom.until(q, 1.0).await, Some(1.0));
    let q = r#"sum(router_upstream_attempts_total{channel="main",class="ok"})"#;
    assert_eq!(prom.until(q, sent as f64).await, Some(sent as f64));
    let q = r#"sum(router_request_duration_seconds_count{channel="main"})"#;
    assert_eq!(prom.until(q, sent as f64).await, Some(sent as f64));
    assert_eq!(prom.until("router_store_batch_seconds_count > bool 0", 1.0).await, Some(1.0));
    assert_eq!(prom.until("router_requests_in_flight", 0.0).await, Some(0.0));
    assert_eq!(prom.until("router_streams_in_flight", 0.0).await, Some(0.0));
    // Every panel of the Grafana dashboard in contrib/ is a query this Prometheus accepts.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$__range", "1h");
            let url = format!("http://127.0.0.1:{}/api/v1/query", prom.port);
            let v: Value = client().get(url).query(&[("query", &expr)]).send().await.unwrap().json().await.unwrap();
            assert_eq!(v["status"], "success", "{}: {expr}: {v}", panel["title"]);
        }
    }
    // The router's own records agree.
    let records = router.records();
    assert_eq!(records.len() as u64, sent + 1);
    let rec_in: u64 = records.iter().map(|r| r["tokens"]["input"].as_u64().unwrap_or(0)).sum();
    assert_eq!(rec_in, input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_apart_and_the_proxy_port_asks_for_a_key() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let port = dead_port();
    let config = format!(
        "server:\n  metrics_listen: 127.0.0.1:{port}\n  keys:\n    - {{name: team, key: sk-team}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-metrics-upstream-0002]\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    let router = Router::start(&config);
    let r = client()
        .post(router.url("/v1/chat/completions"))
        .bearer_auth("sk-team")
        .json(&chat("gpt-4o", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut text = String::new();
    let want = r#"router_requests_total{channel="main",endpoint="default",model="gpt-4o",key="team",status_class="2xx",outcome="ok"} 1"#;
    for _ in 0..100 {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        text = r.text().await.unwrap();
        if text.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.contains(want), "{text}");
    assert!(text.contains(r#"router_tokens_total{channel="main",model="gpt-4o",key="team",kind="output"} 5"#));
    assert!(!text.contains("sk-"), "no key material in the exposition");
    // Not on the proxy port when it has its own listener.
    let r = client().get(router.url("/metrics")).bearer_auth("sk-team").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(router.stdout().contains(&format!("metrics: http://127.0.0.1:{port}/metrics")));

    // Without metrics_listen: on the proxy port, behind the gateway keys.
    let config = format!(
        "server:\n  keys:\n    - {{name: team, key: sk-team}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-metrics-upstream-0002]\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    let router = Router::start(&config);
    assert_eq!(client().get(router.url("/metrics")).send().await.unwrap().status(), 401);
    let r = client().get(router.url("/metrics")).bearer_auth("sk-team").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE router_requests_in_flight gauge"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metrics_listen_is_a_clear_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, "server:\n  metrics_listen: nowhere\n");
    let (code, _, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("server.metrics_listen") && err.contains("`nowhere` is not an address"), "{err}");
    write(&cfg, "alerts:\n  webhooks:\n    - url: ftp://hook-secret@example\n");
    let (code, _, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("alerts.webhooks[0].url") && !err.contains("hook-secret"), "{err}");
}

/// Alerts received, as (path, body).
fn received(hook: &Mock) -> Vec<(String, Value)> {
    hook.all().iter().map(|r| (r.uri.clone(), r.json())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_condition_reaches_each_webhook_exactly_once() {
    let hook = Mock::start(|_, _| Reply::Json(200, json!({"ok": true}))).await;
    let good = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 10, 10))).await;
    let broken = Mock::start(|_, _| Reply::Json(500, json!({"error": {"message": "down"}}))).await;
    let config = format!(
        concat!(
            "server:\n  keys:\n    - {{name: team, key: sk-team, budget: 0.10, per: day}}\n",
            "routing:\n  cooldown: {{base: 0s}}\n",
            "alerts:\n  window: 10m\n  cooling_times: 2\n  budget_percent: 40\n  webhooks:\n",
            "    - {{url: 'http://{hook}/json'}}\n    - {{url: 'http://{hook}/slack', format: slack}}\n",
            "channels:\n  - name: main\n    base_url: {good}\n    keys: [sk-alerts-upstream-0001]\n",
            "    models: [gpt-4o]\n    pricing:\n      gpt-4o: {{input: 500, output: 500}}\n",
            "  - name: down\n    base_url: {broken}\n    keys: [sk-alerts-upstream-0002]\n    models: [broken, marker]\n",
        ),
        hook = hook.addr,
        good = good.openai_url(),
        broken = broken.openai_url(),
    );
    let router = Router::start(&config);
    let post = |model: &'static str| {
        let url = router.url("/v1/chat/completions");
        async move { client().post(url).bearer_auth("sk-team").json(&chat(model, false)).send().await.unwrap().status() }
    };
    // $0.01 a request: the fourth reaches 40% of $0.10; the fifth stays above it.
    for _ in 0..5 {
        assert_eq!(post("gpt-4o").await, 200);
    }
    // Every candidate of `broken` fails, three times; its endpoint cools each time (cooling_times: 2).
    for _ in 0..3 {
        assert_eq!(post("broken").await, 502);
    }
    // A last, different condition: once it has arrived at both targets, everything before it has too.
    assert_eq!(post("marker").await, 502);
    let arrived = eventually(Duration::from_secs(20), || {
        received(&hook).iter().filter(|(_, b)| b.to_string().contains("marker")).count() == 2
    })
    .await;
    assert!(arrived, "{:#?}\n{}", received(&hook), router.stderr());
    let got = received(&hook);
    let json: Vec<&Value> = got.iter().filter(|(p, _)| p == "/json").map(|(_, b)| b).collect();
    let mut kinds: Vec<String> = json.iter().map(|b| format!("{}:{}", b["alert"], b["labels"])).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            r#""all_failed":{"model":"broken"}"#,
            r#""all_failed":{"model":"marker"}"#,
            r#""budget":{"key":"team","period":"day"}"#,
            r#""cooling":{"endpoint":"down/default"}"#,
        ],
        "{json:#?}"
    );
    let budget = json.iter().find(|b| b["alert"] == "budget").unwrap();
    assert!(budget["summary"].as_str().unwrap().contains("of its $0.10 budget per day"), "{budget}");
    let slack: Vec<&Value> = got.iter().filter(|(p, _)| p == "/slack").map(|(_, b)| b).collect();
    assert_eq!(slack.len(), 4, "{slack:#?}");
    assert!(slack.iter().all(|b| b["text"].as_str().unwrap().contains("[router]")));
    assert!(!got.iter().any(|(_, b)| b.to_string().contains("sk-")), "no key material in alerts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_test_sends_a_sample_to_each_target_and_names_the_one_that_failed() {
    let hook = Mock::start(|r, _| {
        if r.uri == "/refuse" { Reply::Json(403, json!({})) } else { Reply::Json(200, json!({"ok": true})) }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(
        &cfg,
        &format!(
            "alerts:\n  attempts: 2\n  timeout: 2s\n  webhooks:\n    - {{url: 'http://{0}/json', name: ops}}\n    - {{url: 'http://{0}/slack?token=hook-secret', format: slack}}\n    - {{url: 'http://{0}/refuse', name: refusing}}\n",
            hook.addr
        ),
    );
    let (code, out, err) = run_cli(&["alerts", "test", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ok      ops"), "{out}");
    assert!(out.contains("ok      127.0.0.1"), "{out}");
    assert!(out.contains("failed  refusing: answered HTTP 403"), "{out}");
    assert!(!out.contains("hook-secret") && !err.contains("hook-secret"));
    let got = received(&hook);
    let json = got.iter().find(|(p, _)| p == "/json").unwrap();
    assert_eq!(json.1["alert"], "test");
    let slack = got.iter().find(|(p, _)| p.starts_with("/slack")).unwrap();
    assert!(slack.1["text"].as_str().unwrap().contains("test alert"));
    assert_eq!(got.iter().filter(|(p, _)| p == "/refuse").count(), 2, "retried up to `attempts`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_counts_nothing_and_serves_no_metrics() {
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "server:\n  metrics: false\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-metrics-upstream-0003]\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    let router = Router::start(&config);
    let r = client().post(router.url("/v1/chat/completions")).json(&chat("gpt-4o", false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(router.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("server.metrics: false"));
    assert!(router.stdout().contains("metrics: off"));
}
