//! The libp2p ping protocol, `/ipfs/ping/1.0.0`, as a meshwire [`NetworkBehaviour`].
//!
//! [`Behaviour`] pings every established connection: it opens one stream per connection,
//! sends [`PING_SIZE`] random bytes, waits for the remote to echo them and reports the round
//! trip as an [`Event`]; then it pings again on the same stream every [`Config::interval`].
//! It answers the remote's pings the same way. The latest round-trip time of every peer is
//! kept in an [`RttTable`] that other behaviours and the application can read.
//!
//! ```
//! use std::time::Duration;
//! use meshwire_core::Keypair;
//! use meshwire_ping as ping;
//! use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let new_swarm = || -> Result<Swarm<ping::Behaviour>, Box<dyn std::error::Error>> {
//!     let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default())?;
//!     let behaviour = ping::Behaviour::new(ping::Config::default().with_interval(Duration::from_secs(1)));
//!     Ok(Swarm::new(transport, behaviour, SwarmConfig::default()))
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
//! // b pings a as soon as the connection is up (and a pings b).
//! let rtt = loop {
//!     tokio::select! {
//!         ev = b.next_event() => if let SwarmEvent::Behaviour(ping::Event { peer, result: Ok(rtt), .. }) = ev {
//!             assert_eq!(peer, a.local_peer_id());
//!             break rtt;
//!         },
//!         _ = a.next_event() => {}
//!     }
//! };
//! assert!(rtt < Duration::from_secs(1));
//! // The latest round trip is kept per peer, also behind a cloneable handle.
//! assert_eq!(b.behaviour().rtt(&a.local_peer_id()), Some(rtt));
//! let table = b.behaviour().rtt_table();
//! assert_eq!(table.get(&a.local_peer_id()), Some(rtt));
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! They follow rust-libp2p's ping, with which the wire protocol is compatible:
//!
//! * One outbound stream per connection, opened without dialing
//!   ([`OpenStream::no_dial`]) on that connection, and reused for every ping. The first ping
//!   goes out at once, the next one [`Config::interval`] after the previous one finished.
//!   Each ping must be answered within [`Config::timeout`].
//! * After a failure the stream is dropped and a new one opened at the next interval.
//!   **The first failure after a success (or after the connection was established) is not
//!   reported**; the following consecutive ones are. This is rust-libp2p's rule, for peers
//!   that close a ping stream after some time: re-opening then costs no spurious event. A
//!   dead connection is therefore reported after two failed pings.
//! * A remote that does not support the protocol is reported once as
//!   [`Failure::Unsupported`], and that connection is not pinged again.
//! * Inbound: every [`PING_SIZE`]-byte frame is echoed until the remote finishes the stream.
//!   Each echo must be written within [`Config::echo_timeout`]: a remote that sends pings but
//!   never reads the echoes (so our write would block forever while the transport keeps
//!   buffering its pings) gets the stream reset.
//!   A connection has at most one inbound ping stream: a new one replaces (drops) the older.
//!   So a peer holds at most one per connection, bounded by the swarm's
//!   [`SwarmConfig::max_established_per_peer`](meshwire_swarm::SwarmConfig::max_established_per_peer).
//! * Ping streams, both ways, do not keep a connection alive ([`Stream::set_keep_alive`]):
//!   pings alone never stop the swarm from closing an idle connection.
//! * Tasks and commands are bounded by the connections: per connection at most one outbound
//!   task (a ping, or the wait before one) and one inbound stream, and at most one stream
//!   request or event queued at a time; a stream on a connection the swarm did not report is
//!   reset.
//! * Ping never closes a connection itself. Act on [`Event`]s (e.g. with
//!   [`ToSwarm::CloseConnection`]) to do so.
//!
//! Frames are fixed-size: nothing read from the network sizes an allocation, and an echo
//! that differs from the ping sent is a [`Failure::Other`].

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod protocol;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{with_timeout, Outbox, Tasks, Timeout};
use meshwire_swarm::{
    FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream,
    StreamError, StreamProtocol, StreamRequestId, ToSwarm,
};

/// The protocol name, `/ipfs/ping/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");

/// Bytes in one ping and in its echo.
pub const PING_SIZE: usize = 32;

/// Settings of a [`Behaviour`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Time from the end of one ping (answered or failed) to the start of the next on the
    /// same connection (default 15 s).
    pub interval: Duration,
    /// Time a ping may take, write and echo together, before it fails with
    /// [`Failure::Timeout`] (default 20 s).
    pub timeout: Duration,
    /// Time our echo of one inbound ping may take to be written; past it the inbound stream
    /// is reset (default 20 s, as the ping timeout).
    pub echo_timeout: Duration,
}

impl Config {
    /// The defaults: a ping every 15 s, each allowed 20 s; each echo allowed 20 s.
    pub fn new() -> Self {
        Config {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(20),
            echo_timeout: Duration::from_secs(20),
        }
    }

    /// Sets [`Config::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Config::echo_timeout`].
    pub fn with_echo_timeout(mut self, echo_timeout: Duration) -> Self {
        self.echo_timeout = echo_timeout;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Why an outbound ping failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// No complete echo within [`Config::timeout`].
    #[error("ping timeout")]
    Timeout,
    /// The remote does not support `/ipfs/ping/1.0.0` (it answered `na`). Reported once per
    /// connection; the connection is not pinged again.
    #[error("ping protocol not supported by the remote")]
    Unsupported,
    /// Anything else: the stream could not be opened, failed, ended, or the echo differed.
    #[error("ping error: {0}")]
    Other(#[source] Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl Failure {
    /// A [`Failure::Other`] with `error` as its cause.
    pub fn other(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Failure::Other(Arc::new(error))
    }
}

impl From<StreamError> for Failure {
    /// [`StreamError::is_unsupported`] is [`Failure::Unsupported`], everything else
    /// [`Failure::Other`]. An I/O error of a ping stream goes through
    /// `From<io::Error> for StreamError`, which recognises a refused lazy negotiation.
    fn from(error: StreamError) -> Self {
        if error.is_unsupported() {
            Failure::Unsupported
        } else {
            Failure::other(error)
        }
    }
}

impl From<Timeout> for Failure {
    fn from(_: Timeout) -> Self {
        Failure::Timeout
    }
}

/// The failure an I/O error of a ping stream stands for.
fn stream_failure(error: io::Error) -> Failure {
    Failure::from(StreamError::from(error))
}

/// The outcome of one outbound ping.
#[derive(Debug, Clone)]
pub struct Event {
    /// The peer pinged.
    pub peer: PeerId,
    /// The connection the ping went over.
    pub connection: ConnectionId,
    /// The round-trip time, or why there is none.
    pub result: Result<Duration, Failure>,
}

/// The latest round-trip time of every connected peer that answered a ping: a cloneable,
/// thread-safe read handle on the table a [`Behaviour`] keeps up to date.
///
/// An entry is set by every successful ping (over any of the peer's connections) and removed
/// when the peer's last connection closes.
#[derive(Clone, Default)]
pub struct RttTable {
    inner: Arc<RwLock<HashMap<PeerId, Duration>>>,
}

impl RttTable {
    /// The latest round-trip time to `peer`, if it answered a ping on a connection that is
    /// still open.
    pub fn get(&self, peer: &PeerId) -> Option<Duration> {
        self.read().get(peer).copied()
    }

    /// A copy of the whole table.
    pub fn snapshot(&self) -> HashMap<PeerId, Duration> {
        self.read().clone()
    }

    /// Peers in the table.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, Duration>> {
        // The table is only ever written whole-entry at a time: a poisoned lock holds
        // consistent data.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerId, Duration>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, peer: PeerId, rtt: Duration) {
        self.write().insert(peer, rtt);
    }

    fn remove(&self, peer: &PeerId) {
        self.write().remove(peer);
    }
}

impl fmt::Debug for RttTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.read().iter()).finish()
    }
}

/// What a finished task of the behaviour reports.
enum TaskOutput {
    /// The interval after a failure elapsed: open a new stream.
    Retry,
    /// An outbound ping ended.
    Ping(Result<(Stream, Duration), Failure>),
    /// An inbound stream ended.
    InboundEnded(io::Result<u64>),
}

/// Which task: a connection's outbound side (a ping, the wait before one, or the wait
/// before a retry), or one of its inbound streams (numbered, a newer one replaces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskKey {
    Outbound(ConnectionId),
    Inbound(ConnectionId, u64),
}

/// Time the task set allows a task beyond its own deadline (a ping's timeout, a wait): the
/// task's own limit reports the failure; the task set's is only a backstop.
const BACKSTOP: Duration = Duration::from_secs(1);

/// Where the outbound side of a connection is.
enum Outbound {
    /// A stream was requested from the swarm.
    Opening(StreamRequestId),
    /// A task runs: a ping, the wait before one, or the wait before a retry.
    Running(AbortHandle),
    /// The remote does not support ping; nothing more to do.
    Unsupported,
    /// Nothing runs: the stream request could not be queued.
    Idle,
}

/// The state of one connection.
struct Conn {
    peer: PeerId,
    outbound: Outbound,
    /// Consecutive failed pings.
    failures: u32,
    /// The task answering the current inbound stream, with its id.
    inbound: Option<(u64, AbortHandle)>,
}

impl Conn {
    fn abort_all(&mut self) {
        if let Outbound::Running(h) = &self.outbound {
            h.abort();
        }
        if let Some((_, h)) = self.inbound.take() {
            h.abort();
        }
    }
}

/// The ping [`NetworkBehaviour`]: pings every connection and answers pings. See the
/// [crate docs](crate) for the rules it follows.
pub struct Behaviour {
    config: Config,
    connections: HashMap<ConnectionId, Conn>,
    /// Every timer and stream future, each abortable through the handle its connection
    /// keeps (an aborted task ends with `None`). Bounded by the connections: at most one
    /// outbound and one inbound task each.
    tasks: Tasks<TaskKey, Option<TaskOutput>>,
    /// Commands for the swarm; a stream request keeps its connection.
    outbox: Outbox<Event, ConnectionId>,
    rtts: RttTable,
    next_inbound_id: u64,
    /// Inbound streams reset because an echo could not be written in time.
    echo_timeouts: u64,
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        Behaviour {
            config,
            connections: HashMap::new(),
            // Bounded by the connections (see the field docs), which the swarm bounds.
            tasks: Tasks::new(usize::MAX),
            outbox: Outbox::new(usize::MAX),
            rtts: RttTable::default(),
            echo_timeouts: 0,
            next_inbound_id: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Inbound ping streams reset so far because an echo could not be written within
    /// [`Config::echo_timeout`] (a remote that sends pings and never reads).
    pub fn echo_timeouts(&self) -> u64 {
        self.echo_timeouts
    }

    /// The latest round-trip time to `peer` (see [`RttTable`]).
    pub fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.rtts.get(peer)
    }

    /// A read handle on the round-trip times of all peers, for other behaviours, tasks or
    /// threads. It stays valid, and current, for as long as the behaviour lives.
    pub fn rtt_table(&self) -> RttTable {
        self.rtts.clone()
    }

    /// Runs `fut` as the task `key`, abortable through the returned handle; `None` (and
    /// `fut` dropped) if the task set refuses it.
    fn spawn(
        &mut self,
        key: TaskKey,
        deadline: Duration,
        fut: impl std::future::Future<Output = TaskOutput> + Send + 'static,
    ) -> Option<AbortHandle> {
        let (handle, registration) = AbortHandle::new_pair();
        let task = async move { Abortable::new(fut, registration).await.ok() };
        match self
            .tasks
            .try_push(key, deadline.saturating_add(BACKSTOP), task)
        {
            Ok(()) => Some(handle),
            Err(full) => {
                tracing::warn!(?key, limit = full.limit, "ping: task limit reached");
                None
            }
        }
    }

    /// Queues an event; at the limit it is dropped, with a log.
    fn emit(&mut self, event: Event) {
        if let Err(full) = self.outbox.event(event) {
            tracing::warn!(
                limit = full.limit,
                "ping: command queue full; event dropped"
            );
        }
    }

    fn request_stream(&mut self, connection: ConnectionId, peer: PeerId) -> Outbound {
        let open = OpenStream::new(peer, PROTOCOL)
            .on_connection(connection)
            .no_dial();
        match self.outbox.open_stream(open, connection) {
            Ok(id) => Outbound::Opening(id),
            Err(full) => {
                tracing::warn!(%peer, %connection, limit = full.limit, "ping: command queue full; not pinging");
                Outbound::Idle
            }
        }
    }

    /// Pings on `stream` after `delay`.
    fn start_ping(
        &mut self,
        connection: ConnectionId,
        stream: Stream,
        delay: Duration,
    ) -> Outbound {
        let timeout = self.config.timeout;
        // Timers are created inside the future, so on the runtime that polls it.
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let ping = protocol::send_ping(stream, stream_failure);
            TaskOutput::Ping(with_timeout(timeout, ping).await)
        };
        let deadline = delay.saturating_add(timeout);
        self.spawn(TaskKey::Outbound(connection), deadline, fut)
            .map_or(Outbound::Idle, Outbound::Running)
    }

    fn start_retry_timer(&mut self, connection: ConnectionId) -> Outbound {
        let interval = self.config.interval;
        let fut = async move {
            tokio::time::sleep(interval).await;
            TaskOutput::Retry
        };
        self.spawn(TaskKey::Outbound(connection), interval, fut)
            .map_or(Outbound::Idle, Outbound::Running)
    }

    /// A failed ping or stream request on `connection`.
    fn on_failure(&mut self, connection: ConnectionId, failure: Failure) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let peer = conn.peer;
        if let Failure::Unsupported = failure {
            tracing::debug!(%peer, %connection, "ping: remote does not support the protocol");
            conn.outbound = Outbound::Unsupported;
            self.emit(Event {
                peer,
                connection,
                result: Err(Failure::Unsupported),
            });
            return;
        }
        conn.failures = conn.failures.saturating_add(1);
        let report = conn.failures > 1;
        tracing::debug!(%peer, %connection, error = %failure, failures = conn.failures, "ping failed");
        let outbound = self.start_retry_timer(connection);
        self.set_outbound(connection, outbound);
        if report {
            self.emit(Event {
                peer,
                connection,
                result: Err(failure),
            });
        }
    }

    fn set_outbound(&mut self, connection: ConnectionId, outbound: Outbound) {
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.outbound = outbound;
        }
    }

    fn on_task(&mut self, key: TaskKey, output: Result<Option<TaskOutput>, Timeout>) {
        let output = match (key, output) {
            // Aborted: the future, and the stream it owned, are dropped now.
            (_, Ok(None)) => return,
            (_, Ok(Some(output))) => output,
            (TaskKey::Outbound(_), Err(t)) => TaskOutput::Ping(Err(t.into())),
            (TaskKey::Inbound(..), Err(t)) => {
                TaskOutput::InboundEnded(Err(io::Error::new(io::ErrorKind::TimedOut, t)))
            }
        };
        match (key, output) {
            (TaskKey::Inbound(connection, id), TaskOutput::InboundEnded(result)) => {
                match &result {
                    Ok(n) => {
                        tracing::trace!(%connection, answered = n, "ping: inbound stream ended")
                    }
                    Err(e) => {
                        if e.kind() == io::ErrorKind::TimedOut {
                            self.echo_timeouts += 1;
                        }
                        tracing::debug!(%connection, error = %e, "ping: inbound stream failed")
                    }
                }
                if let Some(conn) = self.connections.get_mut(&connection) {
                    if matches!(conn.inbound, Some((current, _)) if current == id) {
                        conn.inbound = None;
                    }
                }
            }
            (TaskKey::Outbound(connection), TaskOutput::Retry) => {
                let Some(conn) = self.connections.get(&connection) else {
                    return;
                };
                let peer = conn.peer;
                let outbound = self.request_stream(connection, peer);
                self.set_outbound(connection, outbound);
            }
            (TaskKey::Outbound(connection), TaskOutput::Ping(Ok((stream, rtt)))) => {
                let Some(conn) = self.connections.get_mut(&connection) else {
                    return;
                };
                let peer = conn.peer;
                conn.failures = 0;
                tracing::trace!(%peer, %connection, ?rtt, "ping answered");
                self.rtts.set(peer, rtt);
                let outbound = self.start_ping(connection, stream, self.config.interval);
                self.set_outbound(connection, outbound);
                self.emit(Event {
                    peer,
                    connection,
                    result: Ok(rtt),
                });
            }
            (TaskKey::Outbound(connection), TaskOutput::Ping(Err(failure))) => {
                self.on_failure(connection, failure)
            }
            // Outputs come from the tasks their keys name.
            (key, _) => tracing::debug!(?key, "ping: task output of another kind ignored"),
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::new(Config::default())
    }
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour")
            .field("config", &self.config)
            .field("connections", &self.connections.len())
            .field("tasks", &self.tasks.len())
            .field("outbox", &self.outbox)
            .field("rtts", &self.rtts)
            .finish_non_exhaustive()
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                peer, connection, ..
            } => {
                if let Some(mut old) = self.connections.remove(&connection) {
                    old.abort_all();
                }
                let outbound = self.request_stream(connection, peer);
                self.connections.insert(
                    connection,
                    Conn {
                        peer,
                        outbound,
                        failures: 0,
                        inbound: None,
                    },
                );
            }
            FromSwarm::ConnectionClosed {
                peer,
                connection,
                remaining_established,
                ..
            } => {
                if let Some(mut conn) = self.connections.remove(&connection) {
                    conn.abort_all();
                    if let Outbound::Opening(id) = conn.outbound {
                        self.outbox.take_stream(id);
                    }
                }
                if remaining_established == 0 {
                    self.rtts.remove(&peer);
                }
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            mut stream,
            ..
        } = inbound;
        if !self.connections.contains_key(&connection) {
            tracing::debug!(%peer, %connection, "ping: inbound stream on an unknown connection; resetting");
            stream.reset();
            return;
        }
        stream.set_keep_alive(false);
        let id = self.next_inbound_id;
        self.next_inbound_id = self.next_inbound_id.wrapping_add(1);
        let echo_timeout = self.config.echo_timeout;
        let fut = async move {
            let result = protocol::echo(&mut stream, echo_timeout).await;
            // A remote that stopped reading gets an abort. On other errors the stream is
            // dropped, which finishes it gracefully: echoes already written still arrive.
            if matches!(&result, Err(e) if e.kind() == io::ErrorKind::TimedOut) {
                stream.reset();
            }
            TaskOutput::InboundEnded(result)
        };
        // The stream lives as long as the remote pings; each echo has its own limit.
        let Some(handle) = self.spawn(TaskKey::Inbound(connection, id), Duration::MAX, fut) else {
            return;
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            if let Some((_, old)) = conn.inbound.replace((id, handle)) {
                tracing::debug!(%peer, %connection, "ping: new inbound stream replaces the old one");
                old.abort();
            }
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(connection) = self.outbox.take_stream(result.id) else {
            // A request of a connection that closed since: the stream, if any, is dropped.
            return;
        };
        let is_current = matches!(
            self.connections.get(&connection),
            Some(Conn { outbound: Outbound::Opening(id), .. }) if *id == result.id
        );
        if !is_current {
            return;
        }
        match result.result {
            Ok(mut out) => {
                out.stream.set_keep_alive(false);
                let outbound = self.start_ping(connection, out.stream, Duration::ZERO);
                self.set_outbound(connection, outbound);
            }
            Err(e) => self.on_failure(connection, Failure::from(e)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            match self.tasks.poll_next(cx) {
                Poll::Ready((key, output)) => self.on_task(key, output),
                // Every task registered `cx`; new tasks and commands wake it.
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests;
