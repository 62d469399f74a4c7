//! The rustls verifiers of libp2p certificates (client side and server side) and
//! [`VerifyOutcome`], where the client verifier leaves the typed reason of a rejection.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshwire_core::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::cache::VerifiedCerts;
use super::certificate::{wrong_chain_length, P2pCertificate};
use super::error::TlsError;

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

/// Shared slot where the client verifier records the typed reason it rejected the server
/// (quinn/rustls only carry strings), so the dialer can return the exact [`TlsError`].
///
/// Each [`client_config`](super::client_config) call returns a fresh one; use one configuration per dial so the
/// recorded reason belongs to that dial. The first rejection is kept.
#[derive(Clone, Default)]
pub struct VerifyOutcome(Arc<Mutex<Option<TlsError>>>);

impl VerifyOutcome {
    /// Takes the recorded rejection reason, if the verifier rejected the server.
    pub fn take_error(&self) -> Option<TlsError> {
        self.slot().take()
    }

    pub(crate) fn record(&self, err: &TlsError) {
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

/// Verifies a presented chain: exactly one certificate, fully valid at `now`.
pub(crate) fn verify_chain(
    cache: &VerifiedCerts,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<P2pCertificate, TlsError> {
    if !intermediates.is_empty() {
        return Err(wrong_chain_length(1 + intermediates.len()));
    }
    cache.verify(end_entity, UNIX_EPOCH + Duration::from_secs(now.as_secs()))
}

/// Verifies a TLS 1.3 CertificateVerify signature with the certificate's key.
fn verify_tls13(
    cache: &VerifiedCerts,
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
    cache
        .verify(cert, SystemTime::now())?
        .verify_signature(dss.scheme, message, dss.signature())
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
pub(crate) struct ServerVerifier {
    pub(crate) expected: Option<PeerId>,
    pub(crate) outcome: VerifyOutcome,
    pub(crate) cache: Arc<VerifiedCerts>,
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
        let result = verify_chain(&self.cache, end_entity, intermediates, now).and_then(|cert| {
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
        self.check(verify_tls13(&self.cache, message, cert, dss))
            .map(|()| HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}

/// The server's verifier of client certificates (mandatory); shared by all connections, so it
/// records nothing and only logs rejections.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) cache: Arc<VerifiedCerts>,
}

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
        log_client_rejection(verify_chain(&self.cache, end_entity, intermediates, now).map(|_| ()))
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
        log_client_rejection(verify_tls13(&self.cache, message, cert, dss))
            .map(|()| HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}
