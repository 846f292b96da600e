//! `router keys`: gateway keys — generate one, or hash one for `server.keys[].hash` so the config file never holds
//! the plaintext.

use std::io::{IsTerminal, Read};

use super::output;
use crate::error::user;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print `sha256:<hex>` of a gateway key (read from standard input when not given).
    Hash {
        /// The key; prefer standard input so it stays out of shell history.
        key: Option<String>,
    },
    /// Make a new random gateway key and print it with its hash.
    Generate {
        /// Print JSON: {"key": ..., "hash": ...}.
        #[arg(long)]
        json: bool,
    },
}

pub fn hash_line(key: &str) -> String {
    format!("sha256:{}", hex::encode(crate::config::hash_key(key)))
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Hash { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    if std::io::stdin().is_terminal() {
                        output::note("paste the key, then press Enter and Ctrl-D:");
                    }
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(user("no key given").with_hint("echo -n \"$ROUTER_KEY\" | router keys hash").into());
            }
            output::line(&hash_line(key));
        }
        Command::Generate { json } => {
            let bytes: [u8; 24] = rand::random();
            let key = format!("sk-router-{}", hex::encode(bytes));
            let hash = hash_line(&key);
            if json {
                output::json(&serde_json::json!({"key": key, "hash": hash}))?;
            } else {
                output::line(&format!("key:  {key}"));
                output::line(&format!("hash: {hash}"));
                output::note("give the key to the client; put `hash:` (not the key) under server.keys in the config");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_what_the_config_accepts() {
        let line = hash_line("sk-gw");
        let cfg = format!("server:\n  keys:\n    - name: a\n      hash: {line}\n");
        let c = crate::config::parse(std::path::Path::new("t.yaml"), &cfg, &|_| None).unwrap();
        assert_eq!(c.gateway_keys[0].hash, crate::config::hash_key("sk-gw"));
    }
}
