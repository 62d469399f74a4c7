//! The connection pool: established connections, handshakes and dials in progress (with
//! their address attempts), the limits a new connection is checked against, closing, and
//! the idle rule's scan. State only; the [`Swarm`](super::Swarm) tells behaviours.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{abortable, AbortHandle, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::FutureExt;
use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_transport::{Connection, Multiaddr, PendingConnection, Transport, TransportError};

use crate::config::SwarmConfig;
use crate::control;
use crate::error::{DialError, LimitExceeded, LimitKind};
use crate::event::{ConnectedPoint, ConnectionCloseCause};
use crate::stream::StreamCounters;

use super::acceptor::AcceptorHandle;

/// An established connection.
pub(super) struct Established {
    pub(super) peer: PeerId,
    pub(super) conn: Connection,
    pub(super) endpoint: ConnectedPoint,
    pub(super) established_at: Instant,
    pub(super) counters: Arc<StreamCounters>,
    /// Last time something (a stream, a behaviour) kept it alive.
    last_busy: Instant,
    /// Set when we close it, so the closed notification reports our cause.
    pub(super) closing: Option<ConnectionCloseCause>,
    reported_streams: usize,
    /// Its acceptor task, stopped when the connection leaves the pool.
    acceptor: Option<AcceptorHandle>,
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
pub(super) enum PendingOutput {
    /// One address of a dial.
    Attempt {
        addr: Multiaddr,
        result: Result<Connection, AttemptError>,
    },
    /// An inbound handshake.
    Inbound(Result<Connection, TransportError>),
}

pub(super) enum AttemptError {
    Transport(TransportError),
    Timeout,
    /// Another address won.
    Aborted,
}

/// What a finished dial attempt means for its dial.
pub(super) enum AttemptOutcome {
    /// Nothing to report: other attempts still run, or the dial is gone.
    Nothing,
    /// An attempt connected; the dial is no longer pending.
    Connected {
        conn: Connection,
        addr: Multiaddr,
        /// The peer dialed, if known.
        expected: Option<PeerId>,
        started: Instant,
    },
    /// Every attempt failed; the dial is no longer pending.
    Failed {
        expected: Option<PeerId>,
        error: DialError,
    },
}

/// An inbound handshake that finished, with where it came from.
pub(super) struct InboundHandshake {
    pub(super) local_addr: Multiaddr,
    pub(super) send_back_addr: Multiaddr,
    pub(super) started: Instant,
}

/// Established and pending connections.
pub(super) struct Pool {
    connections: HashMap<ConnectionId, Established>,
    peers: HashMap<PeerId, Vec<ConnectionId>>,
    pending: HashMap<ConnectionId, Pending>,
    pending_futs: FuturesUnordered<BoxFuture<'static, (ConnectionId, PendingOutput)>>,
    /// The live connections the swarm's [`StreamControl`](crate::StreamControl)s open on:
    /// kept here, where connections are added, closed and removed.
    control: Arc<control::Shared>,
    /// Drains of dropped streams running on all connections (`stream::MAX_DRAINS`).
    drains: Arc<AtomicUsize>,
}

impl Pool {
    pub(super) fn new(control: Arc<control::Shared>) -> Self {
        Pool {
            connections: HashMap::new(),
            peers: HashMap::new(),
            pending: HashMap::new(),
            pending_futs: FuturesUnordered::new(),
            control,
            drains: Arc::new(AtomicUsize::new(0)),
        }
    }

    // ---- queries -------------------------------------------------------------------------

    pub(super) fn get(&self, id: &ConnectionId) -> Option<&Established> {
        self.connections.get(id)
    }

    pub(super) fn established(&self) -> impl Iterator<Item = (&ConnectionId, &Established)> {
        self.connections.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.connections.len()
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The established connections to `peer`.
    pub(super) fn connections_of(&self, peer: &PeerId) -> &[ConnectionId] {
        self.peers.get(peer).map_or(&[], Vec::as_slice)
    }

    pub(super) fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether `id` is in use, pending or established.
    pub(super) fn contains(&self, id: &ConnectionId) -> bool {
        self.pending.contains_key(id) || self.connections.contains_key(id)
    }

    pub(super) fn is_dialing(&self, peer: &PeerId) -> bool {
        self.pending
            .values()
            .any(|p| matches!(&p.kind, PendingKind::Outbound { peer: Some(q), .. } if q == peer))
    }

    /// Whether `peer` has a connection that is not closing.
    pub(super) fn has_live_connection(&self, peer: &PeerId) -> bool {
        self.connections_of(peer).iter().any(|id| self.is_live(id))
    }

    /// Whether `id` is established and not closing.
    pub(super) fn is_live(&self, id: &ConnectionId) -> bool {
        self.connections
            .get(id)
            .is_some_and(|c| c.closing.is_none())
    }

    /// The live connection to `peer` with the fewest open streams.
    /// The connection new streams to `peer` go on: a direct one over a relayed one, then the
    /// one with the fewest open streams.
    pub(super) fn least_busy(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.connections_of(peer)
            .iter()
            .copied()
            .filter(|id| self.is_live(id))
            .min_by_key(|id| {
                self.connections
                    .get(id)
                    .map_or((true, 0), |c| (c.conn.is_relayed(), c.counters.open()))
            })
    }

    /// Connections we are closing.
    pub(super) fn closing_count(&self) -> usize {
        self.connections
            .values()
            .filter(|c| c.closing.is_some())
            .count()
    }

    fn pending_count(&self, outbound: bool) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p.kind, PendingKind::Outbound { .. }) == outbound)
            .count()
    }

    /// Checks the pending-dial limit.
    pub(super) fn check_pending_outgoing(&self, config: &SwarmConfig) -> Result<(), DialError> {
        if self.pending_count(true) >= config.max_pending_outgoing {
            return Err(DialError::PendingLimit {
                limit: config.max_pending_outgoing,
            });
        }
        Ok(())
    }

    /// Checks the pending-handshake limit.
    pub(super) fn check_pending_incoming(&self, config: &SwarmConfig) -> Result<(), LimitExceeded> {
        if self.pending_count(false) >= config.max_pending_incoming {
            return Err(LimitExceeded {
                kind: LimitKind::PendingIncoming,
                limit: config.max_pending_incoming,
            });
        }
        Ok(())
    }

    /// Checks the established-connection limits for one more connection to `peer`.
    pub(super) fn check_limits(
        &self,
        peer: PeerId,
        direction: Direction,
        c: &SwarmConfig,
    ) -> Result<(), LimitExceeded> {
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
        if self.connections_of(&peer).len() >= c.max_established_per_peer {
            return Err(LimitExceeded {
                kind: LimitKind::EstablishedPerPeer,
                limit: c.max_established_per_peer,
            });
        }
        Ok(())
    }

    /// The next finished dial attempt or handshake.
    pub(super) fn poll_pending(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(ConnectionId, PendingOutput)>> {
        futures::StreamExt::poll_next_unpin(&mut self.pending_futs, cx)
    }

    // ---- dials ---------------------------------------------------------------------------

    /// Starts a dial of `addresses` (checked, deduplicated, not empty) under `connection`.
    ///
    /// # Errors
    ///
    /// [`DialError::Transport`] when the transport refused every address at once.
    pub(super) fn start_dial(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: Vec<Multiaddr>,
        transport: &mut dyn Transport,
        config: &SwarmConfig,
    ) -> Result<(), DialError> {
        self.pending.insert(
            connection,
            Pending {
                kind: PendingKind::Outbound {
                    peer,
                    remaining: addresses.into(),
                    errors: Vec::new(),
                    deadline: tokio::time::Instant::now() + config.dial_timeout,
                    in_flight: 0,
                    timed_out: false,
                    aborts: Vec::new(),
                },
                started: Instant::now(),
            },
        );
        if self.fill_attempts(connection, transport, config.dial_concurrency) {
            return Ok(());
        }
        // The transport refused every address at once.
        let errors = match self.pending.remove(&connection) {
            Some(Pending {
                kind: PendingKind::Outbound { errors, .. },
                ..
            }) => errors,
            _ => Vec::new(),
        };
        Err(DialError::Transport(errors))
    }

    /// Starts attempts of a pending dial until `concurrency` run or no address is left.
    /// Returns whether any attempt is running.
    fn fill_attempts(
        &mut self,
        connection: ConnectionId,
        transport: &mut dyn Transport,
        concurrency: usize,
    ) -> bool {
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
        let concurrency = concurrency.max(1);
        while *in_flight < concurrency && !*timed_out {
            if tokio::time::Instant::now() >= *deadline {
                *timed_out = true;
                break;
            }
            let Some(addr) = remaining.pop_front() else {
                break;
            };
            match transport.dial(&addr, *peer) {
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

    /// Records a finished attempt of dial `connection`: the first success wins (the other
    /// attempts are aborted), a failure starts the next address.
    pub(super) fn on_attempt(
        &mut self,
        connection: ConnectionId,
        addr: Multiaddr,
        result: Result<Connection, AttemptError>,
        transport: &mut dyn Transport,
        concurrency: usize,
    ) -> AttemptOutcome {
        let Some(pending) = self.pending.get_mut(&connection) else {
            if let Ok(conn) = result {
                conn.close(0, "dial abandoned");
            }
            return AttemptOutcome::Nothing;
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
            return AttemptOutcome::Nothing;
        };
        *in_flight = in_flight.saturating_sub(1);
        let expected = *peer;
        match result {
            Ok(conn) => {
                for a in aborts.drain(..) {
                    a.abort();
                }
                let started = pending.started;
                self.pending.remove(&connection);
                AttemptOutcome::Connected {
                    conn,
                    addr,
                    expected,
                    started,
                }
            }
            Err(AttemptError::Aborted) => AttemptOutcome::Nothing,
            Err(e) => {
                match e {
                    AttemptError::Transport(e) => errors.push((addr, e)),
                    _ => *timed_out = true,
                }
                if self.fill_attempts(connection, transport, concurrency) {
                    return AttemptOutcome::Nothing;
                }
                let still_running = matches!(
                    self.pending.get(&connection),
                    Some(Pending { kind: PendingKind::Outbound { in_flight, .. }, .. }) if *in_flight > 0
                );
                if still_running {
                    return AttemptOutcome::Nothing;
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
                AttemptOutcome::Failed { expected, error }
            }
        }
    }

    // ---- inbound handshakes --------------------------------------------------------------

    /// Runs the handshake of an inbound connection (bounded by `timeout`) under `connection`.
    pub(super) fn start_inbound(
        &mut self,
        connection: ConnectionId,
        local_addr: Multiaddr,
        send_back_addr: Multiaddr,
        upgrade: PendingConnection,
        timeout: Duration,
    ) {
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

    /// Removes the pending handshake `connection`, which finished.
    pub(super) fn take_inbound(&mut self, connection: ConnectionId) -> Option<InboundHandshake> {
        let pending = self.pending.remove(&connection)?;
        match pending.kind {
            PendingKind::Inbound {
                local_addr,
                send_back_addr,
            } => Some(InboundHandshake {
                local_addr,
                send_back_addr,
                started: pending.started,
            }),
            PendingKind::Outbound { .. } => None,
        }
    }

    // ---- established connections ---------------------------------------------------------

    /// Adds an established connection; returns its stream counters.
    pub(super) fn insert(
        &mut self,
        connection: ConnectionId,
        conn: Connection,
        endpoint: ConnectedPoint,
        now: Instant,
    ) -> Arc<StreamCounters> {
        let peer = conn.peer_id();
        let counters = StreamCounters::new(self.drains.clone());
        self.control.add_connection(connection, &conn, &counters);
        self.peers.entry(peer).or_default().push(connection);
        self.connections.insert(
            connection,
            Established {
                peer,
                conn,
                endpoint,
                established_at: now,
                counters: counters.clone(),
                last_busy: now,
                closing: None,
                reported_streams: 0,
                acceptor: None,
            },
        );
        counters
    }

    /// Keeps the acceptor task of `connection` (stopped when it leaves the pool).
    pub(super) fn set_acceptor(&mut self, connection: ConnectionId, acceptor: AcceptorHandle) {
        if let Some(c) = self.connections.get_mut(&connection) {
            c.acceptor = Some(acceptor);
        }
    }

    /// Removes a connection that closed; returns it and the number of connections to its
    /// peer still open.
    pub(super) fn remove(&mut self, id: ConnectionId) -> Option<(Established, usize)> {
        let c = self.connections.remove(&id)?;
        self.control.remove_connection(&c.peer, id);
        let remaining = match self.peers.get_mut(&c.peer) {
            Some(list) => {
                list.retain(|x| *x != id);
                let n = list.len();
                if n == 0 {
                    self.peers.remove(&c.peer);
                }
                n
            }
            None => 0,
        };
        Some((c, remaining))
    }

    /// Starts closing `id` for `cause`. Returns `false` if it is not established.
    pub(super) fn close(&mut self, id: ConnectionId, cause: ConnectionCloseCause) -> bool {
        self.close_with_reason(id, cause, None)
    }

    /// [`close`](Self::close), telling the remote `reason` instead of the cause's word.
    pub(super) fn close_with_reason(
        &mut self,
        id: ConnectionId,
        cause: ConnectionCloseCause,
        reason: Option<&str>,
    ) -> bool {
        let Some(c) = self.connections.get_mut(&id) else {
            return false;
        };
        // Already closed by the remote or the transport: its reason stands.
        if c.closing.is_none() && c.conn.close_reason().is_none() {
            let reason = reason.unwrap_or(match &cause {
                ConnectionCloseCause::Trimmed => "trimmed",
                ConnectionCloseCause::Idle => "idle",
                _ => "closed",
            });
            tracing::debug!(connection = %id, peer = %c.peer, %cause, "closing connection");
            c.closing = Some(cause);
            self.control.remove_connection(&c.peer, id);
            c.conn
                .close(meshwire_transport::connection::CLOSE_CODE_NORMAL, reason);
        }
        true
    }

    /// The idle rule's scan: reports changed stream counts through `notify_streams`, and
    /// returns the connections idle for `timeout` (`None`: never idle). Open keep-alive
    /// streams (and stream requests in flight), or `keeps_alive(peer, connection)` (a
    /// behaviour, the connection manager's protection) keep a connection.
    pub(super) fn idle_connections(
        &mut self,
        now: Instant,
        timeout: Option<Duration>,
        mut keeps_alive: impl FnMut(PeerId, ConnectionId) -> bool,
        mut notify_streams: impl FnMut(PeerId, ConnectionId, usize),
    ) -> Vec<ConnectionId> {
        let mut idle = Vec::new();
        for (id, c) in self.connections.iter_mut() {
            let streams = c.counters.open();
            if streams != c.reported_streams {
                c.reported_streams = streams;
                notify_streams(c.peer, *id, streams);
            }
            if c.closing.is_some() {
                continue;
            }
            if c.counters.keep_alive() > 0 || keeps_alive(c.peer, *id) {
                c.last_busy = now;
                continue;
            }
            if let Some(t) = timeout {
                let since = c.last_busy.max(c.counters.last_end());
                if now.saturating_duration_since(since) >= t {
                    idle.push(*id);
                }
            }
        }
        idle
    }

    /// Closes every connection and aborts every dial (the swarm is dropped); calls
    /// `disconnected` for each connection.
    pub(super) fn shut_down(&mut self, mut disconnected: impl FnMut(PeerId, ConnectionId)) {
        for (id, c) in &self.connections {
            self.control.remove_connection(&c.peer, *id);
            c.conn.close(
                meshwire_transport::connection::CLOSE_CODE_NORMAL,
                "swarm closed",
            );
            disconnected(c.peer, *id);
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
