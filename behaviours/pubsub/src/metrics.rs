//! Prometheus metrics of gossipsub ([`GossipsubMetrics`]).
//!
//! Topic labels are bounded: the first [`GossipsubMetrics::register`]`(.., max_topics)`
//! distinct topics seen get their own `topic` label, every later one is counted under
//! `topic="other"`, so a peer inventing topics cannot grow the label set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::TopicHash;

/// The label of topics beyond the bound.
pub const OTHER_TOPIC: &str = "other";

/// The default bound on distinct `topic` labels.
pub const DEFAULT_MAX_TOPIC_LABELS: usize = 64;

type Labels = Vec<(String, String)>;

/// Gossipsub's metrics, registered under the `pubsub` prefix:
///
/// | metric | kind | meaning |
/// | --- | --- | --- |
/// | `pubsub_messages_published_total{topic}` | counter | messages this node published |
/// | `pubsub_messages_delivered_total{topic}` | counter | messages from peers delivered to the application (once each) |
/// | `pubsub_messages_duplicate_total{topic}` | counter | copies of messages already seen, dropped |
/// | `pubsub_messages_invalid_total{topic}` | counter | messages with a bad signature or rejected by the application |
/// | `pubsub_mesh_peers{topic}` | gauge | mesh size of each subscribed topic, at each heartbeat |
/// | `pubsub_peer_scores` | histogram | every connected peer's score, at each heartbeat (scoring on) |
/// | `pubsub_qos_acks_received_total` | counter | QoS 1 acknowledgements received that settled an expected subscriber |
/// | `pubsub_qos_acks_sent_total` | counter | QoS 1 acknowledgements this node queued for their publishers |
/// | `pubsub_qos_retransmissions_total` | counter | QoS 1 messages retransmitted to a silent subscriber |
/// | `pubsub_qos_delivered_total` | counter | QoS 1 messages acknowledged by every expected subscriber |
/// | `pubsub_qos_failures_total` | counter | (QoS 1 message, subscriber) pairs never acknowledged |
/// | `pubsub_idontwant_sent_total` | counter | message ids sent in IDONTWANT (one per peer told) |
/// | `pubsub_idontwant_received_total` | counter | message ids peers sent in IDONTWANT, kept |
/// | `pubsub_idontwant_ignored_total` | counter | IDONTWANT ids beyond the bounds, ignored |
/// | `pubsub_idontwant_suppressed_total` | counter | copies not sent (or dropped from a queue) because the peer had the message |
/// | `pubsub_choke_chokes_sent_total` | counter | CHOKEs sent (choking, a meshwire extension; re-sent ones included) |
/// | `pubsub_choke_unchokes_sent_total` | counter | UNCHOKEs sent (re-sent ones included) |
/// | `pubsub_choke_chokes_received_total` | counter | CHOKEs taken from mesh peers |
/// | `pubsub_choke_unchokes_received_total` | counter | UNCHOKEs taken from mesh peers |
/// | `pubsub_choke_ignored_total` | counter | CHOKEs and UNCHOKEs ignored (topic not ours, peer not in the mesh, choking off) |
/// | `pubsub_choke_ihave_instead_total` | counter | messages forwarded as an IHAVE because the peer choked us |
/// | `pubsub_choke_fallback_iwants_total` | counter | IWANTs sent for ids only choked peers announced, after the wait |
/// | `pubsub_choke_eager_total` | counter | messages forwarded in full to a peer that choked us, because we took them from their author |
///
/// Clones share the same values and the same topic labels.
#[derive(Clone, Debug)]
pub struct GossipsubMetrics {
    published: Family<Labels, Counter>,
    delivered: Family<Labels, Counter>,
    duplicate: Family<Labels, Counter>,
    invalid: Family<Labels, Counter>,
    mesh_peers: Family<Labels, Gauge>,
    scores: Histogram,
    qos_acks_received: Counter,
    qos_acks_sent: Counter,
    qos_retransmissions: Counter,
    qos_delivered: Counter,
    qos_failures: Counter,
    idontwant_sent: Counter,
    idontwant_received: Counter,
    idontwant_ignored: Counter,
    idontwant_suppressed: Counter,
    choke_chokes_sent: Counter,
    choke_unchokes_sent: Counter,
    choke_chokes_received: Counter,
    choke_unchokes_received: Counter,
    choke_ignored: Counter,
    choke_ihave_instead: Counter,
    choke_fallback_iwants: Counter,
    choke_eager: Counter,
    labelled: Arc<Mutex<HashSet<String>>>,
    max_topics: usize,
}

impl GossipsubMetrics {
    /// Creates the metrics with at most `max_topics` distinct topic labels (besides
    /// `other`) and registers them in `registry` under the `pubsub` prefix.
    pub fn register(registry: &mut Registry, max_topics: usize) -> Self {
        let m = GossipsubMetrics {
            published: Family::default(),
            delivered: Family::default(),
            duplicate: Family::default(),
            invalid: Family::default(),
            mesh_peers: Family::default(),
            // Scores -100 .. 100 in steps of 10 (rust-libp2p's default thresholds lie inside).
            scores: Histogram::new((-10..=10).map(|i| f64::from(i) * 10.0)),
            qos_acks_received: Counter::default(),
            qos_acks_sent: Counter::default(),
            qos_retransmissions: Counter::default(),
            qos_delivered: Counter::default(),
            qos_failures: Counter::default(),
            idontwant_sent: Counter::default(),
            idontwant_received: Counter::default(),
            idontwant_ignored: Counter::default(),
            idontwant_suppressed: Counter::default(),
            choke_chokes_sent: Counter::default(),
            choke_unchokes_sent: Counter::default(),
            choke_chokes_received: Counter::default(),
            choke_unchokes_received: Counter::default(),
            choke_ignored: Counter::default(),
            choke_ihave_instead: Counter::default(),
            choke_fallback_iwants: Counter::default(),
            choke_eager: Counter::default(),
            labelled: Arc::new(Mutex::new(HashSet::new())),
            max_topics,
        };
        let sub = registry.sub_registry_with_prefix("pubsub");
        sub.register(
            "messages_published",
            "Messages published by this node",
            m.published.clone(),
        );
        sub.register(
            "messages_delivered",
            "Messages delivered to the application",
            m.delivered.clone(),
        );
        sub.register(
            "messages_duplicate",
            "Copies of seen messages dropped",
            m.duplicate.clone(),
        );
        sub.register(
            "messages_invalid",
            "Messages with a bad signature or rejected",
            m.invalid.clone(),
        );
        sub.register(
            "mesh_peers",
            "Mesh size per subscribed topic",
            m.mesh_peers.clone(),
        );
        sub.register("peer_scores", "Scores of connected peers", m.scores.clone());
        sub.register(
            "qos_acks_received",
            "QoS 1 acknowledgements received that settled an expected subscriber",
            m.qos_acks_received.clone(),
        );
        sub.register(
            "qos_acks_sent",
            "QoS 1 acknowledgements queued for their publishers",
            m.qos_acks_sent.clone(),
        );
        sub.register(
            "qos_retransmissions",
            "QoS 1 messages retransmitted to a silent subscriber",
            m.qos_retransmissions.clone(),
        );
        sub.register(
            "qos_delivered",
            "QoS 1 messages acknowledged by every expected subscriber",
            m.qos_delivered.clone(),
        );
        sub.register(
            "qos_failures",
            "QoS 1 (message, subscriber) pairs never acknowledged",
            m.qos_failures.clone(),
        );
        sub.register(
            "idontwant_sent",
            "Message ids sent in IDONTWANT, one per peer told",
            m.idontwant_sent.clone(),
        );
        sub.register(
            "idontwant_received",
            "Message ids received in IDONTWANT and kept",
            m.idontwant_received.clone(),
        );
        sub.register(
            "idontwant_ignored",
            "IDONTWANT message ids beyond the bounds, ignored",
            m.idontwant_ignored.clone(),
        );
        sub.register(
            "idontwant_suppressed",
            "Copies not sent or dropped from a queue because the peer had the message",
            m.idontwant_suppressed.clone(),
        );
        for (name, help, counter) in [
            (
                "choke_chokes_sent",
                "CHOKEs sent to mesh peers (choking, a meshwire extension)",
                &m.choke_chokes_sent,
            ),
            (
                "choke_unchokes_sent",
                "UNCHOKEs sent to mesh peers",
                &m.choke_unchokes_sent,
            ),
            (
                "choke_chokes_received",
                "CHOKEs taken from mesh peers",
                &m.choke_chokes_received,
            ),
            (
                "choke_unchokes_received",
                "UNCHOKEs taken from mesh peers",
                &m.choke_unchokes_received,
            ),
            (
                "choke_ignored",
                "CHOKEs and UNCHOKEs ignored (topic not ours, peer not in the mesh, choking off)",
                &m.choke_ignored,
            ),
            (
                "choke_ihave_instead",
                "Messages forwarded as an IHAVE because the peer choked us",
                &m.choke_ihave_instead,
            ),
            (
                "choke_fallback_iwants",
                "IWANTs sent for ids only choked peers announced, after the wait",
                &m.choke_fallback_iwants,
            ),
            (
                "choke_eager",
                "Messages forwarded in full to a peer that choked us, taken from their author",
                &m.choke_eager,
            ),
        ] {
            sub.register(name, help, counter.clone());
        }
        m
    }

    /// Adds the choking counters' increments since the last call (`before` → `now`).
    pub(crate) fn choke(&self, before: &crate::ChokeStats, now: &crate::ChokeStats) {
        let add = |c: &Counter, now: u64, before: u64| {
            c.inc_by(now.saturating_sub(before));
        };
        add(&self.choke_chokes_sent, now.chokes_sent, before.chokes_sent);
        add(
            &self.choke_unchokes_sent,
            now.unchokes_sent,
            before.unchokes_sent,
        );
        add(
            &self.choke_chokes_received,
            now.chokes_received,
            before.chokes_received,
        );
        add(
            &self.choke_unchokes_received,
            now.unchokes_received,
            before.unchokes_received,
        );
        add(&self.choke_ignored, now.ignored, before.ignored);
        add(
            &self.choke_ihave_instead,
            now.ihave_instead,
            before.ihave_instead,
        );
        add(
            &self.choke_fallback_iwants,
            now.fallback_iwants,
            before.fallback_iwants,
        );
        add(
            &self.choke_eager,
            now.eager_to_choking,
            before.eager_to_choking,
        );
    }

    pub(crate) fn idontwant_sent(&self, ids: u64) {
        self.idontwant_sent.inc_by(ids);
    }

    pub(crate) fn idontwant_received(&self, kept: u64, ignored: u64) {
        self.idontwant_received.inc_by(kept);
        self.idontwant_ignored.inc_by(ignored);
    }

    pub(crate) fn idontwant_suppressed(&self, copies: u64) {
        self.idontwant_suppressed.inc_by(copies);
    }

    /// Message ids sent in IDONTWANT so far.
    pub fn idontwant_sent_count(&self) -> u64 {
        self.idontwant_sent.get()
    }

    /// Message ids received in IDONTWANT and kept so far.
    pub fn idontwant_received_count(&self) -> u64 {
        self.idontwant_received.get()
    }

    /// Copies not sent because their peer had the message, so far.
    pub fn idontwant_suppressed_count(&self) -> u64 {
        self.idontwant_suppressed.get()
    }

    /// Adds the QoS 1 counters' increments since the last call (`before` → `now`).
    pub(crate) fn qos(&self, before: &crate::qos::QosStats, now: &crate::qos::QosStats) {
        self.qos_acks_received
            .inc_by(now.acks_received.saturating_sub(before.acks_received));
        self.qos_acks_sent
            .inc_by(now.acks_sent.saturating_sub(before.acks_sent));
        self.qos_retransmissions
            .inc_by(now.retransmissions.saturating_sub(before.retransmissions));
        self.qos_delivered
            .inc_by(now.delivered.saturating_sub(before.delivered));
        self.qos_failures
            .inc_by(now.failed.saturating_sub(before.failed));
    }

    /// The label for `topic`: its own while fewer than `max_topics` topics have one, else
    /// [`OTHER_TOPIC`].
    fn label(&self, topic: &TopicHash) -> Labels {
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let value = if labelled.contains(topic.as_str()) {
            topic.as_str()
        } else if labelled.len() < self.max_topics {
            labelled.insert(topic.as_str().to_string());
            topic.as_str()
        } else {
            OTHER_TOPIC
        };
        vec![("topic".to_string(), value.to_string())]
    }

    pub(crate) fn published(&self, topic: &TopicHash) {
        self.published.get_or_create(&self.label(topic)).inc();
    }

    pub(crate) fn delivered(&self, topic: &TopicHash) {
        self.delivered.get_or_create(&self.label(topic)).inc();
    }

    pub(crate) fn duplicate(&self, topic: &TopicHash) {
        self.duplicate.get_or_create(&self.label(topic)).inc();
    }

    pub(crate) fn invalid(&self, topic: &TopicHash) {
        self.invalid.get_or_create(&self.label(topic)).inc();
    }

    pub(crate) fn mesh_size(&self, topic: &TopicHash, n: usize) {
        self.mesh_peers
            .get_or_create(&self.label(topic))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn score(&self, score: f64) {
        self.scores.observe(score);
    }

    /// The `topic` label value `topic` is counted under.
    pub fn topic_label(&self, topic: &TopicHash) -> String {
        self.label(topic).remove(0).1
    }

    /// Messages published on `topic`'s label so far.
    pub fn published_count(&self, topic: &TopicHash) -> u64 {
        self.published.get_or_create(&self.label(topic)).get()
    }

    /// Messages delivered on `topic`'s label so far.
    pub fn delivered_count(&self, topic: &TopicHash) -> u64 {
        self.delivered.get_or_create(&self.label(topic)).get()
    }

    /// Duplicates dropped on `topic`'s label so far.
    pub fn duplicate_count(&self, topic: &TopicHash) -> u64 {
        self.duplicate.get_or_create(&self.label(topic)).get()
    }

    /// Invalid messages on `topic`'s label so far.
    pub fn invalid_count(&self, topic: &TopicHash) -> u64 {
        self.invalid.get_or_create(&self.label(topic)).get()
    }
}
