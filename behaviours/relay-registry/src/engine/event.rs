//! What the engine hands out and reports: [`RelayInfo`], [`Action`]s for its driver,
//! [`RegistryEvent`]s, and the typed errors of its commands.

use std::time::{Duration, SystemTime};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use thiserror::Error;

use crate::record::RecordError;

/// A relay as the registry knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayInfo {
    /// The relay.
    pub node_id: PeerId,
    /// Where to reach it (without `/p2p/<relay>`).
    pub endpoint: Multiaddr,
    /// Reservations it offers.
    pub capacity: u32,
    /// Reservations it held at its last refresh (its capacity if it refused us as full
    /// since).
    pub current_load: u32,
    /// Our last measured ping RTT to it, if any.
    pub latency: Option<Duration>,
    /// When it registered.
    pub registered_at: SystemTime,
    /// When its current record expires.
    pub expires_at: SystemTime,
}

impl RelayInfo {
    /// `current_load / capacity`.
    pub fn load_ratio(&self) -> f64 {
        f64::from(self.current_load) / f64::from(self.capacity.max(1))
    }

    /// Whether it has no free reservation.
    pub fn is_full(&self) -> bool {
        self.current_load >= self.capacity
    }
}

/// What the engine asks its driver to do (drained with
/// [`RegistryEngine::poll_action`](super::RegistryEngine::poll_action)). The queue is bounded
/// by construction: one publication per refresh, one search and at most
/// [`max_fetches`](super::RegistryConfig::max_fetches) reads per discovery round, at most
/// [`max_probes`](super::RegistryConfig::max_probes) probes and one reservation per wanted
/// relay at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Store `value` in the DHT under `key` (a kademlia record, with `ttl`).
    Publish {
        /// The record key ([`record_key`](crate::record::record_key)).
        key: Vec<u8>,
        /// The signed record.
        value: Vec<u8>,
        /// Its validity.
        ttl: Duration,
    },
    /// Announce the local node as a provider of `key` in the DHT.
    Announce {
        /// The realm's [`provider_key`](crate::record::provider_key).
        key: Vec<u8>,
    },
    /// Stop announcing `key`.
    StopAnnouncing {
        /// The realm's provider key.
        key: Vec<u8>,
    },
    /// Look up the providers of `key`; report them with
    /// [`handle_providers`](super::RegistryEngine::handle_providers).
    Discover {
        /// The realm's provider key.
        key: Vec<u8>,
    },
    /// Read the DHT record under `key` (relay `relay`'s); report each value with
    /// [`handle_record`](super::RegistryEngine::handle_record).
    Fetch {
        /// The relay.
        relay: PeerId,
        /// Its record key.
        key: Vec<u8>,
    },
    /// Connect to `relay` so that its RTT gets measured; report it with
    /// [`handle_rtt`](super::RegistryEngine::handle_rtt), or a failed dial with
    /// [`handle_probe_failed`](super::RegistryEngine::handle_probe_failed).
    Probe {
        /// The relay.
        relay: PeerId,
        /// Its endpoint.
        addr: Multiaddr,
    },
    /// Reserve a slot on `relay` (listen through it); report the outcome with
    /// [`handle_reservation_accepted`](super::RegistryEngine::handle_reservation_accepted) or
    /// [`handle_reservation_failed`](super::RegistryEngine::handle_reservation_failed).
    Reserve {
        /// The relay.
        relay: PeerId,
        /// Its endpoint.
        addr: Multiaddr,
    },
    /// Give up the reservation (or the attempt) on `relay`.
    Release {
        /// The relay.
        relay: PeerId,
    },
}

/// Why a relay left the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    /// Its record expired (it stopped refreshing).
    Expired,
    /// It unregistered.
    Withdrawn,
    /// The index was full and a record outliving it took its place.
    Evicted,
}

/// Why a record read from the DHT was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RejectReason {
    /// It did not open or broke a bound (signature, signer, size, fields).
    #[error("{0}")]
    Invalid(#[from] RecordError),
    /// It is for another realm.
    #[error("record of realm {0:?}")]
    WrongRealm(String),
    /// It has expired.
    #[error("record expired")]
    Expired,
    /// It was issued further in the future than the clock skew allows.
    #[error("record issued in the future")]
    FromFuture,
    /// It claims a validity longer than allowed.
    #[error("record valid for too long")]
    TtlTooLong,
    /// The index is full of entries that outlive it or are in use.
    #[error("index full")]
    IndexFull,
}

impl RejectReason {
    /// The metric label of the refusal.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Invalid(_) => "invalid",
            RejectReason::WrongRealm(_) => "wrong_realm",
            RejectReason::Expired => "expired",
            RejectReason::FromFuture => "from_future",
            RejectReason::TtlTooLong => "ttl_too_long",
            RejectReason::IndexFull => "index_full",
        }
    }
}

/// Why a reservation failed or was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationFailure {
    /// The relay refused because it is full (`RESOURCE_LIMIT_EXCEEDED`).
    Full,
    /// The relay refused for another reason (its status, as text).
    Refused(String),
    /// The relay could not be reached, or the connection to it was lost.
    Unreachable(String),
    /// No answer within [`AutoRelayConfig::reserve_timeout`](super::AutoRelayConfig::reserve_timeout).
    Timeout,
}

/// Why the local relay stopped being registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnregisterReason {
    /// [`unregister`](super::RegistryEngine::unregister) was called.
    Requested,
    /// The announced endpoint stopped being a confirmed external address.
    NotReachable,
    /// The NAT detector found a NAT that keeps unsolicited inbound connections out.
    NatClosed,
}

/// What the registry reports.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryEvent {
    /// A relay entered the index.
    RelayAdded {
        /// The relay.
        relay: PeerId,
    },
    /// A relay left the index.
    RelayRemoved {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: RemovalReason,
    },
    /// A record read from the DHT was refused (forged, malformed, expired, ...).
    RecordRejected {
        /// The relay whose key it was read under, if known.
        relay: Option<PeerId>,
        /// Why.
        reason: RejectReason,
    },
    /// The local node is registered as a relay (first publication or a change).
    Registered {
        /// The endpoint announced.
        endpoint: Multiaddr,
        /// The capacity announced.
        capacity: u32,
    },
    /// The local node stopped being registered.
    Unregistered {
        /// Why.
        reason: UnregisterReason,
    },
    /// Auto relay chose `relay` and asks for a reservation on it.
    Reserving {
        /// The relay.
        relay: PeerId,
        /// Its score when it was chosen.
        score: f64,
    },
    /// Auto relay holds a reservation on `relay`.
    ReservationAcquired {
        /// The relay.
        relay: PeerId,
    },
    /// A reservation attempt of auto relay failed (it tries another relay).
    ReservationFailed {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: ReservationFailure,
    },
    /// A reservation auto relay held was lost (it reserves elsewhere).
    ReservationLost {
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: ReservationFailure,
    },
    /// A lost reservation was replaced.
    FailedOver {
        /// The relay lost.
        from: PeerId,
        /// The relay now reserved on.
        to: PeerId,
        /// From the loss to the new reservation.
        elapsed: Duration,
    },
    /// Auto relay wants more relays than it can find; it tries again when the index changes
    /// and every [`retry_interval`](super::AutoRelayConfig::retry_interval).
    NoRelaysAvailable {
        /// Reservations held or being made.
        held: usize,
        /// Reservations wanted.
        wanted: usize,
    },
}

/// No relay fits the request.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("no relays available ({known} known)")]
pub struct NoRelaysAvailable {
    /// Live relays in the index (all full, excluded, too far, or backed off).
    pub known: usize,
}

/// Why [`register`](super::RegistryEngine::register) refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The node has no confirmed external address: it is not publicly reachable (nor behind
    /// a full-cone NAT), so it may not serve as a relay.
    #[error("not publicly reachable: no confirmed external address")]
    NotReachable,
    /// The endpoint is not one of the node's confirmed external addresses.
    #[error("endpoint {0} is not a confirmed external address")]
    EndpointNotConfirmed(Multiaddr),
    /// The NAT detector found a NAT that keeps unsolicited inbound connections out (only no
    /// NAT or a full cone lets peers reach a relay).
    #[error("behind a NAT that refuses unsolicited inbound connections ({0:?})")]
    NatClosed(meshwire_nat::NatProfile),
    /// The capacity is 0 or above the record format's bound.
    #[error("capacity {0} outside 1..={max}", max = crate::record::MAX_CAPACITY)]
    BadCapacity(u32),
    /// The record could not be made (an endpoint too long for the format).
    #[error("record: {0}")]
    Record(#[from] RecordError),
    /// The swarm behaviour runs no relay server to offer (behaviour only).
    #[error("no relay server in this behaviour")]
    NoRelayServer,
}
