//! `router discover` through the real binary against mock upstreams on 127.0.0.1:0: model lists that differ per
//! key, OpenRouter-style prices, a failing channel that falls back to its configured models, and Anthropic
//! paging. Also `tags query --discover`, so discovered prices and free models reach routing.

use std::path::Path;

use crate::harness::{Cli, Mock, Out, Recorded, Reply};

/// Serves `handler`'s (status, JSON text) answers on 127.0.0.1:0.
async fn mock(handler: fn(&Recorded) -> (u16, String)) -> Mock {
    Mock::start(move |r, _| {
        let (status, body) = handler(r);
        Reply::json_text(status, body)
    })
    .await
}

/// OpenRouter-like: two keys see different lists; prices per token as strings.
fn openrouter(r: &Recorded) -> (u16, String) {
    if r.uri != "/api/v1/models" {
        return (404, "{}".into());
    }
    match r.header("authorization").as_deref() {
        Some("Bearer sk-or-aaaa") => (
            200,
            r#"{"data": [
                {"id": "qwen/qwen3-235b-a22b", "pricing": {"prompt": "0.0000002", "completion": "0.0000006", "input_cache_read": "0.00000005"},
                 "architecture": {"modality": "text->text"}},
                {"id": "qwen/qwen3-30b-a3b:free", "pricing": {"prompt": "0", "completion": "0"}},
                {"id": "openai/gpt-4o", "pricing": {"prompt": "0.0000025", "completion": "0.00001"}},
                {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
                {"id": "openai/text-embedding-3-small", "architecture": {"output_modalities": ["embeddings"]},
                 "pricing": {"prompt": "0.00000002", "completion": "0"}}
            ]}"#
            .into(),
        ),
        Some("Bearer sk-or-bbbb") => (
            200,
            r#"{"data": [{"id": "moonshotai/kimi-k2:free", "pricing": {"prompt": "0", "completion": "0"}},
                         {"id": "qwen/qwen3-8b", "pricing": {"prompt": "0.00000003", "completion": "0.00000011"}}]}"#
                .into(),
        ),
        _ => (401, r#"{"error": {"message": "No auth credentials found"}}"#.into()),
    }
}

fn broken(_: &Recorded) -> (u16, String) {
    (500, r#"{"error": {"message": "upstream exploded, key sk-broken-cccc"}}"#.into())
}

/// Anthropic: checks the headers, pages of two with `after_id`.
fn anthropic(r: &Recorded) -> (u16, String) {
    if r.header("x-api-key").as_deref() != Some("sk-ant-dddd")
        || r.header("anthropic-version").as_deref() != Some("2023-06-01")
    {
        return (
            401,
            r#"{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}"#.into(),
        );
    }
    if !r.uri.starts_with("/v1/models") {
        return (404, "{}".into());
    }
    if r.uri.contains("after_id=claude-sonnet-4-5") {
        (200, r#"{"data": [{"type": "model", "id": "claude-haiku-4-5"}], "has_more": false, "first_id": "claude-haiku-4-5", "last_id": "claude-haiku-4-5"}"#.into())
    } else {
        (200, r#"{"data": [{"type": "model", "id": "claude-opus-4-1"}, {"type": "model", "id": "claude-sonnet-4-5"}], "has_more": true, "first_id": "claude-opus-4-1", "last_id": "claude-sonnet-4-5"}"#.into())
    }
}

fn config(dir: &Path, or: u16, bad: u16, ant: u16) {
    let yaml = format!(
        r#"
channels:
  - name: openrouter
    base_url: http://127.0.0.1:{or}/api/v1
    priority: 1
    tags: [cloud]
    keys:
      - {{name: or-a, key: sk-or-aaaa}}
      - {{name: or-b, key: sk-or-bbbb}}
  - name: broken
    base_url: http://127.0.0.1:{bad}/v1
    priority: 2
    keys: [sk-broken-cccc]
    models: [qwen2.5-7b-instruct, qwen2.5-72b-instruct]
  - name: claude
    protocol: anthropic
    base_url: http://127.0.0.1:{ant}
    priority: 3
    keys: [{{name: ant, key: sk-ant-dddd}}]
  - name: off
    enabled: false
    base_url: http://127.0.0.1:{bad}/v1
    keys: [sk-off-eeee]
    models: [m]
"#
    );
    std::fs::write(dir.join("router.yaml"), yaml).unwrap();
}

fn router(dir: &Path, args: &[&str]) -> Out {
    Cli::new()
        .config(&dir.join("router.yaml"))
        .args(args)
        .table_width(140)
        // `router discover` saves its results in the store: keep it in the test's directory.
        .env("ROUTER_STORE", dir.join("router.redb"))
        .hiding(&["sk-or-aaaa", "sk-or-bbbb", "sk-broken-cccc", "sk-ant-dddd", "sk-off-eeee"])
        .run()
}

/// The three upstreams (alive while this is) and a config naming them.
struct Setup {
    dir: tempfile::TempDir,
    _openrouter: Mock,
    broken: Mock,
    anthropic: Mock,
}

async fn setup() -> Setup {
    let (or, bad, ant) = (mock(openrouter).await, mock(broken).await, mock(anthropic).await);
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), or.port(), bad.port(), ant.port());
    Setup { dir, _openrouter: or, broken: bad, anthropic: ant }
}

fn ids(v: &serde_json::Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_json_reports_per_token_models_prices_and_fallbacks() {
    let up = setup().await;
    let (dir, broken, anthropic) = (&up.dir, &up.broken, &up.anthropic);
    let o = router(dir.path(), &["discover", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();

    let channels = v["channels"].as_array().unwrap();
    let names: Vec<&str> = channels.iter().map(|c| c["channel"].as_str().unwrap()).collect();
    assert_eq!(names, ["openrouter", "broken", "claude"], "disabled channels are not asked");

    // Two keys of one channel see different models.
    let or = &v["models"]["openrouter"];
    assert_eq!(
        ids(&or["or-a"]),
        [
            "qwen/qwen3-235b-a22b",
            "qwen/qwen3-30b-a3b:free",
            "openai/gpt-4o",
            "openrouter/auto",
            "openai/text-embedding-3-small"
        ]
    );
    assert_eq!(ids(&or["or-b"]), ["moonshotai/kimi-k2:free", "qwen/qwen3-8b"]);
    let qwen = &or["or-a"][0];
    assert_eq!(qwen["price"], serde_json::json!({"input": 0.2, "output": 0.6, "cache_read": 0.05}));
    assert_eq!(qwen["kind"], "chat");
    assert_eq!(or["or-a"][2]["price"], serde_json::json!({"input": 2.5, "output": 10.0}));
    assert_eq!(or["or-a"][3].get("price"), None, "-1 means unknown");
    assert_eq!(or["or-a"][4]["kind"], "embedding");
    assert_eq!(or["or-a"][1]["free"], true);
    let toks = channels[0]["tokens"].as_array().unwrap();
    assert_eq!(toks[0]["token"], "or-a");
    assert_eq!(
        (toks[0]["models"].as_u64(), toks[0]["priced"].as_u64(), toks[0]["free"].as_u64()),
        (Some(5), Some(4), Some(1))
    );
    assert_eq!(toks[1]["token"], "or-b");
    assert_eq!((toks[1]["models"].as_u64(), toks[1]["free"].as_u64()), (Some(2), Some(1)));
    assert_eq!(channels[0]["status"], "ok");

    // The failing channel is reported with its reason (the key it echoed redacted) and falls back.
    let b = &channels[1];
    assert_eq!(b["status"], "failed");
    assert_eq!(b["configured_models"], 2);
    assert_eq!(b["tokens"][0]["status"], "failed");
    assert_eq!(b["tokens"][0]["reason"], "HTTP 500: upstream exploded, key *****");
    assert!(b["tokens"][0]["token"].as_str().unwrap().starts_with("fp:"));
    assert!(v["models"].get("broken").is_none());
    assert_eq!(broken.count(), 1, "disabled channel `off` shares the port but is never asked");

    // Anthropic: two pages, followed with after_id.
    assert_eq!(ids(&v["models"]["claude"]["ant"]), ["claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"]);
    let targets: Vec<String> = anthropic.all().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(targets, ["/v1/models?limit=1000", "/v1/models?limit=1000&after_id=claude-sonnet-4-5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_table_and_channel_filter() {
    let up = setup().await;
    let (dir, broken) = (&up.dir, &up.broken);
    let o = router(dir.path(), &["discover", "--channel", "claude", "--channel", "openrouter"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = "\
┌────────────┬───────┬──────────┬────────┬────────┬──────┬────────┐
│ channel    ┆ token ┆ endpoint ┆ models ┆ priced ┆ free ┆ status │
╞════════════╪═══════╪══════════╪════════╪════════╪══════╪════════╡
│ openrouter ┆ or-a  ┆ default  ┆ 5      ┆ 4      ┆ 1    ┆ ok     │
│ openrouter ┆ or-b  ┆ default  ┆ 2      ┆ 2      ┆ 1    ┆ ok     │
│ claude     ┆ ant   ┆ default  ┆ 3      ┆ 0      ┆ 0    ┆ ok     │
└────────────┴───────┴──────────┴────────┴────────┴──────┴────────┘
";
    assert_eq!(o.stdout, want);
    assert!(o.stderr.contains("3 token(s) asked, 3 ok, 0 failed; 10 models found"), "{}", o.stderr);
    assert!(broken.count() == 0);

    let o = router(dir.path(), &["discover", "--channel", "broken"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("failed: HTTP 500: upstream exploded, key ***** -> 2 configured"), "{}", o.stdout);

    let o = router(dir.path(), &["discover", "--channel", "opnerouter"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("hint: did you mean openrouter?"), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_models_and_prices_reach_routing() {
    let up = setup().await;
    let dir = &up.dir;
    // Without discovery, openrouter lists nothing and `broken` only its configured models.
    let o = router(dir.path(), &["tags", "query", "tag:qwen3", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    let o = router(dir.path(), &["tags", "query", "tag:qwen", "--strategy", "cost_first", "--discover", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("discovery failed for broken"), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let got: Vec<String> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}/{}:{}",
                c["channel"].as_str().unwrap(),
                c["token"].as_str().unwrap(),
                c["model"].as_str().unwrap()
            )
        })
        .collect();
    // Free first, then by estimated cost (discovered prices), unknown prices (the fallback models) last; each
    // model only through the key that can see it.
    let fp = router::usage::fingerprint("sk-broken-cccc");
    assert_eq!(
        got,
        [
            "openrouter/or-a:qwen/qwen3-30b-a3b:free".to_string(),
            "openrouter/or-b:qwen/qwen3-8b".into(),
            "openrouter/or-a:qwen/qwen3-235b-a22b".into(),
            format!("broken/{fp}:qwen2.5-7b-instruct"),
            format!("broken/{fp}:qwen2.5-72b-instruct"),
        ]
    );
    // Bare names use discovered models too.
    let o = router(dir.path(), &["tags", "query", "kimi-free", "--discover", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["candidates"][0]["model"], "moonshotai/kimi-k2:free");
    assert_eq!(v["candidates"][0]["token"], "or-b");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 1);
}
