//! meshwire-relay-registry: a distributed registry of circuit relays. Relay-capable peers
//! announce themselves in the DHT with signed records carrying their capacity and load; a
//! peer behind a NAT finds the best relay for a target (by RTT and load), and with auto relay
//! reserves on several, keeps them protected and moves to another when one dies or is full.
//! (Macula's `macula_relay_registry`, on meshwire's kademlia and circuit relay v2.)
//!
//! - [`record`]: the signed relay record (format, bounds, keys in the DHT).
//! - [`engine`]: [`RegistryEngine`], the sans-IO state machine — the bounded index with TTL
//!   expiry, registration and refresh, [`engine::select`] (the documented scoring formula),
//!   RTT probes, auto relay.
//! - [`metrics`]: [`RegistryMetrics`] (known relays, selections, failovers, ...).
//! - `Behaviour` (feature `swarm`, on by default): the engine driven over a swarm with
//!   kademlia, the relay server and client, and ping's RTT table.
//! - `sim` (feature `sim`): a seeded simulation of hundreds of engines on a virtual clock.
//!
//! The API, after the seed's functions: `register(endpoint, RegisterOpts { capacity, .. })`,
//! `unregister()`, `is_relay(node)`, `relay_count()`, `relays()`, `find_relay(target)` and
//! `find_relay_with(target, FindOpts { max_results, exclude, max_latency })`, returning
//! [`RelayInfo`]s or [`NoRelaysAvailable`].
//!
//! Two engines wired by hand: a relay registers and publishes its record; a client reads it
//! and finds the relay.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshwire_core::Keypair;
//! use meshwire_relay_registry::{
//!     Action, FindOpts, RegisterError, RegisterOpts, RegistryConfig, RegistryEngine,
//! };
//!
//! let now = Instant::now();
//! let mut relay = RegistryEngine::new(Keypair::generate(), RegistryConfig::default(), now)?;
//! let mut client = RegistryEngine::new(Keypair::generate(), RegistryConfig::default(), now)?;
//! let endpoint: multiaddr::Multiaddr = "/ip4/198.51.100.7/udp/4001/quic-v1".parse()?;
//!
//! // Only a publicly reachable node may register.
//! let refused = relay.register(now, endpoint.clone(), RegisterOpts::default());
//! assert_eq!(refused, Err(RegisterError::NotReachable));
//! relay.handle_external_addr_confirmed(&endpoint);
//! relay.set_load(30);
//! relay.register(now, endpoint.clone(), RegisterOpts { capacity: 100, ..Default::default() })?;
//!
//! // The relay asks its driver to publish its signed record in the DHT ...
//! let record = std::iter::from_fn(|| relay.poll_action())
//!     .find_map(|a| match a { Action::Publish { value, .. } => Some(value), _ => None })
//!     .expect("a record");
//! // ... where the client's driver reads it.
//! client.handle_record(now, Some(relay.local_peer_id()), &record)?;
//! assert!(client.is_relay(&relay.local_peer_id()));
//!
//! let target = Keypair::generate().peer_id();
//! let best = client.find_relay(now, &target)?;
//! assert_eq!((best.node_id, best.capacity, best.current_load), (relay.local_peer_id(), 100, 30));
//! // Excluding it leaves nothing.
//! let opts = FindOpts { exclude: vec![best.node_id], ..FindOpts::default() };
//! assert!(client.find_relay_with(now, &target, opts).is_err());
//!
//! // Without refreshes, the record expires (120 s by default) and the relay is forgotten.
//! client.handle_timeout(now + Duration::from_secs(121));
//! assert_eq!(client.relay_count(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
pub mod behaviour;
pub mod engine;
pub mod metrics;
pub mod record;
#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "swarm")]
pub use behaviour::{AutoRelayError, Behaviour, Event};
pub use engine::{
    Action, AutoRelayConfig, ConfigError, FindOpts, NoRelaysAvailable, RegisterError, RegisterOpts,
    RegistryConfig, RegistryEngine, RegistryEvent, RejectReason, RelayInfo, RemovalReason,
    ReservationFailure, ReservationState, ScoreParams, UnregisterReason,
};
pub use metrics::RegistryMetrics;
pub use record::{RecordError, RelayRecord};
