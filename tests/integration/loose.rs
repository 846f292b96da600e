//! Issue 20's loose ends, end to end through the real binary against mock upstreams on 127.0.0.1:0.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::harness::*;

/// The CLI, run without blocking the runtime the mocks live on.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    tokio::task::block_in_place(|| run_cli(args, env))
}

/// A temporary directory holding `router.yaml` and a store path: every CLI run gets `--config` and `--store`.
struct Setup {
    dir: tempfile::TempDir,
    base: [String; 4],
}

impl Setup {
    fn new(yaml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, store) = (dir.path().join("router.yaml"), dir.path().join("s/router.redb"));
        write(&cfg, yaml);
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let base = ["--config".into(), path(&cfg), "--store".into(), path(&store)];
        Setup { dir, base }
    }

    /// `router --config .. --store .. ARGS` with `env`: (exit code, stdout, stderr).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let all: Vec<&str> = self.base.iter().map(String::as_str).chain(args.iter().copied()).collect();
        cli(&all, env)
    }

    /// [`Setup::run`] that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    }
}

/// Item 1: `balance check` on a machine where `serve` never ran creates the store at the usual path (private, like
/// `serve`'s), so `balance history` in the next crontab line has something to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_check_creates_the_store_for_history() {
    let mock = Mock::start(|_, _| {
        Reply::Json(
            200,
            json!({"is_available": true, "balance_infos": [{"currency": "CNY", "total_balance": "42.00",
                "granted_balance": "0.00", "topped_up_balance": "42.00"}]}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(
        &cfg,
        &format!(
            "channels:\n  - name: ds\n    base_url: https://api.deepseek.com\n    balance: {{kind: deepseek, url: \"{}\"}}\n    keys: [{{name: main, key: sk-test-1}}]\n",
            mock.root_url()
        ),
    );
    let data = dir.path().join("data");
    let env = [("XDG_DATA_HOME", data.to_str().unwrap()), ("HOME", dir.path().to_str().unwrap())];
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = cli(&["--config", cfg, "balance", "check", "--json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let store = data.join("router/router.redb");
    assert!(store.exists(), "balance check did not create {}", store.display());
    assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, out, err) = cli(&["--config", cfg, "balance", "history", "--json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(rows[0]["channel"], "ds");
}

/// Item 1: `router test MODEL` spends tokens on a real request: its record is kept in the store (created when missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_command_keeps_its_requests_in_a_new_store() {
    let mock = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            Reply::Json(200, json!({"object": "list", "data": [{"id": "m1"}]}))
        } else {
            Reply::Json(200, chat_json("m1", "hi", 7, 2))
        }
    })
    .await;
    let setup = Setup::new(&format!(
        "channels:\n  - name: c\n    base_url: {}\n    models: [m1]\n    keys: [sk-test-1]\n",
        mock.openai_url()
    ));
    setup.ok(&["test", "m1"]);
    assert!(setup.dir.path().join("s/router.redb").exists());
    let out = setup.ok(&["requests", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let recs = v.as_array().cloned().unwrap_or_else(|| v["requests"].as_array().cloned().unwrap_or_default());
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(recs[0]["channel"], "c");
}

/// Item 3: Zero-config honours OPENAI_BASE_URL (the SDK's own variable) and shows it in the start-up summary. (That a
/// variable pointing at the router itself is ignored is `config::autodetect`'s unit test: it needs a fixed port.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_honours_base_url_variables() {
    let mock = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "hi", 3, 1))).await;
    let home = tempfile::tempdir().unwrap();
    let openai = mock.openai_url();
    let env =
        [("OPENAI_API_KEY", "sk-test-openai"), ("OPENAI_BASE_URL", openai.as_str()), ("ROUTER_NO_LOCAL_PROBE", "1")];
    let router = Router::zero_config(home.path(), &env);
    let want = format!("openai from $OPENAI_API_KEY at {openai} ($OPENAI_BASE_URL)");
    assert!(
        eventually(std::time::Duration::from_secs(10), || router.stdout().contains(&want)).await,
        "{}",
        router.stdout()
    );
    let r = client()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(mock.all().iter().any(|r| r.uri == "/v1/chat/completions"));
    assert_eq!(mock.last().header("authorization").as_deref(), Some("Bearer sk-test-openai"));
}

/// Item 4: Endpoints of one priority carry a weight, and `tags query` shows priority / weight per candidate.
#[test]
fn tags_query_shows_endpoint_priority_and_weight() {
    let setup = Setup::new(
        "channels:\n  - name: c\n    models: [m]\n    endpoints:\n      - {name: a, base_url: https://a.example/v1, weight: 3, keys: [k1]}\n      - {name: b, base_url: https://b.example/v1, keys: [k2]}\n      - {name: z, base_url: https://z.example/v1, priority: 1, keys: [k3]}\n",
    );
    let out = setup.ok(&["tags", "query", "m", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows: Vec<(String, i64, u64)> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let prio = c["endpoint_priority"].as_i64().unwrap_or(0);
            (c["endpoint"].as_str().unwrap().to_string(), prio, c["endpoint_weight"].as_u64().unwrap_or(1))
        })
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2], ("z".to_string(), 1, 1));
    assert!(rows.contains(&("a".to_string(), 0, 3)), "{rows:?}");
    let out = setup.ok(&["tags", "query", "m"]);
    assert!(out.contains("prio/weight") && out.contains("0/3"), "{out}");
}

/// Item 6: Context windows from discovery (`context_length`) and from config: a long request skips the short-window
/// model ("context too long") and `tags query --input-tokens N` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_windows_exclude_short_models_for_long_requests() {
    let mock = Mock::start(|_, _| {
        Reply::Json(
            200,
            json!({"object": "list", "data": [
                {"id": "vendor/short-coder", "context_length": 8192},
                {"id": "vendor/long-coder", "context_length": 1000000}
            ]}),
        )
    })
    .await;
    let setup = Setup::new(&format!(
        "channels:\n  - name: up\n    base_url: {}\n    keys: [sk-test-1]\n  - name: cfg\n    base_url: https://cfg.example/v1\n    priority: 5\n    models: [vendor/mid-coder]\n    context_window: {{vendor/mid-coder: 32000}}\n    keys: [sk-test-2]\n",
        mock.openai_url()
    ));
    setup.ok(&["discover"]);
    let query = |n: &str| {
        let out = setup.ok(&["tags", "query", "tag:coder", "--input-tokens", n, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let models: Vec<String> =
            v["candidates"].as_array().unwrap().iter().map(|c| c["model"].as_str().unwrap().to_string()).collect();
        let excluded: Vec<String> = v["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e["model"].as_str().unwrap(), e["reason"].as_str().unwrap()))
            .collect();
        (models, excluded)
    };
    let (models, _) = query("1000");
    assert_eq!(models.len(), 3, "{models:?}");
    let (models, excluded) = query("20000");
    assert_eq!(models, ["vendor/long-coder", "vendor/mid-coder"]);
    assert!(excluded.iter().any(|e| e.starts_with("vendor/short-coder context too long")), "{excluded:?}");
    let (models, excluded) = query("100000");
    assert_eq!(models, ["vendor/long-coder"]);
    assert_eq!(excluded.len(), 2, "{excluded:?}");
}

/// Item 7: Two One-API instances imported into one store never update each other's channels, and a re-import keeps
/// a channel disabled locally unless `--reset-state`.
#[test]
fn oneapi_imports_are_per_database_and_keep_local_state() {
    let setup = Setup::new("channels: []\n");
    // Two instances: two copies of one database at two paths.
    let (a, b) = (setup.dir.path().join("a/one-api.db"), setup.dir.path().join("b/one-api.db"));
    for p in [&a, &b] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(fixture("oneapi/one-api.db"), p).unwrap();
    }
    let run = |args: &[&str]| setup.ok(args);
    let list = || -> Vec<(String, bool, String)> {
        let v: serde_json::Value = serde_json::from_str(&run(&["channels", "list", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let c = if e.get("channel").is_some() { &e["channel"] } else { e };
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["enabled"].as_bool().unwrap(),
                    c["source"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    run(&["import", "oneapi", a, "--yes"]);
    let first = list();
    assert!(!first.is_empty());
    run(&["import", "oneapi", b, "--yes", "--prefix", "b-"]);
    let both = list();
    assert_eq!(both.len(), 2 * first.len(), "the second instance's channels sit beside the first's: {both:?}");
    for c in &first {
        assert!(both.contains(c), "{c:?} was changed by importing another database");
    }
    let name = first.iter().find(|c| c.1).map(|c| c.0.clone()).unwrap();
    run(&["channels", "disable", &name]);
    run(&["import", "oneapi", a, "--yes"]);
    assert!(list().iter().any(|c| c.0 == name && !c.1), "re-import re-enabled `{name}`");
    run(&["import", "oneapi", a, "--yes", "--reset-state"]);
    assert!(list().iter().any(|c| c.0 == name && c.1), "--reset-state did not take the database's state");
}

/// Item 8: `config check` lists the store's channels too, by origin, and warns about channels that can never be chosen.
#[test]
fn config_check_lists_store_channels_and_warns_about_unreachable_ones() {
    let setup = Setup::new(
        "channels:\n  - name: ok\n    base_url: https://ok.example/v1\n    models: [m]\n    keys: [sk-1]\n  - name: nomodels\n    base_url: https://n.example/v1\n    keys: [sk-2]\n  - name: keysoff\n    base_url: https://k.example/v1\n    models: [m]\n    keys: [{name: k, key: sk-3, enabled: false}]\n  - name: pinned\n    models: [m]\n    endpoints:\n      - {name: e, base_url: https://p.example/v1, failover_enabled: false, keys: [sk-4]}\n",
    );
    let env = [("ROUTER_MASTER_KEY", "")];
    let (code, out, err) = setup.run(&["import", "oneapi", &fixture("oneapi/one-api.db"), "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = setup.run(&["config", "check", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let origin =
        |name: &str| v["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).map(|c| c["origin"].clone());
    assert_eq!(origin("ok"), Some(json!("config")));
    assert_eq!(origin("OpenAI 官方"), Some(json!("imported")));
    let warnings = v["warnings"].to_string();
    for name in ["nomodels", "keysoff", "pinned"] {
        assert!(warnings.contains(&format!("`{name}` can never be chosen")), "{warnings}");
    }
    assert!(!warnings.contains("`ok`"), "{warnings}");
    let (code, _, err) = setup.run(&["config", "check"], &env);
    assert_eq!(code, 0);
    assert!(err.contains("warning: channel `nomodels` can never be chosen"), "{err}");
}

/// Item 9: Discovery and fast-test timeouts are config keys: a hanging upstream costs what the config says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_fast_test_timeouts_come_from_the_config() {
    let mock = Mock::start(|_, _| Reply::Hang).await;
    let setup = Setup::new(&format!(
        "routing:\n  fast_test_timeout: 200ms\ndiscovery:\n  timeout: 300ms\nchannels:\n  - name: slow\n    base_url: {}\n    models: [m]\n    keys: [sk-test-1]\n",
        mock.openai_url()
    ));
    let t = std::time::Instant::now();
    let (_, out, err) = setup.run(&["discover", "--json"], &[]);
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "discover took {:?}: {out}{err}", t.elapsed());
    let t = std::time::Instant::now();
    setup.ok(&["tags", "query", "m", "--strategy", "fastest"]);
    assert!(t.elapsed() < std::time::Duration::from_millis(1500), "fast test took {:?}", t.elapsed());
}

/// Item 5: Requests missing what their endpoint needs are 400 before routing, in the client's shape, and never reach
/// an upstream; a valid request still goes through byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_missing_required_fields_are_400_before_routing() {
    let oai = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "hi", 3, 1))).await;
    let ant = Mock::start(|_, _| Reply::Json(200, messages_json("claude-x", "hi"))).await;
    let router = Router::start(&format!(
        "channels:\n  - name: o\n    base_url: {}\n    models: [gpt-4o, text-embedding-3-small, gpt-4o-r]\n    responses_api: chat\n    keys: [sk-test-1]\n  - name: a\n    protocol: anthropic\n    base_url: {}\n    models: [claude-x]\n    keys: [sk-test-2]\n",
        oai.openai_url(),
        ant.root_url()
    ));
    let c = client();
    let cases: [(&str, serde_json::Value, &str); 6] = [
        ("/v1/chat/completions", json!({"model": "gpt-4o"}), "messages"),
        ("/v1/messages", json!({"model": "claude-x", "max_tokens": 5}), "messages"),
        ("/v1/messages", json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}), "max_tokens"),
        ("/v1/messages/count_tokens", json!({"model": "claude-x"}), "messages"),
        ("/v1/embeddings", json!({"model": "text-embedding-3-small"}), "input"),
        ("/v1/responses", json!({"model": "gpt-4o-r", "instructions": "be brief"}), "input"),
    ];
    for (path, body, field) in cases {
        let r = c.post(router.url(path)).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(&format!("`{field}` is required")), "{v}");
        if path.starts_with("/v1/messages") {
            assert_eq!(v["type"], "error", "Anthropic shape: {v}");
        } else {
            assert!(v.get("type").is_none(), "OpenAI shape: {v}");
        }
    }
    assert_eq!(oai.count() + ant.count(), 0, "no upstream saw an invalid request");
    let body = r#"{"model":"gpt-4o",  "messages":[{"role":"user","content":"hi"}], "x_extra": 1}"#;
    let r = c.post(router.url("/v1/chat/completions")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&oai.last().body[..], body.as_bytes(), "forwarded byte for byte");
}

/// Item 10: Legacy completions (with `suffix` for fill-in-the-middle) pass through to OpenAI-protocol channels,
/// streaming included, with usage recorded; a model served only by Anthropic channels is a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completions_pass_through_and_are_metered() {
    let oai = Mock::start(|r, _| {
        let v = r.json();
        if v["stream"] == true {
            let mut ev = vec![
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"x = \",\"index\":0,\"finish_reason\":null}],\"model\":\"codestral\"}\n\n".to_string(),
                "data: {\"id\":\"c\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"1\",\"index\":0,\"finish_reason\":\"stop\"}],\"model\":\"codestral\"}\n\n".to_string(),
            ];
            if v["stream_options"]["include_usage"] == true {
                ev.push("data: {\"id\":\"c\",\"object\":\"text_completion\",\"choices\":[],\"model\":\"codestral\",\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":2,\"total_tokens\":23}}\n\n".into());
            }
            ev.push("data: [DONE]\n\n".into());
            Reply::Sse(ev)
        } else {
            Reply::Json(
                200,
                json!({"id": "cmpl-1", "object": "text_completion", "model": "codestral",
                    "choices": [{"text": "x = 1", "index": 0, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}}),
            )
        }
    })
    .await;
    let ant = Mock::start(|_, _| Reply::Json(200, messages_json("claude-x", "hi"))).await;
    let router = Router::start(&format!(
        "channels:\n  - name: o\n    base_url: {}\n    models: [codestral]\n    keys: [sk-test-1]\n  - name: a\n    protocol: anthropic\n    base_url: {}\n    models: [claude-x]\n    keys: [sk-test-2]\n",
        oai.openai_url(),
        ant.root_url()
    ));
    let c = client();
    let fim = json!({"model": "codestral", "prompt": "def f():\n    ", "suffix": "\n    return x", "max_tokens": 16});
    let r = c.post(router.url("/v1/completions")).json(&fim).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["choices"][0]["text"], "x = 1");
    assert!(oai.last().uri.ends_with("/v1/completions"), "{}", oai.last().uri);
    assert_eq!(oai.last().json()["suffix"], "\n    return x");

    let mut stream = fim.clone();
    stream["stream"] = json!(true);
    let r = c.post(router.url("/v1/completions")).json(&stream).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("x = ") && text.contains("[DONE]"), "{text}");
    assert!(!text.contains("\"usage\""), "the usage chunk the client did not ask for is hidden: {text}");

    let r =
        c.post(router.url("/v1/completions")).json(&json!({"model": "claude-x", "prompt": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<serde_json::Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("legacy completions") && msg.contains("anthropic"), "{msg}");
    assert_eq!(ant.count(), 0);

    let recs = router.records();
    let tokens: Vec<(u64, u64)> = recs
        .iter()
        .filter(|r| r["path"] == "/v1/completions" && r["outcome"] == "ok")
        .map(|r| (r["tokens"]["input"].as_u64().unwrap(), r["tokens"]["output"].as_u64().unwrap()))
        .collect();
    assert_eq!(tokens.len(), 2, "{recs:?}");
    assert!(tokens.contains(&(20, 4)) && tokens.contains(&(21, 2)), "{tokens:?}");
}

/// Item 11: `GET /api/v1/models[/{id}]`: an OpenRouter-shaped catalogue of every routable model, `?tag=` filters,
/// `?sort=price` orders by price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouter_shaped_catalogue() {
    let router = Router::start(
        "server:\n  keys: [{name: me, key: sk-gw-1}]\nchannels:\n  - name: paid\n    base_url: https://paid.example/v1\n    models: [openai/gpt-4o, qwen/qwen3-8b, text-embedding-3-small]\n    pricing:\n      openai/gpt-4o: {input: 2.5, output: 10, cache_read: 1.25}\n      qwen/qwen3-8b: {input: 0.1, output: 0.2}\n    context_window: {openai/gpt-4o: 128000}\n    keys: [sk-test-1]\n  - name: cheap\n    base_url: https://cheap.example/v1\n    models: [qwen/qwen3-8b, qwen/qwen3-30b-a3b:free]\n    pricing: {qwen/qwen3-8b: {input: 0.05, output: 0.1}}\n    keys: [sk-test-2]\n",
    );
    let c = client();
    let get = |path: &str| {
        let c = c.clone();
        let url = router.url(path);
        async move {
            let r = c.get(url).bearer_auth("sk-gw-1").send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(c.get(router.url("/api/v1/models")).send().await.unwrap().status(), 401);
    let (status, v) = get("/api/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["openai/gpt-4o", "qwen/qwen3-30b-a3b:free", "qwen/qwen3-8b", "text-embedding-3-small"]);
    let gpt = &v["data"][0];
    assert_eq!(gpt["context_length"], 128000);
    assert_eq!(
        gpt["pricing"],
        json!({"prompt": "0.0000025", "completion": "0.00001", "input_cache_read": "0.00000125"})
    );
    assert_eq!(gpt["architecture"]["output_modalities"], json!(["text"]));
    assert_eq!(v["data"][3]["architecture"]["output_modalities"], json!(["embeddings"]));
    let qwen = &v["data"][2];
    assert_eq!(qwen["pricing"]["prompt"], "0.00000005", "the cheapest channel's price");
    assert_eq!(qwen["channels"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["free"], true);

    let (_, v) = get("/api/v1/models?tag=free").await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["qwen/qwen3-30b-a3b:free"]);
    let (_, v) = get("/api/v1/models?tag=qwen,!free&sort=price").await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["qwen/qwen3-8b"]);
    let (_, v) = get("/api/v1/models?sort=price").await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["qwen/qwen3-30b-a3b:free", "qwen/qwen3-8b", "openai/gpt-4o", "text-embedding-3-small"]);

    let (status, v) = get("/api/v1/models/openai/gpt-4o").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["id"], "openai/gpt-4o");
    let (status, v) = get("/api/v1/models/openai%2Fgpt-4o").await;
    assert_eq!(status, 200, "an encoded `/` names the same model");
    assert_eq!(v["data"]["id"], "openai/gpt-4o");
    let (status, v) = get("/api/v1/models/nope").await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
}

/// Item 2: a script that sends a request and at once runs `router requests` sees it (the socket query waits for
/// the records already queued; without that, none of these were visible yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_read_their_own_writes() {
    let mock = Mock::start(|_, _| Reply::Json(200, chat_json("m", "hi", 3, 1))).await;
    let router = Router::start(&format!(
        "channels:\n  - name: o\n    base_url: {}\n    models: [m]\n    keys: [sk-1]\n",
        mock.openai_url()
    ));
    let store = router.store_path();
    for _ in 0..5 {
        let r = client()
            .post(router.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-router-request-id"].to_str().unwrap().to_string();
        r.bytes().await.unwrap();
        let (code, out, err) = cli(&["requests", "--json", "--limit", "1", "--store", store.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&id[id.len() - 12..]), "request {id} not visible yet: {out}");
    }
}

/// Item 6 through the server: a request too long for the short-window model goes to the long one; one too long for
/// every model is the client's 400 (`context_length_exceeded`), not a 503 to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_requests_fall_back_to_long_context_models() {
    let short = Mock::start(|_, _| Reply::Json(200, chat_json("s", "short", 3, 1))).await;
    let long = Mock::start(|_, _| Reply::Json(200, chat_json("l", "long", 3, 1))).await;
    let router = Router::start(&format!(
        "channels:\n  - name: short\n    base_url: {}\n    models: [coder-s]\n    tags: [coder]\n    context_window: {{coder-s: 4000}}\n    keys: [sk-1]\n  - name: long\n    base_url: {}\n    priority: 1\n    models: [coder-l]\n    tags: [coder]\n    context_window: {{coder-l: 40000}}\n    keys: [sk-2]\n",
        short.openai_url(),
        long.openai_url()
    ));
    let ask = |chars: usize| {
        let body = json!({"model": "tag:coder", "max_tokens": 100,
            "messages": [{"role": "user", "content": "x".repeat(chars)}]});
        let c = client();
        let url = router.url("/v1/chat/completions");
        async move { c.post(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(ask(100).await.headers()["x-router-channel"], "short");
    assert_eq!(ask(40_000).await.headers()["x-router-channel"], "long");
    let r = ask(400_000).await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(short.count() + long.count(), 2);
}
