//! The one test harness: mock upstreams ([`Mock`], and [`Upstream`] that bills per key), canned upstream bodies,
//! the real `router` binary as a server ([`Router`]) and as a command ([`Cli`]), a headless Chromium ([`Browser`]),
//! PostgreSQL databases of their own and a relay that can cut them off ([`TempDb`], [`Relay`]), and bounded polling.
//! Each area module of the integration binary uses it through `use crate::harness::*`.

mod billing;
mod bodies;
mod browser;
mod cli;
mod mock;
mod pg;
mod router;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use billing::Upstream;
pub use bodies::{chat_json, chat_sse, claude_reply, messages_json, messages_sse};
pub use browser::Browser;
pub use cli::{Cli, Out, run_cli};
pub use mock::{Mock, Recorded, Reply, dead_port};
pub use pg::{Relay, TempDb, pg};
pub use router::Router;

/// The `router` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_router")
}

/// A file under tests/fixtures/, as a string for command lines.
pub fn fixture(relative: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative).display().to_string()
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The rest of a streaming response, as text.
pub async fn rest_of(resp: &mut reqwest::Response) -> String {
    let mut rest = String::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    rest
}

/// The Python with the official SDKs (openai, anthropic, google-genai): `ROUTER_TEST_PYTHON`, else the .venv
/// that scripts/test.sh creates.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ROUTER_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the SDK tests need Python with the openai, anthropic and google-genai packages: run scripts/test.sh (it \
         creates .venv), or set ROUTER_TEST_PYTHON"
    );
    venv
}
