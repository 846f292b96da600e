//! Store writer throughput: how many request records per second the batched writer commits into a fresh store,
//! and how long handing a record to the sink takes on the sending side (the only cost the proxy pays).
//!
//! Run: `cargo run --release --example bench_writer [records]`; the result goes to stdout (copy it to
//! bench/results/writer.txt).

use std::time::{Duration, Instant};

use router::store::Store;
use router::store::writer::{self, WriterOptions};
use router::usage::sink::RecordSink;
use router::usage::{Attempt, Outcome, RequestRecord, Tokens, UsageSource, new_id};

fn record(i: u64, now: i64) -> RequestRecord {
    let tok = if i.is_multiple_of(2) { "alpha" } else { "beta" };
    RequestRecord {
        id: new_id(now + i as i64 / 100),
        time_ms: now + i as i64 / 100,
        gateway_key: Some("team".into()),
        client_protocol: Default::default(),
        path: "/v1/chat/completions".into(),
        requested_model: "gpt-4o".into(),
        upstream_model: Some("openai/gpt-4o".into()),
        channel: Some("openrouter".into()),
        endpoint: Some("default".into()),
        token_key: Some(tok.into()),
        token_fp: Some(format!("fp:{:016x}", i % 2).into()),
        strategy: Some(Default::default()),
        attempts: vec![Attempt {
            channel: "openrouter".into(),
            endpoint: "default".into(),
            token_key: tok.into(),
            token_fp: format!("fp:{:016x}", i % 2).into(),
            model: "openai/gpt-4o".into(),
            status: Some(200),
            outcome: router::upstream::FailureClass::Ok,
            ms: 850,
        }],
        status: 200,
        outcome: Outcome::Ok,
        stream: i.is_multiple_of(3),
        ttfb_ms: Some(320),
        total_ms: 850,
        tokens: Tokens { input: 1200 + i % 50, cache_read: 256, output: 300, ..Default::default() },
        usage_source: UsageSource::Upstream,
        cost_usd: Some(0.0042),
        translated: None,
        error: None,
        session: Some(format!("{:016x}", i / 20)),
        affinity: Some(router::live::affinity::Outcome::Hit),
    }
}

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.redb"))?;
    let now = router::usage::now_ms();
    let (stats, elapsed, mut lat) = rt.block_on(async {
        let (sink, rx) = RecordSink::new(4096);
        let w = writer::spawn(store.clone(), rx, WriterOptions::default(), sink.health().clone());
        let mut lat = Vec::with_capacity(n as usize);
        let start = Instant::now();
        for i in 0..n {
            let rec = record(i, now);
            let t = Instant::now();
            sink.send(rec).await;
            lat.push(t.elapsed());
        }
        drop(sink);
        let stats = w.shutdown(Duration::from_secs(30)).await;
        (stats, start.elapsed(), lat)
    });
    assert_eq!(stats.records, n);
    let mut count = 0u64;
    store.scan_requests(0..u128::MAX, false, |_| {
        count += 1;
        true
    })?;
    assert_eq!(count, n);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let size = std::fs::metadata(store.path())?.len();
    let fmt = |d: Duration| format!("{:.1} us", d.as_secs_f64() * 1e6);
    println!("store writer benchmark (examples/bench_writer.rs, --release)");
    println!("records:          {n}");
    println!("batches:          {} (max 512 records or 50 ms each, one durable commit per batch)", stats.batches);
    println!("elapsed:          {:.2} s", elapsed.as_secs_f64());
    println!("throughput:       {:.0} records/s", n as f64 / elapsed.as_secs_f64());
    println!("sink.send p50:    {}", fmt(pct(0.50)));
    println!("sink.send p99:    {}", fmt(pct(0.99)));
    println!("sink.send max:    {}", fmt(*lat.last().unwrap()));
    println!("store file:       {:.1} MiB ({} bytes/record)", size as f64 / 1048576.0, size / n);
    // What a record costs while the store cannot be written: in the writer's memory backlog, and as a line of
    // the pending file.
    let k = 100_000u64;
    let before = rss_bytes();
    let backlog: std::collections::VecDeque<RequestRecord> = (0..k).map(|i| record(i, now)).collect();
    let held = rss_bytes().saturating_sub(before);
    let line = serde_json::to_vec(&backlog[0])?.len() + 1;
    println!("backlog memory:   {:.0} bytes/record (RSS growth holding {k} records)", held as f64 / k as f64);
    println!("pending file:     {line} bytes/record");
    drop(backlog);
    Ok(())
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}
