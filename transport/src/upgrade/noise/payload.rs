//! The libp2p Noise handshake payload: protobuf `NoiseHandshakePayload`, encoded and decoded by
//! hand (no allocation proportional to hostile input beyond the bounded extension lists).
//!
//! ```text
//! message NoiseExtensions {
//!     repeated bytes webtransport_certhashes = 1;
//!     repeated string stream_muxers = 2;
//! }
//! message NoiseHandshakePayload {
//!     bytes identity_key = 1;            // protobuf PublicKey
//!     bytes identity_sig = 2;            // sig("noise-libp2p-static-key:" ‖ static key)
//!     optional NoiseExtensions extensions = 4;
//! }
//! ```
//!
//! Decoding follows proto3: unknown fields are skipped (by wire type), absent fields are empty.
//! A repeated `identity_key`, `identity_sig` or `extensions` field is rejected (no honest encoder
//! writes one), as are groups, truncated fields and over-long varints. The extension lists are
//! bounded by [`MAX_EXTENSION_ENTRIES`] entries in all.

use super::NoiseError;

/// Most entries (certificate hashes plus stream muxers) taken from a peer's extensions.
pub const MAX_EXTENSION_ENTRIES: usize = 32;

/// A decoded handshake payload, borrowing from the decrypted handshake message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct HandshakePayload<'a> {
    /// Field 1: the protobuf-encoded identity public key (empty when absent).
    pub identity_key: &'a [u8],
    /// Field 2: the signature over the Noise static key (empty when absent).
    pub identity_sig: &'a [u8],
    /// Field 4, `stream_muxers`: the peer's early muxer negotiation offer (logged, not used).
    pub stream_muxers: Vec<&'a str>,
    /// Field 4, `webtransport_certhashes`: how many the peer sent (not used over Noise here).
    pub certhashes: usize,
}

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

/// Encodes a payload carrying our identity key and signature (no extensions).
pub(crate) fn encode(identity_key: &[u8], identity_sig: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(identity_key.len() + identity_sig.len() + 8);
    push_field(&mut out, 1, identity_key);
    push_field(&mut out, 2, identity_sig);
    out
}

fn push_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    push_varint(out, field << 3 | WIRE_LEN);
    push_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one varint of at most 10 bytes / 64 bits.
fn read_varint(bytes: &[u8]) -> Result<(u64, &[u8]), NoiseError> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Err(NoiseError::BadPayload("varint overflow"));
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(NoiseError::BadPayload("truncated varint"))
}

/// One field: its number and, for length-delimited fields, its bytes.
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

/// Reads the next field, skipping the value of non-length-delimited wire types.
fn next_field(bytes: &[u8]) -> Result<(Field<'_>, &[u8]), NoiseError> {
    let (key, rest) = read_varint(bytes)?;
    let number = key >> 3;
    if number == 0 {
        return Err(NoiseError::BadPayload("field number 0"));
    }
    match key & 7 {
        WIRE_VARINT => {
            let (_, rest) = read_varint(rest)?;
            Ok((
                Field {
                    number,
                    bytes: None,
                },
                rest,
            ))
        }
        WIRE_I64 => {
            let rest = rest
                .get(8..)
                .ok_or(NoiseError::BadPayload("truncated fixed64"))?;
            Ok((
                Field {
                    number,
                    bytes: None,
                },
                rest,
            ))
        }
        WIRE_I32 => {
            let rest = rest
                .get(4..)
                .ok_or(NoiseError::BadPayload("truncated fixed32"))?;
            Ok((
                Field {
                    number,
                    bytes: None,
                },
                rest,
            ))
        }
        WIRE_LEN => {
            let (len, rest) = read_varint(rest)?;
            let len = usize::try_from(len).map_err(|_| NoiseError::BadPayload("bad length"))?;
            if len > rest.len() {
                return Err(NoiseError::BadPayload("truncated field"));
            }
            let (value, rest) = rest.split_at(len);
            Ok((
                Field {
                    number,
                    bytes: Some(value),
                },
                rest,
            ))
        }
        _ => Err(NoiseError::BadPayload("unsupported wire type")),
    }
}

/// Decodes a `NoiseHandshakePayload`.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<HandshakePayload<'_>, NoiseError> {
    let mut payload = HandshakePayload::default();
    let (mut key_seen, mut sig_seen, mut ext_seen) = (false, false, false);
    while !bytes.is_empty() {
        let (field, rest) = next_field(bytes)?;
        bytes = rest;
        match (field.number, field.bytes) {
            (1, Some(v)) => {
                if std::mem::replace(&mut key_seen, true) {
                    return Err(NoiseError::BadPayload("repeated identity_key"));
                }
                payload.identity_key = v;
            }
            (2, Some(v)) => {
                if std::mem::replace(&mut sig_seen, true) {
                    return Err(NoiseError::BadPayload("repeated identity_sig"));
                }
                payload.identity_sig = v;
            }
            (4, Some(v)) => {
                if std::mem::replace(&mut ext_seen, true) {
                    return Err(NoiseError::BadPayload("repeated extensions"));
                }
                decode_extensions(v, &mut payload)?;
            }
            (1 | 2 | 4, None) => return Err(NoiseError::BadPayload("wrong wire type")),
            _ => {} // unknown field: skipped
        }
    }
    Ok(payload)
}

fn decode_extensions<'a>(
    mut bytes: &'a [u8],
    payload: &mut HandshakePayload<'a>,
) -> Result<(), NoiseError> {
    let mut entries = 0usize;
    while !bytes.is_empty() {
        let (field, rest) = next_field(bytes)?;
        bytes = rest;
        match (field.number, field.bytes) {
            (1 | 2, None) => return Err(NoiseError::BadPayload("wrong wire type in extensions")),
            (1 | 2, Some(v)) => {
                entries += 1;
                if entries > MAX_EXTENSION_ENTRIES {
                    return Err(NoiseError::BadPayload("too many extension entries"));
                }
                if field.number == 1 {
                    payload.certhashes += 1;
                } else {
                    let muxer = std::str::from_utf8(v)
                        .map_err(|_| NoiseError::BadPayload("stream muxer is not UTF-8"))?;
                    payload.stream_muxers.push(muxer);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let enc = encode(b"key", b"signature");
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.identity_key, b"key");
        assert_eq!(dec.identity_sig, b"signature");
        assert!(dec.stream_muxers.is_empty());
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(decode(&[]).unwrap(), HandshakePayload::default());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut enc = encode(b"k", b"s");
        // field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32
        enc.extend_from_slice(&[9 << 3, 0x96, 0x01]);
        enc.extend_from_slice(&[10 << 3 | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        enc.extend_from_slice(&[11 << 3 | 2, 2, 0xff, 0xfe]);
        enc.extend_from_slice(&[12 << 3 | 5, 1, 2, 3, 4]);
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.identity_key, b"k");
        assert_eq!(dec.identity_sig, b"s");
    }

    #[test]
    fn extensions_are_decoded_and_bounded() {
        let mut ext = Vec::new();
        push_field(&mut ext, 2, b"/yamux/1.0.0");
        push_field(&mut ext, 1, b"\x12\x20hash");
        let mut enc = encode(b"k", b"s");
        push_field(&mut enc, 4, &ext);
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.stream_muxers, vec!["/yamux/1.0.0"]);
        assert_eq!(dec.certhashes, 1);

        let mut ext = Vec::new();
        for _ in 0..=MAX_EXTENSION_ENTRIES {
            push_field(&mut ext, 2, b"/m");
        }
        let mut enc = encode(b"k", b"s");
        push_field(&mut enc, 4, &ext);
        assert!(matches!(decode(&enc), Err(NoiseError::BadPayload(_))));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let cases: &[&[u8]] = &[
            &[0x0a],          // key without length
            &[0x0a, 5, 1, 2], // truncated bytes
            &[0x08, 1],       // identity_key as a varint
            &[0x0b],          // group start
            &[0x00, 0],       // field 0
            &[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ], // overflow
            &[0x0a, 0, 0x0a, 0], // repeated identity_key
            &[0x22, 2, 0x12, 1], // truncated extension
            &[0x22, 3, 0x12, 1, 0xff], // non-UTF-8 muxer
        ];
        for case in cases {
            assert!(
                matches!(decode(case), Err(NoiseError::BadPayload(_))),
                "{case:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
