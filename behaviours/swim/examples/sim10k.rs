//! The SWIM simulation at scale (default 10,000 members): a settled group with 10 % datagram
//! loss; measures datagrams per member per period, then crashes 10 members one every 3
//! periods and measures, in protocol periods after each crash, the first suspicion, the first
//! failure declaration and the time until every live member declared it failed
//! (dissemination); prints the memory per member and the wall time.
//!
//! ```text
//! cargo run --release -p meshwire-swim --no-default-features --features sim --example sim10k [-- <members> <seed>]
//! ```
//!
//! Every node holds every other (SWIM's full membership), so memory grows with the square of
//! the group (about 50 bytes per member-table entry: at 10,000 members 4.6 GiB settled,
//! 6.4 GiB at the peak, ~17 minutes on a loaded 2-core machine): check the per-member figure
//! of a smaller run before a large one.
//!
//! Above 8,192 members the configuration differs from the default in two limits, so that the
//! group starts settled: a push-pull carries (and a node accepts) every member
//! (`max_push_pull_members`), and a node checks every signature of the join answer at once
//! (`signature_check_burst`). With the defaults a join answer brings at most 8,192 members.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use meshwire_swim::rng::SwimRng;
use meshwire_swim::sim::{Sim, SimConfig};
use meshwire_swim::SwimEvent;

const PERIOD: Duration = Duration::from_secs(1);

/// A memory figure of this process in bytes from `/proc/self/status` (Linux; 0 elsewhere):
/// `VmRSS` (resident now) or `VmHWM` (peak resident).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of this process in bytes.
fn rss() -> u64 {
    status_bytes("VmRSS:")
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[derive(Default)]
struct Tracker {
    victim_of: HashMap<PeerId, usize>,
    crashed_at: Vec<Duration>,
    first_suspect: Vec<Option<Duration>>,
    first_failed: Vec<Option<Duration>>,
    declared_by: Vec<HashSet<usize>>,
    false_failures: u64,
    false_suspicions: u64,
}

impl Tracker {
    fn on_event(&mut self, at: Duration, node: usize, e: &SwimEvent) {
        let crashed = self.crashed_at.len();
        match e {
            SwimEvent::MemberSuspected { peer, .. } => match self.victim_of.get(peer) {
                Some(&k) if k < crashed => {
                    if self.first_suspect[k].is_none() {
                        self.first_suspect[k] = Some(at - self.crashed_at[k]);
                    }
                }
                _ => self.false_suspicions += 1,
            },
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

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let wall = Instant::now();
    let rss0 = rss();
    let mut cfg = SimConfig {
        loss: 0.1,
        ..SimConfig::new(n, seed)
    };
    // A settled group: the join answer carries every member, and all its signatures are
    // checked at once (no change below 8,192 members).
    cfg.swim.max_push_pull_members = cfg.swim.max_push_pull_members.max(n);
    cfg.swim.signature_check_burst = cfg
        .swim
        .signature_check_burst
        .max(u32::try_from(n).unwrap_or(u32::MAX));
    let mut sim = Sim::new(cfg);
    sim.bootstrap_converged(&mut |_, _, _| {});
    let rss1 = rss();
    println!(
        "{n} members settled: {:.0} MiB, {:.1} KiB per member ({:.0} bytes per member-table entry); {:.1}s wall",
        rss1.saturating_sub(rss0) as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / 1024.0 / n as f64,
        rss1.saturating_sub(rss0) as f64 / (n as f64 * (n as f64 - 1.0)),
        wall.elapsed().as_secs_f64()
    );
    sim.run_until(Duration::from_secs(5), &mut |_, _, _| {});
    let before = sim.counters().datagrams_sent;
    let steady = 20;
    let t0 = sim.now();
    let mut steady_false = 0u64;
    sim.run_until(t0 + PERIOD * steady, &mut |_, _, e| {
        if matches!(e, SwimEvent::MemberSuspected { .. }) {
            steady_false += 1;
        }
    });
    let per = (sim.counters().datagrams_sent - before) as f64 / (n as f64 * f64::from(steady));
    println!(
        "steady state, 10 % loss: {per:.2} datagrams per member per period (sent, both directions counted once); \
         {steady_false} suspicion events in {steady} periods; {:.1}s wall",
        wall.elapsed().as_secs_f64()
    );

    let mut rng = SwimRng::seed_from_u64(5);
    let mut victims: Vec<usize> = Vec::new();
    while victims.len() < 10 {
        let v = 1 + rng.below(n - 1);
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    let mut tr = Tracker {
        victim_of: victims
            .iter()
            .enumerate()
            .map(|(k, &v)| (sim.peer(v), k))
            .collect(),
        first_suspect: vec![None; victims.len()],
        first_failed: vec![None; victims.len()],
        declared_by: vec![HashSet::new(); victims.len()],
        ..Tracker::default()
    };
    let alive: Vec<usize> = (0..n).filter(|i| !victims.contains(i)).collect();
    let mut everyone_at: Vec<Option<Duration>> = vec![None; victims.len()];
    let start = sim.now();
    let mut t = start;
    let mut p = 0;
    while everyone_at.iter().any(Option::is_none) {
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
        if t > start + 200 * PERIOD {
            return Err("crashes not detected by everyone within 200 periods".into());
        }
    }
    let periods = |v: &[Option<Duration>]| -> Vec<f64> {
        v.iter()
            .map(|d| d.unwrap_or(Duration::MAX).as_secs_f64() / PERIOD.as_secs_f64())
            .collect()
    };
    let (mut s, mut f, mut a) = (
        periods(&tr.first_suspect),
        periods(&tr.first_failed),
        periods(&everyone_at),
    );
    // Dissemination: from the first declaration to the last live member's.
    let mut d: Vec<f64> = a.iter().zip(&f).map(|(a, f)| a - f).collect();
    println!(
        "10 crashes, periods after the crash (median / max): first suspicion {:.2} / {:.2}; first failure \
         declaration {:.1} / {:.1}; declared failed by every live member {:.1} / {:.1} (to the period), i.e. \
         dissemination {:.1} / {:.1} periods after the first declaration; false failures {}; {:.1}s wall",
        quantile(&mut s, 0.5),
        quantile(&mut s, 1.0),
        quantile(&mut f, 0.5),
        quantile(&mut f, 1.0),
        quantile(&mut a, 0.5),
        quantile(&mut a, 1.0),
        quantile(&mut d, 0.5),
        quantile(&mut d, 1.0),
        tr.false_failures,
        wall.elapsed().as_secs_f64()
    );
    println!(
        "memory at the end: {:.0} MiB; peak: {:.0} MiB",
        rss() as f64 / 1048576.0,
        status_bytes("VmHWM:") as f64 / 1048576.0
    );
    if tr.false_failures > 0 {
        return Err(format!(
            "{} live members declared failed",
            tr.false_failures
        ));
    }
    Ok(())
}
