//! [`OutboundFailure`] and [`InboundFailure`]: why an exchange failed, typed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use meshwire_swarm::toolkit::Timeout;
use meshwire_swarm::{DialError, StreamError};

use crate::codec::CodecError;

/// Why one of our requests got no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundFailure {
    /// The peer was not connected and dialing it failed.
    #[error("dial failed: {0}")]
    DialFailure(Arc<DialError>),
    /// No full response within the request timeout. The remote may have handled the
    /// request.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the full response. The remote may have handled the
    /// request.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The remote accepts none of our outbound protocols (or we have none).
    #[error("the remote supports none of the protocols")]
    UnsupportedProtocols,
    /// [`Config::max_outbound_in_flight`](crate::Config::max_outbound_in_flight) requests
    /// were under way; this one was not sent.
    #[error("{limit} requests already under way")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// Our request is over the codec's request limit (nothing was sent), or the response
    /// is over its response limit.
    #[error("message over the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The response does not decode.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Our request could not be encoded.
    #[error("request cannot be encoded: {0}")]
    Encode(String),
    /// The stream could not be opened for another reason (resource manager, the swarm's
    /// stream limits, negotiation).
    #[error("stream: {0}")]
    Stream(StreamError),
    /// The stream failed (a reset by the remote, for instance when it is at its
    /// concurrency limit or dropped our request).
    #[error("stream I/O: {0}")]
    Io(Arc<io::Error>),
    /// We cancelled the request ([`Behaviour::cancel_request`](crate::Behaviour::cancel_request)):
    /// its stream, if it had one, was reset, so the remote reads an error. The remote may
    /// have handled the request.
    #[error("cancelled")]
    Cancelled,
}

/// Why a remote's request got no response from us.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InboundFailure {
    /// Reading the request, the application's answer and writing the response took longer
    /// than the request timeout.
    #[error("not answered within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the response was written.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The application dropped the [`ResponseChannel`](crate::ResponseChannel) without
    /// answering; the remote's stream was reset.
    #[error("the response channel was dropped without a response")]
    ResponseOmission,
    /// The request, or our response, is over the codec's limit for it.
    #[error("message over the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The request does not decode.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Our response could not be encoded.
    #[error("response cannot be encoded: {0}")]
    Encode(String),
    /// The stream failed.
    #[error("stream I/O: {0}")]
    Io(Arc<io::Error>),
}

impl From<Timeout> for OutboundFailure {
    fn from(Timeout(d): Timeout) -> Self {
        OutboundFailure::Timeout(d)
    }
}

impl From<Timeout> for InboundFailure {
    fn from(Timeout(d): Timeout) -> Self {
        InboundFailure::Timeout(d)
    }
}

/// How an exchange ended without its result, before it is told as one side's failure.
#[derive(Debug)]
pub(crate) enum Ended {
    Timeout(Duration),
    ConnectionClosed,
    Io(io::Error),
}

impl From<Ended> for OutboundFailure {
    fn from(e: Ended) -> Self {
        match e {
            Ended::Timeout(d) => OutboundFailure::Timeout(d),
            Ended::ConnectionClosed => OutboundFailure::ConnectionClosed,
            Ended::Io(e) => match CodecError::from_io(&e) {
                Some(CodecError::TooLarge { limit }) => OutboundFailure::TooLarge { limit: *limit },
                Some(CodecError::Malformed(m)) => OutboundFailure::Malformed(m.clone()),
                Some(CodecError::Encode(m)) => OutboundFailure::Encode(m.clone()),
                None => match StreamError::from_io(e) {
                    StreamError::UnsupportedProtocols => OutboundFailure::UnsupportedProtocols,
                    StreamError::Io(e) => OutboundFailure::Io(e),
                    other => OutboundFailure::Stream(other),
                },
            },
        }
    }
}

impl From<StreamError> for OutboundFailure {
    /// A stream request's failure.
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::DialFailed(d) => OutboundFailure::DialFailure(d),
            StreamError::ConnectionClosed(_) => OutboundFailure::ConnectionClosed,
            StreamError::UnsupportedProtocols => OutboundFailure::UnsupportedProtocols,
            StreamError::Io(e) => OutboundFailure::Io(e),
            other => OutboundFailure::Stream(other),
        }
    }
}

impl From<Ended> for InboundFailure {
    fn from(e: Ended) -> Self {
        match e {
            Ended::Timeout(d) => InboundFailure::Timeout(d),
            Ended::ConnectionClosed => InboundFailure::ConnectionClosed,
            Ended::Io(e) => match CodecError::from_io(&e) {
                Some(CodecError::TooLarge { limit }) => InboundFailure::TooLarge { limit: *limit },
                Some(CodecError::Malformed(m)) => InboundFailure::Malformed(m.clone()),
                Some(CodecError::Encode(m)) => InboundFailure::Encode(m.clone()),
                None => InboundFailure::Io(Arc::new(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_become_typed_failures() {
        let too_large = || Ended::Io(CodecError::TooLarge { limit: 9 }.into());
        assert!(matches!(
            OutboundFailure::from(too_large()),
            OutboundFailure::TooLarge { limit: 9 }
        ));
        assert!(matches!(
            InboundFailure::from(too_large()),
            InboundFailure::TooLarge { limit: 9 }
        ));
        let bad = Ended::Io(CodecError::Malformed("x".into()).into());
        assert!(matches!(InboundFailure::from(bad), InboundFailure::Malformed(m) if m == "x"));
        let reset = Ended::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(
            OutboundFailure::from(reset),
            OutboundFailure::Io(e) if e.kind() == io::ErrorKind::ConnectionReset
        ));
        assert!(matches!(
            InboundFailure::from(Ended::Timeout(Duration::from_secs(1))),
            InboundFailure::Timeout(_)
        ));
    }
}
