//! The listener (responder) side of a negotiation.

use std::io;

use futures::io::{AsyncRead, AsyncWrite};

use super::codec::{
    decode, encode_protocol_list, push_line, send, FrameReader, Message, HEADER_LINE, NA_LINE,
};
use super::config::NegotiationConfig;
use super::error::NegotiationError;
use super::negotiated::Negotiated;
use super::protocol_name::{ProtocolName, ProtocolNameError};

/// Negotiates a protocol as the listener (responder), with the default
/// [`NegotiationConfig`].
///
/// Reads the dialer's header, echoes it, then answers proposals: a supported
/// one is echoed and negotiation ends with its name; an unsupported one is
/// answered with `na`; `ls` is answered with the list of supported protocols.
/// After [`DEFAULT_MAX_REJECTIONS`](super::DEFAULT_MAX_REJECTIONS) such answers the negotiation fails with
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

    let mut reader = FrameReader::new(config.max_message_len());
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
                if answered >= config.max_rejections() {
                    return Err(NegotiationError::TooManyProposals {
                        limit: config.max_rejections(),
                    });
                }
                answered += 1;
                encode_protocol_list(&mut out, &supported, config.max_message_len());
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
                if answered >= config.max_rejections() {
                    return Err(NegotiationError::TooManyProposals {
                        limit: config.max_rejections(),
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

/// Maps errors caused by a lazy dialer's data (or its hang-up) after a refusal
/// to [`NegotiationError::Failed`], as rust-libp2p does.
pub(crate) fn after_rejection(error: NegotiationError) -> NegotiationError {
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
