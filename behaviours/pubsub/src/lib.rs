//! Gossipsub v1.1 for meshwire, on libp2p's wire (`/meshsub/1.1.0`, `/meshsub/1.0.0`).
//!
//! - [`wire`]: the messages of libp2p's pubsub `rpc.proto`, bounded framing with typed
//!   errors, and message signing exactly as libp2p signs (`docs/pubsub.md`).
//! - [`engine`]: the router as a sans-IO state machine ([`GossipsubEngine`]): subscriptions,
//!   mesh maintenance, fanout, heartbeat, IHAVE/IWANT gossip, GRAFT/PRUNE with backoff and
//!   peer exchange, flood publishing, the seen and message caches, the validation hook,
//!   bounded per-peer queues with control before data, and peer scoring v1.1
//!   ([`engine::score`]).
//! - [`Behaviour`] (feature `swarm`, default): the engine over meshwire-swarm streams.
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
mod rng;
pub mod wire;

#[cfg(feature = "swarm")]
pub use behaviour::{Behaviour, Config, Event, PROTOCOL_V1_0, PROTOCOL_V1_1};
pub use engine::{
    Acceptance, GossipMessage, GossipsubConfig, GossipsubEngine, GossipsubEvent, InvalidReason,
    MessageId, PeerKind, PublishError, TopicHash,
};
