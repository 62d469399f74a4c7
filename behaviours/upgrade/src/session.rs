//! The application's end of a session: [`Session`], a bounded message channel to a peer.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use meshwire_core::PeerId;

use crate::engine::{PathKind, SessionError, SessionStats};
use crate::shared::{Consumer, Core, Producer};

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The session ended (closed by the peer, failed, or its driver is gone).
    #[error("session closed")]
    Closed,
    /// The message is larger than the session's `max_message`.
    #[error("message of {len} bytes over the bound of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// [`Session::try_send`]: the send buffer is full (the backpressure); retry later.
    #[error("send buffer full")]
    Full,
}

/// An ordered, lossless message channel to a peer that follows the best path (direct over
/// relayed) by itself. `send` waits while the send window and buffer are full (the
/// backpressure); `recv` returns messages in the order the peer sent them, each exactly once.
/// Dropping the session (or [`Session::close`]) ends our sending; the peer's `recv` returns
/// `None` after the last message.
#[derive(Debug)]
pub struct Session {
    peer: PeerId,
    id: u64,
    max_message: usize,
    tx: Option<Producer>,
    rx: Consumer,
    /// Messages taken from the session in one batch, not yet returned by `recv`.
    inbox: VecDeque<Bytes>,
    /// At most this many messages are taken at once.
    batch: usize,
}

impl Session {
    pub(crate) fn new(
        peer: PeerId,
        id: u64,
        max_message: usize,
        core: Arc<Core>,
        batch: usize,
    ) -> Self {
        Session {
            peer,
            id,
            max_message,
            tx: Some(Producer(core.clone())),
            rx: Consumer(core),
            inbox: VecDeque::new(),
            batch: batch.max(1),
        }
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The session's id (chosen by the side that opened it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A sending handle (Clone + Send) for another task; the session's sending ends when the
    /// session and every sender are dropped or closed.
    pub fn sender(&self) -> Option<SessionSender> {
        Some(SessionSender {
            tx: self.tx.clone()?,
            max_message: self.max_message,
        })
    }

    /// Sends a message, waiting while the buffers are full.
    ///
    /// # Errors
    ///
    /// [`ChannelError::TooLarge`], or [`ChannelError::Closed`] once the session ended.
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), ChannelError> {
        let message = self.check(message.into())?;
        let tx = self.tx.as_ref().ok_or(ChannelError::Closed)?;
        tx.0.send(message).await
    }

    /// Sends a message if there is room now.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Full`] when the buffers are full, else as [`Session::send`].
    pub fn try_send(&self, message: impl Into<Bytes>) -> Result<(), ChannelError> {
        let message = self.check(message.into())?;
        let tx = self.tx.as_ref().ok_or(ChannelError::Closed)?;
        match tx.0.try_send(message) {
            Ok(()) => Ok(()),
            Err(Ok(_)) => Err(ChannelError::Full),
            Err(Err(error)) => Err(error),
        }
    }

    /// Sends every message of `batch`, in order, taking the session's lock once for as many
    /// as the send window takes (instead of once per message) and waiting for room for the
    /// rest; `batch` is empty on success. Sent messages are removed from its front, so on an
    /// error it holds exactly the messages not sent.
    ///
    /// # Errors
    ///
    /// [`ChannelError::TooLarge`] for the first message over the bound (checked before any
    /// is sent: none is), or [`ChannelError::Closed`] once the session ended.
    pub async fn send_batch(&self, batch: &mut Vec<Bytes>) -> Result<(), ChannelError> {
        check_batch(batch, self.max_message)?;
        let tx = self.tx.as_ref().ok_or(ChannelError::Closed)?;
        tx.0.send_batch(batch).await
    }

    fn check(&self, message: Bytes) -> Result<Bytes, ChannelError> {
        if message.len() > self.max_message {
            return Err(ChannelError::TooLarge {
                len: message.len(),
                max: self.max_message,
            });
        }
        Ok(message)
    }

    /// The next message from the peer, in order; `None` once the peer closed the session
    /// (after its last message) or the session failed ([`Session::error`]).
    ///
    /// Messages are taken from the session in batches of at most
    /// [`Config::channel_buffer`](crate::Config) (one lock per batch; a wake-up only when
    /// `recv` had to wait); taking them grants the peer credit.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(message) = self.inbox.pop_front() {
                return Some(message);
            }
            // `notify_one` stores a permit: a wake-up after the look is not lost.
            let readable = self.rx.0.readable.notified();
            let inbox = &mut self.inbox;
            match self.rx.0.take(self.batch, |m| inbox.push_back(m)) {
                Ok(true) => {}
                Ok(false) => readable.await,
                Err(()) => return None,
            }
        }
    }

    /// Appends the next messages from the peer, in order, to `into`: at least one (waiting
    /// for it) and at most `max`, all under one lock; the number appended. `0` once the peer
    /// closed the session (after its last message) or the session failed, or when `max` is 0.
    /// Taking messages grants the peer credit, as [`Session::recv`] does; the two can be
    /// mixed freely (the order is kept).
    pub async fn recv_many(&mut self, into: &mut Vec<Bytes>, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        if !self.inbox.is_empty() {
            let n = self.inbox.len().min(max);
            into.extend(self.inbox.drain(..n));
            return n;
        }
        loop {
            let readable = self.rx.0.readable.notified();
            let before = into.len();
            match self.rx.0.take(max, |m| into.push(m)) {
                Ok(true) => return into.len() - before,
                Ok(false) => readable.await,
                Err(()) => return 0,
            }
        }
    }

    /// Ends our sending (the peer's `recv` ends after our last message); receiving goes on.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.rx.0.stats()
    }

    /// What our current path runs over (`None` while there is none).
    pub fn path_kind(&self) -> Option<PathKind> {
        self.rx.0.path_kind()
    }

    /// Why the session failed, if it did.
    pub fn error(&self) -> Option<SessionError> {
        self.rx.0.error()
    }
}

/// A clone of a [`Session`]'s sending half ([`Session::sender`]).
#[derive(Debug, Clone)]
pub struct SessionSender {
    tx: Producer,
    max_message: usize,
}

impl SessionSender {
    /// As [`Session::send`].
    ///
    /// # Errors
    ///
    /// As [`Session::send`].
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), ChannelError> {
        let message = message.into();
        if message.len() > self.max_message {
            return Err(ChannelError::TooLarge {
                len: message.len(),
                max: self.max_message,
            });
        }
        self.tx.0.send(message).await
    }

    /// As [`Session::send_batch`].
    ///
    /// # Errors
    ///
    /// As [`Session::send_batch`].
    pub async fn send_batch(&self, batch: &mut Vec<Bytes>) -> Result<(), ChannelError> {
        check_batch(batch, self.max_message)?;
        self.tx.0.send_batch(batch).await
    }
}

/// The first message of `batch` over `max` bytes, as an error.
fn check_batch(batch: &[Bytes], max: usize) -> Result<(), ChannelError> {
    match batch.iter().find(|m| m.len() > max) {
        Some(message) => Err(ChannelError::TooLarge {
            len: message.len(),
            max,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use tokio::sync::Notify;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;
    use crate::driver::spawn_io;
    use crate::engine::{SessionConfig, SessionEngine, Transmit};
    use crate::shared::Out;
    use crate::wire::{Frame, MAX_HEADER};

    /// Two sessions joined by one in-memory stream, with the real path reader and writer
    /// tasks (the `Hello` the behaviour would read is handed over directly).
    fn pair(config: SessionConfig) -> (Session, Session) {
        let now = Instant::now();
        let a = Core::new(SessionEngine::new_initiator(1, config.clone(), now));
        let b = Core::new(SessionEngine::new_responder(1, config.clone(), now));
        let (wake_a, wake_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let out = |wake: &Arc<Notify>| Out {
            buf: BytesMut::new(),
            closing: false,
            wake: wake.clone(),
        };
        let (path, recv_next, recv_limit) = {
            let mut s = a.lock();
            let path = s.engine.open_path(now, PathKind::Direct);
            let Some(Transmit::Frame {
                frame:
                    Frame::Hello {
                        recv_next,
                        recv_limit,
                        ..
                    },
                ..
            }) = s.engine.poll_transmit(now)
            else {
                panic!("a new path starts with its Hello");
            };
            s.outs.insert(path, out(&wake_a));
            (path, recv_next, recv_limit)
        };
        {
            let mut s = b.lock();
            s.outs.insert(path, out(&wake_b));
            let accepted =
                s.engine
                    .handle_hello(now, PathKind::Direct, path, recv_next, recv_limit);
            assert_eq!(accepted, Ok(true));
            s.pump();
        }
        let (stream_a, stream_b) = tokio::io::duplex(64 * 1024);
        let max_frame = config.max_message + MAX_HEADER;
        let timeout = Duration::from_secs(10);
        spawn_io(
            a.clone(),
            path,
            stream_a.compat(),
            max_frame,
            wake_a,
            timeout,
        );
        spawn_io(
            b.clone(),
            path,
            stream_b.compat(),
            max_frame,
            wake_b,
            timeout,
        );
        let peer = PeerId::random();
        let max = config.max_message;
        (
            Session::new(peer, 1, max, a, 256),
            Session::new(peer, 1, max, b, 256),
        )
    }

    fn numbered(i: u32, len: usize) -> Bytes {
        let mut m = vec![i as u8; len.max(4)];
        m[..4].copy_from_slice(&i.to_be_bytes());
        Bytes::from(m)
    }

    #[tokio::test]
    async fn batches_arrive_in_order_past_the_window_mixed_with_single_receives() {
        // No session task runs here: acknowledgements go out on the threshold (an eighth of
        // the receive window), not on the delay timer. Windows of about 100 and 64 messages
        // of the average size (48 bytes, 80 with their cost).
        let config = SessionConfig::default()
            .with_max_message(100)
            .with_send_window_bytes(100 * 80)
            .with_recv_window_bytes(64 * 80);
        let (a, mut b) = pair(config);
        let count = 3_000u32;
        let sender = a.sender().expect("a sending half");
        let send = tokio::spawn(async move {
            let mut batch = Vec::new();
            for start in (0..count).step_by(250) {
                batch.extend(
                    (start..(start + 250).min(count)).map(|i| numbered(i, i as usize % 97)),
                );
                // 250 messages against a window of about 100: the batch waits for room.
                sender.send_batch(&mut batch).await.expect("sent");
                assert!(batch.is_empty());
            }
        });
        let mut next = 0u32;
        let mut got = Vec::new();
        while next < count {
            if next % 2 == 0 {
                let n = b.recv_many(&mut got, 37).await;
                assert!((1..=37).contains(&n), "{n} messages");
                assert_eq!(got.len(), n);
            } else {
                got.push(b.recv().await.expect("a message"));
            }
            for m in got.drain(..) {
                assert_eq!(m[..4], next.to_be_bytes());
                assert_eq!(m.len(), (next as usize % 97).max(4));
                next += 1;
            }
        }
        send.await.expect("the sender finishes");
        assert_eq!(b.stats().messages_delivered, u64::from(count));
        assert_eq!(b.recv_many(&mut got, 0).await, 0);
    }

    #[tokio::test]
    async fn a_batch_with_an_oversized_message_sends_nothing() {
        let (a, mut b) = pair(SessionConfig::default().with_max_message(100));
        let mut batch = vec![numbered(0, 10), numbered(1, 101), numbered(2, 10)];
        assert_eq!(
            a.send_batch(&mut batch).await,
            Err(ChannelError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(batch.len(), 3);
        batch.remove(1);
        assert_eq!(a.send_batch(&mut batch).await, Ok(()));
        let mut got = Vec::new();
        while got.len() < 2 {
            b.recv_many(&mut got, 10).await;
        }
        assert_eq!(got, [numbered(0, 10), numbered(2, 10)]);
    }
}
