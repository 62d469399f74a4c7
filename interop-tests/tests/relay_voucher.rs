//! Reservation vouchers between meshwire and rust-libp2p 0.57's `SignedEnvelope`
//! (`libp2p-core`): rust-libp2p's relay sends no voucher, so the envelope code it would seal
//! one with stands in, with the payload type and domain of go-libp2p's `ReservationVoucher`.

use libp2p::core::SignedEnvelope;
use libp2p::identity::Keypair as LpKeypair;
use meshwire_core::{Keypair, PeerId};
use meshwire_relay::voucher::{Voucher, VoucherError, DOMAIN, PAYLOAD_TYPE};

const EXPIRATION: u64 = 1_700_003_600;

/// The same ed25519 identity in both implementations.
fn relay_keys() -> (Keypair, LpKeypair) {
    let secret = [7u8; 32];
    let lp = LpKeypair::ed25519_from_bytes(secret).expect("ed25519 secret");
    (Keypair::from_secret_bytes(secret), lp)
}

fn client() -> PeerId {
    Keypair::from_secret_bytes([8u8; 32]).peer_id()
}

/// The voucher payload written by hand from the spec: `relay = 1`, `peer = 2` (bytes, peer
/// ids), `expiration = 3` (varint).
fn payload(relay: &PeerId, peer: &PeerId, expiration: u64) -> Vec<u8> {
    let mut out = vec![0x0a, relay.as_bytes().len() as u8];
    out.extend_from_slice(relay.as_bytes());
    out.push(0x12);
    out.push(peer.as_bytes().len() as u8);
    out.extend_from_slice(peer.as_bytes());
    out.push(0x18);
    let mut v = expiration;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

#[test]
fn relay_voucher_sealed_by_libp2p_verifies_in_meshwire() {
    let (mw_relay, lp_relay) = relay_keys();
    assert_eq!(
        lp_relay.public().to_peer_id().to_bytes(),
        mw_relay.peer_id().to_bytes(),
        "one identity"
    );
    let envelope = SignedEnvelope::new(
        &lp_relay,
        DOMAIN.to_string(),
        PAYLOAD_TYPE.to_vec(),
        payload(&mw_relay.peer_id(), &client(), EXPIRATION),
    )
    .expect("libp2p seals");
    let bytes = envelope.into_protobuf_encoding();

    let voucher = Voucher::verify(&bytes, mw_relay.peer_id(), client()).expect("meshwire verifies");
    assert_eq!(
        voucher,
        Voucher {
            relay: mw_relay.peer_id(),
            peer: client(),
            expiration: EXPIRATION
        }
    );
    // ed25519 is deterministic: meshwire seals the very same bytes.
    assert_eq!(Voucher::sign(&mw_relay, client(), EXPIRATION), bytes);
}

#[test]
fn relay_voucher_sealed_by_meshwire_opens_in_libp2p() {
    let (mw_relay, lp_relay) = relay_keys();
    let bytes = Voucher::sign(&mw_relay, client(), EXPIRATION);

    let envelope = SignedEnvelope::from_protobuf_encoding(&bytes).expect("libp2p decodes");
    let (opened, signer) = envelope
        .payload_and_signing_key(DOMAIN.to_string(), &PAYLOAD_TYPE)
        .expect("libp2p verifies");
    assert_eq!(signer, &lp_relay.public());
    assert_eq!(opened, payload(&mw_relay.peer_id(), &client(), EXPIRATION));
    // libp2p checks the domain too.
    assert!(envelope
        .payload_and_signing_key("libp2p-routing-state".into(), &PAYLOAD_TYPE)
        .is_err());
}

#[test]
fn relay_voucher_other_domain_or_type_from_libp2p_is_refused() {
    let (mw_relay, lp_relay) = relay_keys();
    let body = payload(&mw_relay.peer_id(), &client(), EXPIRATION);
    let other_domain = SignedEnvelope::new(
        &lp_relay,
        "libp2p-routing-state".into(),
        PAYLOAD_TYPE.to_vec(),
        body.clone(),
    )
    .expect("libp2p seals")
    .into_protobuf_encoding();
    assert_eq!(
        Voucher::verify(&other_domain, mw_relay.peer_id(), client()),
        Err(VoucherError::BadSignature)
    );
    let other_type = SignedEnvelope::new(&lp_relay, DOMAIN.into(), vec![0x03, 0x01], body)
        .expect("libp2p seals")
        .into_protobuf_encoding();
    assert_eq!(
        Voucher::verify(&other_type, mw_relay.peer_id(), client()),
        Err(VoucherError::WrongPayloadType {
            got: vec![0x03, 0x01]
        })
    );
}
