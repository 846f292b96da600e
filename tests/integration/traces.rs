//! OpenTelemetry traces end to end: the real server exports over OTLP/HTTP (protobuf) to a collector in the test,
//! one span per request with a child per upstream attempt, GenAI attributes, and no prompt or key; a dead
//! collector slows nothing.

use std::time::{Duration, Instant};

use crate::harness::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

const UPSTREAM_KEY: &str = "sk-upstream-traces-test-0001";
const GATEWAY: &str = "sk-gw-traces-test";
const PROMPT: &str = "a secret prompt about pelicans";

fn config(down_url: &str, ok_url: &str, collector: &str) -> String {
    format!(
        "server:\n  keys:\n    - {{name: team, key: {GATEWAY}}}\ntelemetry:\n  otlp_endpoint: {collector}\n  \
         service_name: router-test\nchannels:\n  - name: down\n    base_url: {down_url}\n    \
         keys: [{UPSTREAM_KEY}]\n    models: [gpt-4o]\n    priority: 0\n  - name: up\n    base_url: {ok_url}\n    \
         keys: [{UPSTREAM_KEY}]\n    models: [gpt-4o]\n    priority: 1\n    pricing:\n      gpt-4o: {{input: 2, output: 8}}\n"
    )
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v.clone(),
        other => panic!("{key}: {other:?} in {}", s.name),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => *v,
        other => panic!("{key}: {other:?} in {}", s.name),
    }
}

async fn chat(router: &Router) -> u16 {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]});
    let r = client().post(router.url("/v1/chat/completions")).bearer_auth(GATEWAY).json(&body).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_request_with_a_child_per_attempt_and_no_secrets() {
    let collector =
        Mock::start(|_, _| Reply::Raw(200, vec![("content-type", "application/x-protobuf".into())], String::new()))
            .await;
    // The first channel fails once (then cools), the second answers: the first request has two attempts.
    let down = Mock::start(|_, _| Reply::Json(500, json!({"error": {"message": "boom"}}))).await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 11, 4))).await;
    let router = Router::start(&config(&down.openai_url(), &up.openai_url(), &collector.root_url()));
    assert_eq!(chat(&router).await, 200);
    assert_eq!(chat(&router).await, 200);

    // The batch processor exports within its delay (5 s by default).
    let spans = || -> Vec<Span> {
        collector
            .all()
            .iter()
            .filter(|r| r.uri == "/v1/traces")
            .flat_map(|r| ExportTraceServiceRequest::decode(r.body.clone()).unwrap().resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    };
    assert!(eventually(Duration::from_secs(20), || spans().len() >= 5).await, "spans: {:?}", spans().len());
    let all = spans();
    assert_eq!(all.len(), 5, "two requests, three attempts");
    let roots: Vec<&Span> = all.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 2);
    let mut requests: Vec<String> = Vec::new();
    for root in &roots {
        assert_eq!(root.name, "chat gpt-4o");
        assert_eq!(root.kind, 2, "server");
        assert_eq!(text(root, "gen_ai.system"), "openai");
        assert_eq!(text(root, "gen_ai.request.model"), "gpt-4o");
        assert_eq!(text(root, "gen_ai.response.model"), "gpt-4o");
        assert_eq!(int(root, "gen_ai.usage.input_tokens"), 11);
        assert_eq!(int(root, "gen_ai.usage.output_tokens"), 4);
        assert_eq!(text(root, "router.channel"), "up");
        assert!(root.end_time_unix_nano >= root.start_time_unix_nano);
        requests.push(text(root, "router.request_id"));
        let children: Vec<&Span> = all.iter().filter(|s| s.parent_span_id == root.span_id).collect();
        assert!(children.iter().all(|c| c.trace_id == root.trace_id && c.kind == 3));
        let outcomes: Vec<String> = children.iter().map(|c| text(c, "router.outcome")).collect();
        assert!(outcomes == ["ok"] || outcomes.len() == 2, "{outcomes:?}");
        for c in &children {
            assert!(
                c.start_time_unix_nano >= root.start_time_unix_nano && c.end_time_unix_nano <= root.end_time_unix_nano
            );
        }
    }
    assert_eq!(all.iter().filter(|s| !s.parent_span_id.is_empty()).count(), 3);
    // The same requests as recorded, and nothing secret on the wire.
    let recorded: Vec<String> = router.records().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    requests.sort();
    let mut want = recorded.clone();
    want.sort();
    assert_eq!(requests, want);
    for r in collector.all() {
        for secret in [UPSTREAM_KEY, GATEWAY, PROMPT, "pelicans"] {
            assert!(!r.body.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} exported");
        }
        assert!(r.body.windows(11).any(|w| w == b"router-test"), "service.name");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_slows_no_request() {
    let collector = Mock::start(|_, _| Reply::Hang).await;
    let up = Mock::start(|_, _| Reply::Json(200, chat_json("gpt-4o", "ok", 11, 4))).await;
    let router = Router::start(&config(&up.openai_url(), &up.openai_url(), &collector.root_url()));
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(chat(&router).await, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "50 requests took {:?}", t.elapsed());
    // Dead or absent, a collector never fails the server.
    let router2 =
        Router::start(&config(&up.openai_url(), &up.openai_url(), &format!("http://127.0.0.1:{}", dead_port())));
    assert_eq!(chat(&router2).await, 200);
}

#[test]
fn a_bad_collector_url_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("router.yaml");
    write(&cfg, "telemetry:\n  otlp_endpoint: localhost:4318\n");
    let out = Cli::new().config(&cfg).args(["config", "check"]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("telemetry.otlp_endpoint"), "{}", out.stderr);
}
