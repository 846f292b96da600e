//! `GET /api/v1/models` and `GET /api/v1/models/{id}`: the routable models in OpenRouter's model-list shape, so
//! tools that read OpenRouter's list can read the router's.
//!
//! Owns the shape (id, name, context_length, pricing per token as decimal strings, architecture, plus the
//! channels serving each model and whether it is free or local), the `?tag=` filter and the `?sort=` order.
//! A local answer built from the snapshot: must not record, touch the store or call an upstream.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde::Serialize;

use super::ProxyBody;
use super::exchange::error_response;
use crate::catalog::{Channel, ModelKind, Snapshot};
use crate::config::Price;
use crate::keys;
use crate::protocol::Protocol;
use crate::routing::{self, Allow};
use crate::tags::TagExpr;
use crate::usage;

/// The path prefix this module answers.
pub(super) const PREFIX: &str = "/api/v1/models";

#[derive(Debug, Serialize)]
struct Entry<'a> {
    id: &'a str,
    name: &'a str,
    /// The largest known context window among the channels serving it.
    context_length: Option<u32>,
    /// USD per token, as OpenRouter writes it: the lowest known price among the channels (free: "0").
    pricing: Option<Pricing>,
    architecture: Architecture,
    free: bool,
    local: bool,
    channels: Vec<Serving<'a>>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Pricing {
    prompt: String,
    completion: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_cache_read: Option<String>,
}

#[derive(Debug, Serialize)]
struct Architecture {
    input_modalities: &'static [&'static str],
    output_modalities: &'static [&'static str],
}

#[derive(Debug, Serialize)]
struct Serving<'a> {
    name: &'a str,
    free: bool,
    local: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Pricing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_length: Option<u32>,
}

/// The `(input, output)` per-token sort key of an entry: free first, unknown prices last.
fn sort_key(e: &Entry<'_>, best: &Option<Price>) -> (u8, f64) {
    match (e.free, best) {
        (true, _) => (0, 0.0),
        (false, Some(p)) => (1, p.input + p.output),
        (false, None) => (2, 0.0),
    }
}

/// USD per 1M tokens -> USD per token as a plain decimal string (`2.5` -> `"0.0000025"`).
fn per_token(per_million: f64) -> String {
    if per_million == 0.0 {
        return "0".into();
    }
    let s = format!("{:.12}", per_million / 1e6);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn pricing(p: Option<Price>, free: bool) -> Option<Pricing> {
    if free {
        return Some(Pricing { prompt: "0".into(), completion: "0".into(), input_cache_read: None });
    }
    p.map(|p| Pricing {
        prompt: per_token(p.input),
        completion: per_token(p.output),
        input_cache_read: p.cache_read.map(per_token),
    })
}

fn is_free(ch: &Channel, id: &str) -> bool {
    ch.model(id).map(|m| m.free).unwrap_or_else(|| crate::catalog::is_free_id(id))
        || ch.tags.iter().any(|t| t == "free")
}

/// Answers `path` (`/api/v1/models` or `/api/v1/models/{id}`) with `query` applied.
pub(super) fn answer(
    snap: &Snapshot,
    path: &str,
    query: Option<&str>,
    key: Option<&keys::Entry>,
) -> Response<ProxyBody> {
    let fail = |status: StatusCode, msg: &str, code: &str| {
        error_response(Protocol::Openai, usage::new_id(usage::now_ms()), status, msg, Some(code))
    };
    let mut tag: Option<TagExpr> = None;
    let mut sort: Option<String> = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "tag" | "tags" => {
                let v = v.trim();
                tag = Some(TagExpr::parse(v).unwrap_or_else(|| TagExpr::parse_list(v)));
            }
            "sort" | "order" => sort = Some(v.into_owned()),
            _ => {}
        }
    }
    let descending = match sort.as_deref() {
        None | Some("id") => None,
        Some("price") => Some(false),
        Some("-price") => Some(true),
        Some(other) => {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("unknown sort `{other}`; use price (cheapest first), -price or id"),
                "invalid_request",
            );
        }
    };
    let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
    // Every concrete model of the enabled channels, with the channels serving it, in id order.
    let mut by_id: BTreeMap<&str, Vec<&Channel>> = BTreeMap::new();
    for ch in snap.channels.iter().filter(|c| c.enabled) {
        for m in &ch.models {
            let tags = routing::model_tags(ch, &m.id);
            let allowed = allow.as_ref().is_none_or(|a| match a {
                Allow::Tags(e) => e.matches(tags.iter().copied()),
                Allow::Models(list) => list.iter().any(|x| **x == *m.id),
            });
            if allowed && tag.as_ref().is_none_or(|e| e.matches(tags.iter().copied())) {
                by_id.entry(&m.id).or_default().push(ch);
            }
        }
    }
    let one = path.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('/')).filter(|r| !r.is_empty());
    if let Some(raw) = one {
        // Clients encode the `/` of `vendor/model` ids as `%2F` (OpenRouter's SDKs do); both forms name the model.
        let decoded = super::handler::percent_decode(raw);
        let id: &str = &decoded;
        by_id.retain(|k, _| *k == id);
        if by_id.is_empty() {
            return fail(StatusCode::NOT_FOUND, &format!("model `{id}` is not served here"), "model_not_found");
        }
    }
    let mut entries: Vec<(Entry<'_>, Option<Price>)> = by_id
        .into_iter()
        .map(|(id, chans)| {
            let serving: Vec<Serving<'_>> = chans
                .iter()
                .map(|ch| {
                    let free = is_free(ch, id);
                    Serving {
                        name: &ch.name,
                        free,
                        local: ch.local,
                        pricing: pricing(ch.price(id), free),
                        context_length: ch.context_window(id),
                    }
                })
                .collect();
            let free = serving.iter().any(|s| s.free);
            let best = chans
                .iter()
                .filter_map(|ch| ch.price(id))
                .min_by(|a, b| (a.input + a.output).total_cmp(&(b.input + b.output)));
            let kind = chans.iter().find_map(|ch| ch.model(id)).map(|m| m.kind).unwrap_or_default();
            let architecture = match kind {
                ModelKind::Embedding => {
                    Architecture { input_modalities: &["text"], output_modalities: &["embeddings"] }
                }
                _ => Architecture { input_modalities: &["text"], output_modalities: &["text"] },
            };
            let entry = Entry {
                id,
                name: id,
                context_length: serving.iter().filter_map(|s| s.context_length).max(),
                pricing: pricing(best, free),
                architecture,
                free,
                local: serving.iter().any(|s| s.local),
                channels: serving,
            };
            (entry, best)
        })
        .collect();
    if let Some(desc) = descending {
        entries.sort_by(|a, b| {
            let (ka, kb) = (sort_key(&a.0, &a.1), sort_key(&b.0, &b.1));
            let by_price = if desc && ka.0 == kb.0 && ka.0 == 1 {
                kb.1.total_cmp(&ka.1)
            } else {
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            };
            by_price.then_with(|| a.0.id.cmp(b.0.id))
        });
    }
    let body = match one {
        Some(_) => serde_json::json!({ "data": entries.first().map(|e| &e.0) }),
        None => serde_json::json!({ "data": entries.iter().map(|e| &e.0).collect::<Vec<_>>() }),
    };
    super::local::json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_per_token_decimal_strings() {
        assert_eq!(per_token(2.5), "0.0000025");
        assert_eq!(per_token(0.15), "0.00000015");
        assert_eq!(per_token(0.0), "0");
        assert_eq!(per_token(15.0), "0.000015");
    }
}
