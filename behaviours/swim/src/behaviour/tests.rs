//! Unit tests of the behaviour's IO decisions (no swarm: commands are read from its outbox).

use super::push_pull::{read_frame_budgeted, read_message, ByteBudget};
use super::*;
use futures::io::Cursor;
use futures::FutureExt;
use meshwire_core::Keypair;
use meshwire_swarm::toolkit::{FrameError, Timeout};
use meshwire_swarm::{ListenerId, OpenStream, PeerCondition};

/// Takes every command queued for the swarm.
fn take_commands(b: &mut Behaviour) -> Vec<ToSwarm<Event>> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    while let Poll::Ready(c) = b.outbox.poll(&mut cx) {
        out.push(c);
    }
    out
}

fn realm() -> Realm {
    "org.example.mesh".parse().unwrap()
}

#[tokio::test]
async fn frames_are_bounded_and_strict() {
    // A whole frame.
    let mut ok = Cursor::new(vec![3u8, 1, 2, 3]);
    assert_eq!(read_message(&mut ok, 16).await.unwrap(), vec![1, 2, 3]);
    // Above the limit: refused before anything is buffered.
    let mut big = Cursor::new(vec![0x80u8, 0x80, 0x01]);
    assert!(matches!(
        read_message(&mut big, 1024).await,
        Err(PushPullError::Frame(FrameError::TooLarge { .. }))
    ));
    // Ends inside the message, or inside the prefix (or before it).
    let mut short = Cursor::new(vec![5u8, 1, 2]);
    assert!(matches!(
        read_message(&mut short, 16).await,
        Err(PushPullError::Frame(FrameError::Truncated))
    ));
    let mut none = Cursor::new(vec![0x80u8]);
    assert!(matches!(
        read_message(&mut none, 16).await,
        Err(PushPullError::Frame(FrameError::Truncated))
    ));
    let mut empty = Cursor::new(Vec::<u8>::new());
    assert!(matches!(
        read_message(&mut empty, 16).await,
        Err(PushPullError::Frame(FrameError::Truncated))
    ));
    // A prefix that never ends.
    let mut endless = Cursor::new(vec![0xffu8; 12]);
    assert!(matches!(
        read_message(&mut endless, usize::MAX).await,
        Err(PushPullError::Frame(FrameError::InvalidPrefix))
    ));
}

#[tokio::test]
async fn join_validates_seeds_and_announces_addresses() {
    let key = Keypair::from_seed_for_tests(1);
    let seed = Keypair::from_seed_for_tests(2).peer_id();
    let other = Keypair::from_seed_for_tests(3).peer_id();
    let mut b = Behaviour::new(&key, [realm()], Config::default().with_rng_seed(1)).unwrap();
    let addr: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
    let wrong = meshwire_transport::with_peer_id(&addr, other);
    assert_eq!(
        b.join(&realm(), &[(seed, wrong.clone())]),
        Err(Error::SeedAddress {
            peer: seed,
            addr: wrong
        })
    );
    let foreign: Realm = "org.example.other".parse().unwrap();
    assert!(matches!(
        b.join(&foreign, &[(seed, addr.clone())]),
        Err(Error::UnknownRealm(_))
    ));
    let with_p2p = meshwire_transport::with_peer_id(&addr, seed);
    b.join(&realm(), &[(seed, with_p2p)]).unwrap();
    // The seed's address goes to the swarm, then the push-pull stream is asked for.
    let mut commands = take_commands(&mut b).into_iter();
    assert!(matches!(
        commands.next(),
        Some(ToSwarm::NewExternalAddrOfPeer { peer, addr: a }) if peer == seed && a == addr
    ));
    assert!(matches!(
        commands.next(),
        Some(ToSwarm::OpenStream(o)) if o.peer == seed && o.protocols == vec![PROTOCOL]
    ));
    // Dials of the seed get its address from the behaviour.
    assert_eq!(
        b.handle_pending_outbound_connection(ConnectionId::next(), Some(seed), &[])
            .unwrap(),
        vec![addr.clone()]
    );
    // Listen addresses are announced, unspecified ones are not.
    let l = ListenerId::next();
    let any: Multiaddr = "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap();
    let mine: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
    b.on_swarm_event(FromSwarm::NewListenAddr {
        listener: l,
        addr: &any,
    });
    assert!(b.local_member(&realm()).unwrap().addresses().is_empty());
    b.on_swarm_event(FromSwarm::NewListenAddr {
        listener: l,
        addr: &mine,
    });
    let me = b.local_member(&realm()).unwrap();
    assert_eq!(me.addresses(), std::slice::from_ref(&mine));
    assert_eq!(me.incarnation, 1);
    b.on_swarm_event(FromSwarm::ListenerClosed {
        listener: l,
        reason: Ok(()),
    });
    assert!(b.local_member(&realm()).unwrap().addresses().is_empty());
    // Too much data is refused.
    assert!(matches!(
        b.set_data(vec![0u8; 600]),
        Err(Error::Meta(MetaError::TooLarge { .. }))
    ));
    b.set_data(&b"role=db"[..]).unwrap();
    assert_eq!(&b.local_member(&realm()).unwrap().data()[..], b"role=db");
    b.leave();
    assert!(b.has_left());
    assert_eq!(b.join(&realm(), &[]), Err(Error::Left));
    assert_eq!(b.set_data(Bytes::new()), Err(Error::Left));
}

#[tokio::test]
async fn datagrams_without_connection_are_queued_boundedly_and_dialed_once() {
    let key = Keypair::from_seed_for_tests(1);
    let config = Config {
        max_queued_datagrams_per_peer: 2,
        max_queued_peers: 1,
        ..Config::default()
    };
    let mut b = Behaviour::new(&key, [realm()], config).unwrap();
    let p1 = Keypair::from_seed_for_tests(2).peer_id();
    let p2 = Keypair::from_seed_for_tests(3).peer_id();
    learn(&mut b, &[p1, p2]);
    for i in 0..3u8 {
        b.send_datagram(p1, Bytes::from(vec![i]));
    }
    b.send_datagram(p2, Bytes::from_static(b"x"));
    let q = b.dials.queued.get(&p1).unwrap();
    assert_eq!(q.iter().map(|(_, d)| d[0]).collect::<Vec<_>>(), vec![1, 2]);
    assert!(!b.dials.queued.contains_key(&p2));
    assert_eq!(b.io.datagrams_dropped, 2);
    // One dial per peer while it is in progress.
    assert_eq!(dials(&mut b), vec![p1, p2]);
    // A failed dial drops the queue.
    let conn = b.dials.dialing[&p1];
    b.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(p1),
        connection: conn,
        error: &DialError::NoAddresses,
    });
    assert!(b.dials.queued.is_empty());
    assert_eq!(b.io.datagrams_dropped, 4);
    assert!(!b.dials.dialing.contains_key(&p1));
}

/// Makes `peers` live members of `realm()` (each one's alive news from itself).
/// Each announces one address of its own, in its signed alive record (the peers are test keys
/// `Keypair::from_seed_for_tests(0..64)`).
fn learn(b: &mut Behaviour, peers: &[PeerId]) {
    let updates = peers
        .iter()
        .map(|p| {
            let (seed, key) = (0..64u64)
                .map(|i| (i, Keypair::from_seed_for_tests(i)))
                .find(|(_, k)| k.peer_id() == *p)
                .expect("a test key");
            let addr: Multiaddr = format!("/ip4/10.0.1.{seed}/udp/4001/quic-v1")
                .parse()
                .unwrap();
            let meta = NodeMeta::new(vec![addr], Vec::new()).unwrap();
            let signature = crate::record::sign_alive(&key, &realm(), 0, &meta);
            crate::wire::Update::alive(crate::record::AliveRecord::new(
                *p,
                0,
                std::sync::Arc::new(meta),
                signature,
            ))
        })
        .collect::<Vec<_>>();
    // Each from the member itself: first-hand news makes a member at once.
    for (p, u) in peers.iter().zip(updates) {
        let msg = crate::Message {
            realm: realm(),
            body: Body::Gossip(crate::wire::Gossip { updates: vec![u] }),
        };
        b.engine.handle_message(now().into_std(), *p, msg);
    }
    b.drain();
}

/// The peers of the dials queued for the swarm (taking every queued command).
fn dials(b: &mut Behaviour) -> Vec<PeerId> {
    take_commands(b)
        .iter()
        .filter_map(|c| match c {
            ToSwarm::Dial(d) => d.peer_id(),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn only_live_members_and_seeds_are_dialed_with_backoff() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let member = Keypair::from_seed_for_tests(2).peer_id();
    let stranger = Keypair::from_seed_for_tests(3).peer_id();
    learn(&mut b, &[member]);
    take_commands(&mut b);
    // Not a member (e.g. a ping-req target named by a remote, gossip to a dead member):
    // dropped, no dial.
    b.send_datagram(stranger, Bytes::from_static(b"x"));
    assert!(dials(&mut b).is_empty());
    assert!(b.dials.queued.is_empty());
    assert_eq!(b.io.datagrams_not_dialed, 1);
    // A live member is dialed; its dial fails: backoff.
    b.send_datagram(member, Bytes::from_static(b"x"));
    assert_eq!(dials(&mut b), vec![member]);
    let conn = b.dials.dialing[&member];
    b.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(member),
        connection: conn,
        error: &DialError::NoAddresses,
    });
    take_commands(&mut b);
    b.send_datagram(member, Bytes::from_static(b"x"));
    assert!(dials(&mut b).is_empty(), "backing off");
    assert_eq!(b.io.datagrams_not_dialed, 2);
    tokio::time::advance(Duration::from_millis(1100)).await;
    b.send_datagram(member, Bytes::from_static(b"x"));
    assert_eq!(dials(&mut b), vec![member]);
    // The second failure doubles the wait.
    let conn = b.dials.dialing[&member];
    b.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(member),
        connection: conn,
        error: &DialError::NoAddresses,
    });
    assert_eq!(b.dials.backoff[&member].1, 2);
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert!(b.backing_off(&member));
    tokio::time::advance(Duration::from_millis(1000)).await;
    assert!(!b.backing_off(&member));
    // Alive news ends the backoff at once.
    b.dials
        .backoff
        .insert(member, (now() + Duration::from_secs(30), 5));
    b.member_live(member);
    assert!(!b.backing_off(&member));
}

#[tokio::test(start_paused = true)]
async fn queues_are_swept_and_dropped_on_any_failed_dial() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let p1 = Keypair::from_seed_for_tests(2).peer_id();
    let p2 = Keypair::from_seed_for_tests(3).peer_id();
    learn(&mut b, &[p1, p2]);
    b.send_datagram(p1, Bytes::from_static(b"x"));
    b.send_datagram(p2, Bytes::from_static(b"y"));
    // Another behaviour's dial of p2 fails: what waited for p2 goes.
    b.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(p2),
        connection: ConnectionId::next(),
        error: &DialError::NoAddresses,
    });
    assert!(!b.dials.queued.contains_key(&p2));
    // Our dial of p1 is refused (someone else dials it) and never connects: the queue is
    // kept for now, and swept once too old, without any flush.
    let conn = b.dials.dialing[&p1];
    b.on_swarm_event(FromSwarm::DialFailure {
        peer: Some(p1),
        connection: conn,
        error: &DialError::ConditionFalse(PeerCondition::DisconnectedAndNotDialing),
    });
    assert!(b.dials.queued.contains_key(&p1));
    tokio::time::advance(Duration::from_secs(3)).await;
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let dropped = b.io.datagrams_dropped;
    while b.poll(&mut cx).is_ready() {}
    // (The protocol period that ran may have queued fresh datagrams.)
    assert!(b
        .dials
        .queued
        .values()
        .flatten()
        .all(|(at, _)| now().duration_since(*at) <= b.config.queued_datagram_ttl));
    assert!(b.io.datagrams_dropped > dropped);
}

#[tokio::test(start_paused = true)]
async fn datagrams_do_not_starve_timers() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default().with_rng_seed(1)).unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(Instant::from_std(b.engine.poll_timeout().unwrap()) <= now());
    // Far more datagrams ready than one poll handles.
    for _ in 0..10_000 {
        b.links
            .readers
            .push(async { (ConnectionId::next(), Ok(Bytes::new())) }.boxed());
    }
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let _ = b.poll(&mut cx);
    assert!(b.links.readers.len() > 5_000, "still busy with datagrams");
    assert!(
        Instant::from_std(b.engine.poll_timeout().unwrap()) > now(),
        "the due protocol period ran"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_waiting_for_a_first_connection_is_not_a_failure() {
    let key = Keypair::from_seed_for_tests(1);
    let mut cfg = Config::default().with_rng_seed(3);
    cfg.swim.gossip_interval = None;
    cfg.swim.push_pull_interval = None;
    let mut b = Behaviour::new(&key, [realm()], cfg).unwrap();
    let new = Keypair::from_seed_for_tests(2).peer_id();
    learn(&mut b, &[new]);
    let start = now();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let run = |b: &mut Behaviour, cx: &mut Context<'_>| while b.poll(cx).is_ready() {};
    // A protocol period without a connection coming up (the dial is pending): the first
    // probe of the new member is skipped, not failed.
    while b.stats(&realm()).unwrap().probes_unsent == 0 {
        tokio::time::advance(Duration::from_millis(100)).await;
        run(&mut b, &mut cx);
        assert!(now() < start + Duration::from_secs(5), "never probed");
    }
    let s = b.stats(&realm()).unwrap();
    assert_eq!((s.probes_unsent, s.probes_failed), (1, 0));
    assert_eq!(
        b.member(&realm(), &new).unwrap().state,
        crate::MemberState::Alive
    );
    // Only once: the next probe, still without a connection, fails as usual (so does
    // one of a member we were connected with and lost: it may have crashed).
    assert!(b.no_probe_grace.contains(&new));
    for _ in 0..25 {
        tokio::time::advance(Duration::from_millis(100)).await;
        run(&mut b, &mut cx);
    }
    let s = b.stats(&realm()).unwrap();
    assert!(s.probes_failed >= 1, "{s:?}");
    assert_eq!(
        b.member(&realm(), &new).unwrap().state,
        crate::MemberState::Suspect
    );
}

#[tokio::test]
async fn live_members_are_tagged_and_untagged() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let p = Keypair::from_seed_for_tests(2).peer_id();
    learn(&mut b, &[p]);
    assert!(take_commands(&mut b).iter().any(|c| matches!(c,
        ToSwarm::ConnManager(ConnManagerCommand::TagPeer { peer, tag, value })
            if *peer == p && tag == CONN_MANAGER_TAG && *value == 100)));
    take_commands(&mut b);
    let msg = crate::Message {
        realm: realm(),
        body: Body::Gossip(crate::wire::Gossip {
            updates: vec![crate::wire::Update {
                peer: p,
                incarnation: 0,
                kind: crate::wire::UpdateKind::Left,
            }],
        }),
    };
    b.engine.handle_message(now().into_std(), p, msg);
    b.drain();
    assert!(take_commands(&mut b).iter().any(|c| matches!(c,
        ToSwarm::ConnManager(ConnManagerCommand::UntagPeer { peer, .. }) if *peer == p)));
}

#[tokio::test]
async fn a_stale_push_pull_failure_does_not_end_a_newer_exchange() {
    let key = Keypair::from_seed_for_tests(1);
    let seed = Keypair::from_seed_for_tests(2).peer_id();
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let addr: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
    b.join(&realm(), &[(seed, addr.clone())]).unwrap();
    let old = b.push_pulls_in_flight[&(realm(), seed)];
    // The core gives up on it (its timer) and a newer exchange starts.
    b.join(&realm(), &[(seed, addr)]).unwrap();
    let new = b.push_pulls_in_flight[&(realm(), seed)];
    assert_ne!(old, new);
    b.on_answer(
        AnswerKey {
            peer: seed,
            realm: realm(),
            id: old,
        },
        Err(PushPullError::Timeout(Timeout(Duration::from_secs(1)))),
    );
    assert_eq!(b.push_pulls_in_flight.get(&(realm(), seed)), Some(&new));
    assert!(!take_commands(&mut b)
        .iter()
        .any(|c| matches!(c, ToSwarm::GenerateEvent(Event::JoinFailed { .. }))));
}

#[tokio::test]
async fn inbound_push_pull_bytes_are_budgeted() {
    let budget = ByteBudget::default();
    let mut a = Cursor::new(vec![3u8, 1, 2, 3]);
    let (bytes, held) = read_frame_budgeted(&mut a, 16, &budget, 5).await.unwrap();
    assert_eq!(bytes, vec![1, 2, 3]);
    assert_eq!(budget.used(), 3);
    let mut b = Cursor::new(vec![3u8, 1, 2, 3]);
    assert!(matches!(
        read_frame_budgeted(&mut b, 16, &budget, 5).await,
        Err(PushPullError::OverBudget)
    ));
    drop(held);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn loopback_is_announced_only_without_other_addresses() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let lo: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
    let lan: Multiaddr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
    let l = ListenerId::next();
    b.on_swarm_event(FromSwarm::NewListenAddr {
        listener: l,
        addr: &lo,
    });
    assert_eq!(
        b.local_member(&realm()).unwrap().addresses(),
        std::slice::from_ref(&lo)
    );
    b.on_swarm_event(FromSwarm::NewListenAddr {
        listener: l,
        addr: &lan,
    });
    assert_eq!(
        b.local_member(&realm()).unwrap().addresses(),
        std::slice::from_ref(&lan)
    );
}

/// A connection between `local` and `remote` on the in-memory transport, with or without
/// datagrams: (our end, the remote's end).
async fn mem_connection(
    local: PeerId,
    remote: PeerId,
    datagrams: bool,
) -> (
    meshwire_transport::Connection,
    meshwire_transport::Connection,
) {
    use meshwire_transport::memory::MemoryTransport;
    use meshwire_transport::{Transport, TransportEvent, TransportExt};
    let mut theirs = MemoryTransport::new(remote);
    let mut ours = MemoryTransport::new(local);
    if !datagrams {
        theirs = theirs.without_datagrams();
    }
    theirs.listen_on("/memory/0".parse().unwrap()).unwrap();
    let TransportEvent::NewListenAddr { addr, .. } = theirs.next_event().await else {
        panic!("no listen address")
    };
    let dial = ours.dial(&addr, Some(remote)).unwrap();
    let TransportEvent::Incoming { upgrade, .. } = theirs.next_event().await else {
        panic!("no incoming connection")
    };
    let (o, t) = tokio::join!(dial, upgrade);
    (o.unwrap(), t.unwrap())
}

/// Tells `b` of an established connection `id` with `peer`; `preferred` picks the endpoint
/// that makes it the connection both sides prefer (dialed by the smaller peer id).
fn establish(
    b: &mut Behaviour,
    peer: PeerId,
    id: ConnectionId,
    handle: &meshwire_transport::Connection,
    preferred: bool,
) {
    let addr: Multiaddr = "/memory/1".parse().unwrap();
    let endpoint = if (b.local < peer) == preferred {
        meshwire_swarm::ConnectedPoint::Dialer { address: addr }
    } else {
        meshwire_swarm::ConnectedPoint::Listener {
            local_addr: addr.clone(),
            send_back_addr: addr,
        }
    };
    let other_established = b.links.count(&peer);
    b.on_swarm_event(FromSwarm::ConnectionEstablished {
        peer,
        connection: id,
        endpoint: &endpoint,
        other_established,
        handle,
    });
}

/// The stream requests queued for the swarm (taking every queued command).
fn stream_requests(b: &mut Behaviour) -> Vec<OpenStream> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    while let Poll::Ready(c) = b.poll_commands(&mut cx) {
        if let ToSwarm::OpenStream(o) = c {
            out.push(o);
        }
    }
    out
}

#[tokio::test]
async fn a_peer_with_a_datagram_connection_gets_datagrams_not_the_fallback() {
    let key = Keypair::from_seed_for_tests(1);
    let mut b = Behaviour::new(&key, [realm()], Config::default()).unwrap();
    let p = Keypair::from_seed_for_tests(2).peer_id();
    learn(&mut b, &[p]);
    stream_requests(&mut b);
    let (direct, direct_remote) = mem_connection(b.local, p, true).await;
    let (relayed, _relayed_remote) = mem_connection(b.local, p, false).await;
    assert_eq!(relayed.max_datagram_size(), None);
    // The relayed connection is the newer one and the one the pair would otherwise prefer.
    let (direct_id, relayed_id) = (ConnectionId::next(), ConnectionId::next());
    establish(&mut b, p, direct_id, &direct, false);
    establish(&mut b, p, relayed_id, &relayed, true);
    b.send_datagram(p, Bytes::from_static(b"probe"));
    let got = tokio::time::timeout(Duration::from_secs(5), direct_remote.read_datagram())
        .await
        .expect("the datagram arrives on the connection with datagrams");
    assert_eq!(got.unwrap(), Bytes::from_static(b"probe"));
    assert_eq!(b.io.datagrams_sent, 1);
    assert_eq!((b.io.stream_fallbacks, b.io.stream_messages_sent), (0, 0));
    assert!(stream_requests(&mut b).is_empty());
    // The connection with datagrams is the one kept for the live member; the relayed one is
    // left to the idle rule.
    assert!(b.connection_keep_alive(p, direct_id));
    assert!(!b.connection_keep_alive(p, relayed_id));

    // Without it, the messages go on a fallback stream over the relayed connection, which
    // is now the one kept.
    direct.close(0, "gone");
    let endpoint = meshwire_swarm::ConnectedPoint::Dialer {
        address: "/memory/1".parse().unwrap(),
    };
    b.on_swarm_event(FromSwarm::ConnectionClosed {
        peer: p,
        connection: direct_id,
        endpoint: &endpoint,
        remaining_established: 1,
        cause: &meshwire_swarm::ConnectionCloseCause::Requested,
    });
    b.send_datagram(p, Bytes::from_static(b"probe"));
    let requests = stream_requests(&mut b);
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.peer, p);
    assert_eq!(r.protocols, vec![STREAM_PROTOCOL]);
    assert_eq!(r.connection, Some(relayed_id));
    assert!(!r.dial, "a fallback stream never dials");
    assert_eq!((b.io.stream_fallbacks, b.io.stream_messages_sent), (1, 1));
    assert_eq!(b.io.datagrams_sent, 1);
    assert!(b.connection_keep_alive(p, relayed_id));
    assert!(b.protocols().contains(&STREAM_PROTOCOL));
}

#[tokio::test]
async fn fallback_streams_are_bounded_and_a_failed_one_is_replaced() {
    let key = Keypair::from_seed_for_tests(1);
    let config = Config {
        max_fallback_streams: 1,
        max_queued_fallback_messages_per_peer: 2,
        ..Config::default()
    };
    let mut b = Behaviour::new(&key, [realm()], config).unwrap();
    let p1 = Keypair::from_seed_for_tests(2).peer_id();
    let p2 = Keypair::from_seed_for_tests(3).peer_id();
    learn(&mut b, &[p1, p2]);
    stream_requests(&mut b);
    let mut keep = Vec::new();
    for p in [p1, p2] {
        let (ours, theirs) = mem_connection(b.local, p, false).await;
        establish(&mut b, p, ConnectionId::next(), &ours, true);
        keep.push((ours, theirs));
    }
    // The queue holds 2 messages while the stream is being opened; the third is dropped.
    for i in 0..3u8 {
        b.send_datagram(p1, Bytes::from(vec![i]));
    }
    assert_eq!(b.io.stream_messages_sent, 2);
    assert_eq!(b.io.stream_messages_dropped, 1);
    // Larger than the MTU: dropped as a datagram too large for its connection would be.
    b.send_datagram(p1, Bytes::from(vec![0u8; b.config.swim.mtu + 1]));
    assert_eq!(b.io.datagrams_too_large, 1);
    // One stream at most: nothing for p2.
    b.send_datagram(p2, Bytes::from_static(b"x"));
    assert_eq!(b.io.stream_messages_dropped, 2);
    let requests = stream_requests(&mut b);
    assert_eq!(
        requests.iter().map(|r| r.peer).collect::<Vec<_>>(),
        vec![p1]
    );
    assert_eq!(b.io.stream_fallbacks, 1);
    // The stream is not opened: its queued messages are dropped, and the slot is free again.
    b.on_outbound_stream(OutboundStreamResult {
        id: requests[0].id,
        peer: p1,
        result: Err(meshwire_swarm::StreamError::NotConnected),
        route: Default::default(),
    });
    assert_eq!(b.io.stream_fallbacks_failed, 1);
    assert_eq!(b.io.stream_messages_dropped, 4);
    b.send_datagram(p2, Bytes::from_static(b"x"));
    let requests = stream_requests(&mut b);
    assert_eq!(
        requests.iter().map(|r| r.peer).collect::<Vec<_>>(),
        vec![p2]
    );
    assert_eq!(b.io.stream_messages_sent, 3);
}
