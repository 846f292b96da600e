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

/// Three instances of `config` (each its own store), each listening on `redis`' `router:events` (what one
/// publishes from then on reaches the others).
async fn three_on(redis: &Redis, config: &str) -> Vec<Router> {
    let mut c = redis.conn().unwrap();
    let mut subscribers = move || {
        let n: Vec<(String, i64)> = redis::cmd("PUBSUB").arg("NUMSUB").arg("router:events").query(&mut c).unwrap();
        n.first().map_or(0, |(_, n)| *n)
    };
    let before = subscribers();
    let routers: Vec<Router> = (0..3).map(|_| Router::start(config)).collect();
    let subscribed = eventually(Duration::from_secs(10), || subscribers() >= before + 3).await;
    assert!(subscribed, "the three instances subscribe to router:events");
    routers
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
    let routers = three_on(&redis, &config).await;
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
    let routers = three_on(&redis, &config).await;
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
    let (tx, slow) = held_stream_upstream(4).await;
    let routers = three_on(&redis, &one_slot_config(&redis, &slow)).await;
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
async fn a_parallel_slot_held_by_a_client_that_went_away_is_freed_across_instances() {
    let redis = Redis::start().await;
    let (tx, up) = held_stream_upstream(16).await;
    let routers = three_on(&redis, &one_slot_config(&redis, &up)).await;
    let req = client()
        .post(routers[0].url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-one")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}));
    let held = tokio::spawn(async move {
        let mut r = req.send().await.unwrap();
        // Read the first chunk, then hang up mid-stream.
        r.chunk().await.unwrap()
    });
    let first = chat_sse("gpt-4o", &["a"], false);
    tx.send(Ok(Bytes::from(first[0].clone()))).await.unwrap();
    assert!(held.await.unwrap().is_some(), "the stream started");
    assert_eq!(post(&routers[1], "sk-one").await.status(), 429, "the slot is held on A");
    // The client is gone; the next upstream chunk finds no one to take it and the request ends unsettled.
    let mut freed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = tx.try_send(Ok(Bytes::from(first[0].clone())));
        if post(&routers[1], "sk-one").await.status() == 200 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the slot of a client that went away is freed for the other instances");
    // Once the last request's slot is back (freed just after its answer), none is left taken.
    let mut c = redis.conn().unwrap();
    let empty = eventually(Duration::from_secs(5), || {
        redis::cmd("GET").arg("router:par:one").query::<i64>(&mut c).is_ok_and(|n| n == 0)
    })
    .await;
    assert!(empty, "no slot is left taken");
}

/// An upstream whose first request streams what the test sends on the returned channel (held open until the
/// sender is dropped); later requests get a whole answer at once. `cap` chunks may wait in the channel.
async fn held_stream_upstream(cap: usize) -> (tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, Mock) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    let rx = std::sync::Mutex::new(Some(rx));
    let up = Mock::start(move |_, _| match rx.lock().unwrap().take() {
        Some(rx) => Reply::Channel(rx),
        None => Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5)),
    })
    .await;
    (tx, up)
}

/// Instances on `redis` with one gateway key `sk-one` of `max_parallel: 1`, serving `gpt-4o` from `up`.
fn one_slot_config(redis: &Redis, up: &Mock) -> String {
    format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: one, key: sk-one, max_parallel: 1}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.url(),
        up.openai_url()
    )
}

/// The value of the one Redis key matching `pattern` as a number (0 while there is no such key). Charges only
/// raise it: a spend grows by the cost, a tokens window's end moves later. (Admission may create a spend key at
/// 0, which is not a charge.)
fn charged(redis: &Redis, pattern: &str) -> f64 {
    let mut c = redis.conn().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c).unwrap();
    let Some(key) = keys.first() else { return 0.0 };
    let v: Option<f64> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    v.unwrap_or(0.0)
}

/// Posts `key` to `router`; when it is admitted, waits until its charge has reached Redis (the key matching
/// `charge` rises), so that no charge is in flight when the next request is sent.
async fn post_charged(redis: &Redis, router: &Router, key: &str, charge: &str) -> reqwest::Response {
    let before = charged(redis, charge);
    let r = post(router, key).await;
    if r.status() == 200 {
        let landed = eventually(Duration::from_secs(10), || charged(redis, charge) > before).await;
        assert!(landed, "{key}: its charge reached Redis ({charge})");
    }
    r
}

/// Posts `key` round `routers` from `first` until one refuses; how many were admitted (at most 20). Each admitted
/// request's charge is awaited ([`post_charged`]): the count is the limit's own, not the limit plus however late a
/// loaded machine runs the charges.
async fn admitted_until_refused(redis: &Redis, routers: &[Router], key: &str, first: usize, charge: &str) -> usize {
    for n in 0..20 {
        let r = post_charged(redis, &routers[(first + n) % 3], key, charge).await;
        match r.status().as_u16() {
            200 => {}
            429 => return n,
            s => panic!("request {n} of {key}: {s} {}", r.text().await.unwrap()),
        }
    }
    20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_and_a_tokens_window_hold_across_three_instances() {
    let redis = Redis::start().await;
    // 20 tokens a request, priced so that it costs $0.01.
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 10, 10))).await;
    let config = format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: cents, key: sk-cents, budget: 0.05, per: day}}\n    - {{name: tokens, key: sk-tokens, tpm: 100}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n    pricing:\n      gpt-4o: {{input: 500, output: 500}}\n",
        redis.url(),
        up.openai_url()
    );
    let routers = three_on(&redis, &config).await;
    // Three requests through A spend $0.03 of the $0.05; B and C know it from Redis, not from their own records.
    let spend = "router:spend:cents:day:*";
    for _ in 0..3 {
        assert_eq!(post_charged(&redis, &routers[0], "sk-cents", spend).await.status(), 200);
    }
    let more = admitted_until_refused(&redis, &routers, "sk-cents", 1, spend).await;
    // With every charge in, the instances admit until the spend reaches the budget: 2 more ($0.05), or 3 when
    // five INCRBYFLOATs of 0.01 land a hair under 0.05.
    eprintln!("budget $0.05 over 3 instances: {} admitted (bound 5)", 3 + more);
    assert!((2..=3).contains(&more), "after $0.03 through A, B and C admit 2: {more}");
    // Once the charges are in, every instance refuses, with the budget's own error.
    for (i, r) in routers.iter().enumerate() {
        let mut last = None;
        let refused = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let resp = post(r, "sk-cents").await;
                if resp.status() == 429 {
                    last = Some(resp.json::<Value>().await.unwrap());
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
            }
        };
        assert!(refused, "instance {i} refuses the spent key");
        assert_eq!(last.unwrap()["error"]["code"], "budget_exceeded", "instance {i}");
    }
    let mut c = redis.conn().unwrap();
    let spend_keys: Vec<String> = redis::cmd("KEYS").arg("router:spend:cents:day:*").query(&mut c).unwrap();
    assert_eq!(spend_keys.len(), 1, "{spend_keys:?}");
    let spent: f64 = redis::cmd("GET").arg(&spend_keys[0]).query(&mut c).unwrap();
    let recorded: f64 = routers
        .iter()
        .flat_map(|r| r.records())
        .filter(|r| r["gateway_key"] == "cents")
        .filter_map(|r| r["cost_usd"].as_f64())
        .sum();
    assert!((spent - recorded).abs() < 1e-9, "Redis counted ${spent}, the records of the three say ${recorded}");
    assert!((0.05..=0.06 + 1e-9).contains(&spent), "{spent}");
    let ttl: i64 = redis::cmd("PTTL").arg(&spend_keys[0]).query(&mut c).unwrap();
    assert!(ttl > 0 && ttl <= 2 * 86_400_000, "a day's spend expires after its day: {ttl} ms");

    // tpm 100 at 20 tokens a request: five requests a minute across the three, not five on each.
    // A window is refused once full; the sixth finds it a few ms short of full (it drains as time passes), so
    // it is admitted and fills it past the minute: 6, whichever instances they went through.
    let admitted = admitted_until_refused(&redis, &routers, "sk-tokens", 0, "router:tpm:tokens:*").await;
    eprintln!("tpm 100 over 3 instances: {admitted} admitted (bound 5 + 1 the draining window lets in)");
    assert!((5..=6).contains(&admitted), "{admitted}");
    let r = post(&routers[2], "sk-tokens").await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("token"), "{body}");
}

async fn admin(router: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req =
        client().request(method.parse().unwrap(), router.url(&format!("/admin/v1{path}"))).bearer_auth("sk-admin");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// How long until every one of `routers` answers `key` with `status` (polled; `None` after 3 s).
async fn until_status(routers: &[&Router], key: &str, status: u16) -> Option<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    for r in routers {
        loop {
            if post(r, key).await.status().as_u16() == status {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }
    Some(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_changed_through_one_instance_holds_on_the_others_within_a_second() {
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "shared_state:\n  redis: {}\nserver:\n  keys:\n    - {{name: team, key: sk-team}}\n  admin_keys:\n    - {{name: ops, key: sk-admin}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.url(),
        up.openai_url()
    );
    let routers = three_on(&redis, &config).await;
    let (a, b, c) = (&routers[0], &routers[1], &routers[2]);
    // Every instance asks for a key (the configuration has one), so an unknown secret is refused.
    // Made through A's admin API (each instance has its own store here): B and C accept it.
    let (s, made) = admin(a, "POST", "/keys", Some(json!({"name": "bot"}))).await;
    assert_eq!(s, 201, "{made}");
    let secret = made["key"].as_str().unwrap().to_string();
    let took = until_status(&[b, c], &secret, 200).await.expect("B and C accept a key made on A");
    eprintln!("key created on A: accepted by B and C after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Disabled through A's admin API: B and C refuse it.
    let (s, row) = admin(a, "POST", "/keys/bot/disable", None).await;
    assert_eq!((s, row["state"].as_str()), (200, Some("disabled")), "{row}");
    let took = until_status(&[b, c], &secret, 401).await.expect("B and C refuse a key disabled on A");
    eprintln!("key disabled on A: refused by B and C after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Enabled again with the CLI through B's control socket: A and C accept it.
    let out = Cli::new().config(&b.config_path()).arg("--store").arg(b.store_path()).args(["keys", "enable", "bot"]);
    let out = out.run_async().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let took = until_status(&[a, c], &secret, 200).await.expect("A and C accept a key enabled on B");
    eprintln!("key enabled on B: accepted by A and C after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Revoked through C: refused everywhere, and B's own store says so (`router keys show` on B).
    let (s, _) = admin(c, "POST", "/keys/bot/revoke", None).await;
    assert_eq!(s, 200);
    let took = until_status(&[a, b], &secret, 401).await.expect("A and B refuse a key revoked on C");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (s, shown) = admin(b, "GET", "/keys/bot", None).await;
    assert_eq!((s, shown["state"].as_str()), (200, Some("revoked")), "{shown}");
    for r in &routers {
        assert!(!r.stderr().contains(&secret), "the secret is in no log");
    }

    // A store channel added through A's socket: B and C reload their catalogue from their store at once (with a
    // store every instance reads, that is where the channel is; the message itself carries no upstream key).
    let rebuilds = |m: &str| -> u64 {
        let line = m.lines().find(|l| l.starts_with("router_snapshot_rebuilds_total ")).expect(m);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = [rebuilds(&metrics(b).await), rebuilds(&metrics(c).await)];
    let out = Cli::new()
        .config(&a.config_path())
        .arg("--store")
        .arg(a.store_path())
        .args(["channels", "add", "--name", "extra", "--protocol", "openai", "--base-url", &up.openai_url()])
        .args(["--key", "sk-extra-upstream", "--model", "gpt-extra"])
        .run_async()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let started = Instant::now();
    let mut reloaded = false;
    while started.elapsed() < Duration::from_secs(3) {
        if rebuilds(&metrics(b).await) > before[0] && rebuilds(&metrics(c).await) > before[1] {
            reloaded = true;
            break;
        }
    }
    let took = started.elapsed();
    eprintln!("channel added on A: B and C rebuilt their catalogue after {took:?}");
    assert!(reloaded && took < Duration::from_secs(1), "B and C reload after a channel change on A: {took:?}");
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
    let routers = three_on(&redis, &config).await;
    let load = |n: usize| {
        let routers = &routers;
        async move {
            let sends = (0..n).map(|i| async move { post(&routers[i % 3], "sk-team").await.status().as_u16() });
            futures_util::future::join_all(sends).await
        }
    };
    let m = metrics(&routers[0]).await;
    assert!(m.contains("router_shared_state_connected 1\n"), "{m}");
    assert_eq!(shared_fallbacks(&m), 0);
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
        let m = metrics(r).await;
        assert!(m.contains("router_shared_state_connected 0\n"), "{m}");
        assert!(shared_fallbacks(&m) > 0, "fallbacks are counted: {m}");
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
        assert!(metrics(r).await.contains("router_shared_state_connected 1\n"));
    }
}

async fn metrics(r: &Router) -> String {
    client().get(r.url("/metrics")).bearer_auth("sk-team").send().await.unwrap().text().await.unwrap()
}

fn shared_fallbacks(metrics: &str) -> u64 {
    let line = metrics.lines().find(|l| l.starts_with("router_shared_state_fallbacks_total ")).expect(metrics);
    line.rsplit(' ').next().unwrap().parse().unwrap()
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
    let routers = three_on(&redis, &config).await;
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
    // An instance started after the bindings were made (it heard none of them) reads them through Redis.
    let last_key = up.last().header("authorization").unwrap();
    let late = Router::start(&config);
    let r = turn(&late, "conv-3", 7).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-router-affinity"], "hit", "a late instance finds the binding in Redis");
    assert_eq!(up.last().header("authorization").unwrap(), last_key);
    let mut c = redis.conn().unwrap();
    let bound: Vec<String> = redis::cmd("KEYS").arg("router:aff:*").query(&mut c).unwrap();
    assert_eq!(bound.len(), 4, "one binding per conversation in Redis: {bound:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(&bound[0]).query(&mut c).unwrap();
    assert!(ttl > 0, "a binding in Redis expires: {ttl}");
}

/// Not a check: prints the p50 / p99 of sequential requests through one instance, in memory and with Redis, for a
/// key with `rpm` (one Redis round trip per request) and a key without limits (none).
/// `cargo test --test integration scaleout::added_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn added_latency_of_redis_admission() {
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let base = format!(
        "server:\n  keys:\n    - {{name: team, key: sk-team, rpm: 1000000, max_parallel: 1000}}\n    - {{name: free, key: sk-free}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        up.openai_url()
    );
    for (mode, config) in
        [("embedded", base.clone()), ("redis", format!("shared_state:\n  redis: {}\n{base}", redis.url()))]
    {
        let router = Router::start(&config);
        for key in ["sk-team", "sk-free"] {
            let mut ms = Vec::new();
            for i in 0..1200 {
                let t = Instant::now();
                assert_eq!(post(&router, key).await.status(), 200);
                if i >= 200 {
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            ms.sort_by(f64::total_cmp);
            eprintln!(
                "{mode}, {key}: p50 {:.3} ms, p99 {:.3} ms over {} requests",
                ms[ms.len() / 2],
                ms[ms.len() * 99 / 100],
                ms.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redis_url_is_a_config_error_and_rediss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    for (url, why) in [("http://cache:6379", "not a Redis URL"), ("redis://:6379x/0", "not a Redis URL")] {
        std::fs::write(&cfg, format!("shared_state:\n  redis: {url}\n")).unwrap();
        let (code, _, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{url}: {err}");
        assert!(
            err.contains(cfg.to_str().unwrap()) && err.contains("shared_state.redis") && err.contains(why),
            "{err}"
        );
        assert!(err.contains("rediss://"), "the hint names the TLS form: {err}");
    }
    // A password in a bad URL is not repeated.
    std::fs::write(&cfg, "shared_state:\n  redis: redis://:hunter2-secret@cache:6379x\n").unwrap();
    let (code, _, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
    std::fs::write(&cfg, "shared_state:\n  redis: rediss://:pw@cache.internal:6380/0\n").unwrap();
    let (code, _, err) = run_cli(&["config", "check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "rediss:// is accepted: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_server_without_tls_serves_on_its_own_state_and_says_why() {
    // A plain Redis where the config says TLS: the handshake fails; requests are served on local state.
    let redis = Redis::start().await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))).await;
    let config = format!(
        "shared_state:\n  redis: rediss://127.0.0.1:{}/0\nserver:\n  keys:\n    - {{name: team, key: sk-team, rpm: 1000}}\nchannels:\n  - name: main\n    base_url: {}\n    keys: [sk-up]\n    models: [gpt-4o]\n",
        redis.port,
        up.openai_url()
    );
    let router = Router::start(&config);
    for _ in 0..3 {
        assert_eq!(post(&router, "sk-team").await.status(), 200);
    }
    let h = health(&router).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["shared_state"], "redis unreachable", "{h}");
    let log = router.stderr();
    let line = log.lines().find(|l| l.contains("Redis unreachable")).unwrap_or_else(|| panic!("{log}"));
    eprintln!("rediss to a plain server: {line}");
    assert!(line.to_lowercase().contains("tls") || line.contains("handshake"), "the reason names TLS: {line}");
}

/// An upstream whose model list (what `fastest` measures) answers after `delay`; chat at once.
async fn timed_upstream(delay: Duration) -> Mock {
    Mock::start(move |r, _| {
        if r.method == "GET" {
            Reply::After(delay, Box::new(Reply::Json(200, json!({"data": [{"id": "gpt-4o"}]}))))
        } else {
            Reply::Json(200, chat_json("gpt-4o", "ok", 5, 5))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_observed_by_one_instance_steers_fastest_on_the_others() {
    let redis = Redis::start().await;
    let slow = timed_upstream(Duration::from_millis(300)).await;
    let fast = timed_upstream(Duration::ZERO).await;
    let config = format!(
        "shared_state:\n  redis: {}\nrouting:\n  strategy: fastest\nchannels:\n  - name: slow\n    base_url: {}\n    keys: [sk-a]\n    models: [gpt-4o]\n  - name: fast\n    base_url: {}\n    keys: [sk-b]\n    models: [gpt-4o]\n",
        redis.url(),
        slow.openai_url(),
        fast.openai_url()
    );
    let routers = three_on(&redis, &config).await;
    // A measures both endpoints (it knows neither) and sends to the quicker.
    let r = post(&routers[0], "sk-none").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-router-channel"], "fast");
    let gets = |m: &Mock| m.all().iter().filter(|r| r.method == "GET").count();
    let measured = (gets(&slow), gets(&fast));
    assert_eq!(measured, (1, 1), "A measured each endpoint once");
    // B and C merge what A observed, and share it in turn: each instance's entry for both endpoints in Redis.
    let mut c = redis.conn().unwrap();
    let merged = eventually(Duration::from_secs(15), || {
        let fields: Vec<String> = redis::cmd("HKEYS").arg("router:latency").query(&mut c).unwrap();
        let instances: std::collections::HashSet<&str> =
            fields.iter().filter_map(|f| f.split_once(':').map(|(i, _)| i)).collect();
        instances.len() == 3 && fields.len() >= 6
    })
    .await;
    assert!(merged, "every instance shares the latency of both endpoints");
    // B and C route to the fast endpoint without measuring anything themselves.
    for r in &routers[1..] {
        let resp = post(r, "sk-none").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-router-channel"], "fast");
    }
    assert_eq!((gets(&slow), gets(&fast)), measured, "B and C did not measure: they knew from A");
    assert_eq!(slow.all().iter().filter(|r| r.method == "POST").count(), 0);
}
