//! Why connections end ([`CloseReason`]) and why operations on them fail ([`ConnectionError`]).

use thiserror::Error;

use crate::multistream::NegotiationError;

/// Application close code meshwire sends when a connection is closed on purpose.
pub const CLOSE_CODE_NORMAL: u32 = 0;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseReason {
    /// This side closed it, with an application code and reason.
    #[error("closed locally (code {code}): {reason}")]
    Local {
        /// Application error code.
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// The remote closed it, with an application code and reason.
    #[error("closed by peer (code {code}): {reason}")]
    Remote {
        /// Application error code.
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// Nothing was heard from the peer within the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The peer reset the connection (stateless reset).
    #[error("reset by peer")]
    Reset,
    /// The transport failed (protocol violation, version mismatch, endpoint shut down, ...).
    #[error("transport error: {0}")]
    Transport(String),
}

impl From<quinn::ConnectionError> for CloseReason {
    fn from(e: quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match e {
            E::ApplicationClosed(c) => CloseReason::Remote {
                code: u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            E::LocallyClosed => CloseReason::Local {
                code: CLOSE_CODE_NORMAL,
                reason: String::new(),
            },
            E::TimedOut => CloseReason::TimedOut,
            E::Reset => CloseReason::Reset,
            other => CloseReason::Transport(other.to_string()),
        }
    }
}

/// Errors of stream and datagram operations on a connection.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The peer refuses more streams right now (its stream limit is reached).
    #[error("stream limit reached")]
    StreamLimit,
    /// Datagrams are not supported by this connection or the peer.
    #[error("datagrams are not supported on this connection")]
    DatagramsUnsupported,
    /// The datagram is larger than the path allows.
    #[error("datagram too large (max {max} bytes)")]
    DatagramTooLarge {
        /// Largest datagram the connection can carry now.
        max: usize,
    },
    /// Protocol negotiation on a new stream failed.
    #[error("negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// Negotiation did not finish in time.
    #[error("negotiation timed out")]
    NegotiationTimeout,
}

impl From<quinn::ConnectionError> for ConnectionError {
    fn from(e: quinn::ConnectionError) -> Self {
        ConnectionError::Closed(e.into())
    }
}
