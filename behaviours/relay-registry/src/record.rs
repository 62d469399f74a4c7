//! Relay records: what a relay announces about itself, signed with its own key.
//!
//! # Format
//!
//! A record is a libp2p signed envelope (RFC 0002, the same code as reservation vouchers:
//! [`meshwire_relay::voucher::envelope`]) with domain [`DOMAIN`] and payload type
//! [`PAYLOAD_TYPE`], whose payload is the protobuf message
//!
//! ```text
//! RelayRecord {
//!   bytes  node_id       = 1;  // the relay's peer id (must be the envelope's signer)
//!   string realm         = 2;  // at most MAX_REALM_LEN bytes
//!   bytes  endpoint      = 3;  // a multiaddr, at most MAX_ENDPOINT_LEN bytes
//!   uint32 capacity      = 4;  // reservations it offers, 1..=MAX_CAPACITY
//!   uint32 current_load  = 5;  // reservations it holds, <= capacity
//!   uint64 registered_at = 6;  // ms since the Unix epoch: when it registered
//!   uint64 issued_at     = 7;  // ms since the Unix epoch: this version (newer wins)
//!   uint64 expires_at    = 8;  // ms since the Unix epoch: end of validity
//!   bool   withdrawn     = 9;  // the relay unregistered (a tombstone)
//! }
//! ```
//!
//! The whole envelope is at most [`MAX_RECORD_SIZE`] bytes, checked before anything is
//! decoded. [`RelayRecord::open`] checks the size, the envelope's signature, that the signer
//! is `node_id` (nobody can announce another peer as a relay) and every bound above, and
//! returns a typed [`RecordError`]; it never panics. Time checks (expired, issued in the
//! future, too long a validity) need a clock and are made when a record is read
//! ([`RegistryEngine::handle_record`](crate::RegistryEngine::handle_record)).
//!
//! In the DHT a relay's record is a kademlia record under [`record_key`]`(realm, relay)`, so
//! the key names the relay too: a valid record of relay B stored under relay A's key is
//! refused as well ([`RecordError::KeyMismatch`]). Relays are found through provider records
//! under [`provider_key`]`(realm)`.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_relay_registry::record::{RecordError, RelayRecord};
//!
//! let relay = Keypair::generate();
//! let record = RelayRecord {
//!     node_id: relay.peer_id(),
//!     realm: "default".into(),
//!     endpoint: "/ip4/198.51.100.7/udp/4001/quic-v1".parse()?,
//!     capacity: 100,
//!     current_load: 12,
//!     registered_at: 1_700_000_000_000,
//!     issued_at: 1_700_000_060_000,
//!     expires_at: 1_700_000_180_000,
//!     withdrawn: false,
//! };
//! let bytes = record.sign(&relay)?;
//! assert_eq!(RelayRecord::open(&bytes)?, record);
//!
//! // Signed by another key, the same claim is refused.
//! let forged = record.sign_unchecked(&Keypair::generate());
//! assert_eq!(RelayRecord::open(&forged), Err(RecordError::SignerMismatch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use meshwire_core::{Keypair, PeerId};
use meshwire_relay::voucher::envelope::{self, EnvelopeError};
use multiaddr::Multiaddr;
use prost::Message as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The signature domain of relay records.
pub const DOMAIN: &str = "meshwire-relay-registry";

/// The envelope payload type of relay records.
pub const PAYLOAD_TYPE: &[u8] = b"/meshwire/relay-registry/record/1";

/// Largest signed record accepted: 1024 bytes (an ed25519-signed record with a realm and an
/// endpoint at their limits takes under 600).
pub const MAX_RECORD_SIZE: usize = 1024;

/// Longest realm name: 64 bytes.
pub const MAX_REALM_LEN: usize = 64;

/// Longest endpoint, as multiaddr bytes: 256.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// Largest capacity a relay may announce: 1,000,000 reservations.
pub const MAX_CAPACITY: u32 = 1_000_000;

/// The payload as it travels (see the [module docs](self)).
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    node_id: Vec<u8>,
    #[prost(string, tag = "2")]
    realm: String,
    #[prost(bytes = "vec", tag = "3")]
    endpoint: Vec<u8>,
    #[prost(uint32, tag = "4")]
    capacity: u32,
    #[prost(uint32, tag = "5")]
    current_load: u32,
    #[prost(uint64, tag = "6")]
    registered_at: u64,
    #[prost(uint64, tag = "7")]
    issued_at: u64,
    #[prost(uint64, tag = "8")]
    expires_at: u64,
    #[prost(bool, tag = "9")]
    withdrawn: bool,
}

/// A relay's announcement: where it is, how many reservations it offers and holds, and how
/// long this says so. Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRecord {
    /// The relay.
    pub node_id: PeerId,
    /// The realm it serves (relays and clients of one realm find each other).
    pub realm: String,
    /// Where to reach it.
    pub endpoint: Multiaddr,
    /// Reservations it offers at most.
    pub capacity: u32,
    /// Reservations it holds now.
    pub current_load: u32,
    /// When it registered.
    pub registered_at: u64,
    /// When this version was made; of two versions the later one wins.
    pub issued_at: u64,
    /// When this version stops being valid.
    pub expires_at: u64,
    /// The relay unregistered: the record only tells that it is gone.
    pub withdrawn: bool,
}

/// Why a record was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    /// The record is longer than [`MAX_RECORD_SIZE`].
    #[error("record of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope did not open (malformed, wrong payload type, bad signature).
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The payload is not a relay record message.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// `node_id` is not a peer id.
    #[error("node_id is not a peer id")]
    BadNodeId,
    /// The envelope is signed by another key than `node_id`'s.
    #[error("record signed by another key than its node's")]
    SignerMismatch,
    /// The record is for another relay than the DHT key it was found under.
    #[error("record of {found} found under the key of {expected}")]
    KeyMismatch {
        /// The relay whose key was read.
        expected: PeerId,
        /// The relay the record names.
        found: PeerId,
    },
    /// The realm is longer than [`MAX_REALM_LEN`].
    #[error("realm of {0} bytes exceeds the limit of {MAX_REALM_LEN}")]
    RealmTooLong(usize),
    /// The endpoint is not a multiaddr, empty, or longer than [`MAX_ENDPOINT_LEN`].
    #[error("bad endpoint: {0}")]
    BadEndpoint(String),
    /// The capacity is 0 or above [`MAX_CAPACITY`].
    #[error("capacity {0} outside 1..={MAX_CAPACITY}")]
    BadCapacity(u32),
    /// The load is above the capacity.
    #[error("load {load} above capacity {capacity}")]
    LoadAboveCapacity {
        /// The load.
        load: u32,
        /// The capacity.
        capacity: u32,
    },
    /// The times are out of order (`registered_at <= issued_at < expires_at` is required).
    #[error("times out of order")]
    BadTimes,
}

impl RelayRecord {
    /// Checks the bounds of the [module docs](self) that do not need a clock.
    ///
    /// # Errors
    ///
    /// The first bound broken.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.realm.len() > MAX_REALM_LEN {
            return Err(RecordError::RealmTooLong(self.realm.len()));
        }
        let endpoint_len = self.endpoint.as_ref().len();
        if endpoint_len == 0 || endpoint_len > MAX_ENDPOINT_LEN {
            return Err(RecordError::BadEndpoint(format!(
                "{endpoint_len} bytes, 1..={MAX_ENDPOINT_LEN} allowed"
            )));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(RecordError::BadCapacity(self.capacity));
        }
        if self.current_load > self.capacity {
            return Err(RecordError::LoadAboveCapacity {
                load: self.current_load,
                capacity: self.capacity,
            });
        }
        if self.registered_at > self.issued_at || self.issued_at >= self.expires_at {
            return Err(RecordError::BadTimes);
        }
        Ok(())
    }

    /// Signs the record with `key`, the relay's own key.
    ///
    /// # Errors
    ///
    /// [`RecordError::SignerMismatch`] if `key` is not `node_id`'s; any bound of
    /// [`validate`](Self::validate).
    pub fn sign(&self, key: &Keypair) -> Result<Vec<u8>, RecordError> {
        if key.peer_id() != self.node_id {
            return Err(RecordError::SignerMismatch);
        }
        self.validate()?;
        let bytes = self.sign_unchecked(key);
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_SIZE,
            });
        }
        Ok(bytes)
    }

    /// Seals the record with `key` without any check: how a forger would make one (tests
    /// and tools use it to check that such records are refused).
    pub fn sign_unchecked(&self, key: &Keypair) -> Vec<u8> {
        let payload = Payload {
            node_id: self.node_id.to_bytes(),
            realm: self.realm.clone(),
            endpoint: self.endpoint.to_vec(),
            capacity: self.capacity,
            current_load: self.current_load,
            registered_at: self.registered_at,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            withdrawn: self.withdrawn,
        };
        envelope::seal(key, DOMAIN, PAYLOAD_TYPE, &payload.encode_to_vec())
    }

    /// Opens a signed record: size, signature, signer and bounds (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`RecordError`]; the size is checked before anything is decoded.
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_SIZE,
            });
        }
        let opened = envelope::open(bytes, DOMAIN, PAYLOAD_TYPE)?;
        let payload = Payload::decode(opened.payload.as_slice())
            .map_err(|e| RecordError::Malformed(e.to_string()))?;
        let node_id = PeerId::from_bytes(&payload.node_id).map_err(|_| RecordError::BadNodeId)?;
        if !node_id.matches(&opened.signer) {
            return Err(RecordError::SignerMismatch);
        }
        if payload.endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(RecordError::BadEndpoint(format!(
                "{} bytes, at most {MAX_ENDPOINT_LEN} allowed",
                payload.endpoint.len()
            )));
        }
        let endpoint = Multiaddr::try_from(payload.endpoint)
            .map_err(|e| RecordError::BadEndpoint(e.to_string()))?;
        let record = RelayRecord {
            node_id,
            realm: payload.realm,
            endpoint,
            capacity: payload.capacity,
            current_load: payload.current_load,
            registered_at: payload.registered_at,
            issued_at: payload.issued_at,
            expires_at: payload.expires_at,
            withdrawn: payload.withdrawn,
        };
        record.validate()?;
        Ok(record)
    }

    /// Opens a record read from the DHT under the key of `expected`: [`open`](Self::open),
    /// and the record must name `expected`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and [`RecordError::KeyMismatch`].
    pub fn open_for(bytes: &[u8], expected: &PeerId) -> Result<Self, RecordError> {
        let record = Self::open(bytes)?;
        if record.node_id != *expected {
            return Err(RecordError::KeyMismatch {
                expected: *expected,
                found: record.node_id,
            });
        }
        Ok(record)
    }
}

/// A SHA2-256 multihash (`0x12 0x20 ‖ digest`) of the concatenated `parts`.
fn multihash(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&[0x12, 0x20]);
    key.extend_from_slice(&h.finalize());
    key
}

/// The DHT provider key under which the relays of `realm` announce themselves: the SHA2-256
/// multihash of `"meshwire/service/relay-registry/" + realm`, which is kademlia's service key
/// of the service `relay-registry/<realm>` (`meshwire_kad::discovery::service_key`), so
/// `kad.discover("relay-registry/<realm>")` finds the same relays.
pub fn provider_key(realm: &str) -> Vec<u8> {
    multihash(&[b"meshwire/service/relay-registry/", realm.as_bytes()])
}

/// The DHT record key of `relay`'s record in `realm`: the SHA2-256 multihash of
/// `"meshwire/relay-registry/" ‖ u8(len(realm)) ‖ realm ‖ relay's peer id bytes`.
pub fn record_key(realm: &str, relay: &PeerId) -> Vec<u8> {
    let len = [realm.len().min(255) as u8];
    multihash(&[
        b"meshwire/relay-registry/",
        &len,
        realm.as_bytes(),
        relay.as_bytes(),
    ])
}

#[cfg(test)]
mod tests;
