//! Certificates already verified, so a handshake does not check the same bytes twice.
//!
//! Verifying a libp2p certificate costs two signature checks (the certificate's
//! self-signature and the host key's signature in the libp2p extension) besides parsing,
//! and each handshake needed it twice per side: once when rustls hands over the certificate,
//! once more when it asks to check the CertificateVerify signature with that certificate's
//! key. Peers also present the same certificate on every connection (one per identity and
//! process). The checks are pure functions of the certificate's bytes except the validity
//! period, so a certificate that passed them is remembered by its exact bytes with its
//! validity period, which is checked again on every use; anything not found is verified in
//! full. The TLS handshake itself is unchanged: every handshake still authenticates both
//! peers (client authentication mandatory, no session resumption) and checks the
//! CertificateVerify signature, the proof that the peer holds the certificate key now.
//!
//! Bounded: at most [`CAPACITY`] certificates of at most [`MAX_CACHED_LEN`] bytes each, the
//! oldest forgotten first; only certificates that passed every check enter, so a hostile
//! peer can only churn the cache, never put anything into it that it would not accept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::certificate::{parse_certificate_at, P2pCertificate};
use super::error::TlsError;

/// Certificates remembered (default 256).
pub(crate) const CAPACITY: usize = 256;
/// Largest certificate remembered, in bytes (4 KiB; meshwire's and rust-libp2p's are
/// ~400 B). With [`CAPACITY`], the cache holds at most 1 MiB of certificates.
pub(crate) const MAX_CACHED_LEN: usize = 4096;

#[derive(Debug, Default)]
struct Inner {
    verified: HashMap<Vec<u8>, P2pCertificate>,
    order: VecDeque<Vec<u8>>,
}

/// The verified certificates of one local identity. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct VerifiedCerts {
    inner: Mutex<Inner>,
}

impl VerifiedCerts {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`parse_certificate_at`]`(der, now)`, answered from the cache when these exact bytes
    /// passed it before and `now` is inside their validity period.
    pub(crate) fn verify(&self, der: &[u8], now: SystemTime) -> Result<P2pCertificate, TlsError> {
        if let Some(cert) = self.lock().verified.get(der) {
            if cert.is_valid_at(now) {
                return Ok(cert.clone());
            }
        }
        // Not seen, or outside its validity period: the full check gives the typed error.
        let cert = parse_certificate_at(der, now)?;
        if der.len() <= MAX_CACHED_LEN {
            let mut inner = self.lock();
            if !inner.verified.contains_key(der) {
                if inner.order.len() >= CAPACITY {
                    if let Some(old) = inner.order.pop_front() {
                        inner.verified.remove(&old);
                    }
                }
                inner.order.push_back(der.to_vec());
                inner.verified.insert(der.to_vec(), cert.clone());
            }
        }
        Ok(cert)
    }

    /// Certificates remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().verified.len()
    }
}
