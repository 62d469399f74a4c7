//! The swarm behaviour: sessions to peers over relayed and direct connections, the automatic
//! upgrade when a direct connection to a relayed peer appears, fallback, the relay registry
//! of the seed API (`register_relay`, `unregister_relay`, `upgrade_to_direct`,
//! `upgrade_stats`), the relayed connection's close and the connection manager's protection.
//!
//! Each session runs in its own task (`driver.rs`): the application's [`Session`] talks to
//! it over bounded batch queues (`queue.rs`) and its paths' streams are read and written there, so messages
//! never pass through the swarm's task. The behaviour only opens streams on the connection
//! it chooses (`OpenStream::on_connection`: an upgrade needs *this* direct connection, which
//! `StreamControl` does not let the caller name), reads the `Hello` of inbound ones, and acts
//! on the drivers' reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Outbox, Tasks};
use meshwire_swarm::{
    CloseConnection, ConnManagerCommand, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour,
    OpenStream, OutboundStreamResult, Stream, StreamError, StreamProtocol, ToSwarm,
};
use tokio::sync::mpsc;

use crate::driver::{self, Command, Report};
use crate::engine::{PathKind, Role, SessionConfig, SessionEngine};
use crate::session::Session;
use crate::shared::Core;
use crate::stats::{UpgradeMetrics, UpgradeStats};
use crate::wire::{Frame, RefuseReason, MAX_HEADER};

/// The protocol, as the swarm names it.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new(crate::wire::PROTOCOL);

/// The behaviour's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every session's limits and timers.
    pub session: SessionConfig,
    /// Messages [`Session::recv`] takes from the session at once (one lock per batch; the
    /// session itself holds at most [`SessionConfig::recv_window_bytes`] more). Default 256.
    pub channel_buffer: usize,
    /// Sessions at once, ours and the peers', at most. Default 1024.
    pub max_sessions: usize,
    /// Sessions at once with one peer (ours and theirs), at most: one peer cannot take every
    /// slot of [`Config::max_sessions`]. Default 32.
    pub max_sessions_per_peer: usize,
    /// Inbound streams waiting for their `Hello` at once, at most (more are reset).
    /// Default 256.
    pub max_pending_hellos: usize,
    /// Of those, from one peer, at most. Default 8.
    pub max_pending_hellos_per_peer: usize,
    /// How long a session lingers once the application dropped its [`Session`] and every
    /// sender: its messages go out and are acknowledged within this, or the session ends
    /// anyway (a peer that never acknowledges cannot hold it). Default 30 s.
    pub linger: Duration,
    /// Whether peers may open sessions to us (they arrive as [`Event::InboundSession`]).
    /// Default `true`.
    pub accept_sessions: bool,
    /// Upgrade by itself when a direct connection to a peer appears whose sessions run over
    /// a relay. Default `true`.
    pub auto_upgrade: bool,
    /// Close a relayed connection once every session moved off it to a direct connection and
    /// drained. Default `true`.
    pub close_relayed: bool,
    /// How long an inbound stream may take to send its `Hello`. Default 10 s.
    pub hello_timeout: Duration,
    /// How long one write (a batch of frames, and its flush) or a path's close may take; a
    /// path whose peer stops granting stream credit for longer is treated as failed (the
    /// session falls back or fails as for any lost path), and when the session ends its
    /// writers get this long to finish before they are aborted. Default 10 s.
    pub write_timeout: Duration,
    /// The connection-manager tag protecting a relay while a session runs through it.
    /// Default `"upgrade"`.
    pub protect_tag: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session: SessionConfig::default(),
            channel_buffer: 256,
            max_sessions: 1024,
            max_sessions_per_peer: 32,
            max_pending_hellos: 256,
            max_pending_hellos_per_peer: 8,
            linger: Duration::from_secs(30),
            accept_sessions: true,
            auto_upgrade: true,
            close_relayed: true,
            hello_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            protect_tag: "upgrade".into(),
        }
    }
}

impl Config {
    /// Sets [`Config::session`].
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }
    /// Sets [`Config::channel_buffer`].
    pub fn with_channel_buffer(mut self, messages: usize) -> Self {
        self.channel_buffer = messages.max(1);
        self
    }
    /// Sets [`Config::max_sessions`].
    pub fn with_max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions;
        self
    }
    /// Sets [`Config::accept_sessions`].
    pub fn with_accept_sessions(mut self, accept: bool) -> Self {
        self.accept_sessions = accept;
        self
    }
    /// Sets [`Config::auto_upgrade`].
    pub fn with_auto_upgrade(mut self, auto: bool) -> Self {
        self.auto_upgrade = auto;
        self
    }
    /// Sets [`Config::close_relayed`].
    pub fn with_close_relayed(mut self, close: bool) -> Self {
        self.close_relayed = close;
        self
    }
}

/// What the behaviour reports.
#[derive(Debug)]
pub enum Event {
    /// A peer opened a session to us.
    InboundSession(Session),
    /// An upgrade started: a path is being opened on a direct connection.
    UpgradeStarted {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: u64,
        /// The direct connection.
        connection: ConnectionId,
    },
    /// A session's sending moved to a direct path.
    Upgraded {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: u64,
        /// From the start of the upgrade to the switch.
        duration: Duration,
        /// Messages sent again on the direct path.
        migrated: u64,
        /// The `Hello`→`Welcome` round trip on the direct path (one round trip).
        rtt: Duration,
    },
    /// An upgrade failed; the session's traffic stays where it was.
    UpgradeFailed {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: u64,
        /// Why.
        error: UpgradeError,
    },
    /// A session's direct path failed and its traffic moved back to a relayed path.
    FellBack {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: u64,
    },
    /// A relayed connection was closed after its sessions moved to a direct connection.
    RelayedConnectionClosed {
        /// The peer.
        peer: PeerId,
        /// The relayed connection.
        connection: ConnectionId,
    },
    /// A session ended.
    SessionEnded {
        /// The peer.
        peer: PeerId,
        /// The session.
        session: u64,
    },
}

/// Why an upgrade did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// No relayed connection is registered for the peer (or not the one named).
    #[error("no relayed connection registered for the peer")]
    NoRelay,
    /// The upgrade was tried and failed.
    #[error("upgrade failed: {0}")]
    UpgradeFailed(UpgradeFailure),
}

/// How an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeFailure {
    /// The direct connection named is not open (or is relayed).
    #[error("no such direct connection")]
    NoDirectConnection,
    /// No session runs with the peer: there is nothing to move.
    #[error("no session with the peer")]
    NoSession,
    /// The peer does not speak `/meshwire/upgrade/2.0.0` on the direct connection.
    #[error("the peer does not speak the protocol")]
    Unsupported,
    /// The peer refused the path.
    #[error("refused by the peer")]
    Refused,
    /// The stream could not be opened or closed before the switch.
    #[error("the direct path failed: {0}")]
    PathFailed(String),
}

/// Why [`Behaviour::open`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No connection to the peer (dial it first).
    #[error("not connected")]
    NotConnected,
    /// [`Config::max_sessions`] sessions run already.
    #[error("too many sessions")]
    TooManySessions,
    /// The behaviour's command queue is full.
    #[error("command queue full")]
    QueueFull,
}

/// A relayed connection registered for a peer (the seed's `register_relay`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRegistration {
    /// The relayed connection.
    pub connection: ConnectionId,
    /// Its remote address (`.../p2p/<relay>/p2p-circuit/...`).
    pub endpoint: Multiaddr,
}

type Key = (PeerId, u64, Role);

struct Entry {
    commands: mpsc::Sender<Command<Stream>>,
    shared: std::sync::Arc<Core>,
    kind: Option<PathKind>,
    upgrade_started: Option<Instant>,
    /// Streams requested and not yet answered.
    opening: usize,
    needs_path: bool,
    /// Paths per connection.
    paths: HashMap<ConnectionId, usize>,
    /// Whether a path of this session ever ran over a relayed connection.
    relayed: bool,
    bytes_resent_seen: u64,
}

struct OpenCtx {
    key: Key,
    kind: PathKind,
}

/// The behaviour (see the module docs).
pub struct Behaviour {
    config: Config,
    metrics: UpgradeMetrics,
    stats: UpgradeStats,
    /// Live connections per peer: relayed or not.
    connections: HashMap<PeerId, BTreeMap<ConnectionId, Multiaddr>>,
    relays: HashMap<PeerId, RelayRegistration>,
    sessions: HashMap<Key, Entry>,
    outbox: Outbox<Event, OpenCtx>,
    hellos: Tasks<u64, Result<(Frame, Stream), FrameError>>,
    hello_origin: HashMap<u64, (PeerId, ConnectionId)>,
    next_hello: u64,
    reports_tx: mpsc::Sender<(Key, Report)>,
    reports_rx: mpsc::Receiver<(Key, Report)>,
    protected: HashSet<PeerId>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        let (reports_tx, reports_rx) = mpsc::channel(1024);
        Behaviour {
            hellos: Tasks::new(config.max_pending_hellos),
            config,
            metrics: UpgradeMetrics::default(),
            stats: UpgradeStats::default(),
            connections: HashMap::new(),
            relays: HashMap::new(),
            sessions: HashMap::new(),
            outbox: Outbox::new(1024),
            hello_origin: HashMap::new(),
            next_hello: 0,
            reports_tx,
            reports_rx,
            protected: HashSet::new(),
        }
    }

    /// The Prometheus metrics (register them with [`UpgradeMetrics::register`]).
    pub fn metrics(&self) -> &UpgradeMetrics {
        &self.metrics
    }

    /// The counters since the behaviour started (the seed's `get_upgrade_stats`).
    pub fn upgrade_stats(&self) -> UpgradeStats {
        let mut stats = self.stats.clone();
        for entry in self.sessions.values() {
            let live = entry.shared.stats().bytes_resent;
            stats.bytes_resent += live.saturating_sub(entry.bytes_resent_seen);
        }
        stats
    }

    /// Sessions with `peer`, ours and theirs.
    fn sessions_with(&self, peer: &PeerId) -> usize {
        self.sessions.keys().filter(|k| k.0 == *peer).count()
    }

    /// Opens a session to a connected peer, on its best connection (direct over relayed).
    ///
    /// # Errors
    ///
    /// [`OpenError`].
    pub fn open(&mut self, peer: PeerId) -> Result<Session, OpenError> {
        let (connection, kind) = self.best_connection(&peer).ok_or(OpenError::NotConnected)?;
        if self.sessions.len() >= self.config.max_sessions
            || self.sessions_with(&peer) >= self.config.max_sessions_per_peer
        {
            return Err(OpenError::TooManySessions);
        }
        let id = rand::random::<u64>();
        let key = (peer, id, Role::Initiator);
        let session = self.spawn_session(key);
        self.open_path(key, connection, kind)
            .map_err(|_| OpenError::QueueFull)?;
        Ok(session)
    }

    /// Registers `connection` as the relayed connection to `peer` (done by itself when a
    /// relayed connection is established). Sessions to the peer then upgrade when a direct
    /// connection appears.
    pub fn register_relay(&mut self, peer: PeerId, connection: ConnectionId, endpoint: Multiaddr) {
        self.relays.insert(
            peer,
            RelayRegistration {
                connection,
                endpoint,
            },
        );
    }

    /// Forgets the relayed connection of `peer` (done by itself when it closes or was
    /// closed after an upgrade).
    pub fn unregister_relay(&mut self, peer: &PeerId) -> Option<RelayRegistration> {
        self.relays.remove(peer)
    }

    /// The relayed connection registered for `peer`.
    pub fn relay_of(&self, peer: &PeerId) -> Option<&RelayRegistration> {
        self.relays.get(peer)
    }

    /// Upgrades every session with `peer` running over `relay_connection` to
    /// `direct_connection` (for applications that manage connections themselves; with
    /// [`Config::auto_upgrade`] it happens by itself). The upgrade proceeds in the
    /// background; [`Event::Upgraded`] or [`Event::UpgradeFailed`] reports it.
    ///
    /// # Errors
    ///
    /// [`UpgradeError::NoRelay`] if `relay_connection` is not the peer's registered relayed
    /// connection; [`UpgradeError::UpgradeFailed`] if `direct_connection` is not an open
    /// direct connection to the peer or no session runs with it.
    pub fn upgrade_to_direct(
        &mut self,
        peer: PeerId,
        relay_connection: ConnectionId,
        direct_connection: ConnectionId,
    ) -> Result<(), UpgradeError> {
        if self.relays.get(&peer).map(|r| r.connection) != Some(relay_connection) {
            return Err(UpgradeError::NoRelay);
        }
        let direct = self
            .connections
            .get(&peer)
            .and_then(|c| c.get(&direct_connection))
            .is_some_and(|addr| !meshwire_transport::is_circuit_addr(addr));
        if !direct {
            return Err(UpgradeError::UpgradeFailed(
                UpgradeFailure::NoDirectConnection,
            ));
        }
        let started = self.upgrade_sessions(peer, direct_connection, None);
        if started == 0 {
            return Err(UpgradeError::UpgradeFailed(UpgradeFailure::NoSession));
        }
        Ok(())
    }

    fn upgrade_sessions(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        role: Option<Role>,
    ) -> usize {
        let keys: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(k, e)| {
                k.0 == peer
                    && role.is_none_or(|r| r == k.2)
                    && e.kind != Some(PathKind::Direct)
                    && e.upgrade_started.is_none()
            })
            .map(|(k, _)| *k)
            .collect();
        let mut started = 0;
        tracing::debug!(%peer, %connection, sessions = keys.len(), "upgrade to a direct connection");
        for key in keys {
            if self.open_path(key, connection, PathKind::Direct).is_ok() {
                if let Some(entry) = self.sessions.get_mut(&key) {
                    entry.upgrade_started = Some(Instant::now());
                }
                self.stats.attempts += 1;
                self.metrics.attempts.inc();
                let _ = self.outbox.event(Event::UpgradeStarted {
                    peer,
                    session: key.1,
                    connection,
                });
                started += 1;
            }
        }
        started
    }

    fn best_connection(&self, peer: &PeerId) -> Option<(ConnectionId, PathKind)> {
        self.connections
            .get(peer)?
            .iter()
            .map(|(c, addr)| {
                let kind = if meshwire_transport::is_circuit_addr(addr) {
                    PathKind::Relayed
                } else {
                    PathKind::Direct
                };
                (*c, kind)
            })
            .max_by_key(|(c, kind)| (*kind, *c))
    }

    fn spawn_session(&mut self, key: Key) -> Session {
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let now = Instant::now();
        let engine = match key.2 {
            Role::Initiator => {
                SessionEngine::new_initiator(key.1, self.config.session.clone(), now)
            }
            Role::Responder => {
                SessionEngine::new_responder(key.1, self.config.session.clone(), now)
            }
        };
        let shared = Core::new(engine);
        tokio::spawn(driver::run(
            shared.clone(),
            key,
            commands_rx,
            self.reports_tx.clone(),
            self.config.linger,
            self.config.write_timeout,
        ));
        self.sessions.insert(
            key,
            Entry {
                commands: commands_tx,
                shared: shared.clone(),
                kind: None,
                upgrade_started: None,
                opening: 0,
                needs_path: false,
                paths: HashMap::new(),
                relayed: false,
                bytes_resent_seen: 0,
            },
        );
        Session::new(
            key.0,
            key.1,
            self.config.session.max_message,
            shared,
            self.config.channel_buffer,
        )
    }

    fn open_path(
        &mut self,
        key: Key,
        connection: ConnectionId,
        kind: PathKind,
    ) -> Result<(), meshwire_swarm::toolkit::QueueFull> {
        let request = OpenStream::new(key.0, PROTOCOL_NAME)
            .on_connection(connection)
            .no_dial()
            .confirmed();
        self.outbox.open_stream(request, OpenCtx { key, kind })?;
        if let Some(entry) = self.sessions.get_mut(&key) {
            entry.opening += 1;
        }
        Ok(())
    }

    fn add_path(&mut self, key: Key, connection: ConnectionId, kind: PathKind) {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        *entry.paths.entry(connection).or_default() += 1;
        if kind == PathKind::Relayed {
            entry.relayed = true;
            let relay = self
                .connections
                .get(&key.0)
                .and_then(|c| c.get(&connection))
                .and_then(meshwire_transport::circuit_relay);
            if let Some(relay) = relay {
                if self.protected.insert(relay) {
                    let _ = self
                        .outbox
                        .push(ToSwarm::ConnManager(ConnManagerCommand::Protect {
                            peer: relay,
                            tag: self.config.protect_tag.clone(),
                        }));
                }
            }
        }
    }

    fn on_report(&mut self, key: Key, report: Report) {
        let (peer, session) = (key.0, key.1);
        tracing::debug!(%peer, session, role = ?key.2, ?report, "session report");
        match report {
            Report::NeedPath => {
                let best = self.best_connection(&peer);
                let Some(entry) = self.sessions.get_mut(&key) else {
                    return;
                };
                entry.needs_path = true;
                entry.kind = None;
                if entry.opening == 0 {
                    if let Some((connection, kind)) = best {
                        let _ = self.open_path(key, connection, kind);
                    }
                }
            }
            Report::PathFailed { kind, refused } => {
                self.upgrade_failed(
                    key,
                    kind,
                    if refused {
                        UpgradeFailure::Refused
                    } else {
                        UpgradeFailure::PathFailed("closed before the answer".into())
                    },
                );
            }
            Report::Switched {
                kind,
                fallback,
                resent,
                handshake,
            } => {
                self.stats.messages_migrated += resent;
                self.metrics.messages_migrated.inc_by(resent);
                self.sync_resent(key);
                let Some(entry) = self.sessions.get_mut(&key) else {
                    return;
                };
                entry.kind = Some(kind);
                entry.needs_path = false;
                if kind == PathKind::Direct {
                    if let Some(start) = entry.upgrade_started.take() {
                        let duration = start.elapsed();
                        self.stats.successes += 1;
                        self.metrics.successes.inc();
                        self.stats.observe(duration);
                        self.metrics.duration.observe(duration.as_secs_f64());
                        let _ = self.outbox.event(Event::Upgraded {
                            peer,
                            session,
                            duration,
                            migrated: resent,
                            rtt: handshake,
                        });
                    }
                }
                if fallback {
                    self.stats.fallbacks += 1;
                    self.metrics.fallbacks.inc();
                    let _ = self.outbox.event(Event::FellBack { peer, session });
                }
            }
            Report::PathClosed { connection } => {
                if let Some(entry) = self.sessions.get_mut(&key) {
                    if let Some(n) = entry.paths.get_mut(&connection) {
                        *n -= 1;
                        if *n == 0 {
                            entry.paths.remove(&connection);
                        }
                    }
                }
                self.maybe_close_relayed(peer);
                self.release_unused_relays();
            }
            Report::Ended => {
                self.sync_resent(key);
                self.sessions.remove(&key);
                let _ = self.outbox.event(Event::SessionEnded { peer, session });
                self.maybe_close_relayed(peer);
                self.release_unused_relays();
            }
        }
    }

    fn sync_resent(&mut self, key: Key) {
        if let Some(entry) = self.sessions.get_mut(&key) {
            let now = entry.shared.stats().bytes_resent;
            let delta = now.saturating_sub(entry.bytes_resent_seen);
            entry.bytes_resent_seen = now;
            self.stats.bytes_resent += delta;
            self.metrics.bytes_resent.inc_by(delta);
        }
    }

    fn upgrade_failed(&mut self, key: Key, kind: PathKind, failure: UpgradeFailure) {
        let Some(entry) = self.sessions.get_mut(&key) else {
            return;
        };
        if kind != PathKind::Direct || entry.upgrade_started.take().is_none() {
            return;
        }
        self.stats.failures += 1;
        self.metrics.failures.inc();
        let _ = self.outbox.event(Event::UpgradeFailed {
            peer: key.0,
            session: key.1,
            error: UpgradeError::UpgradeFailed(failure),
        });
    }

    /// Closes the peer's relayed connection once sessions moved off it to a direct one.
    fn maybe_close_relayed(&mut self, peer: PeerId) {
        if !self.config.close_relayed {
            return;
        }
        let Some(conns) = self.connections.get(&peer) else {
            return;
        };
        let has_direct = conns
            .values()
            .any(|a| !meshwire_transport::is_circuit_addr(a));
        let relayed: Vec<(ConnectionId, Multiaddr)> = conns
            .iter()
            .filter(|(_, a)| meshwire_transport::is_circuit_addr(a))
            .map(|(c, a)| (*c, a.clone()))
            .collect();
        if !has_direct {
            return;
        }
        let sessions = || {
            self.sessions
                .iter()
                .filter(|(k, _)| k.0 == peer)
                .map(|(_, e)| e)
        };
        // Only after an upgrade: a session of ours (the initiator closes, so the two ends do
        // not race) that ran over a relay and now runs direct.
        let upgraded = self.sessions.iter().any(|(k, e)| {
            k.0 == peer && k.2 == Role::Initiator && e.relayed && e.kind == Some(PathKind::Direct)
        });
        if !upgraded {
            return;
        }
        tracing::debug!(%peer, ?relayed, "relayed connections after an upgrade");
        let idle: Vec<(ConnectionId, Multiaddr)> = relayed
            .into_iter()
            .filter(|(c, _)| !sessions().any(|e| e.paths.contains_key(c)))
            .collect();
        for (connection, addr) in idle {
            let _ = self.outbox.push(ToSwarm::CloseConnection {
                peer,
                connection: CloseConnection::One(connection),
            });
            if self.relays.get(&peer).map(|r| r.connection) == Some(connection) {
                self.relays.remove(&peer);
            }
            let _ = self
                .outbox
                .event(Event::RelayedConnectionClosed { peer, connection });
            self.unprotect_unused(meshwire_transport::circuit_relay(&addr));
        }
    }

    /// Unprotects every relay no session's path runs through any more, whatever the role
    /// and the configuration (a session that ended on the relay, a responder's session, a
    /// relayed connection that closed).
    fn release_unused_relays(&mut self) {
        let protected: Vec<PeerId> = self.protected.iter().copied().collect();
        for relay in protected {
            self.unprotect_unused(Some(relay));
        }
    }

    fn unprotect_unused(&mut self, relay: Option<PeerId>) {
        let Some(relay) = relay else { return };
        let in_use = self.sessions.iter().any(|(k, e)| {
            e.paths.keys().any(|c| {
                self.connections
                    .get(&k.0)
                    .and_then(|m| m.get(c))
                    .and_then(meshwire_transport::circuit_relay)
                    == Some(relay)
            })
        });
        if !in_use && self.protected.remove(&relay) {
            let _ = self
                .outbox
                .push(ToSwarm::ConnManager(ConnManagerCommand::Unprotect {
                    peer: relay,
                    tag: self.config.protect_tag.clone(),
                }));
        }
    }

    fn on_hello(&mut self, id: u64, result: Result<(Frame, Stream), FrameError>) {
        let Some((peer, connection)) = self.hello_origin.remove(&id) else {
            return;
        };
        let Ok((frame, stream)) = result else {
            return;
        };
        let Frame::Hello {
            session,
            path,
            recv_next,
            recv_limit,
        } = frame
        else {
            return;
        };
        let kind = match self.connections.get(&peer).and_then(|c| c.get(&connection)) {
            Some(addr) if meshwire_transport::is_circuit_addr(addr) => PathKind::Relayed,
            Some(_) => PathKind::Direct,
            None => return,
        };
        // Even path ids come from the session's initiator: the peer.
        let role = if path % 2 == 0 {
            Role::Responder
        } else {
            Role::Initiator
        };
        let key = (peer, session, role);
        if !self.sessions.contains_key(&key) {
            let fresh = role == Role::Responder && recv_next == 0;
            if !fresh
                || !self.config.accept_sessions
                || self.sessions.len() >= self.config.max_sessions
                || self.sessions_with(&peer) >= self.config.max_sessions_per_peer
            {
                refuse(stream, path, RefuseReason::UnknownSession);
                return;
            }
            let new = self.spawn_session(key);
            let _ = self.outbox.event(Event::InboundSession(new));
        }
        let Some(entry) = self.sessions.get(&key) else {
            return;
        };
        let command = Command::Accept {
            stream,
            kind,
            connection,
            path,
            recv_next,
            recv_limit,
        };
        if entry.commands.try_send(command).is_ok() {
            self.add_path(key, connection, kind);
        }
    }
}

/// Answers a `Hello` with `Refuse` and closes the stream, in the background.
fn refuse(mut stream: Stream, path: u64, reason: RefuseReason) {
    tokio::spawn(async move {
        let body = Frame::Refuse { path, reason }.encode();
        let _ = write_frame(&mut stream, &body).await;
        let _ = stream.close().await;
    });
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL_NAME]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                ..
            } => {
                let addr = endpoint.remote_addr().clone();
                self.connections
                    .entry(peer)
                    .or_default()
                    .insert(connection, addr.clone());
                let relayed = endpoint.is_relayed();
                tracing::debug!(%peer, %connection, relayed, "connection established");
                if relayed {
                    self.register_relay(peer, connection, addr);
                } else if self.config.auto_upgrade && self.relays.contains_key(&peer) {
                    // Both ends see the direct connection; the session's initiator upgrades,
                    // so one direct path is opened, not two.
                    self.upgrade_sessions(peer, connection, Some(Role::Initiator));
                }
                let kind = if relayed {
                    PathKind::Relayed
                } else {
                    PathKind::Direct
                };
                let waiting: Vec<Key> = self
                    .sessions
                    .iter()
                    .filter(|(k, e)| k.0 == peer && e.needs_path && e.opening == 0)
                    .map(|(k, _)| *k)
                    .collect();
                for key in waiting {
                    let _ = self.open_path(key, connection, kind);
                }
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                if let Some(conns) = self.connections.get_mut(&peer) {
                    conns.remove(&connection);
                    if conns.is_empty() {
                        self.connections.remove(&peer);
                    }
                }
                if self.relays.get(&peer).map(|r| r.connection) == Some(connection) {
                    self.relays.remove(&peer);
                }
                self.release_unused_relays();
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let from_peer = self
            .hello_origin
            .values()
            .filter(|(p, _)| *p == stream.peer)
            .count();
        if from_peer >= self.config.max_pending_hellos_per_peer {
            let mut io = stream.stream;
            io.reset();
            return;
        }
        let id = self.next_hello;
        self.next_hello += 1;
        let max = self.config.session.max_message + MAX_HEADER;
        let mut io = stream.stream;
        let fut = async move {
            let body = read_frame(&mut io, max)
                .await?
                .ok_or(FrameError::Truncated)?;
            let frame = Frame::decode(&body, max).map_err(|_| FrameError::InvalidPrefix)?;
            Ok((frame, io))
        };
        if self
            .hellos
            .try_push(id, self.config.hello_timeout, fut)
            .is_ok()
        {
            self.hello_origin
                .insert(id, (stream.peer, stream.connection));
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(OpenCtx { key, kind }) = self.outbox.take_stream(result.id) else {
            return;
        };
        if let Some(entry) = self.sessions.get_mut(&key) {
            entry.opening = entry.opening.saturating_sub(1);
        }
        tracing::debug!(peer = %key.0, session = key.1, ?kind, ok = result.result.is_ok(), "path stream");
        match result.result {
            Ok(out) => {
                let Some(entry) = self.sessions.get(&key) else {
                    return;
                };
                let command = Command::Open {
                    stream: out.stream,
                    kind,
                    connection: out.connection,
                };
                if entry.commands.try_send(command).is_ok() {
                    self.add_path(key, out.connection, kind);
                }
            }
            Err(error) => {
                let failure = if matches!(error, StreamError::UnsupportedProtocols) {
                    UpgradeFailure::Unsupported
                } else {
                    UpgradeFailure::PathFailed(error.to_string())
                };
                self.upgrade_failed(key, kind, failure);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Poll::Ready((id, result)) = self.hellos.poll_result(cx) {
                self.on_hello(id, result);
                continue;
            }
            if let Poll::Ready(Some((key, report))) = self.reports_rx.poll_recv(cx) {
                self.on_report(key, report);
                continue;
            }
            return Poll::Pending;
        }
    }
}
