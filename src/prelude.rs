//! `use meshwire::prelude::*;`: what most applications name — the builder, the swarm and its
//! handle, events, addresses, identities, the derive, and the behaviour crates enabled by
//! features (as modules: `ping::Behaviour`, `kad::Behaviour`, ...).

pub use crate::builder::{BuildContext, BuildError, SwarmBuilder};
pub use crate::core::{Keypair, PeerId};
pub use crate::swarm::{
    ConnectedPoint, ConnectionId, DialOpts, HandleError, NetworkBehaviour, OpenStream, Stream,
    StreamProtocol, Swarm, SwarmConfig, SwarmEvent, SwarmHandle, ToSwarm, Toggle,
};
pub use crate::transport::{with_peer_id, Multiaddr, Protocol};

#[cfg(feature = "identify")]
pub use crate::identify;
#[cfg(feature = "kad")]
pub use crate::kad;
#[cfg(feature = "ping")]
pub use crate::ping;
#[cfg(feature = "relay")]
pub use crate::relay;
#[cfg(feature = "rpc")]
pub use crate::rpc;
#[cfg(feature = "swim")]
pub use crate::swim;
