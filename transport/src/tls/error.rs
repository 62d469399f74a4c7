//! [`TlsError`]: every reason a libp2p certificate or handshake is rejected.

use rustls::SignatureScheme;

use meshwire_core::PeerId;

/// Why a libp2p certificate or handshake was rejected, or local setup failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The certificate lacks the libp2p Public Key Extension.
    #[error("certificate lacks the libp2p public key extension")]
    MissingExtension,
    /// The libp2p extension is malformed: bad ASN.1, bad protobuf or bad key bytes, or it
    /// appears more than once.
    #[error("invalid libp2p extension: {0}")]
    InvalidExtension(String),
    /// The host-key signature in the libp2p extension does not verify.
    #[error("libp2p extension signature does not verify")]
    BadSignature,
    /// The extension carries a host key of a type meshwire does not support (protobuf
    /// `KeyType`: 0 RSA, 2 secp256k1, 3 ECDSA; only 1, Ed25519, is supported).
    #[error("unsupported host key type {0} (only ed25519 is supported)")]
    UnsupportedKeyType(u64),
    /// The remote authenticated as a different peer than the one dialed.
    #[error("peer id mismatch: expected {expected}, got {actual}")]
    PeerIdMismatch {
        /// The peer the dialer expected.
        expected: PeerId,
        /// The peer the certificate authenticates.
        actual: PeerId,
    },
    /// The certificate (chain) itself is unacceptable: unparseable, not exactly one
    /// certificate, outside its validity period, bad self-signature, unsupported signature
    /// algorithm or key, or an unknown critical extension.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// A handshake signature uses a scheme the certificate key cannot produce, or one that
    /// TLS 1.3 forbids.
    #[error("signature scheme {0:?} not usable with this certificate")]
    UnsupportedSignatureScheme(SignatureScheme),
    /// A TLS handshake signature (CertificateVerify) does not verify with the certificate key.
    #[error("handshake signature does not verify")]
    InvalidHandshakeSignature,
    /// Generating the local certificate failed.
    #[error("certificate generation failed: {0}")]
    Generation(String),
    /// Building the rustls configuration failed.
    #[error("tls configuration failed: {0}")]
    Config(String),
}
