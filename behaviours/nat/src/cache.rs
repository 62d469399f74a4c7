//! The per-network cache of [`NatProfile`]s: served fresh, then stale while a refresh runs
//! (stale-while-revalidate), then dropped. Sans-IO: time comes in as `Instant`s.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::NatProfile;

/// A network, as the set of local listen addresses (their text, sorted): a change of local
/// addresses is a change of network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetworkKey(BTreeSet<String>);

impl NetworkKey {
    /// The key of a set of local addresses.
    pub fn new<I: IntoIterator<Item = S>, S: ToString>(addrs: I) -> Self {
        NetworkKey(addrs.into_iter().map(|a| a.to_string()).collect())
    }

    /// Whether there are no local addresses.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the cache holds for a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Younger than the refresh age.
    Fresh(NatProfile),
    /// Past the refresh age but not the maximum age: serve it and refresh.
    Stale(NatProfile),
    /// Nothing (or too old).
    Missing,
}

impl Lookup {
    /// The profile to serve, fresh or stale.
    pub fn profile(&self) -> Option<NatProfile> {
        match self {
            Lookup::Fresh(p) | Lookup::Stale(p) => Some(*p),
            Lookup::Missing => None,
        }
    }
}

/// The cache's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Age after which an entry is refreshed in the background (default 10 minutes).
    pub refresh_after: Duration,
    /// Age after which an entry is no longer served (default 1 hour).
    pub max_age: Duration,
    /// Networks remembered (default 16; the oldest entry goes first).
    pub max_networks: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_after: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
            max_networks: 16,
        }
    }
}

/// Profiles per network with their time of detection.
#[derive(Debug, Default)]
pub struct NatCache {
    config: CacheConfig,
    entries: HashMap<NetworkKey, (NatProfile, Instant)>,
}

impl NatCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        NatCache {
            config,
            entries: HashMap::new(),
        }
    }

    /// What the cache holds for `key` at `now`.
    pub fn lookup(&self, key: &NetworkKey, now: Instant) -> Lookup {
        match self.entries.get(key) {
            Some((p, at)) => {
                let age = now.saturating_duration_since(*at);
                if age < self.config.refresh_after {
                    Lookup::Fresh(*p)
                } else if age < self.config.max_age {
                    Lookup::Stale(*p)
                } else {
                    Lookup::Missing
                }
            }
            None => Lookup::Missing,
        }
    }

    /// When `key`'s entry turns stale (`None`: no entry).
    pub fn refresh_at(&self, key: &NetworkKey) -> Option<Instant> {
        self.entries
            .get(key)
            .map(|(_, at)| *at + self.config.refresh_after)
    }

    /// Stores `profile` for `key`, detected at `now`.
    pub fn insert(&mut self, key: NetworkKey, profile: NatProfile, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_networks {
            let oldest = self.entries.iter().min_by_key(|(_, (_, at))| *at);
            if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (profile, now));
    }

    /// Forgets `key`'s entry.
    pub fn remove(&mut self, key: &NetworkKey) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Filtering, Mapping};

    #[test]
    fn fresh_then_stale_then_missing_per_network() {
        let mut cache = NatCache::new(CacheConfig {
            refresh_after: Duration::from_secs(10),
            max_age: Duration::from_secs(30),
            max_networks: 2,
        });
        let p = NatProfile {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::AddressDependent,
            port_preserving: true,
        };
        let t0 = Instant::now();
        let home = NetworkKey::new(["/ip4/10.0.0.2/udp/4001/quic-v1"]);
        let cafe = NetworkKey::new(["/ip4/192.168.1.9/udp/4001/quic-v1"]);
        cache.insert(home.clone(), p, t0);
        assert_eq!(cache.lookup(&home, t0), Lookup::Fresh(p));
        assert_eq!(cache.lookup(&cafe, t0), Lookup::Missing);
        assert_eq!(cache.refresh_at(&home), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            cache.lookup(&home, t0 + Duration::from_secs(10)),
            Lookup::Stale(p)
        );
        assert_eq!(
            cache.lookup(&home, t0 + Duration::from_secs(30)),
            Lookup::Missing
        );
        // At the network limit the oldest entry goes.
        cache.insert(cafe.clone(), p, t0 + Duration::from_secs(1));
        let third = NetworkKey::new(["/ip4/172.16.0.5/udp/4001/quic-v1"]);
        cache.insert(third.clone(), p, t0 + Duration::from_secs(2));
        assert_eq!(
            cache.lookup(&home, t0 + Duration::from_secs(2)),
            Lookup::Missing
        );
        assert_eq!(
            cache.lookup(&cafe, t0 + Duration::from_secs(2)),
            Lookup::Fresh(p)
        );
    }
}
