//! Store channels end to end with the real binary: `router import oneapi` into a temp store (sealed keys,
//! idempotent re-import, name collisions), `router channels ...` directly and through a running `router serve`
//! (which routes on a change at once), and the missing master key error.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Mock, Reply, Router, chat_json, client, dead_port, fixture, run_cli};
use serde_json::{Value, json};

/// Plaintext keys of the one-api fixture (tests/fixtures/oneapi/one-api.db).
const FIXTURE_KEYS: &[&str] = &[
    "sk-test-openai-000000000000000000000001",
    "sk-ant-api03-test-0000000000000000",
    "sk-deepseek-test-00000000000000000000",
    "sk-multi-key-2",
    "sk-siliconflow-test-000000000000",
    "AIzaSy-test-000000000000000000000000",
];
const LIVE_KEY: &str = "sk-live-SECRET-5e7a1c9b3d";

/// Runs the CLI on `store` with `config` (a path that may not exist: then there are no YAML channels).
fn cli(store: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--store", store.to_str().unwrap()]);
    if config.exists() {
        all.extend(["--config", config.to_str().unwrap()]);
    }
    run_cli(&all, &[("ROUTER_TABLE_WIDTH", "160"), ("ROUTER_MASTER_KEY", "")])
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "exit {}\nstdout:\n{}\nstderr:\n{}", r.0, r.1, r.2);
    r.1
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn list(store: &Path, config: &Path) -> Vec<Value> {
    json_of(&ok(cli(store, config, &["channels", "list", "--json"]))).as_array().unwrap().clone()
}

fn import_json(store: &Path, config: &Path, extra: &[&str]) -> (i32, String, String) {
    let f = fixture("oneapi/one-api.db");
    let mut args = vec!["import", "oneapi", f.as_str(), "--yes", "--json"];
    args.extend_from_slice(extra);
    cli(store, config, &args)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

#[test]
fn import_is_sealed_idempotent_and_needs_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("router.redb");
    let no_config = dir.path().join("none.yaml");

    let first = json_of(&ok(import_json(&store, &no_config, &[])));
    assert_eq!(names(&first["commit"]["created"]).len(), 11, "{first:#}");
    assert!(names(&first["commit"]["updated"]).is_empty());
    let channels = list(&store, &no_config);
    assert_eq!(channels.len(), 11);
    assert!(channels.iter().all(|c| c["origin"] == "store" && c["read_only"] == false));

    // Re-import: same channels, all unchanged, no duplicates.
    let second = json_of(&ok(import_json(&store, &no_config, &[])));
    assert_eq!(names(&second["commit"]["unchanged"]).len(), 11, "{second:#}");
    assert!(names(&second["commit"]["created"]).is_empty());
    assert!(names(&second["commit"]["updated"]).is_empty());
    assert_eq!(list(&store, &no_config).len(), 11);

    // A channel disabled locally stays so on re-import; `--reset-state` takes the database's state (an update,
    // not a duplicate).
    ok(cli(&store, &no_config, &["channels", "disable", "DeepSeek", "--reason", "testing"]));
    let third = json_of(&ok(import_json(&store, &no_config, &[])));
    assert_eq!(names(&third["commit"]["unchanged"]).len(), 11, "{third:#}");
    let fourth = json_of(&ok(import_json(&store, &no_config, &["--reset-state"])));
    assert_eq!(names(&fourth["commit"]["updated"]), ["DeepSeek"], "{fourth:#}");
    assert_eq!(list(&store, &no_config).len(), 11);

    // Keys are sealed at rest and never shown.
    let bytes = std::fs::read(&store).unwrap();
    for k in FIXTURE_KEYS {
        assert!(!bytes.windows(k.len()).any(|w| w == k.as_bytes()), "plaintext key {k} in the store file");
    }
    let shown = ok(cli(&store, &no_config, &["channels", "show", "OpenAI 官方"]));
    assert!(!shown.contains(FIXTURE_KEYS[0]), "{shown}");
    assert!(shown.contains(&router::usage::fingerprint(FIXTURE_KEYS[0])), "{shown}");
    assert!(shown.contains("row1"), "{shown}");
    let shown = ok(cli(&store, &no_config, &["channels", "show", "多 Key 渠道", "--json"]));
    assert!(!shown.contains("sk-multi-key"), "{shown}");
    let listed = ok(cli(&store, &no_config, &["channels", "list", "--json"]));
    assert!(FIXTURE_KEYS.iter().all(|k| !listed.contains(k)));

    // Unknown names get suggestions.
    let (code, _, err) = cli(&store, &no_config, &["channels", "show", "deepsek"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("DeepSeek"), "{err}");

    // Without the key file, sealed rows are an error naming the file, never an empty list.
    let key_file = dir.path().join("router.redb.key");
    std::fs::remove_file(&key_file).unwrap();
    for args in [&["channels", "list"][..], &["channels", "show", "DeepSeek"][..]] {
        let (code, out, err) = cli(&store, &no_config, args);
        assert_eq!(code, 1, "{args:?}: {out}\n{err}");
        assert!(err.contains("hint:") && err.contains(key_file.to_str().unwrap()), "{err}");
    }
    // Nor may an import create a fresh key that would orphan the sealed rows.
    let (code, _, err) = import_json(&store, &no_config, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!key_file.exists());
    // serve refuses to start.
    let cfg = dir.path().join("router.yaml");
    std::fs::write(
        &cfg,
        format!("channels:\n  - name: y\n    base_url: http://127.0.0.1:{}/v1\n    keys: [sk-y]\n", dead_port()),
    )
    .unwrap();
    let (code, _, err) = cli(&store, &cfg, &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("hint:") && err.contains(key_file.to_str().unwrap()), "{err}");
}

/// Status of a chat request for `model`, and whether the mock saw a request with `key`.
async fn chat(router: &Router, model: &str) -> u16 {
    client()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls until a chat request for `model` answers with a status `want` accepts (bounded).
async fn until_status(router: &Router, model: &str, want: impl Fn(u16) -> bool) -> u16 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = chat(router, model).await;
        if want(s) || std::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_changes_reach_a_running_server_without_restart() {
    let mock =
        Mock::start(|r, _| Reply::Json(200, chat_json(r.json()["model"].as_str().unwrap_or("?"), "hi", 3, 1))).await;
    let yaml = format!(
        "channels:\n  - name: yaml-one\n    base_url: {u}\n    keys: [sk-yaml-one]\n    models: [yaml-model]\n  - name: DeepSeek\n    base_url: {u}\n    keys: [sk-yaml-two]\n    models: [other-model]\n",
        u = mock.openai_url()
    );
    let router = Router::start(&yaml);
    let (store, cfg) = (router.store_path(), router.config_path());
    assert_eq!(until_status(&router, "yaml-model", |s| s == 200).await, 200);
    assert!(chat(&router, "live-model").await >= 400);

    // Add through the control socket: the server routes to it at once.
    let base = mock.openai_url();
    let (code, _, err) = cli(
        &store,
        &cfg,
        &[
            "channels",
            "add",
            "--name",
            "live",
            "--protocol",
            "openai",
            "--base-url",
            &base,
            "--key",
            LIVE_KEY,
            "--model",
            "live-model",
            "--priority",
            "-1",
            "--tag",
            "test",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("running server applied it"), "{err}");
    assert_eq!(until_status(&router, "live-model", |s| s == 200).await, 200, "{}", router.stderr());
    let last = mock.last();
    assert_eq!(last.header("authorization").as_deref(), Some(format!("Bearer {LIVE_KEY}").as_str()));
    assert!(!std::fs::read(&store).unwrap().windows(LIVE_KEY.len()).any(|w| w == LIVE_KEY.as_bytes()));

    let all = list(&store, &cfg);
    let yaml_one = all.iter().find(|c| c["name"] == "yaml-one").unwrap();
    assert_eq!(yaml_one["read_only"], true);
    assert_eq!(yaml_one["origin"], cfg.display().to_string());
    let live = all.iter().find(|c| c["name"] == "live").unwrap();
    assert_eq!(live["tags"], json!(["test"]));
    assert_eq!(live["priority"], -1);
    let shown = ok(cli(&store, &cfg, &["channels", "show", "live"]));
    assert!(!shown.contains(LIVE_KEY) && shown.contains(&router::usage::fingerprint(LIVE_KEY)), "{shown}");

    // A second channel of the same name, in the store or the YAML, is refused.
    let (code, _, err) =
        cli(&store, &cfg, &["channels", "add", "--name", "live", "--base-url", &base, "--key", "sk-other"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) =
        cli(&store, &cfg, &["channels", "add", "--name", "yaml-one", "--base-url", &base, "--key", "sk-other"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("router.yaml"), "{err}");

    // Disable: its model is no longer served; enable: served again.
    ok(cli(&store, &cfg, &["channels", "disable", "live", "--reason", "maintenance"]));
    let s = until_status(&router, "live-model", |s| s == 404 || s == 503).await;
    assert!(s == 404 || s == 503, "status {s}");
    let all = list(&store, &cfg);
    let live = all.iter().find(|c| c["name"] == "live").unwrap();
    assert_eq!((live["enabled"].clone(), live["disabled_reason"].clone()), (json!(false), json!("maintenance")));
    ok(cli(&store, &cfg, &["channels", "enable", "live"]));
    assert_eq!(until_status(&router, "live-model", |s| s == 200).await, 200);

    // YAML channels are read-only.
    let (code, _, err) = cli(&store, &cfg, &["channels", "disable", "yaml-one"]);
    assert_eq!(code, 1);
    assert!(err.contains("defined in") && err.contains("edit it there"), "{err}");

    // Remove asks first; without a terminal it needs --yes.
    let (code, _, err) = cli(&store, &cfg, &["channels", "remove", "live"]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    ok(cli(&store, &cfg, &["channels", "remove", "live", "--yes"]));
    let s = until_status(&router, "live-model", |s| s == 404 || s == 503).await;
    assert!(s == 404 || s == 503, "status {s}");
    assert!(list(&store, &cfg).iter().all(|c| c["name"] != "live"));

    // Import through the server: `DeepSeek` is a YAML channel, so the import is refused as a whole.
    let (code, _, err) = import_json(&store, &cfg, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("DeepSeek") && err.contains("--prefix"), "{err}");
    assert_eq!(list(&store, &cfg).len(), 2, "nothing was imported");
    // A store channel of another origin also blocks the name.
    ok(cli(&store, &cfg, &["channels", "add", "--name", "oa-OpenRouter", "--base-url", &base, "--key", "sk-x"]));
    let (code, _, err) = import_json(&store, &cfg, &["--prefix", "oa-"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("oa-OpenRouter") && err.contains("--prefix"), "{err}");
    ok(cli(&store, &cfg, &["channels", "remove", "oa-OpenRouter", "--yes"]));
    let done = json_of(&ok(import_json(&store, &cfg, &["--prefix", "oa-"])));
    assert_eq!(names(&done["commit"]["created"]).len(), 11);
    assert_eq!(list(&store, &cfg).len(), 13);
    let again = json_of(&ok(import_json(&store, &cfg, &["--prefix", "oa-"])));
    assert_eq!(names(&again["commit"]["unchanged"]).len(), 11);
    // The server took the imported channels into its catalogue (it still answers, and logged no rebuild error).
    assert_eq!(until_status(&router, "yaml-model", |s| s == 200).await, 200);
    assert!(!router.stderr().contains("could not be rebuilt"), "{}", router.stderr());
}
