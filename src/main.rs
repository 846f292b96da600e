//! The `router` binary: parse the command line, run it, map the outcome to an exit code.
//! Exit codes: 0 ok, 1 user or input error, 2 unexpected error, 3 "below threshold" (balance check).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-thread heaps, so the request path's many small allocations take no shared lock (glibc's arenas
/// cost ~17% more CPU per proxied request here; bench/analysis.md), called through its fastest entry points
/// (`router::alloc`). Built to commit arena memory as it is used (`.cargo/config.toml`) and to give empty pages
/// back at once (`control::tune_allocator`), so an idle router keeps the RSS it needs.
#[global_allocator]
static GLOBAL: router::alloc::Mimalloc = router::alloc::Mimalloc;

fn main() -> ExitCode {
    router::control::tune_allocator();
    let cli = router::cli::Cli::parse();
    let default_level = if matches!(cli.command, router::cli::Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROUTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    match router::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(code) = e.downcast_ref::<router::error::Exit>() {
                return ExitCode::from(code.0);
            }
            let class = router::error::classify(&e);
            eprintln!("error: {e:#}");
            if let Some(h) = class.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(class.code)
        }
    }
}
