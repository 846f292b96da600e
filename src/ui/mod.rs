//! The web dashboard at `/ui/` on the proxy listener: the page's assets, the login that turns an admin key into
//! a session cookie, and the sessions themselves.
//!
//! Owns the door a browser uses: assets compiled into the binary (served with their content type, a content
//! ETag and a strict Content-Security-Policy: no inline script, no remote origin), the in-memory session table
//! (a random session id, kept only as its SHA-256, -> the admin key's name and an expiry) and the cookie
//! (`HttpOnly; SameSite=Strict; Path=/`, expiring; the key is never in a URL). `admin::Door` holds the table and
//! routes `/ui` here (the proxy knows neither). The page reads and changes
//! everything through the admin API (`crate::admin`), which accepts a live session as it accepts an admin key
//! ([`session_admin`]). Wrong admin keys, on the login form and the admin API, are slowed down per client address
//! ([`throttle`]). Must not render data into HTML on the server (the page renders every server string as
//! text), log a key or a session id, or touch the store.

pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use subtle::ConstantTimeEq;

use crate::config::{Config, hash_key};
use crate::proxy::{AppState, ProxyBody};

/// The session cookie's name.
pub const COOKIE: &str = "router_ui";
/// How long a session lives after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest goes first.
const MAX_SESSIONS: usize = 256;
/// Largest login form read.
pub(crate) const MAX_FORM: usize = 8 * 1024;

/// The policy every page and asset is served with: only this origin's scripts, styles and API; nothing inline.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A compiled-in file: path under `/ui/`, content type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("assets/app.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("assets/app.css") },
    Asset { path: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("assets/icon.svg") },
];
const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
/// Where the login page shows why the last attempt failed (a fixed server message, never input).
const LOGIN_MESSAGE: &str = "<!--message-->";

/// Whether `/ui/` is served: `server.ui`, by default on when the server listens on loopback.
pub fn enabled(config: &Config) -> bool {
    config.raw.server.ui.unwrap_or_else(|| config.listen.is_none_or(|l| l.ip().is_loopback()))
}

/// Logged-in browsers: SHA-256 of the session id -> admin key name and expiry; and the wrong-key throttle the
/// login form and the admin API share.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<[u8; 32], Session>>,
    throttle: throttle::Throttle,
}

struct Session {
    admin: String,
    expires: Instant,
}

impl Sessions {
    /// A new session for the admin key `admin`; answers its id (the cookie's value).
    pub fn create(&self, admin: &str, now: Instant) -> String {
        let mut raw = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut raw);
        let id = hex::encode(raw);
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(hash_key(&id), Session { admin: admin.to_string(), expires: now + SESSION_TTL });
        id
    }

    /// The admin key name of a live session.
    pub fn admin_of(&self, id: &str, now: Instant) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash_key(id)).filter(|s| s.expires > now).map(|s| s.admin.clone())
    }

    /// Ends a session (logout).
    pub fn remove(&self, id: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(&hash_key(id));
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wrong admin keys per client address.
    pub fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }
}

/// The session id a request's `Cookie` header carries.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A request that changes something must come from this origin: a browser says where it comes from
/// (`Sec-Fetch-Site`, else `Origin` naming the host it was sent to). SameSite=Strict already keeps the cookie off
/// other sites' requests; this also refuses a login or logout form posted from elsewhere.
fn same_origin(headers: &HeaderMap, method: &Method) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return true;
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let bare = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    !host.is_empty() && bare == Some(host)
}

/// The admin key name behind a request's session cookie, when the dashboard is on, the session is live, its
/// admin key is still configured and a change comes from this origin. The admin API's door calls this.
pub fn session_admin(state: &AppState, sessions: &Sessions, headers: &HeaderMap, method: &Method) -> Option<String> {
    let id = cookie(headers)?;
    let snap = state.snapshot.load();
    if !enabled(&snap.config) || !same_origin(headers, method) {
        return None;
    }
    let name = sessions.admin_of(id, Instant::now())?;
    snap.config.admin_keys.iter().any(|k| k.name == name).then_some(name)
}

/// Answers one request under `/ui`.
pub async fn handle(
    state: &AppState,
    sessions: &Sessions,
    req: Request<crate::proxy::RequestBody>,
    peer: IpAddr,
) -> Response<ProxyBody> {
    if !enabled(&state.snapshot.load().config) {
        return text(StatusCode::NOT_FOUND, "the dashboard is off (server.ui: false)");
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let Some(sub) = path.strip_prefix("/ui/") else {
        return redirect(StatusCode::PERMANENT_REDIRECT, "/ui/");
    };
    match (&method, sub) {
        (&Method::GET | &Method::HEAD, "") => {
            if session_admin(state, sessions, req.headers(), &method).is_some() {
                page(StatusCode::OK, INDEX.to_string())
            } else {
                page(StatusCode::OK, LOGIN.replace(LOGIN_MESSAGE, ""))
            }
        }
        (&Method::POST, "login") => login(state, sessions, req, peer).await,
        (&Method::POST, "logout") => {
            if !same_origin(req.headers(), &method) {
                return text(StatusCode::FORBIDDEN, "logout must come from the dashboard's own page");
            }
            if let Some(id) = cookie(req.headers()) {
                sessions.remove(id);
            }
            let mut resp = redirect(StatusCode::SEE_OTHER, "/ui/");
            let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
            resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&gone).expect("ascii"));
            resp
        }
        (&Method::GET | &Method::HEAD, name) => match ASSETS.iter().find(|a| a.path == name) {
            Some(a) => asset(a, req.headers()),
            None => text(StatusCode::NOT_FOUND, "no such page"),
        },
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// `POST /ui/login` with a form field `key`: an admin key starts a session. An address that sent too many wrong
/// keys waits first ([`throttle`]).
async fn login(
    state: &AppState,
    sessions: &Sessions,
    req: Request<crate::proxy::RequestBody>,
    peer: IpAddr,
) -> Response<ProxyBody> {
    if !same_origin(req.headers(), req.method()) {
        return text(StatusCode::FORBIDDEN, "log in from the dashboard's own page");
    }
    let throttle = sessions.throttle();
    if let Err(wait) = throttle.check(peer, Instant::now()) {
        return too_many(wait);
    }
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM).collect().await.map(|b| b.to_bytes()) else {
        return login_page(StatusCode::BAD_REQUEST, "The form could not be read.");
    };
    let key = url::form_urlencoded::parse(&body).find(|(k, _)| k == "key").map(|(_, v)| v.trim().to_string());
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return login_page(StatusCode::BAD_REQUEST, "Enter an admin key.");
    };
    let snap = state.snapshot.load();
    let admins = &snap.config.admin_keys;
    if admins.is_empty() {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "No admin keys are configured: add server.admin_keys to the configuration (hash one with `router keys hash`).",
        );
    }
    let hash = hash_key(&key);
    // Every key is compared, each in constant time, so timing tells nothing about which matched.
    let mut found: Option<&str> = None;
    for k in admins {
        if bool::from(k.hash.ct_eq(&hash)) {
            found = found.or(Some(&k.name));
        }
    }
    let Some(name) = found else {
        tracing::info!("dashboard: a login with an unknown admin key from {peer} was refused");
        if let Some(wait) = throttle.wrong(peer, Instant::now()) {
            tracing::warn!("dashboard: too many wrong admin keys from {peer}; it waits {} s", wait.as_secs());
        }
        return login_page(StatusCode::UNAUTHORIZED, "That is not an admin key (a key of server.admin_keys).");
    };
    throttle.right(peer);
    let id = sessions.create(name, Instant::now());
    tracing::info!("dashboard: admin key `{name}` logged in");
    let mut resp = redirect(StatusCode::SEE_OTHER, "/ui/");
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs());
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex"));
    resp
}

/// The login form again, refused for now: 429 with `Retry-After`.
fn too_many(wait: Duration) -> Response<ProxyBody> {
    let secs = throttle::retry_after_secs(wait);
    let mut resp = login_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many wrong admin keys from this address: wait a little, then try again.",
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn login_page(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    // The message is one of this file's constants: HTML-safe by construction, never input.
    debug_assert!(!message.contains(['<', '>', '&', '"']));
    page(status, LOGIN.replace(LOGIN_MESSAGE, &format!("<p class=\"error\" role=\"alert\">{message}</p>")))
}

/// Headers every dashboard answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(crate::proxy::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    resp
}

fn page(status: StatusCode, html: String) -> Response<ProxyBody> {
    let mut resp = respond(status, "text/html; charset=utf-8", Bytes::from(html));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn text(status: StatusCode, msg: &'static str) -> Response<ProxyBody> {
    let mut resp = respond(status, "text/plain; charset=utf-8", Bytes::from_static(msg.as_bytes()));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect(status: StatusCode, to: &'static str) -> Response<ProxyBody> {
    let mut resp = respond(status, "text/plain; charset=utf-8", Bytes::new());
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An asset, revalidated by its content ETag (a new binary never serves a stale page).
fn asset(a: &Asset, headers: &HeaderMap) -> Response<ProxyBody> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        use sha2::Digest;
        ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(sha2::Sha256::digest(a.body))[..20])).collect()
    });
    let i = ASSETS.iter().position(|x| x.path == a.path).expect("an asset of the table");
    let etag = &etags[i];
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    let mut resp = if fresh {
        respond(StatusCode::NOT_MODIFIED, a.content_type, Bytes::new())
    } else {
        respond(StatusCode::OK, a.content_type, Bytes::from_static(a.body))
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_they_expire_or_log_out() {
        let s = Sessions::default();
        let now = Instant::now();
        let id = s.create("ops", now);
        assert_eq!(id.len(), 64);
        assert_eq!(s.admin_of(&id, now).as_deref(), Some("ops"));
        assert_eq!(s.admin_of("nope", now), None);
        assert_eq!(s.admin_of(&id, now + SESSION_TTL), None, "expired");
        let other = s.create("ops", now);
        assert_ne!(id, other, "random ids");
        s.remove(&id);
        assert_eq!(s.admin_of(&id, now), None);
        assert_eq!(s.admin_of(&other, now).as_deref(), Some("ops"));
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let now = Instant::now();
        let first = s.create("ops", now);
        for i in 0..MAX_SESSIONS {
            s.create("ops", now + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.admin_of(&first, now), None, "the oldest went first");
    }

    #[test]
    fn cookie_and_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; router_ui=abc ; b=2"));
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        assert!(same_origin(&h, &Method::POST), "no Origin: not a cross-site browser request");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:4000"));
        assert!(same_origin(&h, &Method::POST));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h, &Method::POST));
        assert!(same_origin(&h, &Method::GET), "reading changes nothing");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:4000"));
        assert!(!same_origin(&h, &Method::POST), "the browser's word wins");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, &Method::POST));
    }

    #[test]
    fn pages_load_nothing_inline_or_remote() {
        for html in [INDEX, LOGIN] {
            assert!(!html.contains("<script>"), "no inline script");
            assert!(!html.contains("style="), "no inline style");
            let handler = html.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "no inline event handlers");
            assert!(!html.contains("http://") && !html.contains("https://"), "no remote origin");
        }
        assert!(LOGIN.contains(LOGIN_MESSAGE));
        let js = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("eval("));
    }
}
