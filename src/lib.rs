//! meshwire: a modular peer-to-peer networking stack over QUIC, wire-compatible with libp2p.
//!
//! This facade re-exports the workspace crates:
//! - [`core`]: identities ([`core::Keypair`], [`core::PeerId`]), connection ids.
//! - [`transport`]: QUIC with libp2p TLS, multistream-select, the in-memory transport.
//! - [`connmgr`]: the tag-based connection manager (go-libp2p's interface).
//!
//! ```
//! use meshwire::core::Keypair;
//!
//! let peer = Keypair::generate().peer_id();
//! assert!(peer.to_string().starts_with("12D3KooW"));
//! ```

pub use meshwire_connmgr as connmgr;
pub use meshwire_core as core;
pub use meshwire_transport as transport;
