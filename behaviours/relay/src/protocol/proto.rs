//! The protobuf messages of circuit relay v2 exactly as they travel on the wire.
//!
//! The schema is the spec's (`relay/circuit-v2.md` in `libp2p/specs`), in the proto2 form that
//! rust-libp2p compiles (`libp2p-relay`'s `message.proto`): `type`, `Peer.id` and
//! `Reservation.expire` are `required`, so they are written even when zero (a `RESERVE`
//! request is the two bytes `08 00`), as rust-libp2p and go-libp2p (proto3 `optional`, which
//! also keeps presence) write them. Field numbers:
//!
//! - `HopMessage { type = 1, peer = 2, reservation = 3, limit = 4, status = 5 }`
//! - `StopMessage { type = 1, peer = 2, limit = 3, status = 4 }`
//! - `Peer { id = 1, addrs = 2 }`
//! - `Reservation { expire = 1, addrs = 2, voucher = 3 }`
//! - `Limit { duration = 1, data = 2 }`
//!
//! These structs carry no validation; the typed messages ([`super::HopRequest`],
//! [`super::HopResponse`], [`super::StopRequest`], [`super::StopResponse`]) are built from them
//! by the checked `decode_*` functions.

/// A message on a `/libp2p/circuit/relay/0.2.0/hop` stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HopMessage {
    /// [`HopMessageType`] (required).
    #[prost(enumeration = "HopMessageType", required, tag = "1")]
    pub r#type: i32,
    /// The destination of a `CONNECT`.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// The reservation granted by a `STATUS` answering `RESERVE`.
    #[prost(message, optional, tag = "3")]
    pub reservation: Option<Reservation>,
    /// The limits of relayed connections, in a `STATUS`.
    #[prost(message, optional, tag = "4")]
    pub limit: Option<Limit>,
    /// The outcome, in a `STATUS` ([`Status`]).
    #[prost(enumeration = "Status", optional, tag = "5")]
    pub status: Option<i32>,
}

/// `HopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum HopMessageType {
    /// Reserve a slot in the relay.
    Reserve = 0,
    /// Open a relayed connection to a peer.
    Connect = 1,
    /// The relay's answer.
    Status = 2,
}

/// A message on a `/libp2p/circuit/relay/0.2.0/stop` stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StopMessage {
    /// [`StopMessageType`] (required).
    #[prost(enumeration = "StopMessageType", required, tag = "1")]
    pub r#type: i32,
    /// The source of a `CONNECT`.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// The limits of the relayed connection, in a `CONNECT`.
    #[prost(message, optional, tag = "3")]
    pub limit: Option<Limit>,
    /// The outcome, in a `STATUS` ([`Status`]).
    #[prost(enumeration = "Status", optional, tag = "4")]
    pub status: Option<i32>,
}

/// `StopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StopMessageType {
    /// The relay announces a relayed connection from a peer.
    Connect = 0,
    /// The destination's answer.
    Status = 1,
}

/// A peer: its binary peer id and (for the deprecated active relay) addresses.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Peer {
    /// The binary peer id (a multihash; required).
    #[prost(bytes = "vec", required, tag = "1")]
    pub id: Vec<u8>,
    /// Binary multiaddresses.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// A granted reservation.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Reservation {
    /// Expiry as UTC UNIX seconds (required).
    #[prost(uint64, required, tag = "1")]
    pub expire: u64,
    /// The relay's public addresses, each ending in `/p2p/<relay>`.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
    /// The reservation voucher: a signed envelope (see the crate's `voucher` module).
    #[prost(bytes = "vec", optional, tag = "3")]
    pub voucher: Option<Vec<u8>>,
}

/// Limits of relayed connections.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Limit {
    /// Longest life of a relayed connection in seconds; `0` or absent means none.
    #[prost(uint32, optional, tag = "1")]
    pub duration: Option<u32>,
    /// Most bytes relayed; `0` or absent means none.
    #[prost(uint64, optional, tag = "2")]
    pub data: Option<u64>,
}

/// The outcome of a request, as numbered on the wire (proto2 has no zero value; proto3's
/// `UNUSED = 0` is never sent). Re-exported as [`crate::protocol::Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// `OK` (100): the request succeeded.
    Ok = 100,
    /// `RESERVATION_REFUSED` (200): the relay refuses the reservation.
    ReservationRefused = 200,
    /// `RESOURCE_LIMIT_EXCEEDED` (201): a limit of the relay (reservations, circuits, rate).
    ResourceLimitExceeded = 201,
    /// `PERMISSION_DENIED` (202): refused by the relay's access policy.
    PermissionDenied = 202,
    /// `CONNECTION_FAILED` (203): the relay could not reach the destination, or the
    /// destination could not take the connection.
    ConnectionFailed = 203,
    /// `NO_RESERVATION` (204): the destination has no reservation with the relay.
    NoReservation = 204,
    /// `MALFORMED_MESSAGE` (400): the request could not be decoded.
    MalformedMessage = 400,
    /// `UNEXPECTED_MESSAGE` (401): a message of the wrong type for the stream.
    UnexpectedMessage = 401,
}
