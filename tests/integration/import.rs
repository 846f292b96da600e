//! `router import oneapi`: the real binary against the One-API and New-API fixture databases (SQLite), and the
//! same one-api rows loaded into fresh MariaDB and PostgreSQL databases.
//!
//! The expectations were derived by reading the fixtures row by row (see the comments) and are hard-coded.

use serde_json::Value;

use crate::harness::{Cli, Out};

fn fixture(name: &str) -> String {
    crate::harness::fixture(&format!("oneapi/{name}"))
}

/// `router ARGS` in a fresh directory with its own store, no config and no master key.
fn router(args: &[&str]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    Cli::new()
        .args(args)
        .env("ROUTER_STORE", dir.path().join("router.redb"))
        .env("ROUTER_CONFIG", dir.path().join("none.yaml"))
        .env_remove("ROUTER_MASTER_KEY")
        .current_dir(dir.path())
        .run()
}

/// The `plan` of `router import oneapi SOURCE --dry-run --json`.
fn dry_run(source: &str, extra: &[&str]) -> Value {
    let mut args = vec!["import", "oneapi", source, "--dry-run", "--json"];
    args.extend_from_slice(extra);
    let v = router(&args).json();
    assert_eq!(v["dry_run"], true);
    v["plan"].clone()
}

fn channel<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel `{name}` in {plan:#}"))
}

/// `oneapi:FLAVOUR:DATABASE#ID` -> (`oneapi:FLAVOUR`, `ID`), checking a database identity is there.
fn source_row(v: &Value) -> (&str, &str) {
    let s = v.as_str().unwrap();
    let (head, row) = s.rsplit_once('#').unwrap_or_else(|| panic!("no #row in `{s}`"));
    let mut parts = head.splitn(3, ':');
    let (a, b, database) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
    assert!(!database.is_empty() && !database.contains('@'), "no database identity (or credentials) in `{s}`");
    (&s[..a.len() + 1 + b.len()], row)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// (token_key, enabled) of every endpoint, in order.
fn tokens(c: &Value) -> Vec<(String, bool)> {
    c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["tokens"].as_array().unwrap().iter())
        .map(|t| (t["token_key"].as_str().unwrap().to_string(), t["enabled"].as_bool().unwrap()))
        .collect()
}

struct Expect {
    name: &'static str,
    protocol: &'static str,
    base_url: &'static str,
    tokens: &'static [(&'static str, bool)],
    models: &'static [&'static str],
    aliases: &'static [(&'static str, &'static str)],
    tags: &'static [&'static str],
    priority: i64,
    weight: u64,
    disabled: Option<&'static str>,
    source_ids: &'static [i64],
}

fn check(plan: &Value, e: &Expect) {
    let c = channel(plan, e.name);
    let ctx = format!("channel `{}`: {c:#}", e.name);
    assert_eq!(c["protocol"], e.protocol, "{ctx}");
    assert_eq!(c["base_url"], e.base_url, "{ctx}");
    let want: Vec<(String, bool)> = e.tokens.iter().map(|(k, on)| (k.to_string(), *on)).collect();
    assert_eq!(tokens(c), want, "{ctx}");
    assert_eq!(strs(&c["models"]), e.models, "{ctx}");
    let aliases: Vec<(String, String)> =
        c["aliases"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
    let want: Vec<(String, String)> = e.aliases.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(aliases, want, "{ctx}");
    assert_eq!(strs(&c["tags"]), e.tags, "{ctx}");
    assert_eq!(c["priority"], e.priority, "{ctx}");
    assert_eq!(c["weight"], e.weight, "{ctx}");
    assert_eq!(c["enabled"], e.disabled.is_none(), "{ctx}");
    match e.disabled {
        Some(reason) => assert_eq!(c["disabled_reason"], reason, "{ctx}"),
        None => assert!(c["disabled_reason"].is_null(), "{ctx}"),
    }
    let ids: Vec<i64> = c["source_ids"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect();
    assert_eq!(ids, e.source_ids, "{ctx}");
}

const D: &[&str] = &["group:default"];
const DV: &[&str] = &["group:default", "group:vip"];

fn one_api_expectations() -> Vec<Expect> {
    vec![
        // id 1: type 1 OpenAI, empty base_url, priority 10, weight 5.
        Expect {
            name: "OpenAI 官方",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row1", true)],
            models: &["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"],
            aliases: &[],
            tags: D,
            priority: -10,
            weight: 5,
            disabled: None,
            source_ids: &[1],
        },
        // id 2: type 14 Anthropic (host root), groups default,vip, priority 5.
        Expect {
            name: "Anthropic Claude",
            protocol: "anthropic",
            base_url: "https://api.anthropic.com",
            tokens: &[("row2", true)],
            models: &["claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022"],
            aliases: &[],
            tags: DV,
            priority: -5,
            weight: 1,
            disabled: None,
            source_ids: &[2],
        },
        // id 3: type 3 Azure, other=2024-06-01.
        Expect {
            name: "Azure 东部",
            protocol: "azure",
            base_url: "https://my-resource.openai.azure.com",
            tokens: &[("row3", true)],
            models: &["gpt-4o", "gpt-35-turbo"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[3],
        },
        // id 4: type 36 DeepSeek (one-api numbering).
        Expect {
            name: "DeepSeek",
            protocol: "openai",
            base_url: "https://api.deepseek.com/v1",
            tokens: &[("row4", true)],
            models: &["deepseek-chat", "deepseek-reasoner"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[4],
        },
        // id 5: type 20 OpenRouter.
        Expect {
            name: "OpenRouter",
            protocol: "openai",
            base_url: "https://openrouter.ai/api/v1",
            tokens: &[("row5", true)],
            models: &["openai/gpt-4o", "anthropic/claude-3.5-sonnet"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[5],
        },
        // id 6: type 50 OpenAICompatible: base already has /v1; priority -1 -> after everything at 0.
        Expect {
            name: "OpenRouter (OpenAI 兼容, 自定义 Base URL)",
            protocol: "openai",
            base_url: "https://openrouter.ai/api/v1",
            tokens: &[("row6", true)],
            models: &["meta-llama/llama-3.1-70b-instruct", "qwen/qwen-2.5-72b-instruct"],
            aliases: &[],
            tags: DV,
            priority: 1,
            weight: 1,
            disabled: None,
            source_ids: &[6],
        },
        // id 7: type 30 Ollama (native) -> its OpenAI-compatible /v1.
        Expect {
            name: "本地 Ollama",
            protocol: "openai",
            base_url: "http://127.0.0.1:11434/v1",
            tokens: &[("row7", true)],
            models: &["llama3.1:8b", "qwen2.5:7b"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[7],
        },
        // ids 8-10: one 3-key input split into rows; priorities 0, 10, 0, weights 0, 0, 3. Row 9 (priority 10) is
        // tried first, so it is the first endpoint.
        Expect {
            name: "多 Key 渠道",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row9", true), ("row8", true), ("row10", true)],
            models: &["gpt-4o-mini"],
            aliases: &[],
            tags: D,
            priority: -10,
            weight: 3,
            disabled: None,
            source_ids: &[8, 9, 10],
        },
        // id 11: type 44 SiliconFlow with model_mapping; models hold the upstream ids.
        Expect {
            name: "SiliconFlow 映射",
            protocol: "openai",
            base_url: "https://api.siliconflow.cn/v1",
            tokens: &[("row11", true)],
            models: &["Qwen/Qwen2.5-7B-Instruct", "deepseek-ai/DeepSeek-V3"],
            aliases: &[("deepseek-chat", "deepseek-ai/DeepSeek-V3"), ("gpt-4o-mini", "Qwen/Qwen2.5-7B-Instruct")],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[11],
        },
        // id 12: status 2.
        Expect {
            name: "已手动禁用",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row12", true)],
            models: &["gpt-4o"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: Some("disabled manually in one-api"),
            source_ids: &[12],
        },
        // id 13: type 24 Gemini, status 3.
        Expect {
            name: "自动禁用 Gemini",
            protocol: "gemini",
            base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
            tokens: &[("row13", true)],
            models: &["gemini-1.5-pro", "gemini-1.5-flash"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: Some("auto-disabled by one-api"),
            source_ids: &[13],
        },
    ]
}

fn check_one_api(plan: &Value) {
    assert_eq!(plan["flavour"], "one-api");
    let expect = one_api_expectations();
    let names: Vec<&str> = plan["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let want: Vec<&str> = expect.iter().map(|e| e.name).collect();
    assert_eq!(names, want, "channels in row order");
    for e in &expect {
        check(plan, e);
    }
    let azure = channel(plan, "Azure 东部");
    assert_eq!(azure["api_version"], "2024-06-01");
    assert_eq!(source_row(&channel(plan, "OpenAI 官方")["source"]), ("oneapi:one-api", "1"));
    // Rows 8-10: one endpoint per priority, in their order.
    let multi = channel(plan, "多 Key 渠道");
    assert_eq!(source_row(&multi["source"]), ("oneapi:one-api", "8"));
    let eps: Vec<(String, i64, usize)> = multi["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["name"].as_str().unwrap().into(), e["priority"].as_i64().unwrap(), e["tokens"].as_array().unwrap().len())
        })
        .collect();
    assert_eq!(eps, [("tier1".to_string(), 0, 1), ("tier2".to_string(), 1, 2)]);
    assert!(strs(&channel(plan, "SiliconFlow 映射")["notes"]).iter().any(|n| n.contains("system_prompt")));
    // id 14: AWS Bedrock (type 33) cannot be served.
    let skipped = plan["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:#?}");
    assert_eq!(skipped[0]["id"], 14);
    assert_eq!(skipped[0]["type"], 33);
    assert_eq!(skipped[0]["name"], "AWS Bedrock Claude");
    assert!(skipped[0]["reason"].as_str().unwrap().contains("SigV4"));
    assert_eq!(plan["warnings"].as_array().unwrap().len(), 0, "{:#}", plan["warnings"]);
}

#[test]
fn one_api_sqlite_fixture() {
    let plan = dry_run(&fixture("one-api.db"), &[]);
    check_one_api(&plan);
}

#[test]
fn new_api_sqlite_fixture() {
    let plan = dry_run(&fixture("new-api.db"), &[]);
    assert_eq!(plan["flavour"], "new-api");
    let expect = [
        // id 1: priority 10, weight 5, open_ai_organization -> header.
        Expect {
            name: "OpenAI 官方",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row1", true)],
            models: &["gpt-4o", "gpt-4o-mini", "gpt-4.1"],
            aliases: &[],
            tags: D,
            priority: -10,
            weight: 5,
            disabled: None,
            source_ids: &[1],
        },
        // id 2: new-api tag `claude-pool` kept as a tag.
        Expect {
            name: "Anthropic Claude",
            protocol: "anthropic",
            base_url: "https://api.anthropic.com",
            tokens: &[("row2", true)],
            models: &["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"],
            aliases: &[],
            tags: &["group:default", "group:vip", "claude-pool"],
            priority: -5,
            weight: 1,
            disabled: None,
            source_ids: &[2],
        },
        // id 3: Azure deployment names drop `.` like new-api does: gpt-4.1-mini -> gpt-41-mini.
        Expect {
            name: "Azure 东部",
            protocol: "azure",
            base_url: "https://my-resource.openai.azure.com",
            tokens: &[("row3", true)],
            models: &["gpt-4o", "gpt-41-mini"],
            aliases: &[("gpt-4.1-mini", "gpt-41-mini")],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[3],
        },
        // id 4: type 43 is DeepSeek in new-api (Proxy in one-api).
        Expect {
            name: "DeepSeek",
            protocol: "openai",
            base_url: "https://api.deepseek.com/v1",
            tokens: &[("row4", true)],
            models: &["deepseek-chat", "deepseek-reasoner"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 10,
            disabled: None,
            source_ids: &[4],
        },
        Expect {
            name: "OpenRouter",
            protocol: "openai",
            base_url: "https://openrouter.ai/api/v1",
            tokens: &[("row5", true)],
            models: &["openai/gpt-4o", "anthropic/claude-3.5-sonnet"],
            aliases: &[],
            tags: D,
            priority: 1,
            weight: 1,
            disabled: None,
            source_ids: &[5],
        },
        // id 6: type 4 is Ollama in new-api (CloseAI in one-api).
        Expect {
            name: "本地 Ollama",
            protocol: "openai",
            base_url: "http://127.0.0.1:11434/v1",
            tokens: &[("row6", true)],
            models: &["llama3.1:8b", "qwen2.5:7b"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[6],
        },
        // ids 7-8: batch mode, same settings and priority -> one channel, one endpoint.
        Expect {
            name: "批量渠道",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row7", true), ("row8", true)],
            models: &["gpt-4o-mini"],
            aliases: &[],
            tags: &["group:default", "batch"],
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[7, 8],
        },
        // id 9: multi_to_single, 3 keys; channel_info marks index 1 (the second key) auto-disabled.
        Expect {
            name: "多 Key 聚合",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("key1", true), ("key2", false), ("key3", true)],
            models: &["gpt-4o-mini", "gpt-4o"],
            aliases: &[],
            tags: DV,
            priority: -10,
            weight: 3,
            disabled: None,
            source_ids: &[9],
        },
        // id 10: type 40 is SiliconFlow in new-api.
        Expect {
            name: "SiliconFlow 映射",
            protocol: "openai",
            base_url: "https://api.siliconflow.cn/v1",
            tokens: &[("row10", true)],
            models: &["Qwen/Qwen2.5-7B-Instruct", "deepseek-ai/DeepSeek-V3"],
            aliases: &[("deepseek-chat", "deepseek-ai/DeepSeek-V3"), ("gpt-4o-mini", "Qwen/Qwen2.5-7B-Instruct")],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: None,
            source_ids: &[10],
        },
        // id 11: status 2 with other_info.status_reason.
        Expect {
            name: "已手动禁用",
            protocol: "openai",
            base_url: "https://api.openai.com/v1",
            tokens: &[("row11", true)],
            models: &["gpt-4o"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: Some("disabled manually in new-api: 手动禁用"),
            source_ids: &[11],
        },
        // id 12: status 3.
        Expect {
            name: "自动禁用 Gemini",
            protocol: "gemini",
            base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
            tokens: &[("row12", true)],
            models: &["gemini-2.5-pro", "gemini-2.5-flash"],
            aliases: &[],
            tags: D,
            priority: 0,
            weight: 1,
            disabled: Some("auto-disabled by new-api: API key not valid. Please pass a valid API key."),
            source_ids: &[12],
        },
    ];
    let names: Vec<&str> = plan["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, expect.iter().map(|e| e.name).collect::<Vec<_>>());
    for e in &expect {
        check(&plan, e);
    }
    assert_eq!(channel(&plan, "Azure 东部")["api_version"], "2025-04-01-preview");
    assert_eq!(strs(&channel(&plan, "OpenAI 官方")["headers"]), ["OpenAI-Organization"]);
    assert_eq!(strs(&channel(&plan, "SiliconFlow 映射")["headers"]), ["X-Test"]);
    assert_eq!(source_row(&channel(&plan, "多 Key 聚合")["source"]), ("oneapi:new-api", "9"));
    assert!(
        strs(&channel(&plan, "多 Key 聚合")["notes"]).iter().any(|n| n.contains("key2") && n.contains("401")),
        "the per-key disable reason is kept in the notes"
    );
    let skipped: Vec<(i64, i64, String)> = plan["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_i64().unwrap(), s["type"].as_i64().unwrap(), s["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!((skipped[0].0, skipped[0].1), (13, 33));
    assert!(skipped[0].2.contains("SigV4"));
    assert_eq!((skipped[1].0, skipped[1].1), (14, 41));
    assert!(skipped[1].2.contains("service-account"));
    assert_eq!(plan["warnings"].as_array().unwrap().len(), 0, "{:#}", plan["warnings"]);
}

#[test]
fn report_never_contains_a_plaintext_key() {
    for (db, keys) in [
        ("one-api.db", &["sk-test-openai-000000000000000000000001", "sk-multi-key-2", "AKIAEXAMPLE"][..]),
        ("new-api.db", &["sk-test-openai-0001", "sk-multi-key-3", "BEGIN PRIVATE KEY", "AKIAEXAMPLE"][..]),
    ] {
        for json in [true, false] {
            let mut args = vec!["import", "oneapi", Box::leak(fixture(db).into_boxed_str()), "--dry-run"];
            if json {
                args.push("--json");
            }
            let out = router(&args);
            assert_eq!(out.code, 0);
            let all = format!("{}{}", out.stdout, out.stderr);
            for k in keys {
                assert!(!all.contains(k), "{db} (json: {json}) printed a key: {all}");
            }
        }
    }
}

#[test]
fn flavor_override_and_prefix() {
    // Reading new-api rows with the one-api table: type 43 is then Proxy, type 4 CloseAI.
    let plan = dry_run(&fixture("new-api.db"), &["--flavor", "one-api", "--prefix", "old-"]);
    assert_eq!(plan["flavour"], "one-api");
    let skipped = plan["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["id"] == 4 && s["reason"].as_str().unwrap().contains("proxy")));
    let ollama = channel(&plan, "old-本地 Ollama");
    assert_eq!(ollama["base_url"], "http://127.0.0.1:11434/v1", "a given base_url is kept even for CloseAI");
    assert!(plan["channels"].as_array().unwrap().iter().all(|c| c["name"].as_str().unwrap().starts_with("old-")));
}

#[test]
fn no_terminal_and_no_yes_exits_1_with_a_hint() {
    let out = router(&["import", "oneapi", &fixture("one-api.db")]);
    assert_eq!(out.code, 1);
    let err = &out.stderr;
    assert!(err.contains("--yes"), "{err}");
}

#[test]
fn foreign_missing_and_corrupt_sources_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE users (id integer);").unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![7u8; 4096]).unwrap();
    for (src, needle) in [
        (foreign.display().to_string(), "no `channels` table"),
        (corrupt.display().to_string(), "not a SQLite database"),
        (dir.path().join("missing.db").display().to_string(), "does not exist"),
        ("mysql://root:pw@127.0.0.1:1/x".to_string(), "cannot connect to MySQL"),
    ] {
        let out = router(&["import", "oneapi", &src, "--dry-run"]);
        let err = &out.stderr;
        assert_eq!(out.code, 1, "{src}: {err}");
        assert!(err.contains(needle), "{src}: {err}");
        assert!(err.contains("hint:"), "{src}: {err}");
        assert!(!err.contains(":pw@"), "the password is not shown: {err}");
    }
}

// --- MySQL / PostgreSQL: the one-api fixture rows in a fresh database -------------------------------------------

const ONEAPI_COLUMNS: &str = "id, type, key, status, name, weight, created_time, test_time, response_time, base_url, \
     other, balance, balance_updated_time, models, group, used_quota, model_mapping, priority, config, system_prompt";

enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

fn fixture_rows() -> Vec<Vec<Cell>> {
    let conn = rusqlite::Connection::open_with_flags(fixture("one-api.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let cols: Vec<String> = ONEAPI_COLUMNS.split(", ").map(|c| format!("`{c}`")).collect();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM channels ORDER BY id", cols.join(", "))).unwrap();
    let n = cols.len();
    stmt.query_map([], |r| {
        Ok((0..n)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => Cell::Null,
                rusqlite::types::ValueRef::Integer(v) => Cell::Int(v),
                rusqlite::types::ValueRef::Real(v) => Cell::Real(v),
                rusqlite::types::ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec()).unwrap()),
                rusqlite::types::ValueRef::Blob(_) => panic!("no blobs in the one-api fixture"),
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// INSERT statements with SQL literals (`backslash`: MySQL also escapes `\`).
fn inserts(table: &str, quote: char, backslash: bool) -> Vec<String> {
    let cols: Vec<String> = ONEAPI_COLUMNS.split(", ").map(|c| format!("{quote}{c}{quote}")).collect();
    fixture_rows()
        .into_iter()
        .map(|row| {
            let vals: Vec<String> = row
                .into_iter()
                .map(|c| match c {
                    Cell::Null => "NULL".into(),
                    Cell::Int(i) => i.to_string(),
                    Cell::Real(f) => format!("{f:?}"),
                    Cell::Text(s) => {
                        let s = if backslash { s.replace('\\', "\\\\") } else { s };
                        format!("'{}'", s.replace('\'', "''"))
                    }
                })
                .collect();
            format!("INSERT INTO {table} ({}) VALUES ({})", cols.join(", "), vals.join(", "))
        })
        .collect()
}

fn unique_db() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("router_import_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

fn skip_db_tests() -> bool {
    std::env::var("ROUTER_SKIP_DB_TESTS").is_ok_and(|v| v == "1")
}

/// The SQLite plan and a server plan must agree on everything but where they came from (the database part of
/// each channel's `source`).
fn assert_same_plan(server: &Value) {
    let sqlite = dry_run(&fixture("one-api.db"), &[]);
    let without_database = |plan: &Value| {
        let mut p = plan.clone();
        for c in p["channels"].as_array_mut().unwrap() {
            let (kind, row) = source_row(&c["source"]);
            c["source"] = Value::String(format!("{kind}#{row}"));
        }
        p
    };
    let (server_plan, sqlite_plan) = (without_database(server), without_database(&sqlite));
    for field in ["flavour", "channels", "skipped", "warnings"] {
        assert_eq!(server_plan[field], sqlite_plan[field], "`{field}` differs from the SQLite import");
    }
    check_one_api(server);
}

#[test]
fn mysql_source_gives_the_same_plan_as_sqlite() {
    use mysql::prelude::Queryable;
    if skip_db_tests() {
        return;
    }
    let admin = "mysql://root@127.0.0.1:3306/test";
    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(admin).unwrap())
        .tcp_connect_timeout(Some(std::time::Duration::from_secs(5)));
    let mut conn = mysql::Conn::new(opts).unwrap_or_else(|e| {
        panic!("MariaDB/MySQL server at 127.0.0.1:3306 (root, no password) is unreachable: {e}; set ROUTER_SKIP_DB_TESTS=1 to skip")
    });
    let db = unique_db();
    conn.query_drop(format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4")).unwrap();
    struct Drop_<'a>(&'a mut mysql::Conn, String);
    impl Drop for Drop_<'_> {
        fn drop(&mut self) {
            let _ = self.0.query_drop(format!("DROP DATABASE `{}`", self.1));
        }
    }
    let guard = Drop_(&mut conn, db.clone());
    // oneapi-schema.sql in GORM's MySQL dialect.
    guard
        .0
        .query_drop(format!(
            "CREATE TABLE `{db}`.`channels` (`id` bigint AUTO_INCREMENT,`type` bigint DEFAULT 0,`key` text,\
         `status` bigint DEFAULT 1,`name` longtext,`weight` bigint unsigned DEFAULT 0,`created_time` bigint,\
         `test_time` bigint,`response_time` bigint,`base_url` longtext DEFAULT '',`other` longtext,`balance` double,\
         `balance_updated_time` bigint,`models` longtext,`group` varchar(32) DEFAULT 'default',\
         `used_quota` bigint DEFAULT 0,`model_mapping` varchar(1024) DEFAULT '',`priority` bigint DEFAULT 0,\
         `config` longtext,`system_prompt` text,PRIMARY KEY (`id`),INDEX `idx_channels_name` (`name`(191))) \
         DEFAULT CHARSET=utf8mb4"
        ))
        .unwrap();
    for sql in inserts(&format!("`{db}`.`channels`"), '`', true) {
        guard.0.query_drop(sql).unwrap();
    }
    let plan = dry_run(&format!("mysql://root@127.0.0.1:3306/{db}"), &[]);
    assert_same_plan(&plan);
    assert!(plan["source"].as_str().unwrap().starts_with("mysql://"));
}

#[test]
fn postgres_source_gives_the_same_plan_as_sqlite() {
    if skip_db_tests() {
        return;
    }
    let connect = |db: &str| {
        let mut cfg: postgres::Config = format!("postgres://postgres@127.0.0.1:5432/{db}").parse().unwrap();
        cfg.connect_timeout(std::time::Duration::from_secs(5));
        cfg.connect(postgres::NoTls)
    };
    let mut admin = connect("test").unwrap_or_else(|e| {
        panic!("PostgreSQL server at 127.0.0.1:5432 (user postgres, db test) is unreachable: {e}; set ROUTER_SKIP_DB_TESTS=1 to skip")
    });
    let db = unique_db();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    struct Drop_(postgres::Client, String);
    impl Drop for Drop_ {
        fn drop(&mut self) {
            let _ = self.0.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.1));
        }
    }
    let _guard = Drop_(admin, db.clone());
    let mut c = connect(&db).unwrap();
    // oneapi-schema.sql in GORM's PostgreSQL dialect.
    c.batch_execute(
        "CREATE TABLE channels (id bigserial, type bigint DEFAULT 0, key text, status bigint DEFAULT 1, name text, \
         weight bigint DEFAULT 0, created_time bigint, test_time bigint, response_time bigint, base_url text DEFAULT '', \
         other text, balance numeric, balance_updated_time bigint, models text, \"group\" varchar(32) DEFAULT 'default', \
         used_quota bigint DEFAULT 0, model_mapping varchar(1024) DEFAULT '', priority bigint DEFAULT 0, config text, \
         system_prompt text, PRIMARY KEY (id)); CREATE INDEX idx_channels_name ON channels (name);",
    )
    .unwrap();
    for sql in inserts("channels", '"', false) {
        c.batch_execute(&sql).unwrap();
    }
    drop(c);
    let plan = dry_run(&format!("postgres://postgres@127.0.0.1:5432/{db}"), &[]);
    assert_same_plan(&plan);
    assert!(plan["source"].as_str().unwrap().starts_with("postgres://"));
}
