//! Connecting: dials (condition, addresses, attempts), inbound handshakes, the checks a new
//! connection must pass (limits, the behaviours' verdicts) and its establishment.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use meshwire_connmgr::ConnManager;
use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_transport::{split_peer_id, Connection, Multiaddr, PendingConnection, TransportError};

use super::acceptor::{Acceptor, AcceptorParams};
use super::address_book::strip_p2p;
use super::pool::{AttemptOutcome, PendingOutput};
use super::Swarm;
use crate::behaviour::{FromSwarm, NetworkBehaviour};
use crate::dial::{DialOpts, PeerCondition};
use crate::error::{DialError, ListenError, StreamError};
use crate::event::{ConnectedPoint, SwarmEvent};

impl<B: NetworkBehaviour> Swarm<B> {
    /// Checks a dial and starts it; the caller reports an error to the behaviours.
    pub(super) fn start_dial(&mut self, opts: DialOpts) -> Result<ConnectionId, DialError> {
        let connection = opts.connection;
        if self.pool.contains(&connection) {
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
            let connected = self.pool.has_live_connection(&p);
            let dialing = self.pool.is_dialing(&p);
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
        self.pool.check_pending_outgoing(&self.config)?;
        let scope = self.reserve_connection(Direction::Outbound)?;
        self.pool.start_dial(
            connection,
            peer,
            addresses,
            &mut *self.transport,
            &self.config,
        )?;
        self.conn_scopes.insert(connection, scope);
        self.events.push_back(SwarmEvent::Dialing {
            peer_id: peer,
            connection_id: connection,
        });
        tracing::debug!(%connection, ?peer, "dialing");
        Ok(connection)
    }

    /// A dial attempt or an inbound handshake finished.
    pub(super) fn on_pending_output(&mut self, connection: ConnectionId, out: PendingOutput) {
        match out {
            PendingOutput::Attempt { addr, result } => {
                let outcome = self.pool.on_attempt(
                    connection,
                    addr,
                    result,
                    &mut *self.transport,
                    self.config.dial_concurrency,
                );
                match outcome {
                    AttemptOutcome::Nothing => {}
                    AttemptOutcome::Failed { expected, error } => {
                        self.dial_failed(connection, expected, error)
                    }
                    AttemptOutcome::Connected {
                        conn,
                        addr,
                        expected,
                        started,
                    } => self.on_dialed(connection, conn, addr, expected, started),
                }
            }
            PendingOutput::Inbound(result) => self.on_handshake(connection, result),
        }
    }

    /// A dial connected to `addr`: checks the peer, the limits and the behaviours' verdict.
    fn on_dialed(
        &mut self,
        connection: ConnectionId,
        conn: Connection,
        addr: Multiaddr,
        expected: Option<PeerId>,
        started: Instant,
    ) {
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
            self.pool
                .check_limits(peer, Direction::Outbound, &self.config)
                .map_err(DialError::from)
                .and_then(|()| {
                    self.scope_set_peer(connection, &conn)
                        .map_err(DialError::from)
                })
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
                self.established(connection, conn, endpoint, started);
            }
            Err(e) => {
                conn.close(0, "denied");
                self.dial_failed(connection, expected.or(Some(peer)), e);
            }
        }
    }

    /// An inbound handshake finished: checks the peer, the limits and the behaviours' verdict.
    fn on_handshake(
        &mut self,
        connection: ConnectionId,
        result: Result<Connection, TransportError>,
    ) {
        let Some(handshake) = self.pool.take_inbound(connection) else {
            return;
        };
        let local_addr = handshake.local_addr;
        let send_back_addr = handshake.send_back_addr;
        let result = result.map_err(ListenError::Transport).and_then(|conn| {
            let peer = conn.peer_id();
            let checked = if peer == self.local_peer_id {
                Err(ListenError::LocalPeerId)
            } else {
                self.pool
                    .check_limits(peer, Direction::Inbound, &self.config)
                    .map_err(ListenError::from)
                    .and_then(|()| {
                        self.scope_set_peer(connection, &conn)
                            .map_err(ListenError::from)
                    })
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
                self.established(connection, conn, endpoint, handshake.started);
            }
            Err(error) => self.listen_failed(connection, local_addr, send_back_addr, error),
        }
    }

    /// A remote started a handshake: checks the pending limit and the behaviours' verdict,
    /// then runs it.
    pub(super) fn on_incoming(
        &mut self,
        local_addr: Multiaddr,
        send_back_addr: Multiaddr,
        upgrade: PendingConnection,
    ) {
        let connection = ConnectionId::next();
        let refused = match self.pool.check_pending_incoming(&self.config) {
            Err(limit) => Some(ListenError::Limit(limit)),
            Ok(()) => self
                .behaviour
                .handle_pending_inbound_connection(connection, &local_addr, &send_back_addr)
                .err()
                .map(ListenError::Denied),
        };
        // The resource manager is asked last, so a connection a behaviour refuses takes no
        // share even for a moment.
        let refused = refused.or_else(|| match self.reserve_connection(Direction::Inbound) {
            Ok(scope) => {
                self.conn_scopes.insert(connection, scope);
                None
            }
            Err(e) => Some(ListenError::Resource(e)),
        });
        if let Some(error) = refused {
            drop(upgrade);
            return self.listen_failed(connection, local_addr, send_back_addr, error);
        }
        self.events.push_back(SwarmEvent::IncomingConnection {
            connection_id: connection,
            local_addr: local_addr.clone(),
            send_back_addr: send_back_addr.clone(),
        });
        self.pool.start_inbound(
            connection,
            local_addr,
            send_back_addr,
            upgrade,
            self.config.dial_timeout,
        );
    }

    /// A connection's share of the resource manager: the connection and its memory (the
    /// transport's receive windows and overhead).
    fn reserve_connection(
        &self,
        direction: Direction,
    ) -> Result<meshwire_rcmgr::ConnectionScope, meshwire_rcmgr::ResourceError> {
        let mut scope = self.resources.open_connection(direction)?;
        scope.reserve_memory(self.resources.limits().connection_reservation())?;
        Ok(scope)
    }

    /// The handshake named the peer: the connection's share moves into the peer's scope, and
    /// grows to what the connection can buffer when that is more than was reserved before the
    /// handshake (a Yamux connection's window, [`Connection::receive_buffer_limit`]).
    fn scope_set_peer(
        &mut self,
        connection: ConnectionId,
        conn: &Connection,
    ) -> Result<(), meshwire_rcmgr::ResourceError> {
        let unlimited = self.resources.limits().connection_reservation() == 0;
        match self.conn_scopes.get_mut(&connection) {
            Some(scope) => {
                scope.set_peer(conn.peer_id())?;
                let extra = conn
                    .receive_buffer_limit()
                    .map_or(0, |limit| limit.saturating_sub(scope.memory()));
                if extra > 0 && !unlimited {
                    scope.reserve_muxer_memory(extra)?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: DialError) {
        self.conn_scopes.remove(&connection);
        tracing::debug!(%connection, ?peer, %error, "dial failed");
        self.metrics.dial_failures.inc();
        let error = Arc::new(error);
        self.behaviour.on_swarm_event(FromSwarm::DialFailure {
            peer,
            connection,
            error: &error,
        });
        if let Some(p) = peer {
            if !self.pool.has_live_connection(&p) && !self.pool.is_dialing(&p) {
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
        self.conn_scopes.remove(&connection);
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
        self.conn_manager
            .notify_connected(peer, connection, endpoint.direction(), now);
        self.router.watch(connection, &conn);
        let others = self.pool.connections_of(&peer).len();
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
        let counters = self
            .pool
            .insert(connection, conn.clone(), endpoint.clone(), now);
        let total = self.router.total_bucket(&self.config);
        let acceptor = self.router.start_acceptor(Acceptor::new(AcceptorParams {
            id: connection,
            conn,
            counters,
            resources: self.resources.clone(),
            protocols: self.router.shared_protocols().clone(),
            control: self.control.clone(),
            max_inbound: self.config.max_inbound_streams_per_connection,
            negotiation_timeout: self.config.negotiation_timeout,
            rate: self.config.inbound_stream_rate,
            total,
            tx: self.router.inbound_sender(),
            queued_errors: self.router.queued_errors(),
        }));
        self.pool.set_acceptor(connection, acceptor);
        self.events.push_back(SwarmEvent::ConnectionEstablished {
            peer_id: peer,
            connection_id: connection,
            endpoint,
            num_established: NonZeroU32::new(u32::try_from(others + 1).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN),
            established_in: started.elapsed(),
        });
        // Requests that waited for this peer get their streams now.
        self.open_waiting_streams(peer);
        self.run_trim(false);
        self.arm_idle_timer();
    }
}
