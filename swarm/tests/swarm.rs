//! Swarms on real QUIC loopback: connections, stream routing, typed errors, limits, idle rule.

mod common;

use std::time::Duration;

use common::{Node, T};
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_swarm::{
    ConnectionCloseCause, DialError, DialOpts, LimitKind, ListenError, OpenStream, PeerCondition,
    StreamError, StreamProtocol, SwarmConfig, SwarmEvent,
};

const ECHO: StreamProtocol = StreamProtocol::new("/test/echo/1");
const OTHER: StreamProtocol = StreamProtocol::new("/test/other/1");

async fn echo_once(node: &mut Node) -> (StreamProtocol, Vec<u8>) {
    let mut s = node.next_inbound().await;
    let mut buf = Vec::new();
    s.stream.read_to_end(&mut buf).await.expect("read");
    s.stream.write_all(&buf).await.expect("write");
    s.stream.close().await.expect("close");
    (s.protocol, buf)
}

#[tokio::test]
async fn three_swarms_route_streams_by_protocol() {
    let protos = ["/test/echo/1", "/test/other/1"];
    let mut a = Node::start(&protos, SwarmConfig::default()).await;
    let mut b = Node::start(&protos, SwarmConfig::default()).await;
    let mut c = Node::start(&protos, SwarmConfig::default()).await;
    a.connect(&mut b).await;
    a.connect(&mut c).await;
    b.connect(&mut c).await;

    // a -> b on ECHO, a -> c on OTHER, c -> b on OTHER.
    for (from, to, proto) in [(&a, b.peer, ECHO), (&a, c.peer, OTHER), (&c, b.peer, OTHER)] {
        from.open(OpenStream::new(to, proto.clone()));
    }
    let mut sent = Vec::new();
    for _ in 0..2 {
        let r = a.next_outbound().await;
        let mut out = r.result.expect("stream");
        let payload = format!("hello {} via {}", r.peer, out.protocol).into_bytes();
        out.stream.write_all(&payload).await.unwrap();
        out.stream.close().await.unwrap();
        sent.push((r.peer, out.protocol.clone(), payload, out));
    }
    let r = c.next_outbound().await;
    let mut from_c = r.result.expect("stream");
    assert_eq!(r.peer, b.peer);
    from_c.stream.write_all(b"from c").await.unwrap();
    from_c.stream.close().await.unwrap();

    // b sees two streams (ECHO from a, OTHER from c), c sees OTHER from a.
    let mut at_b = [echo_once(&mut b).await, echo_once(&mut b).await];
    at_b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(at_b[0].0, ECHO);
    assert!(at_b[0].1.starts_with(b"hello"));
    assert_eq!(at_b[1], (OTHER, b"from c".to_vec()));
    let at_c = echo_once(&mut c).await;
    assert_eq!(at_c.0, OTHER);

    for (peer, proto, payload, mut out) in sent {
        let mut back = Vec::new();
        out.stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, payload, "echo from {peer} on {proto}");
    }
    let mut back = Vec::new();
    from_c.stream.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"from c");
}

#[tokio::test]
async fn unknown_protocol_is_refused_with_a_typed_error() {
    let mut a = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    let mut b = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    a.connect(&mut b).await;
    let unknown = StreamProtocol::new("/test/unknown/1");

    // Confirmed: the refusal is the request's result.
    a.open(OpenStream::new(b.peer, unknown.clone()).confirmed());
    let r = a.next_outbound().await;
    assert!(
        matches!(r.result, Err(StreamError::UnsupportedProtocols)),
        "{:?}",
        r.result
    );
    // The listener answered `na` and reports the failed negotiation.
    b.wait_for(|e| match e {
        SwarmEvent::InboundStreamError { peer_id, .. } if *peer_id == a.peer => Some(()),
        _ => None,
    })
    .await;

    // Lazy (the default for one protocol): the stream comes at once and its first read
    // carries the refusal: an error of kind Unsupported that says so.
    a.open(OpenStream::new(b.peer, unknown.clone()));
    let mut out = a.next_outbound().await.result.expect("lazy stream");
    let _ = out.stream.write_all(b"x").await;
    let mut buf = [0u8; 1];
    let err = out.stream.read(&mut buf).await.expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    assert!(meshwire_swarm::Stream::is_protocol_refused(&err));
    assert!(err.to_string().contains("refused the protocol"), "{err}");
    assert!(matches!(
        StreamError::from_io(err),
        StreamError::UnsupportedProtocols
    ));

    // Several protocols: the first supported one is chosen.
    a.open(
        OpenStream::new(b.peer, unknown)
            .with_protocols(vec![StreamProtocol::new("/test/unknown/1"), ECHO]),
    );
    let out = a.next_outbound().await.result.expect("stream");
    assert_eq!(out.protocol, ECHO);
    let inbound = b.next_inbound().await;
    assert_eq!(inbound.protocol, ECHO);
    assert_eq!(inbound.peer, a.peer);
    assert_eq!(b.metrics.inbound_streams.get(), 1);
    assert!(b.metrics.inbound_stream_errors.get() >= 1);
    assert_eq!(a.metrics.outbound_stream_failures.get(), 1);
}

#[tokio::test]
async fn dialing_the_wrong_peer_id_fails_with_the_mismatch() {
    let mut a = Node::start(&[], SwarmConfig::default()).await;
    let b = Node::start(&[], SwarmConfig::default()).await;
    let c = Node::start(&[], SwarmConfig::default()).await;
    // b's address, but c's peer id.
    let wrong = meshwire_transport::with_peer_id(&b.addr, c.peer);
    a.dial(wrong).await.expect("dial starts");
    let (expected, obtained) = a
        .wait_for(|e| match e {
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                Some(error.peer_id_mismatch().expect("a peer-id mismatch"))
            }
            SwarmEvent::ConnectionEstablished { .. } => panic!("connected to the wrong peer"),
            _ => None,
        })
        .await;
    assert_eq!((expected, obtained), (c.peer, b.peer));

    // Dialing ourselves is refused at once.
    let err = a.dial(a.full_addr()).await.expect_err("self dial");
    assert!(err.contains("local peer"), "{err}");
}

#[tokio::test]
async fn a_peer_dropping_mid_stream_gives_errors_not_panics() {
    let mut a = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    let mut b = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    a.connect(&mut b).await;
    a.open(OpenStream::new(b.peer, ECHO));
    let mut out = a.next_outbound().await.result.expect("stream");
    out.stream.write_all(b"partial").await.unwrap();
    out.stream.flush().await.unwrap();
    let inbound = b.next_inbound().await;
    assert_eq!(inbound.protocol, ECHO);
    // b vanishes (its swarm closes the connection) with the stream half-used.
    let b_peer = b.peer;
    b.stop().await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(T, out.stream.read_to_end(&mut buf))
        .await
        .expect("read ends");
    assert!(read.is_err(), "read after the peer dropped: {read:?}");
    drop(inbound);
    let cause = a
        .wait_for(|e| match e {
            SwarmEvent::ConnectionClosed { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(cause, ConnectionCloseCause::Transport(_)),
        "{cause:?}"
    );
    // The swarm still works: a new stream to a gone peer fails with a typed error.
    a.open(OpenStream::new(b_peer, ECHO).no_dial());
    assert!(matches!(
        a.next_outbound().await.result,
        Err(StreamError::NotConnected)
    ));
}

#[tokio::test]
async fn idle_connections_close_and_open_streams_keep_them() {
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(300)),
        ..SwarmConfig::default()
    };
    let mut a = Node::start(&["/test/echo/1"], config.clone()).await;
    let mut b = Node::start(&["/test/echo/1"], config).await;
    a.connect(&mut b).await;

    // An open stream keeps the connection for well past the idle timeout.
    a.open(OpenStream::new(b.peer, ECHO));
    let mut out = a.next_outbound().await.result.expect("stream");
    out.stream.write_all(b"x").await.unwrap();
    let _inbound = b.next_inbound().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        a.connections().await.len(),
        1,
        "closed while a stream was open"
    );

    // A stream that opts out does not.
    out.stream.set_keep_alive(false);
    let started = tokio::time::Instant::now();
    let cause = a
        .wait_for(|e| match e {
            SwarmEvent::ConnectionClosed { cause, .. } => Some(cause.clone()),
            _ => None,
        })
        .await;
    assert_eq!(cause, ConnectionCloseCause::Idle);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "idle close took {waited:?}"
    );
}

#[tokio::test]
async fn connection_limits_refuse_extra_connections() {
    let hub_config = SwarmConfig {
        max_established_incoming: 1,
        ..SwarmConfig::default()
    };
    let mut hub = Node::start(&[], hub_config).await;
    let mut a = Node::start(&[], SwarmConfig::default()).await;
    let b = Node::start(&[], SwarmConfig::default()).await;
    a.connect(&mut hub).await;
    b.dial(hub.full_addr()).await.expect("dial starts");
    let err = hub
        .wait_for(|e| match e {
            SwarmEvent::IncomingConnectionError { error, .. } => Some(match error {
                ListenError::Limit(l) => l.kind,
                other => panic!("unexpected error {other}"),
            }),
            _ => None,
        })
        .await;
    assert_eq!(err, LimitKind::EstablishedIncoming);
    assert_eq!(hub.connections().await.len(), 1);

    // A peer condition that is not met fails the dial at once.
    let err = a
        .dial(DialOpts::peer(hub.peer).address(hub.addr.clone()))
        .await
        .expect_err("already connected");
    assert!(
        err.contains(&format!("{:?}", PeerCondition::DisconnectedAndNotDialing)),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_request_dials_a_known_peer() {
    let mut a = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    let mut b = Node::start(&["/test/echo/1"], SwarmConfig::default()).await;
    a.commands
        .send(common::Command::AddPeerAddress(b.peer, b.addr.clone()))
        .unwrap();
    // Commands are handled in order: once this answers, the address is known.
    assert!(a.connections().await.is_empty());
    a.open(OpenStream::new(b.peer, ECHO));
    let mut out = a
        .next_outbound()
        .await
        .result
        .expect("stream after dialing");
    out.stream.write_all(b"dialed for this").await.unwrap();
    out.stream.close().await.unwrap();
    let (proto, data) = echo_once(&mut b).await;
    assert_eq!((proto, data.as_slice()), (ECHO, &b"dialed for this"[..]));

    // An unknown peer cannot be dialed: the request fails with the dial's error.
    let stranger = meshwire_core::Keypair::generate().peer_id();
    a.open(OpenStream::new(stranger, ECHO));
    match a.next_outbound().await.result {
        Err(StreamError::DialFailed(e)) => assert!(matches!(*e, DialError::NoAddresses), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A stream works with tokio's I/O traits as well as futures', with no compat wrapper.
#[tokio::test]
async fn streams_work_with_tokio_io() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let protos = ["/tokio/1"];
    let mut a = Node::start(&protos, SwarmConfig::default()).await;
    let mut b = Node::start(&protos, SwarmConfig::default()).await;
    a.connect(&mut b).await;
    a.open(OpenStream::new(b.peer, StreamProtocol::new("/tokio/1")));
    let mut out = a.next_outbound().await.result.expect("stream").stream;
    tokio::io::AsyncWriteExt::write_all(&mut out, b"tokio bytes")
        .await
        .expect("write");
    out.shutdown().await.expect("shutdown finishes our side");
    let mut inbound = b.next_inbound().await.stream;
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut inbound, &mut got)
        .await
        .expect("read to the end");
    assert_eq!(got, b"tokio bytes");
    // A BufReader from tokio over the stream: lines in, one line back.
    tokio::io::AsyncWriteExt::write_all(&mut inbound, b"one\ntwo\n")
        .await
        .expect("write");
    inbound.shutdown().await.expect("shutdown");
    let mut lines = tokio::io::BufReader::new(out);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
        .await
        .expect("line");
    assert_eq!(line, "one\n");
    let mut rest = String::new();
    lines.read_to_string(&mut rest).await.expect("rest");
    assert_eq!(rest, "two\n");
}
