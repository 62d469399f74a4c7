//! Message signing and verification exactly as libp2p does it, and message ids.
//!
//! The author signs `"libp2p-pubsub:"` followed by the protobuf encoding of the [`Message`]
//! with `signature` and `key` unset. The public key travels in `key` only when it cannot be
//! read from the author's peer id: a key whose protobuf encoding is at most 42 bytes (every
//! ed25519 key: 36) is inlined in an identity-multihash peer id, so `key` is omitted — the
//! rule of rust-libp2p's `PublishConfig`. A verifier takes `key` when present (it must then
//! hash to `from`), else the key inlined in `from`.
//!
//! The sequence number is 8 bytes, big endian; the default message id is the author's peer id
//! in base58 followed by the sequence number in decimal, as rust-libp2p's default
//! `message_id_fn` (so both implementations name a message the same way).

use meshwire_core::{Keypair, PeerId, PublicKey};
use prost::Message as _;

use super::Message;

/// The prefix of the signed bytes.
pub const SIGNING_PREFIX: &[u8] = b"libp2p-pubsub:";

/// The longest protobuf-encoded public key inlined in a peer id (rust-libp2p's rule).
pub const MAX_INLINE_KEY_LEN: usize = 42;

/// Why a message fails strict verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// No `from` field.
    #[error("message has no author")]
    MissingSource,
    /// `from` is not a peer id.
    #[error("message author is not a valid peer id")]
    InvalidPeerId,
    /// No `signature` field.
    #[error("message is not signed")]
    MissingSignature,
    /// Neither `key` nor `from` yields a public key this crate can verify with (ed25519).
    #[error("no usable public key")]
    InvalidKey,
    /// `key` does not belong to `from`.
    #[error("public key does not match the author")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// No `seqno` field.
    #[error("message has no sequence number")]
    MissingSeqno,
    /// `seqno` is not 8 bytes.
    #[error("sequence number of {len} bytes (expected 8)")]
    InvalidSeqno {
        /// Its length.
        len: usize,
    },
}

/// What strict verification establishes about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The author.
    pub source: PeerId,
    /// The sequence number.
    pub seqno: u64,
}

/// The bytes an author signs: the prefix, then `message` encoded without signature and key.
pub fn signed_bytes(message: &Message) -> Vec<u8> {
    let unsigned = Message {
        signature: None,
        key: None,
        ..message.clone()
    };
    let mut bytes = SIGNING_PREFIX.to_vec();
    unsigned.encode(&mut bytes).unwrap_or_default();
    bytes
}

/// A message authored and signed by `key`: `from` its peer id, `seqno` big endian, the
/// signature over [`signed_bytes`], `key` omitted when inlinable in the peer id.
pub fn sign(key: &Keypair, seqno: u64, topic: String, data: Vec<u8>) -> Message {
    let public = key.public();
    let encoded_key = public.encode_protobuf();
    let mut message = Message {
        from: Some(public.to_peer_id().to_bytes()),
        data: Some(data),
        seqno: Some(seqno.to_be_bytes().to_vec()),
        topic,
        signature: None,
        key: None,
    };
    message.signature = Some(key.sign(&signed_bytes(&message)));
    if encoded_key.len() > MAX_INLINE_KEY_LEN {
        message.key = Some(encoded_key);
    }
    message
}

/// Strict verification (rust-libp2p's `ValidationMode::Strict`, the default): author, 8-byte
/// sequence number and signature must all be present and valid.
///
/// # Errors
///
/// The first [`MessageError`] found, checked in the order rust-libp2p checks: signature (with
/// author and key), then sequence number.
pub fn verify(message: &Message) -> Result<Verified, MessageError> {
    let from = message.from.as_deref().ok_or(MessageError::MissingSource)?;
    let source = PeerId::from_bytes(from).map_err(|_| MessageError::InvalidPeerId)?;
    let signature = message
        .signature
        .as_deref()
        .ok_or(MessageError::MissingSignature)?;
    let key = match message.key.as_deref() {
        Some(key) => PublicKey::decode_protobuf(key).map_err(|_| MessageError::InvalidKey)?,
        None => source.public_key().ok_or(MessageError::InvalidKey)?,
    };
    if !source.matches(&key) {
        return Err(MessageError::KeyMismatch);
    }
    if !key.verify(&signed_bytes(message), signature) {
        return Err(MessageError::InvalidSignature);
    }
    let seqno = message.seqno.as_deref().ok_or(MessageError::MissingSeqno)?;
    let seqno: [u8; 8] = seqno
        .try_into()
        .map_err(|_| MessageError::InvalidSeqno { len: seqno.len() })?;
    Ok(Verified {
        source,
        seqno: u64::from_be_bytes(seqno),
    })
}

/// rust-libp2p's default message id: the author in base58, then the sequence number in
/// decimal (`0` for a missing one; a missing author reads as the peer id `[0, 1, 0]`).
pub fn default_message_id(source: Option<&PeerId>, seqno: Option<u64>) -> Vec<u8> {
    let mut id = match source {
        Some(peer) => peer.to_base58(),
        // base58 of the bytes [0, 1, 0], rust-libp2p's stand-in author.
        None => "15R".to_string(),
    };
    id.push_str(&seqno.unwrap_or_default().to_string());
    id.into_bytes()
}
