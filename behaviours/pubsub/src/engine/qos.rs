//! The engine's side of QoS 1 ([`crate::qos`]): publishing with acknowledgements, the mark on
//! our copies, QoS frames in and out, verdicts as events.

use std::collections::BTreeSet;
use std::time::Instant;

use meshwire_core::PeerId;

use super::{GossipsubEngine, GossipsubEvent, InvalidReason, MessageId, PublishError, TopicHash};
use crate::qos::{Qos, QosError, QosFrame, QosOutcome, QosSizes, QosStats, QosWireError};
use crate::wire::Rpc;

impl GossipsubEngine {
    /// Publishes `data` on `topic` with the delivery guarantee `qos`: [`Qos::AtMostOnce`] is
    /// [`Self::publish`]; [`Qos::AtLeastOnce`] also sends the message to every connected
    /// subscriber of the topic (exact or by pattern) that speaks the QoS protocol
    /// ([`Self::set_peer_qos`]) and is neither demoted nor at its cap of outstanding
    /// messages (at most `max_subscribers` of them, best scored first), expects each one's
    /// acknowledgement, retransmits to the silent
    /// ones and reports [`GossipsubEvent::QosDelivered`] or
    /// [`GossipsubEvent::QosDeliveryFailed`] (module [`crate::qos`]).
    ///
    /// With QoS 1 and expected subscribers, full queues are no error: the retransmissions
    /// carry the message to them.
    ///
    /// # Errors
    ///
    /// [`PublishError`], including `QosBusy` (nothing sent).
    pub fn publish_with(
        &mut self,
        now: Instant,
        topic: TopicHash,
        data: Vec<u8>,
        qos: Qos,
    ) -> Result<MessageId, PublishError> {
        if qos == Qos::AtMostOnce {
            return self.publish(now, topic, data);
        }
        self.qos.check_room(0).map_err(publish_error)?;
        let mut ranked: Vec<PeerId> = self.qos_subscribers(&topic).into_iter().collect();
        // Best scored first (stable: ties in peer id order), so `max_subscribers` keeps them.
        ranked.sort_by(|a, b| self.score_of(b).total_cmp(&self.score_of(a)));
        let expected = self.qos.select(now, ranked);
        let (id, message) = self.publish_inner(now, topic, data, &expected)?;
        let tracked = self.qos.track(now, id.clone(), message, expected);
        self.sync_qos();
        tracked.map_err(publish_error)?;
        Ok(id)
    }

    /// Whether `peer` speaks the QoS protocol (`/meshwire/pubsub/qos/1.0.0`, learnt from
    /// identify's protocol list only): only such peers are expected to acknowledge. A QoS
    /// frame from a peer does not set it (any peer could send one to be expected).
    pub fn set_peer_qos(&mut self, peer: &PeerId, qos: bool) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.qos = qos;
        }
    }

    /// Whether `peer` is known to speak the QoS protocol.
    pub fn peer_qos(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.qos)
    }

    /// Whether `rpc`, about to be sent to `peer`, carries one of our QoS 1 messages that
    /// `peer` must acknowledge: then the driver appends the mark
    /// ([`crate::qos::wire::mark`]) to its encoding.
    pub fn qos_marked(&self, peer: &PeerId, rpc: &Rpc) -> bool {
        if self.qos.sizes().outstanding == 0 {
            return false;
        }
        let [message] = rpc.publish.as_slice() else {
            return false;
        };
        if message.from.as_deref() != Some(self.local.as_bytes()) {
            return false;
        }
        let seqno = message
            .seqno
            .as_deref()
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes);
        let id = self.message_id(message, Some(self.local), seqno);
        self.qos.expects(&id, peer)
    }

    /// A QoS frame from `peer`: its acknowledgements settle our QoS 1 messages, its
    /// retransmitted message (authored by `peer`) is taken like a marked copy — delivered
    /// once, acknowledged every time.
    pub fn handle_qos_frame(&mut self, now: Instant, peer: PeerId, frame: QosFrame) {
        self.start(now);
        if !self.peers.contains_key(&peer) {
            return;
        }
        if self.score.is_some()
            && self.score_of(&peer) < self.config.score_thresholds.graylist_threshold
        {
            return;
        }
        self.qos.handle_acks(peer, frame.acks);
        for message in frame.messages {
            if message.from.as_deref() != Some(peer.as_bytes()) {
                self.penalize(peer, InvalidReason::Qos(QosWireError::NotAuthor));
                continue;
            }
            self.handle_message(now, peer, message, true);
        }
        self.flush_control();
        self.sync_qos();
    }

    /// A QoS frame from `peer` that failed to decode or broke a bound: counted against it.
    pub fn handle_invalid_qos_frame(&mut self, now: Instant, peer: PeerId, error: QosWireError) {
        self.start(now);
        self.penalize(peer, InvalidReason::Qos(error));
    }

    /// The next QoS frame to send (retransmissions, then batched acknowledgements).
    pub fn poll_qos_transmit(&mut self) -> Option<(PeerId, QosFrame)> {
        self.qos.poll_transmit()
    }

    /// Whether a QoS frame is waiting.
    pub fn has_qos_transmits(&self) -> bool {
        self.qos.has_transmits()
    }

    /// QoS counters since the engine was made.
    pub fn qos_stats(&self) -> QosStats {
        self.qos.stats()
    }

    /// QoS table sizes (outstanding messages, pending acks, queued frames).
    pub fn qos_sizes(&self) -> QosSizes {
        self.qos.sizes()
    }

    /// The connected subscribers of `topic` (exact or by pattern) that speak the QoS
    /// protocol and pass the publish threshold.
    fn qos_subscribers(&self, topic: &TopicHash) -> BTreeSet<PeerId> {
        let threshold = self.config.score_thresholds.publish_threshold;
        let keep =
            |p: &PeerId| self.peers.get(p).is_some_and(|s| s.qos) && self.score_of(p) >= threshold;
        let mut peers: BTreeSet<PeerId> = self.topic_candidates(topic, keep).into_iter().collect();
        peers.extend(self.pattern_peers(topic, keep));
        peers
    }

    pub(super) fn qos_timeout(&mut self, now: Instant) {
        if self.qos.poll_timeout().is_some_and(|t| t <= now) {
            self.qos.handle_timeout(now);
        }
        self.sync_qos();
    }

    /// Turns the tracker's verdicts into events and its counters into metrics.
    pub(super) fn sync_qos(&mut self) {
        while let Some(outcome) = self.qos.poll_event() {
            self.events.push_back(match outcome {
                QosOutcome::Delivered { message_id, acked } => {
                    GossipsubEvent::QosDelivered { message_id, acked }
                }
                QosOutcome::Failed {
                    message_id,
                    acked,
                    failed,
                } => GossipsubEvent::QosDeliveryFailed {
                    message_id,
                    acked,
                    failed,
                },
            });
        }
        let stats = self.qos.stats();
        if let Some(m) = &self.metrics {
            m.qos(&self.qos_reported, &stats);
        }
        self.qos_reported = stats;
    }
}

fn publish_error(e: QosError) -> PublishError {
    match e {
        QosError::Busy(n) => PublishError::QosBusy(n),
        // Not reached: `QosTracker::select` expects at most `max_subscribers` peers.
        QosError::TooManySubscribers { count, .. } => PublishError::QosBusy(count),
    }
}
