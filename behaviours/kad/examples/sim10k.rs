//! The Kademlia simulation at scale (default 10,000 nodes): every node joins through three
//! seeds and bootstraps, then 1,000 random lookups run from random nodes; prints hops,
//! requests per lookup, memory per node and wall time. Messages take 10–100 ms and 5 % are
//! lost, as in the 1,000-node test (`tests/sim.rs`).
//!
//! ```text
//! cargo run --release -p meshwire-kad --features sim --example sim10k [-- <nodes> <seed>]
//! ```
//!
//! Exits with an error if a lookup misses the true closest node or the median exceeds 3 hops.

use std::time::{Duration, Instant};

use meshwire_kad::kbucket::Key;
use meshwire_kad::sim::{NodeId, Sim, SimConfig};
use meshwire_kad::{KadConfig, Mode, QueryResult};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Resident memory of this process in bytes (Linux), if known.
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let wall = Instant::now();
    let rss0 = rss().unwrap_or(0);
    // As in the 1,000-node test: 4 retries per peer make a lookup robust to 5 % loss.
    let kad = KadConfig {
        lookup_retries: 4,
        query_timeout: Duration::from_secs(120),
        ..KadConfig::default()
    };
    let mut sim = Sim::new(SimConfig {
        seed,
        loss: 0.05,
        kad,
        ..SimConfig::default()
    });
    let seeds: Vec<NodeId> = (0..3).map(|_| sim.add_node(Mode::Server)).collect();
    for &a in &seeds {
        for &b in &seeds {
            if a != b {
                sim.connect(a, b);
            }
        }
    }
    for &s in &seeds {
        sim.bootstrap(s)
            .map_err(|e| format!("seed bootstrap: {e:?}"))?;
    }
    // Joins 50 ms apart (the 1,000-node test: 100 ms): 10,000 joins in 500 s of virtual time.
    let gap = Duration::from_millis(50);
    for _ in 3..n {
        let node = sim.add_node(Mode::Server);
        for &s in &seeds {
            sim.connect(node, s);
        }
        sim.bootstrap(node)
            .map_err(|e| format!("bootstrap: {e:?}"))?;
        sim.run_for(gap);
    }
    sim.run_for(Duration::from_secs(120));
    let boot = sim.stats();
    let live = sim.live_nodes();
    let sizes: Vec<usize> = live
        .iter()
        .filter_map(|&x| sim.engine(x))
        .map(|e| e.routing_table().len())
        .collect();
    let rss1 = rss().unwrap_or(0);
    println!(
        "{n} nodes joined: {} requests ({:.0} per node), {} lost; routing table min {} / mean {:.0} / max {}; \
         memory {:.1} MiB, {:.1} KiB per node; {:.1}s wall",
        boot.requests,
        boot.requests as f64 / n as f64,
        boot.lost,
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
        sizes.iter().max().unwrap_or(&0),
        (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / 1024.0 / n as f64,
        wall.elapsed().as_secs_f64()
    );

    let lookups_wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lookups = Vec::new();
    for _ in 0..1000 {
        let from = *live.choose(&mut rng).ok_or("no node")?;
        let key: [u8; 32] = rng.gen();
        let q = sim
            .with_engine(from, |e, now| e.find_node(key.to_vec(), now))
            .ok_or("node gone")?;
        lookups.push((from, q, key));
    }
    let ids: Vec<_> = lookups.iter().map(|(x, q, _)| (*x, *q)).collect();
    if !sim.run_until_finished(&ids, Duration::from_secs(300)) {
        return Err("lookups did not finish".into());
    }
    let requests_in_lookups = sim.stats().requests - boot.requests;
    // The true closest node of every key, by one pass over the sorted-by-distance nodes.
    let keys: Vec<(NodeId, Key)> = live
        .iter()
        .filter_map(|&x| sim.key(x).map(|k| (x, k)))
        .collect();
    let (mut hops, mut requests, mut wrong) = (Vec::new(), Vec::new(), 0usize);
    for (from, q, key) in lookups {
        let f = sim.take_finished(from, q).ok_or("no result")?;
        let QueryResult::FindNode(Ok(ok)) = &f.result else {
            return Err(format!("lookup failed: {:?}", f.result));
        };
        let target = Key::from_bytes(&key);
        let truth = keys
            .iter()
            .filter(|(x, _)| *x != from)
            .min_by_key(|(_, k)| k.distance(&target))
            .map(|(x, _)| sim.peer_id(*x));
        if ok.peers.first().map(|p| p.id) != truth {
            wrong += 1;
        }
        hops.push(f.stats.hops);
        requests.push(f.stats.requests);
    }
    hops.sort_unstable();
    requests.sort_unstable();
    let mut hist = std::collections::BTreeMap::new();
    for h in &hops {
        *hist.entry(*h).or_insert(0) += 1;
    }
    println!(
        "1000 lookups: {} exact ({:.1} %); hops median {} / p99 {} / max {} {hist:?}; \
         requests per lookup median {} / p99 {} / max {} ({requests_in_lookups} in the phase, incl. pings); {:.1}s wall",
        1000 - wrong,
        100.0 * (1000 - wrong) as f64 / 1000.0,
        percentile(&hops, 0.5),
        percentile(&hops, 0.99),
        hops.last().unwrap_or(&0),
        percentile(&requests, 0.5),
        percentile(&requests, 0.99),
        requests.last().unwrap_or(&0),
        lookups_wall.elapsed().as_secs_f64()
    );
    println!("total wall {:.1}s", wall.elapsed().as_secs_f64());
    if wrong > 0 {
        return Err(format!("{wrong} lookups missed the true closest node"));
    }
    if percentile(&hops, 0.5) > 3 {
        return Err("median hops above 3".into());
    }
    Ok(())
}
