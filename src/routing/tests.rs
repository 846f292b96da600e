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
fn a_model_name_never_resolves_to_a_longer_model_through_tags() {
    // Regression: `gpt-4o` was read as `tag:gpt,4o` and served by `gpt-4o-mini`.
    let s =
        snap("channels:\n  - name: c\n    base_url: http://127.0.0.1:1/v1\n    models: [gpt-4o-mini, kimi-k2:free]\n");
    match plan(&s, &Health::new(), &req("gpt-4o"), Instant::now()).unwrap_err() {
        PlanError::UnknownModel { closest, .. } => assert_eq!(closest, ["gpt-4o-mini"]),
        e => panic!("{e:?}"),
    }
    assert_eq!(names(&s, &plan(&s, &Health::new(), &req("kimi-free"), Instant::now()).unwrap()), ["c:kimi-k2:free"]);
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
fn equal_channels_go_first_equally_often_with_the_narrow_sort_key() {
    // Eight channels of one priority and weight: the one-`u64` key (head, 58 random bits, 3 position bits) must
    // not favour the first channels of the catalogue.
    let mut cfg = String::from("channels:\n");
    for i in 0..8 {
        cfg.push_str(&format!("  - name: c{i}\n    base_url: http://127.0.0.1:{}/v1\n    models: [m]\n", i + 1));
    }
    let s = snap(&cfg);
    let h = Health::new();
    let mut firsts = [0usize; 8];
    for _ in 0..4000 {
        firsts[plan(&s, &h, &req("m"), Instant::now()).unwrap().candidates[0].channel] += 1;
    }
    assert!(firsts.iter().all(|n| (350..650).contains(n)), "{firsts:?}");
}

#[test]
fn endpoints_of_one_priority_share_load_by_weight() {
    let s = snap(
        "channels:\n  - name: c\n    models: [m]\n    endpoints:\n      - {name: backup, base_url: http://127.0.0.1:3/v1, priority: 1, keys: [k3]}\n      - {name: a, base_url: http://127.0.0.1:1/v1, weight: 3, keys: [k1]}\n      - {name: b, base_url: http://127.0.0.1:2/v1, keys: [k2]}\n",
    );
    let mut first_a = 0;
    for _ in 0..4000 {
        let p = plan(&s, &Health::new(), &req("m"), Instant::now()).unwrap();
        let eps: Vec<&str> = p.candidates.iter().map(|c| &*s.channels[0].endpoints[c.endpoint].name).collect();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[2], "backup", "a lower priority stays last");
        first_a += usize::from(eps[0] == "a");
    }
    // Weight 3 against 1: `a` goes first about 75% of the time.
    assert!((2700..3300).contains(&first_a), "{first_a}");
}

#[test]
fn a_request_too_long_for_a_window_falls_back_to_a_longer_one() {
    let s = snap(
        "channels:\n  - name: short\n    base_url: http://127.0.0.1:1/v1\n    models: [m]\n    tags: [code]\n    context_window: {m: 8000}\n  - name: long\n    base_url: http://127.0.0.1:2/v1\n    priority: 1\n    models: [m-long]\n    tags: [code]\n    context_window: {'*': 200000}\n",
    );
    let h = Health::new();
    let small = RouteRequest { est_input: 1000, est_output: 1000, ..req("tag:code") };
    let p = plan(&s, &h, &small, Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["short:m", "long:m-long"]);
    let big = RouteRequest { est_input: 50_000, est_output: 1000, ..req("tag:code") };
    let p = plan(&s, &h, &big, Instant::now()).unwrap();
    assert_eq!(names(&s, &p), ["long:m-long"]);
    assert!(
        p.excluded.iter().any(|e| e.channel == "short" && e.reason.to_string().starts_with("context too long")),
        "{p:?}"
    );
    let huge = RouteRequest { est_input: 500_000, est_output: 1000, ..req("tag:code") };
    match plan(&s, &h, &huge, Instant::now()).unwrap_err() {
        PlanError::NoneUsable { excluded, .. } => assert_eq!(excluded.len(), 2),
        e => panic!("{e:?}"),
    }
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

#[test]
fn fastest_orders_attempts_by_endpoint_latency_unknown_last() {
    let s = snap(
        "channels:\n  - name: a\n    models: [m]\n    endpoints:\n      - {name: slow, base_url: 'http://127.0.0.1:1/v1'}\n      - {name: quick, base_url: 'http://127.0.0.1:2/v1'}\n      - {name: unknown, base_url: 'http://127.0.0.1:3/v1'}\n  - name: b\n    base_url: http://127.0.0.1:4/v1\n    models: [m]\n",
    );
    let h = Health::new();
    h.observe_ttfb("a/slow", 500.0);
    h.observe_ttfb("a/quick", 50.0);
    h.observe_ttfb("b/default", 100.0);
    let mut r = req("m");
    r.strategy = Strategy::Fastest;
    let p = plan(&s, &h, &r, Instant::now()).unwrap();
    let order: Vec<String> = p
        .candidates
        .iter()
        .map(|c| format!("{}/{}", s.channels[c.channel].name, s.channels[c.channel].endpoints[c.endpoint].name))
        .collect();
    assert_eq!(order, ["a/quick", "b/default", "a/slow", "a/unknown"]);
    assert_eq!(p.endpoints().len(), 4);
}

const PRICED: &str = "
channels:
  - name: pricey
    base_url: http://127.0.0.1:1/v1
    models: [m]
    pricing: {m: {input: 10, output: 30}}
  - name: unknown
    base_url: http://127.0.0.1:2/v1
    models: [m]
  - name: cheap
    base_url: http://127.0.0.1:3/v1
    priority: 5
    models: [m]
    pricing: {m: {input: 0.1, output: 0.2}}
  - name: gratis
    base_url: http://127.0.0.1:4/v1
    priority: 9
    tags: [free]
    models: [m]
";

fn channel_order(s: &Snapshot, p: &Plan) -> Vec<String> {
    p.candidates.iter().map(|c| s.channels[c.channel].name.to_string()).collect()
}

#[test]
fn cost_first_puts_free_then_cheap_and_unknown_prices_last() {
    let s = snap(PRICED);
    let mut r = req("m");
    r.strategy = Strategy::CostFirst;
    for _ in 0..20 {
        let p = plan(&s, &Health::new(), &r, Instant::now()).unwrap();
        assert_eq!(channel_order(&s, &p), ["gratis", "cheap", "pricey", "unknown"]);
    }
    r.strategy = Strategy::FreeFirst;
    let p = plan(&s, &Health::new(), &r, Instant::now()).unwrap();
    assert_eq!(channel_order(&s, &p)[0], "gratis");
}

#[test]
fn packed_and_four_word_keys_order_by_the_same_rules() {
    // Priorities -3..2 pack into one `u128` key; a channel at priority 2^40 makes the span too wide, and the keys
    // are compared word by word. Either way: free first (free_first), then priority, then the client's protocol,
    // and a channel's models together in catalogue order when nothing else separates them.
    for wide in [false, true] {
        let mut yaml = String::from("channels:\n");
        for (i, prio) in [2, -3, 0, 0, 1, -3].iter().enumerate() {
            let protocol = if i % 2 == 0 { "openai" } else { "anthropic" };
            yaml.push_str(&format!(
                "  - name: c{i}\n    protocol: {protocol}\n    base_url: http://127.0.0.1:{}/v1\n    priority: {prio}\n    weight: {}\n    models: [m-a, m-b:free]\n",
                1000 + i,
                1 + i % 3
            ));
        }
        if wide {
            yaml.push_str("  - name: far\n    base_url: http://127.0.0.1:2000/v1\n    priority: 1099511627776\n    models: [m-c]\n");
        }
        let s = snap(&yaml);
        let h = Health::new();
        for strategy in [Strategy::Priority, Strategy::FreeFirst, Strategy::LocalFirst] {
            let r = RouteRequest { strategy, translate: true, ..req("tag:m") };
            for _ in 0..50 {
                let p = plan(&s, &h, &r, Instant::now()).unwrap();
                assert_eq!(p.candidates.len(), 12 + usize::from(wide));
                let keys: Vec<(bool, i64, bool)> = p
                    .candidates
                    .iter()
                    .map(|c| {
                        let free = strategy == Strategy::FreeFirst && c.model.ends_with(":free");
                        (!free, s.channels[c.channel].priority, !c.native)
                    })
                    .collect();
                assert!(keys.is_sorted(), "{strategy:?} {:?}", names(&s, &p));
                if strategy != Strategy::FreeFirst {
                    for pair in p.candidates.chunks(2).filter(|c| c.len() == 2) {
                        assert_eq!(pair[0].channel, pair[1].channel, "{:?}", names(&s, &p));
                        assert_eq!((&*pair[0].model, &*pair[1].model), ("m-a", "m-b:free"));
                    }
                }
            }
        }
    }
}

#[test]
fn balanced_scores_follow_the_configured_weights() {
    let only_cost = format!("routing:\n  balanced: {{cost: 1, speed: 0, quality: 0, reliability: 0}}\n{PRICED}");
    let s = snap(&only_cost);
    let mut r = req("m");
    r.strategy = Strategy::Balanced;
    let p = plan(&s, &Health::new(), &r, Instant::now()).unwrap();
    assert_eq!(channel_order(&s, &p), ["gratis", "cheap", "pricey", "unknown"]);
    let first = p.candidates[0].score.unwrap();
    assert_eq!(first.total, first.cost);
    assert_eq!(first.cost, 1.0);
    // Speed only: the endpoint that answered fastest wins.
    let only_speed = format!("routing:\n  balanced: {{cost: 0, speed: 1, quality: 0, reliability: 0}}\n{PRICED}");
    let s = snap(&only_speed);
    let h = Health::new();
    h.observe_ttfb("unknown/default", 20.0);
    h.observe_ttfb("pricey/default", 900.0);
    let p = plan(&s, &h, &r, Instant::now()).unwrap();
    assert_eq!(channel_order(&s, &p)[0], "unknown");
}

#[test]
fn model_quality_prefers_bigger_and_higher_tiers() {
    assert!(model_quality("qwen/qwen3-235b-a22b") > model_quality("qwen/qwen3-8b"));
    assert!(model_quality("claude-opus-4-1") > model_quality("claude-haiku-4-5"));
    assert!(model_quality("gpt-4o") > model_quality("gpt-4o-mini"));
    assert_eq!(model_quality("something"), 0.6);
}

#[test]
fn tag_index_agrees_with_a_full_scan() {
    let s = snap(TWO);
    for q in ["tag:qwen", "tag:free", "tag:local,!free", "tag:!free", "tag:gpt,4o", "tag:nope", "tag:qwen3,qwen,30b"] {
        let e = TagExpr::parse(q).unwrap();
        let via_index: Vec<(usize, String)> =
            tag_matches(&s, &e, ModelKind::Chat).iter().map(|m| (m.channel, m.model.to_string())).collect();
        let mut scan = Vec::new();
        for (i, ch) in s.channels.iter().enumerate() {
            for m in ch.models.iter().filter(|m| kind_ok(ModelKind::Chat, m.kind)) {
                if e.matches(model_tags(ch, &m.id).into_iter()) {
                    scan.push((i, m.id.to_string()));
                }
            }
        }
        if q == "tag:qwen" {
            assert_eq!(via_index.len(), 1, "{via_index:?}");
        }
        assert_eq!(via_index, scan, "{q}");
    }
}

#[test]
fn sparse_and_dense_tag_lists_give_the_same_answers_as_a_scan() {
    // 300 models: `common` tags are dense (bitsets), `rareN` ones sparse (lists); one channel has no models.
    let mut yaml = String::from("channels:\n  - name: empty\n    base_url: http://127.0.0.1:9/v1\n    models: []\n");
    for c in 0..30 {
        let ids: Vec<String> = (0..10)
            .map(|m| {
                let n = c * 10 + m;
                let free = if n % 3 == 0 { ":free" } else { "" };
                format!("vendor{}/common-fam{}-rare{}{free}", c % 4, n % 7, n % 150)
            })
            .collect();
        yaml.push_str(&format!(
            "  - name: c{c}\n    base_url: http://127.0.0.1:{}/v1\n    models: [{}]\n",
            1000 + c,
            ids.join(", ")
        ));
    }
    let s = snap(&yaml);
    assert!(s.by_tag["common"].bits.is_some());
    assert!(s.by_tag["rare7"].bits.is_none());
    for g in 0..s.model_count {
        assert_eq!(s.global(s.from_global(g)), g);
    }
    for q in [
        "tag:common",
        "tag:common,free",
        "tag:common,!free",
        "tag:rare7",
        "tag:rare7,!free",
        "tag:free,rare9",
        "tag:fam3,vendor1,!free",
        "tag:!free,!vendor0",
        "tag:common,!rare7",
    ] {
        let e = TagExpr::parse(q).unwrap();
        let via_index: Vec<(usize, String)> =
            tag_matches(&s, &e, ModelKind::Chat).iter().map(|m| (m.channel, m.model.to_string())).collect();
        let mut scan = Vec::new();
        for (i, ch) in s.channels.iter().enumerate() {
            for m in &ch.models {
                if e.matches(model_tags(ch, &m.id).into_iter()) {
                    scan.push((i, m.id.to_string()));
                }
            }
        }
        assert!(!scan.is_empty(), "{q}");
        assert_eq!(via_index, scan, "{q}");
    }
}

#[test]
fn the_plan_view_names_candidates_and_says_why_matches_are_excluded() {
    use super::view::{PlanQuery, PlanView, plan_query};
    let s = snap(TWO);
    let health = Health::new();
    let mut q = PlanQuery {
        expr: "gpt-4o".into(),
        strategy: None,
        protocol: Protocol::Openai,
        embedding: false,
        key: None,
        pin: None,
        input_tokens: 100,
        max_tokens: 100,
    };
    let p = plan_query(&s, &health, &q).unwrap();
    let v = PlanView::new(&s, &health, &q.expr, &p);
    let rows: Vec<(usize, &str, &str)> =
        v.candidates.iter().map(|c| (c.rank, c.channel.as_str(), c.token.as_str())).collect();
    assert_eq!(rows[0], (1, "main", s.channels[1].endpoints[0].tokens[0].token_key.as_ref()));
    assert_eq!(v.resolved_by, "exact");
    // Native candidates do not mention translation at all; the rows are what the socket carries back.
    let json = serde_json::to_value(&v).unwrap();
    assert!(json["candidates"][0].get("translated").is_none(), "{json}");
    assert_eq!(serde_json::from_value::<PlanView>(json).unwrap(), v);
    // A candidate of the other protocol, when the request can be translated, says so.
    let translated = RouteRequest { client: Protocol::Anthropic, translate: true, ..req("gpt-4o") };
    let p = plan(&s, &health, &translated, Instant::now()).unwrap();
    let json = serde_json::to_value(PlanView::new(&s, &health, "gpt-4o", &p)).unwrap();
    assert_eq!(json["candidates"][0]["translated"], true, "{json}");

    // Every match excluded for the other protocol: the user's words, and the typed reason chose the error.
    q.expr = "claude-sonnet-4-5".into();
    let f = plan_query(&s, &health, &q).unwrap_err();
    assert!(f.message.contains("served only by anthropic channels"), "{f:?}");
    assert_eq!(f.hint.as_deref(), Some("to plan for a client of that protocol: --protocol anthropic"));
}

#[test]
fn exclusion_reasons_read_as_before() {
    let cases = [
        (Exclusion::WrongKind(ModelKind::Embedding), "embedding model, not usable here"),
        (Exclusion::NotAllowed, "not allowed for this key"),
        (Exclusion::Speaks(Protocol::Anthropic), "speaks anthropic"),
        (Exclusion::ModelMissing, "model not found here recently"),
        (Exclusion::ContextTooLong { need: 9000, window: 8192 }, "context too long (~9000 tokens, window 8192)"),
        (Exclusion::FailoverDisabled, "failover disabled (pin to use)"),
        (Exclusion::EndpointCooling("rate limited".into()), "endpoint cooling down (rate limited)"),
        (Exclusion::TokenCooling("auth".into()), "token cooling down (auth)"),
    ];
    for (e, words) in cases {
        assert_eq!(e.to_string(), words);
    }
}
