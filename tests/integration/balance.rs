//! `router balance check` against mock providers on 127.0.0.1:0 answering the documented paths with the
//! documented bodies, plus one refusing the key (401), one hanging past the timeout and one sending garbage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{Cli, Mock, Out, Reply, dead_port};

/// Every key contains this, so a leak anywhere in the output is easy to find.
const MARK: &str = "SECRETKEYBYTES";

fn key(name: &str) -> String {
    format!("sk-{MARK}-{name}-0123456789")
}

/// What a route answers (a [`Reply`] that can be given more than once).
#[derive(Clone)]
enum Answer {
    Json(u16, Value),
    Html(u16, &'static str),
    Hang,
}

/// A mock answering by path (without query) and bearer key: `(path, key)` first, then `(path, "*")`, else 404.
async fn mock(routes: Vec<(&'static str, String, Answer)>) -> Mock {
    let routes: HashMap<(String, String), Answer> =
        routes.into_iter().map(|(p, k, r)| ((p.to_string(), k), r)).collect();
    Mock::start(move |r, _| {
        let path = r.uri.split('?').next().unwrap().to_string();
        let bearer =
            r.header("authorization").map(|v| v.trim().trim_start_matches("Bearer ").to_string()).unwrap_or_default();
        let answer = routes
            .get(&(path.clone(), bearer))
            .or_else(|| routes.get(&(path, "*".to_string())))
            .cloned()
            .unwrap_or(Answer::Json(404, json!({"error": {"message": "not found"}})));
        match answer {
            Answer::Json(s, v) => Reply::Json(s, v),
            Answer::Html(s, t) => Reply::Raw(s, vec![("content-type", "text/html".into())], t.into()),
            Answer::Hang => Reply::Hang,
        }
    })
    .await
}

fn any(path: &'static str, answer: Answer) -> (&'static str, String, Answer) {
    (path, "*".to_string(), answer)
}

/// `router --config CONFIG ARGS`, without colours and with wide tables; fails the test when a key leaks.
async fn router(config: &Path, args: &[&str]) -> Out {
    Cli::new()
        .config(config)
        .args(args)
        .env_remove("ROUTER_BALANCE_TIMEOUT")
        .env("NO_COLOR", "1")
        .table_width(400)
        .hiding(&[MARK])
        .run_async()
        .await
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// The providers, answering while the fixture lives.
    _mocks: Vec<Mock>,
    config: PathBuf,
}

async fn fixture() -> Fixture {
    let good = mock(vec![
        any("/api/v1/credits", Answer::Json(200, json!({"data": {"total_credits": 100.5, "total_usage": 25.75}}))),
        any(
            "/user/balance",
            Answer::Json(
                200,
                json!({"is_available": true, "balance_infos": [
                    {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"},
                    {"currency": "USD", "total_balance": "3.50", "granted_balance": "0.00", "topped_up_balance": "3.50"}]}),
            ),
        ),
        any(
            "/v1/user/info",
            Answer::Json(
                200,
                json!({"code": 20000, "message": "OK", "status": true, "data": {"id": "u", "name": "n", "image": "",
                    "email": "", "isAdmin": false, "balance": "0.88", "status": "normal", "introduction": "", "role": "",
                    "chargeBalance": "88.00", "totalBalance": "88.88"}}),
            ),
        ),
        any(
            "/v1/users/me/balance",
            Answer::Json(
                200,
                json!({"code": 0, "data": {"available_balance": 49.58894, "voucher_balance": 46.58893,
                    "cash_balance": 3.00001}, "scode": "0x0", "status": true}),
            ),
        ),
        any(
            "/v1/dashboard/billing/subscription",
            Answer::Json(
                200,
                json!({"object": "billing_subscription", "has_payment_method": true, "soft_limit_usd": 100.0,
                    "hard_limit_usd": 100.0, "system_hard_limit_usd": 100.0, "access_until": 0}),
            ),
        ),
        any("/v1/dashboard/billing/usage", Answer::Json(200, json!({"object": "list", "total_usage": 2550.0}))),
        any(
            "/api/usage/token",
            Answer::Json(
                200,
                json!({"code": true, "message": "ok", "data": {"object": "token_usage", "name": "k",
                    "total_granted": 5_000_000, "total_used": 1_250_000, "total_available": 3_750_000,
                    "unlimited_quota": false, "model_limits": {}, "model_limits_enabled": false, "expires_at": 0}}),
            ),
        ),
        // Key validity: the model list answers per key.
        ("/v1/models", key("ok"), Answer::Json(200, json!({"object": "list", "data": [{"id": "m"}]}))),
        ("/v1/models", key("quota"), Answer::Json(429, json!({"error": {"code": "insufficient_quota",
            "message": "You exceeded your current quota, please check your plan and billing details."}}))),
        ("/v1/models", key("busy"), Answer::Json(429, json!({"error": {"message": "Rate limit reached for requests"}}))),
        any("/v1/models", Answer::Json(401, json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}))),
    ])
    .await;
    // A plain OpenRouter key: /credits wants a management key, /key answers.
    let plain = mock(vec![
        any(
            "/api/v1/credits",
            Answer::Json(403, json!({"error": {"code": 403, "message": "Only management keys can fetch credits"}})),
        ),
        any(
            "/api/v1/key",
            Answer::Json(
                200,
                json!({"data": {"label": "sk-or-v1-0a1...b2c", "limit": 10, "usage": 5.5, "limit_remaining": 4.5,
                    "is_free_tier": false, "rate_limit": {"requests": 10, "interval": "10s"}}}),
            ),
        ),
    ])
    .await;
    let refused = mock(vec![any(
        "/user/balance",
        // Providers echo the key they refused; it must not reach our output.
        Answer::Json(
            401,
            json!({"error": {"message": format!("Authentication Fails, Your api key: {} is invalid", key("bad")),
            "type": "authentication_error", "code": "invalid_request_error"}}),
        ),
    )])
    .await;
    let hang = mock(vec![any("/v1/user/info", Answer::Hang)]).await;
    let junk = mock(vec![any("/v1/users/me/balance", Answer::Html(200, "<html><body>It works!</body></html>"))]).await;
    let closed = dead_port();
    let mocks = vec![good, plain, refused, hang, junk];
    let [good, plain, refused, hang, junk] = [0, 1, 2, 3, 4].map(|i| mocks[i].port());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    let k = key;
    let yaml = format!(
        r#"
channels:
  - name: or
    base_url: https://openrouter.ai/api/v1
    balance: {{kind: openrouter, url: "http://127.0.0.1:{good}"}}
    keys: [{{name: mgmt, key: "{k_or}"}}]
  - name: or-plain
    base_url: https://openrouter.ai/api/v1
    balance: {{kind: openrouter, url: "http://127.0.0.1:{plain}"}}
    keys: ["{k_orp}"]
  - name: ds
    base_url: https://api.deepseek.com
    balance: {{kind: deepseek, url: "http://127.0.0.1:{good}"}}
    keys: [{{name: main, key: "{k_ds}"}}]
  - name: sf
    base_url: https://api.siliconflow.cn/v1
    balance: {{kind: siliconflow, url: "http://127.0.0.1:{good}/v1"}}
    keys: ["{k_sf}"]
  - name: kimi-cn
    base_url: https://api.moonshot.cn/v1
    balance: {{kind: moonshot, url: "http://127.0.0.1:{good}"}}
    keys: ["{k_kc}"]
  - name: kimi-ai
    base_url: https://api.moonshot.ai/v1
    balance: {{kind: moonshot, url: "http://127.0.0.1:{good}"}}
    keys: ["{k_ka}"]
  - name: reseller
    base_url: https://reseller.example/v1
    balance: {{kind: oneapi, url: "http://127.0.0.1:{good}"}}
    keys: ["{k_one}"]
  - name: newapi
    base_url: https://newapi.example/v1
    balance: {{kind: newapi, url: "http://127.0.0.1:{good}"}}
    keys: ["{k_new}"]
  - name: oai
    base_url: https://api.openai.com/v1
    keys: ["{k_oai}"]
  - name: refused
    base_url: https://api.deepseek.com
    balance: {{kind: deepseek, url: "http://127.0.0.1:{refused}"}}
    keys: [{{name: bad, key: "{k_bad}"}}]
  - name: slow
    base_url: https://api.siliconflow.cn/v1
    balance: {{kind: siliconflow, url: "http://127.0.0.1:{hang}"}}
    keys: ["{k_slow}"]
  - name: junk
    base_url: https://api.moonshot.cn/v1
    balance: {{kind: moonshot, url: "http://127.0.0.1:{junk}"}}
    keys: ["{k_junk}"]
  - name: keys
    base_url: http://127.0.0.1:{good}/v1
    enabled: false
    keys:
      - {{name: ok, key: "{k_ok}"}}
      - {{name: invalid, key: "{k_inv}"}}
      - {{name: quota, key: "{k_quota}"}}
      - {{name: busy, key: "{k_busy}"}}
  - name: down
    base_url: http://127.0.0.1:{closed}/v1
    enabled: false
    keys: [{{name: gone, key: "{k_gone}"}}]
"#,
        k_or = k("or"),
        k_orp = k("orp"),
        k_ds = k("ds"),
        k_sf = k("sf"),
        k_kc = k("kc"),
        k_ka = k("ka"),
        k_one = k("one"),
        k_new = k("new"),
        k_oai = k("oai"),
        k_bad = k("bad"),
        k_slow = k("slow"),
        k_junk = k("junk"),
        k_ok = k("ok"),
        k_inv = k("invalid"),
        k_quota = k("quota"),
        k_busy = k("busy"),
        k_gone = k("gone"),
    );
    std::fs::write(&config, yaml).unwrap();
    Fixture { _dir: dir, _mocks: mocks, config }
}

fn by_channel(out: &Out) -> HashMap<String, Value> {
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout));
    v.as_array().unwrap().iter().map(|r| (r["channel"].as_str().unwrap().to_string(), r.clone())).collect()
}

fn amounts(r: &Value) -> Vec<(f64, String)> {
    r["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["amount"].as_f64().unwrap(), b["currency"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_shape_and_failure() {
    let f = fixture().await;
    let started = std::time::Instant::now();
    let out = router(&f.config, &["balance", "check", "--json", "--timeout", "700ms"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = by_channel(&out);
    // Disabled channels are not checked unless named.
    assert!(!r.contains_key("keys") && !r.contains_key("down"));
    assert_eq!(r.len(), 12);

    let ok = |name: &str| {
        let v = &r[name];
        assert_eq!(v["status"], "ok", "{name}: {v}");
        amounts(v)
    };
    assert_eq!(ok("or"), [(74.75, "USD".into())]);
    assert_eq!(r["or"]["balances"][0]["used"], 25.75);
    assert_eq!(r["or"]["token_key"], "mgmt");
    assert_eq!(ok("or-plain"), [(4.5, "USD".into())]);
    assert_eq!(ok("ds"), [(110.0, "CNY".into()), (3.5, "USD".into())]);
    assert_eq!(ok("sf"), [(88.88, "CNY".into())]);
    assert_eq!(ok("kimi-cn"), [(49.58894, "CNY".into())]);
    assert_eq!(ok("kimi-ai"), [(49.58894, "USD".into())]);
    assert_eq!(ok("reseller"), [(74.5, "USD".into())]);
    assert_eq!(r["reseller"]["balances"][0]["limit"], 100.0);
    assert_eq!(ok("newapi"), [(7.5, "USD".into())]);

    assert_eq!(r["oai"]["status"], "n/a");
    assert!(r["oai"]["reason"].as_str().unwrap().contains("no balance API"));
    for (name, words) in [("refused", "401"), ("slow", "no answer within 700ms"), ("junk", "not JSON")] {
        assert_eq!(r[name]["status"], "error", "{name}");
        let reason = r[name]["reason"].as_str().unwrap();
        assert!(reason.contains(words), "{name}: {reason}");
    }
    for v in r.values() {
        assert!(v["fingerprint"].as_str().unwrap().starts_with("fp:"));
        assert!(v["checked_at"].as_i64().unwrap() > 1_600_000_000_000);
    }
    // The hanging provider is bounded by the timeout, and checks run concurrently.
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_threshold_exits_3_in_each_currency() {
    let f = fixture().await;
    // DeepSeek has 3.50 USD and 110 CNY: the USD balance is below 5.
    let out = router(&f.config, &["balance", "check", "--channel", "ds", "--below", "5"]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let table = &out.stdout;
    assert!(table.contains("main") && table.contains("3.50") && table.contains("110.00"), "{table}");
    assert!(table.contains("below 5"), "{table}");
    assert!(out.stderr.contains("below 5"));

    // 88.88 CNY and 74.75 USD are above 5; a failing provider does not change the exit code.
    let out = router(
        &f.config,
        &["balance", "check", "--channel", "sf", "--channel", "or", "--channel", "refused", "--below", "5", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = by_channel(&out);
    assert_eq!(r.len(), 3);
    assert_eq!(r["sf"]["below"], false);
    assert_eq!(r["refused"]["status"], "error");

    // Amounts are compared in their own currency: 49.59 CNY is below 50, whatever that is in USD.
    let out = router(&f.config, &["balance", "check", "--channel", "kimi-cn", "--below", "50", "--json"]).await;
    assert_eq!(out.code, 3);
    assert_eq!(by_channel(&out)["kimi-cn"]["below"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_classifies_keys() {
    let f = fixture().await;
    let out = router(
        &f.config,
        &["balance", "check", "--channel", "keys", "--channel", "down", "--validate", "--json", "--timeout", "2s"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let states: HashMap<String, String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["token_key"].as_str().unwrap().to_string(), r["key"]["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states["ok"], "ok");
    assert_eq!(states["invalid"], "invalid");
    assert_eq!(states["quota"], "no_quota");
    assert_eq!(states["busy"], "rate_limited");
    assert_eq!(states["gone"], "unreachable");
    // Local endpoints without a balance config have no balance API.
    assert!(v.as_array().unwrap().iter().all(|r| r["status"] == "n/a"));

    let out = router(&f.config, &["balance", "check", "--channel", "keys", "--validate"]).await;
    let table = &out.stdout;
    assert!(table.contains("no quota") && table.contains("rate limited") && table.contains("invalid"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_1() {
    let f = fixture().await;
    let out = router(&f.config, &["balance", "check", "--channel", "nope"]).await;
    assert_eq!(out.code, 1);
    let err = out.stderr;
    assert!(err.contains("no channel named `nope`") && err.contains("hint:"), "{err}");

    let out = router(&f.config, &["balance", "check", "--below", "plenty"]).await;
    // clap rejects it before `run` (clap's own exit code).
    assert_ne!(out.code, 0);

    let out = router(&f.config, &["balance", "history", "--since", "7d"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("needs the store"));
}

/// The TTL cache seam: a stored result younger than the TTL is used instead of asking again, `refresh` asks
/// anyway, and fresh results are saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_serves_recent_results_until_refresh() {
    use router::balance::{BalanceStore, CheckOptions, MemoryStore, check_all, exhausted};
    let provider = mock(vec![any(
        "/v1/users/me/balance",
        Answer::Json(200, json!({"code": 0, "data": {"available_balance": -0.25}, "status": true})),
    )])
    .await;
    let port = provider.port();
    let yaml = format!(
        "channels:\n  - name: kimi\n    base_url: https://api.moonshot.cn/v1\n    balance: {{kind: moonshot, url: \"http://127.0.0.1:{port}\"}}\n    keys: [\"{}\"]\n",
        key("kimi")
    );
    let config = router::config::parse(std::path::Path::new("t.yaml"), &yaml, &|_| None).unwrap();
    let snap = Arc::new(router::catalog::Snapshot::build(Arc::new(config), &[], &Default::default(), false));
    let store = MemoryStore::default();
    let mut opts = CheckOptions { ttl: Some(std::time::Duration::from_secs(600)), ..CheckOptions::default() };

    let first = check_all(snap.clone(), &opts, Some(&store), &|| {}).await;
    assert_eq!(provider.count(), 1);
    assert!(!first[0].cached);
    assert_eq!(first[0].balances[0].amount, -0.25);
    assert_eq!(exhausted(&first), vec![("kimi".to_string(), first[0].fingerprint.clone())]);

    let second = check_all(snap.clone(), &opts, Some(&store), &|| {}).await;
    assert_eq!(provider.count(), 1, "a fresh stored result must not be asked again");
    assert!(second[0].cached);
    assert_eq!(second[0].balances, first[0].balances);

    opts.refresh = true;
    let third = check_all(snap, &opts, Some(&store), &|| {}).await;
    assert_eq!(provider.count(), 2);
    assert!(!third[0].cached);
    assert_eq!(store.history(Some("kimi"), 0).unwrap().len(), 2);
    assert!(!serde_json::to_string(&third).unwrap().contains(MARK));
}
