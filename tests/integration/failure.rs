//! One upstream answer means the same everywhere: the proxy's failover (what it records and whether it tries the
//! next candidate), `router test` and `balance check --validate` all read it through `upstream::failure`. The
//! answers are the ones the copies used to disagree on (a 400 saying the credit is gone, a 403 speaking of
//! permission, a 408, a 400 saying the model does not exist).

use serde_json::{Value, json};

use crate::harness::*;

/// Every key contains this, so a leak anywhere in the output is easy to find.
const MARK: &str = "SECRETKEYBYTES";

fn key(name: &str) -> String {
    format!("sk-{MARK}-{name}-0123456789")
}

/// (channel and key name, status, body, proxy attempt outcome, `router test` result, key validity).
const CASES: &[(&str, u16, &str, &str, &str, &str)] = &[
    (
        "credit",
        400,
        r#"{"error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the API."}}"#,
        "quota",
        "quota",
        "no_quota",
    ),
    (
        "perm",
        403,
        r#"{"error":{"type":"permission_error","message":"no permission for this key"}}"#,
        "auth",
        "auth",
        "invalid",
    ),
    (
        "busy",
        408,
        r#"{"error":{"message":"request timeout, try again"}}"#,
        "rate_limited",
        "rate_limited",
        "rate_limited",
    ),
    (
        "gone",
        400,
        r#"{"error":{"code":"model_not_found","message":"The model `m` does not exist"}}"#,
        "not_found",
        "not_found",
        "unknown",
    ),
];

/// Answers by key: a failing key gets its case's answer on every path; `good` gets a model list and a chat reply.
async fn upstream() -> Mock {
    Mock::start(|r, _| {
        let auth = r.header("authorization").unwrap_or_default();
        for (name, status, body, ..) in CASES {
            if auth.contains(&format!("-{name}-")) {
                // The key is echoed back, as some resellers do; it must not reach any output.
                let mut v: Value = serde_json::from_str(body).unwrap();
                v["error"]["param"] = json!(auth);
                return Reply::Json(*status, v);
            }
        }
        if r.uri.ends_with("/models") {
            return Reply::Json(200, json!({"object": "list", "data": [{"id": "m", "object": "model"}]}));
        }
        Reply::Json(200, chat_json("m", "OK", 5, 1))
    })
    .await
}

fn config(up: &Mock) -> String {
    let mut yaml = String::from("channels:\n");
    for (i, (name, ..)) in CASES.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {name}\n    base_url: {}\n    priority: {i}\n    keys: [\"{}\"]\n    models: [m]\n",
            up.openai_url(),
            key(name)
        ));
    }
    yaml.push_str(&format!(
        "  - name: good\n    base_url: {}\n    priority: 9\n    keys: [\"{}\"]\n    models: [m]\n",
        up.openai_url(),
        key("good")
    ));
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_answer_means_the_same_to_the_proxy_router_test_and_balance() {
    let up = upstream().await;
    let cfg = config(&up);

    // The proxy: every failing channel is tried in priority order, each classified, and `good` answers.
    let router = Router::start(&cfg);
    let resp = client()
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(eventually(std::time::Duration::from_secs(10), || !router.records().is_empty()).await);
    let rec = router.records().remove(0);
    let attempts = rec["attempts"].as_array().unwrap();
    let seen: Vec<(&str, &str)> =
        attempts.iter().map(|a| (a["channel"].as_str().unwrap(), a["outcome"].as_str().unwrap())).collect();
    let mut want: Vec<(&str, &str)> = CASES.iter().map(|c| (c.0, c.3)).collect();
    want.push(("good", "ok"));
    assert_eq!(seen, want, "{rec}");
    assert!(!rec.to_string().contains(MARK), "a key leaked into the record: {rec}");
    drop(router);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.yaml");
    write(&path, &cfg);
    let store = dir.path().join("router.redb");
    let cli = || Cli::new().config(&path).arg("--store").arg(&store).hiding(&[MARK]);

    // `router test`: the same classes, in words.
    let out = cli().args(["test", "--json"]).run_async().await;
    assert_eq!(out.code, 1, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let checks = v["checks"].as_array().unwrap_or_else(|| panic!("{v}"));
    for (name, _, _, _, result, _) in CASES {
        let c = checks.iter().find(|c| c["channel"] == *name).unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!(c["result"], *result, "{c}");
    }

    // `balance check --validate`: the same answer as key validity.
    let v = cli().args(["balance", "check", "--validate", "--json"]).run_async().await.json();
    let rows = v.as_array().cloned().or_else(|| v["results"].as_array().cloned()).unwrap_or_else(|| panic!("{v}"));
    for (name, _, _, _, _, validity) in CASES {
        let r = rows.iter().find(|r| r["channel"] == *name).unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!(r["key"]["state"], *validity, "{r}");
    }
}
