//! Real Claude Code, Codex CLI and Gemini CLI, unchanged, through the router to a chat-completions-only
//! upstream: a text answer and a full tool round trip each (the upstream asks for a shell command, the client
//! runs it and sends the result back). scripts/test.sh installs pinned versions into .clients/ (npm).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;
use serde_json::{Value, json};

fn client_bin(name: &str) -> PathBuf {
    let var = format!("ROUTER_TEST_{}", name.to_ascii_uppercase());
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".clients/node_modules/.bin").join(name);
    assert!(
        p.exists(),
        "{name} is not installed: run scripts/test.sh (it installs Claude Code, Codex CLI and Gemini CLI into .clients/), or set {var}"
    );
    p
}

fn sse_chunk(delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

/// A chat-only upstream: answers text, or — when the user says RUN_TOOL and a shell tool is offered — calls it
/// (arguments streamed in small pieces), then reports the tool result it gets back.
async fn scripted_upstream() -> Mock {
    Mock::start(|r, _| {
        let body = r.json();
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        let tools: Vec<String> =
            body["tools"].as_array().into_iter().flatten().filter_map(|t| t["function"]["name"].as_str().map(String::from)).collect();
        let user_text: String = msgs.iter().filter(|m| m["role"] == "user").map(|m| m["content"].to_string()).collect();
        let tool_result = msgs.iter().rev().find(|m| m["role"] == "tool").map(|m| m["content"].to_string());
        let mut out = vec![sse_chunk(json!({"role": "assistant", "content": ""}), None)];
        let call = if tool_result.is_none() && user_text.contains("RUN_TOOL") {
            [("Bash", json!({"command": "echo router-ok", "description": "print a marker"})), ("exec_command", json!({"cmd": "echo router-ok"})), ("shell", json!({"command": ["bash", "-lc", "echo router-ok"]})), ("run_shell_command", json!({"command": "echo router-ok", "description": "print a marker"}))]
                .into_iter()
                .find(|(n, _)| tools.iter().any(|t| t == n))
        } else {
            None
        };
        match (call, tool_result) {
            (Some((name, args)), _) => {
                out.push(sse_chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}), None));
                let args = args.to_string();
                for piece in args.as_bytes().chunks(7) {
                    let piece = String::from_utf8_lossy(piece).to_string();
                    out.push(sse_chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None));
                }
                out.push(sse_chunk(json!({}), Some("tool_calls")));
            }
            (None, result) => {
                let text = match result {
                    Some(r) if r.contains("router-ok") => "TOOL RESULT: router-ok".to_string(),
                    Some(r) => format!("TOOL RESULT WITHOUT MARKER: {}", &r[..r.len().min(60)]),
                    None => "OK from upstream".to_string(),
                };
                for piece in text.as_bytes().chunks(5) {
                    out.push(sse_chunk(json!({"content": String::from_utf8_lossy(piece)}), None));
                }
                out.push(sse_chunk(json!({}), Some("stop")));
            }
        }
        if body["stream_options"]["include_usage"] == true {
            out.push(format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 123, "completion_tokens": 7, "total_tokens": 130}})));
        }
        out.push("data: [DONE]\n\n".into());
        Reply::Sse(out)
    })
    .await
}

fn config(upstream: &Mock) -> String {
    format!(
        "server:\n  keys:\n    - {{name: me, key: sk-gw-real}}\nchannels:\n  - name: ds\n    base_url: {}\n    keys: [{{name: ds-key, key: sk-upstream-secret-9876543210}}]\n    models: [deepseek-chat]\n",
        upstream.openai_url()
    )
}

async fn output_of(mut cmd: Command) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_a_tool_loop_on_a_chat_only_channel() {
    let up = scripted_upstream().await;
    let router = Router::start(&config(&up));
    let home = tempfile::tempdir().unwrap();
    let run = |prompt: &str| {
        let mut cmd = Command::new(client_bin("claude"));
        cmd.args(["-p", prompt, "--allowedTools", "Bash", "--output-format", "json"])
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("ANTHROPIC_BASE_URL", format!("http://{}", router.addr))
            .env("ANTHROPIC_AUTH_TOKEN", "sk-gw-real")
            .env_remove("ANTHROPIC_API_KEY")
            .env("ANTHROPIC_MODEL", "deepseek-chat")
            .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", "deepseek-chat")
            .env("ANTHROPIC_SMALL_FAST_MODEL", "deepseek-chat")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
        cmd
    };
    let (ok, out, err) = output_of(run("Say hello")).await;
    assert!(ok, "claude failed:\n{out}\n{err}\nrouter:\n{}", router.stderr());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["result"], "OK from upstream", "{out}");
    assert_eq!(v["usage"]["input_tokens"], 123);

    let (ok, out, err) = output_of(run("RUN_TOOL please")).await;
    assert!(ok, "claude failed:\n{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "TOOL RESULT: router-ok", "{out}");
    assert!(up.all().iter().any(|r| r.json()["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool")));
    assert!(up.all().iter().all(|r| r.header("authorization").unwrap() == "Bearer sk-upstream-secret-9876543210"));
    let records = router.records();
    assert!(
        records.iter().any(|r| r["translated"] == "anthropic->openai" && r["tokens"]["input"] == 123),
        "{records:?}"
    );
    // Prompt-cache affinity recognised the session Claude Code reports: its tool round trip stayed on one key.
    let session = router::protocol::session::filter_value(v["session_id"].as_str().unwrap());
    let mut records = Vec::new();
    let stayed = eventually(std::time::Duration::from_secs(10), || {
        records = router.records();
        records.iter().any(|r| r["session"] == session.as_str() && r["affinity"] == "hit")
    });
    assert!(stayed.await, "{session}: {records:?}");
    assert!(!out.contains("sk-upstream-secret") && !router.stderr().contains("sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_runs_a_tool_loop_on_a_chat_only_channel() {
    let up = scripted_upstream().await;
    let router = Router::start(&config(&up));
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".codex")).unwrap();
    std::fs::write(
        home.path().join(".codex/config.toml"),
        format!(
            "model = \"deepseek-chat\"\nmodel_provider = \"router\"\n\n[model_providers.router]\nname = \"router\"\nbase_url = \"http://{}/v1\"\nenv_key = \"ROUTER_KEY\"\nwire_api = \"responses\"\n",
            router.addr
        ),
    )
    .unwrap();
    let run = |prompt: &str| {
        let mut cmd = Command::new(client_bin("codex"));
        cmd.args(["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", prompt])
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("CODEX_HOME", home.path().join(".codex"))
            .env("ROUTER_KEY", "sk-gw-real");
        cmd
    };
    let (ok, out, err) = output_of(run("Say hello")).await;
    assert!(ok, "codex failed:\n{out}\n{err}\nrouter:\n{}", router.stderr());
    assert!(out.contains("OK from upstream"), "{out}\n{err}");
    let (ok, out, err) = output_of(run("RUN_TOOL please")).await;
    assert!(ok, "codex failed:\n{out}\n{err}");
    assert!(out.contains("TOOL RESULT: router-ok"), "{out}\n{err}");
    let records = router.records();
    assert!(records.iter().any(|r| r["translated"] == "responses->chat"), "{records:?}");
    // Prompt-cache affinity recognised Codex's conversation (`prompt_cache_key`): its tool round trip stayed put.
    let mut records = Vec::new();
    let stayed = eventually(std::time::Duration::from_secs(10), || {
        records = router.records();
        records.iter().any(|r| r["affinity"] == "hit")
    });
    assert!(stayed.await, "{records:?}");
    assert!(records.iter().all(|r| r["session"].is_string()), "{records:?}");
}

/// The Anthropic twin of [`scripted_upstream`]: a streamed `tool_use` (input in pieces) for RUN_TOOL when a shell
/// tool is offered, else text reporting the tool result it got back.
async fn scripted_anthropic_upstream() -> Mock {
    Mock::start(|r, _| {
        let body = r.json();
        let tools: Vec<String> =
            body["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(String::from)).collect();
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        let results: Vec<String> = msgs
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["content"].to_string())
            .collect();
        let asked = msgs.iter().any(|m| m["role"] == "user" && m["content"].to_string().contains("RUN_TOOL"));
        let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut out = vec![ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "claude-x", "usage": {"input_tokens": 321, "output_tokens": 1}}}))];
        let stop = if asked && results.is_empty() && tools.iter().any(|t| t == "run_shell_command") {
            out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "run_shell_command", "input": {}}})));
            let args = json!({"command": "echo router-ok", "description": "print a marker"}).to_string();
            for piece in args.as_bytes().chunks(9) {
                out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": String::from_utf8_lossy(piece)}})));
            }
            "tool_use"
        } else {
            let text = match results.first() {
                Some(r) if r.contains("router-ok") => "TOOL RESULT: router-ok".to_string(),
                Some(r) => format!("TOOL RESULT WITHOUT MARKER: {}", &r[..r.len().min(60)]),
                None => "OK from upstream".to_string(),
            };
            out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})));
            out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}})));
            "end_turn"
        };
        out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}})));
        out.push(ev("message_stop", json!({"type": "message_stop"})));
        Reply::Sse(out)
    })
    .await
}

/// `gemini -p PROMPT` against the router, signed in with the gateway key (API-key sign-in: with only
/// GOOGLE_GEMINI_BASE_URL set Gemini CLI picks its `gateway` sign-in, which -p refuses), in a trusted folder so
/// --yolo applies.
fn gemini_cli(router: &Router, home: &std::path::Path, prompt: &str) -> Command {
    std::fs::create_dir_all(home.join(".gemini")).unwrap();
    std::fs::write(
        home.join(".gemini/settings.json"),
        json!({"security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
               "privacy": {"usageStatisticsEnabled": false}})
        .to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(client_bin("gemini"));
    cmd.args(["-p", prompt, "--yolo", "--output-format", "json", "-m", "gemini-2.5-pro"])
        .current_dir(home)
        .env("HOME", home)
        .env("GOOGLE_GEMINI_BASE_URL", format!("http://{}", router.addr))
        .env("GEMINI_API_KEY", "sk-gw-real")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GOOGLE_GENAI_USE_VERTEXAI")
        .env_remove("GOOGLE_CLOUD_PROJECT");
    cmd
}

/// Gemini CLI asked for a task that needs its shell tool: the scripted upstream calls it, and reports the
/// result it gets back.
async fn gemini_cli_tool_loop(router: &Router) {
    let home = tempfile::tempdir().unwrap();
    let (ok, out, err) = output_of(gemini_cli(router, home.path(), "RUN_TOOL please")).await;
    assert!(ok, "gemini failed:\n{out}\n{err}\nrouter:\n{}", router.stderr());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["response"], "TOOL RESULT: router-ok", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_a_tool_loop_on_an_anthropic_channel() {
    let up = scripted_anthropic_upstream().await;
    let router = Router::start(&format!(
        "server:\n  keys:\n    - {{name: me, key: sk-gw-real}}\nchannels:\n  - name: an\n    protocol: anthropic\n    base_url: {}\n    keys: [{{name: an-key, key: sk-upstream-secret-9876543210}}]\n    models: [claude-x]\n    aliases: {{gemini-2.5-pro: claude-x}}\n",
        up.root_url()
    ));
    gemini_cli_tool_loop(&router).await;
    assert!(up.all().iter().all(|r| r.header("x-api-key").unwrap() == "sk-upstream-secret-9876543210"));
    let records = router.records();
    assert!(
        records.iter().any(|r| r["translated"] == "gemini->anthropic" && r["tokens"]["input"] == 321),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_a_tool_loop_on_a_chat_only_channel() {
    let up = scripted_upstream().await;
    // Gemini CLI asks for Gemini model ids (its main model and its helpers'): aliases send them to the channel.
    let config = format!(
        "{}    aliases: {{gemini-2.5-pro: deepseek-chat, gemini-2.5-flash: deepseek-chat, gemini-2.5-flash-lite: deepseek-chat}}\n",
        config(&up)
    );
    let router = Router::start(&config);
    let home = tempfile::tempdir().unwrap();
    let run = |prompt: &str| gemini_cli(&router, home.path(), prompt);
    let (ok, out, err) = output_of(run("Say hello")).await;
    assert!(ok, "gemini failed:\n{out}\n{err}\nrouter:\n{}", router.stderr());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["response"], "OK from upstream", "{out}");
    let (ok, out, err) = output_of(run("RUN_TOOL please")).await;
    assert!(ok, "gemini failed:\n{out}\n{err}\nrouter:\n{}", router.stderr());
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["response"], "TOOL RESULT: router-ok", "{out}");
    let tool_turn =
        up.all().into_iter().find(|r| r.json()["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool"));
    let tool_turn = tool_turn.expect("the tool result went back upstream");
    assert!(tool_turn.json()["messages"].to_string().contains("router-ok"), "{}", tool_turn.json());
    assert!(up.all().iter().all(|r| r.header("authorization").unwrap() == "Bearer sk-upstream-secret-9876543210"));
    let records = router.records();

    assert!(
        records.iter().any(|r| r["client_protocol"] == "gemini"
            && r["translated"] == "gemini->openai"
            && r["tokens"]["input"] == 123),
        "{records:?}"
    );
    assert!(!out.contains("sk-upstream-secret") && !router.stderr().contains("sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_a_tool_loop_on_a_native_gemini_channel() {
    // Google's own API, scripted: a `functionCall` for RUN_TOOL, then text reporting the function response.
    let up = Mock::start(|r, _| {
        let body = r.json();
        let contents = body["contents"].to_string();
        let result = body["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .find(|p| p.get("functionResponse").is_some());
        let part = match result {
            None if contents.contains("RUN_TOOL") => json!({"functionCall": {"name": "run_shell_command",
                "args": {"command": "echo router-ok", "description": "print a marker"}}}),
            None => json!({"text": "OK from upstream"}),
            Some(p) if p.to_string().contains("router-ok") => json!({"text": "TOOL RESULT: router-ok"}),
            Some(_) => json!({"text": "TOOL RESULT WITHOUT MARKER"}),
        };
        let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 77, "candidatesTokenCount": 5, "totalTokenCount": 82}});
        Reply::Raw(200, vec![("content-type", "text/event-stream".into())], format!("data: {chunk}\r\n\r\n"))
    })
    .await;
    let router = Router::start(&format!(
        "server:\n  keys:\n    - {{name: me, key: sk-gw-real}}\nchannels:\n  - name: google\n    protocol: gemini\n    base_url: {}/v1beta\n    keys: [{{name: g-key, key: sk-upstream-secret-9876543210}}]\n    models: [gemini-2.5-pro]\n",
        up.root_url()
    ));
    gemini_cli_tool_loop(&router).await;
    for r in up.all() {
        assert_eq!(r.uri, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
        assert_eq!(r.header("x-goog-api-key").as_deref(), Some("sk-upstream-secret-9876543210"));
    }
    let records = router.records();
    assert!(
        records
            .iter()
            .all(|r| r["client_protocol"] == "gemini" && r["translated"].is_null() && r["tokens"]["input"] == 77),
        "{records:?}"
    );
}
