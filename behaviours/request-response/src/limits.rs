//! [`InboundSlots`]: admission of remotes' requests under the total and per-peer limits.
//! Sans-IO: counts only.

use std::collections::HashMap;

use meshwire_swarm::PeerId;

/// Which inbound limit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// All peers together.
    Total(usize),
    /// This peer.
    PerPeer(usize),
}

/// Inbound exchanges under way, all together and per peer.
#[derive(Debug)]
pub(crate) struct InboundSlots {
    total: usize,
    per_peer: usize,
    active: usize,
    peers: HashMap<PeerId, usize>,
}

impl InboundSlots {
    pub(crate) fn new(total: usize, per_peer: usize) -> Self {
        InboundSlots {
            total,
            per_peer,
            active: 0,
            peers: HashMap::new(),
        }
    }

    /// Takes a slot for an exchange with `peer`, or says which limit refuses it.
    pub(crate) fn admit(&mut self, peer: PeerId) -> Result<(), Refused> {
        if self.active >= self.total {
            return Err(Refused::Total(self.total));
        }
        let n = self.peers.entry(peer).or_insert(0);
        if *n >= self.per_peer {
            if *n == 0 {
                self.peers.remove(&peer);
            }
            return Err(Refused::PerPeer(self.per_peer));
        }
        *n += 1;
        self.active += 1;
        Ok(())
    }

    /// Gives back a slot [`admit`](Self::admit) took.
    pub(crate) fn release(&mut self, peer: PeerId) {
        if let Some(n) = self.peers.get_mut(&peer) {
            *n -= 1;
            self.active -= 1;
            if *n == 0 {
                self.peers.remove(&peer);
            }
        }
    }

    /// Exchanges under way.
    pub(crate) fn active(&self) -> usize {
        self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    #[test]
    fn per_peer_and_total_limits_hold_and_free() {
        let (a, b, c) = (
            Keypair::generate().peer_id(),
            Keypair::generate().peer_id(),
            Keypair::generate().peer_id(),
        );
        let mut slots = InboundSlots::new(3, 2);
        slots.admit(a).unwrap();
        slots.admit(a).unwrap();
        assert_eq!(slots.admit(a), Err(Refused::PerPeer(2)));
        slots.admit(b).unwrap();
        assert_eq!(slots.admit(c), Err(Refused::Total(3)));
        assert_eq!(slots.active(), 3);
        assert_eq!((slots.peers.get(&a), slots.peers.get(&c)), (Some(&2), None));
        slots.release(a);
        slots.admit(c).unwrap();
        for p in [a, b, c] {
            slots.release(p);
        }
        assert_eq!(slots.active(), 0);
        assert!(slots.peers.is_empty(), "no entry kept for idle peers");
        // Releasing what was not admitted changes nothing.
        slots.release(a);
        assert_eq!(slots.active(), 0);
    }

    #[test]
    fn a_zero_per_peer_limit_refuses_without_keeping_state() {
        let a = Keypair::generate().peer_id();
        let mut slots = InboundSlots::new(8, 0);
        assert_eq!(slots.admit(a), Err(Refused::PerPeer(0)));
        assert!(slots.peers.is_empty());
    }
}
