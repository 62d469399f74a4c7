//! [`Behaviour`]: the [`KadEngine`] driven over a meshwire [`Swarm`](meshwire_swarm::Swarm).
//!
//! The behaviour is the core's driver (see the [crate docs](crate#driving-the-core-for-the-swarm)):
//!
//! * **Outbound.** Every [`KadTransmit`] becomes a
//!   [`ToSwarm::OpenStream`] for `/ipfs/kad/1.0.0` (dialing the peer if needed, with the
//!   addresses of the request, the routing table and identify given to the swarm through
//!   [`NetworkBehaviour::handle_pending_outbound_connection`]). On the stream it writes the
//!   length-prefixed request, reads one response (bounded by
//!   [`KadConfig::max_message_size`], within [`KadConfig::request_timeout`]) and reports it to
//!   [`KadEngine::handle_response`] with the address we dialed if the stream's connection is one we
//!   dialed (the only address a response puts in the routing table), or the failure to
//!   [`KadEngine::handle_request_failed`]. A request that cannot be encoded is a local problem,
//!   reported with [`KadEngine::handle_request_unsendable`]: its query fails, the peer is not
//!   blamed. ADD_PROVIDER has no response: the request is written and the stream finished.
//!   One request per stream, as rust-libp2p does.
//! * **Inbound.** In server mode the behaviour claims `/ipfs/kad/1.0.0`. It reads requests
//!   (bounded), answers each through [`KadEngine::handle_request`], and keeps reading on the same
//!   stream until the remote finishes it, as rust-libp2p allows. A peer has at most
//!   [`Config::max_inbound_streams_per_peer`] inbound streams at once: past that, a stream
//!   waiting idle for its next request is closed to make room (rust-libp2p's rule), else the
//!   new stream is reset. Malformed or oversized requests reset the stream and are reported as
//!   [`Event::InboundFailure`]; nothing read from the network can panic or grow memory beyond
//!   the bounds.
//! * **Time.** One tokio `Sleep` armed at [`KadEngine::poll_timeout`].
//! * **Routing table.** When identify reports a peer's protocols
//!   ([`FromSwarm::RemoteProtocolsChanged`]) and they include `/ipfs/kad/1.0.0`, the peer is
//!   added with the addresses remembered for it: those [`FromSwarm::NewExternalAddrOfPeer`]
//!   reported (its identify listen addresses) and the addresses we dialed it at. A peer with
//!   neither, which only ever dialed us, is added with the address its inbound QUIC
//!   connection comes from: QUIC implementations that listen (meshwire, rust-libp2p) dial from
//!   their listening socket, so that address is where the peer listens. Other transports'
//!   inbound addresses (e.g. a TCP connection's ephemeral port) are never used. At most
//!   [`KadConfig::max_addrs_per_peer`] addresses of each kind are remembered per peer, for at
//!   most [`Config::max_address_cache_peers`] peers, connected peers being forgotten last.
//!   A peer whose protocols no longer include it is removed. Bootstrap peers are added with
//!   [`Behaviour::add_address`].
//! * **Connection manager.** A connected peer entering the routing table is tagged
//!   ([`Config::conn_manager_tag`], `"kad"` = 5 by default, as go-libp2p's kad-dht tags its
//!   routing-table peers) and untagged when it leaves. The connection manager forgets a
//!   peer's tags when its last connection closes, so the tag is set again whenever a
//!   routing-table peer connects; peers that are not connected are not tagged (the
//!   connection manager would keep a temporary entry for them).
//! * **Mode.** Server mode claims the protocol, client mode claims nothing;
//!   [`Behaviour::set_mode`] switches and returns [`ToSwarm::ProtocolsChanged`] so that the
//!   swarm (and identify) advertise the change.
//! * **Provider addresses.** The local listen addresses and confirmed external addresses are
//!   given to [`KadEngine::set_external_addresses`], so ADD_PROVIDER announces them.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::{
    ConnManagerCommand, ConnectedPoint, ConnectionDenied, FromSwarm, InboundStream, ListenerId,
    NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamError, StreamProtocol,
    StreamRequestId, Timer, ToSwarm,
};
use multiaddr::{Multiaddr, Protocol};

use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, Lookup};
use crate::engine::{KadConfig, KadEngine, KadEvent, Mode, RequestId};
use crate::kbucket::{InsertOutcome, RoutingTable};
use crate::protocol::{
    KadCodec, KadPeer, KadRequest, KadResponse, ProtocolError, Record, RecordKey, PROTOCOL_NAME,
};
use crate::query::{QueryError, QueryId};
use crate::store::StoreError;

/// The Kademlia stream protocol, `/ipfs/kad/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

/// Longest length prefix read (an unsigned varint of at most 9 bytes, as multiformats
/// allows).
const MAX_PREFIX_LEN: usize = 9;

/// Extra dial addresses handed to the swarm for one peer, at most.
const MAX_DIAL_ADDRESSES: usize = 24;

/// Local addresses announced in provider records, at most.
const MAX_LOCAL_ADDRESSES: usize = 32;

/// Settings of a [`Behaviour`].
///
/// ```
/// use std::time::Duration;
/// use meshwire_kad::{Config, KadConfig, Mode};
///
/// let config = Config::new()
///     .with_kad(KadConfig { alpha: 3, ..KadConfig::default() })
///     .with_mode(Mode::Client)
///     .with_max_inbound_streams_per_peer(8)
///     .with_inbound_timeout(Duration::from_secs(5));
/// assert_eq!(config.kad.mode, Mode::Client);
/// assert_eq!(config.conn_manager_tag, Some(("kad".to_owned(), 5)));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The core's settings: `k`, `α`, timeouts, mode, store limits, the message-size bound.
    pub kad: KadConfig,
    /// Inbound streams one peer may have open at once (32, rust-libp2p's per-connection bound).
    pub max_inbound_streams_per_peer: usize,
    /// Time an inbound stream may take to deliver its next request, and to take our response
    /// (10 s). A stream idle for longer after a served request is closed quietly.
    pub inbound_timeout: Duration,
    /// Peers whose addresses (from [`FromSwarm::NewExternalAddrOfPeer`] and their connections)
    /// are remembered for adding them to the routing table and dialing them; the least
    /// recently updated peer without a connection is forgotten first (1,024).
    pub max_address_cache_peers: usize,
    /// The connection-manager tag and value given to routing-table peers
    /// (`Some(("kad", 5))`); `None` tags nothing.
    pub conn_manager_tag: Option<(String, i32)>,
    /// Settings of the service-discovery helper ([`Behaviour::announce`],
    /// [`Behaviour::discover`]).
    pub discovery: DiscoveryConfig,
}

impl Config {
    /// The defaults.
    pub fn new() -> Self {
        Config {
            kad: KadConfig::default(),
            max_inbound_streams_per_peer: 32,
            inbound_timeout: Duration::from_secs(10),
            max_address_cache_peers: 1024,
            conn_manager_tag: Some(("kad".to_owned(), 5)),
            discovery: DiscoveryConfig::default(),
        }
    }

    /// Sets [`Config::kad`].
    pub fn with_kad(mut self, kad: KadConfig) -> Self {
        self.kad = kad;
        self
    }

    /// Sets the initial mode ([`KadConfig::mode`]).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.kad.mode = mode;
        self
    }

    /// Sets [`Config::max_inbound_streams_per_peer`].
    pub fn with_max_inbound_streams_per_peer(mut self, max: usize) -> Self {
        self.max_inbound_streams_per_peer = max;
        self
    }

    /// Sets [`Config::inbound_timeout`].
    pub fn with_inbound_timeout(mut self, timeout: Duration) -> Self {
        self.inbound_timeout = timeout;
        self
    }

    /// Sets [`Config::max_address_cache_peers`].
    pub fn with_max_address_cache_peers(mut self, max: usize) -> Self {
        self.max_address_cache_peers = max;
        self
    }

    /// Sets [`Config::conn_manager_tag`].
    pub fn with_conn_manager_tag(mut self, tag: Option<(String, i32)>) -> Self {
        self.conn_manager_tag = tag;
        self
    }

    /// Sets [`Config::discovery`].
    pub fn with_discovery(mut self, discovery: DiscoveryConfig) -> Self {
        self.discovery = discovery;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Why a stream exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The swarm could not open the stream (dial failure, unsupported protocol, ...).
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// Reading or writing the stream failed.
    #[error("stream I/O: {0}")]
    Io(Arc<io::Error>),
    /// The bytes received are not a valid message (too large, malformed, unexpected type).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The stream ended in the middle of a message.
    #[error("stream ended in the middle of a message")]
    UnexpectedEof,
    /// The stream ended without the response to our request.
    #[error("stream ended without a response")]
    NoResponse,
    /// The exchange took longer than its timeout.
    #[error("timed out")]
    Timeout,
    /// The peer already has [`Config::max_inbound_streams_per_peer`] inbound streams open.
    #[error("too many inbound streams from the peer (limit {limit})")]
    TooManyStreams {
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// The error an I/O error on a stream stands for; a lazily negotiated protocol the remote
    /// refused is [`StreamError::UnsupportedProtocols`].
    pub fn from_io(e: io::Error) -> Self {
        match StreamError::from_io(e) {
            StreamError::Io(e) => Error::Io(e),
            other => Error::Stream(other),
        }
    }

    /// Whether the remote does not speak `/ipfs/kad/1.0.0`.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Stream(StreamError::UnsupportedProtocols))
    }
}

/// What [`Behaviour`] reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// What the core reports, unchanged: finished queries (every origin: the application's,
    /// periodic bootstraps, republishing), query progress, routing-table changes, served
    /// requests, mode changes.
    Kad(KadEvent),
    /// An inbound stream was refused or failed: oversized or malformed request, timeout,
    /// too many streams. The stream was reset.
    InboundFailure {
        /// The remote.
        peer: PeerId,
        /// The connection the stream was on.
        connection: ConnectionId,
        /// What went wrong.
        error: Error,
    },
    /// A service lookup started with [`Behaviour::discover`] finished (its
    /// [`KadEvent::QueryFinished`] is reported too). `providers` may be empty.
    ServiceFound {
        /// The query.
        id: QueryId,
        /// The service name.
        service: String,
        /// Its providers.
        providers: Vec<KadPeer>,
    },
}

/// What a finished stream task reports.
enum Done {
    /// Our request's exchange ended.
    Outbound {
        request_id: RequestId,
        peer: PeerId,
        /// The address we dialed, if the stream's connection is one we dialed.
        addr: Option<Multiaddr>,
        expects_response: bool,
        result: Result<Option<KadResponse>, Error>,
    },
    /// An inbound stream delivered a request, ended, or failed.
    Read {
        id: u64,
        stream: Stream,
        result: Result<Option<KadRequest>, Error>,
    },
    /// Our response on an inbound stream was written (or not).
    Responded {
        id: u64,
        stream: Stream,
        result: Result<(), Error>,
    },
    /// An inbound task was aborted to make room for a newer stream.
    Aborted,
}

/// A stream request of ours waiting for the swarm.
struct PendingRequest {
    request_id: RequestId,
    frame: Vec<u8>,
    expects_response: bool,
}

/// An inbound stream being served.
struct InboundEntry {
    peer: PeerId,
    connection: ConnectionId,
    /// It served a request and waits idle for the next one: it may be closed to make room.
    reusable: bool,
    /// Whether it served a request yet (an idle timeout afterwards is a normal end).
    served: bool,
    abort: AbortHandle,
}

/// Addresses of a peer we are about to dial for a request, with the requests needing them.
struct DialAddrs {
    addrs: Vec<Multiaddr>,
    pending: usize,
}

/// An open connection.
struct ConnInfo {
    peer: PeerId,
    /// The address we dialed, if we dialed it.
    dialed: Option<Multiaddr>,
}

/// What is remembered of a peer's addresses (each list bounded, most recent last).
#[derive(Debug, Default)]
struct PeerAddrs {
    /// Its listen addresses, as identify reported them ([`FromSwarm::NewExternalAddrOfPeer`]).
    listen: Vec<Multiaddr>,
    /// Addresses we reached it at (the remote address of connections we dialed).
    dialed: Vec<Multiaddr>,
    /// The source address of its latest inbound QUIC connection: where it listens, when it
    /// dials from its listening socket (see [`quic_listen_addr`]).
    observed: Option<Multiaddr>,
    /// Update stamp, for forgetting the least recently updated peer first.
    stamp: u64,
}

impl PeerAddrs {
    /// The first-hand addresses to add it to the routing table with: its listen and dialed
    /// addresses, else the observed one.
    fn routable(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for a in self.listen.iter().chain(&self.dialed) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        if out.is_empty() {
            out.extend(self.observed.iter().cloned());
        }
        out
    }
}

/// The source address of an inbound connection if it is where the peer listens: a QUIC
/// address (`/ip4|ip6/<ip>/udp/<port>/quic-v1`, specific IP, non-zero port). QUIC stacks that
/// listen (meshwire, rust-libp2p) dial from their listening UDP socket, so the remote sees
/// the listen port. A TCP (or other) connection comes from an ephemeral port: `None`.
fn quic_listen_addr(send_back_addr: &Multiaddr) -> Option<Multiaddr> {
    let mut it = send_back_addr.iter();
    let specific_ip = match it.next()? {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => false,
    };
    let port = match it.next()? {
        Protocol::Udp(port) => port,
        _ => return None,
    };
    let quic = matches!(it.next()?, Protocol::QuicV1);
    (specific_ip && port != 0 && quic && it.next().is_none()).then(|| send_back_addr.clone())
}

/// The Kademlia [`NetworkBehaviour`]: a [`KadEngine`] driven over the swarm. See the
/// [module docs](self) for what it does, and the [crate docs](crate) for an example.
pub struct Behaviour {
    config: Config,
    core: KadEngine,
    codec: KadCodec,
    discovery: Discovery,
    /// Open connections.
    connections: HashMap<ConnectionId, ConnInfo>,
    /// Open connections per connected peer.
    connected: HashMap<PeerId, usize>,
    /// Addresses of peers learned from the swarm (bounded).
    peer_addrs: HashMap<PeerId, PeerAddrs>,
    addr_clock: u64,
    /// Addresses of peers with stream requests in flight, for the dial hook.
    dial_addrs: HashMap<PeerId, DialAddrs>,
    pending: HashMap<StreamRequestId, (PeerId, PendingRequest)>,
    inbound: HashMap<u64, InboundEntry>,
    inbound_per_peer: HashMap<PeerId, usize>,
    next_inbound_id: u64,
    listen_addrs: HashMap<ListenerId, Vec<Multiaddr>>,
    external_addrs: Vec<Multiaddr>,
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
    queue: VecDeque<ToSwarm<Event>>,
    sleep: Timer,
    /// The deadline of the sleep that fired, until the core has seen that time.
    fired: Option<Instant>,
    waker: Option<Waker>,
}

impl fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Behaviour")
            .field("core", &self.core)
            .field("connections", &self.connections.len())
            .field("pending_streams", &self.pending.len())
            .field("inbound_streams", &self.inbound.len())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

/// The current time on the clock tokio's timers use (so paused-time tests work too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Behaviour {
    /// A behaviour for the local peer `local` (the swarm's identity) with `config`.
    pub fn new(local: PeerId, config: Config) -> Self {
        let core = KadEngine::new(local, config.kad.clone());
        Self::with_core(core, config)
    }

    /// A behaviour driving `core` (e.g. one made with [`KadEngine::with_seed`]); `config.kad` is
    /// replaced by the core's configuration.
    pub fn with_core(core: KadEngine, mut config: Config) -> Self {
        config.kad = core.config().clone();
        Behaviour {
            codec: config.kad.codec(),
            discovery: Discovery::new(config.discovery.clone()),
            config,
            core,
            connections: HashMap::new(),
            connected: HashMap::new(),
            peer_addrs: HashMap::new(),
            addr_clock: 0,
            dial_addrs: HashMap::new(),
            pending: HashMap::new(),
            inbound: HashMap::new(),
            inbound_per_peer: HashMap::new(),
            next_inbound_id: 0,
            listen_addrs: HashMap::new(),
            external_addrs: Vec::new(),
            tasks: FuturesUnordered::new(),
            queue: VecDeque::new(),
            sleep: Timer::default(),
            fired: None,
            waker: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The core, for everything the behaviour does not wrap (stores, statistics).
    pub fn core(&self) -> &KadEngine {
        &self.core
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.core.local_peer_id()
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        self.core.routing_table()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.core.mode()
    }

    /// The service-discovery helper (its cache).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    // ----- commands ----------------------------------------------------------------------

    /// Switches between server mode (claims `/ipfs/kad/1.0.0`, answers requests) and client
    /// mode (claims nothing); on a change the swarm is told with
    /// [`ToSwarm::ProtocolsChanged`] and [`KadEvent::ModeChanged`] is reported.
    pub fn set_mode(&mut self, mode: Mode) {
        self.core.set_mode(mode);
        self.wake();
    }

    /// Adds a peer serving the DHT at `addr` (a bootstrap peer) to the routing table, or
    /// adds the address to it.
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) -> InsertOutcome {
        let outcome = self.core.add_address(peer, addr, now());
        self.wake();
        outcome
    }

    /// Removes `peer` from the routing table. Returns whether it was there.
    pub fn remove_peer(&mut self, peer: &PeerId) -> bool {
        let removed = self.core.remove_peer(peer);
        self.wake();
        removed
    }

    /// Refreshes the routing table (self lookup, then one lookup per bucket further out) and
    /// starts the periodic bootstrap ([`KadConfig::bootstrap_interval`]).
    ///
    /// # Errors
    ///
    /// [`QueryError::NoKnownPeers`] if the routing table is empty.
    pub fn bootstrap(&mut self) -> Result<QueryId, QueryError> {
        let id = self.core.bootstrap(now());
        self.wake();
        id
    }

    /// Looks up the `k` peers closest to `key` (any bytes; for a peer, its
    /// [`PeerId::to_bytes`]).
    pub fn find_node(&mut self, key: Vec<u8>) -> QueryId {
        let id = self.core.find_node(key, now());
        self.wake();
        id
    }

    /// Looks up the `k` peers closest to `peer`: [`Behaviour::find_node`] of its id.
    pub fn find_peer(&mut self, peer: PeerId) -> QueryId {
        self.find_node(peer.to_bytes())
    }

    /// Looks up the record under `key`, until `quorum` (at least 1) copies are found.
    pub fn get_value(&mut self, key: RecordKey, quorum: usize) -> QueryId {
        let id = self.core.get_value(key, quorum, now());
        self.wake();
        id
    }

    /// Stores `record` locally and at the `k` peers closest to its key; succeeds when
    /// `quorum` of them confirm.
    ///
    /// # Errors
    ///
    /// The local store refused it (full, value too large).
    pub fn put_value(&mut self, record: Record, quorum: usize) -> Result<QueryId, StoreError> {
        let id = self.core.put_value(record, quorum, now());
        self.wake();
        id
    }

    /// Announces the local node as a provider of `key` to the `k` peers closest to it (and
    /// again periodically).
    ///
    /// # Errors
    ///
    /// The local provider store is full.
    pub fn start_providing(&mut self, key: RecordKey) -> Result<QueryId, StoreError> {
        let id = self.core.start_providing(key, now());
        self.wake();
        id
    }

    /// Stops announcing `key` (remote announcements expire by themselves).
    pub fn stop_providing(&mut self, key: &RecordKey) {
        self.core.stop_providing(key);
    }

    /// Looks up the providers of `key`.
    pub fn get_providers(&mut self, key: RecordKey) -> QueryId {
        self.get_providers_up_to(key, None)
    }

    /// Looks up the providers of `key`, stopping once `limit` are known.
    pub fn get_providers_up_to(&mut self, key: RecordKey, limit: Option<usize>) -> QueryId {
        let id = self.core.get_providers(key, limit, now());
        self.wake();
        id
    }

    /// Stops query `id` now; it finishes with what it has. Returns `false` for an unknown id.
    pub fn finish_query(&mut self, id: QueryId) -> bool {
        let known = self.core.finish(id, now());
        self.wake();
        known
    }

    /// Announces the local node as a provider of `service` (see
    /// [`discovery`](crate::discovery): the key is the SHA2-256 multihash of
    /// `"meshwire/service/" + service`).
    ///
    /// # Errors
    ///
    /// The local provider store is full.
    pub fn announce(&mut self, service: &str) -> Result<QueryId, StoreError> {
        let id = self.discovery.announce(&mut self.core, service, now());
        self.wake();
        id
    }

    /// Stops announcing `service`.
    pub fn withdraw(&mut self, service: &str) {
        self.discovery.withdraw(&mut self.core, service);
    }

    /// The providers of `service`: [`Lookup::Cached`] from the local cache while fresh
    /// ([`DiscoveryConfig::cache_ttl`]), else [`Lookup::Started`] with the id of a
    /// GET_PROVIDERS lookup whose outcome comes as [`Event::ServiceFound`].
    pub fn discover(&mut self, service: &str) -> Lookup {
        let lookup = self.discovery.lookup(&mut self.core, service, now());
        self.wake();
        lookup
    }

    // ----- core outputs ------------------------------------------------------------------

    /// Runs the engine's timers if due, and carries out its outputs.
    fn drain_engine(&mut self, now: Instant) -> bool {
        let mut any = false;
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        while let Some(t) = self.core.poll_transmit() {
            any = true;
            self.send_request(t.request_id, t.peer, t.addrs, t.request, now);
        }
        while let Some(event) = self.core.poll_event() {
            any = true;
            self.on_core_event(event, now);
        }
        any
    }

    fn send_request(
        &mut self,
        request_id: RequestId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        now: Instant,
    ) {
        let expects_response = request.expects_response();
        let frame = match self.codec.encode_request(&request) {
            Ok(frame) => frame,
            Err(error) => {
                // A local problem: the query fails, the peer is not blamed.
                tracing::warn!(%peer, %error, kind = ?request.message_type(), "kad: cannot encode request");
                if expects_response {
                    self.core.handle_request_unsendable(request_id, error, now);
                }
                return;
            }
        };
        let entry = self.dial_addrs.entry(peer).or_insert_with(|| DialAddrs {
            addrs: Vec::new(),
            pending: 0,
        });
        entry.pending += 1;
        for a in addrs {
            if entry.addrs.len() >= self.config.kad.max_addrs_per_peer {
                break;
            }
            if !entry.addrs.contains(&a) {
                entry.addrs.push(a);
            }
        }
        let open = OpenStream::new(peer, PROTOCOL);
        tracing::trace!(%peer, %request_id, kind = ?request.message_type(), "kad: opening stream");
        self.pending.insert(
            open.id,
            (
                peer,
                PendingRequest {
                    request_id,
                    frame,
                    expects_response,
                },
            ),
        );
        self.queue.push_back(ToSwarm::OpenStream(open));
    }

    fn release_dial_addrs(&mut self, peer: &PeerId) {
        if let Some(entry) = self.dial_addrs.get_mut(peer) {
            entry.pending = entry.pending.saturating_sub(1);
            if entry.pending == 0 {
                self.dial_addrs.remove(peer);
            }
        }
    }

    /// Tags `peer` in the connection manager, if it is connected (the tag is set again when it
    /// connects).
    fn tag(&mut self, peer: PeerId) {
        if !self.connected.contains_key(&peer) {
            return;
        }
        if let Some((tag, value)) = &self.config.conn_manager_tag {
            self.queue
                .push_back(ToSwarm::ConnManager(ConnManagerCommand::TagPeer {
                    peer,
                    tag: tag.clone(),
                    value: *value,
                }));
        }
    }

    /// Untags `peer`, if it is connected (the connection manager forgot the tags of a peer
    /// without connections).
    fn untag(&mut self, peer: PeerId) {
        if !self.connected.contains_key(&peer) {
            return;
        }
        if let Some((tag, _)) = &self.config.conn_manager_tag {
            self.queue
                .push_back(ToSwarm::ConnManager(ConnManagerCommand::UntagPeer {
                    peer,
                    tag: tag.clone(),
                }));
        }
    }

    fn on_core_event(&mut self, event: KadEvent, now: Instant) {
        let found = self.discovery.on_event(&event, now);
        match &event {
            KadEvent::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => self.tag(*peer),
            KadEvent::PeerRemoved { peer, .. } => self.untag(*peer),
            KadEvent::ModeChanged { .. } => self.queue.push_back(ToSwarm::ProtocolsChanged),
            _ => {}
        }
        let event = Event::Kad(event);
        let finished_id = match &event {
            Event::Kad(KadEvent::QueryFinished { id, .. }) => Some(*id),
            _ => None,
        };
        self.queue.push_back(ToSwarm::GenerateEvent(event));
        if let (Some(DiscoveryEvent::Found { service, providers }), Some(id)) = (found, finished_id)
        {
            self.queue
                .push_back(ToSwarm::GenerateEvent(Event::ServiceFound {
                    id,
                    service,
                    providers,
                }));
        }
    }

    // ----- stream tasks ------------------------------------------------------------------

    fn spawn(&mut self, fut: impl Future<Output = Done> + Send + 'static) {
        self.tasks.push(fut.boxed());
    }

    /// Runs an inbound stream task, abortable through the stream's entry.
    fn spawn_inbound(
        &mut self,
        id: u64,
        reusable: bool,
        fut: impl Future<Output = Done> + Send + 'static,
    ) {
        let (abort, registration) = AbortHandle::new_pair();
        if let Some(entry) = self.inbound.get_mut(&id) {
            entry.abort = abort;
            entry.reusable = reusable;
        }
        self.tasks.push(
            Abortable::new(fut, registration)
                .map(|r| r.unwrap_or(Done::Aborted))
                .boxed(),
        );
    }

    fn read_next(&mut self, id: u64, stream: Stream) {
        let codec = self.codec;
        let timeout = self.config.inbound_timeout;
        let reusable = self.inbound.get(&id).is_some_and(|e| e.served);
        self.spawn_inbound(id, reusable, async move {
            let mut stream = stream;
            let result = with_timeout(timeout, read_request(&mut stream, codec)).await;
            Done::Read { id, stream, result }
        });
    }

    /// Forgets inbound stream `id`.
    fn end_inbound(&mut self, id: u64) -> Option<InboundEntry> {
        let entry = self.inbound.remove(&id)?;
        if let Some(n) = self.inbound_per_peer.get_mut(&entry.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }

    fn inbound_failed(&mut self, id: u64, mut stream: Stream, error: Error) {
        stream.reset();
        let Some(entry) = self.end_inbound(id) else {
            return;
        };
        if entry.served && matches!(error, Error::Timeout) {
            tracing::trace!(peer = %entry.peer, "kad: idle inbound stream closed");
            return;
        }
        tracing::debug!(peer = %entry.peer, connection = %entry.connection, %error, "kad: inbound stream failed");
        self.queue
            .push_back(ToSwarm::GenerateEvent(Event::InboundFailure {
                peer: entry.peer,
                connection: entry.connection,
                error,
            }));
    }

    fn on_done(&mut self, done: Done, now: Instant) {
        match done {
            Done::Aborted => {}
            Done::Outbound {
                request_id,
                peer,
                addr,
                expects_response,
                result,
            } => match result {
                Ok(Some(response)) => {
                    tracing::trace!(%peer, %request_id, "kad: response");
                    self.core
                        .handle_response(request_id, peer, addr, response, now);
                }
                Ok(None) => tracing::trace!(%peer, %request_id, "kad: one-way request sent"),
                Err(error) => self.outbound_failed(request_id, peer, expects_response, error, now),
            },
            Done::Read { id, stream, result } => match result {
                Ok(Some(request)) => self.serve(id, stream, request, now),
                Ok(None) => {
                    tracing::trace!(id, "kad: inbound stream finished by the remote");
                    self.end_inbound(id);
                }
                Err(error) => self.inbound_failed(id, stream, error),
            },
            Done::Responded { id, stream, result } => match result {
                Ok(()) => {
                    if self.inbound.contains_key(&id) {
                        self.read_next(id, stream);
                    }
                }
                Err(error) => self.inbound_failed(id, stream, error),
            },
        }
    }

    fn outbound_failed(
        &mut self,
        request_id: RequestId,
        peer: PeerId,
        expects_response: bool,
        error: Error,
        now: Instant,
    ) {
        tracing::debug!(%peer, %request_id, %error, "kad: request failed");
        if error.is_unsupported() && self.core.routing_table().contains(&peer) {
            tracing::debug!(%peer, "kad: peer does not speak the protocol; removing it");
            self.core.remove_peer(&peer);
        }
        if expects_response {
            self.core.handle_request_failed(request_id, now);
        }
    }

    /// Answers `request` read from inbound stream `id`.
    fn serve(&mut self, id: u64, mut stream: Stream, request: KadRequest, now: Instant) {
        let Some(entry) = self.inbound.get_mut(&id) else {
            stream.reset();
            return;
        };
        entry.served = true;
        entry.reusable = false;
        let peer = entry.peer;
        let one_way = !request.expects_response();
        match self.core.handle_request(peer, request, now) {
            Some(response) => match self.codec.encode_response(&response) {
                Ok(frame) => {
                    let timeout = self.config.inbound_timeout;
                    self.spawn_inbound(id, false, async move {
                        let result = with_timeout(timeout, async {
                            stream.write_all(&frame).await.map_err(Error::from_io)?;
                            stream.flush().await.map_err(Error::from_io)
                        })
                        .await;
                        Done::Responded { id, stream, result }
                    });
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "kad: cannot encode our response");
                    stream.reset();
                    self.end_inbound(id);
                }
            },
            // ADD_PROVIDER has no response: wait for the next request.
            None if one_way => self.read_next(id, stream),
            // Refused (client mode, bad key): end the stream without an answer.
            None => {
                tracing::debug!(%peer, "kad: request refused; closing the stream");
                drop(stream);
                self.end_inbound(id);
            }
        }
    }

    // ----- local addresses ---------------------------------------------------------------

    fn update_local_addresses(&mut self) {
        let mut addrs: Vec<Multiaddr> = Vec::new();
        let mut listeners: Vec<_> = self.listen_addrs.iter().collect();
        listeners.sort_by_key(|(id, _)| **id);
        for a in self
            .external_addrs
            .iter()
            .chain(listeners.into_iter().flat_map(|(_, v)| v))
        {
            if addrs.len() >= MAX_LOCAL_ADDRESSES {
                break;
            }
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        self.core.set_external_addresses(addrs);
    }

    /// The cache entry of `peer`, created (forgetting the least recently updated peer without
    /// a connection, else the least recently updated one, when full) and stamped; `None` when
    /// the cache is disabled.
    fn peer_addrs_entry(&mut self, peer: PeerId) -> Option<&mut PeerAddrs> {
        let max_peers = self.config.max_address_cache_peers;
        if self.config.kad.max_addrs_per_peer == 0 || max_peers == 0 {
            return None;
        }
        self.addr_clock += 1;
        let clock = self.addr_clock;
        if !self.peer_addrs.contains_key(&peer) && self.peer_addrs.len() >= max_peers {
            let connected = &self.connected;
            let victim = self
                .peer_addrs
                .iter()
                .min_by_key(|(p, a)| (connected.contains_key(p), a.stamp))
                .map(|(p, _)| *p);
            if let Some(victim) = victim {
                self.peer_addrs.remove(&victim);
            }
        }
        let entry = self.peer_addrs.entry(peer).or_default();
        entry.stamp = clock;
        Some(entry)
    }

    /// Remembers a listen address of `peer` reported by the swarm (bounded per peer and in
    /// peers).
    fn remember_peer_addr(&mut self, peer: PeerId, addr: &Multiaddr) {
        let max = self.config.kad.max_addrs_per_peer;
        if let Some(entry) = self.peer_addrs_entry(peer) {
            push_bounded(&mut entry.listen, addr, max);
        }
    }

    /// Remembers the remote address of a new connection to `peer`: the address we dialed, or
    /// the source address of an inbound QUIC connection.
    fn remember_endpoint(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let max = self.config.kad.max_addrs_per_peer;
        match endpoint {
            ConnectedPoint::Dialer { address } => {
                if let Some(entry) = self.peer_addrs_entry(peer) {
                    push_bounded(&mut entry.dialed, address, max);
                }
            }
            ConnectedPoint::Listener { send_back_addr, .. } => {
                if let Some(observed) = quic_listen_addr(send_back_addr) {
                    if let Some(entry) = self.peer_addrs_entry(peer) {
                        entry.observed = Some(observed);
                    }
                }
            }
        }
    }

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
        other_established: usize,
        now: Instant,
    ) {
        let dialed = match endpoint {
            ConnectedPoint::Dialer { address } => Some(address.clone()),
            ConnectedPoint::Listener { .. } => None,
        };
        self.connections
            .insert(connection, ConnInfo { peer, dialed });
        *self.connected.entry(peer).or_default() += 1;
        self.remember_endpoint(peer, endpoint);
        if other_established == 0 {
            self.core.handle_peer_connected(peer, now);
            // The connection manager forgot the peer's tags when its last connection closed:
            // tag it again.
            if self.core.routing_table().contains(&peer) {
                self.tag(peer);
            }
        }
    }

    fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remaining_established: usize,
    ) {
        if let Some(info) = self.connections.remove(&connection) {
            if let Some(n) = self.connected.get_mut(&info.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.connected.remove(&info.peer);
                }
            }
        }
        if remaining_established == 0 {
            self.connected.remove(&peer);
            self.core.handle_peer_disconnected(&peer);
        }
    }

    /// The address we dialed for `connection`, if we dialed it.
    fn dialed_addr(&self, connection: ConnectionId) -> Option<Multiaddr> {
        self.connections
            .get(&connection)
            .and_then(|c| c.dialed.clone())
    }

    /// Identify told us `peer`'s protocols on `connection`.
    fn on_remote_protocols(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        protocols: &[StreamProtocol],
        now: Instant,
    ) {
        if !protocols.contains(&PROTOCOL) {
            if self.core.routing_table().contains(&peer) {
                tracing::debug!(%peer, "kad: peer no longer serves the DHT; removing it");
                self.core.remove_peer(&peer);
            }
            return;
        }
        let mut addrs = self
            .peer_addrs
            .get(&peer)
            .map(PeerAddrs::routable)
            .unwrap_or_default();
        // The connection's own endpoint, in case the cache forgot it.
        if let Some(dialed) = self.dialed_addr(connection) {
            if !addrs.contains(&dialed) {
                addrs.push(dialed);
            }
        }
        if addrs.is_empty() {
            tracing::debug!(%peer, "kad: peer serves the DHT but has no known address; not added");
            return;
        }
        for addr in addrs {
            self.core.add_address(peer, addr, now);
        }
    }

    /// Fires the timer if due; `true` if it did (the core must be polled at that time).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.core.poll_timeout();
        let at = deadline.map(tokio::time::Instant::from_std);
        if self.sleep.poll_at(at, cx).is_ready() {
            self.fired = deadline;
            return true;
        }
        false
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        match self.core.mode() {
            Mode::Server => vec![PROTOCOL],
            Mode::Client => Vec::new(),
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Multiaddr> = Vec::new();
        let table = self.core.routing_table().get(&peer).map(|n| &n.addrs);
        let pending = self.dial_addrs.get(&peer).map(|d| &d.addrs);
        let cache = self.peer_addrs.get(&peer);
        let listen = cache.map(|c| &c.listen);
        let dialed = cache.map(|c| &c.dialed);
        let observed = cache.and_then(|c| c.observed.as_ref());
        for a in [table, pending, listen, dialed]
            .into_iter()
            .flatten()
            .flatten()
            .chain(observed)
        {
            if out.len() >= MAX_DIAL_ADDRESSES {
                break;
            }
            if !addresses.contains(a) && !out.contains(a) {
                out.push(a.clone());
            }
        }
        Ok(out)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let now = now();
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                other_established,
                ..
            } => self.on_connection_established(peer, connection, endpoint, other_established, now),
            FromSwarm::ConnectionClosed {
                peer,
                connection,
                remaining_established,
                ..
            } => self.on_connection_closed(peer, connection, remaining_established),
            FromSwarm::NewExternalAddrOfPeer { peer, addr } => {
                if peer == *self.core.local_peer_id() {
                    return;
                }
                self.remember_peer_addr(peer, addr);
                if self.core.routing_table().contains(&peer) {
                    self.core.add_address(peer, addr.clone(), now);
                }
            }
            FromSwarm::RemoteProtocolsChanged {
                peer,
                connection,
                protocols,
            } => self.on_remote_protocols(peer, connection, protocols, now),
            FromSwarm::NewListenAddr { listener, addr } => {
                let addrs = self.listen_addrs.entry(listener).or_default();
                if !addrs.contains(addr) {
                    addrs.push(addr.clone());
                    self.update_local_addresses();
                }
            }
            FromSwarm::ListenerClosed { listener, .. }
                if self.listen_addrs.remove(&listener).is_some() =>
            {
                self.update_local_addresses();
            }
            FromSwarm::ExternalAddrConfirmed { addr }
                if !self.external_addrs.contains(addr)
                    && self.external_addrs.len() < MAX_LOCAL_ADDRESSES =>
            {
                self.external_addrs.push(addr.clone());
                self.update_local_addresses();
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                let before = self.external_addrs.len();
                self.external_addrs.retain(|a| a != addr);
                if self.external_addrs.len() != before {
                    self.update_local_addresses();
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
        if self.core.mode() == Mode::Client {
            tracing::debug!(%peer, "kad: inbound stream in client mode; resetting");
            stream.reset();
            return;
        }
        let limit = self.config.max_inbound_streams_per_peer;
        let open = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        if open >= limit {
            // Make room by closing this peer's oldest stream that waits idle to be reused.
            let idle = self
                .inbound
                .iter()
                .filter(|(_, e)| e.peer == peer && e.reusable)
                .map(|(id, _)| *id)
                .min();
            match idle {
                Some(old) => {
                    tracing::debug!(%peer, "kad: inbound stream limit reached; closing an idle stream");
                    if let Some(entry) = self.end_inbound(old) {
                        entry.abort.abort();
                    }
                }
                None => {
                    tracing::debug!(%peer, limit, "kad: too many inbound streams; resetting the new one");
                    stream.reset();
                    self.queue
                        .push_back(ToSwarm::GenerateEvent(Event::InboundFailure {
                            peer,
                            connection,
                            error: Error::TooManyStreams { limit },
                        }));
                    return;
                }
            }
        }
        let id = self.next_inbound_id;
        self.next_inbound_id = self.next_inbound_id.wrapping_add(1);
        // The handle is replaced as soon as the first task is spawned.
        let (abort, _) = AbortHandle::new_pair();
        self.inbound.insert(
            id,
            InboundEntry {
                peer,
                connection,
                reusable: false,
                served: false,
                abort,
            },
        );
        *self.inbound_per_peer.entry(peer).or_default() += 1;
        self.read_next(id, stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some((peer, request)) = self.pending.remove(&result.id) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        self.release_dial_addrs(&peer);
        let PendingRequest {
            request_id,
            frame,
            expects_response,
        } = request;
        match result.result {
            Ok(out) => {
                let codec = self.codec;
                let timeout = self.config.kad.request_timeout;
                let addr = self.dialed_addr(out.connection);
                self.spawn(async move {
                    let mut stream = out.stream;
                    let result = with_timeout(
                        timeout,
                        exchange(&mut stream, &frame, expects_response, codec),
                    )
                    .await;
                    if result.is_err() {
                        stream.reset();
                    }
                    Done::Outbound {
                        request_id,
                        peer,
                        addr,
                        expects_response,
                        result,
                    }
                });
            }
            Err(e) => self.outbound_failed(request_id, peer, expects_response, e.into(), now()),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        loop {
            if let Some(cmd) = self.queue.pop_front() {
                return Poll::Ready(cmd);
            }
            let mut now = now();
            if let Some(fired) = self.fired.take() {
                now = now.max(fired);
            }
            if self.drain_engine(now) {
                continue;
            }
            if let Poll::Ready(Some(done)) = self.tasks.poll_next_unpin(cx) {
                self.on_done(done, now);
                continue;
            }
            if self.poll_timer(cx) {
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Appends `addr` to `list` (moving it to the end if present), dropping the oldest past `max`.
fn push_bounded(list: &mut Vec<Multiaddr>, addr: &Multiaddr, max: usize) {
    if let Some(i) = list.iter().position(|a| a == addr) {
        let a = list.remove(i);
        list.push(a);
        return;
    }
    if list.len() >= max {
        list.remove(0);
    }
    list.push(addr.clone());
}

/// Runs `fut` with `timeout`.
async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(Error::Timeout))
}

/// Our side of one request: write it, then read the response (none for one-way requests,
/// whose stream is finished instead).
async fn exchange(
    stream: &mut Stream,
    frame: &[u8],
    expects_response: bool,
    codec: KadCodec,
) -> Result<Option<KadResponse>, Error> {
    stream.write_all(frame).await.map_err(Error::from_io)?;
    if !expects_response {
        // Finishing also waits for the remote's (lazy) protocol confirmation.
        stream.close().await.map_err(Error::from_io)?;
        return Ok(None);
    }
    stream.flush().await.map_err(Error::from_io)?;
    let Some(buf) = read_frame(stream, codec.max_message_size()).await? else {
        return Err(Error::NoResponse);
    };
    let response = match codec.decode_response(&buf)? {
        Some((response, _)) => response,
        // `read_frame` returns whole frames only.
        None => return Err(Error::UnexpectedEof),
    };
    // Best effort: the exchange is complete whatever the finish does.
    let _ = stream.close().await;
    Ok(Some(response))
}

/// Reads the next request of an inbound stream; `None` when the remote finished the stream.
async fn read_request(stream: &mut Stream, codec: KadCodec) -> Result<Option<KadRequest>, Error> {
    let Some(buf) = read_frame(stream, codec.max_message_size()).await? else {
        return Ok(None);
    };
    match codec.decode_request(&buf)? {
        Some((request, _)) => Ok(Some(request)),
        None => Err(Error::UnexpectedEof),
    }
}

/// Reads one length-prefixed frame, prefix included, without reading past it. The length is
/// checked against `max` before anything is allocated. `None` on a clean end of stream before
/// the frame's first byte.
async fn read_frame(stream: &mut Stream, max: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let mut n = 0;
    loop {
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte).await.map_err(Error::from_io)?;
        if read == 0 {
            return if n == 0 {
                Ok(None)
            } else {
                Err(Error::UnexpectedEof)
            };
        }
        prefix[n] = byte[0];
        n += 1;
        if byte[0] & 0x80 == 0 {
            break;
        }
        if n == MAX_PREFIX_LEN {
            return Err(ProtocolError::InvalidLengthPrefix.into());
        }
    }
    let (len, _) = unsigned_varint::decode::u64(&prefix[..n])
        .map_err(|_| Error::Protocol(ProtocolError::InvalidLengthPrefix))?;
    if len > max as u64 {
        return Err(ProtocolError::MessageTooLarge { len, max }.into());
    }
    // At most `max`, so it fits in usize.
    let len = len as usize;
    let mut buf = Vec::with_capacity(n + len);
    buf.extend_from_slice(&prefix[..n]);
    buf.resize(n + len, 0);
    stream
        .read_exact(&mut buf[n..])
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::UnexpectedEof,
            _ => Error::from_io(e),
        })?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::QueryResult;
    use meshwire_core::Keypair;

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    fn addr(n: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/udp/{n}/quic-v1").parse().unwrap()
    }

    #[test]
    fn protocols_follow_the_mode() {
        let mut b = Behaviour::new(peer(0), Config::new());
        assert_eq!(b.protocols(), vec![PROTOCOL]);
        b.set_mode(Mode::Client);
        assert!(b.protocols().is_empty());
        // The core reports the change; the behaviour turns it into ProtocolsChanged.
        b.drain_engine(now());
        assert!(matches!(
            b.queue.pop_front(),
            Some(ToSwarm::ProtocolsChanged)
        ));
        assert!(matches!(
            b.queue.pop_front(),
            Some(ToSwarm::GenerateEvent(Event::Kad(KadEvent::ModeChanged {
                mode: Mode::Client
            })))
        ));
    }

    fn dialer(a: Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer { address: a }
    }

    fn listener(send_back_addr: Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: addr(1000),
            send_back_addr,
        }
    }

    /// Runs the core's outputs through the behaviour until it is idle.
    fn drive(b: &mut Behaviour) {
        let t = now();
        while b.drain_engine(t) {}
    }

    /// The connection-manager commands queued so far, as text.
    fn cm_commands(b: &Behaviour) -> Vec<String> {
        b.queue
            .iter()
            .filter_map(|c| match c {
                ToSwarm::ConnManager(c) => Some(format!("{c:?}")),
                _ => None,
            })
            .collect()
    }

    /// The request of the last stream asked for.
    fn last_request(b: &Behaviour) -> RequestId {
        let Some(ToSwarm::OpenStream(open)) = b
            .queue
            .iter()
            .rev()
            .find(|c| matches!(c, ToSwarm::OpenStream(_)))
        else {
            panic!("no stream asked for")
        };
        b.pending[&open.id].1.request_id
    }

    #[test]
    fn address_cache_is_bounded() {
        let mut b = Behaviour::new(
            peer(0),
            Config::new()
                .with_max_address_cache_peers(2)
                .with_kad(KadConfig {
                    max_addrs_per_peer: 2,
                    ..KadConfig::default()
                }),
        );
        for n in 0..5 {
            b.remember_peer_addr(peer(1), &addr(n));
        }
        assert_eq!(b.peer_addrs[&peer(1)].listen, vec![addr(3), addr(4)]);
        b.remember_peer_addr(peer(2), &addr(1));
        // Peer 1 is refreshed, so peer 2 is the oldest when peer 3 arrives.
        b.remember_peer_addr(peer(1), &addr(3));
        b.remember_peer_addr(peer(3), &addr(1));
        assert_eq!(b.peer_addrs.len(), 2);
        assert!(b.peer_addrs.contains_key(&peer(1)) && b.peer_addrs.contains_key(&peer(3)));
        // A connected peer is forgotten last, however old its entry.
        b.on_connection_established(peer(1), ConnectionId::next(), &dialer(addr(7)), 0, now());
        b.remember_peer_addr(peer(3), &addr(2));
        b.remember_peer_addr(peer(4), &addr(1));
        assert!(b.peer_addrs.contains_key(&peer(1)) && b.peer_addrs.contains_key(&peer(4)));
        assert_eq!(b.peer_addrs[&peer(1)].dialed, vec![addr(7)]);
    }

    #[test]
    fn dial_hook_offers_table_request_and_identify_addresses() {
        let mut b = Behaviour::new(peer(0), Config::new());
        b.add_address(peer(1), addr(1));
        b.remember_peer_addr(peer(1), &addr(2));
        b.send_request(
            RequestId::for_tests(7),
            peer(1),
            vec![addr(3), addr(1)],
            KadRequest::Ping,
            now(),
        );
        let got = b
            .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(1)), &[addr(2)])
            .unwrap();
        assert_eq!(got, vec![addr(1), addr(3)]);
        // The request's addresses are forgotten once its stream is resolved.
        b.release_dial_addrs(&peer(1));
        assert!(b.dial_addrs.is_empty());
        assert!(b
            .handle_pending_outbound_connection(ConnectionId::next(), None, &[])
            .unwrap()
            .is_empty());
        // Addresses of past connections are offered too.
        let quic: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        let c = ConnectionId::next();
        b.on_connection_established(peer(2), c, &listener(quic.clone()), 0, now());
        b.on_connection_closed(peer(2), c, 0);
        let got = b
            .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(2)), &[])
            .unwrap();
        assert_eq!(got, vec![quic]);
    }

    #[test]
    fn only_connected_peers_are_tagged() {
        let mut b = Behaviour::new(peer(0), Config::new());
        // A bootstrap peer we are not connected to: no tag (the connection manager would keep
        // a temporary entry for it).
        b.add_address(peer(1), addr(1));
        drive(&mut b);
        assert!(cm_commands(&b).is_empty(), "{:?}", cm_commands(&b));
        // It connects: tagged.
        let c = ConnectionId::next();
        b.on_connection_established(peer(1), c, &dialer(addr(1)), 0, now());
        let cmds = cm_commands(&b);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(
            cmds[0].starts_with("TagPeer") && cmds[0].contains("\"kad\"") && cmds[0].contains('5')
        );
        // It leaves the table while connected: untagged.
        b.remove_peer(&peer(1));
        drive(&mut b);
        let cmds = cm_commands(&b);
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(cmds[1].starts_with("UntagPeer"));
        // A connected peer entering the table is tagged at once; once disconnected, leaving
        // the table sends nothing.
        b.queue.clear();
        let c2 = ConnectionId::next();
        b.on_connection_established(peer(2), c2, &dialer(addr(2)), 0, now());
        b.add_address(peer(2), addr(2));
        drive(&mut b);
        assert_eq!(cm_commands(&b).len(), 1);
        b.on_connection_closed(peer(2), c2, 0);
        b.remove_peer(&peer(2));
        drive(&mut b);
        assert_eq!(cm_commands(&b).len(), 1);
        // Without a tag configured, nothing is sent.
        let mut b = Behaviour::new(peer(0), Config::new().with_conn_manager_tag(None));
        b.on_connection_established(peer(1), c, &dialer(addr(1)), 0, now());
        b.add_address(peer(1), addr(1));
        drive(&mut b);
        assert!(cm_commands(&b).is_empty());
    }

    #[test]
    fn identify_protocols_add_and_remove_peers() {
        let mut b = Behaviour::new(peer(0), Config::new());
        let t = now();
        let c = ConnectionId::next();
        b.on_connection_established(peer(1), c, &dialer(addr(9)), 0, t);
        b.remember_peer_addr(peer(1), &addr(1));
        b.on_remote_protocols(peer(1), c, &[StreamProtocol::new("/ipfs/id/1.0.0")], t);
        assert!(!b.routing_table().contains(&peer(1)));
        b.on_remote_protocols(peer(1), c, &[PROTOCOL], t);
        let node = b.routing_table().get(&peer(1)).unwrap();
        assert_eq!(node.addrs, vec![addr(1), addr(9)]);
        b.on_remote_protocols(peer(1), c, &[], t);
        assert!(!b.routing_table().contains(&peer(1)));
        // A listener-side connection of a peer without known addresses is not routable,
        // unless it comes from a QUIC listening socket.
        let tcp: Multiaddr = "/ip4/10.0.0.2/tcp/50123".parse().unwrap();
        let c2 = ConnectionId::next();
        b.on_connection_established(peer(2), c2, &listener(tcp), 0, t);
        b.on_remote_protocols(peer(2), c2, &[PROTOCOL], t);
        assert!(!b.routing_table().contains(&peer(2)));
    }

    #[test]
    fn inbound_only_servers_enter_the_table() {
        // Peer 1 only ever dialed us over QUIC, and identify's report of its listen addresses
        // is not (or no longer) known: identify re-announces only addresses it did not have.
        let mut b = Behaviour::new(peer(0), Config::new());
        let t = now();
        let quic: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let c = ConnectionId::next();
        b.on_connection_established(peer(1), c, &listener(quic.clone()), 0, t);
        b.on_remote_protocols(peer(1), c, &[PROTOCOL], t);
        assert_eq!(b.routing_table().get(&peer(1)).unwrap().addrs, vec![quic]);
        // With listen addresses known, those are used and the observed one is not.
        let c2 = ConnectionId::next();
        let from: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        b.on_connection_established(peer(2), c2, &listener(from), 0, t);
        b.remember_peer_addr(peer(2), &addr(2));
        b.on_remote_protocols(peer(2), c2, &[PROTOCOL], t);
        assert_eq!(
            b.routing_table().get(&peer(2)).unwrap().addrs,
            vec![addr(2)]
        );
        // Unspecified addresses and port 0 are not listening sockets.
        for bad in [
            "/ip4/0.0.0.0/udp/4001/quic-v1",
            "/ip4/10.0.0.3/udp/0/quic-v1",
        ] {
            assert!(quic_listen_addr(&bad.parse().unwrap()).is_none());
        }
    }

    #[test]
    fn responses_record_only_the_dialed_address() {
        let mut b = Behaviour::new(peer(0), Config::new());
        let t = now();
        let c1 = ConnectionId::next();
        b.on_connection_established(peer(1), c1, &dialer(addr(1)), 0, t);
        b.add_address(peer(1), addr(1));
        b.find_node(peer(2).to_bytes());
        drive(&mut b);
        let req = last_request(&b);
        // Peer 1 lists peer 2 at someone else's address.
        let victim: Multiaddr = "/ip4/192.0.2.1/udp/53/quic-v1".parse().unwrap();
        b.on_done(
            Done::Outbound {
                request_id: req,
                peer: peer(1),
                addr: b.dialed_addr(c1),
                expects_response: true,
                result: Ok(Some(KadResponse::FindNode {
                    closer_peers: vec![KadPeer::new(peer(2), vec![victim.clone()])],
                })),
            },
            t,
        );
        drive(&mut b);
        let req = last_request(&b);
        // The victim's address is offered for dialing peer 2...
        let dial = b
            .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(2)), &[])
            .unwrap();
        assert_eq!(dial, vec![victim.clone()]);
        // ... but peer 2 answers over a connection we dialed at its real address, which is
        // the one recorded.
        let c2 = ConnectionId::next();
        b.on_connection_established(peer(2), c2, &dialer(addr(2)), 0, t);
        b.on_done(
            Done::Outbound {
                request_id: req,
                peer: peer(2),
                addr: b.dialed_addr(c2),
                expects_response: true,
                result: Ok(Some(KadResponse::FindNode {
                    closer_peers: vec![],
                })),
            },
            t,
        );
        drive(&mut b);
        assert_eq!(
            b.routing_table().get(&peer(2)).unwrap().addrs,
            vec![addr(2)]
        );
        // Over a connection peer 3 dialed, nothing is recorded.
        let c3 = ConnectionId::next();
        b.on_connection_established(peer(3), c3, &listener(addr(3)), 0, t);
        assert_eq!(b.dialed_addr(c3), None);
    }

    #[test]
    fn a_request_we_cannot_encode_is_not_blamed_on_the_peer() {
        let mut b = Behaviour::new(
            peer(0),
            Config::new().with_kad(KadConfig {
                max_message_size: 64,
                max_failures: 1,
                ..KadConfig::default()
            }),
        );
        b.add_address(peer(1), addr(1));
        let q = b.find_node(vec![0; 100]);
        drive(&mut b);
        assert!(b.routing_table().contains(&peer(1)), "the peer stays");
        assert!(!b.queue.iter().any(|c| matches!(c, ToSwarm::OpenStream(_))));
        assert!(b.queue.iter().any(|c| matches!(c,
            ToSwarm::GenerateEvent(Event::Kad(KadEvent::QueryFinished {
                id,
                result: QueryResult::FindNode(Err(QueryError::Unsendable(ProtocolError::MessageTooLarge { .. }))),
                ..
            })) if *id == q)));
        // A record no message could carry is refused up front.
        let big = Record::new("k", vec![0; 100]);
        assert!(matches!(
            b.put_value(big, 1),
            Err(StoreError::RecordTooLarge { max: 64, .. })
        ));
    }

    #[test]
    fn errors_classify_unsupported() {
        assert!(Error::Stream(StreamError::UnsupportedProtocols).is_unsupported());
        assert!(!Error::Timeout.is_unsupported());
        let e = Error::from_io(io::Error::other("boom"));
        assert!(matches!(e, Error::Io(_)));
    }
}
