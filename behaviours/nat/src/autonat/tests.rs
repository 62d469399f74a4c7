use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;
use proptest::prelude::*;

use super::wire::*;
use super::*;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn peer() -> PeerId {
    Keypair::generate().peer_id()
}

// Golden bytes: the protobuf encoding of the spec's messages, as rust-libp2p's prost-generated
// structs produce them (field numbers and wire types from `autonat_v2.proto`).

const ADDR_BYTES: [u8; 11] = [
    0x04, 127, 0, 0, 1, // /ip4/127.0.0.1
    0x91, 0x02, 0x0f, 0xa1, // /udp/4001
    0xcd, 0x03, // /quic-v1
];

#[test]
fn dial_request_golden_bytes() {
    let msg = ClientMessage::DialRequest {
        addrs: vec![ma("/ip4/127.0.0.1/udp/4001/quic-v1")],
        nonce: 0x0102_0304_0506_0708,
    };
    let mut expected = vec![0x0a, 22, 0x0a, 11];
    expected.extend_from_slice(&ADDR_BYTES);
    expected.extend_from_slice(&[0x11, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(msg.encode(), expected);
    assert_eq!(ClientMessage::decode(&expected), Ok(msg));
}

#[test]
fn server_messages_golden_bytes() {
    let ok = ServerMessage::DialResponse {
        status: ResponseStatus::Ok,
        addr_idx: 0,
        dial_status: DialStatus::Ok,
    };
    let ok_bytes = [0x12, 6, 0x08, 0xc8, 0x01, 0x18, 0xc8, 0x01];
    assert_eq!(ok.encode(), ok_bytes);
    assert_eq!(ServerMessage::decode(&ok_bytes), Ok(ok));

    let ask = ServerMessage::DialDataRequest {
        addr_idx: 0,
        num_bytes: 30_000,
    };
    let ask_bytes = [0x1a, 4, 0x10, 0xb0, 0xea, 0x01];
    assert_eq!(ask.encode(), ask_bytes);
    assert_eq!(ServerMessage::decode(&ask_bytes), Ok(ask));

    let refused = ServerMessage::DialResponse {
        status: ResponseStatus::DialRefused,
        addr_idx: 0,
        dial_status: DialStatus::Unused,
    };
    assert_eq!(refused.encode(), [0x12, 2, 0x08, 101]);
}

#[test]
fn dial_data_and_dial_back_golden_bytes() {
    let data = ClientMessage::DialData { len: 3 };
    assert_eq!(data.encode(), [0x22, 5, 0x0a, 3, 0, 0, 0]);
    assert_eq!(ClientMessage::decode(&data.encode()), Ok(data));
    assert_eq!(encode_dial_back(1), [0x09, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(decode_dial_back(&encode_dial_back(u64::MAX)), Ok(u64::MAX));
    assert!(encode_dial_back(u64::MAX).len() <= MAX_DIAL_BACK_MESSAGE);
    // Status OK is proto3's default: the answer is an empty message.
    assert!(encode_dial_back_response().is_empty());
    assert_eq!(decode_dial_back_response(&[]), Ok(()));
    // The largest chunk and its envelope fit the frame bound.
    assert!(
        ClientMessage::DialData {
            len: MAX_DATA_CHUNK
        }
        .encode()
        .len()
            <= MAX_MESSAGE
    );
}

#[test]
fn hostile_messages_are_typed_errors() {
    // A server message where a client message is expected, and the reverse.
    let ok = ServerMessage::DialResponse {
        status: ResponseStatus::Ok,
        addr_idx: 0,
        dial_status: DialStatus::Ok,
    };
    assert!(matches!(
        ClientMessage::decode(&ok.encode()),
        Err(WireError::Unexpected { .. })
    ));
    let req = ClientMessage::DialRequest {
        addrs: vec![],
        nonce: 1,
    };
    assert!(matches!(
        ServerMessage::decode(&req.encode()),
        Err(WireError::Unexpected { .. })
    ));
    // An empty envelope.
    assert!(matches!(
        ClientMessage::decode(&[]),
        Err(WireError::Unexpected { .. })
    ));
    // Unknown status values.
    assert_eq!(
        ServerMessage::decode(&[0x12, 2, 0x08, 7]),
        Err(WireError::UnknownStatus(7))
    );
    assert_eq!(
        ServerMessage::decode(&[0x12, 4, 0x08, 101, 0x18, 7]),
        Err(WireError::UnknownDialStatus(7))
    );
    assert_eq!(
        decode_dial_back_response(&[0x08, 1]),
        Err(WireError::UnknownDialBackStatus(1))
    );
    // A second address that is not a multiaddr.
    let mut bytes = vec![0x0a, 17, 0x0a, 11];
    bytes.extend_from_slice(&ADDR_BYTES);
    bytes.extend_from_slice(&[0x0a, 2, 0xff, 0xff]);
    assert_eq!(
        ClientMessage::decode(&bytes),
        Err(WireError::InvalidAddress { index: 1 })
    );
    // A data chunk over 4096 bytes.
    let big = super::wire::proto::Message {
        msg: Some(super::wire::proto::message::Msg::DialDataResponse(
            super::wire::proto::DialDataResponse {
                data: vec![0; MAX_DATA_CHUNK + 1],
            },
        )),
    };
    let big = prost::Message::encode_to_vec(&big);
    assert_eq!(
        ClientMessage::decode(&big),
        Err(WireError::ChunkTooLarge(MAX_DATA_CHUNK + 1))
    );
    // Truncated protobuf.
    assert!(matches!(
        ClientMessage::decode(&[0x0a, 22, 0x0a]),
        Err(WireError::Protobuf(_))
    ));
    assert!(matches!(
        decode_dial_back(&[0x09, 1]),
        Err(WireError::Protobuf(_))
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..MAX_MESSAGE)) {
        let _ = ClientMessage::decode(&bytes);
        let _ = ServerMessage::decode(&bytes);
        let _ = decode_dial_back(&bytes);
        let _ = decode_dial_back_response(&bytes);
    }

    #[test]
    fn dial_requests_round_trip(nonce in any::<u64>(), port in 1u16.., n in 0usize..8) {
        let addrs: Vec<Multiaddr> = (0..n)
            .map(|i| ma(&format!("/ip4/192.0.2.{i}/udp/{port}/quic-v1")))
            .collect();
        let msg = ClientMessage::DialRequest { addrs, nonce };
        prop_assert_eq!(ClientMessage::decode(&msg.encode()), Ok(msg));
    }
}

fn open_config() -> ServerConfig {
    ServerConfig {
        dial_private: true,
        ..ServerConfig::default()
    }
}

#[test]
fn server_plans_dial_data_only_when_the_ip_differs() {
    let client = peer();
    let config = open_config();
    let observed = ma("/ip4/127.0.0.1/udp/5000/quic-v1");
    // The same IP (another port): no dial data.
    let plan = config.plan(
        client,
        &observed,
        &[ma("/ip4/127.0.0.1/udp/6000/quic-v1")],
        9,
    );
    assert!(matches!(
        plan,
        Plan::Dial {
            idx: 0,
            dial_data: None,
            ..
        }
    ));
    // Another IP: between the bounds, whatever the draw.
    for draw in [0, 1, 70_000, 70_001, u64::MAX] {
        let Plan::Dial {
            dial_data: Some(n), ..
        } = config.plan(
            client,
            &observed,
            &[ma("/ip4/127.0.0.2/udp/6000/quic-v1")],
            draw,
        )
        else {
            panic!("dial data expected");
        };
        assert!((MIN_DIAL_DATA..=MAX_DIAL_DATA).contains(&n), "{n}");
    }
}

#[test]
fn server_dials_the_first_address_it_can() {
    let client = peer();
    let other = peer();
    let config = open_config();
    let observed = ma("/ip4/127.0.0.1/udp/5000/quic-v1");
    let addrs = [
        ma("/ip4/127.0.0.1/tcp/4001"),
        ma(&format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{other}")),
        ma("/dns4/example.com/udp/4001/quic-v1"),
        ma("/ip4/127.0.0.1/udp/0/quic-v1"),
        ma(&format!("/ip4/127.0.0.1/udp/4002/quic-v1/p2p/{client}")),
    ];
    let Plan::Dial { idx, target, .. } = config.plan(client, &observed, &addrs, 0) else {
        panic!("an address to dial");
    };
    assert_eq!((idx, target.port()), (4, 4002));
    assert_eq!(config.plan(client, &observed, &addrs[..4], 0), Plan::Refuse);
    assert_eq!(config.plan(client, &observed, &[], 0), Plan::Refuse);
    // Too many addresses.
    let many: Vec<_> = (0..=config.max_addresses)
        .map(|_| ma("/ip4/127.0.0.1/udp/4001/quic-v1"))
        .collect();
    assert_eq!(config.plan(client, &observed, &many, 0), Plan::Refuse);
}

#[test]
fn server_refuses_private_addresses_by_default() {
    let client = peer();
    let config = ServerConfig::default();
    let observed = ma("/ip4/93.184.216.34/udp/5000/quic-v1");
    for a in [
        "/ip4/198.51.100.1/udp/4001/quic-v1",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/10.1.2.3/udp/4001/quic-v1",
        "/ip4/192.168.1.1/udp/4001/quic-v1",
        "/ip4/169.254.1.1/udp/4001/quic-v1",
        "/ip4/100.64.0.1/udp/4001/quic-v1",
        "/ip6/::1/udp/4001/quic-v1",
        "/ip6/fd00::1/udp/4001/quic-v1",
        "/ip6/fe80::1/udp/4001/quic-v1",
    ] {
        assert_eq!(
            config.plan(client, &observed, &[ma(a)], 0),
            Plan::Refuse,
            "{a}"
        );
    }
    let public = ma("/ip4/93.184.216.34/udp/4001/quic-v1");
    assert!(matches!(
        config.plan(client, &observed, &[public], 0),
        Plan::Dial {
            dial_data: None,
            ..
        }
    ));
}

/// Every special-purpose range (IANA IPv4/IPv6 special-purpose registries, non-global) is
/// refused; addresses next to them are dialled.
#[test]
fn is_public_table() {
    use super::server_engine::is_public;
    use std::net::IpAddr;
    let private = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "169.254.1.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.1",
        "203.0.113.1",
        "224.0.0.1",
        "239.255.255.255",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::10.0.0.1",
        "::8.8.8.8",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:192.168.0.1",
        "::ffff:100.64.0.1",
        "::ffff:0.0.0.0",
        "64:ff9b::8.8.8.8",
        "64:ff9b::7f00:1",
        "64:ff9b:1::1",
        "100::1",
        "2001::1",
        "2001:0:4136:e378::1",
        "2001:db8::1",
        "2001:1ff::1",
        "2002:7f00:1::1",
        "2002:808:808::1",
        "3fff::1",
        "fc00::1",
        "fd00::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
    ];
    for ip in private {
        assert!(
            !is_public(ip.parse::<IpAddr>().unwrap()),
            "{ip} judged public"
        );
    }
    let public = [
        "1.1.1.1",
        "8.8.8.8",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "192.0.1.1",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.255",
        "93.184.216.34",
        "::ffff:8.8.8.8",
        "2001:200::1",
        "2001:4860:4860::8888",
        "2003::1",
        "2606:4700::1111",
        "64:ff9b:2::1",
    ];
    for ip in public {
        assert!(
            is_public(ip.parse::<IpAddr>().unwrap()),
            "{ip} judged private"
        );
    }
}

/// A request for an IPv4-mapped IPv6 address is judged and dialled as the IPv4 address (the
/// dual-stack dial-back socket would send there).
#[test]
fn server_refuses_ipv4_mapped_private_addresses() {
    let client = peer();
    let config = ServerConfig::default();
    let observed = ma("/ip4/93.184.216.34/udp/5000/quic-v1");
    for a in [
        "/ip6/::ffff:127.0.0.1/udp/4001/quic-v1",
        "/ip6/::ffff:10.1.2.3/udp/4001/quic-v1",
        "/ip6/64:ff9b::a01:203/udp/4001/quic-v1",
        "/ip6/2002:a01:203::1/udp/4001/quic-v1",
    ] {
        assert_eq!(
            config.plan(client, &observed, &[ma(a)], 0),
            Plan::Refuse,
            "{a}"
        );
    }
    let Plan::Dial {
        target, dial_data, ..
    } = config.plan(
        client,
        &observed,
        &[ma("/ip6/::ffff:93.184.216.34/udp/4001/quic-v1")],
        0,
    )
    else {
        panic!("a mapped public address is dialled")
    };
    assert_eq!(target, "93.184.216.34:4001".parse().unwrap());
    assert_eq!(dial_data, None, "same IP as observed: no dial data");
}

#[test]
fn server_admission_limits() {
    let now = Instant::now();
    let config = ServerConfig {
        max_concurrent: 3,
        max_concurrent_per_peer: 2,
        requests_per_peer: 3,
        requests_per_second: 100,
        ..ServerConfig::default()
    };
    let mut engine = ServerEngine::new(config);
    let (a, b, c) = (peer(), peer(), peer());
    assert_eq!(engine.handle_request(now, a), Ok(()));
    assert_eq!(engine.handle_request(now, a), Ok(()));
    assert_eq!(engine.handle_request(now, a), Err(Refusal::PeerBusy));
    assert_eq!(engine.handle_request(now, b), Ok(()));
    assert_eq!(engine.handle_request(now, c), Err(Refusal::Busy));
    engine.handle_finished(a);
    assert_eq!(engine.active(), 2);
    // a made 3 requests this window: the 4th is over its rate even with room.
    assert_eq!(engine.handle_request(now, a), Err(Refusal::PeerRate));
    // A new window.
    let later = now + engine.config().window;
    assert_eq!(engine.handle_request(later, a), Ok(()));
}

#[test]
fn server_global_rate_per_second() {
    let now = Instant::now();
    let mut engine = ServerEngine::new(ServerConfig {
        requests_per_second: 2,
        ..ServerConfig::default()
    });
    let (a, b, c) = (peer(), peer(), peer());
    assert_eq!(engine.handle_request(now, a), Ok(()));
    assert_eq!(engine.handle_request(now, b), Ok(()));
    assert_eq!(engine.handle_request(now, c), Err(Refusal::Rate));
    assert_eq!(
        engine.handle_request(now + Duration::from_secs(1), c),
        Ok(())
    );
}

fn client_with_server(now: Instant) -> (ClientEngine, PeerId) {
    let mut engine = ClientEngine::new(ClientConfig::default(), now, 1);
    let server = peer();
    engine.handle_server_protocols(server, true);
    (engine, server)
}

fn reply(dial_status: DialStatus) -> ProbeReply {
    ProbeReply {
        status: ResponseStatus::Ok,
        dial_status,
        bytes_sent: 0,
    }
}

fn tested(engine: &mut ClientEngine) -> TestResult {
    loop {
        match engine.poll_event() {
            Some(ClientEvent::Tested(t)) => return t,
            Some(_) => {}
            None => panic!("no test result"),
        }
    }
}

/// A new, direct, inbound connection from `server` on a wildcard socket: what a real
/// dial-back arrives on.
fn dial_back_from(server: PeerId) -> DialBackConnection {
    DialBackConnection {
        peer: server,
        inbound: true,
        relayed: false,
        after_request: true,
        local_addr: Some(ma("/ip4/0.0.0.0/udp/4001/quic-v1")),
    }
}

/// The nonce delivered on a connection that proves nothing about the tested address (one
/// that existed before the request, a relayed one, one we dialed, another peer's, one on
/// another local port) is not believed: no verdict, a typed error, nothing confirmed; the
/// same nonce on a proper dial-back connection still counts.
#[test]
fn client_believes_a_dial_back_only_on_a_new_direct_inbound_connection() {
    let now = Instant::now();
    let (mut engine, server) = client_with_server(now);
    let addr = ma("/ip4/198.51.100.7/udp/4001/quic-v1");
    engine.add_candidate(addr.clone());
    let good = dial_back_from(server);
    let cases = [
        (
            DialBackConnection {
                after_request: false,
                ..good.clone()
            },
            DialBackRejected::PreExisting,
        ),
        (
            DialBackConnection {
                relayed: true,
                ..good.clone()
            },
            DialBackRejected::Relayed,
        ),
        (
            // A relayed connection we dialed after the request: relayed is reported first.
            DialBackConnection {
                relayed: true,
                inbound: false,
                local_addr: None,
                ..good.clone()
            },
            DialBackRejected::Relayed,
        ),
        (
            DialBackConnection {
                inbound: false,
                local_addr: None,
                ..good.clone()
            },
            DialBackRejected::Outbound,
        ),
        (
            DialBackConnection {
                peer: peer(),
                ..good.clone()
            },
            DialBackRejected::OtherPeer,
        ),
        (
            DialBackConnection {
                local_addr: Some(ma("/ip4/198.51.100.7/udp/4002/quic-v1")),
                ..good.clone()
            },
            DialBackRejected::OtherPort,
        ),
    ];
    let mut t = now;
    for (connection, why) in cases {
        t += engine.config().probe_interval;
        engine.handle_timeout(t);
        let p = engine.poll_transmit().unwrap();
        assert_eq!(engine.handle_dial_back(p.nonce, &connection), Err(why));
        engine.handle_probe_result(t, p.nonce, Ok(reply(DialStatus::Ok)));
        assert_eq!(
            tested(&mut engine).result,
            Err(ProbeError::DialBackRejected(why)),
            "{connection:?}"
        );
        assert_eq!(engine.poll_event(), None, "nothing confirmed");
        assert_eq!(engine.reachable_addresses().count(), 0);
    }
    // The local socket with the tested IP and port, after a rejected one: reachable.
    t += engine.config().probe_interval;
    engine.handle_timeout(t);
    let p = engine.poll_transmit().unwrap();
    let pre_existing = DialBackConnection {
        after_request: false,
        ..good.clone()
    };
    assert!(engine.handle_dial_back(p.nonce, &pre_existing).is_err());
    let same_socket = DialBackConnection {
        local_addr: Some(addr.clone()),
        ..good
    };
    assert_eq!(engine.handle_dial_back(p.nonce, &same_socket), Ok(()));
    engine.handle_probe_result(t, p.nonce, Ok(reply(DialStatus::Ok)));
    assert_eq!(tested(&mut engine).result, Ok(Reachability::Reachable));
    assert_eq!(engine.poll_event(), Some(ClientEvent::Confirmed(addr)));
}

#[test]
fn client_needs_the_dial_back_before_reachable() {
    let now = Instant::now();
    let (mut engine, server) = client_with_server(now);
    let addr = ma("/ip4/198.51.100.7/udp/4001/quic-v1");
    engine.add_candidate(addr.clone());
    let tick = now + engine.config().probe_interval;
    engine.handle_timeout(tick);
    let probe = engine.poll_transmit().unwrap();
    assert_eq!(
        engine.handle_dial_back(probe.nonce.wrapping_add(1), &dial_back_from(server)),
        Err(DialBackRejected::UnknownNonce)
    );
    engine.handle_probe_result(tick, probe.nonce, Ok(reply(DialStatus::Ok)));
    assert_eq!(tested(&mut engine).result, Err(ProbeError::MissingDialBack));
    assert_eq!(engine.reachable_addresses().count(), 0);
    // No verdict: tried again at the next tick, with a new nonce.
    engine.handle_timeout(tick + engine.config().probe_interval);
    let again = engine.poll_transmit().unwrap();
    assert_eq!(again.addr, addr);
    assert_ne!(again.nonce, probe.nonce);
}

#[test]
fn client_confirms_then_expires() {
    let now = Instant::now();
    let (mut engine, server) = client_with_server(now);
    let addr = ma("/ip4/198.51.100.7/udp/4001/quic-v1");
    engine.add_candidate(addr.clone());
    let mut t = now + engine.config().probe_interval;
    engine.handle_timeout(t);
    let p = engine.poll_transmit().unwrap();
    assert_eq!(
        engine.handle_dial_back(p.nonce, &dial_back_from(server)),
        Ok(())
    );
    engine.handle_probe_result(t, p.nonce, Ok(reply(DialStatus::Ok)));
    assert_eq!(tested(&mut engine).result, Ok(Reachability::Reachable));
    assert_eq!(
        engine.poll_event(),
        Some(ClientEvent::Confirmed(addr.clone()))
    );
    // Not tested again before the re-test interval.
    engine.handle_timeout(t + engine.config().probe_interval);
    assert_eq!(engine.poll_transmit(), None);
    t += engine.config().retest_interval;
    engine.handle_timeout(t);
    let p = engine.poll_transmit().unwrap();
    engine.handle_probe_result(t, p.nonce, Ok(reply(DialStatus::DialError)));
    assert_eq!(
        tested(&mut engine).result,
        Ok(Reachability::Unreachable(Unreachable::NoConnection))
    );
    assert_eq!(engine.poll_event(), Some(ClientEvent::Expired(addr)));
    assert_eq!(engine.reachable_addresses().count(), 0);
}

#[test]
fn client_without_servers_sends_nothing_and_drops_unsupported_servers() {
    let now = Instant::now();
    let mut engine = ClientEngine::new(ClientConfig::default(), now, 1);
    engine.add_candidate(ma("/ip4/198.51.100.7/udp/4001/quic-v1"));
    let tick = now + engine.config().probe_interval;
    engine.handle_timeout(tick);
    assert_eq!(engine.poll_transmit(), None);
    let server = peer();
    engine.handle_server_protocols(server, true);
    engine.handle_timeout(tick + engine.config().probe_interval);
    let p = engine.poll_transmit().unwrap();
    engine.handle_probe_result(tick, p.nonce, Err(ProbeError::Unsupported));
    assert_eq!(engine.servers().count(), 0);
}

#[test]
fn client_bounds_in_flight_probes_and_candidates() {
    let now = Instant::now();
    let config = ClientConfig {
        max_in_flight: 2,
        max_candidates: 3,
        ..ClientConfig::default()
    };
    let mut engine = ClientEngine::new(config, now, 1);
    engine.handle_server_protocols(peer(), true);
    for i in 0..5 {
        engine.add_candidate(ma(&format!("/ip4/198.51.100.{i}/udp/4001/quic-v1")));
    }
    // The best reported candidate goes first.
    engine.add_candidate(ma("/ip4/198.51.100.4/udp/4001/quic-v1"));
    engine.handle_timeout(now + Duration::from_secs(60));
    let first = engine.poll_transmit().unwrap();
    assert_eq!(first.addr, ma("/ip4/198.51.100.4/udp/4001/quic-v1"));
    assert!(engine.poll_transmit().is_some());
    assert_eq!(engine.poll_transmit(), None);
}

#[test]
fn client_spreads_probes_over_servers() {
    let now = Instant::now();
    let mut engine = ClientEngine::new(ClientConfig::default(), now, 3);
    let (a, b) = (peer(), peer());
    engine.handle_server_protocols(a, true);
    engine.handle_server_protocols(b, true);
    engine.add_candidate(ma("/ip4/198.51.100.1/udp/4001/quic-v1"));
    engine.add_candidate(ma("/ip4/198.51.100.2/udp/4001/quic-v1"));
    engine.handle_timeout(now + Duration::from_secs(60));
    let p1 = engine.poll_transmit().unwrap();
    let p2 = engine.poll_transmit().unwrap();
    assert_ne!(p1.server, p2.server);
}
