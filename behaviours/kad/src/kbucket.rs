//! The Kademlia key space and the routing table.
//!
//! Every key lives in a 256-bit space: a [`Key`] is the SHA-256 of some bytes (for a peer, of
//! its binary peer id — the multihash — exactly as libp2p does). The [`Distance`] between two
//! keys is their XOR read as a big-endian 256-bit integer. A peer at distance `d` from the local
//! key belongs in bucket `255 - leading_zeros(d)`: bucket 255 holds the half of the key space
//! farthest away, bucket 0 the single key differing only in the last bit.
//!
//! The [`RoutingTable`] keeps 256 such buckets of at most `k` peers each, ordered least recently
//! seen first. Inserting into a full bucket does not evict anyone blindly: the candidate becomes
//! the bucket's *pending* entry and the caller is asked to ping the least recently seen peer
//! ([`InsertOutcome::Pending`]). If that peer answers it moves to the tail and the candidate is
//! dropped; if not, it is evicted and the candidate takes its place
//! ([`RoutingTable::on_ping_result`]). Long-lived peers are thus preferred, as in the Kademlia
//! paper.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_kad::kbucket::{InsertOutcome, Key, RoutingTable};
//! use std::time::Instant;
//!
//! let me = Keypair::from_seed_for_tests(0).peer_id();
//! let mut table = RoutingTable::new(Key::from_peer(&me), 20);
//! let other = Keypair::from_seed_for_tests(1).peer_id();
//! let now = Instant::now();
//! assert!(matches!(table.insert_or_update(other, &[], now), InsertOutcome::Inserted { .. }));
//! let target = Key::from_bytes(b"some key");
//! assert_eq!(table.closest(&target, 20).next().map(|n| n.peer), Some(other));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Number of buckets: one per bit of a SHA-256 key.
pub const NUM_BUCKETS: usize = 256;

/// Default bucket size and replication factor `k`.
pub const DEFAULT_K: usize = 20;

/// Default bound on the addresses kept per peer.
pub const DEFAULT_MAX_ADDRS_PER_PEER: usize = 8;

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A point of the 256-bit key space: SHA-256 of a key's bytes.
///
/// Stored as four big-endian 64-bit words (most significant first), so XOR and comparison are
/// four machine operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u64; 4]);

impl Key {
    /// The key of a peer: SHA-256 of its binary peer id (multihash).
    pub fn from_peer(peer: &PeerId) -> Self {
        Self::from_bytes(peer.as_bytes())
    }

    /// The key of arbitrary bytes (record keys, FIND_NODE keys): their SHA-256.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        // Peer ids (38 bytes for ed25519) fit in one block: pad by hand and run the compression
        // function once, skipping the generic buffering (it dominates in debug builds, where
        // simulations hash millions of peer ids).
        if bytes.len() <= 55 {
            let mut block = [0u8; 64];
            block[..bytes.len()].copy_from_slice(bytes);
            block[bytes.len()] = 0x80;
            block[56..].copy_from_slice(&((bytes.len() as u64) * 8).to_be_bytes());
            let mut state = SHA256_IV;
            sha2::compress256(&mut state, &[block.into()]);
            return Key([
                (u64::from(state[0]) << 32) | u64::from(state[1]),
                (u64::from(state[2]) << 32) | u64::from(state[3]),
                (u64::from(state[4]) << 32) | u64::from(state[5]),
                (u64::from(state[6]) << 32) | u64::from(state[7]),
            ]);
        }
        Self::from_raw(Sha256::digest(bytes).into())
    }

    /// A key given directly as a point of the key space (no hashing).
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Key(words_from_bytes(&raw))
    }

    /// The 32 bytes of the point.
    pub fn to_bytes(&self) -> [u8; 32] {
        bytes_from_words(&self.0)
    }

    /// The XOR distance to another key.
    pub fn distance(&self, other: &Key) -> Distance {
        let (a, b) = (&self.0, &other.0);
        Distance([a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]])
    }

    /// A random lookup key (a preimage: what a FIND_NODE request carries) whose hashed key
    /// falls in bucket `index` relative to `self`, as bucket refreshes need.
    ///
    /// Keys are hashed, so the only way to aim at a bucket is to draw random preimages until
    /// one lands in it: bucket `i` takes about `2^(256 - i)` draws. After `max_attempts` draws
    /// the one landing nearest to the bucket is returned. The preimages are shaped like ed25519
    /// peer ids (identity multihash of a protobuf public key), as FIND_NODE keys usually are.
    pub fn random_preimage_in_bucket<R: Rng + ?Sized>(
        &self,
        index: usize,
        rng: &mut R,
        max_attempts: usize,
    ) -> (Vec<u8>, Key) {
        let index = index.min(NUM_BUCKETS - 1);
        let mut best: Option<(usize, Vec<u8>, Key)> = None;
        for _ in 0..max_attempts.max(1) {
            let mut preimage = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
            preimage.extend_from_slice(&rng.gen::<[u8; 32]>());
            let key = Key::from_bytes(&preimage);
            let Some(b) = self.distance(&key).bucket_index() else {
                continue;
            };
            if b == index {
                return (preimage, key);
            }
            if best
                .as_ref()
                .is_none_or(|(bb, _, _)| b.abs_diff(index) < bb.abs_diff(index))
            {
                best = Some((b, preimage, key));
            }
        }
        match best {
            Some((_, preimage, key)) => (preimage, key),
            None => {
                let preimage = rng.gen::<[u8; 32]>().to_vec();
                let key = Key::from_bytes(&preimage);
                (preimage, key)
            }
        }
    }
}

fn words_from_bytes(b: &[u8; 32]) -> [u64; 4] {
    let mut w = [0u64; 4];
    for (i, chunk) in b.chunks_exact(8).enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(chunk);
        w[i] = u64::from_be_bytes(x);
    }
    w
}

fn bytes_from_words(w: &[u64; 4]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (chunk, word) in b.chunks_exact_mut(8).zip(w) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    b
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:012x}…)", self.0[0] >> 16)
    }
}

/// The XOR distance of two keys, ordered as an unsigned 256-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Distance([u64; 4]);

impl Distance {
    /// The distance given as 32 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Distance(words_from_bytes(&bytes))
    }

    /// The 32 big-endian bytes of the distance.
    pub fn to_bytes(&self) -> [u8; 32] {
        bytes_from_words(&self.0)
    }

    /// Number of leading zero bits (256 for the zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for w in &self.0 {
            if *w != 0 {
                return n + w.leading_zeros();
            }
            n += 64;
        }
        n
    }

    /// The bucket a key at this distance belongs in: `255 - leading_zeros`, or `None` for the
    /// zero distance (the local key itself).
    pub fn bucket_index(&self) -> Option<usize> {
        let lz = self.leading_zeros() as usize;
        (lz < NUM_BUCKETS).then(|| NUM_BUCKETS - 1 - lz)
    }

    /// Whether bit `i` (0 = least significant, 255 = most) is set.
    pub fn bit(&self, i: usize) -> bool {
        i < NUM_BUCKETS && (self.0[3 - i / 64] >> (i % 64)) & 1 == 1
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance(bucket {:?})", self.bucket_index())
    }
}

/// One peer in the routing table.
#[derive(Clone, Debug)]
pub struct Node {
    /// The peer.
    pub peer: PeerId,
    /// Its key.
    pub key: Key,
    /// Its known addresses, most recently learned or confirmed last (bounded; see
    /// [`RoutingTable::set_max_addrs_per_peer`]). Only first-hand addresses go here: see the
    /// [engine's docs](crate::engine#addresses-in-the-routing-table).
    pub addrs: Vec<Multiaddr>,
    /// When it was last seen alive (inserted, answered, or sent us a request).
    pub last_seen: Instant,
    /// Consecutive failed requests since it was last seen.
    pub failures: u32,
}

/// A candidate waiting for the outcome of a ping of a full bucket's least recently seen peer.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The candidate that would replace the pinged peer.
    pub node: Node,
    /// The least recently seen peer being pinged.
    pub ping: PeerId,
}

/// One k-bucket: at most `k` nodes, least recently seen first, and at most one pending entry.
#[derive(Clone, Debug, Default)]
pub struct KBucket {
    nodes: Vec<Node>,
    pending: Option<Pending>,
}

impl KBucket {
    /// The nodes, least recently seen first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The pending candidate, if a ping is under way.
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the bucket holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// What [`RoutingTable::insert_or_update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The peer was new and is now in `bucket`.
    Inserted {
        /// The bucket index.
        bucket: usize,
    },
    /// The peer was known: it moved to the tail (most recently seen) of `bucket`.
    Updated {
        /// The bucket index.
        bucket: usize,
        /// Whether a new address was learned.
        new_address: bool,
    },
    /// The bucket is full: the peer is now its pending entry, and `ping` (the least recently
    /// seen peer) must be pinged; report the outcome with [`RoutingTable::on_ping_result`].
    Pending {
        /// The bucket index.
        bucket: usize,
        /// The peer to ping.
        ping: PeerId,
    },
    /// The bucket is full and already has a pending entry: the peer was not added.
    Full {
        /// The bucket index.
        bucket: usize,
    },
    /// The peer is the local peer.
    SelfEntry,
}

/// What [`RoutingTable::on_ping_result`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingOutcome {
    /// The pinged peer is alive: it moved to the tail; the candidate was dropped.
    Kept {
        /// The dropped candidate.
        dropped: PeerId,
    },
    /// The pinged peer did not answer: it was evicted and the candidate inserted.
    Replaced {
        /// The bucket index.
        bucket: usize,
        /// The evicted peer.
        evicted: PeerId,
        /// The inserted candidate.
        inserted: PeerId,
    },
    /// No pending entry waited on a ping of this peer.
    NoPending,
}

/// What [`RoutingTable::remove`] did.
#[derive(Clone, Debug)]
pub struct Removed {
    /// The removed node.
    pub node: Node,
    /// The bucket index.
    pub bucket: usize,
    /// A pending candidate of that bucket that took the freed slot.
    pub promoted: Option<PeerId>,
}

/// The Kademlia routing table: 256 k-buckets around the local key.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    local: Key,
    k: usize,
    max_addrs: usize,
    buckets: Vec<KBucket>,
    /// Bucket of every peer in the table (pending candidates are not indexed).
    index: HashMap<PeerId, usize>,
}

impl RoutingTable {
    /// An empty table around `local` with buckets of `k` peers.
    pub fn new(local: Key, k: usize) -> Self {
        RoutingTable {
            local,
            k: k.max(1),
            max_addrs: DEFAULT_MAX_ADDRS_PER_PEER,
            buckets: vec![KBucket::default(); NUM_BUCKETS],
            index: HashMap::new(),
        }
    }

    /// Sets the bound on addresses kept per peer (the least recently learned or confirmed is
    /// dropped first).
    pub fn set_max_addrs_per_peer(&mut self, n: usize) {
        self.max_addrs = n.max(1);
    }

    /// The local key.
    pub fn local_key(&self) -> &Key {
        &self.local
    }

    /// The bucket size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of peers in the table (pending candidates excluded).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The bucket a key belongs in, or `None` for the local key.
    pub fn bucket_index(&self, key: &Key) -> Option<usize> {
        self.local.distance(key).bucket_index()
    }

    /// One bucket (`index` < 256).
    pub fn bucket(&self, index: usize) -> Option<&KBucket> {
        self.buckets.get(index)
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.index.contains_key(peer)
    }

    /// The entry of `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&Node> {
        let b = *self.index.get(peer)?;
        self.buckets[b].nodes.iter().find(|n| n.peer == *peer)
    }

    /// All nodes, bucket 0 first, least recently seen first within a bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    /// Inserts `peer` (with `addrs`), or marks it seen and merges `addrs` if known. See
    /// [`InsertOutcome`]. The key is computed here only for peers not yet in the table.
    pub fn insert_or_update(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        now: Instant,
    ) -> InsertOutcome {
        if let Some(&b) = self.index.get(&peer) {
            let new_address = self.touch(b, &peer, addrs, now);
            return InsertOutcome::Updated {
                bucket: b,
                new_address,
            };
        }
        let key = Key::from_peer(&peer);
        let Some(b) = self.bucket_index(&key) else {
            return InsertOutcome::SelfEntry;
        };
        let max_addrs = self.max_addrs;
        let bucket = &mut self.buckets[b];
        let mut node = Node {
            peer,
            key,
            addrs: Vec::new(),
            last_seen: now,
            failures: 0,
        };
        merge_addrs(&mut node.addrs, addrs, max_addrs);
        if bucket.nodes.len() < self.k {
            bucket.nodes.push(node);
            self.index.insert(peer, b);
            return InsertOutcome::Inserted { bucket: b };
        }
        match &mut bucket.pending {
            Some(p) if p.node.peer == peer => {
                merge_addrs(&mut p.node.addrs, addrs, max_addrs);
                p.node.last_seen = now;
                InsertOutcome::Full { bucket: b }
            }
            Some(_) => InsertOutcome::Full { bucket: b },
            None => {
                let ping = bucket.nodes[0].peer;
                bucket.pending = Some(Pending { node, ping });
                InsertOutcome::Pending { bucket: b, ping }
            }
        }
    }

    /// Marks a known peer as seen now (moves it to the tail, clears its failures). Returns
    /// `false` if the peer is not in the table.
    pub fn mark_seen(&mut self, peer: &PeerId, now: Instant) -> bool {
        match self.index.get(peer) {
            Some(&b) => {
                self.touch(b, peer, &[], now);
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, b: usize, peer: &PeerId, addrs: &[Multiaddr], now: Instant) -> bool {
        let max_addrs = self.max_addrs;
        let bucket = &mut self.buckets[b];
        let Some(pos) = bucket.nodes.iter().position(|n| n.peer == *peer) else {
            return false;
        };
        let mut node = bucket.nodes.remove(pos);
        node.last_seen = now;
        node.failures = 0;
        let new_address = merge_addrs(&mut node.addrs, addrs, max_addrs);
        bucket.nodes.push(node);
        new_address
    }

    /// Records a failed request to `peer`; returns its consecutive failure count (0 if the
    /// peer is not in the table).
    pub fn record_failure(&mut self, peer: &PeerId) -> u32 {
        let Some(&b) = self.index.get(peer) else {
            return 0;
        };
        match self.buckets[b].nodes.iter_mut().find(|n| n.peer == *peer) {
            Some(n) => {
                n.failures = n.failures.saturating_add(1);
                n.failures
            }
            None => 0,
        }
    }

    /// Applies the outcome of pinging `peer`, the least recently seen peer of a full bucket
    /// with a pending candidate. See [`PingOutcome`].
    pub fn on_ping_result(&mut self, peer: &PeerId, alive: bool, now: Instant) -> PingOutcome {
        let Some(&b) = self.index.get(peer) else {
            return PingOutcome::NoPending;
        };
        let waiting = matches!(&self.buckets[b].pending, Some(p) if p.ping == *peer);
        if !waiting {
            if alive {
                self.touch(b, peer, &[], now);
            }
            return PingOutcome::NoPending;
        }
        if alive {
            self.touch(b, peer, &[], now);
            let dropped = self.buckets[b].pending.take().map(|p| p.node.peer);
            return match dropped {
                Some(dropped) => PingOutcome::Kept { dropped },
                None => PingOutcome::NoPending,
            };
        }
        match self.remove(peer) {
            Some(Removed {
                promoted: Some(inserted),
                bucket,
                ..
            }) => PingOutcome::Replaced {
                bucket,
                evicted: *peer,
                inserted,
            },
            _ => PingOutcome::NoPending,
        }
    }

    /// Removes `peer`. If its bucket had a pending candidate, the candidate takes the slot.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Removed> {
        let b = self.index.remove(peer)?;
        let bucket = &mut self.buckets[b];
        let pos = bucket.nodes.iter().position(|n| n.peer == *peer)?;
        let node = bucket.nodes.remove(pos);
        let promoted = bucket.pending.take().map(|p| {
            let id = p.node.peer;
            bucket.nodes.push(p.node);
            id
        });
        if let Some(id) = promoted {
            self.index.insert(id, b);
        }
        Some(Removed {
            node,
            bucket: b,
            promoted,
        })
    }

    /// The nodes closest to `target`, closest first, at most `n` of them.
    ///
    /// Buckets are visited in order of their distance range to `target`, so only the buckets
    /// that can contribute are sorted (O(256 + n log k)), never the whole table.
    pub fn closest<'a>(&'a self, target: &Key, n: usize) -> ClosestIter<'a> {
        ClosestIter {
            table: self,
            target: *target,
            distance: self.local.distance(target),
            cursor: BucketCursor::Down(NUM_BUCKETS),
            current: Vec::new(),
            remaining: n,
        }
    }

    /// The index of the closest non-empty bucket, if any.
    pub fn closest_nonempty_bucket(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.is_empty())
    }
}

/// Merges `new` into `addrs`, most recently learned or confirmed last: a known address moves
/// to the end, and past `max` the least recently confirmed one is dropped. Returns whether an
/// address was added.
fn merge_addrs(addrs: &mut Vec<Multiaddr>, new: &[Multiaddr], max: usize) -> bool {
    let mut added = false;
    for a in new {
        if let Some(i) = addrs.iter().position(|x| x == a) {
            let known = addrs.remove(i);
            addrs.push(known);
        } else {
            if addrs.len() >= max {
                addrs.remove(0);
            }
            addrs.push(a.clone());
            added = true;
        }
    }
    added
}

/// Position in the bucket visiting order of [`ClosestIter`].
#[derive(Clone, Copy, Debug)]
enum BucketCursor {
    /// Visiting buckets `i` where the local-target distance has bit `i` set, from high to low;
    /// the next candidate is below this index.
    Down(usize),
    /// Then buckets where that bit is clear, from low to high; the next candidate is this one.
    Up(usize),
}

/// Iterator over the routing table's nodes closest to a target, closest first.
///
/// For a node in bucket `i`, its distance to the target agrees with the local-target distance
/// `d` above bit `i` and has bit `i` flipped. So the buckets where `d` has bit `i` set hold
/// closer nodes (higher `i` first), then the others (lower `i` first).
pub struct ClosestIter<'a> {
    table: &'a RoutingTable,
    target: Key,
    distance: Distance,
    cursor: BucketCursor,
    current: Vec<(Distance, &'a Node)>,
    remaining: usize,
}

impl ClosestIter<'_> {
    /// The next non-empty bucket in visiting order.
    fn next_bucket(&mut self) -> Option<usize> {
        loop {
            let i = match self.cursor {
                BucketCursor::Down(0) => {
                    self.cursor = BucketCursor::Up(0);
                    continue;
                }
                BucketCursor::Down(i) => {
                    self.cursor = BucketCursor::Down(i - 1);
                    if !self.distance.bit(i - 1) {
                        continue;
                    }
                    i - 1
                }
                BucketCursor::Up(i) if i >= NUM_BUCKETS => return None,
                BucketCursor::Up(i) => {
                    self.cursor = BucketCursor::Up(i + 1);
                    if self.distance.bit(i) {
                        continue;
                    }
                    i
                }
            };
            if !self.table.buckets[i].nodes.is_empty() {
                return Some(i);
            }
        }
    }
}

impl<'a> Iterator for ClosestIter<'a> {
    type Item = &'a Node;

    fn next(&mut self) -> Option<&'a Node> {
        if self.remaining == 0 {
            return None;
        }
        while self.current.is_empty() {
            let b = self.next_bucket()?;
            let table: &'a RoutingTable = self.table;
            let target = self.target;
            self.current.extend(
                table.buckets[b]
                    .nodes
                    .iter()
                    .map(|n| (n.key.distance(&target), n)),
            );
            // Sorted farthest first so that `pop` yields the closest.
            self.current
                .sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        }
        self.remaining -= 1;
        self.current.pop().map(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;
    use rand::{rngs::StdRng, SeedableRng};

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    #[test]
    fn distance_to_bucket_index() {
        let zero = Key::from_raw([0; 32]);
        assert!(Distance::from_bytes([1; 32]).bit(0) && !Distance::from_bytes([1; 32]).bit(1));
        assert_eq!(zero.distance(&zero).bucket_index(), None);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(zero.distance(&Key::from_raw(one)).bucket_index(), Some(0));
        let mut b = [0u8; 32];
        b[31] = 0b1000_0000;
        assert_eq!(zero.distance(&Key::from_raw(b)).bucket_index(), Some(7));
        let mut b = [0u8; 32];
        b[30] = 1;
        b[31] = 0xff;
        assert_eq!(zero.distance(&Key::from_raw(b)).bucket_index(), Some(8));
        let mut top = [0u8; 32];
        top[0] = 0x80;
        assert_eq!(zero.distance(&Key::from_raw(top)).bucket_index(), Some(255));
        top[0] = 0x40;
        assert_eq!(zero.distance(&Key::from_raw(top)).bucket_index(), Some(254));
        assert_eq!(Distance::from_bytes([0xff; 32]).leading_zeros(), 0);
        assert!(Distance::from_bytes(top) > Distance::from_bytes(b));
        assert_eq!(Distance::from_bytes(b).to_bytes(), b);
    }

    #[test]
    fn peer_key_is_sha256_of_multihash() {
        let p = peer(1);
        let expected: [u8; 32] = Sha256::digest(p.as_bytes()).into();
        assert_eq!(Key::from_peer(&p).to_bytes(), expected);
        // Known vector: SHA-256("abc").
        assert_eq!(
            Key::from_bytes(b"abc").to_bytes()[..4],
            [0xba, 0x78, 0x16, 0xbf]
        );
    }

    #[test]
    fn one_block_fast_path_matches_sha256() {
        for len in [0usize, 1, 38, 55, 56, 64, 100] {
            let data: Vec<u8> = (0..len as u8).collect();
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(Key::from_bytes(&data).to_bytes(), expected, "len {len}");
        }
    }

    #[test]
    fn random_preimage_lands_in_requested_bucket() {
        let local = Key::from_peer(&peer(0));
        let mut rng = StdRng::seed_from_u64(1);
        for i in [255, 254, 250, 246] {
            for _ in 0..5 {
                let (pre, k) = local.random_preimage_in_bucket(i, &mut rng, 1 << 16);
                assert_eq!(Key::from_bytes(&pre), k);
                assert_eq!(local.distance(&k).bucket_index(), Some(i));
            }
        }
        // Out of reach: the nearest draw is returned.
        let (_, k) = local.random_preimage_in_bucket(10, &mut rng, 64);
        assert!(local.distance(&k).bucket_index().unwrap() > 10);
    }

    /// Peers that all land in the table's bucket 255 (half of all keys do).
    fn far_peers(local: &Key, n: usize) -> Vec<PeerId> {
        (1..)
            .map(peer)
            .filter(|p| local.distance(&Key::from_peer(p)).bucket_index() == Some(255))
            .take(n)
            .collect()
    }

    #[test]
    fn confirmed_addresses_outlive_newer_ones() {
        let local = Key::from_peer(&peer(0));
        let mut t = RoutingTable::new(local, 4);
        t.set_max_addrs_per_peer(2);
        let p = far_peers(&local, 1)[0];
        let a: Vec<Multiaddr> = (1..=3)
            .map(|i| format!("/memory/{i}").parse().unwrap())
            .collect();
        let now = Instant::now();
        t.insert_or_update(p, &a[..2], now);
        // a[0] is confirmed again, so a[1] is the least recently confirmed when a[2] arrives.
        assert_eq!(
            t.insert_or_update(p, &a[..1], now),
            InsertOutcome::Updated {
                bucket: 255,
                new_address: false
            }
        );
        t.insert_or_update(p, &a[2..], now);
        assert_eq!(t.get(&p).unwrap().addrs, vec![a[0].clone(), a[2].clone()]);
    }

    #[test]
    fn lru_order_and_update_moves_to_tail() {
        let local = Key::from_peer(&peer(0));
        let mut t = RoutingTable::new(local, 4);
        let ps = far_peers(&local, 3);
        let now = Instant::now();
        for p in &ps {
            assert_eq!(
                t.insert_or_update(*p, &[], now),
                InsertOutcome::Inserted { bucket: 255 }
            );
        }
        let order = |t: &RoutingTable| {
            t.bucket(255)
                .unwrap()
                .nodes()
                .iter()
                .map(|n| n.peer)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&t), ps);
        let addr: Multiaddr = "/memory/1".parse().unwrap();
        assert_eq!(
            t.insert_or_update(ps[0], std::slice::from_ref(&addr), now),
            InsertOutcome::Updated {
                bucket: 255,
                new_address: true
            }
        );
        assert_eq!(order(&t), vec![ps[1], ps[2], ps[0]]);
        assert!(t.mark_seen(&ps[1], now));
        assert_eq!(order(&t), vec![ps[2], ps[0], ps[1]]);
        assert_eq!(t.get(&ps[0]).unwrap().addrs, vec![addr]);
        assert_eq!(
            t.insert_or_update(peer(0), &[], now),
            InsertOutcome::SelfEntry
        );
    }

    #[test]
    fn ping_before_evict_alive_keeps_old_peer() {
        let local = Key::from_peer(&peer(0));
        let mut t = RoutingTable::new(local, 3);
        let ps = far_peers(&local, 5);
        let now = Instant::now();
        for p in &ps[..3] {
            t.insert_or_update(*p, &[], now);
        }
        assert_eq!(
            t.insert_or_update(ps[3], &[], now),
            InsertOutcome::Pending {
                bucket: 255,
                ping: ps[0]
            }
        );
        // A second candidate while a ping is under way is refused.
        assert_eq!(
            t.insert_or_update(ps[4], &[], now),
            InsertOutcome::Full { bucket: 255 }
        );
        assert_eq!(
            t.on_ping_result(&ps[0], true, now),
            PingOutcome::Kept { dropped: ps[3] }
        );
        let order: Vec<_> = t
            .bucket(255)
            .unwrap()
            .nodes()
            .iter()
            .map(|n| n.peer)
            .collect();
        assert_eq!(order, vec![ps[1], ps[2], ps[0]]);
        assert!(!t.contains(&ps[3]));
        assert!(t.bucket(255).unwrap().pending().is_none());
    }

    #[test]
    fn ping_before_evict_dead_replaces_old_peer() {
        let local = Key::from_peer(&peer(0));
        let mut t = RoutingTable::new(local, 3);
        let ps = far_peers(&local, 4);
        let now = Instant::now();
        for p in &ps[..3] {
            t.insert_or_update(*p, &[], now);
        }
        assert_eq!(
            t.insert_or_update(ps[3], &[], now),
            InsertOutcome::Pending {
                bucket: 255,
                ping: ps[0]
            }
        );
        assert_eq!(
            t.on_ping_result(&ps[0], false, now),
            PingOutcome::Replaced {
                bucket: 255,
                evicted: ps[0],
                inserted: ps[3]
            }
        );
        let order: Vec<_> = t
            .bucket(255)
            .unwrap()
            .nodes()
            .iter()
            .map(|n| n.peer)
            .collect();
        assert_eq!(order, vec![ps[1], ps[2], ps[3]]);
        assert!(!t.contains(&ps[0]));
        assert_eq!(t.len(), 3);
        // A ping result nobody waits for changes nothing.
        assert_eq!(t.on_ping_result(&ps[1], false, now), PingOutcome::NoPending);
        assert!(t.contains(&ps[1]));
    }

    #[test]
    fn closest_matches_brute_force() {
        let local = Key::from_peer(&peer(0));
        let mut t = RoutingTable::new(local, 20);
        let now = Instant::now();
        for i in 1..400 {
            t.insert_or_update(peer(i), &[], now);
        }
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..50 {
            let target = Key::from_raw(rng.gen());
            let mut all: Vec<_> = t
                .iter()
                .map(|n| (n.key.distance(&target), n.peer))
                .collect();
            all.sort();
            let expected: Vec<_> = all.iter().take(20).map(|x| x.1).collect();
            let got: Vec<_> = t.closest(&target, 20).map(|n| n.peer).collect();
            assert_eq!(got, expected);
        }
        // The whole table, in order.
        let target = Key::from_raw(rng.gen());
        let got: Vec<_> = t
            .closest(&target, usize::MAX)
            .map(|n| n.key.distance(&target))
            .collect();
        assert_eq!(got.len(), t.len());
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }
}
