use meshwire_core::Keypair;
use proptest::prelude::*;

use super::sign::{self, MessageError};
use super::*;

/// A frame computed independently (Python's `cryptography` ed25519 and a hand-written proto2
/// encoder): one RPC publishing "hello" on "chat" with seqno 7, signed by the key with the
/// secret `[1; 32]`, its key inlined in `from` (so no `key` field).
const GOLDEN_FRAME: &str =
    "84011281010a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d9412\
1bf3748801b40f6f5c120568656c6c6f1a0800000000000000072204636861742a40b42b01879868eda30874\
8724e2f653451ceb23d16390472bb3377ba49c34a4b7836717c5b0307af2a282b8ad585760db9562cae3d1eff\
7da1a6c9dd2d49f350c";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn golden_key() -> Keypair {
    Keypair::from_secret_bytes([1; 32])
}

#[test]
fn signing_produces_the_golden_bytes() {
    let message = sign::sign(&golden_key(), 7, "chat".into(), b"hello".to_vec());
    assert_eq!(
        message.key, None,
        "an ed25519 key is inlined in the peer id"
    );
    let rpc = Rpc {
        publish: vec![message],
        ..Rpc::default()
    };
    assert_eq!(encode_frame(&rpc), hex(GOLDEN_FRAME));
}

#[test]
fn golden_frame_decodes_and_verifies() {
    let frame = hex(GOLDEN_FRAME);
    let (rpc, used) = decode_frame(&frame, DEFAULT_MAX_TRANSMIT_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!(used, frame.len());
    let verified = sign::verify(&rpc.publish[0]).unwrap();
    assert_eq!(verified.source, golden_key().peer_id());
    assert_eq!(verified.seqno, 7);
    assert_eq!(rpc.publish[0].data.as_deref(), Some(&b"hello"[..]));
}

#[test]
fn default_message_id_is_base58_author_then_decimal_seqno() {
    let peer = golden_key().peer_id();
    let id = sign::default_message_id(Some(&peer), Some(42));
    assert_eq!(id, format!("{}42", peer.to_base58()).into_bytes());
    assert_eq!(sign::default_message_id(None, None), b"15R0".to_vec());
}

#[test]
fn tampering_is_detected() {
    let good = sign::sign(&golden_key(), 1, "t".into(), b"x".to_vec());
    let mut data = good.clone();
    data.data = Some(b"y".to_vec());
    assert_eq!(sign::verify(&data), Err(MessageError::InvalidSignature));
    let mut topic = good.clone();
    topic.topic = "u".into();
    assert_eq!(sign::verify(&topic), Err(MessageError::InvalidSignature));
    let mut other_author = good.clone();
    other_author.from = Some(Keypair::from_seed_for_tests(9).peer_id().to_bytes());
    assert_eq!(
        sign::verify(&other_author),
        Err(MessageError::InvalidSignature)
    );
    let mut wrong_key = good.clone();
    wrong_key.key = Some(Keypair::from_seed_for_tests(9).public().encode_protobuf());
    assert_eq!(sign::verify(&wrong_key), Err(MessageError::KeyMismatch));
    let mut own_key = good.clone();
    own_key.key = Some(golden_key().public().encode_protobuf());
    assert!(
        sign::verify(&own_key).is_ok(),
        "an explicit matching key is accepted"
    );
    let mut bad_key = good.clone();
    bad_key.key = Some(vec![1, 2, 3]);
    assert_eq!(sign::verify(&bad_key), Err(MessageError::InvalidKey));
    let mut unsigned = good.clone();
    unsigned.signature = None;
    assert_eq!(sign::verify(&unsigned), Err(MessageError::MissingSignature));
    let mut anonymous = good.clone();
    anonymous.from = None;
    assert_eq!(sign::verify(&anonymous), Err(MessageError::MissingSource));
    let mut junk_author = good.clone();
    junk_author.from = Some(vec![0xff; 5]);
    assert_eq!(sign::verify(&junk_author), Err(MessageError::InvalidPeerId));
}

#[test]
fn sequence_number_must_be_eight_bytes() {
    // Sign a message whose seqno is 4 bytes: the signature is valid, the seqno is not.
    let key = golden_key();
    let mut m = sign::sign(&key, 1, "t".into(), vec![]);
    m.seqno = Some(vec![0, 0, 0, 1]);
    m.signature = Some(key.sign(&sign::signed_bytes(&m)));
    assert_eq!(sign::verify(&m), Err(MessageError::InvalidSeqno { len: 4 }));
    m.seqno = None;
    m.signature = Some(key.sign(&sign::signed_bytes(&m)));
    assert_eq!(sign::verify(&m), Err(MessageError::MissingSeqno));
}

#[test]
fn frames_over_the_limit_are_refused_from_the_prefix_alone() {
    // The prefix announces 1 MiB; only the prefix is there.
    let mut prefix = unsigned_varint::encode::u64_buffer();
    let prefix = unsigned_varint::encode::u64(1 << 20, &mut prefix);
    assert_eq!(
        decode_frame(prefix, 1000),
        Err(WireError::TooLarge {
            len: 1 << 20,
            max: 1000
        })
    );
    assert!(matches!(
        decode_rpc(&[0u8; 2000], 1000),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn partial_frames_wait_and_bad_prefixes_fail() {
    let frame = hex(GOLDEN_FRAME);
    for cut in 0..frame.len() {
        assert_eq!(
            decode_frame(&frame[..cut], DEFAULT_MAX_TRANSMIT_SIZE),
            Ok(None)
        );
    }
    assert_eq!(
        decode_frame(&[0xff; 11], DEFAULT_MAX_TRANSMIT_SIZE),
        Err(WireError::InvalidPrefix)
    );
    // Not minimal: 0x80 0x00 encodes 0 in two bytes.
    assert_eq!(
        decode_frame(&[0x80, 0x00], DEFAULT_MAX_TRANSMIT_SIZE),
        Err(WireError::InvalidPrefix)
    );
}

#[test]
fn malformed_protobuf_is_a_typed_error() {
    // Field 2 (publish) announcing 50 bytes with 1 present.
    assert!(matches!(
        decode_rpc(&[0x12, 50, 0], 100),
        Err(WireError::Protobuf(_))
    ));
    // Field 1 (subscriptions) with the varint wire type instead of length-delimited.
    assert!(matches!(
        decode_rpc(&[0x08, 1], 100),
        Err(WireError::Protobuf(_))
    ));
    // A message without its (proto2 required) topic decodes with an empty one, as in
    // rust-libp2p's prost decoder; strict verification then refuses it (unsigned).
    let rpc = decode_rpc(&[0x12, 2, 0x12, 0], 100).unwrap();
    assert_eq!(rpc.publish[0].topic, "");
    assert!(sign::verify(&rpc.publish[0]).is_err());
}

#[test]
fn control_messages_round_trip() {
    let rpc = Rpc {
        subscriptions: vec![SubOpts {
            subscribe: Some(true),
            topic_id: Some("a".into()),
        }],
        publish: vec![],
        control: Some(ControlMessage {
            ihave: vec![ControlIHave {
                topic_id: Some("a".into()),
                message_ids: vec![b"m1".to_vec(), b"m2".to_vec()],
            }],
            iwant: vec![ControlIWant {
                message_ids: vec![b"m3".to_vec()],
            }],
            graft: vec![ControlGraft {
                topic_id: Some("a".into()),
            }],
            prune: vec![ControlPrune {
                topic_id: Some("b".into()),
                peers: vec![PeerInfo {
                    peer_id: Some(golden_key().peer_id().to_bytes()),
                    signed_peer_record: None,
                }],
                backoff: Some(60),
            }],
            idontwant: vec![ControlIDontWant {
                message_ids: vec![b"m4".to_vec(), b"m5".to_vec()],
            }],
            choke: vec![ControlChoke {
                topic_id: Some("a".into()),
            }],
            unchoke: vec![ControlChoke {
                topic_id: Some("b".into()),
            }],
            choke_supported: Some(true),
        }),
    };
    let frame = encode_frame(&rpc);
    let (back, used) = decode_frame(&frame, DEFAULT_MAX_TRANSMIT_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!((back, used), (rpc, frame.len()));
}

/// IDONTWANT's bytes, encoded by hand from libp2p/specs' `gossipsub-v1.2.md` proto: RPC field 3
/// (control, `1a`, 11 bytes) holding ControlMessage field 5 (idontwant, `2a`, 9 bytes) holding
/// ControlIDontWant field 1 (messageIDs, `0a`) twice: "m1" and "m22".
const IDONTWANT_FRAME: &str = "0d1a0b2a090a026d310a036d3232";

#[test]
fn idontwant_has_the_spec_bytes() {
    let rpc = Rpc {
        control: Some(ControlMessage {
            idontwant: vec![ControlIDontWant {
                message_ids: vec![b"m1".to_vec(), b"m22".to_vec()],
            }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    assert_eq!(encode_frame(&rpc), hex(IDONTWANT_FRAME));
    let (back, used) = decode_frame(&hex(IDONTWANT_FRAME), DEFAULT_MAX_TRANSMIT_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!((back.clone(), used), (rpc, 14));
    assert!(
        !back.control.unwrap().is_empty(),
        "IDONTWANT alone is control"
    );
}

#[test]
fn hostile_idontwant_is_a_typed_error() {
    // A frame of IDONTWANT ids larger than the limit: refused from its prefix.
    let ids: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let rpc = Rpc {
        control: Some(ControlMessage {
            idontwant: vec![ControlIDontWant { message_ids: ids }],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    let frame = encode_frame(&rpc);
    assert!(frame.len() > 10_000);
    assert!(matches!(
        decode_frame(&frame, 10_000),
        Err(WireError::TooLarge { max: 10_000, .. })
    ));
    // Field 5 with the varint wire type instead of a message.
    assert!(matches!(
        decode_rpc(&[0x1a, 2, 0x28, 1], 100),
        Err(WireError::Protobuf(_))
    ));
    // An id announcing 50 bytes with 1 present.
    assert!(matches!(
        decode_rpc(&[0x1a, 5, 0x2a, 3, 0x0a, 50, 0], 100),
        Err(WireError::Protobuf(_))
    ));
}

/// CHOKE and UNCHOKE of topic "t" and the support flag, encoded by hand: field 5,068,630
/// (key varint `b2 f5 aa 13`), 5,068,631 (`ba f5 aa 13`), 5,068,632 as a varint (`c0 f5 aa 13`).
const CHOKE_FRAME: &str = "171a15b2f5aa13030a0174baf5aa13030a0174c0f5aa1301";

/// `ControlMessage` as a decoder that knows only the libp2p fields (1–5) sees it.
#[derive(Clone, PartialEq, prost::Message)]
struct PlainControl {
    #[prost(message, repeated, tag = "1")]
    ihave: Vec<ControlIHave>,
    #[prost(message, repeated, tag = "5")]
    idontwant: Vec<ControlIDontWant>,
}

#[test]
fn choke_round_trips_with_its_field_numbers() {
    let t = || ControlChoke {
        topic_id: Some("t".into()),
    };
    let rpc = Rpc {
        control: Some(ControlMessage {
            choke: vec![t()],
            unchoke: vec![t()],
            choke_supported: Some(true),
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    assert_eq!(encode_frame(&rpc), hex(CHOKE_FRAME));
    let (back, used) = decode_frame(&hex(CHOKE_FRAME), DEFAULT_MAX_TRANSMIT_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!((back.clone(), used), (rpc, 24));
    assert!(!back.control.unwrap().is_empty());
    // A decoder without the extension skips the fields (protobuf's unknown fields), as
    // rust-libp2p's does: the control message reads as empty.
    let body = &hex(CHOKE_FRAME)[3..];
    use prost::Message as _;
    assert_eq!(PlainControl::decode(body).unwrap(), PlainControl::default());
}

#[test]
fn hostile_choke_is_a_typed_error() {
    // CHOKE with the varint wire type instead of a message.
    assert!(matches!(
        decode_rpc(&hex("1a05b0f5aa1301"), 100),
        Err(WireError::Protobuf(_))
    ));
    // A CHOKE announcing 40 bytes with 3 present.
    assert!(matches!(
        decode_rpc(&hex("1a08b2f5aa13280a0174"), 100),
        Err(WireError::Protobuf(_))
    ));
    // A topic that is not UTF-8.
    assert!(matches!(
        decode_rpc(&hex("1a08b2f5aa13030a01ff"), 100),
        Err(WireError::Protobuf(_))
    ));
    // The support flag as a length-delimited field.
    assert!(matches!(
        decode_rpc(&hex("1a07c2f5aa130201ff"), 100),
        Err(WireError::Protobuf(_))
    ));
    // Thousands of CHOKEs: the frame is refused from its prefix past the limit.
    let rpc = Rpc {
        control: Some(ControlMessage {
            choke: vec![
                ControlChoke {
                    topic_id: Some("topic".into())
                };
                2000
            ],
            ..ControlMessage::default()
        }),
        ..Rpc::default()
    };
    let frame = encode_frame(&rpc);
    assert!(frame.len() > 10_000);
    assert!(matches!(
        decode_frame(&frame, 10_000),
        Err(WireError::TooLarge { max: 10_000, .. })
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((rpc, used))) = decode_frame(&bytes, 256) {
            prop_assert!(used <= bytes.len());
            for m in &rpc.publish {
                let _ = sign::verify(m);
            }
        }
        let _ = decode_rpc(&bytes, 256);
    }

    #[test]
    fn signed_messages_round_trip_and_verify(
        seed in any::<u64>(),
        seqno in any::<u64>(),
        topic in "[a-z./]{0,20}",
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let key = Keypair::from_seed_for_tests(seed);
        let m = sign::sign(&key, seqno, topic, data);
        let rpc = Rpc { publish: vec![m.clone()], ..Rpc::default() };
        let (back, _) = decode_frame(&encode_frame(&rpc), DEFAULT_MAX_TRANSMIT_SIZE).unwrap().unwrap();
        prop_assert_eq!(&back.publish[0], &m);
        let v = sign::verify(&back.publish[0]).unwrap();
        prop_assert_eq!(v.source, key.peer_id());
        prop_assert_eq!(v.seqno, seqno);
    }

    #[test]
    fn a_flipped_bit_is_never_accepted_as_the_same_message(
        byte in 0usize..200, bit in 0u8..8,
    ) {
        let key = golden_key();
        let m = sign::sign(&key, 3, "topic".into(), b"payload".to_vec());
        let mut body = Rpc { publish: vec![m.clone()], ..Rpc::default() }.encode_to_vec();
        let i = byte % body.len();
        body[i] ^= 1 << bit;
        if let Ok(rpc) = decode_rpc(&body, DEFAULT_MAX_TRANSMIT_SIZE) {
            for got in &rpc.publish {
                if got != &m {
                    // A changed message either fails verification or changed only the
                    // (unsigned) signature-less encoding in a way that still verifies: the
                    // signed fields must then be identical.
                    if sign::verify(got).is_ok() {
                        prop_assert_eq!(&got.data, &m.data);
                        prop_assert_eq!(&got.topic, &m.topic);
                        prop_assert_eq!(&got.seqno, &m.seqno);
                        prop_assert_eq!(&got.from, &m.from);
                    }
                }
            }
        }
    }
}
