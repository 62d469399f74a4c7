//! The relay server's decisions, sans IO: which reservations and circuits to admit, when
//! reservations end, and what is counted.
//!
//! [`RelayServerEngine`] owns no stream, timer or clock. Its driver (the swarm behaviour)
//! reads hop requests, asks the engine, writes the answers, opens stop streams, runs
//! `circuit::bridge` and reports back:
//!
//! | the driver sees | it calls | and then |
//! | --- | --- | --- |
//! | a hop `RESERVE` on connection `c` from `peer` | [`RelayServerEngine::handle_reserve`] | `Ok`: answers `OK` with `expire_unix`, a voucher (`Voucher::sign`), its addresses and [`RelayServerEngine::circuit_limit`]; `Err(refusal)`: answers [`Refusal::status`] |
//! | a hop `CONNECT` to `dst` | [`RelayServerEngine::handle_connect`] | `Ok`: opens a stop stream on `dst_connection` and sends `CONNECT` with the limit; `Err`: answers the refusal's status |
//! | the destination's stop `OK`, hop `OK` written | [`RelayServerEngine::handle_circuit_established`] | bridges the two streams with [`RelayServerEngine::circuit_limits`] |
//! | the stop exchange failed or was refused | [`RelayServerEngine::handle_circuit_closed`] with [`CircuitEnd::stop_refused`](crate::circuit::CircuitEnd::stop_refused) | answers the source with that status |
//! | the bridge ended | [`RelayServerEngine::handle_circuit_closed`] with its [`CircuitEnd`] | |
//! | a connection closed | [`RelayServerEngine::handle_connection_closed`] | the circuits it returns fail on their own (their streams die with the connection) and are reported like any other |
//! | [`RelayServerEngine::poll_timeout`] is due | [`RelayServerEngine::handle_timeout`] | |
//!
//! and drains [`RelayServerEngine::poll_event`] after each call. Every circuit admitted by
//! `handle_connect` holds its slots until `handle_circuit_closed` reports it, exactly once.
//!
//! The driver should not serve hop requests that arrive over a relayed connection (the spec:
//! implementations should not accept reservations or connections over relayed connections;
//! rust-libp2p gives such connections no relay handler, go-libp2p answers
//! `PERMISSION_DENIED`).
//!
//! # Admission order
//!
//! A reservation: the [access filter](config::AccessFilter) (`PERMISSION_DENIED`); for a new
//! reservation (not a renewal on the same connection) `max_reservations`,
//! `max_reservations_per_peer`, `max_reservations_per_ip`; then the per-peer and per-IP rate
//! limiters, which renewals pass too (`RESOURCE_LIMIT_EXCEEDED`, as rust-libp2p answers every
//! limit). A circuit: the access filter; `max_circuits`; `max_circuits_per_peer` for source and
//! destination; the source's rate limiters (`RESOURCE_LIMIT_EXCEEDED`); then the destination's
//! reservation (`NO_RESERVATION`): rate limits are spent before the reservation is looked up,
//! as in rust-libp2p, so probing for reservations costs tokens.
//!
//! Limits are exact: `max_reservations_per_peer = 4` means four (rust-libp2p admits a fifth).
//! A renewal is not refused for `max_reservations` when the relay is full (rust-libp2p
//! refuses it, and the reservation then times out).

use std::fmt;
use std::net::IpAddr;
use std::time::Instant;

use meshwire_core::{ConnectionId, PeerId};

use crate::circuit::CircuitEnd;
use crate::protocol::Status;

#[cfg(feature = "swarm")]
mod behaviour;
pub mod config;
mod engine;
mod rate_limit;
#[cfg(test)]
mod tests;

#[cfg(feature = "swarm")]
pub use self::behaviour::{Behaviour, BehaviourConfig};
pub use self::config::{AccessFilter, AllowList, ConfigError, RateLimit, ServerConfig};
pub use self::engine::RelayServerEngine;

/// Identifies a circuit within one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitId(pub(crate) u64);

impl CircuitId {
    /// The number behind the id.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CircuitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit#{}", self.0)
    }
}

/// Why the relay refused a reservation or a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The access filter said no.
    PermissionDenied,
    /// [`ServerConfig::max_reservations`] reached.
    MaxReservations,
    /// [`ServerConfig::max_reservations_per_peer`] reached.
    MaxReservationsPerPeer,
    /// [`ServerConfig::max_reservations_per_ip`] reached.
    MaxReservationsPerIp,
    /// The peer's rate limiter is out of tokens (or tracks too many peers).
    PeerRateLimited,
    /// The IP's rate limiter is out of tokens (or tracks too many addresses).
    IpRateLimited,
    /// [`ServerConfig::max_circuits`] reached.
    MaxCircuits,
    /// [`ServerConfig::max_circuits_per_peer`] reached by the source or the destination.
    MaxCircuitsPerPeer,
    /// The destination holds no reservation.
    NoReservation,
    /// The stop exchange with the destination failed or was refused; the status the source
    /// is told.
    Destination(Status),
}

impl Refusal {
    /// The status the requester is answered with.
    pub fn status(&self) -> Status {
        match self {
            Refusal::PermissionDenied => Status::PermissionDenied,
            Refusal::NoReservation => Status::NoReservation,
            Refusal::Destination(status) => *status,
            Refusal::MaxReservations
            | Refusal::MaxReservationsPerPeer
            | Refusal::MaxReservationsPerIp
            | Refusal::PeerRateLimited
            | Refusal::IpRateLimited
            | Refusal::MaxCircuits
            | Refusal::MaxCircuitsPerPeer => Status::ResourceLimitExceeded,
        }
    }

    /// A short name for logs and metrics labels (`max_reservations_per_peer`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::PermissionDenied => "permission_denied",
            Refusal::MaxReservations => "max_reservations",
            Refusal::MaxReservationsPerPeer => "max_reservations_per_peer",
            Refusal::MaxReservationsPerIp => "max_reservations_per_ip",
            Refusal::PeerRateLimited => "peer_rate_limited",
            Refusal::IpRateLimited => "ip_rate_limited",
            Refusal::MaxCircuits => "max_circuits",
            Refusal::MaxCircuitsPerPeer => "max_circuits_per_peer",
            Refusal::NoReservation => "no_reservation",
            Refusal::Destination(_) => "destination",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Destination(status) => write!(f, "destination: {status}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An accepted `RESERVE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveAccepted {
    /// The reservation's end as UTC UNIX seconds: `Reservation.expire` and the voucher's
    /// expiration.
    pub expire_unix: u64,
    /// Whether it renews a reservation held on the same connection.
    pub renewed: bool,
}

/// An admitted `CONNECT`: the circuit is being set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectAccepted {
    /// The circuit, for `handle_circuit_established` / `handle_circuit_closed`.
    pub id: CircuitId,
    /// The destination's connection holding its reservation (its latest, if several): open
    /// the stop stream on it.
    pub dst_connection: ConnectionId,
}

/// A reservation held, as [`RelayServerEngine::reservations`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservationEntry {
    /// The reserving peer.
    pub peer: PeerId,
    /// The connection it reserved on.
    pub connection: ConnectionId,
    /// The address it connected from, as given.
    pub ip: Option<IpAddr>,
    /// When it times out.
    pub expires: Instant,
    /// Its end as UTC UNIX seconds.
    pub expire_unix: u64,
}

/// A circuit, as [`RelayServerEngine::circuits`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitEntry {
    /// The circuit.
    pub id: CircuitId,
    /// The peer that asked for it.
    pub src: PeerId,
    /// The connection its hop stream is on.
    pub src_connection: ConnectionId,
    /// The destination.
    pub dst: PeerId,
    /// The connection its stop stream is on.
    pub dst_connection: ConnectionId,
    /// Whether it is relaying (else being set up).
    pub established: bool,
}

/// What happened, for the application (drained with [`RelayServerEngine::poll_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A new reservation.
    ReservationAccepted {
        /// The reserving peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
        /// The end, UTC UNIX seconds.
        expire_unix: u64,
    },
    /// A reservation renewed on the same connection.
    ReservationRenewed {
        /// The reserving peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
        /// The new end, UTC UNIX seconds.
        expire_unix: u64,
    },
    /// A reservation request refused.
    ReservationRefused {
        /// The requesting peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
        /// Why.
        refusal: Refusal,
    },
    /// A reservation reached its end without renewal.
    ReservationTimedOut {
        /// The peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
    },
    /// A reservation ended with its connection.
    ReservationClosed {
        /// The peer.
        peer: PeerId,
        /// Its connection.
        connection: ConnectionId,
    },
    /// A circuit started relaying.
    CircuitAccepted {
        /// The circuit.
        id: CircuitId,
        /// Its source.
        src: PeerId,
        /// Its destination.
        dst: PeerId,
    },
    /// A circuit request refused, by the relay (`id` is `None`) or by the destination.
    CircuitRefused {
        /// The circuit, if it was admitted before the destination refused.
        id: Option<CircuitId>,
        /// The source.
        src: PeerId,
        /// The destination.
        dst: PeerId,
        /// Why.
        refusal: Refusal,
    },
    /// A circuit that relayed ended.
    CircuitClosed {
        /// The circuit.
        id: CircuitId,
        /// Its source.
        src: PeerId,
        /// Its destination.
        dst: PeerId,
        /// What it relayed (`a` is the source's hop stream) and why it ended.
        end: CircuitEnd,
    },
}
