//! The stream fallback: over connections without datagrams (relayed connections, Noise and
//! Yamux over a relay's stream), the messages SWIM otherwise sends as datagrams go as frames
//! on one long-lived stream per peer, negotiated as [`STREAM_PROTOCOL`].
//!
//! - **Ours**: a message for a peer none of whose connections carries datagrams waits in the
//!   peer's queue ([`Config::max_queued_fallback_messages_per_peer`]; a message for a full
//!   queue is dropped) and is written, one frame per message, by the peer's writer
//!   ([`write_frames`]) on a stream opened on the peer's best connection, without dialing
//!   (the stream is negotiated lazily: the first message goes with the proposal). At most
//!   [`Config::max_fallback_streams`] streams are open or being opened. A writer with
//!   nothing to write for [`Config::fallback_stream_idle_timeout`] closes its stream (the
//!   next message opens a new one); a write that takes longer than
//!   [`Config::fallback_stream_write_timeout`], or fails, ends the stream and the messages
//!   queued on it are dropped. A message larger than [`SwimConfig::mtu`](crate::SwimConfig::mtu)
//!   is dropped, as a datagram too large for its connection is.
//! - **Remotes'**: read by a [`FrameReaders`] (at most
//!   [`Config::max_inbound_fallback_streams`], and
//!   [`Config::max_inbound_fallback_streams_per_peer`] per peer; more are reset), each frame
//!   bounded by the engine's datagram limit before it is buffered; a frame is handed to the
//!   very path of an inbound datagram (same checks, decoding, counters and keep-alive).
//! - The streams do not keep their connection open ([`Stream::set_keep_alive`]`(false)`):
//!   SWIM's own keep-alive rule decides, as it does for datagrams.
//!
//! A stream is ordered and reliable: a message delayed on the relay path holds back the
//! ones behind it (head-of-line blocking), so probe round trips over a relay include the
//! relay path's delays and retransmissions.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::AsyncRead;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{write_frames, FrameError, FrameReaders, Outbox, Tasks};
use meshwire_swarm::{InboundStream, OpenStream, OutboundStreamResult, Stream, ToSwarm};

use super::config::{Config, IoStats};
use super::{Event, STREAM_PROTOCOL};

/// A message queue of a peer's stream.
type Queue = mpsc::Receiver<Vec<u8>>;

/// How a writer ended, and the messages still in its queue.
type WriterEnd = (Result<(), FrameError>, Vec<Vec<u8>>);

/// The fallback streams of both directions.
pub(super) struct Fallback {
    /// Our stream requests, each with the peer's queue.
    outbox: Outbox<Event, Queue>,
    /// Our streams' writers.
    writers: Tasks<PeerId, WriterEnd>,
    /// Remotes' streams.
    readers: FrameReaders<(PeerId, ConnectionId)>,
    /// Into each peer's queue (its stream being opened, or written).
    senders: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    /// One token per peer, held by each of its streams being read: their number is the
    /// count of references less one.
    inbound: HashMap<PeerId, Arc<()>>,
    max_streams: usize,
    max_inbound_per_peer: usize,
    queue: usize,
    idle: Duration,
    write_timeout: Duration,
}

impl Fallback {
    /// Empty, with the limits of `config`.
    pub(super) fn new(config: &Config) -> Self {
        let max_streams = config.max_fallback_streams;
        Fallback {
            // A stream request counts twice while queued: room for all of them at once.
            outbox: Outbox::new(2 * max_streams + 2),
            writers: Tasks::new(max_streams),
            readers: FrameReaders::new(config.max_inbound_fallback_streams),
            senders: HashMap::new(),
            inbound: HashMap::new(),
            max_streams,
            max_inbound_per_peer: config.max_inbound_fallback_streams_per_peer,
            queue: config.max_queued_fallback_messages_per_peer.max(1),
            idle: config.fallback_stream_idle_timeout,
            write_timeout: config.fallback_stream_write_timeout,
        }
    }

    /// How long a remote's stream may stay silent: the remote's writer closes it after the
    /// idle timeout (within a write timeout).
    fn read_idle(&self) -> Duration {
        self.idle.saturating_add(self.idle.max(self.write_timeout))
    }

    /// Queues `bytes` (at most `max_len`) for `to`'s stream, asking for the stream on `on` if
    /// there is none.
    pub(super) fn send(
        &mut self,
        to: PeerId,
        on: ConnectionId,
        bytes: &Bytes,
        max_len: usize,
        io: &mut IoStats,
    ) {
        if bytes.len() > max_len {
            io.datagrams_too_large += 1;
            tracing::debug!(peer = %to, len = bytes.len(), max_len, "swim: message too large for the fallback stream; dropped");
            return;
        }
        if self.senders.get(&to).is_some_and(|tx| tx.is_closed()) {
            // Its writer ended (idle or failed): a new stream.
            self.senders.remove(&to);
        }
        if !self.senders.contains_key(&to) && !self.open(to, on, io) {
            io.stream_messages_dropped += 1;
            return;
        }
        let Some(tx) = self.senders.get_mut(&to) else {
            return;
        };
        match tx.try_send(bytes.to_vec()) {
            Ok(()) => io.stream_messages_sent += 1,
            Err(e) => {
                io.stream_messages_dropped += 1;
                tracing::debug!(peer = %to, full = e.is_full(), "swim: fallback stream queue full; message dropped");
            }
        }
    }

    /// Asks for a stream to `to` on `on`; `false` at the stream limit.
    fn open(&mut self, to: PeerId, on: ConnectionId, io: &mut IoStats) -> bool {
        if self.senders.len() >= self.max_streams {
            self.senders.retain(|_, tx| !tx.is_closed());
            if self.senders.len() >= self.max_streams {
                tracing::debug!(peer = %to, limit = self.max_streams, "swim: fallback stream limit reached");
                return false;
            }
        }
        // The channel holds its buffer plus one message per sender.
        let (tx, rx) = mpsc::channel(self.queue - 1);
        let request = OpenStream::new(to, STREAM_PROTOCOL)
            .on_connection(on)
            .no_dial();
        if self.outbox.open_stream(request, rx).is_err() {
            return false;
        }
        tracing::debug!(peer = %to, connection = %on, "swim: no datagrams to the peer; opening a fallback stream");
        io.stream_fallbacks += 1;
        self.senders.insert(to, tx);
        true
    }

    /// Takes the result of one of our stream requests (starting its writer); gives back one
    /// that is not ours (a push-pull's).
    pub(super) fn on_outbound_stream(
        &mut self,
        result: OutboundStreamResult,
        io: &mut IoStats,
    ) -> Option<OutboundStreamResult> {
        let Some(mut queue) = self.outbox.take_stream(result.id) else {
            return Some(result);
        };
        let peer = result.peer;
        let mut stream = match result.result {
            Ok(out) => out.stream,
            Err(e) => {
                io.stream_fallbacks_failed += 1;
                io.stream_messages_dropped += drain(&mut queue).len() as u64;
                tracing::debug!(%peer, error = %e, "swim: fallback stream not opened");
                return None;
            }
        };
        stream.set_keep_alive(false);
        let (idle, timeout) = (self.idle, self.write_timeout);
        let write = async move {
            let result = write_frames(&mut stream, &mut queue, idle, timeout).await;
            if result.is_err() {
                stream.reset();
            }
            // Messages queued while the stream closed or failed.
            (result, drain(&mut queue))
        };
        // The writer has its own time limits (idle, per write).
        if let Err(full) = self.writers.try_push(peer, Duration::MAX, write) {
            // Never: there are no more writers than senders.
            io.stream_fallbacks_failed += 1;
            tracing::debug!(peer = %full.key, "swim: fallback writer refused");
        }
        None
    }

    /// A remote's fallback stream: read it unless `refuse` or over the limits.
    pub(super) fn accept(
        &mut self,
        inbound: InboundStream,
        max_len: usize,
        refuse: bool,
        io: &mut IoStats,
    ) {
        let InboundStream {
            peer,
            connection,
            mut stream,
            ..
        } = inbound;
        self.inbound.retain(|_, token| Arc::strong_count(token) > 1);
        let token = self.inbound.entry(peer).or_default().clone();
        let of_peer = Arc::strong_count(&token) - 2;
        if refuse || of_peer >= self.max_inbound_per_peer {
            io.stream_fallbacks_refused += 1;
            tracing::debug!(%peer, of_peer, "swim: inbound fallback stream refused (limit or left)");
            stream.reset();
            return;
        }
        stream.set_keep_alive(false);
        let held = Held {
            stream,
            _token: token,
        };
        let idle = self.read_idle();
        match self.readers.push((peer, connection), held, max_len, idle) {
            Ok(()) => io.stream_fallbacks_inbound += 1,
            Err(_) => {
                // The stream was dropped (which ends it for the remote).
                io.stream_fallbacks_refused += 1;
                tracing::debug!(%peer, "swim: inbound fallback stream refused (limit)");
            }
        }
    }

    /// The next command for the swarm (our stream requests).
    pub(super) fn poll_command(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        self.outbox.poll(cx)
    }

    /// The next writer that went idle with messages queued after it stopped taking them (to
    /// send again); failed writers are counted and logged on the way.
    pub(super) fn poll_writers(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IoStats,
    ) -> Poll<(PeerId, Vec<Vec<u8>>)> {
        loop {
            let (peer, end) = match self.writers.poll_next(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            };
            match end {
                Ok((Ok(()), rest)) if rest.is_empty() => {
                    tracing::trace!(%peer, "swim: fallback stream closed after idling");
                }
                Ok((Ok(()), rest)) => return Poll::Ready((peer, rest)),
                Ok((Err(e), rest)) => {
                    io.stream_fallbacks_failed += 1;
                    io.stream_messages_dropped += rest.len() as u64;
                    tracing::debug!(%peer, error = %e, dropped = rest.len(), "swim: fallback stream failed");
                }
                Err(timeout) => {
                    // Never: no limit over the whole writer.
                    io.stream_fallbacks_failed += 1;
                    tracing::debug!(%peer, %timeout, "swim: fallback writer timed out");
                }
            }
        }
    }

    /// The next message read from a remote's stream; streams that fail are counted and logged
    /// on the way.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IoStats,
    ) -> Poll<(PeerId, ConnectionId, Bytes)> {
        loop {
            let ((peer, connection), result) = match self.readers.poll_next(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            };
            match result {
                Ok(frame) => {
                    io.stream_messages_received += 1;
                    return Poll::Ready((peer, connection, Bytes::from(frame)));
                }
                Err(e) => {
                    io.stream_fallbacks_failed += 1;
                    if matches!(e, FrameError::TooLarge { .. } | FrameError::InvalidPrefix) {
                        io.datagrams_bad += 1;
                    }
                    tracing::debug!(%peer, %connection, error = %e, "swim: inbound fallback stream ended");
                }
            }
        }
    }

    /// Our streams open or being opened, and remotes' streams being read.
    pub(super) fn len(&self) -> (usize, usize) {
        (self.senders.len(), self.readers.len())
    }
}

/// Closes `queue` and takes what it still holds.
fn drain(queue: &mut Queue) -> Vec<Vec<u8>> {
    queue.close();
    let mut rest = Vec::new();
    while let Ok(message) = queue.try_recv() {
        rest.push(message);
    }
    rest
}

/// A remote's stream being read, holding its peer's token.
struct Held {
    stream: Stream,
    _token: Arc<()>,
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}
