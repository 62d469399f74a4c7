//! Hostile input and floods, from raw QUIC peers writing hand-made relay messages:
//!
//! - at the relay: oversized frames, garbage, a message of the wrong type, a CONNECT without
//!   a peer, a frame that never ends — each answered (MALFORMED_MESSAGE, UNEXPECTED_MESSAGE)
//!   or dropped, while an honest client goes on being served; floods of reservations and of
//!   circuits refused past their limits (RESOURCE_LIMIT_EXCEEDED), the counts never above
//!   them;
//! - at a client, from a fake relay: malformed stop requests (answered MALFORMED_MESSAGE or
//!   UNEXPECTED_MESSAGE), reservations with a voucher signed by another key or for another
//!   peer (refused: `CircuitError::BadVoucher`), and floods of stop streams from strangers and
//!   from a relay, which do not keep the client from renewing its reservation or dialing.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::Keypair;
use meshwire_relay::client::{self, CircuitError};
use meshwire_relay::protocol::io::{
    read_hop_request, read_stop_response, write_hop_response, write_stop_request,
};
use meshwire_relay::protocol::{
    encode_hop_response, encode_stop_response, proto, HopRequest, HopResponse, ReservationInfo,
    Status, StopRequest, StopResponse, HOP_PROTOCOL, STOP_PROTOCOL,
};
use meshwire_relay::server::Refusal;
use meshwire_relay::voucher::{Voucher, VoucherError};
use meshwire_relay::{BehaviourConfig, ServerConfig, ServerEvent};
use meshwire_swarm::toolkit::encode_frame;
use meshwire_swarm::{Swarm, SwarmEvent};
use meshwire_transport::multistream::Negotiated;
use meshwire_transport::{Connection, Stream};
use prost::Message;

/// A length prefix announcing `len` bytes, and nothing after it.
fn prefix(len: usize) -> Vec<u8> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    unsigned_varint::encode::usize(len, &mut buf).to_vec()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A client of the relay client alone (the fake relay then sees no stream but its own).
fn bare_client(config: client::Config) -> Swarm<client::Behaviour> {
    let key = Keypair::generate();
    let (transport, behaviour) = client::new(key.clone(), config);
    let transport = meshwire_transport::TransportExt::or_transport(
        meshwire_transport::quic::QuicTransport::new(key, Default::default()).expect("quic"),
        transport,
    );
    Swarm::new(transport, behaviour, swarm_config())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_answers_bad_hop_requests_and_keeps_serving() {
    let mut relay = start_relay_with(
        ServerConfig::default(),
        BehaviourConfig {
            exchange_timeout: Duration::from_secs(2),
            ..BehaviourConfig::default()
        },
        None,
    )
    .await;
    let attacker = raw_connect(&relay.addr).await;
    let connect_without_peer = proto::HopMessage {
        r#type: proto::HopMessageType::Connect as i32,
        peer: None,
        reservation: None,
        limit: None,
        status: None,
    }
    .encode_to_vec();
    let connect_to_bad_id = proto::HopMessage {
        r#type: proto::HopMessageType::Connect as i32,
        peer: Some(proto::Peer {
            id: vec![0xde, 0xad],
            addrs: Vec::new(),
        }),
        reservation: None,
        limit: None,
        status: None,
    }
    .encode_to_vec();
    let status_on_hop = encode_hop_response(&HopResponse::refused(Status::Ok));
    let unknown_type = proto::HopMessage {
        r#type: 9,
        peer: None,
        reservation: None,
        limit: None,
        status: None,
    }
    .encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, Status)> = vec![
        // Announces 1 MiB and sends nothing more: refused on the prefix alone.
        ("oversized frame", prefix(1 << 20), Status::MalformedMessage),
        (
            "frame one byte over the limit",
            encode_frame(&[0u8; 4097]),
            Status::MalformedMessage,
        ),
        (
            "garbage protobuf",
            encode_frame(&[0xff; 16]),
            Status::MalformedMessage,
        ),
        (
            "a STATUS (the relay's own message type) on hop",
            encode_frame(&status_on_hop),
            Status::UnexpectedMessage,
        ),
        (
            "CONNECT without a peer",
            encode_frame(&connect_without_peer),
            Status::MalformedMessage,
        ),
        (
            "CONNECT to an invalid peer id",
            encode_frame(&connect_to_bad_id),
            Status::MalformedMessage,
        ),
        (
            "an unknown message type",
            encode_frame(&unknown_type),
            Status::MalformedMessage,
        ),
    ];
    for (what, bytes, status) in cases {
        let answer = raw_hop_exchange(&attacker, &bytes).await;
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.reservation, None, "{what}");
    }

    // A frame that never ends is dropped after the exchange timeout: the stream ends with no
    // answer.
    let mut slow = hop_stream(&attacker).await;
    let mut partial = prefix(100);
    partial.extend_from_slice(&[0u8; 10]);
    slow.write_all(&partial).await.expect("write");
    slow.flush().await.expect("flush");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(T, slow.read_to_end(&mut rest))
        .await
        .expect("the relay gives up on the stream");
    assert!(
        rest.is_empty() || ended.is_err(),
        "no answer to half a frame"
    );

    // The relay admitted nothing from the attacker and still serves an honest pair.
    assert_eq!(relay.counts().await, (0, 0));
    assert!(!relay.events().any(|e| matches!(
        e,
        ServerEvent::ReservationAccepted { .. } | ServerEvent::CircuitAccepted { .. }
    )));
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut dialer = start_client(client::Config::default());
    dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("an honest circuit");
    relay
        .wait_event("the honest circuit", |e| match e {
            ServerEvent::CircuitAccepted { .. } => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_flood_is_refused_past_the_limit() {
    const MAX: usize = 5;
    const PEERS: usize = 16;
    let mut relay = start_relay(ServerConfig {
        max_reservations: MAX,
        // Every peer comes from 127.0.0.1.
        max_reservations_per_ip: None,
        ..ServerConfig::default()
    })
    .await;
    let mut conns = Vec::new();
    for _ in 0..PEERS {
        conns.push(raw_connect(&relay.addr).await);
    }
    // All reserve at once.
    let answers = futures::future::join_all(
        conns
            .iter()
            .map(|c| async move { raw_hop_request(c, HopRequest::Reserve).await.0.status }),
    )
    .await;
    let ok = answers.iter().filter(|s| **s == Status::Ok).count();
    let refused = answers
        .iter()
        .filter(|s| **s == Status::ResourceLimitExceeded)
        .count();
    assert_eq!((ok, refused), (MAX, PEERS - MAX), "{answers:?}");
    let mut refusals = 0;
    while refusals < PEERS - MAX {
        let refusal = relay
            .wait_event("the refusals", |e| match e {
                ServerEvent::ReservationRefused { refusal, .. } => Some(*refusal),
                _ => None,
            })
            .await;
        assert_eq!(refusal, Refusal::MaxReservations);
        refusals += 1;
    }
    assert_eq!(relay.counts().await.0, MAX);
    assert_eq!(relay.max_reservations.load(Ordering::SeqCst), MAX);

    // Holders that leave free their slots for the refused.
    let holders: Vec<usize> = (0..PEERS).filter(|i| answers[*i] == Status::Ok).collect();
    let waiting: Vec<usize> = (0..PEERS).filter(|i| answers[*i] != Status::Ok).collect();
    for i in &holders[..2] {
        conns[*i].close(0, "bye");
    }
    for _ in 0..2 {
        relay
            .wait_event("a reservation to close", |e| match e {
                ServerEvent::ReservationClosed { .. } => Some(()),
                _ => None,
            })
            .await;
    }
    for i in &waiting[..2] {
        assert_eq!(
            raw_hop_request(&conns[*i], HopRequest::Reserve)
                .await
                .0
                .status,
            Status::Ok
        );
    }
    let third = raw_hop_request(&conns[waiting[2]], HopRequest::Reserve).await;
    assert_eq!(third.0.status, Status::ResourceLimitExceeded);
    assert_eq!(relay.counts().await.0, MAX);
    assert_eq!(relay.max_reservations.load(Ordering::SeqCst), MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_flood_is_refused_past_the_limit() {
    const MAX: usize = 3;
    const ATTACKERS: usize = 12;
    let mut relay = start_relay(ServerConfig {
        max_circuits: MAX,
        // The listener takes part in every circuit: only the total limit applies here.
        max_circuits_per_peer: 100,
        ..ServerConfig::default()
    })
    .await;
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut conns = Vec::new();
    for _ in 0..ATTACKERS {
        conns.push(raw_connect(&relay.addr).await);
    }
    // All ask for a circuit to the listener at once, and hold the streams they get.
    let dst = listener.peer;
    let answers = futures::future::join_all(
        conns
            .iter()
            .map(|c| async move { raw_hop_request(c, HopRequest::Connect { dst }).await }),
    )
    .await;
    let ok = answers
        .iter()
        .filter(|(r, _)| r.status == Status::Ok)
        .count();
    let refused = answers
        .iter()
        .filter(|(r, _)| r.status == Status::ResourceLimitExceeded)
        .count();
    assert_eq!((ok, refused), (MAX, ATTACKERS - MAX));
    assert!(relay.max_circuits.load(Ordering::SeqCst) <= MAX);
    let (reservations, circuits) = relay.counts().await;
    assert_eq!((reservations, circuits), (1, MAX));
    for _ in 0..ATTACKERS - MAX {
        let refusal = relay
            .wait_event("the refusals", |e| match e {
                ServerEvent::CircuitRefused { refusal, .. } => Some(*refusal),
                _ => None,
            })
            .await;
        assert_eq!(refusal, Refusal::MaxCircuits);
    }

    // The attackers go: their circuits end, and an honest dialer gets through.
    drop(answers);
    drop(conns);
    let mut closed = 0;
    while closed < MAX {
        relay
            .wait_event("the flood's circuits to end", |e| match e {
                ServerEvent::CircuitClosed { .. } => Some(()),
                _ => None,
            })
            .await;
        closed += 1;
    }
    let mut dialer = start_client(client::Config::default());
    dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("an honest circuit after the flood");
    assert!(relay.max_circuits.load(Ordering::SeqCst) <= MAX);
}

/// Accepts the client's next hop stream on `conn`.
async fn accept_hop(conn: &Connection) -> Negotiated<Stream> {
    tokio::time::timeout(T, async {
        loop {
            match conn.accept_negotiated(&[HOP_PROTOCOL], T).await {
                Ok((_, s)) => return s,
                Err(meshwire_transport::ConnectionError::Closed(reason)) => {
                    panic!("connection closed: {reason}")
                }
                // Another protocol: not ours.
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("a hop stream in time")
}

/// The fake relay's side of a RESERVE on `conn`: answers OK with `voucher`.
async fn answer_reserve(conn: &Connection, expire: u64, voucher: Vec<u8>) {
    let mut stream = accept_hop(conn).await;
    let request = read_hop_request(&mut stream).await.expect("a hop request");
    assert_eq!(request, HopRequest::Reserve);
    let reservation = ReservationInfo {
        expire,
        addrs: Vec::new(),
        voucher: Some(voucher),
    };
    write_hop_response(&mut stream, &HopResponse::reserved(reservation, None))
        .await
        .expect("answer");
    let _ = stream.close().await;
}

/// Sends `bytes` on a fresh stop stream of `conn` and reads the client's answer.
async fn stop_exchange(conn: &Connection, bytes: &[u8]) -> Status {
    let mut stream = conn
        .open_negotiated([STOP_PROTOCOL], T)
        .await
        .expect("stop stream")
        .1;
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
    tokio::time::timeout(T, read_stop_response(&mut stream))
        .await
        .expect("answer in time")
        .expect("a stop response")
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_answers_malformed_stop_requests() {
    let mut fake = FakeRelay::start().await;
    let mut node = Node::spawn(bare_client(client::Config::default()));
    let (listen, fake_addr) = (circuit(&fake.addr), fake.addr.clone());
    let id = node
        .call(move |s| s.listen_on(listen))
        .await
        .expect("listen through the fake relay");
    let conn = fake.connection().await;
    let expire = unix_now() + 3600;
    answer_reserve(&conn, expire, Voucher::sign(&fake.key, node.peer, expire)).await;
    let addr = node
        .wait_for("the relayed address", |e| match e {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } if *listener_id == id => Some(address.clone()),
            _ => None,
        })
        .await;
    assert_eq!(addr, circuit(&fake_addr));

    let src = Keypair::generate().peer_id();
    let connect_without_peer = proto::StopMessage {
        r#type: proto::StopMessageType::Connect as i32,
        peer: None,
        limit: None,
        status: None,
    }
    .encode_to_vec();
    let status_as_request = encode_stop_response(&StopResponse { status: Status::Ok });
    let cases: Vec<(&str, Vec<u8>, Status)> = vec![
        (
            "garbage",
            encode_frame(&[0xff; 12]),
            Status::MalformedMessage,
        ),
        ("oversized", prefix(1 << 16), Status::MalformedMessage),
        (
            "CONNECT without a peer",
            encode_frame(&connect_without_peer),
            Status::MalformedMessage,
        ),
        (
            "a STATUS where a CONNECT belongs",
            encode_frame(&status_as_request),
            Status::UnexpectedMessage,
        ),
    ];
    for (what, bytes, expected) in &cases {
        assert_eq!(stop_exchange(&conn, bytes).await, *expected, "{what}");
    }
    for (what, _, expected) in &cases {
        let status = node
            .find_or_wait("the client's report", |e| match e {
                SwarmEvent::Behaviour(client::Event::InboundCircuitDenied { status, relay })
                    if status == expected =>
                {
                    assert_eq!(*relay, fake.peer);
                    Some(*status)
                }
                _ => None,
            })
            .await;
        assert_eq!(status, *expected, "{what}");
    }

    // The stop side still takes a well-formed request afterwards.
    let mut stream = conn
        .open_negotiated([STOP_PROTOCOL], T)
        .await
        .expect("stop stream")
        .1;
    write_stop_request(&mut stream, &StopRequest { src, limit: None })
        .await
        .expect("write");
    let answer = read_stop_response(&mut stream).await.expect("answer");
    assert_eq!(answer.status, Status::Ok);
    let from = node
        .wait_for("the inbound circuit", |e| match e {
            SwarmEvent::Behaviour(client::Event::InboundCircuitEstablished { src, .. }) => {
                Some(*src)
            }
            _ => None,
        })
        .await;
    assert_eq!(from, src);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_voucher_it_cannot_trust() {
    let mut fake = FakeRelay::start().await;
    let mut node = Node::spawn(bare_client(client::Config::default()));
    let me = node.peer;
    let expire = unix_now() + 3600;
    type Check = fn(&VoucherError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "signed by another key",
            Voucher::sign(&Keypair::generate(), me, expire),
            |e| matches!(e, VoucherError::WrongRelay { .. }),
        ),
        (
            "for another peer",
            Voucher::sign(&fake.key, Keypair::generate().peer_id(), expire),
            |e| matches!(e, VoucherError::WrongPeer { .. }),
        ),
        ("not an envelope", vec![0xff; 40], |e| {
            matches!(e, VoucherError::Malformed(_))
        }),
    ];
    let mut conn: Option<Connection> = None;
    for (what, voucher, check) in cases {
        let listen = circuit(&fake.addr);
        let id = node
            .call(move |s| s.listen_on(listen))
            .await
            .expect("listen through the fake relay");
        if conn.is_none() {
            conn = Some(fake.connection().await);
        }
        answer_reserve(conn.as_ref().unwrap(), expire, voucher).await;
        let error = node
            .wait_for("the reservation to fail", |e| match e {
                SwarmEvent::Behaviour(client::Event::ReservationFailed { error, relay }) => {
                    assert_eq!(*relay, fake.peer);
                    Some(error.clone())
                }
                SwarmEvent::NewListenAddr { .. } => panic!("{what}: the reservation was taken"),
                _ => None,
            })
            .await;
        let CircuitError::BadVoucher { error: why, .. } = &error else {
            panic!("{what}: {error}")
        };
        assert!(check(why), "{what}: {why}");
        let closed = node
            .wait_for("the listener to close", |e| match e {
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason: Err(reason),
                    ..
                } if *listener_id == id => Some(circuit_error(reason).cloned()),
                _ => None,
            })
            .await;
        assert!(
            matches!(closed, Some(CircuitError::BadVoucher { .. })),
            "{closed:?}"
        );
    }
    assert!(node.call(|s| s.behaviour().reservations().is_empty()).await);
}

/// Opens `n` stop streams on `conn`, each with half a frame, and keeps them.
async fn idle_stop_streams(conn: &Connection, n: usize) -> Vec<Negotiated<Stream>> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let Ok((_, mut s)) = conn.open_negotiated([STOP_PROTOCOL], T).await else {
            break;
        };
        if s.write_all(&prefix(64)).await.is_err() || s.flush().await.is_err() {
            break;
        }
        streams.push(s);
    }
    streams
}

/// Whether `stream` ends (reset, or closed) within 5 s; nothing is read from it.
async fn ends_within_5s(stream: &mut Negotiated<Stream>) -> bool {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("{n} bytes answered a stop request"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_stream_floods_do_not_stop_renewals_or_dials() {
    let mut relay = start_relay(ServerConfig {
        reservation_duration: Duration::from_secs(3),
        ..ServerConfig::default()
    })
    .await;
    let config = client::Config {
        max_stop_streams: 8,
        renew_when_left: 0.5,
        renew_margin: Duration::from_secs(1),
        ..client::Config::default()
    };
    let mut swarm = client_swarm(Keypair::generate(), config, swarm_config(), None);
    let direct = listen(&mut swarm).await;
    let direct = meshwire_transport::with_peer_id(&direct, swarm.local_peer_id());
    let mut node = Node::spawn(swarm);
    node.reserve(&relay.addr).await;
    // It also listens through a (fake) relay that floods it with stop streams.
    let mut fake = FakeRelay::start().await;
    let listen = circuit(&fake.addr);
    node.call(move |s| s.listen_on(listen))
        .await
        .expect("listen through the fake relay");
    let fake_conn = fake.connection().await;
    let expire = unix_now() + 3600;
    answer_reserve(
        &fake_conn,
        expire,
        Voucher::sign(&fake.key, node.peer, expire),
    )
    .await;

    // Strangers open as many stop streams as the client's resource manager lets each of
    // them (more than all the client's room for exchanges), half a frame on each: they are
    // reset unread.
    let mut strangers = Vec::new();
    let mut stranger_streams = Vec::new();
    for _ in 0..12 {
        let conn = raw_connect(&direct).await;
        stranger_streams.extend(idle_stop_streams(&conn, 32).await);
        strangers.push(conn);
    }
    let ended = futures::future::join_all(stranger_streams.iter_mut().map(ends_within_5s)).await;
    assert!(
        ended.iter().all(|e| *e),
        "a stranger's stop stream was kept"
    );
    // The fake relay fills the client's room for stop requests: 8 are read (and wait for
    // the rest of their frame), the others are reset.
    let mut relay_streams = idle_stop_streams(&fake_conn, 32).await;
    let ended = futures::future::join_all(relay_streams.iter_mut().map(ends_within_5s)).await;
    let held = ended.iter().filter(|e| !**e).count();
    assert!((1..=8).contains(&held), "{held} stop requests held");

    // Meanwhile the reservation on the real relay is renewed twice...
    let relay_peer = relay.peer;
    for _ in 0..2 {
        node.wait_for("a renewal during the flood", |e| {
            match client_event::<ClientNode>(e) {
                Some(client::Event::ReservationAccepted {
                    relay,
                    renewal: true,
                    ..
                }) if *relay == relay_peer => Some(()),
                Some(client::Event::ReservationFailed { error, .. }) => {
                    panic!("reservation lost during the flood: {error}")
                }
                _ => None,
            }
        })
        .await;
    }
    // ... and the client dials through it.
    let mut other = start_client(client::Config::default());
    other.reserve(&relay.addr).await;
    node.dial_circuit(&relay.addr, other.peer)
        .await
        .expect("a circuit dialed during the flood");

    // Once the fake relay lets go, circuits to the client get through again.
    drop(relay_streams);
    let mut dialer = start_client(client::Config::default());
    let dst = node.peer;
    tokio::time::timeout(T, async {
        while dialer.dial_circuit(&relay.addr, dst).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a circuit to the client after the flood");
    assert!(node.seen(|e| matches!(
        client_event::<ClientNode>(e),
        Some(client::Event::InboundCircuitDenied {
            status: Status::NoReservation,
            ..
        })
    )));
    let _ = relay
        .wait_event("the circuit", |e| match e {
            ServerEvent::CircuitAccepted { dst: d, .. } if *d == dst => Some(()),
            _ => None,
        })
        .await;
    drop(strangers);
}

/// A relay naming an absurd expiry (u64::MAX seconds) gets a reservation bounded by the
/// client's own renewal limit, not a panic of its timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_expiry_does_not_break_the_client() {
    let mut fake = FakeRelay::start().await;
    let mut node = Node::spawn(bare_client(client::Config::default()));
    let listen = circuit(&fake.addr);
    let id = node
        .call(move |s| s.listen_on(listen))
        .await
        .expect("listen through the fake relay");
    let conn = fake.connection().await;
    answer_reserve(
        &conn,
        u64::MAX,
        Voucher::sign(&fake.key, node.peer, u64::MAX),
    )
    .await;
    node.wait_for("the relayed address", |e| match e {
        SwarmEvent::NewListenAddr { listener_id, .. } if *listener_id == id => Some(()),
        _ => None,
    })
    .await;
    // The client still runs and answers.
    let held = node.call(|s| s.behaviour().reservations()).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, u64::MAX);
}
