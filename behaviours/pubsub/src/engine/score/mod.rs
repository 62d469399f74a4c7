//! Peer scoring v1.1: the counters behind P1–P7 (and rust-libp2p's slow-peer penalty), the
//! score function, decay, and the IWANT promises whose breaking is a P7 penalty.
//!
//! ```text
//! score = min(Σ_topics topic_weight × (P1·w1 + P2·w2 + P3·w3 + P3b·w3b + P4·w4), topic_score_cap)
//!       + P5·w5 + P6·w6 + P7·w7 + slow·w_slow
//! ```
//!
//! P1 = min(time in mesh / quantum, cap); P2 = first deliveries (capped); P3 = (threshold −
//! mesh deliveries)² once active (after `mesh_message_deliveries_activation` in the mesh) and
//! below the threshold; P3b = the sticky penalty added when a peer leaves the mesh with a
//! deficit; P4 = invalid deliveries²; P5 = the application's score; P6 = (peers on the IP −
//! threshold)² beyond the threshold; P7 = (penalties − threshold)² beyond it; slow = messages
//! dropped at the peer's full queue beyond its threshold. Counters decay every
//! `decay_interval`. A disconnected peer's score is kept `retain_score` if not positive, so
//! leaving does not wash a bad score.

pub(crate) mod params;
mod promises;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use super::{MessageId, TopicHash};
use params::{PeerScoreParams, TopicScoreParams};
pub(crate) use promises::GossipPromises;

/// How long a message's delivery record is kept (rust-libp2p: 120 s).
const DELIVERY_RECORD_TTL: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Default)]
struct TopicStats {
    /// When the peer joined our mesh, if it is in it.
    graft_time: Option<Instant>,
    mesh_time: Duration,
    first_message_deliveries: f64,
    mesh_message_deliveries_active: bool,
    mesh_message_deliveries: f64,
    mesh_failure_penalty: f64,
    invalid_message_deliveries: f64,
}

#[derive(Clone, Debug, Default)]
struct PeerStats {
    /// `Some(expiry)` once disconnected.
    disconnected_until: Option<Instant>,
    topics: HashMap<TopicHash, TopicStats>,
    ips: HashSet<IpAddr>,
    behaviour_penalty: f64,
    slow_peer_penalty: f64,
    application_score: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryStatus {
    /// Waiting for validation.
    Unknown,
    /// Valid since then.
    Valid(Instant),
    Invalid,
    Ignored,
}

struct DeliveryRecord {
    status: DeliveryStatus,
    /// Peers that sent a copy (other than the first).
    peers: HashSet<PeerId>,
}

/// The scores of all peers.
pub(crate) struct PeerScore {
    params: PeerScoreParams,
    stats: HashMap<PeerId, PeerStats>,
    peer_ips: HashMap<IpAddr, HashSet<PeerId>>,
    deliveries: HashMap<MessageId, DeliveryRecord>,
    delivery_order: VecDeque<(Instant, MessageId)>,
    max_records: usize,
    next_decay: Option<Instant>,
}

impl PeerScore {
    pub(crate) fn new(params: PeerScoreParams, max_records: usize) -> Self {
        PeerScore {
            params,
            stats: HashMap::new(),
            peer_ips: HashMap::new(),
            deliveries: HashMap::new(),
            delivery_order: VecDeque::new(),
            max_records,
            next_decay: None,
        }
    }

    /// The score of `peer` (0 for a peer never seen).
    pub(crate) fn score(&self, peer: &PeerId) -> f64 {
        let Some(stats) = self.stats.get(peer) else {
            return 0.0;
        };
        let mut score = 0.0;
        for (topic, ts) in &stats.topics {
            let Some(tp) = self.params.topics.get(topic) else {
                continue;
            };
            let mut topic_score = 0.0;
            if ts.graft_time.is_some() {
                let p1 = (ts.mesh_time.as_secs_f64() / tp.time_in_mesh_quantum.as_secs_f64())
                    .min(tp.time_in_mesh_cap);
                topic_score += p1 * tp.time_in_mesh_weight;
            }
            let p2 = ts
                .first_message_deliveries
                .min(tp.first_message_deliveries_cap);
            topic_score += p2 * tp.first_message_deliveries_weight;
            if ts.mesh_message_deliveries_active
                && ts.mesh_message_deliveries < tp.mesh_message_deliveries_threshold
            {
                let deficit = tp.mesh_message_deliveries_threshold - ts.mesh_message_deliveries;
                topic_score += deficit * deficit * tp.mesh_message_deliveries_weight;
            }
            topic_score += ts.mesh_failure_penalty * tp.mesh_failure_penalty_weight;
            let p4 = ts.invalid_message_deliveries * ts.invalid_message_deliveries;
            topic_score += p4 * tp.invalid_message_deliveries_weight;
            score += topic_score * tp.topic_weight;
        }
        if self.params.topic_score_cap > 0.0 && score > self.params.topic_score_cap {
            score = self.params.topic_score_cap;
        }
        score += stats.application_score * self.params.app_specific_weight;
        for ip in &stats.ips {
            if self.params.ip_colocation_factor_whitelist.contains(ip) {
                continue;
            }
            let peers = self.peer_ips.get(ip).map_or(0, HashSet::len) as f64;
            if peers > self.params.ip_colocation_factor_threshold {
                let surplus = peers - self.params.ip_colocation_factor_threshold;
                score += surplus * surplus * self.params.ip_colocation_factor_weight;
            }
        }
        if stats.behaviour_penalty > self.params.behaviour_penalty_threshold {
            let excess = stats.behaviour_penalty - self.params.behaviour_penalty_threshold;
            score += excess * excess * self.params.behaviour_penalty_weight;
        }
        if stats.slow_peer_penalty > self.params.slow_peer_threshold {
            let excess = stats.slow_peer_penalty - self.params.slow_peer_threshold;
            score += excess * self.params.slow_peer_weight;
        }
        score
    }

    /// A peer connected (its retained score, if any, comes back).
    pub(crate) fn add_peer(&mut self, peer: PeerId) {
        self.stats.entry(peer).or_default().disconnected_until = None;
    }

    /// A peer disconnected: a positive score is forgotten; otherwise it is kept for
    /// `retain_score`, first deliveries reset and mesh deficits made sticky.
    pub(crate) fn remove_peer(&mut self, now: Instant, peer: &PeerId) {
        if self.score(peer) > 0.0 {
            if let Some(stats) = self.stats.remove(peer) {
                self.forget_ips(peer, &stats);
            }
            return;
        }
        let params = &self.params;
        if let Some(stats) = self.stats.get_mut(peer) {
            for (topic, ts) in &mut stats.topics {
                ts.first_message_deliveries = 0.0;
                if let Some(tp) = params.topics.get(topic) {
                    if ts.graft_time.is_some() {
                        apply_mesh_failure(ts, tp);
                    }
                }
                ts.graft_time = None;
                ts.mesh_message_deliveries_active = false;
            }
            stats.disconnected_until = Some(now + params.retain_score);
        }
    }

    fn forget_ips(&mut self, peer: &PeerId, stats: &PeerStats) {
        for ip in &stats.ips {
            if let Some(set) = self.peer_ips.get_mut(ip) {
                set.remove(peer);
                if set.is_empty() {
                    self.peer_ips.remove(ip);
                }
            }
        }
    }

    /// Records `ip` for a peer the score tracks; an unknown peer (never connected, or dropped
    /// by the router) gets no entry, which nothing would ever expire.
    pub(crate) fn add_ip(&mut self, peer: PeerId, ip: IpAddr) {
        let Some(stats) = self.stats.get_mut(&peer) else {
            return;
        };
        stats.ips.insert(ip);
        self.peer_ips.entry(ip).or_default().insert(peer);
    }

    pub(crate) fn remove_ip(&mut self, peer: &PeerId, ip: &IpAddr) {
        if let Some(stats) = self.stats.get_mut(peer) {
            stats.ips.remove(ip);
        }
        if let Some(set) = self.peer_ips.get_mut(ip) {
            set.remove(peer);
            if set.is_empty() {
                self.peer_ips.remove(ip);
            }
        }
    }

    fn topic_stats(
        &mut self,
        peer: &PeerId,
        topic: &TopicHash,
    ) -> Option<(&mut TopicStats, &TopicScoreParams)> {
        let tp = self.params.topics.get(topic)?;
        let stats = self.stats.get_mut(peer)?;
        Some((stats.topics.entry(topic.clone()).or_default(), tp))
    }

    pub(crate) fn graft(&mut self, now: Instant, peer: &PeerId, topic: &TopicHash) {
        if let Some((ts, _)) = self.topic_stats(peer, topic) {
            ts.graft_time = Some(now);
            ts.mesh_time = Duration::ZERO;
            ts.mesh_message_deliveries_active = false;
        }
    }

    pub(crate) fn prune(&mut self, peer: &PeerId, topic: &TopicHash) {
        if let Some((ts, tp)) = self.topic_stats(peer, topic) {
            apply_mesh_failure(ts, tp);
            ts.mesh_message_deliveries_active = false;
            ts.graft_time = None;
        }
    }

    pub(crate) fn add_penalty(&mut self, peer: &PeerId, count: usize) {
        if let Some(stats) = self.stats.get_mut(peer) {
            stats.behaviour_penalty += count as f64;
        }
    }

    pub(crate) fn slow_peer(&mut self, peer: &PeerId) {
        if let Some(stats) = self.stats.get_mut(peer) {
            stats.slow_peer_penalty += 1.0;
        }
    }

    pub(crate) fn set_application_score(&mut self, peer: &PeerId, score: f64) -> bool {
        match self.stats.get_mut(peer) {
            Some(stats) => {
                stats.application_score = score;
                true
            }
            None => false,
        }
    }

    fn record(&mut self, now: Instant, id: &MessageId) -> &mut DeliveryRecord {
        if !self.deliveries.contains_key(id) {
            while self.deliveries.len() >= self.max_records {
                let Some((_, old)) = self.delivery_order.pop_front() else {
                    break;
                };
                self.deliveries.remove(&old);
            }
            self.delivery_order.push_back((now, id.clone()));
        }
        self.deliveries
            .entry(id.clone())
            .or_insert_with(|| DeliveryRecord {
                status: DeliveryStatus::Unknown,
                peers: HashSet::new(),
            })
    }

    /// A new message from `from` is awaiting validation.
    pub(crate) fn validate_message(&mut self, now: Instant, id: &MessageId) {
        self.record(now, id);
    }

    /// A message was validated: P2 (and P3 if in the mesh) for the first sender, P3 for the
    /// mesh peers whose copies came while it was being validated.
    pub(crate) fn deliver_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        topic: &TopicHash,
    ) {
        self.mark_first_delivery(from, topic);
        let record = self.record(now, id);
        if record.status != DeliveryStatus::Unknown {
            return;
        }
        record.status = DeliveryStatus::Valid(now);
        let peers: Vec<PeerId> = record.peers.iter().copied().collect();
        for peer in peers {
            if peer != *from {
                self.mark_duplicate_delivery(now, &peer, topic, None);
            }
        }
    }

    /// An invalid message that has no record (a bad signature): P4 for the sender.
    pub(crate) fn reject_invalid_message(&mut self, from: &PeerId, topic: &TopicHash) {
        self.mark_invalid_delivery(from, topic);
    }

    /// The application rejected (or, `ignore`, ignored) a message: P4 for the sender and every
    /// peer that forwarded a copy meanwhile, unless ignored.
    pub(crate) fn reject_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        topic: &TopicHash,
        ignore: bool,
    ) {
        let record = self.record(now, id);
        if record.status != DeliveryStatus::Unknown {
            return;
        }
        if ignore {
            record.status = DeliveryStatus::Ignored;
            record.peers.clear();
            return;
        }
        record.status = DeliveryStatus::Invalid;
        let peers: Vec<PeerId> = record.peers.drain().collect();
        self.mark_invalid_delivery(from, topic);
        for peer in peers {
            self.mark_invalid_delivery(&peer, topic);
        }
    }

    /// A copy of a message already seen.
    pub(crate) fn duplicated_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        topic: &TopicHash,
    ) {
        let record = self.record(now, id);
        if !record.peers.insert(*from) {
            return;
        }
        match record.status {
            DeliveryStatus::Unknown => {}
            DeliveryStatus::Valid(at) => self.mark_duplicate_delivery(now, from, topic, Some(at)),
            DeliveryStatus::Invalid => {
                if let Some(r) = self.deliveries.get_mut(id) {
                    r.peers.remove(from);
                }
                self.mark_invalid_delivery(from, topic);
            }
            DeliveryStatus::Ignored => {}
        }
    }

    fn mark_first_delivery(&mut self, peer: &PeerId, topic: &TopicHash) {
        if let Some((ts, tp)) = self.topic_stats(peer, topic) {
            ts.first_message_deliveries =
                (ts.first_message_deliveries + 1.0).min(tp.first_message_deliveries_cap);
            if ts.graft_time.is_some() {
                ts.mesh_message_deliveries =
                    (ts.mesh_message_deliveries + 1.0).min(tp.mesh_message_deliveries_cap);
            }
        }
    }

    fn mark_duplicate_delivery(
        &mut self,
        now: Instant,
        peer: &PeerId,
        topic: &TopicHash,
        validated: Option<Instant>,
    ) {
        if let Some((ts, tp)) = self.topic_stats(peer, topic) {
            if ts.graft_time.is_none() {
                return;
            }
            let in_window =
                validated.is_none_or(|at| now <= at + tp.mesh_message_deliveries_window);
            if in_window {
                ts.mesh_message_deliveries =
                    (ts.mesh_message_deliveries + 1.0).min(tp.mesh_message_deliveries_cap);
            }
        }
    }

    fn mark_invalid_delivery(&mut self, peer: &PeerId, topic: &TopicHash) {
        if let Some((ts, _)) = self.topic_stats(peer, topic) {
            ts.invalid_message_deliveries += 1.0;
        }
    }

    /// Decays the counters if `decay_interval` has passed; drops expired retained scores and
    /// delivery records.
    pub(crate) fn refresh(&mut self, now: Instant) {
        while let Some((at, _)) = self.delivery_order.front() {
            if *at + DELIVERY_RECORD_TTL > now {
                break;
            }
            if let Some((_, id)) = self.delivery_order.pop_front() {
                self.deliveries.remove(&id);
            }
        }
        let due = *self
            .next_decay
            .get_or_insert(now + self.params.decay_interval);
        if now < due {
            return;
        }
        self.next_decay = Some(now + self.params.decay_interval);
        let params = &self.params;
        let to_zero = |v: f64| if v < params.decay_to_zero { 0.0 } else { v };
        let mut expired = Vec::new();
        for (peer, stats) in &mut self.stats {
            if let Some(until) = stats.disconnected_until {
                // Retained scores do not decay: leaving must not wash a bad score.
                if now > until {
                    expired.push(*peer);
                }
                continue;
            }
            for (topic, ts) in &mut stats.topics {
                let Some(tp) = params.topics.get(topic) else {
                    continue;
                };
                ts.first_message_deliveries =
                    to_zero(ts.first_message_deliveries * tp.first_message_deliveries_decay);
                ts.mesh_message_deliveries =
                    to_zero(ts.mesh_message_deliveries * tp.mesh_message_deliveries_decay);
                ts.mesh_failure_penalty =
                    to_zero(ts.mesh_failure_penalty * tp.mesh_failure_penalty_decay);
                ts.invalid_message_deliveries =
                    to_zero(ts.invalid_message_deliveries * tp.invalid_message_deliveries_decay);
                if let Some(grafted) = ts.graft_time {
                    ts.mesh_time = now.saturating_duration_since(grafted);
                    if ts.mesh_time > tp.mesh_message_deliveries_activation {
                        ts.mesh_message_deliveries_active = true;
                    }
                }
            }
            stats.behaviour_penalty =
                to_zero(stats.behaviour_penalty * params.behaviour_penalty_decay);
            stats.slow_peer_penalty = to_zero(stats.slow_peer_penalty * params.slow_peer_decay);
        }
        for peer in expired {
            if let Some(stats) = self.stats.remove(&peer) {
                self.forget_ips(&peer, &stats);
            }
        }
    }

    /// Peers with stats (connected or retained).
    pub(crate) fn tracked(&self) -> usize {
        self.stats.len()
    }
}

fn apply_mesh_failure(ts: &mut TopicStats, tp: &TopicScoreParams) {
    if ts.mesh_message_deliveries_active
        && ts.mesh_message_deliveries < tp.mesh_message_deliveries_threshold
    {
        let deficit = tp.mesh_message_deliveries_threshold - ts.mesh_message_deliveries;
        ts.mesh_failure_penalty += deficit * deficit;
    }
}
