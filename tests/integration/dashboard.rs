//! The web dashboard end to end: the real server's `/ui/` over plain HTTP (login, cookie, CSP, assets, sessions
//! as the admin API's door) and in a real headless Chromium (log in, overview equal to `router usage --json`, a
//! request's attempts, the live tail, disabling a channel changes routing, a revoked key is refused, an
//! upstream's hostile model id stays text). Screenshots of every page at two widths go to
//! `target/tmp/dashboard-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;
use serde_json::{Value, json};

const ADMIN: &str = "sk-admin-dashboard";
const GATEWAY: &str = "sk-gw-dashboard";
const UPSTREAM: &str = "sk-upstream-dashboard-0001";
const XSS: &str = "<img src=x onerror=alert(1)>";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An upstream listing `gpt-4o` and a model id that is HTML, answering chats for whatever model is asked.
async fn upstream() -> Mock {
    Mock::start(|r, _| {
        if r.uri.contains("/models") {
            Reply::Json(200, json!({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}, {"id": XSS, "object": "model"}]}))
        } else {
            let model = r.json()["model"].as_str().unwrap_or("gpt-4o").to_string();
            Reply::Json(200, chat_json(&model, "ok", 11, 5))
        }
    })
    .await
}

fn config(url: &str, extra: &str) -> String {
    format!(
        "server:\n  keys:\n    - {{name: team, key: {GATEWAY}}}\n  admin_keys:\n    - {{name: ops, key: {ADMIN}}}\n{extra}\
         channels:\n  - name: main\n    base_url: {url}\n    keys: [{UPSTREAM}]\n    priority: 5\n    models: [gpt-4o]\n    \
         pricing:\n      gpt-4o: {{input: 2, output: 8}}\n  - name: disco\n    base_url: {url}\n    priority: 9\n    \
         keys: [sk-upstream-disco]\n"
    )
}

async fn chat(router: &Router, key: &str, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = client().post(router.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    r.status().as_u16()
}

/// The newest request record, through the admin API.
async fn latest(router: &Router) -> Value {
    let r = client().get(router.url("/admin/v1/requests?limit=1")).bearer_auth(ADMIN).send().await.unwrap();
    r.json::<Value>().await.unwrap()["requests"][0].clone()
}

/// Sends a chat and answers its record once written (records are written in batches, after the response).
async fn chat_recorded(router: &Router, key: &str, model: &str) -> Value {
    let before = latest(router).await["id"].clone();
    assert_eq!(chat(router, key, model).await, 200);
    for _ in 0..500 {
        let now = latest(router).await;
        if !now.is_null() && now["id"] != before {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no record of the request");
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_data_are_only_for_admin_sessions() {
    let up = upstream().await;
    let router = Router::start(&config(&up.openai_url(), ""));
    let http = no_redirects();
    let origin = format!("http://{}", router.addr);

    let r = http.get(router.url("/ui")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "location")), (308, "/ui/".into()));
    // Without a session: the login form, under the strict policy, never cached.
    let r = http.get(router.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-security-policy"), CSP);
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(header(&r, "content-type").starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("name=\"key\"") && !page.contains("page-overview"), "{page}");
    // Assets: their types, revalidated by ETag.
    for (path, ty) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let r = http.get(router.url(&format!("/ui/{path}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").starts_with(ty), "{path}");
        let etag = header(&r, "etag");
        let again = http.get(router.url(&format!("/ui/{path}"))).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    assert_eq!(http.get(router.url("/ui/nope")).send().await.unwrap().status(), 404);
    // The data is not there without a session.
    assert_eq!(http.get(router.url("/admin/v1/usage")).send().await.unwrap().status(), 401);

    // Login: a gateway key or a wrong key is refused; a form from another origin is refused.
    for key in [GATEWAY, "sk-wrong", ""] {
        let r = http.post(router.url("/ui/login")).form(&[("key", key)]).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 400 | 401), "{key}");
        assert!(header(&r, "set-cookie").is_empty());
        assert!(r.text().await.unwrap().contains("class=\"error\""));
    }
    let r = http.post(router.url("/ui/login")).header("origin", "http://evil.example").form(&[("key", ADMIN)]);
    assert_eq!(r.send().await.unwrap().status(), 403);
    let r = http.post(router.url("/ui/login")).header("origin", &origin).form(&[("key", ADMIN)]).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "location")), (303, "/ui/".into()));
    let set = header(&r, "set-cookie");
    let (pair, attrs) = set.split_once(';').unwrap();
    let (name, id) = pair.split_once('=').unwrap();
    assert_eq!(name, "router_ui");
    assert!(id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()), "{set}");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(a), "{a} in {set}");
    }
    assert!(!set.contains(ADMIN));
    let cookie = format!("router_ui={id}");

    // With the session: the dashboard, and the admin API answers it.
    let page = http.get(router.url("/ui/")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"page-overview\""));
    let r = http.get(router.url("/admin/v1/usage")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let new_key = json!({"name": "from-ui"});
    let r = http.post(router.url("/admin/v1/keys")).header("cookie", &cookie).header("origin", "http://evil.example");
    assert_eq!(r.json(&new_key).send().await.unwrap().status(), 401, "a change from another origin");
    let r = http.post(router.url("/admin/v1/keys")).header("cookie", &cookie).header("origin", &origin);
    assert_eq!(r.json(&new_key).send().await.unwrap().status(), 201);
    // The Channels page's Test button: `router test main` in the server.
    let r = http.post(router.url("/admin/v1/channels/main/test")).header("cookie", &cookie).header("origin", &origin);
    let test: Value = r.send().await.unwrap().json().await.unwrap();
    assert_eq!((test["ok"].as_bool(), test["summary"].as_str()), (Some(true), Some("1 of 1 checks passed")), "{test}");
    let forged = format!("router_ui={}", "ab".repeat(32));
    assert_eq!(http.get(router.url("/admin/v1/usage")).header("cookie", forged).send().await.unwrap().status(), 401);

    // Logout ends the session for good.
    let r =
        http.post(router.url("/ui/logout")).header("cookie", &cookie).header("origin", &origin).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
    assert_eq!(http.get(router.url("/admin/v1/usage")).header("cookie", &cookie).send().await.unwrap().status(), 401);
    let page = http.get(router.url("/ui/")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("name=\"key\""));
    assert!(!router.stderr().contains(ADMIN) && !router.stderr().contains(id), "no key or session id in the log");

    // `server.ui: false` turns the page off.
    let off = Router::start(&config(&up.openai_url(), "  ui: false\n"));
    assert_eq!(http.get(off.url("/ui/")).send().await.unwrap().status(), 404);
}

/// A client whose connections come from `from` (any 127.x address reaches the router on 127.0.0.1).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_keys_are_slowed_down_per_address() {
    let up = upstream().await;
    let router = Router::start(&config(&up.openai_url(), ""));
    let (one, two) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    let login = |c: &reqwest::Client, key: &str| c.post(router.url("/ui/login")).form(&[("key", key)]).send();
    let api = |c: &reqwest::Client, key: &str| c.get(router.url("/admin/v1/usage")).bearer_auth(key).send();
    // Five wrong keys are answered as such (the form, then the API); the sixth closes the door for 2 s.
    for i in 0..3 {
        assert_eq!(login(&one, &format!("sk-guess-{i}")).await.unwrap().status(), 401);
    }
    assert_eq!(api(&one, "sk-guess-3").await.unwrap().status(), 401);
    assert_eq!(api(&one, GATEWAY).await.unwrap().status(), 403, "a gateway key is a wrong admin key too");
    let sixth = std::time::Instant::now();
    assert_eq!(login(&one, "sk-guess-5").await.unwrap().status(), 401);
    // Now even the right key waits, on both doors, and is not looked at.
    let r = login(&one, ADMIN).await.unwrap();
    assert!(sixth.elapsed() < Duration::from_secs(2), "the machine is too slow to see the wait");
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "2");
    assert!(header(&r, "set-cookie").is_empty());
    assert!(r.text().await.unwrap().contains("Too many wrong admin keys"));
    let r = api(&one, ADMIN).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(matches!(header(&r, "retry-after").as_str(), "1" | "2"), "{}", header(&r, "retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error", "{e}");
    // Another address is not slowed down.
    assert_eq!(login(&two, ADMIN).await.unwrap().status(), 303);
    assert_eq!(api(&two, ADMIN).await.unwrap().status(), 200);
    // After the wait the right key gets in, and the address starts over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = login(&one, ADMIN).await.unwrap();
        if r.status() == 303 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(std::time::Instant::now() < deadline, "still refused after the wait");
        let wait: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((1..=2).contains(&wait));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sixth.elapsed() >= Duration::from_secs(2), "not let in before the wait ended");
    assert_eq!(login(&one, "sk-guess-6").await.unwrap().status(), 401, "counted from one again");
    assert!(!router.stderr().contains(ADMIN) && !router.stderr().contains("sk-guess"), "no key in the log");
    assert!(router.stderr().contains("too many wrong admin keys from 127.0.0.1"), "{}", router.stderr());
}

fn shots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Screenshots of the current page at desktop and phone width.
async fn shoot(b: &Browser, name: &str) {
    let dir = shots_dir();
    for (w, label) in [(1280, "desktop"), (360, "phone")] {
        b.resize(w, 900).await;
        b.full_screenshot(&dir.join(format!("{name}-{label}.png")), w).await;
    }
    b.resize(1280, 900).await;
}

/// The overview's cards: label -> shown value.
async fn cards(b: &Browser) -> Value {
    b.until("the overview", "return document.querySelectorAll('#ov-cards .stat').length").await;
    b.js(
        "return Object.fromEntries([...document.querySelectorAll('#ov-cards .stat')].map((s) => \
         [s.querySelector('.label').textContent, s.querySelector('.value').textContent]));",
        json!([]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser() {
    let Some(b) = Browser::start(1280, 900).await else { return };
    let up = upstream().await;
    let extra_up = upstream().await;
    let router = Router::start(&config(&up.openai_url(), ""));
    // A store channel the dashboard can disable, preferred for gpt-4o.
    let out = Cli::new()
        .config(&router.config_path())
        .arg("--store")
        .arg(router.store_path())
        .args(["channels", "add", "--name", "extra", "--protocol", "openai", "--base-url", &extra_up.openai_url()])
        .args(["--key", "sk-extra-upstream", "--model", "gpt-4o", "--priority", "0"])
        .run_async()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for _ in 0..3 {
        assert_eq!(chat_recorded(&router, GATEWAY, "gpt-4o").await["channel"], "extra");
    }

    // Not logged in: the login form, and the data refuses the page's own fetches.
    b.goto(&router.url("/ui/")).await;
    b.wait("form.login-card input#key").await;
    assert!(b.find("nav").await.is_none());
    shoot(&b, "login").await;
    b.type_in("#key", "sk-wrong").await;
    b.click("form.login-card button").await;
    b.wait("p.error").await;
    b.type_in("#key", ADMIN).await;
    b.click("form.login-card button").await;
    b.wait("nav a[aria-current=page]").await;
    let url = b.js("return location.href", json!([])).await;
    assert!(!url.as_str().unwrap().contains(ADMIN), "never the key in the URL: {url}");
    let cookies = b.cookies().await;
    let c = cookies.iter().find(|c| c["name"] == "router_ui").unwrap_or_else(|| panic!("{cookies:?}"));
    assert_eq!((c["httpOnly"].as_bool(), c["sameSite"].as_str()), (Some(true), Some("Strict")), "{c}");
    assert!(c["expiry"].as_u64().is_some(), "an expiring cookie: {c}");
    let readable = b.js("return document.cookie", json!([])).await;
    assert!(!readable.as_str().unwrap().contains("router_ui"), "scripts cannot read the session");

    // Overview: the numbers of `router usage --json` over the same range.
    let usage = Cli::new()
        .config(&router.config_path())
        .arg("--store")
        .arg(router.store_path())
        .args(["usage", "--since", "24h", "--json"])
        .run_async()
        .await
        .json();
    let shown = cards(&b).await;
    let t = &usage["totals"];
    assert_eq!(shown["Requests"], json!(t["requests"].to_string()), "{shown} vs {usage}");
    assert_eq!(shown["Input tokens"], json!(t["input"].to_string()));
    assert_eq!(shown["Output tokens"], json!(t["output"].to_string()));
    assert_eq!(shown["Error rate"], json!("0.0%"));
    assert!(b.text("#ov-tops").await.contains("gpt-4o"));
    shoot(&b, "overview").await;

    // Requests: the log, a request's attempts, and the live tail.
    b.goto(&router.url("/ui/#requests")).await;
    b.until("the request rows", "return document.querySelectorAll('#rq-table tbody tr[data-id]').length === 3").await;
    b.click("#rq-table tbody tr[data-id]").await;
    b.until("the attempts", "return document.querySelectorAll('#rd-attempts tbody tr').length").await;
    assert!(b.text("#rd-attempts").await.contains("extra"), "{}", b.text("#rd-body").await);
    assert!(b.text("#rd-body").await.contains("gpt-4o"));
    shoot(&b, "request").await;
    b.goto(&router.url("/ui/#requests")).await;
    b.until("the request rows", "return document.querySelectorAll('#rq-table tbody tr[data-id]').length === 3").await;
    // The live tail subscribes when the page shows; a request finished after that appears without a reload.
    let mut seen = false;
    for _ in 0..50 {
        let id = chat_recorded(&router, GATEWAY, "gpt-4o").await["id"].as_str().unwrap().to_string();
        let script = format!("return !!document.querySelector('#rq-table tbody tr[data-id=\"{id}\"]')");
        if eventually_js(&b, &script).await {
            seen = true;
            break;
        }
    }
    assert!(seen, "the live tail shows new requests");
    shoot(&b, "requests").await;

    // Channels: each endpoint's observed time to first byte, as the admin API has it.
    b.goto(&router.url("/ui/#channels")).await;
    b.wait("article[data-channel=extra] .latency").await;
    let health: Value =
        client().get(router.url("/admin/v1/health")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    let extra = health["latency"].as_array().unwrap().iter().find(|l| l["channel"] == "extra").unwrap().clone();
    let ttfb = extra["ttfb_ms"].as_u64().unwrap_or_else(|| panic!("measured after 4 requests: {health}"));
    assert!(extra["ok"].as_u64().unwrap() >= 4, "{extra}");
    assert_eq!(b.text("article[data-channel=extra] .latency").await, format!("{ttfb} ms"));
    // Disabling `extra` sends gpt-4o to `main`.
    b.click_text("article[data-channel=extra] button", "Disable").await;
    b.wait("article[data-channel=extra] .pill.bad").await;
    assert_eq!(chat_recorded(&router, GATEWAY, "gpt-4o").await["channel"], "main", "routing changed");

    // An upstream's hostile model id is shown as text and runs nothing.
    b.click("#ch-discover").await;
    b.until(
        "the discovered model",
        "return [...document.querySelectorAll('article[data-channel=disco] li')].some((l) => l.textContent === '<img src=x onerror=alert(1)>')",
    )
    .await;
    assert_eq!(chat_recorded(&router, GATEWAY, XSS).await["requested_model"], XSS);
    b.js("document.querySelectorAll('details').forEach((d) => d.open = true)", json!([])).await;
    shoot(&b, "channels").await;
    b.dark(true).await;
    b.full_screenshot(&shots_dir().join("channels-dark-desktop.png"), 1280).await;
    b.dark(false).await;
    b.resize(1280, 900).await;
    b.goto(&router.url("/ui/#requests")).await;
    b.until(
        "the hostile model in the log",
        "return [...document.querySelectorAll('#rq-table td')].some((t) => t.textContent === '<img src=x onerror=alert(1)>')",
    )
    .await;
    b.goto(&router.url("/ui/#overview")).await;
    cards(&b).await;
    b.until(
        "the hostile model in the top models",
        "return document.querySelector('#ov-tops').textContent.includes('<img src=x')",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelectorAll('img[src=x], img[src=\"x\"]').length", json!([])).await,
        json!(0)
    );
    assert_eq!(b.dialog().await, None, "no alert ran");
    b.dark(true).await;
    b.full_screenshot(&shots_dir().join("overview-dark-desktop.png"), 1280).await;
    b.dark(false).await;
    b.resize(1280, 900).await;

    // Keys: create (the secret shown once), use, revoke, refused.
    b.goto(&router.url("/ui/#keys")).await;
    b.wait("#k-list tr[data-key=team]").await;
    b.type_in("#k-create input[name=name]", "bot").await;
    b.type_in("#k-create input[name=budget]", "5").await;
    b.click("#k-create button").await;
    let secret = b.until("the new secret", "return document.querySelector('#k-secret-value').textContent").await;
    let secret = secret.as_str().unwrap().to_string();
    assert_eq!(chat(&router, &secret, "gpt-4o").await, 200);
    b.goto(&router.url("/ui/#overview")).await;
    b.goto(&router.url("/ui/#keys")).await;
    b.wait("#k-list tr[data-key=bot] .meter").await;
    shoot(&b, "keys").await;
    b.click_text("#k-list tr[data-key=bot] button", "Revoke").await;
    assert!(b.dialog().await.unwrap().contains("Revoke bot"));
    b.accept_dialog().await;
    b.until(
        "the revoked state",
        "return document.querySelector('#k-list tr[data-key=bot]').textContent.includes('revoked')",
    )
    .await;
    assert_eq!(chat(&router, &secret, "gpt-4o").await, 401, "a revoked key is refused");

    // Logout: back to the form; the session no longer opens the data.
    b.click(".logout button").await;
    b.wait("form.login-card").await;
    b.goto(&router.url("/admin/v1/usage")).await;
    assert!(b.text("body").await.contains("admin key is required"));
    assert!(!router.stderr().contains(UPSTREAM) && !router.stderr().contains(ADMIN));
}

/// Polls a boolean script for up to 2 s.
async fn eventually_js(b: &Browser, script: &str) -> bool {
    for _ in 0..40 {
        if b.js(script, json!([])).await == json!(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What one overview load costs: the page, its assets, then its two API calls side by side (as the page does).
async fn overview_load(router: &Router, cookie: &str, since: &str, bucket: &str) -> Duration {
    let http = client();
    let get = |path: String| {
        let req = http.get(router.url(&path)).header("cookie", cookie);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.bytes().await.unwrap().len()
        }
    };
    let t = std::time::Instant::now();
    for p in ["/ui/", "/ui/app.js", "/ui/app.css"] {
        get(p.to_string()).await;
    }
    let usage = format!("/admin/v1/usage?since={since}&group_by={bucket},channel,token,model,key");
    let recent = format!("/admin/v1/requests?since={since}&limit=1000");
    let (u, r) = tokio::join!(get(usage), get(recent));
    assert!(u > 0 && r > 0);
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "seeds 1,000,000 records: cargo test --test integration dashboard::load -- --ignored --nocapture"]
async fn load_time_with_a_million_records() {
    use router::usage::{RequestRecord, Tokens, new_id, now_ms};
    const N: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("router.redb");
    let up = upstream().await;
    let cfg = dir.path().join("router.yaml");
    write(&cfg, &config(&up.openai_url(), ""));
    // 30 days of traffic, newest now: 3 channels, 6 upstream tokens, 8 models, 4 gateway keys.
    let path = store.clone();
    let seeded = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        let s = router::store::Store::open(&path).unwrap();
        let now = now_ms();
        let span = 30 * 86_400_000i64;
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..N {
            let t = now - span + (i as i64 * span / N as i64);
            let ch = ["main", "disco", "extra"][i % 3];
            batch.push(RequestRecord {
                id: new_id(t),
                time_ms: t,
                gateway_key: Some(["team", "bot", "ci", "lab"][i % 4].into()),
                client_protocol: router::protocol::Protocol::Openai,
                path: "/v1/chat/completions".into(),
                requested_model: format!("model-{}", i % 8),
                channel: Some(ch.into()),
                endpoint: Some("default".into()),
                token_key: Some(format!("{ch}-{}", i % 2).into()),
                token_fp: Some(format!("fp:{:016x}", (i % 6) as u64 * 0x1111).into()),
                strategy: Some(router::config::Strategy::Priority),
                status: 200,
                ttfb_ms: Some((i % 900) as u32 + 40),
                total_ms: 1200,
                tokens: Tokens { input: 900, cache_read: 3000, cache_write: 200, output: 350, ..Default::default() },
                cost_usd: Some(0.0042),
                ..Default::default()
            });
            if batch.len() == 10_000 {
                s.write_records(&batch).unwrap();
                batch.clear();
            }
        }
        drop(s);
        eprintln!("seeded {N} records in {:.1} s", seeded.elapsed().as_secs_f64());
        // Make it a store of schema 1 (no hourly rollups), as the previous release left it: opening it builds
        // them from the records, once.
        {
            use redb::ReadableDatabase;
            use router::store::tables;
            let d = redb::Database::open(&path).unwrap();
            let t = d.begin_write().unwrap();
            assert!(t.delete_table(tables::USAGE_HOURLY).unwrap());
            let mut meta = t.open_table(tables::META).unwrap();
            meta.remove(tables::META_HOURLY_FROM).unwrap();
            meta.insert(tables::META_SCHEMA_VERSION, 1).unwrap();
            drop(meta);
            t.commit().unwrap();
            let r = d.begin_read().unwrap();
            assert_eq!(
                r.open_table(tables::META).unwrap().get(tables::META_SCHEMA_VERSION).unwrap().unwrap().value(),
                1
            );
        }
        let migrated = std::time::Instant::now();
        let s = router::store::Store::open(&path).unwrap();
        eprintln!(
            "opened it as a schema-1 store (hourly rollups built from 1,000,000 records) in {:.1} s",
            migrated.elapsed().as_secs_f64()
        );
        assert_eq!(s.schema_version().unwrap(), router::store::tables::SCHEMA_VERSION);
        let mut hourly = 0;
        s.scan_hourly(0, u32::MAX, |_, c| hourly += c.requests).unwrap();
        assert_eq!(hourly, N as u64);
    })
    .await
    .unwrap();
    let router = Router::serve(dir.path(), &cfg, &store);
    let r = no_redirects().post(router.url("/ui/login")).form(&[("key", ADMIN)]).send().await.unwrap();
    let cookie = header(&r, "set-cookie").split(';').next().unwrap().to_string();
    let today = utc_day(0);
    let ranges = [("24h", "24h".to_string(), "hour"), ("7d", utc_day(6), "day"), ("30d", utc_day(29), "day")];
    for (label, since, bucket) in &ranges {
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..3 {
            times.push(overview_load(&router, &cookie, since, bucket).await);
        }
        times.sort();
        let http = client();
        let mut usage_alone = Vec::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let path = format!("/admin/v1/usage?since={since}&group_by={bucket},channel,token,model,key");
            let r = http.get(router.url(&path)).header("cookie", &cookie).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["source"], "rollups", "{label}");
            usage_alone.push(t.elapsed());
        }
        usage_alone.sort();
        eprintln!(
            "overview {label}: best {:?}, median {:?}; its usage call alone: median {:?} (today {today})",
            times[0], times[1], usage_alone[1]
        );
        if !cfg!(debug_assertions) {
            assert!(times[1] < Duration::from_millis(300), "{label}: {:?}", times[1]);
        }
    }
}

/// The UTC date `days_back` days ago, `YYYY-MM-DD`.
fn utc_day(days_back: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days_back)).format("%Y-%m-%d").to_string()
}
