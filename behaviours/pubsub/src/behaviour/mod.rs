//! [`Behaviour`]: the engine driven over meshwire-swarm streams, `/meshsub/1.2.0` (preferred),
//! `/meshsub/1.1.0` and `/meshsub/1.0.0`.
//!
//! - **Peers**: a peer's first connection makes it known to the engine (outbound if we
//!   dialed it), its last one closing forgets it. A peer that refuses every version is
//!   forgotten until it opens a stream to us. The version a stream was negotiated on (ours or
//!   the peer's, the last one opened) is the peer's [`PeerKind`]: IDONTWANT goes only to
//!   `/meshsub/1.2.0` peers, backoff and peer exchange to 1.1 and later.
//! - **Ours**: one long-lived stream per peer, opened (without dialing, confirmed so the
//!   version is known) when the engine has something for the peer. A writer task drains a
//!   small channel ([`Config::writer_queue`] frames) into it, each write bounded by
//!   [`Config::write_timeout`]. The behaviour moves RPCs from the engine's per-peer queue into
//!   the channel only while it has room, so a slow reader fills its own queues, whose bounds
//!   then drop its data (never anyone else's), control always first. A stream that fails is
//!   reopened on the next RPC, not sooner than [`Config::reopen_delay`].
//! - **Remotes'**: every inbound stream is read frame by frame ([`FrameReaders`]), each frame
//!   bounded by `max_transmit_size` before it is buffered; at most
//!   [`Config::max_inbound_streams`] in total and [`Config::max_inbound_streams_per_peer`] per
//!   peer (more are reset). A frame that does not decode, or is too large, counts against the
//!   peer ([`GossipsubEvent::Invalid`]); a too-large frame also ends the stream.
//! - **QoS 1** ([`crate::qos`], [`Behaviour::publish_with`]): a peer whose identify
//!   protocols (shared by the swarm, [`FromSwarm::RemoteProtocolsChanged`]) include
//!   [`QOS_PROTOCOL`] is expected to acknowledge our QoS 1 messages (a QoS stream it opens
//!   does not make it expected; silent peers are capped and demoted, [`crate::qos`]). Our copies of those messages to such peers carry the mark
//!   ([`crate::qos::wire::mark`]); acknowledgements and retransmissions travel one frame per
//!   stream on [`QOS_PROTOCOL`] (opened without dialing, at most [`Config::max_qos_streams`]
//!   at once, each write bounded by [`Config::write_timeout`]); remotes' QoS streams are read
//!   like gossipsub streams (bounded frames; at most
//!   [`Config::max_qos_inbound_streams_per_peer`] per peer, [`Config::max_inbound_streams`]
//!   in total), a bad frame counting against the peer.
//! - **Time**: one timer at the engine's next deadline (heartbeat or QoS retransmission).
//!
//! The streams keep their connections open (the swarm's default for a stream), as
//! rust-libp2p's gossipsub keeps its peers' connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::channel::mpsc;
use futures::AsyncRead;
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::toolkit::{
    write_frames, ConnectionChange, Connections, FrameError, FrameReaders, Outbox, Tasks,
};
use meshwire_swarm::{
    ConnectedPoint, FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult,
    StreamProtocol, Timer, ToSwarm,
};
use multiaddr::Protocol;

use crate::engine::{
    Acceptance, ConfigError, GossipsubEngine, GossipsubEvent, MessageId, PeerKind, PublishError,
    TopicHash,
};
use crate::metrics::GossipsubMetrics;
use crate::qos::{self, Qos};
use crate::topic::{wire_pattern, wire_topic, Pattern, Realm, TopicName};
use crate::wire::{self, WireError};

/// Gossipsub v1.2's protocol id (v1.1 and IDONTWANT).
pub const PROTOCOL_V1_2: StreamProtocol = StreamProtocol::new("/meshsub/1.2.0");
/// Gossipsub v1.1's protocol id.
pub const PROTOCOL_V1_1: StreamProtocol = StreamProtocol::new("/meshsub/1.1.0");
/// Gossipsub v1.0's protocol id.
pub const PROTOCOL_V1_0: StreamProtocol = StreamProtocol::new("/meshsub/1.0.0");

/// The behaviour's events: the engine's.
pub type Event = GossipsubEvent;

mod config;
mod qos_streams;
pub use config::Config;
pub use qos_streams::QOS_PROTOCOL;

/// What a stream request was for.
enum StreamContext {
    /// A peer's long-lived gossipsub stream, fed from this channel.
    Gossip(mpsc::Receiver<Vec<u8>>),
    /// One QoS frame to write.
    Qos(Vec<u8>),
}

/// A remote's stream with its peer's token: the count of a peer's tokens is its streams.
struct Counted<S> {
    io: S,
    _token: Arc<()>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// Gossipsub over the swarm: see the [module docs](self).
pub struct Behaviour {
    engine: GossipsubEngine,
    config: Config,
    outbox: Outbox<Event, StreamContext>,
    writers: Tasks<PeerId, Result<(), FrameError>>,
    readers: FrameReaders<PeerId>,
    senders: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    inbound: HashMap<PeerId, Arc<()>>,
    reopen_after: HashMap<PeerId, Instant>,
    /// Open connections per (peer, remote IP), for the score's IP colocation (P6); bounded
    /// by the swarm's connections.
    ip_connections: HashMap<(PeerId, std::net::IpAddr), usize>,
    connections: Connections,
    timer: Timer,
    waker: Option<Waker>,
    /// QoS frames being written, one stream each.
    qos_writers: Tasks<PeerId, Result<(), FrameError>>,
    /// QoS streams requested and not yet opened.
    qos_opening: usize,
    /// Remotes' QoS streams.
    qos_readers: FrameReaders<PeerId>,
    qos_inbound: HashMap<PeerId, Arc<()>>,
}

impl Behaviour {
    /// A behaviour publishing as `key`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the engine's parameters are inconsistent.
    pub fn new(key: &Keypair, config: Config) -> Result<Self, ConfigError> {
        // rust-libp2p's rule: sequence numbers start at the Unix time in nanoseconds.
        let first_seqno = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        // Each node's random choices differ: the seed mixes the time and the peer id.
        let mut engine_config = config.engine_config();
        engine_config.seed = key
            .peer_id()
            .as_bytes()
            .iter()
            .fold(first_seqno, |h, b| h.rotate_left(8) ^ u64::from(*b));
        let engine = GossipsubEngine::new(key.clone(), engine_config, first_seqno)?;
        Ok(Behaviour {
            engine,
            outbox: Outbox::new(config.max_pending_commands),
            writers: Tasks::new(config.max_outbound_streams),
            readers: FrameReaders::new(config.max_inbound_streams),
            senders: HashMap::new(),
            inbound: HashMap::new(),
            reopen_after: HashMap::new(),
            ip_connections: HashMap::new(),
            connections: Connections::default(),
            timer: Timer::default(),
            waker: None,
            qos_writers: Tasks::new(config.max_qos_streams),
            qos_opening: 0,
            qos_readers: FrameReaders::new(config.max_inbound_streams),
            qos_inbound: HashMap::new(),
            config,
        })
    }

    /// The engine (mesh, fanout and topic peers, counters).
    pub fn engine(&self) -> &GossipsubEngine {
        &self.engine
    }

    /// Counts into `metrics` from now on ([`GossipsubMetrics::register`]).
    pub fn set_metrics(&mut self, metrics: GossipsubMetrics) {
        self.engine.set_metrics(metrics);
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Subscribes to `topic`; `false` if already subscribed.
    pub fn subscribe(&mut self, topic: impl Into<TopicHash>) -> bool {
        let done = self.engine.subscribe(Instant::now(), topic.into());
        self.wake();
        done
    }

    /// Unsubscribes from `topic`; `false` if not subscribed.
    pub fn unsubscribe(&mut self, topic: impl Into<TopicHash>) -> bool {
        let done = self.engine.unsubscribe(Instant::now(), &topic.into());
        self.wake();
        done
    }

    /// Subscribes to every topic of `realm` matching `pattern` (`sensors.#`,
    /// `sensors.*.temp`), including topics first used later: a subscription to the wire topic
    /// [`wire_pattern`] (see `docs/pubsub.md`, "Wildcards"). `false` if already subscribed.
    pub fn subscribe_pattern(&mut self, realm: &Realm, pattern: &Pattern) -> bool {
        self.subscribe(wire_pattern(realm, pattern))
    }

    /// Subscribes to `topic` in `realm` (the wire topic `<realm>/<topic>`, [`wire_topic`]).
    pub fn subscribe_topic(&mut self, realm: &Realm, topic: &TopicName) -> bool {
        self.subscribe(wire_topic(realm, topic))
    }

    /// Publishes `data` on `topic` in `realm`: to the topic's subscribers and to the
    /// neighbours whose patterns match.
    ///
    /// # Errors
    ///
    /// [`PublishError`].
    pub fn publish_topic(
        &mut self,
        realm: &Realm,
        topic: &TopicName,
        data: impl Into<Vec<u8>>,
    ) -> Result<MessageId, PublishError> {
        self.publish(wire_topic(realm, topic), data)
    }

    /// Signs and publishes `data` on `topic`.
    ///
    /// # Errors
    ///
    /// [`PublishError`].
    pub fn publish(
        &mut self,
        topic: impl Into<TopicHash>,
        data: impl Into<Vec<u8>>,
    ) -> Result<MessageId, PublishError> {
        let result = self
            .engine
            .publish(Instant::now(), topic.into(), data.into());
        self.wake();
        result
    }

    /// Publishes `data` on `topic` with the delivery guarantee `qos`
    /// ([`GossipsubEngine::publish_with`]): with [`Qos::AtLeastOnce`] every connected
    /// QoS-capable subscriber must acknowledge it, and [`Event::QosDelivered`] or
    /// [`Event::QosDeliveryFailed`] follows (module [`crate::qos`]).
    ///
    /// # Errors
    ///
    /// [`PublishError`].
    pub fn publish_with(
        &mut self,
        topic: impl Into<TopicHash>,
        data: impl Into<Vec<u8>>,
        qos: Qos,
    ) -> Result<MessageId, PublishError> {
        let result = self
            .engine
            .publish_with(Instant::now(), topic.into(), data.into(), qos);
        self.wake();
        result
    }

    /// [`Self::publish_with`] on `topic` in `realm`.
    ///
    /// # Errors
    ///
    /// [`PublishError`].
    pub fn publish_topic_with(
        &mut self,
        realm: &Realm,
        topic: &TopicName,
        data: impl Into<Vec<u8>>,
        qos: Qos,
    ) -> Result<MessageId, PublishError> {
        self.publish_with(wire_topic(realm, topic), data, qos)
    }

    /// Records whether `peer` speaks the QoS protocol (expected to acknowledge QoS 1
    /// messages), for a node without identify or to override what identify said; the next
    /// identify report of the peer, or its last connection closing, replaces it.
    pub fn set_peer_qos(&mut self, peer: &PeerId, qos: bool) {
        self.engine.set_peer_qos(peer, qos);
    }

    /// The application's verdict on a message received with `validate_messages` on
    /// ([`GossipsubEngine::report_validation`]).
    pub fn report_message_validation_result(
        &mut self,
        id: &MessageId,
        propagation_source: &PeerId,
        acceptance: Acceptance,
    ) -> bool {
        let done =
            self.engine
                .report_validation(Instant::now(), id, propagation_source, acceptance);
        self.wake();
        done
    }

    /// Sets a peer's application-specific score (P5, with scoring on); `false` if scoring is
    /// off or the peer unknown.
    pub fn set_application_score(&mut self, peer: &PeerId, score: f64) -> bool {
        self.engine.set_application_score(peer, score)
    }

    fn on_frame(&mut self, peer: PeerId, frame: Result<Vec<u8>, FrameError>) {
        if !self.connections.is_connected(&peer) {
            // A frame read after the peer's last connection closed: the engine has forgotten
            // the peer and must not learn of it again from a stale stream.
            return;
        }
        let now = Instant::now();
        match frame {
            Ok(bytes) => match wire::decode_rpc(&bytes, self.config.max_transmit_size) {
                Ok(rpc) => {
                    let marked = qos::wire::is_marked(&bytes);
                    self.engine.handle_rpc_marked(now, peer, rpc, marked);
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "gossipsub: undecodable RPC");
                    self.engine.handle_invalid_rpc(now, peer, e);
                }
            },
            Err(FrameError::TooLarge { len, max }) => {
                tracing::debug!(%peer, len, max, "gossipsub: frame over max_transmit_size");
                self.engine
                    .handle_invalid_rpc(now, peer, WireError::TooLarge { len, max });
            }
            Err(FrameError::InvalidPrefix) => {
                self.engine
                    .handle_invalid_rpc(now, peer, WireError::InvalidPrefix);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "gossipsub: inbound stream ended"),
        }
    }

    /// Moves RPCs from the engine into the writers with room, asking for streams as needed;
    /// `true` if it handed at least one RPC to a writer (whose future then has something to
    /// write: [`Self::poll_writers`] writes it).
    fn flush_transmits(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let now = Instant::now();
        let peers: Vec<PeerId> = self.engine.peers_with_transmits().copied().collect();
        for peer in peers {
            if self.senders.get(&peer).is_some_and(|tx| tx.is_closed()) {
                self.senders.remove(&peer);
            }
            if !self.senders.contains_key(&peer) {
                let waiting = self.reopen_after.get(&peer).is_some_and(|t| *t > now);
                let full = self.senders.len() >= self.config.max_outbound_streams;
                if waiting || full || !self.connections.is_connected(&peer) {
                    continue;
                }
                let (tx, rx) = mpsc::channel(self.config.writer_queue.saturating_sub(1));
                let request = OpenStream::new(peer, PROTOCOL_V1_2)
                    .with_protocols(vec![PROTOCOL_V1_2, PROTOCOL_V1_1, PROTOCOL_V1_0])
                    .no_dial()
                    .confirmed();
                if self
                    .outbox
                    .open_stream(request, StreamContext::Gossip(rx))
                    .is_err()
                {
                    continue;
                }
                self.senders.insert(peer, tx);
            }
            let Some(tx) = self.senders.get_mut(&peer) else {
                continue;
            };
            loop {
                match tx.poll_ready(cx) {
                    Poll::Ready(Ok(())) => match self.engine.poll_transmit_to(&peer) {
                        Some(rpc) => {
                            let mut bytes = wire::encode_rpc(&rpc);
                            if self.engine.qos_marked(&peer, &rpc) {
                                qos::wire::mark(&mut bytes);
                            }
                            if tx.start_send(bytes).is_err() {
                                break;
                            }
                            moved = true;
                        }
                        None => break,
                    },
                    Poll::Ready(Err(_)) => {
                        self.senders.remove(&peer);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        moved
    }

    /// Drives the writers' futures (each writes what its channel holds into its stream) and
    /// handles those that ended; `true` if one ended.
    fn poll_writers(&mut self, cx: &mut Context<'_>) -> bool {
        let Poll::Ready((peer, result)) = self.writers.poll_result(cx) else {
            return false;
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "gossipsub: outbound stream ended");
            self.reopen_after
                .insert(peer, Instant::now() + self.config.reopen_delay);
        }
        if self.senders.get(&peer).is_some_and(|tx| tx.is_closed()) {
            self.senders.remove(&peer);
        }
        true
    }

    /// Hands what the engine queued to the writers and writes it at once, in this poll: a
    /// forwarded message is written before the next frame is read, and without a second
    /// trip through the runtime's queue (the channel's wake-up would otherwise schedule the
    /// swarm's task again only to poll the writer).
    fn forward_now(&mut self, cx: &mut Context<'_>) {
        if self.flush_transmits(cx) {
            while self.poll_writers(cx) {}
        }
    }
}

/// The gossipsub version a stream's protocol names.
fn kind_of(protocol: &StreamProtocol) -> Option<PeerKind> {
    if *protocol == PROTOCOL_V1_2 {
        Some(PeerKind::Gossipsub1_2)
    } else if *protocol == PROTOCOL_V1_1 {
        Some(PeerKind::Gossipsub1_1)
    } else if *protocol == PROTOCOL_V1_0 {
        Some(PeerKind::Gossipsub1_0)
    } else {
        None
    }
}

/// The remote's IP address of a connection (none for relayed or non-IP ones).
fn remote_ip(endpoint: &ConnectedPoint) -> Option<IpAddr> {
    let addr = match endpoint {
        ConnectedPoint::Dialer { address } => address,
        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
    };
    if is_circuit(addr) {
        return None;
    }
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// Whether `addr` goes through a relay (its IP is the relay's, not the peer's).
fn is_circuit(addr: &meshwire_swarm::Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL_V1_2, PROTOCOL_V1_1, PROTOCOL_V1_0, QOS_PROTOCOL]
    }

    fn connection_keep_alive(
        &self,
        peer: PeerId,
        _connection: meshwire_core::ConnectionId,
    ) -> bool {
        self.engine.peer_topics(&peer).next().is_some()
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let outbound = match &event {
            FromSwarm::ConnectionEstablished { endpoint, .. } => {
                matches!(endpoint, ConnectedPoint::Dialer { .. })
            }
            _ => false,
        };
        let change = self.connections.on_swarm_event(&event);
        // The remote's IP feeds the score's IP colocation factor (P6). The engine must know
        // the peer first (its score entry), so a new peer is added before its IP.
        if let Some(ConnectionChange::Opened {
            peer, first: true, ..
        }) = change
        {
            self.engine.handle_peer_connected(
                Instant::now(),
                peer,
                PeerKind::Gossipsub1_1,
                outbound,
            );
        }
        match &event {
            // Counted per (peer, IP): a peer's IP leaves the score only with its last
            // connection from that IP.
            FromSwarm::ConnectionEstablished { peer, endpoint, .. } => {
                if let Some(ip) = remote_ip(endpoint) {
                    let n = self.ip_connections.entry((*peer, ip)).or_default();
                    *n += 1;
                    if *n == 1 {
                        self.engine.add_peer_ip(*peer, ip);
                    }
                }
            }
            FromSwarm::RemoteProtocolsChanged {
                peer, protocols, ..
            } => {
                self.engine
                    .set_peer_qos(peer, protocols.contains(&QOS_PROTOCOL));
            }
            FromSwarm::ConnectionClosed { peer, endpoint, .. } => {
                if let Some(ip) = remote_ip(endpoint) {
                    if let Some(n) = self.ip_connections.get_mut(&(*peer, ip)) {
                        *n -= 1;
                        if *n == 0 {
                            self.ip_connections.remove(&(*peer, ip));
                            self.engine.remove_peer_ip(peer, &ip);
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(ConnectionChange::Closed {
            peer, last: true, ..
        }) = change
        {
            self.engine.handle_peer_disconnected(Instant::now(), &peer);
            self.senders.remove(&peer);
            self.reopen_after.remove(&peer);
            self.inbound.remove(&peer);
            self.qos_inbound.remove(&peer);
        }
        self.wake();
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        if inbound.protocol == QOS_PROTOCOL {
            self.on_qos_inbound(inbound);
            self.wake();
            return;
        }
        let InboundStream {
            peer,
            protocol,
            mut stream,
            ..
        } = inbound;
        let token = self.inbound.entry(peer).or_insert_with(|| Arc::new(()));
        if Arc::strong_count(token) > self.config.max_inbound_streams_per_peer {
            tracing::debug!(%peer, "gossipsub: too many inbound streams; reset");
            stream.reset();
            return;
        }
        let counted = Counted {
            io: stream,
            _token: token.clone(),
        };
        if let Some(kind) = kind_of(&protocol) {
            self.engine.set_peer_kind(&peer, kind);
        }
        let max = self.config.max_transmit_size;
        if self
            .readers
            .push(peer, counted, max, self.config.idle_timeout)
            .is_err()
        {
            tracing::debug!(%peer, "gossipsub: inbound stream limit reached; dropped");
        }
        self.wake();
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let peer = result.peer;
        let mut queue = match self.outbox.take_stream(result.id) {
            Some(StreamContext::Gossip(queue)) => queue,
            Some(StreamContext::Qos(body)) => {
                self.qos_opening = self.qos_opening.saturating_sub(1);
                match result.result {
                    Ok(out) => self.on_qos_outbound(peer, out.stream, body),
                    Err(e) => tracing::debug!(%peer, error = %e, "pubsub qos: stream not opened"),
                }
                self.wake();
                return;
            }
            None => return,
        };
        match result.result {
            Ok(out) => {
                if let Some(kind) = kind_of(&out.protocol) {
                    self.engine.set_peer_kind(&peer, kind);
                }
                let mut stream = out.stream;
                let (idle, timeout) = (self.config.idle_timeout, self.config.write_timeout);
                let write = async move {
                    let result = write_frames(&mut stream, &mut queue, idle, timeout).await;
                    if result.is_err() {
                        stream.reset();
                    }
                    result
                };
                if self.writers.try_push(peer, Duration::MAX, write).is_err() {
                    self.senders.remove(&peer);
                }
            }
            Err(e) => {
                self.senders.remove(&peer);
                self.reopen_after
                    .insert(peer, Instant::now() + self.config.reopen_delay);
                if e.is_unsupported() {
                    tracing::debug!(%peer, "gossipsub: peer does not speak /meshsub");
                    self.engine.handle_peer_disconnected(Instant::now(), &peer);
                } else {
                    tracing::debug!(%peer, error = %e, "gossipsub: stream not opened");
                }
            }
        }
        self.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        // Frames and writer ends handled per call, so one busy peer cannot hold the task.
        let mut budget = 64;
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Some(event) = self.engine.poll_event() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            let due = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            if self.timer.poll_at(due, cx).is_ready() {
                self.engine.handle_timeout(Instant::now());
                self.forward_now(cx);
                continue;
            }
            if let Poll::Ready((peer, frame)) = self.readers.poll_next(cx) {
                self.on_frame(peer, frame);
                self.forward_now(cx);
                continue;
            }
            if let Poll::Ready((peer, frame)) = self.qos_readers.poll_next(cx) {
                self.on_qos_frame(peer, frame);
                continue;
            }
            if self.poll_qos_writers(cx) {
                continue;
            }
            if self.poll_writers(cx) {
                continue;
            }
            let queued = self.outbox.len();
            // RPCs handed to writers are written by the next turn's `poll_writers`, in this
            // call (not after the channel's wake-up reschedules the task).
            let moved = self.flush_transmits(cx);
            self.flush_qos();
            if moved || self.outbox.len() > queued {
                continue;
            }
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}
