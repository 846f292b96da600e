//! A full or read-only disk loses no usage record (issue 21), end to end through the real `router serve`: the
//! store sits on a small tmpfs the test mounts, is filled under load, then grown or made writable again, and
//! every served request must be in the store. Also SIGTERM while the disk is full, and `router store
//! import-pending`. Needs root (mount); without it each test prints why it skips. The same state machine is
//! covered without root by the writer's unit tests (a fault-injecting redb backend).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Router, Upstream, eventually, run_cli};

fn cli(args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[])
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "3m") at `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if unsafe_geteuid() != 0 {
            return Err("not running as root (mounting a small tmpfs needs it)".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir: dir.to_path_buf() })
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(&self.dir).status().unwrap();
        assert!(st.success(), "remount,{opts} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

macro_rules! tmpfs_or_skip {
    ($dir:expr, $size:expr) => {
        match Tmpfs::mount($dir, $size) {
            Ok(t) => t,
            Err(why) => {
                let name = std::thread::current().name().unwrap_or("this test").to_string();
                eprintln!("skipping {name}: {why}");
                return;
            }
        }
    };
}

/// Fills the file system that holds `dir` until only about `room` bytes are free (a filler file beside the
/// store), so the records that follow fill it whatever their stored size (binary records are a fraction of
/// the JSON ones a 3 MB disk was sized for).
fn fill_leaving(dir: &Path, room: u64) {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    while let Ok(n) = f.write(&chunk) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    f.set_len(written.saturating_sub(room)).unwrap();
}

/// Starts `router serve` (through `wrapper`, if any) with its store on `dir/disk` and a config from [`config`].
fn serve(dir: &Path, upstream: &Upstream, extra_store: &str, wrapper: &[&str]) -> (Router, PathBuf) {
    let cfg = config(dir, upstream, extra_store);
    let store = dir.join("disk/router.redb");
    let server =
        Router::try_serve_via(wrapper, dir, &cfg, &store).unwrap_or_else(|e| panic!("router did not start: {e}"));
    (server, store)
}

fn config(dir: &Path, upstream: &Upstream, extra_store: &str) -> PathBuf {
    let yaml = format!(
        r#"
server:
  grace_period: 2s
store:
  pending_dir: {pending}
{extra_store}
channels:
  - name: main
    protocol: openai
    models: [gpt-test]
    base_url: {base}
    keys: [{{name: alpha, key: sk-alpha-SECRET-1}}]
"#,
        pending = dir.join("pending").display(),
        base = upstream.base_url(),
    );
    let p = dir.join("router.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// Sends `n` chat requests to `server` (its base URL), `concurrency` at a time; returns how many got a 200.
async fn load(server: String, n: usize, concurrency: usize) -> usize {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let url = format!("{server}/v1/chat/completions");
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        let mine = n / concurrency + usize::from(w < n % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..mine {
                let resp = client
                    .post(&url)
                    .json(&serde_json::json!({"model": "gpt-test", "stream": i % 3 == 0,
                        "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let _ = resp.bytes().await.unwrap();
                ok += usize::from(status == 200);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

async fn health(server: &Router) -> Value {
    reqwest::get(server.url("/health")).await.unwrap().json().await.unwrap()
}

async fn wait_health(server: &Router, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = health(server).await;
        if f(&h) {
            return h;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {h}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (30 s at most) until the store holds `n` records (a request's record may reach the writer just after
/// its client saw the end of the response), then returns (records, requests counted by the daily rollups).
async fn stored_once(store: &Path, n: usize) -> (usize, u64) {
    eventually(Duration::from_secs(30), || stored(store).0 >= n).await;
    stored(store)
}

/// (records, requests counted by the daily rollups), read with the CLI (socket or file).
fn stored(store: &Path) -> (usize, u64) {
    let s = store.to_str().unwrap();
    let (code, out, err) = cli(&["requests", "--json", "--limit", "100000", "--store", s]);
    assert_eq!(code, 0, "router requests failed: {err}");
    let recs = serde_json::from_str::<Vec<Value>>(&out).unwrap().len();
    let (code, out, err) = cli(&["usage", "--json", "--since", "7d", "--store", s]);
    assert_eq!(code, 0, "router usage failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let rolled = v["rows"].as_array().unwrap().iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    (recs, rolled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_load_loses_no_record_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = tmpfs_or_skip!(&dir.path().join("disk"), "3m");
    let upstream = Upstream::start().await;
    // A small memory bound, so the pending file is used too.
    let (mut server, store) = serve(dir.path(), &upstream, "  max_pending_records: 1000", &[]);
    fill_leaving(&dir.path().join("disk"), 256 << 10);

    assert_eq!(load(server.url(""), 6000, 8).await, 6000, "every request is served while the disk fills");
    let h = wait_health(&server, "degraded", |h| h["status"] == "degraded").await;
    let reason = h["records"]["reason"].as_str().unwrap().to_string();
    assert!(h["records"]["pending"].as_u64().unwrap() > 0, "{h}");
    // CLI queries through the socket say records are pending.
    let (_, _, err) = cli(&["requests", "--store", store.to_str().unwrap()]);
    assert!(err.contains("request record(s) are pending"), "{err}");

    disk.remount("size=50m");
    wait_health(&server, "healthy again", |h| h["status"] == "ok" && h["records"]["pending"] == 0).await;
    assert_eq!(load(server.url(""), 200, 8).await, 200);
    assert_eq!(stored_once(&store, 6200).await, (6200, 6200), "6,200 served, 6,200 recorded, each rolled up once");

    let log = server.stderr();
    assert_eq!(log.matches("usage store cannot be written").count(), 1, "logged once, not per retry:\n{log}");
    assert_eq!(log.matches("usage store writable again").count(), 1, "{log}");
    assert!(reason.to_lowercase().contains("space") || reason.contains("I/O"), "{reason}");
    assert!(server.stop().success());
    assert!(
        server.stdout().contains("6200 request records saved")
            || server.stderr().contains("6200 request records saved")
    );
    assert!(std::fs::read_dir(dir.path().join("pending")).map(|d| d.count()).unwrap_or(0) == 0, "pending file removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_disk_is_full_writes_a_pending_file_that_import_pending_saves() {
    let dir = tempfile::tempdir().unwrap();
    let disk = tmpfs_or_skip!(&dir.path().join("disk"), "3m");
    let upstream = Upstream::start().await;
    let (mut server, store) = serve(dir.path(), &upstream, "", &[]);
    fill_leaving(&dir.path().join("disk"), 256 << 10);
    assert_eq!(load(server.url(""), 5000, 8).await, 5000);
    wait_health(&server, "degraded", |h| h["status"] == "degraded").await;

    assert!(server.stop().success(), "a clean exit even with records unsaved");
    let out = format!("{}\n{}", server.stdout(), server.stderr());
    let line = out.lines().find(|l| l.contains("could not be saved")).unwrap_or_else(|| panic!("{out}"));
    let file = PathBuf::from(line.rsplit("they are in ").next().unwrap().trim());
    assert!(file.starts_with(dir.path().join("pending")), "{line}");
    let unsaved: usize = line.split("store: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(unsaved > 0);
    let saved_before: usize = stored(&store).0;
    assert_eq!(saved_before + unsaved, 5000, "{out}");

    disk.remount("size=50m");
    // The next start reminds of the file; importing goes through that server's control socket.
    let (mut again, _) = serve(dir.path(), &upstream, "", &[]);
    assert!(again.stderr().contains("holds request records an earlier run could not save"), "{}", again.stderr());
    let (code, imported, err) =
        cli(&["store", "import-pending", file.to_str().unwrap(), "--store", store.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(imported.contains(&format!("{unsaved} request records saved")), "{imported}");
    assert!(!file.exists(), "the imported file is removed");
    assert_eq!(stored_once(&store, 5000).await, (5000, 5000));
    assert!(again.stop().success());
}

/// A file that cannot be written makes the store fail only when it is opened again (an open file stays
/// writable whatever its mode; Linux refuses to remount read-only while it is open for writing). So: fill the
/// disk (the writer then reopens before each retry), make the file read-only for the server's user, give space
/// back: still degraded, now for the permission; make it writable: every record arrives. The server runs as
/// `nobody`, since root ignores file modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_that_cannot_be_written_loses_no_record() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = tmpfs_or_skip!(&dir.path().join("disk"), "3m");
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    if Command::new(nobody[0]).args(&nobody[1..]).arg("true").status().map(|s| !s.success()).unwrap_or(true) {
        eprintln!("skipping: setpriv cannot run a process as nobody");
        return;
    }
    std::os::unix::fs::chown(dir.path().join("disk"), Some(65534), Some(65534)).unwrap();
    std::fs::create_dir(dir.path().join("pending")).unwrap();
    std::os::unix::fs::chown(dir.path().join("pending"), Some(65534), Some(65534)).unwrap();
    let upstream = Upstream::start().await;
    let (mut server, store) = serve(dir.path(), &upstream, "", &nobody);
    fill_leaving(&dir.path().join("disk"), 256 << 10);

    assert_eq!(load(server.url(""), 5000, 8).await, 5000);
    wait_health(&server, "degraded", |h| h["status"] == "degraded").await;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o400)).unwrap();
    disk.remount("size=50m");
    let h = wait_health(&server, "degraded for the permission", |h| {
        h["records"]["reason"].as_str().is_some_and(|r| r.contains("ermission denied"))
    })
    .await;
    assert_eq!(h["status"], "degraded");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_health(&server, "healthy again", |h| h["status"] == "ok" && h["records"]["pending"] == 0).await;
    assert_eq!(stored_once(&store, 5000).await, (5000, 5000));
    assert!(server.stop().success());
}

/// The last resort: memory is at its bound and the pending file's disk is full as well. New requests then wait
/// at their end (back-pressure) instead of losing records, `/health` says so, and everything arrives once the
/// store has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_pending_file_cannot_grow_either_requests_wait_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let disk = tmpfs_or_skip!(&dir.path().join("disk"), "3m");
    let _pending_disk = tmpfs_or_skip!(&dir.path().join("pending"), "256k");
    let upstream = Upstream::start().await;
    let (mut server, store) = serve(dir.path(), &upstream, "  max_pending_records: 500", &[]);
    fill_leaving(&dir.path().join("disk"), 256 << 10);
    let load_task = tokio::spawn(load(server.url(""), 6000, 8));
    let h = wait_health(&server, "holding requests", |h| h["records"]["holding_requests"] == true).await;
    assert_eq!(h["status"], "degraded");
    assert!(!load_task.is_finished(), "requests wait while no record can be kept");
    disk.remount("size=50m");
    assert_eq!(load_task.await.unwrap(), 6000, "every held request completes");
    wait_health(&server, "healthy again", |h| h["status"] == "ok" && h["records"]["pending"] == 0).await;
    assert_eq!(stored_once(&store, 6000).await, (6000, 6000));
    assert_eq!(std::fs::read_dir(dir.path().join("pending")).unwrap().count(), 0, "pending file drained and removed");
    assert!(server.stop().success());
}
