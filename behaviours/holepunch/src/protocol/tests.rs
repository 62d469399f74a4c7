use proptest::prelude::*;

use super::*;

fn quic(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap()
}

#[test]
fn sync_golden_bytes() {
    assert_eq!(encode(&Message::Sync).unwrap(), [0x08, 0xac, 0x02]);
    assert_eq!(decode(&[0x08, 0xac, 0x02]).unwrap(), Message::Sync);
}

#[test]
fn connect_golden_bytes() {
    let addr = quic(4001);
    let raw = addr.to_vec();
    // /ip4 (04) 127.0.0.1 /udp (91 02) 4001 (0f a1) /quic-v1 (cd 03)
    assert_eq!(
        raw,
        [0x04, 127, 0, 0, 1, 0x91, 0x02, 0x0f, 0xa1, 0xcd, 0x03]
    );
    let mut expected = vec![0x08, 0x64, 0x12, raw.len() as u8];
    expected.extend_from_slice(&raw);
    assert_eq!(
        encode(&Message::Connect(vec![addr.clone()])).unwrap(),
        expected
    );
    assert_eq!(decode(&expected).unwrap(), Message::Connect(vec![addr]));
    // A CONNECT with no address is `08 64`.
    assert_eq!(encode(&Message::Connect(vec![])).unwrap(), [0x08, 0x64]);
}

#[test]
fn unknown_and_missing_type_are_refused() {
    // type = 200
    assert_eq!(
        decode(&[0x08, 0xc8, 0x01]),
        Err(DecodeError::UnknownType(200))
    );
    // type = 0
    assert_eq!(decode(&[0x08, 0x00]), Err(DecodeError::UnknownType(0)));
    // A missing `type` takes the proto2 default, the first value (CONNECT), as in
    // rust-libp2p (prost); the empty CONNECT then fails the exchange as "no addresses".
    assert_eq!(decode(&[]), Ok(Message::Connect(vec![])));
    // Truncated varint.
    assert!(matches!(
        decode(&[0x08, 0xac]),
        Err(DecodeError::Malformed(_))
    ));
    // Length-delimited field longer than the input.
    assert!(matches!(
        decode(&[0x08, 0x64, 0x12, 0x40, 1, 2]),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(
        decode(&vec![0u8; MAX_MESSAGE_SIZE + 1]),
        Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1))
    );
}

#[test]
fn invalid_and_relayed_addresses_are_dropped() {
    let relayed: Multiaddr = "/ip4/1.2.3.4/udp/1/quic-v1/p2p-circuit".parse().unwrap();
    let pb = HolePunch {
        r#type: HolePunchType::Connect as i32,
        obs_addrs: vec![vec![0xff, 0xff], relayed.to_vec(), quic(5).to_vec()],
    };
    assert_eq!(
        decode(&pb.encode_to_vec()).unwrap(),
        Message::Connect(vec![quic(5)])
    );
}

#[test]
fn at_most_max_addrs_are_kept() {
    let pb = HolePunch {
        r#type: HolePunchType::Connect as i32,
        obs_addrs: (0..MAX_ADDRS as u16 + 10)
            .map(|p| quic(p).to_vec())
            .collect(),
    };
    match decode(&pb.encode_to_vec()).unwrap() {
        Message::Connect(a) => assert_eq!(a.len(), MAX_ADDRS),
        m => panic!("{m:?}"),
    }
}

#[test]
fn connect_addrs_fit_the_limit() {
    let long: Multiaddr = format!("/dns4/{}/udp/1/quic-v1", "a".repeat(200))
        .parse()
        .unwrap();
    let many: Vec<Multiaddr> = (0..40)
        .map(|i| {
            format!("/dns4/{i}{}/udp/1/quic-v1", "a".repeat(200))
                .parse()
                .unwrap()
        })
        .collect();
    let fitted = connect_addrs(&many);
    assert!(fitted.len() < many.len());
    let bytes = encode(&Message::Connect(fitted)).unwrap();
    assert!(bytes.len() <= MAX_MESSAGE_SIZE);
    // Without fitting, the same addresses are refused.
    assert!(matches!(
        encode(&Message::Connect(many)),
        Err(EncodeError::TooLarge(_))
    ));
    // Relayed addresses and duplicates are left out.
    let relayed: Multiaddr = "/ip4/1.2.3.4/udp/1/quic-v1/p2p-circuit".parse().unwrap();
    assert_eq!(connect_addrs([&long, &relayed, &long]), vec![long.clone()]);
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn roundtrip(ports in proptest::collection::vec(any::<u16>(), 0..20), sync in any::<bool>()) {
        let msg = if sync {
            Message::Sync
        } else {
            Message::Connect(ports.iter().map(|p| quic(*p)).collect())
        };
        let bytes = encode(&msg).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), msg);
    }
}
