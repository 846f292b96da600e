//! Helpers for tests/store.rs: an OpenAI-compatible mock upstream that reports usage per key, and the real
//! `router` binary (server and CLI) on a temp store.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the mock billed one key: (responses with usage, prompt tokens incl. cached, cached, completion tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billed {
    pub responses: u64,
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
}

/// Keys containing `flaky` get a 503; others get a chat completion whose usage depends on the key.
pub struct Upstream {
    pub addr: SocketAddr,
    pub billed: Arc<Mutex<HashMap<String, Billed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Usage the mock reports for `key`: (prompt, cached, completion).
pub fn usage_for(key: &str) -> (u64, u64, u64) {
    if key.contains("alpha") { (11, 3, 7) } else { (13, 0, 5) }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let billed: Arc<Mutex<HashMap<String, Billed>>> = Arc::default();
        let b = billed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let b = b.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let b = b.clone();
                        async move { Ok::<_, Infallible>(answer(req, &b).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, billed, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn billed(&self) -> HashMap<String, Billed> {
        self.billed.lock().unwrap().clone()
    }
}

async fn answer(req: Request<Incoming>, billed: &Mutex<HashMap<String, Billed>>) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if key.contains("flaky") {
        return Response::builder()
            .status(503)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"error":{"message":"overloaded","type":"server_error"}}"#)))
            .unwrap();
    }
    let (prompt, cached, completion) = usage_for(&key);
    {
        let mut m = billed.lock().unwrap();
        let e = m.entry(key.clone()).or_default();
        e.responses += 1;
        e.prompt += prompt;
        e.cached += cached;
        e.completion += completion;
    }
    let model = json["model"].as_str().unwrap_or("gpt-test").to_string();
    // Keys containing `nousage` get answers without any usage: the router must estimate.
    let usage = if key.contains("nousage") {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    };
    if json["stream"].as_bool() == Some(true) {
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut sse = String::new();
        for ev in [
            chunk(serde_json::json!({"role": "assistant", "content": ""}), serde_json::Value::Null),
            chunk(serde_json::json!({"content": "Hello"}), serde_json::Value::Null),
            chunk(serde_json::json!({}), serde_json::json!("stop")),
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}),
        ] {
            if ev["usage"].is_null() && ev["choices"].as_array().is_some_and(|c| c.is_empty()) {
                continue;
            }
            sse.push_str(&format!("data: {ev}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(sse)))
            .unwrap();
    }
    let mut out = serde_json::json!({
        "id": "c1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how can I help you today?"}, "finish_reason": "stop"}],
    });
    if !usage.is_null() {
        out["usage"] = usage;
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out.to_string())))
        .unwrap()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_router")
}

/// A running `router serve`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `router serve` with `config` on `store`; panics with its stderr if it does not come up.
    pub fn start(dir: &Path, config: &Path, store: &Path) -> Server {
        Self::try_start(dir, config, store).unwrap_or_else(|e| panic!("router did not start: {e}"))
    }

    pub fn try_start(dir: &Path, config: &Path, store: &Path) -> Result<Server, String> {
        Self::try_start_via(dir, config, store, &[])
    }

    /// Like [`Server::try_start`], run through `wrapper` (e.g. `setpriv --reuid ...` to drop root).
    pub fn try_start_via(dir: &Path, config: &Path, store: &Path, wrapper: &[&str]) -> Result<Server, String> {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("serve-{n}.stderr"));
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--store")
            .arg(store)
            .env("ROUTER_NO_LOCAL_PROBE", "1")
            .env("ROUTER_LOG", "info")
            .env_remove("ROUTER_CONFIG")
            .env_remove("ROUTER_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("listening on http://").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(a.trim().to_string());
                }
                l2.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => Ok(Server { child, addr: a.parse().unwrap(), stdout: lines, stderr_path }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&stderr_path).unwrap_or_default())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        self.wait_exit(Duration::from_secs(30)).expect("router exits after SIGTERM")
    }

    pub fn kill9(&mut self) {
        let ok = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        self.wait_exit(Duration::from_secs(10)).expect("router dies after SIGKILL");
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("ROUTER_NO_LOCAL_PROBE", "1")
        .env_remove("ROUTER_CONFIG")
        .env_remove("ROUTER_STORE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Polls `cond` every 25 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}
