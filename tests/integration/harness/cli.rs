//! One run of the `router` CLI: the real binary with the test defaults (no local probing, no config or store from
//! the developer's environment or home), optionally checked for leaked secrets, with its exit code and output as
//! text.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use super::bin;

/// A `router` command line being built; [`Cli::run`] or [`Cli::run_async`] runs it.
pub struct Cli {
    cmd: Command,
    secrets: Vec<String>,
    /// An empty HOME for the run, so the default config and store (`~/.config/router`, `~/.local/share/router`)
    /// are never the developer's.
    _home: tempfile::TempDir,
}

/// What a run printed, and how it ended.
#[derive(Debug)]
pub struct Out {
    /// The exit code, -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout parsed as JSON, after asserting the run succeeded.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "exit {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl From<Out> for (i32, String, String) {
    fn from(o: Out) -> Self {
        (o.code, o.stdout, o.stderr)
    }
}

impl Default for Cli {
    fn default() -> Cli {
        Cli::new()
    }
}

impl Cli {
    /// `router` with `ROUTER_NO_LOCAL_PROBE=1`, without `ROUTER_CONFIG` / `ROUTER_STORE` / `XDG_*_HOME` from the
    /// environment, and with an empty HOME of its own (a test may set another).
    pub fn new() -> Cli {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.env("ROUTER_NO_LOCAL_PROBE", "1")
            .env("HOME", home.path())
            .env_remove("ROUTER_CONFIG")
            .env_remove("ROUTER_STORE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME");
        Cli { cmd, secrets: Vec::new(), _home: home }
    }

    /// `--config PATH`, ahead of the arguments that follow.
    pub fn config(mut self, path: &Path) -> Cli {
        self.cmd.arg("--config").arg(path);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cli {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Cli {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cli {
        self.cmd.env(key, value);
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Cli {
        self.cmd.envs(vars.iter().copied());
        self
    }

    pub fn env_remove(mut self, key: &str) -> Cli {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// Tables at a fixed width (`ROUTER_TABLE_WIDTH`), so snapshots do not depend on the terminal.
    pub fn table_width(self, columns: u16) -> Cli {
        self.env("ROUTER_TABLE_WIDTH", columns.to_string())
    }

    /// Fails the test when any of `secrets` shows up in stdout or stderr.
    pub fn hiding(mut self, secrets: &[&str]) -> Cli {
        self.secrets.extend(secrets.iter().map(|s| s.to_string()));
        self
    }

    /// Runs to completion, blocking the thread (in an async test, mocks keep answering on the other workers).
    pub fn run(mut self) -> Out {
        let out = self.cmd.output().expect("router runs");
        check(out, &self.secrets)
    }

    /// Runs to completion without blocking the async runtime.
    pub async fn run_async(self) -> Out {
        let out = tokio::process::Command::from(self.cmd).output().await.expect("router runs");
        check(out, &self.secrets)
    }
}

fn check(out: Output, secrets: &[String]) -> Out {
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    };
    for secret in secrets {
        assert!(
            !o.stdout.contains(secret.as_str()) && !o.stderr.contains(secret.as_str()),
            "`{secret}` leaked into the output:\n{}\n{}",
            o.stdout,
            o.stderr
        );
    }
    o
}

/// Runs the router CLI with extra environment and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    Cli::new().args(args).envs(env).run().into()
}
