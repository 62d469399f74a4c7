//! The HTTP server of `--metrics <ip:port>`: `/metrics` (Prometheus text), `/` (the status
//! page, `status.html`, which renders `/status.json` and refreshes itself), `/status.json`.
//! At most [`MAX_CONNECTIONS`] at once, each for at most [`CONNECTION_TIMEOUT`], request
//! heads bounded by hyper's 16 KiB buffer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::status::Status;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection is closed after this long, whatever it is doing.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// hyper's read buffer (bounds a request's head).
const MAX_BUF: usize = 16 * 1024;

/// The status page.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// Where the server gets what it serves.
pub trait Source: Send + Sync + 'static {
    /// A fresh snapshot, or why there is none.
    fn status(&self) -> impl std::future::Future<Output = Result<Status, String>> + Send;
    /// The metrics text (after a snapshot updated the gauges).
    fn metrics(&self, status: Option<&Status>) -> String;
    /// The page's refresh period in milliseconds.
    fn refresh_ms(&self) -> u64;
}

/// The pause after a failed accept (EMFILE, ENFILE, ...) before the next.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Binds `addr` and serves in the background; returns the bound address.
///
/// # Errors
///
/// The bind's error.
pub async fn serve<S: Source>(addr: SocketAddr, source: Arc<S>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: retrying at once would spin a core.
                    tracing::debug!("http: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "http: {MAX_CONNECTIONS} connections open, refusing");
                continue;
            };
            let source = source.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, source.clone()));
                let conn = http1::Builder::new()
                    .max_buf_size(MAX_BUF)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, "http: {e}"),
                    Err(_) => tracing::debug!(%peer, "http: connection timed out"),
                }
                drop(slot);
            });
        }
    });
    Ok(local)
}

fn reply(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer<S: Source>(
    req: Request<Incoming>,
    source: Arc<S>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            let status = source.status().await.ok();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                source.metrics(status.as_ref()),
            )
        }
        "/status.json" => match source.status().await {
            Ok(s) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&s).unwrap_or_default(),
            ),
            Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", e),
        },
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            STATUS_PAGE.replace("__REFRESH_MS__", &source.refresh_ms().to_string()),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}
