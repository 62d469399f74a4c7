use super::*;
use std::time::Duration;

use crate::kbucket::Key;
use crate::protocol::KadCodec;
use crate::protocol::{KadPeer, Record, RecordKey, DEFAULT_MAX_MESSAGE_SIZE};
use crate::query::{FindNodeOk, QueryResult, QueryStats};
use crate::store::{StoreConfig, StoreError};
use meshwire_core::Keypair;

fn peer(n: u64) -> PeerId {
    Keypair::from_seed_for_tests(n).peer_id()
}

fn addr(n: u64) -> Multiaddr {
    format!("/memory/{n}").parse().unwrap()
}

/// Cores wired together with instant, lossless delivery.
struct Net {
    cores: Vec<KadEngine>,
    ids: Vec<PeerId>,
    events: Vec<(usize, KadEvent)>,
}

impl Net {
    fn new(n: u64, config: KadConfig) -> Self {
        let ids: Vec<_> = (0..n).map(peer).collect();
        let cores = ids
            .iter()
            .zip(0..)
            .map(|(id, s)| KadEngine::with_seed(*id, config.clone(), s))
            .collect();
        Net {
            cores,
            ids,
            events: Vec::new(),
        }
    }

    fn link(&mut self, a: usize, b: usize, now: Instant) {
        let (id, ad) = (self.ids[b], addr(b as u64));
        self.cores[a].add_address(id, ad, now);
    }

    fn run(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            for i in 0..self.cores.len() {
                self.cores[i].handle_timeout(now);
                while let Some(out) = next(&mut self.cores[i]) {
                    busy = true;
                    match out {
                        Output::SendRequest {
                            request_id,
                            peer,
                            request,
                            ..
                        } => {
                            let j = self.ids.iter().position(|p| *p == peer).unwrap();
                            // Identify tells the server that the requester serves the DHT.
                            let (me, my_addr) = (self.ids[i], addr(i as u64));
                            if self.cores[i].mode() == Mode::Server {
                                self.cores[j].add_address(me, my_addr, now);
                            }
                            let expects = request.expects_response();
                            match self.cores[j].handle_request(self.ids[i], request, now) {
                                Some(r) => self.cores[i].handle_response(
                                    request_id,
                                    peer,
                                    Some(addr(j as u64)),
                                    r,
                                    now,
                                ),
                                None if expects => {
                                    self.cores[i].handle_request_failed(request_id, now)
                                }
                                None => {}
                            }
                        }
                        Output::Event(e) => self.events.push((i, e)),
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn result(&self, node: usize, query: QueryId) -> Option<(&QueryResult, &QueryStats)> {
        self.events.iter().find_map(|(n, e)| match e {
            KadEvent::QueryFinished {
                id, result, stats, ..
            } if *n == node && *id == query => Some((result, stats)),
            _ => None,
        })
    }
}

/// What the engine hands out, in one stream: requests to send first, then events.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    SendRequest {
        request_id: RequestId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
    },
    Event(KadEvent),
}

fn next(core: &mut KadEngine) -> Option<Output> {
    if let Some(t) = core.poll_transmit() {
        return Some(Output::SendRequest {
            request_id: t.request_id,
            peer: t.peer,
            addrs: t.addrs,
            request: t.request,
        });
    }
    core.poll_event().map(Output::Event)
}

/// Runs what is due at `now` and takes every output.
fn drain(core: &mut KadEngine, now: Instant) -> Vec<Output> {
    core.handle_timeout(now);
    std::iter::from_fn(|| next(core)).collect()
}

fn sends(outs: &[Output]) -> Vec<(RequestId, PeerId, KadRequest)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SendRequest {
                request_id,
                peer,
                request,
                ..
            } => Some((*request_id, *peer, request.clone())),
            _ => None,
        })
        .collect()
}

/// Peers that land in `local`'s bucket 255.
fn far_peers(local: &PeerId, n: usize) -> Vec<u64> {
    let lk = Key::from_peer(local);
    (100..)
        .filter(|s| lk.distance(&Key::from_peer(&peer(*s))).bucket_index() == Some(255))
        .take(n)
        .collect()
}

#[test]
fn server_answers_every_request_type() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    for n in 1..=30 {
        core.add_address(peer(n), addr(n), now);
    }
    let from = peer(5);
    // FIND_NODE: k closest, never the requester.
    let Some(KadResponse::FindNode { closer_peers }) =
        core.handle_request(from, KadRequest::FindNode { key: b"x".to_vec() }, now)
    else {
        panic!()
    };
    assert_eq!(closer_peers.len(), 20);
    assert!(closer_peers
        .iter()
        .all(|p| p.id != from && !p.addrs.is_empty()));
    let target = Key::from_bytes(b"x");
    assert!(closer_peers
        .windows(2)
        .all(|w| Key::from_peer(&w[0].id).distance(&target)
            < Key::from_peer(&w[1].id).distance(&target)));
    // PUT_VALUE stores and echoes; GET_VALUE returns it with a TTL.
    let rec = Record::new("k", b"v".to_vec());
    assert_eq!(
        core.handle_request(
            from,
            KadRequest::PutValue {
                record: rec.clone()
            },
            now
        ),
        Some(KadResponse::PutValue {
            record: rec.clone()
        })
    );
    let Some(KadResponse::GetValue {
        record: Some(got),
        closer_peers,
    }) = core.handle_request(from, KadRequest::GetValue { key: "k".into() }, now)
    else {
        panic!()
    };
    assert_eq!((got.key, got.value), (rec.key.clone(), rec.value.clone()));
    assert!(got.ttl.is_some());
    assert_eq!(closer_peers.len(), 20);
    // Oversized values are refused (no response).
    let big = Record::new("big", vec![0; 70 * 1024]);
    assert_eq!(
        core.handle_request(from, KadRequest::PutValue { record: big }, now),
        None
    );
    // ADD_PROVIDER only for the sender itself; GET_PROVIDERS returns it.
    let key = RecordKey::from("provided");
    let other = KadPeer::new(peer(6), vec![addr(6)]);
    assert_eq!(
        core.handle_request(
            from,
            KadRequest::AddProvider {
                key: key.clone(),
                provider: other
            },
            now
        ),
        None
    );
    let me = KadPeer::new(from, vec![addr(5)]);
    assert_eq!(
        core.handle_request(
            from,
            KadRequest::AddProvider {
                key: key.clone(),
                provider: me
            },
            now
        ),
        None
    );
    let Some(KadResponse::GetProviders { provider_peers, .. }) =
        core.handle_request(peer(7), KadRequest::GetProviders { key: key.clone() }, now)
    else {
        panic!()
    };
    assert_eq!(
        provider_peers.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![from]
    );
    assert_eq!(
        core.handle_request(from, KadRequest::Ping, now),
        Some(KadResponse::Pong)
    );
    // Bad provider keys are refused.
    assert_eq!(
        core.handle_request(
            from,
            KadRequest::GetProviders {
                key: RecordKey::new(vec![])
            },
            now
        ),
        None
    );
    // Every handled request was reported.
    let events = drain(&mut core, now);
    let stored: Vec<_> = events
        .iter()
        .filter_map(|o| match o {
            Output::Event(KadEvent::InboundRequest {
                request: InboundRequest::AddProvider { result, .. },
                ..
            }) => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stored, vec![Ok(false), Ok(true)]);
    assert!(events.iter().any(|o| matches!(
        o,
        Output::Event(KadEvent::InboundRequest {
            request: InboundRequest::PutValue {
                result: Err(StoreError::ValueTooLarge(_)),
                ..
            },
            ..
        })
    )));
    // Every response survives the wire codec.
    let codec = KadCodec::default();
    let resp = core
        .handle_request(from, KadRequest::FindNode { key: b"x".to_vec() }, now)
        .unwrap();
    let bytes = codec.encode_response(&resp).unwrap();
    assert_eq!(codec.decode_response(&bytes).unwrap().unwrap().0, resp);
}

#[test]
fn client_mode_answers_nothing() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(
        peer(0),
        KadConfig {
            mode: Mode::Client,
            ..KadConfig::default()
        },
        0,
    );
    assert_eq!(core.handle_request(peer(1), KadRequest::Ping, now), None);
    core.set_mode(Mode::Server);
    assert_eq!(
        drain(&mut core, now),
        vec![Output::Event(KadEvent::ModeChanged { mode: Mode::Server })]
    );
    assert_eq!(
        core.handle_request(peer(1), KadRequest::Ping, now),
        Some(KadResponse::Pong)
    );
    core.set_mode(Mode::Server);
    assert!(drain(&mut core, now)
        .iter()
        .all(|o| !matches!(o, Output::Event(KadEvent::ModeChanged { .. }))));
}

/// A core with k = 2 whose bucket 255 holds two peers; a third candidate arrives.
fn full_bucket() -> (KadEngine, Vec<u64>, RequestId, Instant) {
    let now = Instant::now();
    let me = peer(0);
    let mut core = KadEngine::with_seed(
        me,
        KadConfig {
            k: 2,
            ..KadConfig::default()
        },
        0,
    );
    let far = far_peers(&me, 3);
    core.add_address(peer(far[0]), addr(far[0]), now);
    core.add_address(peer(far[1]), addr(far[1]), now);
    drain(&mut core, now);
    core.add_address(peer(far[2]), addr(far[2]), now);
    let outs = drain(&mut core, now);
    let s = sends(&outs);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].1, &s[0].2),
        (peer(far[0]), &KadRequest::Ping),
        "the least recently seen is pinged"
    );
    (core, far, s[0].0, now)
}

#[test]
fn ping_before_evict_keeps_a_live_peer() {
    let (mut core, far, ping, now) = full_bucket();
    core.handle_response(ping, peer(far[0]), None, KadResponse::Pong, now);
    let t = core.routing_table();
    assert!(t.contains(&peer(far[0])) && t.contains(&peer(far[1])) && !t.contains(&peer(far[2])));
    let order: Vec<_> = t
        .bucket(255)
        .unwrap()
        .nodes()
        .iter()
        .map(|n| n.peer)
        .collect();
    assert_eq!(
        order,
        vec![peer(far[1]), peer(far[0])],
        "the live peer moved to the tail"
    );
}

#[test]
fn ping_before_evict_replaces_a_dead_peer() {
    let (mut core, far, ping, now) = full_bucket();
    core.handle_request_failed(ping, now);
    let t = core.routing_table();
    assert!(!t.contains(&peer(far[0])) && t.contains(&peer(far[2])));
    let outs = drain(&mut core, now);
    assert!(outs.contains(&Output::Event(KadEvent::RoutingUpdated {
        peer: peer(far[2]),
        addresses: vec![addr(far[2])],
        bucket: 255,
        is_new_peer: true,
        evicted: Some(peer(far[0])),
    })));
}

#[test]
fn ping_timeout_evicts_too() {
    let (mut core, far, _ping, now) = full_bucket();
    let deadline = core.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(10));
    drain(&mut core, deadline);
    assert!(!core.routing_table().contains(&peer(far[0])));
    assert!(core.routing_table().contains(&peer(far[2])));
}

#[test]
fn request_timeout_fails_the_peer_and_the_lookup_ends() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    core.add_address(peer(1), addr(1), now);
    let q = core.find_node(b"t".to_vec(), now);
    let s = sends(&drain(&mut core, now));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1, peer(1));
    let at = core.poll_timeout().unwrap();
    assert_eq!(at, now + Duration::from_secs(10));
    assert!(drain(&mut core, at - Duration::from_millis(1)).is_empty());
    let outs = drain(&mut core, at);
    let finished = outs.iter().find_map(|o| match o {
        Output::Event(KadEvent::QueryFinished {
            id, result, stats, ..
        }) if *id == q => Some((result, stats)),
        _ => None,
    });
    let (result, stats) = finished.expect("finished");
    assert_eq!(
        result,
        &QueryResult::FindNode(Ok(FindNodeOk {
            key: b"t".to_vec(),
            peers: vec![],
            converged: true
        }))
    );
    assert_eq!((stats.requests, stats.failures), (1, 1));
    // A late response is ignored.
    core.handle_response(
        s[0].0,
        peer(1),
        Some(addr(1)),
        KadResponse::FindNode {
            closer_peers: vec![],
        },
        at,
    );
    assert!(drain(&mut core, at).is_empty());
}

#[test]
fn query_timeout_finishes_with_timeout() {
    let now = Instant::now();
    let config = KadConfig {
        query_timeout: Duration::from_secs(3),
        ..KadConfig::default()
    };
    let mut core = KadEngine::with_seed(peer(0), config, 0);
    core.add_address(peer(1), addr(1), now);
    let q = core.get_value("k".into(), 1, now);
    drain(&mut core, now);
    assert_eq!(core.poll_timeout(), Some(now + Duration::from_secs(3)));
    let outs = drain(&mut core, now + Duration::from_secs(3));
    assert!(outs.iter().any(|o| matches!(o,
        Output::Event(KadEvent::QueryFinished { id, result: QueryResult::GetValue(Err(QueryError::Timeout)), .. })
            if *id == q)));
    assert_eq!(core.num_queries(), 0);
}

#[test]
fn wrong_or_unknown_responders_are_not_trusted() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    core.add_address(peer(1), addr(1), now);
    core.find_node(b"t".to_vec(), now);
    let s = sends(&drain(&mut core, now));
    // A response claiming to come from another peer counts as a failure of the request.
    let fake = vec![KadPeer::new(peer(9), vec![addr(9)])];
    core.handle_response(
        s[0].0,
        peer(2),
        Some(addr(2)),
        KadResponse::FindNode { closer_peers: fake },
        now,
    );
    let outs = drain(&mut core, now);
    let Output::Event(KadEvent::QueryFinished {
        result: QueryResult::FindNode(Ok(ok)),
        ..
    }) = &outs[0]
    else {
        panic!("{outs:?}")
    };
    assert!(ok.peers.is_empty());
    assert!(!core.routing_table().contains(&peer(2)));
    core.handle_request_failed(RequestId(999), now);
    assert!(drain(&mut core, now).is_empty());
}

#[test]
fn unresponsive_peers_leave_the_table() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(
        peer(0),
        KadConfig {
            max_failures: 2,
            ..KadConfig::default()
        },
        0,
    );
    core.add_address(peer(1), addr(1), now);
    drain(&mut core, now);
    for round in 0..2 {
        core.find_node(vec![round], now);
        let s = sends(&drain(&mut core, now));
        core.handle_request_failed(s[0].0, now);
    }
    assert!(!core.routing_table().contains(&peer(1)));
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Event(KadEvent::PeerRemoved {
            reason: RemovalReason::Unresponsive,
            ..
        })
    )));
}

#[test]
fn bootstrap_needs_a_peer_and_fills_tables() {
    let now = Instant::now();
    let mut lonely = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    assert_eq!(lonely.bootstrap(now), Err(QueryError::NoKnownPeers));

    let mut net = Net::new(30, KadConfig::default());
    let mut queries = Vec::new();
    for i in 1..30 {
        net.link(i, 0, now);
        queries.push((i, net.cores[i].bootstrap(now).unwrap()));
        net.run(now);
    }
    for (i, q) in queries {
        let (result, stats) = net.result(i, q).expect("bootstrap finished");
        let QueryResult::Bootstrap(Ok(ok)) = result else {
            panic!("{result:?}")
        };
        assert!(ok.lookups >= 1 && stats.requests > 0);
    }
    // The nodes joined one after another: the last one learned everyone through its
    // lookups, and the first ones learned the later ones from their requests.
    assert_eq!(net.cores[29].routing_table().len(), 29);
    assert_eq!(net.cores[1].routing_table().len(), 29);
    // The periodic bootstrap is scheduled.
    assert!(net.cores[1].poll_timeout().is_some());
}

#[test]
fn lookup_walks_a_chain_of_cores() {
    // Node i knows only node i + 1: finding node 9 from node 0 takes nine rounds.
    let now = Instant::now();
    let mut net = Net::new(10, KadConfig::default());
    for i in 0..9 {
        net.link(i, i + 1, now);
    }
    let target = net.ids[9].to_bytes();
    let q = net.cores[0].find_node(target, now);
    net.run(now);
    let (QueryResult::FindNode(Ok(ok)), stats) = net.result(0, q).unwrap() else {
        panic!()
    };
    assert_eq!(ok.peers[0].id, net.ids[9]);
    assert_eq!(ok.peers.len(), 9);
    assert_eq!(stats.hops, 9);
    assert_eq!(stats.closest_depth, Some(8));
}

#[test]
fn put_get_with_caching_and_providers() {
    let now = Instant::now();
    let mut net = Net::new(
        40,
        KadConfig {
            k: 5,
            ..KadConfig::default()
        },
    );
    for i in 1..40 {
        net.link(i, 0, now);
        net.cores[i].bootstrap(now).unwrap();
        net.run(now);
    }
    // PUT at the 5 closest.
    let rec = Record::new("key", b"value".to_vec());
    let q = net.cores[3].put_value(rec.clone(), 3, now).unwrap();
    net.run(now);
    let (QueryResult::PutValue(Ok(ok)), stats) = net.result(3, q).unwrap() else {
        panic!("{:?}", net.result(3, q))
    };
    assert_eq!(ok.successes, 5);
    assert!(stats.hops >= 2, "lookup round(s) plus the store round");
    let holders: Vec<_> = (0..40)
        .filter(|&i| net.cores[i].record_store().get(&rec.key, now).is_some())
        .collect();
    assert_eq!(holders.len(), 6, "the 5 closest and the publisher");
    // GET from a node that does not hold it; the record gets cached at the closest peer
    // that answered without it.
    let getter = (0..40).find(|i| !holders.contains(i)).unwrap();
    let q = net.cores[getter].get_value(rec.key.clone(), 1, now);
    net.run(now);
    let (QueryResult::GetValue(Ok(ok)), _) = net.result(getter, q).unwrap() else {
        panic!()
    };
    assert_eq!(ok.records[0].record.value, rec.value);
    if let Some(cached) = ok.cached_at {
        let i = net.ids.iter().position(|p| *p == cached).unwrap();
        assert!(net.cores[i].record_store().get(&rec.key, now).is_some());
    }
    // A missing record is NotFound.
    let q = net.cores[getter].get_value("nope".into(), 1, now);
    net.run(now);
    assert_eq!(
        net.result(getter, q).unwrap().0,
        &QueryResult::GetValue(Err(QueryError::NotFound))
    );
    // Providers.
    net.cores[7].set_external_addresses(vec![addr(7)]);
    let key = RecordKey::from("content");
    let q = net.cores[7].start_providing(key.clone(), now).unwrap();
    net.run(now);
    let (QueryResult::StartProviding(Ok(ok)), _) = net.result(7, q).unwrap() else {
        panic!()
    };
    assert_eq!(ok.peers, 5);
    let q = net.cores[20].get_providers(key.clone(), None, now);
    net.run(now);
    let (QueryResult::GetProviders(Ok(ok)), _) = net.result(20, q).unwrap() else {
        panic!()
    };
    assert_eq!(ok.providers, vec![KadPeer::new(net.ids[7], vec![addr(7)])]);
}

/// An IP address of someone else, listed for a real peer by a malicious one.
fn victim(n: u16) -> Multiaddr {
    format!("/ip4/192.0.2.{}/udp/{n}/quic-v1", n % 250)
        .parse()
        .unwrap()
}

#[test]
fn third_party_addresses_are_never_recorded() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    let (liar, real) = (peer(1), peer(2));
    core.add_address(liar, addr(1), now);
    // `real` is known at its real address already.
    core.add_address(real, addr(2), now);
    drain(&mut core, now);
    let q = core.find_node(real.to_bytes(), now);
    let s = sends(&drain(&mut core, now));
    let to_liar = s.iter().find(|(_, p, _)| *p == liar).unwrap().0;
    let to_real = s.iter().find(|(_, p, _)| *p == real).unwrap().0;
    // The liar lists `real` (and a new peer) at eight victim addresses.
    let victims: Vec<Multiaddr> = (1..=8).map(victim).collect();
    let lies = vec![
        KadPeer::new(real, victims.clone()),
        KadPeer::new(peer(3), victims.clone()),
    ];
    core.handle_response(
        to_liar,
        liar,
        Some(addr(1)),
        KadResponse::FindNode { closer_peers: lies },
        now,
    );
    core.handle_response(
        to_real,
        real,
        Some(addr(2)),
        KadResponse::FindNode {
            closer_peers: vec![],
        },
        now,
    );
    // peer 3 is contacted at the addresses we were given (they are all we have)...
    let outs = drain(&mut core, now);
    let to_3 = outs
        .iter()
        .find_map(|o| match o {
            Output::SendRequest {
                request_id,
                peer: p,
                addrs,
                ..
            } if *p == peer(3) => Some((*request_id, addrs.clone())),
            _ => None,
        })
        .expect("peer 3 is asked");
    assert_eq!(to_3.1, victims, "third-party addresses are for dialing");
    // ... and answers over the connection we dialed at its real address.
    core.handle_response(
        to_3.0,
        peer(3),
        Some(addr(3)),
        KadResponse::FindNode {
            closer_peers: vec![],
        },
        now,
    );
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(o,
        Output::Event(KadEvent::QueryFinished { id, .. }) if *id == q)));
    // Only first-hand addresses are in the table...
    let t = core.routing_table();
    assert_eq!(t.get(&real).unwrap().addrs, vec![addr(2)]);
    assert_eq!(t.get(&peer(3)).unwrap().addrs, vec![addr(3)]);
    // ... and in what we tell others.
    let Some(KadResponse::FindNode { closer_peers }) = core.handle_request(
        peer(9),
        KadRequest::FindNode {
            key: real.to_bytes(),
        },
        now,
    ) else {
        panic!()
    };
    for p in &closer_peers {
        assert!(p.addrs.iter().all(|a| !victims.contains(a)), "{p:?}");
    }
    assert!(closer_peers
        .iter()
        .any(|p| p.id == real && p.addrs == vec![addr(2)]));
}

#[test]
fn a_response_without_a_dialed_address_adds_nobody() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    core.add_address(peer(1), addr(1), now);
    core.find_node(b"t".to_vec(), now);
    let s = sends(&drain(&mut core, now));
    core.handle_response(
        s[0].0,
        peer(1),
        None,
        KadResponse::FindNode {
            closer_peers: vec![KadPeer::new(peer(2), vec![addr(2)])],
        },
        now,
    );
    let s = sends(&drain(&mut core, now));
    // Peer 2 answered over a connection it dialed: it is not added from the response.
    core.handle_response(
        s[0].0,
        peer(2),
        None,
        KadResponse::FindNode {
            closer_peers: vec![],
        },
        now,
    );
    drain(&mut core, now);
    assert!(!core.routing_table().contains(&peer(2)));
    assert_eq!(
        core.routing_table().get(&peer(1)).unwrap().addrs,
        vec![addr(1)]
    );
}

#[test]
fn records_no_message_can_carry_are_refused() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    core.add_address(peer(1), addr(1), now);
    drain(&mut core, now);
    // Within the store's 65 KiB, beyond the 16 KiB message bound.
    let big = Record::new("big", vec![0; 20 * 1024]);
    let Err(StoreError::RecordTooLarge { len, max }) = core.put_value(big.clone(), 1, now) else {
        panic!("accepted a record that cannot be sent")
    };
    assert!(len > max && max == DEFAULT_MAX_MESSAGE_SIZE);
    assert!(core.record_store().is_empty());
    assert!(drain(&mut core, now)
        .iter()
        .all(|o| !matches!(o, Output::SendRequest { .. })));
    // A remote's record that could not be served back is refused too.
    let mut edge = Record::new("edge", vec![1; DEFAULT_MAX_MESSAGE_SIZE - 100]);
    let mut over = edge.clone();
    over.value.push(1);
    while over.max_message_len() <= DEFAULT_MAX_MESSAGE_SIZE {
        edge.value.push(1);
        over.value.push(1);
    }
    assert_eq!(
        core.handle_request(peer(1), KadRequest::PutValue { record: over }, now),
        None
    );
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Event(KadEvent::InboundRequest {
            request: InboundRequest::PutValue {
                result: Err(StoreError::RecordTooLarge { .. }),
                ..
            },
            ..
        })
    )));
    // The largest record accepted is served back within the bound, closer peers trimmed.
    for n in 2..=30 {
        let long: Multiaddr = format!("/dns4/{}/udp/{n}/quic-v1", "h".repeat(200))
            .parse()
            .unwrap();
        core.add_address(peer(n), long, now);
    }
    assert!(core
        .handle_request(peer(1), KadRequest::PutValue { record: edge }, now)
        .is_some());
    let resp = core
        .handle_request(peer(2), KadRequest::GetValue { key: "edge".into() }, now)
        .unwrap();
    assert!(KadCodec::default().encode_response(&resp).is_ok());
    assert!(matches!(
        resp,
        KadResponse::GetValue {
            record: Some(_),
            ..
        }
    ));
}

#[test]
fn an_unsendable_request_fails_its_query_not_the_peer() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(
        peer(0),
        KadConfig {
            max_failures: 1,
            ..KadConfig::default()
        },
        0,
    );
    core.add_address(peer(1), addr(1), now);
    drain(&mut core, now);
    let q = core.find_node(vec![0; 32], now);
    let s = sends(&drain(&mut core, now));
    let error = ProtocolError::MessageTooLarge { len: 1, max: 0 };
    core.handle_request_unsendable(s[0].0, error.clone(), now);
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(o,
        Output::Event(KadEvent::QueryFinished { id, result: QueryResult::FindNode(Err(QueryError::Unsendable(e))), .. })
            if *id == q && *e == error)), "{outs:?}");
    assert!(core.routing_table().contains(&peer(1)));
    assert_eq!(core.routing_table().get(&peer(1)).unwrap().failures, 0);
    assert_eq!(core.num_queries(), 0);
}

#[test]
fn provider_responses_fit_in_a_message() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    let long = |tag: &str, i: u64| -> Multiaddr {
        format!("/dns4/{tag}{i}{}/udp/4001/quic-v1", "x".repeat(200))
            .parse()
            .unwrap()
    };
    // Twenty table peers with eight long addresses each.
    for n in 1..=20 {
        for i in 0..8 {
            core.add_address(peer(n), long("t", i), now);
        }
    }
    // Two providers announcing 40 long addresses (about 10 KiB) each.
    let key = RecordKey::from("content");
    for p in [peer(31), peer(32)] {
        let addrs: Vec<Multiaddr> = (0..40).map(|i| long("p", i)).collect();
        assert_eq!(
            core.handle_request(
                p,
                KadRequest::AddProvider {
                    key: key.clone(),
                    provider: KadPeer::new(p, addrs)
                },
                now
            ),
            None
        );
    }
    let stored = core.provider_store().get(&key, now);
    assert!(stored.iter().all(|p| p.addrs.len() == 8));
    let resp = core
        .handle_request(peer(5), KadRequest::GetProviders { key: key.clone() }, now)
        .unwrap();
    let bytes = KadCodec::default()
        .encode_response(&resp)
        .expect("the response fits");
    let KadResponse::GetProviders {
        closer_peers,
        provider_peers,
    } = KadCodec::default()
        .decode_response(&bytes)
        .unwrap()
        .unwrap()
        .0
    else {
        panic!()
    };
    assert_eq!(provider_peers.len(), 2, "both providers are returned");
    assert!(!closer_peers.is_empty());
    // The reported count is what was sent.
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Event(KadEvent::InboundRequest {
            request: InboundRequest::GetProviders { providers: 2, .. },
            ..
        })
    )));
    // FIND_NODE answers are trimmed the same way.
    let resp = core
        .handle_request(peer(5), KadRequest::FindNode { key: vec![1] }, now)
        .unwrap();
    assert!(KadCodec::default().encode_response(&resp).is_ok());
}

#[test]
fn put_without_peers_fails_quorum_but_stores_locally() {
    let now = Instant::now();
    let mut core = KadEngine::with_seed(peer(0), KadConfig::default(), 0);
    let q = core
        .put_value(Record::new("k", b"v".to_vec()), 1, now)
        .unwrap();
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(o,
        Output::Event(KadEvent::QueryFinished { id, result: QueryResult::PutValue(Err(QueryError::QuorumFailed { successes: 0, quorum: 1 })), .. })
            if *id == q)));
    assert!(core.record_store().get(&"k".into(), now).is_some());
    // A local GET with quorum 1 finishes at once from the local store.
    let q = core.get_value("k".into(), 1, now);
    let outs = drain(&mut core, now);
    assert!(outs.iter().any(|o| matches!(o,
        Output::Event(KadEvent::QueryFinished { id, result: QueryResult::GetValue(Ok(_)), stats, .. })
            if *id == q && stats.requests == 0)));
}

#[test]
fn originated_records_are_republished() {
    let now = Instant::now();
    let store = StoreConfig {
        publication_interval: Some(Duration::from_secs(120)),
        ..StoreConfig::default()
    };
    let mut core = KadEngine::with_seed(
        peer(0),
        KadConfig {
            store,
            ..KadConfig::default()
        },
        0,
    );
    core.add_address(peer(1), addr(1), now);
    core.put_value(Record::new("k", b"v".to_vec()), 1, now)
        .unwrap();
    drain(&mut core, now);
    // Jobs are checked every minute; the first check after the interval republishes.
    let mut t = now;
    let mut republished = false;
    for _ in 0..5 {
        t = core.poll_timeout().unwrap();
        for o in drain(&mut core, t) {
            if let Output::SendRequest {
                request_id,
                peer: p,
                request: KadRequest::FindNode { .. },
                ..
            } = o
            {
                if t > now + Duration::from_secs(100) {
                    republished = true;
                }
                core.handle_response(
                    request_id,
                    p,
                    None,
                    KadResponse::FindNode {
                        closer_peers: vec![],
                    },
                    t,
                );
            } else if let Output::SendRequest {
                request_id,
                peer: p,
                request: KadRequest::PutValue { record },
                ..
            } = o
            {
                core.handle_response(request_id, p, None, KadResponse::PutValue { record }, t);
            }
        }
    }
    assert!(republished, "republished by {:?}", t - now);
}
