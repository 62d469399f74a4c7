//! The heartbeat: mesh maintenance, fanout upkeep, gossip emission, cache shifting.

use std::collections::BTreeSet;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{GossipsubEngine, TopicHash};
use crate::wire;

impl GossipsubEngine {
    pub(super) fn heartbeat(&mut self, now: Instant) {
        for state in self.peers.values_mut() {
            state.ihave_received = 0;
            state.iasked = 0;
        }
        self.backoffs.retain(|_, until| *until > now);
        let topics: Vec<TopicHash> = self.mesh.keys().cloned().collect();
        for topic in &topics {
            self.maintain_mesh(now, topic);
        }
        self.maintain_fanout(now);
        self.emit_gossip();
        self.flush_control();
        self.mcache.shift();
        self.seen.expire(now);
    }

    fn is_outbound(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.outbound)
    }

    fn graft(&mut self, topic: &TopicHash, peers: Vec<PeerId>) {
        for peer in peers {
            if let Some(mesh) = self.mesh.get_mut(topic) {
                mesh.insert(peer);
            }
            self.control(peer).graft.push(wire::ControlGraft {
                topic_id: Some(topic.as_str().to_string()),
            });
        }
    }

    fn maintain_mesh(&mut self, now: Instant, topic: &TopicHash) {
        let d = self.config.mesh_n;
        let mesh: BTreeSet<PeerId> = self.mesh.get(topic).cloned().unwrap_or_default();

        // Too few: graft up to D.
        if mesh.len() < self.config.mesh_n_low {
            let candidates = self.topic_candidates(topic, |p| {
                !mesh.contains(p) && !self.in_backoff(topic, p, now, true)
            });
            let chosen = self.pick(candidates, d - mesh.len());
            self.graft(topic, chosen);
        }

        // Too many: keep D — D_score by score (every peer scores 0 until scoring exists, so
        // these are random), then at least D_out outbound peers, then random ones.
        let mesh: Vec<PeerId> = self
            .mesh
            .get(topic)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if mesh.len() > self.config.mesh_n_high {
            let mut shuffled = mesh;
            self.rng.shuffle(&mut shuffled);
            let mut keep: Vec<PeerId> = shuffled.drain(..self.config.retain_scores).collect();
            let outbound_kept = keep.iter().filter(|p| self.is_outbound(p)).count();
            let need_outbound = self.config.mesh_outbound_min.saturating_sub(outbound_kept);
            let (outbound, inbound): (Vec<PeerId>, Vec<PeerId>) =
                shuffled.into_iter().partition(|p| self.is_outbound(p));
            let mut outbound = outbound.into_iter();
            keep.extend(outbound.by_ref().take(need_outbound));
            let mut rest: Vec<PeerId> = outbound.chain(inbound).collect();
            self.rng.shuffle(&mut rest);
            let room = d.saturating_sub(keep.len());
            keep.extend(rest.drain(..room.min(rest.len())));
            let backoff = self.config.prune_backoff;
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
                    !mesh.contains(p)
                        && self.is_outbound(p)
                        && !self.in_backoff(topic, p, now, true)
                });
                let chosen = self.pick(candidates, self.config.mesh_outbound_min - outbound);
                self.graft(topic, chosen);
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
        let topics: Vec<TopicHash> = self.fanout.keys().cloned().collect();
        for topic in topics {
            let mut set = self.fanout.remove(&topic).unwrap_or_default();
            set.retain(|p| self.topic_peers.get(&topic).is_some_and(|s| s.contains(p)));
            if set.len() < self.config.mesh_n {
                let candidates = self.topic_candidates(&topic, |p| !set.contains(p));
                let chosen = self.pick(candidates, self.config.mesh_n - set.len());
                set.extend(chosen);
            }
            self.fanout.insert(topic, set);
        }
    }

    fn emit_gossip(&mut self) {
        let topics: Vec<TopicHash> = self
            .mesh
            .keys()
            .chain(self.fanout.keys())
            .cloned()
            .collect();
        for topic in topics {
            let mut ids: Vec<Vec<u8>> = self
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
            let candidates = self.topic_candidates(&topic, |p| !exclude.contains(p));
            let by_factor = (self.config.gossip_factor * candidates.len() as f64) as usize;
            let n = self.config.gossip_lazy.max(by_factor);
            let chosen = self.pick(candidates, n);
            for peer in chosen {
                let mut ids = if ids.len() > self.config.max_ihave_length {
                    self.rng.shuffle(&mut ids);
                    ids[..self.config.max_ihave_length].to_vec()
                } else {
                    ids.clone()
                };
                ids.sort();
                self.control(peer).ihave.push(wire::ControlIHave {
                    topic_id: Some(topic.as_str().to_string()),
                    message_ids: ids,
                });
            }
        }
    }
}
