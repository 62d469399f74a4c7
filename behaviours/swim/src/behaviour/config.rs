//! The settings, errors and IO counters of the swarm [`Behaviour`](super::Behaviour).

use std::time::Duration;

use bytes::Bytes;
use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use thiserror::Error;

use crate::engine::{ConfigError, SetMetaError, SwimConfig, UnknownRealm};
use crate::member::MetaError;

/// The datagram size limit the behaviour gives the engine by default (its
/// [`SwimConfig::mtu`]), in bytes. A QUIC connection can always carry a
/// datagram of about 1,150 bytes (1,200-byte packets, minus headers and a connection id of up
/// to 20 bytes) before path MTU discovery raises the limit, so 1,100 always fits.
pub const DEFAULT_DATAGRAM_MTU: usize = 1100;

/// Seeds remembered per realm for rejoining.
pub const MAX_SEEDS: usize = 64;

/// The connection-manager tag of live members' peers.
pub const CONN_MANAGER_TAG: &str = "swim";

/// Settings of a [`Behaviour`](super::Behaviour): the engine's [`SwimConfig`] plus how it is driven.
///
/// ```
/// use std::time::Duration;
/// use meshwire_swim::Config;
///
/// let mut config = Config::default().with_data(&b"role=db"[..]);
/// config.swim.probe_interval = Duration::from_millis(500);
/// config.swim.probe_timeout = Duration::from_millis(200);
/// assert_eq!(config.swim.mtu, meshwire_swim::behaviour::DEFAULT_DATAGRAM_MTU);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The protocol's settings. The default is the engine's default with
    /// [`mtu`](crate::SwimConfig::mtu) = [`DEFAULT_DATAGRAM_MTU`]. A datagram larger than what a
    /// connection can carry at the moment is dropped (and counted), so keep the MTU at or
    /// below [`DEFAULT_DATAGRAM_MTU`] unless every path is known to carry more.
    pub swim: SwimConfig,
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
    /// A connection that carried a SWIM message (a datagram, or a frame of a fallback stream)
    /// from the peer within this time is kept
    /// alive even if the peer is not a live member here (yet): it is in use by the other
    /// side, e.g. by a member that learned of us before we learned of it (default 10 s).
    pub traffic_keep_alive: Duration,
    /// Seed of the engine's random number generator; `None` (the default) draws one. A fixed
    /// seed only makes the engine's own choices reproducible, not the network's timing.
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
    /// Fallback streams of ours ([`STREAM_PROTOCOL`](super::STREAM_PROTOCOL), one per peer
    /// none of whose connections carries datagrams, e.g. relayed ones) open or being opened
    /// at once (default 256). A message for one more such peer is dropped (and counted).
    pub max_fallback_streams: usize,
    /// Remotes' fallback streams read at once (default 256); more are reset.
    pub max_inbound_fallback_streams: usize,
    /// Remotes' fallback streams read at once from one peer (default 2: a peer's new stream
    /// may arrive before its old one is seen to end); more are reset.
    pub max_inbound_fallback_streams_per_peer: usize,
    /// Messages waiting per peer to be written on its fallback stream (default 16, at least
    /// 1); a message for a full queue is dropped (and counted).
    pub max_queued_fallback_messages_per_peer: usize,
    /// A fallback stream of ours with nothing to write for this long is closed (default
    /// 30 s); the next message opens a new one. A remote's fallback stream that stays silent
    /// for twice this long (at least this plus the write timeout) is dropped.
    pub fallback_stream_idle_timeout: Duration,
    /// Time limit of writing one message on a fallback stream (default 2 s); past it the
    /// stream is reset and the messages queued on it are dropped (and counted).
    pub fallback_stream_write_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            swim: SwimConfig {
                mtu: DEFAULT_DATAGRAM_MTU,
                ..SwimConfig::default()
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
            max_fallback_streams: 256,
            max_inbound_fallback_streams: 256,
            max_inbound_fallback_streams_per_peer: 2,
            max_queued_fallback_messages_per_peer: 16,
            fallback_stream_idle_timeout: Duration::from_secs(30),
            fallback_stream_write_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Uses `swim` as the protocol's settings.
    pub fn with_swim(mut self, swim: SwimConfig) -> Self {
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

/// Why a [`Behaviour`](super::Behaviour) could not be created or a command was refused.
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
    /// The node has left ([`Behaviour::leave`](super::Behaviour::leave)); it takes no more commands.
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

/// Counters of a [`Behaviour`](super::Behaviour)'s IO (the protocol's own counters are in
/// [`Behaviour::stats`](super::Behaviour::stats)`(realm)` and [`Behaviour::engine`](super::Behaviour::engine)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams handed to QUIC.
    pub datagrams_sent: u64,
    /// Datagrams read from QUIC.
    pub datagrams_received: u64,
    /// Datagrams and fallback-stream messages that failed to decode, or were larger than
    /// the engine's datagram limit (dropped).
    pub datagrams_bad: u64,
    /// Datagrams queued because the peer was not connected.
    pub datagrams_queued: u64,
    /// Queued datagrams dropped: queue full, too old, or the dial failed.
    pub datagrams_dropped: u64,
    /// Datagrams larger than the connection could carry, and messages for a fallback stream
    /// larger than [`SwimConfig::mtu`] (dropped).
    pub datagrams_too_large: u64,
    /// Dials started to reach a member for datagrams.
    pub dials: u64,
    /// Of those, dials of newly learned members ahead of their first probe.
    pub warm_dials: u64,
    /// Dials not started because the member has no confirmed address (none in its signed
    /// record, not a seed): it counts as unreachable.
    pub dials_without_address: u64,
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
    /// Commands for the swarm (dials, connection-manager tags) dropped because the
    /// behaviour's command queue was full (the swarm was not polling it).
    pub commands_dropped: u64,
    /// Fallback streams we asked for: a message for a peer none of whose connections
    /// carries datagrams, with no fallback stream to it open.
    pub stream_fallbacks: u64,
    /// Remotes' fallback streams accepted.
    pub stream_fallbacks_inbound: u64,
    /// Remotes' fallback streams reset: over the limits, or after leaving.
    pub stream_fallbacks_refused: u64,
    /// Fallback streams (ours or remotes') that failed: not opened, a write that failed or
    /// timed out, a remote's invalid or oversized frame, a silent remote stream.
    pub stream_fallbacks_failed: u64,
    /// Messages queued on a fallback stream (written in order unless the stream fails).
    pub stream_messages_sent: u64,
    /// Messages read from remotes' fallback streams.
    pub stream_messages_received: u64,
    /// Messages for a fallback stream dropped: its queue was full, the stream limit was
    /// reached, or the stream failed with them queued.
    pub stream_messages_dropped: u64,
}
