//! The registry's settings, with their defaults, and the options of its commands.

use std::time::Duration;

use thiserror::Error;

use super::select::ScoreParams;
use crate::record::{MAX_CAPACITY, MAX_REALM_LEN};

/// Settings of the registry engine. Every limit is explicit; defaults are beside each field.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// Relays and clients of one realm find each other (default `"default"`; at most
    /// [`MAX_REALM_LEN`] bytes).
    pub realm: String,
    /// Validity of a relay's record (default 120 s): a relay that stops refreshing
    /// disappears from every index this long after its last refresh. It must cover a refresh
    /// and its way through the DHT (the swarm behaviour checks it is at least
    /// `refresh_interval` plus twice kademlia's request timeout).
    pub record_ttl: Duration,
    /// How often a registered relay republishes its record with its current load (default
    /// 30 s; less than `record_ttl`).
    pub refresh_interval: Duration,
    /// How often a registered relay re-announces itself as a provider of the realm key
    /// (default 10 min).
    pub announce_interval: Duration,
    /// How often the DHT is searched for the realm's relays and their records read (default
    /// 30 s). The first search starts at once.
    pub discovery_interval: Duration,
    /// Records read per search at most (default 64).
    pub max_fetches: usize,
    /// Relays in the local index at most, tombstones included (default 1024).
    pub max_relays: usize,
    /// Records valid for longer than this are refused (default 10 min).
    pub max_ttl: Duration,
    /// Records issued further in the future than this are refused (default 30 s).
    pub max_clock_skew: Duration,
    /// Confirmed external addresses remembered (default 16).
    pub max_external_addrs: usize,
    /// The constants of the scoring formula.
    pub scoring: ScoreParams,
    /// A measured RTT older than this is measured again before a selection that needs it
    /// (default 5 min); it is still used until then.
    pub rtt_ttl: Duration,
    /// A selection probes (dials, so that ping measures the RTT) this many of its best
    /// candidates lacking a fresh RTT, ranked as if their RTT were 0 (default 6).
    pub probe_candidates: usize,
    /// Probes under way at most (default 8).
    pub max_probes: usize,
    /// A probe without an RTT after this is given up (default 10 s); the relay is not
    /// blamed (only a failed dial is).
    pub probe_timeout: Duration,
    /// A relay that failed a probe's dial or a reservation is not chosen for this long
    /// (default 60 s).
    pub failure_backoff: Duration,
    /// Events queued at most (default 1024); the oldest is dropped beyond.
    pub max_events: usize,
    /// Automatic reservations (default off).
    pub auto_relay: Option<AutoRelayConfig>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            realm: "default".into(),
            record_ttl: Duration::from_secs(120),
            refresh_interval: Duration::from_secs(30),
            announce_interval: Duration::from_secs(600),
            discovery_interval: Duration::from_secs(30),
            max_fetches: 64,
            max_relays: 1024,
            max_ttl: Duration::from_secs(600),
            max_clock_skew: Duration::from_secs(30),
            max_external_addrs: 16,
            scoring: ScoreParams::default(),
            rtt_ttl: Duration::from_secs(300),
            probe_candidates: 6,
            max_probes: 8,
            probe_timeout: Duration::from_secs(10),
            failure_backoff: Duration::from_secs(60),
            max_events: 1024,
            auto_relay: None,
        }
    }
}

/// Settings of auto relay: the client keeps reservations on `reservations` relays chosen by
/// the registry, and replaces each one it loses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoRelayConfig {
    /// Relays to hold a reservation on (default 2).
    pub reservations: usize,
    /// A reservation not accepted in this time is abandoned and the relay backed off
    /// (default 30 s: the relay client's 20 s exchange plus a dial).
    pub reserve_timeout: Duration,
    /// A reservation not accepted after this is hedged: the next best relay is asked too, in
    /// parallel, and whichever accepts first is kept (the other is released). This bounds
    /// the cost of a candidate that died without the registry knowing: `hedge_after` instead
    /// of a dial timeout (default 1.5 s, several reservation exchanges at common RTTs). At
    /// most `reservations` extra attempts run at once.
    pub hedge_after: Duration,
    /// The first selection after auto relay starts waits this long at most for the RTT
    /// probes of its candidates (default 2 s). Replacements never wait.
    pub probe_wait: Duration,
    /// With fewer candidates than wanted, selection is tried again after this (default 5 s)
    /// and whenever the index changes.
    pub retry_interval: Duration,
}

impl Default for AutoRelayConfig {
    fn default() -> Self {
        AutoRelayConfig {
            reservations: 2,
            reserve_timeout: Duration::from_secs(30),
            hedge_after: Duration::from_millis(1500),
            probe_wait: Duration::from_secs(2),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// Options of [`register`](super::RegistryEngine::register).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOpts {
    /// Reservations offered at most (default 100). A swarm behaviour with a relay server
    /// announces at most the server's `max_reservations`.
    pub capacity: u32,
}

impl Default for RegisterOpts {
    fn default() -> Self {
        RegisterOpts { capacity: 100 }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The realm is longer than [`MAX_REALM_LEN`].
    #[error("realm of {0} bytes exceeds {MAX_REALM_LEN}")]
    RealmTooLong(usize),
    /// `refresh_interval` must be shorter than `record_ttl`, which must not exceed `max_ttl`,
    /// and all must be non-zero.
    #[error("need 0 < refresh_interval < record_ttl <= max_ttl")]
    BadTimes,
    /// `discovery_interval`, `announce_interval`, `probe_timeout` must be non-zero.
    #[error("{0} must be non-zero")]
    Zero(&'static str),
    /// `max_relays` must be at least 1.
    #[error("max_relays must be at least 1")]
    NoRoom,
    /// Auto relay needs at least one reservation.
    #[error("auto relay needs reservations >= 1")]
    NoReservations,
    /// `record_ttl` leaves no room for a refresh to reach the DHT: it must be at least
    /// `refresh_interval` plus twice the DHT's request timeout (a store waits for the lookup
    /// before it, and a lookup for the peers that do not answer).
    #[error("record_ttl {ttl:?} below refresh_interval + 2 x DHT request timeout = {needed:?}")]
    TtlTooShortForDht {
        /// The record TTL.
        ttl: Duration,
        /// The least TTL that works.
        needed: Duration,
    },
}

impl RegistryConfig {
    /// Checks that the settings can work.
    ///
    /// # Errors
    ///
    /// [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.len() > MAX_REALM_LEN {
            return Err(ConfigError::RealmTooLong(self.realm.len()));
        }
        if self.refresh_interval.is_zero()
            || self.refresh_interval >= self.record_ttl
            || self.record_ttl > self.max_ttl
        {
            return Err(ConfigError::BadTimes);
        }
        for (name, d) in [
            ("discovery_interval", self.discovery_interval),
            ("announce_interval", self.announce_interval),
            ("probe_timeout", self.probe_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_relays == 0 {
            return Err(ConfigError::NoRoom);
        }
        if let Some(a) = &self.auto_relay {
            a.validate()?;
        }
        Ok(())
    }
}

impl AutoRelayConfig {
    /// Checks that the settings can work.
    ///
    /// # Errors
    ///
    /// [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.reservations == 0 {
            return Err(ConfigError::NoReservations);
        }
        if self.retry_interval.is_zero() {
            return Err(ConfigError::Zero("retry_interval"));
        }
        if self.reserve_timeout.is_zero() {
            return Err(ConfigError::Zero("reserve_timeout"));
        }
        if self.hedge_after.is_zero() {
            return Err(ConfigError::Zero("hedge_after"));
        }
        Ok(())
    }
}

/// Capacity accepted by [`RegisterOpts`]: 1..=[`MAX_CAPACITY`].
pub(crate) fn capacity_ok(capacity: u32) -> bool {
    (1..=MAX_CAPACITY).contains(&capacity)
}
