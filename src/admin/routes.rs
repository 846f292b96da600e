//! The admin API's routes as data: method, path pattern, parameters, summary. The dispatcher matches requests
//! against [`ROUTES`] and the OpenAPI description ([`openapi`]) is generated from the same table, so a route
//! cannot exist undescribed.

use serde_json::{Map, Value, json};

/// What a route does (the dispatcher's `match` is over this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    OpenApi,
    Usage,
    Requests,
    Request,
    Channels,
    Channel,
    ChannelEnable,
    ChannelDisable,
    ChannelTest,
    Models,
    Health,
    HealthClear,
    Balances,
    BalanceHistory,
    BalanceRefresh,
    Keys,
    Key,
    KeyCreate,
    KeyUpdate,
    KeyDisable,
    KeyEnable,
    KeyRevoke,
    KeyRotate,
    Discover,
    Events,
}

/// A query parameter: name and description.
pub type Param = (&'static str, &'static str);

pub struct Route {
    pub method: &'static str,
    /// Under `/admin/v1`; `{name}` matches one path segment.
    pub path: &'static str,
    pub action: Action,
    pub summary: &'static str,
    pub query: &'static [Param],
    /// The JSON body it takes, described (None: no body).
    pub body: Option<&'static str>,
}

const FILTERS: [Param; 5] = [
    ("channel", "only this channel"),
    ("token", "only this upstream token (its name or fp:...)"),
    ("model", "only this model"),
    ("key", "only this gateway key"),
    ("session", "only this conversation: its session hash or raw id"),
];
const USAGE_Q: [Param; 11] = [
    ("since", "start: YYYY-MM-DD, today, yesterday, 7d, 24h, 30m or RFC 3339"),
    ("until", "end (a date includes that whole day)"),
    ("group_by", "comma-separated, in order: day, hour, channel, endpoint, token, model, key, session"),
    ("utc", "true (default) or false: days in UTC or the server's local time"),
    ("top", "only the first N rows, largest first"),
    ("sort", "rows largest first by: tokens, cache_read, cost, requests"),
    FILTERS[0],
    FILTERS[1],
    FILTERS[2],
    FILTERS[3],
    FILTERS[4],
];
const REQUESTS_Q: [Param; 10] = [
    ("limit", "records per page, 1-1000 (default 20)"),
    ("cursor", "the `next_cursor` of the previous page"),
    ("since", "only records from this time on"),
    ("until", "only records before this time"),
    ("utc", "true (default) or false: times in UTC or the server's local time"),
    FILTERS[0],
    FILTERS[1],
    FILTERS[2],
    FILTERS[3],
    FILTERS[4],
];
const UTC_Q: [Param; 1] = [("utc", "true (default) or false: times in UTC or the server's local time")];
const HISTORY_Q: [Param; 2] =
    [("channel", "only this channel"), ("since", "only checks from this long ago (e.g. 7d) or this time on")];
const SETTINGS: &str = "{\"allow\"?, \"rpm\"?, \"tpm\"?, \"max_parallel\"?, \"budget\"?, \"per\"?, \"expires\"?, \
                        \"note\"?}: as the flags of `router keys update` (`none` removes a limit)";

macro_rules! route {
    ($m:literal, $p:literal, $a:ident, $s:literal) => {
        Route { method: $m, path: $p, action: Action::$a, summary: $s, query: &[], body: None }
    };
    ($m:literal, $p:literal, $a:ident, $s:literal, query = $q:expr) => {
        Route { method: $m, path: $p, action: Action::$a, summary: $s, query: &$q, body: None }
    };
    ($m:literal, $p:literal, $a:ident, $s:literal, body = $b:expr) => {
        Route { method: $m, path: $p, action: Action::$a, summary: $s, query: &[], body: Some($b) }
    };
}

pub static ROUTES: &[Route] = &[
    route!("GET", "/openapi.json", OpenApi, "This description (OpenAPI 3.1)."),
    route!(
        "GET",
        "/usage",
        Usage,
        "Token and cost totals, grouped and filtered as `router usage --json`.",
        query = USAGE_Q
    ),
    route!(
        "GET",
        "/requests",
        Requests,
        "Request records, newest first, a page at a time (`router requests --json`).",
        query = REQUESTS_Q
    ),
    route!(
        "GET",
        "/requests/{id}",
        Request,
        "One request with every upstream attempt (`router requests show ID --json`).",
        query = UTC_Q
    ),
    route!("GET", "/channels", Channels, "Every channel, YAML and store (`router channels list --json`)."),
    route!("GET", "/channels/{name}", Channel, "One channel (`router channels show NAME --json`)."),
    route!("POST", "/channels/{name}/enable", ChannelEnable, "Enable a store channel."),
    route!(
        "POST",
        "/channels/{name}/disable",
        ChannelDisable,
        "Disable a store channel.",
        body = "{\"reason\"?: text shown by list and show}"
    ),
    route!(
        "POST",
        "/channels/{name}/test",
        ChannelTest,
        "Check every key of a channel's endpoints now (`router test NAME --json`); the server learns from it."
    ),
    route!(
        "GET",
        "/models",
        Models,
        "Every channel's models as the live catalogue has them (configured and discovered)."
    ),
    route!(
        "GET",
        "/health",
        Health,
        "Cooling endpoints, tokens and (channel, model) pairs: reason, time left; observed time to first byte per endpoint."
    ),
    route!("POST", "/health/clear", HealthClear, "End one cooldown now.", body = "{\"key\": a key of GET /health}"),
    route!("GET", "/balances", Balances, "The latest stored balance of every upstream key."),
    route!(
        "GET",
        "/balances/history",
        BalanceHistory,
        "Stored balance checks, oldest first (`router balance history --json`).",
        query = HISTORY_Q
    ),
    route!("POST", "/balances/refresh", BalanceRefresh, "Check every key's balance now; answers the latest."),
    route!("GET", "/keys", Keys, "Every gateway key with limits and spend (`router keys list --json`)."),
    route!("GET", "/keys/{name}", Key, "One gateway key (`router keys show NAME --json`)."),
    route!(
        "POST",
        "/keys",
        KeyCreate,
        "Create a store key; the answer holds its secret, once (`router keys create --json`).",
        body = "{\"name\", ...settings}: settings as the flags of `router keys create`"
    ),
    route!(
        "PATCH",
        "/keys/{name}",
        KeyUpdate,
        "Change a store key's settings (`router keys update`).",
        body = SETTINGS
    ),
    route!("POST", "/keys/{name}/disable", KeyDisable, "Stop accepting a store key until enabled."),
    route!("POST", "/keys/{name}/enable", KeyEnable, "Accept a disabled store key again."),
    route!("POST", "/keys/{name}/revoke", KeyRevoke, "Refuse a store key for good (its history stays)."),
    route!("POST", "/keys/{name}/rotate", KeyRotate, "A new secret for a store key; the answer holds it, once."),
    route!("POST", "/discover", Discover, "Ask every channel's keys for their models now; rebuilds the catalogue."),
    route!("GET", "/events", Events, "Server-sent events: finished requests and health changes, as they happen."),
];

/// The route `method path` (path under `/admin/v1`) and its `{...}` segment, if any; `Err(true)` when the path
/// exists for another method.
pub fn find(method: &str, path: &str) -> Result<(&'static Route, Option<String>), bool> {
    let mut other_method = false;
    for r in ROUTES {
        if let Some(arg) = matches(r.path, path) {
            if r.method == method {
                return Ok((r, arg));
            }
            other_method = true;
        }
    }
    Err(other_method)
}

/// `Some(segment)` when `path` fits `pattern` (the `{...}` segment percent-decoded, `None` inside if none).
fn matches(pattern: &str, path: &str) -> Option<Option<String>> {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    let mut arg = None;
    loop {
        match (p.next(), q.next()) {
            (None, None) => return Some(arg),
            (Some(a), Some(b)) if a.starts_with('{') && !b.is_empty() => {
                arg = Some(url::form_urlencoded::parse(format!("x={b}").as_bytes()).next()?.1.into_owned());
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// The OpenAPI 3.1 description of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = r
            .query
            .iter()
            .map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}}))
            .collect();
        if let Some(seg) = r.path.split('/').find(|s| s.starts_with('{')) {
            let name = seg.trim_matches(['{', '}']);
            params.insert(0, json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        let mut op = json!({
            "operationId": format!("{:?}", r.action),
            "summary": r.summary,
            "parameters": params,
            "security": [{"adminKey": []}],
            "responses": {
                "200": {"description": "JSON (text/event-stream for /events)"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
            }
        });
        if let Some(b) = r.body {
            op["requestBody"] = json!({
                "required": r.action != Action::ChannelDisable,
                "description": b,
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        let entry = paths.entry(format!("/admin/v1{}", r.path)).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "router admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The operations of the `router` CLI over HTTP, answered from the same store operations: \
                            each JSON answer equals the matching command's --json output."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "a key of server.admin_keys (or x-api-key)"}
            },
            "responses": {
                "Error": {
                    "description": "{\"error\": {\"message\", \"hint\"?, \"type\"}}",
                    "content": {"application/json": {"schema": {"type": "object"}}}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_found() {
        let doc = openapi();
        for r in ROUTES {
            let path = format!("/admin/v1{}", r.path);
            let op = &doc["paths"][&path][r.method.to_ascii_lowercase()];
            assert!(op["summary"].is_string(), "{} {path} is not described", r.method);
            let concrete = r.path.replace("{id}", "abc").replace("{name}", "a%20b");
            let (found, arg) = find(r.method, &concrete).unwrap();
            assert_eq!(found.action, r.action, "{concrete}");
            assert_eq!(arg.is_some(), r.path.contains('{'));
            if r.path.contains("{name}") {
                assert_eq!(arg.as_deref(), Some("a b"));
            }
        }
        // Same path, other method: Err(true) (405); unknown path: Err(false) (404).
        assert!(matches!(find("DELETE", "/keys"), Err(true)));
        assert!(matches!(find("GET", "/nope"), Err(false)));
        assert!(matches!(find("GET", "/keys/"), Err(false)));
    }
}
