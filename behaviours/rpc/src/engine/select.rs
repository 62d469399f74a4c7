//! Provider selection: [`Strategy`], the built-in strategies, and the [`Selector`] trait
//! for more.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use meshwire_core::PeerId;
use rand::Rng;

use crate::name::ProcedureName;

/// A provider the strategy may pick, with what the engine knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The provider.
    pub peer: PeerId,
    /// Whether it is this node (a local handler).
    pub is_local: bool,
    /// The latency estimate: a peak EWMA of its call latencies (a slower sample replaces
    /// it, faster ones decay into it with weight 0.3), seeded by ping's RTT; `None` before
    /// either is known.
    pub latency: Option<Duration>,
    /// Our calls to it under way.
    pub outstanding: usize,
}

/// A pluggable selection strategy ([`Strategy::Custom`]).
pub trait Selector: Send + Sync + fmt::Debug {
    /// The index in `candidates` (never empty, sorted by peer id) of the provider to call.
    /// An index out of range falls back to the first candidate.
    fn select(&self, name: &ProcedureName, candidates: &[Candidate]) -> usize;
}

/// How a call picks among the providers of its name.
#[derive(Debug, Clone, Default)]
pub enum Strategy {
    /// In turn, per name (even within ±1 while the provider set is stable).
    #[default]
    RoundRobin,
    /// Uniformly at random (from the engine's seeded generator).
    Random,
    /// The lowest latency estimate ([`Candidate::latency`]); a provider with no estimate is
    /// tried first, one call at a time, to measure it.
    LeastLatency,
    /// The fewest of our calls under way, ties in turn.
    LeastOutstanding,
    /// This node's own handler if it has one, else round robin.
    LocalFirst,
    /// A strategy of the application's.
    Custom(Arc<dyn Selector>),
}

impl Strategy {
    /// A label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastLatency => "least_latency",
            Strategy::LeastOutstanding => "least_outstanding",
            Strategy::LocalFirst => "local_first",
            Strategy::Custom(_) => "custom",
        }
    }
}

/// Picks among `candidates` (non-empty): `turn` is the name's round-robin counter (advanced
/// by the caller).
pub(crate) fn select(
    strategy: &Strategy,
    name: &ProcedureName,
    candidates: &[Candidate],
    turn: usize,
    rng: &mut impl Rng,
) -> usize {
    let n = candidates.len();
    let round_robin = turn % n;
    let pick = match strategy {
        Strategy::RoundRobin => round_robin,
        Strategy::Random => rng.gen_range(0..n),
        Strategy::LeastLatency => {
            let estimate = |c: &Candidate| match c.latency {
                Some(l) => l,
                // Unmeasured: tried first, but only one call at a time.
                None if c.outstanding == 0 => Duration::ZERO,
                None => Duration::MAX,
            };
            (0..n)
                .min_by_key(|&i| {
                    let c = &candidates[(i + round_robin) % n];
                    (estimate(c), c.outstanding)
                })
                .map_or(0, |i| (i + round_robin) % n)
        }
        Strategy::LeastOutstanding => (0..n)
            .min_by_key(|&i| candidates[(i + round_robin) % n].outstanding)
            .map_or(0, |i| (i + round_robin) % n),
        Strategy::LocalFirst => candidates
            .iter()
            .position(|c| c.is_local)
            .unwrap_or(round_robin),
        Strategy::Custom(s) => s.select(name, candidates),
    };
    if pick < n {
        pick
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cands(latencies: &[Option<u64>], outstanding: &[usize]) -> Vec<Candidate> {
        latencies
            .iter()
            .zip(outstanding)
            .enumerate()
            .map(|(i, (l, o))| Candidate {
                peer: meshwire_core::Keypair::from_seed_for_tests(i as u64).peer_id(),
                is_local: i == 2,
                latency: l.map(Duration::from_millis),
                outstanding: *o,
            })
            .collect()
    }

    #[test]
    fn each_strategy_picks_as_documented() {
        let name = ProcedureName::new("org.x.y").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = cands(&[Some(30), Some(5), Some(10)], &[0, 4, 1]);
        let picks: Vec<usize> = (0..6)
            .map(|t| select(&Strategy::RoundRobin, &name, &c, t, &mut rng))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(select(&Strategy::LeastLatency, &name, &c, 0, &mut rng), 1);
        assert_eq!(
            select(&Strategy::LeastOutstanding, &name, &c, 0, &mut rng),
            0
        );
        assert_eq!(select(&Strategy::LocalFirst, &name, &c, 0, &mut rng), 2);
        // Unmeasured providers are measured first, one call at a time.
        let c = cands(&[Some(5), None, None], &[0, 1, 0]);
        assert_eq!(select(&Strategy::LeastLatency, &name, &c, 0, &mut rng), 2);
        let mut seen = [0; 3];
        for t in 0..300 {
            seen[select(&Strategy::Random, &name, &c, t, &mut rng)] += 1;
        }
        assert!(seen.iter().all(|&s| s > 50), "{seen:?}");
    }

    #[derive(Debug)]
    struct Last;
    impl Selector for Last {
        fn select(&self, _: &ProcedureName, c: &[Candidate]) -> usize {
            c.len() - 1
        }
    }

    #[derive(Debug)]
    struct OutOfRange;
    impl Selector for OutOfRange {
        fn select(&self, _: &ProcedureName, _: &[Candidate]) -> usize {
            99
        }
    }

    #[test]
    fn custom_selectors_plug_in_and_out_of_range_falls_back() {
        let name = ProcedureName::new("org.x.y").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = cands(&[None, None, None], &[0, 0, 0]);
        let last = Strategy::Custom(Arc::new(Last));
        assert_eq!(select(&last, &name, &c, 0, &mut rng), 2);
        let bad = Strategy::Custom(Arc::new(OutOfRange));
        assert_eq!(select(&bad, &name, &c, 0, &mut rng), 0);
    }
}
