//! Simulation tests: many engines on a virtual clock with latency, loss and churn.
//!
//! The large test is `thousand_nodes_lookups_hops_and_churn`; run it with its figures printed:
//!
//! ```text
//! cargo test -p meshwire-kad --test sim -- --nocapture
//! KAD_SIM_SEED=7 cargo test --release -p meshwire-kad --test sim -- --nocapture thousand
//! ```
//!
//! Nodes join one after another through three seed nodes, each running a bootstrap (self
//! lookup and a lookup of a random key in every bucket beyond its closest non-empty one) as it
//! joins. Messages take 10–100 ms and 5% of them are lost.

use std::time::{Duration, Instant};

use meshwire_kad::kbucket::Key;
use meshwire_kad::protocol::Record;
use meshwire_kad::sim::{NodeId, Sim, SimConfig};
use meshwire_kad::{KadConfig, Mode, QueryResult};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Builds a network of `n` server nodes that join one after another through three seed
/// nodes, each bootstrapping (self lookup + bucket refreshes) as it joins.
fn build(config: SimConfig, n: usize, join_gap: Duration) -> (Sim, Vec<NodeId>) {
    let mut sim = Sim::new(config);
    let seeds: Vec<NodeId> = (0..3).map(|_| sim.add_node(Mode::Server)).collect();
    for &a in &seeds {
        for &b in &seeds {
            if a != b {
                sim.connect(a, b);
            }
        }
    }
    let mut nodes = seeds.clone();
    for &s in &seeds {
        sim.bootstrap(s).expect("seeds know each other");
    }
    for _ in 3..n {
        let node = sim.add_node(Mode::Server);
        for &s in &seeds {
            sim.connect(node, s);
        }
        sim.bootstrap(node).expect("knows the seeds");
        nodes.push(node);
        sim.run_for(join_gap);
    }
    (sim, nodes)
}

/// The live node closest to `target`, other than `except`.
fn true_closest(sim: &Sim, target: &Key, except: NodeId) -> NodeId {
    sim.live_nodes()
        .into_iter()
        .filter(|&n| n != except)
        .min_by_key(|&n| sim.key(n).map(|k| k.distance(target)))
        .expect("live nodes")
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[test]
fn thousand_nodes_lookups_hops_and_churn() {
    let wall = Instant::now();
    // With 5% loss each way one RPC in ten fails, and a peer whose RPC failed is not part of a
    // lookup's result (as in libp2p). Without retries ~10% of lookups would miss the closest
    // node because its own RPC failed; 4 retries make that a ~1e-5 event per lookup. A peer
    // may then take 5 request timeouts (50 s), so the query timeout is raised to match.
    let kad = KadConfig {
        lookup_retries: 4,
        query_timeout: Duration::from_secs(120),
        ..KadConfig::default()
    };
    let seed = std::env::var("KAD_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let config = SimConfig {
        seed,
        loss: 0.05,
        kad,
        ..SimConfig::default()
    };
    let (mut sim, _) = build(config, 1000, Duration::from_millis(100));
    // Let the last bootstraps finish.
    sim.run_for(Duration::from_secs(120));
    let after_bootstrap = sim.stats();
    let sizes: Vec<usize> = sim
        .live_nodes()
        .iter()
        .filter_map(|&n| sim.engine(n))
        .map(|c| c.routing_table().len())
        .collect();
    println!(
        "bootstrap: {} requests, {} lost; routing table size min {} / mean {:.0} / max {}; {:.1}s wall",
        after_bootstrap.requests,
        after_bootstrap.lost,
        sizes.iter().min().unwrap(),
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64,
        sizes.iter().max().unwrap(),
        wall.elapsed().as_secs_f64()
    );

    // 1,000 lookups of random keys from random nodes, all running concurrently.
    let mut rng = StdRng::seed_from_u64(42);
    let live = sim.live_nodes();
    let mut hops = Vec::new();
    let mut closest_depth = Vec::new();
    let mut requests = Vec::new();
    let mut wrong = Vec::new();
    let mut lookups = Vec::new();
    for _ in 0..1000 {
        let from = *live.choose(&mut rng).unwrap();
        let key: [u8; 32] = rng.gen();
        let q = sim
            .with_engine(from, |engine, now| engine.find_node(key.to_vec(), now))
            .unwrap();
        lookups.push((from, q, key));
    }
    let ids: Vec<_> = lookups.iter().map(|(n, q, _)| (*n, *q)).collect();
    assert!(
        sim.run_until_finished(&ids, Duration::from_secs(300)),
        "lookups did not finish"
    );
    let lookup_requests = sim.stats().requests - after_bootstrap.requests;
    for (from, q, key) in lookups {
        let f = sim.take_finished(from, q).unwrap();
        let QueryResult::FindNode(Ok(ok)) = &f.result else {
            panic!("lookup failed: {:?}", f.result)
        };
        assert!(ok.converged, "lookup timed out: {:?}", f.stats);
        let truth = sim.peer_id(true_closest(&sim, &Key::from_bytes(&key), from));
        if ok.peers.first().map(|p| p.id) != Some(truth) {
            let tn = sim.node_of(&truth).unwrap();
            let tk = Key::from_bytes(&key);
            let mut order: Vec<_> = sim
                .live_nodes()
                .into_iter()
                .filter(|&n| n != from)
                .collect();
            order.sort_by_key(|&n| sim.key(n).unwrap().distance(&tk));
            let knowers = order[..20]
                .iter()
                .filter(|&&n| sim.engine(n).unwrap().routing_table().contains(&truth))
                .count();
            eprintln!(
                "miss: node {from} looked up a key whose closest node is {tn}; {knowers} of the 20 nodes \
                 closest to the key know it; lookup stats {:?}",
                f.stats
            );
            wrong.push(key);
        }
        hops.push(f.stats.hops);
        closest_depth.push(f.stats.closest_depth.unwrap_or(0));
        requests.push(f.stats.requests);
    }
    hops.sort_unstable();
    closest_depth.sort_unstable();
    requests.sort_unstable();
    println!(
        "1000 lookups: hops (sequential request rounds) median {} / p99 {} / max {}; \
         closest peer first learned after median {} / max {} rounds; \
         requests per lookup median {} / p99 {} / max {}",
        percentile(&hops, 0.5),
        percentile(&hops, 0.99),
        hops.last().unwrap(),
        percentile(&closest_depth, 0.5),
        closest_depth.last().unwrap(),
        percentile(&requests, 0.5),
        percentile(&requests, 0.99),
        requests.last().unwrap(),
    );
    let mut hist = std::collections::BTreeMap::new();
    for h in &hops {
        *hist.entry(*h).or_insert(0) += 1;
    }
    println!(
        "hop histogram: {hist:?}; {lookup_requests} requests in the lookup phase (incl. pings); {:.1}s wall",
        wall.elapsed().as_secs_f64()
    );
    println!(
        "{} of 1000 lookups missed the true closest node",
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} lookups missed the true closest node",
        wrong.len()
    );
    assert!(
        percentile(&hops, 0.5) <= 3 && *hops.last().unwrap() <= 4,
        "hop targets missed: {hist:?}"
    );

    // PUT from a random node, then 10% of the nodes crash, then GET from 20 random nodes.
    let putter = *live.choose(&mut rng).unwrap();
    let record = Record::new("the-record", b"value".to_vec());
    let q = sim
        .with_engine(putter, |engine, now| {
            engine.put_value(record.clone(), 1, now)
        })
        .unwrap()
        .unwrap();
    assert!(sim.run_until_finished(&[(putter, q)], Duration::from_secs(120)));
    let put = sim.take_finished(putter, q).unwrap();
    let QueryResult::PutValue(Ok(ok)) = &put.result else {
        panic!("put failed: {:?}", put.result)
    };
    println!(
        "put stored at {} peers ({} requests, {} hops)",
        ok.successes, put.stats.requests, put.stats.hops
    );
    let mut victims = live.clone();
    victims.shuffle(&mut rng);
    for &v in &victims[..live.len() / 10] {
        sim.remove_node(v);
    }
    let survivors = sim.live_nodes();
    assert_eq!(survivors.len(), 900);
    let getters: Vec<_> = survivors.choose_multiple(&mut rng, 20).copied().collect();
    let queries: Vec<_> = getters
        .iter()
        .map(|&g| {
            (
                g,
                sim.with_engine(g, |engine, now| {
                    engine.get_value("the-record".into(), 1, now)
                })
                .unwrap(),
            )
        })
        .collect();
    assert!(sim.run_until_finished(&queries, Duration::from_secs(300)));
    let mut get_hops = Vec::new();
    for (g, q) in queries {
        let f = sim.take_finished(g, q).unwrap();
        let QueryResult::GetValue(Ok(ok)) = &f.result else {
            panic!("get from {g} failed: {:?}", f.result)
        };
        assert_eq!(ok.records[0].record.value, b"value");
        get_hops.push(f.stats.hops);
    }
    println!("20 GETs after 10% churn: all found, hops {get_hops:?}");
    let s = sim.stats();
    println!(
        "total: {} requests, {} responses, {} lost, {} to crashed nodes; {:.1}s wall",
        s.requests,
        s.responses,
        s.lost,
        s.undeliverable,
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn small_network_over_the_wire_codec_with_providers_and_clients() {
    let config = SimConfig {
        seed: 7,
        loss: 0.05,
        encode_messages: true,
        ..SimConfig::default()
    };
    let (mut sim, nodes) = build(config, 60, Duration::from_millis(200));
    sim.run_for(Duration::from_secs(60));

    // A client joins: it can use the DHT but nobody adds it to their routing table.
    let client = sim.add_node(Mode::Client);
    sim.connect(client, nodes[0]);
    sim.bootstrap(client).unwrap();
    sim.run_for(Duration::from_secs(60));
    let client_peer = sim.peer_id(client);
    assert!(sim.engine(client).unwrap().routing_table().len() > 10);
    for &n in &nodes {
        assert!(!sim
            .engine(n)
            .unwrap()
            .routing_table()
            .contains(&client_peer));
    }

    // A provider announces a key; another node (and the client) find it.
    let key = meshwire_kad::discovery::service_key("relay");
    let q = sim
        .with_engine(nodes[5], |engine, now| {
            engine.start_providing(key.clone(), now)
        })
        .unwrap()
        .unwrap();
    assert!(sim.run_until_finished(&[(nodes[5], q)], Duration::from_secs(60)));
    sim.run_for(Duration::from_secs(1));
    for finder in [nodes[40], client] {
        let q = sim
            .with_engine(finder, |engine, now| {
                engine.get_providers(key.clone(), Some(1), now)
            })
            .unwrap();
        assert!(sim.run_until_finished(&[(finder, q)], Duration::from_secs(60)));
        let f = sim.take_finished(finder, q).unwrap();
        let QueryResult::GetProviders(Ok(ok)) = &f.result else {
            panic!("{:?}", f.result)
        };
        assert_eq!(ok.providers[0].id, sim.peer_id(nodes[5]));
    }
}

#[test]
fn simulation_is_deterministic() {
    let run = || {
        let config = SimConfig {
            seed: 3,
            loss: 0.05,
            ..SimConfig::default()
        };
        let (mut sim, nodes) = build(config, 40, Duration::from_millis(50));
        sim.run_for(Duration::from_secs(30));
        let q = sim
            .with_engine(nodes[1], |engine, now| engine.find_node(b"k".to_vec(), now))
            .unwrap();
        sim.run_until_finished(&[(nodes[1], q)], Duration::from_secs(60));
        let f = sim.take_finished(nodes[1], q).unwrap();
        (
            sim.stats(),
            f.stats.requests,
            f.stats.hops,
            format!("{:?}", f.result),
        )
    };
    assert_eq!(run(), run());
}
