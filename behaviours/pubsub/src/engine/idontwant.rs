//! Gossipsub v1.2's IDONTWANT (libp2p/specs `gossipsub-v1.2.md`), both ways.
//!
//! - **Sent**: on the first receipt of a message whose protobuf encoding is over
//!   [`GossipsubConfig::idontwant_message_size_threshold`] (1,000 bytes, rust-libp2p's
//!   default), after its signature verified and before it is forwarded, its id goes in
//!   IDONTWANT to every `/meshsub/1.2.0` peer that could still send it to us: the topic's mesh,
//!   the peers we asked for it with IWANT (promises, scoring on), and — when we take the topic
//!   through a wildcard pattern — the topic's peers and the neighbours whose patterns match
//!   (they forward to pattern subscribers). Never to the peer it came from nor its author
//!   (neither sends it back). The ids gathered during one input leave as control RPCs of their
//!   own, at most [`GossipsubConfig::max_idontwant_length`] ids each (go-libp2p takes no more
//!   from one RPC), queued ahead of the data the same input forwards (control goes first).
//! - **Received**: each id (at most `max_idontwant_length` per RPC, at most
//!   [`GossipsubConfig::max_idontwant_messages`] IDONTWANT RPCs per peer and heartbeat, ids
//!   over `max_message_id_len` bytes ignored; the rest is ignored and counted, no penalty, as
//!   the spec asks) is kept for the peer for [`GossipsubConfig::idontwant_ttl`] heartbeats, at
//!   most [`GossipsubConfig::max_idontwant_ids_per_peer`] per peer (the oldest go first). A
//!   message with such an id is then not forwarded to that peer nor sent in answer to its
//!   IWANT, and a copy still waiting in its data queue is dropped.
//! - **Implicit**: with `validate_messages`, a peer that sends a copy of a message waiting for
//!   the application's verdict has it: it is recorded the same way (as rust-libp2p's
//!   "originating peers"), so the accepted message is not forwarded back to it.
//!
//! Ids are kept as 64-bit hashes (8 bytes each, whatever the id's length). A collision can
//! only withhold a message from the peer whose IDONTWANT caused it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hasher;

use meshwire_core::PeerId;

use super::{GossipsubConfig, GossipsubEngine, MessageId, TopicHash};
use crate::wire::{ControlIDontWant, ControlMessage, Message, Rpc};

/// IDONTWANT counters since the engine started ([`GossipsubEngine::idontwant_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IDontWantStats {
    /// Ids we sent in IDONTWANT (one per peer told).
    pub sent: u64,
    /// Ids peers sent us in IDONTWANT and we kept.
    pub received: u64,
    /// Ids peers sent us beyond the bounds (per RPC, per heartbeat, id length), ignored.
    pub ignored: u64,
    /// Copies not sent to a peer because it said IDONTWANT (or sent us a copy first),
    /// forwarded or asked for by IWANT.
    pub suppressed: u64,
    /// Copies dropped from a peer's data queue when its IDONTWANT arrived.
    pub removed_from_queue: u64,
}

/// A 64-bit hash of a message id (the key of the IDONTWANT tables and of queued data).
pub(crate) fn id_hash(id: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(id);
    h.finish()
}

/// The message ids one peer has (it said IDONTWANT, or sent us a copy), with the heartbeat
/// each arrived at; bounded by `max_idontwant_ids_per_peer`, oldest out first.
#[derive(Default)]
pub(crate) struct DontSend {
    ids: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
}

impl DontSend {
    /// Records `hash` at heartbeat `tick`; `false` if it was there already.
    pub(super) fn insert(&mut self, hash: u64, tick: u64, max: usize) -> bool {
        if self.ids.contains_key(&hash) {
            return false;
        }
        self.ids.insert(hash, tick);
        self.order.push_back((hash, tick));
        while self.order.len() > max {
            if let Some((old, _)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.ids.contains_key(&hash)
    }

    /// Forgets ids recorded `ttl` or more heartbeats before `tick`.
    pub(super) fn expire(&mut self, tick: u64, ttl: u64) {
        while let Some(&(hash, at)) = self.order.front() {
            if at + ttl > tick {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&hash);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

impl GossipsubEngine {
    /// IDONTWANT counters.
    pub fn idontwant_stats(&self) -> IDontWantStats {
        self.idontwant_stats
    }

    /// Ids a peer is recorded as having (it said IDONTWANT, or sent us a copy while the
    /// message waited for validation); `None` for an unknown peer.
    pub fn idontwant_len(&self, peer: &PeerId) -> Option<usize> {
        self.peers.get(peer).map(|s| s.dont_send.len())
    }

    /// Whether `peer` has the message with id hash `hash` (do not send it).
    pub(super) fn unwanted(&self, peer: &PeerId, hash: u64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|s| s.dont_send.contains(hash))
    }

    /// Counts a copy not sent because its peer has it.
    pub(super) fn count_suppressed(&mut self) {
        self.idontwant_stats.suppressed += 1;
        if let Some(m) = &self.metrics {
            m.idontwant_suppressed(1);
        }
    }

    /// First receipt of `message` (`id`) from `from`, authored by `author`: gathers IDONTWANT
    /// for the v1.2 peers that could still send it to us (see the module docs), if the message
    /// is over the size threshold. `promised` are the peers we asked for it with IWANT.
    pub(super) fn queue_idontwant(
        &mut self,
        message: &Message,
        id: &MessageId,
        from: PeerId,
        author: PeerId,
        promised: Vec<PeerId>,
    ) {
        use prost::Message as _;
        if message.encoded_len() <= self.config.idontwant_message_size_threshold {
            return;
        }
        let topic = TopicHash::from(message.topic.clone());
        let mut to: BTreeSet<PeerId> = self.mesh_peers(&topic).copied().collect();
        to.extend(promised);
        if !self.subscriptions.contains(&topic) && self.wants(&topic) {
            // Taken through one of our patterns: every neighbour in the topic, or with a
            // matching pattern, forwards it to us.
            to.extend(self.topic_peers(&topic).copied());
            to.extend(self.pattern_peers(&topic, |_| true));
        }
        for peer in to {
            if peer == from || peer == author {
                continue;
            }
            if !self
                .peers
                .get(&peer)
                .is_some_and(|s| s.kind.supports_idontwant())
            {
                continue;
            }
            self.pending_idontwant
                .entry(peer)
                .or_default()
                .push(id.0.clone());
        }
    }

    /// Queues the IDONTWANT gathered during this input, at most `max_idontwant_length` ids
    /// per RPC (run first by `flush_control`, so they precede this input's other control).
    pub(super) fn flush_idontwant(&mut self) {
        let pending = std::mem::take(&mut self.pending_idontwant);
        let per_rpc = self.config.max_idontwant_length;
        for (peer, ids) in pending {
            let n = ids.len() as u64;
            for chunk in ids.chunks(per_rpc) {
                let rpc = Rpc {
                    control: Some(ControlMessage {
                        idontwant: vec![ControlIDontWant {
                            message_ids: chunk.to_vec(),
                        }],
                        ..ControlMessage::default()
                    }),
                    ..Rpc::default()
                };
                self.push_control_rpc(peer, rpc);
            }
            self.idontwant_stats.sent += n;
            if let Some(m) = &self.metrics {
                m.idontwant_sent(n);
            }
        }
    }

    /// IDONTWANT from `peer`: records its ids within the bounds and drops queued copies.
    pub(super) fn handle_idontwant(&mut self, peer: PeerId, entries: Vec<ControlIDontWant>) {
        let GossipsubConfig {
            max_idontwant_length: per_rpc,
            max_idontwant_messages: per_heartbeat,
            max_idontwant_ids_per_peer: cap,
            max_message_id_len: max_id_len,
            ..
        } = self.config;
        let tick = self.heartbeat_ticks;
        let total: usize = entries.iter().map(|e| e.message_ids.len()).sum();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut kept = Vec::new();
        // Ids over a bound: past `per_rpc`, past the heartbeat's RPCs, or too long.
        let mut ignored = total;
        if state.idontwant_received < per_heartbeat {
            state.idontwant_received += 1;
            ignored = total.saturating_sub(per_rpc);
            for id in entries
                .into_iter()
                .flat_map(|e| e.message_ids)
                .take(per_rpc)
            {
                if id.len() > max_id_len {
                    ignored += 1;
                    continue;
                }
                let hash = id_hash(&id);
                // An id recorded already is neither kept again nor ignored.
                if state.dont_send.insert(hash, tick, cap) {
                    kept.push(hash);
                }
            }
        }
        let removed = state.queue.remove_data(&kept);
        if state.queue.is_empty() {
            self.ready.retain(|p| *p != peer);
        }
        let (kept, ignored, removed) = (kept.len() as u64, ignored as u64, removed as u64);
        let stats = &mut self.idontwant_stats;
        stats.received += kept;
        stats.ignored += ignored;
        stats.removed_from_queue += removed;
        stats.suppressed += removed;
        if let Some(m) = &self.metrics {
            m.idontwant_received(kept, ignored);
            m.idontwant_suppressed(removed);
        }
    }

    /// `peer` sent us a copy of a message that waits for validation: it has it.
    pub(super) fn note_has(&mut self, peer: &PeerId, id: &MessageId) {
        let (tick, cap) = (self.heartbeat_ticks, self.config.max_idontwant_ids_per_peer);
        if let Some(state) = self.peers.get_mut(peer) {
            state.dont_send.insert(id_hash(&id.0), tick, cap);
        }
    }

    /// The heartbeat's part: per-heartbeat counts reset, expired ids forgotten.
    pub(super) fn idontwant_heartbeat(&mut self) {
        let (tick, ttl) = (self.heartbeat_ticks, u64::from(self.config.idontwant_ttl));
        for state in self.peers.values_mut() {
            state.idontwant_received = 0;
            state.dont_send.expire(tick, ttl);
        }
    }
}
