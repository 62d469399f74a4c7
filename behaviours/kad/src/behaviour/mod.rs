//! [`Behaviour`]: the [`KadEngine`] driven over a meshwire [`Swarm`](meshwire_swarm::Swarm)
//! (feature `swarm`).
//!
//! The behaviour is the engine's driver (see the [crate docs](crate#driving-the-engine)):
//!
//! * **Outbound.** Every [`KadTransmit`] becomes a
//!   [`ToSwarm::OpenStream`] for `/ipfs/kad/1.0.0` (dialing the peer if needed, with the
//!   addresses of the request, the routing table and identify given to the swarm through
//!   [`NetworkBehaviour::handle_pending_outbound_connection`]). On the stream it writes the
//!   length-prefixed request, reads one response (bounded by
//!   [`Config::max_message_size`], within [`Config::request_timeout`]) and reports it to
//!   [`KadEngine::handle_response`] with the address we dialed if the stream's connection is one we
//!   dialed (the only address a response puts in the routing table), or the failure to
//!   [`KadEngine::handle_request_failed`]. A request that cannot be encoded is a local problem,
//!   reported with [`KadEngine::handle_request_unsendable`]: its query fails, the peer is not
//!   blamed. ADD_PROVIDER has no response: the request is written and the stream finished.
//!   One request per stream, as rust-libp2p does. Frames are read with the swarm toolkit's
//!   `read_frame`: the announced length is checked before anything is buffered, and the
//!   buffer grows only with the bytes that arrive.
//! * **Bounds.** Stream exchanges run as toolkit [`Tasks`] (at most
//!   [`Config::max_stream_tasks`], each with its timeout) and commands for the swarm wait in
//!   a toolkit [`Outbox`] (at most [`Config::max_queued_commands`]); the engine's requests and
//!   events are taken only while both have room.
//! * **Inbound.** In server mode the behaviour claims `/ipfs/kad/1.0.0`. It reads requests
//!   (bounded), answers each through [`KadEngine::handle_request`], and keeps reading on the same
//!   stream until the remote finishes it, as rust-libp2p allows. A peer has at most
//!   [`Config::max_inbound_streams_per_peer`] inbound streams at once: past that, a stream
//!   waiting idle for its next request is closed to make room (rust-libp2p's rule), else the
//!   new stream is reset. Malformed or oversized requests reset the stream and are reported as
//!   [`Event::InboundFailure`]; nothing read from the network can panic or grow memory beyond
//!   the bounds.
//! * **Time.** One [`Timer`] armed at [`KadEngine::poll_timeout`]; when it is due the
//!   behaviour calls [`KadEngine::handle_timeout`].
//! * **Routing table.** When identify reports a peer's protocols
//!   ([`FromSwarm::RemoteProtocolsChanged`]) and they include `/ipfs/kad/1.0.0`, the peer is
//!   added with the addresses remembered for it: those [`FromSwarm::NewExternalAddrOfPeer`]
//!   reported (its identify listen addresses) and the addresses we dialed it at. A peer with
//!   neither, which only ever dialed us, is added with the address its inbound QUIC
//!   connection comes from: QUIC implementations that listen (meshwire, rust-libp2p) dial from
//!   their listening socket, so that address is where the peer listens. Other transports'
//!   inbound addresses (e.g. a TCP connection's ephemeral port) are never used. At most
//!   [`Config::max_addrs_per_peer`] addresses of each kind are remembered per peer, for at
//!   most [`Config::max_address_cache_peers`] peers, connected peers being forgotten last.
//!   A peer whose protocols no longer include it is removed. Bootstrap peers are added with
//!   [`Behaviour::add_address`].
//! * **Connection manager.** A connected peer entering the routing table is tagged
//!   ([`Config::conn_manager_tag`], `"kad"` = 5 by default, as go-libp2p's kad-dht tags its
//!   routing-table peers) and untagged when it leaves. The connection manager forgets a
//!   peer's tags when its last connection closes, so the tag is set again whenever a
//!   routing-table peer connects; peers that are not connected are not tagged (the
//!   connection manager would keep a temporary entry for them).
//! * **Mode.** Server mode claims the protocol, client mode claims nothing;
//!   [`Behaviour::set_mode`] switches and returns [`ToSwarm::ProtocolsChanged`] so that the
//!   swarm (and identify) advertise the change.
//! * **Provider addresses.** The local listen addresses and confirmed external addresses are
//!   given to [`KadEngine::set_external_addresses`], so ADD_PROVIDER announces them.

//!
//! Files: `config` (settings, errors), `event` (events), `streams` (stream exchanges and the inbound
//! bound), `routing` (addresses and connections feeding the routing table and the dial hook),
//! `tags` (connection-manager tags); this module is the public API and the swarm glue.

mod config;
mod event;
mod routing;
mod streams;
mod tags;
#[cfg(test)]
mod tests;

use std::fmt;
use std::task::{Context, Poll};
use std::time::Instant;

use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{Outbox, Tasks};
use meshwire_swarm::{
    ConnectedPoint, ConnectionDenied, FromSwarm, InboundStream, NetworkBehaviour, OpenStream,
    OutboundStreamResult, Stream, StreamProtocol, Timer, ToSwarm,
};
use multiaddr::Multiaddr;

pub use self::config::{Config, Error};
pub use self::event::Event;
use self::routing::Routing;
use self::streams::{Done, Inbound, PendingRequest, StreamTasks, Task};
use self::tags::Tags;
use crate::discovery::{Discovery, DiscoveryEvent, Lookup};
use crate::engine::{KadEngine, KadEvent, Mode, RequestId};
use crate::kbucket::{InsertOutcome, RoutingTable};
use crate::protocol::{KadCodec, KadRequest, Record, RecordKey, PROTOCOL_NAME};
use crate::query::{QueryError, QueryId};
use crate::store::StoreError;

#[cfg(doc)]
use crate::engine::KadTransmit;

/// The Kademlia stream protocol, `/ipfs/kad/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

/// The Kademlia [`NetworkBehaviour`]: a [`KadEngine`] driven over the swarm. See the
/// [module docs](self) for what it does, and the [crate docs](crate) for an example.
pub struct Behaviour {
    config: Config,
    engine: KadEngine,
    codec: KadCodec,
    discovery: Discovery,
    routing: Routing,
    tags: Tags,
    inbound: Inbound,
    tasks: StreamTasks,
    outbox: Outbox<Event, PendingRequest>,
    timer: Timer,
    /// The deadline of the timer that fired, until the engine has seen that time.
    fired: Option<Instant>,
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour")
            .field("engine", &self.engine)
            .field("connections", &self.routing.connection_count())
            .field("outbox", &self.outbox)
            .field("inbound_streams", &self.inbound.len())
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

/// The current time on the clock tokio's timers use (so paused-time tests work too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Behaviour {
    /// A behaviour for the local peer `local` (the swarm's identity) with `config`.
    pub fn new(local: PeerId, config: Config) -> Self {
        let engine = KadEngine::new(local, config.engine_config());
        Self::with_engine(engine, config)
    }

    /// A behaviour driving `engine` (e.g. one made with [`KadEngine::with_seed`] from
    /// [`Config::engine_config`]); the engine settings of `config` are replaced by the
    /// engine's configuration.
    pub fn with_engine(engine: KadEngine, config: Config) -> Self {
        let config = config.with_engine_config(engine.config().clone());
        Behaviour {
            codec: config.codec(),
            discovery: Discovery::new(config.discovery.clone()),
            routing: Routing::new(config.max_addrs_per_peer, config.max_address_cache_peers),
            tags: Tags::new(config.conn_manager_tag.clone()),
            inbound: Inbound::default(),
            tasks: Tasks::new(config.max_stream_tasks),
            outbox: Outbox::new(config.max_queued_commands),
            timer: Timer::default(),
            fired: None,
            config,
            engine,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engine, for everything the behaviour does not wrap (stores, statistics).
    pub fn engine(&self) -> &KadEngine {
        &self.engine
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.engine.local_peer_id()
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        self.engine.routing_table()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.engine.mode()
    }

    /// The service-discovery helper (its cache).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Runs `f` on the engine at the current time, then carries out the engine's outputs (the
    /// outbox wakes the swarm's poll).
    fn command<R>(&mut self, f: impl FnOnce(&mut KadEngine, &mut Discovery, Instant) -> R) -> R {
        let now = now();
        let r = f(&mut self.engine, &mut self.discovery, now);
        self.drain_engine(now);
        r
    }

    // ----- commands ----------------------------------------------------------------------

    /// Switches between server mode (claims `/ipfs/kad/1.0.0`, answers requests) and client
    /// mode (claims nothing); on a change the swarm is told with
    /// [`ToSwarm::ProtocolsChanged`] and [`Event::ModeChanged`] is reported.
    pub fn set_mode(&mut self, mode: Mode) {
        self.command(|e, _, _| e.set_mode(mode));
    }

    /// Adds a peer serving the DHT at `addr` (a bootstrap peer) to the routing table, or
    /// adds the address to it.
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) -> InsertOutcome {
        self.command(|e, _, now| e.add_address(peer, addr, now))
    }

    /// Removes `peer` from the routing table. Returns whether it was there.
    pub fn remove_peer(&mut self, peer: &PeerId) -> bool {
        self.command(|e, _, _| e.remove_peer(peer))
    }

    /// Refreshes the routing table (self lookup, then one lookup per bucket further out) and
    /// starts the periodic bootstrap ([`Config::bootstrap_interval`]).
    ///
    /// # Errors
    ///
    /// [`QueryError::NoKnownPeers`] if the routing table is empty.
    pub fn bootstrap(&mut self) -> Result<QueryId, QueryError> {
        self.command(|e, _, now| e.bootstrap(now))
    }

    /// Looks up the `k` peers closest to `key` (any bytes; for a peer, its
    /// [`PeerId::to_bytes`]).
    pub fn find_node(&mut self, key: Vec<u8>) -> QueryId {
        self.command(|e, _, now| e.find_node(key, now))
    }

    /// Looks up the `k` peers closest to `peer`: [`Behaviour::find_node`] of its id.
    pub fn find_peer(&mut self, peer: PeerId) -> QueryId {
        self.find_node(peer.to_bytes())
    }

    /// Looks up the record under `key`, until `quorum` (at least 1) copies are found.
    ///
    /// **Quorum rule**: a copy in the local store counts as one, so with `quorum` 1 a record
    /// held locally is found without asking the network.
    pub fn get_value(&mut self, key: RecordKey, quorum: usize) -> QueryId {
        self.command(|e, _, now| e.get_value(key, quorum, now))
    }

    /// [`get_value`](Self::get_value), by the name rust-libp2p users look for.
    pub fn get_record(&mut self, key: RecordKey, quorum: usize) -> QueryId {
        self.get_value(key, quorum)
    }

    /// Stores `record` locally and at the `k` peers closest to its key; succeeds when
    /// `quorum` of them confirm.
    ///
    /// **Quorum rule**: only remote peers' confirmations count (the local copy does not), so
    /// `quorum` 1 means at least one other peer stored it.
    ///
    /// # Errors
    ///
    /// The local store refused it (full, value too large).
    pub fn put_value(&mut self, record: Record, quorum: usize) -> Result<QueryId, StoreError> {
        self.command(|e, _, now| e.put_value(record, quorum, now))
    }

    /// [`put_value`](Self::put_value), by the name rust-libp2p users look for.
    ///
    /// # Errors
    ///
    /// As [`put_value`](Self::put_value).
    pub fn put_record(&mut self, record: Record, quorum: usize) -> Result<QueryId, StoreError> {
        self.put_value(record, quorum)
    }

    /// Announces the local node as a provider of `key` to the `k` peers closest to it (and
    /// again periodically).
    ///
    /// # Errors
    ///
    /// The local provider store is full.
    pub fn start_providing(&mut self, key: RecordKey) -> Result<QueryId, StoreError> {
        self.command(|e, _, now| e.start_providing(key, now))
    }

    /// Stops announcing `key` (remote announcements expire by themselves).
    pub fn stop_providing(&mut self, key: &RecordKey) {
        self.engine.stop_providing(key);
    }

    /// Looks up the providers of `key`.
    pub fn get_providers(&mut self, key: RecordKey) -> QueryId {
        self.get_providers_up_to(key, None)
    }

    /// Looks up the providers of `key`, stopping once `limit` are known.
    pub fn get_providers_up_to(&mut self, key: RecordKey, limit: Option<usize>) -> QueryId {
        self.command(|e, _, now| e.get_providers(key, limit, now))
    }

    /// Stops query `id` now; it finishes with what it has. Returns `false` for an unknown id.
    pub fn finish_query(&mut self, id: QueryId) -> bool {
        self.command(|e, _, now| e.finish(id, now))
    }

    /// Announces the local node as a provider of `service` (see
    /// [`discovery`](crate::discovery): the key is the SHA2-256 multihash of
    /// `"meshwire/service/" + service`).
    ///
    /// # Errors
    ///
    /// The local provider store is full.
    pub fn announce(&mut self, service: &str) -> Result<QueryId, StoreError> {
        self.command(|e, d, now| d.announce(e, service, now))
    }

    /// Stops announcing `service`.
    pub fn withdraw(&mut self, service: &str) {
        self.discovery.withdraw(&mut self.engine, service);
    }

    /// The providers of `service`: [`Lookup::Cached`] from the local cache while fresh
    /// ([`DiscoveryConfig::cache_ttl`](crate::discovery::DiscoveryConfig::cache_ttl)), else
    /// [`Lookup::Started`] with the id of a GET_PROVIDERS lookup whose outcome comes as
    /// [`Event::ServiceFound`].
    pub fn discover(&mut self, service: &str) -> Lookup {
        self.command(|e, d, now| d.lookup(e, service, now))
    }

    // ----- the engine's outputs ----------------------------------------------------------

    /// Whether the outbox and the tasks have room for one more request of the engine (a
    /// stream request takes two outbox places until its stream is claimed; an engine event
    /// may bring a tag command and a discovery event too).
    fn has_room(&self) -> bool {
        self.outbox.len() + 3 <= self.outbox.limit() && self.tasks.has_room()
    }

    /// Runs the engine's timers if due, and carries out its outputs while there is room.
    /// Returns whether anything was carried out.
    fn drain_engine(&mut self, now: Instant) -> bool {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        let mut any = false;
        while self.has_room() {
            let Some(t) = self.engine.poll_transmit() else {
                break;
            };
            any = true;
            self.send_request(t.request_id, t.peer, t.addrs, t.request, now);
        }
        while self.has_room() {
            let Some(event) = self.engine.poll_event() else {
                break;
            };
            any = true;
            self.on_engine_event(event, now);
        }
        any
    }

    /// Queues `command`, dropping it (logged) if the outbox is full.
    fn push(&mut self, command: ToSwarm<Event>) {
        if let Err(full) = self.outbox.push(command) {
            tracing::warn!(%full, "kad: command dropped");
        }
    }

    fn send_request(
        &mut self,
        request_id: RequestId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        now: Instant,
    ) {
        let expects_response = request.expects_response();
        let frame = match self.codec.encode_request(&request) {
            Ok(frame) => frame,
            Err(error) => {
                // A local problem: the query fails, the peer is not blamed.
                tracing::warn!(%peer, %error, kind = ?request.message_type(), "kad: cannot encode request");
                if expects_response {
                    self.engine
                        .handle_request_unsendable(request_id, error, now);
                }
                return;
            }
        };
        tracing::trace!(%peer, %request_id, kind = ?request.message_type(), "kad: opening stream");
        let pending = PendingRequest {
            peer,
            request_id,
            frame,
            expects_response,
        };
        // `has_room` was checked: the outbox takes it.
        match self
            .outbox
            .open_stream(OpenStream::new(peer, PROTOCOL), pending)
        {
            Ok(_) => self.routing.add_dial_addrs(peer, addrs),
            Err(full) => {
                tracing::warn!(%peer, %full, "kad: request dropped");
                if expects_response {
                    self.engine.handle_request_failed(request_id, now);
                }
            }
        }
    }

    /// Tags `peer` if it is connected.
    fn tag(&mut self, peer: PeerId) {
        if self.routing.is_connected(&peer) {
            if let Some(c) = self.tags.tag(peer) {
                self.push(c);
            }
        }
    }

    fn on_engine_event(&mut self, event: KadEvent, now: Instant) {
        let found = self.discovery.on_event(&event, now);
        match &event {
            KadEvent::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => self.tag(*peer),
            // A peer without connections has no tags left to remove.
            KadEvent::PeerRemoved { peer, .. } if self.routing.is_connected(peer) => {
                if let Some(c) = self.tags.untag(*peer) {
                    self.push(c);
                }
            }
            KadEvent::ModeChanged { .. } => self.push(ToSwarm::ProtocolsChanged),
            _ => {}
        }
        let finished_id = match &event {
            KadEvent::QueryFinished { id, .. } => Some(*id),
            _ => None,
        };
        self.push(ToSwarm::GenerateEvent(event.into()));
        if let (Some(DiscoveryEvent::Found { service, providers }), Some(id)) = (found, finished_id)
        {
            self.push(ToSwarm::GenerateEvent(Event::ServiceFound {
                id,
                service,
                providers,
            }));
        }
    }

    // ----- stream tasks ------------------------------------------------------------------

    /// Reads the next request of inbound stream `id`.
    fn read_next(&mut self, id: u64, stream: Stream) {
        let (codec, timeout) = (self.codec, self.config.inbound_timeout);
        if let Err(error) = self
            .inbound
            .read_next(&mut self.tasks, id, stream, codec, timeout)
        {
            self.inbound_failed(id, None, error);
        }
    }

    /// Inbound stream `id` failed (`stream` is reset); reported unless it was an idle stream
    /// timing out after serving.
    fn inbound_failed(&mut self, id: u64, stream: Option<Stream>, error: Error) {
        if let Some(mut stream) = stream {
            stream.reset();
        }
        let Some(ended) = self.inbound.finished(id) else {
            return;
        };
        if ended.served && matches!(error, Error::Timeout(_)) {
            tracing::trace!(peer = %ended.peer, "kad: idle inbound stream closed");
            return;
        }
        tracing::debug!(peer = %ended.peer, connection = %ended.connection, %error, "kad: inbound stream failed");
        self.push(ToSwarm::GenerateEvent(Event::InboundFailure {
            peer: ended.peer,
            connection: ended.connection,
            error,
        }));
    }

    fn on_task(
        &mut self,
        task: Task,
        done: Result<Done, meshwire_swarm::toolkit::Timeout>,
        now: Instant,
    ) {
        let done = match done {
            Ok(done) => done,
            Err(timeout) => {
                match task {
                    Task::Outbound {
                        request_id,
                        peer,
                        expects_response,
                    } => self.outbound_failed(
                        request_id,
                        peer,
                        expects_response,
                        timeout.into(),
                        now,
                    ),
                    Task::Inbound { id } => self.inbound_failed(id, None, timeout.into()),
                }
                return;
            }
        };
        self.on_done(done, now);
    }

    fn on_done(&mut self, done: Done, now: Instant) {
        match done {
            Done::Aborted => {}
            Done::Outbound {
                request_id,
                peer,
                addr,
                expects_response,
                result,
            } => match result {
                Ok(Some(response)) => {
                    tracing::trace!(%peer, %request_id, "kad: response");
                    self.engine
                        .handle_response(request_id, peer, addr, response, now);
                }
                Ok(None) => tracing::trace!(%peer, %request_id, "kad: one-way request sent"),
                Err(error) => self.outbound_failed(request_id, peer, expects_response, error, now),
            },
            Done::Read { id, stream, result } => match result {
                Ok(Some(request)) => self.serve(id, stream, request, now),
                Ok(None) => {
                    tracing::trace!(id, "kad: inbound stream finished by the remote");
                    self.inbound.finished(id);
                }
                Err(error) => self.inbound_failed(id, Some(stream), error),
            },
            Done::Responded { id, stream, result } => match result {
                Ok(()) if self.inbound.contains(id) => self.read_next(id, stream),
                Ok(()) => {}
                Err(error) => self.inbound_failed(id, Some(stream), error),
            },
        }
    }

    fn outbound_failed(
        &mut self,
        request_id: RequestId,
        peer: PeerId,
        expects_response: bool,
        error: Error,
        now: Instant,
    ) {
        tracing::debug!(%peer, %request_id, %error, "kad: request failed");
        if error.is_unsupported() && self.engine.routing_table().contains(&peer) {
            tracing::debug!(%peer, "kad: peer does not speak the protocol; removing it");
            self.engine.remove_peer(&peer);
        }
        if expects_response {
            self.engine.handle_request_failed(request_id, now);
        }
    }

    /// Answers `request` read from inbound stream `id`.
    fn serve(&mut self, id: u64, mut stream: Stream, request: KadRequest, now: Instant) {
        let Some(peer) = self.inbound.serving(id) else {
            stream.reset();
            return;
        };
        let one_way = !request.expects_response();
        match self.engine.handle_request(peer, request, now) {
            Some(response) => match self.codec.encode_response(&response) {
                Ok(frame) => {
                    let timeout = self.config.inbound_timeout;
                    if let Err(error) =
                        self.inbound
                            .respond(&mut self.tasks, id, stream, frame, timeout)
                    {
                        self.inbound_failed(id, None, error);
                    }
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "kad: cannot encode our response");
                    stream.reset();
                    self.inbound.finished(id);
                }
            },
            // ADD_PROVIDER has no response: wait for the next request.
            None if one_way => self.read_next(id, stream),
            // Refused (client mode, bad key): end the stream without an answer.
            None => {
                tracing::debug!(%peer, "kad: request refused; closing the stream");
                drop(stream);
                self.inbound.finished(id);
            }
        }
    }

    // ----- connections and identify ------------------------------------------------------

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        other_established: usize,
        now: Instant,
    ) {
        self.routing
            .connection_established(peer, connection, endpoint);
        if other_established == 0 {
            self.engine.handle_peer_connected(peer, now);
            // The connection manager forgot the peer's tags when its last connection closed:
            // tag it again.
            if self.engine.routing_table().contains(&peer) {
                self.tag(peer);
            }
        }
    }

    fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remaining_established: usize,
    ) {
        let last = remaining_established == 0;
        self.routing.connection_closed(peer, connection, last);
        if last {
            self.engine.handle_peer_disconnected(&peer);
        }
    }

    /// Identify told us `peer`'s protocols on `connection`.
    fn on_remote_protocols(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        protocols: &[StreamProtocol],
        now: Instant,
    ) {
        if !protocols.contains(&PROTOCOL) {
            if self.engine.routing_table().contains(&peer) {
                tracing::debug!(%peer, "kad: peer no longer serves the DHT; removing it");
                self.engine.remove_peer(&peer);
            }
            return;
        }
        let addrs = self.routing.routable_addrs(&peer, connection);
        if addrs.is_empty() {
            tracing::debug!(%peer, "kad: peer serves the DHT but has no known address; not added");
            return;
        }
        for addr in addrs {
            self.engine.add_address(peer, addr, now);
        }
    }

    /// Fires the timer if due; `true` if it did (the engine must see that time).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.engine.poll_timeout();
        let at = deadline.map(tokio::time::Instant::from_std);
        if self.timer.poll_at(at, cx).is_ready() {
            self.fired = deadline;
            return true;
        }
        false
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        match self.engine.mode() {
            Mode::Server => vec![PROTOCOL],
            Mode::Client => Vec::new(),
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        let table = self.engine.routing_table().get(&peer).map(|n| &n.addrs);
        Ok(self.routing.dial_addresses(&peer, table, addresses))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let now = now();
        let local = match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                other_established,
                ..
            } => {
                self.on_connection_established(peer, connection, endpoint, other_established, now);
                None
            }
            FromSwarm::ConnectionClosed {
                peer,
                connection,
                remaining_established,
                ..
            } => {
                self.on_connection_closed(peer, connection, remaining_established);
                None
            }
            FromSwarm::NewExternalAddrOfPeer { peer, addr } => {
                if peer != *self.engine.local_peer_id() {
                    self.routing.remember_peer_addr(peer, addr);
                    if self.engine.routing_table().contains(&peer) {
                        self.engine.add_address(peer, addr.clone(), now);
                    }
                }
                None
            }
            FromSwarm::RemoteProtocolsChanged {
                peer,
                connection,
                protocols,
            } => {
                self.on_remote_protocols(peer, connection, protocols, now);
                None
            }
            FromSwarm::NewListenAddr { listener, addr } => {
                self.routing.new_listen_addr(listener, addr)
            }
            FromSwarm::ListenerClosed { listener, .. } => self.routing.listener_closed(listener),
            FromSwarm::ExternalAddrConfirmed { addr } => self.routing.external_confirmed(addr),
            FromSwarm::ExternalAddrExpired { addr } => self.routing.external_expired(addr),
            _ => None,
        };
        if let Some(addrs) = local {
            self.engine.set_external_addresses(addrs);
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            mut stream,
            ..
        } = inbound;
        if self.engine.mode() == Mode::Client {
            tracing::debug!(%peer, "kad: inbound stream in client mode; resetting");
            stream.reset();
            return;
        }
        let limit = self.config.max_inbound_streams_per_peer;
        let total = self.config.max_inbound_streams;
        match self.inbound.admit(peer, connection, limit, total) {
            Ok(id) => self.read_next(id, stream),
            Err(error) => {
                tracing::debug!(%peer, limit, "kad: too many inbound streams; resetting the new one");
                stream.reset();
                self.push(ToSwarm::GenerateEvent(Event::InboundFailure {
                    peer,
                    connection,
                    error,
                }));
            }
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(request) = self.outbox.take_stream(result.id) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        let (peer, request_id, expects_response) =
            (request.peer, request.request_id, request.expects_response);
        self.routing.release_dial_addrs(&peer);
        let error = match result.result {
            Ok(out) => {
                let addr = self.routing.dialed_addr(out.connection);
                let timeout = self.config.request_timeout;
                match streams::spawn_outbound(
                    &mut self.tasks,
                    out.stream,
                    request,
                    addr,
                    self.codec,
                    timeout,
                ) {
                    Ok(()) => return,
                    Err(error) => error,
                }
            }
            Err(e) => e.into(),
        };
        self.outbound_failed(request_id, peer, expects_response, error, now());
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            let mut now = now();
            if let Some(fired) = self.fired.take() {
                now = now.max(fired);
            }
            if self.drain_engine(now) {
                continue;
            }
            if let Poll::Ready((task, done)) = self.tasks.poll_next(cx) {
                self.on_task(task, done, now);
                continue;
            }
            if self.poll_timer(cx) {
                continue;
            }
            return Poll::Pending;
        }
    }
}
