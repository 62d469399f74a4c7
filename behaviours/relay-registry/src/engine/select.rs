//! Relay selection: the score of a relay for a target, and the ranking [`find_relay`] and
//! auto relay use.
//!
//! # The scoring formula
//!
//! For a requester choosing a relay for `target` (auto relay: itself), each candidate relay
//! `r` gets a **weight**
//!
//! ```text
//! free(r)   = capacity(r) − current_load(r)          (0 for a full relay: never chosen)
//! w(r)      = free(r) × (R / (R + rtt(r)))²
//! ```
//!
//! where `rtt(r)` is the requester's cached ping round-trip time to `r` (or
//! [`ScoreParams::unknown_rtt`] while none was measured) and `R` is
//! [`ScoreParams::rtt_reference`] (50 ms by default): a relay `R` away weighs a quarter of one
//! next door, one `3R` away a sixteenth. RTT stands in for geographic proximity.
//!
//! The weight becomes a **score** by weighted rendezvous hashing:
//!
//! ```text
//! h(target, r) = first 8 bytes of SHA-256(target's peer id ‖ r's peer id), big-endian
//! u(target, r) = ((h >> 11) + ½) / 2⁵³                       (uniform in (0, 1))
//! score(r)     = w(r) / −ln u(target, r)
//! ```
//!
//! and relays are ranked by score, highest first; equal scores are ordered by peer id bytes
//! (ascending). The ranking is deterministic — the same inputs always give the same order —
//! yet differs between targets, and a relay ranks first for a share of targets equal to
//! `w(r) / Σ w` (the property of weighted rendezvous hashing: `−ln u / w` is exponentially
//! distributed with rate `w`, and the smallest of independent exponentials is the one with
//! rate `w` with probability `w / Σ w`). So requesters that see the same loads do not all
//! pile onto the emptiest relay: new reservations spread in proportion to free capacity
//! (which evens out `current_load / capacity` across relays), skewed toward low RTT.
//!
//! Filters before ranking: relays at full load, relays in [`FindOpts::exclude`], the target
//! itself, and relays whose RTT (measured, else the `unknown_rtt` estimate) is above
//! [`FindOpts::max_latency`].
//!
//! [`find_relay`]: crate::engine::RegistryEngine::find_relay

use std::cmp::Ordering;
use std::time::Duration;

use meshwire_core::PeerId;
use sha2::{Digest, Sha256};

use super::RelayInfo;

/// The constants of the scoring formula (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreParams {
    /// `R`: the RTT at which a relay's weight is a quarter of a zero-RTT one's (default
    /// 50 ms).
    pub rtt_reference: Duration,
    /// The RTT assumed for a relay not measured yet (default 200 ms), in the weight and in
    /// the [`FindOpts::max_latency`] filter.
    pub unknown_rtt: Duration,
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            rtt_reference: Duration::from_millis(50),
            unknown_rtt: Duration::from_millis(200),
        }
    }
}

/// Options of [`find_relay_with`](crate::engine::RegistryEngine::find_relay_with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindOpts {
    /// Most relays returned, best first (default 1).
    pub max_results: usize,
    /// Relays never returned.
    pub exclude: Vec<PeerId>,
    /// Relays whose RTT (measured, else [`ScoreParams::unknown_rtt`]) is above this are
    /// never returned (default: no bound).
    pub max_latency: Option<Duration>,
}

impl Default for FindOpts {
    fn default() -> Self {
        FindOpts {
            max_results: 1,
            exclude: Vec::new(),
            max_latency: None,
        }
    }
}

/// The RTT used for `relay` in the formula: measured, else the estimate.
pub fn effective_rtt(relay: &RelayInfo, params: &ScoreParams) -> Duration {
    relay.latency.unwrap_or(params.unknown_rtt)
}

/// `w(r)` of the [module docs](self): free slots times the RTT factor; 0 for a full relay.
pub fn weight(relay: &RelayInfo, params: &ScoreParams) -> f64 {
    let free = relay.capacity.saturating_sub(relay.current_load);
    if free == 0 {
        return 0.0;
    }
    let r = params.rtt_reference.as_secs_f64();
    let rtt = effective_rtt(relay, params).as_secs_f64();
    let factor = if r + rtt > 0.0 { r / (r + rtt) } else { 1.0 };
    f64::from(free) * factor * factor
}

/// `u(target, r)` of the [module docs](self), uniform in (0, 1).
pub fn rendezvous(target: &PeerId, relay: &PeerId) -> f64 {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update(relay.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let x = u64::from_be_bytes(first) >> 11;
    (x as f64 + 0.5) / (1u64 << 53) as f64
}

/// `score(r)` of the [module docs](self); 0 for a full relay.
pub fn score(relay: &RelayInfo, target: &PeerId, params: &ScoreParams) -> f64 {
    let w = weight(relay, params);
    if w <= 0.0 {
        return 0.0;
    }
    w / -rendezvous(target, &relay.node_id).ln()
}

/// Ranks `relays` for `target` under `opts` (filters, then score, highest first, ties by peer
/// id; at most `opts.max_results`), each with its score.
pub fn rank(
    relays: impl IntoIterator<Item = RelayInfo>,
    target: &PeerId,
    opts: &FindOpts,
    params: &ScoreParams,
) -> Vec<(RelayInfo, f64)> {
    let mut scored: Vec<(RelayInfo, f64)> = relays
        .into_iter()
        .filter(|r| r.node_id != *target && !opts.exclude.contains(&r.node_id))
        .filter(|r| {
            opts.max_latency
                .is_none_or(|max| effective_rtt(r, params) <= max)
        })
        .filter_map(|r| {
            let s = score(&r, target, params);
            (s > 0.0).then_some((r, s))
        })
        .collect();
    scored.sort_by(ranking_order);
    scored.truncate(opts.max_results);
    scored
}

/// The ranking order: higher score first, equal scores by peer id bytes, ascending.
fn ranking_order((a, sa): &(RelayInfo, f64), (b, sb): &(RelayInfo, f64)) -> Ordering {
    sb.partial_cmp(sa)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.node_id.as_bytes().cmp(b.node_id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;
    use std::time::UNIX_EPOCH;

    fn relay(seed: u64, capacity: u32, load: u32, rtt_ms: Option<u64>) -> RelayInfo {
        RelayInfo {
            node_id: Keypair::from_seed_for_tests(seed).peer_id(),
            endpoint: "/ip4/10.0.0.1/udp/1/quic-v1".parse().unwrap(),
            capacity,
            current_load: load,
            latency: rtt_ms.map(Duration::from_millis),
            registered_at: UNIX_EPOCH,
            expires_at: UNIX_EPOCH,
        }
    }

    fn peer(seed: u64) -> PeerId {
        Keypair::from_seed_for_tests(seed).peer_id()
    }

    #[test]
    fn registry_weight_formula() {
        let p = ScoreParams::default();
        assert_eq!(weight(&relay(1, 10, 10, Some(0)), &p), 0.0, "full");
        assert_eq!(weight(&relay(1, 10, 4, Some(0)), &p), 6.0);
        // One R away: a quarter.
        assert!((weight(&relay(1, 10, 4, Some(50)), &p) - 1.5).abs() < 1e-9);
        // Unknown RTT uses the estimate (200 ms = 4R: 1/25).
        assert!((weight(&relay(1, 10, 4, None), &p) - 6.0 / 25.0).abs() < 1e-9);
    }

    #[test]
    fn registry_rendezvous_is_uniform_and_deterministic() {
        let t = peer(1000);
        let r = peer(1);
        assert_eq!(rendezvous(&t, &r), rendezvous(&t, &r));
        assert_ne!(rendezvous(&t, &r), rendezvous(&peer(1001), &r));
        let n = 20_000;
        let mean: f64 = (0..n).map(|i| rendezvous(&peer(5000 + i), &r)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn registry_full_excluded_and_latency_filters() {
        let p = ScoreParams::default();
        let relays = vec![
            relay(1, 10, 10, Some(1)),
            relay(2, 10, 0, Some(100)),
            relay(3, 10, 0, None),
            relay(4, 10, 0, Some(5)),
        ];
        let t = peer(99);
        let all = FindOpts {
            max_results: 10,
            ..FindOpts::default()
        };
        let ids =
            |v: Vec<(RelayInfo, f64)>| v.into_iter().map(|(r, _)| r.node_id).collect::<Vec<_>>();
        let ranked = ids(rank(relays.clone(), &t, &all, &p));
        assert_eq!(ranked.len(), 3);
        assert!(!ranked.contains(&peer(1)), "a full relay is never chosen");
        let near = FindOpts {
            max_latency: Some(Duration::from_millis(150)),
            ..all.clone()
        };
        let ranked = ids(rank(relays.clone(), &t, &near, &p));
        assert_eq!(ranked.len(), 2);
        assert!(!ranked.contains(&peer(3)), "unknown RTT counts as 200 ms");
        let excl = FindOpts {
            exclude: vec![peer(4), peer(2)],
            ..all.clone()
        };
        assert_eq!(ids(rank(relays.clone(), &t, &excl, &p)), vec![peer(3)]);
        // The target is never its own relay.
        assert!(!ids(rank(relays, &peer(4), &all, &p)).contains(&peer(4)));
    }

    #[test]
    fn registry_ties_broken_by_peer_id() {
        let (a, b) = (relay(1, 10, 0, Some(1)), relay(2, 10, 0, Some(1)));
        let (lo, hi) = if a.node_id.as_bytes() < b.node_id.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let mut tied = [(hi.clone(), 2.5), (lo.clone(), 2.5), (hi.clone(), 3.0)];
        tied.sort_by(ranking_order);
        assert_eq!(tied[0], (hi.clone(), 3.0), "a higher score first");
        assert_eq!(tied[1], (lo, 2.5), "equal scores: smaller peer id first");
        assert_eq!(tied[2], (hi, 2.5));
    }

    #[test]
    fn registry_ranking_ignores_input_order() {
        let p = ScoreParams::default();
        let a = relay(1, 10, 0, Some(1));
        let b = relay(2, 10, 0, Some(1));
        let t = peer(7);
        let opts = FindOpts {
            max_results: 2,
            ..FindOpts::default()
        };
        let one = rank(vec![a.clone(), b.clone()], &t, &opts, &p);
        let two = rank(vec![b, a], &t, &opts, &p);
        assert_eq!(one, two, "order of input does not matter");
    }

    #[test]
    fn registry_share_follows_weight() {
        // Relays with free capacity 30, 20, 10 (same RTT): first choices over many targets
        // split 3:2:1.
        let p = ScoreParams::default();
        let relays = vec![
            relay(1, 40, 10, Some(10)),
            relay(2, 40, 20, Some(10)),
            relay(3, 40, 30, Some(10)),
        ];
        let mut counts = [0usize; 3];
        let n = 12_000;
        for i in 0..n {
            let best = rank(relays.clone(), &peer(10_000 + i), &FindOpts::default(), &p);
            let idx = relays
                .iter()
                .position(|r| r.node_id == best[0].0.node_id)
                .unwrap();
            counts[idx] += 1;
        }
        let share = |c: usize| c as f64 / n as f64;
        assert!((share(counts[0]) - 0.5).abs() < 0.02, "{counts:?}");
        assert!((share(counts[1]) - 1.0 / 3.0).abs() < 0.02, "{counts:?}");
        assert!((share(counts[2]) - 1.0 / 6.0).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn registry_lower_rtt_preferred() {
        // Same free capacity; 5 ms vs 150 ms: (55/55)²·(50/55)² vs (50/200)², about 13:1.
        let p = ScoreParams::default();
        let relays = vec![relay(1, 10, 0, Some(5)), relay(2, 10, 0, Some(150))];
        let near = (0..2000)
            .filter(|i| {
                rank(relays.clone(), &peer(20_000 + i), &FindOpts::default(), &p)[0]
                    .0
                    .node_id
                    == peer(1)
            })
            .count();
        let expected = 2000.0 * (50.0f64 / 55.0).powi(2)
            / ((50.0f64 / 55.0).powi(2) + (50.0f64 / 200.0).powi(2));
        assert!(
            (near as f64 - expected).abs() < 60.0,
            "{near} vs {expected}"
        );
    }
}
