//! The stream exchanges of identify, each run as a task of the behaviour: asking a peer
//! (`/ipfs/id/1.0.0`, outbound), answering one (inbound), pushing our info
//! (`/ipfs/id/push/1.0.0`, outbound) and receiving a push (inbound).
//!
//! Every exchange has [`Config::timeout`](crate::Config::timeout) (through
//! [`with_timeout`]); a failed or timed-out exchange resets its stream, so the remote sees
//! an abort rather than a clean end (a dropped QUIC stream would be finished gracefully).

use std::time::Duration;

use futures::io::AsyncWriteExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::with_timeout;
use meshwire_swarm::{Stream, StreamError};

use crate::protocol::{read_message, wire, write_and_close, Error};

/// The exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// We ask the remote (outbound).
    Identify,
    /// We answer the remote's request (inbound).
    Answer,
    /// We push our info (outbound).
    Push,
    /// The remote pushes its info (inbound).
    PushReceived,
}

/// Which exchange a task runs, with whom.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) peer: PeerId,
    pub(crate) connection: ConnectionId,
    pub(crate) exchange: Exchange,
}

impl Key {
    pub(crate) fn new(peer: PeerId, connection: ConnectionId, exchange: Exchange) -> Self {
        Key {
            peer,
            connection,
            exchange,
        }
    }
}

/// What an exchange produced: the message it read ([`Exchange::Identify`],
/// [`Exchange::PushReceived`]); nothing for the writing ones.
pub(crate) type Output = Result<Option<wire::Identify>, Error>;

/// Time the task set allows an exchange beyond its own limit. The exchange's limit resets
/// the stream and reports [`Error::Timeout`]; the task set's is only a backstop.
pub(crate) const BACKSTOP: Duration = Duration::from_secs(1);

/// Resets `stream` after a failed exchange.
fn reset_on_error<T>(stream: &mut Stream, result: &Result<T, Error>) {
    if result.is_err() {
        stream.reset();
    }
}

/// Writes `frame` (our message, or why it could not be built) and finishes the stream: an
/// answer or a push.
pub(crate) async fn send(
    mut stream: Stream,
    frame: Result<Vec<u8>, Error>,
    limit: Duration,
) -> Output {
    let result = match frame {
        Ok(frame) => with_timeout(limit, write_and_close(&mut stream, &frame)).await,
        Err(e) => Err(e),
    };
    reset_on_error(&mut stream, &result);
    result.map(|()| None)
}

/// Asks for the remote's info on `stream`: finish our side, read its answer (at most `max`
/// bytes a frame).
pub(crate) async fn request(mut stream: Stream, max: usize, limit: Duration) -> Output {
    let result = with_timeout(limit, async {
        // Finishing our side does not wait for the remote's (lazy) protocol confirmation; the
        // read does, so a refusal is reported as `StreamError::UnsupportedProtocols` there.
        stream.close().await.map_err(StreamError::from)?;
        read_message(&mut stream, max).await
    })
    .await;
    reset_on_error(&mut stream, &result);
    result.map(Some)
}

/// Reads a push of the remote (at most `max` bytes a frame).
pub(crate) async fn receive_push(mut stream: Stream, max: usize, limit: Duration) -> Output {
    let result = with_timeout(limit, async {
        let msg = read_message(&mut stream, max).await?;
        // We write nothing; finish our side cleanly (best effort).
        let _ = stream.close().await;
        Ok(msg)
    })
    .await;
    reset_on_error(&mut stream, &result);
    result.map(Some)
}
