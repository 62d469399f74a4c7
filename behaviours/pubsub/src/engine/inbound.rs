//! RPCs from peers: subscriptions, messages and control messages.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

use super::{
    GossipMessage, GossipsubEngine, GossipsubEvent, InvalidReason, MessageId, PeerKind, TopicHash,
};
use crate::wire::{self, sign, ControlMessage, Message, Rpc, WireError};

impl GossipsubEngine {
    /// A frame from `peer` that failed to decode: counted against the peer.
    pub fn handle_invalid_rpc(&mut self, now: Instant, peer: PeerId, error: WireError) {
        self.start(now);
        self.penalize(peer, InvalidReason::Decode(error));
    }

    /// A decoded RPC from `peer`. A peer not yet known is added as inbound, speaking v1.1.
    pub fn handle_rpc(&mut self, now: Instant, peer: PeerId, rpc: Rpc) {
        self.handle_rpc_marked(now, peer, rpc, false);
    }

    /// [`Self::handle_rpc`] for an RPC that carried the QoS 1 mark
    /// ([`crate::qos::wire::is_marked`]) when `marked`: its messages authored by `peer` are
    /// acknowledged ([`crate::qos`]).
    pub fn handle_rpc_marked(&mut self, now: Instant, peer: PeerId, rpc: Rpc, marked: bool) {
        self.start(now);
        if !self.peers.contains_key(&peer) {
            self.handle_peer_connected(now, peer, PeerKind::Gossipsub1_1, false);
        }
        if self.score.is_some()
            && self.score_of(&peer) < self.config.score_thresholds.graylist_threshold
        {
            // Graylisted: nothing it says is taken.
            return;
        }
        let limit = self.config.max_messages_per_rpc;
        if rpc.subscriptions.len() > limit || rpc.publish.len() > limit {
            self.penalize(peer, InvalidReason::OverLimit);
        }
        for sub in rpc.subscriptions.into_iter().take(limit) {
            self.handle_subscription(now, peer, sub);
        }
        for message in rpc.publish.into_iter().take(limit) {
            self.handle_message(now, peer, message, marked);
        }
        if let Some(control) = rpc.control {
            self.handle_control(now, peer, control);
        }
        self.flush_control();
        self.sync_choke_metrics();
        if marked {
            self.sync_qos();
        }
    }

    fn handle_subscription(&mut self, now: Instant, peer: PeerId, sub: wire::SubOpts) {
        let (Some(subscribe), Some(topic)) = (sub.subscribe, sub.topic_id) else {
            return;
        };
        let topic = TopicHash::from(topic);
        let max_topics = self.config.max_topics_per_peer;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if subscribe {
            if state.topics.contains(&topic) {
                return;
            }
            if state.topics.len() >= max_topics {
                self.penalize(peer, InvalidReason::OverLimit);
                return;
            }
            state.topics.insert(topic.clone());
            self.add_peer_pattern(peer, &topic);
            self.topic_peers
                .entry(topic.clone())
                .or_default()
                .insert(peer);
            self.graft_on_subscription(now, peer, &topic);
            self.events
                .push_back(GossipsubEvent::Subscribed { peer, topic });
        } else {
            if !state.topics.remove(&topic) {
                return;
            }
            state.patterns.retain(|(t, _, _)| *t != topic);
            if let Some(set) = self.topic_peers.get_mut(&topic) {
                set.remove(&peer);
                if set.is_empty() {
                    self.topic_peers.remove(&topic);
                }
            }
            if let Some(mesh) = self.mesh.get_mut(&topic) {
                mesh.remove(&peer);
            }
            if let Some(fanout) = self.fanout.get_mut(&topic) {
                fanout.remove(&peer);
            }
            self.events
                .push_back(GossipsubEvent::Unsubscribed { peer, topic });
        }
    }

    /// A peer subscribed to a topic whose mesh is below D_lo: grafted at once (unless in
    /// backoff, with slack, or negative), as rust-libp2p does, so meshes fill from below and
    /// settle near D instead of every node grafting D at its first heartbeat and accepting
    /// the others' GRAFTs up to D_hi (each mesh peer beyond D costs about one duplicate per
    /// message).
    fn graft_on_subscription(&mut self, now: Instant, peer: PeerId, topic: &TopicHash) {
        let room = self
            .mesh
            .get(topic)
            .is_some_and(|m| m.len() < self.config.mesh_n_low && !m.contains(&peer));
        if !room || self.in_backoff(topic, &peer, now, true) || self.score_of(&peer) < 0.0 {
            return;
        }
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

    /// The author and sequence number `message` claims (not verified) and the message id
    /// they give, when it names both; `None` otherwise (verification then fails anyway).
    fn claimed_origin(&self, message: &Message) -> Option<(sign::Verified, MessageId)> {
        let source = PeerId::from_bytes(message.from.as_deref()?).ok()?;
        let seqno = u64::from_be_bytes(message.seqno.as_deref()?.try_into().ok()?);
        let id = self.message_id(message, Some(source), Some(seqno));
        Some((sign::Verified { source, seqno }, id))
    }

    /// A message from `peer`; with `ack` (marked, or retransmitted on the QoS protocol) it is
    /// acknowledged to `peer` when `peer` is its author, once taken or if already seen.
    pub(super) fn handle_message(
        &mut self,
        now: Instant,
        peer: PeerId,
        message: Message,
        ack: bool,
    ) {
        // Messages on topics we are not in (nor match with a pattern) are neither delivered
        // nor forwarded (as rust-libp2p), and cost the sender nothing.
        let topic = TopicHash::from(message.topic.clone());
        if !self.wants(&topic) {
            return;
        }
        // A byte-for-byte copy of a message in the message cache had its signature verified
        // when it was cached, so the copy's need not be (a node receives about mesh size − 1
        // copies of each message, and a signature check is most of what a copy costs);
        // anything that differs — another signature, key, payload or topic under the same
        // id — is verified as usual. The id is computed once, from the claimed origin, which
        // is what verification establishes when it succeeds.
        let claimed = self.claimed_origin(&message);
        let known = claimed
            .as_ref()
            .filter(|(_, id)| self.mcache.get(id) == Some(&message))
            .map(|(origin, _)| Ok(*origin));
        let verified = match known.unwrap_or_else(|| sign::verify(&message)) {
            Ok(v) => v,
            Err(e) => {
                if let Some(score) = &mut self.score {
                    score.reject_invalid_message(&peer, &topic);
                }
                if let Some(m) = &self.metrics {
                    m.invalid(&topic);
                }
                self.penalize(peer, InvalidReason::Message(e));
                return;
            }
        };
        if verified.source == self.local && !self.config.allow_self_origin {
            // Our own message sent back to us: as rust-libp2p, a P4 penalty and nothing else.
            if let Some(score) = &mut self.score {
                score.reject_invalid_message(&peer, &topic);
            }
            return;
        }
        let id = match claimed {
            Some((origin, id)) if origin == verified => id,
            _ => self.message_id(&message, Some(verified.source), Some(verified.seqno)),
        };
        let ack = ack && verified.source == peer;
        let first = self
            .seen
            .insert(id.clone(), now + self.config.duplicate_cache_time);
        let hash = super::id_hash(&id.0);
        self.choke_on_message(now, &peer, &topic, hash, verified.source == peer, first);
        if !first {
            if ack {
                // Taken before (by any path): acknowledged again, delivered once.
                self.qos.queue_ack(peer, &id);
            }
            if self.config.validate_messages && self.mcache.is_pending(&id) {
                // It has the message: not forwarded to it once accepted.
                self.note_has(&peer, &id);
            }
            if let Some(score) = &mut self.score {
                score.duplicated_message(now, &peer, &id, &topic);
            }
            if let Some(m) = &self.metrics {
                m.duplicate(&topic);
            }
            return;
        }
        let promised = self.promises.delivered(&id);
        // IDONTWANT (v1.2) to the peers that could still send it, before forwarding.
        self.queue_idontwant(&message, &id, peer, verified.source, promised);
        let validated = !self.config.validate_messages;
        if let Some(score) = &mut self.score {
            score.validate_message(now, &id);
            if validated {
                score.deliver_message(now, &peer, &id, &topic);
            }
        }
        let cached = self.mcache.put(&id, message.clone(), validated);
        if !validated && !cached {
            // Nowhere to hold it while the application decides: dropped.
            return;
        }
        if validated {
            self.forward(&message, &id, Some(peer));
        }
        if let Some(m) = &self.metrics {
            m.delivered(&topic);
        }
        if ack {
            self.qos.queue_ack(peer, &id);
        }
        self.events.push_back(GossipsubEvent::Message {
            propagation_source: peer,
            message_id: id,
            message: GossipMessage {
                source: Some(verified.source),
                data: message.data.unwrap_or_default(),
                sequence_number: Some(verified.seqno),
                topic,
            },
        });
    }

    fn handle_control(&mut self, now: Instant, peer: PeerId, mut control: ControlMessage) {
        // At most `max_messages_per_rpc` entries of each kind are taken.
        let limit = self.config.max_messages_per_rpc;
        let counts = [
            control.ihave.len(),
            control.iwant.len(),
            control.graft.len(),
            control.prune.len(),
            control.idontwant.len(),
            control.choke.len(),
            control.unchoke.len(),
        ];
        if counts.iter().any(|n| *n > limit) {
            self.penalize(peer, InvalidReason::OverLimit);
        }
        let mut choke_part = ControlMessage {
            choke: std::mem::take(&mut control.choke),
            unchoke: std::mem::take(&mut control.unchoke),
            choke_supported: control.choke_supported.take(),
            ..ControlMessage::default()
        };
        // GRAFT and PRUNE first reset choke state: CHOKE in the same RPC applies after them.
        for graft in &control.graft {
            if let Some(topic) = &graft.topic_id {
                let topic = TopicHash::from(topic.clone());
                if !self.mesh_peers(&topic).any(|p| *p == peer) {
                    self.choke_reset(&topic, &peer);
                }
            }
        }
        if !control.idontwant.is_empty() {
            // Bounded per RPC and heartbeat in `handle_idontwant`, from any peer (v1.2).
            let entries = control.idontwant.into_iter().take(limit).collect();
            self.handle_idontwant(peer, entries);
        }
        // IHAVE and IWANT only from peers above the gossip threshold.
        let gossip_ok = self.score_of(&peer) >= self.config.score_thresholds.gossip_threshold;
        if gossip_ok {
            for ihave in control.ihave.into_iter().take(limit) {
                // From a mesh peer we choked: its immediate IHAVE (module `choke`).
                if !self.choke_ihave(now, peer, &ihave) {
                    self.handle_ihave(now, peer, ihave);
                }
            }
            for iwant in control.iwant.into_iter().take(limit) {
                self.handle_iwant(peer, iwant);
            }
        }
        for graft in control.graft.into_iter().take(limit) {
            if let Some(topic) = graft.topic_id {
                self.handle_graft(now, peer, TopicHash::from(topic));
            }
        }
        for prune in control.prune.into_iter().take(limit) {
            self.handle_prune(now, peer, prune);
        }
        // CHOKE/UNCHOKE last: they need the peer in the mesh, as the GRAFTs above left it.
        self.handle_choke_control(peer, &mut choke_part);
    }

    fn handle_ihave(&mut self, now: Instant, peer: PeerId, ihave: wire::ControlIHave) {
        let max_ihave_messages = self.config.max_ihave_messages;
        let max_ihave_length = self.config.max_ihave_length;
        let max_id_len = self.config.max_message_id_len;
        let Some(topic) = ihave.topic_id.map(TopicHash::from) else {
            return;
        };
        // Topics we are in, and (wildcards) topics one of our patterns matches.
        if !self.mesh.contains_key(&topic) && !self.wants(&topic) {
            return;
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.ihave_received >= max_ihave_messages || state.iasked >= max_ihave_length {
            return;
        }
        state.ihave_received += 1;
        let room = max_ihave_length - state.iasked;
        let mut distinct = HashSet::new();
        let mut wanted: Vec<Vec<u8>> = Vec::new();
        for id in ihave.message_ids {
            if id.len() > max_id_len {
                continue;
            }
            let mid = MessageId(id);
            if !self.seen.contains(&mid) && distinct.insert(mid.0.clone()) {
                wanted.push(mid.0);
            }
        }
        self.rng.shuffle(&mut wanted);
        wanted.truncate(room);
        if wanted.is_empty() {
            return;
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.iasked += wanted.len();
        }
        if self.score.is_some() {
            let expires = now + self.config.iwant_followup_time;
            self.promises.add(peer, &wanted, expires);
        }
        self.control(peer).iwant.push(wire::ControlIWant {
            message_ids: wanted,
        });
    }

    fn handle_iwant(&mut self, peer: PeerId, iwant: wire::ControlIWant) {
        let limit = self.config.gossip_retransmission;
        for id in iwant.message_ids {
            let hash = super::id_hash(&id);
            if self.unwanted(&peer, hash) {
                // It said IDONTWANT since: it has the message.
                self.count_suppressed();
                continue;
            }
            let message = self
                .mcache
                .get_for_iwant(&MessageId(id), peer, limit)
                .cloned();
            if let Some(message) = message {
                self.push_data(peer, hash, message);
            }
        }
    }

    fn handle_graft(&mut self, now: Instant, peer: PeerId, topic: TopicHash) {
        if !self.subscriptions.contains(&topic) {
            // Not in the topic: PRUNE without peer exchange, and no state kept (a peer
            // grafting made-up topics must not grow our backoff table).
            let v11 = self
                .peers
                .get(&peer)
                .is_some_and(|s| s.kind.supports_backoff());
            let backoff = self.config.prune_backoff.as_secs();
            self.control(peer).prune.push(wire::ControlPrune {
                topic_id: Some(topic.into_string()),
                peers: Vec::new(),
                backoff: v11.then_some(backoff),
            });
            return;
        }
        if self.mesh_peers(&topic).any(|p| *p == peer) {
            return;
        }
        if self.in_backoff(&topic, &peer, now, false) {
            // P7: one penalty, two if the GRAFT comes within graft_flood_threshold of the
            // PRUNE that started the backoff (rust-libp2p's rule).
            let flood = self
                .backoffs
                .get(&(topic.clone(), peer))
                .is_some_and(|until| {
                    now + self.config.prune_backoff < *until + self.config.graft_flood_threshold
                });
            if let Some(score) = &mut self.score {
                score.add_penalty(&peer, if flood { 2 } else { 1 });
            }
            self.penalize(peer, InvalidReason::GraftDuringBackoff);
            let backoff = self.config.prune_backoff;
            self.prune(now, &topic, peer, backoff, false);
            return;
        }
        if self.score_of(&peer) < 0.0 {
            // A peer with a negative score is not grafted (no penalty, no peer exchange).
            let backoff = self.config.prune_backoff;
            self.prune(now, &topic, peer, backoff, false);
            return;
        }
        let outbound = self.peers.get(&peer).is_some_and(|s| s.outbound);
        let full = self
            .mesh
            .get(&topic)
            .is_some_and(|m| m.len() >= self.config.mesh_n_high);
        if full && !outbound {
            let backoff = self.config.prune_backoff;
            self.prune(now, &topic, peer, backoff, true);
            return;
        }
        if let Some(score) = &mut self.score {
            score.graft(now, &peer, &topic);
        }
        self.mesh.entry(topic).or_default().insert(peer);
    }

    fn handle_prune(&mut self, now: Instant, peer: PeerId, prune: wire::ControlPrune) {
        let Some(topic) = prune.topic_id.map(TopicHash::from) else {
            return;
        };
        // Backoffs matter only for topics we are in (and so cannot be grown with made-up
        // topics).
        if !self.subscriptions.contains(&topic) {
            return;
        }
        self.choke_reset(&topic, &peer);
        if self.mesh.get_mut(&topic).is_some_and(|m| m.remove(&peer)) {
            if let Some(score) = &mut self.score {
                score.prune(&peer, &topic);
            }
        }
        let backoff = prune
            .backoff
            .map(Duration::from_secs)
            .unwrap_or(self.config.prune_backoff)
            // A peer cannot make us wait more than a day (and overflow an `Instant`).
            .min(Duration::from_secs(86_400));
        self.set_backoff(&topic, peer, now + backoff);
        let px_ok = self.score.is_none()
            || self.score_of(&peer) >= self.config.score_thresholds.accept_px_threshold;
        if px_ok && self.config.prune_peers > 0 && !prune.peers.is_empty() {
            let mut offered: Vec<PeerId> = prune
                .peers
                .iter()
                .take(self.config.prune_peers)
                .filter_map(|info| info.peer_id.as_deref())
                .filter_map(|b| PeerId::from_bytes(b).ok())
                .filter(|p| *p != self.local && !self.peers.contains_key(p))
                .collect();
            offered.dedup();
            if !offered.is_empty() {
                self.events.push_back(GossipsubEvent::PeerExchange {
                    topic,
                    peers: offered,
                });
            }
        }
    }
}
