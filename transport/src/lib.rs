//! meshwire transport: identity, QUIC with libp2p TLS, multistream-select, in-memory transport.
pub mod identity;
