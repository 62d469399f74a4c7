//! What the behaviour knows about peers' addresses and connections, to feed the routing
//! table (from identify and connections) and to dial: [`Routing`].

use std::collections::HashMap;

use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::{ConnectedPoint, ListenerId};
use multiaddr::{Multiaddr, Protocol};

/// Extra dial addresses handed to the swarm for one peer, at most.
const MAX_DIAL_ADDRESSES: usize = 24;

/// Local addresses announced in provider records, at most.
pub(super) const MAX_LOCAL_ADDRESSES: usize = 32;

/// Addresses of a peer we are about to dial for a request, with the requests needing them.
struct DialAddrs {
    addrs: Vec<Multiaddr>,
    pending: usize,
}

/// What is remembered of a peer's addresses (each list bounded, most recent last).
#[derive(Debug, Default)]
pub(super) struct PeerAddrs {
    /// Its listen addresses, as identify reported them
    /// ([`FromSwarm::NewExternalAddrOfPeer`](meshwire_swarm::FromSwarm::NewExternalAddrOfPeer)).
    pub listen: Vec<Multiaddr>,
    /// Addresses we reached it at (the remote address of connections we dialed).
    pub dialed: Vec<Multiaddr>,
    /// The source address of its latest inbound QUIC connection: where it listens, when it
    /// dials from its listening socket (see [`quic_listen_addr`]).
    observed: Option<Multiaddr>,
    /// Update stamp, for forgetting the least recently updated peer first.
    stamp: u64,
}

impl PeerAddrs {
    /// The first-hand addresses to add it to the routing table with: its listen and dialed
    /// addresses, else the observed one.
    fn routable(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for a in self.listen.iter().chain(&self.dialed) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        if out.is_empty() {
            out.extend(self.observed.iter().cloned());
        }
        out
    }
}

/// The source address of an inbound connection if it is where the peer listens: a QUIC
/// address (`/ip4|ip6/<ip>/udp/<port>/quic-v1`, specific IP, non-zero port). QUIC stacks that
/// listen (meshwire, rust-libp2p) dial from their listening UDP socket, so the remote sees
/// the listen port. A TCP (or other) connection comes from an ephemeral port: `None`.
pub(super) fn quic_listen_addr(send_back_addr: &Multiaddr) -> Option<Multiaddr> {
    let mut it = send_back_addr.iter();
    let specific_ip = match it.next()? {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => false,
    };
    let port = match it.next()? {
        Protocol::Udp(port) => port,
        _ => return None,
    };
    let quic = matches!(it.next()?, Protocol::QuicV1);
    (specific_ip && port != 0 && quic && it.next().is_none()).then(|| send_back_addr.clone())
}

/// Appends `addr` to `list` (moving it to the end if present), dropping the oldest past `max`.
fn push_bounded(list: &mut Vec<Multiaddr>, addr: &Multiaddr, max: usize) {
    if let Some(i) = list.iter().position(|a| a == addr) {
        let a = list.remove(i);
        list.push(a);
        return;
    }
    if list.len() >= max {
        list.remove(0);
    }
    list.push(addr.clone());
}

/// Connections, peers' addresses (bounded), the addresses of pending dials, and the local
/// addresses.
pub(super) struct Routing {
    max_addrs_per_peer: usize,
    max_peers: usize,
    /// Open connections, with the address we dialed, if we dialed them.
    connections: HashMap<ConnectionId, (PeerId, Option<Multiaddr>)>,
    /// Open connections per connected peer.
    connected: HashMap<PeerId, usize>,
    /// Addresses of peers learned from the swarm (bounded).
    pub(super) peer_addrs: HashMap<PeerId, PeerAddrs>,
    addr_clock: u64,
    /// Addresses of peers with stream requests in flight, for the dial hook.
    dial_addrs: HashMap<PeerId, DialAddrs>,
    listen_addrs: HashMap<ListenerId, Vec<Multiaddr>>,
    external_addrs: Vec<Multiaddr>,
}

impl Routing {
    /// Remembers at most `max_addrs_per_peer` addresses of each kind per peer, for at most
    /// `max_peers` peers.
    pub fn new(max_addrs_per_peer: usize, max_peers: usize) -> Self {
        Routing {
            max_addrs_per_peer,
            max_peers,
            connections: HashMap::new(),
            connected: HashMap::new(),
            peer_addrs: HashMap::new(),
            addr_clock: 0,
            dial_addrs: HashMap::new(),
            listen_addrs: HashMap::new(),
            external_addrs: Vec::new(),
        }
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Whether `peer` has a connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// A connection opened.
    pub fn connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let dialed = match endpoint {
            ConnectedPoint::Dialer { address } => Some(address.clone()),
            ConnectedPoint::Listener { .. } => None,
        };
        self.connections.insert(connection, (peer, dialed));
        *self.connected.entry(peer).or_default() += 1;
        self.remember_endpoint(peer, endpoint);
    }

    /// A connection closed; `last` if the swarm says the peer has none left.
    pub fn connection_closed(&mut self, peer: PeerId, connection: ConnectionId, last: bool) {
        if let Some((owner, _)) = self.connections.remove(&connection) {
            if let Some(n) = self.connected.get_mut(&owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.connected.remove(&owner);
                }
            }
        }
        if last {
            self.connected.remove(&peer);
        }
    }

    /// The address we dialed for `connection`, if we dialed it.
    pub fn dialed_addr(&self, connection: ConnectionId) -> Option<Multiaddr> {
        self.connections
            .get(&connection)
            .and_then(|(_, dialed)| dialed.clone())
    }

    /// The cache entry of `peer`, created (forgetting the least recently updated peer without
    /// a connection, else the least recently updated one, when full) and stamped; `None` when
    /// the cache is disabled.
    fn peer_addrs_entry(&mut self, peer: PeerId) -> Option<&mut PeerAddrs> {
        if self.max_addrs_per_peer == 0 || self.max_peers == 0 {
            return None;
        }
        self.addr_clock += 1;
        let clock = self.addr_clock;
        if !self.peer_addrs.contains_key(&peer) && self.peer_addrs.len() >= self.max_peers {
            let connected = &self.connected;
            let victim = self
                .peer_addrs
                .iter()
                .min_by_key(|(p, a)| (connected.contains_key(p), a.stamp))
                .map(|(p, _)| *p);
            if let Some(victim) = victim {
                self.peer_addrs.remove(&victim);
            }
        }
        let entry = self.peer_addrs.entry(peer).or_default();
        entry.stamp = clock;
        Some(entry)
    }

    /// Remembers a listen address of `peer` reported by the swarm (bounded per peer and in
    /// peers).
    pub fn remember_peer_addr(&mut self, peer: PeerId, addr: &Multiaddr) {
        let max = self.max_addrs_per_peer;
        if let Some(entry) = self.peer_addrs_entry(peer) {
            push_bounded(&mut entry.listen, addr, max);
        }
    }

    /// Remembers the remote address of a new connection to `peer`: the address we dialed, or
    /// the source address of an inbound QUIC connection.
    fn remember_endpoint(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let max = self.max_addrs_per_peer;
        match endpoint {
            ConnectedPoint::Dialer { address } => {
                if let Some(entry) = self.peer_addrs_entry(peer) {
                    push_bounded(&mut entry.dialed, address, max);
                }
            }
            ConnectedPoint::Listener { send_back_addr, .. } => {
                if let Some(observed) = quic_listen_addr(send_back_addr) {
                    if let Some(entry) = self.peer_addrs_entry(peer) {
                        entry.observed = Some(observed);
                    }
                }
            }
        }
    }

    /// The first-hand addresses to add `peer` to the routing table with, identify having
    /// reported on `connection` that it serves the DHT.
    pub fn routable_addrs(&self, peer: &PeerId, connection: ConnectionId) -> Vec<Multiaddr> {
        let mut addrs = self
            .peer_addrs
            .get(peer)
            .map(PeerAddrs::routable)
            .unwrap_or_default();
        // The connection's own endpoint, in case the cache forgot it.
        if let Some(dialed) = self.dialed_addr(connection) {
            if !addrs.contains(&dialed) {
                addrs.push(dialed);
            }
        }
        addrs
    }

    /// A stream request to `peer` is starting: its `addrs` are offered when the swarm dials.
    pub fn add_dial_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let entry = self.dial_addrs.entry(peer).or_insert_with(|| DialAddrs {
            addrs: Vec::new(),
            pending: 0,
        });
        entry.pending += 1;
        for a in addrs {
            if entry.addrs.len() >= self.max_addrs_per_peer {
                break;
            }
            if !entry.addrs.contains(&a) {
                entry.addrs.push(a);
            }
        }
    }

    /// A stream request to `peer` was answered.
    pub fn release_dial_addrs(&mut self, peer: &PeerId) {
        if let Some(entry) = self.dial_addrs.get_mut(peer) {
            entry.pending = entry.pending.saturating_sub(1);
            if entry.pending == 0 {
                self.dial_addrs.remove(peer);
            }
        }
    }

    /// Whether no dial addresses are kept.
    #[cfg(test)]
    pub fn no_dial_addrs(&self) -> bool {
        self.dial_addrs.is_empty()
    }

    /// The addresses to offer the swarm for dialing `peer` beyond `known`: the routing
    /// table's (`table`), the pending requests', then the remembered ones (bounded).
    pub fn dial_addresses(
        &self,
        peer: &PeerId,
        table: Option<&Vec<Multiaddr>>,
        known: &[Multiaddr],
    ) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let pending = self.dial_addrs.get(peer).map(|d| &d.addrs);
        let cache = self.peer_addrs.get(peer);
        let listen = cache.map(|c| &c.listen);
        let dialed = cache.map(|c| &c.dialed);
        let observed = cache.and_then(|c| c.observed.as_ref());
        for a in [table, pending, listen, dialed]
            .into_iter()
            .flatten()
            .flatten()
            .chain(observed)
        {
            if out.len() >= MAX_DIAL_ADDRESSES {
                break;
            }
            if !known.contains(a) && !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    // ----- local addresses ---------------------------------------------------------------

    /// A listener got `addr`; returns the new local addresses if they changed.
    pub fn new_listen_addr(
        &mut self,
        listener: ListenerId,
        addr: &Multiaddr,
    ) -> Option<Vec<Multiaddr>> {
        let addrs = self.listen_addrs.entry(listener).or_default();
        if addrs.contains(addr) {
            return None;
        }
        addrs.push(addr.clone());
        Some(self.local_addresses())
    }

    /// A listener closed; returns the new local addresses if they changed.
    pub fn listener_closed(&mut self, listener: ListenerId) -> Option<Vec<Multiaddr>> {
        self.listen_addrs.remove(&listener)?;
        Some(self.local_addresses())
    }

    /// An external address was confirmed; returns the new local addresses if they changed.
    pub fn external_confirmed(&mut self, addr: &Multiaddr) -> Option<Vec<Multiaddr>> {
        if self.external_addrs.contains(addr) || self.external_addrs.len() >= MAX_LOCAL_ADDRESSES {
            return None;
        }
        self.external_addrs.push(addr.clone());
        Some(self.local_addresses())
    }

    /// An external address expired; returns the new local addresses if they changed.
    pub fn external_expired(&mut self, addr: &Multiaddr) -> Option<Vec<Multiaddr>> {
        let before = self.external_addrs.len();
        self.external_addrs.retain(|a| a != addr);
        (self.external_addrs.len() != before).then(|| self.local_addresses())
    }

    /// The addresses to announce in provider records: confirmed external ones, then the
    /// listeners' (bounded).
    fn local_addresses(&self) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        let mut listeners: Vec<_> = self.listen_addrs.iter().collect();
        listeners.sort_by_key(|(id, _)| **id);
        for a in self
            .external_addrs
            .iter()
            .chain(listeners.into_iter().flat_map(|(_, v)| v))
        {
            if addrs.len() >= MAX_LOCAL_ADDRESSES {
                break;
            }
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        addrs
    }
}
