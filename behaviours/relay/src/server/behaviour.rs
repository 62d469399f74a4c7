//! [`Behaviour`]: the relay server in a swarm. It answers `hop` streams (RESERVE with a
//! voucher, CONNECT by opening a `stop` stream to the destination) as the
//! [`RelayServerEngine`] admits them, and copies each circuit's bytes with
//! [`bridge`](crate::circuit::bridge) under the circuit limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_swarm::toolkit::{Outbox, Tasks, Timeout};
use meshwire_swarm::{
    FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream,
    StreamProtocol, Timer, ToSwarm,
};
use meshwire_transport::{with_peer_id, ListenerId, Multiaddr, Protocol};
use tokio::time::Instant;
use tracing::debug;

use super::{ConfigError, RelayServerEngine, ServerConfig, ServerEvent};
use crate::circuit::{bridge, CircuitEnd, CircuitEndReason, CircuitLimits, DEFAULT_BUFFER_SIZE};
use crate::protocol::io::{
    read_hop_request, read_stop_response, write_hop_response, write_stop_request, ReadError,
};
use crate::protocol::{
    HopRequest, HopResponse, Limit, ReservationInfo, Status, StopRequest, HOP_PROTOCOL,
};
use crate::server::CircuitId;
use crate::voucher::Voucher;
use crate::RelayMetrics;

const HOP: StreamProtocol = StreamProtocol::new(HOP_PROTOCOL);
const STOP: StreamProtocol = StreamProtocol::new(crate::protocol::STOP_PROTOCOL);

/// The relay server's stream handling; limits on what it admits are in [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct BehaviourConfig {
    /// Time for one exchange: reading a hop request and answering it, or the stop exchange
    /// with the destination (default 10 s, as rust-libp2p).
    pub exchange_timeout: Duration,
    /// Hop requests being read at once (default 256); more streams are dropped. Answers and
    /// stop exchanges have room of their own, so readers cannot crowd them out.
    pub max_exchanges: usize,
    /// Hop requests of one peer being read at once (default 8); its further streams are
    /// dropped, so a few peers holding idle streams cannot take every reader.
    pub max_exchanges_per_peer: usize,
    /// The copy buffer of each direction of a circuit (default
    /// [`DEFAULT_BUFFER_SIZE`](crate::circuit::DEFAULT_BUFFER_SIZE)).
    pub circuit_buffer: usize,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            exchange_timeout: Duration::from_secs(10),
            max_exchanges: 256,
            max_exchanges_per_peer: 8,
            circuit_buffer: DEFAULT_BUFFER_SIZE,
        }
    }
}

/// The relay server in a swarm: answers `hop` streams (RESERVE with a voucher, CONNECT by
/// opening a `stop` stream to the destination) as the [`RelayServerEngine`] admits them, and
/// copies each circuit's bytes with [`bridge`](crate::circuit::bridge) under the circuit
/// limits. Its events are the engine's [`ServerEvent`]s.
pub struct Behaviour {
    key: Keypair,
    engine: RelayServerEngine,
    config: BehaviourConfig,
    outbox: Outbox<ServerEvent, PendingStop>,
    /// Hop requests being read; `reading` counts them per peer.
    reads: Tasks<Key, Exchange>,
    reading: HashMap<PeerId, usize>,
    /// Answers being written (each follows a read or a refused circuit).
    answers: Tasks<Key, Exchange>,
    /// Stop exchanges with destinations (at most one per admitted circuit).
    stops: Tasks<Key, Exchange>,
    circuits: Tasks<CircuitId, CircuitEnd>,
    /// Every connection: its peer, remote IP and whether it is itself relayed.
    connections: HashMap<ConnectionId, Remote>,
    external_addrs: Vec<Multiaddr>,
    /// Our listen addresses, offered in reservations while no external address is confirmed
    /// (rust-libp2p's client refuses a reservation without addresses).
    listen_addrs: Vec<(ListenerId, Multiaddr)>,
    timer: Timer,
    next: u64,
}

#[derive(Clone, Copy)]
struct Remote {
    ip: Option<IpAddr>,
    relayed: bool,
}

/// A circuit waiting for its stop stream.
struct PendingStop {
    id: CircuitId,
    src: PeerId,
    src_stream: Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Read(PeerId, u64),
    Answer(u64),
    Stop(CircuitId),
}

enum Exchange {
    Request {
        peer: PeerId,
        connection: ConnectionId,
        stream: Stream,
        request: Result<HopRequest, ReadError>,
    },
    Answered,
    Stop {
        id: CircuitId,
        /// Both streams when the destination accepted.
        accepted: Result<(Stream, Stream), Status>,
    },
}

impl Behaviour {
    /// A relay signing vouchers with `key`, admitting what `config` allows.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a configuration that cannot work.
    pub fn new(key: Keypair, config: ServerConfig) -> Result<Self, ConfigError> {
        Self::with_config(key, config, BehaviourConfig::default())
    }

    /// [`Behaviour::new`] with explicit stream handling limits.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a configuration that cannot work.
    pub fn with_config(
        key: Keypair,
        config: ServerConfig,
        io: BehaviourConfig,
    ) -> Result<Self, ConfigError> {
        let circuits = config.max_circuits;
        Ok(Behaviour {
            key,
            engine: RelayServerEngine::new(config)?,
            outbox: Outbox::new(circuits + 64),
            reads: Tasks::new(io.max_exchanges),
            reading: HashMap::new(),
            answers: Tasks::new(io.max_exchanges.saturating_add(circuits)),
            stops: Tasks::new(circuits.max(1)),
            circuits: Tasks::new(circuits.max(1)),
            config: io,
            connections: HashMap::new(),
            external_addrs: Vec::new(),
            listen_addrs: Vec::new(),
            timer: Timer::default(),
            next: 0,
        })
    }

    /// Reports to `metrics` (see [`RelayMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.engine = self.engine.with_metrics(metrics);
        self
    }

    /// The engine: reservations and circuits held now.
    pub fn engine(&self) -> &RelayServerEngine {
        &self.engine
    }

    fn next_key(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Writes `response` on `stream` and closes it, as a task.
    fn answer(&mut self, mut stream: Stream, response: HopResponse) {
        let n = self.next_key();
        let fut = async move {
            let _ = write_hop_response(&mut stream, &response).await;
            let _ = stream.close().await;
            Exchange::Answered
        };
        if self
            .answers
            .try_push(Key::Answer(n), self.config.exchange_timeout, fut)
            .is_err()
        {
            debug!("relay: exchange limit reached; answer dropped");
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        stream: Stream,
        request: Result<HopRequest, ReadError>,
    ) {
        let remote = self.connections.get(&connection).copied();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, "relay: bad hop request: {e}");
                if let Some(status) = e.status() {
                    self.answer(stream, HopResponse::refused(status));
                }
                return;
            }
        };
        // A circuit over a circuit is not relayed (as in rust-libp2p and go-libp2p).
        if remote.is_none_or(|r| r.relayed) {
            self.answer(stream, HopResponse::refused(Status::PermissionDenied));
            return;
        }
        let ip = remote.and_then(|r| r.ip);
        let now = Instant::now().into_std();
        match request {
            HopRequest::Reserve => match self.engine.handle_reserve(now, peer, connection, ip) {
                Ok(accepted) => {
                    let local = self.key.peer_id();
                    let own: Vec<&Multiaddr> = if self.external_addrs.is_empty() {
                        self.listen_addrs.iter().map(|(_, a)| a).collect()
                    } else {
                        self.external_addrs.iter().collect()
                    };
                    let addrs = own.into_iter().map(|a| with_peer_id(a, local)).collect();
                    let reservation = ReservationInfo {
                        expire: accepted.expire_unix,
                        addrs,
                        voucher: Some(Voucher::sign(&self.key, peer, accepted.expire_unix)),
                    };
                    let limit = self.engine.circuit_limit();
                    self.answer(stream, HopResponse::reserved(reservation, limit));
                }
                Err(refusal) => self.answer(stream, HopResponse::refused(refusal.status())),
            },
            HopRequest::Connect { dst } => {
                match self.engine.handle_connect(now, peer, connection, ip, dst) {
                    Ok(accepted) => {
                        let request = OpenStream::new(dst, STOP)
                            .on_connection(accepted.dst_connection)
                            .no_dial();
                        let pending = PendingStop {
                            id: accepted.id,
                            src: peer,
                            src_stream: stream,
                        };
                        if let Err(e) = self.outbox.open_stream(request, pending) {
                            debug!("relay: outbox full ({e}); circuit dropped");
                            self.engine.handle_circuit_closed(
                                accepted.id,
                                CircuitEnd::stop_refused(Status::ResourceLimitExceeded),
                            );
                        }
                    }
                    Err(refusal) => self.answer(stream, HopResponse::refused(refusal.status())),
                }
            }
        }
    }

    fn on_exchange(&mut self, key: Key, out: Result<Exchange, Timeout>) {
        match (key, out) {
            (
                _,
                Ok(Exchange::Request {
                    peer,
                    connection,
                    stream,
                    request,
                }),
            ) => self.on_request(peer, connection, stream, request),
            (_, Ok(Exchange::Stop { id, accepted })) => match accepted {
                Ok((src, dst)) => {
                    self.engine.handle_circuit_established(id);
                    let limits: CircuitLimits = self.engine.circuit_limits();
                    let buf = self.config.circuit_buffer;
                    let copy = bridge(src, dst, limits, buf);
                    if self.circuits.try_push(id, Duration::MAX, copy).is_err() {
                        // The engine admits at most max_circuits; this cannot be reached.
                        self.engine.handle_circuit_closed(
                            id,
                            CircuitEnd::stop_refused(Status::ResourceLimitExceeded),
                        );
                    }
                }
                Err(status) => {
                    self.engine
                        .handle_circuit_closed(id, CircuitEnd::stop_refused(status));
                }
            },
            (Key::Stop(id), Err(_)) => {
                self.engine
                    .handle_circuit_closed(id, CircuitEnd::stop_refused(Status::ConnectionFailed));
            }
            (_, Ok(Exchange::Answered)) | (_, Err(_)) => {}
        }
    }
}

/// The stop exchange with the destination; on success the source hears OK and both streams
/// are returned for copying.
async fn stop_exchange(
    id: CircuitId,
    src: PeerId,
    mut src_stream: Stream,
    mut dst_stream: Stream,
    limit: Option<Limit>,
) -> Exchange {
    let answer = async {
        write_stop_request(&mut dst_stream, &StopRequest { src, limit })
            .await
            .map_err(|_| Status::ConnectionFailed)?;
        let response = read_stop_response(&mut dst_stream)
            .await
            .map_err(|_| Status::ConnectionFailed)?;
        if response.status != Status::Ok {
            return Err(response.status);
        }
        Ok(())
    }
    .await;
    match answer {
        Ok(()) => {
            if write_hop_response(&mut src_stream, &HopResponse::connected(limit))
                .await
                .is_err()
            {
                return Exchange::Stop {
                    id,
                    accepted: Err(Status::ConnectionFailed),
                };
            }
            Exchange::Stop {
                id,
                accepted: Ok((src_stream, dst_stream)),
            }
        }
        Err(status) => {
            // The source hears CONNECTION_FAILED whatever the destination said.
            let _ = write_hop_response(
                &mut src_stream,
                &HopResponse::refused(Status::ConnectionFailed),
            )
            .await;
            let _ = src_stream.close().await;
            Exchange::Stop {
                id,
                accepted: Err(status),
            }
        }
    }
}

/// Whether peers can dial `addr` directly: an IP address that is not a wildcard (`0.0.0.0`,
/// `::`) and not itself a circuit.
fn is_direct(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| !ip.is_unspecified()) && !meshwire_transport::is_circuit_addr(addr)
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = ServerEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![HOP]
    }

    fn connection_keep_alive(&self, _peer: PeerId, connection: ConnectionId) -> bool {
        self.engine
            .reservations()
            .any(|r| r.connection == connection)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                connection,
                endpoint,
                ..
            } => {
                self.connections.insert(
                    connection,
                    Remote {
                        ip: ip_of(endpoint.remote_addr()),
                        relayed: endpoint.is_relayed(),
                    },
                );
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                self.connections.remove(&connection);
                // Circuits on it end when their streams fail; their tasks report them.
                let _ = self.engine.handle_connection_closed(peer, connection);
            }
            FromSwarm::ExternalAddrConfirmed { addr }
                if !self.external_addrs.contains(addr)
                    && self.external_addrs.len() < crate::protocol::MAX_ADDRS =>
            {
                self.external_addrs.push(addr.clone());
            }
            FromSwarm::ExternalAddrExpired { addr } => self.external_addrs.retain(|a| a != addr),
            FromSwarm::NewListenAddr { listener, addr }
                if is_direct(addr)
                    && !self.listen_addrs.iter().any(|(_, a)| a == addr)
                    && self.listen_addrs.len() < crate::protocol::MAX_ADDRS =>
            {
                self.listen_addrs.push((listener, addr.clone()));
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                self.listen_addrs.retain(|(l, _)| *l != listener)
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            mut stream,
            ..
        } = inbound;
        let n = self.next_key();
        let fut = async move {
            let request = read_hop_request(&mut stream).await;
            Exchange::Request {
                peer,
                connection,
                stream,
                request,
            }
        };
        let reading = self.reading.get(&peer).copied().unwrap_or(0);
        if reading >= self.config.max_exchanges_per_peer {
            debug!(%peer, "relay: the peer's hop requests being read are at their limit; stream dropped");
            return;
        }
        if self
            .reads
            .try_push(Key::Read(peer, n), self.config.exchange_timeout, fut)
            .is_err()
        {
            debug!(%peer, "relay: exchange limit reached; hop stream dropped");
            return;
        }
        *self.reading.entry(peer).or_insert(0) += 1;
    }

    fn on_outbound_stream(&mut self, res: OutboundStreamResult) {
        let Some(PendingStop {
            id,
            src,
            src_stream,
        }) = self.outbox.take_stream(res.id)
        else {
            return;
        };
        let limit = self.engine.circuit_limit();
        match res.result {
            Ok(dst) => {
                let fut = stop_exchange(id, src, src_stream, dst.stream, limit);
                if self
                    .stops
                    .try_push(Key::Stop(id), self.config.exchange_timeout, fut)
                    .is_err()
                {
                    self.engine.handle_circuit_closed(
                        id,
                        CircuitEnd::stop_refused(Status::ResourceLimitExceeded),
                    );
                }
            }
            Err(e) => {
                debug!(%src, circuit = %id, "relay: no stop stream to the destination: {e}");
                self.engine
                    .handle_circuit_closed(id, CircuitEnd::stop_refused(Status::ConnectionFailed));
                self.answer(src_stream, HopResponse::refused(Status::ConnectionFailed));
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<ServerEvent>> {
        loop {
            if let Some(event) = self.engine.poll_event() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Poll::Ready((key, out)) = self.stops.poll_next(cx) {
                self.on_exchange(key, out);
                continue;
            }
            if let Poll::Ready((key, out)) = self.answers.poll_next(cx) {
                self.on_exchange(key, out);
                continue;
            }
            if let Poll::Ready((key, out)) = self.reads.poll_next(cx) {
                if let Key::Read(peer, _) = key {
                    if let Some(n) = self.reading.get_mut(&peer) {
                        *n -= 1;
                        if *n == 0 {
                            self.reading.remove(&peer);
                        }
                    }
                }
                self.on_exchange(key, out);
                continue;
            }
            if let Poll::Ready((id, out)) = self.circuits.poll_next(cx) {
                let end = out.unwrap_or(CircuitEnd {
                    bytes_a_to_b: 0,
                    bytes_b_to_a: 0,
                    reason: CircuitEndReason::DurationLimit,
                });
                self.engine.handle_circuit_closed(id, end);
                continue;
            }
            let due = self.engine.poll_timeout().map(Instant::from_std);
            if self.timer.poll_at(due, cx).is_ready() {
                self.engine.handle_timeout(Instant::now().into_std());
                continue;
            }
            return Poll::Pending;
        }
    }
}
