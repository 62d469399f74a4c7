//! Bounded, expiring storage of records and provider announcements.
//!
//! [`RecordStore`] keeps at most `max_records` records of at most `max_value_bytes` each. Every
//! record expires (after its own TTL, capped by the configured one). Records this node
//! *originated* (`put_record` by the local user) are republished every `publication_interval`;
//! records stored for others are re-replicated to the currently closest peers every
//! `replication_interval`. The engine runs those jobs; the store only says what is due.
//!
//! [`ProviderStore`] keeps, per key, at most `max_providers_per_key` providers (preferring the
//! local node and then the most recent announcements), each with at most
//! `max_addrs_per_provider` addresses of at most [`MAX_ADDR_LEN`] bytes, and at most
//! `max_provider_keys` keys: with the defaults, remotes can make it hold at most
//! 1024 × 20 × 8 × 256 bytes (40 MiB) of addresses.
//! Announcements expire after `provider_ttl`; keys the local node provides are re-announced
//! every `provider_publication_interval`.
//!
//! Everything is kept in ordered maps so iteration (and hence a simulation run) is
//! deterministic.
//!
//! ```
//! use meshwire_kad::protocol::Record;
//! use meshwire_kad::store::{RecordStore, StoreConfig};
//! use std::time::{Duration, Instant};
//!
//! let mut store = RecordStore::new(StoreConfig::default());
//! let now = Instant::now();
//! store.put(Record::new("k", b"v".to_vec()), false, now).unwrap();
//! assert_eq!(store.get(&"k".into(), now).unwrap().value, b"v");
//! let later = now + StoreConfig::default().record_ttl + Duration::from_secs(1);
//! assert!(store.get(&"k".into(), later).is_none());
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use thiserror::Error;

use crate::protocol::{KadPeer, Record, RecordKey, MAX_ADDR_LEN};

/// Limits and intervals of the stores. Defaults follow rust-libp2p.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most records kept (1024).
    pub max_records: usize,
    /// Largest value accepted, in bytes (65 KiB, rust-libp2p's). The engine also refuses a
    /// record that would not fit in one message of
    /// [`KadConfig::max_message_size`](crate::KadConfig::max_message_size) (16 KiB by
    /// default, which then is the bound that applies): such a record could never be sent.
    pub max_value_bytes: usize,
    /// Longest a record is kept (36 h); a record's own shorter TTL wins.
    pub record_ttl: Duration,
    /// How often originated records are republished (24 h); `None` disables it.
    pub publication_interval: Option<Duration>,
    /// How often stored records are re-replicated (1 h); `None` disables it.
    pub replication_interval: Option<Duration>,
    /// Most providers kept per key (20).
    pub max_providers_per_key: usize,
    /// Most addresses kept per provider (8); longer lists keep their first ones.
    pub max_addrs_per_provider: usize,
    /// Most provider keys kept (1024).
    pub max_provider_keys: usize,
    /// How long a provider announcement is kept (48 h).
    pub provider_ttl: Duration,
    /// How often the local node re-announces what it provides (12 h); `None` disables it.
    pub provider_publication_interval: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_records: 1024,
            max_value_bytes: 65 * 1024,
            record_ttl: Duration::from_secs(36 * 3600),
            publication_interval: Some(Duration::from_secs(24 * 3600)),
            replication_interval: Some(Duration::from_secs(3600)),
            max_providers_per_key: 20,
            max_addrs_per_provider: 8,
            max_provider_keys: 1024,
            provider_ttl: Duration::from_secs(48 * 3600),
            provider_publication_interval: Some(Duration::from_secs(12 * 3600)),
        }
    }
}

/// Why a record or provider was not stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store holds `max_records` records already.
    #[error("record store is full")]
    MaxRecords,
    /// The value is larger than `max_value_bytes`.
    #[error("value of {0} bytes is too large")]
    ValueTooLarge(usize),
    /// A message carrying the record would exceed the message bound, so it could never be
    /// sent (see [`Record::max_message_len`]).
    #[error("a message carrying the record takes {len} bytes, over the {max}-byte message limit")]
    RecordTooLarge {
        /// The length of the largest message carrying it.
        len: usize,
        /// The message bound.
        max: usize,
    },
    /// The provider store holds `max_provider_keys` keys already.
    #[error("provider store is full")]
    MaxProviderKeys,
}

/// A record as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record (its `ttl` field is not maintained; see [`StoredRecord::expires`]).
    pub record: Record,
    /// When it expires.
    pub expires: Instant,
    /// Whether the local node originated it (and so republishes it).
    pub originated: bool,
    /// When it is next due for republication (originated) or replication (others).
    pub next_publish: Option<Instant>,
}

impl StoredRecord {
    /// The record with `ttl` set to its remaining lifetime at `now`, as sent on the wire.
    pub fn to_record(&self, now: Instant) -> Record {
        let mut r = self.record.clone();
        r.ttl = Some(self.expires.saturating_duration_since(now));
        r
    }
}

/// Bounded, expiring record storage.
#[derive(Clone, Debug)]
pub struct RecordStore {
    config: StoreConfig,
    records: BTreeMap<RecordKey, StoredRecord>,
}

impl RecordStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        RecordStore {
            config,
            records: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Stores (or replaces) a record. Its expiry is `now` + the smaller of its own TTL and the
    /// configured one. `originated` marks records the local node publishes itself.
    pub fn put(
        &mut self,
        record: Record,
        originated: bool,
        now: Instant,
    ) -> Result<(), StoreError> {
        if record.value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge(record.value.len()));
        }
        if !self.records.contains_key(&record.key) && self.records.len() >= self.config.max_records
        {
            self.expire(now);
            if self.records.len() >= self.config.max_records {
                return Err(StoreError::MaxRecords);
            }
        }
        let ttl = record
            .ttl
            .map_or(self.config.record_ttl, |t| t.min(self.config.record_ttl));
        let interval = if originated {
            self.config.publication_interval
        } else {
            self.config.replication_interval
        };
        // A record originated earlier stays originated when a peer stores it back to us.
        let originated = originated || self.records.get(&record.key).is_some_and(|r| r.originated);
        let next_publish = match self.records.get(&record.key) {
            Some(old) if old.originated == originated => old.next_publish,
            _ => interval.map(|i| now + i),
        };
        let mut record = record;
        record.ttl = None;
        self.records.insert(
            record.key.clone(),
            StoredRecord {
                record,
                expires: now + ttl,
                originated,
                next_publish,
            },
        );
        Ok(())
    }

    /// The live record stored under `key`.
    pub fn get(&self, key: &RecordKey, now: Instant) -> Option<&Record> {
        self.get_stored(key, now).map(|r| &r.record)
    }

    /// The live stored record under `key`, with its bookkeeping.
    pub fn get_stored(&self, key: &RecordKey, now: Instant) -> Option<&StoredRecord> {
        self.records.get(key).filter(|r| r.expires > now)
    }

    /// Removes the record under `key`.
    pub fn remove(&mut self, key: &RecordKey) -> Option<StoredRecord> {
        self.records.remove(key)
    }

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| r.expires > now);
        before - self.records.len()
    }

    /// Number of records (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// All stored records, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &StoredRecord> {
        self.records.values()
    }

    /// The live records due for republication / replication at `now`; their next due time is
    /// pushed one interval ahead. Originated records come back with `originated == true`.
    pub fn take_due(&mut self, now: Instant) -> Vec<StoredRecord> {
        let mut due = Vec::new();
        for r in self.records.values_mut() {
            if r.expires <= now {
                continue;
            }
            if let Some(t) = r.next_publish {
                if t <= now {
                    let interval = if r.originated {
                        self.config.publication_interval
                    } else {
                        self.config.replication_interval
                    };
                    r.next_publish = interval.map(|i| now + i);
                    due.push(r.clone());
                }
            }
        }
        due
    }

    /// The earliest time a record expires or falls due.
    pub fn next_event(&self) -> Option<Instant> {
        self.records
            .values()
            .flat_map(|r| [Some(r.expires), r.next_publish])
            .flatten()
            .min()
    }
}

/// One provider of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The provider.
    pub provider: PeerId,
    /// Its addresses as announced.
    pub addrs: Vec<Multiaddr>,
    /// When the announcement expires.
    pub expires: Instant,
}

/// Bounded, expiring provider storage.
#[derive(Clone, Debug)]
pub struct ProviderStore {
    config: StoreConfig,
    local: PeerId,
    providers: BTreeMap<RecordKey, Vec<ProviderRecord>>,
    /// Keys the local node provides, with their next re-announcement.
    provided: BTreeMap<RecordKey, Option<Instant>>,
}

impl ProviderStore {
    /// An empty store for the local peer `local`.
    pub fn new(local: PeerId, config: StoreConfig) -> Self {
        ProviderStore {
            config,
            local,
            providers: BTreeMap::new(),
            provided: BTreeMap::new(),
        }
    }

    /// Adds or refreshes `provider` for `key`. When the key already has the maximum number of
    /// providers, the announcement expiring first is replaced (never the local node's).
    /// Addresses longer than [`MAX_ADDR_LEN`] are dropped and at most
    /// `max_addrs_per_provider` are kept.
    pub fn add(
        &mut self,
        key: RecordKey,
        mut provider: KadPeer,
        now: Instant,
    ) -> Result<(), StoreError> {
        provider.addrs.retain(|a| a.len() <= MAX_ADDR_LEN);
        provider.addrs.truncate(self.config.max_addrs_per_provider);
        if !self.providers.contains_key(&key)
            && self.providers.len() >= self.config.max_provider_keys
        {
            self.expire(now);
            if self.providers.len() >= self.config.max_provider_keys {
                return Err(StoreError::MaxProviderKeys);
            }
        }
        let expires = now + self.config.provider_ttl;
        let list = self.providers.entry(key).or_default();
        list.retain(|p| p.expires > now);
        if let Some(p) = list.iter_mut().find(|p| p.provider == provider.id) {
            p.expires = expires;
            if !provider.addrs.is_empty() {
                p.addrs = provider.addrs;
            }
            return Ok(());
        }
        let record = ProviderRecord {
            provider: provider.id,
            addrs: provider.addrs,
            expires,
        };
        if list.len() < self.config.max_providers_per_key {
            list.push(record);
        } else if let Some(victim) = list
            .iter_mut()
            .filter(|p| p.provider != self.local)
            .min_by_key(|p| p.expires)
        {
            *victim = record;
        }
        Ok(())
    }

    /// The live providers of `key`.
    pub fn get(&self, key: &RecordKey, now: Instant) -> Vec<&ProviderRecord> {
        self.providers
            .get(key)
            .map(|l| l.iter().filter(|p| p.expires > now).collect())
            .unwrap_or_default()
    }

    /// Marks `key` as provided by the local node (re-announced periodically from `now`).
    pub fn start_providing(&mut self, key: RecordKey, now: Instant) {
        let next = self.config.provider_publication_interval.map(|i| now + i);
        self.provided.insert(key, next);
    }

    /// Stops providing `key` locally (remote announcements expire by themselves).
    pub fn stop_providing(&mut self, key: &RecordKey) {
        self.provided.remove(key);
        if let Some(list) = self.providers.get_mut(key) {
            list.retain(|p| p.provider != self.local);
            if list.is_empty() {
                self.providers.remove(key);
            }
        }
    }

    /// The keys the local node provides.
    pub fn provided(&self) -> impl Iterator<Item = &RecordKey> {
        self.provided.keys()
    }

    /// Keys the local node provides that are due for re-announcement at `now`; their next due
    /// time is pushed one interval ahead.
    pub fn take_due(&mut self, now: Instant) -> Vec<RecordKey> {
        let interval = self.config.provider_publication_interval;
        let mut due = Vec::new();
        for (k, next) in self.provided.iter_mut() {
            if next.is_some_and(|t| t <= now) {
                *next = interval.map(|i| now + i);
                due.push(k.clone());
            }
        }
        due
    }

    /// Drops expired announcements and empty keys; returns how many announcements.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        self.providers.retain(|_, l| {
            let before = l.len();
            l.retain(|p| p.expires > now);
            n += before - l.len();
            !l.is_empty()
        });
        n
    }

    /// Number of keys with providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether no key has providers.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The earliest time an announcement expires or a local key falls due.
    pub fn next_event(&self) -> Option<Instant> {
        let exp = self
            .providers
            .values()
            .flat_map(|l| l.iter().map(|p| p.expires))
            .min();
        let due = self.provided.values().flatten().min().copied();
        exp.into_iter().chain(due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    fn small() -> StoreConfig {
        StoreConfig {
            max_records: 2,
            max_value_bytes: 4,
            record_ttl: Duration::from_secs(100),
            publication_interval: Some(Duration::from_secs(50)),
            replication_interval: Some(Duration::from_secs(10)),
            max_providers_per_key: 2,
            max_addrs_per_provider: 2,
            max_provider_keys: 2,
            provider_ttl: Duration::from_secs(100),
            provider_publication_interval: Some(Duration::from_secs(30)),
        }
    }

    #[test]
    fn record_limits() {
        let now = Instant::now();
        let mut s = RecordStore::new(small());
        assert_eq!(
            s.put(Record::new("a", vec![0; 5]), false, now),
            Err(StoreError::ValueTooLarge(5))
        );
        s.put(Record::new("a", vec![1]), false, now).unwrap();
        s.put(Record::new("b", vec![2]), false, now).unwrap();
        assert_eq!(
            s.put(Record::new("c", vec![3]), false, now),
            Err(StoreError::MaxRecords)
        );
        // Replacing an existing key is fine when full.
        s.put(Record::new("a", vec![9]), false, now).unwrap();
        assert_eq!(s.get(&"a".into(), now).unwrap().value, vec![9]);
        // Once one expires there is room again.
        let later = now + Duration::from_secs(101);
        s.put(Record::new("c", vec![3]), false, later).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn record_expiry_uses_smaller_ttl() {
        let now = Instant::now();
        let mut s = RecordStore::new(small());
        let mut r = Record::new("short", vec![1]);
        r.ttl = Some(Duration::from_secs(5));
        s.put(r, false, now).unwrap();
        let mut r = Record::new("long", vec![1]);
        r.ttl = Some(Duration::from_secs(1000));
        s.put(r, false, now).unwrap();
        assert!(s
            .get(&"short".into(), now + Duration::from_secs(4))
            .is_some());
        assert!(s
            .get(&"short".into(), now + Duration::from_secs(5))
            .is_none());
        assert!(s
            .get(&"long".into(), now + Duration::from_secs(99))
            .is_some());
        assert!(s
            .get(&"long".into(), now + Duration::from_secs(100))
            .is_none());
        let stored = s
            .get_stored(&"long".into(), now + Duration::from_secs(40))
            .unwrap();
        assert_eq!(
            stored.to_record(now + Duration::from_secs(40)).ttl,
            Some(Duration::from_secs(60))
        );
        assert_eq!(s.expire(now + Duration::from_secs(6)), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn republish_and_replication_schedule() {
        let now = Instant::now();
        let mut s = RecordStore::new(small());
        s.put(Record::new("mine", vec![1]), true, now).unwrap();
        s.put(Record::new("theirs", vec![1]), false, now).unwrap();
        assert!(s.take_due(now + Duration::from_secs(9)).is_empty());
        let due = s.take_due(now + Duration::from_secs(10));
        assert_eq!(due.len(), 1);
        assert!(!due[0].originated);
        assert!(s.take_due(now + Duration::from_secs(19)).is_empty());
        let due = s.take_due(now + Duration::from_secs(50));
        let keys: Vec<_> = due
            .iter()
            .map(|r| (r.record.key.clone(), r.originated))
            .collect();
        assert_eq!(keys, vec![("mine".into(), true), ("theirs".into(), false)]);
        // A peer storing our record back does not make it "not originated".
        s.put(
            Record::new("mine", vec![1]),
            false,
            now + Duration::from_secs(51),
        )
        .unwrap();
        assert!(
            s.get_stored(&"mine".into(), now + Duration::from_secs(51))
                .unwrap()
                .originated
        );
        assert!(s.next_event().is_some());
    }

    #[test]
    fn provider_limits_and_expiry() {
        let now = Instant::now();
        let me = peer(0);
        let mut s = ProviderStore::new(me, small());
        let key = RecordKey::from("k");
        s.add(key.clone(), KadPeer::new(me, vec![]), now).unwrap();
        s.add(
            key.clone(),
            KadPeer::new(peer(1), vec![]),
            now + Duration::from_secs(1),
        )
        .unwrap();
        // Full: the oldest remote announcement is replaced, never the local one.
        s.add(
            key.clone(),
            KadPeer::new(peer(2), vec![]),
            now + Duration::from_secs(2),
        )
        .unwrap();
        let ids: Vec<_> = s
            .get(&key, now + Duration::from_secs(2))
            .iter()
            .map(|p| p.provider)
            .collect();
        assert_eq!(ids, vec![me, peer(2)]);
        // Key limit.
        s.add("k2".into(), KadPeer::new(peer(1), vec![]), now)
            .unwrap();
        assert_eq!(
            s.add("k3".into(), KadPeer::new(peer(1), vec![]), now),
            Err(StoreError::MaxProviderKeys)
        );
        // Expiry.
        assert!(s
            .get(&key, now + Duration::from_secs(101))
            .iter()
            .all(|p| p.provider == peer(2)));
        assert_eq!(s.expire(now + Duration::from_secs(200)), 3);
        assert!(s.is_empty());
    }

    #[test]
    fn provider_addresses_are_bounded() {
        let now = Instant::now();
        let mut s = ProviderStore::new(peer(0), small());
        let long: Multiaddr = format!("/dns4/{}/udp/1/quic-v1", "x".repeat(MAX_ADDR_LEN))
            .parse()
            .unwrap();
        let addrs: Vec<Multiaddr> = std::iter::once(long)
            .chain((0..5).map(|i| format!("/ip4/10.0.0.{i}/udp/1/quic-v1").parse().unwrap()))
            .collect();
        s.add("k".into(), KadPeer::new(peer(1), addrs.clone()), now)
            .unwrap();
        assert_eq!(s.get(&"k".into(), now)[0].addrs, addrs[1..3].to_vec());
        // A refresh is bounded too.
        s.add("k".into(), KadPeer::new(peer(1), addrs[2..].to_vec()), now)
            .unwrap();
        assert_eq!(s.get(&"k".into(), now)[0].addrs, addrs[2..4].to_vec());
    }

    #[test]
    fn provider_republish_schedule() {
        let now = Instant::now();
        let mut s = ProviderStore::new(peer(0), small());
        s.start_providing("svc".into(), now);
        assert!(s.take_due(now + Duration::from_secs(29)).is_empty());
        assert_eq!(
            s.take_due(now + Duration::from_secs(30)),
            vec![RecordKey::from("svc")]
        );
        assert!(s.take_due(now + Duration::from_secs(31)).is_empty());
        s.stop_providing(&"svc".into());
        assert_eq!(s.provided().count(), 0);
    }
}
