//! [`SwarmBuilder`]: one way to make a swarm from a keypair.
//!
//! The builder owns the key, so the behaviour is built with it in hand
//! ([`BuildContext::peer_id`], [`BuildContext::public`]); QUIC is the transport, and the
//! circuit-relay client's transport is composed in only if the behaviour takes a relay
//! client ([`BuildContext::relay_client`]) — there is no separate switch to forget. The
//! connection manager is the default [`BasicConnMgr`](crate::connmgr::BasicConnMgr), one
//! made from a [`connmgr::Config`](crate::connmgr::Config), or a handle of the application's
//! own that it keeps typed. Listen addresses can be given up front.
//!
//! ```
//! use meshwire::prelude::*;
//!
//! #[derive(NetworkBehaviour)]
//! struct App {
//!     ping: ping::Behaviour,
//!     identify: identify::Behaviour,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let swarm = SwarmBuilder::new(Keypair::generate())
//!     .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
//!     .build(|ctx| App {
//!         ping: ping::Behaviour::default(),
//!         identify: identify::Behaviour::new(identify::Config::new("/app/1.0.0", ctx.public())),
//!     })?;
//! let (handle, mut events) = swarm.spawn();
//! while let Some(event) = events.recv().await {
//!     if let SwarmEvent::NewListenAddr { address, .. } = event {
//!         println!("{} listening on {address}", handle.local_peer_id());
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::Instant;

use meshwire_connmgr::{
    BasicConnMgr, ConnManager, ConnManagerHandle, ConnMgrError, DynConnManager,
};
use meshwire_core::{Keypair, PeerId, PublicKey};
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig};
use meshwire_transport::quic::{QuicConfig, QuicSockets, QuicTransport};
use meshwire_transport::{Multiaddr, Transport, TransportError};
use thiserror::Error;

/// Why [`SwarmBuilder::build`] failed.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The QUIC transport could not be made (its TLS configuration).
    #[error("transport: {0}")]
    Transport(#[source] TransportError),
    /// A listen address was refused.
    #[error("listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        error: TransportError,
    },
    /// The connection manager's configuration is invalid.
    #[error("connection manager: {0}")]
    ConnManager(#[from] ConnMgrError),
    /// The behaviour's constructor failed ([`SwarmBuilder::try_build`]).
    #[error("behaviour: {0}")]
    Behaviour(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Makes a [`Swarm`]; see the [module docs](self).
pub struct SwarmBuilder {
    key: Keypair,
    quic: QuicConfig,
    config: SwarmConfig,
    conn_manager: ConnManagerChoice,
    listen: Vec<Multiaddr>,
    #[cfg(feature = "relay")]
    relay_client: meshwire_relay::client::Config,
}

impl std::fmt::Debug for SwarmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmBuilder")
            .field("peer", &self.key.peer_id())
            .field("config", &self.config)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

enum ConnManagerChoice {
    Default,
    Config(meshwire_connmgr::Config),
    Handle(DynConnManager),
}

/// What the behaviour's constructor gets: the node's identity, and the relay client if it
/// wants one.
pub struct BuildContext<'a> {
    key: &'a Keypair,
    sockets: QuicSockets,
    #[cfg(feature = "relay")]
    relay: RelayParts,
}

#[cfg(feature = "relay")]
struct RelayParts {
    config: meshwire_relay::client::Config,
    transport: Option<meshwire_relay::client::Transport>,
}

impl BuildContext<'_> {
    /// The node's keypair.
    pub fn key(&self) -> &Keypair {
        self.key
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// The node's public key (identify's config takes it).
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The QUIC transport's sockets: datagrams from a listener's socket and sockets handed
    /// over for a dial, what the hole-punching `Connector` needs (`Connector::new`).
    pub fn quic_sockets(&self) -> QuicSockets {
        self.sockets.clone()
    }

    /// The circuit-relay client's behaviour half; taking it composes the client's transport
    /// half with QUIC, so the swarm can listen through relays and dial through circuits.
    /// Call it once: a second call gets a client whose transport is not in the swarm.
    #[cfg(feature = "relay")]
    pub fn relay_client(&mut self) -> meshwire_relay::client::Behaviour {
        let (transport, behaviour) =
            meshwire_relay::client::new(self.key.clone(), self.relay.config.clone());
        if self.relay.transport.is_none() {
            self.relay.transport = Some(transport);
        } else {
            tracing::warn!("BuildContext::relay_client called twice; the second client is inert");
        }
        behaviour
    }
}

impl SwarmBuilder {
    /// A builder for the node with identity `key`.
    pub fn new(key: Keypair) -> Self {
        SwarmBuilder {
            key,
            quic: QuicConfig::default(),
            config: SwarmConfig::default(),
            conn_manager: ConnManagerChoice::Default,
            listen: Vec::new(),
            #[cfg(feature = "relay")]
            relay_client: meshwire_relay::client::Config::default(),
        }
    }

    /// A builder for a node with a fresh identity.
    pub fn with_new_identity() -> Self {
        Self::new(Keypair::generate())
    }

    /// The QUIC settings (default [`QuicConfig::default`]).
    pub fn quic(mut self, quic: QuicConfig) -> Self {
        self.quic = quic;
        self
    }

    /// The swarm's settings, changed from their defaults by `f`.
    pub fn config(mut self, f: impl FnOnce(SwarmConfig) -> SwarmConfig) -> Self {
        self.config = f(self.config);
        self
    }

    /// A [`BasicConnMgr`] with this configuration instead of the default one (reach it later
    /// with [`Swarm::conn_manager`] or [`SwarmHandle::conn_manager`](crate::swarm::SwarmHandle::conn_manager)).
    pub fn conn_manager_config(mut self, config: meshwire_connmgr::Config) -> Self {
        self.conn_manager = ConnManagerChoice::Config(config);
        self
    }

    /// The application's own connection manager; it keeps `handle` typed (decaying tags,
    /// metrics), the swarm gets the same manager.
    pub fn conn_manager<M: ConnManager + 'static>(mut self, handle: &ConnManagerHandle<M>) -> Self {
        self.conn_manager = ConnManagerChoice::Handle(handle.to_dyn());
        self
    }

    /// Settings of the relay client, if the behaviour takes one.
    #[cfg(feature = "relay")]
    pub fn relay_client_config(mut self, config: meshwire_relay::client::Config) -> Self {
        self.relay_client = config;
        self
    }

    /// Listens on `addr` once built (repeatable); the actual address is reported by a
    /// `NewListenAddr` event.
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Builds the swarm, with the behaviour `make` returns.
    ///
    /// # Errors
    ///
    /// [`BuildError`]: the transport, a listen address or the connection manager's settings.
    pub fn build<B: NetworkBehaviour>(
        self,
        make: impl FnOnce(&mut BuildContext<'_>) -> B,
    ) -> Result<Swarm<B>, BuildError> {
        self.try_build(|ctx| Ok::<B, std::convert::Infallible>(make(ctx)))
    }

    /// [`build`](Self::build) with a fallible behaviour constructor.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and [`BuildError::Behaviour`] with `make`'s error.
    pub fn try_build<B, E>(
        self,
        make: impl FnOnce(&mut BuildContext<'_>) -> Result<B, E>,
    ) -> Result<Swarm<B>, BuildError>
    where
        B: NetworkBehaviour,
        E: std::error::Error + Send + Sync + 'static,
    {
        let quic =
            QuicTransport::new(self.key.clone(), self.quic).map_err(BuildError::Transport)?;
        let mut ctx = BuildContext {
            key: &self.key,
            sockets: quic.sockets(),
            #[cfg(feature = "relay")]
            relay: RelayParts {
                config: self.relay_client,
                transport: None,
            },
        };
        let behaviour = make(&mut ctx).map_err(|e| BuildError::Behaviour(Box::new(e)))?;
        #[cfg(feature = "relay")]
        let transport: Box<dyn Transport> = match ctx.relay.transport.take() {
            Some(relay) => Box::new(meshwire_transport::TransportExt::or_transport(quic, relay)),
            None => Box::new(quic),
        };
        #[cfg(not(feature = "relay"))]
        let transport: Box<dyn Transport> = Box::new(quic);
        let conn_manager = match self.conn_manager {
            ConnManagerChoice::Default => None,
            ConnManagerChoice::Config(c) => {
                Some(ConnManagerHandle::new(BasicConnMgr::new(c, Instant::now())?).to_dyn())
            }
            ConnManagerChoice::Handle(h) => Some(h),
        };
        let mut swarm = match conn_manager {
            Some(cm) => Swarm::with_conn_manager(transport, behaviour, self.config, cm),
            None => Swarm::new(transport, behaviour, self.config),
        };
        for addr in self.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|error| BuildError::Listen { addr, error })?;
        }
        Ok(swarm)
    }
}
