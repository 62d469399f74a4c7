use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwire_core::identity::{KeyMessage, Keypair, PeerId};
use proptest::prelude::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, OtherError, SignatureScheme, SupportedCipherSuite};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cache::VerifiedCerts;
use super::extension::{decode_signed_key, encode_signed_key, SIGNING_PREFIX};
use super::oid::oid_is;
use super::verifier::{verify_chain, ClientVerifier, ServerVerifier};
use super::*;

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
fn undefined_and_malformed_host_keys_are_told_apart() {
    let signer = Keypair::generate();
    // A key type the spec does not define is unsupported, not malformed.
    let undefined = [0x08, 0x07, 0x12, 0x01, 0x00];
    assert_eq!(
        parse_certificate(&cert_with_extension(&undefined, &signer)).unwrap_err(),
        TlsError::UnsupportedKeyType(7)
    );
    let cert = cert_with_extension(&undefined, &signer);
    assert_eq!(
        peer_id_of_authenticated_peer(std::slice::from_ref(&cert)).unwrap_err(),
        TlsError::UnsupportedKeyType(7)
    );
    // A duplicated field is malformed.
    let duplicated = [0x08, 0x01, 0x08, 0x01, 0x12, 0x00];
    assert!(matches!(
        parse_certificate(&cert_with_extension(&duplicated, &signer)),
        Err(TlsError::InvalidExtension(_))
    ));
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
        verify_chain(&VerifiedCerts::default(), &a, &[b], now),
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
fn verified_certificate_cache_rechecks_validity_and_holds_only_good_certificates() {
    let key = Keypair::generate();
    let cert_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut msg = SIGNING_PREFIX.to_vec();
    msg.extend_from_slice(&cert_key.public_key_der());
    let content = encode_signed_key(&key.public().encode_protobuf(), &key.sign(&msg));
    let mut params = rcgen::CertificateParams::default();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &P2P_EXT_OID,
        content,
    )];
    let der = params.self_signed(&cert_key).unwrap().der().clone();
    let cache = VerifiedCerts::default();
    let in_window = UNIX_EPOCH + Duration::from_secs(978_307_200 + 86_400); // 2001-01-02
    assert_eq!(
        cache.verify(&der, in_window).unwrap().peer_id(),
        key.peer_id()
    );
    assert_eq!(cache.len(), 1);
    // A second look answers the same, from the cache.
    assert_eq!(
        cache.verify(&der, in_window).unwrap().peer_id(),
        key.peer_id()
    );
    assert_eq!(cache.len(), 1);
    // Remembered bytes outside their validity period still fail, with the typed error.
    match cache.verify(&der, SystemTime::now()) {
        Err(TlsError::BadCertificate(msg)) => assert!(msg.contains("expired"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
    // A certificate that fails a check never enters: one flipped bit in the self-signature.
    let mut bad = der.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(cache.verify(&bad, in_window).is_err());
    assert!(cache.verify(&bad, in_window).is_err());
    assert_eq!(cache.len(), 1);
    // Bounded: the oldest are forgotten.
    for _ in 0..super::cache::CAPACITY + 5 {
        let (cert, _) = generate_certificate(&key).unwrap();
        cache.verify(&cert, SystemTime::now()).unwrap();
    }
    assert_eq!(cache.len(), super::cache::CAPACITY);
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
        cache: Arc::default(),
    };
    let mut cfg = raw_client_config(verifier).with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let (mut client, mut server) = connections(cfg, server_config(&Keypair::generate()).unwrap());
    let (side, _) = handshake(&mut client, &mut server).unwrap_err();
    assert_eq!(side, Side::Server);
}

#[test]
fn server_rejects_client_certificate_without_extension() {
    let (cert, key) = custom_cert(vec![]);
    let verifier = ServerVerifier {
        expected: None,
        outcome: VerifyOutcome::default(),
        cache: Arc::default(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut cfg = raw_client_config(verifier)
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let (mut client, mut server) = connections(cfg, server_config(&Keypair::generate()).unwrap());
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
        .with_client_cert_verifier(Arc::new(ClientVerifier {
            cache: Arc::default(),
        }))
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
        let _ = KeyMessage::decode(&bytes);
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
