//! Gossipsub v1.1 with v1.2's IDONTWANT for meshwire, on libp2p's wire (`/meshsub/1.2.0`,
//! `/meshsub/1.1.0`, `/meshsub/1.0.0`).
//!
//! - [`wire`]: the messages of libp2p's pubsub `rpc.proto`, bounded framing with typed
//!   errors, and message signing exactly as libp2p signs (`docs/pubsub.md`).
//! - [`engine`]: the router as a sans-IO state machine ([`GossipsubEngine`]): subscriptions,
//!   mesh maintenance, fanout, heartbeat, IHAVE/IWANT gossip, GRAFT/PRUNE with backoff and
//!   peer exchange, flood publishing, the seen and message caches, the validation hook,
//!   bounded per-peer queues with control before data, peer scoring v1.1
//!   ([`engine::score`]) and v1.2's IDONTWANT (large messages announced to mesh peers on
//!   first receipt; peers' IDONTWANT kept a few heartbeats, bounded, and honoured).
//! - [`metrics`]: Prometheus metrics ([`GossipsubMetrics`]), topic labels bounded.
//! - [`topic`]: dot-separated topic names, wildcard patterns (`*`, `#`) and realms; pattern
//!   subscribers get IHAVE/IWANT gossip for the topics their patterns match.
//! - [`qos`]: QoS 1, at least once ([`Qos::AtLeastOnce`], `publish_with`): every connected
//!   subscriber that speaks `/meshwire/pubsub/qos/1.0.0` acknowledges the message, silent
//!   ones get it retransmitted (bounded, doubling waits) until a typed verdict
//!   ([`GossipsubEvent::QosDelivered`] / [`GossipsubEvent::QosDeliveryFailed`]); receivers
//!   deliver each message id once however it arrived. Cost per publish and QoS subscriber:
//!   its direct copy (+5 bytes of mark), one batched ack (≈ id + 2 bytes, one stream per
//!   batch), and one retransmission of the message per loss; plain gossipsub peers are
//!   untouched and never tracked.
//! - [`Behaviour`] (feature `swarm`, default): the engine over meshwire-swarm streams.
//! - `sim` (feature `sim`): a seeded discrete-event simulator of many engines on a virtual
//!   clock, with loss, churn and Sybil attacks, and its two standard runs (`sim::scenario`).
//!
//! # Example: two swarms on loopback exchange a message (feature `swarm`)
//!
//! ```
//! # #[cfg(feature = "swarm")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use meshwire_core::Keypair;
//! use meshwire_pubsub::{Behaviour, Config, Event};
//! use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! let config = Config::default()
//!     .with_heartbeat_interval(Duration::from_millis(100))
//!     .with_heartbeat_initial_delay(Duration::from_millis(100));
//! let mut swarms = Vec::new();
//! for _ in 0..2 {
//!     let key = Keypair::generate();
//!     let behaviour = Behaviour::new(&key, config.clone())?;
//!     let transport = QuicTransport::new(key, QuicConfig::default())?;
//!     let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
//!     swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//!     swarm.behaviour_mut().subscribe("chat");
//!     swarms.push(swarm);
//! }
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = swarms[1].next_event().await {
//!         break address;
//!     }
//! };
//! let b = swarms[1].local_peer_id();
//! swarms[0].add_peer_address(b, addr);
//! swarms[0].dial(b)?;
//! // Publish once `b`'s subscription has arrived; drive both swarms until `b` has the message.
//! let (mut a, mut b) = (swarms.remove(0), swarms.remove(0));
//! let mut published = false;
//! loop {
//!     tokio::select! {
//!         ev = a.next_event() => if let SwarmEvent::Behaviour(Event::Subscribed { .. }) = ev {
//!             if !published {
//!                 a.behaviour_mut().publish("chat", b"hello".to_vec())?;
//!                 published = true;
//!             }
//!         },
//!         ev = b.next_event() => if let SwarmEvent::Behaviour(Event::Message { message, .. }) = ev {
//!             assert_eq!(message.data, b"hello");
//!             assert_eq!(message.source, Some(a.local_peer_id()));
//!             break;
//!         },
//!     }
//! }
//! # Ok(()) }
//! # #[cfg(not(feature = "swarm"))] fn main() {}
//! ```
//!
//! # Example: sign a message, frame it, read it back and verify it
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_pubsub::wire::{self, sign};
//!
//! let key = Keypair::generate();
//! let message = sign::sign(&key, 1, "chat".into(), b"hello".to_vec());
//! let frame = wire::encode_frame(&wire::Rpc { publish: vec![message], ..Default::default() });
//! let (rpc, _) = wire::decode_frame(&frame, wire::DEFAULT_MAX_TRANSMIT_SIZE)?.expect("whole frame");
//! assert_eq!(sign::verify(&rpc.publish[0])?.source, key.peer_id());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
pub mod behaviour;
pub mod engine;
pub mod metrics;
pub mod qos;
mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod topic;
pub mod wire;

#[cfg(feature = "swarm")]
pub use behaviour::{
    Behaviour, Config, Event, PROTOCOL_V1_0, PROTOCOL_V1_1, PROTOCOL_V1_2, QOS_PROTOCOL,
};
pub use engine::{
    Acceptance, ChokeConfig, ChokeStats, GossipMessage, GossipsubConfig, GossipsubEngine,
    GossipsubEvent, IDontWantStats, InvalidReason, MessageId, MessageIdFn, PeerKind,
    PeerScoreParams, PeerScoreThresholds, PublishError, TopicHash, TopicScoreParams,
};
pub use metrics::GossipsubMetrics;
pub use qos::{Qos, QosConfig};
