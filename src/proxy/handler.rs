//! The front of the request path: which route a path is, and who is asking.
//!
//! A request goes through these phases, each in its own place:
//! 1. **route** the path to an operation and the client's protocol (here; Gemini paths also name the model:
//!    `/v1beta/models/{model}:generateContent`);
//! 2. **authenticate** the gateway key against the key table (Bearer, `x-api-key`, `x-goog-api-key` or, on
//!    Gemini paths, `?key=`, which is then dropped from everything forwarded or recorded), then **admit** it under
//!    its limits (`live::limits`: a 429 that never reaches an upstream, or a ticket settled with the record)
//!    (here); local answers (health, models) end before admission;
//! 3. **read body**, **peek**, **plan** over one [`Exchange`] ([`super::exchange`]);
//! 4. **attempt** the candidates with failover ([`super::failover`]);
//! 5. **respond**: the upstream's answer, streamed or translated, through the meter ([`super::respond`],
//!    [`super::body`]);
//! 6. **record**: exactly one record per request past authentication — from the body when it ends, or from
//!    [`Exchange::reject`], the one place a failed request is rendered in the client's shape and recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Request, StatusCode};

use super::exchange::{Exchange, Rejection, error_response};
use super::h1::Answer;
use super::{AppState, RequestBody, headers, local};
use crate::live::shared;
use crate::protocol::Protocol;
use crate::upstream::Operation;
use crate::usage;

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Api(Operation),
    Models,
    /// Gemini `GET models/{model}`.
    Model,
    /// `/api/v1/models[/{id}]`: the OpenRouter-shaped catalogue.
    Catalogue,
    Health,
    Metrics,
    NotFound,
}

/// The Gemini API paths: `/v1beta/models[/{model}[:{method}]]`, and the same under `/v1/` (the GenAI SDKs'
/// `api_version`). Returns the route and the URL-decoded model, if the path names one.
fn gemini_route(method: &Method, path: &str) -> Option<(Route, Option<String>)> {
    let rest = path.strip_prefix("/v1beta").or_else(|| path.strip_prefix("/v1"))?;
    let rest = rest.strip_prefix("/models")?.trim_end_matches('/');
    if rest.is_empty() {
        return (method == Method::GET).then_some((Route::Models, None));
    }
    let name = rest.strip_prefix('/')?;
    let (model, action) = match name.rsplit_once(':') {
        // A tag expression may contain `:` (`tag:fast`); a Gemini method never does and always comes last.
        Some((m, a)) if a.chars().all(|c| c.is_ascii_alphabetic()) && !a.is_empty() => (m, Some(a)),
        _ => (name, None),
    };
    let model = percent_decode(model);
    let op = match (method, action) {
        (&Method::GET, None) => return Some((Route::Model, Some(model))),
        (&Method::POST, Some("generateContent")) => Operation::GenerateContent,
        (&Method::POST, Some("streamGenerateContent")) => Operation::StreamGenerateContent,
        (&Method::POST, Some("countTokens")) => Operation::GeminiCountTokens,
        (&Method::POST, Some("embedContent")) => Operation::EmbedContent,
        (&Method::POST, Some("batchEmbedContents")) => Operation::BatchEmbedContents,
        _ => return Some((Route::NotFound, None)),
    };
    Some((Route::Api(op), Some(model)))
}

/// `%XX` escapes decoded (model ids and tag expressions such as `tag%3Afast%2C%21slow` in a path).
pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Whether a request on a path both APIs share (`GET /v1/models`) comes from a Google client.
fn speaks_gemini(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key(&super::headers::X_GOOG_API_KEY)
        || headers.contains_key("x-goog-api-client")
        || query_key(query).is_some()
}

/// The `key` parameter of a query string (Google's API-key-in-the-URL convention).
fn query_key(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
}

/// The query without its `key` parameter: what may be forwarded (the gateway key never goes upstream).
fn query_without_key(query: Option<&str>) -> Option<String> {
    let q = query?;
    let kept: Vec<&str> = q.split('&').filter(|p| !p.is_empty() && *p != "key" && !p.starts_with("key=")).collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn route(method: &Method, path: &str) -> (Route, Protocol) {
    if method == Method::GET
        && path.strip_prefix(super::catalogue::PREFIX).is_some_and(|r| r.is_empty() || r.starts_with('/'))
    {
        return (Route::Catalogue, Protocol::Openai);
    }
    let p = path.strip_prefix("/v1").unwrap_or(path);
    let p = p.trim_end_matches('/');
    match (method, p) {
        (&Method::POST, "/chat/completions") => (Route::Api(Operation::ChatCompletions), Protocol::Openai),
        (&Method::POST, "/completions") => (Route::Api(Operation::Completions), Protocol::Openai),
        (&Method::POST, "/responses") => (Route::Api(Operation::Responses), Protocol::Openai),
        (&Method::POST, "/embeddings") => (Route::Api(Operation::Embeddings), Protocol::Openai),
        (&Method::POST, "/messages") => (Route::Api(Operation::Messages), Protocol::Anthropic),
        (&Method::POST, "/messages/count_tokens") => (Route::Api(Operation::CountTokens), Protocol::Anthropic),
        (&Method::GET, "/models") => (Route::Models, Protocol::Openai),
        (&Method::GET, "" | "/health" | "/healthz") if path != "/v1" => (Route::Health, Protocol::Openai),
        (&Method::GET, "/metrics") if path == "/metrics" => (Route::Metrics, Protocol::Openai),
        (_, p) if p.starts_with("/messages") => (Route::NotFound, Protocol::Anthropic),
        _ => (Route::NotFound, Protocol::Openai),
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<RequestBody>, peer: SocketAddr) -> Answer {
    if let Some(door) = state.door.get().filter(|d| d.claims(req.uri().path())) {
        return door.clone().answer(state.clone(), req, peer.ip()).await.into();
    }
    let snap = state.snapshot.load_full();
    let (mut route, mut protocol) = route(req.method(), req.uri().path());
    let mut path_model = None;
    // `/v1beta/...` and `models/{model}:method` are Google's alone; `/v1/models[/{id}]` is shared with OpenAI
    // and goes to Gemini only for a Google client.
    if let Some((r, model)) = gemini_route(req.method(), req.uri().path())
        && (req.uri().path().starts_with("/v1beta/")
            || matches!(r, Route::Api(_))
            || speaks_gemini(req.headers(), req.uri().query()))
    {
        (route, protocol, path_model) = (r, Protocol::Gemini, model);
    }
    // Anthropic clients announce themselves; answer them in their shape on shared paths.
    if route == Route::Models && req.headers().contains_key("anthropic-version") {
        protocol = Protocol::Anthropic;
    }
    let op = match route {
        Route::Health => return local::health(&snap, &state.sink.health().status(), state.shared.as_deref()).into(),
        Route::NotFound => {
            let msg = format!("no route for {} {}", req.method(), req.uri().path());
            let id = usage::new_id(usage::now_ms());
            return error_response(protocol, id, StatusCode::NOT_FOUND, &msg, Some("unknown_route")).into();
        }
        Route::Models | Route::Model | Route::Catalogue | Route::Metrics => None,
        Route::Api(op) => Some(op),
    };
    let now_ms = usage::now_ms();
    let from_query = if protocol == Protocol::Gemini { query_key(req.uri().query()) } else { None };
    let presented = presented_key(req.headers()).or(from_query.as_deref());
    let key = match state.keys.load().authenticate(presented, now_ms) {
        Ok(k) => k.cloned(),
        Err(e) => {
            let id = usage::new_id(now_ms);
            return error_response(protocol, id, StatusCode::UNAUTHORIZED, e.message(), Some("invalid_api_key")).into();
        }
    };
    if route == Route::Catalogue {
        return super::catalogue::answer(&snap, req.uri().path(), req.uri().query(), key.as_deref()).into();
    }
    let Some(op) = op else {
        let resp = match (route, path_model) {
            (Route::Model, Some(model)) => local::gemini_model(&snap, &model, key.as_deref()),
            // With its own listener, the proxy port does not show metrics.
            (Route::Metrics, _)
                if snap.config.raw.server.metrics && snap.config.raw.server.metrics_listen.is_none() =>
            {
                super::scrape::response(&state)
            }
            (Route::Metrics, _) => {
                let msg = if snap.config.raw.server.metrics {
                    "metrics are served on server.metrics_listen"
                } else {
                    "metrics are off (server.metrics: false)"
                };
                error_response(protocol, usage::new_id(now_ms), StatusCode::NOT_FOUND, msg, Some("unknown_route"))
            }
            _ => local::models(&snap, protocol, key.as_deref()),
        };
        return resp.into();
    };
    // The path only: a `?key=` never reaches a record.
    let path = req.uri().path().to_string();
    // Boxed: the exchange (~600 bytes) then moves as a pointer into `run`'s future, which would otherwise hold it
    // twice (the argument and its local copy) and make every move of the handler's future larger.
    let mut ex = Box::new(Exchange::new(state.clone(), snap.clone(), protocol, op, key.as_deref(), path, now_ms));
    ex.in_flight = state.metrics.request_started();
    if let Some(model) = path_model {
        ex.record.requested_model = model;
    }
    // Admission: a key with limits gets a ticket (settled with its record) or a 429 that never goes upstream.
    let rate = match key.as_deref().filter(|k| !k.limits.is_empty()) {
        None => None,
        Some(k) => match shared::admit(&state.limiter, state.shared.as_ref(), &k.name, &k.limits, now_ms).await {
            Ok(admitted) => {
                ex.ticket = admitted.ticket;
                Some(admitted.rate)
            }
            Err(refused) => {
                let mut answer = ex.reject(Rejection::Refused(refused.why)).await;
                headers::rate_limits(answer.resp.headers_mut(), &mut answer.lines, &refused.rate);
                return answer;
            }
        },
    };
    // The client's query as it may be forwarded: a Gemini client's `key` never leaves.
    let query = if protocol == Protocol::Gemini {
        query_without_key(req.uri().query())
    } else {
        req.uri().query().map(str::to_string)
    };
    let mut answer = ex.run(req, query).await;
    if let Some(rate) = rate {
        headers::rate_limits(answer.resp.headers_mut(), &mut answer.lines, &rate);
    }
    answer
}

/// The gateway key a client presents in a header: `Authorization: Bearer <key>`, `x-api-key: <key>` or
/// (Google's clients) `x-goog-api-key: <key>`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    // Names as constants (`proxy::headers`): a name given as text is parsed and checked on every lookup.
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    header(&http::header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| header(&super::headers::X_API_KEY))
        .or_else(|| header(&super::headers::X_GOOG_API_KEY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions"),
            (Route::Api(Operation::ChatCompletions), Protocol::Openai)
        );
        assert_eq!(
            route(&Method::POST, "/chat/completions"),
            (Route::Api(Operation::ChatCompletions), Protocol::Openai)
        );
        assert_eq!(route(&Method::POST, "/v1/messages"), (Route::Api(Operation::Messages), Protocol::Anthropic));
        assert_eq!(
            route(&Method::POST, "/v1/messages/count_tokens"),
            (Route::Api(Operation::CountTokens), Protocol::Anthropic)
        );
        assert_eq!(route(&Method::POST, "/v1/completions"), (Route::Api(Operation::Completions), Protocol::Openai));
        assert_eq!(route(&Method::GET, "/v1/models").0, Route::Models);
        assert_eq!(route(&Method::GET, "/health").0, Route::Health);
        assert_eq!(route(&Method::GET, "/metrics").0, Route::Metrics);
        assert_eq!(route(&Method::GET, "/v1/metrics").0, Route::NotFound);
        assert_eq!(route(&Method::GET, "/api/v1/models").0, Route::Catalogue);
        assert_eq!(route(&Method::GET, "/api/v1/models/openai/gpt-4o").0, Route::Catalogue);
        assert_eq!(route(&Method::GET, "/api/v1/modelsx").0, Route::NotFound);
        assert_eq!(route(&Method::GET, "/v1/messages/x"), (Route::NotFound, Protocol::Anthropic));
    }

    #[test]
    fn gemini_routes_name_the_model() {
        let r = |m: &Method, p: &str| gemini_route(m, p);
        let post = Method::POST;
        assert_eq!(
            r(&post, "/v1beta/models/gemini-2.5-pro:generateContent"),
            Some((Route::Api(Operation::GenerateContent), Some("gemini-2.5-pro".into())))
        );
        assert_eq!(
            r(&post, "/v1/models/gemini-2.5-flash:streamGenerateContent"),
            Some((Route::Api(Operation::StreamGenerateContent), Some("gemini-2.5-flash".into())))
        );
        assert_eq!(
            r(&post, "/v1beta/models/tag%3Afast%2C%21slow:countTokens"),
            Some((Route::Api(Operation::GeminiCountTokens), Some("tag:fast,!slow".into())))
        );
        // An undecoded tag expression: the last `:` names the method.
        assert_eq!(
            r(&post, "/v1beta/models/tag:fast:generateContent"),
            Some((Route::Api(Operation::GenerateContent), Some("tag:fast".into())))
        );
        assert_eq!(r(&Method::GET, "/v1beta/models"), Some((Route::Models, None)));
        assert_eq!(
            r(&Method::GET, "/v1beta/models/gemini-2.5-pro"),
            Some((Route::Model, Some("gemini-2.5-pro".into())))
        );
        assert_eq!(
            r(&post, "/v1beta/models/text-embedding-004:embedContent"),
            Some((Route::Api(Operation::EmbedContent), Some("text-embedding-004".into())))
        );
        assert_eq!(
            r(&post, "/v1beta/models/text-embedding-004:batchEmbedContents"),
            Some((Route::Api(Operation::BatchEmbedContents), Some("text-embedding-004".into())))
        );
        assert_eq!(r(&post, "/v1beta/models/x:predict"), Some((Route::NotFound, None)));
        assert_eq!(r(&post, "/v1/chat/completions"), None);
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn query_key_is_read_and_never_forwarded() {
        assert_eq!(query_key(Some("alt=sse&key=sk-gw")), Some("sk-gw".into()));
        assert_eq!(query_key(Some("alt=sse")), None);
        assert_eq!(query_without_key(Some("alt=sse&key=sk-gw")), Some("alt=sse".into()));
        assert_eq!(query_without_key(Some("key=sk-gw")), None);
        assert_eq!(query_without_key(Some("keyword=1&key")), Some("keyword=1".into()));
        let mut h = HeaderMap::new();
        assert!(speaks_gemini(&h, Some("key=x")) && !speaks_gemini(&h, None));
        h.insert("x-goog-api-client", "google-genai-sdk/1.0".parse().unwrap());
        assert!(speaks_gemini(&h, None));
    }

    #[test]
    fn auth_accepts_bearer_and_x_api_key_only_for_known_keys() {
        use crate::config::{GatewayKey, hash_key};
        let keys = vec![GatewayKey { name: "me".into(), hash: hash_key("sk-gw"), ..Default::default() }];
        let table = crate::keys::KeyTable::build(&keys, &[]).unwrap();
        let auth = |h: &HeaderMap| table.authenticate(presented_key(h), 0).map(|k| k.map(|k| k.name.to_string()));
        let mut h = HeaderMap::new();
        assert!(auth(&h).is_err());
        h.insert("authorization", "Bearer sk-gw".parse().unwrap());
        assert_eq!(auth(&h).unwrap().as_deref(), Some("me"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-gw".parse().unwrap());
        assert!(auth(&h).unwrap().is_some());
        h.insert("x-api-key", "wrong".parse().unwrap());
        assert!(auth(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", "sk-gw".parse().unwrap());
        assert_eq!(auth(&h).unwrap().as_deref(), Some("me"));
    }
}
