//! Where `/metrics` is answered: on the proxy port (behind the gateway keys, when there are any), or on its own
//! listener (`server.metrics_listen`, meant for an internal address; no key asked). What is counted and the
//! exposition text are `crate::metrics`'; this is the server's side of it, so `metrics` need not know the server.

use std::future::Future;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{AppState, ProxyBody, full};

/// The exposition as an HTTP response.
pub fn response(state: &AppState) -> Response<ProxyBody> {
    // Records not yet durable: the channel's queue, or, while the store fails, everything the writer holds (its
    // backlog and pending file include the queue), whichever the writer last reported.
    let pending = state.sink.health().status().pending as usize;
    let mut text = state.metrics.render(&state.health, state.sink.backlog().max(pending));
    if let Some(sh) = &state.shared {
        text = crate::metrics::with_shared_state(text, sh.fallbacks(), !sh.degraded());
    }
    let mut resp = Response::new(full(text));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    resp
}

/// Serves `GET /metrics` (and nothing else) on `listener` until `shutdown` resolves.
pub async fn listen(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let state = state.clone();
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let state = state.clone();
            async move {
                let resp = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                    response(&state)
                } else {
                    let mut r = Response::new(full("only GET /metrics is served here\n"));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
