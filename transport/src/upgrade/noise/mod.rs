//! The libp2p Noise handshake (`/noise`) and the encrypted stream it yields.
//!
//! Wire-compatible with rust-libp2p's `libp2p-noise` and go-libp2p (libp2p/specs
//! `noise/README.md`):
//!
//! - Protocol `Noise_XX_25519_ChaChaPoly_SHA256`, empty prologue, a fresh X25519 static key per
//!   handshake. Every Noise message, in the handshake and after it, travels as a 2-byte
//!   big-endian length followed by that many bytes (so at most 65535).
//! - XX: the initiator sends `e` with an empty payload; the responder answers `e, ee, s, es`
//!   with its payload; the initiator finishes with `s, se` and its payload. A payload is a
//!   protobuf `NoiseHandshakePayload { bytes identity_key = 1; bytes identity_sig = 2;
//!   NoiseExtensions extensions = 4; }`: the identity key (meshwire's protobuf `PublicKey`
//!   encoding; only Ed25519 is supported) and its signature over
//!   `"noise-libp2p-static-key:" ‖ noise static public key`. Unknown fields are skipped;
//!   extensions are decoded (at most [`MAX_EXTENSION_ENTRIES`] entries) and otherwise
//!   ignored; a repeated field, a group or a truncated field is [`NoiseError::BadPayload`].
//! - The initiator checks the responder's identity against `expected` *before* sending its own
//!   message 3, so a wrong peer never learns who dialed.
//! - After the handshake, [`NoiseOutput`] encrypts writes into frames of at most
//!   [`MAX_FRAME_PLAINTEXT`] plaintext bytes (as rust-libp2p), sent when a frame is full or on
//!   flush, and decrypts frames of up to 65535 bytes on read. Its buffers are fixed (about
//!   256 KiB per connection, allocated once) whatever the peer sends.
//!
//! # Bounds and errors
//!
//! Handshake messages larger than [`MAX_HANDSHAKE_MESSAGE`] are refused
//! ([`NoiseError::FrameTooLarge`]) before anything is read into memory; message 1 must carry an
//! empty payload ([`NoiseError::UnexpectedPayload`]); every payload, key, signature and
//! cryptographic failure has its own [`NoiseError`]. Errors of the encrypted stream surface as
//! [`std::io::Error`]s of kind `InvalidData` wrapping a [`NoiseError`].
//!
//! The handshake functions never time out by themselves;
//! [`upgrade_outbound`](super::upgrade_outbound)/[`upgrade_inbound`](super::upgrade_inbound)
//! bound the whole upgrade with [`UpgradeConfig::handshake_timeout`](super::UpgradeConfig).
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use meshwire_transport::identity::Keypair;
//! use meshwire_transport::upgrade::noise::{handshake_inbound, handshake_outbound};
//! use tokio_util::compat::TokioAsyncReadCompatExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (alice, bob) = (Keypair::generate(), Keypair::generate());
//! let (out, inb) = tokio::join!(
//!     handshake_outbound(a.compat(), &alice, Some(bob.peer_id())),
//!     handshake_inbound(b.compat(), &bob),
//! );
//! let ((saw_bob, mut a), (saw_alice, mut b)) = (out?, inb?);
//! assert_eq!((saw_bob, saw_alice), (bob.peer_id(), alice.peer_id()));
//!
//! a.write_all(b"secret").await?;
//! a.flush().await?;
//! let mut buf = [0u8; 6];
//! b.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"secret");
//! # Ok(()) }
//! ```

mod handshake;
mod io;
mod payload;

pub use handshake::{handshake_inbound, handshake_outbound};
pub use io::NoiseOutput;
pub use payload::MAX_EXTENSION_ENTRIES;

use meshwire_core::{IdentityError, PeerId};
use thiserror::Error;

/// The multistream-select protocol id of the Noise handshake.
pub const PROTOCOL: &str = "/noise";

/// The Noise protocol name libp2p uses.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

/// Prefix of the message an identity key signs to bind the Noise static key.
pub const STATIC_KEY_DOMAIN: &str = "noise-libp2p-static-key:";

/// Largest Noise message (length prefix excluded), fixed by the 2-byte length.
pub const MAX_NOISE_MESSAGE: usize = 65535;

/// Largest handshake message accepted (8 KiB): two keys, a tag and a payload of an identity
/// key, a signature and a few extensions fit many times over.
pub const MAX_HANDSHAKE_MESSAGE: usize = 8 * 1024;

/// Plaintext bytes per transport frame when sending (65535 − 1024, as rust-libp2p).
pub const MAX_FRAME_PLAINTEXT: usize = MAX_NOISE_MESSAGE - 1024;

/// Bytes of the authentication tag of every encrypted message.
pub const TAG_LEN: usize = 16;

/// Why a Noise handshake or an encrypted frame failed.
#[derive(Debug, Error)]
pub enum NoiseError {
    /// The underlying stream failed or ended in the middle of a message.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise state machine refused a message (authentication failure, bad key, ...).
    #[error("noise: {0}")]
    Snow(#[from] snow::Error),
    /// A message announced more bytes than allowed.
    #[error("noise message of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The bound in force.
        max: usize,
    },
    /// An encrypted message too short to hold its authentication tag.
    #[error("noise message of {len} bytes is shorter than its {TAG_LEN}-byte tag")]
    FrameTooShort {
        /// The announced length.
        len: usize,
    },
    /// The handshake payload is not a well-formed `NoiseHandshakePayload`.
    #[error("bad handshake payload: {0}")]
    BadPayload(&'static str),
    /// The first handshake message carried a payload (libp2p sends it empty).
    #[error("unexpected payload in the first handshake message")]
    UnexpectedPayload,
    /// The identity key is of a type meshwire cannot verify (only Ed25519 is supported); the
    /// protobuf `KeyType` value.
    #[error("unsupported identity key type {0}")]
    UnsupportedKeyType(u64),
    /// The identity key is malformed or missing.
    #[error("invalid identity key: {0}")]
    InvalidIdentityKey(IdentityError),
    /// The identity signature over the Noise static key is missing or wrong.
    #[error("identity signature over the noise static key does not verify")]
    BadSignature,
    /// An earlier frame of this encrypted stream failed; nothing more can be read from it.
    #[error("the encrypted stream failed earlier")]
    Broken,
    /// The peer authenticated as someone other than the peer expected.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The peer expected.
        expected: PeerId,
        /// The peer that authenticated.
        actual: PeerId,
    },
}

impl From<IdentityError> for NoiseError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::UnsupportedKeyType(t) => NoiseError::UnsupportedKeyType(t),
            other => NoiseError::InvalidIdentityKey(other),
        }
    }
}

impl From<NoiseError> for std::io::Error {
    /// An [`NoiseError::Io`] is unwrapped; every other error becomes kind `InvalidData`.
    fn from(e: NoiseError) -> Self {
        match e {
            NoiseError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

#[cfg(test)]
mod tests;
