use std::time::Duration;

use bytes::Bytes;

use super::harness::{Net, A, B};
use super::*;

/// What one of the harness's messages (8 bytes) counts against the windows.
const MSG: u64 = MESSAGE_COST + 8;

/// Windows of 64 of the harness's messages.
fn config() -> SessionConfig {
    SessionConfig::default()
        .with_max_message(8)
        .with_send_window_bytes(64 * MSG as usize)
        .with_recv_window_bytes(64 * MSG)
        .with_fallback_window(Duration::from_secs(1))
        .with_drain_timeout(Duration::from_millis(500))
}

fn switched(events: &[SessionEvent]) -> Vec<(Option<PathId>, PathId, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Switched {
                from, to, fallback, ..
            } => Some((*from, *to, *fallback)),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_arrive_in_order_both_ways_and_acks_free_the_window() {
    let mut net = Net::new(config());
    net.open(A, PathKind::Relayed);
    assert_eq!(
        net.send(A, 100),
        64,
        "the send window bounds what is queued"
    );
    assert_eq!(net.send(B, 10), 10);
    net.settle();
    // B answered with Welcome; its messages went out once the path was active on its side.
    assert_eq!(net.received[B], 64);
    assert_eq!(net.received[A], 10);
    // Reading granted credit and acknowledgements freed A's window.
    assert_eq!(net.send(A, 36), 36);
    net.settle();
    assert_eq!(net.received[B], 100);
    net.tick(Duration::from_millis(10));
    net.settle();
    assert!(net.engines[A].all_acknowledged() && net.engines[B].all_acknowledged());
}

#[test]
fn the_receiver_never_holds_more_than_its_credit() {
    let mut net = Net::new(config().with_send_window_bytes(1000 * MSG as usize));
    let path = net.open(A, PathKind::Relayed);
    net.send(A, 1000);
    net.pump(A, usize::MAX);
    net.deliver(path, A, usize::MAX);
    net.pump(B, usize::MAX);
    net.deliver(path, B, usize::MAX);
    net.pump(A, usize::MAX);
    net.deliver(path, A, usize::MAX);
    // B does not read: A stops at the credit B granted (64).
    assert_eq!(net.engines[B].readable(), 64);
    assert_eq!(net.engines[A].poll_transmit(net.now), None);
    assert_eq!(net.engines[A].stats().credit_stalls, 1);
    net.read(B);
    net.settle();
    assert_eq!(net.received[B], 1000);
}

#[test]
fn a_direct_path_takes_over_mid_flight_without_loss_or_duplicates() {
    let mut net = Net::new(config());
    let relay = net.open(A, PathKind::Relayed);
    net.send(A, 40);
    net.send(B, 40);
    net.settle();
    // 30 more each way, in flight on the relay (written, not delivered) when the direct
    // path appears.
    net.send(A, 30);
    net.send(B, 30);
    net.pump(A, usize::MAX);
    net.pump(B, usize::MAX);
    let direct = net.open(A, PathKind::Direct);
    net.pump(A, usize::MAX);
    net.deliver(direct, A, usize::MAX); // Hello: B switches and re-sends its tail
    net.pump(B, usize::MAX);
    net.deliver(direct, B, usize::MAX); // Welcome: A switches and re-sends its tail
    net.pump(A, usize::MAX);
    net.deliver(direct, A, usize::MAX);
    net.read(A);
    net.read(B);
    assert_eq!(
        net.received,
        [70, 70],
        "the tails arrived on the direct path"
    );
    // The relay's copies arrive late and are dropped.
    net.deliver(relay, A, usize::MAX);
    net.deliver(relay, B, usize::MAX);
    net.settle();
    assert_eq!(net.received, [70, 70]);
    for side in [A, B] {
        assert_eq!(net.engines[side].current_path(), Some(direct));
        assert_eq!(
            switched(&net.events[side]).last(),
            Some(&(Some(relay), direct, false))
        );
        let stats = net.engines[side].stats();
        assert_eq!(stats.messages_migrated, 30);
        assert_eq!(stats.bytes_resent, 30 * 8);
    }
    assert_eq!(net.engines[A].stats().duplicates_dropped, 30);
}

#[test]
fn the_old_path_is_fenced_and_closed_after_the_fallback_window() {
    let mut net = Net::new(config());
    let relay = net.open(A, PathKind::Relayed);
    net.send(A, 5);
    net.settle();
    net.open(A, PathKind::Direct);
    net.settle();
    net.tick(Duration::from_millis(999));
    net.settle();
    assert!(net.links.contains_key(&relay), "still standing by");
    net.tick(Duration::from_millis(1));
    net.settle();
    assert!(
        !net.links.contains_key(&relay),
        "fenced both ways, then closed"
    );
    assert_eq!(net.closed, [vec![relay], vec![relay]]);
    net.send(A, 5);
    net.send(B, 5);
    net.settle();
    assert_eq!(net.received, [5, 10]);
}

#[test]
fn a_direct_path_dying_after_the_switch_falls_back_to_the_relay() {
    let mut net = Net::new(config());
    let relay = net.open(A, PathKind::Relayed);
    net.send(A, 20);
    net.send(B, 20);
    net.settle();
    let direct = net.open(A, PathKind::Direct);
    net.settle();
    // Messages written on the direct path, then the path dies with them in flight.
    net.send(A, 30);
    net.send(B, 30);
    net.pump(A, usize::MAX);
    net.pump(B, usize::MAX);
    net.deliver(direct, A, 10);
    net.kill(direct);
    net.settle();
    assert_eq!(net.received, [50, 50]);
    for side in [A, B] {
        assert_eq!(net.engines[side].current_path(), Some(relay));
        assert_eq!(
            switched(&net.events[side]).last(),
            Some(&(Some(direct), relay, true))
        );
        assert_eq!(net.engines[side].stats().fallbacks, 1);
    }
}

#[test]
fn a_relay_dying_during_the_upgrade_loses_nothing() {
    let mut net = Net::new(config());
    let relay = net.open(A, PathKind::Relayed);
    net.send(A, 20);
    net.send(B, 20);
    net.settle();
    net.send(A, 20);
    net.send(B, 20);
    net.pump(A, usize::MAX);
    net.pump(B, usize::MAX);
    let direct = net.open(A, PathKind::Direct);
    net.pump(A, usize::MAX);
    // The relay dies with 20 messages each way in flight, before the Hello is answered.
    net.kill(relay);
    assert_eq!(net.engines[A].current_path(), None);
    assert!(net.events[A].contains(&SessionEvent::NoPath));
    net.settle();
    assert_eq!(net.received, [40, 40]);
    assert_eq!(net.engines[A].current_path(), Some(direct));
}

#[test]
fn a_refused_path_leaves_the_traffic_where_it_was() {
    let mut net = Net::new(config().with_max_paths(1));
    let relay = net.open(A, PathKind::Relayed);
    net.send(A, 10);
    net.settle();
    let direct = net.open(A, PathKind::Direct);
    net.send(A, 10);
    net.settle();
    assert!(net.events[A].contains(&SessionEvent::PathRefused {
        path: direct,
        reason: RefuseReason::TooManyPaths
    }));
    assert_eq!(net.engines[A].current_path(), Some(relay));
    assert_eq!(net.received[B], 20);
    assert!(!net.links.contains_key(&direct));
}

#[test]
fn an_opening_path_that_closes_is_reported_failed() {
    let mut net = Net::new(config());
    let relay = net.open(A, PathKind::Relayed);
    net.settle();
    let direct = net.open(A, PathKind::Direct);
    net.kill(direct);
    assert!(net.events[A].contains(&SessionEvent::PathFailed { path: direct }));
    assert_eq!(net.engines[A].current_path(), Some(relay));
}

#[test]
fn fin_is_reported_after_the_last_message() {
    let mut net = Net::new(config());
    net.open(A, PathKind::Relayed);
    net.send(A, 10);
    net.engines[A].close();
    assert_eq!(
        net.engines[A].send(Bytes::from_static(b"x")),
        Err(SendError::Closed)
    );
    net.settle();
    assert_eq!(net.received[B], 10);
    assert!(net.events[B].contains(&SessionEvent::Finished));
}

#[test]
fn no_path_for_the_path_timeout_fails_the_session() {
    let mut net = Net::new(config().with_path_timeout(Duration::from_secs(3)));
    let relay = net.open(A, PathKind::Relayed);
    net.settle();
    net.kill(relay);
    let now = net.now;
    assert_eq!(
        net.engines[A].poll_timeout(),
        Some(now + Duration::from_secs(3))
    );
    net.now += Duration::from_secs(3);
    net.engines[A].handle_timeout(net.now);
    assert!(matches!(
        net.engines[A].poll_event(),
        Some(SessionEvent::Failed(SessionError::NoPath(_)))
    ));
}

#[test]
fn acknowledgements_are_delayed_then_sent() {
    let mut net = Net::new(config());
    let path = net.open(A, PathKind::Relayed);
    net.settle();
    net.send(A, 1);
    net.pump(A, usize::MAX);
    net.deliver(path, A, usize::MAX);
    // One message is under the threshold (64 / 8): the ack waits for the delay.
    assert_eq!(net.engines[B].poll_transmit(net.now), None);
    let due = net.engines[B].poll_timeout().unwrap();
    assert_eq!(due, net.now + Duration::from_millis(5));
    net.tick(Duration::from_millis(5));
    assert_eq!(
        net.engines[B].poll_transmit(net.now),
        Some(Transmit::Frame {
            path,
            frame: Frame::Ack {
                next: 1,
                limit: 64 * MSG
            }
        })
    );
}

#[test]
fn protocol_violations_fail_the_session() {
    let now = Instant::now();
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame::Data {
                seq: 64 * MSG / MESSAGE_COST,
                payload: Bytes::new(),
            },
            "beyond the credit",
        ),
        (Frame::Ack { next: 1, limit: 1 }, "ack of unsent data"),
        (
            Frame::Welcome {
                path: 0,
                recv_next: 0,
                recv_limit: 0,
            },
            "welcome on an active path",
        ),
    ];
    for (frame, what) in cases {
        let mut b = SessionEngine::new_responder(1, config(), now);
        assert_eq!(b.handle_hello(now, PathKind::Relayed, 0, 0, 64), Ok(true));
        assert!(b.handle_frame(now, 0, frame).is_err(), "{what}");
        let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert!(
            events.iter().any(|e| matches!(e, SessionEvent::Failed(_))),
            "{what}"
        );
        assert_eq!(b.send(Bytes::new()), Err(SendError::Closed));
    }
    // A Hello with our own parity of path id, or a frame on a path never opened.
    let mut b = SessionEngine::new_responder(1, config(), now);
    assert!(b.handle_hello(now, PathKind::Direct, 1, 0, 64).is_err());
    let mut b = SessionEngine::new_responder(1, config(), now);
    assert!(b
        .handle_frame(now, 8, Frame::Fence { next_seq: 0 })
        .is_err());
}

#[test]
fn data_past_the_byte_credit_fails_the_session_with_a_typed_error() {
    let now = Instant::now();
    let mut b = SessionEngine::new_responder(1, config(), now);
    assert_eq!(b.handle_hello(now, PathKind::Relayed, 0, 0, 64), Ok(true));
    // The window is 64 messages of 8 bytes (2,560 bytes): 64 are taken unread, a 65th — in
    // order, of the same size — is past the credit.
    for seq in 0..64 {
        let frame = Frame::Data {
            seq,
            payload: Bytes::from_static(b"12345678"),
        };
        assert_eq!(b.handle_frame(now, 0, frame), Ok(()));
    }
    let over = Frame::Data {
        seq: 64,
        payload: Bytes::from_static(b"12345678"),
    };
    assert_eq!(
        b.handle_frame(now, 0, over),
        Err(SessionError::Protocol("Data beyond the credit"))
    );
    assert_eq!(b.readable(), 64);
}

/// Found by the property test: the Welcome on a path that died before it arrived carried the
/// only credit update, and the receiver took it as sent: both sides waited forever.
#[test]
fn credit_carried_by_a_lost_welcome_is_sent_again() {
    let mut net = Net::new(
        config()
            .with_recv_window_bytes(24 * MSG)
            .with_send_window_bytes(32 * MSG as usize),
    );
    let first = net.open(A, PathKind::Relayed);
    net.kill(first);
    let direct = net.open(A, PathKind::Direct);
    net.pump(A, 1);
    net.deliver(direct, A, 1);
    net.send(B, 25);
    net.pump(B, usize::MAX);
    let relay = net.open(B, PathKind::Relayed);
    net.deliver(direct, B, usize::MAX);
    net.read(A);
    assert_eq!(net.received[A], 24, "the credit");
    net.pump(B, 1);
    net.deliver(relay, B, 1);
    net.kill(relay);
    net.settle();
    net.tick(Duration::from_millis(10));
    net.settle();
    assert_eq!(net.received[A], 25);
}

#[test]
fn encoded_output_is_the_encoding_of_the_transmits_in_the_same_order() {
    let now = Instant::now();
    let mut engines = [
        SessionEngine::new_initiator(7, config(), now),
        SessionEngine::new_initiator(7, config(), now),
    ];
    for engine in &mut engines {
        engine.open_path(now, PathKind::Relayed);
        assert!(engine
            .handle_frame(
                now,
                0,
                Frame::Welcome {
                    path: 0,
                    recv_next: 0,
                    recv_limit: 1024,
                },
            )
            .is_ok());
        for i in 0..5u8 {
            assert!(engine.send(Bytes::from(vec![i; 3 + i as usize])).is_ok());
        }
        engine.close();
    }
    let mut expected = Vec::new();
    while let Some(Transmit::Frame { path, frame }) = engines[0].poll_transmit(now) {
        let body = frame.encode();
        let mut prefix = unsigned_varint::encode::usize_buffer();
        let mut framed = unsigned_varint::encode::usize(body.len(), &mut prefix).to_vec();
        framed.extend_from_slice(&body);
        expected.push((path, framed));
    }
    let mut got = Vec::new();
    let mut out = BytesMut::new();
    while let Some(Encoded::Frame { path }) =
        engines[1].poll_transmit_framed(now, |_| Some(&mut out))
    {
        got.push((path, out.split().to_vec()));
    }
    // A frame for a path without a buffer is dropped, the next one still produced.
    let mut engine = SessionEngine::new_initiator(7, config(), now);
    let path = engine.open_path(now, PathKind::Relayed);
    assert_eq!(
        engine.poll_transmit_framed(now, |_| None),
        Some(Encoded::Frame { path })
    );
    assert_eq!(engine.poll_transmit_framed(now, |_| Some(&mut out)), None);
    assert!(out.is_empty());
    // Hello, the acknowledgement of the switch, five messages, Fin.
    assert_eq!(expected.len(), 8);
    assert_eq!(got, expected);
}
