//! meshwire transport: authenticated, multiplexed connections between peers.
//!
//! - [`quic::QuicTransport`]: QUIC v1 over quinn with the libp2p TLS handshake
//!   ([`tls`]), wire-compatible with rust-libp2p and go-libp2p (`/ip4/../udp/N/quic-v1`).
//!   Its raw sockets ([`quic_sockets::QuicSockets`], from `QuicTransport::sockets`): datagrams
//!   sent from a listener's socket, a socket handed over for the next dial (hole punching's
//!   birthday spray).
//! - [`memory::MemoryTransport`]: the same [`Transport`] trait in process memory
//!   (`/memory/N`), for fast deterministic tests of the layers above.
//! - [`multistream`]: per-stream protocol negotiation (`/multistream/1.0.0`).
//! - [`or::OrTransport`]: two transports as one ([`TransportExt::or_transport`]).
//! - [`upgrade`]: any byte stream (a relayed circuit, a TCP socket) upgraded into a
//!   [`Connection`] with libp2p's Noise handshake ([`upgrade::noise`]) and Yamux, as
//!   rust-libp2p does it; the connection's Yamux backend is [`connection::yamux`].
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use meshwire_transport::{identity::Keypair, quic::{QuicConfig, QuicTransport}, Transport, TransportEvent, TransportExt};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server_key = Keypair::generate();
//! let server_id = server_key.peer_id();
//! let mut server = QuicTransport::new(server_key, QuicConfig::default())?;
//! server.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//! let addr = match server.next_event().await {
//!     TransportEvent::NewListenAddr { addr, .. } => addr,
//!     other => panic!("{other:?}"),
//! };
//!
//! let mut client = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
//! let dial = client.dial(&addr, Some(server_id))?;
//! let incoming = match server.next_event().await {
//!     TransportEvent::Incoming { upgrade, .. } => upgrade,
//!     other => panic!("{other:?}"),
//! };
//! let (outbound, inbound) = tokio::join!(dial, incoming);
//! let (outbound, inbound) = (outbound?, inbound?);
//! assert_eq!(outbound.peer_id(), server_id);
//!
//! let t = Duration::from_secs(5);
//! let echo = async {
//!     let (_proto, mut s) = inbound.accept_negotiated(&["/echo/1"], t).await?;
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).await?;
//!     s.write_all(&buf).await?;
//!     s.close().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! };
//! let ask = async {
//!     let (_proto, mut s) = outbound.open_negotiated(["/echo/1"], t).await?;
//!     s.write_all(b"hello").await?;
//!     let mut buf = Vec::new();
//!     s.read_to_end(&mut buf).await?;
//!     Ok::<_, Box<dyn std::error::Error>>(buf)
//! };
//! let (e, reply) = tokio::join!(echo, ask);
//! e?;
//! assert_eq!(reply?, b"hello");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod connection;
pub mod memory;
pub mod multistream;
pub mod or;
pub mod quic;
pub mod quic_sockets;
pub mod tls;
pub mod upgrade;

pub use connection::{CloseReason, Connection, ConnectionError, Stream};
pub use meshwire_core::identity;
pub use meshwire_core::{ConnectionId, Direction};
pub use multiaddr::{self, Multiaddr, Protocol};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use meshwire_core::PeerId;
use thiserror::Error;

/// A future that resolves to an authenticated connection (a dial or an inbound handshake).
pub type PendingConnection =
    Pin<Box<dyn Future<Output = Result<Connection, TransportError>> + Send>>;

/// Identifies one listener of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

impl ListenerId {
    /// A fresh, process-unique listener id.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ListenerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Errors of listening, dialing and connection handshakes.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The transport cannot use this address (wrong protocol stack, missing port, ...).
    #[error("unsupported address {addr}: {reason}")]
    UnsupportedAddress {
        /// The address given.
        addr: Multiaddr,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The address names one peer and the caller expected another.
    #[error("address names peer {in_addr} but {expected} was expected")]
    AddressPeerMismatch {
        /// The peer the caller asked for.
        expected: PeerId,
        /// The `/p2p/..` peer of the address.
        in_addr: PeerId,
    },
    /// The peer authenticated as someone other than the peer dialed.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The peer dialed.
        expected: PeerId,
        /// The peer that answered.
        actual: PeerId,
    },
    /// The TLS handshake rejected the peer's certificate.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The Noise handshake failed (see [`upgrade::noise::NoiseError`]).
    #[error("noise: {0}")]
    Noise(upgrade::noise::NoiseError),
    /// Negotiating the security or multiplexer protocol with multistream-select failed.
    #[error("negotiation: {0}")]
    Negotiation(#[from] multistream::NegotiationError),
    /// The configuration cannot be used (e.g. yamux limits that contradict each other).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The connection failed during the handshake.
    #[error("connection failed: {0}")]
    Connection(CloseReason),
    /// Nothing listens at the address (in-memory transport), or the peer refused.
    #[error("connection refused")]
    Refused,
    /// A socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The transport is shut down.
    #[error("transport closed")]
    Closed,
    /// An error of a transport defined outside this crate (e.g. the circuit-relay client's
    /// `CircuitError`); downcast it to that type to match on it.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl From<upgrade::noise::NoiseError> for TransportError {
    /// A Noise peer-id mismatch is [`TransportError::PeerIdMismatch`], like TLS's; every other
    /// Noise error is [`TransportError::Noise`].
    fn from(e: upgrade::noise::NoiseError) -> Self {
        match e {
            upgrade::noise::NoiseError::PeerIdMismatch { expected, actual } => {
                TransportError::PeerIdMismatch { expected, actual }
            }
            other => TransportError::Noise(other),
        }
    }
}

/// Something that happened on a transport's listeners.
pub enum TransportEvent {
    /// A listener is ready at `addr` (with the actual port when 0 was asked for).
    NewListenAddr {
        /// The listener.
        listener: ListenerId,
        /// The address it listens on.
        addr: Multiaddr,
    },
    /// A remote is connecting; `upgrade` completes (or fails) the handshake. Dropping it
    /// refuses the connection.
    Incoming {
        /// The listener it came in on.
        listener: ListenerId,
        /// Our address it came in on.
        local_addr: Multiaddr,
        /// The remote's address as observed.
        remote_addr: Multiaddr,
        /// The handshake.
        upgrade: PendingConnection,
    },
    /// A listener stopped, with an error if it failed.
    ListenerClosed {
        /// The listener.
        listener: ListenerId,
        /// `Ok` when closed on purpose.
        reason: Result<(), TransportError>,
    },
}

impl std::fmt::Debug for TransportEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportEvent::NewListenAddr { listener, addr } => f
                .debug_struct("NewListenAddr")
                .field("listener", listener)
                .field("addr", addr)
                .finish(),
            TransportEvent::Incoming {
                listener,
                local_addr,
                remote_addr,
                ..
            } => f
                .debug_struct("Incoming")
                .field("listener", listener)
                .field("local_addr", local_addr)
                .field("remote_addr", remote_addr)
                .finish_non_exhaustive(),
            TransportEvent::ListenerClosed { listener, reason } => f
                .debug_struct("ListenerClosed")
                .field("listener", listener)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// A way to reach peers: listen for and dial authenticated, multiplexed connections.
///
/// The swarm drives a transport by calling [`Transport::poll_event`]; dials are futures the
/// caller drives (so they run concurrently, each with its own timeout).
pub trait Transport: Send + 'static {
    /// Our own peer id (the identity the transport authenticates as).
    fn local_peer_id(&self) -> PeerId;

    /// Starts listening on `addr`. The actual address is reported by a
    /// [`TransportEvent::NewListenAddr`].
    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError>;

    /// Stops a listener. Returns `false` if there is no such listener.
    fn remove_listener(&mut self, id: ListenerId) -> bool;

    /// Starts dialing `addr`. If `expected` is given, or `addr` ends in `/p2p/<peer>`, a peer
    /// authenticating as anyone else fails the dial with [`TransportError::PeerIdMismatch`].
    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError>;

    /// Whether this transport can dial the address at all.
    fn can_dial(&self, addr: &Multiaddr) -> bool;

    /// The addresses currently listened on.
    fn listen_addrs(&self) -> Vec<Multiaddr>;

    /// Polls for the next listener event.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent>;
}

/// Convenience methods on every [`Transport`].
pub trait TransportExt: Transport {
    /// Waits for the next listener event.
    fn next_event(&mut self) -> NextEvent<'_, Self>
    where
        Self: Sized,
    {
        NextEvent { transport: self }
    }

    /// Composes this transport with `other` (see [`or::OrTransport`]): dials and listens go
    /// to whichever can use the address, this one first.
    fn or_transport<U: Transport>(self, other: U) -> or::OrTransport<Self, U>
    where
        Self: Sized,
    {
        or::OrTransport::new(self, other)
    }
}

impl<T: Transport> TransportExt for T {}

/// Future of [`TransportExt::next_event`].
pub struct NextEvent<'a, T> {
    transport: &'a mut T,
}

impl<T: Transport> Future for NextEvent<'_, T> {
    type Output = TransportEvent;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        self.get_mut().transport.poll_event(cx)
    }
}

impl Transport for Box<dyn Transport> {
    fn local_peer_id(&self) -> PeerId {
        (**self).local_peer_id()
    }
    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        (**self).listen_on(addr)
    }
    fn remove_listener(&mut self, id: ListenerId) -> bool {
        (**self).remove_listener(id)
    }
    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError> {
        (**self).dial(addr, expected)
    }
    fn can_dial(&self, addr: &Multiaddr) -> bool {
        (**self).can_dial(addr)
    }
    fn listen_addrs(&self) -> Vec<Multiaddr> {
        (**self).listen_addrs()
    }
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        (**self).poll_event(cx)
    }
}

/// Splits a trailing `/p2p/<peer>` off an address, checking it against `expected`.
/// Returns the address without the suffix and the peer to expect, if any.
pub fn split_peer_id(
    addr: &Multiaddr,
    expected: Option<PeerId>,
) -> Result<(Multiaddr, Option<PeerId>), TransportError> {
    let mut addr = addr.clone();
    let in_addr = match addr.iter().last() {
        Some(Protocol::P2p(mh)) => {
            let peer = PeerId::from_bytes(&mh.to_bytes()).map_err(|_| {
                TransportError::UnsupportedAddress {
                    addr: addr.clone(),
                    reason: "invalid /p2p peer id",
                }
            })?;
            addr.pop();
            Some(peer)
        }
        _ => None,
    };
    match (expected, in_addr) {
        (Some(e), Some(a)) if e != a => Err(TransportError::AddressPeerMismatch {
            expected: e,
            in_addr: a,
        }),
        (e, a) => Ok((addr, e.or(a))),
    }
}

/// Appends `/p2p/<peer>` to an address (replacing any peer already there).
pub fn with_peer_id(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    // A peer id is a valid multihash by construction, so the conversion cannot fail.
    match multiaddr::PeerId::from_bytes(peer.as_bytes()) {
        Ok(p) => addr.with(Protocol::P2p(p)),
        Err(_) => addr,
    }
}

/// Whether `addr` goes through a circuit relay: it contains `/p2p-circuit`
/// (`<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<peer>]`).
pub fn is_circuit_addr(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The relay of a circuit address: the `/p2p/<relay>` right before the first `/p2p-circuit`;
/// `None` for a direct address or a circuit address without it.
///
/// ```
/// use meshwire_transport::{circuit_relay, is_circuit_addr, Multiaddr};
///
/// let relay = meshwire_core::Keypair::generate().peer_id();
/// let addr: Multiaddr = format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
///     .parse()
///     .unwrap();
/// assert!(is_circuit_addr(&addr));
/// assert_eq!(circuit_relay(&addr), Some(relay));
/// assert_eq!(circuit_relay(&"/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap()), None);
/// ```
pub fn circuit_relay(addr: &Multiaddr) -> Option<PeerId> {
    let mut previous = None;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => {
                return match previous {
                    Some(Protocol::P2p(relay)) => PeerId::from_bytes(&relay.to_bytes()).ok(),
                    _ => None,
                }
            }
            other => previous = Some(other),
        }
    }
    None
}
