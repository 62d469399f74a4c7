//! AutoNAT v2 messages (`autonat/pb/autonat_v2.proto` of libp2p/specs) and their codec.
//!
//! Every message travels in one frame: an unsigned-varint length, then the protobuf bytes
//! (the swarm toolkit's `read_frame`/`write_frame`, the framing of rust-libp2p's
//! `prost-codec`). Frames on `/libp2p/autonat/2/dial-request` are at most [`MAX_MESSAGE`]
//! bytes, on `/libp2p/autonat/2/dial-back` at most [`MAX_DIAL_BACK_MESSAGE`] — the bounds of
//! rust-libp2p 0.57 — and the reader refuses a larger length before reading the body.
//! Decoders return a [`WireError`] for every byte string that is not the expected message.

use multiaddr::Multiaddr;
use prost::Message as _;

/// The dial-request protocol name.
pub const DIAL_REQUEST: &str = "/libp2p/autonat/2/dial-request";
/// The dial-back protocol name.
pub const DIAL_BACK: &str = "/libp2p/autonat/2/dial-back";

/// The largest frame on the dial-request stream (rust-libp2p's bound: a 4096-byte data chunk
/// and its envelope fit).
pub const MAX_MESSAGE: usize = 4104;
/// The largest frame on the dial-back stream (a `DialBack` with a `u64::MAX` nonce is 9).
pub const MAX_DIAL_BACK_MESSAGE: usize = 10;
/// The largest `data` field of one `DialDataResponse` the client sends (the spec's 4096).
pub const MAX_DATA_CHUNK: usize = 4096;
/// The least dial data a server may ask for (the spec's 30,000 bytes).
pub const MIN_DIAL_DATA: u64 = 30_000;
/// The most dial data a server may ask for (the spec's 100,000 bytes).
pub const MAX_DIAL_DATA: u64 = 100_000;

/// The protobuf messages, field for field as in the spec's `.proto`.
pub(crate) mod proto {
    /// The envelope of every dial-request stream message.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(oneof = "message::Msg", tags = "1, 2, 3, 4")]
        pub msg: Option<message::Msg>,
    }

    pub mod message {
        /// The message carried.
        #[allow(clippy::enum_variant_names)]
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Msg {
            #[prost(message, tag = "1")]
            DialRequest(super::DialRequest),
            #[prost(message, tag = "2")]
            DialResponse(super::DialResponse),
            #[prost(message, tag = "3")]
            DialDataRequest(super::DialDataRequest),
            #[prost(message, tag = "4")]
            DialDataResponse(super::DialDataResponse),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialRequest {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub addrs: Vec<Vec<u8>>,
        #[prost(fixed64, tag = "2")]
        pub nonce: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialDataRequest {
        #[prost(uint32, tag = "1")]
        pub addr_idx: u32,
        #[prost(uint64, tag = "2")]
        pub num_bytes: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialResponse {
        #[prost(int32, tag = "1")]
        pub status: i32,
        #[prost(uint32, tag = "2")]
        pub addr_idx: u32,
        #[prost(int32, tag = "3")]
        pub dial_status: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialDataResponse {
        #[prost(bytes = "vec", tag = "1")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialBack {
        #[prost(fixed64, tag = "1")]
        pub nonce: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DialBackResponse {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }
}

/// Why bytes are not the expected message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not protobuf of the expected shape.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A message of another kind than the stream's step expects.
    #[error("unexpected message: expected {expected}")]
    Unexpected {
        /// What the step expects.
        expected: &'static str,
    },
    /// An address is not a multiaddr.
    #[error("address {index} is not a multiaddr")]
    InvalidAddress {
        /// Its position in the request.
        index: usize,
    },
    /// A `DialResponse.status` outside the spec's values.
    #[error("unknown response status {0}")]
    UnknownStatus(i32),
    /// A `DialResponse.dialStatus` outside the spec's values.
    #[error("unknown dial status {0}")]
    UnknownDialStatus(i32),
    /// A `DialBackResponse.status` other than OK.
    #[error("unknown dial-back status {0}")]
    UnknownDialBackStatus(i32),
    /// A data chunk larger than [`MAX_DATA_CHUNK`].
    #[error("dial data chunk of {0} bytes")]
    ChunkTooLarge(usize),
}

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        WireError::Protobuf(e.to_string())
    }
}

/// `DialResponse.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// `E_INTERNAL_ERROR` (0).
    InternalError,
    /// `E_REQUEST_REJECTED` (100): the server will not serve this request (limits).
    RequestRejected,
    /// `E_DIAL_REFUSED` (101): the server will dial none of the addresses.
    DialRefused,
    /// `OK` (200): an address was dialed; `dial_status` tells how it went.
    Ok,
}

impl ResponseStatus {
    fn to_i32(self) -> i32 {
        match self {
            ResponseStatus::InternalError => 0,
            ResponseStatus::RequestRejected => 100,
            ResponseStatus::DialRefused => 101,
            ResponseStatus::Ok => 200,
        }
    }

    fn from_i32(v: i32) -> Result<Self, WireError> {
        Ok(match v {
            0 => ResponseStatus::InternalError,
            100 => ResponseStatus::RequestRejected,
            101 => ResponseStatus::DialRefused,
            200 => ResponseStatus::Ok,
            other => return Err(WireError::UnknownStatus(other)),
        })
    }
}

/// `DialResponse.dialStatus`: what became of the dial-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialStatus {
    /// `UNUSED` (0): no dial was made.
    Unused,
    /// `E_DIAL_ERROR` (100): no connection to the address.
    DialError,
    /// `E_DIAL_BACK_ERROR` (101): connected, but the dial-back stream failed.
    DialBackError,
    /// `OK` (200): the dial-back nonce was delivered.
    Ok,
}

impl DialStatus {
    fn to_i32(self) -> i32 {
        match self {
            DialStatus::Unused => 0,
            DialStatus::DialError => 100,
            DialStatus::DialBackError => 101,
            DialStatus::Ok => 200,
        }
    }

    fn from_i32(v: i32) -> Result<Self, WireError> {
        Ok(match v {
            0 => DialStatus::Unused,
            100 => DialStatus::DialError,
            101 => DialStatus::DialBackError,
            200 => DialStatus::Ok,
            other => return Err(WireError::UnknownDialStatus(other)),
        })
    }
}

/// A message from client to server on the dial-request stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `DialRequest`: the addresses to test, in order of preference, and the nonce the
    /// dial-back must carry.
    DialRequest {
        /// Addresses, in order of preference.
        addrs: Vec<Multiaddr>,
        /// The nonce.
        nonce: u64,
    },
    /// `DialDataResponse`: a chunk of dial data; only its length matters (the bytes are
    /// zeros when we send).
    DialData {
        /// Bytes in the chunk (at most [`MAX_DATA_CHUNK`]).
        len: usize,
    },
}

/// A message from server to client on the dial-request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// `DialDataRequest`: "send this many bytes before I dial address `addr_idx`".
    DialDataRequest {
        /// Index of the address the server will dial.
        addr_idx: u32,
        /// Bytes asked for.
        num_bytes: u64,
    },
    /// `DialResponse`: the outcome.
    DialResponse {
        /// Whether the request was served.
        status: ResponseStatus,
        /// Index of the address dialed (meaningful when `status` is OK).
        addr_idx: u32,
        /// What became of the dial-back.
        dial_status: DialStatus,
    },
}

impl ClientMessage {
    /// The protobuf bytes (without the frame's length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let msg = match self {
            ClientMessage::DialRequest { addrs, nonce } => {
                proto::message::Msg::DialRequest(proto::DialRequest {
                    addrs: addrs.iter().map(|a| a.to_vec()).collect(),
                    nonce: *nonce,
                })
            }
            ClientMessage::DialData { len } => {
                proto::message::Msg::DialDataResponse(proto::DialDataResponse {
                    data: vec![0; (*len).min(MAX_DATA_CHUNK)],
                })
            }
        };
        proto::Message { msg: Some(msg) }.encode_to_vec()
    }

    /// Decodes a client message. The bytes are one frame, so at most [`MAX_MESSAGE`] long;
    /// nothing is allocated beyond them.
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything but a `DialRequest` with valid multiaddrs or a
    /// `DialDataResponse` of at most [`MAX_DATA_CHUNK`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match proto::Message::decode(bytes)?.msg {
            Some(proto::message::Msg::DialRequest(r)) => {
                let addrs = r
                    .addrs
                    .into_iter()
                    .enumerate()
                    .map(|(index, a)| {
                        Multiaddr::try_from(a).map_err(|_| WireError::InvalidAddress { index })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ClientMessage::DialRequest {
                    addrs,
                    nonce: r.nonce,
                })
            }
            Some(proto::message::Msg::DialDataResponse(d)) => {
                if d.data.len() > MAX_DATA_CHUNK {
                    return Err(WireError::ChunkTooLarge(d.data.len()));
                }
                Ok(ClientMessage::DialData { len: d.data.len() })
            }
            _ => Err(WireError::Unexpected {
                expected: "DialRequest or DialDataResponse",
            }),
        }
    }
}

impl ServerMessage {
    /// The protobuf bytes (without the frame's length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let msg = match *self {
            ServerMessage::DialDataRequest {
                addr_idx,
                num_bytes,
            } => proto::message::Msg::DialDataRequest(proto::DialDataRequest {
                addr_idx,
                num_bytes,
            }),
            ServerMessage::DialResponse {
                status,
                addr_idx,
                dial_status,
            } => proto::message::Msg::DialResponse(proto::DialResponse {
                status: status.to_i32(),
                addr_idx,
                dial_status: dial_status.to_i32(),
            }),
        };
        proto::Message { msg: Some(msg) }.encode_to_vec()
    }

    /// Decodes a server message.
    ///
    /// # Errors
    ///
    /// [`WireError`] for anything but a `DialDataRequest` or a `DialResponse` with known
    /// status values.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match proto::Message::decode(bytes)?.msg {
            Some(proto::message::Msg::DialDataRequest(r)) => Ok(ServerMessage::DialDataRequest {
                addr_idx: r.addr_idx,
                num_bytes: r.num_bytes,
            }),
            Some(proto::message::Msg::DialResponse(r)) => Ok(ServerMessage::DialResponse {
                status: ResponseStatus::from_i32(r.status)?,
                addr_idx: r.addr_idx,
                dial_status: DialStatus::from_i32(r.dial_status)?,
            }),
            _ => Err(WireError::Unexpected {
                expected: "DialDataRequest or DialResponse",
            }),
        }
    }
}

/// `DialBack` bytes: the nonce of the request being answered.
pub fn encode_dial_back(nonce: u64) -> Vec<u8> {
    proto::DialBack { nonce }.encode_to_vec()
}

/// Decodes a `DialBack` and returns its nonce.
///
/// # Errors
///
/// [`WireError::Protobuf`] for bytes that are not a `DialBack`.
pub fn decode_dial_back(bytes: &[u8]) -> Result<u64, WireError> {
    Ok(proto::DialBack::decode(bytes)?.nonce)
}

/// `DialBackResponse` bytes with status OK (the only status; it encodes as zero bytes).
pub fn encode_dial_back_response() -> Vec<u8> {
    proto::DialBackResponse { status: 0 }.encode_to_vec()
}

/// Decodes a `DialBackResponse`.
///
/// # Errors
///
/// [`WireError`] for bytes that are not a `DialBackResponse` or a status other than OK.
pub fn decode_dial_back_response(bytes: &[u8]) -> Result<(), WireError> {
    match proto::DialBackResponse::decode(bytes)?.status {
        0 => Ok(()),
        other => Err(WireError::UnknownDialBackStatus(other)),
    }
}
