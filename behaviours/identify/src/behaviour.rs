//! [`Behaviour`]: identify every connection, answer the remote's requests, push updates.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::io::AsyncWriteExt;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId, PublicKey};
use meshwire_swarm::{
    ConnectionDenied, FromSwarm, InboundStream, ListenerId, NetworkBehaviour, OpenStream,
    OutboundStreamResult, Stream, StreamProtocol, StreamRequestId, Timer, ToSwarm,
};
use multiaddr::Multiaddr;
use tokio::time::Instant;

use crate::protocol::{
    encode_frame, read_message, wire, write_and_close, Error, Info, DEFAULT_MAX_MESSAGE_SIZE,
    PROTOCOL_NAME, PUSH_PROTOCOL_NAME,
};

/// The protocol version sent by default (the one the spec names).
pub const DEFAULT_PROTOCOL_VERSION: &str = "ipfs/0.1.0";

/// Inbound identify and push streams handled at once on one connection; more are reset.
pub const MAX_INBOUND_STREAMS_PER_CONNECTION: usize = 4;

/// Addresses of a peer's cached info that [`Behaviour`] adds to a dial of that peer.
pub const MAX_DIAL_ADDRESSES: usize = 8;

/// Confirmed external addresses remembered for advertising; more are ignored.
pub const MAX_EXTERNAL_ADDRESSES: usize = 32;

/// Settings of a [`Behaviour`].
///
/// ```
/// use std::time::Duration;
/// use meshwire_core::Keypair;
/// use meshwire_identify::Config;
///
/// let config = Config::new("ipfs/0.1.0", Keypair::generate().public())
///     .with_agent_version("my-app/1.0.0")
///     .with_interval(Duration::from_secs(60))
///     .with_push_listen_addr_updates(true);
/// assert_eq!(config.max_message_size, 4096);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// The protocol family we announce (default [`DEFAULT_PROTOCOL_VERSION`]).
    pub protocol_version: String,
    /// Our implementation (default `meshwire/<crate version>`).
    pub agent_version: String,
    /// Our public key; it must be the key of the swarm's identity.
    pub local_public_key: PublicKey,
    /// How often every connection is identified again (default 5 minutes; zero never
    /// re-identifies).
    pub interval: Duration,
    /// Push our info to every connected peer when our listen addresses, confirmed external
    /// addresses or protocols change (default `false`).
    pub push_listen_addr_updates: bool,
    /// Bound of one message in either direction, without its length prefix (default 4096).
    pub max_message_size: usize,
    /// Time for one stream exchange, after the stream is open (default 10 s).
    pub timeout: Duration,
    /// Peers whose latest info is kept; the least recently updated is dropped first
    /// (default 100).
    pub cache_size: usize,
}

impl Config {
    /// The defaults, announcing `protocol_version` and `local_public_key`.
    pub fn new(protocol_version: impl Into<String>, local_public_key: PublicKey) -> Self {
        Config {
            protocol_version: protocol_version.into(),
            agent_version: concat!("meshwire/", env!("CARGO_PKG_VERSION")).to_owned(),
            local_public_key,
            interval: Duration::from_secs(5 * 60),
            push_listen_addr_updates: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            timeout: Duration::from_secs(10),
            cache_size: 100,
        }
    }

    /// The defaults with the protocol version [`DEFAULT_PROTOCOL_VERSION`].
    pub fn from_public_key(local_public_key: PublicKey) -> Self {
        Config::new(DEFAULT_PROTOCOL_VERSION, local_public_key)
    }

    /// Sets [`Config::agent_version`].
    pub fn with_agent_version(mut self, agent_version: impl Into<String>) -> Self {
        self.agent_version = agent_version.into();
        self
    }

    /// Sets [`Config::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`Config::push_listen_addr_updates`].
    pub fn with_push_listen_addr_updates(mut self, push: bool) -> Self {
        self.push_listen_addr_updates = push;
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Sets [`Config::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Config::cache_size`].
    pub fn with_cache_size(mut self, cache_size: usize) -> Self {
        self.cache_size = cache_size;
        self
    }
}

/// What [`Behaviour`] reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer answered our identify request.
    Received {
        /// The peer.
        peer: PeerId,
        /// The connection it answered on.
        connection: ConnectionId,
        /// What it told us.
        info: Info,
    },
    /// We answered a peer's identify request.
    Sent {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
    /// A peer pushed an update of its info; `info` is our view after applying it (unlike
    /// rust-libp2p, where `Pushed` reports a push we sent).
    Pushed {
        /// The peer.
        peer: PeerId,
        /// The connection it pushed on.
        connection: ConnectionId,
        /// Its info, the push applied.
        info: Info,
    },
    /// We pushed our info to a peer.
    PushSent {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
    /// An exchange with a peer failed.
    Error {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What went wrong.
        error: Error,
    },
}

/// What a stream request of ours is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identify,
    Push,
}

/// The end of a stream exchange.
enum Done {
    /// Our identify request got an answer (or failed).
    Identify(Result<wire::Identify, Error>),
    /// We answered a request.
    Answered(Result<(), Error>),
    /// We pushed.
    Pushed(Result<(), Error>),
    /// A peer pushed to us.
    PushReceived(Result<wire::Identify, Error>),
}

struct Completed {
    peer: PeerId,
    connection: ConnectionId,
    done: Done,
}

/// Our state of one connection.
struct Conn {
    peer: PeerId,
    /// The remote's address, sent back as its observed address.
    remote_addr: Multiaddr,
    /// Our identify request waiting for its stream.
    identify_request: Option<StreamRequestId>,
    /// Our identify request's stream is being read.
    identify_running: bool,
    /// When the next identify request is due (`None` while one is outstanding).
    next_identify: Option<Instant>,
    /// Our push waiting for its stream.
    push_request: Option<StreamRequestId>,
    /// Our push is being written.
    push_running: bool,
    /// Our info changed while a push was outstanding: push again after it.
    push_again: bool,
    /// Inbound streams being handled.
    inbound: usize,
}

impl Conn {
    fn identify_outstanding(&self) -> bool {
        self.identify_request.is_some() || self.identify_running
    }

    fn push_outstanding(&self) -> bool {
        self.push_request.is_some() || self.push_running
    }
}

/// The latest info of connected peers, bounded; the least recently updated goes first.
struct PeerCache {
    entries: HashMap<PeerId, (Info, u64)>,
    clock: u64,
    capacity: usize,
}

impl PeerCache {
    fn new(capacity: usize) -> Self {
        PeerCache {
            entries: HashMap::new(),
            clock: 0,
            capacity,
        }
    }

    fn get(&self, peer: &PeerId) -> Option<&Info> {
        self.entries.get(peer).map(|(info, _)| info)
    }

    fn insert(&mut self, peer: PeerId, info: Info) {
        if self.capacity == 0 {
            return;
        }
        self.clock += 1;
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, stamp))| *stamp)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(peer, (info, self.clock));
    }

    fn remove(&mut self, peer: &PeerId) {
        self.entries.remove(peer);
    }
}

/// The identify protocol for all peers: asks every new connection who is on the other end,
/// answers the remote's questions, re-identifies every [`Config::interval`], and pushes
/// updates when [`Config::push_listen_addr_updates`] is on.
///
/// Accepts `/ipfs/id/1.0.0` and `/ipfs/id/push/1.0.0`. On every [`Event::Received`] it also
/// reports the address the remote observed for us as
/// [`ToSwarm::NewExternalAddrCandidate`] and each newly learnt listen address of the peer as
/// [`ToSwarm::NewExternalAddrOfPeer`]. See the crate documentation for an example.
pub struct Behaviour {
    config: Config,
    /// Our listen addresses, per listener.
    listen_addrs: HashMap<ListenerId, Vec<Multiaddr>>,
    /// Our confirmed external addresses.
    external_addrs: Vec<Multiaddr>,
    /// Every protocol of the local node.
    local_protocols: Vec<StreamProtocol>,
    connections: HashMap<ConnectionId, Conn>,
    /// Open connections of each peer, oldest first.
    peers: HashMap<PeerId, Vec<ConnectionId>>,
    cache: PeerCache,
    /// Our stream requests in flight.
    requests: HashMap<StreamRequestId, (ConnectionId, Kind)>,
    streams: FuturesUnordered<BoxFuture<'static, Completed>>,
    /// Re-identify deadlines; entries a connection no longer expects are skipped.
    timers: BinaryHeap<Reverse<(Instant, ConnectionId)>>,
    sleep: Timer,
    /// Push to every peer at the next poll.
    push_all: bool,
    queue: VecDeque<ToSwarm<Event>>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("config", &self.config)
            .field("connections", &self.connections.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        let cache = PeerCache::new(config.cache_size);
        Behaviour {
            config,
            listen_addrs: HashMap::new(),
            external_addrs: Vec::new(),
            local_protocols: Vec::new(),
            connections: HashMap::new(),
            peers: HashMap::new(),
            cache,
            requests: HashMap::new(),
            streams: FuturesUnordered::new(),
            timers: BinaryHeap::new(),
            sleep: Timer::default(),
            push_all: false,
            queue: VecDeque::new(),
            waker: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest info of a connected peer, if it has answered (and is still cached).
    pub fn info(&self, peer: &PeerId) -> Option<&Info> {
        self.cache.get(peer)
    }

    /// Pushes our info to these peers now (those connected), whatever
    /// [`Config::push_listen_addr_updates`] says.
    pub fn push<I: IntoIterator<Item = PeerId>>(&mut self, peers: I) {
        for peer in peers {
            self.push_to(peer);
        }
        self.wake();
    }

    /// The addresses we advertise: listen addresses, then confirmed external ones.
    fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let mut listeners: Vec<_> = self.listen_addrs.iter().collect();
        listeners.sort_by_key(|(id, _)| **id);
        for addr in listeners
            .into_iter()
            .flat_map(|(_, addrs)| addrs)
            .chain(&self.external_addrs)
        {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Our message for a remote whose address we see as `observed`, trimmed of listen
    /// addresses until it fits [`Config::max_message_size`].
    fn local_frame(&self, observed: Option<&Multiaddr>) -> Result<Vec<u8>, Error> {
        let mut msg = wire::Identify {
            protocol_version: Some(self.config.protocol_version.clone()),
            agent_version: Some(self.config.agent_version.clone()),
            public_key: Some(self.config.local_public_key.encode_protobuf()),
            listen_addrs: self.advertised_addrs().iter().map(|a| a.to_vec()).collect(),
            observed_addr: observed.filter(|a| !a.is_empty()).map(|a| a.to_vec()),
            protocols: self
                .local_protocols
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            signed_peer_record: None,
        };
        let mut dropped = 0usize;
        loop {
            match encode_frame(&msg, self.config.max_message_size) {
                Err(Error::TooLarge { .. }) if !msg.listen_addrs.is_empty() => {
                    msg.listen_addrs.pop();
                    dropped += 1;
                }
                other => {
                    if dropped > 0 {
                        tracing::warn!(
                            dropped,
                            max = self.config.max_message_size,
                            "identify: our message is too large; listen addresses left out"
                        );
                    }
                    return other;
                }
            }
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn spawn(&mut self, fut: impl Future<Output = Completed> + Send + 'static) {
        self.streams.push(fut.boxed());
        self.wake();
    }

    fn request_identify(&mut self, connection: ConnectionId) {
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.identify_outstanding() {
            return;
        }
        let open = OpenStream::new(c.peer, PROTOCOL_NAME)
            .on_connection(connection)
            .no_dial();
        c.identify_request = Some(open.id);
        c.next_identify = None;
        self.requests.insert(open.id, (connection, Kind::Identify));
        tracing::trace!(peer = %c.peer, %connection, "identify: requesting");
        self.queue.push_back(ToSwarm::OpenStream(open));
        self.wake();
    }

    fn schedule_identify(&mut self, connection: ConnectionId) {
        if self.config.interval.is_zero() {
            return;
        }
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        let at = Instant::now() + self.config.interval;
        c.next_identify = Some(at);
        self.timers.push(Reverse((at, connection)));
        self.wake();
    }

    /// Pushes to `peer` on its oldest connection, unless it told us it does not take pushes.
    fn push_to(&mut self, peer: PeerId) {
        if let Some(info) = self.cache.get(&peer) {
            if !info.protocols.contains(&PUSH_PROTOCOL_NAME) {
                return;
            }
        }
        let Some(&connection) = self.peers.get(&peer).and_then(|c| c.first()) else {
            return;
        };
        self.push_on(connection);
    }

    fn push_on(&mut self, connection: ConnectionId) {
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.push_outstanding() {
            c.push_again = true;
            return;
        }
        let open = OpenStream::new(c.peer, PUSH_PROTOCOL_NAME)
            .on_connection(connection)
            .no_dial();
        c.push_request = Some(open.id);
        c.push_again = false;
        self.requests.insert(open.id, (connection, Kind::Push));
        tracing::trace!(peer = %c.peer, %connection, "identify: pushing");
        self.queue.push_back(ToSwarm::OpenStream(open));
    }

    /// After a possible change of what we advertise: push if it changed and we are
    /// configured to.
    fn after_local_change(&mut self, changed: bool) {
        if changed && self.config.push_listen_addr_updates && !self.peers.is_empty() {
            self.push_all = true;
            self.wake();
        }
    }

    fn on_completed(&mut self, completed: Completed) {
        let Completed {
            peer,
            connection,
            done,
        } = completed;
        let Some(c) = self.connections.get_mut(&connection) else {
            tracing::debug!(%peer, %connection, "identify: exchange ended after its connection closed");
            return;
        };
        match done {
            Done::Identify(result) => {
                c.identify_running = false;
                self.schedule_identify(connection);
                let info = result.and_then(|msg| Info::from_wire(&peer, msg));
                match info {
                    Ok(info) => self.on_received(peer, connection, info),
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
            Done::Answered(result) => {
                c.inbound = c.inbound.saturating_sub(1);
                match result {
                    Ok(()) => {
                        tracing::debug!(%peer, %connection, "identify: answered");
                        self.queue
                            .push_back(ToSwarm::GenerateEvent(Event::Sent { peer, connection }));
                    }
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
            Done::Pushed(result) => {
                c.push_running = false;
                let again = std::mem::take(&mut c.push_again);
                match result {
                    Ok(()) => {
                        tracing::debug!(%peer, %connection, "identify: pushed");
                        self.queue
                            .push_back(ToSwarm::GenerateEvent(Event::PushSent {
                                peer,
                                connection,
                            }));
                    }
                    Err(error) if error.is_unsupported() => {
                        tracing::debug!(%peer, %connection, "identify: peer does not take pushes");
                    }
                    Err(error) => self.report_error(peer, connection, error),
                }
                if again {
                    self.push_on(connection);
                }
            }
            Done::PushReceived(result) => {
                c.inbound = c.inbound.saturating_sub(1);
                let merged = result.and_then(|msg| {
                    let mut info = match self.cache.get(&peer) {
                        Some(info) => info.clone(),
                        None => Info {
                            public_key: peer.public_key().ok_or(Error::MissingPublicKey)?,
                            protocol_version: String::new(),
                            agent_version: String::new(),
                            listen_addrs: Vec::new(),
                            protocols: Vec::new(),
                            observed_addr: Multiaddr::empty(),
                        },
                    };
                    info.apply_push(&peer, msg)?;
                    Ok(info)
                });
                match merged {
                    Ok(info) => {
                        tracing::debug!(%peer, %connection, "identify: received a push");
                        self.announce_peer_addrs(peer, &info);
                        self.announce_peer_protocols(peer, connection, &info);
                        self.cache.insert(peer, info.clone());
                        self.queue.push_back(ToSwarm::GenerateEvent(Event::Pushed {
                            peer,
                            connection,
                            info,
                        }));
                    }
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
        }
    }

    fn on_received(&mut self, peer: PeerId, connection: ConnectionId, info: Info) {
        tracing::debug!(
            %peer,
            %connection,
            agent = %info.agent_version,
            observed = %info.observed_addr,
            "identify: received info"
        );
        let observed = info.observed_addr.clone();
        self.announce_peer_addrs(peer, &info);
        self.announce_peer_protocols(peer, connection, &info);
        self.cache.insert(peer, info.clone());
        self.queue
            .push_back(ToSwarm::GenerateEvent(Event::Received {
                peer,
                connection,
                info,
            }));
        if !observed.is_empty() {
            self.queue
                .push_back(ToSwarm::NewExternalAddrCandidate(observed));
        }
    }

    /// Shares the peer's protocols with every behaviour (kademlia adds DHT servers to its
    /// routing table from them).
    fn announce_peer_protocols(&mut self, peer: PeerId, connection: ConnectionId, info: &Info) {
        self.queue.push_back(ToSwarm::RemoteProtocolsChanged {
            peer,
            connection,
            protocols: info.protocols.clone(),
        });
    }

    /// Reports the listen addresses of `info` not in the peer's cached info.
    fn announce_peer_addrs(&mut self, peer: PeerId, info: &Info) {
        let known = self.cache.get(&peer).map(|i| i.listen_addrs.as_slice());
        for addr in &info.listen_addrs {
            if known.is_some_and(|k| k.contains(addr)) {
                continue;
            }
            self.queue.push_back(ToSwarm::NewExternalAddrOfPeer {
                peer,
                addr: addr.clone(),
            });
        }
    }

    fn report_error(&mut self, peer: PeerId, connection: ConnectionId, error: Error) {
        tracing::debug!(%peer, %connection, %error, "identify: exchange failed");
        self.queue.push_back(ToSwarm::GenerateEvent(Event::Error {
            peer,
            connection,
            error,
        }));
    }

    /// Fires due re-identifications and arms the timer; `true` if any fired.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let mut fired = false;
        // Two rounds at most: the second only if the sleep completed right after the first.
        for _ in 0..2 {
            let now = Instant::now();
            while let Some(&Reverse((at, connection))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let due = self
                    .connections
                    .get(&connection)
                    .is_some_and(|c| c.next_identify == Some(at));
                if due {
                    self.request_identify(connection);
                    fired = true;
                }
            }
            let next = self.timers.peek().map(|&Reverse((at, _))| at);
            if self.sleep.poll_at(next, cx).is_pending() {
                return fired;
            }
        }
        fired
    }
}

/// Resets `stream` after a failed exchange, so the remote sees an abort rather than a clean
/// end (a dropped QUIC stream would be finished gracefully).
fn reset_on_error<T>(stream: &mut Stream, result: &Result<T, Error>) {
    if result.is_err() {
        stream.reset();
    }
}

/// Runs `fut` with the exchange timeout.
async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(Error::Timeout))
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL_NAME, PUSH_PROTOCOL_NAME]
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(info) = peer.and_then(|p| self.cache.get(&p)) else {
            return Ok(Vec::new());
        };
        Ok(info
            .listen_addrs
            .iter()
            .filter(|a| !addresses.contains(a))
            .take(MAX_DIAL_ADDRESSES)
            .cloned()
            .collect())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                ..
            } => {
                self.connections.insert(
                    connection,
                    Conn {
                        peer,
                        remote_addr: endpoint.remote_addr().clone(),
                        identify_request: None,
                        identify_running: false,
                        next_identify: None,
                        push_request: None,
                        push_running: false,
                        push_again: false,
                        inbound: 0,
                    },
                );
                self.peers.entry(peer).or_default().push(connection);
                self.request_identify(connection);
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                if let Some(c) = self.connections.remove(&connection) {
                    for id in [c.identify_request, c.push_request].into_iter().flatten() {
                        self.requests.remove(&id);
                    }
                }
                if let Some(conns) = self.peers.get_mut(&peer) {
                    conns.retain(|c| *c != connection);
                    if conns.is_empty() {
                        self.peers.remove(&peer);
                        self.cache.remove(&peer);
                    }
                }
            }
            FromSwarm::NewListenAddr { listener, addr } => {
                let addrs = self.listen_addrs.entry(listener).or_default();
                let fresh = !addrs.contains(addr);
                if fresh {
                    addrs.push(addr.clone());
                }
                self.after_local_change(fresh);
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                let known = self.listen_addrs.remove(&listener).is_some();
                self.after_local_change(known);
            }
            FromSwarm::ExternalAddrConfirmed { addr } => {
                let fresh = !self.external_addrs.contains(addr)
                    && self.external_addrs.len() < MAX_EXTERNAL_ADDRESSES;
                if fresh {
                    self.external_addrs.push(addr.clone());
                }
                self.after_local_change(fresh);
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                let before = self.external_addrs.len();
                self.external_addrs.retain(|a| a != addr);
                let removed = self.external_addrs.len() != before;
                self.after_local_change(removed);
            }
            FromSwarm::LocalProtocolsChanged { protocols } => {
                let changed = self.local_protocols != protocols;
                if changed {
                    self.local_protocols = protocols.to_vec();
                }
                self.after_local_change(changed);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            protocol,
            mut stream,
        } = inbound;
        let Some(c) = self.connections.get_mut(&connection) else {
            tracing::debug!(%peer, %connection, "identify: stream on an unknown connection; resetting");
            stream.reset();
            return;
        };
        if c.inbound >= MAX_INBOUND_STREAMS_PER_CONNECTION {
            tracing::debug!(%peer, %connection, %protocol, "identify: too many inbound streams; resetting");
            stream.reset();
            return;
        }
        c.inbound += 1;
        let timeout = self.config.timeout;
        if protocol == PROTOCOL_NAME {
            let observed = c.remote_addr.clone();
            let frame = self.local_frame(Some(&observed));
            self.spawn(async move {
                let result = match frame {
                    Ok(frame) => with_timeout(timeout, write_and_close(&mut stream, &frame)).await,
                    Err(e) => Err(e),
                };
                reset_on_error(&mut stream, &result);
                Completed {
                    peer,
                    connection,
                    done: Done::Answered(result),
                }
            });
        } else if protocol == PUSH_PROTOCOL_NAME {
            let max = self.config.max_message_size;
            self.spawn(async move {
                let result = with_timeout(timeout, async {
                    let msg = read_message(&mut stream, max).await?;
                    // We write nothing; finish our side cleanly (best effort).
                    let _ = stream.close().await;
                    Ok(msg)
                })
                .await;
                reset_on_error(&mut stream, &result);
                Completed {
                    peer,
                    connection,
                    done: Done::PushReceived(result),
                }
            });
        } else {
            c.inbound -= 1;
            tracing::debug!(%peer, %connection, %protocol, "identify: stream of a foreign protocol; resetting");
            stream.reset();
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some((connection, kind)) = self.requests.remove(&result.id) else {
            return;
        };
        let peer = result.peer;
        let Some(c) = self.connections.get_mut(&connection) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        match kind {
            Kind::Identify => c.identify_request = None,
            Kind::Push => c.push_request = None,
        }
        let stream = match result.result {
            Ok(out) => out.stream,
            Err(e) => {
                let error = Error::Stream(e);
                match kind {
                    Kind::Identify => {
                        self.schedule_identify(connection);
                        self.report_error(peer, connection, error);
                    }
                    Kind::Push => {
                        let again = std::mem::take(&mut c.push_again);
                        if error.is_unsupported() {
                            tracing::debug!(%peer, %connection, "identify: peer does not take pushes");
                        } else {
                            self.report_error(peer, connection, error);
                        }
                        if again {
                            self.push_on(connection);
                        }
                    }
                }
                self.wake();
                return;
            }
        };
        let timeout = self.config.timeout;
        match kind {
            Kind::Identify => {
                c.identify_running = true;
                let max = self.config.max_message_size;
                self.spawn(identify_request(stream, peer, connection, max, timeout));
            }
            Kind::Push => {
                c.push_running = true;
                let observed = c.remote_addr.clone();
                let frame = self.local_frame(Some(&observed));
                self.spawn(async move {
                    let mut stream = stream;
                    let result = match frame {
                        Ok(frame) => {
                            with_timeout(timeout, write_and_close(&mut stream, &frame)).await
                        }
                        Err(e) => Err(e),
                    };
                    reset_on_error(&mut stream, &result);
                    Completed {
                        peer,
                        connection,
                        done: Done::Pushed(result),
                    }
                });
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        loop {
            if let Some(cmd) = self.queue.pop_front() {
                return Poll::Ready(cmd);
            }
            if std::mem::take(&mut self.push_all) {
                let peers: Vec<PeerId> = self.peers.keys().copied().collect();
                for peer in peers {
                    self.push_to(peer);
                }
                continue;
            }
            if let Poll::Ready(Some(completed)) = self.streams.poll_next_unpin(cx) {
                self.on_completed(completed);
                continue;
            }
            if self.poll_timers(cx) {
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Asks for the remote's info on `stream`: finish our side, read its answer.
async fn identify_request(
    mut stream: Stream,
    peer: PeerId,
    connection: ConnectionId,
    max: usize,
    timeout: Duration,
) -> Completed {
    let result = with_timeout(timeout, async {
        // Finishing our side first also waits for the remote's (lazy) protocol confirmation,
        // so a refusal is reported as `StreamError::UnsupportedProtocols`.
        stream.close().await.map_err(Error::from_io)?;
        read_message(&mut stream, max).await
    })
    .await;
    reset_on_error(&mut stream, &result);
    Completed {
        peer,
        connection,
        done: Done::Identify(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    fn info(n: u8) -> Info {
        let key = Keypair::from_secret_bytes([n; 32]).public();
        Info {
            public_key: key,
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: vec![format!("/ip4/10.0.0.{n}/udp/1/quic-v1").parse().unwrap()],
            protocols: Vec::new(),
            observed_addr: Multiaddr::empty(),
        }
    }

    #[test]
    fn cache_is_bounded_and_drops_the_oldest() {
        let mut cache = PeerCache::new(2);
        let (a, b, c) = (info(1), info(2), info(3));
        cache.insert(a.peer_id(), a.clone());
        cache.insert(b.peer_id(), b.clone());
        // Refreshing a makes b the oldest.
        cache.insert(a.peer_id(), a.clone());
        cache.insert(c.peer_id(), c.clone());
        assert!(cache.get(&a.peer_id()).is_some());
        assert!(cache.get(&b.peer_id()).is_none());
        assert!(cache.get(&c.peer_id()).is_some());
        assert_eq!(cache.entries.len(), 2);
        let mut none = PeerCache::new(0);
        none.insert(a.peer_id(), a);
        assert!(none.entries.is_empty());
    }

    #[test]
    fn config_defaults() {
        let key = Keypair::generate().public();
        let c = Config::from_public_key(key);
        assert_eq!(c.protocol_version, "ipfs/0.1.0");
        assert_eq!(
            c.agent_version,
            format!("meshwire/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.interval, Duration::from_secs(300));
        assert!(!c.push_listen_addr_updates);
        assert_eq!(c.max_message_size, 4096);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn our_message_is_trimmed_to_fit() {
        let key = Keypair::generate();
        let mut b =
            Behaviour::new(Config::from_public_key(key.public()).with_max_message_size(300));
        let addrs: Vec<Multiaddr> = (0..50)
            .map(|i| format!("/ip4/10.0.0.{i}/udp/4001/quic-v1").parse().unwrap())
            .collect();
        b.listen_addrs.insert(ListenerId::next(), addrs);
        let frame = b.local_frame(None).unwrap();
        assert!(frame.len() <= 302);
        let (msg, _) = crate::protocol::decode_frame(&frame, 300).unwrap().unwrap();
        let info = Info::from_wire(&key.peer_id(), msg).unwrap();
        assert!(!info.listen_addrs.is_empty() && info.listen_addrs.len() < 50);
    }

    #[test]
    fn dial_addresses_come_from_the_cache() {
        let key = Keypair::generate();
        let mut b = Behaviour::new(Config::from_public_key(key.public()));
        let mut i = info(9);
        i.listen_addrs = (0..20)
            .map(|n| format!("/ip4/10.0.1.{n}/udp/1/quic-v1").parse().unwrap())
            .collect();
        let peer = i.peer_id();
        b.cache.insert(peer, i.clone());
        let extra = b
            .handle_pending_outbound_connection(
                ConnectionId::next(),
                Some(peer),
                &i.listen_addrs[..1],
            )
            .unwrap();
        assert_eq!(extra.len(), MAX_DIAL_ADDRESSES);
        assert!(!extra.contains(&i.listen_addrs[0]));
        assert!(b
            .handle_pending_outbound_connection(ConnectionId::next(), None, &[])
            .unwrap()
            .is_empty());
    }
}
