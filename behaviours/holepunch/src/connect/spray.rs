//! The birthday spray, sans-IO: its numbers ([`SprayConfig`], with the probability model),
//! the prober's paced schedule of random ports ([`ProbeSchedule`]) and the probe datagram
//! ([`probe_payload`], [`is_probe`]).
//!
//! A NAT with random per-destination mapping (APDM, "symmetric random") facing one with
//! endpoint-independent mapping and address-and-port filtering (port-restricted cone) gives
//! DCUtR nothing to aim at: the symmetric side's mapping towards the cone is a random port
//! of `R` (64,512 for Linux's `1024–65535`). The spray turns it into a birthday problem:
//!
//! 1. the **sprayer** (symmetric side) opens `K` sockets and sends one datagram from each
//!    to the prober's public address: its NAT opens `K` mappings at random ports, all
//!    towards the prober (the prober's NAT drops these datagrams; they only open mappings);
//! 2. the **prober** (cone side) sends `N` probes from its listening socket to random
//!    ports of the sprayer's public IP: each one opens its own NAT for answers from that
//!    port, and a probe that lands on one of the `K` ports is let in by the sprayer's NAT
//!    (it is the answer that mapping expects) and reaches one of the sprayer's sockets;
//! 3. that socket carries the QUIC connection: the sprayer dials the prober from it, its
//!    NAT uses the mapping the probe hit, the prober's NAT knows the port from the probe.
//!
//! With `N` distinct random probe ports and `K` random mapped ports among `R`, the chance
//! that no probe hits is `(1 − K/R)^N`, so `P(hit) ≈ 1 − exp(−K·N/R)`
//! ([`SprayConfig::hit_probability`]); the defaults (K = 256, N = 768, R = 64,512) give
//! 95 %. The packet budget is `K + N` datagrams ([`SprayConfig::packet_budget`]: 1,024 of
//! 16 bytes + headers, about 45 KB) and `N / rate` seconds of probing (0.4 s).

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::wire::SprayParams;

/// Sockets (mappings) a sprayer opens at most, whatever was asked.
pub const MAX_SOCKETS: u16 = 1024;
/// Probes a prober sends at most, whatever was asked.
pub const MAX_PROBES: u16 = 8192;
/// Probes per second at most, whatever was asked.
pub const MAX_RATE: u32 = 20_000;
/// The longest spray window, whatever was asked.
pub const MAX_WINDOW: Duration = Duration::from_secs(30);
/// The probe datagram's first 8 bytes.
pub const PROBE_MAGIC: [u8; 8] = *b"MWSPRAY1";

/// The spray's numbers: what we propose when we open the spray stream, and the limits we
/// clamp the other side's proposal to ([`SprayConfig::agree`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SprayConfig {
    /// Mappings the sprayer opens, K (default 256, at most [`MAX_SOCKETS`]).
    pub sockets: u16,
    /// Probes the prober sends, N (default 768, at most [`MAX_PROBES`]).
    pub probes: u16,
    /// Probes per second (default 2,000, at most [`MAX_RATE`]).
    pub rate: u32,
    /// The ports probed, the NAT's allocation range R (default 1024–65535, Linux's).
    pub ports: RangeInclusive<u16>,
    /// How long the spray runs after `READY`: the sprayer waits this long for a probe, the
    /// prober for the direct connection (default 8 s, at most [`MAX_WINDOW`]).
    pub window: Duration,
}

impl Default for SprayConfig {
    fn default() -> Self {
        SprayConfig {
            sockets: 256,
            probes: 768,
            rate: 2000,
            ports: 1024..=65535,
            window: Duration::from_secs(8),
        }
    }
}

impl SprayConfig {
    /// R: ports in [`SprayConfig::ports`].
    pub fn range_size(&self) -> u32 {
        u32::from(*self.ports.end()).saturating_sub(u32::from(*self.ports.start())) + 1
    }

    /// `1 − exp(−K·N/R)`: the chance a probe hits one of the mappings.
    pub fn hit_probability(&self) -> f64 {
        let kn = f64::from(self.sockets) * f64::from(self.probes);
        1.0 - (-kn / f64::from(self.range_size().max(1))).exp()
    }

    /// Datagrams the spray sends, both sides: `K + N`.
    pub fn packet_budget(&self) -> u32 {
        u32::from(self.sockets) + u32::from(self.probes)
    }

    /// Time the prober takes to send its `N` probes.
    pub fn probing_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.probes) / f64::from(self.rate.max(1)))
    }

    /// These numbers as proposed on the wire.
    pub fn params(&self) -> SprayParams {
        SprayParams {
            sockets: self.sockets,
            probes: self.probes,
            rate: self.rate,
            port_lo: *self.ports.start(),
            port_hi: *self.ports.end(),
            window_ms: u32::try_from(self.window.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// The numbers both sides use: the remote's proposal `p` (or ours, when we proposed),
    /// each clamped to our own configuration and the hard maxima; the port range is the
    /// proposal's intersected with ours (so never below ours, 1024 by default), and becomes
    /// ours when that is empty.
    pub fn agree(&self, p: &SprayParams) -> SprayConfig {
        let lo = p.port_lo.max(*self.ports.start()).max(1);
        let hi = p.port_hi.min(*self.ports.end());
        let ports = if lo <= hi {
            lo..=hi
        } else {
            self.ports.clone()
        };
        SprayConfig {
            sockets: p.sockets.min(self.sockets).min(MAX_SOCKETS),
            probes: p.probes.min(self.probes).min(MAX_PROBES),
            rate: p.rate.clamp(1, self.rate.clamp(1, MAX_RATE)),
            ports,
            window: Duration::from_millis(u64::from(p.window_ms))
                .min(self.window)
                .min(MAX_WINDOW),
        }
    }
}

/// The probe datagram of spray session `nonce`: [`PROBE_MAGIC`] and the nonce, 16 bytes
/// (too short for QUIC to answer it with a stateless reset).
pub fn probe_payload(nonce: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&PROBE_MAGIC);
    p[8..].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// Whether `datagram` is a probe of session `nonce`.
pub fn is_probe(datagram: &[u8], nonce: u64) -> bool {
    datagram == probe_payload(nonce)
}

/// splitmix64: a small seeded generator (the engine takes no randomness of its own).
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The prober's schedule: `N` distinct random ports of the range, one every `1/rate`
/// seconds from `start`. Inputs: `poll_transmit(now)` hands out the ports that are due;
/// `poll_timeout` tells when the next one is.
#[derive(Clone, Debug)]
pub struct ProbeSchedule {
    rng: SplitMix,
    lo: u32,
    size: u32,
    total: u32,
    sent: u32,
    used: HashSet<u16>,
    start: Instant,
    interval: Duration,
}

impl ProbeSchedule {
    /// The schedule of `config` (its `probes`, `rate`, `ports`) from `start`, the ports
    /// drawn from `seed`.
    pub fn new(config: &SprayConfig, seed: u64, start: Instant) -> Self {
        let size = config.range_size();
        ProbeSchedule {
            rng: SplitMix(seed),
            lo: u32::from(*config.ports.start()),
            size,
            total: u32::from(config.probes.min(MAX_PROBES)).min(size),
            sent: 0,
            used: HashSet::new(),
            start,
            interval: Duration::from_secs_f64(1.0 / f64::from(config.rate.clamp(1, MAX_RATE))),
        }
    }

    /// Probes handed out so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Whether every probe was handed out.
    pub fn is_done(&self) -> bool {
        self.sent >= self.total
    }

    /// When the next probe is due; `None` when done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_done()).then(|| self.start + self.interval * self.sent)
    }

    /// The next port to probe if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<u16> {
        if self.poll_timeout()? > now {
            return None;
        }
        loop {
            let port = self.lo + (self.rng.next() % u64::from(self.size)) as u32;
            let port = u16::try_from(port).unwrap_or(u16::MAX);
            if self.used.insert(port) {
                self.sent += 1;
                return Some(port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probability_model_and_budget() {
        let c = SprayConfig::default();
        assert_eq!(c.range_size(), 64_512);
        let p = c.hit_probability();
        assert!((0.95..0.96).contains(&p), "{p}");
        assert_eq!(c.packet_budget(), 1024);
        assert_eq!(c.probing_time(), Duration::from_millis(384));
        let half = SprayConfig {
            sockets: 64,
            probes: 699,
            ..c.clone()
        };
        // K·N = R·ln 2 → one half.
        assert!((half.hit_probability() - 0.5).abs() < 0.01);
        // Checked by simulation: K random ports, N distinct random probes.
        let mut rng = SplitMix(7);
        let (runs, mut hits) = (400, 0);
        for run in 0..runs {
            let k: HashSet<u16> = (0..c.sockets)
                .map(|_| (1024 + rng.next() % 64_512) as u16)
                .collect();
            let mut s = ProbeSchedule::new(&c, run, Instant::now());
            let now = Instant::now() + Duration::from_secs(10);
            if std::iter::from_fn(|| s.poll_transmit(now)).any(|port| k.contains(&port)) {
                hits += 1;
            }
        }
        let rate = f64::from(hits) / f64::from(runs as u32);
        assert!((rate - p).abs() < 0.04, "simulated {rate}, model {p}");
    }

    #[test]
    fn the_schedule_is_paced_distinct_in_range_and_bounded() {
        let c = SprayConfig {
            probes: 100,
            rate: 1000,
            ports: 40000..=40199,
            ..SprayConfig::default()
        };
        let t0 = Instant::now();
        let mut s = ProbeSchedule::new(&c, 1, t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        assert!(s.poll_transmit(t0).is_some());
        assert_eq!(s.poll_transmit(t0), None, "the second is due 1 ms later");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(1)));
        let late = t0 + Duration::from_secs(1);
        let rest: Vec<u16> = std::iter::from_fn(|| s.poll_transmit(late)).collect();
        assert_eq!(rest.len(), 99);
        assert!(s.is_done() && s.poll_timeout().is_none());
        let distinct: HashSet<u16> = rest.iter().copied().collect();
        assert_eq!(distinct.len(), 99);
        assert!(rest.iter().all(|p| c.ports.contains(p)));
        // More probes than ports: as many as there are ports.
        let tiny = SprayConfig {
            probes: 50,
            ports: 7000..=7009,
            ..c
        };
        let mut s = ProbeSchedule::new(&tiny, 3, t0);
        assert_eq!(std::iter::from_fn(|| s.poll_transmit(late)).count(), 10);
    }

    #[test]
    fn agreement_clamps_to_our_limits_and_probes_are_recognised() {
        let ours = SprayConfig::default();
        let greedy = SprayParams {
            sockets: 60_000,
            probes: 60_000,
            rate: 10_000_000,
            port_lo: 9,
            port_hi: 3,
            window_ms: u32::MAX,
        };
        let a = ours.agree(&greedy);
        assert_eq!((a.sockets, a.probes, a.rate), (256, 768, 2000));
        assert_eq!(a.ports, 1024..=65535, "an empty range becomes ours");
        assert_eq!(a.window, Duration::from_secs(8));
        let modest = SprayParams {
            sockets: 8,
            probes: 16,
            rate: 0,
            port_lo: 2000,
            port_hi: 3000,
            window_ms: 500,
        };
        let b = ours.agree(&modest);
        assert_eq!((b.sockets, b.probes, b.rate), (8, 16, 1));
        assert_eq!(
            (b.ports, b.window),
            (2000..=3000, Duration::from_millis(500))
        );
        assert_eq!(ours.agree(&ours.params()), ours);
        // A range reaching below ours is cut to ours: no probes at ports 1–1023.
        let low = SprayParams {
            port_lo: 1,
            port_hi: 5000,
            ..modest
        };
        assert_eq!(ours.agree(&low).ports, 1024..=5000);
        let wide = SprayParams {
            port_lo: 1,
            port_hi: 65535,
            ..modest
        };
        let narrow = SprayConfig {
            ports: 30000..=40000,
            ..SprayConfig::default()
        };
        assert_eq!(narrow.agree(&wide).ports, 30000..=40000);
        let below = SprayParams {
            port_lo: 1,
            port_hi: 1023,
            ..modest
        };
        assert_eq!(ours.agree(&below).ports, 1024..=65535, "no overlap: ours");
        assert!(is_probe(&probe_payload(5), 5));
        assert!(!is_probe(&probe_payload(5), 6));
        assert!(!is_probe(&probe_payload(5)[..15], 5));
    }
}
