//! A keyed, fast hasher for the member tables.
//!
//! The tables are keyed by [`PeerId`](meshwire_core::PeerId)s that remote peers choose, so the
//! hasher is keyed with a secret drawn from the core's RNG (unknown to remote peers when the
//! core is seeded randomly), and the tables are bounded in size anyway. It is much faster than
//! SipHash in debug builds, which keeps 1,000-node simulations quick, and deterministic for a
//! given seed, which keeps them reproducible.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Builds [`KeyedHasher`]s with one key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyedState {
    key: u64,
}

impl KeyedState {
    pub(crate) fn new(key: u64) -> Self {
        KeyedState { key }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { h: self.key }
    }
}

/// A word-at-a-time multiplicative hasher with a splitmix finalizer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyedHasher {
    h: u64,
}

impl KeyedHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.h = (self.h.rotate_left(26) ^ w).wrapping_mul(MUL);
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Plain indexing rather than chunk iterators: much faster in debug builds.
        let n = bytes.len();
        let mut i = 0;
        while i + 8 <= n {
            let w = u64::from(bytes[i])
                | u64::from(bytes[i + 1]) << 8
                | u64::from(bytes[i + 2]) << 16
                | u64::from(bytes[i + 3]) << 24
                | u64::from(bytes[i + 4]) << 32
                | u64::from(bytes[i + 5]) << 40
                | u64::from(bytes[i + 6]) << 48
                | u64::from(bytes[i + 7]) << 56;
            self.add(w);
            i += 8;
        }
        if i < n {
            let mut w = 0u64;
            let mut shift = 0;
            while i < n {
                w |= u64::from(bytes[i]) << shift;
                shift += 8;
                i += 1;
            }
            self.add(w ^ ((n as u64 & 7) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A `HashMap` with the keyed hasher.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, KeyedState>;

pub(crate) fn keyed_map<K, V>(key: u64) -> KeyedMap<K, V> {
    HashMap::with_hasher(KeyedState::new(key))
}
