//! The client's exchanges on relay streams: RESERVE and CONNECT on `hop` streams we open,
//! the answer to a relay's CONNECT on a `stop` stream it opens.

use futures::AsyncWriteExt;
use meshwire_core::PeerId;
use meshwire_swarm::toolkit::FrameError;
use meshwire_swarm::Stream;
use meshwire_transport::Multiaddr;
use tokio::sync::mpsc::OwnedPermit;

use super::{CircuitError, InboundCircuit, ListenerEvent};
use crate::protocol::io::{
    read_hop_response, read_stop_request, write_hop_request, write_stop_response, ReadError,
};
use crate::protocol::{HopRequest, HopResponse, Limit, Status, StopResponse};
use crate::voucher::Voucher;

/// A reservation the relay granted.
#[derive(Debug)]
pub(super) struct Granted {
    /// Expiry, seconds since the Unix epoch.
    pub(super) expire: u64,
    /// The relay's own addresses, to build our relayed listen addresses from.
    pub(super) addrs: Vec<Multiaddr>,
    /// The relay's limit on each circuit.
    pub(super) limit: Option<Limit>,
}

fn write_error(relay: PeerId, e: FrameError) -> CircuitError {
    CircuitError::Stream {
        relay,
        error: e.to_string(),
    }
}

fn read_error(relay: PeerId, e: ReadError) -> CircuitError {
    match e {
        ReadError::Protocol(error) => CircuitError::Protocol { relay, error },
        other => CircuitError::Stream {
            relay,
            error: other.to_string(),
        },
    }
}

/// Asks `relay` for a reservation for `local` on a fresh `hop` stream.
pub(super) async fn reserve(
    mut stream: Stream,
    relay: PeerId,
    local: PeerId,
) -> Result<Granted, CircuitError> {
    write_hop_request(&mut stream, &HopRequest::Reserve)
        .await
        .map_err(|e| write_error(relay, e))?;
    let HopResponse {
        status,
        reservation,
        limit,
    } = read_hop_response(&mut stream)
        .await
        .map_err(|e| read_error(relay, e))?;
    let _ = stream.close().await;
    if status != Status::Ok {
        return Err(CircuitError::Refused { relay, status });
    }
    let reservation = reservation.ok_or(CircuitError::Protocol {
        relay,
        error: crate::protocol::ProtocolError::MissingField("reservation"),
    })?;
    if let Some(voucher) = &reservation.voucher {
        Voucher::verify(voucher, relay, local)
            .map_err(|error| CircuitError::BadVoucher { relay, error })?;
    }
    Ok(Granted {
        expire: reservation.expire,
        addrs: reservation.addrs,
        limit,
    })
}

/// Asks `relay` for a circuit to `dst` on a fresh `hop` stream; on success the stream is the
/// circuit (nothing past the relay's answer has been read from it).
pub(super) async fn connect(
    mut stream: Stream,
    relay: PeerId,
    dst: PeerId,
) -> Result<(Stream, Option<Limit>), CircuitError> {
    write_hop_request(&mut stream, &HopRequest::Connect { dst })
        .await
        .map_err(|e| write_error(relay, e))?;
    let response = read_hop_response(&mut stream)
        .await
        .map_err(|e| read_error(relay, e))?;
    if response.status != Status::Ok {
        return Err(CircuitError::Refused {
            relay,
            status: response.status,
        });
    }
    Ok((stream, response.limit))
}

/// What became of a relay's stop request.
pub(super) enum StopOutcome {
    /// Accepted and handed to the listener.
    Accepted { src: PeerId, limit: Option<Limit> },
    /// Refused with this status.
    Denied(Status),
}

/// Answers a relay's `stop` stream: reads its CONNECT and, with room at a listener
/// (`permit`), accepts it and hands the circuit over; otherwise answers the refusal.
pub(super) async fn answer_stop(
    mut stream: Stream,
    relay: PeerId,
    permit: Result<OwnedPermit<ListenerEvent>, Status>,
) -> Result<StopOutcome, CircuitError> {
    let request = match read_stop_request(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let Some(status) = e.status() else {
                return Err(read_error(relay, e));
            };
            refuse(&mut stream, status).await;
            return Ok(StopOutcome::Denied(status));
        }
    };
    let permit = match permit {
        Ok(p) => p,
        Err(status) => {
            refuse(&mut stream, status).await;
            return Ok(StopOutcome::Denied(status));
        }
    };
    write_stop_response(&mut stream, &StopResponse { status: Status::Ok })
        .await
        .map_err(|e| write_error(relay, e))?;
    let src = request.src;
    permit.send(ListenerEvent::Incoming(InboundCircuit { stream, src }));
    Ok(StopOutcome::Accepted {
        src,
        limit: request.limit,
    })
}

async fn refuse(stream: &mut Stream, status: Status) {
    let _ = write_stop_response(stream, &StopResponse { status }).await;
    let _ = stream.close().await;
}
