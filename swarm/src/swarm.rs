//! The [`Swarm`]: connections, dials, listeners and stream routing around one behaviour.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{abortable, AbortHandle, BoxFuture};
use futures::stream::{FusedStream, FuturesUnordered};
use futures::{FutureExt, Stream as FuturesStream, StreamExt};
use meshwire_connmgr::{BasicConnMgr, ConnManager, ConnManagerHandle, DynConnManager};
use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_transport::multistream::{self, Negotiated};
use meshwire_transport::{
    split_peer_id, CloseReason, Connection, ListenerId, Multiaddr, PendingConnection, Transport,
    TransportError, TransportEvent,
};
use tokio::time::Sleep;

use crate::behaviour::{
    CloseConnection, ConnManagerCommand, FromSwarm, InboundStream, NetworkBehaviour, OpenStream,
    OutboundStream, OutboundStreamResult, ToSwarm,
};
use crate::dial::{DialError, DialOpts, PeerCondition};
use crate::metrics::SwarmMetrics;
use crate::protocol::StreamProtocol;
use crate::stream::{Stream, StreamCounters, StreamGuard};
use crate::{
    ConnectedPoint, ConnectionCloseCause, LimitExceeded, LimitKind, ListenError, StreamError,
    SwarmConfig, SwarmEvent,
};

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

struct Established {
    peer: PeerId,
    conn: Connection,
    endpoint: ConnectedPoint,
    established_at: Instant,
    counters: Arc<StreamCounters>,
    /// Last time something (a stream, a behaviour) kept it alive.
    last_busy: Instant,
    /// Set when we close it, so the closed notification reports our cause.
    closing: Option<ConnectionCloseCause>,
    reported_streams: usize,
}

enum PendingKind {
    Outbound {
        peer: Option<PeerId>,
        /// Addresses not tried yet; at most `dial_concurrency` attempts run at once and the
        /// next address starts as soon as one attempt fails.
        remaining: VecDeque<Multiaddr>,
        errors: Vec<(Multiaddr, TransportError)>,
        deadline: tokio::time::Instant,
        in_flight: usize,
        timed_out: bool,
        aborts: Vec<AbortHandle>,
    },
    Inbound {
        local_addr: Multiaddr,
        send_back_addr: Multiaddr,
    },
}

struct Pending {
    kind: PendingKind,
    started: Instant,
}

/// Output of a pending connection's future.
enum PendingOutput {
    /// One address of a dial.
    Attempt {
        addr: Multiaddr,
        result: Result<Connection, AttemptError>,
    },
    Inbound(Result<Connection, TransportError>),
}

enum AttemptError {
    Transport(TransportError),
    Timeout,
    /// Another address won.
    Aborted,
}

type NegotiatedStream = Negotiated<meshwire_transport::Stream>;

/// Output of a per-connection task.
enum Task {
    Accepted {
        conn: ConnectionId,
        result: Result<meshwire_transport::Stream, meshwire_transport::ConnectionError>,
    },
    Closed {
        conn: ConnectionId,
        reason: CloseReason,
    },
    InboundNegotiated {
        conn: ConnectionId,
        result: Result<(String, NegotiatedStream), StreamError>,
        guard: StreamGuard,
    },
    Outbound {
        conn: ConnectionId,
        request: OpenStream,
        result: Result<(String, NegotiatedStream), StreamError>,
        /// Counts the stream from the request on, so an in-flight request keeps the
        /// connection alive.
        guard: StreamGuard,
    },
}

/// A bounded book of peers' addresses: what dials of a peer without explicit addresses use.
#[derive(Default)]
struct AddressBook {
    peers: HashMap<PeerId, VecDeque<Multiaddr>>,
    order: VecDeque<PeerId>,
}

impl AddressBook {
    fn add(&mut self, peer: PeerId, addr: Multiaddr, per_peer: usize, max_peers: usize) {
        if per_peer == 0 || max_peers == 0 {
            return;
        }
        let addr = strip_p2p(&addr);
        if self.peers.contains_key(&peer) {
            // Most recently added last: eviction takes the least recently refreshed peer.
            if let Some(pos) = self.order.iter().position(|p| *p == peer) {
                self.order.remove(pos);
                self.order.push_back(peer);
            }
        } else {
            while self.peers.len() >= max_peers {
                match self.order.pop_front() {
                    Some(old) => {
                        self.peers.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(peer);
        }
        let list = self.peers.entry(peer).or_default();
        if let Some(pos) = list.iter().position(|a| *a == addr) {
            list.remove(pos);
        }
        list.push_front(addr);
        list.truncate(per_peer);
    }

    fn get(&self, peer: &PeerId) -> impl Iterator<Item = &Multiaddr> {
        self.peers.get(peer).into_iter().flatten()
    }
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    split_peer_id(addr, None)
        .map(|(a, _)| a)
        .unwrap_or_else(|_| addr.clone())
}

/// Drives a [`NetworkBehaviour`] over a [`Transport`]: listens, dials, negotiates and routes
/// streams, applies limits and the connection manager's trims. Poll it with
/// [`Swarm::next_event`] (or as a [`futures::Stream`]) for it to make progress.
pub struct Swarm<B: NetworkBehaviour> {
    transport: Box<dyn Transport>,
    behaviour: B,
    config: SwarmConfig,
    local_peer_id: PeerId,
    conn_manager: DynConnManager,

    protocols: Arc<[StreamProtocol]>,
    protocols_announced: bool,

    listeners: HashMap<ListenerId, Vec<Multiaddr>>,
    external_addrs: Vec<Multiaddr>,

    connections: HashMap<ConnectionId, Established>,
    peers: HashMap<PeerId, Vec<ConnectionId>>,
    pending: HashMap<ConnectionId, Pending>,
    pending_futs: FuturesUnordered<BoxFuture<'static, (ConnectionId, PendingOutput)>>,
    tasks: FuturesUnordered<BoxFuture<'static, Task>>,

    /// Stream requests waiting for a dial of their peer to finish.
    waiting_streams: HashMap<PeerId, Vec<OpenStream>>,
    waiting_count: usize,

    address_book: AddressBook,
    events: VecDeque<SwarmEvent<B::Event>>,

    cm_timer: Pin<Box<Sleep>>,
    cm_deadline: Option<Instant>,
    idle_timer: Pin<Box<Sleep>>,

    metrics: SwarmMetrics,
}

// The swarm never pins its behaviour or any other field structurally.
impl<B: NetworkBehaviour> Unpin for Swarm<B> {}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

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
        let protocols: Arc<[StreamProtocol]> = dedup(behaviour.protocols()).into();
        Swarm {
            transport: Box::new(transport),
            behaviour,
            config,
            local_peer_id,
            conn_manager,
            protocols,
            protocols_announced: false,
            listeners: HashMap::new(),
            external_addrs: Vec::new(),
            connections: HashMap::new(),
            peers: HashMap::new(),
            pending: HashMap::new(),
            pending_futs: FuturesUnordered::new(),
            tasks: FuturesUnordered::new(),
            waiting_streams: HashMap::new(),
            waiting_count: 0,
            address_book: AddressBook::default(),
            events: VecDeque::new(),
            cm_timer: Box::pin(tokio::time::sleep_until(far_future())),
            cm_deadline: None,
            idle_timer: Box::pin(tokio::time::sleep_until(far_future())),
            metrics: SwarmMetrics::default(),
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
        m.connections
            .set(i64::try_from(self.connections.len()).unwrap_or(i64::MAX));
        self.metrics = m.clone();
        m
    }

    /// The configuration.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }

    /// The protocols the local node accepts (all behaviours').
    pub fn protocols(&self) -> &[StreamProtocol] {
        &self.protocols
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
    /// What can be known at once: dialing ourselves, no address, the [`PeerCondition`], a
    /// behaviour's denial, the pending-dial limit.
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
        self.peers.contains_key(peer)
    }

    /// The peers with an established connection.
    pub fn connected_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// The established connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.connections.iter().map(|(id, c)| ConnectionInfo {
            id: *id,
            peer: c.peer,
            endpoint: c.endpoint.clone(),
            established_at: c.established_at,
            streams: c.counters.open(),
        })
    }

    /// The transport connection behind `id`, if established.
    pub fn connection(&self, id: ConnectionId) -> Option<&Connection> {
        self.connections.get(&id).map(|c| &c.conn)
    }

    /// Closes one connection. Returns `false` if it is not established. The close is reported
    /// as [`SwarmEvent::ConnectionClosed`] with cause [`ConnectionCloseCause::Requested`].
    pub fn close_connection(&mut self, id: ConnectionId) -> bool {
        self.close(id, ConnectionCloseCause::Requested)
    }

    /// Closes every connection to `peer`. Returns `false` if there is none.
    pub fn disconnect_peer_id(&mut self, peer: PeerId) -> bool {
        let ids = self.peers.get(&peer).cloned().unwrap_or_default();
        for id in &ids {
            self.close(*id, ConnectionCloseCause::Requested);
        }
        !ids.is_empty()
    }

    /// Waits for the next event. The swarm makes progress only while polled.
    pub async fn next_event(&mut self) -> SwarmEvent<B::Event> {
        loop {
            if let Some(ev) = self.next().await {
                return ev;
            }
        }
    }

    // ---- dialing -------------------------------------------------------------------------

    fn is_dialing(&self, peer: &PeerId) -> bool {
        self.pending
            .values()
            .any(|p| matches!(&p.kind, PendingKind::Outbound { peer: Some(q), .. } if q == peer))
    }

    /// Whether `peer` has a connection that is not closing.
    fn has_live_connection(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.connections
                    .get(id)
                    .is_some_and(|c| c.closing.is_none())
            })
        })
    }

    fn start_dial(&mut self, opts: DialOpts) -> Result<ConnectionId, DialError> {
        let connection = opts.connection;
        if self.pending.contains_key(&connection) || self.connections.contains_key(&connection) {
            return Err(DialError::DuplicateConnectionId(connection));
        }
        // A trailing /p2p/ in an address pins the peer when none was given.
        let mut peer = opts.peer;
        let mut addresses = Vec::with_capacity(opts.addresses.len());
        for a in &opts.addresses {
            match split_peer_id(a, peer) {
                Ok((addr, p)) => {
                    peer = peer.or(p);
                    addresses.push(addr);
                }
                Err(TransportError::AddressPeerMismatch { expected, in_addr }) => {
                    return Err(DialError::WrongPeerId {
                        expected,
                        obtained: in_addr,
                        address: a.clone(),
                    })
                }
                Err(_) => addresses.push(a.clone()),
            }
        }
        if peer == Some(self.local_peer_id) {
            return Err(DialError::LocalPeerId);
        }
        if let Some(p) = peer {
            let connected = self.has_live_connection(&p);
            let dialing = self.is_dialing(&p);
            let ok = match opts.condition {
                PeerCondition::Always => true,
                PeerCondition::Disconnected => !connected,
                PeerCondition::NotDialing => !dialing,
                PeerCondition::DisconnectedAndNotDialing => !connected && !dialing,
            };
            if !ok {
                return Err(DialError::ConditionFalse(opts.condition));
            }
        }
        // The hook runs for every dial (it may deny any); its addresses are used only when
        // the options allow extending them.
        let extra = self
            .behaviour
            .handle_pending_outbound_connection(connection, peer, &addresses)
            .map_err(DialError::Denied)?;
        if opts.extend_addresses_through_behaviour {
            addresses.extend(extra.iter().map(strip_p2p));
            if let Some(p) = peer {
                addresses.extend(self.address_book.get(&p).cloned());
            }
        }
        let mut seen = HashSet::new();
        addresses.retain(|a| seen.insert(a.clone()) && self.transport.can_dial(a));
        if addresses.is_empty() {
            return Err(DialError::NoAddresses);
        }
        let pending_out = self
            .pending
            .values()
            .filter(|p| matches!(p.kind, PendingKind::Outbound { .. }))
            .count();
        if pending_out >= self.config.max_pending_outgoing {
            return Err(DialError::PendingLimit {
                limit: self.config.max_pending_outgoing,
            });
        }
        let deadline = tokio::time::Instant::now() + self.config.dial_timeout;
        self.pending.insert(
            connection,
            Pending {
                kind: PendingKind::Outbound {
                    peer,
                    remaining: addresses.into(),
                    errors: Vec::new(),
                    deadline,
                    in_flight: 0,
                    timed_out: false,
                    aborts: Vec::new(),
                },
                started: Instant::now(),
            },
        );
        if !self.fill_attempts(connection) {
            // The transport refused every address at once.
            let errors = match self.pending.remove(&connection) {
                Some(Pending {
                    kind: PendingKind::Outbound { errors, .. },
                    ..
                }) => errors,
                _ => Vec::new(),
            };
            return Err(DialError::Transport(errors));
        }
        self.events.push_back(SwarmEvent::Dialing {
            peer_id: peer,
            connection_id: connection,
        });
        tracing::debug!(%connection, ?peer, "dialing");
        Ok(connection)
    }

    /// Starts attempts of a pending dial until `dial_concurrency` run or no address is left.
    /// Returns whether any attempt is running.
    fn fill_attempts(&mut self, connection: ConnectionId) -> bool {
        let Some(Pending {
            kind:
                PendingKind::Outbound {
                    peer,
                    remaining,
                    errors,
                    deadline,
                    in_flight,
                    timed_out,
                    aborts,
                },
            ..
        }) = self.pending.get_mut(&connection)
        else {
            return false;
        };
        let concurrency = self.config.dial_concurrency.max(1);
        while *in_flight < concurrency && !*timed_out {
            if tokio::time::Instant::now() >= *deadline {
                *timed_out = true;
                break;
            }
            let Some(addr) = remaining.pop_front() else {
                break;
            };
            match self.transport.dial(&addr, *peer) {
                Ok(fut) => {
                    let deadline = *deadline;
                    let (fut, handle) = abortable(async move {
                        match tokio::time::timeout_at(deadline, fut).await {
                            Ok(Ok(conn)) => Ok(conn),
                            Ok(Err(e)) => Err(AttemptError::Transport(e)),
                            Err(_) => Err(AttemptError::Timeout),
                        }
                    });
                    aborts.push(handle);
                    *in_flight += 1;
                    self.pending_futs.push(
                        async move {
                            let result = fut.await.unwrap_or(Err(AttemptError::Aborted));
                            (connection, PendingOutput::Attempt { addr, result })
                        }
                        .boxed(),
                    );
                }
                Err(e) => errors.push((addr, e)),
            }
        }
        *in_flight > 0
    }

    fn check_limits(&self, peer: PeerId, direction: Direction) -> Result<(), LimitExceeded> {
        let c = &self.config;
        let total = self.connections.len();
        if total >= c.max_established_total {
            return Err(LimitExceeded {
                kind: LimitKind::EstablishedTotal,
                limit: c.max_established_total,
            });
        }
        let same_dir = self
            .connections
            .values()
            .filter(|e| e.endpoint.direction() == direction)
            .count();
        let (kind, limit) = match direction {
            Direction::Inbound => (LimitKind::EstablishedIncoming, c.max_established_incoming),
            Direction::Outbound => (LimitKind::EstablishedOutgoing, c.max_established_outgoing),
        };
        if same_dir >= limit {
            return Err(LimitExceeded { kind, limit });
        }
        if self.peers.get(&peer).map_or(0, Vec::len) >= c.max_established_per_peer {
            return Err(LimitExceeded {
                kind: LimitKind::EstablishedPerPeer,
                limit: c.max_established_per_peer,
            });
        }
        Ok(())
    }

    fn on_pending_output(&mut self, connection: ConnectionId, out: PendingOutput) {
        match out {
            PendingOutput::Attempt { addr, result } => {
                let Some(pending) = self.pending.get_mut(&connection) else {
                    if let Ok(conn) = result {
                        conn.close(0, "dial abandoned");
                    }
                    return;
                };
                let PendingKind::Outbound {
                    peer,
                    errors,
                    in_flight,
                    timed_out,
                    aborts,
                    ..
                } = &mut pending.kind
                else {
                    return;
                };
                *in_flight = in_flight.saturating_sub(1);
                let expected = *peer;
                let conn = match result {
                    Ok(conn) => {
                        for a in aborts.drain(..) {
                            a.abort();
                        }
                        conn
                    }
                    Err(AttemptError::Aborted) => return,
                    Err(e) => {
                        match e {
                            AttemptError::Transport(e) => errors.push((addr, e)),
                            _ => *timed_out = true,
                        }
                        if self.fill_attempts(connection) {
                            return;
                        }
                        let still_running = matches!(
                            self.pending.get(&connection),
                            Some(Pending { kind: PendingKind::Outbound { in_flight, .. }, .. }) if *in_flight > 0
                        );
                        if still_running {
                            return;
                        }
                        let (errors, timed_out) = match self.pending.remove(&connection) {
                            Some(Pending {
                                kind:
                                    PendingKind::Outbound {
                                        errors, timed_out, ..
                                    },
                                ..
                            }) => (errors, timed_out),
                            _ => (Vec::new(), false),
                        };
                        let error = if timed_out {
                            DialError::Timeout(errors)
                        } else {
                            DialError::Transport(errors)
                        };
                        return self.dial_failed(connection, expected, error);
                    }
                };
                let Some(pending) = self.pending.remove(&connection) else {
                    return;
                };
                let peer = conn.peer_id();
                let result = if expected.is_some_and(|e| e != peer) {
                    Err(DialError::WrongPeerId {
                        expected: expected.unwrap_or(peer),
                        obtained: peer,
                        address: addr.clone(),
                    })
                } else if peer == self.local_peer_id {
                    Err(DialError::LocalPeerId)
                } else {
                    self.check_limits(peer, Direction::Outbound)
                        .map_err(DialError::from)
                        .and_then(|()| {
                            self.behaviour
                                .handle_established_outbound_connection(connection, peer, &addr)
                                .map_err(DialError::Denied)
                        })
                };
                match result {
                    Ok(()) => {
                        let endpoint = ConnectedPoint::Dialer {
                            address: addr.clone(),
                        };
                        self.address_book.add(
                            peer,
                            addr,
                            self.config.max_addresses_per_peer,
                            self.config.max_address_book_peers,
                        );
                        self.established(connection, conn, endpoint, pending.started);
                    }
                    Err(e) => {
                        conn.close(0, "denied");
                        self.dial_failed(connection, expected.or(Some(peer)), e);
                    }
                }
            }
            PendingOutput::Inbound(result) => {
                let Some(pending) = self.pending.remove(&connection) else {
                    return;
                };
                let PendingKind::Inbound {
                    local_addr,
                    send_back_addr,
                } = pending.kind
                else {
                    return;
                };
                let result = result.map_err(ListenError::Transport).and_then(|conn| {
                    let peer = conn.peer_id();
                    let checked = if peer == self.local_peer_id {
                        Err(ListenError::LocalPeerId)
                    } else {
                        self.check_limits(peer, Direction::Inbound)
                            .map_err(ListenError::from)
                            .and_then(|()| {
                                self.behaviour
                                    .handle_established_inbound_connection(
                                        connection,
                                        peer,
                                        &local_addr,
                                        &send_back_addr,
                                    )
                                    .map_err(ListenError::Denied)
                            })
                    };
                    match checked {
                        Ok(()) => Ok(conn),
                        Err(e) => {
                            conn.close(0, "denied");
                            Err(e)
                        }
                    }
                });
                match result {
                    Ok(conn) => {
                        let endpoint = ConnectedPoint::Listener {
                            local_addr,
                            send_back_addr,
                        };
                        self.established(connection, conn, endpoint, pending.started);
                    }
                    Err(error) => self.listen_failed(connection, local_addr, send_back_addr, error),
                }
            }
        }
    }

    fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: DialError) {
        tracing::debug!(%connection, ?peer, %error, "dial failed");
        self.metrics.dial_failures.inc();
        let error = Arc::new(error);
        self.behaviour.on_swarm_event(FromSwarm::DialFailure {
            peer,
            connection,
            error: &error,
        });
        if let Some(p) = peer {
            if !self.has_live_connection(&p) && !self.is_dialing(&p) {
                self.fail_waiting_streams(p, StreamError::DialFailed(error.clone()));
            }
        }
        self.events.push_back(SwarmEvent::OutgoingConnectionError {
            connection_id: connection,
            peer_id: peer,
            error,
        });
    }

    fn listen_failed(
        &mut self,
        connection: ConnectionId,
        local_addr: Multiaddr,
        send_back_addr: Multiaddr,
        error: ListenError,
    ) {
        tracing::debug!(%connection, %send_back_addr, %error, "inbound connection failed");
        self.metrics.incoming_connection_errors.inc();
        self.behaviour.on_swarm_event(FromSwarm::ListenFailure {
            connection,
            local_addr: &local_addr,
            send_back_addr: &send_back_addr,
            error: &error,
        });
        self.events.push_back(SwarmEvent::IncomingConnectionError {
            connection_id: connection,
            local_addr,
            send_back_addr,
            error,
        });
    }

    fn established(
        &mut self,
        connection: ConnectionId,
        conn: Connection,
        endpoint: ConnectedPoint,
        started: Instant,
    ) {
        let peer = conn.peer_id();
        let now = Instant::now();
        let counters = StreamCounters::new();
        let others = self.peers.get(&peer).map_or(0, Vec::len);
        self.peers.entry(peer).or_default().push(connection);
        self.conn_manager
            .notify_connected(peer, connection, endpoint.direction(), now);
        // Per-connection tasks: accept the peer's streams, notice the close.
        let c = conn.clone();
        self.tasks.push(
            async move {
                let result = c.accept_stream().await;
                Task::Accepted {
                    conn: connection,
                    result,
                }
            }
            .boxed(),
        );
        let c = conn.clone();
        self.tasks.push(
            async move {
                let reason = c.closed().await;
                Task::Closed {
                    conn: connection,
                    reason,
                }
            }
            .boxed(),
        );
        self.behaviour
            .on_swarm_event(FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint: &endpoint,
                other_established: others,
                handle: &conn,
            });
        tracing::debug!(%connection, %peer, ?endpoint, "connection established");
        match endpoint.direction() {
            Direction::Inbound => self.metrics.connections_incoming.inc(),
            Direction::Outbound => self.metrics.connections_outgoing.inc(),
        };
        self.metrics.connections.inc();
        self.connections.insert(
            connection,
            Established {
                peer,
                conn,
                endpoint: endpoint.clone(),
                established_at: now,
                counters,
                last_busy: now,
                closing: None,
                reported_streams: 0,
            },
        );
        self.events.push_back(SwarmEvent::ConnectionEstablished {
            peer_id: peer,
            connection_id: connection,
            endpoint,
            num_established: NonZeroU32::new(u32::try_from(others + 1).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN),
            established_in: started.elapsed(),
        });
        // Requests that waited for this peer get their streams now.
        if let Some(waiting) = self.waiting_streams.remove(&peer) {
            self.waiting_count -= waiting.len();
            for req in waiting {
                self.open_stream(req);
            }
        }
        self.run_trim(false);
        self.arm_idle_timer();
    }

    // ---- closing -------------------------------------------------------------------------

    fn close(&mut self, id: ConnectionId, cause: ConnectionCloseCause) -> bool {
        let Some(c) = self.connections.get_mut(&id) else {
            return false;
        };
        // Already closed by the remote or the transport: its reason stands.
        if c.closing.is_none() && c.conn.close_reason().is_none() {
            let reason = match &cause {
                ConnectionCloseCause::Trimmed => "trimmed",
                ConnectionCloseCause::Idle => "idle",
                _ => "closed",
            };
            tracing::debug!(connection = %id, peer = %c.peer, %cause, "closing connection");
            c.closing = Some(cause);
            c.conn
                .close(meshwire_transport::connection::CLOSE_CODE_NORMAL, reason);
        }
        true
    }

    fn on_closed(&mut self, id: ConnectionId, reason: CloseReason) {
        let Some(c) = self.connections.remove(&id) else {
            return;
        };
        let peer = c.peer;
        let remaining = match self.peers.get_mut(&peer) {
            Some(list) => {
                list.retain(|x| *x != id);
                let n = list.len();
                if n == 0 {
                    self.peers.remove(&peer);
                }
                n
            }
            None => 0,
        };
        let cause = c.closing.unwrap_or(ConnectionCloseCause::Transport(reason));
        tracing::debug!(connection = %id, %peer, %cause, "connection closed");
        self.metrics.connections.dec();
        self.metrics.connections_closed.inc();
        match cause {
            ConnectionCloseCause::Trimmed => {
                self.metrics.connections_trimmed.inc();
            }
            ConnectionCloseCause::Idle => {
                self.metrics.connections_idle_closed.inc();
            }
            _ => {}
        }
        self.conn_manager
            .notify_disconnected(peer, id, Instant::now());
        self.behaviour.on_swarm_event(FromSwarm::ConnectionClosed {
            peer,
            connection: id,
            endpoint: &c.endpoint,
            remaining_established: remaining,
            cause: &cause,
        });
        self.events.push_back(SwarmEvent::ConnectionClosed {
            peer_id: peer,
            connection_id: id,
            endpoint: c.endpoint,
            num_established: u32::try_from(remaining).unwrap_or(u32::MAX),
            cause,
        });
        self.dial_for_waiting(peer);
    }

    /// Stream requests wait for a dial of their peer; if none is under way and no live
    /// connection is left (the last one closed, or is closing), start one.
    fn dial_for_waiting(&mut self, peer: PeerId) {
        if !self.waiting_streams.contains_key(&peer)
            || self.has_live_connection(&peer)
            || self.is_dialing(&peer)
        {
            return;
        }
        let opts = DialOpts::peer(peer).condition(PeerCondition::DisconnectedAndNotDialing);
        let connection = opts.connection;
        if let Err(e) = self.start_dial(opts) {
            let e = Arc::new(e);
            self.behaviour.on_swarm_event(FromSwarm::DialFailure {
                peer: Some(peer),
                connection,
                error: &e,
            });
            self.fail_waiting_streams(peer, StreamError::DialFailed(e));
        }
    }

    fn run_trim(&mut self, explicit: bool) {
        let now = Instant::now();
        let trimmed = if explicit {
            self.conn_manager.trim_open_conns(now)
        } else {
            self.conn_manager.handle_timeout(now)
        };
        for (peer, conns) in trimmed {
            tracing::debug!(%peer, connections = conns.len(), "connection manager trims peer");
            for id in conns {
                self.close(id, ConnectionCloseCause::Trimmed);
            }
        }
        self.arm_cm_timer();
    }

    /// Runs a trim of the connection manager now (go-libp2p's `TrimOpenConns`) and closes
    /// what it selects. Returns the number of connections closed.
    pub fn trim_open_conns(&mut self) -> usize {
        let before = self
            .connections
            .values()
            .filter(|c| c.closing.is_some())
            .count();
        self.run_trim(true);
        self.connections
            .values()
            .filter(|c| c.closing.is_some())
            .count()
            - before
    }

    fn arm_cm_timer(&mut self) {
        let next = self.conn_manager.poll_timeout();
        if next != self.cm_deadline {
            self.cm_deadline = next;
            let at = match next {
                Some(t) => tokio::time::Instant::from_std(t),
                None => far_future(),
            };
            self.cm_timer.as_mut().reset(at);
        }
    }

    /// Period of the housekeeping check (idle rule, stream counts for the connection
    /// manager): a quarter of the idle timeout, clamped to 10 ms–1 s; 1 s without one.
    fn idle_tick(&self) -> Duration {
        self.config
            .idle_connection_timeout
            .map_or(Duration::from_secs(1), |t| {
                (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
            })
    }

    fn arm_idle_timer(&mut self) {
        let at = tokio::time::Instant::now() + self.idle_tick();
        if self.idle_timer.deadline() > at {
            self.idle_timer.as_mut().reset(at);
        }
    }

    fn check_idle(&mut self) {
        let now = Instant::now();
        let timeout = self.config.idle_connection_timeout;
        let mut to_close = Vec::new();
        for (id, c) in self.connections.iter_mut() {
            let streams = c.counters.open();
            if streams != c.reported_streams {
                c.reported_streams = streams;
                self.conn_manager.notify_streams(c.peer, *id, streams);
            }
            if c.closing.is_some() {
                continue;
            }
            // Open keep-alive streams (and stream requests in flight), a behaviour, or the
            // connection manager's protection keep a connection.
            let busy = c.counters.keep_alive() > 0
                || self.behaviour.connection_keep_alive(c.peer, *id)
                || self.conn_manager.is_protected(c.peer, None);
            if busy {
                c.last_busy = now;
                continue;
            }
            if let Some(t) = timeout {
                let since = c.last_busy.max(c.counters.last_end());
                if now.saturating_duration_since(since) >= t {
                    to_close.push(*id);
                }
            }
        }
        for id in to_close {
            self.close(id, ConnectionCloseCause::Idle);
        }
        let at = if self.connections.is_empty() {
            far_future()
        } else {
            tokio::time::Instant::now() + self.idle_tick()
        };
        self.idle_timer.as_mut().reset(at);
    }

    // ---- streams -------------------------------------------------------------------------

    fn deliver_stream_result(
        &mut self,
        req: OpenStream,
        result: Result<OutboundStream, StreamError>,
    ) {
        match &result {
            Ok(_) => self.metrics.outbound_streams.inc(),
            Err(e) => {
                tracing::debug!(peer = %req.peer, id = %req.id, error = %e, "outbound stream failed");
                self.metrics.outbound_stream_failures.inc()
            }
        };
        self.behaviour.on_outbound_stream(OutboundStreamResult {
            id: req.id,
            peer: req.peer,
            result,
            route: req.route,
        });
    }

    fn fail_waiting_streams(&mut self, peer: PeerId, error: StreamError) {
        if let Some(waiting) = self.waiting_streams.remove(&peer) {
            self.waiting_count -= waiting.len();
            for req in waiting {
                self.deliver_stream_result(req, Err(error.clone()));
            }
        }
    }

    fn open_stream(&mut self, req: OpenStream) {
        let conn_id = match req.connection {
            Some(id) => match self.connections.get(&id) {
                Some(c) if c.peer == req.peer && c.closing.is_none() => Some(id),
                _ => {
                    return self.deliver_stream_result(req, Err(StreamError::NotConnected));
                }
            },
            None => self.peers.get(&req.peer).and_then(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        self.connections
                            .get(id)
                            .is_some_and(|c| c.closing.is_none())
                    })
                    .min_by_key(|id| self.connections.get(id).map_or(0, |c| c.counters.open()))
            }),
        };
        let Some(conn_id) = conn_id else {
            if !req.dial {
                return self.deliver_stream_result(req, Err(StreamError::NotConnected));
            }
            if self.waiting_count >= self.config.max_pending_stream_requests {
                let limit = self.config.max_pending_stream_requests;
                return self.deliver_stream_result(req, Err(StreamError::PendingLimit { limit }));
            }
            let per_peer = self.waiting_streams.get(&req.peer).map_or(0, Vec::len);
            if per_peer >= self.config.max_pending_stream_requests_per_peer {
                let limit = self.config.max_pending_stream_requests_per_peer;
                return self.deliver_stream_result(req, Err(StreamError::PendingLimit { limit }));
            }
            let peer = req.peer;
            self.waiting_streams.entry(peer).or_default().push(req);
            self.waiting_count += 1;
            self.dial_for_waiting(peer);
            return;
        };
        let Some(c) = self.connections.get(&conn_id) else {
            return self.deliver_stream_result(req, Err(StreamError::NotConnected));
        };
        let conn = c.conn.clone();
        let guard = StreamGuard::new(c.counters.clone(), false);
        let timeout = self.config.negotiation_timeout;
        let names: Vec<String> = req
            .protocols
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        let confirm = req.confirm;
        self.tasks.push(
            async move {
                let work = async {
                    let (proto, mut neg) = conn
                        .open_negotiated(&names, timeout)
                        .await
                        .map_err(StreamError::from_connection)?;
                    if confirm {
                        neg.complete()
                            .await
                            .map_err(StreamError::from_negotiation)?;
                    }
                    Ok((proto, neg))
                };
                let result = match tokio::time::timeout(timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(StreamError::Timeout),
                };
                // A failure on a connection that closed meanwhile is the close, whatever
                // the stream saw (a reset, an end of stream).
                let result = result.map_err(|e| match conn.close_reason() {
                    Some(reason) => StreamError::ConnectionClosed(reason),
                    None => e,
                });
                Task::Outbound {
                    conn: conn_id,
                    request: req,
                    result,
                    guard,
                }
            }
            .boxed(),
        );
    }

    fn on_task(&mut self, task: Task) {
        match task {
            Task::Closed { conn, reason } => self.on_closed(conn, reason),
            Task::Accepted { conn, result } => {
                let Some(c) = self.connections.get(&conn) else {
                    return;
                };
                let stream = match result {
                    Ok(s) => s,
                    // The connection is closing; its `Closed` task reports it.
                    Err(_) => return,
                };
                let peer = c.peer;
                // Accept the next one.
                let handle = c.conn.clone();
                self.tasks.push(
                    async move {
                        let result = handle.accept_stream().await;
                        Task::Accepted { conn, result }
                    }
                    .boxed(),
                );
                let limit = self.config.max_inbound_streams_per_connection;
                if c.counters.inbound() >= limit {
                    let mut stream = stream;
                    stream.reset();
                    self.metrics.inbound_stream_errors.inc();
                    self.events.push_back(SwarmEvent::InboundStreamError {
                        peer_id: peer,
                        connection_id: conn,
                        error: StreamError::TooManyStreams { limit },
                    });
                    return;
                }
                let guard = StreamGuard::new(c.counters.clone(), true);
                let protocols = self.protocols.clone();
                let timeout = self.config.negotiation_timeout;
                self.tasks.push(
                    async move {
                        let neg = multistream::listener_select(stream, &protocols[..]);
                        let result = match tokio::time::timeout(timeout, neg).await {
                            Ok(r) => r.map_err(StreamError::from_negotiation),
                            Err(_) => Err(StreamError::Timeout),
                        };
                        Task::InboundNegotiated {
                            conn,
                            result,
                            guard,
                        }
                    }
                    .boxed(),
                );
            }
            Task::InboundNegotiated {
                conn,
                result,
                guard,
            } => {
                let Some(c) = self.connections.get(&conn) else {
                    return;
                };
                let peer = c.peer;
                match result {
                    Ok((name, io)) => {
                        let Some(protocol) =
                            self.protocols.iter().find(|p| p.as_str() == name).cloned()
                        else {
                            // Negotiated against a protocol list that changed since: no
                            // behaviour claims it any more.
                            let mut io = io;
                            io.get_mut().reset();
                            self.metrics.inbound_stream_errors.inc();
                            self.events.push_back(SwarmEvent::InboundStreamError {
                                peer_id: peer,
                                connection_id: conn,
                                error: StreamError::UnsupportedProtocols,
                            });
                            return;
                        };
                        self.metrics.inbound_streams.inc();
                        self.behaviour.on_inbound_stream(InboundStream {
                            peer,
                            connection: conn,
                            protocol,
                            stream: Stream::new(io, guard),
                        });
                    }
                    Err(error) => {
                        tracing::debug!(connection = %conn, %peer, %error, "inbound stream negotiation failed");
                        self.metrics.inbound_stream_errors.inc();
                        self.events.push_back(SwarmEvent::InboundStreamError {
                            peer_id: peer,
                            connection_id: conn,
                            error,
                        });
                    }
                }
            }
            Task::Outbound {
                conn,
                request,
                result,
                guard,
            } => {
                let result = match (result, self.connections.get(&conn)) {
                    (Ok((name, io)), Some(_)) => {
                        let protocol = request
                            .protocols
                            .iter()
                            .find(|p| p.as_str() == name)
                            .cloned();
                        match protocol {
                            Some(protocol) => Ok(OutboundStream {
                                connection: conn,
                                protocol,
                                stream: Stream::new(io, guard),
                            }),
                            None => Err(StreamError::UnsupportedProtocols),
                        }
                    }
                    (Ok(_), None) => Err(StreamError::NotConnected),
                    (Err(e), _) => Err(e),
                };
                self.deliver_stream_result(request, result);
            }
        }
    }

    // ---- addresses -----------------------------------------------------------------------

    fn confirm_external(&mut self, addr: Multiaddr) {
        if self.external_addrs.contains(&addr) {
            return;
        }
        self.external_addrs.push(addr.clone());
        self.behaviour
            .on_swarm_event(FromSwarm::ExternalAddrConfirmed { addr: &addr });
        self.events
            .push_back(SwarmEvent::ExternalAddrConfirmed { address: addr });
    }

    fn expire_external(&mut self, addr: &Multiaddr) -> bool {
        let Some(pos) = self.external_addrs.iter().position(|a| a == addr) else {
            return false;
        };
        let addr = self.external_addrs.remove(pos);
        self.behaviour
            .on_swarm_event(FromSwarm::ExternalAddrExpired { addr: &addr });
        self.events
            .push_back(SwarmEvent::ExternalAddrExpired { address: addr });
        true
    }

    fn new_addr_of_peer(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == self.local_peer_id {
            return;
        }
        self.address_book.add(
            peer,
            addr.clone(),
            self.config.max_addresses_per_peer,
            self.config.max_address_book_peers,
        );
        self.behaviour
            .on_swarm_event(FromSwarm::NewExternalAddrOfPeer { peer, addr: &addr });
        self.events.push_back(SwarmEvent::NewExternalAddrOfPeer {
            peer_id: peer,
            address: addr,
        });
    }

    // ---- behaviour commands and transport events -------------------------------------------

    fn announce_protocols(&mut self) {
        let protocols = self.protocols.clone();
        self.behaviour
            .on_swarm_event(FromSwarm::LocalProtocolsChanged {
                protocols: &protocols,
            });
        self.protocols_announced = true;
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
                    if self.connections.get(&id).is_some_and(|c| c.peer == peer) {
                        self.close(id, ConnectionCloseCause::Requested);
                    }
                }
                CloseConnection::All => {
                    self.disconnect_peer_id(peer);
                }
            },
            ToSwarm::NewExternalAddrCandidate(addr) => {
                self.behaviour
                    .on_swarm_event(FromSwarm::NewExternalAddrCandidate { addr: &addr });
                self.events
                    .push_back(SwarmEvent::NewExternalAddrCandidate { address: addr });
            }
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
                if self.connections.contains_key(&connection) {
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
                let new: Arc<[StreamProtocol]> = dedup(self.behaviour.protocols()).into();
                if new != self.protocols {
                    self.protocols = new;
                    self.announce_protocols();
                }
            }
        }
    }

    fn on_transport_event(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::NewListenAddr { listener, addr } => {
                let list = self.listeners.entry(listener).or_default();
                if !list.contains(&addr) {
                    list.push(addr.clone());
                }
                tracing::info!(%addr, "listening");
                self.behaviour.on_swarm_event(FromSwarm::NewListenAddr {
                    listener,
                    addr: &addr,
                });
                self.events.push_back(SwarmEvent::NewListenAddr {
                    listener_id: listener,
                    address: addr,
                });
            }
            TransportEvent::ListenerClosed { listener, reason } => {
                let addresses = self.listeners.remove(&listener).unwrap_or_default();
                self.behaviour.on_swarm_event(FromSwarm::ListenerClosed {
                    listener,
                    reason: reason.as_ref().map(|_| ()),
                });
                self.events.push_back(SwarmEvent::ListenerClosed {
                    listener_id: listener,
                    addresses,
                    reason,
                });
            }
            TransportEvent::Incoming {
                local_addr,
                remote_addr,
                upgrade,
                ..
            } => self.on_incoming(local_addr, remote_addr, upgrade),
        }
    }

    fn on_incoming(
        &mut self,
        local_addr: Multiaddr,
        send_back_addr: Multiaddr,
        upgrade: PendingConnection,
    ) {
        let connection = ConnectionId::next();
        let pending_in = self
            .pending
            .values()
            .filter(|p| matches!(p.kind, PendingKind::Inbound { .. }))
            .count();
        let refused = if pending_in >= self.config.max_pending_incoming {
            Some(ListenError::Limit(LimitExceeded {
                kind: LimitKind::PendingIncoming,
                limit: self.config.max_pending_incoming,
            }))
        } else {
            self.behaviour
                .handle_pending_inbound_connection(connection, &local_addr, &send_back_addr)
                .err()
                .map(ListenError::Denied)
        };
        if let Some(error) = refused {
            drop(upgrade);
            return self.listen_failed(connection, local_addr, send_back_addr, error);
        }
        self.events.push_back(SwarmEvent::IncomingConnection {
            connection_id: connection,
            local_addr: local_addr.clone(),
            send_back_addr: send_back_addr.clone(),
        });
        self.pending.insert(
            connection,
            Pending {
                kind: PendingKind::Inbound {
                    local_addr,
                    send_back_addr,
                },
                started: Instant::now(),
            },
        );
        let timeout = self.config.dial_timeout;
        self.pending_futs.push(
            async move {
                let r = match tokio::time::timeout(timeout, upgrade).await {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::HandshakeTimeout),
                };
                (connection, PendingOutput::Inbound(r))
            }
            .boxed(),
        );
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<SwarmEvent<B::Event>> {
        if !self.protocols_announced {
            self.announce_protocols();
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
            if let Poll::Ready(Some((id, out))) = self.pending_futs.poll_next_unpin(cx) {
                self.on_pending_output(id, out);
                continue;
            }
            if let Poll::Ready(Some(task)) = self.tasks.poll_next_unpin(cx) {
                self.on_task(task);
                continue;
            }
            if self.cm_timer.as_mut().poll(cx).is_ready() {
                self.cm_deadline = None;
                self.cm_timer.as_mut().reset(far_future());
                self.run_trim(false);
                continue;
            }
            if self.idle_timer.as_mut().poll(cx).is_ready() {
                self.idle_timer.as_mut().reset(far_future());
                self.check_idle();
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

fn dedup(protocols: Vec<StreamProtocol>) -> Vec<StreamProtocol> {
    let mut seen = HashSet::new();
    protocols
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
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
        for (id, c) in &self.connections {
            c.conn.close(
                meshwire_transport::connection::CLOSE_CODE_NORMAL,
                "swarm closed",
            );
            self.conn_manager.notify_disconnected(c.peer, *id, now);
        }
        for p in self.pending.values_mut() {
            if let PendingKind::Outbound { aborts, .. } = &mut p.kind {
                for a in aborts.drain(..) {
                    a.abort();
                }
            }
        }
    }
}

impl<B: NetworkBehaviour> std::fmt::Debug for Swarm<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("local_peer_id", &self.local_peer_id)
            .field("connections", &self.connections.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}
