//! [`Behaviour`]: the SWIM core driven by a meshwire [`Swarm`](meshwire_swarm::Swarm) over QUIC.
//!
//! # What goes where
//!
//! - **Datagrams** (ping, ack, ping-req, nack, gossip) are unreliable QUIC datagrams on a
//!   connection with the member. The behaviour keeps the transport [`Connection`] handle of
//!   every connection it is told of ([`FromSwarm::ConnectionEstablished`]), sends on the
//!   peer's preferred connection (see below), and reads each connection's datagrams with one
//!   `read_datagram` future at a time, handing them to the core with the connection's
//!   authenticated peer as sender.
//! - **No connection to the target**: if the peer is a live member or a seed, the datagram
//!   waits in a small per-peer queue ([`Config::max_queued_datagrams_per_peer`], oldest
//!   dropped first; at most [`Config::max_queued_peers`] peers; entries older than
//!   [`Config::queued_datagram_ttl`] are swept on the timer path) while the behaviour dials
//!   the peer ([`ToSwarm::Dial`]) at the addresses of its member metadata (and former
//!   members' and the join seeds' addresses). Datagrams for anyone else (gossip to a member
//!   held dead) are sent only over an existing connection. Any failed dial of the peer drops
//!   its queue, and a failed dial of ours backs off the peer's dials
//!   ([`Config::dial_backoff`], doubling to [`Config::dial_backoff_max`]) until a connection
//!   or alive news. Gossip of a dissemination round never starts a dial (it waits briefly for
//!   a connection that comes anyway). Newly learned live members are dialed ahead of their
//!   first probe by the side with the smaller peer id (so a pair handshakes once), at most
//!   [`Config::warm_dials_per_period`] per protocol period (all at once bunched a cluster's
//!   handshakes together); and when a probe's ping has to wait for the first connection with a
//!   new member, the core is told ([`SwimEngine::handle_probe_unsent`], then [`SwimEngine::handle_probe_sent`] when
//!   it goes out), so the probe's timers run from the send and a ping that never went out in
//!   its period is not a failed probe (once per member; members we were connected with are
//!   probed as usual).
//! - **Push-pull** (join, anti-entropy): a stream negotiated as [`PROTOCOL`], opened with
//!   [`ToSwarm::OpenStream`] (the swarm dials if needed); the initiator writes one framed
//!   request and finishes its side, the responder reads it (bounded by the core's
//!   [`Limits`](crate::Limits), within [`Config::swim`]`.push_pull_timeout`), writes one framed
//!   answer and finishes. A failure of any step is reported to the core
//!   ([`SwimEngine::handle_push_pull_failed`]).
//! - **Timers**: one tokio `Sleep` armed at [`SwimEngine::poll_timeout`] (and at the next rejoin
//!   check and warm-up dial), checked on every `poll` after at most 16 datagrams, so that
//!   sustained input cannot starve probes and suspicion timers.
//! - **Keep-alive**: [`NetworkBehaviour::connection_keep_alive`] is `true` for the preferred
//!   connection of every live (alive or suspect) member, so the swarm's idle rule never
//!   closes it, and for any connection that carried a SWIM message of one of our realms
//!   (decoded; junk does not count) from the peer within
//!   [`Config::traffic_keep_alive`] (the peer uses it, e.g. a member that learned of us before
//!   we learned of it). Connections to dead, left or unknown peers are left to the idle rule.
//!   Of two connections between the same pair (simultaneous dials) the preferred one is the
//!   one dialed by the peer with the smaller id, which both sides agree on; datagrams go over
//!   it, so the duplicate idles out. QUIC's own keep-alive and idle timeout
//!   ([`QuicConfig`](meshwire_transport::quic::QuicConfig)) are independent of SWIM: they keep
//!   a wanted connection open or close a dead one, while SWIM judges members by its own
//!   datagrams only. Live members' peers are tagged [`CONN_MANAGER_TAG`]
//!   ([`Config::conn_manager_tag_value`]) in the swarm's connection manager and untagged when
//!   they fail or leave; nothing is protected. SWIM keeps a full mesh, so a realm larger than
//!   the connection manager's high watermark (192 by default) needs higher watermarks.
//! - **Local metadata**: the node announces its listen addresses (those with a specific IP;
//!   loopback ones only when it has no other) and confirmed external addresses, plus
//!   [`Config::data`], and re-announces (with a new
//!   incarnation) when they change, so members can dial it.
//! - **Rejoin**: every [`Config::rejoin_interval`], a node that sees no live member in a
//!   realm (cut off, every seed unreachable at start-up) rejoins ([`SwimEngine::rejoin`]) through
//!   its seeds, if any, and through up to 3 members it holds dead or former members, so a
//!   seed (which never joined through anyone) or a node whose seeds are gone finds its way
//!   back too. Members it is merely partitioned from are healed by the anti-entropy
//!   push-pulls.
//!
//! Bytes from the network are bounded before they are buffered (datagrams by QUIC and the
//! core's limits, push-pull frames by [`Config::swim`]`.max_push_pull_bytes`), inbound
//! push-pull streams are limited ([`Config::max_inbound_push_pulls`],
//! [`Config::max_inbound_push_pulls_per_peer`], and [`Config::max_inbound_push_pull_bytes`]
//! buffered at once over all of them), and nothing from the network can panic.
//!
//! SWIM assumes it is the only reader of QUIC datagrams on the swarm's connections.

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::{
    ConnManagerCommand, ConnectionDenied, DialError, DialOpts, FromSwarm, InboundStream,
    ListenerId, NetworkBehaviour, OpenStream, OutboundStreamResult, PeerCondition, Stream,
    StreamError, StreamProtocol, StreamRequestId, Timer, ToSwarm,
};
use meshwire_transport::{Connection, ConnectionError};
use multiaddr::{Multiaddr, Protocol};
use thiserror::Error;
use tokio::time::Instant;

use crate::wire::{decode_frame_len, encode_frame, Body};
use crate::SwimEvent;
use crate::{
    ConfigError, DecodeError, Member, MetaError, NodeMeta, Realm, SetMetaError, Stats, SwimEngine,
    TransmitKind, UnknownRealm, PROTOCOL_NAME,
};

/// The events of a [`Behaviour`]: the engine's [`SwimEvent`]s, one for one (member joined or
/// back, updated, suspected, refuted, failed, left, join failed); the behaviour adds none of
/// its own.
pub type Event = SwimEvent;

/// The stream protocol of push-pull exchanges, `/meshwire/swim/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

/// The datagram size limit the behaviour gives the core by default (its
/// [`Config::mtu`](crate::SwimConfig::mtu)), in bytes. A QUIC connection can always carry a
/// datagram of about 1,150 bytes (1,200-byte packets, minus headers and a connection id of up
/// to 20 bytes) before path MTU discovery raises the limit, so 1,100 always fits.
pub const DEFAULT_DATAGRAM_MTU: usize = 1100;

/// Seeds remembered per realm for rejoining.
pub const MAX_SEEDS: usize = 64;

/// Work items handled per call of `poll` before yielding to the swarm's other work.
const POLL_BUDGET: usize = 128;

/// Datagrams handled in a row before the timers are checked again.
const DATAGRAM_BATCH: usize = 16;

/// The connection-manager tag of live members' peers.
pub const CONN_MANAGER_TAG: &str = "swim";

/// Members held dead (or former members) tried per rejoin, besides the seeds.
const REJOIN_FALLBACK: usize = 3;

/// Stream requests for push-pulls in flight at most (the core itself keeps far fewer).
const MAX_PUSH_PULLS_IN_FLIGHT: usize = 256;

/// Settings of a [`Behaviour`]: the core's [`Config`](crate::SwimConfig) plus how it is driven.
///
/// ```
/// use std::time::Duration;
/// use meshwire_swim::behaviour::Config;
///
/// let mut config = Config::default().with_data(&b"role=db"[..]);
/// config.swim.probe_interval = Duration::from_millis(500);
/// config.swim.probe_timeout = Duration::from_millis(200);
/// assert_eq!(config.swim.mtu, meshwire_swim::behaviour::DEFAULT_DATAGRAM_MTU);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The protocol's settings. The default is the core's default with
    /// [`mtu`](crate::SwimConfig::mtu) = [`DEFAULT_DATAGRAM_MTU`]. A datagram larger than what a
    /// connection can carry at the moment is dropped (and counted), so keep the MTU at or
    /// below [`DEFAULT_DATAGRAM_MTU`] unless every path is known to carry more.
    pub swim: crate::SwimConfig,
    /// Opaque application data announced with the node's addresses (default empty). Its
    /// encoded size plus the addresses must fit [`crate::SwimConfig::max_metadata_bytes`];
    /// addresses are left out, last first, when they do not.
    pub data: Bytes,
    /// How often the node checks whether it is alone in a realm (no live member) and, if so,
    /// rejoins through its seeds and up to 3 members it last knew (held dead, or former
    /// members). `None` disables it. Default 10 s.
    pub rejoin_interval: Option<Duration>,
    /// Datagrams kept per peer while it is dialed (default 8). On overflow the oldest is
    /// dropped.
    pub max_queued_datagrams_per_peer: usize,
    /// Peers with queued datagrams at most (default 256); datagrams for more are dropped.
    pub max_queued_peers: usize,
    /// A queued datagram older than this is dropped instead of sent when the connection
    /// comes up (default 2 s).
    pub queued_datagram_ttl: Duration,
    /// Inbound push-pull streams served at once (default 32); more are reset.
    pub max_inbound_push_pulls: usize,
    /// Inbound push-pull streams served at once for one peer (default 2); more are reset.
    pub max_inbound_push_pulls_per_peer: usize,
    /// Addresses announced at most (default 8; the wire allows 16).
    pub max_announced_addresses: usize,
    /// A connection that carried a SWIM datagram from the peer within this time is kept
    /// alive even if the peer is not a live member here (yet): it is in use by the other
    /// side, e.g. by a member that learned of us before we learned of it (default 10 s).
    pub traffic_keep_alive: Duration,
    /// Seed of the core's random number generator; `None` (the default) draws one. A fixed
    /// seed only makes the core's own choices reproducible, not the network's timing.
    pub rng_seed: Option<u64>,
    /// Bytes of inbound push-pull requests buffered at once, over all streams (default
    /// 16 MiB); a request that would exceed it is refused (its stream reset).
    pub max_inbound_push_pull_bytes: usize,
    /// Newly learned live members without a connection are dialed ahead of their first
    /// probe, this many per protocol period at most (default 3; 0 turns it off), so that
    /// QUIC handshakes do not count against probe timeouts.
    pub warm_dials_per_period: u32,
    /// After a failed dial of a member, datagrams for it are dropped without dialing for
    /// this long, doubling with each further failure up to
    /// [`Config::dial_backoff_max`] (default 1 s). A connection with the peer, or news that
    /// it is alive again, ends the backoff.
    pub dial_backoff: Duration,
    /// The longest dial backoff (default 30 s).
    pub dial_backoff_max: Duration,
    /// The value of the [`CONN_MANAGER_TAG`] tag set on live members' peers in the swarm's
    /// connection manager (default 100; 0 turns tagging off).
    pub conn_manager_tag_value: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            swim: crate::SwimConfig {
                mtu: DEFAULT_DATAGRAM_MTU,
                ..crate::SwimConfig::default()
            },
            data: Bytes::new(),
            rejoin_interval: Some(Duration::from_secs(10)),
            max_queued_datagrams_per_peer: 8,
            max_queued_peers: 256,
            queued_datagram_ttl: Duration::from_secs(2),
            max_inbound_push_pulls: 32,
            max_inbound_push_pulls_per_peer: 2,
            max_announced_addresses: 8,
            traffic_keep_alive: Duration::from_secs(10),
            rng_seed: None,
            max_inbound_push_pull_bytes: 16 << 20,
            warm_dials_per_period: 3,
            dial_backoff: Duration::from_secs(1),
            dial_backoff_max: Duration::from_secs(30),
            conn_manager_tag_value: 100,
        }
    }
}

impl Config {
    /// Uses `swim` as the protocol's settings.
    pub fn with_swim(mut self, swim: crate::SwimConfig) -> Self {
        self.swim = swim;
        self
    }

    /// Sets [`Config::data`].
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets [`Config::rejoin_interval`].
    pub fn with_rejoin_interval(mut self, interval: Option<Duration>) -> Self {
        self.rejoin_interval = interval;
        self
    }

    /// Sets [`Config::rng_seed`].
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }
}

/// Why a [`Behaviour`] could not be created or a command was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// The configuration (or the local metadata) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The realm is not one the behaviour was created for.
    #[error(transparent)]
    UnknownRealm(#[from] UnknownRealm),
    /// The application data cannot be announced.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The node has left ([`Behaviour::leave`]); it takes no more commands.
    #[error("the node has left")]
    Left,
    /// A seed's address ends in `/p2p/` with another peer than the seed's, or is not a valid
    /// address of it.
    #[error("seed address {addr} does not belong to {peer}")]
    SeedAddress {
        /// The seed.
        peer: PeerId,
        /// The address given.
        addr: Multiaddr,
    },
}

impl From<SetMetaError> for Error {
    fn from(e: SetMetaError) -> Self {
        match e {
            SetMetaError::Meta(m) => Error::Meta(m),
            SetMetaError::Left => Error::Left,
        }
    }
}

/// Why a push-pull exchange failed (logged; the core is told with
/// [`SwimEngine::handle_push_pull_failed`]).
#[derive(Debug, Error)]
pub enum PushPullError {
    /// The stream could not be opened, or failed (including a remote that does not speak
    /// [`PROTOCOL`]).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The frame's length prefix is invalid or above the limit, or the message does not
    /// decode.
    #[error("bad message: {0}")]
    Decode(#[from] DecodeError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The exchange took longer than the core's `push_pull_timeout`.
    #[error("push-pull timed out")]
    Timeout,
    /// Too many inbound push-pull bytes buffered at once
    /// ([`Config::max_inbound_push_pull_bytes`]).
    #[error("inbound push-pull byte budget exhausted")]
    OverBudget,
    /// The answer decoded but is not a push-pull answer for the realm asked about.
    #[error("unexpected answer: {0}")]
    UnexpectedAnswer(&'static str),
}

impl From<std::io::Error> for PushPullError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return PushPullError::Truncated;
        }
        PushPullError::Stream(StreamError::from_io(e))
    }
}

/// Counters of a [`Behaviour`]'s IO (the protocol's own counters are in
/// [`Behaviour::stats`]`(realm)` and [`Behaviour::core`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams handed to QUIC.
    pub datagrams_sent: u64,
    /// Datagrams read from QUIC.
    pub datagrams_received: u64,
    /// Datagrams that failed to decode (dropped).
    pub datagrams_bad: u64,
    /// Datagrams queued because the peer was not connected.
    pub datagrams_queued: u64,
    /// Queued datagrams dropped: queue full, too old, or the dial failed.
    pub datagrams_dropped: u64,
    /// Datagrams larger than the connection could carry (dropped).
    pub datagrams_too_large: u64,
    /// Dials started to reach a member for datagrams.
    pub dials: u64,
    /// Of those, dials of newly learned members ahead of their first probe.
    pub warm_dials: u64,
    /// Datagrams dropped without dialing: the peer is not a live member or seed (e.g.
    /// gossip to a dead member), or its dials are backing off.
    pub datagrams_not_dialed: u64,
    /// Push-pulls we asked for that completed.
    pub push_pulls_completed: u64,
    /// Push-pulls we asked for that failed.
    pub push_pulls_failed: u64,
    /// Inbound push-pulls answered.
    pub push_pulls_served: u64,
    /// Inbound push-pull streams reset: over the limits, bad requests, or failures.
    pub push_pulls_refused: u64,
}

/// One established connection.
struct Conn {
    peer: PeerId,
    handle: Connection,
    /// When the last SWIM datagram came in on it.
    last_received: Option<Instant>,
    /// Dialed by whichever of the two peers has the smaller id: the connection both sides
    /// prefer when there are several.
    preferred: bool,
}

struct OutboundPushPull {
    peer: PeerId,
    realm: Realm,
    frame: Vec<u8>,
    /// Which exchange with (realm, peer) this is.
    id: u64,
    /// The core's deadline: its `push_pull_timeout` runs from the transmit.
    deadline: Instant,
}

/// Bytes of inbound push-pull requests buffered now, shared with the reading tasks.
#[derive(Clone, Default)]
struct ByteBudget(Arc<AtomicUsize>);

/// Bytes taken from a [`ByteBudget`], given back when dropped.
struct Reservation {
    budget: ByteBudget,
    bytes: usize,
}

impl ByteBudget {
    fn reserve(&self, bytes: usize, limit: usize) -> Option<Reservation> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

enum TaskOutput {
    /// The answer to a push-pull we asked for (the message bytes, without frame prefix).
    Answer {
        peer: PeerId,
        realm: Realm,
        id: u64,
        result: Result<Vec<u8>, PushPullError>,
    },
    /// A remote's push-pull request, read from its stream.
    Request {
        peer: PeerId,
        result: Result<(Stream, Vec<u8>, Reservation), PushPullError>,
    },
    /// Our answer to a remote's request was written (or not).
    Served {
        peer: PeerId,
        result: Result<(), PushPullError>,
    },
}

type DatagramRead = (ConnectionId, Result<Bytes, ConnectionError>);

/// Seeds of one realm with their addresses.
type Seeds = Vec<(PeerId, Vec<Multiaddr>)>;

/// The SWIM membership [`NetworkBehaviour`]: a [`SwimEngine`] core driven over the swarm's QUIC
/// connections. See the [module documentation](self) for what goes where and the
/// [crate documentation](crate) for an example with real swarms.
///
/// Its events are the core's [`Event`]s, one for one: member joined (or back), updated,
/// suspected, refuted (alive again), failed, left, and join failed.
pub struct Behaviour {
    core: SwimEngine,
    config: Config,
    local: PeerId,
    connections: HashMap<ConnectionId, Conn>,
    /// Open connections of each peer, oldest first.
    peers: HashMap<PeerId, Vec<ConnectionId>>,
    readers: FuturesUnordered<BoxFuture<'static, DatagramRead>>,
    queued: HashMap<PeerId, VecDeque<(Instant, Bytes)>>,
    /// Our dials in progress, by peer.
    dialing: HashMap<PeerId, ConnectionId>,
    push_pulls: HashMap<StreamRequestId, OutboundPushPull>,
    /// Push-pulls of ours from stream request to answer, by realm and peer: the id of the
    /// newest exchange (an older one's late outcome is ignored).
    push_pulls_in_flight: HashMap<(Realm, PeerId), u64>,
    next_exchange: u64,
    tasks: FuturesUnordered<BoxFuture<'static, TaskOutput>>,
    inbound_total: usize,
    inbound_per_peer: HashMap<PeerId, usize>,
    inbound_bytes: ByteBudget,
    /// Dial backoff per peer: until when, and failures in a row.
    backoff: HashMap<PeerId, (Instant, u32)>,
    /// Newly learned live members to dial ahead of their first probe.
    warm: VecDeque<PeerId>,
    next_warm: Option<Instant>,
    /// Peers tagged in the connection manager (live in some realm).
    tagged: std::collections::HashSet<PeerId>,
    /// Live members whose probes get no grace for a connection being set up: we have been
    /// connected with them since they became live, or a probe of them already had it.
    no_probe_grace: std::collections::HashSet<PeerId>,
    /// Seeds given to `join`, per realm, with their addresses.
    seeds: Vec<(Realm, Seeds)>,
    next_rejoin: Option<Instant>,
    listen_addrs: Vec<(ListenerId, Multiaddr)>,
    external_addrs: Vec<Multiaddr>,
    announced: NodeMeta,
    commands: VecDeque<ToSwarm<Event>>,
    /// Created on first use, inside the runtime that polls the behaviour.
    sleep: Timer,
    io: IoStats,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("local", &self.local)
            .field("core", &self.core)
            .field("connections", &self.connections.len())
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    Instant::now()
}

/// `addr` without a trailing `/p2p/<peer>`, if that names `peer` (or is absent).
fn bare_address_of(addr: &Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    meshwire_transport::split_peer_id(addr, Some(peer))
        .ok()
        .map(|(a, _)| a)
}

/// Whether `addr` is worth announcing: not an unspecified (all-interfaces) IP.
fn announceable(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        Some(_) => true,
        None => false,
    }
}

/// Whether `addr` starts with a loopback IP.
fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Reads one frame (varint length, message) of at most `max` bytes from `stream`. The buffer
/// grows with the bytes that actually arrive, never beyond `max`.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Vec<u8>, PushPullError> {
    read_frame_within(stream, max, |_| Ok(())).await
}

/// [`read_frame`] that takes the frame's length from `budget` (up to `limit` bytes in use
/// over all readers) before buffering anything; the reservation lasts as long as the bytes.
async fn read_frame_budgeted<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    budget: &ByteBudget,
    limit: usize,
) -> Result<(Vec<u8>, Reservation), PushPullError> {
    let mut reservation = None;
    let bytes = read_frame_within(stream, max, |len| {
        reservation = Some(
            budget
                .reserve(len, limit)
                .ok_or(PushPullError::OverBudget)?,
        );
        Ok(())
    })
    .await?;
    let reservation = reservation.ok_or(PushPullError::OverBudget)?;
    Ok((bytes, reservation))
}

/// Reads one frame; `admit` sees its length before anything of it is buffered.
async fn read_frame_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    mut admit: impl FnMut(usize) -> Result<(), PushPullError>,
) -> Result<Vec<u8>, PushPullError> {
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let len = loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        prefix[n] = byte[0];
        n += 1;
        if let Some((len, _)) = decode_frame_len(&prefix[..n], max)? {
            break len;
        }
        if n == prefix.len() {
            return Err(DecodeError::VarintOverflow("frame length").into());
        }
    };
    admit(len)?;
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await?;
    if read != len {
        return Err(PushPullError::Truncated);
    }
    Ok(buf)
}

/// The name of a message type, for logs.
fn kind_of(body: &Body) -> &'static str {
    match body {
        Body::Ping(_) => "ping",
        Body::Ack(_) => "ack",
        Body::PingReq(_) => "ping-req",
        Body::Nack(_) => "nack",
        Body::Gossip(_) => "gossip",
        Body::PushPull(_) => "push-pull",
    }
}

/// Runs `fut` within `timeout`.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, PushPullError>>,
) -> Result<T, PushPullError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(PushPullError::Timeout))
}

/// Runs `fut` until `deadline`.
async fn until<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, PushPullError>>,
) -> Result<T, PushPullError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or(Err(PushPullError::Timeout))
}

impl Behaviour {
    /// A behaviour for the node `local_peer_id` (the swarm's) in `realms`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid [`Config::swim`] or realm list, [`Error::Meta`] if
    /// [`Config::data`] is too large to announce.
    pub fn new(
        local_peer_id: PeerId,
        realms: impl IntoIterator<Item = Realm>,
        config: Config,
    ) -> Result<Self, Error> {
        let meta = NodeMeta::new(Vec::new(), config.data.clone())?;
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        let next_rejoin = config.rejoin_interval.map(|i| now() + i);
        let core = SwimEngine::new(
            local_peer_id,
            realms,
            meta.clone(),
            config.swim.clone(),
            seed,
            now().into_std(),
        )?;
        Ok(Behaviour {
            core,
            config,
            local: local_peer_id,
            connections: HashMap::new(),
            peers: HashMap::new(),
            readers: FuturesUnordered::new(),
            queued: HashMap::new(),
            dialing: HashMap::new(),
            push_pulls: HashMap::new(),
            push_pulls_in_flight: HashMap::new(),
            next_exchange: 0,
            tasks: FuturesUnordered::new(),
            inbound_total: 0,
            inbound_per_peer: HashMap::new(),
            inbound_bytes: ByteBudget::default(),
            backoff: HashMap::new(),
            warm: VecDeque::new(),
            next_warm: None,
            tagged: std::collections::HashSet::new(),
            no_probe_grace: std::collections::HashSet::new(),
            seeds: Vec::new(),
            // Every node checks: one without seeds (a seed itself) rejoins through the
            // members it last knew.
            next_rejoin,
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            announced: meta,
            commands: VecDeque::new(),
            sleep: Timer::default(),
            io: IoStats::default(),
            waker: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sans-IO core, for queries not mirrored here ([`SwimEngine::core_stats`],
    /// [`SwimEngine::suspicion`], ...).
    pub fn core(&self) -> &SwimEngine {
        &self.core
    }

    /// Joins `realm` through `seeds`, each a peer and an address of it (repeat a peer to give
    /// several addresses; a trailing `/p2p/` must name the same peer). The addresses go to the
    /// swarm's address book ([`ToSwarm::NewExternalAddrOfPeer`]); the join itself is a
    /// push-pull with each seed. A seed that cannot be reached is reported as
    /// [`Event::JoinFailed`]; with [`Config::rejoin_interval`] the node keeps retrying while
    /// it knows no live member. Joining again adds seeds.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRealm`], [`Error::Left`], [`Error::SeedAddress`].
    pub fn join(&mut self, realm: &Realm, seeds: &[(PeerId, Multiaddr)]) -> Result<(), Error> {
        if self.core.has_left() {
            return Err(Error::Left);
        }
        if self.core.local_member(realm).is_none() {
            return Err(UnknownRealm(realm.clone()).into());
        }
        let mut given: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for (peer, addr) in seeds {
            let bare = bare_address_of(addr, *peer).ok_or_else(|| Error::SeedAddress {
                peer: *peer,
                addr: addr.clone(),
            })?;
            if *peer == self.local {
                continue;
            }
            match given.iter_mut().find(|(p, _)| p == peer) {
                Some((_, addrs)) => {
                    if !addrs.contains(&bare) {
                        addrs.push(bare);
                    }
                }
                None => given.push((*peer, vec![bare])),
            }
        }
        let index = match self.seeds.iter().position(|(r, _)| r == realm) {
            Some(i) => i,
            None => {
                self.seeds.push((realm.clone(), Vec::new()));
                self.seeds.len() - 1
            }
        };
        for (peer, addrs) in &given {
            for addr in addrs {
                self.commands.push_back(ToSwarm::NewExternalAddrOfPeer {
                    peer: *peer,
                    addr: addr.clone(),
                });
            }
            let known = &mut self.seeds[index].1;
            if let Some((_, old)) = known.iter_mut().find(|(p, _)| p == peer) {
                for a in addrs {
                    if !old.contains(a) && old.len() < crate::wire::MAX_ADDRESSES {
                        old.push(a.clone());
                    }
                }
            } else if known.len() < MAX_SEEDS {
                known.push((*peer, addrs.clone()));
            }
        }
        let ids: Vec<PeerId> = given.iter().map(|(p, _)| *p).collect();
        tracing::info!(%realm, seeds = ids.len(), "swim: joining");
        self.core.join(now().into_std(), realm, &ids)?;
        if let Some(interval) = self.config.rejoin_interval {
            if self.next_rejoin.is_none() {
                self.next_rejoin = Some(now() + interval);
            }
        }
        self.drain();
        self.wake();
        Ok(())
    }

    /// Leaves every realm gracefully: the core raises its incarnation and tells
    /// [`leave_fanout`](crate::SwimConfig::leave_fanout) members per realm, who spread it; they
    /// report [`Event::MemberLeft`]. Afterwards the behaviour ignores SWIM traffic and keeps
    /// no connection alive. Keep polling the swarm for a moment (a few milliseconds on a LAN)
    /// so the datagrams go out before the swarm is dropped.
    pub fn leave(&mut self) {
        if self.core.has_left() {
            return;
        }
        tracing::info!("swim: leaving");
        self.core.leave(now().into_std());
        self.next_rejoin = None;
        self.drain();
        self.wake();
    }

    /// Whether [`Behaviour::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.core.has_left()
    }

    /// Every member of `realm` known now (alive, suspect, and recently dead or left), sorted
    /// by peer id, without this node.
    pub fn members(&self, realm: &Realm) -> Vec<Member> {
        self.core.members(realm)
    }

    /// The live (alive or suspect) members of `realm`, without this node.
    pub fn live_members(&self, realm: &Realm) -> Vec<Member> {
        let mut m = self.core.members(realm);
        m.retain(|m| m.state.is_live());
        m
    }

    /// One member of `realm`, if known.
    pub fn member(&self, realm: &Realm, peer: &PeerId) -> Option<Member> {
        self.core.member(realm, peer)
    }

    /// This node as a member of `realm` (its incarnation and announced metadata).
    pub fn local_member(&self, realm: &Realm) -> Option<Member> {
        self.core.local_member(realm)
    }

    /// The protocol counters of `realm`.
    pub fn stats(&self, realm: &Realm) -> Option<Stats> {
        self.core.stats(realm)
    }

    /// The IO counters.
    pub fn io_stats(&self) -> &IoStats {
        &self.io
    }

    /// Replaces the announced application data (a new incarnation spreads it).
    ///
    /// # Errors
    ///
    /// [`Error::Meta`] if it is too large to announce, [`Error::Left`] after leaving.
    pub fn set_data(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        if self.core.has_left() {
            return Err(Error::Left);
        }
        let data = data.into();
        let meta = NodeMeta::new(Vec::new(), data.clone())?;
        if meta.encoded_len() > self.config.swim.max_metadata_bytes {
            return Err(MetaError::TooLarge {
                len: meta.encoded_len(),
                limit: self.config.swim.max_metadata_bytes,
            }
            .into());
        }
        self.config.data = data;
        self.update_meta()?;
        self.wake();
        Ok(())
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Carries out what the core asks for: datagrams, push-pulls, events.
    fn drain(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match t.kind {
                TransmitKind::Datagram => {
                    tracing::trace!(peer = %t.to, kind = kind_of(&t.message.body), updates = t.message.body.updates().len(), "swim: send");
                    // A dissemination round's gossip never starts a dial: it goes to random
                    // members, and dialing for it would bunch handshakes together during
                    // formation; it waits (briefly) for a connection that comes anyway.
                    let dial = !matches!(t.message.body, Body::Gossip(_));
                    let bytes = Bytes::from(t.message.encode());
                    let queued = self.send_datagram_with(t.to, bytes, dial);
                    if let (true, Body::Ping(ping)) = (queued, &t.message.body) {
                        // A probe's ping waiting for the first connection with a new
                        // member: not a failure yet. (A member we were connected with and
                        // lost is probed as usual: it may have crashed.)
                        // Once per member: a second probe still waiting for the dial
                        // fails as usual.
                        if !self.no_probe_grace.contains(&t.to) {
                            tracing::debug!(peer = %t.to, seq = ping.seq, "swim: ping waits for a first connection");
                            self.core
                                .handle_probe_unsent(now().into_std(), &t.to, ping.seq);
                            self.no_probe_grace.insert(t.to);
                        }
                    }
                }
                TransmitKind::PushPull => {
                    let realm = t.message.realm.clone();
                    if self.push_pulls.len() >= MAX_PUSH_PULLS_IN_FLIGHT {
                        self.io.push_pulls_failed += 1;
                        self.core
                            .handle_push_pull_failed(now().into_std(), t.to, &realm);
                        continue;
                    }
                    let open = OpenStream::new(t.to, PROTOCOL);
                    tracing::debug!(peer = %t.to, %realm, "swim: push-pull");
                    self.next_exchange += 1;
                    let id = self.next_exchange;
                    self.push_pulls_in_flight.insert((realm.clone(), t.to), id);
                    self.push_pulls.insert(
                        open.id,
                        OutboundPushPull {
                            peer: t.to,
                            realm,
                            frame: encode_frame(&t.message),
                            id,
                            // The core's timer started when it made the transmit, just now.
                            deadline: now() + self.config.swim.push_pull_timeout,
                        },
                    );
                    self.commands.push_back(ToSwarm::OpenStream(open));
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            match &event {
                Event::MemberJoined { realm, member } => {
                    tracing::debug!(%realm, peer = %member.peer, "swim: member joined");
                    self.member_live(member.peer);
                }
                Event::MemberRefuted { member, .. } => self.member_live(member.peer),
                Event::MemberFailed { realm, peer, .. } => {
                    tracing::info!(%realm, %peer, "swim: member failed");
                    self.member_gone(*peer);
                }
                Event::MemberLeft { realm, peer, .. } => {
                    tracing::info!(%realm, %peer, "swim: member left");
                    self.member_gone(*peer);
                }
                Event::MemberSuspected {
                    realm,
                    peer,
                    accuser,
                    ..
                } => {
                    let connections = self.peers.get(peer).map_or(0, Vec::len);
                    tracing::debug!(
                        %realm, %peer, own = (*accuser == self.local), connections,
                        dialing = self.dialing.contains_key(peer),
                        queued = self.queued.get(peer).map_or(0, VecDeque::len),
                        "swim: member suspected"
                    )
                }
                Event::JoinFailed { realm, seed } => {
                    tracing::info!(%realm, %seed, "swim: join through seed failed")
                }
                _ => {}
            }
            self.commands.push_back(ToSwarm::GenerateEvent(event));
        }
    }

    /// The connections of `peer` in the order to try them: preferred first, newest first.
    fn send_order(&self, peer: &PeerId) -> Vec<ConnectionId> {
        let Some(ids) = self.peers.get(peer) else {
            return Vec::new();
        };
        let mut order: Vec<ConnectionId> = ids.iter().rev().copied().collect();
        order.sort_by_key(|id| !self.connections.get(id).is_some_and(|c| c.preferred));
        order
    }

    fn send_datagram(&mut self, to: PeerId, bytes: Bytes) {
        self.send_datagram_with(to, bytes, true);
    }

    /// Sends `bytes` to `to`; without a connection, queues them and, if `dial`, dials.
    /// `true` if they were queued (they wait for a connection).
    fn send_datagram_with(&mut self, to: PeerId, bytes: Bytes, dial: bool) -> bool {
        for id in self.send_order(&to) {
            let Some(c) = self.connections.get(&id) else {
                continue;
            };
            match c.handle.max_datagram_size() {
                None => continue,
                Some(max) if bytes.len() > max => {
                    self.io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return false;
                }
                Some(_) => {}
            }
            match c.handle.send_datagram(bytes.clone()) {
                Ok(()) => {
                    self.io.datagrams_sent += 1;
                    return false;
                }
                Err(ConnectionError::DatagramTooLarge { max }) => {
                    self.io.datagrams_too_large += 1;
                    tracing::debug!(peer = %to, len = bytes.len(), max, "swim: datagram too large for the connection; dropped");
                    return false;
                }
                Err(e) => {
                    tracing::trace!(peer = %to, connection = %id, error = %e, "swim: datagram not sent; trying another connection");
                }
            }
        }
        self.queue_datagram(to, bytes, dial)
    }

    /// A member became live (joined, came back, refuted): tag it, end any dial backoff, and
    /// dial it ahead of its first probe if it has no connection.
    fn member_live(&mut self, peer: PeerId) {
        self.backoff.remove(&peer);
        if self.peers.contains_key(&peer) {
            self.no_probe_grace.insert(peer);
        }
        if self.config.conn_manager_tag_value != 0 && self.tagged.insert(peer) {
            self.commands
                .push_back(ToSwarm::ConnManager(ConnManagerCommand::TagPeer {
                    peer,
                    tag: CONN_MANAGER_TAG.to_string(),
                    value: self.config.conn_manager_tag_value,
                }));
        }
        // Only the peer with the smaller id dials ahead (the connection both sides prefer),
        // so the two sides do not handshake twice.
        if self.config.warm_dials_per_period > 0
            && self.local < peer
            && !self.peers.contains_key(&peer)
            && !self.warm.contains(&peer)
        {
            self.warm.push_back(peer);
            if self.next_warm.is_none() {
                // At a random point of the coming period: the members that learn of a new
                // node together do not all handshake with it at once.
                let jitter = self
                    .config
                    .swim
                    .probe_interval
                    .mul_f64(rand::random::<f64>());
                self.next_warm = Some(now() + jitter);
            }
        }
    }

    /// A member failed or left: untag it unless it is still live in another realm.
    fn member_gone(&mut self, peer: PeerId) {
        if !self.is_live_member(&peer) {
            self.no_probe_grace.remove(&peer);
        }
        if !self.is_live_member(&peer) && self.tagged.remove(&peer) {
            self.commands
                .push_back(ToSwarm::ConnManager(ConnManagerCommand::UntagPeer {
                    peer,
                    tag: CONN_MANAGER_TAG.to_string(),
                }));
        }
    }

    /// Dials one queued newly learned member, if it still needs it.
    fn warm_one(&mut self) {
        while let Some(peer) = self.warm.pop_front() {
            if self.peers.contains_key(&peer)
                || self.dialing.contains_key(&peer)
                || !self.is_live_member(&peer)
                || self.backing_off(&peer)
            {
                continue;
            }
            self.io.warm_dials += 1;
            self.dial(peer);
            return;
        }
    }

    fn is_seed(&self, peer: &PeerId) -> bool {
        self.seeds
            .iter()
            .any(|(_, seeds)| seeds.iter().any(|(p, _)| p == peer))
    }

    fn backing_off(&self, peer: &PeerId) -> bool {
        self.backoff
            .get(peer)
            .is_some_and(|(until, _)| *until > now())
    }

    /// Whether a datagram for `peer` may start a dial: only live members and seeds, and not
    /// while its dials back off.
    fn may_dial(&self, peer: &PeerId) -> bool {
        (self.is_live_member(peer) || self.is_seed(peer)) && !self.backing_off(peer)
    }

    fn queue_datagram(&mut self, to: PeerId, bytes: Bytes, dial: bool) -> bool {
        if !self.dialing.contains_key(&to) && !self.may_dial(&to) {
            self.io.datagrams_not_dialed += 1;
            return false;
        }
        let per_peer = self.config.max_queued_datagrams_per_peer;
        let queued = if per_peer == 0
            || (!self.queued.contains_key(&to) && self.queued.len() >= self.config.max_queued_peers)
        {
            self.io.datagrams_dropped += 1;
            false
        } else {
            let q = self.queued.entry(to).or_default();
            if q.len() >= per_peer {
                q.pop_front();
                self.io.datagrams_dropped += 1;
            }
            q.push_back((now(), bytes));
            self.io.datagrams_queued += 1;
            true
        };
        if dial && !self.dialing.contains_key(&to) {
            self.dial(to);
        }
        queued && self.dialing.contains_key(&to)
    }

    fn dial(&mut self, peer: PeerId) {
        let addrs = self.addresses_of(&peer);
        let opts = DialOpts::peer(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing);
        tracing::debug!(%peer, "swim: dialing a member");
        self.dialing.insert(peer, opts.connection_id());
        self.io.dials += 1;
        self.commands.push_back(ToSwarm::Dial(opts));
    }

    /// Sends what waited for a connection to `peer`.
    fn flush_queue(&mut self, peer: PeerId) {
        let Some(q) = self.queued.remove(&peer) else {
            return;
        };
        let ttl = self.config.queued_datagram_ttl;
        let t = now();
        // A probe's ping may be among them: its timers run from now, not from the dial.
        self.core.handle_probe_sent(t.into_std(), &peer);
        for (at, bytes) in q {
            if t.saturating_duration_since(at) > ttl {
                self.io.datagrams_dropped += 1;
                continue;
            }
            self.send_datagram(peer, bytes);
        }
    }

    /// Addresses to dial `peer` at: its member metadata in any realm, and its seed addresses.
    fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let mut add = |a: &Multiaddr| {
            if out.len() < crate::wire::MAX_ADDRESSES {
                if let Some(bare) = bare_address_of(a, *peer) {
                    if !out.contains(&bare) {
                        out.push(bare);
                    }
                }
            }
        };
        for realm in self.core.realms() {
            if let Some(m) = self.core.member(realm, peer) {
                m.addresses().iter().for_each(&mut add);
            }
        }
        for (_, seeds) in &self.seeds {
            if let Some((_, addrs)) = seeds.iter().find(|(p, _)| p == peer) {
                addrs.iter().for_each(&mut add);
            }
        }
        for realm in self.core.realms() {
            if let Some(m) = self.core.former_member(realm, peer) {
                m.addresses().iter().for_each(&mut add);
            }
        }
        out
    }

    /// Drops queued datagrams older than the TTL.
    fn sweep_queues(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let ttl = self.config.queued_datagram_ttl;
        let t = now();
        let mut dropped = 0u64;
        self.queued.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| t.saturating_duration_since(*at) > ttl)
            {
                q.pop_front();
                dropped += 1;
            }
            !q.is_empty()
        });
        self.io.datagrams_dropped += dropped;
    }

    fn is_live_member(&self, peer: &PeerId) -> bool {
        self.core
            .realms()
            .any(|r| self.core.member(r, peer).is_some_and(|m| m.state.is_live()))
    }

    /// Recomputes the announced metadata from addresses and data; announces it if it changed.
    fn update_meta(&mut self) -> Result<(), Error> {
        let limit = self
            .config
            .max_announced_addresses
            .min(crate::wire::MAX_ADDRESSES);
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for a in self
            .listen_addrs
            .iter()
            .map(|(_, a)| a)
            .chain(&self.external_addrs)
        {
            let Some(bare) = bare_address_of(a, self.local) else {
                continue;
            };
            if announceable(&bare)
                && bare.len() <= crate::wire::MAX_ADDRESS_LEN
                && !addrs.contains(&bare)
            {
                addrs.push(bare);
            }
        }
        // Loopback addresses only when there is nothing else (a node on one host).
        if addrs.iter().any(|a| !is_loopback(a)) {
            addrs.retain(|a| !is_loopback(a));
        }
        addrs.truncate(limit);
        let max = self.config.swim.max_metadata_bytes;
        let meta = loop {
            let meta = NodeMeta::new(addrs.clone(), self.config.data.clone())?;
            if meta.encoded_len() <= max || addrs.is_empty() {
                break meta;
            }
            addrs.pop();
        };
        if meta == self.announced {
            return Ok(());
        }
        tracing::debug!(addresses = ?meta.addresses(), "swim: announcing new metadata");
        self.core.set_metadata(now().into_std(), meta.clone())?;
        self.announced = meta;
        self.drain();
        Ok(())
    }

    fn arm_reader(&mut self, id: ConnectionId, handle: Connection) {
        self.readers.push(
            async move {
                let r = handle.read_datagram().await;
                (id, r)
            }
            .boxed(),
        );
    }

    fn on_datagram(&mut self, id: ConnectionId, result: Result<Bytes, ConnectionError>) {
        let (peer, handle) = match self.connections.get(&id) {
            Some(c) => (c.peer, c.handle.clone()),
            None => return,
        };
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                // Closed (its `ConnectionClosed` follows) or datagrams unsupported.
                tracing::trace!(connection = %id, %peer, error = %e, "swim: datagram reader ends");
                return;
            }
        };
        self.arm_reader(id, handle);
        self.io.datagrams_received += 1;
        if self.core.has_left() {
            return;
        }
        if bytes.len() > self.core.limits().max_datagram_bytes {
            self.io.datagrams_bad += 1;
            return;
        }
        match crate::Message::decode(&bytes, self.core.limits()) {
            Ok(msg) => {
                tracing::trace!(%peer, kind = kind_of(&msg.body), updates = msg.body.updates().len(), "swim: received");
                // Only SWIM traffic of our realms keeps the connection alive, not junk.
                if self.core.local_member(&msg.realm).is_some() {
                    if let Some(c) = self.connections.get_mut(&id) {
                        c.last_received = Some(now());
                    }
                }
                self.core.handle_message(now().into_std(), peer, msg);
            }
            Err(e) => {
                self.io.datagrams_bad += 1;
                tracing::debug!(%peer, error = %e, "swim: bad datagram dropped");
            }
        }
        self.drain();
    }

    fn spawn(&mut self, fut: impl Future<Output = TaskOutput> + Send + 'static) {
        self.tasks.push(fut.boxed());
    }

    fn inbound_done(&mut self, peer: PeerId) {
        self.inbound_total = self.inbound_total.saturating_sub(1);
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
    }

    fn on_task(&mut self, out: TaskOutput) {
        let t = now().into_std();
        match out {
            TaskOutput::Answer {
                peer,
                realm,
                id,
                result,
            } => {
                if !self.end_exchange(&realm, peer, id) {
                    // An older exchange with the peer that the core gave up on already.
                    tracing::debug!(%peer, %realm, "swim: late outcome of an old push-pull ignored");
                    return;
                }
                let checked = result.and_then(|bytes| {
                    let msg = crate::Message::decode(&bytes, self.core.limits())?;
                    if msg.realm != realm {
                        return Err(PushPullError::UnexpectedAnswer("another realm"));
                    }
                    match &msg.body {
                        Body::PushPull(pp) if pp.response => Ok(msg),
                        _ => Err(PushPullError::UnexpectedAnswer("not a push-pull answer")),
                    }
                });
                match checked {
                    Ok(msg) => {
                        self.io.push_pulls_completed += 1;
                        self.core.handle_push_pull(t, peer, msg);
                    }
                    Err(e) => {
                        self.io.push_pulls_failed += 1;
                        tracing::debug!(%peer, %realm, error = %e, "swim: push-pull failed");
                        self.core.handle_push_pull_failed(t, peer, &realm);
                    }
                }
                self.drain();
            }
            TaskOutput::Request { peer, result } => {
                let (mut stream, bytes, reservation) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        self.io.push_pulls_refused += 1;
                        tracing::debug!(%peer, error = %e, "swim: inbound push-pull failed");
                        self.inbound_done(peer);
                        return;
                    }
                };
                let answer = match crate::Message::decode(&bytes, self.core.limits()) {
                    Ok(msg) if self.core.has_left() => {
                        let _ = msg;
                        None
                    }
                    Ok(msg) => self.core.handle_push_pull(t, peer, msg),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "swim: bad push-pull request");
                        None
                    }
                };
                drop(reservation);
                self.drain();
                let Some(answer) = answer else {
                    self.io.push_pulls_refused += 1;
                    stream.reset();
                    self.inbound_done(peer);
                    return;
                };
                let frame = encode_frame(&answer);
                let timeout = self.config.swim.push_pull_timeout;
                self.spawn(async move {
                    let result = within(timeout, async {
                        stream.write_all(&frame).await?;
                        stream.close().await?;
                        Ok(())
                    })
                    .await;
                    if result.is_err() {
                        stream.reset();
                    }
                    TaskOutput::Served { peer, result }
                });
            }
            TaskOutput::Served { peer, result } => {
                match result {
                    Ok(()) => self.io.push_pulls_served += 1,
                    Err(e) => {
                        self.io.push_pulls_refused += 1;
                        tracing::debug!(%peer, error = %e, "swim: push-pull answer not delivered");
                    }
                }
                self.inbound_done(peer);
            }
        }
    }

    fn rejoin(&mut self) {
        if self.core.has_left() {
            return;
        }
        let t = now().into_std();
        let realms: Vec<Realm> = self.core.realms().cloned().collect();
        for realm in realms {
            if self.core.live_member_count(&realm) > 0 {
                continue;
            }
            let ids: Vec<PeerId> = self
                .seeds
                .iter()
                .filter(|(r, _)| *r == realm)
                .flat_map(|(_, seeds)| seeds.iter().map(|(p, _)| *p))
                .filter(|p| !self.push_pulls_in_flight.contains_key(&(realm.clone(), *p)))
                .collect();
            match self.core.rejoin(t, &realm, &ids, REJOIN_FALLBACK) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(%realm, seeds = ids.len(), push_pulls = n, "swim: no live member; rejoining through the seeds and last-known members")
                }
                Err(e) => tracing::warn!(error = %e, "swim: rejoin refused"),
            }
        }
        self.drain();
    }

    /// Ends our push-pull exchange `id` with `peer`; `false` if a newer one replaced it.
    fn end_exchange(&mut self, realm: &Realm, peer: PeerId, id: u64) -> bool {
        let key = (realm.clone(), peer);
        if self.push_pulls_in_flight.get(&key) == Some(&id) {
            self.push_pulls_in_flight.remove(&key);
            true
        } else {
            false
        }
    }

    /// Runs due timers and arms the sleep for the next; `true` if something ran.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let next_core = self.core.poll_timeout().map(Instant::from_std);
        if self.warm.is_empty() {
            self.next_warm = None;
        }
        let next = [next_core, self.next_rejoin, self.next_warm]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            return false;
        };
        if at > now() && self.sleep.poll_at(Some(at), cx).is_pending() {
            return false;
        }
        let t = now();
        if next_core.is_some_and(|c| c <= t) {
            self.core.handle_timeout(t.into_std());
            self.drain();
            self.sweep_queues();
        }
        if self.next_warm.is_some_and(|w| w <= t) {
            self.warm_one();
            let per = self.config.warm_dials_per_period.max(1);
            self.next_warm =
                (!self.warm.is_empty()).then(|| t + self.config.swim.probe_interval / per);
        }
        if self.next_rejoin.is_some_and(|r| r <= t) {
            self.next_rejoin = self.config.rejoin_interval.map(|i| t + i);
            self.rejoin();
        }
        true
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
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
        let mut extra = self.addresses_of(&peer);
        extra.retain(|a| !addresses.contains(a));
        Ok(extra)
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        if self.core.has_left() {
            return false;
        }
        let recent = self
            .connections
            .get(&connection)
            .and_then(|c| c.last_received)
            .is_some_and(|t| t.elapsed() < self.config.traffic_keep_alive);
        if recent {
            return true;
        }
        if !self.is_live_member(&peer) {
            return false;
        }
        if self
            .connections
            .get(&connection)
            .is_some_and(|c| c.preferred)
        {
            return true;
        }
        // Not the preferred kind: keep it only while the peer has no preferred connection.
        !self.peers.get(&peer).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.connections.get(id).is_some_and(|c| c.preferred))
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                handle,
                ..
            } => {
                let dialer_is_local = endpoint.is_dialer();
                let smaller_dialed = if dialer_is_local {
                    self.local < peer
                } else {
                    peer < self.local
                };
                self.connections.insert(
                    connection,
                    Conn {
                        peer,
                        handle: handle.clone(),
                        last_received: None,
                        preferred: smaller_dialed,
                    },
                );
                self.peers.entry(peer).or_default().push(connection);
                self.arm_reader(connection, handle.clone());
                self.dialing.remove(&peer);
                self.backoff.remove(&peer);
                if self.is_live_member(&peer) {
                    self.no_probe_grace.insert(peer);
                }
                self.flush_queue(peer);
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                self.connections.remove(&connection);
                if let Some(ids) = self.peers.get_mut(&peer) {
                    ids.retain(|id| *id != connection);
                    if ids.is_empty() {
                        self.peers.remove(&peer);
                    }
                }
            }
            FromSwarm::DialFailure {
                peer: Some(peer),
                connection,
                error,
            } => {
                let ours = self.dialing.get(&peer) == Some(&connection);
                if ours {
                    self.dialing.remove(&peer);
                }
                if matches!(error, DialError::ConditionFalse(_)) {
                    // The peer is connected or being dialed already. Connected: send now.
                    // Dialed (by another behaviour): its connection flushes the queue, or
                    // the TTL sweep drops it.
                    if ours && self.peers.contains_key(&peer) {
                        self.flush_queue(peer);
                    }
                } else {
                    // Any failed dial of the peer (ours or another behaviour's) ends what
                    // waited for it; ours also backs off further dials.
                    if let Some(q) = self.queued.remove(&peer) {
                        self.io.datagrams_dropped += q.len() as u64;
                    }
                    if ours {
                        let t = now();
                        let (_, failures) = self.backoff.get(&peer).copied().unwrap_or((t, 0));
                        let failures = failures.saturating_add(1);
                        let wait = self
                            .config
                            .dial_backoff
                            .saturating_mul(1u32 << (failures - 1).min(16))
                            .min(self.config.dial_backoff_max);
                        self.backoff.insert(peer, (t + wait, failures));
                        if self.backoff.len() > 4 * self.config.max_queued_peers.max(64) {
                            self.backoff.retain(|_, (until, _)| *until > t);
                        }
                        tracing::debug!(%peer, %error, ?wait, "swim: dial of a member failed; backing off");
                    }
                }
            }
            FromSwarm::NewListenAddr { listener, addr }
                if !self
                    .listen_addrs
                    .iter()
                    .any(|(l, a)| *l == listener && a == addr) =>
            {
                self.listen_addrs.push((listener, addr.clone()));
                let _ = self.update_meta();
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                let before = self.listen_addrs.len();
                self.listen_addrs.retain(|(l, _)| *l != listener);
                if self.listen_addrs.len() != before {
                    let _ = self.update_meta();
                }
            }
            FromSwarm::ExternalAddrConfirmed { addr }
                if !self.external_addrs.contains(addr)
                    && self.external_addrs.len() < crate::wire::MAX_ADDRESSES =>
            {
                self.external_addrs.push(addr.clone());
                let _ = self.update_meta();
            }
            FromSwarm::ExternalAddrExpired { addr } => {
                let before = self.external_addrs.len();
                self.external_addrs.retain(|a| a != addr);
                if self.external_addrs.len() != before {
                    let _ = self.update_meta();
                }
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer, mut stream, ..
        } = inbound;
        let per_peer = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        if self.core.has_left()
            || self.inbound_total >= self.config.max_inbound_push_pulls
            || per_peer >= self.config.max_inbound_push_pulls_per_peer
        {
            self.io.push_pulls_refused += 1;
            tracing::debug!(%peer, "swim: inbound push-pull refused (limit or left)");
            stream.reset();
            return;
        }
        self.inbound_total += 1;
        *self.inbound_per_peer.entry(peer).or_default() += 1;
        let max = self.core.limits().max_push_pull_bytes;
        let timeout = self.config.swim.push_pull_timeout;
        let budget = self.inbound_bytes.clone();
        let limit = self.config.max_inbound_push_pull_bytes;
        self.spawn(async move {
            let result = within(
                timeout,
                read_frame_budgeted(&mut stream, max, &budget, limit),
            )
            .await;
            let result = match result {
                Ok((bytes, reservation)) => Ok((stream, bytes, reservation)),
                Err(e) => {
                    stream.reset();
                    Err(e)
                }
            };
            TaskOutput::Request { peer, result }
        });
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(pp) = self.push_pulls.remove(&result.id) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        let OutboundPushPull {
            peer,
            realm,
            frame,
            id,
            deadline,
        } = pp;
        match result.result {
            Err(e) => {
                self.io.push_pulls_failed += 1;
                tracing::debug!(%peer, %realm, error = %e, "swim: push-pull stream not opened");
                if self.end_exchange(&realm, peer, id) {
                    self.core
                        .handle_push_pull_failed(now().into_std(), peer, &realm);
                    self.drain();
                }
            }
            Ok(out) => {
                let mut stream = out.stream;
                let max = self.core.limits().max_push_pull_bytes;
                self.spawn(async move {
                    let result = until(deadline, async {
                        stream.write_all(&frame).await?;
                        stream.close().await?;
                        read_frame(&mut stream, max).await
                    })
                    .await;
                    if result.is_err() {
                        stream.reset();
                    }
                    TaskOutput::Answer {
                        peer,
                        realm,
                        id,
                        result,
                    }
                });
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        for _ in 0..POLL_BUDGET {
            if let Some(cmd) = self.commands.pop_front() {
                return Poll::Ready(cmd);
            }
            let mut busy = false;
            if let Poll::Ready(Some(out)) = self.tasks.poll_next_unpin(cx) {
                self.on_task(out);
                busy = true;
            }
            // A bounded batch of datagrams (so `last_heard` is fresh), then the timers, every
            // time: a steady stream of datagrams must not hold back probes and suspicions.
            for _ in 0..DATAGRAM_BATCH {
                match self.readers.poll_next_unpin(cx) {
                    Poll::Ready(Some((id, result))) => {
                        self.on_datagram(id, result);
                        busy = true;
                    }
                    _ => break,
                }
            }
            if self.poll_timers(cx) {
                busy = true;
            }
            if !busy && self.commands.is_empty() {
                return Poll::Pending;
            }
        }
        if let Some(cmd) = self.commands.pop_front() {
            return Poll::Ready(cmd);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use meshwire_core::Keypair;

    fn realm() -> Realm {
        "org.example.mesh".parse().unwrap()
    }

    #[tokio::test]
    async fn frames_are_bounded_and_strict() {
        // A whole frame.
        let mut ok = Cursor::new(vec![3u8, 1, 2, 3]);
        assert_eq!(read_frame(&mut ok, 16).await.unwrap(), vec![1, 2, 3]);
        // Above the limit: refused before anything is buffered.
        let mut big = Cursor::new(vec![0x80u8, 0x80, 0x01]);
        assert!(matches!(
            read_frame(&mut big, 1024).await,
            Err(PushPullError::Decode(DecodeError::LimitExceeded { .. }))
        ));
        // Ends inside the message, or inside the prefix.
        let mut short = Cursor::new(vec![5u8, 1, 2]);
        assert!(matches!(
            read_frame(&mut short, 16).await,
            Err(PushPullError::Truncated)
        ));
        let mut none = Cursor::new(vec![0x80u8]);
        assert!(matches!(
            read_frame(&mut none, 16).await,
            Err(PushPullError::Truncated)
        ));
        // A prefix that never ends.
        let mut endless = Cursor::new(vec![0xffu8; 12]);
        assert!(matches!(
            read_frame(&mut endless, usize::MAX).await,
            Err(PushPullError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn join_validates_seeds_and_announces_addresses() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let seed = Keypair::from_seed_for_tests(2).peer_id();
        let other = Keypair::from_seed_for_tests(3).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default().with_rng_seed(1)).unwrap();
        let addr: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        let wrong = meshwire_transport::with_peer_id(&addr, other);
        assert_eq!(
            b.join(&realm(), &[(seed, wrong.clone())]),
            Err(Error::SeedAddress {
                peer: seed,
                addr: wrong
            })
        );
        let foreign: Realm = "org.example.other".parse().unwrap();
        assert!(matches!(
            b.join(&foreign, &[(seed, addr.clone())]),
            Err(Error::UnknownRealm(_))
        ));
        let with_p2p = meshwire_transport::with_peer_id(&addr, seed);
        b.join(&realm(), &[(seed, with_p2p)]).unwrap();
        // The seed's address goes to the swarm, then the push-pull stream is asked for.
        assert!(matches!(
            b.commands.pop_front(),
            Some(ToSwarm::NewExternalAddrOfPeer { peer, addr: a }) if peer == seed && a == addr
        ));
        assert!(matches!(
            b.commands.pop_front(),
            Some(ToSwarm::OpenStream(o)) if o.peer == seed && o.protocols == vec![PROTOCOL]
        ));
        // Dials of the seed get its address from the behaviour.
        assert_eq!(
            b.handle_pending_outbound_connection(ConnectionId::next(), Some(seed), &[])
                .unwrap(),
            vec![addr.clone()]
        );
        // Listen addresses are announced, unspecified ones are not.
        let l = ListenerId::next();
        let any: Multiaddr = "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap();
        let mine: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        b.on_swarm_event(FromSwarm::NewListenAddr {
            listener: l,
            addr: &any,
        });
        assert!(b.local_member(&realm()).unwrap().addresses().is_empty());
        b.on_swarm_event(FromSwarm::NewListenAddr {
            listener: l,
            addr: &mine,
        });
        let me = b.local_member(&realm()).unwrap();
        assert_eq!(me.addresses(), std::slice::from_ref(&mine));
        assert_eq!(me.incarnation, 1);
        b.on_swarm_event(FromSwarm::ListenerClosed {
            listener: l,
            reason: Ok(()),
        });
        assert!(b.local_member(&realm()).unwrap().addresses().is_empty());
        // Too much data is refused.
        assert!(matches!(
            b.set_data(vec![0u8; 600]),
            Err(Error::Meta(MetaError::TooLarge { .. }))
        ));
        b.set_data(&b"role=db"[..]).unwrap();
        assert_eq!(&b.local_member(&realm()).unwrap().data()[..], b"role=db");
        b.leave();
        assert!(b.has_left());
        assert_eq!(b.join(&realm(), &[]), Err(Error::Left));
        assert_eq!(b.set_data(Bytes::new()), Err(Error::Left));
    }

    #[tokio::test]
    async fn datagrams_without_connection_are_queued_boundedly_and_dialed_once() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let config = Config {
            max_queued_datagrams_per_peer: 2,
            max_queued_peers: 1,
            ..Config::default()
        };
        let mut b = Behaviour::new(local, [realm()], config).unwrap();
        let p1 = Keypair::from_seed_for_tests(2).peer_id();
        let p2 = Keypair::from_seed_for_tests(3).peer_id();
        learn(&mut b, &[p1, p2]);
        for i in 0..3u8 {
            b.send_datagram(p1, Bytes::from(vec![i]));
        }
        b.send_datagram(p2, Bytes::from_static(b"x"));
        let q = b.queued.get(&p1).unwrap();
        assert_eq!(q.iter().map(|(_, d)| d[0]).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!b.queued.contains_key(&p2));
        assert_eq!(b.io.datagrams_dropped, 2);
        // One dial per peer while it is in progress.
        let dials: Vec<_> = b
            .commands
            .iter()
            .filter_map(|c| match c {
                ToSwarm::Dial(d) => d.peer_id(),
                _ => None,
            })
            .collect();
        assert_eq!(dials, vec![p1, p2]);
        // A failed dial drops the queue.
        let conn = b.dialing[&p1];
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(p1),
            connection: conn,
            error: &DialError::NoAddresses,
        });
        assert!(b.queued.is_empty());
        assert_eq!(b.io.datagrams_dropped, 4);
        assert!(!b.dialing.contains_key(&p1));
    }

    /// Makes `peers` live members of `realm()` (alive news from the first).
    fn learn(b: &mut Behaviour, peers: &[PeerId]) {
        let updates = peers
            .iter()
            .map(|p| crate::wire::Update {
                peer: *p,
                incarnation: 0,
                kind: crate::wire::UpdateKind::Alive(std::sync::Arc::new(NodeMeta::empty())),
            })
            .collect();
        let msg = crate::Message {
            realm: realm(),
            body: Body::Gossip(crate::wire::Gossip { updates }),
        };
        b.core.handle_message(now().into_std(), peers[0], msg);
        b.drain();
    }

    fn dials(b: &Behaviour) -> Vec<PeerId> {
        b.commands
            .iter()
            .filter_map(|c| match c {
                ToSwarm::Dial(d) => d.peer_id(),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn only_live_members_and_seeds_are_dialed_with_backoff() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default()).unwrap();
        let member = Keypair::from_seed_for_tests(2).peer_id();
        let stranger = Keypair::from_seed_for_tests(3).peer_id();
        learn(&mut b, &[member]);
        b.commands.clear();
        // Not a member (e.g. a ping-req target named by a remote, gossip to a dead member):
        // dropped, no dial.
        b.send_datagram(stranger, Bytes::from_static(b"x"));
        assert!(dials(&b).is_empty());
        assert!(b.queued.is_empty());
        assert_eq!(b.io.datagrams_not_dialed, 1);
        // A live member is dialed; its dial fails: backoff.
        b.send_datagram(member, Bytes::from_static(b"x"));
        assert_eq!(dials(&b), vec![member]);
        let conn = b.dialing[&member];
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(member),
            connection: conn,
            error: &DialError::NoAddresses,
        });
        b.commands.clear();
        b.send_datagram(member, Bytes::from_static(b"x"));
        assert!(dials(&b).is_empty(), "backing off");
        assert_eq!(b.io.datagrams_not_dialed, 2);
        tokio::time::advance(Duration::from_millis(1100)).await;
        b.send_datagram(member, Bytes::from_static(b"x"));
        assert_eq!(dials(&b), vec![member]);
        // The second failure doubles the wait.
        let conn = b.dialing[&member];
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(member),
            connection: conn,
            error: &DialError::NoAddresses,
        });
        assert_eq!(b.backoff[&member].1, 2);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(b.backing_off(&member));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(!b.backing_off(&member));
        // Alive news ends the backoff at once.
        b.backoff
            .insert(member, (now() + Duration::from_secs(30), 5));
        b.member_live(member);
        assert!(!b.backing_off(&member));
    }

    #[tokio::test(start_paused = true)]
    async fn queues_are_swept_and_dropped_on_any_failed_dial() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default()).unwrap();
        let p1 = Keypair::from_seed_for_tests(2).peer_id();
        let p2 = Keypair::from_seed_for_tests(3).peer_id();
        learn(&mut b, &[p1, p2]);
        b.send_datagram(p1, Bytes::from_static(b"x"));
        b.send_datagram(p2, Bytes::from_static(b"y"));
        // Another behaviour's dial of p2 fails: what waited for p2 goes.
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(p2),
            connection: ConnectionId::next(),
            error: &DialError::NoAddresses,
        });
        assert!(!b.queued.contains_key(&p2));
        // Our dial of p1 is refused (someone else dials it) and never connects: the queue is
        // kept for now, and swept once too old, without any flush.
        let conn = b.dialing[&p1];
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(p1),
            connection: conn,
            error: &DialError::ConditionFalse(PeerCondition::DisconnectedAndNotDialing),
        });
        assert!(b.queued.contains_key(&p1));
        tokio::time::advance(Duration::from_secs(3)).await;
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let dropped = b.io.datagrams_dropped;
        while b.poll(&mut cx).is_ready() {}
        // (The protocol period that ran may have queued fresh datagrams.)
        assert!(b
            .queued
            .values()
            .flatten()
            .all(|(at, _)| now().duration_since(*at) <= b.config.queued_datagram_ttl));
        assert!(b.io.datagrams_dropped > dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn datagrams_do_not_starve_timers() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default().with_rng_seed(1)).unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(Instant::from_std(b.core.poll_timeout().unwrap()) <= now());
        // Far more datagrams ready than one poll handles.
        for _ in 0..10_000 {
            b.readers
                .push(async { (ConnectionId::next(), Ok(Bytes::new())) }.boxed());
        }
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _ = b.poll(&mut cx);
        assert!(b.readers.len() > 5_000, "still busy with datagrams");
        assert!(
            Instant::from_std(b.core.poll_timeout().unwrap()) > now(),
            "the due protocol period ran"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_waiting_for_a_first_connection_is_not_a_failure() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut cfg = Config::default().with_rng_seed(3);
        cfg.swim.gossip_interval = None;
        cfg.swim.push_pull_interval = None;
        let mut b = Behaviour::new(local, [realm()], cfg).unwrap();
        let new = Keypair::from_seed_for_tests(2).peer_id();
        learn(&mut b, &[new]);
        let start = now();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let run = |b: &mut Behaviour, cx: &mut Context<'_>| while b.poll(cx).is_ready() {};
        // A protocol period without a connection coming up (the dial is pending): the first
        // probe of the new member is skipped, not failed.
        while b.stats(&realm()).unwrap().probes_unsent == 0 {
            tokio::time::advance(Duration::from_millis(100)).await;
            run(&mut b, &mut cx);
            assert!(now() < start + Duration::from_secs(5), "never probed");
        }
        let s = b.stats(&realm()).unwrap();
        assert_eq!((s.probes_unsent, s.probes_failed), (1, 0));
        assert_eq!(
            b.member(&realm(), &new).unwrap().state,
            crate::MemberState::Alive
        );
        // Only once: the next probe, still without a connection, fails as usual (so does
        // one of a member we were connected with and lost: it may have crashed).
        assert!(b.no_probe_grace.contains(&new));
        for _ in 0..25 {
            tokio::time::advance(Duration::from_millis(100)).await;
            run(&mut b, &mut cx);
        }
        let s = b.stats(&realm()).unwrap();
        assert!(s.probes_failed >= 1, "{s:?}");
        assert_eq!(
            b.member(&realm(), &new).unwrap().state,
            crate::MemberState::Suspect
        );
    }

    #[tokio::test]
    async fn live_members_are_tagged_and_untagged() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default()).unwrap();
        let p = Keypair::from_seed_for_tests(2).peer_id();
        learn(&mut b, &[p]);
        assert!(b.commands.iter().any(|c| matches!(c,
            ToSwarm::ConnManager(ConnManagerCommand::TagPeer { peer, tag, value })
                if *peer == p && tag == CONN_MANAGER_TAG && *value == 100)));
        b.commands.clear();
        let msg = crate::Message {
            realm: realm(),
            body: Body::Gossip(crate::wire::Gossip {
                updates: vec![crate::wire::Update {
                    peer: p,
                    incarnation: 0,
                    kind: crate::wire::UpdateKind::Left,
                }],
            }),
        };
        b.core.handle_message(now().into_std(), p, msg);
        b.drain();
        assert!(b.commands.iter().any(|c| matches!(c,
            ToSwarm::ConnManager(ConnManagerCommand::UntagPeer { peer, .. }) if *peer == p)));
    }

    #[tokio::test]
    async fn a_stale_push_pull_failure_does_not_end_a_newer_exchange() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let seed = Keypair::from_seed_for_tests(2).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default()).unwrap();
        let addr: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        b.join(&realm(), &[(seed, addr.clone())]).unwrap();
        let old = b.push_pulls_in_flight[&(realm(), seed)];
        // The core gives up on it (its timer) and a newer exchange starts.
        b.join(&realm(), &[(seed, addr)]).unwrap();
        let new = b.push_pulls_in_flight[&(realm(), seed)];
        assert_ne!(old, new);
        b.on_task(TaskOutput::Answer {
            peer: seed,
            realm: realm(),
            id: old,
            result: Err(PushPullError::Timeout),
        });
        assert_eq!(b.push_pulls_in_flight.get(&(realm(), seed)), Some(&new));
        assert!(!b
            .commands
            .iter()
            .any(|c| matches!(c, ToSwarm::GenerateEvent(Event::JoinFailed { .. }))));
    }

    #[tokio::test]
    async fn inbound_push_pull_bytes_are_budgeted() {
        let budget = ByteBudget::default();
        let mut a = Cursor::new(vec![3u8, 1, 2, 3]);
        let (bytes, held) = read_frame_budgeted(&mut a, 16, &budget, 5).await.unwrap();
        assert_eq!(bytes, vec![1, 2, 3]);
        assert_eq!(budget.used(), 3);
        let mut b = Cursor::new(vec![3u8, 1, 2, 3]);
        assert!(matches!(
            read_frame_budgeted(&mut b, 16, &budget, 5).await,
            Err(PushPullError::OverBudget)
        ));
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn loopback_is_announced_only_without_other_addresses() {
        let local = Keypair::from_seed_for_tests(1).peer_id();
        let mut b = Behaviour::new(local, [realm()], Config::default()).unwrap();
        let lo: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let lan: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let l = ListenerId::next();
        b.on_swarm_event(FromSwarm::NewListenAddr {
            listener: l,
            addr: &lo,
        });
        assert_eq!(
            b.local_member(&realm()).unwrap().addresses(),
            std::slice::from_ref(&lo)
        );
        b.on_swarm_event(FromSwarm::NewListenAddr {
            listener: l,
            addr: &lan,
        });
        assert_eq!(
            b.local_member(&realm()).unwrap().addresses(),
            std::slice::from_ref(&lan)
        );
    }
}
