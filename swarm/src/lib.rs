//! meshwire's swarm: [`NetworkBehaviour`]s composed over one transport.
//!
//! A [`Swarm`] owns a [`Transport`](meshwire_transport::Transport), a behaviour (usually
//! several composed with `#[derive(NetworkBehaviour)]`) and a connection manager. It listens,
//! dials, negotiates every inbound stream and routes it by protocol to the behaviour that
//! claimed it, opens the outbound streams behaviours ask for, enforces the limits of
//! [`SwarmConfig`], and reports what happens as [`SwarmEvent`]s. There is no per-connection
//! handler: a behaviour sees every peer at once and owns its streams' futures.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_swarm::{DummyBehaviour, Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let new_swarm = || -> Result<Swarm<DummyBehaviour>, Box<dyn std::error::Error>> {
//!     let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
//!     Ok(Swarm::new(transport, DummyBehaviour, SwarmConfig::default()))
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
//! // Drive both swarms until b is connected to a.
//! loop {
//!     tokio::select! {
//!         ev = b.next_event() => if let SwarmEvent::ConnectionEstablished { peer_id, .. } = ev {
//!             assert_eq!(peer_id, a.local_peer_id());
//!             break;
//!         },
//!         _ = a.next_event() => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Keep-alive: the idle rule
//!
//! A connection stays open while any of these holds: a stream handed out on it (or requested
//! and still being opened) is open and keeps it alive ([`Stream::set_keep_alive`], on by
//! default); a behaviour's [`NetworkBehaviour::connection_keep_alive`] returns `true` for it;
//! the connection manager protects its peer ([`connmgr::ConnManager::protect`], e.g. a relay);
//! or the last of these ended less than [`SwarmConfig::idle_connection_timeout`] ago. Otherwise the swarm closes it
//! (cause [`ConnectionCloseCause::Idle`]). Independently, the connection manager may trim it
//! ([`ConnectionCloseCause::Trimmed`]).

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod behaviour;
mod config;
pub mod control;
pub mod dial;
mod error;
mod event;
pub mod handle;
pub mod metrics;
pub mod protocol;
pub mod stream;
mod swarm;
pub mod timer;
pub mod toggle;
pub mod toolkit;

pub use behaviour::{
    CloseConnection, ConnManagerCommand, DummyBehaviour, FromSwarm, InboundStream,
    NetworkBehaviour, OpenStream, OutboundStream, OutboundStreamResult, StreamRequestId, ToSwarm,
};
pub use config::{StreamRate, SwarmConfig};
pub use control::{AlreadyRegistered, IncomingStreams, StreamControl};
pub use dial::{DialOpts, PeerCondition};
pub use error::{ConnectionDenied, DialError, LimitExceeded, LimitKind, ListenError, StreamError};
pub use event::{ConnectedPoint, ConnectionCloseCause, SwarmEvent};
pub use handle::{HandleError, SwarmHandle};
pub use meshwire_connmgr as connmgr;
pub use meshwire_core::{ConnectionId, Direction, PeerId};
pub use meshwire_rcmgr as rcmgr;
pub use meshwire_transport::{CloseReason, ListenerId, Multiaddr, TransportError};
pub use metrics::SwarmMetrics;
pub use protocol::StreamProtocol;
pub use stream::Stream;
pub use swarm::{ConnectionInfo, Swarm, MAX_CLOSE_REASON};
pub use timer::Timer;
pub use toggle::Toggle;

#[cfg(feature = "macros")]
pub use meshwire_swarm_derive::NetworkBehaviour;
