//! The libp2p TLS 1.3 handshake (spec: `libp2p/specs` `tls/tls.md`), as QUIC uses it.
//!
//! # The scheme
//!
//! libp2p peers are identified by a host key (for meshwire: ed25519) that X.509 cannot
//! necessarily sign certificates with, and there is no certificate authority. So each endpoint:
//!
//! 1. generates a fresh, unrelated *certificate key* (ECDSA P-256 here, as rust-libp2p does),
//! 2. signs `"libp2p-tls-handshake:" ‖ SubjectPublicKeyInfo(certificate key)` with its **host**
//!    key,
//! 3. puts its protobuf-encoded host public key and that signature into the *libp2p Public Key
//!    Extension* (OID `1.3.6.1.4.1.53594.1.1`, marked critical like rust-libp2p does), DER
//!    encoded as
//!    ```asn1
//!    SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }
//!    ```
//! 4. and self-signs an X.509 certificate for the certificate key carrying that extension.
//!
//! TLS then proves possession of the certificate key (CertificateVerify), the extension proves
//! the host key vouches for the certificate key, so the remote's [`PeerId`] is the peer id of
//! the host key in the extension.
//!
//! A receiver ([`parse_certificate`]) requires exactly one certificate that is inside its
//! validity period, has a valid self-signature made with an algorithm of at least SHA-256
//! strength (ECDSA P-256/P-384 with named curves, Ed25519, RSA PKCS#1 / PSS), carries exactly
//! one libp2p extension whose signature verifies, and has no critical extension it does not
//! understand. Host keys other than ed25519 yield [`TlsError::UnsupportedKeyType`] since
//! meshwire cannot represent their peers; ECDSA host keys are still signature-checked first so a
//! forged extension is reported as [`TlsError::BadSignature`].
//!
//! [`server_config`] and [`client_config`] build rustls configurations for TLS 1.3 only, ALPN
//! `libp2p`, mutual authentication, no SNI and no session resumption (every handshake verifies
//! the peer's certificate), usable by quinn (`QuicClientConfig::try_from` /
//! `QuicServerConfig::try_from`).
//!
//! ```
//! use meshwire_transport::identity::Keypair;
//! use meshwire_transport::tls;
//!
//! let key = Keypair::generate();
//! let (cert, _private_key) = tls::generate_certificate(&key).unwrap();
//! let parsed = tls::parse_certificate(&cert).unwrap();
//! assert_eq!(parsed.peer_id(), key.peer_id());
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
    SupportedCipherSuite,
};
use x509_parser::asn1_rs::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::time::ASN1Time;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::identity::{IdentityError, Keypair, PeerId, PublicKey};

/// Object identifier of the libp2p Public Key Extension, `1.3.6.1.4.1.53594.1.1`
/// (IANA enterprise number 53594 belongs to the libp2p project).
pub const P2P_EXT_OID: [u64; 9] = [1, 3, 6, 1, 4, 1, 53594, 1, 1];

/// The ALPN protocol both sides of a libp2p TLS handshake offer and require.
pub const ALPN: &[u8] = b"libp2p";

/// Prefix of the message the host key signs: `prefix ‖ SubjectPublicKeyInfo(certificate key)`.
const SIGNING_PREFIX: &[u8] = b"libp2p-tls-handshake:";

/// Protobuf `KeyType` of Ed25519 host keys.
const KEY_TYPE_ED25519: u64 = 1;
/// Protobuf `KeyType` of ECDSA host keys.
const KEY_TYPE_ECDSA: u64 = 3;

/// Object identifiers this module needs, as arc lists.
mod oid {
    pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
    pub const CURVE_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
    pub const CURVE_P384: &[u64] = &[1, 3, 132, 0, 34];
    pub const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
    pub const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
    pub const ED25519: &[u64] = &[1, 3, 101, 112];
    pub const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    pub const RSA_PKCS1_SHA256: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
    pub const RSA_PKCS1_SHA384: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
    pub const RSA_PKCS1_SHA512: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
    pub const RSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
    pub const MGF1: &[u64] = &[1, 2, 840, 113549, 1, 1, 8];
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
    pub const SHA512: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];
    pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
    pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
}

/// Critical extensions (besides the libp2p one) that are accepted: they carry no meaning for a
/// self-signed libp2p end-entity certificate, and some libp2p implementations add them.
const UNDERSTOOD_CRITICAL_EXTENSIONS: &[&[u64]] = &[oid::KEY_USAGE, oid::BASIC_CONSTRAINTS];

/// The signature schemes offered for (and accepted in) handshake and certificate signatures,
/// most preferred first; the same list rust-libp2p's `libp2p-tls` uses.
const SUPPORTED_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

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

/// A parsed, verified libp2p certificate.
///
/// Holding one means the certificate was valid at the time given to [`parse_certificate_at`],
/// its self-signature verified, and its libp2p extension proves that the host key
/// [`P2pCertificate::public_key`] vouches for the certificate key.
#[derive(Clone, Debug)]
pub struct P2pCertificate {
    host_key: PublicKey,
    cert_key: CertKey,
    cert_scheme: SignatureScheme,
}

/// The certificate's own (TLS) key.
#[derive(Clone, Debug)]
struct CertKey {
    kind: CertKeyKind,
    /// The `subjectPublicKey` bits: an uncompressed EC point, 32 Ed25519 bytes, or a DER
    /// `RSAPublicKey` — the forms ring verifies with.
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CertKeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

impl CertKey {
    /// The ring algorithm verifying `scheme` signatures with this key, if the key can make them.
    fn algorithm(
        &self,
        scheme: SignatureScheme,
    ) -> Option<&'static dyn ring::signature::VerificationAlgorithm> {
        use ring::signature as sig;
        use CertKeyKind::*;
        use SignatureScheme as S;
        Some(match (self.kind, scheme) {
            (EcdsaP256, S::ECDSA_NISTP256_SHA256) => &sig::ECDSA_P256_SHA256_ASN1,
            (EcdsaP384, S::ECDSA_NISTP384_SHA384) => &sig::ECDSA_P384_SHA384_ASN1,
            (Ed25519, S::ED25519) => &sig::ED25519,
            (Rsa, S::RSA_PKCS1_SHA256) => &sig::RSA_PKCS1_2048_8192_SHA256,
            (Rsa, S::RSA_PKCS1_SHA384) => &sig::RSA_PKCS1_2048_8192_SHA384,
            (Rsa, S::RSA_PKCS1_SHA512) => &sig::RSA_PKCS1_2048_8192_SHA512,
            (Rsa, S::RSA_PSS_SHA256) => &sig::RSA_PSS_2048_8192_SHA256,
            (Rsa, S::RSA_PSS_SHA384) => &sig::RSA_PSS_2048_8192_SHA384,
            (Rsa, S::RSA_PSS_SHA512) => &sig::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    fn verify(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TlsError> {
        let alg = self
            .algorithm(scheme)
            .ok_or(TlsError::UnsupportedSignatureScheme(scheme))?;
        ring::signature::UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, signature)
            .map_err(|_| TlsError::InvalidHandshakeSignature)
    }
}

impl P2pCertificate {
    /// The peer id the certificate authenticates (that of the host key in the extension).
    pub fn peer_id(&self) -> PeerId {
        self.host_key.to_peer_id()
    }

    /// The host public key from the libp2p extension.
    pub fn public_key(&self) -> PublicKey {
        self.host_key
    }

    /// The scheme of the certificate's self-signature.
    pub fn certificate_signature_scheme(&self) -> SignatureScheme {
        self.cert_scheme
    }

    /// Verifies a TLS handshake signature (CertificateVerify) of `message` made with the
    /// certificate's own key under `scheme`, via ring.
    ///
    /// Fails with [`TlsError::UnsupportedSignatureScheme`] when the certificate key cannot make
    /// `scheme` signatures (e.g. an ECDSA P-256 key and an Ed25519 scheme), and with
    /// [`TlsError::InvalidHandshakeSignature`] when the signature does not verify.
    pub fn verify_signature(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TlsError> {
        self.cert_key.verify(scheme, message, signature)
    }
}

/// Generates a self-signed certificate for a fresh ECDSA P-256 key, carrying the libp2p
/// extension (critical) that binds it to `keypair`. Returns the certificate and the PKCS#8
/// certificate private key.
pub fn generate_certificate(
    keypair: &Keypair,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generation(e.to_string()))?;
    let mut message = SIGNING_PREFIX.to_vec();
    message.extend_from_slice(&cert_key.public_key_der());
    let signature = keypair.sign(&message);
    let content = encode_signed_key(&keypair.public().encode_protobuf(), &signature);
    let mut extension = rcgen::CustomExtension::from_oid_content(&P2P_EXT_OID, content);
    extension.set_criticality(true);

    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions.push(extension);
    let cert = params
        .self_signed(&cert_key)
        .map_err(|e| TlsError::Generation(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert_key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// Parses and fully verifies a libp2p certificate at the current time: validity period,
/// self-signature, the libp2p extension and its host-key signature.
pub fn parse_certificate(der: &[u8]) -> Result<P2pCertificate, TlsError> {
    parse_certificate_at(der, SystemTime::now())
}

/// [`parse_certificate`], checking the validity period against `now` instead of the clock.
pub fn parse_certificate_at(der: &[u8], now: SystemTime) -> Result<P2pCertificate, TlsError> {
    let (rest, x509) = X509Certificate::from_der(der)
        .map_err(|e| TlsError::BadCertificate(format!("malformed certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(TlsError::BadCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    let tbs = &x509.tbs_certificate;
    if tbs.issuer_uid.is_some() || tbs.subject_uid.is_some() {
        return Err(TlsError::BadCertificate(
            "deprecated issuer/subject unique id present".into(),
        ));
    }

    let mut signed_key = None;
    for ext in x509.extensions() {
        if oid_is(&ext.oid, &P2P_EXT_OID) {
            if signed_key.is_some() {
                return Err(TlsError::InvalidExtension(
                    "extension present more than once".into(),
                ));
            }
            signed_key = Some(decode_signed_key(ext.value)?);
        } else if ext.critical
            && !UNDERSTOOD_CRITICAL_EXTENSIONS
                .iter()
                .any(|o| oid_is(&ext.oid, o))
        {
            return Err(TlsError::BadCertificate(format!(
                "unsupported critical extension {}",
                ext.oid.to_id_string()
            )));
        }
        // Non-critical extensions with unknown OIDs are ignored.
    }
    let (host_key_bytes, host_signature) = signed_key.ok_or(TlsError::MissingExtension)?;

    check_validity(&x509, now)?;

    if x509.signature_algorithm != tbs.signature {
        return Err(TlsError::BadCertificate(
            "inner and outer signature algorithms differ".into(),
        ));
    }
    let cert_key = cert_key_from_spki(&tbs.subject_pki)?;
    let cert_scheme = self_signature_scheme(&x509.signature_algorithm, cert_key.kind)?;
    cert_key
        .verify(cert_scheme, tbs.as_ref(), x509.signature_value.as_ref())
        .map_err(|_| TlsError::BadCertificate("invalid self-signature".into()))?;

    let mut message = SIGNING_PREFIX.to_vec();
    message.extend_from_slice(tbs.subject_pki.raw);
    let host_key = verify_host_key(host_key_bytes, host_signature, &message)?;

    Ok(P2pCertificate {
        host_key,
        cert_key,
        cert_scheme,
    })
}

/// The peer id authenticated by a presented certificate chain, which must hold exactly one
/// certificate (fully verified with [`parse_certificate`]).
pub fn peer_id_from_certificates(certs: &[CertificateDer<'_>]) -> Result<PeerId, TlsError> {
    match certs {
        [cert] => Ok(parse_certificate(cert)?.peer_id()),
        _ => Err(wrong_chain_length(certs.len())),
    }
}

/// The peer id in the certificate of a peer whose handshake has completed: the verifiers
/// already checked the certificate fully during the handshake, so this only reads the libp2p
/// extension again (no signature checks), keeping the second look off the dial's latency.
pub(crate) fn peer_id_of_authenticated_peer(
    certs: &[CertificateDer<'_>],
) -> Result<PeerId, TlsError> {
    let [cert] = certs else {
        return Err(wrong_chain_length(certs.len()));
    };
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::BadCertificate(format!("malformed certificate: {e}")))?;
    let ext = x509
        .extensions()
        .iter()
        .find(|ext| oid_is(&ext.oid, &P2P_EXT_OID))
        .ok_or(TlsError::MissingExtension)?;
    let (host_key_bytes, _signature) = decode_signed_key(ext.value)?;
    let key = PublicKey::decode_protobuf(host_key_bytes).map_err(|e| match e {
        crate::identity::IdentityError::UnsupportedKeyType(t) => TlsError::UnsupportedKeyType(t),
        other => TlsError::InvalidExtension(other.to_string()),
    })?;
    Ok(key.to_peer_id())
}

fn wrong_chain_length(n: usize) -> TlsError {
    TlsError::BadCertificate(format!("expected exactly one certificate, got {n}"))
}

/// Whether `oid` has exactly the arcs `arcs`.
fn oid_is(oid: &Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}

fn check_validity(x509: &X509Certificate<'_>, now: SystemTime) -> Result<(), TlsError> {
    let secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    let now = ASN1Time::from_timestamp(secs)
        .map_err(|_| TlsError::BadCertificate("current time out of range".into()))?;
    let validity = x509.validity();
    if now < validity.not_before {
        return Err(TlsError::BadCertificate(format!(
            "certificate not yet valid (notBefore {})",
            validity.not_before
        )));
    }
    if now > validity.not_after {
        return Err(TlsError::BadCertificate(format!(
            "certificate expired (notAfter {})",
            validity.not_after
        )));
    }
    Ok(())
}

/// Extracts the certificate key; EC keys must use the named-curve encoding.
fn cert_key_from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<CertKey, TlsError> {
    let alg = &spki.algorithm;
    let kind = if oid_is(&alg.algorithm, oid::EC_PUBLIC_KEY) {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| TlsError::BadCertificate("EC key without a named curve".into()))?;
        if oid_is(&curve, oid::CURVE_P256) {
            CertKeyKind::EcdsaP256
        } else if oid_is(&curve, oid::CURVE_P384) {
            CertKeyKind::EcdsaP384
        } else {
            return Err(TlsError::BadCertificate(format!(
                "unsupported EC curve {}",
                curve.to_id_string()
            )));
        }
    } else if oid_is(&alg.algorithm, oid::ED25519) {
        if alg.parameters.is_some() {
            return Err(TlsError::BadCertificate(
                "Ed25519 key with parameters".into(),
            ));
        }
        CertKeyKind::Ed25519
    } else if oid_is(&alg.algorithm, oid::RSA_ENCRYPTION) {
        CertKeyKind::Rsa
    } else {
        return Err(TlsError::BadCertificate(format!(
            "unsupported certificate key algorithm {}",
            alg.algorithm.to_id_string()
        )));
    };
    Ok(CertKey {
        kind,
        bytes: spki.subject_public_key.data.to_vec(),
    })
}

/// The scheme of the self-signature; only SHA-256 or stronger hashes, matching the key.
fn self_signature_scheme(
    alg: &AlgorithmIdentifier<'_>,
    kind: CertKeyKind,
) -> Result<SignatureScheme, TlsError> {
    let o = &alg.algorithm;
    let scheme = match kind {
        CertKeyKind::EcdsaP256 if oid_is(o, oid::ECDSA_SHA256) => {
            Some(SignatureScheme::ECDSA_NISTP256_SHA256)
        }
        CertKeyKind::EcdsaP384 if oid_is(o, oid::ECDSA_SHA384) => {
            Some(SignatureScheme::ECDSA_NISTP384_SHA384)
        }
        CertKeyKind::Ed25519 if oid_is(o, oid::ED25519) => Some(SignatureScheme::ED25519),
        CertKeyKind::Rsa if oid_is(o, oid::RSA_PKCS1_SHA256) => {
            Some(SignatureScheme::RSA_PKCS1_SHA256)
        }
        CertKeyKind::Rsa if oid_is(o, oid::RSA_PKCS1_SHA384) => {
            Some(SignatureScheme::RSA_PKCS1_SHA384)
        }
        CertKeyKind::Rsa if oid_is(o, oid::RSA_PKCS1_SHA512) => {
            Some(SignatureScheme::RSA_PKCS1_SHA512)
        }
        CertKeyKind::Rsa if oid_is(o, oid::RSA_PSS) => rsa_pss_scheme(alg),
        _ => None,
    };
    scheme.ok_or_else(|| {
        TlsError::BadCertificate(format!(
            "unsupported certificate signature algorithm {} for a {:?} key",
            o.to_id_string(),
            kind
        ))
    })
}

/// RSASSA-PSS parameters ring can verify: SHA-256/384/512, MGF1 with the same hash, salt
/// length equal to the hash length, trailer field 1.
fn rsa_pss_scheme(alg: &AlgorithmIdentifier<'_>) -> Option<SignatureScheme> {
    let params = RsaSsaPssParams::try_from(alg.parameters.as_ref()?).ok()?;
    let hash = params.hash_algorithm_oid();
    let (scheme, hash_len, hash_arcs) = if oid_is(hash, oid::SHA256) {
        (SignatureScheme::RSA_PSS_SHA256, 32, oid::SHA256)
    } else if oid_is(hash, oid::SHA384) {
        (SignatureScheme::RSA_PSS_SHA384, 48, oid::SHA384)
    } else if oid_is(hash, oid::SHA512) {
        (SignatureScheme::RSA_PSS_SHA512, 64, oid::SHA512)
    } else {
        return None;
    };
    let mgf = params.mask_gen_algorithm().ok()?;
    let ok = oid_is(&mgf.mgf, oid::MGF1)
        && oid_is(&mgf.hash, hash_arcs)
        && params.salt_length() == hash_len
        && params.trailer_field() == 1;
    ok.then_some(scheme)
}

/// Checks the extension's host-key signature over `message` and returns the host key.
fn verify_host_key(
    protobuf: &[u8],
    signature: &[u8],
    message: &[u8],
) -> Result<PublicKey, TlsError> {
    let (key_type, data) = decode_key_protobuf(protobuf)?;
    match key_type {
        KEY_TYPE_ED25519 => {
            let key = PublicKey::decode_protobuf(protobuf).map_err(|e| match e {
                IdentityError::UnsupportedKeyType(t) => TlsError::UnsupportedKeyType(t),
                other => TlsError::InvalidExtension(format!("bad host key: {other}")),
            })?;
            if key.verify(message, signature) {
                Ok(key)
            } else {
                Err(TlsError::BadSignature)
            }
        }
        KEY_TYPE_ECDSA => {
            // meshwire cannot represent ECDSA peers, but a forged extension should still be
            // reported as such.
            verify_ecdsa_host_signature(data, signature, message)?;
            Err(TlsError::UnsupportedKeyType(KEY_TYPE_ECDSA))
        }
        other => Err(TlsError::UnsupportedKeyType(other)),
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
            return Err(TlsError::UnsupportedKeyType(KEY_TYPE_ECDSA));
        };
    ring::signature::UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| TlsError::BadSignature)
}

/// Decodes `PublicKey { required KeyType Type = 1; required bytes Data = 2; }`, rejecting
/// unknown, duplicate or missing fields.
fn decode_key_protobuf(mut bytes: &[u8]) -> Result<(u64, &[u8]), TlsError> {
    let bad = |why: &str| TlsError::InvalidExtension(format!("bad host key encoding: {why}"));
    let mut key_type = None;
    let mut data = None;
    while !bytes.is_empty() {
        let (tag, rest) = read_varint(bytes).ok_or_else(|| bad("bad tag"))?;
        bytes = rest;
        match tag {
            0x08 => {
                let (v, rest) = read_varint(bytes).ok_or_else(|| bad("bad key type"))?;
                if key_type.replace(v).is_some() {
                    return Err(bad("duplicate key type"));
                }
                bytes = rest;
            }
            0x12 => {
                let (len, rest) = read_varint(bytes).ok_or_else(|| bad("bad length"))?;
                let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
                if len > rest.len() {
                    return Err(bad("truncated data"));
                }
                let (d, rest) = rest.split_at(len);
                if data.replace(d).is_some() {
                    return Err(bad("duplicate data"));
                }
                bytes = rest;
            }
            _ => return Err(bad("unknown field")),
        }
    }
    match (key_type, data) {
        (Some(t), Some(d)) => Ok((t, d)),
        _ => Err(bad("missing field")),
    }
}

/// Reads one unsigned LEB128 varint of at most 10 bytes.
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

const DER_SEQUENCE: u8 = 0x30;
const DER_OCTET_STRING: u8 = 0x04;

/// DER `SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }`.
fn encode_signed_key(public_key: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(public_key.len() + signature.len() + 8);
    der_write(&mut body, DER_OCTET_STRING, public_key);
    der_write(&mut body, DER_OCTET_STRING, signature);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_write(&mut out, DER_SEQUENCE, &body);
    out
}

/// Decodes a DER `SignedKey` into (protobuf public key, signature).
fn decode_signed_key(value: &[u8]) -> Result<(&[u8], &[u8]), TlsError> {
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

/// Shared slot where the client verifier records the typed reason it rejected the server
/// (quinn/rustls only carry strings), so the dialer can return the exact [`TlsError`].
///
/// Each [`client_config`] call returns a fresh one; use one configuration per dial so the
/// recorded reason belongs to that dial. The first rejection is kept.
#[derive(Clone, Default)]
pub struct VerifyOutcome(Arc<Mutex<Option<TlsError>>>);

impl VerifyOutcome {
    /// Takes the recorded rejection reason, if the verifier rejected the server.
    pub fn take_error(&self) -> Option<TlsError> {
        self.slot().take()
    }

    fn record(&self, err: &TlsError) {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = Some(err.clone());
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<TlsError>> {
        // The slot holds plain data, so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for VerifyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyOutcome").field(&*self.slot()).finish()
    }
}

/// The ring provider restricted to TLS 1.3 cipher suites (TLS13_AES_128_GCM_SHA256 included,
/// which QUIC needs for its initial packets).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    Arc::new(provider)
}

/// Our certificate and its signing key, handed to rustls for every handshake.
///
/// rustls' `with_single_cert` / `with_client_auth_cert` re-parse the certificate with webpki,
/// which refuses the (critical) libp2p extension, so the key is served by this resolver.
#[derive(Debug)]
struct AlwaysResolvesCert(Arc<rustls::sign::CertifiedKey>);

impl AlwaysResolvesCert {
    fn new(keypair: &Keypair, provider: &rustls::crypto::CryptoProvider) -> Result<Self, TlsError> {
        let (cert, key) = generate_certificate(keypair)?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Generation(e.to_string()))?;
        Ok(Self(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert],
            signing_key,
        ))))
    }
}

impl rustls::client::ResolvesClientCert for AlwaysResolvesCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for AlwaysResolvesCert {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Our TLS identity: one certificate for `keypair`, generated once and reused by every
/// handshake of a transport (so a dial costs no key generation).
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<AlwaysResolvesCert>,
}

impl LocalIdentity {
    /// Generates the certificate for `keypair`.
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = Arc::new(AlwaysResolvesCert::new(keypair, &provider)?);
        Ok(LocalIdentity { provider, resolver })
    }

    /// The server side: TLS 1.3 only, ALPN `libp2p`, our certificate, and a mandatory client
    /// certificate checked by the libp2p verifier. Session resumption is off so every
    /// handshake authenticates the client.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(ClientVerifier))
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// The client side: TLS 1.3 only, ALPN `libp2p`, no SNI, no resumption, our certificate,
    /// and the libp2p verifier for the server. With `expected`, a server authenticating as
    /// another peer fails the handshake with [`TlsError::PeerIdMismatch`]; the returned
    /// [`VerifyOutcome`] then holds the typed reason of any rejection.
    pub fn client_config(
        &self,
        expected: Option<PeerId>,
    ) -> Result<(rustls::ClientConfig, VerifyOutcome), TlsError> {
        let outcome = VerifyOutcome::default();
        let verifier = ServerVerifier {
            expected,
            outcome: outcome.clone(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_sni = false;
        config.resumption = rustls::client::Resumption::disabled();
        Ok((config, outcome))
    }
}

/// Builds a server configuration with a fresh certificate for `keypair`
/// (see [`LocalIdentity::server_config`]).
pub fn server_config(keypair: &Keypair) -> Result<rustls::ServerConfig, TlsError> {
    LocalIdentity::new(keypair)?.server_config()
}

/// Builds a client configuration with a fresh certificate for `keypair`
/// (see [`LocalIdentity::client_config`]).
pub fn client_config(
    keypair: &Keypair,
    expected: Option<PeerId>,
) -> Result<(rustls::ClientConfig, VerifyOutcome), TlsError> {
    LocalIdentity::new(keypair)?.client_config(expected)
}

/// Verifies a presented chain: exactly one certificate, fully valid at `now`.
fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<P2pCertificate, TlsError> {
    if !intermediates.is_empty() {
        return Err(wrong_chain_length(1 + intermediates.len()));
    }
    parse_certificate_at(end_entity, UNIX_EPOCH + Duration::from_secs(now.as_secs()))
}

/// Verifies a TLS 1.3 CertificateVerify signature with the certificate's key.
fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<(), TlsError> {
    // RFC 8446 §4.4.3: RSA CertificateVerify signatures must be RSASSA-PSS.
    if matches!(
        dss.scheme,
        SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512
    ) {
        return Err(TlsError::UnsupportedSignatureScheme(dss.scheme));
    }
    parse_certificate(cert)?.verify_signature(dss.scheme, message, dss.signature())
}

fn to_rustls(err: TlsError) -> rustls::Error {
    match err {
        TlsError::InvalidHandshakeSignature => {
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        }
        other => {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(other))))
        }
    }
}

fn tls12_rejected() -> rustls::Error {
    rustls::Error::General("libp2p TLS requires TLS 1.3".into())
}

/// The client's verifier of the server's certificate; records rejections in its outcome.
#[derive(Debug)]
struct ServerVerifier {
    expected: Option<PeerId>,
    outcome: VerifyOutcome,
}

impl ServerVerifier {
    fn check(&self, result: Result<(), TlsError>) -> Result<(), rustls::Error> {
        result.map_err(|e| {
            tracing::debug!(error = %e, "rejecting libp2p TLS server");
            self.outcome.record(&e);
            to_rustls(e)
        })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = verify_chain(end_entity, intermediates, now).and_then(|cert| {
            let actual = cert.peer_id();
            match self.expected {
                Some(expected) if expected != actual => {
                    Err(TlsError::PeerIdMismatch { expected, actual })
                }
                _ => Ok(()),
            }
        });
        self.check(result).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_rejected())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check(verify_tls13(message, cert, dss))
            .map(|()| HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}

/// The server's verifier of client certificates (mandatory); shared by all connections, so it
/// records nothing and only logs rejections.
#[derive(Debug)]
struct ClientVerifier;

fn log_client_rejection(result: Result<(), TlsError>) -> Result<(), rustls::Error> {
    result.map_err(|e| {
        tracing::debug!(error = %e, "rejecting libp2p TLS client");
        to_rustls(e)
    })
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        log_client_rejection(verify_chain(end_entity, intermediates, now).map(|_| ()))
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_rejected())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        log_client_rejection(verify_tls13(message, cert, dss))
            .map(|()| HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    // --- Test vectors of the libp2p TLS spec (tls/tls.md, "Test vectors"). Valid 1975–4096.

    /// 1. Valid certificate authenticating an ED25519 peer id.
    const SPEC_ED25519: &str = "308201ae30820156a0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea37c307a3078060a2b0601040183a25a0101046a3068042408011220a77f1d92fedb59dddaea5a1c4abd1ac2fbde7d7b879ed364501809923d7c11b90440d90d2769db992d5e6195dbb08e706b6651e024fda6cfb8846694a435519941cac215a8207792e42849cccc6cd8136c6e4bde92a58c5e08cfd4206eb5fe0bf909300a06082a8648ce3d0403020346003043021f50f6b6c52711a881778718238f650c9fb48943ae6ee6d28427dc6071ae55e702203625f116a7a454db9c56986c82a25682f7248ea1cb764d322ea983ed36a31b77";
    const SPEC_ED25519_PEER: &str = "12D3KooWM6CgA9iBFZmcYAHA6A2qvbAxqfkmrYiRQuz3XEsk4Ksv";

    /// 2. Valid certificate authenticating an ECDSA peer id (`QmfXbAwNjJLXfesgztEHe8HwgVDCMMpZ9Eax1HYq6hn9uE`).
    const SPEC_ECDSA: &str = "308201f63082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f2044730450220064ea8124774caf8f50e57f436aa62350ce652418c019df5d98a3ac666c9386a022100aa59d704a931b5f72fb9222cb6cc51f954d04a4e2e5450f8805fe8918f71eaae300a06082a8648ce3d04030203470030440220799395b0b6c1e940a7e4484705f610ab51ed376f19ff9d7c16757cfbf61b8d4302206205c03fbb0f95205c779be86581d3e31c01871ad5d1f3435bcf375cb0e5088a";

    /// 3. Valid certificate authenticating a secp256k1 peer id (`16Uiu2HAkutTMoTzDw1tCvSRtu6YoixJwS46S1ZFxW8hSx9fWHiPs`).
    const SPEC_SECP256K1: &str = "308201ba3082015fa0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea38184308181307f060a2b0601040183a25a01010471306f0425080212210206dc6968726765b820f050263ececf7f71e4955892776c0970542efd689d2382044630440220145e15a991961f0d08cd15425bb95ec93f6ffa03c5a385eedc34ecf464c7a8ab022026b3109b8a3f40ef833169777eb2aa337cfb6282f188de0666d1bcec2a4690dd300a06082a8648ce3d0403020349003046022100e1a217eeef9ec9204b3f774a08b70849646b6a1e6b8b27f93dc00ed58545d9fe022100b00dafa549d0f03547878338c7b15e7502888f6d45db387e5ae6b5d46899cef0";

    /// 4. Invalid certificate: the extension's (ECDSA) host-key signature does not match.
    const SPEC_INVALID: &str = "308201f73082019da0030201020204499602d2300a06082a8648ce3d040302302031123010060355040a13096c69627032702e696f310a300806035504051301313020170d3735303130313133303030305a180f34303936303130313133303030305a302031123010060355040a13096c69627032702e696f310a300806035504051301313059301306072a8648ce3d020106082a8648ce3d030107034200040c901d423c831ca85e27c73c263ba132721bb9d7a84c4f0380b2a6756fd601331c8870234dec878504c174144fa4b14b66a651691606d8173e55bd37e381569ea381c23081bf3081bc060a2b0601040183a25a01010481ad3081aa045f0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004bf30511f909414ebdd3242178fd290f093a551cf75c973155de0bb5a96fedf6cb5d52da7563e794b512f66e60c7f55ba8a3acf3dd72a801980d205e8a1ad29f204473045022100bb6e03577b7cc7a3cd1558df0da2b117dfdcc0399bc2504ebe7de6f65cade72802206de96e2a5be9b6202adba24ee0362e490641ac45c240db71fe955f2c5cf8df6e300a06082a8648ce3d0403020348003045022100e847f267f43717358f850355bdcabbefb2cfbf8a3c043b203a14788a092fe8db022027c1d04a2d41fd6b57a7e8b3989e470325de4406e52e084e34a3fd56eef0d0df";

    // --- The first revision of the spec's vectors (libp2p/specs#464, also in rust-libp2p's
    // tests): an ed25519 certificate whose extension is marked critical, and an invalid one.
    const V1_ED25519: &str = "308201773082011ea003020102020900f5bd0debaa597f52300a06082a8648ce3d04030230003020170d3735303130313030303030305a180f34303936303130313030303030305a30003059301306072a8648ce3d020106082a8648ce3d030107034200046bf9871220d71dcb3483ecdfcbfcc7c103f8509d0974b3c18ab1f1be1302d643103a08f7a7722c1b247ba3876fe2c59e26526f479d7718a85202ddbe47562358a37f307d307b060a2b0601040183a25a01010101ff046a30680424080112207fda21856709c5ae12fd6e8450623f15f11955d384212b89f56e7e136d2e17280440aaa6bffabe91b6f30c35e3aa4f94b1188fed96b0ffdd393f4c58c1c047854120e674ce64c788406d1c2c4b116581fd7411b309881c3c7f20b46e54c7e6fe7f0f300a06082a8648ce3d040302034700304402207d1a1dbd2bda235ff2ec87daf006f9b04ba076a5a5530180cd9c2e8f6399e09d0220458527178c7e77024601dbb1b256593e9b96d961b96349d1f560114f61a87595";
    const V1_ED25519_PEER: &str = "12D3KooWJRSrypvnpHgc6ZAgyCni4KcSmbV7uGRaMw5LgMKT18fq";
    const V1_ED25519_INVALID: &str = "308201773082011da003020102020830a73c5d896a1109300a06082a8648ce3d04030230003020170d3735303130313030303030305a180f34303936303130313030303030305a30003059301306072a8648ce3d020106082a8648ce3d03010703420004bbe62df9a7c1c46b7f1f21d556deec5382a36df146fb29c7f1240e60d7d5328570e3b71d99602b77a65c9b3655f62837f8d66b59f1763b8c9beba3be07778043a37f307d307b060a2b0601040183a25a01010101ff046a3068042408011220ec8094573afb9728088860864f7bcea2d4fd412fef09a8e2d24d482377c20db60440ecabae8354afa2f0af4b8d2ad871e865cb5a7c0c8d3dbdbf42de577f92461a0ebb0a28703e33581af7d2a4f2270fc37aec6261fcc95f8af08f3f4806581c730a300a06082a8648ce3d040302034800304502202dfb17a6fa0f94ee0e2e6a3b9fb6e986f311dee27392058016464bd130930a61022100ba4b937a11c8d3172b81e7cd04aedb79b978c4379c2b5b24d565dd5d67d3cb3c";

    /// A moment inside the vectors' validity window (2026-11-23T00:00:00Z).
    fn vector_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_392_000)
    }

    fn vector(hex_str: &str) -> Vec<u8> {
        hex::decode(hex_str).unwrap()
    }

    fn peer(text: &str) -> PeerId {
        text.parse().unwrap()
    }

    #[test]
    fn spec_vector_ed25519_is_valid() {
        let cert = parse_certificate_at(&vector(SPEC_ED25519), vector_time()).unwrap();
        assert_eq!(cert.peer_id(), peer(SPEC_ED25519_PEER));
        assert_eq!(cert.public_key().to_peer_id(), peer(SPEC_ED25519_PEER));
        assert_eq!(
            cert.certificate_signature_scheme(),
            SignatureScheme::ECDSA_NISTP256_SHA256
        );
        // Also valid now: the vectors run until 4096.
        assert_eq!(
            parse_certificate(&vector(SPEC_ED25519)).unwrap().peer_id(),
            peer(SPEC_ED25519_PEER)
        );
    }

    #[test]
    fn spec_vector_ecdsa_is_valid_but_unsupported() {
        // The extension signature is checked (and valid); the key type is not representable.
        assert_eq!(
            parse_certificate_at(&vector(SPEC_ECDSA), vector_time()).unwrap_err(),
            TlsError::UnsupportedKeyType(3)
        );
    }

    #[test]
    fn spec_vector_secp256k1_is_unsupported() {
        assert_eq!(
            parse_certificate_at(&vector(SPEC_SECP256K1), vector_time()).unwrap_err(),
            TlsError::UnsupportedKeyType(2)
        );
    }

    #[test]
    fn spec_vector_invalid_has_bad_extension_signature() {
        assert_eq!(
            parse_certificate_at(&vector(SPEC_INVALID), vector_time()).unwrap_err(),
            TlsError::BadSignature
        );
    }

    #[test]
    fn first_revision_vectors() {
        let cert = parse_certificate_at(&vector(V1_ED25519), vector_time()).unwrap();
        assert_eq!(cert.peer_id(), peer(V1_ED25519_PEER));
        assert_eq!(
            parse_certificate_at(&vector(V1_ED25519_INVALID), vector_time()).unwrap_err(),
            TlsError::BadSignature
        );
    }

    #[test]
    fn spec_vectors_checked_against_validity_period() {
        let before = UNIX_EPOCH; // 1970, before notBefore 1975-01-01
        let after = UNIX_EPOCH + Duration::from_secs(80_000_000_000); // year ~4505
        for t in [before, after] {
            match parse_certificate_at(&vector(SPEC_ED25519), t) {
                Err(TlsError::BadCertificate(msg)) => {
                    assert!(msg.contains("valid") || msg.contains("expired"), "{msg}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // --- Our own certificates.

    #[test]
    fn authenticated_peer_id_reads_the_same_id_as_full_verification() {
        let key = Keypair::generate();
        let (cert, _) = generate_certificate(&key).unwrap();
        let fast = peer_id_of_authenticated_peer(std::slice::from_ref(&cert)).unwrap();
        assert_eq!(fast, parse_certificate(&cert).unwrap().peer_id());
        assert_eq!(fast, key.peer_id());
        assert!(peer_id_of_authenticated_peer(&[cert.clone(), cert]).is_err());
    }

    #[test]
    fn generated_certificate_round_trips() {
        let key = Keypair::generate();
        let (cert, private_key) = generate_certificate(&key).unwrap();
        assert!(matches!(private_key, PrivateKeyDer::Pkcs8(_)));
        let parsed = parse_certificate(&cert).unwrap();
        assert_eq!(parsed.peer_id(), key.peer_id());
        assert_eq!(parsed.public_key(), key.public());
        assert_eq!(
            parsed.certificate_signature_scheme(),
            SignatureScheme::ECDSA_NISTP256_SHA256
        );
        assert_eq!(
            peer_id_from_certificates(std::slice::from_ref(&cert)).unwrap(),
            key.peer_id()
        );

        // The extension is present once, marked critical, as rust-libp2p marks it.
        let (_, x509) = X509Certificate::from_der(&cert).unwrap();
        let exts: Vec<_> = x509
            .extensions()
            .iter()
            .filter(|e| oid_is(&e.oid, &P2P_EXT_OID))
            .collect();
        assert_eq!(exts.len(), 1);
        assert!(exts[0].critical);
        // Each call uses a fresh certificate key.
        let (cert2, _) = generate_certificate(&key).unwrap();
        assert_ne!(cert, cert2);
    }

    /// A self-signed P-256 certificate with the given extensions; returns its DER and key.
    fn custom_cert(
        extensions: Vec<rcgen::CustomExtension>,
    ) -> (CertificateDer<'static>, rcgen::KeyPair) {
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.custom_extensions = extensions;
        let cert = params.self_signed(&cert_key).unwrap();
        (cert.der().clone(), cert_key)
    }

    /// A certificate whose extension holds `host_pub` (protobuf) and `signer`'s signature.
    fn cert_with_extension(host_pub: &[u8], signer: &Keypair) -> CertificateDer<'static> {
        // Two steps: the signature covers the certificate key, so make the key first.
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut msg = SIGNING_PREFIX.to_vec();
        msg.extend_from_slice(&cert_key.public_key_der());
        let content = encode_signed_key(host_pub, &signer.sign(&msg));
        let mut params = rcgen::CertificateParams::default();
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &P2P_EXT_OID,
            content,
        )];
        params.self_signed(&cert_key).unwrap().der().clone()
    }

    #[test]
    fn non_critical_extension_is_accepted_too() {
        let key = Keypair::generate();
        let cert = cert_with_extension(&key.public().encode_protobuf(), &key);
        assert_eq!(parse_certificate(&cert).unwrap().peer_id(), key.peer_id());
    }

    #[test]
    fn missing_extension_is_rejected() {
        let (cert, _) = custom_cert(vec![]);
        assert_eq!(
            parse_certificate(&cert).unwrap_err(),
            TlsError::MissingExtension
        );
    }

    #[test]
    fn garbage_extension_is_rejected() {
        for garbage in [
            vec![0xde, 0xad, 0xbe, 0xef],
            vec![],
            vec![0x30, 0x03, 0x04, 0x01, 0x00],
        ] {
            let (cert, _) = custom_cert(vec![rcgen::CustomExtension::from_oid_content(
                &P2P_EXT_OID,
                garbage,
            )]);
            assert!(matches!(
                parse_certificate(&cert),
                Err(TlsError::InvalidExtension(_))
            ));
        }
        // Well-formed ASN.1, malformed protobuf key.
        let key = Keypair::generate();
        let cert = cert_with_extension(&[0x08, 0x01, 0x12, 0x05, 1, 2], &key);
        assert!(matches!(
            parse_certificate(&cert),
            Err(TlsError::InvalidExtension(_))
        ));
        // Well-formed protobuf, wrong ed25519 key length.
        let cert = cert_with_extension(&[0x08, 0x01, 0x12, 0x02, 1, 2], &key);
        assert!(matches!(
            parse_certificate(&cert),
            Err(TlsError::InvalidExtension(_))
        ));
    }

    #[test]
    fn extension_signed_by_another_key_is_rejected() {
        let claimed = Keypair::generate();
        let signer = Keypair::generate();
        let cert = cert_with_extension(&claimed.public().encode_protobuf(), &signer);
        assert_eq!(
            parse_certificate(&cert).unwrap_err(),
            TlsError::BadSignature
        );
    }

    #[test]
    fn extension_signature_over_other_certificate_key_is_rejected() {
        // A valid extension copied from another certificate does not transfer.
        let key = Keypair::generate();
        let (donor, _) = generate_certificate(&key).unwrap();
        let (_, x509) = X509Certificate::from_der(&donor).unwrap();
        let value = x509
            .extensions()
            .iter()
            .find(|e| oid_is(&e.oid, &P2P_EXT_OID))
            .unwrap()
            .value
            .to_vec();
        let (cert, _) = custom_cert(vec![rcgen::CustomExtension::from_oid_content(
            &P2P_EXT_OID,
            value,
        )]);
        assert_eq!(
            parse_certificate(&cert).unwrap_err(),
            TlsError::BadSignature
        );
    }

    #[test]
    fn non_ed25519_host_key_is_rejected() {
        let signer = Keypair::generate();
        let mut secp = vec![0x08, 0x02, 0x12, 33, 0x02];
        secp.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            parse_certificate(&cert_with_extension(&secp, &signer)).unwrap_err(),
            TlsError::UnsupportedKeyType(2)
        );
        let rsa = [0x08, 0x00, 0x12, 0x03, 1, 2, 3];
        assert_eq!(
            parse_certificate(&cert_with_extension(&rsa, &signer)).unwrap_err(),
            TlsError::UnsupportedKeyType(0)
        );
    }

    #[test]
    fn tampered_self_signature_is_rejected() {
        let (cert, _) = generate_certificate(&Keypair::generate()).unwrap();
        let mut bytes = cert.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        match parse_certificate(&bytes) {
            Err(TlsError::BadCertificate(msg)) => assert!(msg.contains("self-signature"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tampered_tbs_is_rejected() {
        // Change the serial number: the self-signature no longer covers the content.
        let (cert, _) = generate_certificate(&Keypair::generate()).unwrap();
        let mut bytes = cert.to_vec();
        // 30 82 LL LL | 30 82 LL LL | a0 03 02 01 02 | 02 len serial...
        assert_eq!(&bytes[8..13], &[0xa0, 0x03, 0x02, 0x01, 0x02]);
        bytes[15] ^= 0x01;
        assert!(matches!(
            parse_certificate(&bytes),
            Err(TlsError::BadCertificate(_))
        ));
    }

    #[test]
    fn two_certificates_are_rejected() {
        let key = Keypair::generate();
        let (a, _) = generate_certificate(&key).unwrap();
        let (b, _) = generate_certificate(&key).unwrap();
        assert!(matches!(
            peer_id_from_certificates(&[a.clone(), b.clone()]),
            Err(TlsError::BadCertificate(_))
        ));
        assert!(matches!(
            peer_id_from_certificates(&[]),
            Err(TlsError::BadCertificate(_))
        ));
        let now = UnixTime::now();
        assert!(matches!(
            verify_chain(&a, &[b], now),
            Err(TlsError::BadCertificate(_))
        ));
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_rejected() {
        let key = Keypair::generate();
        let make = |from: i32, to: i32| {
            let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut msg = SIGNING_PREFIX.to_vec();
            msg.extend_from_slice(&cert_key.public_key_der());
            let content = encode_signed_key(&key.public().encode_protobuf(), &key.sign(&msg));
            let mut params = rcgen::CertificateParams::default();
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
            params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
                &P2P_EXT_OID,
                content,
            )];
            params.self_signed(&cert_key).unwrap().der().clone()
        };
        match parse_certificate(&make(2000, 2001)) {
            Err(TlsError::BadCertificate(msg)) => assert!(msg.contains("expired"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        match parse_certificate(&make(3000, 3001)) {
            Err(TlsError::BadCertificate(msg)) => assert!(msg.contains("not yet valid"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        // Inside the window it is fine.
        let in_window = UNIX_EPOCH + Duration::from_secs(978_307_200 + 86_400); // 2001-01-02
        assert!(parse_certificate_at(&make(2000, 2002), in_window).is_ok());
    }

    #[test]
    fn unknown_critical_extension_is_rejected_non_critical_ignored() {
        let key = Keypair::generate();
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut msg = SIGNING_PREFIX.to_vec();
        msg.extend_from_slice(&cert_key.public_key_der());
        let content = encode_signed_key(&key.public().encode_protobuf(), &key.sign(&msg));
        let build = |critical: bool| {
            let mut other = rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 99999, 1],
                vec![0x05, 0x00],
            );
            other.set_criticality(critical);
            let mut params = rcgen::CertificateParams::default();
            params.custom_extensions = vec![
                rcgen::CustomExtension::from_oid_content(&P2P_EXT_OID, content.clone()),
                other,
            ];
            params.self_signed(&cert_key).unwrap().der().clone()
        };
        assert_eq!(
            parse_certificate(&build(false)).unwrap().peer_id(),
            key.peer_id()
        );
        match parse_certificate(&build(true)) {
            Err(TlsError::BadCertificate(msg)) => assert!(msg.contains("critical"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn duplicate_extension_is_rejected() {
        let key = Keypair::generate();
        let (cert, _) = generate_certificate(&key).unwrap();
        let (_, x509) = X509Certificate::from_der(&cert).unwrap();
        let value = x509.extensions()[0].value.to_vec();
        let (dup, _) = custom_cert(vec![
            rcgen::CustomExtension::from_oid_content(&P2P_EXT_OID, value.clone()),
            rcgen::CustomExtension::from_oid_content(&P2P_EXT_OID, value),
        ]);
        assert_eq!(
            parse_certificate(&dup).unwrap_err(),
            TlsError::InvalidExtension("extension present more than once".into())
        );
    }

    #[test]
    fn ed25519_certificate_key_is_supported() {
        // A peer may use an Ed25519 certificate key (rust-libp2p and go-libp2p accept it).
        let key = Keypair::generate();
        let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut msg = SIGNING_PREFIX.to_vec();
        msg.extend_from_slice(&cert_key.public_key_der());
        let content = encode_signed_key(&key.public().encode_protobuf(), &key.sign(&msg));
        let mut params = rcgen::CertificateParams::default();
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &P2P_EXT_OID,
            content,
        )];
        let cert = params.self_signed(&cert_key).unwrap();
        let parsed = parse_certificate(cert.der()).unwrap();
        assert_eq!(parsed.peer_id(), key.peer_id());
        assert_eq!(
            parsed.certificate_signature_scheme(),
            SignatureScheme::ED25519
        );
    }

    #[test]
    fn verify_signature_checks_scheme_and_signature() {
        let key = Keypair::generate();
        let (cert, private_key) = generate_certificate(&key).unwrap();
        let parsed = parse_certificate(&cert).unwrap();
        let PrivateKeyDer::Pkcs8(pkcs8) = private_key else {
            panic!("pkcs8 expected")
        };
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .unwrap();
        let sig = signer.sign(&rng, b"transcript").unwrap();
        parsed
            .verify_signature(
                SignatureScheme::ECDSA_NISTP256_SHA256,
                b"transcript",
                sig.as_ref(),
            )
            .unwrap();
        assert_eq!(
            parsed.verify_signature(
                SignatureScheme::ECDSA_NISTP256_SHA256,
                b"other",
                sig.as_ref()
            ),
            Err(TlsError::InvalidHandshakeSignature)
        );
        assert_eq!(
            parsed.verify_signature(SignatureScheme::ED25519, b"transcript", sig.as_ref()),
            Err(TlsError::UnsupportedSignatureScheme(
                SignatureScheme::ED25519
            ))
        );
    }

    #[test]
    fn signed_key_der_round_trips_and_is_strict() {
        for (pk, sig) in [
            (vec![1u8; 36], vec![2u8; 64]),
            (vec![3u8; 200], vec![4u8; 300]),
            (vec![], vec![]),
        ] {
            let enc = encode_signed_key(&pk, &sig);
            assert_eq!(decode_signed_key(&enc).unwrap(), (&pk[..], &sig[..]));
            let mut trailing = enc.clone();
            trailing.push(0);
            assert!(decode_signed_key(&trailing).is_err());
        }
        // Non-minimal length encoding.
        assert!(decode_signed_key(&[0x30, 0x81, 0x04, 0x04, 0x00, 0x04, 0x00]).is_err());
        // Indefinite length.
        assert!(decode_signed_key(&[0x30, 0x80, 0x04, 0x00, 0x04, 0x00, 0x00, 0x00]).is_err());
        // BIT STRING instead of OCTET STRING.
        assert!(decode_signed_key(&[0x30, 0x04, 0x03, 0x00, 0x03, 0x00]).is_err());
    }

    // --- Handshakes in memory.

    fn server_name() -> ServerName<'static> {
        ServerName::try_from("libp2p.invalid").unwrap()
    }

    /// Which side's `process_new_packets` failed.
    #[derive(Debug, PartialEq)]
    enum Side {
        Client,
        Server,
    }

    fn transfer(
        from: &mut rustls::Connection,
        to: &mut rustls::Connection,
    ) -> Result<(), rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
        }
        to.process_new_packets().map(|_| ())
    }

    fn handshake(
        client: &mut rustls::Connection,
        server: &mut rustls::Connection,
    ) -> Result<(), (Side, rustls::Error)> {
        for _ in 0..10 {
            transfer(client, server).map_err(|e| (Side::Server, e))?;
            transfer(server, client).map_err(|e| (Side::Client, e))?;
            if !client.is_handshaking() && !server.is_handshaking() {
                // Let the server see the client's last flight (Finished / certificate).
                transfer(client, server).map_err(|e| (Side::Server, e))?;
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn connections(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> (rustls::Connection, rustls::Connection) {
        let c = rustls::ClientConnection::new(Arc::new(client), server_name()).unwrap();
        let s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        (rustls::Connection::Client(c), rustls::Connection::Server(s))
    }

    #[test]
    fn mutual_handshake_authenticates_both_peers() {
        let server_key = Keypair::generate();
        let client_key = Keypair::generate();
        let (client_cfg, outcome) = client_config(&client_key, Some(server_key.peer_id())).unwrap();
        let (mut client, mut server) = connections(client_cfg, server_config(&server_key).unwrap());
        handshake(&mut client, &mut server).unwrap();

        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(client.alpn_protocol(), Some(ALPN));
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert_eq!(
            peer_id_from_certificates(client.peer_certificates().unwrap()).unwrap(),
            server_key.peer_id()
        );
        assert_eq!(
            peer_id_from_certificates(server.peer_certificates().unwrap()).unwrap(),
            client_key.peer_id()
        );
        assert_eq!(outcome.take_error(), None);
        // No SNI was sent.
        if let rustls::Connection::Server(s) = &server {
            assert_eq!(s.server_name(), None);
        }
    }

    #[test]
    fn handshake_without_expected_peer_accepts_any_peer() {
        let server_key = Keypair::generate();
        let (client_cfg, outcome) = client_config(&Keypair::generate(), None).unwrap();
        let (mut client, mut server) = connections(client_cfg, server_config(&server_key).unwrap());
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            peer_id_from_certificates(client.peer_certificates().unwrap()).unwrap(),
            server_key.peer_id()
        );
        assert!(outcome.take_error().is_none());
    }

    #[test]
    fn unexpected_server_peer_fails_with_typed_mismatch() {
        let server_key = Keypair::generate();
        let wanted = Keypair::generate().peer_id();
        let (client_cfg, outcome) = client_config(&Keypair::generate(), Some(wanted)).unwrap();
        let (mut client, mut server) = connections(client_cfg, server_config(&server_key).unwrap());
        let (side, err) = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(side, Side::Client);
        assert_eq!(
            typed(&err),
            Some(TlsError::PeerIdMismatch {
                expected: wanted,
                actual: server_key.peer_id()
            })
        );
        assert_eq!(
            outcome.take_error(),
            Some(TlsError::PeerIdMismatch {
                expected: wanted,
                actual: server_key.peer_id()
            })
        );
        assert_eq!(outcome.take_error(), None, "taken once");
    }

    /// The typed error carried inside a rustls error produced by our verifiers.
    fn typed(err: &rustls::Error) -> Option<TlsError> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<TlsError>().cloned()
            }
            _ => None,
        }
    }

    fn raw_client_config(
        verifier: ServerVerifier,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    }

    #[test]
    fn server_requires_a_client_certificate() {
        let verifier = ServerVerifier {
            expected: None,
            outcome: VerifyOutcome::default(),
        };
        let mut cfg = raw_client_config(verifier).with_no_client_auth();
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let (mut client, mut server) =
            connections(cfg, server_config(&Keypair::generate()).unwrap());
        let (side, _) = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(side, Side::Server);
    }

    #[test]
    fn server_rejects_client_certificate_without_extension() {
        let (cert, key) = custom_cert(vec![]);
        let verifier = ServerVerifier {
            expected: None,
            outcome: VerifyOutcome::default(),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = raw_client_config(verifier)
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let (mut client, mut server) =
            connections(cfg, server_config(&Keypair::generate()).unwrap());
        let (side, err) = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(side, Side::Server);
        assert_eq!(typed(&err), Some(TlsError::MissingExtension));
    }

    #[test]
    fn client_rejects_server_certificate_without_extension() {
        let (cert, key) = custom_cert(vec![]);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server_cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(ClientVerifier))
            .with_single_cert(vec![cert], key)
            .unwrap();
        server_cfg.alpn_protocols = vec![ALPN.to_vec()];
        let (client_cfg, outcome) = client_config(&Keypair::generate(), None).unwrap();
        let (mut client, mut server) = connections(client_cfg, server_cfg);
        let (side, _) = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(side, Side::Client);
        assert_eq!(outcome.take_error(), Some(TlsError::MissingExtension));
    }

    #[test]
    fn configs_are_tls13_only_and_quinn_compatible() {
        let key = Keypair::generate();
        let server = server_config(&key).unwrap();
        let (client, _) = client_config(&key, None).unwrap();
        for suite in &client.crypto_provider().cipher_suites {
            assert!(matches!(suite, SupportedCipherSuite::Tls13(_)));
        }
        assert!(client
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert!(!client.enable_sni);
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client)).unwrap();
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server)).unwrap();
    }

    #[test]
    fn quic_flavoured_handshake_in_memory() {
        use rustls::quic::{ClientConnection, Connection, ServerConnection, Version};
        let server_key = Keypair::generate();
        let client_key = Keypair::generate();
        let (client_cfg, _) = client_config(&client_key, Some(server_key.peer_id())).unwrap();
        let mut client = Connection::Client(
            ClientConnection::new(
                Arc::new(client_cfg),
                Version::V1,
                server_name(),
                vec![1, 2, 3],
            )
            .unwrap(),
        );
        let mut server = Connection::Server(
            ServerConnection::new(
                Arc::new(server_config(&server_key).unwrap()),
                Version::V1,
                vec![4, 5, 6],
            )
            .unwrap(),
        );
        let pump = |from: &mut Connection, to: &mut Connection| {
            let mut buf = Vec::new();
            let _keys = from.write_hs(&mut buf);
            if !buf.is_empty() {
                to.read_hs(&buf).unwrap();
            }
        };
        for _ in 0..8 {
            pump(&mut client, &mut server);
            pump(&mut server, &mut client);
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(
            peer_id_from_certificates(client.peer_certificates().unwrap()).unwrap(),
            server_key.peer_id()
        );
        assert_eq!(
            peer_id_from_certificates(server.peer_certificates().unwrap()).unwrap(),
            client_key.peer_id()
        );
    }

    // --- Robustness.

    fn sample_cert() -> &'static (Vec<u8>, PeerId) {
        static CERT: OnceLock<(Vec<u8>, PeerId)> = OnceLock::new();
        CERT.get_or_init(|| {
            let key = Keypair::from_seed_for_tests(7);
            let (cert, _) = generate_certificate(&key).unwrap();
            (cert.to_vec(), key.peer_id())
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse_certificate(&bytes);
            let _ = decode_signed_key(&bytes);
            let _ = decode_key_protobuf(&bytes);
        }

        #[test]
        fn der_shaped_random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
            bytes.extend_from_slice(&body);
            let _ = parse_certificate(&bytes);
        }

        #[test]
        fn mutated_certificate_never_authenticates_someone_else(idx in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let (cert, peer) = sample_cert();
            let mut bytes = cert.clone();
            let i = idx.index(bytes.len());
            bytes[i] ^= xor;
            if let Ok(parsed) = parse_certificate(&bytes) {
                prop_assert_eq!(parsed.peer_id(), *peer);
            }
        }
    }
}
