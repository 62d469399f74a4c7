//! Choking (a meshwire extension, off by default): lazier forwarding between meshwire peers,
//! so a node takes full messages from only a few of its mesh peers and message ids from the
//! rest. Plain gossipsub peers never see it.
//!
//! - **Support** is announced with a flag (`ControlMessage::choke_supported`, field
//!   [`wire::CHOKE_SUPPORTED_FIELD`]) in the control message sent with our subscriptions, on
//!   each new connection and each subscription. Only peers that set it are ever choked; a
//!   peer without it (rust-libp2p, go-libp2p, a meshwire node with choking off) always counts
//!   as unchoked.
//! - **Measured** (receiver side), per topic and per mesh peer that announced support: its
//!   copies of messages (not the author's own) that came first or within
//!   [`ChokeConfig::early_margin`] of the first ("early") against later ones ("late"),
//!   decayed by [`ChokeConfig::decay`] each heartbeat; for a peer we choked, the same from
//!   its immediate IHAVEs (an IHAVE of an id we have not seen yet is early: that peer would
//!   have been first). A peer that sent or announced nothing during a heartbeat in which
//!   messages arrived is charged all of them as late, so a silent peer (a link the other
//!   side dropped) is judged, not kept as unknown.
//! - **Decided** at each heartbeat, per topic: while more than [`ChokeConfig::max_unchoked`]
//!   mesh peers are unchoked (peers without support included), the one with the lowest
//!   early share among those with [`ChokeConfig::min_samples`] samples and an early share
//!   below [`ChokeConfig::late_ratio`] is choked (CHOKE sent), repeatedly; fewer than
//!   [`ChokeConfig::min_unchoked`] unchoked (the mesh shrank) unchokes the best choked
//!   ones; otherwise at most one swap per heartbeat: the choked peer with the best early
//!   share is unchoked and the worst unchoked one choked when the first beats the second by
//!   [`ChokeConfig::swap_margin`]. With peer scoring's P3 (mesh message deliveries) weighted
//!   on a topic nothing is choked there (a choked peer delivers no full message and would be
//!   penalised).
//! - **Honoured** (sender side): a message we forward (not one we publish) to a mesh peer
//!   that choked us on its topic goes as an IHAVE of its id at once, in the same input,
//!   instead of the message — unless we took it straight from its author and
//!   [`ChokeConfig::eager_from_author`] is on: then it goes in full (eager near the source).
//!   IWANT is answered as always. A CHOKE or UNCHOKE for a topic we
//!   are not in, or from a peer not in that topic's mesh, is ignored (counted): a peer can
//!   only lower what we send to it.
//! - **Implicit IDONTWANT**: a choked peer's IHAVE says it has the message: the ids are
//!   recorded as if it had sent IDONTWANT (the same bounded table), so a copy we would forward
//!   to it later is not sent.
//! - **Fallback**: an id announced by a choked peer and not received from anyone within the
//!   wait is asked for with IWANT from the first peer that announced it. The wait adapts to
//!   the network: [`WAIT_FACTOR`] × the running mean (weight [`GAP_WEIGHT`]) of the gaps
//!   between a choked peer's IHAVE and the first full copy (a fallback counts as a gap of the
//!   wait it used), within [`ChokeConfig::iwant_timeout_min`] and
//!   [`ChokeConfig::iwant_timeout`] (the latter until a gap is seen). At most
//!   [`ChokeConfig::max_pending`] ids wait; beyond, the id is left to the heartbeat's gossip.
//! - **Reset**: GRAFT or PRUNE between two peers on a topic (either way), leaving the mesh,
//!   or disconnecting forgets both directions' choke state for that pair.
//! - **Lossy links**: a CHOKE is sent again when, two heartbeats after it, a choked peer
//!   sent us more full messages we did not ask for than ids (IHAVE) during a heartbeat (the
//!   receiver cannot tell an eager copy from the author's neighbour from a lost CHOKE, but a
//!   peer that honours the CHOKE announces most messages by id); an UNCHOKE when an unchoked
//!   mesh peer sends IHAVE. At most once per heartbeat each.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use super::{GossipsubEngine, MessageId, TopicHash};
use crate::wire::{self, ControlChoke, ControlIHave, ControlMessage, Rpc};

/// Ids taken from one IHAVE entry of a choked peer (ours carry one id each); the rest are
/// ignored and left to the heartbeat's gossip.
const MAX_IDS_PER_CHOKE_IHAVE: usize = 16;

/// Peers remembered per pending id (the first answers our IWANT).
const MAX_ANNOUNCERS: usize = 3;

/// The fallback wait is this many times the mean gap between a choked peer's IHAVE and the
/// first full copy.
pub const WAIT_FACTOR: f64 = 3.0;

/// The weight of each new gap in that running mean.
pub const GAP_WEIGHT: f64 = 0.1;

/// The settings of choking ([`GossipsubConfig::choke`](super::GossipsubConfig::choke)).
#[derive(Clone, Debug, PartialEq)]
pub struct ChokeConfig {
    /// Announce support, choke and honour CHOKE. Default `false`: every node keeps
    /// gossipsub's eager forwarding unless its application turns choking on.
    pub enabled: bool,
    /// The fewest unchoked mesh peers per topic (peers without support count as unchoked);
    /// below, the best choked peers are unchoked at the heartbeat. Default 3.
    pub min_unchoked: usize,
    /// The most unchoked mesh peers per topic: above, mostly-late peers are choked. Each
    /// unchoked peer costs about one duplicate per message. Default 3 (with
    /// `eager_from_author`, which adds about half a duplicate per message; 4 without it).
    pub max_unchoked: usize,
    /// A copy (or a choked peer's IHAVE) arriving within this of the first copy counts as
    /// early. Default 5 ms.
    pub early_margin: Duration,
    /// A peer is choked only if its early share is below this. Default 0.5.
    pub late_ratio: f64,
    /// Decayed samples (early + late) a peer needs before it is judged. Default 5.
    pub min_samples: f64,
    /// The factor applied to the counters at each heartbeat, in (0, 1]. Default 0.9.
    pub decay: f64,
    /// How much better (early share) a choked peer must be than the worst unchoked one to
    /// swap them. Default 0.2.
    pub swap_margin: f64,
    /// The shortest wait for a full copy of an id announced by a choked peer before we ask
    /// for it (the wait adapts between this and `iwant_timeout`). Default 10 ms.
    pub iwant_timeout_min: Duration,
    /// The longest (and first) wait for a full copy of an id announced by a choked peer
    /// before we ask for it with IWANT. Default 100 ms.
    pub iwant_timeout: Duration,
    /// Ids announced by choked peers waiting for that timeout, at most. Default 1,024.
    pub max_pending: usize,
    /// First-arrival times kept to judge the margin (forgotten at each heartbeat once older
    /// than the margin), at most. Default 4,096.
    pub max_tracked: usize,
    /// Eager near the source: a message we took straight from its author (the peer that sent
    /// it wrote it) is forwarded in full to every mesh peer, those that choked us included,
    /// so a message's second hop fans out as without choking and only later hops are lazy
    /// (the latency's tail is set by how wide the first hops fan out; most duplicates arise
    /// late in a message's spread). Default `true`.
    pub eager_from_author: bool,
}

impl Default for ChokeConfig {
    fn default() -> Self {
        ChokeConfig {
            enabled: false,
            min_unchoked: 3,
            max_unchoked: 3,
            early_margin: Duration::from_millis(5),
            late_ratio: 0.5,
            min_samples: 5.0,
            decay: 0.9,
            swap_margin: 0.2,
            iwant_timeout_min: Duration::from_millis(10),
            iwant_timeout: Duration::from_millis(100),
            max_pending: 1024,
            max_tracked: 4096,
            eager_from_author: true,
        }
    }
}

impl ChokeConfig {
    /// Whether the bounds hold: `1 <= min_unchoked <= max_unchoked`, `iwant_timeout_min <=
    /// iwant_timeout`, `decay` in (0, 1],
    /// `late_ratio` in [0, 1], `min_samples` > 0, `max_pending` and `max_tracked` ≥ 1.
    pub fn is_valid(&self) -> bool {
        self.min_unchoked >= 1
            && self.min_unchoked <= self.max_unchoked
            && self.decay > 0.0
            && self.decay <= 1.0
            && (0.0..=1.0).contains(&self.late_ratio)
            && self.min_samples > 0.0
            && self.iwant_timeout_min <= self.iwant_timeout
            && self.max_pending >= 1
            && self.max_tracked >= 1
    }
}

/// Choking counters since the engine started ([`GossipsubEngine::choke_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChokeStats {
    /// CHOKEs we sent (re-sent ones included).
    pub chokes_sent: u64,
    /// UNCHOKEs we sent (re-sent ones included).
    pub unchokes_sent: u64,
    /// CHOKEs and UNCHOKEs we took (`chokes_received + unchokes_received`).
    pub received: u64,
    /// CHOKEs we took.
    pub chokes_received: u64,
    /// UNCHOKEs we took.
    pub unchokes_received: u64,
    /// CHOKEs and UNCHOKEs ignored (topic not ours, peer not in the mesh, choking off).
    pub ignored: u64,
    /// Messages we forwarded as an IHAVE instead, because the peer choked us.
    pub ihave_instead: u64,
    /// IWANTs sent after `iwant_timeout` for ids only choked peers announced.
    pub fallback_iwants: u64,
    /// Ids announced by choked peers not tracked (`max_pending` reached).
    pub pending_dropped: u64,
    /// Messages forwarded in full to a peer that choked us, because we took them straight
    /// from their author ([`ChokeConfig::eager_from_author`]).
    pub eager_to_choking: u64,
}

/// What we measured of one mesh peer on one topic.
#[derive(Default)]
struct PeerChoke {
    early: f64,
    late: f64,
    choked: bool,
    /// The heartbeat at which we choked it.
    choked_tick: u64,
    /// Full messages from it while choked (this heartbeat), IWANTs we sent it, and ids it
    /// announced (IHAVE) while choked.
    full_while_choked: u32,
    iwants: u32,
    ids_while_choked: u32,
    /// It sent IHAVE while unchoked (our UNCHOKE may be lost).
    ihave_while_unchoked: bool,
    /// Copies or ids (IHAVE, while choked) it sent this heartbeat.
    heard: u32,
}

impl PeerChoke {
    /// The early share once there are enough samples.
    fn share(&self, min_samples: f64) -> Option<f64> {
        let n = self.early + self.late;
        (n >= min_samples).then(|| self.early / n)
    }

    fn restart(&mut self, choked: bool, tick: u64) {
        *self = PeerChoke {
            choked,
            choked_tick: tick,
            ..PeerChoke::default()
        };
    }
}

struct Pending {
    id: Vec<u8>,
    topic: TopicHash,
    /// When the first IHAVE of it came.
    announced: Instant,
    deadline: Instant,
    peers: Vec<PeerId>,
}

/// The engine's choking state (see the [module docs](self)).
#[derive(Default)]
pub(super) struct ChokeState {
    /// Peers that announced support.
    supports: HashSet<PeerId>,
    /// (topic, peer): the peer choked us (it is in that topic's mesh).
    choked_by: HashSet<(TopicHash, PeerId)>,
    /// Per topic of our mesh, per supporting mesh peer.
    topics: HashMap<TopicHash, HashMap<PeerId, PeerChoke>>,
    /// First arrival of recent messages, by id hash.
    first_seen: HashMap<u64, Instant>,
    /// Ids announced by choked peers only, by id hash.
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    /// First receipts this heartbeat, per topic (a peer that sent no copy nor id is charged
    /// them as late: a silent peer must not look unjudged).
    firsts: HashMap<TopicHash, u32>,
    /// Running mean of the gaps between a choked peer's IHAVE and the first full copy, in
    /// seconds (`None` until one is seen).
    gap: Option<f64>,
    stats: ChokeStats,
    /// The counters last given to the metrics.
    reported: ChokeStats,
}

impl ChokeState {
    /// The fallback wait now (see the module docs).
    pub(super) fn wait(&self, config: &ChokeConfig) -> Duration {
        match self.gap {
            None => config.iwant_timeout,
            Some(gap) => Duration::from_secs_f64(gap * WAIT_FACTOR)
                .clamp(config.iwant_timeout_min, config.iwant_timeout),
        }
    }

    pub(super) fn note_gap(&mut self, gap: Duration) {
        let g = gap.as_secs_f64();
        self.gap = Some(match self.gap {
            None => g,
            Some(mean) => mean + GAP_WEIGHT * (g - mean),
        });
    }
}

impl GossipsubEngine {
    /// Choking counters ([`ChokeStats`]).
    pub fn choke_stats(&self) -> ChokeStats {
        self.choke.stats
    }

    /// Gives the metrics the choking counters' increments since the last call.
    pub(super) fn sync_choke_metrics(&mut self) {
        let now = self.choke.stats;
        if now == self.choke.reported {
            return;
        }
        if let Some(m) = &self.metrics {
            m.choke(&self.choke.reported, &now);
        }
        self.choke.reported = now;
    }

    /// The mesh peers we choke on `topic`.
    pub fn choked_peers(&self, topic: &TopicHash) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .choke
            .topics
            .get(topic)
            .into_iter()
            .flatten()
            .filter(|(_, s)| s.choked)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        peers
    }

    /// Whether `peer` choked us on `topic` (we send it IHAVE instead of what we forward).
    pub fn is_choked_by(&self, peer: &PeerId, topic: &TopicHash) -> bool {
        self.choke.choked_by.contains(&(topic.clone(), *peer))
    }

    /// Whether `peer` announced choking support.
    pub fn peer_supports_choke(&self, peer: &PeerId) -> bool {
        self.choke.supports.contains(peer)
    }

    /// Adds the support flag to an RPC carrying our subscriptions (choking on).
    pub(super) fn choke_hello(&self, rpc: &mut Rpc) {
        if self.config.choke.enabled {
            rpc.control
                .get_or_insert_with(ControlMessage::default)
                .choke_supported = Some(true);
        }
    }

    /// The peer disconnected.
    pub(super) fn choke_peer_gone(&mut self, peer: &PeerId) {
        let c = &mut self.choke;
        c.supports.remove(peer);
        c.choked_by.retain(|(_, p)| p != peer);
        for m in c.topics.values_mut() {
            m.remove(peer);
        }
    }

    /// GRAFT or PRUNE between us and `peer` on `topic`: both directions start unchoked.
    pub(super) fn choke_reset(&mut self, topic: &TopicHash, peer: &PeerId) {
        self.choke.choked_by.remove(&(topic.clone(), *peer));
        if let Some(m) = self.choke.topics.get_mut(topic) {
            m.remove(peer);
        }
    }

    /// Takes the choke fields out of a peer's control message.
    pub(super) fn handle_choke_control(&mut self, peer: PeerId, control: &mut ControlMessage) {
        let limit = self.config.max_messages_per_rpc;
        let enabled = self.config.choke.enabled;
        let choke = std::mem::take(&mut control.choke);
        let unchoke = std::mem::take(&mut control.unchoke);
        if let Some(flag) = control.choke_supported.take() {
            if flag && enabled {
                self.choke.supports.insert(peer);
            } else {
                self.choke.supports.remove(&peer);
            }
        }
        for (entry, choked) in choke
            .into_iter()
            .take(limit)
            .map(|e| (e, true))
            .chain(unchoke.into_iter().take(limit).map(|e| (e, false)))
        {
            let Some(topic) = entry.topic_id.map(TopicHash::from) else {
                self.choke.stats.ignored += 1;
                continue;
            };
            let in_mesh = self.mesh.get(&topic).is_some_and(|m| m.contains(&peer));
            if !enabled || !in_mesh {
                self.choke.stats.ignored += 1;
                continue;
            }
            self.choke.stats.received += 1;
            if choked {
                self.choke.stats.chokes_received += 1;
            } else {
                self.choke.stats.unchokes_received += 1;
            }
            if choked {
                self.choke.choked_by.insert((topic, peer));
            } else {
                self.choke.choked_by.remove(&(topic, peer));
            }
        }
    }

    /// Forwarding `id` to `peer`: if it choked us on `topic`, an IHAVE goes instead (`true`),
    /// unless `eager` (we took the message from its author and
    /// [`ChokeConfig::eager_from_author`] is on: the full message goes, counted).
    pub(super) fn forward_choked(
        &mut self,
        topic: &TopicHash,
        peer: PeerId,
        id: &MessageId,
        eager: bool,
    ) -> bool {
        if !self.choke.choked_by.contains(&(topic.clone(), peer)) {
            return false;
        }
        if eager && self.config.choke.eager_from_author {
            self.choke.stats.eager_to_choking += 1;
            return false;
        }
        self.choke.stats.ihave_instead += 1;
        self.control(peer).ihave.push(ControlIHave {
            topic_id: Some(topic.as_str().to_string()),
            message_ids: vec![id.0.clone()],
        });
        true
    }

    /// A copy of a message (id hash `hash`) from `peer`: `first` if it is the first we got,
    /// `from_author` if `peer` wrote it (not measured: the author's copy is never choked).
    pub(super) fn choke_on_message(
        &mut self,
        now: Instant,
        peer: &PeerId,
        topic: &TopicHash,
        hash: u64,
        from_author: bool,
        first: bool,
    ) {
        let config = &self.config.choke;
        if !config.enabled {
            return;
        }
        let c = &mut self.choke;
        let early = if first {
            if c.first_seen.len() < config.max_tracked {
                c.first_seen.insert(hash, now);
            }
            if let Some(p) = c.pending.remove(&hash) {
                c.deadlines.remove(&(p.deadline, hash));
                c.note_gap(now.saturating_duration_since(p.announced));
            }
            if c.topics.contains_key(topic) {
                *c.firsts.entry(topic.clone()).or_default() += 1;
            }
            true
        } else {
            c.first_seen
                .get(&hash)
                .is_some_and(|t| now.saturating_duration_since(*t) <= config.early_margin)
        };
        if from_author {
            return;
        }
        let Some(st) = c.topics.get_mut(topic).and_then(|m| m.get_mut(peer)) else {
            return;
        };
        st.heard += 1;
        if st.choked {
            // An answer to our IWANT, a copy it took from the author and forwards eagerly
            // (`eager_from_author`), or our CHOKE was lost; not measured (an answer to a
            // fallback IWANT would look early).
            st.full_while_choked += 1;
            return;
        }
        if early {
            st.early += 1.0;
        } else {
            st.late += 1.0;
        }
    }

    /// An IHAVE from `peer`: taken here (`true`) when we choked `peer` on its topic.
    pub(super) fn choke_ihave(&mut self, now: Instant, peer: PeerId, ihave: &ControlIHave) -> bool {
        let config = &self.config.choke;
        if !config.enabled {
            return false;
        }
        let Some(topic) = ihave.topic_id.as_deref().map(TopicHash::from) else {
            return false;
        };
        let c = &mut self.choke;
        let wait = c.wait(config);
        let Some(st) = c.topics.get_mut(&topic).and_then(|m| m.get_mut(&peer)) else {
            return false;
        };
        if !st.choked {
            st.ihave_while_unchoked = true;
            return false;
        }
        for id in ihave.message_ids.iter().take(MAX_IDS_PER_CHOKE_IHAVE) {
            if id.len() > self.config.max_message_id_len {
                continue;
            }
            st.heard += 1;
            st.ids_while_choked += 1;
            let hash = super::id_hash(id);
            if self.seen.contains(&MessageId(id.clone())) {
                let early = c
                    .first_seen
                    .get(&hash)
                    .is_some_and(|t| now.saturating_duration_since(*t) <= config.early_margin);
                if early {
                    st.early += 1.0;
                } else {
                    st.late += 1.0;
                }
                continue;
            }
            st.early += 1.0;
            if let Some(p) = c.pending.get_mut(&hash) {
                if p.peers.len() < MAX_ANNOUNCERS && !p.peers.contains(&peer) {
                    p.peers.push(peer);
                }
            } else if c.pending.len() < config.max_pending {
                let deadline = now + wait;
                c.deadlines.insert((deadline, hash));
                c.pending.insert(
                    hash,
                    Pending {
                        id: id.clone(),
                        topic: topic.clone(),
                        announced: now,
                        deadline,
                        peers: vec![peer],
                    },
                );
            } else {
                c.stats.pending_dropped += 1;
            }
        }
        // It has these messages: not forwarded to it if ours comes later (as IDONTWANT).
        for id in ihave.message_ids.iter().take(MAX_IDS_PER_CHOKE_IHAVE) {
            if id.len() <= self.config.max_message_id_len {
                self.note_has(&peer, &MessageId(id.clone()));
            }
        }
        true
    }

    /// When the next fallback IWANT is due.
    pub(super) fn choke_poll_timeout(&self) -> Option<Instant> {
        self.choke.deadlines.first().map(|(t, _)| *t)
    }

    /// Fallback IWANTs for announced ids no one delivered within `iwant_timeout`.
    pub(super) fn choke_timeout(&mut self, now: Instant) {
        let mut asked = false;
        while let Some(&(t, hash)) = self.choke.deadlines.first() {
            if t > now {
                break;
            }
            self.choke.deadlines.pop_first();
            let Some(p) = self.choke.pending.remove(&hash) else {
                continue;
            };
            if self.seen.contains(&MessageId(p.id.clone())) {
                continue;
            }
            // Censored: the copy took at least this long.
            self.choke
                .note_gap(p.deadline.saturating_duration_since(p.announced));
            let Some(peer) = p.peers.into_iter().find(|q| self.peers.contains_key(q)) else {
                continue;
            };
            if let Some(st) = self
                .choke
                .topics
                .get_mut(&p.topic)
                .and_then(|m| m.get_mut(&peer))
            {
                st.iwants += 1;
            }
            self.choke.stats.fallback_iwants += 1;
            if self.score.is_some() {
                let expires = now + self.config.iwant_followup_time;
                self.promises
                    .add(peer, std::slice::from_ref(&p.id), expires);
            }
            self.control(peer).iwant.push(wire::ControlIWant {
                message_ids: vec![p.id],
            });
            asked = true;
        }
        if asked {
            self.flush_control();
        }
    }

    /// Whether peer scoring weighs mesh deliveries (P3) on `topic`.
    fn p3_on(&self, topic: &TopicHash) -> bool {
        self.config
            .score_params
            .as_ref()
            .and_then(|p| p.topics.get(topic))
            .is_some_and(|t| t.mesh_message_deliveries_weight != 0.0)
    }

    fn send_choke(&mut self, topic: &TopicHash, peer: PeerId, choke: bool) {
        let entry = ControlChoke {
            topic_id: Some(topic.as_str().to_string()),
        };
        if choke {
            self.choke.stats.chokes_sent += 1;
            self.control(peer).choke.push(entry);
        } else {
            self.choke.stats.unchokes_sent += 1;
            self.control(peer).unchoke.push(entry);
        }
    }

    /// The heartbeat's part: forget what left the meshes, choke, unchoke or swap, re-send
    /// what looks lost, decay the counters.
    pub(super) fn choke_heartbeat(&mut self, now: Instant) {
        if !self.config.choke.enabled {
            return;
        }
        let margin = self.config.choke.early_margin;
        let mesh = &self.mesh;
        self.choke
            .choked_by
            .retain(|(t, p)| mesh.get(t).is_some_and(|m| m.contains(p)));
        self.choke.topics.retain(|t, _| mesh.contains_key(t));
        self.choke.firsts.retain(|t, _| mesh.contains_key(t));
        self.choke
            .first_seen
            .retain(|_, t| now.saturating_duration_since(*t) <= margin);
        let topics: Vec<TopicHash> = self.mesh.keys().cloned().collect();
        for topic in topics {
            self.choke_topic(&topic);
        }
    }

    fn choke_topic(&mut self, topic: &TopicHash) {
        let config = self.config.choke.clone();
        let tick = self.heartbeat_ticks;
        let mesh: Vec<PeerId> = self.mesh_peers(topic).copied().collect();
        let p3 = self.p3_on(topic);
        let supports = &self.choke.supports;
        let table = self.choke.topics.entry(topic.clone()).or_default();
        table.retain(|p, _| mesh.contains(p));
        for p in &mesh {
            if supports.contains(p) {
                table.entry(*p).or_default();
            }
        }
        let plain = mesh.len() - table.len();
        // A peer that neither sent nor announced anything in a heartbeat with messages is
        // charged them all as late (a silent link); others are judged by what they sent.
        let firsts = self.choke.firsts.remove(topic).unwrap_or(0);
        for st in table.values_mut() {
            if st.heard == 0 {
                st.late += f64::from(firsts);
            }
            st.heard = 0;
        }
        // (share or None, peer), for the unchoked and the choked supporting peers.
        let mut unchoked: Vec<(Option<f64>, PeerId)> = Vec::new();
        let mut choked: Vec<(Option<f64>, PeerId)> = Vec::new();
        let mut resend: Vec<(PeerId, bool)> = Vec::new();
        for (p, st) in table.iter_mut() {
            let share = st.share(config.min_samples);
            if st.choked {
                choked.push((share, *p));
                // Our CHOKE looks lost when most of what it sent were full messages we did
                // not ask for (a peer forwarding eagerly what it took from the author also
                // announces the rest by IHAVE).
                let unrequested = st.full_while_choked.saturating_sub(st.iwants);
                if unrequested > st.ids_while_choked && tick >= st.choked_tick + 2 {
                    resend.push((*p, true));
                }
            } else {
                unchoked.push((share, *p));
                if st.ihave_while_unchoked {
                    resend.push((*p, false));
                }
            }
            st.full_while_choked = 0;
            st.iwants = 0;
            st.ids_while_choked = 0;
            st.ihave_while_unchoked = false;
            st.early *= config.decay;
            st.late *= config.decay;
        }
        // Deterministic order: worst first for the unchoked, best first for the choked
        // (unjudged peers count as the best: they keep their place until measured).
        let key = |s: &Option<f64>| s.unwrap_or(f64::INFINITY);
        unchoked.sort_by(|a, b| key(&a.0).total_cmp(&key(&b.0)).then(a.1.cmp(&b.1)));
        choked.sort_by(|a, b| key(&b.0).total_cmp(&key(&a.0)).then(a.1.cmp(&b.1)));
        let mut changes: Vec<(PeerId, bool)> = Vec::new();
        if p3 {
            changes.extend(choked.iter().map(|(_, p)| (*p, false)));
        } else {
            let mut open = plain + unchoked.len();
            let mut choked = choked.into_iter();
            // Too few unchoked: the best choked ones first.
            while open < config.min_unchoked {
                let Some((_, p)) = choked.next() else { break };
                changes.push((p, false));
                open += 1;
            }
            // Too many: the mostly-late ones, worst first.
            let mut chokeable = unchoked
                .iter()
                .filter(|(s, _)| s.is_some_and(|s| s < config.late_ratio))
                .peekable();
            while open > config.max_unchoked {
                let Some((_, p)) = chokeable.next() else {
                    break;
                };
                changes.push((*p, true));
                open -= 1;
            }
            // Otherwise one swap, if a choked peer is clearly faster than the worst open one.
            if changes.is_empty() {
                if let (Some((Some(best), c)), Some((Some(worst), u))) =
                    (choked.next(), unchoked.first().copied())
                {
                    if best > worst + config.swap_margin {
                        changes.push((c, false));
                        changes.push((u, true));
                    }
                }
            }
        }
        for (peer, choke) in &changes {
            if let Some(st) = self
                .choke
                .topics
                .get_mut(topic)
                .and_then(|m| m.get_mut(peer))
            {
                st.restart(*choke, tick);
            }
            resend.retain(|(p, _)| p != peer);
        }
        for (peer, choke) in changes.into_iter().chain(resend) {
            self.send_choke(topic, peer, choke);
        }
    }
}
