//! [`Outbox`]: a behaviour's bounded queue of commands for the swarm.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::task::{Context, Poll, Waker};

use crate::{OpenStream, StreamRequestId, ToSwarm};

/// The outbox holds its limit of commands and stream requests; nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("command queue limit of {limit} reached")]
pub struct QueueFull {
    /// The limit.
    pub limit: usize,
}

/// A bounded queue of [`ToSwarm`] commands for a behaviour's `poll`, which also remembers a
/// context `C` for every stream it asked for until [`Outbox::take_stream`] claims it in
/// `on_outbound_stream`.
///
/// The limit counts queued commands and stream requests still in flight together, so a
/// behaviour that accepts work from the application (or from peers) cannot be made to grow
/// without bound. The outbox wakes the last poller when something is queued.
///
/// ```
/// use meshwire_swarm::toolkit::Outbox;
/// use meshwire_swarm::{OpenStream, PeerId, StreamProtocol, ToSwarm};
/// # use meshwire_core::Keypair;
///
/// const PROTOCOL: StreamProtocol = StreamProtocol::new("/example/1.0.0");
/// let peer: PeerId = Keypair::generate().peer_id();
/// // Context kept per stream request: the message to send on it.
/// let mut outbox: Outbox<(), Vec<u8>> = Outbox::new(16);
/// let id = outbox.open_stream(OpenStream::new(peer, PROTOCOL), b"hi".to_vec()).unwrap();
/// // ... the behaviour's poll hands the request to the swarm, and later, in
/// // on_outbound_stream(result) with result.id == id:
/// assert_eq!(outbox.take_stream(id), Some(b"hi".to_vec()));
/// assert_eq!(outbox.take_stream(id), None);
/// ```
pub struct Outbox<E, C = ()> {
    queue: VecDeque<ToSwarm<E>>,
    streams: HashMap<StreamRequestId, C>,
    limit: usize,
    waker: Option<Waker>,
}

impl<E, C> fmt::Debug for Outbox<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.queue.len())
            .field("streams", &self.streams.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl<E, C> Outbox<E, C> {
    /// An empty outbox holding at most `limit` commands and stream requests together.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            streams: HashMap::new(),
            limit,
            waker: None,
        }
    }

    fn check_room(&self) -> Result<(), QueueFull> {
        if self.len() >= self.limit {
            return Err(QueueFull { limit: self.limit });
        }
        Ok(())
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Queues a command.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] at the limit.
    pub fn push(&mut self, command: ToSwarm<E>) -> Result<(), QueueFull> {
        self.check_room()?;
        self.queue.push_back(command);
        self.wake();
        Ok(())
    }

    /// Queues an event for the application.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] at the limit.
    pub fn event(&mut self, event: E) -> Result<(), QueueFull> {
        self.push(ToSwarm::GenerateEvent(event))
    }

    /// Queues a stream request and keeps `context` for its answer.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] at the limit.
    pub fn open_stream(
        &mut self,
        request: OpenStream,
        context: C,
    ) -> Result<StreamRequestId, QueueFull> {
        // The request is answered later, so it counts twice until it leaves the queue.
        if self.len() + 1 >= self.limit {
            return Err(QueueFull { limit: self.limit });
        }
        let id = request.id;
        self.streams.insert(id, context);
        self.queue.push_back(ToSwarm::OpenStream(request));
        self.wake();
        Ok(id)
    }

    /// The context of the stream request `id`, once (call it in `on_outbound_stream`).
    /// `None` for a request this outbox did not make.
    pub fn take_stream(&mut self, id: StreamRequestId) -> Option<C> {
        self.streams.remove(&id)
    }

    /// The context of the stream request `id`, if it is still awaited.
    pub fn stream(&self, id: &StreamRequestId) -> Option<&C> {
        self.streams.get(id)
    }

    /// The next queued command; `Pending` (with the waker kept) when empty.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<E>> {
        match self.queue.pop_front() {
            Some(command) => Poll::Ready(command),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Queued commands plus stream requests awaiting their answer.
    pub fn len(&self) -> usize {
        self.queue.len() + self.streams.len()
    }

    /// Whether nothing is queued or awaited.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.streams.is_empty()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamProtocol;
    use meshwire_core::Keypair;

    const P: StreamProtocol = StreamProtocol::new("/t/1");

    #[test]
    fn limit_counts_queue_and_streams_in_flight() {
        let peer = Keypair::generate().peer_id();
        let mut outbox: Outbox<u8, u8> = Outbox::new(3);
        let id = outbox.open_stream(OpenStream::new(peer, P), 1).unwrap();
        outbox.event(7).unwrap();
        // 1 queued open + 1 awaited answer + 1 event = 3.
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.event(8), Err(QueueFull { limit: 3 }));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(outbox.poll(&mut cx), Poll::Ready(ToSwarm::OpenStream(o)) if o.id == id));
        assert!(matches!(
            outbox.poll(&mut cx),
            Poll::Ready(ToSwarm::GenerateEvent(7))
        ));
        assert!(outbox.poll(&mut cx).is_pending());
        // The answer is still awaited.
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.take_stream(id), Some(1));
        assert!(outbox.is_empty());
    }

    #[test]
    fn open_stream_needs_room_for_its_answer() {
        let peer = Keypair::generate().peer_id();
        let mut outbox: Outbox<u8, ()> = Outbox::new(2);
        outbox.event(1).unwrap();
        assert!(outbox.open_stream(OpenStream::new(peer, P), ()).is_err());
        assert_eq!(outbox.len(), 1);
    }
}
