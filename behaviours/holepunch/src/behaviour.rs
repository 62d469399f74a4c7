//! The swarm behaviour: the [`HolepunchEngine`] driven by relayed connections, streams and
//! dials (documented on [`Behaviour`]).

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::AsyncWriteExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Outbox, Tasks, Timeout};
use meshwire_swarm::{
    DialOpts, FromSwarm, InboundStream, ListenerId, NetworkBehaviour, OpenStream,
    OutboundStreamResult, PeerCondition, Stream, StreamProtocol, Timer, ToSwarm,
};
use multiaddr::{Multiaddr, Protocol};
use tracing::debug;

use crate::engine::{
    Action, AttemptOutcome, HolepunchConfig, HolepunchEngine, HolepunchEvent, Role,
};
use crate::metrics::HolepunchMetrics;
use crate::protocol::{self, connect_addrs, DecodeError, EncodeError, Message, MAX_MESSAGE_SIZE};

/// `/libp2p/dcutr`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(protocol::PROTOCOL_NAME);

/// Observed address candidates kept (the latest, as rust-libp2p).
const MAX_CANDIDATES: usize = 20;

/// The behaviour's settings: the engine's ([`HolepunchConfig`]).
pub type Config = HolepunchConfig;

/// What the behaviour reports: the engine's events.
pub type Event = HolepunchEvent;

/// Why a stream exchange failed.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("stream closed before {0}")]
    Closed(&'static str),
    #[error("unexpected {0}")]
    Unexpected(&'static str),
}

impl From<Timeout> for ExchangeError {
    fn from(t: Timeout) -> Self {
        ExchangeError::Frame(FrameError::Timeout(t))
    }
}

impl From<ExchangeError> for AttemptOutcome {
    fn from(e: ExchangeError) -> Self {
        match &e {
            ExchangeError::Frame(f) if f.is_unsupported() => AttemptOutcome::Unsupported,
            _ => AttemptOutcome::ExchangeFailed(e.to_string()),
        }
    }
}

/// The result of an exchange: the remote's addresses and, for the initiator, the RTT.
type ExchangeResult = Result<(Vec<Multiaddr>, Option<Duration>), ExchangeError>;

async fn read_message(
    stream: &mut Stream,
    expecting: &'static str,
) -> Result<Message, ExchangeError> {
    let frame = read_frame(stream, MAX_MESSAGE_SIZE)
        .await?
        .ok_or(ExchangeError::Closed(expecting))?;
    Ok(protocol::decode(&frame)?)
}

/// The initiator's side: CONNECT, CONNECT (timed), SYNC.
async fn initiate(mut stream: Stream, ours: Vec<Multiaddr>) -> ExchangeResult {
    write_frame(&mut stream, &protocol::encode(&Message::Connect(ours))?).await?;
    let sent = tokio::time::Instant::now();
    let addrs = match read_message(&mut stream, "CONNECT").await? {
        Message::Connect(addrs) => addrs,
        Message::Sync => return Err(ExchangeError::Unexpected("SYNC")),
    };
    let rtt = sent.elapsed();
    write_frame(&mut stream, &protocol::encode(&Message::Sync)?).await?;
    let _ = stream.close().await;
    Ok((addrs, Some(rtt)))
}

/// The responder's side: CONNECT in, CONNECT out, SYNC in.
async fn respond(mut stream: Stream, ours: Vec<Multiaddr>) -> ExchangeResult {
    let addrs = match read_message(&mut stream, "CONNECT").await? {
        Message::Connect(addrs) => addrs,
        Message::Sync => return Err(ExchangeError::Unexpected("SYNC")),
    };
    write_frame(&mut stream, &protocol::encode(&Message::Connect(ours))?).await?;
    match read_message(&mut stream, "SYNC").await? {
        Message::Sync => {}
        Message::Connect(_) => return Err(ExchangeError::Unexpected("CONNECT")),
    }
    let _ = stream.close().await;
    Ok((addrs, None))
}

/// The remote's dialable addresses: a trailing `/p2p/<peer>` removed, addresses naming
/// another peer dropped.
fn remote_addrs(peer: PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .filter_map(|mut a| match a.iter().last() {
            Some(Protocol::P2p(p)) if p.to_bytes().as_slice() == peer.as_bytes() => {
                a.pop();
                Some(a)
            }
            Some(Protocol::P2p(_)) => None,
            _ => Some(a),
        })
        .collect()
}

/// An exchange: the peer, its session's generation and the attempt.
type ExchangeKey = (PeerId, u64, u8);

/// DCUtR hole punching: the [`HolepunchEngine`] driven by relayed connections, streams and
/// dials.
///
/// * A relayed connection we accepted makes us the initiator: a `/libp2p/dcutr` stream is
///   opened on it (no dial), `CONNECT` sent, the remote's `CONNECT` timed, `SYNC` sent, and
///   the remote's addresses dialed after the attempt's timing. A relayed connection we
///   dialed makes us the responder: the remote's stream is answered and its addresses
///   dialed when `SYNC` arrives.
/// * Dials are ordinary [`ToSwarm::Dial`]s (condition [`PeerCondition::Always`], only the
///   addresses from `CONNECT`, plus predicted ports on retries). meshwire's QUIC transport dials from the listening endpoint,
///   so the remote (and its NAT) sees our listening port: the address we announced.
/// * The addresses we announce: confirmed external addresses, then the candidates observed
///   by peers (identify; the 20 latest), then our listen addresses; relayed ones never.
/// * Any direct connection to the peer while a session runs is its success; the relayed
///   connection is left to the swarm's idle rule (it is kept alive only while a session
///   runs on it).
///
/// `docs/holepunch.md` has the whole picture.
pub struct Behaviour {
    engine: HolepunchEngine,
    outbox: Outbox<Event, ExchangeKey>,
    tasks: Tasks<ExchangeKey, ExchangeResult>,
    /// The generation of each running session (at most one per peer): an exchange of an
    /// ended session that finishes late is ignored instead of being taken for the same
    /// attempt of a newer session.
    generations: HashMap<PeerId, u64>,
    last_generation: u64,
    timer: Timer,
    /// Relayed connections: the peer and our role on it.
    relayed: HashMap<ConnectionId, (PeerId, Role)>,
    direct: HashMap<PeerId, usize>,
    listen: HashMap<ListenerId, Vec<Multiaddr>>,
    confirmed: Vec<Multiaddr>,
    candidates: VecDeque<Multiaddr>,
    metrics: Option<HolepunchMetrics>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        let limit = config.max_sessions.max(1);
        Behaviour {
            engine: HolepunchEngine::new(config),
            outbox: Outbox::new(limit * 2 + 8),
            tasks: Tasks::new(limit),
            generations: HashMap::new(),
            last_generation: 0,
            timer: Timer::default(),
            relayed: HashMap::new(),
            direct: HashMap::new(),
            listen: HashMap::new(),
            confirmed: Vec::new(),
            candidates: VecDeque::new(),
            metrics: None,
            waker: None,
        }
    }

    /// Reports to `metrics` (see [`HolepunchMetrics::register`]).
    pub fn with_metrics(mut self, metrics: HolepunchMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Cancels the hole punch with `peer`: the attempt in flight ends as
    /// [`AttemptOutcome::Cancelled`], no other starts. Returns whether one ran.
    pub fn cancel(&mut self, peer: &PeerId) -> bool {
        let cancelled = self.engine.cancel(now(), *peer);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        cancelled
    }

    /// Starts the hole punch with `peer` on the relayed connection we accepted from it (we
    /// are DCUtR's initiator), for a behaviour whose [`Config::automatic`] is `false`.
    /// Returns whether a session runs now (`false`: no such relayed connection, a direct
    /// connection exists, or the session limit is reached).
    pub fn start(&mut self, peer: &PeerId) -> bool {
        let Some(connection) = self
            .relayed
            .iter()
            .find(|(_, (p, role))| p == peer && *role == Role::Initiator)
            .map(|(c, _)| *c)
        else {
            return false;
        };
        let has_direct = self.direct.get(peer).is_some_and(|n| *n > 0);
        self.engine.handle_relayed_connection(
            now(),
            *peer,
            connection,
            Role::Initiator,
            has_direct,
        );
        self.sync_generation(*peer);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        self.engine.is_active(peer)
    }

    /// Dial predicted ports of `peer` from the first attempt on (see
    /// [`HolepunchEngine::set_port_window_hint`](crate::engine::HolepunchEngine::set_port_window_hint));
    /// `None` removes the hint. The connector sets it when both NAT profiles call for
    /// prediction.
    pub fn set_port_window_hint(&mut self, peer: PeerId, window: Option<u16>) {
        self.engine.set_port_window_hint(peer, window);
    }

    /// The port-window hint for `peer`, if one is set.
    pub fn port_window_hint(&self, peer: &PeerId) -> Option<u16> {
        self.engine.port_window_hint(peer)
    }

    /// Whether a hole punch with `peer` is in progress.
    pub fn is_punching(&self, peer: &PeerId) -> bool {
        self.engine.is_active(peer)
    }

    /// The addresses sent in our `CONNECT`s (see [`Behaviour`]).
    pub fn announced_addrs(&self) -> Vec<Multiaddr> {
        let listen = self.listen.values().flatten();
        connect_addrs(
            self.confirmed
                .iter()
                .chain(self.candidates.iter())
                .chain(listen),
        )
    }

    /// The generation of `peer`'s session; `u64::MAX` (no exchange has it) without one.
    fn generation(&self, peer: &PeerId) -> u64 {
        self.generations.get(peer).copied().unwrap_or(u64::MAX)
    }

    /// Keeps `generations` in step with the engine's sessions of `peer`.
    fn sync_generation(&mut self, peer: PeerId) {
        if !self.engine.is_active(&peer) {
            self.generations.remove(&peer);
        } else if !self.generations.contains_key(&peer) {
            self.last_generation += 1;
            self.generations.insert(peer, self.last_generation);
        }
    }

    fn exchange_done(&mut self, (peer, generation, attempt): ExchangeKey, result: ExchangeResult) {
        if generation != self.generation(&peer) {
            debug!(%peer, attempt, "dcutr: result of an ended session ignored");
            return;
        }
        let now = now();
        match result {
            Ok((addrs, rtt)) => {
                if let (Some(rtt), Some(m)) = (rtt, &self.metrics) {
                    m.rtt.observe(rtt.as_secs_f64());
                }
                debug!(%peer, attempt, ?rtt, ?addrs, "dcutr: exchange done");
                let addrs = remote_addrs(peer, addrs);
                self.engine
                    .handle_exchange_succeeded(now, peer, attempt, addrs, rtt);
            }
            Err(e) => {
                debug!(%peer, attempt, error = %e, "dcutr: exchange failed");
                self.engine
                    .handle_exchange_failed(now, peer, attempt, e.into());
            }
        }
    }

    fn run_action(&mut self, action: Action) {
        match action {
            Action::OpenStream {
                peer,
                relayed,
                attempt,
            } => {
                let open = OpenStream::new(peer, PROTOCOL)
                    .on_connection(relayed)
                    .no_dial();
                let key = (peer, self.generation(&peer), attempt);
                if self.outbox.open_stream(open, key).is_err() {
                    self.engine.handle_exchange_failed(
                        now(),
                        peer,
                        attempt,
                        AttemptOutcome::ExchangeFailed("command queue full".into()),
                    );
                }
            }
            Action::Dial {
                peer,
                addrs,
                attempt,
            } => {
                debug!(%peer, attempt, ?addrs, "dcutr: dialing");
                let opts = DialOpts::peer(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::Always)
                    .extend_addresses_through_behaviour(false);
                let id = opts.connection_id();
                self.engine.handle_dial_issued(peer, id);
                if self.outbox.push(ToSwarm::Dial(opts)).is_err() {
                    self.engine
                        .handle_dial_failed(now(), id, "command queue full".into());
                }
            }
        }
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL]
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.engine.relayed_connection(&peer) == Some(connection)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                ..
            } => {
                if endpoint.is_relayed() {
                    let role = if endpoint.is_dialer() {
                        Role::Responder
                    } else {
                        Role::Initiator
                    };
                    self.relayed.insert(connection, (peer, role));
                    if role == Role::Initiator && !self.engine.config().automatic {
                        return;
                    }
                    let has_direct = self.direct.get(&peer).is_some_and(|n| *n > 0);
                    self.engine.handle_relayed_connection(
                        now(),
                        peer,
                        connection,
                        role,
                        has_direct,
                    );
                    self.sync_generation(peer);
                } else {
                    *self.direct.entry(peer).or_default() += 1;
                    self.engine
                        .handle_direct_connection(now(), peer, connection);
                    self.sync_generation(peer);
                }
            }
            FromSwarm::ConnectionClosed {
                peer,
                connection,
                endpoint,
                ..
            } => {
                if endpoint.is_relayed() {
                    self.relayed.remove(&connection);
                    self.engine.handle_relayed_closed(now(), peer, connection);
                    self.sync_generation(peer);
                } else if let Some(n) = self.direct.get_mut(&peer) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.direct.remove(&peer);
                    }
                }
            }
            FromSwarm::DialFailure {
                connection, error, ..
            } => self
                .engine
                .handle_dial_failed(now(), connection, error.to_string()),
            FromSwarm::NewListenAddr { listener, addr } if !protocol::is_relayed(addr) => {
                let addrs = self.listen.entry(listener).or_default();
                if !addrs.contains(addr) {
                    addrs.push(addr.clone());
                }
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                self.listen.remove(&listener);
            }
            FromSwarm::NewExternalAddrCandidate { addr } if !protocol::is_relayed(addr) => {
                self.candidates.retain(|a| a != addr);
                self.candidates.push_front(addr.clone());
                self.candidates.truncate(MAX_CANDIDATES);
            }
            FromSwarm::ExternalAddrConfirmed { addr }
                if !protocol::is_relayed(addr) && !self.confirmed.contains(addr) =>
            {
                self.confirmed.push(addr.clone());
                self.confirmed.truncate(MAX_CANDIDATES);
            }
            FromSwarm::ExternalAddrExpired { addr } => self.confirmed.retain(|a| a != addr),
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let InboundStream {
            peer,
            connection,
            stream,
            ..
        } = stream;
        let Some(attempt) = self.engine.handle_inbound_stream(now(), peer, connection) else {
            debug!(%peer, %connection, "dcutr: refusing a stream outside a responder session");
            return;
        };
        let ours = self.announced_addrs();
        let timeout = self.engine.config().exchange_timeout;
        let key = (peer, self.generation(&peer), attempt);
        if self
            .tasks
            .try_push(key, timeout, respond(stream, ours))
            .is_err()
        {
            self.engine.handle_exchange_failed(
                now(),
                peer,
                attempt,
                AttemptOutcome::ExchangeFailed("too many exchanges".into()),
            );
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some(key) = self.outbox.take_stream(result.id) else {
            return;
        };
        let (peer, generation, attempt) = key;
        if generation != self.generation(&peer) {
            return;
        }
        match result.result {
            Ok(out) => {
                let ours = self.announced_addrs();
                let timeout = self.engine.config().exchange_timeout;
                if self
                    .tasks
                    .try_push(key, timeout, initiate(out.stream, ours))
                    .is_err()
                {
                    self.engine.handle_exchange_failed(
                        now(),
                        peer,
                        attempt,
                        AttemptOutcome::ExchangeFailed("too many exchanges".into()),
                    );
                }
            }
            Err(e) => {
                let outcome = if e.is_unsupported() {
                    AttemptOutcome::Unsupported
                } else {
                    AttemptOutcome::ExchangeFailed(e.to_string())
                };
                self.engine
                    .handle_exchange_failed(now(), peer, attempt, outcome);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        self.waker = Some(cx.waker().clone());
        loop {
            while let Poll::Ready((key, result)) = self.tasks.poll_result(cx) {
                self.exchange_done(key, result);
            }
            while let Some(action) = self.engine.poll_action() {
                self.run_action(action);
            }
            while let Some(event) = self.engine.poll_event() {
                if let Some(m) = &self.metrics {
                    m.record(&event);
                }
                if let HolepunchEvent::DirectConnectionUpgradeSucceeded { peer, .. }
                | HolepunchEvent::DirectConnectionUpgradeFailed { peer, .. } = &event
                {
                    // The session ended: its generation is retired.
                    self.generations.remove(peer);
                    self.sync_generation(*peer);
                }
                if self.outbox.event(event).is_err() {
                    debug!("dcutr: event queue full; event dropped");
                }
            }
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            let deadline = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            match self.timer.poll_at(deadline, cx) {
                Poll::Ready(()) => self.engine.handle_timeout(now()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
