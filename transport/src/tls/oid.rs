//! The X.509 object identifiers the libp2p certificate checks need, as arc lists.

use x509_parser::asn1_rs::Oid;

pub(crate) const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
pub(crate) const CURVE_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
pub(crate) const CURVE_P384: &[u64] = &[1, 3, 132, 0, 34];
pub(crate) const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
pub(crate) const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
pub(crate) const ED25519: &[u64] = &[1, 3, 101, 112];
pub(crate) const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
pub(crate) const RSA_PKCS1_SHA256: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
pub(crate) const RSA_PKCS1_SHA384: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
pub(crate) const RSA_PKCS1_SHA512: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
pub(crate) const RSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
pub(crate) const MGF1: &[u64] = &[1, 2, 840, 113549, 1, 1, 8];
pub(crate) const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
pub(crate) const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
pub(crate) const SHA512: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];
pub(crate) const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
pub(crate) const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];

/// Whether `oid` has exactly the arcs `arcs`.
pub(crate) fn oid_is(oid: &Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}
