//! Service discovery on top of the DHT's provider records.
//!
//! A node offering a service (a relay, a pubsub topic, an RPC service) [`Discovery::announce`]s
//! it: the engine becomes a provider of the service key and sends ADD_PROVIDER to the `k` peers
//! closest to it (and re-announces periodically). A node looking for the service calls
//! [`Discovery::lookup`], which answers from a local cache while the entry is fresh and runs a
//! GET_PROVIDERS lookup otherwise; feed the engine's events to [`Discovery::on_event`] to
//! complete lookups.
//!
//! The service key is the SHA2-256 *multihash* of `"meshwire/service/" + name`, i.e. the bytes
//! `0x12 0x20` followed by `SHA-256("meshwire/service/<name>")` (34 bytes). Provider keys in
//! libp2p DHTs are multihashes by convention (go-libp2p serves keys up to 80 bytes), so any
//! libp2p DHT server stores and serves meshwire service announcements like content
//! announcements.
//!
//! The cache holds at most [`DiscoveryConfig::max_cached_services`] services (the entry
//! expiring first is evicted), each for [`DiscoveryConfig::cache_ttl`]; only non-empty results
//! are cached, so a service announced after a failed lookup is found by the next one.
//!
//! ```
//! use meshwire_kad::discovery::{service_key, Discovery, DiscoveryConfig, Lookup};
//! use meshwire_kad::{KadConfig, KadEngine};
//! use meshwire_core::Keypair;
//! use std::time::Instant;
//!
//! let key = service_key("relay");
//! assert_eq!(&key.as_bytes()[..2], &[0x12, 0x20]);
//!
//! let me = Keypair::from_seed_for_tests(1).peer_id();
//! let mut engine = KadEngine::with_seed(me, KadConfig::default(), 1);
//! let mut discovery = Discovery::new(DiscoveryConfig::default());
//! let now = Instant::now();
//! discovery.announce(&mut engine, "relay", now).unwrap();
//! // Alone in the network: the lookup runs (and will find only ourselves).
//! assert!(matches!(discovery.lookup(&mut engine, "relay", now), Lookup::Started(_)));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::engine::{KadEngine, KadEvent};
use crate::protocol::{KadPeer, RecordKey};
use crate::query::{QueryId, QueryResult};
use crate::store::StoreError;

/// Prefix of the hashed service name.
pub const SERVICE_KEY_PREFIX: &str = "meshwire/service/";

/// The provider key of `service`: the SHA2-256 multihash (`0x12 0x20 ‖ digest`) of
/// `"meshwire/service/" + service`.
pub fn service_key(service: &str) -> RecordKey {
    let mut h = Sha256::new();
    h.update(SERVICE_KEY_PREFIX.as_bytes());
    h.update(service.as_bytes());
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&[0x12, 0x20]);
    key.extend_from_slice(&h.finalize());
    RecordKey::new(key)
}

/// Configuration of [`Discovery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// How long a lookup result is served from the cache (5 min).
    pub cache_ttl: Duration,
    /// Most services cached (256).
    pub max_cached_services: usize,
    /// A lookup stops once this many providers are known (20).
    pub max_providers: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            cache_ttl: Duration::from_secs(300),
            max_cached_services: 256,
            max_providers: 20,
        }
    }
}

/// The answer of [`Discovery::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Fresh providers from the cache.
    Cached(Vec<KadPeer>),
    /// A GET_PROVIDERS query runs (or was already running for this service); its result comes
    /// as [`DiscoveryEvent::Found`] from [`Discovery::on_event`].
    Started(QueryId),
}

/// What [`Discovery::on_event`] learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A lookup finished (`providers` may be empty).
    Found {
        /// The service.
        service: String,
        /// Its providers.
        providers: Vec<KadPeer>,
    },
}

#[derive(Clone, Debug)]
struct CacheEntry {
    providers: Vec<KadPeer>,
    expires: Instant,
}

/// Announces and finds services through provider records, with a bounded TTL cache.
#[derive(Clone, Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    cache: BTreeMap<String, CacheEntry>,
    pending: HashMap<QueryId, String>,
}

impl Discovery {
    /// A discovery helper with an empty cache.
    pub fn new(config: DiscoveryConfig) -> Self {
        Discovery {
            config,
            cache: BTreeMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Announces the local node as a provider of `service`.
    pub fn announce(
        &mut self,
        engine: &mut KadEngine,
        service: &str,
        now: Instant,
    ) -> Result<QueryId, StoreError> {
        engine.start_providing(service_key(service), now)
    }

    /// Stops announcing `service`.
    pub fn withdraw(&mut self, engine: &mut KadEngine, service: &str) {
        engine.stop_providing(&service_key(service));
    }

    /// Providers of `service`: from the cache if fresh, else from a GET_PROVIDERS lookup.
    pub fn lookup(&mut self, engine: &mut KadEngine, service: &str, now: Instant) -> Lookup {
        if let Some(providers) = self.cached(service, now) {
            return Lookup::Cached(providers.to_vec());
        }
        if let Some((id, _)) = self.pending.iter().find(|(_, s)| s.as_str() == service) {
            return Lookup::Started(*id);
        }
        let id = engine.get_providers(service_key(service), Some(self.config.max_providers), now);
        self.pending.insert(id, service.to_owned());
        Lookup::Started(id)
    }

    /// The fresh cached providers of `service`.
    pub fn cached(&self, service: &str, now: Instant) -> Option<&[KadPeer]> {
        self.cache
            .get(service)
            .filter(|e| e.expires > now)
            .map(|e| e.providers.as_slice())
    }

    /// Number of cached services (stale ones included until evicted).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Feeds an engine event; completes the lookups this helper started.
    pub fn on_event(&mut self, event: &KadEvent, now: Instant) -> Option<DiscoveryEvent> {
        let KadEvent::QueryFinished {
            id,
            result: QueryResult::GetProviders(result),
            ..
        } = event
        else {
            return None;
        };
        let service = self.pending.remove(id)?;
        let providers = match result {
            Ok(ok) => ok.providers.clone(),
            Err(e) => {
                tracing::debug!(%service, error = %e, "service lookup failed");
                Vec::new()
            }
        };
        if !providers.is_empty() {
            self.insert(service.clone(), providers.clone(), now);
        }
        Some(DiscoveryEvent::Found { service, providers })
    }

    fn insert(&mut self, service: String, providers: Vec<KadPeer>, now: Instant) {
        self.cache.retain(|_, e| e.expires > now);
        if !self.cache.contains_key(&service) && self.cache.len() >= self.config.max_cached_services
        {
            let victim = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(s, _)| s.clone());
            if let Some(v) = victim {
                self.cache.remove(&v);
            }
        }
        if self.config.max_cached_services > 0 {
            self.cache.insert(
                service,
                CacheEntry {
                    providers,
                    expires: now + self.config.cache_ttl,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::KadConfig;
    use crate::query::GetProvidersOk;
    use meshwire_core::Keypair;

    #[test]
    fn service_key_is_sha256_multihash_of_prefixed_name() {
        let k = service_key("pubsub");
        let digest = Sha256::digest(b"meshwire/service/pubsub");
        assert_eq!(k.as_bytes().len(), 34);
        assert_eq!(&k.as_bytes()[2..], &digest[..]);
        assert_ne!(service_key("a"), service_key("b"));
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let me = Keypair::from_seed_for_tests(1).peer_id();
        let mut engine = KadEngine::with_seed(me, KadConfig::default(), 1);
        let cfg = DiscoveryConfig {
            cache_ttl: Duration::from_secs(10),
            max_cached_services: 2,
            max_providers: 5,
        };
        let mut d = Discovery::new(cfg);
        let now = Instant::now();
        let p = KadPeer::new(Keypair::from_seed_for_tests(2).peer_id(), vec![]);
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            let t = now + Duration::from_secs(i as u64);
            let Lookup::Started(id) = d.lookup(&mut engine, s, t) else {
                panic!()
            };
            // A second lookup while one runs reuses it.
            assert_eq!(d.lookup(&mut engine, s, t), Lookup::Started(id));
            let ev = KadEvent::QueryFinished {
                id,
                origin: crate::query::QueryOrigin::User,
                result: QueryResult::GetProviders(Ok(GetProvidersOk {
                    key: service_key(s),
                    providers: vec![p.clone()],
                })),
                stats: crate::query::QueryStats::new(t),
            };
            assert_eq!(
                d.on_event(&ev, t),
                Some(DiscoveryEvent::Found {
                    service: s.to_string(),
                    providers: vec![p.clone()]
                })
            );
        }
        assert_eq!(d.cache_len(), 2);
        assert!(
            d.cached("a", now + Duration::from_secs(2)).is_none(),
            "oldest evicted"
        );
        assert_eq!(
            d.lookup(&mut engine, "c", now + Duration::from_secs(3)),
            Lookup::Cached(vec![p.clone()])
        );
        assert!(
            d.cached("c", now + Duration::from_secs(12)).is_none(),
            "expired"
        );
    }
}
