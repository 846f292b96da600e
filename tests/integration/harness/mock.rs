//! Programmable mock upstreams on 127.0.0.1:0: a handler answers each request with a [`Reply`], and every request
//! is recorded for the test to inspect. The only HTTP server the tests run besides `router` itself.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// What the mock answers.
pub enum Reply {
    Json(u16, serde_json::Value),
    /// Status, extra headers, raw body.
    Raw(u16, Vec<(&'static str, String)>, String),
    /// An SSE body sent in one go (as separate chunks, one per event).
    Sse(Vec<String>),
    /// A body fed by the test: each item is a chunk; an `Err` cuts the connection.
    Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>),
    /// Never answers.
    Hang,
    /// Answers after a delay (slowness to be measured, not a way to wait for something).
    After(std::time::Duration, Box<Reply>),
}

impl Reply {
    /// `body` as it is, labelled `application/json` (whether or not it is JSON).
    pub fn json_text(status: u16, body: impl Into<String>) -> Reply {
        Reply::Raw(status, vec![("content-type", "application/json".into())], body.into())
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct Mock {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    /// A mock that answers its one request with a body the test feeds through the returned sender (up to
    /// `capacity` chunks queued; an `Err` cuts the connection). A second request panics the handler.
    pub async fn one_stream(capacity: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Mock) {
        let (tx, rx) = mpsc::channel(capacity);
        let rx = Mutex::new(Some(rx));
        let mock = Mock::start(move |_, _| Reply::Channel(rx.lock().unwrap().take().expect("one stream"))).await;
        (tx, mock)
    }

    /// Starts a mock whose `handler` gets each request and its 0-based index.
    pub async fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let handler = handler.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let reqs = reqs.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let n = {
                                let mut r = reqs.lock().unwrap();
                                r.push(rec.clone());
                                r.len() - 1
                            };
                            let reply = handler(&rec, n);
                            Ok::<_, Infallible>(render(reply).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Mock { addr, requests, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// OpenAI-style base URL (with /v1).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Anthropic-style base URL (host root).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests.lock().unwrap().last().cloned().expect("a request reached the mock")
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

type MockBody = BoxBody<Bytes, std::io::Error>;

async fn render(mut reply: Reply) -> Response<MockBody> {
    while let Reply::After(delay, then) = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    let full = |s: String| Full::new(Bytes::from(s)).map_err(|never| match never {}).boxed();
    match reply {
        Reply::Json(status, v) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-request-id", "req_mock")
            .body(full(v.to_string()))
            .unwrap(),
        Reply::Raw(status, headers, body) => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(full(body)).unwrap()
        }
        Reply::Sse(events) => {
            let chunks: VecDeque<Result<Frame<Bytes>, std::io::Error>> =
                events.into_iter().map(|e| Ok(Frame::data(Bytes::from(e)))).collect();
            let stream = futures_util::stream::iter(chunks);
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(stream)))
                .unwrap()
        }
        Reply::Channel(rx) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item.map(Frame::data), rx))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BoxBody::new(StreamBody::new(stream)))
                .unwrap()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::After(..) => unreachable!("unwrapped above"),
    }
}

/// A port on which nothing listens.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
