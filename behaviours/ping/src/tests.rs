//! Unit tests of the behaviour's state machine, driven by hand (no swarm, no streams: the
//! swarm's `Stream` can only be made by the swarm; stream I/O is tested in `protocol`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::{noop_waker_ref, waker, ArcWake};
use meshwire_swarm::{
    ConnectedPoint, ConnectionCloseCause, FromSwarm, Multiaddr, NetworkBehaviour, OpenStream,
    OutboundStreamResult, StreamError, ToSwarm,
};

use super::*;

/// A transport connection to hand to `FromSwarm::ConnectionEstablished` (ping ignores it).
async fn mem_connection() -> meshwire_transport::Connection {
    use meshwire_transport::memory::MemoryTransport;
    use meshwire_transport::{identity::Keypair, Transport, TransportEvent, TransportExt};

    let mut a = MemoryTransport::new(Keypair::generate().peer_id());
    let mut b = MemoryTransport::new(Keypair::generate().peer_id());
    a.listen_on("/memory/0".parse().unwrap()).unwrap();
    let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else {
        panic!("no listen address")
    };
    let dial = b.dial(&addr, Some(a.local_peer_id())).unwrap();
    let TransportEvent::Incoming { upgrade, .. } = a.next_event().await else {
        panic!("no incoming connection")
    };
    let (out, _inc) = tokio::join!(dial, upgrade);
    out.unwrap()
}

fn endpoint() -> ConnectedPoint {
    ConnectedPoint::Dialer {
        address: "/ip4/127.0.0.1/udp/1/quic-v1".parse::<Multiaddr>().unwrap(),
    }
}

fn establish(
    b: &mut Behaviour,
    handle: &meshwire_transport::Connection,
    peer: PeerId,
    connection: ConnectionId,
    other: usize,
) {
    let ep = endpoint();
    b.on_swarm_event(FromSwarm::ConnectionEstablished {
        peer,
        connection,
        endpoint: &ep,
        other_established: other,
        handle,
    });
}

fn close(b: &mut Behaviour, peer: PeerId, connection: ConnectionId, remaining: usize) {
    let ep = endpoint();
    b.on_swarm_event(FromSwarm::ConnectionClosed {
        peer,
        connection,
        endpoint: &ep,
        remaining_established: remaining,
        cause: &ConnectionCloseCause::Requested,
    });
}

fn poll_now(b: &mut Behaviour) -> Poll<ToSwarm<Event>> {
    b.poll(&mut Context::from_waker(noop_waker_ref()))
}

/// The next command within `within`.
async fn next_command(b: &mut Behaviour, within: Duration) -> Option<ToSwarm<Event>> {
    tokio::time::timeout(within, futures::future::poll_fn(|cx| b.poll(cx)))
        .await
        .ok()
}

fn expect_open(cmd: Poll<ToSwarm<Event>>) -> OpenStream {
    match cmd {
        Poll::Ready(ToSwarm::OpenStream(o)) => o,
        other => panic!("expected OpenStream, got {other:?}"),
    }
}

fn fail(b: &mut Behaviour, open: &OpenStream, error: StreamError) {
    b.on_outbound_stream(OutboundStreamResult {
        id: open.id,
        peer: open.peer,
        result: Err(error),
        route: Default::default(),
    });
}

fn io_error() -> StreamError {
    StreamError::Io(Arc::new(io::Error::other("boom")))
}

#[tokio::test]
async fn opens_one_stream_per_connection_without_dialing() {
    let h = mem_connection().await;
    let mut b = Behaviour::default();
    let peer = PeerId::random();
    let (c1, c2) = (ConnectionId::next(), ConnectionId::next());
    establish(&mut b, &h, peer, c1, 0);
    establish(&mut b, &h, peer, c2, 1);
    for c in [c1, c2] {
        let open = expect_open(poll_now(&mut b));
        assert_eq!(open.peer, peer);
        assert_eq!(open.connection, Some(c));
        assert_eq!(open.protocols, vec![PROTOCOL]);
        assert!(!open.dial, "ping must not dial");
    }
    assert!(poll_now(&mut b).is_pending());
    assert_eq!(b.protocols(), vec![PROTOCOL]);
    assert_eq!(PROTOCOL.as_str(), "/ipfs/ping/1.0.0");
}

#[tokio::test]
async fn unsupported_is_reported_once_and_pinging_stops() {
    let h = mem_connection().await;
    let mut b = Behaviour::new(Config::new().with_interval(Duration::from_millis(1)));
    let peer = PeerId::random();
    let c = ConnectionId::next();
    establish(&mut b, &h, peer, c, 0);
    let open = expect_open(poll_now(&mut b));
    fail(&mut b, &open, StreamError::UnsupportedProtocols);
    match poll_now(&mut b) {
        Poll::Ready(ToSwarm::GenerateEvent(Event {
            peer: p,
            connection,
            result: Err(Failure::Unsupported),
        })) => {
            assert_eq!(p, peer);
            assert_eq!(connection, c);
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // No timer, no stream request: nothing left to do for this connection.
    assert!(poll_now(&mut b).is_pending());
    assert!(b.tasks.is_empty());
    assert!(matches!(
        b.connections.get(&c).map(|c| &c.outbound),
        Some(Outbound::Unsupported)
    ));
}

#[tokio::test]
async fn first_failure_is_silent_then_retried_after_the_interval() {
    let h = mem_connection().await;
    let interval = Duration::from_millis(60);
    let mut b = Behaviour::new(Config::new().with_interval(interval));
    let peer = PeerId::random();
    let c = ConnectionId::next();
    establish(&mut b, &h, peer, c, 0);
    let open = expect_open(poll_now(&mut b));

    // First failure: not reported, a new stream is asked for after the interval.
    fail(&mut b, &open, io_error());
    let started = Instant::now();
    assert!(poll_now(&mut b).is_pending());
    let open = match next_command(&mut b, Duration::from_secs(5)).await {
        Some(ToSwarm::OpenStream(o)) => o,
        other => panic!("expected a new OpenStream, got {other:?}"),
    };
    assert!(started.elapsed() >= interval - Duration::from_millis(5));
    assert_eq!(open.connection, Some(c));

    // Second consecutive failure: reported.
    fail(&mut b, &open, io_error());
    match poll_now(&mut b) {
        Poll::Ready(ToSwarm::GenerateEvent(Event {
            result: Err(Failure::Other(e)),
            ..
        })) => assert!(e.to_string().contains("boom"), "{e}"),
        other => panic!("expected a reported failure, got {other:?}"),
    }
    // And retried again.
    assert!(matches!(
        next_command(&mut b, Duration::from_secs(5)).await,
        Some(ToSwarm::OpenStream(_))
    ));
}

#[tokio::test]
async fn closing_a_connection_drops_its_state_and_ignores_late_results() {
    let h = mem_connection().await;
    let mut b = Behaviour::new(Config::new().with_interval(Duration::from_millis(10)));
    let peer = PeerId::random();
    let c = ConnectionId::next();
    establish(&mut b, &h, peer, c, 0);
    let open = expect_open(poll_now(&mut b));
    fail(&mut b, &open, io_error()); // starts a retry timer
    assert_eq!(b.tasks.len(), 1);
    close(&mut b, peer, c, 0);
    assert!(b.connections.is_empty());
    assert!(b.outbox.is_empty());
    // The aborted timer is dropped on the next poll, and never asks for a stream.
    assert!(poll_now(&mut b).is_pending());
    assert!(b.tasks.is_empty());
    assert!(next_command(&mut b, Duration::from_millis(100))
        .await
        .is_none());

    // A result for a request of the closed connection is ignored.
    establish(&mut b, &h, peer, ConnectionId::next(), 0);
    let open2 = expect_open(poll_now(&mut b));
    close(&mut b, peer, open2.connection.unwrap(), 0);
    fail(&mut b, &open2, StreamError::UnsupportedProtocols);
    assert!(poll_now(&mut b).is_pending());
}

#[tokio::test]
async fn rtt_table_follows_the_peers_last_connection() {
    let h = mem_connection().await;
    let mut b = Behaviour::default();
    let table = b.rtt_table();
    let peer = PeerId::random();
    let other = PeerId::random();
    let (c1, c2, c3) = (
        ConnectionId::next(),
        ConnectionId::next(),
        ConnectionId::next(),
    );
    establish(&mut b, &h, peer, c1, 0);
    establish(&mut b, &h, peer, c2, 1);
    establish(&mut b, &h, other, c3, 0);
    b.rtts.set(peer, Duration::from_millis(3));
    b.rtts.set(other, Duration::from_millis(4));
    assert_eq!(b.rtt(&peer), Some(Duration::from_millis(3)));
    assert_eq!(table.len(), 2);

    close(&mut b, peer, c1, 1);
    assert_eq!(table.get(&peer), Some(Duration::from_millis(3)));
    close(&mut b, peer, c2, 0);
    assert_eq!(table.get(&peer), None);
    assert_eq!(b.rtt(&peer), None);
    let snap = table.snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap.get(&other), Some(&Duration::from_millis(4)));

    // The handle is usable from another thread.
    let t = table.clone();
    std::thread::spawn(move || assert_eq!(t.get(&other), Some(Duration::from_millis(4))))
        .join()
        .unwrap();
}

struct CountingWaker(AtomicUsize);

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn swarm_callbacks_wake_a_pending_behaviour() {
    let h = mem_connection().await;
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let w = waker(counter.clone());
    let mut cx = Context::from_waker(&w);
    let mut b = Behaviour::default();
    assert!(b.poll(&mut cx).is_pending());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);

    // A new connection queues a command: the task must be woken to return it.
    let peer = PeerId::random();
    let c = ConnectionId::next();
    establish(&mut b, &h, peer, c, 0);
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    let open = expect_open(b.poll(&mut cx));
    assert!(b.poll(&mut cx).is_pending());

    // A failed stream request starts a timer the task must poll.
    fail(&mut b, &open, io_error());
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
}

#[test]
fn failures_map_from_stream_and_io_errors() {
    use meshwire_transport::multistream::NegotiationError;

    let refused: io::Error = NegotiationError::Failed.into();
    assert!(matches!(stream_failure(refused), Failure::Unsupported));
    assert!(matches!(
        stream_failure(io::Error::from(io::ErrorKind::ConnectionReset)),
        Failure::Other(_)
    ));
    assert!(matches!(
        Failure::from(StreamError::UnsupportedProtocols),
        Failure::Unsupported
    ));
    assert!(matches!(
        Failure::from(StreamError::Timeout),
        Failure::Other(_)
    ));
    assert!(matches!(
        Failure::from(meshwire_swarm::toolkit::Timeout(Duration::from_secs(1))),
        Failure::Timeout
    ));
    // Failures are errors with a source where there is one.
    let f = Failure::other(io::Error::other("x"));
    assert!(std::error::Error::source(&f).is_some());
    assert_eq!(Failure::Timeout.to_string(), "ping timeout");
}

#[test]
fn config_defaults_match_libp2p() {
    let c = Config::default();
    assert_eq!(c.interval, Duration::from_secs(15));
    assert_eq!(c.timeout, Duration::from_secs(20));
    assert_eq!(c.echo_timeout, Duration::from_secs(20));
    let c = c
        .with_interval(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_echo_timeout(Duration::from_secs(3));
    assert_eq!(c.interval, Duration::from_secs(1));
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert_eq!(c.echo_timeout, Duration::from_secs(3));
}
