//! The gossipsub wire format: the messages of libp2p's pubsub `rpc.proto` (proto2, as
//! `libp2p/specs` `pubsub/README.md` and gossipsub v1.1 define them), their framing, and
//! message signing.
//!
//! One frame on a `/meshsub/1.1.0` stream is an unsigned-varint length followed by that many
//! bytes of an encoded [`Rpc`]. [`decode_frame`] checks the length against a limit (rust-libp2p's
//! `max_transmit_size`, 65,536 bytes by default: [`DEFAULT_MAX_TRANSMIT_SIZE`]) before it
//! buffers or decodes anything, and every failure is a [`WireError`]. The protobuf decoder is
//! prost's: it allocates at most in proportion to the (already bounded) frame, and unknown
//! fields (gossipsub v1.3's extensions, partial messages) are skipped.
//!
//! Gossipsub v1.2 (`/meshsub/1.2.0`) adds one control message, IDONTWANT
//! ([`ControlIDontWant`], field 5 of [`ControlMessage`]): `message ControlIDontWant { repeated
//! bytes messageIDs = 1; }`, byte for byte libp2p/specs `gossipsub-v1.2.md` and rust-libp2p.
//! How many ids the engine takes from one RPC and keeps per peer is its business
//! ([`crate::GossipsubConfig::max_idontwant_length`] and the fields next to it); the frame
//! carrying them is bounded here like any other.
//!
//! Field presence follows proto2 exactly as rust-libp2p encodes it: an `Option` that is
//! `Some` is written even when empty, `topic` (required) always, repeated fields in order, so
//! the bytes of a message are those rust-libp2p signs and sends ([`sign`]).

pub mod sign;

#[cfg(test)]
mod tests;

use prost::Message as _;

/// rust-libp2p's default `max_transmit_size`: the largest frame (RPC) read or written.
pub const DEFAULT_MAX_TRANSMIT_SIZE: usize = 65_536;

/// The longest unsigned-varint length prefix read (a `u64` needs at most 10 bytes; any frame
/// this crate accepts needs at most 5).
const MAX_PREFIX_LEN: usize = 10;

/// One RPC: subscription changes, published messages and control messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rpc {
    /// Subscriptions and unsubscriptions.
    #[prost(message, repeated, tag = "1")]
    pub subscriptions: Vec<SubOpts>,
    /// Published (or forwarded) messages.
    #[prost(message, repeated, tag = "2")]
    pub publish: Vec<Message>,
    /// Gossipsub control messages.
    #[prost(message, optional, tag = "3")]
    pub control: Option<ControlMessage>,
}

/// A subscription change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubOpts {
    /// `true` to subscribe, `false` to unsubscribe.
    #[prost(bool, optional, tag = "1")]
    pub subscribe: Option<bool>,
    /// The topic.
    #[prost(string, optional, tag = "2")]
    pub topic_id: Option<String>,
}

/// A published message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// The author's peer id (bytes).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub from: Option<Vec<u8>>,
    /// The payload.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
    /// The sequence number: 8 bytes, big endian.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub seqno: Option<Vec<u8>>,
    /// The topic.
    #[prost(string, required, tag = "4")]
    pub topic: String,
    /// The author's signature ([`sign`]).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub signature: Option<Vec<u8>>,
    /// The author's public key (protobuf), when it cannot be read from `from`.
    #[prost(bytes = "vec", optional, tag = "6")]
    pub key: Option<Vec<u8>>,
}

/// The control messages of one RPC.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlMessage {
    /// IHAVE: message ids the sender has.
    #[prost(message, repeated, tag = "1")]
    pub ihave: Vec<ControlIHave>,
    /// IWANT: message ids the sender asks for.
    #[prost(message, repeated, tag = "2")]
    pub iwant: Vec<ControlIWant>,
    /// GRAFT: the sender added us to its mesh.
    #[prost(message, repeated, tag = "3")]
    pub graft: Vec<ControlGraft>,
    /// PRUNE: the sender removed us from its mesh.
    #[prost(message, repeated, tag = "4")]
    pub prune: Vec<ControlPrune>,
    /// IDONTWANT (gossipsub v1.2): message ids the sender already has.
    #[prost(message, repeated, tag = "5")]
    pub idontwant: Vec<ControlIDontWant>,
    /// CHOKE (meshwire extension, field [`CHOKE_FIELD`]): the sender takes no full messages of
    /// these topics from us while we are in its mesh — ids in an IHAVE at once instead
    /// ([`crate::engine`]'s choking). Only sent to peers that set `choke_supported`.
    #[prost(message, repeated, tag = "5068630")]
    pub choke: Vec<ControlChoke>,
    /// UNCHOKE (meshwire extension, field [`UNCHOKE_FIELD`]): full messages of these topics
    /// again.
    #[prost(message, repeated, tag = "5068631")]
    pub unchoke: Vec<ControlChoke>,
    /// The sender takes CHOKE/UNCHOKE (meshwire extension, field [`CHOKE_SUPPORTED_FIELD`]):
    /// set in the control message sent with its subscriptions.
    #[prost(bool, optional, tag = "5068632")]
    pub choke_supported: Option<bool>,
}

/// The `ControlMessage` field number of CHOKE: random, in gossipsub v1.3's experimental range
/// (above 0x200000), next to the QoS mark's 5,068,625 and used by no libp2p spec (v1.0–v1.3
/// use 1–6 in `ControlMessage`).
pub const CHOKE_FIELD: u32 = 5_068_630;
/// The `ControlMessage` field number of UNCHOKE.
pub const UNCHOKE_FIELD: u32 = 5_068_631;
/// The `ControlMessage` field number of the choke-support flag.
pub const CHOKE_SUPPORTED_FIELD: u32 = 5_068_632;

impl ControlMessage {
    /// No control message at all.
    pub fn is_empty(&self) -> bool {
        self.ihave.is_empty()
            && self.iwant.is_empty()
            && self.graft.is_empty()
            && self.prune.is_empty()
            && self.idontwant.is_empty()
            && self.choke.is_empty()
            && self.unchoke.is_empty()
            && self.choke_supported.is_none()
    }
}

/// IHAVE.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIHave {
    /// The topic of the messages.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
    /// Their ids.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub message_ids: Vec<Vec<u8>>,
}

/// IWANT.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIWant {
    /// The ids asked for.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub message_ids: Vec<Vec<u8>>,
}

/// IDONTWANT (gossipsub v1.2): the sender has these messages; do not send them to it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIDontWant {
    /// The ids (`messageIDs` in the spec's proto).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub message_ids: Vec<Vec<u8>>,
}

/// CHOKE or UNCHOKE of one topic (meshwire extension).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlChoke {
    /// The topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
}

/// GRAFT.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlGraft {
    /// The topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
}

/// PRUNE.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlPrune {
    /// The topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
    /// Peer exchange (v1.1): peers the receiver may connect to instead.
    #[prost(message, repeated, tag = "2")]
    pub peers: Vec<PeerInfo>,
    /// Backoff (v1.1), in seconds: the receiver must not GRAFT before it ends.
    #[prost(uint64, optional, tag = "3")]
    pub backoff: Option<u64>,
}

/// A peer offered in a PRUNE's peer exchange.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInfo {
    /// The peer id (bytes).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub peer_id: Option<Vec<u8>>,
    /// A signed peer record (an envelope), if the sender has one.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub signed_peer_record: Option<Vec<u8>>,
}

/// Why bytes from a peer are not a valid frame or RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length prefix is not a minimal unsigned varint of at most 10 bytes.
    #[error("invalid frame length prefix")]
    InvalidPrefix,
    /// The bytes are not a protobuf `RPC`.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Decodes one RPC from `bytes` (a frame's body, without its prefix). `max` bounds the body.
///
/// # Errors
///
/// [`WireError::TooLarge`] above `max`, [`WireError::Protobuf`] if it is not an `RPC`.
pub fn decode_rpc(bytes: &[u8], max: usize) -> Result<Rpc, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(Rpc::decode(bytes)?)
}

/// Decodes the first frame of `buf`: `Ok(None)` while `buf` holds only part of it, else the RPC
/// and the number of bytes it took. The length is checked against `max` as soon as the prefix
/// is complete, before the body is awaited.
///
/// # Errors
///
/// [`WireError::InvalidPrefix`], [`WireError::TooLarge`], [`WireError::Protobuf`].
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(Rpc, usize)>, WireError> {
    let (len, rest) = match unsigned_varint::decode::u64(buf) {
        Ok(v) => v,
        Err(unsigned_varint::decode::Error::Insufficient) if buf.len() < MAX_PREFIX_LEN => {
            return Ok(None)
        }
        Err(_) => return Err(WireError::InvalidPrefix),
    };
    if len > max as u64 {
        return Err(WireError::TooLarge { len, max });
    }
    let prefix = buf.len() - rest.len();
    // `len <= max`, a `usize`.
    let len = len as usize;
    if rest.len() < len {
        return Ok(None);
    }
    let rpc = decode_rpc(&rest[..len], max)?;
    Ok(Some((rpc, prefix + len)))
}

/// `rpc` as one frame: its length as an unsigned varint, then its protobuf encoding.
pub fn encode_frame(rpc: &Rpc) -> Vec<u8> {
    let body = rpc.encode_to_vec();
    let mut prefix = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(body.len(), &mut prefix);
    let mut out = Vec::with_capacity(prefix.len() + body.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&body);
    out
}

/// `rpc`'s protobuf encoding (a frame's body).
pub fn encode_rpc(rpc: &Rpc) -> Vec<u8> {
    rpc.encode_to_vec()
}

/// The encoded length of `rpc`'s body.
pub fn rpc_len(rpc: &Rpc) -> usize {
    rpc.encoded_len()
}
