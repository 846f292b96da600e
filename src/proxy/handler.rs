//! The front of the request path: which route a path is, and who is asking.
//!
//! A request goes through these phases, each in its own place:
//! 1. **route** the path to an operation and the client's protocol (here);
//! 2. **authenticate** the gateway key against the key table, then **admit** it under its limits
//!    (`live::limits`: a 429 that never reaches an upstream, or a ticket settled with the record) (here);
//!    local answers (health, models) end before admission;
//! 3. **read body**, **peek**, **plan** over one [`Exchange`] ([`super::exchange`]);
//! 4. **attempt** the candidates with failover ([`super::failover`]);
//! 5. **respond**: the upstream's answer, streamed or translated, through the meter ([`super::respond`],
//!    [`super::body`]);
//! 6. **record**: exactly one record per request past authentication — from the body when it ends, or from
//!    [`Exchange::reject`], the one place a failed request is rendered in the client's shape and recorded.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::exchange::{Exchange, Rejection, error_response};
use super::{AppState, ProxyBody, headers, local};
use crate::protocol::Protocol;
use crate::upstream::Operation;
use crate::usage;

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Api(Operation),
    Models,
    /// `/api/v1/models[/{id}]`: the OpenRouter-shaped catalogue.
    Catalogue,
    Health,
    NotFound,
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
        (_, p) if p.starts_with("/messages") => (Route::NotFound, Protocol::Anthropic),
        _ => (Route::NotFound, Protocol::Openai),
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<Incoming>, _peer: SocketAddr) -> Response<ProxyBody> {
    let snap = state.snapshot.load_full();
    let (route, mut protocol) = route(req.method(), req.uri().path());
    // Anthropic clients announce themselves; answer them in their shape on shared paths.
    if route == Route::Models && req.headers().contains_key("anthropic-version") {
        protocol = Protocol::Anthropic;
    }
    let op = match route {
        Route::Health => return local::health(&snap),
        Route::NotFound => {
            let msg = format!("no route for {} {}", req.method(), req.uri().path());
            let id = usage::new_id(usage::now_ms());
            return error_response(protocol, id, StatusCode::NOT_FOUND, &msg, Some("unknown_route"));
        }
        Route::Models | Route::Catalogue => None,
        Route::Api(op) => Some(op),
    };
    let now_ms = usage::now_ms();
    let key = match state.keys.load().authenticate(presented_key(req.headers()), now_ms) {
        Ok(k) => k.cloned(),
        Err(e) => {
            let id = usage::new_id(now_ms);
            return error_response(protocol, id, StatusCode::UNAUTHORIZED, e.message(), Some("invalid_api_key"));
        }
    };
    if route == Route::Catalogue {
        return super::catalogue::answer(&snap, req.uri().path(), req.uri().query(), key.as_deref());
    }
    let Some(op) = op else { return local::models(&snap, protocol, key.as_deref()) };
    let path = req.uri().path().to_string();
    let mut ex = Exchange::new(state.clone(), snap.clone(), protocol, op, key.as_deref(), &path);
    // Admission: a key with limits gets a ticket (settled with its record) or a 429 that never goes upstream.
    let rate = match key.as_deref().filter(|k| !k.limits.is_empty()) {
        None => None,
        Some(k) => match state.limiter.admit(&k.name, &k.limits, now_ms) {
            Ok(admitted) => {
                ex.ticket = admitted.ticket;
                Some(admitted.rate)
            }
            Err(refused) => {
                let mut resp = ex.reject(Rejection::Refused(refused.why)).await;
                headers::rate_limits(resp.headers_mut(), &refused.rate);
                return resp;
            }
        },
    };
    let mut resp = ex.run(req).await;
    if let Some(rate) = rate {
        headers::rate_limits(resp.headers_mut(), &rate);
    }
    resp
}

/// The gateway key a client presents: `Authorization: Bearer <key>` or `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
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
        assert_eq!(route(&Method::GET, "/api/v1/models").0, Route::Catalogue);
        assert_eq!(route(&Method::GET, "/api/v1/models/openai/gpt-4o").0, Route::Catalogue);
        assert_eq!(route(&Method::GET, "/api/v1/modelsx").0, Route::NotFound);
        assert_eq!(route(&Method::GET, "/v1/messages/x"), (Route::NotFound, Protocol::Anthropic));
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
    }
}
