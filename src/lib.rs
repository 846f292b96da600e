//! router: one local endpoint for many LLM upstream accounts.
//!
//! # Layout
//! - `cli`: one file per subcommand (Args + run); `cli::output` is the only place that prints.
//! - `config`: YAML schema, `${VAR}` interpolation, validation, zero-config channels from the environment.
//! - `settings`: where the configuration, the store and the master key are; the snapshot every command builds.
//! - `catalog`: channels, endpoints, tokens, models -> an immutable routing `Snapshot`.
//! - `routing`: model / alias / tag resolution, filters, strategies -> ordered attempt plan, and its one view. Pure.
//! - `discover`: model lists (and prices) per (channel, token); the seam where results are persisted.
//! - `tags`: tag extraction from model ids; tag expressions.
//! - `protocol`: wire types, SSE, usage extraction, error shapes, translation, session identity. No I/O.
//! - `upstream`: the one HTTP client, URL + auth per provider.
//! - `failure`: one classification of upstream failures (failover, what cools, words, redaction). No I/O.
//! - `proxy`: the hyper server, request phases (prompt-cache affinity among them), failover loop, streaming pump,
//!   debug headers.
//! - `background`: where work a request leaves behind runs (the main runtime, not the serving thread).
//! - `events`: the one event stream (finished requests, cooldowns, recoveries, balances, reloads).
//! - `metrics`: Prometheus metrics counted from the event stream, served at `/metrics`.
//! - `alerts`: webhook alerts watching the event stream (balance, cooling, all candidates failing, budgets).
//! - `control`: the control socket's registry (composition root), live operations, rebuilding the live catalogue.
//! - `channels`: every channel with its origin, and enabling / disabling store channels (CLI and admin API).
//! - `store`: the redb file (tables, batched record writer that keeps records through a failing disk, pending
//!   file, control socket, direct-or-socket access).
//! - `keys`: gateway keys (YAML + store rows, hash only), the key table the server authenticates against, the
//!   `router keys` store operations and the spend report.
//! - `live`: live per-request state behind one seam (cooldowns and latency, affinity bindings, gateway-key
//!   admission, the Redis backend of several instances).
//! - `usage`: request records, token fingerprints, cost, the record sink.
//! - `report`: usage totals and request lists read from the store (store operations).
//! - `balance`: upstream credit per channel and key, key validity, the seam to the balance history store.
//! - `import`: One-API / New-API databases -> an import plan of store channels, and committing it to the store.
//! - `crypto`: upstream keys encrypted at rest (AEAD with a master key outside the store).
//! - `probe`: `router test`: endpoint, key and model checks, routed test requests, the report for `serve`'s health.
//! - `admin`: the admin API (`/admin/v1/`): admin-key auth, the CLI's operations over HTTP, the event stream as SSE.
//! - `telemetry`: OpenTelemetry spans built from finished request records, exported over OTLP/HTTP.
//! - `ui`: the web dashboard at `/ui/` (compiled-in page, admin-key login, session cookies); data via `admin`.
//! - `error`: user-facing errors and exit codes.
//! - `alloc`: the binary's global allocator (mimalloc through its fastest entry points).

pub mod admin;
pub mod alerts;
pub mod alloc;
pub mod background;
pub mod balance;
pub mod catalog;
pub mod channels;
pub mod cli;
pub mod config;
pub mod control;
pub mod crypto;
pub mod discover;
pub mod error;
pub mod events;
pub mod failure;
pub mod http1;
pub mod import;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod probe;
pub mod protocol;
pub mod proxy;
pub mod report;
pub mod routing;
pub mod settings;
pub mod store;
pub mod tags;
pub mod telemetry;
pub mod ui;
pub mod upstream;
pub mod usage;
