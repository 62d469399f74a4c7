//! [`SwarmHandle`]: a cloneable, `Send` handle that commands a swarm running on its own task.
//!
//! A swarm makes progress only while it is polled, so it usually runs on a task of its own
//! ([`Swarm::spawn`](crate::Swarm::spawn)). The handle reaches it from anywhere: every method
//! sends a command over one bounded channel ([`HANDLE_QUEUE`] commands) that the swarm serves
//! in its poll, and awaits the answer. Behaviour-specific commands go through
//! [`SwarmHandle::with_behaviour`], a closure run on the swarm's task with `&mut B`, so a
//! behaviour's whole typed API (kademlia's `put_record`, the relay client's reservations, ...)
//! is reachable without any plumbing in the behaviour. The connection manager is reached
//! directly ([`SwarmHandle::conn_manager`]): it is thread-safe, and a trim through it closes
//! what it trims.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_swarm::{DummyBehaviour, Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = || -> Result<Swarm<DummyBehaviour>, Box<dyn std::error::Error>> {
//!     let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
//!     Ok(Swarm::new(transport, DummyBehaviour, SwarmConfig::default()))
//! };
//! let (a, mut a_events) = node()?.spawn();
//! let (b, _b_events) = node()?.spawn();
//! a.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?).await?;
//! let addr = loop {
//!     if let Some(SwarmEvent::NewListenAddr { address, .. }) = a_events.recv().await {
//!         break address;
//!     }
//! };
//! // From any task: dial, then look at the connections.
//! let b2 = b.clone();
//! let dialer = tokio::spawn(async move {
//!     b2.dial(meshwire_transport::with_peer_id(&addr, a.local_peer_id())).await
//! });
//! dialer.await??;
//! loop {
//!     if let Some(SwarmEvent::ConnectionEstablished { .. }) = a_events.recv().await {
//!         break;
//!     }
//! }
//! assert_eq!(b.connections().await?.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use meshwire_connmgr::DynConnManager;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::{ListenerId, Multiaddr, TransportError};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::NetworkBehaviour;
use crate::dial::DialOpts;
use crate::error::DialError;
use crate::swarm::ConnectionInfo;

/// Commands a swarm holds for its handles at most; a handle's call waits while it is full
/// (so a burst of commands slows the callers, not the swarm's memory).
pub const HANDLE_QUEUE: usize = 256;

/// Events a spawned swarm holds for its event receiver at most; the swarm waits while it is
/// full (a slow application slows the swarm instead of growing a queue).
pub const EVENT_QUEUE: usize = 256;

/// Why a handle's command failed.
#[derive(Debug, Error)]
pub enum HandleError {
    /// The swarm is gone (its task ended or it was dropped).
    #[error("the swarm is gone")]
    SwarmGone,
    /// The dial could not start.
    #[error("dial: {0}")]
    Dial(Arc<DialError>),
    /// The transport refused the listen address.
    #[error("listen: {0}")]
    Listen(TransportError),
}

/// A closure run on the swarm's task with its behaviour.
type BehaviourFn<B> = Box<dyn FnOnce(&mut B) + Send>;

/// A handle's request, served by the swarm in its poll.
pub(crate) enum Command<B> {
    Dial(
        DialOpts,
        oneshot::Sender<Result<ConnectionId, Arc<DialError>>>,
    ),
    ListenOn(
        Multiaddr,
        oneshot::Sender<Result<ListenerId, TransportError>>,
    ),
    RemoveListener(ListenerId, oneshot::Sender<bool>),
    AddPeerAddress(PeerId, Multiaddr, oneshot::Sender<()>),
    AddExternalAddress(Multiaddr, oneshot::Sender<()>),
    CloseConnection(ConnectionId, oneshot::Sender<bool>),
    CloseConnectionWithReason(ConnectionId, String, oneshot::Sender<bool>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Connections(oneshot::Sender<Vec<ConnectionInfo>>),
    Listeners(oneshot::Sender<Vec<Multiaddr>>),
    Trim(oneshot::Sender<usize>),
    Behaviour(BehaviourFn<B>),
    Shutdown,
}

/// A cloneable, `Send` handle to a swarm; see the [module docs](self). Made by
/// [`Swarm::handle`](crate::Swarm::handle) or [`Swarm::spawn`](crate::Swarm::spawn).
pub struct SwarmHandle<B> {
    commands: mpsc::Sender<Command<B>>,
    local_peer_id: PeerId,
    conn_manager: DynConnManager,
}

impl<B> Clone for SwarmHandle<B> {
    fn clone(&self) -> Self {
        SwarmHandle {
            commands: self.commands.clone(),
            local_peer_id: self.local_peer_id,
            conn_manager: self.conn_manager.clone(),
        }
    }
}

impl<B> std::fmt::Debug for SwarmHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmHandle")
            .field("local_peer_id", &self.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl<B: NetworkBehaviour> SwarmHandle<B> {
    pub(crate) fn new(
        commands: mpsc::Sender<Command<B>>,
        local_peer_id: PeerId,
        conn_manager: DynConnManager,
    ) -> Self {
        SwarmHandle {
            commands,
            local_peer_id,
            conn_manager,
        }
    }

    /// The swarm's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The swarm's connection manager: tag, protect, trim (a trim closes what it selects).
    pub fn conn_manager(&self) -> &DynConnManager {
        &self.conn_manager
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command<B>,
    ) -> Result<R, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| HandleError::SwarmGone)?;
        rx.await.map_err(|_| HandleError::SwarmGone)
    }

    /// [`Swarm::dial`](crate::Swarm::dial): starts a dial; the connection (or the failure)
    /// is reported as an event.
    pub async fn dial(&self, opts: impl Into<DialOpts>) -> Result<ConnectionId, HandleError> {
        let opts = opts.into();
        self.ask(|tx| Command::Dial(opts, tx))
            .await?
            .map_err(HandleError::Dial)
    }

    /// [`Swarm::listen_on`](crate::Swarm::listen_on).
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<ListenerId, HandleError> {
        self.ask(|tx| Command::ListenOn(addr, tx))
            .await?
            .map_err(HandleError::Listen)
    }

    /// [`Swarm::remove_listener`](crate::Swarm::remove_listener).
    pub async fn remove_listener(&self, id: ListenerId) -> Result<bool, HandleError> {
        self.ask(|tx| Command::RemoveListener(id, tx)).await
    }

    /// [`Swarm::listeners`](crate::Swarm::listeners): the addresses listened on.
    pub async fn listeners(&self) -> Result<Vec<Multiaddr>, HandleError> {
        self.ask(Command::Listeners).await
    }

    /// [`Swarm::add_peer_address`](crate::Swarm::add_peer_address).
    pub async fn add_peer_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), HandleError> {
        self.ask(|tx| Command::AddPeerAddress(peer, addr, tx)).await
    }

    /// [`Swarm::add_external_address`](crate::Swarm::add_external_address).
    pub async fn add_external_address(&self, addr: Multiaddr) -> Result<(), HandleError> {
        self.ask(|tx| Command::AddExternalAddress(addr, tx)).await
    }

    /// [`Swarm::close_connection`](crate::Swarm::close_connection).
    pub async fn close_connection(&self, id: ConnectionId) -> Result<bool, HandleError> {
        self.ask(|tx| Command::CloseConnection(id, tx)).await
    }

    /// [`Swarm::close_connection_with_reason`](crate::Swarm::close_connection_with_reason).
    pub async fn close_connection_with_reason(
        &self,
        id: ConnectionId,
        reason: impl Into<String>,
    ) -> Result<bool, HandleError> {
        let reason = reason.into();
        self.ask(|tx| Command::CloseConnectionWithReason(id, reason, tx))
            .await
    }

    /// [`Swarm::disconnect_peer_id`](crate::Swarm::disconnect_peer_id).
    pub async fn disconnect_peer_id(&self, peer: PeerId) -> Result<bool, HandleError> {
        self.ask(|tx| Command::Disconnect(peer, tx)).await
    }

    /// [`Swarm::connections`](crate::Swarm::connections), as a snapshot.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, HandleError> {
        self.ask(Command::Connections).await
    }

    /// [`Swarm::trim_open_conns`](crate::Swarm::trim_open_conns): the connections closed.
    pub async fn trim_open_conns(&self) -> Result<usize, HandleError> {
        self.ask(Command::Trim).await
    }

    /// Runs `f` with the behaviour on the swarm's task and returns its result: the way to a
    /// behaviour's own commands, e.g. `handle.with_behaviour(|b| b.kad.put_record(..))`.
    /// Keep `f` short: the swarm does nothing else while it runs.
    pub async fn with_behaviour<R, F>(&self, f: F) -> Result<R, HandleError>
    where
        F: FnOnce(&mut B) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.ask(|tx| {
            Command::Behaviour(Box::new(move |b: &mut B| {
                let _ = tx.send(f(b));
            }))
        })
        .await
    }

    /// Ends a swarm started with [`Swarm::spawn`](crate::Swarm::spawn): its task stops and
    /// the swarm is dropped (closing its connections). Other handles then fail with
    /// [`HandleError::SwarmGone`]. A swarm the application drives itself (a handle from
    /// [`Swarm::handle`](crate::Swarm::handle)) is not stopped by it: the application owns
    /// it and drops it.
    pub async fn shutdown(&self) -> Result<(), HandleError> {
        self.commands
            .send(Command::Shutdown)
            .await
            .map_err(|_| HandleError::SwarmGone)
    }
}
