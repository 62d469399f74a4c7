//! The libp2p Public Key Extension: its DER `SignedKey` encoding and the check that the host
//! key in it signed the certificate key.

use meshwire_core::identity::{IdentityError, KeyMessage, KeyType, PublicKey};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::TlsError;
use super::oid::{self, oid_is};

/// Object identifier of the libp2p Public Key Extension, `1.3.6.1.4.1.53594.1.1`
/// (IANA enterprise number 53594 belongs to the libp2p project).
pub const P2P_EXT_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 53594, 1, 1];

/// Prefix of the message the host key signs: `prefix ‖ SubjectPublicKeyInfo(certificate key)`.
pub(crate) const SIGNING_PREFIX: &[u8] = b"libp2p-tls-handshake:";

/// The typed reason a host key from an extension is unusable: key types meshwire cannot
/// represent stay distinguishable from malformed bytes.
fn host_key_error(err: IdentityError) -> TlsError {
    match err {
        IdentityError::UnsupportedKeyType(t) => TlsError::UnsupportedKeyType(t),
        other => TlsError::InvalidExtension(format!("bad host key: {other}")),
    }
}

/// Decodes the protobuf host key of an extension without checking any signature (for a peer
/// whose certificate was already verified).
pub(crate) fn decode_host_key(protobuf: &[u8]) -> Result<PublicKey, TlsError> {
    PublicKey::decode_protobuf(protobuf).map_err(host_key_error)
}

/// Checks the extension's host-key signature over `message` and returns the host key.
pub(crate) fn verify_host_key(
    protobuf: &[u8],
    signature: &[u8],
    message: &[u8],
) -> Result<PublicKey, TlsError> {
    let host_key = KeyMessage::decode(protobuf).map_err(host_key_error)?;
    match host_key.key_type {
        KeyType::Ed25519 => {
            let key = PublicKey::from_bytes(host_key.data).map_err(host_key_error)?;
            if key.verify(message, signature) {
                Ok(key)
            } else {
                Err(TlsError::BadSignature)
            }
        }
        KeyType::Ecdsa => {
            // meshwire cannot represent ECDSA peers, but a forged extension should still be
            // reported as such.
            verify_ecdsa_host_signature(host_key.data, signature, message)?;
            Err(TlsError::UnsupportedKeyType(KeyType::Ecdsa.to_protobuf()))
        }
        other => Err(TlsError::UnsupportedKeyType(other.to_protobuf())),
    }
}

/// Verifies a libp2p ECDSA host-key signature (DER signature over SHA-256, as go-libp2p
/// makes them). `data` is the key's SubjectPublicKeyInfo. Keys on curves ring cannot verify
/// yield `UnsupportedKeyType(3)`.
fn verify_ecdsa_host_signature(
    data: &[u8],
    signature: &[u8],
    message: &[u8],
) -> Result<(), TlsError> {
    let bad_key = || TlsError::InvalidExtension("bad ECDSA host key".into());
    let (rest, spki) = SubjectPublicKeyInfo::from_der(data).map_err(|_| bad_key())?;
    if !rest.is_empty() || !oid_is(&spki.algorithm.algorithm, oid::EC_PUBLIC_KEY) {
        return Err(bad_key());
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .ok_or_else(bad_key)?;
    let alg: &'static dyn ring::signature::VerificationAlgorithm =
        if oid_is(&curve, oid::CURVE_P256) {
            &ring::signature::ECDSA_P256_SHA256_ASN1
        } else if oid_is(&curve, oid::CURVE_P384) {
            &ring::signature::ECDSA_P384_SHA256_ASN1
        } else {
            return Err(TlsError::UnsupportedKeyType(KeyType::Ecdsa.to_protobuf()));
        };
    ring::signature::UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| TlsError::BadSignature)
}

const DER_SEQUENCE: u8 = 0x30;
const DER_OCTET_STRING: u8 = 0x04;

/// DER `SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }`.
pub(crate) fn encode_signed_key(public_key: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(public_key.len() + signature.len() + 8);
    der_write(&mut body, DER_OCTET_STRING, public_key);
    der_write(&mut body, DER_OCTET_STRING, signature);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_write(&mut out, DER_SEQUENCE, &body);
    out
}

/// Decodes a DER `SignedKey` into (protobuf public key, signature).
pub(crate) fn decode_signed_key(value: &[u8]) -> Result<(&[u8], &[u8]), TlsError> {
    let bad = |why: &str| TlsError::InvalidExtension(format!("bad SignedKey ASN.1: {why}"));
    let (body, rest) = der_read(value, DER_SEQUENCE).map_err(bad)?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let (public_key, body) = der_read(body, DER_OCTET_STRING).map_err(bad)?;
    let (signature, body) = der_read(body, DER_OCTET_STRING).map_err(bad)?;
    if !body.is_empty() {
        return Err(bad("extra fields"));
    }
    Ok((public_key, signature))
}

fn der_write(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(be.get(skip..).unwrap_or_default());
    }
    out.extend_from_slice(content);
}

/// Reads one DER TLV with the given tag (definite, minimal length); returns (content, rest).
fn der_read(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    let (&t, rest) = input.split_first().ok_or("truncated")?;
    if t != tag {
        return Err("unexpected tag");
    }
    let (&first, rest) = rest.split_first().ok_or("truncated length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("unsupported length encoding");
        }
        if rest.len() < n {
            return Err("truncated length");
        }
        let (len_bytes, rest) = rest.split_at(n);
        if len_bytes.first() == Some(&0) {
            return Err("non-minimal length");
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return Err("non-minimal length");
        }
        (len, rest)
    };
    if rest.len() < len {
        return Err("truncated content");
    }
    Ok(rest.split_at(len))
}
