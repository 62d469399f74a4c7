//! [`QosConfig`]: the bounds and timings of QoS 1, with their defaults.

use std::time::Duration;

/// QoS 1's settings (a field of [`GossipsubConfig`](crate::GossipsubConfig), `qos`).
///
/// ```
/// use std::time::Duration;
/// use meshwire_pubsub::qos::QosConfig;
///
/// let qos = QosConfig::default();
/// assert_eq!(qos.ack_timeout, Duration::from_secs(2));
/// // The last verdict comes 2 + 4 + 8 + 16 s after publishing.
/// assert_eq!(qos.window(), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QosConfig {
    /// How long the publisher waits for the acknowledgements before the first
    /// retransmission; each further wait doubles. Default 2 s.
    pub ack_timeout: Duration,
    /// Retransmissions to a silent subscriber before the message is reported failed for it.
    /// Default 3.
    pub max_retransmissions: u32,
    /// QoS 1 messages awaiting acknowledgements at once; beyond, `publish_with` fails with
    /// `PublishError::QosBusy`. Default 1,024.
    pub max_outstanding: usize,
    /// Expected (QoS-capable, subscribed) peers per message. `publish_with` expects the
    /// best-scored `max_subscribers` of them and treats the others as QoS 0;
    /// [`QosTracker::track`](super::QosTracker::track) refuses more. Default 1,024.
    pub max_subscribers: usize,
    /// Acknowledgements in one frame, sent and accepted (a frame with more is refused).
    /// Default 256.
    pub max_ack_batch: usize,
    /// Acknowledgements waiting to be sent, all peers together; beyond, dropped (the
    /// publisher retransmits and the retransmission is acknowledged). Default 8,192.
    pub max_pending_acks: usize,
    /// Frames (retransmissions) waiting for the driver; beyond, a retransmission is skipped
    /// for that round. Default 1,024.
    pub max_queued_frames: usize,
    /// QoS 1 messages one peer may be expected to acknowledge at once; a message published
    /// while a peer is at the cap does not expect it (it gets the message as QoS 0). A few
    /// silent peers can so hold at most this many messages each. Default 64.
    pub max_outstanding_per_peer: usize,
    /// Consecutive failed verdicts (a message it never acknowledged, retransmissions
    /// included) after which a peer is demoted: not expected for `demote_for`. An
    /// acknowledgement resets the count. Default 3.
    pub demote_after: u32,
    /// How long a demoted peer is not expected to acknowledge. Default 10 min.
    pub demote_for: Duration,
}

impl Default for QosConfig {
    fn default() -> Self {
        QosConfig {
            ack_timeout: Duration::from_secs(2),
            max_retransmissions: 3,
            max_outstanding: 1024,
            max_subscribers: 1024,
            max_ack_batch: 256,
            max_pending_acks: 8192,
            max_queued_frames: 1024,
            max_outstanding_per_peer: 64,
            demote_after: 3,
            demote_for: Duration::from_secs(600),
        }
    }
}

impl QosConfig {
    /// The time from publishing to the last verdict: `ack_timeout` × (2^(r+1) − 1) for `r`
    /// retransmissions (saturating).
    pub fn window(&self) -> Duration {
        let rounds = self.max_retransmissions.min(16);
        let factor = (1u32 << (rounds + 1)) - 1;
        self.ack_timeout.saturating_mul(factor)
    }

    /// Whether every bound is at least 1, the timeout not zero and retransmissions at most 16.
    pub fn is_valid(&self) -> bool {
        !self.ack_timeout.is_zero()
            && self.max_retransmissions <= 16
            && self.demote_after > 0
            && [
                self.max_outstanding,
                self.max_subscribers,
                self.max_ack_batch,
                self.max_pending_acks,
                self.max_queued_frames,
                self.max_outstanding_per_peer,
            ]
            .iter()
            .all(|b| *b > 0)
    }
}
