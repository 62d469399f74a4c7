//! A deterministic discrete-event simulation of many [`KadEngine`]s (feature `sim`).
//!
//! Nodes exchange requests and responses through a virtual network on a virtual clock:
//! every message takes a uniformly random latency and is lost with a fixed probability (a lost
//! request or response surfaces as the requester's request timeout, exactly as on a real
//! network). Everything random comes from one seeded RNG, so a run is reproducible.
//!
//! The simulator plays the swarm's part: it delivers requests to [`KadEngine::handle_request`]
//! and responses to [`KadEngine::handle_response`] (as if over a connection the requester dialed
//! to the responder's address), reports refused requests with
//! [`KadEngine::handle_request_failed`], wakes engines at [`KadEngine::poll_timeout`], and emulates
//! identify: when a server-mode node's request reaches another node, the receiver learns the
//! sender's address through [`KadEngine::add_address`] (a client-mode sender is not added).
//!
//! ```
//! use meshwire_kad::sim::{Sim, SimConfig};
//! use meshwire_kad::{Mode, QueryResult};
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(SimConfig { seed: 7, ..SimConfig::default() });
//! let seed = sim.add_node(Mode::Server);
//! let nodes: Vec<_> = (0..20).map(|_| sim.add_node(Mode::Server)).collect();
//! for &n in &nodes {
//!     sim.connect(n, seed);
//!     sim.bootstrap(n).unwrap();
//! }
//! sim.run_for(Duration::from_secs(120));
//! let target = sim.peer_id(nodes[3]).to_bytes();
//! let q = sim.with_engine(nodes[0], |engine, now| engine.find_node(target, now)).unwrap();
//! assert!(sim.run_until_finished(&[(nodes[0], q)], Duration::from_secs(60)));
//! let QueryResult::FindNode(Ok(found)) = &sim.finished(nodes[0], q).unwrap().result else { panic!() };
//! assert_eq!(found.peers[0].id, sim.peer_id(nodes[3]));
//! ```

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::{Multiaddr, Protocol};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::{KadConfig, KadEngine, KadEvent, KadTransmit, Mode, RequestId};
use crate::kbucket::Key;
use crate::protocol::{KadCodec, KadRequest, KadResponse};
use crate::query::{QueryError, QueryId, QueryOrigin, QueryResult, QueryStats};

/// Index of a node in a [`Sim`].
pub type NodeId = usize;

/// The address of a node: `/memory/<id>`.
fn node_addr(id: NodeId) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(id as u64))
}

/// Parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice (latencies, losses, node keys, engines' RNGs).
    pub seed: u64,
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency.
    pub max_latency: Duration,
    /// Probability that a message (request or response) is lost.
    pub loss: f64,
    /// Configuration of every engine.
    pub kad: KadConfig,
    /// Round-trip every message through the wire codec (slower; exercises encoding).
    pub encode_messages: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            min_latency: Duration::from_millis(10),
            max_latency: Duration::from_millis(100),
            loss: 0.0,
            kad: KadConfig::default(),
            encode_messages: false,
        }
    }
}

/// A finished query as recorded by the simulation.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Who started it.
    pub origin: QueryOrigin,
    /// Its outcome.
    pub result: QueryResult,
    /// Its statistics.
    pub stats: QueryStats,
}

/// Message counters of a simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests sent.
    pub requests: u64,
    /// Responses sent.
    pub responses: u64,
    /// Messages lost on the way.
    pub lost: u64,
    /// Messages addressed to removed nodes.
    pub undeliverable: u64,
    /// Requests a node refused to answer.
    pub refused: u64,
}

struct SimNode {
    engine: KadEngine,
    peer: PeerId,
    key: Key,
    addr: Multiaddr,
    mode: Mode,
    wake: Option<Instant>,
}

enum Message {
    Request {
        from: NodeId,
        to: NodeId,
        request_id: RequestId,
        request: KadRequest,
    },
    Response {
        from: NodeId,
        to: NodeId,
        request_id: RequestId,
        response: KadResponse,
    },
    Refused {
        to: NodeId,
        request_id: RequestId,
    },
    Wake(NodeId),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest event (ties: first scheduled).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulation: nodes, virtual network and virtual clock.
pub struct Sim {
    config: SimConfig,
    codec: KadCodec,
    rng: StdRng,
    now: Instant,
    nodes: Vec<Option<SimNode>>,
    by_peer: HashMap<PeerId, NodeId>,
    peers: Vec<PeerId>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    finished: HashMap<(NodeId, QueryId), Finished>,
    stats: SimStats,
}

impl Sim {
    /// An empty simulation starting at an arbitrary instant.
    pub fn new(config: SimConfig) -> Self {
        Sim {
            codec: config.kad.codec(),
            rng: StdRng::seed_from_u64(config.seed),
            // Only differences of instants matter; the epoch is arbitrary.
            now: Instant::now(),
            nodes: Vec::new(),
            by_peer: HashMap::new(),
            peers: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            finished: HashMap::new(),
            stats: SimStats::default(),
            config,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Message counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Adds a node with a fresh deterministic identity; it knows nobody yet.
    pub fn add_node(&mut self, mode: Mode) -> NodeId {
        let id = self.nodes.len();
        let seed: u64 = self.rng.gen();
        let peer = Keypair::from_seed_for_tests(seed).peer_id();
        let mut kad = self.config.kad.clone();
        kad.mode = mode;
        let core_seed = self.rng.gen();
        let mut engine = KadEngine::with_seed(peer, kad, core_seed);
        let addr = node_addr(id);
        engine.set_external_addresses(vec![addr.clone()]);
        self.nodes.push(Some(SimNode {
            engine,
            peer,
            key: Key::from_peer(&peer),
            addr,
            mode,
            wake: None,
        }));
        self.by_peer.insert(peer, id);
        self.peers.push(peer);
        id
    }

    /// Tells `node` about `other` (as identify would): `other` enters `node`'s routing table
    /// if it is a server.
    pub fn connect(&mut self, node: NodeId, other: NodeId) {
        let Some((peer, addr, mode)) = self.node(other).map(|n| (n.peer, n.addr.clone(), n.mode))
        else {
            return;
        };
        if mode == Mode::Server {
            self.with_engine(node, |engine, now| {
                engine.add_address(peer, addr, now);
            });
        }
    }

    /// Starts a bootstrap on `node`.
    pub fn bootstrap(&mut self, node: NodeId) -> Result<QueryId, QueryError> {
        self.with_engine(node, |engine, now| engine.bootstrap(now))
            .unwrap_or(Err(QueryError::NoKnownPeers))
    }

    /// Runs `f` on the engine of a live `node` at the current virtual time, then carries out
    /// what the engine wants to send. `None` if the node was removed.
    pub fn with_engine<R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut KadEngine, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let n = self.nodes.get_mut(node)?.as_mut()?;
        let r = f(&mut n.engine, now);
        self.flush(node);
        Some(r)
    }

    /// The engine of a live node.
    pub fn engine(&self, node: NodeId) -> Option<&KadEngine> {
        self.node(node).map(|n| &n.engine)
    }

    /// The peer id of a node (removed nodes included). Panics for an id never handed out.
    pub fn peer_id(&self, node: NodeId) -> PeerId {
        self.peers[node]
    }

    /// The routing key of a node.
    pub fn key(&self, node: NodeId) -> Option<Key> {
        self.node(node).map(|n| n.key)
    }

    /// The node with this peer id.
    pub fn node_of(&self, peer: &PeerId) -> Option<NodeId> {
        self.by_peer.get(peer).copied()
    }

    /// Ids of the nodes still running.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Removes a node (a crash: it answers nothing from now on).
    pub fn remove_node(&mut self, node: NodeId) {
        if let Some(slot) = self.nodes.get_mut(node) {
            *slot = None;
        }
    }

    /// The recorded result of a finished query.
    pub fn finished(&self, node: NodeId, query: QueryId) -> Option<&Finished> {
        self.finished.get(&(node, query))
    }

    /// Removes and returns the recorded result of a finished query.
    pub fn take_finished(&mut self, node: NodeId, query: QueryId) -> Option<Finished> {
        self.finished.remove(&(node, query))
    }

    fn node(&self, node: NodeId) -> Option<&SimNode> {
        self.nodes.get(node)?.as_ref()
    }

    /// Processes every event up to `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.queue.peek().is_some_and(|s| s.at <= deadline) {
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until every query in `queries` finished (or its node was removed), for at most
    /// `limit` of virtual time. Returns whether they all finished.
    pub fn run_until_finished(&mut self, queries: &[(NodeId, QueryId)], limit: Duration) -> bool {
        let deadline = self.now + limit;
        let done = |s: &Sim| {
            queries
                .iter()
                .all(|k| s.finished.contains_key(k) || s.node(k.0).is_none())
        };
        while !done(self) {
            match self.queue.peek() {
                Some(s) if s.at <= deadline => self.step(),
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
        true
    }

    fn step(&mut self) {
        let Some(Scheduled { at, msg, .. }) = self.queue.pop() else {
            return;
        };
        self.now = self.now.max(at);
        match msg {
            Message::Wake(node) => {
                let Some(n) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                    return;
                };
                if n.wake == Some(at) {
                    n.wake = None;
                    self.flush(node);
                }
            }
            Message::Request {
                from,
                to,
                request_id,
                request,
            } => {
                let Some((from_peer, from_addr, from_mode)) =
                    self.node(from).map(|n| (n.peer, n.addr.clone(), n.mode))
                else {
                    return;
                };
                let now = self.now;
                let Some(n) = self.nodes.get_mut(to).and_then(|n| n.as_mut()) else {
                    self.stats.undeliverable += 1;
                    return;
                };
                if from_mode == Mode::Server {
                    n.engine.add_address(from_peer, from_addr, now);
                }
                let expects = request.expects_response();
                let response = n.engine.handle_request(from_peer, request, now);
                self.flush(to);
                match response {
                    Some(response) => {
                        self.stats.responses += 1;
                        let response = self.through_wire_response(response);
                        if self.lost() {
                            return;
                        }
                        let at = self.now + self.latency();
                        self.schedule(
                            at,
                            Message::Response {
                                from: to,
                                to: from,
                                request_id,
                                response,
                            },
                        );
                    }
                    None if expects => {
                        self.stats.refused += 1;
                        let at = self.now + self.latency();
                        self.schedule(
                            at,
                            Message::Refused {
                                to: from,
                                request_id,
                            },
                        );
                    }
                    None => {}
                }
            }
            Message::Response {
                from,
                to,
                request_id,
                response,
            } => {
                let from_peer = self.peers[from];
                let now = self.now;
                let Some(n) = self.nodes.get_mut(to).and_then(|n| n.as_mut()) else {
                    self.stats.undeliverable += 1;
                    return;
                };
                // The requester dialed the responder at its address.
                n.engine.handle_response(
                    request_id,
                    from_peer,
                    Some(node_addr(from)),
                    response,
                    now,
                );
                self.flush(to);
            }
            Message::Refused { to, request_id } => {
                let now = self.now;
                if let Some(n) = self.nodes.get_mut(to).and_then(|n| n.as_mut()) {
                    n.engine.handle_request_failed(request_id, now);
                    self.flush(to);
                }
            }
        }
    }

    fn through_wire_request(&self, request: KadRequest) -> KadRequest {
        if !self.config.encode_messages {
            return request;
        }
        let decoded = self
            .codec
            .encode_request(&request)
            .and_then(|b| self.codec.decode_request(&b));
        match decoded {
            Ok(Some((r, _))) => r,
            other => panic!("request did not survive the wire: {other:?}"),
        }
    }

    fn through_wire_response(&self, response: KadResponse) -> KadResponse {
        if !self.config.encode_messages {
            return response;
        }
        let decoded = self
            .codec
            .encode_response(&response)
            .and_then(|b| self.codec.decode_response(&b));
        match decoded {
            Ok(Some((r, _))) => r,
            other => panic!("response did not survive the wire: {other:?}"),
        }
    }

    fn lost(&mut self) -> bool {
        let lost = self.config.loss > 0.0 && self.rng.gen_bool(self.config.loss.min(1.0));
        if lost {
            self.stats.lost += 1;
        }
        lost
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = (
            self.config.min_latency,
            self.config.max_latency.max(self.config.min_latency),
        );
        let nanos = self
            .rng
            .gen_range(lo.as_nanos() as u64..=hi.as_nanos() as u64);
        Duration::from_nanos(nanos)
    }

    fn schedule(&mut self, at: Instant, msg: Message) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            msg,
        });
    }

    /// Runs what is due, drains the outputs of `node`'s engine and schedules its next
    /// wake-up.
    fn flush(&mut self, node: NodeId) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) {
            if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                n.engine.handle_timeout(now);
            }
        }
        loop {
            let Some(n) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
                return;
            };
            let Some(KadTransmit {
                request_id,
                peer,
                request,
                ..
            }) = n.engine.poll_transmit()
            else {
                break;
            };
            self.stats.requests += 1;
            let request = self.through_wire_request(request);
            let Some(to) = self.by_peer.get(&peer).copied() else {
                // Nobody has this id: the dial fails.
                let at = now + self.latency();
                self.schedule(
                    at,
                    Message::Refused {
                        to: node,
                        request_id,
                    },
                );
                continue;
            };
            if self.lost() {
                continue;
            }
            let at = now + self.latency();
            self.schedule(
                at,
                Message::Request {
                    from: node,
                    to,
                    request_id,
                    request,
                },
            );
        }
        let Some(n) = self.nodes.get_mut(node).and_then(|n| n.as_mut()) else {
            return;
        };
        while let Some(event) = n.engine.poll_event() {
            if let KadEvent::QueryFinished {
                id,
                origin,
                result,
                stats,
            } = event
            {
                self.finished.insert(
                    (node, id),
                    Finished {
                        origin,
                        result,
                        stats,
                    },
                );
            }
        }
        if let Some(t) = n.engine.poll_timeout() {
            let t = t.max(now);
            if n.wake.is_none_or(|w| t < w) {
                n.wake = Some(t);
                self.schedule(t, Message::Wake(node));
            }
        }
    }
}
