//! meshwire's QUIC transport against a real rust-libp2p 0.57 node (QUIC v1 + libp2p TLS +
//! multistream-select + `/ipfs/ping/1.0.0`), in both dial directions, plus identity agreement.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{ping, Swarm, SwarmBuilder};
use meshwire_core::{Keypair, PeerId};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{
    Connection, Multiaddr, Transport, TransportError, TransportEvent, TransportExt,
};
use tokio::sync::mpsc;

const PING: &str = "/ipfs/ping/1.0.0";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const NEG_TIMEOUT: Duration = Duration::from_secs(10);

/// The libp2p-identity spec's ed25519 private key (protobuf encoding).
const SPEC_KEY_HEX: &str = "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_libp2p_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("meshwire peer id bytes decode in libp2p")
}

/// A libp2p identity, made from a meshwire key (its protobuf encoding) so both agree.
fn libp2p_identity() -> (libp2p::identity::Keypair, libp2p::PeerId) {
    let mw = Keypair::generate();
    let key = libp2p::identity::Keypair::from_protobuf_encoding(&mw.to_protobuf_encoding())
        .expect("libp2p decodes meshwire's private key encoding");
    let id = key.public().to_peer_id();
    assert_eq!(id, to_libp2p_peer(&mw.peer_id()));
    (key, id)
}

fn libp2p_swarm(key: libp2p::identity::Keypair) -> Swarm<ping::Behaviour> {
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(200)))
        })
        .expect("ping behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives the swarm in a task, forwarding every event.
fn spawn_swarm(
    mut swarm: Swarm<ping::Behaviour>,
) -> (
    mpsc::UnboundedReceiver<SwarmEvent<ping::Event>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        loop {
            let ev = swarm.select_next_some().await;
            if tx.send(ev).is_err() {
                // Receiver gone: keep driving so connections stay alive until aborted.
            }
        }
    });
    (rx, handle)
}

async fn meshwire_listener(key: Keypair) -> (QuicTransport, Multiaddr) {
    let mut t = QuicTransport::new(key, QuicConfig::default()).expect("quic transport");
    t.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    match t.next_event().await {
        TransportEvent::NewListenAddr { addr, .. } => (t, addr),
        other => panic!("expected NewListenAddr, got {other:?}"),
    }
}

/// Starts a libp2p ping node listening on loopback QUIC; returns its meshwire-typed address.
async fn libp2p_listener() -> (
    libp2p::PeerId,
    Multiaddr,
    mpsc::UnboundedReceiver<SwarmEvent<ping::Event>>,
    tokio::task::JoinHandle<()>,
) {
    let (key, lp_id) = libp2p_identity();
    let mut swarm = libp2p_swarm(key);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("libp2p listen");
    let addr = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            other => eprintln!("libp2p (before listening): {other:?}"),
        }
    };
    let addr: Multiaddr = addr
        .to_string()
        .parse()
        .expect("libp2p address parses as meshwire multiaddr");
    let (rx, handle) = spawn_swarm(swarm);
    (lp_id, addr, rx, handle)
}

/// Echoes 32-byte pings on one negotiated stream until EOF.
async fn echo_pings<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(mut s: S) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 32];
    loop {
        match s.read_exact(&mut buf).await {
            Ok(()) => {}
            Err(_) => return n, // EOF or reset: the pinger is done.
        }
        if s.write_all(&buf).await.is_err() || s.flush().await.is_err() {
            return n;
        }
        n += 1;
    }
}

/// Answers every ping stream the libp2p peer opens on `conn`.
fn spawn_ping_responder(conn: Arc<Connection>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match conn.accept_negotiated(&[PING], NEG_TIMEOUT).await {
                Ok((proto, s)) => {
                    assert_eq!(proto, PING);
                    tokio::spawn(echo_pings(s));
                }
                Err(e) => {
                    eprintln!("meshwire accept ended: {e}");
                    return;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_dials_meshwire_and_pings() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mw_key = Keypair::generate();
        let mw_id = mw_key.peer_id();
        let mw_lp_id = to_libp2p_peer(&mw_id);
        let (mut mw, addr) = meshwire_listener(mw_key).await;

        let (lp_key, lp_id) = libp2p_identity();
        let mut swarm = libp2p_swarm(lp_key);
        swarm
            .dial(addr.to_string().parse::<libp2p::Multiaddr>().unwrap())
            .expect("libp2p dial");
        let (mut rx, driver) = spawn_swarm(swarm);

        let upgrade = match mw.next_event().await {
            TransportEvent::Incoming { upgrade, .. } => upgrade,
            other => panic!("expected Incoming, got {other:?}"),
        };
        let conn = upgrade.await.expect("meshwire accepts libp2p's connection");
        assert_eq!(conn.peer_id().to_string(), lp_id.to_string());
        assert_eq!(to_libp2p_peer(&conn.peer_id()), lp_id);
        let conn = Arc::new(conn);
        let acceptor = spawn_ping_responder(conn.clone());

        let mut established = false;
        let mut rtt = None;
        while !(established && rtt.is_some()) {
            match rx.recv().await.expect("swarm driver alive") {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    assert_eq!(peer_id, mw_lp_id, "libp2p sees meshwire's peer id");
                    established = true;
                }
                SwarmEvent::Behaviour(ping::Event {
                    peer,
                    result: Ok(d),
                    ..
                }) => {
                    assert_eq!(peer, mw_lp_id);
                    rtt = Some(d);
                }
                SwarmEvent::Behaviour(ping::Event { result: Err(e), .. }) => {
                    panic!("libp2p ping failed: {e}")
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("libp2p dial failed: {error}")
                }
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("connection closed: {cause:?}")
                }
                other => eprintln!("libp2p: {other:?}"),
            }
        }
        eprintln!("libp2p pinged meshwire: rtt {:?}", rtt.unwrap());
        conn.close(0, "done");
        acceptor.abort();
        driver.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshwire_dials_libp2p_and_pings() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (lp_id, addr, mut rx, driver) = libp2p_listener().await;

        let mw_key = Keypair::generate();
        let mw_lp_id = to_libp2p_peer(&mw_key.peer_id());
        let mut mw = QuicTransport::new(mw_key, QuicConfig::default()).unwrap();
        let expected: PeerId = lp_id
            .to_string()
            .parse()
            .expect("libp2p peer id parses in meshwire");
        let conn = mw
            .dial(&addr, Some(expected))
            .unwrap()
            .await
            .expect("meshwire dials libp2p");
        assert_eq!(conn.peer_id(), expected);
        assert_eq!(to_libp2p_peer(&conn.peer_id()), lp_id);
        // Also answer libp2p's own outbound pings. Besides being realistic, this keeps the libp2p
        // ping handler polled: libp2p-ping 0.48 re-arms its inbound pong future without polling
        // it, so a second inbound ping on the same stream otherwise waits for an unrelated wake-up
        // (observed: ~10 s stall on the 3rd ping).
        let conn = Arc::new(conn);
        let responder = spawn_ping_responder(conn.clone());

        let (proto, mut s) = conn
            .open_negotiated([PING], NEG_TIMEOUT)
            .await
            .expect("negotiate ping");
        assert_eq!(proto, PING);
        for _ in 0..3 {
            let payload: [u8; 32] = rand::random();
            s.write_all(&payload).await.unwrap();
            s.flush().await.unwrap();
            let mut back = [0u8; 32];
            s.read_exact(&mut back)
                .await
                .expect("libp2p echoes the ping");
            assert_eq!(back, payload);
        }
        s.close().await.ok();

        loop {
            match rx.recv().await.expect("swarm driver alive") {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    assert_eq!(peer_id, mw_lp_id, "libp2p sees meshwire's peer id");
                    break;
                }
                SwarmEvent::IncomingConnectionError { error, .. } => {
                    panic!("libp2p incoming error: {error}")
                }
                other => eprintln!("libp2p: {other:?}"),
            }
        }
        conn.close(0, "done");
        responder.abort();
        driver.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshwire_dial_with_wrong_peer_id_fails() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (lp_id, addr, _rx, driver) = libp2p_listener().await;
        let mut mw = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
        let wrong = Keypair::generate().peer_id();
        match mw.dial(&addr, Some(wrong)).unwrap().await {
            Err(TransportError::PeerIdMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(to_libp2p_peer(&actual), lp_id);
            }
            Err(e) => panic!("expected PeerIdMismatch, got {e:?}"),
            Ok(c) => panic!("dial succeeded to {}", c.peer_id()),
        }
        driver.abort();
    })
    .await
    .expect("test timed out");
}

#[test]
fn peer_ids_agree_with_libp2p() {
    let bytes = hex(SPEC_KEY_HEX);
    let lp =
        libp2p::identity::Keypair::from_protobuf_encoding(&bytes).expect("libp2p decodes spec key");
    let mw = Keypair::from_protobuf_encoding(&bytes).expect("meshwire decodes spec key");
    let lp_id = lp.public().to_peer_id();
    let mw_id = mw.peer_id();
    assert_eq!(mw_id.to_string(), lp_id.to_string());
    assert_eq!(mw_id.as_bytes(), lp_id.to_bytes().as_slice());
    assert_eq!(mw.public().encode_protobuf(), lp.public().encode_protobuf());
    let parsed: PeerId = lp_id.to_string().parse().unwrap();
    assert_eq!(parsed, mw_id);

    for _ in 0..20 {
        let k = Keypair::generate();
        let pk = libp2p::identity::PublicKey::try_decode_protobuf(&k.public().encode_protobuf())
            .expect("libp2p decodes meshwire public key");
        let id = pk.to_peer_id();
        assert_eq!(id.to_string(), k.peer_id().to_string());
        assert_eq!(id.to_bytes().as_slice(), k.peer_id().as_bytes());
        assert_eq!(
            libp2p::PeerId::from_bytes(k.peer_id().as_bytes()).unwrap(),
            id
        );
    }
}
