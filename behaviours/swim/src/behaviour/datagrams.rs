//! The connections SWIM's datagrams travel on: the transport handle of every established
//! connection, which of a peer's connections is preferred (one with datagrams first), one
//! datagram reader per connection, and sending on the best connection — or telling the caller
//! that the peer's connections carry no datagrams (relayed ones), for the stream fallback.

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
    /// prefer when there are several (of those with datagrams, if any).
    preferred: bool,
    /// Whether it carried datagrams when established (a relayed connection does not).
    datagrams: bool,
}

impl Conn {
    /// How much it is wanted among its peer's connections (higher is better): datagrams
    /// first, then the preferred one. Both sides agree on it.
    fn class(&self) -> (bool, bool) {
        (self.datagrams, self.preferred)
    }
}

/// What became of a message [`Links::send`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Handed to a connection as a datagram, or dropped (and counted) as too large for it.
    Done,
    /// The peer is connected but none of its connections carries datagrams: the message
    /// goes on a fallback stream, over `on` (the best of them).
    NoDatagrams {
        /// The connection to open the stream on.
        on: ConnectionId,
    },
    /// No connection took it (none, or each failed): the caller may queue it for a dial.
    Unsent,
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
                        datagrams: handle.max_datagram_size().is_some(),
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

    /// The connections of `peer` in the order to try them: with datagrams first, then
    /// preferred first, then newest first.
    fn send_order(&self, peer: &PeerId) -> Vec<ConnectionId> {
        let mut order: Vec<ConnectionId> = self.peers.of(peer).to_vec();
        order.sort_by_key(|id| {
            let class = self.connections.get(id).map(Conn::class);
            (std::cmp::Reverse(class), std::cmp::Reverse(*id))
        });
        order
    }

    /// Sends `bytes` to `to` as a datagram on its best connection that takes them; see
    /// [`Sent`] for the outcomes. Datagrams larger than the connection can carry are dropped
    /// (and counted).
    pub(super) fn send(&self, to: PeerId, bytes: &Bytes, io: &mut IoStats) -> Sent {
        // The best connection without datagrams, for the fallback.
        let mut without = None;
        for id in self.send_order(&to) {
            let Some(c) = self.connections.get(&id) else {
                continue;
            };
            match c.handle.max_datagram_size() {
                None => {
                    without.get_or_insert(id);
                    continue;
                }
                Some(max) if bytes.len() > max => {
                    io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return Sent::Done;
                }
                Some(_) => {}
            }
            match c.handle.send_datagram(bytes.clone()) {
                Ok(()) => {
                    io.datagrams_sent += 1;
                    return Sent::Done;
                }
                Err(ConnectionError::DatagramTooLarge { max }) => {
                    io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return Sent::Done;
                }
                Err(ConnectionError::DatagramsUnsupported) => {
                    without.get_or_insert(id);
                }
                Err(e) => {
                    tracing::trace!(peer = %to, connection = %id, error = %e, "swim: datagram not sent; trying another connection");
                }
            }
        }
        match without {
            Some(on) => Sent::NoDatagrams { on },
            None => Sent::Unsent,
        }
    }

    /// Whether `connection` with `peer` is to be kept alive: it carried SWIM traffic within
    /// `traffic_keep_alive`, or `peer` is a live member (`live`) and this is one of the
    /// connections its messages go over: of its connections with datagrams if it has any
    /// (else of all), the preferred one, or every one if none is preferred.
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
        // Keep it unless the peer has a connection of a better class.
        let class = conn.map_or((false, false), Conn::class);
        self.peers
            .of(peer)
            .iter()
            .filter_map(|id| self.connections.get(id).map(Conn::class))
            .all(|other| other <= class)
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
