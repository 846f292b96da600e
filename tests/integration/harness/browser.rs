//! A real headless Chromium driven over WebDriver (W3C, JSON over HTTP): `chromedriver` on 127.0.0.1 with a port
//! of its own choosing, one fresh profile per browser. A handful of commands, enough for the dashboard's tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// Where Chromium and its driver are, when installed (Debian's `chromium` and `chromium-driver`).
pub fn chromium() -> Option<(String, String)> {
    let find = |names: &[&str]| {
        names.iter().find(|n| Path::new(n).exists()).map(|n| n.to_string()).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|d| names.iter().map(move |n| d.join(n)))
                .find(|p| p.exists())
                .map(|p| p.display().to_string())
        })
    };
    let browser = std::env::var("CHROMIUM").ok().or_else(|| find(&["/usr/bin/chromium", "chromium"]))?;
    let driver = std::env::var("CHROMEDRIVER").ok().or_else(|| find(&["/usr/bin/chromedriver", "chromedriver"]))?;
    Some((browser, driver))
}

impl Browser {
    /// A headless Chromium `width` × `height`, or `None` (with a note) when none is installed; with
    /// `ROUTER_REQUIRE_BROWSER=1` (the test script sets it) a missing browser fails the test instead.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let Some((binary, driver)) = chromium() else {
            assert!(
                std::env::var("ROUTER_REQUIRE_BROWSER").is_err(),
                "no chromium / chromedriver: install Debian's chromium and chromium-driver"
            );
            eprintln!("SKIPPED: no chromium / chromedriver installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let mut child = Command::new(driver)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = child.stdout.take().unwrap();
        let port = tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.ok()?;
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .unwrap()
        .expect("chromedriver says its port");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            _profile: profile,
        };
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let v = b.raw("POST", "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b.base = format!("{}/session/{id}", b.base);
        b.resize(width, height).await;
        Some(b)
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = resp.json().await.unwrap();
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.raw(method, path, body).await;
        if let Some(err) = v.get("error") {
            panic!("webdriver {method} {path}: {err}: {}", v["message"]);
        }
        v
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and answers its return value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// The first element matching `css`, when there is one.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self.raw("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v.get(ELEMENT).and_then(Value::as_str).map(str::to_string)
    }

    /// Waits up to 10 s for `css` to match, then answers the element.
    pub async fn wait(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "no `{css}` on the page: {}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 10 s for `script` (returning a value) to return something truthy; answers it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.js(script, json!([])).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what} did not happen: {}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.wait(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Clicks the first `css` match whose text is `text` (waiting up to 10 s for it).
    pub async fn click_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let script = "return [...document.querySelectorAll(arguments[0])].find((e) => e.textContent.trim() === arguments[1]) || null;";
        loop {
            let v = self.js(script, json!([css, text])).await;
            if let Some(e) = v.get(ELEMENT).and_then(Value::as_str) {
                self.cmd("POST", &format!("/element/{e}/click"), Some(json!({}))).await;
                return;
            }
            assert!(Instant::now() < deadline, "no `{css}` reading `{text}`: {}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        let e = self.wait(css).await;
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({ "text": text }))).await;
    }

    /// The visible text of the first `css` match ("" when none).
    pub async fn text(&self, css: &str) -> String {
        let v =
            self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css])).await;
        v.as_str().unwrap_or("").to_string()
    }

    /// The text of an open `alert` / `confirm`, if one is open.
    pub async fn dialog(&self) -> Option<String> {
        let v = self.raw("GET", "/alert/text", None).await;
        if v.get("error").is_some() { None } else { v.as_str().map(str::to_string) }
    }

    pub async fn accept_dialog(&self) {
        self.cmd("POST", "/alert/accept", Some(json!({}))).await;
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).await.as_array().cloned().unwrap_or_default()
    }

    /// Emulates `prefers-color-scheme: dark` (or light) through the DevTools protocol.
    pub async fn dark(&self, on: bool) {
        let scheme = if on { "dark" } else { "light" };
        let params = json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]});
        self.cmd("POST", "/goog/cdp/execute", Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": params})))
            .await;
    }

    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// A screenshot of the whole page (taller than the window when it scrolls), at the window's width.
    pub async fn full_screenshot(&self, path: &Path, width: u32) {
        let h = self.js("return Math.ceil(document.documentElement.scrollHeight);", json!([])).await;
        let h = h.as_u64().unwrap_or(900).clamp(400, 4000) as u32;
        self.resize(width, h + 90).await;
        self.screenshot(path).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (closes Chromium), then the driver.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new().delete(url).timeout(Duration::from_secs(10)).send().await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
