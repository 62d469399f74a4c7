//! Wildcard subscriptions on the wire.
//!
//! A wildcard subscription is a plain gossipsub subscription to the topic
//! `<realm>/<pattern>` (`org.example.home/sensors.#`, [`crate::topic::wire_pattern`]),
//! announced in SUBSCRIBE like any other: plain gossipsub peers keep it as a topic they do
//! not share and are otherwise unaffected. A meshwire engine that learns a peer's pattern
//! (at most [`GossipsubConfig::max_patterns_per_peer`](super::GossipsubConfig::max_patterns_per_peer) per peer) also sends that peer every
//! message it publishes or forwards on a matching `<realm>/<topic>` of the same realm, next
//! to the topic's own recipients; and it takes (delivers, forwards) messages on any topic one
//! of its own patterns matches. The seen cache delivers each message once, however many
//! patterns match or neighbours send it.
//!
//! So a pattern subscriber gets every message on a matching topic that reaches any of its
//! meshwire neighbours (the publisher, the topic's mesh members, other pattern subscribers),
//! with no per-topic configuration and for topics first used after it subscribed. The cost:
//! matching each outgoing message against the neighbours' patterns (peers × patterns), and up
//! to one copy per neighbour that sees the message (no mesh bounds the copies it is sent).
//!
//! **Gossip recovery.** A copy lost on that eager path is recovered as on a topic mesh: each
//! heartbeat, for every topic of the last `history_gossip` cache windows that a neighbour's
//! pattern matches, the engine sends IHAVE with the topic's message ids (at most
//! `max_ihave_length`) to max(D_lazy, `gossip_factor` × n) of the n neighbours whose
//! patterns match (neighbours gossiped the topic already this heartbeat are left out, and
//! the gossip threshold applies). A pattern subscriber answers IHAVE for any topic one of its
//! patterns matches with IWANT, bounded per peer and heartbeat like every IHAVE
//! (`max_ihave_messages`, `max_ihave_length`). Cost: one IHAVE per matching topic, pattern
//! neighbour (up to the bound) and heartbeat while the topic has recent messages.

use meshwire_core::PeerId;

use super::{GossipsubEngine, TopicHash};
use crate::topic::{parse_wire_topic, WireTopic};

impl GossipsubEngine {
    /// Records `topic` as one of our patterns if it is one.
    pub(super) fn add_local_pattern(&mut self, topic: &TopicHash) {
        if let Some(WireTopic::Pattern(realm, pattern)) = parse_wire_topic(topic.as_str()) {
            self.local_patterns.push((topic.clone(), realm, pattern));
        }
    }

    /// Records `topic` as one of `peer`'s patterns if it is one and the peer has room.
    pub(super) fn add_peer_pattern(&mut self, peer: PeerId, topic: &TopicHash) {
        let max = self.config.max_patterns_per_peer;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.patterns.len() >= max {
            return;
        }
        if let Some(WireTopic::Pattern(realm, pattern)) = parse_wire_topic(topic.as_str()) {
            state.patterns.push((topic.clone(), realm, pattern));
        }
    }

    /// Whether we take messages on `topic`: subscribed to it, or one of our patterns matches.
    pub(super) fn wants(&self, topic: &TopicHash) -> bool {
        if self.subscriptions.contains(topic) {
            return true;
        }
        if self.local_patterns.is_empty() {
            return false;
        }
        match parse_wire_topic(topic.as_str()) {
            Some(WireTopic::Topic(realm, name)) => self
                .local_patterns
                .iter()
                .any(|(_, r, p)| *r == realm && p.matches(&name)),
            _ => false,
        }
    }

    /// The peers (kept by `keep`) with a pattern matching `topic`, in peer id order.
    pub(super) fn pattern_peers(
        &self,
        topic: &TopicHash,
        keep: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let Some(WireTopic::Topic(realm, name)) = parse_wire_topic(topic.as_str()) else {
            return Vec::new();
        };
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                state
                    .patterns
                    .iter()
                    .any(|(_, r, p)| *r == realm && p.matches(&name))
                    && keep(peer)
            })
            .map(|(peer, _)| *peer)
            .collect();
        peers.sort();
        peers
    }

    /// IHAVE to pattern subscribers for the recent messages of topics their patterns match
    /// (see the module docs); run by the heartbeat after the topic gossip, before the control
    /// messages are flushed.
    pub(super) fn emit_pattern_gossip(&mut self) {
        if self.peers.values().all(|s| s.patterns.is_empty()) {
            return;
        }
        let gossip_threshold = self.config.score_thresholds.gossip_threshold;
        for topic in self.mcache.gossip_topics() {
            let candidates = self.pattern_peers(&topic, |p| {
                self.score_of(p) >= gossip_threshold && !self.ihave_pending(p, &topic)
            });
            if candidates.is_empty() {
                continue;
            }
            let ids: Vec<Vec<u8>> = self
                .mcache
                .gossip_ids(&topic)
                .into_iter()
                .map(|id| id.0)
                .collect();
            if ids.is_empty() {
                continue;
            }
            self.send_ihave(&topic, candidates, ids);
        }
    }

    /// Whether an IHAVE for `topic` is already gathered for `peer` this heartbeat.
    fn ihave_pending(&self, peer: &PeerId, topic: &TopicHash) -> bool {
        self.pending_control.get(peer).is_some_and(|c| {
            c.ihave
                .iter()
                .any(|i| i.topic_id.as_deref() == Some(topic.as_str()))
        })
    }
}
