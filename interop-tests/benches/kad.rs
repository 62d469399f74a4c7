//! Kademlia lookup benchmark: meshwire against rust-libp2p 0.57, 50 real nodes each on
//! loopback QUIC, in one process.
//!
//! Each implementation gets its own DHT of `N` nodes (default 50, `MESHWIRE_BENCH_KAD_NODES`
//! overrides) running identify and kademlia with the defaults of their libraries (k = 20,
//! α = 3), bootstrapped the same way: node 0 is the bootstrap node, the others add its
//! address and bootstrap through it, ten at a time. Then `L` lookups (default 200,
//! `MESHWIRE_BENCH_KAD_LOOKUPS` overrides) of random 32-byte keys from random nodes run one at
//! a time, alternating between the two DHTs. A lookup's latency is measured in its node's own
//! task, from just before the lookup is started to the receipt of its result; its messages are
//! the requests it sent (`QueryStats::requests` in meshwire, `QueryStats::num_requests` in
//! rust-libp2p). Each result is also checked against the true closest node.
//!
//! Run with `cargo bench -p interop-tests --bench kad`.

#[path = "../tests/kad_harness/mod.rs"]
mod kad_harness;

use std::time::{Duration, Instant};

use futures::future::join_all;
use libp2p::kad as lp_kad;
use meshwire_core::PeerId;
use meshwire_kad as mw_kad;
use meshwire_kad::kbucket::Key;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use kad_harness::*;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The node of `peers` closest to `key`, other than `except`.
fn true_closest(peers: &[PeerId], key: &[u8], except: PeerId) -> PeerId {
    let target = Key::from_bytes(key);
    *peers
        .iter()
        .filter(|p| **p != except)
        .min_by_key(|p| Key::from_peer(p).distance(&target))
        .expect("peers")
}

#[derive(Default)]
struct Figures {
    latencies: Vec<Duration>,
    requests: Vec<u32>,
    hops: Vec<u32>,
    found_closest: usize,
}

impl Figures {
    fn sort(&mut self) {
        self.latencies.sort_unstable();
        self.requests.sort_unstable();
        self.hops.sort_unstable();
    }

    fn latency(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn requests_at(&self, p: f64) -> f64 {
        f64::from(percentile(&self.requests, p))
    }

    fn mean_requests(&self) -> f64 {
        self.requests.iter().map(|r| f64::from(*r)).sum::<f64>() / self.requests.len() as f64
    }
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn build_meshwire(n: usize) -> (Vec<MwNode>, Duration) {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(meshwire_node(mw_kad::Config::default()).await);
    }
    let start = Instant::now();
    let (peer, addr) = (nodes[0].peer, nodes[0].addr.clone());
    for wave in nodes[1..].chunks_mut(10) {
        join_all(
            wave.iter_mut()
                .map(|node| mw_bootstrap(node, peer, addr.clone())),
        )
        .await;
    }
    (nodes, start.elapsed())
}

async fn build_libp2p(n: usize) -> (Vec<LpNode>, Duration) {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(libp2p_node().await);
    }
    let start = Instant::now();
    let (peer, addr) = (nodes[0].peer, nodes[0].addr.clone());
    for wave in nodes[1..].chunks_mut(10) {
        join_all(
            wave.iter_mut()
                .map(|node| lp_bootstrap(node, peer, addr.clone())),
        )
        .await;
    }
    (nodes, start.elapsed())
}

async fn mw_lookup(node: &mut MwNode, key: Vec<u8>, truth: PeerId, f: &mut Figures) {
    let (id, t0) = node
        .call(move |s| {
            let t0 = Instant::now();
            (s.behaviour_mut().kad.find_node(key), t0)
        })
        .await;
    let (result, stats, at) = mw_finished(node, id).await;
    let mw_kad::QueryResult::FindNode(Ok(ok)) = result else {
        panic!("meshwire lookup failed: {result:?}")
    };
    f.latencies.push(at.saturating_duration_since(t0));
    f.requests.push(stats.requests);
    f.hops.push(stats.hops);
    if ok.peers.first().map(|p| p.id) == Some(truth) {
        f.found_closest += 1;
    }
}

async fn lp_lookup(node: &mut LpNode, key: Vec<u8>, truth: PeerId, f: &mut Figures) {
    let (id, t0) = node
        .call(move |s| {
            let t0 = Instant::now();
            (s.behaviour_mut().kad.get_closest_peers(key), t0)
        })
        .await;
    let steps = lp_finished(node, id).await;
    let last = steps.last().expect("a result");
    let lp_kad::QueryResult::GetClosestPeers(Ok(ok)) = &last.result else {
        panic!("libp2p lookup failed: {:?}", last.result)
    };
    f.latencies.push(last.at.saturating_duration_since(t0));
    f.requests.push(last.stats.num_requests());
    if ok.peers.first().map(|p| to_mw(&p.peer_id)) == Some(truth) {
        f.found_closest += 1;
    }
}

async fn bench() {
    let n = env_usize("MESHWIRE_BENCH_KAD_NODES").unwrap_or(50).max(2);
    let lookups = env_usize("MESHWIRE_BENCH_KAD_LOOKUPS")
        .unwrap_or(200)
        .max(1);
    let wall = Instant::now();

    let (mut mw, mw_boot) = build_meshwire(n).await;
    let (mut lp, lp_boot) = build_libp2p(n).await;
    println!(
        "kad benchmark: {n} nodes per implementation on loopback QUIC; bootstrap of nodes 1..={} \
         through node 0 (10 at a time): meshwire {:.0} ms, rust-libp2p {:.0} ms",
        n - 1,
        ms(mw_boot),
        ms(lp_boot)
    );
    // Let rust-libp2p's automatic bootstraps (triggered while its tables are small) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mw_peers: Vec<PeerId> = mw.iter().map(|n| n.peer).collect();
    let lp_peers: Vec<PeerId> = lp.iter().map(|n| n.peer).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut mwf, mut lpf) = (Figures::default(), Figures::default());
    for i in 0..lookups {
        let key: [u8; 32] = rng.gen();
        let (a, b) = (
            *(0..n).collect::<Vec<_>>().choose(&mut rng).unwrap(),
            *(0..n).collect::<Vec<_>>().choose(&mut rng).unwrap(),
        );
        let mw_truth = true_closest(&mw_peers, &key, mw_peers[a]);
        let lp_truth = true_closest(&lp_peers, &key, lp_peers[b]);
        // Alternate which implementation goes first.
        if i % 2 == 0 {
            mw_lookup(&mut mw[a], key.to_vec(), mw_truth, &mut mwf).await;
            lp_lookup(&mut lp[b], key.to_vec(), lp_truth, &mut lpf).await;
        } else {
            lp_lookup(&mut lp[b], key.to_vec(), lp_truth, &mut lpf).await;
            mw_lookup(&mut mw[a], key.to_vec(), mw_truth, &mut mwf).await;
        }
    }
    mwf.sort();
    lpf.sort();

    println!(
        "{lookups} random FIND_NODE lookups per implementation, one at a time from random nodes"
    );
    println!(
        "{:<24} {:>13} {:>10} {:>16} {:>14} {:>13} {:>16}",
        "", "latency p50", "p99", "requests p50", "mean", "p99", "true closest"
    );
    for (name, f) in [("meshwire", &mwf), ("rust-libp2p", &lpf)] {
        println!(
            "{:<24} {:>10.2} ms {:>7.2} ms {:>16.0} {:>14.1} {:>13.0} {:>10}/{}",
            name,
            ms(f.latency(0.5)),
            ms(f.latency(0.99)),
            f.requests_at(0.5),
            f.mean_requests(),
            f.requests_at(0.99),
            f.found_closest,
            lookups
        );
    }
    println!(
        "{:<24} {:>13.2} {:>10.2} {:>16.2} {:>14.2} {:>13.2}",
        "ratio meshwire/libp2p",
        ms(mwf.latency(0.5)) / ms(lpf.latency(0.5)),
        ms(mwf.latency(0.99)) / ms(lpf.latency(0.99)),
        mwf.requests_at(0.5) / lpf.requests_at(0.5),
        mwf.mean_requests() / lpf.mean_requests(),
        mwf.requests_at(0.99) / lpf.requests_at(0.99),
    );
    println!(
        "meshwire hops (sequential request rounds) per lookup: median {} / max {}; {:.1} s wall",
        percentile(&mwf.hops, 0.5),
        mwf.hops.last().unwrap(),
        wall.elapsed().as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}
