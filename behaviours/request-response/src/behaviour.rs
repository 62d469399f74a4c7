//! [`Behaviour`]: the request-response driver on the swarm toolkit.
//!
//! State, each part bounded by a [`Config`] limit:
//! - `outbox` (`Outbox`): stream requests for our requests (keeping each request until its
//!   stream comes back) and the failures of stream requests;
//! - `pending`: the user data of each of our requests under way, from `send_request` to its
//!   final event (`max_outbound_in_flight`);
//! - `outbound` (`Tasks`): our exchanges ([`exchange::outbound`]);
//! - `inbound` (`Tasks`) and `slots`: remotes' exchanges, in two steps each
//!   ([`exchange::read_request`], then [`exchange::respond`]), admitted under the total and
//!   per-peer limits;
//! - `connections`: the handle of every open connection, so each exchange notices its
//!   connection closing;
//! - `opening` and `cancels`: how to cancel each of our requests under way (its stream
//!   request, or its exchange's cancel channel), one entry per `pending` entry at most;
//! - `refused`: requests refused at once (`QueueFull`, no outbound protocol), told at the
//!   next poll. It grows only with the application's own calls made between two polls.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::FutureExt;
use meshwire_swarm::toolkit::{Outbox, QueueFull, Tasks};
use meshwire_swarm::{
    ConnectionId, FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult,
    PeerId, Stream, StreamProtocol, StreamRequestId, ToSwarm,
};
use meshwire_transport::Connection;

use crate::codec::Codec;
use crate::config::{Config, ProtocolSupport};
use crate::error::{InboundFailure, OutboundFailure};
use crate::event::{Event, InboundRequestId, Message, OutboundRequestId, ResponseChannel};
use crate::exchange;
use crate::limits::InboundSlots;

/// The event type of a [`Behaviour`] with codec `C` and user data `U`.
pub type BehaviourEvent<C, U> = Event<<C as Codec>::Request, <C as Codec>::Response, U>;

/// One of our requests waiting for its stream.
struct Outgoing<Req> {
    request_id: OutboundRequestId,
    request: Req,
}

/// A remote's exchange: who, where, with which protocol, until when.
#[derive(Clone)]
struct InboundKey<P> {
    request_id: InboundRequestId,
    peer: PeerId,
    connection: ConnectionId,
    protocol: P,
    deadline: Instant,
}

/// What a step of a remote's exchange yields: its request (and the stream, for the
/// response), or the end.
enum Step<Req> {
    Read(Req, Stream),
    Responded,
}

/// Our exchanges, keyed by request, peer and connection, yielding the response.
type OutboundTasks<C> = Tasks<
    (OutboundRequestId, PeerId, ConnectionId),
    Result<<C as Codec>::Response, OutboundFailure>,
>;

/// Remotes' exchanges, keyed by who and where, yielding each step.
type InboundTasks<C> =
    Tasks<InboundKey<<C as Codec>::Protocol>, Result<Step<<C as Codec>::Request>, InboundFailure>>;

/// A request refused before anything was sent.
struct Refused<U> {
    peer: PeerId,
    request_id: OutboundRequestId,
    error: OutboundFailure,
    user_data: U,
}

/// Sends requests and answers them: one request and one response per stream, encoded by
/// codec `C`, with user data `U` carried from each request to its event. See the
/// [crate docs](crate).
pub struct Behaviour<C: Codec, U = ()> {
    codec: C,
    config: Config,
    /// Every protocol, with its wire name and support.
    protocols: Vec<(C::Protocol, StreamProtocol, ProtocolSupport)>,
    outbox: Outbox<BehaviourEvent<C, U>, Outgoing<C::Request>>,
    pending: HashMap<OutboundRequestId, U>,
    outbound: OutboundTasks<C>,
    inbound: InboundTasks<C>,
    slots: InboundSlots,
    connections: HashMap<ConnectionId, Connection>,
    refused: VecDeque<Refused<U>>,
    /// The stream request of each of our requests waiting for its stream.
    opening: HashMap<OutboundRequestId, (PeerId, StreamRequestId)>,
    /// The cancel channel of each of our exchanges running.
    cancels: HashMap<OutboundRequestId, oneshot::Sender<()>>,
    waker: Option<Waker>,
    next_outbound: u64,
    next_inbound: u64,
    /// Answers every remote's request itself when set ([`Behaviour::with_responder`]).
    responder: Option<Responder<C>>,
}

/// A function answering remotes' requests on the swarm's task.
type Responder<C> = Box<dyn FnMut(PeerId, <C as Codec>::Request) -> <C as Codec>::Response + Send>;

impl<C: Codec + Default, U> Behaviour<C, U> {
    /// A behaviour speaking `protocols` (each with the directions it serves) with the
    /// codec's default (for the built-in codecs: rust-libp2p's size limits).
    pub fn new<I>(protocols: I, config: Config) -> Self
    where
        I: IntoIterator<Item = (C::Protocol, ProtocolSupport)>,
    {
        Self::with_codec(C::default(), protocols, config)
    }
}

impl<C: Codec, U> Behaviour<C, U> {
    /// A behaviour speaking `protocols` with this codec (cloned for every exchange).
    pub fn with_codec<I>(codec: C, protocols: I, config: Config) -> Self
    where
        I: IntoIterator<Item = (C::Protocol, ProtocolSupport)>,
    {
        let protocols = protocols
            .into_iter()
            .map(|(p, support)| (p.clone(), p.into(), support))
            .collect();
        let out = config.max_outbound_in_flight();
        Behaviour {
            codec,
            protocols,
            // Each request under way holds at most two entries (its queued stream request
            // and its context), or one failure event.
            outbox: Outbox::new(out.saturating_mul(2).saturating_add(2)),
            pending: HashMap::new(),
            outbound: Tasks::new(out),
            inbound: Tasks::new(config.max_inbound_streams()),
            slots: InboundSlots::new(
                config.max_inbound_streams(),
                config.max_inbound_streams_per_peer(),
            ),
            connections: HashMap::new(),
            refused: VecDeque::new(),
            opening: HashMap::new(),
            cancels: HashMap::new(),
            waker: None,
            next_outbound: 1,
            next_inbound: 1,
            responder: None,
            config,
        }
    }

    /// Answers every remote's request with `respond(peer, request)`, run on the swarm's task
    /// as the request arrives (keep it quick): no [`Message::Request`] event is reported
    /// then, only the exchange's end ([`Event::ResponseSent`] or [`Event::InboundFailure`]).
    /// For protocols whose answer needs nothing but the request, such as an echo.
    pub fn with_responder(
        mut self,
        respond: impl FnMut(PeerId, C::Request) -> C::Response + Send + 'static,
    ) -> Self {
        self.responder = Some(Box::new(respond));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our requests under way: sent or being sent, their final event not yet returned.
    pub fn outbound_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Remotes' requests being read or answered.
    pub fn inbound_in_flight(&self) -> usize {
        self.slots.active()
    }

    /// Whether our request `id` is still under way.
    pub fn is_pending_outbound(&self, id: &OutboundRequestId) -> bool {
        self.pending.contains_key(id)
    }

    /// Sends `request` to `peer` (dialing it if it is not connected, at the addresses in
    /// the swarm's address book: `Swarm::add_peer_address`), with `user_data` returned in
    /// the request's one final event: [`Message::Response`] or [`Event::OutboundFailure`].
    ///
    /// Never fails at once: with [`Config::max_outbound_in_flight`] requests under way the
    /// request is not sent and [`OutboundFailure::QueueFull`] is its event;
    /// [`outbound_in_flight`](Self::outbound_in_flight) tells beforehand.
    pub fn send_request_with(
        &mut self,
        peer: PeerId,
        request: C::Request,
        user_data: U,
    ) -> OutboundRequestId {
        let request_id = OutboundRequestId(self.next_outbound);
        self.next_outbound += 1;
        let proposed: Vec<StreamProtocol> = self
            .protocols
            .iter()
            .filter(|(_, _, s)| s.outbound())
            .map(|(_, name, _)| name.clone())
            .collect();
        let limit = self.config.max_outbound_in_flight();
        let refusal = match proposed.first() {
            None => Some(OutboundFailure::UnsupportedProtocols),
            Some(_) if self.pending.len() >= limit => Some(OutboundFailure::QueueFull { limit }),
            Some(first) => {
                // Optimistic: with one protocol, the proposal leaves with the request (a refusal
                // shows on the response's read); with several, the remote's answer is awaited.
                let open = OpenStream::new(peer, first.clone())
                    .with_protocols(proposed.clone())
                    .optimistic();
                let outgoing = Outgoing {
                    request_id,
                    request,
                };
                match self.outbox.open_stream(open, outgoing) {
                    Ok(stream) => {
                        self.opening.insert(request_id, (peer, stream));
                        None
                    }
                    // Cannot happen: the outbox has room for every request under way.
                    Err(_) => Some(OutboundFailure::QueueFull { limit }),
                }
            }
        };
        match refusal {
            None => {
                self.pending.insert(request_id, user_data);
            }
            Some(error) => {
                self.refused.push_back(Refused {
                    peer,
                    request_id,
                    error,
                    user_data,
                });
                if let Some(w) = self.waker.take() {
                    w.wake();
                }
            }
        }
        request_id
    }

    /// [`send_request_with`](Self::send_request_with), refusing at once instead of
    /// reporting [`OutboundFailure::QueueFull`] as the request's event: for callers that
    /// want backpressure where they send.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] while [`Config::max_outbound_in_flight`] requests are under way;
    /// nothing was sent and no event will come.
    pub fn try_send_request_with(
        &mut self,
        peer: PeerId,
        request: C::Request,
        user_data: U,
    ) -> Result<OutboundRequestId, QueueFull> {
        let limit = self.config.max_outbound_in_flight();
        if self.pending.len() >= limit {
            return Err(QueueFull { limit });
        }
        Ok(self.send_request_with(peer, request, user_data))
    }

    /// Sends `request` to `peer` with the default user data (`()` for most behaviours);
    /// see [`send_request_with`](Self::send_request_with).
    pub fn send_request(&mut self, peer: PeerId, request: C::Request) -> OutboundRequestId
    where
        U: Default,
    {
        self.send_request_with(peer, request, U::default())
    }

    /// Cancels our request `id`: if it is under way, its stream is reset (the remote reads
    /// an error; a request still waiting for its stream is never sent) and its one final
    /// event is [`Event::OutboundFailure`] with [`OutboundFailure::Cancelled`], returned
    /// with its user data at the next poll. It leaves
    /// [`outbound_in_flight`](Self::outbound_in_flight) then, not at once.
    ///
    /// Returns whether the request was under way (`false` once its final event is ready,
    /// or if `id` is unknown: nothing changes then).
    pub fn cancel_request(&mut self, id: OutboundRequestId) -> bool {
        if let Some(cancel) = self.cancels.remove(&id) {
            // The exchange ends at its next poll (`Tasks` wakes on the send).
            return cancel.send(()).is_ok();
        }
        let Some((peer, stream)) = self.opening.remove(&id) else {
            return false;
        };
        // The stream, when it comes, finds no request and is reset.
        self.outbox.take_stream(stream);
        let Some(user_data) = self.pending.remove(&id) else {
            return false;
        };
        self.refused.push_back(Refused {
            peer,
            request_id: id,
            error: OutboundFailure::Cancelled,
            user_data,
        });
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    /// Answers a remote's request with `response`.
    ///
    /// # Errors
    ///
    /// `Err(response)` if the exchange no longer waits for it (it timed out or its
    /// connection closed; its [`Event::InboundFailure`] says which).
    pub fn send_response(
        &mut self,
        channel: ResponseChannel<C::Response>,
        response: C::Response,
    ) -> Result<(), C::Response> {
        channel.send(response)
    }

    /// The codec's protocol behind a negotiated name, if this behaviour serves it in the
    /// direction `dir`.
    fn protocol(
        &self,
        name: &StreamProtocol,
        dir: fn(&ProtocolSupport) -> bool,
    ) -> Option<C::Protocol> {
        self.protocols
            .iter()
            .find(|(_, n, s)| n == name && dir(s))
            .map(|(p, _, _)| p.clone())
    }

    fn timeout(&self) -> Duration {
        self.config.request_timeout()
    }

    /// The final event of our request `request_id`, with its user data (`None`, logged,
    /// if the request is unknown, which would be a bug).
    fn outbound_event(
        &mut self,
        peer: PeerId,
        connection: Option<ConnectionId>,
        request_id: OutboundRequestId,
        result: Result<C::Response, OutboundFailure>,
    ) -> Option<BehaviourEvent<C, U>> {
        self.cancels.remove(&request_id);
        self.opening.remove(&request_id);
        let Some(user_data) = self.pending.remove(&request_id) else {
            tracing::error!(%request_id, "request-response: unknown request finished");
            return None;
        };
        Some(match (result, connection) {
            (Ok(response), Some(connection)) => Event::Message {
                peer,
                connection,
                message: Message::Response {
                    request_id,
                    response,
                    user_data,
                },
            },
            (Err(error), connection) => Event::OutboundFailure {
                peer,
                connection,
                request_id,
                error,
                user_data,
            },
            // A response always comes on a connection; kept total.
            (Ok(_), None) => Event::OutboundFailure {
                peer,
                connection,
                request_id,
                error: OutboundFailure::ConnectionClosed,
                user_data,
            },
        })
    }

    /// Starts reading a remote's request on a stream it opened.
    fn accept(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            protocol: name,
            mut stream,
        } = inbound;
        let Some(protocol) = self.protocol(&name, ProtocolSupport::inbound) else {
            // The swarm only hands over the protocols we listed; kept total.
            stream.reset();
            return;
        };
        if let Err(refused) = self.slots.admit(peer) {
            tracing::debug!(%peer, %name, ?refused, "request-response: inbound stream refused");
            stream.reset();
            return;
        }
        let request_id = InboundRequestId(self.next_inbound);
        self.next_inbound += 1;
        let key = InboundKey {
            request_id,
            peer,
            connection,
            protocol: protocol.clone(),
            deadline: exchange::deadline(self.timeout()),
        };
        let read = exchange::read_request(
            self.codec.clone(),
            protocol,
            stream,
            (key.deadline, self.timeout()),
            self.connections.get(&connection).cloned(),
        )
        .map(|r| r.map(|(request, stream)| Step::Read(request, stream)));
        // `slots` admits at most as many as `inbound` holds.
        if self.inbound.try_push(key, Duration::MAX, read).is_err() {
            self.slots.release(peer);
        }
    }

    /// A step of a remote's exchange finished: its request (the response step starts), or
    /// its end.
    fn inbound_step(
        &mut self,
        key: InboundKey<C::Protocol>,
        result: Result<Step<C::Request>, InboundFailure>,
    ) -> Option<BehaviourEvent<C, U>> {
        let (peer, connection, request_id) = (key.peer, key.connection, key.request_id);
        let error = match result {
            Ok(Step::Read(request, stream)) => {
                let (sender, receiver) = oneshot::channel();
                // With a responder the answer is ready at once, and nothing is reported yet.
                let (request, sender) = match &mut self.responder {
                    Some(respond) => {
                        let _ = sender.send(respond(peer, request));
                        (None, None)
                    }
                    None => (Some(request), Some(sender)),
                };
                let respond = exchange::respond(
                    self.codec.clone(),
                    key.protocol.clone(),
                    stream,
                    receiver,
                    (key.deadline, self.timeout()),
                    self.connections.get(&connection).cloned(),
                )
                .map(|r| r.map(|()| Step::Responded));
                // The read step just left the set, so there is room.
                if self.inbound.try_push(key, Duration::MAX, respond).is_err() {
                    self.slots.release(peer);
                }
                let (request, sender) = request.zip(sender)?;
                return Some(Event::Message {
                    peer,
                    connection,
                    message: Message::Request {
                        request_id,
                        request,
                        channel: ResponseChannel { sender },
                    },
                });
            }
            Ok(Step::Responded) => None,
            Err(error) => Some(error),
        };
        self.slots.release(peer);
        Some(match error {
            None => Event::ResponseSent {
                peer,
                connection,
                request_id,
            },
            Some(error) => Event::InboundFailure {
                peer,
                connection,
                request_id,
                error,
            },
        })
    }
}

impl<C: Codec, U: Send + 'static> NetworkBehaviour for Behaviour<C, U> {
    type Event = BehaviourEvent<C, U>;

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.protocols
            .iter()
            .filter(|(_, _, s)| s.inbound())
            .map(|(_, name, _)| name.clone())
            .collect()
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                connection, handle, ..
            } => {
                self.connections.insert(connection, handle.clone());
            }
            FromSwarm::ConnectionClosed { connection, .. } => {
                self.connections.remove(&connection);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        self.accept(inbound);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(Outgoing {
            request_id,
            request,
        }) = self.outbox.take_stream(result.id)
        else {
            // A cancelled request's stream (`cancel_request`): the remote reads a reset.
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        self.opening.remove(&request_id);
        let peer = result.peer;
        let out = match result.result {
            Ok(out) => out,
            Err(e) => {
                if let Some(event) = self.outbound_event(peer, None, request_id, Err(e.into())) {
                    // Room: the request's own entry just left the outbox.
                    let _ = self.outbox.event(event);
                }
                return;
            }
        };
        let connection = out.connection;
        let Some(protocol) = self.protocol(&out.protocol, ProtocolSupport::outbound) else {
            let failure = Err(OutboundFailure::UnsupportedProtocols);
            if let Some(event) = self.outbound_event(peer, Some(connection), request_id, failure) {
                let _ = self.outbox.event(event);
            }
            return;
        };
        let (cancel, cancelled) = oneshot::channel();
        let exchange = exchange::outbound(
            self.codec.clone(),
            protocol,
            out.stream,
            request,
            self.timeout(),
            self.connections.get(&connection).cloned(),
            cancelled,
        );
        self.cancels.insert(request_id, cancel);
        // `outbound` holds as many as `pending`, which counts this request.
        let key = (request_id, peer, connection);
        if self
            .outbound
            .try_push(key, Duration::MAX, exchange)
            .is_err()
        {
            let failure = Err(OutboundFailure::QueueFull {
                limit: self.config.max_outbound_in_flight(),
            });
            if let Some(event) = self.outbound_event(peer, Some(connection), request_id, failure) {
                let _ = self.outbox.event(event);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Some(r) = self.refused.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(Event::OutboundFailure {
                    peer: r.peer,
                    connection: None,
                    request_id: r.request_id,
                    error: r.error,
                    user_data: r.user_data,
                }));
            }
            if let Poll::Ready(((request_id, peer, connection), result)) =
                self.outbound.poll_result(cx)
            {
                match self.outbound_event(peer, Some(connection), request_id, result) {
                    Some(event) => return Poll::Ready(ToSwarm::GenerateEvent(event)),
                    None => continue,
                }
            }
            if let Poll::Ready((key, result)) = self.inbound.poll_result(cx) {
                match self.inbound_step(key, result) {
                    Some(event) => return Poll::Ready(ToSwarm::GenerateEvent(event)),
                    None => continue,
                }
            }
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}
