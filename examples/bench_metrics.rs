//! What metrics add per request, measured in isolation: publishing the finished-request event (on the request's
//! thread: the record cloned into an `Arc`, one broadcast send) and counting it (in the metrics task: series
//! lookups, counter and histogram updates), plus one render of the exposition. `bench/metrics.sh` measures the
//! whole router's CPU per request with metrics on and off; on a shared machine its run-to-run noise is larger
//! than this cost, which is why this exists.
//!
//! Usage: `cargo run --release --example bench_metrics [-- --records 200000]`

use std::sync::Arc;
use std::time::Instant;

use router::events::{Event, Events};
use router::metrics::{Counting, Metrics};
use router::usage::{Attempt, Outcome, RequestRecord, Tokens};

fn record(i: usize) -> RequestRecord {
    let model = format!("model-{}", i % 20);
    RequestRecord {
        id: i as u128,
        time_ms: 1_700_000_000_000,
        gateway_key: Some(format!("team-{}", i % 10).into()),
        client_protocol: router::protocol::Protocol::Openai,
        path: "/v1/chat/completions".into(),
        requested_model: model.clone(),
        upstream_model: Some(model.as_str().into()),
        channel: Some(format!("channel-{}", i % 4).into()),
        endpoint: Some("default".into()),
        token_key: Some("key-1".into()),
        token_fp: Some("fp:0123456789abcdef".into()),
        strategy: Some(router::config::Strategy::Priority),
        attempts: vec![Attempt {
            channel: format!("channel-{}", i % 4).into(),
            endpoint: "default".into(),
            token_key: "key-1".into(),
            token_fp: "fp:0123456789abcdef".into(),
            model: model.into(),
            status: Some(200),
            outcome: router::upstream::FailureClass::Ok,
            ms: 180,
        }],
        status: 200,
        outcome: Outcome::Ok,
        stream: true,
        ttfb_ms: Some(180),
        total_ms: 2400,
        tokens: Tokens { input: 1200, cache_read: 300, output: 250, reasoning: 40, ..Default::default() },
        affinity: Some(router::live::affinity::Outcome::Hit),
        cost_usd: Some(0.0042),
        ..Default::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--records N"))
        .unwrap_or(200_000);
    let records: Vec<RequestRecord> = (0..1000).map(record).collect();
    let events = Events::default();
    let mut rx = events.subscribe();
    let metrics = Arc::new(Metrics::new());
    let mut counting = Counting::new(metrics.clone());
    let (mut publish_ns, mut count_ns) = (0u128, 0u128);
    let mut done = 0;
    while done < n {
        let t0 = Instant::now();
        for r in &records {
            // What `RecordSink` does for each record when someone subscribes.
            events.publish_with(|| Event::RequestFinished(Arc::new(r.clone())));
        }
        publish_ns += t0.elapsed().as_nanos();
        let t1 = Instant::now();
        while let Ok(ev) = rx.try_recv() {
            counting.count(&ev);
        }
        count_ns += t1.elapsed().as_nanos();
        done += records.len();
    }
    let t2 = Instant::now();
    let text = metrics.render(&router::upstream::health::Health::new(), 0);
    let render_us = t2.elapsed().as_secs_f64() * 1e6;
    let per = |ns: u128| ns as f64 / done as f64 / 1000.0;
    println!("metrics cost per request (examples/bench_metrics.rs, --release)");
    println!("records:                 {done} (20 models, 10 keys, 4 channels)");
    println!("publish (request path):  {:.2} us", per(publish_ns));
    println!("count (metrics task):    {:.2} us", per(count_ns));
    println!("total:                   {:.2} us", per(publish_ns + count_ns));
    println!(
        "render /metrics:         {render_us:.0} us ({} bytes, {} series lines)",
        text.len(),
        text.lines().filter(|l| !l.starts_with('#')).count()
    );
}
