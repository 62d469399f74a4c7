//! The behaviour's settings ([`Config`]), errors ([`Error`]) and events ([`Event`]).

use std::time::Duration;

use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{FrameError, Timeout};
use meshwire_swarm::StreamError;

use crate::discovery::DiscoveryConfig;
use crate::engine::{KadConfig, KadEvent, Mode};
use crate::protocol::{KadPeer, ProtocolError};
use crate::query::QueryId;

/// Settings of a [`Behaviour`](crate::Behaviour).
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
    /// The engine's settings: `k`, `α`, timeouts, mode, store limits, the message-size bound.
    pub kad: KadConfig,
    /// Inbound streams one peer may have open at once (32, rust-libp2p's per-connection bound).
    pub max_inbound_streams_per_peer: usize,
    /// Inbound streams of all peers together (512, half of [`Config::max_stream_tasks`], so
    /// our own requests keep room). At the limit a new stream takes the place of the oldest
    /// stream of the peer holding the most (an idle one first): many peers each holding
    /// their share with slow requests cannot lock out a peer with one request.
    pub max_inbound_streams: usize,
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
    /// Settings of the service-discovery helper ([`Behaviour::announce`](crate::Behaviour::announce),
    /// [`Behaviour::discover`](crate::Behaviour::discover)).
    pub discovery: DiscoveryConfig,
    /// Stream exchanges (our requests and the inbound streams being served) running at once
    /// (1,024). An inbound stream past it is reset and reported as [`Error::TasksFull`]; the
    /// engine's requests wait for room.
    pub max_stream_tasks: usize,
    /// Commands for the swarm (stream requests awaiting their stream included) queued at once
    /// (1,024). The engine's requests and events wait for room; an inbound failure or a tag
    /// that finds the queue full is dropped (and logged).
    pub max_queued_commands: usize,
}

impl Config {
    /// The defaults.
    pub fn new() -> Self {
        Config {
            kad: KadConfig::default(),
            max_inbound_streams_per_peer: 32,
            max_inbound_streams: 512,
            inbound_timeout: Duration::from_secs(10),
            max_address_cache_peers: 1024,
            conn_manager_tag: Some(("kad".to_owned(), 5)),
            discovery: DiscoveryConfig::default(),
            max_stream_tasks: 1024,
            max_queued_commands: 1024,
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

    /// Sets [`Config::max_inbound_streams`].
    pub fn with_max_inbound_streams(mut self, max: usize) -> Self {
        self.max_inbound_streams = max;
        self
    }

    /// Sets [`Config::max_stream_tasks`].
    pub fn with_max_stream_tasks(mut self, max: usize) -> Self {
        self.max_stream_tasks = max;
        self
    }

    /// Sets [`Config::max_queued_commands`].
    pub fn with_max_queued_commands(mut self, max: usize) -> Self {
        self.max_queued_commands = max;
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
    /// The swarm could not open the stream (dial failure, unsupported protocol, ...), or
    /// reading or writing it failed.
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
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
    #[error(transparent)]
    Timeout(#[from] Timeout),
    /// The peer already has [`Config::max_inbound_streams_per_peer`] inbound streams open.
    #[error("too many inbound streams from the peer (limit {limit})")]
    TooManyStreams {
        /// The limit.
        limit: usize,
    },
    /// The resource manager had no room for a message from the peer.
    #[error("resource manager: {0}")]
    Resource(#[from] meshwire_swarm::rcmgr::ResourceError),
    /// The behaviour already runs [`Config::max_stream_tasks`] stream exchanges.
    #[error("too many stream exchanges running (limit {limit})")]
    TasksFull {
        /// The limit.
        limit: usize,
    },
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => ProtocolError::MessageTooLarge { len, max }.into(),
            FrameError::InvalidPrefix => ProtocolError::InvalidLengthPrefix.into(),
            FrameError::Truncated => Error::UnexpectedEof,
            FrameError::Stream(e) => Error::Stream(e),
            FrameError::Timeout(t) => Error::Timeout(t),
            FrameError::Resource(r) => Error::Resource(r),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Stream(e.into())
    }
}

impl Error {
    /// Whether the remote does not speak `/ipfs/kad/1.0.0`.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Stream(e) if e.is_unsupported())
    }
}

/// What [`Behaviour`](crate::Behaviour) reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// What the engine reports, unchanged: finished queries (every origin: the application's,
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
    /// A service lookup started with [`Behaviour::discover`](crate::Behaviour::discover) finished (its
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
