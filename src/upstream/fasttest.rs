//! Fast tests: measure endpoints that have no latency yet, for the `fastest` strategy.
//!
//! Owns the cheap `GET {base}{fast_test_path}` (with the endpoint's auth) and its cache. A 2xx or 4xx answer
//! means "reachable": the time to the response headers is fed into [`Health::observe_ttfb`], exactly like
//! real traffic. 5xx and transport errors record nothing, so the endpoint stays unknown and sorts last. Each
//! endpoint is tested at most once per TTL. Runs before `routing::plan`, which stays pure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;

use crate::catalog::Snapshot;
use crate::live::health::Health;

/// The fast-test cache: when each endpoint (by `health_key`) was last tested.
#[derive(Debug)]
pub struct FastTest {
    tested: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    timeout: Duration,
    client: reqwest::Client,
}

/// What one test found.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Answered 2xx or 4xx after this many milliseconds.
    Reachable(f64),
    /// 5xx or a transport error (no detail: it is only used for ordering).
    Unreachable,
}

impl Default for FastTest {
    fn default() -> Self {
        FastTest::with_timeout(Duration::from_secs(2))
    }
}

impl FastTest {
    /// Tests bounded by `timeout` (`routing.fast_test_timeout`), each endpoint at most every 30 s.
    pub fn with_timeout(timeout: Duration) -> Self {
        FastTest::new(Duration::from_secs(30), timeout)
    }

    /// `ttl`: an endpoint is tested again only after this long; `timeout`: bound on each test.
    pub fn new(ttl: Duration, timeout: Duration) -> Self {
        FastTest { tested: Mutex::new(HashMap::new()), ttl, timeout, client: super::probe_client(timeout) }
    }

    /// Tests, concurrently, the given endpoints (channel index, endpoint index) that have no observed latency and
    /// were not tested within the TTL. Returns how many were tested. Call it before `routing::plan` when the
    /// strategy is `fastest`; endpoints with real traffic are never tested.
    pub async fn measure_unknown(&self, snap: &Snapshot, health: &Health, endpoints: &[(usize, usize)]) -> usize {
        let now = Instant::now();
        let todo: Vec<(usize, usize)> = {
            let mut tested = self.tested.lock().expect("fast-test lock");
            let mut todo = Vec::new();
            for &(c, e) in endpoints {
                let ep = &snap.channels[c].endpoints[e];
                if health.view(&ep.health_key).ttfb_ms.is_some() || todo.contains(&(c, e)) {
                    continue;
                }
                let fresh = tested.get(&*ep.health_key).is_some_and(|t| now.duration_since(*t) < self.ttl);
                if !fresh {
                    // Marked before the test runs so concurrent callers do not test it twice.
                    tested.insert(ep.health_key.to_string(), now);
                    todo.push((c, e));
                }
            }
            todo
        };
        let n = todo.len();
        futures_util::stream::iter(todo)
            .map(|(c, e)| async move {
                if let Probe::Reachable(ms) = self.probe(snap, c, e).await {
                    health.observe_ttfb(&snap.channels[c].endpoints[e].health_key, ms);
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        n
    }

    /// One test of one endpoint, with its first enabled token.
    pub async fn probe(&self, snap: &Snapshot, c: usize, e: usize) -> Probe {
        let ch = &snap.channels[c];
        let ep = &ch.endpoints[e];
        let mut headers = HeaderMap::new();
        if let Some(tok) = ep.tokens.iter().find(|t| t.enabled) {
            super::auth_headers(ch, ep, tok, super::Operation::Models, &mut headers);
        }
        let path = &ep.fast_test_path;
        let url =
            if path.starts_with('/') { format!("{}{path}", ep.base_url) } else { format!("{}/{path}", ep.base_url) };
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, self.client.get(url).headers(headers).send()).await {
            Ok(Ok(resp)) if resp.status().is_success() || resp.status().is_client_error() => {
                Probe::Reachable(started.elapsed().as_secs_f64() * 1000.0)
            }
            _ => Probe::Unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config;

    /// Answers every connection with `status` and counts requests.
    async fn mock(status: u16) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, hits)
    }

    #[tokio::test]
    async fn reachable_4xx_is_measured_5xx_is_not_and_results_are_cached() {
        let (ok_port, ok_hits) = mock(401).await;
        let (bad_port, bad_hits) = mock(503).await;
        let yaml = format!(
            "channels:\n  - name: a\n    base_url: http://127.0.0.1:{ok_port}/v1\n    models: [m]\n  - name: b\n    base_url: http://127.0.0.1:{bad_port}/v1\n    models: [m]\n"
        );
        let cfg = config::parse(std::path::Path::new("t.yaml"), &yaml, &|_| None).unwrap();
        let snap = Snapshot::build(Arc::new(cfg), &[], &Default::default(), false);
        let health = Health::new();
        let ft = FastTest::new(Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(ft.measure_unknown(&snap, &health, &[(0, 0), (1, 0)]).await, 2);
        assert!(health.view("a/default").ttfb_ms.is_some());
        assert_eq!(health.view("b/default").ttfb_ms, None);
        // Inside the TTL nothing is tested again: `a` has a latency, `b` was tested recently.
        assert_eq!(ft.measure_unknown(&snap, &health, &[(0, 0), (1, 0)]).await, 0);
        assert_eq!(ok_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(bad_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
