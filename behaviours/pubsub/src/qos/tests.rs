//! The QoS tracker's timing and bounds, and the QoS wire against hostile input.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meshwire_core::{Keypair, PeerId};
use proptest::prelude::*;

use super::wire::{self, FrameLimits, QosFrame, QosWireError};
use super::{QosConfig, QosError, QosOutcome, QosTracker};
use crate::engine::MessageId;
use crate::wire::{self as gwire, sign, Rpc};

fn peer(i: u64) -> PeerId {
    Keypair::from_seed_for_tests(i).peer_id()
}

fn message(seqno: u64) -> gwire::Message {
    sign::sign(
        &Keypair::from_seed_for_tests(1),
        seqno,
        "t".into(),
        b"d".to_vec(),
    )
}

fn limits() -> FrameLimits {
    FrameLimits {
        max_frame: 65_536,
        max_acks: 4,
        max_id_len: 16,
    }
}

#[test]
fn retransmissions_double_their_wait_then_the_verdict_names_the_silent_peers() {
    let t0 = Instant::now();
    let mut q = QosTracker::new(QosConfig::default());
    let peers: BTreeSet<PeerId> = [peer(2), peer(3)].into();
    let id = MessageId(b"m".to_vec());
    q.track(t0, id.clone(), message(1), peers).unwrap();
    assert!(q.expects(&id, &peer(2)));
    assert_eq!(q.handle_acks(peer(2), vec![b"m".to_vec()]), 1);
    assert!(!q.expects(&id, &peer(2)));
    // Retransmissions to peer 3 only, at 2, 2+4, 2+4+8 s; the verdict at 30 s.
    let mut at = Vec::new();
    while let Some(t) = q.poll_timeout() {
        let sent = q.handle_timeout(t);
        at.push((t - t0, sent));
        while let Some((p, frame)) = q.poll_transmit() {
            assert_eq!(p, peer(3));
            assert_eq!(frame.messages, vec![message(1)]);
        }
    }
    let secs = |s| Duration::from_secs(s);
    assert_eq!(
        at,
        vec![(secs(2), 1), (secs(6), 1), (secs(14), 1), (secs(30), 0)]
    );
    assert_eq!(
        q.poll_event(),
        Some(QosOutcome::Failed {
            message_id: id,
            acked: vec![peer(2)],
            failed: vec![peer(3)],
        })
    );
    assert_eq!(q.sizes(), Default::default());
}

#[test]
fn bounds_refuse_or_drop_and_acks_are_batched() {
    let t0 = Instant::now();
    let mut q = QosTracker::new(QosConfig {
        max_outstanding: 2,
        max_subscribers: 2,
        max_ack_batch: 3,
        max_pending_acks: 5,
        max_queued_frames: 1,
        ..QosConfig::default()
    });
    let two: BTreeSet<PeerId> = [peer(2), peer(3)].into();
    let three: BTreeSet<PeerId> = [peer(2), peer(3), peer(4)].into();
    assert_eq!(
        q.track(t0, MessageId(b"a".to_vec()), message(1), three),
        Err(QosError::TooManySubscribers { count: 3, max: 2 })
    );
    q.track(t0, MessageId(b"a".to_vec()), message(1), two.clone())
        .unwrap();
    q.track(t0, MessageId(b"b".to_vec()), message(2), two.clone())
        .unwrap();
    assert_eq!(
        q.track(t0, MessageId(b"c".to_vec()), message(3), two),
        Err(QosError::Busy(2))
    );
    // Two messages × two peers due, one frame of room: three retransmissions skipped.
    let t = q.poll_timeout().unwrap();
    assert_eq!(q.handle_timeout(t), 1);
    assert_eq!(q.stats().retransmissions_dropped, 3);
    assert!(q.poll_transmit().is_some());
    // Acks: 6 queued, 5 kept, sent as batches of at most 3.
    for i in 0..6u8 {
        q.queue_ack(peer(9), &MessageId(vec![i]));
    }
    assert_eq!(q.stats().acks_dropped, 1);
    let batches: Vec<usize> = std::iter::from_fn(|| q.poll_transmit())
        .map(|(_, f)| f.acks.len())
        .collect();
    assert_eq!(batches, vec![3, 2]);
    // A peer's unsent acks go with it.
    q.queue_ack(peer(9), &MessageId(vec![1]));
    q.handle_peer_disconnected(&peer(9));
    assert_eq!(q.sizes().pending_acks, 0);
}

#[test]
fn the_mark_rides_on_an_rpc_unchanged_and_is_found() {
    let rpc = Rpc {
        publish: vec![message(7)],
        ..Rpc::default()
    };
    let plain = gwire::encode_rpc(&rpc);
    let mut marked = plain.clone();
    wire::mark(&mut marked);
    assert_eq!(marked.len(), plain.len() + 5);
    assert!(wire::is_marked(&marked));
    assert!(!wire::is_marked(&plain));
    // Decoders that do not know the field read the same RPC.
    assert_eq!(gwire::decode_rpc(&marked, 65_536).unwrap(), rpc);
    assert!(!wire::is_marked(b"\xff\xff\xff"));
    // The mark's bytes inside a payload, not as a field: not a mark.
    let mut tail = Vec::new();
    wire::mark(&mut tail);
    let inside = Rpc {
        control: Some(gwire::ControlMessage {
            ihave: vec![gwire::ControlIHave {
                topic_id: Some("t".into()),
                message_ids: vec![tail.clone()],
            }],
            ..Default::default()
        }),
        ..Rpc::default()
    };
    let bytes = gwire::encode_rpc(&inside);
    assert!(bytes.ends_with(&tail));
    assert!(!wire::is_marked(&bytes));
}

#[test]
fn hostile_frames_are_typed_errors() {
    let enc = |f: &QosFrame| wire::encode(f);
    let l = limits();
    assert_eq!(
        wire::decode_frame(&vec![0u8; 70_000], &l),
        Err(QosWireError::TooLarge {
            len: 70_000,
            max: 65_536
        })
    );
    assert!(matches!(
        wire::decode_frame(b"\x0a\xff\xff\xff\xff\x0f", &l),
        Err(QosWireError::Protobuf(_))
    ));
    let acks = |n: usize, len: usize| QosFrame {
        acks: vec![vec![b'x'; len]; n],
        messages: Vec::new(),
    };
    assert_eq!(
        wire::decode_frame(&enc(&acks(5, 1)), &l),
        Err(QosWireError::TooManyAcks { count: 5, max: 4 })
    );
    assert_eq!(
        wire::decode_frame(&enc(&acks(1, 17)), &l),
        Err(QosWireError::IdTooLong { len: 17, max: 16 })
    );
    assert_eq!(
        wire::decode_frame(
            &enc(&QosFrame {
                acks: Vec::new(),
                messages: vec![message(1), message(2)],
            }),
            &l
        ),
        Err(QosWireError::TooManyMessages { count: 2 })
    );
    assert_eq!(wire::decode_frame(&[], &l), Err(QosWireError::Empty));
    let good = acks(4, 16);
    assert_eq!(wire::decode_frame(&enc(&good), &l), Ok(good));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode_frame(&bytes, &limits());
        let _ = wire::is_marked(&bytes);
    }

    #[test]
    fn frames_round_trip(ids in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 1..4)) {
        let frame = QosFrame { acks: ids, messages: Vec::new() };
        prop_assert_eq!(wire::decode_frame(&wire::encode(&frame), &limits()), Ok(frame));
    }
}

#[test]
fn consecutive_failures_demote_a_peer_and_settle_its_other_messages_as_failed() {
    let t0 = Instant::now();
    let config = QosConfig {
        max_outstanding_per_peer: 3,
        max_subscribers: 2,
        demote_after: 2,
        max_retransmissions: 0,
        ..QosConfig::default()
    };
    let mut q = QosTracker::new(config.clone());
    let (good, silent) = (peer(2), peer(3));
    // Best first, at most `max_subscribers`: the third is not expected (no error).
    assert_eq!(q.select(t0, [good, silent, peer(4)]), [good, silent].into());
    let ids: Vec<MessageId> = (0..4u8).map(|i| MessageId(vec![i])).collect();
    for (i, id) in ids.iter().enumerate().take(3) {
        let expected = q.select(t0, [good, silent]);
        q.track(t0, id.clone(), message(i as u64), expected)
            .unwrap();
    }
    // At its cap of 3 the silent peer (and the good one) are not expected; an ack frees room.
    assert!(q.select(t0, [good, silent]).is_empty());
    assert_eq!(q.handle_acks(good, vec![vec![0], vec![1], vec![2]]), 3);
    assert_eq!(q.select(t0, [good, silent]), [good].into());
    assert_eq!(q.stats().not_expected, 1 + 2 + 1);
    // The first verdicts fail the silent peer twice: demoted, and message 2, still waiting
    // for it, is settled as failed at once with it named.
    let t = q.poll_timeout().unwrap();
    q.handle_timeout(t);
    let outcomes: Vec<QosOutcome> = std::iter::from_fn(|| q.poll_event()).collect();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(|o| matches!(o,
        QosOutcome::Failed { acked, failed, .. } if acked == &vec![good] && failed == &vec![silent])));
    assert_eq!((q.stats().demotions, q.stats().failed), (1, 3));
    assert_eq!(q.sizes().outstanding, 0);
    assert!(q.is_demoted(&silent, t));
    assert_eq!(q.select(t, [good, silent]), [good].into());
    // An ack resets the count; after the back-off the peer is expected again.
    let back = t + config.demote_for;
    assert!(!q.is_demoted(&silent, back));
    assert_eq!(q.select(back, [silent]), [silent].into());
    q.track(back, ids[3].clone(), message(3), [silent].into())
        .unwrap();
    assert_eq!(q.handle_acks(silent, vec![vec![3]]), 1);
    assert_eq!(
        q.poll_event(),
        Some(QosOutcome::Delivered {
            message_id: ids[3].clone(),
            acked: vec![silent],
        })
    );
}
