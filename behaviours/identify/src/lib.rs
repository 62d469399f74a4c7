//! libp2p's identify protocol for meshwire: peers tell each other their public key, listen
//! addresses, protocols, implementation and the address they observe for each other.
//!
//! [`Behaviour`] asks every new connection who is on the other end (`/ipfs/id/1.0.0`),
//! answers the remote's questions with our own [`Info`], asks again every
//! [`Config::interval`], and accepts pushed updates (`/ipfs/id/push/1.0.0`); with
//! [`Config::push_listen_addr_updates`] it pushes ours when our addresses or protocols
//! change. What a peer answers is reported as [`Event::Received`] and kept per connected
//! peer ([`Behaviour::info`]); the address it saw us at becomes an external address
//! candidate, and its listen addresses go to the swarm's address book. The wire format is
//! byte-for-byte the one of rust-libp2p and go-libp2p ([`protocol`]).
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_identify::{Behaviour, Config, Event};
//! use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let new_swarm = || -> Result<Swarm<Behaviour>, Box<dyn std::error::Error>> {
//!     let key = Keypair::generate();
//!     let identify = Behaviour::new(Config::new("ipfs/0.1.0", key.public()));
//!     let transport = QuicTransport::new(key, QuicConfig::default())?;
//!     Ok(Swarm::new(transport, identify, SwarmConfig::default()))
//! };
//! let mut a = new_swarm()?;
//! let mut b = new_swarm()?;
//! a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//! let addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = a.next_event().await {
//!         break address;
//!     }
//! };
//! b.dial(meshwire_transport::with_peer_id(&addr, a.local_peer_id()))?;
//!
//! // b asks a who it is (and a asks b); drive both until b has a's answer.
//! let info = loop {
//!     tokio::select! {
//!         ev = b.next_event() => if let SwarmEvent::Behaviour(Event::Received { info, .. }) = ev {
//!             break info;
//!         },
//!         _ = a.next_event() => {}
//!     }
//! };
//! assert_eq!(info.peer_id(), a.local_peer_id());
//! assert_eq!(info.listen_addrs, vec![addr]);
//! assert!(info.protocols.iter().any(|p| p == "/ipfs/id/1.0.0"));
//! assert_eq!(b.behaviour().info(&a.local_peer_id()), Some(&info));
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! Messages are bounded by [`Config::max_message_size`] (4096 bytes by default, checked
//! before allocating); of a peer's message at most [`Config::max_listen_addrs`] (64) distinct
//! listen addresses and [`Config::max_protocols`] (128) distinct protocols are kept, in time
//! linear in the message; every exchange is bounded by [`Config::timeout`] (its stream is
//! reset past it); each connection has at most one identify request of ours outstanding and
//! handles at most [`MAX_INBOUND_STREAMS_PER_CONNECTION`] inbound identify streams at once
//! (more are reset), and at most [`Config::max_exchanges`] exchanges run at once over all
//! connections; at most [`Config::max_queued`] commands wait for the swarm; the info cache
//! holds at most [`Config::cache_size`] peers and adds at most [`MAX_DIAL_ADDRESSES`]
//! addresses to a dial.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod behaviour;
mod config;
mod exchange;
mod local;
pub mod protocol;
mod state;

pub use behaviour::{Behaviour, Event};
pub use config::{
    Config, DEFAULT_MAX_EXCHANGES, DEFAULT_MAX_QUEUED, DEFAULT_PROTOCOL_VERSION,
    MAX_DIAL_ADDRESSES, MAX_EXTERNAL_ADDRESSES, MAX_INBOUND_STREAMS_PER_CONNECTION,
};
pub use protocol::{Error, Info, Limits, PROTOCOL_NAME, PUSH_PROTOCOL_NAME};
