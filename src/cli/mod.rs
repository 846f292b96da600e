//! The command line: one file per subcommand, each an `Args` struct and a `run`.
//!
//! Owns the clap definitions (also the source of `completions/` and `man/`) and dispatch. Commands that need no
//! store never open it. `output` is the only module that prints.

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
pub mod tags;
pub mod test;
pub mod usage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Ask every channel's keys which models they reach, and their prices.
    Discover(discover::Args),
    /// List tags, or show the candidates a model name or tag expression routes to.
    #[command(subcommand)]
    Tags(tags::Command),
    /// Gateway keys: create, list with spend, update, disable, revoke, rotate; hash or generate one for the config.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Write shell completions and man pages (used to refresh completions/ and man/).
    #[command(hide = true)]
    Generate(generate::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = Global { config: cli.config, store: cli.store };
    match cli.command {
        Command::Serve(args) => serve::run(&global, args),
        Command::Config(cmd) => config_cmd::run(&global, cmd),
        Command::Balance(cmd) => balance::run(&global, cmd),
        Command::Channels(cmd) => channels::run(&global, cmd),
        Command::Import(cmd) => import::run(&global, cmd),
        Command::Test(args) => test::run(&global, args),
        Command::Usage(args) => usage::run(&global, args),
        Command::Requests(args) => requests::run(&global, args),
        Command::Discover(args) => discover::run(&global, args),
        Command::Tags(cmd) => tags::run(&global, cmd),
        Command::Keys(cmd) => keys::run(&global, cmd),
        Command::Generate(args) => generate::run(args),
    }
}

/// Options every subcommand sees.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub store: Option<PathBuf>,
}

/// A tokio runtime for commands that need one (two worker threads: this tool runs on small machines).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
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
