//! A bounded message queue between the application and the session's driver, taken in
//! batches: one lock per message on the producing side, one lock per batch on the consuming
//! side, and a wake-up only when the queue goes from empty to not empty (or from full to not
//! full). It replaces a channel send and receive per message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// The queue's state.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The messages, oldest first.
    pub(crate) items: VecDeque<Bytes>,
    /// At most this many messages.
    cap: usize,
    /// Producers alive (the queue closes when it drops to zero).
    producers: usize,
    /// The consumer is gone.
    consumer_gone: bool,
}

impl Inner {
    /// Whether another message fits.
    pub(crate) fn has_room(&self) -> bool {
        self.items.len() < self.cap
    }

    /// Whether every producer is gone (what is queued can still be taken).
    pub(crate) fn closed(&self) -> bool {
        self.producers == 0
    }
}

/// A bounded queue of messages.
#[derive(Debug)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// Messages arrived (one stored permit: the consumer never misses one).
    items: Notify,
    /// Room freed (every waiting producer is woken).
    room: Notify,
    /// The consumer is gone (one stored permit, for the producer that watches for it).
    gone: Notify,
}

impl Queue {
    /// A queue of at most `cap` messages with one producer.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(cap.clamp(1, 1024)),
                cap: cap.max(1),
                producers: 1,
                consumer_gone: false,
            }),
            items: Notify::new(),
            room: Notify::new(),
            gone: Notify::new(),
        })
    }

    /// The state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `message` if there is room: `Ok(true)`; `Ok(false)` when full; `Err` when the
    /// consumer is gone.
    pub(crate) fn try_push(&self, message: Bytes) -> Result<bool, Bytes> {
        match self.try_push_or_return(message) {
            Ok(()) => Ok(true),
            Err(Ok(_)) => Ok(false),
            Err(Err(message)) => Err(message),
        }
    }

    /// Appends `message` if there is room; else gives it back: `Ok` when full, `Err` when
    /// the consumer is gone.
    fn try_push_or_return(&self, message: Bytes) -> Result<(), Result<Bytes, Bytes>> {
        let mut inner = self.lock();
        if inner.consumer_gone {
            return Err(Err(message));
        }
        if !inner.has_room() {
            return Err(Ok(message));
        }
        let was_empty = inner.items.is_empty();
        inner.items.push_back(message);
        drop(inner);
        if was_empty {
            self.items.notify_one();
        }
        Ok(())
    }

    /// Appends `message`, waiting for room; `Err` when the consumer is gone.
    pub(crate) async fn push(&self, message: Bytes) -> Result<(), Bytes> {
        // With room (the usual case) no waiter is registered.
        let message = match self.try_push_or_return(message) {
            Ok(()) => return Ok(()),
            Err(Ok(message)) => message,
            Err(Err(message)) => return Err(message),
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.consumer_gone {
                    return Err(message);
                }
                if inner.has_room() {
                    let was_empty = inner.items.is_empty();
                    inner.items.push_back(message);
                    drop(inner);
                    if was_empty {
                        self.items.notify_one();
                    }
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Appends messages from `next` while there is room and it yields some (one lock, one
    /// wake-up); `Err` when the consumer is gone.
    pub(crate) fn push_batch(&self, mut next: impl FnMut() -> Option<Bytes>) -> Result<(), ()> {
        let mut inner = self.lock();
        if inner.consumer_gone {
            return Err(());
        }
        let was_empty = inner.items.is_empty();
        while inner.has_room() {
            match next() {
                Some(message) => inner.items.push_back(message),
                None => break,
            }
        }
        let wake = was_empty && !inner.items.is_empty();
        drop(inner);
        if wake {
            self.items.notify_one();
        }
        Ok(())
    }

    /// Waits until messages may have arrived or the producers are gone (may wake spuriously).
    pub(crate) async fn wait_items(&self) {
        self.items.notified().await;
    }

    /// Waits until room may have been freed (may wake spuriously).
    pub(crate) async fn wait_room(&self) {
        let room = self.room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        if self.lock().has_room() {
            return;
        }
        room.await;
    }

    /// Tells the producers that room was freed (after taking messages from a full queue).
    pub(crate) fn room_freed(&self) {
        self.room.notify_waiters();
    }

    /// Takes every queued message into `into` (which should be empty); whether any were
    /// taken, `None` once nothing is left and every producer is gone.
    pub(crate) fn take_all(&self, into: &mut VecDeque<Bytes>) -> Option<bool> {
        let mut inner = self.lock();
        if inner.items.is_empty() {
            return if inner.closed() { None } else { Some(false) };
        }
        let was_full = !inner.has_room();
        std::mem::swap(&mut inner.items, into);
        drop(inner);
        if was_full {
            self.room_freed();
        }
        Some(true)
    }

    /// A new producer.
    pub(crate) fn add_producer(&self) {
        self.lock().producers += 1;
    }

    /// A producer is gone; the last one closes the queue.
    pub(crate) fn drop_producer(&self) {
        let mut inner = self.lock();
        inner.producers = inner.producers.saturating_sub(1);
        let closed = inner.closed();
        drop(inner);
        if closed {
            self.items.notify_one();
        }
    }

    /// The consumer is gone: producers fail from now on.
    pub(crate) fn drop_consumer(&self) {
        self.lock().consumer_gone = true;
        self.room.notify_waiters();
        self.gone.notify_one();
    }

    /// Whether the consumer is gone.
    pub(crate) fn consumer_gone(&self) -> bool {
        self.lock().consumer_gone
    }

    /// Waits until the consumer is gone (at once if it went while nobody waited).
    pub(crate) async fn wait_gone(&self) {
        self.gone.notified().await;
    }
}

/// A producer's handle: counts producers, closes the queue when the last is dropped.
#[derive(Debug)]
pub(crate) struct Producer(pub(crate) Arc<Queue>);

impl Clone for Producer {
    fn clone(&self) -> Self {
        self.0.add_producer();
        Producer(self.0.clone())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.drop_producer();
    }
}

/// The consumer's handle: marks the queue's consumer gone when dropped.
#[derive(Debug)]
pub(crate) struct Consumer(pub(crate) Arc<Queue>);

impl Drop for Consumer {
    fn drop(&mut self) {
        self.0.drop_consumer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closes_with_the_last_producer() {
        let q = Queue::new(2);
        let p = Producer(q.clone());
        let c = Consumer(q.clone());
        assert_eq!(p.0.try_push(Bytes::from_static(b"a")), Ok(true));
        assert_eq!(p.0.try_push(Bytes::from_static(b"b")), Ok(true));
        assert_eq!(p.0.try_push(Bytes::from_static(b"c")), Ok(false));
        let p2 = p.clone();
        let waiting = tokio::spawn(async move { p2.0.push(Bytes::from_static(b"c")).await });
        tokio::task::yield_now().await;
        let mut got = VecDeque::new();
        assert_eq!(c.0.take_all(&mut got), Some(true));
        assert_eq!(got, [&b"a"[..], &b"b"[..]]);
        waiting.await.unwrap().unwrap();
        got.clear();
        drop(p);
        assert_eq!(c.0.take_all(&mut got), Some(true));
        assert_eq!(got, [&b"c"[..]]);
        got.clear();
        assert_eq!(c.0.take_all(&mut got), None);
        drop(c);
        assert!(q.try_push(Bytes::new()).is_err());
    }
}
