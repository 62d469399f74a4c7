//! The stream exchanges, one future each: ours (write the request, close, read the
//! response) and a remote's in two steps (read the request; then wait for the application's
//! answer, write it and close). Each races its deadline and its connection's closing, and
//! resets its stream when it fails, so the remote reads an error rather than an end of
//! stream it could take for an empty message.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::AsyncWriteExt;
use meshwire_swarm::Stream;
use meshwire_transport::Connection;

use crate::codec::{Codec, CodecError};
use crate::error::{Ended, InboundFailure, OutboundFailure};

/// `timeout` from now, or a moment too far away to matter if that overflows.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Runs `fut` until `deadline`, or until `connection` closes, whichever comes first. An
/// I/O error (not a codec's) on a connection that has closed is told as the closing, and
/// one seen past the deadline as the timeout.
async fn run<T>(
    deadline: Instant,
    timeout: Duration,
    connection: Option<&Connection>,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, Ended> {
    let closed = async {
        match connection {
            Some(c) => {
                c.closed().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        r = tokio::time::timeout_at(deadline.into(), fut) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let codec = CodecError::from_io(&e).is_some();
                if !codec && connection.is_some_and(|c| c.close_reason().is_some()) {
                    Err(Ended::ConnectionClosed)
                } else if !codec && Instant::now() >= deadline {
                    // Failed past its deadline (the remote gave up at its own): too late.
                    Err(Ended::Timeout(timeout))
                } else {
                    Err(Ended::Io(e))
                }
            }
            Err(_) => Err(Ended::Timeout(timeout)),
        },
        () = closed => Err(Ended::ConnectionClosed),
    }
}

/// Our request on `stream`: the response, or why there is none. A message on `cancel`
/// ends it at once with [`OutboundFailure::Cancelled`] (the sender dropped does not).
pub(crate) async fn outbound<C: Codec>(
    mut codec: C,
    protocol: C::Protocol,
    mut stream: Stream,
    request: C::Request,
    timeout: Duration,
    connection: Option<Connection>,
    cancel: oneshot::Receiver<()>,
) -> Result<C::Response, OutboundFailure> {
    let cancelled = async {
        if cancel.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let exchange = async {
        codec.write_request(&protocol, &mut stream, request).await?;
        stream.close().await?;
        codec.read_response(&protocol, &mut stream).await
    };
    let result = tokio::select! {
        biased;
        () = cancelled => Err(OutboundFailure::Cancelled),
        r = run(deadline(timeout), timeout, connection.as_ref(), exchange) => r.map_err(Into::into),
    };
    if result.is_err() {
        stream.reset();
    }
    result
}

/// A remote's request, read from `stream` (handed back for the response).
pub(crate) async fn read_request<C: Codec>(
    mut codec: C,
    protocol: C::Protocol,
    mut stream: Stream,
    (deadline, timeout): (Instant, Duration),
    connection: Option<Connection>,
) -> Result<(C::Request, Stream), InboundFailure> {
    let read = codec.read_request(&protocol, &mut stream);
    match run(deadline, timeout, connection.as_ref(), read).await {
        Ok(request) => Ok((request, stream)),
        Err(e) => {
            stream.reset();
            Err(e.into())
        }
    }
}

/// Waits for the application's response to a remote's request, writes it and closes the
/// stream; a dropped channel resets the stream ([`InboundFailure::ResponseOmission`]).
pub(crate) async fn respond<C: Codec>(
    mut codec: C,
    protocol: C::Protocol,
    mut stream: Stream,
    response: oneshot::Receiver<C::Response>,
    (deadline, timeout): (Instant, Duration),
    connection: Option<Connection>,
) -> Result<(), InboundFailure> {
    let exchange = async {
        let Ok(response) = response.await else {
            return Ok(false);
        };
        codec
            .write_response(&protocol, &mut stream, response)
            .await?;
        stream.close().await?;
        Ok(true)
    };
    let result = run(deadline, timeout, connection.as_ref(), exchange).await;
    match result {
        Ok(true) => Ok(()),
        Ok(false) => {
            stream.reset();
            Err(InboundFailure::ResponseOmission)
        }
        Err(e) => {
            stream.reset();
            Err(e.into())
        }
    }
}
