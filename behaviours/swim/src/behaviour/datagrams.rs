//! The QUIC connections SWIM's datagrams travel on: the transport handle of every established
//! connection, which of a peer's connections is preferred, one datagram reader per
//! connection, and sending on the best connection.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{ConnectionChange, Connections};
use meshwire_swarm::FromSwarm;
use meshwire_transport::{Connection, ConnectionError};
use tokio::time::Instant;

use super::config::IoStats;
use crate::wire::Body;

/// One established connection.
struct Conn {
    peer: PeerId,
    handle: Connection,
    /// When the last SWIM datagram of one of our realms came in on it.
    last_received: Option<Instant>,
    /// Dialed by whichever of the two peers has the smaller id: the connection both sides
    /// prefer when there are several.
    preferred: bool,
}

/// What one connection's reader read.
pub(super) type DatagramRead = (ConnectionId, Result<Bytes, ConnectionError>);

/// The established connections and their datagram readers.
///
/// The readers are a plain `FuturesUnordered`, not a toolkit `Tasks`: each is one
/// `read_datagram` of a connection, without a time limit, re-armed after every datagram for
/// as long as the connection lives; their number is the number of connections, which the
/// swarm bounds.
#[derive(Default)]
pub(super) struct Links {
    connections: HashMap<ConnectionId, Conn>,
    peers: Connections,
    pub(super) readers: FuturesUnordered<BoxFuture<'static, DatagramRead>>,
}

impl Links {
    /// Keeps the connection table up to date; arms the reader of a new connection.
    pub(super) fn on_swarm_event(
        &mut self,
        event: &FromSwarm<'_>,
        local: PeerId,
    ) -> Option<ConnectionChange> {
        let change = self.peers.on_swarm_event(event)?;
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                handle,
                ..
            } => {
                let smaller_dialed = if endpoint.is_dialer() {
                    local < *peer
                } else {
                    *peer < local
                };
                self.connections.insert(
                    *connection,
                    Conn {
                        peer: *peer,
                        handle: (*handle).clone(),
                        last_received: None,
                        preferred: smaller_dialed,
                    },
                );
                self.arm_reader(*connection, (*handle).clone());
            }
            FromSwarm::ConnectionClosed { connection, .. } => {
                self.connections.remove(connection);
            }
            _ => {}
        }
        Some(change)
    }

    /// Whether `peer` has an established connection.
    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.is_connected(peer)
    }

    /// How many connections `peer` has.
    pub(super) fn count(&self, peer: &PeerId) -> usize {
        self.peers.of(peer).len()
    }

    /// How many connections there are.
    pub(super) fn len(&self) -> usize {
        self.connections.len()
    }

    fn arm_reader(&mut self, id: ConnectionId, handle: Connection) {
        self.readers.push(
            async move {
                let r = handle.read_datagram().await;
                (id, r)
            }
            .boxed(),
        );
    }

    /// The next datagram read (or reader ended).
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<DatagramRead>> {
        self.readers.poll_next_unpin(cx)
    }

    /// What a reader read: the sender and the bytes, with the reader re-armed; `None` if the
    /// connection is gone or its reader ended (closed, or datagrams unsupported).
    pub(super) fn on_read(
        &mut self,
        id: ConnectionId,
        result: Result<Bytes, ConnectionError>,
    ) -> Option<(PeerId, Bytes)> {
        let c = self.connections.get(&id)?;
        let (peer, handle) = (c.peer, c.handle.clone());
        match result {
            Ok(bytes) => {
                self.arm_reader(id, handle);
                Some((peer, bytes))
            }
            Err(e) => {
                // Closed (its `ConnectionClosed` follows) or datagrams unsupported.
                tracing::trace!(connection = %id, %peer, error = %e, "swim: datagram reader ends");
                None
            }
        }
    }

    /// A SWIM message of one of our realms arrived on `id`: the connection is in use.
    pub(super) fn heard_on(&mut self, id: ConnectionId, at: Instant) {
        if let Some(c) = self.connections.get_mut(&id) {
            c.last_received = Some(at);
        }
    }

    /// The connections of `peer` in the order to try them: preferred first, newest first.
    fn send_order(&self, peer: &PeerId) -> Vec<ConnectionId> {
        let mut order: Vec<ConnectionId> = self.peers.of(peer).to_vec();
        order.sort_by_key(|id| {
            let preferred = self.connections.get(id).is_some_and(|c| c.preferred);
            (!preferred, std::cmp::Reverse(*id))
        });
        order
    }

    /// Sends `bytes` to `to` on its best connection that takes them. `false` if no
    /// connection could (none, or none accepts datagrams now): the caller may queue them.
    /// Datagrams larger than the connection can carry are dropped (and counted).
    pub(super) fn send(&self, to: PeerId, bytes: &Bytes, io: &mut IoStats) -> bool {
        for id in self.send_order(&to) {
            let Some(c) = self.connections.get(&id) else {
                continue;
            };
            match c.handle.max_datagram_size() {
                None => continue,
                Some(max) if bytes.len() > max => {
                    io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return true;
                }
                Some(_) => {}
            }
            match c.handle.send_datagram(bytes.clone()) {
                Ok(()) => {
                    io.datagrams_sent += 1;
                    return true;
                }
                Err(ConnectionError::DatagramTooLarge { max }) => {
                    io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return true;
                }
                Err(e) => {
                    tracing::trace!(peer = %to, connection = %id, error = %e, "swim: datagram not sent; trying another connection");
                }
            }
        }
        false
    }

    /// Whether `connection` with `peer` is to be kept alive: it carried SWIM traffic within
    /// `traffic_keep_alive`, or `peer` is a live member (`live`) and this is its preferred
    /// connection (or it has no preferred one).
    pub(super) fn keep_alive(
        &self,
        peer: &PeerId,
        connection: ConnectionId,
        live: bool,
        traffic_keep_alive: Duration,
    ) -> bool {
        let conn = self.connections.get(&connection);
        if conn
            .and_then(|c| c.last_received)
            .is_some_and(|t| t.elapsed() < traffic_keep_alive)
        {
            return true;
        }
        if !live {
            return false;
        }
        if conn.is_some_and(|c| c.preferred) {
            return true;
        }
        // Not the preferred kind: keep it only while the peer has no preferred connection.
        !self
            .peers
            .of(peer)
            .iter()
            .any(|id| self.connections.get(id).is_some_and(|c| c.preferred))
    }
}

/// The name of a message type, for logs.
pub(super) fn kind_of(body: &Body) -> &'static str {
    match body {
        Body::Ping(_) => "ping",
        Body::Ack(_) => "ack",
        Body::PingReq(_) => "ping-req",
        Body::Nack(_) => "nack",
        Body::Gossip(_) => "gossip",
        Body::PushPull(_) => "push-pull",
    }
}
