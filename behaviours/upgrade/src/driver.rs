//! The task that runs one session: its [`SessionEngine`], the reading and writing halves of
//! its paths' streams, and the application's channels. It talks to the behaviour through
//! [`Command`]s (streams to use as paths) and [`Report`]s (what the behaviour must act on:
//! a path wanted, a path closed, a switch, the end).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use meshwire_core::ConnectionId;
use tokio::sync::mpsc;

use crate::engine::{PathId, PathKind, SessionEngine, SessionEvent, Transmit};
use crate::queue::{Consumer, Producer};
use crate::reader::{FrameReader, ReadEnd};
use crate::session::SharedState;
use crate::wire::{Frame, MAX_HEADER};

/// Batches of frames a path's writer may hold before the driver waits.
const WRITER_QUEUE: usize = 16;
/// Batches of frames read from all paths the driver may hold before the readers wait.
const READ_QUEUE: usize = 16;
/// Messages or frames taken at once from a channel before the driver's next pass.
const BATCH: usize = 1024;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

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
    writer: mpsc::Sender<Vec<Transmit>>,
    connection: ConnectionId,
    kind: PathKind,
}

/// Runs the session until it fails, finishes both ways, or the application and the peer are
/// both gone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<S, K>(
    mut engine: SessionEngine,
    key: K,
    mut commands: mpsc::Receiver<Command<S>>,
    app_out: Consumer,
    app_in: Producer,
    reports: mpsc::Sender<(K, Report)>,
    shared: SharedState,
    linger: std::time::Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: Clone + Send + 'static,
{
    let report = |r: Report| (key.clone(), r);
    let max_frame = engine.config().max_message + MAX_HEADER;
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<(PathId, Option<Frame>)>>(READ_QUEUE);
    let mut paths: HashMap<PathId, PathIo> = HashMap::new();
    // Batches taken from the engine whose writer had no room yet.
    let mut held: VecDeque<(PathId, Vec<Transmit>)> = VecDeque::new();
    let mut app_closed = false;
    let mut app_gone = false;
    // When the application dropped its end entirely: the session lingers at most `linger`.
    let mut gone_at: Option<tokio::time::Instant> = None;
    // Paths removed since the last pass over the events (which may name them).
    let mut just_closed: HashMap<PathId, PathKind> = HashMap::new();
    loop {
        let now = Instant::now();
        // The application dropped its `Session`: nothing more will be read.
        if !app_gone && app_in.0.consumer_gone() {
            app_gone = true;
        }
        // Messages to the application while it has room (one lock, one wake-up).
        if engine.readable() > 0 && !app_gone && app_in.0.push_batch(|| engine.recv()).is_err() {
            app_gone = true;
        }
        // The application's messages into the engine while the window takes them (one lock;
        // a message the window cannot take yet stays queued, holding back the application).
        let mut app_out_empty = true;
        if !app_closed {
            let mut queue = app_out.0.lock();
            let was_full = !queue.has_room();
            while let Some(front) = queue.items.front() {
                if !engine.can_send(front.len()) {
                    break;
                }
                if let Some(message) = queue.items.pop_front() {
                    let _ = engine.send(message);
                }
            }
            app_out_empty = queue.items.is_empty();
            let closed = app_out_empty && queue.closed();
            let freed = was_full && queue.has_room();
            drop(queue);
            if freed {
                app_out.0.room_freed();
            }
            if closed {
                app_closed = true;
                engine.close();
            }
        }
        let kind_of = |path: &PathId| {
            paths
                .get(path)
                .map(|io| io.kind)
                .or_else(|| just_closed.get(path).copied())
        };
        let mut ended = false;
        while let Some(event) = engine.poll_event() {
            let report = match event {
                SessionEvent::NoPath => Some(Report::NeedPath),
                SessionEvent::PathFailed { path } => {
                    kind_of(&path).map(|kind| Report::PathFailed {
                        kind,
                        refused: false,
                    })
                }
                SessionEvent::PathRefused { path, .. } => {
                    kind_of(&path).map(|kind| Report::PathFailed {
                        kind,
                        refused: true,
                    })
                }
                SessionEvent::Switched {
                    kind,
                    fallback,
                    resent,
                    ..
                } => Some(Report::Switched {
                    kind,
                    fallback,
                    resent,
                    handshake: std::time::Duration::ZERO,
                }),
                SessionEvent::PathActive {
                    handshake, kind, ..
                } => {
                    // Carried on the switch that follows (if any) for the duration histogram.
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    s.last_handshake = Some((kind, handshake));
                    None
                }
                SessionEvent::Failed(error) => {
                    shared.lock().unwrap_or_else(|e| e.into_inner()).error = Some(error);
                    ended = true;
                    None
                }
                SessionEvent::Finished => {
                    // The peer's last message is out; the application's `recv` ends once it
                    // has read everything (the channel closes when we return or drop it).
                    None
                }
                SessionEvent::Readable => None,
            };
            if let Some(mut report) = report {
                if let Report::Switched {
                    handshake, kind, ..
                } = &mut report
                {
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((k, h)) = s.last_handshake.take() {
                        if k == *kind {
                            *handshake = h;
                        }
                    }
                    s.kind = Some(*kind);
                }
                let _ = reports.send((key.clone(), report)).await;
            }
        }
        just_closed.clear();
        // Frames to the writers in batches (one per path and pass), until one is full.
        loop {
            if held.is_empty() {
                let mut batch: Vec<Transmit> = Vec::new();
                let mut batch_path = None;
                while let Some(transmit) = engine.poll_transmit(now) {
                    let path = path_of(&transmit);
                    if batch_path.is_some_and(|p| p != path) {
                        held.push_back((batch_path.unwrap_or(path), std::mem::take(&mut batch)));
                    }
                    batch_path = Some(path);
                    batch.push(transmit);
                    if batch.len() >= BATCH || held.len() >= 2 {
                        break;
                    }
                }
                if let Some(path) = batch_path.filter(|_| !batch.is_empty()) {
                    held.push_back((path, batch));
                }
            }
            let Some((path, batch)) = held.pop_front() else {
                break;
            };
            let Some(io) = paths.get(&path) else {
                continue;
            };
            let close = batch.iter().any(|t| matches!(t, Transmit::Close { .. }));
            match io.writer.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    held.push_front((path, batch));
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
            if close {
                if let Some(io) = paths.remove(&path) {
                    just_closed.insert(path, io.kind);
                    let _ = reports
                        .send(report(Report::PathClosed {
                            connection: io.connection,
                        }))
                        .await;
                }
            }
        }
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.stats = engine.stats();
            if engine.current_path().is_none() {
                s.kind = None;
            }
        }
        let peer_done = engine.peer_finished() && engine.readable() == 0;
        if app_gone && app_closed && gone_at.is_none() {
            gone_at = Some(tokio::time::Instant::now() + linger);
        }
        let lingered = gone_at.is_some_and(|at| tokio::time::Instant::now() >= at);
        if ended
            || lingered
            || engine.is_terminated()
            || (app_gone && app_closed && engine.all_acknowledged())
            || (peer_done && app_closed && engine.all_acknowledged() && engine.fin_sent())
        {
            break;
        }
        let deadline = engine.poll_timeout().map(tokio::time::Instant::from_std);
        let held_writer = held
            .front()
            .and_then(|(path, _)| paths.get(path).map(|io| io.writer.clone()));
        let readable = engine.readable() > 0 && !app_gone;
        let want_app = app_out_empty && !app_closed;
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Open { stream, kind, connection }) => {
                    let path = engine.open_path(Instant::now(), kind);
                    let writer = spawn_io(path, stream, max_frame, frames_tx.clone());
                    paths.insert(path, PathIo { writer, connection, kind });
                }
                Some(Command::Accept { stream, kind, connection, path, recv_next, recv_limit }) => {
                    let writer = spawn_io(path, stream, max_frame, frames_tx.clone());
                    paths.insert(path, PathIo { writer, connection, kind });
                    if engine.handle_hello(Instant::now(), kind, path, recv_next, recv_limit).is_err() {
                        paths.remove(&path);
                    }
                }
                None => {
                    // The behaviour is gone: nothing can open paths any more; go on with
                    // the ones we have.
                    if paths.is_empty() {
                        break;
                    }
                }
            },
            Some(batch) = frames_rx.recv() => {
                let now = Instant::now();
                for (path, frame) in batch {
                    match frame {
                        Some(frame) => {
                            let _ = engine.handle_frame(now, path, frame);
                        }
                        None => {
                            engine.handle_path_closed(now, path);
                            if let Some(io) = paths.remove(&path) {
                                just_closed.insert(path, io.kind);
                                let _ = reports.send(report(Report::PathClosed { connection: io.connection })).await;
                            }
                        }
                    }
                }
            },
            () = app_out.0.wait_items(), if want_app => {},
            permit = async { held_writer?.reserve_owned().await.ok() }, if held_writer.is_some() => {
                if let (Some(permit), Some((_, batch))) = (permit, held.pop_front()) {
                    permit.send(batch);
                }
            },
            () = app_in.0.wait_room(), if readable => {},
            () = app_in.0.wait_gone(), if !app_gone => {},
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
            } => engine.handle_timeout(Instant::now()),
        }
    }
    for (_, io) in paths.drain() {
        let _ = reports
            .send(report(Report::PathClosed {
                connection: io.connection,
            }))
            .await;
    }
    let _ = reports.send(report(Report::Ended)).await;
}

/// Starts the reader and the writer of a path's stream; the writer's queue.
fn spawn_io<S>(
    path: PathId,
    stream: S,
    max_frame: usize,
    frames: mpsc::Sender<Vec<(PathId, Option<Frame>)>>,
) -> mpsc::Sender<Vec<Transmit>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, mut write) = stream.split();
    let (tx, mut rx) = mpsc::channel::<Vec<Transmit>>(WRITER_QUEUE);
    let reader_frames = frames.clone();
    let max_payload = max_frame - MAX_HEADER;
    tokio::spawn(async move {
        let mut reader = FrameReader::new(read, WRITE_BATCH, max_frame, max_payload);
        let mut frames = Vec::new();
        loop {
            let result = reader.read_batch(&mut frames, BATCH).await;
            let mut batch: Vec<(PathId, Option<Frame>)> =
                frames.drain(..).map(|frame| (path, Some(frame))).collect();
            let end = result.is_err();
            if let Err(end) = result {
                if !matches!(end, ReadEnd::Eof) {
                    tracing::debug!(path, error = %end, "upgrade path read failed; path closed");
                }
                batch.push((path, None));
            }
            if reader_frames.send(batch).await.is_err() || end {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(WRITE_BATCH);
        let mut body = BytesMut::new();
        let mut open = true;
        while open {
            let Some(first) = rx.recv().await else {
                break;
            };
            let mut next = Some(first);
            while let Some(batch) = next.take() {
                for transmit in batch {
                    match transmit {
                        Transmit::Frame { frame, .. } => {
                            body.clear();
                            frame.encode_into(&mut body);
                            let mut prefix = unsigned_varint::encode::usize_buffer();
                            buf.put_slice(unsigned_varint::encode::usize(body.len(), &mut prefix));
                            buf.put_slice(&body);
                        }
                        Transmit::Close { .. } => open = false,
                    }
                }
                if buf.len() >= WRITE_BATCH || !open {
                    break;
                }
                next = rx.try_recv().ok();
            }
            let written = async {
                write.write_all(&buf).await?;
                write.flush().await
            }
            .await;
            buf.clear();
            if let Err(error) = written {
                tracing::debug!(path, %error, "upgrade path write failed");
                let _ = frames.send(vec![(path, None)]).await;
                return;
            }
        }
        let _ = write.close().await;
    });
    tx
}

fn path_of(transmit: &Transmit) -> PathId {
    match transmit {
        Transmit::Frame { path, .. } | Transmit::Close { path } => *path,
    }
}
