//! [`RegistryEngine`]: the relay registry as a sans-IO state machine.
//!
//! The engine holds the local index of relays, registers the local node as a relay, selects
//! relays, and runs auto relay; it owns no socket, reads no clock and spawns nothing. Its
//! driver (the swarm `Behaviour` of feature `swarm`, or the simulation of feature `sim`)
//! feeds it what happens and carries out what it asks:
//!
//! | engine | driver |
//! | --- | --- |
//! | [`poll_action`](RegistryEngine::poll_action) → [`Action::Publish`], [`Action::Announce`], [`Action::StopAnnouncing`] | kademlia `put_record` / `start_providing` / `stop_providing` |
//! | [`Action::Discover`] → [`handle_providers`](RegistryEngine::handle_providers) | `get_providers` of the realm key |
//! | [`Action::Fetch`] → [`handle_record`](RegistryEngine::handle_record) | `get_record` of a relay's key |
//! | [`Action::Probe`] → [`handle_rtt`](RegistryEngine::handle_rtt) / [`handle_probe_failed`](RegistryEngine::handle_probe_failed) | dial; ping measures the RTT |
//! | [`Action::Reserve`] / [`Action::Release`] → [`handle_reservation_accepted`](RegistryEngine::handle_reservation_accepted) / [`handle_reservation_failed`](RegistryEngine::handle_reservation_failed) | the relay client listens through the relay / stops |
//! | [`handle_external_addr_confirmed`](RegistryEngine::handle_external_addr_confirmed) / [`_expired`](RegistryEngine::handle_external_addr_expired) | the swarm's confirmed external addresses |
//! | [`handle_nat_profile`](RegistryEngine::handle_nat_profile) | the NAT detector's profile (`meshwire_nat::SharedNatProfile`) |
//! | [`poll_timeout`](RegistryEngine::poll_timeout) / [`handle_timeout`](RegistryEngine::handle_timeout) | one timer |
//!
//! Records carry wall-clock times (ms since the Unix epoch); the engine maps its `Instant`s to
//! them through one anchor taken at creation ([`RegistryEngine::with_unix_time`] sets it, for
//! simulations on a virtual clock).
//!
//! # Lifecycle of a relay's entry
//!
//! A registered relay publishes its signed record (with its current load, set with
//! [`set_load`](RegistryEngine::set_load)) every [`RegistryConfig::refresh_interval`], valid
//! for [`RegistryConfig::record_ttl`]. Every node searches the DHT every
//! [`RegistryConfig::discovery_interval`] and reads each provider's record; a verified record
//! newer than the one held replaces it. An entry leaves the index at its record's expiry
//! (capped at [`RegistryConfig::max_ttl`] from when it was read): a relay that stops
//! refreshing disappears everywhere at most `record_ttl` after its last refresh. An
//! unregistering relay publishes a tombstone, which removes it at the next read.
//!
//! # Auto relay
//!
//! With [`RegistryConfig::auto_relay`], the engine keeps reservations on
//! [`AutoRelayConfig::reservations`] relays: it ranks the index for the local node as target
//! ([`select`]), asks for a reservation on the best ones, and on every loss or failure marks
//! the relay (full, or backed off for [`RegistryConfig::failure_backoff`]) and at once asks
//! for the next best. A replacement is reported with the time since the loss
//! ([`RegistryEvent::FailedOver`]). The bound on that time is: the driver's detection of the
//! loss, plus one reservation exchange with the replacement (and, if the replacement fails,
//! one more exchange per failed candidate, each at most
//! [`AutoRelayConfig::reserve_timeout`]).

mod auto;
mod config;
mod event;
mod index;
pub mod select;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshwire_core::{Keypair, PeerId};
use meshwire_nat::NatProfile;
use multiaddr::{Multiaddr, Protocol};
use tracing::{debug, warn};

pub use self::auto::ReservationState;
pub use self::config::{AutoRelayConfig, ConfigError, RegisterOpts, RegistryConfig};
pub use self::event::{
    Action, NoRelaysAvailable, RegisterError, RegistryEvent, RejectReason, RelayInfo,
    RemovalReason, ReservationFailure, UnregisterReason,
};
pub use self::index::{IndexFull, InsertOutcome, RelayIndex};
pub use self::select::{FindOpts, ScoreParams};

use self::auto::AutoState;
use self::index::Entry;
use crate::metrics::RegistryMetrics;
use crate::record::{provider_key, record_key, RelayRecord};

/// Maps the engine's `Instant`s to milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
struct UnixClock {
    at: Instant,
    unix_ms: u64,
}

impl UnixClock {
    fn unix_ms(&self, now: Instant) -> u64 {
        if now >= self.at {
            let d = (now - self.at).as_millis();
            self.unix_ms
                .saturating_add(u64::try_from(d).unwrap_or(u64::MAX))
        } else {
            let d = (self.at - now).as_millis();
            self.unix_ms
                .saturating_sub(u64::try_from(d).unwrap_or(u64::MAX))
        }
    }

    fn instant(&self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            let d = Duration::from_millis(unix_ms - self.unix_ms);
            self.at.checked_add(d).unwrap_or(self.at)
        } else {
            let d = Duration::from_millis(self.unix_ms - unix_ms);
            self.at.checked_sub(d).unwrap_or(self.at)
        }
    }
}

/// The local node as a relay.
#[derive(Debug)]
struct LocalRelay {
    endpoint: Multiaddr,
    capacity: u32,
    registered_at: u64,
    last_issued: u64,
    next_refresh: Instant,
    next_announce: Instant,
}

/// The relay registry's state machine; see the [module docs](self).
pub struct RegistryEngine {
    key: Keypair,
    local: PeerId,
    config: RegistryConfig,
    clock: UnixClock,
    index: RelayIndex,
    /// Confirmed external addresses, without `/p2p`, at most `max_external_addrs`.
    external: Vec<Multiaddr>,
    /// Our NAT as detected (`None`: not known; the confirmed addresses decide alone).
    nat: Option<NatProfile>,
    local_relay: Option<LocalRelay>,
    load: u32,
    next_discovery: Instant,
    /// Relays whose record is being read this discovery round.
    fetching: HashSet<PeerId>,
    /// Probes under way, with their deadline.
    probes: HashMap<PeerId, Instant>,
    auto: AutoState,
    actions: VecDeque<Action>,
    events: VecDeque<RegistryEvent>,
    metrics: Option<RegistryMetrics>,
}

impl std::fmt::Debug for RegistryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryEngine")
            .field("local", &self.local)
            .field("relays", &self.index.live())
            .field("registered", &self.local_relay.is_some())
            .field("auto_relay", &self.auto.held)
            .finish_non_exhaustive()
    }
}

/// `addr` without a trailing `/p2p/..`.
pub(crate) fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// `addr/p2p/<peer>`.
pub(crate) fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let addr = without_p2p(addr);
    // A peer id is a valid multihash by construction, so the conversion cannot fail.
    match multiaddr::PeerId::from_bytes(peer.as_bytes()) {
        Ok(p) => addr.with(Protocol::P2p(p)),
        Err(_) => addr,
    }
}

fn system_time(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

fn info(e: &Entry) -> RelayInfo {
    let r = &e.record;
    RelayInfo {
        node_id: r.node_id,
        endpoint: r.endpoint.clone(),
        capacity: r.capacity,
        current_load: if e.full { r.capacity } else { r.current_load },
        latency: e.rtt.map(|(rtt, _)| rtt),
        registered_at: system_time(r.registered_at),
        expires_at: system_time(r.expires_at),
    }
}

impl RegistryEngine {
    /// An engine for the node of `key` (its records are signed with it), at time `now`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for settings that cannot work.
    pub fn new(key: Keypair, config: RegistryConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut auto = AutoState::default();
        auto.config = config.auto_relay.clone();
        Ok(RegistryEngine {
            local: key.peer_id(),
            key,
            clock: UnixClock { at: now, unix_ms },
            index: RelayIndex::new(config.max_relays),
            external: Vec::new(),
            nat: None,
            local_relay: None,
            load: 0,
            next_discovery: now,
            fetching: HashSet::new(),
            probes: HashMap::new(),
            auto,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            metrics: None,
            config,
        })
    }

    /// Sets the wall-clock time at `now` (milliseconds since the Unix epoch), for simulations
    /// on a virtual clock.
    pub fn with_unix_time(mut self, now: Instant, unix_ms: u64) -> Self {
        self.clock = UnixClock { at: now, unix_ms };
        self
    }

    /// Reports to `metrics` (see [`RegistryMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RegistryMetrics) -> Self {
        metrics.known_relays.set(self.index.live() as i64);
        self.metrics = Some(metrics);
        self
    }

    /// The local node.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The metrics, if any.
    pub fn metrics(&self) -> Option<&RegistryMetrics> {
        self.metrics.as_ref()
    }

    /// The wall-clock time at `now`, ms since the Unix epoch.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.clock.unix_ms(now)
    }

    // ----- reachability and registration ---------------------------------------------------

    /// The swarm confirmed `addr` as an external address. Relayed addresses are ignored.
    pub fn handle_external_addr_confirmed(&mut self, addr: &Multiaddr) {
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            return;
        }
        let addr = without_p2p(addr);
        if !self.external.contains(&addr) && self.external.len() < self.config.max_external_addrs {
            self.external.push(addr);
        }
    }

    /// `addr` is no longer an external address; if it was the registered endpoint, the node
    /// unregisters ([`UnregisterReason::NotReachable`]).
    pub fn handle_external_addr_expired(&mut self, now: Instant, addr: &Multiaddr) {
        let addr = without_p2p(addr);
        self.external.retain(|a| *a != addr);
        if self
            .local_relay
            .as_ref()
            .is_some_and(|l| l.endpoint == addr)
        {
            self.withdraw(now, UnregisterReason::NotReachable);
        }
    }

    /// Whether the node may serve as a relay: a confirmed external address, and no detected
    /// NAT that refuses unsolicited inbound connections
    /// ([`NatProfile::accepts_unsolicited`] `== Some(false)`).
    pub fn is_publicly_reachable(&self) -> bool {
        !self.external.is_empty() && self.nat_refusal().is_none()
    }

    /// The detected NAT, if it keeps unsolicited inbound connections out.
    fn nat_refusal(&self) -> Option<NatProfile> {
        self.nat.filter(|p| p.accepts_unsolicited() == Some(false))
    }

    /// The NAT detector's current profile (`None`: not known). A profile whose NAT keeps
    /// unsolicited inbound connections out (anything but no NAT or a full cone, when its
    /// filtering was tested) forbids registering, and a registered node unregisters
    /// ([`UnregisterReason::NatClosed`]).
    pub fn handle_nat_profile(&mut self, now: Instant, profile: Option<NatProfile>) {
        self.nat = profile;
        if self.nat_refusal().is_some() {
            self.withdraw(now, UnregisterReason::NatClosed);
        }
    }

    /// Announces the local node as a relay reachable at `endpoint` (one of its confirmed
    /// external addresses) offering `opts.capacity` reservations: the record is published at
    /// once and refreshed every [`RegistryConfig::refresh_interval`] with the load last given
    /// to [`set_load`](Self::set_load). Registering again changes the endpoint or capacity.
    ///
    /// # Errors
    ///
    /// [`RegisterError::NotReachable`] without a confirmed external address (the node is not
    /// publicly reachable), [`RegisterError::EndpointNotConfirmed`],
    /// [`RegisterError::BadCapacity`], [`RegisterError::Record`].
    pub fn register(
        &mut self,
        now: Instant,
        endpoint: Multiaddr,
        opts: RegisterOpts,
    ) -> Result<(), RegisterError> {
        if self.external.is_empty() {
            return Err(RegisterError::NotReachable);
        }
        if let Some(p) = self.nat_refusal() {
            return Err(RegisterError::NatClosed(p));
        }
        let endpoint = without_p2p(&endpoint);
        if !self.external.contains(&endpoint) {
            return Err(RegisterError::EndpointNotConfirmed(endpoint));
        }
        if !config::capacity_ok(opts.capacity) {
            return Err(RegisterError::BadCapacity(opts.capacity));
        }
        let now_u = self.clock.unix_ms(now);
        // Check that such a record can be made before changing anything.
        RelayRecord {
            node_id: self.local,
            realm: self.config.realm.clone(),
            endpoint: endpoint.clone(),
            capacity: opts.capacity,
            current_load: 0,
            registered_at: now_u,
            issued_at: now_u,
            expires_at: now_u + 1,
            withdrawn: false,
        }
        .sign(&self.key)?;
        let (registered_at, last_issued) = self
            .local_relay
            .as_ref()
            .map(|l| (l.registered_at, l.last_issued))
            .unwrap_or((now_u, 0));
        self.local_relay = Some(LocalRelay {
            endpoint: endpoint.clone(),
            capacity: opts.capacity,
            registered_at,
            last_issued,
            next_refresh: now,
            next_announce: now,
        });
        self.event(RegistryEvent::Registered {
            endpoint,
            capacity: opts.capacity,
        });
        self.refresh(now);
        Ok(())
    }

    /// Stops announcing the local node as a relay: a tombstone record is published, so that
    /// readers drop it at once rather than at its expiry. Returns whether it was registered.
    pub fn unregister(&mut self, now: Instant) -> bool {
        self.withdraw(now, UnregisterReason::Requested)
    }

    /// Whether the local node is registered as a relay.
    pub fn is_registered(&self) -> bool {
        self.local_relay.is_some()
    }

    /// The local relay's current load (reservations held), published at the next refresh.
    pub fn set_load(&mut self, load: u32) {
        self.load = load;
    }

    fn withdraw(&mut self, now: Instant, reason: UnregisterReason) -> bool {
        let Some(l) = self.local_relay.take() else {
            return false;
        };
        let issued = self.clock.unix_ms(now).max(l.last_issued + 1);
        let tombstone = RelayRecord {
            node_id: self.local,
            realm: self.config.realm.clone(),
            endpoint: l.endpoint,
            capacity: l.capacity,
            current_load: 0,
            registered_at: l.registered_at.min(issued),
            issued_at: issued,
            expires_at: issued + self.ttl_ms(),
            withdrawn: true,
        };
        self.actions.push_back(Action::StopAnnouncing {
            key: provider_key(&self.config.realm),
        });
        self.publish_record(now, tombstone);
        self.event(RegistryEvent::Unregistered { reason });
        true
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.config.record_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Publishes the local relay's record with its current load.
    fn refresh(&mut self, now: Instant) {
        let now_u = self.clock.unix_ms(now);
        let ttl = self.ttl_ms();
        let (realm, refresh, announce_every) = (
            self.config.realm.clone(),
            self.config.refresh_interval,
            self.config.announce_interval,
        );
        let load = self.load;
        let Some(l) = self.local_relay.as_mut() else {
            return;
        };
        let issued = now_u.max(l.last_issued + 1);
        l.last_issued = issued;
        l.next_refresh = now + refresh;
        let announce = l.next_announce <= now;
        if announce {
            l.next_announce = now + announce_every;
        }
        let record = RelayRecord {
            node_id: self.local,
            realm: realm.clone(),
            endpoint: l.endpoint.clone(),
            capacity: l.capacity,
            current_load: load.min(l.capacity),
            registered_at: l.registered_at.min(issued),
            issued_at: issued,
            expires_at: issued + ttl,
            withdrawn: false,
        };
        if announce {
            self.actions.push_back(Action::Announce {
                key: provider_key(&realm),
            });
        }
        self.publish_record(now, record);
    }

    /// Signs and publishes `record` (the local node's), and puts it in the local index.
    fn publish_record(&mut self, now: Instant, record: RelayRecord) {
        let value = match record.sign(&self.key) {
            Ok(v) => v,
            Err(e) => {
                // Not reached: register checked that such a record can be made.
                warn!("relay record not signed: {e}");
                return;
            }
        };
        let deadline = self.clock.instant(record.expires_at);
        self.actions.push_back(Action::Publish {
            key: record_key(&self.config.realm, &self.local),
            value,
            ttl: self.config.record_ttl,
        });
        if let Some(m) = &self.metrics {
            m.published.inc();
        }
        let was_live = self.is_relay(&self.local);
        let withdrawn = record.withdrawn;
        let _ = self.index.insert(record, deadline, |_| true);
        if withdrawn && was_live {
            self.event(RegistryEvent::RelayRemoved {
                relay: self.local,
                reason: RemovalReason::Withdrawn,
            });
        } else if !withdrawn && !was_live {
            self.event(RegistryEvent::RelayAdded { relay: self.local });
        }
        self.update_gauge();
        let _ = now;
    }

    // ----- look-ups --------------------------------------------------------------------------

    /// Whether `node` is a known, live relay.
    pub fn is_relay(&self, node: &PeerId) -> bool {
        self.index.get(node).is_some_and(|e| !e.record.withdrawn)
    }

    /// Live relays known.
    pub fn relay_count(&self) -> usize {
        self.index.live()
    }

    /// Every live relay known (the local node too if it is one), by peer id.
    pub fn relays(&self) -> Vec<RelayInfo> {
        let mut all: Vec<RelayInfo> = self
            .index
            .iter()
            .filter(|e| !e.record.withdrawn)
            .map(info)
            .collect();
        all.sort_by(|a, b| a.node_id.as_bytes().cmp(b.node_id.as_bytes()));
        all
    }

    /// One relay, if known and live.
    pub fn relay(&self, node: &PeerId) -> Option<RelayInfo> {
        self.index
            .get(node)
            .filter(|e| !e.record.withdrawn)
            .map(info)
    }

    /// The index (bounds, deadlines).
    pub fn index(&self) -> &RelayIndex {
        &self.index
    }

    /// The best relay for reaching `target` ([`find_relay_with`](Self::find_relay_with) with
    /// default options).
    ///
    /// # Errors
    ///
    /// [`NoRelaysAvailable`].
    pub fn find_relay(
        &mut self,
        now: Instant,
        target: &PeerId,
    ) -> Result<RelayInfo, NoRelaysAvailable> {
        let mut found = self.find_relay_with(now, target, FindOpts::default())?;
        Ok(found.swap_remove(0))
    }

    /// The best relays for `target` under `opts`, best first (never empty): see
    /// [`select`] for the formula. The local node, backed-off relays and full ones are never
    /// returned. Candidates lacking a fresh RTT are probed, so that later calls are better
    /// informed.
    ///
    /// # Errors
    ///
    /// [`NoRelaysAvailable`] if no relay passes the filters.
    pub fn find_relay_with(
        &mut self,
        now: Instant,
        target: &PeerId,
        mut opts: FindOpts,
    ) -> Result<Vec<RelayInfo>, NoRelaysAvailable> {
        opts.max_results = opts.max_results.max(1);
        self.start_probes(now, target);
        let found: Vec<RelayInfo> = self
            .ranked(now, target, &opts)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        if found.is_empty() {
            return Err(NoRelaysAvailable {
                known: self.relay_count(),
            });
        }
        if let Some(m) = &self.metrics {
            m.selected("find");
        }
        Ok(found)
    }

    /// The usable relays (not us, not backed off) ranked for `target`.
    fn ranked(&self, now: Instant, target: &PeerId, opts: &FindOpts) -> Vec<(RelayInfo, f64)> {
        let candidates = self
            .index
            .iter()
            .filter(|e| e.record.node_id != self.local && e.usable(now))
            .map(info);
        select::rank(candidates, target, opts, &self.config.scoring)
    }

    // ----- RTT probes ------------------------------------------------------------------------

    /// Probes the best `probe_candidates` for `target` (ranked as if their RTT were 0) that
    /// lack a fresh RTT, within `max_probes`.
    fn start_probes(&mut self, now: Instant, target: &PeerId) {
        if self.probes.len() >= self.config.max_probes {
            return;
        }
        let optimistic = self
            .index
            .iter()
            .filter(|e| e.record.node_id != self.local && e.usable(now))
            .map(|e| RelayInfo {
                latency: Some(Duration::ZERO),
                ..info(e)
            });
        let opts = FindOpts {
            max_results: self.config.probe_candidates,
            ..FindOpts::default()
        };
        let best = select::rank(optimistic, target, &opts, &self.config.scoring);
        for (r, _) in best {
            if self.probes.len() >= self.config.max_probes {
                break;
            }
            let fresh = self
                .index
                .get(&r.node_id)
                .and_then(|e| e.rtt)
                .is_some_and(|(_, at)| now.saturating_duration_since(at) < self.config.rtt_ttl);
            if fresh || self.probes.contains_key(&r.node_id) {
                continue;
            }
            self.probes
                .insert(r.node_id, now + self.config.probe_timeout);
            self.actions.push_back(Action::Probe {
                relay: r.node_id,
                addr: with_p2p(&r.endpoint, r.node_id),
            });
        }
    }

    /// An RTT to `relay` was measured (ping). Kept if `relay` is in the index.
    pub fn handle_rtt(&mut self, now: Instant, relay: &PeerId, rtt: Duration) {
        let probed = self.probes.remove(relay).is_some();
        if let Some(e) = self.index.get_mut(relay) {
            e.rtt = Some((rtt, now));
        }
        if probed {
            self.fill(now);
        }
    }

    /// A probe's dial of `relay` failed: it is backed off.
    pub fn handle_probe_failed(&mut self, now: Instant, relay: &PeerId) {
        if self.probes.remove(relay).is_none() {
            return;
        }
        let backoff = self.config.failure_backoff;
        if let Some(e) = self.index.get_mut(relay) {
            e.down_until = Some(now + backoff);
        }
        self.fill(now);
    }

    /// Relays being probed.
    pub fn probing(&self) -> impl Iterator<Item = &PeerId> {
        self.probes.keys()
    }

    // ----- the DHT ---------------------------------------------------------------------------

    /// Providers of the realm key were found: their records are read (at most
    /// [`RegistryConfig::max_fetches`] per discovery round).
    pub fn handle_providers(&mut self, providers: impl IntoIterator<Item = PeerId>) {
        for relay in providers {
            if self.fetching.len() >= self.config.max_fetches {
                break;
            }
            if relay == self.local || !self.fetching.insert(relay) {
                continue;
            }
            self.actions.push_back(Action::Fetch {
                relay,
                key: record_key(&self.config.realm, &relay),
            });
        }
    }

    /// A record was read from the DHT (under the key of `expected`, if known). It is verified
    /// ([`RelayRecord::open_for`]), checked against the realm and the clock, and put in the
    /// index if newer than the one held.
    ///
    /// # Errors
    ///
    /// [`RejectReason`]; the refusal is also counted and reported as
    /// [`RegistryEvent::RecordRejected`].
    pub fn handle_record(
        &mut self,
        now: Instant,
        expected: Option<PeerId>,
        bytes: &[u8],
    ) -> Result<InsertOutcome, RejectReason> {
        match self.admit(now, expected, bytes) {
            Ok(outcome) => Ok(outcome),
            Err(reason) => {
                debug!(?expected, "relay record refused: {reason}");
                if let Some(m) = &self.metrics {
                    m.record(reason.as_str());
                }
                self.event(RegistryEvent::RecordRejected {
                    relay: expected,
                    reason: reason.clone(),
                });
                Err(reason)
            }
        }
    }

    fn admit(
        &mut self,
        now: Instant,
        expected: Option<PeerId>,
        bytes: &[u8],
    ) -> Result<InsertOutcome, RejectReason> {
        let record = match expected {
            Some(p) => RelayRecord::open_for(bytes, &p)?,
            None => RelayRecord::open(bytes)?,
        };
        if record.realm != self.config.realm {
            return Err(RejectReason::WrongRealm(record.realm));
        }
        let now_u = self.clock.unix_ms(now);
        if record.expires_at <= now_u {
            return Err(RejectReason::Expired);
        }
        let skew = u64::try_from(self.config.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        if record.issued_at > now_u.saturating_add(skew) {
            return Err(RejectReason::FromFuture);
        }
        let max_ttl = u64::try_from(self.config.max_ttl.as_millis()).unwrap_or(u64::MAX);
        if record.expires_at - record.issued_at > max_ttl {
            return Err(RejectReason::TtlTooLong);
        }
        let relay = record.node_id;
        self.fetching.remove(&relay);
        if relay == self.local {
            // Our own record read back: the index has the latest already.
            return Ok(InsertOutcome::Stale);
        }
        let deadline = self
            .clock
            .instant(record.expires_at.min(now_u.saturating_add(max_ttl)));
        let was_live = self.is_relay(&relay);
        let (local, held) = (self.local, &self.auto.held);
        let (outcome, evicted) = self
            .index
            .insert(record, deadline, |p| *p == local || held.contains_key(p))
            .map_err(|IndexFull| RejectReason::IndexFull)?;
        if let Some(m) = &self.metrics {
            m.record(match outcome {
                InsertOutcome::Added => "added",
                InsertOutcome::Updated => "updated",
                InsertOutcome::Withdrawn => "withdrawn",
                InsertOutcome::Stale => "stale",
            });
        }
        if let Some(victim) = evicted {
            self.event(RegistryEvent::RelayRemoved {
                relay: victim,
                reason: RemovalReason::Evicted,
            });
        }
        match outcome {
            InsertOutcome::Added => {
                self.event(RegistryEvent::RelayAdded { relay });
                self.fill(now);
            }
            InsertOutcome::Updated => self.fill(now),
            InsertOutcome::Withdrawn if was_live => self.event(RegistryEvent::RelayRemoved {
                relay,
                reason: RemovalReason::Withdrawn,
            }),
            _ => {}
        }
        self.update_gauge();
        Ok(outcome)
    }

    fn update_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.known_relays.set(self.index.live() as i64);
        }
    }

    // ----- time and outputs ------------------------------------------------------------------

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let local = self
            .local_relay
            .as_ref()
            .map(|l| l.next_refresh.min(l.next_announce));
        [
            Some(self.next_discovery),
            self.index.next_deadline(),
            local,
            self.probes.values().min().copied(),
            self.auto_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: expiry of index entries, the local relay's refresh, the
    /// discovery round, probe and reservation timeouts, auto relay's retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        for gone in self.index.expire(now) {
            if !gone.record.withdrawn {
                self.event(RegistryEvent::RelayRemoved {
                    relay: gone.record.node_id,
                    reason: RemovalReason::Expired,
                });
            }
        }
        self.update_gauge();
        if self
            .local_relay
            .as_ref()
            .is_some_and(|l| l.next_refresh <= now || l.next_announce <= now)
        {
            self.refresh(now);
        }
        if self.next_discovery <= now {
            self.next_discovery = now + self.config.discovery_interval;
            self.fetching.clear();
            self.actions.push_back(Action::Discover {
                key: provider_key(&self.config.realm),
            });
        }
        self.probes.retain(|_, deadline| *deadline > now);
        self.auto_handle_timeout(now);
    }

    /// Starts a discovery round now (instead of at the next interval).
    pub fn discover_now(&mut self, now: Instant) {
        self.next_discovery = now;
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RegistryEvent> {
        self.events.pop_front()
    }

    fn event(&mut self, e: RegistryEvent) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

#[cfg(test)]
mod tests;
