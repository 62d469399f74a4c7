//! The HTTP server of `--metrics <ip:port>`: `/metrics` (Prometheus text), `/` (the status
//! page, `status.html`, which renders `/status.json` and refreshes itself), `/status.json`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::status::Status;

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

/// Binds `addr` and serves in the background; returns the bound address.
///
/// # Errors
///
/// The bind's error.
pub async fn serve<S: Source>(addr: SocketAddr, source: Arc<S>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let source = source.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, source.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("http: {e}");
                }
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
