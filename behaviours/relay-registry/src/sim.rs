//! A seeded simulation of the registry: hundreds of [`RegistryEngine`]s (relays and clients
//! with auto relay) on a virtual clock, over a modelled DHT and network (feature `sim`).
//!
//! The model:
//!
//! - **Network.** Nodes sit at random points of a square [`SimConfig::plane_ms`] wide; the
//!   RTT between two is their distance in ms plus 2 ms. A probe answers after one RTT (the
//!   ping on a new connection); a reservation after two (handshake, then RESERVE).
//! - **DHT.** One global store: a publication, an announcement, a provider search or a record
//!   read completes after [`SimConfig::dht_latency`] and sees the store as it is then.
//! - **Relays** register at the start with a capacity drawn from [`SimConfig::capacity`],
//!   refresh with their true load, admit a reservation only below capacity (else refuse it as
//!   full), and free a slot on release.
//! - **Clients** turn auto relay on at random times within [`SimConfig::join_spread`].
//! - **Failures.** At [`SimConfig::kill_at`], [`SimConfig::kills`] relays die. A share
//!   [`SimConfig::silent_share`] die silently: their clients notice after
//!   [`SimConfig::idle_timeout`] (QUIC's idle timeout); the others close their connections
//!   and are noticed after one RTT. Dials of a dead relay fail after [`SimConfig::dial_timeout`].
//!
//! The report gives the spread of load over the relays just before the kills, and the
//! failover time of every client that lost a reservation: from the relay's death to the
//! replacement reservation.
//!
//! ```
//! use meshwire_relay_registry::sim::{run, SimConfig};
//!
//! let report = run(&SimConfig { nodes: 60, relays: 6, kills: 1, ..SimConfig::default() })?;
//! assert_eq!(report.clients_fully_reserved, report.clients);
//! assert!(report.utilization_max_over_mean < 3.0);
//! # Ok::<(), meshwire_relay_registry::sim::SimError>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};

use multiaddr::{Multiaddr, Protocol};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    Action, AutoRelayConfig, RegisterOpts, RegistryConfig, RegistryEngine, RegistryEvent,
    ReservationFailure,
};

/// Settings of a simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice (default 1).
    pub seed: u64,
    /// Nodes, relays included (default 500).
    pub nodes: usize,
    /// Relays among them (default 20).
    pub relays: usize,
    /// Relay capacities, drawn uniformly from this range (default 40..=160).
    pub capacity: (u32, u32),
    /// Reservations each client keeps (default 2).
    pub reservations: usize,
    /// The registry settings of every node (auto relay is set on clients when they join).
    pub registry: RegistryConfig,
    /// Clients join uniformly within this time (default 60 s).
    pub join_spread: Duration,
    /// Side of the square the nodes sit on, in ms of RTT (default 150).
    pub plane_ms: f64,
    /// Time of one DHT operation (default 200 ms).
    pub dht_latency: Duration,
    /// Relays killed (default 5).
    pub kills: usize,
    /// When they die (default 180 s).
    pub kill_at: Duration,
    /// Share of the killed relays that die silently (default 0.5).
    pub silent_share: f64,
    /// When a silent death is noticed (default 10 s, QUIC's idle timeout).
    pub idle_timeout: Duration,
    /// A dial of a dead relay fails after this (default 5 s).
    pub dial_timeout: Duration,
    /// Simulated time (default 300 s).
    pub duration: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            nodes: 500,
            relays: 20,
            capacity: (40, 160),
            reservations: 2,
            registry: RegistryConfig::default(),
            join_spread: Duration::from_secs(60),
            plane_ms: 150.0,
            dht_latency: Duration::from_millis(200),
            kills: 5,
            kill_at: Duration::from_secs(180),
            silent_share: 0.5,
            idle_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(5),
            duration: Duration::from_secs(300),
        }
    }
}

/// One relay at the time of the kills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayLoad {
    /// The relay.
    pub relay: PeerId,
    /// Its capacity.
    pub capacity: u32,
    /// Reservations it held.
    pub load: u32,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// Clients (nodes that are not relays).
    pub clients: usize,
    /// Loads just before the kills.
    pub loads: Vec<RelayLoad>,
    /// max / mean of `load / capacity` over the relays, just before the kills.
    pub utilization_max_over_mean: f64,
    /// max / mean of the loads, just before the kills.
    pub load_max_over_mean: f64,
    /// Clients holding all their reservations at the end.
    pub clients_fully_reserved: usize,
    /// Clients holding all their reservations just before the kills.
    pub clients_fully_reserved_before_kills: usize,
    /// Failover times (death of the relay → replacement reserved) after graceful deaths.
    pub failovers_graceful: Vec<Duration>,
    /// Failover times after silent deaths.
    pub failovers_silent: Vec<Duration>,
    /// Reservations lost to the kills.
    pub reservations_lost: usize,
    /// Reservations refused as full.
    pub refused_full: u64,
    /// The distinct values of `relay_count()` over the live nodes at the end: one value,
    /// the relays alive, once the dead ones expired everywhere.
    pub relay_counts_at_end: BTreeSet<usize>,
}

/// The `q` quantile (0..=1) of sorted `v`.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn max_over_mean(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = v.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        0.0
    }
}

enum Input {
    Wake,
    Join,
    Kill { silent: bool },
    Providers(Vec<PeerId>),
    Record(PeerId, Option<Vec<u8>>),
    Rtt(PeerId, Duration),
    ProbeFailed(PeerId),
    Reserved(PeerId),
    ReserveFailed(PeerId, ReservationFailure),
    Lost(PeerId, ReservationFailure),
    Put(Vec<u8>, Vec<u8>),
    Provide(PeerId, bool),
}

struct Node {
    engine: RegistryEngine,
    pos: (f64, f64),
    alive: bool,
    relay: Option<RelaySide>,
    /// The earliest wake scheduled.
    wake: Option<Instant>,
}

struct RelaySide {
    capacity: u32,
    holders: BTreeSet<usize>,
}

struct Sim {
    cfg: SimConfig,
    nodes: Vec<Node>,
    ids: HashMap<PeerId, usize>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    inputs: HashMap<u64, Input>,
    seq: u64,
    dht: HashMap<Vec<u8>, Vec<u8>>,
    providers: BTreeSet<PeerId>,
    killed_at: HashMap<PeerId, (Instant, bool)>,
    report: SimReport,
}

impl Sim {
    fn at(&mut self, t: Instant, node: usize, input: Input) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, node)));
        self.inputs.insert(self.seq, input);
    }

    fn rtt(&self, a: usize, b: usize) -> Duration {
        let (pa, pb) = (self.nodes[a].pos, self.nodes[b].pos);
        let d = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt();
        Duration::from_secs_f64((d + 2.0) / 1000.0)
    }

    fn schedule_wake(&mut self, node: usize) {
        let Some(t) = self.nodes[node].engine.poll_timeout() else {
            return;
        };
        if self.nodes[node].wake.is_some_and(|w| w <= t) {
            return;
        }
        self.nodes[node].wake = Some(t);
        self.at(t, node, Input::Wake);
    }

    fn set_load(&mut self, relay: usize) {
        if let Some(r) = &self.nodes[relay].relay {
            let load = r.holders.len() as u32;
            self.nodes[relay].engine.set_load(load);
        }
    }

    fn handle(&mut self, now: Instant, n: usize, input: Input) {
        if !self.nodes[n].alive && !matches!(input, Input::Put(..) | Input::Provide(..)) {
            return;
        }
        if matches!(input, Input::Wake) {
            self.nodes[n].wake = None;
        }
        let e = &mut self.nodes[n].engine;
        match input {
            Input::Wake => {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
            Input::Join => {
                let auto = AutoRelayConfig {
                    reservations: self.cfg.reservations,
                    ..AutoRelayConfig::default()
                };
                let _ = e.set_auto_relay(now, Some(auto));
            }
            Input::Kill { silent } => self.kill(now, n, silent),
            Input::Providers(p) => e.handle_providers(p),
            Input::Record(relay, Some(bytes)) => {
                let _ = e.handle_record(now, Some(relay), &bytes);
            }
            Input::Record(_, None) => {}
            Input::Rtt(relay, rtt) => e.handle_rtt(now, &relay, rtt),
            Input::ProbeFailed(relay) => e.handle_probe_failed(now, &relay),
            Input::Reserved(relay) => e.handle_reservation_accepted(now, &relay),
            Input::ReserveFailed(relay, why) | Input::Lost(relay, why) => {
                if why == ReservationFailure::Full {
                    self.report.refused_full += 1;
                }
                e.handle_reservation_failed(now, &relay, why)
            }
            Input::Put(key, value) => {
                self.dht.insert(key, value);
            }
            Input::Provide(relay, on) => {
                if on {
                    self.providers.insert(relay);
                } else {
                    self.providers.remove(&relay);
                }
            }
        }
        self.after(now, n);
    }

    /// Carries out node `n`'s actions and reads its events.
    fn after(&mut self, now: Instant, n: usize) {
        while let Some(action) = self.nodes[n].engine.poll_action() {
            self.act(now, n, action);
        }
        while let Some(event) = self.nodes[n].engine.poll_event() {
            if let RegistryEvent::FailedOver { from, .. } = event {
                if let Some((died, silent)) = self.killed_at.get(&from) {
                    let t = now.saturating_duration_since(*died);
                    if *silent {
                        self.report.failovers_silent.push(t);
                    } else {
                        self.report.failovers_graceful.push(t);
                    }
                }
            }
        }
        self.schedule_wake(n);
    }

    fn act(&mut self, now: Instant, n: usize, action: Action) {
        let lat = self.cfg.dht_latency;
        let me = self.nodes[n].engine.local_peer_id();
        match action {
            Action::Publish { key, value, .. } => self.at(now + lat, n, Input::Put(key, value)),
            Action::Announce { .. } => self.at(now + lat, n, Input::Provide(me, true)),
            Action::StopAnnouncing { .. } => self.at(now + lat, n, Input::Provide(me, false)),
            Action::Discover { .. } => {
                let p: Vec<PeerId> = self.providers.iter().copied().collect();
                self.at(now + lat, n, Input::Providers(p));
            }
            Action::Fetch { relay, key } => {
                // Read when the answer arrives: a Put landing in between is seen.
                let value = self.dht.get(&key).cloned();
                self.at(now + lat, n, Input::Record(relay, value));
            }
            Action::Probe { relay, .. } => {
                let Some(&r) = self.ids.get(&relay) else {
                    return;
                };
                if self.nodes[r].alive {
                    let rtt = self.rtt(n, r);
                    self.at(now + 2 * rtt, n, Input::Rtt(relay, rtt));
                } else {
                    let t = now + self.cfg.dial_timeout;
                    self.at(t, n, Input::ProbeFailed(relay));
                }
            }
            Action::Reserve { relay, .. } => {
                let Some(&r) = self.ids.get(&relay) else {
                    return;
                };
                let rtt = self.rtt(n, r);
                if !self.nodes[r].alive {
                    let t = now + self.cfg.dial_timeout;
                    let why = ReservationFailure::Unreachable("dial timed out".into());
                    self.at(t, n, Input::ReserveFailed(relay, why));
                    return;
                }
                let Some(side) = self.nodes[r].relay.as_mut() else {
                    return;
                };
                if side.holders.contains(&n) {
                    self.at(now + 2 * rtt, n, Input::Reserved(relay));
                } else if (side.holders.len() as u32) < side.capacity {
                    side.holders.insert(n);
                    self.set_load(r);
                    self.at(now + 2 * rtt, n, Input::Reserved(relay));
                } else {
                    let why = ReservationFailure::Full;
                    self.at(now + 2 * rtt, n, Input::ReserveFailed(relay, why));
                }
            }
            Action::Release { relay } => {
                let Some(&r) = self.ids.get(&relay) else {
                    return;
                };
                if let Some(side) = self.nodes[r].relay.as_mut() {
                    side.holders.remove(&n);
                }
                self.set_load(r);
            }
        }
    }

    fn kill(&mut self, now: Instant, r: usize, silent: bool) {
        self.nodes[r].alive = false;
        let id = self.nodes[r].engine.local_peer_id();
        self.killed_at.insert(id, (now, silent));
        let holders: Vec<usize> = self.nodes[r]
            .relay
            .as_mut()
            .map(|s| std::mem::take(&mut s.holders).into_iter().collect())
            .unwrap_or_default();
        for c in holders {
            self.report.reservations_lost += 1;
            let noticed = if silent {
                now + self.cfg.idle_timeout
            } else {
                now + self.rtt(c, r)
            };
            let why = ReservationFailure::Unreachable("connection lost".into());
            self.at(noticed, c, Input::Lost(id, why));
        }
    }

    fn snapshot(&mut self) {
        let mut loads = Vec::new();
        for node in &self.nodes {
            if let Some(side) = &node.relay {
                loads.push(RelayLoad {
                    relay: node.engine.local_peer_id(),
                    capacity: side.capacity,
                    load: side.holders.len() as u32,
                });
            }
        }
        let util: Vec<f64> = loads
            .iter()
            .map(|l| f64::from(l.load) / f64::from(l.capacity))
            .collect();
        let raw: Vec<f64> = loads.iter().map(|l| f64::from(l.load)).collect();
        self.report.utilization_max_over_mean = max_over_mean(&util);
        self.report.load_max_over_mean = max_over_mean(&raw);
        self.report.loads = loads;
        self.report.clients_fully_reserved_before_kills = self.fully_reserved();
    }

    fn fully_reserved(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.relay.is_none())
            .filter(|n| n.engine.reserved_relays().len() == self.cfg.reservations)
            .count()
    }
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The registry settings cannot work.
    #[error("registry config: {0}")]
    Config(#[from] crate::ConfigError),
    /// A relay could not register.
    #[error("register: {0}")]
    Register(#[from] crate::RegisterError),
    /// More relays than nodes, or none.
    #[error("need 1 <= relays <= nodes")]
    Shape,
}

/// Runs the simulation of `cfg`.
///
/// # Errors
///
/// [`SimError`] for settings that cannot run.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimError> {
    if cfg.relays == 0 || cfg.relays > cfg.nodes {
        return Err(SimError::Shape);
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let t0 = Instant::now();
    let t0_unix = 1_700_000_000_000;
    let mut nodes = Vec::with_capacity(cfg.nodes);
    let mut ids = HashMap::new();
    for i in 0..cfg.nodes {
        let key = Keypair::from_seed_for_tests(cfg.seed.wrapping_mul(1_000_003) + i as u64);
        ids.insert(key.peer_id(), i);
        let engine =
            RegistryEngine::new(key, cfg.registry.clone(), t0)?.with_unix_time(t0, t0_unix);
        let pos = (
            rng.gen::<f64>() * cfg.plane_ms,
            rng.gen::<f64>() * cfg.plane_ms,
        );
        nodes.push(Node {
            engine,
            pos,
            alive: true,
            relay: None,
            wake: None,
        });
    }
    let mut sim = Sim {
        cfg: cfg.clone(),
        nodes,
        ids,
        queue: BinaryHeap::new(),
        inputs: HashMap::new(),
        seq: 0,
        dht: HashMap::new(),
        providers: BTreeSet::new(),
        killed_at: HashMap::new(),
        report: SimReport {
            clients: cfg.nodes - cfg.relays,
            loads: Vec::new(),
            utilization_max_over_mean: 0.0,
            load_max_over_mean: 0.0,
            clients_fully_reserved: 0,
            clients_fully_reserved_before_kills: 0,
            failovers_graceful: Vec::new(),
            failovers_silent: Vec::new(),
            reservations_lost: 0,
            refused_full: 0,
            relay_counts_at_end: BTreeSet::new(),
        },
    };
    // Relays: the first `relays` nodes.
    for r in 0..cfg.relays {
        let capacity = rng.gen_range(cfg.capacity.0..=cfg.capacity.1);
        let endpoint = Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::from(0x0a00_0000 + r as u32)))
            .with(Protocol::Udp(4001))
            .with(Protocol::QuicV1);
        let node = &mut sim.nodes[r];
        node.relay = Some(RelaySide {
            capacity,
            holders: BTreeSet::new(),
        });
        node.engine.handle_external_addr_confirmed(&endpoint);
        node.engine
            .register(t0, endpoint, RegisterOpts { capacity })?;
        sim.after(t0, r);
    }
    for c in cfg.relays..cfg.nodes {
        let join = t0 + cfg.join_spread.mul_f64(rng.gen::<f64>());
        sim.at(join, c, Input::Join);
        sim.schedule_wake(c);
    }
    let mut victims: Vec<usize> = (0..cfg.relays).collect();
    for i in 0..cfg.kills.min(cfg.relays) {
        let j = rng.gen_range(i..victims.len());
        victims.swap(i, j);
        let silent = (i as f64) < cfg.kills as f64 * cfg.silent_share;
        sim.at(t0 + cfg.kill_at, victims[i], Input::Kill { silent });
    }
    let end = t0 + cfg.duration;
    let mut snapshot_done = false;
    while let Some(Reverse((t, seq, n))) = sim.queue.pop() {
        if t > end {
            break;
        }
        if !snapshot_done && t >= t0 + cfg.kill_at {
            sim.snapshot();
            snapshot_done = true;
        }
        if let Some(input) = sim.inputs.remove(&seq) {
            sim.handle(t, n, input);
        }
    }
    if !snapshot_done {
        sim.snapshot();
    }
    sim.report.clients_fully_reserved = sim.fully_reserved();
    for node in sim.nodes.iter_mut().filter(|n| n.alive) {
        node.engine.handle_timeout(end);
    }
    let known: BTreeSet<usize> = sim
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.engine.relay_count())
        .collect();
    sim.report.relay_counts_at_end = known;
    sim.report.failovers_graceful.sort();
    sim.report.failovers_silent.sort();
    Ok(sim.report)
}
