use std::sync::Arc;

use super::*;
use crate::config::{self, Config};

fn snap(yaml: &str) -> Snapshot {
    let cfg = config::parse(std::path::Path::new("t.yaml"), yaml, &|_| None).unwrap();
    Snapshot::build(Arc::new(cfg), &[], &Default::default(), false)
}

fn req(model: &str) -> RouteRequest<'_> {
    RouteRequest {
        model,
        kind: ModelKind::Chat,
        client: Protocol::Openai,
        strategy: Strategy::Priority,
        pin: None,
        allow: None,
        translate: false,
        est_input: 100,
        est_output: 100,
    }
}

const TWO: &str = "
channels:
  - name: cheap
    base_url: http://127.0.0.1:1/v1
    priority: 1
    models: [gpt-4o, text-embedding-3-small]
    aliases: {fast: gpt-4o-mini}
    keys: [k1, k2]
  - name: main
    base_url: http://127.0.0.1:2/v1
    priority: 0
    models: [gpt-4o, openai/gpt-4.1, qwen/qwen3-30b-a3b:free]
    keys: [k3]
  - name: claude
    protocol: anthropic
    base_url: http://127.0.0.1:3
    models: [claude-sonnet-4-5]
    keys: [k4]
";

fn names(s: &Snapshot, p: &Plan) -> Vec<String> {
    p.candidates.iter().map(|c| format!("{}:{}", s.channels[c.channel].name, c.model)).collect()
}

#[test]
fn priority_orders_tiers_and_expands_tokens() {
    let s = snap(TWO);
    let p = plan(&s, &Health::new(), &req("gpt-4o"), Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["main:gpt-4o", "cheap:gpt-4o", "cheap:gpt-4o"]);
    assert_eq!(p.resolved_by, "exact");
}

#[test]
fn alias_rewrites_model() {
    let s = snap(TWO);
    let p = plan(&s, &Health::new(), &req("fast"), Instant::now()).unwrap();
    assert_eq!(names(&s, &p)[0], "cheap:gpt-4o-mini");
}

#[test]
fn suffix_and_tags_resolution() {
    let s = snap(TWO);
    let p = plan(&s, &Health::new(), &req("gpt-4.1"), Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["main:openai/gpt-4.1"]);
    let p = plan(&s, &Health::new(), &req("tag:qwen,free,!local"), Instant::now()).unwrap_err();
    // Both channels are on loopback, so they are tagged local.
    assert!(matches!(p, PlanError::UnknownModel { .. } | PlanError::NoneUsable { .. }), "{p:?}");
    let p = plan(&s, &Health::new(), &req("qwen-free"), Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["main:qwen/qwen3-30b-a3b:free"]);
}

#[test]
fn dated_ids_match_undated_ones_both_ways() {
    let s = snap(
        "channels:\n  - name: c\n    protocol: anthropic\n    base_url: http://127.0.0.1:3\n    models: [claude-sonnet-4-5, claude-haiku-4-5-20251001]\n",
    );
    let mut r = req("claude-sonnet-4-5-20250929");
    r.client = Protocol::Anthropic;
    assert_eq!(names(&s, &plan(&s, &Health::new(), &r, Instant::now()).unwrap()), ["c:claude-sonnet-4-5"]);
    r.model = "claude-haiku-4-5";
    assert_eq!(names(&s, &plan(&s, &Health::new(), &r, Instant::now()).unwrap()), ["c:claude-haiku-4-5-20251001"]);
}

#[test]
fn embeddings_are_never_chat_candidates() {
    let s = snap(TWO);
    let e = plan(&s, &Health::new(), &req("text-embedding-3-small"), Instant::now()).unwrap_err();
    assert!(matches!(e, PlanError::UnknownModel { .. }), "{e:?}");
    let mut r = req("text-embedding-3-small");
    r.kind = ModelKind::Embedding;
    assert!(plan(&s, &Health::new(), &r, Instant::now()).is_ok());
}

#[test]
fn unknown_model_lists_closest_names() {
    let s = snap(TWO);
    match plan(&s, &Health::new(), &req("gpt-4"), Instant::now()).unwrap_err() {
        PlanError::UnknownModel { closest, .. } => assert!(closest.contains(&"gpt-4o".to_string()), "{closest:?}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn other_protocol_is_a_clear_error_without_translation() {
    let s = snap(TWO);
    let e = plan(&s, &Health::new(), &req("claude-sonnet-4-5"), Instant::now()).unwrap_err();
    assert!(matches!(e, PlanError::WrongProtocol { protocol: "anthropic", .. }), "{e:?}");
}

#[test]
fn cooling_endpoint_is_skipped_and_all_cooling_is_reported() {
    let s = snap(TWO);
    let h = Health::new();
    h.fail("main/default", Duration::from_secs(60), Duration::from_secs(60), None, "HTTP 500");
    let p = plan(&s, &h, &req("gpt-4o"), Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["cheap:gpt-4o", "cheap:gpt-4o"]);
    assert!(p.excluded.iter().any(|e| e.channel == "main" && e.cooling_for.is_some()));
    h.fail("cheap/default", Duration::from_secs(60), Duration::from_secs(60), None, "HTTP 500");
    assert!(matches!(plan(&s, &h, &req("gpt-4o"), Instant::now()), Err(PlanError::AllCooling { .. })));
}

#[test]
fn failover_disabled_endpoint_only_when_pinned() {
    let s = snap(
        "channels:\n  - name: a\n    models: [m]\n    endpoints:\n      - name: e1\n        base_url: http://127.0.0.1:1/v1\n        failover_enabled: false\n      - name: e2\n        base_url: http://127.0.0.1:2/v1\n",
    );
    let p = plan(&s, &Health::new(), &req("m"), Instant::now()).unwrap();
    assert_eq!(p.candidates.len(), 1);
    assert_eq!(&*s.channels[0].endpoints[p.candidates[0].endpoint].name, "e2");
    let mut r = req("m");
    r.pin = Some("a/e1");
    let p = plan(&s, &Health::new(), &r, Instant::now()).unwrap();
    assert_eq!(&*s.channels[0].endpoints[p.candidates[0].endpoint].name, "e1");
}

#[test]
fn allow_list_limits_a_key() {
    let s = snap(TWO);
    let allow = Allow::parse("tag:free");
    let mut r = req("gpt-4o");
    r.allow = Some(&allow);
    assert!(matches!(plan(&s, &Health::new(), &r, Instant::now()), Err(PlanError::Forbidden { .. })));
}

#[test]
fn weighted_random_inside_a_tier_follows_weights() {
    let s = snap(
        "channels:\n  - name: heavy\n    base_url: http://127.0.0.1:1/v1\n    weight: 9\n    models: [m]\n  - name: light\n    base_url: http://127.0.0.1:2/v1\n    weight: 1\n    models: [m]\n",
    );
    let h = Health::new();
    let firsts =
        (0..2000).filter(|_| plan(&s, &h, &req("m"), Instant::now()).unwrap().candidates[0].channel == 0).count();
    assert!((1650..1950).contains(&firsts), "{firsts}");
}

#[test]
fn plan_takes_microseconds() {
    // Not a timing assertion: just exercise a larger catalogue for panics.
    let mut yaml = String::from("channels:\n");
    for i in 0..50 {
        yaml.push_str(&format!(
            "  - name: c{i}\n    base_url: http://127.0.0.1:{}/v1\n    models: [m{i}, shared]\n",
            1000 + i
        ));
    }
    let s = snap(&yaml);
    let p = plan(&s, &Health::new(), &req("shared"), Instant::now()).unwrap();
    assert_eq!(p.candidates.len(), 50);
    let _ = Config::default();
}
