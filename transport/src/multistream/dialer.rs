//! The dialer (initiator) side of a negotiation.

use futures::io::{AsyncRead, AsyncWrite};

use super::codec::Unsent;
use super::codec::{is_echo_of, push_line, push_protocol, send, FrameReader, HEADER_LINE, NA_LINE};
use super::config::{NegotiationConfig, Version};
use super::error::NegotiationError;
use super::negotiated::Negotiated;
use super::protocol_name::ProtocolName;

/// Negotiates a protocol as the dialer (initiator), with the default
/// [`NegotiationConfig`](super::NegotiationConfig).
///
/// `protocols` are proposed in order until the listener accepts one; the
/// accepted name is returned together with the stream. If every proposal is
/// refused, or the list is empty, the result is [`NegotiationError::Failed`].
/// Invalid local names fail with [`NegotiationError::InvalidProtocolName`]
/// before anything is written.
///
/// With [`Version::V1Lazy`] and exactly one protocol, this returns as soon as
/// the header and proposal are written and flushed (or at once, leaving them to the stream's
/// first use, with [`dialer_select_with_config`] and
/// [`NegotiationConfig::with_deferred_send`]); the listener's answer is
/// read on the first read from (or close of, after our end is sent) the [`Negotiated`] stream, where
/// a refusal shows up as an [`std::io::Error`] wrapping
/// [`NegotiationError::Failed`]. In every other case the dialer waits for the
/// listener's answers and the returned stream is already complete.
///
/// This function never times out; see the module documentation.
pub async fn dialer_select<S, I>(
    io: S,
    protocols: I,
    version: Version,
) -> Result<(String, Negotiated<S>), NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    dialer_select_with_config(io, protocols, version, &NegotiationConfig::default()).await
}

/// [`dialer_select`] with an explicit [`NegotiationConfig`]: with
/// [`NegotiationConfig::with_deferred_send`], a [`Version::V1Lazy`] dialer with a single
/// protocol writes nothing before it returns; the header and proposal go with the returned
/// stream's first use (rust-libp2p's lazy dialer). The other settings are the listener's.
pub async fn dialer_select_with_config<S, I>(
    mut io: S,
    protocols: I,
    version: Version,
    config: &NegotiationConfig,
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

    if version == Version::V1Lazy && protocols.len() == 1 {
        let mut protocols = protocols;
        let Some(protocol) = protocols.pop() else {
            return Err(NegotiationError::Failed);
        };
        let unsent = if config.defers_send() {
            Unsent::new(out)
        } else {
            send(&mut io, &out).await?;
            Unsent::default()
        };
        tracing::debug!(%protocol, "multistream dialer: optimistically settled on protocol");
        let name = protocol.as_str().to_owned();
        return Ok((name, Negotiated::expecting(io, protocol, unsent)));
    }
    send(&mut io, &out).await?;
    tracing::trace!(protocol = %first, "multistream dialer: proposed protocol");

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
