//! Issue 20's loose ends, end to end through the real binary against mock upstreams on 127.0.0.1:0.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Mock, Reply};
use serde_json::json;

/// The CLI, run without blocking the runtime the mocks live on.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    tokio::task::block_in_place(|| common::run_cli(args, env))
}

/// 1. `balance check` on a machine where `serve` never ran creates the store at the usual path (private, like
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
    common::write(
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

/// 1. `router test MODEL` spends tokens on a real request: its record is kept in the store (created when missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_command_keeps_its_requests_in_a_new_store() {
    let mock = Mock::start(|r, _| {
        if r.uri.ends_with("/models") {
            Reply::Json(200, json!({"object": "list", "data": [{"id": "m1"}]}))
        } else {
            Reply::Json(200, common::chat_json("m1", "hi", 7, 2))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    common::write(
        &cfg,
        &format!(
            "channels:\n  - name: c\n    base_url: {}\n    models: [m1]\n    keys: [sk-test-1]\n",
            mock.openai_url()
        ),
    );
    let store = dir.path().join("s/router.redb");
    let (cfg, st) = (cfg.to_str().unwrap(), store.to_str().unwrap());
    let (code, out, err) = cli(&["--config", cfg, "--store", st, "test", "m1"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["--config", cfg, "--store", st, "requests", "--json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let recs = v.as_array().cloned().unwrap_or_else(|| v["requests"].as_array().cloned().unwrap_or_default());
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(recs[0]["channel"], "c");
}
