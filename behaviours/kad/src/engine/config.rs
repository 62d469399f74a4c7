//! [`KadConfig`] and [`Mode`]: the engine's settings.

use std::time::Duration;

use crate::kbucket::{DEFAULT_K, DEFAULT_MAX_ADDRS_PER_PEER};
use crate::protocol::{KadCodec, DEFAULT_MAX_MESSAGE_SIZE};
use crate::store::StoreConfig;

/// Longest provider key served (as go-libp2p: keys are multihashes, at most 80 bytes).
pub const MAX_PROVIDER_KEY_LEN: usize = 80;

/// Whether the node serves the DHT.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    /// Uses the DHT without serving it: answers no request and must not advertise
    /// `/ipfs/kad/1.0.0` (so no peer adds it to its routing table). For nodes that are not
    /// publicly reachable.
    Client,
    /// Serves the DHT: answers requests and advertises the protocol.
    #[default]
    Server,
}

/// Configuration of a [`KadEngine`](crate::KadEngine).
#[derive(Clone, Debug)]
pub struct KadConfig {
    /// Bucket size and replication factor `k` (20).
    pub k: usize,
    /// Lookup parallelism `α` (3).
    pub alpha: usize,
    /// Timeout of one request (10 s).
    pub request_timeout: Duration,
    /// Timeout of a whole query (60 s).
    pub query_timeout: Duration,
    /// Initial mode (server).
    pub mode: Mode,
    /// Interval of the periodic bootstrap, which starts with the first
    /// [`KadEngine::bootstrap`](crate::KadEngine::bootstrap) (5 min); `None` disables it.
    pub bootstrap_interval: Option<Duration>,
    /// Consecutive failed requests after which a peer is dropped from the routing table (3).
    pub max_failures: u32,
    /// How many times a lookup asks a peer again after its request timed out, while the peer
    /// still ranks among the `k` closest candidates (0, as libp2p). Over QUIC a timeout
    /// usually means a dead peer, and each retry of a dead peer delays the lookup by
    /// `request_timeout`; on lossy paths retries keep live peers in the result.
    pub lookup_retries: u32,
    /// Addresses kept per peer (8).
    pub max_addrs_per_peer: usize,
    /// After a successful GET_VALUE, store the record at the closest peer that answered
    /// without it (true).
    pub caching: bool,
    /// Largest message accepted or sent, prefix excluded (16 KiB); used by the driver's codec
    /// ([`KadConfig::codec`]).
    pub max_message_size: usize,
    /// Record and provider store limits and intervals.
    pub store: StoreConfig,
}

impl Default for KadConfig {
    fn default() -> Self {
        KadConfig {
            k: DEFAULT_K,
            alpha: 3,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            mode: Mode::Server,
            bootstrap_interval: Some(Duration::from_secs(300)),
            max_failures: 3,
            lookup_retries: 0,
            max_addrs_per_peer: DEFAULT_MAX_ADDRS_PER_PEER,
            caching: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            store: StoreConfig::default(),
        }
    }
}

impl KadConfig {
    /// The codec the driver should frame messages with.
    pub fn codec(&self) -> KadCodec {
        KadCodec::new(self.max_message_size)
    }
}
