//! Choking (module `choke`): a choked peer sends IHAVE instead of the message, the receiver
//! asks for what no unchoked peer brought, an unchoke restores the data, hostile chokes are
//! ignored.

use super::*;
use crate::wire::ControlChoke;

/// Choking on, without the eager first hop (in the diamond below every message reaches
/// nodes 1 and 2 straight from its author, so `eager_from_author` would forward everything
/// in full; `choked_peer_forwards_in_full_what_it_took_from_the_author` tests it).
fn choking() -> GossipsubConfig {
    GossipsubConfig {
        choke: ChokeConfig {
            enabled: true,
            eager_from_author: false,
            ..ChokeConfig::default()
        },
        ..fast()
    }
}

/// Node 0 with mesh {1, 2}, each of which is connected to the publisher 3 (not to 0):
/// node 0 keeps one unchoked peer, judges after 2 samples; `adjust` changes node `i`'s
/// configuration further.
fn diamond_with(adjust: impl Fn(usize, &mut GossipsubConfig)) -> Net {
    let mut net = Net::new(4, |i| {
        let mut c = choking();
        if i == 0 {
            c.choke.min_unchoked = 1;
            c.choke.max_unchoked = 1;
            c.choke.min_samples = 2.0;
        }
        adjust(i, &mut c);
        c
    });
    net.connect(0, 1);
    net.connect(0, 2);
    net.connect(1, 3);
    net.connect(2, 3);
    net.subscribe_all();
    net.advance(Duration::from_millis(200));
    net
}

/// [`diamond_with`] as is: both mesh peers of node 0 announced choking.
fn diamond() -> Net {
    let net = diamond_with(|_, _| {});
    let (p1, p2) = (net.ids[1], net.ids[2]);
    assert_eq!(net.mesh(0), HashSet::from([p1, p2]));
    assert!(net.nodes[0].peer_supports_choke(&p1));
    assert!(net.nodes[0].peer_supports_choke(&p2));
    net
}

/// Node 3 publishes; node 2's copy reaches node 0 `late` after node 1's.
fn publish_with_late_2(net: &mut Net, late: Duration) -> MessageId {
    net.held.insert(2);
    let id = net.nodes[3]
        .publish(net.now, topic(), b"m".to_vec())
        .unwrap();
    net.deliver();
    net.now += late;
    net.held.clear();
    net.deliver();
    id
}

fn data_sent(net: &Net, from: usize, to: usize, since: usize) -> usize {
    net.log[since..]
        .iter()
        .filter(|(f, t, r)| *f == from && *t == to && !r.publish.is_empty())
        .count()
}

fn ihaves_sent(net: &Net, from: usize, to: usize, since: usize) -> usize {
    net.log[since..]
        .iter()
        .filter(|(f, t, _)| *f == from && *t == to)
        .map(|(_, _, r)| control(r).ihave.len())
        .sum()
}

#[test]
fn choked_peer_sends_ihave_then_unchoke_restores_data() {
    let mut net = diamond();
    let (p1, p2) = (net.ids[1], net.ids[2]);
    // Node 2 is always 50 ms behind node 1: late beyond the 5 ms margin.
    for _ in 0..4 {
        publish_with_late_2(&mut net, Duration::from_millis(50));
    }
    assert!(
        net.nodes[0].choked_peers(&topic()).is_empty(),
        "no heartbeat yet"
    );
    net.advance(Duration::from_secs(1));
    assert_eq!(net.nodes[0].choked_peers(&topic()), vec![p2]);
    assert!(net.nodes[2].is_choked_by(&net.ids[0], &topic()));
    assert!(!net.nodes[1].is_choked_by(&net.ids[0], &topic()));
    assert_eq!(net.nodes[0].choke_stats().chokes_sent, 1);

    // Choked: node 2 forwards the id, not the message; node 1 still sends data.
    let mark = net.log.len();
    let id = net.nodes[3]
        .publish(net.now, topic(), b"c".to_vec())
        .unwrap();
    net.deliver();
    assert_eq!(data_sent(&net, 2, 0, mark), 0, "a choked peer sent data");
    assert_eq!(ihaves_sent(&net, 2, 0, mark), 1);
    assert_eq!(data_sent(&net, 1, 0, mark), 1);
    assert_eq!(net.nodes[2].choke_stats().ihave_instead, 1);
    let got: Vec<_> = net
        .messages(0)
        .into_iter()
        .filter(|m| m.data == b"c")
        .collect();
    assert_eq!(got.len(), 1);
    let _ = id;

    // The unchoked link loses the data: node 0 asks node 2 once the timeout passed.
    net.drop_data.insert((1, 0));
    net.nodes[3]
        .publish(net.now, topic(), b"f".to_vec())
        .unwrap();
    net.deliver();
    assert!(
        net.messages(0).iter().all(|m| m.data != b"f"),
        "not before the timeout"
    );
    assert_eq!(net.nodes[0].choke_stats().fallback_iwants, 0);
    net.advance(Duration::from_millis(200));
    assert_eq!(net.nodes[0].choke_stats().fallback_iwants, 1);
    let got: Vec<_> = net
        .messages(0)
        .into_iter()
        .filter(|m| m.data == b"f")
        .collect();
    assert_eq!(got.len(), 1, "the fallback IWANT brought it once");
    net.drop_data.clear();

    // Node 1 leaves: node 0 is below min_unchoked and unchokes node 2 at its heartbeat.
    net.nodes[0].handle_peer_disconnected(net.now, &p1);
    net.nodes[1].handle_peer_disconnected(net.now, &net.ids[0].clone());
    net.advance(Duration::from_secs(1));
    assert!(net.nodes[0].choked_peers(&topic()).is_empty());
    assert!(!net.nodes[2].is_choked_by(&net.ids[0], &topic()));
    assert_eq!(net.nodes[0].choke_stats().unchokes_sent, 1);
    let mark = net.log.len();
    net.nodes[3]
        .publish(net.now, topic(), b"u".to_vec())
        .unwrap();
    net.deliver();
    assert_eq!(data_sent(&net, 2, 0, mark), 1, "unchoked: data again");
    assert_eq!(ihaves_sent(&net, 2, 0, mark), 0);
}

#[test]
fn choked_peer_forwards_in_full_what_it_took_from_the_author() {
    // The diamond with a node 4 behind the publisher 3 (4 — 3 — {1, 2} — 0), every node
    // with `eager_from_author` on.
    let mut net = Net::new(5, |i| {
        let mut c = choking();
        c.choke.eager_from_author = true;
        if i == 0 {
            c.choke.min_unchoked = 1;
            c.choke.max_unchoked = 1;
            c.choke.min_samples = 2.0;
        }
        c
    });
    for (a, b) in [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)] {
        net.connect(a, b);
    }
    net.subscribe_all();
    net.advance(Duration::from_millis(200));
    let p2 = net.ids[2];
    for _ in 0..4 {
        publish_with_late_2(&mut net, Duration::from_millis(50));
    }
    net.advance(Duration::from_secs(1));
    assert_eq!(net.nodes[0].choked_peers(&topic()), vec![p2]);
    assert!(net.nodes[2].is_choked_by(&net.ids[0], &topic()));
    let chokes = net.nodes[0].choke_stats().chokes_sent;

    // Node 3 publishes: node 2 took it from its author and forwards it in full to node 0,
    // which chokes it (the first hop fans out as without choking).
    let mark = net.log.len();
    net.nodes[3]
        .publish(net.now, topic(), b"first hop".to_vec())
        .unwrap();
    net.deliver();
    assert_eq!(
        data_sent(&net, 2, 0, mark),
        1,
        "eager copy from the first hop"
    );
    assert_eq!(ihaves_sent(&net, 2, 0, mark), 0);
    assert_eq!(net.nodes[2].choke_stats().eager_to_choking, 1);

    // Node 4 publishes: node 2 took it from node 3, not from its author: an IHAVE only.
    let mark = net.log.len();
    net.nodes[4]
        .publish(net.now, topic(), b"second hop".to_vec())
        .unwrap();
    net.deliver();
    assert_eq!(data_sent(&net, 2, 0, mark), 0, "lazy beyond the first hop");
    assert_eq!(ihaves_sent(&net, 2, 0, mark), 1);
    assert_eq!(net.nodes[2].choke_stats().eager_to_choking, 1);
    assert_eq!(net.nodes[2].choke_stats().ihave_instead, 1);
    // Node 0 has each message once, and does not take the eager copy for a lost CHOKE: as
    // many ids announced as full copies, two heartbeats on, no CHOKE re-sent.
    let got = net.messages(0);
    for data in [&b"first hop"[..], &b"second hop"[..]] {
        let n = got.iter().filter(|m| m.data == data).count();
        assert_eq!(n, 1);
    }
    net.advance(Duration::from_secs(2));
    assert_eq!(net.nodes[0].choke_stats().chokes_sent, chokes);

    // Node 2 forgets the CHOKE (as if lost: an UNCHOKE injected) and sends only full
    // messages: node 0 sends its CHOKE again at a heartbeat.
    net.inject(
        0,
        2,
        Rpc {
            control: Some(ControlMessage {
                unchoke: vec![ControlChoke {
                    topic_id: Some(TOPIC.to_string()),
                }],
                ..ControlMessage::default()
            }),
            ..Rpc::default()
        },
    );
    assert!(!net.nodes[2].is_choked_by(&net.ids[0], &topic()));
    for _ in 0..3 {
        net.nodes[4]
            .publish(net.now, topic(), b"lost choke".to_vec())
            .unwrap();
        net.deliver();
        net.advance(Duration::from_millis(300));
    }
    assert!(
        net.nodes[0].choke_stats().chokes_sent > chokes,
        "CHOKE re-sent"
    );
    assert!(net.nodes[2].is_choked_by(&net.ids[0], &topic()));
}

#[test]
fn peers_without_choking_are_never_choked() {
    // The same diamond, node 2 with choking off: it never announces support, so node 0
    // counts it as unchoked and cannot choke it, however late it is.
    let mut net = diamond_with(|i, c| {
        if i == 2 {
            c.choke.enabled = false;
        }
    });
    assert!(!net.nodes[0].peer_supports_choke(&net.ids[2]));
    for _ in 0..4 {
        publish_with_late_2(&mut net, Duration::from_millis(50));
    }
    net.advance(Duration::from_secs(1));
    // Node 2 cannot be choked; node 1 (early) is not mostly late: nobody is.
    assert!(net.nodes[0].choked_peers(&topic()).is_empty());
    assert_eq!(net.nodes[0].choke_stats().chokes_sent, 0);
}

#[test]
fn hostile_chokes_are_ignored() {
    let mut net = diamond();
    let choke = |t: &str| Rpc {
        control: Some(ControlMessage {
            choke: vec![ControlChoke {
                topic_id: Some(t.to_string()),
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    // A topic we are not in; no topic at all; a peer outside the mesh (3 is not connected to
    // 0: it is added as a new inbound peer by its RPC, outside every mesh).
    net.inject(1, 0, choke("elsewhere"));
    net.inject(
        1,
        0,
        Rpc {
            control: Some(ControlMessage {
                choke: vec![ControlChoke { topic_id: None }],
                ..ControlMessage::default()
            }),
            ..Rpc::default()
        },
    );
    net.inject(3, 0, choke(TOPIC));
    let stats = net.nodes[0].choke_stats();
    assert_eq!((stats.ignored, stats.received), (3, 0));
    assert!(!net.nodes[0].is_choked_by(&net.ids[1], &TopicHash::from("elsewhere")));
    assert!(!net.nodes[0].is_choked_by(&net.ids[3], &topic()));
    // Too many entries in one RPC: counted against the peer, the first limit taken.
    let limit = net.nodes[0].config().max_messages_per_rpc;
    let many = Rpc {
        control: Some(ControlMessage {
            unchoke: vec![
                ControlChoke {
                    topic_id: Some(TOPIC.to_string()),
                };
                limit + 1
            ],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    net.inject(1, 0, many);
    assert_eq!(net.nodes[0].invalid_messages(&net.ids[1]), 1);
    assert_eq!(net.nodes[0].choke_stats().received, limit as u64);
    // A real CHOKE from a mesh peer is taken, and a PRUNE forgets it.
    net.inject(1, 0, choke(TOPIC));
    assert!(net.nodes[0].is_choked_by(&net.ids[1], &topic()));
    net.inject(
        1,
        0,
        Rpc {
            control: Some(ControlMessage {
                prune: vec![ControlPrune {
                    topic_id: Some(TOPIC.to_string()),
                    peers: Vec::new(),
                    backoff: Some(1),
                }],
                ..ControlMessage::default()
            }),
            ..Rpc::default()
        },
    );
    assert!(!net.nodes[0].is_choked_by(&net.ids[1], &topic()));
}

#[test]
fn choke_config_bounds_are_checked() {
    for bad in [
        ChokeConfig {
            min_unchoked: 0,
            ..ChokeConfig::default()
        },
        ChokeConfig {
            min_unchoked: 5,
            max_unchoked: 4,
            ..ChokeConfig::default()
        },
        ChokeConfig {
            decay: 0.0,
            ..ChokeConfig::default()
        },
        ChokeConfig {
            max_pending: 0,
            ..ChokeConfig::default()
        },
        ChokeConfig {
            iwant_timeout_min: Duration::from_millis(200),
            ..ChokeConfig::default()
        },
    ] {
        let config = GossipsubConfig {
            choke: bad,
            ..GossipsubConfig::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::Choke));
    }
    assert!(GossipsubConfig::default().validate().is_ok());
}

#[test]
fn fallback_wait_follows_the_gaps_within_its_bounds() {
    use super::choke::ChokeState;
    let config = ChokeConfig::default();
    let mut state = ChokeState::default();
    // No gap seen yet: the longest wait.
    assert_eq!(state.wait(&config), Duration::from_millis(100));
    // One 5 ms gap: three times it.
    state.note_gap(Duration::from_millis(5));
    assert_eq!(state.wait(&config), Duration::from_millis(15));
    // Tiny gaps: never below the floor.
    for _ in 0..100 {
        state.note_gap(Duration::from_micros(100));
    }
    assert_eq!(state.wait(&config), config.iwant_timeout_min);
    // Long gaps (or fallbacks at the longest wait): never above the ceiling.
    for _ in 0..100 {
        state.note_gap(Duration::from_secs(1));
    }
    assert_eq!(state.wait(&config), config.iwant_timeout);
}

#[test]
fn choke_counters_are_exported_as_metrics() {
    use crate::metrics::GossipsubMetrics;
    use prometheus_client::registry::Registry;
    let mut net = diamond();
    let mut registries: Vec<Registry> = (0..4).map(|_| Registry::default()).collect();
    let metrics: Vec<GossipsubMetrics> = registries
        .iter_mut()
        .map(|r| GossipsubMetrics::register(r, 8))
        .collect();
    for (n, m) in net.nodes.iter_mut().zip(&metrics) {
        n.set_metrics(m.clone());
    }
    let text = |registry: &Registry| {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    };
    let value = |t: &str, name: &str| -> u64 {
        let line = t
            .lines()
            .find(|l| l.starts_with(&format!("pubsub_choke_{name}_total ")))
            .unwrap_or_else(|| panic!("pubsub_choke_{name}_total missing:\n{t}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Nothing yet: every counter is served at 0.
    let t = text(&registries[0]);
    for name in [
        "chokes_sent",
        "unchokes_sent",
        "chokes_received",
        "unchokes_received",
        "ignored",
        "ihave_instead",
        "fallback_iwants",
        "eager",
    ] {
        assert_eq!(value(&t, name), 0, "{name}");
    }
    // Node 2 always late: node 0 chokes it at the heartbeat.
    for _ in 0..4 {
        publish_with_late_2(&mut net, Duration::from_millis(50));
    }
    net.advance(Duration::from_secs(1));
    assert_eq!(value(&text(&registries[0]), "chokes_sent"), 1);
    assert_eq!(value(&text(&registries[2]), "chokes_received"), 1);
    // The unchoked link loses a message: node 2 announces it, node 0 falls back to IWANT.
    net.drop_data.insert((1, 0));
    net.nodes[3]
        .publish(net.now, topic(), b"f".to_vec())
        .unwrap();
    net.deliver();
    net.advance(Duration::from_millis(200));
    net.drop_data.clear();
    assert_eq!(value(&text(&registries[0]), "fallback_iwants"), 1);
    assert_eq!(value(&text(&registries[2]), "ihave_instead"), 1);
    // A CHOKE for a topic node 0 is not in: ignored.
    net.inject(
        1,
        0,
        Rpc {
            control: Some(ControlMessage {
                choke: vec![ControlChoke {
                    topic_id: Some("elsewhere".to_string()),
                }],
                ..ControlMessage::default()
            }),
            ..Rpc::default()
        },
    );
    assert_eq!(value(&text(&registries[0]), "ignored"), 1);
    // Node 1 leaves: node 0 unchokes node 2.
    let p1 = net.ids[1];
    net.nodes[0].handle_peer_disconnected(net.now, &p1);
    net.nodes[1].handle_peer_disconnected(net.now, &net.ids[0].clone());
    net.advance(Duration::from_secs(1));
    assert_eq!(value(&text(&registries[0]), "unchokes_sent"), 1);
    assert_eq!(value(&text(&registries[2]), "unchokes_received"), 1);
    // The metrics agree with the engine's own counters.
    let stats = net.nodes[0].choke_stats();
    let t = text(&registries[0]);
    assert_eq!(value(&t, "chokes_sent"), stats.chokes_sent);
    assert_eq!(value(&t, "fallback_iwants"), stats.fallback_iwants);
    assert_eq!(value(&t, "ignored"), stats.ignored);
}
