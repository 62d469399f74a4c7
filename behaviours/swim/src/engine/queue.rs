//! The transmit-limited broadcast queue (memberlist's `TransmitLimitedQueue`).
//!
//! Holds at most one pending update per member: a newer update about a member replaces
//! (invalidates) the older one. Updates are handed out least-transmitted first and, among
//! equally transmitted ones, newest first; each is handed out at most `limit` times
//! (`λ × ⌈log10(N + 1)⌉`, computed by the caller from the current group size) and then
//! dropped. Entries live in a slab; tiers are stacks of slab markers per transmit count, so
//! taking updates costs time proportional to what is taken and never hashes.

use meshwire_core::PeerId;

use crate::hash::{keyed_map, KeyedMap};
use crate::wire::{Update, MIN_UPDATE_LEN};

/// Entries examined per take at most, so that a queue full of updates too large for the
/// remaining space cannot make one message expensive.
const MAX_SCAN: usize = 128;
/// A take stops after this many entries in a row did not fit the remaining space: the
/// message is then as good as full.
const MAX_MISFITS: usize = 8;

#[derive(Debug)]
struct Slot {
    update: Option<Update>,
    len: usize,
    transmits: u32,
    generation: u64,
}

#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    slots: Vec<Slot>,
    free: Vec<usize>,
    by_peer: KeyedMap<PeerId, usize>,
    /// `tiers[t]`: (slot, generation) markers of entries transmitted `t` times, oldest
    /// first. Markers of replaced or moved entries stay behind until met or compacted.
    tiers: Vec<Vec<(usize, u64)>>,
    next_generation: u64,
    stale: usize,
}

impl BroadcastQueue {
    pub(crate) fn new(hash_key: u64) -> Self {
        BroadcastQueue {
            slots: Vec::new(),
            free: Vec::new(),
            by_peer: keyed_map(hash_key),
            tiers: vec![Vec::new()],
            next_generation: 0,
            stale: 0,
        }
    }

    /// Queues `update`, replacing any pending update about the same member.
    pub(crate) fn push(&mut self, update: Update) {
        let len = update.encoded_len();
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = match self.by_peer.get(&update.peer) {
            Some(&s) => {
                self.stale += 1;
                s
            }
            None => {
                let s = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(Slot {
                            update: None,
                            len: 0,
                            transmits: 0,
                            generation: 0,
                        });
                        self.slots.len() - 1
                    }
                };
                self.by_peer.insert(update.peer, s);
                s
            }
        };
        self.slots[slot] = Slot {
            update: Some(update),
            len,
            transmits: 0,
            generation,
        };
        self.tiers[0].push((slot, generation));
        if self.stale > 64 + self.by_peer.len() {
            self.compact();
        }
    }

    /// Drops the pending updates for which `keep` is false.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Update) -> bool) {
        let drop: Vec<usize> = self
            .by_peer
            .values()
            .copied()
            .filter(|&s| self.slots[s].update.as_ref().is_some_and(|u| !keep(u)))
            .collect();
        for slot in drop {
            // Its tier marker stays behind until met or compacted.
            self.retire(slot);
            self.stale += 1;
        }
        if self.stale > 64 + self.by_peer.len() {
            self.compact();
        }
    }

    /// Pending updates.
    pub(crate) fn len(&self) -> usize {
        self.by_peer.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Whether an update about `peer` is pending.
    #[cfg(test)]
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// How many times the pending update about `peer` was handed out.
    #[cfg(test)]
    pub(crate) fn transmits(&self, peer: &PeerId) -> Option<u32> {
        self.by_peer.get(peer).map(|&s| self.slots[s].transmits)
    }

    /// Whether an update about `peer` is pending and was transmitted fewer than `fresh` times.
    pub(crate) fn is_fresh(&self, peer: &PeerId, fresh: u32) -> bool {
        self.by_peer
            .get(peer)
            .is_some_and(|&s| self.slots[s].transmits < fresh)
    }

    /// Whether some update may have been transmitted fewer than `fresh` times (a cheap,
    /// conservative check: stale markers count until a take meets them).
    pub(crate) fn has_fresh(&self, fresh: u32) -> bool {
        self.tiers
            .iter()
            .take(fresh as usize)
            .any(|t| !t.is_empty())
    }

    fn valid(&self, t: usize, (slot, generation): (usize, u64)) -> bool {
        let s = &self.slots[slot];
        s.update.is_some() && s.generation == generation && s.transmits as usize == t
    }

    fn compact(&mut self) {
        for t in 0..self.tiers.len() {
            let mut tier = std::mem::take(&mut self.tiers[t]);
            tier.retain(|m| self.valid(t, *m));
            self.tiers[t] = tier;
        }
        self.stale = 0;
    }

    fn retire(&mut self, slot: usize) {
        if let Some(u) = self.slots[slot].update.take() {
            self.by_peer.remove(&u.peer);
            self.free.push(slot);
        }
    }

    /// Appends to `out` updates transmitted fewer than `fresh` times whose encoded lengths
    /// add up to at most `budget` bytes, skipping `exclude`, and counts one transmission for
    /// each; an update reaching `limit` transmissions is dropped. Returns the bytes used.
    pub(crate) fn take(
        &mut self,
        mut budget: usize,
        limit: u32,
        fresh: u32,
        exclude: Option<&PeerId>,
        out: &mut Vec<Update>,
    ) -> usize {
        let start = budget;
        let mut moved: Vec<(usize, usize, u64)> = Vec::new();
        let mut examined = 0;
        let mut misfits = 0;
        'tiers: for t in 0..self.tiers.len().min(fresh as usize) {
            let mut i = self.tiers[t].len();
            while i > 0 {
                if budget < MIN_UPDATE_LEN || examined >= MAX_SCAN || misfits >= MAX_MISFITS {
                    break 'tiers;
                }
                i -= 1;
                examined += 1;
                let marker = self.tiers[t][i];
                if !self.valid(t, marker) {
                    self.tiers[t].remove(i);
                    self.stale = self.stale.saturating_sub(1);
                    continue;
                }
                let slot = marker.0;
                if self.slots[slot].transmits >= limit {
                    self.tiers[t].remove(i);
                    self.retire(slot);
                    continue;
                }
                let s = &mut self.slots[slot];
                let Some(update) = s.update.as_ref() else {
                    continue;
                };
                if exclude == Some(&update.peer) {
                    continue;
                }
                if s.len > budget {
                    misfits += 1;
                    continue;
                }
                misfits = 0;
                budget -= s.len;
                out.push(update.clone());
                s.transmits += 1;
                let transmits = s.transmits;
                self.tiers[t].remove(i);
                if transmits >= limit {
                    self.retire(slot);
                } else {
                    moved.push((transmits as usize, slot, marker.1));
                }
            }
        }
        for (t, slot, generation) in moved {
            while self.tiers.len() <= t {
                self.tiers.push(Vec::new());
            }
            self.tiers[t].push((slot, generation));
        }
        start - budget
    }
}

#[cfg(test)]
impl BroadcastQueue {
    fn take_all(
        &mut self,
        budget: usize,
        limit: u32,
        exclude: Option<&PeerId>,
        out: &mut Vec<Update>,
    ) -> usize {
        self.take(budget, limit, u32::MAX, exclude, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::UpdateKind;
    use meshwire_core::Keypair;

    fn p(i: u64) -> PeerId {
        Keypair::from_seed_for_tests(i).peer_id()
    }

    fn left(i: u64, inc: u64) -> Update {
        Update {
            peer: p(i),
            incarnation: inc,
            kind: UpdateKind::Left,
        }
    }

    #[test]
    fn least_transmitted_then_newest_first() {
        let mut q = BroadcastQueue::new(1);
        q.push(left(1, 0));
        q.push(left(2, 0));
        let mut out = Vec::new();
        // Room for one: the newest.
        let one = left(1, 0).encoded_len();
        q.take_all(one, 10, None, &mut out);
        assert_eq!(out[0].peer, p(2));
        out.clear();
        // Now 1 has 0 transmits, 2 has 1: 1 first, then 2.
        q.take_all(2 * one, 10, None, &mut out);
        assert_eq!(
            out.iter().map(|u| u.peer).collect::<Vec<_>>(),
            vec![p(1), p(2)]
        );
    }

    #[test]
    fn transmit_limit_and_invalidation() {
        let mut q = BroadcastQueue::new(1);
        q.push(left(1, 0));
        let mut out = Vec::new();
        for _ in 0..3 {
            q.take_all(1000, 3, None, &mut out);
        }
        assert_eq!(out.len(), 3);
        assert!(q.is_empty());
        q.take_all(1000, 3, None, &mut out);
        assert_eq!(out.len(), 3, "never more than the limit");

        q.push(left(1, 1));
        q.take_all(1000, 3, None, &mut out);
        assert_eq!(q.transmits(&p(1)), Some(1));
        q.push(left(1, 2));
        assert_eq!(q.len(), 1, "the newer update replaced the older");
        assert_eq!(q.transmits(&p(1)), Some(0));
        out.clear();
        q.take_all(1000, 3, None, &mut out);
        assert_eq!(out, vec![left(1, 2)]);
        out.clear();
        q.take_all(1000, 3, Some(&p(1)), &mut out);
        assert!(out.is_empty(), "excluded");
        assert!(q.contains(&p(1)));
    }

    #[test]
    fn many_invalidations_stay_bounded() {
        let mut q = BroadcastQueue::new(1);
        for inc in 0..10_000 {
            q.push(left(inc % 5, inc));
        }
        assert_eq!(q.len(), 5);
        assert!(q.tiers.iter().map(Vec::len).sum::<usize>() < 200);
        assert!(q.slots.len() <= 5);
    }

    #[test]
    fn fresh_only_takes() {
        let mut q = BroadcastQueue::new(1);
        q.push(left(1, 0));
        let mut out = Vec::new();
        assert!(q.has_fresh(1));
        q.take(1000, 10, 1, None, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!q.has_fresh(1));
        q.take(1000, 10, 1, None, &mut out);
        assert_eq!(out.len(), 1, "transmitted once already: not fresh");
        q.take_all(1000, 10, None, &mut out);
        assert_eq!(out.len(), 2, "piggybacking still takes it");
    }
}
