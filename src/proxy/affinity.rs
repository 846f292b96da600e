//! The affinity phase: a conversation goes back to the upstream candidate that served it, so the provider's
//! prompt cache (which belongs to one account / key) keeps hitting.
//!
//! Owns, for one request: whether affinity applies (`routing.affinity.enabled`, `X-Router-Affinity: off`, chat
//! operations only, a session identified), looking the binding up after the peek, putting the bound candidate
//! first in the plan (the rest of the plan stays as fallback), and binding the session to whatever served it.
//! The plan already leaves out what is cooling, disabled, removed, out of balance or not allowed for the key,
//! so a bound candidate missing from the plan is simply not used: the request is served elsewhere and the
//! session moves. With `shared_state.redis`, a miss reads through Redis and a new or moved binding is written
//! there before the response (both bounded by `live::shared::TIMEOUT`). Must not: hold the binding table's lock
//! across an await (its operations are synchronous),
//! or record a raw session id (only its hash).

use std::time::Instant;

use http::HeaderMap;

use super::exchange::{Exchange, Input};
use super::headers::AFFINITY;
use crate::live::affinity::{Outcome, Policy, Target, session_key};
use crate::protocol::session;
use crate::routing::{Candidate, Plan};
use crate::upstream::Operation;

/// Affinity for one request, between lookup and settle.
pub(super) struct Affine {
    /// The binding key: session and requested model.
    key: u64,
    /// What the session was bound to when the request arrived.
    bound: Option<Target>,
    policy: Policy,
}

/// Whether the request turned affinity off (`X-Router-Affinity: off`, also `0` / `false` / `no`).
fn turned_off(headers: &HeaderMap) -> bool {
    // A pass over the request's few names first: a lookup by a non-standard name hashes it (~190 instructions),
    // and nearly every request lacks this header.
    if !headers.keys().any(|n| *n == AFFINITY) {
        return false;
    }
    headers.get(&AFFINITY).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let v = v.trim();
        ["off", "0", "false", "no"].iter().any(|o| v.eq_ignore_ascii_case(o))
    })
}

/// Identifies the session (chat operations of every protocol, Gemini's included) and looks its binding up: in memory, then (several instances, `shared_state.redis`)
/// in Redis when this instance has none, so a turn another instance served keeps its upstream. Records the
/// session hash (whenever one is identified) and `off` when affinity does not apply to a chat request. `None`:
/// no affinity for this request.
pub(super) async fn lookup(ex: &mut Exchange, input: &Input) -> Option<Affine> {
    if !matches!(
        ex.op,
        Operation::ChatCompletions
            | Operation::Messages
            | Operation::Responses
            | Operation::GenerateContent
            | Operation::StreamGenerateContent
    ) {
        return None;
    }
    let session = session::identify(&input.headers, &input.peek, &input.body);
    ex.record.session = session.map(|s| s.hex());
    let cfg = &ex.snap.config.raw.routing.affinity;
    let Some(session) = session.filter(|_| cfg.enabled && cfg.max_sessions > 0 && !turned_off(&input.headers)) else {
        ex.record.affinity = Some(Outcome::Off);
        return None;
    };
    let policy = Policy { ttl: cfg.ttl.0, max: cfg.max_sessions };
    let key = session_key(session.hash, &ex.record.requested_model);
    let mut bound = ex.state.affinity.binding(key, &policy, Instant::now());
    if bound.is_none()
        && let Some(sh) = &ex.state.shared
        && let Some(t) = sh.binding(key).await
    {
        ex.state.affinity.bind(key, t, &policy, Instant::now());
        bound = Some(t);
    }
    Some(Affine { key, bound, policy })
}

fn target(ex: &Exchange, c: &Candidate) -> Target {
    ex.snap.candidate(c).2.affinity.target(&c.model)
}

/// Moves the bound candidate, when the plan still has it, to the front; the others keep their order.
pub(super) fn prefer(ex: &Exchange, a: &Affine, plan: &mut Plan) {
    let Some(bound) = a.bound else { return };
    if let Some(i) = plan.candidates.iter().position(|c| target(ex, c) == bound) {
        plan.candidates[..=i].rotate_right(1);
    }
}

/// Binds the session to the candidate that served it (with several instances, in Redis too, before the response
/// goes out; a hit only refreshes the Redis copy's TTL, without waiting); records and returns what happened.
pub(super) async fn settle(ex: &mut Exchange, served: &Candidate) -> Option<Outcome> {
    let a = ex.affinity.take()?;
    let t = target(ex, served);
    let outcome = match a.bound {
        None => Outcome::New,
        Some(b) if b == t => Outcome::Hit,
        Some(_) => Outcome::Moved,
    };
    if outcome != Outcome::Hit {
        // A hit was refreshed by the lookup already.
        ex.state.affinity.bind(a.key, t, &a.policy, Instant::now());
        if let Some(sh) = &ex.state.shared {
            sh.bind(a.key, t, a.policy.ttl).await;
        }
    } else if let Some(sh) = &ex.state.shared {
        sh.touch(a.key, a.policy.ttl);
    }
    ex.record.affinity = Some(outcome);
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_header() {
        let mut h = HeaderMap::new();
        assert!(!turned_off(&h));
        for v in ["off", "OFF", " 0 ", "false", "no"] {
            h.insert(AFFINITY, v.parse().unwrap());
            assert!(turned_off(&h), "{v}");
        }
        h.insert(AFFINITY, "on".parse().unwrap());
        assert!(!turned_off(&h));
    }
}
