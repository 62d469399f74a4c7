//! [`SwarmConfig`]: the settings and limits of a [`Swarm`](crate::Swarm).

use std::time::Duration;

use meshwire_rcmgr::Limits;

/// Settings and limits of a [`Swarm`](crate::Swarm).
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Established connections in all (default 10,000).
    pub max_established_total: usize,
    /// Established connections to one peer (default 4).
    pub max_established_per_peer: usize,
    /// Established inbound connections (default 10,000).
    pub max_established_incoming: usize,
    /// Established outbound connections (default 10,000).
    pub max_established_outgoing: usize,
    /// Inbound handshakes in progress (default 256).
    pub max_pending_incoming: usize,
    /// Dials in progress (default 256).
    pub max_pending_outgoing: usize,
    /// Inbound streams open or negotiating on one connection; more are reset (default 256).
    pub max_inbound_streams_per_connection: usize,
    /// New inbound streams one connection may open per second (a token bucket; default
    /// 5,000 a second with a burst of 1,000; `None`: no limit). Past it the swarm stops
    /// accepting that connection's streams for a while: they wait in the transport, which
    /// gives the remote no new stream credit meanwhile, so a peer churning streams is slowed
    /// at its own end. An honest peer's request-response traffic stays far below the
    /// default; raise it for bulk RPC over one connection or benchmarks.
    pub inbound_stream_rate: Option<StreamRate>,
    /// New inbound streams the whole node accepts per second, all connections together (a
    /// token bucket every connection draws from; default 10,000 a second with a burst of
    /// 2,000; `None`: no limit). Many connections churning streams at once are slowed the
    /// same way as one; the default is about what a debug build's swarm negotiates on one
    /// core, a fraction of a release build's — raise it for nodes serving bulk RPC.
    pub inbound_stream_rate_total: Option<StreamRate>,
    /// Stream requests waiting for a dial to finish, in all (default 1,024).
    pub max_pending_stream_requests: usize,
    /// Stream requests waiting for a dial of one peer (default 64), so one unreachable
    /// peer cannot take every slot.
    pub max_pending_stream_requests_per_peer: usize,
    /// Time for one dial, all addresses together (default 10 s).
    pub dial_timeout: Duration,
    /// Addresses of one dial tried at once (default 8).
    pub dial_concurrency: usize,
    /// Time to open and negotiate one stream (default 10 s).
    pub negotiation_timeout: Duration,
    /// Inbound streams that wait, per protocol registered with
    /// [`StreamControl::accept`](crate::StreamControl::accept), to be taken from its
    /// [`IncomingStreams`](crate::IncomingStreams); past that a new one is reset (default 32).
    pub incoming_stream_buffer: usize,
    /// How long a connection stays open with nothing keeping it alive (see the idle rule in
    /// the crate docs); `None` keeps idle connections (default 30 s).
    pub idle_connection_timeout: Option<Duration>,
    /// Addresses remembered per peer in the swarm's address book (default 8).
    pub max_addresses_per_peer: usize,
    /// Peers remembered in the address book; the oldest is forgotten first (default 4,096).
    pub max_address_book_peers: usize,
    /// The resource manager's limits: connections, streams and memory per scope (system,
    /// transient, peer, protocol, ...). Default: [`Limits::from_machine`], derived from the
    /// machine's memory; [`Limits::unlimited`] only counts. Each swarm has its own manager
    /// ([`Swarm::resource_manager`](crate::Swarm::resource_manager)).
    pub resource_limits: Limits,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_established_total: 10_000,
            max_established_per_peer: 4,
            max_established_incoming: 10_000,
            max_established_outgoing: 10_000,
            max_pending_incoming: 256,
            max_pending_outgoing: 256,
            max_inbound_streams_per_connection: 256,
            inbound_stream_rate: Some(StreamRate {
                per_second: 5_000,
                burst: 1_000,
            }),
            inbound_stream_rate_total: Some(StreamRate {
                per_second: 10_000,
                burst: 2_000,
            }),
            max_pending_stream_requests: 1024,
            max_pending_stream_requests_per_peer: 64,
            dial_timeout: Duration::from_secs(10),
            dial_concurrency: 8,
            negotiation_timeout: Duration::from_secs(10),
            incoming_stream_buffer: 32,
            idle_connection_timeout: Some(Duration::from_secs(30)),
            max_addresses_per_peer: 8,
            max_address_book_peers: 4096,
            resource_limits: Limits::from_machine(),
        }
    }
}

/// A rate of new streams: a token bucket refilled with `per_second` tokens a second, holding
/// at most `burst` (see [`SwarmConfig::inbound_stream_rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRate {
    /// Streams a second, sustained (at least 1).
    pub per_second: u32,
    /// Streams let through at once after a quiet spell (at least 1).
    pub burst: u32,
}
