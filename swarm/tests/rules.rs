//! The swarm's rules on the in-memory transport, with both swarms driven by the test itself:
//! connection hooks, limits, dial address fallback, the idle rule (streams, behaviours,
//! protection), event order, protocol changes, the connection manager on drop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_connmgr::{BasicConnMgr, Config, ConnManagerHandle};
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_swarm::{
    ConnectionCloseCause, ConnectionDenied, DialError, DialOpts, FromSwarm, InboundStream,
    LimitKind, ListenError, NetworkBehaviour, OpenStream, OutboundStreamResult, PeerCondition,
    StreamError, StreamProtocol, Swarm, SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::memory::MemoryTransport;
use meshwire_transport::{with_peer_id, Multiaddr};

const P1: StreamProtocol = StreamProtocol::new("/rules/one/1");
const P2: StreamProtocol = StreamProtocol::new("/rules/two/1");

/// What the probe behaviour saw and what it is told to do.
#[derive(Default)]
struct Shared {
    protocols: Vec<StreamProtocol>,
    deny_outbound: bool,
    deny_inbound_established: bool,
    keep_alive: bool,
    log: Vec<String>,
    inbound: VecDeque<InboundStream>,
    outbound: VecDeque<OutboundStreamResult>,
    commands: VecDeque<ToSwarm<()>>,
    waker: Option<Waker>,
}

#[derive(Clone, Default)]
struct Probe(Arc<Mutex<Shared>>);

impl Probe {
    fn with(protocols: &[StreamProtocol]) -> Self {
        let p = Probe::default();
        p.0.lock().unwrap().protocols = protocols.to_vec();
        p
    }
    fn s(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap()
    }
    fn command(&self, cmd: ToSwarm<()>) {
        let mut s = self.s();
        s.commands.push_back(cmd);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
    fn saw(&self, prefix: &str) -> bool {
        self.s().log.iter().any(|l| l.starts_with(prefix))
    }
}

impl NetworkBehaviour for Probe {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.s().protocols.clone()
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: Option<PeerId>,
        _addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut s = self.s();
        s.log.push("pending-outbound".into());
        if s.deny_outbound {
            return Err(ConnectionDenied::new("outbound dials are blocked"));
        }
        Ok(Vec::new())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if self.s().deny_inbound_established {
            return Err(ConnectionDenied::new("inbound connections are blocked"));
        }
        Ok(())
    }

    fn connection_keep_alive(&self, _peer: PeerId, _connection: ConnectionId) -> bool {
        self.s().keep_alive
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let name = match event {
            FromSwarm::ConnectionEstablished { .. } => "established",
            FromSwarm::ConnectionClosed { .. } => "closed",
            FromSwarm::DialFailure { .. } => "dial-failure",
            FromSwarm::ListenFailure { .. } => "listen-failure",
            FromSwarm::NewListenAddr { .. } => "listen-addr",
            FromSwarm::LocalProtocolsChanged { .. } => "local-protocols",
            _ => "other",
        };
        self.s().log.push(name.into());
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        let mut s = self.s();
        s.log.push(format!("inbound {}", stream.protocol));
        s.inbound.push_back(stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        self.s().outbound.push_back(result);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        let mut s = self.s();
        match s.commands.pop_front() {
            Some(c) => Poll::Ready(c),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn swarm(probe: &Probe, config: SwarmConfig) -> Swarm<Probe> {
    let key = Keypair::generate();
    Swarm::new(MemoryTransport::new(key.peer_id()), probe.clone(), config)
}

async fn listening(s: &mut Swarm<Probe>) -> Multiaddr {
    s.listen_on("/memory/0".parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.next_event().await {
            return address;
        }
    }
}

/// Drives both swarms until `f` returns `Some` for an event of `a` (b's events go to `g`).
async fn drive<R>(
    a: &mut Swarm<Probe>,
    b: &mut Swarm<Probe>,
    mut f: impl FnMut(SwarmEvent<()>) -> Option<R>,
) -> R {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                ev = a.next_event() => if let Some(r) = f(ev) { return r; },
                _ = b.next_event() => {}
            }
        }
    })
    .await
    .expect("timed out driving the swarms")
}

/// Drives both swarms for `d`.
async fn drive_for(a: &mut Swarm<Probe>, b: &mut Swarm<Probe>, d: Duration) {
    let _ = tokio::time::timeout(d, async {
        loop {
            tokio::select! {
                _ = a.next_event() => {}
                _ = b.next_event() => {}
            }
        }
    })
    .await;
}

async fn connected_pair(
    pa: &Probe,
    pb: &Probe,
    config: SwarmConfig,
) -> (Swarm<Probe>, Swarm<Probe>) {
    let mut a = swarm(pa, config.clone());
    let mut b = swarm(pb, config);
    let addr = listening(&mut b).await;
    let b_peer = b.local_peer_id();
    a.dial(with_peer_id(&addr, b_peer)).unwrap();
    drive(&mut a, &mut b, |e| match e {
        SwarmEvent::ConnectionEstablished { .. } => Some(()),
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{error}"),
        _ => None,
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn local_protocols_come_first_and_established_before_streams() {
    let (pa, pb) = (Probe::with(&[P1]), Probe::with(&[P1]));
    let (mut a, mut b) = connected_pair(&pa, &pb, SwarmConfig::default()).await;
    pa.command(ToSwarm::OpenStream(
        OpenStream::new(b.local_peer_id(), P1).eager(),
    ));
    drive_for(&mut a, &mut b, Duration::from_millis(200)).await;
    assert_eq!(pb.s().inbound.len(), 1);
    let log = pb.s().log.clone();
    assert_eq!(log[0], "local-protocols", "{log:?}");
    let est = log.iter().position(|l| l == "established").unwrap();
    let inb = log.iter().position(|l| l.starts_with("inbound")).unwrap();
    assert!(est < inb, "{log:?}");
}

#[tokio::test]
async fn the_dial_hook_runs_for_address_dials_and_can_deny_them() {
    let (pa, pb) = (Probe::default(), Probe::default());
    pa.s().deny_outbound = true;
    let mut a = swarm(&pa, SwarmConfig::default());
    let mut b = swarm(&pb, SwarmConfig::default());
    let addr = listening(&mut b).await;
    for opts in [
        DialOpts::from(with_peer_id(&addr, b.local_peer_id())),
        DialOpts::unknown_peer(addr.clone()),
        DialOpts::peer(b.local_peer_id()).address(addr.clone()),
    ] {
        let err = a.dial(opts).expect_err("denied");
        assert!(matches!(*err, DialError::Denied(_)), "{err}");
    }
    assert_eq!(
        pa.s()
            .log
            .iter()
            .filter(|l| *l == "pending-outbound")
            .count(),
        3
    );
    assert_eq!(
        pa.s().log.iter().filter(|l| *l == "dial-failure").count(),
        3
    );
    drive_for(&mut a, &mut b, Duration::from_millis(100)).await;
    assert_eq!(a.connections().count(), 0);
}

#[tokio::test]
async fn a_denied_inbound_connection_is_never_established() {
    let (pa, pb) = (Probe::default(), Probe::default());
    pb.s().deny_inbound_established = true;
    let cm = ConnManagerHandle::new(BasicConnMgr::new(Config::default(), Instant::now()).unwrap());
    let mut a = swarm(&pa, SwarmConfig::default());
    let mut b = Swarm::with_conn_manager(
        MemoryTransport::new(Keypair::generate().peer_id()),
        pb.clone(),
        SwarmConfig::default(),
        cm.to_dyn(),
    );
    let addr = listening(&mut b).await;
    a.dial(with_peer_id(&addr, b.local_peer_id())).unwrap();
    let err = drive(&mut b, &mut a, |e| match e {
        SwarmEvent::IncomingConnectionError { error, .. } => Some(error),
        SwarmEvent::ConnectionEstablished { .. } => panic!("denied connection established"),
        _ => None,
    })
    .await;
    assert!(matches!(err, ListenError::Denied(_)), "{err}");
    assert!(pb.saw("listen-failure"));
    assert!(!pb.saw("established"));
    assert_eq!(
        cm.lock().conn_count(),
        0,
        "the connection manager never saw it"
    );
}

#[tokio::test]
async fn limits_refuse_connections_and_streams() {
    // Per peer: a second connection to the same peer is refused.
    let config = SwarmConfig {
        max_established_per_peer: 1,
        ..SwarmConfig::default()
    };
    let (pa, pb) = (Probe::with(&[P1]), Probe::with(&[P1]));
    let (mut a, mut b) = connected_pair(&pa, &pb, config).await;
    let b_peer = b.local_peer_id();
    let b_addr = b.listeners().next().unwrap().clone();
    a.dial(
        DialOpts::peer(b_peer)
            .address(b_addr)
            .condition(PeerCondition::Always),
    )
    .unwrap();
    let err = drive(&mut a, &mut b, |e| match e {
        SwarmEvent::OutgoingConnectionError { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(
        matches!(&*err, DialError::Limit(l) if l.kind == LimitKind::EstablishedPerPeer),
        "{err}"
    );

    // Pending dials.
    let pc = Probe::default();
    let mut c = swarm(
        &pc,
        SwarmConfig {
            max_pending_outgoing: 0,
            ..SwarmConfig::default()
        },
    );
    let err = c
        .dial(DialOpts::unknown_peer("/memory/12345".parse().unwrap()))
        .unwrap_err();
    assert!(
        matches!(*err, DialError::PendingLimit { limit: 0 }),
        "{err}"
    );
}

#[tokio::test]
async fn inbound_streams_over_the_limit_are_reset() {
    let config = SwarmConfig {
        max_inbound_streams_per_connection: 1,
        ..SwarmConfig::default()
    };
    let (pa, pb) = (Probe::with(&[P1]), Probe::with(&[P1]));
    let (mut a, mut b) = connected_pair(&pa, &pb, config).await;
    let b_peer = b.local_peer_id();
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P1).eager()));
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P1).eager()));
    let err = drive(&mut b, &mut a, |e| match e {
        SwarmEvent::InboundStreamError { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(
        matches!(err, StreamError::TooManyStreams { limit: 1 }),
        "{err}"
    );
    // The first (counted from its arrival, negotiating meanwhile) is handed over.
    drive_for(&mut a, &mut b, Duration::from_millis(100)).await;
    assert_eq!(pb.s().inbound.len(), 1, "the first stream was handed over");
    // Once the first stream is gone, a new one is accepted.
    pb.s().inbound.clear();
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P1).confirmed()));
    drive_for(&mut a, &mut b, Duration::from_millis(200)).await;
    assert_eq!(pb.s().inbound.len(), 1);
}

#[tokio::test]
async fn a_dial_falls_back_to_the_next_address() {
    let (pa, pb) = (Probe::default(), Probe::default());
    let mut a = swarm(
        &pa,
        SwarmConfig {
            dial_concurrency: 1,
            ..SwarmConfig::default()
        },
    );
    let mut b = swarm(&pb, SwarmConfig::default());
    let good = listening(&mut b).await;
    let bad: Multiaddr = "/memory/987654321".parse().unwrap();
    let b_peer = b.local_peer_id();
    a.dial(DialOpts::peer(b_peer).addresses([bad.clone(), good]))
        .unwrap();
    let reached = drive(&mut a, &mut b, |e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(peer_id),
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{error}"),
        _ => None,
    })
    .await;
    assert_eq!(reached, b_peer);

    // Every address failing: one error per address.
    let bad2: Multiaddr = "/memory/987654322".parse().unwrap();
    let other = Keypair::generate().peer_id();
    a.dial(DialOpts::peer(other).addresses([bad.clone(), bad2]))
        .unwrap();
    let err = drive(&mut a, &mut b, |e| match e {
        SwarmEvent::OutgoingConnectionError { error, .. } => Some(error),
        _ => None,
    })
    .await;
    match &*err {
        DialError::Transport(errs) => assert_eq!(errs.len(), 2, "{err}"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn behaviours_and_protection_keep_idle_connections() {
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(100)),
        ..SwarmConfig::default()
    };
    let (pa, pb) = (Probe::default(), Probe::default());
    pa.s().keep_alive = true;
    let (mut a, mut b) = connected_pair(&pa, &pb, config).await;
    let b_peer = b.local_peer_id();
    // a's behaviour wants the connection; on b's side, its connection manager protects a.
    b.conn_manager().protect(a.local_peer_id(), "relay");
    drive_for(&mut a, &mut b, Duration::from_millis(600)).await;
    assert_eq!(
        a.connections().count(),
        1,
        "kept by a behaviour and by protection"
    );
    // Nothing keeps it any more: it closes as idle.
    b.conn_manager().unprotect(a.local_peer_id(), "relay");
    pa.s().keep_alive = false;
    let cause = drive(&mut a, &mut b, |e| match e {
        SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
            assert_eq!(peer_id, b_peer);
            Some(cause)
        }
        _ => None,
    })
    .await;
    // Whichever side closed first, the connection is gone.
    assert!(
        matches!(
            cause,
            ConnectionCloseCause::Idle | ConnectionCloseCause::Transport(_)
        ),
        "{cause:?}"
    );
}

#[tokio::test]
async fn a_stream_requested_while_the_connection_closes_redials() {
    let (pa, pb) = (Probe::with(&[P1]), Probe::with(&[P1]));
    let (mut a, mut b) = connected_pair(&pa, &pb, SwarmConfig::default()).await;
    let b_peer = b.local_peer_id();
    let id = a.connections().next().unwrap().id;
    // Close, and in the same turn ask for a stream: it must not fail, nor wait forever.
    assert!(a.close_connection(id));
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P1)));
    let mut out = loop {
        drive_for(&mut a, &mut b, Duration::from_millis(50)).await;
        if let Some(r) = pa.s().outbound.pop_front() {
            break r.result.expect("a stream over a new connection");
        }
    };
    assert_ne!(out.connection, id);
    out.stream.write_all(b"after the close").await.unwrap();
    out.stream.close().await.unwrap();
    drive_for(&mut a, &mut b, Duration::from_millis(100)).await;
    let mut inbound = pb.s().inbound.pop_front().expect("inbound stream");
    let mut buf = Vec::new();
    inbound.stream.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"after the close");
}

#[tokio::test]
async fn protocols_can_change_at_runtime() {
    let (pa, pb) = (Probe::with(&[P1]), Probe::with(&[P1]));
    let (mut a, mut b) = connected_pair(&pa, &pb, SwarmConfig::default()).await;
    let b_peer = b.local_peer_id();
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P2).confirmed()));
    drive_for(&mut a, &mut b, Duration::from_millis(100)).await;
    let r = pa.s().outbound.pop_front().unwrap();
    assert!(matches!(r.result, Err(StreamError::UnsupportedProtocols)));

    pb.s().protocols = vec![P1, P2];
    pb.command(ToSwarm::ProtocolsChanged);
    drive_for(&mut a, &mut b, Duration::from_millis(50)).await;
    assert_eq!(b.protocols(), &[P1, P2]);
    assert_eq!(
        pb.s()
            .log
            .iter()
            .filter(|l| *l == "local-protocols")
            .count(),
        2
    );
    pa.command(ToSwarm::OpenStream(OpenStream::new(b_peer, P2).confirmed()));
    drive_for(&mut a, &mut b, Duration::from_millis(100)).await;
    let r = pa.s().outbound.pop_front().unwrap();
    assert_eq!(r.result.expect("now supported").protocol, P2);
    assert!(pb.saw("inbound /rules/two/1"));
}

#[tokio::test]
async fn dropping_a_swarm_tells_its_connection_manager() {
    let (pa, pb) = (Probe::default(), Probe::default());
    let cm = ConnManagerHandle::new(BasicConnMgr::new(Config::default(), Instant::now()).unwrap());
    let mut a = Swarm::with_conn_manager(
        MemoryTransport::new(Keypair::generate().peer_id()),
        pa.clone(),
        SwarmConfig::default(),
        cm.to_dyn(),
    );
    let mut b = swarm(&pb, SwarmConfig::default());
    let addr = listening(&mut b).await;
    a.dial(with_peer_id(&addr, b.local_peer_id())).unwrap();
    drive(&mut a, &mut b, |e| {
        matches!(e, SwarmEvent::ConnectionEstablished { .. }).then_some(())
    })
    .await;
    assert_eq!(cm.lock().conn_count(), 1);
    drop(a);
    assert_eq!(cm.lock().conn_count(), 0);
}
