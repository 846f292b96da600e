//! router: one local endpoint for many LLM upstream accounts.
//!
//! # Layout
//! - `cli`: one file per subcommand (Args + run); `cli::output` is the only place that prints.
//! - `config`: YAML schema, `${VAR}` interpolation, validation, zero-config autodetection.
//! - `catalog`: channels, endpoints, tokens, models -> an immutable routing `Snapshot`.
//! - `routing`: model / alias / tag resolution, filters, strategies -> ordered attempt plan. Pure.
//! - `discover`: model lists (and prices) per (channel, token); the seam where results are persisted.
//! - `tags`: tag extraction from model ids; tag expressions.
//! - `protocol`: wire types, SSE, usage extraction, error shapes, translation. No I/O.
//! - `upstream`: the one HTTP client, URL + auth per provider, failure classes, health and cooldowns.
//! - `proxy`: the hyper server, request phases, failover loop, streaming pump, debug headers.
//! - `usage`: request records, token fingerprints, cost, the record sink.
//! - `error`: user-facing errors and exit codes.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod discover;
pub mod error;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod tags;
pub mod upstream;
pub mod usage;
