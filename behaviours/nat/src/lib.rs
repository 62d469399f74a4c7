//! NAT type detection for meshwire: the [`NatProfile`] of a network — how its NAT maps
//! (RFC 4787: endpoint-independent, address-dependent or address-and-port-dependent, and for
//! the dependent kinds whether new ports are sequential or random) and how it filters
//! (endpoint-independent, address-dependent, address-and-port-dependent) — classified by
//! [`classify`] from what observers report (RFC 5780's tests).
//!
//! This crate is the sans-IO classifier. The probe protocol that gathers the observations
//! over QUIC (`/meshwire/natprobe/1.0.0`), AutoNAT v2 and the per-network cache are not built
//! yet (`docs/holepunch.md`); the NAT lab (`interop-tests/tests/natlab.rs`) feeds the
//! classifier plain UDP observations of its five NATs.
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

mod classify;
#[cfg(test)]
mod tests;

pub use classify::{
    classify, ClassifyError, Filtering, Mapping, MappingObservation, NatProfile, Observations,
    PortAllocation, MAX_SEQUENTIAL_DELTA,
};
