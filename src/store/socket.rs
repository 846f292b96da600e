//! The control socket: how other processes use a store that a running `router serve` holds.
//!
//! redb locks its file, so while a server runs, subcommands send one JSON line `{"op": NAME, "args": ...}` to
//! `<store>.sock` (mode 0600) and read one JSON line back: `{"ok": value}` or `{"error": {message, hint, code}}`.
//! Operations are types implementing [`Op`]: the same `run` executes in this process ([`Access::Direct`]) or in
//! the server ([`Access::Remote`]), so every command prints the same output either way. Modules add their own
//! operations to the [`Registry`]; operations that need the live server (not just its store) are [`LiveOp`]s,
//! whose handler the server registers, and `on_change` lets the server react to store writes made through the
//! socket.
//! Must not expose anything to other users: the socket is created 0600 and removed on clean shutdown.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{KvTable, Store, StoreError};

/// Largest request or reply line accepted.
const MAX_LINE: u64 = 256 * 1024 * 1024;

/// One operation on the store, runnable here or in the server that holds the store.
pub trait Op: Serialize + DeserializeOwned + Send + 'static {
    /// Wire name; unique across the program.
    const NAME: &'static str;
    /// Whether it changes the store (the server then calls its `on_change` hook with `NAME`).
    const WRITES: bool = false;
    /// Whether it reads request records: the server first waits for records already queued to be committed,
    /// so a script that sent a request and then asks for it sees it.
    const READS_RECORDS: bool = false;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    fn run(self, store: &Store) -> anyhow::Result<Self::Reply>;
}

/// An operation only the running server answers: it needs live state (routing snapshot, health), not only the
/// store. Like [`Op`], typed arguments and reply under one wire name; what it does is the server's handler
/// ([`Registry::add_live`]), and [`Access::run_live`] sends it.
pub trait LiveOp: Serialize + DeserializeOwned + Send + 'static {
    /// Wire name; unique across the program.
    const NAME: &'static str;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

type Handler = Arc<dyn Fn(&Store, Value) -> anyhow::Result<Value> + Send + Sync>;
/// A handler that needs the running server (its live state), not only the store.
type LiveHandler = Arc<dyn Fn(Value) -> BoxFuture<'static, anyhow::Result<Value>> + Send + Sync>;
/// Called in the server after an operation with `WRITES` succeeded, with its name.
pub type OnChange = Arc<dyn Fn(&str) + Send + Sync>;
/// A sentence the server adds to every reply while it has something to say (records pending).
pub type Notice = Arc<dyn Fn() -> Option<String> + Send + Sync>;
/// Returns once the records queued so far are committed (the record writer's flush barrier).
pub type Barrier = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a report waits for queued records before answering with what is committed.
const BARRIER_WAIT: Duration = Duration::from_secs(5);

/// The operations a server answers.
#[derive(Clone, Default)]
pub struct Registry {
    ops: HashMap<&'static str, (Handler, OpFlags)>,
    live: HashMap<&'static str, LiveHandler>,
    on_change: Option<OnChange>,
    notice: Option<Notice>,
    barrier: Option<Barrier>,
}

#[derive(Clone, Copy)]
struct OpFlags {
    writes: bool,
    reads_records: bool,
}

impl Registry {
    /// The store's own operations. Other modules' operations are added by the composition root (`control`).
    pub fn builtin() -> Registry {
        let mut r = Registry::default();
        r.add::<Ping>()
            .add::<KvGet>()
            .add::<KvPut>()
            .add::<KvList>()
            .add::<KvDelete>()
            .add::<RecordsPut>()
            .add::<super::channels::ChannelsApply>()
            .add::<super::pending::RecordsImport>();
        r
    }

    pub fn add<O: Op>(&mut self) -> &mut Self {
        let h: Handler = Arc::new(|store, args| {
            let op: O = serde_json::from_value(args).with_context(|| format!("bad arguments for `{}`", O::NAME))?;
            Ok(serde_json::to_value(op.run(store).map_err(for_users)?)?)
        });
        self.ops.insert(O::NAME, (h, OpFlags { writes: O::WRITES, reads_records: O::READS_RECORDS }));
        self
    }

    /// What operations with `READS_RECORDS` wait for first.
    pub fn barrier(&mut self, barrier: Barrier) -> &mut Self {
        self.barrier = Some(barrier);
        self
    }

    /// Registers what the running server does for a [`LiveOp`].
    pub fn add_live<O, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        O: LiveOp,
        F: Fn(O) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<O::Reply>> + Send + 'static,
    {
        self.insert_live(O::NAME, handler)
    }

    /// Registers a store [`Op`] that the server answers with its live state instead of on the store alone (e.g.
    /// to reload what it holds in memory before answering). Clients still send it with [`Access::run`].
    pub fn add_in_server<O, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        O: Op,
        F: Fn(O) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<O::Reply>> + Send + 'static,
    {
        self.insert_live(O::NAME, handler)
    }

    fn insert_live<A, R, F, Fut>(&mut self, name: &'static str, handler: F) -> &mut Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let h: LiveHandler = Arc::new(move |args| {
            let handler = handler.clone();
            Box::pin(async move {
                let op: A = serde_json::from_value(args).with_context(|| format!("bad arguments for `{name}`"))?;
                Ok(serde_json::to_value(handler(op).await?)?)
            })
        });
        self.live.insert(name, h);
        self
    }

    pub fn on_change(&mut self, hook: OnChange) -> &mut Self {
        self.on_change = Some(hook);
        self
    }

    /// Adds `notice()` (when it says something) to every reply; the client prints it to stderr.
    pub fn notice(&mut self, notice: Notice) -> &mut Self {
        self.notice = Some(notice);
        self
    }

    /// Runs operation `name` with JSON `args` on `store` (or live), as the socket does: every door (the socket,
    /// the admin API) goes through here.
    pub async fn dispatch(&self, store: &Store, name: &str, args: Value) -> anyhow::Result<Value> {
        if let Some((h, flags)) = self.ops.get(name) {
            let (h, s, writes) = (h.clone(), store.clone(), flags.writes);
            if flags.reads_records
                && let Some(barrier) = &self.barrier
                && tokio::time::timeout(BARRIER_WAIT, barrier()).await.is_err()
            {
                tracing::warn!("`{name}`: queued records were not committed within {BARRIER_WAIT:?}; answering anyway");
            }
            let out = tokio::task::spawn_blocking(move || h(&s, args)).await.context("store operation panicked")??;
            // The hook (the server's catalogue rebuild) runs before the answer, so a write made through the
            // socket or the admin API is in force when its caller hears back.
            if writes && let Some(hook) = self.on_change.clone() {
                let name = name.to_string();
                tokio::task::spawn_blocking(move || hook(&name)).await.context("store change hook panicked")?;
            }
            return Ok(out);
        }
        if let Some(h) = self.live.get(name) {
            return h(args).await;
        }
        anyhow::bail!("the running server does not know the operation `{name}` (is it an older router?)")
    }
}

#[derive(Serialize, Deserialize)]
struct WireRequest {
    op: String,
    #[serde(default)]
    args: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    message: String,
    #[serde(default)]
    hint: Option<String>,
    /// 1: the user's mistake; 2: unexpected.
    code: u8,
}

/// One reply line: the operation's result, and the server's notice when it has one.
#[derive(Serialize, Deserialize)]
struct WireAnswer {
    #[serde(flatten)]
    reply: WireReply,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notice: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireReply {
    Ok(Value),
    Error(WireError),
}

fn wire_error(e: &anyhow::Error) -> WireError {
    let c = crate::error::classify(e);
    WireError { message: format!("{e:#}"), hint: c.hint.map(str::to_string), code: c.code }
}

fn from_wire(e: WireError) -> anyhow::Error {
    if e.code == 1 {
        let mut u = crate::error::user(e.message);
        if let Some(h) = e.hint {
            u = u.with_hint(h);
        }
        u.into()
    } else {
        anyhow::anyhow!(e.message)
    }
}

/// A store error the user can act on (PostgreSQL unreachable, a newer schema, ...) becomes a `UserError` with
/// its hint (exit 1), wherever the operation ran.
fn for_users(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<StoreError>() {
        Ok(se) => se.into_cli(),
        Err(e) => e,
    }
}

/// The socket next to a store file: `<store>.sock`.
pub fn socket_path(store_path: &Path) -> PathBuf {
    let mut s = store_path.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// A running control socket. [`SocketServer::shutdown`] stops it and removes the socket file.
pub struct SocketServer {
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SocketServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `<store>.sock` (replacing a stale file left by a killed server) and answers operations on `store`.
pub async fn serve(store: Store, registry: Registry) -> anyhow::Result<SocketServer> {
    let path = socket_path(store.path());
    if path.as_os_str().len() > 100 {
        anyhow::bail!(
            "the control socket path {} is too long for a unix socket; use a shorter --store path",
            path.display()
        );
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!("another process answers on {}", path.display());
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // Bind under a temporary name, restrict it, then move it into place: never visible with wider permissions.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind the control socket {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot create the control socket {}", path.display()))?;
    let (stop, mut stop_rx) = watch::channel(false);
    let registry = Arc::new(registry);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((conn, _)) => {
                        let (store, registry) = (store.clone(), registry.clone());
                        tokio::spawn(async move {
                            if let Err(e) = handle(conn, &store, &registry).await {
                                tracing::debug!("control socket connection: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("control socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    });
    Ok(SocketServer { path, stop, task })
}

async fn handle(conn: tokio::net::UnixStream, store: &Store, registry: &Registry) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let (rd, mut wr) = conn.into_split();
    let mut line = Vec::new();
    tokio::io::BufReader::new(rd.take(MAX_LINE)).read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<WireRequest>(&line) {
        Ok(req) => match registry.dispatch(store, &req.op, req.args).await {
            Ok(v) => WireReply::Ok(v),
            Err(e) => WireReply::Error(wire_error(&e)),
        },
        Err(e) => WireReply::Error(WireError { message: format!("bad control request: {e}"), hint: None, code: 2 }),
    };
    let notice = registry.notice.as_ref().and_then(|n| n());
    let mut out = serde_json::to_vec(&WireAnswer { reply, notice })?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await?;
    Ok(())
}

/// The client side of the control socket (blocking; subcommands need no runtime).
#[derive(Debug, Clone)]
pub struct SocketClient {
    path: PathBuf,
    timeout: Duration,
}

impl SocketClient {
    /// Connects to the server on `socket` and checks it answers.
    pub fn connect(socket: &Path) -> anyhow::Result<SocketClient> {
        let c = SocketClient { path: socket.to_path_buf(), timeout: Duration::from_secs(300) };
        c.call(Ping)?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one operation by name and returns its JSON reply.
    pub fn call_raw(&self, op: &str, args: Value) -> anyhow::Result<Value> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.path)
            .with_context(|| format!("cannot reach the server on {}", self.path.display()))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let mut req = serde_json::to_vec(&WireRequest { op: op.to_string(), args })?;
        req.push(b'\n');
        s.write_all(&req)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut line = Vec::new();
        BufReader::new(std::io::Read::take(&s, MAX_LINE)).read_until(b'\n', &mut line)?;
        if line.is_empty() {
            anyhow::bail!("the server on {} closed the connection without answering", self.path.display());
        }
        let answer = serde_json::from_slice::<WireAnswer>(&line).context("unreadable reply from the server")?;
        // Said once per command: `connect` pings first, and that reply's notice is dropped.
        // Written here, on the client's stderr, so every caller (CLI or script) sees it without `store`
        // knowing the command line.
        if let Some(n) = answer.notice.filter(|_| op != Ping::NAME) {
            let _ = writeln!(std::io::stderr().lock(), "{n}");
        }
        match answer.reply {
            WireReply::Ok(v) => Ok(v),
            WireReply::Error(e) => Err(from_wire(e)),
        }
    }

    pub fn call<O: Op>(&self, op: O) -> anyhow::Result<O::Reply> {
        let v = self.call_raw(O::NAME, serde_json::to_value(op)?)?;
        serde_json::from_value(v).with_context(|| format!("unexpected reply to `{}`", O::NAME))
    }
}

/// How a subcommand reaches the store: the file itself, or the server holding it.
#[derive(Debug)]
pub enum Access {
    Direct(Store),
    Remote(SocketClient),
}

impl Access {
    /// Opens the store file, or, when a running server holds it, connects to that server's control socket.
    /// Waits a little when the file is locked but no socket answers yet (a server starting, or another short
    /// command holding the file).
    pub fn open(path: &Path) -> anyhow::Result<Access> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let socket = socket_path(path);
        loop {
            match Store::open(path) {
                Ok(s) => return Ok(Access::Direct(s)),
                Err(StoreError::Locked { .. }) => {
                    if let Ok(c) = SocketClient::connect(&socket) {
                        return Ok(Access::Remote(c));
                    }
                    if Instant::now() >= deadline {
                        return Err(crate::error::user(format!(
                            "the store {} is in use by another process, and no server answers on {}",
                            path.display(),
                            socket.display()
                        ))
                        .with_hint("wait for the other command to finish, or stop the process holding the file")
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into_cli()),
            }
        }
    }

    /// Like [`Access::open`], but a missing store file is the user's mistake, not a reason to create one.
    pub fn open_existing(path: &Path) -> anyhow::Result<Access> {
        // With PostgreSQL the records are there; the local file only spools.
        if !path.exists() && super::postgres_url().is_none() {
            return Err(crate::error::user(format!("no store at {} (nothing recorded yet)", path.display()))
                .with_hint("`router serve` records usage there; pass --store (or ROUTER_STORE) to read another file")
                .into());
        }
        Access::open(path)
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Access::Remote(_))
    }

    /// Runs an operation here or in the server.
    pub fn run<O: Op>(&self, op: O) -> anyhow::Result<O::Reply> {
        match self {
            Access::Direct(s) => op.run(s).map_err(for_users),
            Access::Remote(c) => c.call(op),
        }
    }

    /// Runs an operation only the live server answers.
    pub fn run_live<O: LiveOp>(&self, op: O) -> anyhow::Result<O::Reply> {
        match self {
            Access::Remote(c) => {
                let v = c.call_raw(O::NAME, serde_json::to_value(op)?)?;
                serde_json::from_value(v).with_context(|| format!("unexpected reply to `{}`", O::NAME))
            }
            Access::Direct(_) => Err(crate::error::user(format!("`{}` needs a running server", O::NAME))
                .with_hint("start `router serve` with this store first")
                .into()),
        }
    }

    pub fn get_json<T: DeserializeOwned>(&self, table: KvTable, key: &str) -> anyhow::Result<Option<T>> {
        match self.run(KvGet { table, key: key.into() })? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_value(v)?)),
        }
    }

    pub fn put_json<T: Serialize + ?Sized>(&self, table: KvTable, key: &str, value: &T) -> anyhow::Result<()> {
        self.run(KvPut { table, key: key.into(), value: serde_json::to_value(value)? })
    }

    pub fn list_json<T: DeserializeOwned>(&self, table: KvTable) -> anyhow::Result<Vec<(String, T)>> {
        self.run(KvList { table })?.into_iter().map(|(k, v)| Ok((k, serde_json::from_value(v)?))).collect()
    }

    pub fn delete(&self, table: KvTable, key: &str) -> anyhow::Result<bool> {
        self.run(KvDelete { table, key: key.into() })
    }
}

/// Liveness and versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping;

#[derive(Debug, Serialize, Deserialize)]
pub struct PingReply {
    pub version: String,
    pub schema: u64,
}

impl Op for Ping {
    const NAME: &'static str = "ping";
    type Reply = PingReply;
    fn run(self, store: &Store) -> anyhow::Result<PingReply> {
        Ok(PingReply { version: env!("CARGO_PKG_VERSION").into(), schema: store.schema_version()? })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KvGet {
    pub table: KvTable,
    pub key: String,
}

impl Op for KvGet {
    const NAME: &'static str = "kv_get";
    type Reply = Option<Value>;
    fn run(self, store: &Store) -> anyhow::Result<Option<Value>> {
        Ok(store.get_json(self.table, &self.key)?)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KvPut {
    pub table: KvTable,
    pub key: String,
    pub value: Value,
}

impl Op for KvPut {
    const NAME: &'static str = "kv_put";
    const WRITES: bool = true;
    type Reply = ();
    fn run(self, store: &Store) -> anyhow::Result<()> {
        Ok(store.put_json(self.table, &self.key, &self.value)?)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KvList {
    pub table: KvTable,
}

impl Op for KvList {
    const NAME: &'static str = "kv_list";
    type Reply = Vec<(String, Value)>;
    fn run(self, store: &Store) -> anyhow::Result<Vec<(String, Value)>> {
        Ok(store.list_json(self.table)?)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KvDelete {
    pub table: KvTable,
    pub key: String,
}

impl Op for KvDelete {
    const NAME: &'static str = "kv_delete";
    const WRITES: bool = true;
    type Reply = bool;
    fn run(self, store: &Store) -> anyhow::Result<bool> {
        Ok(store.delete(self.table, &self.key)?)
    }
}

/// Request records made outside the server's proxy (the routed requests of `router test`), written at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordsPut {
    pub records: Vec<crate::usage::RequestRecord>,
}

impl Op for RecordsPut {
    const NAME: &'static str = "records_put";
    type Reply = usize;
    fn run(self, store: &Store) -> anyhow::Result<usize> {
        store.write_records(&self.records)?;
        Ok(self.records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Serialize, Deserialize)]
    struct Echo(Vec<u32>);

    impl LiveOp for Echo {
        const NAME: &'static str = "echo";
        type Reply = Vec<u32>;
    }

    /// A live operation the server does not know.
    #[derive(Serialize, Deserialize)]
    struct Nope;

    impl LiveOp for Nope {
        const NAME: &'static str = "nope";
        type Reply = ();
    }

    /// An operation that always fails with a user error.
    #[derive(Serialize, Deserialize)]
    struct Refuse;

    impl Op for Refuse {
        const NAME: &'static str = "refuse";
        type Reply = ();
        fn run(self, _: &Store) -> anyhow::Result<()> {
            Err(crate::error::user("refused").with_hint("ask nicely").into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_and_direct_answer_alike_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        // A stale socket file from a killed server is replaced.
        std::fs::write(socket_path(&path), b"").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let mut reg = Registry::builtin();
        reg.add::<Refuse>();
        let c2 = changes.clone();
        reg.on_change(Arc::new(move |_| {
            c2.fetch_add(1, Ordering::SeqCst);
        }));
        reg.add_live(|e: Echo| async move { Ok(e.0) });
        let server = serve(store.clone(), reg).await.unwrap();
        let mode = std::fs::metadata(server.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let access = Access::open(&p).unwrap();
            assert!(access.is_remote());
            access.put_json(KvTable::Channels, "a", &serde_json::json!({"x": 1})).unwrap();
            let got: Option<Value> = access.get_json(KvTable::Channels, "a").unwrap();
            assert_eq!(got.unwrap()["x"], 1);
            assert_eq!(access.list_json::<Value>(KvTable::Channels).unwrap().len(), 1);
            assert_eq!(access.run_live(Echo(vec![1, 2])).unwrap(), vec![1, 2]);
            let e = access.run_live(Nope).unwrap_err();
            assert!(e.to_string().contains("nope"));
            // A user error in the server arrives as a user error with its hint.
            let e = access.run(Refuse).unwrap_err();
            assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{e:#}");
            assert_eq!(crate::error::classify(&e).hint, Some("ask nicely"));
        })
        .await
        .unwrap();
        assert_eq!(changes.load(Ordering::SeqCst), 1);
        let sock = server.path().to_path_buf();
        server.shutdown().await;
        assert!(!sock.exists());
        // The same data directly once the server is gone.
        drop(store);
        let access = Access::open(&path).unwrap();
        assert!(!access.is_remote());
        let got: Option<Value> = access.get_json(KvTable::Channels, "a").unwrap();
        assert_eq!(got.unwrap()["x"], 1);
    }
}
