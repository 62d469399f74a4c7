//! The [`Swarm`]: connections, dials, listeners and stream routing around one behaviour.
//!
//! This file holds the swarm's state, its public methods and its poll loop, which hands
//! each behaviour command and transport event to the concern that handles it. The state of
//! each concern is its own struct, in a module that knows nothing of the swarm:
//! `pool` (established and pending connections, dial attempts, limits, the idle scan),
//! `router` (protocols, per-connection tasks, waiting stream requests) and
//! `address_book`. The `impl Swarm` that ties a concern to the behaviour and the events is
//! in `connecting` (dials, handshakes, establishing), `closing` (closes, trims, the
//! idle rule and their timers), `streams` (inbound hand-over, outbound requests),
//! `addresses` (listen, external and peer addresses) and `commands` (the commands of
//! [`SwarmHandle`](crate::SwarmHandle)s, and [`Swarm::spawn`]).

mod acceptor;
mod address_book;
mod addresses;
mod closing;
mod commands;
mod connecting;
mod pool;
mod router;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::stream::FusedStream;
use futures::Stream as FuturesStream;
use meshwire_connmgr::{BasicConnMgr, ConnManager, ConnManagerHandle, DynConnManager};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_rcmgr::{ConnectionScope, ResourceManager};
use meshwire_transport::{
    Connection, ListenerId, Multiaddr, Transport, TransportError, TransportEvent,
};

use self::address_book::AddressBook;
use self::pool::Pool;
use self::router::Router;
use crate::behaviour::{CloseConnection, ConnManagerCommand, FromSwarm, NetworkBehaviour, ToSwarm};
use crate::config::SwarmConfig;
use crate::control::{self, StreamControl};
use crate::dial::DialOpts;
use crate::error::DialError;
use crate::event::{ConnectedPoint, ConnectionCloseCause, SwarmEvent};
use crate::metrics::SwarmMetrics;
use crate::protocol::StreamProtocol;
use crate::timer::Timer;

/// Commands handled per call of [`Swarm::poll_next`] before yielding to the runtime.
const POLL_BUDGET: usize = 256;

/// A snapshot of one established connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnectionId,
    /// The remote peer.
    pub peer: PeerId,
    /// How it was reached.
    pub endpoint: ConnectedPoint,
    /// When it was established.
    pub established_at: Instant,
    /// Streams open on it now.
    pub streams: usize,
}

/// The longest reason phrase [`Swarm::close_connection_with_reason`] sends, in bytes (it
/// must fit a QUIC packet with the rest of the CONNECTION_CLOSE frame).
pub const MAX_CLOSE_REASON: usize = 256;

/// Drives a [`NetworkBehaviour`] over a [`Transport`]: listens, dials, negotiates and routes
/// streams, applies limits and the connection manager's trims. Poll it with
/// [`Swarm::next_event`] (or as a [`futures::Stream`]) for it to make progress.
pub struct Swarm<B: NetworkBehaviour> {
    transport: Box<dyn Transport>,
    behaviour: B,
    config: SwarmConfig,
    local_peer_id: PeerId,
    conn_manager: DynConnManager,
    /// Connections, streams and memory per scope ([`SwarmConfig::resource_limits`]).
    resources: ResourceManager,
    /// Each pending or established connection's share of the resource manager.
    conn_scopes: HashMap<ConnectionId, ConnectionScope>,

    pool: Pool,
    router: Router,

    listeners: HashMap<ListenerId, Vec<Multiaddr>>,
    external_addrs: Vec<Multiaddr>,
    address_book: AddressBook,

    events: VecDeque<SwarmEvent<B::Event>>,

    /// Fires at the connection manager's [`ConnManager::poll_timeout`].
    cm_timer: Timer,
    cm_at: Option<tokio::time::Instant>,
    /// Fires at the next check of the idle rule.
    idle_timer: Timer,
    idle_at: Option<tokio::time::Instant>,

    metrics: SwarmMetrics,

    /// The commands of this swarm's handles (made on the first [`Swarm::handle`]).
    handles: Option<commands::HandleChannel<B>>,
    /// A handle asked the spawned swarm to stop.
    shutdown: bool,
    /// What the swarm shares with its [`StreamControl`]s.
    control: Arc<control::Shared>,
}

// The swarm never pins its behaviour or any other field structurally.
impl<B: NetworkBehaviour> Unpin for Swarm<B> {}

impl<B: NetworkBehaviour> Swarm<B> {
    /// A swarm over `transport` driving `behaviour`, with a [`BasicConnMgr`] with default
    /// settings as its connection manager. Create it within a Tokio runtime: the swarm uses
    /// Tokio's timers.
    pub fn new(transport: impl Transport, behaviour: B, config: SwarmConfig) -> Self {
        // The default configuration is valid, so this cannot fail; fall back to a manager
        // that never trims rather than panic.
        let cm: DynConnManager = match BasicConnMgr::new(Default::default(), Instant::now()) {
            Ok(cm) => ConnManagerHandle::new(cm).to_dyn(),
            Err(_) => ConnManagerHandle::new(meshwire_connmgr::NullConnMgr).to_dyn(),
        };
        Self::with_conn_manager(transport, behaviour, config, cm)
    }

    /// A swarm with the given connection manager. Keep a typed clone of the handle to reach
    /// manager-specific methods (decaying tags, metrics):
    /// `let cm = ConnManagerHandle::new(BasicConnMgr::new(..)?); Swarm::with_conn_manager(t, b, c, cm.to_dyn())`.
    pub fn with_conn_manager(
        transport: impl Transport,
        behaviour: B,
        config: SwarmConfig,
        conn_manager: DynConnManager,
    ) -> Self {
        let local_peer_id = transport.local_peer_id();
        let router = Router::new(behaviour.protocols());
        let resources = ResourceManager::new(config.resource_limits.clone());
        let control = control::Shared::new(
            resources.clone(),
            config.negotiation_timeout,
            config.incoming_stream_buffer,
        );
        Swarm {
            resources,
            conn_scopes: HashMap::new(),
            transport: Box::new(transport),
            behaviour,
            config,
            local_peer_id,
            conn_manager,
            pool: Pool::new(control.clone()),
            router,
            listeners: HashMap::new(),
            external_addrs: Vec::new(),
            address_book: AddressBook::default(),
            events: VecDeque::new(),
            cm_timer: Timer::default(),
            cm_at: None,
            idle_timer: Timer::default(),
            idle_at: None,
            metrics: SwarmMetrics::default(),
            handles: None,
            shutdown: false,
            control,
        }
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The behaviour.
    pub fn behaviour(&self) -> &B {
        &self.behaviour
    }

    /// The behaviour, mutably.
    pub fn behaviour_mut(&mut self) -> &mut B {
        &mut self.behaviour
    }

    /// The resource manager: what every scope holds now
    /// ([`ResourceManager::system_usage`], ...), and memory reservations for an
    /// application's own buffers ([`ResourceManager::reserve_service_memory`]).
    pub fn resource_manager(&self) -> &ResourceManager {
        &self.resources
    }

    /// The connection manager, for tagging and protecting peers from the application.
    pub fn conn_manager(&self) -> &DynConnManager {
        &self.conn_manager
    }

    /// Registers the swarm's metrics (see [`SwarmMetrics`]) in `registry` under the `swarm`
    /// prefix; they count from now on. Returns a handle to read them.
    pub fn register_metrics(
        &mut self,
        registry: &mut prometheus_client::registry::Registry,
    ) -> SwarmMetrics {
        let m = SwarmMetrics::register(registry);
        self.resources.set_metrics(m.resources.clone());
        m.connections
            .set(i64::try_from(self.pool.len()).unwrap_or(i64::MAX));
        self.metrics = m.clone();
        self.control.set_metrics(m.clone());
        m
    }

    /// A [`StreamControl`] of this swarm: opens and accepts streams from any task, without a
    /// round trip through the swarm's task (see [`control`](crate::control)).
    pub fn stream_control(&self) -> StreamControl {
        StreamControl::new(self.control.clone())
    }

    /// The protocols inbound streams are negotiated against: the behaviour's and those
    /// registered with a [`StreamControl`].
    fn local_protocols(&self) -> Vec<StreamProtocol> {
        let mut protocols = self.control.protocols();
        protocols.extend(self.behaviour.protocols());
        protocols
    }

    /// The configuration.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }

    /// The protocols the local node accepts (all behaviours').
    pub fn protocols(&self) -> &[StreamProtocol] {
        self.router.protocols()
    }

    /// Starts listening; the address is reported by [`SwarmEvent::NewListenAddr`].
    ///
    /// # Errors
    ///
    /// The transport's, e.g. an address it cannot listen on.
    pub fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        let id = self.transport.listen_on(addr)?;
        self.listeners.entry(id).or_default();
        Ok(id)
    }

    /// Stops a listener. Returns `false` if there is none with this id.
    pub fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.transport.remove_listener(id)
    }

    /// The addresses we listen on.
    pub fn listeners(&self) -> impl Iterator<Item = &Multiaddr> {
        self.listeners.values().flatten()
    }

    /// Our confirmed external addresses.
    pub fn external_addresses(&self) -> impl Iterator<Item = &Multiaddr> {
        self.external_addrs.iter()
    }

    /// Confirms an external address (tells every behaviour).
    pub fn add_external_address(&mut self, addr: Multiaddr) {
        self.confirm_external(addr);
    }

    /// Removes an external address (tells every behaviour). Returns whether it was known.
    pub fn remove_external_address(&mut self, addr: &Multiaddr) -> bool {
        self.expire_external(addr)
    }

    /// Remembers an address of `peer` for later dials and tells every behaviour.
    pub fn add_peer_address(&mut self, peer: PeerId, addr: Multiaddr) {
        self.new_addr_of_peer(peer, addr);
    }

    /// Starts a dial. Failures after this call returns are reported as
    /// [`SwarmEvent::OutgoingConnectionError`].
    ///
    /// # Errors
    ///
    /// What can be known at once: dialing ourselves, no address, the
    /// [`PeerCondition`](crate::PeerCondition), a behaviour's denial, the pending-dial limit.
    pub fn dial(&mut self, opts: impl Into<DialOpts>) -> Result<ConnectionId, Arc<DialError>> {
        let opts = opts.into();
        let connection = opts.connection;
        let peer = opts.peer;
        self.start_dial(opts).map_err(|e| {
            let e = Arc::new(e);
            self.behaviour.on_swarm_event(FromSwarm::DialFailure {
                peer,
                connection,
                error: &e,
            });
            e
        })
    }

    /// Whether at least one connection to `peer` is established.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.pool.is_connected(peer)
    }

    /// The peers with an established connection.
    pub fn connected_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.pool.peers()
    }

    /// The established connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.pool.established().map(|(id, c)| ConnectionInfo {
            id: *id,
            peer: c.peer,
            endpoint: c.endpoint.clone(),
            established_at: c.established_at,
            streams: c.counters.open(),
        })
    }

    /// The transport connection behind `id`, if established.
    pub fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.pool.get(&id).map(|c| &c.conn)
    }

    /// Closes one connection. Returns `false` if it is not established. The close is reported
    /// as [`SwarmEvent::ConnectionClosed`] with cause [`ConnectionCloseCause::Requested`].
    pub fn close_connection(&mut self, id: ConnectionId) -> bool {
        self.pool.close(id, ConnectionCloseCause::Requested)
    }

    /// [`close_connection`](Self::close_connection), telling the remote why: `reason` is the
    /// reason phrase of QUIC's CONNECTION_CLOSE (the remote's
    /// [`ConnectionCloseCause::Transport`] carries it as `CloseReason::Remote`); transports
    /// without a reason phrase (Yamux over a relay) close as usual. At most
    /// [`MAX_CLOSE_REASON`] bytes are sent.
    pub fn close_connection_with_reason(&mut self, id: ConnectionId, reason: &str) -> bool {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.pool
            .close_with_reason(id, ConnectionCloseCause::Requested, Some(&reason[..end]))
    }

    /// Closes every connection to `peer`. Returns `false` if there is none.
    pub fn disconnect_peer_id(&mut self, peer: PeerId) -> bool {
        let ids = self.pool.connections_of(&peer).to_vec();
        for id in &ids {
            self.pool.close(*id, ConnectionCloseCause::Requested);
        }
        !ids.is_empty()
    }

    /// Runs a trim of the connection manager now (go-libp2p's `TrimOpenConns`) and closes
    /// what it selects. Returns the number of connections closed.
    pub fn trim_open_conns(&mut self) -> usize {
        let before = self.pool.closing_count();
        self.run_trim(true);
        self.pool.closing_count() - before
    }

    /// Waits for the next event. The swarm makes progress only while polled.
    pub async fn next_event(&mut self) -> SwarmEvent<B::Event> {
        loop {
            if let Some(ev) = futures::StreamExt::next(self).await {
                return ev;
            }
        }
    }

    // ---- behaviour commands and transport events -------------------------------------------

    fn announce_protocols(&mut self) {
        let protocols = self.router.protocols().clone();
        self.behaviour
            .on_swarm_event(FromSwarm::LocalProtocolsChanged {
                protocols: &protocols,
            });
        self.router.protocols_announced = true;
    }

    fn on_command(&mut self, cmd: ToSwarm<B::Event>) {
        match cmd {
            ToSwarm::GenerateEvent(e) => self.events.push_back(SwarmEvent::Behaviour(e)),
            ToSwarm::Dial(opts) => {
                let _ = self.dial(opts);
            }
            ToSwarm::OpenStream(req) => self.open_stream(req),
            ToSwarm::CloseConnection { peer, connection } => match connection {
                CloseConnection::One(id) => {
                    if self.pool.get(&id).is_some_and(|c| c.peer == peer) {
                        self.pool.close(id, ConnectionCloseCause::Requested);
                    }
                }
                CloseConnection::All => {
                    self.disconnect_peer_id(peer);
                }
            },
            ToSwarm::NewExternalAddrCandidate(addr) => self.new_external_candidate(addr),
            ToSwarm::ExternalAddrConfirmed(addr) => self.confirm_external(addr),
            ToSwarm::ExternalAddrExpired(addr) => {
                self.expire_external(&addr);
            }
            ToSwarm::NewExternalAddrOfPeer { peer, addr } => self.new_addr_of_peer(peer, addr),
            ToSwarm::RemoteProtocolsChanged {
                peer,
                connection,
                protocols,
            } => {
                if self.pool.get(&connection).is_some() {
                    self.behaviour
                        .on_swarm_event(FromSwarm::RemoteProtocolsChanged {
                            peer,
                            connection,
                            protocols: &protocols,
                        });
                }
            }
            ToSwarm::ConnManager(c) => {
                match c {
                    ConnManagerCommand::TagPeer { peer, tag, value } => {
                        self.conn_manager.tag_peer(peer, &tag, value)
                    }
                    ConnManagerCommand::UntagPeer { peer, tag } => {
                        self.conn_manager.untag_peer(peer, &tag)
                    }
                    ConnManagerCommand::UpsertTag { peer, tag, mut f } => {
                        self.conn_manager.upsert_tag(peer, &tag, &mut *f)
                    }
                    ConnManagerCommand::Protect { peer, tag } => {
                        self.conn_manager.protect(peer, &tag)
                    }
                    ConnManagerCommand::Unprotect { peer, tag } => {
                        self.conn_manager.unprotect(peer, &tag);
                    }
                }
                self.arm_cm_timer();
            }
            ToSwarm::ProtocolsChanged => {
                if self.router.set_protocols(self.local_protocols()) {
                    self.announce_protocols();
                }
            }
        }
    }

    fn on_transport_event(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::NewListenAddr { listener, addr } => {
                self.on_new_listen_addr(listener, addr)
            }
            TransportEvent::ListenerClosed { listener, reason } => {
                self.on_listener_closed(listener, reason)
            }
            TransportEvent::Incoming {
                local_addr,
                remote_addr,
                upgrade,
                ..
            } => self.on_incoming(local_addr, remote_addr, upgrade),
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<SwarmEvent<B::Event>> {
        if self.control.poll_changed(cx) {
            // Set first, so the first announcement below carries them too.
            let changed = self.router.set_protocols(self.local_protocols());
            if changed && self.router.protocols_announced {
                self.announce_protocols();
            }
        }
        if !self.router.protocols_announced {
            self.announce_protocols();
        }
        // Trims an application ran through the connection manager's handle: checked once per
        // poll (a mutex, kept off the loop below that every stream task's wake-up runs); a
        // trim queued later wakes the swarm.
        if let Poll::Ready(trimmed) = self.conn_manager.poll_closes(cx) {
            self.close_trimmed(trimmed);
            self.arm_cm_timer();
        }
        for _ in 0..POLL_BUDGET {
            if let Some(ev) = self.events.pop_front() {
                return Poll::Ready(ev);
            }
            if let Poll::Ready(cmd) = self.behaviour.poll(cx) {
                self.on_command(cmd);
                continue;
            }
            if let Poll::Ready(ev) = self.transport.poll_event(cx) {
                self.on_transport_event(ev);
                continue;
            }
            if let Poll::Ready(command) = self.poll_handles(cx) {
                self.on_handle_command(command);
                continue;
            }
            if let Poll::Ready(Some((id, out))) = self.pool.poll_pending(cx) {
                self.on_pending_output(id, out);
                continue;
            }
            if let Poll::Ready(Some(inbound)) = self.router.poll_inbound(cx) {
                self.on_inbound(inbound);
                continue;
            }
            if let Poll::Ready(Some(task)) = self.router.poll_task(cx) {
                self.on_task(task);
                continue;
            }
            if self.poll_timers(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
        if let Some(ev) = self.events.pop_front() {
            return Poll::Ready(ev);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<B: NetworkBehaviour> FuturesStream for Swarm<B> {
    type Item = SwarmEvent<B::Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_inner(cx).map(Some)
    }
}

impl<B: NetworkBehaviour> FusedStream for Swarm<B> {
    fn is_terminated(&self) -> bool {
        false
    }
}

impl<B: NetworkBehaviour> Drop for Swarm<B> {
    fn drop(&mut self) {
        // The connection manager may outlive the swarm (applications keep handles to it):
        // tell it the connections are gone.
        let now = Instant::now();
        let cm = &mut self.conn_manager;
        self.pool
            .shut_down(|peer, id| cm.notify_disconnected(peer, id, now));
    }
}

impl<B: NetworkBehaviour> std::fmt::Debug for Swarm<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("local_peer_id", &self.local_peer_id)
            .field("connections", &self.pool.len())
            .field("pending", &self.pool.pending_len())
            .finish_non_exhaustive()
    }
}
