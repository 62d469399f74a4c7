//! Stream routing: inbound streams, accepted and negotiated by each connection's
//! [acceptor](super::acceptor), are handed to the behaviour that claimed the protocol; outbound
//! [`OpenStream`] requests are opened on a live connection (a direct one over a relayed one,
//! then the least busy), or wait for a dial
//! of their peer.

use meshwire_core::{Direction, PeerId};

use super::acceptor::Inbound;
use super::router::Task;
use super::Swarm;
use crate::behaviour::{NetworkBehaviour, OpenStream, OutboundStream, OutboundStreamResult};
use crate::dial::{DialOpts, PeerCondition};
use crate::error::StreamError;
use crate::event::SwarmEvent;
use crate::stream::{Stream, StreamGuard};

impl<B: NetworkBehaviour> Swarm<B> {
    fn deliver_stream_result(
        &mut self,
        req: OpenStream,
        result: Result<OutboundStream, StreamError>,
    ) {
        match &result {
            Ok(_) => self.metrics.outbound_streams.inc(),
            Err(e) => {
                tracing::debug!(peer = %req.peer, id = %req.id, error = %e, "outbound stream failed");
                self.metrics.outbound_stream_failures.inc()
            }
        };
        self.behaviour.on_outbound_stream(OutboundStreamResult {
            id: req.id,
            peer: req.peer,
            result,
            route: req.route,
        });
    }

    /// Fails the requests waiting for `peer` with `error`.
    pub(super) fn fail_waiting_streams(&mut self, peer: PeerId, error: StreamError) {
        for req in self.router.take_waiting(&peer) {
            self.deliver_stream_result(req, Err(error.clone()));
        }
    }

    /// Opens the streams of the requests waiting for `peer` (it connected).
    pub(super) fn open_waiting_streams(&mut self, peer: PeerId) {
        for req in self.router.take_waiting(&peer) {
            self.open_stream(req);
        }
    }

    /// Stream requests wait for a dial of their peer; if none is under way and no live
    /// connection is left (the last one closed, or is closing), start one.
    pub(super) fn dial_for_waiting(&mut self, peer: PeerId) {
        if !self.router.is_waiting(&peer)
            || self.pool.has_live_connection(&peer)
            || self.pool.is_dialing(&peer)
        {
            return;
        }
        let opts = DialOpts::peer(peer).condition(PeerCondition::DisconnectedAndNotDialing);
        if let Err(e) = self.dial(opts) {
            self.fail_waiting_streams(peer, StreamError::DialFailed(e));
        }
    }

    /// Handles a behaviour's [`OpenStream`] request.
    pub(super) fn open_stream(&mut self, req: OpenStream) {
        let conn_id = match req.connection {
            Some(id) => match self.pool.get(&id) {
                Some(c) if c.peer == req.peer && c.closing.is_none() => Some(id),
                _ => {
                    return self.deliver_stream_result(req, Err(StreamError::NotConnected));
                }
            },
            None => self.pool.least_busy(&req.peer),
        };
        let Some(conn_id) = conn_id else {
            if !req.dial {
                return self.deliver_stream_result(req, Err(StreamError::NotConnected));
            }
            if let Err(e) = self.router.check_wait(&req.peer, &self.config) {
                return self.deliver_stream_result(req, Err(e));
            }
            let peer = req.peer;
            self.router.wait(req);
            self.dial_for_waiting(peer);
            return;
        };
        let Some(c) = self.pool.get(&conn_id) else {
            return self.deliver_stream_result(req, Err(StreamError::NotConnected));
        };
        let conn = c.conn.clone();
        let counters = c.counters.clone();
        let scope = match self.resources.open_stream(req.peer, Direction::Outbound) {
            Ok(scope) => scope,
            Err(e) => return self.deliver_stream_result(req, Err(e.into())),
        };
        let guard = StreamGuard::new(counters, false, scope);
        self.router
            .open_outbound(conn_id, conn, req, guard, self.config.negotiation_timeout);
    }

    /// A per-connection task finished.
    pub(super) fn on_task(&mut self, task: Task) {
        match task {
            Task::Closed { conn, reason } => self.on_closed(conn, reason),
            Task::AcceptorEnded => {}
            Task::Outbound {
                conn,
                request,
                result,
                mut guard,
            } => {
                let result = match (result, self.pool.get(&conn)) {
                    (Ok((name, io)), Some(_)) => {
                        let protocol = request
                            .protocols
                            .iter()
                            .find(|p| p.as_str() == name)
                            .cloned();
                        let admitted = guard.set_protocol(&name);
                        match (protocol, admitted) {
                            (_, Err(e)) => Err(e.into()),
                            (Some(protocol), Ok(())) => Ok(OutboundStream {
                                connection: conn,
                                protocol,
                                stream: Stream::new(io, guard),
                            }),
                            (None, Ok(())) => Err(StreamError::UnsupportedProtocols),
                        }
                    }
                    (Ok(_), None) => Err(StreamError::NotConnected),
                    (Err(e), _) => Err(e),
                };
                self.deliver_stream_result(request, result);
            }
        }
    }

    /// A connection's acceptor handed over a negotiated stream for a behaviour, or reports
    /// an inbound stream that failed.
    pub(super) fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Error {
                peer,
                connection,
                error,
            } => {
                // A failure on a connection gone meanwhile is its close, reported as such.
                if self.pool.get(&connection).is_some() {
                    self.inbound_stream_error(peer, connection, error)
                }
            }
            Inbound::Stream(mut stream) => {
                if self.pool.get(&stream.connection).is_none() {
                    // Its connection closed meanwhile.
                    stream.stream.reset();
                    return;
                }
                if !self.router.protocols().contains(&stream.protocol) {
                    // Negotiated against a protocol list that changed since: nobody claims
                    // it any more.
                    stream.stream.reset();
                    let (peer, conn) = (stream.peer, stream.connection);
                    return self.inbound_stream_error(
                        peer,
                        conn,
                        StreamError::UnsupportedProtocols,
                    );
                }
                self.metrics.inbound_streams.inc();
                self.behaviour.on_inbound_stream(stream);
            }
        }
    }

    fn inbound_stream_error(
        &mut self,
        peer_id: PeerId,
        connection_id: meshwire_core::ConnectionId,
        error: StreamError,
    ) {
        self.metrics.inbound_stream_errors.inc();
        self.events.push_back(SwarmEvent::InboundStreamError {
            peer_id,
            connection_id,
            error,
        });
    }
}
