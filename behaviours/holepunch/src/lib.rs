//! Hole punching for meshwire: DCUtR (`/libp2p/dcutr`, libp2p/specs `relay/DCUtR.md`)
//! upgrades a relayed connection to a direct QUIC connection, wire-compatible with
//! rust-libp2p's `libp2p-dcutr` and go-libp2p's `holepunch`.
//!
//! * [`protocol`]: the `HolePunch` message (`CONNECT` = 100, `SYNC` = 300, `ObsAddrs`),
//!   typed and bounded (4 KiB), with golden-byte tests.
//! * [`engine`]: the sans-IO state machine of both roles — RTT measured over the relayed
//!   connection, the initiator dialing at RTT/2 after `SYNC`, up to 3 attempts each with
//!   its own timing, cancellation, a typed [`AttemptOutcome`] for
//!   every attempt.
//! * [`Behaviour`] (feature `swarm`, default): the engine on a swarm, with
//!   [`HolepunchMetrics`]. Put it next to the relay client; every relayed connection is
//!   upgraded when both sides run it. `docs/holepunch.md` tells how it runs.
//! * [`connect`]: the strategy ([`choose`]: DCUtR, DCUtR with port prediction, the
//!   birthday spray or skip, from both peers' NAT profiles), the sans-IO birthday spray
//!   ([`SprayConfig`], [`connect::spray::ProbeSchedule`]), the `/meshwire/spray/1.0.0`
//!   messages, and (feature `swarm`) the [`Connector`]: DCUtR inside, started only where
//!   the table says, the spray run over the relayed connection, [`ConnectorMetrics`];
//!   [`NatTraversal`]: the connector with a `meshwire_nat::NatDetector` giving it our NAT
//!   profile by itself.
//!
//! ```
//! # #[cfg(feature = "swarm")] {
//! use meshwire_holepunch as holepunch;
//! use meshwire_swarm::NetworkBehaviour;
//!
//! let mut registry = prometheus_client::registry::Registry::default();
//! let behaviour = holepunch::Behaviour::new(holepunch::Config::default())
//!     .with_metrics(holepunch::HolepunchMetrics::register(&mut registry));
//! assert_eq!(behaviour.protocols(), vec![holepunch::PROTOCOL]);
//! assert_eq!(holepunch::PROTOCOL.as_str(), "/libp2p/dcutr");
//! # }
//!
//! // The connector's choice for a random symmetric NAT facing a port-restricted cone: the
//! // birthday spray, with a 95 % chance per try at the default numbers.
//! use meshwire_holepunch::connect::{Filtering, Mapping, NatProfile, PortAllocation};
//! use meshwire_holepunch::{choose, Method, SprayConfig};
//! let random = NatProfile {
//!     mapping: Mapping::AddressAndPortDependent(PortAllocation::Random),
//!     filtering: Filtering::AddressAndPortDependent,
//!     port_preserving: false,
//! };
//! let cone = NatProfile {
//!     mapping: Mapping::EndpointIndependent,
//!     filtering: Filtering::AddressAndPortDependent,
//!     port_preserving: true,
//! };
//! assert_eq!(choose(Some(&random), Some(&cone)), Method::Spray { we_spray: true });
//! assert_eq!(choose(Some(&random), Some(&random)).label(), "skip");
//! let spray = SprayConfig::default();
//! assert!(spray.hit_probability() > 0.95 && spray.packet_budget() == 1024);
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod connect;
pub mod engine;
pub mod protocol;

#[cfg(feature = "swarm")]
mod behaviour;
#[cfg(feature = "swarm")]
mod metrics;

#[cfg(feature = "swarm")]
pub use behaviour::{Behaviour, Config, Event, PROTOCOL};
#[cfg(feature = "swarm")]
pub use connect::behaviour::{
    ConnectError, ConnectOutcome, Connector, ConnectorConfig, ConnectorEvent,
    PROTOCOL as SPRAY_PROTOCOL,
};
#[cfg(feature = "swarm")]
pub use connect::metrics::ConnectorMetrics;
pub use connect::spray::SprayConfig;
#[cfg(feature = "swarm")]
pub use connect::traversal::{NatTraversal, TraversalEvent};
pub use connect::{choose, Method, SkipReason};
pub use engine::{AttemptOutcome, DialTiming, HolepunchConfig, HolepunchEvent, Role, UpgradeError};
#[cfg(feature = "swarm")]
pub use metrics::HolepunchMetrics;
