//! The [`Connector`]: DCUtR, the birthday spray or the relay, chosen from both peers' NAT
//! profiles (documented on [`Connector`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::FutureExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_nat::NatProfile;
use meshwire_swarm::toolkit::{Outbox, Tasks};
use meshwire_swarm::{
    DialOpts, FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult,
    PeerCondition, Stream, StreamProtocol, ToSwarm,
};
use meshwire_transport::quic::{socketaddr_to_multiaddr, QuicSockets};
use multiaddr::Multiaddr;
use tracing::debug;

use super::exchange::{
    answer_hello, is_public, open_hello, probe, random_u64, socket_addr, spray, ExchangeError,
    TaskDone,
};
use super::metrics::ConnectorMetrics;
use super::spray::SprayConfig;
use super::wire::{self, Hello};
use super::{choose, Method, SkipReason};
use crate::engine::{HolepunchConfig, HolepunchEvent, UpgradeError};
use crate::Behaviour as Dcutr;

/// `/meshwire/spray/1.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(wire::PROTOCOL_NAME);

/// Observed addresses kept (the latest).
const MAX_CANDIDATES: usize = 20;
/// Peers whose addresses are kept for the spray's target check, at most.
const MAX_KNOWN_PEERS: usize = 1024;
/// IPs kept per peer for the spray's target check, at most.
const MAX_KNOWN_IPS: usize = 8;
/// The window of [`ConnectorConfig::max_spray_packets_per_minute`].
const PACKET_WINDOW: Duration = Duration::from_secs(60);

/// A session's task key: the peer and the session's generation.
type Key = (PeerId, u64);

/// Settings of the [`Connector`].
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// DCUtR's settings; `automatic` is forced off (the connector starts it).
    pub holepunch: HolepunchConfig,
    /// The spray's numbers and limits (see [`SprayConfig`]).
    pub spray: SprayConfig,
    /// Time for the `HELLO` exchange, and for `READY` to follow (default 10 s).
    pub hello_timeout: Duration,
    /// Connector sessions at once (default 64); relayed connections beyond it get plain
    /// DCUtR. Each spray holds up to `spray.sockets` sockets.
    pub max_sessions: usize,
    /// Spray sockets open at once, node-wide (default 512): a spray whose `K` sockets do not
    /// fit fails with [`ConnectError::SocketBudget`].
    pub max_spray_sockets_total: usize,
    /// Spray datagrams (the sprayer's `K`, the prober's `N`) started per minute, node-wide
    /// (default 4,096): a spray beyond it fails with [`ConnectError::PacketBudget`].
    pub max_spray_packets_per_minute: u32,
    /// How long the answering side waits for DCUtR's outcome once DCUtR was chosen (default
    /// 60 s); then the session ends with [`ConnectError::DcutrTimeout`].
    pub dcutr_timeout: Duration,
    /// Spray at any public address the remote's `HELLO` names (default `false`: only at IPs
    /// we observed for that peer, from its direct connections or
    /// [`Connector::add_peer_address`]). Only for closed test networks.
    pub trust_hello_addrs: bool,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            holepunch: HolepunchConfig::default(),
            spray: SprayConfig::default(),
            hello_timeout: Duration::from_secs(10),
            max_sessions: 64,
            max_spray_sockets_total: 512,
            max_spray_packets_per_minute: 4096,
            dcutr_timeout: Duration::from_secs(60),
            trust_hello_addrs: false,
        }
    }
}

/// Why a session ended without a direct connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// DCUtR gave up.
    #[error("DCUtR: {0}")]
    Holepunch(UpgradeError),
    /// No probe reached a mapping within the window.
    #[error("no probe got through ({sockets} mappings, {probes} probes)")]
    NoHit {
        /// Mappings the sprayer opened (0 on the prober's side: not known there).
        sockets: u32,
        /// Probes sent (0 on the sprayer's side).
        probes: u32,
    },
    /// The dial from the socket a probe reached failed.
    #[error("dial from the socket a probe reached failed: {0}")]
    Dial(String),
    /// The `HELLO`/`READY` exchange or a socket failed.
    #[error("exchange: {0}")]
    Exchange(String),
    /// A spray needs a public address of the other side that it sent and that we observed
    /// for it (see [`ConnectorConfig::trust_hello_addrs`]).
    #[error("no observed public address of the remote to spray at")]
    NoAddress,
    /// The spray's sockets exceed [`ConnectorConfig::max_spray_sockets_total`].
    #[error("spray socket budget exhausted ({in_use} in use, {wanted} wanted, {limit} at most)")]
    SocketBudget {
        /// Sockets held by running sprays.
        in_use: usize,
        /// Sockets this spray needs.
        wanted: usize,
        /// The limit.
        limit: usize,
    },
    /// The spray's datagrams exceed [`ConnectorConfig::max_spray_packets_per_minute`].
    #[error("spray packet budget of {0} per minute exhausted")]
    PacketBudget(u32),
    /// DCUtR was chosen but no outcome came within [`ConnectorConfig::dcutr_timeout`].
    #[error("DCUtR gave no outcome in time")]
    DcutrTimeout,
    /// The relayed connection closed before the session ended.
    #[error("the relayed connection closed")]
    RelayClosed,
    /// [`Connector::cancel`].
    #[error("cancelled")]
    Cancelled,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// A direct connection exists.
    Direct {
        /// How it came.
        method: Method,
        /// From the relayed connection to the direct one.
        elapsed: Duration,
    },
    /// The method was tried and failed; the relayed connection stays.
    Failed {
        /// What was tried.
        method: Method,
        /// Why it failed.
        error: ConnectError,
    },
    /// No punching was tried; the relayed connection stays.
    Skipped(SkipReason),
}

/// What the [`Connector`] reports.
#[derive(Clone, Debug)]
pub enum ConnectorEvent {
    /// Both profiles are known (or not): the method for `peer`.
    Chosen {
        /// The remote.
        peer: PeerId,
        /// The method.
        method: Method,
        /// The remote's NAT, as it told.
        remote: Option<NatProfile>,
    },
    /// The session with `peer` ended.
    Finished {
        /// The remote.
        peer: PeerId,
        /// How.
        outcome: ConnectOutcome,
    },
    /// DCUtR's own event (attempts, upgrades).
    Holepunch(HolepunchEvent),
}

enum Phase {
    Hello,
    /// DCUtR runs; its upgrade event ends the session (or, on the answering side, the
    /// deadline).
    Dcutr {
        deadline: Option<Instant>,
    },
    /// The spray task runs with `sockets` sockets; dropping `stop` ends it.
    Spraying {
        _stop: oneshot::Sender<()>,
        sockets: usize,
    },
    /// The sprayer dials from the hit socket, adopted for the dial to `from`.
    Dialing {
        dial: ConnectionId,
        from: SocketAddr,
    },
}

struct Session {
    generation: u64,
    /// Whether we accepted the relayed connection: DCUtR's initiator, the stream's opener.
    opener: bool,
    relayed: ConnectionId,
    started: Instant,
    method: Method,
    phase: Phase,
}

/// The connector: leaves relayed connections by the method both peers' NATs allow.
///
/// * Each relayed connection we accepted opens a `/meshwire/spray/1.0.0` stream on it
///   (meshwire peers only; rust-libp2p peers never see it): `HELLO` both ways carries the
///   NAT profiles ([`Connector::set_local_profile`], from `meshwire_nat`'s detector), the
///   public addresses and the spray's numbers. Both sides run [`choose`] on the two
///   profiles and agree without a further message. A remote that does not speak the
///   protocol gets plain DCUtR.
/// * DCUtR ([`Method::Dcutr`]): the [`crate::Behaviour`] inside, with `automatic` off, is
///   started on our side (DCUtR's initiator is the side that accepted the relayed
///   connection, as the opener here); its retries carry the predicted port window.
/// * Spray ([`Method::Spray`]): the sprayer opens `K` sockets, sends one datagram from
///   each to the prober's public address and sends `READY`; the prober sends `N` paced
///   probes from its QUIC listening socket ([`QuicSockets::send_from_listener`]) to
///   random ports of the sprayer's IP. The socket a probe reaches is handed to the QUIC
///   transport ([`QuicSockets::adopt_for_dial`]) and the sprayer dials the prober from it.
/// * Skip ([`Method::Skip`]): nothing is tried; [`ConnectOutcome::Skipped`] tells why.
/// * Any direct connection to the peer while a session runs is its success.
///
/// Every session that chose a method ends with one [`ConnectorEvent::Finished`] (one that
/// a direct connection overtook before `HELLO` came back ends silently);
/// [`Connector::cancel`] ends it early. `docs/holepunch.md` ("Strategy", "The spray protocol") has the table and the
/// probability model.
pub struct Connector {
    config: ConnectorConfig,
    dcutr: Dcutr,
    sockets: QuicSockets,
    local_profile: Option<NatProfile>,
    sessions: HashMap<PeerId, Session>,
    last_generation: u64,
    outbox: Outbox<ConnectorEvent, Key>,
    tasks: Tasks<Key, Result<TaskDone, ExchangeError>>,
    candidates: Vec<Multiaddr>,
    /// Relayed connections open: the only ones a spray stream is accepted on.
    relayed: HashSet<ConnectionId>,
    /// IPs observed for peers (direct connections, [`Connector::add_peer_address`]).
    known_ips: HashMap<PeerId, Vec<IpAddr>>,
    /// Start of the packet budget's window and the datagrams charged in it.
    packet_window: (Instant, u32),
    metrics: Option<ConnectorMetrics>,
    waker: Option<Waker>,
}

impl Connector {
    /// A connector with `config`, using `sockets` (from the swarm's QUIC transport:
    /// `QuicTransport::sockets`) for the spray's probes and dial.
    pub fn new(mut config: ConnectorConfig, sockets: QuicSockets) -> Self {
        config.holepunch.automatic = false;
        let limit = config.max_sessions.max(1);
        Connector {
            dcutr: Dcutr::new(config.holepunch.clone()),
            config,
            sockets,
            local_profile: None,
            sessions: HashMap::new(),
            last_generation: 0,
            outbox: Outbox::new(limit * 2 + 8),
            tasks: Tasks::new(limit),
            candidates: Vec::new(),
            relayed: HashSet::new(),
            known_ips: HashMap::new(),
            packet_window: (Instant::now(), 0),
            metrics: None,
            waker: None,
        }
    }

    /// Reports to `metrics` (see [`ConnectorMetrics::register`]).
    pub fn with_metrics(mut self, metrics: ConnectorMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// DCUtR inside (its metrics: [`crate::Behaviour::with_metrics`] through
    /// [`Connector::with_dcutr`]).
    pub fn dcutr(&self) -> &Dcutr {
        &self.dcutr
    }

    /// Replaces DCUtR's behaviour with `f(behaviour)` (to attach metrics).
    pub fn with_dcutr(mut self, f: impl FnOnce(Dcutr) -> Dcutr) -> Self {
        let placeholder = Dcutr::new(self.config.holepunch.clone());
        self.dcutr = f(std::mem::replace(&mut self.dcutr, placeholder));
        self
    }

    /// Our NAT's profile (`meshwire_nat::DetectorEvent::Detected`), sent to peers in
    /// `HELLO`; `None`: not known (DCUtR then).
    pub fn set_local_profile(&mut self, profile: Option<NatProfile>) {
        self.local_profile = profile;
    }

    /// Our NAT's profile as sent in `HELLO` (`None`: not known).
    pub fn local_profile(&self) -> Option<NatProfile> {
        self.local_profile
    }

    /// Ends the session with `peer` ([`ConnectError::Cancelled`]); returns whether one ran.
    pub fn cancel(&mut self, peer: &PeerId) -> bool {
        let Some(s) = self.sessions.get(peer) else {
            return false;
        };
        let method = s.method;
        self.dcutr.cancel(peer);
        self.finish(
            *peer,
            ConnectOutcome::Failed {
                method,
                error: ConnectError::Cancelled,
            },
        );
        true
    }

    /// Whether a session with `peer` runs.
    pub fn is_connecting(&self, peer: &PeerId) -> bool {
        self.sessions.contains_key(peer)
    }

    /// Records an address observed for `peer` from a source other than the peer's own
    /// `HELLO` (e.g. identify's listen addresses, or a peer store): a spray only targets IPs
    /// recorded here or seen on a direct connection to the peer. Relayed addresses are
    /// ignored; at most 8 IPs per peer and 1,024 peers are kept.
    pub fn add_peer_address(&mut self, peer: PeerId, addr: &Multiaddr) {
        if crate::protocol::is_relayed(addr) {
            return;
        }
        let Some(ip) = socket_addr(addr).map(|a| a.ip()) else {
            return;
        };
        if !self.known_ips.contains_key(&peer) && self.known_ips.len() >= MAX_KNOWN_PEERS {
            let Some(evict) = self.known_ips.keys().next().copied() else {
                return;
            };
            self.known_ips.remove(&evict);
        }
        let ips = self.known_ips.entry(peer).or_default();
        ips.retain(|i| *i != ip);
        ips.insert(0, ip);
        ips.truncate(MAX_KNOWN_IPS);
    }

    /// The spray's target: the first public address of the remote's `HELLO` whose IP we
    /// observed for it (any public one with [`ConnectorConfig::trust_hello_addrs`]).
    fn spray_target(&self, peer: &PeerId, theirs: &Hello) -> Option<SocketAddr> {
        let known = self.known_ips.get(peer);
        theirs.addrs.iter().copied().find(|a| {
            is_public(a.ip())
                && (self.config.trust_hello_addrs || known.is_some_and(|k| k.contains(&a.ip())))
        })
    }

    /// Reserves `sockets` spray sockets and `packets` datagrams of the node-wide budgets.
    fn reserve_spray(
        &mut self,
        now: Instant,
        sockets: usize,
        packets: u32,
    ) -> Result<(), ConnectError> {
        let in_use: usize = self
            .sessions
            .values()
            .map(|s| match s.phase {
                Phase::Spraying { sockets, .. } => sockets,
                _ => 0,
            })
            .sum();
        let limit = self.config.max_spray_sockets_total;
        if in_use + sockets > limit {
            return Err(ConnectError::SocketBudget {
                in_use,
                wanted: sockets,
                limit,
            });
        }
        let (start, used) = &mut self.packet_window;
        if now.saturating_duration_since(*start) >= PACKET_WINDOW {
            (*start, *used) = (now, 0);
        }
        let max = self.config.max_spray_packets_per_minute;
        if used.saturating_add(packets) > max {
            return Err(ConnectError::PacketBudget(max));
        }
        *used += packets;
        Ok(())
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn hello(&self) -> Hello {
        let addrs = self
            .candidates
            .iter()
            .chain(self.dcutr.announced_addrs().iter())
            .filter_map(socket_addr)
            .filter(|a| is_public(a.ip()))
            .fold(Vec::new(), |mut v, a| {
                if !v.contains(&a) && v.len() < wire::MAX_ADDRS {
                    v.push(a);
                }
                v
            });
        Hello {
            nonce: random_u64(),
            profile: self.local_profile,
            params: self.config.spray.params(),
            addrs,
        }
    }

    fn new_session(&mut self, peer: PeerId, relayed: ConnectionId, opener: bool) -> Option<u64> {
        if self.sessions.contains_key(&peer) || self.sessions.len() >= self.config.max_sessions {
            return None;
        }
        self.last_generation += 1;
        self.sessions.insert(
            peer,
            Session {
                generation: self.last_generation,
                opener,
                relayed,
                started: Instant::now(),
                method: Method::Dcutr { prediction: true },
                phase: Phase::Hello,
            },
        );
        Some(self.last_generation)
    }

    fn finish(&mut self, peer: PeerId, outcome: ConnectOutcome) {
        let Some(session) = self.sessions.remove(&peer) else {
            return;
        };
        self.dcutr.set_port_window_hint(peer, None);
        if let Phase::Dialing { from, .. } = session.phase {
            // Not taken by a dial (it failed before QUIC, or the session ended first).
            self.sockets.take_adopted(from);
        }
        debug!(%peer, ?outcome, "connector: session ended");
        if let Some(m) = &self.metrics {
            m.record(&outcome);
        }
        let _ = self
            .outbox
            .event(ConnectorEvent::Finished { peer, outcome });
        self.wake();
    }

    fn fail(&mut self, peer: PeerId, error: ConnectError) {
        let method = self
            .sessions
            .get(&peer)
            .map_or(Method::Dcutr { prediction: true }, |s| s.method);
        self.finish(peer, ConnectOutcome::Failed { method, error });
    }

    /// Runs `method` for `peer` (the `HELLO`s are done, or the remote has no connector).
    fn run(
        &mut self,
        peer: PeerId,
        method: Method,
        stream: Option<(Stream, Hello, u64, SprayConfig)>,
    ) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        s.method = method;
        let (generation, opener) = (s.generation, s.opener);
        match method {
            Method::Skip(reason) => self.finish(peer, ConnectOutcome::Skipped(reason)),
            Method::Dcutr { .. } => {
                let deadline = (!opener).then(|| Instant::now() + self.config.dcutr_timeout);
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.phase = Phase::Dcutr { deadline };
                }
                if !opener {
                    // DCUtR's responder may never hear from the initiator: the deadline.
                    let wait = self.config.dcutr_timeout;
                    let fut = async move {
                        tokio::time::sleep(wait).await;
                        Ok(TaskDone::Deadline)
                    };
                    let budget = wait + Duration::from_secs(1);
                    if self
                        .tasks
                        .try_push((peer, generation), budget, fut.boxed())
                        .is_err()
                    {
                        return self.fail(peer, ConnectError::Exchange("too many tasks".into()));
                    }
                }
                // The answerer's DCUtR responder session started by itself.
                if opener && !self.dcutr.start(&peer) && !self.dcutr.is_punching(&peer) {
                    self.fail(peer, ConnectError::Exchange("DCUtR could not start".into()));
                }
            }
            Method::Spray { we_spray } => {
                let Some((stream, theirs, nonce, config)) = stream else {
                    return self.fail(peer, ConnectError::Exchange("no spray stream".into()));
                };
                let (stop_tx, stop) = oneshot::channel();
                let timeout = config.window + self.config.hello_timeout * 2;
                let Some(target) = self.spray_target(&peer, &theirs) else {
                    return self.fail(peer, ConnectError::NoAddress);
                };
                let (sockets, packets) = if we_spray {
                    (usize::from(config.sockets), u32::from(config.sockets))
                } else {
                    (0, u32::from(config.probes))
                };
                if let Err(e) = self.reserve_spray(Instant::now(), sockets, packets) {
                    return self.fail(peer, e);
                }
                let fut = if we_spray {
                    if let Some(m) = &self.metrics {
                        m.spray_sockets.inc_by(u64::from(config.sockets));
                    }
                    spray(stream, config, nonce, target, stop).boxed()
                } else {
                    let ip = target.ip();
                    let ready = self.config.hello_timeout;
                    probe(stream, config, nonce, ip, self.sockets.clone(), stop, ready).boxed()
                };
                if self
                    .tasks
                    .try_push((peer, generation), timeout, fut)
                    .is_err()
                {
                    return self.fail(peer, ConnectError::Exchange("too many tasks".into()));
                }
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.phase = Phase::Spraying {
                        _stop: stop_tx,
                        sockets,
                    };
                }
            }
        }
    }
}

impl Connector {
    /// When both profiles are known and call for port prediction, the side facing the
    /// sequential NAT dials the predicted window from its first attempt (an unknown profile
    /// also gives `Dcutr { prediction: true }`; then only the retries predict). The side
    /// behind the sequential NAT gets no hint: each extra destination it dials takes the next
    /// port of its own NAT and shifts what the other side predicts. Cleared in `finish`.
    fn hint_prediction(&mut self, peer: PeerId, method: Method, remote: Option<&NatProfile>) {
        let remote_sequential = remote.is_some_and(|p| {
            matches!(
                p.mapping,
                meshwire_nat::Mapping::AddressDependent(
                    meshwire_nat::PortAllocation::Sequential { .. }
                ) | meshwire_nat::Mapping::AddressAndPortDependent(
                    meshwire_nat::PortAllocation::Sequential { .. }
                )
            )
        });
        if self.local_profile.is_some()
            && remote_sequential
            && method == (Method::Dcutr { prediction: true })
        {
            let window = self.config.holepunch.port_windows.iter().copied().max();
            self.dcutr
                .set_port_window_hint(peer, window.filter(|w| *w > 0));
        }
    }

    fn task_done(&mut self, (peer, generation): Key, result: Result<TaskDone, ExchangeError>) {
        let Some(s) = self.sessions.get(&peer) else {
            return;
        };
        if s.generation != generation {
            return;
        }
        match result {
            Err(e) => {
                debug!(%peer, error = %e, "connector: exchange failed");
                if matches!(s.phase, Phase::Hello) {
                    // No connector on the other side, or it failed: plain DCUtR.
                    self.run(peer, Method::Dcutr { prediction: true }, None);
                } else {
                    self.fail(peer, ConnectError::Exchange(e.to_string()));
                }
            }
            Ok(TaskDone::Hello(hello)) => {
                let (stream, theirs) = *hello;
                let ours = self.config.spray.agree(&theirs.params);
                let method = choose(self.local_profile.as_ref(), theirs.profile.as_ref());
                debug!(%peer, ?method, remote = ?theirs.profile, "connector: method chosen");
                self.hint_prediction(peer, method, theirs.profile.as_ref());
                let _ = self.outbox.event(ConnectorEvent::Chosen {
                    peer,
                    method,
                    remote: theirs.profile,
                });
                // The opener proposed the nonce; the answer echoes it.
                let nonce = theirs.nonce;
                self.run(peer, method, Some((stream, theirs, nonce, ours)));
            }
            Ok(TaskDone::Sprayed(None)) => {
                let sockets = u32::from(self.config.spray.sockets);
                self.fail(peer, ConnectError::NoHit { sockets, probes: 0 });
            }
            Ok(TaskDone::Sprayed(Some((socket, from)))) => {
                debug!(%peer, %from, "connector: a probe got through; dialing from its socket");
                if let Err(e) = self.sockets.adopt_for_dial(from, socket) {
                    return self.fail(peer, ConnectError::Dial(e.to_string()));
                }
                let opts = DialOpts::peer(peer)
                    .addresses(vec![socketaddr_to_multiaddr(from)])
                    .condition(PeerCondition::Always)
                    .extend_addresses_through_behaviour(false);
                let dial = opts.connection_id();
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.phase = Phase::Dialing { dial, from };
                }
                if self.outbox.push(ToSwarm::Dial(opts)).is_err() {
                    self.fail(peer, ConnectError::Dial("command queue full".into()));
                }
            }
            Ok(TaskDone::Deadline) => self.dcutr_deadline(peer, Instant::now()),
            Ok(TaskDone::Probed(probes)) => {
                if let Some(m) = &self.metrics {
                    m.spray_probes.inc_by(u64::from(probes));
                }
                self.fail(peer, ConnectError::NoHit { sockets: 0, probes });
            }
        }
    }

    /// Ends the answerer's DCUtR phase of `peer` if its deadline passed at `now`.
    fn dcutr_deadline(&mut self, peer: PeerId, now: Instant) {
        let expired = self
            .sessions
            .get(&peer)
            .is_some_and(|s| matches!(s.phase, Phase::Dcutr { deadline: Some(d) } if d <= now));
        if expired {
            self.dcutr.cancel(&peer);
            self.fail(peer, ConnectError::DcutrTimeout);
        }
    }

    fn direct_connection(&mut self, peer: PeerId) {
        let Some(s) = self.sessions.get(&peer) else {
            return;
        };
        if matches!(s.phase, Phase::Hello) {
            // A direct connection before any method was chosen (the peer dialed us
            // directly): nothing to upgrade, no outcome to report.
            self.sessions.remove(&peer);
            return;
        }
        let outcome = ConnectOutcome::Direct {
            method: s.method,
            elapsed: s.started.elapsed(),
        };
        if let (Phase::Spraying { .. }, Method::Spray { we_spray: false }, Some(m)) =
            (&s.phase, s.method, &self.metrics)
        {
            // The prober's count is not known when it is stopped early; the budget bounds it.
            m.spray_probes.inc_by(u64::from(self.config.spray.probes));
        }
        self.finish(peer, outcome);
    }

    fn on_dcutr_event(&mut self, event: &HolepunchEvent) {
        let peer = match event {
            HolepunchEvent::DirectConnectionUpgradeSucceeded { peer, .. } => {
                self.direct_connection(*peer);
                return;
            }
            HolepunchEvent::DirectConnectionUpgradeFailed { peer, error, .. } => {
                (*peer, error.clone())
            }
            _ => return,
        };
        if self
            .sessions
            .get(&peer.0)
            .is_some_and(|s| matches!(s.phase, Phase::Dcutr { .. }))
        {
            self.fail(peer.0, ConnectError::Holepunch(peer.1));
        }
    }
}

impl NetworkBehaviour for Connector {
    type Event = ConnectorEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        let mut p = self.dcutr.protocols();
        p.push(PROTOCOL);
        p
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.dcutr.connection_keep_alive(peer, connection)
            || self
                .sessions
                .get(&peer)
                .is_some_and(|s| s.relayed == connection)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.dcutr.on_swarm_event(event);
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                ..
            } => {
                if !endpoint.is_relayed() {
                    // Seen on the wire: a way to this peer, unlike its own HELLO.
                    self.add_peer_address(peer, endpoint.remote_addr());
                    self.direct_connection(peer);
                } else if self.relayed.insert(connection) && !endpoint.is_dialer() {
                    // We accepted it: we open the stream (and are DCUtR's initiator).
                    if self.sessions.contains_key(&peer) {
                        // Another relayed connection while a session runs: that one decides.
                        return;
                    }
                    let Some(generation) = self.new_session(peer, connection, true) else {
                        // At the session limit: plain DCUtR, as without the connector.
                        self.dcutr.start(&peer);
                        return;
                    };
                    let open = OpenStream::new(peer, PROTOCOL)
                        .on_connection(connection)
                        .no_dial();
                    if self.outbox.open_stream(open, (peer, generation)).is_err() {
                        self.run(peer, Method::Dcutr { prediction: true }, None);
                    }
                }
            }
            FromSwarm::ConnectionClosed {
                peer, connection, ..
            } => {
                let ours = self.relayed.remove(&connection)
                    && self
                        .sessions
                        .get(&peer)
                        .is_some_and(|s| s.relayed == connection);
                if ours {
                    self.dcutr.cancel(&peer);
                    self.fail(peer, ConnectError::RelayClosed);
                }
            }
            FromSwarm::DialFailure {
                connection, error, ..
            } => {
                let failed = self.sessions.iter().find_map(|(p, s)| match s.phase {
                    Phase::Dialing { dial, .. } if dial == connection => Some(*p),
                    _ => None,
                });
                if let Some(peer) = failed {
                    self.fail(peer, ConnectError::Dial(error.to_string()));
                }
            }
            FromSwarm::NewExternalAddrCandidate { addr }
            | FromSwarm::ExternalAddrConfirmed { addr }
                if !crate::protocol::is_relayed(addr) =>
            {
                self.candidates.retain(|a| a != addr);
                self.candidates.insert(0, addr.clone());
                self.candidates.truncate(MAX_CANDIDATES);
            }
            _ => {}
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        if stream.protocol != PROTOCOL {
            return self.dcutr.on_inbound_stream(stream);
        }
        let InboundStream {
            peer,
            connection,
            stream,
            ..
        } = stream;
        if !self.relayed.contains(&connection) {
            // A spray only leaves a relay: on any other connection no DCUtR would follow.
            debug!(%peer, "connector: refusing a spray stream on a direct connection");
            drop(stream);
            return;
        }
        let Some(generation) = self.new_session(peer, connection, false) else {
            debug!(%peer, "connector: refusing a spray stream (session running or limit)");
            return;
        };
        let fut = answer_hello(stream, self.hello(), self.config.spray.clone());
        let timeout = self.config.hello_timeout;
        if self
            .tasks
            .try_push((peer, generation), timeout, fut.boxed())
            .is_err()
        {
            self.sessions.remove(&peer);
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if self.outbox.stream(&result.id).is_none() {
            return self.dcutr.on_outbound_stream(result);
        }
        let Some(key) = self.outbox.take_stream(result.id) else {
            return;
        };
        let (peer, generation) = key;
        if self.sessions.get(&peer).map(|s| s.generation) != Some(generation) {
            return;
        }
        match result.result {
            Ok(out) => {
                let fut = open_hello(out.stream, self.hello());
                let timeout = self.config.hello_timeout;
                if self.tasks.try_push(key, timeout, fut.boxed()).is_err() {
                    self.run(peer, Method::Dcutr { prediction: true }, None);
                }
            }
            Err(e) => {
                debug!(%peer, error = %e, "connector: no spray stream; plain DCUtR");
                self.run(peer, Method::Dcutr { prediction: true }, None);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<ConnectorEvent>> {
        self.waker = Some(cx.waker().clone());
        loop {
            while let Poll::Ready((key, result)) = self.tasks.poll_result(cx) {
                self.task_done(key, result);
            }
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            match self.dcutr.poll(cx) {
                Poll::Ready(command) => match command.into_event() {
                    Ok(event) => {
                        self.on_dcutr_event(&event);
                        let _ = self.outbox.event(ConnectorEvent::Holepunch(event));
                    }
                    Err(command) => return Poll::Ready(command),
                },
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
#[path = "behaviour_tests.rs"]
mod tests;
