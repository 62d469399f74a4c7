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
//! Inside: `certificate` generates and parses the certificate, `extension` encodes and checks
//! the libp2p extension (the host key is decoded by meshwire-core's
//! [`KeyMessage`](meshwire_core::identity::KeyMessage), the one decoder of libp2p key
//! messages), `verifier` holds the rustls verifiers, `cache` the certificates that passed
//! every check (so a handshake verifies a known certificate's signatures once, not twice,
//! and never skips the CertificateVerify check; bounded, validity re-checked on each use),
//! and this module the configurations.
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

mod cache;
mod certificate;
mod error;
mod extension;
mod oid;
mod verifier;

#[cfg(test)]
mod tests;

pub(crate) use certificate::peer_id_of_authenticated_peer;
pub use certificate::{
    generate_certificate, parse_certificate, parse_certificate_at, peer_id_from_certificates,
    P2pCertificate,
};
pub use error::TlsError;
pub use extension::P2P_EXT_OID;
pub use verifier::VerifyOutcome;

use std::sync::Arc;

use meshwire_core::identity::{Keypair, PeerId};
use rustls::{SignatureScheme, SupportedCipherSuite};

use verifier::{ClientVerifier, ServerVerifier};

/// The ALPN protocol both sides of a libp2p TLS handshake offer and require.
pub const ALPN: &[u8] = b"libp2p";

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
    /// Peer certificates that passed every check (shared by all handshakes of this
    /// identity; see `cache`).
    verified: Arc<cache::VerifiedCerts>,
}

impl LocalIdentity {
    /// Generates the certificate for `keypair`.
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = Arc::new(AlwaysResolvesCert::new(keypair, &provider)?);
        Ok(LocalIdentity {
            provider,
            resolver,
            verified: Arc::default(),
        })
    }

    /// The server side: TLS 1.3 only, ALPN `libp2p`, our certificate, and a mandatory client
    /// certificate checked by the libp2p verifier. Session resumption is off so every
    /// handshake authenticates the client.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(ClientVerifier {
                cache: self.verified.clone(),
            }))
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
            cache: self.verified.clone(),
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
