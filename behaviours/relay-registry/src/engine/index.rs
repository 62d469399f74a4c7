//! [`RelayIndex`]: the local index of relay records — bounded, expiring, newest version wins.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use crate::record::RelayRecord;

/// What the index keeps about one relay.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The newest verified record.
    pub(crate) record: RelayRecord,
    /// When the entry leaves the index (the record's expiry, capped by the engine).
    pub(crate) deadline: Instant,
    /// The last RTT measured to the relay, and when.
    pub(crate) rtt: Option<(Duration, Instant)>,
    /// Not to be chosen before this (it failed a probe or a reservation).
    pub(crate) down_until: Option<Instant>,
    /// It refused a reservation as full since this record: taken as full until a newer one.
    pub(crate) full: bool,
}

impl Entry {
    /// Whether the relay may be chosen at `now`.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        !self.record.withdrawn && self.down_until.is_none_or(|t| t <= now)
    }
}

/// What [`RelayIndex::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A relay not in the index (or only as a tombstone) was added.
    Added,
    /// A newer version of a known relay's record replaced the old one.
    Updated,
    /// The relay withdrew: the index keeps the tombstone until it expires.
    Withdrawn,
    /// The record is not newer than the one held; nothing changed.
    Stale,
}

/// The index is full and every entry outlives the new record, or is pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexFull;

/// The local index of relay records: at most `max` entries (tombstones of withdrawn relays
/// included), each until its deadline. When full, a new relay takes the place of the entry
/// expiring first if that one expires before the new record and is not pinned (a relay we
/// hold a reservation on, or ourselves); otherwise it is refused. So a flood of valid but
/// unwanted records (each signed by a fresh key) cannot grow memory, and cannot evict the
/// relays in use.
#[derive(Debug)]
pub struct RelayIndex {
    entries: HashMap<PeerId, Entry>,
    deadlines: BTreeSet<(Instant, PeerId)>,
    max: usize,
}

impl RelayIndex {
    /// An empty index of at most `max` entries.
    pub fn new(max: usize) -> Self {
        RelayIndex {
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            max,
        }
    }

    /// Entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound on entries.
    pub fn capacity(&self) -> usize {
        self.max
    }

    pub(crate) fn get(&self, relay: &PeerId) -> Option<&Entry> {
        self.entries.get(relay)
    }

    pub(crate) fn get_mut(&mut self, relay: &PeerId) -> Option<&mut Entry> {
        self.entries.get_mut(relay)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Live relays (not withdrawn).
    pub fn live(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !e.record.withdrawn)
            .count()
    }

    /// Adds or updates `record` (already verified and checked against the clock), kept until
    /// `deadline`. `pinned` tells which entries must not be evicted. Returns what happened
    /// and the relay evicted to make room, if any.
    ///
    /// # Errors
    ///
    /// [`IndexFull`] (see the type docs).
    pub fn insert(
        &mut self,
        record: RelayRecord,
        deadline: Instant,
        pinned: impl Fn(&PeerId) -> bool,
    ) -> Result<(InsertOutcome, Option<PeerId>), IndexFull> {
        let relay = record.node_id;
        if let Some(old) = self.entries.get_mut(&relay) {
            if record.issued_at <= old.record.issued_at {
                return Ok((InsertOutcome::Stale, None));
            }
            let was_withdrawn = old.record.withdrawn;
            let outcome = match (was_withdrawn, record.withdrawn) {
                (_, true) => InsertOutcome::Withdrawn,
                (true, false) => InsertOutcome::Added,
                (false, false) => InsertOutcome::Updated,
            };
            self.deadlines.remove(&(old.deadline, relay));
            self.deadlines.insert((deadline, relay));
            old.deadline = deadline;
            old.record = record;
            old.full = false;
            if outcome == InsertOutcome::Added {
                old.down_until = None;
            }
            return Ok((outcome, None));
        }
        let mut evicted = None;
        if self.entries.len() >= self.max {
            let victim = self
                .deadlines
                .iter()
                .find(|(_, p)| !pinned(p))
                .copied()
                .filter(|(d, _)| *d < deadline);
            let Some((_, victim)) = victim else {
                return Err(IndexFull);
            };
            self.remove(&victim);
            evicted = Some(victim);
        }
        let outcome = if record.withdrawn {
            InsertOutcome::Withdrawn
        } else {
            InsertOutcome::Added
        };
        self.deadlines.insert((deadline, relay));
        self.entries.insert(
            relay,
            Entry {
                record,
                deadline,
                rtt: None,
                down_until: None,
                full: false,
            },
        );
        Ok((outcome, evicted))
    }

    /// Removes `relay`'s entry; returns it.
    pub(crate) fn remove(&mut self, relay: &PeerId) -> Option<Entry> {
        let e = self.entries.remove(relay)?;
        self.deadlines.remove(&(e.deadline, *relay));
        Some(e)
    }

    /// Removes every entry whose deadline is at or before `now`; returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Entry> {
        let mut gone = Vec::new();
        while let Some(&(d, p)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(e) = self.entries.remove(&p) {
                gone.push(e);
            }
        }
        gone
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn rec(seed: u64, issued: u64, withdrawn: bool) -> RelayRecord {
        RelayRecord {
            node_id: Keypair::from_seed_for_tests(seed).peer_id(),
            realm: String::new(),
            endpoint: "/ip4/10.0.0.1/udp/1/quic-v1".parse().unwrap(),
            capacity: 10,
            current_load: 0,
            registered_at: 0,
            issued_at: issued,
            expires_at: issued + 1,
            withdrawn,
        }
    }

    #[test]
    fn registry_index_newest_wins_and_expires() {
        let now = Instant::now();
        let s = |n| now + Duration::from_secs(n);
        let mut ix = RelayIndex::new(10);
        let no = |_: &PeerId| false;
        assert_eq!(
            ix.insert(rec(1, 5, false), s(10), no),
            Ok((InsertOutcome::Added, None))
        );
        assert_eq!(
            ix.insert(rec(1, 5, false), s(20), no),
            Ok((InsertOutcome::Stale, None))
        );
        assert_eq!(
            ix.insert(rec(1, 4, false), s(20), no),
            Ok((InsertOutcome::Stale, None))
        );
        assert_eq!(
            ix.insert(rec(1, 6, false), s(20), no),
            Ok((InsertOutcome::Updated, None))
        );
        assert_eq!(ix.next_deadline(), Some(s(20)));
        assert_eq!(
            ix.insert(rec(2, 1, false), s(15), no),
            Ok((InsertOutcome::Added, None))
        );
        assert!(ix.expire(s(14)).is_empty());
        let gone = ix.expire(s(15));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].record.node_id, rec(2, 0, false).node_id);
        // A tombstone replaces the record, and a newer record revives the relay.
        assert_eq!(
            ix.insert(rec(1, 7, true), s(30), no),
            Ok((InsertOutcome::Withdrawn, None))
        );
        assert_eq!(ix.live(), 0);
        assert_eq!(
            ix.insert(rec(1, 8, false), s(30), no),
            Ok((InsertOutcome::Added, None))
        );
        assert_eq!(ix.live(), 1);
        assert_eq!(ix.expire(s(30)).len(), 1);
        assert!(ix.is_empty());
    }

    #[test]
    fn registry_index_is_bounded_and_keeps_pinned() {
        let now = Instant::now();
        let s = |n| now + Duration::from_secs(n);
        let mut ix = RelayIndex::new(3);
        let pinned_id = rec(1, 0, false).node_id;
        let pinned = |p: &PeerId| *p == pinned_id;
        ix.insert(rec(1, 1, false), s(1), pinned).unwrap();
        ix.insert(rec(2, 1, false), s(2), pinned).unwrap();
        ix.insert(rec(3, 1, false), s(3), pinned).unwrap();
        // A flood: each newcomer outliving an entry evicts the first-expiring unpinned one.
        for seed in 4..1000 {
            let _ = ix.insert(rec(seed, 1, false), s(seed), pinned);
            assert!(ix.len() <= 3);
            assert!(ix.get(&pinned_id).is_some(), "pinned entry kept");
        }
        // A newcomer expiring before every unpinned entry is refused.
        assert_eq!(ix.insert(rec(5000, 1, false), s(2), pinned), Err(IndexFull));
        assert_eq!(ix.deadlines.len(), ix.entries.len());
    }
}
