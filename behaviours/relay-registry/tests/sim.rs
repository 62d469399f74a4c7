//! The seeded simulation of the registry: 500 nodes, 20 relays, auto relay with two
//! reservations per client, five relays killed. Prints the load spread and the failover
//! time distribution (`cargo test -p meshwire-relay-registry --test sim -- --nocapture`).

use std::time::Duration;

use meshwire_relay_registry::sim::{quantile, run, SimConfig};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn registry_sim_500_nodes_20_relays_load_spread_and_failover() {
    let cfg = SimConfig::default();
    assert!(cfg.nodes >= 500 && cfg.relays >= 20);
    let started = std::time::Instant::now();
    let r = run(&cfg).unwrap();
    println!(
        "registry sim: {} nodes, {} relays, {} clients x {} reservations, seed {} ({:.1} s)",
        cfg.nodes,
        cfg.relays,
        r.clients,
        cfg.reservations,
        cfg.seed,
        started.elapsed().as_secs_f64()
    );
    let mut loads = r.loads.clone();
    loads.sort_by_key(|l| l.capacity);
    let line: Vec<String> = loads
        .iter()
        .map(|l| format!("{}/{}", l.load, l.capacity))
        .collect();
    println!(
        "  loads before the kills (load/capacity): {}",
        line.join(" ")
    );
    println!(
        "  load spread: max/mean of load/capacity {:.2}, max/mean of load {:.2}",
        r.utilization_max_over_mean, r.load_max_over_mean
    );
    println!(
        "  clients with all reservations: {}/{} before the kills, {}/{} at the end; refused as full: {}",
        r.clients_fully_reserved_before_kills,
        r.clients,
        r.clients_fully_reserved,
        r.clients,
        r.refused_full
    );
    for (name, v) in [
        ("graceful", &r.failovers_graceful),
        ("silent (10 s idle timeout)", &r.failovers_silent),
    ] {
        println!(
            "  failover after a {name} death: n={} p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            v.len(),
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.9)),
            ms(quantile(v, 0.99)),
            ms(quantile(v, 1.0)),
        );
    }
    println!(
        "  reservations lost to the kills: {}; relay counts at the end: {:?}",
        r.reservations_lost, r.relay_counts_at_end
    );

    // Every client holds its reservations before and after the kills.
    assert_eq!(r.clients_fully_reserved_before_kills, r.clients);
    assert_eq!(r.clients_fully_reserved, r.clients);
    // No relay above capacity (the relays enforce it) and the load evens out.
    assert!(r.loads.iter().all(|l| l.load <= l.capacity));
    assert!(
        r.utilization_max_over_mean < 1.6,
        "utilization max/mean {:.2}",
        r.utilization_max_over_mean
    );
    // Every lost reservation was replaced within the documented bound: detection (one RTT
    // for a closed connection, the idle timeout for a silent death), plus `hedge_after` for
    // each dead candidate tried (at most the other relays killed), plus one reservation
    // exchange (two RTTs).
    assert_eq!(
        r.failovers_graceful.len() + r.failovers_silent.len(),
        r.reservations_lost
    );
    assert!(r.reservations_lost > 0);
    let max_rtt = Duration::from_secs_f64((cfg.plane_ms * 2f64.sqrt() + 2.0) / 1000.0);
    let hedge = cfg
        .registry
        .auto_relay
        .clone()
        .unwrap_or_default()
        .hedge_after;
    let tries = hedge * (cfg.kills as u32 - 1) + 2 * max_rtt;
    let (graceful_bound, silent_bound) = (max_rtt + tries, cfg.idle_timeout + tries);
    println!(
        "  bounds: graceful {:.0} ms, silent {:.0} ms",
        ms(graceful_bound),
        ms(silent_bound)
    );
    let graceful_max = quantile(&r.failovers_graceful, 1.0);
    assert!(graceful_max <= graceful_bound, "{graceful_max:?}");
    let silent_max = quantile(&r.failovers_silent, 1.0);
    assert!(silent_max <= silent_bound, "{silent_max:?}");
    // The dead relays left every index.
    assert_eq!(
        r.relay_counts_at_end.iter().copied().collect::<Vec<_>>(),
        vec![cfg.relays - cfg.kills]
    );
}

#[test]
fn registry_sim_is_deterministic() {
    let cfg = SimConfig {
        nodes: 80,
        relays: 8,
        kills: 2,
        duration: Duration::from_secs(240),
        ..SimConfig::default()
    };
    let a = run(&cfg).unwrap();
    let b = run(&cfg).unwrap();
    assert_eq!(a.loads, b.loads);
    assert_eq!(a.failovers_graceful, b.failovers_graceful);
    assert_eq!(a.failovers_silent, b.failovers_silent);
    let c = run(&SimConfig { seed: 2, ..cfg }).unwrap();
    assert_ne!(a.loads, c.loads);
}

#[test]
fn registry_sim_tight_capacity_fills_without_overflow() {
    // Demand (480 clients x 2) close to the capacity offered: relays fill up, refuse, and
    // clients move on to the ones with room.
    let cfg = SimConfig {
        capacity: (30, 70),
        kills: 0,
        ..SimConfig::default()
    };
    let r = run(&cfg).unwrap();
    let total: u32 = r.loads.iter().map(|l| l.capacity).sum();
    let used: u32 = r.loads.iter().map(|l| l.load).sum();
    println!(
        "registry sim, tight: capacity {total} for {} reservations; held {used}; refused as full {}; \
         utilization max/mean {:.2}; clients with all reservations {}/{}",
        r.clients * cfg.reservations,
        r.refused_full,
        r.utilization_max_over_mean,
        r.clients_fully_reserved,
        r.clients
    );
    assert!(r.loads.iter().all(|l| l.load <= l.capacity));
    assert_eq!(r.clients_fully_reserved, r.clients);
    assert!(r.utilization_max_over_mean < 1.15);
}
