//! The front of the request path: which route a path is, and who is asking.
//!
//! A request goes through these phases, each in its own place:
//! 1. **route** the path to an operation and the client's protocol (here);
//! 2. **authenticate** the gateway key (here); local answers (health, models) end here;
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
use subtle::ConstantTimeEq;

use super::exchange::{Exchange, error_response};
use super::{AppState, ProxyBody, local};
use crate::config::{GatewayKey, hash_key};
use crate::protocol::Protocol;
use crate::upstream::Operation;
use crate::usage;

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Api(Operation),
    Models,
    Health,
    NotFound,
}

fn route(method: &Method, path: &str) -> (Route, Protocol) {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    let p = p.trim_end_matches('/');
    match (method, p) {
        (&Method::POST, "/chat/completions") => (Route::Api(Operation::ChatCompletions), Protocol::Openai),
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
        Route::Models => None,
        Route::Api(op) => Some(op),
    };
    let key = match authenticate(&snap.config.gateway_keys, req.headers()) {
        Ok(k) => k,
        Err(msg) => {
            let id = usage::new_id(usage::now_ms());
            return error_response(protocol, id, StatusCode::UNAUTHORIZED, msg, Some("invalid_api_key"));
        }
    };
    let Some(op) = op else { return local::models(&snap, protocol, key) };
    let path = req.uri().path().to_string();
    Exchange::new(state.clone(), snap.clone(), protocol, op, key, &path).run(req).await
}

/// Checks the gateway key. `Ok(None)` when no keys are configured (open mode).
fn authenticate<'a>(keys: &'a [GatewayKey], headers: &HeaderMap) -> Result<Option<&'a GatewayKey>, &'static str> {
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`");
    };
    let hash = hash_key(presented);
    // Compare against every key so the time taken does not depend on which one matched.
    let mut found = None;
    for k in keys {
        if bool::from(k.hash.ct_eq(&hash)) && found.is_none() {
            found = Some(k);
        }
    }
    found.map(Some).ok_or("invalid API key")
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
        assert_eq!(route(&Method::GET, "/v1/models").0, Route::Models);
        assert_eq!(route(&Method::GET, "/health").0, Route::Health);
        assert_eq!(route(&Method::GET, "/v1/messages/x"), (Route::NotFound, Protocol::Anthropic));
    }

    #[test]
    fn auth_accepts_bearer_and_x_api_key_only_for_known_keys() {
        let keys = vec![GatewayKey { name: "me".into(), hash: hash_key("sk-gw"), allow: None }];
        let mut h = HeaderMap::new();
        assert!(authenticate(&keys, &h).is_err());
        h.insert("authorization", "Bearer sk-gw".parse().unwrap());
        assert_eq!(authenticate(&keys, &h).unwrap().unwrap().name, "me");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-gw".parse().unwrap());
        assert!(authenticate(&keys, &h).unwrap().is_some());
        h.insert("x-api-key", "wrong".parse().unwrap());
        assert!(authenticate(&keys, &h).is_err());
        assert!(authenticate(&[], &HeaderMap::new()).unwrap().is_none());
    }
}
