//! The QoS 1 wire: the mark on gossipsub RPCs and the frames of `/meshwire/pubsub/qos/1.0.0`.
//!
//! **The mark.** A publisher tells a QoS-capable subscriber "acknowledge this" by appending
//! one protobuf field to the gossipsub RPC that carries its own message to that subscriber:
//! field [`QOS_MARK_FIELD`] (5,068,625, a random number in gossipsub v1.3's experimental range
//! above 0x200000, so at least 4 bytes as a varint key), a `bool` set to `true`. Protobuf
//! decoders skip unknown fields, so the RPC reads the same everywhere; it is only ever sent
//! to peers that announced the QoS protocol. [`mark`] appends it (the RPC's last field),
//! [`is_marked`] finds it there.
//!
//! **The frames.** One [`QosFrame`] per stream on `/meshwire/pubsub/qos/1.0.0`, framed as
//! gossipsub frames (unsigned-varint length, then the protobuf body; the swarm toolkit's
//! `read_frame`/`write_frame`), each bounded by `max_transmit_size` before it is buffered:
//!
//! ```text
//! message QosFrame {
//!   repeated bytes   acks    = 1; // ids of QoS 1 messages taken (at most max_ack_batch)
//!   repeated Message message = 2; // a retransmitted message, authored by the sender (at most 1)
//! }
//! ```
//!
//! [`decode_frame`] checks every bound after prost has decoded the (already bounded) body and
//! returns a [`QosWireError`] for anything else.

use prost::Message as _;

use crate::wire::Message;

/// The protobuf field number of the QoS 1 mark on a gossipsub RPC.
pub const QOS_MARK_FIELD: u32 = 5_068_625;

/// The most messages one QoS frame may carry (a retransmission is one message).
pub const MAX_MESSAGES_PER_FRAME: usize = 1;

/// The mark's carrier: an RPC seen through the mark field alone (every other field skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct QosMark {
    #[prost(bool, optional, tag = "5068625")]
    qos1: Option<bool>,
}

/// One frame of the QoS protocol: acknowledgements and/or a retransmitted message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QosFrame {
    /// Ids of QoS 1 messages the sender took (delivered or had already delivered).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub acks: Vec<Vec<u8>>,
    /// A QoS 1 message retransmitted by its author (the sender of the frame).
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<Message>,
}

/// The bounds a QoS frame is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest frame body (gossipsub's `max_transmit_size`).
    pub max_frame: usize,
    /// The most acknowledgements in one frame (`QosConfig::max_ack_batch`).
    pub max_acks: usize,
    /// The longest message id (gossipsub's `max_message_id_len`).
    pub max_id_len: usize,
}

/// Why a QoS frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QosWireError {
    /// The frame is longer than `max_transmit_size`.
    #[error("QoS frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length prefix is not a valid unsigned varint.
    #[error("invalid QoS frame length prefix")]
    InvalidPrefix,
    /// The body is not a protobuf `QosFrame`.
    #[error("malformed QoS frame: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// More acknowledgements than `max_ack_batch`.
    #[error("{count} acknowledgements in one frame, at most {max}")]
    TooManyAcks {
        /// Acknowledgements in the frame.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A message id longer than `max_message_id_len`.
    #[error("message id of {len} bytes, at most {max}")]
    IdTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_MESSAGES_PER_FRAME`] messages.
    #[error("{count} messages in one QoS frame, at most {MAX_MESSAGES_PER_FRAME}")]
    TooManyMessages {
        /// Messages in the frame.
        count: usize,
    },
    /// Neither an acknowledgement nor a message.
    #[error("empty QoS frame")]
    Empty,
    /// A retransmitted message whose author is not the peer that sent it.
    #[error("retransmitted message not authored by its sender")]
    NotAuthor,
}

/// Appends the QoS 1 mark to an encoded gossipsub RPC.
pub fn mark(rpc: &mut Vec<u8>) {
    QosMark { qos1: Some(true) }.encode_raw(rpc);
}

/// Whether an encoded gossipsub RPC carries the QoS 1 mark as its last field, as [`mark`]
/// puts it (`false` for anything that does not decode: the RPC decoder reports those). Only
/// an RPC ending with the mark's 5 bytes is decoded a second time.
pub fn is_marked(rpc: &[u8]) -> bool {
    let mut tail = Vec::with_capacity(5);
    mark(&mut tail);
    rpc.ends_with(&tail) && QosMark::decode(rpc).is_ok_and(|m| m.qos1 == Some(true))
}

/// `frame`'s protobuf encoding (a frame's body).
pub fn encode(frame: &QosFrame) -> Vec<u8> {
    frame.encode_to_vec()
}

/// Decodes a frame's body and checks it against `limits`.
///
/// # Errors
///
/// Every [`QosWireError`] but `InvalidPrefix` and `NotAuthor` (the engine checks authors).
pub fn decode_frame(body: &[u8], limits: &FrameLimits) -> Result<QosFrame, QosWireError> {
    if body.len() > limits.max_frame {
        return Err(QosWireError::TooLarge {
            len: body.len() as u64,
            max: limits.max_frame,
        });
    }
    let frame = QosFrame::decode(body)?;
    if frame.acks.len() > limits.max_acks {
        return Err(QosWireError::TooManyAcks {
            count: frame.acks.len(),
            max: limits.max_acks,
        });
    }
    if let Some(id) = frame.acks.iter().find(|id| id.len() > limits.max_id_len) {
        return Err(QosWireError::IdTooLong {
            len: id.len(),
            max: limits.max_id_len,
        });
    }
    if frame.messages.len() > MAX_MESSAGES_PER_FRAME {
        return Err(QosWireError::TooManyMessages {
            count: frame.messages.len(),
        });
    }
    if frame.acks.is_empty() && frame.messages.is_empty() {
        return Err(QosWireError::Empty);
    }
    Ok(frame)
}
