//! [`NegotiationError`]: every way a negotiation fails.

use std::io;

use super::protocol_name::ProtocolNameError;

/// Errors of a multistream-select negotiation.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// The underlying stream failed. A stream that ends in the middle of a
    /// message is reported as an error of kind
    /// [`io::ErrorKind::UnexpectedEof`].
    #[error("I/O error during protocol negotiation: {0}")]
    Io(#[from] io::Error),
    /// No protocol could be agreed upon: every proposal was refused, the
    /// remote closed the stream between messages, or (listener side) the
    /// remote sent data that is not a negotiation message after a refusal,
    /// which is what a [`Version::V1Lazy`](super::Version::V1Lazy) dialer does.
    #[error("the remote refused the protocol (no protocol could be agreed upon)")]
    Failed,
    /// The remote sent a malformed or unexpected negotiation message.
    #[error("received an invalid multistream-select message")]
    InvalidMessage,
    /// The remote announced a message longer than allowed; nothing of it was
    /// read or allocated.
    #[error("multistream-select message longer than the maximum of {max} bytes")]
    MessageTooLarge {
        /// The maximum message length that was in force.
        max: usize,
    },
    /// A protocol name (a local one, or one proposed by the remote) is invalid.
    #[error("invalid protocol name: {0}")]
    InvalidProtocolName(#[from] ProtocolNameError),
    /// The remote (dialer) kept proposing unsupported protocols or asking for
    /// the protocol list beyond the listener's limit.
    #[error("remote exceeded the limit of {limit} refused proposals")]
    TooManyProposals {
        /// The limit that was in force.
        limit: usize,
    },
    /// The negotiation did not finish in time. Never produced by the
    /// negotiation itself; see [`with_timeout`](super::with_timeout) and the module documentation.
    #[error("protocol negotiation timed out")]
    Timeout,
}

impl From<NegotiationError> for io::Error {
    /// Converts into an [`io::Error`]: an [`NegotiationError::Io`] is
    /// unwrapped, every other variant is wrapped (retrievable with
    /// `io::Error::get_ref` and `downcast_ref::<NegotiationError>()`).
    fn from(err: NegotiationError) -> io::Error {
        if let NegotiationError::Io(e) = err {
            return e;
        }
        let kind = match &err {
            NegotiationError::Io(_) => io::ErrorKind::Other,
            // A refused protocol reads as "unsupported" on a lazily negotiated stream.
            NegotiationError::Failed => io::ErrorKind::Unsupported,
            NegotiationError::Timeout => io::ErrorKind::TimedOut,
            NegotiationError::InvalidMessage
            | NegotiationError::MessageTooLarge { .. }
            | NegotiationError::InvalidProtocolName(_)
            | NegotiationError::TooManyProposals { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
