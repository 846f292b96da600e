//! The PostgreSQL store (`store.postgres`) end to end: several `router serve` instances write their records to
//! one database and read the same usage back from any of them; records survive PostgreSQL going away mid-load
//! (spooled in each instance's redb file, replayed in order, each exactly once); kill -9 loses at most the last
//! batch window; `router store migrate` copies a redb store so the reports read the same. Each test has a
//! database of its own ([`TempDb`]); "PostgreSQL down" is a [`Relay`] cut, never the machine's server stopped.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use serde_json::{Value, json};

const ALPHA: &str = "sk-alpha-SECRET-51c0ffee";
const BETA: &str = "sk-beta-SECRET-62decade";

fn config(upstream: &Upstream, postgres: &str) -> String {
    let base = upstream.base_url();
    format!(
        r#"store:
  postgres: {postgres}
channels:
  - name: main
    protocol: openai
    models: [gpt-test]
    pricing:
      gpt-test: {{input: 1.0, output: 2.0, cache_read: 0.5}}
    endpoints:
      - name: alpha
        base_url: {base}
        keys: [{{name: alpha, key: {ALPHA}}}]
      - name: beta
        base_url: {base}
        keys: [{{name: beta, key: {BETA}}}]
"#
    )
}

/// One chat request; (status, the router's request id).
async fn send(router: &Router) -> (u16, String) {
    send_as(router, None).await
}

async fn send_as(router: &Router, key: Option<&str>) -> (u16, String) {
    let mut req = client().post(router.url("/v1/chat/completions"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp =
        req.json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers().get("x-router-request-id").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let _ = resp.bytes().await.unwrap();
    (status, id)
}

/// `n` requests, `parallel` at a time, spread over `routers`.
async fn load(routers: &[Router], n: usize, parallel: usize) -> Vec<(u16, String)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| send(&routers[i % routers.len()]))
        .buffer_unordered(parallel)
        .collect()
        .await
}

async fn health(router: &Router) -> Value {
    client().get(router.url("/health")).send().await.unwrap().json().await.unwrap()
}

fn usage_via(store: &Path) -> String {
    let (code, out, err) =
        run_cli(&["usage", "--group-by", "token", "--json", "--store", store.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    out
}

/// fingerprint -> (input incl. cached, cached, output, requests), from `router usage --group-by token --json`.
fn per_token(usage_json: &str) -> HashMap<String, (u64, u64, u64, u64)> {
    let v: Value = serde_json::from_str(usage_json).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            (
                r["token"].as_str().unwrap().to_string(),
                (n("input") + n("cache_read"), n("cache_read"), n("output"), n("requests")),
            )
        })
        .collect()
}

/// The usage report equals what the upstream billed each key.
fn assert_billed(usage_json: &str, upstream: &Upstream, requests: u64) {
    let report = per_token(usage_json);
    let billed = upstream.billed();
    let mut total = 0;
    for key in [ALPHA, BETA] {
        let b = billed.get(key).copied().unwrap_or_default();
        let r = report.get(&router::usage::fingerprint(key)).copied().unwrap_or_default();
        assert_eq!(r, (b.prompt, b.cached, b.completion, b.responses), "usage of {key:.8}… vs the upstream's bill");
        total += b.responses;
    }
    assert_eq!(total, requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_records_and_lose_none_while_postgres_is_cut_off() {
    let Some(db) = TempDb::create() else { return };
    let relay = Relay::start().await;
    let upstream = Upstream::start().await;
    let cfg = config(&upstream, &db.url_via(&relay));
    let routers: Vec<Router> = (0..3).map(|_| Router::start(&cfg)).collect();
    for r in &routers {
        assert_eq!(health(r).await["records"]["state"], "ok", "{}", r.stderr());
    }

    // Load, then PostgreSQL goes away mid-load.
    let mut answers = load(&routers, 60, 6).await;
    relay.cut();
    let cut_at = Instant::now();
    // Requests keep being answered while it is away; every instance says why its records wait.
    let mut degraded = [false; 3];
    // The issue's outage: 10 s of load without PostgreSQL (and until every instance reports it).
    while degraded.iter().any(|d| !d) || cut_at.elapsed() < Duration::from_secs(10) {
        answers.extend(load(&routers, 15, 3).await);
        for (i, r) in routers.iter().enumerate() {
            let h = health(r).await;
            if h["records"]["state"] == "degraded" {
                let why = h["records"]["reason"].as_str().unwrap().to_string();
                assert!(why.contains("PostgreSQL"), "{why}");
                degraded[i] = true;
            }
        }
        assert!(cut_at.elapsed() < Duration::from_secs(60), "instances not degraded: {degraded:?}");
    }
    let during = answers.len() - 60;
    relay.restore();
    answers.extend(load(&routers, 30, 6).await);

    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "every request answered 200: {:?}",
        answers.iter().filter(|a| a.0 != 200).collect::<Vec<_>>()
    );
    let n = answers.len() as i64;
    assert!(during >= 45, "requests made while PostgreSQL was away: {during}");
    // Every instance replays what it spooled and is healthy again.
    for r in &routers {
        let mut h = Value::Null;
        let ok = eventually(Duration::from_secs(30), || {
            h = futures_executor(health(r));
            h["records"]["state"] == "ok" && h["records"]["pending"] == 0
        })
        .await;
        assert!(ok, "instance did not recover: {h}\n{}", r.stderr());
        let log = r.stderr();
        assert!(log.contains("spooled in"), "the outage is logged: {log}");
        assert_eq!(log.matches("spooled in").count(), 1, "logged once: {log}");
        assert!(log.contains("takes records again"), "{log}");
    }
    // Exactly once each: as many records as answers, no id twice, and the ids are the answers' ids.
    assert!(eventually(Duration::from_secs(20), || db.record_counts().0 == n).await, "{:?} of {n}", db.record_counts());
    assert_eq!(db.record_counts(), (n, n));
    let stored: HashSet<String> = db.ids().into_iter().collect();
    let answered: HashSet<String> = answers.iter().map(|a| a.1.clone()).collect();
    assert_eq!(stored, answered);

    // Any instance reports the same usage, equal to the upstream's bill.
    let reports: Vec<String> = routers.iter().map(|r| usage_via(&r.store_path())).collect();
    assert_eq!(reports[0], reports[1]);
    assert_eq!(reports[0], reports[2]);
    assert_billed(&reports[0], &upstream, n as u64);
    // The request list too.
    let lists: Vec<Vec<Value>> = routers.iter().map(|r| r.records()).collect();
    assert_eq!(lists[0].len(), n.min(1000) as usize);
    assert_eq!(lists[0], lists[2]);
    // No key anywhere in what PostgreSQL holds.
    let dump = pg(&db.url, |c| {
        c.query("SELECT encode(rec, 'escape') FROM requests", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<String>()
    });
    assert!(!dump.contains("SECRET"));
}

/// Runs a future to completion from a synchronous closure (the polling helper takes one).
fn futures_executor<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_the_last_batch_window() {
    let Some(db) = TempDb::create() else { return };
    let upstream = Upstream::start().await;
    let mut router = Router::start(&config(&upstream, &db.url));
    // Load in the background, each answer with the time it arrived.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let url = router.url("/v1/chat/completions");
    let loader = tokio::spawn(async move {
        loop {
            let resp = client()
                .post(&url)
                .json(&json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await;
            let Ok(resp) = resp else { break };
            let id = resp.headers().get("x-router-request-id").map(|v| v.to_str().unwrap().to_string());
            if resp.bytes().await.is_err() {
                break;
            }
            if let Some(id) = id
                && tx.send((Instant::now(), id)).is_err()
            {
                break;
            }
        }
    });
    // Kill once some records are surely committed and load is still running.
    let started = Instant::now();
    let running = eventually(Duration::from_secs(60), || {
        started.elapsed() > Duration::from_secs(2) && db.record_counts().0 >= 100
    });
    assert!(running.await);
    let killed_at = Instant::now();
    router.kill9();
    loader.await.unwrap();
    let mut acked = Vec::new();
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    let stored: HashSet<String> = db.ids().into_iter().collect();
    let (n, distinct) = db.record_counts();
    assert_eq!(n, distinct, "no duplicates");
    // What was answered more than a batch window (50 ms; 1 s allowed for a busy machine's commit) before the kill
    // is stored.
    let window = Duration::from_secs(1);
    let old: Vec<&String> =
        acked.iter().filter(|(t, _)| killed_at.duration_since(*t) > window).map(|(_, id)| id).collect();
    assert!(old.len() >= 40, "answers before the window: {} of {}", old.len(), acked.len());
    let missing: Vec<&&String> = old.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(missing.is_empty(), "{} records answered over {window:?} before kill -9 are missing", missing.len());
    let lost = acked.len() - acked.iter().filter(|(_, id)| stored.contains(id)).count();
    eprintln!("kill -9: {} answered, {} stored, {lost} lost (the last window)", acked.len(), stored.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_copies_a_redb_store_and_reports_read_the_same() {
    let Some(db) = TempDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    // A gateway on redb alone, with history and a store-held key.
    let cfg = dir.path().join("router.yaml");
    write(&cfg, &config(&upstream, "~"));
    let store = dir.path().join("router.redb");
    let s = store.to_str().unwrap().to_string();
    let created = Cli::new().config(&cfg).args(["keys", "create", "team", "--store", &s]).run();
    assert_eq!(created.code, 0, "{}", created.stderr);
    let mut server = Router::serve(dir.path(), &cfg, &store);
    let key = created.stdout.split_whitespace().find(|w| w.starts_with("sk-router-")).expect("the key is printed");
    for _ in 0..40 {
        assert_eq!(send_as(&server, Some(key)).await.0, 200);
    }
    server.stop();
    let reports = |cfg: &Path, s: &str| {
        let usage = Cli::new()
            .config(cfg)
            .args(["usage", "--group-by", "token", "--group-by", "day", "--json", "--store", s])
            .run();
        let requests = Cli::new().config(cfg).args(["requests", "--json", "--limit", "1000", "--store", s]).run();
        let keys = Cli::new().config(cfg).args(["keys", "list", "--json", "--store", s]).run();
        for o in [&usage, &requests, &keys] {
            assert_eq!(o.code, 0, "{}", o.stderr);
        }
        (usage.stdout, requests.stdout, keys.stdout)
    };
    let before = reports(&cfg, &s);
    let utc_args = ["usage", "--json", "--utc", "--group-by", "token", "--group-by", "day", "--store", &s];
    let utc_before = Cli::new().config(&cfg).args(utc_args).run().json();
    assert!(before.1.len() > 100 && before.2.contains("team"), "{before:?}");

    // Copy, twice: the second run adds nothing.
    for run in 0..2 {
        let out = Cli::new().args(["store", "migrate", "--from", &s, "--to", &db.url, "--json"]).run();
        let v = out.json();
        assert_eq!(v["records"], 40 * (run == 0) as u64 + 40 * (run == 1) as u64, "{v}");
        assert_eq!(v["new_records"], if run == 0 { 40 } else { 0 }, "{v}");
        assert_eq!(v["target_was_empty"], run == 0, "{v}");
    }
    assert_eq!(db.record_counts(), (40, 40));

    // The same commands on PostgreSQL (a fresh local file: only the spool) print the same.
    let pg_cfg = dir.path().join("pg.yaml");
    write(&pg_cfg, &config(&upstream, &db.url));
    let fresh = dir.path().join("fresh.redb");
    let after = reports(&pg_cfg, fresh.to_str().unwrap());
    assert_eq!(after.0, before.0, "usage");
    assert_eq!(after.1, before.1, "requests");
    assert_eq!(after.2, before.2, "keys");

    // The admin API of a server on PostgreSQL answers the same as the CLI did from redb.
    let admin_cfg = dir.path().join("admin.yaml");
    write(
        &admin_cfg,
        &format!("{}server:\n  admin_keys:\n    - {{name: ops, key: sk-admin-pg-0b5e}}\n", config(&upstream, &db.url)),
    );
    let server = Router::serve(dir.path(), &admin_cfg, &dir.path().join("admin.redb"));
    let resp = client()
        .get(server.url("/admin/v1/usage?group_by=token,day"))
        .bearer_auth("sk-admin-pg-0b5e")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let admin: Value = resp.json().await.unwrap();
    assert_eq!(admin, utc_before);
}

#[test]
fn a_bad_postgres_url_names_the_file_and_key_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, "store:\n  postgres: mysql://u:hunter2@127.0.0.1/db\n");
    let out = Cli::new().config(&cfg).args(["usage"]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("store.postgres") && out.stderr.contains("router.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("postgres://"), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_a_clear_error_for_reports_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, &format!("store:\n  postgres: postgres://u:hunter2@127.0.0.1:{}/db\n", dead_port()));
    let out = Cli::new().config(&cfg).args(["usage", "--store"]).arg(dir.path().join("s.redb")).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("PostgreSQL") && out.stderr.contains("u:***@127.0.0.1"), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_while_postgres_is_away_survive_kill_9_and_are_replayed_at_the_next_start() {
    let Some(db) = TempDb::create() else { return };
    let relay = Relay::start().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, &config(&upstream, &db.url_via(&relay)));
    let store = dir.path().join("router.redb");
    let mut router = Router::serve(dir.path(), &cfg, &store);
    let mut answers = load(std::slice::from_ref(&router), 10, 2).await;
    relay.cut();
    answers.extend(load(std::slice::from_ref(&router), 30, 3).await);
    assert!(answers.iter().all(|a| a.0 == 200));
    // Some records are durable in the spool (not only in memory) before the kill.
    let mut h = Value::Null;
    let spooled = eventually(Duration::from_secs(20), || {
        h = futures_executor(health(&router));
        h["records"]["spooled"].as_u64().unwrap_or(0) + db.record_counts().0 as u64 >= 40
    })
    .await;
    assert!(spooled, "{h}");
    assert_eq!(h["records"]["state"], "degraded", "{h}");
    router.kill9();
    relay.restore();
    // The next start replays the spool, oldest first, each record once.
    let router = Router::serve(dir.path(), &cfg, &store);
    assert!(
        eventually(Duration::from_secs(30), || db.record_counts().0 == 40).await,
        "{:?}\n{}",
        db.record_counts(),
        router.stderr()
    );
    assert_eq!(db.record_counts(), (40, 40));
    let stored: HashSet<String> = db.ids().into_iter().collect();
    assert_eq!(stored, answers.iter().map(|a| a.1.clone()).collect::<HashSet<_>>());
    let ok = eventually(Duration::from_secs(10), || {
        h = futures_executor(health(&router));
        h["records"]["state"] == "ok" && h["records"]["pending"] == 0 && h["records"].get("spooled").is_none()
    })
    .await;
    assert!(ok, "{h}");
    assert_billed(&usage_via(&store), &upstream, 40);
}
