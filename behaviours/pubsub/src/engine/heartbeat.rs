//! The heartbeat: score decay and broken promises, mesh maintenance (negative scores out,
//! D_lo/D_hi/D_score/D_out, opportunistic grafting), fanout upkeep, gossip emission, cache
//! shifting.

use std::collections::BTreeSet;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{GossipsubEngine, TopicHash};
use crate::wire;

impl GossipsubEngine {
    pub(super) fn heartbeat(&mut self, now: Instant) {
        self.heartbeat_ticks += 1;
        if let Some(score) = &mut self.score {
            score.refresh(now);
            for (peer, count) in self.promises.broken(now) {
                score.add_penalty(&peer, count);
            }
        }
        for state in self.peers.values_mut() {
            state.ihave_received = 0;
            state.iasked = 0;
        }
        self.idontwant_heartbeat();
        self.backoffs.retain(|_, until| *until > now);
        let topics: Vec<TopicHash> = self.mesh.keys().cloned().collect();
        for topic in &topics {
            self.maintain_mesh(now, topic);
        }
        self.maintain_fanout(now);
        self.emit_gossip();
        self.emit_pattern_gossip();
        self.choke_heartbeat(now);
        self.flush_control();
        self.mcache.shift();
        self.seen.expire(now);
    }

    fn is_outbound(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.outbound)
    }

    fn graft(&mut self, now: Instant, topic: &TopicHash, peers: Vec<PeerId>) {
        for peer in peers {
            if let Some(mesh) = self.mesh.get_mut(topic) {
                mesh.insert(peer);
            }
            self.choke_reset(topic, &peer);
            if let Some(score) = &mut self.score {
                score.graft(now, &peer, topic);
            }
            self.control(peer).graft.push(wire::ControlGraft {
                topic_id: Some(topic.as_str().to_string()),
            });
        }
    }

    /// Whether the heartbeat may graft `peer` on `topic` now.
    fn graftable(&self, topic: &TopicHash, peer: &PeerId, now: Instant) -> bool {
        !self.in_backoff(topic, peer, now, true) && self.score_of(peer) >= 0.0
    }

    fn maintain_mesh(&mut self, now: Instant, topic: &TopicHash) {
        let d = self.config.mesh_n;
        let backoff = self.config.prune_backoff;

        // Peers with a negative score leave the mesh (without peer exchange).
        let negative: Vec<PeerId> = self
            .mesh_peers(topic)
            .filter(|p| self.score_of(p) < 0.0)
            .copied()
            .collect();
        for peer in negative {
            if let Some(m) = self.mesh.get_mut(topic) {
                m.remove(&peer);
            }
            self.prune(now, topic, peer, backoff, false);
        }

        // Too few: graft up to D.
        let mesh: BTreeSet<PeerId> = self.mesh.get(topic).cloned().unwrap_or_default();
        if mesh.len() < self.config.mesh_n_low {
            let candidates = self.topic_candidates(topic, |p| {
                !mesh.contains(p) && self.graftable(topic, p, now)
            });
            let chosen = self.pick(candidates, d - mesh.len());
            self.graft(now, topic, chosen);
        }

        // Too many: keep D — the D_score best by score (equal scores in random order), then
        // at least D_out outbound peers, then random ones.
        let mesh: Vec<PeerId> = self.mesh_peers(topic).copied().collect();
        if mesh.len() > self.config.mesh_n_high {
            let mut shuffled = mesh;
            self.rng.shuffle(&mut shuffled);
            let mut scored: Vec<(f64, PeerId)> =
                shuffled.iter().map(|p| (self.score_of(p), *p)).collect();
            // Stable: equal scores keep their shuffled order.
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut ranked: Vec<PeerId> = scored.into_iter().map(|(_, p)| p).collect();
            let mut keep: Vec<PeerId> = ranked.drain(..self.config.retain_scores).collect();
            let outbound_kept = keep.iter().filter(|p| self.is_outbound(p)).count();
            let need_outbound = self.config.mesh_outbound_min.saturating_sub(outbound_kept);
            let (outbound, inbound): (Vec<PeerId>, Vec<PeerId>) =
                ranked.into_iter().partition(|p| self.is_outbound(p));
            let mut outbound = outbound.into_iter();
            keep.extend(outbound.by_ref().take(need_outbound));
            let mut rest: Vec<PeerId> = outbound.chain(inbound).collect();
            self.rng.shuffle(&mut rest);
            let room = d.saturating_sub(keep.len());
            keep.extend(rest.drain(..room.min(rest.len())));
            for peer in rest {
                if let Some(m) = self.mesh.get_mut(topic) {
                    m.remove(&peer);
                }
                self.prune(now, topic, peer, backoff, true);
            }
        }

        // Too few outbound peers: graft more.
        let mesh: BTreeSet<PeerId> = self.mesh.get(topic).cloned().unwrap_or_default();
        if mesh.len() >= self.config.mesh_n_low {
            let outbound = mesh.iter().filter(|p| self.is_outbound(p)).count();
            if outbound < self.config.mesh_outbound_min {
                let candidates = self.topic_candidates(topic, |p| {
                    !mesh.contains(p) && self.is_outbound(p) && self.graftable(topic, p, now)
                });
                let chosen = self.pick(candidates, self.config.mesh_outbound_min - outbound);
                self.graft(now, topic, chosen);
            }
        }

        // Opportunistic grafting (scoring on): a mesh whose median score is below the
        // threshold takes up to `opportunistic_graft_peers` peers scoring above the median.
        let ticks = self.config.opportunistic_graft_ticks;
        if self.score.is_some() && self.heartbeat_ticks % ticks == 0 {
            let mesh: BTreeSet<PeerId> = self.mesh.get(topic).cloned().unwrap_or_default();
            if mesh.len() > 1 {
                let mut scores: Vec<f64> = mesh.iter().map(|p| self.score_of(p)).collect();
                scores.sort_by(f64::total_cmp);
                let median = scores[scores.len() / 2];
                if median < self.config.score_thresholds.opportunistic_graft_threshold {
                    let candidates = self.topic_candidates(topic, |p| {
                        !mesh.contains(p)
                            && self.graftable(topic, p, now)
                            && self.score_of(p) > median
                    });
                    let chosen = self.pick(candidates, self.config.opportunistic_graft_peers);
                    self.graft(now, topic, chosen);
                }
            }
        }
    }

    fn maintain_fanout(&mut self, now: Instant) {
        let ttl = self.config.fanout_ttl;
        let expired: Vec<TopicHash> = self
            .fanout_last_pub
            .iter()
            .filter(|(_, last)| **last + ttl <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in expired {
            self.fanout.remove(&topic);
            self.fanout_last_pub.remove(&topic);
        }
        let publish_threshold = self.config.score_thresholds.publish_threshold;
        let topics: Vec<TopicHash> = self.fanout.keys().cloned().collect();
        for topic in topics {
            let mut set = self.fanout.remove(&topic).unwrap_or_default();
            set.retain(|p| {
                self.topic_peers.get(&topic).is_some_and(|s| s.contains(p))
                    && self.score_of(p) >= publish_threshold
            });
            if set.len() < self.config.mesh_n {
                let candidates = self.topic_candidates(&topic, |p| {
                    !set.contains(p) && self.score_of(p) >= publish_threshold
                });
                let chosen = self.pick(candidates, self.config.mesh_n - set.len());
                set.extend(chosen);
            }
            self.fanout.insert(topic, set);
        }
    }

    /// IHAVE for `ids` of `topic` to max(D_lazy, gossip_factor × candidates) of
    /// `candidates` chosen at random, each with at most `max_ihave_length` ids (a random
    /// selection when there are more).
    pub(super) fn send_ihave(
        &mut self,
        topic: &TopicHash,
        candidates: Vec<PeerId>,
        mut ids: Vec<Vec<u8>>,
    ) {
        let by_factor = (self.config.gossip_factor * candidates.len() as f64) as usize;
        let n = self.config.gossip_lazy.max(by_factor);
        let chosen = self.pick(candidates, n);
        for peer in chosen {
            let ids = if ids.len() > self.config.max_ihave_length {
                self.rng.shuffle(&mut ids);
                ids[..self.config.max_ihave_length].to_vec()
            } else {
                ids.clone()
            };
            self.control(peer).ihave.push(wire::ControlIHave {
                topic_id: Some(topic.as_str().to_string()),
                message_ids: ids,
            });
        }
    }

    fn emit_gossip(&mut self) {
        let topics: Vec<TopicHash> = self
            .mesh
            .keys()
            .chain(self.fanout.keys())
            .cloned()
            .collect();
        let gossip_threshold = self.config.score_thresholds.gossip_threshold;
        for topic in topics {
            let ids: Vec<Vec<u8>> = self
                .mcache
                .gossip_ids(&topic)
                .into_iter()
                .map(|id| id.0)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let exclude: BTreeSet<PeerId> = self
                .mesh
                .get(&topic)
                .or_else(|| self.fanout.get(&topic))
                .cloned()
                .unwrap_or_default();
            let candidates = self.topic_candidates(&topic, |p| {
                !exclude.contains(p) && self.score_of(p) >= gossip_threshold
            });
            self.send_ihave(&topic, candidates, ids);
        }
    }
}
