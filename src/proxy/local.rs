//! Answers the router gives itself, without an upstream: health, the model list, a local token count.
//!
//! Must not: record (these are not billable requests) or touch the store.

use bytes::Bytes;
use http::Response;

use super::{ProxyBody, full, headers};
use crate::catalog::Snapshot;
use crate::keys::Entry;
use crate::live::shared::Shared;
use crate::protocol::Protocol;
use crate::routing::{self, Allow};
use crate::usage::sink::SinkStatus;

/// A 200 JSON answer.
pub(super) fn json(body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// `GET /health`: up, how many channels are enabled, whether request records are being saved and whether the
/// shared state is reachable. `status` is `degraded` while records cannot be saved or Redis cannot be reached
/// (still 200: requests are served, on this instance's own cooldowns and limits); `records` says why and how
/// many wait.
pub(super) fn health(snap: &Snapshot, records: &SinkStatus, shared: Option<&Shared>) -> Response<ProxyBody> {
    let mut body = serde_json::json!({
        "status": records.state,
        "channels": snap.channels.iter().filter(|c| c.enabled).count(),
        "version": env!("CARGO_PKG_VERSION"),
        "records": records,
    });
    if let Some(sh) = shared {
        let degraded = sh.degraded();
        if degraded {
            body["status"] = "degraded".into();
        }
        body["shared_state"] = (if degraded { "redis unreachable" } else { "redis" }).into();
    }
    json(body)
}

/// The served model ids the key may use, with the channel that serves each.
fn visible_models<'a>(snap: &'a Snapshot, key: Option<&Entry>) -> Vec<(&'a str, &'a str)> {
    let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
    snap.model_ids()
        .into_iter()
        .filter(|(id, ch)| {
            allow.as_ref().is_none_or(|a| match a {
                Allow::Tags(e) => e.matches(routing::model_tags(ch, id).into_iter()),
                Allow::Models(list) => list.iter().any(|m| m == id),
            })
        })
        .map(|(id, ch)| (id, &*ch.name))
        .collect()
}

/// One model in Google's shape.
fn gemini_model_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "name": format!("models/{id}"), "version": "001", "displayName": id,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

/// Gemini `GET /v1beta/models/{model}`: the model if the key may use it, else Google's 404.
pub(super) fn gemini_model(snap: &Snapshot, model: &str, key: Option<&Entry>) -> Response<ProxyBody> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if visible_models(snap, key).iter().any(|(id, _)| *id == model) {
        return json(gemini_model_json(model));
    }
    let msg = format!("model `{model}` is not served by any enabled channel; GET /v1beta/models lists what is");
    let mut resp = Response::new(full(crate::protocol::errors::body(Protocol::Gemini, 404, &msg, None)));
    *resp.status_mut() = http::StatusCode::NOT_FOUND;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// `GET /v1/models` (`/v1beta/models` for Gemini): the models the key may use, in the client's list shape.
pub(super) fn models(snap: &Snapshot, protocol: Protocol, key: Option<&Entry>) -> Response<ProxyBody> {
    let ids = visible_models(snap, key);
    json(match protocol {
        Protocol::Openai => serde_json::json!({
            "object": "list",
            "data": ids.iter().map(|(id, owner)| serde_json::json!({
                "id": id, "object": "model", "created": 0, "owned_by": owner
            })).collect::<Vec<_>>(),
        }),
        Protocol::Anthropic => serde_json::json!({
            "data": ids.iter().map(|(id, _)| serde_json::json!({
                "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ids.first().map(|(id, _)| *id),
            "last_id": ids.last().map(|(id, _)| *id),
        }),
        Protocol::Gemini => serde_json::json!({
            "models": ids.iter().map(|(id, _)| gemini_model_json(id)).collect::<Vec<_>>(),
        }),
    })
}

/// `count_tokens` (Anthropic) / `countTokens` (Gemini) with no channel of the client's protocol for the model:
/// a local estimate (~4 bytes a token), in the client's shape.
pub(super) fn count_tokens(protocol: Protocol, id: u128, body: &Bytes) -> Response<ProxyBody> {
    let n = (body.len() as u64).div_ceil(4);
    let mut resp = json(match protocol {
        Protocol::Gemini => serde_json::json!({ "totalTokens": n }),
        _ => serde_json::json!({ "input_tokens": n }),
    });
    headers::set_request_id(resp.headers_mut(), id);
    resp
}
