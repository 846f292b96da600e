//! `router tags list` / `router tags query` through the real binary: output snapshots (JSON exactly, tables at a
//! fixed width), negatives, bare names, gateway-key limits and the exit-1 hint when nothing matches.

use std::path::Path;

use crate::harness::{Cli, Out};

const CONFIG: &str = r#"
server:
  keys:
    - {name: freebie, key: gw-free, allow: "tag:free"}
channels:
  - name: openrouter
    base_url: https://openrouter.example/api/v1
    priority: 1
    keys: [{name: or-main, key: sk-or-secret}]
    models: [qwen/qwen3-235b-a22b, qwen/qwen3-30b-a3b:free, moonshotai/kimi-k2:free, openai/gpt-4o]
    pricing:
      qwen/qwen3-235b-a22b: {input: 0.2, output: 0.6}
      openai/gpt-4o: {input: 2.5, output: 10}
  - name: silicon
    base_url: https://api.siliconflow.example/v1
    priority: 2
    keys: [{name: sf, key: sk-sf-secret}]
    models: [Qwen/Qwen3-8B, BAAI/bge-m3]
  - name: ollama
    base_url: http://127.0.0.1:9/v1
    priority: 3
    models: ["qwen3:8b"]
  - name: claude
    protocol: anthropic
    base_url: https://api.anthropic.example
    keys: [{name: ant, key: sk-ant-secret}]
    models: [claude-sonnet-4-5]
"#;

/// `router --config DIR/router.yaml ARGS` with tables 140 wide; fails the test when a key leaks.
fn router(dir: &Path, args: &[&str]) -> Out {
    Cli::new().config(&dir.join("router.yaml")).args(args).table_width(140).hiding(&["secret"]).run()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("router.yaml"), CONFIG).unwrap();
    dir
}

#[test]
fn tags_list_json_snapshot() {
    let dir = setup();
    let got = router(dir.path(), &["tags", "list", "--channel", "silicon", "--channel", "ollama", "--json"]).json();
    let want = serde_json::json!([
        {"tag": "8b", "models": 2, "channels": ["silicon", "ollama"]},
        {"tag": "baai", "models": 1, "channels": ["silicon"]},
        {"tag": "bge", "models": 1, "channels": ["silicon"]},
        {"tag": "local", "models": 1, "channels": ["ollama"]},
        {"tag": "m3", "models": 1, "channels": ["silicon"]},
        {"tag": "qwen", "models": 2, "channels": ["silicon", "ollama"]},
        {"tag": "qwen3", "models": 2, "channels": ["silicon", "ollama"]}
    ]);
    assert_eq!(got, want);
}

#[test]
fn tags_list_table_snapshot() {
    let dir = setup();
    let o = router(dir.path(), &["tags", "list", "--channel", "ollama"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = "\
┌───────┬────────┬──────────┐
│ tag   ┆ models ┆ channels │
╞═══════╪════════╪══════════╡
│ 8b    ┆ 1      ┆ ollama   │
│ local ┆ 1      ┆ ollama   │
│ qwen  ┆ 1      ┆ ollama   │
│ qwen3 ┆ 1      ┆ ollama   │
└───────┴────────┴──────────┘
";
    assert_eq!(o.stdout, want);
}

#[test]
fn query_with_a_negative_json_snapshot() {
    let dir = setup();
    let got = router(dir.path(), &["tags", "query", "tag:qwen,!free", "--json"]).json();
    let want = serde_json::json!({
        "query": "tag:qwen,!free",
        "strategy": "priority",
        "resolved_by": "tag",
        "candidates": [
            {"rank": 1, "channel": "openrouter", "endpoint": "default", "token": "or-main",
             "model": "qwen/qwen3-235b-a22b", "price": {"input": 0.2, "output": 0.6}, "free": false, "local": false,
             "latency_ms": null, "score": null},
            {"rank": 2, "channel": "silicon", "endpoint": "default", "token": "sf", "model": "Qwen/Qwen3-8B",
             "price": null, "free": false, "local": false, "latency_ms": null, "score": null},
            {"rank": 3, "channel": "ollama", "endpoint": "default", "token": "none", "model": "qwen3:8b",
             "price": null, "free": false, "local": true, "latency_ms": null, "score": null}
        ],
        "excluded": []
    });
    assert_eq!(got, want);
}

#[test]
fn query_table_snapshot() {
    let dir = setup();
    let o = router(dir.path(), &["tags", "query", "tag:qwen,!free"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = "\
tag:qwen,!free: 3 candidate(s), strategy priority, resolved by tag
┌───┬────────────┬──────────┬─────────┬──────────────────────┬────────┬─────────┬──────┬───────┬─────────┬───────┐
│ # ┆ channel    ┆ endpoint ┆ token   ┆ model                ┆ in $/M ┆ out $/M ┆ free ┆ local ┆ latency ┆ score │
╞═══╪════════════╪══════════╪═════════╪══════════════════════╪════════╪═════════╪══════╪═══════╪═════════╪═══════╡
│ 1 ┆ openrouter ┆ default  ┆ or-main ┆ qwen/qwen3-235b-a22b ┆ 0.2    ┆ 0.6     ┆ no   ┆ no    ┆ -       ┆ -     │
│ 2 ┆ silicon    ┆ default  ┆ sf      ┆ Qwen/Qwen3-8B        ┆ ?      ┆ ?       ┆ no   ┆ no    ┆ -       ┆ -     │
│ 3 ┆ ollama     ┆ default  ┆ none    ┆ qwen3:8b             ┆ ?      ┆ ?       ┆ no   ┆ yes   ┆ -       ┆ -     │
└───┴────────────┴──────────┴─────────┴──────────────────────┴────────┴─────────┴──────┴───────┴─────────┴───────┘
";
    assert_eq!(o.stdout, want);
}

fn models(v: &serde_json::Value) -> Vec<String> {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c["channel"].as_str().unwrap(), c["model"].as_str().unwrap()))
        .collect()
}

#[test]
fn negatives_and_strategies_change_the_candidates() {
    let dir = setup();
    let v = router(dir.path(), &["tags", "query", "tag:qwen,!local,!free", "--json"]).json();
    assert_eq!(models(&v), ["openrouter:qwen/qwen3-235b-a22b", "silicon:Qwen/Qwen3-8B"]);
    let v = router(dir.path(), &["tags", "query", "tag:qwen", "--strategy", "local_first", "--json"]).json();
    assert_eq!(models(&v)[0], "ollama:qwen3:8b");
    let v = router(dir.path(), &["tags", "query", "tag:qwen", "--strategy", "free_first", "--json"]).json();
    assert_eq!(models(&v)[0], "openrouter:qwen/qwen3-30b-a3b:free");
    // Free first, then the known price, unknown prices last (in priority order).
    let v = router(dir.path(), &["tags", "query", "tag:qwen", "--strategy", "cost_first", "--json"]).json();
    assert_eq!(
        models(&v),
        [
            "openrouter:qwen/qwen3-30b-a3b:free",
            "openrouter:qwen/qwen3-235b-a22b",
            "silicon:Qwen/Qwen3-8B",
            "ollama:qwen3:8b"
        ]
    );
    let v = router(dir.path(), &["tags", "query", "tag:qwen,!free", "--strategy", "balanced", "--json"]).json();
    let score = &v["candidates"][0]["score"];
    assert!(score["total"].as_f64().unwrap() > 0.0, "{v}");
    for part in ["cost", "speed", "quality", "reliability"] {
        assert!(score[part].is_number(), "{part}: {v}");
    }
}

#[test]
fn bare_names_are_read_as_tags() {
    let dir = setup();
    let v = router(dir.path(), &["tags", "query", "kimi-free", "--json"]).json();
    assert_eq!(v["resolved_by"], "tags");
    assert_eq!(models(&v), ["openrouter:moonshotai/kimi-k2:free"]);
    let v = router(dir.path(), &["tags", "query", "gpt-4o", "--json"]).json();
    assert_eq!(v["resolved_by"], "suffix");
    assert_eq!(models(&v), ["openrouter:openai/gpt-4o"]);
}

#[test]
fn nothing_matches_exits_1_with_close_tags() {
    let dir = setup();
    let o = router(dir.path(), &["tags", "query", "tag:qwne"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("error: nothing matches `tag:qwne`"), "{}", o.stderr);
    assert!(o.stderr.contains("hint: close tags: qwen"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
    // An embedding model is never a chat candidate.
    let o = router(dir.path(), &["tags", "query", "BAAI/bge-m3"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    let v = router(dir.path(), &["tags", "query", "BAAI/bge-m3", "--embedding", "--json"]).json();
    assert_eq!(models(&v), ["silicon:BAAI/bge-m3"]);
}

#[test]
fn protocol_and_gateway_key_limits() {
    let dir = setup();
    let o = router(dir.path(), &["tags", "query", "claude-sonnet-4-5"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("--protocol anthropic"), "{}", o.stderr);
    let v = router(dir.path(), &["tags", "query", "claude-sonnet-4-5", "--protocol", "anthropic", "--json"]).json();
    assert_eq!(models(&v), ["claude:claude-sonnet-4-5"]);
    let o = router(dir.path(), &["tags", "query", "openai/gpt-4o", "--key", "freebie"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("may not use"), "{}", o.stderr);
    let v = router(dir.path(), &["tags", "query", "tag:qwen", "--key", "freebie", "--json"]).json();
    assert_eq!(models(&v), ["openrouter:qwen/qwen3-30b-a3b:free"]);
    assert!(v["excluded"].as_array().unwrap().iter().all(|e| e["reason"] == "not allowed for this key"), "{v}");
    let o = router(dir.path(), &["tags", "query", "tag:qwen", "--key", "nobody"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("hint: keys: freebie"), "{}", o.stderr);
}
