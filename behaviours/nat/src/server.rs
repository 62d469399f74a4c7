//! [`NatProbeServer`]: answers `/meshwire/natprobe/1.0.0` requests — the observed address of
//! the requesting connection, and dial-backs from its other sockets (`docs/natprobe.md`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Tasks, Timeout};
use meshwire_swarm::{
    ConnectionId, FromSwarm, InboundStream, NetworkBehaviour, PeerId, StreamProtocol, ToSwarm,
};
use meshwire_transport::quic::{multiaddr_to_socketaddr, socketaddr_to_multiaddr, QuicTransport};
use meshwire_transport::Transport;

use crate::metrics::NatProbeMetrics;
use crate::wire::{DialBackFrom, DialBackStatus, Request, Response, WireError, MAX_MESSAGE};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshwire/natprobe/1.0.0");

/// The server's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Requests one peer may make per [`ServerConfig::window`] (default 16); more streams
    /// are dropped unread.
    pub requests_per_peer: u32,
    /// The window of `requests_per_peer` (default 60 s).
    pub window: Duration,
    /// Dial-backs started per second, all peers together (default 8); more are answered
    /// [`DialBackStatus::Refused`].
    pub dial_backs_per_second: u32,
    /// Requests handled at once (default 64); more streams are dropped.
    pub max_concurrent: usize,
    /// Time to read a request and write a response (default 10 s).
    pub request_timeout: Duration,
    /// Time a dial-back handshake may take before it counts as not reached (default 3 s).
    pub dial_back_timeout: Duration,
    /// Peers whose request counts are kept (default 1024; expired windows go first).
    pub max_tracked_peers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            requests_per_peer: 16,
            window: Duration::from_secs(60),
            dial_backs_per_second: 8,
            max_concurrent: 64,
            request_timeout: Duration::from_secs(10),
            dial_back_timeout: Duration::from_secs(3),
            max_tracked_peers: 1024,
        }
    }
}

/// A request served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    /// Who asked.
    pub peer: PeerId,
    /// What it asked and what it was told, or why the exchange failed.
    pub outcome: Result<(Request, Response), ServeError>,
}

/// Why a request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The request was not a message.
    #[error("bad request: {0}")]
    Wire(#[from] WireError),
    /// The stream ended before a request.
    #[error("no request")]
    NoRequest,
    /// The connection's observed address is not an IP and UDP port.
    #[error("no observed address")]
    NoObservedAddress,
    /// The time limit passed.
    #[error("timed out")]
    Timeout,
}

impl From<FrameError> for ServeError {
    fn from(e: FrameError) -> Self {
        ServeError::Stream(e.to_string())
    }
}

impl From<Timeout> for ServeError {
    fn from(_: Timeout) -> Self {
        ServeError::Timeout
    }
}

/// The dial-back sockets and their rate limit, shared with the request tasks.
struct DialBackers {
    other_port: Option<QuicTransport>,
    other_address: Option<QuicTransport>,
    per_second: u32,
    second: Option<Instant>,
    started: u32,
}

impl DialBackers {
    /// Starts a dial to `target` (peer `peer`) from the socket `from`, if there is one and
    /// the rate allows.
    fn start(
        &mut self,
        from: DialBackFrom,
        target: SocketAddr,
        peer: PeerId,
        now: Instant,
    ) -> Result<meshwire_transport::PendingConnection, DialBackStatus> {
        let transport = match from {
            DialBackFrom::OtherPort => self.other_port.as_mut(),
            DialBackFrom::OtherAddress => self.other_address.as_mut(),
        }
        .ok_or(DialBackStatus::Unavailable)?;
        let same_second = matches!(self.second, Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1));
        if !same_second {
            self.second = Some(now);
            self.started = 0;
        }
        if self.started >= self.per_second {
            return Err(DialBackStatus::Refused);
        }
        self.started += 1;
        transport
            .dial(&socketaddr_to_multiaddr(target), Some(peer))
            .map_err(|_| DialBackStatus::NotReached)
    }
}

/// The probe server behaviour.
pub struct NatProbeServer {
    config: ServerConfig,
    dial_backers: Arc<Mutex<DialBackers>>,
    observed: HashMap<ConnectionId, SocketAddr>,
    counts: HashMap<PeerId, (Instant, u32)>,
    tasks: Tasks<(PeerId, u64), Result<(Request, Response), ServeError>>,
    next: u64,
    metrics: Option<NatProbeMetrics>,
}

impl NatProbeServer {
    /// A server answering observe requests; dial-backs need [`NatProbeServer::with_dial_back`].
    pub fn new(config: ServerConfig) -> Self {
        NatProbeServer {
            config,
            dial_backers: Arc::new(Mutex::new(DialBackers {
                other_port: None,
                other_address: None,
                per_second: config.dial_backs_per_second,
                second: None,
                started: 0,
            })),
            observed: HashMap::new(),
            counts: HashMap::new(),
            tasks: Tasks::new(config.max_concurrent),
            next: 0,
            metrics: None,
        }
    }

    /// Dials back `from` a `transport` that already listens on that socket (another port
    /// of the server's IP, or another IP). Its identity should be its own key: the client's
    /// swarm sees the dial-back as an ordinary inbound connection.
    pub fn with_dial_back(self, from: DialBackFrom, transport: QuicTransport) -> Self {
        if let Ok(mut d) = self.dial_backers.lock() {
            match from {
                DialBackFrom::OtherPort => d.other_port = Some(transport),
                DialBackFrom::OtherAddress => d.other_address = Some(transport),
            }
        }
        self
    }

    /// Records requests served and streams dropped in `metrics`.
    pub fn with_metrics(mut self, metrics: NatProbeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn dropped(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.dropped(reason);
        }
    }

    /// Counts a request of `peer`; `false` past its limit.
    fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        let window = self.config.window;
        if self.counts.len() >= self.config.max_tracked_peers && !self.counts.contains_key(&peer) {
            self.counts
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.counts.len() >= self.config.max_tracked_peers {
                return false;
            }
        }
        let entry = self.counts.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.config.requests_per_peer
    }
}

impl Default for NatProbeServer {
    fn default() -> Self {
        NatProbeServer::new(ServerConfig::default())
    }
}

/// Reads one request, answers it.
async fn serve(
    mut stream: meshwire_swarm::Stream,
    peer: PeerId,
    observed: SocketAddr,
    dial_backers: Arc<Mutex<DialBackers>>,
    dial_back_timeout: Duration,
) -> Result<(Request, Response), ServeError> {
    let bytes = read_frame(&mut stream, MAX_MESSAGE)
        .await?
        .ok_or(ServeError::NoRequest)?;
    let request = Request::decode(&bytes)?;
    let response = match request {
        Request::Observe => Response::Observed(observed),
        Request::DialBack(from) => {
            let started = match dial_backers.lock() {
                Ok(mut d) => d.start(from, observed, peer, Instant::now()),
                Err(_) => Err(DialBackStatus::Unavailable),
            };
            let status = match started {
                Err(status) => status,
                Ok(dial) => match tokio::time::timeout(dial_back_timeout, dial).await {
                    Ok(Ok(conn)) => {
                        conn.close(0, "natprobe dial-back");
                        DialBackStatus::Reached
                    }
                    _ => DialBackStatus::NotReached,
                },
            };
            tracing::debug!(%peer, %observed, ?from, ?status, "natprobe dial-back");
            Response::DialBack(status)
        }
    };
    write_frame(&mut stream, &response.encode()).await?;
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok((request, response))
}

impl NetworkBehaviour for NatProbeServer {
    type Event = ServerEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                connection,
                endpoint,
                ..
            } => {
                if let Some(addr) = multiaddr_to_socketaddr(endpoint.remote_addr()) {
                    self.observed.insert(connection, addr);
                }
            }
            FromSwarm::ConnectionClosed { connection, .. } => {
                self.observed.remove(&connection);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let peer = inbound.peer;
        if !self.admit(peer, Instant::now()) {
            tracing::debug!(%peer, "natprobe: request limit, stream dropped");
            self.dropped("rate_limit");
            return;
        }
        let Some(observed) = self.observed.get(&inbound.connection).copied() else {
            tracing::debug!(%peer, "natprobe: no observed address for the connection");
            self.dropped("no_address");
            return;
        };
        self.next += 1;
        let fut = serve(
            inbound.stream,
            peer,
            observed,
            self.dial_backers.clone(),
            self.config.dial_back_timeout,
        );
        if self
            .tasks
            .try_push((peer, self.next), self.config.request_timeout, fut)
            .is_err()
        {
            tracing::debug!(%peer, "natprobe: too many requests at once, stream dropped");
            self.dropped("busy");
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<ServerEvent>> {
        let metrics = &self.metrics;
        self.tasks.poll_result(cx).map(|((peer, _), outcome)| {
            if let Some(m) = metrics {
                m.served(outcome.as_ref().map_err(|_| ()));
            }
            ToSwarm::GenerateEvent(ServerEvent { peer, outcome })
        })
    }
}
