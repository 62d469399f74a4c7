//! meshwire's swarm: [`NetworkBehaviour`]s composed over one transport.
//!
//! A [`Swarm`] owns a [`Transport`](meshwire_transport::Transport), a behaviour (usually
//! several composed with `#[derive(NetworkBehaviour)]`) and a connection manager. It listens,
//! dials, negotiates every inbound stream and routes it by protocol to the behaviour that
//! claimed it, opens the outbound streams behaviours ask for, enforces the limits of
//! [`SwarmConfig`], and reports what happens as [`SwarmEvent`]s. There is no per-connection
//! handler: a behaviour sees every peer at once and owns its streams' futures.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_swarm::{DummyBehaviour, Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let new_swarm = || -> Result<Swarm<DummyBehaviour>, Box<dyn std::error::Error>> {
//!     let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
//!     Ok(Swarm::new(transport, DummyBehaviour, SwarmConfig::default()))
//! };
//! let mut a = new_swarm()?;
//! let mut b = new_swarm()?;
//! a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = a.next_event().await {
//!         break address;
//!     }
//! };
//! b.dial(meshwire_transport::with_peer_id(&addr, a.local_peer_id()))?;
//! // Drive both swarms until b is connected to a.
//! loop {
//!     tokio::select! {
//!         ev = b.next_event() => if let SwarmEvent::ConnectionEstablished { peer_id, .. } = ev {
//!             assert_eq!(peer_id, a.local_peer_id());
//!             break;
//!         },
//!         _ = a.next_event() => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Keep-alive: the idle rule
//!
//! A connection stays open while any of these holds: a stream handed out on it (or requested
//! and still being opened) is open and keeps it alive ([`Stream::set_keep_alive`], on by
//! default); a behaviour's [`NetworkBehaviour::connection_keep_alive`] returns `true` for it;
//! the connection manager protects its peer ([`connmgr::ConnManager::protect`], e.g. a relay);
//! or the last of these ended less than [`SwarmConfig::idle_connection_timeout`] ago. Otherwise the swarm closes it
//! (cause [`ConnectionCloseCause::Idle`]). Independently, the connection manager may trim it
//! ([`ConnectionCloseCause::Trimmed`]).

#![warn(missing_docs)]

pub mod behaviour;
pub mod dial;
pub mod metrics;
pub mod protocol;
pub mod stream;
mod swarm;
pub mod timer;
pub mod toolkit;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub use behaviour::{
    CloseConnection, ConnManagerCommand, ConnectionDenied, DummyBehaviour, FromSwarm,
    InboundStream, NetworkBehaviour, OpenStream, OutboundStream, OutboundStreamResult,
    StreamRequestId, ToSwarm,
};
pub use dial::{DialError, DialOpts, PeerCondition};
pub use meshwire_connmgr as connmgr;
pub use meshwire_core::{ConnectionId, Direction, PeerId};
pub use meshwire_transport::{CloseReason, ListenerId, Multiaddr, TransportError};
pub use metrics::SwarmMetrics;
pub use protocol::StreamProtocol;
pub use stream::Stream;
pub use swarm::{ConnectionInfo, Swarm};
pub use timer::Timer;

#[cfg(feature = "macros")]
pub use meshwire_swarm_derive::NetworkBehaviour;

use meshwire_transport::multistream::NegotiationError;
use meshwire_transport::ConnectionError;
use thiserror::Error;

/// How a connection was reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectedPoint {
    /// We dialed `address`.
    Dialer {
        /// The address dialed (without `/p2p/..`).
        address: Multiaddr,
    },
    /// The remote dialed us.
    Listener {
        /// Our address it came in on.
        local_addr: Multiaddr,
        /// The remote's address as observed.
        send_back_addr: Multiaddr,
    },
}

impl ConnectedPoint {
    /// The remote's address: the dialed one, or the observed one.
    pub fn remote_addr(&self) -> &Multiaddr {
        match self {
            ConnectedPoint::Dialer { address } => address,
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
        }
    }

    /// Whether we dialed.
    pub fn is_dialer(&self) -> bool {
        matches!(self, ConnectedPoint::Dialer { .. })
    }

    /// The direction of the connection.
    pub fn direction(&self) -> Direction {
        match self {
            ConnectedPoint::Dialer { .. } => Direction::Outbound,
            ConnectedPoint::Listener { .. } => Direction::Inbound,
        }
    }
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionCloseCause {
    /// The application or a behaviour closed it.
    #[error("closed on request")]
    Requested,
    /// The connection manager trimmed it.
    #[error("trimmed by the connection manager")]
    Trimmed,
    /// It was idle (see the crate docs' idle rule).
    #[error("idle")]
    Idle,
    /// The remote closed it, or the transport ended it (timeout, reset, error).
    #[error(transparent)]
    Transport(CloseReason),
}

/// Which limit a connection would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// [`SwarmConfig::max_established_total`].
    EstablishedTotal,
    /// [`SwarmConfig::max_established_per_peer`].
    EstablishedPerPeer,
    /// [`SwarmConfig::max_established_incoming`].
    EstablishedIncoming,
    /// [`SwarmConfig::max_established_outgoing`].
    EstablishedOutgoing,
    /// [`SwarmConfig::max_pending_incoming`].
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
    /// Opening or negotiating took longer than [`SwarmConfig::negotiation_timeout`].
    #[error("stream negotiation timed out")]
    Timeout,
    /// Too many stream requests wait for a connection
    /// ([`SwarmConfig::max_pending_stream_requests`]).
    #[error("pending stream request limit of {limit} reached")]
    PendingLimit {
        /// The limit.
        limit: usize,
    },
    /// The remote has too many inbound streams open on the connection
    /// ([`SwarmConfig::max_inbound_streams_per_connection`]); the stream was reset.
    #[error("inbound stream limit of {limit} reached")]
    TooManyStreams {
        /// The limit.
        limit: usize,
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

/// Settings and limits of a [`Swarm`].
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Established connections in all (default 10,000).
    pub max_established_total: usize,
    /// Established connections to one peer (default 4).
    pub max_established_per_peer: usize,
    /// Established inbound connections (default 10,000).
    pub max_established_incoming: usize,
    /// Established outbound connections (default 10,000).
    pub max_established_outgoing: usize,
    /// Inbound handshakes in progress (default 256).
    pub max_pending_incoming: usize,
    /// Dials in progress (default 256).
    pub max_pending_outgoing: usize,
    /// Inbound streams open or negotiating on one connection; more are reset (default 256).
    pub max_inbound_streams_per_connection: usize,
    /// Stream requests waiting for a dial to finish, in all (default 1,024).
    pub max_pending_stream_requests: usize,
    /// Stream requests waiting for a dial of one peer (default 64), so one unreachable
    /// peer cannot take every slot.
    pub max_pending_stream_requests_per_peer: usize,
    /// Time for one dial, all addresses together (default 10 s).
    pub dial_timeout: Duration,
    /// Addresses of one dial tried at once (default 8).
    pub dial_concurrency: usize,
    /// Time to open and negotiate one stream (default 10 s).
    pub negotiation_timeout: Duration,
    /// How long a connection stays open with nothing keeping it alive (see the idle rule in
    /// the crate docs); `None` keeps idle connections (default 30 s).
    pub idle_connection_timeout: Option<Duration>,
    /// Addresses remembered per peer in the swarm's address book (default 8).
    pub max_addresses_per_peer: usize,
    /// Peers remembered in the address book; the oldest is forgotten first (default 4,096).
    pub max_address_book_peers: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_established_total: 10_000,
            max_established_per_peer: 4,
            max_established_incoming: 10_000,
            max_established_outgoing: 10_000,
            max_pending_incoming: 256,
            max_pending_outgoing: 256,
            max_inbound_streams_per_connection: 256,
            max_pending_stream_requests: 1024,
            max_pending_stream_requests_per_peer: 64,
            dial_timeout: Duration::from_secs(10),
            dial_concurrency: 8,
            negotiation_timeout: Duration::from_secs(10),
            idle_connection_timeout: Some(Duration::from_secs(30)),
            max_addresses_per_peer: 8,
            max_address_book_peers: 4096,
        }
    }
}

/// Something that happened in a [`Swarm`].
#[derive(Debug)]
pub enum SwarmEvent<E> {
    /// An event of the behaviour.
    Behaviour(E),
    /// A connection is established.
    ConnectionEstablished {
        /// The remote peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// How it was reached.
        endpoint: ConnectedPoint,
        /// Connections to the peer now open, this one included.
        num_established: NonZeroU32,
        /// Time from the start of the dial or handshake to now.
        established_in: Duration,
    },
    /// A connection closed.
    ConnectionClosed {
        /// The remote peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// How it was reached.
        endpoint: ConnectedPoint,
        /// Connections to the peer still open.
        num_established: u32,
        /// Why.
        cause: ConnectionCloseCause,
    },
    /// A remote started a handshake with us.
    IncomingConnection {
        /// The id the connection will have.
        connection_id: ConnectionId,
        /// Our address.
        local_addr: Multiaddr,
        /// The remote's address.
        send_back_addr: Multiaddr,
    },
    /// An inbound connection failed before it was established.
    IncomingConnectionError {
        /// The id it had.
        connection_id: ConnectionId,
        /// Our address.
        local_addr: Multiaddr,
        /// The remote's address.
        send_back_addr: Multiaddr,
        /// Why.
        error: ListenError,
    },
    /// A dial failed.
    OutgoingConnectionError {
        /// The id it had.
        connection_id: ConnectionId,
        /// The peer dialed, if known.
        peer_id: Option<PeerId>,
        /// Why.
        error: Arc<DialError>,
    },
    /// A dial started.
    Dialing {
        /// The peer, if known.
        peer_id: Option<PeerId>,
        /// The id the connection will have.
        connection_id: ConnectionId,
    },
    /// A listener listens on a new address.
    NewListenAddr {
        /// The listener.
        listener_id: ListenerId,
        /// The address (without `/p2p/..`).
        address: Multiaddr,
    },
    /// A listener closed.
    ListenerClosed {
        /// The listener.
        listener_id: ListenerId,
        /// The addresses it had.
        addresses: Vec<Multiaddr>,
        /// `Ok` when closed on purpose.
        reason: Result<(), TransportError>,
    },
    /// A remote opened a stream that could not be negotiated or was over the limit.
    InboundStreamError {
        /// The remote peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// Why.
        error: StreamError,
    },
    /// A candidate for our external address.
    NewExternalAddrCandidate {
        /// The address.
        address: Multiaddr,
    },
    /// An external address was confirmed.
    ExternalAddrConfirmed {
        /// The address.
        address: Multiaddr,
    },
    /// An external address expired.
    ExternalAddrExpired {
        /// The address.
        address: Multiaddr,
    },
    /// An address of a peer became known.
    NewExternalAddrOfPeer {
        /// The peer.
        peer_id: PeerId,
        /// The address.
        address: Multiaddr,
    },
}
