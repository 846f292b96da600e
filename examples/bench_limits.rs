//! What gateway-key admission costs on the request path: `admit` + `settle` per request, one key shared by
//! every thread (the contended case) and one key per thread, with every limit set (the most work).
//!
//! `cargo run --release --example bench_limits [THREADS] [REQUESTS_PER_THREAD]`

use std::sync::Arc;
use std::time::Instant;

use router::live::limits::{Budget, Limiter, Limits, Period};

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let per_thread: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let limits = Limits {
        rpm: Some(u32::MAX),
        tpm: Some(u64::MAX / 1_000_000_000),
        max_parallel: Some(u32::MAX),
        budget: Some(Budget { usd: 1e12, per: Period::Day }),
    };
    for shared in [true, false] {
        let limiter = Arc::new(Limiter::default());
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    let key = if shared { "team".to_string() } else { format!("key-{t}") };
                    let now = router::usage::now_ms();
                    for i in 0..per_thread {
                        let a = limiter.admit(&key, &limits, now + (i / 1000) as i64).expect("admitted");
                        limiter.settle(a.ticket, 30, Some(0.0001), now);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = threads as u64 * per_thread;
        let ns = started.elapsed().as_nanos() as f64 / per_thread as f64;
        println!(
            "{} key(s), {threads} threads: {total} admit+settle in {:?}: {ns:.0} ns per request per thread",
            if shared { "1 shared" } else { "per-thread" },
            started.elapsed()
        );
    }
}
