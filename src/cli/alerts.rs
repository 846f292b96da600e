//! `router alerts test`: send a sample alert to every webhook of `alerts:` and say which answered.

use serde::Serialize;

use super::output;
use crate::alerts::{self, Alert};
use crate::error::{Exit, user};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send a sample alert to each webhook target (exit 1 when any did not accept it).
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Sent {
    target: String,
    format: crate::config::WebhookFormat,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(settings: &crate::settings::Settings, cmd: Command) -> anyhow::Result<()> {
    let Command::Test(args) = cmd;
    let path = settings.config_file().ok_or_else(|| {
        user("no configuration file found").with_hint("alerts are configured under `alerts:` in router.yaml")
    })?;
    let config = settings.yaml()?.ok_or_else(|| user(format!("{} could not be read", path.display())))?;
    let cfg = &config.raw.alerts;
    if cfg.webhooks.is_empty() {
        return Err(user(format!("{} has no alert targets", path.display()))
            .with_hint("add alerts.webhooks: [{url: https://..., format: json | slack}]")
            .into());
    }
    let sample = Alert::sample();
    let results: Vec<Sent> = super::runtime()?.block_on(async {
        let client = crate::upstream::probe_client(cfg.timeout.0);
        let sends = cfg.webhooks.iter().map(|w| {
            let (client, sample) = (&client, &sample);
            async move {
                let r = alerts::deliver(client, w, sample, cfg.timeout.0, cfg.attempts).await;
                Sent { target: alerts::target_name(w), format: w.format, ok: r.is_ok(), error: r.err() }
            }
        });
        futures_util::future::join_all(sends).await
    });
    if args.json {
        output::json(&results)?;
    } else {
        for r in &results {
            match &r.error {
                None => output::line(&format!("ok      {}", r.target)),
                Some(e) => output::line(&format!("failed  {}: {e}", r.target)),
            };
        }
    }
    if results.iter().any(|r| !r.ok) {
        return Err(Exit(1).into());
    }
    Ok(())
}
