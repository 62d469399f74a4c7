//! [`SwarmEvent`], what a [`Swarm`](crate::Swarm) reports, and the connection facts it
//! carries: [`ConnectedPoint`], [`ConnectionCloseCause`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_transport::{CloseReason, ListenerId, Multiaddr, TransportError};
use thiserror::Error;

use crate::error::{DialError, ListenError, StreamError};

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

    /// Whether the connection runs through a circuit relay (its remote address is a
    /// `<relay>/p2p-circuit` address).
    pub fn is_relayed(&self) -> bool {
        meshwire_transport::is_circuit_addr(self.remote_addr())
    }

    /// The relay a relayed connection runs through (the `/p2p/<relay>` before
    /// `/p2p-circuit`), or `None` for a direct connection.
    ///
    /// ```
    /// use meshwire_swarm::ConnectedPoint;
    ///
    /// let relay = meshwire_core::Keypair::generate().peer_id();
    /// let address = format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
    ///     .parse()
    ///     .unwrap();
    /// let point = ConnectedPoint::Dialer { address };
    /// assert!(point.is_relayed());
    /// assert_eq!(point.relay_peer_id(), Some(relay));
    /// let direct = ConnectedPoint::Dialer { address: "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap() };
    /// assert!(!direct.is_relayed());
    /// assert_eq!(direct.relay_peer_id(), None);
    /// ```
    pub fn relay_peer_id(&self) -> Option<PeerId> {
        meshwire_transport::circuit_relay(self.remote_addr())
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

/// Something that happened in a [`Swarm`](crate::Swarm).
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
