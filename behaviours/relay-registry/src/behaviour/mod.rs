//! [`Behaviour`]: the [`RegistryEngine`] driven over a meshwire swarm (feature `swarm`).
//!
//! The behaviour owns the parts the registry is built on and drives them for the engine:
//!
//! - **Kademlia** (`kad::Behaviour`, given to [`Behaviour::new`]; reach it with
//!   [`Behaviour::kad_mut`] to add bootstrap peers): a relay's record is a kademlia record
//!   (`put_record`, quorum 1, with the record TTL) under
//!   [`record_key`](crate::record::record_key), the realm's relays are providers of
//!   [`provider_key`](crate::record::provider_key) (`start_providing`, `get_providers`), and
//!   each provider's record is read with `get_record`. Kademlia events of the registry's own
//!   queries are consumed; every other kademlia event is passed on ([`Event::Kad`]).
//! - **The relay server** ([`Behaviour::with_relay_server`]), on relay-capable nodes: its
//!   reservation count is the load the relay publishes; its `max_reservations` caps the
//!   capacity it announces. Its events are passed on ([`Event::RelayServer`]).
//! - **The relay client** ([`Behaviour::with_relay_client`], the behaviour half of
//!   `meshwire_relay::client::new`), for auto relay: a reservation is a listener the client
//!   opens itself (`client::Behaviour::listen_via`), which the swarm reports like any other
//!   (`NewListenAddr` with the relayed address once the relay accepts). The client protects
//!   each relay it holds a reservation on in the connection manager (tag `relay`) and renews
//!   the reservation; a listener closing (the relay died, refused a renewal, the connection
//!   was lost) is a failure the engine answers by reserving elsewhere. Its events are passed
//!   on ([`Event::RelayClient`]).
//! - **Ping's RTT table** ([`Behaviour::with_rtt_table`]; ping itself is composed next to the
//!   registry by the application): read every [`RTT_POLL_INTERVAL`] for the relays in the
//!   index. A probe is a dial of the relay; ping measures the RTT on the new connection. A
//!   probe's dial failing (unreachable, wrong peer) backs the relay off.
//! - **Reachability**: the swarm's confirmed external addresses (`ExternalAddrConfirmed`,
//!   e.g. from identify's observations confirmed by the application or AutoNAT) tell the engine
//!   whether the node may register ([`RegisterError::NotReachable`] otherwise); with
//!   [`Behaviour::with_nat_profile`] the NAT detector's profile too: behind a NAT that keeps
//!   unsolicited inbound connections out it may not ([`RegisterError::NatClosed`]).
//!
//! The registry's own events come as [`Event::Registry`].

mod parts;

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_kad::{self as kad, QueryId, QueryResult, Record, RecordKey};
use meshwire_nat::SharedNatProfile;
use meshwire_ping::RttTable;
use meshwire_relay::client::{self, CircuitError};
use meshwire_relay::protocol::Status;
use meshwire_relay::ServerEvent;
use meshwire_swarm::{
    ConnectionDenied, DialError, DialOpts, FromSwarm, InboundStream, ListenerId, Multiaddr,
    NetworkBehaviour, OutboundStreamResult, StreamProtocol, Timer, ToSwarm, Toggle, TransportError,
};
use tracing::debug;

use self::parts::{PartEvent, Parts};
use crate::engine::{
    Action, AutoRelayConfig, ConfigError, FindOpts, NoRelaysAvailable, RegisterError, RegisterOpts,
    RegistryConfig, RegistryEngine, RegistryEvent, RelayInfo, ReservationFailure, ReservationState,
};
use crate::metrics::RegistryMetrics;

/// How often the RTT table is read for the relays in the index: 500 ms.
pub const RTT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Commands and events waiting for the swarm at most (256); engine events beyond wait in the
/// engine (which keeps at most [`RegistryConfig::max_events`]).
const MAX_PENDING: usize = 256;

/// What the registry behaviour reports.
#[derive(Debug)]
pub enum Event {
    /// The registry's own events (relays found and gone, registration, auto relay).
    Registry(RegistryEvent),
    /// Kademlia's events, but those of the registry's own queries.
    Kad(kad::Event),
    /// The relay server's events.
    RelayServer(ServerEvent),
    /// The relay client's events.
    RelayClient(client::Event),
}

/// Why auto relay could not be turned on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AutoRelayError {
    /// The behaviour has no relay client ([`Behaviour::with_relay_client`]).
    #[error("auto relay needs a relay client")]
    NoRelayClient,
    /// The settings cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Which registry query a kademlia query is.
#[derive(Clone, Copy, Debug)]
enum Query {
    Publish,
    Announce,
    Discover,
    Fetch(PeerId),
}

/// The current time on the clock tokio's timers use (paused-time tests work too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The relay registry in a swarm; see the [module docs](self).
pub struct Behaviour {
    engine: RegistryEngine,
    parts: Parts,
    rtts: Option<RttTable>,
    /// The registry's kademlia queries under way (searches and reads at most
    /// `4 * max_fetches + 16`).
    queries: HashMap<QueryId, Query>,
    /// Auto relay's listeners, by relay and by id.
    listeners: HashMap<PeerId, ListenerId>,
    listener_relays: HashMap<ListenerId, PeerId>,
    /// Auto relay settings waiting for a relay client.
    pending_auto: Option<AutoRelayConfig>,
    pending: VecDeque<ToSwarm<Event>>,
    timer: Timer,
    next_rtt_poll: Instant,
    /// The NAT detector's profile and the version last given to the engine.
    nat: Option<(SharedNatProfile, u64)>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("relay_registry::Behaviour")
            .field("engine", &self.engine)
            .field("queries", &self.queries.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A registry for the node of `key` (its records are signed with it) on top of `kad`.
    /// Auto relay in `config` starts once a relay client is given
    /// ([`with_relay_client`](Self::with_relay_client)).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for settings that cannot work, among them
    /// [`ConfigError::TtlTooShortForDht`]: a record TTL shorter than the refresh interval
    /// plus twice kademlia's request timeout (a refresh stored behind a lookup that waits for
    /// dead peers would land after the previous record expired).
    pub fn new(
        key: Keypair,
        mut config: RegistryConfig,
        kad: kad::Behaviour,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let needed = config.refresh_interval + 2 * kad.config().request_timeout;
        if config.record_ttl < needed {
            return Err(ConfigError::TtlTooShortForDht {
                ttl: config.record_ttl,
                needed,
            });
        }
        let pending_auto = config.auto_relay.take();
        let now = now();
        Ok(Behaviour {
            engine: RegistryEngine::new(key, config, now)?,
            parts: Parts {
                kad,
                server: Toggle::from(None),
                client: Toggle::from(None),
            },
            rtts: None,
            queries: HashMap::new(),
            listeners: HashMap::new(),
            listener_relays: HashMap::new(),
            pending_auto,
            pending: VecDeque::new(),
            timer: Timer::default(),
            next_rtt_poll: now,
            nat: None,
            waker: None,
        })
    }

    /// Runs `server` (the node offers relaying; it may then [`register`](Self::register)).
    pub fn with_relay_server(mut self, server: meshwire_relay::Behaviour) -> Self {
        self.parts.server = Toggle::from(Some(server));
        self
    }

    /// Runs `client` (the behaviour half of `meshwire_relay::client::new`, whose transport
    /// half is in the swarm's transport): auto relay reserves through it.
    pub fn with_relay_client(mut self, client: client::Behaviour) -> Self {
        self.parts.client = Toggle::from(Some(client));
        if let Some(auto) = self.pending_auto.take() {
            // Validated in `new`.
            let _ = self.engine.set_auto_relay(now(), Some(auto));
        }
        self
    }

    /// Reads RTTs from `rtts` (ping's table: `ping::Behaviour::rtt_table`).
    pub fn with_rtt_table(mut self, rtts: RttTable) -> Self {
        self.rtts = Some(rtts);
        self
    }

    /// Reports to `metrics` (see [`RegistryMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RegistryMetrics) -> Self {
        self.engine = self.engine.with_metrics(metrics);
        self
    }

    /// Reads our NAT profile from `profile` (the NAT detector's
    /// `meshwire_nat::NatDetector::shared_profile`, or `NatTraversal`'s): behind a NAT that
    /// keeps unsolicited inbound connections out the node may not register
    /// ([`RegisterError::NatClosed`]), and a registered node unregisters when its profile
    /// turns so (checked every [`RTT_POLL_INTERVAL`] and on [`register`](Self::register)).
    pub fn with_nat_profile(mut self, profile: SharedNatProfile) -> Self {
        self.nat = Some((profile, u64::MAX));
        self.sync_nat(now());
        self
    }

    /// Gives the engine the NAT profile if it changed since last time.
    fn sync_nat(&mut self, now: Instant) {
        if let Some((shared, seen)) = &mut self.nat {
            let version = shared.version();
            if version != *seen {
                *seen = version;
                self.engine.handle_nat_profile(now, shared.get());
            }
        }
    }

    // ----- the registry's API --------------------------------------------------------------

    /// Announces this node as a relay reachable at `endpoint` (one of its confirmed external
    /// addresses), offering `opts.capacity` reservations — at most the relay server's
    /// `max_reservations`. See [`RegistryEngine::register`].
    ///
    /// # Errors
    ///
    /// [`RegisterError::NoRelayServer`] without a relay server, and those of
    /// [`RegistryEngine::register`] (notably [`RegisterError::NotReachable`] without a
    /// confirmed external address).
    pub fn register(
        &mut self,
        endpoint: Multiaddr,
        opts: RegisterOpts,
    ) -> Result<(), RegisterError> {
        let Some(server) = self.parts.server.as_ref() else {
            return Err(RegisterError::NoRelayServer);
        };
        let max = u32::try_from(server.engine().config().max_reservations).unwrap_or(u32::MAX);
        let opts = RegisterOpts {
            capacity: opts.capacity.min(max),
        };
        self.update_load();
        let now = now();
        self.sync_nat(now);
        let r = self.engine.register(now, endpoint, opts);
        self.wake();
        r
    }

    /// Stops announcing this node as a relay (a tombstone is published). Returns whether it
    /// was registered.
    pub fn unregister(&mut self) -> bool {
        let r = self.engine.unregister(now());
        self.wake();
        r
    }

    /// Whether `node` is a known, live relay.
    pub fn is_relay(&self, node: &PeerId) -> bool {
        self.engine.is_relay(node)
    }

    /// Live relays known.
    pub fn relay_count(&self) -> usize {
        self.engine.relay_count()
    }

    /// Every live relay known.
    pub fn relays(&self) -> Vec<RelayInfo> {
        self.engine.relays()
    }

    /// One relay, if known and live.
    pub fn relay(&self, node: &PeerId) -> Option<RelayInfo> {
        self.engine.relay(node)
    }

    /// The best relay for `target`; see [`RegistryEngine::find_relay_with`].
    ///
    /// # Errors
    ///
    /// [`NoRelaysAvailable`].
    pub fn find_relay(&mut self, target: &PeerId) -> Result<RelayInfo, NoRelaysAvailable> {
        let r = self.engine.find_relay(now(), target);
        self.wake();
        r
    }

    /// The best relays for `target` under `opts`; see [`RegistryEngine::find_relay_with`].
    ///
    /// # Errors
    ///
    /// [`NoRelaysAvailable`].
    pub fn find_relay_with(
        &mut self,
        target: &PeerId,
        opts: FindOpts,
    ) -> Result<Vec<RelayInfo>, NoRelaysAvailable> {
        let r = self.engine.find_relay_with(now(), target, opts);
        self.wake();
        r
    }

    /// Turns auto relay on or off.
    ///
    /// # Errors
    ///
    /// [`AutoRelayError`].
    pub fn set_auto_relay(
        &mut self,
        config: Option<AutoRelayConfig>,
    ) -> Result<(), AutoRelayError> {
        if config.is_some() && !self.parts.client.is_enabled() {
            return Err(AutoRelayError::NoRelayClient);
        }
        self.engine.set_auto_relay(now(), config)?;
        self.wake();
        Ok(())
    }

    /// The relays auto relay holds or is reserving on.
    pub fn auto_relays(&self) -> Vec<(PeerId, ReservationState)> {
        self.engine.auto_relays()
    }

    /// The relays auto relay holds a reservation on.
    pub fn reserved_relays(&self) -> Vec<PeerId> {
        self.engine.reserved_relays()
    }

    /// Starts a DHT search for relays now.
    pub fn discover_now(&mut self) {
        self.engine.discover_now(now());
        self.wake();
    }

    /// The engine (index, settings, metrics).
    pub fn engine(&self) -> &RegistryEngine {
        &self.engine
    }

    /// The kademlia behaviour.
    pub fn kad(&self) -> &kad::Behaviour {
        &self.parts.kad
    }

    /// The kademlia behaviour, e.g. to add bootstrap peers.
    pub fn kad_mut(&mut self) -> &mut kad::Behaviour {
        &mut self.parts.kad
    }

    /// The relay server, if any.
    pub fn relay_server(&self) -> Option<&meshwire_relay::Behaviour> {
        self.parts.server.as_ref()
    }

    /// The relay client, if any.
    pub fn relay_client(&self) -> Option<&client::Behaviour> {
        self.parts.client.as_ref()
    }

    // ----- driving ---------------------------------------------------------------------------

    fn wake(&mut self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    fn update_load(&mut self) {
        if let Some(s) = self.parts.server.as_ref() {
            let load = u32::try_from(s.engine().reservation_count()).unwrap_or(u32::MAX);
            self.engine.set_load(load);
        }
    }

    fn push(&mut self, command: ToSwarm<Event>) {
        self.pending.push_back(command);
    }

    fn on_action(&mut self, now: Instant, action: Action) {
        // Kademlia ends every query (its query timeout); this bound only guards against a
        // backlog: a search or a read skipped now is made again at the next round.
        let max_queries = 4 * self.engine.config().max_fetches + 16;
        if matches!(action, Action::Discover { .. } | Action::Fetch { .. })
            && self.queries.len() >= max_queries
        {
            debug!("registry queries at their bound ({max_queries}); {action:?} skipped");
            return;
        }
        let kad = &mut self.parts.kad;
        let query = match action {
            Action::Publish { key, value, ttl } => {
                let record = Record {
                    key: RecordKey::new(key),
                    value,
                    publisher: Some(self.engine.local_peer_id()),
                    ttl: Some(ttl),
                };
                match kad.put_record(record, 1) {
                    Ok(id) => Some((id, Query::Publish)),
                    Err(e) => {
                        debug!("relay record not stored: {e}");
                        None
                    }
                }
            }
            Action::Announce { key } => match kad.start_providing(RecordKey::new(key)) {
                Ok(id) => Some((id, Query::Announce)),
                Err(e) => {
                    debug!("relay announcement not stored: {e}");
                    None
                }
            },
            Action::StopAnnouncing { key } => {
                kad.stop_providing(&RecordKey::new(key));
                None
            }
            Action::Discover { key } => {
                let limit = self.engine.config().max_fetches;
                let id = kad.get_providers_up_to(RecordKey::new(key), Some(limit));
                Some((id, Query::Discover))
            }
            Action::Fetch { relay, key } => {
                let id = kad.get_record(RecordKey::new(key), 1);
                Some((id, Query::Fetch(relay)))
            }
            Action::Probe { relay, addr } => {
                self.push(ToSwarm::Dial(DialOpts::peer(relay).address(addr)));
                None
            }
            Action::Reserve { relay, addr } => {
                self.reserve(now, relay, &addr);
                None
            }
            Action::Release { relay } => {
                if let Some(id) = self.listeners.remove(&relay) {
                    self.listener_relays.remove(&id);
                    if let Some(c) = self.parts.client.as_mut() {
                        c.stop_listening(id);
                    }
                }
                None
            }
        };
        if let Some((id, q)) = query {
            self.queries.insert(id, q);
        }
    }

    fn reserve(&mut self, now: Instant, relay: PeerId, addr: &Multiaddr) {
        let Some(c) = self.parts.client.as_mut() else {
            let why = ReservationFailure::Refused("no relay client".into());
            self.engine.handle_reservation_failed(now, &relay, why);
            return;
        };
        if let Some(old) = self.listeners.remove(&relay) {
            self.listener_relays.remove(&old);
            c.stop_listening(old);
        }
        match c.listen_via(addr) {
            Ok(id) => {
                self.listeners.insert(relay, id);
                self.listener_relays.insert(id, relay);
            }
            Err(e) => {
                let why = ReservationFailure::Refused(e.to_string());
                self.engine.handle_reservation_failed(now, &relay, why);
            }
        }
    }

    fn on_part_event(&mut self, now: Instant, event: PartEvent) {
        match event {
            PartEvent::Kad(ev) => {
                if let Some(ev) = self.on_kad_event(now, ev) {
                    self.push(ToSwarm::GenerateEvent(Event::Kad(ev)));
                }
            }
            PartEvent::Server(ev) => {
                self.update_load();
                self.push(ToSwarm::GenerateEvent(Event::RelayServer(ev)));
            }
            PartEvent::Client(ev) => {
                if let client::Event::ReservationAccepted { relay, .. } = &ev {
                    if self.listeners.contains_key(relay) {
                        self.engine.handle_reservation_accepted(now, relay);
                    }
                }
                self.push(ToSwarm::GenerateEvent(Event::RelayClient(ev)));
            }
        }
    }

    /// Consumes the events of the registry's queries; returns the others.
    fn on_kad_event(&mut self, now: Instant, ev: kad::Event) -> Option<kad::Event> {
        match ev {
            kad::Event::QueryFinished { id, result, .. } if self.queries.contains_key(&id) => {
                let query = self.queries.remove(&id)?;
                match (query, result) {
                    (Query::Fetch(relay), QueryResult::GetValue(Ok(ok))) => {
                        for r in ok.records {
                            let _ = self.engine.handle_record(now, Some(relay), &r.record.value);
                        }
                    }
                    (Query::Discover, QueryResult::GetProviders(Ok(ok))) => {
                        self.engine
                            .handle_providers(ok.providers.into_iter().map(|p| p.id));
                    }
                    (q, r) => debug!(?q, ?r, "registry query finished"),
                }
                None
            }
            kad::Event::QueryProgress { id, .. } if self.queries.contains_key(&id) => None,
            other => Some(other),
        }
    }

    fn poll_rtts(&mut self, now: Instant) {
        let Some(table) = &self.rtts else {
            return;
        };
        for (peer, rtt) in table.snapshot() {
            if self.engine.is_relay(&peer) {
                self.engine.handle_rtt(now, &peer, rtt);
            }
        }
    }
}

/// The engine's view of a failed reservation: `RESOURCE_LIMIT_EXCEEDED` (the relay has no
/// room for us: its total, or its per-peer or per-IP limits) counts as full.
fn failure(e: &CircuitError) -> ReservationFailure {
    match e {
        CircuitError::Refused {
            status: Status::ResourceLimitExceeded,
            ..
        } => ReservationFailure::Full,
        CircuitError::Refused { status, .. } => ReservationFailure::Refused(status.to_string()),
        CircuitError::Timeout { .. } => ReservationFailure::Timeout,
        other => ReservationFailure::Unreachable(other.to_string()),
    }
}

/// The engine's view of a closed auto-relay listener.
fn closed(reason: Result<(), &TransportError>) -> ReservationFailure {
    match reason {
        Err(TransportError::Other(e)) => match e.downcast_ref::<CircuitError>() {
            Some(c) => failure(c),
            None => ReservationFailure::Unreachable(e.to_string()),
        },
        Err(e) => ReservationFailure::Unreachable(e.to_string()),
        Ok(()) => ReservationFailure::Unreachable("listener closed".into()),
    }
}

/// Whether a failed dial says the peer is unreachable (rather than a local limit or a dial
/// that was not needed).
fn unreachable(e: &DialError) -> bool {
    matches!(
        e,
        DialError::Transport(_)
            | DialError::Timeout(_)
            | DialError::WrongPeerId { .. }
            | DialError::NoAddresses
    )
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.parts.protocols()
    }

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_pending_inbound_connection(connection, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_established_inbound_connection(connection, peer, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.parts
            .handle_pending_outbound_connection(connection, peer, addresses)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_established_outbound_connection(connection, peer, addr)
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.parts.connection_keep_alive(peer, connection)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.parts.on_swarm_event(event);
        let now = now();
        match event {
            FromSwarm::ExternalAddrConfirmed { addr } => {
                self.engine.handle_external_addr_confirmed(addr)
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                self.engine.handle_external_addr_expired(now, addr)
            }
            FromSwarm::ListenerClosed { listener, reason } => {
                if let Some(relay) = self.listener_relays.remove(&listener) {
                    self.listeners.remove(&relay);
                    self.engine
                        .handle_reservation_failed(now, &relay, closed(reason));
                }
            }
            FromSwarm::DialFailure {
                peer: Some(peer),
                error,
                ..
            } if unreachable(error) && self.engine.probing().any(|p| *p == peer) => {
                self.engine.handle_probe_failed(now, &peer);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        self.parts.on_inbound_stream(stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        self.parts.on_outbound_stream(result);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        self.waker = Some(cx.waker().clone());
        loop {
            if let Some(command) = self.pending.pop_front() {
                return Poll::Ready(command);
            }
            let now = now();
            if let Poll::Ready(command) = self.parts.poll(cx) {
                match command {
                    ToSwarm::GenerateEvent(ev) => self.on_part_event(now, ev),
                    other => {
                        // Every other command passes through unchanged.
                        return Poll::Ready(other.map_event(|e| match e {
                            PartEvent::Kad(e) => Event::Kad(e),
                            PartEvent::Server(e) => Event::RelayServer(e),
                            PartEvent::Client(e) => Event::RelayClient(e),
                        }));
                    }
                }
                continue;
            }
            if now >= self.next_rtt_poll {
                self.next_rtt_poll = now + RTT_POLL_INTERVAL;
                self.poll_rtts(now);
                self.sync_nat(now);
            }
            self.update_load();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            while let Some(action) = self.engine.poll_action() {
                self.on_action(now, action);
            }
            while self.pending.len() < MAX_PENDING {
                let Some(ev) = self.engine.poll_event() else {
                    break;
                };
                self.pending
                    .push_back(ToSwarm::GenerateEvent(Event::Registry(ev)));
            }
            if !self.pending.is_empty() {
                continue;
            }
            let next = [self.engine.poll_timeout(), Some(self.next_rtt_poll)]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
            if self.timer.poll_at(next, cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_provider_key_is_kad_service_key() {
        let key = kad::discovery::service_key("relay-registry/default");
        assert_eq!(
            key.as_bytes(),
            crate::record::provider_key("default").as_slice()
        );
    }

    #[test]
    fn registry_circuit_errors_map_to_failures() {
        let relay = Keypair::generate().peer_id();
        let full = CircuitError::Refused {
            relay,
            status: Status::ResourceLimitExceeded,
        };
        assert_eq!(failure(&full), ReservationFailure::Full);
        let denied = CircuitError::Refused {
            relay,
            status: Status::PermissionDenied,
        };
        assert!(matches!(failure(&denied), ReservationFailure::Refused(_)));
        let lost = TransportError::Other(Box::new(CircuitError::ConnectionLost { relay }));
        assert!(matches!(
            closed(Err(&lost)),
            ReservationFailure::Unreachable(_)
        ));
        let full = TransportError::Other(Box::new(full));
        assert_eq!(closed(Err(&full)), ReservationFailure::Full);
    }
}
