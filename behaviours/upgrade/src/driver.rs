//! The task that runs one session: streams to use as paths, timers, and the engine's events;
//! and each path's reader and writer tasks. The engine itself lives in the session's
//! [`Core`], shared with the application, so messages never pass through this task: a
//! `send` encodes into the current path's buffer and wakes its writer (when the buffer was
//! empty), a reader hands its frames to the engine and wakes the application (when it was
//! parked). The task talks to the behaviour through [`Command`]s (streams to use as paths)
//! and [`Report`]s (what the behaviour must act on: a path wanted, a path closed, a switch,
//! the end).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use meshwire_core::ConnectionId;
use tokio::sync::{mpsc, Notify};

use crate::engine::{PathId, PathKind, SessionEvent};
use crate::reader::{chunk_size, max_pinned, FrameReader, ReadEnd};
use crate::shared::{handle_frames, stamp, Core, Kinds, Out, WRITE_BATCH};
use crate::wire::MAX_HEADER;

/// Frames decoded from one read before they go into the engine.
const BATCH: usize = 1024;

/// A stream for the session.
pub(crate) enum Command<S> {
    /// A stream we opened on `connection`: a new path (the driver writes its `Hello`).
    Open {
        stream: S,
        kind: PathKind,
        connection: ConnectionId,
    },
    /// A stream the peer opened, whose `Hello` the behaviour read.
    Accept {
        stream: S,
        kind: PathKind,
        connection: ConnectionId,
        path: PathId,
        recv_next: u64,
        recv_limit: u64,
    },
}

/// What the driver tells the behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// No usable path: open one on the best connection.
    NeedPath,
    /// A path we opened was refused or failed before its answer.
    PathFailed { kind: PathKind, refused: bool },
    /// Our sending moved to a path of `kind`.
    Switched {
        kind: PathKind,
        fallback: bool,
        resent: u64,
        /// Time from opening the new path to its `Welcome` (zero if the peer opened it).
        handshake: std::time::Duration,
    },
    /// A path's stream on `connection` is closed on our side.
    PathClosed { connection: ConnectionId },
    /// The session ended (failed, or finished both ways).
    Ended,
}

struct PathIo {
    connection: ConnectionId,
    kind: PathKind,
    reader: tokio::task::AbortHandle,
    writer: tokio::task::JoinHandle<()>,
}

/// The tasks of closed paths: their writers still write their last bytes and close (each
/// step bounded by `write_timeout`); whatever still runs at the session's end is aborted.
#[derive(Default)]
struct Closed {
    readers: Vec<tokio::task::AbortHandle>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Closed {
    fn push(&mut self, io: PathIo) {
        self.readers.retain(|r| !r.is_finished());
        self.writers.retain(|w| !w.is_finished());
        self.readers.push(io.reader);
        self.writers.push(io.writer);
    }

    /// Aborts the readers, gives the writers `write_timeout` to finish, then aborts them.
    async fn end(self, write_timeout: Duration) {
        for reader in &self.readers {
            reader.abort();
        }
        let aborts: Vec<_> = self.writers.iter().map(|w| w.abort_handle()).collect();
        let all = futures::future::join_all(self.writers);
        if tokio::time::timeout(write_timeout, all).await.is_err() {
            tracing::debug!("upgrade path writers still blocked at the session's end; aborted");
        }
        for abort in aborts {
            abort.abort();
        }
    }
}

/// Runs the session until it fails, finishes both ways, or the application and the peer are
/// both gone.
pub(crate) async fn run<S, K>(
    core: Arc<Core>,
    key: K,
    mut commands: mpsc::Receiver<Command<S>>,
    reports: mpsc::Sender<(K, Report)>,
    linger: Duration,
    write_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: Clone + Send + 'static,
{
    let max_frame = core.lock().engine.config().max_message + MAX_HEADER;
    let mut paths: HashMap<PathId, PathIo> = HashMap::new();
    let mut closed_io = Closed::default();
    let mut kinds = Kinds::default();
    let mut last_handshake: Option<(PathKind, Duration)> = None;
    let mut app_closed = false;
    let mut commands_open = true;
    // When the application dropped its end entirely: the session lingers at most `linger`.
    let mut gone_at: Option<tokio::time::Instant> = None;
    let mut out: Vec<Report> = Vec::new();
    loop {
        // `notify_one` stores a permit: a wake-up after this pass's look is not lost.
        let woken = core.task.notified();
        let (deadline, done) = {
            let mut s = core.lock();
            s.task_running();
            let now = stamp(&mut s);
            if s.armed.is_some_and(|at| at <= now) {
                s.engine.handle_timeout(now);
            }
            if !app_closed && s.producers == 0 {
                app_closed = true;
                s.engine.close();
            }
            s.after_input();
            s.task_running();
            let mut ended = false;
            while let Some(event) = s.events.pop_front() {
                let kind_of = |path: PathId| paths.get(&path).map(|io| io.kind).or(kinds.get(path));
                let report = match event {
                    SessionEvent::NoPath => Some(Report::NeedPath),
                    SessionEvent::PathFailed { path } => {
                        kind_of(path).map(|kind| Report::PathFailed {
                            kind,
                            refused: false,
                        })
                    }
                    SessionEvent::PathRefused { path, .. } => {
                        kind_of(path).map(|kind| Report::PathFailed {
                            kind,
                            refused: true,
                        })
                    }
                    SessionEvent::Switched {
                        kind,
                        fallback,
                        resent,
                        ..
                    } => {
                        // The handshake of the path activated last, for the duration histogram.
                        let handshake = match last_handshake.take() {
                            Some((k, h)) if k == kind => h,
                            _ => Duration::ZERO,
                        };
                        Some(Report::Switched {
                            kind,
                            fallback,
                            resent,
                            handshake,
                        })
                    }
                    SessionEvent::PathActive {
                        handshake, kind, ..
                    } => {
                        last_handshake = Some((kind, handshake));
                        None
                    }
                    SessionEvent::Failed(error) => {
                        s.error = Some(error);
                        ended = true;
                        None
                    }
                    // The application's `recv` ends once it has read everything.
                    SessionEvent::Finished | SessionEvent::Readable => None,
                };
                out.extend(report);
            }
            let closed = std::mem::take(&mut s.closed);
            for path in closed {
                if let Some(io) = paths.remove(&path) {
                    kinds.remember(path, io.kind);
                    out.push(Report::PathClosed {
                        connection: io.connection,
                    });
                    closed_io.push(io);
                }
            }
            let app_gone = s.consumer_gone;
            if app_gone && app_closed && gone_at.is_none() {
                gone_at = Some(tokio::time::Instant::now() + linger);
            }
            let lingered = gone_at.is_some_and(|at| tokio::time::Instant::now() >= at);
            let engine = &s.engine;
            let peer_done = engine.peer_finished() && engine.readable() == 0;
            let done = ended
                || lingered
                || engine.is_terminated()
                || (app_gone && app_closed && engine.all_acknowledged())
                || (peer_done && app_closed && engine.all_acknowledged() && engine.fin_sent())
                || (!commands_open && paths.is_empty());
            let deadline = engine.poll_timeout();
            s.armed = deadline;
            if done {
                s.end();
            }
            (deadline.map(tokio::time::Instant::from_std), done)
        };
        for report in out.drain(..) {
            let _ = reports.send((key.clone(), report)).await;
        }
        if done {
            break;
        }
        tokio::select! {
            command = commands.recv(), if commands_open => match command {
                Some(Command::Open { stream, kind, connection }) => {
                    let wake = Arc::new(Notify::new());
                    let path = {
                        let mut s = core.lock();
                        let now = stamp(&mut s);
                        let path = s.engine.open_path(now, kind);
                        s.outs.insert(path, Out { buf: BytesMut::new(), closing: false, wake: wake.clone() });
                        path
                    };
                    let (reader, writer) = spawn_io(core.clone(), path, stream, max_frame, wake, write_timeout);
                    paths.insert(path, PathIo { connection, kind, reader, writer });
                }
                Some(Command::Accept { stream, kind, connection, path, recv_next, recv_limit }) => {
                    let wake = Arc::new(Notify::new());
                    let accepted = {
                        let mut s = core.lock();
                        let now = stamp(&mut s);
                        // The writer's buffer first: the `Welcome` goes into it.
                        s.outs.insert(path, Out { buf: BytesMut::new(), closing: false, wake: wake.clone() });
                        let accepted = s.engine.handle_hello(now, kind, path, recv_next, recv_limit).is_ok();
                        if !accepted {
                            s.outs.remove(&path);
                        }
                        accepted
                    };
                    if accepted {
                        let (reader, writer) = spawn_io(core.clone(), path, stream, max_frame, wake, write_timeout);
                        paths.insert(path, PathIo { connection, kind, reader, writer });
                    }
                }
                // The behaviour is gone: nothing can open paths any more; go on with the
                // ones we have.
                None => commands_open = false,
            },
            () = woken => {},
            () = async {
                match gone_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if gone_at.is_some() => {},
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {},
        }
    }
    for (_, io) in paths.drain() {
        let connection = io.connection;
        closed_io.push(io);
        let _ = reports
            .send((key.clone(), Report::PathClosed { connection }))
            .await;
    }
    let _ = reports.send((key.clone(), Report::Ended)).await;
    closed_io.end(write_timeout).await;
}

/// Starts the reader and the writer of a path's stream; the reader's abort handle and the
/// writer's handle.
pub(crate) fn spawn_io<S>(
    core: Arc<Core>,
    path: PathId,
    stream: S,
    max_frame: usize,
    wake: Arc<Notify>,
    write_timeout: Duration,
) -> (tokio::task::AbortHandle, tokio::task::JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = stream.split();
    let reader = tokio::spawn(read_path(core.clone(), path, read, max_frame));
    let writer = tokio::spawn(write_path(core, path, write, wake, write_timeout));
    (reader.abort_handle(), writer)
}

/// Reads a path's frames into the engine, a batch per lock, until the stream ends.
async fn read_path<R: AsyncRead + Unpin>(core: Arc<Core>, path: PathId, read: R, max_frame: usize) {
    let window = core.lock().engine.config().effective_recv_window();
    let chunk = chunk_size(max_frame);
    let mut reader = FrameReader::new(
        read,
        chunk,
        max_frame,
        max_frame - MAX_HEADER,
        max_pinned(window, chunk),
    );
    let mut frames = Vec::new();
    loop {
        let result = reader.read_batch(&mut frames, BATCH).await;
        if let Err(end) = &result {
            if !matches!(end, ReadEnd::Eof) {
                tracing::debug!(path, error = %end, "upgrade path read failed; path closed");
            }
        }
        let ended = handle_frames(&core, path, &mut frames, result.is_err());
        if ended || result.is_err() {
            return;
        }
    }
}

/// Writes a path's buffer whenever it has bytes: takes all of it under the lock (refilling
/// it from the engine), writes and flushes it outside; closes the stream when told. A write
/// (or the close) that takes longer than `write_timeout` ends the path as failed.
async fn write_path<W: AsyncWrite + Unpin>(
    core: Arc<Core>,
    path: PathId,
    mut write: W,
    wake: Arc<Notify>,
    write_timeout: Duration,
) {
    let mut spare = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        let closing = {
            let mut s = core.lock();
            let Some(out) = s.outs.get_mut(&path) else {
                return;
            };
            std::mem::swap(&mut out.buf, &mut spare);
            let closing = out.closing;
            if closing {
                s.outs.remove(&path);
            } else if !spare.is_empty() {
                // The buffer may have stopped the encoding: go on while this batch is written.
                s.pump();
            }
            closing
        };
        if !spare.is_empty() {
            let written = tokio::time::timeout(write_timeout, async {
                write.write_all(&spare).await?;
                write.flush().await
            })
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no stream credit within the write timeout",
                ))
            });
            spare.clear();
            if let Err(error) = written {
                tracing::debug!(path, %error, "upgrade path write failed");
                let mut s = core.lock();
                stamp(&mut s);
                s.outs.remove(&path);
                s.path_ended(path);
                s.after_input();
                return;
            }
        } else if !closing {
            wake.notified().await;
            continue;
        }
        if closing {
            let _ = tokio::time::timeout(write_timeout, write.close()).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use futures::FutureExt;

    use super::*;
    use crate::engine::{SessionConfig, SessionEngine};

    /// A stream whose peer never grants credit: reads and writes stay pending forever.
    struct Stuck;

    impl AsyncRead for Stuck {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    fn core_with_path() -> (Arc<Core>, PathId, Arc<Notify>) {
        let now = Instant::now();
        let core = Core::new(SessionEngine::new_initiator(
            1,
            SessionConfig::default(),
            now,
        ));
        let wake = Arc::new(Notify::new());
        let path = {
            let mut s = core.lock();
            let path = s.engine.open_path(now, PathKind::Direct);
            s.outs.insert(
                path,
                Out {
                    buf: BytesMut::new(),
                    closing: false,
                    wake: wake.clone(),
                },
            );
            s.pump();
            path
        };
        (core, path, wake)
    }

    #[tokio::test]
    async fn a_writer_without_stream_credit_fails_its_path_after_the_write_timeout() {
        let (core, path, wake) = core_with_path();
        let timeout = Duration::from_millis(100);
        let (reader, writer) = spawn_io(core.clone(), path, Stuck, 1 << 16, wake, timeout);
        // The `Hello` is buffered; the write blocks, then times out and ends the path.
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer ends within its write timeout")
            .expect("the writer does not panic");
        assert!(core.lock().closed.contains(&path));
        assert!(core.lock().outs.get(&path).is_none());
        // The reader (no bytes ever) is ended with the session's other tasks.
        let mut closed = Closed::default();
        let (parked_reader, parked) = spawn_io(
            core.clone(),
            path,
            Stuck,
            1 << 16,
            Arc::new(Notify::new()),
            timeout,
        );
        closed.readers.push(reader.clone());
        closed.readers.push(parked_reader);
        closed.writers.push(parked);
        closed.end(timeout).await;
        tokio::task::yield_now().await;
        assert!(reader.is_finished());
        // Only this test's handle is left: the tasks let go of the session.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(Arc::strong_count(&core), 1);
    }

    #[test]
    fn wake_ups_decided_under_the_lock_go_out_after_it_is_released() {
        let (core, path, wake) = core_with_path();
        // The `Hello` buffered by `core_with_path` woke the (absent) writer: take that permit.
        assert!(Box::pin(wake.notified()).now_or_never().is_some());
        let mut woken = Box::pin(wake.notified());
        woken.as_mut().enable();
        let mut s = core.lock();
        s.path_ended(path);
        s.end();
        // Still locked: nobody woken yet.
        assert!(woken.as_mut().now_or_never().is_none());
        let mut readable = Box::pin(core.readable.notified());
        assert!(readable.as_mut().now_or_never().is_none());
        drop(s);
        assert!(woken.now_or_never().is_some());
        assert!(readable.now_or_never().is_some());
    }
}
