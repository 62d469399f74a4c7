use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use multiaddr::Multiaddr;
use proptest::prelude::*;
use prost::Message as _;

use super::*;

fn peer(seed: u64) -> PeerId {
    Keypair::from_seed_for_tests(seed).peer_id()
}

/// `0x12 0x28 0x0a 0x26 <38-byte ed25519 peer id>`: field 2 (`peer`) holding `Peer { id }`.
fn peer_field(tag: u8, id: &PeerId) -> Vec<u8> {
    let mut out = vec![tag, 40, 0x0a, 38];
    out.extend_from_slice(id.as_bytes());
    out
}

const STATUSES: [Status; 8] = [
    Status::Ok,
    Status::ReservationRefused,
    Status::ResourceLimitExceeded,
    Status::PermissionDenied,
    Status::ConnectionFailed,
    Status::NoReservation,
    Status::MalformedMessage,
    Status::UnexpectedMessage,
];

#[test]
fn status_codes_are_the_spec_values() {
    let codes: Vec<i32> = STATUSES.iter().map(|s| s.code()).collect();
    assert_eq!(codes, [100, 200, 201, 202, 203, 204, 400, 401]);
    for s in STATUSES {
        assert_eq!(Status::from_code(s.code()), Some(s));
    }
    assert_eq!(Status::from_code(0), None);
    assert_eq!(Status::NoReservation.to_string(), "NO_RESERVATION");
}

#[test]
fn golden_hop_requests() {
    // RESERVE = 0 is written: `type` is required.
    assert_eq!(encode_hop_request(&HopRequest::Reserve), [0x08, 0x00]);
    let dst = peer(1);
    let mut expected = vec![0x08, 0x01];
    expected.extend(peer_field(0x12, &dst));
    assert_eq!(encode_hop_request(&HopRequest::Connect { dst }), expected);
    assert_eq!(
        decode_hop_request(&expected).unwrap(),
        HopRequest::Connect { dst }
    );
}

#[test]
fn golden_hop_responses() {
    // STATUS (2), status NO_RESERVATION (204 = cc 01).
    assert_eq!(
        encode_hop_response(&HopResponse::refused(Status::NoReservation)),
        [0x08, 0x02, 0x28, 0xcc, 0x01]
    );

    let addr: Multiaddr = "/ip4/1.2.3.4/udp/4001/quic-v1".parse().unwrap();
    let response = HopResponse::reserved(
        ReservationInfo {
            expire: 1_700_000_000,
            addrs: vec![addr],
            voucher: None,
        },
        Limit::from_limits(Some(Duration::from_secs(120)), Some(1 << 17)),
    );
    let addr_bytes = [
        0x04, 1, 2, 3, 4, // /ip4/1.2.3.4
        0x91, 0x02, 0x0f, 0xa1, // /udp/4001
        0xcd, 0x03, // /quic-v1 (0x01cd)
    ];
    let mut reservation = vec![0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x12, 11];
    reservation.extend_from_slice(&addr_bytes);
    let mut expected = vec![0x08, 0x02, 0x1a, reservation.len() as u8];
    expected.extend_from_slice(&reservation);
    // Limit { duration = 120, data = 131072 }.
    expected.extend_from_slice(&[0x22, 6, 0x08, 120, 0x10, 0x80, 0x80, 0x08]);
    // status OK (100).
    expected.extend_from_slice(&[0x28, 100]);
    assert_eq!(encode_hop_response(&response), expected);
    assert_eq!(decode_hop_response(&expected).unwrap(), response);

    // OK to a CONNECT: the limit only.
    let connected = HopResponse::connected(None);
    assert_eq!(encode_hop_response(&connected), [0x08, 0x02, 0x28, 100]);
}

#[test]
fn golden_stop_messages() {
    let src = peer(2);
    let request = StopRequest {
        src,
        limit: Some(Limit {
            duration: Some(60),
            data: None,
        }),
    };
    // CONNECT = 0 is written.
    let mut expected = vec![0x08, 0x00];
    expected.extend(peer_field(0x12, &src));
    expected.extend_from_slice(&[0x1a, 2, 0x08, 60]);
    assert_eq!(encode_stop_request(&request), expected);
    assert_eq!(decode_stop_request(&expected).unwrap(), request);

    let ok = StopResponse { status: Status::Ok };
    assert_eq!(encode_stop_response(&ok), [0x08, 0x01, 0x20, 100]);
    assert_eq!(decode_stop_response(&[0x08, 0x01, 0x20, 100]).unwrap(), ok);
}

#[test]
fn missing_type_reads_as_zero_like_libp2p() {
    // An empty body is a RESERVE (hop) / a CONNECT without peer (stop).
    assert_eq!(decode_hop_request(&[]).unwrap(), HopRequest::Reserve);
    assert_eq!(
        decode_stop_request(&[]),
        Err(ProtocolError::MissingField("peer"))
    );
}

#[test]
fn wrong_direction_is_unexpected() {
    let status = encode_hop_response(&HopResponse::refused(Status::Ok));
    let err = decode_hop_request(&status).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::Unexpected { got: "STATUS", .. }
    ));
    assert_eq!(err.status(), Status::UnexpectedMessage);

    let reserve = encode_hop_request(&HopRequest::Reserve);
    let err = decode_hop_response(&reserve).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::Unexpected { got: "RESERVE", .. }
    ));

    let connect = encode_stop_request(&StopRequest {
        src: peer(3),
        limit: None,
    });
    let err = decode_stop_response(&connect).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::Unexpected { got: "CONNECT", .. }
    ));
    let stop_ok = encode_stop_response(&StopResponse { status: Status::Ok });
    let err = decode_stop_request(&stop_ok).unwrap_err();
    assert_eq!(err.status(), Status::UnexpectedMessage);
}

#[test]
fn malformed_messages_are_typed() {
    // Unknown type.
    let err = decode_hop_request(&[0x08, 0x07]).unwrap_err();
    assert_eq!(err, ProtocolError::UnknownType(7));
    assert_eq!(err.status(), Status::MalformedMessage);
    // CONNECT without peer, with an invalid peer id.
    assert_eq!(
        decode_hop_request(&[0x08, 0x01]),
        Err(ProtocolError::MissingField("peer"))
    );
    let bad_id = [0x08, 0x01, 0x12, 0x04, 0x0a, 0x02, 0xff, 0x00];
    assert!(matches!(
        decode_hop_request(&bad_id),
        Err(ProtocolError::InvalidPeerId(_))
    ));
    // STATUS without status, with an unknown status.
    assert_eq!(
        decode_hop_response(&[0x08, 0x02]),
        Err(ProtocolError::MissingField("status"))
    );
    let err = decode_stop_response(&[0x08, 0x01, 0x20, 0x00]).unwrap_err();
    assert_eq!(err, ProtocolError::UnknownStatus(0));
    assert_eq!(err.status(), Status::MalformedMessage);
    // Truncated protobuf.
    assert!(matches!(
        decode_hop_request(&[0x12, 0x05, 0x0a]),
        Err(ProtocolError::Malformed(_))
    ));
    // Groups are refused.
    assert!(matches!(
        decode_hop_request(&[0x0b, 0x0c]),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn oversized_body_refused() {
    let body = vec![0u8; MAX_MESSAGE_SIZE + 1];
    for result in [
        decode_hop_request(&body).err(),
        decode_hop_response(&body).err(),
        decode_stop_request(&body).err(),
        decode_stop_response(&body).err(),
    ] {
        assert_eq!(
            result,
            Some(ProtocolError::TooLarge {
                len: MAX_MESSAGE_SIZE + 1,
                max: MAX_MESSAGE_SIZE
            })
        );
    }
}

/// A `Peer` with `n` empty addresses.
fn wire_peer(id: &PeerId, n: usize) -> proto::Peer {
    proto::Peer {
        id: id.to_bytes(),
        addrs: vec![Vec::new(); n],
    }
}

#[test]
fn address_count_is_bounded_before_decoding() {
    let dst = peer(4);
    let connect = |n| {
        proto::HopMessage {
            r#type: 1,
            peer: Some(wire_peer(&dst, n)),
            reservation: None,
            limit: None,
            status: None,
        }
        .encode_to_vec()
    };
    assert_eq!(
        decode_hop_request(&connect(MAX_ADDRS)).unwrap(),
        HopRequest::Connect { dst }
    );
    assert_eq!(
        decode_hop_request(&connect(MAX_ADDRS + 1)),
        Err(ProtocolError::TooManyAddrs {
            count: MAX_ADDRS + 1,
            max: MAX_ADDRS
        })
    );

    // Repeated `peer` fields merge, so their addresses count together.
    let mut split = vec![0x08, 0x01];
    for n in [MAX_ADDRS / 2 + 1, MAX_ADDRS / 2] {
        let inner = wire_peer(&dst, n).encode_to_vec();
        split.push(0x12);
        prost::encoding::encode_varint(inner.len() as u64, &mut split);
        split.extend_from_slice(&inner);
    }
    assert!(matches!(
        decode_hop_request(&split),
        Err(ProtocolError::TooManyAddrs { .. })
    ));

    // Reservation addresses and stop peers too.
    let reservation = proto::HopMessage {
        r#type: 2,
        peer: None,
        reservation: Some(proto::Reservation {
            expire: 1,
            addrs: vec![vec![0x04, 1, 2, 3, 4]; MAX_ADDRS + 1],
            voucher: None,
        }),
        limit: None,
        status: Some(100),
    }
    .encode_to_vec();
    assert!(matches!(
        decode_hop_response(&reservation),
        Err(ProtocolError::TooManyAddrs { .. })
    ));
    let stop = proto::StopMessage {
        r#type: 0,
        peer: Some(wire_peer(&dst, MAX_ADDRS + 1)),
        limit: None,
        status: None,
    }
    .encode_to_vec();
    assert!(matches!(
        decode_stop_request(&stop),
        Err(ProtocolError::TooManyAddrs { .. })
    ));
}

#[test]
fn undecodable_reservation_addresses_are_dropped() {
    let good: Multiaddr = "/ip4/1.2.3.4/tcp/1".parse().unwrap();
    let message = proto::HopMessage {
        r#type: 2,
        peer: None,
        reservation: Some(proto::Reservation {
            expire: 5,
            addrs: vec![vec![0xff, 0xff, 0xff], good.to_vec()],
            voucher: Some(vec![1, 2, 3]),
        }),
        limit: None,
        status: Some(100),
    }
    .encode_to_vec();
    let response = decode_hop_response(&message).unwrap();
    assert_eq!(
        response.reservation,
        Some(ReservationInfo {
            expire: 5,
            addrs: vec![good],
            voucher: Some(vec![1, 2, 3])
        })
    );
}

#[test]
fn encoded_reservation_always_fits() {
    let relay = peer(5);
    let addr: Multiaddr = format!(
        "/dns4/{}.example.com/udp/4001/quic-v1/p2p/{relay}",
        "a".repeat(60)
    )
    .parse()
    .unwrap();
    let response = HopResponse::reserved(
        ReservationInfo {
            expire: 9,
            addrs: vec![addr.clone(); 200],
            voucher: Some(vec![7; 200]),
        },
        None,
    );
    let body = encode_hop_response(&response);
    assert!(body.len() <= MAX_MESSAGE_SIZE, "{}", body.len());
    let decoded = decode_hop_response(&body).unwrap();
    let reservation = decoded.reservation.unwrap();
    assert!(!reservation.addrs.is_empty() && reservation.addrs.len() < 200);
    assert!(reservation.addrs.iter().all(|a| *a == addr));
    assert_eq!(reservation.voucher, Some(vec![7; 200]));

    // Many small addresses: the count bound applies.
    let small: Multiaddr = "/ip4/1.2.3.4/tcp/1".parse().unwrap();
    let response = HopResponse::reserved(
        ReservationInfo {
            expire: 9,
            addrs: vec![small; 500],
            voucher: None,
        },
        None,
    );
    let decoded = decode_hop_response(&encode_hop_response(&response)).unwrap();
    assert_eq!(decoded.reservation.unwrap().addrs.len(), MAX_ADDRS);
}

#[test]
fn limits_on_the_wire() {
    assert_eq!(Limit::from_limits(None, None), None);
    let sub_second = Limit::from_limits(Some(Duration::from_millis(1500)), None).unwrap();
    assert_eq!(sub_second.duration, Some(2));
    let huge = Limit::from_limits(Some(Duration::from_secs(u64::MAX)), Some(5)).unwrap();
    assert_eq!((huge.duration, huge.data), (Some(u32::MAX), Some(5)));
    let zero = Limit {
        duration: Some(0),
        data: Some(0),
    };
    assert_eq!((zero.duration_limit(), zero.data_limit()), (None, None));
    let some = Limit {
        duration: Some(3),
        data: Some(4),
    };
    assert_eq!(
        (some.duration_limit(), some.data_limit()),
        (Some(Duration::from_secs(3)), Some(4))
    );
}

fn any_status() -> impl Strategy<Value = Status> {
    proptest::sample::select(STATUSES.to_vec())
}

fn any_limit() -> impl Strategy<Value = Option<Limit>> {
    proptest::option::of(
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(duration, data)| Limit { duration, data }),
    )
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let _ = decode_hop_request(&bytes);
        let _ = decode_hop_response(&bytes);
        let _ = decode_stop_request(&bytes);
        let _ = decode_stop_response(&bytes);
    }

    #[test]
    fn responses_round_trip(
        status in any_status(),
        limit in any_limit(),
        expire in any::<u64>(),
        ports in proptest::collection::vec(any::<u16>(), 0..10),
        voucher in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
    ) {
        let addrs = ports
            .iter()
            .map(|p| format!("/ip6/::1/udp/{p}/quic-v1").parse().unwrap())
            .collect();
        let response = HopResponse {
            status,
            reservation: Some(ReservationInfo { expire, addrs, voucher }),
            limit,
        };
        prop_assert_eq!(decode_hop_response(&encode_hop_response(&response)).unwrap(), response);
        let stop = StopResponse { status };
        prop_assert_eq!(decode_stop_response(&encode_stop_response(&stop)).unwrap(), stop);
    }

    #[test]
    fn requests_round_trip(seed in any::<u64>(), limit in any_limit()) {
        let id = peer(seed);
        let hop = HopRequest::Connect { dst: id };
        prop_assert_eq!(decode_hop_request(&encode_hop_request(&hop)).unwrap(), hop);
        let stop = StopRequest { src: id, limit };
        prop_assert_eq!(decode_stop_request(&encode_stop_request(&stop)).unwrap(), stop);
    }
}
