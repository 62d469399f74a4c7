//! A path's frame reader, shared by the path's reader task and the application's `recv`:
//! when the application finds nothing to read, it reads the stream itself (without waiting,
//! under the session's lock) instead of parking until the reader task has read and handed
//! over what the stream already holds — one task hand-off less on the receiving side when
//! the reader task is behind. The reader keeps its batching: either party reads everything
//! the stream has at once.
//!
//! **Order.** A path's frames reach the engine in the order they were read: the reader
//! task holds the shared reader from its read until the frames are in the engine (taking
//! the session's lock inside), and the application reads only while it holds the session's
//! lock and only if it gets the shared reader at once (`try_lock`: the two locks are never
//! waited for in the other order). A frame split across reads stays in the shared reader's
//! buffer, whoever reads next.
//!
//! **Wake-ups.** The application polls the stream with the reader task's waker, so the
//! stream's registration stays the task's: bytes that arrive later wake the task as before.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::io::AsyncRead;

use crate::engine::PathId;
use crate::reader::{FrameReader, ReadEnd};
use crate::shared::{Core, State};
use crate::wire::Frame;

/// Frames decoded from one read before they go into the engine.
pub(crate) const BATCH: usize = 1024;

/// What a direct read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    /// Nothing: the stream had no bytes, or the reader task holds the reader.
    Nothing,
    /// Frames went into the engine.
    Frames,
    /// The stream ended (or failed): the path ended; the reader task ends too.
    End,
}

/// Reading a path's stream without waiting, by whoever holds the session's lock.
pub(crate) trait DirectRead: Send + Sync {
    /// Reads what the stream has now and hands its frames to the engine (`state`, locked).
    fn read_into(&self, state: &mut State, path: PathId) -> Direct;
}

/// A path's shared reader as the session's state holds it.
#[derive(Clone)]
pub(crate) struct Source(pub(crate) Arc<dyn DirectRead>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source")
    }
}

/// A path's frame reader and what its two users share.
pub(crate) struct SharedRead<R>(Mutex<Side<R>>);

struct Side<R> {
    reader: FrameReader<R>,
    /// Frames read, before they go into the engine (kept for its allocation).
    frames: Vec<Frame>,
    /// The reader task's waker, for the application's polls.
    waker: Option<Waker>,
    /// The stream ended: nobody reads any more.
    done: bool,
}

impl<R: AsyncRead + Unpin> SharedRead<R> {
    /// Shares `reader`.
    pub(crate) fn new(reader: FrameReader<R>) -> Self {
        SharedRead(Mutex::new(Side {
            reader,
            frames: Vec::new(),
            waker: None,
            done: false,
        }))
    }

    /// The reader task: reads batches of frames into the engine until the stream ends, the
    /// session ends, or a direct read saw the end.
    pub(crate) fn poll_task(&self, cx: &mut Context<'_>, core: &Core, path: PathId) -> Poll<()> {
        loop {
            let mut side = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if side.done {
                return Poll::Ready(());
            }
            if !side.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                side.waker = Some(cx.waker().clone());
            }
            let side = &mut *side;
            let result = match side.reader.poll_read_batch(cx, &mut side.frames, BATCH) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            };
            log_end(path, &result);
            let end = result.is_err();
            side.done = end;
            // Still holding the reader: no direct read comes between this read and its
            // frames' hand-over.
            let ended = {
                let mut s = core.lock();
                s.hand_frames(path, &mut side.frames, end);
                s.ended
            };
            if ended || end {
                return Poll::Ready(());
            }
        }
    }
}

impl<R: AsyncRead + Unpin + Send> DirectRead for SharedRead<R> {
    fn read_into(&self, state: &mut State, path: PathId) -> Direct {
        let Ok(mut side) = self.0.try_lock() else {
            return Direct::Nothing;
        };
        if side.done {
            return Direct::Nothing;
        }
        // Before the task's first poll there is no waker to poll with: the task reads.
        let Some(waker) = side.waker.take() else {
            return Direct::Nothing;
        };
        let side = &mut *side;
        let polled =
            side.reader
                .poll_read_batch(&mut Context::from_waker(&waker), &mut side.frames, BATCH);
        let result = match polled {
            Poll::Ready(result) => result,
            Poll::Pending => {
                side.waker = Some(waker);
                return Direct::Nothing;
            }
        };
        log_end(path, &result);
        let end = result.is_err();
        state.hand_frames(path, &mut side.frames, end);
        if end {
            side.done = true;
            // The task sees `done` and ends.
            waker.wake();
            Direct::End
        } else {
            side.waker = Some(waker);
            Direct::Frames
        }
    }
}

fn log_end(path: PathId, result: &Result<(), ReadEnd>) {
    if let Err(end) = result {
        if !matches!(end, ReadEnd::Eof) {
            tracing::debug!(path, error = %end, "upgrade path read failed; path closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::Notify;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;
    use crate::driver::spawn_io;
    use crate::engine::{PathKind, SessionConfig, SessionEngine, Transmit};
    use crate::shared::Out;
    use crate::wire::MAX_HEADER;

    fn data(from: u64, to: u64) -> BytesMut {
        let mut out = BytesMut::new();
        for seq in from..to {
            Frame::Data {
                seq,
                payload: Bytes::from(vec![seq as u8; 8]),
            }
            .encode_framed_into(&mut out);
        }
        out
    }

    /// One task on one thread: the path's reader task runs only when the test yields.
    #[tokio::test(flavor = "current_thread")]
    async fn recv_reads_what_the_stream_holds_before_the_reader_task_runs_in_order() {
        let config = SessionConfig::default();
        let now = Instant::now();
        let mut initiator = SessionEngine::new_initiator(1, config.clone(), now);
        let path = initiator.open_path(now, PathKind::Direct);
        let Some(Transmit::Frame {
            frame:
                Frame::Hello {
                    recv_next,
                    recv_limit,
                    ..
                },
            ..
        }) = initiator.poll_transmit(now)
        else {
            panic!("a new path starts with its Hello");
        };
        let core = Core::new(SessionEngine::new_responder(1, config.clone(), now));
        let wake = Arc::new(Notify::new());
        {
            let mut s = core.lock();
            s.outs.insert(
                path,
                Out {
                    buf: BytesMut::new(),
                    closing: false,
                    wake: wake.clone(),
                },
            );
            let accepted =
                s.engine
                    .handle_hello(now, PathKind::Direct, path, recv_next, recv_limit);
            assert_eq!(accepted, Ok(true));
            s.pump();
        }
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        spawn_io(
            core.clone(),
            path,
            ours.compat(),
            config.max_message + MAX_HEADER,
            wake,
            Duration::from_secs(10),
        );
        // The reader task polls the empty stream once (and the writer writes the `Welcome`).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(core.lock().sources.len(), 1);
        // Written without yielding: the reader task has not run since.
        peer.write_all(&data(0, 3))
            .await
            .expect("the pipe has room");
        assert_eq!(core.lock().engine.readable(), 0);
        let mut got = Vec::new();
        assert_eq!(core.take(16, |m| got.push(m)), Ok(true));
        assert_eq!(
            got,
            (0..3u8)
                .map(|i| Bytes::from(vec![i; 8]))
                .collect::<Vec<_>>()
        );
        // The reader task takes the next ones; the order holds across both readers.
        peer.write_all(&data(3, 5))
            .await
            .expect("the pipe has room");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(core.lock().engine.readable(), 2);
        peer.write_all(&data(5, 6))
            .await
            .expect("the pipe has room");
        assert_eq!(core.take(16, |m| got.push(m)), Ok(true));
        assert_eq!(core.take(16, |m| got.push(m)), Ok(true));
        assert_eq!(
            got,
            (0..6u8)
                .map(|i| Bytes::from(vec![i; 8]))
                .collect::<Vec<_>>()
        );
        // The stream ends: a direct read sees it, the path ends, the reader task stops.
        drop(peer);
        assert_eq!(core.take(16, |m| got.push(m)), Ok(false));
        assert!(core.lock().sources.is_empty());
        assert!(core.lock().closed.contains(&path));
    }
}
