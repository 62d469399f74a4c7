//! The circuit relay v2 wire protocol: `/libp2p/circuit/relay/0.2.0/hop` and `.../stop`.
//!
//! Each exchange is one or two protobuf messages, each framed by an unsigned-varint length
//! (read them with `meshwire_swarm::toolkit::read_frame(io, MAX_MESSAGE_SIZE)`, or the helpers
//! of the `io` module with feature `swarm`). This module holds the body codecs:
//!
//! | stream | request (opener → other side) | response |
//! | --- | --- | --- |
//! | hop (client → relay) | [`HopRequest`]: [`encode_hop_request`] / [`decode_hop_request`] | [`HopResponse`]: [`encode_hop_response`] / [`decode_hop_response`] |
//! | stop (relay → destination) | [`StopRequest`]: [`encode_stop_request`] / [`decode_stop_request`] | [`StopResponse`]: [`encode_stop_response`] / [`decode_stop_response`] |
//!
//! After an `OK` to a hop `CONNECT` (and to a stop `CONNECT`), the stream carries the relayed
//! connection's bytes; the frame readers consume nothing past the message.
//!
//! ```
//! use meshwire_core::PeerId;
//! use meshwire_relay::protocol::*;
//!
//! let dst = PeerId::random();
//! let body = encode_hop_request(&HopRequest::Connect { dst });
//! assert_eq!(decode_hop_request(&body).unwrap(), HopRequest::Connect { dst });
//!
//! // A RESERVE is the required `type` field, written although it is 0.
//! assert_eq!(encode_hop_request(&HopRequest::Reserve), [0x08, 0x00]);
//!
//! // A response arriving on the request side is a typed error that maps to the status to
//! // answer with.
//! let refused = encode_hop_response(&HopResponse::refused(Status::NoReservation));
//! let err = decode_hop_request(&refused).unwrap_err();
//! assert_eq!(err.status(), Status::UnexpectedMessage);
//! ```
//!
//! # Decoding hostile bytes
//!
//! Every decoder refuses a body over [`MAX_MESSAGE_SIZE`] (4096 bytes, rust-libp2p's
//! `MAX_MESSAGE_SIZE` and go-libp2p's `maxMessageSize`), counts the repeated address fields of
//! the whole message before decoding anything and refuses more than [`MAX_ADDRS`], parses every
//! peer id, and returns a typed [`ProtocolError`]; [`ProtocolError::status`] is the status a
//! relay answers with (`UNEXPECTED_MESSAGE` for a message of the wrong type for the stream,
//! `MALFORMED_MESSAGE` for everything else). Reservation addresses that are not valid
//! multiaddresses are dropped (logged at `debug`), so one odd address from a newer
//! implementation does not void a reservation. As in rust-libp2p and go-libp2p, a missing
//! `type` reads as its zero value (`RESERVE` on a hop stream, `CONNECT` on a stop stream), and
//! unknown fields are skipped.

use std::fmt;
use std::time::Duration;

use meshwire_core::{IdentityError, PeerId};
use thiserror::Error;

mod hop;
#[cfg(feature = "swarm")]
pub mod io;
pub mod proto;
mod stop;
#[cfg(test)]
mod tests;

pub use self::hop::{
    decode_hop_request, decode_hop_response, encode_hop_request, encode_hop_response, HopRequest,
    HopResponse, ReservationInfo,
};
pub use self::proto::Status;
pub use self::stop::{
    decode_stop_request, decode_stop_response, encode_stop_request, encode_stop_response,
    StopRequest, StopResponse,
};

/// The hop protocol: clients ask a relay for reservations and relayed connections.
pub const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// The stop protocol: a relay hands a relayed connection to its destination.
pub const STOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/stop";

/// Largest message body accepted or sent, length prefix excluded: 4096 bytes, as
/// rust-libp2p's `MAX_MESSAGE_SIZE` and go-libp2p's `maxMessageSize`.
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Most addresses in one message (the `addrs` of its `Peer` and `Reservation` together): 64.
/// A decoded message with more is refused before anything is allocated for them; an encoded
/// reservation keeps its first addresses up to this count and [`MAX_MESSAGE_SIZE`].
pub const MAX_ADDRS: usize = 64;

impl Status {
    /// The wire value (100 for `OK`, ...).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status of a wire value, or `None` for a value the spec does not define.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::try_from(code).ok()
    }

    /// The spec's name: `OK`, `RESERVATION_REFUSED`, ... (used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::ReservationRefused => "RESERVATION_REFUSED",
            Status::ResourceLimitExceeded => "RESOURCE_LIMIT_EXCEEDED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::ConnectionFailed => "CONNECTION_FAILED",
            Status::NoReservation => "NO_RESERVATION",
            Status::MalformedMessage => "MALFORMED_MESSAGE",
            Status::UnexpectedMessage => "UNEXPECTED_MESSAGE",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits a relay applies to a relayed connection, as sent in `HopMessage.limit` and
/// `StopMessage.limit`. On the wire, an absent field and `0` both mean "no limit";
/// [`Limit::duration_limit`] and [`Limit::data_limit`] read them that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Limit {
    /// Longest life of the relayed connection, in seconds.
    pub duration: Option<u32>,
    /// Most bytes relayed. rust-libp2p counts both directions together against it (and so
    /// does meshwire's relay, see `circuit`); the spec and go-libp2p apply it to each
    /// direction.
    pub data: Option<u64>,
}

impl Limit {
    /// The limit of a relay whose circuits live at most `duration` and carry at most `bytes`;
    /// `None` when both are unlimited (the message then carries no `limit`). A duration is
    /// sent in whole seconds, rounded up (so a sub-second limit is not sent as `0`, which
    /// would read as "none") and capped at `u32::MAX`.
    pub fn from_limits(duration: Option<Duration>, bytes: Option<u64>) -> Option<Limit> {
        if duration.is_none() && bytes.is_none() {
            return None;
        }
        let duration = duration.map(|d| {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        });
        Some(Limit {
            duration,
            data: bytes,
        })
    }

    /// The duration limit, `None` if there is none (absent or `0`).
    pub fn duration_limit(&self) -> Option<Duration> {
        self.duration
            .filter(|&s| s > 0)
            .map(|s| Duration::from_secs(s.into()))
    }

    /// The data limit in bytes, `None` if there is none (absent or `0`).
    pub fn data_limit(&self) -> Option<u64> {
        self.data.filter(|&d| d > 0)
    }

    fn to_wire(self) -> proto::Limit {
        proto::Limit {
            duration: self.duration,
            data: self.data,
        }
    }

    fn from_wire(l: proto::Limit) -> Limit {
        Limit {
            duration: l.duration,
            data: l.data,
        }
    }
}

/// Why a message could not be decoded. [`ProtocolError::status`] is the status to answer with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The body is longer than [`MAX_MESSAGE_SIZE`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf message of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message holds more addresses than [`MAX_ADDRS`].
    #[error("{count} addresses exceed the limit of {max}")]
    TooManyAddrs {
        /// Addresses found (counting stops one past the limit).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The `type` field holds a value the spec does not define.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// The `status` field holds a value the spec does not define.
    #[error("unknown status code {0}")]
    UnknownStatus(i32),
    /// A field the message type needs is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A peer id does not parse.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(#[from] IdentityError),
    /// A message of a type that does not belong in this direction of this stream (a `STATUS`
    /// where a request is expected, or a request where a `STATUS` is expected).
    #[error("unexpected {got} message on a {stream} stream")]
    Unexpected {
        /// The type received (`RESERVE`, `CONNECT`, `STATUS`).
        got: &'static str,
        /// The stream and side (`inbound hop`, `outbound hop`, `inbound stop`, `outbound stop`).
        stream: &'static str,
    },
}

impl ProtocolError {
    /// The status a relay (or destination) answers a request with after this error:
    /// `UNEXPECTED_MESSAGE` for [`ProtocolError::Unexpected`], `MALFORMED_MESSAGE` otherwise.
    pub fn status(&self) -> Status {
        match self {
            ProtocolError::Unexpected { .. } => Status::UnexpectedMessage,
            _ => Status::MalformedMessage,
        }
    }
}

impl From<prost::DecodeError> for ProtocolError {
    fn from(e: prost::DecodeError) -> Self {
        ProtocolError::Malformed(e.to_string())
    }
}

/// Refuses a body longer than [`MAX_MESSAGE_SIZE`].
fn check_size(body: &[u8]) -> Result<(), ProtocolError> {
    if body.len() > MAX_MESSAGE_SIZE {
        return Err(ProtocolError::TooLarge {
            len: body.len(),
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(())
}

/// Field number of `addrs` in both `Peer` and `Reservation`.
const ADDRS_FIELD: u32 = 2;

/// Counts the `addrs` entries inside every occurrence of the embedded-message fields
/// `nested` of the message `body` (protobuf merges repeated occurrences of an embedded
/// message, so all count) and refuses more than [`MAX_ADDRS`], before the message is decoded.
fn check_addr_count(body: &[u8], nested: &[u32]) -> Result<(), ProtocolError> {
    let mut count = 0usize;
    walk_fields(body, |field, value| {
        if let (true, FieldValue::Bytes(inner)) = (nested.contains(&field), value) {
            walk_fields(inner, |field, value| {
                if field == ADDRS_FIELD && matches!(value, FieldValue::Bytes(_)) {
                    count += 1;
                    if count > MAX_ADDRS {
                        return Err(ProtocolError::TooManyAddrs {
                            count,
                            max: MAX_ADDRS,
                        });
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

/// The value of one protobuf field, as far as [`walk_fields`] tells them apart.
enum FieldValue<'a> {
    /// A length-delimited value (bytes, string, embedded message).
    Bytes(&'a [u8]),
    /// A varint or fixed-width value.
    Scalar,
}

/// Calls `f` with each field number and value of the protobuf message `buf`. Groups (wire
/// types 3 and 4, deprecated and sent by no libp2p implementation) are refused as malformed.
fn walk_fields<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, FieldValue<'a>) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf)?;
        let field = u32::try_from(key >> 3)
            .map_err(|_| ProtocolError::Malformed("field number out of range".into()))?;
        match key & 0x7 {
            0 => {
                prost::encoding::decode_varint(&mut buf)?;
                f(field, FieldValue::Scalar)?;
            }
            1 | 5 => {
                let width = if key & 0x7 == 1 { 8 } else { 4 };
                buf = buf
                    .get(width..)
                    .ok_or_else(|| ProtocolError::Malformed("truncated fixed field".into()))?;
                f(field, FieldValue::Scalar)?;
            }
            2 => {
                let len = prost::encoding::decode_varint(&mut buf)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= buf.len())
                    .ok_or_else(|| ProtocolError::Malformed("truncated field".into()))?;
                let (value, rest) = buf.split_at(len);
                buf = rest;
                f(field, FieldValue::Bytes(value))?;
            }
            _ => return Err(ProtocolError::Malformed("unsupported wire type".into())),
        }
    }
    Ok(())
}

/// Parses the required `id` of a `Peer`.
fn peer_from_wire(peer: Option<proto::Peer>) -> Result<PeerId, ProtocolError> {
    let peer = peer.ok_or(ProtocolError::MissingField("peer"))?;
    Ok(PeerId::from_bytes(&peer.id)?)
}

/// A `Peer` naming `id`, without addresses.
fn peer_to_wire(id: &PeerId) -> proto::Peer {
    proto::Peer {
        id: id.to_bytes(),
        addrs: Vec::new(),
    }
}

/// The typed status of an optional wire status.
fn status_from_wire(status: Option<i32>) -> Result<Status, ProtocolError> {
    let code = status.ok_or(ProtocolError::MissingField("status"))?;
    Status::from_code(code).ok_or(ProtocolError::UnknownStatus(code))
}
