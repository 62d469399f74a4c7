//! [`Config`] (time and concurrency limits) and [`ProtocolSupport`].

use std::time::Duration;

/// Which directions of a protocol a behaviour serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolSupport {
    /// Only answers requests (advertised and accepted, never proposed).
    Inbound,
    /// Only sends requests (proposed, never accepted).
    Outbound,
    /// Both.
    Full,
}

impl ProtocolSupport {
    /// Whether requests from remotes are accepted.
    pub fn inbound(&self) -> bool {
        matches!(self, ProtocolSupport::Inbound | ProtocolSupport::Full)
    }

    /// Whether our requests propose it.
    pub fn outbound(&self) -> bool {
        matches!(self, ProtocolSupport::Outbound | ProtocolSupport::Full)
    }
}

/// The behaviour's limits. Every queue and set it keeps is bounded by one of them.
///
/// | limit | default | past it |
/// | --- | --- | --- |
/// | [`request_timeout`](Config::with_request_timeout) | 10 s (rust-libp2p's) | [`OutboundFailure::Timeout`](crate::OutboundFailure::Timeout) / [`InboundFailure::Timeout`](crate::InboundFailure::Timeout), the stream reset |
/// | [`max_inbound_streams`](Config::with_max_inbound_streams) | 128 | the remote's stream is reset unread |
/// | [`max_inbound_streams_per_peer`](Config::with_max_inbound_streams_per_peer) | 32 | the remote's stream is reset unread |
/// | [`max_outbound_in_flight`](Config::with_max_outbound_in_flight) | 128 | [`OutboundFailure::QueueFull`](crate::OutboundFailure::QueueFull) |
///
/// The request timeout runs, for a request of ours, from the moment its stream is open
/// (dialing and negotiation have the swarm's own limits) to the full response; for a
/// request of a remote, from its stream's arrival through reading it, the application's
/// answer, and writing the response — as in rust-libp2p.
///
/// An inbound exchange holds at most one request in memory (bounded by the codec's request
/// limit), so the inbound limits bound what remotes can make the node buffer:
/// `max_inbound_streams` × the request limit (128 MiB with the JSON/CBOR defaults of 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    request_timeout: Duration,
    max_inbound_streams: usize,
    max_inbound_streams_per_peer: usize,
    max_outbound_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(10),
            max_inbound_streams: 128,
            max_inbound_streams_per_peer: 32,
            max_outbound_in_flight: 128,
        }
    }
}

impl Config {
    /// Time for one exchange (default 10 s; see the [type docs](Config) for when it runs).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Requests of remotes handled at once, all peers together (default 128).
    pub fn with_max_inbound_streams(mut self, limit: usize) -> Self {
        self.max_inbound_streams = limit;
        self
    }

    /// Requests of one remote handled at once (default 32).
    pub fn with_max_inbound_streams_per_peer(mut self, limit: usize) -> Self {
        self.max_inbound_streams_per_peer = limit;
        self
    }

    /// Our requests under way at once, from `send_request` to their event (default 128).
    pub fn with_max_outbound_in_flight(mut self, limit: usize) -> Self {
        self.max_outbound_in_flight = limit;
        self
    }

    /// Time for one exchange.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Requests of remotes handled at once.
    pub fn max_inbound_streams(&self) -> usize {
        self.max_inbound_streams
    }

    /// Requests of one remote handled at once.
    pub fn max_inbound_streams_per_peer(&self) -> usize {
        self.max_inbound_streams_per_peer
    }

    /// Our requests under way at once.
    pub fn max_outbound_in_flight(&self) -> usize {
        self.max_outbound_in_flight
    }
}
