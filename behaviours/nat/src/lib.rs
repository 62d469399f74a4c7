//! NAT type detection for meshwire: the [`NatProfile`] of a network — how its NAT maps
//! (RFC 4787: endpoint-independent, address-dependent or address-and-port-dependent, and for
//! the dependent kinds whether new ports are sequential or random) and how it filters
//! (endpoint-independent, address-dependent, address-and-port-dependent) — classified by
//! [`classify`] from what observers report (RFC 5780's tests).
//!
//! The parts:
//! - [`classify`]: the sans-IO classifier.
//! - [`wire`]: the `/meshwire/natprobe/1.0.0` messages (observe, dial-back) and their codec.
//! - [`NatProbeServer`] (feature `swarm`, default): reports the observed address of a
//!   requesting connection and dials the requester back over QUIC from its other sockets
//!   (another port, another IP), rate-limited.
//! - [`NatDetector`] (feature `swarm`): asks several servers, classifies, emits
//!   [`DetectorEvent::Detected`] and serves [`NatDetector::nat_profile`] from a
//!   per-network [`NatCache`] (stale-while-revalidate; a change of listen addresses is a
//!   new network).
//!
//! The protocol, its limits and why dial-backs are QUIC handshakes: `docs/natprobe.md`.
//! [`autonat`]: libp2p AutoNAT v2 — the reachability of individual addresses, client and
//! server, wire-compatible with rust-libp2p (`docs/autonat.md`).
//!
//! ```
//! use std::net::SocketAddr;
//! use meshwire_nat::{classify, Filtering, Mapping, MappingObservation, Observations, PortAllocation};
//!
//! let sock = |s: &str| s.parse::<SocketAddr>().unwrap();
//! let local = sock("10.0.0.2:5000");
//! let obs = Observations {
//!     mappings: vec![
//!         MappingObservation { local, server: sock("198.51.100.10:3478"), mapped: sock("192.0.2.14:20000") },
//!         MappingObservation { local, server: sock("198.51.100.10:3479"), mapped: sock("192.0.2.14:20001") },
//!         MappingObservation { local, server: sock("203.0.113.10:3478"), mapped: sock("192.0.2.14:20002") },
//!     ],
//!     from_other_address: Some(false),
//!     from_other_port: Some(false),
//! };
//! let profile = classify(&obs).unwrap();
//! assert_eq!(profile.mapping, Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: 1 }));
//! assert_eq!(profile.filtering, Filtering::AddressAndPortDependent);
//! assert!(!profile.port_preserving);
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod autonat;
pub mod cache;
mod classify;
#[cfg(feature = "swarm")]
pub mod detector;
#[cfg(feature = "swarm")]
mod metrics;
#[cfg(feature = "swarm")]
pub mod server;
mod shared;
#[cfg(test)]
mod tests;
pub mod wire;

pub use cache::{CacheConfig, Lookup, NatCache, NetworkKey};
pub use classify::{
    classify, ClassifyError, Filtering, Mapping, MappingObservation, NatProfile, Observations,
    PortAllocation, MAX_SEQUENTIAL_DELTA,
};
#[cfg(feature = "swarm")]
pub use detector::{DetectorConfig, DetectorEvent, NatDetector, Observer};
#[cfg(feature = "swarm")]
pub use metrics::NatProbeMetrics;
#[cfg(feature = "swarm")]
pub use server::{NatProbeServer, ServeError, ServerConfig, ServerEvent, PROTOCOL};
pub use shared::SharedNatProfile;
