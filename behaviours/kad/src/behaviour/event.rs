//! [`Event`]: what the behaviour reports — the engine's events, flattened, and its own.

use meshwire_core::{ConnectionId, PeerId};
use multiaddr::Multiaddr;

use super::config::Error;
use crate::engine::{InboundRequest, KadEvent, Mode, RemovalReason};
use crate::protocol::KadPeer;
use crate::query::{QueryId, QueryOrigin, QueryProgress, QueryResult, QueryStats};

#[cfg(doc)]
use crate::engine::KadEngine;

/// What [`Behaviour`](crate::Behaviour) reports: every event of its [`KadEngine`] (the
/// variants of [`KadEvent`], field for field) and the behaviour's own
/// ([`Event::InboundFailure`], [`Event::ServiceFound`]), in one enum so that an application
/// matches any of them in one pattern under its own event:
///
/// ```
/// use meshwire_kad::{self as kad, QueryOrigin, QueryResult};
///
/// // With `#[derive(NetworkBehaviour)] struct App { kad: kad::Behaviour, .. }` this is the
/// // payload of `SwarmEvent::Behaviour(AppEvent::Kad(..))`.
/// fn on_kad(event: kad::Event) {
///     match event {
///         kad::Event::QueryFinished {
///             origin: QueryOrigin::User,
///             result: QueryResult::GetValue(Ok(found)),
///             ..
///         } => println!("{} copies", found.records.len()),
///         kad::Event::RoutingUpdated { peer, is_new_peer: true, .. } => println!("new {peer}"),
///         kad::Event::InboundFailure { peer, error, .. } => println!("{peer}: {error}"),
///         _ => {}
///     }
/// }
/// # on_kad(kad::Event::ModeChanged { mode: kad::Mode::Client });
/// ```
///
/// Applications reach these types as `meshwire::kad::Event`, `meshwire::kad::QueryResult`,
/// ... through the `meshwire` facade (feature `kad`). The sans-IO engine keeps its own
/// [`KadEvent`] (for engine and simulator users); `Event::from(KadEvent)` converts.
#[derive(Debug, Clone)]
pub enum Event {
    /// A running query made progress (as [`KadEvent::QueryProgress`]).
    QueryProgress {
        /// The query.
        id: QueryId,
        /// What happened.
        progress: QueryProgress,
    },
    /// A query finished, whoever started it: the application ([`QueryOrigin::User`]), the
    /// periodic bootstrap, republishing (as [`KadEvent::QueryFinished`]).
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
    /// A peer entered the routing table, or a peer in it got a new address (as
    /// [`KadEvent::RoutingUpdated`]).
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
    /// A peer left the routing table (as [`KadEvent::PeerRemoved`]).
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Its bucket.
        bucket: usize,
        /// Why.
        reason: RemovalReason,
    },
    /// An inbound request was served; records and providers stored are reported here (as
    /// [`KadEvent::InboundRequest`]).
    InboundRequest {
        /// The sender.
        from: PeerId,
        /// What it asked and what the engine did.
        request: InboundRequest,
    },
    /// The mode changed; the swarm was told to advertise the change (as
    /// [`KadEvent::ModeChanged`]).
    ModeChanged {
        /// The new mode.
        mode: Mode,
    },
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
    /// A service lookup started with [`Behaviour::discover`](crate::Behaviour::discover)
    /// finished (its [`Event::QueryFinished`] is reported too). `providers` may be empty.
    ServiceFound {
        /// The query.
        id: QueryId,
        /// The service name.
        service: String,
        /// Its providers.
        providers: Vec<KadPeer>,
    },
}

impl From<KadEvent> for Event {
    fn from(event: KadEvent) -> Self {
        match event {
            KadEvent::QueryProgress { id, progress } => Event::QueryProgress { id, progress },
            KadEvent::QueryFinished {
                id,
                origin,
                result,
                stats,
            } => Event::QueryFinished {
                id,
                origin,
                result,
                stats,
            },
            KadEvent::RoutingUpdated {
                peer,
                addresses,
                bucket,
                is_new_peer,
                evicted,
            } => Event::RoutingUpdated {
                peer,
                addresses,
                bucket,
                is_new_peer,
                evicted,
            },
            KadEvent::PeerRemoved {
                peer,
                bucket,
                reason,
            } => Event::PeerRemoved {
                peer,
                bucket,
                reason,
            },
            KadEvent::InboundRequest { from, request } => Event::InboundRequest { from, request },
            KadEvent::ModeChanged { mode } => Event::ModeChanged { mode },
        }
    }
}
