//! [`Server`]: answers `/libp2p/autonat/2/dial-request` — asks for dial data when the
//! address's IP is not the one the request came from, dials the address on a new QUIC
//! connection from a socket of its own (a fresh port, as rust-libp2p's `allocate_new_port`),
//! delivers the nonce on `/libp2p/autonat/2/dial-back` and reports the outcome.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meshwire_core::Keypair;
use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Tasks};
use meshwire_swarm::{
    ConnectionId, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour, PeerId, StreamProtocol,
    ToSwarm,
};
use meshwire_transport::quic::{socketaddr_to_multiaddr, QuicConfig, QuicTransport};
use meshwire_transport::{Transport, TransportError};
use rand::Rng;

use super::metrics::AutonatMetrics;
use super::server_engine::{Plan, Refusal, ServerConfig, ServerEngine};
use super::wire::{
    decode_dial_back_response, encode_dial_back, ClientMessage, DialStatus, ResponseStatus,
    ServerMessage, WireError, MAX_DIAL_BACK_MESSAGE, MAX_MESSAGE,
};
use super::{DIAL_BACK_PROTOCOL, DIAL_REQUEST_PROTOCOL};

/// A request served (or refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    /// Who asked.
    pub client: PeerId,
    /// The address dialed, if one was chosen.
    pub tested: Option<Multiaddr>,
    /// Dial data received.
    pub data_received: u64,
    /// What became of the dial-back, or why there was none.
    pub result: Result<DialStatus, ServeError>,
}

/// Why a request ended without a dial-back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// Answered `E_REQUEST_REJECTED`: a limit.
    #[error("rejected: {0}")]
    Rejected(Refusal),
    /// Answered `E_DIAL_REFUSED`: no address this server dials.
    #[error("no address to dial")]
    DialRefused,
    /// The client broke the protocol (answered `E_REQUEST_REJECTED` where it could be).
    #[error("bad message: {0}")]
    Wire(#[from] WireError),
    /// The stream ended before the request or inside the dial data.
    #[error("stream ended early")]
    Ended,
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// [`ServerConfig::request_timeout`] passed.
    #[error("timed out")]
    Timeout,
}

impl From<FrameError> for ServeError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Truncated => ServeError::Ended,
            other => ServeError::Stream(other.to_string()),
        }
    }
}

/// The AutoNAT v2 server behaviour.
pub struct Server {
    engine: ServerEngine,
    dialer: Arc<Mutex<QuicTransport>>,
    observed: HashMap<ConnectionId, Multiaddr>,
    tasks: Tasks<(PeerId, bool, u64), ServerEvent>,
    next: u64,
    metrics: Option<AutonatMetrics>,
}

impl Server {
    /// A server with `config`'s limits, dialing back as `key` (the node's own key: the
    /// client sees a new connection from the server's peer id) from a QUIC socket bound
    /// to an ephemeral port, never the listening one.
    ///
    /// # Errors
    ///
    /// The QUIC dialer could not be made from `key`.
    pub fn new(config: ServerConfig, key: Keypair) -> Result<Self, TransportError> {
        let dialer = QuicTransport::new(key, QuicConfig::default())?;
        // Answers to refused requests are short tasks too: room for as many again.
        let tasks = Tasks::new(config.max_concurrent.saturating_mul(2).max(1));
        Ok(Server {
            engine: ServerEngine::new(config),
            dialer: Arc::new(Mutex::new(dialer)),
            observed: HashMap::new(),
            tasks,
            next: 0,
            metrics: None,
        })
    }

    /// Records requests in `metrics`.
    pub fn with_metrics(mut self, metrics: AutonatMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The admission state.
    pub fn engine(&self) -> &ServerEngine {
        &self.engine
    }
}

/// Reads the request, refuses it with `E_REQUEST_REJECTED`.
async fn reject(
    mut stream: meshwire_swarm::Stream,
    client: PeerId,
    refusal: Refusal,
) -> ServerEvent {
    let _ = read_frame(&mut stream, MAX_MESSAGE).await;
    let _ = respond(
        &mut stream,
        ResponseStatus::RequestRejected,
        0,
        DialStatus::Unused,
    )
    .await;
    ServerEvent {
        client,
        tested: None,
        data_received: 0,
        result: Err(ServeError::Rejected(refusal)),
    }
}

async fn respond(
    stream: &mut meshwire_swarm::Stream,
    status: ResponseStatus,
    addr_idx: u32,
    dial_status: DialStatus,
) -> Result<(), ServeError> {
    let msg = ServerMessage::DialResponse {
        status,
        addr_idx,
        dial_status,
    };
    write_frame(stream, &msg.encode()).await?;
    let _ = futures::AsyncWriteExt::close(stream).await;
    Ok(())
}

/// What a serving task needs besides the stream.
struct Job {
    client: PeerId,
    observed: Multiaddr,
    config: ServerConfig,
    draw: u64,
    dialer: Arc<Mutex<QuicTransport>>,
}

async fn serve(mut stream: meshwire_swarm::Stream, job: Job) -> ServerEvent {
    let mut event = ServerEvent {
        client: job.client,
        tested: None,
        data_received: 0,
        result: Err(ServeError::Ended),
    };
    event.result = serve_inner(&mut stream, &job, &mut event).await;
    if let Err(e) = &event.result {
        let status = match e {
            ServeError::DialRefused => Some(ResponseStatus::DialRefused),
            ServeError::Wire(_) => Some(ResponseStatus::RequestRejected),
            _ => None,
        };
        if let Some(status) = status {
            let _ = respond(&mut stream, status, 0, DialStatus::Unused).await;
        }
    }
    event
}

async fn serve_inner(
    stream: &mut meshwire_swarm::Stream,
    job: &Job,
    event: &mut ServerEvent,
) -> Result<DialStatus, ServeError> {
    let bytes = read_frame(stream, MAX_MESSAGE)
        .await?
        .ok_or(ServeError::Ended)?;
    let (addrs, nonce) = match ClientMessage::decode(&bytes)? {
        ClientMessage::DialRequest { addrs, nonce } => (addrs, nonce),
        ClientMessage::DialData { .. } => {
            return Err(ServeError::Wire(WireError::Unexpected {
                expected: "DialRequest",
            }))
        }
    };
    let (idx, addr, target, dial_data) =
        match job.config.plan(job.client, &job.observed, &addrs, job.draw) {
            Plan::Refuse => return Err(ServeError::DialRefused),
            Plan::Dial {
                idx,
                addr,
                target,
                dial_data,
            } => (idx, addr, target, dial_data),
        };
    event.tested = Some(addr);
    if let Some(wanted) = dial_data {
        let ask = ServerMessage::DialDataRequest {
            addr_idx: idx,
            num_bytes: wanted,
        };
        write_frame(stream, &ask.encode()).await?;
        while event.data_received < wanted {
            let bytes = read_frame(stream, MAX_MESSAGE)
                .await?
                .ok_or(ServeError::Ended)?;
            match ClientMessage::decode(&bytes)? {
                ClientMessage::DialData { len } => event.data_received += len as u64,
                ClientMessage::DialRequest { .. } => {
                    return Err(ServeError::Wire(WireError::Unexpected {
                        expected: "DialDataResponse",
                    }))
                }
            }
        }
    }
    let status = dial_back(
        &job.dialer,
        target,
        job.client,
        nonce,
        job.config.dial_back_timeout,
    )
    .await;
    tracing::debug!(client = %job.client, %target, ?status, data = event.data_received, "autonat: dial-back");
    respond(stream, ResponseStatus::Ok, idx, status).await?;
    Ok(status)
}

/// Dials `target` on a new connection, delivers `nonce`, waits for the answer.
async fn dial_back(
    dialer: &Mutex<QuicTransport>,
    target: SocketAddr,
    client: PeerId,
    nonce: u64,
    limit: Duration,
) -> DialStatus {
    let deadline = tokio::time::Instant::now() + limit;
    let pending = match dialer.lock() {
        Ok(mut d) => d.dial(&socketaddr_to_multiaddr(target), Some(client)),
        Err(_) => return DialStatus::DialError,
    };
    let Ok(pending) = pending else {
        return DialStatus::DialError;
    };
    let conn = match tokio::time::timeout_at(deadline, pending).await {
        Ok(Ok(conn)) => conn,
        _ => return DialStatus::DialError,
    };
    let exchange = async {
        let (_, mut s) = conn
            .open_negotiated([DIAL_BACK_PROTOCOL.as_ref()], limit)
            .await
            .map_err(|_| ())?;
        write_frame(&mut s, &encode_dial_back(nonce))
            .await
            .map_err(|_| ())?;
        let answer = read_frame(&mut s, MAX_DIAL_BACK_MESSAGE)
            .await
            .map_err(|_| ())?
            .ok_or(())?;
        decode_dial_back_response(&answer).map_err(|_| ())
    };
    let result = tokio::time::timeout_at(deadline, exchange).await;
    conn.close(0, "autonat dial-back done");
    match result {
        Ok(Ok(())) => DialStatus::Ok,
        _ => DialStatus::DialBackError,
    }
}

impl NetworkBehaviour for Server {
    type Event = ServerEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![DIAL_REQUEST_PROTOCOL]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                connection,
                endpoint,
                ..
            } if !endpoint.is_relayed() => {
                self.observed
                    .insert(connection, endpoint.remote_addr().clone());
            }
            FromSwarm::ConnectionClosed { connection, .. } => {
                self.observed.remove(&connection);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let client = inbound.peer;
        self.next += 1;
        let timeout = self.engine.config().request_timeout;
        let Some(observed) = self.observed.get(&inbound.connection).cloned() else {
            // A relayed connection: the server cannot tell the client's IP.
            let fut = reject(inbound.stream, client, Refusal::Relayed);
            if self
                .tasks
                .try_push((client, false, self.next), timeout, fut)
                .is_err()
            {
                tracing::debug!(%client, "autonat: too many requests, stream dropped");
            }
            return;
        };
        match self.engine.handle_request(Instant::now(), client) {
            Ok(()) => {
                let job = Job {
                    client,
                    observed,
                    config: self.engine.config().clone(),
                    draw: rand::thread_rng().gen(),
                    dialer: self.dialer.clone(),
                };
                if self
                    .tasks
                    .try_push(
                        (client, true, self.next),
                        timeout,
                        serve(inbound.stream, job),
                    )
                    .is_err()
                {
                    self.engine.handle_finished(client);
                    tracing::debug!(%client, "autonat: too many requests, stream dropped");
                }
            }
            Err(refusal) => {
                tracing::debug!(%client, %refusal, "autonat: request rejected");
                let fut = reject(inbound.stream, client, refusal);
                if self
                    .tasks
                    .try_push((client, false, self.next), timeout, fut)
                    .is_err()
                {
                    tracing::debug!(%client, "autonat: too many requests, stream dropped");
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<ServerEvent>> {
        let Poll::Ready(((client, admitted, _), outcome)) = self.tasks.poll_next(cx) else {
            return Poll::Pending;
        };
        if admitted {
            self.engine.handle_finished(client);
        }
        let event = outcome.unwrap_or(ServerEvent {
            client,
            tested: None,
            data_received: 0,
            result: Err(ServeError::Timeout),
        });
        if let Some(m) = &self.metrics {
            let result = match &event.result {
                Ok(DialStatus::Ok) => "ok",
                Ok(DialStatus::DialError) => "dial_error",
                Ok(DialStatus::DialBackError) => "dial_back_error",
                Ok(DialStatus::Unused) => "error",
                Err(ServeError::DialRefused) => "refused",
                Err(ServeError::Rejected(_)) => "rejected",
                Err(_) => "error",
            };
            m.request(result, event.data_received);
        }
        Poll::Ready(ToSwarm::GenerateEvent(event))
    }
}
