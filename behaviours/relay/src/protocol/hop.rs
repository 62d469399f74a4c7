//! Typed messages of the hop protocol and their codecs.

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use prost::Message as _;

use super::proto::{self, HopMessageType};
use super::{
    check_addr_count, check_size, peer_from_wire, peer_to_wire, status_from_wire, Limit,
    ProtocolError, Status, MAX_ADDRS, MAX_MESSAGE_SIZE,
};

/// Field numbers of `HopMessage.peer` and `HopMessage.reservation`, whose `addrs` are counted.
const HOP_ADDR_FIELDS: [u32; 2] = [2, 3];

/// What a client asks a relay on a hop stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopRequest {
    /// Reserve a slot: the relay will accept relayed connections to us (`type = RESERVE`).
    Reserve,
    /// Open a relayed connection to `dst` (`type = CONNECT`, `peer = { id = dst }`). The
    /// deprecated active-relay addresses are neither sent nor read.
    Connect {
        /// The destination.
        dst: PeerId,
    },
}

/// A granted reservation, in a [`HopResponse`] to [`HopRequest::Reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationInfo {
    /// When the reservation ends, as UTC UNIX seconds; the client renews before.
    pub expire: u64,
    /// The relay's public addresses, each ending in `/p2p/<relay>`; the client advertises
    /// `<addr>/p2p-circuit/p2p/<client>`. rust-libp2p's client refuses a reservation with no
    /// address.
    pub addrs: Vec<Multiaddr>,
    /// The reservation voucher (a signed envelope: see the crate's `voucher` module), raw.
    pub voucher: Option<Vec<u8>>,
}

/// A relay's answer on a hop stream (`type = STATUS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopResponse {
    /// The outcome.
    pub status: Status,
    /// The reservation, with `OK` to a `RESERVE`.
    pub reservation: Option<ReservationInfo>,
    /// The limits of relayed connections, with `OK`; `None` means unlimited.
    pub limit: Option<Limit>,
}

impl HopResponse {
    /// A refusal: `status` alone.
    pub fn refused(status: Status) -> Self {
        HopResponse {
            status,
            reservation: None,
            limit: None,
        }
    }

    /// `OK` to a `RESERVE`.
    pub fn reserved(reservation: ReservationInfo, limit: Option<Limit>) -> Self {
        HopResponse {
            status: Status::Ok,
            reservation: Some(reservation),
            limit,
        }
    }

    /// `OK` to a `CONNECT`: the stream now carries the relayed connection.
    pub fn connected(limit: Option<Limit>) -> Self {
        HopResponse {
            status: Status::Ok,
            reservation: None,
            limit,
        }
    }
}

/// The body of a hop request.
pub fn encode_hop_request(request: &HopRequest) -> Vec<u8> {
    let message = match request {
        HopRequest::Reserve => proto::HopMessage {
            r#type: HopMessageType::Reserve as i32,
            peer: None,
            reservation: None,
            limit: None,
            status: None,
        },
        HopRequest::Connect { dst } => proto::HopMessage {
            r#type: HopMessageType::Connect as i32,
            peer: Some(peer_to_wire(dst)),
            reservation: None,
            limit: None,
            status: None,
        },
    };
    message.encode_to_vec()
}

/// Decodes the body of a hop request (the relay's side).
///
/// # Errors
///
/// [`ProtocolError::Unexpected`] for a `STATUS`; [`ProtocolError::MissingField`] /
/// [`ProtocolError::InvalidPeerId`] for a `CONNECT` without a valid destination; the bound and
/// decoding errors of the module.
pub fn decode_hop_request(body: &[u8]) -> Result<HopRequest, ProtocolError> {
    let message = decode_hop(body)?;
    match message_type(message.r#type)? {
        HopMessageType::Reserve => Ok(HopRequest::Reserve),
        HopMessageType::Connect => Ok(HopRequest::Connect {
            dst: peer_from_wire(message.peer)?,
        }),
        HopMessageType::Status => Err(ProtocolError::Unexpected {
            got: "STATUS",
            stream: "inbound hop",
        }),
    }
}

/// The body of a hop response. Reservation addresses past [`MAX_ADDRS`], or past what fits
/// in [`MAX_MESSAGE_SIZE`], are left out (the first ones are kept), so the body is always one
/// a peer accepts.
pub fn encode_hop_response(response: &HopResponse) -> Vec<u8> {
    let mut message = proto::HopMessage {
        r#type: HopMessageType::Status as i32,
        peer: None,
        reservation: response.reservation.as_ref().map(|r| proto::Reservation {
            expire: r.expire,
            addrs: r.addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect(),
            voucher: r.voucher.clone(),
        }),
        limit: response.limit.map(Limit::to_wire),
        status: Some(response.status.code()),
    };
    while message.encoded_len() > MAX_MESSAGE_SIZE {
        let dropped = message
            .reservation
            .as_mut()
            .and_then(|r| r.addrs.pop())
            .is_some();
        if !dropped {
            // Only an oversized voucher is left; send the reservation without it rather than
            // a message no peer reads.
            if let Some(r) = message.reservation.as_mut() {
                r.voucher = None;
            }
            break;
        }
    }
    message.encode_to_vec()
}

/// Decodes the body of a hop response (the client's side).
///
/// # Errors
///
/// [`ProtocolError::Unexpected`] for a `RESERVE` or `CONNECT`; [`ProtocolError::MissingField`]
/// without a status; [`ProtocolError::UnknownStatus`]; the bound and decoding errors of the
/// module.
pub fn decode_hop_response(body: &[u8]) -> Result<HopResponse, ProtocolError> {
    let message = decode_hop(body)?;
    let got = match message_type(message.r#type)? {
        HopMessageType::Status => None,
        HopMessageType::Reserve => Some("RESERVE"),
        HopMessageType::Connect => Some("CONNECT"),
    };
    if let Some(got) = got {
        return Err(ProtocolError::Unexpected {
            got,
            stream: "outbound hop",
        });
    }
    let status = status_from_wire(message.status)?;
    let reservation = message.reservation.map(|r| ReservationInfo {
        expire: r.expire,
        addrs: r
            .addrs
            .into_iter()
            .filter_map(|raw| match Multiaddr::try_from(raw) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::debug!(error = %e, "dropping an undecodable reservation address");
                    None
                }
            })
            .collect(),
        voucher: r.voucher,
    });
    Ok(HopResponse {
        status,
        reservation,
        limit: message.limit.map(Limit::from_wire),
    })
}

/// Checks the bounds of a hop body and decodes it.
fn decode_hop(body: &[u8]) -> Result<proto::HopMessage, ProtocolError> {
    check_size(body)?;
    check_addr_count(body, &HOP_ADDR_FIELDS)?;
    Ok(proto::HopMessage::decode(body)?)
}

/// The typed `HopMessage.type`.
fn message_type(value: i32) -> Result<HopMessageType, ProtocolError> {
    HopMessageType::try_from(value).map_err(|_| ProtocolError::UnknownType(value))
}
