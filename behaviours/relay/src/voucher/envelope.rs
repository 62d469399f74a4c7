//! Signed envelopes (libp2p RFC 0002): a payload, its type, the signer's public key and an
//! ed25519 signature over the domain-separated payload.
//!
//! Wire format (proto3): `Envelope { public_key = 1 (the libp2p PublicKey protobuf message),
//! payload_type = 2, payload = 3, signature = 5 }`. The signature covers
//! `varint(len(domain)) ‖ domain ‖ varint(len(payload_type)) ‖ payload_type ‖
//! varint(len(payload)) ‖ payload` with unsigned varints; the domain string is never on the
//! wire, so an envelope sealed for another domain fails as a bad signature.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_relay::voucher::envelope::{open, seal, EnvelopeError};
//!
//! let key = Keypair::generate();
//! let sealed = seal(&key, "my-domain", b"\x03\x99", b"payload");
//! let opened = open(&sealed, "my-domain", b"\x03\x99").unwrap();
//! assert_eq!((opened.signer, opened.payload.as_slice()), (key.public(), &b"payload"[..]));
//! assert_eq!(open(&sealed, "other-domain", b"\x03\x99"), Err(EnvelopeError::BadSignature));
//! ```

use meshwire_core::{IdentityError, Keypair, PublicKey};
use prost::Message as _;
use thiserror::Error;

/// Largest envelope [`open`] accepts: 2048 bytes. An ed25519 relay voucher takes about 200;
/// the room left lets an RSA-signed envelope be read far enough to be refused as
/// [`EnvelopeError::UnsupportedKeyType`] rather than as too large.
pub const MAX_ENVELOPE_SIZE: usize = 2048;

/// The envelope as it travels.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct Envelope {
    /// The signer's public key, as the libp2p `PublicKey` protobuf message.
    #[prost(bytes = "vec", tag = "1")]
    public_key: Vec<u8>,
    /// The payload's type (a multicodec, as bytes).
    #[prost(bytes = "vec", tag = "2")]
    payload_type: Vec<u8>,
    /// The payload.
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    /// The signature of the domain-separated payload.
    #[prost(bytes = "vec", tag = "5")]
    signature: Vec<u8>,
}

/// An envelope whose signature checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The key that signed it.
    pub signer: PublicKey,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why an envelope could not be opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The envelope is longer than [`MAX_ENVELOPE_SIZE`].
    #[error("envelope of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not an envelope, or its public key is not a valid key message.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The signer's key is not ed25519 (the protobuf `KeyType` value); meshwire checks ed25519
    /// signatures only.
    #[error("unsupported key type {0} (only Ed25519 is supported)")]
    UnsupportedKeyType(u64),
    /// The payload type is not the expected one.
    #[error("unexpected payload type {got:02x?}")]
    WrongPayloadType {
        /// The envelope's payload type.
        got: Vec<u8>,
    },
    /// The signature does not verify for this domain, payload type and payload.
    #[error("bad envelope signature")]
    BadSignature,
}

/// Seals `payload` of type `payload_type` for `domain`, signed by `key`: the envelope's
/// protobuf bytes.
pub fn seal(key: &Keypair, domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let signature = key.sign(&signed_bytes(domain, payload_type, payload));
    Envelope {
        public_key: key.public().encode_protobuf(),
        payload_type: payload_type.to_vec(),
        payload: payload.to_vec(),
        signature,
    }
    .encode_to_vec()
}

/// Opens an envelope sealed for `domain` with payload type `payload_type`: checks its size,
/// payload type, key and signature.
///
/// # Errors
///
/// [`EnvelopeError`]; the payload type is checked before the signature.
pub fn open(bytes: &[u8], domain: &str, payload_type: &[u8]) -> Result<Opened, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE_SIZE {
        return Err(EnvelopeError::TooLarge {
            len: bytes.len(),
            max: MAX_ENVELOPE_SIZE,
        });
    }
    let envelope = Envelope::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if envelope.payload_type != payload_type {
        return Err(EnvelopeError::WrongPayloadType {
            got: envelope.payload_type,
        });
    }
    let signer = PublicKey::decode_protobuf(&envelope.public_key).map_err(|e| match e {
        IdentityError::UnsupportedKeyType(t) => EnvelopeError::UnsupportedKeyType(t),
        other => EnvelopeError::Malformed(format!("public key: {other}")),
    })?;
    let signed = signed_bytes(domain, &envelope.payload_type, &envelope.payload);
    if !signer.verify(&signed, &envelope.signature) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(Opened {
        signer,
        payload: envelope.payload,
    })
}

/// What the signature covers: each part prefixed with its length as an unsigned varint.
fn signed_bytes(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + payload_type.len() + payload.len() + 30);
    for part in [domain.as_bytes(), payload_type, payload] {
        let mut buf = unsigned_varint::encode::usize_buffer();
        out.extend_from_slice(unsigned_varint::encode::usize(part.len(), &mut buf));
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_are_length_prefixed_parts() {
        assert_eq!(
            signed_bytes("ab", &[3, 2], &[9; 130]),
            [&[2, b'a', b'b', 2, 3, 2, 0x82, 0x01][..], &[9; 130][..]].concat()
        );
    }

    #[test]
    fn tampering_is_detected() {
        let key = Keypair::from_seed_for_tests(7);
        let sealed = seal(&key, "d", b"t", b"payload");
        // Flip each byte of the signature, payload and payload type in turn.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_ne!(
                open(&bad, "d", b"t").ok(),
                Some(Opened {
                    signer: key.public(),
                    payload: b"payload".to_vec()
                }),
                "byte {i}"
            );
        }
    }

    #[test]
    fn oversized_refused_before_decoding() {
        let bytes = vec![0u8; MAX_ENVELOPE_SIZE + 1];
        assert!(matches!(
            open(&bytes, "d", b"t"),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }
}
