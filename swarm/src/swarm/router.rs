//! Stream routing state: the protocols the local node accepts, the per-connection tasks
//! (accepting and negotiating inbound streams, opening outbound ones, noticing closes) and
//! the stream requests waiting for a dial of their peer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::multistream::{self, Negotiated};
use meshwire_transport::{CloseReason, Connection, ConnectionError};

use crate::behaviour::OpenStream;
use crate::config::SwarmConfig;
use crate::error::StreamError;
use crate::protocol::StreamProtocol;
use crate::stream::StreamGuard;

pub(super) type NegotiatedStream = Negotiated<meshwire_transport::Stream>;

/// Output of a per-connection task.
pub(super) enum Task {
    Accepted {
        conn: ConnectionId,
        result: Result<meshwire_transport::Stream, ConnectionError>,
    },
    Closed {
        conn: ConnectionId,
        reason: CloseReason,
    },
    InboundNegotiated {
        conn: ConnectionId,
        result: Result<(String, NegotiatedStream), StreamError>,
        guard: StreamGuard,
    },
    Outbound {
        conn: ConnectionId,
        request: OpenStream,
        result: Result<(String, NegotiatedStream), StreamError>,
        /// Counts the stream from the request on, so an in-flight request keeps the
        /// connection alive.
        guard: StreamGuard,
    },
}

/// The protocols, the tasks and the waiting stream requests.
pub(super) struct Router {
    protocols: Arc<[StreamProtocol]>,
    /// Whether behaviours were told the protocols ([`FromSwarm::LocalProtocolsChanged`](crate::FromSwarm::LocalProtocolsChanged)).
    pub(super) protocols_announced: bool,
    tasks: FuturesUnordered<BoxFuture<'static, Task>>,
    /// Stream requests waiting for a dial of their peer to finish.
    waiting: HashMap<PeerId, Vec<OpenStream>>,
    waiting_count: usize,
}

impl Router {
    pub(super) fn new(protocols: Vec<StreamProtocol>) -> Self {
        Router {
            protocols: dedup(protocols).into(),
            protocols_announced: false,
            tasks: FuturesUnordered::new(),
            waiting: HashMap::new(),
            waiting_count: 0,
        }
    }

    pub(super) fn protocols(&self) -> &Arc<[StreamProtocol]> {
        &self.protocols
    }

    /// Replaces the protocols; returns whether they changed.
    pub(super) fn set_protocols(&mut self, protocols: Vec<StreamProtocol>) -> bool {
        let new: Arc<[StreamProtocol]> = dedup(protocols).into();
        if new == self.protocols {
            return false;
        }
        self.protocols = new;
        true
    }

    /// The accepted protocol called `name`.
    pub(super) fn protocol(&self, name: &str) -> Option<StreamProtocol> {
        self.protocols.iter().find(|p| p.as_str() == name).cloned()
    }

    pub(super) fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Option<Task>> {
        self.tasks.poll_next_unpin(cx)
    }

    // ---- tasks ---------------------------------------------------------------------------

    /// Starts the tasks of a new connection: accept the peer's streams, notice the close.
    pub(super) fn watch(&mut self, id: ConnectionId, conn: &Connection) {
        self.accept_next(id, conn);
        let c = conn.clone();
        self.tasks.push(
            async move {
                let reason = c.closed().await;
                Task::Closed { conn: id, reason }
            }
            .boxed(),
        );
    }

    /// Accepts the next stream the peer opens on `conn`.
    pub(super) fn accept_next(&mut self, id: ConnectionId, conn: &Connection) {
        let c = conn.clone();
        self.tasks.push(
            async move {
                let result = c.accept_stream().await;
                Task::Accepted { conn: id, result }
            }
            .boxed(),
        );
    }

    /// Negotiates an inbound stream against the accepted protocols, within `timeout`.
    pub(super) fn negotiate_inbound(
        &mut self,
        conn: ConnectionId,
        stream: meshwire_transport::Stream,
        guard: StreamGuard,
        timeout: Duration,
    ) {
        let protocols = self.protocols.clone();
        self.tasks.push(
            async move {
                let neg = multistream::listener_select(stream, &protocols[..]);
                let result = match tokio::time::timeout(timeout, neg).await {
                    Ok(r) => r.map_err(StreamError::from_negotiation),
                    Err(_) => Err(StreamError::Timeout),
                };
                Task::InboundNegotiated {
                    conn,
                    result,
                    guard,
                }
            }
            .boxed(),
        );
    }

    /// Opens and negotiates the stream `req` asks for on `conn`, within `timeout`.
    pub(super) fn open_outbound(
        &mut self,
        conn_id: ConnectionId,
        conn: Connection,
        req: OpenStream,
        guard: StreamGuard,
        timeout: Duration,
    ) {
        let names: Vec<String> = req
            .protocols
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        let confirm = req.confirm;
        self.tasks.push(
            async move {
                let work = async {
                    let (proto, mut neg) = conn
                        .open_negotiated(&names, timeout)
                        .await
                        .map_err(StreamError::from_connection)?;
                    if confirm {
                        neg.complete()
                            .await
                            .map_err(StreamError::from_negotiation)?;
                    }
                    Ok((proto, neg))
                };
                let result = match tokio::time::timeout(timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(StreamError::Timeout),
                };
                // A failure on a connection that closed meanwhile is the close, whatever
                // the stream saw (a reset, an end of stream).
                let result = result.map_err(|e| match conn.close_reason() {
                    Some(reason) => StreamError::ConnectionClosed(reason),
                    None => e,
                });
                Task::Outbound {
                    conn: conn_id,
                    request: req,
                    result,
                    guard,
                }
            }
            .boxed(),
        );
    }

    // ---- waiting requests ----------------------------------------------------------------

    /// Whether requests wait for a dial of `peer`.
    pub(super) fn is_waiting(&self, peer: &PeerId) -> bool {
        self.waiting.contains_key(peer)
    }

    /// Checks the limits of waiting requests for one more request for `peer`.
    ///
    /// # Errors
    ///
    /// [`StreamError::PendingLimit`] when the total or the per-peer limit is reached.
    pub(super) fn check_wait(
        &self,
        peer: &PeerId,
        config: &SwarmConfig,
    ) -> Result<(), StreamError> {
        if self.waiting_count >= config.max_pending_stream_requests {
            let limit = config.max_pending_stream_requests;
            return Err(StreamError::PendingLimit { limit });
        }
        let per_peer = self.waiting.get(peer).map_or(0, Vec::len);
        if per_peer >= config.max_pending_stream_requests_per_peer {
            let limit = config.max_pending_stream_requests_per_peer;
            return Err(StreamError::PendingLimit { limit });
        }
        Ok(())
    }

    /// Queues `req` until a dial of its peer finishes (after [`Router::check_wait`]).
    pub(super) fn wait(&mut self, req: OpenStream) {
        self.waiting.entry(req.peer).or_default().push(req);
        self.waiting_count += 1;
    }

    /// Takes the requests waiting for `peer`.
    pub(super) fn take_waiting(&mut self, peer: &PeerId) -> Vec<OpenStream> {
        let waiting = self.waiting.remove(peer).unwrap_or_default();
        self.waiting_count -= waiting.len();
        waiting
    }
}

fn dedup(protocols: Vec<StreamProtocol>) -> Vec<StreamProtocol> {
    let mut seen = HashSet::new();
    protocols
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}
