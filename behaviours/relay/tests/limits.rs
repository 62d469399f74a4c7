//! Every limit of the relay server, through real swarms on loopback QUIC, with what the remote
//! sees: the status of a refused reservation or circuit (as the client's event, listener close
//! and dial error carry it), circuits cut at their duration or data limit, reservations that
//! are renewed, expire, or end with their connection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_core::Keypair;
use meshwire_relay::circuit::CircuitEndReason;
use meshwire_relay::client::{self, CircuitError};
use meshwire_relay::protocol::{HopRequest, Status};
use meshwire_relay::server::{AllowList, Refusal};
use meshwire_relay::{ServerConfig, ServerEvent};
use meshwire_swarm::{DialError, SwarmEvent};

fn refused(e: &CircuitError) -> Option<Status> {
    match e {
        CircuitError::Refused { status, .. } => Some(*status),
        _ => None,
    }
}

/// Asserts that a circuit dial failed because the relay answered `status`, and that the dial
/// error says so in words.
fn assert_dial_refused(e: &DialError, status: Status) {
    assert_eq!(refused_status(e), Some(status), "{e}");
    assert!(e.to_string().contains(status.as_str()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_is_cut_at_its_duration_limit() {
    let mut relay = start_relay(ServerConfig {
        max_circuit_duration: Some(Duration::from_secs(2)),
        ..ServerConfig::default()
    })
    .await;
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut dialer = start_client(client::Config::default());
    let started = Instant::now();
    let conn = dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("relayed connection");
    // Both ends were told the limit.
    let limit = dialer
        .find_or_wait("the circuit's limit", |e| {
            match client_event::<ClientNode>(e) {
                Some(client::Event::OutboundCircuitEstablished { limit, .. }) => Some(*limit),
                _ => None,
            }
        })
        .await
        .expect("a limit");
    assert_eq!(limit.duration_limit(), Some(Duration::from_secs(2)));
    let inbound_limit = listener
        .find_or_wait("the inbound circuit", |e| {
            match client_event::<ClientNode>(e) {
                Some(client::Event::InboundCircuitEstablished { src, limit, .. }) => {
                    assert_eq!(*src, dialer.peer);
                    Some(*limit)
                }
                _ => None,
            }
        })
        .await;
    assert_eq!(inbound_limit, Some(limit));

    // The relayed connection carries pings until the relay cuts it.
    dialer
        .wait_for("a relayed ping", |e| match e {
            SwarmEvent::Behaviour(ClientNodeEvent::Ping(meshwire_ping::Event {
                connection,
                result: Ok(_),
                ..
            })) if *connection == conn => Some(()),
            _ => None,
        })
        .await;
    dialer
        .wait_for("the relayed connection to close", |e| match e {
            SwarmEvent::ConnectionClosed { connection_id, .. } if *connection_id == conn => {
                Some(())
            }
            _ => None,
        })
        .await;
    let lived = started.elapsed();
    assert!(lived >= Duration::from_secs(2), "closed after {lived:?}");
    let end = relay
        .wait_event("the circuit's end", |e| match e {
            ServerEvent::CircuitClosed { end, src, dst, .. } => {
                assert_eq!((*src, *dst), (dialer.peer, listener.peer));
                Some(*end)
            }
            _ => None,
        })
        .await;
    assert_eq!(end.reason, CircuitEndReason::DurationLimit);
    assert!(end.bytes_a_to_b > 0 && end.bytes_b_to_a > 0, "{end:?}");
    // The listener's side of the circuit closed too.
    listener
        .wait_for("the listener's relayed connection to close", |e| match e {
            SwarmEvent::ConnectionClosed {
                peer_id, endpoint, ..
            } if *peer_id == dialer.peer => {
                assert!(endpoint.is_relayed());
                Some(())
            }
            _ => None,
        })
        .await;
    assert_eq!(relay.counts().await, (1, 0), "the reservation stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_is_cut_at_its_data_limit() {
    const LIMIT: u64 = 32 * 1024;
    let mut relay = start_relay(ServerConfig {
        max_circuit_bytes: Some(LIMIT),
        ..ServerConfig::default()
    })
    .await;
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut dialer = start_client(client::Config::default());
    let conn = dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("relayed connection");
    let limit = dialer
        .find_or_wait("the circuit's limit", |e| {
            match client_event::<ClientNode>(e) {
                Some(client::Event::OutboundCircuitEstablished { limit, .. }) => Some(*limit),
                _ => None,
            }
        })
        .await;
    assert_eq!(limit.and_then(|l| l.data_limit()), Some(LIMIT));

    // Twice the limit on a ping stream (the listener echoes it back) cannot get through.
    let handle = dialer
        .call(move |s| s.connection(conn).cloned())
        .await
        .expect("the relayed connection");
    let stream = handle
        .open_negotiated([meshwire_ping::PROTOCOL.as_ref()], T)
        .await
        .expect("a ping stream over the circuit")
        .1;
    let (mut reader, mut writer) = stream.split();
    let payload = vec![7u8; 2 * LIMIT as usize];
    let write = async {
        let _ = writer.write_all(&payload).await;
        let _ = writer.flush().await;
    };
    let read = async {
        let mut echoed = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return echoed,
                Ok(n) => {
                    assert!(buf[..n].iter().all(|b| *b == 7));
                    echoed += n as u64;
                }
            }
        }
    };
    let ((), echoed) = tokio::time::timeout(T, futures::future::join(write, read))
        .await
        .expect("the stream fails in time");
    assert!(
        echoed < LIMIT,
        "{echoed} bytes echoed through a circuit of {LIMIT}"
    );
    dialer
        .wait_for("the relayed connection to close", |e| match e {
            SwarmEvent::ConnectionClosed { connection_id, .. } if *connection_id == conn => {
                Some(())
            }
            _ => None,
        })
        .await;
    let end = relay
        .wait_event("the circuit's end", |e| match e {
            ServerEvent::CircuitClosed { end, .. } => Some(*end),
            _ => None,
        })
        .await;
    assert_eq!(end.reason, CircuitEndReason::DataLimit);
    println!(
        "data limit {LIMIT}: relayed {} + {} bytes, {echoed} echoed to the dialer",
        end.bytes_a_to_b, end.bytes_b_to_a
    );
    assert!(end.total_bytes() <= LIMIT, "{end:?}");
    assert!(end.total_bytes() > LIMIT / 2, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_per_peer_are_limited() {
    let mut relay = start_relay(ServerConfig {
        max_reservations_per_peer: 1,
        ..ServerConfig::default()
    })
    .await;
    // One identity, two swarms: two connections of the same peer to the relay.
    let key = Keypair::generate();
    let mut first = Node::spawn(client_swarm(
        key.clone(),
        client::Config::default(),
        swarm_config(),
        None,
    ));
    first.reserve(&relay.addr).await;
    let mut second = Node::spawn(client_swarm(
        key,
        client::Config::default(),
        swarm_config(),
        None,
    ));
    let error = second
        .try_reserve(&relay.addr)
        .await
        .expect_err("a second reservation of the peer");
    assert_eq!(
        refused(&error),
        Some(Status::ResourceLimitExceeded),
        "{error}"
    );
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::ReservationRefused { refusal, peer, .. } => {
                assert_eq!(*peer, first.peer);
                Some(*refusal)
            }
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::MaxReservationsPerPeer);
    assert_eq!(relay.counts().await, (1, 0));
    assert_eq!(
        second.call(|s| s.listeners().count()).await,
        0,
        "the refused listener is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_in_total_are_limited() {
    let mut relay = start_relay(ServerConfig {
        max_reservations: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut clients: Vec<_> = (0..3)
        .map(|_| start_client(client::Config::default()))
        .collect();
    clients[0].reserve(&relay.addr).await;
    clients[1].reserve(&relay.addr).await;
    let error = clients[2]
        .try_reserve(&relay.addr)
        .await
        .expect_err("a third reservation");
    assert_eq!(refused(&error), Some(Status::ResourceLimitExceeded));
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::ReservationRefused { refusal, .. } => Some(*refusal),
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::MaxReservations);
    assert_eq!(relay.counts().await, (2, 0));

    // A slot frees when a holder leaves; the third client gets it.
    let gone = clients[0].peer;
    drop(clients.remove(0));
    relay
        .wait_event("the first reservation to end", |e| match e {
            ServerEvent::ReservationClosed { peer, .. } if *peer == gone => Some(()),
            _ => None,
        })
        .await;
    clients[1].reserve(&relay.addr).await;
    assert_eq!(relay.counts().await, (2, 0));
    assert_eq!(
        relay
            .max_reservations
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_per_peer_are_limited() {
    let mut relay = start_relay(ServerConfig {
        max_circuits_per_peer: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut listener = start_client(client::Config::default());
    listener.reserve(&relay.addr).await;
    let mut first = start_client(client::Config::default());
    first
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("the first circuit");
    // The listener takes part in one circuit already: a second one to it is refused.
    let mut second = start_client(client::Config::default());
    let error = second
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect_err("a second circuit to the listener");
    assert_dial_refused(&error, Status::ResourceLimitExceeded);
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::CircuitRefused { refusal, src, .. } if *src == second.peer => {
                Some(*refusal)
            }
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::MaxCircuitsPerPeer);
    // The client reports the failed circuit with the same words.
    let report = second
        .find_or_wait("the client's report", |e| {
            match client_event::<ClientNode>(e) {
                Some(client::Event::OutboundCircuitFailed { error, .. }) => Some(error.clone()),
                _ => None,
            }
        })
        .await;
    assert!(report.contains("RESOURCE_LIMIT_EXCEEDED"), "{report}");
    assert_eq!(relay.counts().await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_in_total_are_limited() {
    let mut relay = start_relay(ServerConfig {
        max_circuits: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut a = start_client(client::Config::default());
    a.reserve(&relay.addr).await;
    let mut b = start_client(client::Config::default());
    b.reserve(&relay.addr).await;
    let mut dialer = start_client(client::Config::default());
    dialer
        .dial_circuit(&relay.addr, a.peer)
        .await
        .expect("the first circuit");
    let mut other = start_client(client::Config::default());
    let error = other
        .dial_circuit(&relay.addr, b.peer)
        .await
        .expect_err("a second circuit");
    assert_dial_refused(&error, Status::ResourceLimitExceeded);
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::CircuitRefused { refusal, .. } => Some(*refusal),
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::MaxCircuits);
    assert_eq!(relay.counts().await, (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_a_peer_without_reservation_is_refused() {
    let mut relay = start_relay(ServerConfig::default()).await;
    // A peer connected to the relay, but without a reservation.
    let mut unreserved = start_client(client::Config::default());
    let relay_addr = relay.addr.clone();
    unreserved
        .call(move |s| s.dial(relay_addr))
        .await
        .expect("dial the relay");
    unreserved
        .wait_for("the connection to the relay", |e| match e {
            SwarmEvent::ConnectionEstablished { .. } => Some(()),
            _ => None,
        })
        .await;
    let mut dialer = start_client(client::Config::default());
    let error = dialer
        .dial_circuit(&relay.addr, unreserved.peer)
        .await
        .expect_err("no reservation");
    assert_dial_refused(&error, Status::NoReservation);
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::CircuitRefused { refusal, dst, .. } => {
                assert_eq!(*dst, unreserved.peer);
                Some(*refusal)
            }
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::NoReservation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_denies_strangers() {
    let mut member = start_client(client::Config::default());
    let mut relay = start_relay(ServerConfig {
        access: Some(std::sync::Arc::new(AllowList::new([member.peer]))),
        ..ServerConfig::default()
    })
    .await;
    member.reserve(&relay.addr).await;
    let mut stranger = start_client(client::Config::default());
    let error = stranger
        .try_reserve(&relay.addr)
        .await
        .expect_err("a stranger's reservation");
    assert_eq!(refused(&error), Some(Status::PermissionDenied), "{error}");
    let refusal = relay
        .wait_event("the refusal", |e| match e {
            ServerEvent::ReservationRefused { refusal, .. } => Some(*refusal),
            _ => None,
        })
        .await;
    assert_eq!(refusal, Refusal::PermissionDenied);
    // Anyone may reach a member; nobody reaches a stranger.
    stranger
        .dial_circuit(&relay.addr, member.peer)
        .await
        .expect("a circuit to a member");
    let mut dialer = start_client(client::Config::default());
    let error = dialer
        .dial_circuit(&relay.addr, stranger.peer)
        .await
        .expect_err("a circuit to a stranger");
    assert_dial_refused(&error, Status::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_is_renewed_and_keeps_working() {
    let duration = Duration::from_secs(3);
    let mut relay = start_relay(ServerConfig {
        reservation_duration: duration,
        ..ServerConfig::default()
    })
    .await;
    let mut listener = start_client(client::Config {
        renew_when_left: 0.5,
        renew_margin: Duration::from_secs(1),
        ..client::Config::default()
    });
    let reserved_at = Instant::now();
    let (id, addr) = listener.reserve(&relay.addr).await;
    let mut renewals = 0;
    while renewals < 2 || reserved_at.elapsed() < duration + Duration::from_millis(500) {
        let expire = listener
            .wait_for("a renewal", |e| match client_event::<ClientNode>(e) {
                Some(client::Event::ReservationAccepted {
                    renewal: true,
                    expire,
                    ..
                }) => Some(*expire),
                _ => None,
            })
            .await;
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(expire > now_unix, "a renewal extends the reservation");
        renewals += 1;
    }
    relay
        .wait_event("the relay's renewal", |e| match e {
            ServerEvent::ReservationRenewed { peer, .. } if *peer == listener.peer => Some(()),
            _ => None,
        })
        .await;
    assert!(!relay
        .events()
        .any(|e| matches!(e, ServerEvent::ReservationTimedOut { .. })));
    // Past the first reservation's end, the relayed address still reaches the listener.
    let mut dialer = start_client(client::Config::default());
    dialer
        .dial_circuit(&relay.addr, listener.peer)
        .await
        .expect("the relayed address works");
    assert!(!listener.seen(|e| matches!(
        e,
        SwarmEvent::ListenerClosed { listener_id, .. } if *listener_id == id
    )));
    assert_eq!(
        listener
            .call(|s| s.listeners().cloned().collect::<Vec<_>>())
            .await,
        vec![addr]
    );
    assert_eq!(relay.counts().await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_expires_without_renewal() {
    let duration = Duration::from_secs(2);
    let mut relay = start_relay(ServerConfig {
        reservation_duration: duration,
        ..ServerConfig::default()
    })
    .await;
    // A raw client reserves once and never renews (keeping its connection open).
    let conn = raw_connect(&relay.addr).await;
    let (answer, _) = raw_hop_request(&conn, HopRequest::Reserve).await;
    let reserved_at = Instant::now();
    assert_eq!(answer.status, Status::Ok);
    relay
        .wait_event("the reservation", |e| match e {
            ServerEvent::ReservationAccepted { .. } => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(relay.counts().await.0, 1);
    let me = relay
        .wait_event("the reservation to time out", |e| match e {
            ServerEvent::ReservationTimedOut { peer, .. } => Some(*peer),
            _ => None,
        })
        .await;
    let lived = reserved_at.elapsed();
    assert!(
        lived >= duration - Duration::from_millis(100),
        "expired after {lived:?}"
    );
    assert_eq!(relay.counts().await.0, 0);
    // Nobody reaches it through the relay any more.
    let mut dialer = start_client(client::Config::default());
    let error = dialer
        .dial_circuit(&relay.addr, me)
        .await
        .expect_err("the reservation expired");
    assert_dial_refused(&error, Status::NoReservation);
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_ends_with_its_connection() {
    let mut relay = start_relay(ServerConfig::default()).await;
    let mut listener = start_client(client::Config::default());
    let (id, _) = listener.reserve(&relay.addr).await;
    let relay_peer = relay.peer;
    assert!(
        listener
            .call(move |s| s.disconnect_peer_id(relay_peer))
            .await
    );
    // The client's listener closes: its reservation is gone with the connection.
    let reason = listener
        .wait_for("the listener to close", |e| match e {
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } if *listener_id == id => Some(match reason {
                Err(e) => circuit_error(e).cloned(),
                Ok(()) => None,
            }),
            _ => None,
        })
        .await;
    assert!(
        matches!(reason, Some(CircuitError::ConnectionLost { relay }) if relay == relay_peer),
        "{reason:?}"
    );
    let peer = listener.peer;
    relay
        .wait_event("the reservation to close", |e| match e {
            ServerEvent::ReservationClosed { peer: p, .. } if *p == peer => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(relay.counts().await, (0, 0));
    let mut dialer = start_client(client::Config::default());
    let error = dialer
        .dial_circuit(&relay.addr, peer)
        .await
        .expect_err("no reservation any more");
    assert_dial_refused(&error, Status::NoReservation);
}
