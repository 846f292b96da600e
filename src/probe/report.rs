//! What a test learnt, for a running server: [`ProbeReport`] (per (endpoint, key[, model]) the latency seen and
//! the failure met; serialisable so it crosses the control socket) and [`apply`], which feeds it to a server's
//! health the way the proxy's own attempts would.
//!
//! Must not decide what a failure cools (that is [`FailureClass::cooldown`]); holds names and health keys,
//! never a key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CheckKind, CheckResult, RouteResult};
use crate::catalog::Snapshot;
use crate::config::CooldownConfig;
use crate::failure::{self, FailureClass};
use crate::live::health::{CoolKeys, Health};

/// What a test learnt, for a running server: per (endpoint, key[, model]) the latency seen and the failure met.
/// Serialisable so it can cross the control socket; holds names and health keys, never a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub entries: Vec<ProbeEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEntry {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    /// Health-table key of the endpoint (`channel/endpoint`, as the catalogue makes it).
    pub endpoint_health_key: String,
    /// Health-table key of the token (`channel/endpoint/token_key`).
    pub token_health_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub check: CheckKind,
    /// Time to the response headers of a successful answer, ms: what `fastest` ranks on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProbeFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFailure {
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Builds the report of checks and of the attempts of routed requests.
pub fn report(snap: &Snapshot, checks: &[CheckResult], routes: &[RouteResult]) -> ProbeReport {
    let mut entries: Vec<ProbeEntry> = checks
        .iter()
        .map(|c| ProbeEntry {
            channel: c.channel.clone(),
            endpoint: c.endpoint.clone(),
            token_key: c.token_key.clone(),
            endpoint_health_key: c.health.0.clone(),
            token_health_key: c.health.1.clone(),
            model: c.model.clone(),
            check: c.check,
            latency_ms: c.latency_ms.filter(|_| c.ok()).map(|m| m as f64),
            failure: (!c.ok()).then_some(ProbeFailure {
                class: c.result,
                status: c.status,
                retry_after_ms: c.retry_after_ms,
            }),
        })
        .collect();
    for a in routes.iter().filter_map(|r| r.request.as_ref()).flat_map(|r| &r.attempts) {
        let Some(ch) = snap.channel(&a.channel) else { continue };
        let Some(ep) = ch.endpoints.iter().find(|e| *e.name == *a.endpoint) else { continue };
        let Some(tok) = ep.tokens.iter().find(|t| *t.token_key == *a.token_key) else { continue };
        let class = a.outcome;
        entries.push(ProbeEntry {
            channel: String::from(&*a.channel),
            endpoint: String::from(&*a.endpoint),
            token_key: String::from(&*a.token_key),
            endpoint_health_key: ep.health_key.to_string(),
            token_health_key: tok.health_key.to_string(),
            model: Some(String::from(&*a.model)),
            check: CheckKind::Request,
            latency_ms: (class == FailureClass::Ok).then_some(f64::from(a.ms)),
            failure: (class != FailureClass::Ok).then_some(ProbeFailure {
                class,
                status: a.status,
                retry_after_ms: None,
            }),
        });
    }
    ProbeReport { time_ms: crate::usage::now_ms(), entries }
}

/// Applies a report to a server's health: latencies feed the EWMA `fastest` ranks on; failures cool down what
/// the proxy's failover table says (token for auth / quota / rate limits, endpoint for connect / timeout / 5xx,
/// (channel, model) for a missing model). A successful chat check or request also clears cooldowns of its
/// endpoint and token; a successful model-list check does not (the list answering says little about chat).
pub fn apply(report: &ProbeReport, health: &Health, cooldown: &CooldownConfig) {
    for e in &report.entries {
        if let Some(ms) = e.latency_ms
            && ms.is_finite()
            && ms >= 0.0
        {
            health.observe_ttfb(&e.endpoint_health_key, ms);
        }
        match &e.failure {
            None if e.check != CheckKind::Reachability => {
                health.succeed(&e.endpoint_health_key);
                health.succeed(&e.token_health_key);
            }
            None => {}
            Some(f) => {
                // A model list missing at its path says nothing about the upstream's health.
                if f.class == FailureClass::NotFound && e.check == CheckKind::Reachability {
                    continue;
                }
                let Some(cool) = f.class.cooldown(cooldown) else { continue };
                let model = e.model.as_deref().unwrap_or("");
                if model.is_empty() && cool.target == failure::CoolTarget::ChannelModel {
                    continue;
                }
                let keys = CoolKeys {
                    channel: &e.channel,
                    endpoint: &e.endpoint_health_key,
                    token: &e.token_health_key,
                    model,
                };
                let reason = format!("router test: {}", f.class.words());
                health.cool(f.class, cooldown, &keys, f.retry_after_ms.map(Duration::from_millis), &reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn entry(check: CheckKind, model: Option<&str>, latency: Option<f64>, failure: Option<FailureClass>) -> ProbeEntry {
        ProbeEntry {
            channel: "a".into(),
            endpoint: "default".into(),
            token_key: "k".into(),
            endpoint_health_key: "a/default".into(),
            token_health_key: "a/default/k".into(),
            model: model.map(str::to_string),
            check,
            latency_ms: latency,
            failure: failure.map(|class| ProbeFailure { class, status: None, retry_after_ms: None }),
        }
    }

    #[test]
    fn reports_feed_latency_and_cooldowns() {
        let cfg = CooldownConfig::default();
        let h = Health::new();
        let r = ProbeReport { time_ms: 0, entries: vec![entry(CheckKind::Reachability, None, Some(120.0), None)] };
        apply(&r, &h, &cfg);
        assert_eq!(h.view("a/default").ttfb_ms, Some(120.0));
        assert!(h.cooling("a/default", Instant::now()).is_none());

        let r = ProbeReport {
            time_ms: 0,
            entries: vec![
                entry(CheckKind::Reachability, None, None, Some(FailureClass::Auth)),
                entry(CheckKind::Reachability, None, None, Some(FailureClass::NotFound)),
            ],
        };
        apply(&r, &h, &cfg);
        assert!(h.cooling("a/default/k", Instant::now()).unwrap() > Duration::from_secs(600));
        assert!(h.cooling("a/default", Instant::now()).is_none());

        apply(
            &ProbeReport {
                time_ms: 0,
                entries: vec![entry(CheckKind::Chat, Some("m"), None, Some(FailureClass::NotFound))],
            },
            &h,
            &cfg,
        );
        assert!(h.cooling("a#m", Instant::now()).is_some());
        apply(
            &ProbeReport {
                time_ms: 0,
                entries: vec![entry(CheckKind::Request, None, None, Some(FailureClass::Connect))],
            },
            &h,
            &cfg,
        );
        assert!(h.cooling("a/default", Instant::now()).is_some());
        // A working chat clears what failed.
        apply(
            &ProbeReport { time_ms: 0, entries: vec![entry(CheckKind::Chat, Some("m"), Some(80.0), None)] },
            &h,
            &cfg,
        );
        assert!(h.cooling("a/default", Instant::now()).is_none());
        assert!(h.cooling("a/default/k", Instant::now()).is_none());

        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ProbeReport>(&text).unwrap(), r);
        assert!(text.contains("\"class\":\"auth\""));
    }
}
