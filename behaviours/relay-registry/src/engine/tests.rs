use super::*;
use crate::record::{provider_key, record_key, RecordError};

const T0_MS: u64 = 1_700_000_000_000;

fn key(seed: u64) -> Keypair {
    Keypair::from_seed_for_tests(seed)
}

fn addr(n: u16) -> Multiaddr {
    format!("/ip4/198.51.100.{}/udp/4001/quic-v1", n % 250)
        .parse()
        .unwrap()
}

fn engine(seed: u64, config: RegistryConfig, t0: Instant) -> RegistryEngine {
    RegistryEngine::new(key(seed), config, t0)
        .unwrap()
        .with_unix_time(t0, T0_MS)
        .with_metrics(RegistryMetrics::default())
}

/// A record of relay `seed` issued at `issued` (ms after T0), valid `ttl` ms.
fn record(seed: u64, capacity: u32, load: u32, issued: u64, ttl: u64) -> RelayRecord {
    RelayRecord {
        node_id: key(seed).peer_id(),
        realm: "default".into(),
        endpoint: addr(seed as u16),
        capacity,
        current_load: load,
        registered_at: T0_MS,
        issued_at: T0_MS + issued,
        expires_at: T0_MS + issued + ttl,
        withdrawn: false,
    }
}

fn signed(seed: u64, capacity: u32, load: u32, issued: u64, ttl: u64) -> Vec<u8> {
    record(seed, capacity, load, issued, ttl)
        .sign(&key(seed))
        .unwrap()
}

fn drain(e: &mut RegistryEngine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

fn events(e: &mut RegistryEngine) -> Vec<RegistryEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Feeds relay `seed`'s record into `e` at `now`.
fn learn(e: &mut RegistryEngine, now: Instant, seed: u64, capacity: u32, load: u32) {
    let issued = now.duration_since(e.clock.at).as_millis() as u64;
    e.handle_record(
        now,
        Some(key(seed).peer_id()),
        &signed(seed, capacity, load, issued, 120_000),
    )
    .unwrap();
}

#[test]
fn registry_register_needs_a_confirmed_external_address() {
    let t0 = Instant::now();
    let mut e = engine(1, RegistryConfig::default(), t0);
    assert_eq!(
        e.register(t0, addr(1), RegisterOpts::default()),
        Err(RegisterError::NotReachable)
    );
    // A relayed address does not make the node reachable.
    let relayed: Multiaddr = format!("{}/p2p/{}/p2p-circuit", addr(9), key(9).peer_id())
        .parse()
        .unwrap();
    e.handle_external_addr_confirmed(&relayed);
    assert!(!e.is_publicly_reachable());
    e.handle_external_addr_confirmed(&addr(1));
    assert_eq!(
        e.register(t0, addr(2), RegisterOpts::default()),
        Err(RegisterError::EndpointNotConfirmed(addr(2)))
    );
    assert_eq!(
        e.register(t0, addr(1), RegisterOpts { capacity: 0 }),
        Err(RegisterError::BadCapacity(0))
    );
    assert!(drain(&mut e)
        .iter()
        .all(|a| !matches!(a, Action::Publish { .. })));
    assert!(!e.is_registered());
    // With /p2p/<self> the endpoint is the same address.
    e.register(
        t0,
        with_p2p(&addr(1), e.local_peer_id()),
        RegisterOpts { capacity: 50 },
    )
    .unwrap();
    assert!(e.is_registered());
    assert!(e.is_relay(&e.local_peer_id()));
    let actions = drain(&mut e);
    assert!(actions.contains(&Action::Announce {
        key: provider_key("default")
    }));
    let value = actions
        .iter()
        .find_map(|a| match a {
            Action::Publish { key, value, ttl } => {
                assert_eq!(*key, record_key("default", &e.local_peer_id()));
                assert_eq!(*ttl, secs(120));
                Some(value.clone())
            }
            _ => None,
        })
        .unwrap();
    let r = RelayRecord::open(&value).unwrap();
    assert_eq!((r.endpoint, r.capacity, r.current_load), (addr(1), 50, 0));
    assert_eq!((r.issued_at, r.expires_at), (T0_MS, T0_MS + 120_000));
    assert!(events(&mut e).contains(&RegistryEvent::Registered {
        endpoint: addr(1),
        capacity: 50
    }));
}

#[test]
fn registry_refresh_carries_the_current_load_and_unregister_withdraws() {
    let t0 = Instant::now();
    let mut relay = engine(1, RegistryConfig::default(), t0);
    let mut client = engine(2, RegistryConfig::default(), t0);
    relay.handle_external_addr_confirmed(&addr(1));
    relay
        .register(t0, addr(1), RegisterOpts { capacity: 10 })
        .unwrap();
    drain(&mut relay);
    assert_eq!(relay.poll_timeout(), Some(t0), "discovery first");
    relay.handle_timeout(t0);
    drain(&mut relay);
    assert_eq!(relay.poll_timeout(), Some(t0 + secs(30)));
    relay.set_load(25); // more than the capacity: published as full
    relay.handle_timeout(t0 + secs(30));
    let published = |actions: Vec<Action>| {
        actions
            .into_iter()
            .find_map(|a| match a {
                Action::Publish { value, .. } => Some(value),
                _ => None,
            })
            .unwrap()
    };
    let v = published(drain(&mut relay));
    let r = RelayRecord::open(&v).unwrap();
    assert_eq!((r.current_load, r.issued_at), (10, T0_MS + 30_000));
    let id = relay.local_peer_id();
    client.handle_record(t0 + secs(30), Some(id), &v).unwrap();
    assert!(client.relay(&id).unwrap().is_full());

    relay.set_load(3);
    relay.handle_timeout(t0 + secs(60));
    let v = published(drain(&mut relay));
    assert_eq!(
        client.handle_record(t0 + secs(60), Some(id), &v),
        Ok(InsertOutcome::Updated)
    );
    assert_eq!(client.relay(&id).unwrap().current_load, 3);
    // An older version read later changes nothing.
    let old = signed(1, 10, 9, 1_000, 120_000);
    assert_eq!(
        client.handle_record(t0 + secs(61), Some(id), &old),
        Ok(InsertOutcome::Stale)
    );

    assert!(relay.unregister(t0 + secs(70)));
    assert!(!relay.unregister(t0 + secs(70)));
    assert!(!relay.is_relay(&id));
    let actions = drain(&mut relay);
    assert!(actions.contains(&Action::StopAnnouncing {
        key: provider_key("default")
    }));
    let tomb = published(actions);
    assert!(RelayRecord::open(&tomb).unwrap().withdrawn);
    assert_eq!(
        client.handle_record(t0 + secs(71), Some(id), &tomb),
        Ok(InsertOutcome::Withdrawn)
    );
    assert!(!client.is_relay(&id));
    assert_eq!(client.relay_count(), 0);
    assert!(events(&mut client).contains(&RegistryEvent::RelayRemoved {
        relay: id,
        reason: RemovalReason::Withdrawn
    }));
    relay.handle_timeout(t0 + secs(200));
    assert!(
        !drain(&mut relay)
            .iter()
            .any(|a| matches!(a, Action::Publish { .. })),
        "no refresh after unregistering"
    );
}

#[test]
fn registry_losing_the_endpoint_unregisters() {
    let t0 = Instant::now();
    let mut e = engine(1, RegistryConfig::default(), t0);
    e.handle_external_addr_confirmed(&addr(1));
    e.handle_external_addr_confirmed(&addr(2));
    e.register(t0, addr(1), RegisterOpts::default()).unwrap();
    e.handle_external_addr_expired(t0, &addr(2));
    assert!(e.is_registered());
    e.handle_external_addr_expired(t0, &addr(1));
    assert!(!e.is_registered());
    assert!(events(&mut e).contains(&RegistryEvent::Unregistered {
        reason: UnregisterReason::NotReachable
    }));
}

#[test]
fn registry_nat_profile_decides_who_may_register() {
    use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};
    let profile = |mapping, filtering| NatProfile {
        mapping,
        filtering,
        port_preserving: true,
    };
    let t0 = Instant::now();
    let mut e = engine(1, RegistryConfig::default(), t0);
    e.handle_external_addr_confirmed(&addr(1));
    // Closed NATs refuse, whatever was confirmed.
    for closed in [
        profile(
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        ),
        profile(Mapping::EndpointIndependent, Filtering::AddressDependent),
        profile(
            Mapping::AddressAndPortDependent(PortAllocation::Random),
            Filtering::EndpointIndependent,
        ),
        profile(Mapping::None, Filtering::AddressAndPortDependent),
    ] {
        e.handle_nat_profile(t0, Some(closed));
        assert!(!e.is_publicly_reachable(), "{closed:?}");
        assert_eq!(
            e.register(t0, addr(1), RegisterOpts::default()),
            Err(RegisterError::NatClosed(closed))
        );
    }
    assert!(!e.is_registered());
    // Not known, untested filtering, no NAT or a full cone: the confirmed address decides.
    for open in [
        None,
        Some(profile(Mapping::EndpointIndependent, Filtering::Unknown)),
        Some(profile(Mapping::None, Filtering::EndpointIndependent)),
        Some(profile(
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
        )),
    ] {
        e.handle_nat_profile(t0, open);
        assert!(e.is_publicly_reachable(), "{open:?}");
        e.register(t0, addr(1), RegisterOpts::default()).unwrap();
        assert!(e.is_registered());
    }
    // A registered relay whose NAT turns out closed unregisters.
    let _ = events(&mut e);
    e.handle_nat_profile(
        t0,
        Some(profile(
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        )),
    );
    assert!(!e.is_registered());
    assert!(events(&mut e).contains(&RegistryEvent::Unregistered {
        reason: UnregisterReason::NatClosed
    }));
}

#[test]
fn registry_records_are_checked() {
    let t0 = Instant::now();
    let mut e = engine(1, RegistryConfig::default(), t0);
    let relay = key(5).peer_id();
    // Signed by the wrong key.
    let forged = record(5, 10, 0, 0, 60_000).sign_unchecked(&key(6));
    assert_eq!(
        e.handle_record(t0, Some(relay), &forged),
        Err(RejectReason::Invalid(RecordError::SignerMismatch))
    );
    // A valid record of relay 6 under relay 5's key.
    assert!(matches!(
        e.handle_record(t0, Some(relay), &signed(6, 10, 0, 0, 60_000)),
        Err(RejectReason::Invalid(RecordError::KeyMismatch { .. }))
    ));
    let mut other_realm = record(5, 10, 0, 0, 60_000);
    other_realm.realm = "other".into();
    assert_eq!(
        e.handle_record(t0, Some(relay), &other_realm.sign(&key(5)).unwrap()),
        Err(RejectReason::WrongRealm("other".into()))
    );
    let expired = signed(5, 10, 0, 0, 60_000);
    assert_eq!(
        e.handle_record(t0 + secs(60), Some(relay), &expired),
        Err(RejectReason::Expired)
    );
    let future = signed(5, 10, 0, 31_000, 60_000);
    assert_eq!(
        e.handle_record(t0, Some(relay), &future),
        Err(RejectReason::FromFuture)
    );
    let long = signed(5, 10, 0, 0, 601_000);
    assert_eq!(
        e.handle_record(t0, Some(relay), &long),
        Err(RejectReason::TtlTooLong)
    );
    assert!(matches!(
        e.handle_record(t0, Some(relay), b"garbage"),
        Err(RejectReason::Invalid(RecordError::Envelope(_)))
    ));
    assert_eq!(e.relay_count(), 0);
    let m = e.metrics().unwrap().clone();
    assert_eq!(m.records("invalid"), 3);
    assert_eq!(m.records("wrong_realm"), 1);
    assert_eq!(m.records("expired"), 1);
    assert_eq!(m.records("from_future"), 1);
    assert_eq!(m.records("ttl_too_long"), 1);
    // Only a record signed by its relay, under its key, gets in.
    assert_eq!(
        e.handle_record(t0, Some(relay), &signed(5, 10, 0, 0, 60_000)),
        Ok(InsertOutcome::Added)
    );
    assert!(e.is_relay(&relay));
    assert_eq!(m.known_relays(), 1);
    let rejected = events(&mut e)
        .into_iter()
        .filter(|ev| matches!(ev, RegistryEvent::RecordRejected { .. }))
        .count();
    assert_eq!(rejected, 7);
}

#[test]
fn registry_stale_entries_expire_at_their_ttl() {
    let t0 = Instant::now();
    let mut e = engine(1, RegistryConfig::default(), t0);
    learn(&mut e, t0, 5, 10, 0);
    learn(&mut e, t0 + secs(50), 6, 10, 0);
    assert_eq!(e.relay_count(), 2);
    assert_eq!(e.index().next_deadline(), Some(t0 + secs(120)));
    e.handle_timeout(t0 + secs(119));
    assert_eq!(e.relay_count(), 2);
    e.handle_timeout(t0 + secs(120));
    assert_eq!(e.relay_count(), 1);
    assert!(!e.is_relay(&key(5).peer_id()));
    assert!(events(&mut e).contains(&RegistryEvent::RelayRemoved {
        relay: key(5).peer_id(),
        reason: RemovalReason::Expired
    }));
    // A refresh keeps relay 6 beyond its first record's end.
    learn(&mut e, t0 + secs(160), 6, 10, 0);
    e.handle_timeout(t0 + secs(170));
    assert!(e.is_relay(&key(6).peer_id()));
    e.handle_timeout(t0 + secs(280));
    assert_eq!(e.relay_count(), 0);
    assert_eq!(e.metrics().unwrap().known_relays(), 0);
}

#[test]
fn registry_discovery_rounds_and_bounded_fetches() {
    let t0 = Instant::now();
    let config = RegistryConfig {
        max_fetches: 3,
        ..RegistryConfig::default()
    };
    let mut e = engine(1, config, t0);
    e.handle_timeout(t0);
    assert_eq!(
        drain(&mut e),
        vec![Action::Discover {
            key: provider_key("default")
        }]
    );
    let me = e.local_peer_id();
    e.handle_providers([me, key(5).peer_id(), key(5).peer_id(), key(6).peer_id()]);
    e.handle_providers((7..20).map(|s| key(s).peer_id()));
    let fetches: Vec<PeerId> = drain(&mut e)
        .into_iter()
        .map(|a| match a {
            Action::Fetch { relay, key } => {
                assert_eq!(key, record_key("default", &relay));
                relay
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        fetches,
        vec![key(5).peer_id(), key(6).peer_id(), key(7).peer_id()]
    );
    assert_eq!(e.poll_timeout(), Some(t0 + secs(30)));
    e.handle_timeout(t0 + secs(30));
    e.handle_providers([key(5).peer_id()]);
    assert_eq!(
        drain(&mut e).len(),
        2,
        "a new round: search, and read again"
    );
}

#[test]
fn registry_find_relay_probes_and_uses_rtt() {
    let t0 = Instant::now();
    let config = RegistryConfig {
        probe_candidates: 2,
        ..RegistryConfig::default()
    };
    let mut e = engine(1, config, t0);
    let target = key(100).peer_id();
    assert_eq!(
        e.find_relay(t0, &target),
        Err(NoRelaysAvailable { known: 0 })
    );
    for s in 5..9 {
        learn(&mut e, t0, s, 10, 0);
    }
    drain(&mut e);
    let best = e.find_relay(t0, &target).unwrap();
    let probes: Vec<PeerId> = drain(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Probe { relay, addr } => {
                assert_eq!(addr, with_p2p(&e.relay(&relay).unwrap().endpoint, relay));
                Some(relay)
            }
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 2, "the best two candidates are probed");
    assert!(probes.contains(&best.node_id));
    // Probes answer: the first is far, the second near.
    e.handle_rtt(t0, &probes[0], Duration::from_millis(400));
    e.handle_rtt(t0, &probes[1], Duration::from_millis(2));
    assert_eq!(
        e.relay(&probes[1]).unwrap().latency,
        Some(Duration::from_millis(2))
    );
    let near = FindOpts {
        max_results: 10,
        max_latency: Some(Duration::from_millis(300)),
        ..FindOpts::default()
    };
    let found = e.find_relay_with(t0, &target, near).unwrap();
    assert!(!found.iter().any(|r| r.node_id == probes[0]), "too far");
    assert_eq!(found.len(), 3, "the unmeasured ones count as 200 ms");
    // A failed probe's dial backs the relay off.
    let mut e = engine(
        1,
        RegistryConfig {
            probe_candidates: 4,
            ..RegistryConfig::default()
        },
        t0,
    );
    for s in 5..9 {
        learn(&mut e, t0, s, 10, 0);
    }
    e.find_relay(t0, &target).unwrap();
    let probes: Vec<PeerId> = drain(&mut e)
        .into_iter()
        .filter_map(|a| match a {
            Action::Probe { relay, .. } => Some(relay),
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 4);
    e.handle_probe_failed(t0, &probes[0]);
    let all = FindOpts {
        max_results: 10,
        ..FindOpts::default()
    };
    let found = e.find_relay_with(t0, &target, all.clone()).unwrap();
    assert_eq!(found.len(), 3);
    assert!(!found.iter().any(|r| r.node_id == probes[0]), "backed off");
    let later = e.find_relay_with(t0 + secs(61), &target, all).unwrap();
    assert!(
        later.iter().any(|r| r.node_id == probes[0]),
        "back after 60 s"
    );
    // A probe that times out blames nobody.
    e.handle_timeout(t0 + secs(100));
    assert_eq!(e.probing().count(), 0);
    let all = FindOpts {
        max_results: 10,
        ..FindOpts::default()
    };
    assert_eq!(
        e.find_relay_with(t0 + secs(100), &target, all)
            .unwrap()
            .len(),
        4
    );
    assert_eq!(e.metrics().unwrap().selections("find"), 4);
}

#[test]
fn registry_flood_of_valid_records_stays_bounded() {
    let t0 = Instant::now();
    let config = RegistryConfig {
        max_relays: 16,
        auto_relay: Some(AutoRelayConfig {
            reservations: 1,
            probe_wait: Duration::ZERO,
            ..AutoRelayConfig::default()
        }),
        ..RegistryConfig::default()
    };
    let mut e = engine(1, config, t0);
    learn(&mut e, t0, 2, 10, 0);
    let held = e.auto_relays();
    assert_eq!(held, vec![(key(2).peer_id(), ReservationState::Reserving)]);
    // A thousand fresh keys, each with a record that outlives the one held.
    for s in 1000..2000 {
        let now = t0 + Duration::from_millis(s);
        let _ = e.handle_record(now, None, &signed(s, 10, 0, s, 120_000));
        assert!(e.index().len() <= 16);
    }
    assert!(e.is_relay(&key(2).peer_id()), "the relay in use is kept");
    assert_eq!(e.relay_count(), 16);
    assert!(events(&mut e).len() <= e.config().max_events);
}

// ----- auto relay -----------------------------------------------------------------------------

fn auto_config(n: usize) -> RegistryConfig {
    RegistryConfig {
        auto_relay: Some(AutoRelayConfig {
            reservations: n,
            ..AutoRelayConfig::default()
        }),
        ..RegistryConfig::default()
    }
}

fn reserves(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reserve { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect()
}

#[test]
fn registry_auto_relay_reserves_waits_for_probes_and_fails_over() {
    let t0 = Instant::now();
    let mut e = engine(1, auto_config(2), t0);
    for s in 5..9 {
        learn(&mut e, t0, s, 10, 0);
    }
    let actions = drain(&mut e);
    assert!(reserves(&actions).is_empty(), "waits for the probes first");
    let probes: Vec<PeerId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Probe { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect();
    assert_eq!(probes.len(), 4);
    // Relay 8 is near, the others far: once all answered, 8 is among the two chosen.
    let near = key(8).peer_id();
    for p in &probes {
        let rtt = if *p == near { 1 } else { 300 };
        e.handle_rtt(
            t0 + Duration::from_millis(10),
            p,
            Duration::from_millis(rtt),
        );
    }
    let t1 = t0 + Duration::from_millis(10);
    let chosen = reserves(&drain(&mut e));
    assert_eq!(chosen.len(), 2);
    assert!(chosen.contains(&near));
    assert_eq!(e.metrics().unwrap().selections("auto"), 2);
    for r in &chosen {
        e.handle_reservation_accepted(t1, r);
    }
    assert_eq!(e.reserved_relays().len(), 2);
    assert_eq!(e.metrics().unwrap().reservations(), 2);
    let evs = events(&mut e);
    assert_eq!(
        evs.iter()
            .filter(|ev| matches!(ev, RegistryEvent::ReservationAcquired { .. }))
            .count(),
        2
    );
    // The near relay dies: another is asked for at once, the dead one is not.
    let t2 = t1 + secs(5);
    e.handle_reservation_failed(t2, &near, ReservationFailure::Unreachable("gone".into()));
    let next = reserves(&drain(&mut e));
    assert_eq!(next.len(), 1);
    assert!(!chosen.contains(&next[0]));
    assert!(events(&mut e).contains(&RegistryEvent::ReservationLost {
        relay: near,
        reason: ReservationFailure::Unreachable("gone".into())
    }));
    let t3 = t2 + Duration::from_millis(40);
    e.handle_reservation_accepted(t3, &next[0]);
    assert!(events(&mut e).contains(&RegistryEvent::FailedOver {
        from: near,
        to: next[0],
        elapsed: Duration::from_millis(40)
    }));
    assert_eq!(e.metrics().unwrap().failovers(), 1);
    // The dead relay is backed off: its next record does not bring it back before 60 s.
    learn(&mut e, t3, 8, 10, 0);
    assert!(e
        .find_relay_with(
            t3,
            &key(100).peer_id(),
            FindOpts {
                max_results: 10,
                ..FindOpts::default()
            }
        )
        .unwrap()
        .iter()
        .all(|r| r.node_id != near));
}

#[test]
fn registry_auto_relay_avoids_full_relays_until_they_have_room() {
    let t0 = Instant::now();
    let mut config = auto_config(1);
    if let Some(a) = config.auto_relay.as_mut() {
        a.probe_wait = Duration::ZERO;
    }
    let mut e = engine(1, config, t0);
    learn(&mut e, t0, 5, 10, 10); // full
    assert!(
        reserves(&drain(&mut e)).is_empty(),
        "a full relay is never chosen"
    );
    assert!(events(&mut e).contains(&RegistryEvent::NoRelaysAvailable { held: 0, wanted: 1 }));
    learn(&mut e, t0 + secs(1), 6, 10, 2);
    let first = reserves(&drain(&mut e));
    assert_eq!(first, vec![key(6).peer_id()], "a new relay is used at once");
    // Relay 6 turns out full (its record was stale): it is taken as full until it says
    // otherwise, and relay 5 (still full) is not tried either.
    e.handle_reservation_failed(t0 + secs(1), &key(6).peer_id(), ReservationFailure::Full);
    assert!(reserves(&drain(&mut e)).is_empty());
    assert!(e.relay(&key(6).peer_id()).unwrap().is_full());
    // Relay 5 reports room at its next refresh.
    learn(&mut e, t0 + secs(2), 5, 10, 4);
    assert_eq!(reserves(&drain(&mut e)), vec![key(5).peer_id()]);
}

#[test]
fn registry_auto_relay_reserve_timeout_and_retry() {
    let t0 = Instant::now();
    let mut config = auto_config(1);
    if let Some(a) = config.auto_relay.as_mut() {
        a.probe_wait = Duration::ZERO;
        a.reserve_timeout = secs(10);
        a.hedge_after = secs(10);
    }
    let mut e = engine(1, config, t0);
    learn(&mut e, t0, 5, 10, 0);
    learn(&mut e, t0, 6, 10, 0);
    let first = reserves(&drain(&mut e));
    assert_eq!(first.len(), 1);
    // (hedge_after = reserve_timeout: no hedging in this test)
    assert_eq!(e.poll_timeout(), Some(t0), "the first discovery round");
    e.handle_timeout(t0);
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(t0 + secs(10)));
    e.handle_timeout(t0 + secs(10));
    let actions = drain(&mut e);
    assert!(actions.contains(&Action::Release { relay: first[0] }));
    let second = reserves(&actions);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first[0]);
    assert!(events(&mut e).contains(&RegistryEvent::ReservationFailed {
        relay: first[0],
        reason: ReservationFailure::Timeout
    }));
    // The second one times out too; the first is backed off: nothing to try, retry later.
    e.handle_timeout(t0 + secs(20));
    let actions = drain(&mut e);
    assert!(reserves(&actions).is_empty());
    assert!(e.poll_timeout().unwrap() <= t0 + secs(25));
    // Once the backoff is over, the retry finds a relay again.
    e.handle_timeout(t0 + secs(75));
    assert_eq!(reserves(&drain(&mut e)).len(), 1);
    // Turning auto relay off releases it.
    e.set_auto_relay(t0 + secs(76), None).unwrap();
    assert!(drain(&mut e)
        .iter()
        .any(|a| matches!(a, Action::Release { .. })));
    assert!(e.auto_relays().is_empty());
}

#[test]
fn registry_auto_relay_hedges_a_slow_reservation() {
    let t0 = Instant::now();
    let mut config = auto_config(1);
    if let Some(a) = config.auto_relay.as_mut() {
        a.probe_wait = Duration::ZERO;
        a.hedge_after = secs(2);
    }
    let mut e = engine(1, config, t0);
    e.handle_timeout(t0);
    for s in 5..8 {
        learn(&mut e, t0, s, 10, 0);
    }
    let first = reserves(&drain(&mut e));
    assert_eq!(first.len(), 1);
    assert_eq!(e.poll_timeout(), Some(t0 + secs(2)));
    // No answer within 2 s: a second relay is asked, the first attempt goes on.
    e.handle_timeout(t0 + secs(2));
    let second = reserves(&drain(&mut e));
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    assert_eq!(e.auto_relays().len(), 2);
    // And a third one 2 s later; no more than twice the wanted number at once.
    e.handle_timeout(t0 + secs(4));
    assert!(reserves(&drain(&mut e)).is_empty(), "two attempts at most");
    // The second accepts: the first is released.
    e.handle_reservation_accepted(t0 + secs(4), &second[0]);
    let actions = drain(&mut e);
    assert!(actions.contains(&Action::Release { relay: first[0] }));
    assert_eq!(
        e.auto_relays(),
        vec![(second[0], ReservationState::Reserved)]
    );
    // A late acceptance of the released attempt changes nothing.
    e.handle_reservation_accepted(t0 + secs(5), &first[0]);
    assert_eq!(e.reserved_relays(), vec![second[0]]);
}

#[test]
fn registry_auto_relay_releases_a_surplus_acceptance() {
    let t0 = Instant::now();
    let mut config = auto_config(1);
    if let Some(a) = config.auto_relay.as_mut() {
        a.probe_wait = Duration::ZERO;
        a.hedge_after = secs(1);
    }
    let mut e = engine(1, config, t0);
    e.handle_timeout(t0);
    for s in 5..7 {
        learn(&mut e, t0, s, 10, 0);
    }
    let a = reserves(&drain(&mut e));
    e.handle_timeout(t0 + secs(1));
    let b = reserves(&drain(&mut e));
    assert_eq!((a.len(), b.len()), (1, 1));
    // Both answer at the same moment: the first is kept, the other released.
    e.handle_reservation_accepted(t0 + secs(2), &a[0]);
    assert!(drain(&mut e).contains(&Action::Release { relay: b[0] }));
    e.handle_reservation_accepted(t0 + secs(2), &b[0]);
    assert_eq!(e.reserved_relays(), vec![a[0]]);
    assert_eq!(e.metrics().unwrap().reservations(), 1);
}
