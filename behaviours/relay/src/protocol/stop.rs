//! Typed messages of the stop protocol and their codecs.

use meshwire_core::PeerId;
use prost::Message as _;

use super::proto::{self, StopMessageType};
use super::{
    check_addr_count, check_size, peer_from_wire, peer_to_wire, status_from_wire, Limit,
    ProtocolError, Status,
};

/// Field number of `StopMessage.peer`, whose `addrs` are counted.
const STOP_ADDR_FIELDS: [u32; 1] = [2];

/// A relay's announcement of a relayed connection to its destination (`type = CONNECT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRequest {
    /// The peer that asked for the connection.
    pub src: PeerId,
    /// The limits the relay applies to it; `None` means unlimited.
    pub limit: Option<Limit>,
}

/// The destination's answer to a [`StopRequest`] (`type = STATUS`). With `OK` the stream
/// carries the relayed connection from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopResponse {
    /// The outcome.
    pub status: Status,
}

/// The body of a stop request.
pub fn encode_stop_request(request: &StopRequest) -> Vec<u8> {
    proto::StopMessage {
        r#type: StopMessageType::Connect as i32,
        peer: Some(peer_to_wire(&request.src)),
        limit: request.limit.map(Limit::to_wire),
        status: None,
    }
    .encode_to_vec()
}

/// Decodes the body of a stop request (the destination's side).
///
/// # Errors
///
/// [`ProtocolError::Unexpected`] for a `STATUS`; [`ProtocolError::MissingField`] /
/// [`ProtocolError::InvalidPeerId`] without a valid source; the bound and decoding errors of
/// the module.
pub fn decode_stop_request(body: &[u8]) -> Result<StopRequest, ProtocolError> {
    let message = decode_stop(body)?;
    match message_type(message.r#type)? {
        StopMessageType::Connect => Ok(StopRequest {
            src: peer_from_wire(message.peer)?,
            limit: message.limit.map(Limit::from_wire),
        }),
        StopMessageType::Status => Err(ProtocolError::Unexpected {
            got: "STATUS",
            stream: "inbound stop",
        }),
    }
}

/// The body of a stop response.
pub fn encode_stop_response(response: &StopResponse) -> Vec<u8> {
    proto::StopMessage {
        r#type: StopMessageType::Status as i32,
        peer: None,
        limit: None,
        status: Some(response.status.code()),
    }
    .encode_to_vec()
}

/// Decodes the body of a stop response (the relay's side).
///
/// # Errors
///
/// [`ProtocolError::Unexpected`] for a `CONNECT`; [`ProtocolError::MissingField`] without a
/// status; [`ProtocolError::UnknownStatus`]; the bound and decoding errors of the module.
pub fn decode_stop_response(body: &[u8]) -> Result<StopResponse, ProtocolError> {
    let message = decode_stop(body)?;
    match message_type(message.r#type)? {
        StopMessageType::Status => Ok(StopResponse {
            status: status_from_wire(message.status)?,
        }),
        StopMessageType::Connect => Err(ProtocolError::Unexpected {
            got: "CONNECT",
            stream: "outbound stop",
        }),
    }
}

/// Checks the bounds of a stop body and decodes it.
fn decode_stop(body: &[u8]) -> Result<proto::StopMessage, ProtocolError> {
    check_size(body)?;
    check_addr_count(body, &STOP_ADDR_FIELDS)?;
    Ok(proto::StopMessage::decode(body)?)
}

/// The typed `StopMessage.type`.
fn message_type(value: i32) -> Result<StopMessageType, ProtocolError> {
    StopMessageType::try_from(value).map_err(|_| ProtocolError::UnknownType(value))
}
