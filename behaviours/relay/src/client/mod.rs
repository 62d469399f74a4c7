//! The circuit relay v2 client: listen through a relay (a reservation, renewed while it is
//! in use) and dial peers through one (a circuit), as ordinary swarm connections.
//!
//! [`new`] makes two halves that talk over bounded channels:
//! - [`Transport`], composed with QUIC into the swarm's transport
//!   (`quic.or_transport(relay_transport)`): `listen_on(<relay>/p2p-circuit)` and dials of
//!   `<relay>/p2p-circuit/p2p/<peer>` addresses;
//! - [`Behaviour`], part of the swarm's behaviour: it owns the streams to relays — the
//!   `hop` exchanges (RESERVE, CONNECT) and the `stop` streams relays open to deliver
//!   circuits — protects each relay it holds a reservation on from the connection manager
//!   (tag [`Config::protect_tag`]) and reports [`Event`]s.
//!
//! A circuit's stream is upgraded exactly as rust-libp2p does it (multistream-select
//! `/noise`, Noise XX, `/yamux/1.0.0`, Yamux), so the result is a
//! [`Connection`](meshwire_transport::Connection) like any other;
//! [`Connection::is_relayed`](meshwire_transport::Connection::is_relayed) tells it apart.

mod addr;
mod behaviour;
mod exchange;
mod transport;

pub use addr::{listen_addr, CircuitAddr};
pub use behaviour::Behaviour;
pub use transport::Transport;

use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::{Stream, StreamError};
use meshwire_transport::upgrade::UpgradeConfig;
use meshwire_transport::{ListenerId, Multiaddr};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Limit, ProtocolError, Status};

/// Limits and timings of the relay client. Every limit is explicit; defaults are given beside
/// each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relays listened through at once (default 16).
    pub max_listeners: usize,
    /// Circuit dials waiting for the behaviour or for their relay's answer (default 64);
    /// more fail at once with [`CircuitError::ClientBusy`].
    pub max_pending_dials: usize,
    /// Inbound circuits of one listener accepted by the relay's stop request but not yet
    /// taken by the swarm (default 16); more are refused with `RESOURCE_LIMIT_EXCEEDED`.
    pub max_pending_incoming: usize,
    /// Stop requests being read and answered at once (default 64); more streams are reset.
    /// Only relays we listen through get that far: a stop stream from any other peer is
    /// reset unread (and reported as [`Event::InboundCircuitDenied`] with
    /// `NO_RESERVATION`), so strangers cannot take the room. Reservations and dials have
    /// room of their own, so a flood of stop streams delays neither.
    pub max_stop_streams: usize,
    /// Time for one hop or stop exchange (write the request, read the answer; default 20 s).
    pub exchange_timeout: Duration,
    /// A reservation is renewed when this share of its lifetime is left (default 1/4, so a
    /// one-hour reservation is renewed after 45 minutes).
    pub renew_when_left: f64,
    /// The reservation is renewed at least this long before it expires (default 30 s).
    pub renew_margin: Duration,
    /// The connection-manager tag protecting a relay we hold a reservation on
    /// (default `"relay"`).
    pub protect_tag: String,
    /// The Noise + Yamux upgrade of circuits.
    pub upgrade: UpgradeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_listeners: 16,
            max_pending_dials: 64,
            max_pending_incoming: 16,
            max_stop_streams: 64,
            exchange_timeout: Duration::from_secs(20),
            renew_when_left: 0.25,
            renew_margin: Duration::from_secs(30),
            protect_tag: "relay".into(),
            upgrade: UpgradeConfig::default(),
        }
    }
}

/// The two halves of the relay client for `key`'s node: put the [`Transport`] into the
/// swarm's transport and the [`Behaviour`] into its behaviour.
pub fn new(key: Keypair, config: Config) -> (Transport, Behaviour) {
    // Listen and unlisten commands come at most once per listener; dials are bounded.
    let (tx, rx) = mpsc::channel(config.max_pending_dials + 2 * config.max_listeners);
    // Listeners the behaviour opens itself ([`Behaviour::listen_via`]), at most
    // `max_listeners` in flight.
    let (adopt_tx, adopt_rx) = mpsc::channel(config.max_listeners.max(1));
    let transport = Transport::new(
        key.clone(),
        config.upgrade.clone(),
        tx,
        adopt_rx,
        config.max_listeners,
        config.max_pending_incoming,
    );
    let behaviour = Behaviour::new(key.peer_id(), rx, adopt_tx, config);
    (transport, behaviour)
}

/// Why a circuit or a reservation failed.
#[derive(Debug, Clone, Error)]
pub enum CircuitError {
    /// The client behaviour is not part of a running swarm any more.
    #[error("the relay client behaviour is gone")]
    ClientGone,
    /// Too many dials wait for the behaviour ([`Config::max_pending_dials`]).
    #[error("too many circuit requests pending")]
    ClientBusy,
    /// [`Config::max_listeners`] relays are listened through already.
    #[error("listener limit of {limit} reached")]
    TooManyListeners {
        /// The limit.
        limit: usize,
    },
    /// No stream to the relay: it could not be dialed, or does not speak the hop protocol.
    #[error("relay {relay} unreachable: {error}")]
    RelayUnreachable {
        /// The relay.
        relay: PeerId,
        /// Why.
        error: StreamError,
    },
    /// The relay answered with an error status.
    #[error("relay {relay} refused: {status}")]
    Refused {
        /// The relay.
        relay: PeerId,
        /// Its answer.
        status: Status,
    },
    /// The relay's answer did not follow the protocol.
    #[error("relay {relay} broke the protocol: {error}")]
    Protocol {
        /// The relay.
        relay: PeerId,
        /// What was wrong.
        error: ProtocolError,
    },
    /// The stream to the relay failed during the exchange.
    #[error("stream to relay {relay} failed: {error}")]
    Stream {
        /// The relay.
        relay: PeerId,
        /// What failed.
        error: String,
    },
    /// The relay did not answer in [`Config::exchange_timeout`].
    #[error("relay {relay} did not answer in time")]
    Timeout {
        /// The relay.
        relay: PeerId,
    },
    /// The relay's voucher is not signed by the relay for us.
    #[error("relay {relay} sent an invalid voucher: {error}")]
    BadVoucher {
        /// The relay.
        relay: PeerId,
        /// What was wrong.
        error: crate::voucher::VoucherError,
    },
    /// The connection to the relay closed, ending the reservation.
    #[error("connection to relay {relay} lost")]
    ConnectionLost {
        /// The relay.
        relay: PeerId,
    },
}

/// Why [`Behaviour::listen_via`] could not open a listener.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ListenViaError {
    /// Not `<address>/p2p/<relay>[/p2p-circuit]` of another peer.
    #[error("not a relay address: {0}")]
    NotARelayAddress(Multiaddr),
    /// [`Config::max_listeners`] relays are listened through already.
    #[error("listener limit of {limit} reached")]
    TooManyListeners {
        /// The limit.
        limit: usize,
    },
    /// The transport half has not yet taken the listeners opened before.
    #[error("the relay client transport is busy")]
    ClientBusy,
    /// The transport half is gone.
    #[error("the relay client transport is gone")]
    ClientGone,
}

/// What the relay client reports.
#[derive(Debug)]
pub enum Event {
    /// A relay accepted (or renewed) our reservation.
    ReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// Whether this renewed a reservation we held.
        renewal: bool,
        /// Its expiry, in seconds since the Unix epoch.
        expire: u64,
        /// The limit the relay puts on each circuit it relays to us.
        limit: Option<Limit>,
    },
    /// A reservation could not be made or renewed; its listener is closed.
    ReservationFailed {
        /// The relay.
        relay: PeerId,
        /// Why.
        error: CircuitError,
    },
    /// A circuit we asked for is open (the Noise + Yamux upgrade follows).
    OutboundCircuitEstablished {
        /// The relay.
        relay: PeerId,
        /// The peer reached.
        dst: PeerId,
        /// The relay's limit on it.
        limit: Option<Limit>,
    },
    /// A circuit we asked for failed.
    OutboundCircuitFailed {
        /// The relay.
        relay: PeerId,
        /// The peer we asked for.
        dst: PeerId,
        /// Why (also the dial's error).
        error: String,
    },
    /// A relay delivered a circuit from `src` (the upgrade follows).
    InboundCircuitEstablished {
        /// The relay.
        relay: PeerId,
        /// The peer connecting to us.
        src: PeerId,
        /// The relay's limit on it.
        limit: Option<Limit>,
    },
    /// A stop request was refused: from a peer we do not listen through (`NO_RESERVATION`,
    /// the stream reset unread), with too many circuits of the listener pending
    /// (`RESOURCE_LIMIT_EXCEEDED`), or malformed (`MALFORMED_MESSAGE`,
    /// `UNEXPECTED_MESSAGE`).
    InboundCircuitDenied {
        /// The peer that opened the stop stream.
        relay: PeerId,
        /// The status answered.
        status: Status,
    },
}

/// Transport → behaviour.
pub(crate) enum Command {
    Listen {
        id: ListenerId,
        relay: PeerId,
        relay_addr: Multiaddr,
        events: mpsc::Sender<ListenerEvent>,
    },
    Unlisten {
        id: ListenerId,
    },
    Dial {
        relay: PeerId,
        relay_addr: Multiaddr,
        dst: PeerId,
        reply: oneshot::Sender<Result<Circuit, CircuitError>>,
    },
}

/// Behaviour → transport: a listener the behaviour opened itself
/// ([`Behaviour::listen_via`]), for the transport to report to the swarm.
pub(crate) struct Adopt {
    pub(crate) id: ListenerId,
    pub(crate) circuit: CircuitAddr,
    pub(crate) events: mpsc::Receiver<ListenerEvent>,
}

/// Behaviour → one listener of the transport.
pub(crate) enum ListenerEvent {
    NewAddr(Multiaddr),
    Incoming(InboundCircuit),
    Closed(Result<(), CircuitError>),
}

/// An open outbound circuit, before its upgrade.
pub(crate) struct Circuit {
    pub(crate) stream: Stream,
}

/// An inbound circuit accepted from a relay's stop request, before its upgrade.
pub(crate) struct InboundCircuit {
    pub(crate) stream: Stream,
    pub(crate) src: PeerId,
}
