use super::*;

/// A private address: no predicted ports.
fn addr() -> Multiaddr {
    "/ip4/10.9.0.7/udp/4001/quic-v1".parse().unwrap()
}

fn public(port: u16) -> Multiaddr {
    format!("/ip4/198.51.100.7/udp/{port}/quic-v1")
        .parse()
        .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Fixture {
    e: HolepunchEngine,
    t0: Instant,
    peer: PeerId,
    relayed: ConnectionId,
}

fn fixture(role: Role) -> Fixture {
    let mut e = HolepunchEngine::new(HolepunchConfig::default());
    let t0 = Instant::now();
    let peer = PeerId::random();
    let relayed = ConnectionId::next();
    e.handle_relayed_connection(t0, peer, relayed, role, false);
    Fixture {
        e,
        t0,
        peer,
        relayed,
    }
}

fn events(e: &mut HolepunchEngine) -> Vec<HolepunchEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// Runs the initiator's exchange of `attempt` and its dial; returns the dial's id.
fn initiator_attempt(f: &mut Fixture, now: Instant, attempt: u8, rtt: Duration) -> ConnectionId {
    assert_eq!(
        f.e.poll_action(),
        Some(Action::OpenStream {
            peer: f.peer,
            relayed: f.relayed,
            attempt
        })
    );
    f.e.handle_exchange_succeeded(now, f.peer, attempt, vec![addr()], Some(rtt));
    let at = f.e.poll_timeout().expect("dial scheduled");
    // Nothing before the scheduled time.
    if at > now {
        f.e.handle_timeout(at - ms(1));
        assert_eq!(f.e.poll_action(), None);
    }
    f.e.handle_timeout(at);
    assert_eq!(
        f.e.poll_action(),
        Some(Action::Dial {
            peer: f.peer,
            addrs: vec![addr()],
            attempt
        })
    );
    let dial = ConnectionId::next();
    f.e.handle_dial_issued(f.peer, dial);
    dial
}

#[test]
fn initiator_dials_at_half_rtt_then_full_rtt_then_at_once() {
    let mut f = fixture(Role::Initiator);
    let rtt = ms(100);
    let t = f.t0;
    let d1 = initiator_attempt(&mut f, t, 1, rtt);
    // The first dial is at RTT/2.
    f.e.handle_dial_failed(t + ms(50), d1, "refused".into());
    assert!(matches!(
        &events(&mut f.e)[..],
        [HolepunchEvent::AttemptFinished {
            attempt: 1,
            outcome: AttemptOutcome::DialFailed(_),
            ..
        }]
    ));
    let t2 = t + ms(60);
    let d2 = initiator_attempt(&mut f, t2, 2, rtt);
    // Attempt 2 waits a full RTT: its timeout runs from the dial.
    assert_eq!(
        f.e.poll_timeout(),
        Some(t2 + rtt + f.e.config().attempt_timeout)
    );
    f.e.handle_dial_failed(t2 + rtt, d2, "refused".into());
    let t3 = t2 + ms(200);
    let _ = events(&mut f.e);
    assert!(matches!(
        f.e.poll_action(),
        Some(Action::OpenStream { attempt: 3, .. })
    ));
    f.e.handle_exchange_succeeded(t3, f.peer, 3, vec![addr()], Some(rtt));
    // Attempt 3 dials at once.
    assert_eq!(f.e.poll_timeout(), Some(t3));
}

#[test]
fn three_failed_attempts_end_the_session() {
    let mut f = fixture(Role::Initiator);
    let mut now = f.t0;
    for attempt in 1..=3 {
        let _dial = initiator_attempt(&mut f, now, attempt, ms(10));
        now = f.e.poll_timeout().expect("attempt timeout");
        f.e.handle_timeout(now);
    }
    let ev = events(&mut f.e);
    let finished: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            HolepunchEvent::AttemptFinished {
                attempt, outcome, ..
            } => Some((*attempt, outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        vec![
            (1, AttemptOutcome::TimedOut),
            (2, AttemptOutcome::TimedOut),
            (3, AttemptOutcome::TimedOut)
        ]
    );
    assert_eq!(
        ev.last(),
        Some(&HolepunchEvent::DirectConnectionUpgradeFailed {
            peer: f.peer,
            relayed: f.relayed,
            role: Role::Initiator,
            attempts: 3,
            error: UpgradeError::AttemptsExceeded {
                attempts: 3,
                last: AttemptOutcome::TimedOut
            }
        })
    );
    assert!(!f.e.is_active(&f.peer));
    assert_eq!(f.e.poll_action(), None);
    assert_eq!(f.e.poll_timeout(), None);
}

#[test]
fn a_direct_connection_from_either_side_is_success() {
    let mut f = fixture(Role::Initiator);
    let t0 = f.t0;
    let _ = initiator_attempt(&mut f, t0, 1, ms(30));
    let direct = ConnectionId::next();
    // The remote's dial won: our dial is still pending.
    f.e.handle_direct_connection(f.t0 + ms(40), f.peer, direct);
    let ev = events(&mut f.e);
    assert_eq!(
        ev[1],
        HolepunchEvent::DirectConnectionUpgradeSucceeded {
            peer: f.peer,
            relayed: f.relayed,
            direct,
            role: Role::Initiator,
            attempts: 1,
            elapsed: ms(40)
        }
    );
    // Our dial failing later changes nothing.
    f.e.handle_timeout(f.t0 + Duration::from_secs(60));
    assert!(events(&mut f.e).is_empty());
}

#[test]
fn unsupported_or_no_addresses_end_the_session_at_once() {
    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    f.e.handle_exchange_failed(f.t0, f.peer, 1, AttemptOutcome::Unsupported);
    assert!(matches!(
        events(&mut f.e).last(),
        Some(HolepunchEvent::DirectConnectionUpgradeFailed {
            error: UpgradeError::Aborted(AttemptOutcome::Unsupported),
            attempts: 1,
            ..
        })
    ));
    assert_eq!(f.e.poll_action(), None);

    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![], Some(ms(5)));
    assert!(matches!(
        events(&mut f.e).last(),
        Some(HolepunchEvent::DirectConnectionUpgradeFailed {
            error: UpgradeError::Aborted(AttemptOutcome::NoAddresses),
            ..
        })
    ));
}

#[test]
fn cancel_stops_a_punch_in_flight() {
    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![addr()], Some(ms(100)));
    assert!(f.e.cancel(f.t0 + ms(10), f.peer));
    // The scheduled dial never happens.
    f.e.handle_timeout(f.t0 + ms(100));
    assert_eq!(f.e.poll_action(), None);
    let ev = events(&mut f.e);
    assert!(matches!(
        &ev[..],
        [
            HolepunchEvent::AttemptFinished {
                outcome: AttemptOutcome::Cancelled,
                attempt: 1,
                ..
            },
            HolepunchEvent::DirectConnectionUpgradeFailed {
                error: UpgradeError::Aborted(AttemptOutcome::Cancelled),
                ..
            }
        ]
    ));
    // A late exchange result or direct connection is ignored.
    f.e.handle_direct_connection(f.t0 + ms(200), f.peer, ConnectionId::next());
    assert!(events(&mut f.e).is_empty());
    assert!(!f.e.cancel(f.t0, f.peer));
}

#[test]
fn stale_results_of_an_older_attempt_are_ignored() {
    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    f.e.handle_exchange_failed(f.t0, f.peer, 1, AttemptOutcome::ExchangeFailed("io".into()));
    assert!(matches!(
        f.e.poll_action(),
        Some(Action::OpenStream { attempt: 2, .. })
    ));
    // Attempt 1 finishing late does nothing.
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![addr()], Some(ms(5)));
    assert_eq!(f.e.poll_timeout(), None);
    f.e.handle_exchange_succeeded(f.t0, f.peer, 2, vec![addr()], Some(ms(6)));
    assert_eq!(f.e.poll_timeout(), Some(f.t0 + ms(6)));
}

#[test]
fn responder_dials_on_sync_and_waits_for_retries() {
    let mut f = fixture(Role::Responder);
    assert_eq!(f.e.poll_action(), None);
    // A stream on another connection is refused.
    assert_eq!(
        f.e.handle_inbound_stream(f.t0, f.peer, ConnectionId::next()),
        None
    );
    assert_eq!(f.e.handle_inbound_stream(f.t0, f.peer, f.relayed), Some(1));
    // A second stream while the first runs is refused.
    assert_eq!(f.e.handle_inbound_stream(f.t0, f.peer, f.relayed), None);
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![addr()], None);
    assert!(matches!(
        f.e.poll_action(),
        Some(Action::Dial { attempt: 1, .. })
    ));
    let d = ConnectionId::next();
    f.e.handle_dial_issued(f.peer, d);
    f.e.handle_dial_failed(f.t0 + ms(5), d, "unreachable".into());
    // Waiting for the initiator's next attempt.
    let wait = f.e.config().responder_wait;
    assert_eq!(f.e.poll_timeout(), Some(f.t0 + ms(5) + wait));
    assert_eq!(
        f.e.handle_inbound_stream(f.t0 + ms(9), f.peer, f.relayed),
        Some(2)
    );
    f.e.handle_exchange_succeeded(f.t0 + ms(10), f.peer, 2, vec![addr()], None);
    let _ = f.e.poll_action();
    let direct = ConnectionId::next();
    f.e.handle_direct_connection(f.t0 + ms(20), f.peer, direct);
    assert!(matches!(
        events(&mut f.e).last(),
        Some(HolepunchEvent::DirectConnectionUpgradeSucceeded {
            attempts: 2,
            role: Role::Responder,
            ..
        })
    ));
}

#[test]
fn responder_gives_up_when_the_initiator_does_not_retry() {
    let mut f = fixture(Role::Responder);
    let _ = f.e.handle_inbound_stream(f.t0, f.peer, f.relayed);
    f.e.handle_exchange_failed(
        f.t0,
        f.peer,
        1,
        AttemptOutcome::ExchangeFailed("eof".into()),
    );
    let due = f.e.poll_timeout().unwrap();
    f.e.handle_timeout(due);
    assert!(matches!(
        events(&mut f.e).last(),
        Some(HolepunchEvent::DirectConnectionUpgradeFailed {
            error: UpgradeError::NoRetry { attempts: 1, .. },
            ..
        })
    ));
}

#[test]
fn relayed_close_ends_the_session_and_direct_skips_it() {
    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    // Another connection closing does nothing.
    f.e.handle_relayed_closed(f.t0, f.peer, ConnectionId::next());
    assert!(f.e.is_active(&f.peer));
    f.e.handle_relayed_closed(f.t0, f.peer, f.relayed);
    assert!(matches!(
        events(&mut f.e).last(),
        Some(HolepunchEvent::DirectConnectionUpgradeFailed {
            error: UpgradeError::Aborted(AttemptOutcome::RelayedConnectionClosed),
            ..
        })
    ));
    // With a direct connection already there, nothing starts.
    let peer = PeerId::random();
    f.e.handle_relayed_connection(f.t0, peer, ConnectionId::next(), Role::Initiator, true);
    assert!(!f.e.is_active(&peer));
    assert_eq!(f.e.poll_action(), None);
    // A responder that never got a CONNECT reports nothing for a direct connection.
    let mut f = fixture(Role::Responder);
    f.e.handle_direct_connection(f.t0, f.peer, ConnectionId::next());
    assert!(events(&mut f.e).is_empty());
}

#[test]
fn sessions_are_bounded() {
    let mut e = HolepunchEngine::new(HolepunchConfig {
        max_sessions: 2,
        ..HolepunchConfig::default()
    });
    let now = Instant::now();
    for _ in 0..3 {
        e.handle_relayed_connection(
            now,
            PeerId::random(),
            ConnectionId::next(),
            Role::Initiator,
            false,
        );
    }
    assert_eq!(std::iter::from_fn(|| e.poll_action()).count(), 2);
}

#[test]
fn retries_also_dial_predicted_ports_of_public_addresses() {
    let mut f = fixture(Role::Initiator);
    let _ = f.e.poll_action();
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![public(20000), addr()], Some(ms(2)));
    f.e.handle_timeout(f.t0 + ms(1));
    // Attempt 1: plain DCUtR.
    let Some(Action::Dial { addrs, .. }) = f.e.poll_action() else {
        panic!("dial")
    };
    assert_eq!(addrs, vec![public(20000), addr()]);
    let d = ConnectionId::next();
    f.e.handle_dial_issued(f.peer, d);
    f.e.handle_dial_failed(f.t0 + ms(5), d, "timeout".into());
    // Attempt 2: the next 5 ports of the public address, right after it.
    let _ = f.e.poll_action();
    f.e.handle_exchange_succeeded(
        f.t0 + ms(6),
        f.peer,
        2,
        vec![public(20000), addr()],
        Some(ms(2)),
    );
    f.e.handle_timeout(f.t0 + ms(8));
    let Some(Action::Dial {
        addrs, attempt: 2, ..
    }) = f.e.poll_action()
    else {
        panic!("dial")
    };
    let mut expected: Vec<Multiaddr> = (20000..=20005).map(public).collect();
    expected.push(addr());
    assert_eq!(addrs, expected);
}

#[test]
fn a_port_window_hint_predicts_from_the_first_attempt() {
    let mut f = fixture(Role::Initiator);
    f.e.set_port_window_hint(f.peer, Some(3));
    let _ = f.e.poll_action();
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![public(20000), addr()], Some(ms(2)));
    f.e.handle_timeout(f.t0 + ms(1));
    let Some(Action::Dial {
        addrs, attempt: 1, ..
    }) = f.e.poll_action()
    else {
        panic!("dial")
    };
    let mut expected: Vec<Multiaddr> = (20000..=20003).map(public).collect();
    expected.push(addr());
    assert_eq!(addrs, expected, "attempt 1 already dials the window");
}

#[test]
fn predicted_ports_are_bounded() {
    let many: Vec<Multiaddr> = (0..10).map(|i| public(1000 * i + 1)).collect();
    assert_eq!(with_predicted_ports(many.clone(), 5, 16).len(), 16);
    // No wrap past the last port, no duplicates, loopback untouched.
    assert_eq!(
        with_predicted_ports(vec![public(65534), public(65535)], 3, 16),
        vec![public(65534), public(65535)]
    );
    let lo: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
    assert_eq!(with_predicted_ports(vec![lo.clone()], 5, 16), vec![lo]);
    assert_eq!(with_predicted_ports(many, 0, 64).len(), 10);
}

#[test]
fn a_new_connect_supersedes_the_responders_dial() {
    let mut f = fixture(Role::Responder);
    assert_eq!(f.e.handle_inbound_stream(f.t0, f.peer, f.relayed), Some(1));
    f.e.handle_exchange_succeeded(f.t0, f.peer, 1, vec![addr()], None);
    let _ = f.e.poll_action();
    f.e.handle_dial_issued(f.peer, ConnectionId::next());
    // The initiator's attempt timed out first: its next CONNECT arrives while we dial.
    assert_eq!(
        f.e.handle_inbound_stream(f.t0 + ms(100), f.peer, f.relayed),
        Some(2)
    );
    assert!(matches!(
        &events(&mut f.e)[..],
        [HolepunchEvent::AttemptFinished {
            attempt: 1,
            outcome: AttemptOutcome::Superseded,
            ..
        }]
    ));
    // The stale timeout of attempt 1 does not end attempt 2.
    f.e.handle_timeout(f.t0 + Duration::from_secs(9));
    assert!(events(&mut f.e).is_empty());
    assert!(f.e.is_active(&f.peer));
}
