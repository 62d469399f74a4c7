//! 1,000-member simulations of the SWIM + Lifeguard core (figures in docs/swim.md).
//!
//! Run with output: `cargo test -p meshwire-swim --release --test sim -- --nocapture`.
//! Every run is seeded and reproducible; one protocol period is 1 s of virtual time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use meshwire_swim::rng::SwimRng;
use meshwire_swim::sim::{Sim, SimConfig};
use meshwire_swim::{SwimConfig, SwimEvent};

const N: usize = 1000;
const PERIOD: Duration = Duration::from_secs(1);

fn periods(d: Duration) -> f64 {
    d.as_secs_f64() / PERIOD.as_secs_f64()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A settled group of `N` members with `loss` datagram loss from now on.
fn settled(swim: SwimConfig, seed: u64, loss: f64) -> Sim {
    let mut sim = Sim::new(SimConfig {
        swim,
        loss,
        ..SimConfig::new(N, seed)
    });
    sim.bootstrap_converged(&mut |_, _, _| {});
    sim.run_until(Duration::from_secs(5), &mut |_, _, _| {});
    sim
}

#[test]
fn join_converges_1000() {
    let wall = Instant::now();
    let mut sim = Sim::new(SimConfig {
        loss: 0.1,
        ..SimConfig::new(N, 1)
    });
    let mut rng = SwimRng::seed_from_u64(99);
    // Node 0 starts alone; node i joins at i × 20 ms through three random earlier nodes.
    let stagger = Duration::from_millis(20);
    for i in 1..N {
        let seeds = (0..3).map(|_| rng.below(i)).collect();
        sim.join(i, stagger * i as u32, seeds);
    }
    let last_join = stagger * (N as u32 - 1);
    let total = N * (N - 1);
    let realm = sim.realm().clone();
    let (mut p99, mut p999) = (None, None);
    let mut t = Duration::ZERO;
    let all = loop {
        t += PERIOD;
        sim.run_until(t, &mut |_, _, _| {});
        let known: usize = (0..N)
            .map(|i| sim.engine(i).live_member_count(&realm))
            .sum();
        if known * 100 >= total * 99 && p99.is_none() {
            p99 = Some(t);
        }
        if known * 1000 >= total * 999 && p999.is_none() {
            p999 = Some(t);
        }
        if known == total {
            break t;
        }
        assert!(
            t < last_join + 150 * PERIOD,
            "not converged 150 periods after the last join: {known}/{total}"
        );
    };
    let after = |d: Option<Duration>| periods(d.unwrap_or(all).saturating_sub(last_join));
    println!(
        "join: {N} members joining over {:.0} periods (10% loss): 99% of pairs known {:.0}, 99.9% {:.0}, \
         100% {:.0} periods after the last join; {} datagrams, {} push-pulls; wall {:.1?}",
        periods(last_join),
        after(p99),
        after(p999),
        after(Some(all)),
        sim.counters().datagrams_sent,
        sim.counters().push_pulls,
        wall.elapsed()
    );
}

#[test]
fn crash_detection_1000() {
    let wall = Instant::now();
    let mut sim = settled(SwimConfig::default(), 2, 0.1);
    let mut rng = SwimRng::seed_from_u64(5);
    // 20 crashes, one every 3 periods, of distinct random members.
    let mut victims: Vec<usize> = Vec::new();
    while victims.len() < 20 {
        let v = 1 + rng.below(N - 1);
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    let peers: Vec<PeerId> = (0..N).map(|i| sim.peer(i)).collect();
    struct Tracker {
        victim_of: HashMap<PeerId, usize>,
        crashed_at: Vec<Duration>,
        first_suspect: Vec<Option<Duration>>,
        first_failed: Vec<Option<Duration>>,
        declared_by: Vec<HashSet<usize>>,
        false_failures: u64,
    }
    impl Tracker {
        fn on_event(&mut self, at: Duration, node: usize, e: &SwimEvent) {
            let crashed = self.crashed_at.len();
            match e {
                SwimEvent::MemberSuspected { peer, .. } => {
                    if let Some(&k) = self.victim_of.get(peer) {
                        if k < crashed && self.first_suspect[k].is_none() {
                            self.first_suspect[k] = Some(at - self.crashed_at[k]);
                        }
                    }
                }
                SwimEvent::MemberFailed { peer, .. } => match self.victim_of.get(peer) {
                    Some(&k) if k < crashed => {
                        self.first_failed[k].get_or_insert(at - self.crashed_at[k]);
                        self.declared_by[k].insert(node);
                    }
                    _ => self.false_failures += 1,
                },
                _ => {}
            }
        }
    }
    let mut tr = Tracker {
        victim_of: victims
            .iter()
            .enumerate()
            .map(|(k, &v)| (peers[v], k))
            .collect(),
        crashed_at: Vec::new(),
        first_suspect: vec![None; victims.len()],
        first_failed: vec![None; victims.len()],
        declared_by: vec![HashSet::new(); victims.len()],
        false_failures: 0,
    };
    let start = sim.now();
    let alive: Vec<usize> = (0..N).filter(|i| !victims.contains(i)).collect();
    let mut everyone_at: Vec<Option<Duration>> = vec![None; victims.len()];
    let mut t = start;
    let mut p = 0;
    while everyone_at.iter().any(Option::is_none) {
        // Crash victim k at period 3k.
        if p % 3 == 0 && p / 3 < victims.len() {
            sim.crash(victims[p / 3]);
            tr.crashed_at.push(sim.now());
        }
        p += 1;
        t += PERIOD;
        sim.run_until(t, &mut |at, node, e| tr.on_event(at, node, e));
        for (k, at) in everyone_at.iter_mut().enumerate().take(tr.crashed_at.len()) {
            if at.is_none() && alive.iter().all(|i| tr.declared_by[k].contains(i)) {
                *at = Some(t - tr.crashed_at[k]);
            }
        }
        assert!(
            t < start + 200 * PERIOD,
            "crashes not detected by everyone within 200 periods"
        );
    }
    let (first_suspect, first_failed, false_failures) =
        (tr.first_suspect, tr.first_failed, tr.false_failures);
    let mut s: Vec<f64> = first_suspect
        .iter()
        .map(|d| periods(d.unwrap_or(Duration::MAX)))
        .collect();
    let mut f: Vec<f64> = first_failed
        .iter()
        .map(|d| periods(d.unwrap_or(Duration::MAX)))
        .collect();
    let mut a: Vec<f64> = everyone_at
        .iter()
        .map(|d| periods(d.unwrap_or(Duration::MAX)))
        .collect();
    let med_s = quantile(&mut s, 0.5);
    println!(
        "crash: {N} members, 10% loss, 20 crashes; in protocol periods after the crash (median / p90 / max): \
         first suspicion {:.2} / {:.2} / {:.2}; first failure declaration {:.1} / {:.1} / {:.1}; \
         declared failed by every live member {:.1} / {:.1} / {:.1} (to the period); false failures {}; wall {:.1?}",
        med_s,
        quantile(&mut s, 0.9),
        quantile(&mut s, 1.0),
        quantile(&mut f, 0.5),
        quantile(&mut f, 0.9),
        quantile(&mut f, 1.0),
        quantile(&mut a, 0.5),
        quantile(&mut a, 0.9),
        quantile(&mut a, 1.0),
        false_failures,
        wall.elapsed()
    );
    assert!(med_s <= 2.0, "median first detection {med_s} periods");
    assert_eq!(false_failures, 0);
}

struct LossOutcome {
    /// Failure declarations (events) about live members, and how many members they named.
    failed: u64,
    failed_members: usize,
    /// Suspicions raised by a member's own failed probe (all false: nobody crashed).
    raised: u64,
    refutations: u64,
    max_lhm: u32,
    datagrams_per_period: f64,
    everyone_sees_everyone: bool,
}

/// 1,000 settled members, 10% datagram loss, 1,000 protocol periods, no crash.
fn lossy_run(swim: SwimConfig) -> LossOutcome {
    let mut sim = settled(swim, 3, 0.1);
    let peers: Vec<PeerId> = (0..N).map(|i| sim.peer(i)).collect();
    let (mut failed, mut raised) = (0u64, 0u64);
    let mut failed_members = HashSet::new();
    let start = sim.now();
    let sent_before = sim.counters().datagrams_sent;
    sim.run_until(start + 1000 * PERIOD, &mut |_, node, e| match e {
        SwimEvent::MemberFailed { peer, .. } => {
            failed += 1;
            failed_members.insert(*peer);
        }
        SwimEvent::MemberSuspected { accuser, .. } if *accuser == peers[node] => raised += 1,
        _ => {}
    });
    let realm = sim.realm().clone();
    LossOutcome {
        failed,
        failed_members: failed_members.len(),
        raised,
        refutations: (0..N)
            .map(|i| sim.engine(i).stats(&realm).map_or(0, |s| s.refutations))
            .sum(),
        max_lhm: (0..N)
            .filter_map(|i| sim.engine(i).local_health(&realm))
            .max()
            .unwrap_or(0),
        datagrams_per_period: (sim.counters().datagrams_sent - sent_before) as f64 / 1000.0,
        everyone_sees_everyone: (0..N).all(|i| sim.engine(i).live_member_count(&realm) == N - 1),
    }
}

#[test]
fn no_false_failures_under_loss_1000() {
    let wall = Instant::now();
    // The same run (same seed, same loss) with and without Lifeguard, side by side.
    let (on, off) = std::thread::scope(|s| {
        let off = s.spawn(|| lossy_run(SwimConfig::without_lifeguard()));
        let on = lossy_run(SwimConfig::default());
        (on, off.join().expect("the Lifeguard-off run panicked"))
    });
    for (name, o) in [("Lifeguard on ", &on), ("Lifeguard off", &off)] {
        println!(
            "loss: {N} members, 1000 periods, 10% datagram loss, {name}: {} live members declared failed ({} events); \
             {} false suspicions ({:.2} per period), {} refutations; max LHM at the end {}; {:.0} datagrams per period",
            o.failed_members,
            o.failed,
            o.raised,
            o.raised as f64 / 1000.0,
            o.refutations,
            o.max_lhm,
            o.datagrams_per_period,
        );
    }
    println!("loss: wall {:.1?}", wall.elapsed());
    assert_eq!(on.failed, 0, "a live member was declared failed");
    assert!(on.everyone_sees_everyone);
}

struct Outcome {
    healthy_suspected_by_healthy: u64,
    healthy_suspected_by_slow: u64,
    slow_suspected: u64,
    false_failure_events: u64,
    false_failure_members: usize,
}

/// 10% loss plus 10 members whose message processing lags 1–2 s (CPU stalls), for 100
/// periods; counts suspicions raised by each member's own failed probes.
fn slow_members_run(swim: SwimConfig) -> Outcome {
    let mut sim = settled(swim, 4, 0.1);
    let slow: Vec<usize> = (0..10).map(|k| 50 + 97 * k).collect();
    for &s in &slow {
        sim.set_slow(
            s,
            Some((Duration::from_millis(1000), Duration::from_millis(2000))),
        );
    }
    let peers: Vec<PeerId> = (0..N).map(|i| sim.peer(i)).collect();
    let slow_peers: HashSet<PeerId> = slow.iter().map(|&i| peers[i]).collect();
    let mut o = Outcome {
        healthy_suspected_by_healthy: 0,
        healthy_suspected_by_slow: 0,
        slow_suspected: 0,
        false_failure_events: 0,
        false_failure_members: 0,
    };
    let mut failed_members = HashSet::new();
    let start = sim.now();
    sim.run_until(start + 100 * PERIOD, &mut |_, node, e| match e {
        SwimEvent::MemberSuspected { peer, accuser, .. } if *accuser == peers[node] => {
            if slow_peers.contains(peer) {
                o.slow_suspected += 1;
            } else if slow_peers.contains(accuser) {
                o.healthy_suspected_by_slow += 1;
            } else {
                o.healthy_suspected_by_healthy += 1;
            }
        }
        SwimEvent::MemberFailed { peer, .. } => {
            o.false_failure_events += 1;
            failed_members.insert(*peer);
        }
        _ => {}
    });
    o.false_failure_members = failed_members.len();
    o
}

#[test]
fn lifeguard_vs_plain_swim_1000() {
    let wall = Instant::now();
    let on = slow_members_run(SwimConfig::default());
    let off = slow_members_run(SwimConfig::without_lifeguard());
    let healthy = |o: &Outcome| o.healthy_suspected_by_healthy + o.healthy_suspected_by_slow;
    for (name, o) in [("Lifeguard on ", &on), ("Lifeguard off", &off)] {
        println!(
            "lifeguard: {name}: false suspicions of healthy members {} ({} raised by the 10 slow members, {} by healthy ones); \
             suspicions of slow members {}; failure declarations {} events about {} members",
            healthy(o),
            o.healthy_suspected_by_slow,
            o.healthy_suspected_by_healthy,
            o.slow_suspected,
            o.false_failure_events,
            o.false_failure_members
        );
    }
    println!(
        "lifeguard: {N} members, 10% loss, 10 slow members (1-2 s processing lag), 100 periods: \
         {:.1}x fewer false suspicions of healthy members with Lifeguard; wall {:.1?}",
        healthy(&off) as f64 / healthy(&on).max(1) as f64,
        wall.elapsed()
    );
    assert!(healthy(&on) < healthy(&off));
    assert!(on.false_failure_events <= off.false_failure_events);
}

#[test]
fn wire_path_and_mtu_100() {
    // Every datagram encoded and decoded: nothing exceeds the MTU, nothing fails to decode.
    let mut sim = Sim::new(SimConfig {
        loss: 0.1,
        encode: true,
        ..SimConfig::new(100, 6)
    });
    for i in 1..100 {
        sim.join(i, Duration::from_millis(10 * i as u64), vec![0]);
    }
    sim.run_until(Duration::from_secs(30), &mut |_, _, _| {});
    sim.crash(7);
    sim.run_until(Duration::from_secs(90), &mut |_, _, _| {});
    let realm = sim.realm().clone();
    let c = sim.counters().clone();
    println!(
        "wire: 100 members, every datagram through the codec: largest {} bytes, {c:?}",
        c.largest_datagram
    );
    assert_eq!(c.oversized_datagrams, 0);
    assert_eq!(c.decode_errors, 0);
    assert!(c.largest_datagram <= 1200);
    assert!((0..100)
        .filter(|&i| i != 7)
        .all(|i| sim.engine(i).live_member_count(&realm) == 98));
}
