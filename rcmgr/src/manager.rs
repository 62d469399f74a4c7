//! [`ResourceManager`] and the scopes it hands out.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use meshwire_core::{Direction, PeerId};

use crate::limits::{Limits, ScopeLimits};
use crate::metrics::RcmgrMetrics;
use crate::scope::{Amount, ResourceError, ScopeKind, Usage};

/// A scope a charge is made against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    System,
    Transient,
    TransientPeer(PeerId),
    Peer(PeerId),
    Protocol(Arc<str>),
    ProtocolPeer(Arc<str>, PeerId),
    Service(Arc<str>),
    Connection(u64),
    Stream(u64),
}

impl Key {
    fn kind(&self) -> ScopeKind {
        match self {
            Key::System => ScopeKind::System,
            Key::Transient => ScopeKind::Transient,
            Key::TransientPeer(_) => ScopeKind::TransientPeer,
            Key::Peer(_) => ScopeKind::Peer,
            Key::Protocol(_) => ScopeKind::Protocol,
            Key::ProtocolPeer(..) => ScopeKind::ProtocolPeer,
            Key::Service(_) => ScopeKind::Service,
            Key::Connection(_) => ScopeKind::Connection,
            Key::Stream(_) => ScopeKind::Stream,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    metrics: Option<RcmgrMetrics>,
    system: Usage,
    transient: Usage,
    /// Every other scope, while it holds something. Hashed with foldhash, seeded at random
    /// per manager: every stream's open, negotiation and drop looks up a few of these keys
    /// (peer ids, protocol names) twice, and SipHash was 2.5 % of a request/response's CPU
    /// through the swarm (`BENCH_PROFILE=meshwire cargo bench -p interop-tests --bench swarm`
    /// under `perf record`); a random seed keeps colliding keys out of a remote's reach.
    scopes: HashMap<Key, Usage, foldhash::fast::RandomState>,
    next_id: u64,
}

struct Inner {
    limits: Limits,
    state: Mutex<State>,
}

/// Scoped limits on connections, streams and memory (go-libp2p's resource manager, with
/// Rust's ownership: every grant is a guard that gives its resources back when dropped).
///
/// The swarm asks for a [`ConnectionScope`] before it accepts or dials a connection and
/// moves it into the peer's scope once the handshake names the peer; it asks for a
/// [`StreamScope`] for every stream and moves it into the protocol's scope once negotiation
/// ends. Behaviours reserve memory for what they buffer from a stream
/// ([`StreamScope::reserve_memory`]) or for their own state
/// ([`ResourceManager::reserve_service_memory`]). A refusal is a typed [`ResourceError`]
/// and counted in the metrics.
///
/// Cloning gives another handle to the same manager.
///
/// ```
/// use meshwire_core::{Direction, Keypair};
/// use meshwire_rcmgr::{Limits, Resource, ResourceManager, ScopeKind};
///
/// let mut limits = Limits::for_memory(256 << 20);
/// limits.peer.conns_inbound = 1;
/// let rm = ResourceManager::new(limits);
/// let peer = Keypair::generate().peer_id();
///
/// let mut first = rm.open_connection(Direction::Inbound)?;
/// first.set_peer(peer)?;
/// let mut second = rm.open_connection(Direction::Inbound)?;
/// let refused = second.set_peer(peer).unwrap_err();
/// assert_eq!((refused.scope, refused.resource), (ScopeKind::Peer, Resource::InboundConnections));
/// drop(first); // its share goes back
/// second.set_peer(peer)?;
/// # Ok::<(), meshwire_rcmgr::ResourceError>(())
/// ```
#[derive(Clone)]
pub struct ResourceManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManager")
            .field("system", &self.system_usage())
            .finish_non_exhaustive()
    }
}

impl Default for ResourceManager {
    /// A manager with [`Limits::from_machine`].
    fn default() -> Self {
        ResourceManager::new(Limits::from_machine())
    }
}

impl ResourceManager {
    /// A manager enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::build(limits, None)
    }

    /// A manager enforcing `limits` that reports to `metrics`.
    pub fn with_metrics(limits: Limits, metrics: RcmgrMetrics) -> Self {
        Self::build(limits, Some(metrics))
    }

    /// A manager that only counts (go-libp2p's `NullResourceManager` plus accounting): for
    /// tests and trusted setups.
    pub fn unlimited() -> Self {
        Self::new(Limits::unlimited())
    }

    fn build(limits: Limits, metrics: Option<RcmgrMetrics>) -> Self {
        let rm = ResourceManager {
            inner: Arc::new(Inner {
                limits,
                state: Mutex::new(State::default()),
            }),
        };
        if let Some(m) = metrics {
            rm.set_metrics(m);
        }
        rm
    }

    /// Reports to `metrics` from now on (the gauges start from what is held now).
    pub fn set_metrics(&self, metrics: RcmgrMetrics) {
        let mut state = self.state();
        metrics.set_system(&state.system);
        state.metrics = Some(metrics);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated (every
        // update is checked first, then applied without panicking), so a poisoned lock is
        // still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn limits_of(&self, key: &Key) -> ScopeLimits {
        let l = &self.inner.limits;
        match key {
            Key::System => l.system,
            Key::Transient => l.transient,
            Key::TransientPeer(_) => l.transient_peer,
            Key::Peer(p) => *l.peer_limits(p),
            Key::Protocol(p) => *l.protocol_limits(p),
            Key::ProtocolPeer(..) => l.protocol_peer,
            Key::Service(_) => l.service,
            Key::Connection(_) => ScopeLimits {
                memory: l.connection_memory,
                ..ScopeLimits::UNLIMITED
            },
            Key::Stream(_) => ScopeLimits {
                memory: l.stream_memory,
                ..ScopeLimits::UNLIMITED
            },
        }
    }

    /// Adds `amount` to every scope of `keys`, or to none if one of them refuses.
    fn charge(&self, keys: &[Key], amount: Amount) -> Result<(), ResourceError> {
        let mut state = self.state();
        for key in keys {
            let usage = state.usage(key);
            if let Err((resource, limit)) = usage.check(&amount, &self.limits_of(key)) {
                let error = ResourceError {
                    scope: key.kind(),
                    resource,
                    limit,
                };
                tracing::debug!(%error, "resource manager: refused");
                if let Some(m) = &state.metrics {
                    m.refused(error.scope, error.resource);
                }
                return Err(error);
            }
        }
        for key in keys {
            state.usage_mut(key).add(&amount);
        }
        self.report(&state);
        Ok(())
    }

    /// Takes `amount` from every scope of `keys`.
    fn release(&self, keys: &[Key], amount: Amount) {
        let mut state = self.state();
        for key in keys {
            state.release(key, &amount);
        }
        self.report(&state);
    }

    fn report(&self, state: &State) {
        if let Some(m) = &state.metrics {
            m.set_system(&state.system);
        }
    }

    fn next_id(&self) -> u64 {
        let mut state = self.state();
        state.next_id += 1;
        state.next_id
    }

    /// A connection is about to be accepted or dialed: charged to the system and transient
    /// scopes until [`ConnectionScope::set_peer`].
    ///
    /// # Errors
    ///
    /// The scope that has no room for it.
    pub fn open_connection(&self, direction: Direction) -> Result<ConnectionScope, ResourceError> {
        let amount = Amount::connection(direction.is_inbound());
        self.charge(&[Key::System, Key::Transient], amount)?;
        Ok(ConnectionScope {
            muxer_memory: 0,
            rm: self.clone(),
            id: self.next_id(),
            amount,
            memory: 0,
            peer: None,
        })
    }

    /// A stream with `peer` is about to be accepted or opened: charged to the system,
    /// transient (in all and the peer's share of it) and peer scopes until
    /// [`StreamScope::set_protocol`].
    ///
    /// # Errors
    ///
    /// The scope that has no room for it.
    pub fn open_stream(
        &self,
        peer: PeerId,
        direction: Direction,
    ) -> Result<StreamScope, ResourceError> {
        let amount = Amount::stream(direction.is_inbound());
        let keys = [
            Key::System,
            Key::Transient,
            Key::TransientPeer(peer),
            Key::Peer(peer),
        ];
        self.charge(&keys, amount)?;
        Ok(StreamScope {
            rm: self.clone(),
            id: self.next_id(),
            amount,
            peer,
            protocol: None,
        })
    }

    /// Reserves `bytes` for a service's own state (e.g. a behaviour's store), charged to the
    /// service's scope and the system's.
    ///
    /// # Errors
    ///
    /// The scope that has no room for it.
    pub fn reserve_service_memory(
        &self,
        service: &str,
        bytes: u64,
    ) -> Result<Reservation, ResourceError> {
        let keys = vec![Key::System, Key::Service(service.into())];
        self.reserve(keys, bytes)
    }

    fn reserve(&self, keys: Vec<Key>, bytes: u64) -> Result<Reservation, ResourceError> {
        self.charge(&keys, Amount::memory(bytes))?;
        Ok(Reservation {
            rm: self.clone(),
            keys,
            bytes,
        })
    }

    /// What the whole node holds.
    pub fn system_usage(&self) -> Usage {
        self.state().system
    }

    /// What is held in the transient scope.
    pub fn transient_usage(&self) -> Usage {
        self.state().transient
    }

    /// What `peer` holds.
    pub fn peer_usage(&self, peer: &PeerId) -> Usage {
        self.state().get(&Key::Peer(*peer))
    }

    /// What `protocol` holds over all peers.
    pub fn protocol_usage(&self, protocol: &str) -> Usage {
        self.state().get(&Key::Protocol(protocol.into()))
    }

    /// What `service` holds.
    pub fn service_usage(&self, service: &str) -> Usage {
        self.state().get(&Key::Service(service.into()))
    }
}

impl State {
    fn get(&self, key: &Key) -> Usage {
        match key {
            Key::System => self.system,
            Key::Transient => self.transient,
            other => self.scopes.get(other).copied().unwrap_or_default(),
        }
    }

    fn usage(&self, key: &Key) -> Usage {
        self.get(key)
    }

    fn usage_mut(&mut self, key: &Key) -> &mut Usage {
        match key {
            Key::System => &mut self.system,
            Key::Transient => &mut self.transient,
            other => self.scopes.entry(other.clone()).or_default(),
        }
    }

    fn release(&mut self, key: &Key, amount: &Amount) {
        match key {
            Key::System => self.system.sub(amount),
            Key::Transient => self.transient.sub(amount),
            other => {
                if let Some(usage) = self.scopes.get_mut(other) {
                    usage.sub(amount);
                    if usage.is_empty() {
                        self.scopes.remove(other);
                    }
                }
            }
        }
    }
}

/// One connection's share: released when dropped.
pub struct ConnectionScope {
    rm: ResourceManager,
    id: u64,
    /// The connection itself (one inbound or outbound connection).
    amount: Amount,
    /// Memory reserved for it.
    memory: u64,
    /// Memory of a stream-muxed transport beyond the connection's own limit, charged to the
    /// peer and the system only ([`ConnectionScope::reserve_muxer_memory`]).
    muxer_memory: u64,
    peer: Option<PeerId>,
}

impl fmt::Debug for ConnectionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionScope")
            .field("peer", &self.peer)
            .field("memory", &self.memory)
            .field("muxer_memory", &self.muxer_memory)
            .finish()
    }
}

impl ConnectionScope {
    /// The scope holding the connection besides the system's: transient, then its peer's.
    fn owner(&self) -> Key {
        self.peer.map_or(Key::Transient, Key::Peer)
    }

    /// The handshake named the peer: the connection and its memory move from the transient
    /// scope into `peer`'s.
    ///
    /// # Errors
    ///
    /// The peer's scope has no room (the connection stays transient; close it).
    pub fn set_peer(&mut self, peer: PeerId) -> Result<(), ResourceError> {
        if self.peer.is_some() {
            return Ok(());
        }
        let memory = self.memory.saturating_add(self.muxer_memory);
        let all = self.amount.plus(Amount::memory(memory));
        self.rm.charge(&[Key::Peer(peer)], all)?;
        self.rm.release(&[Key::Transient], all);
        self.peer = Some(peer);
        Ok(())
    }

    /// Reserves `bytes` more for the connection (its receive window), charged to the
    /// connection, its owner and the system; held until the scope is dropped.
    ///
    /// # Errors
    ///
    /// The scope that has no room for it.
    pub fn reserve_memory(&mut self, bytes: u64) -> Result<(), ResourceError> {
        let keys = [Key::System, self.owner(), Key::Connection(self.id)];
        self.rm.charge(&keys, Amount::memory(bytes))?;
        self.memory = self.memory.saturating_add(bytes);
        Ok(())
    }

    /// Reserves `bytes` more for a connection whose transport buffers more than a QUIC
    /// connection's window (a Yamux connection over a relay circuit: its connection receive
    /// window), charged to the connection's peer and the system — not to the per-connection
    /// memory limit, which sizes QUIC windows. Held until the scope is dropped.
    ///
    /// # Errors
    ///
    /// The peer's or the system's scope has no room for it (close the connection).
    pub fn reserve_muxer_memory(&mut self, bytes: u64) -> Result<(), ResourceError> {
        let keys = [Key::System, self.owner()];
        self.rm.charge(&keys, Amount::memory(bytes))?;
        self.muxer_memory = self.muxer_memory.saturating_add(bytes);
        Ok(())
    }

    /// The peer, once set.
    pub fn peer(&self) -> Option<PeerId> {
        self.peer
    }

    /// Memory reserved for the connection, [`reserve_muxer_memory`](Self::reserve_muxer_memory)'s
    /// included.
    pub fn memory(&self) -> u64 {
        self.memory.saturating_add(self.muxer_memory)
    }
}

impl Drop for ConnectionScope {
    fn drop(&mut self) {
        let owner = self.owner();
        self.rm.release(&[Key::System, owner.clone()], self.amount);
        if self.muxer_memory > 0 {
            let keys = [Key::System, owner.clone()];
            self.rm.release(&keys, Amount::memory(self.muxer_memory));
        }
        if self.memory > 0 {
            let keys = [Key::System, owner, Key::Connection(self.id)];
            self.rm.release(&keys, Amount::memory(self.memory));
        }
    }
}

/// One stream's share: released when dropped.
pub struct StreamScope {
    rm: ResourceManager,
    id: u64,
    amount: Amount,
    peer: PeerId,
    protocol: Option<Arc<str>>,
}

impl fmt::Debug for StreamScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamScope")
            .field("peer", &self.peer)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl StreamScope {
    /// The scopes holding the stream.
    fn keys(&self) -> Vec<Key> {
        match &self.protocol {
            None => vec![
                Key::System,
                Key::Transient,
                Key::TransientPeer(self.peer),
                Key::Peer(self.peer),
            ],
            Some(p) => vec![
                Key::System,
                Key::Peer(self.peer),
                Key::Protocol(p.clone()),
                Key::ProtocolPeer(p.clone(), self.peer),
            ],
        }
    }

    /// Negotiation agreed on `protocol`: the stream moves from the transient scope into the
    /// protocol's (and the peer's share of it).
    ///
    /// # Errors
    ///
    /// The protocol's scope has no room (the stream stays transient; reset it).
    pub fn set_protocol(&mut self, protocol: &str) -> Result<(), ResourceError> {
        if self.protocol.is_some() {
            return Ok(());
        }
        let p: Arc<str> = protocol.into();
        let keys = [
            Key::Protocol(p.clone()),
            Key::ProtocolPeer(p.clone(), self.peer),
        ];
        self.rm.charge(&keys, self.amount)?;
        self.rm.release(
            &[Key::Transient, Key::TransientPeer(self.peer)],
            self.amount,
        );
        self.protocol = Some(p);
        Ok(())
    }

    /// Reserves `bytes` for what is buffered from the stream, charged to the stream, its
    /// peer, its protocol (or the transient scope) and the system; held until the returned
    /// [`Reservation`] is dropped.
    ///
    /// # Errors
    ///
    /// The scope that has no room for it.
    pub fn reserve_memory(&self, bytes: u64) -> Result<Reservation, ResourceError> {
        let mut keys = self.keys();
        keys.push(Key::Stream(self.id));
        self.rm.reserve(keys, bytes)
    }

    /// The remote peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The protocol, once negotiated.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
}

impl Drop for StreamScope {
    fn drop(&mut self) {
        let keys = self.keys();
        self.rm.release(&keys, self.amount);
    }
}

/// Reserved memory: given back when dropped.
pub struct Reservation {
    rm: ResourceManager,
    keys: Vec<Key>,
    bytes: u64,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.rm.release(&self.keys, Amount::memory(self.bytes));
    }
}
