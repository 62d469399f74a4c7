//! Reservation vouchers: a relay's signed statement that it serves a peer until a time.
//!
//! A voucher is a [signed envelope](envelope) with domain [`DOMAIN`] (`libp2p-relay-rsvp`) and
//! payload type [`PAYLOAD_TYPE`], whose payload is the protobuf
//! `Voucher { relay = 1 (bytes, peer id), peer = 2 (bytes, peer id), expiration = 3 (uint64,
//! UNIX seconds) }`, all three always written, in field order. A relay puts it in
//! `Reservation.voucher`; the spec calls vouchers advisory, but go-libp2p's client refuses a
//! reservation whose voucher does not open.
//!
//! The payload type is the two bytes `03 02`, the multicodec code `0x0302` written big-endian,
//! as go-libp2p (`RecordCodec = []byte{0x03, 0x02}`) and js-libp2p write it; not the unsigned
//! varint of `0x0302` (`82 06`), which no implementation uses. rust-libp2p's relay sends no
//! voucher and reads none.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_relay::voucher::{Voucher, VoucherError};
//!
//! let relay = Keypair::generate();
//! let client = Keypair::generate().peer_id();
//! let bytes = Voucher::sign(&relay, client, 1_700_000_000);
//!
//! let voucher = Voucher::verify(&bytes, relay.peer_id(), client).unwrap();
//! assert_eq!(voucher.expiration, 1_700_000_000);
//!
//! // A voucher for someone else does not pass.
//! let other = Keypair::generate().peer_id();
//! assert!(matches!(Voucher::verify(&bytes, relay.peer_id(), other), Err(VoucherError::WrongPeer { .. })));
//! ```

use meshwire_core::{Keypair, PeerId};
use prost::Message as _;
use thiserror::Error;

pub mod envelope;
#[cfg(test)]
mod tests;

use self::envelope::EnvelopeError;

/// The signature domain of reservation vouchers.
pub const DOMAIN: &str = "libp2p-relay-rsvp";

/// The envelope payload type of reservation vouchers: multicodec `0x0302` as the bytes
/// `03 02` (go-libp2p's and js-libp2p's `RecordCodec`).
pub const PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// The voucher payload as it travels.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct VoucherPayload {
    /// The relay's peer id.
    #[prost(bytes = "vec", optional, tag = "1")]
    relay: Option<Vec<u8>>,
    /// The reserving peer's id.
    #[prost(bytes = "vec", optional, tag = "2")]
    peer: Option<Vec<u8>>,
    /// Expiry, UNIX seconds.
    #[prost(uint64, optional, tag = "3")]
    expiration: Option<u64>,
}

/// A verified reservation voucher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Voucher {
    /// The relay that signed it.
    pub relay: PeerId,
    /// The peer it serves.
    pub peer: PeerId,
    /// When the reservation ends, UTC UNIX seconds.
    pub expiration: u64,
}

/// Why a voucher was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VoucherError {
    /// Longer than [`envelope::MAX_ENVELOPE_SIZE`].
    #[error("voucher of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed envelope or voucher payload (including a missing field or an
    /// invalid peer id).
    #[error("malformed voucher: {0}")]
    Malformed(String),
    /// Signed with a key that is not ed25519 (the protobuf `KeyType` value).
    #[error("unsupported key type {0} (only Ed25519 is supported)")]
    UnsupportedKeyType(u64),
    /// The envelope's payload type is not [`PAYLOAD_TYPE`].
    #[error("not a reservation voucher: payload type {got:02x?}")]
    WrongPayloadType {
        /// The envelope's payload type.
        got: Vec<u8>,
    },
    /// The signature does not verify (also what a voucher sealed for another domain gives).
    #[error("bad voucher signature")]
    BadSignature,
    /// The key that signed is not the key of the payload's `relay`.
    #[error("voucher for relay {relay} signed by {signer}")]
    SignerNotRelay {
        /// The payload's relay.
        relay: PeerId,
        /// The signer.
        signer: PeerId,
    },
    /// Signed by another relay than the one expected.
    #[error("voucher of relay {got}, expected {expected}")]
    WrongRelay {
        /// The relay expected.
        expected: PeerId,
        /// The voucher's relay.
        got: PeerId,
    },
    /// Issued to another peer than the one expected.
    #[error("voucher for peer {got}, expected {expected}")]
    WrongPeer {
        /// The peer expected.
        expected: PeerId,
        /// The voucher's peer.
        got: PeerId,
    },
}

impl From<EnvelopeError> for VoucherError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::TooLarge { len, max } => VoucherError::TooLarge { len, max },
            EnvelopeError::Malformed(m) => VoucherError::Malformed(m),
            EnvelopeError::UnsupportedKeyType(t) => VoucherError::UnsupportedKeyType(t),
            EnvelopeError::WrongPayloadType { got } => VoucherError::WrongPayloadType { got },
            EnvelopeError::BadSignature => VoucherError::BadSignature,
        }
    }
}

impl Voucher {
    /// Signs a voucher of the relay owning `relay_key` for `peer`, expiring at `expiration`
    /// (UNIX seconds): the envelope's bytes, for `Reservation.voucher`.
    pub fn sign(relay_key: &Keypair, peer: PeerId, expiration: u64) -> Vec<u8> {
        Voucher {
            relay: relay_key.peer_id(),
            peer,
            expiration,
        }
        .sign_with(relay_key)
    }

    /// Signs this voucher's payload with `key` (which [`Voucher::open`] accepts only if it is
    /// `self.relay`'s key; tests use other keys to build bad vouchers).
    fn sign_with(&self, key: &Keypair) -> Vec<u8> {
        envelope::seal(key, DOMAIN, &PAYLOAD_TYPE, &self.encode_payload())
    }

    /// The payload protobuf: `relay`, `peer`, `expiration`, in field order.
    pub fn encode_payload(&self) -> Vec<u8> {
        VoucherPayload {
            relay: Some(self.relay.to_bytes()),
            peer: Some(self.peer.to_bytes()),
            expiration: Some(self.expiration),
        }
        .encode_to_vec()
    }

    /// Opens a voucher: checks the envelope (size, payload type, ed25519 key, signature for
    /// [`DOMAIN`]), decodes the payload and checks that its `relay` is the signer. Does not
    /// check whom it is for or whether it expired.
    ///
    /// # Errors
    ///
    /// [`VoucherError`] other than `WrongRelay` / `WrongPeer`.
    pub fn open(bytes: &[u8]) -> Result<Voucher, VoucherError> {
        let opened = envelope::open(bytes, DOMAIN, &PAYLOAD_TYPE)?;
        let payload = VoucherPayload::decode(opened.payload.as_slice())
            .map_err(|e| VoucherError::Malformed(format!("payload: {e}")))?;
        let peer_id = |field: Option<Vec<u8>>, name: &str| {
            let bytes = field.ok_or_else(|| VoucherError::Malformed(format!("missing {name}")))?;
            PeerId::from_bytes(&bytes).map_err(|e| VoucherError::Malformed(format!("{name}: {e}")))
        };
        let voucher = Voucher {
            relay: peer_id(payload.relay, "relay")?,
            peer: peer_id(payload.peer, "peer")?,
            expiration: payload
                .expiration
                .ok_or_else(|| VoucherError::Malformed("missing expiration".into()))?,
        };
        let signer = opened.signer.to_peer_id();
        if signer != voucher.relay {
            return Err(VoucherError::SignerNotRelay {
                relay: voucher.relay,
                signer,
            });
        }
        Ok(voucher)
    }

    /// Opens a voucher ([`Voucher::open`]) and checks that `expected_relay` issued it to
    /// `expected_peer`. Expiry is the caller's to check ([`Voucher::is_expired`]).
    ///
    /// # Errors
    ///
    /// [`VoucherError`].
    pub fn verify(
        bytes: &[u8],
        expected_relay: PeerId,
        expected_peer: PeerId,
    ) -> Result<Voucher, VoucherError> {
        let voucher = Voucher::open(bytes)?;
        if voucher.relay != expected_relay {
            return Err(VoucherError::WrongRelay {
                expected: expected_relay,
                got: voucher.relay,
            });
        }
        if voucher.peer != expected_peer {
            return Err(VoucherError::WrongPeer {
                expected: expected_peer,
                got: voucher.peer,
            });
        }
        Ok(voucher)
    }

    /// Whether the reservation has ended at `now_unix` (UNIX seconds).
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expiration
    }
}
