//! Scale-out: three `router serve` instances sharing one Redis (`shared_state.redis`) act as one gateway —
//! cooldowns learned by one are honoured by all, a key's rpm and max_parallel hold across all, and Redis dying
//! mid-load fails no request. Each test runs its own `redis-server` on a free loopback port (never a shared one).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use bytes::Bytes;
use serde_json::{Value, json};

/// A private `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let r = Redis { child, port };
        let up = eventually(Duration::from_secs(10), || r.conn().is_some()).await;
        assert!(up, "redis-server on port {port} did not answer");
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn conn(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(self.url()).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(router: &Router, key: &str) -> reqwest::Response {
    client()
        .post(router.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .json(&chat())
        .send()
        .await
        .unwrap()
}

/// Three instances of `config` (each its own store).
fn three(config: &str) -> Vec<Router> {
    (0..3).map(|_| Router::start(config)).collect()
}

async fn health(router: &Router) -> Value {
    client().get(router.url("/health")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_learned_through_one_instance_is_honoured_by_the_others() {
    let redis = Redis::start().await;
    let bad = Mock::start(|_, _| Reply::Json(500, json!({"error": {"message": "boom"}}))).await;
    let good = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "shared_state:\n  redis: {}\nrouting:\n  cooldown: {{base: 60s}}\nchannels:\n  - name: bad\n    base_url: {}\n    keys: [sk-bad]\n    models: [gpt-4o]\n    priority: 1\n  - name: good\n    base_url: {}\n    keys: [sk-good]\n    models: [gpt-4o]\n    priority: 2\n",
        redis.url(),
        bad.openai_url(),
        good.openai_url()
    );
    let routers = three(&config);
    for r in &routers {
        assert_eq!(health(r).await["shared_state"], "redis");
    }
    // A learns that `bad` fails.
    assert_eq!(post(&routers[0], "sk-none").await.status(), 200);
    assert_eq!(bad.count(), 1);
    // The cooldown reaches Redis (and, by the same publish, every instance).
    let mut c = redis.conn().unwrap();
    let shared = eventually(Duration::from_secs(5), || {
        redis::cmd("KEYS").arg("router:cool:*").query::<Vec<String>>(&mut c).is_ok_and(|k| !k.is_empty())
    })
    .await;
    assert!(shared, "the cooldown was written to Redis");
    for i in 0..12 {
        let r = &routers[i % 3];
        assert_eq!(post(r, "sk-none").await.status(), 200, "request {i} through instance {}", i % 3);
    }
    assert_eq!(bad.count(), 1, "the failing upstream saw one request in its cooldown window across three instances");
    assert_eq!(good.count(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_and_max_parallel_hold_across_three_instances() {
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: team, key: sk-team, rpm: 60}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.url(),
        up.openai_url()
    );
    let routers = three(&config);
    let started = Instant::now();
    let sends = (0..90).map(|i| {
        let r = &routers[i % 3];
        async move { post(r, "sk-team").await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let elapsed = started.elapsed();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, 90, "every request is admitted or refused: {statuses:?}");
    // The window refills one request a second; the burst is the 60.
    let refill = elapsed.as_secs() as usize + 1;
    eprintln!(
        "rpm 60 over 3 instances: {admitted} of 90 admitted in {:.2} s (bound 60 + {refill} refilled), overshoot {}",
        elapsed.as_secs_f64(),
        admitted.saturating_sub(60)
    );
    assert!(admitted >= 60, "the burst of 60 is admitted: {admitted}");
    assert!(admitted <= 60 + refill, "at most 60 + refill admitted across instances: {admitted}");
    assert_eq!(up.count(), admitted, "refused requests never reach the upstream");

    // max_parallel 1 across instances: a stream held open on A refuses B; once it ends, C is admitted.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let slow = Mock::start(move |_, _| match rx.lock().unwrap().take() {
        Some(rx) => Reply::Channel(rx),
        None => Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5)),
    })
    .await;
    let config = format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: one, key: sk-one, max_parallel: 1}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.url(),
        slow.openai_url()
    );
    let routers = three(&config);
    let held = {
        let r = client()
            .post(routers[0].url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-one")
            .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}));
        tokio::spawn(async move { r.send().await.unwrap().text().await.unwrap() })
    };
    assert!(eventually(Duration::from_secs(5), || slow.count() == 1).await, "the stream reached the upstream");
    let r = post(&routers[1], "sk-one").await;
    assert_eq!(r.status(), 429, "the slot is taken on another instance");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("1 request"), "{body}");
    for e in chat_sse("gpt-4o", &["a", "b"], true) {
        tx.send(Ok(Bytes::from(e))).await.unwrap();
    }
    drop(tx);
    assert!(held.await.unwrap().contains("[DONE]"));
    // The slot is freed in Redis just after the stream ends.
    let mut admitted = false;
    for _ in 0..50 {
        if post(&routers[2], "sk-one").await.status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the freed slot admits a request on a third instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_fails_no_request_and_health_says_degraded_until_it_returns() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: team, key: sk-team, rpm: 100000, max_parallel: 100}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.url(),
        up.openai_url()
    );
    let routers = three(&config);
    let load = |n: usize| {
        let routers = &routers;
        async move {
            let sends = (0..n).map(|i| async move { post(&routers[i % 3], "sk-team").await.status().as_u16() });
            futures_util::future::join_all(sends).await
        }
    };
    let (before, after) = tokio::join!(load(60), async {
        redis.kill();
        load(60).await
    });
    let failed: Vec<_> = before.iter().chain(&after).filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "no request fails because Redis died: {failed:?}");
    let more = load(30).await;
    assert!(more.iter().all(|s| *s == 200), "{more:?}");
    for r in &routers {
        let h = health(r).await;
        assert_eq!(h["status"], "degraded", "{h}");
        assert_eq!(h["shared_state"], "redis unreachable", "{h}");
        let log = r.stderr();
        assert_eq!(log.matches("Redis unreachable").count(), 1, "logged once:\n{log}");
    }
    // Redis returns on the same port: the instances use it again.
    let _redis = Redis::start_on(port).await;
    for r in &routers {
        let mut back = false;
        for _ in 0..100 {
            let _ = post(r, "sk-team").await;
            if health(r).await["status"] == "ok" {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "{}", r.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_session_keeps_its_upstream_key_across_instances() {
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    // Four equal channels in random order: without shared bindings a session would wander between them.
    let channels: String = (0..4)
        .map(|i| {
            format!("  - name: c{i}\n    base_url: {}\n    keys: [sk-up-{i}]\n    models: [gpt-4o]\n", up.openai_url())
        })
        .collect();
    let config =
        format!("shared_state:\n  redis: {}\nrouting:\n  strategy: weighted\nchannels:\n{channels}", redis.url());
    let routers = three(&config);
    let turn = |r: &Router, conv: &str, n: usize| {
        let body = json!({"model": "gpt-4o", "prompt_cache_key": conv,
            "messages": [{"role": "user", "content": format!("turn {n}")}]});
        client().post(r.url("/v1/chat/completions")).json(&body).send()
    };
    // Several conversations; each turn goes to the next instance the moment the previous one answered (no
    // waiting for pub/sub: the binding is in Redis before the first answer leaves).
    for c in 0..4 {
        let conv = format!("conv-{c}");
        let start = c % 3;
        let first = turn(&routers[start], &conv, 0).await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["x-router-affinity"], "new", "{conv}");
        let key = up.last().header("authorization").unwrap();
        for n in 1..7 {
            let i = (start + n) % 3;
            let r = turn(&routers[i], &conv, n).await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-router-affinity"], "hit", "{conv} turn {n} through instance {i}");
            assert_eq!(up.last().header("authorization").unwrap(), key, "{conv} turn {n} kept its upstream key");
        }
    }
    let mut c = redis.conn().unwrap();
    let bound: Vec<String> = redis::cmd("KEYS").arg("router:aff:*").query(&mut c).unwrap();
    assert_eq!(bound.len(), 4, "one binding per conversation in Redis: {bound:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&bound[0]).query(&mut c).unwrap();
    assert!(ttl > 0, "a binding in Redis expires: {ttl}");
}

/// Not a check: prints the p50 / p99 of a key with `rpm` admitted in memory and through Redis (one instance,
/// sequential requests). `cargo test --test integration scaleout::added_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn added_latency_of_redis_admission() {
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let base = format!(
        "server:\n  keys:\n    - {{name: team, key: sk-team, rpm: 1000000, max_parallel: 1000}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    for (mode, config) in
        [("embedded", base.clone()), ("redis", format!("shared_state:\n  redis: {}\n{base}", redis.url()))]
    {
        let router = Router::start(&config);
        let mut ms = Vec::new();
        for i in 0..1200 {
            let t = Instant::now();
            assert_eq!(post(&router, "sk-team").await.status(), 200);
            if i >= 200 {
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ms.sort_by(f64::total_cmp);
        eprintln!(
            "{mode}: p50 {:.3} ms, p99 {:.3} ms over {} requests",
            ms[ms.len() / 2],
            ms[ms.len() * 99 / 100],
            ms.len()
        );
    }
}
