use super::*;
use meshwire_core::Keypair;

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn name() -> ProcedureName {
    ProcedureName::new("org.example.billing.charge").unwrap()
}

fn engine() -> RpcEngine {
    RpcEngine::new(
        peer(0),
        RpcConfig {
            seed: 7,
            ..RpcConfig::default()
        },
    )
}

/// The engine with providers 1..=n of `name()` cached.
fn with_providers(n: u64, now: Instant) -> RpcEngine {
    let mut e = engine();
    e.handle_providers(now, &name(), (1..=n).map(peer).collect());
    e
}

/// Drains the actions; returns the sends as (call, attempt, peer).
fn sends(e: &mut RpcEngine) -> Vec<(CallId, u32, PeerId)> {
    std::iter::from_fn(|| e.poll_action())
        .filter_map(|a| match a {
            RpcAction::Send {
                call,
                attempt,
                peer,
                ..
            } => Some((call, attempt, peer)),
            _ => None,
        })
        .collect()
}

fn finished(e: &mut RpcEngine) -> Vec<(CallId, Result<Vec<u8>, CallError>, bool)> {
    std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            RpcEvent::CallFinished {
                id, result, cached, ..
            } => Some((id, result, cached)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_name_without_providers_fails_with_no_providers_after_one_lookup() {
    let now = Instant::now();
    let mut e = engine();
    let a = e.call(now, name(), vec![1], CallOpts::default()).unwrap();
    let b = e.call(now, name(), vec![2], CallOpts::default()).unwrap();
    let actions: Vec<_> = std::iter::from_fn(|| e.poll_action()).collect();
    // One lookup for both calls.
    assert_eq!(actions, [RpcAction::FindProviders { name: name() }]);
    e.handle_providers(now, &name(), vec![]);
    let f = finished(&mut e);
    assert_eq!(
        f,
        [
            (a, Err(CallError::NoProviders), false),
            (b, Err(CallError::NoProviders), false)
        ]
    );
    assert_eq!(e.metrics().errors("no_providers"), 2);
    // A lookup that never answers counts as finding nothing at its timeout.
    let c = e.call(now, name(), vec![3], CallOpts::default()).unwrap();
    assert!(e.poll_timeout().is_some());
    e.handle_timeout(now + e.config().lookup_timeout);
    assert_eq!(finished(&mut e), [(c, Err(CallError::NoProviders), false)]);
}

#[test]
fn round_robin_spreads_evenly_and_results_finish_calls() {
    let now = Instant::now();
    let mut e = with_providers(3, now);
    let mut count: HashMap<PeerId, usize> = HashMap::new();
    for i in 0..300u32 {
        e.call(now, name(), i.to_be_bytes().to_vec(), CallOpts::default())
            .unwrap();
        for (call, attempt, p) in sends(&mut e) {
            *count.entry(p).or_default() += 1;
            e.handle_result(now, call, attempt, Ok(vec![7]));
        }
    }
    assert_eq!(count.len(), 3);
    assert!(count.values().all(|&c| c == 100), "{count:?}");
    assert_eq!(finished(&mut e).len(), 300);
    assert_eq!(e.calls_in_flight(), 0);
    assert_eq!(e.metrics().calls("ok"), 300);
}

#[test]
fn an_idempotent_call_fails_over_on_timeout_and_backs_the_provider_off() {
    let now = Instant::now();
    let mut e = with_providers(3, now);
    let opts = CallOpts::default()
        .idempotent()
        .with_timeout(Duration::from_secs(1));
    let id = e.call(now, name(), vec![1], opts).unwrap();
    let first = sends(&mut e);
    assert_eq!(first.len(), 1);
    let dead = first[0].2;
    let later = now + Duration::from_secs(1);
    e.handle_timeout(later);
    let actions: Vec<_> = std::iter::from_fn(|| e.poll_action()).collect();
    assert!(actions.contains(&RpcAction::Abandon {
        call: id,
        attempt: 1
    }));
    let second = actions
        .iter()
        .find_map(|a| match a {
            RpcAction::Send { peer, attempt, .. } => Some((*peer, *attempt)),
            _ => None,
        })
        .unwrap();
    assert_ne!(second.0, dead);
    assert_eq!(second.1, 2);
    assert!(e.is_backed_off(&dead, later));
    e.handle_result(later, id, 2, Ok(b"done".to_vec()));
    assert_eq!(finished(&mut e), [(id, Ok(b"done".to_vec()), false)]);
    assert_eq!(e.metrics().failovers(), 1);
    // The next calls avoid the backed-off provider while others remain.
    for i in 0..20u8 {
        e.call(later, name(), vec![i], CallOpts::default()).unwrap();
        for (call, attempt, p) in sends(&mut e) {
            assert_ne!(p, dead);
            e.handle_result(later, call, attempt, Ok(vec![]));
        }
    }
    assert!(!e.is_backed_off(&dead, later + e.config().backoff));
}

#[test]
fn a_call_that_is_not_idempotent_moves_on_only_when_the_request_did_not_run() {
    let now = Instant::now();
    let mut e = with_providers(3, now);
    let id = e.call(now, name(), vec![1], CallOpts::default()).unwrap();
    let (_, a, _) = sends(&mut e)[0];
    e.handle_result(now, id, a, Err(AttemptError::Timeout));
    assert_eq!(finished(&mut e), [(id, Err(CallError::Timeout), false)]);
    assert!(sends(&mut e).is_empty());

    let id = e.call(now, name(), vec![2], CallOpts::default()).unwrap();
    let (_, a, _) = sends(&mut e)[0];
    e.handle_result(
        now,
        id,
        a,
        Err(AttemptError::Remote(RemoteError::Overloaded)),
    );
    let (_, a2, _) = sends(&mut e)[0];
    e.handle_result(now, id, a2, Err(AttemptError::NotDelivered("dial".into())));
    let (_, a3, _) = sends(&mut e)[0];
    e.handle_result(now, id, a3, Ok(vec![9]));
    assert_eq!(finished(&mut e), [(id, Ok(vec![9]), false)]);

    // A handler's own error is the answer.
    let id = e
        .call(now, name(), vec![3], CallOpts::default().idempotent())
        .unwrap();
    let (_, a, _) = sends(&mut e)[0];
    let err = RemoteError::Handler("declined".into());
    e.handle_result(now, id, a, Err(AttemptError::Remote(err.clone())));
    assert_eq!(finished(&mut e), [(id, Err(CallError::Remote(err)), false)]);
}

#[test]
fn failover_ends_with_every_attempt_when_all_providers_fail() {
    let now = Instant::now();
    let mut e = with_providers(2, now);
    let id = e
        .call(
            now,
            name(),
            vec![1],
            CallOpts::default().idempotent().with_retries(5),
        )
        .unwrap();
    for _ in 0..2 {
        let (_, a, _) = sends(&mut e)[0];
        e.handle_result(now, id, a, Err(AttemptError::Lost("reset".into())));
    }
    match &finished(&mut e)[..] {
        [(i, Err(CallError::AllProvidersFailed { attempts }), false)] => {
            assert_eq!(*i, id);
            assert_eq!(attempts.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    // Retries bound the attempts too.
    let mut e = with_providers(5, now);
    let id = e
        .call(
            now,
            name(),
            vec![1],
            CallOpts::default().idempotent().with_retries(1),
        )
        .unwrap();
    for _ in 0..2 {
        let (_, a, _) = sends(&mut e)[0];
        e.handle_result(now, id, a, Err(AttemptError::Timeout));
    }
    assert!(sends(&mut e).is_empty());
    assert!(matches!(
        &finished(&mut e)[..],
        [(_, Err(CallError::AllProvidersFailed { attempts }), _)] if attempts.len() == 2
    ));
}

#[test]
fn idempotent_results_are_cached_per_payload_until_their_ttl() {
    let now = Instant::now();
    let mut e = with_providers(1, now);
    let opts = CallOpts::default().idempotent();
    let id = e.call(now, name(), vec![1], opts.clone()).unwrap();
    let (_, a, _) = sends(&mut e)[0];
    e.handle_result(now, id, a, Ok(b"r1".to_vec()));
    finished(&mut e);
    let hit = e.call(now, name(), vec![1], opts.clone()).unwrap();
    assert!(sends(&mut e).is_empty());
    assert_eq!(finished(&mut e), [(hit, Ok(b"r1".to_vec()), true)]);
    // Another payload misses; so does the same one past the TTL.
    e.call(now, name(), vec![2], opts.clone()).unwrap();
    assert_eq!(sends(&mut e).len(), 1);
    let later = now + e.config().cache_ttl;
    e.handle_providers(later, &name(), vec![peer(1)]);
    e.call(later, name(), vec![1], opts).unwrap();
    assert_eq!(sends(&mut e).len(), 1);
    assert_eq!(e.metrics().cache_hits(), 1);
    assert_eq!(e.metrics().cache_misses(), 3);
    // Calls that are not idempotent never touch the cache.
    e.call(later, name(), vec![1], CallOpts::default()).unwrap();
    assert_eq!(sends(&mut e).len(), 1);
}

#[test]
fn a_local_handler_is_a_candidate_and_preferred_when_asked() {
    let now = Instant::now();
    let mut e = with_providers(2, now);
    e.set_local(name(), true);
    let opts = CallOpts {
        prefer_local: true,
        ..CallOpts::default()
    };
    for _ in 0..5 {
        e.call(now, name(), vec![], opts.clone()).unwrap();
        assert!(matches!(e.poll_action(), Some(RpcAction::CallLocal { .. })));
    }
    // A node serving a name alone needs no lookup.
    let mut e = engine();
    e.set_local(name(), true);
    e.call(now, name(), vec![], CallOpts::default()).unwrap();
    assert!(matches!(e.poll_action(), Some(RpcAction::CallLocal { .. })));
}

#[test]
fn interests_report_each_new_provider_once() {
    let now = Instant::now();
    let mut e = engine();
    assert!(e.add_interest(now, name()));
    assert_eq!(
        e.poll_action(),
        Some(RpcAction::FindProviders { name: name() })
    );
    e.handle_providers(now, &name(), vec![]);
    assert!(e.poll_event().is_none());
    let t = now + e.config().interest_interval;
    assert_eq!(e.poll_timeout(), Some(t));
    e.handle_timeout(t);
    assert_eq!(
        e.poll_action(),
        Some(RpcAction::FindProviders { name: name() })
    );
    e.handle_providers(t, &name(), vec![peer(1)]);
    e.handle_providers(t, &name(), vec![peer(1), peer(2)]);
    let appeared: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(
        appeared,
        [
            RpcEvent::ProviderAppeared {
                name: name(),
                peer: peer(1)
            },
            RpcEvent::ProviderAppeared {
                name: name(),
                peer: peer(2)
            }
        ]
    );
    e.remove_interest(&name());
    e.handle_timeout(t + e.config().interest_interval);
    assert_eq!(e.poll_action(), None);
}

#[test]
fn calls_are_bounded_in_number_and_size() {
    let now = Instant::now();
    let mut e = RpcEngine::new(
        peer(0),
        RpcConfig {
            max_calls: 2,
            max_payload: 4,
            ..RpcConfig::default()
        },
    );
    assert_eq!(
        e.call(now, name(), vec![0; 5], CallOpts::default()),
        Err(CallError::PayloadTooLarge { limit: 4 })
    );
    e.call(now, name(), vec![], CallOpts::default()).unwrap();
    e.call(now, name(), vec![], CallOpts::default()).unwrap();
    assert_eq!(
        e.call(now, name(), vec![], CallOpts::default()),
        Err(CallError::Busy { limit: 2 })
    );
}

#[test]
fn least_latency_follows_measured_call_latencies() {
    let now = Instant::now();
    let mut e = with_providers(3, now);
    let slow = peer(2);
    let opts = CallOpts::default().with_strategy(Strategy::LeastLatency);
    let mut count: HashMap<PeerId, usize> = HashMap::new();
    for i in 0..100u8 {
        e.call(now, name(), vec![i], opts.clone()).unwrap();
        for (call, attempt, p) in sends(&mut e) {
            *count.entry(p).or_default() += 1;
            let took = if p == slow { 50 } else { 2 };
            e.handle_result(now + Duration::from_millis(took), call, attempt, Ok(vec![]));
        }
    }
    assert!(count.get(&slow).copied().unwrap_or(0) <= 1, "{count:?}");
}

#[test]
fn peer_statistics_are_bounded() {
    let now = Instant::now();
    let mut e = engine();
    for i in 1..=(MAX_PEER_STATS as u64 + 10) {
        e.handle_rtt(peer(i), Duration::from_millis(1));
    }
    assert_eq!(e.peers.len(), MAX_PEER_STATS);
    // Past the bound, idle ones are forgotten at the next lookup's answer.
    e.peers.insert(peer(99_999), PeerStats::default());
    e.handle_providers(now, &name(), vec![peer(1)]);
    assert!(e.peers.is_empty());
}

#[test]
fn finished_attempts_leave_no_timers_behind() {
    let now = Instant::now();
    let mut e = with_providers(3, now);
    for i in 0..1000u32 {
        e.call(now, name(), i.to_be_bytes().to_vec(), CallOpts::default())
            .unwrap();
        for (call, attempt, _) in sends(&mut e) {
            e.handle_result(now, call, attempt, Ok(vec![]));
        }
    }
    assert!(e.timers.is_empty(), "{} timers", e.timers.len());
    let id = e.call(now, name(), vec![], CallOpts::default()).unwrap();
    assert_eq!(e.timers.len(), 1);
    assert!(e.cancel(now, id));
    assert!(e.timers.is_empty());
}

#[test]
fn calls_wait_while_every_provider_is_at_its_limit() {
    let now = Instant::now();
    let mut e = RpcEngine::new(
        peer(0),
        RpcConfig {
            max_outstanding_per_provider: 2,
            ..RpcConfig::default()
        },
    );
    e.handle_providers(now, &name(), vec![peer(1), peer(2)]);
    for i in 0..6u8 {
        e.call(now, name(), vec![i], CallOpts::default()).unwrap();
    }
    // Two per provider go out; two wait.
    let first = sends(&mut e);
    assert_eq!(first.len(), 4);
    assert_eq!(e.outstanding(&peer(1)), 2);
    assert_eq!(e.outstanding(&peer(2)), 2);
    // Each finished attempt lets one waiting call go, to the provider with room.
    let (call, attempt, p) = first[0];
    e.handle_result(now, call, attempt, Ok(vec![]));
    let next = sends(&mut e);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].2, p);
    // A cancelled attempt frees its slot too.
    let (call, _, _) = first[1];
    assert!(e.cancel(now, call));
    assert_eq!(sends(&mut e).len(), 1);
    assert_eq!(e.calls_in_flight(), 4);
}

#[test]
fn durations_of_duration_max_mean_never_and_do_not_panic() {
    let now = Instant::now();
    let mut e = RpcEngine::new(
        peer(0),
        RpcConfig {
            seed: 7,
            provider_ttl: Duration::MAX,
            lookup_timeout: Duration::MAX,
            backoff: Duration::MAX,
            cache_ttl: Duration::MAX,
            interest_interval: Duration::MAX,
            ..RpcConfig::default()
        },
    );
    let forever = CallOpts {
        timeout: Duration::MAX,
        cache_ttl: Some(Duration::MAX),
        ..CallOpts::default()
    }
    .idempotent();
    // A lookup (no providers yet) and an interest, each with its timer.
    e.call(now, name(), vec![1], forever.clone()).unwrap();
    assert!(e.add_interest(now, name()));
    e.handle_providers(now, &name(), vec![peer(1), peer(2)]);
    let (id, a, p) = sends(&mut e)[0];
    // A failure backs the provider off "forever"; the retry's attempt never times out.
    e.handle_result(now, id, a, Err(AttemptError::NotDelivered("x".into())));
    assert!(e.is_backed_off(&p, now + Duration::from_secs(3600)));
    let (_, a2, _) = sends(&mut e)[0];
    let year = now + Duration::from_secs(365 * 24 * 3600);
    e.handle_timeout(year);
    assert!(finished(&mut e).is_empty(), "nothing timed out in a year");
    e.handle_result(year, id, a2, Ok(b"r".to_vec()));
    assert_eq!(finished(&mut e), [(id, Ok(b"r".to_vec()), false)]);
    // The result is cached "forever".
    let hit = e.call(year, name(), vec![1], forever).unwrap();
    assert_eq!(finished(&mut e), [(hit, Ok(b"r".to_vec()), true)]);
    assert!(e.poll_timeout().is_some_and(|t| t > year));
}
