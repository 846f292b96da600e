//! A running `router serve`: the real binary on 127.0.0.1:0, found through the address it prints, with its stdout
//! collected and its stderr in a file. Either on a fresh temp directory with a YAML text ([`Router::start`]) or on
//! a config and store the test laid out itself ([`Router::serve`]), so restarts can share one store; or with no
//! config at all ([`Router::zero_config`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{bin, run_cli};

pub struct Router {
    pub child: Child,
    pub addr: SocketAddr,
    /// None in zero-config mode.
    config: Option<PathBuf>,
    store: PathBuf,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
    /// The temp directory of [`Router::start`]; removed when the router is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl Router {
    /// Starts the router with `config` as its YAML and a temp store.
    pub fn start(config: &str) -> Router {
        Self::start_with(config, &[], &[])
    }

    /// [`Router::start`] with extra `serve` arguments and environment.
    pub fn start_with(config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("router.yaml");
        std::fs::write(&cfg, config).unwrap();
        let store = dir.path().join("router.redb");
        let mut router = Self::spawn(dir.path(), Some(&cfg), &store, extra_args, env)
            .unwrap_or_else(|e| panic!("router did not start:\n{e}"));
        router._dir = Some(dir);
        router
    }

    /// Starts `router serve` with `config` on `store`, its stderr in `dir`; panics with its stderr if it does not
    /// come up.
    pub fn serve(dir: &Path, config: &Path, store: &Path) -> Router {
        Self::try_serve(dir, config, store).unwrap_or_else(|e| panic!("router did not start: {e}"))
    }

    /// [`Router::serve`], returning the server's stderr when it does not come up.
    pub fn try_serve(dir: &Path, config: &Path, store: &Path) -> Result<Router, String> {
        Self::spawn(dir, Some(config), store, &[], &[])
    }

    /// `router serve` without a config file, in `home` (its HOME and working directory, the store inside) with
    /// nothing of the test's environment but PATH: what zero-config finds is only what `env` points it at.
    pub fn zero_config(home: &Path, env: &[(&str, &str)]) -> Router {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(home.join("router.redb"))
            .current_dir(home)
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ROUTER_LOG", "info")
            .envs(env.iter().copied());
        Self::launch(cmd, home, None, &home.join("router.redb")).unwrap_or_else(|e| panic!("router did not start: {e}"))
    }

    fn spawn(
        dir: &Path,
        config: Option<&Path>,
        store: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Router, String> {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--store")
            .arg(store)
            .args(extra_args)
            .env("ROUTER_NO_LOCAL_PROBE", "1")
            .env("ROUTER_LOG", "info")
            .env_remove("ROUTER_CONFIG")
            .env_remove("ROUTER_STORE")
            .envs(env.iter().copied());
        Self::launch(cmd, dir, config, store)
    }

    /// Runs `cmd` (a `serve` command line) with its stderr in a file in `dir`, and waits for the address it prints.
    fn launch(mut cmd: Command, dir: &Path, config: Option<&Path>, store: &Path) -> Result<Router, String> {
        // One stderr file per server started in `dir`, so a restart keeps the first one's log.
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("serve-{n}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
        let mut child = cmd.spawn().expect("router starts");
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines2 = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on http://").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(addr.trim().to_string());
                }
                lines2.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => Ok(Router {
                child,
                addr: addr.parse().unwrap(),
                config: config.map(Path::to_path_buf),
                store: store.to_path_buf(),
                stdout_lines: lines,
                stderr_path,
                _dir: None,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&stderr_path).unwrap_or_default())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.clone().expect("the router was started with a config file")
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.clone()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.stdout_lines.lock().unwrap().join("\n")
    }

    /// The request records the server has committed, newest first (via the control socket).
    pub fn records(&self) -> Vec<serde_json::Value> {
        let store = self.store_path();
        let (code, out, err) =
            run_cli(&["requests", "--json", "--limit", "1000", "--store", store.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "router requests failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        match v {
            serde_json::Value::Array(a) => a,
            other => other["requests"].as_array().cloned().unwrap_or_default(),
        }
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30)).expect("router exits after SIGTERM")
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10)).expect("router dies after SIGKILL");
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
