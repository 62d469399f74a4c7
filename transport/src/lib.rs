//! meshwire transport: QUIC with libp2p TLS, multistream-select, in-memory transport.
pub use meshwire_core::identity;
pub use meshwire_core::{ConnectionId, Direction};
