//! The gossipsub v1.1 router, with v1.2's IDONTWANT, as a sans-IO state machine:
//! [`GossipsubEngine`].
//!
//! Inputs are `handle_peer_connected`, `handle_peer_disconnected`, `handle_rpc` (a decoded
//! RPC from a peer), `handle_invalid_rpc` (a frame that failed to decode), the application's
//! `subscribe`, `unsubscribe`, `publish` and `report_validation`, and `handle_timeout` (the
//! heartbeat) when [`GossipsubEngine::poll_timeout`] is due. Outputs are RPCs per peer
//! (`poll_transmit`, `poll_transmit_to`) and [`GossipsubEvent`]s (`poll_event`). The engine
//! owns no clock, IO or entropy: time comes with every input, randomness from
//! [`GossipsubConfig::seed`].
//!
//! What it does, as gossipsub v1.1 specifies and rust-libp2p 0.57 behaves:
//!
//! - **Subscriptions** are announced to every peer (and to each new peer); joining a topic
//!   builds its mesh from the fanout and other topic peers (GRAFT); leaving PRUNEs the mesh with
//!   `unsubscribe_backoff`.
//! - **Messages** are verified strictly ([`crate::wire::sign::verify`]), named by the message
//!   id function, dropped if seen in the last `duplicate_cache_time`, cached, reported
//!   ([`GossipsubEvent::Message`]) and forwarded to the topic's mesh (not to the peer that sent
//!   it nor its author). With `validate_messages` a message is forwarded only once the
//!   application accepts it; a rejected one counts against its sender.
//! - **Publishing** signs with the node's key and sends to every topic peer
//!   (`flood_publish`, the default) or to the mesh, or to a fanout set of D topic peers (kept
//!   `fanout_ttl` after the last publish) for a topic we are not in.
//! - **The heartbeat** (every `heartbeat_interval`): meshes below D_lo are grafted up to D,
//!   meshes above D_hi pruned down to D keeping D_score peers and at least D_out outbound
//!   ones, meshes short of D_out outbound peers grafted more; fanouts expired or refilled;
//!   IHAVE gossip of the last `history_gossip` windows to max(D_lazy, gossip_factor × others)
//!   non-mesh topic peers; the message cache shifted; the seen cache and backoffs expired.
//! - **Control**: IHAVE answered with IWANT for unseen ids (at most `max_ihave_messages`
//!   IHAVEs and `max_ihave_length` ids per peer and heartbeat), IWANT answered from the cache
//!   (each message at most `gossip_retransmission` times per peer), GRAFT accepted unless we
//!   are not subscribed, the peer is in backoff (then PRUNE, counted against it) or the mesh
//!   is at D_hi and the peer inbound; PRUNE honoured with its backoff (ours by default) and
//!   its peer exchange reported ([`GossipsubEvent::PeerExchange`]).
//! - **IDONTWANT** (v1.2, module `idontwant`): large messages announced to v1.2 mesh peers on
//!   first receipt, before forwarding; peers' IDONTWANT kept a few heartbeats (bounded) and
//!   honoured when forwarding, answering IWANT and in the data queues.
//! - **Choking** (a meshwire extension, off by default, module `choke`): between meshwire
//!   peers that announced it, a node asks its mostly-late mesh peers (beyond
//!   [`ChokeConfig::max_unchoked`]) to send message ids in an immediate IHAVE instead of
//!   messages, and fetches with IWANT what no unchoked peer brought in time.
//! - **Queues**: every peer has a bounded control queue and a bounded data queue
//!   ([`GossipsubConfig::max_queued_control`], [`GossipsubConfig::max_queued_messages`]);
//!   control goes first; a full queue drops what comes next ([`GossipsubEngine::queue_stats`]).
//!   Control RPCs are split to stay within `max_transmit_size`.
//!
//! - **Peer scoring v1.1** ([`GossipsubConfig::score_params`], off by default as in
//!   rust-libp2p; module `score` has the formula): P1 time in mesh, P2 first deliveries, P3
//!   mesh delivery deficit and P3b its sticky penalty, P4 invalid messages (bad signatures,
//!   rejected by the application, copies of rejected messages), P5 the application's score,
//!   P6 IP colocation, P7 behaviour penalties (GRAFT in backoff, doubled when flooding right
//!   after a PRUNE; broken IWANT promises) and rust-libp2p's slow-peer penalty (data dropped
//!   at a full queue). The router acts on it: graylisted peers' RPCs are ignored; gossip and
//!   IHAVE/IWANT need `gossip_threshold`; publishing (flood, fanout) needs
//!   `publish_threshold`; peer exchange is taken from peers at `accept_px_threshold`; peers
//!   with a negative score are pruned from meshes, never grafted and get no peer exchange; an
//!   oversubscribed mesh keeps its D_score best; every `opportunistic_graft_ticks` a mesh
//!   whose median score is below `opportunistic_graft_threshold` grafts better peers.
//!
//! Invalid input is also counted per peer whether scoring is on or not
//! ([`GossipsubEngine::invalid_messages`]).

mod cache;
mod choke;
mod config;
mod event;
mod heartbeat;
mod idontwant;
mod inbound;
mod qos;
mod queue;
pub mod score;
mod split;
#[cfg(test)]
mod tests;
mod wildcard;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use meshwire_core::{Keypair, PeerId};

pub use choke::{ChokeConfig, ChokeStats};
pub use config::{ConfigError, GossipsubConfig, MessageIdFn};
pub use event::{
    Acceptance, GossipMessage, GossipsubEvent, InvalidReason, MessageId, PublishError, TopicHash,
};
pub use idontwant::IDontWantStats;
pub use queue::QueueStats;
pub use score::params::{PeerScoreParams, PeerScoreThresholds, ScoreParamsError, TopicScoreParams};

use crate::metrics::GossipsubMetrics;
use crate::qos::{QosStats, QosTracker};
use crate::rng::Rng;
use crate::topic::{Pattern, Realm};
use crate::wire::{self, sign, ControlMessage, Message, Rpc, SubOpts};
use cache::{MessageCache, SeenCache};
use choke::ChokeState;
use idontwant::{id_hash, DontSend};
use queue::PeerQueue;
use score::{GossipPromises, PeerScore};
use split::split_control;

/// The protocol a peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// `/meshsub/1.2.0`: v1.1 and IDONTWANT.
    Gossipsub1_2,
    /// `/meshsub/1.1.0`: backoff and peer exchange in PRUNE.
    Gossipsub1_1,
    /// `/meshsub/1.0.0`: PRUNE without backoff or peer exchange.
    Gossipsub1_0,
}

impl PeerKind {
    /// Whether the peer takes a backoff and peer exchange in PRUNE (v1.1 and later).
    pub fn supports_backoff(self) -> bool {
        !matches!(self, PeerKind::Gossipsub1_0)
    }

    /// Whether the peer takes IDONTWANT (v1.2).
    pub fn supports_idontwant(self) -> bool {
        matches!(self, PeerKind::Gossipsub1_2)
    }
}

struct PeerState {
    kind: PeerKind,
    outbound: bool,
    topics: BTreeSet<TopicHash>,
    /// Its wildcard subscriptions (at most `max_patterns_per_peer`), parsed.
    patterns: Vec<(TopicHash, Realm, Pattern)>,
    queue: PeerQueue,
    /// IHAVE messages taken this heartbeat.
    ihave_received: usize,
    /// Ids asked with IWANT this heartbeat.
    iasked: usize,
    invalid: u64,
    /// It announced the QoS protocol: expected to acknowledge our QoS 1 messages.
    qos: bool,
    /// Messages it has (its IDONTWANT), not to be sent to it.
    dont_send: DontSend,
    /// IDONTWANT RPCs taken this heartbeat.
    idontwant_received: usize,
}

/// The gossipsub router: see the [module docs](self).
pub struct GossipsubEngine {
    config: GossipsubConfig,
    key: Keypair,
    local: PeerId,
    rng: Rng,
    next_seqno: u64,
    peers: HashMap<PeerId, PeerState>,
    topic_peers: HashMap<TopicHash, BTreeSet<PeerId>>,
    subscriptions: BTreeSet<TopicHash>,
    /// Our wildcard subscriptions, parsed.
    local_patterns: Vec<(TopicHash, Realm, Pattern)>,
    mesh: HashMap<TopicHash, BTreeSet<PeerId>>,
    fanout: HashMap<TopicHash, BTreeSet<PeerId>>,
    fanout_last_pub: HashMap<TopicHash, Instant>,
    backoffs: HashMap<(TopicHash, PeerId), Instant>,
    mcache: MessageCache,
    seen: SeenCache,
    /// Control messages gathered during one input, sent when it ends.
    pending_control: BTreeMap<PeerId, ControlMessage>,
    /// IDONTWANT ids gathered during one input, sent first when it ends.
    pending_idontwant: BTreeMap<PeerId, Vec<Vec<u8>>>,
    idontwant_stats: IDontWantStats,
    /// Peers with something queued, in the order they are served.
    ready: VecDeque<PeerId>,
    events: VecDeque<GossipsubEvent>,
    next_heartbeat: Option<Instant>,
    heartbeat_ticks: u64,
    score: Option<PeerScore>,
    promises: GossipPromises,
    metrics: Option<GossipsubMetrics>,
    /// QoS 1 ([`crate::qos`]).
    qos: QosTracker,
    /// The QoS counters last given to the metrics.
    qos_reported: QosStats,
    /// Choking (module `choke`, a meshwire extension).
    choke: ChokeState,
}

impl GossipsubEngine {
    /// An engine publishing as `key`, with sequence numbers from `first_seqno` (rust-libp2p
    /// starts from the Unix time in nanoseconds, so ids stay unique across restarts).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the configuration is inconsistent.
    pub fn new(
        key: Keypair,
        config: GossipsubConfig,
        first_seqno: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(GossipsubEngine {
            local: key.peer_id(),
            key,
            rng: Rng::new(config.seed),
            next_seqno: first_seqno,
            peers: HashMap::new(),
            topic_peers: HashMap::new(),
            subscriptions: BTreeSet::new(),
            local_patterns: Vec::new(),
            mesh: HashMap::new(),
            fanout: HashMap::new(),
            fanout_last_pub: HashMap::new(),
            backoffs: HashMap::new(),
            mcache: MessageCache::new(
                config.history_length,
                config.history_gossip,
                config.max_cached_messages,
            ),
            seen: SeenCache::new(config.max_seen_messages),
            pending_control: BTreeMap::new(),
            pending_idontwant: BTreeMap::new(),
            idontwant_stats: IDontWantStats::default(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            next_heartbeat: None,
            heartbeat_ticks: 0,
            score: config
                .score_params
                .clone()
                .map(|p| PeerScore::new(p, config.max_seen_messages)),
            promises: GossipPromises::default(),
            metrics: None,
            qos: QosTracker::new(config.qos.clone()),
            qos_reported: QosStats::default(),
            choke: ChokeState::default(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GossipsubConfig {
        &self.config
    }

    /// Counts into `metrics` from now on ([`GossipsubMetrics`]).
    pub fn set_metrics(&mut self, metrics: GossipsubMetrics) {
        self.metrics = Some(metrics);
    }

    /// The metrics set with [`Self::set_metrics`].
    pub fn metrics(&self) -> Option<&GossipsubMetrics> {
        self.metrics.as_ref()
    }

    /// Our peer id (the author of our messages).
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    // ---- Peers ----

    /// A peer speaking `kind` connected; `outbound` if we dialed it (D_out counts those). Our
    /// subscriptions are queued for it.
    pub fn handle_peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        kind: PeerKind,
        outbound: bool,
    ) {
        self.start(now);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.kind = kind;
            return;
        }
        if let Some(score) = &mut self.score {
            score.add_peer(peer);
        }
        self.peers.insert(
            peer,
            PeerState {
                kind,
                outbound,
                topics: BTreeSet::new(),
                patterns: Vec::new(),
                queue: PeerQueue::new(
                    self.config.max_queued_control,
                    self.config.max_queued_messages,
                ),
                ihave_received: 0,
                iasked: 0,
                invalid: 0,
                qos: false,
                dont_send: DontSend::default(),
                idontwant_received: 0,
            },
        );
        if !self.subscriptions.is_empty() {
            let subscriptions = self
                .subscriptions
                .iter()
                .map(|t| SubOpts {
                    subscribe: Some(true),
                    topic_id: Some(t.as_str().to_string()),
                })
                .collect();
            let mut rpc = Rpc {
                subscriptions,
                ..Rpc::default()
            };
            self.choke_hello(&mut rpc);
            self.push_control_rpc(peer, rpc);
        }
    }

    /// Records what protocol a peer speaks (learned from its stream).
    pub fn set_peer_kind(&mut self, peer: &PeerId, kind: PeerKind) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.kind = kind;
        }
    }

    /// The peer's last connection closed: it leaves every mesh, fanout and topic, and its
    /// queue is dropped.
    pub fn handle_peer_disconnected(&mut self, now: Instant, peer: &PeerId) {
        self.start(now);
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        if let Some(score) = &mut self.score {
            score.remove_peer(now, peer);
        }
        for topic in state.topics {
            if let Some(set) = self.topic_peers.get_mut(&topic) {
                set.remove(peer);
                if set.is_empty() {
                    self.topic_peers.remove(&topic);
                }
            }
        }
        for set in self.mesh.values_mut().chain(self.fanout.values_mut()) {
            set.remove(peer);
        }
        self.pending_control.remove(peer);
        self.pending_idontwant.remove(peer);
        self.ready.retain(|p| p != peer);
        self.qos.handle_peer_disconnected(peer);
        self.choke_peer_gone(peer);
    }

    /// The protocol a peer speaks, as learned from its streams.
    pub fn peer_kind(&self, peer: &PeerId) -> Option<PeerKind> {
        self.peers.get(peer).map(|s| s.kind)
    }

    /// The peers connected (as the engine knows them).
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// The topics a peer subscribes to.
    pub fn peer_topics(&self, peer: &PeerId) -> impl Iterator<Item = &TopicHash> {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|s| s.topics.iter())
    }

    /// The peers subscribed to a topic.
    pub fn topic_peers(&self, topic: &TopicHash) -> impl Iterator<Item = &PeerId> {
        self.topic_peers.get(topic).into_iter().flatten()
    }

    /// Our mesh for a topic.
    pub fn mesh_peers(&self, topic: &TopicHash) -> impl Iterator<Item = &PeerId> {
        self.mesh.get(topic).into_iter().flatten()
    }

    /// Our fanout set for a topic.
    pub fn fanout_peers(&self, topic: &TopicHash) -> impl Iterator<Item = &PeerId> {
        self.fanout.get(topic).into_iter().flatten()
    }

    /// Invalid input counted against a peer (undecodable RPCs, bad signatures, rejected
    /// messages, GRAFTs during backoff, limits exceeded).
    pub fn invalid_messages(&self, peer: &PeerId) -> u64 {
        self.peers.get(peer).map_or(0, |s| s.invalid)
    }

    /// A peer's score; `None` when scoring is off.
    pub fn peer_score(&self, peer: &PeerId) -> Option<f64> {
        self.score.as_ref().map(|s| s.score(peer))
    }

    /// Sets a peer's application-specific score (P5); `false` if scoring is off or the peer
    /// is unknown to it.
    pub fn set_application_score(&mut self, peer: &PeerId, score: f64) -> bool {
        self.score
            .as_mut()
            .is_some_and(|s| s.set_application_score(peer, score))
    }

    /// A connection of `peer` comes from `ip` (P6, IP colocation).
    pub fn add_peer_ip(&mut self, peer: PeerId, ip: IpAddr) {
        if let Some(score) = &mut self.score {
            score.add_ip(peer, ip);
        }
    }

    /// The connection of `peer` from `ip` closed.
    pub fn remove_peer_ip(&mut self, peer: &PeerId, ip: &IpAddr) {
        if let Some(score) = &mut self.score {
            score.remove_ip(peer, ip);
        }
    }

    /// Peers tracked by the score (connected or retained) and outstanding IWANT promises.
    pub fn score_sizes(&self) -> (usize, usize) {
        (
            self.score.as_ref().map_or(0, PeerScore::tracked),
            self.promises.len(),
        )
    }

    /// A peer's queue counters.
    pub fn queue_stats(&self, peer: &PeerId) -> Option<QueueStats> {
        self.peers.get(peer).map(|s| s.queue.stats())
    }

    /// Message ids in the seen cache, and messages in the message cache.
    pub fn cache_sizes(&self) -> (usize, usize) {
        (self.seen.len(), self.mcache.len())
    }

    // ---- Application commands ----

    /// The topics we subscribe to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &TopicHash> {
        self.subscriptions.iter()
    }

    /// Subscribes to `topic`: announces it and builds its mesh. `false` if already subscribed.
    pub fn subscribe(&mut self, now: Instant, topic: TopicHash) -> bool {
        self.start(now);
        if !self.subscriptions.insert(topic.clone()) {
            return false;
        }
        self.add_local_pattern(&topic);
        self.announce(&topic, true);
        // Join: the fanout peers first, then other topic peers, up to D.
        let mut mesh: BTreeSet<PeerId> = BTreeSet::new();
        if let Some(fanout) = self.fanout.remove(&topic) {
            mesh.extend(
                fanout
                    .into_iter()
                    .filter(|p| !self.in_backoff(&topic, p, now, false) && self.score_of(p) >= 0.0)
                    .take(self.config.mesh_n),
            );
        }
        self.fanout_last_pub.remove(&topic);
        if mesh.len() < self.config.mesh_n {
            let need = self.config.mesh_n - mesh.len();
            let candidates = self.topic_candidates(&topic, |p| {
                !mesh.contains(p)
                    && !self.in_backoff(&topic, p, now, false)
                    && self.score_of(p) >= 0.0
            });
            let extra = self.pick(candidates, need);
            mesh.extend(extra);
        }
        for peer in &mesh {
            self.control(*peer).graft.push(wire::ControlGraft {
                topic_id: Some(topic.as_str().to_string()),
            });
            if let Some(score) = &mut self.score {
                score.graft(now, peer, &topic);
            }
        }
        self.mesh.insert(topic, mesh);
        self.flush_control();
        true
    }

    /// Unsubscribes from `topic`: announces it and PRUNEs its mesh (`unsubscribe_backoff`).
    /// `false` if not subscribed.
    pub fn unsubscribe(&mut self, now: Instant, topic: &TopicHash) -> bool {
        self.start(now);
        if !self.subscriptions.remove(topic) {
            return false;
        }
        self.local_patterns.retain(|(t, _, _)| t != topic);
        self.announce(topic, false);
        let mesh = self.mesh.remove(topic).unwrap_or_default();
        let backoff = self.config.unsubscribe_backoff;
        for peer in mesh {
            self.prune(now, topic, peer, backoff, false);
        }
        self.flush_control();
        true
    }

    /// Signs and sends a message on `topic` (see the module docs for the recipients).
    ///
    /// # Errors
    ///
    /// [`PublishError`]: too large, a duplicate, nobody to send it to, or every recipient's
    /// queue full.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: TopicHash,
        data: Vec<u8>,
    ) -> Result<MessageId, PublishError> {
        self.publish_inner(now, topic, data, &BTreeSet::new())
            .map(|(id, _)| id)
    }

    /// [`Self::publish`], sending to `extra` peers too; returns the id and the message.
    fn publish_inner(
        &mut self,
        now: Instant,
        topic: TopicHash,
        data: Vec<u8>,
        extra: &BTreeSet<PeerId>,
    ) -> Result<(MessageId, Message), PublishError> {
        self.start(now);
        let seqno = self.next_seqno;
        self.next_seqno = self.next_seqno.wrapping_add(1);
        let message = sign::sign(&self.key, seqno, topic.as_str().to_string(), data);
        let rpc = Rpc {
            publish: vec![message],
            ..Rpc::default()
        };
        let size = wire::rpc_len(&rpc);
        if size > self.config.max_transmit_size {
            return Err(PublishError::MessageTooLarge {
                size,
                max: self.config.max_transmit_size,
            });
        }
        let id = self.message_id(&rpc.publish[0], Some(self.local), Some(seqno));
        if self.seen.contains(&id) {
            return Err(PublishError::Duplicate);
        }
        let publish_threshold = self.config.score_thresholds.publish_threshold;
        let mut recipients: Vec<PeerId> = if self.config.flood_publish {
            self.topic_candidates(&topic, |p| self.score_of(p) >= publish_threshold)
        } else if let Some(mesh) = self.mesh.get(&topic) {
            mesh.iter().copied().collect()
        } else {
            if !self.fanout.contains_key(&topic) {
                let candidates =
                    self.topic_candidates(&topic, |p| self.score_of(p) >= publish_threshold);
                let peers = self.pick(candidates, self.config.mesh_n);
                if !peers.is_empty() {
                    self.fanout
                        .insert(topic.clone(), peers.into_iter().collect());
                }
            }
            self.fanout_peers(&topic).copied().collect()
        };
        if !self.subscriptions.contains(&topic) && !self.config.flood_publish {
            self.fanout_last_pub.insert(topic.clone(), now);
        }
        // Wildcard subscribers whose patterns match, whether or not they are topic peers.
        for peer in self.pattern_peers(&topic, |p| self.score_of(p) >= publish_threshold) {
            if !recipients.contains(&peer) {
                recipients.push(peer);
            }
        }
        // QoS 1: every expected subscriber gets its copy from us.
        for peer in extra {
            if !recipients.contains(peer) {
                recipients.push(*peer);
            }
        }
        if recipients.is_empty() {
            return Err(PublishError::NoPeersSubscribedToTopic);
        }
        self.seen
            .insert(id.clone(), now + self.config.duplicate_cache_time);
        let mut rpc = rpc;
        let message = rpc.publish.remove(0);
        self.mcache.put(&id, message.clone(), true);
        let mut queued = 0;
        let hash = id_hash(&id.0);
        for peer in recipients {
            if self.push_data(peer, hash, message.clone()) {
                queued += 1;
            }
        }
        // QoS 1 with expected subscribers: their retransmissions carry it, no error.
        if queued == 0 && extra.is_empty() {
            return Err(PublishError::AllQueuesFull);
        }
        if let Some(m) = &self.metrics {
            m.published(&topic);
        }
        Ok((id, message))
    }

    /// The application's verdict on a message it received with `validate_messages` on:
    /// accepted messages are forwarded, rejected ones count against `propagation_source`.
    /// `false` if the message is not waiting (unknown, already reported, or expired from the
    /// cache after `history_length` heartbeats).
    pub fn report_validation(
        &mut self,
        now: Instant,
        id: &MessageId,
        propagation_source: &PeerId,
        acceptance: Acceptance,
    ) -> bool {
        self.start(now);
        // Only a message still waiting: a validated one is not taken back.
        let Some(message) = self.mcache.validate(id) else {
            return false;
        };
        let topic = TopicHash::from(message.topic.clone());
        match acceptance {
            Acceptance::Accept => {
                if let Some(score) = &mut self.score {
                    score.deliver_message(now, propagation_source, id, &topic);
                }
                self.forward(&message, id, Some(*propagation_source));
                self.sync_choke_metrics();
            }
            Acceptance::Reject | Acceptance::Ignore => {
                self.mcache.remove(id);
                let ignore = acceptance == Acceptance::Ignore;
                if let Some(score) = &mut self.score {
                    score.reject_message(now, propagation_source, id, &topic, ignore);
                }
                if !ignore {
                    if let Some(m) = &self.metrics {
                        m.invalid(&topic);
                    }
                    self.penalize(*propagation_source, InvalidReason::Rejected);
                }
            }
        }
        true
    }

    // ---- Outputs ----

    /// The next RPC for any peer (peers served in turn, each one's control first).
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Rpc)> {
        while let Some(peer) = self.ready.pop_front() {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            if let Some(rpc) = state.queue.pop() {
                if !state.queue.is_empty() {
                    self.ready.push_back(peer);
                }
                return Some((peer, rpc));
            }
        }
        None
    }

    /// The next RPC for `peer` (control first), for a driver that sends to each peer as fast
    /// as that peer reads.
    pub fn poll_transmit_to(&mut self, peer: &PeerId) -> Option<Rpc> {
        let queue = &mut self.peers.get_mut(peer)?.queue;
        let rpc = queue.pop();
        if queue.is_empty() {
            // Off the ready list as soon as its queue is empty, so the list holds each
            // peer at most once.
            self.ready.retain(|p| p != peer);
        }
        rpc
    }

    /// Peers with RPCs waiting.
    pub fn peers_with_transmits(&self) -> impl Iterator<Item = &PeerId> {
        self.ready.iter()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<GossipsubEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (the heartbeat); `None`
    /// before the first input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_heartbeat,
            self.qos.poll_timeout(),
            self.choke_poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the heartbeat if it is due, and QoS 1 retransmissions and verdicts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start(now);
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.heartbeat(now);
            self.record_heartbeat_metrics();
            self.next_heartbeat = Some(now + self.config.heartbeat_interval);
        }
        self.qos_timeout(now);
        self.choke_timeout(now);
        self.sync_choke_metrics();
    }

    // ---- Internals shared by the submodules ----

    /// A peer's score, 0 when scoring is off.
    fn record_heartbeat_metrics(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        for topic in &self.subscriptions {
            m.mesh_size(topic, self.mesh.get(topic).map_or(0, BTreeSet::len));
        }
        if self.score.is_some() {
            for peer in self.peers.keys() {
                m.score(self.score_of(peer));
            }
        }
    }

    fn score_of(&self, peer: &PeerId) -> f64 {
        self.score.as_ref().map_or(0.0, |s| s.score(peer))
    }

    fn start(&mut self, now: Instant) {
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now + self.config.heartbeat_initial_delay);
        }
    }

    fn message_id(
        &self,
        message: &Message,
        source: Option<PeerId>,
        seqno: Option<u64>,
    ) -> MessageId {
        match &self.config.message_id_fn {
            Some(f) => f(&GossipMessage {
                source,
                data: message.data.clone().unwrap_or_default(),
                sequence_number: seqno,
                topic: TopicHash::from(message.topic.clone()),
            }),
            None => MessageId(sign::default_message_id(source.as_ref(), seqno)),
        }
    }

    fn announce(&mut self, topic: &TopicHash, subscribe: bool) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            let mut rpc = Rpc {
                subscriptions: vec![SubOpts {
                    subscribe: Some(subscribe),
                    topic_id: Some(topic.as_str().to_string()),
                }],
                ..Rpc::default()
            };
            if subscribe {
                self.choke_hello(&mut rpc);
            }
            self.push_control_rpc(peer, rpc);
        }
    }

    /// The peers of `topic` passing `keep`.
    fn topic_candidates(&self, topic: &TopicHash, keep: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        self.topic_peers
            .get(topic)
            .into_iter()
            .flatten()
            .filter(|p| keep(p))
            .copied()
            .collect()
    }

    /// Up to `n` of `candidates`, chosen at random.
    fn pick(&mut self, mut candidates: Vec<PeerId>, n: usize) -> Vec<PeerId> {
        self.rng.shuffle(&mut candidates);
        candidates.truncate(n);
        candidates
    }

    /// Whether we must not graft `peer` on `topic` now; `slack` adds `backoff_slack`
    /// heartbeats (the heartbeat's own grafts).
    fn in_backoff(&self, topic: &TopicHash, peer: &PeerId, now: Instant, slack: bool) -> bool {
        let Some(until) = self.backoffs.get(&(topic.clone(), *peer)) else {
            return false;
        };
        let until = if slack {
            *until + self.config.heartbeat_interval * self.config.backoff_slack
        } else {
            *until
        };
        until > now
    }

    fn set_backoff(&mut self, topic: &TopicHash, peer: PeerId, until: Instant) {
        let entry = self.backoffs.entry((topic.clone(), peer)).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// Queues a PRUNE of `peer` from `topic` with `backoff` (and peer exchange if `px`), and
    /// sets the same backoff on our side.
    fn prune(
        &mut self,
        now: Instant,
        topic: &TopicHash,
        peer: PeerId,
        backoff: std::time::Duration,
        px: bool,
    ) {
        self.set_backoff(topic, peer, now + backoff);
        self.choke_reset(topic, &peer);
        if let Some(score) = &mut self.score {
            score.prune(&peer, topic);
        }
        let v11 = self
            .peers
            .get(&peer)
            .is_some_and(|s| s.kind.supports_backoff());
        let peers = if px && v11 && self.config.do_px && self.score_of(&peer) >= 0.0 {
            let n = self.config.prune_peers;
            let candidates =
                self.topic_candidates(topic, |p| *p != peer && self.score_of(p) >= 0.0);
            self.pick(candidates, n)
                .into_iter()
                .map(|p| wire::PeerInfo {
                    peer_id: Some(p.to_bytes()),
                    signed_peer_record: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        self.control(peer).prune.push(wire::ControlPrune {
            topic_id: Some(topic.as_str().to_string()),
            peers,
            backoff: v11.then_some(backoff.as_secs()),
        });
    }

    fn penalize(&mut self, peer: PeerId, reason: InvalidReason) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.invalid += 1;
        }
        self.events
            .push_back(GossipsubEvent::Invalid { peer, reason });
    }

    /// Forwards a validated message to the topic's mesh, except `from`, its author and the
    /// peers that have it (IDONTWANT); mesh peers that choked us get its id in an IHAVE
    /// instead (module `choke`).
    fn forward(&mut self, message: &Message, id: &MessageId, from: Option<PeerId>) {
        let topic = TopicHash::from(message.topic.clone());
        let author = message
            .from
            .as_deref()
            .and_then(|b| PeerId::from_bytes(b).ok());
        let mut targets: Vec<PeerId> = self
            .mesh_peers(&topic)
            .filter(|p| Some(**p) != from && Some(**p) != author)
            .copied()
            .collect();
        // And to the peers whose wildcard patterns match (see `wildcard.rs`).
        for peer in self.pattern_peers(&topic, |p| Some(*p) != from && Some(*p) != author) {
            if !targets.contains(&peer) {
                targets.push(peer);
            }
        }
        let hash = id_hash(&id.0);
        // Taken straight from its author: the first hop (choking's eager-near-the-source rule).
        let eager = from.is_some() && from == author;
        for peer in targets {
            if self.unwanted(&peer, hash) {
                self.count_suppressed();
                continue;
            }
            if self.forward_choked(&topic, peer, id, eager) {
                continue;
            }
            self.push_data(peer, hash, message.clone());
        }
    }

    fn control(&mut self, peer: PeerId) -> &mut ControlMessage {
        self.pending_control.entry(peer).or_default()
    }

    fn push_control_rpc(&mut self, peer: PeerId, rpc: Rpc) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let was_empty = state.queue.is_empty();
        if state.queue.push_control(rpc) && was_empty {
            self.ready.push_back(peer);
        }
    }

    /// Queues `message` (its id hashing to `hash`) for `peer`.
    fn push_data(&mut self, peer: PeerId, hash: u64, message: Message) -> bool {
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        let was_empty = state.queue.is_empty();
        let rpc = Rpc {
            publish: vec![message],
            ..Rpc::default()
        };
        let queued = state.queue.push_data(hash, rpc);
        if queued && was_empty {
            self.ready.push_back(peer);
        }
        if !queued {
            if let Some(score) = &mut self.score {
                score.slow_peer(&peer);
            }
        }
        queued
    }

    /// Sends the control messages gathered during this input, split into RPCs that fit
    /// `max_transmit_size`.
    fn flush_control(&mut self) {
        self.flush_idontwant();
        let pending = std::mem::take(&mut self.pending_control);
        for (peer, control) in pending {
            if control.is_empty() {
                continue;
            }
            for control in split_control(control, self.config.max_transmit_size) {
                let rpc = Rpc {
                    control: Some(control),
                    ..Rpc::default()
                };
                self.push_control_rpc(peer, rpc);
            }
        }
    }
}
