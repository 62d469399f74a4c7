//! The two standard runs of the simulator and their [`Report`]:
//!
//! - [`ChurnRun`]: every node honest, RPCs lost at random (10 % by default), and a share of
//!   the nodes (20 %) crashing during the publishing phase and joining again 2–8 s later.
//! - [`SybilRun`]: a share of the nodes (25 %) are Sybils, the attacks spread evenly among
//!   them ([`Attack::ALL`]), and honest nodes score their peers ([`sim_score_params`]).
//!
//! A message counts for an honest node when the node was online from `warmup` before its
//! publication to `grace` after it (a node that has just joined has had no heartbeat to
//! build its mesh; one about to leave cannot be asked to have it): delivery is the share of
//! those (message, node) pairs with the message, duplicates are the copies of published
//! messages reaching honest nodes beyond the first, per first copy, and latency is the time
//! from publication to the first copy, in virtual milliseconds and heartbeats.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{Attack, Sim, SimConfig, SimCounters};
use crate::engine::{PeerScoreParams, TopicHash, TopicScoreParams};

/// Peer scoring for the simulated topic, sized for a few messages per second: P1 up to +1
/// after 10 s in the mesh; P2 +1 per first delivery (decay 0.9/s, cap 20); P3 a mesh peer
/// delivering fewer than 2 (decaying 0.9/s) messages, first or within 500 ms of the first,
/// costs −4 × deficit² once 10 s in the mesh (longer than the quiet start of a run: an
/// honest peer pruned for oversubscription before any message must not carry a deficit),
/// and P3b keeps that on PRUNE (decay 0.95/s); P4
/// −10 × invalid²; P7 (defaults) −10 × penalties² (GRAFT in backoff, broken IWANT promises).
/// With the default thresholds a silent mesh peer falls to −16 (below the gossip threshold)
/// and three invalid messages graylist a peer.
pub fn sim_score_params(topic: &TopicHash) -> PeerScoreParams {
    let mut params = PeerScoreParams::default();
    params.topics.insert(
        topic.clone(),
        TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.1,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 10.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.9,
            first_message_deliveries_cap: 20.0,
            mesh_message_deliveries_weight: -4.0,
            mesh_message_deliveries_decay: 0.9,
            mesh_message_deliveries_cap: 100.0,
            mesh_message_deliveries_threshold: 2.0,
            mesh_message_deliveries_window: Duration::from_millis(500),
            mesh_message_deliveries_activation: Duration::from_secs(10),
            mesh_failure_penalty_weight: -4.0,
            mesh_failure_penalty_decay: 0.95,
            invalid_message_deliveries_weight: -10.0,
            invalid_message_deliveries_decay: 0.9,
        },
    );
    params
}

/// Honest nodes under loss and churn.
#[derive(Clone, Debug)]
pub struct ChurnRun {
    /// The simulation (nodes, seed, loss, latency, engine configuration).
    pub sim: SimConfig,
    /// The share of nodes that leave and join again during the publishing phase.
    pub churn: f64,
    /// How long a leaving node stays away, uniform in `[min, max]`.
    pub downtime: (Duration, Duration),
    /// Messages published, by random online nodes.
    pub messages: usize,
    /// Messages published per second of virtual time.
    pub rate: f64,
}

impl ChurnRun {
    /// `nodes` nodes, 10 % of RPCs lost, 20 % of nodes leaving for 2–8 s, `messages`
    /// messages at 5 per second.
    pub fn new(nodes: usize, seed: u64, messages: usize) -> Self {
        ChurnRun {
            sim: SimConfig {
                loss: 0.10,
                ..SimConfig::new(nodes, seed)
            },
            churn: 0.20,
            downtime: (Duration::from_secs(2), Duration::from_secs(8)),
            messages,
            rate: 5.0,
        }
    }

    /// Runs it.
    pub fn run(&self) -> Report {
        let mut sim = Sim::new(self.sim.clone());
        sim.start();
        sim.run_for(SETTLE);
        let n = sim.len();
        let period = Duration::from_secs_f64(1.0 / self.rate);
        let phase = period * self.messages as u32;
        // Actions: publications every `period`; leaves at random times of the phase, each
        // node at most once; joins after the downtime.
        let mut actions: BTreeMap<(Duration, u64), Action> = BTreeMap::new();
        let mut seq = 0u64;
        let mut add = |actions: &mut BTreeMap<_, _>, at: Duration, a: Action| {
            seq += 1;
            actions.insert((at, seq), a);
        };
        for k in 0..self.messages {
            add(&mut actions, period * k as u32, Action::Publish);
        }
        let leavers = ((n as f64) * self.churn).round() as usize;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, sim.random_below(i + 1));
        }
        let (lo, hi) = self.downtime;
        for &i in order.iter().take(leavers) {
            let at = phase.mul_f64(sim.random_below(10_000) as f64 / 10_000.0);
            let down = lo + (hi - lo).mul_f64(sim.random_below(10_000) as f64 / 10_000.0);
            add(&mut actions, at, Action::Leave(i));
            add(&mut actions, at + down, Action::Join(i));
        }
        let base = sim.elapsed();
        for ((at, _), action) in actions {
            let target = base + at;
            if target > sim.elapsed() {
                sim.run_for(target - sim.elapsed());
            }
            match action {
                Action::Publish => {
                    // A random online node with peers (retrying a few draws).
                    for _ in 0..16 {
                        let i = sim.random_below(n);
                        if sim.is_online(i) && sim.publish(i).is_some() {
                            break;
                        }
                    }
                }
                Action::Leave(i) => {
                    sim.leave(i);
                }
                Action::Join(i) => {
                    sim.join(i);
                }
            }
        }
        sim.run_for(DRAIN);
        let label = format!(
            "churn: {} nodes, {:.0} % RPC loss, {:.0} % of nodes left and joined again",
            n,
            self.sim.loss * 100.0,
            self.churn * 100.0
        );
        Report::measure(&sim, label)
    }
}

enum Action {
    Publish,
    Leave(usize),
    Join(usize),
}

/// Time given to meshes to form before the first publication.
const SETTLE: Duration = Duration::from_secs(5);
/// Time after the last publication before measuring (beyond [`GRACE`]).
const DRAIN: Duration = Duration::from_secs(10);
/// A node counts for a message only if online this long before it was published...
const WARMUP_HEARTBEATS: u32 = 2;
/// ... and this long after.
const GRACE: Duration = Duration::from_secs(5);

/// Honest nodes among Sybils.
#[derive(Clone, Debug)]
pub struct SybilRun {
    /// The simulation (nodes, seed, latency, engine configuration: scoring is set by
    /// [`Self::new`]).
    pub sim: SimConfig,
    /// The share of nodes that are Sybils (the last ones, attacks in [`Attack::ALL`] order).
    pub sybils: f64,
    /// Messages published, by random honest nodes.
    pub messages: usize,
    /// Messages published per second of virtual time.
    pub rate: f64,
}

impl SybilRun {
    /// `nodes` nodes, 25 % of them Sybils, scoring on ([`sim_score_params`]), no loss,
    /// `messages` messages at 2 per second.
    pub fn new(nodes: usize, seed: u64, messages: usize) -> Self {
        let mut sim = SimConfig::new(nodes, seed);
        sim.gossipsub.score_params = Some(sim_score_params(&sim.topic));
        SybilRun {
            sim,
            sybils: 0.25,
            messages,
            rate: 2.0,
        }
    }

    /// The same run with scoring off (to compare).
    pub fn without_scoring(mut self) -> Self {
        self.sim.gossipsub.score_params = None;
        self
    }

    /// Runs it.
    pub fn run(&self) -> Report {
        let mut sim = Sim::new(self.sim.clone());
        let n = sim.len();
        let sybils = ((n as f64) * self.sybils).round() as usize;
        let honest = n - sybils;
        for (k, i) in (honest..n).enumerate() {
            sim.set_sybil(i, Attack::ALL[k % Attack::ALL.len()]);
        }
        sim.start();
        sim.run_for(SETTLE);
        let share_before = sybil_mesh_share(&sim);
        let period = Duration::from_secs_f64(1.0 / self.rate);
        for _ in 0..self.messages {
            for _ in 0..16 {
                let i = sim.random_below(honest);
                if sim.publish(i).is_some() {
                    break;
                }
            }
            sim.run_for(period);
        }
        // Scores while the topic is busy (in a quiet topic P3 pushes every mesh peer below
        // its delivery quota, by design).
        let (honest_scores, sybil_scores) = scores(&sim);
        let share_after = sybil_mesh_share(&sim);
        sim.run_for(DRAIN);
        let label = format!(
            "sybil: {} nodes, {} Sybils ({:.0} %: silent, invalid spam, GRAFT spam, IWANT \
             flood), scoring {}",
            n,
            sybils,
            self.sybils * 100.0,
            if self.sim.gossipsub.score_params.is_some() {
                "on"
            } else {
                "off"
            }
        );
        let mut report = Report::measure(&sim, label);
        report.sybil_mesh_share = Some((share_before, share_after));
        report.honest_scores = honest_scores;
        report.sybil_scores = sybil_scores;
        report
    }
}

/// The scores online honest nodes give their honest peers and their Sybil peers (per
/// attack); `None` and empty when scoring is off.
fn scores(sim: &Sim) -> (Option<Summary>, Vec<(Attack, Summary)>) {
    if sim.config().gossipsub.score_params.is_none() {
        return (None, Vec::new());
    }
    let (mut honest, mut sybil): (Vec<f64>, BTreeMap<Attack, Vec<f64>>) =
        (Vec::new(), BTreeMap::new());
    for i in 0..sim.len() {
        if sim.sybil(i).is_some() || !sim.is_online(i) {
            continue;
        }
        for j in sim.links(i) {
            let Some(score) = sim.engine(i).peer_score(&sim.peer_id(j)) else {
                continue;
            };
            match sim.sybil(j) {
                Some(a) => sybil.entry(a).or_default().push(score),
                None => honest.push(score),
            }
        }
    }
    (
        Some(Summary::of(honest)),
        sybil
            .into_iter()
            .map(|(a, v)| (a, Summary::of(v)))
            .collect(),
    )
}

/// The share of Sybils among honest nodes' mesh peers.
fn sybil_mesh_share(sim: &Sim) -> f64 {
    let topic = &sim.config().topic;
    let (mut total, mut sybil) = (0usize, 0usize);
    for i in 0..sim.len() {
        if sim.sybil(i).is_some() || !sim.is_online(i) {
            continue;
        }
        for p in sim.engine(i).mesh_peers(topic) {
            total += 1;
            if sim.node_of(p).and_then(|j| sim.sybil(j)).is_some() {
                sybil += 1;
            }
        }
    }
    if total == 0 {
        0.0
    } else {
        sybil as f64 / total as f64
    }
}

/// A distribution's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// The summary of `values` (all zero when empty).
    pub fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Summary {
            count: values.len(),
            min: values[0],
            p10: at(0.10),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min {:.1} p10 {:.1} p50 {:.1} p90 {:.1} max {:.1}",
            self.count, self.min, self.p10, self.p50, self.p90, self.max
        )
    }
}

/// What a run measured (see the [module docs](self) for the definitions).
#[derive(Clone, Debug)]
pub struct Report {
    /// What was run.
    pub label: String,
    /// Messages published.
    pub messages: usize,
    /// (message, honest node) pairs that count.
    pub expected: u64,
    /// Of those, the pairs where the node has the message.
    pub delivered: u64,
    /// Copies of published messages reaching honest nodes beyond the first, per first copy.
    pub duplicates_per_delivery: f64,
    /// Publication to first copy, virtual milliseconds, over the delivered pairs.
    pub latency_ms: Summary,
    /// The heartbeat interval (latency in heartbeats is `latency_ms` over it).
    pub heartbeat: Duration,
    /// Scores honest nodes give their honest peers (scoring on), at the end of the
    /// publishing phase.
    pub honest_scores: Option<Summary>,
    /// Scores honest nodes give their Sybil peers, per attack (scoring on, Sybils present),
    /// at the end of the publishing phase.
    pub sybil_scores: Vec<(Attack, Summary)>,
    /// The share of Sybils among honest nodes' mesh peers when publishing began and when it
    /// ended (Sybil runs).
    pub sybil_mesh_share: Option<(f64, f64)>,
    /// The network counters.
    pub counters: SimCounters,
}

impl Report {
    /// Measures `sim` after a run.
    fn measure(sim: &Sim, label: String) -> Report {
        let heartbeat = sim.config().gossipsub.heartbeat_interval;
        let warmup = heartbeat * WARMUP_HEARTBEATS;
        let (mut expected, mut delivered, mut firsts) = (0u64, 0u64, 0u64);
        let mut latencies = Vec::new();
        for p in sim.published() {
            for (i, first) in p.first.iter().enumerate() {
                if i == p.publisher || sim.sybil(i).is_some() {
                    continue;
                }
                if first.is_some() {
                    firsts += 1;
                }
                let from = p.at.saturating_sub(warmup);
                if !sim.online_throughout(i, from, p.at + GRACE) {
                    continue;
                }
                expected += 1;
                if let Some(t) = first {
                    delivered += 1;
                    latencies.push((*t - p.at).as_secs_f64() * 1000.0);
                }
            }
        }
        let arrivals = sim.counters().message_arrivals;
        let duplicates_per_delivery = if firsts == 0 {
            0.0
        } else {
            arrivals.saturating_sub(firsts) as f64 / firsts as f64
        };
        Report {
            label,
            messages: sim.published().len(),
            expected,
            delivered,
            duplicates_per_delivery,
            latency_ms: Summary::of(latencies),
            heartbeat,
            honest_scores: None,
            sybil_scores: Vec::new(),
            sybil_mesh_share: None,
            counters: sim.counters().clone(),
        }
    }

    /// Delivered over expected (1 when nothing was expected).
    pub fn delivery_rate(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.delivered as f64 / self.expected as f64
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hb = self.heartbeat.as_secs_f64() * 1000.0;
        writeln!(f, "{}", self.label)?;
        writeln!(
            f,
            "  delivery {:.3} % ({} of {} (message, honest node) pairs, {} messages)",
            self.delivery_rate() * 100.0,
            self.delivered,
            self.expected,
            self.messages
        )?;
        writeln!(
            f,
            "  duplicates per delivered message {:.2}",
            self.duplicates_per_delivery
        )?;
        writeln!(
            f,
            "  latency p50 {:.0} ms ({:.2} heartbeats), p99 {:.0} ms ({:.2} heartbeats), max {:.0} ms",
            self.latency_ms.p50,
            self.latency_ms.p50 / hb,
            self.latency_ms.p99,
            self.latency_ms.p99 / hb,
            self.latency_ms.max
        )?;
        if let Some(h) = &self.honest_scores {
            writeln!(f, "  scores of honest peers: {h}")?;
        }
        for (attack, s) in &self.sybil_scores {
            writeln!(f, "  scores of Sybils ({attack:?}): {s}")?;
        }
        if let Some((before, after)) = self.sybil_mesh_share {
            writeln!(
                f,
                "  Sybils among honest mesh peers: {:.1} % when publishing began, {:.1} % when it ended",
                before * 100.0,
                after * 100.0
            )?;
        }
        let c = &self.counters;
        write!(
            f,
            "  RPCs {} sent, {} lost, {} to offline nodes; {} left, {} joined; {} attack RPCs, \
             {} messages sent to Sybils",
            c.rpcs_sent,
            c.rpcs_lost,
            c.rpcs_to_offline,
            c.leaves,
            c.joins,
            c.attack_rpcs,
            c.messages_to_sybils
        )
    }
}
