//! The `/ipfs/kad/1.0.0` wire format: protobuf messages, length-prefixed framing and the
//! conversion between wire structs and typed requests and responses.
//!
//! The messages follow the `Message` / `Record` / `Peer` protobuf of the libp2p Kademlia spec
//! (`kad-dht/README.md` in `libp2p/specs`) field for field, plus the two record fields rust-libp2p
//! adds (`publisher = 666`, `ttl = 777`), so meshwire, rust-libp2p and go-libp2p peers understand
//! each other byte for byte. Every message on a stream is prefixed with its length as an
//! unsigned varint (multiformats `unsigned-varint`).
//!
//! Decoding never trusts the remote: the length prefix is checked against an explicit bound
//! ([`KadCodec::max_message_size`], [`DEFAULT_MAX_MESSAGE_SIZE`] = 16 KiB like rust-libp2p) before
//! anything is read or allocated, and every failure is a typed [`ProtocolError`]. As in
//! rust-libp2p, an undecodable address is dropped from its peer and a peer entry with an invalid
//! peer id is dropped from a `closerPeers` / `providerPeers` list (both logged at `debug`), so one
//! bad entry does not discard an otherwise useful response.
//!
//! ```
//! use meshwire_kad::protocol::{KadCodec, KadRequest};
//!
//! let codec = KadCodec::default();
//! let request = KadRequest::FindNode { key: b"hello".to_vec() };
//! let bytes = codec.encode_request(&request).unwrap();
//! // Length prefix 9, then type = FIND_NODE (field 1 = 4) and key (field 2).
//! assert_eq!(bytes, [9, 0x08, 0x04, 0x12, 0x05, b'h', b'e', b'l', b'l', b'o']);
//! let (decoded, used) = codec.decode_request(&bytes).unwrap().unwrap();
//! assert_eq!((decoded, used), (request, bytes.len()));
//! // Half a frame: more bytes are needed.
//! assert!(codec.decode_request(&bytes[..4]).unwrap().is_none());
//! ```

use std::time::Duration;

use meshwire_core::PeerId;
use multiaddr::{Multiaddr, Protocol};
use prost::Message as _;
use thiserror::Error;

/// The protocol name negotiated with multistream-select.
pub const PROTOCOL_NAME: &str = "/ipfs/kad/1.0.0";

/// Default bound of one message (without its length prefix): 16 KiB, as rust-libp2p's
/// `DEFAULT_MAX_PACKET_SIZE`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024;

/// The longest unsigned varint the multiformats spec allows (9 bytes, 63 bits).
const MAX_VARINT_LEN: usize = 9;

/// Addresses kept per peer entry of a decoded message (`closerPeers`, `providerPeers`): the
/// first 8 valid ones, as many as the routing table and the provider store keep per peer.
pub const MAX_PEER_ADDRS: usize = 8;

/// Longest binary multiaddress kept from a decoded message, in bytes (256: room for a DNS
/// name, a QUIC or WebTransport stack and a `/p2p/` component). Longer ones are dropped.
pub const MAX_ADDR_LEN: usize = 256;

/// The protobuf structs exactly as they travel on the wire (`dht.proto`).
///
/// Field numbers: `Message { type = 1, key = 2, record = 3, closerPeers = 8, providerPeers = 9,
/// clusterLevelRaw = 10 }`, `Record { key = 1, value = 2, timeReceived = 5, publisher = 666,
/// ttl = 777 }`, `Peer { id = 1, addrs = 2, connection = 3 }`.
pub mod wire {
    /// A DHT record: a key-value pair.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Record {
        /// The key that references this record.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// The value the record stores.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        /// Time the record was received, set by the receiver (unused by meshwire).
        #[prost(string, tag = "5")]
        pub time_received: String,
        /// The original publisher of the record (rust-libp2p extension).
        #[prost(bytes = "vec", tag = "666")]
        pub publisher: Vec<u8>,
        /// The remaining time to live in seconds; 0 means none given (rust-libp2p extension).
        #[prost(uint32, tag = "777")]
        pub ttl: u32,
    }

    /// A Kademlia RPC message: every request and every response is one of these.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Message {
        /// What kind of message this is ([`MessageType`]).
        #[prost(enumeration = "MessageType", tag = "1")]
        pub r#type: i32,
        /// Coral cluster level: never used, kept for wire compatibility.
        #[prost(int32, tag = "10")]
        pub cluster_level_raw: i32,
        /// The key of the request (PUT_VALUE, GET_VALUE, ADD_PROVIDER, GET_PROVIDERS, FIND_NODE).
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        /// A record (PUT_VALUE, GET_VALUE).
        #[prost(message, optional, tag = "3")]
        pub record: Option<Record>,
        /// Peers closer to the key (GET_VALUE, GET_PROVIDERS, FIND_NODE responses).
        #[prost(message, repeated, tag = "8")]
        pub closer_peers: Vec<Peer>,
        /// Providers of the key (ADD_PROVIDER, GET_PROVIDERS).
        #[prost(message, repeated, tag = "9")]
        pub provider_peers: Vec<Peer>,
    }

    /// A peer and its addresses, as known by the sender.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Peer {
        /// The binary peer id (a multihash).
        #[prost(bytes = "vec", tag = "1")]
        pub id: Vec<u8>,
        /// The binary multiaddresses of the peer.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub addrs: Vec<Vec<u8>>,
        /// The sender's connection state with the peer ([`ConnectionType`]).
        #[prost(enumeration = "ConnectionType", tag = "3")]
        pub connection: i32,
    }

    /// `Message.MessageType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MessageType {
        /// Store a record.
        PutValue = 0,
        /// Fetch a record.
        GetValue = 1,
        /// Announce a provider.
        AddProvider = 2,
        /// Fetch providers.
        GetProviders = 3,
        /// Fetch the closest peers to a key.
        FindNode = 4,
        /// Liveness check.
        Ping = 5,
    }

    /// `Message.ConnectionType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ConnectionType {
        /// The sender has no connection to the peer and no extra information (default).
        NotConnected = 0,
        /// The sender has a live connection to the peer.
        Connected = 1,
        /// The sender recently connected to the peer.
        CanConnect = 2,
        /// The sender recently tried to connect to the peer repeatedly but failed.
        CannotConnect = 3,
    }
}

pub use wire::ConnectionType;

/// Errors of decoding (and, for oversized messages, encoding) Kademlia messages.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The length prefix is not a valid unsigned varint (too long or not minimally encoded).
    #[error("invalid length prefix")]
    InvalidLengthPrefix,
    /// The message is larger than the configured bound.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The announced (or, when encoding, actual) length.
        len: u64,
        /// The configured bound.
        max: usize,
    },
    /// The bytes are not a valid protobuf `Message`.
    #[error("malformed protobuf message: {0}")]
    Protobuf(String),
    /// The message type is not one of the six known ones.
    #[error("unknown message type {0}")]
    UnknownMessageType(i32),
    /// The message type cannot appear in this direction (e.g. an ADD_PROVIDER response).
    #[error("unexpected {0:?} message")]
    UnexpectedMessageType(wire::MessageType),
    /// A PUT_VALUE message without a record.
    #[error("PUT_VALUE message without a record")]
    MissingRecord,
    /// An ADD_PROVIDER request without any valid provider peer.
    #[error("ADD_PROVIDER request without a valid provider")]
    MissingProvider,
    /// A peer id (of a peer entry or a record publisher) is not a valid peer id.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(String),
}

/// The key of a record or of a provider announcement: arbitrary bytes (a multihash by
/// convention for provider keys).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RecordKey(Vec<u8>);

impl RecordKey {
    /// A key made of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        RecordKey(bytes.into())
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key bytes, owned.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.clone()
    }

    /// Consumes the key, returning its bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for RecordKey {
    fn from(v: Vec<u8>) -> Self {
        RecordKey(v)
    }
}

impl From<&[u8]> for RecordKey {
    fn from(v: &[u8]) -> Self {
        RecordKey(v.to_vec())
    }
}

impl From<&str> for RecordKey {
    fn from(v: &str) -> Self {
        RecordKey(v.as_bytes().to_vec())
    }
}

/// A record as carried in PUT_VALUE / GET_VALUE messages.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The record key.
    pub key: RecordKey,
    /// The value.
    pub value: Vec<u8>,
    /// The original publisher, if known.
    pub publisher: Option<PeerId>,
    /// The remaining time to live announced by the sender (whole seconds on the wire).
    pub ttl: Option<Duration>,
}

impl Record {
    /// A record without publisher or TTL.
    pub fn new(key: impl Into<RecordKey>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            publisher: None,
            ttl: None,
        }
    }

    fn to_wire(&self) -> wire::Record {
        wire::Record {
            key: self.key.to_vec(),
            value: self.value.clone(),
            time_received: String::new(),
            publisher: self.publisher.map(|p| p.to_bytes()).unwrap_or_default(),
            ttl: self.wire_ttl(),
        }
    }

    fn from_wire(r: wire::Record) -> Result<Self, ProtocolError> {
        let publisher = if r.publisher.is_empty() {
            None
        } else {
            Some(
                PeerId::from_bytes(&r.publisher)
                    .map_err(|e| ProtocolError::InvalidPeerId(e.to_string()))?,
            )
        };
        Ok(Record {
            key: RecordKey(r.key),
            value: r.value,
            publisher,
            ttl: (r.ttl > 0).then(|| Duration::from_secs(u64::from(r.ttl))),
        })
    }
}

/// A peer as described in `closerPeers` / `providerPeers`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KadPeer {
    /// The peer.
    pub id: PeerId,
    /// Its addresses, as known by the sender.
    pub addrs: Vec<Multiaddr>,
    /// The sender's connection state with the peer.
    pub connection: ConnectionType,
}

impl KadPeer {
    /// A peer with these addresses and [`ConnectionType::NotConnected`].
    pub fn new(id: PeerId, addrs: Vec<Multiaddr>) -> Self {
        KadPeer {
            id,
            addrs,
            connection: ConnectionType::NotConnected,
        }
    }

    fn to_wire(&self) -> wire::Peer {
        wire::Peer {
            id: self.id.to_bytes(),
            addrs: self.addrs.iter().map(|a| a.to_vec()).collect(),
            connection: self.connection as i32,
        }
    }

    /// Converts a wire peer. An invalid peer id is an error; an address that does not decode,
    /// is longer than [`MAX_ADDR_LEN`] or whose `/p2p/` component names another peer is
    /// dropped; past [`MAX_PEER_ADDRS`] valid addresses the rest are ignored; an unknown
    /// connection type reads as [`ConnectionType::NotConnected`].
    pub fn from_wire(p: wire::Peer) -> Result<Self, ProtocolError> {
        let id =
            PeerId::from_bytes(&p.id).map_err(|e| ProtocolError::InvalidPeerId(e.to_string()))?;
        let mut addrs = Vec::with_capacity(p.addrs.len().min(MAX_PEER_ADDRS));
        for raw in p.addrs {
            if addrs.len() >= MAX_PEER_ADDRS {
                tracing::debug!(peer = %id, "ignoring addresses past the per-peer limit");
                break;
            }
            if raw.len() > MAX_ADDR_LEN {
                tracing::debug!(peer = %id, len = raw.len(), "dropping an over-long address");
                continue;
            }
            match Multiaddr::try_from(raw) {
                Ok(addr) => {
                    if addr_names_other_peer(&addr, &id) {
                        tracing::debug!(peer = %id, %addr, "dropping address of another peer");
                    } else {
                        addrs.push(addr);
                    }
                }
                Err(e) => tracing::debug!(peer = %id, error = %e, "dropping undecodable address"),
            }
        }
        let connection =
            ConnectionType::try_from(p.connection).unwrap_or(ConnectionType::NotConnected);
        Ok(KadPeer {
            id,
            addrs,
            connection,
        })
    }
}

/// Whether a `/p2p/<id>` component of `addr` names a peer other than `id`.
fn addr_names_other_peer(addr: &Multiaddr, id: &PeerId) -> bool {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => p.to_bytes() != id.as_bytes(),
        _ => false,
    }
}

/// Converts a list of wire peers, dropping (and logging) entries with invalid peer ids.
fn peers_from_wire(peers: Vec<wire::Peer>) -> Vec<KadPeer> {
    peers
        .into_iter()
        .filter_map(|p| match KadPeer::from_wire(p) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(error = %e, "dropping peer entry");
                None
            }
        })
        .collect()
}

/// A request of the Kademlia protocol.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KadRequest {
    /// Liveness check; answered with [`KadResponse::Pong`].
    Ping,
    /// The closest peers to `key` (any bytes; the distance is computed on SHA-256 of them).
    FindNode {
        /// The key (usually a binary peer id).
        key: Vec<u8>,
    },
    /// The record stored under `key`, and closer peers.
    GetValue {
        /// The record key.
        key: RecordKey,
    },
    /// Store a record; answered by an echo of the record.
    PutValue {
        /// The record.
        record: Record,
    },
    /// The providers of `key`, and closer peers.
    GetProviders {
        /// The provider key.
        key: RecordKey,
    },
    /// Announce that `provider` provides `key`. This request has no response: the sender
    /// writes it and closes the stream ([`KadRequest::expects_response`] is `false`).
    AddProvider {
        /// The provider key.
        key: RecordKey,
        /// The provider: must be the sender itself.
        provider: KadPeer,
    },
}

impl KadRequest {
    /// Whether the remote answers this request. Only ADD_PROVIDER is one-way.
    pub fn expects_response(&self) -> bool {
        !matches!(self, KadRequest::AddProvider { .. })
    }

    /// The wire message type of the request.
    pub fn message_type(&self) -> wire::MessageType {
        match self {
            KadRequest::Ping => wire::MessageType::Ping,
            KadRequest::FindNode { .. } => wire::MessageType::FindNode,
            KadRequest::GetValue { .. } => wire::MessageType::GetValue,
            KadRequest::PutValue { .. } => wire::MessageType::PutValue,
            KadRequest::GetProviders { .. } => wire::MessageType::GetProviders,
            KadRequest::AddProvider { .. } => wire::MessageType::AddProvider,
        }
    }

    /// The wire form of the request.
    pub fn to_wire(&self) -> wire::Message {
        let mut m = wire::Message {
            r#type: self.message_type() as i32,
            ..Default::default()
        };
        match self {
            KadRequest::Ping => {}
            KadRequest::FindNode { key } => m.key = key.clone(),
            KadRequest::GetValue { key } | KadRequest::GetProviders { key } => m.key = key.to_vec(),
            KadRequest::PutValue { record } => {
                m.key = record.key.to_vec();
                m.record = Some(record.to_wire());
            }
            KadRequest::AddProvider { key, provider } => {
                m.key = key.to_vec();
                m.provider_peers = vec![provider.to_wire()];
            }
        }
        m
    }

    /// The typed form of a wire request.
    pub fn from_wire(m: wire::Message) -> Result<Self, ProtocolError> {
        let ty = wire::MessageType::try_from(m.r#type)
            .map_err(|_| ProtocolError::UnknownMessageType(m.r#type))?;
        Ok(match ty {
            wire::MessageType::Ping => KadRequest::Ping,
            wire::MessageType::FindNode => KadRequest::FindNode { key: m.key },
            wire::MessageType::GetValue => KadRequest::GetValue {
                key: RecordKey(m.key),
            },
            wire::MessageType::GetProviders => KadRequest::GetProviders {
                key: RecordKey(m.key),
            },
            wire::MessageType::PutValue => {
                // Like rust-libp2p, the record's own key is authoritative.
                let record = m.record.ok_or(ProtocolError::MissingRecord)?;
                KadRequest::PutValue {
                    record: Record::from_wire(record)?,
                }
            }
            wire::MessageType::AddProvider => {
                let provider = m
                    .provider_peers
                    .into_iter()
                    .find_map(|p| KadPeer::from_wire(p).ok())
                    .ok_or(ProtocolError::MissingProvider)?;
                KadRequest::AddProvider {
                    key: RecordKey(m.key),
                    provider,
                }
            }
        })
    }
}

/// A response of the Kademlia protocol.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KadResponse {
    /// Answer to [`KadRequest::Ping`].
    Pong,
    /// Answer to [`KadRequest::FindNode`].
    FindNode {
        /// The closest peers the responder knows.
        closer_peers: Vec<KadPeer>,
    },
    /// Answer to [`KadRequest::GetValue`].
    GetValue {
        /// The record, if the responder has it.
        record: Option<Record>,
        /// The closest peers the responder knows.
        closer_peers: Vec<KadPeer>,
    },
    /// Answer to [`KadRequest::PutValue`]: the stored record echoed back.
    PutValue {
        /// The record as stored.
        record: Record,
    },
    /// Answer to [`KadRequest::GetProviders`].
    GetProviders {
        /// The closest peers the responder knows.
        closer_peers: Vec<KadPeer>,
        /// The providers the responder knows.
        provider_peers: Vec<KadPeer>,
    },
}

impl KadResponse {
    /// The wire message type of the response.
    pub fn message_type(&self) -> wire::MessageType {
        match self {
            KadResponse::Pong => wire::MessageType::Ping,
            KadResponse::FindNode { .. } => wire::MessageType::FindNode,
            KadResponse::GetValue { .. } => wire::MessageType::GetValue,
            KadResponse::PutValue { .. } => wire::MessageType::PutValue,
            KadResponse::GetProviders { .. } => wire::MessageType::GetProviders,
        }
    }

    /// The wire form of the response.
    pub fn to_wire(&self) -> wire::Message {
        let mut m = wire::Message {
            r#type: self.message_type() as i32,
            ..Default::default()
        };
        match self {
            KadResponse::Pong => {}
            KadResponse::FindNode { closer_peers } => {
                m.closer_peers = closer_peers.iter().map(KadPeer::to_wire).collect();
            }
            KadResponse::GetValue {
                record,
                closer_peers,
            } => {
                if let Some(r) = record {
                    m.key = r.key.to_vec();
                    m.record = Some(r.to_wire());
                }
                m.closer_peers = closer_peers.iter().map(KadPeer::to_wire).collect();
            }
            KadResponse::PutValue { record } => {
                m.key = record.key.to_vec();
                m.record = Some(record.to_wire());
            }
            KadResponse::GetProviders {
                closer_peers,
                provider_peers,
            } => {
                m.closer_peers = closer_peers.iter().map(KadPeer::to_wire).collect();
                m.provider_peers = provider_peers.iter().map(KadPeer::to_wire).collect();
            }
        }
        m
    }

    /// The typed form of a wire response.
    pub fn from_wire(m: wire::Message) -> Result<Self, ProtocolError> {
        let ty = wire::MessageType::try_from(m.r#type)
            .map_err(|_| ProtocolError::UnknownMessageType(m.r#type))?;
        Ok(match ty {
            wire::MessageType::Ping => KadResponse::Pong,
            wire::MessageType::FindNode => KadResponse::FindNode {
                closer_peers: peers_from_wire(m.closer_peers),
            },
            wire::MessageType::GetValue => KadResponse::GetValue {
                record: m.record.map(Record::from_wire).transpose()?,
                closer_peers: peers_from_wire(m.closer_peers),
            },
            wire::MessageType::GetProviders => KadResponse::GetProviders {
                closer_peers: peers_from_wire(m.closer_peers),
                provider_peers: peers_from_wire(m.provider_peers),
            },
            wire::MessageType::PutValue => {
                let record = m.record.ok_or(ProtocolError::MissingRecord)?;
                KadResponse::PutValue {
                    record: Record::from_wire(record)?,
                }
            }
            wire::MessageType::AddProvider => return Err(ProtocolError::UnexpectedMessageType(ty)),
        })
    }
}

// ----- encoded lengths, computed without building the wire structs ----------------------------

/// Length of a length-delimited field (bytes or embedded message) of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Length of a varint field holding `v`.
fn varint_field_len(tag: u32, v: u64) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(v)
}

/// Length of the `key` field of a `Message` (omitted when empty, as proto3 does).
fn key_field_len(key: &RecordKey) -> usize {
    if key.0.is_empty() {
        0
    } else {
        delimited_len(2, key.0.len())
    }
}

/// Length of a repeated `Peer` field.
fn peers_len(tag: u32, peers: &[KadPeer]) -> usize {
    peers
        .iter()
        .map(|p| delimited_len(tag, p.encoded_len()))
        .sum()
}

impl Record {
    /// The `ttl` field as sent: whole seconds, at least 1, 0 for none.
    fn wire_ttl(&self) -> u32 {
        // 0 means "no TTL" on the wire, so a TTL under one second is sent as 1.
        self.ttl
            .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX).max(1))
            .unwrap_or(0)
    }

    /// Length of the `Record` message with the given wire TTL.
    fn encoded_len_with_ttl(&self, ttl: u32) -> usize {
        let mut n = 0;
        if !self.key.0.is_empty() {
            n += delimited_len(1, self.key.0.len());
        }
        if !self.value.is_empty() {
            n += delimited_len(2, self.value.len());
        }
        if let Some(p) = &self.publisher {
            n += delimited_len(666, p.as_bytes().len());
        }
        if ttl != 0 {
            n += varint_field_len(777, u64::from(ttl));
        }
        n
    }

    /// The length of the largest message that can carry this record: a GET_VALUE response
    /// holding it with the longest TTL and no peers (a PUT_VALUE request or its echo is never
    /// longer). A record for which this exceeds the message bound cannot be sent to anyone,
    /// so the engine refuses to store it ([`StoreError::RecordTooLarge`](crate::store::StoreError::RecordTooLarge)).
    pub fn max_message_len(&self) -> usize {
        varint_field_len(1, wire::MessageType::GetValue as u64)
            + key_field_len(&self.key)
            + delimited_len(3, self.encoded_len_with_ttl(u32::MAX))
    }
}

impl KadPeer {
    /// Length of this peer's `Peer` message on the wire.
    pub fn encoded_len(&self) -> usize {
        let mut n = delimited_len(1, self.id.as_bytes().len());
        n += self
            .addrs
            .iter()
            .map(|a| delimited_len(2, a.len()))
            .sum::<usize>();
        let connection = self.connection as i32;
        if connection != 0 {
            // An int32 is sign-extended to 64 bits on the wire.
            n += varint_field_len(3, i64::from(connection) as u64);
        }
        n
    }
}

impl KadResponse {
    /// Length of the response's `Message` on the wire, length prefix excluded (what
    /// [`KadCodec::max_message_size`] bounds), computed without encoding it.
    pub fn encoded_len(&self) -> usize {
        let ty = self.message_type() as i32;
        let mut n = if ty != 0 {
            varint_field_len(1, ty as u64)
        } else {
            0
        };
        match self {
            KadResponse::Pong => {}
            KadResponse::FindNode { closer_peers } => n += peers_len(8, closer_peers),
            KadResponse::GetValue {
                record,
                closer_peers,
            } => {
                if let Some(r) = record {
                    n += key_field_len(&r.key)
                        + delimited_len(3, r.encoded_len_with_ttl(r.wire_ttl()));
                }
                n += peers_len(8, closer_peers);
            }
            KadResponse::PutValue { record } => {
                n += key_field_len(&record.key)
                    + delimited_len(3, record.encoded_len_with_ttl(record.wire_ttl()));
            }
            KadResponse::GetProviders {
                closer_peers,
                provider_peers,
            } => n += peers_len(8, closer_peers) + peers_len(9, provider_peers),
        }
        n
    }

    /// Drops peers until the message takes at most `max` bytes (prefix excluded), so that a
    /// response which does not fit is shortened rather than not sent. Peers are dropped from
    /// the end of the longer of `closerPeers` and `providerPeers` (closer peers on a tie):
    /// closer peers are sorted closest first, so the farthest go first. Returns whether the
    /// response fits; only one whose record alone is too large cannot be made to.
    pub fn trim_to(&mut self, max: usize) -> bool {
        let mut len = self.encoded_len();
        if len <= max {
            return true;
        }
        let mut no_providers = Vec::new();
        let (closer, providers) = match self {
            KadResponse::FindNode { closer_peers } | KadResponse::GetValue { closer_peers, .. } => {
                (closer_peers, &mut no_providers)
            }
            KadResponse::GetProviders {
                closer_peers,
                provider_peers,
            } => (closer_peers, provider_peers),
            KadResponse::Pong | KadResponse::PutValue { .. } => return false,
        };
        while len > max {
            let (list, tag) = if providers.len() > closer.len() {
                (&mut *providers, 9)
            } else {
                (&mut *closer, 8)
            };
            let Some(dropped) = list.pop() else {
                break;
            };
            len -= delimited_len(tag, dropped.encoded_len());
        }
        len <= max
    }
}

/// Length-prefixed framing of Kademlia messages with an explicit size bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KadCodec {
    max_message_size: usize,
}

impl Default for KadCodec {
    fn default() -> Self {
        KadCodec {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl KadCodec {
    /// A codec accepting messages of at most `max_message_size` bytes (prefix excluded).
    pub fn new(max_message_size: usize) -> Self {
        KadCodec { max_message_size }
    }

    /// The bound on one message, length prefix excluded.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Encodes one wire message with its length prefix, appending to `out`.
    pub fn encode_frame(
        &self,
        msg: &wire::Message,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let len = msg.encoded_len();
        if len > self.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                len: len as u64,
                max: self.max_message_size,
            });
        }
        let mut prefix = unsigned_varint::encode::usize_buffer();
        out.reserve(len + MAX_VARINT_LEN);
        out.extend_from_slice(unsigned_varint::encode::usize(len, &mut prefix));
        // Encoding into a Vec cannot run out of space; map the impossible error anyway.
        msg.encode(out)
            .map_err(|e| ProtocolError::Protobuf(e.to_string()))
    }

    /// Decodes one length-prefixed wire message from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (read more bytes and call
    /// again), otherwise the message and the number of bytes it took (prefix included). The
    /// announced length is checked against the bound before anything is allocated.
    pub fn decode_frame(
        &self,
        buf: &[u8],
    ) -> Result<Option<(wire::Message, usize)>, ProtocolError> {
        let (len, rest) = match unsigned_varint::decode::u64(buf) {
            Ok(v) => v,
            Err(unsigned_varint::decode::Error::Insufficient) => {
                return if buf.len() >= MAX_VARINT_LEN {
                    Err(ProtocolError::InvalidLengthPrefix)
                } else {
                    Ok(None)
                };
            }
            Err(_) => return Err(ProtocolError::InvalidLengthPrefix),
        };
        if len > self.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len,
                max: self.max_message_size,
            });
        }
        // `len` fits in usize: it is at most `max_message_size`.
        let len = len as usize;
        let prefix_len = buf.len() - rest.len();
        if rest.len() < len {
            return Ok(None);
        }
        let msg = self.decode_body(&rest[..len])?;
        Ok(Some((msg, prefix_len + len)))
    }

    /// Encodes a request as one frame.
    pub fn encode_request(&self, req: &KadRequest) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode_frame(&req.to_wire(), &mut out)?;
        Ok(out)
    }

    /// Encodes a response as one frame.
    pub fn encode_response(&self, resp: &KadResponse) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode_frame(&resp.to_wire(), &mut out)?;
        Ok(out)
    }

    /// Decodes the body of one frame (its length prefix already read, e.g. by the swarm
    /// toolkit's `read_frame`, which checks the bound before buffering).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::MessageTooLarge`] past the bound, or a malformed message.
    pub fn decode_body(&self, body: &[u8]) -> Result<wire::Message, ProtocolError> {
        if body.len() > self.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                len: body.len() as u64,
                max: self.max_message_size,
            });
        }
        wire::Message::decode(body).map_err(|e| ProtocolError::Protobuf(e.to_string()))
    }

    /// Decodes a request from a frame body (see [`KadCodec::decode_body`]).
    ///
    /// # Errors
    ///
    /// As [`KadCodec::decode_body`], or a message that is not a valid request.
    pub fn decode_request_body(&self, body: &[u8]) -> Result<KadRequest, ProtocolError> {
        KadRequest::from_wire(self.decode_body(body)?)
    }

    /// Decodes a response from a frame body (see [`KadCodec::decode_body`]).
    ///
    /// # Errors
    ///
    /// As [`KadCodec::decode_body`], or a message that is not a valid response.
    pub fn decode_response_body(&self, body: &[u8]) -> Result<KadResponse, ProtocolError> {
        KadResponse::from_wire(self.decode_body(body)?)
    }

    /// Decodes one request frame (see [`KadCodec::decode_frame`] for `Ok(None)`).
    pub fn decode_request(&self, buf: &[u8]) -> Result<Option<(KadRequest, usize)>, ProtocolError> {
        match self.decode_frame(buf)? {
            Some((m, used)) => Ok(Some((KadRequest::from_wire(m)?, used))),
            None => Ok(None),
        }
    }

    /// Decodes one response frame (see [`KadCodec::decode_frame`] for `Ok(None)`).
    pub fn decode_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<(KadResponse, usize)>, ProtocolError> {
        match self.decode_frame(buf)? {
            Some((m, used)) => Ok(Some((KadResponse::from_wire(m)?, used))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;
    use proptest::prelude::*;

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    #[test]
    fn find_node_request_exact_bytes() {
        let codec = KadCodec::default();
        let id = peer(1);
        let bytes = codec
            .encode_request(&KadRequest::FindNode { key: id.to_bytes() })
            .unwrap();
        // 38-byte identity multihash key: message = 08 04 12 26 <38 bytes> = 42 bytes.
        let mut expected = vec![42, 0x08, 0x04, 0x12, 38];
        expected.extend_from_slice(id.as_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn ping_is_type_5_and_put_value_type_is_omitted() {
        let codec = KadCodec::default();
        assert_eq!(
            codec.encode_request(&KadRequest::Ping).unwrap(),
            [2, 0x08, 0x05]
        );
        assert_eq!(
            codec.encode_response(&KadResponse::Pong).unwrap(),
            [2, 0x08, 0x05]
        );
        // PUT_VALUE = 0 is the proto3 default, so `type` is not written at all.
        let rec = Record::new(&b"k"[..], &b"v"[..]);
        let bytes = codec
            .encode_request(&KadRequest::PutValue { record: rec })
            .unwrap();
        // key (field 2) "k", record (field 3) { key "k", value "v" }.
        assert_eq!(
            bytes,
            [11, 0x12, 0x01, b'k', 0x1a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']
        );
    }

    #[test]
    fn record_extension_fields_use_tags_666_and_777() {
        let codec = KadCodec::default();
        let mut rec = Record::new(&b"k"[..], &b"v"[..]);
        rec.ttl = Some(Duration::from_secs(300));
        let bytes = codec
            .encode_response(&KadResponse::PutValue {
                record: rec.clone(),
            })
            .unwrap();
        // ttl: tag (777 << 3 | 0) = 6216 = varint c8 30; 300 = ac 02.
        assert!(
            bytes.windows(4).any(|w| w == [0xc8, 0x30, 0xac, 0x02]),
            "{bytes:02x?}"
        );
        let (back, _) = codec.decode_response(&bytes).unwrap().unwrap();
        assert_eq!(back, KadResponse::PutValue { record: rec });
        let mut rec = Record::new(&b"k"[..], &b"v"[..]);
        rec.publisher = Some(peer(3));
        let bytes = codec
            .encode_request(&KadRequest::PutValue {
                record: rec.clone(),
            })
            .unwrap();
        // publisher: tag (666 << 3 | 2) = 5330 = varint d2 29, then length 38.
        assert!(bytes.windows(3).any(|w| w == [0xd2, 0x29, 38]));
        assert_eq!(
            codec.decode_request(&bytes).unwrap().unwrap().0,
            KadRequest::PutValue { record: rec }
        );
    }

    #[test]
    fn find_node_response_exact_bytes() {
        let codec = KadCodec::default();
        let id = peer(2);
        let addr: Multiaddr = "/ip4/1.2.3.4/udp/4001/quic-v1".parse().unwrap();
        let resp = KadResponse::FindNode {
            closer_peers: vec![KadPeer {
                id,
                addrs: vec![addr.clone()],
                connection: ConnectionType::Connected,
            }],
        };
        let bytes = codec.encode_response(&resp).unwrap();
        let a = addr.to_vec();
        let mut peer_bytes = vec![0x0a, 38];
        peer_bytes.extend_from_slice(id.as_bytes());
        peer_bytes.extend_from_slice(&[0x12, a.len() as u8]);
        peer_bytes.extend_from_slice(&a);
        peer_bytes.extend_from_slice(&[0x18, 0x01]);
        let mut msg = vec![0x08, 0x04, 0x42, peer_bytes.len() as u8];
        msg.extend_from_slice(&peer_bytes);
        let mut expected = vec![msg.len() as u8];
        expected.extend_from_slice(&msg);
        assert_eq!(bytes, expected);
        assert_eq!(
            codec.decode_response(&bytes).unwrap().unwrap(),
            (resp, bytes.len())
        );
    }

    #[test]
    fn decodes_hand_written_get_providers_response() {
        // type = GET_PROVIDERS, clusterLevelRaw = 9, providerPeers = [{ id, addrs: [garbage, valid] }].
        let id = peer(4);
        let good: Multiaddr = "/ip4/9.9.9.9/tcp/1".parse().unwrap();
        let mut p = vec![0x0a, 38];
        p.extend_from_slice(id.as_bytes());
        p.extend_from_slice(&[0x12, 0x02, 0xff, 0xff]);
        p.push(0x12);
        p.push(good.to_vec().len() as u8);
        p.extend_from_slice(&good.to_vec());
        let mut m = vec![0x08, 0x03, 0x50, 0x09, 0x4a, p.len() as u8];
        m.extend_from_slice(&p);
        // A closer peer with an invalid id is dropped.
        m.extend_from_slice(&[0x42, 0x03, 0x0a, 0x01, 0x07]);
        let mut frame = vec![m.len() as u8];
        frame.extend_from_slice(&m);
        let (resp, used) = KadCodec::default()
            .decode_response(&frame)
            .unwrap()
            .unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(
            resp,
            KadResponse::GetProviders {
                closer_peers: vec![],
                provider_peers: vec![KadPeer::new(id, vec![good])]
            }
        );
    }

    #[test]
    fn all_requests_and_responses_round_trip() {
        let codec = KadCodec::default();
        let kp = KadPeer::new(peer(5), vec!["/memory/7".parse().unwrap()]);
        let rec = Record {
            key: RecordKey::from("a"),
            value: vec![1, 2, 3],
            publisher: Some(peer(6)),
            ttl: None,
        };
        let reqs = vec![
            KadRequest::Ping,
            KadRequest::FindNode { key: vec![1; 32] },
            KadRequest::GetValue {
                key: RecordKey::from("x"),
            },
            KadRequest::PutValue {
                record: rec.clone(),
            },
            KadRequest::GetProviders {
                key: RecordKey::from("p"),
            },
            KadRequest::AddProvider {
                key: RecordKey::from("p"),
                provider: kp.clone(),
            },
        ];
        for r in reqs {
            let b = codec.encode_request(&r).unwrap();
            assert_eq!(codec.decode_request(&b).unwrap().unwrap(), (r, b.len()));
        }
        let resps = vec![
            KadResponse::Pong,
            KadResponse::FindNode {
                closer_peers: vec![kp.clone(), kp.clone()],
            },
            KadResponse::GetValue {
                record: Some(rec.clone()),
                closer_peers: vec![kp.clone()],
            },
            KadResponse::GetValue {
                record: None,
                closer_peers: vec![],
            },
            KadResponse::PutValue { record: rec },
            KadResponse::GetProviders {
                closer_peers: vec![kp.clone()],
                provider_peers: vec![kp],
            },
        ];
        for r in resps {
            let b = codec.encode_response(&r).unwrap();
            assert_eq!(codec.decode_response(&b).unwrap().unwrap(), (r, b.len()));
        }
    }

    #[test]
    fn typed_errors() {
        let codec = KadCodec::new(100);
        // Length prefix 200 > 100: rejected before the body arrives.
        assert_eq!(
            codec.decode_frame(&[0xc8, 0x01]).unwrap_err(),
            ProtocolError::MessageTooLarge { len: 200, max: 100 }
        );
        // Non-minimal varint and over-long varint.
        assert_eq!(
            codec.decode_frame(&[0x81, 0x00]).unwrap_err(),
            ProtocolError::InvalidLengthPrefix
        );
        assert_eq!(
            codec.decode_frame(&[0xff; 12]).unwrap_err(),
            ProtocolError::InvalidLengthPrefix
        );
        // Truncated prefix and truncated body: need more.
        assert!(codec.decode_frame(&[0x80]).unwrap().is_none());
        assert!(codec.decode_frame(&[0x05, 0x08]).unwrap().is_none());
        // Bad protobuf: field 2 claims 5 bytes but the message has 1.
        assert!(matches!(
            codec.decode_frame(&[0x03, 0x12, 0x05, 0x00]),
            Err(ProtocolError::Protobuf(_))
        ));
        // Unknown type.
        assert_eq!(
            codec.decode_request(&[0x02, 0x08, 0x09]).unwrap_err(),
            ProtocolError::UnknownMessageType(9)
        );
        // PUT_VALUE without record; ADD_PROVIDER without provider; ADD_PROVIDER response.
        assert_eq!(
            codec.decode_request(&[0x00]).unwrap_err(),
            ProtocolError::MissingRecord
        );
        assert_eq!(
            codec.decode_request(&[0x02, 0x08, 0x02]).unwrap_err(),
            ProtocolError::MissingProvider
        );
        assert_eq!(
            codec.decode_response(&[0x02, 0x08, 0x02]).unwrap_err(),
            ProtocolError::UnexpectedMessageType(wire::MessageType::AddProvider)
        );
        // Record with an invalid publisher.
        let m = [0x1a, 0x05, 0xd2, 0x29, 0x02, 0x13, 0x00];
        let mut frame = vec![m.len() as u8];
        frame.extend_from_slice(&m);
        assert!(matches!(
            codec.decode_request(&frame),
            Err(ProtocolError::InvalidPeerId(_))
        ));
        // Encoding an oversized message is refused.
        let big = KadRequest::FindNode { key: vec![0; 200] };
        assert!(matches!(
            codec.encode_request(&big),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn address_naming_another_peer_is_dropped() {
        let me = peer(1);
        let other = peer(2);
        let own: Multiaddr = format!("/memory/1/p2p/{me}").parse().unwrap();
        let foreign: Multiaddr = format!("/memory/2/p2p/{other}").parse().unwrap();
        let w = wire::Peer {
            id: me.to_bytes(),
            addrs: vec![own.to_vec(), foreign.to_vec()],
            connection: 7,
        };
        let p = KadPeer::from_wire(w).unwrap();
        assert_eq!(p.addrs, vec![own]);
        assert_eq!(p.connection, ConnectionType::NotConnected);
    }

    fn sample_responses() -> Vec<KadResponse> {
        let long: Multiaddr = format!("/dns4/{}/udp/4001/quic-v1", "a".repeat(200))
            .parse()
            .unwrap();
        let kp = |n: u64, addrs: usize, connection| KadPeer {
            id: peer(n),
            addrs: (0..addrs)
                .map(|i| format!("/ip4/10.0.0.{i}/udp/{n}/quic-v1").parse().unwrap())
                .chain((addrs > 3).then(|| long.clone()))
                .collect(),
            connection,
        };
        let mut rec = Record::new("key", vec![7; 300]);
        rec.publisher = Some(peer(9));
        rec.ttl = Some(Duration::from_secs(100_000));
        let bare = Record::new(RecordKey::new(vec![]), vec![]);
        vec![
            KadResponse::Pong,
            KadResponse::FindNode {
                closer_peers: vec![],
            },
            KadResponse::FindNode {
                closer_peers: (0..20)
                    .map(|n| kp(n, n as usize % 9, ConnectionType::Connected))
                    .collect(),
            },
            KadResponse::GetValue {
                record: Some(rec.clone()),
                closer_peers: vec![kp(1, 2, ConnectionType::CannotConnect)],
            },
            KadResponse::GetValue {
                record: Some(bare.clone()),
                closer_peers: vec![],
            },
            KadResponse::PutValue { record: rec },
            KadResponse::PutValue { record: bare },
            KadResponse::GetProviders {
                closer_peers: vec![kp(2, 0, ConnectionType::NotConnected)],
                provider_peers: vec![kp(3, 8, ConnectionType::CanConnect)],
            },
        ]
    }

    #[test]
    fn encoded_len_matches_the_encoder() {
        for r in sample_responses() {
            assert_eq!(r.encoded_len(), r.to_wire().encoded_len(), "{r:?}");
        }
    }

    #[test]
    fn max_message_len_bounds_every_message_carrying_the_record() {
        let mut rec = Record::new("k", vec![1; 1000]);
        rec.publisher = Some(peer(1));
        let bound = rec.max_message_len();
        for ttl in [None, Some(Duration::from_millis(1)), Some(Duration::MAX)] {
            let mut r = rec.clone();
            r.ttl = ttl;
            let get = KadResponse::GetValue {
                record: Some(r.clone()),
                closer_peers: vec![],
            };
            assert!(get.to_wire().encoded_len() <= bound);
            let put = KadRequest::PutValue { record: r.clone() };
            assert!(put.to_wire().encoded_len() <= bound);
            assert!(KadResponse::PutValue { record: r }.encoded_len() <= bound);
        }
        // The bound is tight: the longest TTL reaches it.
        rec.ttl = Some(Duration::from_secs(u64::from(u32::MAX)));
        let get = KadResponse::GetValue {
            record: Some(rec),
            closer_peers: vec![],
        };
        assert_eq!(get.encoded_len(), bound);
    }

    #[test]
    fn oversized_responses_are_trimmed_to_fit() {
        let codec = KadCodec::new(4096);
        for mut r in sample_responses() {
            let fits = r.trim_to(codec.max_message_size());
            assert!(fits, "{r:?}");
            assert!(codec.encode_response(&r).is_ok());
        }
        // Two providers with long address lists and twenty closer peers: the longer list
        // loses its last entries first, so the providers survive.
        let addrs: Vec<Multiaddr> = (0..8)
            .map(|i| {
                format!("/dns4/{}{i}/udp/4001/quic-v1", "p".repeat(200))
                    .parse()
                    .unwrap()
            })
            .collect();
        let closer: Vec<KadPeer> = (10..30)
            .map(|n| KadPeer::new(peer(n), addrs.clone()))
            .collect();
        let mut r = KadResponse::GetProviders {
            closer_peers: closer.clone(),
            provider_peers: vec![
                KadPeer::new(peer(1), addrs.clone()),
                KadPeer::new(peer(2), addrs.clone()),
            ],
        };
        assert!(r.encoded_len() > DEFAULT_MAX_MESSAGE_SIZE);
        assert!(r.trim_to(DEFAULT_MAX_MESSAGE_SIZE));
        let KadResponse::GetProviders {
            closer_peers,
            provider_peers,
        } = &r
        else {
            unreachable!()
        };
        assert_eq!(provider_peers.len(), 2);
        assert!(!closer_peers.is_empty() && closer_peers.len() < closer.len());
        assert_eq!(
            closer_peers[..],
            closer[..closer_peers.len()],
            "the closest are kept"
        );
        let bytes = KadCodec::default().encode_response(&r).unwrap();
        assert_eq!(
            KadCodec::default()
                .decode_response(&bytes)
                .unwrap()
                .unwrap()
                .0,
            r
        );
        // A record that alone exceeds the bound cannot be made to fit.
        let mut r = KadResponse::GetValue {
            record: Some(Record::new("k", vec![0; 5000])),
            closer_peers: closer,
        };
        assert!(!r.trim_to(4096));
    }

    #[test]
    fn decoded_address_lists_are_bounded() {
        let id = peer(1);
        let long = vec![0x04; MAX_ADDR_LEN + 1];
        let mut addrs = vec![long];
        addrs.extend((0..20).map(|i| {
            format!("/ip4/10.0.0.{i}/udp/1/quic-v1")
                .parse::<Multiaddr>()
                .unwrap()
                .to_vec()
        }));
        let p = KadPeer::from_wire(wire::Peer {
            id: id.to_bytes(),
            addrs,
            connection: 0,
        })
        .unwrap();
        assert_eq!(p.addrs.len(), MAX_PEER_ADDRS);
        assert_eq!(p.addrs[0], "/ip4/10.0.0.0/udp/1/quic-v1".parse().unwrap());
    }

    proptest! {
        #[test]
        fn encoded_len_matches_for_random_peers(
            peers in proptest::collection::vec((0u64..50, 0usize..10, 0i32..4), 0..30),
            providers in proptest::collection::vec((0u64..50, 0usize..10), 0..30),
        ) {
            let mk = |n: u64, a: usize| -> Vec<Multiaddr> {
                (0..a).map(|i| format!("/ip6/::{i}/udp/{}/quic-v1", n * 1000).parse().unwrap()).collect()
            };
            let r = KadResponse::GetProviders {
                closer_peers: peers.iter().map(|&(n, a, c)| KadPeer {
                    id: peer(n),
                    addrs: mk(n, a),
                    connection: ConnectionType::try_from(c).unwrap(),
                }).collect(),
                provider_peers: providers.iter().map(|&(n, a)| KadPeer::new(peer(n), mk(n, a))).collect(),
            };
            prop_assert_eq!(r.encoded_len(), r.to_wire().encoded_len());
            let mut t = r.clone();
            prop_assert!(t.trim_to(1024));
            prop_assert!(t.to_wire().encoded_len() <= 1024);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = KadCodec::new(256);
            let _ = codec.decode_request(&bytes);
            let _ = codec.decode_response(&bytes);
            if let Ok(Some((_, used))) = codec.decode_frame(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn random_bodies_behind_a_valid_prefix_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut frame = Vec::new();
            let mut buf = unsigned_varint::encode::usize_buffer();
            frame.extend_from_slice(unsigned_varint::encode::usize(body.len(), &mut buf));
            frame.extend_from_slice(&body);
            let codec = KadCodec::default();
            let _ = codec.decode_request(&frame);
            let _ = codec.decode_response(&frame);
        }

        #[test]
        fn random_address_bytes_never_panic(addrs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6)) {
            let id = peer(1);
            let n = addrs.len();
            let p = KadPeer::from_wire(wire::Peer { id: id.to_bytes(), addrs, connection: 1 }).unwrap();
            prop_assert_eq!(p.id, id);
            prop_assert!(p.addrs.len() <= n);
        }

        #[test]
        fn mutated_valid_messages_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let codec = KadCodec::default();
            let resp = KadResponse::GetProviders {
                closer_peers: vec![KadPeer::new(peer(1), vec!["/ip4/1.2.3.4/tcp/5".parse().unwrap()])],
                provider_peers: vec![KadPeer::new(peer(2), vec!["/memory/3".parse().unwrap()])],
            };
            let mut bytes = codec.encode_response(&resp).unwrap();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            let _ = codec.decode_response(&bytes);
            let _ = codec.decode_request(&bytes);
        }
    }
}
