//! The bounded drain of a stream dropped before its remote answered its protocol proposal.
//!
//! A lazily negotiated outbound stream (rust-libp2p's `V1Lazy` dialer: every single-protocol
//! [`OpenStream`](crate::OpenStream), [`StreamControl`](crate::StreamControl) streams) is handed
//! over before the remote confirms the protocol, and its close does not wait for the
//! confirmation. A one-way protocol (kademlia's ADD_PROVIDER, identify's push, a QoS frame)
//! writes its message, closes and drops the stream at once. Dropping a QUIC receive side
//! whose end has not been read makes quinn send STOP_SENDING; a remote that writes its
//! confirmation only after that arrived sees the write fail — rust-libp2p's listener then
//! drops the stream without reading the message (its negotiation fails), so the message is
//! lost although it was delivered. The remote is not wrong: it may confirm whenever it likes.
//!
//! So such a stream is not dropped but handed to a drain: a task that reads and discards
//! what the remote still sends until its end of the stream, so the remote can write its
//! confirmation (and anything else) and finish; only then is the receive side dropped, with
//! no STOP_SENDING. What a hostile remote can make a drain hold is bounded:
//!
//! | bound | value |
//! | --- | --- |
//! | bytes read and discarded per drain | [`DRAIN_MAX_BYTES`] (64 KiB) |
//! | time per drain | [`DRAIN_TIMEOUT`] (10 s) |
//! | drains at once per connection | [`MAX_DRAINS_PER_CONNECTION`] (16) |
//! | drains at once per swarm | [`MAX_DRAINS`] (1,024) |
//!
//! Past a byte or time bound the drain drops the stream (quinn then asks the remote to stop
//! sending, as without a drain); past a count bound, or dropped outside a Tokio runtime (no
//! task to drain in), the stream is dropped at once, as without a drain. A drain holds no resource-manager share and does not keep its connection
//! alive (the stream counts as ended for the idle rule); the connection's closing ends it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};

/// The most a drain reads (and discards) from the remote before it gives up and drops the
/// stream (64 KiB). A confirmation is a few dozen bytes; a remote still sending past this
/// is not answering a proposal.
pub const DRAIN_MAX_BYTES: usize = 64 * 1024;

/// The longest a drain waits for the remote's end of the stream (10 s), after which it
/// drops the stream.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The most drains running at once for one connection (16); a stream dropped past it is
/// dropped as without a drain.
pub const MAX_DRAINS_PER_CONNECTION: usize = 16;

/// The most drains running at once in one swarm, over all its connections (1,024).
pub const MAX_DRAINS: usize = 1024;

/// The size of a drain's read buffer (part of its task's future, so kept small).
const READ_CHUNK: usize = 1024;

/// The drain counters: one per connection (in its `StreamCounters`), one per swarm shared by
/// every connection's.
#[derive(Debug)]
pub(crate) struct DrainCounters {
    connection: AtomicUsize,
    swarm: Arc<AtomicUsize>,
}

impl DrainCounters {
    pub(crate) fn new(swarm: Arc<AtomicUsize>) -> Self {
        DrainCounters {
            connection: AtomicUsize::new(0),
            swarm,
        }
    }

    /// Drains running for this connection.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.connection.load(Ordering::Acquire)
    }
}

/// One drain's place under both count bounds, given back when dropped.
#[derive(Debug)]
struct Permit {
    counters: Arc<super::StreamCounters>,
}

impl Permit {
    fn acquire(counters: &Arc<super::StreamCounters>) -> Option<Permit> {
        let drains = &counters.drains;
        if !take_slot(&drains.connection, MAX_DRAINS_PER_CONNECTION) {
            return None;
        }
        if !take_slot(&drains.swarm, MAX_DRAINS) {
            drains.connection.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit {
            counters: counters.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let drains = &self.counters.drains;
        drains.swarm.fetch_sub(1, Ordering::AcqRel);
        drains.connection.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one of `max` slots of `count`; false when all are taken.
fn take_slot(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// How a drain ended.
#[derive(Debug)]
enum Drained {
    /// The remote's end of the stream was read: the receive side goes without STOP_SENDING.
    End { bytes: usize },
    /// [`DRAIN_MAX_BYTES`] read without the end.
    TooMuch,
}

/// Hands `stream`'s transport stream to a drain task if both count bounds and a Tokio
/// runtime allow it; otherwise leaves it to be dropped with the stream. `close_first`: our
/// write side was not closed yet; the drain closes it first, as dropping it would have
/// (only for transports whose drop ends the write side gracefully).
pub(super) fn start(
    io: &mut meshwire_transport::Stream,
    close_first: bool,
    counters: &Arc<super::StreamCounters>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::trace!("stream dropped before its confirmation, outside a runtime: not drained");
        return;
    };
    let Some(permit) = Permit::acquire(counters) else {
        tracing::debug!(
            per_connection = MAX_DRAINS_PER_CONNECTION,
            per_swarm = MAX_DRAINS,
            "stream dropped before its confirmation: drain limit reached, dropped at once"
        );
        return;
    };
    let stream = io.detach();
    runtime.spawn(run(stream, close_first, permit));
}

/// The drain task: our end first if it is not written yet, then the remote's side read and
/// discarded until its end, within [`DRAIN_MAX_BYTES`] and [`DRAIN_TIMEOUT`].
async fn run(mut stream: meshwire_transport::Stream, close_first: bool, _permit: Permit) {
    let outcome = tokio::time::timeout(DRAIN_TIMEOUT, async {
        if close_first {
            stream.close().await?;
        }
        let mut buf = [0u8; READ_CHUNK];
        let mut bytes = 0usize;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(Drained::End { bytes });
            }
            bytes = bytes.saturating_add(n);
            if bytes >= DRAIN_MAX_BYTES {
                return Ok(Drained::TooMuch);
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(Drained::End { bytes })) => {
            tracing::trace!(bytes, "drained a dropped stream to the remote's end")
        }
        Ok(Ok(Drained::TooMuch)) => {
            tracing::debug!(
                limit = DRAIN_MAX_BYTES,
                "drained stream: the remote sent more than the drain reads; stopped"
            )
        }
        Ok(Err(error)) => tracing::trace!(%error, "drained stream failed"),
        Err(_) => tracing::debug!(
            timeout = ?DRAIN_TIMEOUT,
            "drained stream: the remote did not end it in time; stopped"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let count = AtomicUsize::new(0);
        assert!(take_slot(&count, 2));
        assert!(take_slot(&count, 2));
        assert!(!take_slot(&count, 2));
        count.fetch_sub(1, Ordering::AcqRel);
        assert!(take_slot(&count, 2));
        assert_eq!(count.load(Ordering::Acquire), 2);
    }

    #[test]
    fn a_permit_takes_both_bounds_and_gives_both_back() {
        let swarm = Arc::new(AtomicUsize::new(MAX_DRAINS - 1));
        let a = super::super::StreamCounters::new(swarm.clone());
        let b = super::super::StreamCounters::new(swarm.clone());
        let first = Permit::acquire(&a).expect("one slot left in the swarm");
        assert_eq!(a.drains.running(), 1);
        // The swarm's bound is reached: another connection gets none, and keeps no slot.
        assert!(Permit::acquire(&b).is_none());
        assert_eq!(b.drains.running(), 0);
        drop(first);
        assert_eq!(a.drains.running(), 0);
        assert_eq!(swarm.load(Ordering::Acquire), MAX_DRAINS - 1);

        // The connection's bound.
        let swarm = Arc::new(AtomicUsize::new(0));
        let c = super::super::StreamCounters::new(swarm.clone());
        let permits: Vec<_> = (0..MAX_DRAINS_PER_CONNECTION)
            .map(|_| Permit::acquire(&c).expect("under the connection's bound"))
            .collect();
        assert!(Permit::acquire(&c).is_none());
        assert_eq!(swarm.load(Ordering::Acquire), MAX_DRAINS_PER_CONNECTION);
        drop(permits);
        assert_eq!(swarm.load(Ordering::Acquire), 0);
    }
}
