//! QoS 1 (at least once) for pubsub: acknowledgements, bounded retransmission and duplicate
//! suppression, as a sans-IO state machine ([`QosTracker`]) the engine drives.
//!
//! QoS 0 ([`Qos::AtMostOnce`], [`GossipsubEngine::publish`](crate::GossipsubEngine::publish))
//! is gossipsub as it is. A message published with [`Qos::AtLeastOnce`]
//! ([`GossipsubEngine::publish_with`](crate::GossipsubEngine::publish_with),
//! `Behaviour::publish_with`) goes out through gossipsub as usual, and additionally:
//!
//! 1. The publisher takes as **expected** every connected peer it knows subscribes to the
//!    topic (exact SUBSCRIBE, or a wildcard pattern matching it) *and* that announced
//!    `/meshwire/pubsub/qos/1.0.0` in identify's protocols (which the swarm shares; a QoS
//!    frame it sends does not make it expected), except peers that are demoted or already
//!    expected on [`QosConfig::max_outstanding_per_peer`] messages, and at most
//!    [`QosConfig::max_subscribers`] (the best scored): the others are not expected and get
//!    the message as QoS 0 ([`QosStats::not_expected`]). Plain gossipsub peers are never
//!    expected and are not tracked. Each expected peer is sent its gossipsub copy directly
//!    (even when not in the mesh), with the QoS mark ([`wire::mark`]).
//! 2. A subscriber that takes a marked copy straight from its author, or a retransmission,
//!    acknowledges its id on the QoS protocol (acks batched, at most
//!    [`QosConfig::max_ack_batch`] per frame), whether it delivered it just now or before:
//!    the engine's seen cache delivers each message id once, however it arrived (mesh,
//!    gossip, marked copy, retransmission).
//! 3. A message not acknowledged by every expected peer within [`QosConfig::ack_timeout`] is
//!    retransmitted on the QoS protocol to the peers still silent, up to
//!    [`QosConfig::max_retransmissions`] times, the wait doubling each time (2 s, 4 s, 8 s,
//!    16 s by default: the last verdict 30 s after publishing). Then the engine reports
//!    [`GossipsubEvent::QosDelivered`](crate::GossipsubEvent::QosDelivered) (every expected
//!    peer acknowledged) or
//!    [`GossipsubEvent::QosDeliveryFailed`](crate::GossipsubEvent::QosDeliveryFailed) (the
//!    peers that did not), and forgets the message.
//! 4. A peer that fails [`QosConfig::demote_after`] verdicts in a row (3; an ack resets the
//!    count) is **demoted** for [`QosConfig::demote_for`] (10 min): it is no longer
//!    expected, and the messages still waiting for it report it failed at once.
//!
//! The whole retransmission window must fit in the seen cache's `duplicate_cache_time`, so a
//! late retransmission is still recognised as a duplicate (checked by
//! [`GossipsubConfig::validate`](crate::GossipsubConfig::validate)).
//!
//! **Cost**, per QoS 1 publish and expected subscriber, on top of QoS 0: the gossipsub copy
//! is sent to it even if flood publishing is off and it is outside the mesh; 5 bytes of mark
//! on that copy; one acknowledgement of `id + 2` bytes (≈ 60 bytes with the default message
//! id), batched with others to the same publisher in one frame on one QoS stream (its
//! opening and protocol negotiation, ≈ 40 bytes, shared by the batch); and per lost copy or
//! ack a retransmission of the whole message on its own stream, at most
//! `max_retransmissions` times. No state is kept for plain gossipsub peers.
//!
//! **Bounds** ([`QosConfig`], defaults in brackets): QoS 1 messages awaiting acks
//! (`max_outstanding`, 1,024: further `publish_with` calls fail with
//! [`PublishError::QosBusy`](crate::PublishError::QosBusy)); expected peers per message
//! (`max_subscribers`, 1,024: the best-scored are expected, the others get QoS 0); messages
//! one peer is expected on (`max_outstanding_per_peer`, 64); demotion after `demote_after`
//! (3) consecutive failed verdicts, for `demote_for` (10 min);
//! acks waiting to be sent (`max_pending_acks`, 8,192: beyond, dropped, and the publisher's
//! retransmission is acknowledged instead); frames waiting for the driver
//! (`max_queued_frames`, 1,024: beyond, a retransmission is skipped for that round).
//!
//! # Example: two engines, one QoS 1 message, its acknowledgement
//!
//! ```
//! use std::time::Instant;
//! use meshwire_core::Keypair;
//! use meshwire_pubsub::qos::wire::{self as qos_wire, FrameLimits};
//! use meshwire_pubsub::{wire, GossipsubConfig, GossipsubEngine, GossipsubEvent, PeerKind, Qos};
//!
//! let now = Instant::now();
//! let mut a = GossipsubEngine::new(Keypair::generate(), GossipsubConfig::default(), 1)?;
//! let mut b = GossipsubEngine::new(Keypair::generate(), GossipsubConfig::default(), 1)?;
//! let (pa, pb) = (a.local_peer_id(), b.local_peer_id());
//! a.handle_peer_connected(now, pb, PeerKind::Gossipsub1_1, true);
//! b.handle_peer_connected(now, pa, PeerKind::Gossipsub1_1, false);
//! // Both announced the QoS protocol (the behaviour learns it from identify).
//! a.set_peer_qos(&pb, true);
//! b.set_peer_qos(&pa, true);
//! b.subscribe(now, "chat".into());
//! // Carries what `from` sends to `to`, the mark included, as the behaviour does.
//! fn carry(from: &mut GossipsubEngine, to: &mut GossipsubEngine, now: Instant) {
//!     let sender = from.local_peer_id();
//!     while let Some((_, rpc)) = from.poll_transmit() {
//!         let mut bytes = wire::encode_rpc(&rpc);
//!         if from.qos_marked(&to.local_peer_id(), &rpc) {
//!             qos_wire::mark(&mut bytes);
//!         }
//!         let marked = qos_wire::is_marked(&bytes);
//!         let rpc = wire::decode_rpc(&bytes, 65_536).unwrap();
//!         to.handle_rpc_marked(now, sender, rpc, marked);
//!     }
//!     while let Some((_, frame)) = from.poll_qos_transmit() {
//!         let limits = FrameLimits { max_frame: 65_536, max_acks: 256, max_id_len: 256 };
//!         let frame = qos_wire::decode_frame(&qos_wire::encode(&frame), &limits).unwrap();
//!         to.handle_qos_frame(now, sender, frame);
//!     }
//! }
//! let exchange = |a: &mut GossipsubEngine, b: &mut GossipsubEngine| {
//!     for _ in 0..3 {
//!         carry(a, b, now);
//!         carry(b, a, now);
//!     }
//! };
//! exchange(&mut a, &mut b);
//! let id = a.publish_with(now, "chat".into(), b"hello".to_vec(), Qos::AtLeastOnce)?;
//! exchange(&mut a, &mut b);
//! let delivered = std::iter::from_fn(|| a.poll_event()).any(|e| {
//!     e == GossipsubEvent::QosDelivered { message_id: id.clone(), acked: vec![pb] }
//! });
//! assert!(delivered);
//! assert_eq!(a.qos_stats().acks_received, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
#[cfg(test)]
mod tests;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use meshwire_core::PeerId;

pub use config::QosConfig;
pub use wire::{QosFrame, QosWireError};

use crate::engine::MessageId;
use crate::wire::Message;

/// The delivery guarantee of a publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: gossipsub as it is, no acknowledgement.
    #[default]
    AtMostOnce,
    /// QoS 1: acknowledged by every known QoS-capable subscriber, retransmitted until it is
    /// or the retries run out.
    AtLeastOnce,
}

/// Why the tracker refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QosError {
    /// `max_outstanding` QoS 1 messages already await acknowledgements.
    #[error("{0} QoS 1 messages already await acknowledgements")]
    Busy(usize),
    /// More expected subscribers than `max_subscribers`.
    #[error("{count} QoS subscribers, at most {max}")]
    TooManySubscribers {
        /// Expected subscribers.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The verdict on one QoS 1 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QosOutcome {
    /// Every expected peer acknowledged it (none expected: at once).
    Delivered {
        /// The message.
        message_id: MessageId,
        /// The peers that acknowledged it.
        acked: Vec<PeerId>,
    },
    /// Some expected peers never acknowledged it, retransmissions included.
    Failed {
        /// The message.
        message_id: MessageId,
        /// The peers that acknowledged it.
        acked: Vec<PeerId>,
        /// The peers that did not.
        failed: Vec<PeerId>,
    },
}

/// Counters since the tracker was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosStats {
    /// Acknowledgements received that settled an expected peer.
    pub acks_received: u64,
    /// Acknowledgements queued for sending.
    pub acks_sent: u64,
    /// Acknowledgements dropped at `max_pending_acks`.
    pub acks_dropped: u64,
    /// Retransmissions queued.
    pub retransmissions: u64,
    /// Retransmissions skipped at `max_queued_frames`.
    pub retransmissions_dropped: u64,
    /// Messages every expected peer acknowledged.
    pub delivered: u64,
    /// Subscribers not expected by a QoS 1 publish (demoted, at `max_outstanding_per_peer`,
    /// or beyond `max_subscribers`): they got the message as QoS 0.
    pub not_expected: u64,
    /// Peers demoted after `demote_after` consecutive failed verdicts.
    pub demotions: u64,
    /// (message, peer) pairs never acknowledged.
    pub failed: u64,
}

/// Table sizes, for bounds checks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosSizes {
    /// QoS 1 messages awaiting acknowledgements.
    pub outstanding: usize,
    /// Acknowledgements waiting to be sent.
    pub pending_acks: usize,
    /// Frames (retransmissions) waiting for the driver.
    pub queued_frames: usize,
    /// Verdicts not yet polled.
    pub events: usize,
}

struct Outstanding {
    message: Message,
    waiting: BTreeSet<PeerId>,
    acked: Vec<PeerId>,
    /// Expected peers demoted before acknowledging: failed, no longer waited for.
    given_up: Vec<PeerId>,
    /// Retransmission rounds done.
    round: u32,
    deadline: Instant,
}

/// The QoS 1 state machine: see the [module docs](self). Inputs: [`track`](Self::track) (a
/// message published with QoS 1), [`handle_acks`](Self::handle_acks),
/// [`queue_ack`](Self::queue_ack) (a message taken that must be acknowledged),
/// [`handle_peer_disconnected`](Self::handle_peer_disconnected) and
/// [`handle_timeout`](Self::handle_timeout); outputs: [`poll_transmit`](Self::poll_transmit)
/// (frames per peer), [`poll_event`](Self::poll_event) (verdicts) and
/// [`poll_timeout`](Self::poll_timeout).
pub struct QosTracker {
    config: QosConfig,
    outstanding: HashMap<MessageId, Outstanding>,
    /// Deadlines, in order: (when, id).
    deadlines: BTreeSet<(Instant, MessageId)>,
    pending_acks: BTreeMap<PeerId, Vec<Vec<u8>>>,
    pending_ack_count: usize,
    frames: VecDeque<(PeerId, QosFrame)>,
    events: VecDeque<QosOutcome>,
    stats: QosStats,
    /// Messages each peer is expected to acknowledge now.
    per_peer: HashMap<PeerId, usize>,
    /// Consecutive failed verdicts per peer (reset by an acknowledgement).
    strikes: HashMap<PeerId, u32>,
    /// Demoted peers, until when.
    demoted: HashMap<PeerId, Instant>,
}

impl QosTracker {
    /// A tracker with `config` (checked by [`GossipsubConfig::validate`](crate::GossipsubConfig::validate) beforehand).
    pub fn new(config: QosConfig) -> Self {
        QosTracker {
            config,
            outstanding: HashMap::new(),
            deadlines: BTreeSet::new(),
            pending_acks: BTreeMap::new(),
            pending_ack_count: 0,
            frames: VecDeque::new(),
            events: VecDeque::new(),
            stats: QosStats::default(),
            per_peer: HashMap::new(),
            strikes: HashMap::new(),
            demoted: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QosConfig {
        &self.config
    }

    /// Whether a message expecting `count` peers would be taken now.
    ///
    /// # Errors
    ///
    /// [`QosError`].
    pub fn check_room(&self, count: usize) -> Result<(), QosError> {
        if self.outstanding.len() >= self.config.max_outstanding {
            return Err(QosError::Busy(self.outstanding.len()));
        }
        if count > self.config.max_subscribers {
            return Err(QosError::TooManySubscribers {
                count,
                max: self.config.max_subscribers,
            });
        }
        Ok(())
    }

    /// The peers of `candidates` (best first) a QoS 1 message published at `now` should
    /// expect: not demoted, below `max_outstanding_per_peer`, at most `max_subscribers`. The
    /// others are counted in [`QosStats::not_expected`].
    pub fn select(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = PeerId>,
    ) -> BTreeSet<PeerId> {
        self.demoted.retain(|_, until| *until > now);
        let mut chosen = BTreeSet::new();
        for peer in candidates {
            let busy = self.per_peer.get(&peer).copied().unwrap_or(0)
                >= self.config.max_outstanding_per_peer;
            if busy
                || self.demoted.contains_key(&peer)
                || chosen.len() >= self.config.max_subscribers
            {
                self.stats.not_expected += 1;
            } else {
                chosen.insert(peer);
            }
        }
        chosen
    }

    /// Whether `peer` is demoted at `now` (not expected until its back-off ends).
    pub fn is_demoted(&self, peer: &PeerId, now: Instant) -> bool {
        self.demoted.get(peer).is_some_and(|until| *until > now)
    }

    /// A message published with QoS 1 at `now`, expecting acknowledgements from `peers`. With
    /// no peer expected its verdict ([`QosOutcome::Delivered`], nobody) is immediate.
    ///
    /// # Errors
    ///
    /// [`QosError`] (nothing is recorded), or if the id is already tracked
    /// ([`QosError::Busy`]).
    pub fn track(
        &mut self,
        now: Instant,
        message_id: MessageId,
        message: Message,
        peers: BTreeSet<PeerId>,
    ) -> Result<(), QosError> {
        self.check_room(peers.len())?;
        if self.outstanding.contains_key(&message_id) {
            return Err(QosError::Busy(self.outstanding.len()));
        }
        if peers.is_empty() {
            self.stats.delivered += 1;
            self.events.push_back(QosOutcome::Delivered {
                message_id,
                acked: Vec::new(),
            });
            return Ok(());
        }
        for peer in &peers {
            *self.per_peer.entry(*peer).or_default() += 1;
        }
        let deadline = now + self.config.ack_timeout;
        self.deadlines.insert((deadline, message_id.clone()));
        self.outstanding.insert(
            message_id,
            Outstanding {
                message,
                waiting: peers,
                acked: Vec::new(),
                given_up: Vec::new(),
                round: 0,
                deadline,
            },
        );
        Ok(())
    }

    /// Whether `peer` is expected to acknowledge `message_id` (its copies get the mark).
    pub fn expects(&self, message_id: &MessageId, peer: &PeerId) -> bool {
        self.outstanding
            .get(message_id)
            .is_some_and(|o| o.waiting.contains(peer))
    }

    /// Acknowledgements from `peer`; ids not awaited from it are ignored (late or repeated
    /// acks). Returns how many settled an expected peer; any resets the peer's failures.
    pub fn handle_acks(&mut self, peer: PeerId, ids: Vec<Vec<u8>>) -> usize {
        let mut taken = 0;
        for id in ids {
            let id = MessageId(id);
            if !self
                .outstanding
                .get_mut(&id)
                .is_some_and(|e| e.waiting.remove(&peer))
            {
                continue;
            }
            self.release(&peer);
            self.strikes.remove(&peer);
            taken += 1;
            self.settle_ack(id, peer);
        }
        self.stats.acks_received += taken as u64;
        taken
    }

    /// `peer`'s acknowledgement of `id` was taken: the verdict if nobody else is awaited.
    fn settle_ack(&mut self, id: MessageId, peer: PeerId) {
        let Some(entry) = self.outstanding.get_mut(&id) else {
            return;
        };
        entry.acked.push(peer);
        self.finish_if_settled(id);
    }

    /// The verdict on `id` once no expected peer is awaited any more.
    fn finish_if_settled(&mut self, id: MessageId) {
        if !self
            .outstanding
            .get(&id)
            .is_some_and(|e| e.waiting.is_empty())
        {
            return;
        }
        if let Some(done) = self.outstanding.remove(&id) {
            self.deadlines.remove(&(done.deadline, id.clone()));
            if done.given_up.is_empty() {
                self.stats.delivered += 1;
                self.events.push_back(QosOutcome::Delivered {
                    message_id: id,
                    acked: done.acked,
                });
            } else {
                self.events.push_back(QosOutcome::Failed {
                    message_id: id,
                    acked: done.acked,
                    failed: done.given_up,
                });
            }
        }
    }

    /// One expectation of `peer` ended.
    fn release(&mut self, peer: &PeerId) {
        if let Some(n) = self.per_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(peer);
            }
        }
    }

    /// `peer` failed a verdict at `now`: after `demote_after` in a row it is demoted, and
    /// every message still waiting for it counts it failed at once.
    fn strike(&mut self, peer: PeerId, now: Instant) {
        let strikes = self.strikes.entry(peer).or_default();
        *strikes += 1;
        if *strikes < self.config.demote_after {
            return;
        }
        self.strikes.remove(&peer);
        self.demoted.insert(peer, now + self.config.demote_for);
        self.stats.demotions += 1;
        tracing::debug!(%peer, "pubsub qos: peer demoted (no acknowledgements)");
        let waiting: Vec<MessageId> = self
            .outstanding
            .iter()
            .filter(|(_, e)| e.waiting.contains(&peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            if let Some(entry) = self.outstanding.get_mut(&id) {
                entry.waiting.remove(&peer);
                entry.given_up.push(peer);
                self.stats.failed += 1;
            }
            self.release(&peer);
            self.finish_if_settled(id);
        }
    }

    /// `peer` (the author) must be told we took `message_id`: queued, batched with its other
    /// acks. `false` if dropped at `max_pending_acks`.
    pub fn queue_ack(&mut self, peer: PeerId, message_id: &MessageId) -> bool {
        if self.pending_ack_count >= self.config.max_pending_acks {
            self.stats.acks_dropped += 1;
            return false;
        }
        self.pending_acks
            .entry(peer)
            .or_default()
            .push(message_id.0.clone());
        self.pending_ack_count += 1;
        self.stats.acks_sent += 1;
        true
    }

    /// The peer's last connection closed: its unsent acks are dropped (its messages' own
    /// retransmissions are still tried until their verdict; a demotion outlives it).
    pub fn handle_peer_disconnected(&mut self, peer: &PeerId) {
        if let Some(acks) = self.pending_acks.remove(peer) {
            self.pending_ack_count -= acks.len();
        }
        // Its failures still count while a verdict may add to them; a demotion lasts.
        if !self.per_peer.contains_key(peer) {
            self.strikes.remove(peer);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Retransmits what is due to the peers still silent, or gives the verdict after the last
    /// retransmission. Returns the retransmissions queued.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut queued = 0;
        while let Some((deadline, id)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, id.clone()));
            let Some(mut entry) = self.outstanding.remove(&id) else {
                continue;
            };
            if entry.round >= self.config.max_retransmissions {
                self.stats.failed += entry.waiting.len() as u64;
                let mut failed = entry.given_up;
                for peer in &entry.waiting {
                    self.release(peer);
                }
                failed.extend(entry.waiting.iter().copied());
                self.events.push_back(QosOutcome::Failed {
                    message_id: id,
                    acked: entry.acked,
                    failed,
                });
                for peer in entry.waiting {
                    self.strike(peer, now);
                }
                continue;
            }
            for peer in &entry.waiting {
                if self.frames.len() >= self.config.max_queued_frames {
                    self.stats.retransmissions_dropped += 1;
                    continue;
                }
                self.frames.push_back((
                    *peer,
                    QosFrame {
                        acks: Vec::new(),
                        messages: vec![entry.message.clone()],
                    },
                ));
                queued += 1;
            }
            entry.round += 1;
            // The wait doubles each round (capped at 2^16 times the first).
            let factor = 1u32 << entry.round.min(16);
            entry.deadline = now + self.config.ack_timeout * factor;
            self.deadlines.insert((entry.deadline, id.clone()));
            self.outstanding.insert(id, entry);
        }
        self.stats.retransmissions += queued as u64;
        queued
    }

    /// The next frame to send: retransmissions first, then acknowledgements (at most
    /// `max_ack_batch` in one frame, one peer at a time).
    pub fn poll_transmit(&mut self) -> Option<(PeerId, QosFrame)> {
        if let Some(frame) = self.frames.pop_front() {
            return Some(frame);
        }
        let peer = *self.pending_acks.keys().next()?;
        let acks = self.pending_acks.get_mut(&peer)?;
        let n = acks.len().min(self.config.max_ack_batch);
        let batch: Vec<Vec<u8>> = acks.drain(..n).collect();
        if acks.is_empty() {
            self.pending_acks.remove(&peer);
        }
        self.pending_ack_count -= batch.len();
        Some((
            peer,
            QosFrame {
                acks: batch,
                messages: Vec::new(),
            },
        ))
    }

    /// Whether a frame is waiting.
    pub fn has_transmits(&self) -> bool {
        !self.frames.is_empty() || !self.pending_acks.is_empty()
    }

    /// The next verdict.
    pub fn poll_event(&mut self) -> Option<QosOutcome> {
        self.events.pop_front()
    }

    /// Counters since the tracker was made.
    pub fn stats(&self) -> QosStats {
        self.stats
    }

    /// The sizes of the tracker's tables.
    pub fn sizes(&self) -> QosSizes {
        QosSizes {
            outstanding: self.outstanding.len(),
            pending_acks: self.pending_ack_count,
            queued_frames: self.frames.len(),
            events: self.events.len(),
        }
    }
}
