//! Gossipsub engines in the seeded simulator (`meshwire_pubsub::sim`): delivery under loss
//! and churn, and honest delivery among Sybils with peer scoring. 200 nodes in the default
//! run; the 1,000-node runs are ignored tests (see the README):
//!
//! ```text
//! cargo test -p meshwire-pubsub --test sim -- --ignored --nocapture
//! ```

use std::time::Instant;

use meshwire_pubsub::sim::scenario::{ChurnRun, Report, SybilRun};
use meshwire_pubsub::sim::Attack;

/// Peak resident memory of this process (Linux `VmHWM`), in MiB; 0 elsewhere.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn timed(run: impl FnOnce() -> Report) -> Report {
    let started = Instant::now();
    let report = run();
    println!("{report}");
    println!(
        "  wall time {:.1} s, peak RSS of the test process {:.0} MiB",
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    report
}

fn check_churn(report: &Report) {
    assert!(
        report.delivery_rate() >= 0.99,
        "delivery {:.4} under loss and churn",
        report.delivery_rate()
    );
    assert!(report.expected > 0);
    assert!(report.counters.leaves > 0 && report.counters.joins == report.counters.leaves);
    assert!(report.counters.rpcs_lost > 0);
}

fn check_sybil(report: &Report) {
    assert!(
        report.delivery_rate() >= 0.99,
        "honest delivery {:.4} among Sybils",
        report.delivery_rate()
    );
    let honest = report.honest_scores.expect("scoring on");
    // Honest peers are not pushed out: nine in ten score 0 or more while the topic is busy.
    assert!(honest.p10 >= 0.0, "honest scores {honest}");
    assert_eq!(report.sybil_scores.len(), Attack::ALL.len());
    for (attack, s) in &report.sybil_scores {
        // Most Sybils are below zero: out of meshes, not grafted again, not gossiped with.
        // (A Sybil a node never grafted has given it nothing to judge: 0; one grafted in the
        // last 10 s has not reached P3's activation yet.)
        assert!(s.p50 < 0.0, "{attack:?} Sybils scored {s}");
    }
    let (before, after) = report.sybil_mesh_share.expect("sybil run");
    assert!(
        after < before / 4.0,
        "Sybils kept their mesh slots: {before:.3} -> {after:.3}"
    );
}

#[test]
fn sim_delivers_under_loss_and_churn() {
    let report = timed(|| ChurnRun::new(200, 1, 60).run());
    check_churn(&report);
}

#[test]
fn sim_scoring_keeps_honest_delivery_among_sybils() {
    let report = timed(|| SybilRun::new(200, 2, 60).run());
    check_sybil(&report);
}

/// 100 nodes, no loss or churn, the benchmark's degrees (D = 8, D_lo = 6, D_hi = 12), 40
/// messages of 2,048 bytes at 5/s, IDONTWANT on (threshold 1,000 bytes) or off: the run's
/// report.
fn idontwant_run(on: bool) -> Report {
    use meshwire_pubsub::GossipsubConfig;
    let mut run = ChurnRun::new(100, 3, 40);
    run.churn = 0.0;
    run.sim.loss = 0.0;
    run.sim.message_size = 2048;
    run.sim.gossipsub = GossipsubConfig {
        mesh_n: 8,
        mesh_n_low: 6,
        mesh_n_high: 12,
        idontwant_message_size_threshold: if on { 1000 } else { usize::MAX },
        ..run.sim.gossipsub
    };
    timed(|| run.run())
}

#[test]
fn sim_idontwant_cuts_duplicates_of_large_messages() {
    // Links of 10–60 ms, each RPC's latency drawn alone: a copy is saved only when a node's
    // IDONTWANT reaches a mesh peer before that peer's own first copy does, which happens
    // when first receipts are further apart than a link's latency — seldom with flood
    // publishing, where most nodes are one or two hops from the publisher. Seeded: the
    // figures replay exactly.
    let off = idontwant_run(false);
    let on = idontwant_run(true);
    assert_eq!(off.delivery_rate(), 1.0);
    assert_eq!(on.delivery_rate(), 1.0);
    println!(
        "duplicates per delivery, 2,048-byte messages, D = 8: IDONTWANT off {:.2}, on {:.2}",
        off.duplicates_per_delivery, on.duplicates_per_delivery
    );
    assert!(
        on.duplicates_per_delivery < off.duplicates_per_delivery,
        "IDONTWANT on {:.2} vs off {:.2}",
        on.duplicates_per_delivery,
        off.duplicates_per_delivery
    );
}

#[test]
fn sim_replays_from_its_seed() {
    let a = ChurnRun::new(60, 9, 10).run();
    let b = ChurnRun::new(60, 9, 10).run();
    assert_eq!(a.counters, b.counters);
    assert_eq!((a.expected, a.delivered), (b.expected, b.delivered));
    let c = ChurnRun::new(60, 10, 10).run();
    assert_ne!(a.counters, c.counters, "another seed, another run");
}

#[test]
#[ignore = "1,000 nodes: about 5 minutes in debug; run with --ignored --nocapture"]
fn sim_1000_nodes_loss_and_churn() {
    let report = timed(|| ChurnRun::new(1000, 1, 150).run());
    check_churn(&report);
}

#[test]
#[ignore = "1,000 nodes: about 5 minutes in debug; run with --ignored --nocapture"]
fn sim_1000_nodes_sybils() {
    let report = timed(|| SybilRun::new(1000, 2, 120).run());
    check_sybil(&report);
    // The same network with scoring off, for comparison (not asserted).
    timed(|| SybilRun::new(1000, 2, 120).without_scoring().run());
}

/// 120 nodes, the benchmark's degrees (D = 8, D_lo = 6, D_hi = 12), 60 messages at 5/s,
/// choking on or off; `loss` and `churn` as given.
fn choke_run(on: bool, loss: f64, churn: f64) -> Report {
    choke_run_with(
        on,
        loss,
        churn,
        meshwire_pubsub::ChokeConfig::default().max_unchoked,
    )
}

/// [`choke_run`] with `max_unchoked` unchoked mesh peers at most.
fn choke_run_with(on: bool, loss: f64, churn: f64, max_unchoked: usize) -> Report {
    let choke = meshwire_pubsub::ChokeConfig {
        enabled: on,
        max_unchoked,
        ..meshwire_pubsub::ChokeConfig::default()
    };
    choke_run_seeded(4, loss, churn, choke)
}

/// [`choke_run`] from `seed` with the given choke settings.
fn choke_run_seeded(
    seed: u64,
    loss: f64,
    churn: f64,
    choke: meshwire_pubsub::ChokeConfig,
) -> Report {
    use meshwire_pubsub::GossipsubConfig;
    let mut run = ChurnRun::new(120, seed, 60);
    run.churn = churn;
    run.sim.loss = loss;
    run.sim.gossipsub = GossipsubConfig {
        mesh_n: 8,
        mesh_n_low: 6,
        mesh_n_high: 12,
        choke,
        ..run.sim.gossipsub
    };
    timed(|| run.run())
}

#[test]
#[ignore = "exploration of eager forwarding near the source: run with --ignored --nocapture"]
fn sim_choking_eager_from_author_sweep() {
    // Choking off; lazy on every hop with 4 unchoked (the defaults before
    // `eager_from_author`); the eager first hop with 4 and with 3 unchoked (the defaults);
    // seeds 4 to 6, without loss and with 10 % loss and 20 % churn (printed; each run
    // replays exactly).
    use meshwire_pubsub::ChokeConfig;
    for (loss, churn) in [(0.0, 0.0), (0.10, 0.20)] {
        for seed in 4..=6 {
            let choking = |eager_from_author, max_unchoked| ChokeConfig {
                enabled: true,
                eager_from_author,
                max_unchoked,
                ..ChokeConfig::default()
            };
            for (name, choke) in [
                ("off", ChokeConfig::default()),
                ("lazy, 4 unchoked", choking(false, 4)),
                ("eager, 4 unchoked", choking(true, 4)),
                ("eager, 3 unchoked (default)", choking(true, 3)),
            ] {
                let r = choke_run_seeded(seed, loss, churn, choke);
                println!(
                    "EAGER seed {seed} loss {loss} churn {churn} {name}: delivery {:.4} \
                     duplicates {:.2} p50 {:.0} p99 {:.0} max {:.0} ms",
                    r.delivery_rate(),
                    r.duplicates_per_delivery,
                    r.latency_ms.p50,
                    r.latency_ms.p99,
                    r.latency_ms.max,
                );
            }
        }
    }
}

#[test]
#[ignore = "exploration of max_unchoked (3, 4, 5): run with --ignored --nocapture"]
fn sim_choking_max_unchoked_sweep() {
    // The trade `max_unchoked` sets between duplicates and latency, without loss and with
    // 10 % loss and 20 % churn (printed; each run is seeded and replays exactly).
    for (loss, churn) in [(0.0, 0.0), (0.10, 0.20)] {
        for max_unchoked in [3, 4, 5] {
            let on = choke_run_with(true, loss, churn, max_unchoked);
            println!(
                "max_unchoked {max_unchoked}, loss {loss}, churn {churn}: delivery {:.4} \
                 duplicates {:.2} p50 {:.0} p99 {:.0} max {:.0} ms",
                on.delivery_rate(),
                on.duplicates_per_delivery,
                on.latency_ms.p50,
                on.latency_ms.p99,
                on.latency_ms.max,
            );
        }
    }
}

#[test]
fn sim_choking_cuts_duplicates() {
    // Seeded: the figures replay exactly. Without loss or churn both deliver everything;
    // choking keeps at most 3 unchoked mesh peers per node, plus the eager first hop.
    let off = choke_run(false, 0.0, 0.0);
    let on = choke_run(true, 0.0, 0.0);
    assert_eq!(off.delivery_rate(), 1.0);
    assert_eq!(on.delivery_rate(), 1.0);
    println!(
        "duplicates per delivery, 120 nodes, D = 8: choking off {:.2}, on {:.2}; latency p50 {:.0} / {:.0} ms, p99 {:.0} / {:.0} ms",
        off.duplicates_per_delivery,
        on.duplicates_per_delivery,
        off.latency_ms.p50,
        on.latency_ms.p50,
        off.latency_ms.p99,
        on.latency_ms.p99,
    );
    assert!(
        on.duplicates_per_delivery <= 3.0,
        "choking on: {:.2} duplicates per delivery",
        on.duplicates_per_delivery
    );
    assert!(
        on.duplicates_per_delivery < off.duplicates_per_delivery * 0.7,
        "choking on {:.2} vs off {:.2}",
        on.duplicates_per_delivery,
        off.duplicates_per_delivery
    );
}

#[test]
fn sim_choking_eager_first_hop_cuts_the_tail() {
    // The defaults (3 unchoked, messages taken from their author forwarded in full to every
    // mesh peer) against lazy forwarding on every hop with 4 unchoked (the defaults before
    // `eager_from_author`), seeds 4 to 6: a lower p99 each time, still ≤ 3 duplicates and
    // 100 % delivery.
    use meshwire_pubsub::ChokeConfig;
    for seed in 4..=6 {
        let eager = choke_run_seeded(
            seed,
            0.0,
            0.0,
            ChokeConfig {
                enabled: true,
                ..ChokeConfig::default()
            },
        );
        let lazy = choke_run_seeded(
            seed,
            0.0,
            0.0,
            ChokeConfig {
                enabled: true,
                eager_from_author: false,
                max_unchoked: 4,
                ..ChokeConfig::default()
            },
        );
        println!(
            "seed {seed}: eager first hop, 3 unchoked: duplicates {:.2} p99 {:.0} ms; lazy, 4 \
             unchoked: {:.2}, {:.0} ms",
            eager.duplicates_per_delivery,
            eager.latency_ms.p99,
            lazy.duplicates_per_delivery,
            lazy.latency_ms.p99,
        );
        assert_eq!(eager.delivery_rate(), 1.0);
        assert!(eager.duplicates_per_delivery <= 3.0);
        assert!(
            eager.latency_ms.p99 < lazy.latency_ms.p99,
            "seed {seed}: p99 {:.0} vs {:.0} ms",
            eager.latency_ms.p99,
            lazy.latency_ms.p99
        );
    }
}

#[test]
fn sim_choking_delivers_under_loss_and_churn() {
    // 10 % of RPCs lost (CHOKEs, UNCHOKEs and IHAVEs too), 20 % of the nodes leaving and
    // joining again: delivery stays as without choking.
    let off = choke_run(false, 0.10, 0.20);
    let on = choke_run(true, 0.10, 0.20);
    check_churn(&off);
    check_churn(&on);
    println!(
        "10 % loss, 20 % churn: delivery off {:.4} on {:.4}, duplicates {:.2} / {:.2}, p50 {:.0} / {:.0} ms, p99 {:.0} / {:.0} ms",
        off.delivery_rate(),
        on.delivery_rate(),
        off.duplicates_per_delivery,
        on.duplicates_per_delivery,
        off.latency_ms.p50,
        on.latency_ms.p50,
        off.latency_ms.p99,
        on.latency_ms.p99,
    );
}
