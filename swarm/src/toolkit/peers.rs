//! [`Connections`]: which connections each peer has.

use std::collections::HashMap;

use meshwire_core::{ConnectionId, PeerId};

use crate::FromSwarm;

/// The established connections of every peer, kept up to date from [`FromSwarm`] events.
/// Most behaviours need it (to pick a connection, to drop per-peer state on the last close).
///
/// ```
/// use meshwire_swarm::toolkit::Connections;
/// # use meshwire_swarm::{FromSwarm, PeerId};
/// # fn on_swarm_event(connections: &mut Connections, event: FromSwarm<'_>) {
/// if let Some(peer) = connections.on_swarm_event(&event).and_then(|c| c.last_closed()) {
///     // drop what is kept for `peer`
/// #   let _ = peer;
/// }
/// # }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Connections {
    peers: HashMap<PeerId, Vec<ConnectionId>>,
}

/// What an event changed in [`Connections`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionChange {
    /// A connection opened; `first` if the peer had none before.
    Opened {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Whether it is the peer's only connection.
        first: bool,
    },
    /// A connection closed; `last` if the peer has none left.
    Closed {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// Whether the peer has no connection left.
        last: bool,
    },
}

impl ConnectionChange {
    /// The peer, if this change connected it (its first connection).
    pub fn first_opened(&self) -> Option<PeerId> {
        match *self {
            ConnectionChange::Opened {
                peer, first: true, ..
            } => Some(peer),
            _ => None,
        }
    }

    /// The peer, if this change disconnected it (its last connection closed).
    pub fn last_closed(&self) -> Option<PeerId> {
        match *self {
            ConnectionChange::Closed {
                peer, last: true, ..
            } => Some(peer),
            _ => None,
        }
    }
}

impl Connections {
    /// Updates the table from a swarm event; returns what changed, if anything.
    pub fn on_swarm_event(&mut self, event: &FromSwarm<'_>) -> Option<ConnectionChange> {
        match *event {
            FromSwarm::ConnectionEstablished {
                peer, connection, ..
            } => {
                let list = self.peers.entry(peer).or_default();
                if !list.contains(&connection) {
                    list.push(connection);
                }
                Some(ConnectionChange::Opened {
                    peer,
                    connection,
                    first: list.len() == 1,
                })
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                let list = self.peers.get_mut(&peer)?;
                let pos = list.iter().position(|c| *c == connection)?;
                list.swap_remove(pos);
                let last = list.is_empty();
                if last {
                    self.peers.remove(&peer);
                }
                Some(ConnectionChange::Closed {
                    peer,
                    connection,
                    last,
                })
            }
            _ => None,
        }
    }

    /// Whether `peer` has an established connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The connections of `peer`, oldest first until one closes.
    pub fn of(&self, peer: &PeerId) -> &[ConnectionId] {
        self.peers.get(peer).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every connected peer.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// How many peers are connected.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}
