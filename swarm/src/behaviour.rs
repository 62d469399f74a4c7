//! The [`NetworkBehaviour`] trait and the messages between a behaviour and the swarm.
//!
//! A behaviour is one protocol's logic for all peers at once. It names the stream protocols it
//! accepts ([`NetworkBehaviour::protocols`]); the swarm negotiates every inbound stream with
//! multistream-select and hands the negotiated stream to the behaviour that claimed the
//! protocol ([`NetworkBehaviour::on_inbound_stream`]). It asks for outbound streams with
//! [`ToSwarm::OpenStream`] and gets them back, or a typed error, in
//! [`NetworkBehaviour::on_outbound_stream`]. Stream IO runs in futures the behaviour owns and
//! polls from [`NetworkBehaviour::poll`]; there is no per-connection handler.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::{ListenerId, Multiaddr, TransportError};

use crate::dial::DialOpts;
use crate::error::{DialError, ListenError, StreamError};
use crate::event::{ConnectedPoint, ConnectionCloseCause};
use crate::protocol::StreamProtocol;
use crate::stream::Stream;

// Re-exported where the hooks that return it are declared.
pub use crate::error::ConnectionDenied;

/// A protocol's logic, driven by a [`Swarm`](crate::Swarm).
///
/// Every method but [`poll`](Self::poll) and [`protocols`](Self::protocols) has a default, so
/// a behaviour implements only what it needs. `#[derive(NetworkBehaviour)]` composes several
/// behaviours into one.
///
/// # Order of calls
///
/// All calls come from the task polling the swarm. After calling any `on_*` method the swarm
/// polls the behaviour again before it waits, so a behaviour may queue work in those methods
/// without storing a waker for them (a waker is still needed for work queued from outside,
/// e.g. through `Swarm::behaviour_mut`, if the swarm is polled from elsewhere). A connection's
/// [`FromSwarm::ConnectionEstablished`] always comes before any stream on it, and its
/// [`FromSwarm::ConnectionClosed`] comes after every stream of it that was handed over (a stream
/// request still in flight then fails).
///
/// # Connection hooks
///
/// The four `handle_*_connection` hooks run before a connection is accepted or dialed and
/// after its handshake; returning [`ConnectionDenied`] refuses it (the swarm reports the
/// denial as a dial or listen error, and no behaviour sees the connection established).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a NetworkBehaviour",
    note = "every field of a #[derive(NetworkBehaviour)] struct must implement NetworkBehaviour"
)]
pub trait NetworkBehaviour: Send + 'static {
    /// What the behaviour reports to the application.
    type Event: Send + 'static;

    /// The stream protocols this behaviour accepts from remotes. Called when the swarm starts
    /// and again after the behaviour returns [`ToSwarm::ProtocolsChanged`].
    fn protocols(&self) -> Vec<StreamProtocol>;

    /// A remote is connecting to one of our listeners; `Err` refuses it before the handshake.
    fn handle_pending_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        Ok(())
    }

    /// An inbound connection finished its handshake; `Err` closes it.
    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        Ok(())
    }

    /// A dial is about to start. Returns addresses to try in addition to `addresses` (the
    /// ones given in [`DialOpts`]); `Err` aborts the dial.
    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: Option<PeerId>,
        _addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(Vec::new())
    }

    /// An outbound connection finished its handshake; `Err` closes it.
    fn handle_established_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        Ok(())
    }

    /// Whether this behaviour wants `connection` kept open although no stream is open on it.
    /// See the swarm's idle rule in [`SwarmConfig::idle_connection_timeout`](crate::SwarmConfig::idle_connection_timeout).
    fn connection_keep_alive(&self, _peer: PeerId, _connection: ConnectionId) -> bool {
        false
    }

    /// Something happened in the swarm (connections, listeners, addresses, dial failures).
    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    /// A remote opened a stream with a protocol of [`protocols`](Self::protocols).
    fn on_inbound_stream(&mut self, _stream: InboundStream) {}

    /// The result of a [`ToSwarm::OpenStream`] request of this behaviour.
    fn on_outbound_stream(&mut self, _result: OutboundStreamResult) {}

    /// Drives the behaviour: its timers and stream futures. Returns the next command for the
    /// swarm, or `Pending` after arranging to be woken through `cx`.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>>;
}

/// A notification from the swarm to every behaviour.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum FromSwarm<'a> {
    /// A connection is established and accepted by every behaviour.
    ConnectionEstablished {
        /// The remote peer.
        peer: PeerId,
        /// The new connection.
        connection: ConnectionId,
        /// How it was reached.
        endpoint: &'a ConnectedPoint,
        /// Connections to this peer that were open before this one.
        other_established: usize,
        /// The transport connection itself, for behaviours that use more than streams
        /// (QUIC datagrams, RTT estimates). Streams opened on it directly bypass the
        /// swarm's negotiation and accounting; use [`ToSwarm::OpenStream`] for those.
        handle: &'a meshwire_transport::Connection,
    },
    /// A connection closed.
    ConnectionClosed {
        /// The remote peer.
        peer: PeerId,
        /// The connection that closed.
        connection: ConnectionId,
        /// How it was reached.
        endpoint: &'a ConnectedPoint,
        /// Connections to this peer still open.
        remaining_established: usize,
        /// Why it closed.
        cause: &'a ConnectionCloseCause,
    },
    /// A dial failed.
    DialFailure {
        /// The peer dialed, if known.
        peer: Option<PeerId>,
        /// The connection id the dial had.
        connection: ConnectionId,
        /// Why it failed.
        error: &'a DialError,
    },
    /// An inbound connection failed before it was established.
    ListenFailure {
        /// The connection id it had.
        connection: ConnectionId,
        /// Our address it came in on.
        local_addr: &'a Multiaddr,
        /// The remote's address.
        send_back_addr: &'a Multiaddr,
        /// Why it failed.
        error: &'a ListenError,
    },
    /// A listener listens on a new address.
    NewListenAddr {
        /// The listener.
        listener: ListenerId,
        /// The address.
        addr: &'a Multiaddr,
    },
    /// A listener closed.
    ListenerClosed {
        /// The listener.
        listener: ListenerId,
        /// `Ok` when closed on purpose.
        reason: Result<(), &'a TransportError>,
    },
    /// A candidate for our external address (e.g. observed by a peer through identify).
    NewExternalAddrCandidate {
        /// The address.
        addr: &'a Multiaddr,
    },
    /// An external address was confirmed.
    ExternalAddrConfirmed {
        /// The address.
        addr: &'a Multiaddr,
    },
    /// An external address is no longer valid.
    ExternalAddrExpired {
        /// The address.
        addr: &'a Multiaddr,
    },
    /// An address of a peer became known (from identify, the application, ...).
    NewExternalAddrOfPeer {
        /// The peer.
        peer: PeerId,
        /// Its address.
        addr: &'a Multiaddr,
    },
    /// The protocols a remote peer says it accepts, as learnt on `connection` (identify reports
    /// them; kademlia uses them to decide whether a peer serves the DHT).
    RemoteProtocolsChanged {
        /// The peer.
        peer: PeerId,
        /// The connection it told us on.
        connection: ConnectionId,
        /// Its protocols.
        protocols: &'a [StreamProtocol],
    },
    /// The protocols the whole local node accepts (every behaviour's together): sent once
    /// before the first poll and again whenever they change. Identify advertises them.
    LocalProtocolsChanged {
        /// The protocols.
        protocols: &'a [StreamProtocol],
    },
}

/// A negotiated stream a remote opened, handed to the behaviour that claimed its protocol.
#[derive(Debug)]
pub struct InboundStream {
    /// The remote peer.
    pub peer: PeerId,
    /// The connection the stream belongs to.
    pub connection: ConnectionId,
    /// The protocol agreed on.
    pub protocol: StreamProtocol,
    /// The stream.
    pub stream: Stream,
}

/// Identifies one [`ToSwarm::OpenStream`] request; unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamRequestId(u64);

impl StreamRequestId {
    /// A fresh id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StreamRequestId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for StreamRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream-request#{}", self.0)
    }
}

/// The path from the swarm down to the behaviour that asked for a stream, through composed
/// behaviours. Maintained by `#[derive(NetworkBehaviour)]`; behaviours never touch it.
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route(Vec<u16>);

impl Route {
    #[doc(hidden)]
    pub fn push(&mut self, index: u16) {
        self.0.push(index)
    }
    #[doc(hidden)]
    pub fn pop(&mut self) -> Option<u16> {
        self.0.pop()
    }
}

/// A request for an outbound stream, returned from [`NetworkBehaviour::poll`] as
/// [`ToSwarm::OpenStream`].
///
/// With one protocol, negotiation is lazy: the stream is handed over at once and the
/// protocol's acceptance is checked on its first read (a refusal then reads as an
/// [`std::io::Error`] that [`StreamError::from_io`] turns back into
/// [`StreamError::UnsupportedProtocols`]). [`OpenStream::confirmed`] waits for the remote's
/// answer first. With several protocols the remote's answer is always awaited.
///
/// With one protocol the stream is also opened optimistically by default: the
/// multistream-select header and proposal are not written when the stream is opened but by
/// its first use (read, write, flush, close or drop), so they travel in one packet with the
/// first write (rust-libp2p's lazy dialer). Until then the stream does not exist for the
/// remote. [`OpenStream::eager`] writes and flushes them before the stream is handed over
/// instead, so a stream opened and held unused already reaches the remote (its limits, its
/// behaviours); it costs a packet of its own for the proposal.
#[derive(Debug)]
pub struct OpenStream {
    /// The peer to open the stream to.
    pub peer: PeerId,
    /// Protocols to propose, in order of preference.
    pub protocols: Vec<StreamProtocol>,
    /// Use this connection; `None` picks a live connection to the peer: a direct one over a
    /// relayed one, then the one with the fewest open streams.
    pub connection: Option<ConnectionId>,
    /// Dial the peer if it is not connected (default `true`).
    pub dial: bool,
    /// Wait for the remote to confirm the protocol before handing the stream over.
    pub confirm: bool,
    /// Leave the header and proposal to the stream's first use (default `true`, see
    /// [`OpenStream::optimistic`] and [`OpenStream::eager`]); ignored with several protocols
    /// or with `confirm`.
    pub optimistic: bool,
    /// The request's id, echoed in the result.
    pub id: StreamRequestId,
    #[doc(hidden)]
    pub route: Route,
}

impl OpenStream {
    /// A request for a stream to `peer` speaking `protocol`, dialing the peer if needed.
    pub fn new(peer: PeerId, protocol: StreamProtocol) -> Self {
        OpenStream {
            peer,
            protocols: vec![protocol],
            connection: None,
            dial: true,
            confirm: false,
            optimistic: true,
            id: StreamRequestId::next(),
            route: Route::default(),
        }
    }

    /// Proposes these protocols instead, in order of preference.
    pub fn with_protocols(mut self, protocols: Vec<StreamProtocol>) -> Self {
        self.protocols = protocols;
        self
    }

    /// Uses this connection.
    pub fn on_connection(mut self, connection: ConnectionId) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Fails with [`StreamError::NotConnected`] instead of dialing.
    pub fn no_dial(mut self) -> Self {
        self.dial = false;
        self
    }

    /// Waits for the remote's confirmation of the protocol.
    pub fn confirmed(mut self) -> Self {
        self.confirm = true;
        self
    }

    /// Opens optimistically (the default; this undoes [`OpenStream::eager`]): the stream is
    /// handed over as soon as it is opened, with the multistream-select header and proposal
    /// not yet written; its first write (or read, flush or close, or its drop) writes them
    /// ahead of its own bytes, so the proposal and the request leave in one packet, and the
    /// remote's acceptor, seeing the request already there, leaves its confirmation to the
    /// answer's packet too (2 datagrams per exchange instead of 4: `cargo bench -p
    /// interop-tests --bench swarm`, lines `exchange meshwire` and `exchange meshwire
    /// (eager)`).
    ///
    /// The price: until its first use the stream does not exist for the remote (its limits,
    /// its behaviours). A refusal of the protocol shows on the stream's first read either
    /// way, as an [`std::io::Error`] for which [`Stream::is_protocol_refused`] is true
    /// ([`StreamError::from_io`] turns it into [`StreamError::UnsupportedProtocols`]).
    /// Ignored (the stream is negotiated as with [`OpenStream::eager`]) with several
    /// protocols or with [`OpenStream::confirmed`].
    pub fn optimistic(mut self) -> Self {
        self.optimistic = true;
        self
    }

    /// Opens eagerly: the multistream-select header and proposal are written and flushed
    /// before the stream is handed over, so the remote sees the stream (its limits count it,
    /// a behaviour there gets it) even if this side holds it unused. For a protocol whose
    /// dialer waits for the remote to act on the stream's mere existence; every other
    /// behaviour is better served by the default, which saves the proposal's packet.
    pub fn eager(mut self) -> Self {
        self.optimistic = false;
        self
    }
}

/// A negotiated outbound stream.
#[derive(Debug)]
pub struct OutboundStream {
    /// The connection it belongs to.
    pub connection: ConnectionId,
    /// The protocol (the proposed one for a lazy single-protocol request).
    pub protocol: StreamProtocol,
    /// The stream.
    pub stream: Stream,
}

/// The answer to an [`OpenStream`] request.
#[derive(Debug)]
pub struct OutboundStreamResult {
    /// The request's id.
    pub id: StreamRequestId,
    /// The peer the stream was asked for.
    pub peer: PeerId,
    /// The stream, or why there is none.
    pub result: Result<OutboundStream, StreamError>,
    #[doc(hidden)]
    pub route: Route,
}

/// Which connections of a peer [`ToSwarm::CloseConnection`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseConnection {
    /// This one.
    One(ConnectionId),
    /// All of them.
    All,
}

/// A command for the connection manager, from a behaviour.
pub enum ConnManagerCommand {
    /// [`ConnManager::tag_peer`](meshwire_connmgr::ConnManager::tag_peer).
    TagPeer {
        /// The peer.
        peer: PeerId,
        /// The tag.
        tag: String,
        /// Its value.
        value: i32,
    },
    /// [`ConnManager::untag_peer`](meshwire_connmgr::ConnManager::untag_peer).
    UntagPeer {
        /// The peer.
        peer: PeerId,
        /// The tag.
        tag: String,
    },
    /// [`ConnManager::upsert_tag`](meshwire_connmgr::ConnManager::upsert_tag).
    UpsertTag {
        /// The peer.
        peer: PeerId,
        /// The tag.
        tag: String,
        /// New value from the current one (0 if none).
        f: Box<dyn FnMut(i32) -> i32 + Send>,
    },
    /// [`ConnManager::protect`](meshwire_connmgr::ConnManager::protect).
    Protect {
        /// The peer.
        peer: PeerId,
        /// The protection tag.
        tag: String,
    },
    /// [`ConnManager::unprotect`](meshwire_connmgr::ConnManager::unprotect).
    Unprotect {
        /// The peer.
        peer: PeerId,
        /// The protection tag.
        tag: String,
    },
}

impl fmt::Debug for ConnManagerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnManagerCommand::TagPeer { peer, tag, value } => f
                .debug_struct("TagPeer")
                .field("peer", peer)
                .field("tag", tag)
                .field("value", value)
                .finish(),
            ConnManagerCommand::UntagPeer { peer, tag } => f
                .debug_struct("UntagPeer")
                .field("peer", peer)
                .field("tag", tag)
                .finish(),
            ConnManagerCommand::UpsertTag { peer, tag, .. } => f
                .debug_struct("UpsertTag")
                .field("peer", peer)
                .field("tag", tag)
                .finish_non_exhaustive(),
            ConnManagerCommand::Protect { peer, tag } => f
                .debug_struct("Protect")
                .field("peer", peer)
                .field("tag", tag)
                .finish(),
            ConnManagerCommand::Unprotect { peer, tag } => f
                .debug_struct("Unprotect")
                .field("peer", peer)
                .field("tag", tag)
                .finish(),
        }
    }
}

/// A command from a behaviour to the swarm.
#[derive(Debug)]
pub enum ToSwarm<E> {
    /// Report `E` to the application (as [`SwarmEvent::Behaviour`](crate::SwarmEvent::Behaviour)).
    GenerateEvent(E),
    /// Dial a peer or address. Failures come back as [`FromSwarm::DialFailure`].
    Dial(DialOpts),
    /// Open a stream; the result comes back through
    /// [`NetworkBehaviour::on_outbound_stream`].
    OpenStream(OpenStream),
    /// Close connections of a peer.
    CloseConnection {
        /// The peer.
        peer: PeerId,
        /// Which of its connections.
        connection: CloseConnection,
    },
    /// An address that may be our external address (e.g. observed by a peer).
    NewExternalAddrCandidate(Multiaddr),
    /// Our external address is confirmed.
    ExternalAddrConfirmed(Multiaddr),
    /// An external address is no longer valid.
    ExternalAddrExpired(Multiaddr),
    /// An address of a peer, to share with every behaviour.
    NewExternalAddrOfPeer {
        /// The peer.
        peer: PeerId,
        /// Its address.
        addr: Multiaddr,
    },
    /// The protocols a remote peer accepts, learnt by this behaviour (identify), to share with
    /// every behaviour as [`FromSwarm::RemoteProtocolsChanged`].
    RemoteProtocolsChanged {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Its protocols.
        protocols: Vec<StreamProtocol>,
    },
    /// A command for the connection manager.
    ConnManager(ConnManagerCommand),
    /// [`NetworkBehaviour::protocols`] changed; the swarm reads it again.
    ProtocolsChanged,
}

impl<E> ToSwarm<E> {
    /// Maps the event of [`ToSwarm::GenerateEvent`], keeping every other command.
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> ToSwarm<F> {
        match self.into_event() {
            Ok(event) => ToSwarm::GenerateEvent(f(event)),
            Err(command) => command,
        }
    }

    /// Splits an event from the other commands: `Ok(event)` for [`ToSwarm::GenerateEvent`],
    /// otherwise `Err(command)` typed for any event type. A behaviour that wraps another and
    /// translates its events passes every other command on unchanged:
    ///
    /// ```
    /// # use meshwire_swarm::ToSwarm;
    /// let inner: ToSwarm<u8> = ToSwarm::ProtocolsChanged;
    /// let outer: ToSwarm<String> = match inner.into_event() {
    ///     Ok(event) => ToSwarm::GenerateEvent(event.to_string()),
    ///     Err(command) => command,
    /// };
    /// assert!(matches!(outer, ToSwarm::ProtocolsChanged));
    /// assert_eq!(ToSwarm::<u8>::GenerateEvent(7).into_event::<()>().ok(), Some(7));
    /// ```
    pub fn into_event<F>(self) -> Result<E, ToSwarm<F>> {
        Err(match self {
            ToSwarm::GenerateEvent(e) => return Ok(e),
            ToSwarm::Dial(d) => ToSwarm::Dial(d),
            ToSwarm::OpenStream(o) => ToSwarm::OpenStream(o),
            ToSwarm::CloseConnection { peer, connection } => {
                ToSwarm::CloseConnection { peer, connection }
            }
            ToSwarm::NewExternalAddrCandidate(a) => ToSwarm::NewExternalAddrCandidate(a),
            ToSwarm::ExternalAddrConfirmed(a) => ToSwarm::ExternalAddrConfirmed(a),
            ToSwarm::ExternalAddrExpired(a) => ToSwarm::ExternalAddrExpired(a),
            ToSwarm::NewExternalAddrOfPeer { peer, addr } => {
                ToSwarm::NewExternalAddrOfPeer { peer, addr }
            }
            ToSwarm::RemoteProtocolsChanged {
                peer,
                connection,
                protocols,
            } => ToSwarm::RemoteProtocolsChanged {
                peer,
                connection,
                protocols,
            },
            ToSwarm::ConnManager(c) => ToSwarm::ConnManager(c),
            ToSwarm::ProtocolsChanged => ToSwarm::ProtocolsChanged,
        })
    }

    /// Records that this command comes from the composed behaviour at `index` (used by
    /// `#[derive(NetworkBehaviour)]` so stream results find their way back).
    #[doc(hidden)]
    pub fn push_route(mut self, index: u16) -> Self {
        if let ToSwarm::OpenStream(o) = &mut self {
            o.route.push(index);
        }
        self
    }
}

/// A behaviour with no protocols and no events: a swarm that only connects (and refuses
/// every stream with `na`), e.g. a peer that speaks none of another node's protocols, or the
/// swarm's own examples and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct DummyBehaviour;

impl NetworkBehaviour for DummyBehaviour {
    type Event = std::convert::Infallible;

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        Poll::Pending
    }
}
