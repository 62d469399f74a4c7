//! A discrete-event simulator for [`GossipsubEngine`]s (feature `sim`): a virtual clock, a
//! seeded RNG, per-RPC latency and loss, nodes leaving and joining (churn), and Sybil nodes
//! running attacks. The same seed replays the same run exactly. It is what the 1,000-node
//! runs in `tests/sim.rs` use; [`scenario`] has the two standard runs and their report.
//!
//! Each node is one engine subscribed to one topic. An RPC is delayed by a uniformly random
//! latency and lost with a fixed probability (control and data alike, as a lossy link would
//! lose whole RPCs); a node that leaves crashes (no PRUNE, no unsubscription: its peers see
//! the connection close one latency later) and one that joins again starts a fresh engine
//! under the same key, dialing random online nodes. A *Sybil* node runs a real engine (it
//! subscribes, grafts, gossips IHAVE) but forwards no message and answers no IWANT, and
//! every heartbeat interval sends its [`Attack`] to all its peers.
//!
//! ```
//! use std::time::Duration;
//! use meshwire_pubsub::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::new(30, 7));
//! sim.start();
//! sim.run_for(Duration::from_secs(3));
//! let m = sim.publish(0).expect("node 0 has subscribed peers");
//! sim.run_for(Duration::from_secs(2));
//! assert_eq!(sim.delivered_count(m), 29);
//! ```

pub mod scenario;

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};

use crate::engine::{GossipsubConfig, GossipsubEngine, PeerKind, TopicHash};
use crate::rng::Rng;
use crate::wire::{self, sign, ControlMessage, Rpc};

/// What a Sybil node does besides never forwarding messages nor answering IWANT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attack {
    /// Nothing more: it takes mesh slots and delivers nothing (and breaks the promises of the
    /// IHAVEs its engine sends).
    Silent,
    /// Sends [`SimConfig::attack_volume`] messages with invalid signatures to each peer.
    InvalidSpam,
    /// GRAFTs every peer on the topic, again and again, through any PRUNE and backoff.
    GraftSpam,
    /// Asks each peer (IWANT) for the last 64 messages published and
    /// [`SimConfig::attack_volume`] × 10 made-up ids.
    IwantFlood,
}

impl Attack {
    /// Every attack, in order.
    pub const ALL: [Attack; 4] = [
        Attack::Silent,
        Attack::InvalidSpam,
        Attack::GraftSpam,
        Attack::IwantFlood,
    ];
}

/// Parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of everything random (keys, topology, latency, loss, engine seeds).
    pub seed: u64,
    /// Every node's engine configuration (its `seed` is replaced per node).
    pub gossipsub: GossipsubConfig,
    /// The topic every node subscribes to.
    pub topic: TopicHash,
    /// Peers each honest node dials at start and when it joins again (others dial it too).
    pub dials: usize,
    /// Peers each Sybil dials at start.
    pub sybil_dials: usize,
    /// One-way latency of an RPC, uniform in `[min, max]`.
    pub latency: (Duration, Duration),
    /// Probability that an RPC is lost.
    pub loss: f64,
    /// Payload bytes of each published message (at least 8: the message number).
    pub message_size: usize,
    /// Invalid messages (×1) or made-up IWANT ids (×10) a Sybil sends each peer per
    /// heartbeat interval.
    pub attack_volume: usize,
}

impl SimConfig {
    /// `nodes` nodes with the engine's default configuration (but a 1 s initial heartbeat
    /// delay), 8 dials each, 10–60 ms latency, no loss, 64-byte messages.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            gossipsub: GossipsubConfig {
                heartbeat_initial_delay: Duration::from_secs(1),
                ..GossipsubConfig::default()
            },
            topic: TopicHash::from("sim"),
            dials: 8,
            sybil_dials: 16,
            latency: (Duration::from_millis(10), Duration::from_millis(60)),
            loss: 0.0,
            message_size: 64,
            attack_volume: 5,
        }
    }
}

/// Network counters of a simulation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// RPCs handed to the network by engines.
    pub rpcs_sent: u64,
    /// RPCs dropped by the loss model.
    pub rpcs_lost: u64,
    /// RPCs dropped because their receiver (or sender) had left.
    pub rpcs_to_offline: u64,
    /// Copies of published messages that reached an honest node (firsts and duplicates).
    pub message_arrivals: u64,
    /// Attack RPCs sent by Sybils.
    pub attack_rpcs: u64,
    /// Published messages honest nodes sent to Sybils (IWANT answers and mesh forwarding).
    pub messages_to_sybils: u64,
    /// Nodes that left; nodes that joined again.
    pub leaves: u64,
    /// Nodes that joined again after leaving.
    pub joins: u64,
}

/// A published message's record.
#[derive(Clone, Debug)]
pub struct Published {
    /// Its publisher.
    pub publisher: usize,
    /// When it was published (virtual time since the start).
    pub at: Duration,
    /// Its message id.
    pub id: Vec<u8>,
    /// When each node first received it (`None`: never).
    pub first: Vec<Option<Duration>>,
}

struct Node {
    key: Keypair,
    peer: PeerId,
    engine: GossipsubEngine,
    online: bool,
    /// Incarnation: bumped each time the node leaves, so stale events are dropped.
    generation: u32,
    sybil: Option<Attack>,
    /// `(joined, left)` intervals of virtual time online.
    intervals: Vec<(Duration, Option<Duration>)>,
    /// The heartbeat wake-up queued, to queue one at a time.
    wake: Option<Instant>,
}

enum Ev {
    Wake(usize, u32),
    Rpc {
        to: usize,
        to_gen: u32,
        from: usize,
        from_gen: u32,
        rpc: Rpc,
    },
    Disconnected {
        to: usize,
        to_gen: u32,
        peer: PeerId,
    },
    Attack(usize, u32),
}

struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first from a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulator: see the [module docs](self).
pub struct Sim {
    config: SimConfig,
    rng: Rng,
    start: Instant,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    links: Vec<BTreeSet<usize>>,
    published: Vec<Published>,
    by_data: HashMap<u64, usize>,
    counters: SimCounters,
    forged_seqno: u64,
    started: bool,
}

fn keypair(rng: &mut Rng) -> Keypair {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Keypair::from_secret_bytes(secret)
}

impl Sim {
    /// `config.nodes` honest nodes, not yet connected (see [`Self::set_sybil`], [`Self::start`]).
    ///
    /// # Panics
    ///
    /// If `config.gossipsub` is refused by [`GossipsubConfig::validate`].
    pub fn new(config: SimConfig) -> Self {
        let mut rng = Rng::new(config.seed);
        let start = Instant::now();
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut index = HashMap::new();
        for i in 0..config.nodes {
            let key = keypair(&mut rng);
            let peer = key.peer_id();
            index.insert(peer, i);
            let engine = Self::new_engine(&config, &key, rng.next_u64(), 0);
            nodes.push(Node {
                key,
                peer,
                engine,
                online: false,
                generation: 0,
                sybil: None,
                intervals: Vec::new(),
                wake: None,
            });
        }
        Sim {
            links: vec![BTreeSet::new(); config.nodes],
            config,
            rng,
            start,
            now: start,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            index,
            published: Vec::new(),
            by_data: HashMap::new(),
            counters: SimCounters::default(),
            forged_seqno: 0,
            started: false,
        }
    }

    fn new_engine(
        config: &SimConfig,
        key: &Keypair,
        seed: u64,
        generation: u32,
    ) -> GossipsubEngine {
        let c = GossipsubConfig {
            seed,
            ..config.gossipsub.clone()
        };
        // Sequence numbers distinct across incarnations (message ids are author + seqno).
        let first_seqno = (u64::from(generation) << 32) + 1;
        match GossipsubEngine::new(key.clone(), c, first_seqno) {
            Ok(e) => e,
            Err(e) => panic!("simulation gossipsub config refused: {e}"),
        }
    }

    /// Makes node `i` a Sybil running `attack` (before [`Self::start`]).
    pub fn set_sybil(&mut self, i: usize, attack: Attack) {
        self.nodes[i].sybil = Some(attack);
    }

    /// The attack node `i` runs, if it is a Sybil.
    pub fn sybil(&self, i: usize) -> Option<Attack> {
        self.nodes[i].sybil
    }

    /// Brings every node online: each dials its random peers, subscribes, and Sybils start
    /// attacking one heartbeat interval later.
    pub fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let n = self.nodes.len();
        for i in 0..n {
            self.nodes[i].online = true;
            self.nodes[i].intervals.push((Duration::ZERO, None));
        }
        for i in 0..n {
            let dials = if self.nodes[i].sybil.is_some() {
                self.config.sybil_dials
            } else {
                self.config.dials
            };
            for j in self.random_online(i, dials) {
                self.connect(i, j);
            }
        }
        let topic = self.config.topic.clone();
        for i in 0..n {
            let now = self.now;
            self.nodes[i].engine.subscribe(now, topic.clone());
            self.pump(i);
            if self.nodes[i].sybil.is_some() {
                let at = self.now + self.config.gossipsub.heartbeat_interval;
                self.push(at, Ev::Attack(i, 0));
            }
        }
    }

    /// Up to `n` distinct random online nodes other than `i` and not linked to it.
    fn random_online(&mut self, i: usize, n: usize) -> Vec<usize> {
        let mut candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].online && !self.links[i].contains(&j))
            .collect();
        self.rng.shuffle(&mut candidates);
        candidates.truncate(n);
        candidates
    }

    /// `a` dials `b` (the handshake takes no virtual time).
    fn connect(&mut self, a: usize, b: usize) {
        if a == b || !self.links[a].insert(b) {
            return;
        }
        self.links[b].insert(a);
        let now = self.now;
        let (pa, pb) = (self.nodes[a].peer, self.nodes[b].peer);
        self.nodes[a]
            .engine
            .handle_peer_connected(now, pb, PeerKind::Gossipsub1_2, true);
        self.nodes[b]
            .engine
            .handle_peer_connected(now, pa, PeerKind::Gossipsub1_2, false);
        self.pump(a);
        self.pump(b);
    }

    /// Node `i` crashes: it stops at once; its peers see the connections close one latency
    /// later. `false` if it was not online.
    pub fn leave(&mut self, i: usize) -> bool {
        if !self.nodes[i].online {
            return false;
        }
        let elapsed = self.elapsed();
        let node = &mut self.nodes[i];
        node.online = false;
        node.generation += 1;
        node.wake = None;
        if let Some(last) = node.intervals.last_mut() {
            last.1 = Some(elapsed);
        }
        let peer = node.peer;
        let links = std::mem::take(&mut self.links[i]);
        for j in links {
            self.links[j].remove(&i);
            let at = self.now + self.latency();
            let to_gen = self.nodes[j].generation;
            self.push(
                at,
                Ev::Disconnected {
                    to: j,
                    to_gen,
                    peer,
                },
            );
        }
        self.counters.leaves += 1;
        true
    }

    /// Node `i` joins again with a fresh engine (same key), dials [`SimConfig::dials`] random
    /// online nodes and subscribes. `false` if it was online.
    pub fn join(&mut self, i: usize) -> bool {
        if self.nodes[i].online {
            return false;
        }
        let seed = self.rng.next_u64();
        let elapsed = self.elapsed();
        let node = &mut self.nodes[i];
        node.engine = Self::new_engine(&self.config, &node.key, seed, node.generation);
        node.online = true;
        node.intervals.push((elapsed, None));
        for j in self.random_online(i, self.config.dials) {
            self.connect(i, j);
        }
        let now = self.now;
        let topic = self.config.topic.clone();
        self.nodes[i].engine.subscribe(now, topic);
        self.pump(i);
        if self.nodes[i].sybil.is_some() {
            let at = self.now + self.config.gossipsub.heartbeat_interval;
            let generation = self.nodes[i].generation;
            self.push(at, Ev::Attack(i, generation));
        }
        self.counters.joins += 1;
        true
    }

    /// Node `i` publishes the next message (its payload carries the message number); the
    /// message number, or `None` if the node is offline or the engine refused it.
    pub fn publish(&mut self, i: usize) -> Option<usize> {
        if !self.nodes[i].online {
            return None;
        }
        let number = self.published.len();
        let mut data = (number as u64).to_le_bytes().to_vec();
        data.resize(self.config.message_size.max(8), 0xAB);
        let now = self.now;
        let topic = self.config.topic.clone();
        let id = self.nodes[i].engine.publish(now, topic, data).ok()?;
        let mut first = vec![None; self.nodes.len()];
        first[i] = Some(self.elapsed());
        self.published.push(Published {
            publisher: i,
            at: self.elapsed(),
            id: id.0,
            first,
        });
        self.by_data.insert(number as u64, number);
        self.pump(i);
        Some(number)
    }

    /// Runs events for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(top) = self.queue.peek() {
            if top.at > end {
                break;
            }
            let Some(q) = self.queue.pop() else { break };
            self.now = q.at;
            self.handle(q.ev);
        }
        self.now = end;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(i, generation) => {
                let node = &mut self.nodes[i];
                if !node.online || node.generation != generation {
                    return;
                }
                node.wake = None;
                node.engine.handle_timeout(self.now);
                self.pump(i);
            }
            Ev::Rpc {
                to,
                to_gen,
                from,
                from_gen,
                rpc,
            } => {
                let live = |n: &Node, g: u32| n.online && n.generation == g;
                if !live(&self.nodes[to], to_gen) || !live(&self.nodes[from], from_gen) {
                    self.counters.rpcs_to_offline += 1;
                    return;
                }
                if self.nodes[to].sybil.is_none() {
                    self.count_arrivals(to, &rpc);
                }
                let peer = self.nodes[from].peer;
                let now = self.now;
                self.nodes[to].engine.handle_rpc(now, peer, rpc);
                self.pump(to);
            }
            Ev::Disconnected { to, to_gen, peer } => {
                let node = &mut self.nodes[to];
                if !node.online || node.generation != to_gen {
                    return;
                }
                node.engine.handle_peer_disconnected(self.now, &peer);
                self.pump(to);
            }
            Ev::Attack(i, generation) => {
                let node = &self.nodes[i];
                if !node.online || node.generation != generation {
                    return;
                }
                if let Some(attack) = node.sybil {
                    self.attack(i, attack);
                }
                let at = self.now + self.config.gossipsub.heartbeat_interval;
                self.push(at, Ev::Attack(i, generation));
            }
        }
    }

    /// Records the copies of published messages in an RPC reaching honest node `to`.
    fn count_arrivals(&mut self, to: usize, rpc: &Rpc) {
        let elapsed = self.elapsed();
        for m in &rpc.publish {
            let Some(number) = message_number(m.data.as_deref()) else {
                continue;
            };
            let Some(&k) = self.by_data.get(&number) else {
                continue;
            };
            // (Forged messages carry no message number: see `Attack::InvalidSpam`.)
            self.counters.message_arrivals += 1;
            let first = &mut self.published[k].first[to];
            if first.is_none() {
                *first = Some(elapsed);
            }
        }
    }

    /// Takes node `i`'s RPCs onto the network and drops its events (deliveries are recorded
    /// from the RPCs themselves); queues its next heartbeat.
    fn pump(&mut self, i: usize) {
        while self.nodes[i].engine.poll_event().is_some() {}
        let mut out = Vec::new();
        while let Some((peer, rpc)) = self.nodes[i].engine.poll_transmit() {
            if let Some(&j) = self.index.get(&peer) {
                out.push((j, rpc));
            }
        }
        // The engine serves peers in an order that depends on hash maps; sorted by node
        // (each peer's RPCs keeping their order), latencies and losses are drawn the same way
        // in every run of a seed.
        out.sort_by_key(|(j, _)| *j);
        for (j, mut rpc) in out {
            if self.nodes[i].sybil.is_some() {
                // A Sybil forwards nothing and answers no IWANT.
                rpc.publish.clear();
                if rpc.subscriptions.is_empty() && rpc.control.is_none() {
                    continue;
                }
            }
            if self.nodes[j].sybil.is_some() && self.nodes[i].sybil.is_none() {
                self.counters.messages_to_sybils += rpc.publish.len() as u64;
            }
            self.send(i, j, rpc);
        }
        let node = &mut self.nodes[i];
        if let Some(t) = node.engine.poll_timeout() {
            if node.wake != Some(t) {
                node.wake = Some(t);
                let generation = node.generation;
                self.push(t.max(self.now), Ev::Wake(i, generation));
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, rpc: Rpc) {
        self.counters.rpcs_sent += 1;
        if self.config.loss > 0.0 && self.uniform() < self.config.loss {
            self.counters.rpcs_lost += 1;
            return;
        }
        let at = self.now + self.latency();
        let ev = Ev::Rpc {
            to,
            to_gen: self.nodes[to].generation,
            from,
            from_gen: self.nodes[from].generation,
            rpc,
        };
        self.push(at, ev);
    }

    /// Sybil `i`'s attack RPCs to each of its peers.
    fn attack(&mut self, i: usize, attack: Attack) {
        let peers: Vec<usize> = self.links[i].iter().copied().collect();
        let topic = self.config.topic.as_str().to_string();
        let volume = self.config.attack_volume;
        for j in peers {
            let rpc = match attack {
                Attack::Silent => continue,
                Attack::InvalidSpam => {
                    let publish = (0..volume)
                        .map(|_| {
                            self.forged_seqno += 1;
                            let mut m = sign::sign(
                                &self.nodes[i].key,
                                self.forged_seqno,
                                topic.clone(),
                                b"spam".to_vec(),
                            );
                            m.data = Some(b"spam!".to_vec());
                            m
                        })
                        .collect();
                    Rpc {
                        publish,
                        ..Rpc::default()
                    }
                }
                Attack::GraftSpam => control_rpc(ControlMessage {
                    graft: vec![wire::ControlGraft {
                        topic_id: Some(topic.clone()),
                    }],
                    ..ControlMessage::default()
                }),
                Attack::IwantFlood => {
                    let mut ids: Vec<Vec<u8>> = self
                        .published
                        .iter()
                        .rev()
                        .take(64)
                        .map(|p| p.id.clone())
                        .collect();
                    for _ in 0..volume * 10 {
                        ids.push(self.rng.next_u64().to_le_bytes().to_vec());
                    }
                    control_rpc(ControlMessage {
                        iwant: vec![wire::ControlIWant { message_ids: ids }],
                        ..ControlMessage::default()
                    })
                }
            };
            self.counters.attack_rpcs += 1;
            self.send(i, j, rpc);
        }
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng.next_u64() % (span + 1)
        };
        lo + Duration::from_micros(extra)
    }

    // ---- Observations ----

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time since the simulation was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Node `i`'s engine (its current incarnation).
    pub fn engine(&self, i: usize) -> &GossipsubEngine {
        &self.nodes[i].engine
    }

    /// Node `i`'s peer id.
    pub fn peer_id(&self, i: usize) -> PeerId {
        self.nodes[i].peer
    }

    /// The node with peer id `peer`.
    pub fn node_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    /// Whether node `i` is online.
    pub fn is_online(&self, i: usize) -> bool {
        self.nodes[i].online
    }

    /// Whether node `i` was online for the whole of `[from, to]` (virtual time).
    pub fn online_throughout(&self, i: usize, from: Duration, to: Duration) -> bool {
        self.nodes[i]
            .intervals
            .iter()
            .any(|(joined, left)| *joined <= from && left.is_none_or(|l| l >= to))
    }

    /// The nodes node `i` is connected to.
    pub fn links(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.links[i].iter().copied()
    }

    /// The messages published so far, by message number.
    pub fn published(&self) -> &[Published] {
        &self.published
    }

    /// How many nodes other than its publisher have received message `m`.
    pub fn delivered_count(&self, m: usize) -> usize {
        let p = &self.published[m];
        p.first
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != p.publisher && t.is_some())
            .count()
    }

    /// The network counters.
    pub fn counters(&self) -> &SimCounters {
        &self.counters
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A uniform random index below `n` from the simulation's RNG (for scenario drivers, so
    /// a run stays a function of its seed).
    pub fn random_below(&mut self, n: usize) -> usize {
        self.rng.below(n.max(1))
    }
}

fn control_rpc(control: ControlMessage) -> Rpc {
    Rpc {
        control: Some(control),
        ..Rpc::default()
    }
}

/// The message number in a simulated payload.
fn message_number(data: Option<&[u8]>) -> Option<u64> {
    let bytes: [u8; 8] = data?.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}
