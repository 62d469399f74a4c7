//! [`Config`]: the settings and limits of the identify [`Behaviour`](crate::Behaviour).

use std::time::Duration;

use meshwire_core::PublicKey;

use crate::protocol::{
    Limits, DEFAULT_MAX_LISTEN_ADDRS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PROTOCOLS,
};

/// The protocol version sent by default (the one the spec names).
pub const DEFAULT_PROTOCOL_VERSION: &str = "ipfs/0.1.0";

/// Inbound identify and push streams handled at once on one connection; more are reset.
pub const MAX_INBOUND_STREAMS_PER_CONNECTION: usize = 4;

/// Addresses of a peer's cached info that [`Behaviour`](crate::Behaviour) adds to a dial of
/// that peer.
pub const MAX_DIAL_ADDRESSES: usize = 8;

/// Confirmed external addresses remembered for advertising; more are ignored.
pub const MAX_EXTERNAL_ADDRESSES: usize = 32;

/// Default of [`Config::max_exchanges`].
pub const DEFAULT_MAX_EXCHANGES: usize = 512;

/// Default of [`Config::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 8192;

/// Settings of a [`Behaviour`](crate::Behaviour).
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
/// assert_eq!(config.max_listen_addrs, 64);
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
    /// Time for one stream exchange, after the stream is open (default 10 s); past it the
    /// stream is reset and the exchange fails with [`Error::Timeout`](crate::Error::Timeout).
    pub timeout: Duration,
    /// Peers whose latest info is kept; the least recently updated is dropped first
    /// (default 100).
    pub cache_size: usize,
    /// Distinct listen addresses kept of one peer's message; more are ignored (default
    /// [`DEFAULT_MAX_LISTEN_ADDRS`] = 64, go-libp2p's limit).
    pub max_listen_addrs: usize,
    /// Distinct protocols kept of one peer's message; more are ignored (default
    /// [`DEFAULT_MAX_PROTOCOLS`] = 128).
    pub max_protocols: usize,
    /// Pushes read from one connection: at most one per interval (default 1 s). A push
    /// arriving sooner waits, unread, for its turn (it counts among the connection's
    /// [`MAX_INBOUND_STREAMS_PER_CONNECTION`] inbound streams; past those it is reset), so
    /// every push still arrives, in order, and a peer pushing in a loop costs one message per
    /// interval instead of a core.
    pub min_push_interval: Duration,
    /// Stream exchanges (our requests and pushes, the remotes' requests and pushes) running
    /// at once over all connections (default [`DEFAULT_MAX_EXCHANGES`] = 512). At the limit an
    /// inbound stream is reset, a push of ours is dropped and an identify request of ours is
    /// retried a second later.
    pub max_exchanges: usize,
    /// Commands for the swarm queued at once, stream requests awaiting their stream
    /// included (default [`DEFAULT_MAX_QUEUED`] = 8192). At the limit events and address
    /// reports are dropped (logged) and identify requests retried a second later.
    pub max_queued: usize,
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
            max_listen_addrs: DEFAULT_MAX_LISTEN_ADDRS,
            max_protocols: DEFAULT_MAX_PROTOCOLS,
            min_push_interval: Duration::from_secs(1),
            max_exchanges: DEFAULT_MAX_EXCHANGES,
            max_queued: DEFAULT_MAX_QUEUED,
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

    /// Sets [`Config::max_listen_addrs`].
    pub fn with_max_listen_addrs(mut self, max: usize) -> Self {
        self.max_listen_addrs = max;
        self
    }

    /// Sets [`Config::min_push_interval`].
    pub fn with_min_push_interval(mut self, interval: Duration) -> Self {
        self.min_push_interval = interval;
        self
    }

    /// Sets [`Config::max_protocols`].
    pub fn with_max_protocols(mut self, max: usize) -> Self {
        self.max_protocols = max;
        self
    }

    /// Sets [`Config::max_exchanges`].
    pub fn with_max_exchanges(mut self, max: usize) -> Self {
        self.max_exchanges = max;
        self
    }

    /// Sets [`Config::max_queued`].
    pub fn with_max_queued(mut self, max: usize) -> Self {
        self.max_queued = max;
        self
    }

    /// What is kept of a peer's message ([`Config::max_listen_addrs`],
    /// [`Config::max_protocols`]).
    pub fn limits(&self) -> Limits {
        Limits {
            max_listen_addrs: self.max_listen_addrs,
            max_protocols: self.max_protocols,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

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
        assert_eq!(c.cache_size, 100);
        assert_eq!(c.limits(), Limits::default());
        assert_eq!((c.max_listen_addrs, c.max_protocols), (64, 128));
        assert_eq!((c.max_exchanges, c.max_queued), (512, 8192));
    }
}
