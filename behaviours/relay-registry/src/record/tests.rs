use super::*;
use proptest::prelude::*;

fn record(key: &Keypair) -> RelayRecord {
    RelayRecord {
        node_id: key.peer_id(),
        realm: "default".into(),
        endpoint: "/ip4/198.51.100.7/udp/4001/quic-v1".parse().unwrap(),
        capacity: 100,
        current_load: 3,
        registered_at: 1_000,
        issued_at: 2_000,
        expires_at: 3_000,
        withdrawn: false,
    }
}

#[test]
fn registry_record_roundtrip_and_size() {
    let key = Keypair::from_seed_for_tests(1);
    let r = record(&key);
    let bytes = r.sign(&key).unwrap();
    assert!(bytes.len() < 400, "{} bytes", bytes.len());
    assert_eq!(RelayRecord::open(&bytes).unwrap(), r);
    assert_eq!(RelayRecord::open_for(&bytes, &key.peer_id()).unwrap(), r);
}

#[test]
fn registry_record_signed_by_another_key_is_refused() {
    let relay = Keypair::from_seed_for_tests(1);
    let forger = Keypair::from_seed_for_tests(2);
    let r = record(&relay);
    assert_eq!(r.sign(&forger), Err(RecordError::SignerMismatch));
    let forged = r.sign_unchecked(&forger);
    assert_eq!(RelayRecord::open(&forged), Err(RecordError::SignerMismatch));
}

#[test]
fn registry_record_under_another_relays_key_is_refused() {
    let a = Keypair::from_seed_for_tests(1);
    let b = Keypair::from_seed_for_tests(2);
    let bytes = record(&b).sign(&b).unwrap();
    assert_eq!(
        RelayRecord::open_for(&bytes, &a.peer_id()),
        Err(RecordError::KeyMismatch {
            expected: a.peer_id(),
            found: b.peer_id()
        })
    );
}

#[test]
fn registry_record_tampering_is_detected() {
    let key = Keypair::from_seed_for_tests(3);
    let r = record(&key);
    let bytes = r.sign(&key).unwrap();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert_ne!(RelayRecord::open(&bad).ok(), Some(r.clone()), "byte {i}");
    }
}

#[test]
fn registry_record_bounds() {
    let key = Keypair::from_seed_for_tests(4);
    let check = |f: &dyn Fn(&mut RelayRecord), want: fn(&RecordError) -> bool| {
        let mut r = record(&key);
        f(&mut r);
        let err = r.sign(&key).unwrap_err();
        assert!(want(&err), "{err:?}");
        // A forger skipping the checks is refused on opening.
        let err = RelayRecord::open(&r.sign_unchecked(&key)).unwrap_err();
        assert!(want(&err), "{err:?}");
    };
    check(&|r| r.realm = "x".repeat(MAX_REALM_LEN + 1), |e| {
        matches!(e, RecordError::RealmTooLong(_))
    });
    check(&|r| r.capacity = 0, |e| {
        matches!(e, RecordError::BadCapacity(0))
    });
    check(&|r| r.capacity = MAX_CAPACITY + 1, |e| {
        matches!(e, RecordError::BadCapacity(_))
    });
    check(&|r| r.current_load = 101, |e| {
        matches!(e, RecordError::LoadAboveCapacity { .. })
    });
    check(&|r| r.expires_at = r.issued_at, |e| {
        matches!(e, RecordError::BadTimes)
    });
    check(&|r| r.registered_at = r.issued_at + 1, |e| {
        matches!(e, RecordError::BadTimes)
    });
    check(&|r| r.endpoint = Multiaddr::empty(), |e| {
        matches!(e, RecordError::BadEndpoint(_))
    });
    let long: Multiaddr = format!("/dns/{}/udp/1/quic-v1", "a".repeat(250))
        .parse()
        .unwrap();
    check(&|r| r.endpoint = long.clone(), |e| {
        matches!(e, RecordError::BadEndpoint(_))
    });
}

#[test]
fn registry_record_oversized_refused_before_decoding() {
    let bytes = vec![0u8; MAX_RECORD_SIZE + 1];
    assert_eq!(
        RelayRecord::open(&bytes),
        Err(RecordError::TooLarge {
            len: MAX_RECORD_SIZE + 1,
            max: MAX_RECORD_SIZE
        })
    );
}

#[test]
fn registry_keys() {
    let a = Keypair::from_seed_for_tests(1).peer_id();
    let b = Keypair::from_seed_for_tests(2).peer_id();
    assert_eq!(record_key("r", &a).len(), 34);
    assert_ne!(record_key("r", &a), record_key("r", &b));
    assert_ne!(record_key("r", &a), record_key("s", &a));
    assert_ne!(provider_key("r"), provider_key("s"));
    let digest = Sha256::digest(b"meshwire/service/relay-registry/r");
    assert_eq!(&provider_key("r")[2..], &digest[..]);
}

proptest! {
    #[test]
    fn registry_record_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = RelayRecord::open(&bytes);
    }

    #[test]
    fn registry_record_valid_roundtrip(
        seed in 0u64..1000,
        realm in "[a-z0-9-]{0,64}",
        capacity in 1u32..=MAX_CAPACITY,
        load_share in 0.0f64..=1.0,
        registered in 0u64..1u64 << 50,
        age in 0u64..1u64 << 30,
        ttl in 1u64..1u64 << 30,
        withdrawn in any::<bool>(),
        port in any::<u16>(),
    ) {
        let key = Keypair::from_seed_for_tests(seed);
        let r = RelayRecord {
            node_id: key.peer_id(),
            realm,
            endpoint: format!("/ip4/10.0.0.1/udp/{port}/quic-v1").parse().unwrap(),
            capacity,
            current_load: ((capacity as f64) * load_share) as u32,
            registered_at: registered,
            issued_at: registered + age,
            expires_at: registered + age + ttl,
            withdrawn,
        };
        let bytes = r.sign(&key).unwrap();
        prop_assert!(bytes.len() <= MAX_RECORD_SIZE);
        prop_assert_eq!(RelayRecord::open(&bytes).unwrap(), r);
    }

    #[test]
    fn registry_record_mutated_never_panics(seed in 0u64..100, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let key = Keypair::from_seed_for_tests(seed);
        let mut bytes = record(&key).sign(&key).unwrap();
        for (i, v) in flips {
            let n = bytes.len();
            bytes[i % n] = v;
        }
        let _ = RelayRecord::open(&bytes);
    }
}
