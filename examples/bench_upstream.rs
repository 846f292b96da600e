//! Benchmark upstream: a tiny OpenAI-compatible server that streams SSE chunks at a fixed pace.
//!
//! Owns only what `bench/run.sh` needs for the streaming and concurrency measurements: `POST
//! /v1/chat/completions` answers a fixed completion, or with `"stream": true` one SSE event per write, each
//! `--interval-ms` after the previous one (the first at once), `max_tokens` content chunks (default
//! `--chunks`), then a usage chunk and `[DONE]` at the same pace. It must not be used as a test fixture: it
//! validates nothing. Listens on 127.0.0.1 only and prints `listening on http://ADDR` once bound.
//!
//! Usage: `cargo run --release --example bench_upstream -- [--port 0] [--chunks 50] [--interval-ms 20]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

#[derive(Clone, Copy)]
struct Opts {
    chunks: usize,
    interval: Duration,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").map(|p| p.parse().expect("--port N")).unwrap_or(0);
    let opts = Opts {
        chunks: arg(&args, "--chunks").map(|c| c.parse().expect("--chunks N")).unwrap_or(50),
        interval: Duration::from_millis(
            arg(&args, "--interval-ms").map(|c| c.parse().expect("--interval-ms N")).unwrap_or(20),
        ),
    };
    let threads: usize = arg(&args, "--threads").map(|t| t.parse().expect("--threads N")).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)), opts))
}

async fn serve(addr: SocketAddr, opts: Opts) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, opts));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, opts: Opts) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if path.ends_with("/models") {
        return Ok(json(r#"{"object":"list","data":[{"id":"bench-model","object":"model"}]}"#));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if v["stream"].as_bool() != Some(true) {
        return Ok(json(COMPLETION));
    }
    let chunks = v["max_tokens"].as_u64().map(|n| n as usize).unwrap_or(opts.chunks);
    let events = sse_events(chunks);
    let interval = opts.interval;
    let stream = futures_util::stream::unfold((0usize, events), move |(i, events)| async move {
        if i >= events.len() {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let frame = Frame::data(events[i].clone());
        Some((Ok::<_, Infallible>(frame), (i + 1, events)))
    });
    let resp = Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response");
    Ok(resp)
}

fn json(s: &'static str) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from_static(s.as_bytes()))))
        .expect("static response")
}

/// `n` content chunks, a usage chunk and `[DONE]`, each a complete SSE event.
fn sse_events(n: usize) -> std::sync::Arc<Vec<Bytes>> {
    let mut out = Vec::with_capacity(n + 3);
    let head = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","#;
    for i in 0..n {
        let delta = if i == 0 { r#"{"role":"assistant","content":"tok"}"# } else { r#"{"content":" tok"}"# };
        out.push(Bytes::from(format!(
            "data: {head}\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
        )));
    }
    out.push(Bytes::from(format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
    )));
    out.push(Bytes::from(format!(
        "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
        n + 12
    )));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    std::sync::Arc::new(out)
}
