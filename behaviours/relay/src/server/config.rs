//! [`ServerConfig`]: every limit of a relay server, with rust-libp2p's defaults.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use meshwire_core::PeerId;
use thiserror::Error;

use crate::circuit::CircuitLimits;
use crate::protocol::Limit;

/// A token bucket: `limit` tokens, one more every `interval`; each request takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size: requests allowed in a burst.
    pub limit: u32,
    /// Time to earn back one token.
    pub interval: Duration,
}

/// Decides who may use the relay; a refusal is answered `PERMISSION_DENIED`. go-libp2p's
/// `ACLFilter` (rust-libp2p has none).
pub trait AccessFilter: Send + Sync {
    /// Whether `peer`, connected from `ip`, may reserve a slot.
    fn allow_reserve(&self, peer: &PeerId, ip: Option<IpAddr>) -> bool;
    /// Whether `src`, connected from `src_ip`, may open a circuit to `dst`.
    fn allow_connect(&self, src: &PeerId, src_ip: Option<IpAddr>, dst: &PeerId) -> bool;
}

/// An [`AccessFilter`] for a private relay: only the listed peers may reserve, and circuits
/// may only lead to listed peers (from anyone).
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    peers: HashSet<PeerId>,
}

impl AllowList {
    /// An allow-list of `peers`.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Self {
        AllowList {
            peers: peers.into_iter().collect(),
        }
    }

    /// Adds `peer`.
    pub fn insert(&mut self, peer: PeerId) {
        self.peers.insert(peer);
    }

    /// Whether `peer` is listed.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }
}

impl AccessFilter for AllowList {
    fn allow_reserve(&self, peer: &PeerId, _ip: Option<IpAddr>) -> bool {
        self.peers.contains(peer)
    }

    fn allow_connect(&self, _src: &PeerId, _src_ip: Option<IpAddr>, dst: &PeerId) -> bool {
        self.peers.contains(dst)
    }
}

/// Every limit of a relay server. The defaults are rust-libp2p's (`libp2p-relay` 0.22,
/// `behaviour::Config::default()`), except where a field says otherwise.
///
/// Reservations are held per connection, as in rust-libp2p: a peer may hold one on each of
/// its connections (up to [`ServerConfig::max_reservations_per_peer`]), and a reservation
/// lives as long as its connection (and at most [`ServerConfig::reservation_duration`] after
/// its last renewal).
#[derive(Clone)]
pub struct ServerConfig {
    /// How long a reservation lasts after it is made or renewed (1 hour; rust-libp2p
    /// `reservation_duration`, go-libp2p `ReservationTTL`).
    pub reservation_duration: Duration,
    /// Most reservations held at once (128; rust-libp2p `max_reservations`, go-libp2p
    /// `MaxReservations`).
    pub max_reservations: usize,
    /// Most reservations one peer holds at once, over all its connections (4; rust-libp2p
    /// `max_reservations_per_peer`, which lets a peer hold one more than it says).
    pub max_reservations_per_peer: usize,
    /// Most reservations held from one IP address (IPv4) or one /64 prefix (IPv6) at once, or
    /// `None` for no such limit (8, go-libp2p's `MaxReservationsPerIP`; rust-libp2p has no
    /// such limit, only rate limits).
    pub max_reservations_per_ip: Option<usize>,
    /// Reservations (new and renewed) per peer (30, one more every 2 minutes: rust-libp2p's
    /// default per-peer reservation rate limiter); `None` disables it.
    pub reservation_rate_per_peer: Option<RateLimit>,
    /// Reservations (new and renewed) per IP address or IPv6 /64 (60, one more every minute:
    /// rust-libp2p's default per-IP reservation rate limiter); `None` disables it.
    pub reservation_rate_per_ip: Option<RateLimit>,
    /// Most circuits relayed at once, counting those being set up (16; rust-libp2p
    /// `max_circuits`).
    pub max_circuits: usize,
    /// Most circuits one peer takes part in at once, as source or destination (4;
    /// rust-libp2p `max_circuits_per_peer`, which lets a peer have one more than it says).
    pub max_circuits_per_peer: usize,
    /// Circuits opened per source peer (30, one more every 2 minutes: rust-libp2p's default
    /// per-peer circuit source rate limiter); `None` disables it.
    pub circuit_rate_per_peer: Option<RateLimit>,
    /// Circuits opened per source IP address or IPv6 /64 (60, one more every minute:
    /// rust-libp2p's default per-IP circuit source rate limiter); `None` disables it.
    pub circuit_rate_per_ip: Option<RateLimit>,
    /// Longest life of a circuit (2 minutes; rust-libp2p `max_circuit_duration`, go-libp2p
    /// `Limit.Duration`); `None` for unlimited circuits (private relays). Sent to both ends in
    /// whole seconds, rounded up.
    pub max_circuit_duration: Option<Duration>,
    /// Most bytes relayed per circuit, both directions together (128 KiB = 1 << 17;
    /// rust-libp2p `max_circuit_bytes`, go-libp2p `Limit.Data`, which go-libp2p applies per
    /// direction); `None` for unlimited.
    pub max_circuit_bytes: Option<u64>,
    /// Ids tracked by each rate limiter at most (8192; meshwire's bound, rust-libp2p's
    /// limiters are unbounded). An id is tracked while its bucket is not full; when a limiter
    /// tracks this many, requests from new ids are refused as rate-limited until buckets
    /// refill, so a flood of fresh peer ids cannot grow the relay's memory.
    pub rate_limiter_max_tracked: usize,
    /// Who may reserve and open circuits (`None`: everyone, as in rust-libp2p).
    pub access: Option<Arc<dyn AccessFilter>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            reservation_duration: Duration::from_secs(60 * 60),
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_reservations_per_ip: Some(8),
            reservation_rate_per_peer: Some(RateLimit {
                limit: 30,
                interval: Duration::from_secs(2 * 60),
            }),
            reservation_rate_per_ip: Some(RateLimit {
                limit: 60,
                interval: Duration::from_secs(60),
            }),
            max_circuits: 16,
            max_circuits_per_peer: 4,
            circuit_rate_per_peer: Some(RateLimit {
                limit: 30,
                interval: Duration::from_secs(2 * 60),
            }),
            circuit_rate_per_ip: Some(RateLimit {
                limit: 60,
                interval: Duration::from_secs(60),
            }),
            max_circuit_duration: Some(Duration::from_secs(2 * 60)),
            max_circuit_bytes: Some(1 << 17),
            rate_limiter_max_tracked: 8192,
            access: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("reservation_duration", &self.reservation_duration)
            .field("max_reservations", &self.max_reservations)
            .field("max_reservations_per_peer", &self.max_reservations_per_peer)
            .field("max_reservations_per_ip", &self.max_reservations_per_ip)
            .field("reservation_rate_per_peer", &self.reservation_rate_per_peer)
            .field("reservation_rate_per_ip", &self.reservation_rate_per_ip)
            .field("max_circuits", &self.max_circuits)
            .field("max_circuits_per_peer", &self.max_circuits_per_peer)
            .field("circuit_rate_per_peer", &self.circuit_rate_per_peer)
            .field("circuit_rate_per_ip", &self.circuit_rate_per_ip)
            .field("max_circuit_duration", &self.max_circuit_duration)
            .field("max_circuit_bytes", &self.max_circuit_bytes)
            .field("rate_limiter_max_tracked", &self.rate_limiter_max_tracked)
            .field("access", &self.access.as_ref().map(|_| "<filter>"))
            .finish()
    }
}

/// A [`ServerConfig`] that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `reservation_duration` under one second (the reservation's expiry is sent in whole
    /// seconds).
    #[error("reservation_duration must be at least one second")]
    ReservationDuration,
    /// `max_circuit_duration` is zero (on the wire 0 means "no limit") or longer than
    /// `u32::MAX` seconds.
    #[error("max_circuit_duration must be between 1 ns and u32::MAX seconds")]
    CircuitDuration,
    /// `max_circuit_bytes` is zero (on the wire 0 means "no limit").
    #[error("max_circuit_bytes must not be zero (use None for no limit)")]
    CircuitBytes,
    /// A rate limit with a zero `limit` or `interval`; the field's name.
    #[error("rate limit `{0}` needs a non-zero limit and interval")]
    RateLimit(&'static str),
    /// `rate_limiter_max_tracked` is zero.
    #[error("rate_limiter_max_tracked must not be zero")]
    RateLimiterSize,
}

impl ServerConfig {
    /// Checks that the configuration can work.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reservation_duration < Duration::from_secs(1) {
            return Err(ConfigError::ReservationDuration);
        }
        if let Some(d) = self.max_circuit_duration {
            if d.is_zero() || d > Duration::from_secs(u32::MAX.into()) {
                return Err(ConfigError::CircuitDuration);
            }
        }
        if self.max_circuit_bytes == Some(0) {
            return Err(ConfigError::CircuitBytes);
        }
        for (name, rate) in [
            ("reservation_rate_per_peer", self.reservation_rate_per_peer),
            ("reservation_rate_per_ip", self.reservation_rate_per_ip),
            ("circuit_rate_per_peer", self.circuit_rate_per_peer),
            ("circuit_rate_per_ip", self.circuit_rate_per_ip),
        ] {
            if let Some(r) = rate {
                if r.limit == 0 || r.interval.is_zero() {
                    return Err(ConfigError::RateLimit(name));
                }
            }
        }
        if self.rate_limiter_max_tracked == 0 {
            return Err(ConfigError::RateLimiterSize);
        }
        Ok(())
    }

    /// The `limit` sent in hop and stop responses: [`ServerConfig::max_circuit_duration`]
    /// and [`ServerConfig::max_circuit_bytes`] as [`Limit::from_limits`] writes them, `None`
    /// when both are unlimited.
    pub fn circuit_limit(&self) -> Option<Limit> {
        Limit::from_limits(self.max_circuit_duration, self.max_circuit_bytes)
    }

    /// The limits a relay enforces on each circuit (what `circuit::bridge` takes).
    pub fn circuit_limits(&self) -> CircuitLimits {
        CircuitLimits {
            duration: self.max_circuit_duration,
            bytes: self.max_circuit_bytes,
        }
    }
}
