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

use std::borrow::Borrow;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::str::FromStr;
use std::task::{Context, Poll};

use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt, IoSlice, IoSliceMut};

/// The multistream-select protocol identifier, `/multistream/1.0.0`.
pub const MULTISTREAM_PROTOCOL: &str = "/multistream/1.0.0";

/// Maximum length in bytes of a [`ProtocolName`] (without the trailing `'\n'`).
///
/// rust-libp2p itself only bounds whole frames (16383 bytes); go-libp2p and
/// js-libp2p bound them at 1024 bytes. Real protocol names are far shorter
/// than this limit. A listener answers `na` to a well-formed proposal whose
/// name exceeds it (as long as the message fits [`NegotiationConfig`]'s
/// message limit), so longer names from other implementations are refused
/// gracefully instead of failing the stream.
pub const MAX_PROTOCOL_NAME_LEN: usize = 140;

/// Default bound on the length of a single negotiation message read by a
/// listener, and on the size of the `ls` reply it sends (1024 bytes, as in
/// go-libp2p and js-libp2p).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1024;

/// The largest value [`NegotiationConfig::with_max_message_len`] accepts.
///
/// This is the largest frame rust-libp2p can read (a two-byte varint length).
pub const MAX_FRAME_LEN: usize = (1 << 14) - 1;

/// The smallest value [`NegotiationConfig::with_max_message_len`] accepts:
/// enough for a proposal of a [`MAX_PROTOCOL_NAME_LEN`]-byte name.
pub const MIN_MESSAGE_LEN: usize = MAX_PROTOCOL_NAME_LEN + 1;

/// Default number of `na` (and `ls`) answers a listener gives before it stops
/// the negotiation with [`NegotiationError::TooManyProposals`].
pub const DEFAULT_MAX_REJECTIONS: usize = 16;

/// The header message body.
const HEADER_LINE: &[u8] = b"/multistream/1.0.0\n";
/// The rejection message body.
const NA_LINE: &[u8] = b"na\n";
/// The listing request message body.
const LS_LINE: &[u8] = b"ls\n";

/// The multistream-select flavour used by a dialer.
///
/// Listeners accept dialers of either version; the difference is only in when
/// the dialer considers the negotiation settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// Plain `/multistream/1.0.0`: the dialer waits for the listener to confirm
    /// a protocol before returning (one round trip at best).
    #[default]
    V1,
    /// `/multistream/1.0.0` with optimistic selection: when exactly one
    /// protocol is proposed, the dialer returns immediately after sending the
    /// header and proposal and reads the confirmation lazily. Identical to
    /// [`Version::V1`] on the wire.
    V1Lazy,
}

/// Why a string is not a valid [`ProtocolName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolNameError {
    /// The name is empty.
    #[error("protocol name is empty")]
    Empty,
    /// The name does not start with `'/'`.
    #[error("protocol name does not start with '/'")]
    MissingLeadingSlash,
    /// The name is longer than [`MAX_PROTOCOL_NAME_LEN`] bytes.
    #[error("protocol name is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Length of the offending name in bytes.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The name contains a `'\n'`, which would end the message early.
    #[error("protocol name contains a newline")]
    ContainsNewline,
    /// The name is `/multistream/1.0.0`, which is indistinguishable from the
    /// multistream-select header on the wire.
    #[error("protocol name is the reserved multistream-select header")]
    Reserved,
    /// The name (received from the remote) is not valid UTF-8.
    #[error("protocol name is not valid UTF-8")]
    InvalidUtf8,
}

/// A validated protocol name, such as `/ipfs/ping/1.0.0`.
///
/// A valid name is UTF-8, starts with `'/'`, is at most
/// [`MAX_PROTOCOL_NAME_LEN`] bytes long, contains no `'\n'` and is not the
/// multistream-select header itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolName(String);

impl ProtocolName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ProtocolNameError> {
        let name = name.as_ref();
        Self::validate(name)?;
        Ok(ProtocolName(name.to_owned()))
    }

    /// Checks whether `name` is a valid protocol name without allocating.
    pub fn validate(name: &str) -> Result<(), ProtocolNameError> {
        let bytes = name.as_bytes();
        match bytes.first() {
            None => return Err(ProtocolNameError::Empty),
            Some(b'/') => {}
            Some(_) => return Err(ProtocolNameError::MissingLeadingSlash),
        }
        if bytes.len() > MAX_PROTOCOL_NAME_LEN {
            return Err(ProtocolNameError::TooLong {
                len: bytes.len(),
                max: MAX_PROTOCOL_NAME_LEN,
            });
        }
        if bytes.contains(&b'\n') {
            return Err(ProtocolNameError::ContainsNewline);
        }
        if name == MULTISTREAM_PROTOCOL {
            return Err(ProtocolNameError::Reserved);
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the name into its `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for ProtocolName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ProtocolName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ProtocolName {
    type Err = ProtocolNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ProtocolName {
    type Error = ProtocolNameError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for ProtocolName {
    type Error = ProtocolNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::validate(&value)?;
        Ok(ProtocolName(value))
    }
}

impl From<ProtocolName> for String {
    fn from(name: ProtocolName) -> String {
        name.0
    }
}

impl PartialEq<str> for ProtocolName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ProtocolName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Errors of a multistream-select negotiation.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// The underlying stream failed. A stream that ends in the middle of a
    /// message is reported as an error of kind
    /// [`io::ErrorKind::UnexpectedEof`].
    #[error("I/O error during protocol negotiation: {0}")]
    Io(#[from] io::Error),
    /// No protocol could be agreed upon: every proposal was refused, the
    /// remote closed the stream between messages, or (listener side) the
    /// remote sent data that is not a negotiation message after a refusal,
    /// which is what a [`Version::V1Lazy`] dialer does.
    #[error("protocol negotiation failed: no protocol could be agreed upon")]
    Failed,
    /// The remote sent a malformed or unexpected negotiation message.
    #[error("received an invalid multistream-select message")]
    InvalidMessage,
    /// The remote announced a message longer than allowed; nothing of it was
    /// read or allocated.
    #[error("multistream-select message longer than the maximum of {max} bytes")]
    MessageTooLarge {
        /// The maximum message length that was in force.
        max: usize,
    },
    /// A protocol name (a local one, or one proposed by the remote) is invalid.
    #[error("invalid protocol name: {0}")]
    InvalidProtocolName(#[from] ProtocolNameError),
    /// The remote (dialer) kept proposing unsupported protocols or asking for
    /// the protocol list beyond the listener's limit.
    #[error("remote exceeded the limit of {limit} refused proposals")]
    TooManyProposals {
        /// The limit that was in force.
        limit: usize,
    },
    /// The negotiation did not finish in time. Never produced by the
    /// negotiation itself; see [`with_timeout`] and the module documentation.
    #[error("protocol negotiation timed out")]
    Timeout,
}

impl From<NegotiationError> for io::Error {
    /// Converts into an [`io::Error`]: an [`NegotiationError::Io`] is
    /// unwrapped, every other variant is wrapped (retrievable with
    /// `io::Error::get_ref` and `downcast_ref::<NegotiationError>()`).
    fn from(err: NegotiationError) -> io::Error {
        if let NegotiationError::Io(e) = err {
            return e;
        }
        let kind = match &err {
            NegotiationError::Io(_) | NegotiationError::Failed => io::ErrorKind::Other,
            NegotiationError::Timeout => io::ErrorKind::TimedOut,
            NegotiationError::InvalidMessage
            | NegotiationError::MessageTooLarge { .. }
            | NegotiationError::InvalidProtocolName(_)
            | NegotiationError::TooManyProposals { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

/// Limits applied during negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NegotiationConfig {
    max_message_len: usize,
    max_rejections: usize,
}

impl NegotiationConfig {
    /// The default configuration: [`DEFAULT_MAX_MESSAGE_LEN`] and
    /// [`DEFAULT_MAX_REJECTIONS`].
    pub const fn new() -> Self {
        NegotiationConfig {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_rejections: DEFAULT_MAX_REJECTIONS,
        }
    }

    /// Sets the maximum length of a negotiation message read by a listener,
    /// which also bounds the size of the `ls` reply it sends. Clamped to
    /// `[MIN_MESSAGE_LEN, MAX_FRAME_LEN]`.
    ///
    /// A dialer only ever accepts the header, `na` or the echo of its own
    /// proposal, so it always reads at most [`MIN_MESSAGE_LEN`] bytes per
    /// message regardless of this setting.
    pub const fn with_max_message_len(mut self, len: usize) -> Self {
        self.max_message_len = if len < MIN_MESSAGE_LEN {
            MIN_MESSAGE_LEN
        } else if len > MAX_FRAME_LEN {
            MAX_FRAME_LEN
        } else {
            len
        };
        self
    }

    /// Sets how many `na` (or `ls`) answers a listener gives before failing
    /// with [`NegotiationError::TooManyProposals`]. With `0` the listener
    /// answers no unsupported proposal at all.
    pub const fn with_max_rejections(mut self, max: usize) -> Self {
        self.max_rejections = max;
        self
    }

    /// The maximum message length in force.
    pub const fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// The maximum number of refused proposals in force.
    pub const fn max_rejections(&self) -> usize {
        self.max_rejections
    }
}

impl Default for NegotiationConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Negotiates a protocol as the dialer (initiator), with the default
/// [`NegotiationConfig`].
///
/// `protocols` are proposed in order until the listener accepts one; the
/// accepted name is returned together with the stream. If every proposal is
/// refused, or the list is empty, the result is [`NegotiationError::Failed`].
/// Invalid local names fail with [`NegotiationError::InvalidProtocolName`]
/// before anything is written.
///
/// With [`Version::V1Lazy`] and exactly one protocol, this returns as soon as
/// the header and proposal are written and flushed; the listener's answer is
/// read on the first read from (or close of) the [`Negotiated`] stream, where
/// a refusal shows up as an [`io::Error`] wrapping
/// [`NegotiationError::Failed`]. In every other case the dialer waits for the
/// listener's answers and the returned stream is already complete.
///
/// This function never times out; see the module documentation.
pub async fn dialer_select<S, I>(
    mut io: S,
    protocols: I,
    version: Version,
) -> Result<(String, Negotiated<S>), NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let protocols = protocols
        .into_iter()
        .map(ProtocolName::new)
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = protocols.first() else {
        tracing::debug!("multistream dialer: no protocol to propose");
        return Err(NegotiationError::Failed);
    };

    // The header and the first proposal always travel together.
    let mut out = Vec::with_capacity(2 * 2 + HEADER_LINE.len() + first.as_str().len() + 1);
    push_line(&mut out, HEADER_LINE);
    push_protocol(&mut out, first);
    send(&mut io, &out).await?;
    tracing::trace!(protocol = %first, "multistream dialer: proposed protocol");

    if version == Version::V1Lazy && protocols.len() == 1 {
        let mut protocols = protocols;
        let Some(protocol) = protocols.pop() else {
            return Err(NegotiationError::Failed);
        };
        tracing::debug!(%protocol, "multistream dialer: optimistically settled on protocol");
        let name = protocol.as_str().to_owned();
        return Ok((name, Negotiated::expecting(io, protocol)));
    }

    // The dialer only ever accepts the header, `na` and echoes of its own
    // proposals, so this is all it ever needs to read.
    let longest = protocols
        .iter()
        .map(|p| p.as_str().len() + 1)
        .max()
        .unwrap_or(0);
    let mut reader = FrameReader::new(longest.max(HEADER_LINE.len()));

    match reader.read(&mut io).await? {
        None => return Err(NegotiationError::Failed),
        Some(frame) if frame == HEADER_LINE => {}
        Some(_) => return Err(NegotiationError::InvalidMessage),
    }

    for (index, protocol) in protocols.into_iter().enumerate() {
        if index > 0 {
            out.clear();
            push_protocol(&mut out, &protocol);
            send(&mut io, &out).await?;
            tracing::trace!(%protocol, "multistream dialer: proposed protocol");
        }
        let Some(frame) = reader.read(&mut io).await? else {
            return Err(NegotiationError::Failed);
        };
        if frame == NA_LINE {
            tracing::debug!(%protocol, "multistream dialer: protocol refused");
            continue;
        }
        if is_echo_of(frame, &protocol) {
            tracing::debug!(%protocol, "multistream dialer: protocol confirmed");
            return Ok((protocol.into_string(), Negotiated::completed(io)));
        }
        return Err(NegotiationError::InvalidMessage);
    }
    tracing::debug!("multistream dialer: every proposed protocol was refused");
    Err(NegotiationError::Failed)
}

/// Negotiates a protocol as the listener (responder), with the default
/// [`NegotiationConfig`].
///
/// Reads the dialer's header, echoes it, then answers proposals: a supported
/// one is echoed and negotiation ends with its name; an unsupported one is
/// answered with `na`; `ls` is answered with the list of supported protocols.
/// After [`DEFAULT_MAX_REJECTIONS`] such answers the negotiation fails with
/// [`NegotiationError::TooManyProposals`].
///
/// Invalid names in `supported` are skipped (with a warning). When the dialer
/// closes the stream between messages, or sends something that is not a
/// negotiation message after a refusal (a lazy dialer's data), the result is
/// [`NegotiationError::Failed`]. A proposal that is not valid UTF-8 fails with
/// [`NegotiationError::InvalidProtocolName`].
///
/// The returned stream is always complete. This function never times out;
/// see the module documentation.
pub async fn listener_select<S>(
    io: S,
    supported: &[impl AsRef<str>],
) -> Result<(String, Negotiated<S>), NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    listener_select_with_config(io, supported, &NegotiationConfig::default()).await
}

/// [`listener_select`] with an explicit [`NegotiationConfig`].
pub async fn listener_select_with_config<S>(
    mut io: S,
    supported: &[impl AsRef<str>],
    config: &NegotiationConfig,
) -> Result<(String, Negotiated<S>), NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let supported: Vec<&str> = supported
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| match ProtocolName::validate(name) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(name, %error, "multistream listener: ignoring invalid protocol name");
                false
            }
        })
        .collect();

    let mut reader = FrameReader::new(config.max_message_len);
    match reader.read(&mut io).await? {
        None => return Err(NegotiationError::Failed),
        Some(frame) if frame == HEADER_LINE => {}
        Some(_) => return Err(NegotiationError::InvalidMessage),
    }
    let mut out = Vec::with_capacity(64);
    push_line(&mut out, HEADER_LINE);
    send(&mut io, &out).await?;

    let mut answered = 0usize;
    let mut last_sent_na = false;
    loop {
        let frame = match reader.read(&mut io).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(NegotiationError::Failed),
            Err(error) if last_sent_na => return Err(after_rejection(error)),
            Err(error) => return Err(error),
        };

        out.clear();
        match decode(frame) {
            Message::ListProtocols => {
                if answered >= config.max_rejections {
                    return Err(NegotiationError::TooManyProposals {
                        limit: config.max_rejections,
                    });
                }
                answered += 1;
                encode_protocol_list(&mut out, &supported, config.max_message_len);
                last_sent_na = false;
                tracing::trace!("multistream listener: sent protocol list");
            }
            Message::Protocol(raw) => {
                if let Some(name) = supported.iter().find(|name| name.as_bytes() == raw) {
                    push_line(&mut out, frame);
                    send(&mut io, &out).await?;
                    tracing::debug!(protocol = name, "multistream listener: protocol confirmed");
                    return Ok(((*name).to_owned(), Negotiated::completed(io)));
                }
                if std::str::from_utf8(raw).is_err() {
                    return Err(if last_sent_na {
                        NegotiationError::Failed
                    } else {
                        ProtocolNameError::InvalidUtf8.into()
                    });
                }
                if answered >= config.max_rejections {
                    return Err(NegotiationError::TooManyProposals {
                        limit: config.max_rejections,
                    });
                }
                answered += 1;
                push_line(&mut out, NA_LINE);
                last_sent_na = true;
                tracing::debug!(
                    protocol = %String::from_utf8_lossy(raw),
                    "multistream listener: protocol refused"
                );
            }
            Message::Header | Message::NotAvailable | Message::Other => {
                return Err(if last_sent_na {
                    NegotiationError::Failed
                } else {
                    NegotiationError::InvalidMessage
                });
            }
        }
        send(&mut io, &out).await?;
    }
}

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

/// A stream on which a protocol has been settled.
///
/// Returned by [`dialer_select`] and [`listener_select`]. Once negotiation is
/// complete every read and write is forwarded to the underlying stream after
/// a single state check, with no buffering or copying. A
/// [`Version::V1Lazy`] dialer's stream starts out incomplete: writes go
/// straight through, and the first read (or close, or
/// [`complete`](Negotiated::complete)) first consumes the listener's header
/// and confirmation. If the listener refused the protocol, that read fails
/// with an [`io::Error`] wrapping [`NegotiationError::Failed`], and so does
/// every later read or write.
pub struct Negotiated<S> {
    io: S,
    state: NegotiatedState,
}

/// Progress of the (lazy) confirmation of a [`Negotiated`] stream.
enum NegotiatedState {
    /// Negotiation is complete; I/O goes straight to the inner stream.
    Completed,
    /// A lazy dialer still has to read the listener's answer.
    Expecting(Expecting),
    /// The lazy confirmation failed.
    Failed,
}

/// What a lazy dialer still expects from the listener.
struct Expecting {
    protocol: ProtocolName,
    header_pending: bool,
    reader: FrameReader,
}

impl Expecting {
    /// Judges the frame of length `len` just read; `Ok(true)` once the
    /// protocol is confirmed.
    fn on_frame(&mut self, len: usize) -> Result<bool, NegotiationError> {
        let frame = self.reader.frame(len);
        if self.header_pending {
            if frame == HEADER_LINE {
                self.header_pending = false;
                return Ok(false);
            }
            return Err(NegotiationError::InvalidMessage);
        }
        if is_echo_of(frame, &self.protocol) {
            tracing::debug!(protocol = %self.protocol, "multistream dialer: lazy protocol confirmed");
            return Ok(true);
        }
        if frame == NA_LINE {
            tracing::debug!(protocol = %self.protocol, "multistream dialer: lazy protocol refused");
            return Err(NegotiationError::Failed);
        }
        Err(NegotiationError::InvalidMessage)
    }
}

impl<S> Negotiated<S> {
    fn completed(io: S) -> Self {
        Negotiated {
            io,
            state: NegotiatedState::Completed,
        }
    }

    fn expecting(io: S, protocol: ProtocolName) -> Self {
        let max = (protocol.as_str().len() + 1).max(HEADER_LINE.len());
        Negotiated {
            io,
            state: NegotiatedState::Expecting(Expecting {
                protocol,
                header_pending: true,
                reader: FrameReader::new(max),
            }),
        }
    }

    /// Whether the negotiation is complete, i.e. the listener's confirmation
    /// has been received (always true except for a lazy dialer).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, NegotiatedState::Completed)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably (for operations such as a reset; reading or writing
    /// through it bypasses an outstanding lazy confirmation).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Returns the underlying stream if negotiation is complete, or `self`
    /// unchanged otherwise (so no negotiation state is lost).
    pub fn into_inner(self) -> Result<S, Self> {
        match self.state {
            NegotiatedState::Completed => Ok(self.io),
            _ => Err(self),
        }
    }
}

impl<S: AsyncRead + Unpin> Negotiated<S> {
    /// Reads the listener's (lazy) confirmation if it is still outstanding.
    ///
    /// Returns immediately if negotiation is already complete. Fails with
    /// [`NegotiationError::Failed`] if the listener refused the protocol (or
    /// if an earlier attempt already failed). Reads only negotiation
    /// messages, never application data.
    pub async fn complete(&mut self) -> Result<(), NegotiationError> {
        poll_fn(|cx| self.poll_negotiate(cx)).await
    }

    fn poll_negotiate(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NegotiationError>> {
        loop {
            let outcome = match &mut self.state {
                NegotiatedState::Completed => return Poll::Ready(Ok(())),
                NegotiatedState::Failed => return Poll::Ready(Err(NegotiationError::Failed)),
                NegotiatedState::Expecting(expecting) => {
                    match expecting.reader.poll_frame(&mut self.io, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Some(len))) => expecting.on_frame(len),
                        // The listener closed the stream instead of answering.
                        Poll::Ready(Ok(None)) => Err(NegotiationError::Failed),
                        Poll::Ready(Err(error)) => Err(error),
                    }
                }
            };
            match outcome {
                Ok(false) => continue,
                Ok(true) => {
                    self.state = NegotiatedState::Completed;
                    return Poll::Ready(Ok(()));
                }
                Err(error) => {
                    self.state = NegotiatedState::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}

impl<S> fmt::Debug for Negotiated<S>
where
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            NegotiatedState::Completed => "completed",
            NegotiatedState::Expecting(_) => "expecting",
            NegotiatedState::Failed => "failed",
        };
        f.debug_struct("Negotiated")
            .field("io", &self.io)
            .field("state", &state)
            .finish()
    }
}

fn failed_io_error() -> io::Error {
    NegotiationError::Failed.into()
}

impl<S> AsyncRead for Negotiated<S>
where
    S: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let NegotiatedState::Completed = this.state {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        match this.poll_negotiate(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_read(cx, buf),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let NegotiatedState::Completed = this.state {
            return Pin::new(&mut this.io).poll_read_vectored(cx, bufs);
        }
        match this.poll_negotiate(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_read_vectored(cx, bufs),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> AsyncWrite for Negotiated<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_write(cx, buf)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.state {
            NegotiatedState::Completed | NegotiatedState::Expecting(_) => {
                Pin::new(&mut this.io).poll_flush(cx)
            }
            NegotiatedState::Failed => Poll::Ready(Err(failed_io_error())),
        }
    }

    /// Closes the write side of the underlying stream.
    ///
    /// A lazy dialer first reads the listener's confirmation, so that a
    /// refused protocol is reported here rather than silently dropping the
    /// data written so far; if negotiation already failed, the underlying
    /// stream is simply closed.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let NegotiatedState::Expecting(_) = this.state {
            match this.poll_negotiate(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// Reads length-prefixed negotiation messages one at a time, never consuming
/// a byte past the end of the current message.
struct FrameReader {
    max_len: usize,
    max_prefix_bytes: usize,
    state: FrameState,
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
enum FrameState {
    /// Decoding the varint length prefix.
    Length {
        value: usize,
        shift: u32,
        bytes: usize,
    },
    /// Reading `len` body bytes, `filled` of which have arrived.
    Body { len: usize, filled: usize },
}

const FRAME_START: FrameState = FrameState::Length {
    value: 0,
    shift: 0,
    bytes: 0,
};

impl FrameReader {
    fn new(max_len: usize) -> Self {
        // Number of 7-bit groups needed to encode `max_len`.
        let mut max_prefix_bytes = 1;
        let mut rest = max_len >> 7;
        while rest > 0 {
            max_prefix_bytes += 1;
            rest >>= 7;
        }
        FrameReader {
            max_len,
            max_prefix_bytes,
            state: FRAME_START,
            buf: Vec::new(),
        }
    }

    /// The body of the frame last returned by `poll_frame` as `Some(len)`.
    fn frame(&self, len: usize) -> &[u8] {
        self.buf.get(..len).unwrap_or(&[])
    }

    /// Reads the next frame, returning `Ok(Some(len))` with the body available
    /// through [`FrameReader::frame`], or `Ok(None)` on a clean end of stream
    /// before the first byte of a frame.
    fn poll_frame<R>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NegotiationError>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let result = self.poll_frame_inner(io, cx);
        if let Poll::Ready(Err(_)) = result {
            self.state = FRAME_START;
        }
        result
    }

    fn poll_frame_inner<R>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NegotiationError>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        loop {
            match self.state {
                FrameState::Length {
                    mut value,
                    mut shift,
                    mut bytes,
                } => {
                    let mut byte = [0u8; 1];
                    let n = match Pin::new(&mut *io).poll_read(cx, &mut byte) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    };
                    if n == 0 {
                        if bytes == 0 {
                            return Poll::Ready(Ok(None));
                        }
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    let group = usize::from(byte[0] & 0x7f);
                    value |= group.checked_shl(shift).unwrap_or(usize::MAX);
                    bytes += 1;
                    if value > self.max_len {
                        return Poll::Ready(Err(NegotiationError::MessageTooLarge {
                            max: self.max_len,
                        }));
                    }
                    if byte[0] & 0x80 == 0 {
                        // A final zero group after other groups is a
                        // non-minimal encoding, which libp2p rejects.
                        if (bytes > 1 && group == 0) || value == 0 {
                            return Poll::Ready(Err(NegotiationError::InvalidMessage));
                        }
                        self.buf.clear();
                        self.buf.resize(value, 0);
                        self.state = FrameState::Body {
                            len: value,
                            filled: 0,
                        };
                    } else {
                        if bytes >= self.max_prefix_bytes {
                            // Any further group encodes a value above the
                            // bound (or is non-minimal).
                            return Poll::Ready(Err(NegotiationError::MessageTooLarge {
                                max: self.max_len,
                            }));
                        }
                        shift += 7;
                        self.state = FrameState::Length {
                            value,
                            shift,
                            bytes,
                        };
                    }
                }
                FrameState::Body { len, filled } => {
                    let Some(dest) = self.buf.get_mut(filled..len) else {
                        return Poll::Ready(Err(NegotiationError::InvalidMessage));
                    };
                    let n = match Pin::new(&mut *io).poll_read(cx, dest) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    };
                    if n == 0 {
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    let filled = filled.saturating_add(n).min(len);
                    if filled == len {
                        self.state = FRAME_START;
                        return Poll::Ready(Ok(Some(len)));
                    }
                    self.state = FrameState::Body { len, filled };
                }
            }
        }
    }

    /// Reads the next frame; `Ok(None)` on a clean end of stream.
    async fn read<R>(&mut self, io: &mut R) -> Result<Option<&[u8]>, NegotiationError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let len = poll_fn(|cx| self.poll_frame(io, cx)).await?;
        Ok(len.map(|len| self.frame(len)))
    }
}

fn unexpected_eof() -> NegotiationError {
    NegotiationError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "stream ended in the middle of a multistream-select message",
    ))
}

/// Maps errors caused by a lazy dialer's data (or its hang-up) after a refusal
/// to [`NegotiationError::Failed`], as rust-libp2p does.
fn after_rejection(error: NegotiationError) -> NegotiationError {
    match error {
        NegotiationError::InvalidMessage
        | NegotiationError::MessageTooLarge { .. }
        | NegotiationError::InvalidProtocolName(_) => NegotiationError::Failed,
        NegotiationError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            NegotiationError::Failed
        }
        other => other,
    }
}

/// A decoded negotiation message, borrowing from the frame.
enum Message<'a> {
    Header,
    NotAvailable,
    ListProtocols,
    /// A protocol name, without its trailing `'\n'`; not yet checked for UTF-8.
    Protocol(&'a [u8]),
    /// Anything else: an `ls` reply or garbage.
    Other,
}

/// Classifies a frame body the way rust-libp2p does.
fn decode(frame: &[u8]) -> Message<'_> {
    if frame == HEADER_LINE {
        return Message::Header;
    }
    if frame == NA_LINE {
        return Message::NotAvailable;
    }
    if frame == LS_LINE {
        return Message::ListProtocols;
    }
    match frame.split_last() {
        Some((&b'\n', name)) if name.first() == Some(&b'/') && !name.contains(&b'\n') => {
            Message::Protocol(name)
        }
        _ => Message::Other,
    }
}

fn is_echo_of(frame: &[u8], protocol: &ProtocolName) -> bool {
    matches!(frame.split_last(), Some((&b'\n', name)) if name == protocol.as_str().as_bytes())
}

fn push_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let group = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

/// Appends a frame whose body is `body` (which already ends with `'\n'`).
fn push_line(out: &mut Vec<u8>, body: &[u8]) {
    push_varint(out, body.len());
    out.extend_from_slice(body);
}

/// Appends a frame proposing or confirming `protocol`.
fn push_protocol(out: &mut Vec<u8>, protocol: &ProtocolName) {
    let name = protocol.as_str().as_bytes();
    push_varint(out, name.len() + 1);
    out.extend_from_slice(name);
    out.push(b'\n');
}

/// Appends the `ls` reply frame: varint-prefixed `<name>\n` entries and a
/// final `'\n'`, truncated (with a warning) to at most `max_len` body bytes.
fn encode_protocol_list(out: &mut Vec<u8>, protocols: &[&str], max_len: usize) {
    let mut body = Vec::with_capacity(64);
    let mut entry = Vec::with_capacity(MAX_PROTOCOL_NAME_LEN + 3);
    for name in protocols {
        entry.clear();
        push_varint(&mut entry, name.len() + 1);
        entry.extend_from_slice(name.as_bytes());
        entry.push(b'\n');
        if body.len() + entry.len() + 1 > max_len {
            tracing::warn!(
                listed = body.len(),
                "multistream listener: protocol list truncated to the maximum message length"
            );
            break;
        }
        body.extend_from_slice(&entry);
    }
    body.push(b'\n');
    push_line(out, &body);
}

/// Writes `bytes` completely and flushes.
async fn send<W>(io: &mut W, bytes: &[u8]) -> Result<(), NegotiationError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    io.write_all(bytes).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use futures::FutureExt;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::Waker;

    // ---------------------------------------------------------------------
    // In-memory duplex pipe with bounded capacity and bounded chunk size.
    // ---------------------------------------------------------------------

    #[derive(Debug, Default)]
    struct Channel {
        buf: VecDeque<u8>,
        write_closed: bool,
        read_dropped: bool,
        read_waker: Option<Waker>,
        write_waker: Option<Waker>,
    }

    #[derive(Debug)]
    struct PipeEnd {
        rx: Arc<Mutex<Channel>>,
        tx: Arc<Mutex<Channel>>,
        capacity: usize,
        chunk: usize,
    }

    fn lock(ch: &Mutex<Channel>) -> MutexGuard<'_, Channel> {
        ch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connected pair; every read and write moves at most `chunk` bytes.
    fn pipe(capacity: usize, chunk: usize) -> (PipeEnd, PipeEnd) {
        let a = Arc::new(Mutex::new(Channel::default()));
        let b = Arc::new(Mutex::new(Channel::default()));
        (
            PipeEnd {
                rx: a.clone(),
                tx: b.clone(),
                capacity,
                chunk,
            },
            PipeEnd {
                rx: b,
                tx: a,
                capacity,
                chunk,
            },
        )
    }

    fn duplex() -> (PipeEnd, PipeEnd) {
        pipe(64 * 1024, usize::MAX)
    }

    impl AsyncRead for PipeEnd {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut ch = lock(&self.rx);
            if ch.buf.is_empty() {
                if ch.write_closed {
                    return Poll::Ready(Ok(0));
                }
                ch.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = ch.buf.len().min(out.len()).min(self.chunk);
            for (slot, byte) in out.iter_mut().zip(ch.buf.drain(..n)) {
                *slot = byte;
            }
            if let Some(w) = ch.write_waker.take() {
                w.wake();
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for PipeEnd {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut ch = lock(&self.tx);
            if ch.read_dropped || ch.write_closed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let space = self.capacity.saturating_sub(ch.buf.len());
            if space == 0 {
                ch.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = space.min(data.len()).min(self.chunk);
            ch.buf.extend(&data[..n]);
            if let Some(w) = ch.read_waker.take() {
                w.wake();
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut ch = lock(&self.tx);
            ch.write_closed = true;
            if let Some(w) = ch.read_waker.take() {
                w.wake();
            }
            Poll::Ready(Ok(()))
        }
    }

    impl Drop for PipeEnd {
        fn drop(&mut self) {
            let mut tx = lock(&self.tx);
            tx.write_closed = true;
            if let Some(w) = tx.read_waker.take() {
                w.wake();
            }
            drop(tx);
            let mut rx = lock(&self.rx);
            rx.read_dropped = true;
            if let Some(w) = rx.write_waker.take() {
                w.wake();
            }
        }
    }

    // ---------------------------------------------------------------------
    // Scripted stream: fixed input, recorded output.
    // ---------------------------------------------------------------------

    #[derive(Debug)]
    struct ScriptIo {
        input: Vec<u8>,
        pos: usize,
        /// At the end of `input`: EOF if true, `Pending` forever if false.
        eof: bool,
        chunk: usize,
        written: Vec<u8>,
        closed: bool,
    }

    impl ScriptIo {
        fn new(input: &[u8]) -> Self {
            ScriptIo {
                input: input.to_vec(),
                pos: 0,
                eof: true,
                chunk: usize::MAX,
                written: Vec::new(),
                closed: false,
            }
        }

        fn stalling(input: &[u8]) -> Self {
            ScriptIo {
                eof: false,
                ..Self::new(input)
            }
        }
    }

    impl AsyncRead for ScriptIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let rest = self.input.len() - self.pos;
            if rest == 0 {
                return if self.eof {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            }
            let n = rest.min(out.len()).min(self.chunk);
            let start = self.pos;
            out[..n].copy_from_slice(&self.input[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for ScriptIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.closed = true;
            Poll::Ready(Ok(()))
        }
    }

    // ---------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_line(&mut out, body);
        out
    }

    fn line(text: &str) -> Vec<u8> {
        let mut body = text.as_bytes().to_vec();
        body.push(b'\n');
        frame(&body)
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn header() -> Vec<u8> {
        frame(HEADER_LINE)
    }

    /// Reference decoder of an `ls` reply body, mirroring rust-libp2p's.
    fn decode_protocol_list(mut body: &[u8]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        loop {
            if body == b"\n" {
                return Some(out);
            }
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let (&b, rest) = body.split_first()?;
                body = rest;
                len |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 21 {
                    return None;
                }
            }
            if len == 0 || len > body.len() || body[len - 1] != b'\n' {
                return None;
            }
            out.push(String::from_utf8(body[..len - 1].to_vec()).ok()?);
            body = &body[len..];
        }
    }

    fn negotiation_error(e: &io::Error) -> Option<&NegotiationError> {
        e.get_ref()?.downcast_ref::<NegotiationError>()
    }

    type ListenerOutcome = Result<(String, Negotiated<ScriptIo>), NegotiationError>;

    fn run_listener(input: &[u8], supported: &[&str]) -> (ListenerOutcome, Vec<u8>) {
        let io = ScriptIo::new(input);
        // The written bytes are only reachable through the result; capture
        // them through a shared wrapper instead.
        let shared = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            inner: io,
            out: shared.clone(),
        };
        let result = block_on(listener_select(recorder, supported));
        let written = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (result.map(|(p, n)| (p, n.map_io())), written)
    }

    /// Wraps a `ScriptIo`, copying everything written to a shared buffer.
    struct Recorder {
        inner: ScriptIo,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.out
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Negotiated<Recorder> {
        fn map_io(self) -> Negotiated<ScriptIo> {
            Negotiated {
                io: self.io.inner,
                state: self.state,
            }
        }
    }

    // ---------------------------------------------------------------------
    // End-to-end negotiation over the in-memory pipe
    // ---------------------------------------------------------------------

    async fn exchange_data<A, B>(mut dialer: Negotiated<A>, mut listener: Negotiated<B>)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        dialer.write_all(b"from dialer").await.unwrap();
        dialer.flush().await.unwrap();
        let mut buf = [0u8; 11];
        listener.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"from dialer");

        listener.write_all(b"from listener").await.unwrap();
        listener.flush().await.unwrap();
        let mut buf = [0u8; 13];
        dialer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"from listener");
        assert!(dialer.is_complete());
        assert!(listener.is_complete());

        dialer.close().await.unwrap();
        let mut rest = Vec::new();
        listener.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn v1_single_protocol() {
        let (a, b) = duplex();
        let (d, l) = tokio::join!(
            dialer_select(a, ["/ipfs/ping/1.0.0"], Version::V1),
            listener_select(b, &["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"]),
        );
        let (dp, dio) = d.unwrap();
        let (lp, lio) = l.unwrap();
        assert_eq!(dp, "/ipfs/ping/1.0.0");
        assert_eq!(lp, "/ipfs/ping/1.0.0");
        assert!(dio.is_complete(), "V1 dialer completes before returning");
        exchange_data(dio, lio).await;
    }

    #[tokio::test]
    async fn v1_lazy_single_protocol_zero_round_trips() {
        let (a, b) = duplex();
        // The dialer completes without the listener running at all.
        let (proto, dio) = dialer_select(a, ["/ipfs/ping/1.0.0"], Version::V1Lazy)
            .now_or_never()
            .expect("lazy dialer must not wait for the listener")
            .unwrap();
        assert_eq!(proto, "/ipfs/ping/1.0.0");
        assert!(!dio.is_complete());
        let listener = tokio::spawn(async move {
            let (p, mut lio) = listener_select(b, &["/ipfs/ping/1.0.0"]).await.unwrap();
            assert_eq!(p, "/ipfs/ping/1.0.0");
            let mut early = [0u8; 10];
            lio.read_exact(&mut early).await.unwrap();
            assert_eq!(&early, b"early data");
            lio
        });
        // Write before the listener answered.
        let mut dio = dio;
        dio.write_all(b"early data").await.unwrap();
        let lio = listener.await.unwrap();
        exchange_data(dio, lio).await;
    }

    #[tokio::test]
    async fn trickled_one_byte_at_a_time() {
        for version in [Version::V1, Version::V1Lazy] {
            let (a, b) = pipe(64, 1);
            let (d, l) = tokio::join!(
                dialer_select(a, ["/yamux/1.0.0"], version),
                listener_select(b, &["/yamux/1.0.0"]),
            );
            exchange_data(d.unwrap().1, l.unwrap().1).await;
        }
    }

    #[test]
    fn lazy_dialer_exact_bytes() {
        let mut io = ScriptIo::stalling(b"");
        let (proto, n) = dialer_select(&mut io, ["/ipfs/ping/1.0.0"], Version::V1Lazy)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(proto, "/ipfs/ping/1.0.0");
        assert!(!n.is_complete());
        drop(n);
        assert_eq!(
            io.written,
            b"\x13/multistream/1.0.0\n\x11/ipfs/ping/1.0.0\n"
        );
    }

    #[test]
    fn v1_dialer_exact_bytes_with_rejection() {
        let input = concat(&[&header(), &frame(NA_LINE), &line("/b")]);
        let mut io = ScriptIo::new(&input);
        let (proto, n) = block_on(dialer_select(&mut io, ["/a", "/b"], Version::V1)).unwrap();
        assert_eq!(proto, "/b");
        assert!(n.is_complete());
        drop(n);
        assert_eq!(io.written, b"\x13/multistream/1.0.0\n\x03/a\n\x03/b\n");
        assert_eq!(io.pos, input.len());
    }

    #[tokio::test]
    async fn first_proposal_rejected() {
        for version in [Version::V1, Version::V1Lazy] {
            let (a, b) = duplex();
            let (d, l) = tokio::join!(
                dialer_select(a, ["/noise", "/tls/1.0.0", "/yamux/1.0.0"], version),
                listener_select(b, &["/yamux/1.0.0", "/tls/1.0.0"]),
            );
            let (dp, dio) = d.unwrap();
            let (lp, lio) = l.unwrap();
            assert_eq!(dp, "/tls/1.0.0");
            assert_eq!(lp, "/tls/1.0.0");
            assert!(dio.is_complete());
            exchange_data(dio, lio).await;
        }
    }

    #[tokio::test]
    async fn all_rejected_dialer_fails() {
        let (a, b) = duplex();
        // The dialer drops (closes) its stream when it gives up.
        let (d, l) = tokio::join!(
            dialer_select(a, ["/a/1", "/b/1"], Version::V1),
            listener_select(b, &["/c/1"]),
        );
        assert!(matches!(d, Err(NegotiationError::Failed)), "{d:?}");
        assert!(matches!(l, Err(NegotiationError::Failed)), "{:?}", l.err());
    }

    #[tokio::test]
    async fn lazy_rejection_surfaces_on_first_read() {
        let (a, b) = duplex();
        let (_, mut dio) = dialer_select(a, ["/a/1"], Version::V1Lazy).await.unwrap();
        dio.write_all(b"optimistic data").await.unwrap();
        let listener = tokio::spawn(async move { listener_select(b, &["/c/1"]).await.map(|_| ()) });
        let mut buf = [0u8; 8];
        let err = dio.read(&mut buf).await.unwrap_err();
        assert!(
            matches!(negotiation_error(&err), Some(NegotiationError::Failed)),
            "{err:?}"
        );
        assert!(!dio.is_complete());
        // Later reads, writes and `complete` keep failing.
        assert!(dio.read(&mut buf).await.is_err());
        assert!(dio.write_all(b"x").await.is_err());
        assert!(matches!(
            dio.complete().await,
            Err(NegotiationError::Failed)
        ));
        assert!(dio.into_inner().is_err());
        // The listener took the lazy data after `na` as a failed negotiation.
        assert!(matches!(
            listener.await.unwrap(),
            Err(NegotiationError::Failed)
        ));
    }

    #[test]
    fn lazy_na_after_header_via_complete() {
        let input = concat(&[&header(), &frame(NA_LINE)]);
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&input),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        assert!(matches!(
            block_on(n.complete()),
            Err(NegotiationError::Failed)
        ));
        // Closing a failed stream still closes the inner stream.
        block_on(n.close()).unwrap();
        assert!(n.get_ref().closed);
    }

    #[test]
    fn lazy_close_waits_for_confirmation_and_reports_refusal() {
        let input = concat(&[&header(), &frame(NA_LINE)]);
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&input),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        let err = block_on(n.close()).unwrap_err();
        assert!(matches!(
            negotiation_error(&err),
            Some(NegotiationError::Failed)
        ));
    }

    #[test]
    fn lazy_dialer_reads_data_following_confirmation() {
        let input = concat(&[&header(), &line("/x"), b"payload"]);
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&input),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        let mut out = Vec::new();
        block_on(n.read_to_end(&mut out)).unwrap();
        assert_eq!(out, b"payload");
        assert!(n.is_complete());
        let inner = n.into_inner().unwrap();
        assert_eq!(inner.pos, input.len());
    }

    #[test]
    fn complete_and_into_inner() {
        let input = concat(&[&header(), &line("/x")]);
        let (_, n) = block_on(dialer_select(
            ScriptIo::new(&input),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        let mut n = match n.into_inner() {
            Ok(_) => panic!("into_inner must refuse an incomplete negotiation"),
            Err(n) => n,
        };
        block_on(n.complete()).unwrap();
        assert!(n.is_complete());
        block_on(n.complete()).unwrap();
        assert!(n.into_inner().is_ok());
    }

    #[test]
    fn lazy_dialer_rejects_wrong_echo_and_garbage() {
        for reply in [
            concat(&[&header(), &line("/y")]),
            concat(&[&line("/x")]),     // missing header
            concat(&[&frame(NA_LINE)]), // na before header
            concat(&[&header(), &frame(b"ls\n")]),
        ] {
            let (_, mut n) = block_on(dialer_select(
                ScriptIo::new(&reply),
                ["/x"],
                Version::V1Lazy,
            ))
            .unwrap();
            let r = block_on(n.complete());
            assert!(matches!(r, Err(NegotiationError::InvalidMessage)), "{r:?}");
        }
        // Oversized frame while expecting the confirmation.
        let reply = concat(&[&header(), b"\x7f"]);
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&reply),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        assert!(matches!(
            block_on(n.complete()),
            Err(NegotiationError::MessageTooLarge { .. })
        ));
        // Listener hangs up.
        let (_, mut n) = block_on(dialer_select(
            ScriptIo::new(&header()),
            ["/x"],
            Version::V1Lazy,
        ))
        .unwrap();
        assert!(matches!(
            block_on(n.complete()),
            Err(NegotiationError::Failed)
        ));
    }

    // ---------------------------------------------------------------------
    // Listener: leftover bytes, ls, limits, malformed input
    // ---------------------------------------------------------------------

    #[test]
    fn listener_keeps_data_arriving_with_the_proposal() {
        let input = concat(&[
            &header(),
            &line("/ipfs/ping/1.0.0"),
            b"\x00\x01application bytes",
        ]);
        let (result, written) = run_listener(&input, &["/ipfs/ping/1.0.0"]);
        let (proto, mut n) = result.unwrap();
        assert_eq!(proto, "/ipfs/ping/1.0.0");
        assert_eq!(written, concat(&[&header(), &line("/ipfs/ping/1.0.0")]));
        let mut data = Vec::new();
        block_on(n.read_to_end(&mut data)).unwrap();
        assert_eq!(data, b"\x00\x01application bytes");
    }

    #[tokio::test]
    async fn lazy_data_delivered_intact_through_pipe() {
        let (a, b) = duplex();
        let (_, mut dio) = dialer_select(a, ["/p/1"], Version::V1Lazy).await.unwrap();
        let payload: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        dio.write_all(&payload).await.unwrap();
        let (_, mut lio) = listener_select(b, &["/p/1"]).await.unwrap();
        let mut got = vec![0u8; payload.len()];
        lio.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);
        lio.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        dio.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }

    #[test]
    fn listener_answers_ls() {
        let input = concat(&[&header(), &frame(LS_LINE), &line("/b/2")]);
        let (result, written) = run_listener(&input, &["/a/1", "/b/2"]);
        assert_eq!(result.unwrap().0, "/b/2");
        // Exact bytes: header echo, ls reply, confirmation.
        let ls_reply: &[u8] = b"\x0d\x05/a/1\n\x05/b/2\n\n";
        assert_eq!(written, concat(&[&header(), ls_reply, &line("/b/2")]));
        // And the reply decodes the way rust-libp2p decodes it.
        assert_eq!(
            decode_protocol_list(&ls_reply[1..]).unwrap(),
            vec!["/a/1".to_owned(), "/b/2".to_owned()]
        );
    }

    #[test]
    fn ls_reply_empty_and_truncated() {
        let mut out = Vec::new();
        encode_protocol_list(&mut out, &[], 1024);
        assert_eq!(out, b"\x01\n");
        assert_eq!(decode_protocol_list(b"\n").unwrap(), Vec::<String>::new());

        let names: Vec<String> = (0..100)
            .map(|i| format!("/protocol/number/{i:03}"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        encode_protocol_list(&mut out, &refs, MIN_MESSAGE_LEN);
        let mut reader = FrameReader::new(MIN_MESSAGE_LEN);
        let mut src = futures::io::Cursor::new(out);
        let body = block_on(reader.read(&mut src)).unwrap().unwrap();
        assert!(body.len() <= MIN_MESSAGE_LEN);
        let listed = decode_protocol_list(body).unwrap();
        assert!(!listed.is_empty() && listed.len() < names.len());
        assert_eq!(listed[..], names[..listed.len()]);
    }

    #[test]
    fn listener_rejection_limit() {
        let mut input = header();
        for i in 0..DEFAULT_MAX_REJECTIONS {
            input.extend(line(&format!("/unsupported/{i}")));
        }
        let mut accepted = input.clone();
        accepted.extend(line("/ok"));
        let (result, _) = run_listener(&accepted, &["/ok"]);
        assert_eq!(result.unwrap().0, "/ok");

        input.extend(line("/one/too/many"));
        let (result, written) = run_listener(&input, &["/ok"]);
        assert!(
            matches!(
                result,
                Err(NegotiationError::TooManyProposals {
                    limit: DEFAULT_MAX_REJECTIONS
                })
            ),
            "{:?}",
            result.err()
        );
        let na_count = written.windows(4).filter(|w| *w == b"\x03na\n").count();
        assert_eq!(na_count, DEFAULT_MAX_REJECTIONS);

        // ls counts too; and the limit is configurable.
        let input = concat(&[&header(), &frame(LS_LINE), &frame(LS_LINE)]);
        let config = NegotiationConfig::new().with_max_rejections(1);
        let r = block_on(listener_select_with_config(
            ScriptIo::new(&input),
            &["/ok"],
            &config,
        ));
        assert!(matches!(
            r,
            Err(NegotiationError::TooManyProposals { limit: 1 })
        ));
    }

    #[test]
    fn oversize_length_prefix_is_rejected_before_reading_the_body() {
        // Huge 10-byte varint: rejected after at most the bound's prefix
        // length, the stream stalls afterwards so any further read would hang.
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let input = concat(&[&header(), &huge]);
        let mut io = ScriptIo::stalling(&input);
        let r = listener_select(&mut io, &["/a"])
            .now_or_never()
            .expect("must not wait");
        assert!(
            matches!(
                r,
                Err(NegotiationError::MessageTooLarge {
                    max: DEFAULT_MAX_MESSAGE_LEN
                })
            ),
            "{:?}",
            r.err()
        );
        assert!(io.pos <= header().len() + 2, "read {} bytes", io.pos);

        // Just above the bound: 1025 = 0x81 0x08.
        let input = concat(&[&header(), &[0x81, 0x08]]);
        let mut io = ScriptIo::stalling(&input);
        let r = listener_select(&mut io, &["/a"])
            .now_or_never()
            .expect("must not wait");
        assert!(matches!(r, Err(NegotiationError::MessageTooLarge { .. })));

        // Exactly at the bound is accepted as a frame (and then judged).
        let mut body = vec![b'/'; DEFAULT_MAX_MESSAGE_LEN - 1];
        body.push(b'\n');
        let input = concat(&[&header(), &frame(&body), &line("/a")]);
        let (r, written) = run_listener(&input, &["/a"]);
        assert_eq!(r.unwrap().0, "/a");
        assert!(
            written.windows(4).any(|w| w == b"\x03na\n"),
            "too-long name is refused with na"
        );

        // Configurable bound.
        let config = NegotiationConfig::new().with_max_message_len(200);
        let input = concat(&[&header(), &[0xc9, 0x01]]); // 201
        let r = block_on(listener_select_with_config(
            ScriptIo::new(&input),
            &["/a"],
            &config,
        ));
        assert!(matches!(
            r,
            Err(NegotiationError::MessageTooLarge { max: 200 })
        ));

        // The frame reader never allocates more than the bound.
        let mut reader = FrameReader::new(64);
        let mut src = ScriptIo::new(&[0x40, b'/']);
        let r = block_on(reader.read(&mut src));
        assert!(
            matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        assert!(reader.buf.capacity() <= 64);
        let mut src = ScriptIo::new(&[0x41]);
        assert!(matches!(
            block_on(reader.read(&mut src)),
            Err(NegotiationError::MessageTooLarge { max: 64 })
        ));
    }

    #[test]
    fn config_clamps() {
        assert_eq!(
            NegotiationConfig::new()
                .with_max_message_len(0)
                .max_message_len(),
            MIN_MESSAGE_LEN
        );
        assert_eq!(
            NegotiationConfig::new()
                .with_max_message_len(usize::MAX)
                .max_message_len(),
            MAX_FRAME_LEN
        );
        assert_eq!(
            NegotiationConfig::default().max_message_len(),
            DEFAULT_MAX_MESSAGE_LEN
        );
        assert_eq!(
            NegotiationConfig::default().max_rejections(),
            DEFAULT_MAX_REJECTIONS
        );
    }

    #[test]
    fn truncated_input() {
        let cases: Vec<Vec<u8>> = vec![
            header()[..5].to_vec(),
            vec![0x13],
            concat(&[&header(), &line("/a")[..2]]),
            concat(&[&header(), &[0x81]]),
        ];
        for input in cases {
            let (r, _) = run_listener(&input, &["/a"]);
            assert!(
                matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof),
                "{input:?}: {:?}",
                r.err()
            );
        }
        // Clean end of stream between messages: the dialer gave up.
        for input in [Vec::new(), header()] {
            let (r, _) = run_listener(&input, &["/a"]);
            assert!(matches!(r, Err(NegotiationError::Failed)));
        }
        // Dialer side.
        let r = block_on(dialer_select(
            ScriptIo::new(&header()[..4]),
            ["/a"],
            Version::V1,
        ));
        assert!(
            matches!(r, Err(NegotiationError::Io(ref e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        let r = block_on(dialer_select(ScriptIo::new(&header()), ["/a"], Version::V1));
        assert!(matches!(r, Err(NegotiationError::Failed)));
        let r = block_on(dialer_select(ScriptIo::new(b""), ["/a"], Version::V1));
        assert!(matches!(r, Err(NegotiationError::Failed)));
    }

    #[test]
    fn malformed_listener_input() {
        let invalid_utf8 = concat(&[&header(), &frame(b"/\xff\xfe\n")]);
        let (r, _) = run_listener(&invalid_utf8, &["/a"]);
        assert!(
            matches!(
                r,
                Err(NegotiationError::InvalidProtocolName(
                    ProtocolNameError::InvalidUtf8
                ))
            ),
            "{:?}",
            r.err()
        );

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("missing newline", concat(&[&header(), &frame(b"/a")])),
            ("bad header", line("/multistream/2.0.0")),
            ("header without newline", frame(b"/multistream/1.0.0")),
            ("other first message", line("/a")),
            ("zero length", concat(&[&header(), &[0x00]])),
            ("non-minimal varint", concat(&[&header(), &[0x83, 0x00]])),
            ("repeated header", concat(&[&header(), &header()])),
            ("na from dialer", concat(&[&header(), &frame(NA_LINE)])),
            (
                "embedded newline",
                concat(&[&header(), &frame(b"/a\n/b\n")]),
            ),
            ("no slash", concat(&[&header(), &line("a")])),
        ];
        for (what, input) in cases {
            let (r, _) = run_listener(&input, &["/a"]);
            assert!(
                matches!(r, Err(NegotiationError::InvalidMessage)),
                "{what}: {:?}",
                r.err()
            );
        }
    }

    #[test]
    fn listener_garbage_after_rejection_is_failure() {
        for garbage in [
            b"\x05hello".to_vec(),
            b"\xff\xff\xff".to_vec(),
            frame(b"/\xff\n"),
            b"\x09trunc".to_vec(),
        ] {
            let input = concat(&[&header(), &line("/nope"), &garbage]);
            let (r, _) = run_listener(&input, &["/a"]);
            assert!(
                matches!(r, Err(NegotiationError::Failed)),
                "{garbage:?}: {:?}",
                r.err()
            );
        }
    }

    #[test]
    fn listener_skips_invalid_supported_names() {
        let input = concat(&[&header(), &line("/ok"), b"rest"]);
        let (r, _) = run_listener(&input, &["", "no-slash", "/multistream/1.0.0", "/ok"]);
        assert_eq!(r.unwrap().0, "/ok");
        // An invalid supported name is never matched, even if proposed.
        let input = concat(&[&header(), &frame(HEADER_LINE)]);
        let (r, _) = run_listener(&input, &["/multistream/1.0.0"]);
        assert!(matches!(r, Err(NegotiationError::InvalidMessage)));
    }

    #[test]
    fn malformed_dialer_input() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "bad header",
                concat(&[&line("/multistream/2.0.0"), &line("/a")]),
            ),
            ("wrong echo", concat(&[&header(), &line("/b")])),
            ("ls reply", concat(&[&header(), &frame(b"\x03/a\n\n")])),
            (
                "double header",
                concat(&[&header(), &header(), &line("/a")]),
            ),
            ("missing newline", concat(&[&header(), &frame(b"/a")])),
            ("zero length", concat(&[&header(), &[0x00]])),
        ];
        for (what, input) in cases {
            let r = block_on(dialer_select(ScriptIo::new(&input), ["/a"], Version::V1));
            assert!(
                matches!(r, Err(NegotiationError::InvalidMessage)),
                "{what}: {:?}",
                r.err()
            );
        }
        let r = block_on(dialer_select(
            ScriptIo::new(&concat(&[&header(), &[0x7f]])),
            ["/a"],
            Version::V1,
        ));
        assert!(matches!(r, Err(NegotiationError::MessageTooLarge { .. })));
    }

    #[test]
    fn dialer_validates_local_names() {
        let mut io = ScriptIo::new(b"");
        let r = block_on(dialer_select(&mut io, ["/ok", "bad"], Version::V1));
        assert!(matches!(
            r,
            Err(NegotiationError::InvalidProtocolName(
                ProtocolNameError::MissingLeadingSlash
            ))
        ));
        assert!(
            io.written.is_empty(),
            "nothing is written for invalid input"
        );
        let r = block_on(dialer_select(&mut io, Vec::<String>::new(), Version::V1));
        assert!(matches!(r, Err(NegotiationError::Failed)));
        assert!(io.written.is_empty());
    }

    #[test]
    fn protocol_name_validation() {
        assert!(ProtocolName::new("/ipfs/ping/1.0.0").is_ok());
        assert_eq!(ProtocolName::new(""), Err(ProtocolNameError::Empty));
        assert_eq!(
            ProtocolName::new("ipfs"),
            Err(ProtocolNameError::MissingLeadingSlash)
        );
        assert_eq!(
            ProtocolName::new("/a\nb"),
            Err(ProtocolNameError::ContainsNewline)
        );
        assert_eq!(
            ProtocolName::new(MULTISTREAM_PROTOCOL),
            Err(ProtocolNameError::Reserved)
        );
        let max = format!("/{}", "x".repeat(MAX_PROTOCOL_NAME_LEN - 1));
        assert!(ProtocolName::new(&max).is_ok());
        let long = format!("{max}x");
        assert_eq!(
            ProtocolName::new(&long),
            Err(ProtocolNameError::TooLong {
                len: MAX_PROTOCOL_NAME_LEN + 1,
                max: MAX_PROTOCOL_NAME_LEN
            })
        );
        let p: ProtocolName = "/a".parse().unwrap();
        assert_eq!(p, "/a");
        assert_eq!(p.to_string(), "/a");
        assert_eq!(
            ProtocolName::try_from(String::from("/b"))
                .unwrap()
                .into_string(),
            "/b"
        );
        assert!(ProtocolName::try_from("nope").is_err());
    }

    #[test]
    fn error_into_io_error() {
        let e: io::Error = NegotiationError::Failed.into();
        assert!(matches!(
            negotiation_error(&e),
            Some(NegotiationError::Failed)
        ));
        let e: io::Error = NegotiationError::InvalidMessage.into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e: io::Error = NegotiationError::Timeout.into();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e: io::Error = NegotiationError::Io(io::ErrorKind::BrokenPipe.into()).into();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(negotiation_error(&e).is_none());
    }

    #[tokio::test]
    async fn timeout_with_runtime_timer() {
        let (_a, b) = duplex(); // the dialer never says anything
        let r = with_timeout(
            listener_select(b, &["/a"]),
            tokio::time::sleep(std::time::Duration::from_millis(20)),
        )
        .await;
        assert!(matches!(r, Err(NegotiationError::Timeout)));

        let (a, b) = duplex();
        let (d, l) = tokio::join!(
            with_timeout(
                dialer_select(a, ["/a"], Version::V1),
                tokio::time::sleep(std::time::Duration::from_secs(10))
            ),
            listener_select(b, &["/a"]),
        );
        assert_eq!(d.unwrap().0, "/a");
        assert_eq!(l.unwrap().0, "/a");
    }

    #[test]
    fn negotiated_debug() {
        let n = Negotiated::completed(futures::io::Cursor::new(Vec::<u8>::new()));
        assert!(format!("{n:?}").contains("completed"));
    }

    // ---------------------------------------------------------------------
    // Property tests
    // ---------------------------------------------------------------------

    /// Random input, sometimes starting with a valid header and a message or
    /// two so that deeper states are reached.
    fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop_oneof![
            Just(Vec::new()),
            Just(header()),
            Just(concat(&[&header(), &line("/nope")])),
            Just(concat(&[&header(), &frame(LS_LINE)])),
        ];
        (prefix, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(mut prefix, tail)| {
            prefix.extend(tail);
            prefix
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn listener_never_panics(input in hostile_input(), chunk in 1usize..8) {
            let mut io = ScriptIo::new(&input);
            io.chunk = chunk;
            let result = block_on(listener_select(&mut io, &["/a", "/nope2"]));
            if let Ok((name, _)) = result {
                prop_assert!(name == "/a" || name == "/nope2");
            }
            prop_assert!(io.pos <= input.len());
        }

        #[test]
        fn dialer_never_panics(input in hostile_input(), chunk in 1usize..8, lazy in any::<bool>(), two in any::<bool>()) {
            let mut io = ScriptIo::new(&input);
            io.chunk = chunk;
            let version = if lazy { Version::V1Lazy } else { Version::V1 };
            let protocols: &[&str] = if two { &["/nope", "/a"] } else { &["/a"] };
            if let Ok((name, mut negotiated)) = block_on(dialer_select(&mut io, protocols, version)) {
                prop_assert!(protocols.contains(&name.as_str()));
                let mut rest = Vec::new();
                // Drives any lazy confirmation, then drains the stream.
                let _ = block_on(negotiated.read_to_end(&mut rest));
                let _ = block_on(negotiated.complete());
            }
        }

        #[test]
        fn fragmented_sessions_succeed(
            // Must hold the listener's negotiation replies, which a lazy
            // dialer busy writing its data does not read yet (real transports
            // have far larger windows).
            capacity in 64usize..128,
            chunk in 1usize..8,
            lazy in any::<bool>(),
            rejected in 0usize..4,
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let version = if lazy { Version::V1Lazy } else { Version::V1 };
            let mut proposals: Vec<String> = (0..rejected).map(|i| format!("/unsupported/{i}")).collect();
            proposals.push("/wanted/1.0.0".into());
            let (a, b) = pipe(capacity, chunk);
            let data2 = data.clone();
            let dialer = async move {
                let (p, mut io) = dialer_select(a, &proposals, version).await?;
                io.write_all(&data2).await?;
                io.close().await?;
                let mut back = Vec::new();
                io.read_to_end(&mut back).await?;
                Ok::<_, NegotiationError>((p, back))
            };
            let listener = async move {
                let (p, mut io) = listener_select(b, &["/other", "/wanted/1.0.0"]).await?;
                let mut got = Vec::new();
                io.read_to_end(&mut got).await?;
                io.write_all(&got).await?;
                io.close().await?;
                Ok::<_, NegotiationError>((p, got))
            };
            let (d, l) = block_on(async { futures::join!(dialer, listener) });
            let (dp, back) = d.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (lp, got) = l.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(dp, "/wanted/1.0.0");
            prop_assert_eq!(lp, "/wanted/1.0.0");
            prop_assert_eq!(&got, &data);
            prop_assert_eq!(&back, &data);
        }

        #[test]
        fn varint_roundtrip(len in 1usize..=MAX_FRAME_LEN) {
            let mut body = vec![b'x'; len];
            if let Some(last) = body.last_mut() { *last = b'\n'; }
            let encoded = frame(&body);
            let mut reader = FrameReader::new(MAX_FRAME_LEN);
            let mut src = futures::io::Cursor::new(encoded);
            let got = block_on(reader.read(&mut src)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, Some(&body[..]));
        }
    }
}
