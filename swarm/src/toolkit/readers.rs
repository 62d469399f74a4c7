//! [`FrameReaders`]: long-lived inbound streams read frame by frame.

use std::fmt;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{AsyncRead, StreamExt};

use super::frame::{read_frame, FrameError};
use super::{with_timeout, TasksFull};

/// One stream's frames, tagged with its key.
type Frames<K> = BoxStream<'static, (K, Result<Vec<u8>, FrameError>)>;

/// A bounded set of streams that each carry a sequence of frames (a peer's messages on a
/// long-lived stream), read concurrently: every frame comes out as `(key, Ok(frame))`; a
/// stream that fails, sends an oversized frame or stays silent for its idle time yields
/// `(key, Err(..))` and is dropped; a stream the remote finishes is dropped quietly.
///
/// The writing counterpart is [`write_frames`](super::write_frames).
///
/// ```
/// use std::time::Duration;
/// use meshwire_swarm::toolkit::{encode_frame, FrameReaders};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut readers: FrameReaders<&str> = FrameReaders::new(8);
/// let wire = [encode_frame(b"one"), encode_frame(b"two")].concat();
/// readers.push("peer", futures::io::Cursor::new(wire), 16, Duration::from_secs(1)).unwrap();
/// let first = std::future::poll_fn(|cx| readers.poll_next(cx)).await;
/// assert_eq!(first.1.unwrap(), b"one");
/// let second = std::future::poll_fn(|cx| readers.poll_next(cx)).await;
/// assert_eq!(second.1.unwrap(), b"two");
/// # }
/// ```
pub struct FrameReaders<K> {
    streams: SelectAll<Frames<K>>,
    limit: usize,
    waker: Option<Waker>,
}

impl<K> fmt::Debug for FrameReaders<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReaders")
            .field("len", &self.streams.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<K: Clone + Send + 'static> Default for FrameReaders<K> {
    /// A set with [`FrameReaders::DEFAULT_LIMIT`].
    fn default() -> Self {
        FrameReaders::new(Self::DEFAULT_LIMIT)
    }
}

impl<K: Clone + Send + 'static> FrameReaders<K> {
    /// The limit of [`FrameReaders::default`]: 256 streams.
    pub const DEFAULT_LIMIT: usize = 256;

    /// An empty set reading at most `limit` streams at once.
    pub fn new(limit: usize) -> Self {
        FrameReaders {
            streams: SelectAll::new(),
            limit,
            waker: None,
        }
    }

    /// Reads frames of at most `max` bytes from `io` under `key`; each frame must start and
    /// end within `idle` of the previous one.
    ///
    /// # Errors
    ///
    /// [`TasksFull`] (with `key`) at the limit; `io` is dropped.
    pub fn push<S>(&mut self, key: K, io: S, max: usize, idle: Duration) -> Result<(), TasksFull<K>>
    where
        S: AsyncRead + Unpin + Send + 'static,
    {
        if self.streams.len() >= self.limit {
            return Err(TasksFull {
                limit: self.limit,
                key,
            });
        }
        let frames = futures::stream::unfold(Some(io), move |io| {
            let key = key.clone();
            async move {
                let mut io = io?;
                match with_timeout(idle, read_frame(&mut io, max)).await {
                    Ok(Some(frame)) => Some(((key, Ok(frame)), Some(io))),
                    Ok(None) => None,
                    Err(e) => Some(((key, Err(e)), None)),
                }
            }
        });
        self.streams.push(frames.boxed());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// The next frame, or a stream's error; `Pending` (with the waker kept) when none is
    /// ready, also when no stream is read.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(K, Result<Vec<u8>, FrameError>)> {
        match self.streams.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(item),
            Poll::Ready(None) | Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Streams being read.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is read.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolkit::encode_frame;
    use futures::io::Cursor;

    async fn next<K: Clone + Send + 'static>(
        r: &mut FrameReaders<K>,
    ) -> (K, Result<Vec<u8>, FrameError>) {
        std::future::poll_fn(|cx| r.poll_next(cx)).await
    }

    /// The failed stream has yielded its last item; the next poll removes it.
    fn assert_drained<K: Clone + Send + 'static>(readers: &mut FrameReaders<K>) {
        let waker = futures::task::noop_waker();
        assert!(readers
            .poll_next(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(readers.is_empty());
    }

    #[tokio::test]
    async fn oversized_frame_ends_the_stream_with_an_error() {
        let mut readers = FrameReaders::new(2);
        let wire = [
            encode_frame(b"ok"),
            encode_frame(&[0; 100]),
            encode_frame(b"never"),
        ]
        .concat();
        readers
            .push(1u8, Cursor::new(wire), 10, Duration::from_secs(1))
            .unwrap();
        assert_eq!(next(&mut readers).await.1.unwrap(), b"ok");
        assert!(matches!(
            next(&mut readers).await.1,
            Err(FrameError::TooLarge { len: 100, max: 10 })
        ));
        assert_drained(&mut readers);
    }

    #[tokio::test]
    async fn silent_stream_times_out_and_limit_holds() {
        let mut readers = FrameReaders::new(1);
        readers
            .push(1u8, Never, 10, Duration::from_millis(20))
            .unwrap();
        assert!(readers
            .push(2u8, Cursor::new(Vec::new()), 10, Duration::from_secs(1))
            .is_err());
        let (key, result) = next(&mut readers).await;
        assert_eq!(key, 1);
        assert!(matches!(result, Err(FrameError::Timeout(_))));
        assert_drained(&mut readers);
    }

    /// A stream on which nothing ever arrives.
    struct Never;
    impl AsyncRead for Never {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
    }
}
