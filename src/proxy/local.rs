//! Answers the router gives itself, without an upstream: health, the model list, a local token count.
//!
//! Must not: record (these are not billable requests) or touch the store.

use bytes::Bytes;
use http::Response;

use super::{ProxyBody, full, headers};
use crate::catalog::Snapshot;
use crate::keys::Entry;
use crate::protocol::Protocol;
use crate::routing::{self, Allow};
use crate::usage;

/// A 200 JSON answer.
pub(super) fn json(body: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// `GET /health`: up, and how many channels are enabled.
pub(super) fn health(snap: &Snapshot) -> Response<ProxyBody> {
    json(serde_json::json!({
        "status": "ok",
        "channels": snap.channels.iter().filter(|c| c.enabled).count(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /v1/models`: the models the key may use, in the client's list shape.
pub(super) fn models(snap: &Snapshot, protocol: Protocol, key: Option<&Entry>) -> Response<ProxyBody> {
    let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
    let ids: Vec<(&str, &str)> = snap
        .model_ids()
        .into_iter()
        .filter(|(id, ch)| {
            allow.as_ref().is_none_or(|a| match a {
                Allow::Tags(e) => e.matches(routing::model_tags(ch, id).into_iter()),
                Allow::Models(list) => list.iter().any(|m| m == id),
            })
        })
        .map(|(id, ch)| (id, &*ch.name))
        .collect();
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
    })
}

/// `count_tokens` with no Anthropic channel for the model: a local estimate (~4 bytes a token).
pub(super) fn count_tokens(id: u128, body: &Bytes) -> Response<ProxyBody> {
    let n = (body.len() as u64).div_ceil(4);
    let mut resp = json(serde_json::json!({ "input_tokens": n }));
    headers::set(resp.headers_mut(), "x-router-request-id", &usage::format_id(id));
    resp
}
