//! IWANT promises: a peer that advertised a message in IHAVE and did not deliver it within
//! `iwant_followup_time` of our IWANT broke a promise (a P7 behaviour penalty).

use std::collections::HashMap;
use std::time::Instant;

use meshwire_core::PeerId;

use super::super::MessageId;

/// Outstanding promises, by message id then peer.
#[derive(Default)]
pub(crate) struct GossipPromises {
    promises: HashMap<MessageId, HashMap<PeerId, Instant>>,
}

impl GossipPromises {
    /// `peer` promised `ids` (we asked for them) by `expires`; an existing promise keeps its
    /// expiry.
    pub(crate) fn add(&mut self, peer: PeerId, ids: &[Vec<u8>], expires: Instant) {
        for id in ids {
            self.promises
                .entry(MessageId(id.clone()))
                .or_default()
                .entry(peer)
                .or_insert(expires);
        }
    }

    /// The message arrived (from anyone): its promises are kept. The peers that had promised
    /// it (we asked them with IWANT), in peer id order.
    pub(crate) fn delivered(&mut self, id: &MessageId) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .promises
            .remove(id)
            .map(|p| p.into_keys().collect())
            .unwrap_or_default();
        peers.sort();
        peers
    }

    /// Expired promises, counted per peer, and forgotten.
    pub(crate) fn broken(&mut self, now: Instant) -> HashMap<PeerId, usize> {
        let mut broken: HashMap<PeerId, usize> = HashMap::new();
        self.promises.retain(|_, peers| {
            peers.retain(|peer, expires| {
                if *expires < now {
                    *broken.entry(*peer).or_default() += 1;
                    false
                } else {
                    true
                }
            });
            !peers.is_empty()
        });
        broken
    }

    pub(crate) fn len(&self) -> usize {
        self.promises.len()
    }
}
