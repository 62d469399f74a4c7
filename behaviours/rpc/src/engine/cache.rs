//! The engine's two bounded caches: providers per name ([`ProviderCache`]) and results of
//! idempotent calls per (name, payload hash) ([`ResultCache`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use sha2::{Digest, Sha256};

use crate::name::ProcedureName;

/// The providers of each name found in the DHT, for a TTL, at most `max_names` names (the
/// entry expiring first is evicted to make room) and `max_per_name` providers each.
#[derive(Debug)]
pub(crate) struct ProviderCache {
    entries: HashMap<ProcedureName, (Vec<PeerId>, Instant)>,
    ttl: Duration,
    max_names: usize,
    max_per_name: usize,
}

impl ProviderCache {
    pub(crate) fn new(ttl: Duration, max_names: usize, max_per_name: usize) -> Self {
        ProviderCache {
            entries: HashMap::new(),
            ttl,
            max_names: max_names.max(1),
            max_per_name,
        }
    }

    /// The fresh providers of `name`, `None` if unknown or expired.
    pub(crate) fn get(&self, name: &ProcedureName, now: Instant) -> Option<&[PeerId]> {
        self.entries
            .get(name)
            .filter(|(_, expires)| *expires > now)
            .map(|(p, _)| p.as_slice())
    }

    pub(crate) fn insert(&mut self, name: ProcedureName, mut peers: Vec<PeerId>, now: Instant) {
        peers.sort();
        peers.dedup();
        peers.truncate(self.max_per_name);
        if !self.entries.contains_key(&name) && self.entries.len() >= self.max_names {
            self.entries.retain(|_, (_, e)| *e > now);
            if self.entries.len() >= self.max_names {
                if let Some(first) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(n, _)| n.clone())
                {
                    self.entries.remove(&first);
                }
            }
        }
        self.entries
            .insert(name, (peers, super::after(now, self.ttl)));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The cache key of a call: its name and the SHA-256 of its payload.
pub(crate) type ResultKey = (ProcedureName, [u8; 32]);

pub(crate) fn result_key(name: &ProcedureName, payload: &[u8]) -> ResultKey {
    (name.clone(), Sha256::digest(payload).into())
}

/// Results of idempotent calls, each for its TTL; at most `max_entries` results and
/// `max_bytes` of result bytes, the oldest evicted first.
#[derive(Debug)]
pub(crate) struct ResultCache {
    entries: HashMap<ResultKey, (Vec<u8>, Instant, u64)>,
    order: VecDeque<(ResultKey, u64)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    seq: u64,
}

impl ResultCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        ResultCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
            seq: 0,
        }
    }

    pub(crate) fn get(&mut self, key: &ResultKey, now: Instant) -> Option<Vec<u8>> {
        match self.entries.get(key) {
            Some((value, expires, _)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&mut self, key: &ResultKey) {
        if let Some((value, _, _)) = self.entries.remove(key) {
            self.bytes -= value.len();
        }
    }

    pub(crate) fn insert(&mut self, key: ResultKey, value: Vec<u8>, ttl: Duration, now: Instant) {
        if self.max_entries == 0 || value.len() > self.max_bytes || ttl.is_zero() {
            return;
        }
        self.remove(&key);
        self.seq += 1;
        self.bytes += value.len();
        self.order.push_back((key.clone(), self.seq));
        self.entries
            .insert(key, (value, super::after(now, ttl), self.seq));
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            // Skip order entries of results replaced since.
            if self.entries.get(&old).is_some_and(|(_, _, s)| *s == seq) {
                self.remove(&old);
            }
        }
        // Keep the order queue from growing with replaced results.
        if self.order.len() > 2 * self.max_entries.max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|(_, _, e)| e == s));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ProcedureName {
        ProcedureName::new(s).unwrap()
    }

    #[test]
    fn results_expire_and_stay_within_their_bounds() {
        let now = Instant::now();
        let mut c = ResultCache::new(3, 100);
        let n = name("org.x.y");
        let k = |p: &[u8]| result_key(&n, p);
        c.insert(k(b"a"), vec![1; 10], Duration::from_secs(1), now);
        assert_eq!(c.get(&k(b"a"), now), Some(vec![1; 10]));
        assert_eq!(c.get(&k(b"b"), now), None);
        assert_eq!(c.get(&k(b"a"), now + Duration::from_secs(1)), None);
        assert_eq!(c.len(), 0);
        for i in 0..10u8 {
            c.insert(k(&[i]), vec![i; 10], Duration::from_secs(9), now);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&k(&[9]), now), Some(vec![9; 10]));
        assert_eq!(c.get(&k(&[0]), now), None);
        // The byte bound: two 40-byte results fit, a third evicts the oldest.
        let mut c = ResultCache::new(10, 100);
        for i in 0..3u8 {
            c.insert(k(&[i]), vec![i; 40], Duration::from_secs(9), now);
        }
        assert_eq!((c.len(), c.bytes()), (2, 80));
        // Larger than the whole cache: not kept.
        c.insert(k(b"big"), vec![0; 101], Duration::from_secs(9), now);
        assert_eq!(c.get(&k(b"big"), now), None);
        // Replacing a result many times keeps the queue bounded.
        for _ in 0..1000 {
            c.insert(k(b"same"), vec![0; 1], Duration::from_secs(9), now);
        }
        assert!(c.order.len() <= 32);
    }

    #[test]
    fn providers_expire_and_the_cache_is_bounded() {
        let now = Instant::now();
        let mut c = ProviderCache::new(Duration::from_secs(5), 2, 2);
        let p: Vec<PeerId> = (0..3)
            .map(|i| meshwire_core::Keypair::from_seed_for_tests(i).peer_id())
            .collect();
        c.insert(name("org.a.b"), p.clone(), now);
        assert_eq!(c.get(&name("org.a.b"), now).map(|p| p.len()), Some(2));
        assert!(c
            .get(&name("org.a.b"), now + Duration::from_secs(5))
            .is_none());
        c.insert(name("org.c.d"), vec![p[0]], now + Duration::from_secs(1));
        c.insert(name("org.e.f"), vec![p[0]], now + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        // The entry expiring first went.
        assert!(c
            .get(&name("org.a.b"), now + Duration::from_secs(2))
            .is_none());
    }
}
