//! Signed alive records: a member announces itself (its incarnation and metadata) only with
//! a signature by its own key, so that nobody can make up members or their addresses.
//!
//! What is signed (section 3 of `docs/swim.md`) is
//! `"meshwire-swim-alive:" ‖ realm_len:u8 ‖ realm ‖ peer_len:u8 ‖ peer ‖ incarnation:varint ‖
//! meta`, with `meta` in its wire encoding, and the key is the ed25519 key inlined in the
//! member's peer ID (an identity multihash). Pure computation, no IO: the engine signs with
//! the local [`Keypair`] and verifies through an [`AliveVerifier`].

use std::fmt;
use std::sync::Arc;

use meshwire_core::{Keypair, PeerId};

use crate::member::NodeMeta;
use crate::realm::Realm;
use crate::varint::put_varint;

/// The length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The domain separator that starts every signed alive record.
pub const ALIVE_DOMAIN: &[u8] = b"meshwire-swim-alive:";

/// An ed25519 signature of an alive record.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    /// A signature of all zeroes: never valid; stands for "no signature" in tests.
    pub const ZERO: Signature = Signature([0; SIGNATURE_LEN]);

    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A member's signed alive record: its peer ID, the incarnation and metadata it announced,
/// and its signature of them ([`alive_signing_bytes`]).
///
/// Held behind an [`Arc`] and shared, not copied: the member table, the dissemination queue,
/// unconfirmed entries and the messages that carry the record (alive updates, push-pull
/// member records) all point to one allocation, and so do the engines of a simulation that
/// received it in the same message. Build one with [`AliveRecord::new`] or
/// [`AliveRecord::sign`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AliveRecord {
    /// The member.
    pub peer: PeerId,
    /// The incarnation it announced itself alive at.
    pub incarnation: u64,
    /// Its addresses and application data.
    pub meta: Arc<NodeMeta>,
    /// Its signature of the record.
    pub signature: Signature,
}

impl AliveRecord {
    /// A shared record of these fields (the signature is not checked).
    pub fn new(
        peer: PeerId,
        incarnation: u64,
        meta: Arc<NodeMeta>,
        signature: Signature,
    ) -> Arc<Self> {
        Arc::new(AliveRecord {
            peer,
            incarnation,
            meta,
            signature,
        })
    }

    /// `key`'s own record in `realm` at `incarnation` with `meta`, signed.
    pub fn sign(key: &Keypair, realm: &Realm, incarnation: u64, meta: Arc<NodeMeta>) -> Arc<Self> {
        let signature = sign_alive(key, realm, incarnation, &meta);
        AliveRecord::new(key.peer_id(), incarnation, meta, signature)
    }

    /// Whether the signature is valid for `realm`, checked by `verifier`.
    pub fn verify(&self, verifier: &dyn AliveVerifier, realm: &Realm) -> bool {
        verify_alive(
            verifier,
            realm,
            &self.peer,
            self.incarnation,
            &self.meta,
            &self.signature,
        )
    }
}

/// The bytes a member signs to announce itself alive in `realm` at `incarnation` with `meta`.
pub fn alive_signing_bytes(
    realm: &Realm,
    peer: &PeerId,
    incarnation: u64,
    meta: &NodeMeta,
) -> Vec<u8> {
    let p = peer.as_bytes();
    let mut out = Vec::with_capacity(
        ALIVE_DOMAIN.len() + 2 + realm.len() + p.len() + 10 + meta.encoded_len(),
    );
    out.extend_from_slice(ALIVE_DOMAIN);
    out.push(realm.len() as u8);
    out.extend_from_slice(realm.as_str().as_bytes());
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    put_varint(&mut out, incarnation);
    meta.encode_into(&mut out);
    out
}

/// Signs the alive record of `key`'s peer in `realm` at `incarnation` with `meta`.
pub fn sign_alive(key: &Keypair, realm: &Realm, incarnation: u64, meta: &NodeMeta) -> Signature {
    let msg = alive_signing_bytes(realm, &key.peer_id(), incarnation, meta);
    let mut sig = [0u8; SIGNATURE_LEN];
    let raw = key.sign(&msg);
    if raw.len() == SIGNATURE_LEN {
        sig.copy_from_slice(&raw);
    }
    Signature(sig)
}

/// Checks signatures of alive records. The engine uses [`Ed25519Verifier`] unless told
/// otherwise ([`SwimEngine::set_verifier`](crate::SwimEngine::set_verifier)); simulations
/// share a caching one between their engines.
pub trait AliveVerifier: Send + Sync + fmt::Debug {
    /// Whether `signature` is `peer`'s signature of `message` (the bytes of
    /// [`alive_signing_bytes`]).
    fn verify(&self, peer: &PeerId, message: &[u8], signature: &Signature) -> bool;
}

/// Verifies with the ed25519 key inlined in the peer ID; peer IDs without one (hashed keys,
/// other key types) never verify.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519Verifier;

impl AliveVerifier for Ed25519Verifier {
    fn verify(&self, peer: &PeerId, message: &[u8], signature: &Signature) -> bool {
        peer.public_key()
            .is_some_and(|k| k.verify(message, signature.as_bytes()))
    }
}

/// Verifies `peer`'s alive record with `verifier`.
pub fn verify_alive(
    verifier: &dyn AliveVerifier,
    realm: &Realm,
    peer: &PeerId,
    incarnation: u64,
    meta: &NodeMeta,
    signature: &Signature,
) -> bool {
    let msg = alive_signing_bytes(realm, peer, incarnation, meta);
    verifier.verify(peer, &msg, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn realm() -> Realm {
        Realm::new("org.example.mesh").unwrap()
    }

    #[test]
    fn sign_and_verify() {
        let key = Keypair::from_seed_for_tests(7);
        let other = Keypair::from_seed_for_tests(8);
        let addr = "/ip4/10.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let meta = NodeMeta::new(vec![addr], &b"x"[..]).unwrap();
        let sig = sign_alive(&key, &realm(), 3, &meta);
        let v = Ed25519Verifier;
        let p = key.peer_id();
        assert!(verify_alive(&v, &realm(), &p, 3, &meta, &sig));
        // Another incarnation, metadata, realm, peer, or a forged signature: refused.
        assert!(!verify_alive(&v, &realm(), &p, 4, &meta, &sig));
        assert!(!verify_alive(&v, &realm(), &p, 3, &NodeMeta::empty(), &sig));
        let r2 = Realm::new("org.example.other").unwrap();
        assert!(!verify_alive(&v, &r2, &p, 3, &meta, &sig));
        assert!(!verify_alive(
            &v,
            &realm(),
            &other.peer_id(),
            3,
            &meta,
            &sig
        ));
        let forged = sign_alive(&other, &realm(), 3, &meta);
        assert!(!verify_alive(&v, &realm(), &p, 3, &meta, &forged));
        assert!(!verify_alive(&v, &realm(), &p, 3, &meta, &Signature::ZERO));
    }

    /// Prints the cost of one verification (run with `--nocapture`).
    #[test]
    fn verification_cost() {
        let key = Keypair::from_seed_for_tests(1);
        let meta = NodeMeta::empty();
        let sig = sign_alive(&key, &realm(), 1, &meta);
        let p = key.peer_id();
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            assert!(verify_alive(&Ed25519Verifier, &realm(), &p, 1, &meta, &sig));
        }
        let per = t.elapsed() / n;
        println!("alive record verification: {per:?} each");
    }
}
