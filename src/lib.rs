//! meshwire: a modular peer-to-peer networking stack over QUIC, wire-compatible with libp2p.
//!
//! This facade re-exports the workspace crates, one feature per behaviour:
//! - [`core`]: identities ([`core::Keypair`], [`core::PeerId`]), connection ids.
//! - [`transport`]: QUIC with libp2p TLS, multistream-select, the in-memory transport.
//! - [`swarm`]: the [`swarm::Swarm`], the [`swarm::NetworkBehaviour`] trait and (feature
//!   `macros`) `#[derive(NetworkBehaviour)]`.
//! - [`connmgr`]: the tag-based connection manager (go-libp2p's interface).
//! - [`ping`] (feature `ping`), [`identify`] (feature `identify`), [`kad`] (feature `kad`:
//!   the Kademlia DHT behaviour — `kad::Behaviour`, `kad::Config`, `kad::Event` — its
//!   sans-IO engine and service discovery), [`swim`] (feature
//!   `swim`: SWIM + Lifeguard membership over QUIC datagrams, its sans-IO core and simulator),
//!   [`relay`] (feature `relay`: circuit relay v2 server and client; relayed connections are
//!   Noise + Yamux over a relay stream, composed with QUIC by
//!   [`transport::TransportExt::or_transport`]), `relay_registry` (feature `relay-registry`:
//!   relays announced in the DHT, chosen by RTT and load, auto relay with failover;
//!   `docs/relay-registry.md`), [`request_response`] (feature
//!   `request-response`: one request and one response per stream, behind a `Codec`; JSON and
//!   CBOR codecs with features `request-response-json` / `request-response-cbor`), `rpc`
//!   (feature `rpc`: named procedures discovered through the DHT, provider selection,
//!   failover, result cache; `docs/rpc.md`), `pubsub` (feature `pubsub`: gossipsub v1.2 on
//!   `/meshsub/1.2.0`, libp2p's wire; `docs/pubsub.md`), `holepunch` (feature `holepunch`:
//!   DCUtR, `/libp2p/dcutr`, upgrading relayed connections to direct QUIC connections, and
//!   the connector choosing DCUtR, port prediction, the birthday spray or the relay;
//!   `docs/holepunch.md`), `nat` (feature `nat`, also part of `holepunch`: NAT type
//!   detection over `/meshwire/natprobe/1.0.0` and AutoNAT v2; `docs/natprobe.md`), `upgrade` (feature `upgrade`: ordered, lossless message sessions
//!   that move from a relayed connection to a direct one by themselves and back on failure;
//!   `docs/upgrade.md`).
//!
//! ```
//! use meshwire::core::Keypair;
//!
//! let peer = Keypair::generate().peer_id();
//! assert!(peer.to_string().starts_with("12D3KooW"));
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod builder;
pub mod prelude;

pub use builder::{BuildContext, BuildError, SwarmBuilder};
pub use meshwire_connmgr as connmgr;
pub use meshwire_core as core;
/// The Kademlia DHT (feature `kad`): [`kad::Behaviour`], configured by one [`kad::Config`]
/// (the engine's settings included), reporting one flat [`kad::Event`].
///
/// ```
/// use meshwire::prelude::*;
/// use meshwire::kad::{QueryOrigin, QueryResult};
/// use std::time::Duration;
///
/// #[derive(NetworkBehaviour)]
/// struct App {
///     identify: identify::Behaviour,
///     kad: kad::Behaviour,
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut swarm = SwarmBuilder::new(Keypair::generate()).build(|ctx| App {
///     identify: identify::Behaviour::new(identify::Config::from_public_key(ctx.public())),
///     kad: kad::Behaviour::new(
///         ctx.peer_id(),
///         kad::Config::new().with_alpha(5).with_record_ttl(Duration::from_secs(3600)),
///     ),
/// })?;
/// // No peer yet: the record is found in the local store (quorum 1 counts the local copy).
/// swarm.behaviour_mut().kad.put_record(kad::Record::new("greeting", b"hello".to_vec()), 1)?;
/// let query = swarm.behaviour_mut().kad.get_record("greeting".into(), 1);
/// loop {
///     if let SwarmEvent::Behaviour(AppEvent::Kad(kad::Event::QueryFinished {
///         id,
///         origin: QueryOrigin::User,
///         result: QueryResult::GetValue(Ok(found)),
///         ..
///     })) = swarm.next_event().await
///     {
///         assert_eq!((id, found.records[0].record.value.as_slice()), (query, &b"hello"[..]));
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
/// Hole punching (feature `holepunch`): DCUtR and the connector (DCUtR, port prediction,
/// the birthday spray or the relay, from both NAT profiles), see `docs/holepunch.md`.
#[cfg(feature = "holepunch")]
pub use meshwire_holepunch as holepunch;
#[cfg(feature = "identify")]
pub use meshwire_identify as identify;
#[cfg(feature = "kad")]
pub use meshwire_kad as kad;
/// NAT type detection and AutoNAT v2 (feature `nat`): see `docs/natprobe.md` and
/// `docs/autonat.md`.
#[cfg(feature = "nat")]
pub use meshwire_nat as nat;
#[cfg(feature = "ping")]
pub use meshwire_ping as ping;
/// Gossipsub v1.1 (feature `pubsub`): see `docs/pubsub.md`.
#[cfg(feature = "pubsub")]
pub use meshwire_pubsub as pubsub;
#[cfg(feature = "relay")]
pub use meshwire_relay as relay;
/// The relay registry (feature `relay-registry`): see `docs/relay-registry.md`.
#[cfg(feature = "relay-registry")]
pub use meshwire_relay_registry as relay_registry;
#[cfg(feature = "request-response")]
pub use meshwire_request_response as request_response;
/// RPC (feature `rpc`): named procedures over the DHT; see `docs/rpc.md`.
#[cfg(feature = "rpc")]
pub use meshwire_rpc as rpc;
pub use meshwire_swarm as swarm;
#[cfg(feature = "swim")]
pub use meshwire_swim as swim;
pub use meshwire_transport as transport;
#[cfg(feature = "upgrade")]
pub use meshwire_upgrade as upgrade;
