//! Stream routing state: the protocols the local node accepts (shared with the
//! per-connection [acceptors](super::acceptor)), the swarm's own tasks (opening outbound
//! streams, noticing closes), the channel acceptors hand inbound streams over on, and the
//! stream requests waiting for a dial of their peer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::multistream::{self, Negotiated};
use meshwire_transport::{CloseReason, Connection};
use tokio::sync::mpsc;

use crate::behaviour::OpenStream;
use crate::config::SwarmConfig;
use crate::error::StreamError;
use crate::protocol::StreamProtocol;
use crate::stream::{StreamGuard, OPTIMISTIC};

use super::acceptor::{
    shared_bucket, Acceptor, AcceptorHandle, Inbound, SharedBucket, SharedProtocols,
};

pub(super) type NegotiatedStream = Negotiated<meshwire_transport::Stream>;

/// Output of a per-connection task. (Returned and matched at once, never stored: boxing the
/// large variant would cost an allocation per stream.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Task {
    Closed {
        conn: ConnectionId,
        reason: CloseReason,
    },
    /// An acceptor driven here (no Tokio runtime to spawn it on) ended.
    AcceptorEnded,
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
    /// The same, read by the acceptors.
    shared_protocols: SharedProtocols,
    /// Acceptors hand streams and errors to the swarm's task here. Unbounded, yet bounded:
    /// every stream in it holds a place in its connection's inbound limit, and error reports
    /// are counted in `queued_errors` and capped at
    /// [`MAX_QUEUED_ERRORS`](super::acceptor::MAX_QUEUED_ERRORS).
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    queued_errors: Arc<AtomicUsize>,
    inbound_rx: mpsc::UnboundedReceiver<Inbound>,
    /// The node-wide bucket of new inbound streams
    /// ([`SwarmConfig::inbound_stream_rate_total`]), made on first use.
    total_bucket: Option<SharedBucket>,
    /// Whether behaviours were told the protocols ([`FromSwarm::LocalProtocolsChanged`](crate::FromSwarm::LocalProtocolsChanged)).
    pub(super) protocols_announced: bool,
    tasks: FuturesUnordered<BoxFuture<'static, Task>>,
    /// Stream requests waiting for a dial of their peer to finish.
    waiting: HashMap<PeerId, Vec<OpenStream>>,
    waiting_count: usize,
}

impl Router {
    pub(super) fn new(protocols: Vec<StreamProtocol>) -> Self {
        let protocols: Arc<[StreamProtocol]> = dedup(protocols).into();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        Router {
            shared_protocols: Arc::new(RwLock::new(protocols.clone())),
            inbound_tx,
            inbound_rx,
            queued_errors: Arc::new(AtomicUsize::new(0)),
            total_bucket: None,
            protocols,
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
        self.protocols = new.clone();
        *self
            .shared_protocols
            .write()
            .unwrap_or_else(|e| e.into_inner()) = new;
        true
    }

    /// The protocols as the acceptors read them.
    pub(super) fn shared_protocols(&self) -> &SharedProtocols {
        &self.shared_protocols
    }

    /// The node-wide bucket of new inbound streams, if `config` limits them.
    pub(super) fn total_bucket(&mut self, config: &SwarmConfig) -> Option<SharedBucket> {
        let rate = config.inbound_stream_rate_total?;
        Some(
            self.total_bucket
                .get_or_insert_with(|| shared_bucket(rate))
                .clone(),
        )
    }

    /// Where acceptors send what they accepted.
    pub(super) fn inbound_sender(&self) -> mpsc::UnboundedSender<Inbound> {
        self.inbound_tx.clone()
    }

    /// The error reports the acceptors count against their cap.
    pub(super) fn queued_errors(&self) -> Arc<AtomicUsize> {
        self.queued_errors.clone()
    }

    /// The next stream or error an acceptor handed over.
    pub(super) fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let next = self.inbound_rx.poll_recv(cx);
        if let Poll::Ready(Some(Inbound::Error { .. })) = &next {
            self.queued_errors.fetch_sub(1, Ordering::AcqRel);
        }
        next
    }

    /// Runs `acceptor` as a task of its own (or among the swarm's tasks without a Tokio
    /// runtime); dropping the handle stops it.
    pub(super) fn start_acceptor(&mut self, acceptor: Acceptor) -> AcceptorHandle {
        let (handle, local) = AcceptorHandle::spawn(acceptor);
        if let Some(acceptor) = local {
            self.tasks.push(
                async move {
                    acceptor.await;
                    Task::AcceptorEnded
                }
                .boxed(),
            );
        }
        handle
    }

    pub(super) fn poll_task(&mut self, cx: &mut Context<'_>) -> Poll<Option<Task>> {
        self.tasks.poll_next_unpin(cx)
    }

    // ---- tasks ---------------------------------------------------------------------------

    /// Notices the close of a new connection.
    pub(super) fn watch(&mut self, id: ConnectionId, conn: &Connection) {
        let c = conn.clone();
        self.tasks.push(
            async move {
                let reason = c.closed().await;
                Task::Closed { conn: id, reason }
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
        let optimistic = req.optimistic && !confirm && names.len() == 1;
        self.tasks.push(
            async move {
                let work = async {
                    let (proto, mut neg) = if optimistic {
                        // Nothing is written: the proposal goes with the stream's first use.
                        let stream = conn
                            .open_stream()
                            .await
                            .map_err(StreamError::from_connection)?;
                        multistream::dialer_select_with_config(
                            stream,
                            &names,
                            multistream::Version::V1Lazy,
                            &OPTIMISTIC,
                        )
                        .await
                        .map_err(StreamError::from_negotiation)?
                    } else {
                        conn.open_negotiated(&names, timeout)
                            .await
                            .map_err(StreamError::from_connection)?
                    };
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
