//! The DCUtR wire format: `/libp2p/dcutr` (libp2p/specs `relay/DCUtR.md`).
//!
//! One message type travels on the stream, each in a frame (an unsigned-varint length, then
//! the protobuf bytes), at most [`MAX_MESSAGE_SIZE`] bytes:
//!
//! ```text
//! message HolePunch {
//!   enum Type { CONNECT = 100; SYNC = 300; }
//!   required Type type = 1;
//!   repeated bytes ObsAddrs = 2;
//! }
//! ```
//!
//! `type` is proto2 `required`: it is always written (a `SYNC` is the three bytes
//! `08 ac 02`). [`encode`] and [`decode`] convert between bytes and the typed [`Message`];
//! [`decode`] never panics and allocates at most what the (already bounded) input holds.
//! Addresses that do not parse are skipped (rust-libp2p does the same), relayed addresses
//! (`/p2p-circuit`) are dropped, and at most [`MAX_ADDRS`] are kept.

#[cfg(test)]
mod tests;

use multiaddr::{Multiaddr, Protocol};
use prost::Message as _;

/// The protocol name.
pub const PROTOCOL_NAME: &str = "/libp2p/dcutr";

/// The largest message accepted or sent, in bytes, without the length prefix (4 KiB, as
/// rust-libp2p and go-libp2p).
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Addresses kept from one `CONNECT`; the rest are ignored (default 32).
pub const MAX_ADDRS: usize = 32;

/// `HolePunch` exactly as it travels (prost derive).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HolePunch {
    /// [`HolePunchType`] (required).
    #[prost(enumeration = "HolePunchType", required, tag = "1")]
    pub r#type: i32,
    /// The sender's addresses, binary multiaddrs.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub obs_addrs: Vec<Vec<u8>>,
}

/// `HolePunch.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum HolePunchType {
    /// The addresses of the sender, in both directions.
    Connect = 100,
    /// The initiator's go: the responder dials on receipt.
    Sync = 300,
}

/// A checked DCUtR message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `CONNECT` with the sender's addresses (relayed ones dropped, at most [`MAX_ADDRS`]).
    Connect(Vec<Multiaddr>),
    /// `SYNC`.
    Sync,
}

/// Why bytes are not a valid DCUtR message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More than [`MAX_MESSAGE_SIZE`] bytes.
    #[error("message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
    /// Not a protobuf `HolePunch`.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    /// `type` is neither `CONNECT` (100) nor `SYNC` (300). (A missing `type` takes the
    /// proto2 default, `CONNECT`, as in rust-libp2p.)
    #[error("unknown message type {0}")]
    UnknownType(i32),
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoding exceeds [`MAX_MESSAGE_SIZE`] (too many or too long addresses).
    #[error("message of {0} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLarge(usize),
}

/// Whether `addr` goes through a relay (`/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The protobuf bytes of `msg` (no length prefix).
///
/// # Errors
///
/// [`EncodeError::TooLarge`] past [`MAX_MESSAGE_SIZE`].
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let pb = match msg {
        Message::Connect(addrs) => HolePunch {
            r#type: HolePunchType::Connect as i32,
            obs_addrs: addrs.iter().map(|a| a.to_vec()).collect(),
        },
        Message::Sync => HolePunch {
            r#type: HolePunchType::Sync as i32,
            obs_addrs: Vec::new(),
        },
    };
    let len = pb.encoded_len();
    if len > MAX_MESSAGE_SIZE {
        return Err(EncodeError::TooLarge(len));
    }
    Ok(pb.encode_to_vec())
}

/// The addresses of ours that fit in one `CONNECT`: relayed ones dropped, in order, as many
/// as fit in [`MAX_MESSAGE_SIZE`] and [`MAX_ADDRS`].
pub fn connect_addrs<'a>(addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    // 3 bytes for `type`; each address costs its bytes plus a tag and a length prefix.
    let mut size = 3;
    for a in addrs {
        if is_relayed(a) || out.contains(a) || out.len() == MAX_ADDRS {
            continue;
        }
        let cost = a.len() + 1 + prost::length_delimiter_len(a.len());
        if size + cost > MAX_MESSAGE_SIZE {
            break;
        }
        size += cost;
        out.push(a.clone());
    }
    out
}

/// Checks and converts the protobuf bytes of one message (no length prefix).
///
/// # Errors
///
/// [`DecodeError`] for oversized input, bad protobuf or an unknown type.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let pb = HolePunch::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match HolePunchType::try_from(pb.r#type) {
        Ok(HolePunchType::Sync) => Ok(Message::Sync),
        Ok(HolePunchType::Connect) => {
            let mut addrs = Vec::new();
            for raw in pb.obs_addrs {
                if addrs.len() == MAX_ADDRS {
                    break;
                }
                match Multiaddr::try_from(raw) {
                    Ok(a) if !is_relayed(&a) => addrs.push(a),
                    Ok(a) => tracing::debug!(addr = %a, "dcutr: dropping a relayed address"),
                    Err(e) => tracing::debug!(error = %e, "dcutr: skipping an invalid address"),
                }
            }
            Ok(Message::Connect(addrs))
        }
        Err(_) => Err(DecodeError::UnknownType(pb.r#type)),
    }
}
