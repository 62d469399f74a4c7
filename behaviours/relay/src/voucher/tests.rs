use meshwire_core::{KeyMessage, KeyType, Keypair, PeerId};
use proptest::prelude::*;

use super::envelope::{self, MAX_ENVELOPE_SIZE};
use super::*;

fn relay_key() -> Keypair {
    Keypair::from_secret_bytes([1; 32])
}

fn client() -> PeerId {
    Keypair::from_secret_bytes([2; 32]).peer_id()
}

/// The envelope laid out by hand from RFC 0002 and the spec's voucher message; only the
/// signature (deterministic ed25519) is taken from the signer, and checked to verify.
#[test]
fn golden_layout() {
    let relay = relay_key();
    let bytes = Voucher::sign(&relay, client(), 1_700_000_000);

    let mut payload = vec![0x0a, 38];
    payload.extend_from_slice(relay.peer_id().as_bytes());
    payload.extend_from_slice(&[0x12, 38]);
    payload.extend_from_slice(client().as_bytes());
    // 1_700_000_000 as a varint.
    payload.extend_from_slice(&[0x18, 0x80, 0xe2, 0xcf, 0xaa, 0x06]);
    assert_eq!(payload.len(), 86);

    let mut expected = vec![0x0a, 36, 0x08, 0x01, 0x12, 32];
    expected.extend_from_slice(&relay.public().to_bytes());
    expected.extend_from_slice(&[0x12, 2, 0x03, 0x02]);
    expected.extend_from_slice(&[0x1a, 86]);
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(&[0x2a, 64]);
    assert_eq!(bytes.len(), expected.len() + 64);
    assert_eq!(&bytes[..expected.len()], &expected[..]);

    // The signature covers varint-prefixed domain, payload type and payload.
    let mut signed = vec![17];
    signed.extend_from_slice(b"libp2p-relay-rsvp");
    signed.extend_from_slice(&[2, 0x03, 0x02, 86]);
    signed.extend_from_slice(&payload);
    assert!(relay.public().verify(&signed, &bytes[expected.len()..]));
}

#[test]
fn round_trip() {
    let relay = relay_key();
    let bytes = Voucher::sign(&relay, client(), 42);
    let v = Voucher::verify(&bytes, relay.peer_id(), client()).unwrap();
    assert_eq!(
        v,
        Voucher {
            relay: relay.peer_id(),
            peer: client(),
            expiration: 42
        }
    );
    assert!(!v.is_expired(41));
    assert!(v.is_expired(42));
    // Expiration 0 is still written (the field is always present).
    let zero = Voucher::sign(&relay, client(), 0);
    assert_eq!(Voucher::open(&zero).unwrap().expiration, 0);
}

#[test]
fn wrong_relay_and_wrong_peer() {
    let relay = relay_key();
    let bytes = Voucher::sign(&relay, client(), 42);
    let other = PeerId::random();
    assert_eq!(
        Voucher::verify(&bytes, other, client()),
        Err(VoucherError::WrongRelay {
            expected: other,
            got: relay.peer_id()
        })
    );
    assert_eq!(
        Voucher::verify(&bytes, relay.peer_id(), other),
        Err(VoucherError::WrongPeer {
            expected: other,
            got: client()
        })
    );
}

#[test]
fn signer_must_be_the_relay() {
    // A valid envelope whose payload names a relay other than the signer.
    let forger = Keypair::from_secret_bytes([3; 32]);
    let claimed = relay_key().peer_id();
    let bytes = Voucher {
        relay: claimed,
        peer: client(),
        expiration: 42,
    }
    .sign_with(&forger);
    assert_eq!(
        Voucher::verify(&bytes, claimed, client()),
        Err(VoucherError::SignerNotRelay {
            relay: claimed,
            signer: forger.peer_id()
        })
    );
}

#[test]
fn wrong_domain_is_a_bad_signature() {
    let relay = relay_key();
    let payload = Voucher {
        relay: relay.peer_id(),
        peer: client(),
        expiration: 42,
    }
    .encode_payload();
    let bytes = envelope::seal(&relay, "libp2p-routing-state", &PAYLOAD_TYPE, &payload);
    assert_eq!(Voucher::open(&bytes), Err(VoucherError::BadSignature));
}

#[test]
fn wrong_payload_type() {
    let relay = relay_key();
    let payload = Voucher {
        relay: relay.peer_id(),
        peer: client(),
        expiration: 42,
    }
    .encode_payload();
    // The varint form of 0x0302, which no implementation uses.
    let bytes = envelope::seal(&relay, DOMAIN, &[0x82, 0x06], &payload);
    assert_eq!(
        Voucher::open(&bytes),
        Err(VoucherError::WrongPayloadType {
            got: vec![0x82, 0x06]
        })
    );
}

#[test]
fn unsupported_key_type() {
    // A secp256k1 key message (type 2) in the envelope's public key field.
    let key = KeyMessage {
        key_type: KeyType::Secp256k1,
        data: &[2; 33],
    }
    .encode();
    let mut bytes = vec![0x0a, key.len() as u8];
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(&[0x12, 2, 0x03, 0x02, 0x1a, 1, 0, 0x2a, 1, 0]);
    assert_eq!(
        Voucher::open(&bytes),
        Err(VoucherError::UnsupportedKeyType(2))
    );
}

#[test]
fn malformed_payloads() {
    let relay = relay_key();
    let missing_expiration = VoucherPayload {
        relay: Some(relay.peer_id().to_bytes()),
        peer: Some(client().to_bytes()),
        expiration: None,
    }
    .encode_to_vec();
    let bad_peer = VoucherPayload {
        relay: Some(relay.peer_id().to_bytes()),
        peer: Some(vec![0xff, 1, 2]),
        expiration: Some(1),
    }
    .encode_to_vec();
    for payload in [missing_expiration, bad_peer, vec![0xff]] {
        let bytes = envelope::seal(&relay, DOMAIN, &PAYLOAD_TYPE, &payload);
        assert!(
            matches!(Voucher::open(&bytes), Err(VoucherError::Malformed(_))),
            "{payload:02x?}"
        );
    }
    assert!(matches!(
        Voucher::open(&[0x0a, 0x05]),
        Err(VoucherError::Malformed(_))
    ));
    assert!(matches!(
        Voucher::open(&vec![0; MAX_ENVELOPE_SIZE + 1]),
        Err(VoucherError::TooLarge { .. })
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Voucher::open(&bytes);
    }

    #[test]
    fn mutations_never_verify(index in 0usize..300, flip in 1u8..=255) {
        let relay = relay_key();
        let mut bytes = Voucher::sign(&relay, client(), 99);
        let i = index % bytes.len();
        bytes[i] ^= flip;
        prop_assert!(Voucher::verify(&bytes, relay.peer_id(), client()).is_err());
    }
}
