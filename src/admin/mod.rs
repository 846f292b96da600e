//! The admin API: `/admin/v1/...` on the proxy listener, JSON in and out, for dashboards and scripts.
//!
//! Owns the HTTP door onto the operations the CLI runs: authorisation (an admin key of `server.admin_keys`; a
//! gateway key gets 403, none or an unknown one 401), parameters (bad ones are 400 with a message naming them),
//! and rendering each answer exactly as the matching command's `--json` (the same functions render both). The
//! operations themselves are the store's `Op`s, dispatched through the same [`Registry`] as the control socket,
//! the key operations of `keys::manage` and the channel functions of `channels`, which the CLI calls too; none of them checks who asks. Routes and the OpenAPI description
//! come from one table ([`routes`]). Must not hold a lock across an await, log a key, or run store I/O on the
//! async threads (store work goes to `spawn_blocking`).

pub mod routes;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::config::hash_key;
use crate::control::{self, Live, LiveCell};
use crate::keys::State;
use crate::keys::manage;
use crate::proxy::{AppState, ProxyBody};
use crate::report::{self, Filters, GroupBy};
use crate::store::Registry;
use routes::{Action, Route};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 1024 * 1024;
/// Largest page of `GET /requests`.
const MAX_PAGE: usize = 1000;

/// What the admin API needs beyond the proxy's state: the operations and the live server.
pub struct Admin {
    registry: Registry,
    cell: LiveCell,
}

impl Admin {
    pub fn new(registry: Registry, cell: LiveCell) -> Admin {
        Admin { registry, cell }
    }
}

/// The door of the admin API (`/admin/`) and the dashboard (`/ui`, `/ui/...`) on the proxy's listener
/// (`proxy::Door`). `serve` opens it before the listener accepts; the admin API answers 503 until
/// [`Door::ready`] gives it its operations.
#[derive(Default)]
pub struct Door {
    admin: std::sync::OnceLock<Admin>,
    /// Logged-in dashboard browsers (`/ui/`): session id hash -> admin key name.
    sessions: crate::ui::Sessions,
}

impl Door {
    /// Gives the door its operations once the store is open (later calls change nothing).
    pub fn ready(&self, admin: Admin) {
        let _ = self.admin.set(admin);
    }
}

impl crate::proxy::Door for Door {
    fn claims(&self, path: &str) -> bool {
        path.starts_with("/admin/") || path == "/ui" || path.starts_with("/ui/")
    }

    fn max_body(&self) -> usize {
        MAX_BODY.max(crate::ui::MAX_FORM)
    }

    fn answer(
        self: Arc<Self>,
        state: Arc<AppState>,
        req: Request<crate::proxy::RequestBody>,
        peer: IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>> {
        Box::pin(async move {
            if req.uri().path().starts_with("/admin/") {
                handle(&state, &self, req, peer).await
            } else {
                crate::ui::handle(&state, &self.sessions, req, peer).await
            }
        })
    }
}

/// An answer that is not 200: status, message, hint.
struct Failure(StatusCode, String, Option<String>);

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure(StatusCode::BAD_REQUEST, message.into(), None)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        let c = crate::error::classify(&e);
        if c.code == 1 {
            let msg = format!("{e:#}");
            let status = if msg.starts_with("no ") { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
            Failure(status, msg, c.hint.map(str::to_string))
        } else {
            tracing::warn!("admin API: {e:#}");
            Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"), None)
        }
    }
}

impl From<crate::error::UserError> for Failure {
    fn from(e: crate::error::UserError) -> Failure {
        Failure(StatusCode::BAD_REQUEST, e.message, e.hint)
    }
}

type Answer = Result<Response<ProxyBody>, Failure>;

/// Answers one request under `/admin/`. An address that sent too many wrong keys waits first (429 with
/// `Retry-After`, the key not looked at: `crate::ui::throttle`).
pub async fn handle(
    state: &Arc<AppState>,
    door: &Door,
    req: Request<crate::proxy::RequestBody>,
    peer: IpAddr,
) -> Response<ProxyBody> {
    let wait = door.sessions.throttle().check(peer, std::time::Instant::now()).err();
    let answer = match wait {
        Some(wait) => Err(Failure(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong admin keys from this address".into(),
            Some(format!(
                "wait {} s, then use a key of server.admin_keys",
                crate::ui::throttle::retry_after_secs(wait)
            )),
        )),
        None => answer(state, door, req, peer).await,
    };
    answer.unwrap_or_else(|Failure(status, message, hint)| {
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        let mut err = json!({"message": message, "type": kind});
        if let Some(h) = hint {
            err["hint"] = json!(h);
        }
        let mut resp = json_response(status, &json!({ "error": err }));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = wait {
            let secs = crate::ui::throttle::retry_after_secs(wait);
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(crate::proxy::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn ok(v: &Value) -> Answer {
    Ok(json_response(StatusCode::OK, v))
}

/// Who may ask: an admin key. Checked before anything else, including the path. A wrong key (a gateway key too:
/// its 403 would tell a guesser it found a key) counts against the address.
fn authorise(
    state: &AppState,
    sessions: &crate::ui::Sessions,
    req: &Request<crate::proxy::RequestBody>,
    peer: IpAddr,
) -> Result<(), Failure> {
    let snap = state.snapshot.load();
    let admins = &snap.config.admin_keys;
    let presented = crate::proxy::handler::presented_key(req.headers()).map(str::trim).filter(|k| !k.is_empty());
    let unauthorised = |m: &str, hint: &str| Failure(StatusCode::UNAUTHORIZED, m.into(), Some(hint.into()));
    if admins.is_empty() {
        return Err(unauthorised(
            "the admin API is off: no admin keys are configured",
            "add server.admin_keys to the configuration (hash one with `router keys hash`)",
        ));
    }
    // The dashboard's browsers: a live session of a configured admin key (`crate::ui`).
    if presented.is_none() && crate::ui::session_admin(state, sessions, req.headers(), req.method()).is_some() {
        return Ok(());
    }
    let Some(presented) = presented else {
        return Err(unauthorised(
            "an admin key is required",
            "send `Authorization: Bearer <admin key>` (a key of server.admin_keys)",
        ));
    };
    let hash = hash_key(presented);
    // Compare with every key, in constant time each, so timing tells nothing about which matched.
    let matched = admins.iter().fold(subtle::Choice::from(0), |acc, k| acc | k.hash.ct_eq(&hash));
    let throttle = sessions.throttle();
    if bool::from(matched) {
        throttle.right(peer);
        return Ok(());
    }
    if let Some(wait) = throttle.wrong(peer, std::time::Instant::now()) {
        tracing::warn!("admin API: too many wrong admin keys from {peer}; it waits {} s", wait.as_secs());
    }
    if state.keys.load().authenticate(Some(presented), crate::usage::now_ms()).is_ok_and(|k| k.is_some()) {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            "a gateway key cannot use the admin API".into(),
            Some("use a key of server.admin_keys".into()),
        ));
    }
    Err(unauthorised("unknown admin key", "use a key of server.admin_keys"))
}

async fn answer(state: &Arc<AppState>, door: &Door, req: Request<crate::proxy::RequestBody>, peer: IpAddr) -> Answer {
    authorise(state, &door.sessions, &req, peer)?;
    let Some(admin) = door.admin.get() else {
        return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "the server is starting; try again".into(), None));
    };
    let path = req.uri().path().to_string();
    let Some(sub) = path.strip_prefix("/admin/v1") else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("no admin route {path}; the API is under /admin/v1"), None));
    };
    let (route, arg) = routes::find(req.method().as_str(), sub).map_err(|other_method| {
        if other_method {
            Failure(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {path}", req.method()), None)
        } else {
            Failure(StatusCode::NOT_FOUND, format!("no admin route {path}; see /admin/v1/openapi.json"), None)
        }
    })?;
    let query = Query::parse(req.uri().query(), route)?;
    let body = if route.body.is_some() || req.method() != Method::GET {
        let b = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::bad(format!("cannot read the body: {e}")))?;
        b.to_bytes()
    } else {
        Bytes::new()
    };
    let live = admin
        .cell
        .get()
        .ok_or_else(|| Failure(StatusCode::SERVICE_UNAVAILABLE, "the server is starting; try again".into(), None))?;
    let name = arg.unwrap_or_default();
    let a = Ctx { admin, live, query, body, name };
    a.run(route).await
}

/// The query string, checked against the route's parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>, route: &Route) -> Result<Query, Failure> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, _) in &pairs {
            if !route.query.iter().any(|(n, _)| n == k) {
                let takes: Vec<&str> = route.query.iter().map(|(n, _)| *n).collect();
                let takes = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
                return Err(Failure::bad(format!("unknown parameter `{k}` (this endpoint takes: {takes})")));
            }
        }
        Ok(Query(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_string)
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name) {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(Failure::bad(format!("`{name}={v}`: give true or false"))),
        }
    }

    fn when(&self, name: &str, utc: bool, end: bool) -> Result<Option<i64>, Failure> {
        let now = crate::usage::now_ms();
        self.get(name)
            .map(|v| report::parse_when(v, utc, end, now))
            .transpose()
            .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("`{name}`: {}", e.message), e.hint))
    }

    fn filters(&self) -> Filters {
        Filters {
            channel: self.text("channel"),
            token: self.text("token"),
            model: self.text("model"),
            key: self.text("key"),
            session: self.get("session").filter(|v| !v.is_empty()).map(crate::protocol::session::filter_value),
        }
    }
}

/// One request's context.
struct Ctx<'a> {
    admin: &'a Admin,
    live: &'a Live,
    query: Query,
    body: Bytes,
    /// The `{...}` path segment.
    name: String,
}

impl Ctx<'_> {
    /// Runs a store operation by name through the registry (as the socket does).
    async fn op(&self, name: &str, args: Value) -> anyhow::Result<Value> {
        self.admin.registry.dispatch(&self.live.store, name, args).await
    }

    /// Runs `f` on a blocking thread with the live server.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Live) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let cell = self.admin.cell.clone();
        tokio::task::spawn_blocking(move || f(cell.get().expect("checked by the door"))).await?
    }

    fn json_body<T: DeserializeOwned + Default>(&self, required: bool) -> Result<T, Failure> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            if required {
                return Err(Failure::bad("this endpoint needs a JSON body"));
            }
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|e| Failure::bad(format!("bad JSON body: {e}")))
    }

    async fn run(self, route: &Route) -> Answer {
        match route.action {
            Action::OpenApi => ok(&routes::openapi()),
            Action::Usage => self.usage().await,
            Action::Requests => self.requests().await,
            Action::Request => {
                let utc = self.query.flag("utc", true)?;
                let v = self.op("request_show", json!({"id": self.name})).await?;
                let list: report::RecordList = serde_json::from_value(v).map_err(anyhow::Error::from)?;
                let r = list.records.first().ok_or_else(|| anyhow::anyhow!("no record in the answer"))?;
                ok(&report::record_json(r, utc))
            }
            Action::Channels => ok(&serde_json::to_value(self.channels().await?).map_err(anyhow::Error::from)?),
            Action::Channel => {
                let all = self.channels().await?;
                match all.iter().find(|e| e.channel.name == self.name) {
                    Some(e) => ok(&serde_json::to_value(e).map_err(anyhow::Error::from)?),
                    None => Err(Failure(StatusCode::NOT_FOUND, format!("no channel named `{}`", self.name), None)),
                }
            }
            Action::ChannelEnable => self.toggle_channel(true, None).await,
            Action::ChannelDisable => {
                #[derive(serde::Deserialize, Default)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    reason: Option<String>,
                }
                let b: Body = self.json_body(false)?;
                self.toggle_channel(false, b.reason).await
            }
            Action::ChannelTest => self.test_channel().await,
            Action::Models => ok(&models_json(&self.live.state.snapshot.load())),
            Action::Health => ok(&health_json(&self.live.state)),
            Action::HealthClear => {
                #[derive(serde::Deserialize, Default)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    key: String,
                }
                let b: Body = self.json_body(true)?;
                if !self.live.state.health.clear(&b.key) {
                    return Err(Failure(
                        StatusCode::NOT_FOUND,
                        format!("`{}` is not cooling", b.key),
                        Some("GET /admin/v1/health lists the keys cooling now".into()),
                    ));
                }
                tracing::info!("admin API: cooldown of {} cleared", b.key);
                ok(&json!({"cleared": b.key}))
            }
            Action::Balances => ok(&self.latest_balances().await?),
            Action::BalanceHistory => {
                let since = self.query.when("since", false, false)?.unwrap_or(0);
                ok(&self
                    .op("balance_history", json!({"channel": self.query.text("channel"), "since_ms": since}))
                    .await?)
            }
            Action::BalanceRefresh => {
                control::refresh_balances(self.admin.cell.clone()).await?;
                ok(&self.latest_balances().await?)
            }
            Action::Keys | Action::Key => {
                let name = (route.action == Action::Key).then(|| self.name.clone());
                let rows = self.keys(false, move |ctx| manage::reports(ctx, name.as_deref()).map(|r| json!(r))).await?;
                match route.action {
                    Action::Key => ok(&rows[0]),
                    _ => ok(&rows),
                }
            }
            Action::KeyCreate => {
                #[derive(serde::Deserialize, Default)]
                struct Body {
                    #[serde(default)]
                    name: String,
                    #[serde(flatten)]
                    settings: serde_json::Map<String, Value>,
                }
                let b: Body = self.json_body(true)?;
                if b.name.is_empty() {
                    return Err(Failure::bad("`name` is required"));
                }
                let settings: manage::KeySettings = serde_json::from_value(Value::Object(b.settings))
                    .map_err(|e| Failure::bad(format!("bad JSON body: {e}")))?;
                let v = self
                    .keys(true, move |ctx| {
                        let (_, row, secret) = manage::create_key(ctx, &b.name, &settings)?;
                        manage::with_secret(&row, &secret)
                    })
                    .await?;
                Ok(json_response(StatusCode::CREATED, &v))
            }
            Action::KeyUpdate => {
                let settings: manage::KeySettings = self.json_body(true)?;
                let name = self.name.clone();
                ok(&self.keys(true, move |ctx| Ok(json!(manage::update_key(ctx, &name, &settings)?.1))).await?)
            }
            Action::KeyDisable => self.key_state(State::Disabled).await,
            Action::KeyEnable => self.key_state(State::Active).await,
            Action::KeyRevoke => self.key_state(State::Revoked).await,
            Action::KeyRotate => {
                let name = self.name.clone();
                ok(&self
                    .keys(true, move |ctx| {
                        let (_, row, secret) = manage::rotate_key(ctx, &name)?;
                        manage::with_secret(&row, &secret)
                    })
                    .await?)
            }
            Action::Discover => {
                let models = control::discover_now(self.admin.cell.clone()).await?;
                ok(&json!({"models": models}))
            }
            Action::Events => Ok(event_stream(&self.live.state)),
        }
    }

    async fn usage(&self) -> Answer {
        let q = &self.query;
        let utc = q.flag("utc", true)?;
        let mut group_by: Vec<GroupBy> = Vec::new();
        for g in q.get("group_by").unwrap_or("").split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let by: GroupBy = serde_json::from_value(json!(g)).map_err(|_| {
                Failure::bad(format!(
                    "`group_by`: `{g}` is not one of day, hour, channel, endpoint, token, model, key, session"
                ))
            })?;
            if !group_by.contains(&by) {
                group_by.push(by);
            }
        }
        let query = report::UsageQuery {
            since_ms: q.when("since", utc, false)?,
            until_ms: q.when("until", utc, true)?,
            group_by,
            filters: q.filters(),
            utc,
            top: match q.get("top") {
                None => None,
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(Failure::bad(format!("`top={v}`: give a whole number of at least 1"))),
                },
            },
            sort: match q.get("sort") {
                None => None,
                Some(v) => Some(serde_json::from_value(json!(v.replace('-', "_"))).map_err(|_| {
                    Failure::bad(format!("`sort={v}`: give one of tokens, cache_read, cost, requests"))
                })?),
            },
        };
        let v = self.op("usage_report", serde_json::to_value(query).map_err(anyhow::Error::from)?).await?;
        let r: report::UsageReport = serde_json::from_value(v).map_err(anyhow::Error::from)?;
        ok(&report::usage_json(&r))
    }

    async fn requests(&self) -> Answer {
        let q = &self.query;
        let utc = q.flag("utc", true)?;
        let limit = match q.get("limit") {
            None => 20,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(Failure::bad(format!("`limit={v}`: give a whole number from 1 to {MAX_PAGE}"))),
            },
        };
        let query = report::RequestsQuery {
            limit,
            since_ms: q.when("since", utc, false)?,
            until_ms: q.when("until", utc, true)?,
            filters: q.filters(),
            before: q.text("cursor"),
        };
        let v = self.op("requests_list", serde_json::to_value(query).map_err(anyhow::Error::from)?).await?;
        let list: report::RecordList = serde_json::from_value(v).map_err(anyhow::Error::from)?;
        let next = (list.records.len() == limit).then(|| list.records.last().map(|r| crate::usage::format_id(r.id)));
        let rows: Vec<Value> = list.records.iter().map(|r| report::record_json(r, utc)).collect();
        ok(&json!({"requests": rows, "next_cursor": next.flatten()}))
    }

    async fn channels(&self) -> anyhow::Result<Vec<crate::channels::ChannelEntry>> {
        self.blocking(|live| {
            let config = live.state.snapshot.load().config.clone();
            let (yaml, file) = match &config.path {
                Some(p) => (config.raw.channels.as_slice(), p.display().to_string()),
                None => (&[][..], String::new()),
            };
            crate::channels::channel_entries(yaml, &file, Some(&live.access()), &live.store_path)
        })
        .await
    }

    async fn toggle_channel(&self, enabled: bool, reason: Option<String>) -> Answer {
        use crate::channels::{Toggled, set_channel_enabled};
        let name = self.name.clone();
        let yaml = {
            let config = self.live.state.snapshot.load().config.clone();
            config
                .path
                .as_ref()
                .and_then(|p| config.raw.channels.iter().any(|c| c.name == name).then(|| p.display().to_string()))
        };
        if let Some(file) = yaml {
            return Err(Failure::bad(format!("channel `{name}` is defined in {file}, edit it there")));
        }
        let n = name.clone();
        let done = self
            .blocking(move |live| {
                let t = set_channel_enabled(&live.access(), &live.store_path, &n, enabled, reason)?;
                if t == Toggled::Changed {
                    control::rebuild(live)?;
                }
                Ok(t)
            })
            .await?;
        match done {
            Toggled::Unknown(_) => {
                Err(Failure(StatusCode::NOT_FOUND, format!("no store channel named `{name}`"), None))
            }
            Toggled::Changed | Toggled::Already => {
                let all = self.channels().await?;
                let e = all.iter().find(|e| e.channel.name == name).map(serde_json::to_value).transpose();
                ok(&e.map_err(anyhow::Error::from)?.unwrap_or(Value::Null))
            }
        }
    }

    /// `router test NAME` in the server: reachability of every key of the channel's endpoints; the results
    /// feed its health (latency, cooldowns) as a report from the CLI does.
    async fn test_channel(&self) -> Answer {
        use crate::probe::{self, Options};
        use crate::upstream::FailureClass;
        let snap = self.live.state.snapshot.load_full();
        if !snap.channels.iter().any(|c| *c.name == *self.name) {
            return Err(Failure(StatusCode::NOT_FOUND, format!("no channel named `{}`", self.name), None));
        }
        let sel = probe::select(&snap, std::slice::from_ref(&self.name))?;
        let opts = Options::default();
        let (jobs, notes) = probe::jobs(&snap, &sel, &opts);
        let checks = probe::check_all(snap.clone(), &jobs, &opts, &|| {}).await;
        let report = probe::report(&snap, &checks, &[]);
        probe::apply(&report, &self.live.state.health, &snap.config.raw.routing.cooldown);
        let passed = checks.iter().filter(|c| c.result == FailureClass::Ok).count();
        let summary = if checks.is_empty() {
            "nothing to test: no enabled keys or endpoints".to_string()
        } else {
            format!("{passed} of {} checks passed", checks.len())
        };
        ok(
            &json!({"ok": !checks.is_empty() && passed == checks.len(), "summary": summary, "checks": checks, "notes": notes}),
        )
    }

    async fn latest_balances(&self) -> anyhow::Result<Value> {
        let all: Vec<crate::balance::BalanceResult> =
            serde_json::from_value(self.op("balance_history", json!({"channel": null, "since_ms": 0})).await?)?;
        // Oldest first: the last of each key wins.
        let mut latest = std::collections::BTreeMap::new();
        for r in all {
            latest.insert((r.channel.clone(), r.endpoint.clone(), r.fingerprint.clone()), r);
        }
        Ok(json!(latest.into_values().collect::<Vec<_>>()))
    }

    /// Runs a `router keys` command with the server's configuration and store; after a change (`writes`), reloads
    /// the server's key table before answering, as the socket's key operations do.
    async fn keys(
        &self,
        writes: bool,
        f: impl FnOnce(&manage::Ctx) -> anyhow::Result<Value> + Send + 'static,
    ) -> anyhow::Result<Value> {
        self.blocking(move |live| {
            let config = live.state.snapshot.load().config.clone();
            let v = f(&manage::Ctx::serving(&config, live.store.clone())?)?;
            if writes {
                control::reload_keys(live)?;
            }
            Ok(v)
        })
        .await
    }

    async fn key_state(&self, state: State) -> Answer {
        let name = self.name.clone();
        ok(&self.keys(true, move |ctx| Ok(json!(manage::set_key_state(ctx, &name, state)?.1))).await?)
    }
}

/// How often an idle event stream sends a comment, so proxies and clients keep the connection.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /events`: the server's event stream as server-sent events, from now on. Opens with a `: connected`
/// comment (the subscription exists once it arrives); a subscriber that falls behind gets `event: lagged` with
/// how many events it missed, never a slower server. Ends when the server begins to shut down.
fn event_stream(state: &AppState) -> Response<ProxyBody> {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::sync::broadcast::error::RecvError;

    let rx = state.events.subscribe();
    let hello = futures_util::stream::once(async { Bytes::from_static(b": connected\n\n") });
    let stopping = state.stopping.subscribe();
    let events = futures_util::stream::unfold((rx, stopping), |(mut rx, mut stopping)| async move {
        let next = tokio::select! {
            // Also when the sender is gone: the server is over either way.
            _ = stopping.wait_for(|s| *s) => return None,
            next = tokio::time::timeout(KEEP_ALIVE, rx.recv()) => next,
        };
        let chunk = match next {
            Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            Ok(Err(RecvError::Closed)) => return None,
            Ok(Err(RecvError::Lagged(n))) => sse("lagged", &json!({ "missed": n })),
            Ok(Ok(e)) => event_sse(&e),
        };
        Some((chunk, (rx, stopping)))
    });
    let body = StreamBody::new(hello.chain(events).map(|b| Ok::<_, std::io::Error>(Frame::data(b))));
    let mut resp = Response::new(body.boxed_unsync());
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// One event as SSE: `request` (the record as `router requests --json` shows it), `cooled`, `recovered`,
/// `balance`, `reloaded`.
fn event_sse(e: &crate::events::Event) -> Bytes {
    use crate::events::Event;
    match e {
        Event::RequestFinished(r) => sse("request", &report::record_json(r, true)),
        Event::Cooled { key, level, reason, for_ms, failures } => sse(
            "cooled",
            &json!({"key": &**key, "level": level.as_str(), "reason": &**reason, "for_ms": for_ms, "failures": failures}),
        ),
        Event::Recovered { key, level } => sse("recovered", &json!({"key": &**key, "level": level.as_str()})),
        Event::Balance { channel, endpoint, token_key, currency, amount } => sse(
            "balance",
            &json!({"channel": &**channel, "endpoint": &**endpoint, "token_key": &**token_key, "currency": &**currency, "amount": amount}),
        ),
        Event::Reloaded => sse("reloaded", &json!({})),
    }
}

/// Every channel's model ids in the live catalogue.
fn models_json(snap: &crate::catalog::Snapshot) -> Value {
    let rows: Vec<Value> = snap
        .channels
        .iter()
        .map(|c| json!({"channel": &*c.name, "models": c.models.iter().map(|m| &*m.id).collect::<Vec<_>>()}))
        .collect();
    json!({ "channels": rows })
}

/// Every cooling key with its level, reason and time left.
fn health_json(state: &AppState) -> Value {
    let now = std::time::Instant::now();
    let rows: Vec<Value> = state
        .health
        .cooling_all(now)
        .into_iter()
        .map(|c| {
            let channel = c.key.split(['/', '#']).next().unwrap_or("");
            json!({
                "key": c.key,
                "level": crate::events::CoolLevel::of_key(&c.key).as_str(),
                "channel": channel,
                "reason": c.reason,
                "remaining_ms": c.remaining.as_millis() as u64,
                "failures": c.failures,
            })
        })
        .collect();
    // Observed time to first byte per endpoint (a moving average of real requests and probes), and its counts.
    let snap = state.snapshot.load();
    let latency: Vec<Value> = snap
        .channels
        .iter()
        .flat_map(|c| c.endpoints.iter().map(move |e| (c, e)))
        .map(|(c, e)| {
            let v = state.health.view(&e.health_key);
            json!({
                "key": &*e.health_key,
                "channel": &*c.name,
                "endpoint": &*e.name,
                "ttfb_ms": v.ttfb_ms.map(|ms| ms.round() as u64),
                "ok": v.ok,
                "errors": v.errors,
            })
        })
        .collect();
    json!({ "cooling": rows, "latency": latency })
}
