//! Routing benchmark: a catalogue of 50,000 models in 1,000 channels (discovered per token, realistic ids such
//! as `qwen/qwen3-30b-a3b:free`), timing tag-query resolution (`routing::plan`) and snapshot rebuilds.
//!
//! Run: `cargo run --release --example bench_routing [-- OUTPUT]` (default output `bench/results/routing.txt`).
//! Targets: a tag query < 50 us, a snapshot rebuild < 100 ms; the 345-candidate `tag:glm,air,free` plan <= 30 us.
//!
//! `BENCH_ROUTING_ONLY=QUERY` (one of the queries below) builds the catalogue once and plans only that query
//! `BENCH_ROUTING_ITERS` times (default 2000), writing nothing: for instruction counts that do not depend on the
//! machine's load, e.g. `valgrind --tool=callgrind --toggle-collect='router::routing::plan' ...`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use router::catalog::{Discovered, DiscoveredModel, ModelKind, Snapshot};
use router::config::{ChannelConfig, ChannelProtocol, Config, KeyConfig, Price, RawConfig, Secret, Strategy};
use router::protocol::Protocol;
use router::routing::{self, RouteRequest};
use router::tags::TagExpr;
use router::upstream::health::Health;

const CHANNELS: usize = 1000;
const MODELS_PER_CHANNEL: usize = 50;

/// A small deterministic generator (no seeding from the clock: runs are comparable).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

fn model_id(rng: &mut Lcg) -> String {
    let families: &[(&str, &[&str], &[&str])] = &[
        (
            "qwen",
            &["qwen3", "qwen2.5", "qwq", "qwen3-coder"],
            &["0.6b", "1.7b", "4b", "8b", "14b", "32b", "30b-a3b", "235b-a22b"],
        ),
        (
            "meta-llama",
            &["llama-3.1", "llama-3.3", "llama-4-scout", "llama-4-maverick"],
            &["8b", "70b", "405b", "17b-16e"],
        ),
        (
            "deepseek",
            &["deepseek-chat", "deepseek-r1", "deepseek-v3.1", "deepseek-r1-distill-qwen"],
            &["", "7b", "14b", "32b", "70b"],
        ),
        (
            "mistralai",
            &["mistral-small", "mistral-large", "mixtral", "codestral", "ministral"],
            &["", "8x7b", "8x22b", "24b", "3b", "8b"],
        ),
        ("google", &["gemma-3", "gemini-2.5-flash", "gemini-2.5-pro", "gemma-2"], &["", "4b", "12b", "27b", "9b"]),
        ("moonshotai", &["kimi-k2", "kimi-dev", "moonlight"], &["", "72b", "16b-a3b"]),
        ("openai", &["gpt-4o", "gpt-4.1", "gpt-4o-mini", "o3", "o4-mini", "gpt-oss"], &["", "20b", "120b"]),
        ("anthropic", &["claude-sonnet-4", "claude-3.5-haiku", "claude-opus-4.1"], &[""]),
        ("z-ai", &["glm-4.5", "glm-4.5-air", "glm-4-32b"], &["", "0414"]),
        ("baai", &["bge-m3", "bge-large-en-v1.5", "bge-reranker-v2-m3"], &[""]),
    ];
    let (vendor, names, sizes) = families[(rng.next() as usize) % families.len()];
    let name = rng.pick(names);
    let size = rng.pick(sizes);
    let mut id = format!("{vendor}/{name}");
    if !size.is_empty() {
        id.push('-');
        id.push_str(size);
    }
    match rng.next() % 10 {
        0 | 1 => id.push_str(":free"),
        2 => id.push_str("-instruct"),
        3 => id.push_str(&format!("-{}", 2407 + rng.next() % 6)),
        _ => {}
    }
    id
}

fn catalogue() -> (Arc<Config>, Discovered) {
    let mut rng = Lcg(42);
    let mut raw = RawConfig::default();
    let mut discovered: Discovered = HashMap::new();
    for c in 0..CHANNELS {
        let name = format!("ch{c:04}");
        let mut ch = ChannelConfig::new(name.clone(), ChannelProtocol::Openai);
        ch.base_url = Some(format!("https://provider{}.example/v1", c % 97));
        ch.priority = (c % 5) as i64;
        ch.weight = 1 + (c % 3) as u32;
        let key = format!("sk-bench-{c}");
        ch.keys = vec![KeyConfig::Bare(Secret::new(key.clone()))];
        if c % 10 == 0 {
            ch.tags = vec!["cheap".into()];
        }
        let mut models = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while models.len() < MODELS_PER_CHANNEL {
            let id = model_id(&mut rng);
            if !seen.insert(id.clone()) {
                continue;
            }
            let price = (!rng.next().is_multiple_of(3)).then(|| Price {
                input: (rng.next() % 3000) as f64 / 1000.0,
                output: (rng.next() % 12000) as f64 / 1000.0,
                ..Default::default()
            });
            models.push(DiscoveredModel { id, kind: None, price, context_length: None });
        }
        discovered.entry(name).or_default().insert(router::usage::fingerprint(&key), models);
        raw.channels.push(ch);
    }
    (Arc::new(Config { raw, ..Default::default() }), discovered)
}

const QUERIES: &[(&str, Strategy)] = &[
    ("tag:qwen3,235b,free", Strategy::Priority),
    ("tag:qwen3,235b,free", Strategy::Balanced),
    ("tag:llama,405b,!free", Strategy::CostFirst),
    ("tag:kimi,k2,free,cheap", Strategy::Priority),
    ("tag:glm,air,free", Strategy::FreeFirst),
    ("kimi-dev-72b-free", Strategy::Priority),
    ("deepseek/deepseek-r1-70b", Strategy::Priority),
    ("tag:qwen,!free", Strategy::Priority),
    ("tag:nothing-here", Strategy::Priority),
];

fn request(model: &str, strategy: Strategy) -> RouteRequest<'_> {
    RouteRequest {
        model,
        kind: ModelKind::Chat,
        client: Protocol::Openai,
        strategy,
        pin: None,
        allow: None,
        translate: false,
        est_input: 1000,
        est_output: 1024,
    }
}

/// Plans one query `BENCH_ROUTING_ITERS` times and prints the median (see the module docs).
fn one_query(snap: &Snapshot, only: &str) {
    let &(q, strategy) =
        QUERIES.iter().find(|(q, _)| *q == only).expect("BENCH_ROUTING_ONLY names a query of the table");
    let iters: usize = std::env::var("BENCH_ROUTING_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let health = Health::new();
    let req = request(q, strategy);
    let mut times = Vec::with_capacity(iters);
    let mut candidates = 0;
    for _ in 0..iters {
        let t = Instant::now();
        let r = routing::plan(snap, &health, &req, Instant::now());
        times.push(t.elapsed());
        candidates = r.map(|p| p.candidates.len()).unwrap_or(0);
    }
    let m = if times.is_empty() { Duration::ZERO } else { median(times) };
    println!("{q} {} candidates={candidates} iters={iters} median={:.1} us", strategy.as_str(), m.as_secs_f64() * 1e6);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The resolution as it was before the tag index: every model of every channel checked.
fn scan(snap: &Snapshot, expr: &TagExpr) -> usize {
    let mut n = 0;
    for ch in snap.channels.iter().filter(|c| c.enabled) {
        for m in &ch.models {
            if expr.matches(routing::model_tags(ch, &m.id).into_iter()) {
                n += 1;
            }
        }
    }
    n
}

fn main() {
    let out_path = std::env::args().nth(1).unwrap_or_else(|| "bench/results/routing.txt".into());
    let (config, discovered) = catalogue();
    if let Ok(only) = std::env::var("BENCH_ROUTING_ONLY") {
        return one_query(&Snapshot::build(config, &[], &discovered, false), &only);
    }
    let mut report = String::new();

    let mut builds = Vec::new();
    let mut snap = None;
    for _ in 0..7 {
        let t = Instant::now();
        let s = Snapshot::build(config.clone(), &[], &discovered, false);
        builds.push(t.elapsed());
        snap = Some(s);
    }
    let snap = snap.expect("built");
    let models: usize = snap.channels.iter().map(|c| c.models.len()).sum();
    let build = median(builds);
    writeln!(report, "routing benchmark (cargo run --release --example bench_routing)").unwrap();
    writeln!(
        report,
        "catalogue: {} channels, {models} models, {} distinct ids, {} distinct tags",
        snap.channels.len(),
        snap.by_model.len(),
        snap.by_tag.len()
    )
    .unwrap();
    writeln!(report, "snapshot rebuild: median {:.1} ms of 7 (target < 100 ms)", build.as_secs_f64() * 1000.0).unwrap();
    writeln!(report).unwrap();
    writeln!(
        report,
        "{:<34} {:>10} {:>12} {:>14} {:>16}",
        "query", "strategy", "candidates", "plan median", "scan (no index)"
    )
    .unwrap();

    let health = Health::new();
    let queries = QUERIES;
    let mut worst_selective = Duration::ZERO;
    for &(q, strategy) in queries {
        let req = request(q, strategy);
        let n = routing::plan(&snap, &health, &req, Instant::now()).map(|p| p.candidates.len()).unwrap_or(0);
        let iters = if n > 2000 { 50 } else { 2000 };
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            let r = routing::plan(&snap, &health, &req, Instant::now());
            times.push(t.elapsed());
            std::hint::black_box(r.is_ok());
        }
        let plan_t = median(times);
        let scan_t = TagExpr::parse(q).map(|e| {
            let t = Instant::now();
            std::hint::black_box(scan(&snap, &e));
            t.elapsed()
        });
        if n <= 500 && q != "tag:nothing-here" {
            worst_selective = worst_selective.max(plan_t);
        }
        writeln!(
            report,
            "{q:<34} {:>10} {n:>12} {:>11.1} us {:>16}",
            strategy.as_str(),
            plan_t.as_secs_f64() * 1e6,
            scan_t.map(|d| format!("{:.0} us", d.as_secs_f64() * 1e6)).unwrap_or_else(|| "-".into())
        )
        .unwrap();
    }
    writeln!(report).unwrap();
    writeln!(
        report,
        "tag query (<= 500 candidates), slowest median: {:.1} us (target < 50 us): {}",
        worst_selective.as_secs_f64() * 1e6,
        if worst_selective < Duration::from_micros(50) { "met" } else { "MISSED" }
    )
    .unwrap();
    writeln!(
        report,
        "snapshot rebuild: {:.1} ms (target < 100 ms): {}",
        build.as_secs_f64() * 1000.0,
        if build < Duration::from_millis(100) { "met" } else { "MISSED" }
    )
    .unwrap();
    print!("{report}");
    if let Some(dir) = std::path::Path::new(&out_path).parent() {
        std::fs::create_dir_all(dir).expect("create results dir");
    }
    std::fs::write(&out_path, report).expect("write results");
}
