//! The swarm's errors: [`DialError`], [`ListenError`], [`StreamError`], [`LimitExceeded`] and
//! [`ConnectionDenied`].

use std::fmt;
use std::sync::Arc;

use meshwire_core::{ConnectionId, PeerId};
use meshwire_rcmgr::ResourceError;
use meshwire_transport::multistream::NegotiationError;
use meshwire_transport::{CloseReason, ConnectionError, Multiaddr, TransportError};
use thiserror::Error;

use crate::dial::PeerCondition;

/// A behaviour refused a connection, with the reason.
#[derive(Debug)]
pub struct ConnectionDenied {
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ConnectionDenied {
    /// A denial with `cause`.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        ConnectionDenied {
            inner: cause.into(),
        }
    }

    /// The cause, if it is of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref::<E>()
    }
}

impl fmt::Display for ConnectionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection denied: {}", self.inner)
    }
}

impl std::error::Error for ConnectionDenied {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.inner)
    }
}

/// Which limit a connection would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// [`SwarmConfig::max_established_total`](crate::SwarmConfig::max_established_total).
    EstablishedTotal,
    /// [`SwarmConfig::max_established_per_peer`](crate::SwarmConfig::max_established_per_peer).
    EstablishedPerPeer,
    /// [`SwarmConfig::max_established_incoming`](crate::SwarmConfig::max_established_incoming).
    EstablishedIncoming,
    /// [`SwarmConfig::max_established_outgoing`](crate::SwarmConfig::max_established_outgoing).
    EstablishedOutgoing,
    /// [`SwarmConfig::max_pending_incoming`](crate::SwarmConfig::max_pending_incoming).
    PendingIncoming,
}

/// A connection limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{kind:?} limit of {limit} reached")]
pub struct LimitExceeded {
    /// Which limit.
    pub kind: LimitKind,
    /// Its value.
    pub limit: usize,
}

/// Why an inbound connection failed before it was established.
#[derive(Debug, Error)]
pub enum ListenError {
    /// A behaviour refused it.
    #[error(transparent)]
    Denied(ConnectionDenied),
    /// A connection limit was reached.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The resource manager refused the connection (before its handshake, or when it named
    /// a peer whose share is full).
    #[error("resource manager: {0}")]
    Resource(#[from] ResourceError),
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Transport(#[from] TransportError),
    /// The remote is ourselves.
    #[error("connection from the local peer")]
    LocalPeerId,
}

/// Why an outbound stream could not be opened or negotiated.
#[derive(Debug, Clone, Error)]
pub enum StreamError {
    /// The peer is not connected and the request said not to dial.
    #[error("peer not connected")]
    NotConnected,
    /// The resource manager refused the stream (the peer's, the protocol's or the system's
    /// share of streams is full).
    #[error("resource manager: {0}")]
    Resource(#[from] ResourceError),
    /// Dialing the peer failed.
    #[error("dial failed: {0}")]
    DialFailed(Arc<DialError>),
    /// The connection closed before the stream was negotiated.
    #[error("connection closed: {0}")]
    ConnectionClosed(CloseReason),
    /// The remote supports none of the protocols proposed (it answered `na`).
    #[error("remote does not support the protocol")]
    UnsupportedProtocols,
    /// Negotiation failed otherwise.
    #[error("negotiation failed: {0}")]
    Negotiation(Arc<NegotiationError>),
    /// Opening or negotiating took longer than [`SwarmConfig::negotiation_timeout`](crate::SwarmConfig::negotiation_timeout).
    #[error("stream negotiation timed out")]
    Timeout,
    /// Too many stream requests wait for a connection
    /// ([`SwarmConfig::max_pending_stream_requests`](crate::SwarmConfig::max_pending_stream_requests)).
    #[error("pending stream request limit of {limit} reached")]
    PendingLimit {
        /// The limit.
        limit: usize,
    },
    /// The remote has too many inbound streams open on the connection
    /// ([`SwarmConfig::max_inbound_streams_per_connection`](crate::SwarmConfig::max_inbound_streams_per_connection)); the stream was reset.
    #[error("inbound stream limit of {limit} reached")]
    TooManyStreams {
        /// The limit.
        limit: usize,
    },
    /// The [`IncomingStreams`](crate::IncomingStreams) of the stream's protocol already holds
    /// [`SwarmConfig::incoming_stream_buffer`](crate::SwarmConfig::incoming_stream_buffer)
    /// streams nobody took; the stream was reset.
    #[error("{capacity} inbound streams already wait to be taken")]
    ReceiverFull {
        /// The buffer's capacity.
        capacity: usize,
    },
    /// The stream failed after it was handed over.
    #[error("stream I/O: {0}")]
    Io(Arc<std::io::Error>),
}

impl StreamError {
    /// Classifies an I/O error from a stream: a lazily negotiated protocol that the remote
    /// refused reads as an I/O error, which becomes [`StreamError::UnsupportedProtocols`].
    pub fn from_io(e: std::io::Error) -> StreamError {
        if let Some(NegotiationError::Failed) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NegotiationError>())
        {
            return StreamError::UnsupportedProtocols;
        }
        StreamError::Io(Arc::new(e))
    }

    /// Whether the remote refused the protocol (it answered `na`).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, StreamError::UnsupportedProtocols)
    }

    pub(crate) fn from_negotiation(e: NegotiationError) -> StreamError {
        match e {
            NegotiationError::Failed => StreamError::UnsupportedProtocols,
            other => StreamError::Negotiation(Arc::new(other)),
        }
    }

    pub(crate) fn from_connection(e: ConnectionError) -> StreamError {
        match e {
            ConnectionError::Closed(r) => StreamError::ConnectionClosed(r),
            ConnectionError::Negotiation(n) => StreamError::from_negotiation(n),
            ConnectionError::NegotiationTimeout => StreamError::Timeout,
            other => StreamError::Io(Arc::new(std::io::Error::other(other.to_string()))),
        }
    }
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::from_io(e)
    }
}

/// Why a dial failed.
#[derive(Debug, Error)]
pub enum DialError {
    /// The peer dialed is ourselves.
    #[error("dialing the local peer")]
    LocalPeerId,
    /// No address to dial was given or known.
    #[error("no addresses to dial")]
    NoAddresses,
    /// The [`PeerCondition`] was not met.
    #[error("dial condition {0:?} not met")]
    ConditionFalse(PeerCondition),
    /// Too many dials are pending ([`SwarmConfig::max_pending_outgoing`](crate::SwarmConfig::max_pending_outgoing)).
    #[error("pending outgoing connection limit of {limit} reached")]
    PendingLimit {
        /// The limit.
        limit: usize,
    },
    /// An established-connection limit would be exceeded.
    #[error("connection limit: {0}")]
    Limit(#[from] crate::LimitExceeded),
    /// The resource manager refused the connection.
    #[error("resource manager: {0}")]
    Resource(#[from] ResourceError),
    /// A behaviour refused the connection.
    #[error(transparent)]
    Denied(ConnectionDenied),
    /// The peer that answered is not the one dialed.
    #[error("wrong peer at {address}: expected {expected}, got {obtained}")]
    WrongPeerId {
        /// The peer dialed.
        expected: PeerId,
        /// The peer that answered.
        obtained: PeerId,
        /// Where.
        address: Multiaddr,
    },
    /// Every address failed; the error of each.
    #[error("all {} addresses failed: {}", .0.len(), fmt_errors(.0))]
    Transport(Vec<(Multiaddr, TransportError)>),
    /// The dial did not finish within [`SwarmConfig::dial_timeout`](crate::SwarmConfig::dial_timeout);
    /// the errors of the addresses that failed before.
    #[error("dial timed out ({} addresses failed before: {})", .0.len(), fmt_errors(.0))]
    Timeout(Vec<(Multiaddr, TransportError)>),
    /// The options' connection id is already in use (options are single-use).
    #[error("connection id {0} is already in use")]
    DuplicateConnectionId(ConnectionId),
    /// The swarm closed or the dial was dropped.
    #[error("dial aborted")]
    Aborted,
}

fn fmt_errors(errs: &[(Multiaddr, TransportError)]) -> String {
    errs.iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DialError {
    /// The peer-id mismatch behind this error, if that is what it is: `(expected, obtained)`.
    /// Covers both [`DialError::WrongPeerId`] and a mismatch reported by the transport.
    pub fn peer_id_mismatch(&self) -> Option<(PeerId, PeerId)> {
        match self {
            DialError::WrongPeerId {
                expected, obtained, ..
            } => Some((*expected, *obtained)),
            DialError::Transport(errs) | DialError::Timeout(errs) => {
                errs.iter().find_map(|(_, e)| match e {
                    TransportError::PeerIdMismatch { expected, actual } => {
                        Some((*expected, *actual))
                    }
                    TransportError::Tls(meshwire_transport::tls::TlsError::PeerIdMismatch {
                        expected,
                        actual,
                    }) => Some((*expected, *actual)),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}
