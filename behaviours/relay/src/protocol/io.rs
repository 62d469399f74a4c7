//! Reading and writing whole relay messages on a stream (feature `swarm`): one
//! length-prefixed frame of at most [`MAX_MESSAGE_SIZE`] bytes each, through
//! `meshwire_swarm::toolkit`'s frame reader, which consumes nothing past the frame (so after
//! an `OK` the stream's next byte is the relayed connection's first).
//!
//! The helpers set no time limit: wrap them in `toolkit::with_timeout` (rust-libp2p gives each
//! exchange 10 s, go-libp2p one minute).
//!
//! ```
//! use meshwire_relay::protocol::io::{read_hop_request, write_hop_request};
//! use meshwire_relay::protocol::HopRequest;
//!
//! # futures::executor::block_on(async {
//! let mut wire = Vec::new();
//! write_hop_request(&mut wire, &HopRequest::Reserve).await.unwrap();
//! assert_eq!(wire, [2, 0x08, 0x00]);
//! let mut input = futures::io::Cursor::new(wire);
//! assert_eq!(read_hop_request(&mut input).await.unwrap(), HopRequest::Reserve);
//! # });
//! ```

use futures::{AsyncRead, AsyncWrite};
use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError};
use thiserror::Error;

use super::{
    decode_hop_request, decode_hop_response, decode_stop_request, decode_stop_response,
    encode_hop_request, encode_hop_response, encode_stop_request, encode_stop_response, HopRequest,
    HopResponse, ProtocolError, Status, StopRequest, StopResponse, MAX_MESSAGE_SIZE,
};

/// Why a message could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The stream ended before the message started.
    #[error("stream closed before the message")]
    Closed,
    /// The frame could not be read (too large, truncated, stream error, ...).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame is not a valid message for this side of the stream.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl ReadError {
    /// The status to answer a request with after this error, if one can still be sent:
    /// [`ProtocolError::status`] for a bad message, `MALFORMED_MESSAGE` for an oversized
    /// frame, and `None` when the stream failed or ended.
    pub fn status(&self) -> Option<Status> {
        match self {
            ReadError::Protocol(e) => Some(e.status()),
            ReadError::Frame(FrameError::TooLarge { .. } | FrameError::InvalidPrefix) => {
                Some(Status::MalformedMessage)
            }
            _ => None,
        }
    }
}

/// Reads one frame and decodes it with `decode`.
async fn read_message<S, T>(
    io: &mut S,
    decode: fn(&[u8]) -> Result<T, ProtocolError>,
) -> Result<T, ReadError>
where
    S: AsyncRead + Unpin,
{
    let body = read_frame(io, MAX_MESSAGE_SIZE)
        .await?
        .ok_or(ReadError::Closed)?;
    Ok(decode(&body)?)
}

/// Reads a [`HopRequest`] (the relay's side of a hop stream).
///
/// # Errors
///
/// [`ReadError`]; [`ReadError::status`] tells what to answer.
pub async fn read_hop_request<S: AsyncRead + Unpin>(io: &mut S) -> Result<HopRequest, ReadError> {
    read_message(io, decode_hop_request).await
}

/// Writes a [`HopRequest`] and flushes.
///
/// # Errors
///
/// The stream's error.
pub async fn write_hop_request<S: AsyncWrite + Unpin>(
    io: &mut S,
    request: &HopRequest,
) -> Result<(), FrameError> {
    write_frame(io, &encode_hop_request(request)).await
}

/// Reads a [`HopResponse`] (the client's side of a hop stream).
///
/// # Errors
///
/// [`ReadError`].
pub async fn read_hop_response<S: AsyncRead + Unpin>(io: &mut S) -> Result<HopResponse, ReadError> {
    read_message(io, decode_hop_response).await
}

/// Writes a [`HopResponse`] and flushes.
///
/// # Errors
///
/// The stream's error.
pub async fn write_hop_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &HopResponse,
) -> Result<(), FrameError> {
    write_frame(io, &encode_hop_response(response)).await
}

/// Reads a [`StopRequest`] (the destination's side of a stop stream).
///
/// # Errors
///
/// [`ReadError`]; [`ReadError::status`] tells what to answer.
pub async fn read_stop_request<S: AsyncRead + Unpin>(io: &mut S) -> Result<StopRequest, ReadError> {
    read_message(io, decode_stop_request).await
}

/// Writes a [`StopRequest`] and flushes.
///
/// # Errors
///
/// The stream's error.
pub async fn write_stop_request<S: AsyncWrite + Unpin>(
    io: &mut S,
    request: &StopRequest,
) -> Result<(), FrameError> {
    write_frame(io, &encode_stop_request(request)).await
}

/// Reads a [`StopResponse`] (the relay's side of a stop stream).
///
/// # Errors
///
/// [`ReadError`].
pub async fn read_stop_response<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<StopResponse, ReadError> {
    read_message(io, decode_stop_response).await
}

/// Writes a [`StopResponse`] and flushes.
///
/// # Errors
///
/// The stream's error.
pub async fn write_stop_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &StopResponse,
) -> Result<(), FrameError> {
    write_frame(io, &encode_stop_response(response)).await
}
