//! RPC: named procedures discovered through the DHT, provider selection, failover and a
//! result cache, on `/meshwire/rpc/1.0.0` (spec: `docs/rpc.md`).
//!
//! ```
//! use std::time::Instant;
//! use meshwire_core::Keypair;
//! use meshwire_rpc::{CallOpts, ProcedureName, RpcAction, RpcConfig, RpcEngine};
//!
//! let me = Keypair::from_seed_for_tests(1).peer_id();
//! let mut engine = RpcEngine::new(me, RpcConfig::default());
//! let name: ProcedureName = "org.example.billing.charge".parse()?;
//! engine.call(Instant::now(), name.clone(), b"42".to_vec(), CallOpts::default().idempotent())?;
//! // The providers are not known yet: the driver looks them up in the DHT.
//! assert_eq!(engine.poll_action(), Some(RpcAction::FindProviders { name }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Over swarms (feature `swarm`, default): a provider registers a handler, a caller that
//! knows the provider only as a kademlia peer finds it through the DHT and calls it:
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_rpc::{Behaviour, CallOpts, Config, Event, ProcedureName, RpcEvent};
//! use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::memory::MemoryTransport;
//!
//! fn node() -> Swarm<Behaviour> {
//!     let peer = Keypair::generate().peer_id();
//!     let kad = meshwire_kad::Behaviour::new(peer, meshwire_kad::Config::default());
//!     Swarm::new(MemoryTransport::new(peer), Behaviour::new(kad, Config::default()), SwarmConfig::default())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name: ProcedureName = "org.example.greeter.hello".parse()?;
//! let (mut provider, mut caller) = (node(), node());
//! provider.behaviour_mut().register(name.clone(), |who: Vec<u8>| async move {
//!     Ok([b"hello, ".as_slice(), &who].concat())
//! })?;
//! provider.listen_on("/memory/0".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = provider.next_event().await { break address; }
//! };
//! caller.behaviour_mut().kad_mut().add_address(provider.local_peer_id(), addr);
//! let id = caller.behaviour_mut().call(name, b"ada".to_vec(), CallOpts::default())?;
//! let greeting = loop {
//!     tokio::select! {
//!         ev = caller.next_event() => if let SwarmEvent::Behaviour(Event::Rpc(
//!             RpcEvent::CallFinished { id: done, result, .. })) = ev {
//!             if done == id { break result?; }
//!         },
//!         _ = provider.next_event() => {}
//!     }
//! };
//! assert_eq!(greeting, b"hello, ada");
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`name`]: reverse-DNS [`ProcedureName`]s and [`Realm`]s, validated with typed errors.
//! - [`wire`]: the request and response messages, bounded, typed decode errors.
//! - [`engine`]: [`RpcEngine`], the sans-IO caller side (selection, failover, caches,
//!   interests).
//! - `behaviour` (feature `swarm`, default): `Behaviour`, the engine over kademlia
//!   (provider announcements and lookups) and request-response (the exchanges), with the
//!   local handler registry.
//! - [`metrics`]: the Prometheus metrics ([`RpcMetrics`]).

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
mod behaviour;
pub mod engine;
pub mod metrics;
pub mod name;
pub mod wire;

#[cfg(feature = "swarm")]
pub use behaviour::{
    Behaviour, Config, Event, HandlerFuture, HandlerId, HandlerResult, PendingCall, RegisterError,
    RTT_POLL_INTERVAL,
};
#[cfg(feature = "serde")]
pub use behaviour::{TypedCall, TypedCallError};
pub use engine::{
    AttemptError, CallError, CallId, CallOpts, Candidate, RpcAction, RpcConfig, RpcEngine,
    RpcEvent, Selector, Strategy,
};
pub use metrics::RpcMetrics;
pub use name::{NameError, ProcedureName, Realm};
pub use wire::{RemoteError, WireError, PROTOCOL};
