//! Benchmarks of `BasicConnMgr` with 10,000 peers and connections: per-call `tag_peer` and
//! `upsert_tag`, and one full trim from 10,000 connections down to the low watermark (1,000).
//!
//! Run with `cargo bench -p meshwire-connmgr`. Besides criterion's report it prints plain
//! figures first (`trim 10000 -> 1000: X ms`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use meshwire_connmgr::{BasicConnMgr, Config, ConnManager};
use meshwire_core::{ConnectionId, Direction, Keypair, PeerId};

const PEERS: usize = 10_000;
const LOW: usize = 1_000;
const HIGH: usize = 2_000;

fn peer_ids() -> Vec<PeerId> {
    (0..PEERS as u64)
        .map(|i| Keypair::from_seed_for_tests(i).peer_id())
        .collect()
}

/// A manager with one connection per peer, all past the grace period, each peer tagged.
fn populated(peers: &[PeerId], start: Instant) -> BasicConnMgr {
    let cfg = Config {
        low_water: LOW,
        high_water: HIGH,
        ..Config::default()
    };
    let mut cm = match BasicConnMgr::new(cfg, start) {
        Ok(cm) => cm,
        Err(e) => panic!("config: {e}"),
    };
    for (i, p) in peers.iter().enumerate() {
        let dir = if i % 2 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        cm.notify_connected(*p, ConnectionId::from_raw(i as u64), dir, start);
        cm.tag_peer(*p, "score", (i * 7919 % 1000) as i32);
        cm.notify_streams(*p, ConnectionId::from_raw(i as u64), i % 3);
    }
    cm
}

fn later(start: Instant) -> Instant {
    start + Duration::from_secs(3600)
}

fn plain_figures(peers: &[PeerId]) {
    let start = Instant::now();
    let mut trims = Vec::new();
    for _ in 0..20 {
        let mut cm = populated(peers, start);
        let t = Instant::now();
        let out = cm.trim_open_conns(later(start));
        trims.push(t.elapsed());
        let closed: usize = out.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(closed, PEERS - LOW);
        assert_eq!(cm.conn_count(), LOW);
    }
    trims.sort();
    println!(
        "trim {PEERS} -> {LOW}: {:.3} ms (median of 20; min {:.3} ms, max {:.3} ms)",
        trims[10].as_secs_f64() * 1e3,
        trims[0].as_secs_f64() * 1e3,
        trims[19].as_secs_f64() * 1e3
    );

    let mut cm = populated(peers, start);
    let n = 1_000_000usize;
    let t = Instant::now();
    for i in 0..n {
        cm.tag_peer(peers[i % PEERS], "score", i as i32);
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("tag_peer (existing tag, {PEERS} peers): {per:.1} ns/call");

    let t = Instant::now();
    for i in 0..n {
        cm.upsert_tag(peers[i % PEERS], "score", &mut |v| v.wrapping_add(1));
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("upsert_tag (existing tag, {PEERS} peers): {per:.1} ns/call");
    black_box(&cm);
}

fn benches(c: &mut Criterion) {
    let peers = peer_ids();
    if std::env::args().any(|a| a == "--bench") {
        plain_figures(&peers);
    }
    let start = Instant::now();

    let mut cm = populated(&peers, start);
    let mut i = 0usize;
    c.bench_function("tag_peer/10000 peers", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            cm.tag_peer(black_box(peers[i % PEERS]), black_box("score"), i as i32);
        })
    });
    c.bench_function("upsert_tag/10000 peers", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            cm.upsert_tag(black_box(peers[i % PEERS]), black_box("score"), &mut |v| {
                v.wrapping_add(1)
            });
        })
    });

    let mut group = c.benchmark_group("trim");
    // Each iteration rebuilds the 10,000-peer manager outside the timed part, so keep the
    // measured time short.
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("10000 -> 1000", |b| {
        b.iter_batched(
            || populated(&peers, start),
            |mut cm| cm.trim_open_conns(later(start)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(connmgr_benches, benches);

fn main() {
    connmgr_benches();
    Criterion::default().configure_from_args().final_summary();
}
