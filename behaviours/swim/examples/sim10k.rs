//! The SWIM simulation at scale (default 10,000 members): a settled group with 10 % datagram
//! loss; measures datagrams per member per period, then crashes 10 members one every 3
//! periods and measures, in protocol periods after each crash, the first suspicion, the first
//! failure declaration and the time until every live member declared it failed
//! (dissemination); prints the memory per member and the wall time, the crash phase's
//! counters summed over the live nodes, and for every failure declaration of a live member
//! what became of its suspicion and refutation (docs/swim.md section 8).
//!
//! ```text
//! cargo run --release -p meshwire-swim --no-default-features --features sim --example sim10k [-- <members> [<seed> [<steady periods>]]]
//! ```
//!
//! `SIM10K_MTU=<bytes>` sets the MTU (smaller: fewer updates per datagram).
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
    peers: Vec<PeerId>,
    crashed_at: Vec<Duration>,
    first_suspect: Vec<Option<Duration>>,
    first_failed: Vec<Option<Duration>>,
    declared_by: Vec<HashSet<usize>>,
    false_failures: u64,
    false_suspicions: u64,
    diag: Diagnosis,
}

/// Why live members were declared failed: the suspicions, refutations and declarations
/// about live members, by member and incarnation.
#[derive(Default)]
struct Diagnosis {
    /// (member, incarnation) → first suspicion event, events, events raised by the node's
    /// own probe (accuser = the node itself).
    suspected: HashMap<(PeerId, u64), (Duration, u64, u64)>,
    /// member → times at which a node took a refutation (MemberRefuted), with the new
    /// incarnation.
    refuted: HashMap<PeerId, Vec<(Duration, u64)>>,
    /// (time, node, member, incarnation) of each failure event about a live member.
    failures: Vec<(Duration, usize, PeerId, u64)>,
    /// member → (incarnation, time first seen at that incarnation by the member itself).
    own_incarnation: HashMap<PeerId, Vec<(u64, Duration)>>,
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
                _ => {
                    self.false_suspicions += 1;
                    if let SwimEvent::MemberSuspected {
                        incarnation,
                        accuser,
                        ..
                    } = e
                    {
                        let own = u64::from(Some(accuser) == self.peers.get(node));
                        let s = self
                            .diag
                            .suspected
                            .entry((*peer, *incarnation))
                            .or_insert((at, 0, 0));
                        s.1 += 1;
                        s.2 += own;
                    }
                }
            },
            SwimEvent::MemberRefuted { member, .. } => {
                self.diag
                    .refuted
                    .entry(member.peer)
                    .or_default()
                    .push((at, member.incarnation));
            }
            SwimEvent::MemberFailed { peer, .. } => match self.victim_of.get(peer) {
                Some(&k) if k < crashed => {
                    self.first_failed[k].get_or_insert(at - self.crashed_at[k]);
                    self.declared_by[k].insert(node);
                }
                _ => {
                    self.false_failures += 1;
                    if let SwimEvent::MemberFailed { incarnation, .. } = e {
                        self.diag.failures.push((at, node, *peer, *incarnation));
                    }
                }
            },
            _ => {}
        }
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let steady: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
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
    if let Some(mtu) = std::env::var("SIM10K_MTU")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.swim.mtu = mtu;
    }
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
    let stats_sum = |sim: &Sim| -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("probes_failed", 0),
            ("suspicions_raised", 0),
            ("suspicion_confirmations", 0),
            ("hearsay_suspicions", 0),
            ("false_suspicions(refuted)", 0),
            ("refutations", 0),
            ("reannouncements", 0),
            ("failures_declared", 0),
            ("failures_kept_local", 0),
            ("updates_sent", 0),
            ("queued_updates(gauge)", 0),
            ("push_pulls_completed", 0),
        ];
        for i in 0..sim.len() {
            if sim.is_crashed(i) {
                continue;
            }
            let Some(st) = sim.engine(i).stats(sim.realm()) else {
                continue;
            };
            for (name, x) in v.iter_mut() {
                *x += match *name {
                    "probes_failed" => st.probes_failed,
                    "suspicions_raised" => st.suspicions_raised,
                    "suspicion_confirmations" => st.suspicion_confirmations,
                    "hearsay_suspicions" => st.hearsay_suspicions,
                    "false_suspicions(refuted)" => st.false_suspicions,
                    "refutations" => st.refutations,
                    "reannouncements" => st.reannouncements,
                    "failures_declared" => st.failures_declared,
                    "failures_kept_local" => st.failures_kept_local,
                    "updates_sent" => st.updates_sent,
                    "queued_updates(gauge)" => st.queued_updates as u64,
                    _ => st.push_pulls_completed,
                };
            }
        }
        v
    };
    let stats0 = stats_sum(&sim);
    let mut tr = Tracker {
        peers: (0..n).map(|i| sim.peer(i)).collect(),
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
        for &i in &alive {
            let inc = sim.engine(i).incarnation(sim.realm()).unwrap_or(0);
            let v = tr.diag.own_incarnation.entry(sim.peer(i)).or_default();
            if v.last().is_none_or(|&(j, _)| j != inc) {
                v.push((inc, sim.now()));
            }
        }
        for (k, at) in everyone_at.iter_mut().enumerate().take(tr.crashed_at.len()) {
            if at.is_none() && alive.iter().all(|i| tr.declared_by[k].contains(i)) {
                *at = Some(t - tr.crashed_at[k]);
            }
        }
        if t > start + 200 * PERIOD {
            return Err("crashes not detected by everyone within 200 periods".into());
        }
    }
    let stats1 = stats_sum(&sim);
    println!("crash phase, sums over live nodes (delta; gauges at the end):");
    for ((name, a), (_, b)) in stats0.iter().zip(&stats1) {
        println!("  {name}: {}", b.saturating_sub(*a));
    }
    report_false_failures(&tr, &sim);
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

/// Prints, for each member declared failed while alive, what happened to the suspicion.
fn report_false_failures(tr: &Tracker, sim: &Sim) {
    let d = &tr.diag;
    let mut by_member: HashMap<(PeerId, u64), Vec<(Duration, usize)>> = HashMap::new();
    for &(at, node, peer, inc) in &d.failures {
        by_member.entry((peer, inc)).or_default().push((at, node));
    }
    let mut keys: Vec<_> = by_member.keys().copied().collect();
    keys.sort_by_key(|k| by_member[k][0].0);
    println!(
        "false failure declarations: {} events about {} (member, incarnation) pairs",
        d.failures.len(),
        keys.len()
    );
    for key in keys {
        let (peer, inc) = key;
        let ev = &by_member[&key];
        let first_fail = ev[0].0;
        let susp = d.suspected.get(&key);
        let member = sim.index_of(&peer).unwrap_or(usize::MAX);
        let own = d.own_incarnation.get(&peer);
        // When the member itself first held an incarnation above the one declared failed.
        let refuted_at = own.and_then(|v| v.iter().find(|&&(j, _)| j > inc).map(|&(_, t)| t));
        let refutations_before = d.refuted.get(&peer).map_or(0, |v| {
            v.iter()
                .filter(|&&(t, j)| j > inc && t < first_fail)
                .count()
        });
        let members_at_inc: Vec<u64> = own.map_or(Vec::new(), |v| v.iter().map(|x| x.0).collect());
        println!(
            "  member {member} inc {inc}: {} failure events (first at {:.1}s, last {:.1}s); suspicion: {}; \
             member's incarnations seen {members_at_inc:?}, above {inc} at {}; \
             {refutations_before} nodes took a refutation before the first failure",
            ev.len(),
            first_fail.as_secs_f64(),
            ev[ev.len() - 1].0.as_secs_f64(),
            susp.map_or("none seen".to_string(), |s| format!(
                "first at {:.1}s ({:.1}s before), {} events, {} by own probe",
                s.0.as_secs_f64(),
                (first_fail - s.0).as_secs_f64(),
                s.1,
                s.2
            )),
            refuted_at.map_or("never".to_string(), |t| format!("{:.1}s", t.as_secs_f64())),
        );
    }
}
