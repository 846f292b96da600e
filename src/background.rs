//! Where work that outlives a request runs: the server's main runtime, not the serving thread that started it.
//!
//! `proxy::serve` serves connections on one single-threaded runtime per core; each is dropped (cancelling its
//! tasks) once its connections have drained at shutdown. A task a request leaves behind (a record waiting for
//! room in the sink's queue, a budget charge on the shared Redis) must not be lost with it, so it is spawned here:
//! on the runtime `serve` was called from, which lives until the store writer has drained. Owns nothing else;
//! must not be used for work a request waits on (that stays on the request's own thread).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;

static MAIN: OnceLock<Handle> = OnceLock::new();

/// Names the runtime background work runs on (the first call wins: one server per process).
pub fn init(main: Handle) {
    let _ = MAIN.set(main);
}

/// Spawns `work` on the main runtime, or on the current one when no server has named it (tests, one-shot
/// commands); dropped when there is neither.
pub fn spawn<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(main) = MAIN.get() {
        main.spawn(work);
    } else if let Ok(current) = Handle::try_current() {
        current.spawn(work);
    }
}
