//! Alerts: conditions watched on the event stream, sent to webhooks.
//!
//! Owns the conditions (a balance below a threshold, an endpoint or channel cooling N times within a window,
//! every candidate of a model failing, a gateway key reaching a share of its budget), de-duplication (one alert
//! per condition per window) and delivery (generic JSON or Slack-compatible text, each target with a timeout and
//! retries, in its own task). Runs off the request path: it only reads the event stream and the limiter's
//! spend. Must not put a secret in an alert or a log line (webhook URLs may carry tokens: logs name the target).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::{AlertsConfig, WebhookConfig, WebhookFormat};
use crate::events::{CoolLevel, Event};
use crate::live::limits::Budget;
use crate::proxy::AppState;
use crate::upstream::FailureClass;
use crate::usage::{Outcome, RequestRecord};

/// One alert, as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `balance_below`, `cooling`, `all_failed`, `budget`, `test`.
    pub alert: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// One line for people.
    pub summary: String,
    /// What the condition is about (channel, endpoint, token, model, key, currency ...).
    pub labels: BTreeMap<&'static str, String>,
    /// RFC 3339, UTC.
    pub time: String,
    /// The de-duplication key: one alert per condition per window.
    #[serde(skip)]
    pub condition: String,
}

impl Alert {
    fn new(alert: &'static str, severity: &'static str, summary: String, labels: &[(&'static str, &str)]) -> Alert {
        let labels: BTreeMap<&'static str, String> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let condition = std::iter::once(alert.to_string())
            .chain(labels.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(",");
        Alert { alert, severity, summary, labels, time: jiff::Timestamp::now().to_string(), condition }
    }

    /// The sample `router alerts test` sends.
    pub fn sample() -> Alert {
        Alert::new(
            "test",
            "warning",
            "test alert from `router alerts test`: this target receives router alerts".into(),
            &[("router", env!("CARGO_PKG_VERSION"))],
        )
    }

    /// The request body for a target of `format`.
    pub fn payload(&self, format: WebhookFormat) -> serde_json::Value {
        match format {
            WebhookFormat::Json => serde_json::to_value(self).expect("an alert serialises"),
            WebhookFormat::Slack => {
                let icon = if self.severity == "critical" { ":rotating_light:" } else { ":warning:" };
                serde_json::json!({ "text": format!("{icon} [router] {}", self.summary) })
            }
        }
    }
}

/// A target's name in logs and reports: its own, else the URL's host (never the URL: it may hold a token).
pub fn target_name(w: &WebhookConfig) -> String {
    w.name.clone().unwrap_or_else(|| {
        reqwest::Url::parse(w.url.expose()).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
    })
}

/// The conditions' memory: what was sent when, and recent cooldowns.
#[derive(Debug, Default)]
pub struct Watcher {
    sent: HashMap<String, Instant>,
    cooled: HashMap<String, VecDeque<Instant>>,
}

impl Watcher {
    /// The alerts `ev` raises under `cfg` at `now`, already de-duplicated. `budget` gives a key's budget and its
    /// spend in the current period.
    pub fn observe(
        &mut self,
        cfg: &AlertsConfig,
        ev: &Event,
        now: Instant,
        budget: &dyn Fn(&str) -> Option<(Budget, f64)>,
    ) -> Vec<Alert> {
        let window = cfg.window.0;
        let mut raised = Vec::new();
        match ev {
            Event::Balance { channel, endpoint, token_key, currency, amount } => {
                if let Some(min) = cfg.balance_below.filter(|min| amount < min) {
                    raised.push(Alert::new(
                        "balance_below",
                        if *amount <= 0.0 { "critical" } else { "warning" },
                        format!("balance of {channel}/{endpoint} [{token_key}] is {amount:.2} {currency}, below {min}"),
                        &[("channel", channel), ("endpoint", endpoint), ("token", token_key), ("currency", currency)],
                    ));
                }
            }
            Event::Cooled { key, level, reason, .. } if cfg.cooling_times > 0 => {
                // Endpoint and token cooldowns count for their endpoint; (channel, model) ones for the channel.
                let (what, subject) = match level {
                    CoolLevel::Model => ("channel", key.split('#').next().unwrap_or(key)),
                    _ => ("endpoint", endpoint_of(key)),
                };
                let times = self.cooled.entry(format!("{what}:{subject}")).or_default();
                times.push_back(now);
                while times.front().is_some_and(|t| now.duration_since(*t) > window) {
                    times.pop_front();
                }
                if times.len() >= cfg.cooling_times as usize {
                    raised.push(Alert::new(
                        "cooling",
                        "warning",
                        format!(
                            "{what} {subject} started cooling down {} times within {} (last: {reason})",
                            times.len(),
                            crate::config::Dur(window)
                        ),
                        &[(what, subject)],
                    ));
                }
            }
            Event::RequestFinished(rec) => {
                if cfg.all_failed && all_failed(rec) {
                    let model = rec.requested_model.as_str();
                    raised.push(Alert::new(
                        "all_failed",
                        "critical",
                        format!(
                            "every candidate for model `{model}` failed ({} attempts): {}",
                            rec.attempts.len(),
                            rec.error.as_deref().unwrap_or("")
                        ),
                        &[("model", model)],
                    ));
                }
                if cfg.budget_percent > 0.0
                    && let Some(key) = rec.gateway_key.as_deref()
                    && let Some((b, spent)) = budget(key)
                    && b.usd > 0.0
                    && spent >= b.usd * cfg.budget_percent / 100.0
                {
                    let pct = spent / b.usd * 100.0;
                    raised.push(Alert::new(
                        "budget",
                        if pct >= 100.0 { "critical" } else { "warning" },
                        format!(
                            "gateway key `{key}` has spent ${spent:.2} of its ${:.2} budget per {} ({pct:.0}%)",
                            b.usd,
                            b.per.as_str()
                        ),
                        &[("key", key), ("period", b.per.as_str())],
                    ));
                }
            }
            _ => {}
        }
        raised.retain(|a| match self.sent.get(&a.condition) {
            Some(t) if now.duration_since(*t) < window => false,
            _ => {
                self.sent.insert(a.condition.clone(), now);
                true
            }
        });
        // Forget what no longer matters, so the maps stay small.
        if self.sent.len() > 4096 {
            self.sent.retain(|_, t| now.duration_since(*t) < window);
            self.cooled.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        raised
    }
}

/// `channel/endpoint` of an endpoint or token health key.
fn endpoint_of(key: &str) -> &str {
    match key.match_indices('/').nth(1) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// Every candidate failed: attempts were made and none succeeded, or everything was cooling down.
fn all_failed(rec: &RequestRecord) -> bool {
    match rec.outcome {
        Outcome::UpstreamError => {
            !rec.attempts.is_empty() && rec.attempts.iter().all(|a| a.outcome != FailureClass::Ok)
        }
        Outcome::NoRoute => rec.status == 503,
        _ => false,
    }
}

/// Sends `alert` to one target: up to `attempts` tries, each bounded by `timeout`, backing off between them.
/// Returns the error of the last try.
pub async fn deliver(
    client: &reqwest::Client,
    target: &WebhookConfig,
    alert: &Alert,
    timeout: Duration,
    attempts: u32,
) -> Result<(), String> {
    let body = alert.payload(target.format);
    let mut last = String::new();
    for i in 0..attempts.max(1) {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500 << (i - 1).min(6))).await;
        }
        let sent = client.post(target.url.expose()).timeout(timeout).json(&body).send().await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("answered HTTP {}", r.status().as_u16()),
            // Without the URL: reqwest's error text would include it.
            Err(e) if e.is_timeout() => last = format!("no answer within {timeout:?}"),
            Err(e) if e.is_connect() => last = "could not connect".into(),
            Err(_) => last = "the request failed".into(),
        }
    }
    Err(last)
}

/// Watches the server's events and sends alerts until the stream closes. Reads `alerts:` from the live config
/// for every event, so a reload applies at once.
pub async fn run(state: Arc<AppState>, mut rx: broadcast::Receiver<Event>) {
    // Each delivery also sets the live config's timeout on its request.
    let client = crate::upstream::probe_client(state.snapshot.load().config.raw.alerts.timeout.0);
    let mut watcher = Watcher::default();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("alerts fell {n} events behind; conditions in them were not checked");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let config = state.snapshot.load().config.clone();
        let cfg = &config.raw.alerts;
        if cfg.webhooks.is_empty() {
            continue;
        }
        let budget = |key: &str| {
            let keys = state.keys.load();
            let b = keys.entries().find(|e| &*e.name == key)?.limits.budget?;
            Some((b, state.limiter.spent(key)))
        };
        for alert in watcher.observe(cfg, &ev, Instant::now(), &budget) {
            tracing::warn!(alert = alert.alert, "alert: {}", alert.summary);
            for target in cfg.webhooks.clone() {
                let (client, alert, timeout, attempts) = (client.clone(), alert.clone(), cfg.timeout.0, cfg.attempts);
                tokio::spawn(async move {
                    if let Err(e) = deliver(&client, &target, &alert, timeout, attempts).await {
                        tracing::warn!("alert `{}` not delivered to {}: {e}", alert.alert, target_name(&target));
                    }
                });
            }
        }
    }
}

/// Subscribes now and watches in a task.
pub fn spawn(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let rx = state.events.subscribe();
    tokio::spawn(run(state, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use crate::live::limits::Period;
    use crate::usage::Attempt;

    fn cfg() -> AlertsConfig {
        AlertsConfig { balance_below: Some(5.0), cooling_times: 3, window: Dur::secs(600), ..Default::default() }
    }

    fn none(_: &str) -> Option<(Budget, f64)> {
        None
    }

    fn cooled(key: &str) -> Event {
        Event::Cooled {
            key: key.into(),
            level: CoolLevel::of_key(key),
            reason: "HTTP 500".into(),
            for_ms: 1000,
            failures: 1,
        }
    }

    #[test]
    fn balance_below_threshold_alerts_once_per_window() {
        let (mut w, c, t0) = (Watcher::default(), cfg(), Instant::now());
        let ev = |amount| Event::Balance {
            channel: "ds".into(),
            endpoint: "default".into(),
            token_key: "k1".into(),
            currency: "CNY".into(),
            amount,
        };
        assert!(w.observe(&c, &ev(10.0), t0, &none).is_empty());
        let a = w.observe(&c, &ev(3.0), t0, &none);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].alert, "balance_below");
        assert!(a[0].summary.contains("3.00 CNY"), "{}", a[0].summary);
        assert!(w.observe(&c, &ev(2.0), t0 + Duration::from_secs(60), &none).is_empty());
        assert_eq!(w.observe(&c, &ev(2.0), t0 + Duration::from_secs(601), &none).len(), 1);
    }

    #[test]
    fn cooling_n_times_within_the_window() {
        let (mut w, c, t0) = (Watcher::default(), cfg(), Instant::now());
        assert!(w.observe(&c, &cooled("main/eu"), t0, &none).is_empty());
        assert!(w.observe(&c, &cooled("main/eu/k1"), t0 + Duration::from_secs(1), &none).is_empty());
        // Another endpoint does not count toward this one.
        assert!(w.observe(&c, &cooled("main/us"), t0 + Duration::from_secs(1), &none).is_empty());
        let a = w.observe(&c, &cooled("main/eu"), t0 + Duration::from_secs(2), &none);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].labels["endpoint"], "main/eu");
        assert!(w.observe(&c, &cooled("main/eu"), t0 + Duration::from_secs(3), &none).is_empty());
        // Spread over more than the window: no alert.
        let mut w = Watcher::default();
        for i in 0..5 {
            assert!(w.observe(&c, &cooled("x#m"), t0 + Duration::from_secs(400 * i), &none).is_empty());
        }
    }

    #[test]
    fn every_candidate_failing_and_budget_share() {
        let (mut w, c, t0) = (Watcher::default(), cfg(), Instant::now());
        let failed = RequestRecord {
            requested_model: "gpt-4o".into(),
            outcome: Outcome::UpstreamError,
            status: 502,
            attempts: vec![Attempt { outcome: FailureClass::ServerError, ..Default::default() }; 2],
            gateway_key: Some("team".into()),
            ..Default::default()
        };
        let budget = |k: &str| (k == "team").then_some((Budget { usd: 10.0, per: Period::Day }, 8.5));
        let a = w.observe(&c, &Event::RequestFinished(Arc::new(failed.clone())), t0, &budget);
        let kinds: Vec<_> = a.iter().map(|a| a.alert).collect();
        assert_eq!(kinds, ["all_failed", "budget"]);
        assert!(a[1].summary.contains("$8.50 of its $10.00 budget per day (85%)"), "{}", a[1].summary);
        assert!(w.observe(&c, &Event::RequestFinished(Arc::new(failed)), t0, &budget).is_empty());
        let ok = RequestRecord { outcome: Outcome::Ok, status: 200, ..Default::default() };
        assert!(w.observe(&c, &Event::RequestFinished(Arc::new(ok)), t0, &none).is_empty());
    }

    #[test]
    fn payloads_and_validation() {
        let a = Alert::sample();
        let json = a.payload(WebhookFormat::Json);
        assert_eq!(json["alert"], "test");
        assert!(json.get("condition").is_none());
        let slack = a.payload(WebhookFormat::Slack);
        assert!(slack["text"].as_str().unwrap().starts_with(":warning: [router] test alert"));
        let mut c = cfg();
        c.webhooks.push(WebhookConfig {
            url: crate::config::Secret::new("ftp://secret-token@x"),
            format: WebhookFormat::Json,
            name: None,
        });
        let (field, msg, _) = c.check().unwrap_err();
        assert_eq!(field, "webhooks[0].url");
        assert!(!msg.contains("secret-token"));
    }
}
