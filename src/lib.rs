//! router: one local endpoint for many LLM upstream accounts.
//!
//! # Layout
//! - `cli`: one file per subcommand (Args + run); `cli::output` is the only place that prints.
//! - `config`: YAML schema, `${VAR}` interpolation, validation, zero-config autodetection.
//! - `catalog`: channels, endpoints, tokens, models -> an immutable routing `Snapshot`.
//! - `routing`: model / alias / tag resolution, filters, strategies -> ordered attempt plan. Pure.
//! - `tags`: tag extraction from model ids; tag expressions.
//! - `protocol`: wire types, SSE, usage extraction, error shapes, translation. No I/O.
//! - `upstream`: the one HTTP client, URL + auth per provider, failure classes, health and cooldowns.
//! - `proxy`: the hyper server, request phases, failover loop, streaming pump, debug headers.
//! - `store`: the redb file (tables, batched record writer, control socket, direct-or-socket access).
//! - `usage`: request records, token fingerprints, cost, the record sink.
//! - `error`: user-facing errors and exit codes.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod error;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod store;
pub mod tags;
pub mod upstream;
pub mod usage;
