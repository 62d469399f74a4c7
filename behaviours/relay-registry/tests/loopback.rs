//! Twenty swarms on loopback QUIC: 4 relays of different capacities and loads, 4 clients
//! holding reservations by hand (the loads), 12 clients with auto relay. Checks that clients
//! spread as the scoring formula says, `exclude` and `max_latency`, that forged records are
//! refused, that a killed relay's clients reserve elsewhere within the bound (printed), and
//! that the killed relay, no longer refreshing, leaves every index at its TTL
//! (`cargo test -p meshwire-relay-registry --test loopback -- --nocapture` prints the figures).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use meshwire_core::{Keypair, PeerId};
use meshwire_kad::{Record, RecordKey};
use meshwire_relay_registry::engine::select;
use meshwire_relay_registry::record::{provider_key, record_key, RecordError};
use meshwire_relay_registry::{
    AutoRelayConfig, FindOpts, NoRelaysAvailable, RegisterOpts, RegistryEvent, RejectReason,
    RelayRecord, ScoreParams,
};
use meshwire_transport::quic::QuicConfig;
use meshwire_transport::Protocol;

/// Capacities of R0..R3 (the relay servers' `max_reservations`).
const CAPACITIES: [usize; 4] = [24, 24, 16, 2];
const AUTO_CLIENTS: usize = 12;
const MANUAL_CLIENTS: usize = 4;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The reservations a relay holds.
async fn load(n: &Node) -> Option<usize> {
    n.registry(|r| r.relay_server().map(|s| s.engine().reservation_count()))
        .await
}

fn auto_config() -> AutoRelayConfig {
    AutoRelayConfig {
        reservations: 2,
        // The choice is made at once, on the index as it is (so the test can recompute it).
        probe_wait: Duration::ZERO,
        ..AutoRelayConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_twenty_swarms_on_loopback() {
    let setup = Instant::now();
    let mut relays = Vec::new();
    for (i, cap) in CAPACITIES.iter().enumerate() {
        relays.push(
            start(NodeOpts {
                seed: Some(100 + i as u64),
                server: Some(server(*cap)),
                ..NodeOpts::default()
            })
            .await,
        );
    }
    let mut manual = Vec::new();
    for i in 0..MANUAL_CLIENTS {
        manual.push(
            start(NodeOpts {
                seed: Some(200 + i as u64),
                client: true,
                ..NodeOpts::default()
            })
            .await,
        );
    }
    let mut autos = Vec::new();
    for i in 0..AUTO_CLIENTS {
        autos.push(
            start(NodeOpts {
                seed: Some(300 + i as u64),
                client: true,
                ..NodeOpts::default()
            })
            .await,
        );
    }
    assert_eq!(relays.len() + manual.len() + autos.len(), 20);
    for n in relays
        .iter()
        .skip(1)
        .chain(manual.iter())
        .chain(autos.iter())
    {
        n.join(&relays[0]).await;
    }
    let relay_ids: Vec<PeerId> = relays.iter().map(|r| r.peer).collect();
    let name = |p: &PeerId| {
        relay_ids
            .iter()
            .position(|r| r == p)
            .map(|i| format!("R{i}"))
            .unwrap_or_else(|| p.to_string())
    };

    // ----- loads: the manual clients reserve by hand: 4 on R1, 2 on R3 (full) ----------------
    let circuit = |r: &Node| r.full_addr().with(Protocol::P2pCircuit);
    for (i, m) in manual.iter().enumerate() {
        m.handle.listen_on(circuit(&relays[1])).await.unwrap();
        if i < 2 {
            m.handle.listen_on(circuit(&relays[3])).await.unwrap();
        }
    }
    for (i, want) in [(1, 4), (3, 2)] {
        let r = &relays[i];
        eventually("the manual reservations", || async {
            load(r).await == Some(want)
        })
        .await;
    }

    // ----- registration ------------------------------------------------------------------------
    for r in &relays {
        r.handle.add_external_address(r.addr.clone()).await.unwrap();
        let a = r.addr.clone();
        // 100 asked; the server's max_reservations is announced.
        r.registry(move |reg| reg.register(a, RegisterOpts { capacity: 100 }))
            .await
            .unwrap();
    }
    let everyone: Vec<&Node> = relays
        .iter()
        .chain(manual.iter())
        .chain(autos.iter())
        .collect();
    for n in &everyone {
        eventually(
            "every node sees the four relays and their loads",
            || async {
                let infos = n.registry(|r| r.relays()).await;
                let loads: Vec<(u32, u32)> = relay_ids
                    .iter()
                    .filter_map(|id| infos.iter().find(|i| i.node_id == *id))
                    .map(|i| (i.capacity, i.current_load))
                    .collect();
                loads == vec![(24, 0), (24, 4), (16, 0), (2, 2)]
            },
        )
        .await;
    }
    println!(
        "registry loopback: 20 swarms up, DHT joined, 4 relays known everywhere in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // ----- spread: each auto client reserves on its top two by the formula ----------------------
    let params = ScoreParams::default();
    let mut snapshots = Vec::new();
    let mut chosen: BTreeMap<PeerId, Vec<PeerId>> = BTreeMap::new();
    for c in &autos {
        let me = c.peer;
        let (infos, predicted, reserving) = c
            .registry(move |r| {
                let infos = r.relays();
                // The formula, through the public function, on the index as it is now.
                let opts = FindOpts {
                    max_results: 2,
                    ..FindOpts::default()
                };
                let mut predicted: Vec<PeerId> = select::rank(infos.clone(), &me, &opts, &params)
                    .into_iter()
                    .map(|(i, _)| i.node_id)
                    .collect();
                r.set_auto_relay(Some(auto_config())).unwrap();
                let mut reserving: Vec<PeerId> =
                    r.auto_relays().into_iter().map(|(p, _)| p).collect();
                predicted.sort();
                reserving.sort();
                (infos, predicted, reserving)
            })
            .await;
        assert_eq!(predicted, reserving, "auto relay chose by the formula");
        assert!(
            !reserving.contains(&relay_ids[3]),
            "a full relay is never chosen"
        );
        snapshots.push(infos);
        chosen.insert(me, reserving);
    }
    for c in &autos {
        eventually("two reservations on the relays chosen", || async {
            let mut held = c.registry(|r| r.reserved_relays()).await;
            held.sort();
            held == chosen[&c.peer]
        })
        .await;
        for relay in &chosen[&c.peer] {
            assert!(c.handle.conn_manager().is_protected(*relay, Some("relay")));
        }
    }
    // The spread against the formula's expectation: for each client, the share of random
    // targets for which each relay is among the top two on that client's index (its loads
    // and RTTs), summed over the clients.
    let trials = 4_000;
    let mut expected = [0f64; 4];
    let opts = FindOpts {
        max_results: 2,
        ..FindOpts::default()
    };
    for snapshot in &snapshots {
        for _ in 0..trials {
            let t = PeerId::random();
            for (i, _) in select::rank(snapshot.clone(), &t, &opts, &params) {
                let k = relay_ids.iter().position(|r| *r == i.node_id).unwrap();
                expected[k] += 1.0 / trials as f64;
            }
        }
    }
    let snapshot = &snapshots[0];
    let mut got = [0usize; 4];
    for held in chosen.values() {
        for p in held {
            got[relay_ids.iter().position(|r| r == p).unwrap()] += 1;
        }
    }
    println!(
        "  spread of {AUTO_CLIENTS} auto clients x 2 reservations (weights: free slots x RTT factor; each client's choice checked against the formula on its own index):"
    );
    for i in 0..4 {
        let info = snapshot.iter().find(|r| r.node_id == relay_ids[i]).unwrap();
        let expected = expected[i];
        let now = load(&relays[i]).await.unwrap();
        println!(
            "    R{i}: capacity {:2}, load before {:2} (free {:2}) -> expected {:4.1} clients, got {:2}; load now {:2}/{:2} ({:.0}%)",
            info.capacity,
            info.current_load,
            info.capacity - info.current_load,
            expected,
            got[i],
            now,
            info.capacity,
            100.0 * now as f64 / info.capacity as f64
        );
        assert!(now <= info.capacity as usize);
    }
    assert_eq!(got[3], 0);
    assert_eq!(got.iter().sum::<usize>(), 2 * AUTO_CLIENTS);

    // ----- exclude and max_latency ------------------------------------------------------------
    let c0 = &autos[0];
    let target = autos[1].peer;
    let find_all = || async move {
        c0.registry(move |r| {
            (
                r.find_relay_with(
                    &target,
                    FindOpts {
                        max_results: 10,
                        ..FindOpts::default()
                    },
                ),
                r.relays(),
            )
        })
        .await
    };
    // Under a loaded machine a relay's record can lapse between two refreshes (8 s TTL here)
    // and come back with the next discovery round: wait for the three relays with free slots,
    // and never accept the full one.
    eventually("the three relays with free slots found", || async {
        let (found, index) = find_all().await;
        let found = found.unwrap_or_default();
        assert!(
            found.iter().all(|i| i.node_id != relay_ids[3]),
            "the full relay is never found"
        );
        if found.len() != 3 {
            println!(
                "  find_relay_with: {} of 3 relays found; index: {:?}",
                found.len(),
                index
                    .iter()
                    .map(|i| (i.node_id, i.current_load, i.capacity, i.latency))
                    .collect::<Vec<_>>()
            );
        }
        found.len() == 3
    })
    .await;
    let all = find_all().await.0.unwrap();
    assert_eq!(all.len(), 3, "the full relay is left out");
    assert!(
        all.iter().all(|i| i.latency.is_some()),
        "RTTs probed and cached"
    );
    let best = all[0].node_id;
    let ex = c0
        .registry(move |r| {
            r.find_relay_with(
                &target,
                FindOpts {
                    max_results: 10,
                    exclude: vec![best],
                    ..FindOpts::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(ex.len(), 2);
    assert!(ex.iter().all(|i| i.node_id != best));
    let ids = relay_ids.clone();
    let none = c0
        .registry(move |r| {
            r.find_relay_with(
                &target,
                FindOpts {
                    exclude: ids,
                    ..FindOpts::default()
                },
            )
        })
        .await;
    assert_eq!(none, Err(NoRelaysAvailable { known: 4 }));
    let max_rtt = all.iter().filter_map(|i| i.latency).max().unwrap();
    let near = c0
        .registry(move |r| {
            r.find_relay_with(
                &target,
                FindOpts {
                    max_results: 10,
                    max_latency: Some(max_rtt),
                    ..FindOpts::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(near.len(), 3);
    let too_near = c0
        .registry(move |r| {
            r.find_relay_with(
                &target,
                FindOpts {
                    max_latency: Some(Duration::from_nanos(1)),
                    ..FindOpts::default()
                },
            )
        })
        .await;
    assert!(too_near.is_err(), "no relay within 1 ns");
    println!(
        "  find_relay_with: exclude and max_latency honoured (RTTs to relays {:.2}..{:.2} ms)",
        ms(all.iter().filter_map(|i| i.latency).min().unwrap()),
        ms(max_rtt)
    );

    // ----- forged registrations ---------------------------------------------------------------
    // M3 signs, with its own key, a record for R2 (under R2's key) and a record for a peer it
    // does not own (under its own key, announced as a provider of the realm).
    let attacker = &manual[3];
    let attacker_key = Keypair::from_seed_for_tests(203);
    assert_eq!(attacker_key.peer_id(), attacker.peer);
    let victim = relay_ids[2];
    let stranger = Keypair::from_seed_for_tests(999).peer_id();
    let endpoint = attacker.addr.clone();
    attacker
        .registry(move |r| {
            let now = r.engine().unix_ms(Instant::now());
            let forged = |node_id| RelayRecord {
                node_id,
                realm: "default".into(),
                endpoint: endpoint.clone(),
                capacity: 1000,
                current_load: 0,
                registered_at: now,
                issued_at: now + 500,
                expires_at: now + 8000,
                withdrawn: false,
            };
            let me = attacker_key.peer_id();
            for (key_of, record) in [(victim, forged(victim)), (me, forged(stranger))] {
                let value = record.sign_unchecked(&attacker_key);
                let record = Record {
                    key: RecordKey::new(record_key("default", &key_of)),
                    value,
                    publisher: None,
                    ttl: Some(Duration::from_secs(8)),
                };
                r.kad_mut().put_record(record, 1).unwrap();
            }
            r.kad_mut()
                .start_providing(RecordKey::new(provider_key("default")))
                .unwrap();
        })
        .await;
    let mut c0 = autos.remove(0);
    c0.wait_for("the forged record refused", |ev| match registry_event(ev) {
        Some(RegistryEvent::RecordRejected {
            relay: Some(p),
            reason: RejectReason::Invalid(RecordError::SignerMismatch),
        }) if *p == attacker.peer => Some(()),
        _ => None,
    })
    .await;
    autos.insert(0, c0);
    for c in &autos {
        eventually("every auto client refused forged records", || async {
            c.metrics.records("invalid") > 0
        })
        .await;
        let infos = c.registry(|r| r.relays()).await;
        assert!(infos.iter().all(|i| i.node_id != stranger));
        assert!(infos.iter().all(|i| i.capacity != 1000), "{infos:?}");
    }
    println!("  forged records (R2's and a stranger's, signed by M3) refused by every auto client");

    // ----- kill the busiest relay: failover and expiry ------------------------------------------
    let (busiest, _) = got
        .iter()
        .enumerate()
        .take(3)
        .max_by_key(|(_, n)| **n)
        .unwrap();
    let dead = relay_ids[busiest];
    let affected: Vec<usize> = (0..autos.len())
        .filter(|i| chosen[&autos[*i].peer].contains(&dead))
        .collect();
    for c in autos.iter_mut() {
        c.drain();
    }
    let killed = Instant::now();
    relays[busiest].handle.shutdown().await.unwrap();
    // Within its TTL the dead relay is still listed everywhere.
    let mut listed = 0;
    let mut live_count = 0;
    for (i, n) in relays.iter().enumerate() {
        if i != busiest {
            listed += usize::from(n.registry(move |r| r.is_relay(&dead)).await);
            live_count += 1;
        }
    }
    for n in manual.iter().chain(autos.iter()) {
        listed += usize::from(n.registry(move |r| r.is_relay(&dead)).await);
        live_count += 1;
    }
    let listed_after = killed.elapsed();

    let hedge = auto_config().hedge_after;
    let idle = QuicConfig::default().max_idle_timeout;
    // Detection (one RTT for closed connections, at most QUIC's idle timeout for a relay that
    // vanishes) + one reservation exchange (a few RTTs; 2 s allowed on a loaded machine).
    let bound = idle + Duration::from_secs(2);
    let mut failovers = Vec::new();
    for i in &affected {
        let c = &mut autos[*i];
        let (at, (to, elapsed)) = c
            .wait_for_at("a failover", |_, ev| match registry_event(ev) {
                Some(RegistryEvent::FailedOver { from, to, elapsed }) if *from == dead => {
                    Some((*to, *elapsed))
                }
                _ => None,
            })
            .await;
        let since_kill = at.saturating_duration_since(killed);
        failovers.push((since_kill, elapsed));
        let held = c.registry(|r| r.reserved_relays()).await;
        assert_eq!(held.len(), 2);
        assert!(held.contains(&to) && !held.contains(&dead));
        assert!(c.handle.conn_manager().is_protected(to, Some("relay")));
        assert!(!c.handle.conn_manager().is_protected(dead, Some("relay")));
        assert!(c.metrics.failovers() >= 1);
        println!(
            "    {} lost {} -> reserved on {} {:.0} ms after the kill ({:.0} ms after it noticed)",
            c.peer,
            name(&dead),
            name(&to),
            ms(since_kill),
            ms(elapsed)
        );
    }
    failovers.sort();
    let worst = failovers.last().map(|f| f.0).unwrap_or_default();
    println!(
        "  failover: {} clients of the killed R{busiest}, every one reserved elsewhere; worst {:.0} ms, median {:.0} ms after the kill; bound {:.0} ms (QUIC idle timeout {:.0} ms + 2 s for the exchange; hedging after {:.0} ms)",
        failovers.len(),
        ms(worst),
        ms(failovers.get(failovers.len() / 2).map(|f| f.0).unwrap_or_default()),
        ms(bound),
        ms(idle),
        ms(hedge)
    );
    assert!(!affected.is_empty());
    assert!(worst <= bound, "failover took {worst:?}");

    // The dead relay stops refreshing: it leaves every index at its TTL.
    let ttl = fast_config().record_ttl;
    let refresh = fast_config().refresh_interval;
    if listed_after < ttl - refresh {
        assert_eq!(listed, live_count, "listed everywhere within its TTL");
    }
    let live: Vec<&Node> = relays
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != busiest)
        .map(|(_, n)| n)
        .chain(manual.iter())
        .chain(autos.iter())
        .collect();
    for n in &live {
        eventually("the dead relay expired everywhere", || async {
            !n.registry(move |r| r.is_relay(&dead)).await
        })
        .await;
    }
    let gone = killed.elapsed();
    println!(
        "  R{busiest} (no longer refreshing) listed by {listed}/{} nodes {:.0} ms after the kill, gone from all {} indexes {:.0} ms after it (TTL {:.0} ms, refresh {:.0} ms)",
        live.len(),
        ms(listed_after),
        live.len(),
        ms(gone),
        ms(ttl),
        ms(refresh)
    );
    assert!(gone <= ttl + refresh + Duration::from_secs(2), "{gone:?}");
    for c in &autos {
        assert_eq!(c.metrics.known_relays(), 3);
    }
}
