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
