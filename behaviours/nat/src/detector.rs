//! [`NatDetector`]: asks probe servers (RFC 5780's tests over `/meshwire/natprobe/1.0.0`),
//! classifies the answers into a [`NatProfile`] and caches it per network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meshwire_swarm::toolkit::{read_frame, write_frame, Outbox, Tasks};
use meshwire_swarm::{
    CloseConnection, ConnectedPoint, ConnectionId, DialOpts, FromSwarm, ListenerId, Multiaddr,
    NetworkBehaviour, OpenStream, OutboundStreamResult, PeerCondition, PeerId, StreamProtocol,
    Timer, ToSwarm,
};
use meshwire_transport::quic::multiaddr_to_socketaddr;

use crate::cache::{CacheConfig, Lookup, NatCache, NetworkKey};
use crate::metrics::NatProbeMetrics;
use crate::server::{ServeError, PROTOCOL};
use crate::wire::{DialBackFrom, DialBackStatus, Request, Response, MAX_MESSAGE};
use crate::{
    classify, ClassifyError, MappingObservation, NatProfile, Observations, SharedNatProfile,
};

/// A probe server: its peer id and the address to reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    /// The server's peer id.
    pub peer: PeerId,
    /// Its address (`/ip4|ip6/<ip>/udp/<port>/quic-v1`).
    pub addr: Multiaddr,
}

/// The detector's settings.
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// The servers, in the order they are asked. The first is asked for the dial-backs;
    /// among them there must be one on the first's IP with another port, and one on
    /// another IP ([`classify`]).
    pub observers: Vec<Observer>,
    /// Time for one dial, request and response (default 10 s); a whole round ends after
    /// `(observers + 2) ×` this.
    pub request_timeout: Duration,
    /// Wait before a failed detection is tried again (default 60 s).
    pub retry_after: Duration,
    /// The cache's ages and size.
    pub cache: CacheConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            observers: Vec::new(),
            request_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(60),
            cache: CacheConfig::default(),
        }
    }
}

/// What the detector reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorEvent {
    /// A detection finished: the network's profile (also after a background refresh).
    Detected {
        /// The profile.
        profile: NatProfile,
        /// The observations it was classified from.
        observations: Observations,
    },
    /// A detection could not classify the network.
    Failed(ClassifyError),
}

/// One probe exchange's identity: the round, the observer, the request.
type Key = (u64, usize, Request);

/// A detection in progress.
struct Round {
    id: u64,
    network: NetworkKey,
    /// The observer being asked for its mapping, in order.
    next: usize,
    /// Our dial per observer.
    dials: HashMap<ConnectionId, usize>,
    /// Our local socket per observer.
    locals: HashMap<usize, SocketAddr>,
    /// The connection to observer 0 (the dial-backs go on it).
    primary: Option<(PeerId, ConnectionId)>,
    mappings: Vec<MappingObservation>,
    dial_backs_pending: usize,
    /// The dial-backs were asked for (or could not be).
    dial_backs_done: bool,
    /// A dial-back was refused by the server's rate limit: try again sooner.
    refused: bool,
    other_port: Option<bool>,
    other_address: Option<bool>,
    /// Past it the round ends with what it has (a dial the swarm never reports on).
    deadline: Instant,
}

/// The detector behaviour.
pub struct NatDetector {
    config: DetectorConfig,
    cache: NatCache,
    listen: HashMap<ListenerId, Vec<Multiaddr>>,
    network: NetworkKey,
    round: Option<Round>,
    rounds: u64,
    outbox: Outbox<DetectorEvent, Key>,
    tasks: Tasks<Key, Result<Response, ServeError>>,
    /// When to start the next detection (`None`: not scheduled).
    due: Option<Instant>,
    timer: Timer,
    metrics: Option<NatProbeMetrics>,
    shared: SharedNatProfile,
}

impl NatDetector {
    /// A detector asking `config.observers`; it starts when the swarm listens.
    pub fn new(config: DetectorConfig) -> Self {
        NatDetector {
            cache: NatCache::new(config.cache),
            config,
            listen: HashMap::new(),
            network: NetworkKey::default(),
            round: None,
            rounds: 0,
            outbox: Outbox::new(64),
            tasks: Tasks::new(16),
            due: None,
            timer: Timer::default(),
            metrics: None,
            shared: SharedNatProfile::default(),
        }
    }

    /// Records detection rounds in `metrics`.
    pub fn with_metrics(mut self, metrics: NatProbeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The current network's profile: fresh, or stale while a refresh runs.
    pub fn nat_profile(&self) -> Option<NatProfile> {
        self.cache.lookup(&self.network, Instant::now()).profile()
    }

    /// A handle that always holds [`NatDetector::nat_profile`]'s value as of the detector's
    /// last detection or network change (for other behaviours, e.g. the relay registry).
    pub fn shared_profile(&self) -> SharedNatProfile {
        self.shared.clone()
    }

    /// Starts a detection now (unless one runs), whatever the cache holds.
    pub fn refresh(&mut self) {
        self.due = Some(Instant::now());
    }

    /// The listen addresses changed: the network is another one.
    fn network_changed(&mut self) {
        let key = NetworkKey::new(self.listen.values().flatten());
        if key == self.network {
            return;
        }
        tracing::debug!(?key, "natprobe: local addresses changed");
        self.network = key;
        if let Some(old) = self.round.take() {
            self.close(&old); // its answers are of the old network
        }
        self.due = match self.cache.lookup(&self.network, Instant::now()) {
            Lookup::Fresh(_) => self.cache.refresh_at(&self.network),
            _ if self.network.is_empty() => None,
            _ => Some(Instant::now()),
        };
        self.shared.set(self.nat_profile());
    }

    fn start_round(&mut self, now: Instant) {
        self.due = None;
        if self.config.observers.is_empty() || self.network.is_empty() {
            return;
        }
        self.rounds += 1;
        self.round = Some(Round {
            id: self.rounds,
            network: self.network.clone(),
            next: 0,
            dials: HashMap::new(),
            locals: HashMap::new(),
            primary: None,
            mappings: Vec::new(),
            dial_backs_pending: 0,
            dial_backs_done: false,
            refused: false,
            other_port: None,
            other_address: None,
            deadline: now + self.config.request_timeout * (self.config.observers.len() as u32 + 2),
        });
        self.ask_next();
    }

    /// Dials the round's next observer, or asks for the dial-backs when all were asked.
    fn ask_next(&mut self) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        // RFC 5780's order: the filtering tests right after the first mapping, before we
        // send to any other address (a restricted cone would then let that address in).
        if round.next >= 1 && !round.dial_backs_done {
            round.dial_backs_done = true;
            if let Some((peer, conn)) = round.primary {
                for from in [DialBackFrom::OtherPort, DialBackFrom::OtherAddress] {
                    let key = (round.id, 0, Request::DialBack(from));
                    let open = OpenStream::new(peer, PROTOCOL).on_connection(conn);
                    if self.outbox.open_stream(open, key).is_ok() {
                        round.dial_backs_pending += 1;
                    }
                }
                if round.dial_backs_pending > 0 {
                    return; // the last answer asks the next observer
                }
            }
        }
        if let Some(o) = self.config.observers.get(round.next) {
            let opts = DialOpts::peer(o.peer)
                .address(o.addr.clone())
                .condition(PeerCondition::Always)
                .extend_addresses_through_behaviour(false);
            round.dials.insert(opts.connection_id(), round.next);
            let _ = self.outbox.push(ToSwarm::Dial(opts));
            return;
        }
        self.finish();
    }

    /// Observer `index` is done (answered or failed): the next one.
    fn observer_done(&mut self, index: usize) {
        if let Some(round) = self.round.as_mut() {
            if round.next == index {
                round.next += 1;
                self.ask_next();
            }
        }
    }

    /// Closes the connections `round` dialed (the swarm limits connections per peer).
    fn close(&mut self, round: &Round) {
        for (conn, index) in &round.dials {
            if let Some(o) = self.config.observers.get(*index) {
                let _ = self.outbox.push(ToSwarm::CloseConnection {
                    peer: o.peer,
                    connection: CloseConnection::One(*conn),
                });
            }
        }
    }

    /// Classifies the round's answers, caches and reports the profile.
    fn finish(&mut self) {
        let Some(round) = self.round.take() else {
            return;
        };
        self.close(&round);
        // Mappings of one socket only (with several listeners the transport may dial
        // from another): the first observer's.
        let mut mappings = round.mappings;
        if let Some(first) = mappings.first().map(|m| m.local) {
            mappings.retain(|m| m.local == first);
        }
        let observations = Observations {
            mappings,
            from_other_address: round.other_address,
            from_other_port: round.other_port,
        };
        let now = Instant::now();
        let classified = classify(&observations);
        if let Some(m) = &self.metrics {
            m.detection(classified.is_ok());
        }
        let event = match classified {
            Ok(profile) => {
                self.cache.insert(round.network.clone(), profile, now);
                self.due = self.cache.refresh_at(&round.network);
                if round.refused {
                    // Filtering untested for now: ask again after `retry_after`.
                    let retry = now + self.config.retry_after;
                    self.due = self.due.map(|d| d.min(retry)).or(Some(retry));
                }
                tracing::info!(?profile, "natprobe: NAT profile detected");
                DetectorEvent::Detected {
                    profile,
                    observations,
                }
            }
            Err(e) => {
                self.due = Some(now + self.config.retry_after);
                tracing::debug!(error = %e, ?observations, "natprobe: detection failed");
                DetectorEvent::Failed(e)
            }
        };
        self.shared.set(self.nat_profile());
        let _ = self.outbox.event(event);
    }

    fn on_answer(&mut self, key: Key, answer: Result<Response, ServeError>) {
        let (id, index, request) = key;
        let Some(round) = self.round.as_mut().filter(|r| r.id == id) else {
            return;
        };
        match request {
            Request::Observe => {
                if let (Ok(Response::Observed(mapped)), Some(o)) =
                    (&answer, self.config.observers.get(index))
                {
                    if let (Some(server), Some(local)) =
                        (multiaddr_to_socketaddr(&o.addr), round_local(round, index))
                    {
                        round.mappings.push(MappingObservation {
                            local,
                            server,
                            mapped: *mapped,
                        });
                    }
                } else {
                    tracing::debug!(?answer, index, "natprobe: observe failed");
                }
                self.observer_done(index);
            }
            Request::DialBack(from) => {
                if matches!(answer, Ok(Response::DialBack(DialBackStatus::Refused))) {
                    round.refused = true;
                }
                let reached = match answer {
                    Ok(Response::DialBack(DialBackStatus::Reached)) => Some(true),
                    Ok(Response::DialBack(DialBackStatus::NotReached)) => Some(false),
                    _ => None,
                };
                match from {
                    DialBackFrom::OtherPort => round.other_port = reached,
                    DialBackFrom::OtherAddress => round.other_address = reached,
                }
                round.dial_backs_pending = round.dial_backs_pending.saturating_sub(1);
                if round.dial_backs_pending == 0 {
                    self.ask_next();
                }
            }
        }
    }
}

/// The local socket of the round's connection to observer `index`.
fn round_local(round: &Round, index: usize) -> Option<SocketAddr> {
    round
        .dials
        .iter()
        .find(|(_, i)| **i == index)
        .and_then(|(_, i)| round.locals.get(i).copied())
}

/// Sends `request`, reads the response.
async fn exchange(
    mut stream: meshwire_swarm::Stream,
    request: Request,
) -> Result<Response, ServeError> {
    write_frame(&mut stream, &request.encode()).await?;
    let bytes = read_frame(&mut stream, MAX_MESSAGE)
        .await?
        .ok_or(ServeError::NoRequest)?;
    Ok(Response::decode(&bytes)?)
}

impl NetworkBehaviour for NatDetector {
    type Event = DetectorEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new() // a client only
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::NewListenAddr { listener, addr } => {
                if addr
                    .iter()
                    .any(|p| matches!(p, multiaddr::Protocol::P2pCircuit))
                {
                    // A relay reservation is not a network: its coming and going must not
                    // restart detection.
                    return;
                }
                self.listen.entry(listener).or_default().push(addr.clone());
                self.network_changed();
            }
            FromSwarm::ListenerClosed { listener, .. } => {
                self.listen.remove(&listener);
                self.network_changed();
            }
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint: ConnectedPoint::Dialer { .. },
                handle,
                ..
            } => {
                let Some(round) = self.round.as_mut() else {
                    return;
                };
                let Some(&index) = round.dials.get(&connection) else {
                    return;
                };
                if let Some(local) = multiaddr_to_socketaddr(handle.local_addr()) {
                    round.locals.insert(index, local);
                }
                if index == 0 {
                    round.primary = Some((peer, connection));
                }
                let key = (round.id, index, Request::Observe);
                let open = OpenStream::new(peer, PROTOCOL).on_connection(connection);
                if self.outbox.open_stream(open, key).is_err() {
                    self.observer_done(index);
                }
            }
            FromSwarm::DialFailure { connection, .. } => {
                let failed = self
                    .round
                    .as_ref()
                    .and_then(|r| r.dials.get(&connection).copied());
                if let Some(index) = failed {
                    tracing::debug!(index, "natprobe: observer unreachable");
                    self.observer_done(index);
                }
            }
            _ => {}
        }
    }

    fn on_outbound_stream(&mut self, res: OutboundStreamResult) {
        let Some(key) = self.outbox.take_stream(res.id) else {
            return;
        };
        match res.result {
            Ok(out) => {
                let fut = exchange(out.stream, key.2);
                if self
                    .tasks
                    .try_push(key, self.config.request_timeout, fut)
                    .is_err()
                {
                    self.on_answer(key, Err(ServeError::Timeout));
                }
            }
            Err(e) => self.on_answer(key, Err(ServeError::Stream(e.to_string()))),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<DetectorEvent>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Poll::Ready((key, answer)) = self.tasks.poll_result(cx) {
                self.on_answer(key, answer);
                continue;
            }
            let at = match &self.round {
                Some(round) => Some(round.deadline),
                None => self.due,
            };
            if self
                .timer
                .poll_at(at.map(tokio::time::Instant::from_std), cx)
                .is_ready()
            {
                if self.round.is_some() {
                    tracing::debug!("natprobe: round deadline, classifying what was gathered");
                    self.finish();
                } else {
                    self.start_round(Instant::now());
                }
                continue;
            }
            return Poll::Pending;
        }
    }
}
