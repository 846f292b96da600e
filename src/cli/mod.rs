//! The command line: one file per subcommand, each an `Args` struct and a `run`.
//!
//! Owns the clap definitions (also the source of `completions/` and `man/`) and dispatch. The global flags become
//! a `settings::Settings`, where every command finds its configuration, store and snapshot; subcommand files do
//! not call each other (what two of them share is here or in the library). Commands that need no store never
//! open it. `output` is the only module that prints.

pub mod alerts;
pub mod args;
pub mod balance;
pub mod channels;
pub mod config_cmd;
pub mod discover;
pub mod generate;
pub mod import;
pub mod keys;
pub mod output;
pub mod requests;
pub mod serve;
pub mod store_cmd;
pub mod tags;
pub mod test;
pub mod usage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::catalog::Snapshot;
use crate::settings::Settings;

/// One local endpoint for many LLM upstream accounts: an OpenAI- and Anthropic-compatible proxy with routing,
/// failover and exact per-key usage.
#[derive(Debug, Parser)]
#[command(name = "router", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $ROUTER_CONFIG, ./router.yaml, ~/.config/router/config.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Store file (default: $ROUTER_STORE, store.path, ~/.local/share/router/router.redb).
    #[arg(long, global = true, value_name = "FILE")]
    pub store: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(serve::Args),
    /// Check and summarise the configuration.
    #[command(subcommand)]
    Config(config_cmd::Command),
    /// Upstream credit per channel and key.
    #[command(subcommand)]
    Balance(balance::Command),
    /// List, show, add, enable, disable and remove channels (store channels; YAML ones read-only).
    #[command(subcommand)]
    Channels(channels::Command),
    /// Import channels from another gateway's database.
    #[command(subcommand)]
    Import(import::Command),
    /// Check endpoints, keys, models and routes end to end (exit 1 when anything failed).
    Test(test::Args),
    /// Token and cost totals from the store, grouped by day, channel, endpoint, token, model or key.
    Usage(usage::Args),
    /// Recent request records; `requests show ID` for one with every attempt.
    Requests(requests::Args),
    /// Store maintenance: save the records a server could not write (`store import-pending FILE`).
    #[command(subcommand)]
    Store(store_cmd::Command),
    /// Ask every channel's keys which models they reach, and their prices.
    Discover(discover::Args),
    /// List tags, or show the candidates a model name or tag expression routes to.
    #[command(subcommand)]
    Tags(tags::Command),
    /// Gateway keys: create, list with spend, update, disable, revoke, rotate; hash or generate one for the config.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Webhook alerts: send a sample to each target.
    #[command(subcommand)]
    Alerts(alerts::Command),
    /// Write shell completions and man pages (used to refresh completions/ and man/).
    #[command(hide = true)]
    Generate(generate::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = Settings::new(cli.config, cli.store);
    match cli.command {
        Command::Serve(args) => serve::run(&global, args),
        Command::Config(cmd) => config_cmd::run(&global, cmd),
        Command::Balance(cmd) => balance::run(&global, cmd),
        Command::Channels(cmd) => channels::run(&global, cmd),
        Command::Import(cmd) => import::run(&global, cmd),
        Command::Test(args) => test::run(&global, args),
        Command::Usage(args) => usage::run(&global, args),
        Command::Requests(args) => requests::run(&global, args),
        Command::Store(cmd) => store_cmd::run(&global, cmd),
        Command::Discover(args) => discover::run(&global, args),
        Command::Tags(cmd) => tags::run(&global, cmd),
        Command::Keys(cmd) => keys::run(&global, cmd),
        Command::Alerts(cmd) => alerts::run(&global, cmd),
        Command::Generate(args) => generate::run(args),
    }
}

/// A tokio runtime for commands that need one (two worker threads: this tool runs on small machines).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Checks `--channel` names against the snapshot: an unknown one is a user error naming the closest.
pub fn check_channels(snap: &Snapshot, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if snap.channel(n).is_none() {
            let known: Vec<&str> = snap.channels.iter().map(|c| &*c.name).collect();
            let close = crate::tags::closest(n, known.iter().copied(), 3);
            let hint = if known.is_empty() {
                "no channels are configured".to_string()
            } else if close.is_empty() {
                format!("channels: {}", known.join(", "))
            } else {
                format!("did you mean {}?", close.join(", "))
            };
            return Err(crate::error::user(format!("no channel named `{n}`")).with_hint(hint).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_serve_flags() {
        let cli = Cli::try_parse_from(["router", "serve", "--listen", "127.0.0.1:0", "--allow-open"]).unwrap();
        match cli.command {
            Command::Serve(a) => {
                assert_eq!(a.listen.as_deref(), Some("127.0.0.1:0"));
                assert!(a.allow_open);
            }
            c => panic!("{c:?}"),
        }
    }
}
