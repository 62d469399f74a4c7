//! Prometheus metrics counted by the engine, with a bounded topic label set.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::*;
use crate::metrics::GossipsubMetrics;

fn text(registry: &Registry) -> String {
    let mut s = String::new();
    encode(&mut s, registry).unwrap();
    s
}

#[test]
fn published_delivered_duplicate_invalid_and_mesh_sizes_are_counted() {
    let mut net = Net::new(3, |_| GossipsubConfig {
        score_params: Some(PeerScoreParams::default()),
        ..fast()
    });
    let mut registries: Vec<Registry> = (0..3).map(|_| Registry::default()).collect();
    let metrics: Vec<GossipsubMetrics> = registries
        .iter_mut()
        .map(|r| GossipsubMetrics::register(r, 8))
        .collect();
    for (n, m) in net.nodes.iter_mut().zip(&metrics) {
        n.set_metrics(m.clone());
    }
    net.connect_all();
    net.subscribe_all();
    net.advance(Duration::from_secs(2));
    for i in 0..3 {
        net.nodes[0].publish(net.now, topic(), vec![i]).unwrap();
        net.deliver();
    }
    net.advance(Duration::from_secs(2));
    assert_eq!(metrics[0].published_count(&topic()), 3);
    for m in &metrics[1..] {
        assert_eq!(m.delivered_count(&topic()), 3);
        // Flood publishing reaches both, and each forwards to the other: one copy too many.
        assert_eq!(m.duplicate_count(&topic()), 3);
    }
    // A forged message on the topic counts as invalid at its receiver.
    let mut forged = sign::sign(&Keypair::from_seed_for_tests(77), 1, TOPIC.into(), vec![1]);
    forged.data = Some(vec![2]);
    net.inject(
        0,
        1,
        Rpc {
            publish: vec![forged],
            ..Rpc::default()
        },
    );
    assert_eq!(metrics[1].invalid_count(&topic()), 1);
    let t = text(&registries[1]);
    assert!(
        t.contains("pubsub_messages_delivered_total{topic=\"t\"} 3"),
        "{t}"
    );
    assert!(
        t.contains("pubsub_messages_invalid_total{topic=\"t\"} 1"),
        "{t}"
    );
    assert!(t.contains("pubsub_mesh_peers{topic=\"t\"} 2"), "{t}");
    // Two peers scored at each heartbeat: at least three in these 4 s (1 s interval).
    let count = t
        .lines()
        .find_map(|l| l.strip_prefix("pubsub_peer_scores_count "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(count >= 2 * 3, "{count} scores observed\n{t}");
}

#[test]
fn topic_labels_are_bounded() {
    let mut net = Net::new(2, |_| fast());
    let mut registry = Registry::default();
    let metrics = GossipsubMetrics::register(&mut registry, 2);
    net.nodes[0].set_metrics(metrics.clone());
    net.connect(0, 1);
    for t in ["a", "b", "c", "d"] {
        net.nodes[1].subscribe(net.now, TopicHash::from(t));
    }
    net.deliver();
    for t in ["a", "b", "c", "d"] {
        net.nodes[0]
            .publish(net.now, TopicHash::from(t), vec![1])
            .unwrap();
    }
    assert_eq!(metrics.topic_label(&TopicHash::from("a")), "a");
    assert_eq!(metrics.topic_label(&TopicHash::from("d")), "other");
    assert_eq!(metrics.published_count(&TopicHash::from("c")), 2);
    let t = text(&registry);
    assert!(
        t.contains("pubsub_messages_published_total{topic=\"b\"} 1"),
        "{t}"
    );
    assert!(
        t.contains("pubsub_messages_published_total{topic=\"other\"} 2"),
        "{t}"
    );
    assert!(!t.contains("topic=\"c\""), "{t}");
}
