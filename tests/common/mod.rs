//! Test harness: programmable mock upstreams on 127.0.0.1:0 and the real `router` binary.
#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// What the mock answers.
pub enum Reply {
    Json(u16, serde_json::Value),
    /// Status, extra headers, raw body.
    Raw(u16, Vec<(&'static str, String)>, String),
    /// An SSE body sent in one go (as separate chunks, one per event).
    Sse(Vec<String>),
    /// A body fed by the test: each item is a chunk; an `Err` cuts the connection.
    Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>),
    /// Never answers.
    Hang,
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct Mock {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    /// Starts a mock whose `handler` gets each request and its 0-based index.
    pub async fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let reqs = reqs.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let n = {
                                let mut r = reqs.lock().unwrap();
                                r.push(rec.clone());
                                r.len() - 1
                            };
                            let reply = handler(&rec, n);
                            Ok::<_, Infallible>(render(reply).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Mock { addr, requests, task }
    }

    /// OpenAI-style base URL (with /v1).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Anthropic-style base URL (host root).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests.lock().unwrap().last().cloned().expect("a request reached the mock")
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

type MockBody = BoxBody<Bytes, std::io::Error>;

async fn render(reply: Reply) -> Response<MockBody> {
    let full = |s: String| Full::new(Bytes::from(s)).map_err(|never| match never {}).boxed();
    match reply {
        Reply::Json(status, v) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-request-id", "req_mock")
            .body(full(v.to_string()))
            .unwrap(),
        Reply::Raw(status, headers, body) => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(full(body)).unwrap()
        }
        Reply::Sse(events) => {
            let chunks: VecDeque<Result<Frame<Bytes>, std::io::Error>> =
                events.into_iter().map(|e| Ok(Frame::data(Bytes::from(e)))).collect();
            let stream = futures_util::stream::iter(chunks);
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(stream)))
                .unwrap()
        }
        Reply::Channel(rx) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item.map(Frame::data), rx))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(stream)))
                .unwrap()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// An OpenAI chat completion with usage.
pub fn chat_json(model: &str, text: &str, prompt: u64, completion: u64) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

/// An OpenAI chat stream; the usage chunk is sent only when `usage` is true.
pub fn chat_sse(model: &str, words: &[&str], usage: bool) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        out.push(format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push(format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"));
    if usage {
        out.push(format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n", words.len(), 11 + words.len()));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

/// An Anthropic message with usage.
pub fn messages_json(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": 6}
    })
}

pub fn messages_sse(model: &str, words: &[&str]) -> Vec<String> {
    let mut out = vec![format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"{model}\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n"
    )];
    out.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
    for w in words {
        out.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{w}\"}}}}\n\n"));
    }
    out.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
    out.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n", words.len()));
    out.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    out
}

/// A port on which nothing listens.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `router serve`.
pub struct Router {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stdout_lines: Arc<Mutex<Vec<String>>>,
    pub stderr_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_router")
}

impl Router {
    /// Starts the router on 127.0.0.1:0 with `config` as its YAML and a temp store.
    pub fn start(config: &str) -> Router {
        Self::start_with(config, &[], &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("router.yaml");
        std::fs::write(&cfg, config).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--store")
            .arg(dir.path().join("router.redb"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("ROUTER_NO_LOCAL_PROBE", "1")
            .env("ROUTER_LOG", "info")
            .env_remove("ROUTER_CONFIG")
            .env_remove("ROUTER_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("router starts");
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines2 = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on http://").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(addr.trim().to_string());
                }
                lines2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("router did not start:\n{}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
            }
        };
        Router { child, addr, dir, stdout_lines: lines, stderr_path }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("router.yaml")
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("router.redb")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.stdout_lines.lock().unwrap().join("\n")
    }

    /// The request records the server has committed, newest first (via the control socket).
    pub fn records(&self) -> Vec<serde_json::Value> {
        let store = self.store_path();
        let (code, out, err) =
            run_cli(&["requests", "--json", "--limit", "1000", "--store", store.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "router requests failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        match v {
            serde_json::Value::Array(a) => a,
            other => other["requests"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `within`.
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

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Runs the router CLI and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("ROUTER_NO_LOCAL_PROBE", "1").env_remove("ROUTER_CONFIG").env_remove("ROUTER_STORE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The Python with the official SDKs (openai, anthropic, google-genai): `ROUTER_TEST_PYTHON`, else the .venv
/// that scripts/test.sh creates.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ROUTER_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the SDK tests need Python with the openai, anthropic and google-genai packages: run scripts/test.sh (it \
         creates .venv), or set ROUTER_TEST_PYTHON"
    );
    venv
}
