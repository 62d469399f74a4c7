//! Property tests: random sequences of connects, disconnects, tags, protections, clock
//! steps and trims, checked against a simple model of what the manager may close.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use meshwire_connmgr::{BasicConnMgr, Config, ConnManager, Trimmed};
use meshwire_core::{ConnectionId, Direction, Keypair, PeerId};
use proptest::prelude::*;

const PEERS: usize = 12;
const GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Op {
    Connect { peer: usize, inbound: bool },
    Disconnect { pick: usize },
    Tag { peer: usize, value: i32 },
    Untag { peer: usize },
    Protect { peer: usize, tag: usize },
    Unprotect { peer: usize, tag: usize },
    Streams { pick: usize, n: usize },
    Advance { secs: u64 },
    Trim,
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PEERS, any::<bool>()).prop_map(|(peer, inbound)| Op::Connect { peer, inbound }),
        2 => any::<usize>().prop_map(|pick| Op::Disconnect { pick }),
        3 => (0..PEERS, -50i32..50).prop_map(|(peer, value)| Op::Tag { peer, value }),
        1 => (0..PEERS).prop_map(|peer| Op::Untag { peer }),
        2 => (0..PEERS, 0..2usize).prop_map(|(peer, tag)| Op::Protect { peer, tag }),
        2 => (0..PEERS, 0..2usize).prop_map(|(peer, tag)| Op::Unprotect { peer, tag }),
        1 => (any::<usize>(), 0..4usize).prop_map(|(pick, n)| Op::Streams { pick, n }),
        3 => (0..40u64).prop_map(|secs| Op::Advance { secs }),
        2 => Just(Op::Trim),
        2 => Just(Op::Poll),
    ]
}

/// What the swarm knows: open connections and protections.
#[derive(Default)]
struct Model {
    /// conn id -> (peer, opened)
    open: HashMap<u64, (usize, Instant)>,
    /// Start of each connected peer's current session (its manager entry's first_seen).
    first_seen: HashMap<usize, Instant>,
    protected: HashMap<usize, HashSet<usize>>,
}

impl Model {
    fn conns_of(&self, peer: usize) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .map(|(c, _)| *c)
            .collect();
        v.sort_unstable();
        v
    }

    /// Connections the manager may trim at `now`: those of unprotected peers whose session
    /// and every connection are past the grace period.
    fn eligible(&self, now: Instant) -> (usize, Vec<usize>) {
        let mut total = 0;
        let mut sizes = Vec::new();
        for (&peer, &seen) in &self.first_seen {
            if self.protected.contains_key(&peer) || seen + GRACE > now {
                continue;
            }
            let conns: Vec<_> = self.open.values().filter(|(p, _)| *p == peer).collect();
            if conns.iter().any(|(_, opened)| *opened + GRACE > now) {
                continue;
            }
            total += conns.len();
            sizes.push(conns.len());
        }
        (total, sizes)
    }
}

fn check_trim(
    model: &mut Model,
    cm: &mut BasicConnMgr,
    out: &Trimmed,
    now: Instant,
    low: usize,
    ids: &[PeerId],
    explicit: bool,
) -> Result<(), TestCaseError> {
    let total_before = model.open.len();
    let (eligible, sizes) = model.eligible(now);
    let index: HashMap<PeerId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut closed = 0;
    for (peer_id, conns) in out {
        let peer = *index
            .get(peer_id)
            .ok_or_else(|| TestCaseError::fail("unknown peer trimmed"))?;
        prop_assert!(
            !model.protected.contains_key(&peer),
            "protected peer {peer} trimmed"
        );
        let seen = model.first_seen.get(&peer).copied();
        prop_assert!(
            seen.is_some_and(|s| s + GRACE <= now),
            "peer {peer} trimmed in its grace period"
        );
        let mut got: Vec<u64> = conns.iter().map(|c| c.raw()).collect();
        got.sort_unstable();
        prop_assert_eq!(
            &got,
            &model.conns_of(peer),
            "all of a peer's connections at once"
        );
        for c in &got {
            let (_, opened) = model.open[c];
            prop_assert!(
                opened + GRACE <= now,
                "connection in its grace period trimmed"
            );
        }
        closed += got.len();
    }
    if closed > 0 {
        prop_assert!(eligible > low);
        prop_assert!(closed <= eligible - low, "trimmed below the low watermark");
        prop_assert!(total_before - closed >= low);
    }
    // An explicit trim always runs (automatic ones may be silenced): it must do its job.
    if explicit && total_before > low && eligible > low {
        let target = eligible - low;
        if sizes.iter().all(|s| *s == 1) {
            prop_assert_eq!(
                closed,
                target,
                "single-connection peers: exactly down to low water"
            );
        }
        if sizes.iter().any(|s| *s > 0 && *s <= target) {
            prop_assert!(closed > 0, "something trimmable was left");
        }
    }
    // The swarm closes them and reports the disconnects.
    for (peer_id, conns) in out {
        let peer = index[peer_id];
        for c in conns {
            model.open.remove(&c.raw());
            cm.notify_disconnected(*peer_id, *c, now);
        }
        model.first_seen.remove(&peer);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn trims_respect_protection_grace_and_low_water(
        low in 1usize..6,
        extra in 0usize..6,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let ids: Vec<PeerId> = (0..PEERS as u64).map(|i| Keypair::from_seed_for_tests(i).peer_id()).collect();
        let high = low + extra;
        let t0 = Instant::now();
        let cfg = Config {
            low_water: low,
            high_water: high,
            grace_period: GRACE,
            silence_period: Duration::from_secs(10),
            // go-libp2p's semantics: the grace period shelters every connection (the flood
            // rule has its own tests in tests/flood.rs).
            flood_headroom: None,
            ..Config::default()
        };
        let mut cm = BasicConnMgr::new(cfg, t0).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = Model::default();
        let mut now = t0;
        let mut next_conn = 0u64;

        for op in ops {
            match op {
                Op::Connect { peer, inbound } => {
                    let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
                    cm.notify_connected(ids[peer], ConnectionId::from_raw(next_conn), dir, now);
                    model.open.insert(next_conn, (peer, now));
                    model.first_seen.entry(peer).or_insert(now);
                    next_conn += 1;
                }
                Op::Disconnect { pick } => {
                    let mut open: Vec<u64> = model.open.keys().copied().collect();
                    if open.is_empty() {
                        continue;
                    }
                    open.sort_unstable();
                    let c = open[pick % open.len()];
                    let (peer, _) = model.open.remove(&c).unwrap_or((0, now));
                    cm.notify_disconnected(ids[peer], ConnectionId::from_raw(c), now);
                    if model.conns_of(peer).is_empty() {
                        model.first_seen.remove(&peer);
                    }
                }
                Op::Tag { peer, value } => cm.tag_peer(ids[peer], "v", value),
                Op::Untag { peer } => cm.untag_peer(ids[peer], "v"),
                Op::Protect { peer, tag } => {
                    cm.protect(ids[peer], ["a", "b"][tag]);
                    model.protected.entry(peer).or_default().insert(tag);
                }
                Op::Unprotect { peer, tag } => {
                    let still = cm.unprotect(ids[peer], ["a", "b"][tag]);
                    if let Some(tags) = model.protected.get_mut(&peer) {
                        tags.remove(&tag);
                        if tags.is_empty() {
                            model.protected.remove(&peer);
                        }
                    }
                    prop_assert_eq!(still, model.protected.contains_key(&peer));
                }
                Op::Streams { pick, n } => {
                    let mut open: Vec<(u64, usize)> = model.open.iter().map(|(c, (p, _))| (*c, *p)).collect();
                    if open.is_empty() {
                        continue;
                    }
                    open.sort_unstable();
                    let (c, peer) = open[pick % open.len()];
                    cm.notify_streams(ids[peer], ConnectionId::from_raw(c), n);
                }
                Op::Advance { secs } => now += Duration::from_secs(secs),
                Op::Trim => {
                    let out = cm.trim_open_conns(now);
                    check_trim(&mut model, &mut cm, &out, now, low, &ids, true)?;
                }
                Op::Poll => {
                    let before = model.open.len();
                    let out = cm.handle_timeout(now);
                    if !out.is_empty() {
                        prop_assert!(before >= high, "automatic trim below the high watermark");
                    }
                    check_trim(&mut model, &mut cm, &out, now, low, &ids, false)?;
                }
            }
            prop_assert_eq!(cm.conn_count(), model.open.len());
            prop_assert_eq!(cm.peer_count(), model.first_seen.len());
            for (peer, _) in model.protected.iter() {
                prop_assert!(cm.is_protected(ids[*peer], None));
            }
        }
    }
}
