//! The memory one real node spends per member: an engine joins a realm of `<members>`
//! (default 10,000) through one seed, whose push-pull answer arrives as bytes and is decoded
//! like one read from a QUIC stream (so every record is the node's own copy, shared with no
//! other engine). Prints the growth of the process's resident memory (Linux `VmRSS`, so
//! malloc's overhead included) divided by the members.
//!
//! ```text
//! cargo run --release -p meshwire-swim --no-default-features --features sim --example member_memory [-- <members>]
//! ```
//!
//! The members' records and the answer are made first and kept until the end, so that the
//! engine's allocations do not reuse memory freed by their making.

use std::time::Instant;

use meshwire_swim::rng::SwimRng;
use meshwire_swim::sim::{sim_keypair, SimConfig};
use meshwire_swim::wire::{Body, Message, PushPull};
use meshwire_swim::{NodeMeta, SwimEngine};

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn meta(i: usize) -> Result<NodeMeta, String> {
    let addr = format!(
        "/ip4/10.{}.{}.{}/udp/4001/quic-v1",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
    .parse()
    .map_err(|e| format!("{e}"))?;
    NodeMeta::new(vec![addr], Vec::new()).map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut cfg = SimConfig::new(n, 1);
    cfg.swim.max_push_pull_members = cfg.swim.max_push_pull_members.max(n + 1);
    cfg.swim.signature_check_burst = cfg
        .swim
        .signature_check_burst
        .max(u32::try_from(n + 1).unwrap_or(u32::MAX));
    // The realm's members (their signed records), and the seed's answer as bytes.
    let now = Instant::now();
    let mut rng = SwimRng::seed_from_u64(1);
    let realm = cfg.realm.clone();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let key = sim_keypair(&mut rng);
        let engine = SwimEngine::new(&key, [realm.clone()], meta(i)?, cfg.swim.clone(), 1, now)
            .map_err(|e| e.to_string())?;
        members.extend(engine.local_record(&realm));
    }
    let seed = sim_keypair(&mut SwimRng::seed_from_u64(1)).peer_id();
    let answer = Message {
        realm: realm.clone(),
        body: Body::PushPull(PushPull {
            join: true,
            response: true,
            members: members.clone(),
        }),
    }
    .encode();

    let key = sim_keypair(&mut SwimRng::seed_from_u64(99));
    let mut engine = SwimEngine::new(&key, [realm.clone()], meta(n)?, cfg.swim.clone(), 7, now)
        .map_err(|e| e.to_string())?;
    engine
        .join(now, &realm, &[seed])
        .map_err(|e| e.to_string())?;
    while engine.poll_transmit().is_some() {}
    let before = rss();
    engine
        .handle_push_pull_bytes(now, seed, &answer)
        .map_err(|e| e.to_string())?;
    while engine.poll_transmit().is_some() {}
    while engine.poll_event().is_some() {}
    let after = rss();
    // The seed is among the members (the first record is its own).
    let live = engine.live_member_count(&realm);
    if live != n {
        return Err(format!("{live} members taken in, not {n}"));
    }
    let grown = after.saturating_sub(before);
    println!(
        "one node, {n} members (records decoded, not shared): {:.0} bytes per member ({:.1} MiB)",
        grown as f64 / n as f64,
        grown as f64 / 1048576.0
    );
    drop((answer, members));
    Ok(())
}
