//! [`bridge`]: relays bytes both ways between two streams, in bounded memory, within limits.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

use super::{CircuitEnd, CircuitEndReason, CircuitLimits};

/// Buffer size per direction that relays use unless told otherwise: 8 KiB, the size of the
/// `BufReader` behind each direction of rust-libp2p's `CopyFuture` (go-libp2p's relay uses
/// 2 KiB, `Resources.BufferSize`).
pub const DEFAULT_BUFFER_SIZE: usize = 8 * 1024;

/// Most reads or writes one direction makes per poll before yielding to other tasks.
const STEPS_PER_POLL: usize = 16;

/// A stream that can be aborted: the remote's reads and writes fail instead of seeing a clean
/// end. [`bridge`] resets both streams when a limit cuts a circuit or a stream fails.
pub trait Reset {
    /// Resets the stream in both directions.
    fn reset(&mut self);
}

impl Reset for meshwire_swarm::Stream {
    fn reset(&mut self) {
        meshwire_swarm::Stream::reset(self)
    }
}

/// Relays bytes between `a` and `b` in both directions until both sides have finished
/// writing, a limit is reached, or a stream fails; returns the bytes relayed each way and why
/// it stopped.
///
/// - Memory is bounded: one buffer of `buf_size` bytes per direction (at least 1), allocated
///   once; nothing else grows.
/// - Half-close is propagated: when `a` ends (reads end-of-stream), everything read from it is
///   written to `b` and then `b`'s writing half is closed, while `b` → `a` goes on (and the
///   other way round). Both halves closed is [`CircuitEndReason::Finished`]; the streams are
///   then dropped.
/// - `limits.duration` counts from the call; `limits.bytes` bounds the bytes read from both
///   sides together, and no byte past it is forwarded (see the module docs). On either limit,
///   or on an error of either stream, both streams are [reset](Reset) and dropped.
///
/// Runs on a tokio runtime with the time driver (the duration limit is a `tokio::time`
/// sleep).
pub async fn bridge<A, B>(mut a: A, mut b: B, limits: CircuitLimits, buf_size: usize) -> CircuitEnd
where
    A: AsyncRead + AsyncWrite + Reset + Unpin,
    B: AsyncRead + AsyncWrite + Reset + Unpin,
{
    let mut a_to_b = Half::new(buf_size);
    let mut b_to_a = Half::new(buf_size);
    let mut budget = Budget {
        read: 0,
        limit: limits.bytes,
    };
    let mut deadline = limits.duration.map(|d| Box::pin(tokio::time::sleep(d)));

    let outcome = poll_fn(|cx| {
        if let Some(sleep) = deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Stop::Duration));
            }
        }
        let ab = a_to_b.poll(&mut a, &mut b, &mut budget, cx)?;
        let ba = b_to_a.poll(&mut b, &mut a, &mut budget, cx)?;
        if ab.is_ready() && ba.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;

    let reason = match outcome {
        Ok(()) => CircuitEndReason::Finished,
        Err(stop) => {
            a.reset();
            b.reset();
            match stop {
                Stop::Duration => CircuitEndReason::DurationLimit,
                Stop::Data => CircuitEndReason::DataLimit,
                Stop::Io(e) => CircuitEndReason::Error(e.kind()),
            }
        }
    };
    CircuitEnd {
        bytes_a_to_b: a_to_b.written,
        bytes_b_to_a: b_to_a.written,
        reason,
    }
}

/// Why relaying stopped early.
enum Stop {
    Duration,
    Data,
    Io(io::Error),
}

/// The data limit, shared by both directions.
struct Budget {
    /// Bytes read from both sides so far.
    read: u64,
    /// Most bytes that may be read (and so relayed).
    limit: Option<u64>,
}

/// One direction: bytes read from one stream, waiting in `buf[start..end]` to be written to
/// the other.
struct Half {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The reader reached end-of-stream.
    eof: bool,
    /// The writer's half was closed after `eof`: this direction is done.
    closed: bool,
    /// Written since the last flush.
    unflushed: bool,
    /// Bytes written so far.
    written: u64,
}

impl Half {
    fn new(buf_size: usize) -> Self {
        Half {
            buf: vec![0; buf_size.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            closed: false,
            unflushed: false,
            written: 0,
        }
    }

    /// Moves bytes from `reader` to `writer` until one of them would block; `Ready` once this
    /// direction is done.
    fn poll<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        budget: &mut Budget,
        cx: &mut Context<'_>,
    ) -> Result<Poll<()>, Stop>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..STEPS_PER_POLL {
            if self.closed {
                return Ok(Poll::Ready(()));
            }
            if self.start < self.end {
                match Pin::new(&mut *writer).poll_write(cx, &self.buf[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => return Err(Stop::Io(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.written += n as u64;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Err(Stop::Io(e)),
                    Poll::Pending => return Ok(Poll::Pending),
                }
            } else if self.eof {
                return match Pin::new(&mut *writer).poll_close(cx) {
                    Poll::Ready(Ok(())) => {
                        self.closed = true;
                        Ok(Poll::Ready(()))
                    }
                    Poll::Ready(Err(e)) => Err(Stop::Io(e)),
                    Poll::Pending => Ok(Poll::Pending),
                };
            } else {
                self.start = 0;
                self.end = 0;
                match Pin::new(&mut *reader).poll_read(cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) => self.eof = true,
                    Poll::Ready(Ok(n)) => {
                        if let Some(limit) = budget.limit {
                            if budget.read.saturating_add(n as u64) > limit {
                                return Err(Stop::Data);
                            }
                        }
                        budget.read += n as u64;
                        self.end = n;
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Ready(Err(e)) => return Err(Stop::Io(e)),
                    Poll::Pending => {
                        // Nothing more to write for now: push out what was written.
                        if self.unflushed {
                            match Pin::new(&mut *writer).poll_flush(cx) {
                                Poll::Ready(Ok(())) => self.unflushed = false,
                                Poll::Ready(Err(e)) => return Err(Stop::Io(e)),
                                Poll::Pending => {}
                            }
                        }
                        return Ok(Poll::Pending);
                    }
                }
            }
        }
        // Still busy after a full turn: let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Ok(Poll::Pending)
    }
}
