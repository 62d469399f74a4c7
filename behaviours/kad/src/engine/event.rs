//! What the engine hands out: [`KadTransmit`] (requests to send) and [`KadEvent`]s, with the
//! [`RequestId`] that ties a transmit to its outcome.

use std::fmt;

use meshwire_core::PeerId;
use multiaddr::Multiaddr;

use super::config::Mode;
use crate::protocol::{KadRequest, RecordKey};
use crate::query::{QueryId, QueryOrigin, QueryProgress, QueryResult, QueryStats};
use crate::store::StoreError;

/// Identifies one outbound request of one engine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RequestId(pub(super) u64);

impl RequestId {
    /// The number behind the id.
    pub fn raw(self) -> u64 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        RequestId(n)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// A request to send, from [`KadEngine::poll_transmit`](crate::KadEngine::poll_transmit):
/// open a `/ipfs/kad/1.0.0` stream to `peer` (dialing `addrs` if not connected), send
/// `request`, and report the response with
/// [`KadEngine::handle_response`](crate::KadEngine::handle_response) or the failure with
/// [`KadEngine::handle_request_failed`](crate::KadEngine::handle_request_failed) — unless
/// [`KadRequest::expects_response`] is `false`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KadTransmit {
    /// Identifies the request in the report.
    pub request_id: RequestId,
    /// The peer to ask.
    pub peer: PeerId,
    /// Its known addresses (may be empty if only the driver knows how to reach it).
    pub addrs: Vec<Multiaddr>,
    /// The request.
    pub request: KadRequest,
}

/// Why a peer left the routing table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemovalReason {
    /// It failed [`KadConfig::max_failures`](crate::KadConfig::max_failures) requests in a row.
    Unresponsive,
    /// Removed through [`KadEngine::remove_peer`](crate::KadEngine::remove_peer).
    Requested,
}

/// An inbound request the engine handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundRequest {
    /// A PING.
    Ping,
    /// A FIND_NODE; `closer_peers` were returned (after trimming the response to the message
    /// bound).
    FindNode {
        /// Peers returned.
        closer_peers: usize,
    },
    /// A GET_VALUE for `key`.
    GetValue {
        /// The key.
        key: RecordKey,
        /// Whether the record was returned.
        found: bool,
    },
    /// A PUT_VALUE of `key`, stored or refused.
    PutValue {
        /// The key.
        key: RecordKey,
        /// The outcome of storing it.
        result: Result<(), StoreError>,
    },
    /// A GET_PROVIDERS for `key`.
    GetProviders {
        /// The key.
        key: RecordKey,
        /// Providers returned.
        providers: usize,
    },
    /// An ADD_PROVIDER for `key`, stored or refused.
    AddProvider {
        /// The key.
        key: RecordKey,
        /// The outcome (a provider that is not the sender is ignored: `Ok(false)`).
        result: Result<bool, StoreError>,
    },
}

/// Events of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KadEvent {
    /// A running query made progress.
    QueryProgress {
        /// The query.
        id: QueryId,
        /// What happened.
        progress: QueryProgress,
    },
    /// A query finished.
    QueryFinished {
        /// The query.
        id: QueryId,
        /// Who started it.
        origin: QueryOrigin,
        /// Its outcome.
        result: QueryResult,
        /// Its statistics.
        stats: QueryStats,
    },
    /// A peer entered the routing table, or a peer in it got a new address. The swarm may tag
    /// it in the connection manager.
    RoutingUpdated {
        /// The peer.
        peer: PeerId,
        /// Its addresses now.
        addresses: Vec<Multiaddr>,
        /// Its bucket.
        bucket: usize,
        /// Whether it just entered the table.
        is_new_peer: bool,
        /// A peer evicted to make room for it (after failing the liveness ping).
        evicted: Option<PeerId>,
    },
    /// A peer left the routing table (the swarm may untag it).
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Its bucket.
        bucket: usize,
        /// Why.
        reason: RemovalReason,
    },
    /// An inbound request was handled (records and providers stored are reported here).
    InboundRequest {
        /// The sender.
        from: PeerId,
        /// What it asked and what the engine did.
        request: InboundRequest,
    },
    /// The mode changed: the swarm should start or stop advertising `/ipfs/kad/1.0.0`.
    ModeChanged {
        /// The new mode.
        mode: Mode,
    },
}
