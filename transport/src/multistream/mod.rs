//! libp2p protocol negotiation with multistream-select `/multistream/1.0.0`.
//!
//! This module implements the multistream-select protocol as specified in
//! libp2p's `connections` specification, wire-compatible with rust-libp2p's
//! `multistream-select` crate in both its [`Version::V1`] and
//! [`Version::V1Lazy`] modes, and with go-libp2p / js-libp2p.
//!
//! # Wire format
//!
//! Every message is an unsigned-varint length prefix followed by exactly that
//! many bytes, the last of which is `'\n'`:
//!
//! * the header `/multistream/1.0.0\n`,
//! * a protocol proposal or confirmation `<name>\n`,
//! * a rejection `na\n`,
//! * a listing request `ls\n`, answered by a single message whose body is the
//!   concatenation of varint-length-prefixed `<name>\n` entries, followed by a
//!   final `\n`.
//!
//! The dialer (initiator) sends the header together with its first proposal.
//! The listener (responder) reads the header, echoes it, and then answers each
//! proposal with either an echo of the proposal (accepted, negotiation done) or
//! `na` (rejected, the dialer may propose something else).
//!
//! With [`Version::V1Lazy`] and a single protocol, the dialer does not wait for
//! the listener's answer: [`dialer_select`] returns right after writing its
//! header and proposal, and the application may immediately start writing
//! protocol data (zero round trips). The listener's confirmation is then read
//! lazily, on the first read from the returned [`Negotiated`] stream (or via
//! [`Negotiated::complete`]).
//!
//! # Hostile input
//!
//! Negotiation messages are read exactly one at a time (varint, then body), so
//! no byte belonging to the negotiated protocol is ever consumed by the
//! negotiation and [`Negotiated`] never needs to buffer application data.
//! Message lengths are bounded ([`DEFAULT_MAX_MESSAGE_LEN`], configurable via
//! [`NegotiationConfig`]) and checked while the length prefix is decoded,
//! before anything is allocated. The number of rejected proposals a listener
//! answers is bounded as well ([`DEFAULT_MAX_REJECTIONS`]). Every malformed
//! input ends in a typed [`NegotiationError`].
//!
//! # Layout
//!
//! `codec` reads and writes the messages, `dialer` and `listener` hold the two sides of the
//! negotiation, `negotiated` the resulting stream, `config`, `error` and `protocol_name` the
//! vocabulary; everything public is re-exported here.
//!
//! # Timeouts
//!
//! The negotiation functions are runtime-agnostic and never time out by
//! themselves: a remote that stops sending stalls them forever. Callers must
//! bound them, either with their runtime's timer (for example
//! `tokio::time::timeout`, mapping its elapsed error to
//! [`NegotiationError::Timeout`]) or with [`with_timeout`], which accepts any
//! timer future. The lazy confirmation read by a [`Negotiated`] stream is
//! covered by whatever timeout guards the application's reads.
//!
//! # Example
//!
//! Negotiating over an in-memory socket pair, with the listener on its own
//! thread:
//!
//! ```
//! # #[cfg(unix)]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::executor::block_on;
//! use futures::io::{AllowStdIo, AsyncReadExt, AsyncWriteExt};
//! use meshwire_transport::multistream::{dialer_select, listener_select, Version};
//! use std::os::unix::net::UnixStream;
//!
//! // A connected pair of in-memory sockets; `AllowStdIo` adapts the blocking
//! // std streams to the `futures::io` traits.
//! let (dialer_io, listener_io) = UnixStream::pair()?;
//!
//! let listener = std::thread::spawn(move || {
//!     block_on(async move {
//!         let supported = ["/echo/1.0.0", "/ipfs/ping/1.0.0"];
//!         let (protocol, mut io) =
//!             listener_select(AllowStdIo::new(listener_io), &supported).await?;
//!         assert_eq!(protocol, "/ipfs/ping/1.0.0");
//!         // Echo the ping payload back.
//!         let mut payload = [0u8; 4];
//!         io.read_exact(&mut payload).await?;
//!         io.write_all(&payload).await?;
//!         io.flush().await?;
//!         Ok::<_, std::io::Error>(())
//!     })
//! });
//!
//! block_on(async move {
//!     // V1Lazy with a single protocol: no round trip before sending data.
//!     let (protocol, mut io) = dialer_select(
//!         AllowStdIo::new(dialer_io),
//!         ["/ipfs/ping/1.0.0"],
//!         Version::V1Lazy,
//!     )
//!     .await?;
//!     assert_eq!(protocol, "/ipfs/ping/1.0.0");
//!     io.write_all(b"ping").await?;
//!     io.flush().await?;
//!     // The first read consumes the listener's confirmation, then the data.
//!     let mut reply = [0u8; 4];
//!     io.read_exact(&mut reply).await?;
//!     assert_eq!(&reply, b"ping");
//!     assert!(io.is_complete());
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//!
//! listener.join().expect("listener thread panicked")?;
//! # Ok(())
//! # }
//! # #[cfg(not(unix))]
//! # fn main() {}
//! ```

mod codec;
mod config;
mod dialer;
mod error;
mod listener;
mod negotiated;
mod protocol_name;

#[cfg(test)]
mod tests;

pub use config::{
    NegotiationConfig, Version, DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_REJECTIONS, MAX_FRAME_LEN,
    MIN_MESSAGE_LEN,
};
pub use dialer::{dialer_select, dialer_select_with_config};
pub use error::NegotiationError;
pub use listener::{listener_select, listener_select_with_config};
pub use negotiated::Negotiated;
pub use protocol_name::{
    ProtocolName, ProtocolNameError, MAX_PROTOCOL_NAME_LEN, MULTISTREAM_PROTOCOL,
};

use std::future::Future;
use std::pin::pin;

use futures::future::{select, Either};

/// Runs a negotiation future against a timer future, failing with
/// [`NegotiationError::Timeout`] if the timer fires first.
///
/// Works with any runtime's timer, e.g.
/// `with_timeout(listener_select(io, &protos), tokio::time::sleep(d))`.
/// On timeout the negotiation future (and the stream it owns) is dropped.
pub async fn with_timeout<T, F, D>(negotiation: F, timer: D) -> Result<T, NegotiationError>
where
    F: Future<Output = Result<T, NegotiationError>>,
    D: Future,
{
    let negotiation = pin!(negotiation);
    let timer = pin!(timer);
    match select(negotiation, timer).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(NegotiationError::Timeout),
    }
}
