//! Benchmark streaming client: time to first byte, inter-chunk gaps and chunk merging of SSE responses.
//!
//! Owns only the streaming measurements of `bench/run.sh`: it sends `--requests` streaming chat completions
//! (`--concurrency` at a time) to `--url`, asking the upstream for `--chunks` content chunks (as `max_tokens`,
//! which `bench_upstream` honours), and for every body read records the time and how many complete SSE events
//! it finished. A read that finishes more than one event means chunks were merged on the way. With
//! `--rss-pid` it samples that process's VmRSS while the streams run (peak, and when all streams were open).
//! Prints one JSON object on stdout. Sends only to the URL given; `bench/run.sh` gives 127.0.0.1 addresses.
//!
//! Usage: `bench_stream_client --url http://127.0.0.1:P/v1/chat/completions [--requests 20] [--concurrency 1]
//! [--chunks 50] [--model bench-model] [--rss-pid PID]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[derive(Default)]
struct One {
    ok: bool,
    ttfb_ms: f64,
    gaps_ms: Vec<f64>,
    events: usize,
    reads: usize,
    merged_reads: usize,
    max_events_per_read: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url").expect("--url URL");
    assert!(url.starts_with("http://127.0.0.1:"), "bench_stream_client only talks to 127.0.0.1");
    let requests: usize = arg(&args, "--requests").map(|v| v.parse().expect("--requests N")).unwrap_or(20);
    let concurrency: usize = arg(&args, "--concurrency").map(|v| v.parse().expect("--concurrency N")).unwrap_or(1);
    let chunks: usize = arg(&args, "--chunks").map(|v| v.parse().expect("--chunks N")).unwrap_or(50);
    let rss_pid: Option<u32> = arg(&args, "--rss-pid").map(|v| v.parse().expect("--rss-pid PID"));
    let model = arg(&args, "--model").unwrap_or_else(|| "bench-model".into());
    let threads: usize = arg(&args, "--threads").map(|v| v.parse().expect("--threads N")).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime");
    let out = rt.block_on(run(url, model, requests, concurrency, chunks, rss_pid));
    println!("{out}");
}

async fn run(
    url: String,
    model: String,
    requests: usize,
    concurrency: usize,
    chunks: usize,
    rss_pid: Option<u32>,
) -> String {
    // A measuring client, not an upstream client: its own timeout, and a pool as large as --concurrency.
    #[allow(clippy::disallowed_methods)]
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let body = Arc::new(
        json!({
            "model": model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": chunks,
            "messages": [{"role": "user", "content": "Say hello."}],
        })
        .to_string(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let rss_peak = Arc::new(AtomicU64::new(0));
    let rss_all_open = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let sampler = rss_pid.map(|pid| {
        let (open, peak, all_open, done) = (open.clone(), rss_peak.clone(), rss_all_open.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kb) = vm_rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                    if open.load(Ordering::Relaxed) >= concurrency.min(requests) {
                        all_open.fetch_max(kb, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    });

    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(requests) {
        let (client, url, body, next, open) = (client.clone(), url.clone(), body.clone(), next.clone(), open.clone());
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                results.push(one(&client, &url, &body, &open).await);
            }
            results
        }));
    }
    let mut all: Vec<One> = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }

    let expected_events = chunks + 3;
    let ok = all.iter().filter(|o| o.ok && o.events == expected_events).count();
    let mut ttfb: Vec<f64> = all.iter().filter(|o| o.ok).map(|o| o.ttfb_ms).collect();
    let mut gaps: Vec<f64> = all.iter().flat_map(|o| o.gaps_ms.iter().copied()).collect();
    let merged: usize = all.iter().map(|o| o.merged_reads).sum();
    let reads: usize = all.iter().map(|o| o.reads).sum();
    let events: usize = all.iter().map(|o| o.events).sum();
    let max_per_read = all.iter().map(|o| o.max_events_per_read).max().unwrap_or(0);
    json!({
        "requests": requests,
        "concurrency": concurrency,
        "chunks": chunks,
        "ok": ok,
        "errors": requests - ok,
        "elapsed_s": elapsed,
        "ttfb_ms": summary(&mut ttfb),
        "gap_ms": summary(&mut gaps),
        "events": events,
        "reads": reads,
        "merged_reads": merged,
        "max_events_per_read": max_per_read,
        "rss_peak_kb": rss_pid.map(|_| rss_peak.load(Ordering::Relaxed)),
        "rss_all_open_kb": rss_pid.map(|_| rss_all_open.load(Ordering::Relaxed)),
    })
    .to_string()
}

async fn one(client: &reqwest::Client, url: &str, body: &str, open: &AtomicUsize) -> One {
    let mut out = One::default();
    let t0 = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-fake")
        .body(body.to_string())
        .send()
        .await;
    let Ok(mut resp) = resp else { return out };
    if !resp.status().is_success() {
        return out;
    }
    let mut counted_open = false;
    let mut last: Option<Instant> = None;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                let now = Instant::now();
                if last.is_none() {
                    out.ttfb_ms = (now - t0).as_secs_f64() * 1e3;
                    open.fetch_add(1, Ordering::Relaxed);
                    counted_open = true;
                } else if let Some(prev) = last {
                    out.gaps_ms.push((now - prev).as_secs_f64() * 1e3);
                }
                last = Some(now);
                out.reads += 1;
                pending.extend_from_slice(&bytes);
                let mut finished = 0;
                while let Some(pos) = find_blank_line(&pending) {
                    pending.drain(..pos);
                    finished += 1;
                }
                out.events += finished;
                out.max_events_per_read = out.max_events_per_read.max(finished);
                if finished > 1 {
                    out.merged_reads += 1;
                }
            }
            Ok(None) => {
                out.ok = true;
                break;
            }
            Err(_) => break,
        }
    }
    if counted_open {
        open.fetch_sub(1, Ordering::Relaxed);
    }
    out
}

/// The end (exclusive) of the first complete SSE event in `buf`, if any.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn summary(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({"n": v.len(), "min": v[0], "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": v[v.len() - 1], "mean": mean})
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
