//! A discrete-event simulator for [`SwimEngine`]s: a virtual clock, a seeded RNG, per-message
//! latency, datagram loss, node crashes and slow nodes. It is what the 1,000-member tests
//! in `tests/sim.rs` run; use it to try configurations.
//!
//! Each node is one [`SwimEngine`] in one realm. Datagrams are delayed by a uniformly random
//! latency and lost with a fixed probability; push-pull exchanges (QUIC streams) are
//! reliable but delayed the same way, and fail after [`SimConfig::stream_failure_delay`] when
//! the other side has crashed. A *slow* node models a member whose message processing is
//! delayed (CPU stalls, an overloaded process): every message it receives is handled only
//! after an extra random delay, while its own timers still fire on time — the situation
//! Lifeguard addresses, where such a node would otherwise wrongly suspect healthy members.
//!
//! ```
//! use std::time::Duration;
//! use meshwire_swim::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig { loss: 0.1, ..SimConfig::new(20, 7) });
//! for i in 1..20 {
//!     sim.join(i, Duration::from_millis(10 * i as u64), vec![0]);
//! }
//! sim.run_until(Duration::from_secs(60), &mut |_, _, _| {});
//! assert!((0..20).all(|i| sim.engine(i).live_member_count(sim.realm()) == 19));
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;

use crate::engine::{SwimConfig, SwimEngine, SwimEvent, TransmitKind};
use crate::member::NodeMeta;
use crate::realm::Realm;
use crate::record::{AliveVerifier, Ed25519Verifier, Signature};
use crate::rng::SwimRng;
use crate::wire::{Body, MemberRecord, Message, PushPull};

/// An [`AliveVerifier`] that remembers the records it found valid, shared by all the
/// engines of a simulation: each distinct signed record is checked once, not once per node
/// (a 1,000-node run would otherwise spend most of its time in ed25519). Only valid results
/// are remembered, keyed by signature and compared on the whole signed message.
#[derive(Debug, Default)]
pub struct CachingVerifier {
    valid: Mutex<HashMap<Signature, Vec<u8>>>,
}

impl AliveVerifier for CachingVerifier {
    fn verify(&self, peer: &PeerId, message: &[u8], signature: &Signature) -> bool {
        if let Ok(cache) = self.valid.lock() {
            if cache.get(signature).is_some_and(|m| m == message) {
                return true;
            }
        }
        let ok = Ed25519Verifier.verify(peer, message, signature);
        if ok {
            if let Ok(mut cache) = self.valid.lock() {
                cache.insert(*signature, message.to_vec());
            }
        }
        ok
    }
}

/// A key pair from the simulation's RNG (reproducible; never a real identity).
pub fn sim_keypair(rng: &mut SwimRng) -> Keypair {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Keypair::from_secret_bytes(secret)
}

/// Parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of everything random (node seeds, latency, loss).
    pub seed: u64,
    /// The protocol configuration of every node.
    pub swim: SwimConfig,
    /// The realm every node is in.
    pub realm: Realm,
    /// One-way latency, uniform in `[min, max]`.
    pub latency: (Duration, Duration),
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// How long a push-pull to a crashed node takes to fail.
    pub stream_failure_delay: Duration,
    /// Encode every datagram and decode it at the receiver (checks the wire path and the
    /// MTU; slower).
    pub encode: bool,
}

impl SimConfig {
    /// `nodes` nodes with the default protocol configuration, 5–25 ms latency, no loss.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            swim: SwimConfig::default(),
            realm: Realm::new("org.meshwire.sim")
                .unwrap_or_else(|_| unreachable!("valid realm literal")),
            latency: (Duration::from_millis(5), Duration::from_millis(25)),
            loss: 0.0,
            stream_failure_delay: Duration::from_secs(2),
            encode: false,
        }
    }
}

/// Network counters of a simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Datagrams sent by engines.
    pub datagrams_sent: u64,
    /// Datagrams dropped by the loss model.
    pub datagrams_lost: u64,
    /// Datagrams handed to a (not crashed) receiver.
    pub datagrams_delivered: u64,
    /// Push-pull requests sent.
    pub push_pulls: u64,
    /// Transmits to unknown peers.
    pub unroutable: u64,
    /// Encoded datagrams larger than the MTU (with [`SimConfig::encode`]).
    pub oversized_datagrams: u64,
    /// Datagrams the receiver could not decode (with [`SimConfig::encode`]).
    pub decode_errors: u64,
    /// Largest encoded datagram seen (with [`SimConfig::encode`]).
    pub largest_datagram: usize,
}

enum Payload {
    Message(Message),
    Bytes(Vec<u8>),
}

enum Ev {
    Wake(usize),
    Datagram {
        to: usize,
        from: PeerId,
        payload: Payload,
    },
    PushPull {
        to: usize,
        from: usize,
        msg: Message,
    },
    PushPullFailed {
        to: usize,
        peer: PeerId,
    },
    Join {
        node: usize,
        seeds: Vec<PeerId>,
    },
}

struct Node {
    engine: SwimEngine,
    peer: PeerId,
    crashed: bool,
    scheduled: Option<Instant>,
    slow: Option<(Duration, Duration)>,
}

/// A simulated network of SWIM nodes.
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    now: Instant,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    /// (time, sequence, slot in `events`), earliest first.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    rng: SwimRng,
    counters: SimCounters,
}

/// A synthetic peer ID of the same shape and size as an ed25519 one (identity multihash of
/// a protobuf public key), made without key generation so large simulations start fast.
pub fn synthetic_peer_id(rng: &mut SwimRng) -> PeerId {
    let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    for _ in 0..4 {
        b.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    PeerId::from_bytes(&b).unwrap_or_else(|_| unreachable!("well-formed identity multihash"))
}

impl Sim {
    /// `cfg.nodes` nodes, each alone in the realm until it joins (see [`Sim::join`]).
    ///
    /// # Panics
    ///
    /// If `cfg.swim` is not a valid configuration.
    pub fn new(cfg: SimConfig) -> Self {
        let base = Instant::now();
        let mut rng = SwimRng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut index = HashMap::with_capacity(cfg.nodes);
        let verifier: Arc<dyn AliveVerifier> = Arc::new(CachingVerifier::default());
        for i in 0..cfg.nodes {
            let key = sim_keypair(&mut rng);
            let peer = key.peer_id();
            let addr: Multiaddr = format!(
                "/ip4/10.{}.{}.{}/udp/4001/quic-v1",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
            .parse()
            .unwrap_or_else(|_| unreachable!("valid multiaddr"));
            let meta = NodeMeta::new(vec![addr], Vec::new())
                .unwrap_or_else(|_| unreachable!("one short address"));
            let mut engine = SwimEngine::new(
                &key,
                [cfg.realm.clone()],
                meta,
                cfg.swim.clone(),
                rng.next_u64(),
                base,
            )
            .unwrap_or_else(|e| panic!("invalid simulation config: {e}"));
            engine.set_verifier(verifier.clone());
            index.insert(peer, i);
            nodes.push(Node {
                engine,
                peer,
                crashed: false,
                scheduled: None,
                slow: None,
            });
        }
        let mut sim = Sim {
            cfg,
            base,
            now: base,
            nodes,
            index,
            heap: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            rng,
            counters: SimCounters::default(),
        };
        for i in 0..sim.nodes.len() {
            sim.reschedule(i);
        }
        sim
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    fn reschedule(&mut self, i: usize) {
        if self.nodes[i].crashed {
            return;
        }
        let now = self.now;
        let t = self.nodes[i].engine.poll_timeout().map(|t| t.max(now));
        if t != self.nodes[i].scheduled {
            self.nodes[i].scheduled = t;
            if let Some(t) = t {
                self.push(t, Ev::Wake(i));
            }
        }
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.cfg.latency;
        lo + (hi.saturating_sub(lo)).mul_f64(self.rng.unit_f64())
    }

    fn processing_delay(&mut self, to: usize) -> Duration {
        match self.nodes[to].slow {
            Some((lo, hi)) => lo + (hi.saturating_sub(lo)).mul_f64(self.rng.unit_f64()),
            None => Duration::ZERO,
        }
    }

    /// The realm of the simulation.
    pub fn realm(&self) -> &Realm {
        &self.cfg.realm
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s engine.
    pub fn engine(&self, i: usize) -> &SwimEngine {
        &self.nodes[i].engine
    }

    /// Node `i`'s peer ID.
    pub fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].peer
    }

    /// The node with this peer ID.
    pub fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    /// Virtual time elapsed since the start.
    pub fn now(&self) -> Duration {
        self.now - self.base
    }

    /// The virtual clock's `Instant` for an elapsed time.
    pub fn instant(&self, elapsed: Duration) -> Instant {
        self.base + elapsed
    }

    /// Network counters.
    pub fn counters(&self) -> &SimCounters {
        &self.counters
    }

    /// Whether node `i` has crashed.
    pub fn is_crashed(&self, i: usize) -> bool {
        self.nodes[i].crashed
    }

    /// Makes node `i` join at virtual time `at` through the nodes `seeds`.
    pub fn join(&mut self, i: usize, at: Duration, seeds: Vec<usize>) {
        let seeds = seeds.into_iter().map(|s| self.nodes[s].peer).collect();
        let at = self.base + at;
        self.push(at, Ev::Join { node: i, seeds });
    }

    /// Crashes node `i` now: it stops processing anything, silently.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
        self.nodes[i].scheduled = None;
    }

    /// Makes node `i` slow (every message it receives is processed after an extra delay
    /// uniform in `[min, max]`), or normal again with `None`.
    pub fn set_slow(&mut self, i: usize, delay: Option<(Duration, Duration)>) {
        self.nodes[i].slow = delay;
    }

    /// Makes every node know every other at once, as if all had joined through node 0 long
    /// ago: each node joins through node 0 (node 0 through node 1) and node 0's full table
    /// comes back at once as the join's answer, handled through the public API like any
    /// other. Skips the join phase (and its dissemination traffic) for simulations that
    /// study a settled group.
    pub fn bootstrap_converged(&mut self, on_event: &mut dyn FnMut(Duration, usize, &SwimEvent)) {
        let realm = self.cfg.realm.clone();
        let members: Vec<MemberRecord> = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.local_record(&realm))
            .collect();
        let answer = Message {
            realm: realm.clone(),
            body: Body::PushPull(PushPull {
                join: true,
                response: true,
                members,
            }),
        };
        for i in 0..self.nodes.len() {
            // Node 0 hears it from node 1; everyone else from node 0.
            let from = if i == 0 { 1 } else { 0 };
            if from >= self.nodes.len() {
                continue;
            }
            let now = self.now;
            let from_peer = self.nodes[from].peer;
            let engine = &mut self.nodes[i].engine;
            let _ = engine.join(now, &realm, &[from_peer]);
            // The join's request is answered right here.
            while engine.poll_transmit().is_some() {}
            let _none = engine.handle_push_pull(now, from_peer, answer.clone());
            self.flush(i, on_event);
        }
    }

    /// Changes the datagram loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Node `i` leaves gracefully now.
    pub fn leave(&mut self, i: usize, on_event: &mut dyn FnMut(Duration, usize, &SwimEvent)) {
        let now = self.now;
        self.nodes[i].engine.leave(now);
        self.flush(i, on_event);
    }

    /// Runs the simulation until virtual time `until`, calling `on_event(time, node, event)`
    /// for every event of every node.
    pub fn run_until(
        &mut self,
        until: Duration,
        on_event: &mut dyn FnMut(Duration, usize, &SwimEvent),
    ) {
        let end = self.base + until;
        while self.heap.peek().is_some_and(|s| s.0 .0 <= end) {
            let Some(Reverse((at, _, slot))) = self.heap.pop() else {
                break;
            };
            let Some(ev) = self.events[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.now = self.now.max(at);
            match ev {
                Ev::Wake(i) => {
                    if self.nodes[i].crashed || self.nodes[i].scheduled != Some(at) {
                        continue;
                    }
                    self.nodes[i].scheduled = None;
                    let now = self.now;
                    self.nodes[i].engine.handle_timeout(now);
                    self.flush(i, on_event);
                }
                Ev::Datagram { to, from, payload } => {
                    if self.nodes[to].crashed {
                        continue;
                    }
                    self.counters.datagrams_delivered += 1;
                    let now = self.now;
                    match payload {
                        Payload::Message(m) => self.nodes[to].engine.handle_message(now, from, m),
                        Payload::Bytes(b) => {
                            if self.nodes[to]
                                .engine
                                .handle_datagram(now, from, &b)
                                .is_err()
                            {
                                self.counters.decode_errors += 1;
                            }
                        }
                    }
                    self.flush(to, on_event);
                }
                Ev::PushPull { to, from, msg } => {
                    let is_request = matches!(&msg.body, Body::PushPull(pp) if !pp.response);
                    if self.nodes[to].crashed {
                        if is_request {
                            let at = self.now + self.cfg.stream_failure_delay;
                            let peer = self.nodes[to].peer;
                            self.push(at, Ev::PushPullFailed { to: from, peer });
                        }
                        continue;
                    }
                    let now = self.now;
                    let from_peer = self.nodes[from].peer;
                    let reply = self.nodes[to].engine.handle_push_pull(now, from_peer, msg);
                    if let Some(reply) = reply {
                        let at = self.now + self.latency() + self.processing_delay(from);
                        self.push(
                            at,
                            Ev::PushPull {
                                to: from,
                                from: to,
                                msg: reply,
                            },
                        );
                    }
                    self.flush(to, on_event);
                }
                Ev::PushPullFailed { to, peer } => {
                    if self.nodes[to].crashed {
                        continue;
                    }
                    let now = self.now;
                    let realm = self.cfg.realm.clone();
                    self.nodes[to]
                        .engine
                        .handle_push_pull_failed(now, peer, &realm);
                    self.flush(to, on_event);
                }
                Ev::Join { node, seeds } => {
                    if self.nodes[node].crashed {
                        continue;
                    }
                    let now = self.now;
                    let realm = self.cfg.realm.clone();
                    let _ = self.nodes[node].engine.join(now, &realm, &seeds);
                    self.flush(node, on_event);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn flush(&mut self, i: usize, on_event: &mut dyn FnMut(Duration, usize, &SwimEvent)) {
        let from = self.nodes[i].peer;
        while let Some(t) = self.nodes[i].engine.poll_transmit() {
            let Some(&j) = self.index.get(&t.to) else {
                self.counters.unroutable += 1;
                continue;
            };
            match t.kind {
                TransmitKind::Datagram => {
                    self.counters.datagrams_sent += 1;
                    let payload = if self.cfg.encode {
                        let bytes = t.message.encode();
                        self.counters.largest_datagram =
                            self.counters.largest_datagram.max(bytes.len());
                        if bytes.len() > self.cfg.swim.mtu {
                            self.counters.oversized_datagrams += 1;
                        }
                        Payload::Bytes(bytes)
                    } else {
                        Payload::Message(t.message)
                    };
                    if self.rng.unit_f64() < self.cfg.loss {
                        self.counters.datagrams_lost += 1;
                        continue;
                    }
                    let at = self.now + self.latency() + self.processing_delay(j);
                    self.push(
                        at,
                        Ev::Datagram {
                            to: j,
                            from,
                            payload,
                        },
                    );
                }
                TransmitKind::PushPull => {
                    self.counters.push_pulls += 1;
                    let at = self.now + self.latency() + self.processing_delay(j);
                    self.push(
                        at,
                        Ev::PushPull {
                            to: j,
                            from: i,
                            msg: t.message,
                        },
                    );
                }
            }
        }
        let rel = self.now - self.base;
        while let Some(e) = self.nodes[i].engine.poll_event() {
            on_event(rel, i, &e);
        }
        self.reschedule(i);
    }
}
