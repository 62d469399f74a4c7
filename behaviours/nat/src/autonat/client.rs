//! [`Client`]: tests our candidate addresses with AutoNAT v2 servers among the connected
//! peers, answers their dial-backs, confirms reachable addresses as external addresses.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Instant;

use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Outbox, Tasks, Timeout};
use meshwire_swarm::{
    ConnectedPoint, ConnectionId, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour,
    OpenStream, OutboundStreamResult, PeerId, Stream, StreamProtocol, Timer, ToSwarm,
};
use rand::Rng;

use super::client_engine::{
    ClientConfig, ClientEngine, ClientEvent, DialBackConnection, ProbeError, ProbeReply,
    Reachability, TestResult,
};
use super::metrics::AutonatMetrics;
use super::wire::{
    decode_dial_back, encode_dial_back_response, ClientMessage, ServerMessage, MAX_DATA_CHUNK,
    MAX_DIAL_BACK_MESSAGE, MAX_MESSAGE, MIN_DIAL_DATA,
};
use super::{DIAL_BACK_PROTOCOL, DIAL_REQUEST_PROTOCOL};

/// The AutoNAT v2 client behaviour. Its events are [`TestResult`]s; a reachable address is
/// also confirmed to the swarm (`ToSwarm::ExternalAddrConfirmed`) and one found
/// unreachable again expired (`ToSwarm::ExternalAddrExpired`).
pub struct Client {
    engine: ClientEngine,
    outbox: Outbox<TestResult, u64>,
    probes: Tasks<u64, Result<ProbeReply, ProbeError>>,
    /// Per probe in flight: the connection sequence number when its request was sent.
    probe_sent_at: HashMap<u64, u64>,
    /// The open connections, as the swarm reported them.
    connections: HashMap<ConnectionId, Established>,
    /// Counts established connections: orders them against the probes' requests.
    connection_seq: u64,
    dial_backs: Tasks<DialBackKey, Result<(u64, Stream), ProbeError>>,
    answers: Tasks<u64, Result<(), ProbeError>>,
    next: u64,
    timer: Timer,
    metrics: Option<AutonatMetrics>,
}

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        let in_flight = config.max_in_flight.max(1);
        let dial_backs = config.max_dial_back_streams.max(1);
        Client {
            engine: ClientEngine::new(config, Instant::now(), rand::thread_rng().gen()),
            outbox: Outbox::new(in_flight * 2 + 8),
            probes: Tasks::new(in_flight),
            probe_sent_at: HashMap::new(),
            connections: HashMap::new(),
            connection_seq: 0,
            dial_backs: Tasks::new(dial_backs),
            answers: Tasks::new(dial_backs),
            next: 0,
            timer: Timer::default(),
            metrics: None,
        }
    }

    /// Records probes in `metrics`.
    pub fn with_metrics(mut self, metrics: AutonatMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Tests `addr` at the next tick (as a candidate reported by a peer would be).
    pub fn test_address(&mut self, addr: Multiaddr) {
        self.engine.add_candidate(addr);
    }

    /// The addresses found reachable by the last probe of each.
    pub fn reachable_addresses(&self) -> Vec<Multiaddr> {
        self.engine.reachable_addresses().cloned().collect()
    }

    /// The peers known to serve AutoNAT v2.
    pub fn servers(&self) -> Vec<PeerId> {
        self.engine.servers().copied().collect()
    }

    fn record(&self, result: &TestResult) {
        if let Some(m) = &self.metrics {
            let label = match result.result {
                Ok(Reachability::Reachable) => "reachable",
                Ok(Reachability::Unreachable(_)) => "unreachable",
                Err(_) => "error",
            };
            m.probe(label, result.bytes_sent);
        }
    }
}

/// A dial-back stream being read: its number, the peer that opened it, its connection as
/// the swarm reported it (`None`: never reported).
type DialBackKey = (u64, PeerId, Option<Established>);

/// What a dial-back's connection is judged by (see [`ClientEngine::handle_dial_back`]).
#[derive(Clone, Debug)]
struct Established {
    inbound: bool,
    relayed: bool,
    local_addr: Option<Multiaddr>,
    seq: u64,
}

impl Established {
    fn new(endpoint: &ConnectedPoint, seq: u64) -> Self {
        let local_addr = match endpoint {
            ConnectedPoint::Listener { local_addr, .. } => Some(local_addr.clone()),
            ConnectedPoint::Dialer { .. } => None,
        };
        Established {
            inbound: local_addr.is_some(),
            relayed: endpoint.is_relayed(),
            local_addr,
            seq,
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl From<Timeout> for ProbeError {
    fn from(_: Timeout) -> Self {
        ProbeError::Timeout
    }
}

fn stream_error(e: FrameError) -> ProbeError {
    if e.is_unsupported() {
        ProbeError::Unsupported
    } else {
        ProbeError::Stream(e.to_string())
    }
}

async fn read_server(stream: &mut Stream) -> Result<ServerMessage, ProbeError> {
    let bytes = read_frame(stream, MAX_MESSAGE)
        .await
        .map_err(stream_error)?
        .ok_or(ProbeError::Stream(
            "stream ended before the response".into(),
        ))?;
    Ok(ServerMessage::decode(&bytes)?)
}

/// One probe on a dial-request stream: the request, dial data if asked, the response.
async fn probe(
    mut stream: Stream,
    addr: Multiaddr,
    nonce: u64,
    max_dial_data: u64,
) -> Result<ProbeReply, ProbeError> {
    let request = ClientMessage::DialRequest {
        addrs: vec![addr],
        nonce,
    };
    write_frame(&mut stream, &request.encode())
        .await
        .map_err(stream_error)?;
    let mut bytes_sent = 0u64;
    let mut message = read_server(&mut stream).await?;
    if let ServerMessage::DialDataRequest {
        addr_idx,
        num_bytes,
    } = message
    {
        if addr_idx != 0 {
            return Err(ProbeError::Protocol(
                "dial data asked for an address we did not send",
            ));
        }
        if !(MIN_DIAL_DATA..=max_dial_data).contains(&num_bytes) {
            return Err(ProbeError::DialDataOutOfBounds(num_bytes));
        }
        while bytes_sent < num_bytes {
            let len = (num_bytes - bytes_sent).min(MAX_DATA_CHUNK as u64) as usize;
            write_frame(&mut stream, &ClientMessage::DialData { len }.encode())
                .await
                .map_err(stream_error)?;
            bytes_sent += len as u64;
        }
        message = read_server(&mut stream).await?;
    }
    let ServerMessage::DialResponse {
        status,
        addr_idx,
        dial_status,
    } = message
    else {
        return Err(ProbeError::Protocol("a second dial data request"));
    };
    if status == super::wire::ResponseStatus::Ok && addr_idx != 0 {
        return Err(ProbeError::Protocol(
            "response for an address we did not send",
        ));
    }
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok(ProbeReply {
        status,
        dial_status,
        bytes_sent,
    })
}

/// Reads the nonce of a dial-back stream.
async fn read_dial_back(mut stream: Stream) -> Result<(u64, Stream), ProbeError> {
    let bytes = read_frame(&mut stream, MAX_DIAL_BACK_MESSAGE)
        .await
        .map_err(stream_error)?
        .ok_or(ProbeError::Stream("dial-back stream ended early".into()))?;
    let nonce = decode_dial_back(&bytes)?;
    Ok((nonce, stream))
}

async fn answer_dial_back(mut stream: Stream) -> Result<(), ProbeError> {
    write_frame(&mut stream, &encode_dial_back_response())
        .await
        .map_err(stream_error)?;
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok(())
}

impl NetworkBehaviour for Client {
    type Event = TestResult;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![DIAL_BACK_PROTOCOL]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::NewExternalAddrCandidate { addr }
                if !addr
                    .iter()
                    .any(|p| matches!(p, multiaddr::Protocol::P2pCircuit)) =>
            {
                self.engine.add_candidate(addr.clone());
            }
            FromSwarm::RemoteProtocolsChanged {
                peer, protocols, ..
            } => {
                let supported = protocols.contains(&DIAL_REQUEST_PROTOCOL);
                self.engine.handle_server_protocols(peer, supported);
            }
            FromSwarm::ConnectionEstablished {
                connection,
                endpoint,
                ..
            } => {
                self.connection_seq += 1;
                let record = Established::new(endpoint, self.connection_seq);
                self.connections.insert(connection, record);
            }
            FromSwarm::ConnectionClosed {
                peer,
                connection,
                remaining_established,
                ..
            } => {
                self.connections.remove(&connection);
                if remaining_established == 0 {
                    self.engine.handle_peer_disconnected(peer);
                }
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        self.next += 1;
        // The connection as it was established (the swarm reports it before any stream).
        let established = self.connections.get(&inbound.connection).cloned();
        let key = (self.next, inbound.peer, established);
        if self
            .dial_backs
            .try_push(
                key,
                self.engine.config().dial_back_stream_timeout,
                read_dial_back(inbound.stream),
            )
            .is_err()
        {
            tracing::debug!(peer = %inbound.peer, "autonat: too many dial-back streams, dropped");
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(nonce) = self.outbox.take_stream(result.id) else {
            return;
        };
        let addr = self.engine.pending_address(nonce).cloned();
        match (result.result, addr) {
            (Ok(out), Some(addr)) => {
                // Connections established from now on are new to this probe.
                self.probe_sent_at.insert(nonce, self.connection_seq);
                let timeout = self.engine.config().probe_timeout;
                let max = self.engine.config().max_dial_data;
                if self
                    .probes
                    .try_push(nonce, timeout, probe(out.stream, addr, nonce, max))
                    .is_err()
                {
                    self.probe_sent_at.remove(&nonce);
                    let err = ProbeError::Stream("too many probes in flight".into());
                    self.engine
                        .handle_probe_result(Instant::now(), nonce, Err(err));
                }
            }
            (Ok(_), None) => {}
            (Err(e), _) => {
                let err = if e.is_unsupported() {
                    ProbeError::Unsupported
                } else {
                    ProbeError::Stream(e.to_string())
                };
                self.engine
                    .handle_probe_result(Instant::now(), nonce, Err(err));
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<TestResult>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Some(event) = self.engine.poll_event() {
                match event {
                    ClientEvent::Tested(result) => {
                        tracing::debug!(addr = %result.addr, server = %result.server, result = ?result.result, "autonat: probe ended");
                        self.record(&result);
                        return Poll::Ready(ToSwarm::GenerateEvent(result));
                    }
                    ClientEvent::Confirmed(addr) => {
                        tracing::info!(%addr, "autonat: address reachable, confirmed");
                        return Poll::Ready(ToSwarm::ExternalAddrConfirmed(addr));
                    }
                    ClientEvent::Expired(addr) => {
                        tracing::info!(%addr, "autonat: address no longer reachable");
                        return Poll::Ready(ToSwarm::ExternalAddrExpired(addr));
                    }
                }
            }
            if let Some(request) = self.engine.poll_transmit() {
                let mut open = OpenStream::new(request.server, DIAL_REQUEST_PROTOCOL);
                open.dial = false;
                if self.outbox.open_stream(open, request.nonce).is_err() {
                    let err = ProbeError::Stream("command queue full".into());
                    self.engine
                        .handle_probe_result(Instant::now(), request.nonce, Err(err));
                }
                continue;
            }
            if let Poll::Ready((nonce, result)) = self.probes.poll_result(cx) {
                self.probe_sent_at.remove(&nonce);
                self.engine
                    .handle_probe_result(Instant::now(), nonce, result);
                continue;
            }
            if let Poll::Ready(((_, peer, established), result)) = self.dial_backs.poll_result(cx) {
                match result {
                    Ok((nonce, stream)) => {
                        // A connection the swarm never reported is judged as one that
                        // existed before the request (it proves nothing).
                        let sent_at = self.probe_sent_at.get(&nonce).copied();
                        let connection = match established {
                            Some(e) => DialBackConnection {
                                peer,
                                inbound: e.inbound,
                                relayed: e.relayed,
                                after_request: sent_at.is_some_and(|at| e.seq > at),
                                local_addr: e.local_addr,
                            },
                            None => DialBackConnection {
                                peer,
                                inbound: false,
                                relayed: false,
                                after_request: false,
                                local_addr: None,
                            },
                        };
                        match self.engine.handle_dial_back(nonce, &connection) {
                            Ok(()) => {
                                self.next += 1;
                                let _ = self.answers.try_push(
                                    self.next,
                                    self.engine.config().dial_back_stream_timeout,
                                    answer_dial_back(stream),
                                );
                            }
                            Err(why) => {
                                tracing::debug!(%peer, %nonce, %why, "autonat: dial-back not believed, dropped");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "autonat: dial-back stream failed"),
                }
                continue;
            }
            if let Poll::Ready((_, Err(e))) = self.answers.poll_result(cx) {
                tracing::debug!(error = %e, "autonat: dial-back answer failed");
                continue;
            }
            let due = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            if self.timer.poll_at(due, cx).is_ready() {
                self.engine.handle_timeout(Instant::now());
                continue;
            }
            return Poll::Pending;
        }
    }
}
