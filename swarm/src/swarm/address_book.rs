//! The swarm's address book: a bounded record of peers' addresses, what dials of a peer
//! without explicit addresses use.

use std::collections::{HashMap, VecDeque};

use meshwire_core::PeerId;
use meshwire_transport::{split_peer_id, Multiaddr};

/// Peers' addresses, most recently added first; the least recently refreshed peer is
/// forgotten first.
#[derive(Default)]
pub(super) struct AddressBook {
    peers: HashMap<PeerId, VecDeque<Multiaddr>>,
    order: VecDeque<PeerId>,
}

impl AddressBook {
    /// Remembers `addr` of `peer`, keeping at most `per_peer` addresses of a peer and
    /// `max_peers` peers.
    pub(super) fn add(&mut self, peer: PeerId, addr: Multiaddr, per_peer: usize, max_peers: usize) {
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

    /// The addresses of `peer`, most recent first.
    pub(super) fn get(&self, peer: &PeerId) -> impl Iterator<Item = &Multiaddr> {
        self.peers.get(peer).into_iter().flatten()
    }
}

/// `addr` without a trailing `/p2p/<peer>`.
pub(super) fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    split_peer_id(addr, None)
        .map(|(a, _)| a)
        .unwrap_or_else(|_| addr.clone())
}
