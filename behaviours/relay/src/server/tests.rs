use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwire_core::{ConnectionId, Keypair, PeerId};
use prometheus_client::registry::Registry;

use super::*;
use crate::circuit::{CircuitEnd, CircuitEndReason};
use crate::metrics::RelayMetrics;
use crate::protocol::{Limit, Status};

const UNIX_NOW: u64 = 1_700_000_000;

fn peer(seed: u64) -> PeerId {
    Keypair::from_seed_for_tests(seed).peer_id()
}

fn conn(n: u64) -> ConnectionId {
    ConnectionId::from_raw(n)
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// Default limits without rate limiters (tests of rate limits turn theirs on).
fn no_rates() -> ServerConfig {
    ServerConfig {
        reservation_rate_per_peer: None,
        reservation_rate_per_ip: None,
        circuit_rate_per_peer: None,
        circuit_rate_per_ip: None,
        ..ServerConfig::default()
    }
}

fn engine(config: ServerConfig) -> RelayServerEngine {
    RelayServerEngine::new(config)
        .unwrap()
        .with_unix_clock(|| UNIX_NOW)
}

fn drain(e: &mut RelayServerEngine) -> Vec<ServerEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// What a remote asking on the wire would read: the status of the answer.
fn status<T>(r: Result<T, Refusal>) -> Status {
    match r {
        Ok(_) => Status::Ok,
        Err(refusal) => refusal.status(),
    }
}

#[test]
fn defaults_are_rust_libp2ps() {
    let c = ServerConfig::default();
    assert_eq!(c.reservation_duration, Duration::from_secs(3600));
    assert_eq!((c.max_reservations, c.max_reservations_per_peer), (128, 4));
    assert_eq!((c.max_circuits, c.max_circuits_per_peer), (16, 4));
    assert_eq!(c.max_circuit_duration, Some(Duration::from_secs(120)));
    assert_eq!(c.max_circuit_bytes, Some(131_072));
    assert_eq!(
        c.reservation_rate_per_peer,
        Some(RateLimit {
            limit: 30,
            interval: Duration::from_secs(120)
        })
    );
    assert_eq!(
        c.circuit_rate_per_ip,
        Some(RateLimit {
            limit: 60,
            interval: Duration::from_secs(60)
        })
    );
    assert_eq!(
        c.circuit_limit(),
        Some(Limit {
            duration: Some(120),
            data: Some(131_072)
        })
    );
    let private = ServerConfig {
        max_circuit_duration: None,
        max_circuit_bytes: None,
        ..ServerConfig::default()
    };
    assert_eq!(private.circuit_limit(), None);
}

#[test]
fn invalid_configs_are_refused() {
    let bad = [
        (
            ServerConfig {
                reservation_duration: Duration::from_millis(999),
                ..ServerConfig::default()
            },
            ConfigError::ReservationDuration,
        ),
        (
            ServerConfig {
                max_circuit_duration: Some(Duration::ZERO),
                ..ServerConfig::default()
            },
            ConfigError::CircuitDuration,
        ),
        (
            ServerConfig {
                max_circuit_bytes: Some(0),
                ..ServerConfig::default()
            },
            ConfigError::CircuitBytes,
        ),
        (
            ServerConfig {
                circuit_rate_per_ip: Some(RateLimit {
                    limit: 0,
                    interval: Duration::from_secs(1),
                }),
                ..ServerConfig::default()
            },
            ConfigError::RateLimit("circuit_rate_per_ip"),
        ),
        (
            ServerConfig {
                rate_limiter_max_tracked: 0,
                ..ServerConfig::default()
            },
            ConfigError::RateLimiterSize,
        ),
    ];
    for (config, error) in bad {
        assert_eq!(RelayServerEngine::new(config).err(), Some(error));
    }
}

#[test]
fn reservation_accepted_then_renewed_keeps_count() {
    let mut e = engine(no_rates());
    let t0 = Instant::now();
    let a = peer(1);
    let first = e.handle_reserve(t0, a, conn(1), ip("192.0.2.1")).unwrap();
    assert_eq!(
        first,
        ReserveAccepted {
            expire_unix: UNIX_NOW + 3600,
            renewed: false
        }
    );
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    let t1 = t0 + Duration::from_secs(1800);
    let renewal = e.handle_reserve(t1, a, conn(1), ip("192.0.2.1")).unwrap();
    assert!(renewal.renewed);
    assert_eq!(e.reservation_count(), 1);
    assert_eq!(e.poll_timeout(), Some(t1 + Duration::from_secs(3600)));
    assert_eq!(
        drain(&mut e),
        [
            ServerEvent::ReservationAccepted {
                peer: a,
                connection: conn(1),
                expire_unix: UNIX_NOW + 3600
            },
            ServerEvent::ReservationRenewed {
                peer: a,
                connection: conn(1),
                expire_unix: UNIX_NOW + 3600
            },
        ]
    );
    // The renewal postponed the end: not timed out at the first deadline.
    e.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(e.has_reservation(&a));
}

#[test]
fn max_reservations_per_peer() {
    let mut e = engine(no_rates());
    let t0 = Instant::now();
    let a = peer(1);
    for c in 0..4 {
        assert_eq!(status(e.handle_reserve(t0, a, conn(c), None)), Status::Ok);
    }
    assert_eq!(
        e.handle_reserve(t0, a, conn(4), None),
        Err(Refusal::MaxReservationsPerPeer)
    );
    assert_eq!(
        status(e.handle_reserve(t0, a, conn(4), None)),
        Status::ResourceLimitExceeded
    );
    // Renewals on held connections still pass; another peer is not affected.
    assert!(e.handle_reserve(t0, a, conn(0), None).unwrap().renewed);
    assert_eq!(
        status(e.handle_reserve(t0, peer(2), conn(9), None)),
        Status::Ok
    );
    assert_eq!(e.reservation_count(), 5);
}

#[test]
fn max_reservations_total_and_renewal_when_full() {
    let mut e = engine(ServerConfig {
        max_reservations: 3,
        ..no_rates()
    });
    let t0 = Instant::now();
    for n in 0..3 {
        e.handle_reserve(t0, peer(n), conn(n), None).unwrap();
    }
    assert_eq!(
        e.handle_reserve(t0, peer(3), conn(3), None),
        Err(Refusal::MaxReservations)
    );
    // rust-libp2p would refuse this renewal; the slot is already held.
    assert!(
        e.handle_reserve(t0, peer(0), conn(0), None)
            .unwrap()
            .renewed
    );
    // A slot frees when a connection closes.
    e.handle_connection_closed(peer(1), conn(1));
    assert_eq!(
        status(e.handle_reserve(t0, peer(3), conn(3), None)),
        Status::Ok
    );
}

#[test]
fn max_reservations_per_ip_counts_ipv6_by_prefix() {
    let mut e = engine(ServerConfig {
        max_reservations_per_ip: Some(2),
        ..no_rates()
    });
    let t0 = Instant::now();
    e.handle_reserve(t0, peer(1), conn(1), ip("192.0.2.1"))
        .unwrap();
    e.handle_reserve(t0, peer(2), conn(2), ip("192.0.2.1"))
        .unwrap();
    assert_eq!(
        e.handle_reserve(t0, peer(3), conn(3), ip("192.0.2.1")),
        Err(Refusal::MaxReservationsPerIp)
    );
    assert_eq!(
        status(e.handle_reserve(t0, peer(3), conn(3), ip("192.0.2.2"))),
        Status::Ok
    );
    // Without an IP (e.g. a memory transport) per-IP limits do not apply.
    assert_eq!(
        status(e.handle_reserve(t0, peer(4), conn(4), None)),
        Status::Ok
    );

    e.handle_reserve(t0, peer(5), conn(5), ip("2001:db8::1"))
        .unwrap();
    e.handle_reserve(t0, peer(6), conn(6), ip("2001:db8::ffff:2"))
        .unwrap();
    assert_eq!(
        e.handle_reserve(t0, peer(7), conn(7), ip("2001:db8:0:0:1::3")),
        Err(Refusal::MaxReservationsPerIp)
    );
    // Closing one frees its address's slot.
    e.handle_connection_closed(peer(5), conn(5));
    assert_eq!(
        status(e.handle_reserve(t0, peer(7), conn(7), ip("2001:db8::3"))),
        Status::Ok
    );
}

#[test]
fn reservation_rate_limits() {
    let mut e = engine(ServerConfig {
        reservation_rate_per_peer: Some(RateLimit {
            limit: 2,
            interval: Duration::from_secs(60),
        }),
        reservation_rate_per_ip: Some(RateLimit {
            limit: 3,
            interval: Duration::from_secs(60),
        }),
        ..no_rates()
    });
    let t0 = Instant::now();
    let a = peer(1);
    // Renewals take tokens too.
    e.handle_reserve(t0, a, conn(1), ip("192.0.2.1")).unwrap();
    e.handle_reserve(t0, a, conn(1), ip("192.0.2.1")).unwrap();
    assert_eq!(
        e.handle_reserve(t0, a, conn(1), ip("192.0.2.1")),
        Err(Refusal::PeerRateLimited)
    );
    assert_eq!(
        status(e.handle_reserve(t0, a, conn(1), ip("192.0.2.1"))),
        Status::ResourceLimitExceeded
    );
    // The IP had 2 of 3 tokens taken (the peer's refusals spent none of them).
    e.handle_reserve(t0, peer(2), conn(2), ip("192.0.2.1"))
        .unwrap();
    assert_eq!(
        e.handle_reserve(t0, peer(3), conn(3), ip("192.0.2.1")),
        Err(Refusal::IpRateLimited)
    );
    // A minute later each bucket earned one token.
    let t1 = t0 + Duration::from_secs(60);
    assert!(e.handle_reserve(t1, a, conn(1), ip("192.0.2.1")).is_ok());
    assert_eq!(
        e.handle_reserve(t1, peer(3), conn(3), ip("192.0.2.1")),
        Err(Refusal::IpRateLimited)
    );
}

#[test]
fn reservations_expire() {
    let mut e = engine(ServerConfig {
        reservation_duration: Duration::from_secs(10),
        ..no_rates()
    });
    let t0 = Instant::now();
    let (a, b) = (peer(1), peer(2));
    e.handle_reserve(t0, a, conn(1), None).unwrap();
    e.handle_reserve(t0 + Duration::from_secs(5), b, conn(2), None)
        .unwrap();
    drain(&mut e);
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    // Past its end but before the timeout ran, a reservation serves no circuit.
    let late = t0 + Duration::from_secs(11);
    assert_eq!(
        e.handle_connect(late, peer(3), conn(3), None, a),
        Err(Refusal::NoReservation)
    );
    e.handle_timeout(late);
    assert!(!e.has_reservation(&a) && e.has_reservation(&b));
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    let events = drain(&mut e);
    assert!(events.contains(&ServerEvent::ReservationTimedOut {
        peer: a,
        connection: conn(1)
    }));
    e.handle_timeout(t0 + Duration::from_secs(15));
    assert_eq!((e.reservation_count(), e.poll_timeout()), (0, None));
}

#[test]
fn connection_close_drops_its_reservation_only() {
    let mut e = engine(no_rates());
    let t0 = Instant::now();
    let a = peer(1);
    e.handle_reserve(t0, a, conn(1), None).unwrap();
    e.handle_reserve(t0, a, conn(2), None).unwrap();
    // Circuits go to the latest reservation.
    let c = e.handle_connect(t0, peer(9), conn(9), None, a).unwrap();
    assert_eq!(c.dst_connection, conn(2));
    drain(&mut e);

    let affected = e.handle_connection_closed(a, conn(2));
    assert_eq!(affected, [c.id]);
    assert_eq!(
        drain(&mut e),
        [ServerEvent::ReservationClosed {
            peer: a,
            connection: conn(2)
        }]
    );
    assert!(e.has_reservation(&a));
    let c2 = e.handle_connect(t0, peer(9), conn(9), None, a).unwrap();
    assert_eq!(c2.dst_connection, conn(1));
    e.handle_connection_closed(a, conn(1));
    assert!(!e.has_reservation(&a));
    assert_eq!(
        status(e.handle_connect(t0, peer(9), conn(9), None, a)),
        Status::NoReservation
    );
    // Unrelated connections affect nothing.
    drain(&mut e);
    assert!(e.handle_connection_closed(peer(5), conn(5)).is_empty());
    assert_eq!(e.poll_event(), None);
}

#[test]
fn circuit_lifecycle_and_events() {
    let metrics = RelayMetrics::register(&mut Registry::default());
    let mut e = engine(no_rates()).with_metrics(metrics.clone());
    let t0 = Instant::now();
    let (dst, src) = (peer(1), peer(2));
    e.handle_reserve(t0, dst, conn(1), None).unwrap();
    let c = e.handle_connect(t0, src, conn(2), None, dst).unwrap();
    assert_eq!(e.circuit_count(), 1);
    assert_eq!(metrics.circuits(), 1);
    assert!(!e.circuits().next().unwrap().established);
    assert!(e.handle_circuit_established(c.id));
    assert!(!e.handle_circuit_established(c.id), "only once");
    assert!(e.circuits().next().unwrap().established);
    let end = CircuitEnd {
        bytes_a_to_b: 100,
        bytes_b_to_a: 50,
        reason: CircuitEndReason::Finished,
    };
    assert!(e.handle_circuit_closed(c.id, end));
    assert!(!e.handle_circuit_closed(c.id, end), "unknown now");
    assert_eq!(e.circuit_count(), 0);
    let events = drain(&mut e);
    assert_eq!(
        events[1..],
        [
            ServerEvent::CircuitAccepted { id: c.id, src, dst },
            ServerEvent::CircuitClosed {
                id: c.id,
                src,
                dst,
                end
            },
        ]
    );
    assert_eq!(metrics.circuits_opened(), 1);
    assert_eq!(metrics.circuits_closed("finished"), 1);
    assert_eq!(metrics.bytes_relayed(), 150);
    assert_eq!(metrics.circuits(), 0);
    assert_eq!(metrics.reservations(), 1);

    // The destination refuses: a refusal the source learns, and the slots are free.
    let c = e.handle_connect(t0, src, conn(2), None, dst).unwrap();
    e.handle_circuit_closed(c.id, CircuitEnd::stop_refused(Status::ConnectionFailed));
    assert_eq!(
        drain(&mut e),
        [ServerEvent::CircuitRefused {
            id: Some(c.id),
            src,
            dst,
            refusal: Refusal::Destination(Status::ConnectionFailed)
        }]
    );
    assert_eq!(metrics.circuits_refused("destination"), 1);
    // A failed setup that the driver reports as an error counts as CONNECTION_FAILED.
    let c = e.handle_connect(t0, src, conn(2), None, dst).unwrap();
    e.handle_circuit_closed(
        c.id,
        CircuitEnd {
            bytes_a_to_b: 0,
            bytes_b_to_a: 0,
            reason: CircuitEndReason::Error(std::io::ErrorKind::ConnectionReset),
        },
    );
    assert!(matches!(
        e.poll_event(),
        Some(ServerEvent::CircuitRefused {
            refusal: Refusal::Destination(Status::ConnectionFailed),
            ..
        })
    ));
    assert_eq!(e.circuit_count(), 0);
}

#[test]
fn max_circuits_total() {
    let mut e = engine(ServerConfig {
        max_circuits: 2,
        ..no_rates()
    });
    let t0 = Instant::now();
    for n in 1..=3 {
        e.handle_reserve(t0, peer(n), conn(n), None).unwrap();
    }
    let first = e
        .handle_connect(t0, peer(10), conn(10), None, peer(1))
        .unwrap();
    e.handle_connect(t0, peer(11), conn(11), None, peer(2))
        .unwrap();
    assert_eq!(
        e.handle_connect(t0, peer(12), conn(12), None, peer(3)),
        Err(Refusal::MaxCircuits)
    );
    assert_eq!(
        status(e.handle_connect(t0, peer(12), conn(12), None, peer(3))),
        Status::ResourceLimitExceeded
    );
    e.handle_circuit_closed(first.id, CircuitEnd::stop_refused(Status::ConnectionFailed));
    assert_eq!(
        status(e.handle_connect(t0, peer(12), conn(12), None, peer(3))),
        Status::Ok
    );
}

#[test]
fn max_circuits_per_peer_as_source_and_destination() {
    let mut e = engine(ServerConfig {
        max_circuits_per_peer: 2,
        ..no_rates()
    });
    let t0 = Instant::now();
    let (d1, d2, d3) = (peer(1), peer(2), peer(3));
    for (n, d) in [d1, d2, d3].into_iter().enumerate() {
        e.handle_reserve(t0, d, conn(n as u64), None).unwrap();
    }
    // One source, two circuits: its limit.
    let s = peer(10);
    e.handle_connect(t0, s, conn(10), None, d1).unwrap();
    e.handle_connect(t0, s, conn(10), None, d2).unwrap();
    assert_eq!(
        e.handle_connect(t0, s, conn(10), None, d3),
        Err(Refusal::MaxCircuitsPerPeer)
    );
    // d1 is a destination once; one more source fills it.
    e.handle_connect(t0, peer(11), conn(11), None, d1).unwrap();
    assert_eq!(
        status(e.handle_connect(t0, peer(12), conn(12), None, d1)),
        Status::ResourceLimitExceeded
    );
    assert_eq!(
        status(e.handle_connect(t0, peer(12), conn(12), None, d3)),
        Status::Ok
    );
}

#[test]
fn circuit_rate_limits() {
    let mut e = engine(ServerConfig {
        circuit_rate_per_peer: Some(RateLimit {
            limit: 1,
            interval: Duration::from_secs(120),
        }),
        circuit_rate_per_ip: Some(RateLimit {
            limit: 2,
            interval: Duration::from_secs(60),
        }),
        ..no_rates()
    });
    let t0 = Instant::now();
    let d = peer(1);
    e.handle_reserve(t0, d, conn(1), None).unwrap();
    let s = peer(2);
    e.handle_connect(t0, s, conn(2), ip("198.51.100.7"), d)
        .unwrap();
    assert_eq!(
        e.handle_connect(t0, s, conn(2), ip("198.51.100.7"), d),
        Err(Refusal::PeerRateLimited)
    );
    // Tokens are spent before the reservation is looked up: probing costs.
    assert_eq!(
        e.handle_connect(t0, peer(3), conn(3), ip("198.51.100.7"), peer(99)),
        Err(Refusal::NoReservation)
    );
    assert_eq!(
        e.handle_connect(t0, peer(4), conn(4), ip("198.51.100.7"), d),
        Err(Refusal::IpRateLimited)
    );
    // As in rust-libp2p, the peer's token was spent before its IP was refused.
    assert_eq!(
        e.handle_connect(t0, peer(4), conn(4), ip("198.51.100.8"), d),
        Err(Refusal::PeerRateLimited)
    );
    assert_eq!(
        status(e.handle_connect(t0, peer(5), conn(5), ip("198.51.100.8"), d)),
        Status::Ok
    );
    assert_eq!(
        status(e.handle_connect(t0 + Duration::from_secs(120), s, conn(2), None, d)),
        Status::Ok
    );
}

#[test]
fn allow_list_denies_permission() {
    let (friend, stranger) = (peer(1), peer(2));
    let mut e = engine(ServerConfig {
        access: Some(Arc::new(AllowList::new([friend]))),
        ..no_rates()
    });
    let t0 = Instant::now();
    assert_eq!(
        e.handle_reserve(t0, stranger, conn(2), None),
        Err(Refusal::PermissionDenied)
    );
    assert_eq!(
        status(e.handle_reserve(t0, stranger, conn(2), None)),
        Status::PermissionDenied
    );
    e.handle_reserve(t0, friend, conn(1), None).unwrap();
    // Anyone may reach a listed peer; nobody may reach an unlisted one.
    assert_eq!(
        status(e.handle_connect(t0, stranger, conn(2), None, friend)),
        Status::Ok
    );
    assert_eq!(
        status(e.handle_connect(t0, friend, conn(1), None, stranger)),
        Status::PermissionDenied
    );
    assert!(matches!(
        drain(&mut e)[0],
        ServerEvent::ReservationRefused {
            refusal: Refusal::PermissionDenied,
            ..
        }
    ));
}

#[test]
fn metrics_count_reservations() {
    let mut registry = Registry::default();
    let metrics = RelayMetrics::register(&mut registry);
    let mut e = engine(ServerConfig {
        max_reservations: 1,
        reservation_duration: Duration::from_secs(10),
        ..no_rates()
    })
    .with_metrics(metrics.clone());
    let t0 = Instant::now();
    e.handle_reserve(t0, peer(1), conn(1), None).unwrap();
    e.handle_reserve(t0, peer(1), conn(1), None).unwrap();
    let _ = e.handle_reserve(t0, peer(2), conn(2), None);
    assert_eq!(metrics.reservations(), 1);
    assert_eq!(metrics.reservations_refused("max_reservations"), 1);
    e.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(metrics.reservations(), 0);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "relay_reservations 0",
        "relay_reservations_accepted_total{kind=\"new\"} 1",
        "relay_reservations_accepted_total{kind=\"renewal\"} 1",
        "relay_reservations_refused_total{reason=\"max_reservations\"} 1",
        "relay_reservations_ended_total{reason=\"timed_out\"} 1",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn undrained_events_are_bounded() {
    let mut e = engine(ServerConfig {
        max_reservations: 0,
        ..no_rates()
    });
    let t0 = Instant::now();
    for n in 0..2000 {
        let _ = e.handle_reserve(t0, peer(1), conn(n), None);
    }
    assert_eq!(drain(&mut e).len(), 1024);
}
