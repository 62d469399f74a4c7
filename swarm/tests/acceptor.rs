//! Each connection's acceptor: inbound streams accepted, negotiated and handed to a
//! `StreamControl` receiver beside the swarm's task, and the per-connection rate of new
//! inbound streams (`SwarmConfig::inbound_stream_rate`).

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::Keypair;
use meshwire_swarm::{
    DummyBehaviour, StreamControl, StreamProtocol, StreamRate, Swarm, SwarmConfig, SwarmEvent,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::with_peer_id;
use tokio::time::timeout;

const ECHO: StreamProtocol = StreamProtocol::new("/test/echo/1");
const T: Duration = Duration::from_secs(20);

fn swarm(config: SwarmConfig) -> Swarm<DummyBehaviour> {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
    Swarm::new(transport, DummyBehaviour, config)
}

/// `client` connected to `server`; both swarms returned unpolled after the handshake.
async fn connect(
    client: &mut Swarm<DummyBehaviour>,
    server: &mut Swarm<DummyBehaviour>,
) -> meshwire_core::PeerId {
    server
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.next_event().await {
            break address;
        }
    };
    let peer = server.local_peer_id();
    client.dial(with_peer_id(&addr, peer)).unwrap();
    let (mut c, mut s) = (false, false);
    timeout(T, async {
        while !(c && s) {
            tokio::select! {
                ev = client.next_event() => {
                    c |= matches!(ev, SwarmEvent::ConnectionEstablished { .. });
                }
                ev = server.next_event() => {
                    s |= matches!(ev, SwarmEvent::ConnectionEstablished { .. });
                }
            }
        }
    })
    .await
    .expect("connected");
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_streams_reach_their_receiver_without_the_swarm_task() {
    let mut server = swarm(SwarmConfig::default());
    let mut incoming = server.stream_control().accept(ECHO).unwrap();
    let mut client = swarm(SwarmConfig::default());
    let server_peer = connect(&mut client, &mut server).await;
    let control: StreamControl = client.stream_control();
    // The client's swarm runs; the server's is never polled again (but kept alive): its
    // connection's acceptor alone must accept, negotiate and deliver.
    tokio::spawn(async move {
        loop {
            client.next_event().await;
        }
    });
    let served = tokio::spawn(async move {
        for _ in 0..3 {
            let mut s = incoming.next().await.expect("stream");
            let mut buf = Vec::new();
            s.stream.read_to_end(&mut buf).await.unwrap();
            s.stream.write_all(&buf).await.unwrap();
            s.stream.close().await.unwrap();
        }
    });
    for i in 0..3u8 {
        let mut s = timeout(T, control.open_stream(server_peer, ECHO))
            .await
            .expect("opened in time")
            .expect("opened");
        s.write_all(&[i; 5]).await.unwrap();
        s.close().await.unwrap();
        let mut back = Vec::new();
        timeout(T, s.read_to_end(&mut back))
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(back, vec![i; 5]);
    }
    timeout(T, served).await.unwrap().unwrap();
    drop(server);
}

/// Opens `n` streams at once from `client` to the server and returns how long the server's
/// receiver took from the first stream to the last (every stream must arrive).
async fn spread_of(n: usize, config: SwarmConfig) -> Duration {
    let mut server = swarm(config);
    let mut incoming = server.stream_control().accept(ECHO).unwrap();
    let mut client = swarm(SwarmConfig::default());
    let server_peer = connect(&mut client, &mut server).await;
    let control = client.stream_control();
    tokio::spawn(async move {
        loop {
            client.next_event().await;
        }
    });
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::InboundStreamError { error, .. } = server.next_event().await {
                panic!("a stream was refused: {error}");
            }
        }
    });
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut s = control
            .open_stream(server_peer, ECHO)
            .await
            .expect("opened");
        s.write_all(b"x").await.unwrap();
        s.flush().await.unwrap();
        streams.push(s);
    }
    let mut first = None;
    for _ in 0..n {
        let mut s = timeout(T, incoming.next())
            .await
            .expect("every stream arrives")
            .expect("stream");
        first.get_or_insert_with(Instant::now);
        let mut b = [0u8; 1];
        s.stream.read_exact(&mut b).await.unwrap();
    }
    first.map_or(Duration::ZERO, |f| f.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opening_streams_too_fast_is_slowed_not_refused() {
    // 30 streams at once (under the resource manager's 32 per protocol and peer) against 50
    // a second with a burst of 5: the last 25 trickle in over at least 0.5 s; none is refused.
    let rate = Some(StreamRate {
        per_second: 50,
        burst: 5,
    });
    let limited = spread_of(
        30,
        SwarmConfig {
            inbound_stream_rate: rate,
            ..SwarmConfig::default()
        },
    )
    .await;
    assert!(
        limited >= Duration::from_millis(450),
        "30 streams at 50/s (burst 5) arrived within {limited:?}"
    );
    // The default rate lets the same burst straight through.
    let default = spread_of(30, SwarmConfig::default()).await;
    assert!(
        default < limited,
        "default {default:?} vs limited {limited:?}"
    );
    // The node-wide bucket alone slows them the same way.
    let total = spread_of(
        30,
        SwarmConfig {
            inbound_stream_rate: None,
            inbound_stream_rate_total: rate,
            ..SwarmConfig::default()
        },
    )
    .await;
    assert!(
        total >= Duration::from_millis(450),
        "30 streams at 50/s in all (burst 5) arrived within {total:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_rate_is_shared_by_every_connection() {
    // Three clients, 10 streams each at once, against 50 a second in all (burst 5) and no
    // per-connection limit: the 30 streams trickle in over at least 0.5 s, every one arrives
    // (acceptors contending for the node's tokens keep going), none is refused.
    let mut server = swarm(SwarmConfig {
        inbound_stream_rate: None,
        inbound_stream_rate_total: Some(StreamRate {
            per_second: 50,
            burst: 5,
        }),
        ..SwarmConfig::default()
    });
    let mut incoming = server.stream_control().accept(ECHO).unwrap();
    let mut controls = Vec::new();
    for _ in 0..3 {
        let mut client = swarm(SwarmConfig::default());
        let server_peer = connect(&mut client, &mut server).await;
        controls.push((client.stream_control(), server_peer));
        tokio::spawn(async move {
            loop {
                client.next_event().await;
            }
        });
    }
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::InboundStreamError { error, .. } = server.next_event().await {
                panic!("a stream was refused: {error}");
            }
        }
    });
    let mut streams = Vec::new();
    for (control, peer) in &controls {
        for _ in 0..10 {
            let mut s = control.open_stream(*peer, ECHO).await.expect("opened");
            s.write_all(b"x").await.unwrap();
            s.flush().await.unwrap();
            streams.push(s);
        }
    }
    let mut first = None;
    let mut from = std::collections::HashMap::new();
    for _ in 0..30 {
        let mut s = timeout(T, incoming.next())
            .await
            .expect("every stream arrives")
            .expect("stream");
        first.get_or_insert_with(Instant::now);
        *from.entry(s.peer).or_insert(0) += 1;
        let mut b = [0u8; 1];
        s.stream.read_exact(&mut b).await.unwrap();
    }
    let spread = first.map_or(Duration::ZERO, |f| f.elapsed());
    assert!(
        spread >= Duration::from_millis(450),
        "30 streams from 3 connections at 50/s in all arrived within {spread:?}"
    );
    assert_eq!(
        from.len(),
        3,
        "every connection got its streams in: {from:?}"
    );
}
