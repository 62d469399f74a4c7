//! The per-connection acceptor: one task per established connection accepts the streams the
//! remote opens, applies the per-connection limits (open inbound streams, the rate of new
//! ones), reserves each stream in the resource manager, negotiates it, and hands it over —
//! straight to a [`StreamControl`](crate::StreamControl)'s receiver when one registered the
//! protocol, otherwise to the swarm's task for the behaviour that claims it.
//!
//! Why a task of its own: an inbound stream used to cost two trips through the swarm's task
//! (accepted, then negotiated), each behind a poll of every behaviour, timer and listener.
//! Here accepting and negotiating run beside the connection, and a stream-control stream
//! never enters the swarm's task at all.
//!
//! The rate limits ([`SwarmConfig::inbound_stream_rate`](crate::SwarmConfig) per connection,
//! [`SwarmConfig::inbound_stream_rate_total`](crate::SwarmConfig) for the whole node, a
//! bucket every acceptor draws from) are token buckets: when one is empty the acceptor stops
//! accepting, so the streams the remote opens wait in the transport, which grants the remote
//! no new stream credit until they are taken (QUIC's `MAX_STREAMS`, Yamux's window of pending
//! streams) — churning peers are slowed at their own end rather than costing the node a
//! packet, an accept and a reset per stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, Direction, PeerId};
use meshwire_rcmgr::ResourceManager;
use meshwire_transport::multistream;
use meshwire_transport::{Connection, ConnectionError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::behaviour::InboundStream;
use crate::config::StreamRate;
use crate::control::{self, Delivery};
use crate::error::StreamError;
use crate::protocol::StreamProtocol;
use crate::stream::{Stream, StreamCounters, StreamGuard, NEGOTIATION};

/// The protocols inbound streams are negotiated against, shared by the swarm (which sets
/// them) and every acceptor (which reads them once per stream).
pub(super) type SharedProtocols = Arc<RwLock<Arc<[StreamProtocol]>>>;

/// What an acceptor hands to the swarm's task.
pub(super) enum Inbound {
    /// A negotiated stream for a behaviour.
    Stream(InboundStream),
    /// A stream refused or failed before it reached anyone.
    Error {
        peer: PeerId,
        connection: ConnectionId,
        error: StreamError,
    },
}

/// Everything an acceptor needs, fixed for the connection's life.
pub(super) struct AcceptorParams {
    pub(super) id: ConnectionId,
    pub(super) conn: Connection,
    pub(super) counters: Arc<StreamCounters>,
    pub(super) resources: ResourceManager,
    pub(super) protocols: SharedProtocols,
    pub(super) control: Arc<control::Shared>,
    pub(super) max_inbound: usize,
    pub(super) negotiation_timeout: Duration,
    pub(super) rate: Option<StreamRate>,
    /// The node-wide bucket, shared by every acceptor.
    pub(super) total: Option<SharedBucket>,
    pub(super) tx: mpsc::UnboundedSender<Inbound>,
    /// Error reports sent and not yet taken by the swarm's task, all acceptors together.
    pub(super) queued_errors: Arc<AtomicUsize>,
}

/// Error reports that may wait for the swarm's task, all connections together; past it a
/// refused stream is counted (`swarm_inbound_stream_errors_total`) without an event, so a
/// peer resetting streams faster than the swarm's task runs cannot grow the queue.
pub(super) const MAX_QUEUED_ERRORS: usize = 1024;

/// The node-wide bucket of [`SwarmConfig::inbound_stream_rate_total`](crate::SwarmConfig).
pub(super) type SharedBucket = Arc<Mutex<Bucket>>;

/// A new node-wide bucket.
pub(super) fn shared_bucket(rate: StreamRate) -> SharedBucket {
    Arc::new(Mutex::new(Bucket::new(rate, Instant::now())))
}

type Negotiation = BoxFuture<'static, (StreamGuard, Result<InboundStreamParts, StreamError>)>;

type InboundStreamParts = (
    StreamProtocol,
    multistream::Negotiated<meshwire_transport::Stream>,
);

/// The acceptor's future: ends when the connection closes or the swarm is gone.
pub(super) struct Acceptor {
    p: AcceptorParams,
    peer: PeerId,
    accept: BoxFuture<'static, Result<meshwire_transport::Stream, ConnectionError>>,
    negotiating: FuturesUnordered<Negotiation>,
    bucket: Option<Bucket>,
    /// Armed while the bucket is empty.
    refill: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn accept_next(
    conn: &Connection,
) -> BoxFuture<'static, Result<meshwire_transport::Stream, ConnectionError>> {
    let c = conn.clone();
    async move { c.accept_stream().await }.boxed()
}

impl Acceptor {
    pub(super) fn new(p: AcceptorParams) -> Self {
        let now = Instant::now();
        Acceptor {
            peer: p.conn.peer_id(),
            accept: accept_next(&p.conn),
            bucket: p.rate.map(|r| Bucket::new(r, now)),
            negotiating: FuturesUnordered::new(),
            refill: None,
            p,
        }
    }

    /// Reports a refused or failed stream to the swarm (an
    /// [`InboundStreamError`](crate::SwarmEvent::InboundStreamError)); past
    /// [`MAX_QUEUED_ERRORS`] reports waiting for the swarm's task, it is only counted.
    fn report(&self, error: StreamError) {
        if self.p.queued_errors.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_ERRORS {
            self.p.queued_errors.fetch_sub(1, Ordering::AcqRel);
            self.p.control.count_inbound_error();
            return;
        }
        let _ = self.p.tx.send(Inbound::Error {
            peer: self.peer,
            connection: self.p.id,
            error,
        });
    }

    /// Admits an accepted stream: limits, reservation, then negotiation.
    fn admit(&mut self, mut stream: meshwire_transport::Stream) {
        let limit = self.p.max_inbound;
        if self.p.counters.inbound() >= limit {
            stream.reset();
            return self.report(StreamError::TooManyStreams { limit });
        }
        let scope = match self.p.resources.open_stream(self.peer, Direction::Inbound) {
            Ok(scope) => scope,
            Err(e) => {
                stream.reset();
                return self.report(e.into());
            }
        };
        let guard = StreamGuard::new(self.p.counters.clone(), true, scope);
        let protocols = self
            .p
            .protocols
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let timeout = self.p.negotiation_timeout;
        self.negotiating.push(
            async move {
                let neg =
                    multistream::listener_select_with_config(stream, &protocols[..], &NEGOTIATION);
                let result = match tokio::time::timeout(timeout, neg).await {
                    Ok(Ok((name, io))) => match protocols.iter().find(|p| p.as_str() == name) {
                        Some(p) => Ok((p.clone(), io)),
                        None => {
                            let mut io = io;
                            io.get_mut().reset();
                            Err(StreamError::UnsupportedProtocols)
                        }
                    },
                    Ok(Err(e)) => Err(StreamError::from_negotiation(e)),
                    Err(_) => Err(StreamError::Timeout),
                };
                (guard, result)
            }
            .boxed(),
        );
    }

    /// A negotiation finished: hand the stream over.
    fn negotiated(
        &mut self,
        mut guard: StreamGuard,
        result: Result<InboundStreamParts, StreamError>,
    ) {
        let (protocol, io) = match result {
            Ok(parts) => parts,
            Err(error) => {
                tracing::debug!(connection = %self.p.id, peer = %self.peer, %error, "inbound stream negotiation failed");
                return self.report(error);
            }
        };
        if let Err(e) = guard.set_protocol(protocol.as_str()) {
            let mut io = io;
            io.get_mut().reset();
            return self.report(e.into());
        }
        let stream = InboundStream {
            peer: self.peer,
            connection: self.p.id,
            protocol,
            stream: Stream::new(io, guard),
        };
        // A protocol registered with a stream control goes there first, from this task.
        match self.p.control.deliver(stream) {
            Delivery::Delivered => self.p.control.count_inbound(),
            Delivery::NotRegistered(mut stream) => {
                // A behaviour may hold its stream without using it while the dialer waits
                // for the confirmation (a confirmed `OpenStream`, a non-lazy dialer): it is
                // written here, as it was before the handover — unless the dialer's request
                // already arrived with its proposal (an optimistic dialer, which does not
                // wait): then it goes with the answer.
                if stream.stream.confirm_unless_data() {
                    tracing::trace!(connection = %self.p.id, "confirmation left to the answer (optimistic dialer)");
                }
                let _ = self.p.tx.send(Inbound::Stream(stream));
            }
            Delivery::Refused(error) => self.report(error),
        }
    }

    /// Takes a token from the connection's bucket and the node's, or says how long until
    /// both have one (taking none).
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = &mut self.bucket {
            bucket.take(now)?;
        }
        if let Some(total) = &self.p.total {
            let taken = total.lock().unwrap_or_else(|e| e.into_inner()).take(now);
            if let Err(wait) = taken {
                if let Some(bucket) = &mut self.bucket {
                    bucket.give_back();
                }
                return Err(wait);
            }
        }
        Ok(())
    }

    /// Returns the tokens of an accept that found nothing.
    fn give_back(&mut self) {
        if let Some(bucket) = &mut self.bucket {
            bucket.give_back();
        }
        if let Some(total) = &self.p.total {
            total.lock().unwrap_or_else(|e| e.into_inner()).give_back();
        }
    }

    /// Whether the rate limits let one more stream in now; arms the refill timer if not.
    fn take_token(&mut self, cx: &mut Context<'_>) -> bool {
        if self.bucket.is_none() && self.p.total.is_none() {
            return true;
        }
        loop {
            let now = Instant::now();
            let wait = match self.try_take(now) {
                Ok(()) => {
                    self.refill = None;
                    return true;
                }
                Err(wait) => wait,
            };
            let at = now + wait;
            let sleep = self
                .refill
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            // Pending: the timer is armed and wakes the task. Ready: the wait passed meanwhile
            // (a loaded machine), so look again — another acceptor may have taken the node's
            // token, in which case the timer is re-armed for the new wait.
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl Future for Acceptor {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.p.tx.is_closed() {
            // The swarm is gone.
            return Poll::Ready(());
        }
        // Streams accepted in one poll before the task yields to others on its thread.
        const BUDGET: usize = 64;
        for _ in 0..BUDGET {
            while let Poll::Ready(Some((guard, result))) = this.negotiating.poll_next_unpin(cx) {
                this.negotiated(guard, result);
            }
            if !this.take_token(cx) {
                return Poll::Pending;
            }
            match this.accept.poll_unpin(cx) {
                Poll::Ready(Ok(stream)) => {
                    this.accept = accept_next(&this.p.conn);
                    this.admit(stream);
                }
                Poll::Ready(Err(_)) => {
                    // The connection is closed; the swarm's close watcher reports it.
                    this.give_back();
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    // The tokens were not used.
                    this.give_back();
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub(super) struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: StreamRate, now: Instant) -> Self {
        let burst = f64::from(rate.burst.max(1));
        Bucket {
            per_second: f64::from(rate.per_second.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.per_second).max(Duration::from_micros(50)))
        }
    }

    /// Returns a token taken for an accept that found nothing.
    fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// Aborts the acceptor's task when the connection leaves the pool.
#[derive(Debug)]
pub(super) struct AcceptorHandle(Option<tokio::task::AbortHandle>);

impl AcceptorHandle {
    /// Runs `acceptor` as a task of its own; without a tokio runtime (it cannot be spawned)
    /// it is returned to be driven with the swarm's own tasks.
    pub(super) fn spawn(acceptor: Acceptor) -> (Self, Option<Acceptor>) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => (
                AcceptorHandle(Some(rt.spawn(acceptor).abort_handle())),
                None,
            ),
            Err(_) => (AcceptorHandle(None), Some(acceptor)),
        }
    }
}

impl Drop for AcceptorHandle {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            StreamRate {
                per_second: 100,
                burst: 3,
            },
            t0,
        );
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait >= Duration::from_millis(9) && wait <= Duration::from_millis(11));
        assert!(b.take(t0 + Duration::from_millis(10)).is_ok());
        // Saved up no more than the burst.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
        b.give_back();
        assert!(b.take(later).is_ok());
    }
}
