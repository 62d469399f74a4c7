//! The member table: one compact entry per member, found by peer ID through an
//! open-addressing index of 4-byte slot numbers.
//!
//! Every node holds every other member (SWIM's full membership), so the table is what a node's
//! memory grows with, and what a one-process simulation holds N² of. An entry is 32 bytes: the
//! member's signed alive record is shared behind an [`Arc`] (its peer ID, signature and
//! metadata are not copied per holder), its state and flags are bytes, and instead of the
//! time of its last state change it keeps the stamp of its last failure declaration (what
//! the reap timer needs). Entries live in a slab (`Vec`), grown by a quarter at a time rather than
//! doubled; the index holds slot numbers, keyed by a hash of the peer ID, at a load of at
//! most three quarters. The probe order holds slot numbers too: a slot freed while the probe
//! order may still name it is reused only once the probe order has been rebuilt
//! ([`MemberTable::release_quarantine`]), so a stale slot number never names another member.

use std::hash::BuildHasher;
use std::sync::Arc;

use meshwire_core::PeerId;

use crate::engine::suspicion::Suspicion;
use crate::hash::KeyedState;
use crate::member::MemberState;
use crate::record::AliveRecord;

/// A member's slot in the table (stable while the member is in it).
pub(crate) type Slot = u32;

/// An empty index cell.
const EMPTY: u32 = u32::MAX;

/// What a node holds about one member.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The member's latest signed alive record we hold (its peer ID, signed incarnation,
    /// metadata and signature).
    pub(crate) record: Arc<AliveRecord>,
    /// Its incarnation (of its state; at least the record's).
    pub(crate) incarnation: u64,
    pub(crate) suspicion: Option<Box<Suspicion>>,
    /// The stamp of its last declaration as dead or left (unique among this realm's
    /// declarations, 0 before any): a reap timer set at a declaration reaps it only if no
    /// other declaration came since (and it is still dead or left).
    pub(crate) declared: u32,
    pub(crate) state: MemberState,
    /// A probe of it already had the grace for a first connection being set up
    /// (`handle_probe_unsent`): it gets it once.
    pub(crate) probe_grace_used: bool,
    /// Dead by a verdict of this node that it kept to itself (it had heard from nobody):
    /// the member was never told, so it cannot refute; any sign of life revives it.
    pub(crate) local_only: bool,
}

impl Entry {
    /// A new alive member with its signed record.
    pub(crate) fn alive(record: Arc<AliveRecord>) -> Self {
        Entry {
            incarnation: record.incarnation,
            record,
            suspicion: None,
            declared: 0,
            state: MemberState::Alive,
            probe_grace_used: false,
            local_only: false,
        }
    }

    /// The member.
    pub(crate) fn peer(&self) -> &PeerId {
        &self.record.peer
    }
}

/// The members of one realm, by peer ID and by slot.
#[derive(Debug)]
pub(crate) struct MemberTable {
    slots: Vec<Option<Entry>>,
    /// Free slots, reusable at once.
    free: Vec<Slot>,
    /// Slots freed since the probe order was last rebuilt.
    quarantine: Vec<Slot>,
    /// Open addressing with linear probing: slot numbers, or [`EMPTY`]. Its length is a power
    /// of two (or zero).
    index: Vec<u32>,
    len: usize,
    hasher: KeyedState,
}

impl MemberTable {
    pub(crate) fn new(hash_key: u64) -> Self {
        MemberTable {
            slots: Vec::new(),
            free: Vec::new(),
            quarantine: Vec::new(),
            index: Vec::new(),
            len: 0,
            hasher: KeyedState::new(hash_key),
        }
    }

    /// Members in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, peer: &PeerId) -> usize {
        (self.hasher.hash_one(peer) as usize) & (self.index.len() - 1)
    }

    /// The index cell holding `peer`'s slot, if it is in the table.
    fn find(&self, peer: &PeerId) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut i = self.home(peer);
        loop {
            let s = self.index[i];
            if s == EMPTY {
                return None;
            }
            if self.slots[s as usize]
                .as_ref()
                .is_some_and(|e| e.peer() == peer)
            {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// `peer`'s slot, if it is in the table.
    pub(crate) fn slot_of(&self, peer: &PeerId) -> Option<Slot> {
        self.find(peer).map(|i| self.index[i])
    }

    pub(crate) fn contains_key(&self, peer: &PeerId) -> bool {
        self.find(peer).is_some()
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let s = self.slot_of(peer)?;
        self.slots[s as usize].as_ref()
    }

    pub(crate) fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Entry> {
        let s = self.slot_of(peer)?;
        self.slots[s as usize].as_mut()
    }

    /// The member in `slot`, if any.
    pub(crate) fn at(&self, slot: Slot) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// Every member with its slot, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Slot, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, e)| e.as_ref().map(|e| (s as Slot, e)))
    }

    /// Makes the index large enough for `n` members at a load of at most 3/4.
    fn grow_index(&mut self, n: usize) {
        if 4 * n <= 3 * self.index.len() {
            return;
        }
        let mut cap = self.index.len().max(8);
        while 4 * n > 3 * cap {
            cap *= 2;
        }
        self.index = vec![EMPTY; cap];
        let mask = cap - 1;
        for (s, e) in self.slots.iter().enumerate() {
            if let Some(e) = e {
                let mut i = (self.hasher.hash_one(e.peer()) as usize) & mask;
                while self.index[i] != EMPTY {
                    i = (i + 1) & mask;
                }
                self.index[i] = s as u32;
            }
        }
    }

    /// Inserts `entry` (keyed by its record's peer), replacing the entry of the same member if
    /// there is one. Returns its slot.
    pub(crate) fn insert(&mut self, entry: Entry) -> Slot {
        if let Some(s) = self.slot_of(entry.peer()) {
            self.slots[s as usize] = Some(entry);
            return s;
        }
        self.grow_index(self.len + 1);
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(entry);
                s
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow by a quarter, not double: the table is most of a node's memory.
                    self.slots.reserve_exact((self.slots.len() / 4).max(16));
                }
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as Slot
            }
        };
        let mask = self.index.len() - 1;
        let mut i = self.home(
            self.slots[slot as usize]
                .as_ref()
                .map_or_else(|| unreachable!("just filled"), Entry::peer),
        );
        while self.index[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.index[i] = slot;
        self.len += 1;
        slot
    }

    /// Removes `peer`'s entry. Its slot is reused only after the next
    /// [`MemberTable::release_quarantine`].
    pub(crate) fn remove(&mut self, peer: &PeerId) -> Option<Entry> {
        let mut i = self.find(peer)?;
        let slot = self.index[i];
        let entry = self.slots[slot as usize].take();
        self.quarantine.push(slot);
        self.len -= 1;
        // Backward-shift deletion: move later cells of the run into the hole when their home
        // position allows it.
        let mask = self.index.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.index[j];
            if s == EMPTY {
                break;
            }
            let home = self.slots[s as usize]
                .as_ref()
                .map_or(j, |e| self.home(e.peer()));
            // The cell at j may move to i if its home is not cyclically within (i, j].
            let dist_home = j.wrapping_sub(home) & mask;
            let dist_hole = j.wrapping_sub(i) & mask;
            if dist_home >= dist_hole {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = EMPTY;
        entry
    }

    /// The probe order was rebuilt (or cleared): no slot number of a removed member remains
    /// in it, so the slots freed meanwhile can be reused.
    pub(crate) fn release_quarantine(&mut self) {
        self.free.append(&mut self.quarantine);
    }

    /// Heap bytes held by the table (slab, index, free lists), not counting the shared
    /// records and suspicions.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + self.index.capacity() * 4
            + (self.free.capacity() + self.quarantine.capacity()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::NodeMeta;
    use crate::record::Signature;
    use meshwire_core::Keypair;

    fn entry(i: u64) -> Entry {
        let peer = Keypair::from_seed_for_tests(i).peer_id();
        Entry::alive(AliveRecord::new(
            peer,
            i,
            Arc::new(NodeMeta::empty()),
            Signature::ZERO,
        ))
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 32);
    }

    #[test]
    fn insert_find_remove_against_a_model() {
        let mut t = MemberTable::new(7);
        let peers: Vec<PeerId> = (0..300).map(|i| *entry(i).peer()).collect();
        let mut model = std::collections::HashMap::new();
        let mut rng = crate::rng::SwimRng::seed_from_u64(3);
        for step in 0..5_000 {
            let i = rng.below(peers.len());
            if rng.below(3) == 0 {
                assert_eq!(
                    t.remove(&peers[i]).map(|e| e.incarnation),
                    model.remove(&i),
                    "step {step}"
                );
            } else {
                let mut e = entry(i as u64);
                e.incarnation = step;
                t.insert(e);
                model.insert(i, step);
            }
            if step % 97 == 0 {
                t.release_quarantine();
            }
            assert_eq!(t.len(), model.len());
        }
        for (i, p) in peers.iter().enumerate() {
            assert_eq!(t.get(p).map(|e| e.incarnation), model.get(&i).copied());
            if let Some(s) = t.slot_of(p) {
                assert_eq!(t.at(s).map(Entry::peer), Some(p));
            }
        }
        assert_eq!(t.iter().count(), model.len());
    }

    #[test]
    fn freed_slots_wait_for_the_quarantine_release() {
        let mut t = MemberTable::new(1);
        let a = t.insert(entry(1));
        assert!(t.remove(entry(1).peer()).is_some());
        let b = t.insert(entry(2));
        assert_ne!(a, b, "a freed slot is not reused before the release");
        assert!(t.at(a).is_none());
        t.release_quarantine();
        assert_eq!(t.insert(entry(3)), a);
    }

    /// The table's own bytes per member at 10,000 members (run with `--nocapture`).
    #[test]
    fn bytes_per_member() {
        let mut t = MemberTable::new(1);
        for i in 0..10_000 {
            t.insert(entry(i));
        }
        let per = t.heap_bytes() as f64 / 10_000.0;
        println!("member table: {per:.1} bytes per member (slab and index)");
        assert!(per < 64.0, "{per}");
    }
}
