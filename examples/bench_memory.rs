//! Memory benchmark: what a snapshot of 1,000 channels x 50 configured models (realistic ids such as
//! `qwen/qwen3-30b-a3b:free`, `gpt-4o-mini`, `vendor/model-7b-instruct:free`) costs, as VmRSS (from
//! /proc/self/status) and as live heap bytes (a counting allocator), before and after `Snapshot::build`; and the
//! rebuild time.
//!
//! Run: `cargo run --release --example bench_memory [-- LABEL]`. Prints one block; results are kept by hand in
//! `bench/results/memory.txt`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use router::catalog::Snapshot;
use router::config::{ChannelConfig, ChannelProtocol, Config, KeyConfig, RawConfig, Secret};

const CHANNELS: usize = 1000;
const MODELS_PER_CHANNEL: usize = 50;

/// Live heap bytes (requested sizes, without allocator overhead).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The highest `LIVE` since the last reset: what a build allocates at its peak (transients included).
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// A small deterministic generator: runs are comparable.
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
    let vendors = ["qwen", "meta-llama", "deepseek", "mistralai", "google", "moonshotai", "openai", "z-ai", "vendor"];
    let names = [
        "qwen3",
        "qwen2.5",
        "llama-3.1",
        "llama-3.3",
        "deepseek-r1",
        "deepseek-v3.1",
        "mistral-small",
        "mixtral",
        "gemma-3",
        "kimi-k2",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-oss",
        "glm-4.5",
        "model",
        "phi-4",
    ];
    let sizes = ["", "7b", "8b", "14b", "30b-a3b", "32b", "70b", "235b-a22b", "8x7b"];
    let name = rng.pick(&names);
    let size = rng.pick(&sizes);
    // A quarter are bare ids (`gpt-4o-mini`), the rest `vendor/name`.
    let mut id = if rng.next().is_multiple_of(4) { name.to_string() } else { format!("{}/{name}", rng.pick(&vendors)) };
    if !size.is_empty() {
        id.push('-');
        id.push_str(size);
    }
    match rng.next() % 10 {
        0 | 1 => id.push_str(":free"),
        2 | 3 => id.push_str("-instruct"),
        4 => id.push_str("-instruct:free"),
        5 => id.push_str(&format!("-{}", 2407 + rng.next() % 6)),
        _ => {}
    }
    id
}

fn raw_config() -> RawConfig {
    let mut rng = Lcg(7);
    let mut raw = RawConfig::default();
    for c in 0..CHANNELS {
        let mut ch = ChannelConfig::new(format!("ch{c:04}"), ChannelProtocol::Openai);
        ch.base_url = Some(format!("https://provider{}.example/v1", c % 97));
        ch.keys = vec![KeyConfig::Bare(Secret::new(format!("sk-bench-{c}")))];
        ch.tags = vec![if c % 4 == 0 { "free" } else { "paid" }.into(), format!("region{}", c % 5)];
        let mut seen = std::collections::HashSet::new();
        while ch.models.len() < MODELS_PER_CHANNEL {
            let id = model_id(&mut rng);
            if seen.insert(id.clone()) {
                ch.models.push(id);
            }
        }
        raw.channels.push(ch);
    }
    raw
}

fn main() {
    let label = std::env::args().nth(1).unwrap_or_else(|| "run".into());
    let (rss0, heap0) = (rss_kb(), LIVE.load(Ordering::Relaxed));
    let config = Arc::new(Config { raw: raw_config(), ..Default::default() });
    let (rss1, heap1) = (rss_kb(), LIVE.load(Ordering::Relaxed));
    PEAK.store(heap1, Ordering::Relaxed);
    let t = Instant::now();
    let snap = Snapshot::build(config.clone(), &[], &Default::default(), false);
    let first = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    let (rss2, heap2) = (rss_kb(), LIVE.load(Ordering::Relaxed));
    let models: usize = snap.channels.iter().map(|c| c.models.len()).sum();
    let distinct = snap.by_model.len();
    let tags = snap.by_tag.len();

    // Rebuild timing: a new snapshot while the old one is live (as `serve` does on reload), median of 7.
    let mut times: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let s = Snapshot::build(config.clone(), &[], &Default::default(), false);
            let d = t.elapsed();
            std::hint::black_box(&s);
            d
        })
        .collect();
    times.sort();
    drop(snap);

    let kb = |b: usize| b as f64 / 1024.0;
    println!("bench_memory [{label}]: {CHANNELS} channels x {MODELS_PER_CHANNEL} configured models");
    println!("  models {models}, distinct ids {distinct}, distinct tags {tags}");
    println!("  VmRSS start          {rss0:>8} kB");
    println!("  VmRSS + RawConfig    {rss1:>8} kB  (+{} kB)", rss1 - rss0);
    println!("  VmRSS + Snapshot     {rss2:>8} kB  (+{} kB)", rss2 - rss1);
    println!("  heap  RawConfig      {:>8.0} kB", kb(heap1 - heap0));
    println!(
        "  heap  Snapshot       {:>8.0} kB  ({:.0} bytes per model)",
        kb(heap2 - heap1),
        (heap2 - heap1) as f64 / models as f64
    );
    println!("  heap  build peak     {:>8.0} kB  (transients included)", kb(peak - heap1));
    println!(
        "  build: first {:.1} ms, rebuild median {:.1} ms of 7",
        first.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3
    );
}
