//! PostgreSQL for the tests of `store.postgres`: a private database per test on the machine's server
//! ([`TempDb`], dropped at the end), and a TCP relay in front of it that a test can cut and restore
//! ([`Relay`]) to play "PostgreSQL unreachable" without stopping the server other tests use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs `f` with a connection to `url` on a thread of its own (the synchronous client must not run on the
/// test's async threads).
pub fn pg<T: Send + 'static>(url: &str, f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("PostgreSQL answers");
        f(&mut c)
    })
    .join()
    .expect("PostgreSQL helper thread")
}

/// A database of its own on 127.0.0.1:5432, dropped when the value is.
pub struct TempDb {
    pub url: String,
    name: String,
}

impl TempDb {
    /// None (with the reason printed) when PostgreSQL does not answer and `ROUTER_REQUIRE_POSTGRES` is unset.
    pub fn create() -> Option<TempDb> {
        let name = format!("router_t_{:016x}", rand::random::<u64>());
        let n = name.clone();
        let made = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(ADMIN, postgres::NoTls)?;
            c.batch_execute(&format!("CREATE DATABASE {n}"))
        })
        .join()
        .unwrap();
        match made {
            Ok(()) => Some(TempDb { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name }),
            Err(e) if std::env::var_os("ROUTER_REQUIRE_POSTGRES").is_none() => {
                eprintln!(
                    "skipped: PostgreSQL on 127.0.0.1:5432 is not usable ({e}); ROUTER_REQUIRE_POSTGRES is unset"
                );
                None
            }
            Err(e) => panic!("ROUTER_REQUIRE_POSTGRES is set but PostgreSQL on 127.0.0.1:5432 is not usable: {e}"),
        }
    }

    /// The database's URL through `relay`.
    pub fn url_via(&self, relay: &Relay) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", relay.port, self.name)
    }

    /// (records, distinct ids) in the `requests` table.
    pub fn record_counts(&self) -> (i64, i64) {
        pg(&self.url, |c| {
            let r = c.query_one("SELECT count(*), count(DISTINCT id) FROM requests", &[]).unwrap();
            (r.get(0), r.get(1))
        })
    }

    /// Every stored request id, as `router` prints them (32 hex digits).
    pub fn ids(&self) -> Vec<String> {
        pg(&self.url, |c| {
            c.query("SELECT id FROM requests ORDER BY id", &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Vec<u8>>(0).iter().map(|b| format!("{b:02x}")).collect())
                .collect()
        })
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(ADMIN, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A TCP relay 127.0.0.1:port -> PostgreSQL. [`Relay::cut`] closes every relayed connection and refuses new
/// ones (accepted, then closed at once) until [`Relay::restore`].
pub struct Relay {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cut_rx) = watch::channel(0u64);
        let up2 = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect("127.0.0.1:5432").await else { return };
                    let (mut a, mut b) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Relay { port, up, cut, task }
    }

    /// PostgreSQL becomes unreachable: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
