//! Node identity: ed25519 key pairs and libp2p peer IDs.
//!
//! A [`PeerId`] is the multihash of the protobuf-encoded public key, exactly as the libp2p
//! peer-id spec defines it, so meshwire peers and rust-libp2p / go-libp2p peers agree on who is
//! who. Ed25519 public keys encode to 36 bytes, so their peer ID is the *identity* multihash
//! of that encoding and its base58btc text starts with `12D3KooW`.
//!
//! ```
//! use meshwire_core::identity::{Keypair, PeerId};
//!
//! let key = Keypair::generate();
//! let peer = key.public().to_peer_id();
//! let text = peer.to_string();
//! assert!(text.starts_with("12D3KooW"));
//! assert_eq!(text.parse::<PeerId>().unwrap(), peer);
//!
//! let sig = key.sign(b"hello");
//! assert!(key.public().verify(b"hello", &sig));
//! ```

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, Verifier};
use thiserror::Error;

/// Multihash code of the identity "hash" (the digest is the input itself).
const MH_IDENTITY: u8 = 0x00;
/// Multihash code of SHA2-256.
const MH_SHA2_256: u8 = 0x12;
/// Longest public-key encoding that is inlined with the identity multihash (spec: 42 bytes).
const MAX_INLINE_KEY_LEN: usize = 42;
/// Room for the longest multihash a peer ID may hold: code, length, 42 digest bytes.
const MAX_PEER_ID_LEN: usize = 2 + MAX_INLINE_KEY_LEN;
/// CIDv1 multicodec of `libp2p-key`.
const CID_LIBP2P_KEY: u8 = 0x72;

/// Errors of decoding keys and peer IDs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The bytes are not a well-formed protobuf `PublicKey` / `PrivateKey`.
    #[error("malformed key encoding: {0}")]
    MalformedKey(&'static str),
    /// The key is of a type meshwire does not support (only Ed25519 is), or of a `KeyType`
    /// the spec does not define; the protobuf `KeyType` value.
    #[error("unsupported key type {0} (only Ed25519 is supported)")]
    UnsupportedKeyType(u64),
    /// The key bytes are not a valid Ed25519 key.
    #[error("invalid ed25519 key")]
    InvalidKey,
    /// The bytes or text are not a valid peer ID.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(&'static str),
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Builds a public key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::InvalidKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&arr)
            .map(PublicKey)
            .map_err(|_| IdentityError::InvalidKey)
    }

    /// The 32 raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies an ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify(msg, &sig).is_ok()
    }

    /// The libp2p protobuf encoding: `PublicKey { Type: Ed25519, Data: <32 bytes> }`.
    pub fn encode_protobuf(&self) -> Vec<u8> {
        KeyMessage {
            key_type: KeyType::Ed25519,
            data: self.0.as_bytes(),
        }
        .encode()
    }

    /// Decodes the libp2p protobuf encoding of a public key (see [`KeyMessage`]). Keys of
    /// other types fail with [`IdentityError::UnsupportedKeyType`].
    pub fn decode_protobuf(bytes: &[u8]) -> Result<Self, IdentityError> {
        Self::from_bytes(KeyMessage::decode_ed25519(bytes)?)
    }

    /// The peer ID of this key.
    pub fn to_peer_id(&self) -> PeerId {
        PeerId::from_public_key(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(ed25519:")?;
        for b in self.0.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// An ed25519 key pair: a node's long-term identity.
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl Keypair {
    /// Generates a fresh random key pair from the operating system's RNG.
    pub fn generate() -> Self {
        Keypair(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Builds a key pair from its 32-byte secret seed.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Keypair(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// Builds a key pair deterministically from a small number, for tests and simulations.
    /// Never use it for a real identity.
    pub fn from_seed_for_tests(seed: u64) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[31] = 0x5a;
        Self::from_secret_bytes(secret)
    }

    /// The 32-byte secret seed.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The peer ID of this key pair.
    pub fn peer_id(&self) -> PeerId {
        self.public().to_peer_id()
    }

    /// Signs `msg` (ed25519, 64-byte signature).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0.sign(msg).to_bytes().to_vec()
    }

    /// The libp2p protobuf encoding of the private key (`Data` = seed ‖ public key, 64 bytes),
    /// the on-disk format rust-libp2p and go-libp2p use.
    pub fn to_protobuf_encoding(&self) -> Vec<u8> {
        let mut data = [0u8; 64];
        data[..32].copy_from_slice(&self.0.to_bytes());
        data[32..].copy_from_slice(self.0.verifying_key().as_bytes());
        KeyMessage {
            key_type: KeyType::Ed25519,
            data: &data,
        }
        .encode()
    }

    /// Decodes a libp2p protobuf private key. Accepts the 64-byte (seed ‖ public) form and the
    /// legacy 96-byte (seed ‖ public ‖ public) form; the embedded public key must match the seed.
    pub fn from_protobuf_encoding(bytes: &[u8]) -> Result<Self, IdentityError> {
        let data = KeyMessage::decode_ed25519(bytes)?;
        let (seed, publics) = match data.len() {
            64 => (&data[..32], &data[32..]),
            96 => {
                if data[32..64] != data[64..96] {
                    return Err(IdentityError::InvalidKey);
                }
                (&data[..32], &data[32..64])
            }
            _ => return Err(IdentityError::InvalidKey),
        };
        let seed: [u8; 32] = seed.try_into().map_err(|_| IdentityError::InvalidKey)?;
        let kp = Self::from_secret_bytes(seed);
        if kp.public().0.as_bytes() != publics {
            return Err(IdentityError::InvalidKey);
        }
        Ok(kp)
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// The `KeyType` of a libp2p protobuf key message (`PublicKey` / `PrivateKey`), as the
/// peer-id spec numbers them.
///
/// meshwire itself only makes and represents [`KeyType::Ed25519`] keys; the other types are
/// named so that code reading keys from other implementations (the TLS certificate verifier,
/// for one) can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA (`0`); `Data` is a DER `SubjectPublicKeyInfo` / PKCS#1 key.
    Rsa,
    /// Ed25519 (`1`); `Data` is the 32-byte key (public) or seed ‖ public key (private).
    Ed25519,
    /// secp256k1 (`2`); `Data` is a compressed point (public) or the scalar (private).
    Secp256k1,
    /// ECDSA (`3`); `Data` is a DER `SubjectPublicKeyInfo` (public) or SEC1 key (private).
    Ecdsa,
}

impl KeyType {
    /// The type named by a protobuf `KeyType` value, or `None` for a value the spec does not
    /// define.
    pub fn from_protobuf(value: u64) -> Option<Self> {
        match value {
            0 => Some(KeyType::Rsa),
            1 => Some(KeyType::Ed25519),
            2 => Some(KeyType::Secp256k1),
            3 => Some(KeyType::Ecdsa),
            _ => None,
        }
    }

    /// The protobuf `KeyType` value (`0` RSA, `1` Ed25519, `2` secp256k1, `3` ECDSA).
    pub fn to_protobuf(self) -> u64 {
        match self {
            KeyType::Rsa => 0,
            KeyType::Ed25519 => 1,
            KeyType::Secp256k1 => 2,
            KeyType::Ecdsa => 3,
        }
    }
}

/// A libp2p protobuf key message, decoded but not interpreted: the proto2 message
/// `{ required KeyType Type = 1; required bytes Data = 2; }` that both `PublicKey` and
/// `PrivateKey` are.
///
/// This is the one decoder of that message in meshwire: [`PublicKey::decode_protobuf`],
/// [`Keypair::from_protobuf_encoding`] and the transport's TLS certificate verifier (which must
/// check signatures of key types meshwire cannot represent) all go through it.
///
/// Decoding is strict and safe on hostile input: fields may come in any order, but unknown
/// fields, duplicate fields, missing fields, truncated data, over-long varints and key types
/// the spec does not define are rejected with a typed [`IdentityError`]; nothing is allocated
/// and `data` borrows from the input.
///
/// ```
/// use meshwire_core::identity::{IdentityError, KeyMessage, KeyType, Keypair};
///
/// let encoded = Keypair::generate().public().encode_protobuf();
/// let message = KeyMessage::decode(&encoded).unwrap();
/// assert_eq!(message.key_type, KeyType::Ed25519);
/// assert_eq!(message.data.len(), 32);
/// assert_eq!(message.encode(), encoded);
///
/// // An undefined key type (9) is told apart from malformed bytes.
/// assert_eq!(KeyMessage::decode(&[0x08, 9, 0x12, 0]), Err(IdentityError::UnsupportedKeyType(9)));
/// assert!(matches!(KeyMessage::decode(&[0x08]), Err(IdentityError::MalformedKey(_))));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMessage<'a> {
    /// The `Type` field.
    pub key_type: KeyType,
    /// The `Data` field: the key in the type's own encoding.
    pub data: &'a [u8],
}

/// Protobuf tag of field 1 (`Type`), wire type varint.
const TAG_TYPE: u64 = 0x08;
/// Protobuf tag of field 2 (`Data`), wire type length-delimited.
const TAG_DATA: u64 = 0x12;

impl<'a> KeyMessage<'a> {
    /// Decodes a protobuf key message.
    ///
    /// Fails with [`IdentityError::MalformedKey`] on bytes that are not a well-formed message
    /// and with [`IdentityError::UnsupportedKeyType`] on a well-formed message whose `Type` the
    /// spec does not define.
    pub fn decode(mut bytes: &'a [u8]) -> Result<Self, IdentityError> {
        let mut key_type = None;
        let mut data = None;
        while !bytes.is_empty() {
            let (tag, rest) = read_varint(bytes).ok_or(IdentityError::MalformedKey("bad tag"))?;
            bytes = rest;
            match tag {
                TAG_TYPE => {
                    let (v, rest) =
                        read_varint(bytes).ok_or(IdentityError::MalformedKey("bad type"))?;
                    if key_type.replace(v).is_some() {
                        return Err(IdentityError::MalformedKey("duplicate type"));
                    }
                    bytes = rest;
                }
                TAG_DATA => {
                    let (len, rest) =
                        read_varint(bytes).ok_or(IdentityError::MalformedKey("bad length"))?;
                    let len = usize::try_from(len)
                        .map_err(|_| IdentityError::MalformedKey("bad length"))?;
                    if len > rest.len() {
                        return Err(IdentityError::MalformedKey("truncated data"));
                    }
                    let (d, rest) = rest.split_at(len);
                    if data.replace(d).is_some() {
                        return Err(IdentityError::MalformedKey("duplicate data"));
                    }
                    bytes = rest;
                }
                _ => return Err(IdentityError::MalformedKey("unknown field")),
            }
        }
        match (key_type, data) {
            (Some(t), Some(data)) => {
                let key_type =
                    KeyType::from_protobuf(t).ok_or(IdentityError::UnsupportedKeyType(t))?;
                Ok(KeyMessage { key_type, data })
            }
            _ => Err(IdentityError::MalformedKey("missing field")),
        }
    }

    /// Decodes a message that must hold an Ed25519 key: as [`KeyMessage::decode`], plus
    /// [`IdentityError::UnsupportedKeyType`] for any other (defined) key type.
    fn decode_ed25519(bytes: &'a [u8]) -> Result<&'a [u8], IdentityError> {
        let message = Self::decode(bytes)?;
        match message.key_type {
            KeyType::Ed25519 => Ok(message.data),
            other => Err(IdentityError::UnsupportedKeyType(other.to_protobuf())),
        }
    }

    /// The canonical encoding: `Type` then `Data`, as libp2p implementations write it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 12);
        push_varint(&mut out, TAG_TYPE);
        push_varint(&mut out, self.key_type.to_protobuf());
        push_varint(&mut out, TAG_DATA);
        push_varint(&mut out, self.data.len() as u64);
        out.extend_from_slice(self.data);
        out
    }
}

/// Reads one unsigned LEB128 varint of at most 10 bytes (and at most 64 bits).
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// Appends one unsigned LEB128 varint.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The identity of a peer: the multihash of its protobuf-encoded public key.
///
/// It is `Copy`, cheap to hash and compare, and prints as base58btc (`12D3KooW…` for ed25519).
/// Parsing accepts that form, legacy `Qm…` SHA2-256 forms, and the CIDv1 `libp2p-key` text
/// form (multibase base32, `b…`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    len: u8,
    bytes: [u8; MAX_PEER_ID_LEN],
}

impl PeerId {
    /// The peer ID of a public key (identity multihash of its protobuf encoding).
    pub fn from_public_key(key: &PublicKey) -> Self {
        let enc = key.encode_protobuf();
        let mut bytes = [0u8; MAX_PEER_ID_LEN];
        bytes[0] = MH_IDENTITY;
        bytes[1] = enc.len() as u8;
        bytes[2..2 + enc.len()].copy_from_slice(&enc);
        PeerId {
            len: (2 + enc.len()) as u8,
            bytes,
        }
    }

    /// Parses the binary multihash form of a peer ID. Accepts identity multihashes of at most
    /// 42 bytes and SHA2-256 multihashes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdentityError> {
        if b.len() < 2 {
            return Err(IdentityError::InvalidPeerId("too short"));
        }
        let (code, digest_len) = (b[0], b[1] as usize);
        if digest_len & 0x80 != 0 {
            return Err(IdentityError::InvalidPeerId("digest length too large"));
        }
        match code {
            MH_IDENTITY if digest_len <= MAX_INLINE_KEY_LEN => {}
            MH_SHA2_256 if digest_len == 32 => {}
            MH_IDENTITY | MH_SHA2_256 => {
                return Err(IdentityError::InvalidPeerId("bad digest length"))
            }
            _ => return Err(IdentityError::InvalidPeerId("unsupported multihash")),
        }
        if b.len() != 2 + digest_len {
            return Err(IdentityError::InvalidPeerId("length mismatch"));
        }
        let mut bytes = [0u8; MAX_PEER_ID_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(PeerId {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The binary multihash form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The binary multihash form, owned.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The public key inlined in an identity-multihash peer ID, if it is an ed25519 key.
    pub fn public_key(&self) -> Option<PublicKey> {
        if self.bytes[0] != MH_IDENTITY {
            return None;
        }
        PublicKey::decode_protobuf(&self.as_bytes()[2..]).ok()
    }

    /// Whether `key` is the key this peer ID was made from.
    pub fn matches(&self, key: &PublicKey) -> bool {
        *self == key.to_peer_id()
    }

    /// The base58btc text form (the same as `Display`).
    pub fn to_base58(&self) -> String {
        bs58::encode(self.as_bytes()).into_string()
    }

    /// The CIDv1 text form: multibase base32 (lower case, prefix `b`) of
    /// `0x01 0x72 <multihash>`.
    pub fn to_cid_string(&self) -> String {
        let mut cid = Vec::with_capacity(2 + self.len as usize);
        cid.extend_from_slice(&[0x01, CID_LIBP2P_KEY]);
        cid.extend_from_slice(self.as_bytes());
        let mut s = String::from("b");
        s.push_str(
            &data_encoding::BASE32_NOPAD
                .encode(&cid)
                .to_ascii_lowercase(),
        );
        s
    }

    /// A random peer ID (of a fresh key), for tests and simulations.
    pub fn random() -> Self {
        Keypair::generate().peer_id()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.to_base58())
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A base58btc peer ID is at most ~60 characters; a CID form a little longer.
        if s.len() > 128 {
            return Err(IdentityError::InvalidPeerId("text too long"));
        }
        // Binary peer IDs start 0x00 or 0x12, so their base58btc text starts with '1' or 'Q', never
        // with 'b': a leading 'b' is the multibase prefix of the CIDv1 form.
        if let Some(rest) = s.strip_prefix('b') {
            let upper = rest.to_ascii_uppercase();
            let cid = data_encoding::BASE32_NOPAD
                .decode(upper.as_bytes())
                .map_err(|_| IdentityError::InvalidPeerId("bad base32"))?;
            // CIDv1 (varint 1) with multicodec libp2p-key (varint 0x72).
            if cid.len() < 2 || cid[0] != 0x01 || cid[1] != CID_LIBP2P_KEY {
                return Err(IdentityError::InvalidPeerId("not a libp2p-key CIDv1"));
            }
            return PeerId::from_bytes(&cid[2..]);
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| IdentityError::InvalidPeerId("bad base58"))?;
        PeerId::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Test vectors of the libp2p peer-id spec (peer-ids/peer-ids.md, "Test vectors").
    const SPEC_PRIVATE: &str = "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
    const SPEC_PUBLIC: &str =
        "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
    const SPEC_PEER_ID: &str = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";

    #[test]
    fn spec_vector_private_key_derives_public_key_and_peer_id() {
        let kp = Keypair::from_protobuf_encoding(&hex::decode(SPEC_PRIVATE).unwrap()).unwrap();
        assert_eq!(hex::encode(kp.public().encode_protobuf()), SPEC_PUBLIC);
        assert_eq!(hex::encode(kp.to_protobuf_encoding()), SPEC_PRIVATE);
        let pk = PublicKey::decode_protobuf(&hex::decode(SPEC_PUBLIC).unwrap()).unwrap();
        assert_eq!(pk, kp.public());
        let id = pk.to_peer_id();
        assert_eq!(id.to_string(), SPEC_PEER_ID);
        assert_eq!(&id.as_bytes()[..2], &[0x00, 36]);
        assert_eq!(id.public_key(), Some(pk));
    }

    #[test]
    fn spec_vector_cid_and_legacy_forms_parse_to_the_same_peer() {
        // The spec's example: the CIDv1 form of QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N.
        let legacy: PeerId = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
            .parse()
            .unwrap();
        let cid: PeerId = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
            .parse()
            .unwrap();
        assert_eq!(legacy, cid);
        assert_eq!(
            legacy.to_cid_string(),
            "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
        );
        assert_eq!(legacy.public_key(), None);
    }

    #[test]
    fn ed25519_cid_round_trip() {
        let id: PeerId = SPEC_PEER_ID.parse().unwrap();
        let cid = id.to_cid_string();
        assert!(cid.starts_with('b'));
        assert_eq!(cid.parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn legacy_96_byte_private_key_is_accepted_and_checked() {
        let kp = Keypair::generate();
        let mut enc = vec![0x08, 0x01, 0x12, 96];
        enc.extend_from_slice(&kp.secret_bytes());
        enc.extend_from_slice(&kp.public().to_bytes());
        enc.extend_from_slice(&kp.public().to_bytes());
        assert_eq!(
            Keypair::from_protobuf_encoding(&enc).unwrap().peer_id(),
            kp.peer_id()
        );
        let last = enc.len() - 1;
        enc[last] ^= 1;
        assert_eq!(
            Keypair::from_protobuf_encoding(&enc).unwrap_err(),
            IdentityError::InvalidKey
        );
    }

    #[test]
    fn wrong_key_types_and_malformed_keys_are_rejected() {
        // secp256k1 public key from the spec vectors.
        let secp = hex::decode(
            "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99",
        )
        .unwrap();
        assert_eq!(
            PublicKey::decode_protobuf(&secp).unwrap_err(),
            IdentityError::UnsupportedKeyType(2)
        );
        assert!(PublicKey::decode_protobuf(&[0x08, 0x01]).is_err());
        assert!(PublicKey::decode_protobuf(&[0x08, 0x01, 0x12, 0x20, 1, 2]).is_err());
        assert!(PublicKey::decode_protobuf(&[0x08, 0x01, 0x08, 0x01, 0x12, 0x00]).is_err());
        assert!(PublicKey::decode_protobuf(&[0x18, 0x01]).is_err());
    }

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::from_seed_for_tests(7);
        let sig = kp.sign(b"msg");
        assert!(kp.public().verify(b"msg", &sig));
        assert!(!kp.public().verify(b"msh", &sig));
        assert!(!kp.public().verify(b"msg", &sig[..10]));
        assert!(!Keypair::from_seed_for_tests(8)
            .public()
            .verify(b"msg", &sig));
    }

    #[test]
    fn invalid_peer_id_texts() {
        for s in ["", "12D3KooW", "Qm", "bafz", "b!!!", "hello world", "zzzz"] {
            assert!(s.parse::<PeerId>().is_err(), "{s} parsed");
        }
        assert!(PeerId::from_bytes(&[0x13, 0x20]).is_err());
        assert!(PeerId::from_bytes(&[0x00, 43]).is_err());
        assert!(PeerId::from_bytes(&[0x12, 0x20, 0]).is_err());
    }

    #[test]
    fn key_message_decodes_every_defined_type_in_any_field_order() {
        for (value, key_type) in [
            (0, KeyType::Rsa),
            (1, KeyType::Ed25519),
            (2, KeyType::Secp256k1),
            (3, KeyType::Ecdsa),
        ] {
            assert_eq!(KeyType::from_protobuf(value), Some(key_type));
            assert_eq!(key_type.to_protobuf(), value);
            let forward = [0x08, value as u8, 0x12, 2, 0xaa, 0xbb];
            let backward = [0x12, 2, 0xaa, 0xbb, 0x08, value as u8];
            for bytes in [&forward[..], &backward[..]] {
                let message = KeyMessage::decode(bytes).unwrap();
                assert_eq!(message.key_type, key_type);
                assert_eq!(message.data, &[0xaa, 0xbb]);
            }
            assert_eq!(
                KeyMessage::decode(&forward).unwrap().encode(),
                forward.to_vec()
            );
        }
        assert_eq!(KeyType::from_protobuf(4), None);
        // The secp256k1 public key of the spec vectors keeps its 33 data bytes.
        let secp = hex::decode(
            "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99",
        )
        .unwrap();
        let message = KeyMessage::decode(&secp).unwrap();
        assert_eq!(message.key_type, KeyType::Secp256k1);
        assert_eq!(message.data.len(), 33);
        assert_eq!(message.encode(), secp);
    }

    #[test]
    fn key_message_tells_unsupported_types_from_malformed_bytes() {
        assert_eq!(
            KeyMessage::decode(&[0x08, 0x04, 0x12, 0x00]),
            Err(IdentityError::UnsupportedKeyType(4))
        );
        // A multi-byte varint key type.
        assert_eq!(
            KeyMessage::decode(&[0x08, 0x80, 0x01, 0x12, 0x00]),
            Err(IdentityError::UnsupportedKeyType(128))
        );
        let malformed: &[&[u8]] = &[
            &[],                                   // missing both fields
            &[0x08, 0x01],                         // missing data
            &[0x12, 0x00],                         // missing type
            &[0x08],                               // truncated type
            &[0x08, 0x81],                         // unterminated varint
            &[0x08, 0x01, 0x12],                   // truncated length
            &[0x08, 0x01, 0x12, 0x03, 1, 2],       // truncated data
            &[0x08, 0x01, 0x08, 0x01, 0x12, 0x00], // duplicate type
            &[0x08, 0x01, 0x12, 0x00, 0x12, 0x00], // duplicate data
            &[0x08, 0x01, 0x12, 0x00, 0x18, 0x01], // unknown field 3
            &[0x0a, 0x00, 0x12, 0x00],             // field 1 with the wrong wire type
            // An 11-byte varint, and a 10-byte one that overflows 64 bits.
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            // A data length far beyond the input.
            &[
                0x08, 0x01, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ];
        for bytes in malformed {
            assert!(
                matches!(
                    KeyMessage::decode(bytes),
                    Err(IdentityError::MalformedKey(_))
                ),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn key_message_largest_varint_is_accepted() {
        // 2^64 - 1 as a key type: well formed, undefined type.
        let mut bytes = vec![0x08];
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.extend_from_slice(&[0x01, 0x12, 0x00]);
        assert_eq!(
            KeyMessage::decode(&bytes),
            Err(IdentityError::UnsupportedKeyType(u64::MAX))
        );
    }

    proptest! {
        #[test]
        fn key_message_round_trips(
            value in 0u64..4,
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let key_type = KeyType::from_protobuf(value).unwrap();
            let encoded = KeyMessage { key_type, data: &data }.encode();
            let decoded = KeyMessage::decode(&encoded).unwrap();
            prop_assert_eq!(decoded.key_type, key_type);
            prop_assert_eq!(decoded.data, &data[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = KeyMessage::decode(&bytes);
            let _ = PublicKey::decode_protobuf(&bytes);
            let _ = Keypair::from_protobuf_encoding(&bytes);
            if let Ok(id) = PeerId::from_bytes(&bytes) {
                prop_assert_eq!(id.as_bytes(), &bytes[..]);
                prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
            }
        }

        #[test]
        fn random_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<PeerId>();
        }

        #[test]
        fn peer_id_text_round_trip(seed in any::<u64>()) {
            let id = Keypair::from_seed_for_tests(seed).peer_id();
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
            prop_assert_eq!(id.to_cid_string().parse::<PeerId>().unwrap(), id);
        }
    }
}
