//! The listener (responder) side of a negotiation.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use futures::io::{AsyncRead, AsyncWrite};

use super::codec::{
    decode, encode_protocol_list, push_line, FrameReader, Message, Unsent, HEADER_LINE, NA_LINE,
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
/// Answers are written when the listener would otherwise wait for the dialer's next
/// message, so the header echo and the confirmation of a proposal that came with the header
/// leave together. The returned stream is always complete; with
/// [`NegotiationConfig::with_deferred_send`] the last answers are written on its
/// first use. This function never times out; see the module documentation.
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

    let mut unsent = Unsent::default();
    match negotiate(&mut io, &supported, config, &mut unsent).await {
        Ok(name) if config.defers_send() => Ok((name, Negotiated::unsent(io, unsent))),
        Ok(name) => {
            poll_fn(|cx| unsent.poll_send(&mut io, cx)).await?;
            Ok((name, Negotiated::completed(io)))
        }
        Err(error) => {
            // The answers given so far (a refusal, most often) still reach the dialer, as
            // they did when each was written at once; the stream failed if they cannot.
            let _ = poll_fn(|cx| unsent.poll_send(&mut io, cx)).await;
            Err(error)
        }
    }
}

/// The listener's side of the exchange: answers go to `unsent`, written whenever the next
/// message has not arrived yet; returns the name of the accepted protocol, its confirmation
/// last in `unsent`.
async fn negotiate<S>(
    io: &mut S,
    supported: &[&str],
    config: &NegotiationConfig,
    unsent: &mut Unsent,
) -> Result<String, NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = FrameReader::new(config.max_message_len());
    match next_frame(&mut reader, io, unsent).await? {
        None => return Err(NegotiationError::Failed),
        Some(len) if reader.frame(len) == HEADER_LINE => {}
        Some(_) => return Err(NegotiationError::InvalidMessage),
    }
    push_line(unsent.buf_mut(), HEADER_LINE);

    let mut answered = 0usize;
    let mut last_sent_na = false;
    loop {
        let frame = match next_frame(&mut reader, io, unsent).await {
            Ok(Some(len)) => reader.frame(len),
            Ok(None) => return Err(NegotiationError::Failed),
            Err(error) if last_sent_na => return Err(after_rejection(error)),
            Err(error) => return Err(error),
        };

        match decode(frame) {
            Message::ListProtocols => {
                if answered >= config.max_rejections() {
                    return Err(NegotiationError::TooManyProposals {
                        limit: config.max_rejections(),
                    });
                }
                answered += 1;
                encode_protocol_list(unsent.buf_mut(), supported, config.max_message_len());
                last_sent_na = false;
                tracing::trace!("multistream listener: sent protocol list");
            }
            Message::Protocol(raw) => {
                if let Some(name) = supported.iter().find(|name| name.as_bytes() == raw) {
                    push_line(unsent.buf_mut(), frame);
                    tracing::debug!(protocol = name, "multistream listener: protocol confirmed");
                    return Ok((*name).to_owned());
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
                push_line(unsent.buf_mut(), NA_LINE);
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
    }
}

/// Reads the dialer's next message; when it has not arrived, first writes the answers that
/// wait in `unsent` (the dialer may be waiting for them). Returns the frame's length
/// ([`FrameReader::frame`]), `None` at a clean end of stream.
async fn next_frame<S>(
    reader: &mut FrameReader,
    io: &mut S,
    unsent: &mut Unsent,
) -> Result<Option<usize>, NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| match reader.poll_frame(io, cx) {
        Poll::Pending => match unsent.poll_send(io, cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            // Written, or waiting for room (woken by the write side): either way the read
            // side's waker is registered too.
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
        },
        ready => ready,
    })
    .await
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
