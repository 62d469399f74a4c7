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
            match self.rx.0.take(&mut self.inbox, self.batch) {
                Ok(true) => {}
                Ok(false) => readable.await,
                Err(()) => return None,
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
}
