//! [`ProviderAddrs`]: the addresses of providers found in the DHT, kept to dial them.
//!
//! Provider records are remote input, so the table is bounded three ways: peers
//! ([`Config::max_provider_addrs`](super::Config::max_provider_addrs), the least recently
//! stored or used evicted first), addresses per peer
//! ([`Config::max_addrs_per_provider`](super::Config::max_addrs_per_provider)), and time
//! ([`Config::provider_addrs_ttl`](super::Config::provider_addrs_ttl), from the last record
//! that named the peer). A peer's entry is also dropped when a dial to it fails.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meshwire_swarm::{Multiaddr, PeerId};

use crate::engine::after;

/// One provider's addresses.
struct Entry {
    addrs: Vec<Multiaddr>,
    expires: Instant,
    /// Its place in `order`.
    seq: u64,
}

/// Providers' addresses, bounded in peers, addresses per peer and time.
pub(crate) struct ProviderAddrs {
    entries: HashMap<PeerId, Entry>,
    /// Least recently stored or used first.
    order: BTreeMap<u64, PeerId>,
    next_seq: u64,
    max_peers: usize,
    max_per_peer: usize,
    ttl: Duration,
}

impl ProviderAddrs {
    /// An empty table with these bounds.
    pub(crate) fn new(max_peers: usize, max_per_peer: usize, ttl: Duration) -> Self {
        ProviderAddrs {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            max_peers,
            max_per_peer,
            ttl,
        }
    }

    /// Peers with addresses kept (expired ones included until touched or evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn bump(&mut self, peer: PeerId) -> u64 {
        self.next_seq += 1;
        self.order.insert(self.next_seq, peer);
        self.next_seq
    }

    /// Stores `peer`'s addresses from a provider record (the first
    /// `max_per_peer`), replacing what was kept, for `ttl` from `now`; evicts the least
    /// recently stored or used peer if the table is full.
    pub(crate) fn insert(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>, now: Instant) {
        if addrs.is_empty() || self.max_peers == 0 {
            return;
        }
        addrs.truncate(self.max_per_peer);
        if let Some(old) = self.entries.remove(&peer) {
            self.order.remove(&old.seq);
        }
        while self.entries.len() >= self.max_peers {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.bump(peer);
        let expires = after(now, self.ttl);
        self.entries.insert(
            peer,
            Entry {
                addrs,
                expires,
                seq,
            },
        );
    }

    /// `peer`'s addresses unless expired (then dropped); a use makes it the most recent.
    pub(crate) fn get(&mut self, peer: &PeerId, now: Instant) -> Option<&[Multiaddr]> {
        let expired = self.entries.get(peer)?.expires <= now;
        if expired {
            self.remove(peer);
            return None;
        }
        let seq = self.bump(*peer);
        let entry = self.entries.get_mut(peer)?;
        self.order.remove(&entry.seq);
        entry.seq = seq;
        Some(&entry.addrs)
    }

    /// Forgets `peer`'s addresses (a dial to it failed).
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        if let Some(old) = self.entries.remove(peer) {
            self.order.remove(&old.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn peer(i: u64) -> PeerId {
        Keypair::from_seed_for_tests(i).peer_id()
    }

    fn addrs(n: u16) -> Vec<Multiaddr> {
        (0..n)
            .map(|i| {
                format!("/ip4/10.0.0.1/udp/{}/quic-v1", 1000 + i)
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_and_keeps_taking_new_peers() {
        let now = Instant::now();
        let mut t = ProviderAddrs::new(2, 8, Duration::from_secs(60));
        t.insert(peer(1), addrs(1), now);
        t.insert(peer(2), addrs(1), now);
        // Peer 1 used: peer 2 is the least recent and goes for peer 3.
        assert!(t.get(&peer(1), now).is_some());
        t.insert(peer(3), addrs(1), now);
        assert_eq!(t.len(), 2);
        assert!(t.get(&peer(2), now).is_none());
        assert!(t.get(&peer(1), now).is_some());
        assert!(t.get(&peer(3), now).is_some());
        // A refresh keeps one entry per peer.
        t.insert(peer(3), addrs(2), now);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&peer(3), now).map(<[_]>::len), Some(2));
    }

    #[test]
    fn entries_expire_are_capped_per_peer_and_dropped_on_demand() {
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut t = ProviderAddrs::new(16, 3, ttl);
        t.insert(peer(1), addrs(10), now);
        t.insert(peer(2), addrs(1), now);
        t.insert(peer(3), Vec::new(), now);
        assert_eq!(t.len(), 2, "no entry without addresses");
        assert_eq!(t.get(&peer(1), now).map(<[_]>::len), Some(3));
        t.remove(&peer(2));
        assert!(t.get(&peer(2), now).is_none());
        assert!(t.get(&peer(1), now + ttl).is_none(), "expired");
        assert_eq!(t.len(), 0);
        // Duration::MAX means never.
        let mut forever = ProviderAddrs::new(1, 1, Duration::MAX);
        forever.insert(peer(1), addrs(1), now);
        assert!(forever
            .get(&peer(1), now + Duration::from_secs(365 * 24 * 3600))
            .is_some());
    }
}
