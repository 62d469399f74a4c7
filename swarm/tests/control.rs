//! `StreamControl`: streams opened and accepted from other tasks, under the swarm's rules
//! (counted on their connection, keeping it alive, the resource manager's limits, the
//! protocol announced while registered).

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::rcmgr::{Limits, ScopeLimits};
use meshwire_swarm::{
    DummyBehaviour, FromSwarm, NetworkBehaviour, StreamControl, StreamError, StreamProtocol, Swarm,
    SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};
use tokio::sync::mpsc;
use tokio::time::timeout;

const ECHO: StreamProtocol = StreamProtocol::new("/test/echo/1");
const T: Duration = Duration::from_secs(10);

/// A swarm on its own task: its control, peer id, address and events.
struct Node {
    control: StreamControl,
    peer: PeerId,
    addr: Multiaddr,
    events: mpsc::UnboundedReceiver<SwarmEvent<()>>,
    protocols: tokio::sync::watch::Receiver<Vec<StreamProtocol>>,
}

/// Records the protocols the swarm announces.
struct Announced(tokio::sync::watch::Sender<Vec<StreamProtocol>>);

impl NetworkBehaviour for Announced {
    type Event = ();
    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }
    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::LocalProtocolsChanged { protocols } = event {
            let _ = self.0.send(protocols.to_vec());
        }
    }
    fn poll(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<ToSwarm<()>> {
        std::task::Poll::Pending
    }
}

async fn node(config: SwarmConfig, before: impl FnOnce(&StreamControl)) -> Node {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let (ptx, protocols) = tokio::sync::watch::channel(Vec::new());
    let mut swarm = Swarm::new(transport, Announced(ptx), config);
    let control = swarm.stream_control();
    before(&control);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let peer = swarm.local_peer_id();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = swarm.next_event().await;
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Node {
        control,
        peer,
        addr: with_peer_id(&addr, peer),
        events,
        protocols,
    }
}

impl Node {
    async fn wait<R>(&mut self, mut f: impl FnMut(&SwarmEvent<()>) -> Option<R>) -> R {
        timeout(T, async {
            loop {
                let ev = self.events.recv().await.expect("swarm running");
                if let Some(r) = f(&ev) {
                    return r;
                }
            }
        })
        .await
        .expect("timed out")
    }
}

/// `a` (with `config`) connected to `b` (the control does not dial: `a`'s swarm dials before
/// it is spawned); `a`'s control.
async fn connected(config: SwarmConfig) -> (Node, Node, StreamControl) {
    let b = node(SwarmConfig::default(), |_| {}).await;
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let (ptx, protocols) = tokio::sync::watch::channel(Vec::new());
    let mut swarm = Swarm::new(transport, Announced(ptx), config);
    let control = swarm.stream_control();
    swarm.dial(b.addr.clone()).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = swarm.next_event().await {
            break;
        }
    }
    let peer = swarm.local_peer_id();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = swarm.next_event().await;
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let a = Node {
        control: control.clone(),
        peer,
        addr: Multiaddr::empty(),
        events,
        protocols,
    };
    (a, b, control)
}

async fn echo_server(mut incoming: meshwire_swarm::IncomingStreams, from: PeerId) {
    while let Some(mut s) = incoming.next().await {
        assert_eq!(s.peer, from);
        assert_eq!(s.protocol, ECHO);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            s.stream.read_to_end(&mut buf).await.unwrap();
            s.stream.write_all(&buf).await.unwrap();
            s.stream.close().await.unwrap();
        });
    }
}

async fn exchange(control: &StreamControl, peer: PeerId, msg: &[u8]) -> Vec<u8> {
    let mut s = control.open_stream(peer, ECHO).await.unwrap();
    s.write_all(msg).await.unwrap();
    s.close().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    back
}

#[tokio::test]
async fn streams_opened_and_accepted_from_other_tasks() {
    let (a, mut b, control) = connected(SwarmConfig::default()).await;
    let incoming = b.control.accept(ECHO).unwrap();
    // Registered protocols are announced like a behaviour's.
    timeout(T, b.protocols.wait_for(|p| p.contains(&ECHO)))
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(echo_server(incoming, a.peer));
    // Many at once, from several tasks.
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let c = control.clone();
        let peer = b.peer;
        tasks.push(tokio::spawn(async move {
            let msg = vec![i; 1000 + i as usize];
            assert_eq!(exchange(&c, peer, &msg).await, msg);
        }));
    }
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap();
    }
    // The same protocol cannot be registered twice while the first is live.
    assert!(b.control.accept(ECHO).is_err());
    // b's swarm reports nothing wrong.
    assert!(b.events.try_recv().map_or(true, |e| !matches!(
        e,
        SwarmEvent::InboundStreamError { .. }
    )));
}

#[tokio::test]
async fn without_a_connection_nothing_is_dialed() {
    let a = node(SwarmConfig::default(), |_| {}).await;
    let b = node(SwarmConfig::default(), |_| {}).await;
    let err = a.control.open_stream(b.peer, ECHO).await.unwrap_err();
    assert!(matches!(err, StreamError::NotConnected), "{err}");
}

#[tokio::test]
async fn a_dropped_receiver_unregisters_the_protocol() {
    let (a, mut b, control) = connected(SwarmConfig::default()).await;
    let incoming = b.control.accept(ECHO).unwrap();
    timeout(T, b.protocols.wait_for(|p| p.contains(&ECHO)))
        .await
        .unwrap()
        .unwrap();
    drop(incoming);
    timeout(T, b.protocols.wait_for(|p| !p.contains(&ECHO)))
        .await
        .unwrap()
        .unwrap();
    // The remote's stream is refused: a typed error on its first read.
    let mut s = control.open_stream(b.peer, ECHO).await.unwrap();
    let _ = s.write_all(b"x").await;
    let mut buf = Vec::new();
    let e = s.read_to_end(&mut buf).await.unwrap_err();
    assert!(meshwire_swarm::Stream::is_protocol_refused(&e), "{e}");
    // Registering again works.
    let incoming = b.control.accept(ECHO).unwrap();
    tokio::spawn(echo_server(incoming, a.peer));
    timeout(T, b.protocols.wait_for(|p| p.contains(&ECHO)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exchange(&control, b.peer, b"again").await, b"again");
}

#[tokio::test]
async fn streams_nobody_takes_are_reset_past_the_buffer() {
    let config = SwarmConfig {
        incoming_stream_buffer: 2,
        ..SwarmConfig::default()
    };
    let (b_tx, b_rx) = std::sync::mpsc::channel();
    let mut b = node(config, |c| b_tx.send(c.accept(ECHO).unwrap()).unwrap()).await;
    let mut incoming = b_rx.recv().unwrap();
    // A swarm connected to b.
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut swarm = Swarm::new(transport, DummyBehaviour, SwarmConfig::default());
    let control = swarm.stream_control();
    swarm.dial(b.addr.clone()).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = swarm.next_event().await {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.next_event().await;
        }
    });
    // Three streams, none taken: two wait, the third is reset.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = control.open_stream(b.peer, ECHO).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        streams.push(s);
    }
    let capacity = b
        .wait(|e| match e {
            SwarmEvent::InboundStreamError {
                error: StreamError::ReceiverFull { capacity },
                ..
            } => Some(*capacity),
            _ => None,
        })
        .await;
    assert_eq!(capacity, 2);
    // The two that waited are there, and work.
    for _ in 0..2 {
        let mut s = timeout(T, incoming.next()).await.unwrap().unwrap();
        let mut buf = [0u8; 5];
        s.stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }
}

#[tokio::test]
async fn control_streams_keep_their_connection_alive_and_count() {
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(300)),
        ..SwarmConfig::default()
    };
    let (_a, mut b, control) = connected(config).await;
    let mut incoming = b.control.accept(ECHO).unwrap();
    let mut s = control.open_stream(b.peer, ECHO).await.unwrap();
    s.write_all(b"held").await.unwrap();
    s.flush().await.unwrap();
    let mut held = timeout(T, incoming.next()).await.unwrap().unwrap();
    // Held open past the idle timeout several times over: the connection stays.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut buf = [0u8; 4];
    held.stream.read_exact(&mut buf).await.unwrap();
    held.stream.write_all(b"back").await.unwrap();
    held.stream.flush().await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"back");
    // Dropped: the connection goes idle and closes.
    drop(s);
    drop(held);
    b.wait(|e| matches!(e, SwarmEvent::ConnectionClosed { .. }).then_some(()))
        .await;
}

#[tokio::test]
async fn the_resource_manager_limits_control_streams() {
    let mut limits = Limits::unlimited();
    limits.peer = ScopeLimits::streams(u32::MAX, 1, u32::MAX);
    let config = SwarmConfig {
        resource_limits: limits,
        ..SwarmConfig::default()
    };
    let (a, mut b, control) = connected(config).await;
    let incoming = b.control.accept(ECHO).unwrap();
    tokio::spawn(echo_server(incoming, a.peer));
    let first = control.open_stream(b.peer, ECHO).await.unwrap();
    let err = control.open_stream(b.peer, ECHO).await.unwrap_err();
    assert!(matches!(err, StreamError::Resource(_)), "{err}");
    // The share comes back with the stream.
    drop(first);
    assert_eq!(exchange(&control, b.peer, b"ok").await, b"ok");
    let _ = b.events.try_recv();
}

/// A behaviour that claims the echo protocol and hands its inbound streams over.
struct Claims(mpsc::UnboundedSender<meshwire_swarm::InboundStream>);

impl NetworkBehaviour for Claims {
    type Event = ();
    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![ECHO]
    }
    fn on_inbound_stream(&mut self, stream: meshwire_swarm::InboundStream) {
        let _ = self.0.send(stream);
    }
    fn poll(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<ToSwarm<()>> {
        std::task::Poll::Pending
    }
}

/// A control's registration takes the protocol from a behaviour that claims it too; once
/// the receiver is dropped, the behaviour gets its streams again.
#[tokio::test]
async fn the_behaviour_gets_its_protocol_back_when_the_receiver_is_dropped() {
    let (btx, mut behaviour_streams) = mpsc::unbounded_channel();
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut b = Swarm::new(transport, Claims(btx), SwarmConfig::default());
    let b_control = b.stream_control();
    let mut incoming = b_control.accept(ECHO).unwrap();
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let b_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break with_peer_id(&address, b.local_peer_id());
        }
    };
    let b_peer = b.local_peer_id();
    tokio::spawn(async move {
        loop {
            b.next_event().await;
        }
    });
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    let mut a = Swarm::new(transport, DummyBehaviour, SwarmConfig::default());
    let control = a.stream_control();
    a.dial(b_addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = a.next_event().await {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            a.next_event().await;
        }
    });
    let mut s = control.open_stream(b_peer, ECHO).await.unwrap();
    s.write_all(b"1").await.unwrap();
    s.flush().await.unwrap();
    timeout(T, incoming.next()).await.unwrap().unwrap();
    assert!(
        behaviour_streams.try_recv().is_err(),
        "the control comes first"
    );
    drop(incoming);
    let mut s = control.open_stream(b_peer, ECHO).await.unwrap();
    s.write_all(b"2").await.unwrap();
    s.flush().await.unwrap();
    let mut got = timeout(T, behaviour_streams.recv()).await.unwrap().unwrap();
    let mut byte = [0u8; 1];
    got.stream.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"2");
}

/// An accepted stream's confirmation is written by its first use: a dialer waiting for it
/// (`confirm_protocol`) gets it once the receiver reads, and a stream the receiver drops
/// unused still answers (confirmation, then the end of the stream), so no dialer is left
/// waiting for a stream nobody uses.
#[tokio::test]
async fn an_accepted_stream_confirms_on_first_use_or_drop() {
    let (_a, b, control) = connected(SwarmConfig::default()).await;
    let mut incoming = b.control.accept(ECHO).unwrap();
    let mut b_protocols = b.protocols.clone();
    timeout(T, b_protocols.wait_for(|p| p.contains(&ECHO)))
        .await
        .unwrap()
        .unwrap();

    // Dropped unused.
    let mut s = control.open_stream(b.peer, ECHO).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let taken = timeout(T, incoming.next()).await.unwrap().unwrap();
    drop(taken);
    timeout(T, s.confirm_protocol()).await.unwrap().unwrap();
    let mut rest = Vec::new();
    timeout(T, s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());

    // Held, then read: the dialer waits for the confirmation until the first use.
    let mut s = control.open_stream(b.peer, ECHO).await.unwrap();
    let mut taken = timeout(T, incoming.next()).await.unwrap().unwrap();
    let mut confirming = Box::pin(s.confirm_protocol());
    assert!(
        timeout(Duration::from_millis(200), &mut confirming)
            .await
            .is_err(),
        "confirmed before the receiver used the stream"
    );
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 2];
        taken.stream.read_exact(&mut buf).await.unwrap();
        taken.stream.write_all(&buf).await.unwrap();
        taken.stream.close().await.unwrap();
    });
    timeout(T, confirming).await.unwrap().unwrap();
    s.write_all(b"hi").await.unwrap();
    s.close().await.unwrap();
    let mut back = Vec::new();
    timeout(T, s.read_to_end(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"hi");
    timeout(T, reader).await.unwrap().unwrap();
}
