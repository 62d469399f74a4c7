use super::routing::quic_listen_addr;
use super::*;
use crate::engine::KadConfig;
use crate::protocol::{KadPeer, KadResponse, ProtocolError};
use crate::query::QueryResult;
use meshwire_core::Keypair;
use meshwire_swarm::StreamError;

fn peer(n: u64) -> PeerId {
    Keypair::from_seed_for_tests(n).peer_id()
}

fn addr(n: u16) -> Multiaddr {
    format!("/ip4/10.0.0.1/udp/{n}/quic-v1").parse().unwrap()
}

#[test]
fn protocols_follow_the_mode() {
    let mut b = Behaviour::new(peer(0), Config::new());
    assert_eq!(b.protocols(), vec![PROTOCOL]);
    b.set_mode(Mode::Client);
    assert!(b.protocols().is_empty());
    // The engine reports the change; the behaviour turns it into ProtocolsChanged.
    let mut log = Vec::new();
    flush(&mut b, &mut log);
    let mut log = log.into_iter();
    assert!(matches!(log.next(), Some(ToSwarm::ProtocolsChanged)));
    assert!(matches!(
        log.next(),
        Some(ToSwarm::GenerateEvent(Event::ModeChanged {
            mode: Mode::Client
        }))
    ));
}

fn dialer(a: Multiaddr) -> ConnectedPoint {
    ConnectedPoint::Dialer { address: a }
}

fn listener(send_back_addr: Multiaddr) -> ConnectedPoint {
    ConnectedPoint::Listener {
        local_addr: addr(1000),
        send_back_addr,
    }
}

/// Runs the engine's outputs through the behaviour until it is idle.
fn drive(b: &mut Behaviour) {
    let t = now();
    while b.drain_engine(t) {}
}

/// Moves the commands the behaviour queued to `log`.
fn flush(b: &mut Behaviour, log: &mut Vec<ToSwarm<Event>>) {
    drive(b);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    while let Poll::Ready(c) = b.outbox.poll(&mut cx) {
        log.push(c);
    }
}

/// The connection-manager commands in `log`, as text.
fn cm_commands(log: &[ToSwarm<Event>]) -> Vec<String> {
    log.iter()
        .filter_map(|c| match c {
            ToSwarm::ConnManager(c) => Some(format!("{c:?}")),
            _ => None,
        })
        .collect()
}

/// The request of the last stream asked for.
fn last_request(b: &mut Behaviour, log: &mut Vec<ToSwarm<Event>>) -> RequestId {
    flush(b, log);
    let Some(ToSwarm::OpenStream(open)) = log
        .iter()
        .rev()
        .find(|c| matches!(c, ToSwarm::OpenStream(_)))
    else {
        panic!("no stream asked for")
    };
    b.outbox.stream(&open.id).unwrap().request_id
}

#[test]
fn address_cache_is_bounded() {
    let mut b = Behaviour::new(
        peer(0),
        Config::new()
            .with_max_address_cache_peers(2)
            .with_max_addrs_per_peer(2),
    );
    for n in 0..5 {
        b.routing.remember_peer_addr(peer(1), &addr(n));
    }
    assert_eq!(
        b.routing.peer_addrs[&peer(1)].listen,
        vec![addr(3), addr(4)]
    );
    b.routing.remember_peer_addr(peer(2), &addr(1));
    // Peer 1 is refreshed, so peer 2 is the oldest when peer 3 arrives.
    b.routing.remember_peer_addr(peer(1), &addr(3));
    b.routing.remember_peer_addr(peer(3), &addr(1));
    assert_eq!(b.routing.peer_addrs.len(), 2);
    assert!(
        b.routing.peer_addrs.contains_key(&peer(1)) && b.routing.peer_addrs.contains_key(&peer(3))
    );
    // A connected peer is forgotten last, however old its entry.
    b.on_connection_established(peer(1), ConnectionId::next(), &dialer(addr(7)), 0, now());
    b.routing.remember_peer_addr(peer(3), &addr(2));
    b.routing.remember_peer_addr(peer(4), &addr(1));
    assert!(
        b.routing.peer_addrs.contains_key(&peer(1)) && b.routing.peer_addrs.contains_key(&peer(4))
    );
    assert_eq!(b.routing.peer_addrs[&peer(1)].dialed, vec![addr(7)]);
}

#[test]
fn dial_hook_offers_table_request_and_identify_addresses() {
    let mut b = Behaviour::new(peer(0), Config::new());
    b.add_address(peer(1), addr(1));
    b.routing.remember_peer_addr(peer(1), &addr(2));
    b.send_request(
        RequestId::for_tests(7),
        peer(1),
        vec![addr(3), addr(1)],
        KadRequest::Ping,
        now(),
    );
    let got = b
        .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(1)), &[addr(2)])
        .unwrap();
    assert_eq!(got, vec![addr(1), addr(3)]);
    // The request's addresses are forgotten once its stream is resolved.
    b.routing.release_dial_addrs(&peer(1));
    assert!(b.routing.no_dial_addrs());
    assert!(b
        .handle_pending_outbound_connection(ConnectionId::next(), None, &[])
        .unwrap()
        .is_empty());
    // Addresses of past connections are offered too.
    let quic: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
    let c = ConnectionId::next();
    b.on_connection_established(peer(2), c, &listener(quic.clone()), 0, now());
    b.on_connection_closed(peer(2), c, 0);
    let got = b
        .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(2)), &[])
        .unwrap();
    assert_eq!(got, vec![quic]);
}

#[test]
fn only_connected_peers_are_tagged() {
    let mut b = Behaviour::new(peer(0), Config::new());
    let mut log = Vec::new();
    // A bootstrap peer we are not connected to: no tag (the connection manager would keep
    // a temporary entry for it).
    b.add_address(peer(1), addr(1));
    flush(&mut b, &mut log);
    assert!(cm_commands(&log).is_empty(), "{:?}", cm_commands(&log));
    // It connects: tagged.
    let c = ConnectionId::next();
    b.on_connection_established(peer(1), c, &dialer(addr(1)), 0, now());
    flush(&mut b, &mut log);
    let cmds = cm_commands(&log);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(cmds[0].starts_with("TagPeer") && cmds[0].contains("\"kad\"") && cmds[0].contains('5'));
    // It leaves the table while connected: untagged.
    b.remove_peer(&peer(1));
    flush(&mut b, &mut log);
    let cmds = cm_commands(&log);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(cmds[1].starts_with("UntagPeer"));
    // A connected peer entering the table is tagged at once; once disconnected, leaving
    // the table sends nothing.
    log.clear();
    let c2 = ConnectionId::next();
    b.on_connection_established(peer(2), c2, &dialer(addr(2)), 0, now());
    b.add_address(peer(2), addr(2));
    flush(&mut b, &mut log);
    assert_eq!(cm_commands(&log).len(), 1);
    b.on_connection_closed(peer(2), c2, 0);
    b.remove_peer(&peer(2));
    flush(&mut b, &mut log);
    assert_eq!(cm_commands(&log).len(), 1);
    // Without a tag configured, nothing is sent.
    let mut b = Behaviour::new(peer(0), Config::new().with_conn_manager_tag(None));
    log.clear();
    b.on_connection_established(peer(1), c, &dialer(addr(1)), 0, now());
    b.add_address(peer(1), addr(1));
    flush(&mut b, &mut log);
    assert!(cm_commands(&log).is_empty());
}

#[test]
fn identify_protocols_add_and_remove_peers() {
    let mut b = Behaviour::new(peer(0), Config::new());
    let t = now();
    let c = ConnectionId::next();
    b.on_connection_established(peer(1), c, &dialer(addr(9)), 0, t);
    b.routing.remember_peer_addr(peer(1), &addr(1));
    b.on_remote_protocols(peer(1), c, &[StreamProtocol::new("/ipfs/id/1.0.0")], t);
    assert!(!b.routing_table().contains(&peer(1)));
    b.on_remote_protocols(peer(1), c, &[PROTOCOL], t);
    let node = b.routing_table().get(&peer(1)).unwrap();
    assert_eq!(node.addrs, vec![addr(1), addr(9)]);
    b.on_remote_protocols(peer(1), c, &[], t);
    assert!(!b.routing_table().contains(&peer(1)));
    // A listener-side connection of a peer without known addresses is not routable,
    // unless it comes from a QUIC listening socket.
    let tcp: Multiaddr = "/ip4/10.0.0.2/tcp/50123".parse().unwrap();
    let c2 = ConnectionId::next();
    b.on_connection_established(peer(2), c2, &listener(tcp), 0, t);
    b.on_remote_protocols(peer(2), c2, &[PROTOCOL], t);
    assert!(!b.routing_table().contains(&peer(2)));
}

#[test]
fn inbound_only_servers_enter_the_table() {
    // Peer 1 only ever dialed us over QUIC, and identify's report of its listen addresses
    // is not (or no longer) known: identify re-announces only addresses it did not have.
    let mut b = Behaviour::new(peer(0), Config::new());
    let t = now();
    let quic: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
    let c = ConnectionId::next();
    b.on_connection_established(peer(1), c, &listener(quic.clone()), 0, t);
    b.on_remote_protocols(peer(1), c, &[PROTOCOL], t);
    assert_eq!(b.routing_table().get(&peer(1)).unwrap().addrs, vec![quic]);
    // With listen addresses known, those are used and the observed one is not.
    let c2 = ConnectionId::next();
    let from: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
    b.on_connection_established(peer(2), c2, &listener(from), 0, t);
    b.routing.remember_peer_addr(peer(2), &addr(2));
    b.on_remote_protocols(peer(2), c2, &[PROTOCOL], t);
    assert_eq!(
        b.routing_table().get(&peer(2)).unwrap().addrs,
        vec![addr(2)]
    );
    // Unspecified addresses and port 0 are not listening sockets.
    for bad in [
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "/ip4/10.0.0.3/udp/0/quic-v1",
    ] {
        assert!(quic_listen_addr(&bad.parse().unwrap()).is_none());
    }
}

#[test]
fn responses_record_only_the_dialed_address() {
    let mut b = Behaviour::new(peer(0), Config::new());
    let mut log = Vec::new();
    let t = now();
    let c1 = ConnectionId::next();
    b.on_connection_established(peer(1), c1, &dialer(addr(1)), 0, t);
    b.add_address(peer(1), addr(1));
    b.find_node(peer(2).to_bytes());
    drive(&mut b);
    let req = last_request(&mut b, &mut log);
    // Peer 1 lists peer 2 at someone else's address.
    let victim: Multiaddr = "/ip4/192.0.2.1/udp/53/quic-v1".parse().unwrap();
    b.on_done(
        Done::Outbound {
            request_id: req,
            peer: peer(1),
            addr: b.routing.dialed_addr(c1),
            expects_response: true,
            result: Ok(Some(KadResponse::FindNode {
                closer_peers: vec![KadPeer::new(peer(2), vec![victim.clone()])],
            })),
        },
        t,
    );
    drive(&mut b);
    let req = last_request(&mut b, &mut log);
    // The victim's address is offered for dialing peer 2...
    let dial = b
        .handle_pending_outbound_connection(ConnectionId::next(), Some(peer(2)), &[])
        .unwrap();
    assert_eq!(dial, vec![victim.clone()]);
    // ... but peer 2 answers over a connection we dialed at its real address, which is
    // the one recorded.
    let c2 = ConnectionId::next();
    b.on_connection_established(peer(2), c2, &dialer(addr(2)), 0, t);
    b.on_done(
        Done::Outbound {
            request_id: req,
            peer: peer(2),
            addr: b.routing.dialed_addr(c2),
            expects_response: true,
            result: Ok(Some(KadResponse::FindNode {
                closer_peers: vec![],
            })),
        },
        t,
    );
    drive(&mut b);
    assert_eq!(
        b.routing_table().get(&peer(2)).unwrap().addrs,
        vec![addr(2)]
    );
    // Over a connection peer 3 dialed, nothing is recorded.
    let c3 = ConnectionId::next();
    b.on_connection_established(peer(3), c3, &listener(addr(3)), 0, t);
    assert_eq!(b.routing.dialed_addr(c3), None);
}

#[test]
fn a_request_we_cannot_encode_is_not_blamed_on_the_peer() {
    let mut b = Behaviour::new(
        peer(0),
        Config::new().with_max_message_size(64).with_max_failures(1),
    );
    b.add_address(peer(1), addr(1));
    let q = b.find_node(vec![0; 100]);
    let mut log = Vec::new();
    flush(&mut b, &mut log);
    assert!(b.routing_table().contains(&peer(1)), "the peer stays");
    assert!(!log.iter().any(|c| matches!(c, ToSwarm::OpenStream(_))));
    assert!(log.iter().any(|c| matches!(c,
        ToSwarm::GenerateEvent(Event::QueryFinished {
            id,
            result: QueryResult::FindNode(Err(QueryError::Unsendable(ProtocolError::MessageTooLarge { .. }))),
            ..
        }) if *id == q)));
    // A record no message could carry is refused up front.
    let big = Record::new("k", vec![0; 100]);
    assert!(matches!(
        b.put_value(big, 1),
        Err(StoreError::RecordTooLarge { max: 64, .. })
    ));
}

#[test]
fn errors_classify_unsupported() {
    assert!(Error::Stream(StreamError::UnsupportedProtocols).is_unsupported());
    let timeout = meshwire_swarm::toolkit::Timeout(std::time::Duration::from_secs(1));
    assert!(!Error::Timeout(timeout).is_unsupported());
    let e = Error::from(std::io::Error::other("boom"));
    assert!(matches!(e, Error::Stream(StreamError::Io(_))));
}

#[test]
fn inbound_streams_past_the_total_come_out_of_the_heaviest_peer() {
    use super::streams::Inbound;
    let (a, b, c) = (peer(1), peer(2), peer(3));
    let conn = ConnectionId::from_raw(1);
    let mut inbound = Inbound::default();
    // Per peer 3, in all 4.
    for _ in 0..3 {
        inbound.admit(a, conn, 3, 4).unwrap();
    }
    inbound.admit(b, conn, 3, 4).unwrap();
    assert_eq!(inbound.len(), 4);
    // A newcomer with one stream takes the place of the oldest stream of `a`, which holds the
    // most; the total holds.
    let c_id = inbound.admit(c, conn, 3, 4).unwrap();
    assert_eq!(inbound.len(), 4);
    assert!(inbound.contains(c_id));
    assert!(!inbound.contains(0), "a's oldest stream made room");
    // `a` (2 streams) cannot push out `b` or `c` (1 each) by more than one: it is refused.
    assert!(matches!(
        inbound.admit(a, conn, 3, 4),
        Err(Error::TooManyStreams { limit: 4 })
    ));
    assert_eq!(inbound.len(), 4);
}

#[test]
fn config_settings_reach_the_engine() {
    // The defaults are the engine's.
    assert_eq!(
        format!("{:?}", Config::new().engine_config()),
        format!("{:?}", KadConfig::default())
    );
    let config = Config::new()
        .with_k(7)
        .with_alpha(5)
        .with_lookup_retries(2)
        .with_record_ttl(std::time::Duration::from_secs(60))
        .with_mode(Mode::Client);
    let b = Behaviour::new(peer(0), config);
    let engine = b.engine().config();
    assert_eq!((engine.k, engine.alpha, engine.lookup_retries), (7, 5, 2));
    assert_eq!(engine.store.record_ttl, std::time::Duration::from_secs(60));
    assert_eq!(b.mode(), Mode::Client);
    assert!(b.protocols().is_empty());
    // A behaviour around a given engine reports that engine's settings, keeps its own.
    let engine = KadEngine::with_seed(peer(1), Config::new().with_k(3).engine_config(), 1);
    let b = Behaviour::with_engine(engine, Config::new().with_k(9).with_max_stream_tasks(4));
    assert_eq!((b.config().k, b.config().max_stream_tasks), (3, 4));
}
