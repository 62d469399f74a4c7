//! The engine's vocabulary: topics, message ids, messages, events and errors.

use std::fmt;

use meshwire_core::PeerId;

use crate::qos::QosWireError;
use crate::wire::sign::MessageError;
use crate::wire::WireError;

/// A topic, as it travels (rust-libp2p's `IdentTopic`: the topic string itself).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicHash(String);

impl TopicHash {
    /// The topic's string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic's string, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<&str> for TopicHash {
    fn from(s: &str) -> Self {
        TopicHash(s.to_string())
    }
}

impl From<String> for TopicHash {
    fn from(s: String) -> Self {
        TopicHash(s)
    }
}

impl fmt::Debug for TopicHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for TopicHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's id (by default the author in base58 and the sequence number in decimal).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub Vec<u8>);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", String::from_utf8_lossy(&self.0))
    }
}

/// A message as the application sees it, its signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipMessage {
    /// The author.
    pub source: Option<PeerId>,
    /// The payload.
    pub data: Vec<u8>,
    /// The author's sequence number.
    pub sequence_number: Option<u64>,
    /// The topic.
    pub topic: TopicHash,
}

/// The application's verdict on a message held for validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid: drop it and count it against the peer that sent it.
    Reject,
    /// Neither: drop it without penalty.
    Ignore,
}

/// Why something a peer sent was refused; each counts against the peer
/// ([`super::GossipsubEngine::invalid_messages`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// A frame that is not a valid RPC.
    #[error("undecodable RPC: {0}")]
    Decode(#[from] WireError),
    /// A message failing strict signature verification.
    #[error("invalid message: {0}")]
    Message(#[from] MessageError),
    /// A message the application rejected.
    #[error("rejected by the application")]
    Rejected,
    /// An RPC with more messages or subscriptions than `max_messages_per_rpc`, or
    /// subscriptions beyond `max_topics_per_peer`.
    #[error("over a per-RPC or per-peer limit")]
    OverLimit,
    /// A GRAFT during the backoff we set for this peer.
    #[error("GRAFT during backoff")]
    GraftDuringBackoff,
    /// A QoS frame that is malformed, over a bound, or retransmits someone else's message.
    #[error("invalid QoS frame: {0}")]
    Qos(#[from] QosWireError),
}

/// What the engine reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipsubEvent {
    /// A new message on a topic we subscribe to. With `validate_messages`, it waits for
    /// [`super::GossipsubEngine::report_validation`] before being forwarded.
    Message {
        /// The peer that sent it to us.
        propagation_source: PeerId,
        /// Its id.
        message_id: MessageId,
        /// The message.
        message: GossipMessage,
    },
    /// A peer subscribed to a topic.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: TopicHash,
    },
    /// A peer unsubscribed from a topic.
    Unsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: TopicHash,
    },
    /// A peer sent something invalid (counted against it).
    Invalid {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        reason: InvalidReason,
    },
    /// Every expected subscriber acknowledged a QoS 1 message ([`crate::qos`]); with none
    /// expected (no QoS-capable subscriber known), at once.
    QosDelivered {
        /// The message.
        message_id: MessageId,
        /// The subscribers that acknowledged it.
        acked: Vec<PeerId>,
    },
    /// Some expected subscribers never acknowledged a QoS 1 message, after
    /// `qos.max_retransmissions` retransmissions ([`crate::qos`]).
    QosDeliveryFailed {
        /// The message.
        message_id: MessageId,
        /// The subscribers that acknowledged it.
        acked: Vec<PeerId>,
        /// The subscribers that did not.
        failed: Vec<PeerId>,
    },
    /// A PRUNE offered peers to connect to instead (peer exchange, at most `prune_peers`).
    PeerExchange {
        /// The topic of the PRUNE.
        topic: TopicHash,
        /// The peers offered that we are not connected to.
        peers: Vec<PeerId>,
    },
}

/// Why [`super::GossipsubEngine::publish`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The encoded RPC would exceed `max_transmit_size`.
    #[error("message of {size} bytes exceeds max_transmit_size {max}")]
    MessageTooLarge {
        /// The encoded RPC's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A message with the same id was already seen.
    #[error("duplicate message")]
    Duplicate,
    /// No connected peer subscribes to the topic.
    #[error("no peers subscribed to the topic")]
    NoPeersSubscribedToTopic,
    /// Every recipient's queue was full (slow peers): the message went nowhere.
    #[error("every recipient's queue is full")]
    AllQueuesFull,
    /// QoS 1: `qos.max_outstanding` messages already await acknowledgements.
    #[error("{0} QoS 1 messages already await acknowledgements")]
    QosBusy(usize),
}
