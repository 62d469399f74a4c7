//! The behaviour's settings ([`Config`]) and errors ([`Error`]).

use std::time::Duration;

use meshwire_swarm::toolkit::{FrameError, Timeout};
use meshwire_swarm::StreamError;

use crate::discovery::DiscoveryConfig;
use crate::engine::{KadConfig, Mode};
use crate::protocol::{KadCodec, ProtocolError};
use crate::store::StoreConfig;

#[cfg(doc)]
use meshwire_swarm::FromSwarm;

/// Settings of a [`Behaviour`](crate::Behaviour): the one configuration type of the
/// behaviour, the engine's settings (`k`, `α`, timeouts, mode, record and provider stores, the
/// message bound) included as plain fields next to the behaviour's own (stream limits, the
/// connection-manager tag, discovery). Every field has a `with_*` builder; the defaults are
/// the engine's ([`KadConfig::default`]) and the behaviour's documented below.
///
/// ```
/// use std::time::Duration;
/// use meshwire_kad::{self as kad, Mode};
///
/// let config = kad::Config::new()
///     .with_alpha(5)
///     .with_query_timeout(Duration::from_secs(30))
///     .with_record_ttl(Duration::from_secs(3600))
///     .with_mode(Mode::Client)
///     .with_max_inbound_streams_per_peer(8)
///     .with_inbound_timeout(Duration::from_secs(5));
/// assert_eq!((config.k, config.alpha, config.mode), (20, 5, Mode::Client));
/// assert_eq!(config.store.record_ttl, Duration::from_secs(3600));
/// assert_eq!(config.conn_manager_tag, Some(("kad".to_owned(), 5)));
/// // Or with struct update syntax:
/// let config = kad::Config { k: 10, caching: false, ..kad::Config::default() };
/// assert_eq!(config.alpha, 3);
/// ```
///
/// The sans-IO engine alone is configured with [`KadConfig`]; [`Config::engine_config`] is
/// the one this configuration gives it.
#[derive(Clone, Debug)]
pub struct Config {
    // ----- the engine's settings (see `KadConfig`) -----
    /// Bucket size and replication factor `k` (20).
    pub k: usize,
    /// Lookup parallelism `α` (3).
    pub alpha: usize,
    /// Timeout of one request (10 s).
    pub request_timeout: Duration,
    /// Timeout of a whole query (60 s).
    pub query_timeout: Duration,
    /// Initial mode ([`Mode::Server`]); [`Behaviour::set_mode`](crate::Behaviour::set_mode)
    /// switches later.
    pub mode: Mode,
    /// Interval of the periodic bootstrap, which starts with the first
    /// [`Behaviour::bootstrap`](crate::Behaviour::bootstrap) (5 min); `None` disables it.
    pub bootstrap_interval: Option<Duration>,
    /// Consecutive failed requests after which a peer is dropped from the routing table (3).
    pub max_failures: u32,
    /// How many times a lookup asks a peer again after its request timed out, while the peer
    /// still ranks among the `k` closest candidates (0, as libp2p).
    pub lookup_retries: u32,
    /// Addresses kept per peer, in the routing table and in the behaviour's address cache (8).
    pub max_addrs_per_peer: usize,
    /// After a successful GET_VALUE, store the record at the closest peer that answered
    /// without it (true).
    pub caching: bool,
    /// Largest message accepted or sent, length prefix excluded (16 KiB).
    pub max_message_size: usize,
    /// Record and provider store limits, TTLs and republishing intervals
    /// ([`StoreConfig::default`]: 1,024 records of at most 65 KiB kept 36 h, providers kept
    /// 48 h, ...).
    pub store: StoreConfig,
    // ----- the behaviour's own settings -----
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

/// `with_*` builders setting one field each.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

impl Config {
    /// The defaults: the engine's are [`KadConfig::default`]'s, defined there once.
    pub fn new() -> Self {
        let KadConfig {
            k,
            alpha,
            request_timeout,
            query_timeout,
            mode,
            bootstrap_interval,
            max_failures,
            lookup_retries,
            max_addrs_per_peer,
            caching,
            max_message_size,
            store,
        } = KadConfig::default();
        Config {
            k,
            alpha,
            request_timeout,
            query_timeout,
            mode,
            bootstrap_interval,
            max_failures,
            lookup_retries,
            max_addrs_per_peer,
            caching,
            max_message_size,
            store,
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

    /// The engine's configuration made of this one's engine settings (what
    /// [`Behaviour::new`](crate::Behaviour::new) gives its [`KadEngine`](crate::KadEngine)).
    pub fn engine_config(&self) -> KadConfig {
        KadConfig {
            k: self.k,
            alpha: self.alpha,
            request_timeout: self.request_timeout,
            query_timeout: self.query_timeout,
            mode: self.mode,
            bootstrap_interval: self.bootstrap_interval,
            max_failures: self.max_failures,
            lookup_retries: self.lookup_retries,
            max_addrs_per_peer: self.max_addrs_per_peer,
            caching: self.caching,
            max_message_size: self.max_message_size,
            store: self.store.clone(),
        }
    }

    /// This configuration with the engine settings replaced by `engine`'s. (The
    /// destructuring is exhaustive: a field added to [`KadConfig`] fails to compile here and
    /// in [`Config::new`] until [`Config`] has it too.)
    pub(crate) fn with_engine_config(self, engine: KadConfig) -> Self {
        let KadConfig {
            k,
            alpha,
            request_timeout,
            query_timeout,
            mode,
            bootstrap_interval,
            max_failures,
            lookup_retries,
            max_addrs_per_peer,
            caching,
            max_message_size,
            store,
        } = engine;
        Config {
            k,
            alpha,
            request_timeout,
            query_timeout,
            mode,
            bootstrap_interval,
            max_failures,
            lookup_retries,
            max_addrs_per_peer,
            caching,
            max_message_size,
            store,
            ..self
        }
    }

    /// The codec the behaviour frames messages with ([`Config::max_message_size`]).
    pub(crate) fn codec(&self) -> KadCodec {
        KadCodec::new(self.max_message_size)
    }

    /// Sets [`StoreConfig::record_ttl`] in [`Config::store`]: the longest a record is kept
    /// (36 h; a record's own shorter TTL wins).
    pub fn with_record_ttl(mut self, ttl: Duration) -> Self {
        self.store.record_ttl = ttl;
        self
    }

    /// Sets [`StoreConfig::provider_ttl`] in [`Config::store`]: how long a provider
    /// announcement is kept (48 h).
    pub fn with_provider_ttl(mut self, ttl: Duration) -> Self {
        self.store.provider_ttl = ttl;
        self
    }

    setters! {
        /// Sets [`Config::k`].
        with_k: k: usize;
        /// Sets [`Config::alpha`].
        with_alpha: alpha: usize;
        /// Sets [`Config::request_timeout`].
        with_request_timeout: request_timeout: Duration;
        /// Sets [`Config::query_timeout`].
        with_query_timeout: query_timeout: Duration;
        /// Sets the initial mode ([`Config::mode`]).
        with_mode: mode: Mode;
        /// Sets [`Config::bootstrap_interval`].
        with_bootstrap_interval: bootstrap_interval: Option<Duration>;
        /// Sets [`Config::max_failures`].
        with_max_failures: max_failures: u32;
        /// Sets [`Config::lookup_retries`].
        with_lookup_retries: lookup_retries: u32;
        /// Sets [`Config::max_addrs_per_peer`].
        with_max_addrs_per_peer: max_addrs_per_peer: usize;
        /// Sets [`Config::caching`].
        with_caching: caching: bool;
        /// Sets [`Config::max_message_size`].
        with_max_message_size: max_message_size: usize;
        /// Sets [`Config::store`].
        with_store: store: StoreConfig;
        /// Sets [`Config::max_inbound_streams_per_peer`].
        with_max_inbound_streams_per_peer: max_inbound_streams_per_peer: usize;
        /// Sets [`Config::max_inbound_streams`].
        with_max_inbound_streams: max_inbound_streams: usize;
        /// Sets [`Config::inbound_timeout`].
        with_inbound_timeout: inbound_timeout: Duration;
        /// Sets [`Config::max_address_cache_peers`].
        with_max_address_cache_peers: max_address_cache_peers: usize;
        /// Sets [`Config::conn_manager_tag`].
        with_conn_manager_tag: conn_manager_tag: Option<(String, i32)>;
        /// Sets [`Config::discovery`].
        with_discovery: discovery: DiscoveryConfig;
        /// Sets [`Config::max_stream_tasks`].
        with_max_stream_tasks: max_stream_tasks: usize;
        /// Sets [`Config::max_queued_commands`].
        with_max_queued_commands: max_queued_commands: usize;
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
