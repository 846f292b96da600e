//! router: one local endpoint for many LLM upstream accounts.
//!
//! # Layout
//! - `cli`: one file per subcommand (Args + run); `cli::output` is the only place that prints.
//! - `config`: YAML schema, `${VAR}` interpolation, validation, zero-config autodetection.
//! - `catalog`: channels, endpoints, tokens, models -> an immutable routing `Snapshot`.
//! - `routing`: model / alias / tag resolution, filters, strategies -> ordered attempt plan. Pure.
//! - `discover`: model lists (and prices) per (channel, token); the seam where results are persisted.
//! - `tags`: tag extraction from model ids; tag expressions.
//! - `protocol`: wire types, SSE, usage extraction, error shapes, translation, session identity. No I/O.
//! - `upstream`: the one HTTP client, URL + auth per provider, failure classes, health and cooldowns.
//! - `proxy`: the hyper server, request phases (prompt-cache affinity among them), failover loop, streaming pump,
//!   debug headers.
//! - `control`: operations the running server answers with its live state; rebuilding the live catalogue.
//! - `store`: the redb file (tables, batched record writer, control socket, direct-or-socket access).
//! - `keys`: gateway keys (YAML + store rows, hash only), the key table the server authenticates against, the
//!   `router keys` store operations and the spend report.
//! - `live`: live per-request state behind one seam (affinity bindings, gateway-key admission).
//! - `usage`: request records, token fingerprints, cost, the record sink.
//! - `balance`: upstream credit per channel and key, key validity, the seam to the balance history store.
//! - `import`: One-API / New-API databases -> an import plan of store channels (no printing, no store writes).
//! - `crypto`: upstream keys encrypted at rest (AEAD with a master key outside the store).
//! - `probe`: `router test`: endpoint, key and model checks, routed test requests, the report for `serve`'s health.
//! - `error`: user-facing errors and exit codes.

pub mod balance;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod discover;
pub mod error;
pub mod import;
pub mod keys;
pub mod live;
pub mod probe;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod store;
pub mod tags;
pub mod upstream;
pub mod usage;
