//! What a session's parties share: the [`SessionEngine`] behind one lock, taken by the
//! application (`Session::send` queues a message and encodes it straight into the current
//! path's write buffer; `Session::recv` takes delivered messages in batches), by each path's
//! reader (frames go into the engine as they are read) and writer (it takes its path's whole
//! buffer and writes it), and by the session's task (streams, timers, events). Nobody hands a
//! message to another task: each party wakes another only on a transition (a write buffer
//! that was empty, a parked receiver or sender, an event, an earlier deadline).

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::engine::{
    Encoded, PathId, PathKind, SessionEngine, SessionError, SessionEvent, SessionStats,
};
use crate::session::ChannelError;

/// Bytes encoded for the current path before encoding waits for its writer (bounds each
/// path's buffer; the send window bounds what waits in the engine).
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// A path's write buffer.
#[derive(Debug)]
pub(crate) struct Out {
    /// Encoded frames not yet taken by the writer.
    pub(crate) buf: BytesMut,
    /// Nothing more will be written: the writer writes what is buffered and closes.
    pub(crate) closing: bool,
    /// Wakes the path's writer.
    pub(crate) wake: Arc<Notify>,
}

/// The write buffers by path: a few entries (at most `max_paths` live), searched in order
/// (cheaper than hashing on every message).
#[derive(Debug, Default)]
pub(crate) struct Outs(Vec<(PathId, Out)>);

impl Outs {
    /// Adds (or replaces) the buffer of `path`.
    pub(crate) fn insert(&mut self, path: PathId, out: Out) {
        self.remove(&path);
        self.0.push((path, out));
    }

    /// Removes the buffer of `path`.
    pub(crate) fn remove(&mut self, path: &PathId) -> Option<Out> {
        let index = self.0.iter().position(|(p, _)| p == path)?;
        Some(self.0.swap_remove(index).1)
    }

    /// The buffer of `path`.
    #[cfg(test)]
    pub(crate) fn get(&self, path: &PathId) -> Option<&Out> {
        self.0.iter().find(|(p, _)| p == path).map(|(_, out)| out)
    }

    /// The buffer of `path`, to change.
    pub(crate) fn get_mut(&mut self, path: &PathId) -> Option<&mut Out> {
        self.0
            .iter_mut()
            .find(|(p, _)| p == path)
            .map(|(_, out)| out)
    }

    /// Every buffer.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Out> {
        self.0.iter_mut().map(|(_, out)| out)
    }
}

/// The state behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    /// The session's engine.
    pub(crate) engine: SessionEngine,
    /// Write buffers of the paths whose writer runs.
    pub(crate) outs: Outs,
    /// A recent clock reading, for encoding (a stale one only delays a delayed
    /// acknowledgement until the task's timer).
    pub(crate) now: Instant,
    /// The engine's events for the session's task (all but `Readable`).
    pub(crate) events: VecDeque<SessionEvent>,
    /// Paths whose stream ended or that the engine closed, for the task to report.
    pub(crate) closed: Vec<PathId>,
    /// `Session` and `SessionSender`s alive (our sending ends when none is).
    pub(crate) producers: usize,
    /// The application dropped its `Session`.
    pub(crate) consumer_gone: bool,
    /// The session's task ended: nothing more is sent or received.
    pub(crate) ended: bool,
    /// Why the session failed.
    pub(crate) error: Option<SessionError>,
    /// The deadline the task sleeps until.
    pub(crate) armed: Option<Instant>,
    /// The application waits in `recv`.
    recv_waiting: bool,
    /// A sender waits for room.
    send_waiting: bool,
    /// The task was woken and has not run yet.
    task_woken: bool,
    /// Wake-ups decided under the lock, sent once it is released ([`Guard`]).
    wakes: Wakes,
}

/// Wake-ups to send after the lock is released: a woken party then does not block on it.
#[derive(Debug, Default)]
struct Wakes {
    writers: Vec<Arc<Notify>>,
    readable: bool,
    room: bool,
    task: bool,
}

impl Wakes {
    /// Nobody to wake.
    fn is_empty(&self) -> bool {
        self.writers.is_empty() && !self.readable && !self.room && !self.task
    }
}

/// The locked state; when dropped, releases the lock, then sends the wake-ups decided
/// under it.
pub(crate) struct Guard<'a> {
    core: &'a Core,
    inner: Option<MutexGuard<'a, State>>,
}

impl Deref for Guard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        match &self.inner {
            Some(s) => s,
            None => unreachable!("the lock is held until the guard drops"),
        }
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        match &mut self.inner {
            Some(s) => s,
            None => unreachable!("the lock is held until the guard drops"),
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let Some(mut state) = self.inner.take() else {
            return;
        };
        if state.wakes.is_empty() {
            // The common case (a message queued into a buffer a writer is already draining):
            // nothing to take apart.
            return;
        }
        let wakes = std::mem::take(&mut state.wakes);
        drop(state);
        for writer in wakes.writers {
            writer.notify_one();
        }
        if wakes.readable {
            self.core.readable.notify_one();
        }
        if wakes.room {
            self.core.room.notify_waiters();
        }
        if wakes.task {
            self.core.task.notify_one();
        }
    }
}

/// The shared core of one session.
#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<State>,
    /// Messages became readable, or the session ended.
    pub(crate) readable: Notify,
    /// Room in the send window, or the session ended (every waiting sender is woken).
    pub(crate) room: Notify,
    /// Something for the session's task.
    pub(crate) task: Notify,
}

impl Core {
    /// A core for `engine`, with one producer (the `Session`).
    pub(crate) fn new(engine: SessionEngine) -> Arc<Self> {
        Arc::new(Core {
            state: Mutex::new(State {
                engine,
                outs: Outs::default(),
                now: Instant::now(),
                events: VecDeque::new(),
                closed: Vec::new(),
                producers: 1,
                consumer_gone: false,
                ended: false,
                error: None,
                armed: None,
                recv_waiting: false,
                send_waiting: false,
                task_woken: false,
                wakes: Wakes::default(),
            }),
            readable: Notify::new(),
            room: Notify::new(),
            task: Notify::new(),
        })
    }

    /// The state, locked (wake-ups decided under the lock go out when it is released).
    pub(crate) fn lock(&self) -> Guard<'_> {
        Guard {
            core: self,
            inner: Some(self.state.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    /// The session's counters.
    pub(crate) fn stats(&self) -> SessionStats {
        self.lock().engine.stats()
    }

    /// What our current path runs over.
    pub(crate) fn path_kind(&self) -> Option<PathKind> {
        let s = self.lock();
        s.engine.current_path().and_then(|p| s.engine.path_kind(p))
    }

    /// Why the session failed.
    pub(crate) fn error(&self) -> Option<SessionError> {
        self.lock().error.clone()
    }

    /// Queues `message` (its length already checked), waiting for room in the send window.
    pub(crate) async fn send(&self, message: Bytes) -> Result<(), ChannelError> {
        let mut message = match self.try_send(message) {
            Ok(()) => return Ok(()),
            Err(Ok(message)) => message,
            Err(Err(error)) => return Err(error),
        };
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            message = match self.try_send(message) {
                Ok(()) => return Ok(()),
                Err(Ok(message)) => message,
                Err(Err(error)) => return Err(error),
            };
            room.await;
        }
    }

    /// Queues `message` if the window takes it now; gives it back when full.
    pub(crate) fn try_send(&self, message: Bytes) -> Result<(), Result<Bytes, ChannelError>> {
        let mut s = self.lock();
        if s.ended || s.engine.is_terminated() {
            return Err(Err(ChannelError::Closed));
        }
        if !s.engine.can_send(message.len()) {
            s.send_waiting = true;
            return Err(Ok(message));
        }
        if s.engine.send(message).is_err() {
            return Err(Err(ChannelError::Closed));
        }
        s.pump();
        Ok(())
    }

    /// Queues the messages of `batch` (their lengths already checked) from its front, as
    /// many as the window takes now, under one lock, and removes them from `batch`; the
    /// number queued. `Ok(0)` when the window is full: the caller waits on [`Core::room`].
    pub(crate) fn try_send_batch(&self, batch: &mut Vec<Bytes>) -> Result<usize, ChannelError> {
        let mut s = self.lock();
        if s.ended || s.engine.is_terminated() {
            return Err(ChannelError::Closed);
        }
        let mut queued = 0;
        let mut result = Ok(());
        while let Some(message) = batch.get_mut(queued) {
            if !s.engine.can_send(message.len()) {
                s.send_waiting = true;
                break;
            }
            // Moved, not cloned (the clone of a `Bytes` made from a `Vec` allocates); the
            // engine takes what `can_send` admitted.
            if let Err(error) = s.engine.send(std::mem::take(message)) {
                tracing::debug!(%error, "upgrade session refused a message it had room for");
                result = Err(ChannelError::Closed);
                // Its slot is empty now: not left in the batch.
                batch.remove(queued);
                break;
            }
            queued += 1;
        }
        batch.drain(..queued);
        if queued > 0 {
            s.pump();
        }
        result.map(|()| queued)
    }

    /// Queues every message of `batch` in order, waiting for room while the window is full;
    /// on an error the messages not queued stay in `batch`.
    pub(crate) async fn send_batch(&self, batch: &mut Vec<Bytes>) -> Result<(), ChannelError> {
        while !batch.is_empty() {
            // Registered before the attempt, so a wake-up between the two is not lost.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.try_send_batch(batch)? == 0 {
                room.await;
            }
        }
        Ok(())
    }

    /// Hands up to `max` readable messages to `push`; `Ok(false)` when none is readable
    /// (the caller then waits on [`Core::readable`]); `Err` once none will come.
    pub(crate) fn take(&self, max: usize, mut push: impl FnMut(Bytes)) -> Result<bool, ()> {
        let mut s = self.lock();
        if s.engine.readable() == 0 {
            if s.ended || s.engine.peer_finished() || s.engine.is_terminated() {
                return Err(());
            }
            s.recv_waiting = true;
            return Ok(false);
        }
        s.engine.recv_many(max, &mut push);
        // Reading grants credit: an acknowledgement may be due.
        s.pump();
        Ok(true)
    }
}

impl State {
    /// Encodes what the engine has to write into the paths' buffers (waking a writer whose
    /// buffer was empty), until the current path's buffer is full.
    pub(crate) fn pump(&mut self) {
        loop {
            if let Some(out) = self
                .engine
                .current_path()
                .and_then(|path| self.outs.get_mut(&path))
            {
                if out.buf.len() >= WRITE_BATCH {
                    return;
                }
                // Messages in a run, while nothing else is due (one path lookup for all).
                let was_empty = out.buf.is_empty();
                if self
                    .engine
                    .poll_data_framed(self.now, &mut out.buf, WRITE_BATCH)
                    > 0
                {
                    if was_empty {
                        self.wakes.writers.push(out.wake.clone());
                    }
                    if out.buf.len() >= WRITE_BATCH {
                        return;
                    }
                    // Stopped short of the buffer's end: no message or no credit left, so
                    // another run would encode nothing; only what `poll_transmit_framed`
                    // handles (a `Fin` after the last message) may be due. Straight there,
                    // without a second lookup and run (once per `send`).
                }
            }
            let outs = &mut self.outs;
            let wakes = &mut self.wakes;
            // Frames go straight into the path's buffer; a path without a writer is closed
            // (the engine sends it all again).
            let encoded = self.engine.poll_transmit_framed(self.now, |path| {
                let out = outs.get_mut(&path)?;
                if out.buf.is_empty() {
                    wakes.writers.push(out.wake.clone());
                }
                Some(&mut out.buf)
            });
            match encoded {
                None => return,
                Some(Encoded::Frame { .. }) => {}
                Some(Encoded::Close { path }) => {
                    if let Some(out) = self.outs.get_mut(&path) {
                        out.closing = true;
                        self.wakes.writers.push(out.wake.clone());
                    }
                    self.closed.push(path);
                    self.task_woken = true;
                }
            }
        }
    }

    /// After the engine took input: writes what it has, hands its events to the task, and
    /// wakes whoever waits on a transition (a parked receiver, a parked sender, the task for
    /// events or an earlier deadline).
    pub(crate) fn after_input(&mut self) {
        self.pump();
        while let Some(event) = self.engine.poll_event() {
            if event != SessionEvent::Readable {
                self.events.push_back(event);
                self.task_woken = true;
            }
        }
        if self.recv_waiting && (self.engine.readable() > 0 || self.engine.peer_finished()) {
            self.recv_waiting = false;
            self.wakes.readable = true;
        }
        if self.send_waiting && self.engine.can_send(0) {
            self.send_waiting = false;
            self.wakes.room = true;
        }
        if let Some(at) = self.engine.poll_timeout() {
            if self.armed.is_none_or(|armed| at < armed) {
                self.task_woken = true;
            }
        }
        self.wake_task_if_due();
    }

    /// Wakes the task if something since its last pass is for it.
    pub(crate) fn wake_task_if_due(&mut self) {
        if self.task_woken {
            self.task_woken = false;
            self.wakes.task = true;
        }
    }

    /// The task takes its turn (what woke it is being handled).
    pub(crate) fn task_running(&mut self) {
        self.task_woken = false;
    }

    /// A path's stream ended (read or write failed, or the peer closed it): the engine is
    /// told, the writer closes, the task reports it.
    pub(crate) fn path_ended(&mut self, path: PathId) {
        self.engine.handle_path_closed(self.now, path);
        if let Some(out) = self.outs.get_mut(&path) {
            out.closing = true;
            self.wakes.writers.push(out.wake.clone());
        }
        self.closed.push(path);
        self.task_woken = true;
    }

    /// The session ended: every writer closes, every waiting party wakes.
    pub(crate) fn end(&mut self) {
        self.ended = true;
        for out in self.outs.values_mut() {
            out.closing = true;
            self.wakes.writers.push(out.wake.clone());
        }
        self.recv_waiting = false;
        self.send_waiting = false;
        self.wakes.readable = true;
        self.wakes.room = true;
    }
}

/// A sending handle: counts producers; the last one gone ends our sending.
#[derive(Debug)]
pub(crate) struct Producer(pub(crate) Arc<Core>);

impl Clone for Producer {
    fn clone(&self) -> Self {
        self.0.lock().producers += 1;
        Producer(self.0.clone())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.producers = s.producers.saturating_sub(1);
        if s.producers == 0 {
            s.task_woken = true;
            s.wake_task_if_due();
        }
    }
}

/// The receiving handle: marks the application gone when dropped.
#[derive(Debug)]
pub(crate) struct Consumer(pub(crate) Arc<Core>);

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.consumer_gone = true;
        s.task_woken = true;
        s.wake_task_if_due();
    }
}

/// Reads and writes of a path: the frames of a batch go into the engine under one lock.
pub(crate) fn handle_frames(
    core: &Core,
    path: PathId,
    frames: &mut Vec<crate::wire::Frame>,
    end: bool,
) -> bool {
    let mut s = core.lock();
    let now = Instant::now();
    s.now = now;
    // A violation fails the session (reported by the engine's event).
    let _ = s.engine.handle_frames(now, path, frames.drain(..));
    if end {
        s.path_ended(path);
    }
    s.after_input();
    s.ended
}

/// The current time, recorded in the state.
pub(crate) fn stamp(s: &mut State) -> Instant {
    let now = Instant::now();
    s.now = now;
    now
}

/// Kinds of paths known to the task (kept a little after they close, for late events).
#[derive(Debug, Default)]
pub(crate) struct Kinds {
    recent: VecDeque<(PathId, PathKind)>,
}

impl Kinds {
    /// Remembers a closed path's kind (the last 16).
    pub(crate) fn remember(&mut self, path: PathId, kind: PathKind) {
        if self.recent.len() == 16 {
            self.recent.pop_front();
        }
        self.recent.push_back((path, kind));
    }

    /// A closed path's kind, if remembered.
    pub(crate) fn get(&self, path: PathId) -> Option<PathKind> {
        self.recent
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, k)| *k)
    }
}
