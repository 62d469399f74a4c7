//! Generating and parsing the libp2p certificate: a self-signed X.509 certificate for a
//! throw-away key, bound to the host key by the libp2p Public Key Extension.

use std::time::{SystemTime, UNIX_EPOCH};

use meshwire_core::identity::{Keypair, PeerId, PublicKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::SignatureScheme;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::time::ASN1Time;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use super::error::TlsError;
use super::extension::{
    decode_host_key, decode_signed_key, encode_signed_key, verify_host_key, P2P_EXT_OID,
    SIGNING_PREFIX,
};
use super::oid::{self, oid_is};

/// Critical extensions (besides the libp2p one) that are accepted: they carry no meaning for a
/// self-signed libp2p end-entity certificate, and some libp2p implementations add them.
const UNDERSTOOD_CRITICAL_EXTENSIONS: &[&[u64]] = &[oid::KEY_USAGE, oid::BASIC_CONSTRAINTS];

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
    /// The validity period, in seconds since the Unix epoch (`notBefore`, `notAfter`).
    validity: (i64, i64),
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

    /// Whether `now` is inside the certificate's validity period (the check
    /// [`parse_certificate_at`] made, for another time).
    pub(crate) fn is_valid_at(&self, now: SystemTime) -> bool {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        };
        self.validity.0 <= secs && secs <= self.validity.1
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
    let validity = (
        x509.validity().not_before.timestamp(),
        x509.validity().not_after.timestamp(),
    );

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
        validity,
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
    Ok(decode_host_key(host_key_bytes)?.to_peer_id())
}

pub(crate) fn wrong_chain_length(n: usize) -> TlsError {
    TlsError::BadCertificate(format!("expected exactly one certificate, got {n}"))
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
